//! Unusual activity: each flag produced by creating its situation.

use noxus_api::Role;
use noxus_server::store::{Actor, KeyUsageFlush, UsageCounts};
use noxus_testkit::TestApp;
use serde_json::{json, Value};

use crate::helpers::json_ok;

async fn usage(app: &TestApp, key_id: &str) -> Value {
    let path = format!(
        "/v1/admin/groups/{}/api-keys/{key_id}/usage?hours=24",
        app.workspace_id
    );
    json_ok(app.get(&path, &app.owner_key).send().await.unwrap()).await
}

fn kinds(usage: &Value) -> Vec<String> {
    usage["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_quiet_key_used_as_usual_has_no_flag() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    for _ in 0..5 {
        json_ok(app.get("/v1/workflows", &member.key).send().await.unwrap()).await;
    }
    assert!(kinds(&usage(&app, &member.key_id).await).is_empty());
    app.stop().await;
}

#[tokio::test]
async fn first_use_from_a_new_address_is_flagged() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    json_ok(app.get("/v1/workflows", &member.key).send().await.unwrap()).await;
    app.state.usage().flush(app.state.store()).await;
    // Same machine, another loopback address: the server sees 127.0.0.2.
    let elsewhere = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let r = elsewhere
        .get(app.url("/v1/workflows"))
        .header("X-API-Key", &member.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let usage = usage(&app, &member.key_id).await;
    assert_eq!(kinds(&usage), vec!["new_address"], "{usage}");
    let sentence = usage["flags"][0]["sentence"].as_str().unwrap();
    assert!(
        sentence.starts_with("First use from 127.0.0.2")
            && sentence.contains("only from 127.0.0.1"),
        "{sentence}"
    );
    assert!(usage["flags"][0]["hour"]
        .as_str()
        .unwrap()
        .ends_with(":00:00Z"));
    app.stop().await;
}

#[tokio::test]
async fn an_hour_far_above_the_weekly_average_is_a_spike() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let now_hour = time::OffsetDateTime::now_utc()
        .unix_timestamp()
        .div_euclid(3600);
    let quiet = UsageCounts {
        requests: 2,
        ok: 2,
        ..Default::default()
    };
    let busy = UsageCounts {
        requests: 150,
        ok: 150,
        ..Default::default()
    };
    let mut hours: Vec<(i64, UsageCounts)> = (1..=168).map(|h| (now_hour - h, quiet)).collect();
    hours.push((now_hour, busy));
    app.state
        .store()
        .record_usage(
            &[KeyUsageFlush {
                key_id: member.key_id.clone().into(),
                workspace_id: app.workspace_id.clone().into(),
                hours,
                last_used: None,
                addresses: Vec::new(),
            }],
            100,
        )
        .await
        .unwrap();
    let usage = usage(&app, &member.key_id).await;
    assert_eq!(kinds(&usage), vec!["spike"], "{usage}");
    let sentence = usage["flags"][0]["sentence"].as_str().unwrap();
    assert!(
        sentence.starts_with("150 requests in the hour") && sentence.contains("average of 2.0"),
        "{sentence}"
    );

    // The workspace view lists it too, with the key.
    let ws = json_ok(
        app.get(
            &format!("/v1/admin/groups/{}/usage", app.workspace_id),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(ws["flags"][0]["key_id"], member.key_id.as_str());
    app.stop().await;
}

#[tokio::test]
async fn a_burst_of_403s_is_flagged_as_probing() {
    let app = TestApp::spawn().await;
    let viewer = app.user_with_role(Role::Viewer).await;
    for _ in 0..10 {
        let r = app
            .post("/v1/workflows", &viewer.key)
            .json(&json!({"name": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    let usage = usage(&app, &viewer.key_id).await;
    assert_eq!(kinds(&usage), vec!["forbidden_burst"], "{usage}");
    assert!(usage["flags"][0]["sentence"]
        .as_str()
        .unwrap()
        .starts_with("10 requests refused for missing permissions (403)"));
    app.stop().await;
}

#[tokio::test]
async fn use_after_the_owner_was_demoted_is_flagged() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    json_ok(app.get("/v1/workflows", &member.key).send().await.unwrap()).await;
    noxus_server::members::set_role(
        &app.state,
        &Actor::system(),
        &app.workspace_id.as_str().into(),
        &member.id.as_str().into(),
        Role::Viewer,
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    json_ok(app.get("/v1/workflows", &member.key).send().await.unwrap()).await;
    let usage = usage(&app, &member.key_id).await;
    assert_eq!(kinds(&usage), vec!["used_after_demotion"], "{usage}");
    let sentence = usage["flags"][0]["sentence"].as_str().unwrap();
    assert!(
        sentence.contains("demoted from member to viewer"),
        "{sentence}"
    );
    app.stop().await;
}
