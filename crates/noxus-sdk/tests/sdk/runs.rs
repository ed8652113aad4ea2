//! Workflow runs through the SDK against the real platform: start, wait,
//! stream, list, read, stop, delete; and the event stream's resilience,
//! through a small HTTP proxy in front of the platform that cuts streams
//! mid-event, refuses the events route, or closes it at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use noxus_api::{Role, WorkflowWrite};
use noxus_sdk::{Client, Error, ErrorCode, RunEvent, RunEventKind, RunStatus};
use noxus_testkit::{TestApp, TestUser};
use serde_json::{json, Value};

/// Input ("Name") → Compose text ("Hello, {input}!") → Output, with the
/// node ids in that order.
fn greeting() -> (Value, [String; 3]) {
    let ids = ["in-1", "compose-1", "out-1"].map(str::to_owned);
    let edge = |from: &str, to: &str| {
        json!({"from_id": {"node_id": from, "connector_name": "output"},
               "to_id": {"node_id": to, "connector_name": "input"}})
    };
    let definition = json!({
        "flow_version": "v1",
        "nodes": [
            {"type": "InputNode", "id": ids[0], "node_config": {"label": "Name"}},
            {"type": "ComposeTextNode", "id": ids[1], "node_config": {"template": "Hello, {input}!"}},
            {"type": "OutputNode", "id": ids[2], "node_config": {"label": "Greeting"}}
        ],
        "edges": [edge(&ids[0], &ids[1]), edge(&ids[1], &ids[2])]
    });
    (definition, ids)
}

async fn save_greeting(client: &Client) -> (String, [String; 3]) {
    let (definition, ids) = greeting();
    let mut write = WorkflowWrite::new("greeting");
    write.definition = Some(definition);
    let saved = client.workflows().save(&write).await.unwrap();
    (saved.id, ids)
}

fn greeting_text(output: &Option<Value>, out_node: &str) -> String {
    output.as_ref().unwrap()[format!("{out_node}::output")]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {output:?}"))
        .to_owned()
}

#[tokio::test]
async fn a_run_is_started_waited_for_and_then_read_listed_and_deleted() {
    let app = TestApp::spawn().await;
    let client = app.client_for(Role::Member).await;
    let (workflow, ids) = save_greeting(&client).await;

    let run = client
        .workflows()
        .run(&workflow, json!({"Name": "Ada"}))
        .await
        .unwrap();
    assert_eq!(run.workflow_id, workflow);
    assert_eq!(run.input, json!({"Name": "Ada"}));
    assert_eq!(run.node_ids.as_deref(), Some(&ids[..]));
    assert!(!run.status.is_terminal(), "{:?}", run.status);

    let done = run.wait().await.unwrap();
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.progress, 100);
    assert!(done.finished_at.is_some());
    assert_eq!(greeting_text(&done.output, &ids[2]), "Hello, Ada!");
    // Waiting again for an ended run asks nothing more.
    assert_eq!(done.wait().await.unwrap().id, run.id);

    let runs = client.runs();
    let page = runs.list(&workflow, 1, 10).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].id, run.id);
    assert_eq!(
        runs.get(&workflow, &run.id).await.unwrap().output,
        done.output
    );
    let io = run.node_io(&ids[1]).await.unwrap();
    assert_eq!(io.output, json!({"output": "Hello, Ada!"}));
    let data = runs.data(&run.id).await.unwrap();
    assert_eq!(data["nodes"].as_object().unwrap().len(), 3, "{data}");
    let found = runs.search("Ada", 10, 0).await.unwrap();
    assert!(found.iter().any(|r| r.id == run.id));

    // run_sync: the whole run, or only its output.
    let synced = client
        .workflows()
        .run_sync(&workflow, json!({"Name": "Bo"}))
        .await
        .unwrap();
    assert_eq!(synced.status, RunStatus::Completed);
    assert_eq!(greeting_text(&synced.output, &ids[2]), "Hello, Bo!");
    let output = client
        .workflows()
        .run_sync_output(&workflow, json!({"Name": "Cy"}))
        .await
        .unwrap();
    assert_eq!(
        output,
        json!({format!("{}::output", ids[2]): {"text": "Hello, Cy!"}})
    );
    assert_eq!(runs.list(&workflow, 1, 10).await.unwrap().items.len(), 3);

    let deleted = done.delete().await.unwrap();
    assert_eq!((deleted.matched, deleted.succeeded), (1, 1));
    let gone = runs.get(&workflow, &run.id).await.unwrap_err();
    assert!(matches!(gone, Error::NotFound(_)), "{gone:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_failed_run_is_an_error_with_the_servers_sentence() {
    let app = TestApp::spawn().await;
    let client = app.client_for(Role::Member).await;
    let (workflow, _) = save_greeting(&client).await;
    let run = client.workflows().run(&workflow, json!({})).await.unwrap();
    let err = run.wait().await.unwrap_err();
    let Error::RunFailed(failed) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(failed.status, RunStatus::Failed);
    let sentence = failed.error.as_deref().unwrap();
    assert!(sentence.contains("no value for 'Name'"), "{sentence}");
    assert_eq!(
        err.to_string(),
        format!("The run {} failed: {sentence}", run.id)
    );
    app.stop().await;
}

