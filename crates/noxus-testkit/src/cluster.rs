//! Several replicas of the platform as separate processes — the real
//! `noxus` binary — on one PostgreSQL database, on loopback ports: what
//! people deploy behind a load balancer, for the tests (and benchmarks)
//! about replicas.
//!
//! The database is a fresh one on the server `NOXUS_TEST_DATABASE_URL`
//! names ([`crate::postgres`]); without it [`Cluster::start`] returns `None`
//! after a visible SKIPPED line (and fails under `CI`). The first replica
//! makes the first start and prints the owner's first key (a tenant-admin
//! key), which the cluster keeps; the others find the platform set up. All
//! share one pepper. Dropping the cluster kills the replicas and drops the
//! database.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::postgres::{fresh_database_or_skip, FreshDatabase};

/// One `noxus serve` process.
#[derive(Debug)]
pub struct Replica {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    child: Child,
}

impl Replica {
    /// The URL of `path` on this replica.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Replicas on one database.
#[derive(Debug)]
pub struct Cluster {
    /// The replicas, in the order they started.
    pub replicas: Vec<Replica>,
    /// The owner's first key (tenant admin), printed by the first start.
    pub owner_key: String,
    /// The first workspace.
    pub workspace_id: String,
    /// A client for requests to the replicas.
    pub http: reqwest::Client,
    database: Option<FreshDatabase>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Replica tests start their own processes on their own PostgreSQL
/// database whatever `NOXUS_TEST_BACKEND` says, so the pass that runs every
/// `TestApp` on PostgreSQL (`NOXUS_TEST_BACKEND=postgres`, the second pass
/// of CI) would only repeat them: there they print `SKIPPED` and return.
fn ran_in_the_default_pass(test: &str) -> bool {
    if crate::postgres::enabled() {
        let line = format!(
            "\nSKIPPED: {test} (replica tests do not depend on NOXUS_TEST_BACKEND: they run, on PostgreSQL, in the default pass)\n"
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
        true
    } else {
        false
    }
}

/// A 40-character pepper, the same for every replica of one cluster.
const PEPPER: &str = "cluster-test-pepper-0123456789abcdefghij";

impl Cluster {
    /// Starts `replicas` processes of `noxus` (the binary's path, e.g.
    /// `env!("CARGO_BIN_EXE_noxus")` in the CLI's tests) on a fresh
    /// database, each with `extra_args` added to `noxus serve`, and waits
    /// until every one is ready. `None` (after a SKIPPED line) without
    /// PostgreSQL.
    pub async fn start(
        test: &str,
        noxus: &Path,
        replicas: usize,
        extra_args: &[&str],
    ) -> Option<Self> {
        if ran_in_the_default_pass(test) {
            return None;
        }
        let database = fresh_database_or_skip(test).await?;
        Some(Self::start_on(database, noxus, replicas, extra_args).await)
    }

    /// [`Cluster::start`] on a given database (benchmarks make their own).
    pub async fn start_on(
        database: FreshDatabase,
        noxus: &Path,
        replicas: usize,
        extra_args: &[&str],
    ) -> Self {
        let http = reqwest::Client::new();
        let mut cluster = Self {
            replicas: Vec::new(),
            owner_key: String::new(),
            workspace_id: String::new(),
            http,
            database: Some(database),
        };
        for index in 0..replicas {
            let port = free_port();
            let mut child = Command::new(noxus)
                .arg("serve")
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(extra_args)
                .env("NOXUS_DATABASE_URL", cluster.database_url())
                .env("NOXUS_KEY_PEPPER", PEPPER)
                .env_remove("NOXUS_NO_WELCOME")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("noxus serve starts");
            let stdout = child.stdout.take().expect("stdout");
            if index == 0 {
                // The first start prints the owner's key once.
                let mut lines = BufReader::new(stdout).lines();
                let key = lines
                    .by_ref()
                    .map_while(Result::ok)
                    .find_map(|l| {
                        l.trim()
                            .strip_prefix("export NOXUS_API_KEY=")
                            .map(str::to_owned)
                    })
                    .expect("the first replica prints the first key");
                cluster.owner_key = key;
                // Keep draining stdout so the process never blocks on it.
                std::thread::spawn(move || for _ in lines {});
            } else {
                std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
            }
            let replica = Replica {
                base_url: format!("http://127.0.0.1:{port}"),
                child,
            };
            cluster.wait_ready(&replica).await;
            cluster.replicas.push(replica);
        }
        let me: serde_json::Value = cluster
            .http
            .get(cluster.replicas[0].url("/v1/admin/me"))
            .header("X-API-Key", &cluster.owner_key)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("the owner's key works")
            .json()
            .await
            .expect("JSON");
        cluster.workspace_id = me["workspace_id"].as_str().unwrap_or_default().to_owned();
        cluster
    }

    /// The database's URL (a secret in real deployments; a test database here).
    pub fn database_url(&self) -> String {
        self.database
            .as_ref()
            .map(|d| d.url().to_owned())
            .unwrap_or_default()
    }

    async fn wait_ready(&self, replica: &Replica) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(replica.url("/readyz")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "replica {} did not become ready",
                replica.base_url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A GET on replica `index` with a key.
    pub fn get(&self, index: usize, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http
            .get(self.replicas[index].url(path))
            .header("X-API-Key", key)
    }

    /// A POST on replica `index` with a key.
    pub fn post(&self, index: usize, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http
            .post(self.replicas[index].url(path))
            .header("X-API-Key", key)
    }

    /// A DELETE on replica `index` with a key.
    pub fn delete(&self, index: usize, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http
            .delete(self.replicas[index].url(path))
            .header("X-API-Key", key)
    }

    /// Creates a key in the first workspace through replica `index`;
    /// returns its id and its secret.
    pub async fn create_key(&self, index: usize, body: serde_json::Value) -> (String, String) {
        let created: serde_json::Value = self
            .post(
                index,
                &format!("/v1/admin/groups/{}/api-keys", self.workspace_id),
                &self.owner_key,
            )
            .json(&body)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("the key is created")
            .json()
            .await
            .expect("JSON");
        (
            created["id"].as_str().unwrap_or_default().to_owned(),
            created["value"].as_str().unwrap_or_default().to_owned(),
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for replica in &mut self.replicas {
            let _ = replica.child.kill();
            let _ = replica.child.wait();
        }
        // The database goes with its handle (dropped after the processes).
        drop(self.database.take());
    }
}

// Failures (issue 14): replicas started at once, with another pepper or
// through a proxy to PostgreSQL, signalled, watched until they exit, with
// what they print kept for the test to read.

/// Which pepper a replica gets. `Debug` does not show it.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum ReplicaPepper {
    /// The cluster's, shared by every replica.
    #[default]
    Shared,
    /// Another one (a misconfigured replica).
    Other(String),
    /// None: `NOXUS_KEY_PEPPER` unset.
    Unset,
}

impl std::fmt::Debug for ReplicaPepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shared => f.write_str("Shared"),
            Self::Other(pepper) => write!(f, "Other({} bytes)", pepper.len()),
            Self::Unset => f.write_str("Unset"),
        }
    }
}

/// How one replica is started ([`Cluster::start_with`], [`Cluster::spawn_replica`]).
#[derive(Debug, Clone, Default)]
pub struct ReplicaOptions {
    /// Added to `noxus serve`.
    pub extra_args: Vec<String>,
    /// Its pepper.
    pub pepper: ReplicaPepper,
    /// Its port (a restart on the same address); a free one if `None`.
    pub port: Option<u16>,
    /// Where it reaches PostgreSQL, instead of the database's own server:
    /// e.g. a [`crate::proxy::CuttableProxy`]'s address.
    pub database_addr: Option<std::net::SocketAddr>,
}

impl ReplicaOptions {
    /// Options with these `noxus serve` arguments.
    pub fn with_args(args: &[&str]) -> Self {
        Self {
            extra_args: args.iter().map(|a| (*a).to_owned()).collect(),
            ..Self::default()
        }
    }
}

/// What a process wrote on one of its streams, read by a thread of its own
/// until the stream closes (so the process never blocks on a full pipe).
#[derive(Debug, Default)]
struct Captured {
    bytes: std::sync::Mutex<Vec<u8>>,
    closed: std::sync::atomic::AtomicBool,
}

impl Captured {
    fn drain(stream: impl std::io::Read + Send + 'static) -> std::sync::Arc<Self> {
        let captured = std::sync::Arc::new(Self::default());
        let writer = std::sync::Arc::clone(&captured);
        std::thread::spawn(move || {
            let mut stream = stream;
            let mut buffer = [0u8; 8192];
            loop {
                match std::io::Read::read(&mut stream, &mut buffer) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Ok(0) | Err(_) => break,
                    Ok(n) => writer
                        .bytes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend_from_slice(&buffer[..n]),
                }
            }
            writer
                .closed
                .store(true, std::sync::atomic::Ordering::Release);
        });
        captured
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// The standard output and error of the replicas started by this module's
/// new methods, by process id (a [`Replica`] holds only its child).
type Outputs = std::collections::HashMap<u32, (std::sync::Arc<Captured>, std::sync::Arc<Captured>)>;

fn outputs() -> &'static std::sync::Mutex<Outputs> {
    static OUTPUTS: std::sync::OnceLock<std::sync::Mutex<Outputs>> = std::sync::OnceLock::new();
    OUTPUTS.get_or_init(Default::default)
}

fn captured(pid: u32) -> Option<(std::sync::Arc<Captured>, std::sync::Arc<Captured>)> {
    outputs()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&pid)
        .cloned()
}

