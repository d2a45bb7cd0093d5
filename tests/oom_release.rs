//! Release paths under memory pressure (promise 6): `revoke_all` and `Bound::release_group`
//! run with every allocation failing, with one allocation failing at each position, and with
//! every allocation failing from each position on. Each time: no abort, the same values and
//! entries released in the same order as with memory available, each exactly once, the
//! markers of partially overlapping groups kept, and live heap bytes back where they were.
//!
//! The binary has its own allocator. It fails only allocations made inside an *armed* zone of
//! the current thread, and never one made while the thread is panicking: the standard
//! library's unwinding allocates (the panic payload, the exception) and aborts when it cannot,
//! which no library can avoid. Test code that runs inside an armed zone (drops, actions)
//! disarms around its own bookkeeping.

//!
//! `release_group` also runs with the recording subscriber of `tests/common/subscribers.rs`
//! (its release path differs when entry events are watched); not with the re-entering or
//! panicking one, which allocate or unwind on their own and would blur what the library does
//! under memory pressure. `DRMM_TEST_SUBSCRIBER` selects.

#![cfg(not(loom))]

#[path = "common/subscribers.rs"]
mod subscribers;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Once};

use drmm::bus::{Bound, Bus};
use drmm::revoke::grace::Domain;
use drmm::revoke::{Revocable, Revoke, revoke_all};

// ---------------------------------------------------------------------------------------------
// The allocator

/// Which armed allocations fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fail {
    /// None: the reference run.
    Never,
    /// Every one.
    All,
    /// Only the one at this position (0-based) of the armed zone.
    Nth(usize),
    /// Every one from this position on.
    From(usize),
}

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    /// In a warm-up run, which does the once-per-thread and once-per-process allocations
    /// (thread-locals, the panic hook, lazily built statics) and checks no leak.
    static WARMING_UP: Cell<bool> = const { Cell::new(false) };
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static MODE: Cell<Fail> = const { Cell::new(Fail::Never) };
    /// Armed allocations seen since the zone was armed.
    static SEEN: Cell<usize> = const { Cell::new(0) };
    /// Armed allocations failed since the zone was armed.
    static FAILED: Cell<usize> = const { Cell::new(0) };
}

fn should_fail() -> bool {
    if !ARMED.try_with(Cell::get).unwrap_or(false) || std::thread::panicking() {
        return false;
    }
    let Ok(n) = SEEN.try_with(|s| s.replace(s.get() + 1)) else {
        return false;
    };
    let fail = match MODE.try_with(Cell::get).unwrap_or(Fail::Never) {
        Fail::Never => false,
        Fail::All => true,
        Fail::Nth(k) => n == k,
        Fail::From(k) => n >= k,
    };
    if fail {
        let _ = FAILED.try_with(|f| f.set(f.get() + 1));
    }
    fail
}

struct TestAlloc;

// SAFETY: forwards to the system allocator; it only refuses requests (returns null) on demand,
// which every `GlobalAlloc` may do, and only counts otherwise.
unsafe impl GlobalAlloc for TestAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if should_fail() {
            return std::ptr::null_mut();
        }
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let _ = LIVE.try_with(|l| l.set(l.get() + layout.size() as isize));
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|l| l.set(l.get() - layout.size() as isize));
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: TestAlloc = TestAlloc;

fn live_bytes() -> isize {
    LIVE.with(Cell::get)
}

/// Checks that this thread's live bytes are back at `start` (except in a warm-up run).
fn assert_no_leak(start: isize, what: impl std::fmt::Display) {
    if !WARMING_UP.with(Cell::get) {
        assert_eq!(live_bytes(), start, "{what}: leaked");
    }
}

/// Runs `f`, hands its result to `check`, then checks that everything allocated since `f`
/// began has been freed.
fn leak_checked<T>(what: impl std::fmt::Display, f: impl FnOnce() -> T, check: impl FnOnce(T)) {
    let start = live_bytes();
    check(f());
    assert_no_leak(start, what);
}

/// Runs `f` as a warm-up.
fn warm_up(f: impl FnOnce()) {
    WARMING_UP.with(|w| w.set(true));
    f();
    WARMING_UP.with(|w| w.set(false));
}

