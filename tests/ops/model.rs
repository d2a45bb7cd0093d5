//! The plain reference model: per logical device and per bus device, the list of entries a
//! correct library holds (ids, oldest first), the bindings, `Devres` values and groups, and
//! the sequence of events (actions run, values dropped) the library must produce. Releases
//! are modelled by popping these lists, so the model's order is the promised order.

use super::Ev;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// An action capturing a value with its own id; `adds` is the id of the action it
    /// registers when it runs (drmm only).
    Action {
        adds: Option<u32>,
    },
    Value,
    Bytes(usize),
    Marker {
        gid: usize,
        open: bool,
    },
    /// The devres action of `Device::new_on` for logical device `slot`.
    DrmInit(usize),
    /// The devres entry of `Devres` number `rid`.
    DevresEntry(usize),
    /// A re-entrant drmm action (`Op::DrmReentrant`): releases entry `target` early when it
    /// runs, then adds value `adds`.
    Reentrant {
        target: Option<u32>,
        adds: u32,
    },
    /// A value whose drop re-enters logical device `dev` (`Op::DrmValueReenters`): releases
    /// entry `target` of it, adds value `adds` to it, drops its reference to it.
    HoldsRef {
        dev: usize,
        target: Option<u32>,
        adds: u32,
    },
}

#[derive(Default)]
pub(super) struct DrmM {
    pub(super) data_id: u32,
    pub(super) entries: Vec<(u32, Kind)>,
    /// References held by a binding (its driver data and its `new_on` action).
    pub(super) binding_refs: usize,
    /// References held by managed values of other devices (`Kind::HoldsRef`).
    pub(super) value_refs: usize,
    /// The binding's driver data holds a reference (reachable through `with_bound`).
    pub(super) in_driver_data: Option<usize>,
    pub(super) released: bool,
    pub(super) unplugged: bool,
    pub(super) registered: bool,
}

pub(super) struct Binding {
    pub(super) remove_id: u32,
    pub(super) tag_id: u32,
    pub(super) drm: usize,
}

pub(super) struct BusM {
    pub(super) entries: Vec<(u32, Kind)>,
    /// `Devres` numbers registered for revocation, oldest first.
    pub(super) registry: Vec<usize>,
    pub(super) bound: Option<Binding>,
    pub(super) present: bool,
}

pub(super) struct DevresM {
    pub(super) val: u32,
    pub(super) revoked: bool,
    pub(super) bus: usize,
    /// The `Devres` its value owns (`Op::DevresNested`).
    pub(super) inner: Option<usize>,
}

#[derive(Default)]
pub(super) struct Model {
    pub(super) expected: Vec<Ev>,
    pub(super) next_id: u32,
    pub(super) created: Vec<u32>,
    pub(super) drms: Vec<DrmM>,
    pub(super) buses: Vec<BusM>,
    pub(super) devres: Vec<DevresM>,
    /// Per group: closed.
    pub(super) groups: Vec<bool>,
    /// Drm files open: slot per file (mirrors `World::files`).
    pub(super) file_slots: Vec<usize>,
    /// The interpreter's references per logical device, as of now (kept by `World`).
    pub(super) interp: Vec<usize>,
}

