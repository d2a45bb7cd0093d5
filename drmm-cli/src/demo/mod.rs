//! `drmm demo`: the virtual GPU's hot-unplug story, told step by step, then a summary.
//!
//! The driver is the `vgpu` crate; the story (client threads on a seeded schedule) is
//! `vgpu::scenario`. This module reads the options, prints, and decides the exit status.

mod print;
mod summary;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use vgpu::Lifetime;
use vgpu::scenario::{self, Options};

/// Options of `drmm demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Client threads, each with its own open file.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=2_000))]
    clients: u32,
    /// Buffer objects each client creates and maps.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    buffers: u32,
    /// Work items each client submits.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    work: u32,
    /// Seed of the schedule: which client moves when, the unplug moment, the values written.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Tie the driver's userspace-visible state to the binding (devm) instead of the device
    /// (drmm): the bug drmm removes. Every access it causes after the unplug is caught and
    /// reported, and the exit status is 1.
    #[arg(long)]
    devm_everywhere: bool,
    /// Print only the summary (and the report of caught accesses).
    #[arg(long, short)]
    quiet: bool,
    /// Where to write the trace and the timeline [default: drmm-demo in the temporary dir].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

impl DemoArgs {
    fn options(&self) -> Options {
        Options {
            clients: self.clients as usize,
            buffers: self.buffers as usize,
            work: self.work as usize,
            seed: self.seed,
            lifetime: if self.devm_everywhere {
                Lifetime::DevmEverywhere
            } else {
                Lifetime::Drmm
            },
        }
    }

    fn out_dir(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("drmm-demo"))
    }
}

/// Runs the demo: 0 when every list was released with nothing leaked and nothing caught,
/// 1 when an access after revocation was caught (always, with `--devm-everywhere`) or
/// something leaked, 2 if the demo itself failed.
pub(crate) fn run(args: DemoArgs) -> ExitCode {
    let opts = args.options();
    let dir = args.out_dir();
    let trace_path = dir.join("trace.jsonl");
    // Recording starts before the driver probes, so the trace holds every device's whole life.
    let recording = match std::fs::create_dir_all(&dir)
        .map_err(|e| e.to_string())
        .and_then(|()| drmm::trace::record_to(&trace_path).map_err(|e| e.to_string()))
    {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!(
                "drmm demo: cannot record the trace in {}: {e}",
                dir.display()
            );
            return ExitCode::from(2);
        }
    };
    let mut printer = print::Printer::new(args.quiet);
    printer.title(&opts);
    let outcome = match scenario::run(&opts, &mut printer) {
        Ok(outcome) => outcome,
        Err(e) => {
            printer.finish();
            eprintln!("drmm demo: {e}");
            return ExitCode::from(2);
        }
    };
    printer.finish();
    let clean = summary::print(&opts, &outcome);
    if let Err(e) = recording.finish() {
        eprintln!("drmm demo: writing {}: {e}", trace_path.display());
        return ExitCode::from(2);
    }
    match write_outputs(&trace_path, &dir.join("timeline.svg")) {
        Ok(outputs) => outputs.print(&trace_path),
        Err(e) => {
            eprintln!("drmm demo: {e}");
            return ExitCode::from(2);
        }
    }
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What the recorded trace of a run says, and where its timeline went.
struct Outputs {
    timeline: PathBuf,
    problems: Vec<String>,
}

impl Outputs {
    fn print(&self, trace: &Path) {
        println!();
        println!("trace:    {}", trace.display());
        println!("timeline: {}", self.timeline.display());
        if self.problems.is_empty() {
            println!("drmm trace check: no problem in the trace");
        } else {
            println!(
                "drmm trace check: {} problem(s) in the trace:",
                self.problems.len()
            );
            for p in &self.problems {
                println!("  {p}");
            }
        }
    }
}

/// Reads the run's trace back (the same analysis as `drmm trace check`) and draws its SVG
/// timeline at `svg`.
fn write_outputs(trace: &Path, svg: &Path) -> Result<Outputs, String> {
    let analysis = crate::trace::analyse(trace)?;
    crate::trace::timeline_svg(&analysis, svg)?;
    Ok(Outputs {
        timeline: svg.to_path_buf(),
        problems: analysis.problem_lines(),
    })
}
