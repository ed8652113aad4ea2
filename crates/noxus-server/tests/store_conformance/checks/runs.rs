//! Workflow runs: their life (queued, claimed, progress, finished or
//! stopped) with numbered events, claims by concurrent workers with
//! leases, workspace isolation, search, deletion and quota.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use noxus_server::store::prelude::*;
use noxus_server::store::{
    Actor, NewRun, Quota, RunId, RunOutcome, RunQuotas, RunRecord, RunStatus, RunStep,
    RunSubscription, StoreError, StoreEvent, WorkflowRecord, WorkspaceRecord,
};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::backend::Fresh;
use crate::world::*;

const WORKER: &str = "worker-1";

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn lease() -> OffsetDateTime {
    now() + Duration::from_secs(60)
}

async fn workflow(store: &Arc<dyn Store>, w: &World, ws: &WorkspaceRecord) -> WorkflowRecord {
    store
        .create_workflow(&actor(&w.owner), &ws.id, flow("f", "flow"), &quotas())
        .await
        .expect("create workflow")
}

fn new_run(w: &World, flow: &WorkflowRecord, input: Value) -> NewRun {
    NewRun {
        workspace_id: flow.workspace_id.clone(),
        workflow_id: flow.id.clone(),
        workflow_version_id: None,
        definition: json!({"nodes": [{"id": "in"}, {"id": "out"}], "edges": []}),
        input,
        group_id: None,
        callback_url: None,
        started_by_user: w.owner.id.clone(),
        started_by_key: None,
    }
}

async fn start(
    store: &Arc<dyn Store>,
    w: &World,
    flow: &WorkflowRecord,
    input: Value,
) -> RunRecord {
    store
        .create_run(
            &actor(&w.owner),
            &new_run(w, flow, input),
            &RunQuotas::default(),
        )
        .await
        .expect("create run")
}

/// Claims what there is to claim (each check has its own database).
async fn claim_all(store: &Arc<dyn Store>, worker: &str) -> Vec<RunRecord> {
    store
        .claim_runs(worker, 100, now(), lease())
        .await
        .expect("claim runs")
}

/// The kinds and statuses of a run's events after `after`, checking that
/// they are numbered on from it.
async fn events(store: &Arc<dyn Store>, run: &RunRecord, after: i64) -> Vec<(String, String)> {
    let events = store
        .run_events_after(&run.workspace_id, &run.id, after, 100)
        .await
        .expect("run events");
    for (i, event) in events.iter().enumerate() {
        assert_eq!(
            event.seq,
            after + 1 + i as i64,
            "events are numbered 1, 2, ..."
        );
        assert_eq!(event.run_id, run.id);
    }
    events
        .into_iter()
        .map(|e| {
            let status = e.data["workflow_status"]
                .as_str()
                .expect("every event says the run's status")
                .to_owned();
            (e.kind, status)
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

async fn get(store: &Arc<dyn Store>, run: &RunRecord) -> RunRecord {
    store
        .run(&run.workspace_id, &run.id)
        .await
        .expect("read run")
        .expect("the run exists")
}

pub async fn a_run_goes_from_queued_to_completed_with_numbered_events(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let flow = workflow(&store, &w, &w.ws).await;
    let mut audit = AuditWatch::new(&store, w.org.id.as_str()).await;

    let run = start(&store, &w, &flow, json!({"in::input": "hello"})).await;
    assert_eq!(run.status, RunStatus::Queued);
    assert_eq!(
        run.group_id,
        run.id.as_str(),
        "a run alone is its own group"
    );
    assert_eq!(run.organization_id, w.org.id);
    assert_eq!(run.input, json!({"in::input": "hello"}));
    assert_eq!((run.progress, run.attempts), (0, 0));
    assert!(run.started_at.is_none() && run.finished_at.is_none() && run.output.is_none());
    assert_eq!(
        get(&store, &run).await,
        run,
        "the record returned is the one stored"
    );
    assert_eq!(audit.actions(&store).await, vec!["run.start"]);
    assert_eq!(
        events(&store, &run, 0).await,
        pairs(&[("queued", "queued")])
    );

    let claimed = claim_all(&store, WORKER).await;
    assert_eq!(claimed.len(), 1);
    let running = &claimed[0];
    assert_eq!(running.id, run.id);
    assert_eq!(running.status, RunStatus::Running);
    assert_eq!(running.claimed_by.as_deref(), Some(WORKER));
    assert_eq!(running.attempts, 1);
    assert!(running.started_at.is_some() && running.lease_until.is_some());
    assert!(
        claim_all(&store, "worker-2").await.is_empty(),
        "claimed once"
    );

    assert!(store
        .renew_run_lease(&run.id, WORKER, lease())
        .await
        .unwrap());
    assert!(!store
        .renew_run_lease(&run.id, "worker-2", lease())
        .await
        .unwrap());
    let seq = store
        .append_run_event(&run.id, "node_started", &json!({"node_id": "in"}))
        .await
        .unwrap();
    assert_eq!(seq, 3);
    store
        .record_node_io(
            &run.id,
            "in",
            &json!({"input": "hello"}),
            &json!({"output": "hello"}),
        )
        .await
        .unwrap();
    // Recording again replaces (a resumed run runs its nodes again).
    store
        .record_node_io(
            &run.id,
            "in",
            &json!({"input": "hello"}),
            &json!({"output": "HELLO"}),
        )
        .await
        .unwrap();
    assert!(store
        .update_run_progress(&run.id, WORKER, 150, Some(&json!({"node": "in"})))
        .await
        .unwrap());
    let mid = get(&store, &run).await;
    assert_eq!(mid.progress, 100, "progress is clamped to 0..=100");
    assert_eq!(mid.progress_details, Some(json!({"node": "in"})));
    assert!(!store
        .update_run_progress(&run.id, "worker-2", 10, None)
        .await
        .unwrap());

    let output = json!({"out::output": {"text": "HELLO"}});
    let finished = store
        .finish_run(
            &run.id,
            WORKER,
            &RunOutcome::Completed {
                output: output.clone(),
            },
            now(),
        )
        .await
        .unwrap();
    assert!(finished);
    let done = get(&store, &run).await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.output, Some(output));
    assert_eq!(done.progress, 100);
    assert!(done.finished_at.is_some() && done.error.is_none());
    assert_eq!(done.last_event_seq, 5);

    // Ended: nothing of the worker's changes it any more.
    let failed = RunOutcome::Failed {
        error: "too late".to_owned(),
        output: None,
    };
    assert!(!store
        .finish_run(&run.id, WORKER, &failed, now())
        .await
        .unwrap());
    assert!(!store
        .renew_run_lease(&run.id, WORKER, lease())
        .await
        .unwrap());
    assert!(!store
        .update_run_progress(&run.id, WORKER, 1, None)
        .await
        .unwrap());
    assert!(claim_all(&store, "worker-2").await.is_empty());
    assert_eq!(get(&store, &run).await, done);

    assert_eq!(
        events(&store, &run, 0).await,
        pairs(&[
            ("queued", "queued"),
            ("started", "running"),
            ("node_started", "running"),
            ("progress", "running"),
            ("completed", "completed"),
        ])
    );
    // Resuming after an event sees only what came after it.
    assert_eq!(
        events(&store, &run, 3).await,
        pairs(&[("progress", "running"), ("completed", "completed")])
    );
    assert!(events(&store, &run, 5).await.is_empty());
    let limited = store
        .run_events_after(&w.ws.id, &run.id, 0, 2)
        .await
        .unwrap();
    assert_eq!(limited.len(), 2);

    assert_eq!(
        store.node_io(&w.ws.id, &run.id, "in").await.unwrap(),
        Some((json!({"input": "hello"}), json!({"output": "HELLO"})))
    );
    assert_eq!(store.node_io(&w.ws.id, &run.id, "out").await.unwrap(), None);
    // Only creation is audited (not the worker's changes).
    assert!(audit.actions(&store).await.is_empty());

    // A failed run keeps its sentence.
    let other = start(&store, &w, &flow, json!({})).await;
    claim_all(&store, WORKER).await;
    assert!(store
        .finish_run(&other.id, WORKER, &failed, now())
        .await
        .unwrap());
    let other = get(&store, &other).await;
    assert_eq!(other.status, RunStatus::Failed);
    assert_eq!(other.error.as_deref(), Some("too late"));
    let last = store
        .run_events_after(&w.ws.id, &other.id, 2, 10)
        .await
        .unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].kind, "failed");
    assert_eq!(last[0].data["error"], "too late");
}

