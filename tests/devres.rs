//! The devres API on a binding, and `Devres<T>` revocation.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use drmm::bus::{Bound, Bus, BusDevice, Devres, Driver};
use drmm::{Error, Managed};

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, s: impl Into<String>) {
    log.lock().unwrap().push(s.into());
}

/// Binds a driver whose probe runs `f` and keeps what it returns as driver data.
struct Probe<F>(Mutex<Option<F>>);
impl<D: Send + Sync + 'static, F: FnOnce(&mut Bound<'_>) -> drmm::Result<D> + Send + 'static> Driver
    for Probe<F>
{
    type Data = D;
    fn probe(&self, dev: &mut Bound<'_>) -> drmm::Result<D> {
        (self.0.lock().unwrap().take().unwrap())(dev)
    }
}

fn bind<D: Send + Sync + 'static>(
    dev: &BusDevice,
    f: impl FnOnce(&mut Bound<'_>) -> drmm::Result<D> + Send + 'static,
) -> drmm::Result<()> {
    dev.bind(Arc::new(Probe(Mutex::new(Some(f)))))
}

#[test]
fn devm_actions_run_newest_first_at_unbind_and_handles_work() {
    let log = Log::default();
    let bus = Bus::new("b");
    let dev = bus.add_device("d");
    let l = log.clone();
    bind(&dev, move |b| {
        for name in ["a", "b", "c", "d"] {
            let l2 = l.clone();
            let _ = b.add_action_named(name, move || push(&l2, name))?;
        }
        let l2 = l.clone();
        let released = b.add_action(move || push(&l2, "released early"))?;
        let l2 = l.clone();
        let removed = b.add_action(move || push(&l2, "never"))?;
        assert!(b.is_action_added(&removed));
        b.remove_action(removed)?;
        b.release_action(released)?;
        assert_eq!(drmm::add_action!(b, || ()).map(|_| ()), Ok(()));
        assert_eq!(b.snapshot()[0].name(), "|| ()");
        Ok(())
    })
    .unwrap();
    assert_eq!(*log.lock().unwrap(), ["released early"]);
    dev.unbind().unwrap();
    assert_eq!(*log.lock().unwrap(), ["released early", "d", "c", "b", "a"]);
}

