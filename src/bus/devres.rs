//! [`Devres<T>`]: a revocable value registered on a binding and revoked when it ends.

use std::fmt;
use std::panic::{self, AssertUnwindSafe, Location};

use super::{Bound, BusDevice};
use crate::error::{Error, Result};
use crate::res::Key;
use crate::res::list::PanicPayload;
use crate::revoke::grace::Domain;
use crate::revoke::{Revocable, RevocableGuard, drop_payload, resume_unless_unwinding};
use crate::sync::fallible::{Shared, try_box};
use crate::sync::{Arc, AtomicUsize, Condvar, Mutex, Ordering, ThreadKey, current_thread, lock};
use crate::trace;

/// One registered `Devres`, type-erased for the batch revocation at unbind.
trait Registered: Send + Sync {
    /// Takes the duty of revoking for the batch of thread `by`; `true` for exactly one caller.
    fn claim(&self, by: ThreadKey) -> bool;
    /// Clears the flag of a claimed value (the first half of its revocation).
    fn begin(&self);
    /// Marks a claimed value whose flag was cleared before a grace period that has now ended:
    /// from now on the claiming thread may drop it from anywhere (see [`Inner::revoke_or_wait`]).
    fn ready(&self);
    /// Drops a ready value unless the claiming thread already did (from a value's drop, while
    /// the batch was dropping an earlier one), and signals completion. Returns the panic of the
    /// value's drop.
    fn finish(&self) -> Option<PanicPayload>;
}

/// The `Devres` values registered on a device's current binding, and the grace-period domain
/// they share so that an unbind revokes all of them after one grace period.
pub(super) struct Registry {
    domain: Arc<Domain>,
    items: Mutex<Items>,
}

#[derive(Default)]
struct Items {
    next_id: u64,
    live: Vec<(u64, Box<dyn Registered>)>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            domain: Arc::new(Domain::new()),
            items: Mutex::new(Items::default()),
        }
    }
}

impl Registry {
    /// Records `item`; [`Error::OutOfMemory`] if the record cannot grow (`item` is dropped).
    fn register(&self, item: Box<dyn Registered>) -> Result<u64> {
        let mut items = lock(&self.items);
        if items.live.try_reserve(1).is_err() {
            // The size of the record that did not fit (the vector asked for more).
            let layout = std::alloc::Layout::new::<(u64, Box<dyn Registered>)>();
            return Err(Error::OutOfMemory {
                size: layout.size(),
                align: layout.align(),
            });
        }
        items.next_id += 1;
        let id = items.next_id;
        items.live.push((id, item));
        Ok(id)
    }

    fn unregister(&self, id: u64) {
        let mut items = lock(&self.items);
        let at = items.live.iter().position(|(i, _)| *i == id);
        let removed = at.map(|at| items.live.remove(at));
        drop(items);
        // Outside the lock: were it the last reference, the value's drop (user code) would run.
        drop(removed);
    }

    /// Revokes every registered value that nobody else is revoking, newest first, after one
    /// grace period for all of them; waits for nothing else. Returns how many it revoked and
    /// the first panic of a value's drop (the others are logged), or the panic that reports a guard of one of the
    /// values held by this thread (see `Domain::synchronize`): nothing is claimed then, every
    /// value stays registered and reachable, and the next end of the binding (or the value's
    /// owner) revokes it.
    ///
    /// A value's drop may drop another `Devres` of this batch (a value that owns one): that
    /// `Devres` drops its value at once, on this thread, and the batch skips it.
    pub(super) fn revoke_all_newest_first(&self) -> (usize, Option<PanicPayload>) {
        // Checked before anything is claimed: a claim is only ever taken by a batch that will
        // complete it.
        if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| self.domain.assert_not_reading())) {
            return (0, Some(p));
        }
        let me = current_thread();
        // Filtered in place: a release path must not allocate (it could only abort).
        let mut mine = std::mem::take(&mut lock(&self.items).live);
        mine.retain(|(_, item)| item.claim(me));
        if mine.is_empty() {
            return (0, None);
        }
        // Library code only from here to the drops: no exit path leaves a claim unfinished.
        for (_, item) in &mine {
            item.begin();
        }
        self.domain.synchronize();
        for (_, item) in &mine {
            item.ready();
        }
        let mut first: Option<PanicPayload> = None;
        for (_, item) in mine.iter().rev() {
            if let Some(p) = item.finish() {
                if first.is_none() {
                    first = Some(p);
                } else {
                    tracing::error!(target: "drmm", "another revoked value panicked while dropping");
                    drop_payload(p);
                }
            }
        }
        (mine.len(), first)
    }
}

