//! Events: each mutating call that can change what a key may do publishes
//! exactly its documented events, after its commit and before it returns;
//! a refused write publishes nothing.

use std::sync::Arc;

use noxus_api::Role;
use noxus_server::rate_limit::RateLimit;
use noxus_server::store::prelude::*;
use noxus_server::store::{
    Actor, KeyQuotas, KeyUsageFlush, NewUser, StoreEvent, UsageCounts, WorkflowQuotas,
};
use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::world::*;

pub async fn every_mutation_publishes_its_events(store: Arc<dyn Store>) {
    // Bootstrap: its workspace and its first key.
    let mut events = EventWatch::new(&store);
    let mut request = bootstrap_request("owner@example.com");
    request.first_key = Some((
        "first".to_owned(),
        digest(),
        "nx_first_a".to_owned(),
        "wxyz".to_owned(),
    ));
    let outcome = store.bootstrap(request).await.unwrap().unwrap();
    let first_key = outcome.key.clone().unwrap();
    assert_eq!(
        events.take(&store).await,
        sorted(vec![
            workspace_changed(&outcome.workspace.id.as_str().into()),
            key_changed(&first_key.id.as_str().into())
        ]),
        "bootstrap"
    );
    let w = World {
        org: outcome.organization,
        owner: outcome.user,
        ws: outcome.workspace,
    };
    let by = actor(&w.owner);
    let ws_id = w.ws.id.as_str();

    // Workspaces.
    let ws2 = store
        .create_workspace(&by, &w.org.id, "second", None, &w.owner.id)
        .await
        .unwrap();
    assert_eq!(
        events.take(&store).await,
        [workspace_changed(&ws2.id.as_str().into())]
    );
    store
        .set_workspace_rate_limit(
            &by,
            &w.org.id,
            &ws2.id,
            Some(RateLimit {
                per_second: 1,
                burst: 1,
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        events.take(&store).await,
        [workspace_changed(&ws2.id.as_str().into())]
    );
    store
        .set_workspace_rate_limit(&by, &w.org.id, &ws2.id, None)
        .await
        .unwrap();
    assert_eq!(
        events.take(&store).await,
        [workspace_changed(&ws2.id.as_str().into())]
    );

    // Users and memberships.
    let u = user(&store, &w.org, "u@example.com").await;
    assert_eq!(events.take(&store).await, [], "create_user");
    store
        .set_membership(&by, &ws_id.into(), &u.id, Role::Member)
        .await
        .unwrap();
    assert_eq!(
        events.take(&store).await,
        [user_changed(&u.id.as_str().into())]
    );
    store
        .set_membership(&by, &ws2.id, &u.id, Role::Admin)
        .await
        .unwrap();
    assert_eq!(
        events.take(&store).await,
        [user_changed(&u.id.as_str().into())]
    );
    store
        .set_org_admin(&by, &w.org.id, &u.id, true)
        .await
        .unwrap();
    assert_eq!(
        events.take(&store).await,
        [user_changed(&u.id.as_str().into())]
    );
    store
        .set_org_admin(&by, &w.org.id, &u.id, false)
        .await
        .unwrap();
    assert_eq!(
        events.take(&store).await,
        [user_changed(&u.id.as_str().into())]
    );

    // Keys.
    let k = store
        .create_key(
            &by,
            new_key(&ws_id.into(), &u.id.as_str().into(), "k"),
            KeyQuotas::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        events.take(&store).await,
        [key_changed(&k.id.as_str().into())]
    );
    let rehashed = digest();
    store
        .replace_key_digest(&k.id, &k.digest, &rehashed)
        .await
        .unwrap();
    assert_eq!(
        events.take(&store).await,
        [key_changed(&k.id.as_str().into())]
    );
    // A digest that no longer matches changes nothing and says nothing.
    store
        .replace_key_digest(&k.id, &k.digest, &digest())
        .await
        .unwrap();
    assert_eq!(events.take(&store).await, [], "stale replace_key_digest");
    assert_eq!(
        store.key_for_auth(&rehashed).await.unwrap().unwrap().key.id,
        k.id
    );
    let (_, next) = store
        .rotate_key(
            &by,
            &ws_id.into(),
            &k.id,
            new_key(&ws_id.into(), &u.id.as_str().into(), "next"),
            Some(OffsetDateTime::now_utc() + Duration::hours(1)),
        )
        .await
        .unwrap();
    assert_eq!(
        events.take(&store).await,
        sorted(vec![
            key_changed(&k.id.as_str().into()),
            key_changed(&next.id.as_str().into())
        ])
    );
    let k2 = key(&store, &ws_id.into(), &u.id.as_str().into(), "k2").await;
    let k3 = key(&store, &ws2.id, &u.id, "k3").await;
    events.take(&store).await;
    store.revoke_key(&by, &ws_id.into(), &k2.id).await.unwrap();
    assert_eq!(
        events.take(&store).await,
        [key_changed(&k2.id.as_str().into())]
    );
    let k4 = key(&store, &ws_id.into(), &u.id.as_str().into(), "k4").await;
    events.take(&store).await;

    // Removal: the user, and each key it revoked (k in its grace period,
    // next and k4; not k2, revoked already, nor k3, in another workspace).
    let revoked = store
        .remove_membership(&by, &ws_id.into(), &u.id)
        .await
        .unwrap();
    let mut expected_ids = vec![k.id.clone(), next.id.clone(), k4.id.clone()];
    expected_ids.sort();
    assert_eq!(revoked, expected_ids);
    let mut expected: Vec<_> = expected_ids
        .iter()
        .map(|id| key_changed(&id.as_str().into()))
        .collect();
    expected.push(user_changed(&u.id.as_str().into()));
    assert_eq!(events.take(&store).await, sorted(expected));

    // Deactivation: the user and each key it revoked; reactivation: the user.
    let (_, revoked) = store
        .set_user_active(&by, &w.org.id, &u.id, false)
        .await
        .unwrap();
    assert_eq!(revoked, [k3.id.as_str()]);
    assert_eq!(
        events.take(&store).await,
        sorted(vec![
            user_changed(&u.id.as_str().into()),
            key_changed(&k3.id.as_str().into())
        ])
    );
    store
        .set_user_active(&by, &w.org.id, &u.id, true)
        .await
        .unwrap();
    assert_eq!(
        events.take(&store).await,
        [user_changed(&u.id.as_str().into())]
    );

    // Deleting a workspace: the workspace (which covers its keys).
    store
        .delete_workspace(&by, &w.org.id, &ws2.id)
        .await
        .unwrap();
    assert_eq!(
        events.take(&store).await,
        [workspace_changed(&ws2.id.as_str().into())]
    );
}

/// Changes that cannot alter what a key may do publish nothing: users'
/// creation and passwords, sessions, nonces, usage, workflows, settings,
/// organizations.
pub async fn mutations_without_key_relevance_publish_nothing(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let by = actor(&w.owner);
    let k = key(&store, &w.ws.id, &w.owner.id, "k").await;
    let mut events = EventWatch::new(&store);
    let before = store.events().published();

    let u = store
        .create_user(
            &by,
            NewUser {
                organization_id: w.org.id.clone(),
                email: "u@example.com".to_owned(),
                name: "U".to_owned(),
                password_hash: "h".to_owned(),
                is_org_admin: false,
                must_change_password: false,
            },
        )
        .await
        .unwrap();
    store
        .set_password(&by, &u.id, "h2", true, None)
        .await
        .unwrap();
    store
        .create_session(&super::refusals::session_of(
            u.id.as_str(),
            "s",
            Duration::hours(1),
        ))
        .await
        .unwrap();
    store
        .touch_session("s", OffsetDateTime::now_utc())
        .await
        .unwrap();
    store
        .set_session_reauth("s", OffsetDateTime::now_utc())
        .await
        .unwrap();
    store.end_sessions(&by, &u.id, Some("s")).await.unwrap();
    store.delete_session("s").await.unwrap();
    store.delete_user_sessions(&u.id).await.unwrap();
    store
        .purge_expired(
            OffsetDateTime::now_utc(),
            OffsetDateTime::now_utc(),
            OffsetDateTime::now_utc(),
        )
        .await
        .unwrap();
    store.use_nonce("n").await.unwrap();
    let hour = OffsetDateTime::now_utc().unix_timestamp() / 3600;
    store
        .record_usage(
            &[KeyUsageFlush {
                key_id: k.id.clone(),
                workspace_id: w.ws.id.clone(),
                last_used: Some((OffsetDateTime::now_utc(), None)),
                hours: vec![(hour, UsageCounts::default())],
                addresses: vec![("10.0.0.1".to_owned(), OffsetDateTime::now_utc())],
            }],
            10,
        )
        .await
        .unwrap();
    store.prune_usage(hour - 100).await.unwrap();
    let quotas = WorkflowQuotas {
        workflows_per_workspace: 10,
        versions_per_workflow: 10,
        definition_bytes_per_workspace: 10_000,
    };
    let wf = store
        .create_workflow(&by, &w.ws.id, flow("f", "flow"), &quotas)
        .await
        .unwrap();
    store
        .update_workflow(&by, &w.ws.id, &wf.id, flow("g", "flow"), &quotas)
        .await
        .unwrap();
    let v = store
        .create_workflow_version(&by, &w.ws.id, &wf.id, "v", None, json!({}), &quotas)
        .await
        .unwrap();
    store
        .update_workflow_version(&by, &w.ws.id, &wf.id, &v.id, "v2", None, json!([]), &quotas)
        .await
        .unwrap();
    store.delete_workflow(&by, &w.ws.id, &wf.id).await.unwrap();
    store.set_setting("a", "b").await.unwrap();
    store
        .create_organization(&Actor::system(), "Other")
        .await
        .unwrap();

    assert_eq!(store.events().published(), before);
    assert_eq!(events.take(&store).await, []);
}

/// An event is heard only once its change is visible to a read, and is
/// counted by `events().published()` as soon as the call returns
/// (read-your-writes).
pub async fn events_are_published_after_commit(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let k = key(&store, &w.ws.id, &w.owner.id, "k").await;
    let u = member(&store, &w, &w.ws, "u@example.com", Role::Member).await;
    let mut subscription = store.subscribe();
    let listener = {
        let store = Arc::clone(&store);
        let ws_id = w.ws.id.clone();
        tokio::spawn(async move {
            // What a reader sees when it hears each event.
            let mut seen = Vec::new();
            while let Some((_, event)) = subscription.next().await {
                match &event {
                    StoreEvent::KeyChanged(id) => {
                        let key = store.key(&ws_id, id).await.unwrap().unwrap();
                        seen.push(format!("key {} revoked={}", id, key.revoked_at.is_some()));
                    }
                    StoreEvent::UserChanged(id) => {
                        let role = store.membership(&ws_id, id).await.unwrap();
                        seen.push(format!("user {id} role={role:?}"));
                        return seen;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            seen
        })
    };
    let before = store.events().published();
    store
        .revoke_key(&actor(&w.owner), &w.ws.id, &k.id)
        .await
        .unwrap();
    assert_eq!(store.events().published(), before + 1, "counted on return");
    store
        .set_membership(&actor(&w.owner), &w.ws.id, &u.id, Role::Viewer)
        .await
        .unwrap();
    assert_eq!(store.events().published(), before + 2, "counted on return");
    let seen = listener.await.unwrap();
    assert_eq!(
        seen,
        [
            format!("key {} revoked=true", k.id),
            format!("user {} role=Some(Viewer)", u.id)
        ]
    );
}

/// Every kind of refused write (conflict, precondition, quota, not found)
/// publishes nothing.
pub async fn refused_writes_publish_nothing(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let by = actor(&w.owner);
    let k = key(&store, &w.ws.id, &w.owner.id, "k").await;
    let revoked = key(&store, &w.ws.id, &w.owner.id, "r").await;
    store.revoke_key(&by, &w.ws.id, &revoked.id).await.unwrap();
    workspace(&store, &w, "taken").await;
    let mut events = EventWatch::new(&store);
    let before = store.events().published();

    assert!(store
        .create_workspace(&by, &w.org.id, "taken", None, &w.owner.id)
        .await
        .is_err());
    assert!(store
        .set_membership(&by, &w.ws.id, &w.owner.id, Role::Admin)
        .await
        .is_err());
    assert!(store
        .remove_membership(&by, &w.ws.id, &w.owner.id)
        .await
        .is_err());
    assert!(store
        .set_user_active(&by, &w.org.id, &w.owner.id, false)
        .await
        .is_err());
    assert!(store
        .set_org_admin(&by, &w.org.id, &w.owner.id, false)
        .await
        .is_err());
    assert!(store
        .rotate_key(
            &by,
            &w.ws.id,
            &revoked.id,
            new_key(&w.ws.id, &w.owner.id, "x"),
            None
        )
        .await
        .is_err());
    assert!(store
        .create_key(
            &by,
            new_key(&w.ws.id, &w.owner.id, "x"),
            KeyQuotas {
                per_user: 1,
                per_workspace: 100
            }
        )
        .await
        .is_err());
    // A key whose digest is taken.
    let mut clash = new_key(&w.ws.id, &w.owner.id, "clash");
    clash.digest = k.digest;
    assert!(store
        .create_key(&by, clash, KeyQuotas::default())
        .await
        .is_err());
    // Not found.
    assert!(store
        .revoke_key(&by, &w.ws.id, &("no-such-key").into())
        .await
        .is_err());
    assert!(store
        .delete_workspace(&by, &w.org.id, &("no-such-workspace").into())
        .await
        .is_err());
    assert!(store
        .set_workspace_rate_limit(&by, &w.org.id, &("no-such-workspace").into(), None)
        .await
        .is_err());
    assert!(store
        .remove_membership(&by, &w.ws.id, &("no-such-user").into())
        .await
        .is_err());
    assert!(store
        .bootstrap(bootstrap_request("x@example.com"))
        .await
        .unwrap()
        .is_none());

    assert_eq!(store.events().published(), before);
    assert_eq!(events.take(&store).await, []);
}
