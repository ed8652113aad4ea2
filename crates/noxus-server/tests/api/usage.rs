//! Per-key usage: counted off the request path, flushed in batches, exact
//! across a graceful restart, readable per key and per workspace.

use noxus_api::Role;
use noxus_testkit::TestApp;
use serde_json::{json, Value};

use crate::helpers::json_ok;

fn usage_path(app: &TestApp, key_id: &str) -> String {
    format!(
        "/v1/admin/groups/{}/api-keys/{key_id}/usage",
        app.workspace_id
    )
}

#[tokio::test]
async fn every_request_is_counted_against_its_key_with_its_outcome() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    for _ in 0..7 {
        json_ok(app.get("/v1/workflows", &member.key).send().await.unwrap()).await;
    }
    for _ in 0..3 {
        let r = app
            .get(
                "/v1/workflows/00000000-0000-0000-0000-000000000000",
                &member.key,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let r = app
        .get(
            &format!("/v1/admin/groups/{}/usage", app.workspace_id),
            &member.key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "workspace usage needs keys:manage");

    let usage = json_ok(
        app.get(&usage_path(&app, &member.key_id), &member.key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(usage["bucket"], "hour");
    assert_eq!(usage["points"].as_array().unwrap().len(), 24);
    let totals = &usage["totals"];
    assert_eq!(totals["requests"], 11, "{usage}");
    assert_eq!(totals["ok"], 7);
    assert_eq!(totals["client_errors"], 4);
    assert_eq!(totals["forbidden"], 1);
    let last_point = usage["points"].as_array().unwrap().last().unwrap();
    assert_eq!(last_point["requests"], 11, "all in the current hour");
    assert_eq!(usage["last_used_addr"], "127.0.0.1");
    assert!(usage["last_used_at"].is_string());
    assert_eq!(usage["addresses"][0]["addr"], "127.0.0.1");

    // The read itself is counted after it answers.
    let again = json_ok(
        app.get(&usage_path(&app, &member.key_id), &member.key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(again["totals"]["requests"], 12);
    let daily = json_ok(
        app.get(
            &format!("{}?hours=168&bucket=day", usage_path(&app, &member.key_id)),
            &member.key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(daily["bucket"], "day");
    assert!(daily["points"].as_array().unwrap().len() >= 7);
    assert_eq!(daily["totals"]["requests"], 13);
    let bad = app
        .get(
            &format!("{}?bucket=week", usage_path(&app, &member.key_id)),
            &member.key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    app.stop().await;
}

#[tokio::test]
async fn refusals_of_a_known_key_are_counted_too() {
    let app = TestApp::spawn().await;
    let viewer = app.user_with_role(Role::Viewer).await;
    for _ in 0..2 {
        let r = app
            .post("/v1/workflows", &viewer.key)
            .json(&json!({"name": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    json_ok(
        app.delete(
            &format!(
                "/v1/admin/groups/{}/api-keys/{}",
                app.workspace_id, viewer.key_id
            ),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    for _ in 0..3 {
        let r = app.get("/v1/workflows", &viewer.key).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
    let usage = json_ok(
        app.get(&usage_path(&app, &viewer.key_id), &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(usage["totals"]["requests"], 5, "{usage}");
    assert_eq!(usage["totals"]["forbidden"], 2);
    assert_eq!(usage["totals"]["unauthorized"], 3);
    app.stop().await;
}

#[tokio::test]
async fn a_graceful_restart_loses_no_count() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let n = 37;
    for _ in 0..n {
        json_ok(app.get("/v1/nodes", &member.key).send().await.unwrap()).await;
    }
    let workspace = app.workspace_id.clone();
    let dir = app.stop_keep_data().await;

    let app = TestApp::start_in(dir.path(), |_| {}).await;
    let usage = json_ok(
        app.get(
            &format!(
                "/v1/admin/groups/{workspace}/api-keys/{}/usage",
                member.key_id
            ),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(usage["totals"]["requests"], n, "{usage}");
    app.stop().await;
}

#[tokio::test]
async fn workspace_usage_adds_up_every_key_busiest_first() {
    let app = TestApp::spawn().await;
    let a = app.user_with_role(Role::Member).await;
    let b = app.user_with_role(Role::Member).await;
    for _ in 0..5 {
        json_ok(app.get("/v1/workflows", &a.key).send().await.unwrap()).await;
    }
    for _ in 0..2 {
        json_ok(app.get("/v1/workflows", &b.key).send().await.unwrap()).await;
    }
    let usage: Value = json_ok(
        app.get(
            &format!("/v1/admin/groups/{}/usage", app.workspace_id),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(usage["totals"]["requests"], 7, "{usage}");
    assert_eq!(usage["keys"][0]["key_id"], a.key_id.as_str());
    assert_eq!(usage["keys"][0]["totals"]["requests"], 5);
    assert_eq!(usage["keys"][1]["totals"]["requests"], 2);
    assert!(usage["keys"][0]["value"].as_str().unwrap().contains('…'));
    app.stop().await;
}

#[tokio::test]
async fn usage_older_than_the_retention_is_pruned() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let now_hour = time::OffsetDateTime::now_utc()
        .unix_timestamp()
        .div_euclid(3600);
    let one = noxus_server::store::UsageCounts {
        requests: 1,
        ok: 1,
        ..Default::default()
    };
    let flush = noxus_server::store::KeyUsageFlush {
        key_id: member.key_id.clone(),
        workspace_id: app.workspace_id.clone(),
        hours: vec![
            (now_hour - 24 * 100, one),
            (now_hour - 24 * 10, one),
            (now_hour, one),
        ],
        ..Default::default()
    };
    app.state.store().record_usage(&[flush]).await.unwrap();
    noxus_server::usage::prune(app.state.store(), 90).await;
    let left = app
        .state
        .store()
        .usage_hours(&app.workspace_id, Some(&member.key_id), 0, now_hour)
        .await
        .unwrap();
    let hours: Vec<i64> = left.iter().map(|h| now_hour - h.hour).collect();
    assert_eq!(
        hours,
        vec![240, 0],
        "the 100-day-old hour went, the rest stayed"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_never_collide_with_the_usage_flusher() {
    let app = TestApp::spawn_with(|c| c.key_rate_limit = None).await;
    for round in 0..10 {
        let mut tasks = Vec::new();
        for i in 0..20 {
            let request = app
                .post("/v1/workflows", &app.owner_key)
                .json(&json!({"name": format!("w{round}-{i}")}));
            tasks.push(tokio::spawn(async move {
                request.send().await.map(|r| r.status().as_u16())
            }));
        }
        // Usage of the requests above is being written meanwhile.
        app.state.usage().flush(app.state.store()).await;
        for task in tasks {
            assert_eq!(
                task.await.unwrap().unwrap(),
                201,
                "a write failed while usage was flushed"
            );
        }
    }
    app.stop().await;
}
