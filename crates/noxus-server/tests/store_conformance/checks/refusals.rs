//! Each conflict kind, precondition and quota, and that a refused write
//! changed nothing: no row, no audit row, no event.

use std::sync::Arc;

use noxus_api::Role;
use noxus_server::store::prelude::*;
use noxus_server::store::{
    Actor, ConflictKind, KeyQuotas, NewUser, Organization, Precondition, Quota, StoreError,
    WorkflowQuotas,
};
use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::world::*;

/// What a refused write must leave as it was: the audit log and the event
/// bus (each check also looks at the rows concerned).
struct Unchanged {
    audit: AuditWatch,
    events: EventWatch,
}

impl Unchanged {
    async fn new(store: &Arc<dyn Store>, org_id: &str) -> Self {
        Self {
            audit: AuditWatch::new(store, org_id).await,
            events: EventWatch::new(store),
        }
    }

    async fn check(&mut self, store: &Arc<dyn Store>) {
        assert_eq!(self.audit.actions(store).await, Vec::<String>::new());
        assert_eq!(self.events.take(store).await, vec![]);
    }
}

fn precondition(result: Result<impl std::fmt::Debug, StoreError>) -> Precondition {
    match result {
        Err(StoreError::Precondition(p)) => p,
        other => panic!("expected a precondition refusal, got {other:?}"),
    }
}

pub async fn duplicate_workspace_name_is_a_conflict(store: Arc<dyn Store>) {
    let w = world(&store).await;
    workspace(&store, &w, "dup").await;
    let before = store.list_workspaces(&w.org.id).await.unwrap().len();
    let mut unchanged = Unchanged::new(&store, w.org.id.as_str()).await;
    let result = store
        .create_workspace(&actor(&w.owner), &w.org.id, "dup", None, &w.owner.id)
        .await;
    assert!(
        matches!(
            result,
            Err(StoreError::Conflict(ConflictKind::WorkspaceName))
        ),
        "{result:?}"
    );
    unchanged.check(&store).await;
    assert_eq!(
        store.list_workspaces(&w.org.id).await.unwrap().len(),
        before
    );
    assert_eq!(
        store.workspaces_of_user(&w.owner.id).await.unwrap().len(),
        before
    );
    // The name is taken per organization only.
    let other = store
        .create_organization(&Actor::system(), "Other")
        .await
        .unwrap();
    let theirs = user(&store, &other, "them@example.com").await;
    store
        .create_workspace(&Actor::system(), &other.id, "dup", None, &theirs.id)
        .await
        .unwrap();
}

