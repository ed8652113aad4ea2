//! `key_for_auth`: the key with its owner's current standing.

use std::sync::Arc;

use noxus_api::Role;
use noxus_server::rate_limit::RateLimit;
use noxus_server::store::prelude::*;
use noxus_server::store::RevokedReason;

use crate::world::*;

pub async fn key_for_auth_follows_membership_and_deactivation(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let by = actor(&w.owner);
    let u = member(&store, &w, &w.ws, "u@example.com", Role::Member).await;
    let k = key(&store, &w.ws.id, &u.id, "k").await;
    let auth = || {
        let store = Arc::clone(&store);
        let digest = k.digest;
        async move { store.key_for_auth(&digest).await.unwrap().unwrap() }
    };

    let a = auth().await;
    assert_eq!(a.key.id, k.id);
    assert_eq!(a.key.digest, k.digest);
    assert_eq!(a.key.user_id, u.id);
    assert_eq!(a.organization_id, w.org.id);
    assert_eq!(a.workspace_name, w.ws.name);
    assert_eq!(a.user_email, "u@example.com");
    assert_eq!(
        (a.role, a.user_is_org_admin, a.user_active),
        (Some(Role::Member), false, true)
    );
    assert_eq!(a.workspace_rate_limit, None);
    assert_eq!((a.key.revoked_at, a.key.revoked_reason), (None, None));

    store
        .set_membership(&by, &w.ws.id, &u.id, Role::Admin)
        .await
        .unwrap();
    assert_eq!(auth().await.role, Some(Role::Admin));
    store
        .set_org_admin(&by, &w.org.id, &u.id, true)
        .await
        .unwrap();
    assert!(auth().await.user_is_org_admin);
    store
        .set_org_admin(&by, &w.org.id, &u.id, false)
        .await
        .unwrap();
    assert!(!auth().await.user_is_org_admin);
    let limit = RateLimit {
        per_second: 5,
        burst: 10,
    };
    store
        .set_workspace_rate_limit(&by, &w.org.id, &w.ws.id, Some(limit))
        .await
        .unwrap();
    assert_eq!(auth().await.workspace_rate_limit, Some(limit));

    // Removed: no role, and the key revoked for good.
    store.remove_membership(&by, &w.ws.id, &u.id).await.unwrap();
    let a = auth().await;
    assert_eq!(a.role, None);
    assert!(a.key.revoked_at.is_some());
    assert_eq!(a.key.revoked_reason, Some(RevokedReason::OwnerRemoved));
    store
        .set_membership(&by, &w.ws.id, &u.id, Role::Viewer)
        .await
        .unwrap();
    let a = auth().await;
    assert_eq!(a.role, Some(Role::Viewer));
    assert_eq!(a.key.revoked_reason, Some(RevokedReason::OwnerRemoved));

    // Deactivated: inactive, new key revoked; reactivated: active, key stays revoked.
    let k2 = key(&store, &w.ws.id, &u.id, "k2").await;
    store
        .set_user_active(&by, &w.org.id, &u.id, false)
        .await
        .unwrap();
    let a2 = store.key_for_auth(&k2.digest).await.unwrap().unwrap();
    assert!(!a2.user_active);
    assert_eq!(a2.role, Some(Role::Viewer));
    assert_eq!(a2.key.revoked_reason, Some(RevokedReason::OwnerDeactivated));
    store
        .set_user_active(&by, &w.org.id, &u.id, true)
        .await
        .unwrap();
    let a2 = store.key_for_auth(&k2.digest).await.unwrap().unwrap();
    assert!(a2.user_active);
    assert!(a2.key.revoked_at.is_some());
    assert_eq!(a2.key.revoked_reason, Some(RevokedReason::OwnerDeactivated));

    // Rotated without a grace period: revoked as rotated, successor live.
    let k3 = key(&store, &w.ws.id, &u.id, "k3").await;
    let (_, successor) = store
        .rotate_key(&by, &w.ws.id, &k3.id, new_key(&w.ws.id, &u.id, "k4"), None)
        .await
        .unwrap();
    let a3 = store.key_for_auth(&k3.digest).await.unwrap().unwrap();
    assert_eq!(a3.key.revoked_reason, Some(RevokedReason::Rotated));
    assert_eq!(
        a3.key.replaced_by.as_ref().map(|id| id.as_str()),
        Some(successor.id.as_str())
    );
    let a4 = store
        .key_for_auth(&successor.digest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a4.key.revoked_at, a4.role), (None, Some(Role::Viewer)));

    assert!(store.key_for_auth(&digest()).await.unwrap().is_none());
}
