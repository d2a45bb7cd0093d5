//! The analysis of a trace: every device's lifetime, every entry's lifetime, and the problems
//! of the schema's list.
//!
//! One pass over the events in file order. An `REPLACE` (a resized allocation) keeps its entry
//! alive under the same id; only `DEL`, `REL` and `REM` end an entry.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::parse::{Event, List, Op, Trace, location};

/// When something happened: its timestamp and its line in the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Moment {
    pub(crate) t: u64,
    pub(crate) line: usize,
}

/// What a device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DevKind {
    /// A drm_device-like device, owner of a drmm list.
    Logical,
    /// A struct device-like device, owner of a devres list.
    Bus,
    /// Seen only through entry events.
    Unknown,
}

/// One device and the moments of its life.
#[derive(Debug, Clone)]
pub(crate) struct Device {
    pub(crate) id: u64,
    pub(crate) name: Option<String>,
    pub(crate) kind: DevKind,
    /// Where `CREATE` / `DEVICE_ADD` was called, when the trace says.
    pub(crate) origin: Option<String>,
    pub(crate) created: Option<Moment>,
    pub(crate) registered: Option<Moment>,
    pub(crate) unregistered: Option<Moment>,
    pub(crate) unplugged: Option<Moment>,
    pub(crate) last_ref: Option<Moment>,
    /// Logical: the drmm list's `RELEASE_END` after `LAST_REF`. Bus: `DEVICE_REMOVE`.
    pub(crate) released: Option<Moment>,
    pub(crate) opens: u32,
    pub(crate) closes: u32,
    pub(crate) last_close: Option<Moment>,
    pub(crate) added: Option<Moment>,
    pub(crate) probes: Vec<(Moment, String)>,
    pub(crate) bound: Option<Moment>,
    pub(crate) unbound: Option<Moment>,
    pub(crate) revokes: Vec<(Moment, String)>,
    /// Indices into [`Analysis::entries`], in `ADD` order.
    pub(crate) entries: Vec<usize>,
    pub(crate) releases: Vec<ListRelease>,
}

impl Device {
    fn new(id: u64) -> Device {
        Device {
            id,
            name: None,
            kind: DevKind::Unknown,
            origin: None,
            created: None,
            registered: None,
            unregistered: None,
            unplugged: None,
            last_ref: None,
            released: None,
            opens: 0,
            closes: 0,
            last_close: None,
            added: None,
            probes: Vec::new(),
            bound: None,
            unbound: None,
            revokes: Vec::new(),
            entries: Vec::new(),
            releases: Vec::new(),
        }
    }

    /// The device's name, or `dev N`.
    pub(crate) fn label(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => format!("dev {}", self.id),
        }
    }

    /// `card0 (logical device 1)`.
    pub(crate) fn describe(&self) -> String {
        let kind = match self.kind {
            DevKind::Logical => "logical device",
            DevKind::Bus => "bus device",
            DevKind::Unknown => "device",
        };
        match &self.name {
            Some(name) => format!("{name} ({kind} {})", self.id),
            None => format!("{kind} {}", self.id),
        }
    }
}

/// One `RELEASE_BEGIN` .. `RELEASE_END` of a list.
#[derive(Debug, Clone)]
pub(crate) struct ListRelease {
    pub(crate) list: List,
    pub(crate) begin: Moment,
    pub(crate) end: Option<Moment>,
    pub(crate) detail: Option<String>,
}

/// One entry of a list, from `ADD` to its end.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) dev: u64,
    pub(crate) list: List,
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) size: Option<u64>,
    pub(crate) file: Option<String>,
    pub(crate) src_line: Option<u32>,
    pub(crate) added: Moment,
    /// `DEL`, `REL` or `REM`, and when; `None` if never released.
    pub(crate) end: Option<(Op, Moment)>,
    /// How many times it was resized (`REPLACE`).
    pub(crate) replaced: u32,
}