#[test]
fn add_action_or_reset_runs_exactly_once() {
    let n = Arc::new(AtomicUsize::new(0));
    let bus = Bus::new("b");
    let dev = bus.add_device("d");
    let n2 = n.clone();
    dev.with_driverless(move |b| {
        let _ = drmm::add_action_or_reset!(b, move || {
            n2.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    })
    .unwrap();
    assert_eq!(n.load(Ordering::SeqCst), 0);
    dev.remove().unwrap();
    assert_eq!(n.load(Ordering::SeqCst), 1);
}

#[test]
fn allocations_work_and_are_freed_at_unbind() {
    let bus = Bus::new("b");
    let dev = bus.add_device("d");
    struct Live(Arc<AtomicUsize>);
    impl Drop for Live {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let live = Arc::new(AtomicUsize::new(1));
    let l = live.clone();
    bind(&dev, move |b| {
        let v = b.alloc(Live(l))?;
        let mut m = b.kmalloc(4)?;
        m.get_mut(b)?.fill(MaybeUninit::new(7));
        let z = b.kzalloc(3)?;
        assert_eq!(z.get(b)?, &[0, 0, 0]);
        assert_eq!(
            b.kzalloc_aligned(64, 256)?.get(b)?.as_ptr() as usize % 256,
            0
        );
        assert_eq!(b.kcalloc(2, 3)?.get(b)?.len(), 6);
        assert_eq!(b.kmalloc_array(2, 3)?.get(b)?.len(), 6);
        assert!(matches!(
            b.kmalloc_array(usize::MAX, 2),
            Err(Error::SizeOverflow { .. })
        ));
        assert!(matches!(
            b.kzalloc_aligned(1, 3),
            Err(Error::InvalidAlignment { align: 3 })
        ));
        assert_eq!(b.kstrdup("bar0")?.get(b)?, "bar0");
        assert_eq!(b.kmemdup(&[1u32, 2])?.get(b)?, &[1, 2]);
        assert_eq!(
            b.kasprintf(format_args!("{}:{}", "irq", 9))?.get(b)?,
            "irq:9"
        );
        let before = b.resource_count();
        b.kfree(z)?;
        assert_eq!(b.resource_count(), before - 1);
        Ok((v, m))
    })
    .unwrap();
    assert_eq!(live.load(Ordering::SeqCst), 1);
    let r = dev.with_bound(|b| {
        let (v, m) = b
            .driver_data::<(Managed<Live>, Managed<[MaybeUninit<u8>]>)>()
            .unwrap();
        assert!(v.get(b).is_ok());
        let bytes = m.get(b).unwrap();
        // SAFETY: the four bytes were written in probe.
        let all_seven = bytes.iter().all(|x| unsafe { x.assume_init() } == 7);
        assert!(all_seven);
    });
    assert!(r.is_ok());
    dev.unbind().unwrap();
    assert_eq!(live.load(Ordering::SeqCst), 0);
    assert_eq!(dev.resource_count(), 0);
}

#[test]
fn krealloc_keeps_the_release_position_and_the_contents() {
    let bus = Bus::new("b");
    let dev = bus.add_device("d");
    let log = Log::default();
    let l = log.clone();
    dev.with_driverless(move |b| {
        let l2 = l.clone();
        let _ = b
            .add_action_named("older", move || push(&l2, "older"))
            .unwrap();
        let mut buf = b.kmemdup(b"abc").unwrap();
        let l2 = l.clone();
        let _ = b
            .add_action_named("newer", move || push(&l2, "newer"))
            .unwrap();
        let seq = b.snapshot()[1].seq();
        b.krealloc_zeroed(&mut buf, 1000).unwrap();
        assert_eq!(&buf.get(b).unwrap()[..4], b"abc\0");
        assert_eq!(b.snapshot()[1].seq(), seq, "same place in the order");
        assert_eq!(b.snapshot()[1].size(), 1000);
        b.krealloc_zeroed(&mut buf, 2).unwrap();
        assert_eq!(buf.get(b).unwrap(), b"ab");
        let mut raw = b.kmalloc(1).unwrap();
        b.krealloc(&mut raw, 0).unwrap();
        assert_eq!(raw.get(b).unwrap().len(), 0);
        assert!(matches!(
            b.krealloc(&mut raw, usize::MAX),
            Err(Error::SizeOverflow { .. })
        ));
        assert_eq!(raw.get(b).unwrap().len(), 0, "unchanged on error");
    })
    .unwrap();
    dev.remove().unwrap();
    assert_eq!(*log.lock().unwrap(), ["newer", "older"]);
}

#[test]
fn handles_of_another_device_or_an_ended_binding_are_errors() {
    let bus = Bus::new("b");
    let (d1, d2) = (bus.add_device("d1"), bus.add_device("d2"));
    let (buf, act) = d1
        .with_driverless(|b| (b.kzalloc(4).unwrap(), b.add_action(|| ()).unwrap()))
        .unwrap();
    d2.with_driverless(|b| {
        assert!(matches!(buf.get(b), Err(Error::ForeignHandle { .. })));
        assert!(!b.is_action_added(&act));
    })
    .unwrap();
    let drm = drmm::Device::new(());
    assert!(matches!(buf.get(&*drm), Err(Error::ForeignHandle { .. })));
    let act2 = d2
        .with_driverless(|b| b.add_action(|| ()).unwrap())
        .unwrap();
    d1.with_driverless(|b| {
        assert!(matches!(
            b.remove_action(act2),
            Err(Error::ForeignHandle { .. })
        ));
    })
    .unwrap();
    d1.remove().unwrap();
    assert_eq!(d1.with_driverless(|_| ()), Err(Error::Removed));
}

#[test]
fn reentering_the_scope_is_an_error_not_a_deadlock() {
    let bus = Bus::new("b");
    let dev = bus.add_device("d");
    let d = dev.clone();
    dev.with_driverless(move |_| {
        assert_eq!(d.with_driverless(|_| ()), Err(Error::Reentrant));
        assert_eq!(d.unbind(), Err(Error::Reentrant));
        assert_eq!(d.remove(), Err(Error::Reentrant));
    })
    .unwrap();
}

#[test]
fn unbind_waits_for_a_live_bound_scope() {
    let bus = Bus::new("b");
    let dev = bus.add_device("d");
    bind(&dev, |b| b.kzalloc(64)).unwrap();
    let inside = Arc::new(Barrier::new(2));
    let reading = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        let (dev2, inside2, reading2) = (dev.clone(), inside.clone(), reading.clone());
        s.spawn(move || {
            dev2.with_bound(|b| {
                let buf = b.driver_data::<Managed<[u8]>>().unwrap();
                let bytes = buf.get(b).unwrap();
                reading2.store(true, Ordering::SeqCst);
                inside2.wait();
                std::thread::sleep(Duration::from_millis(50));
                // Still readable: the unbind on the other thread is waiting for us.
                assert!(bytes.iter().all(|&x| x == 0));
                reading2.store(false, Ordering::SeqCst);
            })
            .unwrap();
        });
        inside.wait();
        dev.unbind().unwrap();
        assert!(
            !reading.load(Ordering::SeqCst),
            "unbind ran while a Bound was alive"
        );
    });
    assert_eq!(dev.with_bound(|_| ()), Err(Error::NotBound));
}

struct Counted(Arc<AtomicUsize>);
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn unbind_revokes_every_devres_after_one_grace_period() {
    let bus = Bus::new("b");
    let dev = bus.add_device("d");
    let dropped = Arc::new(AtomicUsize::new(0));
    let d2 = dropped.clone();
    bind(&dev, move |b| {
        (0..16)
            .map(|_| Devres::new(b, Counted(d2.clone())).map(Arc::new))
            .collect::<drmm::Result<Vec<_>>>()
    })
    .unwrap();
    let all = dev
        .with_bound(|b| {
            b.driver_data::<Vec<Arc<Devres<Counted>>>>()
                .unwrap()
                .clone()
        })
        .unwrap();
    let domain = all[0].domain().clone();
    let before = domain.grace_periods();
    assert!(all.iter().all(|d| d.try_access().is_some()));
    dev.unbind().unwrap();
    assert_eq!(dropped.load(Ordering::SeqCst), 16);
    assert_eq!(
        domain.grace_periods() - before,
        1,
        "one grace period, not one per value"
    );
    assert!(
        all.iter()
            .all(|d| d.is_revoked() && d.try_access().is_none())
    );
    drop(all); // dropping revoked Devres values drops nothing twice
    assert_eq!(dropped.load(Ordering::SeqCst), 16);
}

#[test]
fn dropping_a_devres_early_revokes_it_and_takes_its_entry_off() {
    let bus = Bus::new("b");
    let dev = bus.add_device("d");
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    dev.with_driverless(move |b| {
        let before = b.resource_count();
        let r = Devres::new(b, Counted(d)).unwrap();
        assert_eq!(b.resource_count(), before + 1);
        assert_eq!(r.access(b).map(|_| ()), Ok(()));
        drop(r);
        assert_eq!(b.resource_count(), before);
    })
    .unwrap();
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    dev.remove().unwrap();
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}

#[test]
fn devres_access_checks_the_device() {
    let bus = Bus::new("b");
    let (d1, d2) = (bus.add_device("d1"), bus.add_device("d2"));
    let r = d1
        .with_driverless(|b| Devres::new(b, 5u8).unwrap())
        .unwrap();
    d2.with_driverless(|b| assert!(matches!(r.access(b), Err(Error::ForeignHandle { .. }))))
        .unwrap();
    d1.remove().unwrap();
    assert!(r.is_revoked());
    assert_eq!(r.try_access_with(|v| *v), None);
}

#[test]
fn devres_drop_racing_unbind_drops_the_value_exactly_once_before_either_returns() {
    for _ in 0..200 {
        let bus = Bus::new("b");
        let dev = bus.add_device("d");
        let dropped = Arc::new(AtomicUsize::new(0));
        bind(&dev, |_| Ok(())).unwrap();
        let r = dev
            .with_bound(|b| Devres::new(b, Counted(dropped.clone())).unwrap())
            .unwrap();
        let go = Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                go.wait();
                drop(r);
                assert_eq!(dropped.load(Ordering::SeqCst), 1, "gone when drop returns");
            });
            go.wait();
            dev.unbind().unwrap();
            assert_eq!(
                dropped.load(Ordering::SeqCst),
                1,
                "gone when unbind returns"
            );
        });
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        assert_eq!(dev.resource_count(), 0);
    }
}

