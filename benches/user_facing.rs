//! W7–W9: what a driver pays per hardware access, what an unplug or an unbind costs the thread
//! that triggers it, and whether independent devices scale (header of `workloads.rs`).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use criterion::Criterion;

use super::kernel_model::{self, Gate};
use super::{Id, W4_ALLOCS, W4_DEVICES, new_group, register, run_threads, scaled, share};

/// W7: accesses per iteration (all threads together).
const W7_OPS: usize = 2_000_000;
/// W8a: unplugs (or write locks) timed per reader load and id.
const W8A_TRIALS: usize = 400;
/// W8a: loop iterations each reader has done before the timed call starts.
const W8A_READER_WARMUP: usize = 1_000;
/// W8b: live `Devres` values of the unbound binding.
const W8B_SIZES: [usize; 4] = [1, 10, 100, 1_000];
/// W8b: separate revocations of the baseline.
const W8B_BASELINE: usize = 1_000;

/// A driver with nothing to probe: W8b's bindings.
struct Nop;

impl drmm::Driver for Nop {
    type Data = ();
    fn probe(&self, _: &mut drmm::Bound<'_>) -> drmm::Result<()> {
        Ok(())
    }
}

/// W7: registers `"{id}-{threads}t"`; thread `t` calls `read(&state, t)` (one access, returning
/// the word read) for its share of the accesses. Timed: from the start barrier until all
/// threads are done.
fn bench_w7<S: Sync>(
    g: &mut super::Group<'_>,
    id: &str,
    threads: usize,
    state: &S,
    read: impl Fn(&S, usize) -> u64 + Sync,
) {
    let n = scaled(W7_OPS);
    register(g, Id::Plain(format!("{id}-{threads}t")), n, || {
        run_threads(threads, |t| {
            for _ in 0..share(n, threads, t).len() {
                black_box(read(black_box(state), t));
            }
        })
    });
}

pub(super) fn w7(c: &mut Criterion) {
    let mut g = new_group(c, "W7");
    let word: u64 = 0x5eed;
    let rwlock = RwLock::new(word);
    let gate = Gate::new(2);
    let bus = drmm::Bus::new("bench");
    let pdev = bus.add_device("w7.0");
    pdev.bind(Arc::new(Nop)).expect("bind");
    let devres = pdev
        .with_bound(|b| drmm::Devres::new(b, word))
        .expect("bound")
        .expect("devres");
    for threads in [1, 2] {
        bench_w7(&mut g, "floor", threads, &word, |w, _| *w);
        bench_w7(&mut g, "rwlock", threads, &rwlock, |l, _| {
            *l.read().expect("not poisoned")
        });
        bench_w7(&mut g, "kernel-model", threads, &gate, |gate, t| {
            kernel_model::srcu_read(gate, t, &word).expect("not unplugged")
        });
        bench_w7(&mut g, "drmm", threads, &devres, |d, _| {
            *d.try_access().expect("not revoked")
        });
    }
    g.finish();
    drop(devres);
    pdev.unbind().expect("unbind");
}

/// W8a, one sample: `readers` threads run `read()` in a loop until it returns `false`; once
/// each has looped [`W8A_READER_WARMUP`] times, `write()` is timed; then `stop()` lets the
/// readers finish.
fn one_w8a(
    readers: usize,
    read: impl Fn() -> bool + Sync,
    write: impl FnOnce(),
    stop: impl FnOnce(),
) -> Duration {
    let warm = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..readers {
            let (warm, read) = (&warm, &read);
            s.spawn(move || {
                let mut n = 0usize;
                while read() {
                    n += 1;
                    if n == W8A_READER_WARMUP {
                        warm.fetch_add(1, Ordering::Release);
                    }
                }
                if n < W8A_READER_WARMUP {
                    warm.fetch_add(1, Ordering::Release);
                }
            });
        }
        while warm.load(Ordering::Acquire) < readers {
            std::hint::spin_loop();
            std::thread::yield_now();
        }
        let t0 = Instant::now();
        write();
        let elapsed = t0.elapsed();
        stop();
        elapsed
    })
}

/// Median and 99th percentile (nearest rank) of `samples`, in ns.
fn median_p99(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| {
        // Counts are small: the float round trip is exact.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1].as_secs_f64() * 1e9
    };
    (at(0.5), at(0.99))
}