/// Who is revoking a `Devres` value, and how far they are.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    /// Nobody yet.
    Unclaimed,
    /// Thread `by` owns the revocation; `ready` once the flag was cleared and no guard can
    /// remain (a grace period has ended since, or the `Devres` is being dropped), so that only
    /// the drop is left.
    Claimed { by: ThreadKey, ready: bool },
    /// Thread `by` is dropping the value.
    Dropping { by: ThreadKey },
    /// The value is gone.
    Done,
}

/// The shared part of a `Devres<T>`: the value, and the handshake between the two parties that
/// may revoke it (the owner dropping it early, the binding ending).
///
/// # Invariants
///
/// `data` is revoked (its flag cleared) only by the thread that moved `stage` out of
/// `Unclaimed`, and its value is dropped only by the thread that moved `stage` to `Dropping`,
/// which it does only from `Claimed { ready: true }`. `stage` goes back to `Unclaimed` only
/// from `Claimed { ready: false }` before the flag was cleared.
struct Inner<T> {
    data: Revocable<T>,
    stage: Mutex<Stage>,
    changed: Condvar,
    /// Threads waiting on `changed`; only read or written with `stage` locked. A change of
    /// stage wakes them only if there are any: a wake-up is a system call even with no waiter,
    /// and an unbind changes the stage of every value it revokes.
    waiters: AtomicUsize,
}

