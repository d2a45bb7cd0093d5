//! [`Revocable<T>`]: a value that becomes unreachable, then is dropped, when revoked.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use super::grace::{Domain, ReadGuard};
use crate::sync::{Arc, AtomicBool, Ordering};

/// Storage for the protected value, switched to loom's checked cell under `cfg(loom)` so that the
/// models catch a drop racing with a reader.
#[cfg(not(loom))]
mod cell {
    use std::cell::UnsafeCell;
    use std::mem::ManuallyDrop;
    use std::ptr::NonNull;

    /// Pointer held by a guard.
    pub(super) type DataPtr<T> = NonNull<T>;

    pub(super) struct DataCell<T>(UnsafeCell<ManuallyDrop<T>>);

    impl<T> DataCell<T> {
        pub(super) fn new(value: T) -> Self {
            DataCell(UnsafeCell::new(ManuallyDrop::new(value)))
        }

        /// A pointer to the value; valid for reads while the value has not been dropped.
        pub(super) fn ptr(&self) -> DataPtr<T> {
            // CAST: `ManuallyDrop<T>` is `repr(transparent)` over `T`.
            NonNull::from(&self.0).cast::<T>()
        }

        /// Drops the value in place.
        ///
        /// # Safety
        ///
        /// The value has not been dropped yet, no reference to it exists, none is created
        /// concurrently and none is created afterwards.
        pub(super) unsafe fn drop_value(&self) {
            // SAFETY: the caller guarantees that no other reference to the value exists.
            let value = unsafe { &mut *self.0.get() };
            // SAFETY: the value is still alive and, per the caller, never used again.
            unsafe { ManuallyDrop::drop(value) }
        }
    }

    /// Reborrows the value behind a guard's pointer.
    ///
    /// # Safety
    ///
    /// The value is alive, and stays alive and unmutated while the returned reference lives.
    pub(super) unsafe fn deref<T>(ptr: &DataPtr<T>) -> &T {
        // SAFETY: guaranteed by the caller.
        unsafe { ptr.as_ref() }
    }
}

/// Storage for the protected value, loom flavour (see the non-loom module).
#[cfg(loom)]
mod cell {
    use loom::cell::{ConstPtr, UnsafeCell};
    use std::mem::ManuallyDrop;

    pub(super) type DataPtr<T> = ConstPtr<ManuallyDrop<T>>;

    pub(super) struct DataCell<T>(UnsafeCell<ManuallyDrop<T>>);

    impl<T> DataCell<T> {
        pub(super) fn new(value: T) -> Self {
            DataCell(UnsafeCell::new(ManuallyDrop::new(value)))
        }

        pub(super) fn ptr(&self) -> DataPtr<T> {
            self.0.get()
        }

        /// # Safety
        ///
        /// As the non-loom version.
        pub(super) unsafe fn drop_value(&self) {
            self.0.get_mut().with(|p| {
                // SAFETY: the caller guarantees that no other reference to the value exists.
                let value = unsafe { &mut *p };
                // SAFETY: the value is still alive and, per the caller, never used again.
                unsafe { ManuallyDrop::drop(value) }
            });
        }
    }

    /// # Safety
    ///
    /// As the non-loom version.
    pub(super) unsafe fn deref<T>(ptr: &DataPtr<T>) -> &T {
        // SAFETY: guaranteed by the caller.
        unsafe { ptr.deref() }
    }
}

use cell::{DataCell, DataPtr};

