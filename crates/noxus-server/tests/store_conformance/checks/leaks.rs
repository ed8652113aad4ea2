//! Keys reported leaked (`KeyLeakStore`): revoked once, only while they
//! work (a rotated key in its grace period does), with the leak record,
//! exactly one audit row and one event; the warning dismissed once; the
//! records listed newest first and gone with their key.

use std::sync::Arc;

use noxus_server::store::prelude::*;
use noxus_server::store::{
    Actor, CallbackKind, CallbackStatus, KeyQuotas, LeakLocation, LeakQuery, RevokedReason,
    StoreError, WorkspaceId, KEY_REPORTED_LEAKED_EVENT,
};
use time::{Duration, OffsetDateTime};

use crate::world::*;

fn location(url: &str) -> LeakLocation {
    LeakLocation {
        url: Some(url.to_owned()),
        source: Some("github".to_owned()),
    }
}

fn reporter() -> Actor {
    Actor {
        client_addr: Some("198.51.100.9".to_owned()),
        ..Actor::system()
    }
}

fn leaks_of(ws: &WorkspaceId, include_dismissed: bool) -> LeakQuery {
    LeakQuery {
        workspace_id: ws.clone(),
        since: OffsetDateTime::now_utc() - Duration::days(1),
        include_dismissed,
        limit: 100,
    }
}

