//! `bench/sdk_overhead`: what our Rust SDK costs per call, compared with raw
//! `reqwest` doing the same request and with the official Python client.
//!
//! One process, two Tokio runtimes on separate OS threads:
//!
//! * the **server** runtime (one worker thread by default) runs the real
//!   application (`Application::build` on 127.0.0.1:0 with a fresh SQLite
//!   database in a temporary directory, first start, welcome key,
//!   `run_until_stopped`), with the per-key rate limiter off;
//! * the **client** runtime is a current-thread runtime on the main thread:
//!   the whole client side (request building, hyper's connection task,
//!   decoding) runs on that one thread, as in a typical single-task caller.
//!
//! Two operations, each a sequential loop (one call at a time, the same
//! keep-alive connection reused):
//!
//! * `me`: `GET /v1/admin/me`, decoded into `noxus_api::Me`;
//! * `workflows`: `GET /v1/workflows?page=1&size=10&type=flow`, the first
//!   page of flows (the benchmark first saves `--workflows` flows, each with a
//!   two-node definition, so the page is a realistic ~15 KB), decoded into
//!   `Page<Workflow>`.
//!
//! Four clients:
//!
//! * **sdk**: `noxus_sdk::Client` (`client.me()`, `client.workflows().list()`);
//! * **raw**: a plain `reqwest::Client`, the same URL (query string included),
//!   an `X-API-Key` header built once, status check, `.json::<T>()` into the
//!   same type: the floor any Rust client pays;
//! * **floor**: no HTTP library at all: a blocking `std::net::TcpStream`
//!   writes request bytes built once and reads the response up to its
//!   `Content-Length`, without parsing headers beyond that or decoding the
//!   JSON. No client can do less per call, so python/floor is the most any
//!   client could be faster than Python against this server on this machine;
//! * **python**: the official client `noxus-sdk` 0.6.0 in
//!   `target/python-venv` (`tests/python/run.sh --setup-only`), run as a
//!   subprocess (`bench/python/sdk_overhead.py`, embedded in this binary),
//!   `client.admin.get_me()` and `client.workflows.list()` on one
//!   `Client(api_key, base_url, load_nodes=False, load_me=False)`, each call
//!   timed inside Python with `time.perf_counter_ns()` (the node types are
//!   loaded once first, untimed: `WorkflowDefinition` refuses unknown node
//!   types). Without the virtualenv this part is skipped with a message.
//!
//! With `--variants`, raw reqwest is also measured with each of the SDK's
//! per-call extras (per-request timeout, cloned header map, URL and query
//! built per call) and with all three, to tell what each costs.
//!
//! After a warm-up, the Rust clients take turns in many short rounds (sdk
//! raw floor, raw floor sdk, ...) so that drift and bursts of other work (a
//! build next door) fall on all of them. It prints mean, p50, p99 and min
//! per call in microseconds, the ratio sdk/raw (goal ≤ 1.05) with a 95%
//! confidence interval from the paired rounds, python/sdk (goal ≥ 10) and
//! python/floor (the most any client could reach). The Python client runs
//! after the Rust rounds, in its own process.
//!
//! A sequential call on loopback is mostly waiting: the server's work, the
//! kernel, and two thread wake-ups per call. So it also prints the CPU time
//! per call of the client (the main thread's `CLOCK_THREAD_CPUTIME_ID`,
//! which runs the whole Rust client side; Python's `time.thread_time_ns()`)
//! and of the server (the rest of this process's CPU time during the Rust
//! rounds): what each client itself costs, without the waiting.
//!
//! No tracing subscriber is installed, as in an application that has none
//! (the SDK's per-request `debug!` is then a disabled callsite).

use std::cell::RefCell;
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::Parser;
use noxus_api::{Me, Page, Workflow, WorkflowWrite};
use noxus_server::{Application, Config};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use rustix::time::{clock_gettime, ClockId};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

const GOAL_SDK_VS_RAW: f64 = 1.05;
const GOAL_PYTHON_VS_SDK: f64 = 10.0;
const PYTHON_SCRIPT: &str = include_str!("../../python/sdk_overhead.py");
const DEFAULT_PYTHON: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/python-venv/bin/python"
);
/// The query `Workflows::list` sends (`ListWorkflows::default()`).
const WORKFLOWS_QUERY: &str = "page=1&size=10&type=flow";

/// Time per sequential call of our Rust SDK, raw `reqwest` doing the same
/// request, and the official Python client 0.6.0, against the platform
/// started in-process on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "sdk_overhead")]
struct Args {
    /// Measured calls per Rust client and operation, split evenly over the
    /// rounds.
    #[arg(long, short = 'n', default_value_t = 2000)]
    calls: u32,

    /// Warm-up calls per Rust client and operation before measuring.
    #[arg(long, default_value_t = 200)]
    warmup: u32,

    /// Rounds for the Rust clients; their order rotates every round (sdk raw
    /// floor, raw floor sdk, ...). Many short rounds pair the clients closely in time, so that
    /// bursts of other work on the machine fall on both.
    #[arg(long, default_value_t = 200)]
    rounds: u32,

    /// Print the mean of every round.
    #[arg(long)]
    per_round: bool,

    /// Measured calls of the Python client per operation.
    #[arg(long, default_value_t = 300)]
    python_calls: u32,

    /// Warm-up calls of the Python client per operation.
    #[arg(long, default_value_t = 30)]
    python_warmup: u32,

    /// Rounds for the Python client (the two operations alternate).
    #[arg(long, default_value_t = 3)]
    python_rounds: u32,

    /// The Python interpreter with `noxus-sdk==0.6.0` installed (default: the
    /// workspace's `target/python-venv/bin/python`).
    #[arg(long)]
    python: Option<PathBuf>,

