//! `/v1/admin/me`, workspaces (groups), and the catalog routes.

use noxus_api::Role;
use noxus_testkit::TestApp;
use serde_json::json;

use crate::helpers::{assert_error, json_ok};

#[tokio::test]
async fn me_works_for_every_valid_key_and_reports_its_rights() {
    let app = TestApp::spawn().await;
    for role in Role::ALL {
        let user = app.user_with_role(role).await;
        let me = json_ok(app.get("/v1/admin/me", &user.key).send().await.unwrap()).await;
        assert_eq!(me["role"], role.as_str());
        assert_eq!(me["tenant_admin"], false);
        assert_eq!(me["workspace_id"], app.workspace_id.as_str());
        assert_eq!(me["workspace_name"], "Default");
        assert_eq!(me["user_email"], user.email.as_str());
        let permissions: Vec<String> = serde_json::from_value(me["permissions"].clone()).unwrap();
        // A key made without `permissions` has its owner's role, management excepted.
        let expected: Vec<String> = role
            .permissions()
            .iter()
            .filter(|p| !p.is_management())
            .map(|p| p.to_string())
            .collect();
        assert_eq!(permissions, expected);
        assert!(me["value"].as_str().unwrap().starts_with(&user.key[..10]));
        assert!(!me.to_string().contains(&user.key));
    }
    app.stop().await;
}

#[tokio::test]
async fn workspaces_list_as_a_bare_array_or_an_envelope_when_paged() {
    let app = TestApp::spawn().await;
    for name in ["Two", "Three"] {
        let created = app
            .post("/v1/admin/groups", &app.owner_key)
            .json(&json!({"name": name, "description": null}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }
    let bare = json_ok(
        app.get("/v1/admin/groups", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let names: Vec<&str> = bare
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["Default", "Two", "Three"]);
    let paged = json_ok(
        app.get("/v1/admin/groups?page=1&size=2", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(paged["items"].as_array().unwrap().len(), 2);
    assert_eq!(paged["total"], 3);
    assert_eq!(paged["pages"], 2);
    app.stop().await;
}

#[tokio::test]
async fn a_tenant_admin_creates_a_workspace_and_a_working_key_in_it() {
    let app = TestApp::spawn().await;
    let workspace = json_ok(
        app.post("/v1/admin/groups", &app.owner_key)
            .json(&json!({"name": "Team", "description": "the team"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(workspace["description"], "the team");
    let id = workspace["id"].as_str().unwrap();
    // What the official client's Workspace.add_api_key sends.
    let key = app
        .post(&format!("/v1/admin/groups/{id}/api-keys"), &app.owner_key)
        .json(&json!({"name": "team key", "tenant_admin": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(key.status(), 201);
    let key: serde_json::Value = key.json().await.unwrap();
    let me = json_ok(
        app.get("/v1/admin/me", key["value"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(me["workspace_id"], id);
    assert_eq!(me["role"], "owner");

    let duplicate = app
        .post("/v1/admin/groups", &app.owner_key)
        .json(&json!({"name": "Team"}))
        .send()
        .await
        .unwrap();
    assert_error(duplicate, 409, "conflict").await;

    let deleted = json_ok(
        app.delete(&format!("/v1/admin/groups/{id}"), &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(deleted["deleted"], true);
    // The workspace's keys died with it.
    assert_error(
        app.get("/v1/admin/me", key["value"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
        401,
        "invalid_api_key",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn workspace_administration_needs_a_tenant_admin_key() {
    let app = TestApp::spawn().await;
    let owner_without_admin_key = app.user_with_role(Role::Owner).await;
    let refused = app
        .post("/v1/admin/groups", &owner_without_admin_key.key)
        .json(&json!({"name": "X"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(refused, 403, "insufficient_permissions").await;
    assert_eq!(body["required_permission"], "org:workspaces:write");
    // A key cannot delete the workspace it belongs to.
    let own = app
        .delete(
            &format!("/v1/admin/groups/{}", app.workspace_id),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap();
    assert_error(own, 409, "conflict").await;
    app.stop().await;
}

#[tokio::test]
async fn the_catalog_serves_nodes_models_and_presets_as_bare_arrays() {
    let app = TestApp::spawn().await;
    let viewer = app.user_with_role(Role::Viewer).await;
    let nodes = json_ok(app.get("/v1/nodes", &viewer.key).send().await.unwrap()).await;
    let types: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"InputNode") && types.contains(&"OutputNode"));
    assert!(nodes
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n.get("config_endpoint").is_some()));
    let models = json_ok(
        app.get("/v1/models/llms", &viewer.key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(!models.as_array().unwrap().is_empty());
    let presets = json_ok(
        app.get("/v1/models/llms/presets", &viewer.key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(!presets.as_array().unwrap().is_empty());
    // Byte-stable: the official client memoises the catalog by its hash.
    let a = app
        .get("/v1/nodes", &viewer.key)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let b = app
        .get("/v1/nodes", &viewer.key)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(a, b);
    app.stop().await;
}

#[tokio::test]
async fn an_operator_catalog_file_replaces_the_models() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("catalog.json");
    std::fs::write(
        &file,
        r#"{"models": [{"id": "local-llama", "name": "Llama (local)"}]}"#,
    )
    .unwrap();
    let app = TestApp::spawn_with(|c| c.catalog_file = Some(file.clone())).await;
    let models = json_ok(
        app.get("/v1/models/llms", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        models,
        json!([{"id": "local-llama", "name": "Llama (local)"}])
    );
    // Nodes were not in the file: the built-in ones stay.
    let nodes = json_ok(app.get("/v1/nodes", &app.owner_key).send().await.unwrap()).await;
    assert!(nodes.to_string().contains("InputNode"));
    app.stop().await;

    std::fs::write(&file, r#"{"nodes": [{"type": "X"}]}"#).unwrap();
    let mut config = noxus_server::Config::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.catalog_file = Some(file);
    let err = noxus_server::Application::build(config)
        .await
        .expect_err("a bad catalog fails the start");
    assert!(format!("{err:#}").contains("nodes[0]"), "{err:#}");
}
