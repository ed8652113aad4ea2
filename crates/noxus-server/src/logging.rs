//! The server's log: `text` for people or `json` (one object per line) for
//! log pipelines, written on standard error by a background thread so that
//! no request ever waits on a write (nor wakes that thread), and the
//! per-request access line ([`ACCESS_TARGET`]).

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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

/// Where access lines go when the server writes them itself: with JSON
/// lines, the access line on and its target not named by the directives,
/// [`init`] installs this sink and the line is written straight into the
/// log's queue, in the same shape the JSON formatter gives it, without
/// `tracing`'s per-field dispatch and formatting (the line is the one log
/// line every request writes). Process-wide, like the log itself.
#[derive(Debug)]
pub struct AccessSink {
    queue: Arc<Queue>,
    /// Another layer (the trace exporter) also takes the access line, as a
    /// `tracing` event: it must still be sent.
    also_event: bool,
}

static ACCESS_SINK: OnceLock<AccessSink> = OnceLock::new();

/// The access-line sink, if [`init`] installed one (see [`AccessSink`]);
/// without it, the line is a `tracing` event.
pub fn access_sink() -> Option<&'static AccessSink> {
    ACCESS_SINK.get()
}

/// What an access line says.
#[derive(Debug, Clone, Copy)]
pub struct AccessLine<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    /// The route template; `None` when no route matched.
    pub route: Option<&'a str>,
    pub status: u16,
    pub latency_us: u64,
    pub key_id: Option<&'a str>,
    pub trace: Option<crate::trace_context::TraceParent>,
    /// When the answer was ready, in Unix microseconds (the line's time).
    pub unix_us: i64,
}

/// Longest access line with short strings; longer ones only grow the queue.
const ACCESS_LINE_BYTES: usize = 512;

impl AccessSink {
    /// Whether the line must also be sent as a `tracing` event.
    pub fn also_event(&self) -> bool {
        self.also_event
    }

    /// Queues the line (or counts it dropped when the queue is full).
    pub fn write(&self, line: &AccessLine<'_>) {
        let mut lines = self.queue.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() + ACCESS_LINE_BYTES > QUEUE_BYTES {
            drop(lines);
            self.queue.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        line.write_json(&mut lines, &utc_at(line.unix_us));
    }
}

impl AccessLine<'_> {
    /// The JSON line, as [`JsonLines`] formats the `tracing` event.
    fn write_json(&self, out: &mut Vec<u8>, time: &[u8; 27]) {
        fn string(out: &mut Vec<u8>, name: &str, value: &str) {
            out.extend_from_slice(name.as_bytes());
            push_json_str(out, value);
        }
        fn number(out: &mut Vec<u8>, name: &str, value: u64) {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        }
        out.extend_from_slice(b"{\"time\":\"");
        out.extend_from_slice(time);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"target\":\"");
        out.extend_from_slice(ACCESS_TARGET.as_bytes());
        out.push(b'"');
        string(out, ",\"request_id\":", self.request_id);
        string(out, ",\"method\":", self.method);
        if let Some(route) = self.route {
            string(out, ",\"route\":", route);
        }
        number(out, ",\"status\":", u64::from(self.status));
        number(out, ",\"latency_us\":", self.latency_us);
        if let Some(key_id) = self.key_id {
            string(out, ",\"key_id\":", key_id);
        }
        if let Some(trace) = self.trace {
            use std::io::Write as _;
            let _ = write!(
                out,
                ",\"trace_id\":\"{}\",\"parent_span_id\":\"{}\",\"trace_sampled\":{}",
                trace.trace_id,
                trace.parent_id,
                trace.sampled()
            );
        }
        out.extend_from_slice(b",\"message\":\"request\"}\n");
    }
}

/// A JSON string literal, quotes included, appended to bytes.
fn push_json_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    if any_needs_escape(text.as_bytes()) {
        let mut escaped = String::with_capacity(text.len() + 8);
        let _ = JsonEscaped(&mut escaped).write_str(text);
        out.extend_from_slice(escaped.as_bytes());
    } else {
        out.extend_from_slice(text.as_bytes());
    }
    out.push(b'"');
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
    let sink = AccessSink {
        queue: Arc::clone(&queue.0),
        also_event: extra.is_some(),
    };
    let writer = move || queue.clone();
    // JSON access lines are written by the server itself (`AccessSink`):
    // the formatting layer must not write them a second time.
    let direct_access = settings.format == LogFormat::Json && direct_access_line(settings);
    let filter = if direct_access {
        filter(&LogSettings {
            access_log: false,
            ..settings.clone()
        })
    } else {
        filter(settings)
    };
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
    if direct_access {
        // `try_init` succeeded: this is the process's first log.
        let _ = ACCESS_SINK.set(sink);
    }
    Ok(guard)
}

