//! Model-based property test of the list engine through the drmm API: random programs of
//! operations run against a plain `Vec` model, checking order and exactly-once.
//!
//! The property runs in each subscriber variant of `tests/common/subscribers.rs` (a test per
//! variant; `DRMM_TEST_SUBSCRIBER` selects): the re-entering one reads both devices from its
//! callback; the panicking one's panics may surface from any early release or drop of a
//! reference, and must change nothing the model sees.

#[path = "common/subscribers.rs"]
mod subscribers;

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use drmm::{ActionHandle, Device, EntryKind, Error, Managed};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use subscribers::Variant;

/// Runs `f`; a panic of the panicking subscriber gives `None` (the operation's effects are
/// still checked against the model), any other panic goes on.
fn tolerate<R>(f: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(p) if subscribers::is_subscriber_panic(&*p) => None,
        Err(p) => resume_unwind(p),
    }
}

/// What happened, in order: `("run", id)` for an action, `("drop", id)` for a value.
type Events = Arc<Mutex<Vec<(&'static str, u32)>>>;

#[derive(Debug, Clone)]
enum Op {
    AddAction,
    /// An action that, when run, registers another action (promise 1's "added during release").
    AddActionThatAdds,
    AllocValue,
    Kzalloc(usize),
    ReleaseAction(usize),
    RemoveAction(usize),
    Kfree(usize),
    ForeignFree(usize),
    Clone,
    DropRef(usize),
    CheckSnapshot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::AddAction),
        1 => Just(Op::AddActionThatAdds),
        4 => Just(Op::AllocValue),
        1 => (0usize..100).prop_map(Op::Kzalloc),
        2 => any::<usize>().prop_map(Op::ReleaseAction),
        1 => any::<usize>().prop_map(Op::RemoveAction),
        2 => any::<usize>().prop_map(Op::Kfree),
        1 => any::<usize>().prop_map(Op::ForeignFree),
        1 => Just(Op::Clone),
        1 => any::<usize>().prop_map(Op::DropRef),
        1 => Just(Op::CheckSnapshot),
    ]
}

