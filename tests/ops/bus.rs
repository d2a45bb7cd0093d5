//! The steps of the operations on bus devices: binding (with a probe that may fail),
//! unbinding and removal, devres entries and their early release and reallocation, `Devres`
//! values and their revocation, devres groups.

use std::sync::Arc;

use drmm::Error;
use drmm::bus::Devres;

use super::lang::Op;
use super::model::{Binding, DevresM, DrmM, Kind};
use super::reentrant::DVal;
use super::system::{
    BUS_DEVICES, BindIds, DrmW, H, Handle, MAX_DRMS, TestDriver, World, devres_action, scope_in,
};
use super::{Ev, Val};

impl World {
    /// [`World::step`] for an operation on bus devices: `false` if it had nothing to act on.
    pub(super) fn step_bus(&mut self, op: Op) -> Result<bool, String> {
        use Op::*;
        let log = self.log.clone();
        match op {
            Bind { bus, fail } => {
                let bus = bus as usize % BUS_DEVICES;
                let want = if !self.m.buses[bus].present {
                    Some(Error::Removed)
                } else if self.m.buses[bus].bound.is_some() {
                    Some(Error::AlreadyBound)
                } else {
                    None
                };
                if let Some(w) = want {
                    let r = self.busdevs[bus].bind(Arc::new(TestDriver {
                        log: log.clone(),
                        ids: BindIds {
                            early: 0,
                            drmm: 0,
                            data: 0,
                            tag: 0,
                            remove: 0,
                        },
                        fail,
                    }));
                    check_eq!(r, Err(w), "bind");
                    return Ok(true);
                }
                if self.drms.len() >= MAX_DRMS {
                    return Ok(false);
                }
                let ids = BindIds {
                    early: self.m.value(),
                    drmm: self.m.value(),
                    data: self.m.value(),
                    tag: self.m.id(),
                    remove: self.m.id(),
                };
                let slot = self.drms.len();
                let init = self.m.id();
                self.drms.push(DrmW { refs: Vec::new() });
                self.m.drms.push(DrmM {
                    data_id: ids.data,
                    entries: vec![(ids.drmm, Kind::Action { adds: None })],
                    binding_refs: 1,
                    ..DrmM::default()
                });
                let b = &mut self.m.buses[bus];
                b.entries.push((ids.early, Kind::Action { adds: None }));
                b.entries.push((init, Kind::DrmInit(slot)));
                if fail {
                    // Before the call: a panicking subscriber may interrupt it after the
                    // release (see `World::step_caught`).
                    let interp = self.interp_refs();
                    self.m.release_binding(bus, &interp);
                }
                let r = self.busdevs[bus].bind(Arc::new(TestDriver {
                    log: log.clone(),
                    ids,
                    fail,
                }));
                if fail {
                    check!(
                        matches!(r, Err(Error::ProbeFailed { .. })),
                        "failing probe gave {r:?}"
                    );
                } else {
                    check_eq!(r, Ok(()), "bind");
                    self.m.created.push(ids.tag);
                    let d = &mut self.m.drms[slot];
                    d.binding_refs = 2;
                    d.in_driver_data = Some(bus);
                    d.registered = true;
                    self.m.buses[bus].bound = Some(Binding {
                        remove_id: ids.remove,
                        tag_id: ids.tag,
                        drm: slot,
                    });
                }
            }
            Unbind { bus } => {
                let bus = bus as usize % BUS_DEVICES;
                let bound = self.m.buses[bus].bound.is_some();
                if bound {
                    let interp = self.interp_refs();
                    self.m.unbind(bus, &interp);
                }
                let r = self.busdevs[bus].unbind();
                check_eq!(
                    r,
                    if bound { Ok(()) } else { Err(Error::NotBound) },
                    "unbind"
                );
            }
            RemoveBus { bus } => {
                let bus = bus as usize % BUS_DEVICES;
                let present = self.m.buses[bus].present;
                if present {
                    let interp = self.interp_refs();
                    if self.m.buses[bus].bound.is_some() {
                        self.m.unbind(bus, &interp);
                    }
                    self.m.release_binding(bus, &interp);
                    self.m.buses[bus].present = false;
                }
                let r = self.busdevs[bus].remove();
                check_eq!(
                    r,
                    if present { Ok(()) } else { Err(Error::Removed) },
                    "remove"
                );
            }
            DevresAction { bus } | DevresAlloc { bus } | DevresKzalloc { bus, .. } => {
                let bus = bus as usize % BUS_DEVICES;
                if !self.m.buses[bus].present {
                    return Ok(false);
                }
                let (id, kind) = match op {
                    DevresKzalloc { len, .. } => (self.m.id(), Kind::Bytes(len as usize)),
                    DevresAction { .. } => (self.m.value(), Kind::Action { adds: None }),
                    _ => (self.m.value(), Kind::Value),
                };
                let h = self
                    .scope(bus, |b| -> drmm::Result<H> {
                        Ok(match kind {
                            Kind::Bytes(n) => H::Bytes(b.kzalloc(n)?),
                            Kind::Value => H::Value(b.alloc(Val::new(id, &log))?),
                            _ => H::Action(b.add_action_named("model", devres_action(&log, id))?),
                        })
                    })?
                    .ok_or("scope of a present device refused")?
                    .map_err(|e| format!("devres add: {e:?}"))?;
                self.m.buses[bus].entries.push((id, kind));
                self.devres_handles.push(Handle { owner: bus, id, h });
            }
            DevresFree { h } | DevresRemove { h } | DevresRead { h } | DevresRealloc { h, .. } => {
                let n = self.devres_handles.len();
                if n == 0 {
                    return Ok(false);
                }
                let i = h as usize % n;
                let bus = self.devres_handles[i].owner;
                if !self.m.buses[bus].present {
                    // Removed: its handles can only be dropped.
                    self.devres_handles.swap_remove(i);
                    return Ok(false);
                }
                let id = self.devres_handles[i].id;
                let pos = self.m.buses[bus].entries.iter().position(|e| e.0 == id);
                let live = pos.is_some();
                let want = if live { Ok(()) } else { Err(Error::NotOnList) };
                match op {
                    DevresRead { .. } => {
                        let hd = &self.devres_handles[i];
                        let r = self
                            .scope(bus, |b| match &hd.h {
                                H::Action(h) => Ok(b.is_action_added(h)),
                                H::Value(v) => v.get(b).map(|v| v.id() == id),
                                H::Bytes(x) => x.get(b).map(|s| s.iter().all(|c| *c == 0)),
                                H::ReVal(_) => unreachable!("no devres re-entering values"),
                            })?
                            .ok_or("scope refused")?;
                        match (&hd.h, r) {
                            (H::Action(_), Ok(added)) => check_eq!(added, live, "is_action_added"),
                            (_, Ok(good)) => {
                                check!(live, "read of a released devres entry succeeded");
                                check!(good, "devres entry has the wrong contents");
                            }
                            (_, Err(e)) => check_eq!(Err(e), want, "devres read"),
                        }
                    }
                    DevresRealloc { len, .. } => {
                        let len = len as usize * 5;
                        let hd = &mut self.devres_handles[i];
                        let H::Bytes(x) = &mut hd.h else {
                            return Ok(false);
                        };
                        let r = scope_in(&self.m.buses[bus], &self.busdevs[bus], bus, |b| {
                            b.krealloc_zeroed(x, len)?;
                            let s = x.get(b)?;
                            Ok((s.len(), s.iter().all(|c| *c == 0)))
                        })?
                        .ok_or("scope refused")?;
                        match r {
                            Ok((l, zero)) => {
                                check!(live, "krealloc of a released entry succeeded");
                                check_eq!(l, len, "krealloc length");
                                check!(zero, "krealloc_zeroed not zero");
                                let p = pos.expect("live");
                                self.m.buses[bus].entries[p].1 = Kind::Bytes(len);
                            }
                            Err(e) => check_eq!(Err(e), want, "krealloc"),
                        }
                    }
                    _ => {
                        let remove = matches!(op, DevresRemove { .. });
                        if remove && !matches!(self.devres_handles[i].h, H::Action(_)) {
                            return Ok(false);
                        }
                        let hd = self.devres_handles.swap_remove(i);
                        if let Some(p) = pos {
                            let (_, kind) = self.m.buses[bus].entries.remove(p);
                            if remove {
                                self.m.expected.push(Ev::Drop(id));
                            } else {
                                let interp = self.interp_refs();
                                self.m.release_devres_entry(id, kind, &interp);
                            }
                        }
                        let r = self
                            .scope(bus, |b| match hd.h {
                                H::Action(h) if remove => b.remove_action(h),
                                H::Action(h) => b.release_action(h),
                                H::Value(h) => b.kfree(h),
                                H::Bytes(h) => b.kfree(h),
                                H::ReVal(_) => unreachable!("no devres re-entering values"),
                            })?
                            .ok_or("scope refused")?;
                        check_eq!(r, want, "devres early release");
                    }
                }
            }
            DevresNew { bus } => {
                let bus = bus as usize % BUS_DEVICES;
                if !self.m.buses[bus].present {
                    return Ok(false);
                }
                let val = self.m.value();
                let rid = self.m.devres.len();
                let id = self.m.id();
                let r = self
                    .scope(bus, |b| {
                        Devres::new(
                            b,
                            DVal {
                                val: Val::new(val, &log),
                                inner: None,
                            },
                        )
                    })?
                    .ok_or("scope refused")?
                    .map_err(|e| format!("Devres::new: {e:?}"))?;
                self.m.devres.push(DevresM {
                    val,
                    revoked: false,
                    bus,
                    inner: None,
                });
                self.m.buses[bus].registry.push(rid);
                self.m.buses[bus].entries.push((id, Kind::DevresEntry(rid)));
                self.devres.push((bus, rid, r));
            }
            DevresDrop { r } => {
                if self.devres.is_empty() {
                    return Ok(false);
                }
                let (bus, rid, d) = self.devres.remove(r as usize % self.devres.len());
                self.m.revoke(rid);
                let b = &mut self.m.buses[bus];
                b.registry.retain(|x| *x != rid);
                b.entries.retain(|e| e.1 != Kind::DevresEntry(rid));
                drop(d);
            }
            DevresAccess { r } => {
                if self.devres.is_empty() {
                    return Ok(false);
                }
                let (_, rid, d) = &self.devres[r as usize % self.devres.len()];
                let m = &self.m.devres[*rid];
                let got = d.try_access_with(|v| v.val.id());
                let want = (!m.revoked).then_some(m.val);
                check_eq!(got, want, "Devres access (None once revoked)");
                check_eq!(d.is_revoked(), m.revoked, "Devres::is_revoked");
            }
            OpenGroup { bus } => {
                let bus = bus as usize % BUS_DEVICES;
                if !self.m.buses[bus].present {
                    return Ok(false);
                }
                let g = self
                    .scope(bus, |b| b.open_group())?
                    .ok_or("scope refused")?
                    .map_err(|e| format!("open_group: {e:?}"))?;
                let gid = self.m.groups.len();
                self.m.groups.push(false);
                let id = self.m.id();
                self.m.buses[bus]
                    .entries
                    .push((id, Kind::Marker { gid, open: true }));
                self.groups.push((bus, gid, g));
            }
            CloseGroup { g } | ReleaseGroup { g } | RemoveGroup { g } => {
                if self.groups.is_empty() {
                    return Ok(false);
                }
                let i = g as usize % self.groups.len();
                let (bus, gid) = (self.groups[i].0, self.groups[i].1);
                if !self.m.buses[bus].present {
                    drop(self.groups.swap_remove(i));
                    return Ok(false);
                }
                let gone = self.m.marker_pos(bus, gid, true).is_none();
                match op {
                    CloseGroup { .. } => {
                        let want = if gone {
                            Err(Error::NotOnList)
                        } else if self.m.groups[gid] {
                            Err(Error::GroupClosed)
                        } else {
                            Ok(())
                        };
                        let grp = &self.groups[i].2;
                        let r = self
                            .scope(bus, |b| b.close_group(grp))?
                            .ok_or("scope refused")?;
                        check_eq!(r, want, "close_group");
                        if r.is_ok() {
                            self.m.groups[gid] = true;
                            let id = self.m.id();
                            self.m.buses[bus]
                                .entries
                                .push((id, Kind::Marker { gid, open: false }));
                        }
                    }
                    ReleaseGroup { .. } => {
                        let (_, _, grp) = self.groups.swap_remove(i);
                        let want = if gone {
                            Err(Error::NotOnList)
                        } else {
                            let interp = self.interp_refs();
                            Ok(self.m.release_group(bus, gid, &interp))
                        };
                        let r = self
                            .scope(bus, |b| b.release_group(grp))?
                            .ok_or("scope refused")?;
                        check_eq!(r, want, "release_group");
                    }
                    _ => {
                        let (_, _, grp) = self.groups.swap_remove(i);
                        let want = if gone {
                            Err(Error::NotOnList)
                        } else {
                            let b = &mut self.m.buses[bus];
                            b.entries.retain(
                                |e| !matches!(e.1, Kind::Marker { gid: g, .. } if g == gid),
                            );
                            Ok(())
                        };
                        let r = self
                            .scope(bus, |b| b.remove_group(grp))?
                            .ok_or("scope refused")?;
                        check_eq!(r, want, "remove_group");
                    }
                }
            }
            other => unreachable!("not an operation on bus devices: {other:?}"),
        }
        Ok(true)
    }
}
