//! The `drmm` command: the hot-unplug demo and the tools that read a recorded trace.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;
#[cfg(all(feature = "serve", target_os = "linux"))]
mod serve;
mod trace;

/// Managed resources tied to the lifetime of a device: demo and trace tools.
#[derive(Debug, Parser)]
#[command(name = "drmm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the virtual GPU hot-unplug demo.
    Demo(demo::DemoArgs),
    /// Read a recorded trace (JSON lines written by `drmm::trace::record_to`).
    #[command(subcommand)]
    Trace(trace::TraceCommand),
    /// Serve the virtual GPU as a file in a FUSE mount at DIR, until it is unplugged and its
    /// last file closed.
    #[cfg(all(feature = "serve", target_os = "linux"))]
    Serve(serve::ServeArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Demo(args) => demo::run(args),
        Command::Trace(command) => trace::run(command),
        #[cfg(all(feature = "serve", target_os = "linux"))]
        Command::Serve(args) => serve::run(args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
