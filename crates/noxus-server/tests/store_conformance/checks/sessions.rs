//! Sessions (expiry, ending all but one, purging) and single-use nonces.

use std::sync::Arc;

use noxus_server::store::prelude::*;
use time::{Duration, OffsetDateTime};

use super::refusals::session_of;
use crate::world::*;

async fn alive(store: &Arc<dyn Store>, digest: &str) -> bool {
    store
        .session(digest, OffsetDateTime::now_utc())
        .await
        .unwrap()
        .is_some()
}

pub async fn sessions_respect_expiry(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let s = session_of(w.owner.id.as_str(), "s1", Duration::hours(1));
    store.create_session(&s).await.unwrap();
    let (found, user) = store
        .session("s1", s.created_at + Duration::minutes(59))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.id, w.owner.id);
    assert_eq!(found.user_id, w.owner.id);
    assert_eq!(found.csrf_token, "csrf-s1");
    assert_eq!(found.expires_at, s.expires_at);
    assert_eq!(found.created_at, s.created_at);
    assert_eq!(found.last_seen_at, s.last_seen_at);
    assert_eq!(found.reauth_at, None);
    // At and past its end it is gone.
    assert!(store.session("s1", s.expires_at).await.unwrap().is_none());
    assert!(store
        .session("s1", s.expires_at + Duration::seconds(1))
        .await
        .unwrap()
        .is_none());
    assert!(store.session("nope", s.created_at).await.unwrap().is_none());

    let later = s.created_at + Duration::minutes(5);
    store.touch_session("s1", later).await.unwrap();
    let (found, _) = store.session("s1", later).await.unwrap().unwrap();
    assert_eq!(found.last_seen_at, later);
    let reauth = s.created_at + Duration::minutes(6);
    store.set_session_reauth("s1", reauth).await.unwrap();
    let (found, _) = store.session("s1", reauth).await.unwrap().unwrap();
    assert_eq!(
        (found.reauth_at, found.last_seen_at),
        (Some(reauth), reauth)
    );
}

pub async fn ending_sessions_keeps_the_one_asked(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let other = user(&store, &w.org, "other@example.com").await;
    for digest in ["a", "b", "c", "d"] {
        store
            .create_session(&session_of(w.owner.id.as_str(), digest, Duration::hours(1)))
            .await
            .unwrap();
    }
    store
        .create_session(&session_of(other.id.as_str(), "o", Duration::hours(1)))
        .await
        .unwrap();

    store.delete_session("a").await.unwrap();
    assert!(!alive(&store, "a").await);
    assert!(alive(&store, "b").await);

    assert_eq!(
        store
            .end_sessions(&actor(&w.owner), &w.owner.id, Some("c"))
            .await
            .unwrap(),
        2
    );
    assert!(alive(&store, "c").await);
    assert!(!alive(&store, "b").await && !alive(&store, "d").await);
    assert!(alive(&store, "o").await);

    // A password change keeps the session asked, ends the others.
    store
        .create_session(&session_of(w.owner.id.as_str(), "e", Duration::hours(1)))
        .await
        .unwrap();
    store
        .set_password(&actor(&w.owner), &w.owner.id, "new", false, Some("e"))
        .await
        .unwrap();
    assert!(alive(&store, "e").await);
    assert!(!alive(&store, "c").await);
    assert!(alive(&store, "o").await);
    store
        .set_password(&actor(&w.owner), &w.owner.id, "newer", false, None)
        .await
        .unwrap();
    assert!(!alive(&store, "e").await);

    store
        .create_session(&session_of(w.owner.id.as_str(), "f", Duration::hours(1)))
        .await
        .unwrap();
    assert_eq!(
        store
            .end_sessions(&actor(&w.owner), &w.owner.id, None)
            .await
            .unwrap(),
        1
    );
    assert!(!alive(&store, "f").await);

    // Deactivation ends the user's sessions; delete_user_sessions too.
    store
        .create_session(&session_of(other.id.as_str(), "o2", Duration::hours(1)))
        .await
        .unwrap();
    store.delete_user_sessions(&other.id).await.unwrap();
    assert!(!alive(&store, "o").await && !alive(&store, "o2").await);
    store
        .create_session(&session_of(other.id.as_str(), "o3", Duration::hours(1)))
        .await
        .unwrap();
    store
        .set_user_active(&actor(&w.owner), &w.org.id, &other.id, false)
        .await
        .unwrap();
    assert!(!alive(&store, "o3").await);
}

pub async fn purge_expired_counts_what_it_removed(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let now = OffsetDateTime::now_utc().replace_millisecond(0).unwrap();
    // Ended: past its end.
    store
        .create_session(&session_of(
            w.owner.id.as_str(),
            "ended",
            Duration::seconds(-1),
        ))
        .await
        .unwrap();
    // Idle: last seen an hour ago.
    let mut idle = session_of(w.owner.id.as_str(), "idle", Duration::hours(8));
    idle.last_seen_at = now - Duration::hours(1);
    store.create_session(&idle).await.unwrap();
    // Was idle, touched since.
    let mut touched = session_of(w.owner.id.as_str(), "touched", Duration::hours(8));
    touched.last_seen_at = now - Duration::hours(1);
    store.create_session(&touched).await.unwrap();
    store.touch_session("touched", now).await.unwrap();
    // Fine.
    store
        .create_session(&session_of(w.owner.id.as_str(), "fine", Duration::hours(8)))
        .await
        .unwrap();
    for nonce in ["n1", "n2", "n3"] {
        assert!(store.use_nonce(nonce).await.unwrap());
    }
    // Nonces used before a past cutoff stay.
    let removed = store
        .purge_expired(now, now - Duration::minutes(30), now - Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(removed, 2);
    assert!(!alive(&store, "ended").await && !alive(&store, "idle").await);
    assert!(alive(&store, "touched").await && alive(&store, "fine").await);
    assert!(!store.use_nonce("n1").await.unwrap(), "still remembered");
    // Nonces used before a future cutoff go.
    let removed = store
        .purge_expired(
            now,
            now - Duration::minutes(30),
            OffsetDateTime::now_utc() + Duration::hours(1),
        )
        .await
        .unwrap();
    assert_eq!(removed, 3);
    assert_eq!(
        store
            .purge_expired(
                now,
                now - Duration::minutes(30),
                OffsetDateTime::now_utc() + Duration::hours(1)
            )
            .await
            .unwrap(),
        0
    );
    assert!(alive(&store, "touched").await && alive(&store, "fine").await);
}

pub async fn nonces_are_single_use(store: Arc<dyn Store>) {
    assert!(store.use_nonce("x").await.unwrap());
    assert!(!store.use_nonce("x").await.unwrap());
    assert!(!store.use_nonce("x").await.unwrap());
    assert!(store.use_nonce("y").await.unwrap());
    assert!(
        store.use_nonce("X").await.unwrap(),
        "nonces are exact strings"
    );
}
