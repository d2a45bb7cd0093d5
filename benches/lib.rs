//! Criterion benchmarks of drmm's standard workloads, kept in a package of their own so that
//! building the library, its tests and its examples never compiles the benchmark harness.
//!
//! The benchmarks are in `workloads.rs` (target `workloads`); run them with `scripts/bench`
//! or `cargo bench -p drmm-bench`. This library is empty.
