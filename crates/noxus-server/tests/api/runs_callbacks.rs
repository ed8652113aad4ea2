//! Run callbacks against a real receiver (an axum server on 127.0.0.1, the
//! platform started with `allow_loopback_callbacks`): the finished run is
//! posted signed with the workspace's secret, which only those who manage
//! the workspace obtain; failures are retried with backoff, a restart
//! loses no delivery, a stopped run says so, rotation changes the
//! signature, and without the flag loopback and private targets are
//! refused.

use std::time::{Duration, Instant};

use noxus_api::{Permission, Role};
use noxus_server::Config;
use noxus_testkit::{KeyOptions, TestApp};
use serde_json::{json, Value};

use crate::helpers::{assert_error, json_ok};
use crate::receiver::Receiver;

/// A pepper, so that callbacks can be signed on either backend (on
/// PostgreSQL the signing secret comes from it).
const PEPPER: &str = "callbacks-test-pepper-0123456789abcdefghij";

fn with_loopback(config: &mut Config) {
    config.pepper = Some(PEPPER.to_owned().into());
    config.allow_loopback_callbacks = true;
    config.callback_retry_base = Duration::from_millis(50);
}

fn without_loopback(config: &mut Config) {
    config.pepper = Some(PEPPER.to_owned().into());
    config.callback_retry_base = Duration::from_millis(50);
}

