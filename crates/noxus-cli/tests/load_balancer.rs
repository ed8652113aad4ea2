//! The example load-balancer configurations in `deploy/` run for real — the
//! `nginx` and `haproxy` programs, as child processes on a loopback port —
//! in front of two `noxus serve` replicas on one PostgreSQL database
//! (`noxus_testkit::cluster`). The files are used as they are, with only
//! the placeholders put in: the replicas' addresses, the listening address
//! (plain HTTP instead of TLS on 443, whose certificate lines go), the
//! stats socket's path and HAProxy's log target.
//!
//! Each test checks, through the load balancer: a key works; the replicas
//! record the client's own address (from `X-Forwarded-For`, believed from
//! the trusted proxy only; an address the client wrote itself is not);
//! with one replica's database cut away (its `/readyz` answers 503) GETs
//! keep succeeding, HAProxy takes the replica out on its `/readyz` check,
//! nginx passes 503s on to the other replica; a rolling restart (SIGTERM,
//! then a new process on the same port, one replica after the other) loses
//! no GET, and the load balancer met the stopped replica's refusals and
//! retried around them; with a replica killed (SIGKILL) GETs and a POST
//! keep succeeding and HAProxy marks the replica down.
//!
//! Without `nginx` or `haproxy` installed (Debian packages `nginx`,
//! `haproxy`) a test says SKIPPED, and fails under `CI`; without
//! PostgreSQL (`NOXUS_TEST_DATABASE_URL`) likewise.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use noxus_testkit::cluster::{Cluster, ReplicaOptions};
use noxus_testkit::proxy::CuttableProxy;

const NOXUS: &str = env!("CARGO_BIN_EXE_noxus");

/// The example configurations' two replicas (their `server` lines).
const REPLICA_PLACEHOLDERS: [&str; 2] = ["10.0.0.11:8080", "10.0.0.12:8080"];

/// The client's own address: a second loopback address, so that the
/// replicas can tell it from the load balancer's (127.0.0.1).
const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// An address the client claims in its own `X-Forwarded-For`.
const FORGED: &str = "198.51.100.7";

/// Generous bound for anything the test waits for.
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Nginx,
    Haproxy,
}

impl Kind {
    fn program(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `program` on the PATH or in the sbin directories (where Debian puts
/// nginx and haproxy, often not on a non-root PATH).
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The program, or `None` after a SKIPPED line (a failure under `CI`).
fn program_or_skip(test: &str, kind: Kind) -> Option<PathBuf> {
    let program = kind.program();
    if let Some(path) = find_program(program) {
        return Some(path);
    }
    let why = format!("`{program}` is not installed (Debian package `{program}`)");
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {why}; CI is set, so this test may not be skipped");
    }
    noxus_testkit::report_skip(test, &why);
    None
}

/// `text` with its one occurrence of `from` replaced: a placeholder that is
/// gone (or doubled) from the example file fails the test, so the file and
/// this test cannot drift apart unseen.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "the example configuration should contain `{from}` once"
    );
    text.replacen(from, to, 1)
}

/// The host and port of a `postgres://[user@]host:port/db` URL.
fn server_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").unwrap().1;
    let authority = rest.split('/').next().unwrap();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    host_port.to_socket_addrs().unwrap().next().unwrap()
}

/// `url` with its host and port replaced by `addr`.
fn through(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let user = authority
        .rsplit_once('@')
        .map_or(String::new(), |(u, _)| format!("{u}@"));
    format!("{scheme}://{user}{addr}/{path}")
}

/// One request as nginx logged it (the test's `log_format`).
#[derive(Debug)]
struct Logged {
    /// Every replica tried, in order (`$upstream_addr`).
    upstreams: Vec<String>,
    /// Their answers (`$upstream_status`), in the same order.
    upstream_statuses: Vec<String>,
    /// What the client got.
    status: String,
}

