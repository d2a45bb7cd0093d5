//! The registry and the leak report (`--features registry`): who holds each reference, named by
//! the exact source line that took it; states of logical and bus devices; entries by kind; the
//! `GET`/`PUT` events; threads; no registry lock held while user code runs.
#![cfg(feature = "registry")]

#[path = "common/interest.rs"]
mod interest;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use drmm::report::{self, DeviceKind, DeviceState, RefKind};
use drmm::{Bound, Bus, Device, Driver, EntryKind};

/// `file:line:` as a `Location` prints it (the column follows).
fn at(line: u32) -> String {
    format!("{}:{line}:", file!())
}

#[test]
fn a_reference_cycle_is_named_by_its_clone_line() {
    let dev = Device::with_name("cycle0", ());
    let id = dev.list_id();
    let clone_line = line!() + 1;
    let _cycle = dev.alloc(dev.clone()).unwrap();
    drop(dev); // the device holds a value holding the device: never released

    let leaks = report::leaks();
    let card = leaks.device(id).expect("the cycle keeps the device alive");
    assert_eq!(card.name(), "cycle0");
    assert_eq!(card.kind(), DeviceKind::Logical);
    assert_eq!(card.state(), DeviceState::Alive);
    let [holder] = card.holders() else {
        panic!("one reference left: {card}")
    };
    assert_eq!(holder.kind(), RefKind::Clone);
    assert_eq!(holder.location().file(), file!());
    assert_eq!(holder.location().line(), clone_line);
    let [entry] = card.entries() else {
        panic!("one entry: {card}")
    };
    assert_eq!(entry.location().line(), clone_line);
    assert_eq!(holder.same_line_entry(), Some(entry.seq()));

    let text = card.to_string();
    assert!(
        text.contains(&format!(
            "ref {} (clone) taken at {}",
            holder.id(),
            at(clone_line)
        )),
        "{text}"
    );
    assert!(text.contains("a reference cycle?"), "{text}");
    assert!(leaks.to_string().contains(&text), "{leaks}");
    assert_eq!(leaks.named("cycle0").count(), 1);
}

#[test]
fn a_forgotten_clone_and_a_forgotten_file_are_named_by_their_lines() {
    let dev = Device::with_name("forgot0", 7u32);
    let id = dev.list_id();
    dev.register().unwrap();
    let _buf = dev.kzalloc(64).unwrap();
    let clone_line = line!() + 1;
    let forgotten = dev.clone();
    let open_line = line!() + 1;
    let file = dev.open(()).unwrap();
    let kept = dev.clone();
    std::mem::forget(forgotten);
    std::mem::forget(file);
    dev.unplug();
    drop(dev);
    drop(kept);

    let leaks = report::leaks();
    let card = leaks.device(id).expect("two references were forgotten");
    assert_eq!(card.state(), DeviceState::Unplugged);
    assert_eq!(card.open_files(), 1);
    let holders: Vec<(RefKind, u32)> = card
        .holders()
        .iter()
        .map(|h| (h.kind(), h.location().line()))
        .collect();
    assert_eq!(
        holders,
        [(RefKind::Clone, clone_line), (RefKind::Open, open_line)]
    );
    assert!(card.holders().iter().all(|h| h.same_line_entry().is_none()));
    let text = leaks.to_string();
    assert!(
        text.contains(&format!("(clone) taken at {}", at(clone_line))),
        "{text}"
    );
    assert!(
        text.contains(&format!("(open) taken at {}", at(open_line))),
        "{text}"
    );
    assert!(text.contains("unplugged, not released"), "{text}");
}