/// `url` with its host and port replaced by `addr`.
fn url_through(url: &str, addr: std::net::SocketAddr) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let user = authority
        .rsplit_once('@')
        .map_or(String::new(), |(u, _)| format!("{u}@"));
    format!("{scheme}://{user}{addr}/{path}")
}

impl Replica {
    /// Its port.
    pub fn port(&self) -> u16 {
        self.base_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_default()
    }

    /// What it printed on standard output so far (empty for replicas
    /// started by [`Cluster::start`], whose output is not kept).
    pub fn stdout(&self) -> String {
        captured(self.pid())
            .map(|(o, _)| o.text())
            .unwrap_or_default()
    }

    /// What it wrote on standard error (its log) so far (empty for
    /// replicas started by [`Cluster::start`]).
    pub fn stderr(&self) -> String {
        captured(self.pid())
            .map(|(_, e)| e.text())
            .unwrap_or_default()
    }

    /// Sends SIGTERM: a graceful stop (in-flight requests finish, usage is
    /// flushed).
    pub fn terminate(&self) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).expect("a process id");
        // An error means the process is gone already.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }

    /// Sends SIGKILL: the process ends at once, without cleaning up.
    pub fn kill_now(&mut self) {
        let _ = self.child.kill();
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (up to `timeout`) for the process to exit and for its captured
    /// output to be complete; `None` if it still runs.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The pipes close with the process (it starts no children).
        if let Some((out, err)) = captured(self.pid()) {
            while !(out.is_closed() && err.is_closed()) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Some(status)
    }
}