pub async fn runs_are_listed_newest_first_and_claimed_oldest_first(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let flow = workflow(&store, &w, &w.ws).await;
    let other_flow = store
        .create_workflow(&actor(&w.owner), &w.ws.id, flow_named("g"), &quotas())
        .await
        .unwrap();
    let mut runs = Vec::new();
    for i in 0..5 {
        runs.push(start(&store, &w, &flow, json!({"i": i})).await);
    }
    start(&store, &w, &other_flow, json!({})).await;
    let ids = |list: &[RunRecord]| list.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    let listed = store.list_runs(&w.ws.id, &flow.id, 0, 10).await.unwrap();
    let mut newest_first = ids(&runs);
    newest_first.reverse();
    assert_eq!(ids(&listed), newest_first);
    let page = store.list_runs(&w.ws.id, &flow.id, 1, 2).await.unwrap();
    assert_eq!(ids(&page), newest_first[1..3].to_vec());
    assert!(store
        .list_runs(&w.ws.id, &flow.id, 5, 2)
        .await
        .unwrap()
        .is_empty());

    let claimed = store.claim_runs(WORKER, 2, now(), lease()).await.unwrap();
    assert_eq!(ids(&claimed), ids(&runs[..2]));
    let claimed = store.claim_runs(WORKER, 2, now(), lease()).await.unwrap();
    assert_eq!(ids(&claimed), ids(&runs[2..4]));
    assert!(store
        .claim_runs(WORKER, 0, now(), lease())
        .await
        .unwrap()
        .is_empty());
}

fn flow_named(name: &str) -> noxus_server::store::WorkflowFields {
    flow(name, "flow")
}

pub async fn a_stop_wins_over_a_later_finish(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let flow = workflow(&store, &w, &w.ws).await;

    // A queued run: stopped before any worker sees it.
    let queued = start(&store, &w, &flow, json!({})).await;
    let mut audit = AuditWatch::new(&store, w.org.id.as_str()).await;
    let stopped = store
        .stop_run(&actor(&w.owner), &w.ws.id, &queued.id, now())
        .await
        .unwrap()
        .expect("the run exists");
    assert_eq!(stopped.status, RunStatus::Stopped);
    assert!(stopped.finished_at.is_some());
    assert_eq!(audit.actions(&store).await, vec!["run.stop"]);
    assert!(
        claim_all(&store, WORKER).await.is_empty(),
        "a stopped run is not claimed"
    );

    // A running run: the worker's finish comes after the stop and loses.
    let run = start(&store, &w, &flow, json!({})).await;
    assert_eq!(claim_all(&store, WORKER).await.len(), 1);
    audit.actions(&store).await;
    let stopped = store
        .stop_run(&actor(&w.owner), &w.ws.id, &run.id, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stopped.status, RunStatus::Stopped);
    let outcome = RunOutcome::Completed {
        output: json!({"o": 1}),
    };
    assert!(!store
        .finish_run(&run.id, WORKER, &outcome, now())
        .await
        .unwrap());
    assert!(!store
        .renew_run_lease(&run.id, WORKER, lease())
        .await
        .unwrap());
    assert!(!store
        .update_run_progress(&run.id, WORKER, 50, None)
        .await
        .unwrap());
    let after = get(&store, &run).await;
    assert_eq!(after.status, RunStatus::Stopped);
    assert_eq!(after.output, None);
    // Stopping an ended run changes nothing and says what it is.
    let again = store
        .stop_run(&actor(&w.owner), &w.ws.id, &run.id, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, after);
    assert_eq!(audit.actions(&store).await, vec!["run.stop"]);
    assert_eq!(
        events(&store, &run, 0).await,
        pairs(&[
            ("queued", "queued"),
            ("started", "running"),
            ("stopped", "stopped"),
        ])
    );
    // A completed run stays completed.
    let done = start(&store, &w, &flow, json!({})).await;
    claim_all(&store, WORKER).await;
    assert!(store
        .finish_run(&done.id, WORKER, &outcome, now())
        .await
        .unwrap());
    let unchanged = store
        .stop_run(&actor(&w.owner), &w.ws.id, &done.id, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(unchanged.status, RunStatus::Completed);

    // Racing at once: exactly one of them takes effect, each time.
    let mut races = Vec::new();
    for _ in 0..20 {
        races.push(start(&store, &w, &flow, json!({})).await);
    }
    assert_eq!(claim_all(&store, WORKER).await.len(), races.len());
    let mut tasks = Vec::new();
    for run in &races {
        let (s1, s2) = (Arc::clone(&store), Arc::clone(&store));
        let (id1, id2, ws) = (run.id.clone(), run.id.clone(), w.ws.id.clone());
        let owner = actor(&w.owner);
        let outcome = outcome.clone();
        tasks.push(tokio::spawn(async move {
            let stop = tokio::spawn(async move { s1.stop_run(&owner, &ws, &id1, now()).await });
            let finish =
                tokio::spawn(async move { s2.finish_run(&id2, WORKER, &outcome, now()).await });
            (
                stop.await.unwrap().unwrap().unwrap(),
                finish.await.unwrap().unwrap(),
            )
        }));
    }
    for (run, task) in races.iter().zip(tasks) {
        let (stop_saw, finished) = task.await.unwrap();
        let end = get(&store, run).await;
        let terminal: Vec<_> = events(&store, run, 0)
            .await
            .into_iter()
            .filter(|(kind, _)| kind == "stopped" || kind == "completed")
            .collect();
        assert_eq!(terminal.len(), 1, "one ending: {terminal:?}");
        if finished {
            assert_eq!(end.status, RunStatus::Completed);
            assert_eq!(stop_saw.status, RunStatus::Completed);
        } else {
            assert_eq!(end.status, RunStatus::Stopped);
            assert_eq!(stop_saw.status, RunStatus::Stopped);
            assert_eq!(end.output, None);
        }
    }
}

pub async fn concurrent_claimers_take_each_run_exactly_once(fresh: &mut Fresh) {
    let store = Arc::clone(&fresh.store);
    let replica = fresh.open_another().await;
    let w = world(&store).await;
    let flow = workflow(&store, &w, &w.ws).await;
    let total = 200;
    for i in 0..total {
        start(&store, &w, &flow, json!({"i": i})).await;
    }
    let mut tasks = Vec::new();
    for n in 0..8 {
        let store = if n % 2 == 0 {
            Arc::clone(&store)
        } else {
            Arc::clone(&replica)
        };
        tasks.push(tokio::spawn(async move {
            let worker = format!("worker-{n}");
            let mut mine = Vec::new();
            loop {
                let claimed = store.claim_runs(&worker, 7, now(), lease()).await.unwrap();
                if claimed.is_empty() {
                    break;
                }
                for run in claimed {
                    assert_eq!(run.claimed_by.as_deref(), Some(worker.as_str()));
                    assert_eq!((run.status, run.attempts), (RunStatus::Running, 1));
                    mine.push(run.id);
                }
                tokio::task::yield_now().await;
            }
            mine
        }));
    }
    let mut claims: HashMap<RunId, usize> = HashMap::new();
    for task in tasks {
        for id in task.await.unwrap() {
            *claims.entry(id).or_default() += 1;
        }
    }
    assert_eq!(claims.len(), total, "every run claimed");
    assert!(claims.values().all(|&n| n == 1), "no run claimed twice");
    // And each has exactly one `started` event.
    for id in claims.keys() {
        let events = store.run_events_after(&w.ws.id, id, 0, 10).await.unwrap();
        let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, vec!["queued", "started"]);
    }
}