pub async fn duplicate_user_email_is_a_conflict(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let first = user(&store, &w.org, "dup@example.com").await;
    let mut unchanged = Unchanged::new(&store, w.org.id.as_str()).await;
    let result = store
        .create_user(
            &Actor::system(),
            NewUser {
                organization_id: w.org.id.clone(),
                email: "dup@example.com".to_owned(),
                name: "Second".to_owned(),
                password_hash: "other".to_owned(),
                is_org_admin: true,
                must_change_password: false,
            },
        )
        .await;
    assert!(
        matches!(result, Err(StoreError::Conflict(ConflictKind::UserEmail))),
        "{result:?}"
    );
    unchanged.check(&store).await;
    assert_eq!(store.list_users(&w.org.id).await.unwrap().len(), 2);
    let found = store
        .user_by_email("dup@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.id, found.name), (first.id, "dup".to_owned()));
    assert!(!found.is_org_admin);
}

/// An invitation creates a plain user (never an organization admin) and
/// their membership together; an email already taken, or a workspace of
/// another organization, changes nothing (no account gets a new password).
pub async fn inviting_creates_a_plain_member_at_once_or_nothing(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let invite = |org: &Organization, email: &str| NewUser {
        organization_id: org.id.clone(),
        email: email.to_owned(),
        name: "Invited".to_owned(),
        password_hash: "invited hash".to_owned(),
        is_org_admin: true,
        must_change_password: true,
    };
    let mut audit = AuditWatch::new(&store, w.org.id.as_str()).await;
    let mut events = EventWatch::new(&store);
    let invited = store
        .create_member(
            &actor(&w.owner),
            invite(&w.org, "new@example.com"),
            &w.ws.id,
            Role::Viewer,
        )
        .await
        .unwrap();
    let stored = store.user(&invited.id).await.unwrap().unwrap();
    assert!(!stored.is_org_admin, "never an organization admin");
    assert!(stored.must_change_password);
    assert_eq!(stored.password_hash, "invited hash");
    assert_eq!(
        store.membership(&w.ws.id, &invited.id).await.unwrap(),
        Some(Role::Viewer)
    );
    let rows = audit.take(&store).await;
    let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["user.create", "membership.set"]);
    assert!(rows
        .iter()
        .all(|r| r.target_id == invited.id.as_str() && r.workspace_id.as_ref() == Some(&w.ws.id)));
    assert_eq!(events.take(&store).await, vec![user_changed(&invited.id)]);

    let mut unchanged = Unchanged::new(&store, w.org.id.as_str()).await;
    let result = store
        .create_member(
            &actor(&w.owner),
            invite(&w.org, &w.owner.email),
            &w.ws.id,
            Role::Owner,
        )
        .await;
    assert!(
        matches!(result, Err(StoreError::Conflict(ConflictKind::UserEmail))),
        "{result:?}"
    );
    unchanged.check(&store).await;
    let owner = store.user(&w.owner.id).await.unwrap().unwrap();
    assert_eq!(owner.password_hash, w.owner.password_hash);
    assert!(!owner.must_change_password);
    let other = store
        .create_organization(&Actor::system(), "Other")
        .await
        .unwrap();
    let mut unchanged = Unchanged::new(&store, w.org.id.as_str()).await;
    let result = store
        .create_member(
            &Actor::system(),
            invite(&other, "stranger@example.com"),
            &w.ws.id,
            Role::Viewer,
        )
        .await;
    assert!(matches!(result, Err(StoreError::NotFound)), "{result:?}");
    unchanged.check(&store).await;
    assert!(store
        .user_by_email("stranger@example.com")
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.list_members(&w.ws.id).await.unwrap().len(), 2);
}

pub async fn demoting_the_last_owner_is_refused(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let admin = member(&store, &w, &w.ws, "admin@example.com", Role::Admin).await;
    let mut unchanged = Unchanged::new(&store, w.org.id.as_str()).await;
    for role in [Role::Admin, Role::Member, Role::Viewer] {
        let result = store
            .set_membership(&actor(&admin), &w.ws.id, &w.owner.id, role)
            .await;
        assert_eq!(precondition(result), Precondition::LastOwner);
    }
    unchanged.check(&store).await;
    assert_eq!(
        store.membership(&w.ws.id, &w.owner.id).await.unwrap(),
        Some(Role::Owner)
    );
    // With a second owner, the first may step down.
    store
        .set_membership(&actor(&w.owner), &w.ws.id, &admin.id, Role::Owner)
        .await
        .unwrap();
    let previous = store
        .set_membership(&actor(&w.owner), &w.ws.id, &w.owner.id, Role::Admin)
        .await
        .unwrap();
    assert_eq!(previous, Some(Role::Owner));
    assert_eq!(
        store.membership(&w.ws.id, &w.owner.id).await.unwrap(),
        Some(Role::Admin)
    );
}

pub async fn removing_the_last_owner_is_refused(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let k = key(&store, &w.ws.id, &w.owner.id, "owner's").await;
    let mut unchanged = Unchanged::new(&store, w.org.id.as_str()).await;
    let result = store
        .remove_membership(&actor(&w.owner), &w.ws.id, &w.owner.id)
        .await;
    assert_eq!(precondition(result), Precondition::LastOwner);
    unchanged.check(&store).await;
    assert_eq!(
        store.membership(&w.ws.id, &w.owner.id).await.unwrap(),
        Some(Role::Owner)
    );
    let still = store.key(&w.ws.id, &k.id).await.unwrap().unwrap();
    assert_eq!((still.revoked_at, still.revoked_reason), (None, None));
}

