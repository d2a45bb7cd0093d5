//! The operation language shared by the model-based property test (`tests/model_system.rs`),
//! the fuzz target (`fuzz/fuzz_targets/ops.rs`) and the corpus replay (`tests/fuzz_corpus.rs`).
//!
//! A program is a list of [`Op`]s on a small system: two bus devices on a bus (bound to a test
//! driver whose probe creates a logical device with `Device::new_on`, or used driver-less),
//! stand-alone logical devices, drmm and devres entries, devres groups, `Devres<T>` values,
//! open files, the unplug gate and references. [`run`] executes a program against the library
//! and against a plain reference model, and after every step compares the complete sequence
//! of observable events (actions run, values dropped) with the model's. That single
//! comparison checks the promises of docs/architecture.md ("Promises"):
//!
//! * order (1): entries are released newest first, including those added during release;
//! * onion (2): a logical device's data is dropped after its drmm entries; at unbind, `remove`
//!   runs first, then revocation, then the driver data is dropped, then the devres list;
//! * exactly once (3): every value is dropped once and every action runs at most once (a
//!   removed action's captured state is dropped without running);
//! * hot-unplug (8) and revocation: entering the gate and opening fail after unplug, a
//!   `Devres` is unreachable after its binding ended, open files keep drmm state valid;
//! * bad input (6): foreign handles, stale handles, bad sizes give the documented errors;
//! * nothing leaked: at the end every value created was dropped exactly once, and the
//!   thread's live heap bytes are back where they started (counting allocator).
//!
//! Bytes decode to programs 3 bytes per operation ([`decode`]), so the fuzzer and the property
//! test speak the same language and any failing input is a replayable file.
#![allow(dead_code, unreachable_pub, clippy::too_many_lines)]

pub mod alloc;
mod reentrant;
#[path = "../common/subscribers.rs"]
pub mod subscribers;

use std::sync::{Arc, Mutex};

use drmm::bus::{Bound, Bus, BusDevice, Devres, Driver};
use drmm::device::File;
use drmm::{ActionHandle, Device, Error, Group, LogicalDevice, Managed};
use reentrant::{DVal, ReVal, Target, reentrant_action};

/// Longest program executed (longer inputs are truncated).
pub const MAX_OPS: usize = 400;
/// Stand-alone plus bound logical devices per program.
const MAX_DRMS: usize = 12;
/// Bus devices on the bus.
const BUS_DEVICES: usize = 2;

/// What can be observed from outside: an action ran, a value was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ev {
    Run(u32),
    Drop(u32),
    /// What a re-entrant action's early release of another entry answered (`true`: `Ok`).
    Answer(u32, bool),
}

/// The shared event log.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Ev>>>);

impl Log {
    fn push(&self, e: Ev) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(e);
    }
    fn snapshot(&self) -> Vec<Ev> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

const MAGIC: u64 = 0x5eed_d00d_cafe_f00d;

/// A value whose drop is logged; checks it was not dropped before.
pub struct Val {
    id: u32,
    magic: u64,
    log: Log,
}

impl Val {
    fn new(id: u32, log: &Log) -> Self {
        Val {
            id,
            magic: MAGIC,
            log: log.clone(),
        }
    }
    fn id(&self) -> u32 {
        assert_eq!(self.magic, MAGIC, "value {} read after drop", self.id);
        self.id
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        assert_eq!(self.magic, MAGIC, "value {} dropped twice", self.id);
        self.magic = 0;
        self.log.push(Ev::Drop(self.id));
    }
}

/// Driver data of the logical devices.
pub struct DrmData(Val);

// ----- the language ------------------------------------------------------------------------

