//! The system under test: a bus with [`BUS_DEVICES`] bus devices, the test driver (its probe
//! creates a logical device with `Device::new_on`), what the program holds ([`World`]: devices,
//! handles, files, `Devres` values, groups, next to the model), one step of the interpreter
//! and the teardown. The steps are in `drm.rs`, `bus.rs` and `reentrant.rs`.

use drmm::bus::{Bound, Bus, BusDevice, Devres, Driver};
use drmm::device::File;
use drmm::{ActionHandle, Device, Error, Group, LogicalDevice, Managed};

use super::lang::Op;
use super::model::{BusM, Model};
use super::reentrant::{DVal, ReVal};
use super::{DrmData, Ev, Log, Val, subscribers};

/// Stand-alone plus bound logical devices per program.
pub(super) const MAX_DRMS: usize = 12;
/// Bus devices on the bus.
pub(super) const BUS_DEVICES: usize = 2;

pub(super) enum H {
    Action(ActionHandle),
    Value(Managed<Val>),
    Bytes(Managed<[u8]>),
    ReVal(Managed<ReVal>),
}

pub(super) struct Handle {
    pub(super) owner: usize,
    pub(super) id: u32,
    pub(super) h: H,
}

pub(super) struct DrmW {
    pub(super) refs: Vec<Device<DrmData>>,
}

pub(super) struct DrvData {
    pub(super) tag: Val,
    pub(super) drm: Device<DrmData>,
}

#[derive(Clone, Copy)]
pub(super) struct BindIds {
    pub(super) early: u32,
    pub(super) drmm: u32,
    pub(super) data: u32,
    pub(super) tag: u32,
    pub(super) remove: u32,
}

pub(super) struct TestDriver {
    pub(super) log: Log,
    pub(super) ids: BindIds,
    pub(super) fail: bool,
}

pub(super) fn drm_action(
    log: &Log,
    id: u32,
    adds: Option<u32>,
) -> impl FnOnce(&LogicalDevice<DrmData>) + Send + 'static {
    let log = log.clone();
    let captured = Val::new(id, &log);
    move |d| {
        log.push(Ev::Run(id));
        if let Some(a) = adds {
            let inner = drm_action(&log, a, None);
            let _ = d
                .add_action_named("added during release", inner)
                .expect("adding from a release action");
        }
        drop(captured);
    }
}

pub(super) fn devres_action(log: &Log, id: u32) -> impl FnOnce() + Send + 'static {
    let log = log.clone();
    let captured = Val::new(id, &log);
    move || {
        log.push(Ev::Run(id));
        drop(captured);
    }
}

impl Driver for TestDriver {
    type Data = DrvData;

    fn probe(&self, b: &mut Bound<'_>) -> drmm::Result<DrvData> {
        let _ = b.add_action_named("probe_early", devres_action(&self.log, self.ids.early))?;
        let drm = Device::new_on(b, "drm", DrmData(Val::new(self.ids.data, &self.log)))?;
        let _ = drm.add_action_named("probe_drmm", drm_action(&self.log, self.ids.drmm, None))?;
        if self.fail {
            return Err(Error::probe_failed("injected by the program"));
        }
        drm.register()?;
        Ok(DrvData {
            tag: Val::new(self.ids.tag, &self.log),
            drm,
        })
    }

    fn remove(&self, b: &mut Bound<'_>, data: &DrvData) {
        let _ = data.drm.data().0.id();
        assert!(b.driver_data::<DrvData>().is_none());
        self.log.push(Ev::Run(self.ids.remove));
    }
}

