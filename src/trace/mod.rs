//! The event vocabulary and the one place where the library emits events.
//!
//! Events go through the [`tracing`](https://docs.rs/tracing) crate with target `drmm`, so they are filtered the usual
//! way (`RUST_LOG=drmm=debug` with `tracing-subscriber`'s `EnvFilter`). The wording follows the
//! kernel's `drm_dbg_drmres`/`devres_log` lines: `ADD`, `DEL`, `REL`, `REM`, and
//! `release begin`/`release end` around a list's release. Every entry event carries the
//! owner, the entry's sequence number, name, kind, size and the caller's source location as
//! structured fields.
//!
//! With no subscriber, or one that filters `drmm` out, an event costs one relaxed load of the
//! call site's cached interest.
//!
//! # Examples
//!
//! Any `tracing` subscriber receives the events; with `tracing-subscriber`:
//!
//! ```
//! use tracing_subscriber::{EnvFilter, fmt};
//!
//! let subscriber = fmt().with_env_filter(EnvFilter::new("drmm=debug")).finish();
//! tracing::subscriber::with_default(subscriber, || {
//!     let dev = drmm::Device::with_name("card0", ());
//!     let _buf = dev.kzalloc(64); // an `ADD` event: owner card0, name kzalloc, 64 bytes
//! }); // `release begin`, `REL`, `release end`
//! ```

use std::fmt;

use crate::res::{EntryKind, ResourceList, Site};

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
}

impl Op {
    /// The kernel's name: `"ADD"`, `"DEL"`, `"REL"`, `"REM"`, `"REPLACE"`.
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
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An entry event (`ADD`, `DEL`, `REL`, `REM`).
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
    tracing::debug!(
        target: "drmm",
        op = op.as_str(),
        list = list.id(),
        owner = list.owner(),
        seq,
        name = site.name(),
        kind = kind.as_str(),
        size,
        location = %site.location(),
        "{}: {} #{} {} ({} bytes) at {}",
        list.owner(),
        op,
        seq,
        site.name(),
        size,
        site.location(),
    );
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
    tracing::debug!(
        target: "drmm",
        op = "BEGIN",
        list = list.id(),
        owner = list.owner(),
        "{}: release begin",
        list.owner(),
    );
}

/// A list's release ended after releasing `released` entries.
pub(crate) fn release_end<C>(list: &ResourceList<C>, released: usize) {
    tracing::debug!(
        target: "drmm",
        op = "END",
        list = list.id(),
        owner = list.owner(),
        released,
        "{}: release end ({} entries)",
        list.owner(),
        released,
    );
}

/// Registering an entry failed (the kernel's "failed to add action" / "failed to allocate").
pub(crate) fn add_failed(owner: &str, site: &Site, error: &crate::Error) {
    tracing::debug!(
        target: "drmm",
        op = "FAIL",
        owner,
        name = site.name(),
        location = %site.location(),
        %error,
        "{}: failed to add {} at {}: {}",
        owner,
        site.name(),
        site.location(),
        error,
    );
}

/// A release action panicked during a list's release. The first panic is resumed when the
/// release completes; later ones are only reported here.
pub(crate) fn release_panicked(owner: &str, site: &Site, message: &str, first: bool) {
    tracing::error!(
        target: "drmm",
        owner,
        name = site.name(),
        location = %site.location(),
        message,
        resumed = first,
        "{}: release of {} (registered at {}) panicked: {}{}",
        owner,
        site.name(),
        site.location(),
        message,
        if first { "" } else { " (not resumed: an earlier panic will be)" },
    );
}

/// A release that ran while the thread was already unwinding caught a panic; resuming it would
/// abort the process, so it is only reported.
pub(crate) fn panic_not_resumed(owner: &str, message: &str) {
    tracing::error!(
        target: "drmm",
        owner,
        message,
        "{}: a release action panicked while the thread was already unwinding: {}",
        owner,
        message,
    );
}

/// A lifecycle moment of a device (`BIND`, `PROBE_FAILED`, `UNBIND`, `REMOVE`, `REGISTER`,
/// `UNREGISTER`, `UNPLUG`, `OPEN`, `CLOSE`), for timelines: the moments between which the
/// entry events happen.
pub(crate) fn lifecycle(owner: &str, event: &'static str) {
    tracing::debug!(
        target: "drmm",
        op = event,
        owner,
        "{}: {}",
        owner,
        event,
    );
}