pub async fn a_leaked_key_is_revoked_once_with_its_record_audit_row_and_event(
    store: Arc<dyn Store>,
) {
    let w = world(&store).await;
    let victim = key(&store, &w.ws.id, &w.owner.id, "ci").await;
    let bystander = key(&store, &w.ws.id, &w.owner.id, "other").await;
    let mut audit = AuditWatch::new(&store, w.org.id.as_str()).await;
    let mut events = EventWatch::new(&store);

    let url = "https://github.com/acme/app/blob/0a1b/.env#L3";
    let revoked = store
        .revoke_leaked_key(&reporter(), &victim.digest, &location(url))
        .await
        .unwrap()
        .expect("a working key is revoked");
    assert_eq!(revoked.id, victim.id);
    assert_eq!(revoked.revoked_reason, Some(RevokedReason::Leaked));
    assert!(revoked.revoked_at.is_some());
    assert_eq!(events.take(&store).await, vec![key_changed(&victim.id)]);
    let rows = audit.take(&store).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row.action, "api_key.revoke");
    assert_eq!(row.target_id, victim.id.as_str());
    assert_eq!(row.workspace_id.as_ref(), Some(&w.ws.id));
    assert_eq!(row.actor_user_id, None);
    assert_eq!(row.client_addr.as_deref(), Some("198.51.100.9"));
    assert_eq!(row.details["reason"], "reported_leaked");
    assert_eq!(row.details["leak_url"], url);
    assert_eq!(row.details["leak_source"], "github");
    assert_eq!(row.details["name"], "ci");

    // As stored, and as the authentication path reads it.
    let stored = store.key(&w.ws.id, &victim.id).await.unwrap().unwrap();
    assert_eq!(stored.revoked_reason, Some(RevokedReason::Leaked));
    let auth = store.key_for_auth(&victim.digest).await.unwrap().unwrap();
    assert!(auth.key.revoked_at.is_some());
    let bystander = store.key(&w.ws.id, &bystander.id).await.unwrap().unwrap();
    assert!(bystander.revoked_at.is_none(), "only the reported key");

    let leaks = store.key_leaks(&leaks_of(&w.ws.id, false)).await.unwrap();
    assert_eq!(leaks.len(), 1);
    assert_eq!(leaks[0].key_id, victim.id);
    assert_eq!(leaks[0].workspace_id, w.ws.id);
    assert_eq!(leaks[0].location, location(url));
    assert_eq!(leaks[0].dismissed_at, None);

    // Reported again, unknown, already revoked, expired: nothing changes.
    let revoked_by_hand = key(&store, &w.ws.id, &w.owner.id, "revoked").await;
    store
        .revoke_key(&actor(&w.owner), &w.ws.id, &revoked_by_hand.id)
        .await
        .unwrap();
    let mut expired = new_key(&w.ws.id, &w.owner.id, "expired");
    expired.expires_at = Some(OffsetDateTime::now_utc() - Duration::minutes(1));
    let expired = store
        .create_key(&Actor::system(), expired, KeyQuotas::default())
        .await
        .unwrap();
    audit.take(&store).await;
    events.take(&store).await;
    for digest in [
        victim.digest,
        digest(),
        revoked_by_hand.digest,
        expired.digest,
    ] {
        let outcome = store
            .revoke_leaked_key(&reporter(), &digest, &location("https://x.test/"))
            .await
            .unwrap();
        assert!(outcome.is_none(), "{outcome:?}");
    }
    assert_eq!(audit.actions(&store).await, Vec::<String>::new());
    assert_eq!(events.take(&store).await, vec![]);
    let stored = store
        .key(&w.ws.id, &revoked_by_hand.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.revoked_reason, Some(RevokedReason::Revoked));
    assert_eq!(
        store
            .key_leaks(&leaks_of(&w.ws.id, true))
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn a_rotated_key_in_its_grace_period_reported_leaked_is_revoked(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let old = key(&store, &w.ws.id, &w.owner.id, "deploy").await;
    let (_, successor) = store
        .rotate_key(
            &actor(&w.owner),
            &w.ws.id,
            &old.id,
            new_key(&w.ws.id, &w.owner.id, "deploy"),
            Some(OffsetDateTime::now_utc() + Duration::hours(1)),
        )
        .await
        .unwrap();
    let revoked = store
        .revoke_leaked_key(&reporter(), &old.digest, &LeakLocation::default())
        .await
        .unwrap()
        .expect("a key in its grace period still works, so it is revoked");
    assert_eq!(revoked.revoked_reason, Some(RevokedReason::Leaked));
    assert_eq!(revoked.replaced_by.as_ref(), Some(&successor.id));
    let successor = store.key(&w.ws.id, &successor.id).await.unwrap().unwrap();
    assert!(successor.revoked_at.is_none(), "its replacement works on");
    let leaks = store.key_leaks(&leaks_of(&w.ws.id, false)).await.unwrap();
    assert_eq!(leaks[0].location, LeakLocation::default());
}

pub async fn dismissing_a_leak_warning_is_audited_once_and_keeps_the_revocation(
    store: Arc<dyn Store>,
) {
    let w = world(&store).await;
    let first = key(&store, &w.ws.id, &w.owner.id, "first").await;
    let second = key(&store, &w.ws.id, &w.owner.id, "second").await;
    for k in [&first, &second] {
        store
            .revoke_leaked_key(&reporter(), &k.digest, &location("https://x.test/"))
            .await
            .unwrap()
            .unwrap();
        // Distinct report times, for the order.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let listed: Vec<_> = store
        .key_leaks(&leaks_of(&w.ws.id, false))
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.key_id)
        .collect();
    assert_eq!(
        listed,
        vec![second.id.clone(), first.id.clone()],
        "newest first"
    );
    let mut one = leaks_of(&w.ws.id, false);
    one.limit = 1;
    assert_eq!(store.key_leaks(&one).await.unwrap().len(), 1);
    let mut later = leaks_of(&w.ws.id, true);
    later.since = OffsetDateTime::now_utc() + Duration::minutes(1);
    assert!(store.key_leaks(&later).await.unwrap().is_empty());

    let mut audit = AuditWatch::new(&store, w.org.id.as_str()).await;
    let mut events = EventWatch::new(&store);
    store
        .dismiss_key_leak(&actor(&w.owner), &w.ws.id, &first.id)
        .await
        .unwrap();
    let rows = audit.take(&store).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].action, "api_key.leak_dismiss");
    assert_eq!(rows[0].target_id, first.id.as_str());
    assert_eq!(rows[0].actor_user_id.as_ref(), Some(&w.owner.id));
    assert_eq!(rows[0].details["name"], "first");
    assert_eq!(events.take(&store).await, vec![], "no key changed");

    let banner: Vec<_> = store
        .key_leaks(&leaks_of(&w.ws.id, false))
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.key_id)
        .collect();
    assert_eq!(banner, vec![second.id.clone()]);
    let all = store.key_leaks(&leaks_of(&w.ws.id, true)).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all
        .iter()
        .find(|l| l.key_id == first.id)
        .unwrap()
        .dismissed_at
        .is_some());
    let stored = store.key(&w.ws.id, &first.id).await.unwrap().unwrap();
    assert_eq!(stored.revoked_reason, Some(RevokedReason::Leaked));

    // Again: nothing more. A key never reported, or another workspace's: not found.
    store
        .dismiss_key_leak(&actor(&w.owner), &w.ws.id, &first.id)
        .await
        .unwrap();
    assert_eq!(audit.actions(&store).await, Vec::<String>::new());
    let never = key(&store, &w.ws.id, &w.owner.id, "never").await;
    let other = workspace(&store, &w, "Other").await;
    audit.take(&store).await;
    for (ws, id) in [(&w.ws.id, &never.id), (&other.id, &second.id)] {
        let result = store.dismiss_key_leak(&actor(&w.owner), ws, id).await;
        assert!(matches!(result, Err(StoreError::NotFound)), "{result:?}");
    }
    assert_eq!(audit.actions(&store).await, Vec::<String>::new());
    assert!(store
        .key_leaks(&leaks_of(&other.id, true))
        .await
        .unwrap()
        .is_empty());
}

