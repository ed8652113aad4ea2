//! `bench/auth_overhead`: what API-key authentication costs per request.
//!
//! One process, two Tokio runtimes on separate OS threads (by default one
//! worker each, so on a 2-core machine each side has a core):
//!
//! * the **server** runtime runs the real application (`Application::build`
//!   for the database, first start and welcome key, then
//!   `http::app_with_routes` served with `axum::serve` on 127.0.0.1:0) plus
//!   one extra route, `GET /bench/unauthenticated`, that returns the same
//!   headers and body as `GET /v1/models/llms` without looking at a key;
//! * the **client** runtime is a closed-loop load generator: `C` keep-alive
//!   HTTP/1.1 connections (hyper's low-level client, one connection per task),
//!   each sending its next request as soon as the previous response body has
//!   been read, until the round's deadline.
//!
//! Both routes get the same request headers (`Host` and `X-API-Key`), so the
//! only difference the server sees is the path: verifying the key (format and
//! checksum, digest, cache lookup, expiry, rate limiter, permission check)
//! versus not.
//!
//! After a warm-up of each route the two routes are measured in alternating
//! rounds (A B, B A, A B, ...) so that drift (CPU frequency, another build on
//! the machine) falls on both. It prints requests/s, mean, p50 and p99 per
//! route, the CPU time the server's threads used per request (from
//! `/proc/self/task/*/stat`, 10 ms ticks), the throughput ratio
//! authenticated/unauthenticated against the 0.95 goal, and finally a
//! micro-benchmark of `auth::authenticate` alone (cached and uncached) to say
//! where the time goes.
//!
//! By default no tracing subscriber is installed. `--log-format json` (or
//! `text`) installs `noxus serve`'s log (`noxus_server::logging`) at its
//! default level, access line on: one line per request on standard error
//! (send it to `/dev/null` or a file), written by the log's own thread,
//! whose CPU time counts as the server's.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use noxus_server::app::{app_with_routes, Routes};
use noxus_server::catalog::Catalog;
use noxus_server::rate_limit::RateLimit;
use noxus_server::{AppState, Application, Config};
use secrecy::ExposeSecret;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const AUTHENTICATED_PATH: &str = "/v1/models/llms";
const UNAUTHENTICATED_PATH: &str = "/bench/unauthenticated";
const GOAL: f64 = 0.95;
/// Server CPU (in cores) below which a round counts as disturbed.
const SATURATED: f64 = 0.9;

/// Measures the cost of API-key authentication: throughput and latency of an
/// authenticated and an unauthenticated route with the same response, on
/// loopback, in one run.
#[derive(Debug, Parser)]
#[command(name = "auth_overhead")]
struct Args {
    /// Concurrent keep-alive HTTP/1.1 connections (closed loop: one request in
    /// flight per connection).
    #[arg(long, short = 'c', default_value_t = 32)]
    connections: usize,

    /// Warm-up per route before measuring, in seconds.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,

    /// Measuring time per route, in seconds, split evenly over the rounds.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,

    /// Measuring rounds per route; the routes alternate (A B, B A, A B, ...).
    #[arg(long, default_value_t = 3)]
    rounds: u32,

    /// Worker threads of the server runtime.
    #[arg(long, default_value_t = 1)]
    server_threads: usize,

    /// Worker threads of the load generator runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,

    /// Key cache TTL of the server in milliseconds (default: the server's
    /// default; 0 turns the cache off so every request reads the database).
    #[arg(long)]
    key_cache_ttl_ms: Option<u64>,

    /// The server's per-key rate limiter: `on` keeps it in the request path
    /// with a limit far above what the load can reach (its bookkeeping is
    /// paid, nothing is refused); `off` removes it. The server's default
    /// limit (100/s per key) would refuse almost every benchmark request.
    #[arg(long, value_enum, default_value_t = Limiter::On)]
    rate_limit: Limiter,

    /// Load only this route (for profiling the server, e.g. under `perf`);
    /// no ratio is printed.
    #[arg(long, value_enum)]
    only: Option<Only>,

    /// Send `X-API-Key` only to the authenticated route (by default both
    /// routes get identical request headers).
    #[arg(long)]
    key_only_on_authenticated: bool,

    /// Calls of `auth::authenticate` in the in-process micro-benchmark with a
    /// warm cache (the uncached variant makes 1/50 as many); 0 skips it.
    #[arg(long, default_value_t = 200_000)]
    micro_iterations: u32,

