//! No path from a lesser credential to a greater one: a secret goes only to
//! its owner, a key mints nothing greater than itself, a restriction
//! restricts organization actions too. Each test performs the attack a
//! security review found against a server started for it.

use noxus_api::{Permission, Role};
use noxus_testkit::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, json_ok, Browser};

fn keys_path(app: &TestApp, workspace_id: &str) -> String {
    let _ = app;
    format!("/v1/admin/groups/{workspace_id}/api-keys")
}

async fn create(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    app.post(&keys_path(app, &app.workspace_id), key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn created(app: &TestApp, key: &str, body: Value) -> Value {
    json_ok(create(app, key, body).await).await
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Item 1: a workspace admin cannot rotate the owner's tenant-admin key and
/// walk away with its successor's secret — through the API or the dashboard.
#[tokio::test]
async fn an_admin_cannot_obtain_the_owners_key_by_rotating_it() {
    let app = TestApp::spawn().await;
    let mut admin = app.user_with_role(Role::Admin).await;
    admin.key = app.management_key(&admin, Role::Admin).await;
    let owners_key = format!(
        "{}/{}",
        keys_path(&app, &app.workspace_id),
        app.owner.key_id
    );
    let response = app
        .post(&format!("{owners_key}/rotate"), &admin.key)
        .json(&json!({"grace_period_seconds": 604800}))
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 403, "insufficient_permissions").await;
    assert_eq!(body["required_permission"], "owner");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("revoke it instead"),
        "{body}"
    );
    assert!(!body.to_string().contains("noxus_"), "no secret handed out");
    // Nothing changed: the owner's key is not rotated, and still works.
    let shown = json_ok(app.get(&owners_key, &app.owner_key).send().await.unwrap()).await;
    assert_eq!(shown["status"], "active");
    assert!(shown["replaced_by"].is_null());
    // The admin may still revoke it (revoking hands out nothing).
    // Not done here: the owner's key is needed below.

    // The dashboard refuses it too: no Rotate link on another's key, 403 on the page and the form.
    let mut browser = Browser::new(&app);
    browser.login(&admin).await;
    let keys_page = format!(
        "/settings/organization/workspaces/{}/api-keys",
        app.workspace_id
    );
    let page = browser.get(&keys_page).await;
    let row_start = page
        .body
        .find(&format!("data-key-id=\"{}\"", app.owner.key_id))
        .unwrap();
    let row = &page.body[row_start..row_start + page.body[row_start..].find("</tr>").unwrap()];
    assert!(!row.contains("rotate-link"), "{row}");
    assert!(row.contains("revoke-link"), "admins may revoke: {row}");
    let rotate = format!("{keys_page}/{}/rotate", app.owner.key_id);
    assert_eq!(browser.get(&rotate).await.status, StatusCode::FORBIDDEN);
    let csrf = browser.csrf().await;
    let forged = browser
        .post(
            &rotate,
            &[
                ("grace", "604800"),
                ("nonce", "abcdefghijabcdefghijabcdefghij12"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(!forged.body.contains("noxus_"));
    let shown = json_ok(app.get(&owners_key, &app.owner_key).send().await.unwrap()).await;
    assert_eq!(shown["status"], "active");
    app.stop().await;
}

/// Item 1: tenant-admin keys are minted only by organization admins, for
/// themselves; an owner of a workspace who is not an organization admin
/// cannot mint one, even with every workspace permission named.
#[tokio::test]
async fn only_organization_admins_mint_tenant_admin_keys() {
    let app = TestApp::spawn().await;
    let mut owner = app.user_with_role(Role::Owner).await;
    owner.key = app.management_key(&owner, Role::Owner).await;
    let refused = create(&app, &owner.key, json!({"name": "x", "tenant_admin": true})).await;
    let body = assert_error(refused, 403, "insufficient_permissions").await;
    assert_eq!(body["required_permission"], "tenant_admin");
    // The organization admin's tenant-admin key mints one, owned by themself.
    let minted = created(
        &app,
        &app.owner_key,
        json!({"name": "ops", "tenant_admin": true}),
    )
    .await;
    assert_eq!(minted["user_id"], app.owner.id.as_str());
    assert_eq!(minted["tenant_admin"], true);
    app.stop().await;
}

/// Item 2: the review's attack — a key restricted to `keys:write` and
/// expiring in 7 days minted a child with the owner's full role, no expiry
/// and 100 000 requests per second.
#[tokio::test]
async fn a_restricted_expiring_key_mints_nothing_greater_than_itself() {
    let app = TestApp::spawn().await;
    let in_a_week = time::OffsetDateTime::now_utc() + time::Duration::days(7);
    let parent = created(
        &app,
        &app.owner_key,
        json!({"name": "deployer", "permissions": ["keys:write"], "expires_at": rfc3339(in_a_week)}),
    )
    .await;
    let parent_secret = parent["value"].as_str().unwrap();

    // Omitted fields default to the parent's own bounds, not to the role.
    let child = created(&app, parent_secret, json!({"name": "child"})).await;
    assert_eq!(child["permissions"], json!(["keys:write"]));
    assert_eq!(child["expires_at"], parent["expires_at"]);
    let me = json_ok(
        app.get("/v1/admin/me", child["value"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(me["permissions"], json!(["keys:write"]));
    assert_eq!(me["tenant_admin"], false);

    // Asking for more is refused, each with the field or permission named.
    let wider = create(
        &app,
        parent_secret,
        json!({"name": "x", "permissions": ["keys:write", "workflows:write"]}),
    )
    .await;
    let body = assert_error(wider, 403, "insufficient_permissions").await;
    assert_eq!(body["required_permission"], "workflows:write");
    let later = create(
        &app,
        parent_secret,
        json!({"name": "x", "expires_at": rfc3339(in_a_week + time::Duration::days(365))}),
    )
    .await;
    let body = assert_error(later, 422, "validation_error").await;
    assert_eq!(body["field"], "expires_at");
    let faster = create(
        &app,
        parent_secret,
        json!({"name": "x", "rate_limit": {"per_second": 100000}}),
    )
    .await;
    let body = assert_error(faster, 422, "validation_error").await;
    assert_eq!(body["field"], "rate_limit.per_second");
    let tenant = create(
        &app,
        parent_secret,
        json!({"name": "x", "tenant_admin": true}),
    )
    .await;
    assert_error(tenant, 403, "insufficient_permissions").await;
    app.stop().await;
}

/// Item 2: rotating keeps the original expiry instant, so a key cannot
/// rotate itself to live forever.
#[tokio::test]
async fn a_key_cannot_push_its_expiry_forward_by_rotating_itself() {
    let app = TestApp::spawn().await;
    let expires = time::OffsetDateTime::now_utc() + time::Duration::days(2);
    let key = created(
        &app,
        &app.owner_key,
        json!({"name": "self-rotator", "permissions": ["keys:write", "keys:read"], "expires_at": rfc3339(expires)}),
    )
    .await;
    let secret = key["value"].as_str().unwrap();
    let path = format!(
        "{}/{}/rotate",
        keys_path(&app, &app.workspace_id),
        key["id"].as_str().unwrap()
    );
    let mut current = (secret.to_owned(), path);
    for _ in 0..3 {
        let rotated = json_ok(
            app.post(&current.1, &current.0)
                .json(&json!({"grace_period_seconds": 0}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            rotated["expires_at"], key["expires_at"],
            "the successor keeps the original instant"
        );
        current = (
            rotated["value"].as_str().unwrap().to_owned(),
            format!(
                "{}/{}/rotate",
                keys_path(&app, &app.workspace_id),
                rotated["id"].as_str().unwrap()
            ),
        );
    }
    app.stop().await;
}

/// Item 2: a key rotates only keys no greater than itself, even its owner's.
#[tokio::test]
async fn a_lesser_key_cannot_rotate_a_greater_key_of_the_same_owner() {
    let app = TestApp::spawn().await;
    let lesser = created(
        &app,
        &app.owner_key,
        json!({"name": "lesser", "permissions": ["keys:write", "keys:read"]}),
    )
    .await;
    // The owner's first key is an unrestricted tenant-admin key.
    let response = app
        .post(
            &format!(
                "{}/{}/rotate",
                keys_path(&app, &app.workspace_id),
                app.owner.key_id
            ),
            lesser["value"].as_str().unwrap(),
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(response, 403, "insufficient_permissions").await;
    app.stop().await;
}

/// Item 2 (decision): keys made without `permissions` do not manage keys —
/// as GitHub's tokens cannot create tokens. They must name `keys:write`.
#[tokio::test]
async fn a_key_made_without_permissions_does_not_manage_keys() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let refused = create(&app, &member.key, json!({"name": "x"})).await;
    let body = assert_error(refused, 403, "insufficient_permissions").await;
    assert_eq!(body["required_permission"], "keys:write");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("created without naming it"),
        "{body}"
    );
    // It still reads and writes workflows, as its owner's role allows.
    json_ok(
        app.post("/v1/workflows", &member.key)
            .json(&json!({"name": "still works"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    app.stop().await;
}

/// Item 2: raising a rate limit above the server's default needs
/// `workspace:write`, and nothing goes above the operator's ceiling.
#[tokio::test]
async fn raising_rate_limits_needs_workspace_write_and_stays_under_the_ceiling() {
    let app = TestApp::spawn_with(|config| {
        config.max_rate_limit_per_key = noxus_server::rate_limit::RateLimit {
            per_second: 1000,
            burst: 2000,
        };
    })
    .await;
    let group = format!("/v1/admin/groups/{}", app.workspace_id);
    let over = app
        .patch(&group, &app.owner_key)
        .json(&json!({"rate_limit": {"per_second": 5000}}))
        .send()
        .await
        .unwrap();
    let body = assert_error(over, 422, "validation_error").await;
    assert!(body["detail"].as_str().unwrap().contains("ceiling"));
    json_ok(
        app.patch(&group, &app.owner_key)
            .json(&json!({"rate_limit": {"per_second": 800, "burst": 1600}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    // A key that may create keys but not change the workspace: its children
    // stay at or under the server's default (100/s).
    let keys_only = created(
        &app,
        &app.owner_key,
        json!({"name": "keys only", "permissions": ["keys:write"]}),
    )
    .await;
    let refused = create(
        &app,
        keys_only["value"].as_str().unwrap(),
        json!({"name": "fast", "rate_limit": {"per_second": 500}}),
    )
    .await;
    let body = assert_error(refused, 403, "insufficient_permissions").await;
    assert_eq!(body["required_permission"], "workspace:write");
    let with_write = created(
        &app,
        &app.owner_key,
        json!({"name": "keys and workspace", "permissions": ["keys:write", "workspace:write"]}),
    )
    .await;
    let fast = created(
        &app,
        with_write["value"].as_str().unwrap(),
        json!({"name": "fast", "rate_limit": {"per_second": 500}}),
    )
    .await;
    assert_eq!(fast["id"].as_str().map(str::len), Some(36));
    app.stop().await;
}

/// Item 3: a tenant-admin key restricted to `models:read` could still
/// create and delete workspaces, read the organization's audit log and
/// mint unrestricted keys in other workspaces.
#[tokio::test]
async fn a_restriction_restricts_organization_actions_too() {
    let app = TestApp::spawn().await;
    let other = app.second_workspace("Other").await;
    let narrow = created(
        &app,
        &app.owner_key,
        json!({"name": "models only", "tenant_admin": true, "permissions": ["models:read"]}),
    )
    .await;
    let key = narrow["value"].as_str().unwrap();
    json_ok(app.get("/v1/models/llms", key).send().await.unwrap()).await;

    let create_ws = app
        .post("/v1/admin/groups", key)
        .json(&json!({"name": "New"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(create_ws, 403, "insufficient_permissions").await;
    assert_eq!(body["required_permission"], "org:workspaces:write");
    let delete_ws = app
        .delete(&format!("/v1/admin/groups/{}", other.workspace_id), key)
        .send()
        .await
        .unwrap();
    assert_error(delete_ws, 403, "insufficient_permissions").await;
    let audit = app.get("/v1/admin/audit", key).send().await.unwrap();
    assert_error(audit, 403, "insufficient_permissions").await;
    let mint_elsewhere = app
        .post(&keys_path(&app, &other.workspace_id), key)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(mint_elsewhere, 403, "insufficient_permissions").await;
    assert_eq!(body["required_permission"], "org:keys:write");
    let users = app.get("/v1/admin/users", key).send().await.unwrap();
    assert_error(users, 403, "insufficient_permissions").await;
    // The other workspace still exists.
    let listed = json_ok(
        app.get("/v1/admin/groups", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(listed.to_string().contains(&other.workspace_id));
    app.stop().await;
}

/// Item 3: in another workspace a tenant-admin key acts with its owner's
/// role there narrowed by its own restriction.
#[tokio::test]
async fn elsewhere_a_tenant_key_has_its_owners_role_there_narrowed_by_its_restriction() {
    let app = TestApp::spawn().await;
    let other = app.second_workspace("Other").await;
    let scoped = created(
        &app,
        &app.owner_key,
        json!({"name": "scoped", "tenant_admin": true,
               "permissions": ["org:keys:write", "keys:write", "workflows:read"]}),
    )
    .await;
    let key = scoped["value"].as_str().unwrap();
    let path = keys_path(&app, &other.workspace_id);
    // Unrestricted in the other workspace? No: the child inherits the restriction.
    let child = json_ok(
        app.post(&path, key)
            .json(&json!({"name": "child"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(child["workspace_id"], other.workspace_id.as_str());
    assert_eq!(
        child["permissions"],
        json!(["workflows:read", "keys:write"])
    );
    let wider = app
        .post(&path, key)
        .json(&json!({"name": "x", "permissions": ["workflows:write"]}))
        .send()
        .await
        .unwrap();
    let body = assert_error(wider, 403, "insufficient_permissions").await;
    assert_eq!(body["required_permission"], "workflows:write");
    app.stop().await;
}

/// The official client's admin calls keep working with the first key.
#[tokio::test]
async fn the_first_key_still_administers_the_organization() {
    let app = TestApp::spawn().await;
    let me = json_ok(
        app.get("/v1/admin/me", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let permissions: Vec<Permission> = serde_json::from_value(me["permissions"].clone()).unwrap();
    assert_eq!(permissions, Permission::ALL);
    let workspace = json_ok(
        app.post("/v1/admin/groups", &app.owner_key)
            .json(&json!({"name": "compat", "description": null}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = workspace["id"].as_str().unwrap();
    let key = json_ok(
        app.post(&keys_path(&app, id), &app.owner_key)
            .json(&json!({"name": "compat key", "tenant_admin": false}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(key["permissions"].is_null(), "follows its owner's role");
    json_ok(
        app.get("/v1/workflows", key["value"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    json_ok(
        app.delete(&format!("/v1/admin/groups/{id}"), &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    app.stop().await;
}

/// Responses that carry a secret are never stored by a cache (item 15).
#[tokio::test]
async fn responses_with_a_secret_are_not_cacheable() {
    let app = TestApp::spawn().await;
    let response = create(&app, &app.owner_key, json!({"name": "cached?"})).await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    let rotated = app
        .post(
            &format!(
                "{}/{}/rotate",
                keys_path(&app, &app.workspace_id),
                body["id"].as_str().unwrap()
            ),
            &app.owner_key,
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 201);
    assert_eq!(rotated.headers()["cache-control"], "no-store");
    app.stop().await;
}