/// One operation. Indices (`dev`, `h`, `f`, `bus`, `r`, `g`) pick among what exists, modulo
/// its count; an operation with nothing to act on is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    NewDevice,
    DrmAddAction {
        dev: u8,
        adds: bool,
    },
    DrmAddOrReset {
        dev: u8,
    },
    DrmAlloc {
        dev: u8,
    },
    DrmKzalloc {
        dev: u8,
        len: u8,
    },
    DrmBadAlloc {
        dev: u8,
        which: u8,
    },
    DrmFree {
        h: u8,
    },
    DrmRemove {
        h: u8,
    },
    DrmForeign {
        h: u8,
        dev: u8,
    },
    DrmRead {
        h: u8,
    },
    CloneRef {
        dev: u8,
    },
    DropRef {
        dev: u8,
    },
    Register {
        dev: u8,
    },
    Unplug {
        dev: u8,
    },
    Enter {
        dev: u8,
    },
    Open {
        dev: u8,
    },
    Close {
        f: u8,
    },
    FileUse {
        f: u8,
    },
    Bind {
        bus: u8,
        fail: bool,
    },
    Unbind {
        bus: u8,
    },
    RemoveBus {
        bus: u8,
    },
    DevresAction {
        bus: u8,
    },
    DevresAlloc {
        bus: u8,
    },
    DevresKzalloc {
        bus: u8,
        len: u8,
    },
    DevresFree {
        h: u8,
    },
    DevresRemove {
        h: u8,
    },
    DevresRead {
        h: u8,
    },
    DevresRealloc {
        h: u8,
        len: u8,
    },
    DevresNew {
        bus: u8,
    },
    DevresDrop {
        r: u8,
    },
    DevresAccess {
        r: u8,
    },
    OpenGroup {
        bus: u8,
    },
    CloseGroup {
        g: u8,
    },
    ReleaseGroup {
        g: u8,
    },
    RemoveGroup {
        g: u8,
    },
    /// A drmm action that re-enters its own device when it runs: releases another entry of
    /// the device early through the handle it owns (`kfree`/`drmm_release_action`, answer
    /// logged), then adds a value entry.
    DrmReentrant {
        dev: u8,
        h: u8,
    },
    /// A `Devres` whose value owns another `Devres` of the same binding.
    DevresNested {
        bus: u8,
    },
    /// A drmm-managed value whose `Drop` re-enters another logical device (an older one, so
    /// references never form a cycle): releases an entry of it early through the handle it
    /// owns, adds a value to it, then drops its reference to it (maybe the last one, so that
    /// device's release runs inside this value's drop).
    DrmValueReenters {
        dev: u8,
        other: u8,
    },
}

/// Number of operation kinds (the tag byte is taken modulo this).
pub const OP_KINDS: u8 = 38;

impl Op {
    /// Decodes one operation from a tag byte and two argument bytes.
    pub fn decode(tag: u8, a: u8, b: u8) -> Op {
        use Op::*;
        match tag % OP_KINDS {
            0 => NewDevice,
            1 => DrmAddAction {
                dev: a,
                adds: b & 1 == 1,
            },
            2 => DrmAddOrReset { dev: a },
            3 => DrmAlloc { dev: a },
            4 => DrmKzalloc { dev: a, len: b },
            5 => DrmBadAlloc { dev: a, which: b },
            6 => DrmFree { h: a },
            7 => DrmRemove { h: a },
            8 => DrmForeign { h: a, dev: b },
            9 => DrmRead { h: a },
            10 => CloneRef { dev: a },
            11 => DropRef { dev: a },
            12 => Register { dev: a },
            13 => Unplug { dev: a },
            14 => Enter { dev: a },
            15 => Open { dev: a },
            16 => Close { f: a },
            17 => FileUse { f: a },
            18 => Bind {
                bus: a,
                fail: b & 1 == 1,
            },
            19 => Unbind { bus: a },
            20 => RemoveBus { bus: a },
            21 => DevresAction { bus: a },
            22 => DevresAlloc { bus: a },
            23 => DevresKzalloc { bus: a, len: b },
            24 => DevresFree { h: a },
            25 => DevresRemove { h: a },
            26 => DevresRead { h: a },
            27 => DevresRealloc { h: a, len: b },
            28 => DevresNew { bus: a },
            29 => DevresDrop { r: a },
            30 => DevresAccess { r: a },
            31 => OpenGroup { bus: a },
            32 => CloseGroup { g: a },
            33 => ReleaseGroup { g: a },
            34 => RemoveGroup { g: a },
            35 => DrmReentrant { dev: a, h: b },
            36 => DevresNested { bus: a },
            _ => DrmValueReenters { dev: a, other: b },
        }
    }