    /// Run the platform on PostgreSQL: a database of its own is created on
    /// the server this URL names (and dropped at the end). SQLite without it.
    #[arg(long)]
    database_url: Option<String>,

    /// With --database-url: keep the replicas' shared rate-limit counters in
    /// this Redis (redis://127.0.0.1:6379) instead of the database. On
    /// PostgreSQL the limits are cluster-wide either way: each admitted
    /// request is counted for the sync every 100 ms.
    #[arg(long)]
    redis_url: Option<String>,

    /// Install `noxus serve`'s log in this format (default level `info`,
    /// one access line per request, on standard error); none by default.
    #[arg(long, value_enum)]
    log_format: Option<LogFormatArg>,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

/// Whether the per-key rate limiter is in the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Limiter {
    On,
    Off,
}

/// One of the two routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Only {
    Authenticated,
    Unauthenticated,
}

/// A route to load and the exact request headers to send.
#[derive(Debug, Clone)]
struct Target {
    name: &'static str,
    uri: Uri,
    headers: HeaderMap,
}

/// What a measuring (or warm-up) round observed.
#[derive(Debug, Default)]
struct RoundResult {
    requests: u64,
    elapsed: Duration,
    latencies_ns: Vec<u64>,
    failures: u64,
    first_failure: Option<String>,
    cpu: CpuTime,
}

impl RoundResult {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// Totals of one route over all its measuring rounds.
#[derive(Debug, Default)]
struct RouteTotals {
    requests: u64,
    elapsed: Duration,
    latencies_ns: Vec<u64>,
    rounds: Vec<f64>,
    cpu: CpuTime,
}

impl RouteTotals {
    fn add(&mut self, round: RoundResult) {
        self.rounds.push(round.per_second());
        self.requests += round.requests;
        self.elapsed += round.elapsed;
        self.latencies_ns.extend(round.latencies_ns);
        self.cpu.server += round.cpu.server;
        self.cpu.client += round.cpu.client;
    }

    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn sort(&mut self) {
        self.latencies_ns.sort_unstable();
    }
}

/// CPU time used by the server's threads (its runtime's workers and blocking
/// threads, SQLite workers) and by the load generator's threads.
#[derive(Debug, Default, Clone, Copy)]
struct CpuTime {
    server: Duration,
    client: Duration,
}

impl CpuTime {
    /// Reads `utime + stime` of this process's threads from `/proc` (Linux;
    /// elsewhere zero). The unit is USER_HZ, which Linux fixes at 100/s.
    fn now() -> Self {
        const TICK: Duration = Duration::from_millis(10);
        let mut cpu = Self::default();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return cpu;
        };
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            // "tid (comm) state ppid ... utime stime ...": comm may hold spaces.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let comm = &stat[open + 1..close];
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let ticks: u32 = [11, 12]
                .iter()
                .filter_map(|&i| fields.get(i)?.parse::<u32>().ok())
                .sum();
            let time = TICK * ticks;
            // `noxus-log-writer` (15 characters shown): the log's thread.
            if comm.starts_with("server")
                || comm.starts_with("sqlx")
                || comm.starts_with("noxus-log")
            {
                cpu.server += time;
            } else if comm.starts_with("client") {
                cpu.client += time;
            }
        }
        cpu
    }

    fn since(self, earlier: Self) -> Self {
        Self {
            server: self.server.saturating_sub(earlier.server),
            client: self.client.saturating_sub(earlier.client),
        }
    }
}

/// Microseconds of `cpu` per request.
fn per_request_us(cpu: Duration, requests: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / requests.max(1) as f64
}

/// Nearest-rank percentile of sorted nanoseconds, in microseconds.
fn percentile_us(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted_ns.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted_ns.len()) - 1;
    sorted_ns[idx] as f64 / 1_000.0
}

fn mean_us(ns: &[u64]) -> f64 {
    if ns.is_empty() {
        return f64::NAN;
    }
    ns.iter().map(|&n| n as f64).sum::<f64>() / ns.len() as f64 / 1_000.0
}

fn seconds(value: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("--{what} must be a number of seconds ≥ 0"))
}

/// The `RateLimit-*` headers the authenticated route sent when probed: the
/// comparison route sends the same, so that both responses have the same
/// size on the wire and only the server's work differs.
static RATE_HEADERS: std::sync::OnceLock<Vec<(header::HeaderName, header::HeaderValue)>> =
    std::sync::OnceLock::new();

