//! Workflow runs over the API: started with a key, executed off the
//! request path, read, listed, streamed (server-sent events), stopped and
//! deleted; another workspace's runs are 404; a viewer may read but not
//! start; a stream ends when the key that opened it is revoked, expires,
//! or its owner is removed or deactivated; one key and one workspace hold
//! a bounded number of streams.

use std::time::{Duration, Instant};

use noxus_api::Role;
use noxus_testkit::TestApp;
use serde_json::{json, Value};

use crate::helpers::{assert_error, json_ok};

/// Input → ComposeText ("Hello, {input}!") → Output, with fresh node ids.
fn greeting_definition() -> (Value, String, String) {
    let input = uuid::Uuid::new_v4().to_string();
    let compose = uuid::Uuid::new_v4().to_string();
    let output = uuid::Uuid::new_v4().to_string();
    let edge = |from: &str, to: &str| {
        json!({"from_id": {"node_id": from, "connector_name": "output", "key": null, "optional": false},
               "to_id": {"node_id": to, "connector_name": "input", "key": null, "optional": false},
               "id": uuid::Uuid::new_v4().to_string()})
    };
    let definition = json!({
        "flow_version": "v1",
        "nodes": [
            {"type": "InputNode", "id": input, "node_config": {"label": "Name"}, "connector_config": {"inputs": [], "outputs": []}},
            {"type": "ComposeTextNode", "id": compose, "node_config": {"template": "Hello, {input}!"}, "connector_config": {"inputs": [], "outputs": []}},
            {"type": "OutputNode", "id": output, "node_config": {"label": "Greeting"}, "connector_config": {"inputs": [], "outputs": []}}
        ],
        "edges": [edge(&input, &compose), edge(&compose, &output)]
    });
    (definition, input, output)
}

