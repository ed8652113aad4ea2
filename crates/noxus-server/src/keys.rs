//! Issuing, revoking and rotating keys, and the rules that decide who may
//! do it — one function per rule, used by the API and the dashboard alike:
//!
//! - [`mint`]: what a new key may be. A key never mints anything greater than
//!   itself: the child's permissions are a subset of the caller's effective
//!   permissions (and default to the caller's restriction), its expiry is no
//!   later than the caller's (and defaults to it), its rate limit is no higher
//!   than the caller's; raising a limit above the server's default needs
//!   `workspace:write` and stays under the operator's ceiling. Tenant-admin
//!   keys are minted only by organization admins, for themselves.
//! - [`may_rotate`]: only a key's owner may rotate it (rotation hands out the
//!   successor's secret), and a key rotates only keys no greater than itself.
//! - [`may_revoke`]: anyone allowed to manage a key may revoke it; a key may
//!   always revoke itself.
//! - [`may_see`]: own keys with `keys:read`, everybody's with `keys:manage`,
//!   other workspaces' with `org:keys:read`.
//!
//! The store publishes each change once it is committed and the key cache
//! applies it (see [`crate::key_cache`]), so the very next request sees it.

use noxus_api::{Permission, Role};
use secrecy::SecretString;
use time::{Duration, OffsetDateTime};

use crate::auth::{AuthContext, PermissionSet};
use crate::rate_limit::RateLimit;
use crate::state::AppState;
use crate::store::{
    Actor, KeyRecord, NewKey, RevokedReason, StoreError, UserRecord, WorkspaceRecord,
};
use crate::store::{KeyId, UserId, WorkspaceId};

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
    /// Revoked by someone, or rotated without grace.
    Revoked,
    /// Revoked with its owner: removed from the workspace or deactivated.
    Disabled,
}

impl KeyStatus {
    /// Of a key, now.
    pub fn of(key: &KeyRecord, now: OffsetDateTime) -> Self {
        if key.revoked_at.is_some() {
            if key.revoked_reason.is_some_and(RevokedReason::is_disabled) {
                Self::Disabled
            } else {
                Self::Revoked
            }
        } else if key.expires_at.is_some_and(|at| at <= now) {
            Self::Expired
        } else if key.replaced_by.is_some() {
            Self::Expiring
        } else {
            Self::Active
        }
    }

    /// `active`, `expiring`, `expired`, `revoked` or `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expiring => "expiring",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::Disabled => "disabled",
        }
    }

    /// Still works (active, or rotated and in its grace period).
    pub fn works(self) -> bool {
        matches!(self, Self::Active | Self::Expiring)
    }
}

/// Why a key rule refused. The API and the dashboard each turn it into
/// their error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRuleError {
    /// 403: the caller lacks a right; `permission` names it when there is one.
    #[error("{detail}")]
    Forbidden {
        /// The permission (or `owner`, `tenant_admin`) the action needs.
        permission: String,
        /// A sentence.
        detail: String,
    },
    /// 422: a value is out of bounds.
    #[error("{detail}")]
    Invalid {
        /// The field.
        field: String,
        /// A sentence.
        detail: String,
    },
}

impl KeyRuleError {
    fn forbidden(permission: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Forbidden {
            permission: permission.into(),
            detail: detail.into(),
        }
    }

    fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            detail: detail.into(),
        }
    }
}

/// The bounds a key puts on what it mints or rotates.
#[derive(Debug, Clone)]
pub struct CallerKey {
    /// Its id.
    pub id: KeyId,
    /// Its restriction, which a child inherits when it names none.
    pub restriction: Option<Vec<Permission>>,
    /// Its expiry: children expire no later.
    pub expires_at: Option<OffsetDateTime>,
    /// Its effective rate limit (`None`: unlimited): children get no more.
    pub rate_limit: Option<RateLimit>,
}