/// Two admins, one deactivated: the other is then the last active one.
pub async fn deactivating_the_last_org_admin_is_refused(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let second = user(&store, &w.org, "second@example.com").await;
    store
        .set_org_admin(&actor(&w.owner), &w.org.id, &second.id, true)
        .await
        .unwrap();
    store
        .set_user_active(&actor(&w.owner), &w.org.id, &second.id, false)
        .await
        .unwrap();
    let k = key(&store, &w.ws.id, &w.owner.id, "owner's").await;
    let session = session_of(w.owner.id.as_str(), "keep-me", Duration::hours(1));
    store.create_session(&session).await.unwrap();

    let mut unchanged = Unchanged::new(&store, w.org.id.as_str()).await;
    let result = store
        .set_user_active(&actor(&w.owner), &w.org.id, &w.owner.id, false)
        .await;
    assert_eq!(precondition(result), Precondition::LastOrgAdmin);
    unchanged.check(&store).await;
    let owner = store.user(&w.owner.id).await.unwrap().unwrap();
    assert!(owner.is_active_org_admin());
    let still = store.key(&w.ws.id, &k.id).await.unwrap().unwrap();
    assert_eq!(still.revoked_at, None);
    assert!(store
        .session("keep-me", OffsetDateTime::now_utc())
        .await
        .unwrap()
        .is_some());

    // Reactivated, the second admin lets the first go.
    store
        .set_user_active(&actor(&w.owner), &w.org.id, &second.id, true)
        .await
        .unwrap();
    let (user, revoked) = store
        .set_user_active(&actor(&second), &w.org.id, &w.owner.id, false)
        .await
        .unwrap();
    assert!(!user.is_active());
    assert_eq!(revoked, vec![k.id.clone()]);
}

pub async fn unmaking_the_last_org_admin_is_refused(store: Arc<dyn Store>) {
    let w = world(&store).await;
    // A deactivated admin does not count.
    let dormant = user(&store, &w.org, "dormant@example.com").await;
    store
        .set_org_admin(&actor(&w.owner), &w.org.id, &dormant.id, true)
        .await
        .unwrap();
    store
        .set_user_active(&actor(&w.owner), &w.org.id, &dormant.id, false)
        .await
        .unwrap();
    let mut unchanged = Unchanged::new(&store, w.org.id.as_str()).await;
    let result = store
        .set_org_admin(&actor(&w.owner), &w.org.id, &w.owner.id, false)
        .await;
    assert_eq!(precondition(result), Precondition::LastOrgAdmin);
    unchanged.check(&store).await;
    assert!(store.user(&w.owner.id).await.unwrap().unwrap().is_org_admin);
}

/// Asserts that a refused rotation added no key (its successor's digest is unknown).
async fn no_successor(store: &Arc<dyn Store>, ws_id: &str, keys_before: usize, digest: &str) {
    assert_eq!(
        store.list_keys(&ws_id.into(), None).await.unwrap().len(),
        keys_before
    );
    let digest = noxus_server::domain::keys::KeyDigest::from_hex(digest).unwrap();
    assert!(store.key_for_auth(&digest).await.unwrap().is_none());
}

pub async fn rotating_a_revoked_key_is_refused(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let k = key(&store, &w.ws.id, &w.owner.id, "k").await;
    store
        .revoke_key(&actor(&w.owner), &w.ws.id, &k.id)
        .await
        .unwrap();
    let revoked = store.key(&w.ws.id, &k.id).await.unwrap().unwrap();
    let mut unchanged = Unchanged::new(&store, w.org.id.as_str()).await;
    for grace in [None, Some(OffsetDateTime::now_utc() + Duration::hours(1))] {
        let new = new_key(&w.ws.id, &w.owner.id, "successor");
        let digest = new.digest.as_hex();
        let result = store
            .rotate_key(&actor(&w.owner), &w.ws.id, &k.id, new, grace)
            .await;
        assert_eq!(precondition(result), Precondition::KeyRevoked);
        no_successor(&store, w.ws.id.as_str(), 1, &digest).await;
    }
    unchanged.check(&store).await;
    let after = store.key(&w.ws.id, &k.id).await.unwrap().unwrap();
    assert_eq!(after.revoked_at, revoked.revoked_at);
    assert_eq!(after.replaced_by, None);
    assert_eq!(after.expires_at, None);
}

pub async fn rotating_an_expired_key_is_refused(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let mut expired = new_key(&w.ws.id, &w.owner.id, "expired");
    let expiry = OffsetDateTime::now_utc().replace_millisecond(0).unwrap() - Duration::hours(1);
    expired.expires_at = Some(expiry);
    let k = store
        .create_key(&Actor::system(), expired, KeyQuotas::default())
        .await
        .unwrap();
    let mut unchanged = Unchanged::new(&store, w.org.id.as_str()).await;
    let new = new_key(&w.ws.id, &w.owner.id, "successor");
    let digest = new.digest.as_hex();
    let result = store
        .rotate_key(&actor(&w.owner), &w.ws.id, &k.id, new, None)
        .await;
    assert_eq!(precondition(result), Precondition::KeyExpired);
    no_successor(&store, w.ws.id.as_str(), 1, &digest).await;
    unchanged.check(&store).await;
    let after = store.key(&w.ws.id, &k.id).await.unwrap().unwrap();
    assert_eq!(
        (after.revoked_at, after.replaced_by, after.expires_at),
        (None, None, Some(expiry))
    );
}

