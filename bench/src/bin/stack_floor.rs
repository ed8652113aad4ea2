//! `bench/stack_floor`: how close the whole `noxus serve` request path comes
//! to the framework's floor.
//!
//! Two servers answer `GET /v1/models/llms` with the same bytes:
//!
//! * **floor**: a bare axum 0.8 server (this binary, `floor` subcommand): one
//!   route, the body captured from the real server's answer and its
//!   `content-type`, `axum::serve`, nothing else;
//! * **noxus**: the real `noxus serve` binary (release build) on a fresh
//!   SQLite data directory, with its first-start key in `X-API-Key`, JSON
//!   logs and the metrics listener on by default — every layer of a real
//!   deployment: request id, access log, metrics, error rendering, key check,
//!   rate limiter (set high enough never to refuse, still consulted on every
//!   request), usage recording, panic catching.
//!
//! Both servers are pinned to one CPU (`taskset`), the load generator `wrk`
//! (one thread, 32 keep-alive connections by default) to another, so the
//! servers do not compete with the load for a core. Both get the same request
//! (path and `X-API-Key` header). Rounds alternate (floor noxus, noxus floor,
//! …) so that drift falls on both; each pair gives a ratio noxus/floor and the
//! run reports the median ratio, the medians of each side, the server CPU
//! time per request, user and kernel (from `/proc/PID/stat`), and the
//! machine's steal time during each round (`/proc/stat`: on a virtual
//! machine, time the host gave to others). Any non-2xx answer makes the run
//! fail: the ratio is about the path that serves a request, not about 429s.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use axum::body::Bytes;
use axum::http::{header, HeaderValue};
use axum::routing::get;
use axum::Router;
use clap::{Parser, Subcommand};

const PATH: &str = "/v1/models/llms";
const GOAL: f64 = 0.85;

#[derive(Debug, Parser)]
#[command(name = "stack_floor")]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,

    /// Keep-alive connections of the load generator.
    #[arg(long, short = 'c', default_value_t = 32)]
    connections: usize,

    /// Seconds per measured round.
    #[arg(long, short = 'd', default_value_t = 5)]
    duration: u64,

    /// Round pairs (floor + noxus each).
    #[arg(long, default_value_t = 5)]
    pairs: usize,

    /// Seconds of warm-up per server before the first round.
    #[arg(long, default_value_t = 2)]
    warmup: u64,

    /// CPU the servers are pinned to.
    #[arg(long, default_value_t = 1)]
    server_cpu: usize,

    /// CPU the load generator is pinned to.
    #[arg(long, default_value_t = 0)]
    client_cpu: usize,

    /// The `noxus` binary to measure.
    #[arg(long, default_value = "target/release/noxus")]
    noxus: PathBuf,

    /// Run `noxus serve` with text logs instead of JSON.
    #[arg(long)]
    text_logs: bool,

    /// Run `noxus serve` without its metrics listener.
    #[arg(long)]
    no_metrics: bool,

    /// Extra argument for `noxus serve` (repeatable), e.g.
    /// `--serve-arg=--access-log=off`.
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    serve_args: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// The floor: a bare axum server answering `GET /v1/models/llms` with
    /// the bytes of a file.
    Floor {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        body: PathBuf,
        #[arg(long)]
        content_type: String,
    },
}

/// A child process killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Mode::Floor {
        port,
        body,
        content_type,
    }) = args.mode
    {
        return floor(port, body, content_type);
    }
    run(&args)
}

/// The bare axum server: the framework's floor for these bytes.
fn floor(port: u16, body: PathBuf, content_type: String) -> anyhow::Result<()> {
    let body = Bytes::from(std::fs::read(&body).context("cannot read the body file")?);
    let content_type = HeaderValue::from_str(&content_type)?;
    // The same runtime `noxus serve` builds.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let app = Router::new().route(
            PATH,
            get(move || {
                let body = body.clone();
                let content_type = content_type.clone();
                async move { ([(header::CONTENT_TYPE, content_type)], body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        // `FLOOR_NODELAY=1`: TCP_NODELAY like `noxus serve` (a calibration).
        if std::env::var_os("FLOOR_NODELAY").is_some() {
            use axum::serve::ListenerExt as _;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app).await?;
        } else {
            axum::serve(listener, app).await?;
        }
        anyhow::Ok(())
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn pinned(cpu: usize, program: &std::path::Path) -> Command {
    let mut command = Command::new("taskset");
    command.arg("-c").arg(cpu.to_string()).arg(program);
    command
}

fn wait_for_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on port {port} after 60 s")
}

/// One plain HTTP/1.1 GET: (status, content-type, body).
fn get_once(port: u16, key: &str) -> anyhow::Result<(u16, String, Vec<u8>)> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(
        stream,
        "GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    ensure!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "chunked answer: the comparison needs a fixed body"
    );
    Ok((status, content_type, body))
}

/// The process's CPU time so far, user and kernel, in µs (NaN if unknown).
fn process_cpu_us(pid: u32) -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (f64::NAN, f64::NAN);
    };
    let Some((_, after)) = stat.rsplit_once(')') else {
        return (f64::NAN, f64::NAN);
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        // USER_HZ: 100 ticks per second on Linux.
        (Some(u), Some(s)) => (u * 10_000.0, s * 10_000.0),
        _ => (f64::NAN, f64::NAN),
    }
}

