//! Driver registration, bus matching and deferred probe (`driver_register`, the bus's `match`,
//! `device_add` → probe, `-EPROBE_DEFER`).
//!
//! Automatic probes run on the thread that caused them, never under a lock of the library. A
//! probe (or match function) that re-enters the bus (adds a device, registers a driver, binds
//! successfully) does not probe recursively: the work is queued on its thread and run once
//! the outermost bus call's own user code has returned, as the kernel queues its deferred
//! probe work.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Weak};

use super::panics::first_logging_rest;
use super::{Binding, Bound, Bus, BusDevice, BusInner, Driver, PendingRemoval};
use crate::error::{Error, Result};
use crate::res::list::{PanicPayload, PanicSink};
// The std primitives, not `crate::sync`: the loom models check bindings, not this registry,
// and its extra schedule points would only multiply theirs. No lock here is held across an
// operation of loom's.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`; a panic never escapes while one of these is held, so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether a device named `dev` matches an id table (or, when it is empty, the driver's name):
/// the entry itself, or the entry followed by `.` and an instance.
pub(super) fn id_matches(ids: &[&str], driver: &str, dev: &str) -> bool {
    let one = |id: &str| {
        dev.strip_prefix(id)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    };
    if ids.is_empty() {
        one(driver)
    } else {
        ids.iter().any(|id| one(id))
    }
}

/// A bus's registered drivers and deferred devices.
pub(super) struct Drivers {
    state: Mutex<State>,
    /// Successful probes so far: a probe that defers while another one succeeds is retried at
    /// once, or it could wait for a trigger that already went by.
    successes: AtomicU64,
}

struct State {
    /// Oldest first: the first match wins.
    registered: Vec<Arc<dyn Retry>>,
    /// Oldest first.
    waiting: Vec<Waiting>,
}

/// A device whose probe deferred.
struct Waiting {
    dev: BusDevice,
    reason: Box<str>,
    retry: Arc<dyn Retry>,
}

impl Drivers {
    pub(super) fn new() -> Self {
        Drivers {
            state: Mutex::new(State {
                registered: Vec::new(),
                waiting: Vec::new(),
            }),
            successes: AtomicU64::new(0),
        }
    }
}

/// What probes a device again: a registered driver, or the driver of a manual bind.
pub(super) trait Retry: Send + Sync {
    /// The bus's `match` (user code).
    fn matches(&self, dev: &BusDevice) -> bool;
    /// Binds `dev` (user code: probe).
    fn probe(self: Arc<Self>, dev: &BusDevice) -> Result<()>;
    /// Still registered (a manual bind always is).
    fn live(&self) -> bool;
    /// Unregistered: matches and probes nothing any more.
    fn retire(&self) {}
}

/// Whether two retries are the same one (their data pointers: a `dyn` comparison would also
/// compare vtables).
fn same(a: &Arc<dyn Retry>, b: &Arc<dyn Retry>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// A registered driver.
struct Registered<D> {
    driver: Arc<D>,
    live: AtomicBool,
}

impl<D: Driver> Retry for Registered<D> {
    fn matches(&self, dev: &BusDevice) -> bool {
        self.live() && self.driver.matches(dev)
    }

    fn probe(self: Arc<Self>, dev: &BusDevice) -> Result<()> {
        let driver = self.driver.clone();
        let bound = dev.probe_with(driver, Some(self.clone() as Arc<dyn Retry>));
        // Unregistered while probing: its unbind may have passed this device before the
        // binding existed, so the binding is undone here.
        if bound.is_ok() && !self.live() {
            let p = unbind_driver(dev, Arc::as_ptr(&self.driver).cast::<()>().addr());
            PanicSink::resume(p, dev.name());
            return Err(Error::NotBound);
        }
        bound
    }

    fn live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }

    fn retire(&self) {
        self.live.store(false, Ordering::SeqCst);
    }
}

/// The driver of a manual [`bind`](BusDevice::bind) that deferred: retried as it is.
struct Manual<D>(Arc<D>);

