//! Run callbacks: one delivery queued with the run's end (completed,
//! failed or stopped) when it has a `callback_url`, claimed once when due
//! (also by concurrent senders in two store instances), attempts recorded
//! only by the sender that holds it, an interrupted last attempt fails it,
//! deletion takes it; the signing secret's generation rotates with audit
//! rows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use noxus_server::store::prelude::*;
use noxus_server::store::{
    Actor, CallbackAttempt, CallbackId, CallbackKind, CallbackSecretGeneration, CallbackStatus,
    NewRun, OrganizationId, Quota, RunOutcome, RunQuotas, RunRecord, StoreError, WorkflowRecord,
    INTERRUPTED_LAST_ATTEMPT, MAX_CALLBACK_ATTEMPTS,
};
use serde_json::json;
use time::OffsetDateTime;

use crate::backend::Fresh;
use crate::world::*;

const HOOK: &str = "https://hooks.example.com/noxus";
/// No per-workspace cap (checked by its own check).
const ANY: u32 = 1000;

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

async fn workflow(store: &Arc<dyn Store>, w: &World) -> WorkflowRecord {
    store
        .create_workflow(&actor(&w.owner), &w.ws.id, flow("f", "flow"), &quotas())
        .await
        .expect("create workflow")
}

/// A run, claimed by `worker-1`.
async fn running(
    store: &Arc<dyn Store>,
    w: &World,
    flow: &WorkflowRecord,
    callback_url: Option<&str>,
) -> RunRecord {
    let run = store
        .create_run(
            &actor(&w.owner),
            &NewRun {
                workspace_id: flow.workspace_id.clone(),
                workflow_id: flow.id.clone(),
                workflow_version_id: None,
                definition: json!({"nodes": [], "edges": []}),
                input: json!({}),
                group_id: None,
                callback_url: callback_url.map(str::to_owned),
                started_by_user: w.owner.id.clone(),
                started_by_key: None,
            },
            &RunQuotas::default(),
        )
        .await
        .expect("create run");
    let claimed = store
        .claim_runs("worker-1", ANY, now(), now() + Duration::from_secs(60))
        .await
        .expect("claim runs");
    assert!(claimed.iter().any(|r| r.id == run.id));
    run
}

async fn finish(store: &Arc<dyn Store>, run: &RunRecord, outcome: RunOutcome) {
    assert!(store
        .finish_run(&run.id, "worker-1", &outcome, now())
        .await
        .expect("finish run"));
}

fn completed() -> RunOutcome {
    RunOutcome::Completed {
        output: json!({"o::output": {"text": "hi"}}),
    }
}

