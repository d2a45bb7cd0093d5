//! loom models of the binding side: `Devres<T>` revocation racing with access and with an
//! early drop, and unplug racing with a thread inside the gate.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --test loom_devres
//! ```

#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

use drmm::Device;
use drmm::bus::{Bound, Bus, Devres, Driver};

struct Tracked {
    drops: Arc<AtomicUsize>,
    payload: usize,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

struct Nop;
impl Driver for Nop {
    type Data = ();
    fn probe(&self, _: &mut Bound<'_>) -> drmm::Result<()> {
        Ok(())
    }
}

fn bound_devres(drops: &Arc<AtomicUsize>) -> (Bus, drmm::BusDevice, Devres<Tracked>) {
    let bus = Bus::new("loom");
    let dev = bus.add_device("d");
    dev.bind(std::sync::Arc::new(Nop)).unwrap();
    let r = dev
        .with_bound(|b| {
            Devres::new(
                b,
                Tracked {
                    drops: drops.clone(),
                    payload: 7,
                },
            )
            .unwrap()
        })
        .unwrap();
    (bus, dev, r)
}

/// The owner drops its `Devres` while the binding ends: exactly one of them drops the value,
/// and both return only once it is dropped (the completion handshake).
#[test]
fn devres_drop_races_with_unbind() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (_bus, dev, r) = bound_devres(&drops);
        let d = drops.clone();
        let owner = thread::spawn(move || {
            drop(r);
            assert_eq!(
                d.load(Ordering::Relaxed),
                1,
                "value alive after drop returned"
            );
        });
        dev.unbind().unwrap();
        assert_eq!(
            drops.load(Ordering::Relaxed),
            1,
            "value alive after unbind returned"
        );
        owner.join().unwrap();
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        assert_eq!(dev.resource_count(), 0);
    });
}

/// A `Devres` value that owns another `Devres` of the same binding.
struct Owner {
    _inner: Devres<Tracked>,
    drops: Arc<AtomicUsize>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

/// The owner of a `Devres` whose value owns another `Devres` of the binding drops it while the
/// binding ends: whoever drops the outer value drops the inner one from inside that drop, or
/// waits for the other thread to; nobody waits for itself, and each value is dropped once
/// before either call returns.
#[test]
fn devres_owning_a_devres_dropped_while_the_binding_ends() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (_bus, dev, inner) = bound_devres(&drops);
        let outer = dev
            .with_bound(|b| {
                Devres::new(
                    b,
                    Owner {
                        _inner: inner,
                        drops: drops.clone(),
                    },
                )
                .unwrap()
            })
            .unwrap();
        let d = drops.clone();
        let owner = thread::spawn(move || {
            drop(outer);
            assert_eq!(
                d.load(Ordering::Relaxed),
                2,
                "values alive after drop returned"
            );
        });
        dev.unbind().unwrap();
        assert_eq!(
            drops.load(Ordering::Relaxed),
            2,
            "values alive after unbind returned"
        );
        owner.join().unwrap();
        assert_eq!(dev.resource_count(), 0);
    });
}

/// A reader races with the unbind: it sees the live value or nothing, never a dropped one.
#[test]
fn devres_access_races_with_unbind() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (_bus, dev, r) = bound_devres(&drops);
        let r = Arc::new(r);
        let reader = {
            let r = r.clone();
            thread::spawn(move || {
                if let Some(g) = r.try_access() {
                    assert_eq!(g.payload, 7);
                    assert_eq!(g.drops.load(Ordering::Relaxed), 0);
                }
            })
        };
        dev.unbind().unwrap();
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        assert!(r.try_access().is_none());
        reader.join().unwrap();
    });
}

/// A thread inside a logical device's gate races with unplug: after unplug returns nobody is
/// inside and entering fails.
#[test]
fn unplug_races_with_a_section() {
    loom::model(|| {
        let dev = Device::new(());
        let inside = Arc::new(AtomicUsize::new(0));
        let t = {
            let (dev, inside) = (dev.clone(), inside.clone());
            thread::spawn(move || {
                if let Some(_g) = dev.enter() {
                    inside.fetch_add(1, Ordering::SeqCst);
                    inside.fetch_sub(1, Ordering::SeqCst);
                }
            })
        };
        dev.unplug();
        assert_eq!(inside.load(Ordering::SeqCst), 0);
        assert!(dev.enter().is_none());
        t.join().unwrap();
    });
}
