//! The test allocator shared by the op-language binaries: counts live bytes (per thread and
//! globally) and can fail the N-th allocation made inside an *armed* zone of the current thread.
//!
//! Allocations outside an armed zone never fail: Rust's infallible allocations (`Box::new`,
//! `Vec::push`) abort the process on failure, so only calls to fallible library APIs are armed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};

/// The allocator; every binary that includes the `ops` module installs it.
pub struct TestAlloc;

thread_local! {
    /// Bytes allocated minus bytes freed by this thread.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    /// Inside an armed zone.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// Armed allocations left before one fails (`None`: never).
    static FAIL_IN: Cell<Option<usize>> = const { Cell::new(None) };
    /// Armed allocations seen since the last `reset_faults`.
    static SEEN: Cell<usize> = const { Cell::new(0) };
    /// Whether an allocation was failed since the last `take_fired`.
    static FIRED: Cell<bool> = const { Cell::new(false) };
}

/// Bytes live over all threads (allocated minus freed).
static GLOBAL_LIVE: AtomicIsize = AtomicIsize::new(0);
/// Allocations over all threads since start.
static TOTAL: AtomicU64 = AtomicU64::new(0);

fn should_fail() -> bool {
    if !ARMED.try_with(Cell::get).unwrap_or(false) {
        return false;
    }
    let _ = SEEN.try_with(|s| s.set(s.get() + 1));
    FAIL_IN
        .try_with(|f| match f.get() {
            Some(0) => {
                f.set(None);
                let _ = FIRED.try_with(|x| x.set(true));
                true
            }
            Some(n) => {
                f.set(Some(n - 1));
                false
            }
            None => false,
        })
        .unwrap_or(false)
}

// SAFETY: forwards to the system allocator; it only refuses requests (returns null) on demand,
// which every `GlobalAlloc` may do, and only counts otherwise.
unsafe impl GlobalAlloc for TestAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if should_fail() {
            return std::ptr::null_mut();
        }
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let size = layout.size() as isize;
            let _ = LIVE.try_with(|l| l.set(l.get() + size));
            GLOBAL_LIVE.fetch_add(size, Ordering::Relaxed);
            TOTAL.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let size = layout.size() as isize;
        let _ = LIVE.try_with(|l| l.set(l.get() - size));
        GLOBAL_LIVE.fetch_sub(size, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: TestAlloc = TestAlloc;

/// Bytes this thread allocated and has not freed (frees of other threads' blocks count
/// against the freeing thread).
pub fn live_bytes() -> isize {
    LIVE.with(|l| l.get())
}

/// Bytes live over the whole process.
pub fn global_live_bytes() -> isize {
    GLOBAL_LIVE.load(Ordering::Relaxed)
}

/// Allocations made by the whole process so far.
pub fn total_allocations() -> u64 {
    TOTAL.load(Ordering::Relaxed)
}

/// Fails the armed allocation after `n` successful armed ones on this thread (`None`: never),
/// and resets the counters.
pub fn reset_faults(n: Option<usize>) {
    FAIL_IN.with(|f| f.set(n));
    SEEN.with(|s| s.set(0));
    FIRED.with(|f| f.set(false));
}

/// Armed allocations seen on this thread since `reset_faults`.
pub fn armed_seen() -> usize {
    SEEN.with(|s| s.get())
}

/// Whether an allocation was failed since the last call (and clears the flag).
pub fn take_fired() -> bool {
    FIRED.with(|f| f.replace(false))
}

/// Runs `f` with this thread's allocations armed (nesting is allowed: the outer zone wins).
pub fn armed<R>(f: impl FnOnce() -> R) -> R {
    let was = ARMED.with(|a| a.replace(true));
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = ARMED.try_with(|a| a.set(self.0));
        }
    }
    let _restore = Restore(was);
    f()
}

/// Runs `f` with this thread's allocations disarmed (for the test's own bookkeeping inside an
/// armed zone, e.g. in a driver's probe).
pub fn disarmed<R>(f: impl FnOnce() -> R) -> R {
    let was = ARMED.with(|a| a.replace(false));
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = ARMED.try_with(|a| a.set(self.0));
        }
    }
    let _restore = Restore(was);
    f()
}
