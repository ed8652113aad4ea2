//! The front door: accepts TCP connections and serves HTTP/1.1 on them with
//! hyper, so that no client can hold a connection (and its file descriptor)
//! for ever: a cap on open connections (answered with 503 above it), a
//! deadline for each request head, an idle deadline between requests, and a
//! graceful shutdown that lets in-flight requests finish.
//!
//! The request-body timeout lives in the router
//! ([`crate::http::body_timeout`]), where it can answer with our JSON 408.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tower::Service as _;

/// File descriptors kept out of the connection cap: standard streams, the
/// listener, the runtime's own, the SQLite pool (database, WAL and
/// shared-memory files per connection), and the sockets being refused.
pub const RESERVED_FILE_DESCRIPTORS: u64 = 128;

/// Over-cap connections answered with 503 at the same time; more are closed
/// without an answer.
const REFUSAL_SLOTS: usize = 32;

/// How long a refused connection is kept to deliver its 503 and read what
/// the client sent (closing with unread data would reset the connection and
/// could destroy the answer before the client reads it).
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// Deadlines of a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionTimeouts {
    /// From accepting a connection, or from the first byte of a later
    /// request, until that request's head (request line and headers) is in.
    pub header_read: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle: Duration,
}

/// How many connections may be open at once: the configured number, but
/// never more than the file-descriptor limit (soft `RLIMIT_NOFILE`) minus
/// [`RESERVED_FILE_DESCRIPTORS`], at least 1. Also returns that limit.
pub fn effective_connection_cap(configured: usize) -> (usize, Option<u64>) {
    let configured = configured.max(1);
    let limit = file_descriptor_limit();
    let cap = match limit {
        Some(soft) => {
            let usable = soft.saturating_sub(RESERVED_FILE_DESCRIPTORS).max(1);
            configured.min(usize::try_from(usable).unwrap_or(usize::MAX))
        }
        None => configured,
    };
    (cap, limit)
}

#[cfg(unix)]
fn file_descriptor_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

#[cfg(not(unix))]
fn file_descriptor_limit() -> Option<u64> {
    None
}

/// Serves `router` (the application) on `listener` until `shutdown` completes, then stops
/// accepting and waits for the open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: crate::app::App,
    max_connections: usize,
    timeouts: ConnectionTimeouts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (cap, fd_limit) = effective_connection_cap(max_connections);
    if cap < max_connections {
        tracing::warn!(
            configured = max_connections,
            max_connections = cap,
            fd_limit = fd_limit.unwrap_or_default(),
            "the file-descriptor limit (ulimit -n) lowers the connection cap; raise it to accept more connections"
        );
    }
    tracing::info!(
        max_connections = cap,
        fd_limit = fd_limit.map_or_else(|| "unlimited".to_owned(), |l| l.to_string()),
        header_read_timeout_ms = timeouts.header_read.as_millis() as u64,
        idle_timeout_ms = timeouts.idle.as_millis() as u64,
        "accepting connections"
    );

    let mut builder = http1::Builder::new();
    // Our stream wrapper enforces the deadlines (header read and idle).
    // hyper's own header timer is off: it re-armed a timer on every request
    // of a kept-alive connection, for a deadline the wrapper already keeps.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true)
        // Answers are written as one buffer (head and body copied
        // together, one `write`) rather than gathered by `writev`: our
        // answers are mostly small JSON, for which the copy is cheaper than
        // the kernel's vectored path (+5% requests per second in
        // `bench/stack_floor`); event streams still go out frame by frame.
        .writev(false);
    let permits = Arc::new(Semaphore::new(cap));
    let refusals = Arc::new(Semaphore::new(REFUSAL_SLOTS));
    let refused_log = RefusedLog::default();
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    accept_error(err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            refused_log.note(cap);
            refuse(stream, &refusals);
            continue;
        };
        // Small writes go out at once: an event stream's frame must not wait
        // (Nagle) for the client's delayed acknowledgement of the previous
        // one, up to 40 ms on Linux. Answers are written whole anyway.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
        }
        let clock = Arc::new(ConnectionClock::new(timeouts));
        let io = TokioIo::new(TimedStream::new(stream, Arc::clone(&clock)));
        let service = {
            // hyper calls the service through `&self`; the connection's own
            // copy of the application, borrowed for each call, saves cloning
            // it (two reference counts up and down) on every request. The
            // calls of one connection never overlap (each returns before
            // the next), so the borrow cannot fail.
            let router = std::cell::RefCell::new(router.clone());
            hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                // The request's slot, one extension: the peer address (what
                // axum's `ConnectInfo` carries) and the request's start, read
                // once here (the request layer's latency and the key check
                // count from it).
                request
                    .extensions_mut()
                    .insert(crate::usage::KeySlot::for_peer(
                        peer,
                        std::time::Instant::now(),
                    ));
                let in_flight = InFlight::start(Arc::clone(&clock));
                // The application is always ready (axum's router is): no
                // `poll_ready` round before the call.
                let answer = router.borrow_mut().call(request.map(Body::new));
                async move {
                    let response = answer.await;
                    drop(in_flight);
                    response
                }
            })
        };
        let connection = graceful.watch(builder.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
            drop(permit);
        });
    }
    // Closing the listening socket makes new connection attempts fail at once.
    drop(listener);
    tracing::info!(
        open_connections = graceful.count(),
        "stopped accepting; finishing open requests"
    );
    graceful.shutdown().await;
}

