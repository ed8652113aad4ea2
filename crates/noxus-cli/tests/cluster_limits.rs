//! Rate limits and throttles that hold across replicas
//! (`noxus_server::cluster_limits`): three real `noxus serve` processes on
//! one PostgreSQL database, their shared counters in the database or in
//! Redis, with the load spread evenly over them as a load balancer would.
//! Without sharing, three replicas would admit three times a limit; the
//! goal is 95–110 % of it.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use noxus_testkit::cluster::Cluster;
use noxus_testkit::proxy::CuttableProxy;

const NOXUS: &str = env!("CARGO_BIN_EXE_noxus");

/// The per-key limit of the accuracy tests: 50 per second, bursts of 50.
const PER_SECOND: u64 = 50;
const BURST: u64 = 50;

/// How long the accuracy tests send requests.
const LOAD_FOR: Duration = Duration::from_secs(10);

/// Clients per replica, each sending a request every few milliseconds:
/// about ten times the limit in all.
const CLIENTS_PER_REPLICA: usize = 2;
const PAUSE: Duration = Duration::from_millis(8);

/// Answers by status.
type Statuses = BTreeMap<u16, u64>;

/// Sends `GET /v1/nodes` with `key` to every replica, `CLIENTS_PER_REPLICA`
/// clients each, for `duration`; returns the answers by status.
async fn spread_load(cluster: &Cluster, key: &str, duration: Duration) -> Statuses {
    let deadline = Instant::now() + duration;
    let counts: Arc<[AtomicU64; 600]> = Arc::new(std::array::from_fn(|_| AtomicU64::new(0)));
    let mut clients = tokio::task::JoinSet::new();
    for replica in &cluster.replicas {
        for _ in 0..CLIENTS_PER_REPLICA {
            let http = reqwest::Client::new();
            let url = replica.url("/v1/nodes");
            let key = key.to_owned();
            let counts = Arc::clone(&counts);
            clients.spawn(async move {
                while Instant::now() < deadline {
                    let status = match http.get(&url).header("X-API-Key", &key).send().await {
                        Ok(r) => r.status().as_u16(),
                        Err(_) => 599,
                    };
                    counts[usize::from(status).min(599)].fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(PAUSE).await;
                }
            });
        }
    }
    while clients.join_next().await.is_some() {}
    counts
        .iter()
        .enumerate()
        .filter(|(_, c)| c.load(Ordering::Relaxed) > 0)
        .map(|(status, c)| (status as u16, c.load(Ordering::Relaxed)))
        .collect()
}