    /// The three bytes that decode to this operation.
    pub fn encode(self) -> [u8; 3] {
        use Op::*;
        match self {
            NewDevice => [0, 0, 0],
            DrmAddAction { dev, adds } => [1, dev, adds as u8],
            DrmAddOrReset { dev } => [2, dev, 0],
            DrmAlloc { dev } => [3, dev, 0],
            DrmKzalloc { dev, len } => [4, dev, len],
            DrmBadAlloc { dev, which } => [5, dev, which],
            DrmFree { h } => [6, h, 0],
            DrmRemove { h } => [7, h, 0],
            DrmForeign { h, dev } => [8, h, dev],
            DrmRead { h } => [9, h, 0],
            CloneRef { dev } => [10, dev, 0],
            DropRef { dev } => [11, dev, 0],
            Register { dev } => [12, dev, 0],
            Unplug { dev } => [13, dev, 0],
            Enter { dev } => [14, dev, 0],
            Open { dev } => [15, dev, 0],
            Close { f } => [16, f, 0],
            FileUse { f } => [17, f, 0],
            Bind { bus, fail } => [18, bus, fail as u8],
            Unbind { bus } => [19, bus, 0],
            RemoveBus { bus } => [20, bus, 0],
            DevresAction { bus } => [21, bus, 0],
            DevresAlloc { bus } => [22, bus, 0],
            DevresKzalloc { bus, len } => [23, bus, len],
            DevresFree { h } => [24, h, 0],
            DevresRemove { h } => [25, h, 0],
            DevresRead { h } => [26, h, 0],
            DevresRealloc { h, len } => [27, h, len],
            DevresNew { bus } => [28, bus, 0],
            DevresDrop { r } => [29, r, 0],
            DevresAccess { r } => [30, r, 0],
            OpenGroup { bus } => [31, bus, 0],
            CloseGroup { g } => [32, g, 0],
            ReleaseGroup { g } => [33, g, 0],
            RemoveGroup { g } => [34, g, 0],
            DrmReentrant { dev, h } => [35, dev, h],
            DevresNested { bus } => [36, bus, 0],
            DrmValueReenters { dev, other } => [37, dev, other],
        }
    }
}

/// Decodes a byte string: 3 bytes per operation, a trailing partial operation ignored, at
/// most [`MAX_OPS`] operations.
pub fn decode(bytes: &[u8]) -> Vec<Op> {
    bytes
        .chunks_exact(3)
        .take(MAX_OPS)
        .map(|c| Op::decode(c[0], c[1], c[2]))
        .collect()
}

/// Encodes a program (the inverse of [`decode`]).
pub fn encode(ops: &[Op]) -> Vec<u8> {
    ops.iter().flat_map(|op| op.encode()).collect()
}

/// What a run did, for the figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub ops: usize,
    pub skipped: usize,
    pub events: usize,
    pub values: usize,
    /// Panics of the panicking subscriber that surfaced from operations.
    pub subscriber_panics: usize,
}

/// [`run`] under a subscriber variant; also fails on what the recording subscriber saw.
///
/// # Errors
///
/// As for [`run`], or the recording subscriber's first violation.
pub fn run_in(variant: subscribers::Variant, ops: &[Op]) -> Result<Stats, String> {
    run_under(variant.name(), |f| variant.run(f), ops)
}

/// [`run`] under a subscriber that panics on every event of the operations `sites`.
///
/// # Errors
///
/// As for [`run`].
pub fn run_panicking_on(sites: &'static [&'static str], ops: &[Op]) -> Result<Stats, String> {
    run_under("panic", |f| subscribers::panicking_on(sites, f), ops)
}

type RunResult = Result<Stats, String>;

