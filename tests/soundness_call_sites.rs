//! Every call site of user code in the resource-list engine, the logical device and the bus,
//! other than subscribers (see `soundness_engine.rs`): release actions of both lists, `Drop` of
//! managed values and of driver data, `Display` in `kasprintf`, `Driver::probe`/`remove`.
//! Each re-enters the library, panics, and does both while the thread unwinds.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::hook::{in_child, message, quiet, while_unwinding, within};
use common::{Log, Tracked, counted_device};
use drmm::bus::{Bound, Bus, BusDevice, Driver};
use drmm::{Device, Error};

// Release actions ---------------------------------------------------------------------------

/// A drmm release action (run early, and at the final release) reads its device, frees older
/// entries early and adds new ones (released by the same release).
#[test]
fn drmm_release_action_reenters_its_device() {
    let log = within(30, || {
        let log = Log::new();
        let drops = Arc::new(AtomicUsize::new(0));
        let dev = Device::new(Tracked::new("data", &log, &drops));
        let older = dev.kzalloc(8).unwrap();
        let l = log.clone();
        let older_action = dev
            .add_action_named("older", move |_| l.push("older"))
            .unwrap();
        let early = {
            let l = log.clone();
            dev.add_action_named("early", move |d| {
                l.push(format!("early sees {}", d.resource_count()))
            })
            .unwrap()
        };
        let held = Mutex::new(Some((older, older_action)));
        let (l, dr) = (log.clone(), drops.clone());
        let _ = dev
            .add_action_named("reenters", move |d| {
                let (m, a) = held.lock().unwrap().take().unwrap();
                assert_eq!(m.get(d).map(|b| b.len()), Ok(8));
                assert_eq!((d.kfree(m), d.release_action(a)), (Ok(()), Ok(())));
                let _ = d
                    .alloc(Tracked::new("added by the action", &l, &dr))
                    .unwrap();
                l.push(format!("reenters sees {}", d.snapshot().len()));
            })
            .unwrap();
        dev.release_action(early).unwrap();
        drop(dev);
        log.take()
    });
    assert_eq!(
        log,
        [
            "early sees 3",
            "older",
            "reenters sees 1",
            "drop added by the action",
            "drop data"
        ]
    );
}

/// A drmm action that re-enters its device and panics, in a release that runs while the
/// thread unwinds: the rest is released, the panic only logged.
#[test]
fn drmm_release_action_reentering_and_panicking_while_unwinding() {
    if !in_child("drmm_release_action_reentering_and_panicking_while_unwinding") {
        return;
    }
    let (ran, drops) = (Arc::new(AtomicUsize::new(0)), Arc::default());
    let dev = counted_device(3, &ran, &drops);
    let _ = dev
        .add_action_named("reenters, panics", |d| {
            let _ = d.alloc(1u8).unwrap();
            panic!("action sees {}", d.resource_count());
        })
        .unwrap();
    let _ = dev.add_action_named("newest", |_| ()).unwrap();
    assert_eq!(while_unwinding(move || drop(dev)), "outer");
    assert_eq!(
        (ran.load(Ordering::SeqCst), drops.load(Ordering::SeqCst)),
        (3, 4)
    );
}

