//! Live reports: which devices are alive, what they hold, and **who holds each reference**
//! (cargo feature `registry`, off by default).
//!
//! With the feature on, the library keeps a process-wide registry of every logical device
//! ([`Device`](crate::Device)) and bus device ([`BusDevice`](crate::BusDevice)) that is not yet
//! released, and, for each logical device, one record per live reference with the source
//! location of the call that took it (`Device::new*`, `Device::new_on`, `clone`, `open`,
//! `open_with`), like the kernel's `ref_tracker`. A report reads it at a point the program
//! chooses:
//!
//! * [`leaks`]: the devices not released, each with its state, its live references and their
//!   holders, and its live entries grouped by kind with sizes and locations;
//! * [`live`]: the same, plus the last devices released;
//! * [`at_exit`]: a guard that prints the leak report when `main` returns.
//!
//! A [`Report`] prints as text (`Display`) and has accessors for tests.
//!
//! # Finding a reference cycle and a forgotten clone
//!
//! ```
//! use drmm::report::{self, RefKind};
//!
//! let dev = drmm::Device::with_name("card0", ());
//! let id = dev.list_id();
//! let line = line!() + 1;
//! let _cycle = dev.alloc(dev.clone()).unwrap(); // the device holds a value holding the device
//! drop(dev); // not the last reference: the cycle keeps it alive, silently
//!
//! let leaks = report::leaks();
//! let card = leaks.device(id).unwrap();
//! let holder = &card.holders()[0];
//! assert_eq!(holder.kind(), RefKind::Clone);
//! assert_eq!(holder.location().line(), line);
//! // The reference was taken on the line that registered one of the device's own entries.
//! assert!(holder.same_line_entry().is_some());
//! println!("{leaks}");
//! ```
//!
//! prints (with the line numbers of the program):
//!
//! ```text
//! drmm leak report: 1 device not released (0 released)
//! logical device "card0" (id 1): alive, not released, not registered, 0 open files; created at src/main.rs:4:15
//!   1 reference:
//!     ref 2 (clone) taken at src/main.rs:7:32, the line that registered entry #1 of this device: a reference cycle?
//!   1 entry, 16 bytes: alloc 1 (16 bytes)
//!     #1 alloc drmm::device::Device<()> (16 bytes) at src/main.rs:7:22
//! ```
//!
//! # Cost
//!
//! Without the feature nothing of this exists: no field, no lock, no atomic operation is added
//! anywhere (`Device<T>` stays one pointer).
//!
//! With it, a `Device<T>` handle is two words (the pointer and its reference id); taking or
//! dropping a reference adds one short lock of one of the device's four tracker shards and one
//! map insert or remove (threads cloning one device spread over the shards); creating and
//! releasing a device take one of the registry's sixteen shard locks three times (register,
//! release begins, unregister), so threads churning their own devices rarely meet; a device
//! carries 184 more bytes of tracker (four locks), its allocation still within the allocator's
//! per-thread cache.
//! A report holds one registry shard's lock while it copies that shard's devices, so devices
//! of that shard created or released meanwhile wait for the copy.
//! Measured roughly (a release-mode loop, on a machine shared with other builds): a `clone`
//! and its drop take 43 ns instead of 9.5; a device created with 16 managed allocations and
//! dropped (the W4 workload) 400 ns instead of 250 (1.6 ×); two threads doing that on their
//! own devices (W9) 210 ns per device instead of 145: the registry does not serialise them
//! (1.9 × the one-thread rate, 1.75 × without the feature). Without the feature every figure
//! is that of a build without this module. A report locks one shard at a time and copies what it
//! shows, so it is a consistent picture of each device, not of the whole process at one
//! instant.
//!
//! # Limits
//!
//! * Locations are those of the calls into this library. A clone made inside a generic adapter
//!   (`Option::cloned`, `Vec::clone`) records the adapter's line in the standard library; write
//!   `.map(|d| d.clone())` to record your own (clippy's `map_clone` suggests otherwise: allow
//!   it there).
//! * Bus devices are listed with their state and devres entries; who holds references to them
//!   is not tracked.
//! * Released devices are counted; only the last few (at most 64) are remembered by name.
//! * Bookkeeping never aborts and never makes a call fail: a reference or a device recorded
//!   while memory runs out is counted, not listed
//!   ([`unlisted_references`](DeviceReport::unlisted_references),
//!   [`unlisted_devices`](Report::unlisted_devices)). A report itself allocates as usual.
//! * Rust runs no destructor for statics and `std::process::exit` runs none at all: the exit
//!   report is a guard that `main` owns (see [`at_exit`]).

