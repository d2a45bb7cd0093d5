//! Bus devices, drivers and bindings: the driver core (`struct device`, `probe`/`remove`,
//! devres) for userspace.
//!
//! A [`Bus`] holds [`BusDevice`]s (physical devices, reference counted). A [`Driver`] is bound
//! to a device with [`BusDevice::bind`], which runs its [`probe`](Driver::probe); the binding
//! lasts until [`BusDevice::unbind`], or until the device is removed from its bus
//! ([`BusDevice::remove`], hot-unplug). While it lasts the binding owns:
//!
//! * the driver's data, returned by `probe`;
//! * the **devres** list: actions, allocations and groups registered through the devres API of
//!   [`Bound`], released when the binding ends;
//! * the [`Devres<T>`] values registered on it, revoked when it ends.
//!
//! Drivers registered on the bus ([`Bus::register_driver`]) are bound automatically to the
//! devices they [`match`](Driver::matches); a probe may answer "not yet"
//! ([`Error::ProbeDefer`]) and is retried later. See [`DriverRegistration`].
//!
//! # Order at unbind
//!
//! 1. the driver's [`remove`](Driver::remove) runs (everything still works);
//! 2. every [`Devres<T>`] still registered on the binding is revoked, after a single grace
//!    period for all of them, newest first: the binding is now "unbound" for anyone who reaches
//!    hardware through a revocable;
//! 3. the driver data is dropped (the 2026 Rust-for-Linux order: before devres);
//! 4. the devres list is released, newest first (including entries added meanwhile).
//!
//! A probe that fails (or panics) releases whatever it registered, in the same way (steps 2
//! and 4). Removing a device unbinds it first, then releases whatever devres it still has: a
//! device that never had a driver, used through [`BusDevice::with_driverless`] (the kernel's
//! root or KUnit devices), releases its devres at removal (the leak fixed by Linux v6.6).
//! The last reference to a removed device releases anything left on the list once more.
//!
//! # Proof of binding
//!
//! Code that needs the binding (the devres API, reads of devres allocations, the driver data)
//! receives a [`Bound`]: inside `probe` and `remove`, or inside
//! [`with_bound`](BusDevice::with_bound). A `Bound` is the holder of the device's exclusive
//! scope (the kernel's `device_lock`): only one exists per device at a time, other threads
//! asking for one wait, and unbinding waits for it. It cannot outlive the closure or callback
//! that received it (it is only ever lent as `&mut Bound<'_>`), so nothing read through it can
//! be used after the unbind that frees it.
//!
//! Entering the scope again on a thread that already holds it is [`Error::Reentrant`]
//! (the kernel would deadlock on `device_lock`). A thread that waits for another while holding
//! a device's scope, when that other thread waits for the scope, deadlocks as in the kernel:
//! for example a devres action (run at unbind, inside the scope) that unplugs a logical device
//! whose gate is held by a thread calling [`with_bound`](BusDevice::with_bound).

mod bound;
mod devres;
mod driver;
mod panics;
mod pending;
#[cfg(feature = "registry")]
mod tracked;

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Weak};

pub use bound::Bound;
pub use devres::Devres;
pub use driver::DriverRegistration;

use crate::error::{Error, Result};
use crate::res::kref::{FinalRelease, Kref};
use crate::res::list::{PanicPayload, PanicSink, panic_message};
use crate::res::scope::ScopedList;
use crate::res::{EntryInfo, ResourceList};
use crate::sync::fallible::try_box_uninit;
use crate::sync::{AtomicBool, Mutex, Ordering, lock};
use crate::trace::{self, Op};
use panics::{first_logging_rest, resume};
use pending::PendingRemoval;

