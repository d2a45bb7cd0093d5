//! The logical device (`struct drm_device`): reference counted, owning the drmm list and the
//! driver's data.
//!
//! A [`Device<T>`] is a strong reference: cloning it is `drm_dev_get`, dropping it is
//! `drm_dev_put`. When the last reference goes, the device is released in the seed's order:
//!
//! 1. every drmm entry, newest first (including entries added by release actions);
//! 2. the driver data `T`;
//! 3. the device's own memory (the seed's "final kfree").
//!
//! Release actions receive `&LogicalDevice<T>`: they can read the device and its data and add
//! or release entries, but they cannot take a new strong reference — there is no way to get a
//! [`Device<T>`] from a `&LogicalDevice<T>` — so a device cannot be resurrected while it is
//! being released.
//!
//! # Locks (`drmm_mutex_init`)
//!
//! The kernel needs `drmm_mutex_init` because a `struct mutex` embedded in driver data must be
//! destroyed explicitly. In Rust a [`Mutex`](std::sync::Mutex) inside `T` is dropped with `T`,
//! after every drmm action and at the right moment, so no managed lock API is needed: put the
//! lock in `T`. A lock that must live in its own managed allocation is just
//! [`alloc(Mutex::new(..))`](LogicalDevice::alloc).

mod drmm;
mod file;
mod gate;
#[cfg(feature = "registry")]
mod tracked;

pub use crate::revoke::GateGuard;
pub use file::File;

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

use crate::bus::Bound;
use crate::res::kref::{FinalRelease, Kref};
use crate::res::list::{PanicPayload, drop_payload};
use crate::res::{EntryInfo, Key, ResourceList, ResourceOwner};
use crate::revoke::Gate;
use crate::sync::fallible::or_abort;
use crate::sync::set_once::SetOnce;
use crate::sync::{AtomicBool, AtomicUsize};
use crate::trace;

/// The logical device object: its drmm list and its driver data `T`.
///
/// Reached through a [`Device<T>`] (which derefs to it) or, inside a release action, through
/// the `&LogicalDevice<T>` the action receives. All the drmm API lives here.
///
/// # No resurrection
///
/// Nothing turns a `&LogicalDevice<T>` into a new strong reference, so a release action cannot
/// keep the device it is releasing alive:
///
/// ```compile_fail
/// let dev = drmm::Device::new(());
/// let _ = dev.add_action_named("resurrect", |d| {
///     let again: drmm::Device<()> = d.clone(); // no: `&LogicalDevice` is all there is
///     drop(again);
/// });
/// ```
///
/// ```compile_fail
/// let dev = drmm::Device::new(());
/// let _ = dev.add_action_named("resurrect", |d| {
///     let again = drmm::Device::from(d); // no conversion exists either
///     drop(again);
/// });
/// ```
///
/// # Variance
///
/// Invariant in `T` (the data is set once into a cell): a release action or a holder of
/// `&LogicalDevice<T>` cannot see the data as having shorter lifetimes.
///
/// ```compile_fail
/// use drmm::LogicalDevice;
/// fn shorten<'s>(d: &'s LogicalDevice<&'static str>) -> &'s LogicalDevice<&'s str> {
///     d // error: `LogicalDevice` is invariant in `T`
/// }
/// ```
pub struct LogicalDevice<T> {
    list: ResourceList<LogicalDevice<T>>,
    data: SetOnce<T>,
    /// The unplug gate (`drm_dev_enter` / `drm_dev_exit` / `drm_dev_unplug`), one per device.
    gate: Gate,
    /// Registered (`drm_dev_register`) and not yet unregistered: opens succeed.
    registered: AtomicBool,
    /// Open files.
    open_files: AtomicUsize,
    /// Who holds each reference (the `registry` feature).
    #[cfg(feature = "registry")]
    refs: crate::report::refs::RefTracker,
}

