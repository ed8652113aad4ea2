//! Changing who belongs to a workspace and with which role. Everything
//! goes through here (not the store directly) so that the rules hold
//! wherever the change comes from — only owners make or unmake owners; the
//! last owner stays (checked by the store inside the write, so two owners
//! demoting each other at once cannot both succeed) — and so that the
//! verified-key cache forgets the user's keys at once: a demotion or
//! removal applies to the very next request. A removal also revokes the
//! member's keys in that workspace for good. Inviting a person who has no
//! account yet creates it here too, under the same rules.

use noxus_api::{Permission, Role};
use rand::rngs::OsRng;
use rand::Rng;
use secrecy::SecretString;

use crate::state::AppState;
use crate::store::{Actor, NewUser, Precondition, StoreError, StoreResult, UserRecord};
use crate::store::{UserId, WorkspaceId};

/// Why a membership change was refused.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// The acting user's role does not allow it.
    #[error("{0}")]
    NotAllowed(String),
    /// It would leave the workspace without an owner.
    #[error("A workspace keeps at least one owner: make someone else owner first.")]
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
            "As {} of this workspace you cannot add or remove members or change their roles; ask an owner or admin of this workspace.",
            crate::web::layout::role_with_article(actor_role)
        )))
    }
}

/// Whether `actor_role` may give `role` to someone whose role is now
/// `current`: only owners make owners or change an owner's role.
pub fn may_grant(actor_role: Role, role: Role, current: Option<Role>) -> Result<(), MemberError> {
    require_members_write(actor_role)?;
    let touches_owner = role == Role::Owner || current == Some(Role::Owner);
    if touches_owner && actor_role != Role::Owner {
        return Err(MemberError::NotAllowed(
            "Only an owner can make someone owner or change an owner's role.".to_owned(),
        ));
    }
    Ok(())
}

/// Letters and digits that cannot be mistaken for one another when read
/// aloud or copied by hand (no 0/o, 1/l/i).
const PASSWORD_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// A one-time initial password for an invited person: four groups of five
/// characters from 31 letters and digits that cannot be misread
/// (`PASSWORD_ALPHABET`; about 99 bits), from the operating system's
/// generator. They must replace it at first login.
pub fn initial_password() -> SecretString {
    let mut out = String::with_capacity(23);
    for group in 0..4 {
        if group > 0 {
            out.push('-');
        }
        for _ in 0..5 {
            let i = OsRng.gen_range(0..PASSWORD_ALPHABET.len());
            out.push(char::from(PASSWORD_ALPHABET[i]));
        }
    }
    SecretString::from(out)
}

/// Invites a person who has no account yet into `workspace_id` with
/// `role`, acting with `actor_role`: their account (a plain user, never an
/// organization admin, who must choose a password at first login) and the
/// membership are created together. An email already taken is a conflict:
/// an existing account is never given a new password here.
pub async fn invite_checked(
    state: &AppState,
    actor: &Actor,
    actor_role: Role,
    workspace_id: &WorkspaceId,
    user: NewUser,
    role: Role,
) -> Result<UserRecord, MemberError> {
    may_grant(actor_role, role, None)?;
    let user = NewUser {
        is_org_admin: false,
        must_change_password: true,
        ..user
    };
    let record = state
        .store()
        .create_member(actor, user, workspace_id, role)
        .await?;
    tracing::info!(user_id = %record.id, workspace_id = %workspace_id, %role, "person invited");
    Ok(record)
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
    may_grant(actor_role, role, current)?;
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
            MemberError::NotFound("That user is not a member of this workspace.".to_owned())
        })?;
    if current == Role::Owner && actor_role != Role::Owner {
        return Err(MemberError::NotAllowed(
            "Only an owner can remove an owner.".to_owned(),
        ));
    }
    remove(state, actor, workspace_id, user_id).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn initial_passwords_are_long_readable_and_different() {
        let a = initial_password();
        let b = initial_password();
        assert_ne!(a.expose_secret(), b.expose_secret());
        let a = a.expose_secret();
        assert_eq!(a.len(), 23);
        assert!(
            a.len() >= 12,
            "at least the shortest password a person may choose"
        );
        assert!(a
            .split('-')
            .all(|g| g.len() == 5 && g.bytes().all(|c| PASSWORD_ALPHABET.contains(&c))));
    }

    #[test]
    fn only_owners_make_or_unmake_owners() {
        assert!(may_grant(Role::Admin, Role::Member, None).is_ok());
        assert!(may_grant(Role::Admin, Role::Owner, None).is_err());
        assert!(may_grant(Role::Admin, Role::Member, Some(Role::Owner)).is_err());
        assert!(may_grant(Role::Owner, Role::Owner, None).is_ok());
        assert!(may_grant(Role::Member, Role::Viewer, None).is_err());
    }
}
