//! Workspace roles and the permissions each one grants, and the
//! organization-level permissions of tenant-admin keys.
//!
//! A key's effective permissions are computed at request time (see
//! [`effective_permissions`]): its owner's current role in the key's
//! workspace, plus the organization permissions when the key is a tenant-admin
//! key whose owner is still an organization admin, narrowed by the key's
//! restriction. A key without a restriction gets everything *except* the
//! management permissions ([`Permission::is_management`]): managing keys,
//! members, the workspace or the organization takes a tenant-admin key or a
//! key that names those permissions explicitly.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A role a user holds in one workspace. Ordered: `Viewer < Member < Admin < Owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads models and workflows.
    Viewer,
    /// Viewer + writes workflows, manages their own keys.
    Member,
    /// Member + manages every key and the members of the workspace.
    Admin,
    /// Admin + deletes the workspace.
    Owner,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Member, Role::Admin, Role::Owner];

    /// The lowercase name used on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    /// The permissions this role grants, in the order of [`Permission::ALL`].
    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::Viewer => &[ModelsRead, WorkflowsRead, WorkspaceRead],
            Role::Member => &[
                ModelsRead,
                WorkflowsRead,
                WorkflowsWrite,
                WorkflowsRun,
                WorkspaceRead,
                KeysRead,
                KeysWrite,
            ],
            Role::Admin => &[
                ModelsRead,
                WorkflowsRead,
                WorkflowsWrite,
                WorkflowsRun,
                WorkspaceRead,
                KeysRead,
                KeysWrite,
                KeysManage,
                MembersRead,
                MembersWrite,
                WorkspaceWrite,
            ],
            Role::Owner => Permission::WORKSPACE,
        }
    }

    /// Whether the role grants `permission`.
    pub fn grants(self, permission: Permission) -> bool {
        self.permissions().contains(&permission)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error returned when parsing an unknown role or permission name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    /// What kind of name it was ("role" or "permission").
    pub kind: &'static str,
    /// The valid names, comma separated.
    pub expected: String,
}

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown {}; expected one of: {}",
            self.kind, self.expected
        )
    }
}

impl std::error::Error for UnknownName {}

impl FromStr for Role {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownName {
                kind: "role",
                expected: Role::ALL.map(Role::as_str).join(", "),
            })
    }
}

/// One thing a key may do. The string forms (`workflows:write`) are what the
/// API shows and accepts in key restrictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Permission {
    /// List models and presets.
    #[serde(rename = "models:read")]
    ModelsRead,
    /// List and read workflows and their versions.
    #[serde(rename = "workflows:read")]
    WorkflowsRead,
    /// Create, update and delete workflows and versions.
    #[serde(rename = "workflows:write")]
    WorkflowsWrite,
    /// Start workflow runs, stop them and delete them (reading runs needs
    /// only `workflows:read`).
    #[serde(rename = "workflows:run")]
    WorkflowsRun,
    /// See the workspace itself.
    #[serde(rename = "workspace:read")]
    WorkspaceRead,
    /// List one's own API keys in the workspace.
    #[serde(rename = "keys:read")]
    KeysRead,
    /// Create, revoke and rotate one's own API keys.
    #[serde(rename = "keys:write")]
    KeysWrite,
    /// List, revoke and rotate every API key of the workspace.
    #[serde(rename = "keys:manage")]
    KeysManage,
    /// List the workspace's members.
    #[serde(rename = "members:read")]
    MembersRead,
    /// Add and remove members and change their roles.
    #[serde(rename = "members:write")]
    MembersWrite,
    /// Rename the workspace.
    #[serde(rename = "workspace:write")]
    WorkspaceWrite,
    /// Delete the workspace.
    #[serde(rename = "workspace:delete")]
    WorkspaceDelete,
    /// List every workspace of the organization.
    #[serde(rename = "org:workspaces:read")]
    OrgWorkspacesRead,
    /// Create and delete workspaces, and change any workspace's settings.
    #[serde(rename = "org:workspaces:write")]
    OrgWorkspacesWrite,
    /// List and show the keys of every workspace, and their usage.
    #[serde(rename = "org:keys:read")]
    OrgKeysRead,
    /// Revoke keys in every workspace; create keys (for oneself) in other
    /// workspaces one is a member of; create tenant-admin keys.
    #[serde(rename = "org:keys:write")]
    OrgKeysWrite,
    /// Read the organization's whole audit log.
    #[serde(rename = "org:audit:read")]
    OrgAuditRead,
    /// List the organization's users.
    #[serde(rename = "org:users:read")]
    OrgUsersRead,
    /// Create, deactivate and reactivate users, make or unmake organization
    /// admins, reset passwords.
    #[serde(rename = "org:users:write")]
    OrgUsersWrite,
}

