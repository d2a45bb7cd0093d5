//! Promise 6: bad input and allocation failure give errors, and the list stays intact.
//!
//! This binary installs a global allocator that can be told to fail the N-th allocation made by
//! the current thread, and that counts the bytes each thread has live, so that a failure path
//! that leaks is caught.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Log, Tracked};
use drmm::{Device, Error};

struct FailingAlloc;

thread_local! {
    /// Allocations left before one fails (`None`: never fail).
    static FAIL_IN: Cell<Option<usize>> = const { Cell::new(None) };
    /// Bytes allocated minus bytes freed by this thread.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only refuses requests (returns null) on demand,
// which every `GlobalAlloc` may do.
unsafe impl GlobalAlloc for FailingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let fail = FAIL_IN
            .try_with(|f| match f.get() {
                Some(0) => {
                    f.set(None);
                    true
                }
                Some(n) => {
                    f.set(Some(n - 1));
                    false
                }
                None => false,
            })
            .unwrap_or(false);
        if fail {
            return std::ptr::null_mut();
        }
        let _ = LIVE.try_with(|l| l.set(l.get() + layout.size() as isize));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|l| l.set(l.get() - layout.size() as isize));
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: FailingAlloc = FailingAlloc;

/// Fails the allocation after `n` successful ones on this thread.
fn fail_after(n: usize) {
    FAIL_IN.with(|f| f.set(Some(n)));
}

fn no_failures() {
    FAIL_IN.with(|f| f.set(None));
}

fn live_bytes() -> isize {
    LIVE.with(|l| l.get())
}

#[test]
fn failed_data_allocation_is_an_error_and_the_list_is_unchanged() {
    let dev = Device::new(());
    let _keep = dev.kzalloc(8).unwrap();
    let before = dev.snapshot();
    // A block too large for the device's arena goes to the allocator itself.
    fail_after(0);
    let r = dev.kzalloc(1000);
    no_failures();
    assert_eq!(
        r.unwrap_err(),
        Error::OutOfMemory {
            size: 1000,
            align: 16
        }
    );
    assert_eq!(dev.snapshot(), before);
}

#[test]
fn failed_arena_chunk_is_an_error_and_the_list_is_unchanged() {
    // A fresh device has no arena chunk yet: the first small allocation must get one.
    let dev = Device::new(());
    fail_after(0);
    let r = dev.kzalloc(100);
    no_failures();
    assert!(matches!(r, Err(Error::OutOfMemory { .. })), "{r:?}");
    assert_eq!(dev.resource_count(), 0);
    assert_eq!(dev.kzalloc(100).unwrap().get(&dev).unwrap().len(), 100);
}

#[test]
fn failed_list_growth_drops_the_value_and_keeps_the_list() {
    let log = Log::new();
    let drops = Arc::new(AtomicUsize::new(0));
    let dev = Device::new(());
    // Fresh list: the first push must grow the slot table; the value's block comes first.
    fail_after(1);
    let r = dev.alloc(Tracked::new("v", &log, &drops));
    no_failures();
    assert!(matches!(r, Err(Error::OutOfMemory { .. })));
    assert_eq!(drops.load(Ordering::SeqCst), 1, "value dropped, not leaked");
    assert_eq!(dev.resource_count(), 0);
    let _ok = dev.alloc(1u8).unwrap();
    assert_eq!(dev.resource_count(), 1);
}

#[test]
fn add_action_fails_without_running_and_or_reset_runs_it_once() {
    let ran = Arc::new(AtomicUsize::new(0));
    let dev = Device::new(());
    let r = ran.clone();
    fail_after(0);
    let e = dev.add_action_named("plain", move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    });
    no_failures();
    assert!(matches!(e, Err(Error::OutOfMemory { .. })));
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "plain add never runs the action"
    );

    let dev = Device::new(());
    let r = ran.clone();
    fail_after(0);
    let e = drmm::add_action_or_reset!(dev, move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    });
    no_failures();
    assert!(matches!(e, Err(Error::OutOfMemory { .. })));
    assert_eq!(ran.load(Ordering::SeqCst), 1, "_or_reset ran it at once");
    drop(dev);
    assert_eq!(ran.load(Ordering::SeqCst), 1, "and not again at release");
}

#[test]
fn or_reset_runs_a_large_closure_whose_box_failed() {
    let ran = Arc::new(AtomicUsize::new(0));
    let dev = Device::new(());
    let _warm = dev.alloc(0u8).unwrap(); // slot table already has room
    let r = ran.clone();
    let big = [1u64; 16];
    fail_after(0); // the closure's box
    let e = dev.add_action_or_reset_named("big", move |_| {
        r.fetch_add(big.len(), Ordering::SeqCst);
    });
    no_failures();
    assert!(e.is_err());
    assert_eq!(ran.load(Ordering::SeqCst), 16);
}

