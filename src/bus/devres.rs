//! [`Devres<T>`]: a revocable value registered on a binding and revoked when it ends.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};

use super::{Bound, BusDevice};
use crate::error::{Error, Result};
use crate::res::Key;
use crate::res::fallible::{Shared, try_box};
use crate::revoke::grace::Domain;
use crate::revoke::{Revocable, RevocableGuard, Revoke, revoke_all};
use crate::sync::{Arc, AtomicBool, Condvar, Mutex, Ordering, lock};

/// One registered `Devres`, type-erased for the batch revocation at unbind.
trait Registered: Send + Sync {
    fn revocable(&self) -> &dyn Revoke;
    /// Takes the duty of revoking; `true` for exactly one caller.
    fn claim(&self) -> bool;
    /// Signals that the claimed revocation is complete (the value is dropped).
    fn complete(&self);
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
        lock(&self.items).live.retain(|(i, _)| *i != id);
    }

    /// Revokes every registered value that nobody else is revoking, newest first, after one
    /// grace period for all of them; waits for nothing else. Returns the first panic of a
    /// value's drop.
    pub(super) fn revoke_all_newest_first(&self) -> Option<crate::res::list::PanicPayload> {
        // Filtered in place, newest first by iterating backwards: a release path must not
        // allocate (it could only abort).
        let mut mine = std::mem::take(&mut lock(&self.items).live);
        mine.retain(|(_, item)| item.claim());
        if mine.is_empty() {
            return None;
        }
        let revoked = panic::catch_unwind(AssertUnwindSafe(|| {
            revoke_all(mine.iter().rev().map(|(_, i)| i.revocable()));
        }));
        for (_, item) in &mine {
            item.complete();
        }
        revoked.err()
    }
}

/// The shared part of a `Devres<T>`: the value, and the handshake between the two parties that
/// may revoke it (the owner dropping it early, the binding ending).
struct Inner<T> {
    data: Revocable<T>,
    claimed: AtomicBool,
    done: Mutex<bool>,
    revoked: Condvar,
}

impl<T: Send + Sync> Inner<T> {
    /// Revokes the value, or, if another party claimed that duty, waits until it has dropped
    /// it. Either way the value is gone when this returns (the completion handshake of
    /// Rust-for-Linux's `Devres`).
    fn revoke_or_wait(&self) {
        if self.claim() {
            let r = panic::catch_unwind(AssertUnwindSafe(|| self.data.revoke()));
            self.complete();
            if let Err(p) = r {
                panic::resume_unwind(p);
            }
        } else {
            let mut done = lock(&self.done);
            while !*done {
                done = wait(&self.revoked, done);
            }
        }
    }
}

impl<T> Inner<T> {
    fn claim(&self) -> bool {
        !self.claimed.swap(true, Ordering::AcqRel)
    }

    fn complete(&self) {
        *lock(&self.done) = true;
        self.revoked.notify_all();
    }
}

/// The registry's reference to an `Inner<T>` (a box around the shared pointer, so that the
/// registry can hold values of every `T` without unsized shared pointers).
struct Holder<T>(Shared<Inner<T>>);

impl<T: Send + Sync> Registered for Holder<T> {
    fn revocable(&self) -> &dyn Revoke {
        &self.0.data
    }

    fn claim(&self) -> bool {
        self.0.claim()
    }

    fn complete(&self) {
        self.0.complete()
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
///
/// `T` is dropped on whichever thread revokes it, so it must be `Send`; it is shared with the
/// readers, so it must be `Sync`. "Devres users should simply free the backing resource in
/// `T`'s `Drop`."
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
    pub fn new(bound: &Bound<'_>, value: T) -> Result<Self> {
        let dev = bound.device();
        let registry = &dev.core().revocables;
        // Every allocation is fallible: `Shared` and `try_box` instead of `Arc` and `Box`.
        let inner = Shared::try_new(Inner {
            data: Revocable::new_in(value, registry.domain.clone()),
            claimed: AtomicBool::new(false),
            done: Mutex::new(false),
            revoked: Condvar::new(),
        })?;
        let id = registry.register(try_box(Holder(inner.clone()))?)?;
        let theirs = inner.clone();
        // Registration comes last, so that nothing is registered if anything before failed
        // (the Rust-for-Linux fix "leaking call to devm_add_action()").
        match bound.add_action_named(std::any::type_name::<Self>(), move || {
            theirs.revoke_or_wait();
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

    /// Access to the value, or `None` once revocation has begun. The unbind waits for the
    /// guard to be dropped before dropping the value.
    ///
    /// Do not drop a `Devres` of the same device while holding a guard: its revocation would
    /// wait for this guard (debug builds panic instead).
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
    pub fn try_access(&self) -> Option<RevocableGuard<'_, T>> {
        self.inner.data.try_access()
    }

    /// Runs `f` on the value unless it has been revoked.
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
    pub fn try_access_with<R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        self.inner.data.try_access_with(f)
    }

    /// Access with proof of the binding: the device must be the one the value is registered
    /// on.
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
    pub fn access<'a>(&'a self, bound: &Bound<'_>) -> Result<RevocableGuard<'a, T>> {
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
        self.inner.revoke_or_wait();
        self.dev.core().revocables.unregister(self.id);
        let _ = self.dev.core().devres.list().remove(&self.key);
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
