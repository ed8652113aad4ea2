//! Tests of the PostgreSQL store against a real server: each test creates
//! its own database on `NOXUS_TEST_DATABASE_URL`'s server and drops it at
//! the end. Without the variable they print `SKIPPED: ...` (and fail when
//! `CI` is set).

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use noxus_testkit::postgres::{fresh_database_or_skip, FreshDatabase};

use super::*;
use crate::store::EventSubscription;

async fn open(db: &FreshDatabase) -> PostgresStore {
    PostgresStore::open(&PostgresOptions::new(db.url()))
        .await
        .unwrap()
}

/// A raw pool on the test database (to look behind the store's back).
async fn raw(db: &FreshDatabase) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(db.url())
        .await
        .unwrap()
}

fn digest() -> KeyDigest {
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, AtomicOrdering::Relaxed);
    KeyDigest::from_hex(&format!(
        "{:032x}{n:032x}",
        uuid::Uuid::new_v4().as_u128() >> 64
    ))
    .unwrap()
}

fn new_key(workspace_id: &WorkspaceId, user_id: &UserId, name: &str) -> NewKey {
    NewKey {
        workspace_id: workspace_id.clone(),
        user_id: user_id.clone(),
        name: name.to_owned(),
        digest: digest(),
        prefix: "nx_test_ab".to_owned(),
        suffix: "wxyz".to_owned(),
        tenant_admin: false,
        restriction: None,
        expires_at: None,
        rate_limit: None,
    }
}

struct World {
    org: Organization,
    owner: UserRecord,
    workspace: WorkspaceRecord,
}

/// An organization, its owner, and a workspace.
async fn world(store: &PostgresStore) -> World {
    let actor = Actor::system();
    let org = store.create_organization(&actor, "Org").await.unwrap();
    let owner = store
        .create_user(
            &actor,
            NewUser {
                organization_id: org.id.clone(),
                email: format!("owner-{}@test.local", uuid::Uuid::new_v4().simple()),
                name: "Owner".to_owned(),
                password_hash: "hash".to_owned(),
                is_org_admin: true,
                must_change_password: false,
            },
        )
        .await
        .unwrap();
    let workspace = store
        .create_workspace(&actor, &org.id, "W", None, &owner.id)
        .await
        .unwrap();
    World {
        org,
        owner,
        workspace,
    }
}

async fn next_event(sub: &mut EventSubscription) -> Option<StoreEvent> {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .ok()
        .flatten()
        .map(|(_, event)| event)
}

/// Waits until `sub` delivers `wanted`, skipping other events; panics after 10 s.
async fn expect_event(sub: &mut EventSubscription, wanted: &StoreEvent) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, sub.next()).await {
            Ok(Some((_, event))) if &event == wanted => return,
            Ok(Some(_)) => continue,
            _ => panic!("no {wanted:?} within 10 s"),
        }
    }
}

#[tokio::test]
async fn migrations_apply_twice_and_a_store_reopens_its_database() {
    let Some(db) =
        fresh_database_or_skip("migrations_apply_twice_and_a_store_reopens_its_database").await
    else {
        return;
    };
    let options = PostgresOptions::new(db.url());
    migrate_only(&options).await.unwrap();
    migrate_only(&options).await.unwrap();
    let store = open(&db).await;
    let w = world(&store).await;
    store.close().await;
    let store = open(&db).await;
    assert_eq!(store.organization().await.unwrap().unwrap().id, w.org.id);
    store.ping().await.unwrap();
    // Every pooled connection has the statement timeout.
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(timeout, "10s");
    store.close().await;
    // The pool is gone after close: the listener says so too.
    assert!(!store.listener_connected());
    db.drop_database().await;
}