/// A strong reference to a logical device (`drm_dev_get` / `drm_dev_put`).
///
/// # Examples
///
/// The seed's scenario: resources registered on a device are released in reverse order when the
/// last reference goes, and the driver data is dropped after all of them.
///
/// ```
/// use std::sync::{Arc, Mutex};
///
/// struct Gpu { log: Arc<Mutex<Vec<&'static str>>> }
/// impl Drop for Gpu {
///     fn drop(&mut self) { self.log.lock().unwrap().push("driver data") }
/// }
///
/// let log = Arc::new(Mutex::new(Vec::new()));
/// let dev = drmm::Device::new(Gpu { log: log.clone() });
/// let l = log.clone();
/// let _ = dev.add_action_named("first", move |_| l.lock().unwrap().push("first"))?;
/// let l = log.clone();
/// let _ = dev.add_action_named("second", move |_| l.lock().unwrap().push("second"))?;
///
/// let file = dev.clone(); // drm_dev_get: an open file, say
/// drop(dev);              // unbind: not the last reference
/// assert!(log.lock().unwrap().is_empty());
/// drop(file);             // last close: drm_dev_put -> release
/// assert_eq!(*log.lock().unwrap(), ["second", "first", "driver data"]);
/// # Ok::<(), drmm::Error>(())
/// ```
///
/// Dropping a `Device` is `drm_dev_put`; dropping the last one is the kernel's release
/// (`drm_managed_release` and the final `kfree`): every drmm entry newest first, then the
/// driver data, then the device's memory.
///
/// # Variance
///
/// The driver data outlives any borrow (it lives until the last reference), so `T` is
/// `'static` and `Device<T>` is invariant in it:
///
/// ```compile_fail
/// fn shorten<'a>(d: drmm::Device<&'static str>, _local: &'a str) {
///     let _short: drmm::Device<&'a str> = d; // error: `&'a str` is not `'static`
/// }
/// ```
#[doc(alias = "drm_device")]
#[doc(alias = "drm_dev_put")]
#[doc(alias = "drm_managed_release")]
pub struct Device<T: Send + Sync + 'static> {
    inner: Kref<LogicalDevice<T>>,
    /// This reference's id among the device's tracked references (the `registry` feature).
    #[cfg(feature = "registry")]
    ref_id: u64,
}

// A handle is one pointer; the `registry` feature adds the reference's id.
#[cfg(not(feature = "registry"))]
const _: () = assert!(size_of::<Device<()>>() == size_of::<usize>());
#[cfg(feature = "registry")]
const _: () = assert!(size_of::<Device<()>>() == size_of::<usize>() + size_of::<u64>());

/// How a reference was taken (recorded by the `registry` feature).
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "registry"), allow(dead_code))]
enum Taken {
    New,
    Clone,
    Open,
    Binding,
}

