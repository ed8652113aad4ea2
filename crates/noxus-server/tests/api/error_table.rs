//! Each row of the architecture's error table, produced by a real request.

use noxus_api::Role;
use noxus_server::rate_limit::RateLimit;
use noxus_testkit::{KeyOptions, TestApp};
use serde_json::json;

use crate::helpers::{assert_error, json_ok};

#[tokio::test]
async fn a_request_without_a_key_is_401_missing_api_key() {
    let app = TestApp::spawn().await;
    let response = app.http.get(app.url("/v1/workflows")).send().await.unwrap();
    let body = assert_error(response, 401, "missing_api_key").await;
    assert!(body["detail"].as_str().unwrap().contains("X-API-Key"));

    let empty = app.get("/v1/workflows", "").send().await.unwrap();
    assert_error(empty, 401, "missing_api_key").await;
    app.stop().await;
}

#[tokio::test]
async fn a_malformed_or_unknown_key_is_401_invalid_api_key_with_the_guides_sentence() {
    let app = TestApp::spawn().await;
    let unknown = noxus_api::key_format::key_from_body("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345");
    let mut bad_checksum = app.owner_key.clone();
    let last = bad_checksum.pop().unwrap();
    bad_checksum.push(if last == 'A' { 'B' } else { 'A' });
    for key in [
        "noxus_1234567890abcdef...",
        "sk-not-ours",
        unknown.as_str(),
        bad_checksum.as_str(),
    ] {
        let response = app.get("/v1/workflows", key).send().await.unwrap();
        let body = assert_error(response, 401, "invalid_api_key").await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .starts_with("Invalid API key - please check your credentials"),
            "{body}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_key_is_401_revoked_api_key() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let path = format!(
        "/v1/admin/groups/{}/api-keys/{}",
        app.workspace_id, member.key_id
    );
    json_ok(app.delete(&path, &member.key).send().await.unwrap()).await;
    let response = app.get("/v1/workflows", &member.key).send().await.unwrap();
    let body = assert_error(response, 401, "revoked_api_key").await;
    assert!(body["detail"].as_str().unwrap().contains("revoked"));
    app.stop().await;
}

#[tokio::test]
async fn an_expired_key_is_401_expired_api_key() {
    let app = TestApp::spawn().await;
    let past = noxus_testkit::time_shim::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    let (key, _) = app
        .issue_key(
            &app.workspace_id,
            &app.owner.id,
            KeyOptions {
                expires_at: Some(past),
                ..Default::default()
            },
        )
        .await;
    let response = app.get("/v1/workflows", &key).send().await.unwrap();
    let body = assert_error(response, 401, "expired_api_key").await;
    assert!(body["detail"].as_str().unwrap().contains("expired"));
    app.stop().await;
}

#[tokio::test]
async fn a_viewer_writing_is_403_insufficient_permissions_naming_the_permission() {
    let app = TestApp::spawn().await;
    let viewer = app.user_with_role(Role::Viewer).await;
    let response = app
        .post("/v1/workflows", &viewer.key)
        .json(&json!({"name": "nope"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 403, "insufficient_permissions").await;
    assert_eq!(body["required_permission"], "workflows:write");
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .starts_with("API key lacks required permissions"));
    assert!(body["detail"].as_str().unwrap().contains("viewer"));
    app.stop().await;
}

#[tokio::test]
async fn naming_another_workspace_is_403_wrong_workspace() {
    let app = TestApp::spawn().await;
    let other = app.second_workspace("Other").await;
    let path = format!("/v1/admin/groups/{}/api-keys", other.workspace_id);
    let member = app.user_with_role(Role::Admin).await;
    let response = app.get(&path, &member.key).send().await.unwrap();
    assert_error(response, 403, "wrong_workspace").await;
    app.stop().await;
}

#[tokio::test]
async fn an_object_of_another_workspace_is_404_not_found() {
    let app = TestApp::spawn().await;
    let other = app.second_workspace("Other").await;
    let created = json_ok(
        app.post("/v1/workflows", &other.key)
            .json(&json!({"name": "theirs"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let path = format!("/v1/workflows/{}", created["id"].as_str().unwrap());
    let response = app.get(&path, &app.owner_key).send().await.unwrap();
    assert_error(response, 404, "not_found").await;
    app.stop().await;
}

#[tokio::test]
async fn a_bad_body_is_422_validation_error_naming_the_field() {
    let app = TestApp::spawn().await;
    let response = app
        .post("/v1/workflows", &app.owner_key)
        .json(&json!({"name": 42}))
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 422, "validation_error").await;
    assert_eq!(body["field"], "name");
    app.stop().await;
}

#[tokio::test]
async fn too_many_requests_with_one_key_is_429_rate_limited_with_retry_after() {
    let app = TestApp::spawn_with(|c| {
        c.key_rate_limit = Some(RateLimit {
            per_second: 1,
            burst: 2,
        })
    })
    .await;
    for _ in 0..2 {
        json_ok(
            app.get("/v1/workflows", &app.owner_key)
                .send()
                .await
                .unwrap(),
        )
        .await;
    }
    let response = app
        .get("/v1/workflows", &app.owner_key)
        .send()
        .await
        .unwrap();
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!((1..=2).contains(&retry_after), "retry after {retry_after}");
    assert_error(response, 429, "rate_limited").await;

    // Another key is not affected, and the limited key works after the wait.
    let viewer = app.user_with_role(Role::Viewer).await;
    json_ok(app.get("/v1/workflows", &viewer.key).send().await.unwrap()).await;
    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;
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
async fn every_response_carries_a_request_id_including_successes() {
    let app = TestApp::spawn().await;
    let ok = app
        .get("/v1/admin/me", &app.owner_key)
        .send()
        .await
        .unwrap();
    let id = ok
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("req_") && id.len() > 10);
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert!(health.headers().contains_key("x-request-id"));
    app.stop().await;
}