pub async fn a_run_that_ends_with_a_callback_url_queues_one_callback(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let flow = workflow(&store, &w).await;

    // Running: nothing yet.
    let done = running(&store, &w, &flow, Some(HOOK)).await;
    assert_eq!(store.run_callback(&w.ws.id, &done.id).await.unwrap(), None);
    let before = now();
    finish(&store, &done, completed()).await;
    let queued = store
        .run_callback(&w.ws.id, &done.id)
        .await
        .unwrap()
        .expect("a callback once the run ended");
    assert_eq!(
        (
            queued.url.as_str(),
            queued.event.as_str(),
            queued.status,
            queued.attempts
        ),
        (HOOK, "run.completed", CallbackStatus::Pending, 0)
    );
    assert_eq!(queued.run_id.as_ref(), Some(&done.id));
    assert_eq!(queued.kind, CallbackKind::Run);
    assert_eq!((queued.key_id, queued.payload), (None, None));
    assert_eq!(queued.workspace_id, w.ws.id);
    assert!(queued.next_attempt_at >= before - Duration::from_millis(1));
    assert_eq!(
        (queued.last_error, queued.claimed_by, queued.delivered_at),
        (None, None, None)
    );

    // Failed and stopped runs too, each with its event.
    let failed = running(&store, &w, &flow, Some(HOOK)).await;
    finish(
        &store,
        &failed,
        RunOutcome::Failed {
            error: "Node x: broke.".to_owned(),
            output: None,
        },
    )
    .await;
    let stopped = running(&store, &w, &flow, Some(HOOK)).await;
    store
        .stop_run(&actor(&w.owner), &w.ws.id, &stopped.id, now())
        .await
        .unwrap();
    // A stop of an ended run changes nothing, and queues nothing more.
    store
        .stop_run(&actor(&w.owner), &w.ws.id, &stopped.id, now())
        .await
        .unwrap();
    for (run, event) in [(&failed, "run.failed"), (&stopped, "run.stopped")] {
        let callback = store
            .run_callback(&w.ws.id, &run.id)
            .await
            .unwrap()
            .expect("a callback");
        assert_eq!(callback.event, event);
    }
    // A late finish after the stop is refused and changes nothing.
    assert!(!store
        .finish_run(&stopped.id, "worker-1", &completed(), now())
        .await
        .unwrap());
    assert_eq!(
        store
            .run_callback(&w.ws.id, &stopped.id)
            .await
            .unwrap()
            .unwrap()
            .event,
        "run.stopped"
    );

    // Without a callback_url, nothing; another workspace sees nothing.
    let plain = running(&store, &w, &flow, None).await;
    finish(&store, &plain, completed()).await;
    assert_eq!(store.run_callback(&w.ws.id, &plain.id).await.unwrap(), None);
    let other = workspace(&store, &w, "Other").await;
    assert_eq!(store.run_callback(&other.id, &done.id).await.unwrap(), None);

    // Three callbacks, each claimed once.
    let claimed = store
        .claim_callbacks("sender", 10, ANY, now(), now() + Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);

    // Deleting a run takes its callback with it.
    store
        .delete_runs(&actor(&w.owner), &w.ws.id, std::slice::from_ref(&done.id))
        .await
        .unwrap();
    assert_eq!(store.run_callback(&w.ws.id, &done.id).await.unwrap(), None);
    assert!(!store
        .record_callback_attempt(
            &claimed
                .iter()
                .find(|c| c.run_id.as_ref() == Some(&done.id))
                .unwrap()
                .id,
            "sender",
            &CallbackAttempt::Delivered { status_code: 200 },
            now(),
        )
        .await
        .unwrap());
}