#[tokio::test]
async fn a_bad_url_is_refused_without_echoing_it() {
    let options = PostgresOptions::new("mysql://user:hunter2@host/db");
    let err = PostgresStore::open(&options).await.unwrap_err().to_string();
    assert!(err.contains("postgres://"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let mut options = PostgresOptions::new("postgres://user:hunter2@127.0.0.1:1/db");
    options.connect_timeout = Duration::from_millis(500);
    let err = format!("{:#}", PostgresStore::open(&options).await.unwrap_err());
    assert!(!err.contains("hunter2"), "{err}");
    assert!(format!("{options:?}").contains("[redacted]"));
}

#[tokio::test]
async fn events_reach_other_instances_after_commit_and_never_after_rollback() {
    let Some(db) = fresh_database_or_skip(
        "events_reach_other_instances_after_commit_and_never_after_rollback",
    )
    .await
    else {
        return;
    };
    let a = open(&db).await;
    let b = open(&db).await;
    let c = open(&db).await;
    let mut at_a = a.subscribe();
    let mut at_b = b.subscribe();
    let mut at_c = c.subscribe();
    let w = world(&a).await;
    let actor = Actor::system();
    let key = a
        .create_key(
            &actor,
            new_key(&w.workspace.id, &w.owner.id, "k"),
            KeyQuotas::default(),
        )
        .await
        .unwrap();
    // Once the key's creation is heard, everything before it was too
    // (notifications arrive in commit order).
    let created = StoreEvent::KeyChanged(key.id.clone());
    for sub in [&mut at_a, &mut at_b, &mut at_c] {
        expect_event(sub, &created).await;
    }

    a.revoke_key(&actor, &w.workspace.id, &key.id)
        .await
        .unwrap();
    let revoked = StoreEvent::KeyChanged(key.id.clone());
    // A published it locally at commit, before returning.
    assert_eq!(at_a.next().await.map(|(_, e)| e), Some(revoked.clone()));
    assert_eq!(next_event(&mut at_b).await, Some(revoked.clone()));
    assert_eq!(next_event(&mut at_c).await, Some(revoked.clone()));

    // A rolled-back write (a revoked key cannot be rotated) tells no one;
    // the next committed change is the next thing everyone hears.
    let refused = a
        .rotate_key(
            &actor,
            &w.workspace.id,
            &key.id,
            new_key(&w.workspace.id, &w.owner.id, "successor"),
            None,
        )
        .await;
    assert!(matches!(
        refused,
        Err(StoreError::Precondition(Precondition::KeyRevoked))
    ));
    b.set_workspace_rate_limit(
        &actor,
        &w.org.id,
        &w.workspace.id,
        Some(RateLimit {
            per_second: 5,
            burst: 10,
        }),
    )
    .await
    .unwrap();
    let marker = StoreEvent::WorkspaceChanged(w.workspace.id.clone());
    assert_eq!(next_event(&mut at_a).await, Some(marker.clone()));
    assert_eq!(next_event(&mut at_b).await, Some(marker.clone()));
    assert_eq!(next_event(&mut at_c).await, Some(marker.clone()));
    // Nothing else: A's own revocation was not heard twice either.
    for sub in [&mut at_a, &mut at_b, &mut at_c] {
        assert!(
            tokio::time::timeout(Duration::from_millis(300), sub.next())
                .await
                .is_err(),
            "no further event"
        );
    }

    // Every event kind crosses: a member removed (user + their keys).
    let member = a
        .create_user(
            &actor,
            NewUser {
                organization_id: w.org.id.clone(),
                email: "member@test.local".to_owned(),
                name: "M".to_owned(),
                password_hash: "h".to_owned(),
                is_org_admin: false,
                must_change_password: false,
            },
        )
        .await
        .unwrap();
    a.set_membership(&actor, &w.workspace.id, &member.id, Role::Member)
        .await
        .unwrap();
    expect_event(&mut at_b, &StoreEvent::UserChanged(member.id.clone())).await;
    let member_key = a
        .create_key(
            &actor,
            new_key(&w.workspace.id, &member.id, "m"),
            KeyQuotas::default(),
        )
        .await
        .unwrap();
    expect_event(&mut at_b, &StoreEvent::KeyChanged(member_key.id.clone())).await;
    let revoked = a
        .remove_membership(&actor, &w.workspace.id, &member.id)
        .await
        .unwrap();
    assert_eq!(revoked, vec![member_key.id.clone()]);
    expect_event(&mut at_b, &StoreEvent::UserChanged(member.id.clone())).await;
    expect_event(&mut at_b, &StoreEvent::KeyChanged(member_key.id.clone())).await;

    for store in [&a, &b, &c] {
        store.close().await;
    }
    db.drop_database().await;
}

/// The next run change `sub` hears within 10 s.
async fn next_run_change(sub: &mut crate::store::RunSubscription) -> Option<StoreEvent> {
    tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .ok()
        .flatten()
}

#[tokio::test]
async fn run_changes_reach_other_instances_on_their_own_channel() {
    let Some(db) =
        fresh_database_or_skip("run_changes_reach_other_instances_on_their_own_channel").await
    else {
        return;
    };
    let a = open(&db).await;
    let b = open(&db).await;
    let w = world(&a).await;
    let actor = Actor::system();
    let workflow = a
        .create_workflow(
            &actor,
            &w.workspace.id,
            WorkflowFields {
                name: "f".to_owned(),
                kind: "flow".to_owned(),
                definition: json!({"nodes": [], "edges": []}),
                error_handler: None,
            },
            &WorkflowQuotas {
                workflows_per_workspace: 10,
                versions_per_workflow: 10,
                definition_bytes_per_workspace: 1 << 20,
            },
        )
        .await
        .unwrap();
    let run = a
        .create_run(
            &actor,
            &NewRun {
                workspace_id: w.workspace.id.clone(),
                workflow_id: workflow.id.clone(),
                workflow_version_id: None,
                definition: json!({"nodes": [], "edges": []}),
                input: json!({}),
                group_id: None,
                callback_url: None,
                started_by_user: w.owner.id.clone(),
                started_by_key: None,
            },
            &RunQuotas::default(),
        )
        .await
        .unwrap();
    // B may still be hearing the notifications of A's earlier writes (the
    // workspace, the workflow): listen from when they stopped arriving.
    let mut published_at_b = b.events().published();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = b.events().published();
        if now == published_at_b {
            break;
        }
        published_at_b = now;
    }
    let mut runs_at_a = a.subscribe_runs();
    let mut runs_at_b = b.subscribe_runs();
    let mut keys_at_b = b.subscribe();
    let now = OffsetDateTime::now_utc();
    let claimed = a
        .claim_runs("w", 1, now, now + Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let changed = StoreEvent::RunChanged(run.id.clone());
    // Published locally at commit, and heard by the other instance.
    assert_eq!(next_run_change(&mut runs_at_a).await, Some(changed.clone()));
    assert_eq!(next_run_change(&mut runs_at_b).await, Some(changed.clone()));
    a.append_run_event(&run.id, "node_started", &json!({}))
        .await
        .unwrap();
    assert_eq!(next_run_change(&mut runs_at_b).await, Some(changed.clone()));
    // Not counted at B, not heard by its key cache's subscription.
    assert_eq!(b.events().published(), published_at_b);

    // What a process may hear from others of another version:
    let pool = raw(&db).await;
    let notify = |channel: &'static str, payload: String| {
        let pool = pool.clone();
        async move {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    // a run change on the key channel (from one that sends them there) is a
    // run change, not a reason to forget every key;
    notify(EVENTS_CHANNEL, format!("other r:{}", run.id)).await;
    assert_eq!(next_run_change(&mut runs_at_b).await, Some(changed.clone()));
    // something unknown on the runs' channel makes every stream look again,
    // and the key cache forgets nothing;
    notify(RUNS_CHANNEL, "other x:1".to_owned()).await;
    assert_eq!(
        next_run_change(&mut runs_at_b).await,
        Some(StoreEvent::Resync)
    );
    // (a key event, as a marker: the first thing B's key subscription hears)
    notify(EVENTS_CHANNEL, "other k:marker".to_owned()).await;
    assert_eq!(
        next_event(&mut keys_at_b).await,
        Some(StoreEvent::KeyChanged("marker".into()))
    );
    // something unknown on the key channel still forgets every key.
    notify(EVENTS_CHANNEL, "other x:1".to_owned()).await;
    assert_eq!(next_event(&mut keys_at_b).await, Some(StoreEvent::Resync));

    pool.close().await;
    a.close().await;
    b.close().await;
    db.drop_database().await;
}

#[tokio::test]
async fn a_dropped_listener_reconnects_and_tells_subscribers_to_resync() {
    let Some(db) =
        fresh_database_or_skip("a_dropped_listener_reconnects_and_tells_subscribers_to_resync")
            .await
    else {
        return;
    };
    let a = open(&db).await;
    let b = open(&db).await;
    let w = world(&a).await;
    let pool = raw(&db).await;
    let mut at_b = b.subscribe();
    assert!(b.listener_connected());
    assert!(a.listener_connected());
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE query LIKE 'LISTEN%' AND datname = current_database()",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(killed.len(), 2, "both instances' listeners");
    // Once when the connection is lost (the bus goes deaf: the key cache
    // is cleared and bypassed), once when it is back.
    expect_event(&mut at_b, &StoreEvent::Resync).await;
    expect_event(&mut at_b, &StoreEvent::Resync).await;
    assert!(b.listener_connected());
    assert!(!b.events().is_deaf());
    b.ping().await.unwrap();
    assert_eq!(b.events().listener_reconnects(), 1, "counted (metrics)");
    let heard = b.events().notifications_heard();
    // Heard again after the reconnection.
    let key = a
        .create_key(
            &Actor::system(),
            new_key(&w.workspace.id, &w.owner.id, "k"),
            KeyQuotas::default(),
        )
        .await
        .unwrap();
    expect_event(&mut at_b, &StoreEvent::KeyChanged(key.id)).await;
    assert!(
        b.events().notifications_heard() > heard,
        "counted (metrics)"
    );
    assert_eq!(
        a.events().notifications_heard(),
        0,
        "an instance's own notifications are not counted"
    );
    pool.close().await;
    a.close().await;
    b.close().await;
    db.drop_database().await;
}

#[tokio::test]
async fn the_listener_task_ends_when_the_store_is_dropped() {
    let Some(db) = fresh_database_or_skip("the_listener_task_ends_when_the_store_is_dropped").await
    else {
        return;
    };
    let pool = raw(&db).await;
    let listeners = || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND datname = current_database()",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        n
    };
    let store = open(&db).await;
    assert_eq!(listeners().await, 1);
    drop(store);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while listeners().await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener is still there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test]
async fn of_two_concurrent_rotations_of_a_key_exactly_one_wins() {
    let Some(db) =
        fresh_database_or_skip("of_two_concurrent_rotations_of_a_key_exactly_one_wins").await
    else {
        return;
    };
    let a = open(&db).await;
    let b = open(&db).await;
    let w = world(&a).await;
    let actor = Actor::system();
    for round in 0..8 {
        let key = a
            .create_key(
                &actor,
                new_key(&w.workspace.id, &w.owner.id, &format!("k{round}")),
                KeyQuotas::default(),
            )
            .await
            .unwrap();
        let grace = (round % 2 == 0).then(|| now() + time::Duration::hours(1));
        let rotate = |store: PostgresStore| {
            let ws = w.workspace.id.clone();
            let owner = w.owner.id.clone();
            let id = key.id.clone();
            let actor = actor.clone();
            tokio::spawn(async move {
                store
                    .rotate_key(&actor, &ws, &id, new_key(&ws, &owner, "next"), grace)
                    .await
            })
        };
        let (x, y) = tokio::join!(rotate(a.clone()), rotate(b.clone()));
        let results = [x.unwrap(), y.unwrap()];
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {results:?}");
        let loser = results.iter().find_map(|r| r.as_ref().err()).unwrap();
        // With or without a grace period, the loser's key was rotated.
        let expected = Precondition::KeyAlreadyRotated;
        assert!(
            matches!(loser, StoreError::Precondition(p) if *p == expected),
            "round {round}: {loser:?}"
        );
        let rotations = a
            .search_audit(&AuditQuery {
                organization_id: w.org.id.clone(),
                workspace_id: Some(w.workspace.id.clone()),
                action_prefix: Some("api_key.rotate".to_owned()),
                before_id: None,
                limit: 100,
            })
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.target_id == key.id)
            .count();
        assert_eq!(rotations, 1, "one audit row per rotation");
    }
    // The losers' successors were rolled back with them.
    let keys = a.list_keys(&w.workspace.id, None).await.unwrap();
    assert_eq!(keys.len(), 16);
    a.close().await;
    b.close().await;
    db.drop_database().await;
}

#[tokio::test]
async fn rules_over_several_rows_hold_under_concurrency() {
    let Some(db) = fresh_database_or_skip("rules_over_several_rows_hold_under_concurrency").await
    else {
        return;
    };
    let a = open(&db).await;
    let b = open(&db).await;
    let w = world(&a).await;
    let actor = Actor::system();
    let second = a
        .create_user(
            &actor,
            NewUser {
                organization_id: w.org.id.clone(),
                email: "second@test.local".to_owned(),
                name: "S".to_owned(),
                password_hash: "h".to_owned(),
                is_org_admin: true,
                must_change_password: false,
            },
        )
        .await
        .unwrap();
    a.set_membership(&actor, &w.workspace.id, &second.id, Role::Owner)
        .await
        .unwrap();
    // Two owners demote each other at once: one is refused.
    let demote = |store: PostgresStore, user: UserId| {
        let ws = w.workspace.id.clone();
        tokio::spawn(async move {
            store
                .set_membership(&Actor::system(), &ws, &user, Role::Admin)
                .await
        })
    };
    let (x, y) = tokio::join!(
        demote(a.clone(), w.owner.id.clone()),
        demote(b.clone(), second.id.clone())
    );
    let results = [x.unwrap(), y.unwrap()];
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results
        .iter()
        .any(|r| matches!(r, Err(StoreError::Precondition(Precondition::LastOwner)))));
    // Two admins deactivate each other at once: one is refused.
    let deactivate = |store: PostgresStore, user: UserId| {
        let org = w.org.id.clone();
        tokio::spawn(async move {
            store
                .set_user_active(&Actor::system(), &org, &user, false)
                .await
        })
    };
    let (x, y) = tokio::join!(
        deactivate(a.clone(), w.owner.id.clone()),
        deactivate(b.clone(), second.id.clone())
    );
    let results = [x.unwrap(), y.unwrap()];
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    // Key quota: ten concurrent creations into a workspace allowing three.
    let quotas = KeyQuotas {
        per_user: 100,
        per_workspace: 3,
    };
    let ws2 = a
        .create_workspace(&actor, &w.org.id, "W2", None, &second.id)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let key = new_key(&ws2.id, &second.id, &format!("q{i}"));
        tasks.push(tokio::spawn(async move {
            store.create_key(&Actor::system(), key, quotas).await
        }));
    }
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => created += 1,
            Err(StoreError::Precondition(Precondition::TooManyKeysInWorkspace { limit: 3 })) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(created, 3);
    a.close().await;
    b.close().await;
    db.drop_database().await;
}

