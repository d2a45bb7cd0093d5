//! Managed resources tied to the lifetime of a device.
//!
//! (Crate documentation is written in full with the engine; see README.md meanwhile.)

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod bus;
pub mod device;
pub mod error;
mod macros;
pub mod res;
pub mod revoke;
pub(crate) mod sync;
pub mod trace;

pub use bus::{Bound, Bus, BusDevice, Devres, Driver};
pub use device::{Device, LogicalDevice};
pub use error::{Error, Result};
pub use res::{ActionHandle, EntryInfo, EntryKind, Group, Managed, ResourceOwner, Site};
