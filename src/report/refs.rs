//! Who holds each reference to a logical device (the kernel's `ref_tracker`): one record per
//! live `Device` handle, keyed by a per-device reference id, with the caller's location.
//!
//! The tracker lives in the device. Its records are split over a few locks by reference id, so
//! that threads taking and dropping references to one device concurrently spread over them;
//! each lock guards a small map and is held for one insert or remove, with no user code inside
//! (the `GET`/`PUT` events are emitted after unlocking).

use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::idmap::{IdMap, id_map};
use super::{RefHolder, RefKind};

const SHARDS: usize = 4;

type Holders = IdMap<(RefKind, &'static Location<'static>)>;

/// One shard. Not padded to a cache line of its own: the tracker lives inside the device, whose
/// allocation must stay small enough for the allocator's per-thread cache (glibc serves up to
/// 1,032 bytes from it; a padded tracker pushed the device past that, and two threads churning
/// devices then met on the allocator's lock). Neighbouring shards may share a line.
struct Shard {
    lock: Mutex<Holders>,
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            lock: Mutex::new(id_map()),
        }
    }
}

/// The live references of one device.
#[derive(Default)]
pub(crate) struct RefTracker {
    /// The last reference id given out (ids start at 1 and are never reused in a device).
    last: AtomicU64,
    /// Live references taken while memory ran out: counted, not listed.
    unlisted: AtomicU64,
    shards: [Shard; SHARDS],
}

impl RefTracker {
    fn shard(&self, id: u64) -> MutexGuard<'_, Holders> {
        self.shards[(id % SHARDS as u64) as usize]
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a new reference taken at `location`; returns its id.
    pub(crate) fn get(&self, kind: RefKind, location: &'static Location<'static>) -> u64 {
        let id = self.last.fetch_add(1, Ordering::Relaxed) + 1;
        let mut map = self.shard(id);
        // Fallibly: taking a reference never fails, and tracking it must not abort either.
        if map.try_reserve(1).is_ok() {
            map.insert(id, (kind, location));
        } else {
            self.unlisted.fetch_add(1, Ordering::Relaxed);
        }
        id
    }

    /// Forgets reference `id` (dropped).
    pub(crate) fn put(&self, id: u64) {
        if self.shard(id).remove(&id).is_none() {
            self.unlisted.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// How many live references are not listed (taken while memory ran out).
    pub(crate) fn unlisted(&self) -> u64 {
        self.unlisted.load(Ordering::Relaxed)
    }

    /// The live references, oldest first.
    pub(crate) fn holders(&self) -> Vec<RefHolder> {
        let mut v = Vec::new();
        for s in &self.shards {
            let map = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
            v.extend(map.iter().map(|(&id, &(kind, location))| RefHolder {
                id,
                kind,
                location,
                same_line_entry: None,
            }));
        }
        v.sort_by_key(|h| h.id);
        v
    }
}

/// Whether a `GET`/`PUT` event could be recorded now (`tracing`'s global level check).
#[inline(always)]
pub(crate) fn events_possible() -> bool {
    tracing::level_enabled!(tracing::Level::DEBUG)
}

/// The `GET` event of the trace schema: reference `ref_id` of device `dev` was taken at
/// `location`.
#[cold]
#[inline(never)]
pub(crate) fn get_event(
    dev: u64,
    dev_name: &str,
    ref_id: u64,
    kind: RefKind,
    location: &'static Location<'static>,
) {
    tracing::debug!(
        target: "drmm",
        op = "GET",
        dev,
        dev_name,
        dev_kind = "logical",
        ref_id,
        file = location.file(),
        line = location.line(),
        detail = kind.as_str(),
    );
}

/// The `PUT` event of the trace schema: reference `ref_id` of device `dev` was dropped.
#[cold]
#[inline(never)]
pub(crate) fn put_event(dev: u64, dev_name: &str, ref_id: u64) {
    tracing::debug!(
        target: "drmm",
        op = "PUT",
        dev,
        dev_name,
        dev_kind = "logical",
        ref_id,
    );
}