/// A value that can be revoked: after [`revoke`](Self::revoke) returns, nobody can reach it any
/// more and it has been dropped, even though the `Revocable` itself may live on (shared with
/// open files, worker threads, …).
///
/// This is the userspace form of Rust-for-Linux's `Revocable` (the building block of `Devres`):
/// a hardware-facing resource (a register mapping, an interrupt line, a DMA buffer) that must be
/// released at unbind while other code may still hold a reference to its container. Access goes
/// through a read section of a grace-period [`Domain`]: [`try_access`](Self::try_access) returns a
/// guard, or `None` once revocation has begun; revocation clears the flag, waits for one grace
/// period so that every guard that saw the value has been dropped, then drops the value exactly
/// once, on the revoking thread.
///
/// Each `Revocable` made with [`new`](Self::new) has its own domain, so long accesses to one value
/// never delay the revocation of another. Values created with [`new_in`](Self::new_in) share a
/// domain, so that [`revoke_all`] can revoke all of them after a single grace period.
///
/// Unlike the kernel's RCU-based version, guards may be held while sleeping or blocking; they
/// only delay revocation. They are `!Send`.
///
/// # Invariants
///
/// * `data` holds a live `T` while `available` is `true`.
/// * `available` goes from `true` to `false` at most once; the call that makes that transition
///   (a revocation, or `Drop` which has exclusive access) is the only one that drops the value,
///   and revocation does so only after a grace period of `domain` that began after the
///   transition.
/// * A shared reference to the value is created only inside a read section of `domain` that
///   observed `available == true` after it began (see [`RevocableGuard`]).
///
/// # Variance
///
/// Invariant in `T` (the value sits in a cell written by the revocation): a revocable shared
/// with threads that outlive the borrow that made it cannot have the lifetimes in `T`
/// shortened.
///
/// ```compile_fail
/// use drmm::revoke::Revocable;
/// fn shorten<'a>(r: Revocable<&'static str>) -> Revocable<&'a str> {
///     r // error: `Revocable` is invariant in `T`
/// }
/// ```
///
/// # Examples
///
/// ```
/// use drmm::revoke::Revocable;
///
/// struct Registers { base: usize }
///
/// let regs = Revocable::new(Registers { base: 0xfee0_0000 });
/// assert_eq!(regs.try_access().map(|r| r.base), Some(0xfee0_0000));
///
/// assert!(regs.revoke()); // unbind: the mapping is dropped here
/// assert!(regs.try_access().is_none());
/// assert!(!regs.revoke()); // only once
/// ```
pub struct Revocable<T> {
    available: AtomicBool,
    domain: Arc<Domain>,
    data: DataCell<T>,
}

// SAFETY: sharing a `Revocable<T>` hands out `&T` to every thread that has access (`T: Sync`),
// and `revoke` can drop the value on whichever thread calls it (`T: Send`). Everything else in
// the type is atomics and an `Arc<Domain>`, which are `Sync`.
unsafe impl<T: Send + Sync> Sync for Revocable<T> {}

impl<T> Revocable<T> {
    /// Wraps `value` in a new revocable with a domain of its own.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = drmm::revoke::Revocable::new(5);
    /// assert_eq!(r.try_access_with(|v| *v + 1), Some(6));
    /// ```
    pub fn new(value: T) -> Self {
        Self::new_in(value, Arc::new(Domain::new()))
    }

    /// Builds the value with `init` and wraps it like [`new`](Self::new), returning `init`'s
    /// error as is (the counterpart of [`Devres::new_with`](crate::Devres::new_with); a
    /// `Revocable` registers nothing, so `init` is its only way to fail).
    ///
    /// # Errors
    ///
    /// `init`'s error.
    ///
    /// # Examples
    ///
    /// ```
    /// use drmm::revoke::Revocable;
    /// let r = Revocable::new_with(|| "4096".parse::<u32>())?;
    /// assert_eq!(r.try_access_with(|v| *v), Some(4096));
    /// assert!(Revocable::new_with(|| "bar".parse::<u32>()).is_err());
    /// # Ok::<(), std::num::ParseIntError>(())
    /// ```
    pub fn new_with<E>(init: impl FnOnce() -> Result<T, E>) -> Result<Self, E> {
        init().map(Self::new)
    }

    /// Wraps `value` in a new revocable that uses `domain` for its read sections, so that it can
    /// be revoked together with the other values of that domain in one grace period
    /// ([`revoke_all`]).
    ///
    /// A long access to any value of the domain delays the revocation of all of them.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use drmm::revoke::{Revocable, grace::Domain, revoke_all};
    ///
    /// let domain = Arc::new(Domain::new());
    /// let irq = Revocable::new_in(17u32, domain.clone());
    /// let bar = Revocable::new_in(String::from("bar0"), domain.clone());
    /// assert_eq!(revoke_all([&irq as &dyn drmm::revoke::Revoke, &bar]), 2);
    /// assert_eq!(domain.grace_periods(), 1);
    /// ```
    pub fn new_in(value: T, domain: Arc<Domain>) -> Self {
        // INVARIANT: the value is live and `available` is `true`.
        Revocable {
            available: AtomicBool::new(true),
            domain,
            data: DataCell::new(value),
        }
    }