pub async fn callbacks_are_claimed_when_due_and_attempts_recorded_by_their_sender(
    store: Arc<dyn Store>,
) {
    let w = world(&store).await;
    let flow = workflow(&store, &w).await;
    let run = running(&store, &w, &flow, Some(HOOK)).await;
    finish(&store, &run, completed()).await;
    let t0 = now() + Duration::from_millis(5);
    let lease = |t: OffsetDateTime| t + Duration::from_secs(60);

    let first = store
        .claim_callbacks("a", 10, ANY, t0, lease(t0))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let d = &first[0];
    assert_eq!((d.attempts, d.claimed_by.as_deref()), (1, Some("a")));
    assert!(d.last_attempt_at.is_some());
    // Held: nobody else takes it.
    assert!(store
        .claim_callbacks("b", 10, ANY, t0, lease(t0))
        .await
        .unwrap()
        .is_empty());
    // Only its sender records an attempt.
    let retry_at = t0 + Duration::from_secs(3600);
    let retry = CallbackAttempt::Retry {
        error: "The receiver answered 500 Internal Server Error.".to_owned(),
        status_code: Some(500),
        next_attempt_at: retry_at,
    };
    assert!(!store
        .record_callback_attempt(&d.id, "b", &retry, t0)
        .await
        .unwrap());
    assert!(store
        .record_callback_attempt(&d.id, "a", &retry, t0)
        .await
        .unwrap());
    let pending = store
        .run_callback(&w.ws.id, &run.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pending.status, CallbackStatus::Pending);
    assert_eq!(pending.last_status_code, Some(500));
    assert_eq!(
        pending.last_error.as_deref(),
        Some("The receiver answered 500 Internal Server Error.")
    );
    assert_eq!(pending.claimed_by, None);
    assert_eq!(
        pending.next_attempt_at.unix_timestamp(),
        retry_at.unix_timestamp()
    );
    // Not due before its time; due after.
    assert!(store
        .claim_callbacks("b", 10, ANY, t0 + Duration::from_secs(60), lease(t0))
        .await
        .unwrap()
        .is_empty());
    let later = retry_at + Duration::from_secs(1);
    let second = store
        .claim_callbacks("b", 10, ANY, later, lease(later))
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(
        (second[0].id.clone(), second[0].attempts),
        (d.id.clone(), 2)
    );
    // Recording needs a claim: the first sender's late word is refused.
    assert!(!store
        .record_callback_attempt(
            &d.id,
            "a",
            &CallbackAttempt::Delivered { status_code: 200 },
            later
        )
        .await
        .unwrap());
    assert!(store
        .record_callback_attempt(
            &d.id,
            "b",
            &CallbackAttempt::Delivered { status_code: 204 },
            later
        )
        .await
        .unwrap());
    let delivered = store
        .run_callback(&w.ws.id, &run.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivered.status, CallbackStatus::Delivered);
    assert_eq!(delivered.last_status_code, Some(204));
    assert_eq!(delivered.last_error, None);
    assert!(delivered.delivered_at.is_some());
    // Done: never claimed again.
    let much_later = later + Duration::from_secs(86_400);
    assert!(store
        .claim_callbacks("c", 10, ANY, much_later, lease(much_later))
        .await
        .unwrap()
        .is_empty());

    // A failure for good stays failed.
    let other = running(&store, &w, &flow, Some(HOOK)).await;
    finish(&store, &other, completed()).await;
    let t1 = now() + Duration::from_millis(5);
    let claimed = store
        .claim_callbacks("a", 10, ANY, t1, lease(t1))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(store
        .record_callback_attempt(
            &claimed[0].id,
            "a",
            &CallbackAttempt::Failed {
                error: "The host h resolves to 10.0.0.1, a private address.".to_owned(),
                status_code: None,
            },
            t1,
        )
        .await
        .unwrap());
    let failed = store
        .run_callback(&w.ws.id, &other.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, CallbackStatus::Failed);
    assert!(store
        .claim_callbacks("c", 10, ANY, much_later, lease(much_later))
        .await
        .unwrap()
        .is_empty());
}

pub async fn an_interrupted_last_attempt_fails_the_callback(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let flow = workflow(&store, &w).await;
    let run = running(&store, &w, &flow, Some(HOOK)).await;
    finish(&store, &run, completed()).await;
    // Each sender dies while attempting: the lease lapses, the next takes
    // it with one more attempt.
    let mut t = now() + Duration::from_millis(5);
    for attempt in 1..=MAX_CALLBACK_ATTEMPTS {
        let claimed = store
            .claim_callbacks(
                &format!("s{attempt}"),
                10,
                ANY,
                t,
                t + Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "attempt {attempt}");
        assert_eq!(claimed[0].attempts, attempt);
        t += Duration::from_secs(11);
    }
    assert!(store
        .claim_callbacks("last", 10, ANY, t, t + Duration::from_secs(10))
        .await
        .unwrap()
        .is_empty());
    let failed = store
        .run_callback(&w.ws.id, &run.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, CallbackStatus::Failed);
    assert_eq!(failed.attempts, MAX_CALLBACK_ATTEMPTS);
    assert_eq!(failed.last_error.as_deref(), Some(INTERRUPTED_LAST_ATTEMPT));
}

