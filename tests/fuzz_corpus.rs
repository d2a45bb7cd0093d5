//! Replays the committed fuzz corpus (`fuzz/corpus/ops/*`) through the interpreter the fuzz
//! target uses (`tests/ops/`), as a plain test: no nightly, no cargo-fuzz.
//!
//! The corpus is the hand-written seeds (`seed-hand-*`, rewritten by
//! `cargo test --test fuzz_corpus -- --ignored write_seed_corpus` from `ops::seed_programs`)
//! plus a set cover of the edges reached by a 30-minute fuzzing run (`scripts/fuzz 1800`,
//! then libFuzzer's `-set_cover_merge=1 -use_counters=0`): about 50 small files.
//!
//! The corpus replays once per subscriber variant (`tests/common/subscribers.rs`), each a test
//! of its own; `DRMM_TEST_SUBSCRIBER` selects variants.

mod ops;

use std::path::PathBuf;

use ops::subscribers::{self, Variant};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/ops")
}

fn replay(variant: Variant) {
    if !variant.is_selected() {
        return;
    }
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir())
        .expect("fuzz/corpus/ops exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus is empty");
    if cfg!(miri) {
        // Under miri (minutes per long program) the short hand-written seeds only: they reach
        // the re-entrant operations.
        files.retain(|f| {
            f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-hand-"))
        });
    }
    let mut ops_run = 0;
    for f in &files {
        let bytes = std::fs::read(f).expect("readable corpus file");
        subscribers::watchdog(Some(format!("{} ({variant})", f.display())));
        match ops::run_in(variant, &ops::decode(&bytes)) {
            Ok(s) => ops_run += s.ops,
            Err(e) => panic!(
                "{} ({variant} subscriber): {e}\nprogram: {:?}",
                f.display(),
                ops::decode(&bytes)
            ),
        }
    }
    subscribers::watchdog(None);
    eprintln!(
        "{variant} subscriber: {} corpus files, {ops_run} operations",
        files.len()
    );
}

#[test]
fn corpus_replays_clean() {
    replay(Variant::None);
}

#[test]
fn corpus_replays_clean_recorded() {
    replay(Variant::Record);
}

#[test]
fn corpus_replays_clean_with_a_reentrant_subscriber() {
    replay(Variant::Reenter);
}

#[test]
fn corpus_replays_clean_with_a_panicking_subscriber() {
    replay(Variant::Panic);
}

#[test]
#[ignore = "writes files: run on demand to regenerate the seed corpus"]
fn write_seed_corpus() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (i, p) in ops::seed_programs().iter().enumerate() {
        std::fs::write(dir.join(format!("seed-hand-{i}")), ops::encode(p)).unwrap();
    }
}