impl<D: Driver> Retry for Manual<D> {
    fn matches(&self, _dev: &BusDevice) -> bool {
        true
    }

    fn probe(self: Arc<Self>, dev: &BusDevice) -> Result<()> {
        dev.probe_with(self.0.clone(), Some(self as Arc<dyn Retry>))
    }

    fn live(&self) -> bool {
        true
    }
}

/// Bus work queued on a thread while it runs a probe or a match function.
enum Work {
    /// A device was added: probe the first matching driver.
    Attach(BusDevice),
    /// A driver was registered: probe every unbound device it matches.
    Register(Weak<BusInner>, Arc<dyn Retry>),
    /// A probe succeeded: probe the deferred devices again.
    Retry(Weak<BusInner>),
}

#[derive(Default)]
struct Local {
    /// Probes and match functions of this thread in progress.
    depth: usize,
    queue: VecDeque<Work>,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

/// Marks this thread as running bus user code (a probe, a match function), so that what it
/// triggers is queued instead of run recursively.
struct Depth;

impl Depth {
    fn enter() -> Self {
        let _ = LOCAL.try_with(|l| l.borrow_mut().depth += 1);
        Depth
    }
}

impl Drop for Depth {
    fn drop(&mut self) {
        let _ = LOCAL.try_with(|l| l.borrow_mut().depth -= 1);
    }
}

/// A probe in progress on this thread; remembers how many probes had succeeded on the bus.
pub(super) struct InProbe {
    _depth: Depth,
    successes: u64,
}

impl InProbe {
    pub(super) fn enter(dev: &BusDevice) -> Self {
        let successes = dev
            .core()
            .bus
            .upgrade()
            .map_or(0, |bus| bus.drivers.successes.load(Ordering::SeqCst));
        InProbe {
            _depth: Depth::enter(),
            successes,
        }
    }

    /// The probe has returned: the count of successes when it started.
    pub(super) fn leave(self) -> u64 {
        self.successes
    }
}

fn queue(work: Work) {
    // Fails only while the thread exits: the work is dropped, nothing is probed then.
    let _ = LOCAL.try_with(|l| l.borrow_mut().queue.push_back(work));
}

/// Runs the queued work if this thread is not inside a probe or match function; returns the
/// first panic (the others are logged).
pub(super) fn drain() -> Option<PanicPayload> {
    let ready = LOCAL
        .try_with(|l| {
            let l = l.borrow();
            l.depth == 0 && !l.queue.is_empty()
        })
        .unwrap_or(false);
    if !ready {
        return None;
    }
    let _depth = Depth::enter();
    let mut panics = PanicSink::default();
    while let Some(work) = LOCAL
        .try_with(|l| l.borrow_mut().queue.pop_front())
        .ok()
        .flatten()
    {
        let ran = panic::catch_unwind(AssertUnwindSafe(|| work.run(&mut panics)));
        if let Err(p) = ran {
            panics.keep(p);
        }
    }
    panics.into_first()
}

/// Runs user code inside the panic net; a panic is kept and reads as `None`.
fn caught<R>(panics: &mut PanicSink, f: impl FnOnce() -> R) -> Option<R> {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(p) => {
            panics.keep(p);
            None
        }
    }
}