/// A driver whose probe runs `f`.
struct Probe<F>(Mutex<Option<F>>);
impl<F: FnOnce(&mut Bound<'_>) -> drmm::Result<()> + Send + 'static> Driver for Probe<F> {
    type Data = ();
    fn probe(&self, b: &mut Bound<'_>) -> drmm::Result<()> {
        (self.0.lock().unwrap().take().unwrap())(b)
    }
}

fn bind_with(
    dev: &BusDevice,
    f: impl FnOnce(&mut Bound<'_>) -> drmm::Result<()> + Send + 'static,
) -> drmm::Result<()> {
    dev.bind(Arc::new(Probe(Mutex::new(Some(f)))))
}

/// What re-entering `d` from inside its own scope answers: reads work, every scope entry is
/// `Reentrant` (never a wait).
fn reenter_inside_scope(d: &BusDevice) -> String {
    let reads = (d.resource_count(), d.snapshot().len(), d.is_bound());
    assert_eq!(d.with_bound(|_| ()), Err(Error::Reentrant));
    assert_eq!(d.with_driverless(|_| ()), Err(Error::Reentrant));
    assert_eq!(d.unbind(), Err(Error::Reentrant));
    assert_eq!(d.remove(), Err(Error::Reentrant));
    assert_eq!(bind_with(d, |_| Ok(())), Err(Error::Reentrant));
    format!("{reads:?}")
}

/// A devres action, run at unbind inside the device's scope, reads and re-enters its device.
#[test]
fn devres_release_action_reenters_its_device() {
    let log = within(30, || {
        let log = Log::new();
        let bus = Bus::new("b");
        let dev = bus.add_device("d");
        let (l, d) = (log.clone(), dev.clone());
        bind_with(&dev, move |b| {
            let _ = b.kzalloc(8)?;
            let _ = b.add_action(move || l.push(reenter_inside_scope(&d)))?;
            Ok(())
        })
        .unwrap();
        dev.unbind().unwrap();
        log.take()
    });
    assert_eq!(log, ["(1, 1, false)"]);
}

/// A devres action that re-enters and panics, at an unbind that runs while unwinding.
#[test]
fn devres_release_action_reentering_and_panicking_while_unwinding() {
    if !in_child("devres_release_action_reentering_and_panicking_while_unwinding") {
        return;
    }
    let log = Log::new();
    let bus = Bus::new("b");
    let dev = bus.add_device("d");
    let (l, d) = (log.clone(), dev.clone());
    bind_with(&dev, move |b| {
        let _ = b.add_action(move || l.push("older"))?;
        let _ = b.add_action(move || panic!("{}", reenter_inside_scope(&d)))?;
        Ok(())
    })
    .unwrap();
    assert_eq!(while_unwinding(|| dev.unbind().unwrap()), "outer");
    assert_eq!(log.take(), ["older"]);
    assert!(!dev.is_bound());
}

// Drop of managed values ----------------------------------------------------------------------

/// A managed value whose `Drop` runs `f`.
struct OnDrop<F: FnMut() + Send + Sync>(F);
impl<F: FnMut() + Send + Sync> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// The `Drop` of a managed value re-enters the library: a drmm value freed early reads and
/// adds to its device; a devres value dropped at unbind re-enters its device.
#[test]
fn managed_value_drop_reenters_its_device() {
    let log = within(30, || {
        let log = Log::new();
        let dev = Device::new(());
        let (d, l) = (dev.clone(), log.clone());
        let v = dev
            .alloc(OnDrop(move || {
                let _ = d.alloc(2u8).unwrap();
                l.push(format!("drmm value sees {}", d.resource_count()));
            }))
            .unwrap();
        dev.kfree(v).unwrap();
        drop(dev);
        let bus = Bus::new("b");
        let bd = bus.add_device("d");
        let (d, l) = (bd.clone(), log.clone());
        bind_with(&bd, move |b| {
            let _ = b.alloc(OnDrop(move || l.push(reenter_inside_scope(&d))))?;
            Ok(())
        })
        .unwrap();
        bd.unbind().unwrap();
        log.take()
    });
    assert_eq!(log, ["drmm value sees 1", "(0, 0, false)"]);
}

/// A managed value whose `Drop` panics: early (`kfree` propagates it, the entry is gone), at
/// a final release and at an unbind (the others are still dropped, the first panic resumed).
#[test]
fn managed_value_drop_panicking_does_not_stop_the_release() {
    let (ran, drops) = (Arc::new(AtomicUsize::new(0)), Arc::default());
    let dev = counted_device(2, &ran, &drops);
    let v = dev.alloc(OnDrop(|| panic!("early"))).unwrap();
    let r = quiet(|| catch_unwind(AssertUnwindSafe(|| dev.kfree(v))));
    assert_eq!(message(&*r.unwrap_err()), "early");
    let _ = dev.alloc(OnDrop(|| panic!("older value"))).unwrap();
    let _ = dev.alloc(OnDrop(|| panic!("newer value"))).unwrap();
    let r = quiet(|| catch_unwind(AssertUnwindSafe(move || drop(dev))));
    assert_eq!(
        message(&*r.unwrap_err()),
        "newer value",
        "the first (newest first)"
    );
    assert_eq!(
        (ran.load(Ordering::SeqCst), drops.load(Ordering::SeqCst)),
        (2, 3)
    );

    let log = Log::new();
    let bus = Bus::new("b");
    let bd = bus.add_device("d");
    let l = log.clone();
    bind_with(&bd, move |b| {
        let _ = b.add_action(move || l.push("older"))?;
        let _ = b.alloc(OnDrop(|| panic!("devres value")))?;
        Ok(())
    })
    .unwrap();
    let r = quiet(|| catch_unwind(AssertUnwindSafe(|| bd.unbind())));
    assert_eq!(message(&*r.unwrap_err()), "devres value");
    assert_eq!(
        (log.take(), bd.resource_count()),
        (vec!["older".to_string()], 0)
    );
}

/// Managed values whose `Drop` re-enters and panics, released while the thread unwinds.
#[test]
fn managed_value_drop_reentering_and_panicking_while_unwinding() {
    if !in_child("managed_value_drop_reentering_and_panicking_while_unwinding") {
        return;
    }
    let log = Log::new();
    let bus = Bus::new("b");
    let bd = bus.add_device("d");
    let (l, d) = (log.clone(), bd.clone());
    bind_with(&bd, move |b| {
        let _ = b.add_action(move || l.push("older"))?;
        let _ = b.alloc(OnDrop(move || panic!("{}", reenter_inside_scope(&d))))?;
        Ok(())
    })
    .unwrap();
    let dev = Device::new(());
    let d = dev.clone();
    let v = dev
        .alloc(OnDrop(move || panic!("sees {}", d.resource_count())))
        .unwrap();
    let (ran, drops) = (Arc::new(AtomicUsize::new(0)), Arc::default());
    let other = counted_device(2, &ran, &drops);
    let _ = other.alloc(OnDrop(|| panic!("at release"))).unwrap();
    let outer = while_unwinding(|| {
        bd.unbind().unwrap();
        // The early free propagates the value's panic to its caller, as outside unwinding.
        assert!(catch_unwind(AssertUnwindSafe(|| dev.kfree(v))).is_err());
        drop(other);
    });
    assert_eq!(outer, "outer");
    assert_eq!(log.take(), ["older"]);
    assert_eq!(
        (ran.load(Ordering::SeqCst), drops.load(Ordering::SeqCst)),
        (2, 3)
    );
}

// Drop of driver data --------------------------------------------------------------------------

/// The `Drop` of driver data re-enters the library: a logical device's data (dropped after
/// its list) makes and releases another device; a binding's data (dropped at unbind, inside
/// the scope) re-enters its bus device.
#[test]
fn driver_data_drop_reenters_the_library() {
    let log = within(30, || {
        let log = Log::new();
        let l = log.clone();
        let dev = Device::new(OnDrop(move || {
            let other = Device::new(());
            let l2 = l.clone();
            let _ = other
                .add_action_named("other", move |_| l2.push("other released"))
                .unwrap();
            drop(other);
        }));
        let _ = dev.kzalloc(8).unwrap();
        drop(dev);
        let bus = Bus::new("b");
        let bd = bus.add_device("d");
        struct Reenters(Log, BusDevice);
        impl Driver for Reenters {
            type Data = OnDrop<Box<dyn FnMut() + Send + Sync>>;
            fn probe(&self, _: &mut Bound<'_>) -> drmm::Result<Self::Data> {
                let (l, d) = (self.0.clone(), self.1.clone());
                Ok(OnDrop(Box::new(move || l.push(reenter_inside_scope(&d)))))
            }
        }
        bd.bind(Arc::new(Reenters(log.clone(), bd.clone())))
            .unwrap();
        bd.unbind().unwrap();
        log.take()
    });
    assert_eq!(log, ["other released", "(0, 0, false)"]);
}

/// A binding's driver data whose `Drop` panics: the unbind completes (devres released after
/// it), the panic is resumed.
#[test]
fn bus_driver_data_drop_panicking_does_not_stop_the_unbind() {
    struct Data;
    impl Drop for Data {
        fn drop(&mut self) {
            panic!("driver data");
        }
    }
    struct D(Log);
    impl Driver for D {
        type Data = Data;
        fn probe(&self, b: &mut Bound<'_>) -> drmm::Result<Data> {
            let l = self.0.clone();
            let _ = b.add_action(move || l.push("devres"))?;
            Ok(Data)
        }
    }
    let log = Log::new();
    let bus = Bus::new("b");
    let bd = bus.add_device("d");
    bd.bind(Arc::new(D(log.clone()))).unwrap();
    let r = quiet(|| catch_unwind(AssertUnwindSafe(|| bd.unbind())));
    assert_eq!(message(&*r.unwrap_err()), "driver data");
    assert_eq!(log.take(), ["devres"]);
    assert!(!bd.is_bound());
}

/// Driver data that re-enters and panics, dropped while the thread unwinds: a logical
/// device's at its last reference, a binding's at an unbind.
#[test]
fn driver_data_drop_reentering_and_panicking_while_unwinding() {
    if !in_child("driver_data_drop_reentering_and_panicking_while_unwinding") {
        return;
    }
    let log = Log::new();
    let l = log.clone();
    let dev = Device::new(OnDrop(move || {
        let other = Device::new(());
        let _ = other.kzalloc(8).unwrap();
        l.push("logical device data");
        panic!("data");
    }));
    let bus = Bus::new("b");
    let bd = bus.add_device("d");
    struct Reenters(Log, BusDevice);
    impl Driver for Reenters {
        type Data = OnDrop<Box<dyn FnMut() + Send + Sync>>;
        fn probe(&self, b: &mut Bound<'_>) -> drmm::Result<Self::Data> {
            let l = self.0.clone();
            let _ = b.add_action(move || l.push("devres"))?;
            let d = self.1.clone();
            Ok(OnDrop(Box::new(move || {
                panic!("{}", reenter_inside_scope(&d))
            })))
        }
    }
    bd.bind(Arc::new(Reenters(log.clone(), bd.clone())))
        .unwrap();
    let outer = while_unwinding(|| {
        drop(dev);
        bd.unbind().unwrap();
    });
    assert_eq!(outer, "outer");
    assert_eq!(log.take(), ["logical device data", "devres"]);
}

// Display in kasprintf -----------------------------------------------------------------------

/// A `Display` that runs `f` each time it is formatted.
struct Shows<F: Fn(usize)>(F, std::cell::Cell<usize>);
impl<F: Fn(usize)> std::fmt::Display for Shows<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.1.set(self.1.get() + 1);
        (self.0)(self.1.get());
        f.write_str("shown")
    }
}

