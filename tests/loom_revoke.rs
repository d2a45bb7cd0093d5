//! loom models of `drmm::revoke`.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --test loom_revoke
//! ```
//!
//! The library is built against loom's primitives (`crate::sync`), and the revocable value lives
//! in a loom `UnsafeCell`, so loom reports any access to the value that is not ordered before its
//! drop, on top of the explicit assertions below. Under loom a domain has two shards, chosen
//! from loom's thread id, so the models also cover readers on different shards.

#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

use drmm::revoke::grace::Domain;
use drmm::revoke::{Gate, Revocable, Revoke, revoke_all};

/// A value that counts its drops.
struct Tracked {
    drops: Arc<AtomicUsize>,
    payload: usize,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::Relaxed);
    }
}

fn tracked(drops: &Arc<AtomicUsize>) -> Tracked {
    Tracked {
        drops: drops.clone(),
        payload: 42,
    }
}

/// One accessor against one revoker: the accessor either sees the live value or nothing, and the
/// value is dropped once, after the access (loom checks the ordering through the cell).
#[test]
fn revoke_races_with_access() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let r = Arc::new(Revocable::new(tracked(&drops)));

        let reader = {
            let r = r.clone();
            thread::spawn(move || {
                if let Some(g) = r.try_access() {
                    assert_eq!(g.payload, 42);
                    assert_eq!(g.drops.load(Ordering::Relaxed), 0);
                }
            })
        };

        assert!(r.revoke());
        // Relaxed on purpose: the drop happened on this thread before `revoke` returned.
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        assert!(r.try_access().is_none());
        reader.join().unwrap();
        drop(r);
        assert_eq!(drops.load(Ordering::Relaxed), 1);
    });
}

/// Two revokers: exactly one wins, the value is dropped exactly once.
#[test]
fn two_revokers() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let r = Arc::new(Revocable::new(tracked(&drops)));

        let other = {
            let r = r.clone();
            thread::spawn(move || r.revoke())
        };
        let mine = r.revoke();
        let theirs = other.join().unwrap();

        assert!(mine ^ theirs, "exactly one revoker wins");
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        drop(r);
        assert_eq!(drops.load(Ordering::Relaxed), 1);
    });
}

/// A batch of two values on one domain racing with an accessor of each: one grace period,
/// both dropped once, no access after the drop.
#[test]
fn revoke_all_races_with_access() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let domain = Arc::new(Domain::new());
        let a = Arc::new(Revocable::new_in(tracked(&drops), domain.clone()));
        let b = Arc::new(Revocable::new_in(tracked(&drops), domain.clone()));

        let reader = {
            let (a, b) = (a.clone(), b.clone());
            thread::spawn(move || {
                let seen_b = b.try_access_with(|t| t.payload);
                let seen_a = a.try_access_with(|t| t.payload);
                // The batch clears `a`'s flag, then `b`'s: whoever sees `b` revoked sees `a`
                // revoked too.
                if seen_b.is_none() {
                    assert!(seen_a.is_none());
                }
            })
        };

        let items: [&dyn Revoke; 2] = [&*a, &*b];
        assert_eq!(revoke_all(items), 2);
        assert_eq!(domain.grace_periods(), 1);
        assert_eq!(drops.load(Ordering::Relaxed), 2);
        reader.join().unwrap();
    });
}

/// Unplug racing with an entry (with a nested entry inside): after `close_and_wait` returns
/// nobody is inside, nobody can enter, and the "hardware" can be torn down without a data race
/// against the section (loom checks the cell accesses).
#[test]
fn gate_close_races_with_enter_exit() {
    loom::model(|| {
        let gate = Arc::new(Gate::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let hw = Arc::new(UnsafeCell::new(7usize));

        let user = {
            let (gate, inside, hw) = (gate.clone(), inside.clone(), hw.clone());
            thread::spawn(move || {
                if let Some(outer) = gate.enter() {
                    inside.fetch_add(1, Ordering::Relaxed);
                    hw.with(|p| {
                        // SAFETY: the closer writes only after `close_and_wait`, which waits for
                        // this section (loom verifies that claim).
                        assert_eq!(unsafe { *p }, 7);
                    });
                    if let Some(inner) = gate.enter() {
                        drop(inner);
                    }
                    inside.fetch_sub(1, Ordering::Relaxed);
                    drop(outer);
                }
            })
        };

        assert!(gate.close_and_wait());
        // Relaxed: must be ordered by the grace period alone.
        assert_eq!(inside.load(Ordering::Relaxed), 0);
        hw.with_mut(|p| {
            // SAFETY: nobody is inside the gate and nobody can enter (loom verifies).
            unsafe { *p = 0 };
        });
        assert!(gate.enter().is_none());
        user.join().unwrap();
    });
}

/// Two readers on (possibly) different shards against a flag-then-synchronize writer: the
/// Dekker pairing of the raw domain.
#[test]
fn domain_flag_then_synchronize() {
    loom::model(|| {
        let domain = Arc::new(Domain::new());
        let live = Arc::new(loom::sync::atomic::AtomicBool::new(true));
        let data = Arc::new(UnsafeCell::new(1usize));

        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (domain, live, data) = (domain.clone(), live.clone(), data.clone());
                thread::spawn(move || {
                    let _section = domain.read();
                    if live.load(Ordering::SeqCst) {
                        data.with(|p| {
                            // SAFETY: the writer waits for this section before writing.
                            assert_eq!(unsafe { *p }, 1);
                        });
                    }
                })
            })
            .collect();

        live.store(false, Ordering::SeqCst);
        domain.synchronize();
        data.with_mut(|p| {
            // SAFETY: every section that could have seen `live` has ended.
            unsafe { *p = 2 };
        });
        for r in readers {
            r.join().unwrap();
        }
    });
}