/// Runs the accuracy check on a started cluster.
async fn check_accuracy(cluster: &Cluster, counters: &str) {
    let (_, key) = cluster
        .create_key(
            0,
            serde_json::json!({
                "name": "limited",
                "rate_limit": {"per_second": PER_SECOND, "burst": BURST}
            }),
        )
        .await;
    let statuses = spread_load(cluster, &key, LOAD_FOR).await;
    let admitted = statuses.get(&200).copied().unwrap_or(0);
    let refused = statuses.get(&429).copied().unwrap_or(0);
    let limit = BURST + PER_SECOND * LOAD_FOR.as_secs();
    let ratio = admitted as f64 / limit as f64;
    eprintln!(
        "{counters}: 3 replicas admitted {admitted} of {} requests in {} s (limit {limit}: {:.1} %), refused {refused}",
        admitted + refused,
        LOAD_FOR.as_secs(),
        ratio * 100.0
    );
    assert_eq!(
        admitted + refused,
        statuses.values().sum::<u64>(),
        "every answer is 200 or 429: {statuses:?}"
    );
    assert!(
        refused > admitted,
        "the load is well over the limit: {statuses:?}"
    );
    assert!(
        (0.95..=1.10).contains(&ratio),
        "the cluster admitted {:.1} % of the limit (goal 95-110 %): {statuses:?}",
        ratio * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_limit_holds_across_three_replicas_with_counters_in_postgresql() {
    let test =
        "cluster_limits::a_key_limit_holds_across_three_replicas_with_counters_in_postgresql";
    let Some(cluster) = Cluster::start(test, Path::new(NOXUS), 3, &[]).await else {
        return;
    };
    for replica in 0..3 {
        let ready: serde_json::Value = cluster
            .http
            .get(cluster.replicas[replica].url("/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            ready["rate_limits"]
                .as_str()
                .unwrap()
                .starts_with("cluster-wide (postgresql)"),
            "{ready}"
        );
    }
    check_accuracy(&cluster, "counters in PostgreSQL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_limit_holds_across_three_replicas_with_counters_in_redis() {
    let test = "cluster_limits::a_key_limit_holds_across_three_replicas_with_counters_in_redis";
    let Some(redis) = noxus_testkit::redis::address_or_skip(test).await else {
        return;
    };
    let url = format!("redis://{redis}");
    let Some(cluster) = Cluster::start(test, Path::new(NOXUS), 3, &["--redis-url", &url]).await
    else {
        return;
    };
    check_accuracy(&cluster, "counters in Redis").await;
    let ready: serde_json::Value = cluster
        .http
        .get(cluster.replicas[1].url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["rate_limits"], "cluster-wide (redis)", "{ready}");
}

/// `/readyz` of replica `index`: its status and its `rate_limits` line.
async fn readiness(cluster: &Cluster, index: usize) -> (u16, String) {
    let response = cluster
        .http
        .get(cluster.replicas[index].url("/readyz"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    (
        status,
        body["rate_limits"].as_str().unwrap_or("").to_owned(),
    )
}

/// Waits until every replica's `rate_limits` line starts with `prefix`;
/// returns how long that took (failing after 10 s).
async fn until_rate_limits(cluster: &Cluster, prefix: &str) -> Duration {
    let started = Instant::now();
    for index in 0..cluster.replicas.len() {
        loop {
            let (status, line) = readiness(cluster, index).await;
            if line.starts_with(prefix) {
                assert_eq!(status, 200, "replica {index} stays ready: {line}");
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "replica {index} still says `{line}`, not `{prefix}…`"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_goes_away_authentication_goes_on_with_local_limits() {
    let test = "cluster_limits::when_redis_goes_away_authentication_goes_on_with_local_limits";
    let Some(redis) = noxus_testkit::redis::address_or_skip(test).await else {
        return;
    };
    let proxy = CuttableProxy::start(redis).await.unwrap();
    let url = format!("redis://{}", proxy.addr());
    // No server default limit, so the owner may give the key a high one.
    let Some(cluster) = Cluster::start(
        test,
        Path::new(NOXUS),
        3,
        &["--redis-url", &url, "--rate-limit-per-key", "0"],
    )
    .await
    else {
        return;
    };
    // A limit the load stays under: every request must be answered 200.
    let (_, key) = cluster
        .create_key(
            0,
            serde_json::json!({"name": "busy", "rate_limit": {"per_second": 1000, "burst": 1000}}),
        )
        .await;
    let load = {
        let cluster = &cluster;
        let key = key.clone();
        async move { spread_load(cluster, &key, Duration::from_secs(6)).await }
    };
    let outage = async {
        until_rate_limits(&cluster, "cluster-wide (redis)").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxy.cut();
        let noticed = until_rate_limits(&cluster, "per replica").await;
        eprintln!(
            "every replica limits alone {} ms after Redis went away",
            noticed.as_millis()
        );
        let (_, line) = readiness(&cluster, 0).await;
        assert!(line.contains("redis"), "{line}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        proxy.restore();
        let back = until_rate_limits(&cluster, "cluster-wide (redis)").await;
        eprintln!(
            "limits are cluster-wide again {} ms after Redis came back",
            back.as_millis()
        );
    };
    let (statuses, ()) = tokio::join!(load, outage);
    eprintln!("answers during the Redis outage test: {statuses:?}");
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "authentication went on: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_are_throttled_across_replicas() {
    let test = "cluster_limits::failed_authentications_are_throttled_across_replicas";
    let Some(cluster) = Cluster::start(test, Path::new(NOXUS), 3, &[]).await else {
        return;
    };
    // Failures from one address, round-robin over the replicas. Each
    // replica alone allows a burst of 30 (then one a second): without
    // sharing, the first 429 would come after 90 failures.
    let mut failures_before_429 = None;
    for n in 0..120usize {
        let status = cluster
            .get(n % 3, "/v1/nodes", "noxus_not-a-real-key")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        match status {
            401 => {}
            429 => {
                failures_before_429 = Some(n);
                break;
            }
            other => panic!("a bad key got {other}"),
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let failures = failures_before_429.expect("the address was throttled");
    eprintln!("the cluster refused the address after {failures} failed authentications (one replica alone: 30, three without sharing: 90)");
    assert!(
        (30..=42).contains(&failures),
        "throttled after {failures} failures"
    );
    // Every replica now refuses the address.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for index in 0..3 {
        let status = cluster
            .get(index, "/v1/nodes", "noxus_not-a-real-key")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, 429, "replica {index}");
    }
    // A key that worked lately on a replica still works there from the
    // same address (the cluster start used the owner's key on replica 0).
    let status = cluster
        .get(0, "/v1/admin/me", &cluster.owner_key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 200);
}

/// A browser holding one replica's login form.
struct LoginForm {
    http: reqwest::Client,
    url: String,
    cookie: String,
    csrf: String,
}

impl LoginForm {
    async fn at(cluster: &Cluster, index: usize) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let url = cluster.replicas[index].url("/login");
        let page = http.get(&url).send().await.unwrap();
        let cookie = page.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let body = page.text().await.unwrap();
        let csrf = body
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned();
        Self {
            http,
            url,
            cookie,
            csrf,
        }
    }

    async fn attempt(&self, email: &str, password: &str) -> u16 {
        self.http
            .post(&self.url)
            .header("cookie", &self.cookie)
            .form(&[
                ("email", email),
                ("password", password),
                ("csrf", &self.csrf),
            ])
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_counted_across_replicas() {
    let test = "cluster_limits::failed_logins_are_counted_across_replicas";
    let Some(cluster) = Cluster::start(test, Path::new(NOXUS), 2, &[]).await else {
        return;
    };
    let forms = [
        LoginForm::at(&cluster, 0).await,
        LoginForm::at(&cluster, 1).await,
    ];
    // Five failures for one account from one address are free; the sixth
    // makes the next attempt wait. Three on each replica: alone, neither
    // would hold anyone back.
    for n in 0..6 {
        let status = forms[n % 2]
            .attempt("admin@noxus.local", "not the password")
            .await;
        assert_eq!(status, 401, "failure {n}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for (index, form) in forms.iter().enumerate() {
        let status = form.attempt("admin@noxus.local", "not the password").await;
        assert_eq!(
            status, 429,
            "replica {index} makes the seventh attempt wait"
        );
    }
}