/// A rotated key, whether its grace period runs or it was revoked at
/// once, cannot be rotated again: its replacement can.
pub async fn rotating_a_rotated_key_is_refused(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let grace = OffsetDateTime::now_utc().replace_millisecond(0).unwrap() + Duration::hours(1);
    for old_valid_until in [Some(grace), None] {
        let k = key(&store, &w.ws.id, &w.owner.id, "k").await;
        let (old, successor) = store
            .rotate_key(
                &actor(&w.owner),
                &w.ws.id,
                &k.id,
                new_key(&w.ws.id, &w.owner.id, "next"),
                old_valid_until,
            )
            .await
            .unwrap();
        assert_eq!(
            old.replaced_by.as_ref().map(|id| id.as_str()),
            Some(successor.id.as_str())
        );
        let old = store.key(&w.ws.id, &k.id).await.unwrap().unwrap();
        assert_eq!(
            old.replaced_by.as_ref().map(|id| id.as_str()),
            Some(successor.id.as_str())
        );
        let keys_before = store.list_keys(&w.ws.id, None).await.unwrap().len();
        let mut unchanged = Unchanged::new(&store, w.org.id.as_str()).await;
        let new = new_key(&w.ws.id, &w.owner.id, "again");
        let digest = new.digest.as_hex();
        let result = store
            .rotate_key(&actor(&w.owner), &w.ws.id, &k.id, new, old_valid_until)
            .await;
        assert_eq!(
            precondition(result),
            Precondition::KeyAlreadyRotated,
            "rotated with old_valid_until = {old_valid_until:?}"
        );
        no_successor(&store, w.ws.id.as_str(), keys_before, &digest).await;
        unchanged.check(&store).await;
        let after = store.key(&w.ws.id, &k.id).await.unwrap().unwrap();
        assert_eq!(
            after.replaced_by.as_ref().map(|id| id.as_str()),
            Some(successor.id.as_str())
        );
        assert_eq!(after.expires_at, old.expires_at);
        assert_eq!(after.revoked_at, old.revoked_at);
        // The replacement can be rotated.
        store
            .rotate_key(
                &actor(&w.owner),
                &w.ws.id,
                &successor.id,
                new_key(&w.ws.id, &w.owner.id, "third"),
                None,
            )
            .await
            .unwrap();
    }
}

/// The platform is set up once: a second first start returns `None` and
/// changes nothing (the `AlreadySetUp` precondition is not reachable
/// through `bootstrap`, which says so with `None`).
pub async fn second_bootstrap_changes_nothing(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let mut unchanged = Unchanged::new(&store, w.org.id.as_str()).await;
    let mut request = bootstrap_request("late@example.com");
    request.first_key = Some((
        "late key".to_owned(),
        digest(),
        "nx_late_ab".to_owned(),
        "wxyz".to_owned(),
    ));
    let late_digest = request.first_key.as_ref().unwrap().1;
    assert!(store.bootstrap(request).await.unwrap().is_none());
    unchanged.check(&store).await;
    assert_eq!(store.organization().await.unwrap().unwrap().id, w.org.id);
    assert!(store
        .user_by_email("late@example.com")
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.list_workspaces(&w.org.id).await.unwrap().len(), 1);
    assert!(store.key_for_auth(&late_digest).await.unwrap().is_none());
}

