//! Model-based property test of the whole system: random programs of the shared operation
//! language (`tests/ops/`: devices, bindings, groups, files, the gate, `Devres`,
//! references) run against the library and a plain reference model, checking order, onion,
//! exactly-once, no access after revocation and no leak after every step (see the module).
//!
//! The fuzz target (`fuzz/fuzz_targets/ops.rs`) and the corpus replay
//! (`tests/fuzz_corpus.rs`) run the same interpreter. `DRMM_PROPTEST_CASES` overrides the
//! number of cases (per property and variant).
//!
//! Every property runs in each subscriber variant (`tests/common/subscribers.rs`: none,
//! recording, re-entering, panicking), as a test of its own named after the variant;
//! `DRMM_TEST_SUBSCRIBER=none,record` (say) selects variants, as does a test name filter.

mod ops;

use ops::subscribers::{self, Variant};

use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};

fn program(max: usize) -> impl Strategy<Value = Vec<ops::Op>> {
    proptest::collection::vec(
        (0..ops::OP_KINDS, any::<u8>(), any::<u8>()).prop_map(|(t, a, b)| ops::Op::decode(t, a, b)),
        0..max,
    )
}

/// Programs biased to binding-heavy sequences: small indices, so they collide often.
fn bus_program(max: usize) -> impl Strategy<Value = Vec<ops::Op>> {
    proptest::collection::vec(
        (
            prop_oneof![Just(18u8), Just(19), Just(20), 21u8..35, 0u8..18],
            0u8..3,
            any::<u8>(),
        )
            .prop_map(|(t, a, b)| ops::Op::decode(t, a, b)),
        0..max,
    )
}

