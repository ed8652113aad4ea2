//! Per-key usage: counted off the request path, flushed in batches, exact
//! across a graceful restart, readable per key and per workspace.

use noxus_api::Role;
use noxus_testkit::TestApp;
use serde_json::{json, Value};

use crate::helpers::json_ok;

fn usage_path(app: &TestApp, key_id: &str) -> String {
    format!(
        "/v1/admin/groups/{}/api-keys/{key_id}/usage",
        app.workspace_id
    )
}

#[tokio::test]
async fn every_request_is_counted_against_its_key_with_its_outcome() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    for _ in 0..7 {
        json_ok(app.get("/v1/workflows", &member.key).send().await.unwrap()).await;
    }
    for _ in 0..3 {
        let r = app
            .get(
                "/v1/workflows/00000000-0000-0000-0000-000000000000",
                &member.key,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let r = app
        .get(
            &format!("/v1/admin/groups/{}/usage", app.workspace_id),
            &member.key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "workspace usage needs keys:manage");

    let usage = json_ok(
        app.get(&usage_path(&app, &member.key_id), &member.key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(usage["bucket"], "hour");
    assert_eq!(usage["points"].as_array().unwrap().len(), 24);
    let totals = &usage["totals"];
    assert_eq!(totals["requests"], 11, "{usage}");
    assert_eq!(totals["ok"], 7);
    assert_eq!(totals["client_errors"], 4);
    assert_eq!(totals["forbidden"], 1);
    let last_point = usage["points"].as_array().unwrap().last().unwrap();
    assert_eq!(last_point["requests"], 11, "all in the current hour");
    assert_eq!(usage["last_used_addr"], "127.0.0.1");
    assert!(usage["last_used_at"].is_string());
    assert_eq!(usage["addresses"][0]["addr"], "127.0.0.1");

    // The read itself is counted after it answers.
    let again = json_ok(
        app.get(&usage_path(&app, &member.key_id), &member.key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(again["totals"]["requests"], 12);
    let daily = json_ok(
        app.get(
            &format!("{}?hours=168&bucket=day", usage_path(&app, &member.key_id)),
            &member.key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(daily["bucket"], "day");
    assert!(daily["points"].as_array().unwrap().len() >= 7);
    assert_eq!(daily["totals"]["requests"], 13);
    let bad = app
        .get(
            &format!("{}?bucket=week", usage_path(&app, &member.key_id)),
            &member.key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    app.stop().await;
}

#[tokio::test]
async fn refusals_of_a_known_key_are_counted_too() {
    let app = TestApp::spawn().await;
    let viewer = app.user_with_role(Role::Viewer).await;
    for _ in 0..2 {
        let r = app
            .post("/v1/workflows", &viewer.key)
            .json(&json!({"name": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    json_ok(
        app.delete(
            &format!(
                "/v1/admin/groups/{}/api-keys/{}",
                app.workspace_id, viewer.key_id
            ),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    for _ in 0..3 {
        let r = app.get("/v1/workflows", &viewer.key).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
    let usage = json_ok(
        app.get(&usage_path(&app, &viewer.key_id), &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(usage["totals"]["requests"], 5, "{usage}");
    assert_eq!(usage["totals"]["forbidden"], 2);
    assert_eq!(usage["totals"]["unauthorized"], 3);
    app.stop().await;
}

#[tokio::test]
async fn a_graceful_restart_loses_no_count() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let n = 37;
    for _ in 0..n {
        json_ok(app.get("/v1/nodes", &member.key).send().await.unwrap()).await;
    }
    let workspace = app.workspace_id.clone();
    let dir = app.stop_keep_data().await;

    let app = TestApp::start_in(dir.path(), |_| {}).await;
    let usage = json_ok(
        app.get(
            &format!(
                "/v1/admin/groups/{workspace}/api-keys/{}/usage",
                member.key_id
            ),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(usage["totals"]["requests"], n, "{usage}");
    app.stop().await;
}

#[tokio::test]
async fn workspace_usage_adds_up_every_key_busiest_first() {
    let app = TestApp::spawn().await;
    let a = app.user_with_role(Role::Member).await;
    let b = app.user_with_role(Role::Member).await;
    for _ in 0..5 {
        json_ok(app.get("/v1/workflows", &a.key).send().await.unwrap()).await;
    }
    for _ in 0..2 {
        json_ok(app.get("/v1/workflows", &b.key).send().await.unwrap()).await;
    }
    let usage: Value = json_ok(
        app.get(
            &format!("/v1/admin/groups/{}/usage", app.workspace_id),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(usage["totals"]["requests"], 7, "{usage}");
    assert_eq!(usage["keys"][0]["key_id"], a.key_id.as_str());
    assert_eq!(usage["keys"][0]["totals"]["requests"], 5);
    assert_eq!(usage["keys"][1]["totals"]["requests"], 2);
    assert!(usage["keys"][0]["value"].as_str().unwrap().contains('…'));
    app.stop().await;
}

#[tokio::test]
async fn usage_older_than_the_retention_is_pruned() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let now_hour = time::OffsetDateTime::now_utc()
        .unix_timestamp()
        .div_euclid(3600);
    let one = noxus_server::store::UsageCounts {
        requests: 1,
        ok: 1,
        ..Default::default()
    };
    let flush = noxus_server::store::KeyUsageFlush {
        key_id: member.key_id.clone().into(),
        workspace_id: app.workspace_id.clone().into(),
        hours: vec![
            (now_hour - 24 * 100, one),
            (now_hour - 24 * 10, one),
            (now_hour, one),
        ],
        last_used: None,
        addresses: Vec::new(),
    };
    app.state.store().record_usage(&[flush], 100).await.unwrap();
    noxus_server::usage::prune(app.state.store(), 90).await;
    let left = app
        .state
        .store()
        .usage_hours(
            &app.workspace_id.as_str().into(),
            Some(&member.key_id.as_str().into()),
            0,
            now_hour,
        )
        .await
        .unwrap();
    let hours: Vec<i64> = left.iter().map(|h| now_hour - h.hour).collect();
    assert_eq!(
        hours,
        vec![240, 0],
        "the 100-day-old hour went, the rest stayed"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_never_collide_with_the_usage_flusher() {
    let app = TestApp::spawn_with(|c| c.key_rate_limit = None).await;
    for round in 0..10 {
        let mut tasks = Vec::new();
        for i in 0..20 {
            let request = app
                .post("/v1/workflows", &app.owner_key)
                .json(&json!({"name": format!("w{round}-{i}")}));
            tasks.push(tokio::spawn(async move {
                request.send().await.map(|r| r.status().as_u16())
            }));
        }
        // Usage of the requests above is being written meanwhile.
        app.state.usage().flush(app.state.store()).await;
        for task in tasks {
            assert_eq!(
                task.await.unwrap().unwrap(),
                201,
                "a write failed while usage was flushed"
            );
        }
    }
    app.stop().await;
}

/// One GET from `local` (any 127/8 address: the loopback interface answers
/// to all of them), over a raw socket so that every request really comes
/// from its own address. Returns the status code.
async fn get_from(local: std::net::Ipv4Addr, port: u16, path: &str, key: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((local, 0))).unwrap();
    let mut stream = socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let head = String::from_utf8_lossy(&response[..response.len().min(12)]).into_owned();
    head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The addresses stored for a key, most recently seen first, read from the
/// database file itself.
async fn stored_address_list(app: &TestApp, key_id: &str) -> Vec<String> {
    if app.is_postgres() {
        // The store's own listing has the same order (last seen, then
        // insertion, newest first).
        let (addresses, _) = app
            .state
            .store()
            .key_addresses(&key_id.into(), 0, u64::MAX)
            .await
            .unwrap();
        return addresses.into_iter().map(|a| a.addr).collect();
    }
    let options =
        sqlx::sqlite::SqliteConnectOptions::new().filename(app.data_dir().join("noxus.db"));
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let addresses: Vec<String> = sqlx::query_scalar(
        "SELECT addr FROM key_addresses WHERE key_id = ? ORDER BY last_seen_at DESC, rowid DESC",
    )
    .bind(key_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    addresses
}

async fn stored_addresses(app: &TestApp, key_id: &str) -> usize {
    stored_address_list(app, key_id).await.len()
}

/// The attack of the issue: one key used from 10 000 addresses within
/// seconds. The server keeps the 100 most recently seen, and every view of
/// the key's usage stays small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_used_from_ten_thousand_addresses_keeps_a_bounded_few_and_small_views() {
    let app = TestApp::spawn_with(|c| c.key_rate_limit = None).await;
    let member = app.user_with_role(Role::Member).await;
    let addresses: Vec<std::net::Ipv4Addr> = (0..10_000u32)
        .map(|i| std::net::Ipv4Addr::new(127, 1, (i / 250) as u8, (1 + i % 250) as u8))
        .collect();
    let mut tasks = Vec::new();
    for chunk in addresses.chunks(10_000 / 16) {
        let chunk = chunk.to_vec();
        let key = member.key.clone();
        let port = app.port;
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for local in chunk {
                if get_from(local, port, "/v1/admin/me", &key).await == 200 {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for task in tasks {
        ok += task.await.unwrap();
    }
    assert_eq!(ok, 10_000, "every request was answered");
    app.state.usage().flush(app.state.store()).await;

    assert_eq!(
        stored_addresses(&app, &member.key_id).await,
        100,
        "at most max_addresses_per_key rows for the key"
    );

    let response = app
        .get(&usage_path(&app, &member.key_id), &app.owner_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    assert!(body.len() < 100_000, "usage is {} bytes", body.len());
    let usage: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(usage["addresses_total"], 100);
    let listed = usage["addresses"].as_array().unwrap();
    assert_eq!(listed.len(), 20, "a first page of addresses");
    assert_eq!(
        listed[0]["addr"].as_str(),
        usage["last_used_addr"].as_str(),
        "most recently seen first"
    );
    let flags = usage["flags"].as_array().unwrap();
    assert!(!flags.is_empty() && flags.len() <= 100, "{}", flags.len());
    assert!(usage["flags_total"].as_u64().unwrap() >= flags.len() as u64);
    for flag in flags {
        let sentence = flag["sentence"].as_str().unwrap();
        assert!(sentence.len() < 300, "{sentence}");
    }
    let sentence = flags
        .iter()
        .rev()
        .find(|f| f["kind"] == "new_address")
        .unwrap()["sentence"]
        .as_str()
        .unwrap();
    assert!(
        sentence.starts_with("First use from 127.1.") && sentence.contains(" others."),
        "names a few earlier addresses and counts the rest: {sentence}"
    );

    // The rest, a page at a time.
    let addresses_path = format!(
        "/v1/admin/groups/{}/api-keys/{}/addresses",
        app.workspace_id, member.key_id
    );
    let page = json_ok(
        app.get(&format!("{addresses_path}?page=2&size=30"), &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(page["total"], 100);
    assert_eq!(page["pages"], 4);
    assert_eq!(page["items"].as_array().unwrap().len(), 30);
    let last = json_ok(
        app.get(&format!("{addresses_path}?page=4&size=30"), &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(last["items"].as_array().unwrap().len(), 10);
    crate::helpers::assert_error(
        app.get(&format!("{addresses_path}?size=101"), &app.owner_key)
            .send()
            .await
            .unwrap(),
        422,
        "validation_error",
    )
    .await;

    let workspace = app
        .get(
            &format!("/v1/admin/groups/{}/usage", app.workspace_id),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap();
    let body = workspace.bytes().await.unwrap();
    assert!(
        body.len() < 100_000,
        "workspace usage is {} bytes",
        body.len()
    );
    app.stop().await;
}

#[tokio::test]
async fn addresses_are_read_with_the_same_rights_as_usage() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let other = app.user_with_role(Role::Member).await;
    json_ok(app.get("/v1/workflows", &member.key).send().await.unwrap()).await;
    let path = format!(
        "/v1/admin/groups/{}/api-keys/{}/addresses",
        app.workspace_id, member.key_id
    );
    let own = json_ok(app.get(&path, &member.key).send().await.unwrap()).await;
    assert_eq!(own["total"], 1);
    assert_eq!(own["items"][0]["addr"], "127.0.0.1");
    assert_eq!(own["size"], 20);
    // Another member's key is invisible without keys:manage.
    crate::helpers::assert_error(
        app.get(&path, &other.key).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    let theirs = app.second_workspace("Elsewhere").await;
    crate::helpers::assert_error(
        app.get(&path, &theirs.key).send().await.unwrap(),
        403,
        "wrong_workspace",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn addresses_not_seen_within_the_retention_are_forgotten() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let now = time::OffsetDateTime::now_utc();
    let flush = noxus_server::store::KeyUsageFlush {
        key_id: member.key_id.clone().into(),
        workspace_id: app.workspace_id.clone().into(),
        addresses: vec![
            ("198.51.100.1".to_owned(), now - time::Duration::days(100)),
            ("198.51.100.2".to_owned(), now - time::Duration::days(10)),
            ("2001:db8:1:2::/64".to_owned(), now),
        ],
        last_used: None,
        hours: Vec::new(),
    };
    app.state.store().record_usage(&[flush], 100).await.unwrap();
    assert_eq!(stored_addresses(&app, &member.key_id).await, 3);
    noxus_server::usage::prune(app.state.store(), 90).await;
    assert_eq!(
        stored_address_list(&app, &member.key_id).await,
        vec!["2001:db8:1:2::/64", "198.51.100.2"]
    );
    app.stop().await;
}

#[tokio::test]
async fn the_store_evicts_the_least_recently_seen_addresses_beyond_the_bound() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let now = time::OffsetDateTime::now_utc();
    let at = |minutes: i64| now - time::Duration::minutes(minutes);
    let flush = |addresses: Vec<(&str, time::OffsetDateTime)>| noxus_server::store::KeyUsageFlush {
        key_id: member.key_id.clone().into(),
        workspace_id: app.workspace_id.clone().into(),
        addresses: addresses
            .into_iter()
            .map(|(a, t)| (a.to_owned(), t))
            .collect(),
        last_used: None,
        hours: Vec::new(),
    };
    let store = app.state.store();
    store
        .record_usage(
            &[flush(vec![
                ("10.0.0.1", at(50)),
                ("10.0.0.2", at(40)),
                ("10.0.0.3", at(30)),
            ])],
            3,
        )
        .await
        .unwrap();
    // 10.0.0.1 is seen again: 10.0.0.2 is now the least recently seen.
    store
        .record_usage(
            &[flush(vec![("10.0.0.1", at(20)), ("10.0.0.4", at(10))])],
            3,
        )
        .await
        .unwrap();
    assert_eq!(
        stored_address_list(&app, &member.key_id).await,
        vec!["10.0.0.4", "10.0.0.1", "10.0.0.3"]
    );
    let (first, total) = store
        .key_addresses(&member.key_id.as_str().into(), 1, 1)
        .await
        .unwrap();
    assert_eq!(
        (first[0].addr.as_str(), total),
        ("10.0.0.1", 3),
        "pages too"
    );
    app.stop().await;
}

/// Creating and revoking keys cannot grow the keys table forever: keys that
/// stopped working before the usage retention leave it (the audit log keeps
/// their story); live ones and recently dead ones stay.
#[tokio::test]
async fn keys_dead_for_longer_than_the_retention_are_pruned() {
    let app = TestApp::spawn().await;
    let now = time::OffsetDateTime::now_utc();
    let expired = |days: i64| noxus_testkit::KeyOptions {
        expires_at: Some(now - time::Duration::days(days)),
        ..Default::default()
    };
    let (_, long_dead) = app
        .issue_key(&app.workspace_id, &app.owner.id, expired(100))
        .await;
    let (_, recently_dead) = app
        .issue_key(&app.workspace_id, &app.owner.id, expired(10))
        .await;
    noxus_server::usage::prune(app.state.store(), 90).await;
    let store = app.state.store();
    assert!(store
        .key(
            &app.workspace_id.as_str().into(),
            &long_dead.as_str().into()
        )
        .await
        .unwrap()
        .is_none());
    assert!(store
        .key(
            &app.workspace_id.as_str().into(),
            &recently_dead.as_str().into()
        )
        .await
        .unwrap()
        .is_some());
    assert!(store
        .key(
            &app.workspace_id.as_str().into(),
            &app.owner.key_id.as_str().into()
        )
        .await
        .unwrap()
        .is_some());
    let log = store
        .audit_log(&app.organization_id.as_str().into(), None, 100)
        .await
        .unwrap();
    assert!(
        log.iter().any(|r| r.target_id == long_dead),
        "the audit log keeps it"
    );
    app.stop().await;
}