pub async fn key_quota_per_user_is_enforced(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let other = member(&store, &w, &w.ws, "other@example.com", Role::Member).await;
    let quotas = KeyQuotas {
        per_user: 2,
        per_workspace: 100,
    };
    let create = |user: &str| {
        let store = Arc::clone(&store);
        let key = new_key(&w.ws.id.as_str().into(), &user.into(), "k");
        async move { store.create_key(&Actor::system(), key, quotas).await }
    };
    let first = create(w.owner.id.as_str()).await.unwrap();
    create(w.owner.id.as_str()).await.unwrap();
    let mut unchanged = Unchanged::new(&store, w.org.id.as_str()).await;
    assert_eq!(
        precondition(create(w.owner.id.as_str()).await),
        Precondition::TooManyKeysForUser { limit: 2 }
    );
    unchanged.check(&store).await;
    assert_eq!(store.list_keys(&w.ws.id, None).await.unwrap().len(), 2);
    // Another user has their own allowance.
    create(other.id.as_str()).await.unwrap();
    // A revoked key no longer counts; a rotated one is replaced by its successor.
    store
        .revoke_key(&actor(&w.owner), &w.ws.id, &first.id)
        .await
        .unwrap();
    let third = create(w.owner.id.as_str()).await.unwrap();
    store
        .rotate_key(
            &actor(&w.owner),
            &w.ws.id,
            &third.id,
            new_key(&w.ws.id, &w.owner.id, "successor"),
            Some(OffsetDateTime::now_utc() + Duration::hours(1)),
        )
        .await
        .unwrap();
    assert_eq!(
        precondition(create(w.owner.id.as_str()).await),
        Precondition::TooManyKeysForUser { limit: 2 }
    );
    // An expired key does not count.
    let mut expired = new_key(&w.ws.id, &other.id, "expired");
    expired.expires_at = Some(OffsetDateTime::now_utc() - Duration::minutes(1));
    store
        .create_key(&Actor::system(), expired, quotas)
        .await
        .unwrap();
    create(other.id.as_str()).await.unwrap();
    assert_eq!(
        precondition(create(other.id.as_str()).await),
        Precondition::TooManyKeysForUser { limit: 2 }
    );
}