    /// The domain whose read sections protect the value.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = drmm::revoke::Revocable::new(());
    /// r.revoke();
    /// assert_eq!(r.domain().grace_periods(), 1);
    /// ```
    pub fn domain(&self) -> &Arc<Domain> {
        &self.domain
    }

    /// Returns a guard giving access to the value, or `None` if revocation has begun.
    ///
    /// The guard holds a read section: [`revoke`](Self::revoke) waits until it is dropped, so
    /// keep it short. It is `!Send`. Leaking it (for example with
    /// [`mem::forget`](std::mem::forget)) is safe but makes `revoke` wait forever.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = drmm::revoke::Revocable::new(vec![1, 2, 3]);
    /// if let Some(v) = r.try_access() {
    ///     assert_eq!(v.len(), 3);
    /// }
    /// ```
    #[inline]
    pub fn try_access(&self) -> Option<RevocableGuard<'_, T>> {
        let read = self.domain.read();
        // SeqCst after entering: pairs with the SeqCst swap in `revoke` (see `grace`).
        if !self.available.load(Ordering::SeqCst) {
            return None;
        }
        // INVARIANT: the read section began before we saw `available == true`.
        Some(RevocableGuard {
            data: self.data.ptr(),
            _read: read,
            _value: PhantomData,
        })
    }

    /// Runs `f` on the value if it has not been revoked, inside a read section that ends when `f`
    /// returns.
    ///
    /// The closure form cannot forget to drop the guard before doing something slow.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = drmm::revoke::Revocable::new(21);
    /// assert_eq!(r.try_access_with(|v| v * 2), Some(42));
    /// r.revoke();
    /// assert_eq!(r.try_access_with(|v| v * 2), None);
    /// ```
    #[inline]
    pub fn try_access_with<R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        let guard = self.try_access()?;
        Some(f(&guard))
    }

    /// Whether revocation has begun (it may still be waiting for readers).
    ///
    /// # Examples
    ///
    /// ```
    /// let r = drmm::revoke::Revocable::new(1);
    /// assert!(!r.is_revoked());
    /// r.revoke();
    /// assert!(r.is_revoked());
    /// ```
    pub fn is_revoked(&self) -> bool {
        !self.available.load(Ordering::SeqCst)
    }

    /// Revokes the value: makes [`try_access`](Self::try_access) fail from now on, waits for one
    /// grace period so that every guard that had access has been dropped, then drops the value
    /// on this thread.
    ///
    /// Returns `true` if this call revoked it. If it was already revoked, or another thread is
    /// revoking it concurrently, returns `false` at once: new accesses already fail, but the other
    /// revoker may still be waiting for readers and has not necessarily dropped the value yet.
    /// Whatever happens, the value is dropped exactly once.
    ///
    /// To revoke several values, [`revoke_all`] waits for one grace period instead of one each.
    ///
    /// # Panics
    ///
    /// Panics (before revoking anything) if the calling thread is inside a read section of this
    /// value's domain, for example holding a guard of this value: the grace period could never
    /// end. Detected as [`Domain::synchronize`] detects it (always in debug builds, usually in
    /// release builds, which otherwise deadlock).
    ///
    /// If dropping the value panics, the panic propagates; the value counts as dropped and is
    /// never touched again. Called while the thread is already unwinding, the panic is logged
    /// instead (a second panic escaping during unwinding would abort the process).
    ///
    /// # Examples
    ///
    /// ```
    /// let r = drmm::revoke::Revocable::new(String::from("mmio"));
    /// assert!(r.revoke());
    /// assert!(!r.revoke());
    /// ```
    pub fn revoke(&self) -> bool {
        self.domain.assert_not_reading();
        if !self.begin_revoke() {
            return false;
        }
        self.domain.synchronize();
        // SAFETY: `begin_revoke` returned `true`, so this call owns the drop, and the grace
        // period that just ended began after `available` was cleared: every guard created before
        // is gone and no guard can be created any more.
        let dropped = catch_unwind(AssertUnwindSafe(|| unsafe { self.finish_revoke() }));
        if let Err(payload) = dropped {
            resume_unless_unwinding(payload);
        }
        true
    }

    /// Clears the flag; `true` if this call made the transition and therefore owns the drop.
    pub(crate) fn begin_revoke(&self) -> bool {
        // SeqCst: the writer's half of the Dekker pairing with `try_access`.
        self.available.swap(false, Ordering::SeqCst)
    }

    /// Drops the value.
    ///
    /// # Safety
    ///
    /// [`begin_revoke`](Self::begin_revoke) returned `true` to the caller, and no guard made
    /// before remains: a grace period of the domain has completed since, or the caller knows
    /// that no guard of this value can exist (the only way to make one is borrowed by nobody).
    pub(crate) unsafe fn finish_revoke(&self) {
        // SAFETY: per the contract, the caller owns the drop (the value is still live and nobody
        // else will drop it), no guard that saw the value remains, and `available` is `false`,
        // so no guard can be created any more.
        unsafe { self.data.drop_value() }
    }
}

