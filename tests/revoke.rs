//! Integration tests of `drmm::revoke`: revocation racing with accessors, the unplug gate, and
//! grace periods under a continuous stream of readers.

#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use drmm::revoke::grace::Domain;
use drmm::revoke::{Gate, Revocable, Revoke, revoke_all};

/// Scales iteration counts down under miri, which is several orders of magnitude slower.
const fn scaled(n: usize) -> usize {
    if cfg!(miri) {
        if n / 100 > 2 { n / 100 } else { 2 }
    } else {
        n
    }
}

/// A value that counts its drops and poisons itself when dropped.
struct Tracked {
    drops: Arc<AtomicUsize>,
    live: AtomicBool,
    payload: u64,
}

impl Tracked {
    fn new(drops: &Arc<AtomicUsize>) -> Self {
        Tracked {
            drops: drops.clone(),
            live: AtomicBool::new(true),
            payload: 0xdead_beef,
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        assert!(self.live.swap(false, SeqCst), "dropped twice");
        self.drops.fetch_add(1, SeqCst);
    }
}

#[test]
fn revoke_races_with_many_accessors() {
    const READERS: usize = 4;
    for _round in 0..scaled(20) {
        let drops = Arc::new(AtomicUsize::new(0));
        let r = Revocable::new(Tracked::new(&drops));
        let returned = AtomicBool::new(false);
        let accesses = AtomicUsize::new(0);
        let start = Barrier::new(READERS + 1);
        thread::scope(|s| {
            for _ in 0..READERS {
                s.spawn(|| {
                    start.wait();
                    loop {
                        let Some(g) = r.try_access() else { break };
                        // Whoever holds a guard must be waited for by `revoke`.
                        assert!(!returned.load(SeqCst), "access alive after revoke returned");
                        assert_eq!(drops.load(SeqCst), 0, "access to a dropped value");
                        assert!(g.live.load(SeqCst));
                        assert_eq!(g.payload, 0xdead_beef);
                        accesses.fetch_add(1, SeqCst);
                        if accesses.load(SeqCst).is_multiple_of(64) {
                            thread::yield_now(); // sometimes hold the guard across a yield
                        }
                        drop(g);
                    }
                    // Once refused, always refused.
                    assert!(r.try_access().is_none());
                    assert_eq!(r.try_access_with(|t| t.payload), None);
                });
            }
            start.wait();
            while accesses.load(SeqCst) < scaled(1000) {
                thread::yield_now();
            }
            assert!(r.revoke());
            returned.store(true, SeqCst);
            assert_eq!(drops.load(SeqCst), 1, "revoke returned before dropping");
        });
        assert!(r.is_revoked());
        drop(r);
        assert_eq!(drops.load(SeqCst), 1, "value dropped exactly once");
    }
}

#[test]
fn concurrent_revokers_drop_exactly_once() {
    const REVOKERS: usize = 4;
    for _round in 0..scaled(50) {
        let drops = Arc::new(AtomicUsize::new(0));
        let r = Revocable::new(Tracked::new(&drops));
        let winners = AtomicUsize::new(0);
        let start = Barrier::new(REVOKERS + 1);
        thread::scope(|s| {
            for _ in 0..REVOKERS {
                s.spawn(|| {
                    start.wait();
                    if r.revoke() {
                        winners.fetch_add(1, SeqCst);
                    }
                    assert!(r.try_access().is_none());
                });
            }
            // And one accessor in the middle of it.
            s.spawn(|| {
                start.wait();
                while let Some(g) = r.try_access() {
                    assert_eq!(g.payload, 0xdead_beef);
                }
            });
        });
        assert_eq!(winners.load(SeqCst), 1);
        assert_eq!(drops.load(SeqCst), 1);
        drop(r);
        assert_eq!(drops.load(SeqCst), 1);
    }
}

#[test]
fn dropping_unrevoked_value_drops_it_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    let r = Revocable::new(Tracked::new(&drops));
    assert_eq!(r.try_access_with(|t| t.payload), Some(0xdead_beef));
    drop(r);
    assert_eq!(drops.load(SeqCst), 1);
}

#[test]
fn revocable_moves_to_another_thread_and_drops_there() {
    let drops = Arc::new(AtomicUsize::new(0));
    let r = Revocable::new(Tracked::new(&drops));
    thread::spawn(move || drop(r)).join().unwrap();
    assert_eq!(drops.load(SeqCst), 1);
}