pub async fn key_quota_per_workspace_is_enforced(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let quotas = KeyQuotas {
        per_user: 100,
        per_workspace: 3,
    };
    let mut users = Vec::new();
    for i in 0..4 {
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
    let mut created = Vec::new();
    for user in &users[..3] {
        created.push(
            store
                .create_key(&Actor::system(), new_key(&w.ws.id, &user.id, "k"), quotas)
                .await
                .unwrap(),
        );
    }
    let mut unchanged = Unchanged::new(&store, w.org.id.as_str()).await;
    let result = store
        .create_key(
            &Actor::system(),
            new_key(&w.ws.id, &users[3].id, "k"),
            quotas,
        )
        .await;
    assert_eq!(
        precondition(result),
        Precondition::TooManyKeysInWorkspace { limit: 3 }
    );
    unchanged.check(&store).await;
    assert!(store
        .list_keys(&w.ws.id, Some(&users[3].id))
        .await
        .unwrap()
        .is_empty());
    // Another workspace has its own allowance.
    let ws2 = workspace(&store, &w, "second").await;
    store
        .create_key(&Actor::system(), new_key(&ws2.id, &w.owner.id, "k"), quotas)
        .await
        .unwrap();
    // Revoking one makes room for one.
    store
        .revoke_key(&actor(&w.owner), &w.ws.id, &created[0].id)
        .await
        .unwrap();
    store
        .create_key(
            &Actor::system(),
            new_key(&w.ws.id, &users[3].id, "k"),
            quotas,
        )
        .await
        .unwrap();
    assert_eq!(live_keys(&store, &w.ws.id.as_str().into()).await.len(), 3);
}

fn small(workflows: u64, versions: u64, bytes: u64) -> WorkflowQuotas {
    WorkflowQuotas {
        workflows_per_workspace: workflows,
        versions_per_workflow: versions,
        definition_bytes_per_workspace: bytes,
    }
}

pub async fn workflow_quota_is_enforced(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let quotas = small(2, 100, 1 << 20);
    let a = store
        .create_workflow(&actor(&w.owner), &w.ws.id, flow("a", "flow"), &quotas)
        .await
        .unwrap();
    store
        .create_workflow(&actor(&w.owner), &w.ws.id, flow("b", "flow"), &quotas)
        .await
        .unwrap();
    let mut unchanged = Unchanged::new(&store, w.org.id.as_str()).await;
    let result = store
        .create_workflow(&actor(&w.owner), &w.ws.id, flow("c", "flow"), &quotas)
        .await;
    assert!(
        matches!(
            result,
            Err(StoreError::QuotaExceeded {
                quota: Quota::WorkflowsPerWorkspace,
                limit: 2
            })
        ),
        "{result:?}"
    );
    unchanged.check(&store).await;
    assert_eq!(
        store.list_workflows(&w.ws.id, None, 0, 10).await.unwrap().1,
        2
    );
    // Deleting one makes room; another workspace has its own.
    store
        .delete_workflow(&actor(&w.owner), &w.ws.id, &a.id)
        .await
        .unwrap();
    store
        .create_workflow(&actor(&w.owner), &w.ws.id, flow("c", "flow"), &quotas)
        .await
        .unwrap();
    let ws2 = workspace(&store, &w, "second").await;
    store
        .create_workflow(&actor(&w.owner), &ws2.id, flow("x", "flow"), &quotas)
        .await
        .unwrap();
}

pub async fn version_quota_is_enforced(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let quotas = small(100, 2, 1 << 20);
    let wf = store
        .create_workflow(&actor(&w.owner), &w.ws.id, flow("a", "flow"), &quotas)
        .await
        .unwrap();
    let version = |store: Arc<dyn Store>, workflow_id: String| {
        let owner = actor(&w.owner);
        let ws = w.ws.id.clone();
        async move {
            store
                .create_workflow_version(
                    &owner,
                    &ws,
                    &workflow_id.as_str().into(),
                    "v",
                    None,
                    json!({"v": 1}),
                    &quotas,
                )
                .await
        }
    };
    version(Arc::clone(&store), wf.id.to_string())
        .await
        .unwrap();
    version(Arc::clone(&store), wf.id.to_string())
        .await
        .unwrap();
    let mut unchanged = Unchanged::new(&store, w.org.id.as_str()).await;
    let result = version(Arc::clone(&store), wf.id.to_string()).await;
    assert!(
        matches!(
            result,
            Err(StoreError::QuotaExceeded {
                quota: Quota::VersionsPerWorkflow,
                limit: 2
            })
        ),
        "{result:?}"
    );
    unchanged.check(&store).await;
    let slice = noxus_server::store::VersionSlice {
        offset: 0,
        limit: 10,
        definitions: false,
    };
    assert_eq!(
        store
            .list_workflow_versions(&w.ws.id, &wf.id, slice)
            .await
            .unwrap()
            .1,
        2
    );
    // The quota is per workflow.
    let other = store
        .create_workflow(&actor(&w.owner), &w.ws.id, flow("b", "flow"), &quotas)
        .await
        .unwrap();
    version(Arc::clone(&store), other.id.to_string())
        .await
        .unwrap();
}

/// Definitions of workflows and versions count together; growing past the
/// limit is refused (create or update), shrinking always allowed.
pub async fn definition_bytes_quota_is_enforced(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let blob = |n: usize| json!({"d": "x".repeat(n)});
    let len = |n: usize| blob(n).to_string().len() as u64;
    // Room for exactly 300 bytes of payload plus two envelopes.
    let limit = len(200) + len(100);
    let quotas = small(100, 100, limit);
    let mut fields = flow("a", "flow");
    fields.definition = blob(200);
    let wf = store
        .create_workflow(&actor(&w.owner), &w.ws.id, fields.clone(), &quotas)
        .await
        .unwrap();
    let mut unchanged = Unchanged::new(&store, w.org.id.as_str()).await;
    let mut too_big = flow("b", "flow");
    too_big.definition = blob(101);
    let result = store
        .create_workflow(&actor(&w.owner), &w.ws.id, too_big, &quotas)
        .await;
    let refused = |result: Result<_, StoreError>| {
        assert!(
            matches!(
                result,
                Err(StoreError::QuotaExceeded {
                    quota: Quota::DefinitionBytesPerWorkspace,
                    limit: l
                }) if l == limit
            ),
            "{result:?}"
        );
    };
    refused(result.map(|_| ()));
    let result = store
        .create_workflow_version(
            &actor(&w.owner),
            &w.ws.id,
            &wf.id,
            "v",
            None,
            blob(101),
            &quotas,
        )
        .await;
    refused(result.map(|_| ()));
    let mut grown = fields.clone();
    grown.definition = blob(309);
    let result = store
        .update_workflow(&actor(&w.owner), &w.ws.id, &wf.id, grown, &quotas)
        .await;
    refused(result.map(|_| ()));
    unchanged.check(&store).await;
    assert_eq!(
        store.list_workflows(&w.ws.id, None, 0, 10).await.unwrap().1,
        1
    );
    let stored = store.workflow(&w.ws.id, &wf.id).await.unwrap().unwrap();
    assert_eq!(stored.definition.get().len() as u64, len(200));

    // Exactly at the limit is allowed.
    let v = store
        .create_workflow_version(
            &actor(&w.owner),
            &w.ws.id,
            &wf.id,
            "v",
            None,
            blob(100),
            &quotas,
        )
        .await
        .unwrap();
    // Full: a version may not grow, but may shrink; then the room is there again.
    let result = store
        .update_workflow_version(
            &actor(&w.owner),
            &w.ws.id,
            &wf.id,
            &v.id,
            "v",
            None,
            blob(101),
            &quotas,
        )
        .await;
    refused(result.map(|_| ()));
    store
        .update_workflow_version(
            &actor(&w.owner),
            &w.ws.id,
            &wf.id,
            &v.id,
            "v",
            None,
            blob(50),
            &quotas,
        )
        .await
        .unwrap();
    let mut shrunk = fields;
    shrunk.definition = blob(250);
    store
        .update_workflow(&actor(&w.owner), &w.ws.id, &wf.id, shrunk, &quotas)
        .await
        .unwrap();
    // Deleting the workflow frees its bytes and its versions' bytes.
    store
        .delete_workflow(&actor(&w.owner), &w.ws.id, &wf.id)
        .await
        .unwrap();
    let mut full = flow("c", "flow");
    full.definition = json!({"d": "x".repeat(200), "e": "y".repeat(80)});
    assert!(full.definition.to_string().len() as u64 <= limit);
    store
        .create_workflow(&actor(&w.owner), &w.ws.id, full, &quotas)
        .await
        .unwrap();
}

pub(crate) fn session_of(
    user_id: &str,
    digest: &str,
    lifetime: Duration,
) -> noxus_server::store::SessionRecord {
    let now = OffsetDateTime::now_utc().replace_millisecond(0).unwrap();
    noxus_server::store::SessionRecord {
        token_digest: digest.to_owned(),
        user_id: user_id.to_owned().into(),
        csrf_token: format!("csrf-{digest}"),
        created_at: now,
        expires_at: now + lifetime,
        last_seen_at: now,
        reauth_at: None,
    }
}

/// Revoking twice keeps the first time, writes one audit row and publishes one event.
pub async fn revoke_is_idempotent(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let k = key(&store, &w.ws.id, &w.owner.id, "k").await;
    let mut audit = AuditWatch::new(&store, w.org.id.as_str()).await;
    let mut events = EventWatch::new(&store);
    let first = store
        .revoke_key(&actor(&w.owner), &w.ws.id, &k.id)
        .await
        .unwrap();
    assert!(first.revoked_at.is_some());
    assert_eq!(
        first.revoked_reason,
        Some(noxus_server::store::RevokedReason::Revoked)
    );
    assert_eq!(audit.actions(&store).await, ["api_key.revoke"]);
    assert_eq!(
        events.take(&store).await,
        [key_changed(&k.id.as_str().into())]
    );
    let stored = store.key(&w.ws.id, &k.id).await.unwrap().unwrap();

    let second = store
        .revoke_key(&actor(&w.owner), &w.ws.id, &k.id)
        .await
        .unwrap();
    assert_eq!(second.revoked_at, stored.revoked_at);
    assert_eq!(second.revoked_reason, stored.revoked_reason);
    assert_eq!(audit.actions(&store).await, Vec::<String>::new());
    assert_eq!(events.take(&store).await, []);
    assert_eq!(
        store
            .key(&w.ws.id, &k.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        stored.revoked_at
    );
    // A key revoked with its owner's removal is not re-revoked either.
    let m = member(&store, &w, &w.ws, "m@example.com", Role::Member).await;
    let mk = key(&store, &w.ws.id, &m.id, "m").await;
    store
        .remove_membership(&actor(&w.owner), &w.ws.id, &m.id)
        .await
        .unwrap();
    audit.take(&store).await;
    events.take(&store).await;
    let again = store
        .revoke_key(&actor(&w.owner), &w.ws.id, &mk.id)
        .await
        .unwrap();
    assert_eq!(
        again.revoked_reason,
        Some(noxus_server::store::RevokedReason::OwnerRemoved)
    );
    assert_eq!(audit.actions(&store).await, Vec::<String>::new());
    assert_eq!(events.take(&store).await, []);
}
