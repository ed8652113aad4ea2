//! Small builders shared by the checks: a set-up organization, users,
//! keys, and watchers of the audit log and the event bus.

use std::sync::Arc;

use noxus_api::Role;
use noxus_server::domain::keys::KeyDigest;
use noxus_server::store::prelude::*;
use noxus_server::store::{
    Actor, AuditQuery, AuditRecord, BootstrapRequest, EventSubscription, KeyQuotas, KeyRecord,
    NewKey, NewUser, Organization, StoreEvent, UserRecord, WorkflowFields, WorkflowQuotas,
    WorkspaceRecord,
};
use noxus_server::store::{KeyId, OrganizationId, UserId, WorkspaceId};
use serde_json::json;

/// A set-up platform: its organization, its first owner (an organization
/// admin) and first workspace.
#[derive(Debug, Clone)]
pub struct World {
    pub org: Organization,
    pub owner: UserRecord,
    pub ws: WorkspaceRecord,
}

pub fn bootstrap_request(email: &str) -> BootstrapRequest {
    BootstrapRequest {
        organization_name: "Acme".to_owned(),
        admin_email: email.to_owned(),
        admin_name: "Owner".to_owned(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        workspace_name: "Default".to_owned(),
        first_key: None,
    }
}

/// Sets a fresh store up (no first key).
pub async fn world(store: &Arc<dyn Store>) -> World {
    let outcome = store
        .bootstrap(bootstrap_request("owner@example.com"))
        .await
        .expect("bootstrap")
        .expect("a fresh store is not set up yet");
    World {
        org: outcome.organization,
        owner: outcome.user,
        ws: outcome.workspace,
    }
}

pub fn actor(user: &UserRecord) -> Actor {
    Actor {
        user_id: Some(user.id.clone()),
        key_id: None,
        client_addr: Some("192.0.2.1".to_owned()),
    }
}

pub async fn user(store: &Arc<dyn Store>, org: &Organization, email: &str) -> UserRecord {
    store
        .create_user(
            &Actor::system(),
            NewUser {
                organization_id: org.id.clone(),
                email: email.to_owned(),
                name: email.split('@').next().unwrap_or(email).to_owned(),
                password_hash: "hash".to_owned(),
                is_org_admin: false,
                must_change_password: false,
            },
        )
        .await
        .expect("create user")
}

/// A user who is a member of `ws` with `role`.
pub async fn member(
    store: &Arc<dyn Store>,
    world: &World,
    ws: &WorkspaceRecord,
    email: &str,
    role: Role,
) -> UserRecord {
    let user = user(store, &world.org, email).await;
    store
        .set_membership(&Actor::system(), &ws.id, &user.id, role)
        .await
        .expect("set membership");
    user
}

pub async fn workspace(store: &Arc<dyn Store>, world: &World, name: &str) -> WorkspaceRecord {
    store
        .create_workspace(&Actor::system(), &world.org.id, name, None, &world.owner.id)
        .await
        .expect("create workspace")
}

/// A random digest (keys are unique by digest).
pub fn digest() -> KeyDigest {
    let hex = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    KeyDigest::from_hex(&hex).expect("64 hex digits")
}

pub fn new_key(ws_id: &WorkspaceId, user_id: &UserId, name: &str) -> NewKey {
    NewKey {
        workspace_id: ws_id.clone(),
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

pub async fn key(
    store: &Arc<dyn Store>,
    ws_id: &WorkspaceId,
    user_id: &UserId,
    name: &str,
) -> KeyRecord {
    store
        .create_key(
            &Actor::system(),
            new_key(ws_id, user_id, name),
            KeyQuotas::default(),
        )
        .await
        .expect("create key")
}

pub fn quotas() -> WorkflowQuotas {
    WorkflowQuotas {
        workflows_per_workspace: 100,
        versions_per_workflow: 100,
        definition_bytes_per_workspace: 1 << 20,
    }
}

pub fn flow(name: &str, kind: &str) -> WorkflowFields {
    WorkflowFields {
        name: name.to_owned(),
        kind: kind.to_owned(),
        definition: json!({"nodes": [{"id": name}], "edges": []}),
        error_handler: None,
    }
}

/// Every audit row of an organization, newest first.
pub async fn audit_rows(store: &Arc<dyn Store>, org_id: &OrganizationId) -> Vec<AuditRecord> {
    store
        .search_audit(&AuditQuery {
            organization_id: org_id.clone(),
            workspace_id: None,
            action_prefix: None,
            before_id: None,
            limit: 100_000,
        })
        .await
        .expect("search audit")
}

/// Counts audit rows from now on.
#[derive(Debug)]
pub struct AuditWatch {
    org_id: String,
    last_id: i64,
}

impl AuditWatch {
    pub async fn new(store: &Arc<dyn Store>, org_id: &str) -> Self {
        let last_id = audit_rows(store, &org_id.into())
            .await
            .first()
            .map_or(0, |row| row.id);
        Self {
            org_id: org_id.to_owned(),
            last_id,
        }
    }

    /// The rows written since the last call, oldest first.
    pub async fn take(&mut self, store: &Arc<dyn Store>) -> Vec<AuditRecord> {
        let mut rows: Vec<_> = audit_rows(store, &self.org_id.as_str().into())
            .await
            .into_iter()
            .filter(|row| row.id > self.last_id)
            .collect();
        rows.reverse();
        if let Some(last) = rows.last() {
            self.last_id = last.id;
        }
        rows
    }

    /// The actions of the rows written since the last call, oldest first.
    pub async fn actions(&mut self, store: &Arc<dyn Store>) -> Vec<String> {
        self.take(store)
            .await
            .into_iter()
            .map(|row| row.action)
            .collect()
    }
}

/// Follows the event bus from now on: both the published counter and a
/// subscription, which must agree.
#[derive(Debug)]
pub struct EventWatch {
    subscription: EventSubscription,
    seen: u64,
}

impl EventWatch {
    pub fn new(store: &Arc<dyn Store>) -> Self {
        let subscription = store.subscribe();
        Self {
            subscription,
            seen: store.events().published(),
        }
    }

    /// The events published since the last call, as counted by
    /// `events().published()` at the moment of the call (so a change must be
    /// published before its store call returned), each received by the
    /// subscription with consecutive numbers; sorted, since no order among
    /// one call's events is promised.
    pub async fn take(&mut self, store: &Arc<dyn Store>) -> Vec<StoreEvent> {
        let published = store.events().published();
        let mut events = Vec::new();
        while self.seen < published {
            let (seq, event) = self
                .subscription
                .next()
                .await
                .expect("the bus lives as long as the store");
            assert_eq!(seq, self.seen + 1, "events arrive numbered in order");
            self.seen = seq;
            events.push(event);
        }
        events.sort_by_key(StoreEvent::encode);
        events
    }
}

pub fn sorted(mut events: Vec<StoreEvent>) -> Vec<StoreEvent> {
    events.sort_by_key(StoreEvent::encode);
    events
}

pub fn key_changed(id: &KeyId) -> StoreEvent {
    StoreEvent::KeyChanged(id.clone())
}

pub fn user_changed(id: &UserId) -> StoreEvent {
    StoreEvent::UserChanged(id.clone())
}

pub fn workspace_changed(id: &WorkspaceId) -> StoreEvent {
    StoreEvent::WorkspaceChanged(id.clone())
}

/// Ids of keys, in the order given.
pub fn ids(keys: &[KeyRecord]) -> Vec<KeyId> {
    keys.iter().map(|k| k.id.clone()).collect()
}

/// The live (usable) keys of a workspace.
pub async fn live_keys(store: &Arc<dyn Store>, ws_id: &WorkspaceId) -> Vec<KeyRecord> {
    let now = time::OffsetDateTime::now_utc();
    store
        .list_keys(ws_id, None)
        .await
        .expect("list keys")
        .into_iter()
        .filter(|k| {
            k.revoked_at.is_none()
                && k.replaced_by.is_none()
                && k.expires_at.is_none_or(|e| e > now)
        })
        .collect()
}
