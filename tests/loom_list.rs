//! loom models of the resource list through the public API: concurrent adds, early releases
//! and the final release on one list, the last reference dropped on one thread while another
//! releases an entry, a devres release racing with the unbind, and opens racing with unplug.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --test loom_list -- --nocapture
//! ```
//!
//! Each model prints how many interleavings loom explored. Under loom the list lock is loom's
//! mutex and the reference count, gate and revocation use loom's atomics (`crate::sync`).

#![cfg(loom)]

use std::sync::atomic::AtomicUsize as StdAtomicUsize;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

use drmm::bus::{Bound, Bus, Driver};
use drmm::{Device, Error, LogicalDevice};

/// Driver data that counts its drop and remembers how many entries were released before.
struct Data {
    dropped: Arc<AtomicUsize>,
    released: Arc<AtomicUsize>,
    expected: usize,
}

impl Drop for Data {
    fn drop(&mut self) {
        // Onion: every entry was released before the data.
        assert_eq!(self.released.load(Ordering::SeqCst), self.expected);
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// A managed value that counts its drops.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn device(expected: usize) -> (Device<Data>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let dropped = Arc::new(AtomicUsize::new(0));
    let released = Arc::new(AtomicUsize::new(0));
    let dev = Device::new(Data {
        dropped: dropped.clone(),
        released: released.clone(),
        expected,
    });
    (dev, dropped, released)
}

/// An action that counts itself and checks the device's data is still there.
fn counting(released: &Arc<AtomicUsize>) -> impl FnOnce(&LogicalDevice<Data>) + Send + 'static {
    let r = released.clone();
    move |d| {
        assert!(
            d.try_data().is_some(),
            "action ran after the data was dropped"
        );
        r.fetch_add(1, Ordering::SeqCst);
    }
}

/// Runs `f` under loom and reports the number of interleavings explored.
fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    static RUNS: StdAtomicUsize = StdAtomicUsize::new(0);
    let start = std::time::Instant::now();
    RUNS.store(0, std::sync::atomic::Ordering::SeqCst);
    loom::model(move || {
        RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        f();
    });
    eprintln!(
        "loom model {name}: {} interleavings in {:.1?}",
        RUNS.load(std::sync::atomic::Ordering::SeqCst),
        start.elapsed()
    );
}

/// Two threads add to one list while a third reference is dropped: the final release (on
/// whichever thread drops last) runs both actions once, newest first by the list's order,
/// and drops the data after them.
#[test]
fn concurrent_adds_then_final_release() {
    model("concurrent_adds_then_final_release", || {
        let (dev, dropped, released) = device(2);
        let order = Arc::new(loom::sync::Mutex::new(Vec::new()));
        let adders: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|name| {
                let (d, r, o) = (dev.clone(), released.clone(), order.clone());
                thread::spawn(move || {
                    let _ = d
                        .add_action_named(name, move |dev| {
                            assert!(dev.try_data().is_some());
                            o.lock().unwrap().push(name);
                            r.fetch_add(1, Ordering::SeqCst);
                        })
                        .unwrap();
                    d
                })
            })
            .collect();
        let refs: Vec<_> = adders.into_iter().map(|t| t.join().unwrap()).collect();
        let newest_first: Vec<&str> = dev.snapshot().iter().map(|e| e.name()).collect();
        drop(dev);
        drop(refs);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        assert_eq!(*order.lock().unwrap(), newest_first);
    });
}

/// An early release on one thread races with an add on another; both entries run once.
#[test]
fn early_release_races_with_add() {
    model("early_release_races_with_add", || {
        let (dev, dropped, released) = device(2);
        let h = dev.add_action_named("early", counting(&released)).unwrap();
        let t = {
            let d = dev.clone();
            thread::spawn(move || {
                d.release_action(h).unwrap();
            })
        };
        let _ = dev.add_action_named("late", counting(&released)).unwrap();
        t.join().unwrap();
        assert_eq!(released.load(Ordering::SeqCst), 1);
        assert_eq!(dev.resource_count(), 1);
        drop(dev);
        assert_eq!(released.load(Ordering::SeqCst), 2);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    });
}

