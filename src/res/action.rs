//! Type-erased release actions, stored inline when they are small.
//!
//! The kernel stores a function pointer and one `void *` per action. A Rust closure that
//! captures one or two words is the same thing, so such closures live inside the list's slot
//! and cost no allocation of their own; larger ones are boxed (with the fallible allocator, so
//! that registering them can fail cleanly).

use std::alloc::{self, Layout};
use std::mem::{self, MaybeUninit};
use std::ptr::{self, NonNull};

use crate::error::{Error, Result};

/// Words of inline storage in an [`Action`].
const INLINE_WORDS: usize = 2;

type Storage = [MaybeUninit<usize>; INLINE_WORDS];

/// The operations of one closure type `F`, erased (including the context type, so that the
/// vtable is `'static` whatever `C` is).
struct ActionVTable {
    /// Moves the closure out of the storage and calls it with the context behind the pointer.
    call: unsafe fn(*mut Storage, NonNull<()>),
    /// Drops the closure without calling it.
    drop: unsafe fn(*mut Storage),
    /// `size_of::<F>()`: what the trace reports as the entry's size.
    size: usize,
}

/// A type-erased `FnOnce(&C) + Send + 'static`.
///
/// # Invariants
///
/// `storage` holds a live closure of the type `vtable` was made for: inline when it fits
/// ([`fits_inline`]), otherwise as a pointer to a heap block holding it, allocated with the
/// global allocator and `Layout::new::<F>()`. The closure is consumed exactly once, by
/// [`Action::call`] or by dropping the `Action`.
pub(crate) struct Action<C> {
    storage: Storage,
    vtable: &'static ActionVTable,
    _ctx: std::marker::PhantomData<fn(&C)>,
}

// SAFETY: the closure an `Action` holds is `Send` (enforced by `Action::new`), and `C` is only
// ever borrowed for the duration of a call, never stored.
unsafe impl<C> Send for Action<C> {}
// SAFETY: an `Action` offers no access to its closure through `&self`; every use needs `self`.
unsafe impl<C> Sync for Action<C> {}

const fn fits_inline<F>() -> bool {
    mem::size_of::<F>() <= mem::size_of::<Storage>()
        && mem::align_of::<F>() <= mem::align_of::<Storage>()
}

/// Vtables, one per closure type, promoted to `'static`.
/// The erased signature, for naming it in `PhantomData`.
type CallSig<C> = fn(&C);

struct VTableFor<C, F>(std::marker::PhantomData<(CallSig<C>, F)>);

impl<C, F: FnOnce(&C) + Send + 'static> VTableFor<C, F> {
    const VTABLE: ActionVTable = ActionVTable {
        call: call_erased::<C, F>,
        drop: drop_erased::<F>,
        size: mem::size_of::<F>(),
    };
}

/// # Safety
///
/// `storage` must hold a live closure of type `F` as described in [`Action`]'s invariants; the
/// closure is consumed and must not be used again. `ctx` must point to a `C` valid for the
/// duration of the call.
unsafe fn call_erased<C, F: FnOnce(&C)>(storage: *mut Storage, ctx: NonNull<()>) {
    // SAFETY: guaranteed by the caller: `storage` holds a live `F` (inline or boxed), consumed
    // here exactly once.
    let f = unsafe { take::<F>(storage) };
    // SAFETY: guaranteed by the caller: `ctx` is a valid `&C` for this call.
    f(unsafe { ctx.cast::<C>().as_ref() });
}

/// # Safety
///
/// As for [`call_erased`].
unsafe fn drop_erased<F>(storage: *mut Storage) {
    // SAFETY: guaranteed by the caller, as for `call_erased`.
    drop(unsafe { take::<F>(storage) });
}

/// Moves the closure out of `storage`, freeing its heap block if it was boxed.
///
/// # Safety
///
/// `storage` must hold a live `F` as described in [`Action`]'s invariants; afterwards it holds
/// nothing.
unsafe fn take<F>(storage: *mut Storage) -> F {
    if fits_inline::<F>() {
        // SAFETY: the closure was written inline at the start of the storage, which is
        // suitably aligned (checked by `fits_inline`), and is read exactly once.
        unsafe { ptr::read(storage.cast::<F>()) }
    } else {
        // SAFETY: the first word holds the pointer to the heap block written by `Action::new`.
        let heap = unsafe { ptr::read(storage.cast::<*mut F>()) };
        // SAFETY: `heap` points to a live `F` that nothing else reads; read it out once.
        let f = unsafe { ptr::read(heap) };
        if mem::size_of::<F>() != 0 {
            // SAFETY: the block was allocated in `Action::new` with this exact layout and the
            // value has been moved out of it.
            unsafe { alloc::dealloc(heap.cast(), Layout::new::<F>()) };
        }
        f
    }
}

