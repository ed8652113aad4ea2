//! The audit log through the API: who did what, when, from where — and no
//! way to change it.

use noxus_api::Role;
use noxus_testkit::TestApp;
use serde_json::{json, Value};

use crate::helpers::{assert_error, json_ok};

#[tokio::test]
async fn key_changes_are_readable_filterable_and_paged() {
    let app = TestApp::spawn().await;
    let keys = format!("/v1/admin/groups/{}/api-keys", app.workspace_id);
    let created = json_ok(
        app.post(&keys, &app.owner_key)
            .json(&json!({"name": "audited"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    json_ok(
        app.delete(&format!("{keys}/{id}"), &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;

    let all: Value = json_ok(
        app.get("/v1/admin/audit", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let entries = all.as_array().unwrap();
    assert_eq!(entries[0]["action"], "api_key.revoke", "newest first");
    assert_eq!(entries[0]["target_id"], id);
    assert_eq!(entries[0]["actor_email"], app.owner.email.as_str());
    assert_eq!(entries[0]["actor_key_id"], app.owner.key_id.as_str());
    assert_eq!(entries[0]["client_addr"], "127.0.0.1");
    assert_eq!(entries[0]["details"]["name"], "audited");
    assert!(entries.iter().any(|e| e["action"] == "platform.bootstrap"));
    assert!(
        !all.to_string().contains(&app.owner_key[6..]),
        "no secret in the log"
    );

    let revokes = json_ok(
        app.get("/v1/admin/audit?action=api_key.revoke", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(revokes.as_array().unwrap().len(), 1);
    let first = entries[0]["id"].as_i64().unwrap();
    let older = json_ok(
        app.get(
            &format!("/v1/admin/audit?before={first}&limit=1"),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(older.as_array().unwrap().len(), 1);
    assert!(older[0]["id"].as_i64().unwrap() < first);
    app.stop().await;
}

#[tokio::test]
async fn only_admins_read_their_workspaces_log_and_tenant_admins_the_organizations() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let mut admin = app.user_with_role(Role::Admin).await;
    let other = app.second_workspace("Other").await;
    // An admin's key made without `permissions` does not manage: no audit log.
    assert_error(
        app.get("/v1/admin/audit", &admin.key).send().await.unwrap(),
        403,
        "insufficient_permissions",
    )
    .await;
    admin.key = app.management_key(&admin, Role::Admin).await;
    assert_error(
        app.get("/v1/admin/audit", &member.key)
            .send()
            .await
            .unwrap(),
        403,
        "insufficient_permissions",
    )
    .await;
    let own = json_ok(app.get("/v1/admin/audit", &admin.key).send().await.unwrap()).await;
    assert!(own
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["workspace_id"] == app.workspace_id.as_str()));
    let refused = app
        .get(
            &format!("/v1/admin/audit?workspace_id={}", other.workspace_id),
            &admin.key,
        )
        .send()
        .await
        .unwrap();
    assert_error(refused, 403, "wrong_workspace").await;
    let theirs = json_ok(
        app.get(
            &format!("/v1/admin/audit?workspace_id={}", other.workspace_id),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert!(theirs
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "workspace.create"));
    assert_error(
        app.get("/v1/admin/audit?limit=0", &app.owner_key)
            .send()
            .await
            .unwrap(),
        422,
        "validation_error",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn the_database_itself_refuses_to_edit_or_delete_audit_rows() {
    if noxus_testkit::postgres::skip_on_postgres(
        "the_database_itself_refuses_to_edit_or_delete_audit_rows",
        "opens the SQLite file; the PostgreSQL store has its own test of the triggers",
    ) {
        return;
    }
    let app = TestApp::spawn().await;
    let dir = app.stop_keep_data().await;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("noxus.db"));
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let update = sqlx::query("UPDATE audit_log SET action = 'nothing'")
        .execute(&pool)
        .await;
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = sqlx::query("DELETE FROM audit_log").execute(&pool).await;
    assert!(delete.unwrap_err().to_string().contains("append-only"));
    let oldest = sqlx::query("DELETE FROM audit_log WHERE id = (SELECT MIN(id) FROM audit_log)")
        .execute(&pool)
        .await;
    assert!(oldest.unwrap_err().to_string().contains("append-only"));
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(rows > 0);
    pool.close().await;
}

async fn create_key(app: &TestApp, name: &str) {
    json_ok(
        app.post(
            &format!("/v1/admin/groups/{}/api-keys", app.workspace_id),
            &app.owner_key,
        )
        .json(&json!({"name": name}))
        .send()
        .await
        .unwrap(),
    )
    .await;
}

async fn audit_rows(app: &TestApp) -> Vec<Value> {
    json_ok(
        app.get("/v1/admin/audit?limit=1000", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await
    .as_array()
    .unwrap()
    .clone()
}

/// The deliberate way out of the append-only log: the old rows land in a
/// verified file, leave the database, and the archive itself is audited.
/// The server keeps running on the same database meanwhile.
#[tokio::test]
async fn an_archive_moves_old_rows_to_a_verified_file_and_audits_itself() {
    if noxus_testkit::postgres::skip_on_postgres(
        "an_archive_moves_old_rows_to_a_verified_file_and_audits_itself",
        "audit archives are SQLite only",
    ) {
        return;
    }
    use sha2::Digest;
    let app = TestApp::spawn().await;
    for i in 0..3 {
        create_key(&app, &format!("old {i}")).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let cutoff = time::OffsetDateTime::now_utc();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    create_key(&app, "new").await;
    let before = audit_rows(&app).await;
    let old_ids: Vec<i64> = before
        .iter()
        .filter(|e| {
            time::OffsetDateTime::parse(
                e["at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
                < cutoff
        })
        .map(|e| e["id"].as_i64().unwrap())
        .rev()
        .collect();
    assert!(old_ids.len() >= 4, "bootstrap and three keys: {old_ids:?}");

    let operator = noxus_server::store::SqliteStore::open(app.data_dir())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit-2026.jsonl");
    let archive = operator
        .archive_audit(
            cutoff,
            &out,
            &noxus_server::store::Actor::system(),
            Some("ops"),
        )
        .await
        .unwrap()
        .expect("rows to archive");
    assert_eq!(archive.rows, old_ids.len() as u64);
    assert_eq!(archive.first_id, old_ids[0]);
    assert_eq!(archive.last_id, *old_ids.last().unwrap());

    // The file: every archived row, oldest first, as the API showed it.
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), archive.sha256);
    let lines: Vec<Value> = String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<i64> = lines.iter().map(|l| l["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, old_ids);
    for line in &lines {
        let shown = before.iter().find(|e| e["id"] == line["id"]).unwrap();
        assert_eq!(line["action"], shown["action"]);
        assert_eq!(line["target_id"], shown["target_id"]);
        assert_eq!(line["details"], shown["details"]);
        assert_eq!(line["created_at"], shown["at"]);
    }

    // The database: old rows gone, newer rows kept, one audit.archive row.
    let after = audit_rows(&app).await;
    assert!(after
        .iter()
        .all(|e| !old_ids.contains(&e["id"].as_i64().unwrap())));
    assert_eq!(after.len(), before.len() - old_ids.len() + 1);
    let archives: Vec<&Value> = after
        .iter()
        .filter(|e| e["action"] == "audit.archive")
        .collect();
    assert_eq!(archives.len(), 1);
    let details = &archives[0]["details"];
    assert_eq!(details["rows"], archive.rows);
    assert_eq!(details["first_id"], archive.first_id);
    assert_eq!(details["last_id"], archive.last_id);
    assert_eq!(details["sha256"], archive.sha256.as_str());
    assert_eq!(details["file"], "audit-2026.jsonl");
    assert_eq!(details["operator"], "ops");
    assert!(after.iter().any(|e| e["details"]["name"] == "new"));

    // Nothing left that old: no file, no row.
    let again = dir.path().join("again.jsonl");
    let none = operator
        .archive_audit(cutoff, &again, &noxus_server::store::Actor::system(), None)
        .await
        .unwrap();
    assert_eq!(none, None);
    assert!(!again.exists());
    // The window is closed again: a plain DELETE is still refused.
    let options =
        sqlx::sqlite::SqliteConnectOptions::new().filename(app.data_dir().join("noxus.db"));
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let delete = sqlx::query("DELETE FROM audit_log").execute(&pool).await;
    assert!(delete.unwrap_err().to_string().contains("append-only"));
    pool.close().await;
    noxus_server::store::Store::close(&operator).await;
    app.stop().await;
}

#[tokio::test]
async fn an_archive_refuses_a_future_date_and_an_existing_file() {
    if noxus_testkit::postgres::skip_on_postgres(
        "an_archive_refuses_a_future_date_and_an_existing_file",
        "audit archives are SQLite only",
    ) {
        return;
    }
    let app = TestApp::spawn().await;
    let operator = noxus_server::store::SqliteStore::open(app.data_dir())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit.jsonl");
    let future = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let refused = operator
        .archive_audit(future, &out, &noxus_server::store::Actor::system(), None)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("in the future"), "{refused}");
    assert!(!out.exists());
    std::fs::write(&out, "keep me").unwrap();
    let refused = operator
        .archive_audit(
            time::OffsetDateTime::now_utc(),
            &out,
            &noxus_server::store::Actor::system(),
            None,
        )
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("already exists"), "{refused}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep me");
    let rows = audit_rows(&app).await;
    assert!(rows.iter().any(|e| e["action"] == "platform.bootstrap"));
    assert!(!rows.iter().any(|e| e["action"] == "audit.archive"));
    noxus_server::store::Store::close(&operator).await;
    app.stop().await;
}