impl Entry {
    /// `file:line` of the `ADD` call.
    pub(crate) fn location(&self) -> Option<String> {
        location(self.file.as_deref(), self.src_line)
    }

    /// `card0 drmm #3 "fb" (alloc, 64 bytes)`.
    pub(crate) fn describe(&self, dev: &str) -> String {
        let size = match self.size {
            Some(size) => format!(", {size} bytes"),
            None => String::new(),
        };
        format!(
            "{dev} {} #{} \"{}\" ({}{size})",
            self.list.as_str(),
            self.id,
            self.name,
            self.kind
        )
    }
}

/// The problem kinds, in the order they are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ProblemKind {
    AccessAfterRevocation,
    ReleaseOutOfOrder,
    ReleasedAfterDevice,
    ReferenceHeld,
    DeviceNeverReleased,
    EntryNeverReleased,
}

impl ProblemKind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            ProblemKind::AccessAfterRevocation => "access after revocation",
            ProblemKind::ReleaseOutOfOrder => "release out of LIFO order",
            ProblemKind::ReleasedAfterDevice => "entry released after its device",
            ProblemKind::ReferenceHeld => "reference still held at the end",
            ProblemKind::DeviceNeverReleased => "device never released",
            ProblemKind::EntryNeverReleased => "entry never released",
        }
    }
}

/// One problem: a line of `drmm trace check`.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub(crate) kind: ProblemKind,
    /// The source location (`file:line`) it points at, when the trace has one.
    pub(crate) location: Option<String>,
    /// The trace line it was found at.
    pub(crate) trace_line: usize,
    pub(crate) message: String,
    /// The entry it is about (index into [`Analysis::entries`]), if one.
    pub(crate) entry: Option<usize>,
}

impl Problem {
    /// `src/x.rs:12: entry never released: ...`, or `trace.jsonl:40: ...` without a source
    /// location.
    pub(crate) fn render(&self, trace_path: &str) -> String {
        let at = match &self.location {
            Some(location) => location.clone(),
            None => format!("{trace_path}:{}", self.trace_line),
        };
        format!("{at}: {}: {}", self.kind.label(), self.message)
    }
}

/// A `REFUSED` event.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub(crate) at: Moment,
    pub(crate) dev: Option<u64>,
    /// `gate`, `open`, `devres` or what the trace says.
    pub(crate) detail: String,
    pub(crate) name: Option<String>,
    pub(crate) location: Option<String>,
    pub(crate) thread: Option<String>,
}

/// Everything found in a trace.
#[derive(Debug, Default)]
pub(crate) struct Analysis {
    /// In order of first appearance.
    pub(crate) devices: Vec<Device>,
    /// In `ADD` order.
    pub(crate) entries: Vec<Entry>,
    /// Sorted by kind, then trace line.
    pub(crate) problems: Vec<Problem>,
    pub(crate) refusals: Vec<Refusal>,
    /// Facts worth a line in the report that are not problems.
    pub(crate) notes: Vec<String>,
    /// The last timestamp.
    pub(crate) end_t: u64,
    /// The trace line of the last event.
    pub(crate) end_line: usize,
    pub(crate) events: usize,
    dev_index: HashMap<u64, usize>,
}

impl Analysis {
    /// The device with this id.
    pub(crate) fn device(&self, id: u64) -> Option<&Device> {
        self.dev_index.get(&id).map(|&i| &self.devices[i])
    }

    fn label(&self, id: u64) -> String {
        self.device(id)
            .map_or_else(|| format!("dev {id}"), Device::label)
    }