/// `kasprintf`'s `Display` re-enters the device (both formatting passes): reads work, scope
/// entries are `Reentrant`.
#[test]
fn kasprintf_display_reenters_the_device() {
    let s = within(30, || {
        let bus = Bus::new("b");
        let bd = bus.add_device("d");
        let d = bd.clone();
        bd.with_driverless(|b| {
            let shows = Shows(|_| drop(reenter_inside_scope(&d)), Default::default());
            let s = b.kasprintf(format_args!("{shows}!")).unwrap();
            s.get(b).unwrap().to_string()
        })
        .unwrap()
    });
    assert_eq!(s, "shown!");
}

/// A `Display` that panics in either pass: the panic reaches the caller and no block is left
/// on the list (a panic in the second pass used to leave the half-written block).
#[test]
fn kasprintf_display_panicking_takes_its_block_off() {
    let bus = Bus::new("b");
    let bd = bus.add_device("d");
    bd.with_driverless(|b| {
        for pass in [1, 2] {
            let shows = Shows(
                |n| {
                    if n == pass {
                        panic!("pass {n}");
                    }
                },
                Default::default(),
            );
            let r =
                quiet(|| catch_unwind(AssertUnwindSafe(|| b.kasprintf(format_args!("{shows}")))));
            assert_eq!(message(&*r.unwrap_err()), format!("pass {pass}"));
            assert_eq!(b.resource_count(), 0, "pass {pass}");
        }
    })
    .unwrap();
}

