//! `drmm trace`: report, check and timeline of a recorded trace.
//!
//! Exit status: 0 when the command did its work (and, for `check`, found no problem), 1 when
//! `check` found problems, 2 when the trace cannot be read or the output cannot be written
//! (one line on stderr). Usage errors are clap's, also 2.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

mod analysis;
mod parse;
mod raw;
mod report;
mod timeline;

/// Where the trace comes from.
#[derive(Debug, clap::Args)]
pub(crate) struct Input {
    /// The trace (JSON lines written by the drmm recorder).
    file: PathBuf,
    /// Analyse a trace whose last line was cut mid-write (the program died while recording)
    /// instead of refusing it; the cut line is dropped with a warning.
    #[arg(long)]
    allow_truncated: bool,
}

/// The `drmm trace` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TraceCommand {
    /// Every device's lifetime and entries, then the problems found.
    Report {
        #[command(flatten)]
        input: Input,
    },
    /// The problems only: silent and exit 0 when clean, one line each and exit 1 otherwise.
    ///
    /// Each line starts with the source `file:line` the problem points at (or the trace's
    /// `file:line` when the trace has no source location for it). Exit status 2 when the trace
    /// cannot be read.
    Check {
        #[command(flatten)]
        input: Input,
    },
    /// An SVG timeline of every entry's lifetime, grouped by device and list.
    ///
    /// Beyond 200 entries, rows are aggregated by call site (name and file:line).
    Timeline {
        #[command(flatten)]
        input: Input,
        /// Where to write the SVG.
        #[arg(short, long)]
        output: PathBuf,
        /// The horizontal axis: the events' timestamps, or their order in the trace (evenly
        /// spaced; chosen by itself when every timestamp is equal).
        #[arg(long, value_enum, default_value_t = timeline::Axis::Time)]
        axis: timeline::Axis,
    },
}

/// Exit status of `check` with problems.
const PROBLEMS: u8 = 1;
/// Exit status for unreadable input or unwritable output.
const BAD_INPUT: u8 = 2;

/// Runs a `drmm trace` subcommand.
pub(crate) fn run(command: TraceCommand) -> ExitCode {
    let input = match &command {
        TraceCommand::Report { input }
        | TraceCommand::Check { input }
        | TraceCommand::Timeline { input, .. } => input,
    };
    let mut analyser = analysis::Analyser::new(&input.file.display().to_string());
    let read = parse::read(&input.file, input.allow_truncated, &mut |event| {
        analyser.step(&event);
    });
    let trace = match read {
        Ok(trace) => trace,
        Err(e) => {
            eprintln!("drmm: error: {e}");
            return ExitCode::from(BAD_INPUT);
        }
    };
    if let Some(line) = trace.truncated {
        eprintln!(
            "drmm: warning: {}:{line}: truncated last line ignored (the trace was cut mid-write)",
            trace.path
        );
    }
    let analysis = analyser.finish(&trace);
    match command {
        TraceCommand::Report { .. } => to_stdout(ExitCode::SUCCESS, |out| {
            report::write(out, &trace, &analysis)
        }),
        TraceCommand::Check { .. } => {
            let code = if analysis.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(PROBLEMS)
            };
            to_stdout(code, |out| {
                for p in &analysis.problems {
                    writeln!(out, "{}", p.render(&trace.path))?;
                }
                Ok(())
            })
        }
        TraceCommand::Timeline { output, axis, .. } => {
            match timeline::write(&output, &trace, &analysis, axis) {
                Ok(summary) => {
                    eprintln!("drmm: wrote {}: {summary}", output.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("drmm: error: cannot write {}: {e}", output.display());
                    ExitCode::from(BAD_INPUT)
                }
            }
        }
    }
}

/// A trace read and analysed in one go (for `drmm demo`).
pub(crate) struct Analysed {
    trace: parse::Trace,
    analysis: analysis::Analysis,
}

impl Analysed {
    /// The problems, one line each, as `drmm trace check` prints them.
    pub(crate) fn problem_lines(&self) -> Vec<String> {
        self.analysis
            .problems
            .iter()
            .map(|p| p.render(&self.trace.path))
            .collect()
    }
}

/// Reads and analyses the trace at `path`.
pub(crate) fn analyse(path: &std::path::Path) -> Result<Analysed, String> {
    let mut analyser = analysis::Analyser::new(&path.display().to_string());
    let trace =
        parse::read(path, false, &mut |event| analyser.step(&event)).map_err(|e| e.to_string())?;
    let analysis = analyser.finish(&trace);
    Ok(Analysed { trace, analysis })
}

/// Draws the timeline of an analysed trace into `svg`.
pub(crate) fn timeline_svg(a: &Analysed, svg: &std::path::Path) -> Result<(), String> {
    timeline::write(svg, &a.trace, &a.analysis, timeline::Axis::Time)
        .map(drop)
        .map_err(|e| format!("cannot write {}: {e}", svg.display()))
}