#[tokio::test]
async fn concurrent_first_starts_create_one_organization() {
    let Some(db) = fresh_database_or_skip("concurrent_first_starts_create_one_organization").await
    else {
        return;
    };
    let stores = [open(&db).await, open(&db).await, open(&db).await];
    let mut tasks = Vec::new();
    for (i, store) in stores.iter().enumerate() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .bootstrap(BootstrapRequest {
                    organization_name: format!("Org {i}"),
                    admin_email: format!("admin{i}@test.local"),
                    admin_name: "Admin".to_owned(),
                    password_hash: "h".to_owned(),
                    workspace_name: "Default".to_owned(),
                    first_key: Some((
                        "first".to_owned(),
                        digest(),
                        "nx_test_ab".to_owned(),
                        "wxyz".to_owned(),
                    )),
                })
                .await
        }));
    }
    let mut created = 0;
    for task in tasks {
        if task.await.unwrap().unwrap().is_some() {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    let pool = raw(&db).await;
    let orgs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM organizations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(orgs, 1);
    pool.close().await;
    for store in &stores {
        store.close().await;
    }
    db.drop_database().await;
}

#[tokio::test]
async fn usage_from_two_writers_adds_up_exactly_and_addresses_stay_bounded() {
    let Some(db) =
        fresh_database_or_skip("usage_from_two_writers_adds_up_exactly_and_addresses_stay_bounded")
            .await
    else {
        return;
    };
    let a = open(&db).await;
    let b = open(&db).await;
    let w = world(&a).await;
    let actor = Actor::system();
    let mut keys = Vec::new();
    for i in 0..3 {
        keys.push(
            a.create_key(
                &actor,
                new_key(&w.workspace.id, &w.owner.id, &format!("k{i}")),
                KeyQuotas::default(),
            )
            .await
            .unwrap(),
        );
    }
    let base = now();
    let hour = base.unix_timestamp() / 3600;
    let flush = |writer: usize, round: usize| -> Vec<KeyUsageFlush> {
        keys.iter()
            .enumerate()
            .map(|(k, key)| {
                let mut counts = UsageCounts::default();
                for status in [200, 200, 404, 401, 429, 500, 403] {
                    counts.count(status);
                }
                let at = base + time::Duration::milliseconds((round * 10 + writer) as i64);
                KeyUsageFlush {
                    key_id: key.id.clone(),
                    workspace_id: w.workspace.id.clone(),
                    last_used: Some((at, Some(format!("10.0.{writer}.{round}")))),
                    // Two entries for one hour in one flush merge too.
                    hours: vec![
                        (hour, counts),
                        (hour - 1 - k as i64, counts),
                        (hour, counts),
                    ],
                    addresses: vec![
                        (format!("10.0.{writer}.{round}"), at),
                        (format!("10.0.{writer}.{round}"), at),
                    ],
                }
            })
            .collect()
    };
    let rounds = 25;
    let write = |store: PostgresStore, writer: usize| {
        let batches: Vec<_> = (0..rounds).map(|round| flush(writer, round)).collect();
        tokio::spawn(async move {
            for batch in batches {
                store.record_usage(&batch, 10).await.unwrap();
            }
        })
    };
    let (x, y) = tokio::join!(write(a.clone(), 0), write(b.clone(), 1));
    x.unwrap();
    y.unwrap();
    let hours = a
        .usage_hours(&w.workspace.id, None, hour - 10, hour)
        .await
        .unwrap();
    // Per key: this hour (2 entries per flush) and one earlier hour.
    assert_eq!(hours.len(), 6);
    for h in &hours {
        let per_flush = if h.hour == hour { 2 } else { 1 };
        let n = (2 * rounds * per_flush) as u64;
        assert_eq!(h.counts.requests, 7 * n, "{h:?}");
        assert_eq!(h.counts.ok, 2 * n);
        assert_eq!(h.counts.client_errors, 4 * n);
        assert_eq!(h.counts.server_errors, n);
        assert_eq!(h.counts.unauthorized, n);
        assert_eq!(h.counts.forbidden, n);
        assert_eq!(h.counts.rate_limited, n);
    }
    // Ordered by hour, then key id.
    let order: Vec<(i64, KeyId)> = hours.iter().map(|h| (h.hour, h.key_id.clone())).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    for key in &keys {
        let (addresses, total) = a.key_addresses(&key.id, 0, 100).await.unwrap();
        assert_eq!(total, 10, "bounded to the 10 most recently seen");
        let seen: Vec<i64> = addresses
            .iter()
            .map(|addr| to_ms(addr.last_seen_at))
            .collect();
        let mut newest_first = seen.clone();
        newest_first.sort_by(|x, y| y.cmp(x));
        assert_eq!(seen, newest_first);
        // The latest flush of both writers is there.
        assert!(addresses
            .iter()
            .any(|x| x.addr == format!("10.0.1.{}", rounds - 1)));
        let stored = a.key(&w.workspace.id, &key.id).await.unwrap().unwrap();
        assert_eq!(
            stored.last_used_addr.as_deref(),
            Some(format!("10.0.1.{}", rounds - 1).as_str())
        );
    }
    // A flush naming a key deleted meanwhile is fine.
    let mut ghost = flush(0, 0);
    ghost[0].key_id = "no-such-key".into();
    a.record_usage(&ghost, 10).await.unwrap();
    a.close().await;
    b.close().await;
    db.drop_database().await;
}

#[tokio::test]
async fn the_database_refuses_to_edit_or_delete_audit_rows_outside_an_archive_window() {
    let Some(db) = fresh_database_or_skip(
        "the_database_refuses_to_edit_or_delete_audit_rows_outside_an_archive_window",
    )
    .await
    else {
        return;
    };
    let store = open(&db).await;
    world(&store).await;
    let pool = raw(&db).await;
    let update = sqlx::query("UPDATE audit_log SET action = 'nothing'")
        .execute(&pool)
        .await;
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = sqlx::query("DELETE FROM audit_log").execute(&pool).await;
    assert!(delete.unwrap_err().to_string().contains("append-only"));
    let truncate = sqlx::query("TRUNCATE audit_log").execute(&pool).await;
    assert!(truncate.unwrap_err().to_string().contains("append-only"));
    // Inside a window, exactly the rows up to its last id may go.
    let mut tx = pool.begin().await.unwrap();
    let first: i64 = sqlx::query_scalar("SELECT MIN(id) FROM audit_log")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO audit_archive_window (id, last_id) VALUES (1, $1)")
        .bind(first)
        .execute(&mut *tx)
        .await
        .unwrap();
    let gone = sqlx::query("DELETE FROM audit_log WHERE id = $1")
        .bind(first)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(gone, 1);
    let more = sqlx::query("DELETE FROM audit_log").execute(&mut *tx).await;
    assert!(more.unwrap_err().to_string().contains("append-only"));
    tx.rollback().await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 3, "organization, user, workspace");
    pool.close().await;
    store.close().await;
    db.drop_database().await;
}