impl<T> Drop for Revocable<T> {
    fn drop(&mut self) {
        // `&mut self` excludes guards and concurrent revocations, and orders us after any earlier
        // revocation, so a relaxed load suffices.
        if self.available.load(Ordering::Relaxed) {
            // SAFETY: the value is live (`available`) and `&mut self` gives exclusive access; the
            // value is never used again since `self` is being dropped.
            let drop_value = || unsafe { self.data.drop_value() };
            if std::thread::panicking() {
                // A panic of the value's drop would abort the process here: logged instead.
                if let Err(payload) = catch_unwind(AssertUnwindSafe(drop_value)) {
                    resume_unless_unwinding(payload);
                }
            } else {
                drop_value();
            }
        }
    }
}

impl<T> fmt::Debug for Revocable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocable")
            .field("revoked", &self.is_revoked())
            .finish_non_exhaustive()
    }
}

/// Access to a [`Revocable`]'s value; the value cannot be dropped while the guard lives.
///
/// `!Send` and `!Sync`.
///
/// # Invariants
///
/// `_read` is a read section of the revocable's domain that began before the revocable's flag was
/// observed `true`, so any revocation waits for this guard before dropping the value: `data`
/// points to a live, unmutated `T` for as long as the guard exists.
///
/// The value is held as a pointer rather than `&'a T` because the guard can be dropped while a
/// reference field would still be asserted to be valid (for example inside a function that
/// received the guard by value and dropped it).
///
/// # Variance
///
/// Covariant in `'a` and `T`, as `&'a T` is: the guard only reads, so nothing shorter-lived can
/// be written through it, and it cannot outlive the revocable it borrows:
///
/// ```compile_fail
/// let r = drmm::revoke::Revocable::new(3u8);
/// let guard = r.try_access().unwrap();
/// drop(r); // error: `r` is borrowed by `guard`
/// drop(guard);
/// ```
///
/// # Examples
///
/// ```
/// let r = drmm::revoke::Revocable::new(3u8);
/// let guard = r.try_access().unwrap();
/// assert_eq!(*guard, 3);
/// ```
#[must_use = "the access ends as soon as the guard is dropped"]
pub struct RevocableGuard<'a, T> {
    // Declared before `_read` so that, under loom, the tracked pointer is released before the
    // read section ends.
    data: DataPtr<T>,
    _read: ReadGuard<'a>,
    _value: PhantomData<&'a T>,
}

impl<T> std::ops::Deref for RevocableGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: by the type invariant the value stays alive and unmutated while `self` lives,
        // and the returned reference cannot outlive `self`.
        unsafe { cell::deref(&self.data) }
    }
}

impl<T: fmt::Debug> fmt::Debug for RevocableGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

mod sealed {
    use super::Domain;

