use super::*;
use std::sync::atomic::AtomicUsize as StdAtomicUsize;

fn owned(d: &Domain) -> &[Shard] {
    let p = d.owned.load(Ordering::SeqCst);
    if p.is_null() {
        return &[];
    }
    // SAFETY: the type invariant of `Domain`.
    unsafe { std::slice::from_raw_parts(p, d.owned_count) }
}

fn total(d: &Domain) -> usize {
    std::iter::once(&d.shared)
        .chain(owned(d).iter().map(|s| &s.count))
        .flat_map(|c| c.iter())
        .map(|c| c.load(Ordering::SeqCst))
        .sum()
}

#[test]
fn shards_are_padded_and_made_by_the_first_reader_that_owns_one() {
    assert_eq!(std::mem::size_of::<Shard>(), 128);
    let d = Domain::new();
    assert!(d.owned_count.is_power_of_two());
    assert!(owned(&d).is_empty(), "a new domain allocates nothing");
    d.synchronize();
    assert!(owned(&d).is_empty(), "nor does a grace period");
    // A fresh thread gets a small slot (slots are reused densely), unless many test
    // threads are alive at once; either way its section is counted somewhere.
    std::thread::scope(|s| {
        s.spawn(|| {
            let _g = d.read();
            assert_eq!(total(&d), 1);
            let mine = slot::current() < d.owned_count;
            assert_eq!(!owned(&d).is_empty(), mine);
        });
    });
    assert_eq!(total(&d), 0);
}

#[test]
fn forgetting_an_owned_guard_keeps_its_slot_from_being_reused() {
    // Leaks on purpose (skipped under miri and the sanitizers with the other `forgetting_a*`
    // tests): an owned section still open when its thread exits.
    let d: &'static Domain = Box::leak(Box::new(Domain::new()));
    let leaked = std::thread::spawn(|| {
        let g = d.read();
        let slot = slot::current();
        // The next owner of the slot would write the counter with plain stores while
        // this section is still counted in it.
        std::mem::forget(g);
        slot
    })
    .join()
    .unwrap();
    if leaked < d.owned_count {
        assert!(!slot::is_free(leaked), "slot {leaked} given back");
    }
    assert_eq!(total(d), 1, "the forgotten section stays counted");
}

#[test]
fn guard_counts_and_uncounts() {
    let d = Domain::new();
    let a = d.read();
    let b = d.read();
    assert_eq!(total(&d), 2);
    drop(a);
    assert_eq!(total(&d), 1);
    drop(b);
    assert_eq!(total(&d), 0);
}

#[test]
fn guard_straddling_a_flip_is_waited_for_by_the_next_grace_period() {
    let d = Domain::new();
    let g = d.read();
    // Simulate the flip having happened while `g` is inside (as if `g` were a straggler):
    // `g` is counted in phase 0, the active phase becomes 1.
    d.phase.store(1, Ordering::SeqCst);
    let done = StdAtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            d.synchronize();
            done.store(1, Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(if cfg!(miri) {
            1
        } else {
            20
        }));
        assert_eq!(
            done.load(Ordering::SeqCst),
            0,
            "grace period ended with a reader inside"
        );
        drop(g);
    });
    assert_eq!(done.load(Ordering::SeqCst), 1);
}

#[test]
fn slots_are_reused_after_thread_exit() {
    let first = std::thread::spawn(slot::current).join().unwrap();
    let second = std::thread::spawn(slot::current).join().unwrap();
    // Other tests run concurrently and may grab the freed slot first, so only check that
    // slots stay small (they would grow without bound without reuse).
    assert!(first < 1024 && second < 1024);
}

#[test]
fn synchronize_inside_own_section_on_own_shard_panics_in_every_build() {
    // A thread of its own, so that its slot is small (freed slots are reused).
    std::thread::spawn(|| {
        let d = Domain::new();
        let g = d.read();
        let own = slot::peek().is_some_and(|s| s < d.owned_count);
        assert_eq!(d.reading_on_own_shard(), own);
        // Undetected, release builds would wait forever: only tried where it is detected.
        if own || cfg!(debug_assertions) {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.synchronize()));
            assert!(r.is_err(), "detected");
        }
        drop(g);
        assert!(!d.reading_on_own_shard());
        d.synchronize();
    })
    .join()
    .unwrap();
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "inside a read section")]
fn synchronize_inside_own_section_panics_in_debug() {
    let d = Domain::new();
    let _g = d.read();
    d.synchronize();
}

#[test]
#[cfg(debug_assertions)]
fn synchronize_inside_other_domain_section_is_fine() {
    let a = Domain::new();
    let b = Domain::new();
    let _g = a.read();
    b.synchronize();
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "inside a read section")]
fn close_inside_gate_panics_in_debug() {
    let gate = Gate::new();
    let _g = gate.enter().unwrap();
    gate.close_and_wait();
}

#[test]
#[cfg(debug_assertions)]
fn close_panic_leaves_gate_open() {
    let gate = Gate::new();
    let g = gate.enter().unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| gate.close_and_wait()));
    assert!(r.is_err());
    assert!(!gate.is_closed());
    drop(g);
    assert!(gate.close_and_wait());
}

#[test]
fn closed_gate_refuses_and_leaves_no_count() {
    let gate = Gate::new();
    gate.close_and_wait();
    assert!(gate.enter().is_none());
    assert_eq!(total(&gate.domain), 0);
}