impl<C> Action<C> {
    /// Erases `f`. Small closures are stored inline; larger ones are boxed, and if that
    /// allocation fails the closure is handed back with the error so that the caller can still
    /// run it (`_or_reset`) or drop it.
    #[inline]
    pub(crate) fn new<F: FnOnce(&C) + Send + 'static>(f: F) -> Result<Self, (Error, F)> {
        let mut storage: Storage = [MaybeUninit::uninit(); INLINE_WORDS];
        if fits_inline::<F>() {
            // SAFETY: `fits_inline` checked size and alignment; the storage is uninitialised
            // and now owns `f`.
            unsafe { ptr::write(storage.as_mut_ptr().cast::<F>(), f) };
        } else {
            let layout = Layout::new::<F>();
            let heap: *mut F = if layout.size() == 0 {
                NonNull::dangling().as_ptr()
            } else {
                // SAFETY: `layout` has a non-zero size.
                let p = unsafe { alloc::alloc(layout) }.cast::<F>();
                if p.is_null() {
                    return Err((Error::oom(layout), f));
                }
                p
            };
            // SAFETY: `heap` is valid for writes of `F` (fresh allocation or dangling for a
            // zero-sized `F`) and the storage is aligned for a pointer.
            unsafe {
                ptr::write(heap, f);
            }
            // SAFETY: the storage is at least one word and word-aligned.
            unsafe { ptr::write(storage.as_mut_ptr().cast::<*mut F>(), heap) };
        }
        // INVARIANT: `storage` now holds `f` as `VTableFor<C, F>` expects.
        Ok(Action {
            storage,
            vtable: &VTableFor::<C, F>::VTABLE,
            _ctx: std::marker::PhantomData,
        })
    }

    /// The size of the captured state, reported in traces like the kernel's payload size.
    pub(crate) fn size(&self) -> usize {
        self.vtable.size
    }

    /// Runs the action, consuming it.
    #[inline]
    pub(crate) fn call(self, ctx: &C) {
        let mut this = mem::ManuallyDrop::new(self);
        // SAFETY: by the invariant `storage` holds a live closure of the vtable's type, made for
        // context type `C`; `this` is never dropped, so the closure is consumed exactly once,
        // here; `ctx` is a valid `&C` for the call.
        unsafe { (this.vtable.call)(&mut this.storage, NonNull::from(ctx).cast()) }
    }
}

impl<C> Drop for Action<C> {
    fn drop(&mut self) {
        // SAFETY: by the invariant the storage holds a live closure; `drop` runs at most once
        // and `call` suppresses it.
        unsafe { (self.vtable.drop)(&mut self.storage) }
    }
}

impl<C> std::fmt::Debug for Action<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Action")
            .field("size", &self.size())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn small_closure_runs_once_with_context() {
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        let a = Action::<usize>::new(move |c: &usize| {
            s.fetch_add(*c, Ordering::SeqCst);
        })
        .ok()
        .expect("allocation");
        assert_eq!(a.size(), mem::size_of::<Arc<AtomicUsize>>());
        a.call(&5);
        assert_eq!(seen.load(Ordering::SeqCst), 5);
        assert_eq!(
            Arc::strong_count(&seen),
            1,
            "captured state dropped after the call"
        );
    }

    #[test]
    fn large_closure_is_boxed_and_dropped_without_call() {
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        let big = [7u64; 8];
        let a = Action::<()>::new(move |_: &()| {
            s.fetch_add(big.iter().sum::<u64>() as usize, Ordering::SeqCst);
        })
        .ok()
        .expect("allocation");
        assert!(a.size() > mem::size_of::<Storage>());
        drop(a);
        assert_eq!(
            seen.load(Ordering::SeqCst),
            0,
            "dropping must not run the action"
        );
        assert_eq!(Arc::strong_count(&seen), 1, "captured state dropped");
    }

    #[test]
    fn large_closure_runs() {
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        let big = [1u64; 8];
        let a = Action::<()>::new(move |_: &()| {
            s.fetch_add(big.iter().sum::<u64>() as usize, Ordering::SeqCst);
        })
        .ok()
        .expect("allocation");
        a.call(&());
        assert_eq!(seen.load(Ordering::SeqCst), 8);
    }

    #[test]
    fn zero_sized_and_overaligned_closures() {
        #[repr(align(64))]
        struct Aligned(u8);
        let a = Action::<()>::new(|_: &()| {}).ok().expect("allocation");
        assert_eq!(a.size(), 0);
        a.call(&());
        let x = Aligned(3);
        let a = Action::<()>::new(move |_: &()| assert_eq!(x.0, 3))
            .ok()
            .expect("allocation");
        a.call(&());
    }

    #[test]
    fn panicking_closure_drops_its_captures() {
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        let a = Action::<()>::new(move |_: &()| {
            let _keep = &s;
            panic!("boom");
        })
        .ok()
        .expect("allocation");
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| a.call(&())));
        assert!(r.is_err());
        assert_eq!(Arc::strong_count(&seen), 1);
    }
}
