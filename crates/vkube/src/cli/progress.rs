//! Step-by-step progress on stderr, each finished step with the time it took: a live spinner on
//! a terminal, plain lines in a pipe (so logs and CI read the same facts).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    spinner: Option<ProgressBar>,
    step_started: Instant,
    started: Instant,
}

impl Progress {
    pub fn new() -> Progress {
        let spinner = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .expect("a valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress {
            spinner,
            step_started: Instant::now(),
            started: Instant::now(),
        }
    }

    /// What is being waited for now (a terminal shows it live; a pipe gets nothing until done).
    pub fn waiting(&mut self, message: impl Into<String>) {
        if let Some(bar) = &self.spinner {
            bar.set_message(message.into());
        }
    }

    /// A step is done: one line with the time since the previous step ended.
    pub fn done(&mut self, message: impl AsRef<str>) {
        let line = format!(
            "done {} ({})",
            message.as_ref(),
            seconds(self.step_started.elapsed())
        );
        match &self.spinner {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
        self.step_started = Instant::now();
    }

    /// A line of output from what runs (a pod's progress), shown as it is.
    pub fn note(&mut self, line: &str) {
        match &self.spinner {
            Some(bar) => bar.println(format!("  {line}")),
            None => eprintln!("  {line}"),
        }
    }

    pub fn total(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn finish(self) {
        if let Some(bar) = self.spinner {
            bar.finish_and_clear();
        }
    }
}

pub fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}