    fn device_mut(&mut self, ev: &Event, id: u64) -> &mut Device {
        let index = *self.dev_index.entry(id).or_insert_with(|| {
            self.devices.push(Device::new(id));
            self.devices.len() - 1
        });
        let device = &mut self.devices[index];
        if let Some(name) = &ev.dev_name
            && device.name.is_none()
        {
            device.name = Some(name.clone());
        }
        let kind = match (ev.dev_kind.as_deref(), ev.op) {
            (Some("logical"), _) => Some(DevKind::Logical),
            (Some("bus"), _) => Some(DevKind::Bus),
            (_, Op::Create | Op::Register | Op::Unplug | Op::LastRef | Op::Open) => {
                Some(DevKind::Logical)
            }
            (_, Op::DeviceAdd | Op::Probe | Op::Bind | Op::Unbind | Op::DeviceRemove) => {
                Some(DevKind::Bus)
            }
            _ => None,
        };
        if let Some(kind) = kind
            && device.kind == DevKind::Unknown
        {
            device.kind = kind;
        }
        device
    }
}

/// Who took a reference: when, where (`file:line`) and on which thread.
type Holder = (Moment, Option<String>, Option<String>);

/// The state of the pass.
#[derive(Default)]
struct Pass {
    /// Live entries by (dev, list, entry id) → index.
    live: HashMap<(u64, List, u64), usize>,
    /// Live entries of each list, by index (= `ADD` order).
    live_by_list: HashMap<(u64, List), BTreeSet<usize>>,
    /// The open release of each list (index into `windows`).
    releasing: HashMap<(u64, List), usize>,
    /// Every release window, checked for LIFO order at the end.
    windows: Vec<Window>,
    /// Entries already reported as touched after their device was released.
    after_device: BTreeSet<usize>,
    /// References taken and not dropped, by (dev, ref_id).
    refs: BTreeMap<(u64, u64), Holder>,
    orphan_ends: u64,
    orphan_puts: u64,
}

/// One `RELEASE_BEGIN` .. `RELEASE_END` of a list, checked once the whole trace is read.
struct Window {
    /// The entries live at `RELEASE_BEGIN`. Entries added during the release are not in it, so
    /// releasing them in any order is fine.
    live: BTreeSet<usize>,
    /// The ends of entries during the window, in order: (entry, was it a `REL`, trace line).
    ends: Vec<(usize, bool, usize)>,
}

/// The analysis of a trace, one event at a time as the trace is read.
#[derive(Default)]
pub(crate) struct Analyser {
    a: Analysis,
    pass: Pass,
    path: String,
}

impl Analyser {
    /// An analyser of the trace at `path` (for messages).
    pub(crate) fn new(path: &str) -> Analyser {
        Analyser {
            path: path.to_owned(),
            ..Analyser::default()
        }
    }

    /// Takes the next event, in file order.
    pub(crate) fn step(&mut self, ev: &Event) {
        let a = &mut self.a;
        a.events += 1;
        a.end_t = a.end_t.max(ev.t);
        a.end_line = ev.line;
        step(a, &mut self.pass, ev, &self.path);
    }

    /// The analysis, once every event of `trace` was given.
    pub(crate) fn finish(self, trace: &Trace) -> Analysis {
        let Analyser { mut a, pass, .. } = self;
        analyse_end(&mut a, pass, trace);
        a
    }
}

fn analyse_end(a: &mut Analysis, pass: Pass, trace: &Trace) {
    finish(a, pass);
    for (op, count) in &trace.unknown_ops {
        a.notes.push(format!(
            "{count} event(s) with unknown op \"{op}\" ignored (written by a newer drmm?)"
        ));
    }
    if let Some(line) = trace.truncated {
        a.notes.push(format!(
            "line {line} was cut mid-write and is ignored: the program stopped while recording, so the trace's end is missing"
        ));
    }
}