/// Who asks to mint, rotate, revoke or see keys in one workspace.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The acting user (a key's owner, or the logged-in person).
    pub user_id: UserId,
    /// What the caller may do in that workspace, with its organization permissions.
    pub rights: PermissionSet,
    /// Acting in the workspace itself (a key of that workspace, or a person
    /// in the dashboard), as opposed to a tenant-admin key from another one.
    pub inside: bool,
    /// A tenant-admin key of an active organization admin, or an active
    /// organization admin in the dashboard.
    pub org_admin: bool,
    /// The calling key, when the caller is a key.
    pub key: Option<CallerKey>,
}

impl Caller {
    /// A key acting in `workspace`; `role` is its owner's role there (for
    /// another workspace than the key's own).
    pub fn key(auth: &AuthContext, workspace: &WorkspaceRecord, role: Option<Role>) -> Self {
        let record = &auth.record().key;
        let inside = &workspace.id == auth.workspace_id();
        let rights = if inside {
            auth.permissions
        } else {
            // The owner's rights there, narrowed by this key's restriction,
            // plus its organization permissions.
            PermissionSet::of(role, auth.tenant_admin, record.restriction.as_deref())
                .union(auth.permissions.organization_part())
        };
        Self {
            user_id: auth.user_id().to_owned(),
            rights,
            inside,
            org_admin: auth.tenant_admin,
            key: Some(CallerKey {
                id: record.id.clone(),
                restriction: record.restriction.clone(),
                expires_at: record.expires_at,
                rate_limit: auth.key.gcra.map(|g| g.limit()),
            }),
        }
    }

    /// A person in the dashboard acting with `role` in a workspace.
    pub fn person(user: &UserRecord, role: Role) -> Self {
        let org_admin = user.is_active_org_admin();
        let mut rights = PermissionSet::from_slice(role.permissions());
        if org_admin {
            rights = rights.union(PermissionSet::from_slice(Permission::ORGANIZATION));
        }
        Self {
            user_id: user.id.clone(),
            rights,
            inside: true,
            org_admin,
            key: None,
        }
    }

    fn has(&self, permission: Permission) -> bool {
        self.rights.contains(permission)
    }

    /// Holds `in_workspace` acting inside, or `organization_wide` anywhere.
    fn can(&self, in_workspace: Permission, organization_wide: Permission) -> bool {
        (self.inside && self.has(in_workspace)) || self.has(organization_wide)
    }

    fn require(
        &self,
        in_workspace: Permission,
        organization_wide: Permission,
        doing: &str,
    ) -> Result<(), KeyRuleError> {
        if self.can(in_workspace, organization_wide) {
            return Ok(());
        }
        let needed = if self.inside {
            in_workspace
        } else {
            organization_wide
        };
        Err(KeyRuleError::forbidden(
            needed.as_str(),
            format!("{doing} needs `{needed}`, which {} not have", self.who()),
        ))
    }

    fn who(&self) -> &'static str {
        if self.key.is_some() {
            "this API key does"
        } else {
            "your role in this workspace does"
        }
    }
}

/// What a caller asks for when creating a key.
#[derive(Debug, Clone, Default)]
pub struct MintRequest {
    /// Name (validated by the caller).
    pub name: String,
    /// A tenant-admin key.
    pub tenant_admin: bool,
    /// Permissions to restrict the key to; `None`: the caller's own restriction.
    pub permissions: Option<Vec<Permission>>,
    /// Expiry; `None`: the caller's.
    pub expires_at: Option<OffsetDateTime>,
    /// Own rate limit; `None`: the workspace's, capped at the caller's.
    pub rate_limit: Option<RateLimit>,
}

/// The operator's limits on rate limits.
#[derive(Debug, Clone, Copy)]
pub struct RateBounds {
    /// The server's default per-key limit (`None`: limiting off).
    pub server_default: Option<RateLimit>,
    /// The highest limit anyone may set on a key or a workspace.
    pub ceiling: RateLimit,
}

