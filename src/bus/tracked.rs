//! The `registry` feature's side of the bus device: registering it, describing it to a
//! report, and leaving the registry when it is dropped.

use std::panic::Location;

use super::{BusDevice, Core};
use crate::report::registry::{self, Tracked};
use crate::report::{DeviceKind, DeviceReport, DeviceState};
use crate::sync::Ordering;

/// Registers a new bus device, created by the caller.
#[track_caller]
pub(super) fn register(dev: &BusDevice) {
    let core = dev.core();
    // SAFETY: the core lives in the device's reference-counted allocation, which is not moved
    // and is freed only after the core's destructor, whose first act is
    // `registry::unregister` (the `Drop` below). Listing its entries is safe at any time (its
    // release is not exclusive), so `releasing` is not needed.
    unsafe {
        registry::register(
            core.devres.list().id(),
            DeviceKind::Bus,
            core,
            Location::caller(),
        )
    };
}

impl Tracked for Core {
    fn describe(&self, out: &mut DeviceReport, entries: bool) {
        out.name.push_str(self.devres.list().owner());
        if out.state == DeviceState::Alive && !self.present.load(Ordering::Acquire) {
            out.state = DeviceState::Unplugged;
        }
        out.bound = self.bound.load(Ordering::Acquire);
        if entries {
            out.entries = self.devres.list().snapshot();
        }
    }
}

impl Drop for Core {
    /// Leaves the registry before any field is dropped (a report may be reading them).
    fn drop(&mut self) {
        registry::unregister(self.devres.list().id(), self.devres.list().owner());
    }
}