impl<T: Send + Sync> Inner<T> {
    /// Revokes the value, or, if another thread claimed that duty, waits until it has dropped
    /// it. Either way the value is gone when this returns (the completion handshake of
    /// Rust-for-Linux's `Devres`), with one exception that cannot wait: when this thread is
    /// itself dropping the value (a value that holds the last reference to its own `Devres`),
    /// which completes as soon as that drop returns.
    ///
    /// A batch of this thread that has cleared the flag and waited for the grace period lets
    /// this call drop the value at once: a value dropped by the batch may own another
    /// `Devres` of the same binding, and waiting for the batch would wait for itself.
    ///
    /// Returns the panic of the value's drop, or the one that reports a guard of the domain
    /// held by this thread (the value is left unrevoked and reachable then), for the caller to
    /// resume.
    ///
    /// `unshared`: the caller is the `Devres` being dropped. Guards borrow the `Devres`, so
    /// none can exist then, and no grace period is needed (nor waited for: a guard of another
    /// value of the domain held by this thread does not matter).
    fn revoke_or_wait(&self, unshared: bool) -> Option<PanicPayload> {
        let me = current_thread();
        let mut stage = lock(&self.stage);
        loop {
            match *stage {
                Stage::Unclaimed => {
                    *stage = Stage::Claimed {
                        by: me,
                        ready: false,
                    };
                    drop(stage);
                    return self.revoke_claimed(me, unshared);
                }
                Stage::Claimed { by, ready: true } if by == me => {
                    drop(stage);
                    return self.drop_ready(me);
                }
                // This thread is inside the value's drop, or (not reached: no user code runs
                // between a claim and its grace period) about to clear its flag.
                Stage::Dropping { by } | Stage::Claimed { by, .. } if by == me => return None,
                Stage::Done => return None,
                _ => {
                    // Under the lock, so a `set` that follows sees this waiter.
                    self.waiters.fetch_add(1, Ordering::Relaxed);
                    stage = wait(&self.changed, stage);
                    self.waiters.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// The whole revocation, for the thread `me` that just claimed it; returns a panic as
    /// [`revoke_or_wait`](Self::revoke_or_wait).
    fn revoke_claimed(&self, me: ThreadKey, unshared: bool) -> Option<PanicPayload> {
        if unshared {
            self.begin();
            self.set(Stage::Claimed {
                by: me,
                ready: true,
            });
            return self.drop_ready(me);
        }
        let domain = self.data.domain();
        // A guard of the domain held by this thread would make the grace period wait for
        // itself (a panic where detected): the claim is given back first, so that the value
        // stays reachable and the next revocation (at the end of the binding) still drops it.
        if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| domain.assert_not_reading())) {
            self.set(Stage::Unclaimed);
            return Some(p);
        }
        self.begin();
        domain.synchronize();
        self.set(Stage::Claimed {
            by: me,
            ready: true,
        });
        self.drop_ready(me)
    }

    /// Clears the flag of a value this thread claimed.
    fn begin(&self) {
        let first = self.data.begin_revoke();
        debug_assert!(first, "only the claiming thread clears the flag");
    }

    /// Drops the value if it is still `Claimed { by: me, ready: true }`, then completes.
    /// Returns the panic of the value's drop.
    fn drop_ready(&self, me: ThreadKey) -> Option<PanicPayload> {
        {
            let mut stage = lock(&self.stage);
            if *stage
                != (Stage::Claimed {
                    by: me,
                    ready: true,
                })
            {
                // Dropped already, from inside an earlier value's drop on this thread.
                return None;
            }
            *stage = Stage::Dropping { by: me };
        }
        // SAFETY: this thread claimed the revocation and cleared the flag (so it owns the
        // drop, and the stage moved to `Dropping` once, here), and after that a grace period of
        // the domain completed or the `Devres` was found unshared (`ready`): no guard remains.
        let dropped =
            panic::catch_unwind(AssertUnwindSafe(|| unsafe { self.data.finish_revoke() }));
        self.set(Stage::Done);
        dropped.err()
    }

    fn set(&self, to: Stage) {
        let mut stage = lock(&self.stage);
        *stage = to;
        // A thread that starts waiting after this sees the new stage first.
        let waiting = self.waiters.load(Ordering::Relaxed) != 0;
        drop(stage);
        if waiting {
            self.changed.notify_all();
        }
    }
}

/// The registry's reference to an `Inner<T>` (a box around the shared pointer, so that the
/// registry can hold values of every `T` without unsized shared pointers).
struct Holder<T>(Shared<Inner<T>>);

impl<T: Send + Sync> Registered for Holder<T> {
    fn claim(&self, by: ThreadKey) -> bool {
        let mut stage = lock(&self.0.stage);
        if *stage != Stage::Unclaimed {
            return false;
        }
        *stage = Stage::Claimed { by, ready: false };
        true
    }

    fn begin(&self) {
        self.0.begin();
    }

    fn ready(&self) {
        let mut stage = lock(&self.0.stage);
        if let Stage::Claimed { ready, .. } = &mut *stage {
            *ready = true;
        }
    }

    fn finish(&self) -> Option<PanicPayload> {
        self.0.drop_ready(current_thread())
    }
}

fn wait<'a, U>(cv: &Condvar, g: crate::sync::MutexGuard<'a, U>) -> crate::sync::MutexGuard<'a, U> {
    #[cfg(loom)]
    {
        cv.wait(g).unwrap_or_else(|e| e.into_inner())
    }
    #[cfg(not(loom))]
    {
        cv.wait(g)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A value registered on a binding and revoked when the binding ends (Rust-for-Linux's
/// `Devres`): a hardware-facing resource (register mapping, interrupt line, DMA buffer) that
/// other code may hold on to past the unbind (in a drmm allocation, an open file, a thread)
/// but can only reach while the binding lasts.
///
/// * Access goes through [`try_access`](Self::try_access): a guard, or `None` once revocation
///   has begun.
/// * When the binding ends (unbind, probe failure, removal), every `Devres` of the binding is
///   revoked after **one** grace period for all of them: the unbind waits for the guards, then
///   drops the values, newest first, before the driver data is dropped.
/// * Dropping the `Devres` earlier revokes it at once and takes its entry off the devres list.
///   If the binding ends at the same moment, exactly one of the two drops the value and the
///   other waits for it (the completion handshake Rust-for-Linux added to fix its
///   `Devres::drop` race): after `drop` returns, and after the unbind returns, the value is gone.
/// * A value may own other `Devres` of the same binding: the unbind drops them from inside the
///   value's drop, in that order, and dropping a `Devres` never waits for a grace period (its
///   guards borrow it, so none exists then).
///
/// `T` is dropped on whichever thread revokes it, so it must be `Send`; it is shared with the
/// readers, so it must be `Sync`. "Devres users should simply free the backing resource in
/// `T`'s `Drop`."
///
/// # Variance
///
/// The value outlives the `Devres` (the unbind may drop it later), so `T` is `'static` and
/// `Devres<T>` is invariant in it: no lifetime in `T` can be shortened.
///
/// ```compile_fail
/// fn shorten<'a>(d: drmm::Devres<&'static str>, _local: &'a str) {
///     let _short: drmm::Devres<&'a str> = d; // error: `&'a str` is not `'static`
/// }
/// ```
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use drmm::bus::{Bound, Bus, Devres, Driver};
///
/// struct Mmio(u32);
/// struct Gpu;
/// impl Driver for Gpu {
///     type Data = Arc<Devres<Mmio>>;
///     fn probe(&self, dev: &mut Bound<'_>) -> drmm::Result<Self::Data> {
///         Ok(Arc::new(Devres::new(dev, Mmio(0xfee0))?))
///     }
/// }
///
/// let bus = Bus::new("pci");
/// let dev = bus.add_device("gpu0");
/// dev.bind(Arc::new(Gpu))?;
/// let regs = dev.with_bound(|b| b.driver_data::<Arc<Devres<Mmio>>>().cloned())?.unwrap();
/// assert_eq!(regs.try_access_with(|m| m.0), Some(0xfee0));
/// dev.unbind()?;
/// assert!(regs.try_access().is_none()); // revoked at unbind, though `regs` lives on
/// # Ok::<(), drmm::Error>(())
/// ```
#[doc(alias = "devm_add_action")]
pub struct Devres<T: Send + Sync + 'static> {
    inner: Shared<Inner<T>>,
    dev: BusDevice,
    key: Key,
    id: u64,
}

impl<T: Send + Sync + 'static> Devres<T> {
    /// Registers `value` on the binding `bound` (for a driver-less device: until its removal).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`] if the devres entry could not be added; `value` is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// # use drmm::{Bound, Driver};
    /// # struct Nop;
    /// # impl Driver for Nop { type Data = (); fn probe(&self, _: &mut Bound<'_>) -> drmm::Result<()> { Ok(()) } }
    /// use drmm::Devres;
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.bind(std::sync::Arc::new(Nop))?;
    /// let regs = dev.with_bound(|b| Devres::new(b, [0u32; 4]))??;
    /// assert_eq!(regs.try_access().map(|r| r[0]), Some(0));
    /// dev.unbind()?; // revoked: the hardware is gone
    /// assert!(regs.try_access().is_none());
    /// assert!(regs.is_revoked());
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[track_caller]
    pub fn new(bound: &Bound<'_>, value: T) -> Result<Self> {
        let dev = bound.device();
        let registry = &dev.core().revocables;
        // Every allocation is fallible: `Shared` and `try_box` instead of `Arc` and `Box`.
        let inner = Shared::try_new(Inner {
            data: Revocable::new_in(value, registry.domain.clone()),
            stage: Mutex::new(Stage::Unclaimed),
            changed: Condvar::new(),
            waiters: AtomicUsize::new(0),
        })?;
        let id = registry.register(try_box(Holder(inner.clone()))?)?;
        let theirs = inner.clone();
        // Registration comes last, so that nothing is registered if anything before failed
        // (the Rust-for-Linux fix "leaking call to devm_add_action()").
        match bound.add_action_named(std::any::type_name::<Self>(), move || {
            if let Some(p) = theirs.revoke_or_wait(false) {
                resume_unless_unwinding(p);
            }
        }) {
            Ok(handle) => Ok(Devres {
                inner,
                dev: dev.clone(),
                key: handle.key,
                id,
            }),
            Err(e) => {
                registry.unregister(id);
                Err(e)
            }
        }
    }

    /// Builds the value with `init` and registers it like [`new`](Self::new), for values whose
    /// construction can fail (mapping a register window, requesting an interrupt). The value
    /// is built first, so that its failure leaves nothing behind.
    ///
    /// The error type is the caller's `E`, which takes the library's errors by `From`: a
    /// driver's own error enum, or [`Error`] itself.
    ///
    /// # Errors
    ///
    /// * `init`'s error, returned as is: nothing was registered.
    /// * [`Error::OutOfMemory`] (into `E`) when the registration fails: the built value has
    ///   been dropped, exactly once, and nothing is registered.
    ///
    /// # Examples
    ///
    /// ```
    /// use drmm::{Devres, Error};
    ///
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// let regs = dev.try_with_driverless(|b| Devres::new_with(b, || Ok::<_, Error>(vec![0u32; 16])))?;
    /// assert_eq!(regs.try_access().map(|r| r.len()), Some(16));
    ///
    /// let irq = dev.try_with_driverless(|b| {
    ///     Devres::<u32>::new_with(b, || Err(Error::probe_failed("no interrupt line")))
    /// });
    /// assert_eq!(irq.unwrap_err(), Error::probe_failed("no interrupt line"));
    /// assert_eq!(dev.resource_count(), 1); // only `regs`
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devm_add_action_or_reset")]
    #[track_caller]
    pub fn new_with<E: From<Error>>(
        bound: &Bound<'_>,
        init: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<Self, E> {
        let value = init()?;
        Ok(Self::new(bound, value)?)
    }

    /// Access to the value, or `None` once revocation has begun. The unbind waits for the
    /// guard to be dropped before dropping the value.
    ///
    /// Do not unbind or remove the device while this thread holds the guard: the unbind would
    /// wait for the guard forever. It panics instead when it detects it (always in debug
    /// builds, usually in release builds: see [`Domain::synchronize`]); every value then stays
    /// registered and is revoked by the next end of the binding, or when its `Devres` is
    /// dropped. The types cannot refuse it here, as this guard borrows only the `Devres`; the
    /// guard of [`access`](Self::access) also borrows the [`Bound`], so it cannot be held
    /// across an unbind at all. Dropping another `Devres` while holding a guard is fine.
    ///
    /// A refusal is an event ([`Op::Refused`](crate::trace::Op::Refused), `detail` `devres`)
    /// naming the caller's location.
    ///
    /// # Examples
    ///
    /// ```
    /// # use drmm::{Bound, Driver};
    /// # struct Nop;
    /// # impl Driver for Nop { type Data = (); fn probe(&self, _: &mut Bound<'_>) -> drmm::Result<()> { Ok(()) } }
    /// use drmm::Devres;
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.bind(std::sync::Arc::new(Nop))?;
    /// let regs = dev.with_bound(|b| Devres::new(b, [0u32; 4]))??;
    /// if let Some(r) = regs.try_access() {
    ///     assert_eq!(r[3], 0); // the unbind waits for this guard
    /// }
    /// dev.unbind()?;
    /// assert!(regs.try_access().is_none());
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[inline]
    #[track_caller]
    pub fn try_access(&self) -> Option<RevocableGuard<'_, T>> {
        let guard = self.inner.data.try_access();
        if guard.is_none() {
            self.refused(Location::caller());
        }
        guard
    }

    /// Runs `f` on the value unless it has been revoked (a refusal is an event, as for
    /// [`try_access`](Self::try_access)).
    ///
    /// # Examples
    ///
    /// ```
    /// # use drmm::{Bound, Driver};
    /// # struct Nop;
    /// # impl Driver for Nop { type Data = (); fn probe(&self, _: &mut Bound<'_>) -> drmm::Result<()> { Ok(()) } }
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.bind(std::sync::Arc::new(Nop))?;
    /// let regs = dev.with_bound(|b| drmm::Devres::new(b, vec![1u32, 2, 3]))??;
    /// assert_eq!(regs.try_access_with(|r| r.len()), Some(3));
    /// dev.unbind()?;
    /// assert_eq!(regs.try_access_with(|r| r.len()), None);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[inline]
    #[track_caller]
    pub fn try_access_with<R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        let location = Location::caller();
        let r = self.inner.data.try_access_with(f);
        if r.is_none() {
            self.refused(location);
        }
        r
    }

