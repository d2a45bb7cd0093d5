//! Running a program and checking it: the entry points ([`run`], and [`run_in`] under a
//! subscriber), the comparison with the model after every step (the events so far, and each
//! live device's entries and state), the final checks (every logical device released, every
//! value dropped exactly once) and the leak check of the counting allocator.

use super::lang::{Op, decode};
use super::system::World;
use super::{Ev, alloc, subscribers};

/// What a run did, for the figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub ops: usize,
    pub skipped: usize,
    pub events: usize,
    pub values: usize,
    /// Panics of the panicking subscriber that surfaced from operations.
    pub subscriber_panics: usize,
}

/// [`run`] under a subscriber variant; also fails on what the recording subscriber saw.
///
/// # Errors
///
/// As for [`run`], or the recording subscriber's first violation.
pub fn run_in(variant: subscribers::Variant, ops: &[Op]) -> Result<Stats, String> {
    run_under(variant.name(), |f| variant.run(f), ops)
}

/// [`run`] under a subscriber that panics on every event of the operations `sites`.
///
/// # Errors
///
/// As for [`run`].
pub fn run_panicking_on(sites: &'static [&'static str], ops: &[Op]) -> Result<Stats, String> {
    run_under("panic", |f| subscribers::panicking_on(sites, f), ops)
}

type RunResult = Result<Stats, String>;

fn run_under(
    name: &str,
    with: impl FnOnce(Box<dyn FnOnce() -> RunResult + '_>) -> RunResult,
    ops: &[Op],
) -> RunResult {
    let _ = subscribers::take_violation();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| with(Box::new(|| run(ops)))))
        .unwrap_or_else(|p| {
            if subscribers::is_subscriber_panic(&*p) {
                Err(
                    "a panic of the subscriber surfaced outside the operation that emitted its \
                 event (DRMM_TEST_PANIC_LOUD=1 RUST_BACKTRACE=1 shows where)"
                        .to_string(),
                )
            } else {
                std::panic::resume_unwind(p)
            }
        });
    // A divergence from the model says more than what the subscriber saw.
    match (r, subscribers::take_violation()) {
        (Err(e), _) => Err(e),
        (Ok(_), Some(v)) => Err(format!("{name} subscriber saw: {v}")),
        (Ok(s), None) => Ok(s),
    }
}

/// Runs `ops` (then a teardown that drops everything) against the library and the model.
///
/// # Errors
///
/// A description of the first divergence from the model, or of a leak.
pub fn run(ops: &[Op]) -> Result<Stats, String> {
    let before = alloc::live_bytes();
    let stats = run_inner(ops)?;
    let after = alloc::live_bytes();
    if after != before {
        // The first run on a thread may initialise thread-locals and lazy statics of the
        // library (grace-period shards); only a second run of the same program proves a leak.
        let before = alloc::live_bytes();
        run_inner(ops)?;
        let after = alloc::live_bytes();
        if after != before {
            return Err(format!(
                "leak: {} bytes still allocated after the program and its teardown",
                after - before
            ));
        }
    }
    Ok(stats)
}

/// [`run`] on a byte string.
///
/// # Errors
///
/// As for [`run`].
pub fn run_bytes(bytes: &[u8]) -> Result<Stats, String> {
    run(&decode(bytes))
}

fn run_inner(ops: &[Op]) -> Result<Stats, String> {
    let mut w = World::new();
    let r = run_world(&mut w, ops);
    if r.is_err() {
        // Whatever a divergent program left behind is dropped here; a subscriber panic (or a
        // check) failing in that drop must not hide the divergence.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(w)));
    }
    r
}

fn run_world(w: &mut World, ops: &[Op]) -> Result<Stats, String> {
    let mut stats = Stats::default();
    for (step, op) in ops.iter().enumerate() {
        let done = w
            .step_caught(*op)
            .map_err(|e| format!("step {step} {op:?}: {e}"))?;
        w.compare()
            .map_err(|e| format!("step {step} {op:?}: {e}"))?;
        stats.ops += 1;
        if !done {
            stats.skipped += 1;
        }
    }
    w.teardown().map_err(|e| format!("teardown: {e}"))?;
    stats.events = w.log.len();
    stats.subscriber_panics = w.subscriber_panics;
    stats.values = w.m.created.len();
    w.final_checks()?;
    Ok(stats)
}

impl World {
    /// The comparison after every step: the events so far, then each live device's entries
    /// and state.
    pub(super) fn compare(&self) -> Result<(), String> {
        let got = self.log.snapshot();
        if got != self.m.expected {
            let common = got
                .iter()
                .zip(&self.m.expected)
                .take_while(|(a, b)| a == b)
                .count();
            return Err(format!(
                "events diverge from the model after {common} events: got {:?}, expected {:?}",
                &got[common..],
                &self.m.expected[common..]
            ));
        }
        for (slot, d) in self.m.drms.iter().enumerate() {
            if d.released {
                continue;
            }
            if let Some(dev) = self.dev(slot) {
                check_eq!(
                    dev.resource_count(),
                    d.entries.len(),
                    "drm {slot}: live entries"
                );
                check_eq!(dev.is_unplugged(), d.unplugged, "drm {slot}: unplugged");
                check_eq!(dev.is_registered(), d.registered, "drm {slot}: registered");
                let snap = dev.snapshot();
                check!(
                    snap.windows(2).all(|w| w[0].seq() > w[1].seq()),
                    "drm {slot}: snapshot not newest first"
                );
            }
        }
        for (i, b) in self.m.buses.iter().enumerate() {
            let bd = &self.busdevs[i];
            check_eq!(
                bd.resource_count(),
                b.entries.len(),
                "bus {i}: live entries"
            );
            check_eq!(bd.is_bound(), b.bound.is_some(), "bus {i}: bound");
            check_eq!(bd.is_present(), b.present, "bus {i}: present");
            if let Some(bus) = &self.bus {
                check_eq!(
                    bus.find(bd.name()).is_some(),
                    b.present,
                    "bus {i}: listed on its bus"
                );
            }
        }
        Ok(())
    }

    /// After the teardown: every logical device released, every value dropped exactly once.
    pub(super) fn final_checks(&self) -> Result<(), String> {
        let got = self.log.snapshot();
        check_eq!(got, self.m.expected, "events after teardown");
        for (slot, d) in self.m.drms.iter().enumerate() {
            check!(d.released, "logical device {slot} never released");
        }
        let mut drops: Vec<u32> = got
            .iter()
            .filter_map(|e| match e {
                Ev::Drop(id) => Some(*id),
                Ev::Run(_) | Ev::Answer(..) => None,
            })
            .collect();
        drops.sort_unstable();
        let mut created = self.m.created.clone();
        created.sort_unstable();
        check_eq!(drops, created, "every value dropped exactly once");
        Ok(())
    }
}
