//! Bad input of every kind gets a 4xx with a clear `detail`: never a 5xx,
//! a panic, or a changed database.

use noxus_testkit::TestApp;
use reqwest::header::HeaderValue;
use serde_json::json;

use crate::helpers::{assert_error, json_ok};

#[tokio::test]
async fn malformed_keys_are_refused_with_a_clear_401() {
    let app = TestApp::spawn().await;
    let mut wrong_checksum = app.owner_key.clone();
    wrong_checksum.replace_range(
        8..9,
        if &wrong_checksum[8..9] == "a" {
            "b"
        } else {
            "a"
        },
    );
    let cases: Vec<(&str, HeaderValue, &str)> = vec![
        ("empty", HeaderValue::from_static(""), "missing_api_key"),
        (
            "whitespace",
            HeaderValue::from_static("    "),
            "missing_api_key",
        ),
        (
            "inner whitespace",
            HeaderValue::from_static("noxus_abc def"),
            "invalid_api_key",
        ),
        (
            "10 KB",
            HeaderValue::from_str(&format!("noxus_{}", "a".repeat(10 * 1024))).unwrap(),
            "invalid_api_key",
        ),
        (
            "non-ASCII",
            HeaderValue::from_bytes("noxus_ключ".as_bytes()).unwrap(),
            "invalid_api_key",
        ),
        (
            "wrong checksum",
            HeaderValue::from_str(&wrong_checksum).unwrap(),
            "invalid_api_key",
        ),
        (
            "other vendor",
            HeaderValue::from_static("sk_live_abcdef"),
            "invalid_api_key",
        ),
    ];
    for (name, value, code) in cases {
        let response = app
            .http
            .get(app.url("/v1/workflows"))
            .header("X-API-Key", value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{name}");
        let body = assert_error(response, 401, code).await;
        assert!(
            body["detail"].as_str().unwrap().len() < 300,
            "{name}: detail stays short"
        );
    }
    // Bearer variants.
    for (value, code) in [
        ("Bearer ", "missing_api_key"),
        ("Basic dXNlcjpwYXNz", "missing_api_key"),
        ("Bearer noxus_x", "invalid_api_key"),
    ] {
        let response = app
            .http
            .get(app.url("/v1/workflows"))
            .header("Authorization", value)
            .send()
            .await
            .unwrap();
        assert_error(response, 401, code).await;
    }
    let bearer = app
        .http
        .get(app.url("/v1/admin/me"))
        .bearer_auth(&app.owner_key)
        .send()
        .await
        .unwrap();
    json_ok(bearer).await;
    app.stop().await;
}

#[tokio::test]
async fn bad_bodies_are_422_naming_the_problem() {
    let app = TestApp::spawn().await;
    let cases: Vec<(&str, &str, Option<&str>, &str)> = vec![
        ("invalid JSON", "{\"name\": ", None, "not valid JSON"),
        ("trailing garbage", "{\"name\": \"a\"} x", None, "not valid JSON"),
        ("empty", "", None, "empty"),
        ("array", "[1,2]", None, "Invalid request body"),
        ("wrong type", "{\"name\": 1}", Some("name"), "invalid type"),
        ("unknown field", "{\"name\": \"a\", \"owner\": \"me\"}", Some("owner"), "unknown field"),
        ("missing field", "{}", None, "missing field `name`"),
        ("empty name", "{\"name\": \"   \"}", Some("name"), "must not be empty"),
        ("bad type", "{\"name\": \"a\", \"type\": \"pipeline\"}", Some("type"), "flow"),
        ("definition not object", "{\"name\": \"a\", \"definition\": 3}", Some("definition"), "object"),
        ("no edges", "{\"name\": \"a\", \"definition\": {\"nodes\": []}}", Some("definition.edges"), "required"),
        ("unknown node type", "{\"name\": \"a\", \"definition\": {\"nodes\": [{\"id\": \"n\", \"type\": \"Nope\"}], \"edges\": []}}", Some("definition.nodes[0].type"), "unknown node type"),
        ("bad error handler", "{\"name\": \"a\", \"error_handler\": \"\"}", Some("error_handler"), "UUID"),
        ("control characters", "{\"name\": \"a\\u0000b\"}", Some("name"), "control"),
    ];
    for (name, body, field, needle) in cases {
        let response = app
            .post("/v1/workflows", &app.owner_key)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let error = assert_error(response, 422, "validation_error").await;
        let detail = error["detail"].as_str().unwrap();
        assert!(detail.contains(needle), "{name}: {detail}");
        if let Some(field) = field {
            assert_eq!(error["field"], field, "{name}");
        }
    }
    let list = json_ok(
        app.get("/v1/workflows", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list["total"], 0, "nothing was created");
    app.stop().await;
}

#[tokio::test]
async fn a_10_mb_body_is_413_and_the_server_keeps_serving() {
    let app = TestApp::spawn().await;
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(10 * 1024 * 1024));
    let response = app
        .post("/v1/workflows", &app.owner_key)
        .body(huge)
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 413, "payload_too_large").await;
    assert!(body["detail"].as_str().unwrap().contains("limit"));
    json_ok(
        app.get("/v1/workflows", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn bad_query_parameters_are_422_naming_the_parameter() {
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
    for (path, field) in [
        ("/v1/workflows?page=abc", "page"),
        ("/v1/workflows?page=0", "page"),
        ("/v1/workflows?size=1000", "size"),
        ("/v1/workflows?page_size=-1", "page_size"),
        ("/v1/workflows?type=pipeline", "type"),
        ("/v1/admin/groups?size=0", "size"),
        // Beyond the documented maximum, even where it fits a u64.
        ("/v1/admin/groups?page=9223372036854775808", "page"),
        ("/v1/admin/groups?page=1000001", "page"),
        ("/v1/admin/audit?before=9223372036854775808", "before"),
        // Plain decimal integers only.
        ("/v1/workflows?page=+1", "page"),
        ("/v1/workflows?size=%201", "size"),
        // Checked even when `size` is also given.
        ("/v1/workflows?size=10&page_size=null", "page_size"),
    ] {
        let error = assert_error(
            app.get(path, &app.owner_key).send().await.unwrap(),
            422,
            "validation_error",
        )
        .await;
        assert_eq!(error["field"], field, "{path}");
    }
    let patch = app
        .patch(&format!("/v1/workflows/{id}?force=maybe"), &app.owner_key)
        .json(&json!({"name": "w2"}))
        .send()
        .await
        .unwrap();
    let error = assert_error(patch, 422, "validation_error").await;
    assert_eq!(error["field"], "force");
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = TestApp::spawn().await;
    assert_error(
        app.get("/v1/nope", &app.owner_key).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    let put = app
        .http
        .put(app.url("/v1/workflows"))
        .header("X-API-Key", &app.owner_key)
        .send()
        .await
        .unwrap();
    assert_error(put, 405, "method_not_allowed").await;
    let unauthenticated_unknown = app.http.get(app.url("/v2/whatever")).send().await.unwrap();
    assert_error(unauthenticated_unknown, 404, "not_found").await;
    app.stop().await;
}

#[tokio::test]
async fn no_malformed_request_ever_causes_a_server_error() {
    let app = TestApp::spawn().await;
    let paths = [
        "/v1/workflows",
        "/v1/workflows/x",
        "/v1/workflows/00000000-0000-0000-0000-000000000000/versions",
        "/v1/admin/groups",
        "/v1/admin/groups/x",
        "/v1/admin/groups/x/api-keys",
        "/v1/admin/groups/x/api-keys/y/rotate",
        "/v1/admin/me",
        "/v1/nodes",
        "/v1/models/llms",
        "/v1/models/llms/presets",
        "/%ff%fe",
        "/v1/workflows/%00",
    ];
    let bodies = [
        "",
        "null",
        "{",
        "[]",
        "{\"name\": {\"deep\": [1, 2, {\"x\": null}]}}",
        "\u{feff}{}",
    ];
    for path in paths {
        for method in [
            reqwest::Method::GET,
            reqwest::Method::POST,
            reqwest::Method::PATCH,
            reqwest::Method::DELETE,
        ] {
            for body in bodies {
                for key in [app.owner_key.as_str(), "", "noxus_bad"] {
                    let response = app
                        .http
                        .request(method.clone(), app.url(path))
                        .header("X-API-Key", key)
                        .body(body.to_owned())
                        .send()
                        .await
                        .unwrap();
                    let status = response.status();
                    assert!(
                        !status.is_server_error(),
                        "{method} {path} {body:?}: {status}"
                    );
                    if !status.is_success() {
                        let json: serde_json::Value = response.json().await.unwrap();
                        assert!(
                            json["detail"].is_string() && json["code"].is_string(),
                            "{method} {path}: {json}"
                        );
                    }
                }
            }
        }
    }
    assert!(!noxus_testkit::captured_logs().contains("panicked"));
    app.stop().await;
}

#[tokio::test]
async fn a_path_id_that_is_not_utf8_is_a_404_saying_so() {
    let app = TestApp::spawn().await;
    for (method, path) in [
        (reqwest::Method::GET, "/v1/workflows/%ff"),
        (reqwest::Method::GET, "/v1/admin/groups/%ff/api-keys"),
        (
            reqwest::Method::GET,
            "/v1/admin/groups/x/api-keys/%fe%ff/usage",
        ),
        (reqwest::Method::DELETE, "/v1/admin/users/%c3%28/sessions"),
    ] {
        let response = app
            .http
            .request(method, app.url(path))
            .header("X-API-Key", &app.owner_key)
            .send()
            .await
            .unwrap();
        let error = assert_error(response, 404, "not_found").await;
        assert!(
            error["detail"].as_str().unwrap().contains("UTF-8"),
            "{path}: {error}"
        );
    }
    app.stop().await;
}

/// Found by the body properties (`tests/api/properties`): serde's message
/// and the field path quote the client's own text, which was sent back
/// whole: a field name of any length, or a key pasted as one.
#[tokio::test]
async fn a_422_quotes_the_clients_text_short_and_without_keys() {
    let app = TestApp::spawn().await;
    let key = noxus_api::key_format::key_from_body("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345");
    let long = "¡".repeat(300);
    let deep = format!("{}{}", "[".repeat(140), "]".repeat(140));
    for body in [
        format!("{{\"name\": \"a\", \"{key}\": 1}}"),
        format!("{{\"name\": \"a\", \"{long}\": null}}"),
        format!("{{\"name\": 5, \"description\": \"{key}\"}}"),
        format!("{{\"name\": \"a\", \"tenant_admin\": \"{key}\"}}"),
        format!("{{\"name\": \"a\", \"definition\": {deep}}}"),
    ] {
        let keys = format!("/v1/admin/groups/{}/api-keys", app.workspace_id);
        for path in ["/v1/admin/groups", "/v1/workflows", keys.as_str()] {
            let response = app
                .post(path, &app.owner_key)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let error = assert_error(response, 422, "validation_error").await;
            let text = error.to_string();
            assert!(!text.contains(&key[10..]), "{path}: {text}");
            assert!(!text.contains(&long), "{path}: {text}");
            assert!(
                error["detail"].as_str().unwrap().chars().count() < 600,
                "{path}: {text}"
            );
            let field = error["field"].as_str().unwrap_or_default();
            assert!(field.chars().count() <= 201, "{path}: {text}");
        }
    }
    app.stop().await;
}