    /// Skip the Python client.
    #[arg(long)]
    no_python: bool,

    /// Longest the Python part may take, in seconds; it is killed after that.
    #[arg(long, default_value_t = 300)]
    python_timeout: u64,

    /// Flows to save before measuring (the list returns the first 10).
    #[arg(long, default_value_t = 10)]
    workflows: u32,

    /// Worker threads of the server runtime.
    #[arg(long, default_value_t = 1)]
    server_threads: usize,

    /// Calls in flight at once in the concurrent phase, which runs after the
    /// sequential one: the Rust clients as that many futures on their one
    /// thread, Python as that many asyncio tasks with the client's async
    /// methods. 0 skips the phase. The default stays within httpx's 20
    /// kept-alive connections, so no client pays for reconnecting.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,

    /// Calls per Rust client and operation in the concurrent phase.
    #[arg(long, default_value_t = 8000)]
    batch_calls: u32,

    /// Rounds of the concurrent phase (sdk and raw alternate).
    #[arg(long, default_value_t = 8)]
    batch_rounds: u32,

    /// Calls of the Python client per operation in the concurrent phase.
    #[arg(long, default_value_t = 2000)]
    python_batch_calls: u32,

    /// Also measure raw reqwest with each of the SDK's per-call extras
    /// (per-request timeout, cloned header map, URL and query built per
    /// call) and with all of them, to tell what each costs.
    #[arg(long)]
    variants: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Me,
    Workflows,
}

impl Op {
    const ALL: [Op; 2] = [Op::Me, Op::Workflows];

    fn name(self) -> &'static str {
        match self {
            Op::Me => "me",
            Op::Workflows => "workflows",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Op::Me => "/v1/admin/me",
            Op::Workflows => "/v1/workflows",
        }
    }
}

/// A Rust client under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `noxus_sdk::Client`.
    Sdk,
    /// Plain `reqwest`, optionally doing some of what the SDK does per call
    /// (`--variants`), to tell what each of those costs.
    Raw(Extras),
    /// Bytes over a blocking socket, nothing decoded: the floor (see
    /// [`Floor`]).
    Floor,
}

/// Per-call work the SDK does on top of the bare request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Extras {
    /// `.timeout(30 s)` on the request (the SDK's per-request timeout).
    timeout: bool,
    /// `.headers(map.clone())` with `x-api-key` and `user-agent`, as the SDK
    /// does, instead of one `.header(..)`.
    headers: bool,
    /// `format!("{base}{path}")` and, for the list, a `Vec` of query pairs
    /// with `to_string()`s serialized by `.query(..)`, as the SDK does,
    /// instead of a URL string built once.
    url: bool,
}

impl Kind {
    const RAW: Kind = Kind::Raw(Extras {
        timeout: false,
        headers: false,
        url: false,
    });

    /// The clients to measure: sdk and raw, and the variants with `--variants`.
    fn list(variants: bool) -> Vec<Kind> {
        let mut kinds = vec![Kind::Sdk, Kind::RAW, Kind::Floor];
        if variants {
            let none = Extras::default();
            kinds.extend([
                Kind::Raw(Extras {
                    timeout: true,
                    ..none
                }),
                Kind::Raw(Extras {
                    headers: true,
                    ..none
                }),
                Kind::Raw(Extras { url: true, ..none }),
                Kind::Raw(Extras {
                    timeout: true,
                    headers: true,
                    url: true,
                }),
            ]);
        }
        kinds
    }

    fn name(self) -> String {
        match self {
            Kind::Sdk => "sdk".to_owned(),
            Kind::Floor => "floor".to_owned(),
            Kind::Raw(extras) => {
                let mut name = "raw".to_owned();
                match (extras.timeout, extras.headers, extras.url) {
                    (false, false, false) => {}
                    (true, true, true) => name.push_str("+all"),
                    _ => {
                        for (on, what) in [
                            (extras.timeout, "+timeout"),
                            (extras.headers, "+headers"),
                            (extras.url, "+url"),
                        ] {
                            if on {
                                name.push_str(what);
                            }
                        }
                    }
                }
                name
            }
        }
    }
}

/// The Rust clients, ready to call.
#[derive(Debug)]
struct Clients {
    sdk: noxus_sdk::Client,
    http: reqwest::Client,
    base_url: String,
    key_name: HeaderName,
    key_value: HeaderValue,
    /// What the SDK sends on every request (for `Extras::headers`).
    sdk_headers: HeaderMap,
    me_url: String,
    workflows_url: String,
    floor: Floor,
}

impl Clients {
    /// One call; the decoded answer is consumed (`black_box`) and dropped
    /// inside the timed region for every client.
    async fn call(&self, kind: Kind, op: Op) -> anyhow::Result<()> {
        match (kind, op) {
            (Kind::Sdk, Op::Me) => {
                black_box(self.sdk.me().await?);
            }
            (Kind::Sdk, Op::Workflows) => {
                black_box(self.sdk.workflows().list().await?);
            }
            (Kind::Raw(extras), Op::Me) => {
                black_box(self.raw::<Me>(op, extras).await?);
            }
            (Kind::Raw(extras), Op::Workflows) => {
                black_box(self.raw::<Page<Workflow>>(op, extras).await?.items);
            }
            (Kind::Floor, op) => {
                black_box(self.floor.call(op)?);
            }
        }
        Ok(())
    }