#[tokio::test]
async fn a_viewer_may_read_runs_but_not_start_one() {
    let app = TestApp::spawn().await;
    let member = app.client_for(Role::Member).await;
    let viewer = app.client_for(Role::Viewer).await;
    let (workflow, _) = save_greeting(&member).await;
    let err = viewer
        .workflows()
        .run(&workflow, json!({"Name": "Ada"}))
        .await
        .unwrap_err();
    let Error::Forbidden(api) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(api.required_permission.as_deref(), Some("workflows:run"));
    assert!(err
        .to_string()
        .starts_with("API key lacks required permissions"));
    let run = member
        .workflows()
        .run(&workflow, json!({"Name": "Ada"}))
        .await
        .unwrap();
    let seen = viewer.runs().get(&workflow, &run.id).await.unwrap();
    assert_eq!(seen.wait().await.unwrap().status, RunStatus::Completed);
    app.stop().await;
}

/// Every event of a finished run, read straight from the platform.
async fn all_events(client: &Client, run_id: &str) -> Vec<RunEvent> {
    client
        .runs()
        .events(run_id, None)
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_stream_yields_each_node_in_order_then_the_terminal_event() {
    let app = TestApp::spawn().await;
    let client = app.client_for(Role::Member).await;
    let (workflow, ids) = save_greeting(&client).await;
    let run = client
        .workflows()
        .run(&workflow, json!({"Name": "Ada"}))
        .await
        .unwrap();
    let events: Vec<RunEvent> = run.stream().try_collect().await.unwrap();

    let numbers: Vec<u64> = events.iter().map(|e| e.id.unwrap()).collect();
    let expected: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(numbers, expected, "every event once, in order");
    assert_eq!(events[0].kind, RunEventKind::Queued);
    let started: Vec<(String, Option<u64>)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            RunEventKind::NodeStarted { node_id, index, .. } => Some((node_id.clone(), *index)),
            _ => None,
        })
        .collect();
    assert_eq!(
        started,
        vec![
            (ids[0].clone(), Some(0)),
            (ids[1].clone(), Some(1)),
            (ids[2].clone(), Some(2))
        ]
    );
    // Each node's progress comes after it started and before the next one.
    let finished: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.kind {
            RunEventKind::Progress {
                node_id: Some(node),
                ..
            } => Some(node.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(finished, ids.to_vec());
    let last = events.last().unwrap();
    assert_eq!(last.kind, RunEventKind::Completed);
    assert_eq!(events.iter().filter(|e| e.is_terminal()).count(), 1);

    // Resuming after an event gives the rest.
    let rest: Vec<RunEvent> = client
        .runs()
        .events(&run.id, Some(4))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rest, events[4..].to_vec());
    app.stop().await;
}

/// What the proxy does to `GET /v1/runs/{id}/events`.
#[derive(Clone, Copy)]
enum Events {
    /// Forward, but cut the first `connections` streams after `events`
    /// events and a few bytes of the next.
    CutAfter { events: usize, connections: usize },
    /// Answer 404 with a body that is not the platform's.
    Refuse,
    /// Answer 200 with an empty stream.
    CloseAtOnce,
}

