//! The event vocabulary and the one place where the library emits events.
//!
//! Events go through the [`tracing`](https://docs.rs/tracing) crate with target `drmm`, so they are filtered the usual
//! way (`RUST_LOG=drmm=debug` with `tracing-subscriber`'s `EnvFilter`) and recorded as JSON
//! lines by this module's recorder (feature `record`: [`record_to`], [`init_from_env`],
//! [`RecordLayer`]). The vocabulary is the kernel's: `ADD`, `DEL`, `REL`, `REM` for the
//! entries of a list (`drm_dbg_drmres`, the `devres_log` tracepoint), `RELEASE_BEGIN` and
//! `RELEASE_END` around a list's release, and the lifecycle moments of devices ([`Op`]).
//!
//! Every event carries its facts as structured fields, the same for every subscriber:
//!
//! | field | meaning |
//! |---|---|
//! | `op` | the operation, [`Op::as_str`] |
//! | `dev` | the owner's process-unique id (a logical device's [`list_id`](crate::LogicalDevice::list_id), a bus device's [`list_id`](crate::BusDevice::list_id)) |
//! | `dev_name`, `dev_kind` | the owner's name, and `"logical"` or `"bus"` |
//! | `list` | `"drmm"` or `"devres"` (entry and release events) |
//! | `entry`, `name`, `kind`, `size` | the entry's sequence number, name, [`EntryKind`] and bytes |
//! | `file`, `line` | the caller's source location |
//! | `detail` | probe result, refusal reason, panic message, error, count |
//!
//! The message of an event is a few words for people reading a log; it does not repeat the
//! fields. The recorded file format is described in `docs/trace-schema.md`.
//!
//! With no subscriber, or one that filters `drmm` out, an event costs one relaxed load:
//! `tracing`'s global level check, made before anything else.
//!
//! A subscriber is user code: events are never emitted under an internal lock (a subscriber
//! may read the device), and on release paths they are emitted inside the panic net
//! (`entry_caught`, `caught`): a panicking subscriber does not stop a release, its panic
//! is resumed once the release is complete (only logged if the thread is already unwinding).
//!
//! # Examples
//!
//! ```
//! use drmm::trace::Op;
//! assert_eq!(Op::ReleaseBegin.as_str(), "RELEASE_BEGIN");
//! assert_eq!(Op::from_name("LAST_REF"), Some(Op::LastRef));
//! ```

mod name;
#[cfg(feature = "record")]
mod record;

pub use name::ShortName;
#[cfg(feature = "record")]
pub use record::{RecordError, RecordGuard, RecordLayer, init_from_env, record_to};

use std::fmt;
use std::panic::{self, AssertUnwindSafe, Location};

use crate::res::list::PanicPayload;
use crate::res::{EntryKind, ResourceList, Site};

/// The target of every event the library emits.
pub const TARGET: &str = "drmm";

/// The environment variable [`init_from_env`] reads: the path of the trace file to write.
pub const ENV_VAR: &str = "DRMM_TRACE";

/// The version of the recorded trace format (`docs/trace-schema.md`).
pub const SCHEMA_VERSION: u32 = 1;

/// The operation an event reports, in the kernel's vocabulary.
///
/// # Examples
///
/// ```
/// use drmm::trace::Op;
///
/// assert_eq!(Op::Add.to_string(), "ADD");
/// assert_eq!(Op::Rel.as_str(), "REL");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[doc(alias = "drm_dbg_drmres")]
#[doc(alias = "devres_log")]
pub enum Op {
    /// An entry was added to a list.
    Add,
    /// An entry was taken off and released early (`drmm_kfree`, `drmm_release_action`).
    Del,
    /// An entry was released by its list's release.
    Rel,
    /// An entry was taken off without being run (`devm_remove_action`, `devres_remove_group`).
    Rem,
    /// A managed allocation was replaced by a resized one in the same place (`devm_krealloc`).
    Replace,
    /// Registering an entry failed (`detail` = the error).
    AddFailed,
    /// A list's release begins.
    ReleaseBegin,
    /// A list's release ended (`detail` = the number of entries released).
    ReleaseEnd,
    /// A logical device was created (`drm_dev_alloc`).
    Create,
    /// A logical device was registered (`drm_dev_register`).
    Register,
    /// A logical device was unregistered (`drm_dev_unregister`).
    Unregister,
    /// A logical device was unplugged (`drm_dev_unplug`).
    Unplug,
    /// A file of a logical device was opened (`drm_open`).
    Open,
    /// A file of a logical device was closed (`drm_release`).
    Close,
    /// The last reference to a logical device was dropped; its drmm release follows.
    LastRef,
    /// A bus device was added to its bus (`device_add`).
    DeviceAdd,
    /// A driver's probe returned (`detail` = `ok`, `failed: <error>` or `deferred: <reason>`).
    Probe,
    /// A driver was bound to a bus device.
    Bind,
    /// A driver was unbound from a bus device (`device_release_driver`).
    Unbind,
    /// A bus device was removed from its bus (`device_del`).
    DeviceRemove,
    /// The `Devres` values of a binding were revoked (`detail` = how many).
    Revoke,
    /// An access was refused after unplug or revocation (`detail` = `gate`, `open` or
    /// `devres`).
    Refused,
    /// A new reference was taken (reference tracking).
    Get,
    /// A reference was dropped (reference tracking).
    Put,
    /// A release action panicked (`detail` = the message).
    Panic,
}