/// The comparison route: the same headers and body as `GET /v1/models/llms`
/// (see `http::catalog`), no key check.
async fn unauthenticated(State(state): State<AppState>) -> impl IntoResponse {
    let mut response = (
        [(header::CONTENT_TYPE, "application/json")],
        state.catalog().models_json(),
    )
        .into_response();
    for (name, value) in RATE_HEADERS.get().into_iter().flatten() {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

/// The running server, owned by the server runtime.
#[derive(Debug)]
struct Server {
    state: AppState,
    api_key: String,
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<std::io::Result<()>>,
}

async fn start_server(
    data_dir: &std::path::Path,
    postgres_url: Option<&str>,
    redis_url: Option<&str>,
    key_cache_ttl: Option<Duration>,
    limiter: Limiter,
) -> anyhow::Result<Server> {
    let mut config = Config::new(data_dir);
    config.postgres = postgres_url.map(noxus_server::store::PostgresOptions::new);
    config.redis_url = redis_url.map(|url| secrecy::SecretString::from(url.to_owned()));
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.welcome = true;
    if let Some(ttl) = key_cache_ttl {
        config.key_cache_ttl = ttl;
    }
    config.key_rate_limit = match limiter {
        // One nanosecond per request and a burst worth 4.3 s: checked on
        // every request, never reached. (The limiter reads the clock before
        // taking its lock, so with several server threads a reading can be
        // stale by a preemption; a small burst such as 10^6 (1 ms) then
        // refuses the odd request.)
        Limiter::On => Some(RateLimit {
            per_second: 1_000_000_000,
            burst: u32::MAX,
        }),
        Limiter::Off => None,
    };
    let mut app = Application::build(config).await?;
    let api_key = app
        .take_welcome()
        .and_then(|welcome| welcome.api_key)
        .context("the first start issued no API key")?
        .expose_secret()
        .to_owned();
    let state = app.state().clone();
    // Its listener serves `http::app` only; we serve our own router below.
    drop(app);

    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let extra = Routes::default().route(UNAUTHENTICATED_PATH, get(unauthenticated));
    // axum::serve takes a router: the application is its fallback service.
    let app = Router::new().fallback_service(app_with_routes(state.clone(), extra));
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .await
    });
    Ok(Server {
        state,
        api_key,
        addr,
        stop,
        serving,
    })
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            eprintln!("connection error: {err}");
        }
    });
    Ok(sender)
}

async fn send(
    sender: &mut SendRequest<Empty<Bytes>>,
    target: &Target,
) -> anyhow::Result<(StatusCode, HeaderMap, Bytes)> {
    sender.ready().await?;
    let mut request = Request::new(Empty::new());
    *request.uri_mut() = target.uri.clone();
    *request.headers_mut() = target.headers.clone();
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((parts.status, parts.headers, body))
}

/// One closed-loop round: `connections` tasks, each with its own connection,
/// send requests back to back until `duration` has passed.
async fn run_round(
    addr: SocketAddr,
    target: &Target,
    connections: usize,
    duration: Duration,
    expected_len: usize,
) -> anyhow::Result<RoundResult> {
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        senders.push(connect(addr).await?);
    }
    let cpu_before = CpuTime::now();
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<JoinHandle<anyhow::Result<RoundResult>>> = senders
        .into_iter()
        .map(|mut sender| {
            let target = target.clone();
            tokio::spawn(async move {
                let mut result = RoundResult::default();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let (status, _, body) = send(&mut sender, &target).await?;
                    let took = sent.elapsed();
                    result.requests += 1;
                    result.latencies_ns.push(took.as_nanos() as u64);
                    if status != StatusCode::OK || body.len() != expected_len {
                        result.failures += 1;
                        if result.first_failure.is_none() {
                            result.first_failure = Some(format!(
                                "{status}: {}",
                                String::from_utf8_lossy(&body[..body.len().min(300)])
                            ));
                        }
                    }
                }
                Ok(result)
            })
        })
        .collect();
    let mut round = RoundResult::default();
    for task in tasks {
        let part = task.await.context("load task panicked")??;
        round.requests += part.requests;
        round.latencies_ns.extend(part.latencies_ns);
        round.failures += part.failures;
        if round.first_failure.is_none() {
            round.first_failure = part.first_failure;
        }
    }
    round.elapsed = started.elapsed();
    round.cpu = CpuTime::now().since(cpu_before);
    if round.failures > 0 {
        bail!(
            "{}: {} of {} responses were not 200 with the expected body; first: {}",
            target.name,
            round.failures,
            round.requests,
            round.first_failure.as_deref().unwrap_or("?")
        );
    }
    Ok(round)
}