/// A driver: what binds to a [`BusDevice`].
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use drmm::bus::{Bound, Bus, Driver};
///
/// struct Uart;
/// struct UartData { fifo: drmm::Managed<[u8]> }
///
/// impl Driver for Uart {
///     type Data = UartData;
///     fn probe(&self, dev: &mut Bound<'_>) -> drmm::Result<UartData> {
///         let fifo = dev.kzalloc(64)?;
///         let _ = drmm::add_action!(dev, || println!("uart: irq freed"))?;
///         Ok(UartData { fifo })
///     }
///     fn remove(&self, dev: &mut Bound<'_>, data: &UartData) {
///         assert_eq!(data.fifo.get(dev).unwrap().len(), 64);
///     }
/// }
///
/// let bus = Bus::new("platform");
/// let dev = bus.add_device("serial0");
/// dev.bind(Arc::new(Uart))?;
/// assert!(dev.is_bound());
/// dev.unbind()?; // remove, drop UartData, then "uart: irq freed", then the fifo
/// assert_eq!(dev.resource_count(), 0);
/// # Ok::<(), drmm::Error>(())
/// ```
pub trait Driver: Send + Sync + 'static {
    /// The binding's driver data, returned by [`probe`](Self::probe), dropped at unbind after
    /// [`remove`](Self::remove) and before the devres list is released.
    type Data: Send + Sync + 'static;

    /// The driver's name, for traces.
    ///
    /// # Examples
    ///
    /// ```
    /// use drmm::{Bound, Driver};
    ///
    /// struct Uart;
    /// impl Driver for Uart {
    ///     type Data = ();
    ///     fn name(&self) -> &str {
    ///         "uart" // instead of the type's path, in traces
    ///     }
    ///     fn probe(&self, _dev: &mut Bound<'_>) -> drmm::Result<()> {
    ///         Ok(())
    ///     }
    /// }
    /// assert_eq!(Uart.name(), "uart");
    /// ```
    fn name(&self) -> &str {
        std::any::type_name::<Self>()
    }

    /// Binds the driver to `dev`. Everything registered on `dev` before a failure is released,
    /// newest first, when this returns an error (or panics).
    ///
    /// # Errors
    ///
    /// Whatever the driver decides; [`Error::probe_failed`] says why in words.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use drmm::{Bound, Driver, Error};
    ///
    /// struct Picky;
    /// impl Driver for Picky {
    ///     type Data = ();
    ///     fn probe(&self, dev: &mut Bound<'_>) -> drmm::Result<()> {
    ///         let _buf = dev.kzalloc(64)?; // released again because probe fails below
    ///         Err(Error::probe_failed("wrong revision"))
    ///     }
    /// }
    ///
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// assert!(matches!(dev.bind(Arc::new(Picky)), Err(Error::ProbeFailed { .. })));
    /// assert!(!dev.is_bound());
    /// assert_eq!(dev.resource_count(), 0);
    /// ```
    fn probe(&self, dev: &mut Bound<'_>) -> Result<Self::Data>;

    /// The names of the devices this driver handles, for [`matches`](Self::matches): a device
    /// matches an entry when its name is the entry, or the entry followed by `.` and an
    /// instance (`uart` matches `uart` and `uart.0`). Empty (the default): the driver's
    /// [`name`](Self::name) is the only entry, as a platform bus matches driver names.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use drmm::{Bound, Bus, Driver};
    ///
    /// struct Uart;
    /// impl Driver for Uart {
    ///     type Data = ();
    ///     fn id_table(&self) -> &[&str] {
    ///         &["uart", "ns16550"]
    ///     }
    ///     fn probe(&self, _dev: &mut Bound<'_>) -> drmm::Result<()> {
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let bus = Bus::new("platform");
    /// let _reg = bus.register_driver(Arc::new(Uart));
    /// assert!(bus.add_device("ns16550.1").is_bound());
    /// assert!(!bus.add_device("uart2").is_bound()); // neither `uart` nor `uart.<instance>`
    /// ```
    #[doc(alias = "of_match_table")]
    fn id_table(&self) -> &[&str] {
        &[]
    }

    /// Whether this driver handles `dev` (the bus's `match`), asked when the driver is
    /// registered and when a device is added; by default, by [`id_table`](Self::id_table).
    /// User code: called with no lock of the bus held, and never for a bound device.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use drmm::{Bound, Bus, BusDevice, Driver};
    ///
    /// struct AnyGpu;
    /// impl Driver for AnyGpu {
    ///     type Data = ();
    ///     fn matches(&self, dev: &BusDevice) -> bool {
    ///         dev.name().starts_with("0000:0") // the PCI slots of this board
    ///     }
    ///     fn probe(&self, _dev: &mut Bound<'_>) -> drmm::Result<()> {
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let bus = Bus::new("pci");
    /// let gpu = bus.add_device("0000:01:00.0");
    /// let _reg = bus.register_driver(Arc::new(AnyGpu)); // probes the devices already there
    /// assert!(gpu.is_bound());
    /// ```
    #[doc(alias = "bus_match")]
    #[doc(alias = "match")]
    fn matches(&self, dev: &BusDevice) -> bool {
        driver::id_matches(self.id_table(), self.name(), dev.name())
    }

    /// Unbinds the driver: the first step of an unbind, while everything of the binding is
    /// still there. [`Bound::driver_data`] returns `None` here: the data is `data`.
    ///
    /// Not to be confused with [`BusDevice::remove`]: that one takes the *device* off its bus
    /// (the kernel's `device_del`); this one is the *driver's* callback (the kernel's
    /// `.remove`), which every unbind calls, whether it comes from
    /// [`unbind`](BusDevice::unbind), from `BusDevice::remove` or from the bus going away. Both
    /// keep the kernel's word, so that kernel code reads across.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use drmm::{Bound, Device, Driver};
    ///
    /// struct Gpu;
    /// impl Driver for Gpu {
    ///     type Data = Device<()>;
    ///     fn probe(&self, dev: &mut Bound<'_>) -> drmm::Result<Device<()>> {
    ///         let card = Device::new_on(dev, "card0", ())?;
    ///         card.register()?;
    ///         Ok(card)
    ///     }
    ///     fn remove(&self, _dev: &mut Bound<'_>, card: &Device<()>) {
    ///         card.unplug(); // first step of the unbind: close the gate, wait for those inside
    ///     }
    /// }
    ///
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.bind(Arc::new(Gpu))?;
    /// let card = dev.with_bound(|b| b.driver_data::<Device<()>>().unwrap().clone())?;
    /// dev.unbind()?;
    /// assert!(card.is_unplugged());
    /// # Ok::<(), drmm::Error>(())
    /// ```
    fn remove(&self, dev: &mut Bound<'_>, data: &Self::Data) {
        let _ = (dev, data);
    }
}