#[test]
fn overflowing_sizes_are_errors() {
    let dev = Device::new(());
    assert!(matches!(
        dev.kmalloc_array(usize::MAX / 2 + 1, 2),
        Err(Error::SizeOverflow { .. })
    ));
    assert!(matches!(
        dev.kcalloc(3, usize::MAX / 2),
        Err(Error::SizeOverflow { .. })
    ));
    assert!(matches!(
        dev.kmalloc(usize::MAX),
        Err(Error::SizeOverflow { .. })
    ));
    assert!(matches!(
        dev.kzalloc(isize::MAX as usize - 3),
        Err(Error::SizeOverflow { .. })
    ));
    assert_eq!(dev.resource_count(), 0);
}

#[test]
fn absurd_alignments_are_errors() {
    let dev = Device::new(());
    for align in [0, 3, 24, 8192, 1 << 40] {
        assert_eq!(
            dev.kmalloc_aligned(8, align).unwrap_err(),
            Error::InvalidAlignment { align }
        );
    }
    assert_eq!(dev.resource_count(), 0);
    // Small alignments are raised to the default 16.
    let m = dev.kzalloc_aligned(8, 1).unwrap();
    assert_eq!(m.get(&dev).unwrap().as_ptr() as usize % 16, 0);
}

#[test]
fn a_handle_of_another_device_is_an_error_and_changes_nothing() {
    let a = Device::with_name("a", ());
    let b = Device::with_name("b", ());
    let ma = a.alloc(5u32).unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let ha = a
        .add_action_named("a", move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    let _mb = b.alloc(6u32).unwrap();
    let err = ma.get(&b).unwrap_err();
    assert_eq!(
        err,
        Error::ForeignHandle {
            handle_list: a.list_id(),
            list: b.list_id()
        }
    );
    assert!(matches!(b.kfree(ma), Err(Error::ForeignHandle { .. })));
    assert!(matches!(
        b.release_action(ha),
        Err(Error::ForeignHandle { .. })
    ));
    assert_eq!(a.resource_count(), 2, "a's entries untouched");
    assert_eq!(b.resource_count(), 1);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "the failed release ran nothing"
    );
    drop(b);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "b's release does not run a's action"
    );
    // The handle was consumed by the failed call; the action stays registered until `a` goes.
    drop(a);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

/// A value that counts its drops and allocates nothing itself.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn every_allocation_failure_in_a_scenario_is_clean() {
    // Fault injection: fail the N-th allocation for every N of a full scenario; every API
    // returns an error or runs the `_or_reset` action, nothing leaks, and the device releases
    // everything that was registered exactly once. The scenario also frees early and adds
    // again, so the release must restore age order after slot reuse, which itself allocates
    // (a sort buffer) and falls back to a scan when that fails.
    fn scenario(drops: &Arc<AtomicUsize>, resets: &Arc<AtomicUsize>, arm: Option<usize>) -> usize {
        let dev = Device::with_name("fi", Counted(drops.clone()));
        let mut made = 1; // the driver data
        let mut early = Vec::with_capacity(8);
        if let Some(n) = arm {
            fail_after(n);
        }
        for i in 0..ROUNDS {
            made += 1; // stored, or dropped at once on failure: one drop either way
            if let Ok(m) = dev.alloc(Counted(drops.clone()))
                && i % 2 == 0
            {
                early.push(m);
            }
            // Small blocks come from the device's arena, larger ones from the allocator.
            let _ = dev.kzalloc(if i % 2 == 0 { 32 * i } else { 300 * i });
            let _ = dev.kstrdup("name");
            let captured = Counted(drops.clone());
            made += 1;
            let r = resets.clone();
            let _ = dev.add_action_or_reset_named("reset", move |_| {
                let _keep = &captured;
                r.fetch_add(1, Ordering::SeqCst);
            });
            let big = [i as u64; 8]; // too big to store inline: boxed
            if let Ok(h) = dev.add_action_named("early", move |_| {
                std::hint::black_box(big);
            }) {
                let _ = dev.release_action(h);
            }
            if i == 3 {
                for m in early.drain(..) {
                    dev.kfree(m).unwrap();
                }
            }
        }
        drop(early);
        drop(dev);
        made
    }
    const ROUNDS: usize = 12;
    let drops = Arc::new(AtomicUsize::new(0));
    let resets = Arc::new(AtomicUsize::new(0));
    scenario(&drops, &resets, None); // warm up lazily allocated globals (tracing call sites)
    let mut n = 0;
    loop {
        drops.store(0, Ordering::SeqCst);
        resets.store(0, Ordering::SeqCst);
        let before = live_bytes();
        let made = scenario(&drops, &resets, Some(n));
        let failed = FAIL_IN.with(|f| f.get()).is_none();
        no_failures();
        assert_eq!(live_bytes(), before, "leak when failing allocation #{n}");
        assert_eq!(drops.load(Ordering::SeqCst), made, "drops at failure #{n}");
        assert_eq!(
            resets.load(Ordering::SeqCst),
            ROUNDS,
            "every _or_reset action ran once (#{n})"
        );
        if !failed {
            break; // the scenario made fewer than n allocations: every position covered
        }
        n += 1;
    }
    assert!(n > 20, "the scenario exercised only {n} failure points");
}