fn step(a: &mut Analysis, pass: &mut Pass, ev: &Event, path: &str) {
    let at = Moment {
        t: ev.t,
        line: ev.line,
    };
    if let Some(id) = ev.dev {
        a.device_mut(ev, id);
    }
    let dev = ev.dev.unwrap_or(0);
    if ev.op.is_entry_op()
        && ev.op != Op::AddFailed
        && let Some(released) = a.device(dev).and_then(|d| d.released)
        && a.device(dev).map(|d| d.kind) == Some(DevKind::Logical)
    {
        after_device(a, pass, ev, released);
    }
    let list = ev.list.unwrap_or(List::Drmm);
    let key = (dev, list, ev.entry.unwrap_or(0));
    match ev.op {
        Op::Add => {
            let index = a.entries.len();
            a.entries.push(Entry {
                dev,
                list,
                id: key.2,
                name: ev.name.clone().unwrap_or_else(|| "?".to_owned()),
                kind: ev.kind.clone().unwrap_or_else(|| "?".to_owned()),
                size: ev.size,
                file: ev.file.clone(),
                src_line: ev.src_line,
                added: at,
                end: None,
                replaced: 0,
            });
            if let Some(old) = pass.live.insert(key, index) {
                // The same id twice: the older one is forgotten as live.
                if let Some(set) = pass.live_by_list.get_mut(&(dev, list)) {
                    set.remove(&old);
                }
            }
            pass.live_by_list
                .entry((dev, list))
                .or_default()
                .insert(index);
            if let Some(&d) = a.dev_index.get(&dev) {
                a.devices[d].entries.push(index);
            }
        }
        Op::Del | Op::Rel | Op::Rem => {
            let Some(index) = pass.live.remove(&key) else {
                pass.orphan_ends += 1;
                return;
            };
            a.entries[index].end = Some((ev.op, at));
            if let Some(set) = pass.live_by_list.get_mut(&(dev, list)) {
                set.remove(&index);
            }
            if let Some(&w) = pass.releasing.get(&(dev, list)) {
                pass.windows[w]
                    .ends
                    .push((index, ev.op == Op::Rel, ev.line));
            }
        }
        Op::Replace => match pass.live.get(&key) {
            Some(&index) => {
                let entry = &mut a.entries[index];
                entry.replaced += 1;
                // The recorder gives the new size.
                if ev.size.is_some() {
                    entry.size = ev.size;
                }
            }
            None => pass.orphan_ends += 1,
        },
        Op::AddFailed => {
            let at_loc = ev
                .location()
                .map(|l| format!(" at {l}"))
                .unwrap_or_default();
            a.notes.push(format!(
                "ADD_FAILED of \"{}\" on {} {}{at_loc}: {} (trace line {})",
                ev.name.as_deref().unwrap_or("?"),
                a.label(dev),
                list.as_str(),
                ev.detail.as_deref().unwrap_or("no detail"),
                ev.line
            ));
        }
        Op::ReleaseBegin => {
            let live = pass
                .live_by_list
                .get(&(dev, list))
                .cloned()
                .unwrap_or_default();
            pass.releasing.insert((dev, list), pass.windows.len());
            pass.windows.push(Window {
                live,
                ends: Vec::new(),
            });
            device(a, dev).releases.push(ListRelease {
                list,
                begin: at,
                end: None,
                detail: None,
            });
        }
        Op::ReleaseEnd => {
            pass.releasing.remove(&(dev, list));
            let d = device(a, dev);
            if let Some(release) = d
                .releases
                .iter_mut()
                .rev()
                .find(|r| r.list == list && r.end.is_none())
            {
                release.end = Some(at);
                release.detail = ev.detail.clone();
            }
            if list == List::Drmm && d.last_ref.is_some() && d.released.is_none() {
                d.released = Some(at);
            }
        }
        Op::Create => {
            let d = device(a, dev);
            d.created.get_or_insert(at);
            if d.origin.is_none() {
                d.origin = ev.location();
            }
        }
        Op::Register => {
            device(a, dev).registered.get_or_insert(at);
        }
        Op::Unregister => {
            device(a, dev).unregistered.get_or_insert(at);
        }
        Op::Unplug => {
            device(a, dev).unplugged.get_or_insert(at);
        }
        Op::LastRef => {
            device(a, dev).last_ref.get_or_insert(at);
        }
        Op::Open => device(a, dev).opens += 1,
        Op::Close => {
            let d = device(a, dev);
            d.closes += 1;
            d.last_close = Some(at);
        }
        Op::DeviceAdd => {
            let d = device(a, dev);
            d.added.get_or_insert(at);
            if d.origin.is_none() {
                d.origin = ev.location();
            }
        }
        Op::Probe => {
            let detail = ev.detail.clone().unwrap_or_else(|| "?".to_owned());
            device(a, dev).probes.push((at, detail));
        }
        Op::Bind => {
            device(a, dev).bound.get_or_insert(at);
        }
        Op::Unbind => {
            device(a, dev).unbound.get_or_insert(at);
        }
        Op::DeviceRemove => {
            device(a, dev).released.get_or_insert(at);
        }
        Op::Revoke => {
            let detail = ev.detail.clone().unwrap_or_default();
            device(a, dev).revokes.push((at, detail));
        }
        Op::Refused => refused(a, ev, at),
        Op::Get => {
            pass.refs.insert(
                (dev, ev.ref_id.unwrap_or(0)),
                (at, ev.location(), ev.thread.clone()),
            );
        }
        Op::Put => {
            if pass.refs.remove(&(dev, ev.ref_id.unwrap_or(0))).is_none() {
                pass.orphan_puts += 1;
            }
        }
        Op::Panic => {
            let at_loc = ev
                .location()
                .map(|l| format!(" at {l}"))
                .unwrap_or_default();
            a.notes.push(format!(
                "PANIC while releasing \"{}\"{at_loc}: {} ({path}:{})",
                ev.name.as_deref().unwrap_or("?"),
                ev.detail.as_deref().unwrap_or("no message"),
                ev.line
            ));
        }
    }
}