    /// The same request with plain `reqwest`: a URL string built once, the
    /// key header built once, status check, `.json::<T>()` (which is
    /// `.bytes()` + `serde_json::from_slice`, as in the SDK).
    async fn raw<T: DeserializeOwned>(&self, op: Op, extras: Extras) -> anyhow::Result<T> {
        let mut request = if extras.url {
            let url = format!("{}{}", self.base_url, op.path());
            let request = self.http.get(&url);
            match op {
                Op::Me => request,
                Op::Workflows => {
                    let query = vec![
                        ("page", 1u64.to_string()),
                        ("size", 10u64.to_string()),
                        ("type", "flow".to_owned()),
                    ];
                    request.query(&query)
                }
            }
        } else {
            self.http.get(self.url(op))
        };
        request = if extras.headers {
            request.headers(self.sdk_headers.clone())
        } else {
            request.header(self.key_name.clone(), self.key_value.clone())
        };
        if extras.timeout {
            request = request.timeout(noxus_sdk::DEFAULT_TIMEOUT);
        }
        let response = request.send().await?.error_for_status()?;
        Ok(response.json::<T>().await?)
    }

    fn url(&self, op: Op) -> &str {
        match op {
            Op::Me => &self.me_url,
            Op::Workflows => &self.workflows_url,
        }
    }

    /// The raw response body of an operation (for its size).
    async fn body(&self, op: Op) -> anyhow::Result<Vec<u8>> {
        let response = self
            .http
            .get(self.url(op))
            .header(self.key_name.clone(), self.key_value.clone())
            .send()
            .await?
            .error_for_status()?;
        Ok(response.bytes().await?.to_vec())
    }
}

/// The least an HTTP/1.1 client can do per call: one kept-alive blocking
/// socket (`TCP_NODELAY`, as hyper sets it), the whole request written from
/// bytes built once, the response read until its `Content-Length` is in,
/// the status line checked, nothing decoded. It runs inside the async loop
/// on the client thread but never yields: there is nothing else to run.
#[derive(Debug)]
struct Floor {
    stream: RefCell<TcpStream>,
    buf: RefCell<Vec<u8>>,
    me: Vec<u8>,
    workflows: Vec<u8>,
}

impl Floor {
    fn connect(addr: SocketAddr, api_key: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).context("floor client: cannot connect")?;
        stream.set_nodelay(true)?;
        let request = |target: &str| {
            format!("GET {target} HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {api_key}\r\naccept: */*\r\n\r\n")
                .into_bytes()
        };
        Ok(Self {
            stream: RefCell::new(stream),
            buf: RefCell::new(Vec::with_capacity(64 * 1024)),
            me: request(Op::Me.path()),
            workflows: request(&format!("{}?{WORKFLOWS_QUERY}", Op::Workflows.path())),
        })
    }

    /// One request; returns the body's length.
    fn call(&self, op: Op) -> anyhow::Result<usize> {
        let mut stream = self.stream.borrow_mut();
        let mut buf = self.buf.borrow_mut();
        let request = match op {
            Op::Me => &self.me,
            Op::Workflows => &self.workflows,
        };
        stream.write_all(request)?;
        buf.clear();
        let mut read_some = |buf: &mut Vec<u8>| -> anyhow::Result<()> {
            let start = buf.len();
            buf.resize(start + 16 * 1024, 0);
            let n = stream.read(&mut buf[start..])?;
            buf.truncate(start + n);
            ensure!(n > 0, "floor client: the server closed the connection");
            Ok(())
        };
        let head_end = loop {
            read_some(&mut buf)?;
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let head = std::str::from_utf8(&buf[..head_end]).context("floor client: response head")?;
        ensure!(
            head.starts_with("HTTP/1.1 200 "),
            "floor client: {}",
            head.lines().next().unwrap_or_default()
        );
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())
                    .flatten()
            })
            .context("floor client: no content-length")?;
        while buf.len() < head_end + length {
            read_some(&mut buf)?;
        }
        ensure!(
            buf.len() == head_end + length,
            "floor client: more bytes than the response"
        );
        Ok(length)
    }
}

/// Per-call latencies of one client and operation, and CPU time.
#[derive(Debug, Default, Clone)]
struct Samples {
    ns: Vec<u64>,
    /// Mean of each round, in microseconds.
    rounds: Vec<f64>,
    /// CPU time of the client's thread over the measured calls.
    client_cpu: Duration,
    /// CPU time of the server over the measured calls (Rust clients only).
    server_cpu: Option<Duration>,
}

impl Samples {
    fn from_python(mut ns: Vec<u64>, cpu_ns: u64) -> Self {
        ns.sort_unstable();
        Self {
            ns,
            rounds: Vec::new(),
            client_cpu: Duration::from_nanos(cpu_ns),
            server_cpu: None,
        }
    }

    fn add_round(&mut self, round: Batch) {
        self.rounds.push(mean_us(&round.ns));
        self.ns.extend_from_slice(&round.ns);
        self.client_cpu += round.client_cpu;
        *self.server_cpu.get_or_insert(Duration::ZERO) += round.server_cpu;
    }

    fn per_call_us(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.ns.len().max(1) as f64
    }

    fn client_cpu_us(&self) -> f64 {
        self.per_call_us(self.client_cpu)
    }

    fn server_cpu_us(&self) -> Option<f64> {
        self.server_cpu.map(|cpu| self.per_call_us(cpu))
    }

    fn sort(&mut self) {
        self.ns.sort_unstable();
    }

    fn mean(&self) -> f64 {
        mean_us(&self.ns)
    }

    /// Nearest-rank percentile (the samples must be sorted), in µs.
    fn percentile(&self, p: f64) -> f64 {
        if self.ns.is_empty() {
            return f64::NAN;
        }
        let rank = (p * self.ns.len() as f64).ceil() as usize;
        self.ns[rank.clamp(1, self.ns.len()) - 1] as f64 / 1_000.0
    }
}