#[test]
fn blocks_of_u32_max_elements_or_more_work_and_fail_cleanly() {
    // A slot stores a block's length in 32 bits; longer blocks keep it in a separate header
    // (one more allocation, which can fail). Zero-sized elements make such a block free.
    let n = u32::MAX as usize + 7;
    let units = vec![(); n];
    let dev = Device::new(());
    let _warm = dev.kmemdup(&units[..1]).unwrap(); // tables made
    let w = dev.kmemdup(&units[..2]).unwrap(); // lazily made globals (trace call sites)
    dev.kfree(w).unwrap();
    let before = live_bytes();
    let m = dev.kmemdup(&units).unwrap();
    assert_eq!(m.get(&dev).unwrap().len(), n);
    let snapshot = dev.snapshot();
    assert_eq!(
        (snapshot[0].size(), snapshot[0].type_name()),
        (0, Some("()"))
    );
    drop(snapshot);
    dev.kfree(m).unwrap();
    assert_eq!(live_bytes(), before, "header freed");
    let mut before = before;
    for round in 0..2 {
        fail_after(0); // the header
        let r = dev.kmemdup(&units);
        no_failures();
        assert!(matches!(r, Err(Error::OutOfMemory { .. })), "{r:?}");
        assert_eq!(dev.resource_count(), 1);
        if round == 0 {
            before = live_bytes(); // the failure trace's lazily made globals
        } else {
            assert_eq!(live_bytes(), before, "nothing leaked");
        }
    }
    // Released with the list too (and through a bulk release of a real allocation, when the
    // machine lets us reserve more than 4 GiB of address space).
    let _kept = dev.kmemdup(&units).unwrap();
    if !cfg!(miri)
        && let Ok(mut big) = dev.kmalloc(u32::MAX as usize + 1)
    {
        assert_eq!(big.get_mut(&dev).unwrap().len(), u32::MAX as usize + 1);
        assert_eq!(dev.snapshot()[0].size(), u32::MAX as usize + 1);
    }
    drop(dev);
    assert!(live_bytes() <= before, "everything freed with the device");
}

#[test]
fn every_allocation_of_a_growing_list_can_fail_and_the_list_stays_intact() {
    // 60 entries: every third a 64-byte block (all from one call site), the others actions
    // with distinct names (one site each). The list's arena opens its headerless first chunk,
    // then a second one (the 17th block); its slot table fills chunk 0, then allocates the
    // directory and chunk 1 (the 17th entry) and chunk 2 (the 49th); its site table fills the
    // inline sites, then the spill (the 5th site, growing after) and builds the map (the
    // 33rd). Run `r` fails the `r`-th allocation made by the adds, until a run sees none:
    // every point of growth fails once.
    static NAMES: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const N: usize = 60;
    let ran = Arc::new(AtomicUsize::new(0));
    for run in 0.. {
        let start = live_bytes();
        let dev = Device::new(());
        let mut blocks = Vec::with_capacity(N);
        let mut actions = 0;
        let mut failed = Vec::with_capacity(N);
        // Nothing below allocates but the adds (the closures capture one word: stored inline).
        fail_after(run);
        for (i, name) in (0..N).map(|i| (i, &NAMES[i..=i])) {
            let ran = ran.clone();
            let r = if i % 3 == 0 {
                dev.kzalloc(64).map(|b| blocks.push(b))
            } else {
                dev.add_action_named(name, move |_| {
                    ran.fetch_add(1, Ordering::SeqCst);
                })
                .map(|_| actions += 1)
            };
            match r {
                Ok(()) => {}
                Err(Error::OutOfMemory { .. }) => failed.push(i),
                Err(e) => panic!("run {run}, entry {i}: {e:?}"),
            }
        }
        let fired = FAIL_IN.with(|f| f.get()).is_none();
        no_failures();
        assert_eq!(failed.len(), usize::from(fired), "run {run}: {failed:?}");
        assert_eq!(
            dev.resource_count(),
            N - failed.len(),
            "a failed add changes nothing"
        );
        for b in &blocks {
            assert_eq!(b.get(&dev).unwrap(), &[0u8; 64][..]);
        }
        let before = ran.load(Ordering::SeqCst);
        drop((blocks, failed));
        drop(dev);
        assert_eq!(
            ran.load(Ordering::SeqCst) - before,
            actions,
            "every action ran once"
        );
        assert_eq!(live_bytes(), start, "run {run}: nothing leaked");
        if !fired {
            // Arena chunks 0 and 1; slot chunks 0, 1, 2 and the directory; the spill (made,
            // then grown 3 times) and the map (its table, its box, then grown).
            assert!(run >= 13, "the adds made only {run} allocations");
            break;
        }
    }
}
