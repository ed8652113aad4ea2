//! When the database does not answer, the platform fails closed: a request
//! that needs the database gets 503 `service_unavailable` with
//! `Retry-After` (never "allowed because we could not check", never a 500),
//! nothing counted is lost, and service resumes by itself when the database
//! is back. On SQLite the outage is another process holding the write lock
//! past the busy timeout (a backup tool, a stuck `sqlite3` shell); the
//! PostgreSQL outage (connections cut) is in `postgres_outage.rs`.

use std::time::{Duration, Instant};

use noxus_testkit::TestApp;
use sqlx::{Connection, SqliteConnection};

use crate::helpers::{assert_error, json_ok};

#[tokio::test]
async fn a_locked_sqlite_database_answers_503_with_retry_after_then_recovers_losing_nothing() {
    if noxus_testkit::postgres::skip_on_postgres(
        "database_outage::a_locked_sqlite_database_answers_503_with_retry_after_then_recovers_losing_nothing",
        "it locks the SQLite file",
    ) {
        return;
    }
    let app = TestApp::spawn().await;
    let key = app.owner_key.clone();
    let ws = app.workspace_id.clone();
    let created = json_ok(
        app.post(&format!("/v1/admin/groups/{ws}/api-keys"), &key)
            .json(&serde_json::json!({"name": "victim"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let victim_id = created["id"].as_str().unwrap().to_owned();
    // Counted requests that the flusher must still write after the outage.
    for _ in 0..5 {
        json_ok(app.get("/v1/nodes", &key).send().await.unwrap()).await;
    }

    // Another process takes SQLite's write lock and keeps it.
    let db = app.data_dir().join("noxus.db");
    let mut holder = SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .unwrap();

    // A change cannot be written: 503, Retry-After, the machine code, a
    // sentence; not a 500.
    let revoke = app
        .delete(&format!("/v1/admin/groups/{ws}/api-keys/{victim_id}"), &key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        revoke
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body = assert_error(revoke, 503, "service_unavailable").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("cannot reach its database"),
        "{body}"
    );

    // The database is back: the same call works at once, without a restart.
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    let back = Instant::now();
    let revoked = json_ok(
        app.delete(&format!("/v1/admin/groups/{ws}/api-keys/{victim_id}"), &key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(revoked["status"], "revoked", "{revoked}");
    assert!(back.elapsed() < Duration::from_secs(5));
    drop(holder);

    // The usage counted before and during the outage was kept for the
    // next flush, not dropped: every request above is in the hourly counts.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let usage = json_ok(
            app.get(
                &format!("/v1/admin/groups/{ws}/api-keys/{}/usage", app.owner.key_id),
                &key,
            )
            .send()
            .await
            .unwrap(),
        )
        .await;
        let requests = usage["totals"]["requests"].as_u64().unwrap_or(0);
        // 1 create + 5 nodes + 2 revokes (+ the usage reads themselves).
        if requests >= 8 {
            break;
        }
        assert!(Instant::now() < deadline, "usage lost: {usage}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.stop().await;
}