impl RateBounds {
    /// Of the platform's configuration.
    pub fn of(state: &AppState) -> Self {
        Self {
            server_default: state.config().key_rate_limit,
            ceiling: state.config().max_rate_limit_per_key,
        }
    }

    /// Checks a limit someone sets on a key or a workspace (`field` names
    /// it): under the ceiling, and above the server's default only with
    /// `workspace:write`.
    pub fn check_setting(
        &self,
        caller: &Caller,
        field: &str,
        limit: RateLimit,
    ) -> Result<(), KeyRuleError> {
        let ceiling = self.ceiling;
        if limit.per_second > ceiling.per_second || limit.burst > ceiling.burst {
            return Err(KeyRuleError::invalid(
                format!("{field}.per_second"),
                format!(
                    "{field} may be at most {} per second with bursts of {} (the operator's ceiling, --max-rate-limit-per-key)",
                    ceiling.per_second, ceiling.burst
                ),
            ));
        }
        let above_default = self
            .server_default
            .is_some_and(|d| limit.per_second > d.per_second || limit.burst > d.burst);
        if above_default && !caller.can(Permission::WorkspaceWrite, Permission::OrgWorkspacesWrite)
        {
            return Err(KeyRuleError::forbidden(
                Permission::WorkspaceWrite.as_str(),
                format!(
                    "Raising a rate limit above the server's default needs `workspace:write`, which {} not have",
                    caller.who()
                ),
            ));
        }
        Ok(())
    }
}

fn exceeds(limit: RateLimit, bound: RateLimit) -> bool {
    limit.per_second > bound.per_second || limit.burst > bound.burst
}