/// Logs accept errors. Running out of file descriptors (or memory) would
/// make `accept` fail again at once: wait a little before the next try.
async fn accept_error(err: io::Error) {
    match err.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionRefused
        | io::ErrorKind::Interrupted => {}
        _ => {
            tracing::warn!(error = %err, "cannot accept a connection; retrying in 100 ms");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One warning per second at most while connections are being refused.
#[derive(Debug, Default)]
struct RefusedLog {
    refused: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

impl RefusedLog {
    fn note(&self, cap: usize) {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
            *last = Some(now);
            self.refused.store(0, Ordering::Relaxed);
            tracing::warn!(
                max_connections = cap,
                refused,
                "connection cap reached: answering new connections with 503"
            );
        }
    }
}

/// The answer to a connection over the cap: 503 with our error body.
fn refusal_response() -> Vec<u8> {
    let request_id = crate::http::middleware::new_request_id();
    let body = serde_json::json!({
        "detail": "The server is at its connection limit; try again in a moment",
        "code": "service_unavailable",
        "request_id": request_id,
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nx-request-id: {request_id}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers an over-cap connection with 503 and closes it, using one of a
/// few refusal slots; with none free, closes it at once.
fn refuse(stream: TcpStream, refusals: &Arc<Semaphore>) {
    let Ok(slot) = Arc::clone(refusals).try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _slot = slot;
        let mut stream = stream;
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            stream.write_all(&refusal_response()).await?;
            stream.shutdown().await?;
            // Read (and drop) what the client sent until it closes, so that
            // our close does not reset the connection under the answer.
            let mut sink = [0u8; 4096];
            let mut drained = 0usize;
            while drained < 64 * 1024 {
                let n = stream.read(&mut sink).await?;
                if n == 0 {
                    break;
                }
                drained += n;
            }
            Ok::<(), io::Error>(())
        })
        .await;
    });
}

/// Where a connection is in its life, to know which deadline applies.
///
/// Only the connection's own task touches it (its stream, and the requests
/// hyper serves on it one after the other, polled within that task): plain
/// atomic loads and stores suffice, no lock and no read-modify-write, which
/// would cost a locked instruction each, several times per request. It
/// reads the clock only when a deadline needs the time: not for a request
/// whose head came in whole, and not for the first write of an answer
/// (the answer's own time stands for it).
#[derive(Debug)]
struct ConnectionClock {
    timeouts: ConnectionTimeouts,
    accepted_at: Instant,
    /// Requests handed to the application and not answered yet.
    in_flight: AtomicUsize,
    /// Requests answered.
    served: AtomicU64,
    /// Last activity after the previous answer (the answer itself, or bytes
    /// of it written since), in nanoseconds since `accepted_at`.
    idle_since: AtomicU64,
    /// First byte of the next request: [`NO_HEAD`], [`HEAD_BEGUN`] (bytes
    /// came, the time is read when a deadline needs it), or nanoseconds
    /// since `accepted_at`.
    head_started: AtomicU64,
    /// An answer was just given: its first write needs no clock reading.
    answered: AtomicBool,
}

/// No byte of a next request yet.
const NO_HEAD: u64 = u64::MAX;
/// Bytes of a next request came; when is read on demand.
const HEAD_BEGUN: u64 = u64::MAX - 1;

impl ConnectionClock {
    fn new(timeouts: ConnectionTimeouts) -> Self {
        Self {
            timeouts,
            accepted_at: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(NO_HEAD),
            answered: AtomicBool::new(false),
        }
    }

    fn since(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.accepted_at).as_nanos())
            .unwrap_or(HEAD_BEGUN - 1)
            .min(HEAD_BEGUN - 1)
    }

    fn at(&self, nanos: u64) -> Instant {
        self.accepted_at + Duration::from_nanos(nanos)
    }

    /// When the connection must be closed if nothing changes, if ever.
    fn deadline(&self) -> Option<Instant> {
        self.deadline_with(Instant::now)
    }

    /// [`Self::deadline`], reading the time (when a head began and its
    /// time is not known yet) from `now`.
    fn deadline_with(&self, now: impl FnOnce() -> Instant) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            // The application has the request; the body timeout and the
            // handlers bound what happens now.
            return None;
        }
        if self.served.load(Ordering::Relaxed) == 0 {
            return Some(self.accepted_at + self.timeouts.header_read);
        }
        let started = match self.head_started.load(Ordering::Relaxed) {
            NO_HEAD => {
                let idle_since = self.at(self.idle_since.load(Ordering::Relaxed));
                return Some(idle_since + self.timeouts.idle);
            }
            HEAD_BEGUN => {
                let now = now();
                self.head_started.store(self.since(now), Ordering::Relaxed);
                now
            }
            nanos => self.at(nanos),
        };
        Some(started + self.timeouts.header_read)
    }

    /// Bytes arrived.
    fn received(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == NO_HEAD
        {
            self.head_started.store(HEAD_BEGUN, Ordering::Relaxed);
        }
    }

    /// Bytes of an answer left: at `now`, or (the first write after an
    /// answer) at the answer's time, already noted.
    fn sent(&self, now: impl FnOnce() -> Instant) {
        if self.answered.load(Ordering::Relaxed) {
            self.answered.store(false, Ordering::Relaxed);
            return;
        }
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == NO_HEAD
        {
            self.idle_since.store(self.since(now()), Ordering::Relaxed);
        }
    }

    fn request_started(&self) {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        self.in_flight.store(in_flight + 1, Ordering::Relaxed);
        self.head_started.store(NO_HEAD, Ordering::Relaxed);
        self.answered.store(false, Ordering::Relaxed);
    }

    fn request_ended(&self, now: Instant) {
        let in_flight = self.in_flight.load(Ordering::Relaxed).saturating_sub(1);
        self.in_flight.store(in_flight, Ordering::Relaxed);
        let served = self.served.load(Ordering::Relaxed);
        self.served.store(served + 1, Ordering::Relaxed);
        if in_flight == 0 {
            self.idle_since.store(self.since(now), Ordering::Relaxed);
            self.head_started.store(NO_HEAD, Ordering::Relaxed);
            self.answered.store(true, Ordering::Relaxed);
        }
    }
}

