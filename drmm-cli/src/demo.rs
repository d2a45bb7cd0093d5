//! `drmm demo`: the virtual GPU's hot-unplug story.

use std::process::ExitCode;

/// Options of `drmm demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {}

/// Runs the demo.
pub(crate) fn run(_args: DemoArgs) -> ExitCode {
    eprintln!("drmm demo: not built yet");
    ExitCode::FAILURE
}
