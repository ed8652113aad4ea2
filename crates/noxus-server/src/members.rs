//! Changing who belongs to a workspace and with which role. These go
//! through here (not the store directly) so that the verified-key cache
//! forgets the user's keys at once: a demotion or removal applies to the
//! very next request.

use noxus_api::Role;

use crate::state::AppState;
use crate::store::{Actor, StoreResult};

/// Grants `role` to `user_id` in `workspace_id` (adding or changing).
pub async fn set_role(
    state: &AppState,
    actor: &Actor,
    workspace_id: &str,
    user_id: &str,
    role: Role,
) -> StoreResult<()> {
    state
        .store()
        .set_membership(actor, workspace_id, user_id, role)
        .await?;
    state.cache().invalidate_user(user_id);
    Ok(())
}

/// Removes `user_id` from `workspace_id`; their keys there stop working.
pub async fn remove(
    state: &AppState,
    actor: &Actor,
    workspace_id: &str,
    user_id: &str,
) -> StoreResult<()> {
    state
        .store()
        .remove_membership(actor, workspace_id, user_id)
        .await?;
    state.cache().invalidate_user(user_id);
    Ok(())
}
