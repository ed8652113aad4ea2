//! The OpenAPI document is generated from the router and covers every route.

use noxus_testkit::TestApp;

use crate::helpers::json_ok;

#[tokio::test]
async fn openapi_json_describes_every_route_and_the_probes_answer() {
    let app = TestApp::spawn().await;
    let doc = json_ok(app.http.get(app.url("/openapi.json")).send().await.unwrap()).await;
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
        ("/v1/admin/audit", "get"),
        ("/v1/admin/users", "get"),
        ("/v1/admin/users/{id}", "patch"),
        ("/v1/admin/users/{id}/sessions", "delete"),
        ("/v1/workflows", "get"),
        ("/v1/workflows", "post"),
        ("/v1/workflows/{id}", "get"),
        ("/v1/workflows/{id}", "patch"),
        ("/v1/workflows/{id}", "delete"),
        ("/v1/workflows/{id}/versions", "get"),
        ("/v1/workflows/{id}/versions", "post"),
        ("/v1/workflows/{id}/versions/{version_id}", "patch"),
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
    app.stop().await;
}
