//! The re-entrant parts of the operation language: user code that calls back into the
//! library (a release action releasing and adding entries of its own device, a managed value
//! whose drop re-enters another device, a `Devres` owning another), and the steps of the
//! operations that create them (`Op::DrmReentrant`, `Op::DrmValueReenters`,
//! `Op::DevresNested`).

use std::sync::{Arc, Mutex};

use drmm::bus::Devres;
use drmm::{ActionHandle, Device, Error, LogicalDevice, Managed};

use super::lang::Op;
use super::model::{DevresM, Kind};
use super::system::{BUS_DEVICES, H, Handle, World};
use super::{DrmData, Ev, Log, Val, subscribers};

/// The value of a `Devres`: a logged value and, for `Op::DevresNested`, the `Devres` of the
/// same binding it owns (dropped after the value, in field order).
pub struct DVal {
    pub(super) val: Val,
    pub(super) inner: Option<Devres<Val>>,
}

/// The value of `Op::DrmValueReenters`: its drop re-enters `dev` (see there).
pub struct ReVal {
    pub(super) id: u32,
    pub(super) log: Log,
    pub(super) dev: Device<DrmData>,
    pub(super) target: Option<Target>,
    pub(super) adds: u32,
}

impl Drop for ReVal {
    fn drop(&mut self) {
        if let Some(t) = self.target.take() {
            let d = &self.dev;
            let r = nested_release(|| match t {
                Target::Action(h) => d.release_action(h),
                Target::Value(h) => d.kfree(h),
                Target::Bytes(h) => d.kfree(h),
                Target::ReVal(h) => d.kfree(h),
            });
            match r {
                Ok(()) => self.log.push(Ev::Answer(self.id, true)),
                Err(Error::NotOnList) => self.log.push(Ev::Answer(self.id, false)),
                Err(e) => panic!("a value's drop releasing an entry answered {e:?}"),
            }
        }
        let v = self
            .dev
            .alloc(Val::new(self.adds, &self.log))
            .expect("adding from a value's drop");
        drop(v);
        self.log.push(Ev::Drop(self.id));
        // `dev` is dropped after this: maybe the device's last reference.
    }
}

/// A handle a re-entrant action owns and releases early when it runs.
pub(super) enum Target {
    Action(ActionHandle),
    Value(Managed<Val>),
    Bytes(Managed<[u8]>),
    ReVal(Managed<ReVal>),
}

/// An early release made by user code (a re-entrant action, a value's drop). A panic of the
/// panicking subscriber surfacing from it means the entry was found (the events it panics on
/// are only emitted for an entry taken off), so it counts as `Ok`; the user code goes on.
fn nested_release(f: impl FnOnce() -> drmm::Result<()>) -> drmm::Result<()> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) if subscribers::is_subscriber_panic(&*p) => Ok(()),
        Err(p) => std::panic::resume_unwind(p),
    }
}

impl From<H> for Target {
    fn from(h: H) -> Target {
        match h {
            H::Action(a) => Target::Action(a),
            H::Value(v) => Target::Value(v),
            H::Bytes(b) => Target::Bytes(b),
            H::ReVal(r) => Target::ReVal(r),
        }
    }
}

/// The action of `Op::DrmReentrant`: releases `target` on its own device (logging the answer),
/// then adds value `adds` to it and lets its handle go (the entry stays until the release).
pub(super) fn reentrant_action(
    log: &Log,
    id: u32,
    target: Arc<Mutex<Option<Target>>>,
    adds: u32,
) -> impl FnOnce(&LogicalDevice<DrmData>) + Send + 'static {
    let log = log.clone();
    let captured = Val::new(id, &log);
    move |d| {
        log.push(Ev::Run(id));
        let t = target.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = t {
            let r = nested_release(|| match t {
                Target::Action(h) => d.release_action(h),
                Target::Value(h) => d.kfree(h),
                Target::Bytes(h) => d.kfree(h),
                Target::ReVal(h) => d.kfree(h),
            });
            match r {
                Ok(()) => log.push(Ev::Answer(id, true)),
                Err(Error::NotOnList) => log.push(Ev::Answer(id, false)),
                Err(e) => panic!("re-entrant release of an own entry answered {e:?}"),
            }
        }
        let v = d
            .alloc(Val::new(adds, &log))
            .expect("adding from a re-entrant action");
        drop(v);
        drop(captured);
    }
}