impl Drop for Replica {
    /// A replica never outlives its handle (one started but not yet in a
    /// cluster, or a test that panicked).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How [`Cluster::start_with`] starts a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// How many replicas.
    pub replicas: usize,
    /// All at once on the empty database (each may try the first start),
    /// instead of one after another.
    pub concurrently: bool,
    /// How each replica is started.
    pub replica: ReplicaOptions,
}

impl Cluster {
    /// [`Cluster::start`] with options; every replica's standard output and
    /// error are kept ([`Replica::stdout`], [`Replica::stderr`]). The
    /// owner's key is the one a replica printed (with `concurrently`,
    /// whichever made the first start). `None` (after a SKIPPED line)
    /// without PostgreSQL.
    pub async fn start_with(test: &str, noxus: &Path, options: &ClusterOptions) -> Option<Self> {
        if ran_in_the_default_pass(test) {
            return None;
        }
        let database = fresh_database_or_skip(test).await?;
        let mut cluster = Self {
            replicas: Vec::new(),
            owner_key: String::new(),
            workspace_id: String::new(),
            http: reqwest::Client::new(),
            database: Some(database),
        };
        if options.concurrently {
            for _ in 0..options.replicas {
                cluster.spawn_replica(noxus, &options.replica);
            }
            for index in 0..options.replicas {
                cluster.wait_replica_ready(index).await;
            }
        } else {
            for _ in 0..options.replicas {
                cluster.add_replica(noxus, &options.replica).await;
            }
        }
        cluster.owner_key = cluster.printed_key().await;
        let me: serde_json::Value = cluster
            .get(0, "/v1/admin/me", &cluster.owner_key)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("the owner's key works")
            .json()
            .await
            .expect("JSON");
        cluster.workspace_id = me["workspace_id"].as_str().unwrap_or_default().to_owned();
        Some(cluster)
    }