fn run_under(
    name: &str,
    with: impl FnOnce(Box<dyn FnOnce() -> RunResult + '_>) -> RunResult,
    ops: &[Op],
) -> RunResult {
    let _ = subscribers::take_violation();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| with(Box::new(|| run(ops)))))
        .unwrap_or_else(|p| {
            if subscribers::is_subscriber_panic(&*p) {
                Err(
                    "a panic of the subscriber surfaced outside the operation that emitted its \
                 event (DRMM_TEST_PANIC_LOUD=1 RUST_BACKTRACE=1 shows where)"
                        .to_string(),
                )
            } else {
                std::panic::resume_unwind(p)
            }
        });
    // A divergence from the model says more than what the subscriber saw.
    match (r, subscribers::take_violation()) {
        (Err(e), _) => Err(e),
        (Ok(_), Some(v)) => Err(format!("{name} subscriber saw: {v}")),
        (Ok(s), None) => Ok(s),
    }
}

/// Runs `ops` (then a teardown that drops everything) against the library and the model.
///
/// # Errors
///
/// A description of the first divergence from the model, or of a leak.
pub fn run(ops: &[Op]) -> Result<Stats, String> {
    let before = alloc::live_bytes();
    let stats = run_inner(ops)?;
    let after = alloc::live_bytes();
    if after != before {
        // The first run on a thread may initialise thread-locals and lazy statics of the
        // library (grace-period shards); only a second run of the same program proves a leak.
        let before = alloc::live_bytes();
        run_inner(ops)?;
        let after = alloc::live_bytes();
        if after != before {
            return Err(format!(
                "leak: {} bytes still allocated after the program and its teardown",
                after - before
            ));
        }
    }
    Ok(stats)
}

/// [`run`] on a byte string.
///
/// # Errors
///
/// As for [`run`].
pub fn run_bytes(bytes: &[u8]) -> Result<Stats, String> {
    run(&decode(bytes))
}

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

macro_rules! check_eq {
    ($a:expr, $b:expr, $($fmt:tt)+) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err(format!("{}: {:?} != {:?}", format!($($fmt)+), a, b));
        }
    }};
}

fn run_inner(ops: &[Op]) -> Result<Stats, String> {
    let mut w = World::new();
    let r = run_world(&mut w, ops);
    if r.is_err() {
        // Whatever a divergent program left behind is dropped here; a subscriber panic (or a
        // check) failing in that drop must not hide the divergence.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(w)));
    }
    r
}

fn run_world(w: &mut World, ops: &[Op]) -> Result<Stats, String> {
    let mut stats = Stats::default();
    for (step, op) in ops.iter().enumerate() {
        let done = w
            .step_caught(*op)
            .map_err(|e| format!("step {step} {op:?}: {e}"))?;
        w.compare()
            .map_err(|e| format!("step {step} {op:?}: {e}"))?;
        stats.ops += 1;
        if !done {
            stats.skipped += 1;
        }
    }
    w.teardown().map_err(|e| format!("teardown: {e}"))?;
    stats.events = w.log.len();
    stats.subscriber_panics = w.subscriber_panics;
    stats.values = w.m.created.len();
    w.final_checks()?;
    Ok(stats)
}

// ----- the model ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
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
struct DrmM {
    data_id: u32,
    entries: Vec<(u32, Kind)>,
    /// References held by a binding (its driver data and its `new_on` action).
    binding_refs: usize,
    /// References held by managed values of other devices (`Kind::HoldsRef`).
    value_refs: usize,
    /// The binding's driver data holds a reference (reachable through `with_bound`).
    in_driver_data: Option<usize>,
    released: bool,
    unplugged: bool,
    registered: bool,
}

struct Binding {
    remove_id: u32,
    tag_id: u32,
    drm: usize,
}

struct BusM {
    entries: Vec<(u32, Kind)>,
    /// `Devres` numbers registered for revocation, oldest first.
    registry: Vec<usize>,
    bound: Option<Binding>,
    present: bool,
}

struct DevresM {
    val: u32,
    revoked: bool,
    bus: usize,
    /// The `Devres` its value owns (`Op::DevresNested`).
    inner: Option<usize>,
}