#[tokio::test]
async fn orders_totals_and_cascades_match_the_sqlite_store() {
    let Some(db) =
        fresh_database_or_skip("orders_totals_and_cascades_match_the_sqlite_store").await
    else {
        return;
    };
    let store = open(&db).await;
    let w = world(&store).await;
    let actor = Actor::system();
    // Keys: newest first, by insertion (not by id).
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            store
                .create_key(
                    &actor,
                    new_key(&w.workspace.id, &w.owner.id, &format!("k{i}")),
                    KeyQuotas::default(),
                )
                .await
                .unwrap()
                .id,
        );
    }
    let listed: Vec<KeyId> = store
        .list_keys(&w.workspace.id, None)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    ids.reverse();
    assert_eq!(listed, ids);
    let (page, total) = store
        .list_keys_page(&w.workspace.id, Some(&w.owner.id), 1, 2)
        .await
        .unwrap();
    assert_eq!(total, 5);
    assert_eq!(
        page.iter().map(|k| k.id.clone()).collect::<Vec<_>>(),
        ids[1..3]
    );
    let (empty, total) = store
        .list_keys_page(&w.workspace.id, None, 10, 2)
        .await
        .unwrap();
    assert!(empty.is_empty());
    assert_eq!(total, 5);
    // Typed conflicts.
    let again = store
        .create_workspace(&actor, &w.org.id, "W", None, &w.owner.id)
        .await;
    assert!(matches!(
        again,
        Err(StoreError::Conflict(ConflictKind::WorkspaceName))
    ));
    // Workspaces by creation; users by email, bytewise.
    for name in ["b", "A", "c"] {
        store
            .create_workspace(&actor, &w.org.id, name, None, &w.owner.id)
            .await
            .unwrap();
    }
    let names: Vec<String> = store
        .list_workspaces(&w.org.id)
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.name)
        .collect();
    assert_eq!(names, ["W", "b", "A", "c"]);
    for email in ["b@x", "B@x", "a@x"] {
        store
            .create_user(
                &actor,
                NewUser {
                    organization_id: w.org.id.clone(),
                    email: email.to_owned(),
                    name: email.to_owned(),
                    password_hash: "h".to_owned(),
                    is_org_admin: false,
                    must_change_password: false,
                },
            )
            .await
            .unwrap();
    }
    let emails: Vec<String> = store
        .list_users(&w.org.id)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.email)
        .filter(|e| e.ends_with("@x"))
        .collect();
    assert_eq!(emails, ["B@x", "a@x", "b@x"]);

    // Workflows: totals kept by the triggers equal a recount.
    let quotas = WorkflowQuotas {
        workflows_per_workspace: 100,
        versions_per_workflow: 100,
        definition_bytes_per_workspace: 1 << 30,
    };
    let pool = raw(&db).await;
    let recount = |workspace: String| {
        let pool = pool.clone();
        async move {
            let stored: Option<(i64, i64)> = sqlx::query_as(
                "SELECT workflows, definition_bytes FROM workspace_totals WHERE workspace_id = $1",
            )
            .bind(&workspace)
            .fetch_optional(&pool)
            .await
            .unwrap();
            let counted: (i64, i64) = sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM workflows WHERE workspace_id = $1),
                    (COALESCE((SELECT SUM(octet_length(definition)) FROM workflows WHERE workspace_id = $1), 0)
                  + COALESCE((SELECT SUM(octet_length(v.definition)) FROM workflow_versions v
                              JOIN workflows f ON f.id = v.workflow_id WHERE f.workspace_id = $1), 0))::bigint",
            )
            .bind(&workspace)
            .fetch_one(&pool)
            .await
            .unwrap();
            (stored.unwrap_or((0, 0)), counted)
        }
    };
    let fields = |text: &str| WorkflowFields {
        name: "w".to_owned(),
        kind: "flow".to_owned(),
        definition: json!({"nodes": [], "edges": [], "note": text}),
        error_handler: None,
    };
    let a = store
        .create_workflow(&actor, &w.workspace.id, fields("héllo"), &quotas)
        .await
        .unwrap();
    let b = store
        .create_workflow(&actor, &w.workspace.id, fields("b"), &quotas)
        .await
        .unwrap();
    let v = store
        .create_workflow_version(
            &actor,
            &w.workspace.id,
            &a.id,
            "v",
            None,
            json!({"x": "ünï"}),
            &quotas,
        )
        .await
        .unwrap();
    store
        .create_workflow_version(
            &actor,
            &w.workspace.id,
            &a.id,
            "v2",
            None,
            json!({"y": 1}),
            &quotas,
        )
        .await
        .unwrap();
    store
        .update_workflow(
            &actor,
            &w.workspace.id,
            &b.id,
            fields("a longer note"),
            &quotas,
        )
        .await
        .unwrap();
    store
        .update_workflow_version(
            &actor,
            &w.workspace.id,
            &a.id,
            &v.id,
            "v",
            None,
            json!({}),
            &quotas,
        )
        .await
        .unwrap();
    let (stored, counted) = recount(w.workspace.id.to_string()).await;
    assert_eq!(stored.0, 2);
    assert_eq!(stored, counted);
    // Pages in creation order, with totals; versions with and without definitions.
    let (items, total) = store
        .list_workflows(&w.workspace.id, Some("flow"), 0, 10)
        .await
        .unwrap();
    assert_eq!(total, 2);
    assert_eq!(
        items.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        [a.id.clone(), b.id.clone()]
    );
    let (none, total) = store
        .list_workflows(&w.workspace.id, None, 5, 10)
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(total, 2);
    let (versions, total) = store
        .list_workflow_versions(
            &w.workspace.id,
            &a.id,
            VersionSlice {
                offset: 0,
                limit: 10,
                definitions: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(total, 2);
    assert_eq!(versions[0].id, v.id);
    assert!(versions[0].definition.is_none());
    let (versions, _) = store
        .list_workflow_versions(
            &w.workspace.id,
            &a.id,
            VersionSlice {
                offset: 1,
                limit: 10,
                definitions: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(versions[0].definition.as_ref().unwrap().get(), r#"{"y":1}"#);
    // Quotas.
    let tight = WorkflowQuotas {
        workflows_per_workspace: 2,
        ..quotas
    };
    assert!(matches!(
        store
            .create_workflow(&actor, &w.workspace.id, fields("c"), &tight)
            .await,
        Err(StoreError::QuotaExceeded {
            quota: Quota::WorkflowsPerWorkspace,
            limit: 2
        })
    ));
    store
        .delete_workflow(&actor, &w.workspace.id, &a.id)
        .await
        .unwrap();
    let (stored, counted) = recount(w.workspace.id.to_string()).await;
    assert_eq!(stored.0, 1);
    assert_eq!(stored, counted, "a workflow's versions go with it");
    store
        .delete_workspace(&actor, &w.org.id, &w.workspace.id)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM workspace_totals")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    let keys_left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(keys_left, 0, "the workspace's keys went with it");
    // One audit row per mutation, newest first, paged by id.
    let log = store.audit_log(&w.org.id, None, 1000).await.unwrap();
    assert!(log.windows(2).all(|p| p[0].id > p[1].id));
    assert_eq!(log[0].action, "workspace.delete");
    let older = store
        .search_audit(&AuditQuery {
            organization_id: w.org.id.clone(),
            workspace_id: None,
            action_prefix: Some("API_KEY.".to_owned()),
            before_id: Some(log[0].id),
            limit: 3,
        })
        .await
        .unwrap();
    assert_eq!(older.len(), 3);
    assert!(older.iter().all(|r| r.action == "api_key.create"));
    // Sessions and nonces.
    assert!(store.use_nonce("n1").await.unwrap());
    assert!(!store.use_nonce("n1").await.unwrap());
    let at = now();
    store
        .create_session(&SessionRecord {
            token_digest: "t1".to_owned(),
            user_id: w.owner.id.clone(),
            csrf_token: "c".to_owned(),
            created_at: at,
            expires_at: at + time::Duration::hours(1),
            last_seen_at: at,
            reauth_at: None,
        })
        .await
        .unwrap();
    let (session, user) = store.session("t1", at).await.unwrap().unwrap();
    assert_eq!(user.id, w.owner.id);
    assert_eq!(session.csrf_token, "c");
    assert_eq!(
        store
            .end_sessions(&actor, &w.owner.id, Some("t1"))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store.end_sessions(&actor, &w.owner.id, None).await.unwrap(),
        1
    );
    // Settings.
    store.set_setting("x", "1").await.unwrap();
    store.set_setting("x", "2").await.unwrap();
    assert_eq!(store.setting("x").await.unwrap().as_deref(), Some("2"));
    pool.close().await;
    store.close().await;
    db.drop_database().await;
}

#[tokio::test]
async fn rate_counters_add_from_two_writers_per_window_and_are_pruned() {
    let Some(db) =
        fresh_database_or_skip("rate_counters_add_from_two_writers_per_window_and_are_pruned")
            .await
    else {
        return;
    };
    let a = open(&db).await;
    let b = open(&db).await;
    let batch = |pairs: &[(&str, i64)]| -> Vec<(String, i64)> {
        pairs.iter().map(|(s, d)| ((*s).to_owned(), *d)).collect()
    };
    // Window 100: a adds 3 to k:1, b adds 4 to k:1 and 1 to f:x.
    assert_eq!(
        a.add_to_rate_counters(100, &batch(&[("k:1", 3)]))
            .await
            .unwrap(),
        vec![(3, 0)]
    );
    assert_eq!(
        b.add_to_rate_counters(100, &batch(&[("f:x", 1), ("k:1", 4)]))
            .await
            .unwrap(),
        vec![(1, 0), (7, 0)],
        "totals come back in the batch's order"
    );
    // Window 101: the previous window's totals come back too; a scope twice
    // in one batch adds both deltas.
    assert_eq!(
        a.add_to_rate_counters(101, &batch(&[("k:1", 0), ("f:x", 2), ("k:1", 1)]))
            .await
            .unwrap(),
        vec![(1, 7), (2, 1), (1, 7)]
    );
    // Many concurrent writers on the same scopes in opposite orders: no
    // deadlock, and the sum is exact.
    let mut writers = Vec::new();
    for n in 0..8i64 {
        let store = open(&db).await;
        writers.push(tokio::spawn(async move {
            let order: Vec<(String, i64)> = if n % 2 == 0 {
                vec![("s:a".to_owned(), 1), ("s:b".to_owned(), 1)]
            } else {
                vec![("s:b".to_owned(), 1), ("s:a".to_owned(), 1)]
            };
            for _ in 0..25 {
                store.add_to_rate_counters(200, &order).await.unwrap();
            }
            store.close().await;
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(
        a.add_to_rate_counters(200, &batch(&[("s:a", 0), ("s:b", 0)]))
            .await
            .unwrap(),
        vec![(200, 0), (200, 0)]
    );
    assert_eq!(a.prune_rate_counters(101).await.unwrap(), 2);
    assert_eq!(
        a.add_to_rate_counters(101, &batch(&[("k:1", 0)]))
            .await
            .unwrap(),
        vec![(1, 0)],
        "window 100 is gone"
    );
    a.close().await;
    b.close().await;
    db.drop_database().await;
}