impl Op {
    /// Every operation, in the order of this enum.
    pub const ALL: [Op; 25] = [
        Op::Add,
        Op::Del,
        Op::Rel,
        Op::Rem,
        Op::Replace,
        Op::AddFailed,
        Op::ReleaseBegin,
        Op::ReleaseEnd,
        Op::Create,
        Op::Register,
        Op::Unregister,
        Op::Unplug,
        Op::Open,
        Op::Close,
        Op::LastRef,
        Op::DeviceAdd,
        Op::Probe,
        Op::Bind,
        Op::Unbind,
        Op::DeviceRemove,
        Op::Revoke,
        Op::Refused,
        Op::Get,
        Op::Put,
        Op::Panic,
    ];

    /// The name in events and traces: `"ADD"`, `"DEL"`, `"REL"`, `"REM"`, `"REPLACE"`,
    /// `"RELEASE_BEGIN"`, `"LAST_REF"`, ...
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(drmm::trace::Op::Del.as_str(), "DEL");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Op::Add => "ADD",
            Op::Del => "DEL",
            Op::Rel => "REL",
            Op::Rem => "REM",
            Op::Replace => "REPLACE",
            Op::AddFailed => "ADD_FAILED",
            Op::ReleaseBegin => "RELEASE_BEGIN",
            Op::ReleaseEnd => "RELEASE_END",
            Op::Create => "CREATE",
            Op::Register => "REGISTER",
            Op::Unregister => "UNREGISTER",
            Op::Unplug => "UNPLUG",
            Op::Open => "OPEN",
            Op::Close => "CLOSE",
            Op::LastRef => "LAST_REF",
            Op::DeviceAdd => "DEVICE_ADD",
            Op::Probe => "PROBE",
            Op::Bind => "BIND",
            Op::Unbind => "UNBIND",
            Op::DeviceRemove => "DEVICE_REMOVE",
            Op::Revoke => "REVOKE",
            Op::Refused => "REFUSED",
            Op::Get => "GET",
            Op::Put => "PUT",
            Op::Panic => "PANIC",
        }
    }

    /// The operation named `name` ([`as_str`](Self::as_str)'s inverse).
    ///
    /// # Examples
    ///
    /// ```
    /// use drmm::trace::Op;
    ///
    /// assert_eq!(Op::from_name("RELEASE_BEGIN"), Some(Op::ReleaseBegin));
    /// assert_eq!(Op::from_name("release_begin"), None); // names are upper case
    /// assert!(Op::ALL.iter().all(|op| Op::from_name(op.as_str()) == Some(*op)));
    /// ```
    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == name)
    }

    /// A few words for people reading a log line (the fields say the rest).
    const fn message(self) -> &'static str {
        match self {
            Op::Add => "entry added",
            Op::Del => "entry released early",
            Op::Rel => "entry released",
            Op::Rem => "entry removed without release",
            Op::Replace => "allocation resized",
            Op::AddFailed => "failed to add entry",
            Op::ReleaseBegin => "release begin",
            Op::ReleaseEnd => "release end",
            Op::Create => "device created",
            Op::Register => "registered",
            Op::Unregister => "unregistered",
            Op::Unplug => "unplugged",
            Op::Open => "file opened",
            Op::Close => "file closed",
            Op::LastRef => "last reference dropped",
            Op::DeviceAdd => "device added",
            Op::Probe => "probed",
            Op::Bind => "driver bound",
            Op::Unbind => "driver unbound",
            Op::DeviceRemove => "device removed",
            Op::Revoke => "devres values revoked",
            Op::Refused => "access refused",
            Op::Get => "reference taken",
            Op::Put => "reference dropped",
            Op::Panic => "release action panicked",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which access was refused ([`Op::Refused`]'s `detail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The unplug gate refused entry (`drm_dev_enter` after unplug).
    Gate,
    /// Opening an unplugged device.
    Open,
    /// Reaching a revoked `Devres` value.
    Devres,
}

impl Refusal {
    const fn as_str(self) -> &'static str {
        match self {
            Refusal::Gate => "gate",
            Refusal::Open => "open",
            Refusal::Devres => "devres",
        }
    }
}

