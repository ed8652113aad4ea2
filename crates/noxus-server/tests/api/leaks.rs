//! Leaked-key reports (`POST /v1/keys/leaks`): whoever finds a key reports
//! it without a key of their own; a well-formed key that still works is
//! revoked within moments (off the request path), the answer is the same
//! whatever the candidates were, the workspace learns where it was found
//! (audit entry, usage flag, a banner until an admin dismisses it), and
//! the endpoint is bounded and throttled per address.

use std::time::{Duration, Instant};

use noxus_api::Role;
use noxus_server::rate_limit::RateLimit;
use noxus_testkit::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, json_ok, Browser};

/// `text` as the dashboard's templates escape it.
fn html(text: &str) -> String {
    text.replace('&', "&#38;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

/// A well-formed key that names nothing.
fn unknown_key() -> String {
    noxus_api::key_format::key_from_body("Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp")
}

fn report(app: &TestApp, body: &Value) -> reqwest::RequestBuilder {
    app.http.post(app.url("/v1/keys/leaks")).json(body)
}

/// Polls `GET /v1/admin/me` with `key` until it is refused (within 5 s: the
/// report is handled off the request path, usually within milliseconds)
/// and returns the refusal.
async fn refused(app: &TestApp, key: &str) -> Value {
    let started = Instant::now();
    loop {
        let response = app.get("/v1/admin/me", key).send().await.unwrap();
        if response.status() == StatusCode::UNAUTHORIZED {
            return response.json().await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the key still works after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What a client sees of an answer: status, body and header names (the
/// request id and the date differ from one answer to the next).
async fn seen(response: reqwest::Response) -> (u16, Vec<String>, String) {
    let status = response.status().as_u16();
    let mut headers: Vec<String> = response
        .headers()
        .keys()
        .map(|h| h.as_str().to_owned())
        .collect();
    headers.sort();
    (status, headers, response.text().await.unwrap())
}

#[tokio::test]
async fn unknown_malformed_and_valid_keys_get_the_same_answer_and_only_the_valid_one_is_revoked() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let mut typo = member.key.clone();
    typo.replace_range(10..11, if &typo[10..11] == "x" { "y" } else { "x" });
    let mut answers = Vec::new();
    for candidate in [
        unknown_key(),
        typo.clone(),
        "noxus_short".to_owned(),
        "not a key at all".to_owned(),
        member.key.clone(),
    ] {
        let response = report(&app, &json!({"keys": [{"key": candidate}]}))
            .send()
            .await
            .unwrap();
        answers.push(seen(response).await);
    }
    let (status, _, body) = &answers[0];
    assert_eq!(*status, 202, "{body}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["status"], "accepted");
    for answer in &answers[1..] {
        assert_eq!(answer, &answers[0], "every answer is the same");
    }
    let refusal = refused(&app, &member.key).await;
    assert_eq!(refusal["code"], "revoked_api_key", "{refusal}");
    assert!(
        refusal["detail"]
            .as_str()
            .unwrap()
            .contains("reported leaked"),
        "{refusal}"
    );
    // The owner's key, never reported, still works.
    json_ok(
        app.get("/v1/admin/me", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
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
    app.stop().await;
}

#[tokio::test]
async fn a_rotated_key_in_its_grace_period_reported_leaked_is_revoked_and_its_replacement_works() {
    let app = TestApp::spawn().await;
    let keys = format!("/v1/admin/groups/{}/api-keys", app.workspace_id);
    let old = json_ok(
        app.post(&keys, &app.owner_key)
            .json(&json!({"name": "deploy"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let old_key = old["value"].as_str().unwrap().to_owned();
    let rotated = json_ok(
        app.post(
            &format!("{keys}/{}/rotate", old["id"].as_str().unwrap()),
            &app.owner_key,
        )
        .json(&json!({"grace_period_seconds": 86400}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    let new_key = rotated["value"].as_str().unwrap().to_owned();
    // In its grace period the old key still works...
    json_ok(app.get("/v1/admin/me", &old_key).send().await.unwrap()).await;
    let response = report(
        &app,
        &json!({"keys": [{"key": old_key, "url": "https://example.com/paste/1"}]}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 202);
    // ...until it is reported: a leaked secret does not get to finish its grace.
    let refusal = refused(&app, &old_key).await;
    assert_eq!(refusal["code"], "revoked_api_key", "{refusal}");
    json_ok(app.get("/v1/admin/me", &new_key).send().await.unwrap()).await;
    app.stop().await;
}

#[tokio::test]
async fn the_workspace_sees_where_its_key_was_found_as_text_and_an_admin_dismisses_the_warning() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let url = "https://github.com/acme/app/blob/0a1b2c/.env#L3<script>alert(1)</script>";
    let response = report(
        &app,
        &json!({"keys": [{"key": member.key, "url": url, "source": "<b>scanner</b>"}]}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 202);
    refused(&app, &member.key).await;

    // The owner's API Keys page names the key, its fragment and where it
    // was found, escaped: the reporter's text is never markup.
    let mut owner = Browser::new(&app);
    owner.login(&app.owner).await;
    let keys_page = format!(
        "/settings/organization/workspaces/{}/api-keys",
        app.workspace_id
    );
    let page = owner.get(&keys_page).await;
    assert_eq!(page.status, StatusCode::OK);
    let banner_at = page
        .body
        .find("class=\"leak\"")
        .expect("a banner about the leaked key");
    let banner = &page.body[banner_at..];
    let fragment = format!(
        "{}…{}",
        &member.key[..10],
        &member.key[member.key.len() - 4..]
    );
    assert!(banner.contains(&fragment), "{banner}");
    assert!(banner.contains("was reported leaked"), "{banner}");
    assert!(banner.contains(&html(url)), "{banner}");
    assert!(banner.contains(&html("<b>scanner</b>")), "{banner}");
    assert!(!page.body.contains("<script>alert"), "never markup");
    assert!(!page.body.contains("<b>scanner"), "never markup");
    assert!(
        !banner.contains("href=\"https://github.com"),
        "never a link"
    );
    assert!(banner.contains("leak/dismiss"), "an owner may dismiss it");

    // The member sees the warning about their own key, without the button.
    let mut member_browser = Browser::new(&app);
    member_browser.login(&member).await;
    let theirs = member_browser.get(&keys_page).await;
    assert!(theirs.body.contains("class=\"leak\""), "{}", theirs.body);
    assert!(!theirs.body.contains("leak/dismiss"));
    let dismissed_by_member = member_browser
        .post(
            &format!("{keys_page}/{}/leak/dismiss", member.key_id),
            &[("csrf", &theirs.field("csrf").unwrap())],
        )
        .await;
    assert_eq!(dismissed_by_member.status, StatusCode::FORBIDDEN);

    // The audit log tells it as a sentence, escaped too.
    let audit = owner
        .get(&format!(
            "/settings/organization/workspaces/{}/audit",
            app.workspace_id
        ))
        .await;
    let sentence = html(&format!(
        "({fragment}): reported leaked at {url} (reported by <b>scanner</b>)."
    ));
    assert!(
        audit.body.contains("The platform revoked key"),
        "{}",
        audit.body
    );
    assert!(
        audit.body.contains(&sentence),
        "{sentence} in {}",
        audit.body
    );

    // The usage flag, over the API.
    let usage = json_ok(
        app.get(
            &format!(
                "/v1/admin/groups/{}/api-keys/{}/usage?hours=24",
                app.workspace_id, member.key_id
            ),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let flag = usage["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "reported_leaked")
        .unwrap_or_else(|| panic!("a reported_leaked flag in {usage}"));
    assert!(flag["sentence"].as_str().unwrap().contains(url), "{flag}");

    // The owner dismisses the warning: the banner goes, the key stays revoked.
    let dismissed = owner
        .post(
            &format!("{keys_page}/{}/leak/dismiss", member.key_id),
            &[("csrf", &page.field("csrf").unwrap())],
        )
        .await;
    assert_eq!(
        dismissed.status,
        StatusCode::SEE_OTHER,
        "{}",
        dismissed.body
    );
    let after = owner.get(&keys_page).await;
    assert!(!after.body.contains("class=\"leak\""), "{}", after.body);
    assert!(after.body.contains("was dismissed"), "the flash says so");
    assert!(
        after.body.contains("reported leaked"),
        "the key's status says why"
    );
    let again = owner
        .post(
            &format!("{keys_page}/{}/leak/dismiss", app.owner.key_id),
            &[("csrf", &page.field("csrf").unwrap())],
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "never reported");
    app.stop().await;
}

#[tokio::test]
async fn a_report_is_bounded_in_candidates_body_and_text() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let candidate = |key: &str| json!({"key": key});

    // 100 candidates, one of them a key that works: accepted, and revoked.
    let mut keys: Vec<Value> = (0..99).map(|i| candidate(&format!("noxus_{i}"))).collect();
    keys.push(candidate(&member.key));
    let response = report(&app, &json!({ "keys": keys })).send().await.unwrap();
    assert_eq!(response.status(), 202);
    refused(&app, &member.key).await;

    let refusals = [
        (json!({"keys": []}), "keys"),
        (
            json!({"keys": (0..101).map(|_| candidate(&unknown_key())).collect::<Vec<_>>()}),
            "keys",
        ),
        (
            json!({"keys": [candidate(&"k".repeat(257))]}),
            "keys[0].key",
        ),
        (
            json!({"keys": [{"key": unknown_key(), "url": "u".repeat(2049)}]}),
            "keys[0].url",
        ),
        (
            json!({"keys": [candidate("x"), {"key": unknown_key(), "url": "https://x.test/\nfake log line"}]}),
            "keys[1].url",
        ),
        (
            json!({"keys": [{"key": unknown_key(), "source": ""}]}),
            "keys[0].source",
        ),
        (
            json!({"keys": [{"key": unknown_key(), "source": "s".repeat(101)}]}),
            "keys[0].source",
        ),
    ];
    for (body, field) in refusals {
        let error = assert_error(
            report(&app, &body).send().await.unwrap(),
            422,
            "validation_error",
        )
        .await;
        assert_eq!(error["field"], field, "{error}");
    }
    // The body has its own cap, far below the API's 2 MiB.
    let padding = "a".repeat(noxus_api::limits::LEAK_REPORT_BODY_MAX_BYTES);
    let response = report(&app, &json!({"keys": [{"key": padding}]}))
        .send()
        .await
        .unwrap();
    assert_error(response, 413, "payload_too_large").await;
    app.stop().await;
}

#[tokio::test]
async fn malformed_json_is_a_clear_422_that_never_echoes_a_key() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let send = |body: String| {
        app.http
            .post(app.url("/v1/keys/leaks"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let error = assert_error(
        send("{\"keys\": [".to_owned()).await.unwrap(),
        422,
        "validation_error",
    )
    .await;
    assert!(
        error["detail"]
            .as_str()
            .unwrap()
            .starts_with("The request body is not valid JSON"),
        "{error}"
    );
    let error = assert_error(
        send("[]".to_owned()).await.unwrap(),
        422,
        "validation_error",
    )
    .await;
    assert!(
        error["detail"].as_str().unwrap().contains("JSON object"),
        "{error}"
    );
    let error = assert_error(send(String::new()).await.unwrap(), 422, "validation_error").await;
    assert!(
        error["detail"].as_str().unwrap().contains("empty"),
        "{error}"
    );
    // A key where a list belongs: the error names the field and quotes at
    // most the key's first characters.
    let body = json!({"keys": member.key}).to_string();
    let error = assert_error(send(body).await.unwrap(), 422, "validation_error").await;
    assert_eq!(error["field"], "keys", "{error}");
    assert!(!error.to_string().contains(&member.key[10..]), "{error}");
    let body = json!({"keys": [{"key": member.key, "where": "x"}]}).to_string();
    let error = assert_error(send(body).await.unwrap(), 422, "validation_error").await;
    assert!(
        error["detail"].as_str().unwrap().contains("where"),
        "{error}"
    );
    // None of these reported anything.
    json_ok(app.get("/v1/admin/me", &member.key).send().await.unwrap()).await;
    app.stop().await;
}

#[tokio::test]
async fn reports_are_throttled_per_address_behind_trusted_proxies() {
    let app = TestApp::spawn_with(|config| {
        config.leak_report_limit = RateLimit {
            per_second: 1,
            burst: 3,
        };
        config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let body = json!({"keys": [{"key": unknown_key()}]});
    let from = |addr: &str| report(&app, &body).header("x-forwarded-for", addr).send();
    for _ in 0..3 {
        assert_eq!(from("203.0.113.7").await.unwrap().status(), 202);
    }
    let throttled = from("203.0.113.7").await.unwrap();
    let retry_after: u64 = throttled.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let error = assert_error(throttled, 429, "rate_limited").await;
    assert!(
        error["detail"]
            .as_str()
            .unwrap()
            .starts_with("Too many leak reports from your address"),
        "{error}"
    );
    // Another client behind the same proxy has its own allowance; keys are
    // not affected at all.
    assert_eq!(from("203.0.113.8").await.unwrap().status(), 202);
    json_ok(
        app.get("/v1/admin/me", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn the_endpoint_is_described_in_the_openapi_document_without_a_key() {
    let app = TestApp::spawn().await;
    let doc = json_ok(app.http.get(app.url("/openapi.json")).send().await.unwrap()).await;
    let operation = &doc["paths"]["/v1/keys/leaks"]["post"];
    assert_eq!(
        operation["operationId"], "report_leaked_keys",
        "{operation}"
    );
    assert_eq!(operation["security"], json!([{}]), "no key needed");
    let responses = &operation["responses"];
    for status in ["202", "408", "413", "422", "429", "503"] {
        assert!(responses.get(status).is_some(), "{status} in {responses}");
    }
    assert!(responses.get("401").is_none(), "{responses}");
    assert_eq!(responses["429"]["headers"]["Retry-After"]["required"], true);
    assert!(responses["429"]["description"]
        .as_str()
        .unwrap()
        .contains("from this address"));
    let candidates = &doc["components"]["schemas"]["LeakReport"]["properties"]["keys"];
    assert_eq!(candidates["maxItems"], 100, "{candidates}");
    assert_eq!(candidates["minItems"], 1, "{candidates}");
    let candidate = &doc["components"]["schemas"]["LeakCandidate"]["properties"];
    assert_eq!(candidate["key"]["maxLength"], 256);
    assert_eq!(candidate["url"]["maxLength"], 2048);
    assert_eq!(candidate["source"]["maxLength"], 100);
    app.stop().await;
}
