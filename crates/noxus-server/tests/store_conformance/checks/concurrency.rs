//! Rules checked inside the write hold when writes race: tasks released
//! together by a barrier, joined, then the outcomes counted.

use std::sync::Arc;

use noxus_api::Role;
use noxus_server::store::prelude::*;
use noxus_server::store::{Actor, KeyQuotas, Precondition, StoreError};
use time::{Duration, OffsetDateTime};
use tokio::sync::Barrier;

use crate::world::*;

/// Runs `n` copies of `task(i)` at once and returns their results in order.
async fn race<T, F, Fut>(n: usize, task: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            let work = task(i);
            tokio::spawn(async move {
                barrier.wait().await;
                work.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for handle in handles {
        results.push(handle.await.expect("task"));
    }
    results
}

async fn two_rotations(store: Arc<dyn Store>, old_valid_until: Option<OffsetDateTime>) {
    let w = world(&store).await;
    let k = key(&store, &w.ws.id, &w.owner.id, "k").await;
    let mut audit = AuditWatch::new(&store, w.org.id.as_str()).await;
    let mut events = EventWatch::new(&store);
    let digests: Vec<_> = (0..2).map(|_| digest()).collect();
    let results = race(2, |i| {
        let store = Arc::clone(&store);
        let mut new = new_key(&w.ws.id, &w.owner.id, "successor");
        new.digest = digests[i];
        let (ws, id, owner) = (w.ws.id.clone(), k.id.clone(), actor(&w.owner));
        async move {
            store
                .rotate_key(&owner, &ws, &id, new, old_valid_until)
                .await
        }
    })
    .await;
    let winners: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let (_, successor) = winners[0].as_ref().unwrap();
    let loser = results.iter().position(|r| r.is_err()).unwrap();
    assert!(
        matches!(
            results[loser],
            Err(StoreError::Precondition(Precondition::KeyAlreadyRotated))
        ),
        "{:?}",
        results[loser]
    );
    // One successor, the winner's; the loser's key does not exist.
    let listed = store.list_keys(&w.ws.id, None).await.unwrap();
    assert_eq!(ids(&listed), [successor.id.clone(), k.id.clone()]);
    assert!(store.key_for_auth(&digests[loser]).await.unwrap().is_none());
    assert_eq!(
        store
            .key(&w.ws.id, &k.id)
            .await
            .unwrap()
            .unwrap()
            .replaced_by,
        Some(successor.id.clone())
    );
    assert_eq!(audit.actions(&store).await, ["api_key.rotate"]);
    assert_eq!(
        events.take(&store).await,
        sorted(vec![
            key_changed(&k.id.as_str().into()),
            key_changed(&successor.id.as_str().into())
        ])
    );
}

/// Two rotations of one key (old key revoked at once): exactly one wins.
pub async fn concurrent_rotations_of_one_key_one_wins(store: Arc<dyn Store>) {
    two_rotations(store, None).await;
}

/// Two rotations of one key (old key kept for a grace period): exactly one wins.
pub async fn concurrent_rotations_with_grace_one_wins(store: Arc<dyn Store>) {
    let grace = OffsetDateTime::now_utc() + Duration::hours(1);
    two_rotations(store, Some(grace)).await;
}

/// Two owners demote each other at once: one is refused, one owner remains.
pub async fn owners_demoting_each_other_at_once_keep_one(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let b = member(&store, &w, &w.ws, "b@example.com", Role::Owner).await;
    let mut audit = AuditWatch::new(&store, w.org.id.as_str()).await;
    let mut events = EventWatch::new(&store);
    let pairs = [(w.owner.clone(), b.clone()), (b.clone(), w.owner.clone())];
    let results = race(2, |i| {
        let store = Arc::clone(&store);
        let (me, them) = pairs[i].clone();
        let ws = w.ws.id.clone();
        async move {
            store
                .set_membership(&actor(&me), &ws, &them.id, Role::Member)
                .await
        }
    })
    .await;
    let ok: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(ok.len(), 1, "{results:?}");
    assert!(matches!(ok[0], Ok(Some(Role::Owner))));
    let refused = results.iter().position(|r| r.is_err()).unwrap();
    assert!(
        matches!(
            results[refused],
            Err(StoreError::Precondition(Precondition::LastOwner))
        ),
        "{:?}",
        results[refused]
    );
    // The refused one tried to demote pairs[refused].1, who stays owner.
    let survivor = &pairs[refused].1;
    let demoted = &pairs[refused].0;
    let roles: Vec<_> = store
        .list_members(&w.ws.id)
        .await
        .unwrap()
        .into_iter()
        .map(|(u, role)| (u.id, role))
        .collect();
    let owners: Vec<_> = roles.iter().filter(|(_, r)| *r == Role::Owner).collect();
    assert_eq!(owners, [&(survivor.id.clone(), Role::Owner)]);
    assert_eq!(
        store.membership(&w.ws.id, &demoted.id).await.unwrap(),
        Some(Role::Member)
    );
    assert_eq!(audit.actions(&store).await, ["membership.set"]);
    assert_eq!(
        events.take(&store).await,
        [user_changed(&demoted.id.as_str().into())]
    );
}

/// Three first starts at once: one organization, one owner, one workspace.
pub async fn concurrent_bootstraps_make_one_organization(store: Arc<dyn Store>) {
    let results = race(3, |i| {
        let store = Arc::clone(&store);
        async move {
            store
                .bootstrap(bootstrap_request(&format!("admin{i}@example.com")))
                .await
        }
    })
    .await;
    let outcomes: Vec<_> = results
        .into_iter()
        .map(|r| r.expect("bootstrap does not fail"))
        .collect();
    let winners: Vec<_> = outcomes.iter().flatten().collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let winner = winners[0];
    let org = store.organization().await.unwrap().unwrap();
    assert_eq!(org.id, winner.organization.id);
    let users: Vec<_> = store
        .list_users(&org.id)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.email)
        .collect();
    assert_eq!(users, [winner.user.email.as_str()]);
    for i in 0..3 {
        let email = format!("admin{i}@example.com");
        assert_eq!(
            store.user_by_email(&email).await.unwrap().is_some(),
            email == winner.user.email
        );
    }
    let workspaces: Vec<_> = store
        .list_workspaces(&org.id)
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(workspaces, [winner.workspace.id.as_str()]);
    let actions: Vec<_> = audit_rows(&store, &org.id.as_str().into())
        .await
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(actions, ["platform.bootstrap"]);
}

/// One nonce used by 8 tasks at once: exactly one succeeds.
pub async fn concurrent_nonce_use_succeeds_once(store: Arc<dyn Store>) {
    for round in 0..3 {
        let nonce = format!("nonce-{round}");
        let results = race(8, |_| {
            let store = Arc::clone(&store);
            let nonce = nonce.clone();
            async move { store.use_nonce(&nonce).await.expect("use nonce") }
        })
        .await;
        assert_eq!(
            results.iter().filter(|used| **used).count(),
            1,
            "{results:?}"
        );
        assert!(!store.use_nonce(&nonce).await.unwrap());
    }
}

/// Many key creations at once never take a user or a workspace past its quota.
pub async fn concurrent_key_creations_never_overshoot_quotas(store: Arc<dyn Store>) {
    let w = world(&store).await;
    // Per workspace: 12 users, room for 5.
    let mut users = Vec::new();
    for i in 0..12 {
        users.push(
            member(
                &store,
                &w,
                &w.ws,
                &format!("u{i}@example.com"),
                Role::Member,
            )
            .await,
        );
    }
    let quotas = KeyQuotas {
        per_user: 100,
        per_workspace: 5,
    };
    let results = race(12, |i| {
        let store = Arc::clone(&store);
        let key = new_key(&w.ws.id, &users[i].id, "k");
        async move { store.create_key(&Actor::system(), key, quotas).await }
    })
    .await;
    let created = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(created, 5, "{results:?}");
    assert!(results.iter().all(|r| matches!(
        r,
        Ok(_)
            | Err(StoreError::Precondition(
                Precondition::TooManyKeysInWorkspace { limit: 5 }
            ))
    )));
    assert_eq!(live_keys(&store, &w.ws.id.as_str().into()).await.len(), 5);
    assert_eq!(store.list_keys(&w.ws.id, None).await.unwrap().len(), 5);

    // Per user: one user, 10 at once, room for 3.
    let ws2 = workspace(&store, &w, "second").await;
    let quotas = KeyQuotas {
        per_user: 3,
        per_workspace: 100,
    };
    let results = race(10, |_| {
        let store = Arc::clone(&store);
        let key = new_key(&ws2.id, &w.owner.id, "mine");
        async move { store.create_key(&Actor::system(), key, quotas).await }
    })
    .await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        3,
        "{results:?}"
    );
    assert!(results.iter().all(|r| matches!(
        r,
        Ok(_)
            | Err(StoreError::Precondition(Precondition::TooManyKeysForUser {
                limit: 3
            }))
    )));
    assert_eq!(
        store
            .list_keys(&ws2.id, Some(&w.owner.id))
            .await
            .unwrap()
            .len(),
        3
    );
}

/// Processes recording a setting at once (replicas checking their pepper on
/// an empty database): the first value stored is the one all of them get,
/// and a later call changes nothing.
pub async fn concurrent_setting_inserts_keep_the_first(fresh: &mut crate::backend::Fresh) {
    let other = fresh.open_another().await;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..8 {
        let store = if n % 2 == 0 {
            std::sync::Arc::clone(&fresh.store)
        } else {
            std::sync::Arc::clone(&other)
        };
        tasks.spawn(async move {
            store
                .setting_or_insert("conformance_setting", &format!("value {n}"))
                .await
                .unwrap()
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    while let Some(got) = tasks.join_next().await {
        seen.insert(got.unwrap());
    }
    assert_eq!(seen.len(), 1, "every caller got the same value: {seen:?}");
    let first = seen.pop_first().unwrap();
    assert_eq!(
        fresh
            .store
            .setting_or_insert("conformance_setting", "later")
            .await
            .unwrap(),
        first
    );
    assert_eq!(
        other.setting("conformance_setting").await.unwrap(),
        Some(first)
    );
}
