//! W7 read-side floor experiment: what the barrier alone costs on this machine, against the
//! `RwLock::read` + unlock that W7 compares `Devres::try_access` with.
//!
//! A reader that pairs with a writer (Dekker: "count myself in, then check the flag" against
//! "clear the flag, then check the counts") needs a full barrier between its store and its
//! load. Three ways of paying it, each with the flag load and the exit store around it, and
//! `RwLock::read` + unlock (two locked read-modify-writes), in one process, three rounds:
//!
//! * `store+fence`: a plain store and `fence(SeqCst)` (what a gate entry on a thread's own
//!   shard does; rustc 1.95 emits `lock or` on the stack for the fence on x86-64, not `mfence`);
//! * `fetch_add SeqCst`: one locked read-modify-write on the counter;
//! * `swap SeqCst`: an exchange (implicitly locked) of the counter.
//!
//! An experiment kept as evidence, outside the crate (not built by cargo, not held to the
//! crate's lints). Build and run: `rustc -O docs/experiments/read_side_floor.rs -o /tmp/rsf && /tmp/rsf`.
//!
//! Result on the 2-vCPU AMD EPYC VM (2026-12-05): store+fence 2.0–2.1 ns, fetch_add 4.1–4.2,
//! swap 2.2–2.7, `RwLock` read 4.8–5.6 ns. The barrier alone is 0.42 × the `RwLock` read, so
//! W7's bar of 0.5 leaves about 0.4 ns for finding the thread's shard, the phase, the
//! `available` check and the exit.
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*, fence};
use std::time::Instant;

static C: AtomicUsize = AtomicUsize::new(0);
static FLAG: AtomicBool = AtomicBool::new(true);
static L: std::sync::RwLock<usize> = std::sync::RwLock::new(1);

#[inline(never)]
fn store_fence(n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        let v = C.load(Relaxed);
        C.store(v + 1, Relaxed);
        fence(SeqCst);
        ok += FLAG.load(SeqCst) as usize;
        C.store(v, Release);
    }
    ok
}

#[inline(never)]
fn fetch_add(n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        C.fetch_add(1, SeqCst);
        ok += FLAG.load(SeqCst) as usize;
        let v = C.load(Relaxed);
        C.store(v - 1, Release);
    }
    ok
}

#[inline(never)]
fn swap(n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        let v = C.load(Relaxed);
        C.swap(v + 1, SeqCst);
        ok += FLAG.load(SeqCst) as usize;
        C.store(v, Release);
    }
    ok
}

#[inline(never)]
fn rwlock(n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        ok += *L.read().unwrap();
    }
    ok
}

fn main() {
    let n = 20_000_000;
    let ways: [(&str, fn(usize) -> usize); 4] = [
        ("store+fence", store_fence),
        ("fetch_add SeqCst", fetch_add),
        ("swap SeqCst", swap),
        ("RwLock read", rwlock),
    ];
    for round in 0..3 {
        for (name, f) in ways {
            let t = Instant::now();
            black_box(f(black_box(n)));
            let ns = t.elapsed().as_nanos() as f64 / n as f64;
            println!("round {round} {name:18} {ns:.2} ns");
        }
    }
}
