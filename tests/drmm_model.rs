//! Model-based property test of the list engine through the drmm API: random programs of
//! operations run against a plain `Vec` model, checking order and exactly-once.

use std::sync::{Arc, Mutex};

use drmm::{ActionHandle, Device, EntryKind, Error, Managed};
use proptest::prelude::*;

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
    let mut refs = vec![dev.clone()];
    drop(dev);
    let mut model = Model::default();
    let mut handles: Vec<(u32, Handle)> = Vec::new();
    let mut next = 0u32;
    let mut expected_events: Vec<(&'static str, u32)> = Vec::new();

    for op in ops {
        if refs.is_empty() {
            break;
        }
        let dev = refs[0].clone();
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
                    (Handle::Action(h), Op::RemoveAction(_)) => dev.remove_action(h).unwrap(),
                    (Handle::Action(h), _) => {
                        dev.release_action(h).unwrap();
                        expected_events.push(("run", id));
                        if let ModelKind::Action { adds: true } = kind {
                            // Its own added action is now on the list, newest.
                            model
                                .entries
                                .push((ADDED_BASE + id, ModelKind::Action { adds: false }));
                        }
                    }
                    (Handle::Value(h), _) => {
                        dev.kfree(h).unwrap();
                        expected_events.push(("drop", id));
                    }
                    (Handle::Bytes(h), _) => dev.kfree(h).unwrap(),
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
            Op::Clone => refs.push(dev.clone()),
            Op::DropRef(i) => {
                pick(&mut refs, i);
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
        drop(dev);
        if refs.is_empty() {
            break; // released: checked below against the model's final release
        }
        prop_assert_eq!(&*events.lock().unwrap(), &expected_events[..]);
        prop_assert_eq!(refs[0].resource_count(), model.entries.len());
    }
    drop(refs);
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
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 512 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn list_matches_vec_model(ops in proptest::collection::vec(op(), 0..80)) {
        run(ops)?;
    }
}