impl World {
    /// [`World::step`] for a re-entrant operation: `false` if it had nothing to act on.
    pub(super) fn step_reentrant(&mut self, op: Op) -> Result<bool, String> {
        use Op::*;
        let log = self.log.clone();
        match op {
            DevresNested { bus } => {
                let bus = bus as usize % BUS_DEVICES;
                if !self.m.buses[bus].present {
                    return Ok(false);
                }
                let (inner_val, inner_rid, inner_id) =
                    (self.m.value(), self.m.devres.len(), self.m.id());
                let (val, rid, id) = (self.m.value(), inner_rid + 1, self.m.id());
                let r = self
                    .scope(bus, |b| -> drmm::Result<Devres<DVal>> {
                        let inner = Devres::new(b, Val::new(inner_val, &log))?;
                        Devres::new(
                            b,
                            DVal {
                                val: Val::new(val, &log),
                                inner: Some(inner),
                            },
                        )
                    })?
                    .ok_or("scope refused")?
                    .map_err(|e| format!("nested Devres::new: {e:?}"))?;
                for (v, inner) in [(inner_val, None), (val, Some(inner_rid))] {
                    self.m.devres.push(DevresM {
                        val: v,
                        revoked: false,
                        bus,
                        inner,
                    });
                }
                let b = &mut self.m.buses[bus];
                b.registry.extend([inner_rid, rid]);
                b.entries.push((inner_id, Kind::DevresEntry(inner_rid)));
                b.entries.push((id, Kind::DevresEntry(rid)));
                self.devres.push((bus, rid, r));
            }
            DrmValueReenters { dev, other } => {
                let Some((slot, d)) = self.pick_dev(dev) else {
                    return Ok(false);
                };
                // An older device than the value's own: references never form a cycle.
                let Some((b, bd)) = (0..slot)
                    .map(|k| (other as usize + k) % slot)
                    .find_map(|s| self.dev(s).map(|x| (s, x)))
                else {
                    return Ok(false);
                };
                let theirs: Vec<usize> = (0..self.drm_handles.len())
                    .filter(|i| self.drm_handles[*i].owner == b)
                    .collect();
                let (target, target_id) = if theirs.is_empty() {
                    (None, None)
                } else {
                    let hd = self
                        .drm_handles
                        .swap_remove(theirs[other as usize % theirs.len()]);
                    (Some(Target::from(hd.h)), Some(hd.id))
                };
                let id = self.m.value();
                let adds = self.m.id();
                let v = ReVal {
                    id,
                    log: log.clone(),
                    dev: bd,
                    target,
                    adds,
                };
                self.m.drms[b].value_refs += 1;
                let h = d.alloc(v).map_err(|e| format!("alloc: {e:?}"))?;
                self.m.drms[slot].entries.push((
                    id,
                    Kind::HoldsRef {
                        dev: b,
                        target: target_id,
                        adds,
                    },
                ));
                self.drm_handles.push(Handle {
                    owner: slot,
                    id,
                    h: H::ReVal(h),
                });
            }
            DrmReentrant { dev, h } => {
                let Some((slot, d)) = self.pick_dev(dev) else {
                    return Ok(false);
                };
                // Even `h`: the action owns the handle of an older entry of the device (picked
                // by `h`), which it releases before its own release reaches it. Odd `h`: of a
                // value (`h & 2`: a byte block) added right after it (newer), which a full
                // release frees first.
                let mine: Vec<usize> = (0..self.drm_handles.len())
                    .filter(|i| self.drm_handles[*i].owner == slot)
                    .collect();
                let slot_of_target = Arc::new(Mutex::new(None));
                let mut target_id = None;
                if h & 1 == 0 && !mine.is_empty() {
                    let hd = self
                        .drm_handles
                        .swap_remove(mine[(h as usize >> 1) % mine.len()]);
                    let t = Target::from(hd.h);
                    *slot_of_target.lock().unwrap() = Some(t);
                    target_id = Some(hd.id);
                }
                let id = self.m.value();
                let adds = self.m.id();
                let action = reentrant_action(&log, id, slot_of_target.clone(), adds);
                let h = d
                    .add_action_named("reentrant", action)
                    .map_err(|e| format!("add re-entrant action: {e:?}"))?;
                self.drm_handles.push(Handle {
                    owner: slot,
                    id,
                    h: H::Action(h),
                });
                let block = matches!(op, DrmReentrant { h, .. } if h & 2 == 2);
                let newer = h_odd(op).then(|| if block { self.m.id() } else { self.m.value() });
                self.m.drms[slot].entries.push((
                    id,
                    Kind::Reentrant {
                        target: target_id.or(newer),
                        adds,
                    },
                ));
                if let Some(v) = newer {
                    let (t, kind) = if block {
                        let b = d.kzalloc(8).map_err(|e| format!("kzalloc: {e:?}"))?;
                        (Target::Bytes(b), Kind::Bytes(8))
                    } else {
                        let b = d
                            .alloc(Val::new(v, &log))
                            .map_err(|e| format!("alloc: {e:?}"))?;
                        (Target::Value(b), Kind::Value)
                    };
                    self.m.drms[slot].entries.push((v, kind));
                    *slot_of_target.lock().unwrap() = Some(t);
                }
            }
            other => unreachable!("not a re-entrant operation: {other:?}"),
        }
        Ok(true)
    }
}

fn h_odd(op: Op) -> bool {
    matches!(op, Op::DrmReentrant { h, .. } if h & 1 == 1)
}
