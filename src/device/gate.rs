//! Registration and the unplug gate: `drm_dev_register`, `drm_dev_unregister`,
//! `drm_dev_unplug`, `drm_dev_enter` / `drm_dev_exit`.

use std::panic::Location;

use super::LogicalDevice;
use crate::error::{Error, Result};
use crate::revoke::GateGuard;
use crate::sync::Ordering;
use crate::trace::{self, Op, Refusal};

impl<T> LogicalDevice<T> {
    /// Makes the device visible (`drm_dev_register`): from now on it can be
    /// [`open`](super::Device::open)ed, until [`unregister`](Self::unregister) or
    /// [`unplug`](Self::unplug).
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyRegistered`] (the kernel says "never call this twice");
    /// [`Error::Unplugged`] once the device is unplugged; [`Error::OutOfMemory`] if the unplug
    /// gate's per-thread counters cannot be allocated.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// dev.register()?;
    /// assert_eq!(dev.register(), Err(drmm::Error::AlreadyRegistered));
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "drm_dev_register")]
    pub fn register(&self) -> Result<()> {
        // Other threads can reach the device from now on: give the gate its per-thread
        // counters here, where running out of memory can be reported.
        self.gate.prepare()?;
        // Inside the gate, so that an unplug that starts meanwhile waits for this call and
        // its unregistration comes after it.
        let inside = self.gate.enter().ok_or(Error::Unplugged)?;
        if self.registered.swap(true, Ordering::AcqRel) {
            return Err(Error::AlreadyRegistered);
        }
        // The event after leaving the gate: a subscriber may unplug the device (which waits
        // for every thread inside the gate, this one included).
        drop(inside);
        trace::lifecycle(&self.list, Op::Register);
        Ok(())
    }

    /// Hides the device (`drm_dev_unregister`): new opens fail with
    /// [`Error::NotRegistered`]. Unlike [`unplug`](Self::unplug) it does not close the gate:
    /// files already open keep entering it (the kernel's pitfall: ioctls of existing files
    /// still reach the driver). Returns whether the device was registered.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// dev.register()?;
    /// let file = dev.open(())?;
    /// assert!(dev.unregister());
    /// assert_eq!(dev.open(()).unwrap_err(), drmm::Error::NotRegistered);
    /// assert!(file.enter().is_some(), "open files still reach the driver: the gate stays open");
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "drm_dev_unregister")]
    pub fn unregister(&self) -> bool {
        let was = self.registered.swap(false, Ordering::AcqRel);
        if was {
            trace::lifecycle(&self.list, Op::Unregister);
        }
        was
    }

    /// Unplugs the device (`drm_dev_unplug`): closes its gate, so that [`enter`](Self::enter)
    /// and opens fail from now on, waits until every thread inside the gate has left, then
    /// unregisters it. Returns whether this call unplugged it (later calls only wait).
    ///
    /// After this returns no section entered before is still running. The wait is for this
    /// device's sections only: each device has its own gate (the kernel uses one SRCU domain
    /// for all devices).
    ///
    /// # Panics
    ///
    /// If the calling thread is inside this device's gate (it would wait for itself forever):
    /// always detected in debug builds, usually in release builds, which otherwise deadlock
    /// (see [`Gate::close_and_wait`](crate::revoke::Gate::close_and_wait)).
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// dev.register()?;
    /// assert!(dev.enter().is_some());
    /// assert!(dev.unplug());
    /// assert!(dev.enter().is_none());
    /// assert!(dev.is_unplugged() && !dev.is_registered());
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "drm_dev_unplug")]
    pub fn unplug(&self) -> bool {
        let closed_now = self.gate.close_and_wait();
        self.unregister();
        if closed_now {
            trace::lifecycle(&self.list, Op::Unplug);
        }
        closed_now
    }

    /// Whether the device has been unplugged (`drm_dev_is_unplugged`). Racy by nature: use
    /// [`enter`](Self::enter) to keep the device from being unplugged while you work.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// assert!(!dev.is_unplugged());
    /// dev.unplug();
    /// assert!(dev.is_unplugged());
    /// ```
    #[doc(alias = "drm_dev_is_unplugged")]
    pub fn is_unplugged(&self) -> bool {
        self.gate.is_closed()
    }

    /// Whether the device is registered (a snapshot).
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// assert!(!dev.is_registered());
    /// dev.register()?;
    /// assert!(dev.is_registered());
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::Acquire)
    }

    /// Enters the unplug gate (`drm_dev_enter`): a guard while the device is not unplugged,
    /// `None` after. [`unplug`](Self::unplug) waits until the guard is dropped
    /// (`drm_dev_exit`). Guards nest. Cheap: a store and a full fence on entry and a plain
    /// store on exit, on a counter private to the thread's shard, no shared cache line
    /// between threads (the kernel's SRCU read side).
    ///
    /// Code that touches hardware enters first; code that only touches drmm state does not
    /// need to.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// if let Some(_inside) = dev.enter() {
    ///     // talk to the hardware
    /// }
    /// ```
    #[doc(alias = "drm_dev_enter")]
    #[doc(alias = "drm_dev_exit")]
    #[inline]
    #[track_caller]
    pub fn enter(&self) -> Option<GateGuard<'_>> {
        let guard = self.gate.enter();
        if guard.is_none() {
            trace::refused(&self.list, Refusal::Gate, None, Location::caller());
        }
        guard
    }

    /// [`enter`](Self::enter) as a `Result`, for `?` in ioctl-like code: the guard, or
    /// [`Error::Unplugged`] (the kernel's `-ENODEV` after a failed
    /// `drm_dev_enter`). Named apart from `enter` because `enter` stays the cheap `Option`
    /// form that hot paths test with `if let`.
    ///
    /// # Errors
    ///
    /// [`Error::Unplugged`] once [`unplug`](Self::unplug) began.
    ///
    /// # Examples
    ///
    /// ```
    /// fn ioctl(dev: &drmm::LogicalDevice<()>) -> drmm::Result<u32> {
    ///     let _inside = dev.enter_or_unplugged()?;
    ///     Ok(42) // talk to the hardware
    /// }
    /// let dev = drmm::Device::new(());
    /// assert_eq!(ioctl(&dev), Ok(42));
    /// dev.unplug();
    /// assert_eq!(ioctl(&dev), Err(drmm::Error::Unplugged));
    /// ```
    #[doc(alias = "drm_dev_enter")]
    #[inline]
    #[track_caller]
    pub fn enter_or_unplugged(&self) -> Result<GateGuard<'_>> {
        self.enter().ok_or(Error::Unplugged)
    }

    /// Number of open files (a snapshot).
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// dev.register()?;
    /// let (a, b) = (dev.open(())?, dev.open(())?);
    /// assert_eq!(dev.open_files(), 2);
    /// drop((a, b));
    /// assert_eq!(dev.open_files(), 0);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn open_files(&self) -> usize {
        self.open_files.load(Ordering::Acquire)
    }
}
