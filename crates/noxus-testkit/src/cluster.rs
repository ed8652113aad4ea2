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

/// Replicas added, stopped and restarted one at a time: a replica with
/// arguments of its own (e.g. its own `--database-url`), a rolling restart
/// (SIGTERM, then a new process on the same port), a replica killed.
impl Cluster {
    /// Starts one more replica with `extra_args` (a `--database-url` among
    /// them wins over the cluster's), waits until it is ready, and returns
    /// its index.
    pub async fn add_replica(&mut self, noxus: &Path, extra_args: &[&str]) -> usize {
        let replica = self.spawn_replica(noxus, free_port(), extra_args);
        self.wait_ready(&replica).await;
        self.replicas.push(replica);
        self.replicas.len() - 1
    }

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
        let child = &mut self.replicas[index].child;
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("`kill` runs");
        assert!(sent.success(), "kill -TERM {} failed", child.id());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("the replica's status") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "replica {index} did not exit within 30 s of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts replica `index` again, after it stopped, on the same port
    /// with `extra_args`, and waits until it is ready.
    pub async fn restart_replica(&mut self, index: usize, noxus: &Path, extra_args: &[&str]) {
        let replica = self.spawn_replica(noxus, self.replicas[index].port(), extra_args);
        self.wait_ready(&replica).await;
        let mut old = std::mem::replace(&mut self.replicas[index], replica);
        let _ = old.child.kill();
        let _ = old.child.wait();
    }

    /// A `noxus serve` on `port` of this cluster's database (the platform
    /// is set up already: it prints no key).
    fn spawn_replica(&self, noxus: &Path, port: u16, extra_args: &[&str]) -> Replica {
        let mut child = Command::new(noxus)
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra_args)
            .env("NOXUS_DATABASE_URL", self.database_url())
            .env("NOXUS_KEY_PEPPER", PEPPER)
            .env_remove("NOXUS_NO_WELCOME")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("noxus serve starts");
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
        Replica {
            base_url: format!("http://127.0.0.1:{port}"),
            child,
        }
    }
}

impl Replica {
    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.base_url
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("a port in the base URL")
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }
}
