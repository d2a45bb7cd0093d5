//! What recording costs: allocations and time per recorded event, with the trace recorder
//! writing to `io::sink` (no disk) on W1's workload (managed 64-byte allocations, then the
//! release of all of them).
//!
//! `cargo run --release --example record_cost [ALLOCATIONS]` (default 200,000). The time is a
//! rough single run; `cargo bench` (group `REC`) measures it properly.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

/// The system allocator, counting allocations while `COUNTING` is set.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; counting has no effect on
// the memory returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's promises for `layout` are passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as for `dealloc`, and the caller's promises for `new_size` are passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// W1 on a fresh device: `n` allocations, then the release of all; returns (allocations made,
/// seconds).
fn w1(n: usize) -> (usize, f64) {
    let dev = drmm::Device::new(());
    ALLOCATIONS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    for _ in 0..n {
        let _ = black_box(dev.kzalloc(64).expect("allocation failed"));
    }
    drop(dev);
    let secs = t0.elapsed().as_secs_f64();
    COUNTING.store(false, Ordering::Relaxed);
    (ALLOCATIONS.load(Ordering::Relaxed), secs)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 200_000,
    };
    let (plain_allocs, plain_secs) = w1(n);

    let (layer, guard) = drmm::trace::RecordLayer::new(std::io::sink())?;
    let only_drmm = tracing_subscriber::filter::filter_fn(|m| m.target() == drmm::trace::TARGET);
    let subscriber = tracing_subscriber::registry().with(layer.with_filter(only_drmm));
    let ((rec_allocs, rec_secs), (warm_allocs, _)) =
        tracing::subscriber::with_default(subscriber, || {
            let warm = w1(16); // the thread's buffers and the call sites' first use
            (w1(n), warm)
        });
    guard.finish()?;

    let events = 2 * n + 3; // ADD and REL per allocation; LAST_REF, RELEASE_BEGIN, RELEASE_END
    #[allow(clippy::cast_precision_loss)]
    let per_event = |x: f64| x / events as f64;
    println!("W1 with {n} allocations, {events} recorded events");
    println!(
        "  not recording: {plain_allocs} allocations, {:.1} ns per allocation",
        plain_secs * 1e9 / n as f64
    );
    println!(
        "  recording:     {rec_allocs} allocations ({:.4} per event beyond the workload's), {:.1} ns per event ({:.1} ns beyond the workload's)",
        per_event(rec_allocs.saturating_sub(plain_allocs) as f64),
        per_event(rec_secs * 1e9),
        per_event((rec_secs - plain_secs) * 1e9),
    );
    println!("  first use on a thread: {warm_allocs} allocations for 16 allocations' events");
    Ok(())
}