pub async fn concurrent_senders_claim_each_callback_once(fresh: &mut Fresh) {
    let store = Arc::clone(&fresh.store);
    let replica = fresh.open_another().await;
    let w = world(&store).await;
    let flow = workflow(&store, &w).await;
    let total = 60;
    for _ in 0..total {
        let run = running(&store, &w, &flow, Some(HOOK)).await;
        finish(&store, &run, completed()).await;
    }
    let at = now() + Duration::from_millis(5);
    let mut tasks = Vec::new();
    for n in 0..6 {
        let store = if n % 2 == 0 {
            Arc::clone(&store)
        } else {
            Arc::clone(&replica)
        };
        tasks.push(tokio::spawn(async move {
            let sender = format!("sender-{n}");
            let mut mine = Vec::new();
            loop {
                let claimed = store
                    .claim_callbacks(&sender, 4, ANY, at, at + Duration::from_secs(60))
                    .await
                    .unwrap();
                if claimed.is_empty() {
                    break;
                }
                for d in claimed {
                    assert_eq!(d.claimed_by.as_deref(), Some(sender.as_str()));
                    assert_eq!(d.attempts, 1);
                    mine.push(d.id);
                }
                tokio::task::yield_now().await;
            }
            mine
        }));
    }
    let mut claims: HashMap<CallbackId, usize> = HashMap::new();
    for task in tasks {
        for id in task.await.unwrap() {
            *claims.entry(id).or_default() += 1;
        }
    }
    assert_eq!(claims.len(), total, "every callback claimed");
    assert!(claims.values().all(|&n| n == 1), "none claimed twice");
}

