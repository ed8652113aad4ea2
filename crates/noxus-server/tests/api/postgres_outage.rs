//! PostgreSQL taken away and given back (its connections cut by a TCP
//! forwarder between the platform and the real server, which other tests
//! share and which must keep running): a key that is not in the cache gets
//! 503 `service_unavailable` with `Retry-After` (fail closed), a cached key
//! too, long before the cache's TTL (the event listener's connection went
//! with the others, so the process cleared its cache and checks every key
//! in the database), `/readyz` says 503, and when the database is back
//! everything works again within 5 s, without a restart.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use noxus_server::store::PostgresOptions;
use noxus_testkit::postgres::fresh_database_or_skip;
use noxus_testkit::proxy::CuttableProxy;
use noxus_testkit::TestApp;

use crate::helpers::{assert_error, json_ok};

/// The host and port of a `postgres://[user@]host:port/db` URL.
fn server_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").expect("a URL").1;
    let authority = rest.split('/').next().expect("an authority");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    host_port
        .to_socket_addrs()
        .expect("a resolvable host")
        .next()
        .expect("an address")
}

/// `url` with its host and port replaced by `addr`.
fn through(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let user = authority
        .rsplit_once('@')
        .map_or(String::new(), |(u, _)| format!("{u}@"));
    format!("{scheme}://{user}{addr}/{path}")
}

async fn status(app: &TestApp, path: &str, key: &str) -> u16 {
    app.get(path, key).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn with_postgres_cut_away_the_platform_fails_closed_and_recovers_within_5_s() {
    let test =
        "postgres_outage::with_postgres_cut_away_the_platform_fails_closed_and_recovers_within_5_s";
    let Some(database) = fresh_database_or_skip(test).await else {
        return;
    };
    let proxy = CuttableProxy::start(server_of(database.url()))
        .await
        .unwrap();
    let url = through(database.url(), proxy.addr());
    let ttl = Duration::from_secs(60);
    let app = TestApp::spawn_with(|c| {
        let mut options = PostgresOptions::new(url);
        options.connect_timeout = Duration::from_secs(1);
        c.postgres = Some(options);
        c.key_cache_ttl = ttl;
    })
    .await;
    assert!(app.state.config().postgres.is_some());
    let owner = app.owner_key.clone();
    let ws = app.workspace_id.clone();
    // A key made now and not used yet: not in the cache.
    let created = json_ok(
        app.post(&format!("/v1/admin/groups/{ws}/api-keys"), &owner)
            .json(&serde_json::json!({"name": "not cached"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let uncached = created["value"].as_str().unwrap().to_owned();
    // The owner's key is in the cache from this request on.
    assert_eq!(status(&app, "/v1/nodes", &owner).await, 200);
    let cached_at = Instant::now();

    proxy.cut();

    // A key that is not cached is refused: never let through unchecked.
    let refused = app.get("/v1/nodes", &uncached).send().await.unwrap();
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_error(refused, 503, "service_unavailable").await;
    // Not ready.
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    // The cached key needs the database too, long before its entry's TTL:
    // the event listener lost its connection with the others, so the cache
    // was cleared and is bypassed until the listener is back (changes made
    // elsewhere meanwhile would go unheard).
    while status(&app, "/v1/nodes", &owner).await != 503 {
        assert!(
            cached_at.elapsed() < Duration::from_secs(5),
            "the cached key is still served without the database"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(cached_at.elapsed() < ttl);

    // The database is back: within 5 s everything works again, no restart.
    proxy.restore();
    let back = Instant::now();
    loop {
        let keys_work = status(&app, "/v1/nodes", &uncached).await == 200
            && status(&app, "/v1/nodes", &owner).await == 200;
        let ready = app
            .http
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
            == 200;
        if keys_work && ready {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "not recovered within 5 s (keys {keys_work}, ready {ready})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "recovered {} ms after the database came back",
        back.elapsed().as_millis()
    );
    app.stop().await;
    database.drop_database().await;
}

/// Only the event listener goes through the forwarder
/// (`PostgresOptions::listen_url`), and the key cache's TTL is a minute:
/// while the listener is cut away, this process cannot hear changes made by
/// other processes, so it clears its cache and looks every key up in the
/// database (which still answers) until the listener is back. A key revoked
/// elsewhere meanwhile is refused by the very next request — not served
/// from the cache until its TTL ends.
#[tokio::test]
async fn with_its_listener_cut_away_a_process_checks_every_key_in_the_database() {
    use noxus_server::store::prelude::*;
    use noxus_server::store::Actor;
    let test =
        "postgres_outage::with_its_listener_cut_away_a_process_checks_every_key_in_the_database";
    let Some(database) = fresh_database_or_skip(test).await else {
        return;
    };
    let proxy = CuttableProxy::start(server_of(database.url()))
        .await
        .unwrap();
    let listen_url = through(database.url(), proxy.addr());
    let url = database.url().to_owned();
    let app = TestApp::spawn_with(|c| {
        let mut options = PostgresOptions::new(url);
        options.listen_url = Some(listen_url.into());
        options.connect_timeout = Duration::from_secs(1);
        c.postgres = Some(options);
        c.key_cache_ttl = Duration::from_secs(60);
    })
    .await;
    // Another process on the same database: its changes reach the app only
    // through the app's listener.
    let other = noxus_server::store::PostgresStore::open(&PostgresOptions::new(database.url()))
        .await
        .unwrap();
    let ws = app.workspace_id.clone();
    let owner_id = app.owner.id.clone();
    let mut keys = Vec::new();
    for _ in 0..3 {
        let (key, id) = app
            .issue_key(&ws, &owner_id, noxus_testkit::KeyOptions::default())
            .await;
        // Cached from this request on.
        assert_eq!(status(&app, "/v1/nodes", &key).await, 200);
        keys.push((key, id));
    }
    let revoke = |id: &str| {
        let id = id.to_owned();
        let other = other.clone();
        let ws = ws.clone();
        async move {
            other
                .revoke_key(&Actor::system(), &ws.as_str().into(), &id.as_str().into())
                .await
                .unwrap();
        }
    };
    let ready = || async {
        app.http
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(ready().await, 200);

    proxy.cut();
    // The listener notices its connection closed: /readyz says 503 (and
    // the cache was cleared before it could).
    let cut = Instant::now();
    while ready().await != 503 {
        assert!(cut.elapsed() < Duration::from_secs(5), "/readyz still 200");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Revoked by the other process, unheard: refused at once all the same.
    let (revoked_key, revoked_id) = &keys[0];
    revoke(revoked_id).await;
    assert_error(
        app.get("/v1/nodes", revoked_key).send().await.unwrap(),
        401,
        "revoked_api_key",
    )
    .await;
    // The database answers: the other keys work (checked there each time).
    for _ in 0..3 {
        assert_eq!(status(&app, "/v1/nodes", &keys[1].0).await, 200);
    }
    let (revoked_key, revoked_id) = &keys[1];
    revoke(revoked_id).await;
    assert_eq!(status(&app, "/v1/nodes", revoked_key).await, 401);

    // The listener is back within 5 s; then changes are heard again.
    proxy.restore();
    let back = Instant::now();
    while ready().await != 200 {
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "the listener did not come back within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (key, id) = &keys[2];
    assert_eq!(status(&app, "/v1/nodes", key).await, 200);
    revoke(id).await;
    let revoked = Instant::now();
    while status(&app, "/v1/nodes", key).await != 401 {
        assert!(
            revoked.elapsed() < Duration::from_secs(5),
            "a revocation after the listener came back was not heard"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    other.close().await;
    app.stop().await;
    database.drop_database().await;
}
