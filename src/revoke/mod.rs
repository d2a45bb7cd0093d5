//! Revocation: values and sections that end when the hardware goes away.
//!
//! # The problem
//!
//! At unbind (or hot-unplug) the hardware-facing resources of a binding (register mappings,
//! interrupt lines, DMA buffers) must be released, because the hardware is gone or is about to be
//! given to another driver. But other code can still hold references to the objects that contain
//! those resources: open files, ioctls in progress on other threads, worker threads. Freeing the
//! resource under their feet is the classic use-after-free after hot-unplug; keeping it until the
//! last reference is dropped keeps talking to hardware that left.
//!
//! The kernel's answer, reproduced here for userspace threads, has two parts:
//!
//! * A **gate** ([`Gate`], the mechanism behind `drm_dev_enter` / `drm_dev_exit` /
//!   `drm_dev_unplug`): code that touches the hardware enters the gate first and fails cleanly
//!   once the device is unplugged; unplug closes the gate and waits until everyone inside has
//!   left.
//! * **Revocable values** ([`Revocable<T>`], the building block of Rust-for-Linux's `Devres`): the
//!   resource itself sits behind a flag; access yields a guard or nothing, and revocation clears
//!   the flag, waits until every guard that saw the resource is gone, then drops it exactly once.
//!   [`revoke_all`] revokes many values after a single grace period.
//!
//! Both rest on [`grace::Domain`], a per-object SRCU-like grace-period domain whose read sections
//! cost two uncontended atomic operations on a cache line private to the thread, and whose
//! grace periods cannot be starved by a stream of new readers.
//!
//! Soundness never depends on a destructor running: leaking a guard with
//! [`mem::forget`](std::mem::forget) only makes the matching grace period wait forever.
//!
//! # Examples
//!
//! ```
//! use drmm::revoke::{Gate, Revocable};
//!
//! struct Mmio { base: usize }
//!
//! let gate = Gate::new();
//! let regs = Revocable::new(Mmio { base: 0x1000 });
//!
//! // An ioctl: enter the gate, then use the resource.
//! let ioctl = || -> Option<usize> {
//!     let _inside = gate.enter()?;
//!     regs.try_access_with(|m| m.base)
//! };
//! assert_eq!(ioctl(), Some(0x1000));
//!
//! // Hot-unplug, then unbind.
//! gate.close_and_wait();
//! regs.revoke();
//! assert_eq!(ioctl(), None);
//! ```

pub mod grace;
mod revocable;

pub use grace::{Gate, GateGuard};
pub use revocable::{Revocable, RevocableGuard, Revoke, revoke_all};
pub(crate) use revocable::{drop_payload, resume_unless_unwinding};