#[test]
fn revoke_waits_for_a_sleeping_guard() {
    let drops = Arc::new(AtomicUsize::new(0));
    let r = Revocable::new(Tracked::new(&drops));
    let entered = Barrier::new(2);
    let released = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            let g = r.try_access().unwrap();
            entered.wait();
            thread::sleep(Duration::from_millis(if cfg!(miri) { 1 } else { 30 }));
            assert!(g.live.load(SeqCst));
            released.store(true, SeqCst);
            drop(g);
        });
        entered.wait();
        assert!(r.revoke());
        assert!(
            released.load(SeqCst),
            "revoke returned while a guard was held"
        );
    });
    assert_eq!(drops.load(SeqCst), 1);
}

#[test]
fn revoke_all_waits_one_grace_period_with_readers_around() {
    const N: usize = 16;
    let domain = Arc::new(Domain::new());
    let drops = Arc::new(AtomicUsize::new(0));
    let values: Vec<_> = (0..N)
        .map(|_| Revocable::new_in(Tracked::new(&drops), domain.clone()))
        .collect();
    let other = Revocable::new_in(String::from("other type"), domain.clone());
    let returned = AtomicBool::new(false);
    let before = domain.grace_periods();
    thread::scope(|s| {
        for t in 0..2 {
            let (values, returned) = (&values, &returned);
            s.spawn(move || {
                let mut i = t;
                loop {
                    let Some(g) = values[i % N].try_access() else {
                        if values.iter().all(Revocable::is_revoked) {
                            break;
                        }
                        i += 1;
                        continue;
                    };
                    assert!(!returned.load(SeqCst));
                    assert!(g.live.load(SeqCst));
                    i += 1;
                }
            });
        }
        thread::sleep(Duration::from_millis(if cfg!(miri) { 1 } else { 10 }));
        let mut batch: Vec<&dyn Revoke> = values.iter().map(|v| v as &dyn Revoke).collect();
        batch.push(&other);
        assert_eq!(revoke_all(batch), N + 1);
        returned.store(true, SeqCst);
    });
    assert_eq!(
        domain.grace_periods() - before,
        1,
        "one grace period for the whole batch"
    );
    assert_eq!(drops.load(SeqCst), N);
    assert!(other.is_revoked());
}

#[test]
fn gate_close_waits_for_everyone_inside() {
    const READERS: usize = 4;
    for _round in 0..scaled(20) {
        let gate = Gate::new();
        let inside = AtomicUsize::new(0);
        let entries = AtomicUsize::new(0);
        let closed_returned = AtomicBool::new(false);
        let start = Barrier::new(READERS + 1);
        thread::scope(|s| {
            for t in 0..READERS {
                let (gate, inside, entries, closed_returned, start) =
                    (&gate, &inside, &entries, &closed_returned, &start);
                s.spawn(move || {
                    start.wait();
                    let mut n = 0usize;
                    loop {
                        let after_close = closed_returned.load(SeqCst);
                        let Some(g) = gate.enter() else {
                            assert!(gate.is_closed());
                            break;
                        };
                        assert!(!after_close, "entered after close_and_wait returned");
                        inside.fetch_add(1, SeqCst);
                        entries.fetch_add(1, SeqCst);
                        n += 1;
                        if (n + t).is_multiple_of(3) {
                            // Nested entry: may fail only if closing has begun.
                            match gate.enter() {
                                Some(inner) => drop(inner),
                                None => assert!(gate.is_closed()),
                            }
                        }
                        if n.is_multiple_of(32) {
                            thread::yield_now();
                        }
                        inside.fetch_sub(1, SeqCst);
                        drop(g);
                    }
                    assert!(gate.enter().is_none());
                });
            }
            start.wait();
            while entries.load(SeqCst) < scaled(1000) {
                thread::yield_now();
            }
            assert!(gate.close_and_wait());
            assert_eq!(
                inside.load(SeqCst),
                0,
                "a section was still inside after unplug"
            );
            closed_returned.store(true, SeqCst);
            assert!(gate.enter().is_none());
        });
        assert!(gate.is_closed());
        assert!(
            !gate.close_and_wait(),
            "second close reports it did not close"
        );
    }
}