#[test]
fn every_way_of_taking_a_reference_records_its_caller() {
    let mut expected = Vec::new();
    let mut keep = Vec::new();

    expected.push((RefKind::New, line!() + 1));
    let a = Device::new(1u8);
    expected.push((RefKind::New, line!() + 1));
    keep.push(Device::with_name("ways1", 2u8));
    expected.push((RefKind::New, line!() + 1));
    keep.push(Device::try_new(3u8).unwrap());
    expected.push((RefKind::New, line!() + 1));
    keep.push(Device::try_new_with("ways3", |_| Ok::<_, drmm::Error>(4u8)).unwrap());
    for (dev, want) in keep.iter().zip(&expected[1..]) {
        let r = report::leaks();
        let h = r.device(dev.list_id()).unwrap().holders();
        assert_eq!((h[0].kind(), h[0].location().line()), *want);
        assert_eq!(h[0].location().file(), file!());
    }

    a.register().unwrap();
    let clone_line = line!() + 1;
    let b = a.clone();
    let open_line = line!() + 1;
    let f = a.open(()).unwrap();
    let open_with_line = line!() + 1;
    let g = a.open_with(|_| Ok(())).unwrap();
    let r = report::leaks();
    let got: Vec<(RefKind, u32)> = r
        .device(a.list_id())
        .unwrap()
        .holders()
        .iter()
        .map(|h| (h.kind(), h.location().line()))
        .collect();
    assert_eq!(
        got,
        [
            expected[0],
            (RefKind::Clone, clone_line),
            (RefKind::Open, open_line),
            (RefKind::Open, open_with_line),
        ]
    );
    assert_eq!(Device::ref_count(&a), got.len());
    drop((b, f, g, keep));
}

#[test]
fn holders_are_forgotten_when_their_reference_drops() {
    let dev = Device::new(());
    let id = dev.list_id();
    let clones: Vec<Device<()>> = (0..10).map(|_| dev.clone()).collect();
    let count = |r: &report::Report| r.device(id).unwrap().holders().len();
    assert_eq!(count(&report::leaks()), 11);
    let ids: Vec<u64> = report::leaks().device(id).unwrap().holders()[1..]
        .iter()
        .map(|h| h.id())
        .collect();
    drop(clones);
    assert_eq!(count(&report::leaks()), 1);
    let again = dev.clone();
    let r = report::leaks();
    let new_id = r.device(id).unwrap().holders()[1].id();
    assert!(!ids.contains(&new_id), "reference ids are not reused");
    drop((again, dev));
    assert!(report::leaks().device(id).is_none());
}

struct Vgpu;

impl Driver for Vgpu {
    type Data = Device<u32>;
    fn probe(&self, parent: &mut Bound<'_>) -> drmm::Result<Device<u32>> {
        Device::new_on(parent, "vcard0", 42)
    }
}

#[test]
fn new_on_records_the_probe_line_for_the_driver_and_the_binding() {
    let bus = Bus::new("platform");
    let bus_line = line!() + 1;
    let pdev = bus.add_device("vgpu.0");
    pdev.bind(Arc::new(Vgpu)).unwrap();
    // A closure, not `.cloned()`: the clone is then called from this line, not from `Option`.
    let get_line = line!() + 2;
    #[allow(clippy::map_clone)]
    let drm = pdev.with_bound(|b| b.driver_data::<Device<u32>>().map(|d| d.clone()));
    let drm = drm.unwrap().unwrap();
    let id = drm.list_id();

    let r = report::leaks();
    let probe_line = r.device(id).unwrap().holders()[0].location().line();
    let kinds: Vec<(RefKind, u32)> = r
        .device(id)
        .unwrap()
        .holders()
        .iter()
        .map(|h| (h.kind(), h.location().line()))
        .collect();
    assert_eq!(
        kinds,
        [
            (RefKind::New, probe_line),
            (RefKind::Binding, probe_line),
            (RefKind::Clone, get_line),
        ]
    );
    let bus_dev = r.device(pdev.list_id()).unwrap();
    assert_eq!(bus_dev.kind(), DeviceKind::Bus);
    assert!(bus_dev.is_bound());
    assert_eq!(bus_dev.created_at().line(), bus_line);
    // The binding's devres action holds the binding reference.
    assert_eq!(bus_dev.entries().len(), 1);
    assert_eq!(bus_dev.entries()[0].location().line(), probe_line);

    pdev.unbind().unwrap();
    let r = report::leaks();
    let card = r.device(id).unwrap();
    assert_eq!(card.state(), DeviceState::Unplugged);
    assert_eq!(card.holders().len(), 1, "{card}");
    assert_eq!(card.holders()[0].location().line(), get_line);
    drop(drm);
    assert!(report::leaks().device(id).is_none());
}