/// The same while the thread unwinds, re-entering the device from the `Display`.
#[test]
fn kasprintf_display_reentering_and_panicking_while_unwinding() {
    if !in_child("kasprintf_display_reentering_and_panicking_while_unwinding") {
        return;
    }
    let bus = Bus::new("b");
    let bd = bus.add_device("d");
    let d = bd.clone();
    let outer = while_unwinding(|| {
        bd.with_driverless(|b| {
            let shows = Shows(
                |n| {
                    let _ = reenter_inside_scope(&d);
                    if n == 2 {
                        panic!("second pass");
                    }
                },
                Default::default(),
            );
            let r = catch_unwind(AssertUnwindSafe(|| b.kasprintf(format_args!("{shows}"))));
            assert!(r.is_err());
            assert_eq!(b.resource_count(), 0);
        })
        .unwrap();
    });
    assert_eq!(outer, "outer");
}

// Driver::probe and Driver::remove --------------------------------------------------------------

/// A driver whose probe and remove re-enter the device (and panic, if asked).
struct Reentrant {
    log: Log,
    dev: BusDevice,
    /// 1: probe panics; 2: remove panics.
    panics: u8,
}

impl Driver for Reentrant {
    type Data = ();
    fn probe(&self, b: &mut Bound<'_>) -> drmm::Result<()> {
        let l = self.log.clone();
        let _ = b.add_action(move || l.push("devres"))?;
        self.log
            .push(format!("probe {}", reenter_inside_scope(&self.dev)));
        if self.panics == 1 {
            panic!("probe");
        }
        Ok(())
    }
    fn remove(&self, _: &mut Bound<'_>, _: &()) {
        self.log
            .push(format!("remove {}", reenter_inside_scope(&self.dev)));
        if self.panics == 2 {
            panic!("remove");
        }
    }
}