pub async fn an_expired_lease_resumes_the_run_with_one_more_attempt(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let flow = workflow(&store, &w, &w.ws).await;
    let run = start(&store, &w, &flow, json!({})).await;
    let t0 = now();
    let first = store
        .claim_runs("crashed", 10, t0, t0 + Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let started_at = first[0].started_at;
    // While the lease holds, nobody else takes it.
    assert!(store
        .claim_runs("healthy", 10, t0 + Duration::from_secs(5), lease())
        .await
        .unwrap()
        .is_empty());
    // Once it ran out, the run resumes elsewhere.
    let resumed = store
        .claim_runs(
            "healthy",
            10,
            t0 + Duration::from_secs(11),
            t0 + Duration::from_secs(71),
        )
        .await
        .unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].id, run.id);
    assert_eq!(resumed[0].attempts, 2);
    assert_eq!(resumed[0].claimed_by.as_deref(), Some("healthy"));
    assert_eq!(resumed[0].started_at, started_at, "first start kept");
    // The first worker, if it was only slow, has lost it.
    let outcome = RunOutcome::Completed {
        output: json!({"by": "crashed"}),
    };
    assert!(!store
        .renew_run_lease(&run.id, "crashed", lease())
        .await
        .unwrap());
    assert!(!store
        .finish_run(&run.id, "crashed", &outcome, now())
        .await
        .unwrap());
    let outcome = RunOutcome::Completed {
        output: json!({"by": "healthy"}),
    };
    assert!(store
        .finish_run(&run.id, "healthy", &outcome, now())
        .await
        .unwrap());
    assert_eq!(
        get(&store, &run).await.output,
        Some(json!({"by": "healthy"}))
    );
    let attempts: Vec<_> = store
        .run_events_after(&w.ws.id, &run.id, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.data["attempt"].clone()))
        .collect();
    assert_eq!(
        attempts,
        vec![
            ("queued".to_owned(), Value::Null),
            ("started".to_owned(), json!(1)),
            ("started".to_owned(), json!(2)),
            ("completed".to_owned(), Value::Null),
        ]
    );
}