/// The owner of a list as events name it: id, name, and what kind of device it is.
#[derive(Clone, Copy)]
struct Owner<'a> {
    id: u64,
    name: &'a str,
    bus: bool,
}

/// The name prefix of a bus device's devres list (its default name is never used: bus
/// devices are always named); it tells a devres list from a drmm one.
pub(crate) const BUS_LIST_PREFIX: &str = "busdev";

impl<'a> Owner<'a> {
    fn of<C>(list: &'a ResourceList<C>) -> Self {
        Owner {
            id: list.id(),
            name: list.owner(),
            bus: list.prefix() == BUS_LIST_PREFIX,
        }
    }

    const fn dev_kind(self) -> &'static str {
        if self.bus { "bus" } else { "logical" }
    }

    const fn list(self) -> &'static str {
        if self.bus { "devres" } else { "drmm" }
    }
}

/// An entry event (`ADD`, `DEL`, `REL`, `REM`, `REPLACE`).
///
/// Inlined down to `tracing`'s global level check (one relaxed load and a compare), so that
/// when debug events are off the caller never materialises the arguments; the event itself is
/// out of line, so that its code does not crowd the caller's hot path (registers spilled
/// around it cost more than the check).
#[inline(always)]
pub(crate) fn entry<C>(
    op: Op,
    list: &ResourceList<C>,
    seq: u64,
    site: &Site,
    kind: EntryKind,
    size: usize,
) {
    if debug_possible() {
        entry_event(op, list, seq, site, kind, size);
    }
}

#[cold]
#[inline(never)]
fn entry_event<C>(
    op: Op,
    list: &ResourceList<C>,
    seq: u64,
    site: &Site,
    kind: EntryKind,
    size: usize,
) {
    let o = Owner::of(list);
    tracing::debug!(
        target: "drmm",
        op = op.as_str(),
        dev = o.id,
        dev_name = o.name,
        dev_kind = o.dev_kind(),
        list = o.list(),
        entry = seq,
        name = site.name(),
        kind = kind.as_str(),
        size = size as u64,
        file = site.location().file(),
        line = site.location().line(),
        "{}",
        op.message(),
    );
}

/// An entry event emitted inside a panic net, for the release paths: the subscriber is user
/// code, and its panic must not stop a release (nor abort one that runs while the thread is
/// unwinding). Returns the subscriber's panic. Costs what [`entry`] costs when nothing is
/// recorded.
#[inline(always)]
pub(crate) fn entry_caught<C>(
    op: Op,
    list: &ResourceList<C>,
    seq: u64,
    site: &Site,
    kind: EntryKind,
    size: usize,
) -> Option<PanicPayload> {
    if debug_possible() {
        entry_event_caught(op, list, seq, site, kind, size)
    } else {
        None
    }
}

#[cold]
#[inline(never)]
fn entry_event_caught<C>(
    op: Op,
    list: &ResourceList<C>,
    seq: u64,
    site: &Site,
    kind: EntryKind,
    size: usize,
) -> Option<PanicPayload> {
    caught(|| entry_event(op, list, seq, site, kind, size))
}

/// Runs `emit` (code that emits events: the subscriber behind them is user code) inside a
/// panic net, and returns its panic.
#[inline]
pub(crate) fn caught(emit: impl FnOnce()) -> Option<PanicPayload> {
    panic::catch_unwind(AssertUnwindSafe(emit)).err()
}

/// Whether any debug event could be recorded now: `tracing`'s global level check only (one
/// relaxed load), the first test [`entry`] makes. False means no entry event will be
/// recorded, so a caller may skip gathering what only the event needs.
#[inline(always)]
pub(crate) fn debug_possible() -> bool {
    tracing::level_enabled!(tracing::Level::DEBUG)
}

/// Whether entry events would be recorded now (a subscriber is interested in `drmm` debug
/// events). Lets a bulk release skip work that only exists to emit them.
#[inline]
pub(crate) fn entry_events_enabled() -> bool {
    tracing::enabled!(target: "drmm", tracing::Level::DEBUG)
}

/// A list's release begins.
pub(crate) fn release_begin<C>(list: &ResourceList<C>) {
    let o = Owner::of(list);
    tracing::debug!(
        target: "drmm",
        op = Op::ReleaseBegin.as_str(),
        dev = o.id,
        dev_name = o.name,
        dev_kind = o.dev_kind(),
        list = o.list(),
        "{}",
        Op::ReleaseBegin.message(),
    );
}