pub(super) struct World {
    pub(super) log: Log,
    pub(super) m: Model,
    pub(super) bus: Option<Bus>,
    pub(super) busdevs: Vec<BusDevice>,
    pub(super) drms: Vec<DrmW>,
    pub(super) files: Vec<File<DrmData, Val>>,
    pub(super) drm_handles: Vec<Handle>,
    pub(super) devres_handles: Vec<Handle>,
    pub(super) devres: Vec<(usize, usize, Devres<DVal>)>,
    pub(super) groups: Vec<(usize, usize, Group)>,
    /// The re-entering subscriber's probe of this program's devices (a no-op otherwise).
    pub(super) reentry: Option<subscribers::ReentryGuard>,
    /// Panics of the panicking subscriber that surfaced from an operation.
    pub(super) subscriber_panics: usize,
}

impl World {
    pub(super) fn new() -> Self {
        let bus = Bus::new("model");
        let busdevs: Vec<_> = (0..BUS_DEVICES)
            .map(|i| bus.add_device(format!("bd{i}")))
            .collect();
        let mut m = Model::default();
        for _ in 0..BUS_DEVICES {
            m.buses.push(BusM {
                entries: Vec::new(),
                registry: Vec::new(),
                bound: None,
                present: true,
            });
        }
        // Reads every bus device and the logical device its driver data holds: what a
        // subscriber that inspects the system from its callback would do.
        let probed = busdevs.clone();
        let reentry = subscribers::reenter_with(move || {
            for bd in &probed {
                let _ = bd.resource_count();
                let _ = bd.snapshot();
                let _ = bd.is_bound();
                let _ = bd.with_bound(|b| {
                    b.driver_data::<DrvData>().map(|d| {
                        let _ = d.drm.resource_count();
                        let _ = d.drm.snapshot();
                        let _ = (d.drm.is_unplugged(), d.drm.is_registered());
                    })
                });
            }
        });
        World {
            reentry: Some(reentry),
            subscriber_panics: 0,
            log: Log::default(),
            m,
            bus: Some(bus),
            busdevs,
            drms: Vec::new(),
            files: Vec::new(),
            drm_handles: Vec::new(),
            devres_handles: Vec::new(),
            devres: Vec::new(),
            groups: Vec::new(),
        }
    }

    pub(super) fn interp_refs(&self) -> Vec<usize> {
        self.drms.iter().map(|d| d.refs.len()).collect()
    }

    /// A reference to logical device `slot`, if the program can reach one.
    pub(super) fn dev(&self, slot: usize) -> Option<Device<DrmData>> {
        if self.m.drms[slot].released {
            return None;
        }
        if let Some(d) = self.drms[slot].refs.first() {
            return Some(d.clone());
        }
        for (f, s) in self.files.iter().zip(&self.m.file_slots) {
            if *s == slot {
                return Some(f.device().clone());
            }
        }
        let bus = self.m.drms[slot].in_driver_data?;
        self.busdevs[bus]
            .with_bound(|b| b.driver_data::<DrvData>().map(|d| d.drm.clone()))
            .ok()
            .flatten()
    }

    pub(super) fn pick_dev(&self, i: u8) -> Option<(usize, Device<DrmData>)> {
        let n = self.drms.len();
        if n == 0 {
            return None;
        }
        // The first reachable device at or after the index.
        (0..n)
            .map(|k| (i as usize + k) % n)
            .find_map(|s| self.dev(s).map(|d| (s, d)))
    }

