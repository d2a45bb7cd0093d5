//! The steps of the operations on logical devices: creating them, drmm entries (actions,
//! values, byte blocks) and their early release, foreign handles and bad sizes, references,
//! registration, the unplug gate and open files.

use drmm::{Device, Error};

use super::lang::Op;
use super::model::{DrmM, Kind};
use super::system::{DrmW, H, Handle, MAX_DRMS, World, drm_action};
use super::{DrmData, Ev, Val};

impl World {
    /// [`World::step`] for an operation on logical devices: `false` if it had nothing to act on.
    pub(super) fn step_drm(&mut self, op: Op) -> Result<bool, String> {
        use Op::*;
        let log = self.log.clone();
        match op {
            NewDevice => {
                if self.drms.len() >= MAX_DRMS {
                    return Ok(false);
                }
                let data = self.m.value();
                let dev = Device::with_name(
                    format!("drm{}", self.drms.len()),
                    DrmData(Val::new(data, &log)),
                );
                self.drms.push(DrmW { refs: vec![dev] });
                self.m.drms.push(DrmM {
                    data_id: data,
                    ..DrmM::default()
                });
            }
            DrmAddAction { dev, .. } | DrmAddOrReset { dev } => {
                let Some((slot, d)) = self.pick_dev(dev) else {
                    return Ok(false);
                };
                let id = self.m.value();
                let adds = adds_of(op).then(|| self.m.id());
                let action = drm_action(&log, id, adds);
                let h = if matches!(op, DrmAddOrReset { .. }) {
                    d.add_action_or_reset_named("or_reset", action)
                } else {
                    d.add_action_named("model", action)
                }
                .map_err(|e| format!("add_action: {e:?}"))?;
                check_eq!(h.list_id(), d.list_id(), "handle's list");
                self.m.drms[slot].entries.push((id, Kind::Action { adds }));
                self.drm_handles.push(Handle {
                    owner: slot,
                    id,
                    h: H::Action(h),
                });
            }
            DrmAlloc { dev } => {
                let Some((slot, d)) = self.pick_dev(dev) else {
                    return Ok(false);
                };
                let id = self.m.value();
                let h = d
                    .alloc(Val::new(id, &log))
                    .map_err(|e| format!("alloc: {e:?}"))?;
                check_eq!(h.get(&d).map(Val::id), Ok(id), "fresh value");
                self.m.drms[slot].entries.push((id, Kind::Value));
                self.drm_handles.push(Handle {
                    owner: slot,
                    id,
                    h: H::Value(h),
                });
            }
            DrmKzalloc { dev, len } => {
                let Some((slot, d)) = self.pick_dev(dev) else {
                    return Ok(false);
                };
                let len = len as usize * 3;
                let id = self.m.id();
                let h = d.kzalloc(len).map_err(|e| format!("kzalloc: {e:?}"))?;
                self.m.drms[slot].entries.push((id, Kind::Bytes(len)));
                self.drm_handles.push(Handle {
                    owner: slot,
                    id,
                    h: H::Bytes(h),
                });
            }
            DrmBadAlloc { dev, which } => {
                let Some((_, d)) = self.pick_dev(dev) else {
                    return Ok(false);
                };
                let before = d.resource_count();
                match which % 3 {
                    0 => check!(
                        matches!(
                            d.kmalloc_array(usize::MAX / 2, 3),
                            Err(Error::SizeOverflow { .. })
                        ),
                        "kmalloc_array overflow"
                    ),
                    1 => check!(
                        matches!(
                            d.kzalloc_aligned(8, 48),
                            Err(Error::InvalidAlignment { .. })
                        ),
                        "bad alignment"
                    ),
                    _ => check!(
                        matches!(d.kzalloc(usize::MAX - 8), Err(Error::SizeOverflow { .. })),
                        "size overflow"
                    ),
                }
                check_eq!(d.resource_count(), before, "list unchanged by bad input");
            }
            DrmFree { h } | DrmRemove { h } | DrmRead { h } => {
                let n = self.drm_handles.len();
                if n == 0 {
                    return Ok(false);
                }
                let i = h as usize % n;
                let owner = self.drm_handles[i].owner;
                let Some(d) = self.dev(owner) else {
                    return Ok(false);
                };
                let id = self.drm_handles[i].id;
                if let DrmRead { .. } = op {
                    match &mut self.drm_handles[i].h {
                        H::Value(v) => check_eq!(v.get(&d).map(Val::id), Ok(id), "read value"),
                        H::Bytes(b) => {
                            let s = b.get_mut(&d).map_err(|e| format!("{e:?}"))?;
                            check!(s.iter().all(|x| *x == 0), "bytes not zero");
                            s.fill(0xa5);
                            s.fill(0);
                        }
                        H::ReVal(v) => check_eq!(v.get(&d).map(|v| v.id), Ok(id), "read value"),
                        H::Action(_) => return Ok(false),
                    }
                    return Ok(true);
                }
                if matches!(op, DrmRemove { .. }) && !matches!(self.drm_handles[i].h, H::Action(_))
                {
                    return Ok(false);
                }
                let hd = self.drm_handles.swap_remove(i);
                let pos = self.m.drms[owner]
                    .entries
                    .iter()
                    .position(|e| e.0 == id)
                    .ok_or("handle of an entry the model does not have")?;
                let (_, kind) = self.m.drms[owner].entries.remove(pos);
                let r = match hd.h {
                    H::Action(h) if matches!(op, DrmRemove { .. }) => {
                        self.m.expected.push(Ev::Drop(id));
                        d.remove_action(h)
                    }
                    H::Action(h) => {
                        self.m.release_drm_entry(owner, id, kind);
                        d.release_action(h)
                    }
                    H::Value(h) => {
                        self.m.release_drm_entry(owner, id, kind);
                        d.kfree(h)
                    }
                    H::ReVal(h) => {
                        self.m.release_drm_entry(owner, id, kind);
                        d.kfree(h)
                    }
                    H::Bytes(h) => d.kfree(h),
                };
                check_eq!(r, Ok(()), "early release");
            }
            DrmForeign { h, dev } => {
                let n = self.drm_handles.len();
                if n == 0 {
                    return Ok(false);
                }
                let i = h as usize % n;
                let owner = self.drm_handles[i].owner;
                let Some((other, d)) = self.pick_dev(dev) else {
                    return Ok(false);
                };
                if other == owner {
                    return Ok(false);
                }
                let hd = self.drm_handles.swap_remove(i);
                let r = match hd.h {
                    H::Action(h) => d.release_action(h),
                    H::Value(h) => d.kfree(h),
                    H::Bytes(h) => d.kfree(h),
                    H::ReVal(h) => d.kfree(h),
                };
                check!(
                    matches!(r, Err(Error::ForeignHandle { .. })),
                    "foreign handle gave {r:?}"
                );
            }
            CloneRef { dev } => {
                let Some((slot, d)) = self.pick_dev(dev) else {
                    return Ok(false);
                };
                self.drms[slot].refs.push(d);
            }
            DropRef { dev } => {
                let n = self.drms.len();
                let Some(slot) = (0..n)
                    .map(|k| (dev as usize + k) % n)
                    .find(|s| !self.drms[*s].refs.is_empty())
                else {
                    return Ok(false);
                };
                let r = self.drms[slot].refs.pop();
                let interp = self.interp_refs();
                self.m.interp.clone_from(&interp);
                self.m.unref(slot, interp[slot]);
                drop(r);
            }
            Register { dev } => {
                let Some((slot, d)) = self.pick_dev(dev) else {
                    return Ok(false);
                };
                let m = &mut self.m.drms[slot];
                let want = if m.unplugged {
                    Err(Error::Unplugged)
                } else if m.registered {
                    Err(Error::AlreadyRegistered)
                } else {
                    m.registered = true;
                    Ok(())
                };
                check_eq!(d.register(), want, "register");
            }
            Unplug { dev } => {
                let Some((slot, d)) = self.pick_dev(dev) else {
                    return Ok(false);
                };
                let m = &mut self.m.drms[slot];
                let first = !m.unplugged;
                m.unplugged = true;
                m.registered = false;
                check_eq!(
                    d.unplug(),
                    first,
                    "unplug returns whether it closed the gate"
                );
                check!(d.enter().is_none(), "gate open after unplug");
            }
            Enter { dev } => {
                let Some((slot, d)) = self.pick_dev(dev) else {
                    return Ok(false);
                };
                let inside = d.enter();
                check_eq!(inside.is_some(), !self.m.drms[slot].unplugged, "enter");
            }
            Open { dev } => {
                let Some((slot, d)) = self.pick_dev(dev) else {
                    return Ok(false);
                };
                let fid = self.m.value();
                let m = &self.m.drms[slot];
                let want = if m.unplugged {
                    Err(Error::Unplugged)
                } else if !m.registered {
                    Err(Error::NotRegistered)
                } else {
                    Ok(())
                };
                let r = d.open(Val::new(fid, &log));
                match (r, want) {
                    (Ok(f), Ok(())) => {
                        self.files.push(f);
                        self.m.file_slots.push(slot);
                    }
                    (Err(e), Err(w)) => {
                        check_eq!(e, w, "open error");
                        self.m.expected.push(Ev::Drop(fid));
                    }
                    (r, w) => return Err(format!("open: got {:?}, expected {w:?}", r.err())),
                }
            }
            Close { f } => {
                if self.files.is_empty() {
                    return Ok(false);
                }
                let i = f as usize % self.files.len();
                let file = self.files.remove(i);
                let slot = self.m.file_slots.remove(i);
                let fid = file.data().id();
                self.m.expected.push(Ev::Drop(fid));
                let interp = self.interp_refs();
                self.m.unref(slot, interp[slot]);
                file.close();
            }
            FileUse { f } => {
                if self.files.is_empty() {
                    return Ok(false);
                }
                let i = f as usize % self.files.len();
                let slot = self.m.file_slots[i];
                let file = &self.files[i];
                let m = &self.m.drms[slot];
                check_eq!(
                    file.device().data().0.id(),
                    m.data_id,
                    "drm state through a file"
                );
                check_eq!(file.enter().is_some(), !m.unplugged, "file enters the gate");
            }
            other => unreachable!("not an operation on logical devices: {other:?}"),
        }
        Ok(true)
    }
}

fn adds_of(op: Op) -> bool {
    matches!(op, Op::DrmAddAction { adds: true, .. })
}