impl Permission {
    /// Every permission: the workspace ones, then the organization ones.
    pub const ALL: &'static [Permission] = &[
        Permission::ModelsRead,
        Permission::WorkflowsRead,
        Permission::WorkflowsWrite,
        Permission::WorkflowsRun,
        Permission::WorkspaceRead,
        Permission::KeysRead,
        Permission::KeysWrite,
        Permission::KeysManage,
        Permission::MembersRead,
        Permission::MembersWrite,
        Permission::WorkspaceWrite,
        Permission::WorkspaceDelete,
        Permission::OrgWorkspacesRead,
        Permission::OrgWorkspacesWrite,
        Permission::OrgKeysRead,
        Permission::OrgKeysWrite,
        Permission::OrgAuditRead,
        Permission::OrgUsersRead,
        Permission::OrgUsersWrite,
    ];

    /// The permissions a workspace role can grant (everything an owner has).
    pub const WORKSPACE: &'static [Permission] = &[
        Permission::ModelsRead,
        Permission::WorkflowsRead,
        Permission::WorkflowsWrite,
        Permission::WorkflowsRun,
        Permission::WorkspaceRead,
        Permission::KeysRead,
        Permission::KeysWrite,
        Permission::KeysManage,
        Permission::MembersRead,
        Permission::MembersWrite,
        Permission::WorkspaceWrite,
        Permission::WorkspaceDelete,
    ];

    /// The organization permissions: only tenant-admin keys of organization
    /// admins hold them.
    pub const ORGANIZATION: &'static [Permission] = &[
        Permission::OrgWorkspacesRead,
        Permission::OrgWorkspacesWrite,
        Permission::OrgKeysRead,
        Permission::OrgKeysWrite,
        Permission::OrgAuditRead,
        Permission::OrgUsersRead,
        Permission::OrgUsersWrite,
    ];

    /// An organization-level permission (`org:…`).
    pub fn is_organization(self) -> bool {
        Self::ORGANIZATION.contains(&self)
    }

    /// A management permission: changing keys, members, the workspace or the
    /// organization. A key holds one only when it is a tenant-admin key or its
    /// restriction names it explicitly; a key created without `permissions`
    /// does not, whatever its owner's role (GitHub's tokens cannot create
    /// tokens, Stripe's keys cannot create keys).
    pub fn is_management(self) -> bool {
        matches!(
            self,
            Permission::KeysWrite
                | Permission::KeysManage
                | Permission::MembersWrite
                | Permission::WorkspaceWrite
                | Permission::WorkspaceDelete
        ) || self.is_organization()
    }

    /// The wire name, e.g. `workflows:write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ModelsRead => "models:read",
            Permission::WorkflowsRead => "workflows:read",
            Permission::WorkflowsWrite => "workflows:write",
            Permission::WorkflowsRun => "workflows:run",
            Permission::WorkspaceRead => "workspace:read",
            Permission::KeysRead => "keys:read",
            Permission::KeysWrite => "keys:write",
            Permission::KeysManage => "keys:manage",
            Permission::MembersRead => "members:read",
            Permission::MembersWrite => "members:write",
            Permission::WorkspaceWrite => "workspace:write",
            Permission::WorkspaceDelete => "workspace:delete",
            Permission::OrgWorkspacesRead => "org:workspaces:read",
            Permission::OrgWorkspacesWrite => "org:workspaces:write",
            Permission::OrgKeysRead => "org:keys:read",
            Permission::OrgKeysWrite => "org:keys:write",
            Permission::OrgAuditRead => "org:audit:read",
            Permission::OrgUsersRead => "org:users:read",
            Permission::OrgUsersWrite => "org:users:write",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .iter()
            .copied()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownName {
                kind: "permission",
                expected: Permission::ALL
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// The permissions a key has right now, in the order of [`Permission::ALL`]:
///
/// - `role`: its owner's current role in the key's workspace (`None`: not a
///   member any more, so nothing);
/// - `tenant_admin`: the key is a tenant-admin key *and* its owner is still an
///   organization admin, which adds [`Permission::ORGANIZATION`];
/// - `restriction`: the permissions named when the key was created. Without
///   one, the key gets everything above except the management permissions,
///   unless it is a tenant-admin key.
pub fn effective_permissions(
    role: Option<Role>,
    tenant_admin: bool,
    restriction: Option<&[Permission]>,
) -> Vec<Permission> {
    let Some(role) = role else {
        return Vec::new();
    };
    Permission::ALL
        .iter()
        .copied()
        .filter(|p| role.grants(*p) || (tenant_admin && p.is_organization()))
        .filter(|p| match restriction {
            Some(listed) => listed.contains(p),
            None => tenant_admin || !p.is_management(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_includes_every_permission_of_the_role_below_it() {
        for pair in Role::ALL.windows(2) {
            let (lower, higher) = (pair[0], pair[1]);
            for p in lower.permissions() {
                assert!(higher.grants(*p), "{higher} lacks {p} that {lower} has");
            }
            assert!(higher.permissions().len() > lower.permissions().len());
        }
    }

    #[test]
    fn roles_grant_only_workspace_permissions() {
        for role in Role::ALL {
            assert!(role.permissions().iter().all(|p| !p.is_organization()));
        }
        assert_eq!(Role::Owner.permissions(), Permission::WORKSPACE);
        assert_eq!(
            Permission::WORKSPACE.len() + Permission::ORGANIZATION.len(),
            Permission::ALL.len()
        );
    }

    #[test]
    fn keys_without_a_restriction_do_not_manage() {
        use Permission::*;
        let member = effective_permissions(Some(Role::Member), false, None);
        assert_eq!(
            member,
            vec![
                ModelsRead,
                WorkflowsRead,
                WorkflowsWrite,
                WorkflowsRun,
                WorkspaceRead,
                KeysRead
            ]
        );
        // Named explicitly, management is granted (within the role).
        let named =
            effective_permissions(Some(Role::Member), false, Some(&[KeysWrite, KeysManage]));
        assert_eq!(named, vec![KeysWrite]);
        // A tenant-admin key without restriction has everything.
        let admin = effective_permissions(Some(Role::Owner), true, None);
        assert_eq!(admin, Permission::ALL);
        // A restriction restricts organization permissions too.
        let narrow = effective_permissions(Some(Role::Owner), true, Some(&[ModelsRead]));
        assert_eq!(narrow, vec![ModelsRead]);
        // Organization permissions need a tenant-admin key.
        let listed =
            effective_permissions(Some(Role::Owner), false, Some(&[OrgAuditRead, ModelsRead]));
        assert_eq!(listed, vec![ModelsRead]);
        assert!(effective_permissions(None, true, None).is_empty());
    }

    #[test]
    fn names_round_trip() {
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>(), Ok(*p));
            assert_eq!(serde_json::to_string(p).ok(), Some(format!("\"{p}\"")));
        }
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