/// An HTTP proxy in front of the platform that forwards everything and
/// does [`Events`] to the event streams; it logs every path it saw.
#[derive(Clone)]
struct Proxy {
    target: String,
    http: reqwest::Client,
    events: Events,
    cuts: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    async fn start(app: &TestApp, events: Events) -> (String, Self) {
        let proxy = Self {
            target: app.base_url.clone(),
            http: reqwest::Client::new(),
            events,
            cuts: Arc::default(),
            seen: Arc::default(),
        };
        let router = axum::Router::new()
            .fallback(forward)
            .with_state(proxy.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        (format!("http://{addr}"), proxy)
    }

    fn seen(&self, part: &str) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|p| p.contains(part)).cloned().collect()
    }
}

async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map(ToString::to_string)
        .unwrap_or_default();
    proxy.seen.lock().unwrap().push(path.clone());
    let events_route = request.uri().path().ends_with("/events");
    let mut cut_after = None;
    if events_route {
        match proxy.events {
            Events::Refuse => return (StatusCode::NOT_FOUND, "no such route here").into_response(),
            Events::CloseAtOnce => {
                return ([("content-type", "text/event-stream")], "").into_response();
            }
            Events::CutAfter {
                events,
                connections,
            } => {
                if proxy.cuts.fetch_add(1, Ordering::SeqCst) < connections {
                    cut_after = Some(events);
                }
            }
        }
    }
    let method = request.method().clone();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap();
    let mut upstream = proxy
        .http
        .request(method, format!("{}{path}", proxy.target))
        .body(body);
    for name in ["x-api-key", "content-type", "accept"] {
        if let Some(value) = headers.get(name) {
            upstream = upstream.header(name, value);
        }
    }
    let answer = upstream.send().await.unwrap();
    let status = answer.status();
    let content_type = answer.headers().get("content-type").cloned();
    // Forwarded chunk by chunk; a cut stream forwards `events` events and
    // 7 bytes of the next, then fails the body, which drops the connection.
    // (The state: the answer, events ended so far, the last byte seen,
    // and whether the cut happened.)
    let chunks = futures_util::stream::unfold(
        (answer, 0usize, 0u8, false),
        move |(mut answer, mut ends, mut last, cut)| async move {
            if cut {
                return None;
            }
            let chunk = match answer.chunk().await {
                Ok(Some(chunk)) => chunk,
                _ => return None,
            };
            let Some(limit) = cut_after else {
                return Some((Ok(chunk), (answer, ends, last, false)));
            };
            for (at, byte) in chunk.iter().enumerate() {
                // An event ends with a blank line, maybe split across chunks.
                if *byte == b'\n' && last == b'\n' {
                    ends += 1;
                    if ends == limit {
                        let keep = (at + 1 + 7).min(chunk.len());
                        return Some((Ok(chunk.slice(..keep)), (answer, ends, *byte, true)));
                    }
                }
                last = *byte;
            }
            Some((
                Ok::<Bytes, std::io::Error>(chunk),
                (answer, ends, last, false),
            ))
        },
    );
    let cut_stream = futures_util::StreamExt::chain(
        chunks,
        futures_util::stream::once(async move {
            if cut_after.is_some() {
                // Long enough for the server to send what it has: the
                // client gets the partial event, then the connection dies.
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err(std::io::Error::other("cut by the test"))
            } else {
                Ok(Bytes::new())
            }
        }),
    );
    let mut response = Response::new(Body::from_stream(cut_stream));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response.headers_mut().insert("content-type", content_type);
    }
    response
        .headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