#[test]
fn gate_concurrent_closers_both_wait() {
    let gate = Gate::new();
    let held = AtomicBool::new(true);
    let entered = Barrier::new(3);
    let closed_now = AtomicUsize::new(0);
    thread::scope(|s| {
        s.spawn(|| {
            let g = gate.enter().unwrap();
            entered.wait();
            thread::sleep(Duration::from_millis(if cfg!(miri) { 1 } else { 20 }));
            held.store(false, SeqCst);
            drop(g);
        });
        for _ in 0..2 {
            s.spawn(|| {
                entered.wait();
                if gate.close_and_wait() {
                    closed_now.fetch_add(1, SeqCst);
                }
                assert!(
                    !held.load(SeqCst),
                    "close_and_wait returned with a guard inside"
                );
            });
        }
    });
    assert_eq!(closed_now.load(SeqCst), 1);
}

#[test]
fn gate_nested_enter() {
    let gate = Gate::new();
    let a = gate.enter().expect("open");
    let b = gate.enter().expect("nested");
    let c = gate.enter().expect("nested twice");
    drop(b);
    drop(a);
    drop(c);
    assert!(gate.close_and_wait());
    assert!(gate.enter().is_none());
}

#[test]
fn gate_outer_guard_survives_closing_and_inner_enter_fails() {
    let gate = Gate::new();
    let closing = AtomicBool::new(false);
    thread::scope(|s| {
        let outer = gate.enter().unwrap();
        s.spawn(|| {
            closing.store(true, SeqCst);
            gate.close_and_wait();
        });
        while !gate.is_closed() {
            thread::yield_now();
        }
        assert!(gate.enter().is_none(), "nested enter after closing began");
        drop(outer); // lets the closer finish
    });
    assert!(closing.load(SeqCst));
}

#[test]
fn synchronize_is_not_starved_by_overlapping_readers() {
    const READERS: usize = 2;
    let domain = Domain::new();
    let stop = AtomicBool::new(false);
    let reads = AtomicUsize::new(0);
    let grace_periods = scaled(200);
    let started = Instant::now();
    thread::scope(|s| {
        for _ in 0..READERS {
            s.spawn(|| {
                // Hand-over-hand: this thread is *always* inside a section, so a domain with a
                // single counter would never see zero readers.
                let mut held = domain.read();
                while !stop.load(SeqCst) {
                    let next = domain.read();
                    drop(held);
                    held = next;
                    reads.fetch_add(1, SeqCst);
                }
                drop(held);
            });
        }
        while reads.load(SeqCst) < scaled(100) {
            thread::yield_now();
        }
        for _ in 0..grace_periods {
            domain.synchronize();
        }
        stop.store(true, SeqCst);
    });
    assert_eq!(domain.grace_periods(), grace_periods as u64);
    // Generous bound: the machine is shared, but starvation would mean "never".
    assert!(
        cfg!(miri) || started.elapsed() < Duration::from_secs(30),
        "{grace_periods} grace periods took {:?}",
        started.elapsed()
    );
}

#[test]
fn synchronize_waits_only_for_sections_that_began_before() {
    let domain = Domain::new();
    let inside = AtomicBool::new(false);
    let entered = Barrier::new(2);
    thread::scope(|s| {
        s.spawn(|| {
            let g = domain.read();
            inside.store(true, SeqCst);
            entered.wait();
            thread::sleep(Duration::from_millis(if cfg!(miri) { 1 } else { 20 }));
            inside.store(false, SeqCst);
            drop(g);
        });
        entered.wait();
        domain.synchronize();
        assert!(!inside.load(SeqCst));
    });
    // A section that starts after synchronize returned is not waited for by the past call,
    // and an idle domain completes a grace period at once.
    let _late = Domain::new();
    domain.synchronize();
    assert_eq!(domain.grace_periods(), 2);
}

#[test]
fn forgotten_guard_never_causes_use_after_free() {
    let drops = Arc::new(AtomicUsize::new(0));
    let r = Revocable::new(Tracked::new(&drops));
    std::mem::forget(r.try_access().unwrap());
    // `revoke` would now wait forever; dropping the owner without revoking is sound and drops T.
    drop(r);
    assert_eq!(drops.load(SeqCst), 1);

    let gate = Gate::new();
    std::mem::forget(gate.enter().unwrap());
    drop(gate);
}

#[test]
fn auto_traits() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Revocable<String>>();
    send_sync::<Domain>();
    send_sync::<Gate>();
}
