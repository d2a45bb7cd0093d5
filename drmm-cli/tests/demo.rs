//! `drmm demo` run as a real process: exit statuses, the story on stdout, stderr.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh output directory per run: tests run in parallel.
fn out_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "drmm-demo-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn demo_in(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drmm"))
        .arg("demo")
        .arg("--out")
        .arg(dir)
        .args(args)
        .output()
        .expect("drmm runs")
}

fn demo(args: &[&str]) -> Output {
    demo_in(&out_dir(), args)
}

fn check(trace: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drmm"))
        .args(["trace", "check"])
        .arg(trace)
        .output()
        .expect("drmm runs")
}

/// The summary's count of caught accesses.
fn caught_count(out: &str) -> usize {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("use-after-free caught"))
        .expect("the summary counts them")
        .trim()
        .parse()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("UTF-8")
}

/// The step titles, without what depends on the seed.
fn steps(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.len() > 2 && l.as_bytes()[0].is_ascii_digit() && &l[1..3] == ". ")
        .map(|l| l.split(" while ").next().unwrap_or(l).to_owned())
        .collect()
}

#[test]
fn demo_tells_the_story_and_exits_0() {
    let o = demo(&[]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert_eq!(
        steps(&out),
        [
            "1. probe vgpu.0",
            "2. register card0",
            "3. clients open card0, create and map buffers",
            "4. clients submit work (schedule from seed 1)",
            "5. hot-unplug vgpu.0",
            "6. after the unplug: clients carry on",
            "7. clients close one by one",
        ]
    );
    for line in [
        "finished inside the gate during the unplug",
        "-> error: device unplugged (ENODEV)",
        "device unplugged (ENODEV): queued work canceled before it ran",
        "still readable through its mapping",
        "[devres] register window (4 KiB memfd mapping) unmapped",
        "the last reference to card0: released now",
        "[drmm] mode config cleaned up (4 of 4 objects reachable)",
        "[device] driver data (Gpu) dropped, last",
        "leaks                      0",
        "use-after-free caught      0",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    // The driver data is the very last thing released.
    let released: Vec<&str> = out.lines().filter(|l| l.contains("] ")).collect();
    assert!(
        released
            .last()
            .unwrap()
            .contains("driver data (Gpu) dropped, last")
    );
    assert!(!out.contains("CAUGHT"));
    // Not a terminal: no progress bar, nothing on stderr.
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn devm_everywhere_reports_each_caught_access_and_exits_1() {
    let o = demo(&["--devm-everywhere"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let caught = caught_count(&out);
    assert!(caught > 0);
    let report: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("caught accesses:"))
        .filter(|l| {
            l.trim_start()
                .split(". ")
                .next()
                .is_some_and(|n| n.parse::<usize>().is_ok())
        })
        .collect();
    assert_eq!(
        report.len(),
        caught,
        "one report line per caught access:\n{out}"
    );
    for l in &report {
        assert!(
            l.contains(" read by client-") && l.contains(" after the unbind of vgpu.0"),
            "{l}"
        );
    }
    assert!(
        report
            .iter()
            .any(|l| l.contains("mode object connector-0 read by client-"))
    );
    assert!(
        report
            .iter()
            .any(|l| l.contains("work queue vgpu-wq read by client-"))
    );
    assert!(
        report
            .iter()
            .any(|l| l.contains("bo 1 pages read by client-"))
    );
    assert_eq!(out.matches(": CAUGHT use after free of ").count(), caught);
    assert!(
        out.contains("leaks                      0"),
        "revoked, not leaked:\n{out}"
    );
}

#[test]
fn both_modes_tell_the_story_in_the_same_steps() {
    let drmm = stdout(&demo(&["--seed", "9"]));
    let devm = stdout(&demo(&["--seed", "9", "--devm-everywhere"]));
    assert_eq!(steps(&drmm), steps(&devm));
    assert!(drmm.contains("drmm list of card0: 7 entries"));
    assert!(devm.contains("drmm list of card0: 2 entries"));
    assert!(devm.contains("devres list of vgpu.0: 9 entries"));
}

#[test]
fn the_same_seed_gives_the_same_story() {
    // Vblank interrupts are real time: the only line that may differ.
    let story = |seed: &str| {
        stdout(&demo(&["--seed", seed, "--clients", "4", "--work", "5"]))
            .lines()
            .filter(|l| !l.contains("vblank"))
            // The output files are in a fresh directory per run.
            .filter(|l| !l.starts_with("trace:") && !l.starts_with("timeline:"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(story("42"), story("42"));
    assert_ne!(story("42"), story("43"));
}

#[test]
fn quiet_prints_the_summary_only() {
    let o = demo(&["--quiet", "--clients", "20", "--work", "10"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(!out.contains("1. probe"));
    assert!(out.starts_with("\nsummary (drmm)"), "{out}");
    assert!(out.contains("leaks                      0"));
    let o = demo(&["--quiet", "--devm-everywhere"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("caught accesses:"));
}

#[test]
fn bad_options_are_usage_errors() {
    for args in [&["--clients", "0"][..], &["--work", "x"], &["--nope"]] {
        let o = demo(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(o.stdout.is_empty());
        assert!(!o.stderr.is_empty());
    }
}

#[test]
fn the_demo_writes_a_clean_trace_and_its_timeline() {
    let dir = out_dir();
    let o = demo_in(&dir, &[]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let trace = dir.join("trace.jsonl");
    let svg = dir.join("timeline.svg");
    assert!(
        out.contains(&format!("trace:    {}", trace.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("timeline: {}", svg.display())),
        "{out}"
    );
    assert!(
        out.contains("drmm trace check: no problem in the trace"),
        "{out}"
    );
    let text = std::fs::read_to_string(&trace).unwrap();
    assert!(
        text.starts_with("{\"schema\":\"drmm-trace\",\"version\":1"),
        "{text}"
    );
    for op in ["PROBE", "UNPLUG", "UNBIND", "LAST_REF", "RELEASE_END"] {
        assert!(
            text.contains(&format!("\"op\":\"{op}\"")),
            "no {op} in the trace"
        );
    }
    let c = check(&trace);
    assert_eq!(c.status.code(), Some(0), "{}", stdout(&c));
    assert!(c.stdout.is_empty());
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.contains("<svg") && picture.contains("UNPLUG card0"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn devm_everywhere_trace_check_names_each_caught_access() {
    let dir = out_dir();
    let o = demo_in(&dir, &["--devm-everywhere"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let caught = caught_count(&out);
    let c = check(&dir.join("trace.jsonl"));
    assert_eq!(c.status.code(), Some(1));
    let lines = stdout(&c);
    assert_eq!(
        lines.matches("access after revocation").count(),
        caught,
        "the trace names every access the demo caught:\n{lines}"
    );
    assert!(
        out.contains(&format!(
            "drmm trace check: {caught} problem(s) in the trace"
        )),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