/// A reader that loads the phase before a grace period's flip but increments after it (a
/// straggler) must be waited for by the *next* grace period, which is what the drain of the
/// inactive phase at the start of `synchronize` is for.
#[test]
fn straggler_is_waited_for_by_the_next_grace_period() {
    loom::model(|| {
        let domain = Arc::new(Domain::new());
        let live = Arc::new(loom::sync::atomic::AtomicBool::new(true));
        let data = Arc::new(UnsafeCell::new(1usize));

        let reader = {
            let (domain, live, data) = (domain.clone(), live.clone(), data.clone());
            thread::spawn(move || {
                let _section = domain.read();
                if live.load(Ordering::SeqCst) {
                    data.with(|p| {
                        // SAFETY: the writer waits for this section before writing.
                        assert_eq!(unsafe { *p }, 1);
                    });
                }
            })
        };

        domain.synchronize();
        live.store(false, Ordering::SeqCst);
        domain.synchronize();
        data.with_mut(|p| {
            // SAFETY: every section that could have seen `live` has ended.
            unsafe { *p = 2 };
        });
        reader.join().unwrap();
        assert_eq!(domain.grace_periods(), 2);
    });
}

/// A thread on its own shard leaves each section with a plain store, not a read-modify-write:
/// two sections in a row (the second one's increment follows the first one's store), racing
/// with a thread on the shared shard and a writer's two grace periods, must still be waited
/// for. Thread 1 owns shard 1 (of two), thread 2 has no shard of its own.
#[test]
fn owned_shard_sections_in_a_row_against_grace_periods() {
    loom::model(|| {
        let domain = Arc::new(Domain::new());
        let live = Arc::new(loom::sync::atomic::AtomicBool::new(true));
        let data = Arc::new(UnsafeCell::new(1usize));

        let readers: Vec<_> = [2usize, 1]
            .into_iter()
            .map(|sections| {
                let (domain, live, data) = (domain.clone(), live.clone(), data.clone());
                thread::spawn(move || {
                    for _ in 0..sections {
                        let _section = domain.read();
                        if live.load(Ordering::SeqCst) {
                            data.with(|p| {
                                // SAFETY: the writer waits for this section before writing.
                                assert_eq!(unsafe { *p }, 1);
                            });
                        }
                    }
                })
            })
            .collect();

        domain.synchronize();
        live.store(false, Ordering::SeqCst);
        domain.synchronize();
        data.with_mut(|p| {
            // SAFETY: every section that could have seen `live` has ended.
            unsafe { *p = 2 };
        });
        for r in readers {
            r.join().unwrap();
        }
    });
}

/// The owned shards are made by the first reader that owns one: two such readers (the main
/// thread, slot 0, and thread 1) race to install them while a writer on a third thread clears
/// a flag and waits for a grace period. Exactly one array survives (loom reports a leak or a
/// double free otherwise) and both sections are waited for.
#[test]
fn racing_readers_install_the_owned_shards_once() {
    loom::model(|| {
        let domain = Arc::new(Domain::new());
        let live = Arc::new(loom::sync::atomic::AtomicBool::new(true));
        let data = Arc::new(UnsafeCell::new(1usize));
        let section =
            |domain: &Domain, live: &loom::sync::atomic::AtomicBool, data: &UnsafeCell<usize>| {
                let _section = domain.read();
                if live.load(Ordering::SeqCst) {
                    data.with(|p| {
                        // SAFETY: the writer waits for this section before writing.
                        assert_eq!(unsafe { *p }, 1);
                    });
                }
            };
        let reader = {
            let (domain, live, data) = (domain.clone(), live.clone(), data.clone());
            thread::spawn(move || section(&domain, &live, &data))
        };
        let writer = {
            let (domain, live, data) = (domain.clone(), live.clone(), data.clone());
            thread::spawn(move || {
                live.store(false, Ordering::SeqCst);
                domain.synchronize();
                data.with_mut(|p| {
                    // SAFETY: every section that could have seen `live` has ended.
                    unsafe { *p = 2 };
                });
            })
        };
        section(&domain, &live, &data);
        reader.join().unwrap();
        writer.join().unwrap();
    });
}