/// An entry event after its device's drmm release ended: reported once per entry, at its first
/// such event.
fn after_device(a: &mut Analysis, pass: &mut Pass, ev: &Event, released: Moment) {
    let (dev, list) = (ev.dev.unwrap_or(0), ev.list.unwrap_or(List::Drmm));
    let key = (dev, list, ev.entry.unwrap_or(0));
    // For an ADD the entry is pushed next, at this index.
    let index = match ev.op {
        Op::Add => a.entries.len(),
        _ => match pass.live.get(&key) {
            Some(&index) => index,
            None => usize::MAX,
        },
    };
    if index != usize::MAX && !pass.after_device.insert(index) {
        return;
    }
    let dev_label = a.label(dev);
    a.problems.push(Problem {
        kind: ProblemKind::ReleasedAfterDevice,
        location: ev.location(),
        trace_line: ev.line,
        entry: (index != usize::MAX).then_some(index),
        message: format!(
            "{} of {dev_label} {} #{} \"{}\" at trace line {}, after {dev_label} was released (trace line {})",
            ev.op.as_str(),
            list.as_str(),
            key.2,
            ev.name.as_deref().unwrap_or("?"),
            ev.line,
            released.line
        ),
    });
}

/// A release out of LIFO order: within one window, an entry released while a newer entry that
/// was live at `RELEASE_BEGIN` is still live. Entries never released at all are left out (they
/// are reported as never released; counting them here too would report every older entry).
fn check_lifo(a: &mut Analysis, windows: &[Window]) {
    for window in windows {
        let mut live: BTreeSet<usize> = window
            .live
            .iter()
            .copied()
            .filter(|&i| a.entries[i].end.is_some())
            .collect();
        for &(index, rel, line) in &window.ends {
            if !live.contains(&index) {
                continue;
            }
            let newest = live.last().copied().unwrap_or(index);
            if rel && newest > index {
                let released = &a.entries[index];
                let newer = &a.entries[newest];
                let newer_at = newer
                    .location()
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default();
                let problem = Problem {
                    kind: ProblemKind::ReleaseOutOfOrder,
                    location: released.location(),
                    trace_line: line,
                    entry: Some(index),
                    message: format!(
                        "{} released at trace line {line} while the newer #{} \"{}\"{newer_at} is still live",
                        released.describe(&a.label(released.dev)),
                        newer.id,
                        newer.name
                    ),
                };
                a.problems.push(problem);
            }
            live.remove(&index);
        }
    }
}