mod idmap;
pub(crate) mod refs;
pub(crate) mod registry;

use std::fmt;
use std::io::Write;
use std::panic::Location;

use crate::res::{EntryInfo, EntryKind};

/// A logical device or a bus device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeviceKind {
    /// A logical device ([`Device`](crate::Device), `struct drm_device`): owns a drmm list.
    Logical,
    /// A bus device ([`BusDevice`](crate::BusDevice), `struct device`): owns a devres list.
    Bus,
}

impl DeviceKind {
    /// `"logical"` or `"bus"`, as traces name them (`dev_kind`).
    pub const fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Logical => "logical",
            DeviceKind::Bus => "bus",
        }
    }
}

/// Where a device is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeviceState {
    /// In use: a logical device not unplugged, a bus device still on its bus.
    Alive,
    /// Unplugged ([`unplug`](crate::LogicalDevice::unplug)) or removed from its bus
    /// ([`remove`](crate::BusDevice::remove)), but not released: references are still held.
    Unplugged,
    /// Its last reference is gone and its release is running (its entries are not listed).
    Releasing,
}

impl DeviceState {
    /// `"alive"`, `"unplugged"` or `"releasing"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeviceState::Alive => "alive",
            DeviceState::Unplugged => "unplugged",
            DeviceState::Releasing => "releasing",
        }
    }
}

/// How a reference to a logical device was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefKind {
    /// The first reference, returned by `Device::new`, `with_name`, `try_new*` or `new_on`.
    New,
    /// [`Device::clone`](crate::Device) (`drm_dev_get`).
    Clone,
    /// Held by an open [`File`](crate::device::File) (`Device::open`, `open_with`).
    Open,
    /// Held by the parent's binding until it ends (`Device::new_on`, `devm_drm_dev_alloc`).
    Binding,
}

impl RefKind {
    /// `"new"`, `"clone"`, `"open"` or `"binding"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RefKind::New => "new",
            RefKind::Clone => "clone",
            RefKind::Open => "open",
            RefKind::Binding => "binding",
        }
    }
}

/// One live reference to a logical device and the call that took it.
#[doc(alias = "ref_tracker")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefHolder {
    pub(crate) id: u64,
    pub(crate) kind: RefKind,
    pub(crate) location: &'static Location<'static>,
    pub(crate) same_line_entry: Option<u64>,
}

impl RefHolder {
    /// The reference's id, unique within its device (the `ref_id` of the trace's `GET`/`PUT`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// How it was taken.
    pub fn kind(&self) -> RefKind {
        self.kind
    }

    /// Where it was taken: the holder.
    pub fn location(&self) -> &'static Location<'static> {
        self.location
    }

    /// The sequence number of a live entry of the same device registered on the same source
    /// line, if any: `dev.alloc(dev.clone())` and `add_action!(dev, move |_| drop(clone))`
    /// look like this. A hint of a reference cycle (the device holds a value holding the
    /// device), not a proof.
    pub fn same_line_entry(&self) -> Option<u64> {
        self.same_line_entry
    }
}

/// A summary of a device's live entries of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindSummary {
    /// The kind.
    pub kind: EntryKind,
    /// How many live entries of that kind.
    pub count: usize,
    /// Their bytes, added up.
    pub bytes: usize,
}

