//! Workspace roles and the permissions each one grants. A key's effective
//! permissions are its owner's current role's set, optionally narrowed by a
//! restriction stored on the key.

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
                WorkspaceRead,
                KeysRead,
                KeysWrite,
            ],
            Role::Admin => &[
                ModelsRead,
                WorkflowsRead,
                WorkflowsWrite,
                WorkspaceRead,
                KeysRead,
                KeysWrite,
                KeysManage,
                MembersRead,
                MembersWrite,
                WorkspaceWrite,
            ],
            Role::Owner => Permission::ALL,
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
}

impl Permission {
    /// Every permission.
    pub const ALL: &'static [Permission] = &[
        Permission::ModelsRead,
        Permission::WorkflowsRead,
        Permission::WorkflowsWrite,
        Permission::WorkspaceRead,
        Permission::KeysRead,
        Permission::KeysWrite,
        Permission::KeysManage,
        Permission::MembersRead,
        Permission::MembersWrite,
        Permission::WorkspaceWrite,
        Permission::WorkspaceDelete,
    ];

    /// The wire name, e.g. `workflows:write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ModelsRead => "models:read",
            Permission::WorkflowsRead => "workflows:read",
            Permission::WorkflowsWrite => "workflows:write",
            Permission::WorkspaceRead => "workspace:read",
            Permission::KeysRead => "keys:read",
            Permission::KeysWrite => "keys:write",
            Permission::KeysManage => "keys:manage",
            Permission::MembersRead => "members:read",
            Permission::MembersWrite => "members:write",
            Permission::WorkspaceWrite => "workspace:write",
            Permission::WorkspaceDelete => "workspace:delete",
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