/// Decides what key `caller` may create in `workspace` for itself. `role`
/// is the caller's membership there (the new key's rights follow it).
/// Returns the key to issue.
pub fn mint(
    caller: &Caller,
    workspace: &WorkspaceRecord,
    role: Option<Role>,
    request: MintRequest,
    bounds: &RateBounds,
) -> Result<IssueRequest, KeyRuleError> {
    caller.require(
        Permission::KeysWrite,
        Permission::OrgKeysWrite,
        "Creating a key",
    )?;
    let Some(role) = role.filter(|r| r.grants(Permission::KeysWrite)) else {
        let detail = match role {
            None => "You are not a member of this workspace: a key of a non-member could not be used. Be added to the workspace first.".to_owned(),
            Some(role) => format!("Your role in this workspace ({role}) cannot create keys; an admin or owner can change it."),
        };
        return Err(KeyRuleError::forbidden(
            Permission::KeysWrite.as_str(),
            detail,
        ));
    };
    if request.tenant_admin && !(caller.org_admin && caller.has(Permission::OrgKeysWrite)) {
        return Err(KeyRuleError::forbidden(
            "tenant_admin",
            "Only an organization admin can create a tenant-admin key, with a tenant-admin key (or the dashboard) that holds `org:keys:write`",
        ));
    }
    let mut grantable = PermissionSet::from_slice(role.permissions());
    if request.tenant_admin {
        grantable = grantable.union(PermissionSet::from_slice(Permission::ORGANIZATION));
    }
    let restriction = match request.permissions {
        Some(mut listed) => {
            for p in &listed {
                if !grantable.contains(*p) {
                    let detail = if p.is_organization() {
                        format!(
                            "`{p}` is an organization permission: only tenant-admin keys hold it"
                        )
                    } else {
                        format!("A key can only be restricted to permissions its owner has; your role in this workspace ({role}) does not grant `{p}`")
                    };
                    return Err(KeyRuleError::forbidden(p.as_str(), detail));
                }
                if !caller.has(*p) {
                    return Err(KeyRuleError::forbidden(
                        p.as_str(),
                        format!(
                            "A key cannot give more than it has: {} not hold `{p}`",
                            caller.who()
                        ),
                    ));
                }
            }
            listed.sort();
            listed.dedup();
            Some(listed)
        }
        // The caller's own restriction (what it may do), within what the new key can hold.
        None => caller
            .key
            .as_ref()
            .and_then(|k| k.restriction.as_ref())
            .map(|r| {
                r.iter()
                    .copied()
                    .filter(|p| grantable.contains(*p))
                    .collect()
            }),
    };
    // Whatever the path above, the new key's rights are within the caller's.
    let child = PermissionSet::of(Some(role), request.tenant_admin, restriction.as_deref());
    if let Some(extra) = child.missing_from(caller.rights).first() {
        return Err(KeyRuleError::forbidden(
            extra.as_str(),
            format!(
                "A key cannot give more than it has: the new key would hold `{extra}`, which {} not hold; name the permissions the new key needs",
                caller.who()
            ),
        ));
    }
    let caller_expiry = caller.key.as_ref().and_then(|k| k.expires_at);
    let expires_at = match (request.expires_at, caller_expiry) {
        (Some(asked), Some(limit)) if asked > limit => {
            return Err(KeyRuleError::invalid(
                "expires_at",
                format!(
                    "expires_at must not be later than the calling key's own expiry ({}): a key cannot outlive the key that created it",
                    crate::time_fmt::rfc3339(limit)
                ),
            ))
        }
        (Some(asked), _) => Some(asked),
        (None, limit) => limit,
    };
    let caller_limit = caller.key.as_ref().and_then(|k| k.rate_limit);
    let rate_limit = match request.rate_limit {
        Some(asked) => {
            if let Some(limit) = caller_limit.filter(|l| exceeds(asked, *l)) {
                return Err(KeyRuleError::invalid(
                    "rate_limit.per_second",
                    format!(
                        "rate_limit may be at most the calling key's own: {} per second with bursts of {}",
                        limit.per_second, limit.burst
                    ),
                ));
            }
            bounds.check_setting(caller, "rate_limit", asked)?;
            Some(asked)
        }
        None => {
            // The limit the key would get from its workspace or the server,
            // capped at the caller's.
            let inherited = workspace.rate_limit.or(bounds.server_default);
            match (caller_limit, inherited) {
                (Some(limit), None) => Some(limit),
                (Some(limit), Some(inherited)) if exceeds(inherited, limit) => Some(limit),
                _ => None,
            }
        }
    };
    Ok(IssueRequest {
        workspace_id: workspace.id.clone(),
        user_id: caller.user_id.clone(),
        name: request.name,
        tenant_admin: request.tenant_admin,
        restriction,
        expires_at,
        rate_limit,
    })
}

/// Whether `caller` may rotate `key` of `workspace` (and so obtain its
/// successor's secret). `role` is the key owner's role there.
pub fn may_rotate(
    caller: &Caller,
    workspace: &WorkspaceRecord,
    key: &KeyRecord,
    role: Option<Role>,
    bounds: &RateBounds,
) -> Result<(), KeyRuleError> {
    if key.user_id != caller.user_id {
        return Err(KeyRuleError::forbidden(
            "owner",
            "Only the key's owner can rotate it, because rotating hands out the new key's secret; you may revoke it instead",
        ));
    }
    caller.require(
        Permission::KeysWrite,
        Permission::OrgKeysWrite,
        "Rotating a key",
    )?;
    if key.tenant_admin && !(caller.org_admin && caller.has(Permission::OrgKeysWrite)) {
        return Err(KeyRuleError::forbidden(
            "tenant_admin",
            "Only an organization admin can rotate a tenant-admin key, with a tenant-admin key (or the dashboard) that holds `org:keys:write`",
        ));
    }
    let Some(caller_key) = caller.key.as_ref().filter(|k| k.id != key.id) else {
        return Ok(()); // a person, or a key rotating itself
    };
    // Another key of the same owner: no greater than the caller.
    let rights = PermissionSet::of(
        role,
        key.tenant_admin && caller.org_admin,
        key.restriction.as_deref(),
    );
    if let Some(extra) = rights.missing_from(caller.rights).first() {
        return Err(KeyRuleError::forbidden(
            extra.as_str(),
            format!("A key cannot rotate a key greater than itself: that key holds `{extra}`, which this API key does not"),
        ));
    }
    if let Some(limit) = caller_key.expires_at {
        if key.expires_at.is_none_or(|at| at > limit) {
            return Err(KeyRuleError::forbidden(
                "expires_at",
                "A key cannot rotate a key that outlives it: that key expires later than this API key",
            ));
        }
    }
    if let Some(limit) = caller_key.rate_limit {
        let theirs = key
            .rate_limit
            .or(workspace.rate_limit)
            .or(bounds.server_default);
        if theirs.is_none_or(|l| exceeds(l, limit)) {
            return Err(KeyRuleError::forbidden(
                "rate_limit",
                "A key cannot rotate a key with a higher rate limit than its own",
            ));
        }
    }
    Ok(())
}

