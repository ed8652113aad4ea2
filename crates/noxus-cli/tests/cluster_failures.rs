//! Replicas that fail, and replicas that must not start: several `noxus
//! serve` processes on one PostgreSQL database (`noxus_testkit::cluster`)
//! started at once on an empty database, one killed with SIGKILL under
//! write load, all cut off from PostgreSQL under load, usage counted by
//! three of them, one started with the wrong pepper, and one stopped with
//! SIGTERM for a rolling restart. Each test prints what it measured
//! (`--nocapture`, or nextest's `--success-output immediate`).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use noxus_testkit::cluster::{
    first_key_in, Cluster, ClusterOptions, ReplicaOptions, ReplicaPepper, SHARED_PEPPER,
};
use noxus_testkit::proxy::CuttableProxy;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NOXUS: &str = env!("CARGO_BIN_EXE_noxus");

/// No per-key rate limit and room for many keys: the load is the test's.
const UNLIMITED: &[&str] = &[
    "--rate-limit-per-key",
    "0",
    "--max-keys-per-user",
    "100000",
    "--max-keys-per-workspace",
    "100000",
];

fn options(replicas: usize, args: &[&str]) -> ClusterOptions {
    ClusterOptions {
        replicas,
        concurrently: false,
        replica: ReplicaOptions::with_args(args),
    }
}

/// Fails if a replica's log shows a panic.
fn assert_no_panic(cluster: &Cluster) {
    for (index, replica) in cluster.replicas.iter().enumerate() {
        let log = replica.stderr();
        assert!(
            !log.contains("panicked"),
            "replica {index} panicked:\n{log}"
        );
    }
}

/// A key's usage totals over the last day, read through replica `index`.
async fn usage_totals(cluster: &Cluster, index: usize, key_id: &str) -> Value {
    let usage: Value = cluster
        .get(
            index,
            &format!(
                "/v1/admin/groups/{}/api-keys/{key_id}/usage?hours=24",
                cluster.workspace_id
            ),
            &cluster.owner_key,
        )
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    usage["totals"].clone()
}

/// Stops every replica still running with SIGTERM; each must exit 0.
async fn stop_all(cluster: &mut Cluster) {
    let mut running = Vec::new();
    for (index, replica) in cluster.replicas.iter_mut().enumerate() {
        if replica.is_running() {
            replica.terminate();
            running.push(index);
        }
    }
    for index in running {
        let replica = &mut cluster.replicas[index];
        let status = replica
            .wait_exit(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("replica {index} did not stop within 30 s"));
        assert!(
            status.success(),
            "replica {index} exited with {status}:\n{}",
            replica.stderr()
        );
    }
}

/// The pepper's fingerprint stored in the cluster's database.
async fn stored_fingerprint(cluster: &Cluster) -> String {
    let mut db = cluster.database().await;
    sqlx::query_scalar::<_, String>(
        "SELECT value FROM settings WHERE name = 'key_pepper_fingerprint'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_started_at_once_make_one_organization_and_print_one_key() {
    let test =
        "cluster_failures::three_replicas_started_at_once_make_one_organization_and_print_one_key";
    for round in 0..3 {
        let options = ClusterOptions {
            replicas: 3,
            concurrently: true,
            replica: ReplicaOptions::default(),
        };
        let Some(mut cluster) = Cluster::start_with(test, Path::new(NOXUS), &options).await else {
            return;
        };
        // The printed key works on every replica, in the one workspace.
        for index in 0..3 {
            let me: Value = cluster
                .get(index, "/v1/admin/me", &cluster.owner_key)
                .send()
                .await
                .unwrap()
                .error_for_status()
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(me["workspace_id"], cluster.workspace_id.as_str());
        }
        let mut db = cluster.database().await;
        for table in [
            "organizations",
            "users",
            "workspaces",
            "memberships",
            "api_keys",
        ] {
            let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&mut db)
                .await
                .unwrap();
            assert_eq!(rows, 1, "round {round}: {table} holds {rows} rows");
        }
        // Stopped gracefully, so that everything they printed is read.
        for replica in &cluster.replicas {
            replica.terminate();
        }
        for (index, replica) in cluster.replicas.iter_mut().enumerate() {
            let status = replica.wait_exit(Duration::from_secs(30)).await.unwrap();
            assert!(status.success(), "replica {index} exited with {status}");
        }
        let printed: Vec<usize> = (0..3)
            .filter(|&i| cluster.replicas[i].stdout().contains("NOXUS_API_KEY"))
            .collect();
        assert_eq!(
            printed.len(),
            1,
            "round {round}: replicas {printed:?} printed a key"
        );
        let welcome = cluster.replicas[printed[0]].stdout();
        assert_eq!(welcome.matches("export NOXUS_API_KEY=").count(), 1);
        assert_eq!(first_key_in(&welcome).unwrap(), cluster.owner_key);
        for (index, replica) in cluster.replicas.iter().enumerate() {
            if index != printed[0] {
                assert_eq!(
                    replica.stdout().trim(),
                    "",
                    "round {round}: replica {index} printed something"
                );
            }
        }
        assert_no_panic(&cluster);
        eprintln!(
            "round {round}: replica {} of 3 made the first start; one organization, one key",
            printed[0]
        );
    }
}

