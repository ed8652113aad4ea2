//! The server's log: `text` for people or `json` (one object per line) for
//! log pipelines, written on standard error by a background thread so that
//! no request ever waits on a write (nor wakes that thread), and the
//! per-request access line ([`ACCESS_TARGET`]).

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// The target of the one line logged per request (method, route template,
/// status, latency, key id, trace id). It is an `info` line, on unless
/// [`LogSettings::access_log`] is off.
pub const ACCESS_TARGET: &str = "noxus::access";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `tracing`'s human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `time`, `level`, `target`, `message`, then
    /// the line's fields (see docs/ops/logging.md).
    Json,
}

/// What [`init`] installs.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Text or JSON.
    pub format: LogFormat,
    /// Whether the per-request access line is logged.
    pub access_log: bool,
    /// `tracing` directives (`NOXUS_LOG`), `info` when absent or invalid.
    pub directives: Option<String>,
    /// Colours in text lines (when standard error is a terminal).
    pub ansi: bool,
}

/// Keeps the log's writer thread alive; dropping it writes what is still
/// queued and says how many lines were dropped because standard error did
/// not keep up.
#[must_use = "dropping the guard stops the log's writer"]
#[derive(Debug)]
pub struct LogGuard {
    queue: Arc<Queue>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let dropped = self.queue.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            eprintln!(
                "{dropped} log lines were dropped because standard error did not keep up (at most {} MiB of lines wait)",
                QUEUE_BYTES >> 20
            );
        }
    }
}

/// Bytes of lines that may wait for the writer thread; beyond that new
/// lines are dropped (and counted) rather than making requests wait.
const QUEUE_BYTES: usize = 16 << 20;

/// How often the writer thread writes what was queued meanwhile.
const WRITE_INTERVAL: Duration = Duration::from_millis(20);

/// Lines waiting for the writer thread. A request appends its line under a
/// short lock (no allocation once the buffer has grown, no system call, no
/// wake-up of another thread); the writer thread takes them all every
/// [`WRITE_INTERVAL`] and writes them with one call.
#[derive(Debug, Default)]
struct Queue {
    lines: Mutex<Vec<u8>>,
    dropped: AtomicU64,
}

/// What the formatting layers write to: the [`Queue`].
#[derive(Debug, Clone)]
struct QueueWriter(Arc<Queue>);

impl std::io::Write for QueueWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut lines = self.0.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() + line.len() > QUEUE_BYTES {
            drop(lines);
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            lines.extend_from_slice(line);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts the writer thread: every [`WRITE_INTERVAL`], and once more when
/// the guard is dropped, it writes the queued lines to `out`.
fn start_writer(mut out: impl std::io::Write + Send + 'static) -> (QueueWriter, LogGuard) {
    let queue = Arc::new(Queue::default());
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let thread = {
        let queue = Arc::clone(&queue);
        std::thread::Builder::new()
            .name("noxus-log-writer".to_owned())
            .spawn(move || {
                let mut writing = Vec::new();
                loop {
                    let last = !matches!(
                        stopped.recv_timeout(WRITE_INTERVAL),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    );
                    std::mem::swap(
                        &mut writing,
                        &mut *queue.lines.lock().unwrap_or_else(|p| p.into_inner()),
                    );
                    if !writing.is_empty() {
                        // Nowhere to report a failed write but standard error itself.
                        let _ = out.write_all(&writing).and_then(|()| out.flush());
                        writing.clear();
                    }
                    if last {
                        break;
                    }
                }
            })
    };
    let guard = LogGuard {
        queue: Arc::clone(&queue),
        stop: Some(stop),
        thread: thread.ok(),
    };
    (QueueWriter(queue), guard)
}

/// The `tracing` filter of the settings: `NOXUS_LOG`'s directives (or
/// `info`), with the access line turned on or off unless the directives
/// name its target themselves.
pub fn filter(settings: &LogSettings) -> EnvFilter {
    let directives = settings
        .directives
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty());
    let base = directives
        .and_then(|d| EnvFilter::try_new(d).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let names_access = directives.is_some_and(|d| d.contains(ACCESS_TARGET));
    let access = if !settings.access_log {
        Some("off")
    } else if names_access {
        None
    } else {
        Some("info")
    };
    match access.and_then(|level| format!("{ACCESS_TARGET}={level}").parse().ok()) {
        Some(directive) => base.add_directive(directive),
        None => base,
    }
}

/// Installs the process's log: the settings' format on standard error
/// through a background writer, plus `extra` (e.g. a trace exporter) with
/// its own filter. Fails if a logger is already installed.
pub fn init(
    settings: &LogSettings,
    extra: Option<Box<dyn Layer<Registry> + Send + Sync>>,
) -> anyhow::Result<LogGuard> {
    let (queue, guard) = start_writer(std::io::stderr());
    let writer = move || queue.clone();
    let filter = filter(settings);
    let lines: Box<dyn Layer<_> + Send + Sync> = match settings.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(settings.ansi)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields)
            .event_format(JsonLines)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(extra)
        .with(lines)
        .try_init()
        .map_err(|err| anyhow::anyhow!("cannot install the log: {err}"))?;
    Ok(guard)
}

/// Formats events as JSON lines: `{"time":…,"level":…,"target":…,
/// "message":…, <span fields>, <event fields>}`, written straight into the
/// line's buffer (no intermediate values).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

/// Formats span fields as `"name":value` pairs, spliced into the lines of
/// the events inside the span.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonFields;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Events from the `log` crate carry their real target in fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str("{\"time\":\"")?;
        write_utc_now(&mut writer)?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_str("\",\"target\":")?;
        write_json_str(&mut writer, meta.target())?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<JsonFields>>() {
                    if !fields.fields.is_empty() {
                        writer.write_char(',')?;
                        writer.write_str(&fields.fields)?;
                    }
                }
            }
        }
        let mut visitor = JsonVisitor {
            writer: &mut writer,
            first: false,
            result: Ok(()),
        };
        event.record(&mut visitor);
        visitor.result?;
        writer.write_str("}\n")
    }
}

