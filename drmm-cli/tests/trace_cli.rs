//! `drmm trace report` and `drmm trace check` run as a real process on hand-made traces.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn drmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drmm"))
        .args(args)
        .output()
        .expect("the drmm binary runs")
}

fn check(name: &str) -> Output {
    drmm(&["trace", "check", fixture(name).to_str().unwrap()])
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// `check` on a fixture with exactly one problem: exit 1 and that one line.
fn one_problem(name: &str) -> String {
    let out = check(name);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    text.trim_end().to_owned()
}

#[test]
fn check_is_silent_and_exits_0_on_a_clean_trace() {
    let out = check("clean.jsonl");
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty(), "{}", stdout(&out));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
}

#[test]
fn report_of_a_clean_trace_shows_lifetimes_entries_and_no_problem() {
    let out = drmm(&["trace", "report", fixture("clean.jsonl").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for expected in [
        "== vgpu.0 (bus device 1)",
        "== card0 (logical device 2)",
        "at examples/vgpu.rs:60",
        "unplugged",
        "last ref",
        "released",
        "mode_config",
        "REL 25.4 µs",
        "DEL 12.0 µs",
        "No problems found.",
        // REFUSED "gate" is information, not a problem.
        "examples/vgpu.rs:90: gate refused on card0, 2x",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    assert!(!text.contains("NEVER"), "{text}");
}

#[test]
fn entry_never_released() {
    assert_eq!(
        one_problem("entry-never-released.jsonl"),
        "examples/vgpu.rs:85: entry never released: card0 drmm #3 \"fb\" (alloc, 65536 bytes) added at trace line 15"
    );
}

#[test]
fn release_out_of_lifo_order() {
    assert_eq!(
        one_problem("release-out-of-order.jsonl"),
        "examples/vgpu.rs:63: release out of LIFO order: card0 drmm #1 \"vram\" (alloc, 4096 bytes) released at trace line 32 while the newer #2 \"mode_config\" (examples/vgpu.rs:64) is still live"
    );
}

#[test]
fn entry_released_after_its_device() {
    assert_eq!(
        one_problem("released-after-device.jsonl"),
        "examples/vgpu.rs:85: entry released after its device: ADD of card0 drmm #3 \"fb\" at trace line 33, after card0 was released (trace line 32)"
    );
}

#[test]
fn access_after_revocation() {
    assert_eq!(
        one_problem("access-after-revocation.jsonl"),
        "examples/vgpu.rs:120: access after revocation: Devres<vgpu::Regs> of vgpu.0 reached after it was revoked on thread irq-worker (trace line 25; refused, but in C a use-after-free)"
    );
}

#[test]
fn device_never_released() {
    assert_eq!(
        one_problem("device-never-released.jsonl"),
        "examples/vgpu.rs:60: device never released: card0 (logical device 2) created at trace line 6: its drmm list is never released after the last reference"
    );
}

#[test]
fn reference_still_held_names_its_holder() {
    let out = check("reference-held.jsonl");
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "examples/vgpu.rs:82: reference still held at the end: reference 3 to card0, taken on thread main (trace line 15), never dropped",
            "examples/vgpu.rs:60: device never released: card0 (logical device 2) created at trace line 6: its last reference is never dropped (1 still held)",
            "examples/vgpu.rs:63: entry never released: card0 drmm #1 \"vram\" (alloc, 4096 bytes) added at trace line 8",
            "examples/vgpu.rs:64: entry never released: card0 drmm #2 \"mode_config\" (action) added at trace line 9",
        ]
    );
    let report = drmm(&[
        "trace",
        "report",
        fixture("reference-held.jsonl").to_str().unwrap(),
    ]);
    assert_eq!(report.status.code(), Some(0));
    let text = stdout(&report);
    assert!(text.contains("Problems (4):"), "{text}");
    assert!(text.contains("NEVER RELEASED"), "{text}");
}

#[test]
fn unknown_ops_and_keys_are_ignored_and_counted() {
    let out = check("unknown-op.jsonl");
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(out.stdout.is_empty());
    let report = drmm(&[
        "trace",
        "report",
        fixture("unknown-op.jsonl").to_str().unwrap(),
    ]);
    assert!(
        stdout(&report).contains("1 event(s) with unknown op \"GPU_RESET\" ignored"),
        "{}",
        stdout(&report)
    );
}

/// Bad input: exit 2, nothing on stdout, exactly one line on stderr, no panic.
fn bad_input(args: &[&str], expected: &str) {
    let out = drmm(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty(), "{}", stdout(&out));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.starts_with("drmm: error: "), "{err}");
    assert!(err.contains(expected), "{expected:?} not in {err}");
}

