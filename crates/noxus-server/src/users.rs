//! People leave: deactivating and reactivating users, making and unmaking
//! organization admins. Everything goes through here (the dashboard and the
//! admin API alike) so that the verified-key cache forgets the user's keys
//! at once: a deactivated user's keys are refused from the very next
//! request, a demoted organization admin's tenant-admin keys lose their
//! organization permissions on theirs.

use crate::state::AppState;
use crate::store::{Actor, StoreResult, UserRecord};
use crate::store::{KeyId, OrganizationId, UserId};

/// Deactivates (`active = false`) or reactivates a user of `organization_id`.
/// Deactivation revokes every live key of theirs and ends their sessions
/// (in one transaction); the last active organization admin stays.
/// Reactivation lets them log in again; their keys stay revoked.
pub async fn set_active(
    state: &AppState,
    actor: &Actor,
    organization_id: &OrganizationId,
    user_id: &UserId,
    active: bool,
) -> StoreResult<(UserRecord, Vec<KeyId>)> {
    let (user, revoked) = state
        .store()
        .set_user_active(actor, organization_id, user_id, active)
        .await?;
    tracing::info!(
        user_id = %user_id,
        active,
        revoked_keys = revoked.len(),
        "user activity changed"
    );
    Ok((user, revoked))
}

/// Makes or unmakes an organization admin; the last active one stays.
pub async fn set_org_admin(
    state: &AppState,
    actor: &Actor,
    organization_id: &OrganizationId,
    user_id: &UserId,
    is_org_admin: bool,
) -> StoreResult<UserRecord> {
    state
        .store()
        .set_org_admin(actor, organization_id, user_id, is_org_admin)
        .await
}
