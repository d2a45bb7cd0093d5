//! A removal postponed until the device's scope is left.

use super::BusDevice;
use crate::error::Error;
use crate::sync::Ordering;

/// Removes the device, once its scope is left, if its bus was dropped meanwhile by the thread
/// that held the scope (which could not remove it then: `Reentrant`). Made right after the
/// scope is entered and dropped after it is left.
pub(super) struct PendingRemoval<'a>(pub(super) &'a BusDevice);

impl Drop for PendingRemoval<'_> {
    fn drop(&mut self) {
        let core = self.0.core();
        if core.remove_on_exit.load(Ordering::Acquire)
            && core.remove_on_exit.swap(false, Ordering::AcqRel)
        {
            // Panics are resumed by `remove` (only logged while this thread unwinds).
            if let Err(Error::Reentrant) = self.0.remove() {
                // An outer scope of this thread: removed when that one is left.
                core.remove_on_exit.store(true, Ordering::Release);
            }
        }
    }
}
