//! The drmm API: actions and managed allocations on a logical device.

use std::mem::MaybeUninit;

use super::LogicalDevice;
#[allow(unused_imports)] // `Error` is named by the intra-doc links.
use crate::error::{Error, Result};
use crate::res::ops::{self, cast_uninit};
use crate::res::{ActionHandle, Managed, Site};

impl<T> LogicalDevice<T> {
    // ----- actions -------------------------------------------------------------------------

    /// Registers `action` to run when the device is released, naming it `name`.
    ///
    /// The action runs once, newest first with the other entries, when the last reference to
    /// the device is dropped — or earlier through [`release_action`](Self::release_action). It
    /// receives the device, whose data is still alive.
    ///
    /// Prefer the [`add_action!`](crate::add_action) macro, which names the action after its
    /// expression like the kernel's `drmm_add_action`.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`] if the list could not grow (or a large closure could not be
    /// boxed), [`Error::SizeOverflow`] if the list reached one of its fixed limits (every add
    /// can fail so); the action is dropped without running. See
    /// [`add_action_or_reset_named`](Self::add_action_or_reset_named) to run it instead.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(5u32);
    /// let _ = dev.add_action_named("check", |dev| assert_eq!(*dev.data(), 5))?;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "drmm_add_action_named")]
    #[doc(alias = "__drmm_add_action")]
    #[track_caller]
    pub fn add_action_named<F>(&self, name: &'static str, action: F) -> Result<ActionHandle>
    where
        F: FnOnce(&LogicalDevice<T>) + Send + 'static,
    {
        ops::add_action(&self.list, Site::caller(name), action).map_err(|(e, _)| e)
    }

    /// Registers `action`, named after its closure type. See
    /// [`add_action_named`](Self::add_action_named).
    ///
    /// # Errors
    ///
    /// As for [`add_action_named`](Self::add_action_named).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    ///
    /// let order = Arc::new(Mutex::new(Vec::new()));
    /// let dev = drmm::Device::new(());
    /// for i in 0..3 {
    ///     let o = order.clone();
    ///     let _ = dev.add_action(move |_| o.lock().unwrap().push(i))?;
    /// }
    /// drop(dev); // last reference: newest first
    /// assert_eq!(*order.lock().unwrap(), [2, 1, 0]);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "drmm_add_action")]
    #[track_caller]
    pub fn add_action<F>(&self, action: F) -> Result<ActionHandle>
    where
        F: FnOnce(&LogicalDevice<T>) + Send + 'static,
    {
        self.add_action_named(std::any::type_name::<F>(), action)
    }

    /// Registers `action`; if that fails, runs it at once and returns the error
    /// (`drmm_add_action_or_reset`). Either way the action runs exactly once, so the caller
    /// must not clean up again on error.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`] after running the action.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// let _ = dev.add_action_or_reset_named("unmap", |_| println!("unmapped"))?;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "drmm_add_action_or_reset")]
    #[track_caller]
    pub fn add_action_or_reset_named<F>(
        &self,
        name: &'static str,
        action: F,
    ) -> Result<ActionHandle>
    where
        F: FnOnce(&LogicalDevice<T>) + Send + 'static,
    {
        ops::add_action_or_reset(&self.list, Site::caller(name), action, self)
    }

    /// [`add_action_or_reset_named`](Self::add_action_or_reset_named), named after the closure
    /// type.
    ///
    /// # Errors
    ///
    /// As for [`add_action_or_reset_named`](Self::add_action_or_reset_named).
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// // If registering fails, the action runs at once and the error is returned, so the caller
    /// // has nothing to undo by hand.
    /// let _ = dev.add_action_or_reset(|_| println!("undo"))?;
    /// assert_eq!(dev.resource_count(), 1);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[track_caller]
    pub fn add_action_or_reset<F>(&self, action: F) -> Result<ActionHandle>
    where
        F: FnOnce(&LogicalDevice<T>) + Send + 'static,
    {
        self.add_action_or_reset_named(std::any::type_name::<F>(), action)
    }

    /// Takes the action off the list and runs it now (`drmm_release_action`).
    ///
    /// The handle says exactly which registration to release, so the kernel's question of which
    /// of several identical `(action, data)` pairs matches (drmm: the oldest; devm: the newest)
    /// does not arise. A panic of the action propagates to the caller; the entry is gone either
    /// way.
    ///
    /// # Errors
    ///
    /// [`Error::ForeignHandle`] if the handle belongs to another device (nothing runs);
    /// [`Error::NotOnList`] if the device's release already ran it (only possible from inside
    /// a release action).
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// let h = dev.add_action_named("flush", |_| println!("flushed"))?;
    /// dev.release_action(h)?; // prints now, not at release
    /// assert_eq!(dev.resource_count(), 0);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "drmm_release_action")]
    pub fn release_action(&self, handle: ActionHandle) -> Result<()> {
        self.list.release(&handle.key, self)
    }

    /// Takes the action off the list without running it; its captured state is dropped. The
    /// kernel has this only for devres (`devm_remove_action`).
    ///
    /// # Errors
    ///
    /// As for [`release_action`](Self::release_action).
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// let h = dev.add_action(|_| unreachable!("removed: never runs"))?;
    /// dev.remove_action(h)?;
    /// assert_eq!(dev.resource_count(), 0);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devm_remove_action")]
    pub fn remove_action(&self, handle: ActionHandle) -> Result<()> {
        self.list.remove(&handle.key)
    }

    // ----- typed allocations ---------------------------------------------------------------

    /// Moves `value` into a managed allocation freed (and dropped) at the device's release, or
    /// earlier by [`kfree`](Self::kfree).
    ///
    /// `U` must be `Send + Sync`: the release may drop it on any thread and handles may be
    /// shared. A lock that must live in its own allocation is `alloc(Mutex::new(..))` (see the
    /// module docs about `drmm_mutex_init`).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`]; `value` is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Mutex;
    /// let dev = drmm::Device::new(());
    /// let counter = dev.alloc(Mutex::new(0u32))?;
    /// *counter.get(&dev)?.lock().unwrap() += 1;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "drmm_kzalloc_obj")]
    #[doc(alias = "drmm_mutex_init")]
    #[track_caller]
    #[inline]
    pub fn alloc<U: Send + Sync + 'static>(&self, value: U) -> Result<Managed<U>> {
        self.list
            .alloc_value(Site::caller(std::any::type_name::<U>()), value)
    }

