//! Model-based property test of the whole system: random programs of the shared operation
//! language (`tests/ops/mod.rs`: devices, bindings, groups, files, the gate, `Devres`,
//! references) run against the library and a plain reference model, checking order, onion,
//! exactly-once, no access after revocation and no leak after every step (see the module).
//!
//! The fuzz target (`fuzz/fuzz_targets/ops.rs`) and the corpus replay
//! (`tests/fuzz_corpus.rs`) run the same interpreter. `DRMM_PROPTEST_CASES` overrides the
//! number of cases.

mod ops;

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

fn check(name: &str, strategy: impl Strategy<Value = Vec<ops::Op>>) {
    let (runs, steps, skipped, events) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let mut runner = TestRunner::new(config(1000));
    let r = runner.run(&strategy, |prog| {
        let s =
            ops::run(&prog).map_err(|e| TestCaseError::fail(format!("{e}\nprogram: {prog:?}")))?;
        runs.fetch_add(1, Ordering::Relaxed);
        steps.fetch_add(s.ops, Ordering::Relaxed);
        skipped.fetch_add(s.skipped, Ordering::Relaxed);
        events.fetch_add(s.events, Ordering::Relaxed);
        Ok(())
    });
    if let Err(e) = r {
        panic!("{name}: {e}");
    }
    eprintln!(
        "{name}: {} programs, {} operations ({} skipped: nothing to act on), {} events checked",
        runs.into_inner(),
        steps.into_inner(),
        skipped.into_inner(),
        events.into_inner()
    );
}

#[test]
fn system_matches_model() {
    check("system_matches_model", program(LEN));
}

#[test]
fn bindings_match_model() {
    check("bindings_match_model", bus_program(LEN));
}

#[test]
fn seed_programs_match_model() {
    for (i, p) in ops::seed_programs().iter().enumerate() {
        let s = ops::run(p).unwrap_or_else(|e| panic!("seed {i}: {e}"));
        assert!(s.ops > 0);
    }
}

#[test]
fn encode_decode_round_trip() {
    for p in ops::seed_programs() {
        assert_eq!(ops::decode(&ops::encode(&p)), p);
    }
}
