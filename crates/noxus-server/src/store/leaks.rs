//! [`KeyLeakStore`]: keys revoked because someone reported them leaked
//! (`POST /v1/keys/leaks`), and where they were found, for the banner of
//! the workspace's API Keys page and its usage flag.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::common::*;
use super::{Actor, CallbackId, KeyId, KeyRecord, StoreError, StoreResult, WorkspaceId};
use crate::domain::keys::KeyDigest;

/// Where a reporter says a key was found. Untrusted text, bounded by the
/// API (`noxus_api::limits`): stored and shown as text, never fetched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeakLocation {
    /// E.g. the URL of a commit.
    pub url: Option<String>,
    /// What found it, e.g. `github`.
    pub source: Option<String>,
}

/// A key revoked because it was reported leaked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLeakRecord {
    /// The key.
    pub key_id: KeyId,
    /// Its workspace.
    pub workspace_id: WorkspaceId,
    /// Where it was found, as reported.
    pub location: LeakLocation,
    /// When the report revoked it.
    pub reported_at: OffsetDateTime,
    /// When someone of the workspace dismissed the warning, if they did.
    pub dismissed_at: Option<OffsetDateTime>,
}

/// What [`KeyLeakStore::key_leaks`] reads.
#[derive(Debug, Clone)]
pub struct LeakQuery {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// Reports made at or after this time.
    pub since: OffsetDateTime,
    /// Dismissed reports too (the usage flags show them; the banner does not).
    pub include_dismissed: bool,
    /// At most this many.
    pub limit: u32,
}

/// Keys revoked because they were reported leaked.
#[async_trait]
pub trait KeyLeakStore: Send + Sync {
    /// Revokes the key whose digest is `digest` if it still works (not
    /// revoked, not expired; a rotated key in its grace period works, so it
    /// is revoked too) for [`super::RevokedReason::Leaked`], and records
    /// where it was found, with the audit row (`api_key.revoke`, details
    /// `reason: "reported_leaked"`, `leak_url`, `leak_source`), and, when
    /// the key's workspace has a security webhook, queues the
    /// [`super::KEY_REPORTED_LEAKED_EVENT`] event for it
    /// ([`leaked_key_event`]), in one transaction that publishes
    /// `KeyChanged`. Returns the key as revoked;
    /// `None`, changing nothing, when no working key has this digest.
    async fn revoke_leaked_key(
        &self,
        actor: &Actor,
        digest: &KeyDigest,
        location: &LeakLocation,
    ) -> StoreResult<Option<KeyRecord>>;

    /// The leak reports of a workspace's keys, newest first (then by key
    /// id), at most `query.limit`.
    async fn key_leaks(&self, query: &LeakQuery) -> StoreResult<Vec<KeyLeakRecord>>;

    /// Dismisses the warning about key `key_id` of the workspace (the
    /// banner goes; the report, the revocation and the usage flag stay),
    /// with an audit row (`api_key.leak_dismiss`). Dismissing twice changes
    /// nothing the second time; a key without a leak report in this
    /// workspace is [`StoreError::NotFound`].
    async fn dismiss_key_leak(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        key_id: &KeyId,
    ) -> StoreResult<()>;
}

/// The columns of [`KeyLeakRow`].
pub(super) const LEAK_COLUMNS: &str =
    "key_id, workspace_id, url, source, reported_at, dismissed_at";

/// A row of `key_leaks`.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct KeyLeakRow {
    key_id: KeyId,
    workspace_id: WorkspaceId,
    url: Option<String>,
    source: Option<String>,
    reported_at: i64,
    dismissed_at: Option<i64>,
}

impl TryFrom<KeyLeakRow> for KeyLeakRecord {
    type Error = StoreError;
    fn try_from(row: KeyLeakRow) -> StoreResult<Self> {
        Ok(Self {
            key_id: row.key_id,
            workspace_id: row.workspace_id,
            location: LeakLocation {
                url: row.url,
                source: row.source,
            },
            reported_at: from_ms(row.reported_at)?,
            dismissed_at: opt_from_ms(row.dismissed_at)?,
        })
    }
}

/// The audit details of a key revoked as leaked.
pub(super) fn leak_audit_details(key: &KeyRecord, location: &LeakLocation) -> serde_json::Value {
    let mut details = key_audit_details(key);
    details["reason"] = serde_json::json!("reported_leaked");
    details["leak_url"] = serde_json::json!(location.url);
    details["leak_source"] = serde_json::json!(location.source);
    details
}

/// The body of the security event about `key`, just revoked at
/// `revoked_at` as reported found at `location`: a Stripe-style event
/// (`type`, `id` = the delivery's id, `created_at`, `data`) that names the
/// key by id, name and display fragment, never by its secret.
pub fn leaked_key_event(
    id: &CallbackId,
    key: &KeyRecord,
    location: &LeakLocation,
    revoked_at: OffsetDateTime,
) -> String {
    let at = crate::time_fmt::rfc3339(revoked_at);
    serde_json::json!({
        "type": super::KEY_REPORTED_LEAKED_EVENT,
        "id": id,
        "created_at": at,
        "data": {
            "workspace_id": key.workspace_id,
            "key_id": key.id,
            "key_name": key.name,
            "fragment": noxus_api::key_format::masked(&key.prefix, &key.suffix),
            "found_at": location.url,
            "source": location.source,
            "revoked_at": at,
        },
    })
    .to_string()
}