#[test]
fn bad_input_gets_one_clear_line_and_exit_2() {
    let cases = [
        ("truncated.jsonl", "truncated.jsonl:11: truncated last line"),
        (
            "bad-json.jsonl",
            "bad-json.jsonl:4: bad JSON: expected `,` or `}`",
        ),
        (
            "version2.jsonl",
            "version2.jsonl:1: trace schema version 2 is not supported",
        ),
        ("empty.jsonl", "empty.jsonl: empty file, not a drmm trace"),
        (
            "no-header.jsonl",
            "no-header.jsonl:1: not a drmm trace header",
        ),
        ("no-such-file.jsonl", "cannot read"),
    ];
    for (name, expected) in cases {
        for command in ["check", "report"] {
            bad_input(
                &["trace", command, fixture(name).to_str().unwrap()],
                expected,
            );
        }
        let svg = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bad-input.svg");
        bad_input(
            &[
                "trace",
                "timeline",
                fixture(name).to_str().unwrap(),
                "-o",
                svg.to_str().unwrap(),
            ],
            expected,
        );
    }
}

#[test]
fn a_truncated_trace_is_analysed_when_allowed() {
    let out = drmm(&[
        "trace",
        "check",
        "--allow-truncated",
        fixture("truncated.jsonl").to_str().unwrap(),
    ]);
    // The cut trace ends before anything is released: its leaks are reported.
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("truncated.jsonl:11: truncated last line ignored"),
        "{err}"
    );
    assert!(stdout(&out).contains("entry never released"));
}

#[test]
fn help_on_every_command() {
    for args in [
        &["--help"][..],
        &["trace", "--help"],
        &["trace", "report", "--help"],
        &["trace", "check", "--help"],
        &["trace", "timeline", "--help"],
    ] {
        let out = drmm(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(stdout(&out).contains("Usage: drmm"), "{args:?}");
    }
    // A usage error is clap's: exit 2.
    assert_eq!(drmm(&["trace", "check"]).status.code(), Some(2));
}

/// A trace written by the library's recorder (its golden scenario, timestamps zeroed): read as
/// written; the scenario's deliberate access to a revoked `Devres` is its one problem.
#[test]
fn a_trace_written_by_the_recorder_reads_and_checks() {
    assert_eq!(
        one_problem("recorded.jsonl"),
        "tests/trace_golden.rs:86: access after revocation: trace_golden::Regs of vgpu.0 reached after it was revoked on thread T (trace line 29; refused, but in C a use-after-free)"
    );
    let out = drmm(&[
        "trace",
        "report",
        fixture("recorded.jsonl").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for expected in [
        // REPLACE carries the new size.
        "128 B",
        "(resized 1x)",
        "-> REM 0 ns",
        "tests/trace_golden.rs:84: gate refused on card0, 1x",
        "tests/trace_golden.rs:85: open refused on card0, 1x",
        "Problems (1):",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
}

#[test]
fn an_unwritable_timeline_is_one_error_line_and_exit_2() {
    let out = drmm(&[
        "trace",
        "timeline",
        fixture("clean.jsonl").to_str().unwrap(),
        "-o",
        "/nonexistent-dir/timeline.svg",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("drmm: error: cannot write /nonexistent-dir/timeline.svg: "),
        "{err}"
    );
}
