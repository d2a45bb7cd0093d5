//! The JSON objects of a trace line, as read: every key optional, unknown keys skipped.
//!
//! `Deserialize` is written out by a small macro instead of derived, so that the command does
//! not build serde's derive macro (the largest part of a cold build's critical path).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

/// Declares a struct of optional fields and its `Deserialize` from a JSON object.
macro_rules! raw_object {
    ($(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Default)]
        pub(super) struct $name {
            $(pub(super) $field: Option<$ty>,)*
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[allow(non_camel_case_types)]
                enum Key {
                    $($field,)*
                    Other,
                }

                struct KeyVisitor;

                impl Visitor<'_> for KeyVisitor {
                    type Value = Key;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a key")
                    }

                    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                        Ok(match key {
                            $(stringify!($field) => Key::$field,)*
                            _ => Key::Other,
                        })
                    }
                }

                impl<'de> Deserialize<'de> for Key {
                    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                        d.deserialize_identifier(KeyVisitor)
                    }
                }

                struct ObjectVisitor;

                impl<'de> Visitor<'de> for ObjectVisitor {
                    type Value = $name;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a JSON object")
                    }

                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        let mut out = $name::default();
                        while let Some(key) = map.next_key::<Key>()? {
                            match key {
                                $(Key::$field => out.$field = map.next_value()?,)*
                                Key::Other => {
                                    map.next_value::<IgnoredAny>()?;
                                }
                            }
                        }
                        Ok(out)
                    }
                }

                d.deserialize_map(ObjectVisitor)
            }
        }
    };
}

raw_object! {
    /// Line 1.
    RawHeader {
        schema: String,
        version: u64,
        pid: u64,
    }
}

raw_object! {
    /// Every later line.
    RawEvent {
        t: u64,
        thread: String,
        op: String,
        dev: u64,
        dev_name: String,
        dev_kind: String,
        list: String,
        entry: u64,
        name: String,
        kind: String,
        size: u64,
        file: String,
        line: u32,
        ref_id: u64,
        detail: String,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_skipped_whatever_their_value() {
        let raw: RawEvent = serde_json::from_str(
            r#"{"t":5,"extra":{"a":[1,{"b":null}]},"op":"ADD","name":"a\"b","line":null}"#,
        )
        .unwrap();
        assert_eq!(raw.t, Some(5));
        assert_eq!(raw.op.as_deref(), Some("ADD"));
        assert_eq!(raw.name.as_deref(), Some("a\"b"));
        assert_eq!(raw.line, None);
    }

    #[test]
    fn wrong_shapes_are_errors() {
        assert!(serde_json::from_str::<RawEvent>("[1,2]").is_err());
        assert!(serde_json::from_str::<RawEvent>(r#"{"t":-1}"#).is_err());
        assert!(serde_json::from_str::<RawEvent>(r#"{"line":4294967296}"#).is_err());
        assert!(serde_json::from_str::<RawHeader>(r#"{"version":"1"}"#).is_err());
    }
}