/// A driver with its data type erased.
trait DynDriver: Send + Sync {
    fn remove(&self, dev: &mut Bound<'_>, data: &(dyn Any + Send + Sync));
}

impl<D: Driver> DynDriver for D {
    fn remove(&self, dev: &mut Bound<'_>, data: &(dyn Any + Send + Sync)) {
        if let Some(data) = data.downcast_ref::<D::Data>() {
            Driver::remove(self, dev, data);
        }
    }
}

/// What the device's scope slot holds while a driver is bound.
struct Binding {
    driver: Arc<dyn DynDriver>,
    data: Box<dyn Any + Send + Sync>,
}

/// A bus: the set of devices present on it.
///
/// Dropping the bus removes every device still on it, newest first, as if each were
/// hot-unplugged.
///
/// # Examples
///
/// ```
/// let bus = drmm::bus::Bus::new("pci");
/// let gpu = bus.add_device("0000:01:00.0");
/// assert_eq!(bus.devices().len(), 1);
/// gpu.remove()?;
/// assert!(bus.devices().is_empty());
/// # Ok::<(), drmm::Error>(())
/// ```
pub struct Bus {
    inner: Arc<BusInner>,
}

struct BusInner {
    name: Cow<'static, str>,
    devices: Mutex<Vec<BusDevice>>,
    drivers: driver::Drivers,
}

impl Bus {
    /// An empty bus named `name`.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// assert_eq!(bus.find("gpu.0").map(|d| d.name().to_string()), Some("gpu.0".into()));
    /// assert!(!dev.is_bound());
    /// ```
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Bus {
            inner: Arc::new(BusInner {
                name: name.into(),
                devices: Mutex::new(Vec::new()),
                drivers: driver::Drivers::new(),
            }),
        }
    }

