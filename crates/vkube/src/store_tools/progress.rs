//! Progress of a long copy on stderr: a bar with keys/s and the time left on a terminal, a plain
//! line every few seconds in a pipe (logs and CI read the same facts).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often a pipe gets a line.
const EVERY: Duration = Duration::from_secs(2);

pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    started: Instant,
    /// Keys done (including those there before), keys done by this run, and the last line's time.
    plain: Mutex<(u64, u64, Instant)>,
}

impl Progress {
    pub fn new(total: u64, done: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} keys, {per_sec}, {eta} left ({elapsed})",
                )
                .expect("a valid template"),
            );
            bar.set_position(done);
            bar.reset_eta();
            bar
        });
        Progress {
            bar,
            total,
            started: Instant::now(),
            plain: Mutex::new((done, 0, Instant::now())),
        }
    }

    pub fn inc(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            return;
        }
        let mut plain = self.plain.lock().unwrap_or_else(|e| e.into_inner());
        plain.0 += 1;
        plain.1 += 1;
        if plain.2.elapsed() >= EVERY {
            plain.2 = Instant::now();
            eprintln!(
                "vkube: {}",
                line(self.total, plain.0, plain.1, self.started.elapsed())
            );
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `done/total keys, N keys/s, about Ts left`: the rate of this run's keys.
fn line(total: u64, done: u64, by_us: u64, took: Duration) -> String {
    let rate = by_us as f64 / took.as_secs_f64().max(1e-3);
    let left = total.saturating_sub(done) as f64 / rate.max(1e-3);
    format!("{done}/{total} keys, {rate:.0} keys/s, about {left:.0}s left")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_plain_line_has_the_rate_and_the_time_left() {
        assert_eq!(
            super::line(10_000, 3_000, 2_000, std::time::Duration::from_secs(2)),
            "3000/10000 keys, 1000 keys/s, about 7s left"
        );
    }
}