pub async fn concurrent_reports_of_one_key_revoke_it_once(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let victim = key(&store, &w.ws.id, &w.owner.id, "popular").await;
    let mut audit = AuditWatch::new(&store, w.org.id.as_str()).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            let digest = victim.digest;
            tokio::spawn(async move {
                store
                    .revoke_leaked_key(
                        &reporter(),
                        &digest,
                        &location(&format!("https://x.test/{i}")),
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut revoked = 0;
    for task in tasks {
        revoked += usize::from(task.await.unwrap().is_some());
    }
    assert_eq!(revoked, 1, "exactly one report revokes it");
    assert_eq!(audit.actions(&store).await, vec!["api_key.revoke"]);
    assert_eq!(
        store
            .key_leaks(&leaks_of(&w.ws.id, true))
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn leak_records_go_with_their_key_and_workspace(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let doomed = workspace(&store, &w, "Doomed").await;
    let in_doomed = key(&store, &doomed.id, &w.owner.id, "doomed").await;
    let kept = key(&store, &w.ws.id, &w.owner.id, "kept").await;
    for k in [&in_doomed, &kept] {
        store
            .revoke_leaked_key(&reporter(), &k.digest, &location("https://x.test/"))
            .await
            .unwrap()
            .unwrap();
    }
    store
        .delete_workspace(&actor(&w.owner), &w.org.id, &doomed.id)
        .await
        .unwrap();
    assert!(store
        .key_leaks(&leaks_of(&doomed.id, true))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .key_leaks(&leaks_of(&w.ws.id, true))
            .await
            .unwrap()
            .len(),
        1,
        "another workspace's records stay"
    );
    // A revoked key forgotten after the usage retention takes its record.
    let hour = OffsetDateTime::now_utc().unix_timestamp().div_euclid(3600);
    store.prune_usage(hour + 2).await.unwrap();
    assert!(store.key(&w.ws.id, &kept.id).await.unwrap().is_none());
    assert!(store
        .key_leaks(&leaks_of(&w.ws.id, true))
        .await
        .unwrap()
        .is_empty());
}

pub async fn a_leak_queues_one_event_for_its_workspace_security_webhook_only(
    store: Arc<dyn Store>,
) {
    const HOOK: &str = "https://hooks.example.com/noxus?token=s3cret";
    let w = world(&store).await;
    let other = workspace(&store, &w, "Other").await;
    let victim = key(&store, &w.ws.id, &w.owner.id, "ci").await;
    let in_other = key(&store, &other.id, &w.owner.id, "elsewhere").await;
    assert_eq!(store.security_webhook(&w.ws.id).await.unwrap(), None);

    // Set, with an audit row that names the origin only.
    let mut audit = AuditWatch::new(&store, w.org.id.as_str()).await;
    let set = store
        .set_security_webhook(&actor(&w.owner), &w.org.id, &w.ws.id, HOOK)
        .await
        .unwrap();
    assert_eq!(set.url, HOOK);
    assert_eq!(store.security_webhook(&w.ws.id).await.unwrap(), Some(set));
    let rows = audit.take(&store).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].action, "workspace.security_webhook.set");
    assert_eq!(rows[0].details["origin"], "https://hooks.example.com");
    assert!(!rows[0].details.to_string().contains("s3cret"));
    assert!(matches!(
        store
            .set_security_webhook(&actor(&w.owner), &"another-org".into(), &w.ws.id, HOOK)
            .await,
        Err(StoreError::NotFound)
    ));

    // A leak in this workspace queues one event with the revocation; one
    // in a workspace without a webhook queues none.
    for k in [&victim, &in_other] {
        store
            .revoke_leaked_key(&reporter(), &k.digest, &location("https://x.test/a"))
            .await
            .unwrap()
            .unwrap();
    }
    assert!(store
        .security_deliveries(&other.id, 10)
        .await
        .unwrap()
        .is_empty());
    let queued = store.security_deliveries(&w.ws.id, 10).await.unwrap();
    assert_eq!(queued.len(), 1, "{queued:?}");
    let event = &queued[0];
    assert_eq!(event.kind, CallbackKind::Security);
    assert_eq!(event.key_id.as_ref(), Some(&victim.id));
    assert_eq!(event.run_id, None);
    assert_eq!(event.event, KEY_REPORTED_LEAKED_EVENT);
    assert_eq!(event.url, HOOK);
    assert_eq!(event.status, CallbackStatus::Pending);
    let body: serde_json::Value = serde_json::from_str(event.payload.as_deref().unwrap()).unwrap();
    assert_eq!(body["type"], KEY_REPORTED_LEAKED_EVENT);
    assert_eq!(body["id"], event.id.as_str());
    assert_eq!(body["data"]["key_id"], victim.id.as_str());
    assert_eq!(body["data"]["key_name"], "ci");
    assert_eq!(body["data"]["found_at"], "https://x.test/a");
    assert_eq!(
        body["data"]["fragment"],
        format!("{}…{}", victim.prefix, victim.suffix)
    );

    // Senders claim it as they claim run callbacks.
    let now = OffsetDateTime::now_utc();
    let claimed = store
        .claim_callbacks("sender", 10, 4, now, now + Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, event.id);
    assert_eq!(claimed[0].payload, event.payload);

    // Removed once (audited), then there is none to remove.
    store
        .remove_security_webhook(&actor(&w.owner), &w.org.id, &w.ws.id)
        .await
        .unwrap();
    assert_eq!(store.security_webhook(&w.ws.id).await.unwrap(), None);
    assert!(matches!(
        store
            .remove_security_webhook(&actor(&w.owner), &w.org.id, &w.ws.id)
            .await,
        Err(StoreError::NotFound)
    ));
    let actions: Vec<String> = audit
        .take(&store)
        .await
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert!(actions.contains(&"workspace.security_webhook.delete".to_owned()));

    // The event goes with its key (forgotten after the usage retention).
    let hour = OffsetDateTime::now_utc().unix_timestamp().div_euclid(3600);
    store.prune_usage(hour + 2).await.unwrap();
    assert!(store.key(&w.ws.id, &victim.id).await.unwrap().is_none());
    assert!(store
        .security_deliveries(&w.ws.id, 10)
        .await
        .unwrap()
        .is_empty());
}
