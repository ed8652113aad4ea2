//! Every error variant the platform can cause, with its code, detail and request id.

use std::time::Duration;

use noxus_api::{CreateApiKey, Role};
use noxus_sdk::{Client, Error};
use noxus_server::rate_limit::RateLimit;
use noxus_testkit::{noxus_server, KeyOptions, TestApp};

fn assert_api(err: &Error, status: u16, code: &str) {
    assert_eq!(err.status(), Some(status), "{err:?}");
    assert_eq!(err.code().map(|c| c.as_str()), Some(code), "{err:?}");
    assert_eq!(err.code(), Some(&noxus_sdk::ErrorCode::parse(code)));
    let id = err.request_id().expect("a request id");
    assert!(id.starts_with("req_"), "{id}");
    assert!(
        err.to_string().contains(id),
        "the message quotes the request id: {err}"
    );
}

#[tokio::test]
async fn unauthorized_errors_carry_the_guides_sentence_and_the_servers_code() {
    let app = TestApp::spawn().await;
    let unknown = noxus_api::key_format::key_from_body("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345");
    let err = app.client(&unknown).me().await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized(_)));
    assert_api(&err, 401, "invalid_api_key");
    assert!(err
        .to_string()
        .starts_with("Invalid API key - please check your credentials"));
    assert_eq!(
        err.to_string().matches("Invalid API key").count(),
        1,
        "not repeated: {err}"
    );

    let member = app.user_with_role(Role::Member).await;
    let client = app.client(&member.key);
    client
        .admin()
        .keys(&app.workspace_id)
        .revoke(&member.key_id)
        .await
        .unwrap();
    let err = client.me().await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized(_)));
    assert_api(&err, 401, "revoked_api_key");
    assert!(
        err.to_string()
            .starts_with("Invalid API key - please check your credentials: This API key"),
        "{err}"
    );

    let past = noxus_testkit::time_shim::OffsetDateTime::now_utc() - Duration::from_secs(5);
    let (expired, _) = app
        .issue_key(
            &app.workspace_id,
            &app.owner.id,
            KeyOptions {
                expires_at: Some(past),
                ..Default::default()
            },
        )
        .await;
    let err = app.client(&expired).me().await.unwrap_err();
    assert_api(&err, 401, "expired_api_key");
    app.stop().await;
}

#[tokio::test]
async fn forbidden_names_the_missing_permission() {
    let app = TestApp::spawn().await;
    let viewer = app.client_for(Role::Viewer).await;
    let err = viewer.workflows().create("x").await.unwrap_err();
    let Error::Forbidden(api) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(api.required_permission.as_deref(), Some("workflows:write"));
    assert_api(&err, 403, "insufficient_permissions");
    assert!(err
        .to_string()
        .starts_with("API key lacks required permissions"));

    let other = app.second_workspace("Other").await;
    let admin = app.client_for(Role::Admin).await;
    let err = admin
        .admin()
        .keys(&other.workspace_id)
        .list()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden(_)));
    assert_api(&err, 403, "wrong_workspace");
    app.stop().await;
}

#[tokio::test]
async fn not_found_validation_and_conflict_are_told_apart() {
    let app = TestApp::spawn().await;
    let client = app.client(&app.owner_key);
    let err = client
        .workflows()
        .get("00000000-0000-0000-0000-000000000000")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)));
    assert_api(&err, 404, "not_found");

    let bad = noxus_api::WorkflowWrite {
        name: "x".to_owned(),
        kind: "flow".to_owned(),
        definition: Some(serde_json::json!({"nodes": [{"id": "a", "type": "Nope"}], "edges": []})),
        error_handler: None,
    };
    let err = client.workflows().save(&bad).await.unwrap_err();
    let Error::Validation(api) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(api.field.as_deref(), Some("definition.nodes[0].type"));
    assert_api(&err, 422, "validation_error");

    client
        .admin()
        .create_workspace("Twice", None)
        .await
        .unwrap();
    let err = client
        .admin()
        .create_workspace("Twice", None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Api(_)));
    assert_api(&err, 409, "conflict");
    app.stop().await;
}

#[tokio::test]
async fn rate_limited_carries_retry_after_and_retries_honour_it() {
    let app = TestApp::spawn_with(|c| {
        c.key_rate_limit = Some(RateLimit {
            per_second: 1,
            burst: 1,
        })
    })
    .await;
    let no_retries = Client::builder()
        .api_key(&app.owner_key)
        .base_url(&app.base_url)
        .max_retries(0)
        .build()
        .unwrap();
    no_retries.me().await.unwrap();
    let err = no_retries.me().await.unwrap_err();
    let Error::RateLimited { retry_after, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*retry_after, Some(Duration::from_secs(1)));
    assert_api(&err, 429, "rate_limited");

    // With retries (the default), the SDK waits Retry-After and succeeds.
    let started = std::time::Instant::now();
    app.client(&app.owner_key).me().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(500), "it waited");
    app.stop().await;
}

#[tokio::test]
async fn a_key_made_through_the_sdk_is_shown_once_and_works() {
    let app = TestApp::spawn().await;
    let client = app.client(&app.owner_key);
    let request = CreateApiKey {
        name: "ci".to_owned(),
        tenant_admin: false,
        permissions: None,
        expires_at: None,
        rate_limit: None,
    };
    let created = client
        .admin()
        .keys(&app.workspace_id)
        .create(&request)
        .await
        .unwrap();
    assert!(
        !format!("{created:?}").contains(&created.value),
        "Debug of a created key hides it"
    );
    let me = app.client(&created.value).me().await.unwrap();
    assert_eq!(me.id, created.id);
    app.stop().await;
}

#[tokio::test]
async fn a_closed_port_is_a_connection_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::builder()
        .api_key(noxus_api::key_format::key_from_body(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345",
        ))
        .base_url(format!("http://127.0.0.1:{port}"))
        .max_retries(0)
        .build()
        .unwrap();
    let err = client.me().await.unwrap_err();
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert!(err.to_string().starts_with("Network error"), "{err}");
    assert!(err.is_network());
}

#[tokio::test]
async fn a_key_naming_another_workspace_is_not_said_to_lack_permissions() {
    let app = TestApp::spawn().await;
    let other = app.second_workspace("Other").await;
    let member = app.user_with_role(Role::Member).await;
    let err = app
        .client(&member.key)
        .admin()
        .keys(&other.workspace_id)
        .list()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden(_)), "{err:?}");
    assert_api(&err, 403, "wrong_workspace");
    assert_eq!(err.code(), Some(&noxus_sdk::ErrorCode::WrongWorkspace));
    let message = err.to_string();
    assert!(message.starts_with(noxus_sdk::WRONG_WORKSPACE), "{message}");
    assert!(!message.contains(noxus_sdk::FORBIDDEN), "{message}");
    app.stop().await;
}
