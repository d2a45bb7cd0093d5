//! Criterion benchmarks of the standard workloads W1–W9 (docs/architecture.md, "Standard
//! workloads"); W7–W9 are in `user_facing.rs`, W10 (bytes, not time) in `device_bytes.rs`.
//!
//! Groups are named `W1` … `W6`; ids are `floor…` (plain Rust, the cost floor), `kernel-model…`
//! (the seed patch's algorithm re-derived in `kernel_model/`) and, later, `drmm…` (the library).
//!
//! # Time per element
//!
//! Every benchmark uses `iter_custom`: one criterion *iteration* is one complete instance of the
//! workload (for W1: 1,000,000 allocations, then the release of all of them), and only the part
//! named "timed" below is inside the timer; the rest (device creation, pre-sizing a `Vec`,
//! building the state to free, the shuffle, thread start-up) runs outside it. Each benchmark sets
//! `Throughput::Elements(count)` with the number of elements of one iteration, so
//! `target/criterion/<group>/<id>/new/estimates.json` holds **ns per iteration** and
//! `new/benchmark.json` holds the element count: `scripts/bench` reports
//! `median.point_estimate / Elements` = **ns per element**. (Criterion's console shows the same
//! as `thrpt` in elements/s.) All groups use `SamplingMode::Flat` (one iteration takes
//! milliseconds).
//!
//! | group | element | count per iteration (× `DRMM_BENCH_SCALE`) | timed |
//! |---|---|---|---|
//! | W1 | one managed 64-byte allocation | 1,000,000 | all allocations + release of all (last reference dropped); device created untimed. `drmm-filtered`: the same with a `tracing` subscriber installed whose filter turns the `drmm` target off |
//! | W2 | one release action (one captured word) | 1,000,000 | all registrations + release of all (each action runs) |
//! | W3 | one early free | 20,000 / 200,000 (ids keep the nominal N) | only the frees, in a fixed-seed random order; the allocations and the shuffle are untimed |
//! | W4 | one device lifecycle: create, 16 managed 64-byte allocations, drop the last reference | 50,000 | everything |
//! | W5 | one release action | 1,000,000 split evenly over 1 or 2 threads | from the start barrier until every thread has added its share, plus the release of all (on the main thread); thread spawn is untimed |
//! | W6 | one gate enter + exit pair | 2,000,000 split evenly over 1 or 2 threads | from the start barrier until every thread is done |
//! | W7 | one access: `Devres::try_access` + read one word + drop the guard (`drmm`); a plain read through `&u64` (`floor`); `RwLock::read` (`rwlock`); the kernel model's SRCU read, `drm_dev_enter` + read + `drm_dev_exit` (`kernel-model`) | 2,000,000 split evenly over 1 or 2 threads, all on one value | from the start barrier until every thread is done |
//! | W8a | one `unplug()` under 0, 1, 2 reader threads looping enter + read + exit (`drmm-unplug-Nt`); one `RwLock` write lock + unlock under readers looping `read()` (`rwlock-write-Nt`) | 400 single calls per row (not criterion: median and p99 of single calls) | the call alone, once every reader has looped 1,000 times |
//! | W8b | one unbind of a binding holding 1, 10, 100, 1,000 live `Devres<u64>` (`drmm-unbind/N`); the baseline, 1,000 `Revocable`s on one domain each revoked on its own, one grace period each (`revoke-each-1000`) | 1 | the unbind (or the 1,000 revocations); bind and the values' creation are untimed |
//! | W9 | one W4 device lifecycle | 50,000 split evenly over 1 or 2 threads, each thread on its own devices | from the start barrier until every thread is done |
//! | REC | one recorded event | 2 × 200,000 (W1's allocations and releases, each one `ADD` and one `REL`) | W1 with the trace recorder (`drmm::trace::RecordLayer`, writing to `io::sink`) on for this thread; the device is created untimed |
//!
//! Multi-threaded times are wall-clock for the whole batch divided by the total number of
//! elements over all threads, i.e. cost per element *as seen by throughput*: a perfectly
//! scalable 2-thread run has half the 1-thread time per element; `drmm-2t ≤ 0.5 × floor-2t` in
//! W6 means twice the gate throughput of one shared `AtomicUsize` hammered by both threads. The
//! 1-thread variants run on one spawned worker too (same barrier protocol), so `-1t` and `-2t`
//! differ only in the split.
//!
//! W3's `kernel-model` runs for N = 20,000 only: its early free is a linear scan (quadratic in
//! total). W5 has no floor of its own: its guard compares each `-2t` with the same code's `-1t`;
//! W9's target compares the same way (its floor's own 2t/1t shows what the machine gives).
//! W6 `kernel-model` is the kernel's gate: an SRCU read section on a global domain, whose read
//! side is per-CPU counters with full barriers (see `kernel_model::Gate`), then a load of the
//! `unplugged` flag; per-CPU is modelled as one cache-padded slot per thread.
//!
//! W1's `drmm` id is the library as built by default, i.e. with the trace recorder (feature
//! `record`) compiled in but not recording; `drmm-record-off` adds a subscriber whose
//! recording layer is filtered off. REC's `drmm-recorded` is the cost of recording: ns per
//! recorded event, the allocation itself included (subtract half of W1 `drmm` per element
//! for the recorder alone); `examples/record_cost.rs` counts the allocations per event.
//!
//! # Knobs
//!
//! * `DRMM_BENCH_SCALE` (default 1.0) multiplies every count above (e.g. 0.1 for a smoke test).
//! * Criterion defaults set here: sample size 10, warm-up 1 s, measurement 3 s; the usual
//!   command-line flags (`--warm-up-time`, `--measurement-time`, `--sample-size`, a filter)
//!   override them. `scripts/bench` runs everything and prints one table.
//!
//! # Adding the `drmm` ids
//!
//! Each group function has one marked place (`ADD drmm HERE`) where one call of that group's
//! `bench_wN` function registers the library's version; that function owns timing and
//! throughput.