    /// A managed copy of `src` (`drmm_kmemdup`'s idea, for any `Copy` element type).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`], or [`Error::SizeOverflow`] if the slice's size exceeds
    /// `isize::MAX`.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// let table = dev.kmemdup(&[1u16, 2, 3])?;
    /// assert_eq!(table.get(&dev)?, &[1, 2, 3]);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devm_kmemdup")]
    #[doc(alias = "drmm_kmemdup")]
    #[track_caller]
    pub fn kmemdup<U: Copy + Send + Sync + 'static>(&self, src: &[U]) -> Result<Managed<[U]>> {
        self.list.alloc_copy(Site::caller("kmemdup"), src)
    }

    /// A managed copy of `s` (`drmm_kstrdup`). Rust strings carry their length, so no NUL is
    /// stored.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`].
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// let name = dev.kstrdup("vgpu-0")?;
    /// assert_eq!(name.get(&dev)?, "vgpu-0");
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "drmm_kstrdup")]
    #[track_caller]
    pub fn kstrdup(&self, s: &str) -> Result<Managed<str>> {
        ops::alloc_str(&self.list, Site::caller("kstrdup"), s)
    }

    // ----- raw bytes -----------------------------------------------------------------------

    /// `size` uninitialised bytes aligned to 16 (`drmm_kmalloc`).
    ///
    /// A zero-size allocation is a real entry on the list (the kernel's drmm does the same,
    /// where devm returns `ZERO_SIZE_PTR` untracked): its handle reads as an empty slice,
    /// whose pointer is aligned but dangling, and freeing it works like any other.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`]; [`Error::SizeOverflow`] if `size` exceeds `isize::MAX` once
    /// rounded up to the alignment.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::mem::MaybeUninit;
    /// let dev = drmm::Device::new(());
    /// let mut buf = dev.kmalloc(8)?;
    /// buf.get_mut(&dev)?.fill(MaybeUninit::new(0xff));
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "drmm_kmalloc")]
    #[track_caller]
    #[inline]
    pub fn kmalloc(&self, size: usize) -> Result<Managed<[MaybeUninit<u8>]>> {
        ops::alloc_bytes(&self.list, Site::caller("kmalloc"), size, None, false).map(cast_uninit)
    }

    /// `size` uninitialised bytes aligned to `align` (at least 16; a power of two up to
    /// [`MAX_BYTE_ALIGN`](crate::res::MAX_BYTE_ALIGN)).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAlignment`] for an alignment that is not a power of two or is too
    /// large; otherwise as [`kmalloc`](Self::kmalloc).
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// let ring = dev.kmalloc_aligned(1024, 256)?;
    /// assert_eq!(ring.get(&dev)?.as_ptr() as usize % 256, 0);
    /// assert!(matches!(dev.kmalloc_aligned(8, 24), Err(drmm::Error::InvalidAlignment { .. })));
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[track_caller]
    #[inline]
    pub fn kmalloc_aligned(&self, size: usize, align: usize) -> Result<Managed<[MaybeUninit<u8>]>> {
        ops::alloc_bytes(
            &self.list,
            Site::caller("kmalloc"),
            size,
            Some(align),
            false,
        )
        .map(cast_uninit)
    }

    /// `size` zeroed bytes aligned to 16 (`drmm_kzalloc`). Zero-size as in
    /// [`kmalloc`](Self::kmalloc).
    ///
    /// # Errors
    ///
    /// As for [`kmalloc`](Self::kmalloc).
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// let mut vram = dev.kzalloc(64 * 1024)?; // drmm_kzalloc
    /// assert!(vram.get(&dev)?.iter().all(|&b| b == 0));
    /// vram.get_mut(&dev)?[0] = 0xff;
    /// let file = dev.clone();
    /// drop(dev);
    /// assert_eq!(vram.get(&file)?[0], 0xff); // alive until the last reference
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "drmm_kzalloc")]
    #[track_caller]
    #[inline]
    pub fn kzalloc(&self, size: usize) -> Result<Managed<[u8]>> {
        ops::alloc_bytes(&self.list, Site::caller("kzalloc"), size, None, true)
    }

    /// `size` zeroed bytes aligned to `align`.
    ///
    /// # Errors
    ///
    /// As for [`kmalloc_aligned`](Self::kmalloc_aligned).
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// let page = dev.kzalloc_aligned(4096, 4096)?;
    /// assert_eq!(page.get(&dev)?.as_ptr() as usize % 4096, 0);
    /// assert_eq!(page.get(&dev)?, &[0u8; 4096][..]);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[track_caller]
    #[inline]
    pub fn kzalloc_aligned(&self, size: usize, align: usize) -> Result<Managed<[u8]>> {
        ops::alloc_bytes(&self.list, Site::caller("kzalloc"), size, Some(align), true)
    }

    /// `n * size` uninitialised bytes (`drmm_kmalloc_array`), with the product checked.
    ///
    /// # Errors
    ///
    /// [`Error::SizeOverflow`] if `n * size` overflows; otherwise as [`kmalloc`](Self::kmalloc).
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// assert!(matches!(dev.kmalloc_array(usize::MAX, 2), Err(drmm::Error::SizeOverflow { .. })));
    /// ```
    #[doc(alias = "drmm_kmalloc_array")]
    #[track_caller]
    #[inline]
    pub fn kmalloc_array(&self, n: usize, size: usize) -> Result<Managed<[MaybeUninit<u8>]>> {
        ops::alloc_array(&self.list, Site::caller("kmalloc_array"), n, size, false).map(cast_uninit)
    }

    /// `n * size` zeroed bytes (`drmm_kcalloc`), with the product checked.
    ///
    /// # Errors
    ///
    /// As for [`kmalloc_array`](Self::kmalloc_array).
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// let lut = dev.kcalloc(256, 4)?; // a zeroed 256-entry table of u32
    /// assert_eq!(lut.get(&dev)?.len(), 1024);
    /// assert!(dev.kcalloc(usize::MAX / 2, 4).is_err());
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "drmm_kcalloc")]
    #[track_caller]
    #[inline]
    pub fn kcalloc(&self, n: usize, size: usize) -> Result<Managed<[u8]>> {
        ops::alloc_array(&self.list, Site::caller("kcalloc"), n, size, true)
    }

    // ----- early free ----------------------------------------------------------------------

    /// Frees a managed allocation now (`drmm_kfree`), dropping its value. O(1): the handle
    /// names the entry, where the kernel scans the list.
    ///
    /// # Errors
    ///
    /// [`Error::ForeignHandle`] if the allocation belongs to another device (nothing is
    /// freed); [`Error::NotOnList`] if the device's release already freed it (only possible
    /// from inside a release action).
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// let buf = dev.kzalloc(4096)?;
    /// dev.kfree(buf)?;
    /// assert_eq!(dev.resource_count(), 0);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "drmm_kfree")]
    pub fn kfree<U: ?Sized>(&self, handle: Managed<U>) -> Result<()> {
        handle.prefetch();
        self.list.release(&handle.key, self)
    }
}