/// Whether `caller` may revoke `key`: itself always; its owner's own keys
/// with `keys:write`; anybody's with `keys:manage` (`org:keys:write` in
/// another workspace).
pub fn may_revoke(caller: &Caller, key: &KeyRecord) -> Result<(), KeyRuleError> {
    if caller.key.as_ref().is_some_and(|k| k.id == key.id) {
        return Ok(());
    }
    if key.user_id == caller.user_id && caller.can(Permission::KeysWrite, Permission::OrgKeysWrite)
    {
        return Ok(());
    }
    caller.require(
        Permission::KeysManage,
        Permission::OrgKeysWrite,
        "Revoking someone else's key",
    )
}

/// Whether `caller` may see `key` (list, show, usage): its own with
/// `keys:read`, anybody's with `keys:manage`, in another workspace with
/// `org:keys:read`. Refusals are "not found" for others' keys (their
/// existence is not revealed) and 403 for one's own.
pub fn may_see(caller: &Caller, key: &KeyRecord) -> Result<(), Option<KeyRuleError>> {
    if caller.can(Permission::KeysManage, Permission::OrgKeysRead) {
        return Ok(());
    }
    if key.user_id != caller.user_id {
        return Err(None);
    }
    caller
        .require(
            Permission::KeysRead,
            Permission::OrgKeysRead,
            "Reading keys",
        )
        .map_err(Some)
}

/// Whether `caller` sees every key of the workspace (else only its own).
pub fn sees_all(caller: &Caller) -> bool {
    caller.can(Permission::KeysManage, Permission::OrgKeysRead)
}

/// A key to issue.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Owner.
    pub user_id: UserId,
    /// Name (validated by the caller).
    pub name: String,
    /// Tenant-admin key.
    pub tenant_admin: bool,
    /// Restriction.
    pub restriction: Option<Vec<Permission>>,
    /// Expiry.
    pub expires_at: Option<OffsetDateTime>,
    /// Own rate limit, overriding the workspace's default.
    pub rate_limit: Option<RateLimit>,
}

/// Issues a key: stores its digest (within the key quotas), returns the
/// record and the secret (to be shown once).
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
            state.config().key_quotas,
        )
        .await?;
    tracing::info!(key_id = %record.id, prefix = %record.prefix, workspace_id = %record.workspace_id, "api key created");
    Ok((record, issued.secret))
}

/// Revokes a key at once (idempotent).
pub async fn revoke(
    state: &AppState,
    actor: &Actor,
    workspace_id: &WorkspaceId,
    key_id: &KeyId,
) -> Result<KeyRecord, StoreError> {
    let revoked = state
        .store()
        .revoke_key(actor, workspace_id, key_id)
        .await?;
    tracing::info!(key_id = %revoked.id, prefix = %revoked.prefix, "api key revoked");
    Ok(revoked)
}

