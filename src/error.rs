//! The error type shared by every part of the library.
//!
//! The kernel answers bad input with `NULL`, `-ENOMEM`, `-ENOENT` or a `WARN` splat; here every
//! one of those cases is a variant of [`Error`], and the list it concerns is left exactly as it
//! was (promise 6 in docs/architecture.md).

use std::alloc::Layout;

/// Everything that can go wrong in a managed-resource operation.
///
/// Each variant names the kernel behaviour it replaces. The enum is `#[non_exhaustive]`: later
/// layers (bus binding, revocation, the unplug gate) add their own cases.
///
/// # Examples
///
/// ```
/// let dev = drmm::Device::new(());
/// match dev.kmalloc_array(usize::MAX, 2) {
///     Err(drmm::Error::SizeOverflow { what }) => println!("refused: {what}"),
///     other => panic!("unexpected {other:?}"),
/// }
/// // Another device's handle is an error, and both lists stay intact.
/// let other = drmm::Device::new(());
/// let buf = other.kzalloc(8)?;
/// assert!(matches!(dev.kfree(buf), Err(drmm::Error::ForeignHandle { .. })));
/// assert_eq!(other.resource_count(), 1);
/// # Ok::<(), drmm::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The allocator refused a request (`-ENOMEM`). The list is unchanged.
    #[error("out of memory allocating {size} bytes (align {align})")]
    OutOfMemory {
        /// Bytes requested.
        size: usize,
        /// Alignment requested.
        align: usize,
    },
    /// A size computation (`n * size`, `len + header`, rounding up to the alignment) overflowed
    /// (`check_mul_overflow` / `check_add_overflow` in the kernel), or an add would pass one of
    /// a list's fixed limits: `u32::MAX - 1` entries at once, 2^48 - 1 adds in its life,
    /// 65,535 distinct sites (name, source location, entry type). The list is unchanged.
    #[error("size overflow: {what}")]
    SizeOverflow {
        /// Which computation overflowed.
        what: &'static str,
    },
    /// An alignment that is not a power of two, or too large to satisfy.
    #[error("invalid alignment {align}")]
    InvalidAlignment {
        /// The alignment asked for.
        align: usize,
    },
    /// The handle belongs to another resource list (another device or binding). The kernel
    /// would scan its list, find nothing and `WARN`; we say which lists were involved.
    #[error("handle of list #{handle_list} used on list #{list}")]
    ForeignHandle {
        /// Identity of the list the handle was created on.
        handle_list: u64,
        /// Identity of the list it was used with.
        list: u64,
    },
    /// The entry is no longer on its list: it was released by a group release or by the list's
    /// own release, or removed (the kernel's "not found" `WARN`).
    #[error("entry is no longer on its list (already released or removed)")]
    NotOnList,
    /// The entry is being released by its list right now, on another thread or further up this
    /// thread's stack; it will have run exactly once when that release completes.
    #[error("entry is being released by its list")]
    Releasing,
    /// The group is already closed (the kernel `WARN`s on a second `devres_close_group`).
    #[error("group is already closed")]
    GroupClosed,
    /// The bus device has no driver bound: the binding ended (unbind, removal) or never began.
    /// Devres calls and [`with_bound`](crate::bus::BusDevice::with_bound) need a binding.
    #[error("bus device is not bound to a driver")]
    NotBound,
    /// The bus device already has a driver bound (`-EBUSY` from the driver core).
    #[error("bus device is already bound to a driver")]
    AlreadyBound,
    /// The bus device has been removed from its bus (`device_del`): it can no longer be
    /// bound or used.
    #[error("bus device has been removed from its bus")]
    Removed,
    /// The calling thread is already inside this bus device's exclusive scope (probe, remove,
    /// a devres release or `with_bound`); entering again would deadlock (the kernel would
    /// deadlock on `device_lock`).
    #[error("this thread already holds the bus device's scope; entering again would deadlock")]
    Reentrant,
    /// A driver's probe failed for a reason of its own.
    #[error("probe failed: {reason}")]
    ProbeFailed {
        /// What the driver said.
        reason: Box<str>,
    },
    /// A driver's probe cannot complete yet (`-EPROBE_DEFER`): something it needs is not there
    /// yet. Like a failure, it leaves nothing registered on the binding; unlike one, the bus
    /// keeps the device on its deferred list and probes it again when another probe succeeds
    /// ([`Bus::deferred`](crate::bus::Bus::deferred) says who waits and why).
    #[doc(alias = "EPROBE_DEFER")]
    #[error("probe deferred: {reason}")]
    ProbeDefer {
        /// What the driver waits for.
        reason: Box<str>,
    },
    /// The logical device is not registered (never registered, or unregistered): it cannot be
    /// opened (`-ENODEV` from `drm_open`).
    #[error("device is not registered")]
    NotRegistered,
    /// The logical device is already registered (the kernel says "never call
    /// `drm_dev_register` twice").
    #[error("device is already registered")]
    AlreadyRegistered,
    /// The logical device has been unplugged (`drm_dev_unplug`): it cannot be registered,
    /// opened or entered any more (`-ENODEV`).
    #[error("device has been unplugged")]
    Unplugged,
    /// The revocable resource has been revoked (unbind, or it was dropped).
    #[error("resource has been revoked")]
    Revoked,
    /// The work queue refuses new work: it has been destroyed, or it is draining and the
    /// caller is not one of its own work items (the kernel `WARN`s on such a `queue_work`).
    #[error("work queue is destroyed or draining")]
    QueueClosed,
    /// The binding has no driver data yet (inside probe or remove, or a driver-less device).
    #[error("the binding has no driver data")]
    NoDriverData,
    /// The driver data is not of the type asked for.
    #[error("the driver data is not a {expected}")]
    WrongType {
        /// The type asked for.
        expected: &'static str,
    },
}

