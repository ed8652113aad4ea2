//! Issuing, revoking and rotating keys: the rules shared by the API and the
//! dashboard. Each change invalidates the verified-key cache after it is
//! committed, so the very next request sees it.

use noxus_api::Permission;
use secrecy::SecretString;
use time::{Duration, OffsetDateTime};

use crate::state::AppState;
use crate::store::{Actor, KeyRecord, NewKey, StoreError};

/// Longest grace period of a rotation: 7 days.
pub const MAX_GRACE_SECONDS: u64 = 7 * 24 * 3600;

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// Works.
    Active,
    /// Rotated, still working during its grace period.
    Expiring,
    /// Past its expiry (or its grace period).
    Expired,
    /// Revoked.
    Revoked,
}

impl KeyStatus {
    /// Of a key, now.
    pub fn of(key: &KeyRecord, now: OffsetDateTime) -> Self {
        if key.revoked_at.is_some() {
            Self::Revoked
        } else if key.expires_at.is_some_and(|at| at <= now) {
            Self::Expired
        } else if key.replaced_by.is_some() {
            Self::Expiring
        } else {
            Self::Active
        }
    }

    /// `active`, `expiring`, `expired` or `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expiring => "expiring",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

/// A key to issue.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// Workspace.
    pub workspace_id: String,
    /// Owner.
    pub user_id: String,
    /// Name (validated by the caller).
    pub name: String,
    /// Tenant-admin key.
    pub tenant_admin: bool,
    /// Restriction.
    pub restriction: Option<Vec<Permission>>,
    /// Expiry.
    pub expires_at: Option<OffsetDateTime>,
    /// Own rate limit, overriding the workspace's default.
    pub rate_limit: Option<crate::rate_limit::RateLimit>,
}

/// Issues a key: stores its digest, returns the record and the secret (to
/// be shown once).
pub async fn issue(
    state: &AppState,
    actor: &Actor,
    request: IssueRequest,
) -> Result<(KeyRecord, SecretString), StoreError> {
    let issued = state.hasher().issue();
    let record = state
        .store()
        .create_key(
            actor,
            NewKey {
                workspace_id: request.workspace_id,
                user_id: request.user_id,
                name: request.name,
                digest: issued.digest,
                prefix: issued.prefix,
                suffix: issued.suffix,
                tenant_admin: request.tenant_admin,
                restriction: request.restriction,
                expires_at: request.expires_at,
                rate_limit: request.rate_limit,
            },
        )
        .await?;
    tracing::info!(key_id = %record.id, prefix = %record.prefix, workspace_id = %record.workspace_id, "api key created");
    Ok((record, issued.secret))
}

/// Revokes a key at once (idempotent).
pub async fn revoke(
    state: &AppState,
    actor: &Actor,
    workspace_id: &str,
    key_id: &str,
) -> Result<KeyRecord, StoreError> {
    let revoked = state
        .store()
        .revoke_key(actor, workspace_id, key_id)
        .await?;
    state.cache().invalidate_key(&revoked.id);
    tracing::info!(key_id = %revoked.id, prefix = %revoked.prefix, "api key revoked");
    Ok(revoked)
}

/// Why a rotation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// More than 7 days.
    #[error("the grace period is at most {MAX_GRACE_SECONDS} seconds (7 days)")]
    GraceTooLong,
    /// Revoked keys stay dead.
    #[error("a revoked key cannot be rotated; create a new key")]
    Revoked,
    /// Expired keys stay dead.
    #[error("an expired key cannot be rotated; create a new key")]
    Expired,
    /// Already rotated: rotate the successor.
    #[error("this key was already rotated; rotate its replacement instead")]
    AlreadyRotated,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The outcome of a rotation.
#[derive(Debug)]
pub struct Rotated {
    /// The old key, now expiring (or revoked when the grace was 0).
    pub old: KeyRecord,
    /// The new key.
    pub new: KeyRecord,
    /// The new key's secret, to be shown once.
    pub secret: SecretString,
    /// Until when the old key works.
    pub old_valid_until: OffsetDateTime,
}

/// Replaces `old` by a new key with the same name, owner, restriction,
/// tenant-admin flag and lifetime; the old one keeps working for
/// `grace_seconds` (0 revokes it now).
pub async fn rotate(
    state: &AppState,
    actor: &Actor,
    old: &KeyRecord,
    grace_seconds: u64,
) -> Result<Rotated, RotateError> {
    if grace_seconds > MAX_GRACE_SECONDS {
        return Err(RotateError::GraceTooLong);
    }
    let now = OffsetDateTime::now_utc();
    match KeyStatus::of(old, now) {
        KeyStatus::Revoked => return Err(RotateError::Revoked),
        KeyStatus::Expired => return Err(RotateError::Expired),
        KeyStatus::Expiring => return Err(RotateError::AlreadyRotated),
        KeyStatus::Active => {}
    }
    let lifetime = old.expires_at.map(|at| at - old.created_at);
    let issued = state.hasher().issue();
    let grace = Duration::seconds(i64::try_from(grace_seconds).unwrap_or(0));
    let valid_until = (grace_seconds > 0).then_some(now + grace);
    let (old, new) = state
        .store()
        .rotate_key(
            actor,
            &old.workspace_id,
            &old.id,
            NewKey {
                workspace_id: old.workspace_id.clone(),
                user_id: old.user_id.clone(),
                name: old.name.clone(),
                digest: issued.digest,
                prefix: issued.prefix,
                suffix: issued.suffix,
                tenant_admin: old.tenant_admin,
                restriction: old.restriction.clone(),
                expires_at: lifetime.map(|l| now + l),
                rate_limit: old.rate_limit,
            },
            valid_until,
        )
        .await?;
    state.cache().invalidate_key(&old.id);
    tracing::info!(old_key_id = %old.id, new_key_id = %new.id, prefix = %new.prefix, "api key rotated");
    let old_valid_until = old.revoked_at.or(old.expires_at).unwrap_or(now);
    Ok(Rotated {
        old,
        new,
        secret: issued.secret,
        old_valid_until,
    })
}