/// One device not released, as a report saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceReport {
    pub(crate) id: u64,
    pub(crate) kind: DeviceKind,
    pub(crate) state: DeviceState,
    pub(crate) created_at: &'static Location<'static>,
    pub(crate) name: String,
    pub(crate) registered: bool,
    pub(crate) bound: bool,
    pub(crate) open_files: usize,
    pub(crate) holders: Vec<RefHolder>,
    pub(crate) unlisted_refs: u64,
    pub(crate) entries: Vec<EntryInfo>,
}

impl DeviceReport {
    pub(crate) fn new(
        id: u64,
        kind: DeviceKind,
        state: DeviceState,
        created_at: &'static Location<'static>,
    ) -> Self {
        DeviceReport {
            id,
            kind,
            state,
            created_at,
            name: String::new(),
            registered: false,
            bound: false,
            open_files: 0,
            holders: Vec::new(),
            unlisted_refs: 0,
            entries: Vec::new(),
        }
    }

    /// The device's id: its list's id ([`Device::list_id`](crate::Device),
    /// [`BusDevice::list_id`](crate::BusDevice::list_id)), the `dev` of trace events.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Logical or bus device.
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// Alive, unplugged (removed) or releasing.
    pub fn state(&self) -> DeviceState {
        self.state
    }

    /// Where the device was created.
    pub fn created_at(&self) -> &'static Location<'static> {
        self.created_at
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A logical device: registered (`drm_dev_register`) and not unregistered.
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// A bus device: a driver is bound.
    pub fn is_bound(&self) -> bool {
        self.bound
    }

    /// A logical device: its open files.
    pub fn open_files(&self) -> usize {
        self.open_files
    }

    /// A logical device: its live references, oldest first, each with where it was taken
    /// (empty for a bus device, whose references are not tracked).
    pub fn holders(&self) -> &[RefHolder] {
        &self.holders
    }

    /// A logical device: how many of its live references are not in
    /// [`holders`](Self::holders) because memory ran out when they were taken (tracking never
    /// aborts and never fails the call that takes a reference).
    pub fn unlisted_references(&self) -> u64 {
        self.unlisted_refs
    }

    /// The live entries (drmm list of a logical device, devres list of a bus device), newest
    /// first (empty while the device is releasing).
    pub fn entries(&self) -> &[EntryInfo] {
        &self.entries
    }

    /// The live entries grouped by kind, with counts and bytes, in order of first appearance
    /// among the newest-first entries.
    pub fn entries_by_kind(&self) -> Vec<KindSummary> {
        let mut out: Vec<KindSummary> = Vec::new();
        for e in &self.entries {
            match out.iter_mut().find(|s| s.kind == e.kind()) {
                Some(s) => {
                    s.count += 1;
                    s.bytes += e.size();
                }
                None => out.push(KindSummary {
                    kind: e.kind(),
                    count: 1,
                    bytes: e.size(),
                }),
            }
        }
        out
    }

    /// Marks the holders whose line registered one of the device's entries.
    fn find_same_line_entries(&mut self) {
        for h in &mut self.holders {
            h.same_line_entry = self
                .entries
                .iter()
                .find(|e| {
                    e.location().line() == h.location.line()
                        && e.location().file() == h.location.file()
                })
                .map(EntryInfo::seq);
        }
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl fmt::Display for DeviceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let not_released = if self.state == DeviceState::Releasing {
            ""
        } else {
            ", not released"
        };
        write!(
            f,
            "{} device {:?} (id {}): {}{not_released}",
            self.kind.as_str(),
            self.name,
            self.id,
            self.state.as_str()
        )?;
        match self.kind {
            DeviceKind::Logical => write!(
                f,
                ", {}, {}",
                if self.registered {
                    "registered"
                } else {
                    "not registered"
                },
                plural(self.open_files, "open file", "open files")
            )?,
            DeviceKind::Bus => f.write_str(if self.bound { ", bound" } else { ", no driver" })?,
        }
        writeln!(f, "; created at {}", self.created_at)?;
        if self.kind == DeviceKind::Logical {
            writeln!(
                f,
                "  {}:",
                plural(self.holders.len(), "reference", "references")
            )?;
            if self.unlisted_refs > 0 {
                writeln!(
                    f,
                    "    and {} taken while memory ran out (holders unknown)",
                    self.unlisted_refs
                )?;
            }
            for h in &self.holders {
                write!(
                    f,
                    "    ref {} ({}) taken at {}",
                    h.id,
                    h.kind.as_str(),
                    h.location
                )?;
                if let Some(seq) = h.same_line_entry {
                    write!(
                        f,
                        ", the line that registered entry #{seq} of this device: a reference cycle?"
                    )?;
                }
                writeln!(f)?;
            }
        }
        let bytes: usize = self.entries.iter().map(EntryInfo::size).sum();
        write!(
            f,
            "  {}, {}",
            plural(self.entries.len(), "entry", "entries"),
            plural(bytes, "byte", "bytes")
        )?;
        for (i, s) in self.entries_by_kind().iter().enumerate() {
            let sep = if i == 0 { ": " } else { ", " };
            write!(
                f,
                "{sep}{} {} ({} bytes)",
                s.kind.as_str(),
                s.count,
                s.bytes
            )?;
        }
        writeln!(f)?;
        for e in &self.entries {
            writeln!(f, "    {e}")?;
        }
        Ok(())
    }
}

/// A device released earlier, remembered by a [`live`] report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasedDevice {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) kind: DeviceKind,
    pub(crate) created_at: &'static Location<'static>,
}

