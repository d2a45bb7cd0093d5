//! Type-erased release actions, stored inline when they are small.
//!
//! The kernel stores a function pointer and one `void *` per action. A Rust closure that
//! captures one word is the same thing, so such closures live inside the list's slot (its
//! [`Word`]) and cost no allocation of their own; larger ones are boxed (with the fallible
//! allocator, so that registering them can fail cleanly).

use std::alloc::{self, Layout};
use std::mem;
use std::ptr::{self, NonNull};

use crate::error::{Error, Result};
use crate::res::erased::{EntryVTable, Word, no_drop_elems};
use crate::res::info::EntryKind;

/// A type-erased `FnOnce(&C) + Send + 'static`.
///
/// # Invariants
///
/// `vtable` is the [`EntryVTable`] of one closure type `F` made for context type `C`
/// ([`VTableFor`]), and `word` holds a live `F`: inline when it fits ([`fits_inline`]),
/// otherwise as a pointer to a heap block holding it, allocated with the global allocator and
/// `Layout::new::<F>()` (dangling for a zero-sized `F`). The closure is consumed exactly once,
/// by [`Action::call`], by dropping the `Action`, or by the list slot it is moved into
/// ([`Action::into_raw`]).
pub(crate) struct Action<C> {
    word: Word,
    vtable: &'static EntryVTable,
    _ctx: std::marker::PhantomData<fn(&C)>,
}

// SAFETY: the closure an `Action` holds is `Send` (enforced by `Action::new`), and `C` is only
// ever borrowed for the duration of a call, never stored.
unsafe impl<C> Send for Action<C> {}
// SAFETY: an `Action` offers no access to its closure through `&self`; every use needs `self`.
unsafe impl<C> Sync for Action<C> {}

const fn fits_inline<F>() -> bool {
    mem::size_of::<F>() <= mem::size_of::<Word>() && mem::align_of::<F>() <= mem::align_of::<Word>()
}

/// The erased signature, for naming it in `PhantomData`.
type CallSig<C> = fn(&C);

/// Vtables, one per closure type, promoted to `'static`.
struct VTableFor<C, F>(std::marker::PhantomData<(CallSig<C>, F)>);

impl<C, F: FnOnce(&C) + Send + 'static> VTableFor<C, F> {
    const VTABLE: EntryVTable = EntryVTable {
        kind: EntryKind::Action,
        size: mem::size_of::<F>(),
        align: mem::align_of::<F>(),
        type_name: std::any::type_name::<F>,
        needs_drop: true,
        call: call_erased::<C, F>,
        drop_action: drop_erased::<F>,
        drop_elems: no_drop_elems,
    };
}

/// # Safety
///
/// `word` must hold a live closure of type `F` as described in [`Action`]'s invariants; the
/// closure is consumed and must not be used again. `ctx` must point to a `C` valid for the
/// duration of the call.
unsafe fn call_erased<C, F: FnOnce(&C)>(word: *mut Word, ctx: NonNull<()>) {
    // SAFETY: guaranteed by the caller: `word` holds a live `F` (inline or boxed), consumed
    // here exactly once.
    let f = unsafe { take::<F>(word) };
    // SAFETY: guaranteed by the caller: `ctx` is a valid `&C` for this call.
    f(unsafe { ctx.cast::<C>().as_ref() });
}

/// # Safety
///
/// As for [`call_erased`].
unsafe fn drop_erased<F>(word: *mut Word) {
    // SAFETY: guaranteed by the caller, as for `call_erased`.
    drop(unsafe { take::<F>(word) });
}

/// Moves the closure out of `word`, freeing its heap block if it was boxed.
///
/// # Safety
///
/// `word` must hold a live `F` as described in [`Action`]'s invariants; afterwards it holds
/// nothing.
unsafe fn take<F>(word: *mut Word) -> F {
    if fits_inline::<F>() {
        // SAFETY: the closure was written inline at the start of the word, which is suitably
        // aligned and large enough (checked by `fits_inline`), and is read exactly once.
        unsafe { ptr::read(word.cast::<F>()) }
    } else {
        // SAFETY: `word` is valid for reads (the caller).
        let word = unsafe { *word };
        // SAFETY: the word holds the pointer to the heap block written by `Action::new`.
        let heap = unsafe { word.ptr::<F>() };
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
    /// Erases `f`. Closures of one word are stored inline; larger ones are boxed, and if that
    /// allocation fails the closure is handed back with the error so that the caller can still
    /// run it (`_or_reset`) or drop it.
    #[inline]
    pub(crate) fn new<F: FnOnce(&C) + Send + 'static>(f: F) -> Result<Self, (Error, F)> {
        let mut word = Word::uninit();
        if fits_inline::<F>() {
            // SAFETY: `fits_inline` checked size and alignment; the word is unused and now owns
            // `f`.
            unsafe { ptr::write(word.as_mut_ptr().cast::<F>(), f) };
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
            // zero-sized `F`).
            unsafe { ptr::write(heap, f) };
            word = Word::from_ptr(heap);
        }
        // INVARIANT: `word` now holds `f` as `VTableFor<C, F>` expects.
        Ok(Action {
            word,
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
        // SAFETY: by the invariant `word` holds a live closure of the vtable's type, made for
        // context type `C`; `this` is never dropped, so the closure is consumed exactly once,
        // here; `ctx` is a valid `&C` for the call.
        unsafe { (this.vtable.call)(&mut this.word, NonNull::from(ctx).cast()) }
    }

    /// The vtable and the word, which now own the closure.
    #[inline(always)]
    pub(crate) fn into_raw(self) -> (&'static EntryVTable, Word) {
        let this = mem::ManuallyDrop::new(self);
        (this.vtable, this.word)
    }

    /// The action whose parts [`into_raw`](Self::into_raw) returned.
    ///
    /// # Safety
    ///
    /// `(vtable, word)` must come from [`into_raw`](Self::into_raw) of an `Action<C>` (same
    /// `C`), and not be used again.
    #[inline(always)]
    pub(crate) unsafe fn from_raw(vtable: &'static EntryVTable, word: Word) -> Self {
        debug_assert_eq!(vtable.kind, EntryKind::Action);
        // INVARIANT: the parts of an `Action<C>`, handed over by the caller.
        Action {
            word,
            vtable,
            _ctx: std::marker::PhantomData,
        }
    }
}

impl<C> Drop for Action<C> {
    fn drop(&mut self) {
        // SAFETY: by the invariant the word holds a live closure; `drop` runs at most once and
        // `call` and `into_raw` suppress it.
        unsafe { (self.vtable.drop_action)(&mut self.word) }
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
        assert!(a.size() > mem::size_of::<Word>());
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