impl<T: Send + Sync + 'static> Device<T> {
    /// A new device holding `data`, with one reference, named `dev<id>` in traces.
    ///
    /// Aborts if memory runs out, as `Box::new` does; [`try_new`](Self::try_new) reports it.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(7u8);
    /// assert_eq!(*dev.data(), 7);
    /// ```
    #[doc(alias = "drm_dev_alloc")]
    #[cfg_attr(feature = "registry", track_caller)]
    pub fn new(data: T) -> Self {
        or_abort(Self::build(None, data))
    }

    /// A new device holding `data`, named `name` in traces and reports.
    ///
    /// Names are `Cow<'static, str>`: a string literal is kept as it is (no allocation), a
    /// `String` is moved in; pass a borrowed `&str` as `s.to_owned()`. Aborts if memory runs
    /// out, as `Box::new` does; [`try_new_with`](Self::try_new_with) reports it.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::with_name("card0", ());
    /// assert_eq!(dev.name(), "card0");
    /// ```
    #[cfg_attr(feature = "registry", track_caller)]
    pub fn with_name(name: impl Into<Cow<'static, str>>, data: T) -> Self {
        or_abort(Self::build(Some(name.into()), data))
    }

    /// [`new`](Self::new), reporting allocation failure instead of aborting (`drm_dev_alloc`
    /// returns `-ENOMEM`).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`](crate::Error::OutOfMemory); `data` is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::try_new(7u8)?;
    /// assert_eq!(*dev.data(), 7);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[cfg_attr(feature = "registry", track_caller)]
    pub fn try_new(data: T) -> crate::Result<Self> {
        Self::build(None, data)
    }

    #[cfg_attr(feature = "registry", track_caller)]
    fn build(name: Option<Cow<'static, str>>, data: T) -> crate::Result<Self> {
        Self::with_data(name, SetOnce::with(data))
    }

    /// A device holding `data` (set, or to be set once). The device itself is the only
    /// allocation a new device makes: the list allocates on first use, the gate when a thread
    /// first enters it.
    #[cfg_attr(feature = "registry", track_caller)]
    fn with_data(name: Option<Cow<'static, str>>, data: SetOnce<T>) -> crate::Result<Self> {
        // The gate first: it may call out (once per process, to count CPUs), and nothing
        // built before a call can be written straight into the allocation.
        let inner = Kref::try_new_with(|| LogicalDevice {
            gate: Gate::new(),
            list: ResourceList::new(name, "dev"),
            data,
            registered: AtomicBool::new(false),
            open_files: AtomicUsize::new(0),
            #[cfg(feature = "registry")]
            refs: Default::default(),
        })?;
        // A subscriber's panic goes on (the device is released by the unwinding), except while
        // this thread already unwinds, where it would abort: only logged then. Before the first
        // reference is handed out, so that CREATE comes before its GET.
        if trace::debug_possible() {
            let event = trace::caught(|| trace::lifecycle(&inner.list, trace::Op::Create));
            crate::res::list::PanicSink::resume(event, inner.list.owner());
        }
        Ok(Self::handle(inner, Taken::New))
    }

    /// The handle of a reference already counted in `inner`. With the `registry` feature, the
    /// device is registered (at its first reference) and the caller is recorded as the
    /// reference's holder; without it, this is the bare pointer.
    #[cfg_attr(feature = "registry", track_caller)]
    #[inline(always)]
    fn handle(inner: Kref<LogicalDevice<T>>, how: Taken) -> Self {
        #[cfg(feature = "registry")]
        {
            tracked::handle(inner, how)
        }
        #[cfg(not(feature = "registry"))]
        {
            let _ = how;
            Device { inner }
        }
    }

    /// Takes another reference (`drm_dev_get`), taken as `how`.
    #[cfg_attr(feature = "registry", track_caller)]
    #[inline(always)]
    fn get(&self, how: Taken) -> Self {
        Self::handle(self.inner.clone(), how)
    }

    /// Creates a device whose driver data is built by `init`, which can already register drmm
    /// resources on the device (the kernel allocates the container first and fills it in after
    /// `drm_dev_init`).
    ///
    /// If `init` fails, every entry it registered is released, newest first, and the error is
    /// returned. While `init` runs, [`LogicalDevice::data`] panics and
    /// [`LogicalDevice::try_data`] returns `None`; release actions that may run on that path
    /// should use `try_data`.
    ///
    /// # Errors
    ///
    /// Whatever `init` returns; [`Error::OutOfMemory`](crate::Error::OutOfMemory) (converted
    /// into `E`) if the device could not be allocated, before `init` runs.
    ///
    /// # Examples
    ///
    /// ```
    /// struct Gpu { scratch: drmm::Managed<[u8]> }
    ///
    /// let dev = drmm::Device::try_new_with("card0", |dev| {
    ///     Ok::<_, drmm::Error>(Gpu { scratch: dev.kzalloc(4096)? })
    /// })?;
    /// assert_eq!(dev.data().scratch.get(&dev)?.len(), 4096);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devm_drm_dev_alloc")]
    #[doc(alias = "drm_dev_init")]
    #[cfg_attr(feature = "registry", track_caller)]
    pub fn try_new_with<E: From<crate::Error>>(
        name: impl Into<Cow<'static, str>>,
        init: impl FnOnce(&LogicalDevice<T>) -> Result<T, E>,
    ) -> Result<Self, E> {
        let dev = Self::with_data(Some(name.into()), SetOnce::new())?;
        let data = init(&dev)?;
        if dev.data.set(data).is_err() {
            unreachable!("only set once, here");
        }
        Ok(dev)
    }

    /// Creates a device whose lifetime is tied to the binding of its parent bus device
    /// (`devm_drm_dev_alloc`): besides the reference returned, the parent binding gets one,
    /// held by a devres action that, when the binding ends, unplugs the device
    /// ([`unplug`](LogicalDevice::unplug)) and drops that reference.
    ///
    /// So the drmm entries, the driver data and the device itself are released **during the
    /// unbind** (after the devres entries registered later than this call, before the earlier
    /// ones) if nothing else holds the device by then — the driver data of the binding, which
    /// is dropped before the devres list is released, usually holds the returned reference —
    /// or at the **last close** otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfMemory`](crate::Error::OutOfMemory) if the parent's devres list could not
    /// grow; the device is then unplugged and released at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use drmm::bus::{Bound, Bus, Driver};
    /// use drmm::Device;
    ///
    /// struct Vgpu;
    /// impl Driver for Vgpu {
    ///     type Data = Device<u32>;
    ///     fn probe(&self, parent: &mut Bound<'_>) -> drmm::Result<Device<u32>> {
    ///         let drm = Device::new_on(parent, "card0", 42)?;
    ///         drm.register()?;
    ///         Ok(drm)
    ///     }
    /// }
    ///
    /// let bus = Bus::new("platform");
    /// let pdev = bus.add_device("vgpu.0");
    /// pdev.bind(Arc::new(Vgpu))?;
    /// let drm = pdev.with_bound(|b| b.driver_data::<Device<u32>>().cloned())?.unwrap();
    /// let file = drm.open(())?;
    /// pdev.unbind()?;
    /// assert!(drm.is_unplugged());
    /// assert!(drm.enter().is_none());
    /// assert_eq!(*file.device().data(), 42); // still valid until the last close
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[doc(alias = "devm_drm_dev_alloc")]
    #[doc(alias = "__devm_drm_dev_alloc")]
    #[track_caller]
    pub fn new_on(
        parent: &Bound<'_>,
        name: impl Into<Cow<'static, str>>,
        data: T,
    ) -> crate::Result<Self> {
        Self::build(Some(name.into()), data)?.tie_to(parent)
    }

    /// [`new_on`](Self::new_on) with driver data built by `init`, which can register drmm
    /// resources (see [`try_new_with`](Self::try_new_with)). If `init` fails, nothing is
    /// registered on the parent and everything `init` registered is released.
    ///
    /// # Errors
    ///
    /// Whatever `init` returns, or as for [`new_on`](Self::new_on).
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = drmm::Bus::new("platform");
    /// let pdev = bus.add_device("gpu.0");
    /// let card = pdev.with_driverless(|b| {
    ///     drmm::Device::try_new_on(b, "card0", |dev| {
    ///         let _ = dev.add_action(|_| println!("card0: drmm state released"))?;
    ///         Ok(5u32)
    ///     })
    /// })??;
    /// assert_eq!(*card.data(), 5);
    /// pdev.remove()?; // the binding ends: card0 is unplugged, its state lives on with `card`
    /// assert!(card.is_unplugged());
    /// drop(card); // last reference: "card0: drmm state released"
    /// # Ok::<(), drmm::Error>(())
    /// ```
    #[track_caller]
    pub fn try_new_on(
        parent: &Bound<'_>,
        name: impl Into<Cow<'static, str>>,
        init: impl FnOnce(&LogicalDevice<T>) -> crate::Result<T>,
    ) -> crate::Result<Self> {
        Self::try_new_with(name, init)?.tie_to(parent)
    }

    #[track_caller]
    fn tie_to(self, parent: &Bound<'_>) -> crate::Result<Self> {
        let binding_ref = self.get(Taken::Binding);
        let _ = parent.add_action_or_reset_named("devm_drm_dev_init_release", move || {
            binding_ref.unplug();
            drop(binding_ref);
        })?;
        Ok(self)
    }

    /// Number of strong references (a snapshot: it may change at once).
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// let file = dev.clone(); // drm_dev_get
    /// assert_eq!(drmm::Device::ref_count(&dev), 2);
    /// drop(file); // drm_dev_put
    /// assert_eq!(drmm::Device::ref_count(&dev), 1);
    /// ```
    pub fn ref_count(this: &Self) -> usize {
        this.inner.count()
    }

    /// Whether two references point to the same device.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = drmm::Device::new(());
    /// let b = drmm::Device::new(());
    /// assert!(drmm::Device::ptr_eq(&a, &a.clone()));
    /// assert!(!drmm::Device::ptr_eq(&a, &b));
    /// ```
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Kref::ptr_eq(&a.inner, &b.inner)
    }
}