impl Work {
    fn run(self, panics: &mut PanicSink) {
        match self {
            Work::Attach(dev) => {
                let Some(bus) = dev.core().bus.upgrade() else {
                    return;
                };
                let drivers = lock(&bus.drivers.state).registered.clone();
                for d in drivers {
                    if !dev.is_present() || dev.is_bound() {
                        return;
                    }
                    if caught(panics, || d.matches(&dev)) != Some(true) {
                        continue;
                    }
                    // Bound, waiting, or no longer ours to probe: done. A failure (or a
                    // panic) leaves the device to the next match, as the kernel lets the next
                    // driver try its luck.
                    if let Some(
                        Ok(())
                        | Err(
                            Error::ProbeDefer { .. }
                            | Error::AlreadyBound
                            | Error::NotBound
                            | Error::Removed
                            | Error::Reentrant,
                        ),
                    ) = caught(panics, || d.probe(&dev))
                    {
                        return;
                    }
                }
            }
            Work::Register(bus, d) => {
                let Some(bus) = bus.upgrade() else { return };
                let devices = crate::sync::lock(&bus.devices).clone();
                for dev in devices {
                    if !dev.is_present() || dev.is_bound() || !d.live() {
                        continue;
                    }
                    if caught(panics, || d.matches(&dev)) == Some(true) {
                        let _ = caught(panics, || d.clone().probe(&dev));
                    }
                }
            }
            Work::Retry(bus) => {
                let Some(bus) = bus.upgrade() else { return };
                let waiting = std::mem::take(&mut lock(&bus.drivers.state).waiting);
                for w in waiting {
                    if !w.dev.is_present() || w.dev.is_bound() || !w.retry.live() {
                        continue;
                    }
                    let again = caught(panics, || w.retry.clone().probe(&w.dev));
                    if again == Some(Err(Error::Reentrant)) {
                        // This thread holds the device's scope: it keeps waiting.
                        lock(&bus.drivers.state).waiting.push(w);
                    }
                }
            }
        }
    }
}

/// `device_add`: probes the first matching registered driver (queued while this thread runs
/// a probe).
pub(super) fn added(dev: &BusDevice) {
    let Some(bus) = dev.core().bus.upgrade() else {
        return;
    };
    if lock(&bus.drivers.state).registered.is_empty() {
        return;
    }
    queue(Work::Attach(dev.clone()));
    PanicSink::resume(drain(), dev.name());
}

/// A probe of `dev` succeeded: it waits no more, and every deferred device is probed again.
pub(super) fn probed(dev: &BusDevice) {
    let Some(bus) = dev.core().bus.upgrade() else {
        return;
    };
    bus.drivers.successes.fetch_add(1, Ordering::SeqCst);
    let (was, others) = {
        let mut state = lock(&bus.drivers.state);
        let at = state
            .waiting
            .iter()
            .position(|w| BusDevice::ptr_eq(&w.dev, dev));
        (
            at.map(|i| state.waiting.remove(i)),
            !state.waiting.is_empty(),
        )
    };
    drop(was);
    if others {
        queue(Work::Retry(Arc::downgrade(&bus)));
    }
}

/// A probe of `dev` deferred: it waits (replacing an older reason), and is retried at once if
/// another probe succeeded meanwhile.
pub(super) fn deferred<D: Driver>(
    dev: &BusDevice,
    reason: &str,
    started: u64,
    retry: Option<Arc<dyn Retry>>,
    driver: Arc<D>,
) {
    let Some(bus) = dev.core().bus.upgrade() else {
        return;
    };
    let retry = retry.unwrap_or_else(|| Arc::new(Manual(driver)));
    if !retry.live() {
        // Unregistered meanwhile: nothing would probe it again.
        return;
    }
    let waiting = Waiting {
        dev: dev.clone(),
        reason: reason.into(),
        retry,
    };
    let old = {
        let mut state = lock(&bus.drivers.state);
        let at = state
            .waiting
            .iter()
            .position(|w| BusDevice::ptr_eq(&w.dev, dev));
        let old = at.map(|i| state.waiting.remove(i));
        state.waiting.push(waiting);
        old
    };
    drop(old);
    if !dev.is_present() {
        // Removed meanwhile, after its removal forgot it: forgotten here instead.
        forget(&bus, dev);
        return;
    }
    if bus.drivers.successes.load(Ordering::SeqCst) != started {
        queue(Work::Retry(Arc::downgrade(&bus)));
    }
}

/// `dev` left its bus: it waits no more.
pub(super) fn forget(bus: &BusInner, dev: &BusDevice) {
    let was = {
        let mut state = lock(&bus.drivers.state);
        let at = state
            .waiting
            .iter()
            .position(|w| BusDevice::ptr_eq(&w.dev, dev));
        at.map(|i| state.waiting.remove(i))
    };
    drop(was);
}