impl ReleasedDevice {
    /// The device's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Logical or bus device.
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// Where it was created.
    pub fn created_at(&self) -> &'static Location<'static> {
        self.created_at
    }
}

/// A report: the devices not released, and how many were.
///
/// `Display` gives the text a person reads; the accessors give the same facts to a test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    title: &'static str,
    devices: Vec<DeviceReport>,
    unlisted: u64,
    released_count: u64,
    released: Vec<ReleasedDevice>,
}

impl Report {
    fn collect(title: &'static str, history: bool) -> Self {
        let (mut devices, released_count, released) = registry::collect(history);
        for d in &mut devices {
            d.find_same_line_entries();
        }
        Report {
            title,
            devices,
            unlisted: registry::unlisted(),
            released_count,
            released,
        }
    }

    /// The devices not released, oldest first.
    pub fn devices(&self) -> &[DeviceReport] {
        &self.devices
    }

    /// The device with id `id` (its `list_id()`), if it is not released.
    pub fn device(&self, id: u64) -> Option<&DeviceReport> {
        self.devices.iter().find(|d| d.id == id)
    }

    /// The devices named `name` that are not released.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a DeviceReport> + 'a {
        self.devices.iter().filter(move |d| d.name == name)
    }

    /// Whether every device is released.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty() && self.unlisted == 0
    }

    /// How many devices not released are missing from [`devices`](Self::devices) because
    /// memory ran out when they were created (registering never aborts and never fails the
    /// creation).
    pub fn unlisted_devices(&self) -> u64 {
        self.unlisted
    }

    /// How many devices were released since the process started.
    pub fn released_count(&self) -> u64 {
        self.released_count
    }

    /// The last devices released (at most 64; empty in a [`leaks`] report).
    pub fn released(&self) -> &[ReleasedDevice] {
        &self.released
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "drmm {}: {} not released ({} released)",
            self.title,
            plural(self.devices.len(), "device", "devices"),
            self.released_count
        )?;
        for d in &self.devices {
            write!(f, "{d}")?;
        }
        if self.unlisted > 0 {
            writeln!(
                f,
                "and {} created while memory ran out (not listed)",
                plural(self.unlisted as usize, "device", "devices")
            )?;
        }
        if !self.released.is_empty() {
            writeln!(f, "last released:")?;
            for r in &self.released {
                writeln!(
                    f,
                    "  {} device {:?} (id {}), created at {}",
                    r.kind.as_str(),
                    r.name,
                    r.id,
                    r.created_at
                )?;
            }
        }
        Ok(())
    }
}

