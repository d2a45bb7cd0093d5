//! Fuzzes the operation language of `tests/ops/mod.rs`: bytes decode to a program (3 bytes per
//! operation) run against the library and the reference model; any divergence, leak, panic or
//! sanitizer report is a crash. The same interpreter backs `tests/model_system.rs` and the
//! corpus replay `tests/fuzz_corpus.rs`. Run it with `scripts/fuzz`.
#![no_main]

#[path = "../../tests/ops/mod.rs"]
mod ops;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = ops::run_bytes(data) {
        panic!("{e}\nprogram: {:?}", ops::decode(data));
    }
});
