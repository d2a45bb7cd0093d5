//! A reference-counted owner whose last reference releases its list, then drops the owner,
//! then frees the memory.
//!
//! This is the seed's `drm_dev_release` + "final kfree" made structural: the order cannot be
//! got wrong by a driver, and a panicking release action cannot leak the owner's memory
//! (resuming the panic from inside `Arc`'s destructor would skip its deallocation).

use std::alloc::{self, Layout};
use std::ops::Deref;
use std::panic::{self, AssertUnwindSafe};
use std::ptr::NonNull;

use crate::res::list::{PanicPayload, PanicSink};
use crate::sync::fallible::try_box_uninit;
use crate::sync::{AtomicUsize, Ordering, fence};

/// An object that owns managed resources released when its last reference goes.
pub(crate) trait FinalRelease {
    /// Releases the object's resources (its list, newest first), catching panics; returns the
    /// first one.
    ///
    /// Called exactly once, when no reference to the object is left, before the object is
    /// dropped.
    fn release_resources(&self) -> Option<PanicPayload>;

    /// The object's name for panic reports.
    fn owner_name(&self) -> &str;
}

struct Inner<D> {
    refs: AtomicUsize,
    value: D,
}

/// A strong reference to a `D` (`kref`).
///
/// # Invariants
///
/// `ptr` points to a live `Inner<D>` allocated with `Layout::new::<Inner<D>>()`, whose `refs`
/// counts the `Kref`s pointing to it; the allocation is released by the `Kref` that takes
/// `refs` from 1 to 0, and nothing can raise `refs` from 0.
pub(crate) struct Kref<D: FinalRelease> {
    ptr: NonNull<Inner<D>>,
}

// SAFETY: like `Arc<D>`: sharing and sending references needs `D: Send + Sync` because the
// last reference drops `D` on whichever thread holds it.
unsafe impl<D: FinalRelease + Send + Sync> Send for Kref<D> {}
// SAFETY: as above.
unsafe impl<D: FinalRelease + Send + Sync> Sync for Kref<D> {}

/// Beyond this many references, `get` aborts rather than risk the count wrapping (as `Arc`).
const MAX_REFS: usize = isize::MAX as usize;

impl<D: FinalRelease> Kref<D> {
    /// Moves `value` into a new allocation with one reference; aborts if the allocator fails
    /// (as `Arc::new`).
    pub(crate) fn new(value: D) -> Self {
        Self::from_box(Box::new(Inner {
            refs: AtomicUsize::new(1),
            value,
        }))
    }

    /// [`new`](Self::new) of the value `make` returns, or
    /// [`Error::OutOfMemory`](crate::Error::OutOfMemory). The value is built after the
    /// allocation succeeded, so that most of it can be written straight into it (a `D` passed
    /// by value is built on the stack and copied; a device is several hundred bytes). If the
    /// allocation fails, `make` is not called (its captures are dropped).
    pub(crate) fn try_new_with(make: impl FnOnce() -> D) -> crate::Result<Self> {
        let uninit = try_box_uninit::<Inner<D>>()?;
        Ok(Self::from_box(Box::write(
            uninit,
            Inner {
                refs: AtomicUsize::new(1),
                value: make(),
            },
        )))
    }

    fn from_box(inner: Box<Inner<D>>) -> Self {
        // INVARIANT: a fresh allocation of `Inner<D>` with `Box`'s layout, one reference.
        Kref {
            ptr: NonNull::from(Box::leak(inner)),
        }
    }

    fn inner(&self) -> &Inner<D> {
        // SAFETY: by the invariant the allocation is live while this reference exists.
        unsafe { self.ptr.as_ref() }
    }

    /// Current number of references (a snapshot: it may change at once).
    pub(crate) fn count(&self) -> usize {
        self.inner().refs.load(Ordering::Acquire)
    }

    /// Whether two references point to the same object.
    pub(crate) fn ptr_eq(a: &Self, b: &Self) -> bool {
        a.ptr == b.ptr
    }

    /// The final put: release resources, drop the value, free the memory, then report.
    #[cold]
    fn release(&mut self) {
        let ptr = self.ptr.as_ptr();
        // SAFETY: the count reached zero, so this is the only access to the allocation; the
        // value is still alive.
        let value = unsafe { &(*ptr).value };
        let first = value.release_resources();
        // The name is only needed to log a panic that cannot be resumed because this thread is
        // already unwinding; copy it (fallibly: release must not allocate infallibly) only then.
        let mut owner = String::new();
        if std::thread::panicking() && owner.try_reserve(value.owner_name().len()).is_ok() {
            owner.push_str(value.owner_name());
        }
        // SAFETY: the allocation is live (freed below) and nothing else accesses it.
        let value = unsafe { &raw mut (*ptr).value };
        // SAFETY: every resource is released and no reference is left; the value is dropped
        // exactly once, here.
        let dropped = panic::catch_unwind(AssertUnwindSafe(|| unsafe {
            std::ptr::drop_in_place(value)
        }));
        // SAFETY: allocated as a `Box<Inner<D>>` (`from_box`), so with this layout; `refs`
        // needs no drop and `value` was dropped (or its drop unwound, which drops the remaining
        // fields too).
        unsafe { alloc::dealloc(ptr.cast(), Layout::new::<Inner<D>>()) };
        let first = first.or(dropped.err());
        PanicSink::resume(first, &owner);
    }
}

impl<D: FinalRelease> Clone for Kref<D> {
    fn clone(&self) -> Self {
        let old = self.inner().refs.fetch_add(1, Ordering::Relaxed);
        if old > MAX_REFS {
            std::process::abort();
        }
        // INVARIANT: the count was raised for this new reference (from at least 1: `self`).
        Kref { ptr: self.ptr }
    }
}

impl<D: FinalRelease> Drop for Kref<D> {
    fn drop(&mut self) {
        if self.inner().refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Pairs with the Release decrements of the other references: every use they made of
        // the value happens before its release.
        fence(Ordering::Acquire);
        self.release();
    }
}

impl<D: FinalRelease> Deref for Kref<D> {
    type Target = D;

    fn deref(&self) -> &D {
        &self.inner().value
    }
}

impl<D: FinalRelease + std::fmt::Debug> std::fmt::Debug for Kref<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}
