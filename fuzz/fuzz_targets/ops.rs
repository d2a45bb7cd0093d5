//! Fuzzes the operation language of `tests/ops/`: bytes decode to a program (3 bytes per
//! operation) run against the library and the reference model; any divergence, leak, panic or
//! sanitizer report is a crash. The same interpreter backs `tests/model_system.rs` and the
//! corpus replay `tests/fuzz_corpus.rs`. Run it with `scripts/fuzz`.
//!
//! Each input runs once per subscriber variant that `DRMM_TEST_SUBSCRIBER` selects (default:
//! all four: none, recording, re-entering, panicking; see `tests/common/subscribers.rs`), so
//! the traced paths are fuzzed as well as the untraced ones.
#![no_main]

#[path = "../../tests/ops/mod.rs"]
mod ops;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ops::subscribers::Variant;

fn variants() -> &'static [Variant] {
    static V: OnceLock<Vec<Variant>> = OnceLock::new();
    V.get_or_init(Variant::selected)
}

fuzz_target!(|data: &[u8]| {
    let program = ops::decode(data);
    for v in variants() {
        if let Err(e) = ops::run_in(*v, &program) {
            panic!("{v} subscriber: {e}\nprogram: {program:?}");
        }
    }
});