    /// The bus's name.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// assert_eq!(bus.name(), "platform");
    /// ```
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Adds a device named `name` (`device_add`): present, with no driver bound.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// assert!(dev.is_present() && !dev.is_bound());
    /// ```
    #[doc(alias = "device_add")]
    #[doc(alias = "device_register")]
    #[doc(alias = "bus_probe_device")]
    #[cfg_attr(feature = "registry", track_caller)]
    pub fn add_device(&self, name: impl Into<Cow<'static, str>>) -> BusDevice {
        let dev = BusDevice {
            inner: Kref::new(Core {
                devres: ScopedList::new(ResourceList::new(
                    Some(name.into()),
                    trace::BUS_LIST_PREFIX,
                )),
                bus: Arc::downgrade(&self.inner),
                present: AtomicBool::new(true),
                bound: AtomicBool::new(false),
                remove_on_exit: AtomicBool::new(false),
                revocables: devres::Registry::default(),
            }),
        };
        #[cfg(feature = "registry")]
        tracked::register(&dev);
        lock(&self.inner.devices).push(dev.clone());
        // A subscriber's panic goes on (the device stays on its bus), except while this thread
        // already unwinds, where it would abort: only logged then.
        if trace::debug_possible() {
            let list = dev.core().devres.list();
            let event = trace::caught(|| trace::lifecycle(list, Op::DeviceAdd));
            PanicSink::resume(event, dev.name());
        }
        driver::added(&dev);
        dev
    }

    /// The devices present on the bus, oldest first.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let _a = bus.add_device("a");
    /// let b = bus.add_device("b");
    /// b.remove()?;
    /// let names: Vec<String> = bus.devices().iter().map(|d| d.name().to_string()).collect();
    /// assert_eq!(names, ["a"]);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn devices(&self) -> Vec<BusDevice> {
        lock(&self.inner.devices).clone()
    }

    /// The present device named `name`, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// assert!(bus.find("gpu.0").is_some_and(|d| drmm::BusDevice::ptr_eq(&d, &dev)));
    /// assert!(bus.find("gpu.1").is_none());
    /// ```
    pub fn find(&self, name: &str) -> Option<BusDevice> {
        lock(&self.inner.devices)
            .iter()
            .find(|d| d.name() == name)
            .cloned()
    }
}

impl Drop for Bus {
    /// Removes every device, newest first. A removal that panics does not stop the others:
    /// the first panic is resumed once all are removed (only logged if this thread is already
    /// unwinding). A device whose scope this thread holds (the bus dropped inside
    /// [`with_bound`](BusDevice::with_bound), say) is removed as soon as that scope is left.
    fn drop(&mut self) {
        let mut panics = PanicSink::default();
        loop {
            let last = lock(&self.inner.devices).last().cloned();
            let Some(dev) = last else { break };
            // The last reference may go here too (its final release is user code as well).
            let removed = panic::catch_unwind(AssertUnwindSafe(|| {
                match dev.remove() {
                    Ok(()) | Err(Error::Removed) => {}
                    Err(_) => {
                        // This thread holds the device's scope: removed when it is left.
                        dev.core().remove_on_exit.store(true, Ordering::Release);
                    }
                }
                // Off the list in every case, so that the loop ends (`remove` takes it off
                // even when it panics); dropped after unlocking.
                let off = {
                    let mut devices = lock(&self.inner.devices);
                    let at = devices.iter().position(|d| BusDevice::ptr_eq(d, &dev));
                    at.map(|i| devices.remove(i))
                };
                drop(off);
                drop(dev);
            }));
            if let Err(p) = removed {
                panics.keep(p);
            }
        }
        PanicSink::resume(panics.into_first(), self.name());
    }
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("name", &self.name())
            .field("devices", &lock(&self.inner.devices).len())
            .finish()
    }
}

/// The shared part of a bus device.
struct Core {
    devres: ScopedList<()>,
    bus: Weak<BusInner>,
    /// On its bus (cleared by `remove`). Written under the scope.
    present: AtomicBool,
    /// A driver is bound. Written under the scope; the slot is the authority.
    bound: AtomicBool,
    /// Its bus was dropped while this thread held its scope: the device is removed when the
    /// scope is left (`PendingRemoval`).
    remove_on_exit: AtomicBool,
    revocables: devres::Registry,
}