/// Whether the access line is on by the settings alone: on, and its target
/// not named by the directives (which then decide, through `tracing`).
fn direct_access_line(settings: &LogSettings) -> bool {
    settings.access_log
        && !settings
            .directives
            .as_deref()
            .is_some_and(|d| d.contains(ACCESS_TARGET))
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
        self.value(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.value(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.value(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.value(field, |w| w.write_str(itoa::Buffer::new().format(value)));
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

/// Whether `byte` must be escaped inside a JSON string (we also escape DEL).
const fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\' || byte == 0x7f
}

/// Whether any byte must be escaped: eight bytes at a time, as one 64-bit
/// word (a control byte, `"`, `\\` or DEL anywhere in it sets a high bit).
fn any_needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    /// Bytes of `word` equal to `byte` get their high bit (exact when no
    /// byte of `word` has its high bit set, which is checked apart).
    const fn equal(word: u64, byte: u8) -> u64 {
        let x = word ^ (ONES * byte as u64);
        x.wrapping_sub(ONES) & !x & HIGHS
    }
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let word = u64::from_ne_bytes(eight);
        // Non-ASCII bytes (high bit set) never need escaping; the checks
        // below assume ASCII, so such words take the byte-wise path.
        if word & HIGHS != 0 {
            if word_needs_escape_bytewise(&eight) {
                return true;
            }
            continue;
        }
        let control = word.wrapping_sub(ONES * 0x20) & HIGHS;
        if control | equal(word, b'"') | equal(word, b'\\') | equal(word, 0x7f) != 0 {
            return true;
        }
    }
    words.remainder().iter().any(|&b| needs_escape(b))
}

fn word_needs_escape_bytewise(bytes: &[u8; 8]) -> bool {
    bytes.iter().any(|&b| needs_escape(b))
}

impl<W: fmt::Write> fmt::Write for JsonEscaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Almost every string (ids, targets, routes, messages) has nothing
        // to escape: one check of all its bytes, one write.
        if !any_needs_escape(text.as_bytes()) {
            return self.0.write_str(text);
        }
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
    let now = utc_now();
    writer.write_str(std::str::from_utf8(&now).map_err(|_| fmt::Error)?)
}

/// The current time, as [`write_utc_now`] writes it.
fn utc_now() -> [u8; 27] {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    utc_text(since_epoch.as_secs(), since_epoch.subsec_micros())
}

/// [`utc_text`] of a time in Unix microseconds (times before 1970 as 1970).
fn utc_at(unix_us: i64) -> [u8; 27] {
    let unix_us = u64::try_from(unix_us).unwrap_or(0);
    utc_text(
        unix_us / 1_000_000,
        u32::try_from(unix_us % 1_000_000).unwrap_or(0),
    )
}

/// A time as RFC 3339 in UTC with microseconds. The calendar part changes
/// once a second: each thread keeps the last one it wrote, so that most
/// lines only add their microseconds.
fn utc_text(unix_seconds: u64, micros: u32) -> [u8; 27] {
    /// `YYYY-MM-DDTHH:MM:SS.` of one second.
    type Prefix = (u64, [u8; 20]);
    thread_local! {
        static LAST_SECOND: std::cell::Cell<Option<Prefix>> = const { std::cell::Cell::new(None) };
    }
    let prefix = match LAST_SECOND.get() {
        Some((second, prefix)) if second == unix_seconds => prefix,
        _ => {
            let prefix = calendar_prefix(unix_seconds);
            LAST_SECOND.set(Some((unix_seconds, prefix)));
            prefix
        }
    };
    let mut text = [0u8; 27];
    text[..20].copy_from_slice(&prefix);
    let mut rest = micros.min(999_999);
    for digit in text[20..26].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    text[26] = b'Z';
    text
}

