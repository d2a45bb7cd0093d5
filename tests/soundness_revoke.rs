//! Revocation against user code: the drop of a revoked value re-enters the library (drops a
//! `Devres` it owns, asks for the binding, reads another value), panics, or both while the
//! thread is already unwinding, at every place a revocation runs it: the early drop of a
//! `Devres`, unbind, probe failure, device removal, `Revocable::revoke`, `revoke_all` and the
//! drop of an unrevoked `Revocable`.
//!
//! A deadlock fails a test after a deadline instead of hanging it (a watchdog thread), and a
//! process abort fails it from a child process (the test runs itself again).
//!
//! What the types refuse cannot be a test here (it would not compile): those are compile-fail
//! doctests, `Managed`'s "Variance" (a handle whose value type's lifetime could be shortened,
//! then written through `get_mut`, was a use after free at the release) and
//! `Devres::access` (a guard held across an unbind on its own thread hung the unbind).

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::hook::{in_child, while_unwinding, within};

use drmm::bus::{Bound, Bus, BusDevice, Devres, Driver};
use drmm::revoke::{Revocable, Revoke, grace::Domain, revoke_all};

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, s: impl Into<String>) {
    log.lock().unwrap().push(s.into());
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// A revocation that has not returned after this long is a deadlock.
const DEADLINE_SECS: u64 = 30;

/// A driver whose probe runs a closure (once).
struct Probe<F>(Mutex<Option<F>>);
impl<F: FnOnce(&mut Bound<'_>) -> drmm::Result<()> + Send + 'static> Driver for Probe<F> {
    type Data = ();
    fn probe(&self, dev: &mut Bound<'_>) -> drmm::Result<()> {
        (self.0.lock().unwrap().take().unwrap())(dev)
    }
}

fn bind(
    dev: &BusDevice,
    f: impl FnOnce(&mut Bound<'_>) -> drmm::Result<()> + Send + 'static,
) -> drmm::Result<()> {
    dev.bind(Arc::new(Probe(Mutex::new(Some(f)))))
}

/// What the drop of the outer value does.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Re-enters the library: asks for the binding, looks at the device, reads another
    /// `Devres`, and drops the `Devres` it owns (of the same binding).
    Reenter,
    /// Panics (the inner `Devres` is then dropped with the value, during that unwinding).
    Panic,
    /// Both, in a release that runs while the thread is already unwinding.
    ReenterAndPanicWhileUnwinding,
}

struct InnerValue(Log);
impl Drop for InnerValue {
    fn drop(&mut self) {
        push(&self.0, "inner dropped");
    }
}

/// A `Devres` value that owns another `Devres` of the same binding.
struct OuterValue {
    inner: Option<Devres<InnerValue>>,
    sibling: Arc<Devres<u32>>,
    dev: BusDevice,
    mode: Mode,
    log: Log,
}

impl Drop for OuterValue {
    fn drop(&mut self) {
        push(&self.log, "outer dropping");
        if self.mode != Mode::Panic {
            let _ = self.dev.with_bound(|_| ()); // `Reentrant` inside an unbind: not a hang
            let _ = (self.dev.snapshot(), self.dev.is_bound());
            let _ = self.sibling.try_access_with(|v| *v);
            drop(self.inner.take());
            push(&self.log, "outer dropped its inner devres");
        }
        if self.mode != Mode::Reenter {
            panic!("the outer value's drop panicked");
        }
    }
}

/// Where the revocation of the outer value runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Site {
    EarlyDrop,
    Unbind,
    ProbeFailure,
    Removal,
}

/// A probe that registers the outer value (owning an inner `Devres`) and a sibling on the
/// binding, hands the outer `Devres` and the sibling to `keep`, and fails if `fail`.
fn probe_registering(
    dev: &BusDevice,
    mode: Mode,
    log: &Log,
    fail: bool,
    keep: impl FnOnce(Devres<OuterValue>, Arc<Devres<u32>>) + Send + 'static,
) -> drmm::Result<()> {
    let (l, d) = (log.clone(), dev.clone());
    bind(dev, move |b| {
        let sibling = Arc::new(Devres::new(b, 7u32)?);
        let inner = Devres::new(b, InnerValue(l.clone()))?;
        let outer = OuterValue {
            inner: Some(inner),
            sibling: sibling.clone(),
            dev: d,
            mode,
            log: l,
        };
        // The newest: revoked first, its drop meets the inner one still registered.
        keep(Devres::new(b, outer)?, sibling);
        if fail {
            Err(drmm::Error::probe_failed("refused on purpose"))
        } else {
            Ok(())
        }
    })
}

/// Runs the revocation of the outer value at `site`, with the outer value's drop doing `mode`,
/// and checks that it completes (no deadlock, no abort), drops every value exactly once, with
/// the inner value dropped from inside the outer one's drop when that drop re-enters, and
/// leaves nothing reachable.
fn revoke_at(site: Site, mode: Mode) {
    type Kept = Arc<Mutex<Option<(Devres<OuterValue>, Arc<Devres<u32>>)>>>;
    let log = Log::default();
    let l = log.clone();
    within(DEADLINE_SECS, move || {
        let bus = Bus::new("soundness");
        let dev = bus.add_device("d0");
        let kept: Kept = Arc::default();
        let register = |fail: bool| {
            let k = kept.clone();
            probe_registering(&dev, mode, &l, fail, move |outer, sibling| {
                *k.lock().unwrap() = Some((outer, sibling));
            })
        };
        if !matches!(site, Site::ProbeFailure) {
            register(false).unwrap();
        }
        let release = || {
            let outcome = catch_unwind(AssertUnwindSafe(|| match site {
                // The handles are kept outside: the failed probe is what revokes the values.
                Site::ProbeFailure => assert!(register(true).is_err()),
                Site::EarlyDrop => {
                    let (outer, _sibling) = kept.lock().unwrap().take().unwrap();
                    drop(outer);
                }
                Site::Unbind => dev.unbind().unwrap(),
                Site::Removal => dev.remove().unwrap(),
            }));
            if let Err(p) = outcome {
                // Only the panicking mode panics: in the other the thread is already unwinding.
                assert_eq!(
                    mode,
                    Mode::Panic,
                    "{site:?}: {:?}",
                    p.downcast_ref::<&str>()
                );
            }
        };
        if mode == Mode::ReenterAndPanicWhileUnwinding {
            assert_eq!(while_unwinding(release), "outer");
        } else {
            release();
        }
        if let Some((outer, sibling)) = kept.lock().unwrap().take() {
            assert!(outer.try_access().is_none(), "{site:?}: revoked");
            assert!(sibling.try_access().is_none(), "{site:?}: revoked");
        }
        // Whatever happened, the device can still be unbound and removed.
        let _ = dev.unbind();
        let _ = dev.remove();
    });
    let log = entries(&log);
    for once in ["outer dropping", "inner dropped"] {
        assert_eq!(
            log.iter().filter(|e| *e == once).count(),
            1,
            "{site:?}/{mode:?}: {log:?}"
        );
    }
    if mode != Mode::Panic {
        assert_eq!(
            log,
            [
                "outer dropping",
                "inner dropped",
                "outer dropped its inner devres"
            ],
            "{site:?}/{mode:?}: the inner value goes inside the outer one's drop"
        );
    }
}

// ----- defect: a `Devres` value owning a `Devres` of the same binding ----------------------------

#[test]
fn devres_owning_a_devres_of_the_same_binding_unbinds_without_deadlock() {
    revoke_at(Site::Unbind, Mode::Reenter);
}

#[test]
fn devres_owning_a_devres_of_the_same_binding_fails_probe_without_deadlock() {
    revoke_at(Site::ProbeFailure, Mode::Reenter);
}

#[test]
fn devres_owning_a_devres_of_the_same_binding_is_removed_without_deadlock() {
    revoke_at(Site::Removal, Mode::Reenter);
}

#[test]
fn devres_owning_a_devres_of_the_same_binding_dropped_early_reenters() {
    revoke_at(Site::EarlyDrop, Mode::Reenter);
}

// ----- the value's drop panics ---------------------------------------------------------------

#[test]
fn devres_value_panicking_at_early_drop_propagates_once_and_drops_everything() {
    revoke_at(Site::EarlyDrop, Mode::Panic);
}

#[test]
fn devres_value_panicking_at_unbind_propagates_once_and_drops_everything() {
    revoke_at(Site::Unbind, Mode::Panic);
}

#[test]
fn devres_value_panicking_at_probe_failure_propagates_once_and_drops_everything() {
    revoke_at(Site::ProbeFailure, Mode::Panic);
}

#[test]
fn devres_value_panicking_at_removal_propagates_once_and_drops_everything() {
    revoke_at(Site::Removal, Mode::Panic);
}

// ----- defect: a release during unwinding only logs ------------------------------------------

#[test]
fn devres_dropped_while_unwinding_whose_value_panics_only_logs() {
    if in_child("devres_dropped_while_unwinding_whose_value_panics_only_logs") {
        revoke_at(Site::EarlyDrop, Mode::ReenterAndPanicWhileUnwinding);
    }
}

#[test]
fn devres_value_reentering_and_panicking_at_unbind_while_unwinding_only_logs() {
    if in_child("devres_value_reentering_and_panicking_at_unbind_while_unwinding_only_logs") {
        revoke_at(Site::Unbind, Mode::ReenterAndPanicWhileUnwinding);
    }
}

#[test]
fn devres_value_reentering_and_panicking_at_probe_failure_while_unwinding_only_logs() {
    if in_child("devres_value_reentering_and_panicking_at_probe_failure_while_unwinding_only_logs")
    {
        revoke_at(Site::ProbeFailure, Mode::ReenterAndPanicWhileUnwinding);
    }
}

#[test]
fn devres_value_reentering_and_panicking_at_removal_while_unwinding_only_logs() {
    if in_child("devres_value_reentering_and_panicking_at_removal_while_unwinding_only_logs") {
        revoke_at(Site::Removal, Mode::ReenterAndPanicWhileUnwinding);
    }
}

// ----- defect: a panicking unbind leaves every `Devres` accessible -----------------------------

struct Nop;
impl Driver for Nop {
    type Data = ();
    fn probe(&self, _: &mut Bound<'_>) -> drmm::Result<()> {
        Ok(())
    }
}

struct Counted(Arc<AtomicUsize>);
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Debug builds always detect an unbind on a thread that holds an access guard (release builds
/// when the guard went through the thread's own shard, and otherwise wait for it forever,
/// which is why `access` ties its guard to the `Bound`).
#[test]
#[cfg(debug_assertions)]
fn unbind_panicking_on_a_held_guard_leaves_no_devres_accessible_after_removal() {
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    within(DEADLINE_SECS, move || {
        let bus = Bus::new("soundness");
        let dev = bus.add_device("d0");
        dev.bind(Arc::new(Nop)).unwrap();
        let (held, other) = dev
            .with_bound(|b| {
                (
                    Devres::new(b, Counted(d.clone())).unwrap(),
                    Devres::new(b, Counted(d.clone())).unwrap(),
                )
            })
            .unwrap();
        let guard = held.try_access().unwrap();
        let unbind = catch_unwind(AssertUnwindSafe(|| dev.unbind()));
        assert!(
            unbind.is_err(),
            "debug builds refuse to wait for this thread"
        );
        assert!(!dev.is_bound());
        // The guard still reads the value: nothing was revoked under it.
        let _still_there = &*guard;
        drop(guard);
        assert_eq!(d.load(Ordering::SeqCst), 0);
        // The next end of the device revokes both, and nothing stays reachable.
        dev.remove().unwrap();
        assert!(held.try_access().is_none(), "revoked at removal");
        assert!(other.try_access().is_none(), "revoked at removal");
        assert_eq!(d.load(Ordering::SeqCst), 2);
        drop((held, other));
        assert_eq!(d.load(Ordering::SeqCst), 2, "dropped exactly once");
    });
}

/// The same for a `Devres` dropped by hand while holding a guard of another `Devres` of the
/// binding: no grace period is needed for a `Devres` nobody can borrow any more, so this
/// neither panics nor waits.
#[test]
fn devres_dropped_while_holding_a_guard_of_another_devres_drops_its_value_at_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    within(DEADLINE_SECS, move || {
        let bus = Bus::new("soundness");
        let dev = bus.add_device("d0");
        dev.bind(Arc::new(Nop)).unwrap();
        let (held, dropped) = dev
            .with_bound(|b| {
                (
                    Devres::new(b, Counted(d.clone())).unwrap(),
                    Devres::new(b, Counted(d.clone())).unwrap(),
                )
            })
            .unwrap();
        let guard = held.try_access().unwrap();
        drop(dropped);
        assert_eq!(d.load(Ordering::SeqCst), 1);
        drop(guard);
        dev.unbind().unwrap();
        assert!(held.try_access().is_none());
        assert_eq!(d.load(Ordering::SeqCst), 2);
    });
}

// ----- `Revocable` -----------------------------------------------------------------------------

/// A revocable value whose drop re-enters (reads and revokes another revocable of its domain,
/// drops the revocable it owns) and/or panics.
struct RevValue {
    inner: Option<Revocable<InnerValue>>,
    sibling: Arc<Revocable<u32>>,
    mode: Mode,
    log: Log,
}

impl Drop for RevValue {
    fn drop(&mut self) {
        push(&self.log, "outer dropping");
        if self.mode != Mode::Panic {
            let _ = self.sibling.try_access_with(|v| *v);
            // In the same batch: `false` at once (the batch drops it), otherwise a grace period.
            let _ = self.sibling.revoke();
            drop(self.inner.take());
            push(&self.log, "outer dropped its inner devres");
        }
        if self.mode != Mode::Reenter {
            panic!("the outer value's drop panicked");
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum RevSite {
    Revoke,
    RevokeAll,
    DropUnrevoked,
}

fn revocable_at(site: RevSite, mode: Mode) {
    let log = Log::default();
    let l = log.clone();
    within(DEADLINE_SECS, move || {
        let domain = Arc::new(Domain::new());
        let sibling = Arc::new(Revocable::new_in(7u32, domain.clone()));
        let outer = Revocable::new_in(
            RevValue {
                inner: Some(Revocable::new_in(InnerValue(l.clone()), domain.clone())),
                sibling: sibling.clone(),
                mode,
                log: l.clone(),
            },
            domain.clone(),
        );
        let release = move || {
            let r = catch_unwind(AssertUnwindSafe(|| match site {
                RevSite::Revoke => {
                    assert!(outer.revoke());
                    drop(outer);
                }
                RevSite::RevokeAll => {
                    let items: [&dyn Revoke; 2] = [&outer, &*sibling];
                    assert_eq!(revoke_all(items), 2);
                    drop(outer);
                }
                RevSite::DropUnrevoked => drop(outer),
            }));
            if let Err(p) = r {
                assert_eq!(
                    mode,
                    Mode::Panic,
                    "{site:?}: {:?}",
                    p.downcast_ref::<&str>()
                );
            }
        };
        if mode == Mode::ReenterAndPanicWhileUnwinding {
            assert_eq!(while_unwinding(release), "outer");
        } else {
            release();
        }
    });
    let log = entries(&log);
    assert_eq!(
        log.iter().filter(|e| *e == "inner dropped").count(),
        1,
        "{site:?}/{mode:?}: {log:?}"
    );
}

#[test]
fn revocable_value_reentering_at_revoke_revoke_all_and_drop() {
    for site in [RevSite::Revoke, RevSite::RevokeAll, RevSite::DropUnrevoked] {
        revocable_at(site, Mode::Reenter);
    }
}

#[test]
fn revocable_value_panicking_at_revoke_revoke_all_and_drop_propagates_once() {
    for site in [RevSite::Revoke, RevSite::RevokeAll, RevSite::DropUnrevoked] {
        revocable_at(site, Mode::Panic);
    }
}

#[test]
fn revocable_value_reentering_and_panicking_while_unwinding_only_logs() {
    if in_child("revocable_value_reentering_and_panicking_while_unwinding_only_logs") {
        for site in [RevSite::Revoke, RevSite::RevokeAll, RevSite::DropUnrevoked] {
            revocable_at(site, Mode::ReenterAndPanicWhileUnwinding);
        }
    }
}
