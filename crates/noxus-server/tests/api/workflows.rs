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

/// A definition of the official client's shape whose stored JSON is
/// `padding` bytes larger than an empty flow's.
fn padded(padding: usize) -> serde_json::Value {
    json!({"flow_version": "v1", "nodes": [], "edges": [], "padding": "x".repeat(padding)})
}

fn stored_len(definition: &serde_json::Value) -> u64 {
    serde_json::to_string(definition).unwrap().len() as u64
}

async fn create(app: &TestApp, key: &str, body: serde_json::Value) -> reqwest::Response {
    app.post("/v1/workflows", key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_workspace_holds_at_most_its_quota_of_workflows() {
    let app = TestApp::spawn_with(|c| c.max_workflows_per_workspace = 3).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let created =
            json_ok(create(&app, &app.owner_key, json!({"name": format!("w{i}")})).await).await;
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let refused = assert_error(
        create(&app, &app.owner_key, json!({"name": "one too many"})).await,
        409,
        "conflict",
    )
    .await;
    let detail = refused["detail"].as_str().unwrap();
    assert!(
        detail.contains("3 workflows") && detail.contains("delete"),
        "names the limit and how to make room: {detail}"
    );
    // The quota is per workspace.
    let other = app.second_workspace("Other").await;
    json_ok(create(&app, &other.key, json!({"name": "elsewhere"})).await).await;
    // Deleting one makes room for one.
    json_ok(
        app.delete(&format!("/v1/workflows/{}", ids[0]), &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    json_ok(create(&app, &app.owner_key, json!({"name": "again"})).await).await;
    assert_error(
        create(&app, &app.owner_key, json!({"name": "still too many"})).await,
        409,
        "conflict",
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creations_never_overshoot_the_workflow_quota() {
    let app = TestApp::spawn_with(|c| {
        c.max_workflows_per_workspace = 5;
        c.key_rate_limit = None;
    })
    .await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let request = app
            .post("/v1/workflows", &app.owner_key)
            .json(&json!({"name": format!("racer {i}")}));
        tasks.push(tokio::spawn(async move {
            request.send().await.map(|r| r.status().as_u16())
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap().unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        15,
        "{statuses:?}"
    );
    let all = json_ok(
        app.get("/v1/workflows", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(all["total"], 5);
    app.stop().await;
}

#[tokio::test]
async fn a_workflow_holds_at_most_its_quota_of_versions() {
    let app = TestApp::spawn_with(|c| c.max_versions_per_workflow = 2).await;
    let created = json_ok(create(&app, &app.owner_key, json!({"name": "w"})).await).await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/v1/workflows/{id}/versions");
    let version = json!({"name": "v", "definition": input_output_definition()});
    for _ in 0..2 {
        let saved = app
            .post(&path, &app.owner_key)
            .json(&version)
            .send()
            .await
            .unwrap();
        assert_eq!(saved.status(), 201);
    }
    let refused = assert_error(
        app.post(&path, &app.owner_key)
            .json(&version)
            .send()
            .await
            .unwrap(),
        409,
        "conflict",
    )
    .await;
    assert!(
        refused["detail"].as_str().unwrap().contains("2 versions"),
        "{refused}"
    );
    // Another workflow has its own quota.
    let second = json_ok(create(&app, &app.owner_key, json!({"name": "w2"})).await).await;
    let saved = app
        .post(
            &format!("/v1/workflows/{}/versions", second["id"].as_str().unwrap()),
            &app.owner_key,
        )
        .json(&version)
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 201);
    let listed = json_ok(app.get(&path, &app.owner_key).send().await.unwrap()).await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn a_workspace_holds_at_most_its_quota_of_definition_bytes() {
    let big = padded(1000);
    let size = stored_len(&big);
    // Room for three big definitions and a little more.
    let limit = 3 * size + 10;
    let app = TestApp::spawn_with(|c| c.max_definition_bytes_per_workspace = limit).await;
    let a = json_ok(
        create(
            &app,
            &app.owner_key,
            json!({"name": "a", "definition": big}),
        )
        .await,
    )
    .await;
    let a_id = a["id"].as_str().unwrap().to_owned();
    let version = json_ok(
        app.post(&format!("/v1/workflows/{a_id}/versions"), &app.owner_key)
            .json(&json!({"name": "v", "definition": big}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let b = json_ok(
        create(
            &app,
            &app.owner_key,
            json!({"name": "b", "definition": big}),
        )
        .await,
    )
    .await;
    let b_id = b["id"].as_str().unwrap().to_owned();

    // Full: even a small new workflow does not fit.
    let refused = assert_error(
        create(
            &app,
            &app.owner_key,
            json!({"name": "c", "definition": padded(10)}),
        )
        .await,
        409,
        "conflict",
    )
    .await;
    let detail = refused["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("{limit} bytes")), "{detail}");
    // Growing a workflow or a version is refused too …
    assert_error(
        app.patch(&format!("/v1/workflows/{b_id}"), &app.owner_key)
            .json(&json!({"name": "b", "definition": padded(1100)}))
            .send()
            .await
            .unwrap(),
        409,
        "conflict",
    )
    .await;
    assert_error(
        app.patch(
            &format!(
                "/v1/workflows/{a_id}/versions/{}",
                version["id"].as_str().unwrap()
            ),
            &app.owner_key,
        )
        .json(&json!({"name": "v", "definition": padded(2000)}))
        .send()
        .await
        .unwrap(),
        409,
        "conflict",
    )
    .await;
    // … but shrinking one always works, and frees room.
    json_ok(
        app.patch(&format!("/v1/workflows/{b_id}"), &app.owner_key)
            .json(&json!({"name": "b", "definition": padded(10)}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    json_ok(
        create(
            &app,
            &app.owner_key,
            json!({"name": "c", "definition": padded(10)}),
        )
        .await,
    )
    .await;
    // Deleting a workflow frees its definition and its versions'.
    json_ok(
        app.delete(&format!("/v1/workflows/{a_id}"), &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    json_ok(
        create(
            &app,
            &app.owner_key,
            json!({"name": "d", "definition": big}),
        )
        .await,
    )
    .await;
    json_ok(
        create(
            &app,
            &app.owner_key,
            json!({"name": "e", "definition": big}),
        )
        .await,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn versions_are_listed_a_page_at_a_time_without_definitions_unless_asked() {
    let app = TestApp::spawn().await;
    let created = json_ok(create(&app, &app.owner_key, json!({"name": "w"})).await).await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/v1/workflows/{id}/versions");
    let definition = input_output_definition();
    for i in 0..5 {
        let saved = app
            .post(&path, &app.owner_key)
            .json(&json!({"name": format!("v{i}"), "definition": definition}))
            .send()
            .await
            .unwrap();
        assert_eq!(saved.status(), 201);
    }
    let page = json_ok(
        app.get(&format!("{path}?page=2&size=2"), &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(page["total"], 5);
    assert_eq!(page["page"], 2);
    assert_eq!(page["size"], 2);
    assert_eq!(page["pages"], 3);
    let items = page["items"].as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["v2", "v3"], "oldest first");
    assert!(
        items.iter().all(|v| v.get("definition").is_none()),
        "{page}"
    );
    assert!(items
        .iter()
        .all(|v| v["created_at"].is_string() && v["id"].is_string()));

    let with = json_ok(
        app.get(
            &format!("{path}?size=2&include_definition=true"),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(with["items"][0]["definition"], definition);
    let default_size = json_ok(
        app.get(&format!("{path}?page=1"), &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(default_size["size"], 50);
    assert_eq!(default_size["items"].as_array().unwrap().len(), 5);
    let alias = json_ok(
        app.get(&format!("{path}?page_size=3"), &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(alias["size"], 3);
    let beyond = json_ok(
        app.get(&format!("{path}?page=9&size=2"), &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(beyond["items"], json!([]));
    assert_eq!(beyond["total"], 5);

    // What the official client's list_versions reads: a bare array with definitions.
    let bare = json_ok(app.get(&path, &app.owner_key).send().await.unwrap()).await;
    assert_eq!(bare.as_array().unwrap().len(), 5);
    assert_eq!(bare[4]["definition"], definition);

    for bad in ["size=101", "page=0", "include_definition=maybe"] {
        assert_error(
            app.get(&format!("{path}?{bad}"), &app.owner_key)
                .send()
                .await
                .unwrap(),
            422,
            "validation_error",
        )
        .await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_workflow_exported_as_json_imports_as_a_new_workflow() {
    let app = TestApp::spawn().await;
    let definition = input_output_definition();
    let handler = definition["nodes"][1]["id"].clone();
    let original = json_ok(
        app.post("/v1/workflows", &app.owner_key)
            .json(&json!({"name": "exported", "type": "agent_flow", "definition": definition, "error_handler": handler}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let exported = json_ok(
        app.get(
            &format!("/v1/workflows/{}", original["id"].as_str().unwrap()),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;

    // The object GET answers, and its JSON text (what the official client's
    // `import_` sends), both import as new workflows.
    for body in [
        json!({"definition": exported}),
        json!({"definition": exported.to_string(), "version": "auto"}),
    ] {
        let response = app
            .post(
                "/v1/workflows/import?mode=clone&activate=False&dry_run=False",
                &app.owner_key,
            )
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let imported: serde_json::Value = response.json().await.unwrap();
        let imported = &imported.as_array().unwrap()[..];
        assert_eq!(imported.len(), 1);
        let workflow = &imported[0];
        assert_ne!(workflow["id"], exported["id"], "a new workflow");
        for field in ["name", "type", "definition", "error_handler", "group_id"] {
            assert_eq!(workflow[field], exported[field], "{field}");
        }
    }

    // A dry run checks and writes nothing.
    let dry = app
        .post("/v1/workflows/import?dry_run=true", &app.owner_key)
        .json(&json!({ "definition": exported }))
        .send()
        .await
        .unwrap();
    assert_eq!(dry.status(), 200);
    assert_eq!(dry.json::<serde_json::Value>().await.unwrap(), json!([]));
    let list = json_ok(
        app.get("/v1/workflows?type=agent_flow", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list["total"], 3, "the original and two imports");
    app.stop().await;
}

#[tokio::test]
async fn an_import_it_cannot_read_is_a_422_naming_why_never_a_405() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            "",
            json!({"definition": {"name": "x"}, "version": "v4"}),
            "version",
        ),
        (
            "?mode=replace",
            json!({"definition": {"name": "x"}}),
            "mode",
        ),
        (
            "?dry_run=maybe",
            json!({"definition": {"name": "x"}}),
            "dry_run",
        ),
        ("", json!({"definition": "bmFtZQ=="}), "definition"),
        ("", json!({"definition": [1]}), "definition"),
        ("", json!({"definition": {"type": "flow"}}), "definition"),
        ("", json!({"definition": {"name": " "}}), "definition.name"),
        (
            "",
            json!({"definition": {"name": "x", "definition": {"nodes": [{"id": "n", "type": "Nope"}], "edges": []}}}),
            "definition.definition.nodes[0].type",
        ),
        (
            "",
            json!({"definition": {"name": "x", "owner": "me"}}),
            "definition.owner",
        ),
    ];
    for (query, body, field) in cases {
        let response = app
            .post(&format!("/v1/workflows/import{query}"), &app.owner_key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let error = assert_error(response, 422, "validation_error").await;
        assert_eq!(error["field"], field, "{body}");
    }
    let viewer = app.user_with_role(Role::Viewer).await;
    let refused = app
        .post("/v1/workflows/import", &viewer.key)
        .json(&json!({"definition": {"name": "x"}}))
        .send()
        .await
        .unwrap();
    assert_error(refused, 403, "insufficient_permissions").await;
    let list = json_ok(
        app.get("/v1/workflows", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list["total"], 0, "nothing was imported");
    app.stop().await;
}
