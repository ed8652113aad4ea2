//! The security webhook of a workspace, against a real receiver (an axum
//! server on 127.0.0.1, the platform started with
//! `allow_loopback_callbacks`): a key reported leaked
//! (`POST /v1/keys/leaks`) is posted as a signed `api_key.reported_leaked`
//! event that never holds the key, retried when the receiver fails, and
//! sent to that key's workspace only; setting the webhook needs
//! `workspace:write` and a URL checked as a `callback_url` is.

use std::time::Duration;

use noxus_api::Role;
use noxus_server::Config;
use noxus_testkit::TestApp;
use serde_json::{json, Value};

use crate::helpers::{assert_error, json_ok};
use crate::receiver::Receiver;

/// A pepper, so that events can be signed on either backend (on
/// PostgreSQL the signing secret comes from it).
const PEPPER: &str = "leak-webhook-test-pepper-0123456789abcdefgh";

fn with_loopback(config: &mut Config) {
    config.pepper = Some(PEPPER.to_owned().into());
    config.allow_loopback_callbacks = true;
    config.callback_retry_base = Duration::from_millis(50);
}

fn webhook_path(workspace: &str) -> String {
    format!("/v1/admin/groups/{workspace}/security-webhook")
}

fn put_webhook(app: &TestApp, workspace: &str, key: &str, url: &str) -> reqwest::RequestBuilder {
    app.http
        .put(app.url(&webhook_path(workspace)))
        .header("X-API-Key", key)
        .json(&json!({ "url": url }))
}

async fn set_webhook(app: &TestApp, workspace: &str, key: &str, url: &str) -> Value {
    json_ok(put_webhook(app, workspace, key, url).send().await.unwrap()).await
}