/// The load balancer as a child process, in a temporary directory of its
/// own (configuration, pid file, logs, sockets); stopped when dropped.
struct LoadBalancer {
    kind: Kind,
    program: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl LoadBalancer {
    /// Renders the example configuration for `replicas` (two addresses)
    /// and `port`, starts the program and waits until it accepts
    /// connections.
    fn start(kind: Kind, program: &Path, port: u16, replicas: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Run as root, nginx's workers run as `nobody`: they must reach
        // their temporary directories in here.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let d = dir.path().display().to_string();
        let child = match kind {
            Kind::Nginx => {
                let example =
                    std::fs::read_to_string(repo_root().join("deploy/nginx/noxus.conf")).unwrap();
                let mut site = replace_once(
                    &example,
                    "listen 443 ssl;",
                    &format!("listen 127.0.0.1:{port};"),
                );
                for (placeholder, replica) in REPLICA_PLACEHOLDERS.iter().zip(replicas) {
                    site = replace_once(
                        &site,
                        &format!("server {placeholder} "),
                        &format!("server {replica} "),
                    );
                }
                // Plain HTTP here: no certificate.
                let before = site.lines().count();
                site = site
                    .lines()
                    .filter(|line| !line.trim_start().starts_with("ssl_certificate"))
                    .map(|line| format!("{line}\n"))
                    .collect();
                assert_eq!(site.lines().count(), before - 2, "two certificate lines");
                std::fs::write(dir.path().join("noxus.conf"), site).unwrap();
                // What Debian's /etc/nginx/nginx.conf is around conf.d/, with
                // every path in the temporary directory, and a log format
                // that says which replicas each request went to.
                let main = format!(
                    "pid {d}/nginx.pid;\n\
                     error_log {d}/error.log info;\n\
                     worker_processes 1;\n\
                     events {{ worker_connections 512; }}\n\
                     http {{\n\
                     \x20   log_format lb '$upstream_addr|$upstream_status|$status|$request_method';\n\
                     \x20   access_log {d}/access.log lb;\n\
                     \x20   client_body_temp_path {d}/client_body;\n\
                     \x20   proxy_temp_path {d}/proxy;\n\
                     \x20   fastcgi_temp_path {d}/fastcgi;\n\
                     \x20   uwsgi_temp_path {d}/uwsgi;\n\
                     \x20   scgi_temp_path {d}/scgi;\n\
                     \x20   include {d}/noxus.conf;\n\
                     }}\n"
                );
                std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
                Command::new(program)
                    .args(["-p", &d, "-c", &format!("{d}/nginx.conf")])
                    .args(["-e", &format!("{d}/error.log"), "-g", "daemon off;"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            }
            Kind::Haproxy => {
                let example =
                    std::fs::read_to_string(repo_root().join("deploy/haproxy/haproxy.cfg"))
                        .unwrap();
                let mut config = replace_once(
                    &example,
                    "bind :443 ssl crt /etc/haproxy/certs/noxus.pem",
                    &format!("bind 127.0.0.1:{port}"),
                );
                for (n, (placeholder, replica)) in
                    REPLICA_PLACEHOLDERS.iter().zip(replicas).enumerate()
                {
                    config = replace_once(
                        &config,
                        &format!("server noxus{} {placeholder}", n + 1),
                        &format!("server noxus{} {replica}", n + 1),
                    );
                }
                config = replace_once(
                    &config,
                    "stats socket /run/haproxy/admin.sock",
                    &format!("stats socket {d}/admin.sock"),
                );
                // No syslog here: the log goes to a file in the directory.
                config = replace_once(
                    &config,
                    "log /dev/log local0",
                    "log stderr format raw local0",
                );
                std::fs::write(dir.path().join("haproxy.cfg"), config).unwrap();
                let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
                Command::new(program)
                    .args(["-f", &format!("{d}/haproxy.cfg"), "-db"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::from(log))
                    .spawn()
                    .unwrap()
            }
        };
        let mut lb = Self {
            kind,
            program: program.to_owned(),
            dir,
            port,
            child,
        };
        lb.wait_listening();
        lb
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && (self.kind == Kind::Nginx || self.dir.path().join("admin.sock").exists())
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) at start:\n{}",
                    self.kind.program(),
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} does not listen:\n{}",
                self.kind.program(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its error log (nginx) or log (HAProxy), for failure messages.
    fn logs(&self) -> String {
        let file = match self.kind {
            Kind::Nginx => "error.log",
            Kind::Haproxy => "haproxy.log",
        };
        std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// nginx: every request logged so far, oldest first.
    fn access_log(&self) -> Vec<Logged> {
        assert_eq!(self.kind, Kind::Nginx);
        let text = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split('|').collect();
                let list = |f: &str| -> Vec<String> {
                    f.split(", ").map(|s| s.trim().to_owned()).collect()
                };
                (fields.len() == 4).then(|| Logged {
                    upstreams: list(fields[0]),
                    upstream_statuses: list(fields[1]),
                    status: fields[2].to_owned(),
                })
            })
            .collect()
    }

    /// HAProxy: the backend's servers as `show stat` on the stats socket
    /// reports them, by name (`noxus1`, `noxus2`): each a map from the CSV
    /// column (`status`, `check_status`, `check_code`, `stot`, ...) to its
    /// value.
    fn servers(&self) -> HashMap<String, HashMap<String, String>> {
        assert_eq!(self.kind, Kind::Haproxy);
        let mut socket =
            std::os::unix::net::UnixStream::connect(self.dir.path().join("admin.sock")).unwrap();
        socket.write_all(b"show stat\n").unwrap();
        let mut csv = String::new();
        socket.read_to_string(&mut csv).unwrap();
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        lines
            .filter_map(|line| {
                let row: HashMap<String, String> = header
                    .iter()
                    .zip(line.split(','))
                    .map(|(k, v)| ((*k).to_owned(), v.to_owned()))
                    .collect();
                let server = row.get("svname")?.clone();
                (row.get("pxname").map(String::as_str) == Some("noxus")
                    && server.starts_with("noxus"))
                .then_some((server, row))
            })
            .collect()
    }

    /// HAProxy: waits until server `name` is in `status` (`UP`, `DOWN`)
    /// after a check that ended in `check_status` (`L7OK`, `L7STS`,
    /// `L4CON`, ...) with `check_code` (the HTTP status, or empty).
    async fn wait_server(&self, name: &str, status: &str, check_status: &str, check_code: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let servers = self.servers();
            let row = &servers[name];
            // `* L7OK`: a check is running; the last one ended as shown.
            let last_check = row["check_status"].trim_start_matches("* ");
            if row["status"] == status
                && last_check == check_status
                && row["check_code"] == check_code
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "HAProxy did not mark {name} {status} ({check_status} {check_code}) within {PATIENCE:?}: status {}, last check {} {}",
                row["status"],
                row["check_status"],
                row["check_code"]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        if self.kind == Kind::Nginx {
            // The master passes the signal on to its workers (a SIGKILL
            // would leave them running).
            let d = self.dir.path().display().to_string();
            let _ = Command::new(&self.program)
                .args(["-p", &d, "-c", &format!("{d}/nginx.conf")])
                .args(["-e", &format!("{d}/error.log"), "-s", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /v1/nodes` with `key` through the load balancer: its status.
async fn get_nodes(http: &reqwest::Client, lb: &LoadBalancer, key: &str) -> u16 {
    http.get(lb.url("/v1/nodes"))
        .header("X-API-Key", key)
        .header("X-Forwarded-For", FORGED)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or_else(|err| panic!("a GET through the load balancer failed: {err}"))
}

async fn status_of(http: &reqwest::Client, url: &str) -> u16 {
    http.get(url).send().await.unwrap().status().as_u16()
}

/// Creates a key through the load balancer with the owner's key; returns
/// its id and its secret.
async fn create_key(cluster: &Cluster, lb: &LoadBalancer, name: &str) -> (String, String) {
    let response = cluster
        .http
        .post(lb.url(&format!(
            "/v1/admin/groups/{}/api-keys",
            cluster.workspace_id
        )))
        .header("X-API-Key", &cluster.owner_key)
        .json(&serde_json::json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "creating a key through the load balancer: {}",
        response.status()
    );
    let created: serde_json::Value = response.json().await.unwrap();
    (
        created["id"].as_str().unwrap().to_owned(),
        created["value"].as_str().unwrap().to_owned(),
    )
}

/// Where the load balancer stands before replica `index` goes away. nginx:
/// how many requests it has logged; HAProxy: how many requests it has
/// retried away from that replica (`wretr` + `wredis`).
fn mark(lb: &LoadBalancer, index: usize) -> usize {
    match lb.kind {
        Kind::Nginx => lb.access_log().len(),
        Kind::Haproxy => {
            let servers = lb.servers();
            let row = &servers[&format!("noxus{}", index + 1)];
            row["wretr"].parse::<usize>().unwrap() + row["wredis"].parse::<usize>().unwrap()
        }
    }
}

/// After replica `index` went away (stopped or killed): sends GETs through
/// the load balancer, each of which must succeed, until it has met the
/// replica's refusing port and gone around it. HAProxy: the replica is
/// `DOWN` after failed checks (`L4CON`: connection refused), and requests
/// sent to it meanwhile were retried on the other (more than `before`, a
/// [`mark`] taken before the replica went away). nginx: a request logged
/// after `before` was refused by the replica and answered by the other.
async fn until_routed_around(
    lb: &LoadBalancer,
    client: &reqwest::Client,
    key: &str,
    replicas: &[String],
    index: usize,
    before: usize,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert_eq!(get_nodes(client, lb, key).await, 200);
        let done = match lb.kind {
            Kind::Haproxy => {
                let servers = lb.servers();
                let row = &servers[&format!("noxus{}", index + 1)];
                row["status"] == "DOWN" && row["check_status"].trim_start_matches("* ") == "L4CON"
            }
            Kind::Nginx => lb.access_log().iter().skip(before).any(|l| {
                l.status == "200"
                    && l.upstreams.len() == 2
                    && l.upstreams[0] == replicas[index]
                    && l.upstream_statuses[0] == "502"
            }),
        };
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the load balancer did not go around replica {index} within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if lb.kind == Kind::Haproxy {
        let retried = mark(lb, index) - before;
        eprintln!(
            "HAProxy: noxus{} DOWN (L4CON); requests retried away from it meanwhile: {retried}",
            index + 1
        );
        assert!(retried > 0, "no request to the stopped replica was retried");
    }
}

async fn exercise(kind: Kind, test: &str) {
    let Some(program) = program_or_skip(test, kind) else {
        return;
    };
    let lb_port = free_port();
    // Every replica: the load balancer's URL, the load balancer as the
    // trusted proxy, the same settings. Rate limiting off: the test sends
    // requests as fast as it can.
    let public_url = format!("http://127.0.0.1:{lb_port}");
    let common = vec![
        "--trusted-proxy".to_owned(),
        "127.0.0.1".to_owned(),
        "--public-url".to_owned(),
        public_url,
        "--rate-limit-per-key".to_owned(),
        "0".to_owned(),
    ];
    let common_refs: Vec<&str> = common.iter().map(String::as_str).collect();
    let Some(mut cluster) = Cluster::start(test, Path::new(NOXUS), 1, &common_refs).await else {
        return;
    };
    // The second replica reaches the database through a forwarder the test
    // can cut, to take that replica's database away from it alone.
    let database = CuttableProxy::start(server_of(&cluster.database_url()))
        .await
        .unwrap();
    let mut second = common.clone();
    second.extend([
        "--database-url".to_owned(),
        through(&cluster.database_url(), database.addr()),
        "--database-connect-timeout-ms".to_owned(),
        "1000".to_owned(),
    ]);
    let second_refs: Vec<&str> = second.iter().map(String::as_str).collect();
    cluster
        .add_replica(Path::new(NOXUS), &ReplicaOptions::with_args(&second_refs))
        .await;
    let args_of = |index: usize| -> Vec<&str> {
        if index == 0 {
            common_refs.clone()
        } else {
            second_refs.clone()
        }
    };
    let replicas: Vec<String> = cluster.replicas.iter().map(|r| r.addr()).collect();
    let lb = LoadBalancer::start(kind, &program, lb_port, &replicas);
    let http = cluster.http.clone();
    // The client, from an address of its own.
    let client = reqwest::Client::builder()
        .local_address(CLIENT)
        .build()
        .unwrap();

    // Both replicas in service.
    let deadline = Instant::now() + PATIENCE;
    while status_of(&http, &lb.url("/readyz")).await != 200 {
        assert!(
            Instant::now() < deadline,
            "/readyz through the load balancer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if kind == Kind::Haproxy {
        for server in ["noxus1", "noxus2"] {
            lb.wait_server(server, "UP", "L7OK", "200").await;
        }
    }

    // A key created and used through the load balancer, from the client's
    // address, by both replicas in turn.
    let (key_id, key) = create_key(&cluster, &lb, "through the load balancer").await;
    for _ in 0..20 {
        assert_eq!(get_nodes(&client, &lb, &key).await, 200);
    }
    match kind {
        Kind::Nginx => {
            let served: std::collections::BTreeSet<String> = lb
                .access_log()
                .into_iter()
                .filter(|l| l.status == "200")
                .filter_map(|l| l.upstreams.last().cloned())
                .collect();
            for replica in &replicas {
                assert!(
                    served.contains(replica),
                    "{replica} served nothing: {served:?}"
                );
            }
        }
        Kind::Haproxy => {
            for (name, row) in lb.servers() {
                assert!(
                    row["stot"].parse::<u64>().unwrap() > 0,
                    "{name} served nothing"
                );
            }
        }
    }
    // What the replicas recorded: each one asked in turn writes out its own
    // buffered usage first, so the last answer has them all.
    let mut usage = serde_json::Value::Null;
    for index in 0..2 {
        usage = cluster
            .get(
                index,
                &format!(
                    "/v1/admin/groups/{}/api-keys/{key_id}/usage",
                    cluster.workspace_id
                ),
                &cluster.owner_key,
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    }
    assert_eq!(usage["totals"]["requests"], 20, "{usage}");
    assert_eq!(usage["last_used_addr"], CLIENT.to_string(), "{usage}");
    let addresses: Vec<&str> = usage["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["addr"].as_str().unwrap())
        .collect();
    assert_eq!(
        addresses,
        [CLIENT.to_string()],
        "neither the load balancer's address nor the forged one"
    );

    // The second replica's database cut away: its /readyz says 503 (its
    // /healthz stays 200), and GETs through the load balancer keep
    // succeeding on the first replica.
    database.cut();
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert_eq!(get_nodes(&client, &lb, &key).await, 200);
        let done = match kind {
            // Taken out on its failing /readyz check.
            Kind::Haproxy => {
                let servers = lb.servers();
                let row = &servers["noxus2"];
                row["status"] == "DOWN"
                    && row["check_status"].trim_start_matches("* ") == "L7STS"
                    && row["check_code"] == "503"
            }
            // A 503 (the key no longer in its cache) passed on to the other.
            Kind::Nginx => lb.access_log().iter().any(|l| {
                l.status == "200"
                    && l.upstreams == [replicas[1].clone(), replicas[0].clone()]
                    && l.upstream_statuses == ["503", "200"]
            }),
        };
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cut-off replica was not avoided within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        status_of(&http, &cluster.replicas[1].url("/readyz")).await,
        503
    );
    assert_eq!(
        status_of(&http, &cluster.replicas[1].url("/healthz")).await,
        200
    );
    if kind == Kind::Haproxy {
        lb.wait_server("noxus1", "UP", "L7OK", "200").await;
    }
    for _ in 0..10 {
        assert_eq!(get_nodes(&client, &lb, &key).await, 200);
    }
    // The database back: the replica recovers by itself and is taken back.
    database.restore();
    let deadline = Instant::now() + PATIENCE;
    while status_of(&http, &cluster.replicas[1].url("/readyz")).await != 200 {
        assert!(Instant::now() < deadline, "the replica did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if kind == Kind::Haproxy {
        lb.wait_server("noxus2", "UP", "L7OK", "200").await;
    }

    // A rolling restart under a steady stream of GETs: each replica in turn
    // gets SIGTERM, exits cleanly, and a new process takes its port; the
    // next one is stopped only once the load balancer uses the new one.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn({
        let stop = Arc::clone(&stop);
        let client = client.clone();
        let url = lb.url("/v1/nodes");
        let key = key.clone();
        async move {
            let mut statuses: HashMap<String, u64> = HashMap::new();
            while !stop.load(Ordering::Relaxed) {
                let status = match client.get(&url).header("X-API-Key", &key).send().await {
                    Ok(r) => r.status().as_u16().to_string(),
                    Err(err) => format!("error: {err}"),
                };
                *statuses.entry(status).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            statuses
        }
    });
    for index in [1, 0] {
        let before = mark(&lb, index);
        let exit = cluster.terminate_replica(index).await;
        assert!(
            exit.success(),
            "replica {index} exited with {exit} on SIGTERM"
        );
        until_routed_around(&lb, &client, &key, &replicas, index, before).await;
        let logged_before = match kind {
            Kind::Nginx => lb.access_log().len(),
            Kind::Haproxy => 0,
        };
        cluster
            .restart_replica(index, Path::new(NOXUS), &args_of(index))
            .await;
        let deadline = Instant::now() + PATIENCE;
        match kind {
            Kind::Haproxy => {
                lb.wait_server(&format!("noxus{}", index + 1), "UP", "L7OK", "200")
                    .await;
            }
            // After fail_timeout nginx tries the replica again, and it answers.
            Kind::Nginx => loop {
                let served = lb
                    .access_log()
                    .iter()
                    .skip(logged_before)
                    .any(|l| l.upstreams.last() == Some(&replicas[index]) && l.status == "200");
                if served {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "nginx did not go back to the restarted replica {index}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            },
        }
    }
    stop.store(true, Ordering::Relaxed);
    let statuses = traffic.await.unwrap();
    eprintln!("{test}: GETs during the rolling restart: {statuses:?}");
    assert_eq!(statuses.len(), 1, "every GET succeeded: {statuses:?}");
    assert!(statuses.get("200").is_some_and(|n| *n > 10), "{statuses:?}");

    // A replica killed: GETs, and a POST (never sent to the dead replica:
    // its port refuses the connection), keep succeeding.
    let before = mark(&lb, 1);
    cluster.kill_replica(1);
    until_routed_around(&lb, &client, &key, &replicas, 1, before).await;
    create_key(&cluster, &lb, "after the kill").await;
    if kind == Kind::Haproxy {
        lb.wait_server("noxus1", "UP", "L7OK", "200").await;
    }
    assert_eq!(status_of(&http, &lb.url("/readyz")).await, 200);
    for _ in 0..10 {
        assert_eq!(get_nodes(&client, &lb, &key).await, 200);
    }
    drop(lb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_example_config_balances_forwards_the_client_and_survives_a_replica_going_away() {
    exercise(
        Kind::Nginx,
        "load_balancer::nginx_example_config_balances_forwards_the_client_and_survives_a_replica_going_away",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_example_config_balances_forwards_the_client_and_checks_readyz() {
    exercise(
        Kind::Haproxy,
        "load_balancer::haproxy_example_config_balances_forwards_the_client_and_checks_readyz",
    )
    .await;
}