/// Runs `f` with this thread's allocations armed in `mode`; returns its result, the armed
/// allocations seen and how many of them failed.
fn armed<R>(mode: Fail, f: impl FnOnce() -> R) -> (R, usize, usize) {
    struct Disarm;
    impl Drop for Disarm {
        fn drop(&mut self) {
            ARMED.with(|a| a.set(false));
        }
    }
    MODE.with(|m| m.set(mode));
    SEEN.with(|s| s.set(0));
    FAILED.with(|f| f.set(0));
    ARMED.with(|a| a.set(true));
    let disarm = Disarm;
    let r = f();
    drop(disarm);
    (r, SEEN.with(Cell::get), FAILED.with(Cell::get))
}

/// Runs `f` with this thread's allocations disarmed, restoring the previous state after.
fn disarmed<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = ARMED.try_with(|a| a.set(self.0));
        }
    }
    let _restore = Restore(ARMED.with(|a| a.replace(false)));
    f()
}

/// Panics on purpose (disarmed: the hook and the payload are the test's, not the library's).
fn intentional_panic(what: &'static str) -> ! {
    disarmed(|| std::panic::panic_any(what))
}

/// Keeps intentional panics quiet (the default hook allocates into the test's captured output,
/// which would count as live bytes); every other panic is reported as usual.
fn quiet_intentional_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = info
                .payload()
                .downcast_ref::<&'static str>()
                .is_some_and(|s| s.starts_with("intentional"));
            if !ours {
                default(info);
            }
        }));
    });
}

/// The modes to run a scenario in, given how many armed allocations the reference run saw.
fn modes(seen: usize) -> impl Iterator<Item = Fail> {
    std::iter::once(Fail::All)
        .chain((0..=seen).map(Fail::Nth))
        .chain((0..=seen).map(Fail::From))
}

