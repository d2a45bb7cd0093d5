//! Short, readable names for entries named after their source expression (`add_action!`).

/// The most bytes of the expression a [`ShortName`] keeps before its ellipsis.
const KEEP: usize = 40;

/// `"…"`, the mark of a name cut short.
const ELLIPSIS: &[u8] = "…".as_bytes();

/// A short form of an expression's source text, made at compile time: its first line, with
/// runs of whitespace collapsed to one space, cut at about 40 bytes (on a character boundary)
/// and ended with `…` when anything was left out.
///
/// [`add_action!`](crate::add_action) names its entry this way, so that a closure's whole
/// body does not become its name in traces and snapshots.
///
/// # Examples
///
/// ```
/// use drmm::trace::ShortName;
///
/// const N: ShortName = ShortName::new("|_| {\n    release(irq);\n}");
/// assert_eq!(N.as_str(), "|_| {…");
/// assert_eq!(ShortName::new("|_|   drop(x)").as_str(), "|_| drop(x)");
/// ```
#[derive(Clone, Copy)]
pub struct ShortName {
    buf: [u8; KEEP + ELLIPSIS.len()],
    len: usize,
}

impl ShortName {
    /// The short form of `src`.
    pub const fn new(src: &str) -> ShortName {
        let src = src.as_bytes();
        let mut out = ShortName {
            buf: [0; KEEP + ELLIPSIS.len()],
            len: 0,
        };
        let mut i = 0;
        let mut cut = false;
        let mut space = false;
        // Leading whitespace is skipped.
        while i < src.len() && src[i].is_ascii_whitespace() && src[i] != b'\n' {
            i += 1;
        }
        while i < src.len() {
            let b = src[i];
            if b == b'\n' {
                // Only the first line is kept; the rest is marked as left out if not blank.
                let mut j = i;
                while j < src.len() && src[j].is_ascii_whitespace() {
                    j += 1;
                }
                cut = j < src.len();
                break;
            }
            if b.is_ascii_whitespace() {
                space = true;
                i += 1;
                continue;
            }
            // A whole UTF-8 character (1 to 4 bytes), preceded by a pending space.
            let width = char_width(b);
            let need = width + if space && out.len > 0 { 1 } else { 0 };
            if out.len + need > KEEP {
                cut = true;
                break;
            }
            if space && out.len > 0 {
                out.buf[out.len] = b' ';
                out.len += 1;
            }
            space = false;
            let mut k = 0;
            while k < width && i + k < src.len() {
                out.buf[out.len] = src[i + k];
                out.len += 1;
                k += 1;
            }
            i += width;
        }
        if cut {
            let mut k = 0;
            while k < ELLIPSIS.len() {
                out.buf[out.len] = ELLIPSIS[k];
                out.len += 1;
                k += 1;
            }
        }
        out
    }

    /// The short name.
    pub const fn as_str(&self) -> &str {
        let (bytes, _) = self.buf.split_at(self.len);
        match std::str::from_utf8(bytes) {
            Ok(s) => s,
            // Whole characters of a `str` only are copied in.
            Err(_) => "",
        }
    }
}

impl std::fmt::Debug for ShortName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// The length of the UTF-8 character that starts with byte `b`.
const fn char_width(b: u8) -> usize {
    if b < 0x80 {
        1
    } else if b >= 0xF0 {
        4
    } else if b >= 0xE0 {
        3
    } else {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::ShortName;

    #[test]
    fn short_names() {
        let cases = [
            ("|_| ()", "|_| ()"),
            ("  move |_|\t drop(x)  ", "move |_| drop(x)"),
            ("|_| {\n    a();\n    b();\n}", "|_| {…"),
            ("|_| {\n   \n}", "|_| {…"),
            ("x\n   ", "x"),
            ("", ""),
        ];
        for (src, want) in cases {
            assert_eq!(ShortName::new(src).as_str(), want, "{src:?}");
        }
        let long = "move |d: &LogicalDevice<Gpu>| println!(\"a very long message here\")";
        let short = ShortName::new(long);
        let s = short.as_str();
        assert!(s.ends_with('…') && s.len() <= 40 + 3, "{s}");
        assert!(long.starts_with(s.trim_end_matches('…')), "{s}");
        // Never cut inside a character.
        let wide = "é".repeat(30);
        let short = ShortName::new(&wide);
        assert_eq!(short.as_str(), format!("{}…", "é".repeat(20)));
    }
}