/// A list's release ended after releasing `released` entries.
pub(crate) fn release_end<C>(list: &ResourceList<C>, released: usize) {
    let o = Owner::of(list);
    tracing::debug!(
        target: "drmm",
        op = Op::ReleaseEnd.as_str(),
        dev = o.id,
        dev_name = o.name,
        dev_kind = o.dev_kind(),
        list = o.list(),
        detail = %released,
        "{}",
        Op::ReleaseEnd.message(),
    );
}

/// Registering an entry failed (the kernel's "failed to add action" / "failed to allocate").
pub(crate) fn add_failed<C>(list: &ResourceList<C>, site: &Site, error: &crate::Error) {
    if debug_possible() {
        add_failed_event(list, site, error);
    }
}

#[cold]
#[inline(never)]
fn add_failed_event<C>(list: &ResourceList<C>, site: &Site, error: &crate::Error) {
    let o = Owner::of(list);
    tracing::debug!(
        target: "drmm",
        op = Op::AddFailed.as_str(),
        dev = o.id,
        dev_name = o.name,
        dev_kind = o.dev_kind(),
        list = o.list(),
        name = site.name(),
        file = site.location().file(),
        line = site.location().line(),
        detail = %error,
        "{}",
        Op::AddFailed.message(),
    );
}

/// A release action panicked during a list's release. The first panic is resumed when the
/// release completes; later ones are only reported here.
pub(crate) fn release_panicked<C>(list: &ResourceList<C>, site: &Site, message: &str, first: bool) {
    let o = Owner::of(list);
    tracing::error!(
        target: "drmm",
        op = Op::Panic.as_str(),
        dev = o.id,
        dev_name = o.name,
        dev_kind = o.dev_kind(),
        list = o.list(),
        name = site.name(),
        file = site.location().file(),
        line = site.location().line(),
        detail = message,
        resumed = first,
        "{}{}",
        Op::Panic.message(),
        if first { "" } else { " (not resumed: an earlier panic will be)" },
    );
}

/// A release that ran while the thread was already unwinding caught a panic; resuming it would
/// abort the process, so it is only reported (the panic itself was reported where it was
/// caught, so this is no [`Op`]).
pub(crate) fn panic_not_resumed(owner: &str, message: &str) {
    tracing::error!(
        target: "drmm",
        dev_name = owner,
        detail = message,
        "a panic caught while the thread was already unwinding is not resumed",
    );
}

/// A lifecycle moment of the device that owns `list` ([`Op::Create`], [`Op::Bind`], ...):
/// the moments between which the entry events happen.
#[inline]
pub(crate) fn lifecycle<C>(list: &ResourceList<C>, op: Op) {
    if debug_possible() {
        lifecycle_event(list, op, None);
    }
}

/// A lifecycle moment with a `detail` (a probe's result, a count).
#[inline]
pub(crate) fn lifecycle_detail<C>(list: &ResourceList<C>, op: Op, detail: fmt::Arguments<'_>) {
    if debug_possible() {
        lifecycle_event(list, op, Some(detail));
    }
}

#[cold]
#[inline(never)]
fn lifecycle_event<C>(list: &ResourceList<C>, op: Op, detail: Option<fmt::Arguments<'_>>) {
    let o = Owner::of(list);
    tracing::debug!(
        target: "drmm",
        op = op.as_str(),
        dev = o.id,
        dev_name = o.name,
        dev_kind = o.dev_kind(),
        detail = detail,
        "{}",
        op.message(),
    );
}

/// An access refused after unplug or revocation, made at `location`; `name` is the type of a
/// refused `Devres` value. Emitted on the refusal path only.
#[inline]
pub(crate) fn refused<C>(
    list: &ResourceList<C>,
    what: Refusal,
    name: Option<&str>,
    location: &'static Location<'static>,
) {
    if debug_possible() {
        refused_event(list, what, name, location);
    }
}

#[cold]
#[inline(never)]
fn refused_event<C>(
    list: &ResourceList<C>,
    what: Refusal,
    name: Option<&str>,
    location: &'static Location<'static>,
) {
    let o = Owner::of(list);
    tracing::debug!(
        target: "drmm",
        op = Op::Refused.as_str(),
        dev = o.id,
        dev_name = o.name,
        dev_kind = o.dev_kind(),
        name = name,
        file = location.file(),
        line = location.line(),
        detail = what.as_str(),
        "{}",
        Op::Refused.message(),
    );
}