/// A request the application is working on; dropping it (answered or
/// cancelled) starts the idle wait.
struct InFlight(Arc<ConnectionClock>);

impl InFlight {
    fn start(clock: Arc<ConnectionClock>) -> Self {
        clock.request_started();
        Self(clock)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended(Instant::now());
    }
}

/// A TCP stream whose reads fail with `TimedOut` once the connection's
/// deadline passes; hyper then closes the connection.
struct TimedStream {
    stream: TcpStream,
    clock: Arc<ConnectionClock>,
    sleep: Pin<Box<Sleep>>,
    /// The waker the timer holds since it was last polled (not reset
    /// since): polling it again with the same one would only register the
    /// same waker again, with a few atomic operations each time.
    timer_waker: Option<std::task::Waker>,
}

impl TimedStream {
    fn new(stream: TcpStream, clock: Arc<ConnectionClock>) -> Self {
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        Self {
            stream,
            clock,
            sleep: Box::pin(tokio::time::sleep_until(far)),
            timer_waker: None,
        }
    }
}

impl AsyncRead for TimedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.clock.received();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => match this.arm(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent no complete request in time",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl TimedStream {
    /// Makes sure the task is woken at the connection's deadline; `Ready`
    /// once it has passed. The timer is moved only to an earlier deadline:
    /// a later one (the idle wait after each answer moves it later) is
    /// checked when the timer fires, so that a busy connection does not
    /// touch the runtime's timer wheel on every request.
    fn arm(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let Some(deadline) = self.clock.deadline() else {
                return Poll::Pending;
            };
            if deadline < self.sleep.deadline() {
                self.sleep.as_mut().reset(deadline);
                self.timer_waker = None;
            }
            if self
                .timer_waker
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()))
                && !self.sleep.is_elapsed()
            {
                // The timer will wake this task; nothing to register again.
                return Poll::Pending;
            }
            match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) if Instant::now() >= deadline => return Poll::Ready(()),
                // Fired at an older deadline that has moved: wait for the new one.
                Poll::Ready(()) => {
                    self.sleep.as_mut().reset(deadline);
                    self.timer_waker = None;
                }
                Poll::Pending => {
                    self.timer_waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
    }

    /// After bytes of an answer left: hyper may not read again before the
    /// client sends something, so the idle deadline is armed here, with the
    /// connection task's waker; when it fires, hyper's next read fails.
    fn wrote(&mut self, cx: &mut Context<'_>, n: usize) {
        if n > 0 {
            self.clock.sent(Instant::now);
            let _ = self.arm(cx);
        }
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.wrote(cx, n);
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = written {
            this.wrote(cx, n);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts() -> ConnectionTimeouts {
        ConnectionTimeouts {
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }

    #[test]
    fn each_phase_of_a_connection_has_its_deadline() {
        let clock = Arc::new(ConnectionClock::new(timeouts()));
        let accepted = clock.accepted_at;
        let at = |secs: u64| accepted + Duration::from_secs(secs);
        let never = || -> Instant { panic!("the clock was read") };
        // A new connection: the head is due 10 s after the accept, bytes or not.
        assert_eq!(clock.deadline_with(never), Some(at(10)));
        clock.received();
        assert_eq!(clock.deadline_with(never), Some(at(10)));
        // The application has the request: no deadline of ours.
        let request = InFlight::start(Arc::clone(&clock));
        assert_eq!(clock.deadline_with(never), None);
        clock.received();
        clock.sent(|| at(50));
        assert_eq!(clock.deadline_with(never), None);
        drop(request);
        // Answered: idle until the next request.
        let answered = clock.at(clock.idle_since.load(Ordering::Relaxed));
        assert!(answered >= accepted);
        assert_eq!(
            clock.deadline_with(never),
            Some(answered + Duration::from_secs(60))
        );
        // The answer's first write is the answer's time, without reading
        // the clock; later writes (a stream) count as activity.
        clock.sent(never);
        let later = answered + Duration::from_secs(5);
        clock.sent(|| later);
        assert_eq!(
            clock.deadline_with(never),
            Some(later + Duration::from_secs(60))
        );
        // The next request's first byte: its head is due 10 s after the
        // time first asked for (read once), whatever is written meanwhile.
        let first_byte = later + Duration::from_secs(20);
        clock.received();
        assert_eq!(
            clock.deadline_with(|| first_byte),
            Some(first_byte + Duration::from_secs(10))
        );
        clock.sent(never);
        clock.received();
        assert_eq!(
            clock.deadline_with(never),
            Some(first_byte + Duration::from_secs(10))
        );
        // Its request starts and ends: idle again.
        drop(InFlight::start(Arc::clone(&clock)));
        assert_eq!(clock.served.load(Ordering::Relaxed), 2);
        assert_eq!(clock.head_started.load(Ordering::Relaxed), NO_HEAD);
        // A head that came whole is never timed: its request starts
        // before any deadline needs the time.
        let request = InFlight::start(Arc::clone(&clock));
        clock.sent(never);
        drop(request);
        clock.received();
        let next = InFlight::start(Arc::clone(&clock));
        assert_eq!(clock.deadline_with(never), None);
        drop(next);
        assert_eq!(clock.served.load(Ordering::Relaxed), 4);
        assert_eq!(clock.head_started.load(Ordering::Relaxed), NO_HEAD);
    }

    #[test]
    fn the_cap_never_exceeds_the_file_descriptor_limit() {
        let (cap, limit) = effective_connection_cap(usize::MAX);
        match limit {
            Some(soft) => assert_eq!(
                cap as u64,
                soft.saturating_sub(RESERVED_FILE_DESCRIPTORS).max(1)
            ),
            None => assert_eq!(cap, usize::MAX),
        }
        assert_eq!(effective_connection_cap(0).0, 1);
        assert_eq!(effective_connection_cap(20).0, 20.min(cap));
    }
}