/// Time the hypervisor gave to others (`steal` of `/proc/stat`, all CPUs),
/// in seconds (NaN if unknown): on a virtual machine, rounds with much of
/// it are slower for reasons of the host, not of the server.
fn steal_seconds() -> f64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            let line = stat.lines().next()?.to_owned();
            line.split_whitespace().nth(8)?.parse::<f64>().ok()
        })
        .map_or(f64::NAN, |ticks| ticks / 100.0)
}

#[derive(Debug, Clone, Copy)]
struct Round {
    per_second: f64,
    cpu_us_per_request: f64,
    user_us_per_request: f64,
    kernel_us_per_request: f64,
    /// Steal time during the round, as a share of one CPU's time.
    steal: f64,
    p50_us: f64,
    p99_us: f64,
}

/// One wrk round against `port`; fails on any non-2xx answer or socket error.
fn wrk(args: &Args, port: u16, key: &str, seconds: u64, pid: u32) -> anyhow::Result<Round> {
    let cpu_before = process_cpu_us(pid);
    let steal_before = steal_seconds();
    let output = Command::new("taskset")
        .arg("-c")
        .arg(args.client_cpu.to_string())
        .arg("wrk")
        .arg("-t1")
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .arg("-H")
        .arg(format!("X-API-Key: {key}"))
        .arg(format!("http://127.0.0.1:{port}{PATH}"))
        .output()
        .context("cannot run wrk (Debian package `wrk`)")?;
    let cpu_after = process_cpu_us(pid);
    let steal = (steal_seconds() - steal_before) / seconds as f64;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(output.status.success(), "wrk failed: {text}");
    ensure!(
        !text.contains("Non-2xx"),
        "some answers were not 2xx (rate limit? revoked key?):\n{text}"
    );
    ensure!(
        !text.contains("Socket errors"),
        "socket errors during the round:\n{text}"
    );
    let field = |label: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label).map(str::trim))
    };
    let per_second: f64 = field("Requests/sec:")
        .context("no Requests/sec in wrk's output")?
        .parse()?;
    let total: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("no request count in wrk's output")?;
    let latency = |label: &str| field(label).map(parse_wrk_duration).unwrap_or(f64::NAN);
    Ok(Round {
        per_second,
        cpu_us_per_request: (cpu_after.0 + cpu_after.1 - cpu_before.0 - cpu_before.1) / total,
        user_us_per_request: (cpu_after.0 - cpu_before.0) / total,
        kernel_us_per_request: (cpu_after.1 - cpu_before.1) / total,
        steal,
        p50_us: latency("50%"),
        p99_us: latency("99%"),
    })
}