/// `YYYY-MM-DDTHH:MM:SS.` of a Unix time (UTC).
fn calendar_prefix(unix_seconds: u64) -> [u8; 20] {
    let at = i64::try_from(unix_seconds)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (year, month, day) = at.to_calendar_date();
    let (hour, minute, second) = at.to_hms();
    let mut text = String::with_capacity(20);
    let _ = write!(
        text,
        "{:04}-{:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.",
        year.clamp(0, 9999),
        u8::from(month)
    );
    let mut prefix = [b'0'; 20];
    if text.len() == 20 {
        prefix.copy_from_slice(text.as_bytes());
    }
    prefix
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

    /// What the JSON formatter writes for the events of `body` that
    /// `filter` lets through.
    fn json_text(filter: EnvFilter, body: impl FnOnce()) -> String {
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
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn json_lines(body: impl FnOnce()) -> Vec<serde_json::Value> {
        json_text(EnvFilter::new("debug"), body)
            .lines()
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
    fn a_direct_access_line_is_the_line_the_formatter_writes_for_the_event() {
        let trace = crate::trace_context::TraceParent::parse(
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        assert!(trace.is_some());
        for (route, key_id, trace, method) in [
            (Some("/v1/models/llms"), Some("3f0c2a4e"), trace, "GET"),
            (None, None, None, "BREW\"\\"),
        ] {
            let line = AccessLine {
                request_id: "req_8ZKq2m0bN1xYc4TfQe7L",
                method,
                route,
                status: 200,
                latency_us: 84,
                key_id,
                trace,
                unix_us: 1_764_559_000_123_456,
            };
            let mut direct = Vec::new();
            line.write_json(&mut direct, &utc_at(line.unix_us));
            assert_eq!(direct.iter().filter(|b| **b == b'\n').count(), 1);
            assert!(direct.ends_with(b"}\n"));
            let mut direct: serde_json::Value = serde_json::from_slice(&direct).unwrap();
            let mut formatted = json_lines(|| {
                tracing::info!(
                    target: "noxus::access",
                    parent: None,
                    request_id = line.request_id,
                    method = line.method,
                    route = line.route,
                    status = line.status,
                    latency_us = line.latency_us,
                    key_id = line.key_id,
                    trace_id = line.trace.map(|t| tracing::field::display(t.trace_id)),
                    parent_span_id = line.trace.map(|t| tracing::field::display(t.parent_id)),
                    trace_sampled = line.trace.map(|t| t.sampled()),
                    "request"
                );
            });
            assert_eq!(formatted.len(), 1);
            let formatted = &mut formatted[0];
            for value in [&mut direct, &mut *formatted] {
                let time = value["time"].take();
                let time = time.as_str().unwrap();
                assert!(
                    time::OffsetDateTime::parse(
                        time,
                        &time::format_description::well_known::Rfc3339
                    )
                    .is_ok(),
                    "{time}"
                );
            }
            assert_eq!(&direct, formatted);
        }
    }

    #[test]
    fn the_word_check_finds_exactly_the_bytes_to_escape() {
        for byte in 0..=255u8 {
            for at in 0..19 {
                let mut text = vec![b'a'; 19];
                text[at] = byte;
                assert_eq!(
                    any_needs_escape(&text),
                    needs_escape(byte),
                    "byte {byte:#x} at {at}"
                );
                text[(at + 5) % 19] = 0xc3; // a non-ASCII neighbour
                assert_eq!(
                    any_needs_escape(&text),
                    needs_escape(byte),
                    "byte {byte:#x} at {at} beside 0xc3"
                );
            }
        }
        assert!(!any_needs_escape(b""));
        assert!(!any_needs_escape(
            "req_8ZKq2m0bN1xYc4TfQe7L /v1/models/llms é".as_bytes()
        ));
    }

    #[test]
    fn timestamps_match_rfc3339_across_second_and_year_boundaries() {
        let cases = [
            (0u64, 0u32),
            (1_700_000_000, 5),
            (1_700_000_000, 999_999),
            (1_700_000_001, 0),
            (1_735_689_599, 123_456), // 2024-12-31T23:59:59
            (1_735_689_600, 1),       // 2025-01-01T00:00:00
            (1_735_689_599, 7),       // back to a second already passed
            (4_102_444_800, 42),      // 2100-01-01
        ];
        for (seconds, micros) in cases {
            let written = String::from_utf8(utc_text(seconds, micros).to_vec()).unwrap();
            let expected = time::OffsetDateTime::from_unix_timestamp(seconds as i64).unwrap()
                + time::Duration::microseconds(i64::from(micros));
            let format = time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
            );
            assert_eq!(
                written,
                expected.format(&format).unwrap(),
                "{seconds}.{micros}"
            );
        }
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
        json_text(filter, body).lines().count()
    }
}