fn mean_us(ns: &[u64]) -> f64 {
    if ns.is_empty() {
        return f64::NAN;
    }
    ns.iter().map(|&n| n as f64).sum::<f64>() / ns.len() as f64 / 1_000.0
}

/// What the Python script prints.
#[derive(Debug, Deserialize)]
struct PythonReport {
    sdk_version: String,
    python: String,
    me_id: String,
    workflow_ids: Vec<String>,
    me_ns: Vec<u64>,
    workflows_ns: Vec<u64>,
    me_cpu_ns: u64,
    workflows_cpu_ns: u64,
    /// The concurrent phase, when it ran.
    batches: Option<PythonBatches>,
}

/// What the Python script measured with calls in flight at once.
#[derive(Debug, Deserialize)]
struct PythonBatches {
    me: PythonBatch,
    workflows: PythonBatch,
}

#[derive(Debug, Deserialize)]
struct PythonBatch {
    calls: u64,
    ns: u64,
    cpu_ns: u64,
}

impl From<PythonBatch> for Throughput {
    fn from(b: PythonBatch) -> Self {
        Self {
            calls: b.calls,
            wall: Duration::from_nanos(b.ns),
            client_cpu: Duration::from_nanos(b.cpu_ns),
            server_cpu: None,
        }
    }
}

/// Calls made many at a time: wall time and CPU over all of them, so the
/// time per call is what a client gets through when it does not wait for
/// one call before making the next.
#[derive(Debug, Default, Clone)]
struct Throughput {
    calls: u64,
    wall: Duration,
    client_cpu: Duration,
    server_cpu: Option<Duration>,
}

impl Throughput {
    fn add(&mut self, other: &Throughput) {
        self.calls += other.calls;
        self.wall += other.wall;
        self.client_cpu += other.client_cpu;
        if let Some(cpu) = other.server_cpu {
            *self.server_cpu.get_or_insert(Duration::ZERO) += cpu;
        }
    }

    fn per_call_us(&self, d: Duration) -> f64 {
        d.as_secs_f64() * 1e6 / self.calls.max(1) as f64
    }

    fn us_per_call(&self) -> f64 {
        self.per_call_us(self.wall)
    }
}

/// The Python client's samples, or why there are none.
#[derive(Debug)]
enum PythonOutcome {
    Measured {
        version: String,
        python: String,
        me: Samples,
        workflows: Samples,
        /// `[me, workflows]` with calls in flight at once, when measured.
        batches: Option<Box<[Throughput; 2]>>,
    },
    Skipped(String),
}

/// A two-node flow (input → output) shaped as the official client saves it,
/// so that its `WorkflowDefinition` parses the listed page fully.
fn definition(i: u32) -> Value {
    let input = format!("00000000-0000-4000-8000-{:012}", 2 * i);
    let output = format!("00000000-0000-4000-8000-{:012}", 2 * i + 1);
    let connector =
        |node: &str, name: &str, kind: &str| json!({"node_id": node, "name": name, "type": kind});
    json!({
        "flow_version": "v1",
        "nodes": [
            {
                "type": "InputNode", "id": input, "name": "Question",
                "display": {"position": {"x": 0, "y": 0}},
                "node_config": {"label": "question", "type": "str", "fixed_value": false, "value": null},
                "connector_config": {}, "config_definition": {},
                "subflow_config": null, "subflow_id": null,
                "inputs": [connector(&input, "input", "input")],
                "outputs": [connector(&input, "output", "connector")],
            },
            {
                "type": "OutputNode", "id": output, "name": "Answer",
                "display": {"position": {"x": 350, "y": 0}},
                "node_config": {"label": "answer"},
                "connector_config": {}, "config_definition": {},
                "subflow_config": null, "subflow_id": null,
                "inputs": [connector(&output, "input", "connector")],
                "outputs": [connector(&output, "output", "output")],
            },
        ],
        "edges": [{
            "id": format!("00000000-0000-4000-9000-{i:012}"),
            "from_id": {"node_id": input, "connector_name": "output", "key": null, "optional": false},
            "to_id": {"node_id": output, "connector_name": "input", "key": null, "optional": false},
        }],
    })
}