    /// The two halves of a revocation, split so that [`super::revoke_all`] can wait for one grace
    /// period between them for many values.
    #[allow(unreachable_pub)] // Sealing trait: nameable nowhere outside this crate by design.
    pub trait Sealed {
        /// The domain that must complete a grace period between the two halves.
        fn revoke_domain(&self) -> &Domain;
        /// Clears the flag; `true` if the caller now owns the drop.
        fn begin(&self) -> bool;
        /// Drops the value.
        ///
        /// # Safety
        ///
        /// `begin` returned `true` to the caller and a grace period of `revoke_domain()` has
        /// completed since.
        unsafe fn finish(&self);
    }
}

/// Something [`revoke_all`] can revoke: every [`Revocable<T>`], usable as `&dyn Revoke` to mix
/// value types in one batch. Sealed.
///
/// # Examples
///
/// ```
/// use drmm::revoke::{Revocable, Revoke};
///
/// let r = Revocable::new(1);
/// let any: &dyn Revoke = &r;
/// assert!(!any.is_revoked());
/// ```
pub trait Revoke: sealed::Sealed + Sync {
    /// Whether revocation has begun.
    fn is_revoked(&self) -> bool;
}

impl<T: Send + Sync> sealed::Sealed for Revocable<T> {
    fn revoke_domain(&self) -> &Domain {
        &self.domain
    }

    fn begin(&self) -> bool {
        self.begin_revoke()
    }

    /// # Safety
    ///
    /// As [`Revoke`]'s `finish`: `begin` returned `true` and a grace period has completed.
    unsafe fn finish(&self) {
        // SAFETY: the caller upholds `finish_revoke`'s contract (same wording as ours).
        unsafe { self.finish_revoke() }
    }
}

impl<T: Send + Sync> Revoke for Revocable<T> {
    fn is_revoked(&self) -> bool {
        Revocable::is_revoked(self)
    }
}

/// Revokes many values after a single grace period per domain: clears every flag first, then
/// waits for one grace period of each distinct domain involved, then drops every value this call
/// revoked, in iteration order.
///
/// This is what an unbind should use: revoking the resources one by one waits one grace period
/// per resource. Values created with [`Revocable::new_in`] on one shared domain are revoked with
/// exactly one grace period.
///
/// Returns how many values this call revoked (values already revoked, or revoked concurrently by
/// someone else, are skipped, as [`Revocable::revoke`] would return `false` for them).
///
/// Never fails for lack of memory: a batch of up to 16 values on up to 8 domains needs none,
/// and a larger one asks for it fallibly. When the batch cannot grow, the values collected so
/// far are finished (one grace period per domain, dropped in order) and collection starts
/// over. Values are dropped in iteration order either way; only the number of grace periods
/// grows.
///
/// # Panics
///
/// Panics before revoking anything if the calling thread is inside a read section of one of
/// the domains, as [`Domain::synchronize`] detects it (always in debug builds, usually in
/// release builds, which otherwise deadlock).
///
/// If dropping values panics, the remaining values are still dropped and the first panic is
/// resumed afterwards (logged instead if the thread is already unwinding). If the iterator itself panics, the values already revoked are still
/// waited for and dropped during unwinding.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use drmm::revoke::{Revocable, grace::Domain, revoke_all};
///
/// let domain = Arc::new(Domain::new());
/// let regions: Vec<_> = (0..8).map(|i| Revocable::new_in(i, domain.clone())).collect();
/// assert!(regions[3].revoke()); // one revoked early: one grace period
///
/// assert_eq!(revoke_all(&regions), 7);
/// assert_eq!(domain.grace_periods(), 2); // not 8
/// assert!(regions.iter().all(Revocable::is_revoked));
/// ```
pub fn revoke_all<'a, R, I>(items: I) -> usize
where
    R: Revoke + ?Sized + 'a,
    I: IntoIterator<Item = &'a R>,
{
    let iter = items.into_iter();
    let mut batch = Batch {
        items: SmallList::new(),
        domains: SmallList::new(),
        first_panic: None,
    };
    // Best effort: room for every item the iterator promises, so that the loop below does not
    // ask again. Failing here only means asking item by item.
    batch.items.try_reserve(iter.size_hint().0);
    let mut revoked = 0;
    for item in iter {
        let domain = item.revoke_domain();
        domain.assert_not_reading();
        // Room is made before `begin`, so that an item this call revokes is at every moment
        // recorded in the batch.
        let known = match batch.room_for(domain) {
            Some(known) => known,
            None => {
                // The heap part cannot grow: finish what is collected (in order, so drops stay
                // in iteration order). The batch is then empty, with inline room.
                batch.flush();
                false
            }
        };
        if item.begin() {
            revoked += 1;
            batch.record(item, domain, known);
        }
    }
    drop(batch);
    revoked
}

