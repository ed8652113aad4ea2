//! Create → use → revoke / rotate / expire, and rights that follow the
//! owner's current role, each taking effect on the very next request.

use std::time::Duration;

use noxus_api::{Permission, Role};
use noxus_server::store::Actor;
use noxus_testkit::TestApp;
use serde_json::{json, Value};

use crate::helpers::{assert_error, json_ok};

fn keys_path(app: &TestApp) -> String {
    format!("/v1/admin/groups/{}/api-keys", app.workspace_id)
}

async fn create_key(app: &TestApp, by: &str, body: Value) -> Value {
    let response = app
        .post(&keys_path(app), by)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_created_key_is_shown_once_and_works_at_once() {
    let app = TestApp::spawn().await;
    let created = create_key(&app, &app.owner_key, json!({"name": "ci"})).await;
    let secret = created["value"].as_str().unwrap();
    assert_eq!(noxus_api::check_key_format(secret), Ok(()));
    let me = json_ok(app.get("/v1/admin/me", secret).send().await.unwrap()).await;
    assert_eq!(me["id"], created["id"]);
    assert_eq!(me["name"], "ci");
    assert_eq!(me["role"], "owner");
    assert_eq!(me["tenant_admin"], false);
    assert_eq!(
        me["value"],
        format!("{}…{}", &secret[..10], &secret[secret.len() - 4..])
    );

    // Listing and showing never return the secret again.
    let listed = json_ok(
        app.get(&keys_path(&app), &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let text = listed.to_string();
    assert!(!text.contains(secret));
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == created["id"])
        .unwrap()
        .clone();
    assert_eq!(entry["status"], "active");
    assert_eq!(entry["value"], me["value"]);
    let shown = json_ok(
        app.get(
            &format!("{}/{}", keys_path(&app), created["id"].as_str().unwrap()),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert!(!shown.to_string().contains(secret));
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_key_is_refused_on_the_very_next_request() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    // Warm the verified-key cache so that revocation must invalidate it.
    json_ok(app.get("/v1/workflows", &member.key).send().await.unwrap()).await;
    json_ok(app.get("/v1/workflows", &member.key).send().await.unwrap()).await;
    assert!(!app.state.cache().is_empty());

    let revoked = json_ok(
        app.delete(
            &format!("{}/{}", keys_path(&app), member.key_id),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(revoked["status"], "revoked");
    let response = app.get("/v1/workflows", &member.key).send().await.unwrap();
    assert_error(response, 401, "revoked_api_key").await;

    // Revocation is permanent: its owner cannot rotate it back to life.
    let own = create_key(&app, &app.owner_key, json!({"name": "short-lived"})).await;
    let own_path = format!("{}/{}", keys_path(&app), own["id"].as_str().unwrap());
    json_ok(app.delete(&own_path, &app.owner_key).send().await.unwrap()).await;
    let rotate = app
        .post(&format!("{own_path}/rotate"), &app.owner_key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(rotate, 409, "conflict").await;
    app.stop().await;
}

#[tokio::test]
async fn a_rotated_keys_old_value_works_during_the_grace_period_and_is_refused_after() {
    let app = TestApp::spawn().await;
    let old = create_key(
        &app,
        &app.owner_key,
        json!({"name": "deploy", "permissions": ["workflows:read", "models:read"]}),
    )
    .await;
    let old_secret = old["value"].as_str().unwrap().to_owned();
    json_ok(app.get("/v1/workflows", &old_secret).send().await.unwrap()).await;

    let path = format!("{}/{}/rotate", keys_path(&app), old["id"].as_str().unwrap());
    let response = app
        .post(&path, &old_secret)
        .json(&json!({"grace_period_seconds": 2}))
        .send()
        .await
        .unwrap();
    // A key restricted to reads cannot rotate itself (needs keys:write)...
    assert_error(response, 403, "insufficient_permissions").await;
    // ...but its owner's unrestricted key can.
    let rotated = json_ok(
        app.post(&path, &app.owner_key)
            .json(&json!({"grace_period_seconds": 2}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let new_secret = rotated["value"].as_str().unwrap();
    assert_ne!(new_secret, old_secret);
    assert_eq!(rotated["replaces"], old["id"]);
    assert_eq!(rotated["name"], "deploy");
    assert_eq!(
        rotated["permissions"],
        json!(["models:read", "workflows:read"])
    );

    // Both work during the grace period.
    json_ok(app.get("/v1/workflows", &old_secret).send().await.unwrap()).await;
    json_ok(app.get("/v1/workflows", new_secret).send().await.unwrap()).await;
    // Rotating the old one again is refused: rotate the new one instead.
    let again = app
        .post(&path, &app.owner_key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(again, 409, "conflict").await;

    tokio::time::sleep(Duration::from_millis(2300)).await;
    let response = app.get("/v1/workflows", &old_secret).send().await.unwrap();
    let body = assert_error(response, 401, "expired_api_key").await;
    assert!(body["detail"].as_str().unwrap().contains("rotated"));
    json_ok(app.get("/v1/workflows", new_secret).send().await.unwrap()).await;
    app.stop().await;
}

#[tokio::test]
async fn rotating_without_grace_refuses_the_old_key_at_once() {
    let app = TestApp::spawn().await;
    let mut member = app.user_with_role(Role::Member).await;
    // A key that may manage keys (named `keys:write`) rotates itself.
    member.key = app.management_key(&member, Role::Member).await;
    let me = json_ok(app.get("/v1/admin/me", &member.key).send().await.unwrap()).await;
    member.key_id = me["id"].as_str().unwrap().to_owned();
    let path = format!("{}/{}/rotate", keys_path(&app), member.key_id);
    let rotated = json_ok(
        app.post(&path, &member.key)
            .json(&json!({"grace_period_seconds": 0}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(
        app.get("/v1/workflows", &member.key).send().await.unwrap(),
        401,
        "revoked_api_key",
    )
    .await;
    let me = json_ok(
        app.get("/v1/admin/me", rotated["value"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(me["user_id"], member.id.as_str());

    let too_long = app
        .post(
            &format!(
                "{}/{}/rotate",
                keys_path(&app),
                rotated["id"].as_str().unwrap()
            ),
            rotated["value"].as_str().unwrap(),
        )
        .json(&json!({"grace_period_seconds": 604_801}))
        .send()
        .await
        .unwrap();
    let body = assert_error(too_long, 422, "validation_error").await;
    assert_eq!(body["field"], "grace_period_seconds");
    app.stop().await;
}

#[tokio::test]
async fn a_key_with_an_expiry_works_until_then_and_is_refused_after() {
    let app = TestApp::spawn().await;
    let expires = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(1500);
    let expires = expires
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let created = create_key(
        &app,
        &app.owner_key,
        json!({"name": "short", "expires_at": expires}),
    )
    .await;
    let secret = created["value"].as_str().unwrap();
    json_ok(app.get("/v1/workflows", secret).send().await.unwrap()).await;
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_error(
        app.get("/v1/workflows", secret).send().await.unwrap(),
        401,
        "expired_api_key",
    )
    .await;

    let past = app
        .post(&keys_path(&app), &app.owner_key)
        .json(&json!({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_error(past, 422, "validation_error").await;
    let garbage = app
        .post(&keys_path(&app), &app.owner_key)
        .json(&json!({"name": "x", "expires_at": "tomorrow"}))
        .send()
        .await
        .unwrap();
    assert_error(garbage, 422, "validation_error").await;
    app.stop().await;
}

#[tokio::test]
async fn demoting_the_owner_to_viewer_makes_the_keys_writes_403_at_once() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    json_ok(
        app.post("/v1/workflows", &member.key)
            .json(&json!({"name": "before"}))
            .send()
            .await
            .unwrap(),
    )
    .await;

    noxus_server::members::set_role(
        &app.state,
        &Actor::system(),
        &app.workspace_id.as_str().into(),
        &member.id.as_str().into(),
        Role::Viewer,
    )
    .await
    .unwrap();
    let response = app
        .post("/v1/workflows", &member.key)
        .json(&json!({"name": "after"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 403, "insufficient_permissions").await;
    assert_eq!(body["required_permission"], "workflows:write");
    // Reads still work, and /me reports the new role.
    let me = json_ok(app.get("/v1/admin/me", &member.key).send().await.unwrap()).await;
    assert_eq!(me["role"], "viewer");
    assert!(!me["permissions"]
        .as_array()
        .unwrap()
        .contains(&json!("workflows:write")));

    // Promotion applies at once too.
    noxus_server::members::set_role(
        &app.state,
        &Actor::system(),
        &app.workspace_id.as_str().into(),
        &member.id.as_str().into(),
        Role::Member,
    )
    .await
    .unwrap();
    json_ok(
        app.post("/v1/workflows", &member.key)
            .json(&json!({"name": "again"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn removing_the_owner_from_the_workspace_makes_the_key_401() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    json_ok(app.get("/v1/workflows", &member.key).send().await.unwrap()).await;
    noxus_server::members::remove(
        &app.state,
        &Actor::system(),
        &app.workspace_id.as_str().into(),
        &member.id.as_str().into(),
    )
    .await
    .unwrap();
    let body = assert_error(
        app.get("/v1/workflows", &member.key).send().await.unwrap(),
        401,
        "revoked_api_key",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("removed from the workspace"),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_restricted_key_has_only_its_subset_and_never_more_than_its_owner() {
    let app = TestApp::spawn().await;
    let mut member = app.user_with_role(Role::Member).await;
    member.key = app.management_key(&member, Role::Member).await;
    let read_only = create_key(
        &app,
        &member.key,
        json!({"name": "ro", "permissions": ["workflows:read"]}),
    )
    .await;
    let secret = read_only["value"].as_str().unwrap();
    json_ok(app.get("/v1/workflows", secret).send().await.unwrap()).await;
    let write = app
        .post("/v1/workflows", secret)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(write, 403, "insufficient_permissions").await;
    assert!(body["detail"].as_str().unwrap().contains("restricted"));
    let models = app.get("/v1/models/llms", secret).send().await.unwrap();
    assert_error(models, 403, "insufficient_permissions").await;

    // A member cannot mint a key with an admin's permission.
    let escalate = app
        .post(&keys_path(&app), &member.key)
        .json(&json!({"name": "x", "permissions": [Permission::MembersWrite.as_str()]}))
        .send()
        .await
        .unwrap();
    assert_error(escalate, 403, "insufficient_permissions").await;
    // Unknown permission names are a validation error naming the entry.
    let unknown = app
        .post(&keys_path(&app), &member.key)
        .json(&json!({"name": "x", "permissions": ["root"]}))
        .send()
        .await
        .unwrap();
    let body = assert_error(unknown, 422, "validation_error").await;
    assert_eq!(body["field"], "permissions[0]");
    // The restricted read-only key cannot create keys at all.
    let from_restricted = app
        .post(&keys_path(&app), secret)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_error(from_restricted, 403, "insufficient_permissions").await;
    app.stop().await;
}

#[tokio::test]
async fn only_a_tenant_admin_key_can_create_a_tenant_admin_key() {
    let app = TestApp::spawn().await;
    let mut admin = app.user_with_role(Role::Admin).await;
    admin.key = app.management_key(&admin, Role::Admin).await;
    let refused = app
        .post(&keys_path(&app), &admin.key)
        .json(&json!({"name": "x", "tenant_admin": true}))
        .send()
        .await
        .unwrap();
    let body = assert_error(refused, 403, "insufficient_permissions").await;
    assert_eq!(body["required_permission"], "tenant_admin");
    let created = create_key(
        &app,
        &app.owner_key,
        json!({"name": "ops", "tenant_admin": true}),
    )
    .await;
    let me = json_ok(
        app.get("/v1/admin/me", created["value"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(me["tenant_admin"], true);
    app.stop().await;
}

#[tokio::test]
async fn members_see_and_manage_only_their_own_keys_admins_see_all() {
    let app = TestApp::spawn().await;
    let alice = app.user_with_role(Role::Member).await;
    let bob = app.user_with_role(Role::Member).await;
    let mut admin = app.user_with_role(Role::Admin).await;
    admin.key = app.management_key(&admin, Role::Admin).await;

    let listed = json_ok(app.get(&keys_path(&app), &alice.key).send().await.unwrap()).await;
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![alice.key_id.as_str()]);

    // Bob's key is invisible to Alice (404), and she cannot revoke it.
    let path = format!("{}/{}", keys_path(&app), bob.key_id);
    assert_error(
        app.get(&path, &alice.key).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.delete(&path, &alice.key).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    json_ok(app.get("/v1/workflows", &bob.key).send().await.unwrap()).await;

    let all = json_ok(app.get(&keys_path(&app), &admin.key).send().await.unwrap()).await;
    assert!(all.as_array().unwrap().len() >= 4);
    json_ok(app.delete(&path, &admin.key).send().await.unwrap()).await;
    assert_error(
        app.get("/v1/workflows", &bob.key).send().await.unwrap(),
        401,
        "revoked_api_key",
    )
    .await;

    // A viewer has no keys:read in the API, but may still revoke the key it uses.
    let viewer = app.user_with_role(Role::Viewer).await;
    assert_error(
        app.get(&keys_path(&app), &viewer.key).send().await.unwrap(),
        403,
        "insufficient_permissions",
    )
    .await;
    let own = format!("{}/{}", keys_path(&app), viewer.key_id);
    json_ok(app.delete(&own, &viewer.key).send().await.unwrap()).await;
    assert_error(
        app.get("/v1/workflows", &viewer.key).send().await.unwrap(),
        401,
        "revoked_api_key",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn every_key_change_lands_in_the_audit_log_with_actor_and_address() {
    let app = TestApp::spawn().await;
    let created = create_key(&app, &app.owner_key, json!({"name": "audited"})).await;
    let id = created["id"].as_str().unwrap();
    json_ok(
        app.post(&format!("{}/{id}/rotate", keys_path(&app)), &app.owner_key)
            .json(&json!({"grace_period_seconds": 60}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    json_ok(
        app.delete(&format!("{}/{id}", keys_path(&app)), &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;

    let log = app
        .state
        .store()
        .audit_log(
            &app.organization_id.as_str().into(),
            Some(&app.workspace_id.as_str().into()),
            100,
        )
        .await
        .unwrap();
    for action in ["api_key.create", "api_key.rotate", "api_key.revoke"] {
        let row = log
            .iter()
            .find(|r| r.action == action && r.target_id == id)
            .unwrap_or_else(|| panic!("{action} is logged"));
        assert_eq!(
            row.actor_user_id.as_ref().map(|id| id.as_str()),
            Some(app.owner.id.as_str())
        );
        assert_eq!(
            row.actor_key_id.as_ref().map(|id| id.as_str()),
            Some(app.owner.key_id.as_str())
        );
        assert_eq!(row.client_addr.as_deref(), Some("127.0.0.1"));
    }
    app.stop().await;
}

/// Item 9 of the security review: a key could create keys without bound.
/// Live keys are counted per user and per workspace in the write's own
/// transaction; revoked keys and rotated ones free their place.
#[tokio::test]
async fn keys_are_created_within_their_quotas_and_listed_a_page_at_a_time() {
    let app = TestApp::spawn_with(|c| {
        c.key_quotas = noxus_server::store::KeyQuotas {
            per_user: 3,
            per_workspace: 5,
        };
    })
    .await;
    // The owner has the first key; two more fit, the fourth is refused.
    let mut ids = Vec::new();
    for n in 0..2 {
        let created = create_key(&app, &app.owner_key, json!({"name": format!("k{n}")})).await;
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let over = app
        .post(&keys_path(&app), &app.owner_key)
        .json(&json!({"name": "one too many"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(over, 409, "conflict").await;
    assert!(
        body["detail"].as_str().unwrap().contains("3 live keys"),
        "{body}"
    );
    // Revoking one frees a place; rotating does not take one.
    json_ok(
        app.delete(&format!("{}/{}", keys_path(&app), ids[0]), &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    create_key(&app, &app.owner_key, json!({"name": "after a revocation"})).await;
    json_ok(
        app.post(
            &format!("{}/{}/rotate", keys_path(&app), ids[1]),
            &app.owner_key,
        )
        .json(&json!({"grace_period_seconds": 3600}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    // The workspace's own quota: a member's two keys fill it up to 5.
    let mut member = app.user_with_role(Role::Member).await;
    member.key = app.management_key(&member, Role::Member).await;
    let refused = app
        .post(&keys_path(&app), &member.key)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(refused, 409, "conflict").await;
    assert!(
        body["detail"].as_str().unwrap().contains("5 live keys"),
        "{body}"
    );

    // Pages, newest first, with the total.
    let page = json_ok(
        app.get(
            &format!("{}?page=1&size=2", keys_path(&app)),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let total = page["total"].as_u64().unwrap();
    assert_eq!(total, 7, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["pages"].as_u64().unwrap(), total.div_ceil(2));
    let all: Vec<Value> = json_ok(
        app.get(&keys_path(&app), &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await
    .as_array()
    .unwrap()
    .clone();
    assert_eq!(page["items"][0]["id"], all[0]["id"], "newest first");
    let last = json_ok(
        app.get(
            &format!("{}?page={}&size=2", keys_path(&app), page["pages"]),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        last["items"].as_array().unwrap().len() as u64,
        total - (total - 1) / 2 * 2
    );
    let bad = app
        .get(&format!("{}?size=1000", keys_path(&app)), &app.owner_key)
        .send()
        .await
        .unwrap();
    assert_error(bad, 422, "validation_error").await;
    app.stop().await;
}