/// An append-only log of names, written inside armed zones (disarmed while it grows).
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, s: impl std::fmt::Display) {
        disarmed(|| self.0.lock().unwrap().push(s.to_string()));
    }
    fn get(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------------------
// revoke_all

/// A revocable value: logs its drop and counts it; some panic when dropped.
struct Val {
    id: usize,
    log: Log,
    drops: Arc<AtomicUsize>,
    panics: bool,
    /// Heap memory that must be freed by the drop.
    _heap: Box<[u8; 24]>,
}

impl Drop for Val {
    fn drop(&mut self) {
        self.drops.fetch_add(1, SeqCst);
        self.log.push(format_args!("drop {}", self.id));
        if self.panics {
            intentional_panic("intentional: value panicked while dropping");
        }
    }
}

/// How a revocation scenario is laid out.
#[derive(Clone, Copy, Debug)]
struct RevokeCase {
    values: usize,
    /// Value `i` is on domain `i % domains`.
    domains: usize,
    /// Value `i` is revoked before the batch when `i % revoked_early == 1` (0: none).
    revoked_early: usize,
    /// Value `i` panics when dropped when `i % panicking == 2` (0: none).
    panicking: usize,
    /// Hide the iterator's length, so that the batch grows item by item.
    hide_len: bool,
}

/// What a revocation did: its result (or panic message), the drops it made in order, and
/// whether every value reads as revoked after it.
#[derive(Debug, PartialEq, Eq)]
struct RevokeOutcome {
    result: Result<usize, String>,
    drops: Vec<String>,
    revoked: bool,
}

/// Runs `case` with `revoke_all` armed in `mode`; checks exactly once. Returns the outcome,
/// the armed allocations seen and failed, and each domain's grace periods.
fn revoke_case(case: RevokeCase, mode: Fail) -> (RevokeOutcome, usize, usize, Vec<u64>) {
    let (log, drops) = (Log::default(), Arc::new(AtomicUsize::new(0)));
    let domains: Vec<_> = (0..case.domains).map(|_| Arc::new(Domain::new())).collect();
    let values: Vec<_> = (0..case.values)
        .map(|id| {
            let val = Val {
                id,
                log: log.clone(),
                drops: drops.clone(),
                panics: case.panicking != 0 && id % case.panicking == 2,
                _heap: Box::new([0; 24]),
            };
            Revocable::new_in(val, domains[id % case.domains].clone())
        })
        .collect();
    for (id, v) in values.iter().enumerate() {
        if case.revoked_early != 0 && id % case.revoked_early == 1 {
            let _ = catch_unwind(AssertUnwindSafe(|| v.revoke()));
        }
    }
    let early: Vec<u64> = domains.iter().map(|d| d.grace_periods()).collect();
    let early_log = log.get().len();
    let items: Vec<&dyn Revoke> = values.iter().map(|v| v as &dyn Revoke).collect();
    let (result, seen, failed) = armed(mode, || {
        catch_unwind(AssertUnwindSafe(|| {
            if case.hide_len {
                revoke_all(items.iter().copied().filter(|_| true))
            } else {
                revoke_all(items.iter().copied())
            }
        }))
    });
    let result = result.map_err(|p| {
        p.downcast_ref::<&'static str>()
            .map_or("<other payload>", |s| s)
            .to_owned()
    });
    let grace: Vec<u64> = domains
        .iter()
        .zip(&early)
        .map(|(d, e)| d.grace_periods() - e)
        .collect();
    let outcome = RevokeOutcome {
        result,
        drops: log.get()[early_log..].to_vec(),
        revoked: values.iter().all(Revocable::is_revoked),
    };
    assert_eq!(
        drops.load(SeqCst),
        case.values,
        "{case:?} {mode:?}: every value dropped"
    );
    drop(items);
    drop(values);
    assert_eq!(
        drops.load(SeqCst),
        case.values,
        "{case:?} {mode:?}: none dropped twice"
    );
    (outcome, seen, failed, grace)
}

/// Runs `case` with memory, then in every failure mode, and compares; checks no leak.
fn revoke_everywhere(case: RevokeCase) {
    quiet_intentional_panics();
    warm_up(|| drop(revoke_case(case, Fail::All)));
    let (reference, seen, _, grace) = revoke_case(case, Fail::Never);
    // A batch of up to 16 values on up to 8 domains is kept inline; a larger one is not.
    let small = case.values <= 16 && case.domains <= 8;
    assert_eq!(seen == 0, small, "{case:?}: asked for memory {seen} times");
    assert!(
        grace.iter().all(|&g| g == 1),
        "{case:?}: one grace period per domain with memory, got {grace:?}"
    );
    let expected_drops: Vec<String> = (0..case.values)
        .filter(|id| case.revoked_early == 0 || id % case.revoked_early != 1)
        .map(|id| format!("drop {id}"))
        .collect();
    assert_eq!(reference.drops, expected_drops, "{case:?}: iteration order");
    let expected_result = if case.panicking == 0 {
        Ok(expected_drops.len())
    } else {
        Err("intentional: value panicked while dropping".to_owned())
    };
    assert_eq!(reference.result, expected_result, "{case:?}");
    assert!(reference.revoked);
    for mode in std::iter::once(Fail::Never).chain(modes(seen)) {
        leak_checked(
            format_args!("{case:?} {mode:?}"),
            || revoke_case(case, mode),
            |(outcome, _, failed, grace)| {
                assert_eq!(outcome, reference, "{case:?} {mode:?}");
                if mode == Fail::All && !small {
                    assert!(failed > 0, "{case:?}: failures were injected");
                    // The batch was finished each time the inline part was full: one grace
                    // period per domain per flush, never one per value.
                    let flushes = case.values.div_ceil(16) as u64;
                    assert!(
                        grace.iter().all(|&g| (1..=flushes).contains(&g)),
                        "{grace:?}"
                    );
                    assert!(grace.iter().any(|&g| g > 1), "{case:?}: {grace:?}");
                }
            },
        );
    }
}

#[test]
fn revoke_all_of_a_small_batch_needs_no_memory() {
    for domains in [1, 2, 8] {
        revoke_everywhere(RevokeCase {
            values: 16,
            domains,
            revoked_early: 5,
            panicking: 7,
            hide_len: false,
        });
    }
}

#[test]
fn revoke_all_on_one_domain_without_memory() {
    for hide_len in [false, true] {
        revoke_everywhere(RevokeCase {
            values: 40,
            domains: 1,
            revoked_early: 0,
            panicking: 0,
            hide_len,
        });
    }
}

#[test]
fn revoke_all_on_two_domains_without_memory() {
    for hide_len in [false, true] {
        revoke_everywhere(RevokeCase {
            values: 40,
            domains: 2,
            revoked_early: 5,
            panicking: 0,
            hide_len,
        });
    }
}

#[test]
fn revoke_all_on_many_domains_without_memory() {
    revoke_everywhere(RevokeCase {
        values: 20,
        domains: 12,
        revoked_early: 0,
        panicking: 0,
        hide_len: true,
    });
}

#[test]
fn revoke_all_with_panicking_drops_without_memory() {
    for hide_len in [false, true] {
        revoke_everywhere(RevokeCase {
            values: 35,
            domains: 2,
            revoked_early: 4,
            panicking: 3,
            hide_len,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// release_group

/// A value captured by an action or managed by the list: counts its drops.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// Adds the scenario's entries, creating the values they own.
struct Builder<'b, 'a> {
    b: &'b Bound<'a>,
    log: Log,
    made: Arc<AtomicUsize>,
    drops: Arc<AtomicUsize>,
}

impl Builder<'_, '_> {
    fn counted(&self) -> Counted {
        self.made.fetch_add(1, SeqCst);
        Counted(self.drops.clone())
    }

    /// An action that logs its name when it runs, and panics if asked.
    fn act(&self, name: &'static str, panics: bool) {
        let (log, held) = (self.log.clone(), self.counted());
        let _ = self
            .b
            .add_action_named(name, move || {
                log.push(name);
                drop(held);
                if panics {
                    intentional_panic("intentional: action panicked");
                }
            })
            .unwrap();
    }

    /// A managed value whose drop is logged (through the action-free path of the list).
    fn value(&self, name: &'static str) {
        /// Logs its name when dropped; the `Counted` it holds counts the drop.
        struct Logged(&'static str, Log, #[allow(dead_code)] Counted);
        impl Drop for Logged {
            fn drop(&mut self) {
                self.1.push(self.0);
            }
        }
        let _ = self
            .b
            .alloc(Logged(name, self.log.clone(), self.counted()))
            .unwrap();
    }

    /// Plain managed memory (the list's arena, or the allocator).
    fn bytes(&self, len: usize) {
        let _ = self.b.kzalloc(len).unwrap();
    }
}

/// What a group release did.
#[derive(Debug, PartialEq, Eq)]
struct GroupOutcome {
    result: Result<usize, String>,
    order: Vec<String>,
    left: Vec<&'static str>,
}

type Scenario = fn(&Builder<'_, '_>) -> drmm::Group;

/// Builds `scenario` on a fresh device, releases its group armed in `mode`, then removes the
/// device; checks exactly once. Returns the outcome and the armed allocations seen and failed.
fn group_case(name: &str, scenario: Scenario, mode: Fail) -> (GroupOutcome, usize, usize) {
    let (log, made, drops) = (Log::default(), Arc::default(), Arc::default());
    let bus = Bus::new("oom");
    let dev = bus.add_device("d");
    let (outcome, seen, failed) = dev
        .with_driverless(|b| {
            let builder = Builder {
                b,
                log: log.clone(),
                made: Arc::clone(&made),
                drops: Arc::clone(&drops),
            };
            let group = scenario(&builder);
            drop(builder);
            let (result, seen, failed) = armed(mode, || {
                catch_unwind(AssertUnwindSafe(|| b.release_group(group)))
            });
            let result = match result {
                Ok(r) => Ok(r.unwrap()),
                Err(p) => Err(p
                    .downcast_ref::<&'static str>()
                    .map_or("<other payload>", |s| s)
                    .to_owned()),
            };
            let left = b.snapshot().iter().map(|e| e.name()).collect();
            let outcome = GroupOutcome {
                result,
                order: log.get(),
                left,
            };
            (outcome, seen, failed)
        })
        .unwrap();
    // The rest goes with the device: every action ran and every value dropped, once.
    let released = log.get().len();
    let _ = catch_unwind(AssertUnwindSafe(|| dev.remove()));
    let all = log.get();
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        all.len(),
        "{name} {mode:?}: run twice: {all:?}"
    );
    assert!(released <= all.len());
    assert_eq!(drops.load(SeqCst), made.load(SeqCst), "{name} {mode:?}");
    (outcome, seen, failed)
}

/// [`group_everywhere_in`] without a subscriber and with the recording one.
fn group_everywhere(name: &str, scenario: Scenario, expected: &GroupOutcome) {
    use subscribers::Variant;
    for v in [Variant::None, Variant::Record] {
        if Variant::selected().contains(&v) {
            v.run(|| group_everywhere_in(name, scenario, expected));
            assert_eq!(subscribers::take_violation(), None, "{name} ({v})");
        }
    }
}

/// Runs `scenario` with memory, then in every failure mode, and compares; checks no leak.
fn group_everywhere_in(name: &str, scenario: Scenario, expected: &GroupOutcome) {
    quiet_intentional_panics();
    warm_up(|| drop(group_case(name, scenario, Fail::All)));
    let (reference, seen, _) = group_case(name, scenario, Fail::Never);
    assert_eq!(&reference, expected, "{name}: with memory");
    assert!(seen > 0, "{name}: the release asks for memory");
    for mode in std::iter::once(Fail::Never).chain(modes(seen)) {
        leak_checked(
            format_args!("{name} {mode:?}"),
            || group_case(name, scenario, mode),
            |(outcome, _, failed)| {
                assert_eq!(outcome, reference, "{name} {mode:?}");
                if mode == Fail::All {
                    assert!(failed > 0, "{name}: failures were injected");
                }
            },
        );
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn closed_group_with_nested_and_straddling_groups_without_memory() {
    fn scenario(s: &Builder<'_, '_>) -> drmm::Group {
        let b = s.b;
        s.act("before", false);
        let straddle_in = b.open_group().unwrap();
        s.act("s1", false);
        let g = b.open_group().unwrap();
        s.value("v1");
        s.bytes(16);
        b.close_group(&straddle_in).unwrap();
        let inner = b.open_group().unwrap();
        s.act("i1", false);
        s.bytes(4000);
        b.close_group(&inner).unwrap();
        let straddle_out = b.open_group().unwrap();
        let unclosed = b.open_group().unwrap();
        s.act("u1", false);
        s.value("v2");
        b.close_group(&g).unwrap();
        s.act("s2", false);
        b.close_group(&straddle_out).unwrap();
        s.act("after", false);
        drop(unclosed);
        g
    }
    group_everywhere(
        "closed",
        scenario,
        &GroupOutcome {
            result: Ok(6),
            order: strings(&["v2", "u1", "i1", "v1"]),
            left: vec![
                "after", "grp>", "s2", "grp<", "grp>", "s1", "grp<", "before",
            ],
        },
    );
}

#[test]
fn open_group_with_nested_groups_without_memory() {
    fn scenario(s: &Builder<'_, '_>) -> drmm::Group {
        let b = s.b;
        s.act("before", false);
        let g = b.open_group().unwrap();
        s.act("a", false);
        let nested_open = b.open_group().unwrap();
        s.bytes(8);
        let nested_closed = b.open_group().unwrap();
        s.act("b", false);
        b.close_group(&nested_closed).unwrap();
        s.value("c");
        drop(nested_open);
        g
    }
    group_everywhere(
        "open",
        scenario,
        &GroupOutcome {
            result: Ok(4),
            order: strings(&["c", "b", "a"]),
            left: vec!["before"],
        },
    );
}

#[test]
fn group_whose_actions_panic_without_memory() {
    fn scenario(s: &Builder<'_, '_>) -> drmm::Group {
        let b = s.b;
        s.act("before", false);
        let g = b.open_group().unwrap();
        s.act("a", false);
        s.act("p1", true);
        let inner = b.open_group().unwrap();
        s.value("v");
        s.act("p2", true);
        b.close_group(&inner).unwrap();
        s.act("b", false);
        b.close_group(&g).unwrap();
        g
    }
    group_everywhere(
        "panics",
        scenario,
        &GroupOutcome {
            result: Err("intentional: action panicked".into()),
            order: strings(&["b", "p2", "v", "p1", "a"]),
            left: vec!["before"],
        },
    );
}

#[test]
fn remove_group_without_memory() {
    quiet_intentional_panics();
    let start = live_bytes();
    let bus = Bus::new("oom");
    let dev = bus.add_device("d");
    dev.with_driverless(|b| {
        let closed = b.open_group().unwrap();
        let _ = b.kzalloc(8).unwrap();
        b.close_group(&closed).unwrap();
        let open = b.open_group().unwrap();
        let _ = b.kzalloc(8).unwrap();
        let (r, _, _) = armed(Fail::All, || (b.remove_group(closed), b.remove_group(open)));
        assert_eq!(r, (Ok(()), Ok(())));
        assert_eq!(b.resource_count(), 2, "the entries stay, the markers go");
    })
    .unwrap();
    dev.remove().unwrap();
    drop((dev, bus));
    assert_eq!(live_bytes(), start);
}