impl<T: Send + Sync + 'static> Clone for Device<T> {
    /// Takes another reference (`drm_dev_get`). With the `registry` feature, the caller's
    /// location is recorded as the holder of the new reference until it drops (see `report`).
    #[doc(alias = "drm_dev_get")]
    #[cfg_attr(feature = "registry", track_caller)]
    fn clone(&self) -> Self {
        self.get(Taken::Clone)
    }
}

impl<T: Send + Sync + 'static> Deref for Device<T> {
    type Target = LogicalDevice<T>;

    fn deref(&self) -> &LogicalDevice<T> {
        &self.inner
    }
}

impl<T: Send + Sync + 'static> fmt::Debug for Device<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.name())
            .field("refs", &self.inner.count())
            .field("resources", &self.list.len())
            .finish()
    }
}

impl<T> LogicalDevice<T> {
    /// The device's name, as used in traces.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::with_name("card0", ());
    /// assert_eq!(dev.name(), "card0");
    /// ```
    pub fn name(&self) -> &str {
        self.list.owner()
    }

    /// The identity of the device's drmm list (what handles record).
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// let buf = dev.kzalloc(8)?;
    /// assert_eq!(buf.list_id(), dev.list_id());
    /// assert_ne!(drmm::Device::new(()).list_id(), dev.list_id());
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn list_id(&self) -> u64 {
        self.list.id()
    }