/// A reference to a physical device on a [`Bus`] (`struct device` + `get_device`/`put_device`).
///
/// Cloning takes a reference; the device's memory lives until the last one is dropped. Its
/// *binding* (driver, driver data, devres) is a separate, shorter lifetime: from
/// [`bind`](Self::bind) to [`unbind`](Self::unbind) or [`remove`](Self::remove).
///
/// # Examples
///
/// A driver-less device (like the kernel's root or KUnit devices) still releases its devres
/// when it is removed from its bus:
///
/// ```
/// use std::sync::{Arc, atomic::{AtomicBool, Ordering}};
///
/// let bus = drmm::bus::Bus::new("virtual");
/// let dev = bus.add_device("root0");
/// let released = Arc::new(AtomicBool::new(false));
/// let r = released.clone();
/// dev.with_driverless(|b| b.add_action(move || r.store(true, Ordering::SeqCst)))??;
/// dev.remove()?;
/// assert!(released.load(Ordering::SeqCst));
/// # Ok::<(), drmm::Error>(())
/// ```
#[doc(alias = "device")]
pub struct BusDevice {
    inner: Kref<Core>,
}

impl BusDevice {
    fn core(&self) -> &Core {
        &self.inner
    }

    /// The device's name (also its devres list's name in traces).
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// assert_eq!(bus.add_device("gpu.0").name(), "gpu.0");
    /// ```
    pub fn name(&self) -> &str {
        self.core().devres.list().owner()
    }

    /// The identity of the device's devres list (what devres handles record).
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// let h = dev.with_driverless(|b| b.kzalloc(8))??;
    /// assert_eq!(h.list_id(), dev.list_id());
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn list_id(&self) -> u64 {
        self.core().devres.list().id()
    }

    /// Whether a driver is bound (a snapshot).
    ///
    /// # Examples
    ///
    /// ```
    /// # use drmm::{Bound, Driver};
    /// # struct Nop;
    /// # impl Driver for Nop { type Data = (); fn probe(&self, _: &mut Bound<'_>) -> drmm::Result<()> { Ok(()) } }
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// assert!(!dev.is_bound());
    /// dev.bind(std::sync::Arc::new(Nop))?;
    /// assert!(dev.is_bound());
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn is_bound(&self) -> bool {
        self.core().bound.load(Ordering::Acquire)
    }

    /// Whether the device is still on its bus (not [`remove`](Self::remove)d).
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// dev.remove()?; // hot-unplug
    /// assert!(!dev.is_present());
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn is_present(&self) -> bool {
        self.core().present.load(Ordering::Acquire)
    }