/// W8a: `unplug()` latency under 0, 1, 2 reader threads looping through the gate, beside an
/// `RwLock` write under readers looping through `read()`. Not a criterion group (criterion
/// reports means and medians of batches, not the distribution of single calls): prints the
/// median and p99 of [`W8A_TRIALS`] (scaled) single timed calls per row, and writes them to
/// `$DRMM_BENCH_OUT/W8a.tsv` for `scripts/bench`.
pub(super) fn w8a() {
    let trials = scaled(W8A_TRIALS).max(20);
    let word: u64 = 0x5eed;
    let mut rows = Vec::new();
    for readers in [0, 1, 2] {
        let mut rw = Vec::with_capacity(trials);
        let mut unplug = Vec::with_capacity(trials);
        // A few untimed rounds first (thread start-up, the allocator, the gate's slots).
        for round in 0..trials + 5 {
            let lock = RwLock::new(word);
            let stop = AtomicBool::new(false);
            let t = one_w8a(
                readers,
                || {
                    black_box(*lock.read().expect("not poisoned"));
                    !stop.load(Ordering::Relaxed)
                },
                || drop(black_box(lock.write().expect("not poisoned"))),
                || stop.store(true, Ordering::Relaxed),
            );
            let dev = drmm::Device::new(word);
            dev.register().expect("register");
            let u = one_w8a(
                readers,
                || match dev.enter() {
                    Some(inside) => {
                        black_box(*dev.data());
                        drop(inside);
                        true
                    }
                    None => false,
                },
                || assert!(dev.unplug(), "unplugged once"),
                || (),
            );
            if round >= 5 {
                rw.push(t);
                unplug.push(u);
            }
        }
        rows.push((format!("rwlock-write-{readers}t"), median_p99(rw)));
        rows.push((format!("drmm-unplug-{readers}t"), median_p99(unplug)));
    }
    println!();
    println!("W8a: ns for the call to return, {trials} single timed calls per row");
    println!("workload  id                    median        p99");
    let mut tsv = String::new();
    for (id, (median, p99)) in &rows {
        println!("W8a       {id:<20} {median:>8.0}  {p99:>9.0}");
        tsv.push_str(&format!("W8a\t{id}\t{median:.1}\t{p99:.1}\t{trials}\n"));
    }
    println!();
    if let Some(dir) = std::env::var_os("DRMM_BENCH_OUT") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("DRMM_BENCH_OUT is a writable directory");
        std::fs::write(dir.join("W8a.tsv"), tsv).expect("writing W8a.tsv");
    }
}

/// W8b: the unbind of a binding holding `n` live `Devres<u64>` values (no readers), and the
/// baseline: [`W8B_BASELINE`] `Revocable`s on one domain, each revoked on its own (one grace
/// period each, the Rust-for-Linux pattern). One element = one unbind, or the whole baseline.
pub(super) fn w8b(c: &mut Criterion) {
    let mut g = new_group(c, "W8b");
    let bus = drmm::Bus::new("bench");
    let pdev = bus.add_device("w8b.0");
    let domain = Arc::new(drmm::revoke::grace::Domain::new());
    register(
        &mut g,
        Id::Plain(format!("revoke-each-{W8B_BASELINE}")),
        1,
        || {
            let values: Vec<_> = (0..W8B_BASELINE as u64)
                .map(|i| drmm::revoke::Revocable::new_in(i, domain.clone()))
                .collect();
            let t0 = Instant::now();
            for v in &values {
                assert!(v.revoke(), "revoked once");
            }
            let elapsed = t0.elapsed();
            drop(values);
            elapsed
        },
    );
    for n in W8B_SIZES {
        register(&mut g, Id::Param("drmm-unbind".into(), n), 1, || {
            pdev.bind(Arc::new(Nop)).expect("bind");
            let values = pdev
                .with_bound(|b| {
                    (0..n as u64)
                        .map(|i| drmm::Devres::new(b, i).expect("devres"))
                        .collect::<Vec<_>>()
                })
                .expect("bound");
            let t0 = Instant::now();
            pdev.unbind().expect("unbind");
            let elapsed = t0.elapsed();
            assert!(values.iter().all(drmm::Devres::is_revoked));
            drop(values);
            elapsed
        });
    }
    g.finish();
}

/// W9: W4's device churn, all devices split over 1 or 2 threads, each thread on its own
/// devices. Timed: from the start barrier until every thread is done.
fn bench_w9(g: &mut super::Group<'_>, id: &str, threads: usize, cycle: impl Fn() + Sync) {
    let devices = scaled(W4_DEVICES);
    register(g, Id::Plain(format!("{id}-{threads}t")), devices, || {
        run_threads(threads, |t| {
            for _ in share(devices, threads, t) {
                cycle();
            }
        })
    });
}

pub(super) fn w9(c: &mut Criterion) {
    let mut g = new_group(c, "W9");
    for threads in [1, 2] {
        bench_w9(&mut g, "floor", threads, || {
            let boxes: [Box<[u8; 64]>; W4_ALLOCS] = std::array::from_fn(|_| Box::new([0; 64]));
            drop(black_box(boxes));
        });
        bench_w9(&mut g, "drmm", threads, || {
            let dev = drmm::Device::new(());
            for _ in 0..W4_ALLOCS {
                let _ = black_box(dev.kzalloc(64).expect("allocation failed"));
            }
            drop(dev);
        });
    }
    g.finish();
}