/// Input → Output, saved.
async fn workflow(app: &TestApp, key: &str) -> (String, String) {
    let definition = crate::helpers::input_output_definition();
    let input = definition["nodes"][0]["id"].as_str().unwrap().to_owned();
    let created = json_ok(
        app.post("/v1/workflows", key)
            .json(&json!({"name": "echo", "type": "flow", "definition": definition}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    (created["id"].as_str().unwrap().to_owned(), input)
}

async fn start_run(app: &TestApp, key: &str, workflow: &str, input: &str, url: &str) -> Value {
    let response = app
        .post(&format!("/v1/workflows/{workflow}/runs"), key)
        .json(&json!({"input": {format!("{input}::input"): "hi"}, "callback_url": url}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    response.json().await.unwrap()
}

async fn secret(app: &TestApp, key: &str) -> Value {
    let response = app
        .get(
            &format!("/v1/admin/groups/{}/callback-secret", app.workspace_id),
            key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["cache-control"],
        "no-store",
        "a secret is never cached"
    );
    json_ok(response).await
}

async fn rotate(app: &TestApp, key: &str, grace: u64) -> Value {
    json_ok(
        app.post(
            &format!(
                "/v1/admin/groups/{}/callback-secret/rotate",
                app.workspace_id
            ),
            key,
        )
        .json(&json!({"grace_period_seconds": grace}))
        .send()
        .await
        .unwrap(),
    )
    .await
}

/// The run's callback status once it is no longer `waiting`/`pending`.
async fn settled_callback(app: &TestApp, key: &str, run: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = json_ok(
            app.get(&format!("/v1/runs/{run}/callback"), key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        if ["delivered", "failed"].contains(&status["status"].as_str().unwrap()) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the callback did not settle: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_finished_run_is_posted_as_get_run_answers_it_signed_with_the_workspace_secret() {
    let app = TestApp::spawn_with(with_loopback).await;
    let receiver = Receiver::start(&[]).await;
    let key = app.owner_key.clone();
    let (workflow, input) = workflow(&app, &key).await;
    let run = start_run(&app, &key, &workflow, &input, &receiver.url).await;
    assert_eq!(run["callback_url"], receiver.url.as_str());
    let run_id = run["id"].as_str().unwrap();

    let got = receiver.wait_for(1).await;
    let delivery = &got[0];
    let secret = secret(&app, &key).await;
    let secret = secret["secret"].as_str().unwrap();
    assert!(
        secret.starts_with("whsec_") && secret.len() == 70,
        "{secret}"
    );
    assert!(delivery.signed_with(secret), "the signature verifies");
    assert!(!delivery.signed_with("whsec_another"), "and only under it");
    let (t, signatures) = delivery.signature();
    assert_eq!(signatures.len(), 1);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((now - t).abs() < 300, "a fresh timestamp: {t} vs {now}");
    assert_eq!(delivery.header("noxus-event"), "run.completed");
    assert_eq!(delivery.header("noxus-attempt"), "1");
    assert_eq!(delivery.header("content-type"), "application/json");
    assert!(uuid::Uuid::parse_str(delivery.header("noxus-delivery")).is_ok());

    // The body is the run as GET answers it.
    let read = json_ok(
        app.get(&format!("/v1/workflows/{workflow}/runs/{run_id}"), &key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(delivery.json(), read);
    assert_eq!(read["status"], "completed");

    let status = settled_callback(&app, &key, run_id).await;
    assert_eq!(status["status"], "delivered", "{status}");
    assert_eq!(status["attempts"], 1);
    assert_eq!(status["last_status_code"], 200);
    assert_eq!(status["event"], "run.completed");
    assert_eq!(status["delivery_id"], delivery.header("noxus-delivery"));
    assert!(status["delivered_at"].is_string());

    // Reading the secret is in the audit log.
    let audit = json_ok(
        app.get("/v1/admin/audit?limit=20", &key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        audit.to_string().contains("workspace.callback_secret.read"),
        "{audit}"
    );
    // A run without callback_url has no callback.
    let plain = json_ok(
        app.post(&format!("/v1/workflows/{workflow}/runs"), &key)
            .json(&json!({"input": {format!("{input}::input"): "x"}, "callback_url": ""}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(plain["callback_url"].is_null());
    assert_error(
        app.get(
            &format!("/v1/runs/{}/callback", plain["id"].as_str().unwrap()),
            &key,
        )
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
async fn a_receiver_that_fails_twice_gets_a_third_attempt_that_succeeds() {
    let app = TestApp::spawn_with(with_loopback).await;
    let receiver = Receiver::start(&[500, 503]).await;
    let key = app.owner_key.clone();
    let (workflow, input) = workflow(&app, &key).await;
    let run = start_run(&app, &key, &workflow, &input, &receiver.url).await;
    let run_id = run["id"].as_str().unwrap();

    let got = receiver.wait_for(3).await;
    let status = settled_callback(&app, &key, run_id).await;
    assert_eq!(status["status"], "delivered", "{status}");
    assert_eq!(status["attempts"], 3);
    assert_eq!(status["last_status_code"], 200);
    assert!(status["last_error"].is_null(), "{status}");
    let attempts: Vec<&str> = got.iter().map(|r| r.header("noxus-attempt")).collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    let ids: Vec<&str> = got.iter().map(|r| r.header("noxus-delivery")).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one delivery id: {ids:?}"
    );
    // Every attempt is signed afresh with the same body.
    let secret = secret(&app, &key).await;
    assert!(got
        .iter()
        .all(|r| r.signed_with(secret["secret"].as_str().unwrap()) && r.body == got[0].body));
    // Nothing more comes after the success.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), 3);
    app.stop().await;
}

#[tokio::test]
async fn a_failed_attempt_says_why_and_a_restart_loses_no_delivery() {
    let receiver = Receiver::start(&[500]).await;
    let app = TestApp::spawn_with(|config| {
        with_loopback(config);
        // Long enough that the retry comes after the restart.
        config.callback_retry_base = Duration::from_secs(3);
    })
    .await;
    let key = app.owner_key.clone();
    let (workflow, input) = workflow(&app, &key).await;
    let run = start_run(&app, &key, &workflow, &input, &receiver.url).await;
    let run_id = run["id"].as_str().unwrap().to_owned();
    receiver.wait_for(1).await;
    let pending = loop {
        let status = json_ok(
            app.get(&format!("/v1/runs/{run_id}/callback"), &key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        if status["last_error"].is_string() {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(pending["status"], "pending", "{pending}");
    assert_eq!(pending["attempts"], 1);
    assert_eq!(pending["last_status_code"], 500);
    assert_eq!(
        pending["last_error"],
        "The receiver answered 500 Internal Server Error."
    );
    assert!(pending["next_attempt_at"].is_string());

    let kept = app.stop_keep_data().await;
    let app = TestApp::start_in(kept.path(), |config| {
        with_loopback(config);
    })
    .await;
    let got = receiver.wait_for(2).await;
    assert_eq!(got[1].header("noxus-attempt"), "2");
    let status = settled_callback(&app, &app.owner_key, &run_id).await;
    assert_eq!(status["status"], "delivered", "{status}");
    assert_eq!(status["attempts"], 2);
    app.stop().await;
    drop(kept);
}

#[tokio::test]
async fn a_stopped_run_is_posted_as_stopped() {
    let app = TestApp::spawn_with(with_loopback).await;
    let receiver = Receiver::start(&[]).await;
    let member = app.user_with_role(Role::Member).await;
    let (workflow, _input) = workflow(&app, &member.key).await;
    let definition = crate::helpers::input_output_definition();
    // A run held by a claimer that is not the app's worker, so that it is
    // still running when the stop comes.
    let run = crate::helpers::held_run(
        &app,
        &member,
        &workflow,
        &definition,
        Some(receiver.url.clone()),
    )
    .await;
    let stopped = json_ok(
        app.post(&format!("/v1/runs/{run}/stop"), &member.key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(stopped["status"], "stopped");

    let got = receiver.wait_for(1).await;
    let delivery = got
        .iter()
        .find(|r| r.json()["id"] == run.as_str())
        .expect("the stopped run's callback");
    assert_eq!(delivery.header("noxus-event"), "run.stopped");
    assert_eq!(delivery.json()["status"], "stopped");
    assert!(delivery.json()["finished_at"].is_string());
    let status = settled_callback(&app, &member.key, &run).await;
    assert_eq!(status["event"], "run.stopped");
    app.stop().await;
}

#[tokio::test]
async fn without_the_flag_loopback_and_private_targets_are_refused() {
    let app = TestApp::spawn_with(without_loopback).await;
    let receiver = Receiver::start(&[]).await;
    let key = app.owner_key.clone();
    let (workflow, input) = workflow(&app, &key).await;
    for (url, says) in [
        (receiver.url.clone(), "127.0.0.1, a loopback address"),
        ("http://[::1]:9/".to_owned(), "::1, a loopback address"),
        ("http://10.0.0.7/hook".to_owned(), "a private address"),
        ("http://192.168.1.1/hook".to_owned(), "a private address"),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "a link-local address",
        ),
        ("http://[fd00::1]/".to_owned(), "a private address"),
        (
            "http://[::ffff:127.0.0.1]/".to_owned(),
            "a loopback address",
        ),
        ("http://100.64.0.1/".to_owned(), "carrier-grade NAT"),
        ("ftp://example.com/".to_owned(), "http or https"),
        ("https://user:pw@example.com/".to_owned(), "user name"),
        (
            format!("https://example.com/{}", "a".repeat(2100)),
            "at most 2048",
        ),
    ] {
        let refused = assert_error(
            app.post(&format!("/v1/workflows/{workflow}/runs"), &key)
                .json(&json!({"input": {format!("{input}::input"): "x"}, "callback_url": url}))
                .send()
                .await
                .unwrap(),
            422,
            "validation_error",
        )
        .await;
        let detail = refused["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{url}: {detail}");
    }

    // A host name is resolved when the callback is sent: `localhost` is
    // loopback, so the delivery fails at once, saying why, and nothing is
    // sent.
    let url = format!("http://localhost:{}/hook", receiver.port());
    let run = start_run(&app, &key, &workflow, &input, &url).await;
    let status = settled_callback(&app, &key, run["id"].as_str().unwrap()).await;
    assert_eq!(status["status"], "failed", "{status}");
    assert_eq!(status["attempts"], 1, "a refused target is not retried");
    let error = status["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("The host localhost resolves to ")
            && error.contains("a loopback address; callbacks go only to public addresses"),
        "{error}"
    );
    assert_eq!(receiver.count(), 0);
    app.stop().await;
}

#[tokio::test]
async fn only_those_who_manage_the_workspace_obtain_the_secret() {
    let app = TestApp::spawn_with(with_loopback).await;
    let path = format!("/v1/admin/groups/{}/callback-secret", app.workspace_id);
    let rotate_path = format!("{path}/rotate");
    let viewer = app.user_with_role(Role::Viewer).await;
    let member = app.user_with_role(Role::Member).await;
    let admin = app.user_with_role(Role::Admin).await;
    for key in [&viewer.key, &member.key, &admin.key] {
        // admin.key was made without `permissions`: no management.
        let refused = assert_error(
            app.get(&path, key).send().await.unwrap(),
            403,
            "insufficient_permissions",
        )
        .await;
        assert!(refused["detail"]
            .as_str()
            .unwrap()
            .contains("workspace:write"));
        assert_error(
            app.post(&rotate_path, key)
                .json(&json!({}))
                .send()
                .await
                .unwrap(),
            403,
            "insufficient_permissions",
        )
        .await;
    }
    // A key made for managing the workspace may.
    let (manager, _) = app
        .issue_key(
            &app.workspace_id,
            &admin.id,
            KeyOptions {
                restriction: Some(vec![Permission::WorkspaceWrite]),
                ..Default::default()
            },
        )
        .await;
    let got = secret(&app, &manager).await;
    assert_eq!(got["generation"], 1);
    assert_eq!(
        got,
        secret(&app, &app.owner_key).await,
        "one secret per workspace"
    );

    // Another workspace's key: naming this workspace is refused, and its
    // own secret is another.
    let other = app.second_workspace("Other").await;
    let other_manager = app.management_key(&other, Role::Owner).await;
    assert_error(
        app.get(&path, &other_manager).send().await.unwrap(),
        403,
        "wrong_workspace",
    )
    .await;
    let theirs = json_ok(
        app.get(
            &format!("/v1/admin/groups/{}/callback-secret", other.workspace_id),
            &other_manager,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_ne!(theirs["secret"], got["secret"]);
    // A workspace that does not exist.
    assert_error(
        app.get(
            "/v1/admin/groups/00000000-0000-0000-0000-000000000000/callback-secret",
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
        404,
        "not_found",
    )
    .await;

    // A run's callback status is the workspace's: another's key gets 404.
    let receiver = Receiver::start(&[]).await;
    let (workflow, input) = workflow(&app, &member.key).await;
    let run = start_run(&app, &member.key, &workflow, &input, &receiver.url).await;
    let run_id = run["id"].as_str().unwrap();
    assert_error(
        app.get(&format!("/v1/runs/{run_id}/callback"), &other.key)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    // Readers of the run (a viewer) see how its callback went.
    let status = settled_callback(&app, &viewer.key, run_id).await;
    assert_eq!(status["status"], "delivered");
    app.stop().await;
}

#[tokio::test]
async fn rotating_the_secret_changes_the_signature_and_a_grace_period_signs_with_both() {
    let app = TestApp::spawn_with(with_loopback).await;
    let receiver = Receiver::start(&[]).await;
    let key = app.owner_key.clone();
    let (workflow, input) = workflow(&app, &key).await;
    let first = secret(&app, &key).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();

    let rotated = rotate(&app, &key, 0).await;
    assert_eq!(rotated["generation"], 2);
    assert!(rotated["previous_secret_valid_until"].is_null());
    let second = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert_eq!(secret(&app, &key).await["secret"], second.as_str());
    start_run(&app, &key, &workflow, &input, &receiver.url).await;
    let got = receiver.wait_for(1).await;
    assert!(got[0].signed_with(&second));
    assert!(
        !got[0].signed_with(&first),
        "the old secret no longer signs"
    );
    assert_eq!(got[0].signature().1.len(), 1);

    // With a grace period, both the new and the previous secret sign.
    let rotated = rotate(&app, &key, 3600).await;
    let third = rotated["secret"].as_str().unwrap().to_owned();
    assert!(rotated["previous_secret_valid_until"].is_string());
    start_run(&app, &key, &workflow, &input, &receiver.url).await;
    let got = receiver.wait_for(2).await;
    assert!(got[1].signed_with(&third));
    assert!(got[1].signed_with(&second));
    assert_eq!(got[1].signature().1.len(), 2);

    assert_error(
        app.post(
            &format!(
                "/v1/admin/groups/{}/callback-secret/rotate",
                app.workspace_id
            ),
            &key,
        )
        .json(&json!({"grace_period_seconds": 86401}))
        .send()
        .await
        .unwrap(),
        422,
        "validation_error",
    )
    .await;
    let audit = json_ok(
        app.get("/v1/admin/audit?limit=50", &key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        audit
            .to_string()
            .matches("workspace.callback_secret.rotate")
            .count(),
        2,
        "{audit}"
    );
    app.stop().await;
}

#[tokio::test]
async fn on_sqlite_without_a_pepper_the_secret_lives_in_the_data_directory() {
    let app = TestApp::spawn_with(|config| config.allow_loopback_callbacks = true).await;
    if app.is_postgres() {
        // On PostgreSQL without a pepper, callbacks are refused: there is
        // no secret the replicas share outside the database.
        let (workflow, input) = workflow(&app, &app.owner_key).await;
        let refused = assert_error(
            app.post(&format!("/v1/workflows/{workflow}/runs"), &app.owner_key)
                .json(&json!({"input": {format!("{input}::input"): "x"}, "callback_url": "https://example.com/"}))
                .send()
                .await
                .unwrap(),
            422,
            "validation_error",
        )
        .await;
        assert!(refused["detail"]
            .as_str()
            .unwrap()
            .contains("NOXUS_KEY_PEPPER"));
        assert_error(
            app.get(
                &format!("/v1/admin/groups/{}/callback-secret", app.workspace_id),
                &app.owner_key,
            )
            .send()
            .await
            .unwrap(),
            409,
            "conflict",
        )
        .await;
        app.stop().await;
        return;
    }
    let file = app.data_dir().join("callback-signing.key");
    let contents = std::fs::read_to_string(&file).unwrap();
    assert_eq!(contents.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "only the server's user reads it");
    }
    let before = secret(&app, &app.owner_key).await;
    let kept = app.stop_keep_data().await;
    let app = TestApp::start_in(kept.path(), |_| {}).await;
    assert_eq!(
        secret(&app, &app.owner_key).await["secret"],
        before["secret"],
        "the same secret after a restart"
    );
    app.stop().await;
    drop(kept);
}

#[tokio::test]
async fn admins_see_and_rotate_the_secret_in_the_dashboard_after_confirming_their_password() {
    use crate::helpers::Browser;
    let app = TestApp::spawn_with(with_loopback).await;
    let tab = format!(
        "/settings/organization/workspaces/{}/callbacks",
        app.workspace_id
    );
    let keys = format!(
        "/settings/organization/workspaces/{}/api-keys",
        app.workspace_id
    );

    // A member is not offered the tab, and is refused the page and its forms.
    let member = app.user_with_role(Role::Member).await;
    let mut browser = Browser::new(&app);
    browser.login(&member).await;
    assert!(!browser.get(&keys).await.body.contains("tab-callbacks"));
    assert_eq!(browser.get(&tab).await.status, 403);
    let csrf = browser.csrf().await;
    let page = browser
        .post(&format!("{tab}/secret"), &[("csrf", &csrf)])
        .await;
    assert_eq!(page.status, 403);
    assert!(!page.body.contains("whsec_"));

    let admin = app.user_with_role(Role::Admin).await;
    let mut browser = Browser::new(&app);
    browser.login(&admin).await;
    assert!(browser.get(&keys).await.body.contains("tab-callbacks"));
    let page = browser.get(&tab).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Secret number 1"), "{}", page.body);
    assert!(!page.body.contains("whsec_"), "not shown until asked for");

    // The password entered more than 10 minutes ago: asked again.
    browser.end_sudo(&app).await;
    let csrf = browser.csrf().await;
    let page = browser
        .post(&format!("{tab}/secret"), &[("csrf", &csrf)])
        .await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location_path(), "/sudo");
    assert!(!page.body.contains("whsec_"));
    browser.sudo(&admin.password, &tab).await;
    let page = browser
        .post(&format!("{tab}/secret"), &[("csrf", &csrf)])
        .await;
    assert_eq!(page.status, 200);
    let through_api = secret(&app, &app.owner_key).await;
    let shown = through_api["secret"].as_str().unwrap();
    assert!(page.body.contains(shown), "the page shows the API's secret");

    // Rotating shows the new secret, which the API then gives too.
    let page = browser
        .post(&format!("{tab}/rotate"), &[("csrf", &csrf), ("grace", "0")])
        .await;
    assert_eq!(page.status, 200);
    let now = secret(&app, &app.owner_key).await;
    assert_eq!(now["generation"], 2);
    let new = now["secret"].as_str().unwrap();
    assert_ne!(new, shown);
    assert!(page.body.contains(new) && !page.body.contains(shown));
    let page = browser
        .post(
            &format!("{tab}/rotate"),
            &[("csrf", &csrf), ("grace", "604800")],
        )
        .await;
    assert_eq!(page.status, 422, "only the offered grace periods");

    // Both are in the audit log, by the admin.
    let audit = json_ok(
        app.get("/v1/admin/audit?limit=50", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let by_admin = |action: &str| {
        audit["items"]
            .as_array()
            .or(audit.as_array())
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action && e.to_string().contains(&admin.id))
            .count()
    };
    assert_eq!(by_admin("workspace.callback_secret.read"), 1, "{audit}");
    assert_eq!(by_admin("workspace.callback_secret.rotate"), 1, "{audit}");
    app.stop().await;
}