/// Why a rotation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// More than 7 days.
    #[error("the grace period is at most {MAX_GRACE_SECONDS} seconds (7 days)")]
    GraceTooLong,
    /// The store refused it (revoked, expired, already rotated) or failed.
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
/// tenant-admin flag, rate limit and expiry (the same instant: rotating
/// never extends a key's life); the old one keeps working for
/// `grace_seconds` (0 revokes it now). Who may rotate is [`may_rotate`]'s
/// business; that the key is live and not rotated yet is checked inside the
/// store's write.
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
                expires_at: old.expires_at,
                rate_limit: old.rate_limit,
            },
            valid_until,
        )
        .await?;
    tracing::info!(old_key_id = %old.id, new_key_id = %new.id, prefix = %new.prefix, "api key rotated");
    let old_valid_until = old.revoked_at.or(old.expires_at).unwrap_or(now);
    Ok(Rotated {
        old,
        new,
        secret: issued.secret,
        old_valid_until,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn workspace() -> WorkspaceRecord {
        WorkspaceRecord {
            id: "w".into(),
            organization_id: "o".into(),
            name: "W".to_owned(),
            description: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
            rate_limit: None,
        }
    }

    fn key_caller(role: Role, restriction: Option<Vec<Permission>>, tenant: bool) -> Caller {
        Caller {
            user_id: "u".into(),
            rights: PermissionSet::of(Some(role), tenant, restriction.as_deref()),
            inside: true,
            org_admin: tenant,
            key: Some(CallerKey {
                id: "k".into(),
                restriction,
                expires_at: Some(OffsetDateTime::UNIX_EPOCH + Duration::days(7)),
                rate_limit: Some(RateLimit {
                    per_second: 10,
                    burst: 20,
                }),
            }),
        }
    }

    fn bounds() -> RateBounds {
        RateBounds {
            server_default: Some(RateLimit {
                per_second: 100,
                burst: 200,
            }),
            ceiling: RateLimit {
                per_second: 10_000,
                burst: 20_000,
            },
        }
    }

    #[test]
    fn a_restricted_key_mints_only_within_itself() {
        let caller = key_caller(Role::Owner, Some(vec![Permission::KeysWrite]), false);
        let minted = mint(
            &caller,
            &workspace(),
            Some(Role::Owner),
            MintRequest {
                name: "child".to_owned(),
                ..Default::default()
            },
            &bounds(),
        )
        .unwrap();
        assert_eq!(minted.restriction, Some(vec![Permission::KeysWrite]));
        assert_eq!(
            minted.expires_at,
            caller.key.as_ref().unwrap().expires_at,
            "defaults to the caller's expiry"
        );
        assert_eq!(minted.rate_limit, caller.key.as_ref().unwrap().rate_limit);

        let wider = mint(
            &caller,
            &workspace(),
            Some(Role::Owner),
            MintRequest {
                name: "child".to_owned(),
                permissions: Some(vec![Permission::WorkflowsWrite]),
                ..Default::default()
            },
            &bounds(),
        );
        assert!(matches!(wider, Err(KeyRuleError::Forbidden { .. })));
    }

    #[test]
    fn only_the_owner_rotates() {
        let caller = key_caller(Role::Owner, None, true);
        let mut key = KeyRecord {
            id: "other".into(),
            workspace_id: "w".into(),
            user_id: "someone else".into(),
            name: "n".to_owned(),
            digest: crate::domain::keys::KeyHasher::new(None).digest("x"),
            prefix: "noxus_abcd".to_owned(),
            suffix: "wxyz".to_owned(),
            tenant_admin: false,
            restriction: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
            expires_at: None,
            revoked_at: None,
            replaced_by: None,
            last_used_at: None,
            rate_limit: None,
            last_used_addr: None,
            revoked_reason: None,
        };
        let refused = may_rotate(&caller, &workspace(), &key, Some(Role::Owner), &bounds());
        assert!(
            matches!(&refused, Err(KeyRuleError::Forbidden { permission, .. }) if permission == "owner")
        );
        key.user_id = "u".into();
        // Same owner, but the key outlives the caller (no expiry vs 7 days).
        assert!(may_rotate(&caller, &workspace(), &key, Some(Role::Owner), &bounds()).is_err());
    }
}