/// Unbinds `dev` if the driver at `driver` is bound to it; returns the first panic.
fn unbind_driver(dev: &BusDevice, driver: usize) -> Option<PanicPayload> {
    // Declared first, so dropped after the scope is left.
    let _pending = PendingRemoval(dev);
    // Reentrant: this thread holds the device's scope (unregistering from inside the
    // device's own probe or `with_bound`); the device stays bound.
    let scope = dev.core().devres.enter().ok()?;
    let ours = scope
        .slot()
        .and_then(|s| s.downcast_ref::<Binding>())
        .is_some_and(|b| Arc::as_ptr(&b.driver).cast::<()>().addr() == driver);
    if !ours {
        return None;
    }
    let _depth = Depth::enter();
    let mut bound = Bound::new(dev, scope);
    let panics = dev.unbind_in(&mut bound).unwrap_or_default();
    drop(bound);
    first_logging_rest(dev.name(), panics)
}

/// A driver registered on a bus ([`Bus::register_driver`]); dropping it unregisters the
/// driver (`driver_unregister`), as does [`unregister`](Self::unregister).
///
/// While registered, the driver is probed on every device it
/// [`matches`](Driver::matches): those already on the bus when it is registered, and those
/// added later ([`Bus::add_device`]). A device is probed by the first matching driver, in
/// registration order; when that probe fails (or panics) the next matching driver is tried
/// (the panic is resumed once all were tried), when it
/// defers ([`Error::ProbeDefer`]) the device waits on [`Bus::deferred`] and is probed again
/// whenever another probe on the bus succeeds. Manual [`bind`](BusDevice::bind) still works
/// next to registered drivers.
///
/// Unregistering unbinds every device bound to this driver, newest device first (the
/// driver's `remove`, the revocables, the driver data, the devres list, as for
/// [`unbind`](BusDevice::unbind)), and leaves them unbound, even if another registered driver
/// matches them (the kernel does not re-probe them either). A registration that outlives its
/// bus does nothing when dropped.
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
///     fn name(&self) -> &str {
///         "uart"
///     }
///     fn probe(&self, dev: &mut Bound<'_>) -> drmm::Result<()> {
///         let _fifo = dev.kzalloc(64)?;
///         Ok(())
///     }
/// }
///
/// let bus = Bus::new("platform");
/// let early = bus.add_device("uart.0"); // before its driver: probed at registration
/// let reg = bus.register_driver(Arc::new(Uart));
/// let late = bus.add_device("uart.1"); // after: probed as it is added
/// assert!(early.is_bound() && late.is_bound());
/// reg.unregister(); // unbinds uart.1, then uart.0
/// assert!(!early.is_bound() && !late.is_bound());
/// assert_eq!(early.resource_count(), 0);
/// ```
#[doc(alias = "driver_register")]
#[doc(alias = "driver_unregister")]
#[doc(alias = "device_driver")]
#[must_use = "dropping the registration unregisters the driver at once"]
pub struct DriverRegistration {
    bus: Weak<BusInner>,
    entry: Option<Arc<dyn Retry>>,
    /// The driver's address, to find its bindings.
    driver: usize,
    name: Box<str>,
}

impl DriverRegistration {
    /// Unregisters the driver (`driver_unregister`): it matches no device any more, devices
    /// deferred by it wait no more, and every device bound to it is unbound, newest first.
    ///
    /// # Panics
    ///
    /// Resumes the first panic of an unbind (`remove`, a drop, a release action) once every
    /// device is unbound; the others are logged.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use drmm::{Bound, Bus, Driver};
    ///
    /// struct Nop;
    /// impl Driver for Nop {
    ///     type Data = ();
    ///     fn id_table(&self) -> &[&str] {
    ///         &["nop"]
    ///     }
    ///     fn probe(&self, _dev: &mut Bound<'_>) -> drmm::Result<()> {
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let bus = Bus::new("platform");
    /// let reg = bus.register_driver(Arc::new(Nop));
    /// let dev = bus.add_device("nop.0");
    /// reg.unregister();
    /// assert!(!dev.is_bound());
    /// assert!(!bus.add_device("nop.1").is_bound()); // no driver any more
    /// ```
    #[doc(alias = "driver_unregister")]
    pub fn unregister(mut self) {
        let p = self.unregister_now();
        PanicSink::resume(p, &self.name);
    }

