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
    match write_outputs(&args.out_dir()) {
        Ok(files) => {
            for f in files {
                println!("wrote {}", f.display());
            }
        }
        Err(e) => {
            eprintln!("drmm demo: writing the outputs: {e}");
            return ExitCode::from(2);
        }
    }
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Writes the run's trace (JSON lines) and its SVG timeline into `dir`, returning their
/// paths. Nothing yet: the recorder and `drmm trace timeline` plug in here.
fn write_outputs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let _ = dir;
    Ok(Vec::new())
}
