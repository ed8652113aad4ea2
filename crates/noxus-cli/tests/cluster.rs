//! Several `noxus serve` processes on one PostgreSQL database, as deployed
//! behind a load balancer (`noxus_testkit::cluster`). The key cache's TTL
//! is set to a minute here, so that a refusal on another replica within
//! seconds can only come from the store's events (`pg_notify` → each
//! replica's listener → its cache), not from an entry expiring.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use noxus_api::Role;
use noxus_testkit::cluster::Cluster;

const NOXUS: &str = env!("CARGO_BIN_EXE_noxus");

/// Polls `GET /v1/nodes` with `key` on replica `index` until it answers
/// `status`, and returns how long that took (failing after 10 s).
async fn until_status(cluster: &Cluster, index: usize, key: &str, status: u16) -> Duration {
    let started = Instant::now();
    loop {
        let got = cluster
            .get(index, "/v1/nodes", key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if got == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "replica {index} still answers {got}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_key_revoked_on_one_replica_is_refused_by_the_others() {
    let test = "cluster::a_key_revoked_on_one_replica_is_refused_by_the_others";
    let Some(cluster) = Cluster::start(
        test,
        Path::new(NOXUS),
        3,
        &["--key-cache-ttl-ms", "60000", "--rate-limit-per-key", "0"],
    )
    .await
    else {
        return;
    };
    for round in 0..5 {
        let (id, key) = cluster
            .create_key(0, serde_json::json!({"name": format!("victim {round}")}))
            .await;
        // Every replica verifies the key once, so every cache holds it.
        for index in 0..3 {
            until_status(&cluster, index, &key, 200).await;
        }
        let revoked = cluster
            .delete(
                round % 3,
                &format!("/v1/admin/groups/{}/api-keys/{id}", cluster.workspace_id),
                &cluster.owner_key,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status().as_u16(), 200);
        for index in 0..3 {
            let took = until_status(&cluster, index, &key, 401).await;
            eprintln!(
                "round {round}: replica {index} refused the key {} ms after the revoke's response",
                took.as_millis()
            );
        }
    }
}

#[tokio::test]
async fn a_second_start_on_the_same_database_finds_the_platform_set_up() {
    let test = "cluster::a_second_start_on_the_same_database_finds_the_platform_set_up";
    let Some(cluster) = Cluster::start(test, Path::new(NOXUS), 2, &[]).await else {
        return;
    };
    // The owner's key from the first start works on the second replica:
    // one organization, one pepper.
    let me: serde_json::Value = cluster
        .get(1, "/v1/admin/me", &cluster.owner_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["workspace_id"], cluster.workspace_id.as_str());
    assert_eq!(me["tenant_admin"], true);
}

// What else can change a key's rights, made through one replica and seen
// by all of them. Every replica holds the key in its cache before the
// change (its TTL is a minute), so a refusal within seconds comes from the
// store's events, or, for expiries, from the expiry the cache entry holds.

const MINUTE_TTL: &[&str] = &["--key-cache-ttl-ms", "60000", "--rate-limit-per-key", "0"];

/// Polls replica `index` with `ask` (a request's status) until it answers
/// `status`; returns how long that took (failing after 10 s).
async fn until_answer<F: std::future::Future<Output = u16>>(
    index: usize,
    status: u16,
    what: &str,
    ask: impl Fn() -> F,
) -> Duration {
    let started = Instant::now();
    loop {
        let got = ask().await;
        if got == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "replica {index} still answers {got} to {what}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A write a member may do and a viewer may not: creating a workflow
/// (`workflows:write`). 201 while allowed, 403 once refused.
async fn until_write_answers(cluster: &Cluster, index: usize, key: &str, status: u16) -> Duration {
    until_answer(index, status, "creating a workflow", || async {
        cluster
            .post(index, "/v1/workflows", key)
            .json(&serde_json::json!({"name": "written through a replica"}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
    .await
}

/// Every replica verifies `key` (so every cache holds it) and answers 200.
async fn cached_everywhere(cluster: &Cluster, key: &str) {
    for index in 0..cluster.replicas.len() {
        let status = cluster
            .get(index, "/v1/nodes", key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(
            status, 200,
            "replica {index} refused the key before the change"
        );
    }
}

#[tokio::test]
async fn a_member_demoted_to_viewer_on_one_replica_cannot_write_on_any() {
    let test = "cluster::a_member_demoted_to_viewer_on_one_replica_cannot_write_on_any";
    let Some(cluster) = Cluster::start(test, Path::new(NOXUS), 3, MINUTE_TTL).await else {
        return;
    };
    let arranger = cluster.arranger().await;
    let ws = cluster.workspace_id.clone();
    let admin = arranger.user(&ws, Role::Admin).await;
    let member = arranger.user(&ws, Role::Member).await;
    let role_path = format!(
        "/settings/organization/workspaces/{ws}/members/{}/role",
        member.id
    );
    for changer in 0..3 {
        // A member writes on every replica (and every cache holds the key).
        cached_everywhere(&cluster, &member.key).await;
        for index in 0..3 {
            until_write_answers(&cluster, index, &member.key, 201).await;
        }
        let dashboard = cluster
            .dashboard(changer, &admin.email, &admin.password)
            .await;
        let demoted = dashboard
            .post(changer, &role_path, &[("role", "viewer")])
            .await;
        assert!(
            demoted.status().is_redirection(),
            "the demotion answered {}",
            demoted.status()
        );
        for index in 0..3 {
            let took = until_write_answers(&cluster, index, &member.key, 403).await;
            eprintln!(
                "demotion through replica {changer}: replica {index} refused the write {} ms after the response",
                took.as_millis()
            );
            // Still a valid key: a viewer reads.
            until_status(&cluster, index, &member.key, 200).await;
        }
        // Promoted back (through the same replica): every replica lets the
        // member write again, by the same events.
        let promoted = dashboard
            .post(changer, &role_path, &[("role", "member")])
            .await;
        assert!(promoted.status().is_redirection());
        for index in 0..3 {
            until_write_answers(&cluster, index, &member.key, 201).await;
        }
    }
    arranger.close().await;
}

#[tokio::test]
async fn a_member_removed_on_one_replica_is_refused_by_all() {
    let test = "cluster::a_member_removed_on_one_replica_is_refused_by_all";
    let Some(cluster) = Cluster::start(test, Path::new(NOXUS), 3, MINUTE_TTL).await else {
        return;
    };
    let arranger = cluster.arranger().await;
    let ws = cluster.workspace_id.clone();
    let admin = arranger.user(&ws, Role::Admin).await;
    for changer in 0..3 {
        let member = arranger.user(&ws, Role::Member).await;
        cached_everywhere(&cluster, &member.key).await;
        let dashboard = cluster
            .dashboard(changer, &admin.email, &admin.password)
            .await;
        let removed = dashboard
            .post(
                changer,
                &format!(
                    "/settings/organization/workspaces/{ws}/members/{}/remove",
                    member.id
                ),
                &[],
            )
            .await;
        assert!(
            removed.status().is_redirection(),
            "the removal answered {}",
            removed.status()
        );
        for index in 0..3 {
            let took = until_status(&cluster, index, &member.key, 401).await;
            eprintln!(
                "removal through replica {changer}: replica {index} refused the key {} ms after the response",
                took.as_millis()
            );
        }
    }
    arranger.close().await;
}

async fn rotate(cluster: &Cluster, index: usize, key_id: &str, grace: u64) -> serde_json::Value {
    cluster
        .post(
            index,
            &format!(
                "/v1/admin/groups/{}/api-keys/{key_id}/rotate",
                cluster.workspace_id
            ),
            &cluster.owner_key,
        )
        .json(&serde_json::json!({"grace_period_seconds": grace}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_key_rotated_without_grace_on_one_replica_is_refused_by_all_and_its_successor_works() {
    let test = "cluster::a_key_rotated_without_grace_on_one_replica_is_refused_by_all_and_its_successor_works";
    let Some(cluster) = Cluster::start(test, Path::new(NOXUS), 3, MINUTE_TTL).await else {
        return;
    };
    for changer in 0..3 {
        let (id, old) = cluster
            .create_key(0, serde_json::json!({"name": format!("rotated {changer}")}))
            .await;
        cached_everywhere(&cluster, &old).await;
        let rotated = rotate(&cluster, changer, &id, 0).await;
        let new = rotated["value"].as_str().unwrap().to_owned();
        for index in 0..3 {
            let took = until_status(&cluster, index, &old, 401).await;
            eprintln!(
                "rotation through replica {changer}: replica {index} refused the old key {} ms after the response",
                took.as_millis()
            );
            until_status(&cluster, index, &new, 200).await;
        }
    }
}

#[tokio::test]
async fn expiries_are_refused_by_every_replica_without_any_event() {
    let test = "cluster::expiries_are_refused_by_every_replica_without_any_event";
    let Some(cluster) = Cluster::start(test, Path::new(NOXUS), 3, MINUTE_TTL).await else {
        return;
    };
    // Rotation with a 2 s grace, through replica 1: the old key works
    // during the grace on every replica (each caches it again, with its new
    // expiry), and is refused by all of them once the grace is over,
    // although nothing is written then: the cache entry holds the expiry.
    let (id, old) = cluster
        .create_key(0, serde_json::json!({"name": "rotated with grace"}))
        .await;
    cached_everywhere(&cluster, &old).await;
    let rotated = rotate(&cluster, 1, &id, 2).await;
    let answered = Instant::now();
    let new = rotated["value"].as_str().unwrap().to_owned();
    for index in 0..3 {
        let status = cluster
            .get(index, "/v1/nodes", &old)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        // (Unless this slow machine let the grace pass already.)
        if answered.elapsed() < Duration::from_millis(1_500) {
            assert_eq!(
                status, 200,
                "replica {index} refused the old key during its grace"
            );
        }
    }
    // The server's end of the grace is 2 s after its own clock read,
    // before its response: 2 s after the response is later.
    tokio::time::sleep(Duration::from_millis(2_100).saturating_sub(answered.elapsed())).await;
    for index in 0..3 {
        let status = cluster
            .get(index, "/v1/nodes", &old)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(
            status, 401,
            "replica {index} served the old key after its grace"
        );
        until_status(&cluster, index, &new, 200).await;
    }

    // A key's own expiry (keys are immutable: the API changes no expiry,
    // so a key made to expire soon stands for one): cached everywhere,
    // refused everywhere from its expiry on.
    let expires_at = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let (_, short) = cluster
        .create_key(
            2,
            serde_json::json!({
                "name": "short-lived",
                "expires_at": expires_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap(),
            }),
        )
        .await;
    cached_everywhere(&cluster, &short).await;
    let left = expires_at - time::OffsetDateTime::now_utc();
    let left = Duration::try_from(left).unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(100)).await;
    for index in 0..3 {
        let status = cluster
            .get(index, "/v1/nodes", &short)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, 401, "replica {index} served an expired key");
    }
}

#[tokio::test]
async fn organization_changes_reach_every_replica() {
    let test = "cluster::organization_changes_reach_every_replica";
    let Some(cluster) = Cluster::start(test, Path::new(NOXUS), 3, MINUTE_TTL).await else {
        return;
    };
    let arranger = cluster.arranger().await;
    let ws = cluster.workspace_id.clone();

    // An organization admin unmade through replica 0: their tenant-admin
    // key keeps its workspace role but loses the organization permissions,
    // so an organization write (PATCH /v1/admin/users/{id}, which needs
    // `org:users:write`; an empty body changes nothing) is 403 everywhere.
    let org_admin = arranger.user(&ws, Role::Member).await;
    arranger.make_org_admin(&org_admin.id).await;
    let (_, tenant_key) = arranger
        .key(
            &ws,
            &org_admin.id,
            noxus_testkit::KeyOptions {
                tenant_admin: true,
                ..Default::default()
            },
        )
        .await;
    let org_write = |index: usize| {
        let request = cluster
            .http
            .patch(cluster.replicas[index].url(&format!("/v1/admin/users/{}", org_admin.id)))
            .header("X-API-Key", &tenant_key)
            .json(&serde_json::json!({}));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    cached_everywhere(&cluster, &tenant_key).await;
    for index in 0..3 {
        until_answer(index, 200, "an organization write", || org_write(index)).await;
    }
    let unmade = cluster
        .http
        .patch(cluster.replicas[0].url(&format!("/v1/admin/users/{}", org_admin.id)))
        .header("X-API-Key", &cluster.owner_key)
        .json(&serde_json::json!({"tenant_admin": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(unmade.status().as_u16(), 200);
    for index in 0..3 {
        let took = until_answer(index, 403, "an organization write", || org_write(index)).await;
        eprintln!(
            "organization admin unmade through replica 0: replica {index} refused the write {} ms after the response",
            took.as_millis()
        );
        until_status(&cluster, index, &tenant_key, 200).await;
    }

    // A user deactivated through replica 1: 401 everywhere.
    let leaver = arranger.user(&ws, Role::Member).await;
    cached_everywhere(&cluster, &leaver.key).await;
    let deactivated = cluster
        .http
        .patch(cluster.replicas[1].url(&format!("/v1/admin/users/{}", leaver.id)))
        .header("X-API-Key", &cluster.owner_key)
        .json(&serde_json::json!({"is_active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(deactivated.status().as_u16(), 200);
    for index in 0..3 {
        let took = until_status(&cluster, index, &leaver.key, 401).await;
        eprintln!(
            "user deactivated through replica 1: replica {index} refused the key {} ms after the response",
            took.as_millis()
        );
    }

    // A workspace deleted through replica 2: its keys are 401 everywhere.
    let created: serde_json::Value = cluster
        .post(0, "/v1/admin/groups", &cluster.owner_key)
        .json(&serde_json::json!({"name": "short-lived workspace"}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let doomed = created["id"].as_str().unwrap().to_owned();
    let key: serde_json::Value = cluster
        .post(
            0,
            &format!("/v1/admin/groups/{doomed}/api-keys"),
            &cluster.owner_key,
        )
        .json(&serde_json::json!({"name": "in a doomed workspace"}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["value"].as_str().unwrap().to_owned();
    cached_everywhere(&cluster, &key).await;
    let deleted = cluster
        .delete(2, &format!("/v1/admin/groups/{doomed}"), &cluster.owner_key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 200);
    for index in 0..3 {
        let took = until_status(&cluster, index, &key, 401).await;
        eprintln!(
            "workspace deleted through replica 2: replica {index} refused its key {} ms after the response",
            took.as_millis()
        );
    }
    arranger.close().await;
}

// Run event streams across replicas: a stream on one replica is woken by
// what is written through another (the store's `noxus_runs` and
// `noxus_events` notifications), not by polling.

/// Input → ComposeText ("Hello, {input}!") → Output.
fn greeting_definition() -> serde_json::Value {
    let node = |id: &str, kind: &str, config: serde_json::Value| {
        serde_json::json!({"type": kind, "id": id, "node_config": config,
                           "connector_config": {"inputs": [], "outputs": []}})
    };
    let edge = |from: &str, to: &str| {
        serde_json::json!({"from_id": {"node_id": from, "connector_name": "output", "key": null, "optional": false},
                           "to_id": {"node_id": to, "connector_name": "input", "key": null, "optional": false},
                           "id": format!("{from}-{to}")})
    };
    serde_json::json!({
        "flow_version": "v1",
        "nodes": [
            node("in", "InputNode", serde_json::json!({"label": "Name"})),
            node("compose", "ComposeTextNode", serde_json::json!({"template": "Hello, {input}!"})),
            node("out", "OutputNode", serde_json::json!({"label": "Greeting"})),
        ],
        "edges": [edge("in", "compose"), edge("compose", "out")]
    })
}

/// An open event stream, read event by event.
struct Stream {
    response: reqwest::Response,
    buffered: String,
}

impl Stream {
    /// Opens the stream of `run` on replica `index` with `key`.
    async fn open(cluster: &Cluster, index: usize, run: &str, key: &str) -> Self {
        let response = cluster
            .get(index, &format!("/v1/runs/{run}/events"), key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        Self {
            response,
            buffered: String::new(),
        }
    }

    /// The next event's data, with when it arrived; `None` at the end.
    /// Fails if nothing comes for 10 s.
    async fn next(&mut self) -> Option<(serde_json::Value, Instant)> {
        loop {
            if let Some(end) = self.buffered.find("\n\n") {
                let frame: String = self.buffered.drain(..end + 2).collect();
                if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                    return Some((serde_json::from_str(data).unwrap(), Instant::now()));
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("the stream says something within 10 s")
                .unwrap()?;
            self.buffered.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads until an event of `kind`.
    async fn until(&mut self, kind: &str) {
        while let Some((event, _)) = self.next().await {
            if event["type"] == kind {
                return;
            }
        }
        panic!("the stream ended before a {kind} event");
    }
}

#[tokio::test]
async fn a_stream_on_one_replica_ends_when_its_key_is_revoked_through_another() {
    let test = "cluster::a_stream_on_one_replica_ends_when_its_key_is_revoked_through_another";
    let Some(cluster) = Cluster::start(test, Path::new(NOXUS), 2, MINUTE_TTL).await else {
        return;
    };
    let arranger = cluster.arranger().await;
    let ws = cluster.workspace_id.clone();
    let member = arranger.user(&ws, Role::Member).await;
    let workflow = arranger.workflow(&ws, greeting_definition()).await;
    let run = arranger.held_run(&ws, &workflow, &member.id).await;
    for round in 0..4 {
        let (changer, streamer) = (round % 2, 1 - round % 2);
        let (id, key) = cluster
            .create_key(
                changer,
                serde_json::json!({"name": format!("streamer {round}")}),
            )
            .await;
        let mut stream = Stream::open(&cluster, streamer, &run, &key).await;
        stream.until("started").await;
        let revoked = cluster
            .delete(
                changer,
                &format!("/v1/admin/groups/{ws}/api-keys/{id}"),
                &cluster.owner_key,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status().as_u16(), 200);
        let answered = Instant::now();
        let (last, at) = stream.next().await.expect("a final event");
        assert_eq!(last["type"], "error", "{last}");
        assert_eq!(last["data"]["code"], "revoked_api_key", "{last}");
        let took = at.saturating_duration_since(answered);
        eprintln!(
            "round {round}: the stream on replica {streamer} ended {} ms after the revocation's response from replica {changer}",
            took.as_millis()
        );
        assert!(took < Duration::from_secs(1), "ended {took:?} after");
        assert!(stream.next().await.is_none(), "nothing after the error");
    }
    arranger.close().await;
}

#[tokio::test]
async fn a_stream_on_one_replica_follows_a_run_written_elsewhere_as_it_happens() {
    let test = "cluster::a_stream_on_one_replica_follows_a_run_written_elsewhere_as_it_happens";
    let Some(cluster) = Cluster::start(test, Path::new(NOXUS), 2, MINUTE_TTL).await else {
        return;
    };
    let arranger = cluster.arranger().await;
    let ws = cluster.workspace_id.clone();
    let member = arranger.user(&ws, Role::Member).await;
    let workflow = arranger.workflow(&ws, greeting_definition()).await;

    // A run written by another process (the arranger's store, as a worker
    // of its own): each event reaches replica 1's stream well within the
    // streams' 2-second safety poll, so by the store's notifications.
    let run = arranger.held_run(&ws, &workflow, &member.id).await;
    let mut stream = Stream::open(&cluster, 1, &run, &member.key).await;
    stream.until("started").await;
    let mut delays = Vec::new();
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(150 + 50 * i)).await;
        let written = Instant::now();
        let seq = arranger
            .run_event(&run, "node_started", serde_json::json!({"index": i}))
            .await;
        let (event, at) = stream.next().await.expect("the event");
        assert_eq!(event["redisId"], seq.to_string(), "{event}");
        assert_eq!(event["data"]["index"], i, "{event}");
        delays.push(at.saturating_duration_since(written));
    }
    arranger
        .complete_held_run(&run, serde_json::json!({"out::output": {"text": "done"}}))
        .await;
    let (last, _) = stream.next().await.expect("the terminal event");
    assert_eq!(last["type"], "completed", "{last}");
    assert!(stream.next().await.is_none(), "the stream ends after it");
    eprintln!("event delays across replicas: {delays:?}");
    let slowest = delays.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(1),
        "an event took {slowest:?} to cross"
    );

    // A run started and executed through replica 0, streamed on replica 1:
    // every event, from `queued` to `completed`, then the end.
    let created = cluster
        .post(0, &format!("/v1/workflows/{workflow}/runs"), &member.key)
        .json(&serde_json::json!({"input": {"Name": "Ada"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    let run = created["id"].as_str().unwrap();
    let mut stream = Stream::open(&cluster, 1, run, &member.key).await;
    let mut kinds = Vec::new();
    let mut numbers = Vec::new();
    while let Some((event, _)) = stream.next().await {
        kinds.push(event["type"].as_str().unwrap().to_owned());
        numbers.push(event["redisId"].as_str().unwrap().parse::<i64>().unwrap());
    }
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("queued"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("completed"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "node_started").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(
        numbers,
        (1..=numbers.len() as i64).collect::<Vec<_>>(),
        "every event, in order"
    );
    arranger.close().await;
}
