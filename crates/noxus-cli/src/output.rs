//! Output for people (aligned tables, colour only on a terminal and never
//! with NO_COLOR) and for scripts (`--json`), errors on stderr, and a
//! spinner while a request takes more than a moment.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anstyle::{AnsiColor, Style};
use serde::Serialize;

const BOLD: Style = Style::new().bold();
const GREEN: Style = AnsiColor::Green.on_default();
const YELLOW: Style = AnsiColor::Yellow.on_default().bold();
const RED: Style = AnsiColor::Red.on_default().bold();
const DIM: Style = Style::new().dimmed();

/// Where and how to print.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// `--json`.
    pub json: bool,
}

impl Output {
    /// For this run.
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// Prints a value as pretty JSON on stdout.
    pub fn print_json<T: Serialize>(&self, value: &T) {
        match serde_json::to_string_pretty(value) {
            Ok(text) => anstream::println!("{text}"),
            Err(e) => self.error(&format!("cannot render JSON: {e}")),
        }
    }

    /// A plain line on stdout.
    pub fn line(&self, text: &str) {
        anstream::println!("{text}");
    }

    /// `label: value` with the label bold.
    pub fn field(&self, label: &str, value: &str) {
        anstream::println!("{BOLD}{label:<12}{BOLD:#} {value}");
    }

    /// A success line (green check) on stdout.
    pub fn success(&self, text: &str) {
        anstream::println!("{GREEN}✓{GREEN:#} {text}");
    }

    /// A warning on stderr.
    pub fn warn(&self, text: &str) {
        anstream::eprintln!("{YELLOW}warning:{YELLOW:#} {text}");
    }

    /// `error: ...` on stderr.
    pub fn error(&self, text: &str) {
        anstream::eprintln!("{RED}error:{RED:#} {text}");
    }

    /// A dim follow-up line on stderr.
    pub fn error_hint(&self, text: &str) {
        anstream::eprintln!("{DIM}{text}{DIM:#}");
    }

    /// An aligned table with a bold header; "(none)" when empty.
    pub fn table(&self, headers: &[&str], rows: &[Vec<String>]) {
        if rows.is_empty() {
            anstream::println!("{DIM}(none){DIM:#}");
            return;
        }
        let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
        for row in rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let pad = |text: &str, width: usize| {
            format!(
                "{text}{}",
                " ".repeat(width.saturating_sub(text.chars().count()))
            )
        };
        let header: Vec<String> = headers
            .iter()
            .zip(&widths)
            .map(|(h, w)| pad(h, *w))
            .collect();
        anstream::println!("{BOLD}{}{BOLD:#}", header.join("  ").trim_end());
        for row in rows {
            let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| pad(c, *w)).collect();
            anstream::println!("{}", cells.join("  ").trim_end());
        }
    }
}

/// Shows a spinner on stderr (a terminal only) until dropped, starting
/// after 300 ms so that quick answers print nothing extra.
pub struct Spinner {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spinner {
    /// Starts one with a message.
    pub fn start(message: &str) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        if !std::io::stderr().is_terminal() {
            return Self { done, thread: None };
        }
        let flag = Arc::clone(&done);
        let message = message.to_owned();
        let thread = std::thread::spawn(move || {
            for _ in 0..15 {
                if flag.load(Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            let mut i = 0;
            let mut shown = false;
            while !flag.load(Ordering::Acquire) {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r{} {message}", frames[i % frames.len()]);
                let _ = err.flush();
                shown = true;
                i += 1;
                drop(err);
                std::thread::sleep(Duration::from_millis(80));
            }
            if shown {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r{}\r", " ".repeat(message.chars().count() + 2));
                let _ = err.flush();
            }
        });
        Self {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs a future with a spinner.
pub async fn waiting<T>(message: &str, future: impl std::future::Future<Output = T>) -> T {
    let _spinner = Spinner::start(message);
    future.await
}
