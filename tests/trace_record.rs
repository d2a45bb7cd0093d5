//! The recorder: events from many threads, one-line enablement (`record_to`,
//! `init_from_env`) and its errors, and a subscriber that re-enters the library from every
//! event (it would deadlock if an event were emitted under one of the library's locks).
//!
//! Tests that install a global subscriber run in a child process of their own (this test
//! binary, run again for that one test), since a process has only one.
#![cfg(feature = "record")]

mod trace_support;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use drmm::trace::{RecordError, record_to};
use drmm::{Bound, Bus, BusDevice, Device, Devres, Driver};
use serde_json::Value;
use trace_support::{parse, subscriber};

/// Set in a child process: the name of the test it runs.
const CHILD: &str = "DRMM_TRACE_TEST_CHILD";

/// Runs test `name` of this binary in a child process with `env`; its output if it passed.
fn in_child(name: &str, env: &[(&str, Option<&str>)]) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, name);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child {name} failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "child {name} did not run:\n{text}"
    );
    text
}

fn is_child(name: &str) -> bool {
    std::env::var(CHILD).is_ok_and(|c| c == name)
}

fn temp_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}.jsonl", std::process::id()))
}

fn read_trace(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn many_threads_every_event_whole_and_in_time_order() {
    const THREADS: usize = 4;
    const ADDS: usize = 200;
    let (sub, guard, mem) = subscriber();
    trace_support::interest::pin();
    let dispatch = tracing::Dispatch::new(sub);
    let dev = Device::with_name("card0", ());
    let start = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|i| {
            let (dev, start, dispatch) = (dev.clone(), start.clone(), dispatch.clone());
            std::thread::Builder::new()
                .name(format!("worker{i}"))
                .spawn(move || {
                    tracing::dispatcher::with_default(&dispatch, || {
                        start.wait();
                        for _ in 0..ADDS {
                            let b = dev.kzalloc(8).unwrap();
                            dev.kfree(b).unwrap();
                        }
                    })
                })
                .unwrap()
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    drop(guard);
    let lines = parse(&mem);
    let events = &lines[1..];
    assert_eq!(events.len(), THREADS * ADDS * 2, "no event lost or torn");
    let mut per_thread: HashMap<&str, usize> = HashMap::new();
    let mut last = 0;
    let mut live: HashSet<u64> = HashSet::new();
    for e in events {
        *per_thread.entry(e["thread"].as_str().unwrap()).or_default() += 1;
        let t = e["t"].as_u64().unwrap();
        assert!(t >= last, "t never decreases along the file");
        last = t;
        let entry = e["entry"].as_u64().unwrap();
        match e["op"].as_str().unwrap() {
            "ADD" => assert!(live.insert(entry), "{e}"),
            "DEL" => assert!(live.remove(&entry), "a DEL after its ADD: {e}"),
            _ => panic!("{e}"),
        }
    }
    let want: HashMap<String, usize> = (0..THREADS)
        .map(|i| (format!("worker{i}"), ADDS * 2))
        .collect();
    let got: HashMap<String, usize> = per_thread
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn unnamed_threads_are_named_by_their_id() {
    let (sub, guard, mem) = subscriber();
    trace_support::interest::pin();
    let dispatch = tracing::Dispatch::new(sub);
    let id = std::thread::spawn(move || {
        tracing::dispatcher::with_default(&dispatch, || {
            let dev = Device::new(());
            let _ = dev.kzalloc(1).unwrap();
        });
        std::thread::current().id()
    })
    .join()
    .unwrap();
    drop(guard);
    let lines = parse(&mem);
    assert!(lines.len() > 1);
    for e in &lines[1..] {
        assert_eq!(e["thread"], format!("{id:?}"), "{e}");
    }
}

#[test]
fn record_to_writes_the_file_and_flushes_it_when_the_guard_drops() {
    let name = "record_to_writes_the_file_and_flushes_it_when_the_guard_drops";
    if !is_child(name) {
        in_child(name, &[]);
        return;
    }
    let path = temp_path("record_to");
    let guard = record_to(&path).unwrap();
    // Only the header until the buffer is flushed: the events are buffered.
    let dev = Device::with_name("card0", ());
    let _ = drmm::add_action!(dev, |_| ()).unwrap();
    drop(dev);
    assert_eq!(read_trace(&path).len(), 1, "buffered until flushed");
    drop(guard);
    let lines = read_trace(&path);
    assert_eq!(lines[0]["schema"], "drmm-trace");
    let ops: Vec<_> = lines[1..]
        .iter()
        .map(|e| e["op"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        [
            "CREATE",
            "ADD",
            "LAST_REF",
            "RELEASE_BEGIN",
            "REL",
            "RELEASE_END"
        ]
    );
    // After the guard, every event is flushed as it is written.
    let late = Device::with_name("card1", ());
    assert_eq!(read_trace(&path).len(), lines.len() + 1);
    drop(late);
    // Other targets are not recorded.
    tracing::error!(target: "elsewhere", op = "ADD", "not ours");
    assert!(
        read_trace(&path)
            .iter()
            .all(|e| e["dev_name"] != Value::Null || e["schema"] == "drmm-trace")
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn record_to_refuses_when_a_global_subscriber_is_set() {
    let name = "record_to_refuses_when_a_global_subscriber_is_set";
    if !is_child(name) {
        in_child(name, &[]);
        return;
    }
    tracing::subscriber::set_global_default(tracing_subscriber::registry()).unwrap();
    let path = temp_path("refused");
    let err = record_to(&path).unwrap_err();
    assert!(matches!(err, RecordError::SubscriberAlreadySet), "{err}");
    assert!(err.to_string().contains("RecordLayer"), "{err}");
    assert!(!path.exists(), "the file is not touched");
}

#[test]
fn record_to_an_impossible_path_is_a_create_error() {
    let name = "record_to_an_impossible_path_is_a_create_error";
    if !is_child(name) {
        in_child(name, &[]);
        return;
    }
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no/such/dir/trace.jsonl");
    let err = record_to(&path).unwrap_err();
    match &err {
        RecordError::Create { path: p, .. } => assert_eq!(p, &path),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("no/such/dir"), "{err}");
    // Nothing was installed: recording can still start.
    let ok = temp_path("after_error");
    drop(record_to(&ok).unwrap());
    std::fs::remove_file(&ok).unwrap();
}

#[test]
fn init_from_env_records_to_the_path_in_drmm_trace() {
    let name = "init_from_env_records_to_the_path_in_drmm_trace";
    let path = temp_path("from_env");
    if !is_child(name) {
        in_child(name, &[("DRMM_TRACE", Some(path.to_str().unwrap()))]);
        let lines = read_trace(&path);
        assert!(
            lines
                .iter()
                .any(|e| e["op"] == "CREATE" && e["dev_name"] == "card9")
        );
        std::fs::remove_file(&path).unwrap();
        return;
    }
    let guard = drmm::trace::init_from_env().unwrap();
    assert!(guard.is_some());
    drop(Device::with_name("card9", ()));
    drop(guard);
}

#[test]
fn init_from_env_without_the_variable_does_nothing() {
    let name = "init_from_env_without_the_variable_does_nothing";
    if !is_child(name) {
        in_child(name, &[("DRMM_TRACE", None)]);
        in_child(name, &[("DRMM_TRACE", Some(""))]);
        return;
    }
    assert!(drmm::trace::init_from_env().unwrap().is_none());
    assert!(!tracing::dispatcher::has_been_set(), "nothing installed");
}

#[test]
fn write_errors_are_reported_by_finish() {
    struct Failing;
    impl std::io::Write for Failing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    // The header goes to the buffer; the first flush meets the error.
    let (layer, guard) = drmm::trace::RecordLayer::new(Failing).unwrap();
    drop(layer);
    let err = guard.finish().unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
}

/// A driver for the re-entering test: a Devres value, a devres entry and a logical device.
struct Reentered;

impl Driver for Reentered {
    type Data = (Arc<Devres<u32>>, Device<()>);
    fn probe(&self, dev: &mut Bound<'_>) -> drmm::Result<Self::Data> {
        let regs = Arc::new(Devres::new(dev, 1)?);
        let _ = dev.kzalloc(8)?;
        let card = Device::new_on(dev, "card0", ())?;
        let _ = card.kzalloc(8)?;
        card.register()?;
        Ok((regs, card))
    }
    fn remove(&self, _dev: &mut Bound<'_>, data: &Self::Data) {
        data.1.unplug();
    }
}

type Probe = Box<dyn Fn() + Send + Sync>;

/// A layer that runs every registered probe on every `drmm` event.
struct Reenter(Arc<Mutex<Vec<Probe>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Reenter {
    fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if e.metadata().target() == "drmm" {
            // Taken out while they run: a probe's own events do not run it again.
            let probes = std::mem::take(&mut *self.0.lock().unwrap());
            for p in &probes {
                p();
            }
            let mut now = self.0.lock().unwrap();
            let added = std::mem::replace(&mut *now, probes);
            now.extend(added);
        }
    }
}

/// Every event of the whole lifecycle is emitted where the subscriber may use the devices:
/// read the lists, the gate, the Devres value, open and close a file. A lock held across an
/// event would deadlock here (the watchdog turns that into a failure).
#[test]
fn subscribers_never_run_under_a_library_lock() {
    use tracing_subscriber::layer::SubscriberExt;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let probes: Arc<Mutex<Vec<Probe>>> = Arc::default();
        let (rec, guard, mem) = subscriber();
        let sub = rec.with(Reenter(probes.clone()));
        trace_support::interest::pin();
        tracing::subscriber::with_default(sub, || {
            let bus = Bus::new("platform");
            let pdev = bus.add_device("gpu.0");
            let p = pdev.clone();
            probes.lock().unwrap().push(Box::new(move || {
                let _ = (p.resource_count(), p.snapshot(), p.is_bound());
            }));
            pdev.bind(Arc::new(Reentered)).unwrap();
            let (regs, card) = pdev
                .with_bound(|b| {
                    let d = b.driver_data::<(Arc<Devres<u32>>, Device<()>)>().unwrap();
                    (d.0.clone(), d.1.clone())
                })
                .unwrap();
            let c = card.clone();
            let r = regs.clone();
            probes.lock().unwrap().push(Box::new(move || {
                let _ = (c.resource_count(), c.snapshot(), c.is_unplugged());
                drop(c.enter());
                drop(r.try_access());
                if let Ok(f) = c.open(()) {
                    drop(f);
                }
            }));
            let file = card.open(()).unwrap();
            pdev.unbind().unwrap();
            // The probes' references go before the last close, so that it is the last.
            probes.lock().unwrap().truncate(1);
            drop((card, regs));
            drop(file);
            pdev.remove().unwrap();
            assert_eq!(BusDevice::ref_count(&pdev), 2);
        });
        drop(guard);
        let ops: Vec<String> = parse(&mem)[1..]
            .iter()
            .map(|e| e["op"].as_str().unwrap().to_string())
            .collect();
        done_tx.send(ops).unwrap();
    });
    let ops = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("deadlock: an event was emitted under a lock the subscriber needed");
    for op in [
        "OPEN",
        "UNPLUG",
        "REVOKE",
        "UNBIND",
        "CLOSE",
        "LAST_REF",
        "DEVICE_REMOVE",
    ] {
        assert!(ops.iter().any(|o| o == op), "{op} in {ops:?}");
    }
}

/// A subscriber that unplugs the device when it sees it opened: the event comes after the
/// open has left the gate (an unplug waits for every thread inside it, the emitting one too).
#[test]
fn a_subscriber_may_unplug_at_open_and_register() {
    use tracing_subscriber::layer::SubscriberExt;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let probes: Arc<Mutex<Vec<Probe>>> = Arc::default();
        let sub = tracing_subscriber::registry().with(Reenter(probes.clone()));
        trace_support::interest::pin();
        tracing::subscriber::with_default(sub, || {
            let card = Device::with_name("card0", ());
            card.register().unwrap();
            let c = card.clone();
            let unplugs = Arc::new(Mutex::new(0));
            let u = unplugs.clone();
            probes.lock().unwrap().push(Box::new(move || {
                if c.open_files() > 0 && c.unplug() {
                    *u.lock().unwrap() += 1;
                }
            }));
            let file = card.open(()).unwrap();
            assert_eq!(*unplugs.lock().unwrap(), 1);
            assert!(file.enter().is_none());
            probes.lock().unwrap().clear();
        });
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("deadlock: OPEN emitted inside the gate");
}