async fn save(app: &TestApp, key: &str, definition: &Value) -> String {
    let created = json_ok(
        app.post("/v1/workflows", key)
            .json(&json!({"name": "greeting", "type": "flow", "definition": definition}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    created["id"].as_str().unwrap().to_owned()
}

async fn wait_done(app: &TestApp, key: &str, workflow: &str, run: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = json_ok(
            app.get(&format!("/v1/workflows/{workflow}/runs/{run}"), key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        if ["completed", "failed", "stopped"].contains(&got["status"].as_str().unwrap()) {
            return got;
        }
        assert!(Instant::now() < deadline, "the run did not end: {got}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_run_executes_its_nodes_and_is_read_listed_streamed_and_deleted() {
    let app = TestApp::spawn().await;
    let key = app.owner_key.clone();
    let (definition, input, output) = greeting_definition();
    let workflow = save(&app, &key, &definition).await;

    let started = app
        .post(&format!("/v1/workflows/{workflow}/runs"), &key)
        .json(&json!({"input": {format!("{input}::input"): "Ada"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 201);
    let started: Value = started.json().await.unwrap();
    for field in [
        "id",
        "group_id",
        "workflow_id",
        "input",
        "status",
        "progress",
        "created_at",
    ] {
        assert!(started.get(field).is_some(), "no {field} in {started}");
    }
    assert_eq!(started["workflow_id"], workflow.as_str());
    let run = started["id"].as_str().unwrap().to_owned();

    let done = wait_done(&app, &key, &workflow, &run).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"], 100);
    assert_eq!(
        done["output"][format!("{output}::output")]["text"],
        "Hello, Ada!"
    );
    assert!(done["finished_at"].is_string());

    // The events, from the start, end with the terminal one.
    let response = app
        .get(&format!("/v1/runs/{run}/events"), &key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let body = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .expect("a finished run's stream ends by itself")
        .unwrap();
    let frames: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"queued"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"completed"), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "node_started").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(
        frames.last().unwrap()["data"]["workflow_status"],
        "completed"
    );
    // Resuming after the second-to-last event gives only the last.
    let etag = frames[frames.len() - 2]["redisId"].as_str().unwrap();
    let resumed = app
        .get(&format!("/v1/runs/{run}/events?etag={etag}"), &key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        resumed.lines().filter(|l| l.starts_with("data: ")).count(),
        1,
        "{resumed}"
    );

    // Per-node input and output, the list, the search.
    let io = json_ok(
        app.get(&format!("/v1/runs/{run}/io/{output}?it=0"), &key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(io["input"]["input"], "Hello, Ada!", "{io}");
    let data = json_ok(
        app.get(&format!("/v1/runs/{run}/data"), &key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(data["nodes"].as_object().unwrap().len(), 3, "{data}");
    let listed = json_ok(
        app.get(
            &format!("/v1/workflows/{workflow}/runs?page=1&page_size=10"),
            &key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(listed["items"][0]["id"], run.as_str());
    let found = json_ok(
        app.post("/v1/runs/search", &key)
            .json(&json!({"query": "Ada", "limit": 10}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(found["items"][0]["id"], run.as_str(), "{found}");
    let quoted = json_ok(
        app.post("/v1/runs/search", &key)
            .json(&json!({"query": "\"Ada\" OR NEAR(x y) *", "limit": 10}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(quoted["items"].is_array(), "{quoted}");

    // Synchronously, output only.
    let output_only = json_ok(
        app.post(
            &format!("/v1/workflows/{workflow}/runs/sync?output_only=true"),
            &key,
        )
        .json(&json!({"input": {"Name": "Grace"}}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        output_only[format!("{output}::output")]["text"],
        "Hello, Grace!"
    );

    // Deleting a finished run takes it away.
    let deleted = json_ok(
        app.delete(&format!("/v1/runs/{run}"), &key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        deleted,
        json!({"succeeded": 1, "failed": 0, "errors": {}, "matched": 1})
    );
    assert_error(
        app.get(&format!("/v1/workflows/{workflow}/runs/{run}"), &key)
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
async fn a_failing_run_says_why_and_a_definition_that_cannot_run_is_refused() {
    let app = TestApp::spawn().await;
    let key = app.owner_key.clone();
    let (definition, _input, _output) = greeting_definition();
    let workflow = save(&app, &key, &definition).await;
    // No value for the input node.
    let started = json_ok(
        app.post(&format!("/v1/workflows/{workflow}/runs"), &key)
            .json(&json!({"input": {}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let done = wait_done(&app, &key, &workflow, started["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed");
    let error = done["error"].as_str().unwrap();
    assert!(error.contains("no value for 'Name'"), "{error}");

    // A callback to a loopback address is refused (see runs_callbacks.rs).
    assert_error(
        app.post(&format!("/v1/workflows/{workflow}/runs"), &key)
            .json(&json!({"input": {}, "callback_url": "http://127.0.0.1:9/hook"}))
            .send()
            .await
            .unwrap(),
        422,
        "validation_error",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn viewers_read_runs_but_cannot_start_or_stop_them_and_other_workspaces_see_nothing() {
    let app = TestApp::spawn().await;
    let key = app.owner_key.clone();
    let (definition, input, _output) = greeting_definition();
    let workflow = save(&app, &key, &definition).await;
    let run = json_ok(
        app.post(&format!("/v1/workflows/{workflow}/runs"), &key)
            .json(&json!({"input": {format!("{input}::input"): "x"}}))
            .send()
            .await
            .unwrap(),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_done(&app, &key, &workflow, &run).await;

    let viewer = app.user_with_role(Role::Viewer).await;
    assert_error(
        app.post(&format!("/v1/workflows/{workflow}/runs"), &viewer.key)
            .json(&json!({"input": {}}))
            .send()
            .await
            .unwrap(),
        403,
        "insufficient_permissions",
    )
    .await;
    assert_error(
        app.post(&format!("/v1/runs/{run}/stop"), &viewer.key)
            .send()
            .await
            .unwrap(),
        403,
        "insufficient_permissions",
    )
    .await;
    json_ok(
        app.get(&format!("/v1/workflows/{workflow}/runs/{run}"), &viewer.key)
            .send()
            .await
            .unwrap(),
    )
    .await;

    let outsider = app.second_workspace("elsewhere").await;
    for request in [
        app.get(
            &format!("/v1/workflows/{workflow}/runs/{run}"),
            &outsider.key,
        ),
        app.get(&format!("/v1/runs/{run}/events"), &outsider.key),
        app.get(&format!("/v1/runs/{run}/data"), &outsider.key),
        app.post(&format!("/v1/runs/{run}/stop"), &outsider.key),
        app.delete(&format!("/v1/runs/{run}"), &outsider.key),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 404, "{:?}", response.url().path());
    }
    let found = json_ok(
        app.post("/v1/runs/search", &outsider.key)
            .json(&json!({"query": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(found["items"], json!([]));
    app.stop().await;
}

async fn held_run(
    app: &TestApp,
    user: &noxus_testkit::TestUser,
    workflow: &str,
    definition: &Value,
) -> String {
    crate::helpers::held_run(app, user, workflow, definition, None).await
}

/// Opens the event stream of `run` with `key` and reads until the
/// `started` event (the run is held running: the stream stays open).
async fn open_stream(app: &TestApp, run: &str, key: &str) -> reqwest::Response {
    let mut response = app
        .get(&format!("/v1/runs/{run}/events"), key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut seen = String::new();
    while !seen.contains("\"started\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("the first events arrive")
            .unwrap()
            .expect("the stream is open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    response
}

/// Reads a stream to its end (failing if it stays open `within`): when it
/// ended, its last event, and everything read.
async fn stream_end(mut response: reqwest::Response, within: Duration) -> (Instant, Value, String) {
    let mut tail = String::new();
    loop {
        match tokio::time::timeout(within, response.chunk()).await {
            Ok(Ok(Some(chunk))) => tail.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Ok(None)) => break,
            Ok(Err(e)) => panic!("reading the stream: {e}"),
            Err(_) => panic!("the stream stayed open {within:?}: {tail}"),
        }
    }
    let ended = Instant::now();
    let last: Value = serde_json::from_str(
        tail.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .next_back()
            .unwrap_or_else(|| panic!("a final event in {tail:?}")),
    )
    .unwrap();
    (ended, last, tail)
}

/// Asserts that a stream ended with an `error` event of `code` whose
/// sentence contains `says`, within a second of `since`.
fn assert_ended_with(ended: (Instant, Value, String), since: Instant, code: &str, says: &str) {
    let (at, last, tail) = ended;
    let after = at.saturating_duration_since(since);
    assert!(
        after < Duration::from_secs(1),
        "the stream ended {after:?} after the change"
    );
    assert_eq!(last["type"], "error", "{tail}");
    assert_eq!(last["data"]["code"], code, "{tail}");
    assert_eq!(last["data"]["workflow_status"], "failed", "{tail}");
    let detail = last["data"]["detail"].as_str().unwrap();
    assert!(detail.contains(says), "{detail}");
}

#[tokio::test]
async fn an_open_event_stream_ends_with_an_error_event_when_its_key_is_revoked() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let (definition, _input, _output) = greeting_definition();
    let workflow = save(&app, &member.key, &definition).await;
    let run = held_run(&app, &member, &workflow, &definition).await;

    let response = app
        .get(&format!("/v1/runs/{run}/events"), &member.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response;
    let mut seen = String::new();
    // The events so far (queued, started) arrive; the stream stays open.
    while !seen.contains("\"started\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.chunk())
            .await
            .expect("the first events arrive")
            .unwrap()
            .expect("the stream is open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }

    let revoked_at = Instant::now();
    let revoked = app
        .delete(
            &format!(
                "/v1/admin/groups/{}/api-keys/{}",
                app.workspace_id, member.key_id
            ),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let mut tail = String::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), body.chunk()).await {
            Ok(Ok(Some(chunk))) => tail.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Ok(None)) => break,
            Ok(Err(e)) => panic!("reading the stream: {e}"),
            Err(_) => panic!("the stream of a revoked key stayed open 5 s: {tail}"),
        }
    }
    let ended_after = revoked_at.elapsed();
    assert!(
        ended_after < Duration::from_secs(1),
        "the stream ended {ended_after:?} after the revocation"
    );
    let last: Value = serde_json::from_str(
        tail.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .next_back()
            .expect("a final event"),
    )
    .unwrap();
    assert_eq!(last["type"], "error", "{tail}");
    assert_eq!(last["data"]["code"], "revoked_api_key", "{tail}");
    app.stop().await;
}

#[tokio::test]
async fn an_open_event_stream_ends_when_its_keys_owner_is_removed_or_deactivated() {
    use noxus_server::store::Actor;
    let app = TestApp::spawn().await;
    let removed = app.user_with_role(Role::Member).await;
    let deactivated = app.user_with_role(Role::Member).await;
    let (definition, _input, _output) = greeting_definition();
    let workflow = save(&app, &removed.key, &definition).await;
    let run = held_run(&app, &removed, &workflow, &definition).await;
    let first = open_stream(&app, &run, &removed.key).await;
    let second = open_stream(&app, &run, &deactivated.key).await;

    // Removed from the workspace: their keys there are revoked with it.
    let at = Instant::now();
    noxus_server::members::remove(
        &app.state,
        &Actor::system(),
        &app.workspace_id.as_str().into(),
        &removed.id.as_str().into(),
    )
    .await
    .unwrap();
    assert_ended_with(
        stream_end(first, Duration::from_secs(5)).await,
        at,
        "revoked_api_key",
        "its owner was removed from the workspace",
    );

    // Deactivated in the organization: the same, for every workspace.
    let at = Instant::now();
    noxus_server::users::set_active(
        &app.state,
        &Actor::system(),
        &app.organization_id.as_str().into(),
        &deactivated.id.as_str().into(),
        false,
    )
    .await
    .unwrap();
    assert_ended_with(
        stream_end(second, Duration::from_secs(5)).await,
        at,
        "revoked_api_key",
        "its owner was deactivated",
    );
    app.stop().await;
}

/// Every role grants `workflows:read` (a viewer reads runs), so no
/// demotion takes it away: the stream of a demoted member is checked again
/// and goes on, to the run's end.
#[tokio::test]
async fn a_stream_of_a_member_demoted_to_viewer_goes_on_to_the_runs_end() {
    use noxus_server::store::Actor;
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let (definition, _input, _output) = greeting_definition();
    let workflow = save(&app, &member.key, &definition).await;
    let run = held_run(&app, &member, &workflow, &definition).await;
    let stream = open_stream(&app, &run, &member.key).await;
    noxus_server::members::set_role(
        &app.state,
        &Actor::system(),
        &app.workspace_id.as_str().into(),
        &member.id.as_str().into(),
        Role::Viewer,
    )
    .await
    .unwrap();
    // The viewer still reads the run...
    json_ok(
        app.get(&format!("/v1/workflows/{workflow}/runs/{run}"), &member.key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    // ...and its stream ends with the run, not with an error.
    let stopped = app
        .post(&format!("/v1/runs/{run}/stop"), &app.owner_key)
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status(), 200);
    let (_, last, tail) = stream_end(stream, Duration::from_secs(5)).await;
    assert_eq!(last["type"], "stopped", "{tail}");
    assert!(!tail.contains("\"error\""), "{tail}");
    app.stop().await;
}

/// A key's expiry ends its stream at that time, by a timer (nothing is
/// published when a key expires), and so does the end of a rotated key's
/// grace period, which the rotation set while the stream was open.
#[tokio::test]
async fn an_open_event_stream_ends_when_its_key_expires_or_its_rotation_grace_ends() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let (definition, _input, _output) = greeting_definition();
    let workflow = save(&app, &member.key, &definition).await;
    let run = held_run(&app, &member, &workflow, &definition).await;

    // Expiry times are kept to the millisecond.
    let expires_at = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(1500);
    let (expiring, _) = app
        .issue_key(
            &app.workspace_id,
            &member.id,
            noxus_testkit::KeyOptions {
                name: Some("expiring".to_owned()),
                expires_at: Some(expires_at),
                ..Default::default()
            },
        )
        .await;
    let stream = open_stream(&app, &run, &expiring).await;
    let left = expires_at - time::OffsetDateTime::now_utc();
    let expiry = Instant::now() + Duration::try_from(left).unwrap_or_default();
    let ended = stream_end(stream, Duration::from_secs(5)).await;
    // (The server's clock and this one may disagree by a few milliseconds.)
    assert!(
        ended.0 + Duration::from_millis(50) >= expiry,
        "the stream ended before the key expired"
    );
    assert_ended_with(ended, expiry, "expired_api_key", "expired at");

    // Rotated with a grace period: the old key's stream lasts until it ends.
    let keys = format!("/v1/admin/groups/{}/api-keys", app.workspace_id);
    let old = json_ok(
        app.post(&keys, &app.owner_key)
            .json(&json!({"name": "to rotate"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let stream = open_stream(&app, &run, old["value"].as_str().unwrap()).await;
    let rotated = app
        .post(
            &format!("{keys}/{}/rotate", old["id"].as_str().unwrap()),
            &app.owner_key,
        )
        .json(&json!({"grace_period_seconds": 1}))
        .send()
        .await
        .unwrap();
    assert!(rotated.status().is_success(), "{}", rotated.status());
    let grace_end = Instant::now() + Duration::from_secs(1);
    let ended = stream_end(stream, Duration::from_secs(5)).await;
    // The grace period is counted from the rotation's commit, a little
    // before its response.
    assert!(
        ended.0 + Duration::from_millis(200) >= grace_end,
        "the stream ended before the grace period did"
    );
    assert_ended_with(ended, grace_end, "expired_api_key", "grace period ended");
    app.stop().await;
}

#[tokio::test]
async fn one_key_and_one_workspace_hold_a_bounded_number_of_streams() {
    use noxus_server::runs::streams::StreamLimits;
    let app = TestApp::spawn_with(|config| {
        config.event_streams = StreamLimits {
            per_key: 2,
            per_workspace: 3,
        }
    })
    .await;
    let member = app.user_with_role(Role::Member).await;
    let other = app.user_with_role(Role::Member).await;
    let (definition, _input, _output) = greeting_definition();
    let workflow = save(&app, &member.key, &definition).await;
    let run = held_run(&app, &member, &workflow, &definition).await;

    let first = open_stream(&app, &run, &member.key).await;
    let second = open_stream(&app, &run, &member.key).await;
    let refused = app
        .get(&format!("/v1/runs/{run}/events"), &member.key)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.headers()["retry-after"], "5");
    let body = assert_error(refused, 429, "too_many_streams").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("This API key already has 2 event streams open"),
        "{body}"
    );
    // Other requests of the key are not concerned.
    json_ok(
        app.get(&format!("/v1/workflows/{workflow}/runs/{run}"), &member.key)
            .send()
            .await
            .unwrap(),
    )
    .await;

    // The workspace's third stream, of another key, is its last.
    let third = open_stream(&app, &run, &other.key).await;
    let body = assert_error(
        app.get(&format!("/v1/runs/{run}/events"), &other.key)
            .send()
            .await
            .unwrap(),
        429,
        "too_many_streams",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("This workspace already has 3 event streams open"),
        "{body}"
    );
    // Another workspace is not concerned.
    let outsider = app.second_workspace("elsewhere").await;
    let their_workflow = save(&app, &outsider.key, &definition).await;
    let their_run = held_run(&app, &outsider, &their_workflow, &definition).await;
    let theirs = open_stream(&app, &their_run, &outsider.key).await;

    // A stream the client closes frees its place.
    drop(first);
    let started = Instant::now();
    let fourth = loop {
        let response = app
            .get(&format!("/v1/runs/{run}/events"), &member.key)
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break response;
        }
        assert_eq!(response.status(), 429);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the closed stream's place was not freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "a closed stream's place was free again {:?} after the client closed it",
        started.elapsed()
    );
    // (An open stream would hold the server's graceful shutdown.)
    drop((second, third, theirs, fourth));
    app.stop().await;
}

#[tokio::test]
async fn stopping_a_running_run_ends_it_and_its_stream_and_the_worker_cannot_finish_it() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let (definition, _input, _output) = greeting_definition();
    let workflow = save(&app, &member.key, &definition).await;
    let run = held_run(&app, &member, &workflow, &definition).await;

    let stream = app
        .get(&format!("/v1/runs/{run}/events"), &member.key)
        .send()
        .await
        .unwrap();
    let stopped = json_ok(
        app.post(&format!("/v1/runs/{run}/stop"), &member.key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(stopped["status"], "stopped");
    assert!(stopped["finished_at"].is_string());
    let body = tokio::time::timeout(Duration::from_secs(10), stream.text())
        .await
        .expect("the stream of a stopped run ends")
        .unwrap();
    let last: Value = serde_json::from_str(
        body.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .next_back()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["type"], "stopped", "{body}");
    assert_eq!(last["data"]["workflow_status"], "stopped");

    // The claimer's late outcome is refused: the stop wins.
    let finished = app
        .state
        .store()
        .finish_run(
            &run.as_str().into(),
            "the-test",
            &noxus_server::store::RunOutcome::Completed { output: json!({}) },
            time::OffsetDateTime::now_utc(),
        )
        .await
        .unwrap();
    assert!(!finished);
    // A stopped run can be deleted; a running one cannot.
    let other = held_run(&app, &member, &workflow, &definition).await;
    let refused = json_ok(
        app.post("/v1/runs/bulk/delete", &member.key)
            .json(&json!({"run_ids": [run, other]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(refused["matched"], 2);
    assert_eq!(refused["succeeded"], 1);
    assert!(
        refused["errors"][&other]
            .as_str()
            .unwrap()
            .contains("still running"),
        "{refused}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_workspace_whose_runs_hold_their_byte_limit_starts_no_more_until_some_are_deleted() {
    // Room for about three runs of this workflow with their outputs.
    let (definition, input, _output) = greeting_definition();
    let one_run = definition.to_string().len() as u64 * 3;
    let app = TestApp::spawn_with(move |config| {
        config.run_quotas.run_bytes_per_workspace = one_run * 3;
    })
    .await;
    let key = app.owner_key.clone();
    let workflow = save(&app, &key, &definition).await;
    let mut runs = Vec::new();
    let refused = loop {
        let response = app
            .post(&format!("/v1/workflows/{workflow}/runs"), &key)
            .json(&json!({"input": {format!("{input}::input"): "Ada"}}))
            .send()
            .await
            .unwrap();
        if response.status() != 201 {
            break response;
        }
        let run: Value = response.json().await.unwrap();
        let run = run["id"].as_str().unwrap().to_owned();
        wait_done(&app, &key, &workflow, &run).await;
        runs.push(run);
        assert!(runs.len() < 20, "the byte limit never refused a run");
    };
    assert!(runs.len() >= 2, "{} runs fit", runs.len());
    let body = assert_error(refused, 409, "conflict").await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!(
            "past their limit of {} bytes; delete finished runs",
            one_run * 3
        )),
        "{detail}"
    );

    // Deleting the oldest makes room again.
    let deleted = app
        .delete(&format!("/v1/runs/{}", runs[0]), &key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let again = app
        .post(&format!("/v1/workflows/{workflow}/runs"), &key)
        .json(&json!({"input": {format!("{input}::input"): "Grace"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 201);
}

#[tokio::test]
async fn a_shutdown_cuts_open_event_streams_instead_of_waiting_for_their_runs() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let (definition, _input, _output) = greeting_definition();
    let workflow = save(&app, &member.key, &definition).await;
    // Held by a worker that is not there: it would run for ten minutes.
    let run = held_run(&app, &member, &workflow, &definition).await;
    let mut stream = app
        .get(&format!("/v1/runs/{run}/events"), &member.key)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut seen = String::new();
    while !seen.contains("\"started\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("the first events arrive")
            .unwrap()
            .expect("the stream is open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }

    let stopping = tokio::spawn(app.stop());
    // The stream is cut (an error, not a clean end that would read as a
    // run still going), so clients resume elsewhere.
    let cut = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Ok(None)) => panic!("the stream ended cleanly without a final event: {seen}"),
            Ok(Err(err)) => break err,
            Err(_) => panic!("the stream stayed open 10 s into the shutdown: {seen}"),
        }
    };
    assert!(
        cut.is_body() || cut.is_decode() || cut.is_request(),
        "{cut:?}"
    );
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the shutdown does not wait for the run")
        .unwrap();
}