impl<'writer> FormatFields<'writer> for JsonFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = JsonVisitor {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut visitor = JsonVisitor {
            first: current.fields.is_empty(),
            writer: &mut current.as_writer(),
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes each field as `,"name":value` (without the comma for the first
/// when `first`).
struct JsonVisitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl JsonVisitor<'_, '_> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        if self.first {
            self.first = false;
        } else {
            self.writer.write_char(',')?;
        }
        write_json_str(self.writer, field.name())?;
        self.writer.write_char(':')
    }

    fn value(&mut self, field: &Field, write: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        // The `log` crate's metadata, already used for the target.
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        self.result = self.key(field).and_then(|()| write(self.writer));
    }
}

impl Visit for JsonVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.value(field, |w| write_json_str(w, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.value(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.value(field, |w| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.value(field, |w| write!(w, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.value(field, |w| write!(w, "{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.value(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.value(field, |w| write!(w, "{value}"));
        } else {
            // JSON has no NaN or infinity.
            self.value(field, |w| write!(w, "\"{value}\""));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.value(field, |w| {
            w.write_char('"')?;
            write!(JsonEscaped(w), "{value}")?;
            w.write_char('"')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.value(field, |w| {
            w.write_char('"')?;
            write!(JsonEscaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// A JSON string literal, quotes included.
fn write_json_str(writer: &mut impl fmt::Write, text: &str) -> fmt::Result {
    writer.write_char('"')?;
    JsonEscaped(writer).write_str(text)?;
    writer.write_char('"')
}

/// Escapes what is written through it for the inside of a JSON string.
struct JsonEscaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for JsonEscaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain = 0;
        for (at, byte) in text.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f | 0x7f => "",
                _ => continue,
            };
            self.0.write_str(&text[plain..at])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = at + 1;
        }
        self.0.write_str(&text[plain..])
    }
}

/// The current time as RFC 3339 in UTC with microseconds
/// (`2025-01-31T12:34:56.789012Z`).
fn write_utc_now(writer: &mut impl fmt::Write) -> fmt::Result {
    let now = time::OffsetDateTime::now_utc();
    let (year, month, day) = now.to_calendar_date();
    let (hour, minute, second, micro) = now.to_hms_micro();
    write!(
        writer,
        "{year:04}-{:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{micro:06}Z",
        u8::from(month)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what the layer writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn json_lines(body: impl FnOnce()) -> Vec<serde_json::Value> {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(JsonFields)
                .event_format(JsonLines)
                .with_writer(move || writer.clone())
                .with_filter(EnvFilter::new("debug")),
        );
        tracing::subscriber::with_default(subscriber, body);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect()
    }

    #[test]
    fn every_line_is_one_json_object_with_its_span_and_event_fields() {
        let lines = json_lines(|| {
            let span = tracing::info_span!(
                "request",
                request_id = "req_1",
                key_id = tracing::field::Empty
            );
            let _entered = span.enter();
            span.record("key_id", "k-1");
            tracing::warn!(
                target: "noxus::test",
                count = 3u64,
                ok = true,
                ratio = f64::NAN,
                text = "quote \" backslash \\ newline \n tab \t bell \u{7} é",
                debug = ?vec!["a\"b"],
                "the \"message\"\n"
            );
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["target"], "noxus::test");
        assert_eq!(line["message"], "the \"message\"\n");
        assert_eq!(line["request_id"], "req_1");
        assert_eq!(line["key_id"], "k-1");
        assert_eq!(line["count"], 3);
        assert_eq!(line["ok"], true);
        assert_eq!(line["ratio"], "NaN");
        assert_eq!(
            line["text"],
            "quote \" backslash \\ newline \n tab \t bell \u{7} é"
        );
        assert_eq!(line["debug"], "[\"a\\\"b\"]");
        let time = line["time"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
                .is_ok(),
            "{time}"
        );
        assert!(time.ends_with('Z') && time.len() == 27, "{time}");
    }

    #[test]
    fn the_access_line_follows_the_setting_unless_the_directives_name_it() {
        let settings = |access_log, directives: Option<&str>| LogSettings {
            format: LogFormat::Json,
            access_log,
            directives: directives.map(str::to_owned),
            ansi: false,
        };
        let shown = |filter: EnvFilter| {
            let count = json_lines_with(filter, || {
                tracing::info!(target: ACCESS_TARGET, "request");
            });
            count == 1
        };
        assert!(shown(filter(&settings(true, None))));
        assert!(shown(filter(&settings(true, Some("warn")))));
        assert!(!shown(filter(&settings(false, None))));
        assert!(!shown(filter(&settings(false, Some("debug")))));
        assert!(!shown(filter(&settings(
            true,
            Some("info,noxus::access=off")
        ))));
        // Invalid directives fall back to `info`.
        assert!(shown(filter(&settings(true, Some("=#!")))));
    }

    #[test]
    fn queued_lines_are_all_written_by_the_time_the_guard_is_dropped() {
        let out = Buffer::default();
        let (queue, guard) = start_writer(out.clone());
        for i in 0..1000 {
            std::io::Write::write_all(&mut queue.clone(), format!("line {i}\n").as_bytes())
                .unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
    }

    fn json_lines_with(filter: EnvFilter, body: impl FnOnce()) -> usize {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(JsonFields)
                .event_format(JsonLines)
                .with_writer(move || writer.clone())
                .with_filter(filter),
        );
        tracing::subscriber::with_default(subscriber, body);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines().count()
    }
}