impl Model {
    pub(super) fn id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }
    pub(super) fn value(&mut self) -> u32 {
        let id = self.id();
        self.created.push(id);
        id
    }

    pub(super) fn refs(&self, slot: usize, interp_refs: usize) -> usize {
        interp_refs
            + self.file_slots.iter().filter(|s| **s == slot).count()
            + self.drms[slot].binding_refs
            + self.drms[slot].value_refs
    }

    /// Releases a drmm entry.
    pub(super) fn release_drm_entry(&mut self, slot: usize, id: u32, kind: Kind) {
        match kind {
            Kind::Action { adds } => {
                self.expected.push(Ev::Run(id));
                if let Some(a) = adds {
                    self.created.push(a);
                    self.drms[slot]
                        .entries
                        .push((a, Kind::Action { adds: None }));
                }
                self.expected.push(Ev::Drop(id));
            }
            Kind::Reentrant { target, adds } => {
                self.expected.push(Ev::Run(id));
                // The target is answered `Ok` and released now iff it is still on the list
                // (an older entry); a newer one was released before this action ran.
                let pos =
                    target.and_then(|t| self.drms[slot].entries.iter().position(|e| e.0 == t));
                if let Some(p) = pos {
                    let (t, k) = self.drms[slot].entries.remove(p);
                    self.release_drm_entry(slot, t, k);
                }
                if target.is_some() {
                    self.expected.push(Ev::Answer(id, pos.is_some()));
                }
                self.created.push(adds);
                self.drms[slot].entries.push((adds, Kind::Value));
                self.expected.push(Ev::Drop(id));
            }
            Kind::HoldsRef { dev, target, adds } => {
                // Its device's entry `target`: still on the list (only the value can release
                // it early, and the device lives while the value holds it).
                if let Some(t) = target {
                    let pos = self.drms[dev].entries.iter().position(|e| e.0 == t);
                    if let Some(p) = pos {
                        let (t, k) = self.drms[dev].entries.remove(p);
                        self.release_drm_entry(dev, t, k);
                    }
                    self.expected.push(Ev::Answer(id, pos.is_some()));
                }
                self.created.push(adds);
                self.drms[dev].entries.push((adds, Kind::Value));
                self.expected.push(Ev::Drop(id));
                self.drms[dev].value_refs -= 1;
                let interp = self.interp.get(dev).copied().unwrap_or(0);
                self.unref(dev, interp);
            }
            Kind::Value => self.expected.push(Ev::Drop(id)),
            Kind::Bytes(_) => {}
            other => unreachable!("not on a drmm list: {other:?}"),
        }
    }

    /// The last reference of logical device `slot` is gone.
    pub(super) fn release_drm(&mut self, slot: usize) {
        self.drms[slot].released = true;
        while let Some((id, kind)) = self.drms[slot].entries.pop() {
            self.release_drm_entry(slot, id, kind);
        }
        let data = self.drms[slot].data_id;
        self.expected.push(Ev::Drop(data));
    }

    /// A reference counted by the model was dropped; `interp_refs` is what the interpreter
    /// still holds.
    pub(super) fn unref(&mut self, slot: usize, interp_refs: usize) {
        if !self.drms[slot].released && self.refs(slot, interp_refs) == 0 {
            self.release_drm(slot);
        }
    }

    /// Revokes `Devres` number `rid`: its value is dropped (with the `Devres` it owns, if
    /// any: dropped after the value's own `Val`, in field order).
    pub(super) fn revoke(&mut self, rid: usize) {
        if !self.devres[rid].revoked {
            self.devres[rid].revoked = true;
            let v = self.devres[rid].val;
            self.expected.push(Ev::Drop(v));
            if let Some(inner) = self.devres[rid].inner {
                self.drop_devres(inner);
            }
        }
    }

    /// A `Devres` is dropped: revoked, then off its binding's registry and devres list.
    pub(super) fn drop_devres(&mut self, rid: usize) {
        self.revoke(rid);
        let b = &mut self.buses[self.devres[rid].bus];
        b.registry.retain(|x| *x != rid);
        b.entries.retain(|e| e.1 != Kind::DevresEntry(rid));
    }

    /// Releases a devres entry.
    pub(super) fn release_devres_entry(&mut self, id: u32, kind: Kind, interp: &[usize]) {
        match kind {
            Kind::Action { .. } => {
                self.expected.push(Ev::Run(id));
                self.expected.push(Ev::Drop(id));
            }
            Kind::Value => self.expected.push(Ev::Drop(id)),
            Kind::Bytes(_) | Kind::Marker { .. } => {}
            Kind::DrmInit(slot) => {
                let d = &mut self.drms[slot];
                d.unplugged = true;
                d.registered = false;
                d.binding_refs -= 1;
                self.unref(slot, interp[slot]);
            }
            Kind::DevresEntry(rid) => self.revoke(rid),
            Kind::Reentrant { .. } | Kind::HoldsRef { .. } => unreachable!("not on a devres list"),
        }
    }

    /// Revokes the registry, then releases the whole devres list (probe failure, removal).
    pub(super) fn release_binding(&mut self, bus: usize, interp: &[usize]) {
        let reg = std::mem::take(&mut self.buses[bus].registry);
        for rid in reg.into_iter().rev() {
            self.revoke(rid);
        }
        while let Some((id, kind)) = self.buses[bus].entries.pop() {
            self.release_devres_entry(id, kind, interp);
        }
    }

    /// `unbind`'s steps after the driver's `remove` logged itself.
    pub(super) fn unbind(&mut self, bus: usize, interp: &[usize]) {
        let b = self.buses[bus].bound.take().expect("bound");
        self.expected.push(Ev::Run(b.remove_id));
        let reg = std::mem::take(&mut self.buses[bus].registry);
        for rid in reg.into_iter().rev() {
            self.revoke(rid);
        }
        self.expected.push(Ev::Drop(b.tag_id));
        let d = &mut self.drms[b.drm];
        d.binding_refs -= 1;
        d.in_driver_data = None;
        self.unref(b.drm, interp[b.drm]);
        while let Some((id, kind)) = self.buses[bus].entries.pop() {
            self.release_devres_entry(id, kind, interp);
        }
    }

    pub(super) fn marker_pos(&self, bus: usize, gid: usize, open: bool) -> Option<usize> {
        self.buses[bus]
            .entries
            .iter()
            .position(|(_, k)| *k == Kind::Marker { gid, open })
    }

    /// `devres_release_group`: returns the number of entries released.
    pub(super) fn release_group(&mut self, bus: usize, gid: usize, interp: &[usize]) -> usize {
        let o = self.marker_pos(bus, gid, true).expect("open marker");
        let entries = &self.buses[bus].entries;
        let end = if self.groups[gid] {
            self.marker_pos(bus, gid, false).expect("close marker")
        } else {
            entries.len() - 1
        };
        let in_range = |p: Option<usize>| p.is_some_and(|p| (o..=end).contains(&p));
        let mut contained = Vec::new();
        for (_, k) in &entries[o..=end] {
            if let Kind::Marker { gid: g, open: true } = *k {
                let close = self.marker_pos(bus, g, false);
                if !self.groups[g] || in_range(close) {
                    contained.push(g);
                }
            }
        }
        let mut kept = Vec::new();
        let mut released = Vec::new();
        for (i, e) in self.buses[bus].entries.drain(..).enumerate() {
            if !(o..=end).contains(&i) {
                kept.push(e);
            } else if let Kind::Marker { gid: g, .. } = e.1 {
                if !contained.contains(&g) {
                    kept.push(e);
                }
            } else {
                released.push(e);
            }
        }
        self.buses[bus].entries = kept;
        let n = released.len();
        for (id, kind) in released.into_iter().rev() {
            self.release_devres_entry(id, kind, interp);
        }
        n
    }
}
