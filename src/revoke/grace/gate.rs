//! The closeable gate: a grace-period [`Domain`] with a "closed" flag, the mechanism behind
//! `drm_dev_enter`, `drm_dev_exit` and `drm_dev_unplug`.

use std::fmt;

use super::{Domain, ReadGuard};
use crate::error::Error;
use crate::sync::{AtomicBool, Ordering};

/// A closeable grace-period domain: the mechanism behind `drm_dev_enter`, `drm_dev_exit` and
/// `drm_dev_unplug`.
///
/// Code that touches the hardware brackets the access with [`enter`](Self::enter) (which fails
/// once the gate is closed) and the guard's drop. Unplug calls
/// [`close_and_wait`](Self::close_and_wait): it refuses new entries and waits until everyone who
/// was inside has left, after which the hardware-facing resources can be released.
///
/// # Examples
///
/// ```
/// use drmm::revoke::Gate;
///
/// let gate = Gate::new();
/// if let Some(_inside) = gate.enter() {
///     // talk to the hardware
/// }
/// gate.close_and_wait();
/// assert!(gate.enter().is_none());
/// assert!(gate.is_closed());
/// ```
#[derive(Debug, Default)]
pub struct Gate {
    pub(super) domain: Domain,
    closed: AtomicBool,
}

impl Gate {
    /// Creates an open gate.
    ///
    /// # Examples
    ///
    /// ```
    /// let gate = drmm::revoke::Gate::new();
    /// assert!(!gate.is_closed());
    /// ```
    // Inline: as `Domain::new`.
    #[inline]
    pub fn new() -> Self {
        Gate {
            domain: Domain::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Makes the gate's per-thread counters now, so that entering never allocates (see
    /// [`Domain`]).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`] if they cannot be allocated.
    pub(crate) fn prepare(&self) -> Result<(), Error> {
        self.domain.prepare()
    }

    /// Enters the gate: `Some(guard)` while it is open, `None` once
    /// [`close_and_wait`](Self::close_and_wait) has begun. The section ends when the guard is
    /// dropped (`drm_dev_exit`).
    ///
    /// Entries nest: entering again while holding a guard succeeds as long as the gate is still
    /// open. An inner entry attempted after closing began fails like any other, while the outer
    /// guard stays valid (and `close_and_wait` keeps waiting for it).
    ///
    /// Costs a section of the domain (see [`Domain::read`]: on the thread's own shard, a store
    /// and a fence on entry, a plain store on exit) plus one load of the closed flag.
    ///
    /// # Examples
    ///
    /// ```
    /// let gate = drmm::revoke::Gate::new();
    /// let outer = gate.enter().expect("open");
    /// let inner = gate.enter().expect("still open");
    /// drop((inner, outer));
    /// ```
    #[doc(alias = "drm_dev_enter")]
    #[inline]
    pub fn enter(&self) -> Option<GateGuard<'_>> {
        let read = self.domain.read();
        // SeqCst after the increment: pairs with the SeqCst store in `close_and_wait` (Dekker).
        if self.closed.load(Ordering::SeqCst) {
            return None;
        }
        Some(GateGuard { _read: read })
    }

    /// Closes the gate and waits until every guard that was inside has been dropped.
    ///
    /// After this returns, no [`GateGuard`] of this gate exists (except leaked ones, which make
    /// this call wait forever) and none can be created: [`enter`](Self::enter) returns `None`.
    /// Everything the holders did inside happens before the return. Calling it again, or
    /// concurrently from several threads, is fine: each call returns only once the gate is empty.
    ///
    /// Returns `true` if this call closed the gate, `false` if it was already closed.
    ///
    /// # Panics
    ///
    /// Panics if the calling thread holds a guard of this gate (the call would wait for itself
    /// forever), as [`Domain::synchronize`] detects it (always in debug builds, usually in
    /// release builds, which otherwise deadlock). The gate is left open when the panic happens.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// let gate = drmm::revoke::Gate::new();
    /// let inside = AtomicUsize::new(0);
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         if let Some(_g) = gate.enter() {
    ///             inside.fetch_add(1, Ordering::Relaxed);
    ///             inside.fetch_sub(1, Ordering::Relaxed);
    ///         }
    ///     });
    ///     assert!(gate.close_and_wait());
    ///     assert_eq!(inside.load(Ordering::Relaxed), 0);
    /// });
    /// assert!(!gate.close_and_wait());
    /// ```
    #[doc(alias = "drm_dev_unplug")]
    pub fn close_and_wait(&self) -> bool {
        self.domain.assert_not_reading();
        let closed_now = !self.closed.swap(true, Ordering::SeqCst);
        self.domain.synchronize_checked();
        closed_now
    }

    /// Whether [`close_and_wait`](Self::close_and_wait) has been called (it may still be waiting).
    ///
    /// # Examples
    ///
    /// ```
    /// let gate = drmm::revoke::Gate::new();
    /// gate.close_and_wait();
    /// assert!(gate.is_closed());
    /// ```
    #[doc(alias = "drm_dev_is_unplugged")]
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Number of grace periods the gate's domain has completed; see
    /// [`Domain::grace_periods`].
    ///
    /// # Examples
    ///
    /// ```
    /// let gate = drmm::revoke::Gate::new();
    /// gate.close_and_wait();
    /// assert_eq!(gate.grace_periods(), 1);
    /// ```
    pub fn grace_periods(&self) -> u64 {
        self.domain.grace_periods()
    }
}

/// Proof of being inside an open [`Gate`]; dropping it leaves (`drm_dev_exit`).
///
/// `!Send`: a section is left on the thread that entered it.
///
/// ```compile_fail
/// let gate = drmm::revoke::Gate::new();
/// std::thread::scope(|s| {
///     let guard = gate.enter().unwrap();
///     s.spawn(move || drop(guard)); // error: `GateGuard` cannot be sent between threads
/// });
/// ```
///
/// Covariant in `'a`, as a shared borrow of the gate is: a shorter `'a` only ends the proof
/// sooner, and the guard cannot outlive the gate it borrows:
///
/// ```compile_fail
/// let gate = drmm::revoke::Gate::new();
/// let guard = gate.enter().unwrap();
/// drop(gate); // error: `gate` is borrowed by `guard`
/// drop(guard);
/// ```
#[doc(alias = "drm_dev_exit")]
#[must_use = "the gate is left as soon as the guard is dropped"]
pub struct GateGuard<'a> {
    _read: ReadGuard<'a>,
}

impl fmt::Debug for GateGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateGuard").finish_non_exhaustive()
    }
}
