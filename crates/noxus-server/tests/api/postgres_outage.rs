//! PostgreSQL taken away and given back (its connections cut by a TCP
//! forwarder between the platform and the real server, which other tests
//! share and which must keep running): a key that is not in the cache gets
//! 503 `service_unavailable` with `Retry-After` (fail closed), a cached key
//! keeps working for at most the cache's TTL, `/readyz` says 503, and when
//! the database is back everything works again within 5 s, without a
//! restart.

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
    let ttl = Duration::from_secs(3);
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

    // The cached key still works (its entry is younger than the TTL)…
    assert_eq!(status(&app, "/v1/nodes", &owner).await, 200);
    assert!(
        cached_at.elapsed() < ttl,
        "the machine was too slow to tell"
    );
    // …a key that is not cached is refused: never let through unchecked.
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
    // Once the TTL has passed, the cached key needs the database too.
    tokio::time::sleep(ttl.saturating_sub(cached_at.elapsed()) + Duration::from_millis(100)).await;
    assert_eq!(status(&app, "/v1/nodes", &owner).await, 503);

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