#[derive(Default)]
struct Model {
    expected: Vec<Ev>,
    next_id: u32,
    created: Vec<u32>,
    drms: Vec<DrmM>,
    buses: Vec<BusM>,
    devres: Vec<DevresM>,
    /// Per group: closed.
    groups: Vec<bool>,
    /// Drm files open: slot per file (mirrors `World::files`).
    file_slots: Vec<usize>,
    /// The interpreter's references per logical device, as of now (kept by `World`).
    interp: Vec<usize>,
}

impl Model {
    fn id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }
    fn value(&mut self) -> u32 {
        let id = self.id();
        self.created.push(id);
        id
    }

    fn refs(&self, slot: usize, interp_refs: usize) -> usize {
        interp_refs
            + self.file_slots.iter().filter(|s| **s == slot).count()
            + self.drms[slot].binding_refs
            + self.drms[slot].value_refs
    }

    /// Releases a drmm entry.
    fn release_drm_entry(&mut self, slot: usize, id: u32, kind: Kind) {
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
    fn release_drm(&mut self, slot: usize) {
        self.drms[slot].released = true;
        while let Some((id, kind)) = self.drms[slot].entries.pop() {
            self.release_drm_entry(slot, id, kind);
        }
        let data = self.drms[slot].data_id;
        self.expected.push(Ev::Drop(data));
    }

    /// A reference counted by the model was dropped; `interp_refs` is what the interpreter
    /// still holds.
    fn unref(&mut self, slot: usize, interp_refs: usize) {
        if !self.drms[slot].released && self.refs(slot, interp_refs) == 0 {
            self.release_drm(slot);
        }
    }

    /// Revokes `Devres` number `rid`: its value is dropped (with the `Devres` it owns, if
    /// any: dropped after the value's own `Val`, in field order).
    fn revoke(&mut self, rid: usize) {
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
    fn drop_devres(&mut self, rid: usize) {
        self.revoke(rid);
        let b = &mut self.buses[self.devres[rid].bus];
        b.registry.retain(|x| *x != rid);
        b.entries.retain(|e| e.1 != Kind::DevresEntry(rid));
    }

    /// Releases a devres entry.
    fn release_devres_entry(&mut self, id: u32, kind: Kind, interp: &[usize]) {
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
    fn release_binding(&mut self, bus: usize, interp: &[usize]) {
        let reg = std::mem::take(&mut self.buses[bus].registry);
        for rid in reg.into_iter().rev() {
            self.revoke(rid);
        }
        while let Some((id, kind)) = self.buses[bus].entries.pop() {
            self.release_devres_entry(id, kind, interp);
        }
    }

    /// `unbind`'s steps after the driver's `remove` logged itself.
    fn unbind(&mut self, bus: usize, interp: &[usize]) {
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

    fn marker_pos(&self, bus: usize, gid: usize, open: bool) -> Option<usize> {
        self.buses[bus]
            .entries
            .iter()
            .position(|(_, k)| *k == Kind::Marker { gid, open })
    }

    /// `devres_release_group`: returns the number of entries released.
    fn release_group(&mut self, bus: usize, gid: usize, interp: &[usize]) -> usize {
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

// ----- the system under test ---------------------------------------------------------------

enum H {
    Action(ActionHandle),
    Value(Managed<Val>),
    Bytes(Managed<[u8]>),
    ReVal(Managed<ReVal>),
}

struct Handle {
    owner: usize,
    id: u32,
    h: H,
}

struct DrmW {
    refs: Vec<Device<DrmData>>,
}

struct DrvData {
    tag: Val,
    drm: Device<DrmData>,
}

#[derive(Clone, Copy)]
struct BindIds {
    early: u32,
    drmm: u32,
    data: u32,
    tag: u32,
    remove: u32,
}

struct TestDriver {
    log: Log,
    ids: BindIds,
    fail: bool,
}

fn drm_action(
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

fn devres_action(log: &Log, id: u32) -> impl FnOnce() + Send + 'static {
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

struct World {
    log: Log,
    m: Model,
    bus: Option<Bus>,
    busdevs: Vec<BusDevice>,
    drms: Vec<DrmW>,
    files: Vec<File<DrmData, Val>>,
    drm_handles: Vec<Handle>,
    devres_handles: Vec<Handle>,
    devres: Vec<(usize, usize, Devres<DVal>)>,
    groups: Vec<(usize, usize, Group)>,
    /// The re-entering subscriber's probe of this program's devices (a no-op otherwise).
    reentry: Option<subscribers::ReentryGuard>,
    /// Panics of the panicking subscriber that surfaced from an operation.
    subscriber_panics: usize,
}

impl World {
    fn new() -> Self {
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

    fn interp_refs(&self) -> Vec<usize> {
        self.drms.iter().map(|d| d.refs.len()).collect()
    }

    fn compare(&self) -> Result<(), String> {
        let got = self.log.snapshot();
        if got != self.m.expected {
            let common = got
                .iter()
                .zip(&self.m.expected)
                .take_while(|(a, b)| a == b)
                .count();
            return Err(format!(
                "events diverge from the model after {common} events: got {:?}, expected {:?}",
                &got[common..],
                &self.m.expected[common..]
            ));
        }
        for (slot, d) in self.m.drms.iter().enumerate() {
            if d.released {
                continue;
            }
            if let Some(dev) = self.dev(slot) {
                check_eq!(
                    dev.resource_count(),
                    d.entries.len(),
                    "drm {slot}: live entries"
                );
                check_eq!(dev.is_unplugged(), d.unplugged, "drm {slot}: unplugged");
                check_eq!(dev.is_registered(), d.registered, "drm {slot}: registered");
                let snap = dev.snapshot();
                check!(
                    snap.windows(2).all(|w| w[0].seq() > w[1].seq()),
                    "drm {slot}: snapshot not newest first"
                );
            }
        }
        for (i, b) in self.m.buses.iter().enumerate() {
            let bd = &self.busdevs[i];
            check_eq!(
                bd.resource_count(),
                b.entries.len(),
                "bus {i}: live entries"
            );
            check_eq!(bd.is_bound(), b.bound.is_some(), "bus {i}: bound");
            check_eq!(bd.is_present(), b.present, "bus {i}: present");
            if let Some(bus) = &self.bus {
                check_eq!(
                    bus.find(bd.name()).is_some(),
                    b.present,
                    "bus {i}: listed on its bus"
                );
            }
        }
        Ok(())
    }

    /// A reference to logical device `slot`, if the program can reach one.
    fn dev(&self, slot: usize) -> Option<Device<DrmData>> {
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

    fn pick_dev(&self, i: u8) -> Option<(usize, Device<DrmData>)> {
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
    fn scope<R>(
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
    fn step_caught(&mut self, op: Op) -> Result<bool, String> {
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

    /// Executes one operation; `false` if it had nothing to act on.
    fn step(&mut self, op: Op) -> Result<bool, String> {
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
        }
        Ok(true)
    }

    /// Drops everything the program holds, through the same operations, then the bus.
    fn teardown(&mut self) -> Result<(), String> {
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

    fn final_checks(&self) -> Result<(), String> {
        let got = self.log.snapshot();
        check_eq!(got, self.m.expected, "events after teardown");
        for (slot, d) in self.m.drms.iter().enumerate() {
            check!(d.released, "logical device {slot} never released");
        }
        let mut drops: Vec<u32> = got
            .iter()
            .filter_map(|e| match e {
                Ev::Drop(id) => Some(*id),
                Ev::Run(_) | Ev::Answer(..) => None,
            })
            .collect();
        drops.sort_unstable();
        let mut created = self.m.created.clone();
        created.sort_unstable();
        check_eq!(drops, created, "every value dropped exactly once");
        Ok(())
    }
}

/// See [`World::scope`].
fn scope_in<R>(
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

fn h_odd(op: Op) -> bool {
    matches!(op, Op::DrmReentrant { h, .. } if h & 1 == 1)
}

fn adds_of(op: Op) -> bool {
    matches!(op, Op::DrmAddAction { adds: true, .. })
}

/// A few hand-written programs that reach the interesting paths (the seed corpus).
pub fn seed_programs() -> Vec<Vec<Op>> {
    use Op::*;
    vec![
        // Re-entrant actions: one releasing an older entry, one a newer value (which a full
        // release frees first: the action's early release answers `NotOnList`), one released
        // early; a Devres owning another, dropped by hand (one left for the unbind: see
        // `nested_devres_left_for_the_unbind`).
        vec![
            NewDevice,
            DrmAlloc { dev: 0 },
            DrmReentrant { dev: 0, h: 0 },
            DrmReentrant { dev: 0, h: 1 },
            DrmKzalloc { dev: 0, len: 2 },
            DrmReentrant { dev: 0, h: 2 },
            DrmFree { h: 2 },
            Bind {
                bus: 0,
                fail: false,
            },
            DevresNested { bus: 0 },
            DevresAccess { r: 0 },
            DevresDrop { r: 0 },
            DrmReentrant { dev: 1, h: 1 },
            Unbind { bus: 0 },
            DevresAccess { r: 0 },
            DropRef { dev: 0 },
        ],
        // A value whose drop re-enters an older device: it frees that device's value, adds
        // one, and drops the device's last reference (the device's release runs inside the
        // value's drop, itself inside the release of the value's own device).
        vec![
            NewDevice,
            NewDevice,
            DrmAlloc { dev: 0 },
            DrmValueReenters { dev: 1, other: 0 },
            DrmKzalloc { dev: 0, len: 1 },
            DrmValueReenters { dev: 1, other: 0 },
            DrmRead { h: 1 },
            DropRef { dev: 0 },
            DrmFree { h: 1 },
            DropRef { dev: 0 },
        ],
        // drmm basics, adds during release, early free, foreign handle.
        vec![
            NewDevice,
            NewDevice,
            DrmAddAction { dev: 0, adds: true },
            DrmAlloc { dev: 0 },
            DrmKzalloc { dev: 0, len: 7 },
            DrmRead { h: 1 },
            DrmFree { h: 1 },
            DrmForeign { h: 0, dev: 1 },
            DrmAddOrReset { dev: 1 },
            DrmRemove { h: 1 },
            DrmBadAlloc { dev: 0, which: 1 },
            DropRef { dev: 0 },
        ],
        // Bind, open a file, unplug by unbinding with the file open, last close releases.
        vec![
            Bind {
                bus: 0,
                fail: false,
            },
            DevresAlloc { bus: 0 },
            DevresNew { bus: 0 },
            CloneRef { dev: 0 },
            Open { dev: 0 },
            DrmAlloc { dev: 0 },
            DropRef { dev: 0 },
            Unbind { bus: 0 },
            DevresAccess { r: 0 },
            FileUse { f: 0 },
            Enter { dev: 0 },
            Close { f: 0 },
        ],
        // Groups, nested and overlapping, released and removed.
        vec![
            OpenGroup { bus: 1 },
            DevresAction { bus: 1 },
            OpenGroup { bus: 1 },
            DevresKzalloc { bus: 1, len: 9 },
            CloseGroup { g: 0 },
            DevresAlloc { bus: 1 },
            CloseGroup { g: 1 },
            ReleaseGroup { g: 0 },
            CloseGroup { g: 0 },
            RemoveGroup { g: 0 },
            DevresRead { h: 0 },
            RemoveBus { bus: 1 },
        ],
        // Failing probe over driver-less leftovers, then a bind inside an open group.
        vec![
            DevresAction { bus: 0 },
            Bind { bus: 0, fail: true },
            OpenGroup { bus: 0 },
            Bind {
                bus: 0,
                fail: false,
            },
            DevresKzalloc { bus: 0, len: 3 },
            DevresRealloc { h: 0, len: 40 },
            ReleaseGroup { g: 0 },
            Register { dev: 0 },
            Unplug { dev: 0 },
            Open { dev: 0 },
            Unbind { bus: 0 },
            Bind {
                bus: 0,
                fail: false,
            },
            RemoveBus { bus: 0 },
            Bind {
                bus: 0,
                fail: false,
            },
        ],
    ]
}
