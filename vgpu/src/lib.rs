//! A virtual GPU driver written only against drmm's public API, the way a driver author
//! would write it, on real operating-system resources: the demo's driver (`drmm demo`).
//!
//! * **Hardware** (devres, revoked or released at unbind): a register window and a DMA-like
//!   buffer pool, both memfd mappings reached through [`drmm::Devres`]; a vblank interrupt
//!   (a thread) stopped by a devres action.
//! * **Userspace-visible state** (drmm, released at the last reference): the logical device
//!   `card0` with its mode objects (planes, a CRTC, a connector) and an ordered work queue
//!   (a named worker thread), torn down by drmm actions; buffer objects backed by memfd
//!   mappings, whose lifetime follows the files and mappings holding them.
//! * **Clients** ([`Client`]): open files that create and map buffers, submit work that
//!   touches the hardware through the unplug gate, and read results back.
//!
//! Under [`Lifetime::DevmEverywhere`] the same driver ties its userspace-visible state to the
//! binding instead, the bug class drmm exists to remove: every later access would be a
//! use-after-free in C; here the library refuses it and the driver journals it
//! ([`Journal::incidents`]).
//!
//! [`scenario`] runs the whole story with client threads on a seeded schedule.

mod bo;
mod client;
mod error;
mod gpu;
pub mod hw;
mod journal;
pub mod memfd;
pub mod rng;
pub mod scenario;
mod tied;
pub mod wq;

pub use client::{Client, Closed, Fence, Stall};
pub use error::Error;
pub use gpu::{Binding, Config, Gpu, IRQ, MODE_OBJECTS, ModeKind, ModeObject, VgpuDriver, WORKER};
pub use journal::{Count, Event, Incident, Journal, Owner};
pub use tied::Lifetime;