#[test]
fn a_released_device_leaves_the_registry_and_is_counted() {
    let dev = Device::with_name("gone0", ());
    let id = dev.list_id();
    let before = report::live().released_count();
    assert!(report::live().device(id).is_some());
    drop(dev);
    let live = report::live();
    assert!(live.device(id).is_none());
    assert!(live.released_count() > before);
    assert!(!live.released().is_empty() && live.released().len() <= 64);
    let text = live.to_string();
    assert!(text.starts_with("drmm live devices: "), "{text}");
    assert!(text.contains("last released:"), "{text}");
    assert!(
        report::leaks().released().is_empty(),
        "no history in leaks()"
    );
}

#[test]
fn bus_devices_are_alive_then_removed_then_released() {
    let bus = Bus::new("virtual");
    let dev = bus.add_device("root0");
    let id = dev.list_id();
    dev.with_driverless(|b| b.kzalloc(32).map(drop))
        .unwrap()
        .unwrap();
    let r = report::leaks();
    let seen = r.device(id).unwrap();
    assert_eq!((seen.state(), seen.is_bound()), (DeviceState::Alive, false));
    assert_eq!(seen.entries().len(), 1);
    assert!(seen.holders().is_empty(), "bus references are not tracked");

    dev.remove().unwrap();
    let r = report::leaks();
    let seen = r.device(id).expect("a reference is still held");
    assert_eq!(seen.state(), DeviceState::Unplugged);
    assert!(seen.entries().is_empty(), "removal released the devres");
    assert!(seen.to_string().contains("bus device \"root0\""), "{seen}");
    drop(dev);
    assert!(report::leaks().device(id).is_none());
}

#[test]
fn entries_are_grouped_by_kind_with_sizes_and_locations() {
    let dev = Device::with_name("kinds0", ());
    let a_line = line!() + 1;
    let _a = dev.kzalloc(64).unwrap();
    let _b = dev.kzalloc(36).unwrap();
    let act_line = line!() + 1;
    let _c = drmm::add_action!(dev, |_| ()).unwrap();
    let r = report::leaks();
    let seen = r.device(dev.list_id()).unwrap();
    let by_kind: Vec<(EntryKind, usize, usize)> = seen
        .entries_by_kind()
        .iter()
        .map(|s| (s.kind, s.count, s.bytes))
        .collect();
    assert_eq!(
        by_kind,
        [(EntryKind::Action, 1, 0), (EntryKind::Alloc, 2, 100)]
    );
    assert_eq!(seen.entries()[0].location().line(), act_line);
    assert_eq!(seen.entries()[2].location().line(), a_line);
    let text = seen.to_string();
    assert!(
        text.contains("3 entries, 100 bytes: action 1 (0 bytes), alloc 2 (100 bytes)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("kzalloc (64 bytes) at {}", at(a_line))),
        "{text}"
    );
}

/// Records `drmm` events as field maps.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Events {
    fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut m = BTreeMap::new();
        e.record(&mut Fields(&mut m));
        self.0.lock().unwrap().push(m);
    }
}

fn with_events(f: impl FnOnce()) -> Vec<BTreeMap<String, String>> {
    use tracing_subscriber::layer::SubscriberExt;
    let events = Events::default();
    let sub = tracing_subscriber::registry()
        .with(events.clone())
        .with(tracing_subscriber::filter::LevelFilter::DEBUG);
    interest::pin();
    tracing::subscriber::with_default(sub, f);
    events.0.lock().unwrap().clone()
}