fn client_via(url: &str, user: &TestUser) -> Client {
    Client::builder()
        .api_key(&user.key)
        .base_url(url)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_stream_cut_mid_event_resumes_after_the_last_event_without_loss_or_repeat() {
    let app = TestApp::spawn().await;
    let user = app.user_with_role(Role::Member).await;
    let direct = app.client(&user.key);
    let (workflow, ids) = save_greeting(&direct).await;
    let run = direct
        .workflows()
        .run(&workflow, json!({"Name": "Ada"}))
        .await
        .unwrap();
    run.wait().await.unwrap();
    let expected = all_events(&direct, &run.id).await;
    assert!(expected.len() >= 9, "{expected:?}");

    let (url, proxy) = Proxy::start(
        &app,
        Events::CutAfter {
            events: 3,
            connections: 2,
        },
    )
    .await;
    let via = client_via(&url, &user);
    let events: Vec<RunEvent> = via
        .runs()
        .events(&run.id, None)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(events, expected);
    let path = format!("/v1/runs/{}/events", run.id);
    assert_eq!(
        proxy.seen("/events"),
        vec![
            path.clone(),
            format!("{path}?etag=3"),
            format!("{path}?etag=6")
        ]
    );

    // wait() over the same kind of proxy, for a new run.
    let (url, proxy) = Proxy::start(
        &app,
        Events::CutAfter {
            events: 2,
            connections: 1,
        },
    )
    .await;
    let via = client_via(&url, &user);
    let run = via
        .workflows()
        .run(&workflow, json!({"Name": "Bo"}))
        .await
        .unwrap();
    let done = run.wait().await.unwrap();
    assert_eq!(greeting_text(&done.output, &ids[2]), "Hello, Bo!");
    let streams = proxy.seen("/events");
    assert!(streams.len() >= 2, "{streams:?}");
    assert!(streams[1].ends_with("?etag=2"), "{streams:?}");
    app.stop().await;
}

#[tokio::test]
async fn wait_polls_the_run_when_the_event_stream_is_refused_or_keeps_closing() {
    let app = TestApp::spawn().await;
    let user = app.user_with_role(Role::Member).await;
    let (workflow, ids) = save_greeting(&app.client(&user.key)).await;

    // No events route (an older server, a proxy that refuses it).
    let (url, proxy) = Proxy::start(&app, Events::Refuse).await;
    let via = client_via(&url, &user);
    let run = via
        .workflows()
        .run(&workflow, json!({"Name": "Ada"}))
        .await
        .unwrap();
    let err = run.stream().try_collect::<Vec<_>>().await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    let done = run.wait().await.unwrap();
    assert_eq!(greeting_text(&done.output, &ids[2]), "Hello, Ada!");
    assert!(!proxy.seen(&format!("/runs/{}", run.id)).is_empty());

    // A stream that closes at once, every time: given up after a few
    // connections, then polled.
    let (url, proxy) = Proxy::start(&app, Events::CloseAtOnce).await;
    let via = client_via(&url, &user);
    let run = via
        .workflows()
        .run(&workflow, json!({"Name": "Bo"}))
        .await
        .unwrap();
    let err = run.stream().try_collect::<Vec<_>>().await.unwrap_err();
    assert!(
        matches!(&err, Error::EventStream { message, .. } if message.contains("no new event")),
        "{err:?}"
    );
    assert_eq!(proxy.seen("/events").len(), 4);
    let done = run.wait().await.unwrap();
    assert_eq!(greeting_text(&done.output, &ids[2]), "Hello, Bo!");
    let polls = proxy.seen(&format!("/workflows/{workflow}/runs/{}", run.id));
    assert!(!polls.is_empty(), "the run was read");
    app.stop().await;
}

#[tokio::test]
async fn an_event_larger_than_the_cap_fails_the_stream_instead_of_filling_memory() {
    static MEBIBYTE: [u8; 1 << 20] = [b'x'; 1 << 20];
    let app = axum::Router::new().fallback(|| async {
        // `data: ` and then 40 MiB without a line end.
        let body = futures_util::stream::iter(
            std::iter::once(Bytes::from_static(b"data: "))
                .chain(std::iter::repeat_n(Bytes::from_static(&MEBIBYTE), 40))
                .map(Ok::<_, std::io::Error>),
        );
        (
            [("content-type", "text/event-stream")],
            Body::from_stream(body),
        )
            .into_response()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::builder()
        .api_key(noxus_api::key_format::key_from_body(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345",
        ))
        .base_url(format!("http://{addr}"))
        .build()
        .unwrap();
    let err = client
        .runs()
        .events("r1", None)
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    let Error::EventStream { message, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(
        message.contains(&format!("larger than {} bytes", noxus_sdk::MAX_EVENT_BYTES)),
        "{message}"
    );
}

/// A run held `running` by a claimer that is not the app's worker, so that
/// it stays open as long as the test wants (tried again in the rare case
/// the app's worker claimed it first).
async fn held_run(app: &TestApp, user: &TestUser, workflow: &str) -> String {
    use noxus_server::store::{Actor, NewRun, RunQuotas};
    let (definition, _) = greeting();
    let now = time::OffsetDateTime::now_utc();
    for attempt in 0..20u64 {
        // After a lost race the app's worker runs that run and, a freed
        // slot waking it, claims again at once: give it time to finish and
        // go idle, so that the next creation and claim come between its polls.
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20 + 10 * attempt)).await;
        }
        let run = app
            .state
            .store()
            .create_run(
                &Actor::system(),
                &NewRun {
                    workspace_id: user.workspace_id.as_str().into(),
                    workflow_id: workflow.into(),
                    workflow_version_id: None,
                    definition: definition.clone(),
                    input: json!({}),
                    group_id: None,
                    callback_url: None,
                    started_by_user: user.id.as_str().into(),
                    started_by_key: None,
                },
                &RunQuotas::default(),
            )
            .await
            .unwrap();
        let claimed = app
            .state
            .store()
            .claim_runs("the-test", 100, now, now + time::Duration::minutes(10))
            .await
            .unwrap();
        if claimed.iter().any(|r| r.id == run.id) {
            return run.id.to_string();
        }
    }
    panic!("the app's worker claimed every run first");
}

#[tokio::test]
async fn a_run_in_flight_can_be_stopped_and_its_waiters_learn_it() {
    let app = TestApp::spawn().await;
    let user = app.user_with_role(Role::Member).await;
    let client = app.client(&user.key);
    let (workflow, _) = save_greeting(&client).await;
    let id = held_run(&app, &user, &workflow).await;
    let run = client.runs().get(&workflow, &id).await.unwrap();
    assert_eq!(run.status, RunStatus::Running);

    // A bounded wait gives up; the run goes on.
    let err = run
        .wait_timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WaitTimeout { .. }), "{err:?}");

    // A run in flight is not deleted.
    let kept = run.delete().await.unwrap();
    assert_eq!((kept.matched, kept.succeeded), (1, 0));
    assert!(kept.errors[&id].contains("still running"), "{kept:?}");

    let waiter = tokio::spawn({
        let run = run.clone();
        async move { run.wait().await }
    });
    let events = tokio::spawn({
        let run = run.clone();
        async move { run.stream().try_collect::<Vec<_>>().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = client.runs().stop(&id).await.unwrap();
    assert_eq!(stopped.status, RunStatus::Stopped);
    let err = waiter.await.unwrap().unwrap_err();
    let Error::RunStopped(ended) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(ended.status, RunStatus::Stopped);
    let events = events.await.unwrap().unwrap();
    assert_eq!(events.last().unwrap().kind, RunEventKind::Stopped);
    assert_eq!(
        client.runs().delete(&id).await.unwrap().succeeded,
        1,
        "a stopped run can be deleted"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_stream_ends_with_the_keys_error_when_the_key_is_revoked() {
    let app = TestApp::spawn().await;
    let user = app.user_with_role(Role::Member).await;
    let client = app.client(&user.key);
    let (workflow, _) = save_greeting(&client).await;
    let id = held_run(&app, &user, &workflow).await;
    let run = client.runs().get(&workflow, &id).await.unwrap();
    let waiter = tokio::spawn({
        let run = run.clone();
        async move { run.wait().await }
    });
    let mut events = Box::pin(run.stream());
    // The events so far arrive; the stream stays open.
    while let Some(event) = events.try_next().await.unwrap() {
        if event.kind == RunEventKind::Started {
            break;
        }
    }
    let owner = app.client(&app.owner_key);
    owner
        .admin()
        .keys(&app.workspace_id)
        .revoke(&user.key_id)
        .await
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), events.try_next())
        .await
        .expect("the stream ends")
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized(_)), "{err:?}");
    assert_eq!(err.code(), Some(&ErrorCode::RevokedApiKey));
    assert!(events.try_next().await.unwrap().is_none(), "then it ends");
    // wait() reports the key's error too, without polling on.
    let err = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("wait ends")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized(_)), "{err:?}");
    app.stop().await;
}