/// A list of up to `N` copies kept inline, and more in heap memory asked for fallibly: a batch
/// of an ordinary size (an unbind revokes a handful of values) allocates nothing at all.
struct SmallList<T: Copy, const N: usize> {
    /// Room for the first `N` elements, made at the first push (filled with copies of the
    /// first element, so that no slot is ever empty).
    inline: Option<[T; N]>,
    /// How many of `inline` are elements (the first ones).
    inline_len: usize,
    /// The elements after the first `N`.
    heap: Vec<T>,
}

impl<T: Copy, const N: usize> SmallList<T, N> {
    fn new() -> Self {
        SmallList {
            inline: None,
            inline_len: 0,
            heap: Vec::new(),
        }
    }

    /// The first `len` inline elements.
    #[inline]
    fn inline(&self, len: usize) -> &[T] {
        self.inline.as_ref().map_or(&[], |a| &a[..len])
    }

    /// Whether `f` holds for one of the elements.
    #[inline]
    fn any(&self, f: impl Fn(T) -> bool) -> bool {
        self.inline(self.inline_len)
            .iter()
            .chain(&self.heap)
            .any(|&v| f(v))
    }

    /// Tries to make room for `additional` more elements; on failure, makes none.
    #[inline]
    fn try_reserve(&mut self, additional: usize) -> bool {
        let free_inline = N - self.inline_len;
        additional <= free_inline || self.heap.try_reserve(additional - free_inline).is_ok()
    }

    /// Appends `value` in room made by [`try_reserve`](Self::try_reserve): never allocates.
    #[inline]
    fn push_reserved(&mut self, value: T) {
        if self.inline_len < N {
            match &mut self.inline {
                Some(a) => a[self.inline_len] = value,
                None => self.inline = Some([value; N]),
            }
            self.inline_len += 1;
        } else {
            debug_assert!(self.heap.len() < self.heap.capacity(), "no room was made");
            self.heap.push(value);
        }
    }

    /// Empties the list at once and hands back what it held, to be read with
    /// [`detached`](Self::detached) and given back with [`reattach`](Self::reattach) (which
    /// keeps the heap memory). Until then the list is empty.
    fn detach(&mut self) -> Detached<T> {
        Detached {
            inline_len: std::mem::take(&mut self.inline_len),
            heap: std::mem::take(&mut self.heap),
        }
    }

    /// The elements of `d`, which [`detach`](Self::detach) of this list returned, in order.
    fn detached<'s>(&'s self, d: &'s Detached<T>) -> impl Iterator<Item = T> + 's {
        self.inline(d.inline_len).iter().chain(&d.heap).copied()
    }

    /// Takes back the heap memory of `d`, emptied, if the list has none (it has not grown
    /// since it was detached).
    fn reattach(&mut self, d: Detached<T>) {
        if self.heap.capacity() == 0 {
            let mut heap = d.heap;
            heap.clear();
            self.heap = heap;
        }
    }
}

/// What [`SmallList::detach`] took out of a list.
struct Detached<T> {
    inline_len: usize,
    heap: Vec<T>,
}

/// How many items a batch holds without heap memory.
const INLINE_ITEMS: usize = 16;
/// How many domains a batch holds without heap memory.
const INLINE_DOMAINS: usize = 8;
// An emptied batch always has room for one more item of a new domain.
const _: () = assert!(INLINE_ITEMS >= 1 && INLINE_DOMAINS >= 1);

