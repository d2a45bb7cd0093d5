//! `drmm trace`: report, check and timeline of a recorded trace.

use std::path::PathBuf;
use std::process::ExitCode;

/// The `drmm trace` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TraceCommand {
    /// Every device's lifetime and entries, then the problems found.
    Report {
        /// The trace (JSON lines).
        file: PathBuf,
    },
    /// The problems only: silent and exit 0 when clean, one line each and exit 1 otherwise.
    Check {
        /// The trace (JSON lines).
        file: PathBuf,
    },
    /// An SVG timeline of every entry's lifetime.
    Timeline {
        /// The trace (JSON lines).
        file: PathBuf,
        /// Where to write the SVG.
        #[arg(short, long)]
        output: PathBuf,
    },
}

/// Runs a `drmm trace` subcommand.
pub(crate) fn run(_command: TraceCommand) -> ExitCode {
    eprintln!("drmm trace: not built yet");
    ExitCode::FAILURE
}