/// The running platform.
#[derive(Debug)]
struct Server {
    addr: SocketAddr,
    base_url: String,
    api_key: String,
    stop: oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start_server(data_dir: &std::path::Path) -> anyhow::Result<Server> {
    let mut config = Config::new(data_dir);
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.welcome = true;
    // The default 100/s per key would refuse most calls of a sequential loop.
    config.key_rate_limit = None;
    let mut app = Application::build(config).await?;
    let api_key = app
        .take_welcome()
        .and_then(|welcome| welcome.api_key)
        .context("the first start issued no API key")?
        .expose_secret()
        .to_owned();
    let addr = app.local_addr();
    let base_url = format!("http://{addr}");
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Ok(Server {
        addr,
        base_url,
        api_key,
        stop,
        serving,
    })
}

/// Saves the flows and checks that both Rust clients get the same answers.
async fn prepare(clients: &Clients, workflows: u32) -> anyhow::Result<(Me, Vec<Workflow>)> {
    for i in 0..workflows {
        clients
            .sdk
            .workflows()
            .save(&WorkflowWrite {
                name: format!("Benchmark flow {:02}", i + 1),
                kind: "flow".to_owned(),
                definition: Some(definition(i)),
                error_handler: None,
            })
            .await
            .with_context(|| format!("cannot save flow {}", i + 1))?;
    }
    let me = clients.sdk.me().await?;
    let raw_me: Me = clients.raw(Op::Me, Extras::default()).await?;
    ensure!(me == raw_me, "sdk and raw decoded different `me` answers");
    let list = clients.sdk.workflows().list().await?;
    let raw_list: Page<Workflow> = clients.raw(Op::Workflows, Extras::default()).await?;
    ensure!(
        list == raw_list.items,
        "sdk and raw decoded different workflow pages"
    );
    ensure!(
        list.len() as u32 == workflows.min(10),
        "the first page has {} flows, expected {}",
        list.len(),
        workflows.min(10)
    );
    Ok((me, list))
}

fn cpu_time(clock: ClockId) -> Duration {
    let t = clock_gettime(clock);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// What a batch of sequential calls took.
#[derive(Debug, Default)]
struct Batch {
    ns: Vec<u64>,
    /// This thread: the whole Rust client side (current-thread runtime).
    client_cpu: Duration,
    /// The rest of the process: the server runtime, SQLite's thread.
    server_cpu: Duration,
}

/// `n` sequential calls, each timed.
async fn time_calls(clients: &Clients, kind: Kind, op: Op, n: u32) -> anyhow::Result<Batch> {
    let mut ns = Vec::with_capacity(n as usize);
    let thread_before = cpu_time(ClockId::ThreadCPUTime);
    let process_before = cpu_time(ClockId::ProcessCPUTime);
    for _ in 0..n {
        let started = Instant::now();
        clients
            .call(kind, op)
            .await
            .with_context(|| format!("{} {} failed", kind.name(), op.name()))?;
        ns.push(started.elapsed().as_nanos() as u64);
    }
    let client_cpu = cpu_time(ClockId::ThreadCPUTime).saturating_sub(thread_before);
    let process_cpu = cpu_time(ClockId::ProcessCPUTime).saturating_sub(process_before);
    Ok(Batch {
        ns,
        client_cpu,
        server_cpu: process_cpu.saturating_sub(client_cpu),
    })
}

/// Warm-up, then the interleaved rounds: in round `r` the clients run in
/// the order of `kinds` rotated by `r` (sdk raw floor, raw floor sdk, ...). Returns the
/// samples indexed `[op][kind]`.
async fn measure_rust(
    clients: &Clients,
    kinds: &[Kind],
    args: &Args,
) -> anyhow::Result<Vec<Vec<Samples>>> {
    for op in Op::ALL {
        for &kind in kinds {
            time_calls(clients, kind, op, args.warmup).await?;
        }
    }
    let per_round = (args.calls / args.rounds).max(1);
    let mut samples = vec![vec![Samples::default(); kinds.len()]; Op::ALL.len()];
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..kinds.len()).collect();
        order.rotate_left(round as usize % kinds.len());
        for (o, op) in Op::ALL.into_iter().enumerate() {
            for &k in &order {
                let batch = time_calls(clients, kinds[k], op, per_round).await?;
                samples[o][k].add_round(batch);
            }
            if args.per_round {
                let last = |k: usize| samples[o][k].rounds.last().copied().unwrap_or(f64::NAN);
                let means: Vec<String> = kinds
                    .iter()
                    .enumerate()
                    .map(|(k, kind)| format!("{} {:>6.1}", kind.name(), last(k)))
                    .collect();
                println!(
                    "round {:>3} {:<9} {} µs  sdk/raw {:.3}  ({} first)",
                    round + 1,
                    op.name(),
                    means.join("  "),
                    last(0) / last(1),
                    kinds[order[0]].name(),
                );
            }
        }
    }
    for per_op in &mut samples {
        for s in per_op {
            s.sort();
        }
    }
    Ok(samples)
}

/// `calls` calls, `concurrency` at a time: that many futures, each making
/// its share one after another, joined on the client thread.
async fn time_batch(
    clients: &Clients,
    kind: Kind,
    op: Op,
    calls: u32,
    concurrency: usize,
) -> anyhow::Result<Throughput> {
    let per_task = (calls as usize / concurrency).max(1);
    let thread_before = cpu_time(ClockId::ThreadCPUTime);
    let process_before = cpu_time(ClockId::ProcessCPUTime);
    let started = Instant::now();
    futures_util::future::try_join_all((0..concurrency).map(|_| async move {
        for _ in 0..per_task {
            clients.call(kind, op).await?;
        }
        anyhow::Ok(())
    }))
    .await
    .with_context(|| format!("{} {} failed", kind.name(), op.name()))?;
    let wall = started.elapsed();
    let client_cpu = cpu_time(ClockId::ThreadCPUTime).saturating_sub(thread_before);
    let process_cpu = cpu_time(ClockId::ProcessCPUTime).saturating_sub(process_before);
    Ok(Throughput {
        calls: (per_task * concurrency) as u64,
        wall,
        client_cpu,
        server_cpu: Some(process_cpu.saturating_sub(client_cpu)),
    })
}

/// The concurrent phase for sdk and raw (the floor is one blocking socket,
/// so it has no concurrent form): a warm-up that opens the connections, then
/// rounds in alternating order. Returns `[op][sdk, raw]`.
async fn measure_batches(clients: &Clients, args: &Args) -> anyhow::Result<Vec<[Throughput; 2]>> {
    let kinds = [Kind::Sdk, Kind::RAW];
    let warmup = (args.warmup as usize).max(args.concurrency * 4) as u32;
    for op in Op::ALL {
        for kind in kinds {
            time_batch(clients, kind, op, warmup, args.concurrency).await?;
        }
    }
    let per_round = (args.batch_calls / args.batch_rounds.max(1)).max(1);
    let mut out = vec![[Throughput::default(), Throughput::default()]; Op::ALL.len()];
    for round in 0..args.batch_rounds.max(1) {
        for (o, op) in Op::ALL.into_iter().enumerate() {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for k in order {
                let t = time_batch(clients, kinds[k], op, per_round, args.concurrency).await?;
                out[o][k].add(&t);
            }
        }
    }
    Ok(out)
}