/// `probe` and `remove` re-entering their device get `Reentrant` from every scope entry,
/// never a wait.
#[test]
fn probe_and_remove_reentering_the_device_get_reentrant() {
    let log = within(30, || {
        let log = Log::new();
        let bus = Bus::new("b");
        let bd = bus.add_device("d");
        let driver = Reentrant {
            log: log.clone(),
            dev: bd.clone(),
            panics: 0,
        };
        bd.bind(Arc::new(driver)).unwrap();
        bd.unbind().unwrap();
        log.take()
    });
    assert_eq!(
        log,
        ["probe (1, 1, false)", "remove (1, 1, true)", "devres"]
    );
}

/// A probe that re-enters and panics while the thread unwinds: what it registered is released
/// and `bind` returns an error (it used to hit `unreachable!` after the logged panic: a panic
/// escaping a destructor during unwinding, an abort); the same for remove at an unbind.
#[test]
fn probe_and_remove_reentering_and_panicking_while_unwinding() {
    if !in_child("probe_and_remove_reentering_and_panicking_while_unwinding") {
        return;
    }
    let log = Log::new();
    let bus = Bus::new("b");
    let bd = bus.add_device("d");
    let driver = |panics| {
        Arc::new(Reentrant {
            log: log.clone(),
            dev: bd.clone(),
            panics,
        })
    };
    let outer = while_unwinding(|| {
        assert!(matches!(bd.bind(driver(1)), Err(Error::ProbeFailed { .. })));
        assert!(!bd.is_bound());
    });
    assert_eq!(outer, "outer");
    assert_eq!(log.take(), ["probe (1, 1, false)", "devres"]);
    bd.bind(driver(2)).unwrap();
    assert_eq!(while_unwinding(|| bd.unbind().unwrap()), "outer");
    assert_eq!(
        log.take(),
        ["probe (1, 1, false)", "remove (1, 1, true)", "devres"]
    );
    assert!(!bd.is_bound());
}