impl Error {
    /// A [`ProbeFailed`](Error::ProbeFailed) error with `reason`, for drivers.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = drmm::Error::probe_failed("no such hardware");
    /// assert_eq!(e.to_string(), "probe failed: no such hardware");
    /// ```
    pub fn probe_failed(reason: impl Into<Box<str>>) -> Self {
        Error::ProbeFailed {
            reason: reason.into(),
        }
    }

    /// A [`ProbeDefer`](Error::ProbeDefer) answer with `reason`: "not yet, try again later".
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use drmm::{Bound, Bus, Driver, Error};
    ///
    /// struct NeedsClock;
    /// impl Driver for NeedsClock {
    ///     type Data = ();
    ///     fn probe(&self, _dev: &mut Bound<'_>) -> drmm::Result<()> {
    ///         Err(Error::probe_defer("clock provider not probed yet"))
    ///     }
    /// }
    ///
    /// let bus = Bus::new("platform");
    /// let dev = bus.add_device("uart.0");
    /// assert!(matches!(dev.bind(Arc::new(NeedsClock)), Err(Error::ProbeDefer { .. })));
    /// let waiting = bus.deferred();
    /// assert_eq!(waiting[0].0.name(), "uart.0");
    /// assert_eq!(&*waiting[0].1, "clock provider not probed yet");
    /// ```
    #[doc(alias = "EPROBE_DEFER")]
    #[doc(alias = "dev_err_probe")]
    pub fn probe_defer(reason: impl Into<Box<str>>) -> Self {
        Error::ProbeDefer {
            reason: reason.into(),
        }
    }

    /// The error for a failed allocation of `layout`.
    pub(crate) fn oom(layout: Layout) -> Self {
        Error::OutOfMemory {
            size: layout.size(),
            align: layout.align(),
        }
    }
}

/// `Result` with [`Error`] as the error type.
///
/// # Examples
///
/// ```
/// fn probe(dev: &drmm::Device<()>) -> drmm::Result<drmm::Managed<[u8]>> {
///     dev.kzalloc(4096)
/// }
/// let dev = drmm::Device::new(());
/// assert_eq!(probe(&dev)?.get(&dev)?.len(), 4096);
/// # Ok::<(), drmm::Error>(())
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_errors_have_distinct_messages() {
        let all = [
            Error::GroupClosed,
            Error::NotBound,
            Error::AlreadyBound,
            Error::Removed,
            Error::Reentrant,
            Error::probe_failed("x"),
            Error::probe_defer("x"),
            Error::NotRegistered,
            Error::AlreadyRegistered,
            Error::Unplugged,
            Error::Revoked,
            Error::QueueClosed,
            Error::NoDriverData,
            Error::WrongType { expected: "u32" },
        ];
        let msgs: std::collections::HashSet<String> = all.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), all.len());
        assert_eq!(
            Error::probe_failed("x"),
            Error::ProbeFailed { reason: "x".into() }
        );
        assert_ne!(Error::NotBound, Error::Removed);
    }
}
