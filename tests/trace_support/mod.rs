//! Recording helpers for the trace tests: run code under a [`RecordLayer`] that writes into
//! memory, parse the JSON lines, and normalise them for golden files.
#![allow(dead_code, unreachable_pub)]

#[path = "../common/interest.rs"]
pub mod interest;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use drmm::trace::RecordLayer;
use serde_json::Value;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

/// A writer into shared memory.
#[derive(Clone, Default)]
pub struct Mem(pub Arc<Mutex<Vec<u8>>>);

impl Write for Mem {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A recording subscriber writing into the returned memory, with its guard.
pub fn subscriber() -> (
    impl tracing::Subscriber + Send + Sync,
    drmm::trace::RecordGuard,
    Mem,
) {
    let mem = Mem::default();
    let (layer, guard) = RecordLayer::new(mem.clone()).unwrap();
    let only = tracing_subscriber::filter::filter_fn(|m| m.target() == drmm::trace::TARGET);
    (
        tracing_subscriber::registry().with(layer.with_filter(only)),
        guard,
        mem,
    )
}

/// Runs `f` on this thread with a recording subscriber; the trace's lines, parsed (header
/// first).
pub fn record(f: impl FnOnce()) -> Vec<Value> {
    let (sub, guard, mem) = subscriber();
    interest::pin();
    tracing::subscriber::with_default(sub, f);
    guard.finish().unwrap();
    parse(&mem)
}

/// The lines written to `mem`, parsed.
pub fn parse(mem: &Mem) -> Vec<Value> {
    let text = String::from_utf8(mem.0.lock().unwrap().clone()).unwrap();
    assert!(text.ends_with('\n'), "every line ends with a newline");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The events (the lines after the header).
pub fn events(lines: &[Value]) -> &[Value] {
    &lines[1..]
}

/// The `op` of every event.
pub fn ops(lines: &[Value]) -> Vec<&str> {
    events(lines)
        .iter()
        .map(|e| e["op"].as_str().unwrap())
        .collect()
}

/// The trace made comparable across runs: `t` and `thread` replaced, device ids numbered in
/// order of appearance, the header's pid dropped, lines of the library's own files zeroed
/// (they move with every edit of the library), and reference events dropped (they exist only
/// with reference tracking on).
pub fn normalize(lines: &[Value]) -> String {
    let mut ids: HashMap<u64, u64> = HashMap::new();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let mut line = line.clone();
        let obj = line.as_object_mut().unwrap();
        if i == 0 {
            obj.insert("pid".into(), Value::from(0));
        } else {
            if matches!(obj["op"].as_str(), Some("GET" | "PUT")) {
                continue;
            }
            obj.insert("t".into(), Value::from(0));
            obj.insert("thread".into(), Value::from("T"));
            if let Some(dev) = obj.get("dev").and_then(Value::as_u64) {
                let n = ids.len() as u64 + 1;
                let id = *ids.entry(dev).or_insert(n);
                obj.insert("dev".into(), Value::from(id));
            }
            let in_library = obj
                .get("file")
                .and_then(Value::as_str)
                .is_some_and(|f| f.starts_with("src/") || f.contains("/src/"));
            if in_library {
                obj.insert("line".into(), Value::from(0));
            }
        }
        out.push_str(&serde_json::to_string(&line).unwrap());
        out.push('\n');
    }
    out
}