/// The last reference is dropped on one thread while another frees an entry early and then
/// drops its own reference: the value is dropped exactly once, the data after it, and the
/// device is released exactly once, on whichever thread comes last.
#[test]
fn final_release_races_with_early_free() {
    model("final_release_races_with_early_free", || {
        let drops = Arc::new(AtomicUsize::new(0));
        let (dev, dropped, released) = device(1);
        let v = dev.alloc(Counted(drops.clone())).unwrap();
        let _ = dev.add_action_named("other", counting(&released)).unwrap();
        let t = {
            let d = dev.clone();
            let drops = drops.clone();
            thread::spawn(move || {
                d.kfree(v).unwrap();
                assert_eq!(drops.load(Ordering::SeqCst), 1);
            })
        };
        drop(dev);
        t.join().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(released.load(Ordering::SeqCst), 1);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    });
}

/// An explicit release on one thread, which then drops what may be the last reference,
/// races with the drop of another reference: the target runs once, the rest at the final
/// release, wherever it happens.
#[test]
fn explicit_release_then_last_reference_on_either_thread() {
    model(
        "explicit_release_then_last_reference_on_either_thread",
        || {
            let (dev, dropped, released) = device(1);
            let runs = Arc::new(AtomicUsize::new(0));
            let h = {
                let runs = runs.clone();
                dev.add_action_named("target", move |_| {
                    runs.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap()
            };
            let _ = dev
                .add_action_named("counted", counting(&released))
                .unwrap();
            let t = {
                let d = dev.clone();
                thread::spawn(move || {
                    let r = d.release_action(h);
                    assert_eq!(r, Ok(()));
                })
            };
            drop(dev);
            t.join().unwrap();
            assert_eq!(runs.load(Ordering::SeqCst), 1);
            assert_eq!(released.load(Ordering::SeqCst), 1);
            assert_eq!(dropped.load(Ordering::SeqCst), 1);
        },
    );
}

struct Nop;
impl Driver for Nop {
    type Data = ();
    fn probe(&self, _: &mut Bound<'_>) -> drmm::Result<()> {
        Ok(())
    }
}

/// A devres entry freed early inside the binding's scope races with the unbind: the value
/// is dropped exactly once, by whichever comes first; the other sees `NotBound`.
#[test]
fn devres_free_races_with_unbind() {
    model("devres_free_races_with_unbind", || {
        let drops = Arc::new(AtomicUsize::new(0));
        let bus = Bus::new("loom");
        let dev = bus.add_device("d");
        dev.bind(std::sync::Arc::new(Nop)).unwrap();
        let v = dev
            .with_bound(|b| b.alloc(Counted(drops.clone())).unwrap())
            .unwrap();
        let t = {
            let dev = dev.clone();
            thread::spawn(move || match dev.with_bound(|b| b.kfree(v)) {
                Ok(r) => assert_eq!(r, Ok(())),
                Err(e) => assert_eq!(e, Error::NotBound),
            })
        };
        dev.unbind().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        t.join().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(dev.resource_count(), 0);
    });
}

/// An open races with unplug: after unplug returns, opening fails; a file opened before
/// keeps the device's data valid.
#[test]
fn open_races_with_unplug() {
    model("open_races_with_unplug", || {
        let (dev, dropped, _released) = device(0);
        let inside = Arc::new(AtomicUsize::new(0));
        dev.register().unwrap();
        let t = {
            let d = dev.clone();
            let inside = inside.clone();
            thread::spawn(move || {
                d.open_with(|_| {
                    inside.fetch_add(1, Ordering::SeqCst);
                    inside.fetch_sub(1, Ordering::SeqCst);
                    Ok(7u32)
                })
                .ok()
            })
        };
        dev.unplug();
        assert_eq!(
            inside.load(Ordering::SeqCst),
            0,
            "an open still running after unplug"
        );
        assert!(dev.enter().is_none());
        assert_eq!(dev.open(1u32).err(), Some(Error::Unplugged));
        let file = t.join().unwrap();
        drop(dev);
        if let Some(f) = file {
            assert_eq!(*f.data(), 7);
            assert!(f.device().try_data().is_some());
            assert!(f.enter().is_none());
            assert_eq!(dropped.load(Ordering::SeqCst), 0);
            drop(f);
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    });
}
