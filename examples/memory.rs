//! Memory per managed entry, measured with a counting global allocator.
//!
//! Adds 1,000,000 managed 64-byte allocations (then, on a fresh device, 1,000,000 actions
//! capturing one word) and reports the bytes requested from the allocator and still held, per
//! entry, before the device is dropped; the same for the floors (`Box<[u8; 64]>` in a `Vec`,
//! `Box<dyn FnOnce()>` in a `Vec`). "Bookkeeping" is what is held beyond the user's 64 bytes
//! (for actions: everything, since the captured word lives in the entry). "Amortised" is the
//! slope between 1,000,000 and 4,000,000 entries: what one more entry costs, without the
//! device itself and the unused tail of the last chunk, which a count of 1,000,000 happens to
//! catch at some fill level.
//!
//! Run: `cargo run --release --example memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's promises are passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's promises are passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's promises are passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: the caller's promises are passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: usize = 1_000_000;
/// The larger count of the amortised figure.
const N_LARGE: usize = 4 * N;

/// Bytes held after `f` built `n` entries (what `f` returns is kept alive until measured).
fn held<R>(n: usize, f: impl Fn(usize) -> R) -> isize {
    let before = LIVE.load(Ordering::Relaxed);
    let kept = f(n);
    let after = LIVE.load(Ordering::Relaxed);
    drop(black_box(kept));
    after - before
}

/// Bytes per entry at `N` entries, and amortised: the slope from `N` to `N_LARGE` entries, in
/// which the fixed costs (the device, the unused tail of the last chunk) cancel out.
fn per_entry<R>(f: impl Fn(usize) -> R) -> (f64, f64) {
    let small = held(N, &f);
    let large = held(N_LARGE, &f);
    (
        small as f64 / N as f64,
        (large - small) as f64 / (N_LARGE - N) as f64,
    )
}

fn main() {
    let (floor_alloc, _) = per_entry(|n| {
        let mut v: Vec<Box<[u8; 64]>> = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(Box::new([0; 64]));
        }
        v
    });
    let (drmm_alloc, drmm_alloc_slope) = per_entry(|n| {
        let dev = drmm::Device::new(());
        for _ in 0..n {
            let _ = black_box(dev.kzalloc(64).expect("allocation failed"));
        }
        dev
    });
    let (floor_action, _) = per_entry(|n| {
        let mut v: Vec<Box<dyn FnOnce()>> = Vec::with_capacity(n);
        for i in 0..n {
            v.push(Box::new(move || {
                black_box(i);
            }));
        }
        v
    });
    let (drmm_action, drmm_action_slope) = per_entry(|n| {
        let dev = drmm::Device::new(());
        for i in 0..n {
            let _ = dev
                .add_action_named("word_action", move |_| {
                    black_box(i);
                })
                .expect("allocation failed");
        }
        dev
    });
    println!("bytes requested from the allocator and held, per entry, at {N} entries, and");
    println!("amortised (the slope from {N} to {N_LARGE} entries: fixed costs cancel out)");
    println!("(kernel: 40-byte header per drmres; a 64-byte drmm_kzalloc is a 104-byte");
    println!(" kmalloc-128 object, an action a 56-byte kmalloc-64 object)");
    println!();
    println!("| entry | floor | drmm | drmm bookkeeping | amortised bookkeeping | kernel |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| managed 64-byte allocation | {floor_alloc:.1} (`Box<[u8; 64]>` + `Vec` slot) | {drmm_alloc:.2} | {:.2} | {:.3} | 128 (slab object; 40 header) |",
        drmm_alloc - 64.0,
        drmm_alloc_slope - 64.0
    );
    println!(
        "| action capturing one word | {floor_action:.1} (`Box<dyn FnOnce()>` + `Vec` slot) | {drmm_action:.2} | {drmm_action:.2} | {drmm_action_slope:.3} | 64 (slab object; 40 header) |"
    );
}