#[test]
fn revocation_waits_for_readers() {
    let bus = Bus::new("b");
    let dev = bus.add_device("d");
    let dropped = Arc::new(AtomicUsize::new(0));
    bind(&dev, |_| Ok(())).unwrap();
    let r = Arc::new(
        dev.with_bound(|b| Devres::new(b, Counted(dropped.clone())).unwrap())
            .unwrap(),
    );
    let inside = Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            let g = r.try_access().unwrap();
            inside.wait();
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(
                dropped.load(Ordering::SeqCst),
                0,
                "not dropped under a reader"
            );
            drop(g);
        });
        inside.wait();
        dev.unbind().unwrap();
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn forgetting_a_devres_is_safe_and_the_unbind_still_drops_the_value_once() {
    let bus = Bus::new("b");
    let dev = bus.add_device("d");
    let dropped = Arc::new(AtomicUsize::new(0));
    bind(&dev, |_| Ok(())).unwrap();
    let r = dev
        .with_bound(|b| Devres::new(b, Counted(dropped.clone())).unwrap())
        .unwrap();
    std::mem::forget(r);
    dev.unbind().unwrap();
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    assert_eq!(dev.resource_count(), 0);
}

#[test]
fn access_after_the_binding_ended_is_revoked() {
    struct Plain;
    impl Driver for Plain {
        type Data = ();
        fn probe(&self, _: &mut Bound<'_>) -> drmm::Result<()> {
            Ok(())
        }
    }
    let bus = Bus::new("platform");
    let dev = bus.add_device("gpu.0");
    dev.bind(std::sync::Arc::new(Plain)).unwrap();
    let regs = dev.with_bound(|b| Devres::new(b, 7u32)).unwrap().unwrap();
    dev.unbind().unwrap();
    // Same device, a later scope without a driver: the proof is right, the value is gone.
    let r = dev.with_driverless(|b| regs.access(b).map(|v| *v)).unwrap();
    assert_eq!(r.unwrap_err(), Error::Revoked);
}

