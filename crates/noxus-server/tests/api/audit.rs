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
    pool.close().await;
}