/// The second half of [`revoke_all`], run by [`flush`](Self::flush) when the batch cannot grow
/// and by `Drop`, so that it also happens when the caller's iterator panics half-way.
///
/// # Invariants
///
/// `begin` returned `true` for every item, to this batch, and every item's domain is in
/// `domains`.
struct Batch<'a, R: Revoke + ?Sized> {
    items: SmallList<&'a R, INLINE_ITEMS>,
    domains: SmallList<&'a Domain, INLINE_DOMAINS>,
    /// The first panic of a dropped value, resumed when the batch is dropped.
    first_panic: Option<Box<dyn Any + Send + 'static>>,
}

impl<'a, R: Revoke + ?Sized> Batch<'a, R> {
    /// Makes room, without aborting on allocation failure, for one more item of `domain`.
    /// `None` if there is none; otherwise whether `domain` is already recorded.
    fn room_for(&mut self, domain: &Domain) -> Option<bool> {
        let known = self.domains.any(|d| std::ptr::eq(d, domain));
        (self.items.try_reserve(1) && (known || self.domains.try_reserve(1))).then_some(known)
    }

    /// Records `item`, for which `begin` just returned `true` to the caller, in the room that
    /// [`room_for`](Self::room_for) made (`known` is what it returned), or in an empty batch
    /// (`known` false): no allocation.
    fn record(&mut self, item: &'a R, domain: &'a Domain, known: bool) {
        // INVARIANT: the caller owns the drop of `item` and hands it to the batch; its domain is
        // recorded (already, or now).
        if !known {
            self.domains.push_reserved(domain);
        }
        self.items.push_reserved(item);
    }

    /// Waits for one grace period of each recorded domain, then drops every recorded value in
    /// order, and empties the batch (keeping its memory for the next items).
    fn flush(&mut self) {
        // Detached first: should a grace period panic (a read section of a batch domain held
        // by this thread, debug builds), the batch is already empty and its `Drop` has nothing
        // left to wait for. The values are then never dropped, as with `Revocable::revoke`.
        let domains = self.domains.detach();
        let items = self.items.detach();
        for domain in self.domains.detached(&domains) {
            domain.synchronize();
        }
        for item in self.items.detached(&items) {
            // SAFETY: by the type invariant this batch owns the drop of `item` (and each item
            // is recorded once, as `begin` returns `true` once), and the grace period of its
            // domain just completed after `begin` cleared its flag.
            let dropped = catch_unwind(AssertUnwindSafe(|| unsafe { item.finish() }));
            note(&mut self.first_panic, dropped);
        }
        // INVARIANT: both are empty.
        self.items.reattach(items);
        self.domains.reattach(domains);
    }
}

/// Keeps the first panic of a dropped value in `first`, logs the others.
fn note(first: &mut Option<Box<dyn Any + Send + 'static>>, dropped: std::thread::Result<()>) {
    if let Err(payload) = dropped {
        if first.is_none() {
            *first = Some(payload);
        } else {
            tracing::error!(target: "drmm", "another revoked value panicked while dropping");
            drop_payload(payload);
        }
    }
}

impl<R: Revoke + ?Sized> Drop for Batch<'_, R> {
    fn drop(&mut self) {
        self.flush();
        if let Some(payload) = self.first_panic.take() {
            resume_unless_unwinding(payload);
        }
    }
}

/// Resumes the panic of a revoked value's drop, or, if this thread is already unwinding, logs
/// it and drops the payload: resuming then would abort the process (a release during
/// unwinding only logs).
pub(crate) fn resume_unless_unwinding(payload: Box<dyn Any + Send + 'static>) {
    if !std::thread::panicking() {
        resume_unwind(payload);
    }
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)");
    tracing::error!(target: "drmm", "a revoked value panicked while dropping during unwinding (not resumed): {message}");
    drop_payload(payload);
}