    /// The first key some replica printed (waiting up to 10 s for its
    /// output to be read).
    async fn printed_key(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(key) = self.replicas.iter().find_map(|r| first_key_in(&r.stdout())) {
                return key;
            }
            assert!(
                Instant::now() < deadline,
                "no replica printed the first key"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts one more replica on the cluster's database, without waiting
    /// for it to be ready; returns its index in [`Cluster::replicas`].
    pub fn spawn_replica(&mut self, noxus: &Path, options: &ReplicaOptions) -> usize {
        let port = options.port.unwrap_or_else(free_port);
        let url = match options.database_addr {
            Some(addr) => url_through(&self.database_url(), addr),
            None => self.database_url(),
        };
        let mut command = Command::new(noxus);
        command
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(&options.extra_args)
            .env("NOXUS_DATABASE_URL", url)
            .env_remove("NOXUS_KEY_PEPPER")
            .env_remove("NOXUS_KEY_PEPPER_PREVIOUS")
            .env_remove("NOXUS_NO_WELCOME")
            .env_remove("NOXUS_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match &options.pepper {
            ReplicaPepper::Shared => {
                command.env("NOXUS_KEY_PEPPER", PEPPER);
            }
            ReplicaPepper::Other(pepper) => {
                command.env("NOXUS_KEY_PEPPER", pepper);
            }
            ReplicaPepper::Unset => {}
        }
        let mut child = command.spawn().expect("noxus serve starts");
        let stdout = Captured::drain(child.stdout.take().expect("stdout"));
        let stderr = Captured::drain(child.stderr.take().expect("stderr"));
        outputs()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(child.id(), (stdout, stderr));
        self.replicas.push(Replica {
            base_url: format!("http://127.0.0.1:{port}"),
            child,
        });
        self.replicas.len() - 1
    }

    /// Starts one more replica and waits until it is ready; returns its index.
    pub async fn add_replica(&mut self, noxus: &Path, options: &ReplicaOptions) -> usize {
        let index = self.spawn_replica(noxus, options);
        self.wait_replica_ready(index).await;
        index
    }

    /// Waits (up to 30 s) until replica `index` answers `/readyz` with 200;
    /// fails with its log if it exits or never does.
    pub async fn wait_replica_ready(&mut self, index: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self
                .http
                .get(self.replicas[index].url("/readyz"))
                .send()
                .await
            {
                if r.status().is_success() {
                    return;
                }
            }
            let replica = &mut self.replicas[index];
            if !replica.is_running() {
                let status = replica.wait_exit(Duration::from_secs(5)).await;
                panic!(
                    "replica {index} exited ({status:?}) before it was ready:\n{}",
                    replica.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "replica {index} did not become ready:\n{}",
                replica.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A connection to the cluster's database, to check what it holds.
    pub async fn database(&self) -> sqlx::PgConnection {
        use sqlx::Connection as _;
        sqlx::PgConnection::connect(&self.database_url())
            .await
            .expect("the cluster's database answers")
    }
}

/// The key in an `export NOXUS_API_KEY=<key>` line of `text`, if any.
pub fn first_key_in(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.trim()
            .strip_prefix("export NOXUS_API_KEY=")
            .map(str::to_owned)
    })
}

/// The pepper every replica of a cluster shares (a test checks that no
/// replica prints it).
pub const SHARED_PEPPER: &str = PEPPER;

/// Replicas stopped and restarted one at a time: a rolling restart
/// (SIGTERM, then a new process on the same port), a replica killed.
impl Cluster {
    /// Kills replica `index` with SIGKILL (no shutdown: whatever it had not
    /// written yet is lost) and reaps it.
    pub fn kill_replica(&mut self, index: usize) {
        let child = &mut self.replicas[index].child;
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends SIGTERM to replica `index` (a graceful shutdown) and waits, at
    /// most 30 s, for it to exit; returns how it exited.
    pub async fn terminate_replica(&mut self, index: usize) -> std::process::ExitStatus {
        self.replicas[index].terminate();
        self.replicas[index]
            .wait_exit(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("replica {index} did not exit within 30 s of SIGTERM"))
    }

    /// Starts replica `index` again, after it stopped, on the same port
    /// with `extra_args`, and waits until it is ready.
    pub async fn restart_replica(&mut self, index: usize, noxus: &Path, extra_args: &[&str]) {
        let options = ReplicaOptions {
            port: Some(self.replicas[index].port()),
            ..ReplicaOptions::with_args(extra_args)
        };
        let new = self.spawn_replica(noxus, &options);
        self.wait_replica_ready(new).await;
        // The new process takes the old one's place; the old one (stopped
        // already) is reaped as it is dropped.
        self.replicas.swap(index, new);
        drop(self.replicas.pop());
    }
}

impl Replica {
    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }
}

/// A person of the cluster's organization, made by [`Arranger::user`]: a
/// dashboard login ([`crate::TEST_PASSWORD`]) and a key of theirs.
#[derive(Debug, Clone)]
pub struct ClusterUser {
    /// User id.
    pub id: String,
    /// Login email.
    pub email: String,
    /// Dashboard password.
    pub password: String,
    /// The user's key (full secret), in the workspace they were made in.
    pub key: String,
    /// Its id.
    pub key_id: String,
}

/// The worker name under which [`Arranger::held_run`] holds its runs.
pub const ARRANGER_WORKER: &str = "the-arranger";

/// What the API cannot arrange, done directly in the cluster's database
/// through the platform's own store (as [`crate::TestApp::user_with_role`]
/// does in process): people, their memberships, keys of theirs. The store
/// is one more instance on the database, so its writes reach the replicas'
/// listeners like any replica's. Changes under test go through a replica.
pub struct Arranger {
    store: noxus_server::store::PostgresStore,
    hasher: noxus_server::domain::keys::KeyHasher,
    organization_id: String,
}

impl std::fmt::Debug for Arranger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arranger")
            .field("organization_id", &self.organization_id)
            .finish_non_exhaustive()
    }
}

/// A dashboard session (cookies and CSRF token), valid on every replica:
/// sessions are rows of the shared database.
#[derive(Clone)]
pub struct Dashboard {
    http: reqwest::Client,
    bases: Vec<String>,
    cookies: Vec<(String, String)>,
    csrf: String,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the session's cookie or token.
        f.debug_struct("Dashboard")
            .field("replicas", &self.bases)
            .finish_non_exhaustive()
    }
}

