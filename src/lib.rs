//! Managed resources tied to the lifetime of a device.
//!
//! (Crate documentation is written in full with the engine; see README.md meanwhile.)

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod error;
pub mod revoke;
pub(crate) mod sync;

pub use error::{Error, Result};