    /// The registered driver's [`name`](Driver::name).
    ///
    /// # Examples
    ///
    /// ```
    /// # use drmm::{Bound, Driver};
    /// # struct Nop;
    /// # impl Driver for Nop { type Data = (); fn probe(&self, _: &mut Bound<'_>) -> drmm::Result<()> { Ok(()) } }
    /// let bus = drmm::Bus::new("platform");
    /// let reg = bus.register_driver(std::sync::Arc::new(Nop));
    /// assert!(reg.driver_name().ends_with("Nop"));
    /// ```
    pub fn driver_name(&self) -> &str {
        &self.name
    }

    fn unregister_now(&mut self) -> Option<PanicPayload> {
        let entry = self.entry.take()?;
        let bus = self.bus.upgrade()?;
        let (registered, waiting) = {
            let mut state = lock(&bus.drivers.state);
            entry.retire();
            let at = state.registered.iter().position(|r| same(r, &entry));
            let registered = at.map(|i| state.registered.remove(i));
            let (gone, kept) = std::mem::take(&mut state.waiting)
                .into_iter()
                .partition::<Vec<_>, _>(|w| same(&w.retry, &entry));
            state.waiting = kept;
            (registered, gone)
        };
        let mut panics = PanicSink::default();
        let _ = caught(&mut panics, move || drop((registered, waiting)));
        let devices = crate::sync::lock(&bus.devices).clone();
        for dev in devices.iter().rev() {
            if let Some(p) = unbind_driver(dev, self.driver) {
                panics.keep(p);
            }
        }
        let _ = caught(&mut panics, move || drop((devices, entry)));
        first_logging_rest(&self.name, [panics.into_first(), drain()])
    }
}

impl Drop for DriverRegistration {
    /// Unregisters the driver, as [`unregister`](Self::unregister) (a panic is only logged
    /// while this thread unwinds).
    fn drop(&mut self) {
        let p = self.unregister_now();
        PanicSink::resume(p, &self.name);
    }
}

impl fmt::Debug for DriverRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriverRegistration")
            .field("driver", &self.name)
            .field("registered", &self.entry.as_ref().is_some_and(|e| e.live()))
            .finish()
    }
}

impl Bus {
    /// Registers `driver` on the bus (`driver_register`) and probes it on every unbound device
    /// it [`matches`](Driver::matches), oldest first; from now on, each device added is probed
    /// too. See [`DriverRegistration`] for the rules; dropping it unregisters the driver.
    ///
    /// Called from inside a probe or match function, the probes run once that returns.
    ///
    /// # Panics
    ///
    /// Resumes the first panic of a match function or probe, once every device was tried
    /// (the others are logged; only logged if this thread is already unwinding). The
    /// registration is dropped by that unwinding, which unregisters the driver.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use drmm::{Bound, Bus, Driver};
    ///
    /// struct Gpu;
    /// impl Driver for Gpu {
    ///     type Data = ();
    ///     fn id_table(&self) -> &[&str] {
    ///         &["vgpu"]
    ///     }
    ///     fn probe(&self, _dev: &mut Bound<'_>) -> drmm::Result<()> {
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let bus = Bus::new("platform");
    /// let gpu = bus.add_device("vgpu.0");
    /// let other = bus.add_device("uart.0");
    /// let reg = bus.register_driver(Arc::new(Gpu));
    /// assert!(gpu.is_bound() && !other.is_bound());
    /// drop(reg); // driver_unregister
    /// assert!(!gpu.is_bound());
    /// ```
    #[doc(alias = "driver_register")]
    #[doc(alias = "bus_add_driver")]
    pub fn register_driver<D: Driver>(&self, driver: Arc<D>) -> DriverRegistration {
        let name: Box<str> = driver.name().into();
        let address = Arc::as_ptr(&driver).cast::<()>().addr();
        let entry: Arc<dyn Retry> = Arc::new(Registered {
            driver,
            live: AtomicBool::new(true),
        });
        lock(&self.inner.drivers.state)
            .registered
            .push(entry.clone());
        let registration = DriverRegistration {
            bus: Arc::downgrade(&self.inner),
            entry: Some(entry.clone()),
            driver: address,
            name,
        };
        queue(Work::Register(Arc::downgrade(&self.inner), entry));
        PanicSink::resume(drain(), self.name());
        registration
    }