fn keep_cookies(cookies: &mut Vec<(String, String)>, response: &reqwest::Response) {
    for value in response.headers().get_all("set-cookie") {
        let Some((name, value)) = value
            .to_str()
            .ok()
            .and_then(|text| text.split(';').next())
            .and_then(|pair| pair.split_once('='))
        else {
            continue;
        };
        cookies.retain(|(n, _)| n != name);
        if !value.is_empty() {
            cookies.push((name.to_owned(), value.to_owned()));
        }
    }
}

fn cookie_header(cookies: &[(String, String)]) -> String {
    cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The value of the first `<input name="{name}" value="…">` of a page.
fn form_field(body: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker)? + marker.len();
    let end = body[start..].find('"')? + start;
    Some(body[start..end].to_owned())
}

impl Cluster {
    /// An [`Arranger`] on the cluster's database.
    pub async fn arranger(&self) -> Arranger {
        use noxus_server::store::prelude::*;
        let store = noxus_server::store::PostgresStore::open(
            &noxus_server::store::PostgresOptions::new(self.database_url()),
        )
        .await
        .expect("a store on the cluster's database");
        let organization_id = store
            .organization()
            .await
            .expect("the organization")
            .expect("the first start made it")
            .id
            .into_string();
        let pepper = secrecy::SecretString::from(PEPPER.to_owned());
        Arranger {
            store,
            hasher: noxus_server::domain::keys::KeyHasher::new(Some(&pepper)),
            organization_id,
        }
    }

