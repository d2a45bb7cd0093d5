//! Managed resources tied to the lifetime of a device: the Linux DRM managed-resources model
//! (`drmm_*`), its driver-core ancestor (`devres`, `devm_*`) and the hot-unplug gate
//! (`drm_dev_enter`/`drm_dev_exit`/`drm_dev_unplug`) for Rust.
//!
//! # The problem
//!
//! A driver owns two kinds of things, with two different lifetimes:
//!
//! * **hardware-facing resources** (register mappings, interrupts, DMA): they must be gone when
//!   the driver is unbound from the physical device, because after a hot-unplug the hardware is
//!   gone;
//! * **userspace-visible state** (the device object, its buffers, per-client state): it must
//!   live until the *last reference* goes, because userspace can keep files open and buffers
//!   mapped long after the hardware left.
//!
//! Tying the second kind to the binding (the kernel's `devm_*`) is the classic use-after-free
//! after hot-unplug. The kernel's fix, which this crate reproduces, is to give each kind its own
//! owner, release both in **reverse order of acquisition**, free the driver's private data
//! **last**, and fence every access to hardware with an **unplug gate** that refuses entry once
//! the device is gone and waits out the code that was inside.
//!
//! # The model
//!
//! | concept | kernel | here | lives until | owns |
//! |---|---|---|---|---|
//! | bus device | `struct device` | [`BusDevice`] | its last reference | the devres list of its binding |
//! | binding | probe … remove | a [`Driver`] bound with [`BusDevice::bind`], seen as [`Bound`] | unbind, probe failure, removal | driver data, devres entries, [`Devres<T>`] values |
//! | logical device | `struct drm_device` | [`Device<T>`] → [`LogicalDevice<T>`] | its last reference | the drmm list, the driver data `T` |
//! | open file | `struct drm_file` | [`device::File`] | close | one reference to the logical device |
//! | unplug gate | `drm_dev_enter/exit/unplug` | [`LogicalDevice::enter`], [`LogicalDevice::unplug`] | — | nothing: refuses entry after unplug, waits out those inside |
//! | revocable | Rust-for-Linux `Revocable`/`Devres` | [`revoke::Revocable`], [`Devres<T>`] | revocation at unbind | a value unreachable once revoked |
//!
//! Both the drmm list and the devres list are the same engine ([`res`]): a list of *entries*
//! (release actions, managed allocations, group markers) released newest first, each exactly
//! once — at the owner's release, or earlier through the entry's typed handle.
//!
//! # The promises
//!
//! Every one of these has tests that fail if it breaks:
//!
//! 1. **Order.** Entries are released newest first, including entries added while the list is
//!    being released (the kernel skips those).
//! 2. **Onion.** A logical device's data `T` is dropped after every drmm entry and its memory is
//!    freed after that. At unbind: the driver's `remove`, then revocation, then the driver data,
//!    then the devres list.
//! 3. **Exactly once.** Handles are consumed by early release, so an entry cannot be released
//!    twice; a stale handle is detected, not dereferenced.
//! 4. **No resurrection.** Release actions get `&LogicalDevice<T>`, from which no new
//!    [`Device<T>`] can be made.
//! 5. **Panic safety.** A panicking action does not stop the others; the first panic is resumed
//!    once the release is complete, the others are logged; a release during unwinding only logs.
//! 6. **Bad input is an error** ([`Error`]): overflowing sizes, absurd alignments, allocation
//!    failure, a handle of another device; the list stays intact.
//! 7. **Threads.** Every operation is safe from any thread, concurrently with any other.
//! 8. **Hot-unplug.** After [`unplug`](LogicalDevice::unplug) returns nobody is inside the gate
//!    and nobody can enter or open the device; after unbind every hardware resource of the
//!    binding is released or revoked; files, buffers and drmm state live until the last
//!    reference.
//! 9. **Observability.** Every list operation is a [`tracing`](https://docs.rs/tracing) event (target `drmm`) in the
//!    kernel's words (`ADD`, `DEL`, `REL`, `REM`, …) with name, size and source location; and
//!    [`LogicalDevice::snapshot`] lists the live entries.
//! 10. **`mem::forget` is safe**: soundness never depends on a destructor running.
//!
//! # A driver's life
//!
//! ```
//! use std::sync::Arc;
//! use drmm::{Bound, Bus, Device, Devres, Driver, LogicalDevice};
//!
//! /// Userspace-visible state: lives until the last reference to the logical device.
//! struct Gpu { name: &'static str }
//!
//! /// The binding's data: the register window (revoked at unbind) and the logical device.
//! struct Binding { regs: Devres<Vec<u32>>, card: Device<Gpu> }
//!
//! struct GpuDriver;
//!
//! impl Driver for GpuDriver {
//!     type Data = Binding;
//!     fn probe(&self, dev: &mut Bound<'_>) -> drmm::Result<Binding> {
//!         let regs = Devres::new(dev, vec![0u32; 16])?;            // hardware: devm
//!         let card = Device::new_on(dev, "card0", Gpu { name: "vgpu" })?; // devm_drm_dev_alloc
//!         let _ = drmm::add_action!(card, |d: &LogicalDevice<Gpu>| {
//!             println!("drmm: {} torn down at the last reference", d.data().name)
//!         })?;
//!         card.register()?;                                       // drm_dev_register
//!         Ok(Binding { regs, card })
//!     }
//!     fn remove(&self, _dev: &mut Bound<'_>, data: &Binding) {
//!         data.card.unplug();                                    // drm_dev_unplug
//!     }
//! }
//!
//! let bus = Bus::new("platform");
//! let pdev = bus.add_device("gpu.0");
//! pdev.bind(Arc::new(GpuDriver))?;
//!
//! // Userspace opens the card and keeps the file.
//! let card = pdev.with_bound(|b| b.driver_data::<Binding>().unwrap().card.clone())?;
//! let file = card.open(())?;
//! drop(card);
//! assert!(file.enter().is_some(), "hardware reachable while bound");
//!
//! pdev.unbind()?; // hot-unplug: remove, revoke the registers, drop the binding, release devres
//!
//! assert!(file.enter().is_none(), "the gate is closed for hardware access");
//! assert_eq!(file.device().data().name, "vgpu", "userspace-visible state still alive");
//! drop(file); // last close: the drmm action runs now, then `Gpu` is dropped
//! # Ok::<(), drmm::Error>(())
//! ```
//!
//! # Where to start
//!
//! * [`Device`] and [`LogicalDevice`]: the drmm API (`add_action!`, `kzalloc`, `alloc`,
//!   `release_action`, `kfree`, `snapshot`), registration, the unplug gate, open files.
//! * [`bus`]: bus devices, drivers, [`Bound`] with the devres API and groups, [`Devres<T>`].
//! * [`revoke`]: [`revoke::Revocable`] and the grace-period primitive under the gate.
//! * [`res`]: handles ([`Managed`], [`ActionHandle`], [`Group`]) and entry descriptions.
//! * [`trace`]: the event vocabulary.
//! * [`workqueue`]: ordered work queues ([`WorkQueue`]), owned by a logical device
//!   ([`LogicalDevice::alloc_ordered_workqueue`]) or a binding
//!   ([`Bound::alloc_ordered_workqueue`]).
//! * `report` (cargo feature `registry`): the registry of live devices, who holds each
//!   reference, and leak reports.
//!
//! Every item with a kernel counterpart carries `#[doc(alias = "...")]` with the kernel's name:
//! search for `drmm_kzalloc`, `devm_add_action_or_reset` or `drm_dev_enter` to find it.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod bus;
pub mod device;
pub mod error;
mod macros;
#[cfg(feature = "registry")]
#[cfg_attr(docsrs, doc(cfg(feature = "registry")))]
pub mod report;
pub mod res;
pub mod revoke;
pub(crate) mod sync;
pub mod trace;
pub mod workqueue;

pub use bus::{Bound, Bus, BusDevice, Devres, Driver};

/// The README's examples, compiled and run as doctests so that they cannot go stale.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
pub use device::{Device, LogicalDevice};
pub use error::{Error, Result};
pub use res::{ActionHandle, EntryInfo, EntryKind, Group, Managed, ResourceOwner, Site};
pub use workqueue::WorkQueue;