    /// Number of live devres entries.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// let _buf = dev.with_driverless(|b| b.kzalloc(8))??;
    /// assert_eq!(dev.resource_count(), 1);
    /// dev.remove()?; // releases the devres list
    /// assert_eq!(dev.resource_count(), 0);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn resource_count(&self) -> usize {
        self.core().devres.list().len()
    }

    /// The live devres entries, newest first.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0");
    /// let _buf = dev.with_driverless(|b| b.kstrdup("fw"))??;
    /// let snap = dev.snapshot();
    /// assert_eq!((snap.len(), snap[0].name()), (1, "devm_kstrdup"));
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn snapshot(&self) -> Vec<EntryInfo> {
        self.core().devres.list().snapshot()
    }

    /// Number of references (a snapshot).
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("gpu.0"); // the bus holds one reference
    /// let other = dev.clone(); // get_device
    /// assert_eq!(drmm::BusDevice::ref_count(&dev), 3);
    /// drop(other);
    /// assert_eq!(drmm::BusDevice::ref_count(&dev), 2);
    /// ```
    pub fn ref_count(this: &Self) -> usize {
        this.inner.count()
    }

    /// Whether two references point to the same device.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let a = bus.add_device("gpu.0");
    /// let b = bus.add_device("gpu.0");
    /// assert!(drmm::BusDevice::ptr_eq(&a, &a.clone()));
    /// assert!(!drmm::BusDevice::ptr_eq(&a, &b)); // same name, another device
    /// ```
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Kref::ptr_eq(&a.inner, &b.inner)
    }

    /// Binds `driver`: runs its [`probe`](Driver::probe) and, if it succeeds, keeps its data
    /// until the binding ends (`device_bind_driver` / `really_probe`).
    ///
    /// If probe fails or panics, whatever it registered is released (revocables revoked, then
    /// the devres list newest first) and the error is returned (or the panic resumed).
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyBound`]; [`Error::Removed`] if the device left its bus;
    /// [`Error::Reentrant`] if called from inside this device's scope; otherwise probe's error.
    ///
    /// # Panics
    ///
    /// Resumes a panic of probe, or of a release action run because probe failed. If this
    /// thread is already unwinding, such a panic is only logged and the error is
    /// [`Error::ProbeFailed`].
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
    /// assert!(dev.is_bound());
    /// assert_eq!(dev.bind(std::sync::Arc::new(Nop)).unwrap_err(), drmm::Error::AlreadyBound);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "really_probe")]
    #[doc(alias = "device_driver_attach")]
    pub fn bind<D: Driver>(&self, driver: Arc<D>) -> Result<()> {
        self.probe_with(driver, None)
    }

    /// [`bind`](Self::bind); `retry` is what probes again after a deferral (by default, the
    /// same driver).
    fn probe_with<D: Driver>(
        &self,
        driver: Arc<D>,
        retry: Option<Arc<dyn driver::Retry>>,
    ) -> Result<()> {
        // Declared first, so dropped after the scope is left.
        let _pending = PendingRemoval(self);
        let scope = self.core().devres.enter()?;
        if !self.is_present() {
            return Err(Error::Removed);
        }
        if scope.slot().is_some() {
            return Err(Error::AlreadyBound);
        }
        // The binding's boxes are allocated before probe: once probe has succeeded, nothing
        // may fail (there is no undoing a probe but a full unbind).
        let binding = try_box_uninit::<Binding>()?;
        let data_box = try_box_uninit::<D::Data>()?;
        let mut bound = Bound::new(self, scope);
        let in_probe = driver::InProbe::enter(self);
        let probed = panic::catch_unwind(AssertUnwindSafe(|| driver.probe(&mut bound)));
        let started = in_probe.leave();
        match probed {
            Ok(Ok(data)) => {
                let data = Box::write(data_box, data);
                let binding = Box::write(binding, Binding { driver, data });
                *bound.scope_mut().slot_mut() = Some(binding);
                self.core().bound.store(true, Ordering::Release);
                // Once bound: a subscriber that panics here leaves a bound device.
                let list = self.core().devres.list();
                trace::lifecycle_detail(list, Op::Probe, format_args!("ok"));
                trace::lifecycle(list, Op::Bind);
                drop(bound);
                driver::probed(self);
                resume(self.name(), []);
                Ok(())
            }
            Ok(Err(e)) => {
                let event = trace::caught(|| {
                    let list = self.core().devres.list();
                    match &e {
                        Error::ProbeDefer { reason } => trace::lifecycle_detail(
                            list,
                            Op::Probe,
                            format_args!("deferred: {reason}"),
                        ),
                        e => trace::lifecycle_detail(list, Op::Probe, format_args!("failed: {e}")),
                    }
                });
                let p = self.release_binding(&mut bound);
                drop(bound);
                if let Error::ProbeDefer { reason } = &e {
                    driver::deferred(self, reason, started, retry, driver);
                }
                resume(self.name(), [event, p]);
                Err(e)
            }
            Err(probe_panic) => {
                let event = trace::caught(|| {
                    let list = self.core().devres.list();
                    let message = panic_message(&*probe_panic);
                    trace::lifecycle_detail(list, Op::Probe, format_args!("failed: {message}"));
                });
                let p = self.release_binding(&mut bound);
                drop(bound);
                resume(self.name(), [Some(probe_panic), event, p]);
                // Only reached while this thread is already unwinding (the panic was logged).
                Err(Error::probe_failed("probe panicked"))
            }
        }
    }

    /// Unbinds the driver (`device_release_driver`): runs its [`remove`](Driver::remove),
    /// revokes the binding's revocables (one grace period), drops the driver data, then
    /// releases the devres list newest first. Waits for the device's scope first, so no
    /// [`Bound`] is alive while the binding is torn down.
    ///
    /// # Errors
    ///
    /// [`Error::NotBound`]; [`Error::Reentrant`] if called from inside this device's scope.
    ///
    /// # Panics
    ///
    /// Resumes the first panic of `remove`, of the data's drop or of a release action, after
    /// the whole unbind has completed (the others are logged).
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
    /// dev.with_bound(|b| drmm::add_action!(b, || println!("devm action runs at unbind")))??;
    /// dev.unbind()?; // prints
    /// assert!(!dev.is_bound());
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "device_release_driver")]
    pub fn unbind(&self) -> Result<()> {
        // Declared first, so dropped after the scope is left.
        let _pending = PendingRemoval(self);
        let scope = self.core().devres.enter()?;
        let mut bound = Bound::new(self, scope);
        let panics = self.unbind_in(&mut bound)?;
        drop(bound);
        resume(self.name(), panics);
        Ok(())
    }

    /// The unbind steps, inside the scope; returns the panics to resume once the scope is left.
    fn unbind_in(&self, bound: &mut Bound<'_>) -> Result<[Option<PanicPayload>; 3]> {
        let Some(slot) = bound.scope_mut().slot_mut().take() else {
            return Err(Error::NotBound);
        };
        let binding = match slot.downcast::<Binding>() {
            Ok(b) => b,
            Err(_) => unreachable!("the slot only ever holds a Binding"),
        };
        let driver = binding.driver.clone();
        let removed = panic::catch_unwind(AssertUnwindSafe(|| {
            driver.remove(bound, &*binding.data);
        }))
        .err();
        self.core().bound.store(false, Ordering::Release);
        let revoked = self.revoke_all();
        let dropped = panic::catch_unwind(AssertUnwindSafe(move || drop(binding))).err();
        let released = bound.scope_mut().release_all(&());
        let list = self.core().devres.list();
        let event = trace::caught(|| trace::lifecycle(list, Op::Unbind));
        let first = first_logging_rest(self.name(), [removed, revoked]);
        let last = first_logging_rest(self.name(), [released, event]);
        Ok([first, dropped, last])
    }

    /// Revokes the binding's revocables ([`Op::Revoke`] when there were any); returns the first
    /// panic of a value's drop or of the event.
    fn revoke_all(&self) -> Option<PanicPayload> {
        let (count, revoked) = self.core().revocables.revoke_all_newest_first();
        if count == 0 {
            return revoked;
        }
        let list = self.core().devres.list();
        let event = trace::caught(|| {
            trace::lifecycle_detail(list, Op::Revoke, format_args!("{count}"));
        });
        first_logging_rest(self.name(), [revoked, event])
    }

    /// Revokes and releases what a binding registered (probe failure, removal).
    fn release_binding(&self, bound: &mut Bound<'_>) -> Option<PanicPayload> {
        let revoked = self.revoke_all();
        let released = bound.scope_mut().release_all(&());
        first_logging_rest(self.name(), [revoked, released])
    }

    /// Removes the device from its bus (`device_del`, hot-unplug): unbinds the driver if one
    /// is bound, then releases whatever devres the device still has (a device that never had
    /// a driver releases its devres here, not at its last reference: the fix of Linux v6.6),
    /// then takes it off the bus. The device can no longer be bound or used.
    ///
    /// This is the *device's* removal (`device_del`); the driver's callback of the same name,
    /// [`Driver::remove`], is its first step when a driver is bound.
    ///
    /// # Errors
    ///
    /// [`Error::Removed`] if already removed; [`Error::Reentrant`] if called from inside this
    /// device's scope.
    ///
    /// # Panics
    ///
    /// As for [`unbind`](Self::unbind).
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let dev = bus.add_device("root");
    /// // A device that never had a driver still releases its devres when it is removed.
    /// dev.with_driverless(|b| drmm::add_action!(b, || println!("released at removal")))??;
    /// dev.remove()?; // prints
    /// assert!(!dev.is_present());
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "device_del")]
    #[doc(alias = "device_unregister")]
    pub fn remove(&self) -> Result<()> {
        // Declared first, so dropped after the scope is left.
        let _pending = PendingRemoval(self);
        let scope = self.core().devres.enter()?;
        if !self.core().present.swap(false, Ordering::AcqRel) {
            return Err(Error::Removed);
        }
        let mut bound = Bound::new(self, scope);
        let [a, b, c] = self.unbind_in(&mut bound).unwrap_or_default();
        let d = self.release_binding(&mut bound);
        let list = self.core().devres.list();
        let e = trace::caught(|| trace::lifecycle(list, Op::DeviceRemove));
        drop(bound);
        if let Some(bus) = self.core().bus.upgrade() {
            // Dropped after unlocking: no user code under the bus's lock.
            let off = {
                let mut devices = lock(&bus.devices);
                let at = devices.iter().position(|d| BusDevice::ptr_eq(d, self));
                at.map(|i| devices.remove(i))
            };
            drop(off);
            driver::forget(&bus, self);
        }
        resume(self.name(), [a, b, c, d, e]);
        Ok(())
    }

    /// Runs `f` with proof of the binding (`device_lock` + "is a driver bound"), waiting while
    /// another thread holds the device's scope.
    ///
    /// # Errors
    ///
    /// [`Error::NotBound`] if no driver is bound (including after an unbind that ran while
    /// this call waited); [`Error::Reentrant`] if this thread already holds the scope.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use drmm::bus::{Bound, Bus, Driver};
    ///
    /// struct Nop;
    /// impl Driver for Nop {
    ///     type Data = u32;
    ///     fn probe(&self, _: &mut Bound<'_>) -> drmm::Result<u32> { Ok(7) }
    /// }
    ///
    /// let bus = Bus::new("platform");
    /// let dev = bus.add_device("nop0");
    /// assert_eq!(dev.with_bound(|_| ()), Err(drmm::Error::NotBound));
    /// dev.bind(Arc::new(Nop))?;
    /// assert_eq!(dev.with_bound(|b| b.driver_data::<u32>().copied())?, Some(7));
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn with_bound<R>(&self, f: impl FnOnce(&mut Bound<'_>) -> R) -> Result<R> {
        // Declared first, so dropped after the scope is left.
        let _pending = PendingRemoval(self);
        let scope = self.core().devres.enter()?;
        if scope.slot().is_none() {
            return Err(Error::NotBound);
        }
        let mut bound = Bound::new(self, scope);
        Ok(f(&mut bound))
    }

    /// Runs `f` with the devres scope of a device that has no driver (the kernel's root and
    /// KUnit devices, which use devm without a driver). What `f` registers is released when
    /// the device is removed from its bus, or by a later probe failure or unbind.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyBound`] if a driver is bound (use [`with_bound`](Self::with_bound));
    /// [`Error::Removed`]; [`Error::Reentrant`].
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("virtual");
    /// let dev = bus.add_device("root");
    /// let n = dev.with_driverless(|b| {
    ///     let _buf = b.kzalloc(16)?;
    ///     Ok::<_, drmm::Error>(b.resource_count())
    /// })??;
    /// assert_eq!(n, 1);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn with_driverless<R>(&self, f: impl FnOnce(&mut Bound<'_>) -> R) -> Result<R> {
        // Declared first, so dropped after the scope is left.
        let _pending = PendingRemoval(self);
        let scope = self.core().devres.enter()?;
        if !self.is_present() {
            return Err(Error::Removed);
        }
        if scope.slot().is_some() {
            return Err(Error::AlreadyBound);
        }
        let mut bound = Bound::new(self, scope);
        Ok(f(&mut bound))
    }
}