    /// Logs `email` into the dashboard through replica `index`.
    pub async fn dashboard(&self, index: usize, email: &str, password: &str) -> Dashboard {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client");
        let bases: Vec<String> = self.replicas.iter().map(|r| r.base_url.clone()).collect();
        let mut cookies = Vec::new();
        let page = http
            .get(format!("{}/login", bases[index]))
            .send()
            .await
            .expect("the login page");
        keep_cookies(&mut cookies, &page);
        let body = page.text().await.expect("the login page");
        let token = form_field(&body, "csrf").expect("the login form's token");
        let login = http
            .post(format!("{}/login", bases[index]))
            .header("cookie", cookie_header(&cookies))
            .form(&[("email", email), ("password", password), ("csrf", &token)])
            .send()
            .await
            .expect("the login");
        assert!(
            login.status().is_redirection(),
            "the login of {email} answered {}",
            login.status()
        );
        keep_cookies(&mut cookies, &login);
        let page = http
            .get(format!("{}/settings/account", bases[index]))
            .header("cookie", cookie_header(&cookies))
            .send()
            .await
            .expect("a page");
        let body = page.text().await.expect("a page");
        let csrf = form_field(&body, "csrf").expect("the session's token");
        Dashboard {
            http,
            bases,
            cookies,
            csrf,
        }
    }
}

impl Dashboard {
    /// Posts a form (the session's CSRF token added) to replica `index`;
    /// redirects are not followed.
    pub async fn post(&self, index: usize, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        fields.push(("csrf", &self.csrf));
        self.http
            .post(format!("{}{path}", self.bases[index]))
            .header("cookie", cookie_header(&self.cookies))
            .form(&fields)
            .send()
            .await
            .expect("the dashboard answers")
    }
}

impl Arranger {
    /// The store (one more instance on the cluster's database).
    pub fn store(&self) -> &noxus_server::store::PostgresStore {
        &self.store
    }

    /// Makes a user of the organization with `role` in `workspace_id`, and
    /// a key of theirs there (unrestricted, no expiry).
    pub async fn user(&self, workspace_id: &str, role: noxus_api::Role) -> ClusterUser {
        use noxus_server::store::prelude::*;
        let n = uuid::Uuid::new_v4().simple().to_string();
        let email = format!("{role}-{}@cluster.noxus.local", &n[..12]);
        let user = self
            .store
            .create_user(
                &noxus_server::store::Actor::system(),
                noxus_server::store::NewUser {
                    organization_id: self.organization_id.as_str().into(),
                    email: email.clone(),
                    name: format!("{role} {}", &n[..6]),
                    password_hash: noxus_server::domain::passwords::hash_password(
                        crate::TEST_PASSWORD,
                    )
                    .expect("a hash"),
                    is_org_admin: false,
                    must_change_password: false,
                },
            )
            .await
            .expect("the user");
        self.set_role(workspace_id, user.id.as_str(), role).await;
        let (key_id, key) = self
            .key(workspace_id, user.id.as_str(), crate::KeyOptions::default())
            .await;
        ClusterUser {
            id: user.id.into_string(),
            email,
            password: crate::TEST_PASSWORD.to_owned(),
            key,
            key_id,
        }
    }

    /// Gives `user_id` `role` in `workspace_id` (adding them if needed).
    pub async fn set_role(&self, workspace_id: &str, user_id: &str, role: noxus_api::Role) {
        use noxus_server::store::prelude::*;
        self.store
            .set_membership(
                &noxus_server::store::Actor::system(),
                &workspace_id.into(),
                &user_id.into(),
                role,
            )
            .await
            .expect("the membership");
    }

    /// Makes `user_id` an organization admin (as the dashboard does).
    pub async fn make_org_admin(&self, user_id: &str) {
        use noxus_server::store::prelude::*;
        self.store
            .set_org_admin(
                &noxus_server::store::Actor::system(),
                &self.organization_id.as_str().into(),
                &user_id.into(),
                true,
            )
            .await
            .expect("an organization admin");
    }