async fn report(app: &TestApp, keys: Value) -> (u16, String) {
    let response = app
        .http
        .post(app.url("/v1/keys/leaks"))
        .json(&json!({ "keys": keys }))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Waits until the leak reports are handled, then long enough for the
/// sender to have posted whatever was queued (its retry base is 50 ms and
/// it is woken by the revocation).
async fn settle(app: &TestApp) {
    assert!(
        app.state
            .leak_reports()
            .wait_idle(Duration::from_secs(5))
            .await
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
}

async fn workspace_secret(app: &TestApp, workspace: &str, key: &str) -> String {
    let got = json_ok(
        app.get(
            &format!("/v1/admin/groups/{workspace}/callback-secret"),
            key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    got["secret"].as_str().unwrap().to_owned()
}

/// The webhook's latest delivery once it is no longer pending.
async fn settled_delivery(app: &TestApp, workspace: &str, key: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let hook = json_ok(app.get(&webhook_path(workspace), key).send().await.unwrap()).await;
        let latest = &hook["recent_deliveries"][0];
        if ["delivered", "failed"].contains(&latest["status"].as_str().unwrap_or("")) {
            return latest.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the delivery did not settle: {hook}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_reported_key_is_posted_to_its_workspace_signed_and_without_the_key() {
    let app = TestApp::spawn_with(with_loopback).await;
    let receiver = Receiver::start(&[]).await;
    let set = set_webhook(&app, &app.workspace_id, &app.owner_key, &receiver.url).await;
    assert_eq!(set["url"], receiver.url.as_str());
    assert_eq!(set["events"], json!(["api_key.reported_leaked"]));
    assert_eq!(set["recent_deliveries"], json!([]));
    let member = app.user_with_role(Role::Member).await;
    let found_at = "https://github.com/acme/app/blob/0a1b2c/.env#L3";

    // Unknown and malformed keys: the same answer as a real one, and
    // nothing is sent.
    let unknown = noxus_api::key_format::key_from_body("Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp");
    let nothing = report(&app, json!([{"key": unknown, "url": found_at}])).await;
    let malformed = report(&app, json!([{"key": "noxus_short", "url": found_at}])).await;
    settle(&app).await;
    assert_eq!(receiver.count(), 0, "no event for keys that are not keys");

    let real = report(
        &app,
        json!([{"key": member.key, "url": found_at, "source": "github"}]),
    )
    .await;
    assert_eq!(real.0, 202);
    assert_eq!(nothing, real, "the same answer whatever the keys were");
    assert_eq!(malformed, real);

    let got = receiver.wait_for(1).await;
    let event = &got[0];
    let secret = workspace_secret(&app, &app.workspace_id, &app.owner_key).await;
    assert!(event.signed_with(&secret), "the signature verifies");
    assert!(!event.signed_with("whsec_another"), "and only under it");
    let (t, _) = event.signature();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((now - t).abs() < 300, "a fresh timestamp: {t} vs {now}");
    assert_eq!(event.header("noxus-event"), "api_key.reported_leaked");
    assert_eq!(event.header("noxus-attempt"), "1");
    assert_eq!(event.header("content-type"), "application/json");

    let body = event.json();
    assert_eq!(body["type"], "api_key.reported_leaked");
    assert_eq!(body["id"], event.header("noxus-delivery"));
    assert!(time::OffsetDateTime::parse(
        body["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339
    )
    .is_ok());
    let data = &body["data"];
    assert_eq!(data["key_id"], member.key_id.as_str());
    assert_eq!(data["workspace_id"], app.workspace_id.as_str());
    assert!(data["key_name"].is_string(), "{body}");
    let fragment = format!(
        "{}…{}",
        &member.key[..10],
        &member.key[member.key.len() - 4..]
    );
    assert_eq!(data["fragment"], fragment.as_str());
    assert_eq!(data["found_at"], found_at);
    assert_eq!(data["source"], "github");
    assert_eq!(data["revoked_at"], body["created_at"]);
    let raw = String::from_utf8(event.body.clone()).unwrap();
    assert!(!raw.contains(&member.key), "never the key: {raw}");
    assert!(
        !raw.contains(&member.key[10..30]),
        "nor a part of it: {raw}"
    );

    // The key is revoked at the time the event says.
    let key = json_ok(
        app.get(
            &format!(
                "/v1/admin/groups/{}/api-keys/{}",
                app.workspace_id, member.key_id
            ),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(key["status"], "revoked");
    assert_eq!(key["revoked_reason"], "leaked");
    assert_eq!(key["revoked_at"], data["revoked_at"]);

    // The webhook says how it went; reporting the key again sends nothing
    // more (it is already revoked).
    let delivery = settled_delivery(&app, &app.workspace_id, &app.owner_key).await;
    assert_eq!(delivery["status"], "delivered", "{delivery}");
    assert_eq!(delivery["id"], event.header("noxus-delivery"));
    assert_eq!(delivery["key_id"], member.key_id.as_str());
    assert_eq!(delivery["attempts"], 1);
    assert_eq!(delivery["last_status_code"], 200);
    report(&app, json!([{"key": member.key}])).await;
    settle(&app).await;
    assert_eq!(receiver.count(), 1);

    // Setting it is in the audit log, by origin only (the URL's token
    // stays out).
    let audit = json_ok(
        app.get("/v1/admin/audit?limit=50", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await
    .to_string();
    assert!(audit.contains("workspace.security_webhook.set"), "{audit}");
    assert!(!audit.contains("t0k3n"), "{audit}");
    app.stop().await;
}

#[tokio::test]
async fn a_receiver_that_answers_500_gets_the_same_event_again() {
    let app = TestApp::spawn_with(with_loopback).await;
    let receiver = Receiver::start(&[500]).await;
    set_webhook(&app, &app.workspace_id, &app.owner_key, &receiver.url).await;
    let member = app.user_with_role(Role::Member).await;
    report(
        &app,
        json!([{"key": member.key, "url": "https://example.com/p/1"}]),
    )
    .await;

    let got = receiver.wait_for(2).await;
    assert_eq!(got[0].header("noxus-attempt"), "1");
    assert_eq!(got[1].header("noxus-attempt"), "2");
    assert_eq!(
        got[0].header("noxus-delivery"),
        got[1].header("noxus-delivery"),
        "one delivery, attempted twice"
    );
    assert_eq!(got[0].body, got[1].body, "the same event");
    let secret = workspace_secret(&app, &app.workspace_id, &app.owner_key).await;
    assert!(got[1].signed_with(&secret));
    let delivery = settled_delivery(&app, &app.workspace_id, &app.owner_key).await;
    assert_eq!(delivery["status"], "delivered", "{delivery}");
    assert_eq!(delivery["attempts"], 2);
    assert_eq!(delivery["last_status_code"], 200);
    settle(&app).await;
    assert_eq!(receiver.count(), 2, "nothing after the 2xx");
    app.stop().await;
}

#[tokio::test]
async fn only_the_leaked_keys_workspace_hears_of_it_and_only_if_it_set_a_webhook() {
    let app = TestApp::spawn_with(with_loopback).await;
    let other = app.second_workspace("Other").await;
    let other_manager = app.management_key(&other, Role::Owner).await;
    let theirs = Receiver::start(&[]).await;
    set_webhook(&app, &other.workspace_id, &other_manager, &theirs.url).await;

    // This workspace has no webhook: its leaked key is revoked, and no
    // one is told (least of all the other workspace).
    let member = app.user_with_role(Role::Member).await;
    report(&app, json!([{"key": member.key}])).await;
    settle(&app).await;
    assert_error(
        app.get("/v1/admin/me", &member.key).send().await.unwrap(),
        401,
        "revoked_api_key",
    )
    .await;
    assert_eq!(
        theirs.count(),
        0,
        "another workspace's webhook gets nothing"
    );
    assert_error(
        app.get(&webhook_path(&app.workspace_id), &app.owner_key)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;

    // With a webhook each, a key goes to its own workspace's only.
    let ours = Receiver::start(&[]).await;
    set_webhook(&app, &app.workspace_id, &app.owner_key, &ours.url).await;
    report(&app, json!([{"key": other.key}])).await;
    let got = theirs.wait_for(1).await;
    assert_eq!(got[0].json()["data"]["key_id"], other.key_id.as_str());
    let other_secret = workspace_secret(&app, &other.workspace_id, &other_manager).await;
    let our_secret = workspace_secret(&app, &app.workspace_id, &app.owner_key).await;
    assert!(got[0].signed_with(&other_secret));
    assert!(
        !got[0].signed_with(&our_secret),
        "each workspace its secret"
    );
    settle(&app).await;
    assert_eq!(ours.count(), 0);

    // Removed: nothing more is sent.
    let removed = json_ok(
        app.delete(&webhook_path(&other.workspace_id), &other_manager)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(removed["deleted"], true);
    let another = app.user_in(&other.workspace_id, Role::Member).await;
    report(&app, json!([{"key": another.key}])).await;
    settle(&app).await;
    assert_eq!(theirs.count(), 1);
    assert_error(
        app.delete(&webhook_path(&other.workspace_id), &other_manager)
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
async fn setting_the_webhook_needs_workspace_write_in_that_workspace() {
    let app = TestApp::spawn_with(with_loopback).await;
    let receiver = Receiver::start(&[]).await;
    let path = webhook_path(&app.workspace_id);
    let member = app.user_with_role(Role::Member).await;
    let admin = app.user_with_role(Role::Admin).await;
    // admin.key was made without `permissions`: no management.
    for key in [&member.key, &admin.key] {
        let refused = assert_error(
            put_webhook(&app, &app.workspace_id, key, &receiver.url)
                .send()
                .await
                .unwrap(),
            403,
            "insufficient_permissions",
        )
        .await;
        assert!(
            refused["detail"]
                .as_str()
                .unwrap()
                .contains("workspace:write"),
            "{refused}"
        );
        for request in [app.get(&path, key), app.delete(&path, key)] {
            assert_error(
                request.send().await.unwrap(),
                403,
                "insufficient_permissions",
            )
            .await;
        }
    }
    // Another workspace's manager names this one: refused.
    let other = app.second_workspace("Other").await;
    let other_manager = app.management_key(&other, Role::Owner).await;
    assert_error(
        put_webhook(&app, &app.workspace_id, &other_manager, &receiver.url)
            .send()
            .await
            .unwrap(),
        403,
        "wrong_workspace",
    )
    .await;
    // A workspace that does not exist (or is another organization's).
    assert_error(
        put_webhook(
            &app,
            "00000000-0000-0000-0000-000000000000",
            &app.owner_key,
            &receiver.url,
        )
        .send()
        .await
        .unwrap(),
        404,
        "not_found",
    )
    .await;
    // Nothing was set by any of them.
    assert_error(
        app.get(&path, &app.owner_key).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_url_refused_as_a_callback_url_is_a_422_that_says_why() {
    // Without --allow-loopback-callbacks, as a production server runs.
    let app = TestApp::spawn_with(|config| {
        config.pepper = Some(PEPPER.to_owned().into());
    })
    .await;
    for (url, says) in [
        ("ftp://example.com/hook", "http or https"),
        ("http://127.0.0.1:9/hook", "loopback address"),
        ("http://10.0.0.1/hook", "private address"),
        ("http://169.254.169.254/latest", "link-local address"),
        ("https://user:pw@example.com/hook", "user name or password"),
        ("not a url", "not a valid URL"),
    ] {
        let refused = assert_error(
            put_webhook(&app, &app.workspace_id, &app.owner_key, url)
                .send()
                .await
                .unwrap(),
            422,
            "validation_error",
        )
        .await;
        let detail = refused["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{url}: {refused}");
        assert_eq!(refused["field"], "url", "names the field: {refused}");
    }
    let long = format!("https://example.com/{}", "a".repeat(2048));
    assert_error(
        put_webhook(&app, &app.workspace_id, &app.owner_key, &long)
            .send()
            .await
            .unwrap(),
        422,
        "validation_error",
    )
    .await;
    // A missing url, an unknown field.
    for body in [
        json!({}),
        json!({"url": "https://example.com/", "events": []}),
    ] {
        assert_error(
            app.http
                .put(app.url(&webhook_path(&app.workspace_id)))
                .header("X-API-Key", &app.owner_key)
                .json(&body)
                .send()
                .await
                .unwrap(),
            422,
            "validation_error",
        )
        .await;
    }
    // A public host is taken (it is resolved at each attempt, not now).
    let set = set_webhook(
        &app,
        &app.workspace_id,
        &app.owner_key,
        "https://hooks.example.com/noxus?token=abc",
    )
    .await;
    assert_eq!(set["url"], "https://hooks.example.com/noxus?token=abc");
    app.stop().await;
}

#[tokio::test]
async fn without_a_signing_secret_the_webhook_is_refused_as_callbacks_are() {
    // No pepper: on SQLite the data directory holds the signing secret; on
    // PostgreSQL there is none, and nothing could be signed.
    let app = TestApp::spawn_with(|config| {
        config.pepper = None;
        config.allow_loopback_callbacks = true;
    })
    .await;
    let response = put_webhook(
        &app,
        &app.workspace_id,
        &app.owner_key,
        "https://hooks.example.com/noxus",
    )
    .send()
    .await
    .unwrap();
    if app.is_postgres() {
        let refused = assert_error(response, 422, "validation_error").await;
        assert!(
            refused["detail"]
                .as_str()
                .unwrap()
                .contains("NOXUS_KEY_PEPPER"),
            "{refused}"
        );
    } else {
        assert_eq!(response.status(), 200);
    }
    app.stop().await;
}

#[tokio::test]
async fn admins_set_and_remove_the_webhook_on_the_callbacks_tab_after_confirming_their_password() {
    use crate::helpers::Browser;
    let app = TestApp::spawn_with(with_loopback).await;
    let receiver = Receiver::start(&[]).await;
    let tab = format!(
        "/settings/organization/workspaces/{}/callbacks",
        app.workspace_id
    );

    // A member is refused the form.
    let member = app.user_with_role(Role::Member).await;
    let mut browser = Browser::new(&app);
    browser.login(&member).await;
    let csrf = browser.csrf().await;
    let page = browser
        .post(
            &format!("{tab}/security-webhook"),
            &[("csrf", &csrf), ("url", &receiver.url)],
        )
        .await;
    assert_eq!(page.status, 403);

    let admin = app.user_with_role(Role::Admin).await;
    let mut browser = Browser::new(&app);
    browser.login(&admin).await;
    let page = browser.get(&tab).await;
    assert!(page.body.contains("No security webhook"), "{}", page.body);
    // The password entered more than 10 minutes ago: asked again.
    browser.end_sudo(&app).await;
    let csrf = browser.csrf().await;
    let page = browser
        .post(
            &format!("{tab}/security-webhook"),
            &[("csrf", &csrf), ("url", &receiver.url)],
        )
        .await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location_path(), "/sudo");
    browser.sudo(&admin.password, &tab).await;

    // A private address is refused with the API's reason.
    let page = browser
        .post(
            &format!("{tab}/security-webhook"),
            &[("csrf", &csrf), ("url", "http://10.0.0.1/hook")],
        )
        .await;
    assert_eq!(page.status, 422);
    assert!(page.body.contains("private address"), "{}", page.body);

    let page = browser
        .post(
            &format!("{tab}/security-webhook"),
            &[("csrf", &csrf), ("url", &receiver.url)],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Security webhook saved"),
        "{}",
        page.body
    );
    // The API sees what the dashboard set.
    let hook = json_ok(
        app.get(&webhook_path(&app.workspace_id), &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(hook["url"], receiver.url.as_str());

    let page = browser
        .post(
            &format!("{tab}/security-webhook/remove"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Security webhook removed"),
        "{}",
        page.body
    );
    assert_error(
        app.get(&webhook_path(&app.workspace_id), &app.owner_key)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    app.stop().await;
}
