//! Changing who belongs to a workspace and with which role. Everything
//! goes through here (not the store directly) so that the rules hold
//! wherever the change comes from — only owners make or unmake owners; the
//! last owner stays (checked by the store inside the write, so two owners
//! demoting each other at once cannot both succeed) — and so that the
//! verified-key cache forgets the user's keys at once: a demotion or
//! removal applies to the very next request. A removal also revokes the
//! member's keys in that workspace for good.

use noxus_api::{Permission, Role};

use crate::state::AppState;
use crate::store::{Actor, Precondition, StoreError, StoreResult};
use crate::store::{UserId, WorkspaceId};

/// Why a membership change was refused.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// The acting user's role does not allow it.
    #[error("{0}")]
    NotAllowed(String),
    /// It would leave the workspace without an owner.
    #[error("a workspace keeps at least one owner: make someone else owner first")]
    LastOwner,
    /// No such user in the organization, or not a member.
    #[error("{0}")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for MemberError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Precondition(Precondition::LastOwner) => Self::LastOwner,
            other => Self::Store(other),
        }
    }
}

/// Grants `role` to `user_id` in `workspace_id` (adding or changing),
/// without the actor's rule checks (the last owner still stays).
pub async fn set_role(
    state: &AppState,
    actor: &Actor,
    workspace_id: &WorkspaceId,
    user_id: &UserId,
    role: Role,
) -> StoreResult<()> {
    state
        .store()
        .set_membership(actor, workspace_id, user_id, role)
        .await
        .map(|_| ())
}

/// Removes `user_id` from `workspace_id`, without the actor's rule checks;
/// their keys there are revoked for good.
pub async fn remove(
    state: &AppState,
    actor: &Actor,
    workspace_id: &WorkspaceId,
    user_id: &UserId,
) -> StoreResult<()> {
    state
        .store()
        .remove_membership(actor, workspace_id, user_id)
        .await
        .map(|_| ())
}

fn require_members_write(actor_role: Role) -> Result<(), MemberError> {
    if actor_role.grants(Permission::MembersWrite) {
        Ok(())
    } else {
        Err(MemberError::NotAllowed(format!(
            "your role ({actor_role}) cannot change members; an admin or owner can"
        )))
    }
}

/// Adds (or re-roles) a user, acting with `actor_role` in the workspace.
pub async fn add_checked(
    state: &AppState,
    actor: &Actor,
    actor_role: Role,
    workspace_id: &WorkspaceId,
    user_id: &UserId,
    role: Role,
) -> Result<(), MemberError> {
    change_checked(state, actor, actor_role, workspace_id, user_id, role).await
}

/// Changes a member's role, acting with `actor_role`.
pub async fn change_checked(
    state: &AppState,
    actor: &Actor,
    actor_role: Role,
    workspace_id: &WorkspaceId,
    user_id: &UserId,
    role: Role,
) -> Result<(), MemberError> {
    require_members_write(actor_role)?;
    let current = state.store().membership(workspace_id, user_id).await?;
    let touches_owner = role == Role::Owner || current == Some(Role::Owner);
    if touches_owner && actor_role != Role::Owner {
        return Err(MemberError::NotAllowed(
            "only an owner can make someone owner or change an owner's role".to_owned(),
        ));
    }
    set_role(state, actor, workspace_id, user_id, role).await?;
    Ok(())
}

/// Removes a member, acting with `actor_role`.
pub async fn remove_checked(
    state: &AppState,
    actor: &Actor,
    actor_role: Role,
    workspace_id: &WorkspaceId,
    user_id: &UserId,
) -> Result<(), MemberError> {
    require_members_write(actor_role)?;
    let current = state
        .store()
        .membership(workspace_id, user_id)
        .await?
        .ok_or_else(|| {
            MemberError::NotFound("that user is not a member of this workspace".to_owned())
        })?;
    if current == Role::Owner && actor_role != Role::Owner {
        return Err(MemberError::NotAllowed(
            "only an owner can remove an owner".to_owned(),
        ));
    }
    remove(state, actor, workspace_id, user_id).await?;
    Ok(())
}
