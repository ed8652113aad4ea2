//! What both backends share that needs no database: times as Unix
//! milliseconds, new ids, the conflict of a unique violation, roles and
//! restrictions as text, audit details of a key, the definition-bytes quota.

use std::str::FromStr;

use noxus_api::{Permission, Role};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::*;

pub(super) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

pub(super) fn to_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub(super) fn from_ms(ms: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| StoreError::Corrupt(format!("timestamp {ms}: {e}")))
}

pub(super) fn opt_from_ms(ms: Option<i64>) -> StoreResult<Option<OffsetDateTime>> {
    ms.map(from_ms).transpose()
}

/// A fresh id of whichever kind is wanted.
pub(super) fn new_id<T: From<String>>() -> T {
    T::from(Uuid::new_v4().to_string())
}

/// Maps a unique violation to [`StoreError::Conflict`] (each statement this
/// is used on has exactly one such constraint besides its random primary key).
pub(super) fn on_unique(kind: ConflictKind) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |err| match &err {
        sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation => {
            StoreError::Conflict(kind)
        }
        _ => StoreError::Database(err),
    }
}

pub(super) fn parse_role(s: &str) -> StoreResult<Role> {
    Role::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn restriction_to_text(r: &Option<Vec<Permission>>) -> Option<String> {
    r.as_ref()
        .map(|perms| serde_json::to_string(perms).unwrap_or_else(|_| "[]".to_owned()))
}

/// A validated definition as JSON text, for storing and for the record.
pub(super) fn raw_json(value: &Value) -> StoreResult<Box<RawValue>> {
    serde_json::value::to_raw_value(value)
        .map_err(|e| StoreError::Corrupt(format!("definition: {e}")))
}

pub(super) fn key_audit_details(key: &KeyRecord) -> Value {
    json!({
        "name": key.name,
        "prefix": key.prefix,
        "owner_user_id": key.user_id,
        "tenant_admin": key.tenant_admin,
        "restriction": key.restriction,
    })
}

/// Refuses a write that grows the workspace's definitions from
/// `stored` bytes by `old_len` → `new_len` past the quota. Shrinking (or
/// keeping the size) is always allowed, so that a full workspace can be
/// cleaned up.
pub(super) fn check_definition_bytes(
    stored: u64,
    old_len: u64,
    new_len: u64,
    quotas: &WorkflowQuotas,
) -> StoreResult<()> {
    let limit = quotas.definition_bytes_per_workspace;
    if new_len > old_len && stored.saturating_sub(old_len).saturating_add(new_len) > limit {
        return Err(StoreError::QuotaExceeded {
            quota: Quota::DefinitionBytesPerWorkspace,
            limit,
        });
    }
    Ok(())
}

/// A write about a run that does not exist (a foreign-key violation) is
/// [`StoreError::NotFound`].
pub(super) fn on_missing_run(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation => {
            StoreError::NotFound
        }
        _ => StoreError::Database(err),
    }
}
