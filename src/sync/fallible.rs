//! Heap allocation that reports failure instead of aborting.
//!
//! Promise 6: an API that returns `Result` must turn allocation failure into
//! [`Error::OutOfMemory`]. Stable Rust's `Box::new` and `Arc::new` abort the process instead
//! (`Box::try_new` and `Arc::try_new` are unstable), so the library's own boxes and shared
//! pointers on fallible paths are made here: [`try_box`] and [`Shared`].

use std::alloc::{self, Layout};
use std::mem::MaybeUninit;
use std::ops::Deref;
use std::ptr::NonNull;

use crate::error::{Error, Result};
use crate::sync::{AtomicUsize, Ordering, fence};

/// The error for a failed allocation of `layout`.
fn out_of_memory(layout: Layout) -> Error {
    Error::OutOfMemory {
        size: layout.size(),
        align: layout.align(),
    }
}

/// The value of `r`; on [`Error::OutOfMemory`], aborts the way an infallible allocation does
/// (`handle_alloc_error`), for the library's infallible constructors.
///
/// # Panics
///
/// On an error other than `OutOfMemory` (a bug: only allocation can fail here).
#[track_caller]
pub(crate) fn or_abort<T>(r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(Error::OutOfMemory { size, align }) => alloc::handle_alloc_error(
            Layout::from_size_align(size, align).unwrap_or(Layout::new::<u8>()),
        ),
        Err(e) => panic!("an infallible constructor failed: {e}"),
    }
}

/// An uninitialised box for a `T`, or [`Error::OutOfMemory`].
///
/// # Errors
///
/// [`Error::OutOfMemory`] if the allocator fails.
pub(crate) fn try_box_uninit<T>() -> Result<Box<MaybeUninit<T>>> {
    let layout = Layout::new::<T>();
    if layout.size() == 0 {
        // No allocation for a zero-sized type: `Box` never allocates one either.
        return Ok(Box::new(MaybeUninit::uninit()));
    }
    // SAFETY: the layout has a non-zero size (checked above).
    let ptr = unsafe { alloc::alloc(layout) };
    let ptr = NonNull::new(ptr).ok_or_else(|| out_of_memory(layout))?;
    // SAFETY: `ptr` was just allocated by the global allocator with `Layout::new::<T>()`, which
    // is the layout of `MaybeUninit<T>` too, and nothing else owns it; `Box` may free it.
    Ok(unsafe { Box::from_raw(ptr.cast::<MaybeUninit<T>>().as_ptr()) })
}

/// `Box::new(value)`, or [`Error::OutOfMemory`] (then `value` is dropped).
///
/// # Errors
///
/// [`Error::OutOfMemory`] if the allocator fails.
pub(crate) fn try_box<T>(value: T) -> Result<Box<T>> {
    Ok(Box::write(try_box_uninit()?, value))
}

/// The allocation behind a [`Shared`].
struct SharedInner<T> {
    refs: AtomicUsize,
    value: T,
}

/// A thread-safe reference-counted pointer whose creation can fail: the part of `Arc` the
/// library needs on fallible paths (no weak references).
///
/// # Invariants
///
/// `ptr` comes from `Box::<SharedInner<T>>::into_raw` and stays live while any `Shared`
/// pointing to it exists; its `refs` counts those `Shared`s. The `Shared` that takes `refs`
/// from 1 to 0 frees it, and nothing raises `refs` from 0.
pub(crate) struct Shared<T> {
    ptr: NonNull<SharedInner<T>>,
}

// SAFETY: as `Arc<T>`: the value is shared between threads (`Sync`) and dropped by whichever
// thread drops the last pointer (`Send`).
unsafe impl<T: Send + Sync> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Shared<T> {}

/// Beyond this many references, `clone` aborts rather than risk the count wrapping (as `Arc`).
const MAX_REFS: usize = isize::MAX as usize;

impl<T> Shared<T> {
    /// Moves `value` into a new allocation with one reference.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`] if the allocator fails; `value` is dropped.
    pub(crate) fn try_new(value: T) -> Result<Self> {
        let inner = try_box(SharedInner {
            refs: AtomicUsize::new(1),
            value,
        })?;
        // INVARIANT: a fresh box, one reference.
        Ok(Shared {
            ptr: NonNull::from(Box::leak(inner)),
        })
    }

    fn inner(&self) -> &SharedInner<T> {
        // SAFETY: by the invariant the allocation is live while `self` exists.
        unsafe { self.ptr.as_ref() }
    }

    /// Whether two pointers share one allocation.
    #[cfg(test)]
    pub(crate) fn ptr_eq(a: &Self, b: &Self) -> bool {
        a.ptr == b.ptr
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        // Relaxed, as `Arc`: the new reference is made from an existing one, which already
        // keeps the allocation alive; no other memory is published by the increment.
        let old = self.inner().refs.fetch_add(1, Ordering::Relaxed);
        if old > MAX_REFS {
            std::process::abort();
        }
        // INVARIANT: the count was raised for this new pointer.
        Shared { ptr: self.ptr }
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        if self.inner().refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Pairs with the Release decrements of the other pointers: everything they did with
        // the value happens before it is dropped here.
        fence(Ordering::Acquire);
        // SAFETY: the count reached zero, so this was the last pointer: by the invariant the
        // allocation came from `Box::into_raw` and nobody else can reach it any more.
        drop(unsafe { Box::from_raw(self.ptr.as_ptr()) });
    }
}

impl<T> Deref for Shared<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner().value
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize as StdAtomic;

    use crate::sync::drop_counter::Counted;

    #[test]
    fn try_box_holds_the_value_and_zero_sized_types_need_no_allocation() {
        assert_eq!(*try_box(41u64).unwrap() + 1, 42);
        let unit: Box<()> = try_box(()).unwrap();
        assert_eq!(*unit, ());
        let mut b = try_box_uninit::<[u32; 3]>().unwrap();
        b.write([1, 2, 3]);
        // SAFETY: written just above.
        assert_eq!(unsafe { b.assume_init() }[2], 3);
    }

    #[test]
    fn shared_drops_its_value_once_when_the_last_pointer_goes() {
        let drops = Arc::new(StdAtomic::new(0));
        let a = Shared::try_new(Counted(drops.clone())).unwrap();
        let b = a.clone();
        assert!(Shared::ptr_eq(&a, &b));
        drop(a);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        let c = b.clone();
        std::thread::spawn(move || drop(c)).join().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        assert!(Arc::ptr_eq(&b.0, &drops));
        drop(b);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn shared_of_a_zero_sized_type() {
        let a = Shared::try_new(()).unwrap();
        let b = a.clone();
        drop(a);
        assert_eq!(*b, ());
    }
}