/// Runs `f` on a buffered stdout; a closed pipe (`| head`) ends quietly with `code`.
fn to_stdout(code: ExitCode, f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> ExitCode {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match f(&mut out).and_then(|()| out.flush()) {
        Ok(()) => code,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => code,
        Err(e) => {
            eprintln!("drmm: error: cannot write the output: {e}");
            ExitCode::from(BAD_INPUT)
        }
    }
}

/// A duration in nanoseconds, with a unit that fits: `850 ns`, `12.3 µs`, `4.250 ms`, `1.500 s`.
pub(crate) fn human_time(ns: u64) -> String {
    let f = ns as f64;
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", f / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.3} ms", f / 1e6)
    } else {
        format!("{:.3} s", f / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = include_str!("../../tests/fixtures/clean.jsonl");

    /// Reads, analyses, reports and draws `text`; only a panic fails.
    fn pipeline(text: &str) {
        let mut analyser = analysis::Analyser::new("x");
        let read = parse::read_lines(
            &mut text.as_bytes(),
            "x",
            true,
            &mut |e| analyser.step(&e),
            |_| {},
        );
        let Ok(trace) = read else {
            return;
        };
        let a = analyser.finish(&trace);
        let mut out = Vec::new();
        report::write(&mut out, &trace, &a).unwrap();
        let _ = timeline::render(&trace, &a, timeline::Axis::Time);
        let _ = timeline::render(&trace, &a, timeline::Axis::Order);
    }

    /// Cut at every byte, every event line dropped, repeated or moved to the end, every number
    /// set to 0 and to `u64::MAX`, every op swapped for every other op: no panic anywhere.
    #[test]
    fn no_input_derived_from_a_real_trace_panics() {
        for cut in 0..CLEAN.len() {
            if CLEAN.is_char_boundary(cut) {
                pipeline(&CLEAN[..cut]);
            }
        }
        let lines: Vec<&str> = CLEAN.lines().collect();
        for number in ["0", "4294967295", "18446744073709551615"] {
            let every: Vec<String> = std::iter::once(lines[0].to_owned())
                .chain(lines[1..].iter().map(|l| numbers_set_to(l, number)))
                .collect();
            pipeline(&every.join("\n"));
        }
        for key in ["t", "size", "dev", "entry", "ref_id"] {
            let every: Vec<String> = std::iter::once(lines[0].to_owned())
                .chain(
                    lines[1..]
                        .iter()
                        .map(|l| key_set_to(l, key, "18446744073709551615")),
                )
                .collect();
            pipeline(&every.join("\n"));
        }
        let ops: Vec<&str> = lines[1..]
            .iter()
            .filter_map(|l| l.split("\"op\":\"").nth(1))
            .filter_map(|rest| rest.split('"').next())
            .collect();
        for i in 1..lines.len() {
            let mut v = lines.clone();
            v.remove(i);
            pipeline(&v.join("\n"));
            let mut v = lines.clone();
            v.insert(i, lines[i]);
            pipeline(&v.join("\n"));
            let mut v = lines.clone();
            let moved = v.remove(i);
            v.push(moved);
            pipeline(&v.join("\n"));
            for number in ["0", "18446744073709551615"] {
                let mut v: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
                v[i] = numbers_set_to(lines[i], number);
                pipeline(&v.join("\n"));
            }
            for op in &ops {
                let mut v: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
                if let Some(old) = lines[i]
                    .split("\"op\":\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                {
                    v[i] =
                        lines[i].replace(&format!("\"op\":\"{old}\""), &format!("\"op\":\"{op}\""));
                }
                pipeline(&v.join("\n"));
            }
        }
    }

    /// Every JSON number of `line` replaced by `number` (a `line` key beyond u32 is then an
    /// error, which is fine: only panics matter).
    fn numbers_set_to(line: &str, number: &str) -> String {
        let mut out = String::new();
        let mut in_number = false;
        let mut in_string = false;
        for c in line.chars() {
            if c == '"' {
                in_string = !in_string;
            }
            if !in_string && c.is_ascii_digit() {
                if !in_number {
                    out.push_str(number);
                }
                in_number = true;
                continue;
            }
            in_number = false;
            out.push(c);
        }
        out
    }

    /// The value of `"key":N` in `line` replaced by `number`.
    fn key_set_to(line: &str, key: &str, number: &str) -> String {
        let pattern = format!("\"{key}\":");
        let Some(at) = line.find(&pattern) else {
            return line.to_owned();
        };
        let start = at + pattern.len();
        let end = line[start..]
            .find(|c: char| !c.is_ascii_digit())
            .map_or(line.len(), |n| start + n);
        format!("{}{number}{}", &line[..start], &line[end..])
    }

    #[test]
    fn times_read_well() {
        assert_eq!(human_time(850), "850 ns");
        assert_eq!(human_time(12_345), "12.3 µs");
        assert_eq!(human_time(4_250_000), "4.250 ms");
        assert_eq!(human_time(1_500_000_000), "1.500 s");
    }
}