impl Clone for BusDevice {
    /// Takes another reference (`get_device`).
    #[doc(alias = "get_device")]
    fn clone(&self) -> Self {
        BusDevice {
            inner: self.inner.clone(),
        }
    }
}

impl fmt::Debug for BusDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusDevice")
            .field("name", &self.name())
            .field("present", &self.is_present())
            .field("bound", &self.is_bound())
            .field("resources", &self.resource_count())
            .finish()
    }
}

impl FinalRelease for Core {
    /// The last reference (`device_release`): releases anything still on the devres list.
    /// A bus holds a reference to each present device, so this only runs after removal, which
    /// already released the list; entries added afterwards (none can be, without a scope) would
    /// be caught here.
    ///
    /// A binding still there (none is: removal unbinds, and the bus removes every device,
    /// even when it is dropped inside a scope) is torn down in the unbind order, but without
    /// the driver's `remove`, which would need a reference to the device.
    fn release_resources(&self) -> Option<PanicPayload> {
        match self.devres.enter() {
            Ok(mut scope) => {
                let binding = scope.slot_mut().take();
                let revoked = binding
                    .as_ref()
                    .and_then(|_| self.revocables.revoke_all_newest_first().1);
                let dropped = panic::catch_unwind(AssertUnwindSafe(move || drop(binding))).err();
                let released = scope.release_all(&());
                first_logging_rest(self.devres.list().owner(), [revoked, dropped, released])
            }
            Err(_) => None,
        }
    }

    fn owner_name(&self) -> &str {
        self.devres.list().owner()
    }
}