#[test]
fn get_and_put_events_follow_the_trace_schema() {
    let mut lines = [0; 2];
    let mut id = 0;
    let events = with_events(|| {
        lines[0] = line!() + 1;
        let dev = Device::with_name("events0", ());
        id = dev.list_id();
        lines[1] = line!() + 1;
        let other = dev.clone();
        drop(dev);
        drop(other);
    });
    let refs: Vec<&BTreeMap<String, String>> = events
        .iter()
        .filter(|e| matches!(e.get("op").map(String::as_str), Some("GET" | "PUT")))
        .collect();
    let get = |ref_id: &str, line: u32| {
        BTreeMap::from(
            [
                ("op", "GET"),
                ("dev", &id.to_string()),
                ("dev_name", "events0"),
                ("dev_kind", "logical"),
                ("ref_id", ref_id),
                ("file", file!()),
                ("line", &line.to_string()),
                ("detail", if ref_id == "1" { "new" } else { "clone" }),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        )
    };
    let put = |ref_id: &str| {
        BTreeMap::from(
            [
                ("op", "PUT"),
                ("dev", &id.to_string()),
                ("dev_name", "events0"),
                ("dev_kind", "logical"),
                ("ref_id", ref_id),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        )
    };
    assert_eq!(
        refs,
        [
            &get("1", lines[0]),
            &get("2", lines[1]),
            &put("1"),
            &put("2")
        ]
    );
}

#[test]
fn references_taken_and_dropped_on_many_threads_are_all_accounted_for() {
    let n = if cfg!(miri) { 20 } else { 200 };
    let dev = Device::with_name("threads0", ());
    let id = dev.list_id();
    let kept: Vec<Vec<Device<()>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    for i in 0..n {
                        let c = dev.clone();
                        if i % 2 == 0 {
                            mine.push(c);
                        }
                    }
                    mine
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let r = report::leaks();
    let holders = r.device(id).unwrap().holders();
    assert_eq!(holders.len(), 1 + 4 * n / 2);
    assert_eq!(holders.len(), Device::ref_count(&dev));
    let mut ids: Vec<u64> = holders.iter().map(|h| h.id()).collect();
    ids.dedup();
    assert_eq!(ids.len(), holders.len(), "ids are unique and sorted");
    drop(kept);
    assert_eq!(report::leaks().device(id).unwrap().holders().len(), 1);
}

#[test]
fn a_device_released_on_another_thread_leaves_the_registry() {
    let dev = Device::with_name("far0", vec![0u8; 16]);
    let id = dev.list_id();
    let _buf = dev.kzalloc(8).unwrap();
    let clone = dev.clone();
    drop(dev);
    std::thread::spawn(move || drop(clone)).join().unwrap();
    assert!(report::leaks().device(id).is_none());
}

#[test]
fn reports_are_taken_while_devices_churn_on_other_threads() {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..if cfg!(miri) { 5 } else { 300 } {
                    let dev = Device::new(());
                    for n in 1..8 {
                        let _ = dev.kzalloc(n * 8).unwrap();
                    }
                    let _ = drmm::add_action!(dev, |_| ()).unwrap();
                    let other = dev.clone();
                    drop(dev);
                    drop(other); // released here, maybe while a report lists it
                }
            });
        }
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = report::leaks();
                for d in r.devices() {
                    if d.state() == DeviceState::Releasing {
                        assert!(d.entries().is_empty());
                    }
                }
                let _ = r.to_string();
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