/// A value whose drop is recorded.
struct Val(u32, Events);
impl Drop for Val {
    fn drop(&mut self) {
        self.1.lock().unwrap().push(("drop", self.0));
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ModelKind {
    Action { adds: bool },
    Value,
    Bytes,
}

/// The model: live entries oldest first, with their ids.
#[derive(Default)]
struct Model {
    entries: Vec<(u32, ModelKind)>,
}

enum Handle {
    Action(ActionHandle),
    Value(Managed<Val>),
    Bytes(Managed<[u8]>),
}

fn pick<T>(v: &mut Vec<T>, i: usize) -> Option<T> {
    if v.is_empty() {
        None
    } else {
        let n = v.len();
        Some(v.swap_remove(i % n))
    }
}

/// Id given to actions registered while the device is released.
const ADDED_BASE: u32 = 1_000_000;

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let events: Events = Arc::default();
    let dev = Device::new(());
    let other = Device::new(());
    let refs = Rc::new(RefCell::new(vec![dev.clone()]));
    drop(dev);
    // What a subscriber reading the devices from its callback sees (re-entering variant).
    let _reentry = {
        let (other, refs) = (other.clone(), refs.clone());
        subscribers::reenter_with(move || {
            let _ = (other.resource_count(), other.snapshot());
            if let Ok(r) = refs.try_borrow()
                && let Some(d) = r.first()
            {
                let _ = (d.resource_count(), d.snapshot());
            }
        })
    };
    let mut model = Model::default();
    let mut handles: Vec<(u32, Handle)> = Vec::new();
    let mut next = 0u32;
    let mut expected_events: Vec<(&'static str, u32)> = Vec::new();

    for op in ops {
        if refs.borrow().is_empty() {
            break;
        }
        let dev = refs.borrow()[0].clone();
        match op {
            Op::AddAction | Op::AddActionThatAdds => {
                let id = next;
                next += 1;
                let adds = matches!(op, Op::AddActionThatAdds);
                let ev = events.clone();
                let h = dev
                    .add_action_named("model", move |d| {
                        ev.lock().unwrap().push(("run", id));
                        if adds {
                            let ev2 = ev.clone();
                            let _ = d
                                .add_action_named("added", move |_| {
                                    ev2.lock().unwrap().push(("run", ADDED_BASE + id))
                                })
                                .unwrap();
                        }
                    })
                    .unwrap();
                model.entries.push((id, ModelKind::Action { adds }));
                handles.push((id, Handle::Action(h)));
            }
            Op::AllocValue => {
                let id = next;
                next += 1;
                let h = dev.alloc(Val(id, events.clone())).unwrap();
                prop_assert_eq!(h.get(&dev).unwrap().0, id);
                model.entries.push((id, ModelKind::Value));
                handles.push((id, Handle::Value(h)));
            }
            Op::Kzalloc(n) => {
                let id = next;
                next += 1;
                let h = dev.kzalloc(n).unwrap();
                prop_assert_eq!(h.get(&dev).unwrap().len(), n);
                model.entries.push((id, ModelKind::Bytes));
                handles.push((id, Handle::Bytes(h)));
            }
            Op::ReleaseAction(i) | Op::RemoveAction(i) | Op::Kfree(i) => {
                let Some((id, h)) = pick(&mut handles, i) else {
                    continue;
                };
                let pos = model.entries.iter().position(|e| e.0 == id).unwrap();
                let (_, kind) = model.entries.remove(pos);
                match (h, &op) {
                    (Handle::Action(h), Op::RemoveAction(_)) => {
                        tolerate(|| dev.remove_action(h).unwrap());
                    }
                    (Handle::Action(h), _) => {
                        tolerate(|| dev.release_action(h).unwrap());
                        expected_events.push(("run", id));
                        if let ModelKind::Action { adds: true } = kind {
                            // Its own added action is now on the list, newest.
                            model
                                .entries
                                .push((ADDED_BASE + id, ModelKind::Action { adds: false }));
                        }
                    }
                    (Handle::Value(h), _) => {
                        tolerate(|| dev.kfree(h).unwrap());
                        expected_events.push(("drop", id));
                    }
                    (Handle::Bytes(h), _) => {
                        tolerate(|| dev.kfree(h).unwrap());
                    }
                }
            }
            Op::ForeignFree(i) => {
                let Some((id, h)) = pick(&mut handles, i) else {
                    continue;
                };
                // A handle used on another device: an error, nothing changes; the handle is
                // consumed, so its entry stays until the device's release.
                let r = match h {
                    Handle::Action(h) => other.release_action(h),
                    Handle::Value(h) => other.kfree(h),
                    Handle::Bytes(h) => other.kfree(h),
                };
                prop_assert!(matches!(r, Err(Error::ForeignHandle { .. })), "id {}", id);
            }
            Op::Clone => refs.borrow_mut().push(dev.clone()),
            Op::DropRef(i) => {
                let r = pick(&mut refs.borrow_mut(), i);
                tolerate(|| drop(r));
            }
            Op::CheckSnapshot => {
                let snap = dev.snapshot();
                prop_assert_eq!(snap.len(), model.entries.len());
                for (info, (_, kind)) in snap.iter().zip(model.entries.iter().rev()) {
                    let want = match kind {
                        ModelKind::Action { .. } => EntryKind::Action,
                        _ => EntryKind::Alloc,
                    };
                    prop_assert_eq!(info.kind(), want);
                }
                prop_assert!(snap.windows(2).all(|w| w[0].seq() > w[1].seq()));
            }
        }
        tolerate(|| drop(dev));
        if refs.borrow().is_empty() {
            break; // released: checked below against the model's final release
        }
        prop_assert_eq!(&*events.lock().unwrap(), &expected_events[..]);
        prop_assert_eq!(refs.borrow()[0].resource_count(), model.entries.len());
    }
    let last = std::mem::take(&mut *refs.borrow_mut());
    tolerate(|| drop(last));
    drop(handles);
    // Final release: newest first, actions that add run their added action right after.
    for (id, kind) in model.entries.iter().rev() {
        match kind {
            ModelKind::Action { adds } => {
                expected_events.push(("run", *id));
                if *adds {
                    expected_events.push(("run", ADDED_BASE + id));
                }
            }
            ModelKind::Value => expected_events.push(("drop", *id)),
            ModelKind::Bytes => {}
        }
    }
    prop_assert_eq!(&*events.lock().unwrap(), &expected_events[..]);
    // The other device's release emits release events too (a panicking subscriber may panic
    // on them): its last reference goes here.
    drop(_reentry);
    tolerate(|| drop(other));
    Ok(())
}

fn check(variant: Variant) {
    if !variant.is_selected() {
        return;
    }
    let cases = std::env::var("DRMM_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|_| !cfg!(miri))
        .unwrap_or(if cfg!(miri) { 4 } else { 512 });
    let mut runner = TestRunner::new(Config {
        cases,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..Config::default()
    });
    let r = runner.run(&proptest::collection::vec(op(), 0..80), |ops| {
        subscribers::watchdog(Some(format!("drmm_model ({variant}): {ops:?}")));
        let _ = subscribers::take_violation();
        variant.run(|| run(ops))?;
        if let Some(v) = subscribers::take_violation() {
            return Err(TestCaseError::fail(format!(
                "{variant} subscriber saw: {v}"
            )));
        }
        Ok(())
    });
    subscribers::watchdog(None);
    if let Err(e) = r {
        panic!("list_matches_vec_model ({variant} subscriber): {e}");
    }
    eprintln!("list_matches_vec_model ({variant} subscriber): {cases} cases");
}

#[test]
fn list_matches_vec_model() {
    check(Variant::None);
}

#[test]
fn list_matches_vec_model_recorded() {
    check(Variant::Record);
}

#[test]
fn list_matches_vec_model_with_a_reentrant_subscriber() {
    check(Variant::Reenter);
}

#[test]
fn list_matches_vec_model_with_a_panicking_subscriber() {
    check(Variant::Panic);
}

/// A subscriber that reads the device from its callback, during each kind of operation: no
/// event may be delivered while the list's lock is held. Each operation runs on a thread of
/// its own, so that one that deadlocks is reported by name (its thread stays blocked).
#[test]
#[cfg_attr(miri, ignore = "a deadlock is reported by a timeout")]
fn subscriber_reading_the_device_from_its_callback() {
    type Case = (&'static str, fn(&Device<()>));
    let cases: [Case; 8] = [
        ("add_action", |d| drop(d.add_action(|_| {}).unwrap())),
        ("alloc", |d| drop(d.alloc(1u32).unwrap())),
        ("kzalloc", |d| drop(d.kzalloc(16).unwrap())),
        ("kfree", |d| {
            let h = subscribers::untraced(|| d.alloc(1u32).unwrap());
            d.kfree(h).unwrap();
        }),
        ("release_action", |d| {
            let h = subscribers::untraced(|| d.add_action(|_| {}).unwrap());
            d.release_action(h).unwrap();
        }),
        ("remove_action", |d| {
            let h = subscribers::untraced(|| d.add_action(|_| {}).unwrap());
            d.remove_action(h).unwrap();
        }),
        ("release of the other device", |d| {
            let other = subscribers::untraced(|| {
                let o = Device::new(());
                let _ = o.add_action(|_| {}).unwrap();
                let _ = o.alloc(3u8).unwrap();
                o
            });
            let _ = d;
            drop(other);
        }),
        ("action run by the release adds", |d| {
            let other = subscribers::untraced(|| {
                let o = Device::new(());
                let _ = o
                    .add_action(|l| drop(l.add_action(|_| {}).unwrap()))
                    .unwrap();
                o
            });
            let _ = d;
            drop(other);
        }),
    ];
    let mut hung = Vec::new();
    for (name, case) in cases {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let dev = Device::new(());
            let probe = dev.clone();
            let _g = subscribers::reenter_with(move || {
                let _ = (probe.resource_count(), probe.snapshot());
            });
            Variant::Reenter.run(|| case(&dev));
            tx.send(()).unwrap();
        });
        if rx
            .recv_timeout(std::time::Duration::from_secs(if cfg!(debug_assertions) {
                20
            } else {
                5
            }))
            .is_err()
        {
            hung.push(name);
        }
    }
    assert!(
        hung.is_empty(),
        "deadlocked with a subscriber reading the device: {hung:?}"
    );
}

/// The shrunk failure of the panicking variant: a release whose fifth event panics in the
/// subscriber must still run every action (the one added during the release too).
#[test]
fn panicking_subscriber_during_a_release() {
    let ops = vec![Op::AddActionThatAdds, Op::AddAction, Op::AddAction];
    Variant::Panic
        .run(|| run(ops))
        .unwrap_or_else(|e| panic!("{e}"));
}
