//! Following a run from the terminal (`noxus workflows run --wait`): its
//! events as node-by-node progress on stderr (a line per event when stderr
//! is not a terminal), then its output on stdout.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Instant;

use anstyle::{AnsiColor, Style};
use futures_util::StreamExt;
use noxus_sdk::{Error as SdkError, Run, RunEvent, RunEventKind, RunStatus};
use serde_json::Value;

use crate::output::Output;

const GREEN: Style = AnsiColor::Green.on_default();
const RED: Style = AnsiColor::Red.on_default().bold();
const YELLOW: Style = AnsiColor::Yellow.on_default();
const DIM: Style = Style::new().dimmed();

/// Follows the run to its end, showing its progress on stderr, and returns
/// it as it ended: completed, failed or stopped (the caller decides what
/// each means). Reads the run's event stream; when the stream cannot be
/// used, the SDK's `wait` takes over (it polls).
pub async fn follow(run: &Run, labels: &HashMap<String, String>) -> Result<Run, SdkError> {
    let mut display = Progress::new(labels, std::io::stderr().is_terminal());
    display.begin(run);
    let mut streamed_to_end = false;
    {
        let mut events = std::pin::pin!(run.stream());
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    display.show(&event);
                    if event.is_terminal() {
                        streamed_to_end = true;
                        break;
                    }
                }
                Err(err @ (SdkError::Unauthorized(_) | SdkError::Forbidden(_))) => {
                    display.close(Mark::Failed);
                    return Err(err);
                }
                Err(err) => {
                    display.note(&format!(
                        "the event stream cannot be followed ({err}); reading the run until it ends"
                    ));
                    break;
                }
            }
        }
    }
    display.close(Mark::Done);
    let ended = if streamed_to_end {
        run.refresh().await?
    } else {
        run.clone()
    };
    let ended = if ended.status.is_terminal() {
        ended
    } else {
        match ended.wait().await {
            Ok(run) => run,
            Err(SdkError::RunFailed(run) | SdkError::RunStopped(run)) => *run,
            Err(err) => return Err(err),
        }
    };
    display.end(&ended);
    Ok(ended)
}

/// Prints a completed run's output on stdout: the text alone when there
/// is one output node, `name: text` lines when there are several.
pub fn print_output(out: &Output, run: &Run) {
    let Some(Value::Object(outputs)) = &run.output else {
        return;
    };
    let text = |value: &Value| match value.get("text") {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => value.to_string(),
    };
    if outputs.len() == 1 {
        if let Some(value) = outputs.values().next() {
            out.line(&text(value));
        }
        return;
    }
    let mut names: Vec<&String> = outputs.keys().collect();
    names.sort();
    for name in names {
        let short = name.strip_suffix("::output").unwrap_or(name);
        out.field(short, &text(&outputs[name]));
    }
}

/// How an open node line is closed.
#[derive(Debug, Clone, Copy)]
enum Mark {
    Done,
    Failed,
    Stopped,
}

/// The progress display on stderr.
struct Progress<'a> {
    labels: &'a HashMap<String, String>,
    /// A terminal: one line per node, rewritten when it ends. Otherwise
    /// one plain line per event.
    live: bool,
    /// The node line being shown (terminal only), without its mark.
    open: Option<String>,
    started: Instant,
}

impl<'a> Progress<'a> {
    fn new(labels: &'a HashMap<String, String>, live: bool) -> Self {
        Self {
            labels,
            live,
            open: None,
            started: Instant::now(),
        }
    }

    fn name(&self, node_id: &str) -> String {
        let short: String = node_id.chars().take(8).collect();
        match self.labels.get(node_id) {
            Some(label) => printable(&format!("{label} ({short})")),
            None => printable(node_id),
        }
    }

    fn begin(&mut self, run: &Run) {
        if self.live {
            anstream::eprintln!("{DIM}run {}{DIM:#}", printable(&run.id));
        } else {
            anstream::eprintln!("run {} {}", printable(&run.id), run.status);
        }
    }

    fn note(&mut self, text: &str) {
        self.close(Mark::Done);
        anstream::eprintln!("{YELLOW}{}{YELLOW:#}", printable(text));
    }