/// Both routes answer 200 with byte-identical bodies and the same content
/// type; the authenticated one refuses a request without a key.
async fn check_routes(
    addr: SocketAddr,
    authenticated: &Target,
    unauthenticated: &Target,
    expected: &Bytes,
) -> anyhow::Result<()> {
    let mut sender = connect(addr).await?;
    let (_, probe, _) = send(&mut sender, authenticated).await?;
    let rate_headers: Vec<_> = probe
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("ratelimit-"))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let _ = RATE_HEADERS.set(rate_headers);
    let (status_a, headers_a, body_a) = send(&mut sender, authenticated).await?;
    let (status_u, headers_u, body_u) = send(&mut sender, unauthenticated).await?;
    ensure!(
        status_a == StatusCode::OK,
        "{AUTHENTICATED_PATH} answered {status_a}: {}",
        String::from_utf8_lossy(&body_a)
    );
    ensure!(
        status_u == StatusCode::OK,
        "{UNAUTHENTICATED_PATH} answered {status_u}: {}",
        String::from_utf8_lossy(&body_u)
    );
    ensure!(body_a == body_u, "the two routes return different bodies");
    ensure!(
        body_a == *expected,
        "the body is not the catalog's models JSON"
    );
    ensure!(
        headers_a.get(header::CONTENT_TYPE) == headers_u.get(header::CONTENT_TYPE),
        "the two routes return different content types"
    );
    let names = |h: &header::HeaderMap| {
        let mut n: Vec<String> = h
            .keys()
            .map(|k| k.as_str().to_owned())
            .filter(|k| k != "x-request-id" && k != "date")
            .collect();
        n.sort();
        n
    };
    ensure!(
        names(&headers_a) == names(&headers_u),
        "the two routes send different headers: {:?} vs {:?}",
        names(&headers_a),
        names(&headers_u)
    );

    let mut no_key = authenticated.clone();
    no_key.headers.remove("x-api-key");
    let (status, _, _) = send(&mut sender, &no_key).await?;
    ensure!(
        status == StatusCode::UNAUTHORIZED,
        "{AUTHENTICATED_PATH} without a key answered {status}, expected 401"
    );
    Ok(())
}

fn target(
    name: &'static str,
    path: &str,
    addr: SocketAddr,
    key: Option<&str>,
) -> anyhow::Result<Target> {
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_str(&addr.to_string())?);
    if let Some(key) = key {
        let mut value = HeaderValue::from_str(key)?;
        value.set_sensitive(true);
        headers.insert("x-api-key", value);
    }
    Ok(Target {
        name,
        uri: path.parse()?,
        headers,
    })
}

/// Times `auth::authenticate` alone: `iterations` calls, in sequence.
async fn time_authenticate(
    state: &AppState,
    key: &str,
    iterations: u32,
) -> anyhow::Result<(Duration, u32)> {
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_str(key)?);
    let mut refused = 0;
    // As the request layer gives it (the slot is what a request allocates).
    let slot = noxus_server::usage::KeySlot::default();
    let started = Instant::now();
    for _ in 0..iterations {
        if noxus_server::auth::authenticate(
            state,
            &headers,
            Some(std::net::IpAddr::from([127, 0, 0, 1])),
            Some(&slot),
        )
        .await
        .is_err()
        {
            refused += 1;
        }
    }
    Ok((started.elapsed() / iterations.max(1), refused))
}

fn runtime(threads: usize, name: &str) -> anyhow::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("cannot start the {name} runtime"))
}

fn print_route(totals: &RouteTotals, name: &str) {
    let rounds: Vec<String> = totals.rounds.iter().map(|r| format!("{r:.0}")).collect();
    println!(
        "{name:<16} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>10} {:>9.2} {:>7.0}% {:>9.2}   [{}]",
        totals.per_second(),
        mean_us(&totals.latencies_ns),
        percentile_us(&totals.latencies_ns, 0.50),
        percentile_us(&totals.latencies_ns, 0.99),
        totals.requests,
        per_request_us(totals.cpu.server, totals.requests),
        100.0 * totals.cpu.server.as_secs_f64() / totals.elapsed.as_secs_f64(),
        per_request_us(totals.cpu.client, totals.requests),
        rounds.join(", ")
    );
}

