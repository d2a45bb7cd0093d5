//! The process-wide table of live devices, sharded by device id.
//!
//! A device is registered when it is created and unregistered from its own destructor, before
//! any of its fields is dropped, so that a report can describe it through the pointer the
//! table keeps. The table is split into shards (one lock each, on its own cache line), so that
//! threads creating and releasing their own devices (W9) rarely meet on a lock; a report locks
//! one shard at a time.
//!
//! Lock order: a shard lock may be held while a device's list lock or reference-tracker lock is
//! taken (to describe it), never the other way round; no user code runs under a shard lock
//! (nothing user-owned is dropped there, no event is emitted there).

use std::collections::VecDeque;
use std::panic::Location;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::idmap::{IdMap, id_map};
use super::{DeviceKind, DeviceReport, DeviceState, ReleasedDevice};

/// A registered device, as the registry sees it.
pub(crate) trait Tracked: Sync {
    /// Fills in `out`'s name, state and holders, and its live entries if `entries`.
    ///
    /// Called under a shard lock: must not run user code, emit events or take a shard lock.
    fn describe(&self, out: &mut DeviceReport, entries: bool);
}

/// One live device.
struct Record {
    dev: NonNull<dyn Tracked>,
    kind: DeviceKind,
    created_at: &'static Location<'static>,
    /// Its last reference is gone and its release has begun: its entries are no longer listed
    /// (a device's final release owns its list exclusively).
    releasing: bool,
}

// SAFETY: the pointee is `Sync` (`Tracked: Sync`), so describing it from whichever thread
// holds the shard lock is sound; the pointer is only dereferenced while registered (see
// `register`).
unsafe impl Send for Record {}

/// Shards: a power of two, a few times the number of threads that usually create devices.
const SHARDS: usize = 16;
/// Released devices remembered per shard (so at most 64 in all), oldest forgotten first.
const HISTORY_PER_SHARD: usize = 4;

struct State {
    live: IdMap<Record>,
    released: VecDeque<ReleasedDevice>,
    released_count: u64,
}

/// One shard, alone on its cache line pair (no false sharing between shards).
#[repr(align(128))]
struct Shard(Mutex<State>);

static REGISTRY: [Shard; SHARDS] = [const {
    Shard(Mutex::new(State {
        live: id_map(),
        released: VecDeque::new(),
        released_count: 0,
    }))
}; SHARDS];

/// The shard of device `id`, locked. Poisoning is ignored: no code that can panic runs between
/// two updates of a shard.
fn shard(id: u64) -> MutexGuard<'static, State> {
    // `SHARDS` is a power of two: the remainder is a mask.
    REGISTRY[(id % SHARDS as u64) as usize]
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Registers device `id`.
///
/// # Safety
///
/// `dev` must stay valid (not moved, not dropped) until [`unregister`]`(id)` has returned, and
/// [`releasing`]`(id)` must be called before its entries become unsafe to list from another
/// thread.
pub(crate) unsafe fn register(
    id: u64,
    kind: DeviceKind,
    dev: &(dyn Tracked + 'static),
    created_at: &'static Location<'static>,
) {
    let record = Record {
        dev: NonNull::from(dev),
        kind,
        created_at,
        releasing: false,
    };
    let mut st = shard(id);
    // Fallibly: creating a device reports running out of memory, it does not abort.
    if st.live.try_reserve(1).is_ok() {
        st.live.insert(id, record);
    } else {
        UNLISTED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Live devices created while memory ran out: counted, not listed.
static UNLISTED: AtomicU64 = AtomicU64::new(0);

/// Device `id`'s last reference is gone: from now on its entries are not listed.
pub(crate) fn releasing(id: u64) {
    if let Some(r) = shard(id).live.get_mut(&id) {
        r.releasing = true;
    }
}

/// Device `id` (named `name`) is being dropped: it leaves the table for the history.
pub(crate) fn unregister(id: u64, name: &str) {
    let mut st = shard(id);
    let Some(record) = st.live.remove(&id) else {
        UNLISTED.fetch_sub(1, Ordering::Relaxed);
        return;
    };
    st.released_count += 1;
    // The oldest remembered device makes room, and its name's buffer is reused: once the
    // history is full, remembering a device allocates nothing (unless its name is longer).
    let mut copy = if st.released.len() >= HISTORY_PER_SHARD {
        st.released.pop_front().map(|r| r.name).unwrap_or_default()
    } else {
        String::new()
    };
    copy.clear();
    // Fallibly: a release must not abort on a full heap.
    if copy.try_reserve(name.len()).is_ok() {
        copy.push_str(name);
    }
    if st.released.try_reserve(1).is_ok() {
        st.released.push_back(ReleasedDevice {
            id,
            name: copy,
            kind: record.kind,
            created_at: record.created_at,
        });
    }
}

/// Live devices not listed (created while memory ran out).
pub(crate) fn unlisted() -> u64 {
    UNLISTED.load(Ordering::Relaxed)
}

/// What a report is made of: the live devices (by id), the number of devices released so far
/// and, if `history`, the last ones released.
pub(crate) fn collect(history: bool) -> (Vec<DeviceReport>, u64, Vec<ReleasedDevice>) {
    let mut devices = Vec::new();
    let mut released_count = 0;
    let mut released = Vec::new();
    for s in &REGISTRY {
        let st = s.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (&id, r) in &st.live {
            let state = if r.releasing {
                DeviceState::Releasing
            } else {
                DeviceState::Alive
            };
            let mut d = DeviceReport::new(id, r.kind, state, r.created_at);
            // SAFETY: registered, so valid until `unregister(id)`, which needs this lock.
            let dev = unsafe { r.dev.as_ref() };
            dev.describe(&mut d, !r.releasing);
            devices.push(d);
        }
        released_count += st.released_count;
        if history {
            released.extend(st.released.iter().cloned());
        }
    }
    devices.sort_by_key(|d| d.id);
    released.sort_by_key(|d| d.id);
    (devices, released_count, released)
}
