//! Typed handles: proof of ownership of one entry, and the key that names an entry.

use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::error::Result;

/// Where an entry is: which list, which slot, which incarnation of the slot.
///
/// `seq` is unique within the list and never reused, so it is both the entry's age (release
/// order) and its generation (a key whose slot now holds another entry no longer matches).
// `pub` (though unreachable) because the sealed `ResourceOwner` check names it.
#[allow(unreachable_pub)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub(crate) list: u64,
    pub(crate) index: u32,
    pub(crate) seq: u64,
}

/// Something that owns a resource list and can vouch that it is alive: a logical device
/// ([`LogicalDevice`](crate::device::LogicalDevice)).
///
/// Borrowing the owner is the proof that the list and its entries are still there, which is
/// what makes reading through a [`Managed`] handle sound without a reference count per entry.
/// The trait is sealed: only this crate's owners implement it.
///
/// # Examples
///
/// ```
/// let dev = drmm::Device::new(());
/// let n = dev.alloc(1u64)?;
/// // A `Device<T>` and the `LogicalDevice<T>` it points to are both owners:
/// assert_eq!(*n.get(&dev)?, 1);
/// let logical: &drmm::LogicalDevice<()> = &dev;
/// assert_eq!(*n.get(logical)?, 1);
/// # Ok::<(), drmm::Error>(())
/// ```
pub trait ResourceOwner: sealed::Sealed {}

pub(crate) mod sealed {
    use super::Key;
    use crate::error::Result;

    /// The private half of [`ResourceOwner`](super::ResourceOwner).
    pub trait Sealed {
        /// Checks that `key` names a live entry of this owner's list.
        fn check_entry(&self, key: &Key) -> Result<()>;
    }
}

/// A handle to a release action: release it early or remove it.
///
/// Not `Clone`: releasing or removing consumes it, so an action cannot be released twice
/// through its handle. Dropping the handle leaves the action registered (it runs at the list's
/// release), like forgetting the `(action, data)` pair in C.
///
/// # Examples
///
/// ```
/// let dev = drmm::Device::new(());
/// let flush: drmm::ActionHandle = dev.add_action(|_| println!("flush"))?;
/// let _kept = dev.add_action(|_| println!("at the last reference"))?; // dropping keeps it
/// dev.release_action(flush)?; // "flush" now; `flush` is consumed
/// // dev.release_action(flush)?; // error[E0382]: use of moved value
/// assert_eq!(dev.resource_count(), 1);
/// # Ok::<(), drmm::Error>(())
/// ```
#[must_use = "dropping the handle keeps the action registered; bind it to `_` to say so"]
pub struct ActionHandle {
    pub(crate) key: Key,
}

impl ActionHandle {
    /// The identity of the list the action is on.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = (drmm::Device::new(()), drmm::Device::new(()));
    /// let h = a.add_action(|_| {})?;
    /// assert_eq!(h.list_id(), a.list_id());
    /// assert!(matches!(b.release_action(h), Err(drmm::Error::ForeignHandle { .. })));
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn list_id(&self) -> u64 {
        self.key.list
    }
}

impl fmt::Debug for ActionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActionHandle")
            .field("list", &self.key.list)
            .field("seq", &self.key.seq)
            .finish()
    }
}

/// A managed allocation: a `U` owned by a list entry and freed at the list's release (or
/// earlier, by consuming the handle).
///
/// Reading needs the owner ([`get`](Self::get)): as long as the owner is borrowed, the list is
/// alive and the entry is on it, so the handle can be stored anywhere, even inside the owner's
/// own driver data, with no reference cycle.
///
/// Not `Clone`: freeing consumes it.
///
/// # Variance
///
/// `Managed<U>` is **invariant** in `U`. The value lives on the list, not in the handle: it
/// outlives the handle and is dropped at the list's release with the drop glue of the type it
/// was made with. A covariant handle would let a `Managed<P<'static>>` be used as a
/// `Managed<P<'short>>`, [`get_mut`](Self::get_mut) would then store a short borrow in a value
/// that is dropped later as `P<'static>`, reading the borrow after it ended. So the lifetime
/// cannot be shortened:
///
/// ```compile_fail
/// fn shorten<'a>(m: drmm::Managed<&'static str>) -> drmm::Managed<&'a str> {
///     m // error: `Managed` is invariant in its value type
/// }
/// ```
///
/// The same function compiles for the value itself, which is covariant:
///
/// ```
/// fn shorten<'a>(v: Option<&'static str>) -> Option<&'a str> {
///     v
/// }
/// # assert_eq!(shorten(Some("x")), Some("x"));
/// ```
///
/// # Invariants
///
/// `ptr` points to the value owned by the entry `key`, valid for as long as that entry is on
/// its list.
///
/// # Examples
///
/// ```
/// struct Gpu { vram: drmm::Managed<[u8]> } // a handle inside the driver data: no cycle
///
/// let dev = drmm::Device::try_new_with("card0", |dev| {
///     Ok::<_, drmm::Error>(Gpu { vram: dev.kzalloc(4096)? })
/// })?;
/// let file = dev.clone();
/// drop(dev);
/// assert_eq!(file.data().vram.get(&file)?.len(), 4096); // reading needs the owner
/// # Ok::<(), drmm::Error>(())
/// ```
#[must_use = "dropping the handle keeps the allocation until the list is released"]
pub struct Managed<U: ?Sized> {
    pub(crate) key: Key,
    pub(crate) ptr: NonNull<U>,
    /// Invariance in `U` (see "Variance"); `*mut` also accepts unsized `U`. Sending and sharing
    /// are given by the impls below.
    _invariant: PhantomData<*mut U>,
}