    /// Runs `f` in bus device `bus`'s scope (`with_bound` if bound, else `with_driverless`),
    /// checking the scope error against the model; `None` if the device was removed.
    pub(super) fn scope<R>(
        &self,
        bus: usize,
        f: impl FnOnce(&mut Bound<'_>) -> R,
    ) -> Result<Option<R>, String> {
        scope_in(&self.m.buses[bus], &self.busdevs[bus], bus, f)
    }

    /// [`step`](Self::step), tolerating the panicking subscriber: its panic may surface from
    /// any operation that emits a release-direction event, and changes nothing else (the
    /// model already holds the operation's effects when the library is called, so the
    /// comparison after the step checks that the interrupted operation still completed).
    pub(super) fn step_caught(&mut self, op: Op) -> Result<bool, String> {
        self.m.interp = self.interp_refs();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step(op))) {
            Ok(r) => r,
            Err(p) if subscribers::is_subscriber_panic(&*p) => {
                self.subscriber_panics += 1;
                Ok(true)
            }
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// Executes one operation (its kind's step is in `drm.rs`, `bus.rs` or `reentrant.rs`);
    /// `false` if it had nothing to act on.
    fn step(&mut self, op: Op) -> Result<bool, String> {
        use Op::*;
        match op {
            NewDevice
            | DrmAddAction { .. }
            | DrmAddOrReset { .. }
            | DrmAlloc { .. }
            | DrmKzalloc { .. }
            | DrmBadAlloc { .. }
            | DrmFree { .. }
            | DrmRemove { .. }
            | DrmForeign { .. }
            | DrmRead { .. }
            | CloneRef { .. }
            | DropRef { .. }
            | Register { .. }
            | Unplug { .. }
            | Enter { .. }
            | Open { .. }
            | Close { .. }
            | FileUse { .. } => self.step_drm(op),
            Bind { .. }
            | Unbind { .. }
            | RemoveBus { .. }
            | DevresAction { .. }
            | DevresAlloc { .. }
            | DevresKzalloc { .. }
            | DevresFree { .. }
            | DevresRemove { .. }
            | DevresRead { .. }
            | DevresRealloc { .. }
            | DevresNew { .. }
            | DevresDrop { .. }
            | DevresAccess { .. }
            | OpenGroup { .. }
            | CloseGroup { .. }
            | ReleaseGroup { .. }
            | RemoveGroup { .. } => self.step_bus(op),
            DrmReentrant { .. } | DevresNested { .. } | DrmValueReenters { .. } => {
                self.step_reentrant(op)
            }
        }
    }

    /// Drops everything the program holds, through the same operations, then the bus.
    pub(super) fn teardown(&mut self) -> Result<(), String> {
        while !self.devres.is_empty() {
            self.step_caught(Op::DevresDrop { r: 0 })?;
            self.compare()?;
        }
        while !self.files.is_empty() {
            self.step_caught(Op::Close { f: 0 })?;
            self.compare()?;
        }
        while self.drms.iter().any(|d| !d.refs.is_empty()) {
            self.step_caught(Op::DropRef { dev: 0 })?;
            self.compare()?;
        }
        for bus in 0..BUS_DEVICES {
            if self.m.buses[bus].present {
                self.step_caught(Op::RemoveBus { bus: bus as u8 })?;
                self.compare()?;
            }
        }
        self.drm_handles.clear();
        self.devres_handles.clear();
        self.groups.clear();
        self.reentry = None;
        // The bus, then the last references of its devices (their final release runs here).
        let bus = self.bus.take();
        let busdevs = std::mem::take(&mut self.busdevs);
        for last in [
            Box::new(move || drop(bus)) as Box<dyn FnOnce()>,
            Box::new(move || drop(busdevs)),
        ] {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(last)) {
                Ok(()) => {}
                Err(p) if subscribers::is_subscriber_panic(&*p) => self.subscriber_panics += 1,
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        Ok(())
    }
}

/// See [`World::scope`].
pub(super) fn scope_in<R>(
    b: &BusM,
    d: &BusDevice,
    bus: usize,
    f: impl FnOnce(&mut Bound<'_>) -> R,
) -> Result<Option<R>, String> {
    let r = if b.bound.is_some() {
        d.with_bound(f)
    } else {
        d.with_driverless(f)
    };
    match r {
        Ok(v) => {
            check!(b.present, "scope entered on a removed device");
            Ok(Some(v))
        }
        Err(e) => {
            check!(
                !b.present && e == Error::Removed,
                "scope of bus {bus}: unexpected {e:?}"
            );
            Ok(None)
        }
    }
}