pub async fn runs_of_another_workspace_are_invisible(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let flow = workflow(&store, &w, &w.ws).await;
    let other = workspace(&store, &w, "Other").await;
    let other_flow = workflow(&store, &w, &other).await;
    let run = start(&store, &w, &flow, json!({"in::input": "confidential"})).await;
    store
        .record_node_io(&run.id, "in", &json!({}), &json!({}))
        .await
        .unwrap();

    assert_eq!(store.run(&other.id, &run.id).await.unwrap(), None);
    assert!(store
        .list_runs(&other.id, &flow.id, 0, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .run_events_after(&other.id, &run.id, 0, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.node_io(&other.id, &run.id, "in").await.unwrap(), None);
    assert!(store
        .search_runs(&other.id, "confidential", 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .stop_run(&actor(&w.owner), &other.id, &run.id, now())
            .await
            .unwrap(),
        None
    );
    let (deleted, not_found) = store
        .delete_runs(&actor(&w.owner), &other.id, std::slice::from_ref(&run.id))
        .await
        .unwrap();
    assert!(deleted.is_empty());
    assert_eq!(not_found, vec![run.id.clone()]);
    assert_eq!(
        get(&store, &run).await.status,
        RunStatus::Queued,
        "untouched"
    );

    // Nor can a run of one workspace's workflow be started in another.
    let mut crossed = new_run(&w, &flow, json!({}));
    crossed.workspace_id = other.id.clone();
    let refused = store
        .create_run(&actor(&w.owner), &crossed, &RunQuotas::default())
        .await;
    assert!(matches!(refused, Err(StoreError::NotFound)), "{refused:?}");
    assert!(store
        .list_runs(&other.id, &other_flow.id, 0, 10)
        .await
        .unwrap()
        .is_empty());
}

pub async fn search_finds_words_of_inputs_and_outputs_and_reads_no_syntax(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let flow = workflow(&store, &w, &w.ws).await;
    let fox = start(
        &store,
        &w,
        &flow,
        json!({"secretkeyname::input": "The quick brown Fox", "n": 4711}),
    )
    .await;
    let dog = start(&store, &w, &flow, json!({"a::input": "lazy dog, shared"})).await;
    let cat = start(
        &store,
        &w,
        &flow,
        json!({"a::input": ["shared", {"deep": "cat"}]}),
    )
    .await;
    assert_eq!(claim_all(&store, WORKER).await.len(), 3);
    let outcome = RunOutcome::Completed {
        output: json!({"out::output": {"text": "zebra crossing"}}),
    };
    assert!(store
        .finish_run(&fox.id, WORKER, &outcome, now())
        .await
        .unwrap());

    let found = |query: &'static str| {
        let store = Arc::clone(&store);
        let ws = w.ws.id.clone();
        async move {
            store
                .search_runs(&ws, query, 10)
                .await
                .unwrap_or_else(|e| panic!("search {query:?}: {e}"))
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    let only = |run: &RunRecord| vec![run.id.clone()];
    assert_eq!(found("quick").await, only(&fox));
    assert_eq!(found("QUICK fox").await, only(&fox), "any case, all words");
    assert_eq!(found("zebra").await, only(&fox), "words of the output");
    assert_eq!(found("4711").await, only(&fox), "numbers");
    assert_eq!(found("cat").await, only(&cat), "nested strings");
    assert_eq!(
        found("shared").await,
        vec![cat.id.clone(), dog.id.clone()],
        "newest first"
    );
    assert!(
        found("quick lazy").await.is_empty(),
        "every word must be there"
    );
    assert!(found("secretkeyname").await.is_empty(), "keys are not text");
    assert!(found("").await.is_empty());
    assert!(found("  \"\" () * ").await.is_empty(), "no words, no runs");
    // Whatever a user types is words, never search syntax.
    assert_eq!(found("\"quick").await, only(&fox));
    assert_eq!(found("quick\"").await, only(&fox));
    assert_eq!(found("fox*").await, only(&fox));
    assert_eq!(found("-quick").await, only(&fox));
    assert_eq!(
        found("(quick) AND:fox^").await.len(),
        0,
        "AND is a word here"
    );
    assert!(found("quick OR lazy").await.is_empty(), "OR is a word here");
    assert!(found("NEAR(quick fox)").await.is_empty());
    assert!(found("body:quick").await.is_empty());
    assert!(found("quick & !fox | lazy <-> dog").await.is_empty());
    assert!(found("'; DROP TABLE runs; --").await.is_empty());
    assert_eq!(found("dog\\").await, only(&dog));
    assert_eq!(get(&store, &dog).await.id, dog.id, "runs are still there");

    let limited = store.search_runs(&w.ws.id, "shared", 1).await.unwrap();
    assert_eq!(limited.len(), 1);

    store
        .delete_runs(&actor(&w.owner), &w.ws.id, std::slice::from_ref(&fox.id))
        .await
        .unwrap();
    assert!(
        found("quick").await.is_empty(),
        "a deleted run is not found"
    );
}

pub async fn deleting_runs_takes_their_io_and_events(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let flow = workflow(&store, &w, &w.ws).await;
    let one = start(&store, &w, &flow, json!({"x": "one"})).await;
    let two = start(&store, &w, &flow, json!({"x": "two"})).await;
    for run in [&one, &two] {
        store
            .record_node_io(&run.id, "n", &json!({"i": 1}), &json!({"o": 1}))
            .await
            .unwrap();
    }
    let mut audit = AuditWatch::new(&store, w.org.id.as_str()).await;
    let missing = RunId::new();
    let (deleted, not_found) = store
        .delete_runs(
            &actor(&w.owner),
            &w.ws.id,
            &[one.id.clone(), missing.clone(), one.id.clone()],
        )
        .await
        .unwrap();
    assert_eq!(deleted, vec![one.id.clone()]);
    assert_eq!(not_found, vec![missing]);
    assert_eq!(audit.actions(&store).await, vec!["run.delete"]);
    assert_eq!(store.run(&w.ws.id, &one.id).await.unwrap(), None);
    assert_eq!(store.node_io(&w.ws.id, &one.id, "n").await.unwrap(), None);
    assert!(store
        .run_events_after(&w.ws.id, &one.id, 0, 10)
        .await
        .unwrap()
        .is_empty());
    // A worker's writes about a deleted run find nothing.
    assert!(matches!(
        store
            .append_run_event(&one.id, "node_started", &json!({}))
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .record_node_io(&one.id, "n", &json!({}), &json!({}))
            .await,
        Err(StoreError::NotFound)
    ));
    // The other run is whole.
    assert_eq!(
        store.node_io(&w.ws.id, &two.id, "n").await.unwrap(),
        Some((json!({"i": 1}), json!({"o": 1})))
    );
    assert_eq!(events(&store, &two, 0).await.len(), 1);
}

pub async fn deleting_a_workflow_or_workspace_takes_its_runs(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let flow = workflow(&store, &w, &w.ws).await;
    let kept_flow = store
        .create_workflow(&actor(&w.owner), &w.ws.id, flow_named("kept"), &quotas())
        .await
        .unwrap();
    let gone = start(&store, &w, &flow, json!({"x": "gone"})).await;
    let kept = start(&store, &w, &kept_flow, json!({"x": "kept"})).await;
    store
        .delete_workflow(&actor(&w.owner), &w.ws.id, &flow.id)
        .await
        .unwrap();
    assert_eq!(store.run(&w.ws.id, &gone.id).await.unwrap(), None);
    assert!(store
        .search_runs(&w.ws.id, "gone", 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(get(&store, &kept).await.id, kept.id);

    let other = workspace(&store, &w, "Doomed").await;
    let doomed_flow = workflow(&store, &w, &other).await;
    let doomed = start(&store, &w, &doomed_flow, json!({"x": "doomed"})).await;
    store
        .delete_workspace(&Actor::system(), &w.org.id, &other.id)
        .await
        .unwrap();
    let claimed = claim_all(&store, WORKER).await;
    let claimed: Vec<_> = claimed.iter().map(|r| &r.id).collect();
    assert_eq!(
        claimed,
        vec![&kept.id],
        "no run of a deleted workspace is left to run"
    );
    assert!(matches!(
        store.append_run_event(&doomed.id, "x", &json!({})).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn active_run_quota_is_enforced(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let flow = workflow(&store, &w, &w.ws).await;
    let quotas = RunQuotas {
        active_runs_per_workspace: 2,
        ..RunQuotas::default()
    };
    let create = |store: Arc<dyn Store>, run: NewRun| async move {
        store.create_run(&Actor::system(), &run, &quotas).await
    };
    let first = create(Arc::clone(&store), new_run(&w, &flow, json!({})))
        .await
        .unwrap();
    create(Arc::clone(&store), new_run(&w, &flow, json!({})))
        .await
        .unwrap();
    let mut audit = AuditWatch::new(&store, w.org.id.as_str()).await;
    let refused = create(Arc::clone(&store), new_run(&w, &flow, json!({}))).await;
    assert!(
        matches!(
            refused,
            Err(StoreError::QuotaExceeded {
                quota: Quota::ActiveRunsPerWorkspace,
                limit: 2
            })
        ),
        "{refused:?}"
    );
    assert!(
        audit.actions(&store).await.is_empty(),
        "a refused run writes nothing"
    );
    assert_eq!(
        store
            .list_runs(&w.ws.id, &flow.id, 0, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    // Running runs count too; an ended one makes room.
    claim_all(&store, WORKER).await;
    assert!(create(Arc::clone(&store), new_run(&w, &flow, json!({})))
        .await
        .is_err());
    store
        .stop_run(&Actor::system(), &w.ws.id, &first.id, now())
        .await
        .unwrap();
    create(Arc::clone(&store), new_run(&w, &flow, json!({})))
        .await
        .unwrap();
    // Another workspace has its own.
    let other = workspace(&store, &w, "Other").await;
    let other_flow = workflow(&store, &w, &other).await;
    create(Arc::clone(&store), new_run(&w, &other_flow, json!({})))
        .await
        .unwrap();
}

/// The bytes a new run of `new_run` starts with: its definition and input.
fn new_bytes(run: &NewRun) -> u64 {
    (run.definition.to_string().len() + run.input.to_string().len()) as u64
}

pub async fn run_bytes_count_what_runs_hold_and_bound_new_runs(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let flow = workflow(&store, &w, &w.ws).await;
    let first_run = new_run(&w, &flow, json!({"text": "héllo"}));
    let first_bytes = new_bytes(&first_run);
    let first = store
        .create_run(&actor(&w.owner), &first_run, &RunQuotas::default())
        .await
        .unwrap();
    assert_eq!(
        store.run_storage_bytes(&w.ws.id).await.unwrap(),
        first_bytes
    );

    // Ended, it holds its node input/output and its output as well (bytes,
    // not characters: "é" is two).
    claim_all(&store, WORKER).await;
    let (io_in, io_out) = (json!({"input": "héllo"}), json!({"output": "HÉLLO"}));
    store
        .record_node_io(&first.id, "upper", &io_in, &io_out)
        .await
        .unwrap();
    let output = json!({"out::output": {"text": "HÉLLO"}});
    assert!(store
        .finish_run(
            &first.id,
            WORKER,
            &RunOutcome::Completed {
                output: output.clone()
            },
            now()
        )
        .await
        .unwrap());
    let held = first_bytes
        + (io_in.to_string().len() + io_out.to_string().len() + output.to_string().len()) as u64;
    assert_eq!(store.run_storage_bytes(&w.ws.id).await.unwrap(), held);

    // A failed run counts its error; a stopped one what it had.
    let failing = start(&store, &w, &flow, json!({})).await;
    claim_all(&store, WORKER).await;
    let error = "Node x: it broke.";
    store
        .finish_run(
            &failing.id,
            WORKER,
            &RunOutcome::Failed {
                error: error.to_owned(),
                output: None,
            },
            now(),
        )
        .await
        .unwrap();
    let held = held + new_bytes(&new_run(&w, &flow, json!({}))) + error.len() as u64;
    assert_eq!(store.run_storage_bytes(&w.ws.id).await.unwrap(), held);

    // The quota: a run fits if its definition and input fit in what is left.
    let next = new_run(&w, &flow, json!({"n": 1}));
    let exact = RunQuotas {
        run_bytes_per_workspace: held + new_bytes(&next),
        ..RunQuotas::default()
    };
    let mut audit = AuditWatch::new(&store, w.org.id.as_str()).await;
    store
        .create_run(&actor(&w.owner), &next, &exact)
        .await
        .expect("a run that fits exactly");
    let refused = store.create_run(&actor(&w.owner), &next, &exact).await;
    assert!(
        matches!(
            refused,
            Err(StoreError::QuotaExceeded {
                quota: Quota::RunBytesPerWorkspace,
                limit
            }) if limit == exact.run_bytes_per_workspace
        ),
        "{refused:?}"
    );
    assert_eq!(audit.actions(&store).await, vec!["run.start"]);

    // Deleting a run makes room; another workspace has its own.
    store
        .delete_runs(&actor(&w.owner), &w.ws.id, std::slice::from_ref(&first.id))
        .await
        .unwrap();
    store
        .create_run(&actor(&w.owner), &next, &exact)
        .await
        .expect("room after a deletion");
    let other = workspace(&store, &w, "Other").await;
    assert_eq!(store.run_storage_bytes(&other.id).await.unwrap(), 0);
    let other_flow = workflow(&store, &w, &other).await;
    store
        .create_run(
            &actor(&w.owner),
            &new_run(&w, &other_flow, json!({"n": 1})),
            &exact,
        )
        .await
        .unwrap();
}

pub async fn purging_takes_only_runs_that_ended_before_the_cutoff(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let flow = workflow(&store, &w, &w.ws).await;
    let completed = start(&store, &w, &flow, json!({"x": "completed"})).await;
    let stopped = start(&store, &w, &flow, json!({"x": "stopped"})).await;
    claim_all(&store, WORKER).await;
    store
        .record_node_io(&completed.id, "n", &json!({}), &json!({}))
        .await
        .unwrap();
    let long_ago = now() - Duration::from_secs(3 * 86_400);
    store
        .finish_run(
            &completed.id,
            WORKER,
            &RunOutcome::Completed { output: json!({}) },
            long_ago,
        )
        .await
        .unwrap();
    store
        .stop_run(
            &Actor::system(),
            &w.ws.id,
            &stopped.id,
            long_ago + Duration::from_secs(60),
        )
        .await
        .unwrap();
    let recent = start(&store, &w, &flow, json!({"x": "recent"})).await;
    claim_all(&store, WORKER).await;
    store
        .finish_run(
            &recent.id,
            WORKER,
            &RunOutcome::Completed { output: json!({}) },
            now(),
        )
        .await
        .unwrap();
    let queued = start(&store, &w, &flow, json!({"x": "queued"})).await;
    let mut audit = AuditWatch::new(&store, w.org.id.as_str()).await;

    let cutoff = now() - Duration::from_secs(86_400);
    // Oldest first, at most the limit per call.
    assert_eq!(store.purge_ended_runs(cutoff, 1).await.unwrap(), 1);
    assert_eq!(store.run(&w.ws.id, &completed.id).await.unwrap(), None);
    assert_eq!(
        store.node_io(&w.ws.id, &completed.id, "n").await.unwrap(),
        None
    );
    assert!(store
        .run_events_after(&w.ws.id, &completed.id, 0, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .search_runs(&w.ws.id, "completed", 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(get(&store, &stopped).await.status, RunStatus::Stopped);
    assert_eq!(store.purge_ended_runs(cutoff, 10).await.unwrap(), 1);
    assert_eq!(store.run(&w.ws.id, &stopped.id).await.unwrap(), None);
    assert_eq!(store.purge_ended_runs(cutoff, 10).await.unwrap(), 0);
    // What ended after the cutoff, and what has not ended, stays; the
    // retention writes no audit row.
    assert_eq!(get(&store, &recent).await.status, RunStatus::Completed);
    assert_eq!(get(&store, &queued).await.status, RunStatus::Queued);
    assert_eq!(
        store
            .purge_ended_runs(now() + Duration::from_secs(60), 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(get(&store, &queued).await.status, RunStatus::Queued);
    assert!(audit.actions(&store).await.is_empty());
}

pub async fn ended_runs_are_the_oldest_ended_ones_of_the_workflow(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let flow = workflow(&store, &w, &w.ws).await;
    let other_flow = store
        .create_workflow(&actor(&w.owner), &w.ws.id, flow_named("other"), &quotas())
        .await
        .unwrap();
    let mut ended = Vec::new();
    for i in 0..3 {
        let run = start(&store, &w, &flow, json!({ "i": i })).await;
        store
            .stop_run(&Actor::system(), &w.ws.id, &run.id, now())
            .await
            .unwrap();
        ended.push(run);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let active = start(&store, &w, &flow, json!({"i": "active"})).await;
    let elsewhere = start(&store, &w, &other_flow, json!({})).await;
    store
        .stop_run(&Actor::system(), &w.ws.id, &elsewhere.id, now())
        .await
        .unwrap();
    let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();

    let all = store
        .ended_runs(&w.ws.id, &flow.id, None, 10)
        .await
        .unwrap();
    assert_eq!(
        ids(all),
        ended.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        "oldest first; not the active run, not another workflow's"
    );
    let two = store.ended_runs(&w.ws.id, &flow.id, None, 2).await.unwrap();
    assert_eq!(ids(two), vec![ended[0].id.clone(), ended[1].id.clone()]);
    let before_third = store
        .ended_runs(&w.ws.id, &flow.id, Some(ended[2].created_at), 10)
        .await
        .unwrap();
    assert_eq!(
        ids(before_third),
        vec![ended[0].id.clone(), ended[1].id.clone()]
    );
    let other = workspace(&store, &w, "Other").await;
    assert!(store
        .ended_runs(&other.id, &flow.id, None, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(get(&store, &active).await.status, RunStatus::Queued);
}

/// The run changes published since the last call (none within 100 ms:
/// they are published before the store call returns).
async fn run_changes(subscription: &mut RunSubscription) -> Vec<StoreEvent> {
    let mut changes = Vec::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(100), subscription.next()).await
    {
        changes.push(event);
    }
    changes
}

/// Every write that appends events to a run publishes `RunChanged` for it
/// (and nothing when it changed nothing), on the runs' channel only: not
/// counted by `events().published()`, not heard by the key cache's
/// subscription.
pub async fn run_writes_publish_run_changes_apart_from_key_events(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let flow = workflow(&store, &w, &w.ws).await;
    let mut runs = store.subscribe_runs();
    let mut keys = EventWatch::new(&store);
    let published = store.events().published();
    let changed = |run: &RunRecord| vec![StoreEvent::RunChanged(run.id.clone())];

    let run = start(&store, &w, &flow, json!({})).await;
    assert_eq!(
        run_changes(&mut runs).await,
        [],
        "no stream can be open yet"
    );
    let other = start(&store, &w, &flow, json!({})).await;
    let claimed = claim_all(&store, WORKER).await;
    assert_eq!(claimed.len(), 2);
    let mut heard = run_changes(&mut runs).await;
    heard.sort_by_key(StoreEvent::encode);
    assert_eq!(
        heard,
        sorted(vec![
            StoreEvent::RunChanged(run.id.clone()),
            StoreEvent::RunChanged(other.id.clone())
        ]),
        "claim"
    );
    store
        .append_run_event(&run.id, "node_started", &json!({"node_id": "in"}))
        .await
        .unwrap();
    assert_eq!(run_changes(&mut runs).await, changed(&run), "append");
    assert!(store
        .update_run_progress(&run.id, WORKER, 50, None)
        .await
        .unwrap());
    assert_eq!(run_changes(&mut runs).await, changed(&run), "progress");
    // Another worker's writes change nothing and publish nothing.
    assert!(!store
        .update_run_progress(&run.id, "someone-else", 60, None)
        .await
        .unwrap());
    let outcome = RunOutcome::Completed {
        output: json!({"done": true}),
    };
    assert!(!store
        .finish_run(&run.id, "someone-else", &outcome, now())
        .await
        .unwrap());
    assert_eq!(run_changes(&mut runs).await, [], "refused writes");
    assert!(store
        .finish_run(&run.id, WORKER, &outcome, now())
        .await
        .unwrap());
    assert_eq!(run_changes(&mut runs).await, changed(&run), "finish");
    // Stopping an ended run changes nothing; stopping a running one does.
    store
        .stop_run(&actor(&w.owner), &w.ws.id, &run.id, now())
        .await
        .unwrap();
    assert_eq!(run_changes(&mut runs).await, [], "stop of an ended run");
    store
        .stop_run(&actor(&w.owner), &w.ws.id, &other.id, now())
        .await
        .unwrap();
    assert_eq!(run_changes(&mut runs).await, changed(&other), "stop");

    // A worker's steps (and outcome) in one write; given back; requeued.
    let third = start(&store, &w, &flow, json!({})).await;
    let fourth = start(&store, &w, &flow, json!({})).await;
    assert_eq!(claim_all(&store, WORKER).await.len(), 2);
    run_changes(&mut runs).await;
    let data = json!({"node_id": "in"});
    let step = [RunStep::NodeStarted { data: &data }];
    assert!(!store
        .record_run_steps(&third.id, "someone-else", &step, Some(&outcome), now())
        .await
        .unwrap());
    assert_eq!(run_changes(&mut runs).await, [], "refused steps");
    assert!(store
        .record_run_steps(&third.id, WORKER, &step, None, now())
        .await
        .unwrap());
    assert_eq!(run_changes(&mut runs).await, changed(&third), "steps");
    assert!(store
        .record_run_steps(&third.id, WORKER, &step, Some(&outcome), now())
        .await
        .unwrap());
    assert_eq!(
        run_changes(&mut runs).await,
        changed(&third),
        "steps and end"
    );
    assert!(store
        .renew_run_leases(WORKER, now() + Duration::from_secs(60))
        .await
        .is_ok());
    assert_eq!(run_changes(&mut runs).await, [], "a renewal adds no event");
    assert_eq!(
        store.release_runs(WORKER).await.unwrap(),
        vec![fourth.id.clone()]
    );
    assert_eq!(run_changes(&mut runs).await, changed(&fourth), "given back");
    claim_all(&store, WORKER).await;
    run_changes(&mut runs).await;
    assert_eq!(
        store.requeue_running_runs().await.unwrap(),
        vec![fourth.id.clone()]
    );
    assert_eq!(run_changes(&mut runs).await, changed(&fourth), "requeued");
    assert!(store.release_runs(WORKER).await.unwrap().is_empty());
    assert_eq!(run_changes(&mut runs).await, [], "nothing given back");

    assert_eq!(store.events().published(), published, "not counted");
    assert_eq!(keys.take(&store).await, [], "not heard by the key cache");
}

/// The kinds of a run's events after `after`.
async fn kinds(store: &Arc<dyn Store>, run: &RunRecord, after: i64) -> Vec<String> {
    events(store, run, after)
        .await
        .into_iter()
        .map(|(kind, _)| kind)
        .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

pub async fn a_worker_records_its_steps_in_one_write_only_while_it_holds_the_run(
    store: Arc<dyn Store>,
) {
    let w = world(&store).await;
    let flow = workflow(&store, &w, &w.ws).await;
    let run = start(&store, &w, &flow, json!({"in::input": "hi"})).await;
    assert_eq!(claim_all(&store, WORKER).await.len(), 1);

    let first = json!({"node_id": "in", "index": 0, "total": 2});
    assert!(store
        .record_run_steps(
            &run.id,
            WORKER,
            &[RunStep::NodeStarted { data: &first }],
            None,
            now()
        )
        .await
        .unwrap());
    assert_eq!(
        events(&store, &run, 0).await,
        pairs(&[
            ("queued", "queued"),
            ("started", "running"),
            ("node_started", "running"),
        ])
    );
    let details = json!({"node_id": "in"});
    let second = json!({"node_id": "out", "index": 1, "total": 2});
    let (input, output) = (json!({"input": "hi"}), json!({"output": "hi"}));
    assert!(store
        .record_run_steps(
            &run.id,
            WORKER,
            &[
                RunStep::NodeFinished {
                    node_id: "in",
                    input: &input,
                    output: &output,
                    progress: 50,
                    progress_details: Some(&details),
                },
                RunStep::NodeStarted { data: &second },
            ],
            None,
            now(),
        )
        .await
        .unwrap());
    let mid = get(&store, &run).await;
    assert_eq!((mid.status, mid.progress), (RunStatus::Running, 50));
    assert_eq!(mid.progress_details, Some(details.clone()));
    assert_eq!(mid.last_event_seq, 5);
    assert_eq!(
        store.node_io(&w.ws.id, &run.id, "in").await.unwrap(),
        Some((input.clone(), output.clone()))
    );
    let written = store
        .run_events_after(&w.ws.id, &run.id, 3, 10)
        .await
        .unwrap();
    let written: Vec<_> = written.iter().map(|e| (e.kind.as_str(), &e.data)).collect();
    assert_eq!(
        written,
        vec![
            (
                "progress",
                &json!({"progress": 50, "progress_details": details, "workflow_status": "running"})
            ),
            (
                "node_started",
                &json!({"node_id": "out", "index": 1, "total": 2, "workflow_status": "running"})
            ),
        ],
        "in the order given, each saying the run's status"
    );

    // Another worker's report changes nothing.
    let intruder = json!({"output": "forged"});
    assert!(!store
        .record_run_steps(
            &run.id,
            "worker-2",
            &[RunStep::NodeFinished {
                node_id: "out",
                input: &intruder,
                output: &intruder,
                progress: 100,
                progress_details: None,
            }],
            Some(&RunOutcome::Completed {
                output: intruder.clone()
            }),
            now(),
        )
        .await
        .unwrap());
    assert_eq!(get(&store, &run).await, mid, "nothing changed");
    assert_eq!(store.node_io(&w.ws.id, &run.id, "out").await.unwrap(), None);

    // The last node and the outcome together.
    let done_output = json!({"out::output": {"text": "hi"}});
    let (out_in, out_out) = (json!({"input": "hi"}), json!({"output": "hi"}));
    assert!(store
        .record_run_steps(
            &run.id,
            WORKER,
            &[RunStep::NodeFinished {
                node_id: "out",
                input: &out_in,
                output: &out_out,
                progress: 100,
                progress_details: None,
            }],
            Some(&RunOutcome::Completed {
                output: done_output.clone()
            }),
            now(),
        )
        .await
        .unwrap());
    let done = get(&store, &run).await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.output, Some(done_output));
    assert_eq!(done.progress, 100);
    assert!(done.finished_at.is_some() && done.lease_until.is_none());
    assert_eq!(done.claimed_by.as_deref(), Some(WORKER), "who ended it");
    assert_eq!(
        store.node_io(&w.ws.id, &run.id, "out").await.unwrap(),
        Some((out_in, out_out))
    );
    assert_eq!(
        events(&store, &run, 5).await,
        pairs(&[("progress", "running"), ("completed", "completed")])
    );
    // Ended: its worker's reports change nothing any more.
    assert!(!store
        .record_run_steps(
            &run.id,
            WORKER,
            &[RunStep::NodeStarted { data: &first }],
            None,
            now()
        )
        .await
        .unwrap());
    assert_eq!(get(&store, &run).await, done);

    // A failure with no step: the sentence and the `failed` event.
    let failing = start(&store, &w, &flow, json!({})).await;
    claim_all(&store, WORKER).await;
    let failed = RunOutcome::Failed {
        error: "Node x: it broke.".to_owned(),
        output: None,
    };
    assert!(store
        .record_run_steps(&failing.id, WORKER, &[], Some(&failed), now())
        .await
        .unwrap());
    let failing_now = get(&store, &failing).await;
    assert_eq!(failing_now.status, RunStatus::Failed);
    assert_eq!(failing_now.error.as_deref(), Some("Node x: it broke."));
    assert_eq!(
        kinds(&store, &failing, 0).await,
        strings(&["queued", "started", "failed"])
    );

    // A stop wins over the worker's next report, which writes nothing.
    let stopped = start(&store, &w, &flow, json!({})).await;
    claim_all(&store, WORKER).await;
    store
        .stop_run(&actor(&w.owner), &w.ws.id, &stopped.id, now())
        .await
        .unwrap();
    assert!(!store
        .record_run_steps(
            &stopped.id,
            WORKER,
            &[RunStep::NodeFinished {
                node_id: "in",
                input: &input,
                output: &output,
                progress: 50,
                progress_details: None,
            }],
            Some(&RunOutcome::Completed { output: json!({}) }),
            now(),
        )
        .await
        .unwrap());
    assert_eq!(get(&store, &stopped).await.status, RunStatus::Stopped);
    assert_eq!(
        store.node_io(&w.ws.id, &stopped.id, "in").await.unwrap(),
        None
    );
    assert_eq!(
        kinds(&store, &stopped, 0).await,
        strings(&["queued", "started", "stopped"])
    );
}

/// What node `n` received and produced, as reported by `who`.
fn node_values(who: &str) -> (Value, Value) {
    (json!({"input": who}), json!({"output": who}))
}

/// Node `n` finished.
fn node_n<'a>(input: &'a Value, output: &'a Value) -> RunStep<'a> {
    RunStep::NodeFinished {
        node_id: "n",
        input,
        output,
        progress: 50,
        progress_details: None,
    }
}

pub async fn a_late_worker_never_overwrites_the_worker_that_took_its_run_over(
    store: Arc<dyn Store>,
) {
    let w = world(&store).await;
    let flow = workflow(&store, &w, &w.ws).await;
    let run = start(&store, &w, &flow, json!({})).await;
    let t0 = now();
    assert_eq!(
        store
            .claim_runs("slow", 10, t0, t0 + Duration::from_secs(10))
            .await
            .unwrap()
            .len(),
        1
    );
    let (slow_in, slow_out) = node_values("slow");
    assert!(store
        .record_run_steps(&run.id, "slow", &[node_n(&slow_in, &slow_out)], None, now())
        .await
        .unwrap());
    // Its lease ran out: another worker takes the run over and reports.
    let taken = store
        .claim_runs(
            "healthy",
            10,
            t0 + Duration::from_secs(11),
            t0 + Duration::from_secs(71),
        )
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    let (healthy_in, healthy_out) = node_values("healthy");
    assert!(store
        .record_run_steps(
            &run.id,
            "healthy",
            &[node_n(&healthy_in, &healthy_out)],
            None,
            now()
        )
        .await
        .unwrap());
    // The slow worker, still going, reports its node and an outcome: refused.
    let (late_in, late_out) = node_values("late");
    let before = get(&store, &run).await;
    assert!(!store
        .record_run_steps(
            &run.id,
            "slow",
            &[node_n(&late_in, &late_out)],
            Some(&RunOutcome::Completed {
                output: json!({"by": "slow"})
            }),
            now(),
        )
        .await
        .unwrap());
    assert!(store
        .renew_run_leases("slow", lease())
        .await
        .unwrap()
        .is_empty());
    assert!(store.release_runs("slow").await.unwrap().is_empty());
    assert_eq!(get(&store, &run).await, before, "nothing of the slow one");
    assert_eq!(
        store.node_io(&w.ws.id, &run.id, "n").await.unwrap(),
        Some((healthy_in, healthy_out))
    );
    assert!(store
        .record_run_steps(
            &run.id,
            "healthy",
            &[],
            Some(&RunOutcome::Completed {
                output: json!({"by": "healthy"})
            }),
            now(),
        )
        .await
        .unwrap());
    let done = get(&store, &run).await;
    assert_eq!(done.output, Some(json!({"by": "healthy"})));
    assert_eq!(done.attempts, 2);
}

pub async fn renewing_leases_extends_every_run_a_worker_holds_in_one_write(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let flow = workflow(&store, &w, &w.ws).await;
    let mut runs = Vec::new();
    for i in 0..4 {
        runs.push(start(&store, &w, &flow, json!({"i": i})).await);
    }
    let t0 = now();
    let short = t0 + Duration::from_secs(5);
    let mine = store.claim_runs("a", 3, t0, short).await.unwrap();
    let theirs = store.claim_runs("b", 3, t0, short).await.unwrap();
    assert_eq!((mine.len(), theirs.len()), (3, 1));
    let ids = |list: &[RunId]| {
        let mut list = list.to_vec();
        list.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        list
    };
    let mine_ids: Vec<RunId> = mine.iter().map(|r| r.id.clone()).collect();

    let until = t0 + Duration::from_secs(60);
    let renewed = store.renew_run_leases("a", until).await.unwrap();
    assert_eq!(ids(&renewed), ids(&mine_ids));
    for run in &mine {
        let lease = get(&store, run).await.lease_until.expect("a lease");
        assert!(
            (lease - until).abs() < time::Duration::milliseconds(2),
            "{lease} is the renewal's {until}"
        );
    }
    let other = get(&store, &theirs[0]).await.lease_until.expect("a lease");
    assert!(
        (other - short).abs() < time::Duration::milliseconds(2),
        "another worker's lease is untouched"
    );
    // Renewed, they are not taken over when the first lease would have run out.
    let later = store
        .claim_runs("c", 10, t0 + Duration::from_secs(6), lease())
        .await
        .unwrap();
    assert_eq!(
        later.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![theirs[0].id.clone()],
        "only b's run, whose lease ran out"
    );

    // A stopped and a finished run are no longer renewed: named no more.
    store
        .stop_run(&actor(&w.owner), &w.ws.id, &mine[0].id, now())
        .await
        .unwrap();
    assert!(store
        .record_run_steps(
            &mine[1].id,
            "a",
            &[],
            Some(&RunOutcome::Completed { output: json!({}) }),
            now()
        )
        .await
        .unwrap());
    let renewed = store.renew_run_leases("a", until).await.unwrap();
    assert_eq!(renewed, vec![mine[2].id.clone()]);
    assert!(store
        .renew_run_leases("nobody", until)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(get(&store, &mine[1]).await.lease_until, None);
}

pub async fn released_runs_are_queued_again_at_once_without_counting_the_claim(
    store: Arc<dyn Store>,
) {
    let w = world(&store).await;
    let flow = workflow(&store, &w, &w.ws).await;
    let mut runs = Vec::new();
    for i in 0..3 {
        runs.push(start(&store, &w, &flow, json!({"i": i})).await);
    }
    let mine = store
        .claim_runs("leaving", 2, now(), lease())
        .await
        .unwrap();
    let theirs = store
        .claim_runs("staying", 2, now(), lease())
        .await
        .unwrap();
    assert_eq!((mine.len(), theirs.len()), (2, 1));
    let data = json!({"node_id": "n", "index": 0, "total": 2});
    let io = json!({"v": 1});
    assert!(store
        .record_run_steps(
            &mine[0].id,
            "leaving",
            &[
                RunStep::NodeStarted { data: &data },
                RunStep::NodeFinished {
                    node_id: "n",
                    input: &io,
                    output: &io,
                    progress: 40,
                    progress_details: Some(&data),
                },
            ],
            None,
            now(),
        )
        .await
        .unwrap());
    let mut audit = AuditWatch::new(&store, w.org.id.as_str()).await;

    let released = store.release_runs("leaving").await.unwrap();
    let mut expected: Vec<RunId> = mine.iter().map(|r| r.id.clone()).collect();
    let mut got = released.clone();
    expected.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    got.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(got, expected);
    for run in &mine {
        let back = get(&store, run).await;
        assert_eq!(back.status, RunStatus::Queued);
        assert_eq!((back.claimed_by, back.lease_until), (None, None));
        assert_eq!(back.attempts, 0, "a claim given back is not an attempt");
        assert_eq!((back.progress, back.progress_details), (0, None));
        assert!(back.started_at.is_some(), "when it first started is kept");
        let last = store
            .run_events_after(&w.ws.id, &run.id, back.last_event_seq - 1, 10)
            .await
            .unwrap();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].kind, "requeued");
        assert_eq!(
            last[0].data,
            json!({"reason": "released", "workflow_status": "queued"})
        );
    }
    let other = get(&store, &theirs[0]).await;
    assert_eq!(
        (other.status, other.claimed_by.as_deref()),
        (RunStatus::Running, Some("staying")),
        "another worker's run is untouched"
    );
    assert!(
        audit.actions(&store).await.is_empty(),
        "workers' changes are not audited"
    );
    // The worker that left can change them no more.
    assert!(!store
        .record_run_steps(
            &mine[0].id,
            "leaving",
            &[],
            Some(&RunOutcome::Completed { output: json!({}) }),
            now()
        )
        .await
        .unwrap());
    assert!(store.release_runs("leaving").await.unwrap().is_empty());
    // Another worker takes them at once, without waiting for the lease.
    let taken = store.claim_runs("next", 10, now(), lease()).await.unwrap();
    assert_eq!(
        taken.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        mine.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        "oldest first"
    );
    for run in &taken {
        assert_eq!((run.attempts, run.claimed_by.as_deref()), (1, Some("next")));
    }
    assert_eq!(
        kinds(&store, &mine[0], 0).await,
        strings(&[
            "queued",
            "started",
            "node_started",
            "progress",
            "requeued",
            "started"
        ])
    );
}

pub async fn requeueing_running_runs_takes_every_one_and_counts_the_claim(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let flow = workflow(&store, &w, &w.ws).await;
    let done = start(&store, &w, &flow, json!({"i": "done"})).await;
    claim_all(&store, "a").await;
    assert!(store
        .record_run_steps(
            &done.id,
            "a",
            &[],
            Some(&RunOutcome::Completed { output: json!({}) }),
            now()
        )
        .await
        .unwrap());
    let first = start(&store, &w, &flow, json!({"i": 1})).await;
    assert_eq!(
        store
            .claim_runs("a", 1, now(), lease())
            .await
            .unwrap()
            .len(),
        1
    );
    let second = start(&store, &w, &flow, json!({"i": 2})).await;
    assert_eq!(
        store
            .claim_runs("b", 1, now(), lease())
            .await
            .unwrap()
            .len(),
        1
    );
    let waiting = start(&store, &w, &flow, json!({"i": 3})).await;

    let mut requeued = store.requeue_running_runs().await.unwrap();
    requeued.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    let mut expected = vec![first.id.clone(), second.id.clone()];
    expected.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(requeued, expected);
    for run in [&first, &second] {
        let back = get(&store, run).await;
        assert_eq!((back.status, back.claimed_by), (RunStatus::Queued, None));
        assert_eq!(back.attempts, 1, "the interrupted claim counts");
        let last = store
            .run_events_after(&w.ws.id, &run.id, back.last_event_seq - 1, 10)
            .await
            .unwrap();
        assert_eq!(
            (last[0].kind.as_str(), &last[0].data),
            (
                "requeued",
                &json!({"reason": "interrupted", "workflow_status": "queued"})
            )
        );
    }
    assert_eq!(get(&store, &done).await.status, RunStatus::Completed);
    assert_eq!(
        kinds(&store, &waiting, 0).await,
        strings(&["queued"]),
        "a queued run is untouched"
    );
    assert!(store.requeue_running_runs().await.unwrap().is_empty());
    let taken = store.claim_runs("next", 10, now(), lease()).await.unwrap();
    let taken: Vec<_> = taken.iter().map(|r| (r.id.clone(), r.attempts)).collect();
    assert_eq!(
        taken,
        vec![
            (first.id.clone(), 2),
            (second.id.clone(), 2),
            (waiting.id.clone(), 1)
        ]
    );
}
