//! W10: bytes held by an idle logical device, measured with a counting global allocator (exact,
//! not timed, so it is its own benchmark target: the counter would slow the timed workloads).
//!
//! Rows (`W10`, id, bytes):
//!
//! * `drmm/0`: `Device::new(())` that nothing has entered: the device's allocation.
//! * `drmm-registered/0`: the same after `register()` (which makes the gate's per-thread
//!   counters) and one `enter()`: what a device in service holds with no entries.
//! * `drmm/16`: the idle device after 16 `kzalloc(64)`, user bytes (16 × 64) subtracted: the
//!   device plus the bookkeeping of its entries.
//! * `kernel/0`, `kernel/16`: the kernel's counterpart, constants derived below.
//!
//! The kernel's counterpart of `LogicalDevice<()>` is not the whole `struct drm_device` (which
//! also embeds the mode-setting state, `struct drm_mode_config`, several mutexes and lists that
//! drmm has no part of) but the fields that do what drmm's device does, on x86-64 without lock
//! debugging: `ref` (a `kref`, 4 bytes), `managed` (a `list_head` of 16 bytes, the
//! `final_kfree` pointer, 8, and a `spinlock_t`, 4, padded to 32), `registered` and
//! `unplugged` (a `bool` each), `open_count` (an `atomic_t`, 4), `unique` (the name pointer,
//! 8) and `dev_private` (8): 58 bytes, 64 with the structure's 8-byte alignment. The unplug gate
//! costs no bytes per device: `drm_dev_enter` reads one global SRCU domain shared by every DRM
//! device. Each `drmm_kzalloc(64)` is a node of a 40-byte header and the 64 payload bytes,
//! served from the kmalloc-128 cache: 64 bytes of bookkeeping per entry, 16 × 64 = 1,024 for
//! sixteen, so `kernel/16` = 64 + 1,024.
//!
//! Run: `cargo bench -p drmm-bench --bench device_bytes` (`scripts/bench` runs it and puts the
//! rows in its table). With `DRMM_BENCH_OUT` set, the rows are also written to
//! `$DRMM_BENCH_OUT/W10.tsv`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static BLOCKS: AtomicIsize = AtomicIsize::new(0);

fn count(bytes: isize, blocks: isize) {
    LIVE.fetch_add(bytes, Ordering::Relaxed);
    BLOCKS.fetch_add(blocks, Ordering::Relaxed);
}

// Sizes are far below isize::MAX.
#[allow(clippy::cast_possible_wrap)]
// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize, 1);
        // SAFETY: the caller's promises are passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize, 1);
        // SAFETY: the caller's promises are passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize), -1);
        // SAFETY: the caller's promises are passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize, 0);
        // SAFETY: the caller's promises are passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Kernel counterpart of an empty device (header of this file).
const KERNEL_EMPTY: isize = 64;
/// Kernel bookkeeping of one `drmm_kzalloc(64)`: a kmalloc-128 object minus the payload.
const KERNEL_PER_ALLOC: isize = 128 - 64;
/// Entries of the non-empty device.
const ENTRIES: usize = 16;

/// Bytes and blocks held after `build` ran (what it returns is kept until measured).
fn held<R>(build: impl FnOnce() -> R) -> (isize, isize) {
    let (b0, n0) = (LIVE.load(Ordering::Relaxed), BLOCKS.load(Ordering::Relaxed));
    let kept = build();
    let (b1, n1) = (LIVE.load(Ordering::Relaxed), BLOCKS.load(Ordering::Relaxed));
    drop(black_box(kept));
    (b1 - b0, n1 - n0)
}

fn main() {
    // Warm-up: the first device counts the CPUs and this thread takes its gate slot; neither
    // is per device.
    {
        let dev = drmm::Device::new(());
        dev.register().expect("register");
        drop(dev.enter());
        let _ = dev.kzalloc(64).expect("allocation");
    }
    let empty = held(|| drmm::Device::new(()));
    let registered = held(|| {
        let dev = drmm::Device::new(());
        dev.register().expect("register");
        drop(dev.enter());
        dev
    });
    let sixteen = held(|| {
        let dev = drmm::Device::new(());
        let handles: Vec<_> = (0..ENTRIES)
            .map(|_| dev.kzalloc(64).expect("allocation"))
            .collect();
        // The handles are the caller's, not the device's: not counted.
        std::mem::forget(handles);
        dev
    });
    let handles_vec = isize::try_from(ENTRIES * size_of::<drmm::Managed<[u8]>>()).expect("small");
    let user = isize::try_from(ENTRIES * 64).expect("small");
    let entries = isize::try_from(ENTRIES).expect("small");
    let rows = [
        ("drmm/0", empty.0, empty.1),
        ("drmm-registered/0", registered.0, registered.1),
        ("drmm/16", sixteen.0 - handles_vec - user, sixteen.1 - 1),
        ("kernel/0", KERNEL_EMPTY, 1),
        (
            "kernel/16",
            KERNEL_EMPTY + entries * KERNEL_PER_ALLOC,
            1 + entries,
        ),
    ];
    println!("W10: bytes an idle logical device holds (requested from the allocator; for 16");
    println!(
        "entries, without the 16 x 64 user bytes); kernel: derived in benches/device_bytes.rs"
    );
    println!();
    println!("workload  id                  bytes  allocations");
    let mut tsv = String::new();
    for (id, bytes, blocks) in rows {
        println!("W10       {id:<18} {bytes:>6}  {blocks:>11}");
        tsv.push_str(&format!("W10\t{id}\t{bytes}\t{blocks}\n"));
    }
    println!();
    println!(
        "size_of::<LogicalDevice<()>>() = {}",
        size_of::<drmm::LogicalDevice<()>>()
    );
    if let Some(dir) = std::env::var_os("DRMM_BENCH_OUT") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("DRMM_BENCH_OUT is a writable directory");
        std::fs::write(dir.join("W10.tsv"), tsv).expect("writing W10.tsv");
    }
}
