//! The `registry` feature's side of the logical device: registering it, recording who holds
//! each reference, describing it to a report, and leaving the registry when it is dropped.

use std::panic::{self, AssertUnwindSafe, Location};

use super::{Device, LogicalDevice, Taken};
use crate::report::refs;
use crate::report::registry::{self, Tracked};
use crate::report::{DeviceKind, DeviceReport, DeviceState, RefKind};
use crate::res::kref::Kref;
use crate::sync::Ordering;

impl From<Taken> for RefKind {
    fn from(t: Taken) -> RefKind {
        match t {
            Taken::New => RefKind::New,
            Taken::Clone => RefKind::Clone,
            Taken::Open => RefKind::Open,
            Taken::Binding => RefKind::Binding,
        }
    }
}

/// The handle of a reference counted in `inner`, recorded as taken by the caller (`GET`).
#[track_caller]
pub(super) fn handle<T: Send + Sync + 'static>(
    inner: Kref<LogicalDevice<T>>,
    how: Taken,
) -> Device<T> {
    let location = Location::caller();
    let dev: &LogicalDevice<T> = &inner;
    if matches!(how, Taken::New) {
        // SAFETY: the device lives in `inner`'s allocation, which is not moved and is freed
        // only after the device's destructor, whose first act is `registry::unregister` (the
        // `Drop` below); its release calls `registry::releasing` before taking its list.
        unsafe { registry::register(dev.list.id(), DeviceKind::Logical, dev, location) };
    }
    let ref_id = dev.refs.get(how.into(), location);
    let dev = Device { inner, ref_id };
    // After the handle exists: if the subscriber panics, dropping the handle forgets the
    // reference again.
    if refs::events_possible() {
        refs::get_event(dev.list.id(), dev.name(), ref_id, how.into(), location);
    }
    dev
}

impl<T: Send + Sync + 'static> Drop for Device<T> {
    /// Forgets this reference's holder (`PUT`), then the reference itself is dropped.
    fn drop(&mut self) {
        self.inner.refs.put(self.ref_id);
        if refs::events_possible() {
            let (id, name) = (self.list.id(), self.name());
            let emitted =
                panic::catch_unwind(AssertUnwindSafe(|| refs::put_event(id, name, self.ref_id)));
            if let Err(p) = emitted {
                if std::thread::panicking() {
                    // The subscriber panicked while this thread unwinds: resuming would abort.
                    // The payload is leaked, not dropped: its destructor is foreign code too.
                    std::mem::forget(p);
                } else {
                    // The reference itself is still dropped, as the unwind drops the fields.
                    panic::resume_unwind(p);
                }
            }
        }
    }
}

impl<T: Send + Sync + 'static> Tracked for LogicalDevice<T> {
    fn describe(&self, out: &mut DeviceReport, entries: bool) {
        out.name.push_str(self.name());
        if out.state == DeviceState::Alive && self.is_unplugged() {
            out.state = DeviceState::Unplugged;
        }
        out.registered = self.is_registered();
        out.open_files = self.open_files.load(Ordering::Acquire);
        out.holders = self.refs.holders();
        out.unlisted_refs = self.refs.unlisted();
        if entries {
            out.entries = self.list.snapshot();
        }
    }
}

impl<T> Drop for LogicalDevice<T> {
    /// Leaves the registry before any field is dropped (a report may be reading them).
    fn drop(&mut self) {
        registry::unregister(self.list.id(), self.name());
    }
}