/// The device of an event that has one (checked by the reader).
fn device(a: &mut Analysis, id: u64) -> &mut Device {
    let index = a.dev_index[&id];
    &mut a.devices[index]
}

fn refused(a: &mut Analysis, ev: &Event, at: Moment) {
    let detail = ev.detail.clone().unwrap_or_else(|| "?".to_owned());
    if detail == "devres" {
        let what = ev.name.as_deref().unwrap_or("a Devres value");
        let on = ev
            .dev
            .map(|d| format!(" of {}", a.label(d)))
            .unwrap_or_default();
        let thread = ev
            .thread
            .as_deref()
            .map(|t| format!(" on thread {t}"))
            .unwrap_or_default();
        a.problems.push(Problem {
            kind: ProblemKind::AccessAfterRevocation,
            location: ev.location(),
            trace_line: ev.line,
            entry: None,
            message: format!(
                "{what}{on} reached after it was revoked{thread} (trace line {}; refused, but in C a use-after-free)",
                ev.line
            ),
        });
    }
    a.refusals.push(Refusal {
        at,
        dev: ev.dev,
        detail,
        name: ev.name.clone(),
        location: ev.location(),
        thread: ev.thread.clone(),
    });
}

fn finish(a: &mut Analysis, pass: Pass) {
    check_lifo(a, &pass.windows);
    for (index, entry) in a.entries.iter().enumerate() {
        if entry.end.is_some() {
            continue;
        }
        let dev = a.label(entry.dev);
        a.problems.push(Problem {
            kind: ProblemKind::EntryNeverReleased,
            location: entry.location(),
            trace_line: entry.added.line,
            entry: Some(index),
            message: format!(
                "{} added at trace line {}",
                entry.describe(&dev),
                entry.added.line
            ),
        });
    }
    let mut held_by_dev: HashMap<u64, usize> = HashMap::new();
    for &(dev, _) in pass.refs.keys() {
        *held_by_dev.entry(dev).or_default() += 1;
    }
    for (&(dev, ref_id), (at, loc, thread)) in &pass.refs {
        let thread = thread
            .as_deref()
            .map(|t| format!(" on thread {t}"))
            .unwrap_or_default();
        a.problems.push(Problem {
            kind: ProblemKind::ReferenceHeld,
            location: loc.clone(),
            trace_line: at.line,
            entry: None,
            message: format!(
                "reference {ref_id} to {}, taken{thread} (trace line {}), never dropped",
                a.label(dev),
                at.line
            ),
        });
    }
    for d in &a.devices {
        match d.kind {
            DevKind::Logical if d.created.is_some() && d.released.is_none() => {
                let why = if d.last_ref.is_none() {
                    match held_by_dev.get(&d.id) {
                        Some(n) => format!("its last reference is never dropped ({n} still held)"),
                        None => "its last reference is never dropped".to_owned(),
                    }
                } else {
                    "its drmm list is never released after the last reference".to_owned()
                };
                let created = d.created.map_or(0, |m| m.line);
                a.problems.push(Problem {
                    kind: ProblemKind::DeviceNeverReleased,
                    location: d.origin.clone(),
                    trace_line: created,
                    entry: None,
                    message: format!("{} created at trace line {created}: {why}", d.describe()),
                });
            }
            DevKind::Bus if d.added.is_some() && d.released.is_none() => {
                a.notes.push(format!(
                    "bus device {} is never removed (fine: the program ended with it present)",
                    d.describe()
                ));
            }
            _ => {}
        }
    }
    if pass.orphan_ends > 0 {
        a.notes.push(format!(
            "{} entry event(s) for entries added before the trace began (or never added) ignored",
            pass.orphan_ends
        ));
    }
    if pass.orphan_puts > 0 {
        a.notes.push(format!(
            "{} PUT event(s) without a GET ignored",
            pass.orphan_puts
        ));
    }
    a.problems.sort_by_key(|p| (p.kind, p.trace_line));
}