    /// Reports a refused access made at `location`.
    #[cold]
    fn refused(&self, location: &'static Location<'static>) {
        let list = self.dev.core().devres.list();
        let name = std::any::type_name::<T>();
        trace::refused(list, trace::Refusal::Devres, Some(name), location);
    }

    /// Access with proof of the binding: the device must be the one the value is registered
    /// on.
    ///
    /// The guard borrows `bound` as well as the `Devres` (as Rust-for-Linux ties the access to
    /// the bound device): it cannot leave the [`with_bound`](BusDevice::with_bound) scope or
    /// the driver callback, so it cannot be held across an unbind, which would wait for it
    /// forever:
    ///
    /// ```compile_fail
    /// # use drmm::{Bound, Driver};
    /// # struct Nop;
    /// # impl Driver for Nop { type Data = (); fn probe(&self, _: &mut Bound<'_>) -> drmm::Result<()> { Ok(()) } }
    /// use drmm::Devres;
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.bind(std::sync::Arc::new(Nop))?;
    /// let regs = dev.with_bound(|b| Devres::new(b, 7u32))??;
    /// let guard = dev.with_bound(|b| regs.access(b))??; // error: the guard borrows `b`
    /// dev.unbind()?; // would wait for `guard` forever
    /// drop(guard);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::ForeignHandle`] if `bound` is another device's binding; [`Error::Revoked`] if
    /// the value has been revoked (a driver-less scope after an earlier binding ended).
    ///
    /// # Examples
    ///
    /// ```
    /// # use drmm::{Bound, Driver};
    /// # struct Nop;
    /// # impl Driver for Nop { type Data = (); fn probe(&self, _: &mut Bound<'_>) -> drmm::Result<()> { Ok(()) } }
    /// use drmm::Devres;
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.bind(std::sync::Arc::new(Nop))?;
    /// let regs = dev.with_bound(|b| Devres::new(b, 7u32))??;
    /// // Inside the binding scope the value cannot be revoked: no runtime check needed.
    /// let v = dev.with_bound(|b| regs.access(b).map(|r| *r))??;
    /// assert_eq!(v, 7);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[track_caller]
    pub fn access<'a>(&'a self, bound: &'a Bound<'_>) -> Result<RevocableGuard<'a, T>> {
        if !BusDevice::ptr_eq(bound.device(), &self.dev) {
            return Err(Error::ForeignHandle {
                handle_list: self.dev.list_id(),
                list: bound.device().list_id(),
            });
        }
        self.try_access().ok_or(Error::Revoked)
    }

    /// Whether revocation has begun.
    ///
    /// # Examples
    ///
    /// ```
    /// # use drmm::{Bound, Driver};
    /// # struct Nop;
    /// # impl Driver for Nop { type Data = (); fn probe(&self, _: &mut Bound<'_>) -> drmm::Result<()> { Ok(()) } }
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.bind(std::sync::Arc::new(Nop))?;
    /// let irq = dev.with_bound(|b| drmm::Devres::new(b, 42u32))??;
    /// assert!(!irq.is_revoked());
    /// dev.unbind()?;
    /// assert!(irq.is_revoked());
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn is_revoked(&self) -> bool {
        self.inner.data.is_revoked()
    }

    /// The device the value is registered on.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// let v = dev.with_driverless(|b| drmm::Devres::new(b, 1u8))??;
    /// assert!(drmm::BusDevice::ptr_eq(v.device(), &dev));
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn device(&self) -> &BusDevice {
        &self.dev
    }

    /// The grace-period domain shared by the device's revocables (to count grace periods).
    ///
    /// # Examples
    ///
    /// ```
    /// # use drmm::{Bound, Driver};
    /// # struct Nop;
    /// # impl Driver for Nop { type Data = (); fn probe(&self, _: &mut Bound<'_>) -> drmm::Result<()> { Ok(()) } }
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.bind(std::sync::Arc::new(Nop))?;
    /// let a = dev.with_bound(|b| drmm::Devres::new(b, 1u32))??;
    /// let b2 = dev.with_bound(|b| drmm::Devres::new(b, 2u32))??;
    /// let before = a.domain().grace_periods();
    /// dev.unbind()?; // both values revoked after one grace period
    /// assert_eq!(a.domain().grace_periods() - before, 1);
    /// assert!(b2.is_revoked());
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn domain(&self) -> &Arc<Domain> {
        self.inner.data.domain()
    }
}

impl<T: Send + Sync + 'static> Drop for Devres<T> {
    /// Revokes the value now (or waits for the unbind that is revoking it), then takes the
    /// entry off the devres list if the unbind has not already taken it
    /// (`devm_remove_action_nowarn`).
    fn drop(&mut self) {
        let panicked = self.inner.revoke_or_wait(true);
        self.dev.core().revocables.unregister(self.id);
        let _ = self.dev.core().devres.list().remove(&self.key);
        if let Some(p) = panicked {
            // Only logged while unwinding: resuming then would abort the process.
            resume_unless_unwinding(p);
        }
    }
}

impl<T: Send + Sync + 'static> fmt::Debug for Devres<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Devres")
            .field("device", &self.dev.name())
            .field("revoked", &self.is_revoked())
            .finish()
    }
}
