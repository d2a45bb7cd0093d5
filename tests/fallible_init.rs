//! Fallible initialisation of revocable values (`Devres::new_with`, `Revocable::new_with`)
//! with a failing allocator at each step, and the `Result` forms of the smaller edges:
//! `try_with_bound`, `try_with_driverless`, `enter_or_unplugged`, `driver_data_checked`.

#[path = "ops/alloc.rs"]
#[allow(dead_code, unreachable_pub)]
mod alloc;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use drmm::revoke::Revocable;
use drmm::{Bound, Device, Devres, Driver, Error};

/// A driver's own error type, taking the library's by `From`.
#[derive(Debug, PartialEq)]
enum DrvError {
    NoIrq,
    Drmm(Error),
}

impl From<Error> for DrvError {
    fn from(e: Error) -> Self {
        DrvError::Drmm(e)
    }
}

#[derive(Clone, Default)]
struct Counts {
    built: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

struct Val(Counts);
impl Val {
    fn new(c: &Counts) -> Self {
        c.built.fetch_add(1, Ordering::SeqCst);
        Val(c.clone())
    }
}
impl Drop for Val {
    fn drop(&mut self) {
        self.0.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn new_with_init_failure_registers_nothing_and_returns_its_error() {
    let bus = drmm::Bus::new("fi");
    let dev = bus.add_device("d");
    let c = Counts::default();
    let r = dev
        .with_driverless(|b| {
            let before = b.resource_count();
            let r = Devres::<Val>::new_with(b, || Err(DrvError::NoIrq));
            assert_eq!(b.resource_count(), before, "nothing registered");
            r.map(drop)
        })
        .unwrap();
    assert_eq!(r, Err(DrvError::NoIrq));
    assert_eq!(c.built.load(Ordering::SeqCst), 0);
    // And the library's own error type works as `E` too.
    let r = dev.try_with_driverless(|b| Devres::<u8>::new_with(b, || Err(Error::Revoked)));
    assert_eq!(r.err(), Some(Error::Revoked));
    assert_eq!(dev.resource_count(), 0);
}

/// Fails each allocation of `Devres::new_with`'s registration in turn; returns how many
/// failed before one succeeded.
fn fail_each_registration_allocation(c: &Counts) -> usize {
    let bus = drmm::Bus::new("fi");
    let dev = bus.add_device("d");
    let mut failures = 0;
    for n in 0.. {
        assert!(n < 100, "never succeeds");
        let (fired, r) = dev
            .with_driverless(|b| {
                let count = b.resource_count();
                alloc::reset_faults(Some(n));
                let r = alloc::armed(|| {
                    Devres::new_with(b, || {
                        // The initialiser's own allocations are not the ones under test.
                        Ok::<_, DrvError>(alloc::disarmed(|| Val::new(c)))
                    })
                });
                let fired = alloc::take_fired();
                alloc::reset_faults(None);
                if fired {
                    assert!(
                        matches!(r, Err(DrvError::Drmm(Error::OutOfMemory { .. }))),
                        "allocation {n}: {:?}",
                        r.as_ref().err()
                    );
                    assert_eq!(b.resource_count(), count, "nothing registered");
                }
                (fired, r)
            })
            .unwrap();
        assert_eq!(
            c.built.load(Ordering::SeqCst) - c.dropped.load(Ordering::SeqCst),
            usize::from(r.is_ok()),
            "a value built and not registered is dropped exactly once"
        );
        if !fired {
            let devres = r.unwrap();
            assert!(devres.try_access().is_some());
            drop(devres);
            break;
        }
        failures += 1;
    }
    assert_eq!(dev.resource_count(), 0);
    failures
}

#[test]
fn new_with_each_registration_allocation_fails_once() {
    let c = Counts::default();
    // Warm-up: the library's lazy statics and this call site's entry in the site table.
    fail_each_registration_allocation(&c);
    let before = alloc::live_bytes();
    let failures = fail_each_registration_allocation(&c);
    assert!(failures >= 2, "the registration allocates ({failures})");
    assert_eq!(
        c.built.load(Ordering::SeqCst),
        c.dropped.load(Ordering::SeqCst)
    );
    assert_eq!(alloc::live_bytes(), before, "leak");
}

#[test]
fn revocable_new_with_returns_the_initialisers_error() {
    let c = Counts::default();
    let r = Revocable::new_with(|| Ok::<_, DrvError>(Val::new(&c))).unwrap();
    assert!(r.revoke());
    assert_eq!(c.dropped.load(Ordering::SeqCst), 1);
    let e = Revocable::<Val>::new_with(|| Err(DrvError::NoIrq));
    assert_eq!(e.err(), Some(DrvError::NoIrq));
    assert_eq!(c.built.load(Ordering::SeqCst), 1);
}

struct Gpu;
impl Driver for Gpu {
    type Data = u32;
    fn probe(&self, b: &mut Bound<'_>) -> drmm::Result<u32> {
        assert_eq!(b.driver_data_checked::<u32>(), Err(Error::NoDriverData));
        Ok(7)
    }
    fn remove(&self, b: &mut Bound<'_>, _: &u32) {
        assert_eq!(b.driver_data_checked::<u32>(), Err(Error::NoDriverData));
    }
}

#[test]
fn driver_data_checked_tells_no_data_from_the_wrong_type() {
    let bus = drmm::Bus::new("platform");
    let dev = bus.add_device("gpu.0");
    assert_eq!(
        dev.with_driverless(|b| b.driver_data_checked::<u32>().copied())
            .unwrap(),
        Err(Error::NoDriverData)
    );
    dev.bind(Arc::new(Gpu)).unwrap();
    assert_eq!(
        dev.try_with_bound(|b| b.driver_data_checked::<u32>().copied()),
        Ok(7)
    );
    assert_eq!(
        dev.try_with_bound(|b| b.driver_data_checked::<u64>().copied()),
        Err(Error::WrongType { expected: "u64" })
    );
    // The Option form folds both into `None`.
    assert_eq!(
        dev.with_bound(|b| b.driver_data::<u64>().is_none()),
        Ok(true)
    );
    dev.unbind().unwrap();
}

#[test]
fn try_with_bound_flattens_the_binding_error_and_the_closures() {
    let bus = drmm::Bus::new("platform");
    let dev = bus.add_device("gpu.0");
    assert_eq!(dev.try_with_bound(|_| Ok(1)), Err(Error::NotBound));
    assert_eq!(
        dev.try_with_driverless(|_| Err::<(), _>(Error::Revoked)),
        Err(Error::Revoked)
    );
    assert_eq!(dev.try_with_driverless(|b| Ok(b.resource_count())), Ok(0));
    dev.bind(Arc::new(Gpu)).unwrap();
    assert_eq!(
        dev.try_with_driverless(|_| Ok(())),
        Err(Error::AlreadyBound)
    );
    assert_eq!(dev.try_with_bound(|_| Ok(2)), Ok(2));
    assert_eq!(
        dev.try_with_bound(|_| Err::<(), _>(Error::Revoked)),
        Err(Error::Revoked)
    );
    // Re-entering from inside is the scope's error, flattened too.
    assert_eq!(
        dev.try_with_bound(|_| dev.try_with_bound(|_| Ok(()))),
        Err(Error::Reentrant)
    );
}

#[test]
fn enter_or_unplugged_is_enter_with_the_enodev_error() {
    let dev = Device::new(());
    dev.register().unwrap();
    let file = dev.open(()).unwrap();
    {
        let _outer = dev.enter_or_unplugged().unwrap();
        let _inner = file.enter_or_unplugged().unwrap(); // guards nest
    }
    dev.unplug();
    assert!(matches!(dev.enter_or_unplugged(), Err(Error::Unplugged)));
    assert!(matches!(file.enter_or_unplugged(), Err(Error::Unplugged)));
}

#[test]
fn queue_work_with_each_allocation_failing_drops_the_item_once() {
    let c = Counts::default();
    let wq = drmm::WorkQueue::new("fi-wq").unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let mut failures = 0;
    for n in 0.. {
        assert!(n < 100, "never succeeds");
        let (v, r) = alloc::disarmed(|| (Val::new(&c), ran.clone()));
        alloc::reset_faults(Some(n));
        let res = alloc::armed(|| {
            wq.queue_work(move || {
                drop(v);
                r.fetch_add(1, Ordering::SeqCst);
            })
        });
        let fired = alloc::take_fired();
        alloc::reset_faults(None);
        if !fired {
            assert_eq!(res, Ok(()));
            break;
        }
        assert!(matches!(res, Err(Error::OutOfMemory { .. })), "{res:?}");
        assert_eq!(
            c.built.load(Ordering::SeqCst),
            c.dropped.load(Ordering::SeqCst),
            "the refused item is dropped once, unrun"
        );
        failures += 1;
    }
    assert!(failures >= 1, "queueing allocates");
    assert_eq!(wq.flush_workqueue(), 0);
    assert_eq!(ran.load(Ordering::SeqCst), 1, "only the accepted item ran");
    assert_eq!(
        c.built.load(Ordering::SeqCst),
        c.dropped.load(Ordering::SeqCst)
    );
}