pub async fn the_callback_secret_generation_rotates_with_audit_rows(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let other = workspace(&store, &w, "Other").await;
    let by = actor(&w.owner);
    let mut audit = AuditWatch::new(&store, w.org.id.as_str()).await;

    assert_eq!(
        store.callback_secret_generation(&w.ws.id).await.unwrap(),
        CallbackSecretGeneration::default()
    );
    assert_eq!(CallbackSecretGeneration::default().generation, 1);
    let read = store
        .reveal_callback_secret(&by, &w.org.id, &w.ws.id)
        .await
        .unwrap();
    assert_eq!(read, CallbackSecretGeneration::default());
    assert_eq!(
        audit.actions(&store).await,
        ["workspace.callback_secret.read"]
    );

    let rotated = store
        .rotate_callback_secret(&by, &w.org.id, &w.ws.id, None)
        .await
        .unwrap();
    assert_eq!(
        rotated,
        CallbackSecretGeneration {
            generation: 2,
            previous_valid_until: None
        }
    );
    let until = now() + Duration::from_secs(3600);
    let graced = store
        .rotate_callback_secret(&by, &w.org.id, &w.ws.id, Some(until))
        .await
        .unwrap();
    assert_eq!(graced.generation, 3);
    assert_eq!(
        graced.previous_valid_until.map(|t| t.unix_timestamp()),
        Some(until.unix_timestamp())
    );
    assert_eq!(
        store.callback_secret_generation(&w.ws.id).await.unwrap(),
        graced
    );
    let rows = audit.take(&store).await;
    assert_eq!(
        rows.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        [
            "workspace.callback_secret.rotate",
            "workspace.callback_secret.rotate"
        ]
    );
    assert!(rows
        .iter()
        .all(|r| r.workspace_id.as_ref() == Some(&w.ws.id) && r.target_id == w.ws.id.as_str()));
    // Another workspace keeps its own.
    assert_eq!(
        store.callback_secret_generation(&other.id).await.unwrap(),
        CallbackSecretGeneration::default()
    );
    // A workspace of another organization (or none) is not found, and
    // nothing is written.
    let elsewhere = OrganizationId::from("another-organization");
    assert!(matches!(
        store
            .reveal_callback_secret(&Actor::system(), &elsewhere, &w.ws.id)
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .rotate_callback_secret(&Actor::system(), &elsewhere, &w.ws.id, None)
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(audit.take(&store).await.is_empty());
    assert_eq!(
        store.callback_secret_generation(&w.ws.id).await.unwrap(),
        graced
    );
    // A workspace's deletion takes its generation with it.
    store
        .rotate_callback_secret(&by, &w.org.id, &other.id, None)
        .await
        .unwrap();
    store
        .delete_workspace(&Actor::system(), &w.org.id, &other.id)
        .await
        .unwrap();
    assert_eq!(
        store.callback_secret_generation(&other.id).await.unwrap(),
        CallbackSecretGeneration::default()
    );
}

pub async fn one_workspace_gets_at_most_its_share_of_senders(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let busy = workflow(&store, &w).await;
    let other = workspace(&store, &w, "Other").await;
    let other_flow = store
        .create_workflow(&actor(&w.owner), &other.id, flow("g", "flow"), &quotas())
        .await
        .unwrap();
    for _ in 0..10 {
        let run = running(&store, &w, &busy, Some(HOOK)).await;
        finish(&store, &run, completed()).await;
    }
    // The other workspace's one callback is due after all ten.
    let late = running(&store, &w, &other_flow, Some(HOOK)).await;
    finish(&store, &late, completed()).await;
    let t = now() + Duration::from_millis(5);
    let lease = t + Duration::from_secs(60);
    let first = store.claim_callbacks("a", 16, 3, t, lease).await.unwrap();
    let of = |claimed: &[noxus_server::store::CallbackDelivery],
              ws: &noxus_server::store::WorkspaceId| {
        claimed.iter().filter(|d| &d.workspace_id == ws).count()
    };
    assert_eq!(
        (of(&first, &w.ws.id), of(&first, &other.id)),
        (3, 1),
        "three of the busy workspace, and the other's too"
    );
    // While those three are being sent, the busy workspace gets no more,
    // from any sender.
    assert!(store
        .claim_callbacks("b", 16, 3, t, lease)
        .await
        .unwrap()
        .is_empty());
    // One recorded: one more may go.
    let done = first.iter().find(|d| d.workspace_id == w.ws.id).unwrap();
    assert!(store
        .record_callback_attempt(
            &done.id,
            "a",
            &CallbackAttempt::Delivered { status_code: 200 },
            t
        )
        .await
        .unwrap());
    let next = store.claim_callbacks("b", 16, 3, t, lease).await.unwrap();
    assert_eq!(of(&next, &w.ws.id), 1);
    // Leases that ran out free their places.
    let later = lease + Duration::from_secs(1);
    let again = store
        .claim_callbacks("c", 16, 3, later, later + Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(of(&again, &w.ws.id), 3);
}

pub async fn waiting_callback_quota_is_enforced(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let flow = workflow(&store, &w).await;
    let quotas = RunQuotas {
        waiting_callbacks_per_workspace: 2,
        ..RunQuotas::default()
    };
    let new_run = |callback_url: Option<&str>| NewRun {
        workspace_id: w.ws.id.clone(),
        workflow_id: flow.id.clone(),
        workflow_version_id: None,
        definition: json!({"nodes": [], "edges": []}),
        input: json!({}),
        group_id: None,
        callback_url: callback_url.map(str::to_owned),
        started_by_user: w.owner.id.clone(),
        started_by_key: None,
    };
    // A run under way with a callback counts, and so does a pending one.
    let first = store
        .create_run(&Actor::system(), &new_run(Some(HOOK)), &quotas)
        .await
        .unwrap();
    store
        .claim_runs("worker-1", 10, now(), now() + Duration::from_secs(60))
        .await
        .unwrap();
    finish(&store, &first, completed()).await;
    store
        .create_run(&Actor::system(), &new_run(Some(HOOK)), &quotas)
        .await
        .unwrap();
    let refused = store
        .create_run(&Actor::system(), &new_run(Some(HOOK)), &quotas)
        .await;
    assert!(
        matches!(
            refused,
            Err(StoreError::QuotaExceeded {
                quota: Quota::WaitingCallbacksPerWorkspace,
                limit: 2
            })
        ),
        "{refused:?}"
    );
    // Runs without a callback are not limited by it.
    store
        .create_run(&Actor::system(), &new_run(None), &quotas)
        .await
        .unwrap();
    // A delivered callback frees its place.
    let t = now() + Duration::from_millis(5);
    let claimed = store
        .claim_callbacks("s", 10, ANY, t, t + Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    store
        .record_callback_attempt(
            &claimed[0].id,
            "s",
            &CallbackAttempt::Delivered { status_code: 200 },
            t,
        )
        .await
        .unwrap();
    store
        .create_run(&Actor::system(), &new_run(Some(HOOK)), &quotas)
        .await
        .unwrap();
}