/// wrk prints durations as `123.45us`, `1.23ms` or `1.00s`.
fn parse_wrk_duration(text: &str) -> f64 {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        (text, f64::NAN)
    };
    number.parse::<f64>().map_or(f64::NAN, |n| n * factor)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    for tool in ["wrk", "taskset"] {
        ensure!(
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {tool}"))
                .stdout(Stdio::null())
                .status()?
                .success(),
            "`{tool}` is not installed (Debian: apt-get install wrk util-linux)"
        );
    }
    ensure!(
        args.noxus.exists(),
        "{} does not exist: build it with `cargo build --release -p noxus-cli`",
        args.noxus.display()
    );
    let data = tempfile::tempdir()?;
    let noxus_port = free_port()?;
    let mut serve = pinned(args.server_cpu, &args.noxus);
    serve
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{noxus_port}"))
        .arg("--data-dir")
        .arg(data.path())
        // Consulted on every request, never refusing at these rates.
        .args(["--rate-limit-per-key", "10000000"])
        .args(["--rate-limit-burst", "10000000"]);
    if !args.text_logs {
        serve.args(["--log-format", "json"]);
    }
    if !args.no_metrics {
        serve
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{}", free_port()?));
    }
    serve.args(&args.serve_args);
    // The log goes to a file: a pipe nobody reads would fill and block.
    let log_path = data.path().join("serve.log");
    let log = std::fs::File::create(&log_path)?;
    let mut serve = Guard(
        serve
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("cannot start noxus serve")?,
    );
    let stdout = serve.0.stdout.take().context("no stdout")?;
    let key = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            line.trim()
                .strip_prefix("export NOXUS_API_KEY=")
                .map(str::to_owned)
        })
        .with_context(|| {
            format!(
                "noxus serve printed no first-start key; its log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )
        })?;
    wait_for_port(noxus_port)?;
    let (status, content_type, body) = get_once(noxus_port, &key)?;
    ensure!(status == 200, "GET {PATH} answered {status}");
    let body_path = data.path().join("body");
    std::fs::write(&body_path, &body)?;

    let floor_port = free_port()?;
    let me = std::env::current_exe()?;
    let floor = Guard(
        pinned(args.server_cpu, &me)
            .arg("floor")
            .arg("--port")
            .arg(floor_port.to_string())
            .arg("--body")
            .arg(&body_path)
            .arg("--content-type")
            .arg(&content_type)
            .spawn()
            .context("cannot start the floor server")?,
    );
    wait_for_port(floor_port)?;
    let (floor_status, floor_type, floor_body) = get_once(floor_port, &key)?;
    ensure!(
        floor_status == 200 && floor_type == content_type && floor_body == body,
        "the floor does not answer the same bytes"
    );

    println!(
        "stack_floor: GET {PATH} ({} bytes, {content_type}); wrk -t1 -c{} on CPU {}, servers on CPU {}; {} s rounds, {} pairs",
        body.len(),
        args.connections,
        args.client_cpu,
        args.server_cpu,
        args.duration,
        args.pairs
    );
    println!(
        "noxus serve: {} logs, metrics {}{}",
        if args.text_logs { "text" } else { "JSON" },
        if args.no_metrics { "off" } else { "on" },
        if args.serve_args.is_empty() {
            String::new()
        } else {
            format!(", extra: {}", args.serve_args.join(" "))
        }
    );
    let servers = [
        ("floor", floor_port, floor.0.id()),
        ("noxus", noxus_port, serve.0.id()),
    ];
    for (_, port, pid) in servers {
        wrk(args, port, &key, args.warmup, pid)?;
    }
    let mut floor_rounds = Vec::new();
    let mut noxus_rounds = Vec::new();
    let mut ratios = Vec::new();
    for pair in 0..args.pairs {
        let order: [usize; 2] = if pair % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut results = [None, None];
        for i in order {
            let (_, port, pid) = servers[i];
            results[i] = Some(wrk(args, port, &key, args.duration, pid)?);
        }
        let [Some(f), Some(n)] = results else {
            unreachable!("both rounds ran")
        };
        let ratio = n.per_second / f.per_second;
        println!(
            "pair {}: floor {:>8.0} req/s ({:.1} µs CPU/req, p50 {:.0} µs)  noxus {:>8.0} req/s ({:.1} µs CPU/req, p50 {:.0} µs, p99 {:.0} µs)  ratio {ratio:.3}  (steal {:.0}%/{:.0}%)",
            pair + 1,
            f.per_second,
            f.cpu_us_per_request,
            f.p50_us,
            n.per_second,
            n.cpu_us_per_request,
            n.p50_us,
            n.p99_us,
            f.steal * 100.0,
            n.steal * 100.0,
        );
        floor_rounds.push(f);
        noxus_rounds.push(n);
        ratios.push(ratio);
    }
    let med =
        |rounds: &[Round], f: fn(&Round) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    let ratio = median(&ratios);
    println!(
        "median: floor {:.0} req/s ({:.1} µs CPU/req), noxus {:.0} req/s ({:.1} µs CPU/req, p99 {:.0} µs)",
        med(&floor_rounds, |r| r.per_second),
        med(&floor_rounds, |r| r.cpu_us_per_request),
        med(&noxus_rounds, |r| r.per_second),
        med(&noxus_rounds, |r| r.cpu_us_per_request),
        med(&noxus_rounds, |r| r.p99_us),
    );
    println!(
        "median CPU per request, user + kernel: floor {:.1} + {:.1} µs, noxus {:.1} + {:.1} µs; steal {:.0}% of a CPU",
        med(&floor_rounds, |r| r.user_us_per_request),
        med(&floor_rounds, |r| r.kernel_us_per_request),
        med(&noxus_rounds, |r| r.user_us_per_request),
        med(&noxus_rounds, |r| r.kernel_us_per_request),
        median(
            &floor_rounds
                .iter()
                .chain(&noxus_rounds)
                .map(|r| r.steal * 100.0)
                .collect::<Vec<_>>()
        ),
    );
    println!(
        "median ratio noxus/floor: {ratio:.3} (goal >= {GOAL}: {})",
        if ratio >= GOAL { "met" } else { "NOT met" }
    );
    drop(floor);
    drop(serve);
    Ok(())
}