    /// The driver data.
    ///
    /// # Panics
    ///
    /// If called while [`Device::try_new_with`]'s `init` is still building it (or from a
    /// release action run because that `init` failed). Use [`try_data`](Self::try_data) there.
    ///
    /// # Examples
    ///
    /// ```
    /// struct Gpu { name: &'static str }
    ///
    /// let dev = drmm::Device::new(Gpu { name: "vgpu" });
    /// assert_eq!(dev.data().name, "vgpu");
    /// // Release actions read it too: it is dropped after every one of them.
    /// let _ = dev.add_action(|d| println!("{} going away", d.data().name))?;
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn data(&self) -> &T {
        self.data
            .get()
            .expect("driver data read before `Device::try_new_with`'s init returned it")
    }

    /// The driver data, or `None` while it is being built.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::try_new_with("card0", |dev| {
    ///     assert!(dev.try_data().is_none()); // still being built
    ///     Ok::<_, drmm::Error>(7u32)
    /// })?;
    /// assert_eq!(dev.try_data(), Some(&7));
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn try_data(&self) -> Option<&T> {
        self.data.get()
    }

    /// Number of live drmm entries.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// let a = dev.kzalloc(8)?;
    /// let _ = dev.add_action(|_| {})?;
    /// assert_eq!(dev.resource_count(), 2);
    /// dev.kfree(a)?;
    /// assert_eq!(dev.resource_count(), 1);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn resource_count(&self) -> usize {
        self.list.len()
    }

    /// The live drmm entries, newest first: name, kind, size and where each was registered.
    ///
    /// # Examples
    ///
    /// ```
    /// let dev = drmm::Device::new(());
    /// let _buf = dev.kzalloc(64)?;
    /// let snap = dev.snapshot();
    /// assert_eq!(snap[0].name(), "kzalloc");
    /// assert_eq!(snap[0].size(), 64);
    /// # Ok::<(), drmm::Error>(())
    /// ```
    pub fn snapshot(&self) -> Vec<EntryInfo> {
        self.list.snapshot()
    }
}

impl<T> FinalRelease for LogicalDevice<T> {
    fn release_resources(&self) -> Option<PanicPayload> {
        // From now on a report must not list the entries: the release owns the list.
        #[cfg(feature = "registry")]
        crate::report::registry::releasing(self.list.id());
        // The subscriber is user code: inside the panic net, and the release happens anyway.
        let event = trace::caught(|| trace::lifecycle(&self.list, trace::Op::LastRef));
        // SAFETY: called once the last reference is gone: nothing outside the release actions
        // (which run on this thread and receive `&self` only for their call) can reach the
        // device, so no reference read through a handle of this list is alive elsewhere, and
        // no other thread can use the list (a `&LogicalDevice` on another thread would need a
        // `Device` there, i.e. a reference, or a scoped thread of an action, which ends before
        // the action returns).
        let released = unsafe { self.list.release_all_exclusive(self) };
        // A release action's panic is the one promised to be resumed; a subscriber's is
        // resumed only when no action panicked.
        match (released, event) {
            (Some(p), Some(q)) => {
                drop_payload(q);
                Some(p)
            }
            (p, q) => p.or(q),
        }
    }

    fn owner_name(&self) -> &str {
        self.list.owner()
    }
}

impl<T> crate::res::handle::sealed::Sealed for LogicalDevice<T> {
    fn check_entry(&self, key: &Key) -> crate::Result<()> {
        self.list.check_live(key)
    }
}

impl<T> ResourceOwner for LogicalDevice<T> {}

impl<T> fmt::Debug for LogicalDevice<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogicalDevice")
            .field("name", &self.name())
            .field("resources", &self.list.len())
            .finish()
    }
}

impl<T: Send + Sync + 'static> crate::res::handle::sealed::Sealed for Device<T> {
    fn check_entry(&self, key: &Key) -> crate::Result<()> {
        self.list.check_live(key)
    }
}

/// A `Device<T>` vouches for its entries like the `LogicalDevice<T>` it points to, so handles
/// can be read with `handle.get(&dev)` on either.
impl<T: Send + Sync + 'static> ResourceOwner for Device<T> {}