mod kernel_model;
mod user_facing;

use std::hint::black_box;
use std::ops::Range;
use std::ptr::{self, NonNull};
use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};

use kernel_model::{Dev, Gate};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

type Group<'a> = BenchmarkGroup<'a, WallTime>;

// ---------------------------------------------------------------------------------------------
// Sizes
// ---------------------------------------------------------------------------------------------

/// W1, W2, W5: resources per iteration.
const N_RESOURCES: usize = 1_000_000;
/// W3: the two list sizes (nominal; ids keep these even when scaled).
const W3_SIZES: [usize; 2] = [20_000, 200_000];
/// W3: the largest N for which `kernel-model` runs (its early free is O(N) per free).
const W3_KERNEL_MODEL_MAX: usize = 20_000;
/// W4: device lifecycles per iteration, and managed allocations per device.
const W4_DEVICES: usize = 50_000;
const W4_ALLOCS: usize = 16;
/// W6: gate enter + exit pairs per iteration (all threads together).
const W6_OPS: usize = 2_000_000;
/// REC: allocations per iteration (each is recorded twice: `ADD` and `REL`).
const REC_ALLOCS: usize = 200_000;
/// Seed of the W3 shuffle.
const W3_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// `DRMM_BENCH_SCALE`, default 1.0.
fn scale() -> f64 {
    match std::env::var("DRMM_BENCH_SCALE") {
        Ok(s) => match s.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => v,
            _ => panic!("DRMM_BENCH_SCALE must be a positive number, got {s:?}"),
        },
        Err(_) => 1.0,
    }
}

/// `n × DRMM_BENCH_SCALE`, at least 1.
fn scaled(n: usize) -> usize {
    // Counts are far below 2^52: the float round trip is exact enough.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let v = (n as f64 * scale()).round() as usize;
    v.max(1)
}

// ---------------------------------------------------------------------------------------------
// Code shared by the groups
// ---------------------------------------------------------------------------------------------

/// A benchmark id: plain (`floor`) or with a parameter (`floor/20000`).
enum Id {
    Plain(String),
    Param(String, usize),
}

/// Registers `id` in `g` with `elements` elements per iteration; `one()` runs one instance of
/// the workload and returns the time of its timed part.
fn register(g: &mut Group<'_>, id: Id, elements: usize, mut one: impl FnMut() -> Duration) {
    g.throughput(Throughput::Elements(elements as u64));
    let routine = |b: &mut criterion::Bencher<'_>| {
        b.iter_custom(|iters| (0..iters).map(|_| one()).sum::<Duration>());
    };
    match id {
        Id::Plain(name) => g.bench_function(name, routine),
        Id::Param(name, p) => g.bench_function(BenchmarkId::new(name, p), routine),
    };
}

