//! The OpenAPI document is generated from the router, covers every route,
//! documents every error an operation can answer, and states the bounds the
//! server enforces (tests/schemathesis fuzzes the rest).

use noxus_testkit::TestApp;
use serde_json::{json, Value};

use crate::helpers::{assert_error, json_ok};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn document(app: &TestApp) -> Value {
    json_ok(app.http.get(app.url("/openapi.json")).send().await.unwrap()).await
}

/// Every operation of the document: (path, method, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) {
                found.push((path.clone(), method.clone(), operation.clone()));
            }
        }
    }
    found
}

#[tokio::test]
async fn openapi_json_describes_every_route_and_the_probes_answer() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("/v1/admin/me", "get"),
        ("/v1/admin/groups", "get"),
        ("/v1/admin/groups", "post"),
        ("/v1/admin/groups/{id}", "delete"),
        ("/v1/admin/groups/{id}", "patch"),
        ("/v1/admin/groups/{id}/api-keys", "get"),
        ("/v1/admin/groups/{id}/api-keys", "post"),
        ("/v1/admin/groups/{id}/api-keys/{key_id}", "get"),
        ("/v1/admin/groups/{id}/api-keys/{key_id}", "delete"),
        ("/v1/admin/groups/{id}/api-keys/{key_id}/rotate", "post"),
        ("/v1/admin/groups/{id}/api-keys/{key_id}/usage", "get"),
        ("/v1/admin/groups/{id}/api-keys/{key_id}/addresses", "get"),
        ("/v1/admin/groups/{id}/usage", "get"),
        ("/v1/admin/groups/{id}/callback-secret", "get"),
        ("/v1/admin/groups/{id}/callback-secret/rotate", "post"),
        ("/v1/admin/groups/{id}/security-webhook", "get"),
        ("/v1/admin/groups/{id}/security-webhook", "put"),
        ("/v1/admin/groups/{id}/security-webhook", "delete"),
        ("/v1/admin/audit", "get"),
        ("/v1/admin/users", "get"),
        ("/v1/admin/users/{id}", "patch"),
        ("/v1/admin/users/{id}/sessions", "delete"),
        ("/v1/workflows", "get"),
        ("/v1/workflows", "post"),
        ("/v1/workflows/import", "post"),
        ("/v1/workflows/{id}", "get"),
        ("/v1/workflows/{id}", "patch"),
        ("/v1/workflows/{id}", "delete"),
        ("/v1/workflows/{id}/versions", "get"),
        ("/v1/workflows/{id}/versions", "post"),
        ("/v1/workflows/{id}/versions/{version_id}", "patch"),
        ("/v1/workflows/{id}/runs", "get"),
        ("/v1/workflows/{id}/runs", "post"),
        ("/v1/workflows/{id}/runs/sync", "post"),
        ("/v1/workflows/{wid}/runs/{rid}", "get"),
        ("/v1/workflows/{wid}/run/{rid}", "get"),
        ("/v1/runs/{id}/events", "get"),
        ("/v1/runs/{id}/stop", "post"),
        ("/v1/runs/{id}", "delete"),
        ("/v1/runs/bulk/delete", "post"),
        ("/v1/runs/{id}/data", "get"),
        ("/v1/runs/{id}/io/{node_id}", "get"),
        ("/v1/runs/{id}/callback", "get"),
        ("/v1/runs/search", "post"),
        ("/v1/keys/leaks", "post"),
        ("/v1/nodes", "get"),
        ("/v1/models/llms", "get"),
        ("/v1/models/llms/presets", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ];
    for (path, method) in expected {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is documented"
        );
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        expected.len(),
        "no undocumented extras and nothing missing"
    );
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());

    // Every documented route is really served (not a 404 or 405).
    for (path, method) in expected {
        let concrete = path
            .replace("{id}", "00000000-0000-0000-0000-000000000000")
            .replace("{key_id}", "x")
            .replace("{version_id}", "y");
        let response = app
            .http
            .request(method.to_uppercase().parse().unwrap(), app.url(&concrete))
            .header("X-API-Key", &app.owner_key)
            .send()
            .await
            .unwrap();
        let error: Option<serde_json::Value> = response.json().await.ok();
        let code = error
            .as_ref()
            .and_then(|e| e["code"].as_str())
            .unwrap_or("");
        assert_ne!(code, "method_not_allowed", "{method} {path}");
        if let Some(detail) = error.as_ref().and_then(|e| e["detail"].as_str()) {
            assert!(!detail.starts_with("There is no route"), "{method} {path}");
        }
    }

    let health = json_ok(app.http.get(app.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(health["status"], "ok");
    let ready = json_ok(app.http.get(app.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(ready["status"], "ok");
    // How limits hold: one SQLite process alone, or replicas sharing PostgreSQL.
    let limits = ready["rate_limits"].as_str().unwrap();
    if noxus_testkit::postgres::enabled() {
        assert!(limits.starts_with("cluster-wide (postgresql)"), "{limits}");
    } else {
        assert_eq!(limits, "per process (one process serves this database)");
    }
    assert!(health.get("rate_limits").is_none(), "{health}");
    app.stop().await;
}

/// Whether `response` (of the document) has a JSON body that is, or may
/// be, the error body.
fn is_error_body(response: &Value) -> bool {
    let schema = &response["content"]["application/json"]["schema"];
    let error_body = json!("#/components/schemas/ErrorBody");
    schema["$ref"] == error_body
        || schema["oneOf"]
            .as_array()
            .is_some_and(|choices| choices.iter().any(|c| c["$ref"] == error_body))
}

#[tokio::test]
async fn every_operation_documents_the_errors_it_can_answer_with_the_error_body() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let global_security = doc["security"].as_array().unwrap().clone();
    assert!(!global_security.is_empty(), "a key is needed by default");
    for (path, method, operation) in operations(&doc) {
        let label = format!("{} {path}", method.to_uppercase());
        let needs_key = match operation.get("security") {
            None => true,
            Some(requirements) => requirements
                .as_array()
                .unwrap()
                .iter()
                .any(|r| !r.as_object().unwrap().is_empty()),
        };
        let params = operation["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let located = |place: &str| params.iter().any(|p| p["in"] == place);
        let has_input = operation.get("requestBody").is_some() || located("query");

        let mut required = vec!["503"];
        if needs_key {
            required.extend(["401", "429"]);
        }
        if located("path") {
            required.push("404");
        }
        if operation.get("requestBody").is_some() {
            required.extend(["408", "413"]);
        }
        let responses = operation["responses"].as_object().unwrap();
        for status in required {
            let response = responses
                .get(status)
                .unwrap_or_else(|| panic!("{label} documents {status}"));
            assert!(is_error_body(response), "{label}: {status} is an ErrorBody");
        }
        if has_input {
            assert!(
                ["400", "422"]
                    .iter()
                    .any(|s| responses.get(*s).is_some_and(is_error_body)),
                "{label} takes input, so it documents 422 with the ErrorBody"
            );
        }
        if needs_key || responses.contains_key("429") {
            assert_eq!(
                responses["429"]["headers"]["Retry-After"]["required"], true,
                "{label}: 429 says when to retry"
            );
        }
        // No error answer without its body.
        for (status, response) in responses {
            if status.as_str() >= "400" && path != "/readyz" {
                assert!(is_error_body(response), "{label}: {status} is an ErrorBody");
            }
        }
    }
    app.stop().await;
}

/// `path` with its parameters filled with objects that exist.
fn concrete(path: &str, ids: &[(&str, &str)]) -> String {
    ids.iter().fold(path.to_owned(), |p, (name, id)| {
        p.replace(&format!("{{{name}}}"), id)
    })
}

#[tokio::test]
async fn every_documented_integer_bound_is_the_one_the_server_enforces() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let definition = crate::helpers::input_output_definition();
    let output_node = definition["nodes"][1]["id"].as_str().unwrap().to_owned();
    let workflow = json_ok(
        app.post("/v1/workflows", &app.owner_key)
            .json(&json!({"name": "bounds", "definition": definition}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let workflow_id = workflow["id"].as_str().unwrap();
    // A finished run, for the run routes' parameters.
    let run = json_ok(
        app.post(
            &format!("/v1/workflows/{workflow_id}/runs/sync"),
            &app.owner_key,
        )
        .json(&json!({"input": {"Input 1": "x"}}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(run["status"], "completed", "{run}");
    let run_id = run["id"].as_str().unwrap().to_owned();
    let ids = [
        ("id", app.workspace_id.as_str()),
        ("key_id", app.owner.key_id.as_str()),
    ];
    let mut checked = 0;
    for (path, method, operation) in operations(&doc) {
        let path = if path.starts_with("/v1/workflows/") {
            path.replace("{id}", workflow_id)
        } else if path.starts_with("/v1/runs/") {
            path.replace("{id}", &run_id)
                .replace("{node_id}", &output_node)
        } else {
            concrete(&path, &ids)
        };
        for param in operation["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let schema = &param["schema"];
            if param["in"] != "query" || schema["type"] != "integer" {
                continue;
            }
            let name = param["name"].as_str().unwrap();
            let label = format!("{} {path}?{name}", method.to_uppercase());
            assert_eq!(method, "get", "{label}: only reads take integers");
            let min = schema["minimum"].as_u64().expect("a minimum");
            let max = schema["maximum"].as_u64().expect("a maximum");
            let ask = |value: String| {
                app.get(&format!("{path}?{name}={value}"), &app.owner_key)
                    .send()
            };
            for accepted in [min, max] {
                let response = ask(accepted.to_string()).await.unwrap();
                assert!(
                    response.status().is_success(),
                    "{label}={accepted} is accepted: {}",
                    response.text().await.unwrap()
                );
            }
            let below = if min == 0 {
                "-1".to_owned()
            } else {
                (min - 1).to_string()
            };
            let above = (u128::from(max) + 1).to_string();
            for refused in [below, above, format!("{max}.5"), format!(" {min}")] {
                let error =
                    assert_error(ask(refused.clone()).await.unwrap(), 422, "validation_error")
                        .await;
                assert_eq!(error["field"], name, "{label}={refused:?}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "{checked} integer parameters checked");

    // Bodies: the longest name the document allows is accepted, one more refused.
    let schemas = &doc["components"]["schemas"];
    let max_name = schemas["CreateWorkspace"]["properties"]["name"]["maxLength"]
        .as_u64()
        .unwrap() as usize;
    let create = |name: String| {
        app.post("/v1/admin/groups", &app.owner_key)
            .json(&json!({ "name": name }))
            .send()
    };
    json_ok(create("é".repeat(max_name)).await.unwrap()).await;
    let error = assert_error(
        create(format!(" {}", "é".repeat(max_name))).await.unwrap(),
        422,
        "validation_error",
    )
    .await;
    assert_eq!(error["field"], "name", "surrounding spaces count");
    // The grace period: its maximum is accepted (also written 604800.0, which
    // JSON Schema calls an integer), one more second is not.
    let grace = &schemas["RotateApiKey"]["properties"]["grace_period_seconds"];
    let max_grace = grace["maximum"].as_u64().unwrap();
    let rotate = |key_id: &str, body: Value| {
        app.post(
            &format!(
                "/v1/admin/groups/{}/api-keys/{key_id}/rotate",
                app.workspace_id
            ),
            &app.owner_key,
        )
        .json(&body)
        .send()
    };
    let (_, key_id) = app
        .issue_key(&app.workspace_id, &app.owner.id, Default::default())
        .await;
    for refused in [json!(max_grace + 1), json!(60.5), json!(-1)] {
        let error = assert_error(
            rotate(&key_id, json!({ "grace_period_seconds": refused }))
                .await
                .unwrap(),
            422,
            "validation_error",
        )
        .await;
        assert_eq!(error["field"], "grace_period_seconds", "{refused}");
    }
    json_ok(
        rotate(&key_id, json!({ "grace_period_seconds": max_grace as f64 }))
            .await
            .unwrap(),
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn both_shapes_of_the_workspace_and_key_lists_are_described() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    for path in ["/v1/admin/groups", "/v1/admin/groups/{id}/api-keys"] {
        let schema =
            &doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
        let name = schema["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
        let choices = doc["components"]["schemas"][name]["oneOf"]
            .as_array()
            .unwrap();
        assert_eq!(choices.len(), 2, "{path}");
        assert!(
            choices.iter().any(|c| c["type"] == "array"),
            "{path}: a bare array"
        );
        assert!(
            choices
                .iter()
                .any(|c| c["$ref"].as_str().is_some_and(|r| r.contains("Page"))),
            "{path}: a page"
        );
    }
    // The node types a definition may use are the catalog's.
    let node_types = &doc["components"]["schemas"]["WorkflowNode"]["properties"]["type"]["enum"];
    assert!(node_types.as_array().unwrap().contains(&json!("InputNode")));
    app.stop().await;
}
