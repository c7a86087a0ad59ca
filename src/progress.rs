//! Visible waits and colour, the way a native CLI shows them: on a terminal a live spinner with
//! the elapsed time; without one (CI logs, pipes) the same progress as one plain stderr line, so
//! logs stay readable and carry no control characters. Colour only on a terminal, never with
//! `NO_COLOR` (https://no-color.org).

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the spinner redraws.
const TICK: Duration = Duration::from_millis(120);

/// A wait in progress; it ends (the spinner leaves one final line) when dropped.
pub struct Wait {
    bar: Option<ProgressBar>,
}

impl Wait {
    /// `quiet`: show nothing (-q).
    pub fn start(message: String, quiet: bool) -> Self {
        if quiet {
            return Self { bar: None };
        }
        if !std::io::stderr().is_terminal() {
            eprintln!("{message}");
            return Self { bar: None };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .expect("the template is valid")
                .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
        );
        bar.set_message(message);
        bar.enable_steady_tick(TICK);
        Self { bar: Some(bar) }
    }

    /// Prints a result line on stdout without tearing the spinner.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            // The spinner becomes a plain line saying what was waited for and how long.
            bar.set_style(
                ProgressStyle::with_template("  {msg} [{elapsed}]").expect("the template is valid"),
            );
            bar.finish();
        }
    }
}

/// Progress through a known number of items: a bar with rate and ETA on a terminal; without one,
/// a plain stderr line at most every [`PLAIN_EVERY`] and one at the end.
pub struct Count {
    bar: Option<ProgressBar>,
    plain: Option<std::sync::Mutex<Plain>>,
    done: std::sync::atomic::AtomicUsize,
    total: usize,
    verb: &'static str,
}

struct Plain {
    last: std::time::Instant,
}

/// How often the plain (non-terminal) progress line is repeated.
pub const PLAIN_EVERY: Duration = Duration::from_secs(2);

impl Count {
    /// `verb` says what happens to the items, e.g. "imported"; `quiet` shows nothing.
    pub fn start(total: usize, verb: &'static str, quiet: bool) -> Self {
        let (bar, plain) = if quiet {
            (None, None)
        } else if std::io::stderr().is_terminal() {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {human_pos}/{human_len} {msg} ({per_sec}, {eta} left)",
                )
                .expect("the template is valid"),
            );
            bar.set_message(verb);
            (Some(bar), None)
        } else {
            let plain = Plain {
                last: std::time::Instant::now(),
            };
            (None, Some(std::sync::Mutex::new(plain)))
        };
        Self {
            bar,
            plain,
            done: std::sync::atomic::AtomicUsize::new(0),
            total,
            verb,
        }
    }

    pub fn add(&self, n: usize) {
        let done = self.done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        if let Some(bar) = &self.bar {
            bar.inc(n as u64);
        }
        if let Some(plain) = &self.plain {
            let mut plain = plain.lock().expect("not poisoned");
            if plain.last.elapsed() >= PLAIN_EVERY {
                plain.last = std::time::Instant::now();
                eprintln!("{} {done}/{} devices", self.verb, self.total);
            }
        }
    }
}

impl Drop for Count {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
        if self.plain.is_some() {
            eprintln!(
                "{} {}/{} devices",
                self.verb,
                self.done.load(std::sync::atomic::Ordering::Relaxed),
                self.total
            );
        }
    }
}

/// Whether stdout may carry colour: a terminal, and `NO_COLOR` unset or empty.
pub fn colour() -> bool {
    colour_for(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

fn colour_for(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[derive(Clone, Copy, Debug)]
pub enum Colour {
    Green,
    Red,
    Yellow,
}

/// `text` in `colour` when `on`, else as is.
pub fn paint(text: &str, colour: Colour, on: bool) -> String {
    if !on {
        return text.to_string();
    }
    let code = match colour {
        Colour::Green => "32",
        Colour::Red => "31",
        Colour::Yellow => "33",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        assert!(colour_for(true, None));
        assert!(
            colour_for(true, Some(OsStr::new(""))),
            "an empty NO_COLOR is unset"
        );
        assert!(!colour_for(true, Some(OsStr::new("1"))));
        assert!(!colour_for(false, None));
    }

    #[test]
    fn painting_off_leaves_text_alone() {
        assert_eq!(paint("FAIL", Colour::Red, false), "FAIL");
        assert_eq!(paint("FAIL", Colour::Red, true), "\x1b[31mFAIL\x1b[0m");
    }
}
