//! The story on stdout, and a progress bar on stderr for large runs on a terminal.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};
use vgpu::Lifetime;
use vgpu::scenario::{Options, Story};

/// Client turns from which a run counts as large (a bar is shown).
const LARGE: usize = 2_000;

/// Prints the story (unless quiet) and drives the bar.
pub(super) struct Printer {
    quiet: bool,
    bar: Option<ProgressBar>,
}

impl Printer {
    pub(super) fn new(quiet: bool) -> Self {
        Printer { quiet, bar: None }
    }

    pub(super) fn title(&mut self, opts: &Options) {
        let mode = match opts.lifetime {
            Lifetime::Drmm => "drmm: userspace-visible state lives until the last reference",
            Lifetime::DevmEverywhere => {
                "--devm-everywhere: userspace-visible state wrongly tied to the binding"
            }
        };
        self.out(&format!(
            "drmm demo: a virtual GPU hot-unplugged under {} clients ({} buffers, {} work items each, seed {})\nmode: {mode}",
            opts.clients, opts.buffers, opts.work, opts.seed
        ));
    }

    fn out(&self, text: &str) {
        if self.quiet {
            return;
        }
        let write = || {
            // A closed pipe is not worth a panic: the story is informational.
            let _ = writeln!(std::io::stdout().lock(), "{text}");
        };
        match &self.bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }

    pub(super) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Story for Printer {
    fn plan(&mut self, turns: usize) {
        if turns >= LARGE && std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(turns as u64);
            if let Ok(style) =
                ProgressStyle::with_template("{bar:40} {pos}/{len} client turns {elapsed}")
            {
                bar.set_style(style);
            }
            self.bar = Some(bar);
        }
    }

    fn step(&mut self, number: usize, title: &str) {
        self.out(&format!("\n{number}. {title}"));
    }

    fn line(&mut self, text: &str) {
        self.out(&format!("   {text}"));
    }

    fn tick(&mut self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }
}
