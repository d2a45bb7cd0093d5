//! Replays the committed fuzz corpus (`fuzz/corpus/ops/*`) through the interpreter the fuzz
//! target uses (`tests/ops/mod.rs`), as a plain test: no nightly, no cargo-fuzz.
//!
//! `cargo test --test fuzz_corpus -- --ignored write_seed_corpus` rewrites the seed files
//! (`seed-*`) from `ops::seed_programs` and a few deterministic random programs.

mod ops;

use std::path::PathBuf;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/ops")
}

#[test]
fn corpus_replays_clean() {
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir())
        .expect("fuzz/corpus/ops exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus is empty");
    if cfg!(miri) {
        files.truncate(3);
    }
    let mut ops_run = 0;
    for f in &files {
        let bytes = std::fs::read(f).expect("readable corpus file");
        match ops::run_bytes(&bytes) {
            Ok(s) => ops_run += s.ops,
            Err(e) => panic!("{}: {e}\nprogram: {:?}", f.display(), ops::decode(&bytes)),
        }
    }
    eprintln!("{} corpus files, {ops_run} operations", files.len());
}

/// A small deterministic generator (xorshift), so the seeds are reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u8 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 24) as u8
    }
}

#[test]
#[ignore = "writes files: run on demand to regenerate the seed corpus"]
fn write_seed_corpus() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (i, p) in ops::seed_programs().iter().enumerate() {
        std::fs::write(dir.join(format!("seed-hand-{i}")), ops::encode(p)).unwrap();
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..12 {
        let len = 30 + 10 * i;
        let bytes: Vec<u8> = (0..len * 3)
            .map(|k| {
                let b = rng.next();
                // Keep indices small so operations find something to act on.
                if k % 3 == 0 { b } else { b % 4 }
            })
            .collect();
        ops::run_bytes(&bytes).expect("seed program passes");
        std::fs::write(dir.join(format!("seed-random-{i:02}")), bytes).unwrap();
    }
}
