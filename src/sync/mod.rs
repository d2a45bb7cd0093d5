//! Synchronisation and ownership primitives, switched to loom's models under `--cfg loom`.
//!
//! Every atomic, lock and thread primitive used by the library comes from here so that the loom
//! models in `tests/loom_*.rs` explore the real code paths, not copies of them. The primitives
//! built on them live here too, apart from the resource-list engine that uses them:
//!
//! * [`lock`](mod@lock): the lock of a resource list (spin, then yield; no poisoning);
//! * [`fallible`]: `Box` and `Arc` that report allocation failure instead of aborting;
//! * [`set_once`]: a cell written at most once (a device's driver data).
//!
//! Nothing here knows about lists, devices or buses.

pub(crate) mod fallible;
pub(crate) mod lock;
pub(crate) mod set_once;

#[cfg(all(test, not(loom)))]
pub(crate) mod drop_counter;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering, fence,
};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(loom)]
pub(crate) use loom::thread::yield_now;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering, fence,
};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::thread::yield_now;

/// Locks `m`, ignoring poisoning.
///
/// The library never holds one of its own locks while running user code, so a poisoned lock only
/// means a panic escaped between two library statements; the data it protects is still
/// consistent and refusing to continue would turn one panic into a cascade (promise 5).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    #[cfg(loom)]
    {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }
    #[cfg(not(loom))]
    {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Identifies a thread (loom's threads under `cfg(loom)`, which share one OS thread).
#[cfg(not(loom))]
pub(crate) type ThreadKey = std::thread::ThreadId;
/// Identifies a thread (loom's threads under `cfg(loom)`, which share one OS thread).
#[cfg(loom)]
pub(crate) type ThreadKey = loom::thread::ThreadId;

/// The calling thread's [`ThreadKey`].
pub(crate) fn current_thread() -> ThreadKey {
    #[cfg(not(loom))]
    {
        std::thread::current().id()
    }
    #[cfg(loom)]
    {
        loom::thread::current().id()
    }
}