/// The ratio against the goal and the differences per request.
fn print_comparison(auth: &RouteTotals, unauth: &RouteTotals) {
    let ratio = auth.per_second() / unauth.per_second();
    let round_ratios: Vec<String> = auth
        .rounds
        .iter()
        .zip(&unauth.rounds)
        .map(|(a, u)| format!("{:.3}", a / u))
        .collect();
    println!(
        "throughput ratio authenticated/unauthenticated: {ratio:.3} (per round pair: {}) — goal ≥ {GOAL}: {}",
        round_ratios.join(", "),
        if ratio >= GOAL { "met" } else { "NOT met" }
    );
    println!(
        "authenticated minus unauthenticated: {:+.2} µs server CPU per request, {:+.2} µs wall time per request at saturation, {:+.1} µs p50, {:+.1} µs p99",
        per_request_us(auth.cpu.server, auth.requests)
            - per_request_us(unauth.cpu.server, unauth.requests),
        1e6 / auth.per_second() - 1e6 / unauth.per_second(),
        percentile_us(&auth.latencies_ns, 0.50) - percentile_us(&unauth.latencies_ns, 0.50),
        percentile_us(&auth.latencies_ns, 0.99) - percentile_us(&unauth.latencies_ns, 0.99),
    );
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.connections > 0, "--connections must be at least 1");
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    ensure!(
        args.server_threads > 0 && args.client_threads > 0,
        "thread counts must be at least 1"
    );
    let warmup = seconds(args.warmup, "warmup")?;
    let duration = seconds(args.duration, "duration")?;
    ensure!(!duration.is_zero(), "--duration must be positive");
    let round_duration = duration / args.rounds;

    let _log = args
        .log_format
        .map(|format| {
            noxus_server::logging::init(
                &noxus_server::logging::LogSettings {
                    format: match format {
                        LogFormatArg::Text => noxus_server::logging::LogFormat::Text,
                        LogFormatArg::Json => noxus_server::logging::LogFormat::Json,
                    },
                    access_log: true,
                    directives: None,
                    ansi: false,
                },
                None,
            )
        })
        .transpose()?;
    let data_dir = tempfile::tempdir().context("cannot create a temporary data directory")?;
    let server_rt = runtime(args.server_threads, "server")?;
    let client_rt = runtime(args.client_threads, "client")?;

    let database = args
        .database_url
        .as_deref()
        .map(|url| server_rt.block_on(noxus_testkit::postgres::FreshDatabase::create(url)));
    let server = server_rt.block_on(start_server(
        data_dir.path(),
        database
            .as_ref()
            .map(noxus_testkit::postgres::FreshDatabase::url),
        args.redis_url.as_deref(),
        args.key_cache_ttl_ms.map(Duration::from_millis),
        args.rate_limit,
    ))?;
    let addr = server.addr;
    let expected = server.state.catalog().models_json();
    let authenticated = target(
        "authenticated",
        AUTHENTICATED_PATH,
        addr,
        Some(&server.api_key),
    )?;
    let unauthenticated = target(
        "unauthenticated",
        UNAUTHENTICATED_PATH,
        addr,
        (!args.key_only_on_authenticated).then_some(server.api_key.as_str()),
    )?;

    println!("auth_overhead: {AUTHENTICATED_PATH} (X-API-Key, models:read) vs {UNAUTHENTICATED_PATH} (no key check)");
    println!(
        "server http://{addr}, {} server / {} client worker threads, {} CPUs, key cache TTL {} ms, rate limiter {}",
        args.server_threads,
        args.client_threads,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        server.state.config().key_cache_ttl.as_millis(),
        match args.rate_limit {
            Limiter::On => "on (limit out of reach)",
            Limiter::Off => "off",
        }
    );
    println!("rate limits: {}", server.state.limits().describe());
    println!(
        "log: {}",
        match args.log_format {
            None => "none (no subscriber)",
            Some(LogFormatArg::Text) => "text on standard error, access line on",
            Some(LogFormatArg::Json) => "json on standard error, access line on",
        }
    );
    println!(
        "{} connections, closed loop, response body {} bytes, warm-up {:.1} s per route, {} x {:.2} s rounds per route (order A B, B A, ...)",
        args.connections,
        expected.len(),
        warmup.as_secs_f64(),
        args.rounds,
        round_duration.as_secs_f64()
    );

    let (auth, unauth) = client_rt.block_on(async {
        check_routes(addr, &authenticated, &unauthenticated, &expected).await?;
        println!("check: both routes 200 with byte-identical bodies; {AUTHENTICATED_PATH} without a key is 401");

        let measured = |target: &Target| match args.only {
            None => true,
            Some(Only::Authenticated) => target.name == authenticated.name,
            Some(Only::Unauthenticated) => target.name == unauthenticated.name,
        };
        for target in [&authenticated, &unauthenticated] {
            if measured(target) && !warmup.is_zero() {
                run_round(addr, target, args.connections, warmup, expected.len()).await?;
            }
        }

        let mut auth = RouteTotals::default();
        let mut unauth = RouteTotals::default();
        let mut unsaturated = 0;
        for round in 0..args.rounds {
            let order = if round % 2 == 0 {
                [&authenticated, &unauthenticated]
            } else {
                [&unauthenticated, &authenticated]
            };
            for target in order.into_iter().filter(|t| measured(t)) {
                let result =
                    run_round(addr, target, args.connections, round_duration, expected.len()).await?;
                let mut sorted = result.latencies_ns.clone();
                sorted.sort_unstable();
                let busy = result.cpu.server.as_secs_f64() / result.elapsed.as_secs_f64();
                // The server should be the bottleneck: its (first) thread
                // busy all the time. Less means something else took the CPU
                // (or the load generator could not keep up).
                let saturated = busy >= SATURATED;
                if !saturated {
                    unsaturated += 1;
                }
                println!(
                    "round {} {:<16} {:>9.0} req/s  p50 {:>7.1} µs  p99 {:>7.1} µs  server {:>5.2} µs CPU/req, {:>3.0}% busy{}",
                    round + 1,
                    target.name,
                    result.per_second(),
                    percentile_us(&sorted, 0.50),
                    percentile_us(&sorted, 0.99),
                    per_request_us(result.cpu.server, result.requests),
                    100.0 * busy,
                    if saturated { "" } else { "  (*)" },
                );
                if target.name == authenticated.name {
                    auth.add(result);
                } else {
                    unauth.add(result);
                }
            }
        }
        if unsaturated > 0 {
            println!(
                "(*) {unsaturated} round(s) with the server below {:.0}% of a core: another process took CPU \
                 or the load generator could not keep up; the ratio is unreliable, rerun on a quiet machine",
                100.0 * SATURATED
            );
        }
        anyhow::Ok((auth, unauth))
    })?;
    let (mut auth, mut unauth) = (auth, unauth);
    auth.sort();
    unauth.sort();

    println!();
    println!(
        "{:<16} {:>10} {:>9} {:>9} {:>9} {:>10} {:>9} {:>8} {:>9}   req/s per round",
        "route",
        "req/s",
        "mean µs",
        "p50 µs",
        "p99 µs",
        "requests",
        "srv µs/r",
        "srv busy",
        "cli µs/r"
    );
    for (totals, name) in [(&auth, "authenticated"), (&unauth, "unauthenticated")] {
        if totals.requests > 0 {
            print_route(totals, name);
        }
    }
    if args.only.is_none() {
        print_comparison(&auth, &unauth);
    }

    let Server {
        state,
        api_key,
        stop,
        serving,
        ..
    } = server;
    let _ = stop.send(());
    server_rt.block_on(async {
        serving.await.context("server task panicked")??;
        if args.micro_iterations > 0 {
            // Warm cache: every call after the first is a cache hit (the TTL
            // is long compared to one call, so misses are 1 per TTL).
            let (cached, refused) = time_authenticate(&state, &api_key, args.micro_iterations).await?;
            let mut config = state.config().clone();
            config.key_cache_ttl = Duration::ZERO;
            let uncached_state = AppState::new(
                state.store_arc(),
                Catalog::load(config.catalog_file.as_deref())?,
                config,
            )?;
            let uncached_iterations = (args.micro_iterations / 50).max(1);
            let (uncached, refused_uncached) =
                time_authenticate(&uncached_state, &api_key, uncached_iterations).await?;
            println!();
            println!(
                "auth::authenticate alone, sequential: {:.2} µs per call with the key cache ({} calls), {:.1} µs per call without it ({} calls, one database lookup each)",
                cached.as_nanos() as f64 / 1_000.0,
                args.micro_iterations,
                uncached.as_nanos() as f64 / 1_000.0,
                uncached_iterations
            );
            ensure!(
                refused + refused_uncached == 0,
                "{} of those calls were refused, so the timing is not of the success path",
                refused + refused_uncached
            );
        }
        state.store().close().await;
        if let Some(database) = database {
            database.drop_database().await;
        }
        anyhow::Ok(())
    })?;
    Ok(())
}