    /// The devices whose probe deferred and that wait to be probed again, oldest first, with
    /// the reason their driver gave (the kernel's `devices_deferred` debugfs file).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use drmm::{Bound, Bus, Driver, Error};
    ///
    /// static CLOCK_READY: AtomicBool = AtomicBool::new(false);
    ///
    /// struct Display;
    /// impl Driver for Display {
    ///     type Data = ();
    ///     fn id_table(&self) -> &[&str] { &["display"] }
    ///     fn probe(&self, _dev: &mut Bound<'_>) -> drmm::Result<()> {
    ///         if !CLOCK_READY.load(Ordering::SeqCst) {
    ///             return Err(Error::probe_defer("waiting for the clock"));
    ///         }
    ///         Ok(())
    ///     }
    /// }
    ///
    /// struct Clock;
    /// impl Driver for Clock {
    ///     type Data = ();
    ///     fn id_table(&self) -> &[&str] { &["clock"] }
    ///     fn probe(&self, _dev: &mut Bound<'_>) -> drmm::Result<()> {
    ///         CLOCK_READY.store(true, Ordering::SeqCst);
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let bus = Bus::new("platform");
    /// let _display = bus.register_driver(Arc::new(Display));
    /// let _clock = bus.register_driver(Arc::new(Clock));
    /// let panel = bus.add_device("display.0");
    /// let waiting = bus.deferred();
    /// assert_eq!((waiting[0].0.name(), &*waiting[0].1), ("display.0", "waiting for the clock"));
    /// bus.add_device("clock.0"); // its probe succeeds: the display is probed again
    /// assert!(panel.is_bound() && bus.deferred().is_empty());
    /// ```
    #[doc(alias = "devices_deferred")]
    #[doc(alias = "deferred_probe_pending_list")]
    pub fn deferred(&self) -> Vec<(BusDevice, Box<str>)> {
        lock(&self.inner.drivers.state)
            .waiting
            .iter()
            .filter(|w| w.retry.live() && w.dev.is_present())
            .map(|w| (w.dev.clone(), w.reason.clone()))
            .collect()
    }

    /// Probes the deferred devices again now (`driver_deferred_probe_trigger`), for a
    /// resource that appears without a probe (firmware loaded, a clock enabled by hand).
    /// Successful probes already do this.
    ///
    /// # Panics
    ///
    /// Resumes the first panic of a probe, once every deferred device was tried.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use drmm::{Bound, Bus, Driver, Error};
    ///
    /// static FIRMWARE: AtomicBool = AtomicBool::new(false);
    ///
    /// struct Wifi;
    /// impl Driver for Wifi {
    ///     type Data = ();
    ///     fn probe(&self, _dev: &mut Bound<'_>) -> drmm::Result<()> {
    ///         if FIRMWARE.load(Ordering::SeqCst) { Ok(()) } else { Err(Error::probe_defer("no firmware")) }
    ///     }
    /// }
    ///
    /// let bus = Bus::new("sdio");
    /// let dev = bus.add_device("wlan0");
    /// assert!(dev.bind(Arc::new(Wifi)).is_err());
    /// FIRMWARE.store(true, Ordering::SeqCst);
    /// bus.probe_deferred();
    /// assert!(dev.is_bound());
    /// ```
    #[doc(alias = "driver_deferred_probe_trigger")]
    #[doc(alias = "deferred_probe")]
    pub fn probe_deferred(&self) {
        queue(Work::Retry(Arc::downgrade(&self.inner)));
        PanicSink::resume(drain(), self.name());
    }
}