/// Runs the official Python client in a subprocess and reads its timings.
fn measure_python(
    args: &Args,
    base_url: &str,
    api_key: &str,
    me: &Me,
    list: &[Workflow],
) -> anyhow::Result<PythonOutcome> {
    if args.no_python {
        return Ok(PythonOutcome::Skipped("--no-python".to_owned()));
    }
    let python = args
        .python
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PYTHON));
    if !python.is_file() {
        return Ok(PythonOutcome::Skipped(format!(
            "{} not found; create it with `tests/python/run.sh --setup-only`",
            python.display()
        )));
    }
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(PYTHON_SCRIPT)
        .arg(base_url)
        .arg(args.python_calls.to_string())
        .arg(args.python_warmup.to_string())
        .arg(args.python_rounds.max(1).to_string())
        .arg(args.concurrency.to_string())
        .arg(args.python_batch_calls.to_string())
        .arg("4")
        .env("NOXUS_BENCH_API_KEY", api_key)
        .env_remove("NOXUS_BACKEND_URL")
        .env_remove("NOXUS_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {}", python.display()))?;
    let mut stdout = child.stdout.take().context("no stdout pipe")?;
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).map(|_| out)
    });
    let deadline = Instant::now() + Duration::from_secs(args.python_timeout);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            child.kill()?;
            child.wait()?;
            bail!(
                "the Python client did not finish within {} s (--python-timeout)",
                args.python_timeout
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the stdout reader panicked"))??;
    ensure!(
        status.success(),
        "the Python client exited with {status} (its errors are above)"
    );
    let report: PythonReport = serde_json::from_str(out.trim())
        .with_context(|| format!("cannot read the Python client's report: {out:.300}"))?;
    ensure!(
        report.me_id == me.id,
        "Python's get_me() returned key {}, expected {}",
        report.me_id,
        me.id
    );
    let ids: Vec<&str> = list.iter().map(|w| w.id.as_str()).collect();
    ensure!(
        report.workflow_ids == ids,
        "Python's workflows.list() returned other flows: {:?}",
        report.workflow_ids
    );
    Ok(PythonOutcome::Measured {
        version: report.sdk_version,
        python: report.python,
        me: Samples::from_python(report.me_ns, report.me_cpu_ns),
        workflows: Samples::from_python(report.workflows_ns, report.workflows_cpu_ns),
        batches: report
            .batches
            .map(|b| Box::new([Throughput::from(b.me), Throughput::from(b.workflows)])),
    })
}

/// A 95% confidence interval of `a.mean() / b.mean()` from the paired
/// per-round differences (normal approximation; the rounds alternate, so a
/// round's pair saw the same conditions).
fn ratio_interval(a: &Samples, b: &Samples) -> (f64, f64) {
    let diffs: Vec<f64> = a.rounds.iter().zip(&b.rounds).map(|(x, y)| x - y).collect();
    let n = diffs.len() as f64;
    if diffs.len() < 2 {
        return (f64::NAN, f64::NAN);
    }
    let mean = diffs.iter().sum::<f64>() / n;
    let var = diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let half = 1.96 * (var / n).sqrt();
    let base = b.mean();
    (1.0 + (mean - half) / base, 1.0 + (mean + half) / base)
}

fn runtime_server(threads: usize) -> anyhow::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("server")
        .enable_all()
        .build()
        .context("cannot start the server runtime")
}

