//! Open files (`struct drm_file`): one reference to the device, plus per-file driver data.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::panic::Location;

use super::{Device, LogicalDevice};
use crate::error::{Error, Result};
use crate::revoke::GateGuard;
use crate::sync::Ordering;
use crate::trace::{self, Op, Refusal};

/// An open file of a logical device (`struct drm_file`): a reference to the device and the
/// driver's per-file data `F`.
///
/// A file opened before an unplug keeps working for everything that only touches drmm state
/// (the device's data and drmm allocations stay valid); what touches hardware enters the gate
/// ([`enter`](Self::enter)) and sees it closed. Dropping the file (or
/// [`close`](Self::close)) drops `F`, then the reference: the last close of an unbound device
/// releases it.
///
/// # Examples
///
/// ```
/// let dev = drmm::Device::new(String::from("card0"));
/// dev.register()?;
/// let file = dev.open(0u32)?; // per-file data
/// dev.unplug();
/// assert!(dev.open(0).is_err());
/// assert_eq!(file.device().data(), "card0"); // software state still there
/// assert!(file.enter().is_none());             // hardware gone
/// # Ok::<(), drmm::Error>(())
/// ```
///
/// # Variance
///
/// A file outlives the borrow of the device that opened it, so it is invariant in both
/// parameters (`T` is also `'static`): the lifetimes in the per-file data `F`, which
/// [`data_mut`](Self::data_mut) writes, cannot be shortened.
///
/// ```compile_fail
/// use drmm::device::File;
/// fn shorten<'a>(f: File<(), &'static str>) -> File<(), &'a str> {
///     f // error: `File` is invariant in `F`
/// }
/// ```
#[doc(alias = "drm_file")]
pub struct File<T: Send + Sync + 'static, F> {
    // Declared first: dropped before the device reference.
    data: F,
    dev: Device<T>,
    /// Invariance in `F` (see "Variance"); `fn` pointers are `Send`, `Sync` and `Unpin`.
    _invariant: PhantomData<fn(F) -> F>,
}

impl<T: Send + Sync + 'static> Device<T> {
    /// Opens the device (`drm_open`) with per-file data `data`. The file holds a reference to
    /// the device; with the `registry` feature its holder is recorded as the caller's location.
    ///
    /// # Errors
    ///
    /// [`Error::Unplugged`] after [`unplug`](LogicalDevice::unplug) has begun;
    /// [`Error::NotRegistered`] if the device is not registered (never, or unregistered).
    /// `data` is dropped then.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// assert_eq!(dev.open(()).unwrap_err(), drmm::Error::NotRegistered);
    /// dev.register()?;
    /// let file = dev.open(String::from("client 1"))?; // holds a reference
    /// assert_eq!(file.data(), "client 1");
    /// dev.unplug();
    /// assert!(file.enter().is_none(), "hardware paths see the gate closed");
    /// assert_eq!(dev.open(()).unwrap_err(), drmm::Error::Unplugged);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "drm_open")]
    #[track_caller]
    pub fn open<F>(&self, data: F) -> Result<File<T, F>> {
        self.open_with(|_| Ok(data))
    }

    /// Opens the device with per-file data built by `init` (the driver's `open` callback),
    /// which runs inside the gate and may fail.
    ///
    /// # Errors
    ///
    /// As for [`open`](Self::open), or `init`'s error.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(5u32);
    /// dev.register()?;
    /// let file = dev.open_with(|dev| Ok(*dev.data() * 2))?;
    /// assert_eq!(*file.data(), 10);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[track_caller]
    pub fn open_with<F>(
        &self,
        init: impl FnOnce(&LogicalDevice<T>) -> Result<F>,
    ) -> Result<File<T, F>> {
        let location = Location::caller();
        let file = {
            // Inside the gate: an unplug either happens before (and this fails) or waits for
            // this open to complete.
            let Some(_inside) = self.gate.enter() else {
                trace::refused(&self.list, Refusal::Open, None, location);
                return Err(Error::Unplugged);
            };
            if !self.is_registered() {
                return Err(Error::NotRegistered);
            }
            let data = init(self)?;
            self.open_files.fetch_add(1, Ordering::AcqRel);
            File {
                data,
                dev: self.get(super::Taken::Open),
                _invariant: PhantomData,
            }
        };
        // The event after leaving the gate: a subscriber may unplug the device (which waits
        // for every thread inside the gate, this one included).
        trace::lifecycle(&self.list, Op::Open);
        Ok(file)
    }
}

impl<T: Send + Sync + 'static, F> File<T, F> {
    /// The device (a strong reference held by the file).
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::with_name("card0", ());
    /// dev.register()?;
    /// let file = dev.open(())?;
    /// drop(dev);
    /// assert_eq!(file.device().name(), "card0"); // the file keeps the device alive
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn device(&self) -> &Device<T> {
        &self.dev
    }

    /// The per-file data.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// dev.register()?;
    /// let file = dev.open(String::from("client 1"))?;
    /// assert_eq!(file.data(), "client 1");
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn data(&self) -> &F {
        &self.data
    }

    /// The per-file data, mutably.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// dev.register()?;
    /// let mut file = dev.open(0u32)?;
    /// *file.data_mut() += 1;
    /// assert_eq!(*file.data(), 1);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn data_mut(&mut self) -> &mut F {
        &mut self.data
    }

    /// Enters the device's gate (for code that touches hardware): `None` once unplugged.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// dev.register()?;
    /// let file = dev.open(())?;
    /// if let Some(_inside) = file.enter() {
    ///     // an ioctl that touches hardware; unplug() waits for it
    /// }
    /// dev.unplug();
    /// assert!(file.enter().is_none());
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[track_caller]
    pub fn enter(&self) -> Option<GateGuard<'_>> {
        self.dev.enter()
    }

    /// [`enter`](Self::enter) as a `Result`: see
    /// [`LogicalDevice::enter_or_unplugged`](crate::LogicalDevice::enter_or_unplugged).
    ///
    /// # Errors
    ///
    /// [`Error::Unplugged`] once the device is unplugged.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// dev.register()?;
    /// let file = dev.open(())?;
    /// drop(file.enter_or_unplugged()?);
    /// dev.unplug();
    /// assert!(matches!(file.enter_or_unplugged(), Err(drmm::Error::Unplugged)));
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[track_caller]
    pub fn enter_or_unplugged(&self) -> crate::Result<GateGuard<'_>> {
        self.dev.enter_or_unplugged()
    }

    /// Closes the file (`drm_release`): the same as dropping it.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// dev.register()?;
    /// let file = dev.open(())?;
    /// assert_eq!(dev.open_files(), 1);
    /// file.close();
    /// assert_eq!(dev.open_files(), 0);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "drm_release")]
    pub fn close(self) {
        drop(self);
    }
}

impl<T: Send + Sync + 'static, F> Drop for File<T, F> {
    fn drop(&mut self) {
        self.dev.open_files.fetch_sub(1, Ordering::AcqRel);
        // The subscriber is user code: its panic must not escape a drop during unwinding.
        let event = trace::caught(|| trace::lifecycle(&self.dev.list, Op::Close));
        crate::res::list::PanicSink::resume(event, self.dev.name());
    }
}

impl<T: Send + Sync + 'static, F> Deref for File<T, F> {
    type Target = F;

    fn deref(&self) -> &F {
        &self.data
    }
}

impl<T: Send + Sync + 'static, F: fmt::Debug> fmt::Debug for File<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("device", &self.dev.name())
            .field("data", &self.data)
            .finish()
    }
}