/// A `Display` that writes `"é"` one more time on every call, or fails on call `fail_at`.
struct Unsteady {
    calls: std::cell::Cell<usize>,
    fail_at: Option<usize>,
}

impl std::fmt::Display for Unsteady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.calls.get() + 1;
        self.calls.set(n);
        if self.fail_at == Some(n) {
            return Err(std::fmt::Error);
        }
        for _ in 0..n {
            f.write_str("é")?;
        }
        Ok(())
    }
}

#[test]
fn kasprintf_formats_into_the_managed_block_and_cuts_a_growing_display_at_a_character() {
    let bus = Bus::new("b");
    let dev = bus.add_device("d");
    dev.with_driverless(|b| {
        // Measured as "é!" (3 bytes), written as "éé!": the second "é" does not fit in the one
        // byte left and is not split; the rest is dropped.
        let u = Unsteady {
            calls: Default::default(),
            fail_at: None,
        };
        let s = b.kasprintf(format_args!("{u}!")).unwrap();
        assert_eq!(s.get(b).unwrap(), "é");
        assert_eq!(u.calls.get(), 2, "formatted twice: measure, then fill");
        let plain = b.kasprintf(format_args!("{}-{}", "irq", 7)).unwrap();
        assert_eq!(plain.get(b).unwrap(), "irq-7");
        let empty = b.kasprintf(format_args!("{}", "")).unwrap();
        assert_eq!(empty.get(b).unwrap(), "");
    })
    .unwrap();
}

#[test]
fn kasprintf_panics_like_format_when_a_display_fails_and_keeps_nothing() {
    let bus = Bus::new("b");
    let dev = bus.add_device("d");
    dev.with_driverless(|b| {
        for fail_at in [1, 2] {
            let before = b.resource_count();
            let u = Unsteady {
                calls: Default::default(),
                fail_at: Some(fail_at),
            };
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                b.kasprintf(format_args!("{u}"))
            }));
            assert!(
                r.is_err(),
                "a failing Display panics (fail at call {fail_at})"
            );
            assert_eq!(b.resource_count(), before, "the block was not kept");
        }
    })
    .unwrap();
}