fn print_row(op: Op, client: &str, s: &Samples) {
    println!(
        "{:<10} {:<16} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.1} {:>10}",
        op.name(),
        client,
        s.ns.len(),
        s.mean(),
        s.percentile(0.50),
        s.percentile(0.99),
        s.percentile(0.0),
        s.client_cpu_us(),
        s.server_cpu_us()
            .map_or_else(|| "–".to_owned(), |us| format!("{us:.1}")),
    );
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    ensure!(
        args.calls >= args.rounds,
        "--calls must be at least --rounds"
    );
    ensure!(
        args.server_threads > 0,
        "--server-threads must be at least 1"
    );
    ensure!(
        args.python_calls >= args.python_rounds.max(1),
        "--python-calls must be at least --python-rounds"
    );

    let data_dir = tempfile::tempdir().context("cannot create a temporary data directory")?;
    let server_rt = runtime_server(args.server_threads)?;
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the client runtime")?;

    let server = server_rt.block_on(start_server(data_dir.path()))?;
    let base_url = server.base_url.clone();
    let sdk = noxus_sdk::Client::builder()
        .api_key(server.api_key.clone())
        .base_url(base_url.clone())
        .build()
        .context("cannot build the SDK client")?;
    let mut key_value = HeaderValue::from_str(&server.api_key)?;
    key_value.set_sensitive(true);
    let key_name = HeaderName::from_static("x-api-key");
    let mut sdk_headers = HeaderMap::new();
    sdk_headers.insert(key_name.clone(), key_value.clone());
    sdk_headers.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("noxus-sdk-rust/", env!("CARGO_PKG_VERSION"))),
    );
    let clients = Clients {
        sdk,
        http: reqwest::Client::new(),
        key_name,
        key_value,
        sdk_headers,
        me_url: format!("{base_url}{}", Op::Me.path()),
        workflows_url: format!("{base_url}{}?{WORKFLOWS_QUERY}", Op::Workflows.path()),
        base_url: base_url.clone(),
        floor: Floor::connect(server.addr, &server.api_key)?,
    };
    let kinds = Kind::list(args.variants);

    let (me, list, me_len, list_len) = client_rt.block_on(async {
        let (me, list) = prepare(&clients, args.workflows).await?;
        let me_len = clients.body(Op::Me).await?.len();
        let list_len = clients.body(Op::Workflows).await?.len();
        ensure!(
            clients.floor.call(Op::Me)? == me_len && clients.floor.call(Op::Workflows)? == list_len,
            "the floor client read bodies of other lengths"
        );
        anyhow::Ok((me, list, me_len, list_len))
    })?;

    let per_round = args.calls / args.rounds;
    println!("sdk_overhead: time per sequential call (one at a time, keep-alive), our SDK vs raw reqwest vs a bare socket (floor) vs the official Python client");
    println!(
        "server {base_url} in-process ({} worker thread(s), rate limit off), Rust clients on a current-thread runtime, {} CPUs",
        args.server_threads,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!("me        = GET /v1/admin/me, {me_len}-byte body → noxus_api::Me (sdk: client.me())");
    println!(
        "workflows = GET /v1/workflows?{WORKFLOWS_QUERY}, {} flows, {list_len}-byte body → Page<Workflow> (sdk: client.workflows().list())",
        list.len()
    );
    println!(
        "Rust: warm-up {} calls per client and operation, then {} rounds × {per_round} calls per client and operation, client order rotating per round",
        args.warmup, args.rounds
    );

    let rust = client_rt.block_on(measure_rust(&clients, &kinds, &args))?;
    let batches = if args.concurrency > 0 {
        println!(
            "Rust, {} calls in flight: warm-up, then {} rounds, {} calls per client and operation in all",
            args.concurrency,
            args.batch_rounds.max(1),
            args.batch_calls / args.batch_rounds.max(1) * args.batch_rounds.max(1)
        );
        Some(client_rt.block_on(measure_batches(&clients, &args))?)
    } else {
        None
    };

    if !args.no_python {
        println!(
            "Python: warm-up {} calls per operation, then {} rounds, {} calls per operation in all",
            args.python_warmup,
            args.python_rounds.max(1),
            args.python_calls / args.python_rounds.max(1) * args.python_rounds.max(1)
        );
    }
    let python = measure_python(&args, &base_url, &server.api_key, &me, &list)?;

    println!();
    println!(
        "{:<10} {:<16} {:>6} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "operation",
        "client",
        "calls",
        "mean µs",
        "p50 µs",
        "p99 µs",
        "min µs",
        "cli CPU µs",
        "srv CPU µs"
    );
    for (o, op) in Op::ALL.into_iter().enumerate() {
        for (k, kind) in kinds.iter().enumerate() {
            let name = match kind {
                Kind::Sdk => "sdk (noxus-sdk)".to_owned(),
                Kind::Floor => "floor (bare TCP)".to_owned(),
                _ if *kind == Kind::RAW => "raw (reqwest)".to_owned(),
                _ => kind.name(),
            };
            print_row(op, &name, &rust[o][k]);
        }
        if let PythonOutcome::Measured {
            version,
            me: py_me,
            workflows: py_list,
            ..
        } = &python
        {
            let s = if op == Op::Me { py_me } else { py_list };
            print_row(op, &format!("python {version}"), s);
        }
    }
    println!();

    let py_batches = match &python {
        PythonOutcome::Measured { batches, .. } => batches.as_ref(),
        PythonOutcome::Skipped(_) => None,
    };
    if let Some(batches) = &batches {
        println!(
            "{} calls in flight (Rust: futures on one thread; Python: asyncio tasks, aget_me() / workflows.alist())",
            args.concurrency
        );
        println!(
            "{:<10} {:<16} {:>7} {:>11} {:>9} {:>15} {:>15}",
            "operation",
            "client",
            "calls",
            "µs per call",
            "calls/s",
            "cli CPU µs/call",
            "srv CPU µs/call"
        );
        for (o, op) in Op::ALL.into_iter().enumerate() {
            let py = py_batches.map(|b| (b[o].clone(), "python"));
            for (t, name) in [
                (batches[o][0].clone(), "sdk (noxus-sdk)"),
                (batches[o][1].clone(), "raw (reqwest)"),
            ]
            .into_iter()
            .chain(py)
            {
                println!(
                    "{:<10} {:<16} {:>7} {:>11.1} {:>9.0} {:>15.1} {:>15}",
                    op.name(),
                    name,
                    t.calls,
                    t.us_per_call(),
                    1e6 / t.us_per_call(),
                    t.per_call_us(t.client_cpu),
                    t.server_cpu.map_or_else(
                        || "–".to_owned(),
                        |cpu| format!("{:.1}", t.per_call_us(cpu))
                    ),
                );
            }
        }
        println!();
    }

    let mut sdk_ok = true;
    let mut sdk_sure = true;
    for (o, op) in Op::ALL.into_iter().enumerate() {
        let (sdk, raw) = (&rust[o][0], &rust[o][1]);
        let ratio = sdk.mean() / raw.mean();
        sdk_ok &= ratio <= GOAL_SDK_VS_RAW;
        let (lo, hi) = ratio_interval(sdk, raw);
        sdk_sure &= !(lo..=hi).contains(&GOAL_SDK_VS_RAW);
        println!(
            "sdk/raw {:<9} mean {ratio:.3} (95% CI {lo:.3}–{hi:.3})  p50 {:.3}  sdk − raw {:+.2} µs per call;  client CPU {:.2}× ({:+.2} µs per call)",
            op.name(),
            sdk.percentile(0.5) / raw.percentile(0.5),
            sdk.mean() - raw.mean(),
            sdk.client_cpu_us() / raw.client_cpu_us(),
            sdk.client_cpu_us() - raw.client_cpu_us(),
        );
    }
    for (o, op) in Op::ALL.into_iter().enumerate() {
        let raw = &rust[o][1];
        for (k, kind) in kinds.iter().enumerate().skip(3) {
            let variant = &rust[o][k];
            println!(
                "{:<20} {:<9} − raw: {:+.2} µs per call, client CPU {:+.2} µs per call",
                kind.name(),
                op.name(),
                variant.mean() - raw.mean(),
                variant.client_cpu_us() - raw.client_cpu_us(),
            );
        }
    }
    println!(
        "goal sdk/raw ≤ {GOAL_SDK_VS_RAW} (ratio of the mean time per call, both operations): {}{}",
        if sdk_ok { "met" } else { "NOT met" },
        if sdk_sure {
            ""
        } else {
            " (a 95% CI contains the goal: within this run's noise, rerun)"
        }
    );

    match &python {
        PythonOutcome::Measured {
            version,
            python,
            me: py_me,
            workflows: py_list,
            ..
        } => {
            let mut py_ok = true;
            for (o, op) in Op::ALL.into_iter().enumerate() {
                let py = if op == Op::Me { py_me } else { py_list };
                let sdk = &rust[o][0];
                let ratio = py.mean() / sdk.mean();
                py_ok &= ratio >= GOAL_PYTHON_VS_SDK;
                println!(
                    "python/sdk {:<9} mean {ratio:.1}×  p50 {:.1}×  python − sdk {:+.1} µs per call;  client CPU {:.1}× ({:+.1} µs per call)",
                    op.name(),
                    py.percentile(0.5) / sdk.percentile(0.5),
                    py.mean() - sdk.mean(),
                    py.client_cpu_us() / sdk.client_cpu_us(),
                    py.client_cpu_us() - sdk.client_cpu_us(),
                );
            }
            let mut reachable = true;
            for (o, op) in Op::ALL.into_iter().enumerate() {
                let py = if op == Op::Me { py_me } else { py_list };
                let (sdk, floor) = (&rust[o][0], &rust[o][2]);
                let ceiling = py.mean() / floor.mean();
                reachable &= ceiling >= GOAL_PYTHON_VS_SDK;
                println!(
                    "python/floor {:<9} mean {ceiling:.1}×: the most any client could be faster than Python here;  sdk/floor {:.2}× ({:+.1} µs per call)",
                    op.name(),
                    sdk.mean() / floor.mean(),
                    sdk.mean() - floor.mean(),
                );
            }
            println!(
                "goal python/sdk ≥ {GOAL_PYTHON_VS_SDK}×, one call at a time (ratio of the mean time per call; noxus-sdk {version} on Python {python}): {}{}",
                if py_ok { "met" } else { "NOT met" },
                if py_ok || reachable {
                    ""
                } else {
                    " (and out of reach for any client: python/floor is below it)"
                }
            );
            if let (Some(batch), Some(py)) = (&batches, py_batches) {
                let mut ok = true;
                for (o, op) in Op::ALL.into_iter().enumerate() {
                    let (sdk, raw, py) = (&batch[o][0], &batch[o][1], &py[o]);
                    let ratio = py.us_per_call() / sdk.us_per_call();
                    ok &= ratio >= GOAL_PYTHON_VS_SDK;
                    println!(
                        "{} in flight: python/sdk {:<9} {ratio:.1}× per call;  sdk/raw {:.3};  client CPU python/sdk {:.1}×",
                        args.concurrency,
                        op.name(),
                        sdk.us_per_call() / raw.us_per_call(),
                        py.client_cpu.as_secs_f64() / py.calls as f64
                            / (sdk.client_cpu.as_secs_f64() / sdk.calls as f64),
                    );
                }
                println!(
                    "goal python/sdk ≥ {GOAL_PYTHON_VS_SDK}×, both with {} calls in flight (wall time per call over the whole batch): {}",
                    args.concurrency,
                    if ok { "met" } else { "NOT met" }
                );
                // The official client's async path is slower per call than its
                // sync loop, so compare each client at its fastest.
                let mut best_ok = true;
                for (o, op) in Op::ALL.into_iter().enumerate() {
                    let py_seq = if op == Op::Me { py_me } else { py_list };
                    let py_best = py_seq.mean().min(py[o].us_per_call());
                    let sdk_best = batch[o][0].us_per_call().min(rust[o][0].mean());
                    let ratio = py_best / sdk_best;
                    best_ok &= ratio >= GOAL_PYTHON_VS_SDK;
                    println!(
                        "each at its fastest: python/sdk {:<9} {ratio:.1}× per call (python {py_best:.1} µs: {}; sdk {sdk_best:.1} µs)",
                        op.name(),
                        if py_seq.mean() <= py[o].us_per_call() {
                            "its sync loop"
                        } else {
                            "asyncio"
                        },
                    );
                }
                println!(
                    "goal python/sdk ≥ {GOAL_PYTHON_VS_SDK}×, each client at its fastest way of making many calls: {}",
                    if best_ok { "met" } else { "NOT met" }
                );
            }
            if version != "0.6.0" {
                println!("note: the installed official client is {version}, not 0.6.0");
            }
        }
        PythonOutcome::Skipped(why) => {
            println!(
                "python: skipped ({why}); goal python/sdk ≥ {GOAL_PYTHON_VS_SDK}× not measured"
            );
        }
    }

    drop(clients);
    drop(client_rt);
    let Server { stop, serving, .. } = server;
    let _ = stop.send(());
    server_rt.block_on(async { serving.await.context("server task panicked")? })?;
    Ok(())
}
