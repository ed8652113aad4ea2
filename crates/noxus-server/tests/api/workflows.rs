//! `/v1/workflows` as the official client uses it: definitions stored
//! verbatim, pages, type filter, PATCH with `force=False|True`, versions.

use noxus_api::Role;
use noxus_testkit::TestApp;
use serde_json::json;

use crate::helpers::{assert_error, input_output_definition, json_ok};

#[tokio::test]
async fn a_workflow_round_trips_verbatim_through_save_get_update_and_delete() {
    let app = TestApp::spawn().await;
    let mut definition = input_output_definition();
    // Fields the server does not know must survive untouched.
    definition["nodes"][0]["connector_config"]["inputs"] =
        json!([{"name": "input", "keys": ["a", "b"], "custom": {"x": 1.5}}]);
    definition["extra"] = json!({"kept": true});
    let handler = definition["nodes"][1]["id"].clone();
    let created = app
        .post("/v1/workflows", &app.owner_key)
        .json(&json!({"name": "example-1234", "type": "flow", "definition": definition, "error_handler": handler}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    assert_eq!(created["definition"], definition);
    assert_eq!(created["flow_version"], "v1");
    assert_eq!(created["group_id"], app.workspace_id.as_str());
    assert_eq!(created["error_handler"], handler);
    let id = created["id"].as_str().unwrap();

    let fetched = json_ok(
        app.get(&format!("/v1/workflows/{id}"), &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(fetched["definition"], definition);
    assert_eq!(fetched["name"], "example-1234");

    let updated = json_ok(
        app.patch(&format!("/v1/workflows/{id}?force=False"), &app.owner_key)
            .json(&json!({"name": "renamed", "type": "flow", "definition": definition}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(updated["name"], "renamed");
    assert_eq!(updated["definition"], definition);

    let deleted = json_ok(
        app.delete(&format!("/v1/workflows/{id}"), &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(deleted, json!({"deleted": true, "id": id}));
    assert_error(
        app.get(&format!("/v1/workflows/{id}"), &app.owner_key)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.delete(&format!("/v1/workflows/{id}"), &app.owner_key)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn creating_by_name_alone_gives_an_empty_flow() {
    let app = TestApp::spawn().await;
    let created = json_ok(
        app.post("/v1/workflows", &app.owner_key)
            .json(&json!({"name": "Test Workflow"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(created["type"], "flow");
    assert_eq!(
        created["definition"],
        json!({"flow_version": "v1", "nodes": [], "edges": []})
    );
    app.stop().await;
}

#[tokio::test]
async fn lists_are_paged_filtered_by_type_and_in_the_items_envelope() {
    let app = TestApp::spawn().await;
    for i in 0..5 {
        json_ok(
            app.post("/v1/workflows", &app.owner_key)
                .json(&json!({"name": format!("flow {i}")}))
                .send()
                .await
                .unwrap(),
        )
        .await;
    }
    json_ok(
        app.post("/v1/workflows", &app.owner_key)
            .json(&json!({"name": "agent", "type": "agent_flow"}))
            .send()
            .await
            .unwrap(),
    )
    .await;

    // Exactly what the official client sends.
    let page = json_ok(
        app.get(
            "/v1/workflows?page=2&page_size=2&type=flow&size=2",
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(page["total"], 5);
    assert_eq!(page["page"], 2);
    assert_eq!(page["size"], 2);
    assert_eq!(page["pages"], 3);
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["flow 2", "flow 3"]);

    let agents = json_ok(
        app.get("/v1/workflows?type=agent_flow", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(agents["total"], 1);
    assert_eq!(agents["items"][0]["type"], "agent_flow");
    let all = json_ok(
        app.get("/v1/workflows", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(all["total"], 6);
    assert_eq!(all["size"], 10);
    let beyond = json_ok(
        app.get("/v1/workflows?page=9", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(beyond["items"], json!([]));
    // A page past the end has no rows to carry the count: counted apart.
    assert_eq!(beyond["total"], 6);
    assert_eq!(beyond["pages"], 1);
    app.stop().await;
}

#[tokio::test]
async fn changing_a_workflows_type_needs_force_true() {
    let app = TestApp::spawn().await;
    let created = json_ok(
        app.post("/v1/workflows", &app.owner_key)
            .json(&json!({"name": "w"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let body = json!({"name": "w", "type": "agent_flow"});
    let refused = app
        .patch(&format!("/v1/workflows/{id}?force=False"), &app.owner_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let error = assert_error(refused, 409, "conflict").await;
    assert!(error["detail"].as_str().unwrap().contains("force=true"));
    let forced = json_ok(
        app.patch(&format!("/v1/workflows/{id}?force=True"), &app.owner_key)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(forced["type"], "agent_flow");
    app.stop().await;
}

#[tokio::test]
async fn versions_are_saved_listed_as_a_bare_array_and_updated() {
    let app = TestApp::spawn().await;
    let created = json_ok(
        app.post("/v1/workflows", &app.owner_key)
            .json(&json!({"name": "w"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let definition = input_output_definition();
    let saved = app
        .post(&format!("/v1/workflows/{id}/versions"), &app.owner_key)
        .json(&json!({"name": "v1", "description": null, "definition": definition}))
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 201);
    let saved: serde_json::Value = saved.json().await.unwrap();
    assert!(uuid::Uuid::parse_str(saved["id"].as_str().unwrap()).is_ok());
    assert_eq!(saved["created_by"], app.owner.id.as_str());
    assert!(time::OffsetDateTime::parse(
        saved["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339
    )
    .is_ok());

    let listed = json_ok(
        app.get(&format!("/v1/workflows/{id}/versions"), &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["definition"], definition);

    let vid = saved["id"].as_str().unwrap();
    let updated = json_ok(
        app.patch(
            &format!("/v1/workflows/{id}/versions/{vid}"),
            &app.owner_key,
        )
        .json(&json!({"name": "v1 final", "description": "ready", "definition": definition}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(updated["name"], "v1 final");
    assert_eq!(updated["description"], "ready");
    app.stop().await;
}

#[tokio::test]
async fn a_viewer_reads_workflows_but_cannot_change_them() {
    let app = TestApp::spawn().await;
    let viewer = app.user_with_role(Role::Viewer).await;
    let created = json_ok(
        app.post("/v1/workflows", &app.owner_key)
            .json(&json!({"name": "w"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    json_ok(
        app.get(&format!("/v1/workflows/{id}"), &viewer.key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    json_ok(app.get("/v1/workflows", &viewer.key).send().await.unwrap()).await;
    for response in [
        app.patch(&format!("/v1/workflows/{id}"), &viewer.key)
            .json(&json!({"name": "x"}))
            .send()
            .await
            .unwrap(),
        app.delete(&format!("/v1/workflows/{id}"), &viewer.key)
            .send()
            .await
            .unwrap(),
        app.post(&format!("/v1/workflows/{id}/versions"), &viewer.key)
            .json(&json!({"name": "v", "definition": input_output_definition()}))
            .send()
            .await
            .unwrap(),
    ] {
        assert_error(response, 403, "insufficient_permissions").await;
    }
    let still = json_ok(
        app.get(&format!("/v1/workflows/{id}"), &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(still["name"], "w");
    app.stop().await;
}