    fn show(&mut self, event: &RunEvent) {
        if self.live {
            self.show_live(event);
        } else {
            anstream::eprintln!("{}", self.line(event));
        }
    }

    fn line(&self, event: &RunEvent) -> String {
        match &event.kind {
            RunEventKind::Queued => "queued".to_owned(),
            RunEventKind::Started => "started".to_owned(),
            RunEventKind::NodeStarted {
                node_id,
                index,
                total,
            } => match (index, total) {
                (Some(index), Some(total)) => {
                    format!("node {}/{total} started: {}", index + 1, self.name(node_id))
                }
                _ => format!("node started: {}", self.name(node_id)),
            },
            RunEventKind::NodeFinished { node_id } => {
                format!("node finished: {}", self.name(node_id))
            }
            RunEventKind::Progress { progress, node_id } => match node_id {
                Some(node_id) => format!("progress {progress}% ({} finished)", self.name(node_id)),
                None => format!("progress {progress}%"),
            },
            RunEventKind::Completed => "completed".to_owned(),
            RunEventKind::Failed { error } => match error {
                Some(error) => format!("failed: {}", printable(error)),
                None => "failed".to_owned(),
            },
            RunEventKind::Stopped => "stopped".to_owned(),
            RunEventKind::Other(kind) => printable(kind),
            _ => "event".to_owned(),
        }
    }

    fn show_live(&mut self, event: &RunEvent) {
        match &event.kind {
            RunEventKind::NodeStarted {
                node_id,
                index,
                total,
            } => {
                self.close(Mark::Done);
                let place = match (index, total) {
                    (Some(index), Some(total)) => format!("[{}/{total}] ", index + 1),
                    _ => String::new(),
                };
                let text = format!("{place}{}", self.name(node_id));
                let mut err = anstream::stderr();
                let _ = write!(err, "  ▸ {text}");
                let _ = err.flush();
                self.open = Some(text);
            }
            RunEventKind::NodeFinished { .. } | RunEventKind::Progress { .. } => {
                self.close(Mark::Done);
            }
            RunEventKind::Failed { .. } => self.close(Mark::Failed),
            RunEventKind::Stopped => self.close(Mark::Stopped),
            _ => {}
        }
    }

    /// Ends the open node line (a terminal only) with its mark.
    fn close(&mut self, mark: Mark) {
        let Some(text) = self.open.take() else {
            return;
        };
        let mut err = anstream::stderr();
        let _ = match mark {
            Mark::Done => writeln!(err, "\r\x1b[2K  {GREEN}✓{GREEN:#} {text}"),
            Mark::Failed => writeln!(err, "\r\x1b[2K  {RED}✗{RED:#} {text}"),
            Mark::Stopped => writeln!(err, "\r\x1b[2K  {YELLOW}■{YELLOW:#} {text}"),
        };
        let _ = err.flush();
    }

    fn end(&mut self, run: &Run) {
        self.close(match run.status {
            RunStatus::Failed => Mark::Failed,
            RunStatus::Stopped => Mark::Stopped,
            _ => Mark::Done,
        });
        if !self.live {
            return;
        }
        let took = self.started.elapsed().as_secs_f64();
        match run.status {
            RunStatus::Completed => {
                anstream::eprintln!("{GREEN}✓{GREEN:#} completed in {took:.1} s");
            }
            RunStatus::Failed => anstream::eprintln!("{RED}✗{RED:#} failed after {took:.1} s"),
            RunStatus::Stopped => {
                anstream::eprintln!("{YELLOW}■{YELLOW:#} stopped after {took:.1} s");
            }
            ref other => anstream::eprintln!("{} after {took:.1} s", printable(other.as_str())),
        }
    }
}

/// Text from the server or a definition, safe to print on a terminal:
/// control characters (escape sequences that could rewrite the screen)
/// are shown escaped, and it is kept to one line of at most 300 characters.
fn printable(text: &str) -> String {
    let mut shown = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == 300 {
            shown.push('…');
            break;
        }
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn server_text_cannot_drive_the_terminal() {
        assert_eq!(printable("a\u{1b}[2Jb\nc"), "a\\u{1b}[2Jb\\nc");
        assert_eq!(printable(&"x".repeat(400)).chars().count(), 301);
    }
}