/// A write the client sent, and what came of it.
#[derive(Debug, Clone)]
struct Write {
    replica: usize,
    kind: &'static str,
    name: String,
    /// When the answer (or the error) came, since the load started.
    at: Duration,
    /// The id of what was created (a 2xx answer).
    id: Option<String>,
    /// A non-2xx answer, or a transport error.
    failure: Option<String>,
}

/// Creates keys and workflows (alternately) through one replica until `stop`.
async fn writer(
    http: reqwest::Client,
    (base_url, owner_key, workspace_id): (String, String, String),
    (replica, task): (usize, usize),
    started: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<Write> {
    let mut writes = Vec::new();
    let mut n = 0usize;
    while !stop.load(Ordering::Acquire) {
        let kind = if n.is_multiple_of(2) {
            "key"
        } else {
            "workflow"
        };
        let name = format!("w{replica}-{task}-{n}");
        n += 1;
        let request = match kind {
            "key" => http.post(format!(
                "{base_url}/v1/admin/groups/{workspace_id}/api-keys"
            )),
            _ => http.post(format!("{base_url}/v1/workflows")),
        };
        let sent = request
            .header("X-API-Key", &owner_key)
            .json(&json!({"name": name}))
            .send()
            .await;
        let (id, failure) = match sent {
            Ok(response) if response.status().is_success() => {
                let body: Value = response.json().await.unwrap_or_default();
                (body["id"].as_str().map(str::to_owned), None)
            }
            Ok(response) => {
                let status = response.status();
                (
                    None,
                    Some(format!(
                        "{status}: {}",
                        response.text().await.unwrap_or_default()
                    )),
                )
            }
            Err(err) => (None, Some(format!("{err:?}"))),
        };
        let failed = failure.is_some();
        writes.push(Write {
            replica,
            kind,
            name,
            at: started.elapsed(),
            id,
            failure,
        });
        if failed {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    writes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_write_load_loses_no_acknowledged_write() {
    let test = "cluster_failures::a_replica_killed_under_write_load_loses_no_acknowledged_write";
    let Some(mut cluster) =
        Cluster::start_with(test, Path::new(NOXUS), &options(3, UNLIMITED)).await
    else {
        return;
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for replica in 0..3 {
        for task in 0..2 {
            tasks.push(tokio::spawn(writer(
                http.clone(),
                (
                    cluster.replicas[replica].base_url.clone(),
                    cluster.owner_key.clone(),
                    cluster.workspace_id.clone(),
                ),
                (replica, task),
                started,
                Arc::clone(&stop),
            )));
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = started.elapsed();
    cluster.replicas[2].kill_now();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.store(true, Ordering::Release);
    let mut writes = Vec::new();
    for task in tasks {
        writes.extend(task.await.unwrap());
    }

    // The others kept serving: every write through them was answered 2xx,
    // before and after the kill.
    for replica in 0..2 {
        let mine: Vec<&Write> = writes.iter().filter(|w| w.replica == replica).collect();
        let failed: Vec<&&Write> = mine.iter().filter(|w| w.failure.is_some()).collect();
        assert!(
            failed.is_empty(),
            "replica {replica} failed writes: {failed:#?}"
        );
        let after = mine.iter().filter(|w| w.at > killed_at).count();
        assert!(
            after > 0,
            "replica {replica} served no write after the kill"
        );
    }
    // The killed one answered everything 2xx until it was killed.
    let early: Vec<&Write> = writes
        .iter()
        .filter(|w| w.replica == 2 && w.failure.is_some() && w.at < killed_at)
        .collect();
    assert!(
        early.is_empty(),
        "replica 2 failed before the kill: {early:#?}"
    );
    let refused: Vec<&Write> = writes
        .iter()
        .filter(|w| {
            w.failure
                .as_deref()
                .is_some_and(|f| f.starts_with(|c: char| c.is_ascii_digit()))
        })
        .collect();
    assert!(refused.is_empty(), "writes answered non-2xx: {refused:#?}");

    // Every acknowledged write is in the database...
    let mut db = cluster.database().await;
    for (kind, table) in [("key", "api_keys"), ("workflow", "workflows")] {
        let acknowledged: HashSet<String> = writes
            .iter()
            .filter(|w| w.kind == kind)
            .filter_map(|w| w.id.clone())
            .collect();
        let ids: Vec<String> = acknowledged.iter().cloned().collect();
        let found: HashSet<String> =
            sqlx::query_scalar::<_, String>(&format!("SELECT id FROM {table} WHERE id = ANY($1)"))
                .bind(&ids)
                .fetch_all(&mut db)
                .await
                .unwrap()
                .into_iter()
                .collect();
        let lost: Vec<&String> = acknowledged.difference(&found).collect();
        assert!(lost.is_empty(), "acknowledged {kind}s missing: {lost:?}");
    }
    // ...and each one the killed replica acknowledged is served by another.
    for write in writes.iter().filter(|w| w.replica == 2) {
        let Some(id) = &write.id else { continue };
        let path = match write.kind {
            "key" => format!("/v1/admin/groups/{}/api-keys/{id}", cluster.workspace_id),
            _ => format!("/v1/workflows/{id}"),
        };
        let status = cluster
            .get(write.replica % 2, &path, &cluster.owner_key)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 200, "{} {id} ({})", write.kind, write.name);
    }
    for replica in 0..2 {
        let ready = cluster
            .http
            .get(cluster.replicas[replica].url("/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status().as_u16(), 200);
    }
    assert_no_panic(&cluster);

    // What the killed replica had in flight: unanswered, committed or not.
    let unanswered: Vec<&Write> = writes
        .iter()
        .filter(|w| w.replica == 2 && w.failure.is_some())
        .collect();
    let mut in_flight = 0;
    let mut committed = 0;
    let mut seen_tasks = HashSet::new();
    for write in &unanswered {
        // The first failure of each task was the write in flight at the kill.
        if !seen_tasks.insert(write.name.split('-').nth(1).map(str::to_owned)) {
            continue;
        }
        in_flight += 1;
        let table = if write.kind == "key" {
            "api_keys"
        } else {
            "workflows"
        };
        let rows: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE name = $1"))
                .bind(&write.name)
                .fetch_one(&mut db)
                .await
                .unwrap();
        committed += rows;
    }
    let count = |replica: usize, after: bool| {
        writes
            .iter()
            .filter(|w| w.replica == replica && w.id.is_some() && (w.at > killed_at) == after)
            .count()
    };
    eprintln!(
        "acknowledged writes before the kill (at {} ms): replica 0 {}, 1 {}, 2 {}; after it: replica 0 {}, 1 {} (all 2xx); \
         replica 2: {} requests refused after the kill, {in_flight} in flight at the kill ({committed} of them committed); \
         every acknowledged write found in the database",
        killed_at.as_millis(),
        count(0, false),
        count(1, false),
        count(2, false),
        count(0, true),
        count(1, true),
        unanswered.len(),
    );
}

/// The host and port of a `postgres://[user@]host[:port]/db` URL.
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

/// One request of the outage test.
#[derive(Debug, Clone)]
struct Sample {
    replica: usize,
    what: &'static str,
    /// When it was sent, since the cut.
    sent: Duration,
    status: Option<u16>,
    code: Option<String>,
    retry_after: bool,
    error: Option<String>,
}

/// The outage test's keys, by name.
struct Keys(BTreeMap<&'static str, (String, String)>);

impl Keys {
    fn secret(&self, name: &str) -> &str {
        &self.0[name].1
    }
}

/// Answers per key that the platform counts against it: all but the 503s
/// of a lookup that could not reach the database (the key is unknown then).
type Counted = Arc<Mutex<HashMap<&'static str, u64>>>;

/// One request to replica `replica`, timed from `cut_at`: `/readyz` or
/// `/healthz`, or `GET /v1/nodes` with the key named `what` (noted in
/// `counted` when the platform counts the answer against the key).
async fn sample(
    http: &reqwest::Client,
    cluster_urls: &[String],
    replica: usize,
    what: &'static str,
    key: Option<&str>,
    cut_at: Instant,
    counted: &Counted,
) -> Sample {
    let sent = cut_at.elapsed();
    let path = match what {
        "readyz" | "healthz" => format!("/{what}"),
        _ => "/v1/nodes".to_owned(),
    };
    let mut request = http.get(format!("{}{path}", cluster_urls[replica]));
    if let Some(key) = key {
        request = request.header("X-API-Key", key);
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let body: Value = response.json().await.unwrap_or_default();
            if key.is_some() && status != 503 {
                *counted.lock().unwrap().entry(what).or_default() += 1;
            }
            Sample {
                replica,
                what,
                sent,
                status: Some(status),
                code: body["code"].as_str().map(str::to_owned),
                retry_after,
                error: None,
            }
        }
        Err(err) => Sample {
            replica,
            what,
            sent,
            status: None,
            code: None,
            retry_after: false,
            error: Some(format!("{err:?}")),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_postgres_cut_away_every_replica_fails_closed_and_recovers_within_5_s() {
    let test =
        "cluster_failures::with_postgres_cut_away_every_replica_fails_closed_and_recovers_within_5_s";
    // The proxy first: the replicas reach PostgreSQL through it from the start.
    let proxy = match noxus_testkit::postgres::server_url() {
        Some(url) => Some(CuttableProxy::start(server_of(&url)).await.unwrap()),
        None => None,
    };
    let ttl = Duration::from_secs(2);
    let ttl_ms = ttl.as_millis().to_string();
    let mut args = vec![
        "--key-cache-ttl-ms",
        &ttl_ms,
        "--database-connect-timeout-ms",
        "1000",
    ];
    args.extend_from_slice(UNLIMITED);
    let mut options = options(3, &args);
    options.replica.database_addr = proxy.as_ref().map(|p| p.addr());
    let Some(mut cluster) = Cluster::start_with(test, Path::new(NOXUS), &options).await else {
        return;
    };
    let proxy = proxy.unwrap();
    let urls: Vec<String> = cluster
        .replicas
        .iter()
        .map(|r| r.base_url.clone())
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let counted: Counted = Arc::default();

    // cached: verified by every replica just before the cut; uncached:
    // never used before the database comes back; revoked: revoked, and
    // refused by every replica, before the cut; just_revoked: cached by
    // every replica, then revoked through replica 1 right before the cut.
    let mut keys = BTreeMap::new();
    for name in ["cached", "uncached", "revoked", "just_revoked"] {
        keys.insert(name, cluster.create_key(0, json!({"name": name})).await);
    }
    let keys = Keys(keys);
    let revoke = |name: &'static str, index: usize| {
        cluster
            .delete(
                index,
                &format!(
                    "/v1/admin/groups/{}/api-keys/{}",
                    cluster.workspace_id, keys.0[name].0
                ),
                &cluster.owner_key,
            )
            .send()
    };
    let far = Instant::now() + Duration::from_secs(3600);
    for replica in 0..3 {
        let s = sample(
            &http,
            &urls,
            replica,
            "revoked",
            Some(keys.secret("revoked")),
            far,
            &counted,
        )
        .await;
        assert_eq!(s.status, Some(200));
    }
    assert_eq!(revoke("revoked", 0).await.unwrap().status().as_u16(), 200);
    for replica in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = sample(
                &http,
                &urls,
                replica,
                "revoked",
                Some(keys.secret("revoked")),
                far,
                &counted,
            )
            .await;
            if s.status == Some(401) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {replica} still accepts the revoked key"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for name in ["just_revoked", "cached"] {
        for replica in 0..3 {
            let s = sample(
                &http,
                &urls,
                replica,
                name,
                Some(keys.secret(name)),
                far,
                &counted,
            )
            .await;
            assert_eq!(s.status, Some(200), "{name} on replica {replica}");
        }
    }
    assert_eq!(
        revoke("just_revoked", 1).await.unwrap().status().as_u16(),
        200
    );
    let cut_at = Instant::now();
    proxy.cut();
    // The cut is in effect on a replica once its /readyz says 503 (its
    // pool's connections are gone, new ones are refused); the load starts
    // when it is in effect on all three.
    for replica in 0..3 {
        loop {
            let s = sample(&http, &urls, replica, "readyz", None, cut_at, &counted).await;
            if s.status == Some(503) {
                break;
            }
            assert!(
                cut_at.elapsed() < Duration::from_secs(5),
                "replica {replica}: /readyz still {s:?} 5 s after PostgreSQL was cut"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let all_in_effect = cut_at.elapsed();

    // Load on every replica while the database is away.
    let outage = ttl + Duration::from_secs(3);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for replica in 0..3 {
        for task in 0..2usize {
            let (http, urls, stop, counted) = (
                http.clone(),
                urls.clone(),
                Arc::clone(&stop),
                Arc::clone(&counted),
            );
            let secrets: Vec<(&'static str, String)> = keys
                .0
                .iter()
                .map(|(name, (_, secret))| (*name, secret.clone()))
                .collect();
            tasks.push(tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut turn = task;
                while !stop.load(Ordering::Acquire) {
                    let slot = turn % (secrets.len() + 2);
                    turn += 1;
                    let (what, key) = match secrets.get(slot) {
                        Some((name, secret)) => (*name, Some(secret.as_str())),
                        None if slot == secrets.len() => ("readyz", None),
                        None => ("healthz", None),
                    };
                    samples.push(sample(&http, &urls, replica, what, key, cut_at, &counted).await);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                samples
            }));
        }
    }
    tokio::time::sleep(outage).await;
    stop.store(true, Ordering::Release);
    let mut samples: Vec<Sample> = Vec::new();
    for task in tasks {
        samples.extend(task.await.unwrap());
    }
    let restored_at = Instant::now();
    proxy.restore();
    let outage_ms = cut_at.elapsed().as_millis();

    // Nothing failed at the transport level, nothing answered 5xx but 503.
    for s in &samples {
        assert!(
            s.error.is_none(),
            "replica {} did not answer: {s:?}",
            s.replica
        );
        let status = s.status.unwrap();
        assert!(status < 500 || status == 503, "{s:?}");
    }
    for s in &samples {
        let status = s.status.unwrap();
        match s.what {
            "healthz" => assert_eq!(status, 200, "{s:?}"),
            "readyz" => assert_eq!(status, 503, "{s:?}"),
            // Never accepted: refused before the cut everywhere.
            "revoked" => assert!(status == 401 || status == 503, "{s:?}"),
            // Never accepted by the replica that revoked it.
            "just_revoked" if s.replica == 1 => {
                assert!(status == 401 || status == 503, "{s:?}")
            }
            // Elsewhere its cached entry (loaded before the cut) may
            // answer until the TTL ends, never after.
            "just_revoked" => assert!(status != 200 || s.sent < ttl, "{s:?}"),
            // A cached key works for at most the TTL (from its last load,
            // which may have come just before the cut took effect, plus a
            // second), then fails closed.
            "cached" => assert!(
                status == 200 && s.sent < all_in_effect + ttl + Duration::from_secs(1)
                    || status == 503,
                "{s:?}"
            ),
            // A key that cannot be checked is never accepted.
            "uncached" => {
                assert_eq!(status, 503, "{s:?}");
                assert_eq!(s.code.as_deref(), Some("service_unavailable"), "{s:?}");
                assert!(s.retry_after, "503 without Retry-After: {s:?}");
            }
            other => unreachable!("{other}"),
        }
    }
    let tally = |what: &str, status: u16| {
        samples
            .iter()
            .filter(|s| s.what == what && s.status == Some(status))
            .count()
    };
    let cached_ok_until = samples
        .iter()
        .filter(|s| s.what == "cached" && s.status == Some(200))
        .map(|s| s.sent)
        .max()
        .unwrap_or_default();
    let just_revoked_ok: Vec<Duration> = samples
        .iter()
        .filter(|s| s.what == "just_revoked" && s.status == Some(200))
        .map(|s| s.sent)
        .collect();

    // Back: every replica serves a key it never saw, and is ready, within
    // 5 s (each watched by a task of its own, every 10 ms).
    let mut watchers = Vec::new();
    for replica in 0..3 {
        let (http, urls, counted) = (http.clone(), urls.clone(), Arc::clone(&counted));
        let secret = keys.secret("uncached").to_owned();
        watchers.push(tokio::spawn(async move {
            let (mut serves, mut ready) = (None, None);
            while serves.is_none() || ready.is_none() {
                assert!(
                    restored_at.elapsed() < Duration::from_secs(5),
                    "replica {replica} not recovered within 5 s: serving {serves:?}, ready {ready:?}"
                );
                if serves.is_none() {
                    let s = sample(&http, &urls, replica, "uncached", Some(&secret), restored_at, &counted)
                        .await;
                    assert!(s.status == Some(200) || s.status == Some(503), "{s:?}");
                    if s.status == Some(200) {
                        serves = Some(s.sent);
                    }
                }
                if ready.is_none() {
                    let s = sample(&http, &urls, replica, "readyz", None, restored_at, &counted).await;
                    if s.status == Some(200) {
                        ready = Some(s.sent);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (serves.unwrap(), ready.unwrap())
        }));
    }
    let mut recovery = Vec::new();
    for watcher in watchers {
        recovery.push(watcher.await.unwrap());
    }
    // The revoked keys stay refused, the cached one works again.
    for replica in 0..3 {
        for (name, want) in [("revoked", 401), ("just_revoked", 401), ("cached", 200)] {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let s = sample(
                    &http,
                    &urls,
                    replica,
                    name,
                    Some(keys.secret(name)),
                    restored_at,
                    &counted,
                )
                .await;
                let status = s.status.unwrap();
                if name != "cached" {
                    assert_ne!(status, 200, "{s:?}");
                }
                if status == want {
                    break;
                }
                assert!(Instant::now() < deadline, "{s:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    // Usage counted during the outage reaches the database: the graceful
    // stop flushes it, and each key's count is exactly what was answered.
    stop_all(&mut cluster).await;
    let reader = cluster
        .add_replica(Path::new(NOXUS), &ReplicaOptions::with_args(UNLIMITED))
        .await;
    let counted = counted.lock().unwrap().clone();
    for (name, (id, _)) in &keys.0 {
        let totals = usage_totals(&cluster, reader, id).await;
        assert_eq!(
            totals["requests"].as_u64(),
            Some(counted.get(name).copied().unwrap_or_default()),
            "{name}: {totals}"
        );
    }
    assert_no_panic(&cluster);

    eprintln!(
        "PostgreSQL cut for {outage_ms} ms under load ({} requests): /readyz 503 on every replica {} ms after the cut at the latest; \
         uncached key 503 x{} (never 200), cached key 200 x{} (until {} ms, TTL {} ms) then 503 x{}, \
         revoked key 401 x{} / 503 x{}, key revoked just before the cut accepted x{} by the other replicas (from entries cached before the cut, \
         when the revocation's notification was lost in it; last at {} ms); \
         after the return: {}",
        samples.len(),
        all_in_effect.as_millis(),
        tally("uncached", 503),
        tally("cached", 200),
        cached_ok_until.as_millis(),
        ttl.as_millis(),
        tally("cached", 503),
        tally("revoked", 401),
        tally("revoked", 503),
        just_revoked_ok.len(),
        just_revoked_ok.iter().max().copied().unwrap_or_default().as_millis(),
        recovery
            .iter()
            .enumerate()
            .map(|(i, (serves, ready))| format!(
                "replica {i} serves an uncached key after {} ms, ready after {} ms",
                serves.as_millis(),
                ready.as_millis()
            ))
            .collect::<Vec<_>>()
            .join("; "),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_counted_by_three_replicas_adds_up_exactly() {
    let test = "cluster_failures::usage_counted_by_three_replicas_adds_up_exactly";
    let Some(mut cluster) =
        Cluster::start_with(test, Path::new(NOXUS), &options(3, UNLIMITED)).await
    else {
        return;
    };
    let (key_id, key) = cluster.create_key(0, json!({"name": "counted"})).await;
    let per_task = 100u64;
    let tasks_per_replica = 4u64;
    let mut tasks = Vec::new();
    for replica in 0..3 {
        for _ in 0..tasks_per_replica {
            let request = cluster.get(replica, "/v1/nodes", &key);
            tasks.push(tokio::spawn(async move {
                let mut ok = 0u64;
                for _ in 0..per_task {
                    let status = request.try_clone().unwrap().send().await.unwrap().status();
                    assert_eq!(status.as_u16(), 200);
                    ok += 1;
                }
                ok
            }));
        }
    }
    let mut sent = 0;
    for task in tasks {
        sent += task.await.unwrap();
    }
    assert_eq!(sent, 3 * tasks_per_replica * per_task);
    let last_request = Instant::now();

    // The periodic flushes (every second) bring it to the exact total.
    let deadline = Instant::now() + Duration::from_secs(10);
    let flushed_after = loop {
        let totals = usage_totals(&cluster, 0, &key_id).await;
        let requests = totals["requests"].as_u64().unwrap();
        assert!(requests <= sent, "counted {requests} of {sent}");
        if requests == sent {
            break last_request.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "counted {requests} of {sent} after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // And the graceful stop of all three changes nothing.
    stop_all(&mut cluster).await;
    let reader = cluster
        .add_replica(Path::new(NOXUS), &ReplicaOptions::with_args(UNLIMITED))
        .await;
    let totals = usage_totals(&cluster, reader, &key_id).await;
    assert_eq!(totals["requests"].as_u64(), Some(sent), "{totals}");
    assert_eq!(totals["ok"].as_u64(), Some(sent), "{totals}");
    assert_no_panic(&cluster);
    eprintln!(
        "{sent} requests with one key over 3 replicas: usage said exactly {sent} {} ms after the last one, and after stopping all three",
        flushed_after.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_another_pepper_refuses_to_start() {
    let test = "cluster_failures::a_replica_with_another_pepper_refuses_to_start";
    let Some(mut cluster) = Cluster::start_with(test, Path::new(NOXUS), &options(1, &[])).await
    else {
        return;
    };
    let stored = stored_fingerprint(&cluster).await;
    let other = "another-pepper-that-is-long-enough-0123456789";
    let short = "short-pepper";
    for (pepper, says) in [
        (
            ReplicaPepper::Other(other.to_owned()),
            "NOXUS_KEY_PEPPER does not match the pepper this database's keys were made under",
        ),
        (
            ReplicaPepper::Unset,
            "this database's keys were made under a pepper",
        ),
        (
            ReplicaPepper::Other(short.to_owned()),
            "NOXUS_KEY_PEPPER must be at least 32 bytes",
        ),
    ] {
        let options = ReplicaOptions {
            pepper: pepper.clone(),
            ..ReplicaOptions::default()
        };
        let index = cluster.spawn_replica(Path::new(NOXUS), &options);
        let replica = &mut cluster.replicas[index];
        let status = replica
            .wait_exit(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("a replica with {pepper:?} is still running"));
        let (stdout, stderr) = (replica.stdout(), replica.stderr());
        assert!(!status.success(), "{pepper:?}: exited with {status}");
        assert!(stderr.contains(says), "{pepper:?}: {stderr}");
        for secret in [other, short, SHARED_PEPPER] {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "a pepper was printed:\n{stdout}\n{stderr}"
            );
        }
        let last_line = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default();
        eprintln!("{pepper:?}: {status}; {last_line}");
    }
    // Nothing changed: the fingerprint, the running replica, a new one
    // with the right pepper.
    assert_eq!(stored_fingerprint(&cluster).await, stored);
    let index = cluster
        .add_replica(Path::new(NOXUS), &ReplicaOptions::default())
        .await;
    for replica in [0, index] {
        let status = cluster
            .get(replica, "/v1/admin/me", &cluster.owner_key)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 200);
    }
    assert_no_panic(&cluster);
}

/// The innermost cause of an error, as text.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// A `POST /v1/workflows` sent slowly: the head with `Expect:
/// 100-continue`, then half the body once the server asked for it (so the
/// request is in the server's hands). Returns the stream and the rest.
async fn start_slow_create(addr: &str, key: &str, name: &str) -> (TcpStream, Vec<u8>) {
    let body = json!({"name": name}).to_string().into_bytes();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/workflows HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut interim = Vec::new();
    while !interim.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "closed before 100 Continue"
        );
        interim.push(byte[0]);
    }
    let interim = String::from_utf8_lossy(&interim).into_owned();
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    let half = body.len() / 2;
    stream.write_all(&body[..half]).await.unwrap();
    (stream, body[half..].to_vec())
}

/// Sends the rest of a slow request's body and reads the whole answer
/// (the server closes the connection after it, since it is stopping).
async fn finish_slow_create(mut stream: TcpStream, rest: Vec<u8>) -> (u16, Value) {
    stream.write_all(&rest).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 30 s")
        .expect("the answer, without a connection reset");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{text}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(body.len(), length, "a cut answer: {text}");
    (status, serde_json::from_str(body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_flushes_usage_and_exits_0() {
    let test = "cluster_failures::sigterm_drains_in_flight_requests_flushes_usage_and_exits_0";
    let Some(mut cluster) =
        Cluster::start_with(test, Path::new(NOXUS), &options(2, UNLIMITED)).await
    else {
        return;
    };
    // Used only on replica 1, the one that is stopped.
    let (key_id, key) = cluster.create_key(0, json!({"name": "rolling"})).await;
    let stopping = 1;
    let addr = format!("127.0.0.1:{}", cluster.replicas[stopping].port());
    let terminated = Arc::new(Mutex::new(None::<Instant>));
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let request = cluster.get(stopping, "/v1/nodes", &key);
        let (terminated, stop) = (Arc::clone(&terminated), Arc::clone(&stop));
        load.push(tokio::spawn(async move {
            // (answers, errors before SIGTERM, errors after it: connecting, others)
            let (mut answers, mut early_errors, mut errors) =
                (Vec::new(), Vec::new(), (0u64, Vec::new()));
            while !stop.load(Ordering::Acquire) {
                match request.try_clone().unwrap().send().await {
                    Ok(response) => answers.push(response.status().as_u16()),
                    Err(err) => {
                        if terminated.lock().unwrap().is_none() {
                            early_errors.push(format!("{err:?}"));
                        }
                        if err.is_connect() {
                            errors.0 += 1;
                        } else {
                            errors.1.push(root_cause(&err));
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (answers, early_errors, errors)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut slow = Vec::new();
    for n in 0..3 {
        slow.push(start_slow_create(&addr, &key, &format!("in flight {n}")).await);
    }

    let sigterm_at = Instant::now();
    *terminated.lock().unwrap() = Some(sigterm_at);
    cluster.replicas[stopping].terminate();
    // It stops accepting connections...
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let closed_after = sigterm_at.elapsed();
    assert!(
        cluster.replicas[stopping].is_running(),
        "exited with requests in flight"
    );
    // ...and answers the requests it holds.
    let mut created = Vec::new();
    for (stream, rest) in slow {
        let (status, body) = finish_slow_create(stream, rest).await;
        assert_eq!(status, 201, "{body}");
        created.push(body["id"].as_str().unwrap().to_owned());
    }
    let status = cluster.replicas[stopping]
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("it exits once its requests are answered");
    let exited_after = sigterm_at.elapsed();
    assert!(status.success(), "exit status {status}");
    stop.store(true, Ordering::Release);
    let (mut answered, mut errors) = (created.len() as u64, (0, Vec::new()));
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    for task in load {
        let (answers, early_errors, late_errors) = task.await.unwrap();
        assert!(
            early_errors.is_empty(),
            "errors before SIGTERM: {early_errors:?}"
        );
        for status in answers {
            *statuses.entry(status).or_default() += 1;
            answered += 1;
        }
        errors.0 += late_errors.0;
        errors.1.extend(late_errors.1);
    }
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "{statuses:?}"
    );

    // Every answer it gave was counted and written before it exited, and
    // nothing else: no request was counted without being answered.
    let totals = usage_totals(&cluster, 0, &key_id).await;
    assert_eq!(totals["requests"].as_u64(), Some(answered), "{totals}");

    // A replacement takes over.
    let replacement = cluster
        .add_replica(Path::new(NOXUS), &ReplicaOptions::with_args(UNLIMITED))
        .await;
    let nodes = cluster
        .get(replacement, "/v1/nodes", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(nodes.status().as_u16(), 200);
    for id in &created {
        let workflow = cluster
            .get(replacement, &format!("/v1/workflows/{id}"), &key)
            .send()
            .await
            .unwrap();
        assert_eq!(workflow.status().as_u16(), 200);
    }
    assert_no_panic(&cluster);
    eprintln!(
        "SIGTERM under load: new connections refused after {} ms; 3 requests in flight answered 201; \
         exit 0 after {} ms; {answered} answers, all counted; after the SIGTERM {} requests could not connect and {} failed otherwise {:?} \
         (sent on a kept-alive connection as the server closed it: not counted, so never handled); \
         a replacement serves",
        closed_after.as_millis(),
        exited_after.as_millis(),
        errors.0,
        errors.1.len(),
        errors.1.iter().collect::<HashSet<_>>(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_drain_period_sigterm_first_fails_readyz_and_closes_connections_after_each_answer() {
    let test = "cluster_failures::with_a_drain_period_sigterm_first_fails_readyz_and_closes_connections_after_each_answer";
    let Some(mut cluster) = Cluster::start_with(
        test,
        Path::new(NOXUS),
        &options(2, &["--shutdown-drain-ms", "1500"]),
    )
    .await
    else {
        return;
    };
    let (key_id, key) = cluster.create_key(0, json!({"name": "draining"})).await;
    let stopping = 1;
    // One kept-alive connection (a pool of one), used before and during the drain.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let url = cluster.replicas[stopping].url("/v1/nodes");
    let before = http
        .get(&url)
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(before.status(), 200);
    assert!(before.headers().get("connection").is_none());

    let sigterm_at = Instant::now();
    cluster.replicas[stopping].terminate();
    // Until the drain ends, it still serves, new connections included, but
    // says it is not ready and closes each connection after its answer.
    let mut answered = 0u64;
    let mut saw_draining = false;
    while sigterm_at.elapsed() < Duration::from_millis(1_000) {
        let ready = reqwest::get(cluster.replicas[stopping].url("/readyz"))
            .await
            .expect("still accepting during the drain");
        if ready.status() == 503 {
            let body = ready.text().await.unwrap();
            let body: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
            assert_eq!(body["status"], "draining", "{body}");
            saw_draining = true;
        }
        let response = http
            .get(&url)
            .header("X-API-Key", &key)
            .send()
            .await
            .expect("answered during the drain");
        assert_eq!(response.status(), 200);
        answered += 1;
        if saw_draining {
            assert_eq!(
                response
                    .headers()
                    .get("connection")
                    .map(|v| v.to_str().unwrap()),
                Some("close")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        saw_draining,
        "/readyz answered 503 `draining` during the drain"
    );
    // Then it shuts down as without a drain, and exits 0.
    let status = cluster.replicas[stopping]
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exited");
    let stopped_after = sigterm_at.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        stopped_after >= Duration::from_millis(1_500),
        "stopped {} ms after SIGTERM, before its drain ended",
        stopped_after.as_millis()
    );
    eprintln!(
        "{answered} requests answered during the drain; exited {} ms after SIGTERM",
        stopped_after.as_millis()
    );
    // Every answer was counted (and flushed at the stop).
    let totals = usage_totals(&cluster, 0, &key_id).await;
    assert_eq!(totals["requests"], answered + 1, "{totals}");
    assert_no_panic(&cluster);
}