    /// Issues a key of `user_id` in `workspace_id`; returns its id and secret.
    pub async fn key(
        &self,
        workspace_id: &str,
        user_id: &str,
        options: crate::KeyOptions,
    ) -> (String, String) {
        use noxus_server::store::prelude::*;
        let issued = self.hasher.issue();
        let record = self
            .store
            .create_key(
                &noxus_server::store::Actor::system(),
                noxus_server::store::NewKey {
                    workspace_id: workspace_id.into(),
                    user_id: user_id.into(),
                    name: options.name.unwrap_or_else(|| "cluster key".to_owned()),
                    digest: issued.digest,
                    prefix: issued.prefix,
                    suffix: issued.suffix,
                    tenant_admin: options.tenant_admin,
                    restriction: options.restriction,
                    expires_at: options.expires_at,
                    rate_limit: None,
                },
                noxus_server::store::KeyQuotas {
                    per_user: u32::MAX,
                    per_workspace: u32::MAX,
                },
            )
            .await
            .expect("the key");
        use secrecy::ExposeSecret as _;
        (
            record.id.into_string(),
            issued.secret.expose_secret().to_owned(),
        )
    }

    /// Saves a workflow of `definition` in `workspace_id`; returns its id.
    pub async fn workflow(&self, workspace_id: &str, definition: serde_json::Value) -> String {
        use noxus_server::store::prelude::*;
        self.store
            .create_workflow(
                &noxus_server::store::Actor::system(),
                &workspace_id.into(),
                noxus_server::store::WorkflowFields {
                    name: "arranged".to_owned(),
                    kind: "flow".to_owned(),
                    definition,
                    error_handler: None,
                },
                &noxus_server::store::WorkflowQuotas {
                    workflows_per_workspace: u64::MAX,
                    versions_per_workflow: u64::MAX,
                    definition_bytes_per_workspace: u64::MAX,
                },
            )
            .await
            .expect("the workflow")
            .id
            .into_string()
    }

    /// A run of `workflow_id` that stays `running` as long as the caller
    /// wants: queued and claimed at once by this store as worker
    /// [`ARRANGER_WORKER`] (its lease lasts an hour), before a replica's
    /// worker looks (tried again in the rare case one was first). Its
    /// events so far are `queued` and `started`; append more, or finish
    /// it, through [`Arranger::store`] as that worker.
    pub async fn held_run(&self, workspace_id: &str, workflow_id: &str, user_id: &str) -> String {
        use noxus_server::store::prelude::*;
        for _ in 0..20 {
            let run = self
                .store
                .create_run(
                    &noxus_server::store::Actor::system(),
                    &noxus_server::store::NewRun {
                        workspace_id: workspace_id.into(),
                        workflow_id: workflow_id.into(),
                        workflow_version_id: None,
                        definition: serde_json::json!({"nodes": [], "edges": []}),
                        input: serde_json::json!({}),
                        group_id: None,
                        callback_url: None,
                        started_by_user: user_id.into(),
                        started_by_key: None,
                    },
                    &noxus_server::store::RunQuotas::default(),
                )
                .await
                .expect("the run");
            let now = time::OffsetDateTime::now_utc();
            let claimed = self
                .store
                .claim_runs(ARRANGER_WORKER, 100, now, now + time::Duration::hours(1))
                .await
                .expect("a claim");
            if claimed.iter().any(|r| r.id == run.id) {
                return run.id.into_string();
            }
        }
        panic!("the replicas' workers claimed every run first");
    }

    /// Appends an event of `kind` to a run held by [`Arranger::held_run`];
    /// returns its number.
    pub async fn run_event(&self, run_id: &str, kind: &str, data: serde_json::Value) -> i64 {
        use noxus_server::store::prelude::*;
        self.store
            .append_run_event(&run_id.into(), kind, &data)
            .await
            .expect("the event")
    }

    /// Completes a run held by [`Arranger::held_run`] with `output`.
    pub async fn complete_held_run(&self, run_id: &str, output: serde_json::Value) {
        use noxus_server::store::prelude::*;
        let finished = self
            .store
            .finish_run(
                &run_id.into(),
                ARRANGER_WORKER,
                &noxus_server::store::RunOutcome::Completed { output },
                time::OffsetDateTime::now_utc(),
            )
            .await
            .expect("the outcome");
        assert!(finished, "the run was still held");
    }

    /// Closes the store.
    pub async fn close(&self) {
        use noxus_server::store::prelude::*;
        self.store.close().await;
    }
}
