//! An exclusive scope around a list: the proof that makes handle reads, group releases and
//! bulk releases of one list safe without a reference count per entry.
//!
//! A bus device's devres list is read through handles while the device is bound, and released
//! in bulk at unbind and in part by group releases. A reference obtained from a handle must
//! never outlive the entry it points into. The kernel leaves that to the driver; here it is a
//! borrow: every read of the list's handles, and every release that frees entries whose handles
//! may still exist, goes through a [`Scope`], of which at most one exists per list at a time
//! (like holding the kernel's `device_lock`). Reads borrow the scope shared, releases borrow it
//! mutably, so the borrow checker proves that no reference read through a handle is alive when
//! memory is freed, on this thread; the exclusivity of the scope proves it for the others.
//!
//! The scope also guards one type-erased slot (the binding's driver data), readable by the
//! scope's holder only.

use std::any::Any;
use std::cell::UnsafeCell;
use std::marker::PhantomData;

use crate::error::{Error, Result};
use crate::res::group::{Group, GroupRelease};
use crate::res::handle::Key;
use crate::res::list::{PanicPayload, ResourceList};
use crate::sync::{Condvar, Mutex, MutexGuard, ThreadKey, current_thread, lock};

/// What the scope's slot holds.
pub(crate) type SlotValue = Box<dyn Any + Send + Sync>;

/// A resource list whose handle reads and freeing releases happen inside an exclusive
/// [`Scope`].
///
/// # Invariants
///
/// * At most one [`Scope`] of this list exists at any time; `holder` names the thread that
///   entered it, and is `None` when none exists.
/// * `slot` is accessed only through the live [`Scope`]: shared through `&Scope`, mutably
///   through `&mut Scope`.
/// * References obtained from a handle of `list` through [`Scope::check_live`] borrow the
///   scope (the owners that vouch for this list do so through a borrowed scope only).
pub(crate) struct ScopedList<C> {
    list: ResourceList<C>,
    holder: Mutex<Option<ThreadKey>>,
    left: Condvar,
    slot: UnsafeCell<Option<SlotValue>>,
}

// SAFETY: `slot` is only reached by the holder of the unique scope (see the invariants), which
// serialises every access to it like a mutex would, and its contents are `Send + Sync`. The
// other fields are thread-safe on their own.
unsafe impl<C> Sync for ScopedList<C> where ResourceList<C>: Sync {}

impl<C> ScopedList<C> {
    /// Wraps `list`.
    pub(crate) fn new(list: ResourceList<C>) -> Self {
        ScopedList {
            list,
            holder: Mutex::new(None),
            left: Condvar::new(),
            slot: UnsafeCell::new(None),
        }
    }

    /// The list, for the operations that need no scope: adding entries, and releasing or
    /// removing one entry through its handle (which the caller gives up, so no reference read
    /// through it can be alive).
    pub(crate) fn list(&self) -> &ResourceList<C> {
        &self.list
    }

    /// Enters the scope, waiting while another thread holds it.
    ///
    /// # Errors
    ///
    /// [`Error::Reentrant`] if this thread already holds it (waiting would deadlock).
    pub(crate) fn enter(&self) -> Result<Scope<'_, C>> {
        let me = current_thread();
        let mut holder = lock(&self.holder);
        loop {
            match *holder {
                None => break,
                Some(t) if t == me => return Err(Error::Reentrant),
                Some(_) => holder = wait(&self.left, holder),
            }
        }
        *holder = Some(me);
        // INVARIANT: `holder` was `None`, so no other scope exists; it now names this one.
        Ok(Scope {
            owner: self,
            _not_send: PhantomData,
        })
    }
}

fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    #[cfg(loom)]
    {
        cv.wait(guard).unwrap_or_else(|e| e.into_inner())
    }
    #[cfg(not(loom))]
    {
        cv.wait(guard)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<C> std::fmt::Debug for ScopedList<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedList")
            .field("list", &self.list)
            .finish_non_exhaustive()
    }
}

/// The exclusive scope of a [`ScopedList`]; leaving it (dropping) lets the next thread in.
///
/// `!Send` (it is left on the thread that entered it) but `Sync`: sharing `&Scope` with
/// scoped threads only shares reads.
///
/// # Invariants
///
/// This is the only scope of `owner` while it lives (see [`ScopedList`]'s invariants).
pub(crate) struct Scope<'a, C> {
    owner: &'a ScopedList<C>,
    _not_send: PhantomData<MutexGuard<'static, ()>>,
}

impl<C> Scope<'_, C> {
    /// The list.
    pub(crate) fn list(&self) -> &ResourceList<C> {
        &self.owner.list
    }

    /// Checks that `key` names a live entry of the list. A reference the caller derives from
    /// it must borrow this scope.
    pub(crate) fn check_live(&self, key: &Key) -> Result<()> {
        self.owner.list.check_live(key)
    }

    /// Releases every entry of the list, newest first (see
    /// [`ResourceList::release_all`]); returns the first panic.
    pub(crate) fn release_all(&mut self, ctx: &C) -> Option<PanicPayload> {
        // SAFETY: references read through the list's handles borrow the unique scope (type
        // invariants); `&mut self` proves that none is alive on this thread, and no other
        // thread can hold a scope of this list to create one while this runs.
        unsafe { self.owner.list.release_all(ctx) }
    }

    /// Releases a group (see [`ResourceList::release_group`]).
    ///
    /// # Errors
    ///
    /// As for [`ResourceList::release_group`].
    pub(crate) fn release_group(&mut self, group: Group, ctx: &C) -> Result<GroupRelease> {
        // SAFETY: as in `release_all`.
        unsafe { self.owner.list.release_group(group, ctx) }
    }

    /// The slot's value.
    pub(crate) fn slot(&self) -> Option<&(dyn Any + Send + Sync)> {
        // SAFETY: only the unique scope reaches the slot, and mutation needs `&mut Scope`, which
        // cannot coexist with the `&self` this reference borrows.
        unsafe { (*self.owner.slot.get()).as_deref() }
    }

    /// The slot, mutably.
    pub(crate) fn slot_mut(&mut self) -> &mut Option<SlotValue> {
        // SAFETY: only the unique scope reaches the slot, and `&mut self` excludes every other
        // reference derived from it.
        unsafe { &mut *self.owner.slot.get() }
    }
}

impl<C> Drop for Scope<'_, C> {
    fn drop(&mut self) {
        *lock(&self.owner.holder) = None;
        self.owner.left.notify_all();
    }
}

impl<C> std::fmt::Debug for Scope<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("list", &self.owner.list)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn reentry_is_an_error_and_others_wait() {
        let s = ScopedList::<()>::new(ResourceList::new(None, "s"));
        let scope = s.enter().unwrap();
        assert!(matches!(s.enter(), Err(Error::Reentrant)));
        std::thread::scope(|t| {
            let h = t.spawn(|| {
                let mut inner = s.enter().unwrap();
                *inner.slot_mut() = Some(Box::new(5u8));
            });
            std::thread::sleep(std::time::Duration::from_millis(20));
            assert!(scope.slot().is_none(), "the other thread is still waiting");
            drop(scope);
            h.join().unwrap();
        });
        let scope = s.enter().unwrap();
        assert_eq!(scope.slot().and_then(|v| v.downcast_ref::<u8>()), Some(&5));
    }
}