/// Range of the `t`-th of `threads` equal shares of `0..n`.
fn share(n: usize, threads: usize, t: usize) -> Range<usize> {
    n * t / threads..n * (t + 1) / threads
}

/// Runs `work(thread_index)` on `threads` scoped threads released together by a barrier and
/// returns the wall time from the release until the last thread is done (spawn and join are
/// outside it).
fn run_threads(threads: usize, work: impl Fn(usize) + Sync) -> Duration {
    let start = Barrier::new(threads + 1);
    let end = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (start, end, work) = (&start, &end, &work);
            s.spawn(move || {
                start.wait();
                work(t);
                end.wait();
            });
        }
        start.wait();
        let t0 = Instant::now();
        end.wait();
        t0.elapsed()
    })
}

/// Tiny xorshift64* generator (no `rand` dependency).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-enough index in `0..bound` (bound ≪ 2^64, the modulo bias is negligible).
    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % bound as u64).expect("below bound")
    }
}

/// A fixed-seed Fisher–Yates permutation of `0..n`: W3's free order.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = XorShift(seed | 1);
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        v.swap(i, rng.below(i + 1));
    }
    v
}

/// Rearranges `items` (in allocation order) into free order: the result's `k`-th element is
/// `items[order[k]]`. For W3 setups.
fn in_order<T>(items: Vec<T>, order: &[usize]) -> Vec<T> {
    assert_eq!(items.len(), order.len());
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    order
        .iter()
        .map(|&i| slots[i].take().expect("order is a permutation"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Per-group functions: the one call per id
// ---------------------------------------------------------------------------------------------

/// W1/W2 shape: `setup(n)` (untimed) builds the device or container; `run(state, n)` (timed)
/// creates `n` resources and releases all of them (for a device: by dropping the last
/// reference); whatever `run` returns is dropped untimed.
fn bench_build_release<S, R>(
    g: &mut Group<'_>,
    id: &str,
    n: usize,
    mut setup: impl FnMut(usize) -> S,
    mut run: impl FnMut(S, usize) -> R,
) {
    register(g, Id::Plain(id.to_owned()), n, || {
        let state = setup(n);
        let t0 = Instant::now();
        let rest = run(state, n);
        let elapsed = t0.elapsed();
        drop(rest);
        elapsed
    });
}

/// W1: `run(state, n)` makes `n` managed 64-byte allocations, then releases all.
fn bench_w1<S, R>(
    g: &mut Group<'_>,
    id: &str,
    setup: impl FnMut(usize) -> S,
    run: impl FnMut(S, usize) -> R,
) {
    bench_build_release(g, id, scaled(N_RESOURCES), setup, run);
}

/// W2: `run(state, n)` registers `n` release actions each capturing one word, then releases all.
fn bench_w2<S, R>(
    g: &mut Group<'_>,
    id: &str,
    setup: impl FnMut(usize) -> S,
    run: impl FnMut(S, usize) -> R,
) {
    bench_build_release(g, id, scaled(N_RESOURCES), setup, run);
}

/// W3, one list size: `setup(order)` (untimed) allocates `order.len()` managed 64-byte blocks in
/// index order and returns them arranged in free order (see [`in_order`]); `free_all(state)`
/// (timed) frees them one by one in that order. `state` is dropped untimed.
fn bench_w3<S>(
    g: &mut Group<'_>,
    id: &str,
    nominal_n: usize,
    mut setup: impl FnMut(&[usize]) -> S,
    mut free_all: impl FnMut(&mut S),
) {
    let order = shuffled(scaled(nominal_n), W3_SEED);
    register(g, Id::Param(id.to_owned(), nominal_n), order.len(), || {
        let mut state = setup(&order);
        let t0 = Instant::now();
        free_all(&mut state);
        let elapsed = t0.elapsed();
        drop(state);
        elapsed
    });
}

/// W4: `cycle()` creates a device, makes 16 managed 64-byte allocations and drops the last
/// reference. All timed.
fn bench_w4(g: &mut Group<'_>, id: &str, mut cycle: impl FnMut()) {
    let devices = scaled(W4_DEVICES);
    register(g, Id::Plain(id.to_owned()), devices, || {
        let t0 = Instant::now();
        for _ in 0..devices {
            cycle();
        }
        t0.elapsed()
    });
}

/// W5: registers `"{id}-{threads}t"`. `setup()` (untimed) creates the shared device; each of
/// `threads` threads calls `add(&device, range)` for its share of `0..1,000,000` (each index is
/// the word the action captures); then `release(device)` runs on the main thread. Timed: from
/// the start barrier to the end of `release`.
fn bench_w5<D: Sync>(
    g: &mut Group<'_>,
    id: &str,
    threads: usize,
    mut setup: impl FnMut() -> D,
    add: impl Fn(&D, Range<usize>) + Sync,
    mut release: impl FnMut(D),
) {
    let n = scaled(N_RESOURCES);
    register(g, Id::Plain(format!("{id}-{threads}t")), n, || {
        let device = setup();
        let adding = run_threads(threads, |t| add(&device, share(n, threads, t)));
        let t0 = Instant::now();
        release(device);
        adding + t0.elapsed()
    });
}

/// W6: registers `"{id}-{threads}t"`. `setup(threads)` (untimed) creates the gate; each thread
/// `t` calls `enter_exit(&gate, t, count)`, which must do `count` enter + exit pairs. Timed: from
/// the start barrier until all threads are done.
fn bench_w6<G: Sync>(
    g: &mut Group<'_>,
    id: &str,
    threads: usize,
    mut setup: impl FnMut(usize) -> G,
    enter_exit: impl Fn(&G, usize, usize) + Sync,
) {
    let n = scaled(W6_OPS);
    register(g, Id::Plain(format!("{id}-{threads}t")), n, || {
        let gate = setup(threads);
        run_threads(threads, |t| {
            enter_exit(&gate, t, share(n, threads, t).len())
        })
    });
}

// ---------------------------------------------------------------------------------------------
// The workloads
// ---------------------------------------------------------------------------------------------

/// The release action of W2/W5's kernel model: "a closure capturing one word".
fn word_action(_dev: &Dev, data: *mut ()) {
    black_box(data);
}

/// The word captured by action `i`.
fn word(i: usize) -> *mut () {
    ptr::without_provenance_mut(i)
}

fn new_group<'a>(c: &'a mut Criterion, name: &str) -> Group<'a> {
    let mut g = c.benchmark_group(name);
    g.sampling_mode(SamplingMode::Flat);
    g
}

fn w1(c: &mut Criterion) {
    let mut g = new_group(c, "W1");
    // One `Vec` for all iterations: a fresh multi-megabyte `Vec` per iteration would make
    // glibc consolidate its fast bins between iterations, which the kernel model never triggers.
    let mut boxes: Vec<Box<[u8; 64]>> = Vec::with_capacity(scaled(N_RESOURCES));
    bench_w1(
        &mut g,
        "floor",
        |_| (),
        |(), n| {
            for _ in 0..n {
                boxes.push(Box::new([0; 64]));
            }
            black_box(&mut boxes);
            boxes.clear();
        },
    );
    bench_w1(
        &mut g,
        "kernel-model",
        |_| Dev::new(),
        |dev, n| {
            for _ in 0..n {
                let _ = black_box(dev.kzalloc(64).expect("allocation failed"));
            }
            drop(dev);
        },
    );
    bench_w1(
        &mut g,
        "drmm",
        |_| drmm::Device::new(()),
        |dev, n| {
            for _ in 0..n {
                let _ = black_box(dev.kzalloc(64).expect("allocation failed"));
            }
            drop(dev);
        },
    );
    // "Tracing off" as an application has it: a subscriber is installed (here for this thread)
    // whose filter switches the `drmm` target off. Compare with `drmm` (no subscriber at all).
    let filtered = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info,drmm=off"))
        .with_writer(std::io::sink)
        .finish();
    let dispatch = tracing::Dispatch::new(filtered);
    bench_w1(
        &mut g,
        "drmm-filtered",
        |_| drmm::Device::new(()),
        |dev, n| {
            tracing::dispatcher::with_default(&dispatch, || {
                for _ in 0..n {
                    let _ = black_box(dev.kzalloc(64).expect("allocation failed"));
                }
                drop(dev);
            });
        },
    );
    // The recorder installed but filtered off. (A program whose `init_from_env` found no
    // `DRMM_TRACE` has nothing installed: that is `drmm` above.)
    let (layer, _guard) = drmm::trace::RecordLayer::new(std::io::sink()).expect("sink");
    let off = tracing_subscriber::registry()
        .with(layer.with_filter(tracing_subscriber::filter::filter_fn(|_| false)));
    let dispatch = tracing::Dispatch::new(off);
    bench_w1(
        &mut g,
        "drmm-record-off",
        |_| drmm::Device::new(()),
        |dev, n| {
            tracing::dispatcher::with_default(&dispatch, || {
                for _ in 0..n {
                    let _ = black_box(dev.kzalloc(64).expect("allocation failed"));
                }
                drop(dev);
            });
        },
    );
    g.finish();
    forget_dispatch(dispatch);
}

/// Drops a dispatcher made for one group and has `tracing` recompute its global level from the
/// dispatchers still alive. Without it the level a per-layer filter raised (to every level: it
/// gives no hint) outlives the dispatcher, and every later group pays for events nobody wants.
fn forget_dispatch(dispatch: tracing::Dispatch) {
    drop(dispatch);
    tracing::callsite::rebuild_interest_cache();
}

/// REC: the cost of recording, per recorded event.
fn rec(c: &mut Criterion) {
    let mut g = new_group(c, "REC");
    let (layer, guard) = drmm::trace::RecordLayer::new(std::io::sink()).expect("sink");
    let only_drmm = tracing_subscriber::filter::filter_fn(|m| m.target() == drmm::trace::TARGET);
    let on = tracing_subscriber::registry().with(layer.with_filter(only_drmm));
    let dispatch = tracing::Dispatch::new(on);
    let n = scaled(REC_ALLOCS);
    register(&mut g, Id::Plain("drmm-recorded".into()), 2 * n, || {
        tracing::dispatcher::with_default(&dispatch, || {
            let dev = drmm::Device::new(());
            let t0 = Instant::now();
            for _ in 0..n {
                let _ = black_box(dev.kzalloc(64).expect("allocation failed"));
            }
            drop(dev);
            t0.elapsed()
        })
    });
    guard.finish().expect("writing to a sink does not fail");
    g.finish();
    forget_dispatch(dispatch);
}

fn w2(c: &mut Criterion) {
    let mut g = new_group(c, "W2");
    // One `Vec` for all iterations, as in W1.
    let mut closures: Vec<Box<dyn FnOnce()>> = Vec::with_capacity(scaled(N_RESOURCES));
    bench_w2(
        &mut g,
        "floor",
        |_| (),
        |(), n| {
            for i in 0..n {
                closures.push(Box::new(move || {
                    black_box(i);
                }));
            }
            while let Some(f) = closures.pop() {
                f();
            }
        },
    );
    bench_w2(
        &mut g,
        "kernel-model",
        |_| Dev::new(),
        |dev, n| {
            for i in 0..n {
                assert!(
                    dev.add_action(word_action, word(i), "word_action"),
                    "allocation failed"
                );
            }
            drop(dev);
        },
    );
    bench_w2(
        &mut g,
        "drmm",
        |_| drmm::Device::new(()),
        |dev, n| {
            for i in 0..n {
                let _ = dev
                    .add_action_named("word_action", move |_| {
                        black_box(i);
                    })
                    .expect("allocation failed");
            }
            drop(dev);
        },
    );
    g.finish();
}

fn w3(c: &mut Criterion) {
    let mut g = new_group(c, "W3");
    for n in W3_SIZES {
        bench_w3(
            &mut g,
            "floor",
            n,
            |order| {
                let boxes: Vec<Box<[u8; 64]>> =
                    (0..order.len()).map(|_| Box::new([0; 64])).collect();
                in_order(boxes, order)
            },
            |boxes| {
                for b in boxes.drain(..) {
                    drop(black_box(b));
                }
            },
        );
        if n <= W3_KERNEL_MODEL_MAX {
            bench_w3(
                &mut g,
                "kernel-model",
                n,
                |order| {
                    let dev = Dev::new();
                    let ptrs: Vec<NonNull<u8>> = (0..order.len())
                        .map(|_| dev.kzalloc(64).expect("allocation failed"))
                        .collect();
                    (dev, in_order(ptrs, order))
                },
                |(dev, ptrs)| {
                    for p in ptrs.drain(..) {
                        assert!(dev.kfree(p), "block not found");
                    }
                },
            );
        }
        bench_w3(
            &mut g,
            "drmm",
            n,
            |order| {
                let dev = drmm::Device::new(());
                let handles: Vec<drmm::Managed<[u8]>> = (0..order.len())
                    .map(|_| dev.kzalloc(64).expect("allocation failed"))
                    .collect();
                (dev, in_order(handles, order))
            },
            |(dev, handles)| {
                for h in handles.drain(..) {
                    dev.kfree(h).expect("free failed");
                }
            },
        );
    }
    g.finish();
}

fn w4(c: &mut Criterion) {
    let mut g = new_group(c, "W4");
    bench_w4(&mut g, "floor", || {
        let boxes: [Box<[u8; 64]>; W4_ALLOCS] = std::array::from_fn(|_| Box::new([0; 64]));
        drop(black_box(boxes));
    });
    bench_w4(&mut g, "kernel-model", || {
        let dev = Dev::new();
        for _ in 0..W4_ALLOCS {
            let _ = black_box(dev.kzalloc(64).expect("allocation failed"));
        }
        drop(dev);
    });
    bench_w4(&mut g, "drmm", || {
        let dev = drmm::Device::new(());
        for _ in 0..W4_ALLOCS {
            let _ = black_box(dev.kzalloc(64).expect("allocation failed"));
        }
        drop(dev);
    });
    g.finish();
}

fn w5(c: &mut Criterion) {
    let mut g = new_group(c, "W5");
    for threads in [1, 2] {
        bench_w5(
            &mut g,
            "kernel-model",
            threads,
            Dev::new,
            |dev, range| {
                for i in range {
                    assert!(
                        dev.add_action(word_action, word(i), "word_action"),
                        "allocation failed"
                    );
                }
            },
            drop,
        );
        bench_w5(
            &mut g,
            "drmm",
            threads,
            || drmm::Device::new(()),
            |dev, range| {
                for i in range {
                    let _ = dev
                        .add_action_named("word_action", move |_| {
                            black_box(i);
                        })
                        .expect("allocation failed");
                }
            },
            drop,
        );
    }
    g.finish();
}

fn w6(c: &mut Criterion) {
    let mut g = new_group(c, "W6");
    for threads in [1, 2] {
        bench_w6(
            &mut g,
            "floor",
            threads,
            |_| AtomicUsize::new(0),
            |counter, _t, count| {
                for _ in 0..count {
                    counter.fetch_add(1, Ordering::AcqRel);
                    counter.fetch_sub(1, Ordering::Release);
                }
            },
        );
        bench_w6(
            &mut g,
            "kernel-model",
            threads,
            Gate::new,
            |gate, t, count| {
                for _ in 0..count {
                    if let Some(idx) = gate.enter(t) {
                        gate.exit(t, idx);
                    }
                }
            },
        );
        bench_w6(
            &mut g,
            "drmm",
            threads,
            |_| drmm::Device::new(()),
            |dev, _t, count| {
                for _ in 0..count {
                    drop(black_box(dev.enter().expect("device not unplugged")));
                }
            },
        );
    }
    g.finish();
}

/// Whether the command line's filter (criterion's positional argument; several are joined into
/// one alternation by `scripts/bench`) names W8a, which runs outside criterion: no filter, or
/// an alternative that is a prefix of `W8a` or starts with `W8a`.
fn runs_w8a() -> bool {
    // Criterion's options that take a value.
    const WITH_VALUE: [&str; 9] = [
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--output-format",
        "--profile-time",
        "--noise-threshold",
    ];
    let mut args = std::env::args().skip(1);
    let mut filter = None;
    while let Some(a) = args.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            filter = Some(a);
        }
    }
    filter.is_none_or(|f| {
        f.split('|')
            .any(|alt| "W8a".starts_with(alt) || alt.starts_with("W8a"))
    })
}

fn main() {
    kernel_model::self_check();
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    w1(&mut c);
    w2(&mut c);
    w3(&mut c);
    w4(&mut c);
    w5(&mut c);
    w6(&mut c);
    user_facing::w7(&mut c);
    user_facing::w8b(&mut c);
    user_facing::w9(&mut c);
    rec(&mut c);
    c.final_summary();
    if runs_w8a() {
        user_facing::w8a();
    }
}
