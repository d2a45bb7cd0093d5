//! [`Bound`]: proof of a binding, and the devres (`devm_*`) API.

use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;

use super::{Binding, BusDevice};
#[allow(unused_imports)] // `Error` is named by the intra-doc links.
use crate::error::{Error, Result};
use crate::res::ops::{self, cast_uninit};
use crate::res::scope::Scope;
use crate::res::{ActionHandle, EntryInfo, Group, Key, Managed, ResourceOwner, Site};

/// Proof that a bus device's binding is alive: the holder of the device's exclusive scope
/// (`device_lock`), lent as `&mut Bound<'_>` to [`Driver::probe`](super::Driver::probe),
/// [`Driver::remove`](super::Driver::remove), [`BusDevice::with_bound`] and
/// [`BusDevice::with_driverless`]. All of the devres API lives here.
///
/// It cannot outlive the call that lent it, and while it lives the binding cannot end:
/// unbinding and removal wait for it. So a devres allocation read through
/// [`Managed::get`] with a `Bound` as the owner cannot be freed under the reader, even though
/// the handle may be stored anywhere (in the driver data, in a drmm allocation, in another
/// thread) and outlive the binding: after the unbind, reading through it fails with
/// [`Error::NotOnList`] (or [`Error::ForeignHandle`] on another device).
///
/// Group release ([`release_group`](Self::release_group)) frees entries whose handles may still
/// exist, so it takes `&mut self`: no reference read through this `Bound` can be alive then,
/// and no other `Bound` of the device exists.
///
/// There is no way to own a `Bound` or to make one outside those calls; a strong reference to
/// the device that outlives them is a [`BusDevice`] ([`device`](Self::device)), which proves
/// nothing about the binding.
///
/// ```compile_fail
/// # use drmm::bus::{Bus, Bound};
/// let bus = Bus::new("b");
/// let dev = bus.add_device("d");
/// let mut leaked: Option<&Bound<'_>> = None;
/// dev.with_driverless(|b| leaked = Some(b)).unwrap(); // error: `b` escapes the closure
/// ```
///
/// `Bound<'a>` is invariant in `'a`: the scope it holds cannot be passed off as a shorter one.
///
/// ```compile_fail
/// use drmm::Bound;
/// fn shorten<'s, 'l: 's>(b: &'s Bound<'l>) -> &'s Bound<'s> {
///     b // error: `Bound` is invariant in its lifetime
/// }
/// ```
#[doc(alias = "device_lock")]
pub struct Bound<'a> {
    dev: &'a BusDevice,
    scope: Scope<'a, ()>,
    _invariant: PhantomData<fn(&'a ()) -> &'a ()>,
}

impl<'a> Bound<'a> {
    pub(super) fn new(dev: &'a BusDevice, scope: Scope<'a, ()>) -> Self {
        Bound {
            dev,
            scope,
            _invariant: PhantomData,
        }
    }