/// Drops a panic payload: its destructor is foreign code too, and a panic from it must not
/// escape a release path.
pub(crate) fn drop_payload(payload: Box<dyn Any + Send + 'static>) {
    if let Err(inner) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(inner);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct CountDrop<'a>(&'a AtomicUsize);

    impl Drop for CountDrop<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct PanicDrop;

    impl Drop for PanicDrop {
        fn drop(&mut self) {
            panic!("drop panicked");
        }
    }

    #[test]
    fn drop_without_revoke_drops_once() {
        let n = AtomicUsize::new(0);
        drop(Revocable::new(CountDrop(&n)));
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn revoke_then_drop_drops_once() {
        let n = AtomicUsize::new(0);
        let r = Revocable::new(CountDrop(&n));
        assert!(r.revoke());
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert!(!r.revoke());
        drop(r);
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn forgotten_guard_is_not_unsound() {
        let r = Revocable::new(Box::new(7));
        std::mem::forget(r.try_access().unwrap());
        // The section never ends: revoking would wait forever, dropping without revoking is fine.
        drop(r);
    }

    #[test]
    #[cfg(debug_assertions)]
    fn revoke_inside_own_guard_panics_and_leaves_value() {
        let r = Revocable::new(1);
        let g = r.try_access().unwrap();
        let res = std::panic::catch_unwind(AssertUnwindSafe(|| r.revoke()));
        assert!(res.is_err());
        assert_eq!(*g, 1);
        assert!(!r.is_revoked());
        drop(g);
        assert!(r.revoke());
    }

    #[test]
    fn revoke_all_one_grace_period_per_domain() {
        let n = AtomicUsize::new(0);
        let d1 = Arc::new(Domain::new());
        let d2 = Arc::new(Domain::new());
        let a: Vec<_> = (0..5)
            .map(|_| Revocable::new_in(CountDrop(&n), d1.clone()))
            .collect();
        let b = Revocable::new_in(String::from("x"), d2.clone());
        let mut all: Vec<&dyn Revoke> = a.iter().map(|r| r as &dyn Revoke).collect();
        all.push(&b);
        all.push(&a[0]); // duplicates are revoked once
        assert_eq!(revoke_all(all), 6);
        assert_eq!(d1.grace_periods(), 1);
        assert_eq!(d2.grace_periods(), 1);
        assert_eq!(n.load(Ordering::SeqCst), 5);
        assert_eq!(revoke_all(&a), 0);
        assert_eq!(d1.grace_periods(), 1, "nothing to revoke: no grace period");
    }

    #[test]
    fn revoke_all_drops_every_value_when_one_panics() {
        let n = AtomicUsize::new(0);
        let d = Arc::new(Domain::new());
        let a = Revocable::new_in(CountDrop(&n), d.clone());
        let p = Revocable::new_in(PanicDrop, d.clone());
        let b = Revocable::new_in(CountDrop(&n), d.clone());
        let items: [&dyn Revoke; 3] = [&a, &p, &b];
        let res = std::panic::catch_unwind(AssertUnwindSafe(|| revoke_all(items)));
        assert!(res.is_err());
        assert_eq!(n.load(Ordering::SeqCst), 2);
        assert!(a.is_revoked() && p.is_revoked() && b.is_revoked());
        assert_eq!(d.grace_periods(), 1);
    }

    #[test]
    fn revoke_all_finishes_when_iterator_panics() {
        let n = AtomicUsize::new(0);
        let rs: Vec<_> = (0..3).map(|_| Revocable::new(CountDrop(&n))).collect();
        let res = std::panic::catch_unwind(AssertUnwindSafe(|| {
            revoke_all(rs.iter().enumerate().map(|(i, r)| {
                assert!(i < 2, "iterator panicked");
                r
            }))
        }));
        assert!(res.is_err());
        assert_eq!(n.load(Ordering::SeqCst), 2);
        assert!(rs[0].is_revoked() && rs[1].is_revoked() && !rs[2].is_revoked());
    }

    #[test]
    fn panicking_drop_in_revoke_propagates_once() {
        let r = Revocable::new(PanicDrop);
        assert!(std::panic::catch_unwind(AssertUnwindSafe(|| r.revoke())).is_err());
        assert!(r.is_revoked());
        assert!(!r.revoke());
        drop(r); // not dropped a second time
    }

    #[test]
    fn guard_derefs_and_debug() {
        let r = Revocable::new(vec![1u8]);
        let g = r.try_access().unwrap();
        assert_eq!(format!("{g:?}"), "[1]");
        assert_eq!(format!("{r:?}"), "Revocable { revoked: false, .. }");
    }
}
