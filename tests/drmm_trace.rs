//! Promise 9: list operations are traced with the kernel's vocabulary, the entry's name, size
//! and the caller's location as fields, through `tracing` target `drmm`, as any subscriber sees
//! them (here `tracing-subscriber`'s text formatter).

#[path = "common/interest.rs"]
mod interest;

use std::io::Write;
use std::sync::{Arc, Mutex};

use drmm::Device;

/// A `MakeWriter` that appends into a shared buffer.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
    type Writer = Buf;
    fn make_writer(&'a self) -> Buf {
        self.clone()
    }
}

fn capture(filter: &str, f: impl FnOnce()) -> Vec<String> {
    let buf = Buf::default();
    let sub = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(buf.clone())
        .with_ansi(false)
        .without_time()
        .finish();
    interest::pin();
    tracing::subscriber::with_default(sub, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    text.lines().map(str::to_string).collect()
}

#[test]
fn add_del_rel_and_release_markers_in_kernel_wording() {
    let file = file!();
    let mut add_line = 0;
    let lines = capture("drmm=debug", || {
        let dev = Device::with_name("card7", ());
        add_line = line!() + 1;
        let h = drmm::add_action!(dev, |_| ()).unwrap();
        let buf = dev.kzalloc(48).unwrap();
        let _keep = dev.kstrdup("abc").unwrap();
        dev.release_action(h).unwrap();
        dev.kfree(buf).unwrap();
        drop(dev);
    });
    let find = |needles: &[&str]| {
        lines
            .iter()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .unwrap_or_else(|| panic!("no line with {needles:?} in {lines:#?}"))
    };
    let add = find(&["op=\"ADD\"", "entry=1 ", "name=\"|_| ()\"", "size=0"]);
    assert!(
        add.contains(&format!("file=\"{file}\" line={add_line}")),
        "{add}"
    );
    assert!(add.contains("DEBUG drmm:"), "{add}");
    assert!(
        add.contains("dev_name=\"card7\"") && add.contains("kind=\"action\""),
        "{add}"
    );
    assert!(add.contains("dev_kind=\"logical\" list=\"drmm\""), "{add}");
    // The message is a few words; the facts are in the fields only.
    assert!(add.contains("entry added op="), "{add}");
    assert!(!add.contains("card7:"), "{add}");
    find(&["op=\"ADD\"", "entry=2 ", "name=\"kzalloc\"", "size=48"]);
    find(&["op=\"DEL\"", "entry=1 ", "name=\"|_| ()\""]);
    find(&["op=\"DEL\"", "entry=2 ", "name=\"kzalloc\"", "size=48"]);
    find(&[
        "release begin",
        "op=\"RELEASE_BEGIN\"",
        "dev_name=\"card7\"",
    ]);
    find(&["op=\"REL\"", "entry=3 ", "name=\"kstrdup\"", "size=3"]);
    find(&["release end", "op=\"RELEASE_END\"", "detail=1"]);
}

#[test]
fn failures_are_traced() {
    let lines = capture("drmm=debug", || {
        let dev = Device::with_name("card8", ());
        let _ = dev.kmalloc_aligned(8, 3);
    });
    assert!(
        lines.iter().any(|l| l.contains("op=\"ADD_FAILED\"")
            && l.contains("dev_name=\"card8\"")
            && l.contains("name=\"kmalloc\"")
            && l.contains("invalid alignment 3")),
        "{lines:#?}"
    );
}

#[test]
fn filtered_out_produces_nothing() {
    let lines = capture("drmm=off", || {
        let dev = Device::new(());
        let _ = dev.kzalloc(8).unwrap();
    });
    assert!(lines.is_empty(), "{lines:#?}");
}

#[test]
fn panics_during_release_are_reported_at_error_level() {
    let lines = capture("drmm=error", || {
        let dev = Device::with_name("card9", ());
        let _ = dev.add_action_named("first", |_| panic!("one")).unwrap();
        let _ = dev.add_action_named("second", |_| panic!("two")).unwrap();
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(dev)));
        std::panic::set_hook(prev);
        assert!(r.is_err());
    });
    let panic_of = |name: &str| {
        lines
            .iter()
            .find(|l| l.contains("op=\"PANIC\"") && l.contains(&format!("name=\"{name}\"")))
            .unwrap_or_else(|| panic!("no PANIC of {name} in {lines:#?}"))
    };
    assert!(panic_of("second").contains("detail=\"two\""));
    let one = panic_of("first");
    assert!(
        one.contains("detail=\"one\"") && one.contains("not resumed"),
        "{one}"
    );
}