fn config(cases: u32) -> Config {
    let cases = if cfg!(miri) {
        2
    } else {
        std::env::var("DRMM_PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases)
    };
    Config {
        cases,
        max_shrink_iters: 20_000,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

const LEN: usize = if cfg!(miri) { 24 } else { 160 };

fn check(name: &str, variant: Variant, strategy: impl Strategy<Value = Vec<ops::Op>>) {
    if !variant.is_selected() {
        return;
    }
    let (runs, steps, skipped, events, panics) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let mut runner = TestRunner::new(config(1000));
    let r = runner.run(&strategy, |prog| {
        subscribers::watchdog(Some(format!("{name} ({variant}): {prog:?}")));
        let s = ops::run_in(variant, &prog)
            .map_err(|e| TestCaseError::fail(format!("{e}\nprogram: {prog:?}")))?;
        runs.fetch_add(1, Ordering::Relaxed);
        steps.fetch_add(s.ops, Ordering::Relaxed);
        skipped.fetch_add(s.skipped, Ordering::Relaxed);
        events.fetch_add(s.events, Ordering::Relaxed);
        panics.fetch_add(s.subscriber_panics, Ordering::Relaxed);
        Ok(())
    });
    subscribers::watchdog(None);
    if let Err(e) = r {
        panic!("{name} ({variant} subscriber): {e}");
    }
    eprintln!(
        "{name} ({variant} subscriber): {} cases, {} operations ({} skipped: nothing to act \
         on), {} events checked, {} subscriber panics surfaced",
        runs.into_inner(),
        steps.into_inner(),
        skipped.into_inner(),
        events.into_inner(),
        panics.into_inner(),
    );
}

/// One test per property and variant (they run in parallel and fail on their own).
macro_rules! variants {
    ($prop:ident, $strategy:expr) => {
        mod $prop {
            use super::*;
            #[test]
            fn untraced() {
                check(stringify!($prop), Variant::None, $strategy);
            }
            #[test]
            fn recorded() {
                check(stringify!($prop), Variant::Record, $strategy);
            }
            #[test]
            fn reentrant_subscriber() {
                check(stringify!($prop), Variant::Reenter, $strategy);
            }
            #[test]
            fn panicking_subscriber() {
                check(stringify!($prop), Variant::Panic, $strategy);
            }
        }
    };
}

variants!(system_matches_model, program(LEN));
variants!(bindings_match_model, bus_program(LEN));

#[test]
fn seed_programs_match_model() {
    for v in Variant::selected() {
        for (i, p) in ops::seed_programs().iter().enumerate() {
            subscribers::watchdog(Some(format!("seed {i} ({v})")));
            let s = ops::run_in(v, p).unwrap_or_else(|e| panic!("seed {i} ({v}): {e}"));
            assert!(s.ops > 0);
        }
    }
    subscribers::watchdog(None);
}

#[test]
fn encode_decode_round_trip() {
    for p in ops::seed_programs() {
        assert_eq!(ops::decode(&ops::encode(&p)), p);
    }
}

/// A `Devres` whose value owns another `Devres` of the same binding, both still registered
/// when the driver is unbound: the revocation must drop the inner one from inside the outer
/// one's drop without waiting for itself.
#[test]
fn nested_devres_left_for_the_unbind() {
    use ops::Op::*;
    let p = [
        Bind {
            bus: 0,
            fail: false,
        },
        DevresNested { bus: 0 },
        DevresAlloc { bus: 0 },
        Unbind { bus: 0 },
        DevresAccess { r: 0 },
        DevresNested { bus: 1 },
        RemoveBus { bus: 1 },
    ];
    for v in Variant::selected() {
        subscribers::watchdog(Some(format!("nested_devres_left_for_the_unbind ({v})")));
        ops::run_in(v, &p).unwrap_or_else(|e| panic!("{v}: {e}"));
    }
    subscribers::watchdog(None);
}

/// A subscriber that panics while an unbind releases the devres list (on the fifth release
/// event): every entry must still be released, actions run, in order.
#[test]
fn panicking_subscriber_during_an_unbind() {
    use ops::Op::*;
    let p = [
        DevresAction { bus: 0 },
        Bind {
            bus: 0,
            fail: false,
        },
        Open { dev: 0 },
        Unbind { bus: 0 },
    ];
    ops::run_in(Variant::Panic, &p).unwrap_or_else(|e| panic!("{e}"));
}

/// A release action that frees a newer byte block (and one a newer value) the same release
/// already freed: the answer is `NotOnList` in every variant (exactly once, whether traced or
/// not).
#[test]
fn reentrant_action_frees_a_newer_entry_during_the_release() {
    use ops::Op::*;
    let p = [
        NewDevice,
        DrmReentrant { dev: 0, h: 3 },
        DrmReentrant { dev: 0, h: 1 },
        DrmKzalloc { dev: 0, len: 1 },
        DropRef { dev: 0 },
    ];
    for v in Variant::selected() {
        subscribers::watchdog(Some(format!("reentrant newer ({v})")));
        ops::run_in(v, &p).unwrap_or_else(|e| panic!("{v}: {e}"));
    }
    subscribers::watchdog(None);
}

/// Each release-direction event, one site at a time, with a subscriber that panics on every
/// event of that operation, over small programs that reach each release path: every entry is
/// still released (actions run, values dropped), in order, nothing leaks, and the panic at
/// most surfaces from the operation. Reports every (event, path) that breaks this.
#[test]
fn panicking_subscriber_at_each_release_event() {
    use ops::Op::*;
    let paths: Vec<(&str, Vec<ops::Op>)> = vec![
        (
            "kfree",
            vec![NewDevice, DrmAlloc { dev: 0 }, DrmFree { h: 0 }],
        ),
        (
            "release_action",
            vec![
                NewDevice,
                DrmAddAction {
                    dev: 0,
                    adds: false,
                },
                DrmFree { h: 0 },
            ],
        ),
        (
            "remove_action",
            vec![
                NewDevice,
                DrmAddAction {
                    dev: 0,
                    adds: false,
                },
                DrmRemove { h: 0 },
            ],
        ),
        (
            "devm kfree",
            vec![DevresAlloc { bus: 0 }, DevresFree { h: 0 }],
        ),
        (
            "Devres drop",
            vec![DevresNew { bus: 0 }, DevresDrop { r: 0 }],
        ),
        (
            "release_group",
            vec![
                OpenGroup { bus: 0 },
                DevresAlloc { bus: 0 },
                ReleaseGroup { g: 0 },
            ],
        ),
        (
            "remove_group",
            vec![
                OpenGroup { bus: 0 },
                DevresAlloc { bus: 0 },
                RemoveGroup { g: 0 },
            ],
        ),
        (
            "last reference",
            vec![NewDevice, DrmAlloc { dev: 0 }, DropRef { dev: 0 }],
        ),
        (
            "unplug",
            vec![NewDevice, Register { dev: 0 }, Unplug { dev: 0 }],
        ),
        (
            "last close",
            vec![
                NewDevice,
                Register { dev: 0 },
                Open { dev: 0 },
                DropRef { dev: 0 },
                Close { f: 0 },
            ],
        ),
        ("probe failure", vec![Bind { bus: 0, fail: true }]),
        (
            "unbind",
            vec![
                Bind {
                    bus: 0,
                    fail: false,
                },
                Unbind { bus: 0 },
            ],
        ),
        (
            "removal",
            vec![DevresAlloc { bus: 0 }, RemoveBus { bus: 0 }],
        ),
    ];
    let mut broken = Vec::new();
    for site in subscribers::PANIC_OPS {
        let sites: &'static [&'static str] = std::slice::from_ref(site);
        for (path, p) in &paths {
            if let Err(e) = ops::run_panicking_on(sites, p) {
                broken.push(format!("{site} during {path}: {e}"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "a panicking subscriber broke a release:\n{}",
        broken.join("\n")
    );
}