    pub(super) fn scope_mut(&mut self) -> &mut Scope<'a, ()> {
        &mut self.scope
    }

    fn list(&self) -> &crate::res::ResourceList<()> {
        self.scope.list()
    }

    /// The bus device (a reference that can be cloned and kept; it proves nothing about the
    /// binding).
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// let kept: drmm::BusDevice = dev.with_driverless(|b| b.device().clone())?;
    /// assert!(drmm::BusDevice::ptr_eq(&kept, &dev));
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn device(&self) -> &BusDevice {
        self.dev
    }

    /// The device's name.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// assert_eq!(dev.with_driverless(|b| b.name().to_string())?, "gpu.0");
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        self.dev.name()
    }

    /// The driver data of the binding (`dev_get_drvdata`), if a driver is bound, probe has
    /// returned, and it is a `T`. `None` inside probe, inside remove (which receives the data
    /// as an argument) and for a driver-less device.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use drmm::{Bound, Driver};
    ///
    /// struct Gpu;
    /// impl Driver for Gpu {
    ///     type Data = u32;
    ///     fn probe(&self, _dev: &mut Bound<'_>) -> drmm::Result<u32> {
    ///         Ok(7)
    ///     }
    /// }
    ///
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.bind(Arc::new(Gpu))?;
    /// assert_eq!(dev.with_bound(|b| b.driver_data::<u32>().copied())?, Some(7));
    /// assert_eq!(dev.with_bound(|b| b.driver_data::<String>().is_none())?, true);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "dev_get_drvdata")]
    pub fn driver_data<T: 'static>(&self) -> Option<&T> {
        self.scope
            .slot()?
            .downcast_ref::<Binding>()?
            .data
            .downcast_ref::<T>()
    }

    /// The driver data as a `T`, telling apart the two cases that
    /// [`driver_data`](Self::driver_data) folds into `None`. `driver_data` stays the short
    /// form for code that knows its driver; this one is for code that can meet another
    /// driver's device (a bus-wide walk, a helper shared by drivers).
    ///
    /// # Errors
    ///
    /// [`Error::NoDriverData`] inside probe or remove, or on a driver-less device;
    /// [`Error::WrongType`] when the driver data is of another type.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use drmm::{Bound, Driver, Error};
    ///
    /// struct Gpu;
    /// impl Driver for Gpu {
    ///     type Data = u32;
    ///     fn probe(&self, _dev: &mut Bound<'_>) -> drmm::Result<u32> {
    ///         Ok(7)
    ///     }
    /// }
    ///
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.bind(Arc::new(Gpu))?;
    /// assert_eq!(dev.try_with_bound(|b| b.driver_data_checked::<u32>().copied())?, 7);
    /// assert_eq!(
    ///     dev.try_with_bound(|b| b.driver_data_checked::<String>().cloned()),
    ///     Err(Error::WrongType { expected: "alloc::string::String" })
    /// );
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "dev_get_drvdata")]
    pub fn driver_data_checked<T: 'static>(&self) -> Result<&T> {
        let data = self
            .scope
            .slot()
            .and_then(|s| s.downcast_ref::<Binding>())
            .ok_or(Error::NoDriverData)?;
        data.data.downcast_ref::<T>().ok_or(Error::WrongType {
            expected: std::any::type_name::<T>(),
        })
    }

    /// Number of live devres entries.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.with_driverless(|b| -> drmm::Result<()> {
    ///     let _buf = b.kzalloc(32)?;
    ///     let _ = b.add_action(|| {})?;
    ///     assert_eq!(b.resource_count(), 2);
    ///     Ok(())
    /// })??;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn resource_count(&self) -> usize {
        self.list().len()
    }

    /// The live devres entries, newest first.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.with_driverless(|b| -> drmm::Result<()> {
    ///     let _buf = b.kzalloc(32)?;
    ///     let _ = b.add_action_named("clock off", || {})?;
    ///     let snap = b.snapshot(); // newest first
    ///     assert_eq!(snap[0].name(), "clock off");
    ///     assert_eq!(snap[1].size(), 32);
    ///     Ok(())
    /// })??;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn snapshot(&self) -> Vec<EntryInfo> {
        self.list().snapshot()
    }

    // ----- actions -------------------------------------------------------------------------

    /// Registers `action` to run when the binding ends (unbind, probe failure, removal),
    /// newest first with the other devres entries, naming it `name` (`devm_add_action`).
    ///
    /// The action receives nothing: like the kernel's `action(data)`, it captures what it
    /// needs. Prefer the [`add_action!`](crate::add_action) macro, which names it after its
    /// expression.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`], or [`Error::SizeOverflow`] if the list reached one of its fixed
    /// limits (every add can fail so); the action is dropped without running (see
    /// [`add_action_or_reset_named`](Self::add_action_or_reset_named)).
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::bus::Bus::new("b");
    /// let dev = bus.add_device("d");
    /// dev.with_driverless(|b| {
    ///     let _ = b.add_action_named("disable clock", || println!("clock off"))?;
    ///     drmm::Result::Ok(())
    /// })??;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devm_add_action")]
    #[doc(alias = "__devm_add_action")]
    #[track_caller]
    pub fn add_action_named<F>(&self, name: &'static str, action: F) -> Result<ActionHandle>
    where
        F: FnOnce() + Send + 'static,
    {
        ops::add_action(self.list(), Site::caller(name), move |_: &()| action()).map_err(|(e, _)| e)
    }

    /// [`add_action_named`](Self::add_action_named), named after the closure type.
    ///
    /// # Errors
    ///
    /// As for [`add_action_named`](Self::add_action_named).
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("virtual");
    /// let dev = bus.add_device("root");
    /// dev.with_driverless(|b| -> drmm::Result<()> {
    ///     let irq = b.add_action(|| println!("free_irq"))?;
    ///     assert!(b.is_action_added(&irq));
    ///     b.release_action(irq)?; // runs now (devm_release_action)
    ///     let clk = b.add_action(|| unreachable!("removed, never run"))?;
    ///     b.remove_action(clk)?; // devm_remove_action
    ///     Ok(())
    /// })??;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[track_caller]
    pub fn add_action<F>(&self, action: F) -> Result<ActionHandle>
    where
        F: FnOnce() + Send + 'static,
    {
        self.add_action_named(std::any::type_name::<F>(), action)
    }

    /// Registers `action`; if that fails, runs it at once and returns the error
    /// (`devm_add_action_or_reset`). Either way it runs exactly once: do not clean up again.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`], after running the action.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.with_driverless(|b| -> drmm::Result<()> {
    ///     // If registering failed, "irq off" would run at once and the error be returned.
    ///     let _ = b.add_action_or_reset_named("irq off", || println!("irq off"))?;
    ///     assert_eq!(b.snapshot()[0].name(), "irq off");
    ///     Ok(())
    /// })??;
    /// dev.remove()?; // "irq off"
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devm_add_action_or_reset")]
    #[track_caller]
    pub fn add_action_or_reset_named<F>(
        &self,
        name: &'static str,
        action: F,
    ) -> Result<ActionHandle>
    where
        F: FnOnce() + Send + 'static,
    {
        ops::add_action_or_reset(self.list(), Site::caller(name), move |_: &()| action(), &())
    }

    /// [`add_action_or_reset_named`](Self::add_action_or_reset_named), named after the
    /// closure type.
    ///
    /// # Errors
    ///
    /// As for [`add_action_or_reset_named`](Self::add_action_or_reset_named).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    ///
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// let done = Arc::new(AtomicBool::new(false));
    /// let d = done.clone();
    /// dev.with_driverless(|b| b.add_action_or_reset(move || d.store(true, Ordering::SeqCst)))??;
    /// dev.remove()?;
    /// assert!(done.load(Ordering::SeqCst));
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[track_caller]
    pub fn add_action_or_reset<F>(&self, action: F) -> Result<ActionHandle>
    where
        F: FnOnce() + Send + 'static,
    {
        self.add_action_or_reset_named(std::any::type_name::<F>(), action)
    }

    /// Takes the action off the list without running it; its captured state is dropped
    /// (`devm_remove_action`).
    ///
    /// The handle names exactly one registration, so the kernel's rule (the newest of several
    /// equal `(action, data)` pairs) has nothing left to decide.
    ///
    /// # Errors
    ///
    /// [`Error::ForeignHandle`] for another device's action; [`Error::NotOnList`] if the
    /// binding that registered it has ended (or a group release took it).
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::bus::Bus::new("b");
    /// let dev = bus.add_device("d");
    /// dev.with_driverless(|b| {
    ///     let h = b.add_action(|| unreachable!("removed, never run"))?;
    ///     assert!(b.is_action_added(&h));
    ///     b.remove_action(h)
    /// })??;
    /// dev.remove()?;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devm_remove_action")]
    #[doc(alias = "devm_remove_action_nowarn")]
    pub fn remove_action(&self, handle: ActionHandle) -> Result<()> {
        self.list().remove(&handle.key)
    }

    /// Takes the action off the list and runs it now (`devm_release_action`). A panic of the
    /// action propagates; the entry is gone either way.
    ///
    /// # Errors
    ///
    /// As for [`remove_action`](Self::remove_action); nothing runs then.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// let runs = Arc::new(AtomicUsize::new(0));
    /// let r = runs.clone();
    /// dev.with_driverless(|b| -> drmm::Result<()> {
    ///     let h = b.add_action(move || {
    ///         r.fetch_add(1, Ordering::SeqCst);
    ///     })?;
    ///     b.release_action(h)?; // runs now, and only now
    ///     Ok(())
    /// })??;
    /// dev.remove()?;
    /// assert_eq!(runs.load(Ordering::SeqCst), 1);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devm_release_action")]
    pub fn release_action(&self, handle: ActionHandle) -> Result<()> {
        self.list().release(&handle.key, &())
    }

    /// Whether the action is still registered on this device (`devm_is_action_added`).
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.with_driverless(|b| -> drmm::Result<()> {
    ///     let h = b.add_action(|| {})?;
    ///     assert!(b.is_action_added(&h));
    ///     b.remove_action(h)?;
    ///     Ok(())
    /// })??;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devm_is_action_added")]
    pub fn is_action_added(&self, handle: &ActionHandle) -> bool {
        self.scope.check_live(&handle.key).is_ok()
    }

    // ----- allocations ---------------------------------------------------------------------

    /// Moves `value` into a devres allocation, dropped and freed when the binding ends or by
    /// [`kfree`](Self::kfree).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`]; `value` is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Mutex;
    ///
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.with_driverless(|b| -> drmm::Result<()> {
    ///     let state = b.alloc(Mutex::new(vec![1u32, 2]))?;
    ///     state.get(b)?.lock().unwrap().push(3);
    ///     assert_eq!(*state.get(b)?.lock().unwrap(), [1, 2, 3]);
    ///     Ok(())
    /// })??; // the Vec is dropped when the device's devres list is released
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devm_kzalloc_obj")]
    #[track_caller]
    #[inline]
    pub fn alloc<U: Send + Sync + 'static>(&self, value: U) -> Result<Managed<U>> {
        self.list()
            .alloc_value(Site::caller(std::any::type_name::<U>()), value)
    }

    /// `size` uninitialised bytes aligned to 16 (`devm_kmalloc`). A zero size is a real,
    /// empty entry (the kernel's devm returns an untracked `ZERO_SIZE_PTR`; here every
    /// allocation has a handle, so it is tracked like the others).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`]; [`Error::SizeOverflow`] beyond `isize::MAX`.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.with_driverless(|b| -> drmm::Result<()> {
    ///     let mut buf = b.kmalloc(4)?; // uninitialised bytes: write before reading
    ///     for byte in buf.get_mut(&*b)? {
    ///         byte.write(0xab);
    ///     }
    ///     assert_eq!(buf.get(b)?.len(), 4);
    ///     b.kfree(buf)?; // devm_kfree: freed now instead of at unbind
    ///     Ok(())
    /// })??;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devm_kmalloc")]
    #[track_caller]
    #[inline]
    pub fn kmalloc(&self, size: usize) -> Result<Managed<[MaybeUninit<u8>]>> {
        ops::alloc_bytes(self.list(), Site::caller("devm_kmalloc"), size, None, false)
            .map(cast_uninit)
    }

    /// `size` zeroed bytes aligned to 16 (`devm_kzalloc`).
    ///
    /// # Errors
    ///
    /// As for [`kmalloc`](Self::kmalloc).
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::bus::Bus::new("b");
    /// let dev = bus.add_device("d");
    /// dev.with_driverless(|b| {
    ///     let buf = b.kzalloc(16)?;
    ///     assert_eq!(buf.get(b)?, &[0; 16]);
    ///     drmm::Result::Ok(())
    /// })??;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devm_kzalloc")]
    #[track_caller]
    #[inline]
    pub fn kzalloc(&self, size: usize) -> Result<Managed<[u8]>> {
        ops::alloc_bytes(self.list(), Site::caller("devm_kzalloc"), size, None, true)
    }

    /// `size` zeroed bytes aligned to `align` (a power of two up to
    /// [`MAX_BYTE_ALIGN`](crate::res::MAX_BYTE_ALIGN), at least 16).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAlignment`]; otherwise as [`kmalloc`](Self::kmalloc).
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.with_driverless(|b| -> drmm::Result<()> {
    ///     let ring = b.kzalloc_aligned(256, 64)?;
    ///     assert_eq!(ring.get(b)?.as_ptr() as usize % 64, 0);
    ///     assert!(b.kzalloc_aligned(8, 3).is_err()); // not a power of two
    ///     Ok(())
    /// })??;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[track_caller]
    #[inline]
    pub fn kzalloc_aligned(&self, size: usize, align: usize) -> Result<Managed<[u8]>> {
        ops::alloc_bytes(
            self.list(),
            Site::caller("devm_kzalloc"),
            size,
            Some(align),
            true,
        )
    }

    /// `n * size` uninitialised bytes, the product checked (`devm_kmalloc_array`).
    ///
    /// # Errors
    ///
    /// [`Error::SizeOverflow`] if `n * size` overflows; otherwise as [`kmalloc`](Self::kmalloc).
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.with_driverless(|b| -> drmm::Result<()> {
    ///     let table = b.kmalloc_array(8, 4)?;
    ///     assert_eq!(table.get(b)?.len(), 32);
    ///     assert!(matches!(b.kmalloc_array(usize::MAX, 2), Err(drmm::Error::SizeOverflow { .. })));
    ///     Ok(())
    /// })??;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devm_kmalloc_array")]
    #[track_caller]
    #[inline]
    pub fn kmalloc_array(&self, n: usize, size: usize) -> Result<Managed<[MaybeUninit<u8>]>> {
        ops::alloc_array(
            self.list(),
            Site::caller("devm_kmalloc_array"),
            n,
            size,
            false,
        )
        .map(cast_uninit)
    }

    /// `n * size` zeroed bytes, the product checked (`devm_kcalloc`).
    ///
    /// # Errors
    ///
    /// As for [`kmalloc_array`](Self::kmalloc_array).
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.with_driverless(|b| -> drmm::Result<()> {
    ///     let table = b.kcalloc(4, 8)?;
    ///     assert_eq!(table.get(b)?, &[0u8; 32]);
    ///     Ok(())
    /// })??;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devm_kcalloc")]
    #[track_caller]
    #[inline]
    pub fn kcalloc(&self, n: usize, size: usize) -> Result<Managed<[u8]>> {
        ops::alloc_array(self.list(), Site::caller("devm_kcalloc"), n, size, true)
    }

    /// Resizes a devres byte allocation (`devm_krealloc`). The new bytes past the old length
    /// are uninitialised. The entry keeps its place in the release order (the kernel swaps the
    /// new node into the old one's place) and the handle is updated in place; on error
    /// nothing changes and the old allocation stays valid.
    ///
    /// # Errors
    ///
    /// [`Error::ForeignHandle`]; [`Error::NotOnList`] if it was already released;
    /// [`Error::OutOfMemory`] / [`Error::SizeOverflow`].
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("virtual");
    /// let dev = bus.add_device("root");
    /// dev.with_driverless(|b| -> drmm::Result<()> {
    ///     let mut buf = b.kmalloc(8)?;
    ///     b.krealloc(&mut buf, 4096)?; // same place in the release order, new size
    ///     assert_eq!(buf.get(b)?.len(), 4096);
    ///     Ok(())
    /// })??;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devm_krealloc")]
    #[doc(alias = "devm_krealloc_array")]
    pub fn krealloc(&self, handle: &mut Managed<[MaybeUninit<u8>]>, new_size: usize) -> Result<()> {
        self.list().realloc_bytes(handle, new_size, false)
    }

    /// [`krealloc`](Self::krealloc) for zeroed allocations: the new bytes are zeroed
    /// (`devm_krealloc` with `__GFP_ZERO`).
    ///
    /// # Errors
    ///
    /// As for [`krealloc`](Self::krealloc).
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::bus::Bus::new("b");
    /// let dev = bus.add_device("d");
    /// dev.with_driverless(|b| {
    ///     let mut table = b.kmemdup(&[1u8, 2])?;
    ///     b.krealloc_zeroed(&mut table, 4)?;
    ///     assert_eq!(table.get(b)?, &[1, 2, 0, 0]);
    ///     drmm::Result::Ok(())
    /// })??;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn krealloc_zeroed(&self, handle: &mut Managed<[u8]>, new_size: usize) -> Result<()> {
        self.list().realloc_bytes(handle, new_size, true)
    }

    /// A devres copy of `s` (`devm_kstrdup`).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`].
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.with_driverless(|b| -> drmm::Result<()> {
    ///     let label = b.kstrdup("vgpu firmware 1.2")?;
    ///     assert_eq!(label.get(b)?, "vgpu firmware 1.2");
    ///     Ok(())
    /// })??;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devm_kstrdup")]
    #[doc(alias = "devm_kstrdup_const")]
    #[track_caller]
    pub fn kstrdup(&self, s: &str) -> Result<Managed<str>> {
        ops::alloc_str(self.list(), Site::caller("devm_kstrdup"), s)
    }

    /// A devres copy of `src` (`devm_kmemdup`).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`]; [`Error::SizeOverflow`].
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.with_driverless(|b| -> drmm::Result<()> {
    ///     let modes = b.kmemdup(&[(640u32, 480u32), (1024, 768)])?;
    ///     assert_eq!(modes.get(b)?[1], (1024, 768));
    ///     Ok(())
    /// })??;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devm_kmemdup")]
    #[doc(alias = "devm_kmemdup_array")]
    #[track_caller]
    pub fn kmemdup<U: Copy + Send + Sync + 'static>(&self, src: &[U]) -> Result<Managed<[U]>> {
        self.list().alloc_copy(Site::caller("devm_kmemdup"), src)
    }

    /// A devres string formatted from `args` (`devm_kasprintf`); use with `format_args!`.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`].
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::bus::Bus::new("b");
    /// let dev = bus.add_device("d");
    /// dev.with_driverless(|b| {
    ///     let name = b.kasprintf(format_args!("{}-irq{}", b.name(), 3))?;
    ///     assert_eq!(name.get(b)?, "d-irq3");
    ///     drmm::Result::Ok(())
    /// })??;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devm_kasprintf")]
    #[doc(alias = "devm_kvasprintf")]
    #[track_caller]
    pub fn kasprintf(&self, args: std::fmt::Arguments<'_>) -> Result<Managed<str>> {
        ops::alloc_fmt(self.list(), Site::caller("devm_kasprintf"), args)
    }

    /// Frees a devres allocation now, dropping its value (`devm_kfree`). O(1).
    ///
    /// # Errors
    ///
    /// [`Error::ForeignHandle`]; [`Error::NotOnList`] if the binding that made it has ended or
    /// a group release freed it.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.with_driverless(|b| -> drmm::Result<()> {
    ///     let scratch = b.kzalloc(4096)?;
    ///     assert_eq!(b.resource_count(), 1);
    ///     b.kfree(scratch)?; // O(1); the handle is consumed, so it cannot be freed twice
    ///     assert_eq!(b.resource_count(), 0);
    ///     Ok(())
    /// })??;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devm_kfree")]
    pub fn kfree<U: ?Sized>(&self, handle: Managed<U>) -> Result<()> {
        handle.prefetch();
        self.list().release(&handle.key, &())
    }

    // ----- groups --------------------------------------------------------------------------

    /// Opens a group (`devres_open_group`): entries added from now on, until
    /// [`close_group`](Self::close_group), belong to it and to every enclosing open group.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`].
    ///
    /// # Examples
    ///
    /// A sub-component's resources, released on its own failure without touching the rest:
    ///
    /// ```
    /// let bus = drmm::bus::Bus::new("b");
    /// let dev = bus.add_device("d");
    /// dev.with_driverless(|b| {
    ///     let _keep = b.kzalloc(8)?;
    ///     let group = b.open_group()?;
    ///     let _a = b.kzalloc(8)?;
    ///     let _ = b.add_action(|| println!("sub-component off"))?;
    ///     b.close_group(&group)?;
    ///     assert_eq!(b.release_group(group)?, 2); // the two entries, newest first
    ///     assert_eq!(b.resource_count(), 1);
    ///     drmm::Result::Ok(())
    /// })??;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devres_open_group")]
    #[track_caller]
    pub fn open_group(&self) -> Result<Group> {
        self.list().open_group(Site::caller("grp<"))
    }

    /// Closes a group (`devres_close_group`). The kernel's "latest open group" shortcut
    /// (`id == NULL`) is not needed: the handle names the group.
    ///
    /// # Errors
    ///
    /// [`Error::GroupClosed`] if already closed; [`Error::NotOnList`] if its markers are gone;
    /// [`Error::ForeignHandle`]; [`Error::OutOfMemory`].
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.with_driverless(|b| -> drmm::Result<()> {
    ///     let group = b.open_group()?;
    ///     let _a = b.kzalloc(8)?;
    ///     b.close_group(&group)?;
    ///     let _after = b.kzalloc(8)?; // not in the group
    ///     assert_eq!(b.close_group(&group), Err(drmm::Error::GroupClosed));
    ///     assert_eq!(b.release_group(group)?, 1);
    ///     Ok(())
    /// })??;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devres_close_group")]
    #[track_caller]
    pub fn close_group(&self, group: &Group) -> Result<()> {
        self.list().close_group(group, Site::caller("grp>"))
    }

    /// Removes the group's markers only (`devres_remove_group`): its entries stay, as part of
    /// the enclosing group or the binding.
    ///
    /// # Errors
    ///
    /// [`Error::NotOnList`] if its markers are gone; [`Error::ForeignHandle`].
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.with_driverless(|b| -> drmm::Result<()> {
    ///     let group = b.open_group()?;
    ///     let _a = b.kzalloc(8)?;
    ///     b.close_group(&group)?;
    ///     assert_eq!(b.resource_count(), 3); // two markers and the allocation
    ///     b.remove_group(group)?; // the allocation stays, released with the binding
    ///     assert_eq!(b.resource_count(), 1);
    ///     Ok(())
    /// })??;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devres_remove_group")]
    pub fn remove_group(&self, group: Group) -> Result<()> {
        self.list().remove_group(group)
    }

    /// Releases the group (`devres_release_group`): every entry between its markers (or after
    /// its open marker while it is open) newest first, properly nested groups included. A group
    /// that only partially overlaps keeps its markers and its entries outside the range.
    /// Returns the number of entries released, markers not counted.
    ///
    /// Takes `&mut self`: handles of the released allocations may still exist, and no reference
    /// read through them may be alive (reads borrow the `Bound` shared). They read as
    /// [`Error::NotOnList`] afterwards.
    ///
    /// # Errors
    ///
    /// [`Error::NotOnList`] if the group's markers are gone (released with an enclosing group:
    /// the kernel `WARN`s); [`Error::ForeignHandle`].
    ///
    /// # Panics
    ///
    /// Resumes the first panic of a release action once every entry of the group has been
    /// released (the others are logged).
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.with_driverless(|b| -> drmm::Result<()> {
    ///     let group = b.open_group()?; // still open: everything after its marker is in it
    ///     let buf = b.kzalloc(8)?;
    ///     let _ = b.add_action(|| println!("sub-component off"))?;
    ///     assert_eq!(b.release_group(group)?, 2);
    ///     assert_eq!(buf.get(b), Err(drmm::Error::NotOnList)); // the stale handle is detected
    ///     Ok(())
    /// })??;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devres_release_group")]
    pub fn release_group(&mut self, group: Group) -> Result<usize> {
        let r = self.scope.release_group(group, &())?;
        crate::res::list::PanicSink::resume(r.panic, self.dev.name());
        Ok(r.released)
    }
}

impl crate::res::handle::sealed::Sealed for Bound<'_> {
    fn check_entry(&self, key: &Key) -> Result<()> {
        self.scope.check_live(key)
    }
}

impl ResourceOwner for Bound<'_> {}

impl fmt::Debug for Bound<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bound")
            .field("device", &self.dev.name())
            .field("resources", &self.resource_count())
            .finish()
    }
}

impl BusDevice {
    /// [`with_bound`](Self::with_bound) for a closure that returns a [`Result`]: one `?`
    /// instead of two. The binding's error and the closure's error are the same
    /// [`Error`], so nothing is lost by flattening; `with_bound` stays for closures that
    /// return anything else.
    ///
    /// # Errors
    ///
    /// Those of [`with_bound`](Self::with_bound), then the closure's.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use drmm::{Bound, Driver, Devres};
    ///
    /// struct Nop;
    /// impl Driver for Nop {
    ///     type Data = ();
    ///     fn probe(&self, _: &mut Bound<'_>) -> drmm::Result<()> { Ok(()) }
    /// }
    ///
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.bind(Arc::new(Nop))?;
    /// let regs = dev.try_with_bound(|b| Devres::new(b, [0u32; 4]))?; // not `??`
    /// assert_eq!(regs.try_access().map(|r| r[0]), Some(0));
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn try_with_bound<R>(&self, f: impl FnOnce(&mut Bound<'_>) -> Result<R>) -> Result<R> {
        self.with_bound(f)?
    }

    /// [`with_driverless`](Self::with_driverless) for a closure that returns a [`Result`],
    /// flattened like [`try_with_bound`](Self::try_with_bound).
    ///
    /// # Errors
    ///
    /// Those of [`with_driverless`](Self::with_driverless), then the closure's.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("virtual");
    /// let dev = bus.add_device("root");
    /// let buf = dev.try_with_driverless(|b| b.kzalloc(16))?;
    /// assert_eq!(dev.resource_count(), 1);
    /// # let _ = buf;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn try_with_driverless<R>(&self, f: impl FnOnce(&mut Bound<'_>) -> Result<R>) -> Result<R> {
        self.with_driverless(f)?
    }
}