/// The leak report: every device not released, with its live references and their holders
/// and its live entries (`talloc_report_full`, the kernel's `ref_tracker_dir_print`).
///
/// Call it where the program expects its devices to be gone (after unbinding and closing
/// everything, at the end of a test): whatever it lists is held by someone, and the holders
/// say who.
///
/// # Examples
///
/// ```
/// let dev = drmm::Device::with_name("card0", ());
/// let id = dev.list_id();
/// let forgotten = dev.clone();
/// drop(dev);
/// assert_eq!(drmm::report::leaks().device(id).unwrap().holders().len(), 1);
/// drop(forgotten);
/// assert!(drmm::report::leaks().device(id).is_none());
/// ```
#[doc(alias = "talloc_report_full")]
#[doc(alias = "ref_tracker_dir_print")]
pub fn leaks() -> Report {
    Report::collect("leak report", false)
}

/// Everything alive (as [`leaks`]), plus the last devices released.
///
/// # Examples
///
/// ```
/// let bus = drmm::Bus::new("platform");
/// let gpu = bus.add_device("gpu.0");
/// let live = drmm::report::live();
/// let seen = live.device(gpu.list_id()).unwrap();
/// assert_eq!(seen.kind(), drmm::report::DeviceKind::Bus);
/// assert_eq!(seen.state(), drmm::report::DeviceState::Alive);
/// ```
pub fn live() -> Report {
    Report::collect("live devices", true)
}

/// Prints the leak report when the returned guard is dropped, if any device is not released
/// by then (quiet otherwise; talloc's `talloc_enable_leak_report`).
///
/// Bind the guard first thing in `main`: locals are dropped in reverse order, so it goes last,
/// after everything `main` owns. Rust runs no destructor for statics, and none at all on
/// `std::process::exit`, so there is no reliable "at exit" hook: what a static still holds at
/// that point is reported as a leak, and a program that calls `exit` must drop the guard first.
///
/// # Examples
///
/// ```
/// # fn run() {
/// // First thing in `main`:
/// let _report = drmm::report::at_exit(); // dropped last
/// let dev = drmm::Device::new(());
/// // ... the program; at its end `dev` is dropped, then the guard finds nothing to report.
/// # }
/// # run();
/// ```
#[doc(alias = "talloc_enable_leak_report")]
pub fn at_exit() -> ExitReport {
    ExitReport { out: None }
}

/// The guard of [`at_exit`]: prints the leak report when dropped, if there are leaks.
#[must_use = "the report is printed when the guard is dropped: keep it alive until the end of main"]
pub struct ExitReport {
    out: Option<Box<dyn Write + Send>>,
}

impl ExitReport {
    /// Writes the report to `out` instead of standard error.
    ///
    /// # Examples
    ///
    /// ```
    /// let guard = drmm::report::at_exit().to_writer(std::io::sink());
    /// drop(guard);
    /// ```
    pub fn to_writer(mut self, out: impl Write + Send + 'static) -> Self {
        self.out = Some(Box::new(out));
        self
    }
}

impl Drop for ExitReport {
    fn drop(&mut self) {
        let report = leaks();
        if report.is_empty() {
            return;
        }
        // Write errors are ignored: a closed standard error must not turn a leak report into a
        // panic at the end of `main`.
        let _ = match &mut self.out {
            Some(out) => write!(out, "{report}").and_then(|()| out.flush()),
            None => write!(std::io::stderr().lock(), "{report}"),
        };
    }
}

impl fmt::Debug for ExitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExitReport")
            .field("to_writer", &self.out.is_some())
            .finish()
    }
}