// SAFETY: the handle gives `&U` (needs `U: Sync` to be usable from several threads) and `&mut U`
// (needs `U: Send` to move access across threads); values are only stored for
// `U: Send + Sync`.
unsafe impl<U: ?Sized + Send + Sync> Send for Managed<U> {}
// SAFETY: `&Managed<U>` only gives `&U`, which is shareable when `U: Sync`.
unsafe impl<U: ?Sized + Sync> Sync for Managed<U> {}

impl<U: ?Sized> Managed<U> {
    pub(crate) fn new(key: Key, ptr: NonNull<U>) -> Self {
        // INVARIANT: the caller has just put the value at `ptr` on the entry `key`.
        Managed {
            key,
            ptr,
            _invariant: PhantomData,
        }
    }

    /// The identity of the list the allocation is on.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = (drmm::Device::new(()), drmm::Device::new(()));
    /// let buf = a.kzalloc(8)?;
    /// assert_eq!(buf.list_id(), a.list_id());
    /// assert!(matches!(buf.get(&b), Err(drmm::Error::ForeignHandle { .. })));
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn list_id(&self) -> u64 {
        self.key.list
    }

    /// Starts loading the value's first cache line: called by an explicit free before it
    /// takes the list's lock. Freeing a small block writes a free-list link there, and the
    /// lock's atomic instruction would otherwise wait for that cache miss with nothing else
    /// in flight (random-order frees of many blocks: W3 at 200,000, docs/performance.md).
    #[inline(always)]
    pub(crate) fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is only a hint: it accesses nothing in the abstract machine and
        // never faults, whatever the address (here a live block's, by the invariant).
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                self.ptr.as_ptr().cast::<u8>().cast::<i8>(),
            );
        }
    }

    /// Reads the value, with `owner` as proof that it is still alive.
    ///
    /// # Errors
    ///
    /// [`Error::ForeignHandle`](crate::Error::ForeignHandle) if `owner` is not the owner of
    /// this allocation; [`Error::NotOnList`](crate::Error::NotOnList) if the list has already
    /// released it (only possible from inside a release action).
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// let answer = dev.alloc(42u32)?;
    /// assert_eq!(*answer.get(&dev)?, 42);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn get<'a, O: ResourceOwner + ?Sized>(&'a self, owner: &'a O) -> Result<&'a U> {
        sealed::Sealed::check_entry(owner, &self.key)?;
        // SAFETY: by the invariant `ptr` is valid while the entry is on its list. `check_entry`
        // confirmed that it is, and it cannot leave the list while `'a` lasts: taking it off
        // one by one needs this handle by value (borrowed here), and the owner's bulk release
        // cannot start while `owner` is borrowed (it runs only once nothing can reach the
        // owner, or inside the release on this thread, where `'a` is bounded by the action).
        Ok(unsafe { self.ptr.as_ref() })
    }

    /// Reads the value mutably, with `owner` as proof that it is still alive.
    ///
    /// # Errors
    ///
    /// As for [`get`](Self::get).
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// let mut counter = dev.alloc(0u32)?;
    /// *counter.get_mut(&dev)? += 1;
    /// assert_eq!(*counter.get(&dev)?, 1);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn get_mut<'a, O: ResourceOwner + ?Sized>(&'a mut self, owner: &'a O) -> Result<&'a mut U> {
        sealed::Sealed::check_entry(owner, &self.key)?;
        // SAFETY: as in `get`; access is exclusive because the handle is the only way to
        // reach the value and it is borrowed mutably.
        Ok(unsafe { self.ptr.as_mut() })
    }
}

impl<U: ?Sized> fmt::Debug for Managed<U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Managed")
            .field("list", &self.key.list)
            .field("seq", &self.key.seq)
            .field("type", &std::any::type_name::<U>())
            .finish()
    }
}