#[test]
fn user_code_can_take_a_report_anywhere_the_library_calls_it() {
    // A release action, the drop of a managed value and a tracing subscriber all take a
    // report: a registry lock held around any of them would deadlock this test.
    struct ReportsOnDrop(u64, Arc<Mutex<Vec<DeviceState>>>);
    impl Drop for ReportsOnDrop {
        fn drop(&mut self) {
            let r = report::leaks();
            if let Some(d) = r.device(self.0) {
                self.1.lock().unwrap().push(d.state());
            }
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let dev = Device::with_name("user0", ());
    let id = dev.list_id();
    let _v = dev.alloc(ReportsOnDrop(id, seen.clone())).unwrap();
    let s = seen.clone();
    let _ = drmm::add_action!(dev, move |_| {
        let r = report::leaks();
        let d = r.device(id).expect("listed until it is dropped");
        assert!(d.entries().is_empty(), "not listed while it releases");
        s.lock().unwrap().push(d.state());
    })
    .unwrap();

    struct Reporting;
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Reporting {
        fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            let _ = report::leaks().to_string();
        }
    }
    use tracing_subscriber::layer::SubscriberExt;
    let sub = tracing_subscriber::registry()
        .with(Reporting)
        .with(tracing_subscriber::filter::LevelFilter::DEBUG);
    interest::pin();
    tracing::subscriber::with_default(sub, || {
        let other = dev.clone();
        drop(dev);
        drop(other);
    });
    assert_eq!(
        *seen.lock().unwrap(),
        [DeviceState::Releasing, DeviceState::Releasing]
    );
    assert!(report::leaks().device(id).is_none());
}

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

#[test]
fn the_exit_guard_prints_the_leak_report_when_dropped() {
    let out = Buf::default();
    let guard = report::at_exit().to_writer(out.clone());
    let dev = Device::with_name("exit0", ());
    let line = line!() + 1;
    std::mem::forget(dev.clone());
    drop(dev);
    drop(guard);
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    assert!(text.starts_with("drmm leak report: "), "{text}");
    assert!(text.contains("logical device \"exit0\""), "{text}");
    assert!(
        text.contains(&format!("(clone) taken at {}", at(line))),
        "{text}"
    );
}

/// The system allocator, failing on the threads that ask it to.
struct Failing;

thread_local! {
    static FAIL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

// SAFETY: forwards to the system allocator, or returns null (an allowed allocation failure).
unsafe impl std::alloc::GlobalAlloc for Failing {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if FAIL.with(|f| f.get()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's promises, passed on.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: allocated by `System` above.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Failing = Failing;

#[test]
fn a_reference_taken_while_memory_runs_out_is_counted_not_lost() {
    let dev = Device::with_name("oom0", ());
    let id = dev.list_id();
    FAIL.with(|f| f.set(true));
    let clone = dev.clone(); // its tracker shard is empty: recording it needs memory
    FAIL.with(|f| f.set(false));
    let r = report::leaks();
    let seen = r.device(id).unwrap();
    assert_eq!(seen.holders().len(), 1);
    assert_eq!(seen.unlisted_references(), 1);
    assert!(
        seen.to_string()
            .contains("and 1 taken while memory ran out (holders unknown)"),
        "{seen}"
    );
    drop(clone);
    assert_eq!(report::leaks().device(id).unwrap().unlisted_references(), 0);
}

#[test]
fn a_subscriber_panicking_on_get_or_put_leaves_no_reference_behind() {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use tracing_subscriber::layer::SubscriberExt;
    struct PanicsOn(&'static str);
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PanicsOn {
        fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            let mut m = BTreeMap::new();
            e.record(&mut Fields(&mut m));
            if m.get("op").map(String::as_str) == Some(self.0) {
                panic!("subscriber panics on {}", self.0);
            }
        }
    }
    let with = |op: &'static str, f: &mut dyn FnMut()| {
        let sub = tracing_subscriber::registry()
            .with(PanicsOn(op))
            .with(tracing_subscriber::filter::LevelFilter::DEBUG);
        interest::pin();
        tracing::subscriber::with_default(sub, || catch_unwind(AssertUnwindSafe(f)))
    };

    let dev = Device::with_name("panics0", ());
    let id = dev.list_id();
    let mut clone = None;
    assert!(with("GET", &mut || clone = Some(dev.clone())).is_err());
    assert!(clone.is_none());
    assert_eq!(report::leaks().device(id).unwrap().holders().len(), 1);

    let mut dev = Some(dev);
    assert!(with("PUT", &mut || drop(dev.take())).is_err());
    assert!(
        report::leaks().device(id).is_none(),
        "the reference dropped"
    );
}
