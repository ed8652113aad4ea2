//! Request and response bodies of the Noxus HTTP API. Field names follow the
//! official Python client (`noxus-sdk`), which must parse our responses.
//! Timestamps are RFC 3339 strings in UTC; ids are strings.
//!
//! Every struct is `#[non_exhaustive]` (the API grows by adding fields):
//! read responses field by field, and build request bodies with their
//! constructors, such as [`CreateApiKey::new`]. The platform itself builds
//! them with struct literals through the `server` feature, which clients do
//! not enable.

use crate::permissions::{Permission, Role};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct ErrorBody {
    /// A sentence for people; what the official client shows.
    pub detail: String,
    /// A stable machine-readable code, e.g. `invalid_api_key`.
    pub code: String,
    /// The request id, also sent as the `x-request-id` header.
    pub request_id: String,
    /// For `insufficient_permissions`: the permission the route needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_permission: Option<String>,
    /// For `validation_error`: the offending field or parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// What `/v1/admin/me` returns: the calling key, who owns it, and what it may
/// do. Shaped as the official client's `ApiKey` (with `value` masked).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct Me {
    /// The key's id.
    pub id: String,
    /// The key's name.
    pub name: String,
    /// Whether the key may use the organization-wide admin API.
    pub tenant_admin: bool,
    /// The key, masked: first 10 characters, `…`, last 4.
    pub value: String,
    /// Effective permissions, computed now from the owner's role.
    pub permissions: Vec<Permission>,
    /// The workspace the key belongs to.
    pub workspace_id: String,
    /// That workspace's name.
    pub workspace_name: String,
    /// The key owner's current role in the workspace.
    pub role: Role,
    /// The user who owns the key.
    pub user_id: String,
    /// That user's email.
    pub user_email: String,
    /// The organization.
    pub organization_id: String,
    /// When the key stops working, if ever.
    pub expires_at: Option<String>,
    /// When the key was created.
    pub created_at: String,
}

/// A workspace (the API calls it a *group*).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct Workspace {
    /// Workspace id.
    pub id: String,
    /// Name, unique within the organization.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// When it was created.
    pub created_at: String,
    /// Default rate limit of its keys, if it overrides the server's.
    #[serde(default)]
    pub rate_limit: Option<RateLimitSpec>,
}

/// Body of `POST /v1/admin/groups`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct CreateWorkspace {
    /// 1 to 100 characters.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::short_name))]
    pub name: String,
    /// Up to 1000 characters.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::workspace_description))]
    pub description: Option<String>,
}

/// A rate limit: requests per second on average, with bursts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct RateLimitSpec {
    /// Sustained requests per second, 1 to 100000.
    #[serde(deserialize_with = "crate::whole_number::u32")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::per_second))]
    pub per_second: u32,
    /// Requests allowed at once; default twice `per_second`.
    #[serde(default, deserialize_with = "crate::whole_number::option_u32")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::burst))]
    pub burst: Option<u32>,
}

/// Body of `PATCH /v1/admin/groups/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct UpdateWorkspace {
    /// Default rate limit of the workspace's keys; `null` returns to the server's default.
    pub rate_limit: Option<RateLimitSpec>,
}

/// Body of `POST /v1/admin/groups/{id}/api-keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct CreateApiKey {
    /// A descriptive name, 1 to 100 characters.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::short_name))]
    pub name: String,
    /// Organization-wide admin key; only an organization admin may create one.
    #[serde(default)]
    pub tenant_admin: bool,
    /// Restrict the key to these permissions: a subset of the owner's role
    /// and of the calling key's own permissions. Absent or null: the calling
    /// key's own restriction (none for a tenant-admin key without one, and
    /// then the key follows its owner's role, management permissions
    /// excepted).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<Permission>>))]
    pub permissions: Option<Vec<String>>,
    /// RFC 3339 time after which the key stops working: in the future, and
    /// no later than the calling key's own expiry, which is also the default.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::optional_date_time))]
    pub expires_at: Option<String>,
    /// This key's own rate limit, overriding the workspace's default; at most
    /// the calling key's own limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
}

/// A key as listed: never the secret, only its display fragments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct ApiKeyInfo {
    /// Key id.
    pub id: String,
    /// Key name.
    pub name: String,
    /// Organization-wide admin key.
    pub tenant_admin: bool,
    /// The key, masked: first 10 characters, `…`, last 4.
    pub value: String,
    /// The restriction, if the key has one; `null` means "whatever the role grants".
    pub permissions: Option<Vec<Permission>>,
    /// Workspace the key belongs to.
    pub workspace_id: String,
    /// The user who owns the key.
    pub user_id: String,
    /// `active`, `expiring` (rotated, in its grace period), `expired`,
    /// `revoked`, or `disabled` (revoked with its owner: removed from the
    /// workspace or deactivated).
    pub status: String,
    /// Why it stopped working before its time: `revoked`, `rotated`,
    /// `leaked` (reported leaked: `POST /v1/keys/leaks`), `owner_removed`
    /// or `owner_deactivated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_reason: Option<String>,
    /// When it was created.
    pub created_at: String,
    /// When it stops (or stopped) working.
    pub expires_at: Option<String>,
    /// When it was revoked.
    pub revoked_at: Option<String>,
    /// The key that replaced this one by rotation.
    pub replaced_by: Option<String>,
    /// The key's own rate limit, if it overrides the workspace's.
    #[serde(default)]
    pub rate_limit: Option<RateLimitSpec>,
    /// Latest use (written within a second).
    #[serde(default)]
    pub last_used_at: Option<String>,
}

/// A key in the one response that carries its secret: creation or rotation.
/// `Debug` shows only the key's first 10 characters.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct CreatedApiKey {
    /// Key id.
    pub id: String,
    /// Key name.
    pub name: String,
    /// Organization-wide admin key.
    pub tenant_admin: bool,
    /// The full secret. Shown once: it is not stored and cannot be shown again.
    pub value: String,
    /// The restriction, if any.
    pub permissions: Option<Vec<Permission>>,
    /// Workspace the key belongs to.
    pub workspace_id: String,
    /// The user who owns the key.
    pub user_id: String,
    /// When it was created.
    pub created_at: String,
    /// When it stops working, if ever.
    pub expires_at: Option<String>,
    /// For a rotation: the key this one replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// For a rotation: until when the replaced key keeps working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_key_valid_until: Option<String>,
}

impl std::fmt::Debug for CreatedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedApiKey")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("tenant_admin", &self.tenant_admin)
            .field(
                "value",
                &format_args!("{}…", crate::key_format::display_prefix(&self.value)),
            )
            .field("permissions", &self.permissions)
            .field("workspace_id", &self.workspace_id)
            .field("user_id", &self.user_id)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("replaces", &self.replaces)
            .field("replaced_key_valid_until", &self.replaced_key_valid_until)
            .finish()
    }
}

/// Body of `POST /v1/admin/groups/{id}/api-keys/{key_id}/rotate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct RotateApiKey {
    /// How long the old key keeps working, 0 to 604800 seconds (7 days).
    #[serde(default, deserialize_with = "crate::whole_number::u64")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::grace_period))]
    pub grace_period_seconds: u64,
}

/// A page of items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// How many items there are in all.
    pub total: u64,
    /// This page's number, from 1.
    pub page: u64,
    /// The page size.
    pub size: u64,
    /// How many pages there are.
    pub pages: u64,
}

/// A workflow as stored: name, type and definition are returned verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct Workflow {
    /// Workflow id.
    pub id: String,
    /// Name.
    pub name: String,
    /// `flow` or `agent_flow`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The workspace.
    pub group_id: String,
    /// The definition exactly as saved: `{flow_version?, nodes, edges}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub definition: Value,
    /// The error-handler node, if any.
    pub error_handler: Option<String>,
    /// `definition.flow_version`, or `v1`.
    pub flow_version: String,
    /// When it was created.
    pub created_at: String,
    /// When it last changed.
    pub last_updated_at: String,
}

/// Body of `POST /v1/workflows` and `PATCH /v1/workflows/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct WorkflowWrite {
    /// 1 to 200 characters.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::workflow_name))]
    pub name: String,
    /// `flow` (default) or `agent_flow`.
    #[serde(rename = "type", default = "default_workflow_type")]
    #[cfg_attr(feature = "openapi", schema(value_type = WorkflowKind, default = "flow"))]
    pub kind: String,
    /// `{flow_version?, nodes: [...], edges: [...]}`; defaults to an empty flow.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::optional_workflow_definition))]
    pub definition: Option<Value>,
    /// A node id (UUID) or null.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::optional_uuid))]
    pub error_handler: Option<String>,
}

/// The two kinds of workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WorkflowKind {
    /// A flow (the default).
    Flow,
    /// An agent flow.
    AgentFlow,
}

impl WorkflowKind {
    /// The wire name: `flow` or `agent_flow`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Flow => "flow",
            Self::AgentFlow => "agent_flow",
        }
    }
}

/// Body of `POST /v1/workflows/import`, as the official client's
/// `workflows.import_` sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct ImportWorkflow {
    /// The workflow as exported: the object `GET /v1/workflows/{id}`
    /// answers. Its JSON text (a string, which is what the official
    /// client's `import_` sends) is accepted too.
    #[cfg_attr(feature = "openapi", schema(value_type = ExportedWorkflow))]
    pub definition: Value,
    /// The bundle format: `auto` (the default) reads the exported JSON.
    /// The hosted platform's `v3` (base64) and `v4` (YAML) bundles are
    /// refused with 422.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<ImportFormat>))]
    pub version: Option<String>,
}

/// The bundle formats `POST /v1/workflows/import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ImportFormat {
    /// The exported JSON.
    Auto,
}

/// A workflow as exported (the object `GET /v1/workflows/{id}` answers),
/// to import: `name`, `type`, `definition` and `error_handler` are read as
/// for `POST /v1/workflows`; the read-only fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct ExportedWorkflow {
    /// 1 to 200 characters.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::workflow_name))]
    pub name: String,
    /// `flow` (default) or `agent_flow`.
    #[serde(rename = "type", default = "default_workflow_type")]
    #[cfg_attr(feature = "openapi", schema(value_type = WorkflowKind, default = "flow"))]
    pub kind: String,
    /// `{flow_version?, nodes: [...], edges: [...]}`; defaults to an empty flow.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::optional_workflow_definition))]
    pub definition: Option<Value>,
    /// A node id (UUID) or null.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::optional_uuid))]
    pub error_handler: Option<String>,
    /// Ignored: the import gets a new id.
    #[serde(default)]
    pub id: Option<String>,
    /// Ignored: the import lands in the calling key's workspace.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Ignored: read from `definition.flow_version`.
    #[serde(default)]
    pub flow_version: Option<String>,
    /// Ignored.
    #[serde(default)]
    pub created_at: Option<String>,
    /// Ignored.
    #[serde(default)]
    pub last_updated_at: Option<String>,
}

fn default_workflow_type() -> String {
    "flow".to_owned()
}

/// A saved version of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct WorkflowVersion {
    /// Version id (UUID).
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// When it was saved.
    pub created_at: String,
    /// The user (UUID) whose key saved it.
    pub created_by: Option<String>,
    /// The definition as saved.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub definition: Value,
}

/// A version in a page of `GET /v1/workflows/{id}/versions?page=&size=`:
/// its definition only when the page asked for it (`include_definition=true`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct WorkflowVersionInfo {
    /// Version id (UUID).
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// When it was saved.
    pub created_at: String,
    /// The user (UUID) whose key saved it.
    pub created_by: Option<String>,
    /// The definition as saved, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub definition: Option<Value>,
}

/// Body of `POST /v1/workflows/{id}/versions` and its PATCH.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct WorkflowVersionWrite {
    /// 1 to 200 characters.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::workflow_name))]
    pub name: String,
    /// Free text.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::version_description))]
    pub description: Option<String>,
    /// `{flow_version?, nodes, edges}`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::workflow_definition))]
    pub definition: Value,
}

/// The body of a successful DELETE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct Deleted {
    /// Always true.
    pub deleted: bool,
    /// The id of what was deleted.
    pub id: String,
}

/// Health and readiness probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct Health {
    /// `ok`, or what is wrong.
    pub status: String,
    /// `/readyz` only: how rate limits hold right now — cluster-wide (and
    /// where the shared counters live), per replica because the shared
    /// counters do not answer (and why), or per process (one process serves
    /// the database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<String>,
}

/// Request counts over one bucket (an hour or a day), or a total.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct UsagePoint {
    /// Start of the bucket (RFC 3339); for totals, the start of the range.
    pub start: String,
    /// Requests made with the key(s).
    pub requests: u64,
    /// 2xx answers.
    pub ok: u64,
    /// 4xx answers.
    pub client_errors: u64,
    /// 5xx answers.
    pub server_errors: u64,
    /// 401 answers (revoked or expired key, owner removed).
    pub unauthorized: u64,
    /// 403 answers (missing permission).
    pub forbidden: u64,
    /// 429 answers (over the rate limit).
    pub rate_limited: u64,
}

/// The buckets of a usage query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum UsageBucket {
    /// Hourly counts.
    Hour,
    /// Daily counts (days start at midnight UTC).
    Day,
}

/// An address a key was used from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct KeyAddressInfo {
    /// An IPv4 address (`203.0.113.7`), or an IPv6 /64 network
    /// (`2001:db8:1:2::/64`): IPv6 addresses are counted per /64.
    pub addr: String,
    /// First use from it.
    pub first_seen_at: String,
    /// Latest use from it.
    pub last_seen_at: String,
}

/// Usage of one key over a range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct KeyUsage {
    /// The key.
    pub key_id: String,
    /// Its name.
    pub name: String,
    /// `hour` or `day`.
    pub bucket: String,
    /// Start of the range.
    pub from: String,
    /// End of the range (exclusive).
    pub to: String,
    /// One point per bucket, oldest first, zeros included.
    pub points: Vec<UsagePoint>,
    /// Sum over the range.
    pub totals: UsagePoint,
    /// Latest use.
    pub last_used_at: Option<String>,
    /// Address of the latest use (exact, also for IPv6).
    pub last_used_addr: Option<String>,
    /// The addresses the key was used from, most recently seen first: the
    /// first page (`/addresses` pages through the rest).
    pub addresses: Vec<KeyAddressInfo>,
    /// How many addresses are remembered for the key (the server keeps the
    /// most recently seen, up to its `--max-addresses-per-key`).
    #[serde(default)]
    pub addresses_total: u64,
    /// Unusual activity in the range, oldest first: the newest 100 at most.
    #[serde(default)]
    pub flags: Vec<UsageFlag>,
    /// How many flags the range has in all (more than `flags` holds when
    /// the list was cut).
    #[serde(default)]
    pub flags_total: u64,
}

/// Unusual activity of a key, explained in one sentence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct UsageFlag {
    /// `new_address`, `spike`, `forbidden_burst`, `used_after_demotion` or
    /// `reported_leaked`.
    pub kind: String,
    /// The key.
    pub key_id: String,
    /// The key's name.
    pub key_name: String,
    /// What happened, in one sentence.
    pub sentence: String,
    /// Start of the hour it happened in.
    pub hour: String,
}

/// One key's total in a workspace's usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct KeyUsageTotal {
    /// The key.
    pub key_id: String,
    /// Its name.
    pub name: String,
    /// Masked value.
    pub value: String,
    /// Sum over the range.
    pub totals: UsagePoint,
}

/// Usage of a workspace's keys over a range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct WorkspaceUsage {
    /// The workspace.
    pub workspace_id: String,
    /// `hour` or `day`.
    pub bucket: String,
    /// Start of the range.
    pub from: String,
    /// End of the range (exclusive).
    pub to: String,
    /// One point per bucket, all keys together.
    pub points: Vec<UsagePoint>,
    /// Sum over the range.
    pub totals: UsagePoint,
    /// Per key, busiest first.
    pub keys: Vec<KeyUsageTotal>,
    /// Unusual activity of the workspace's keys in the range, oldest
    /// first: the newest 100 at most.
    #[serde(default)]
    pub flags: Vec<UsageFlag>,
    /// How many flags the range has in all.
    #[serde(default)]
    pub flags_total: u64,
}

/// One row of the audit log: who changed what, when, from where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct AuditEntry {
    /// Sequence number (use it as `before` to page back).
    pub id: i64,
    /// When.
    pub at: String,
    /// E.g. `api_key.create`, `api_key.revoke`, `membership.set`, `workspace.delete`.
    pub action: String,
    /// `api_key`, `user`, `workspace`, ...
    pub target_type: String,
    /// The target's id.
    pub target_id: String,
    /// The workspace concerned, if any.
    pub workspace_id: Option<String>,
    /// The acting user, if any (none for the platform itself).
    pub actor_user_id: Option<String>,
    /// That user's email.
    pub actor_email: Option<String>,
    /// The API key used, when the change came through the API.
    pub actor_key_id: Option<String>,
    /// The client's address.
    pub client_addr: Option<String>,
    /// Facts about the change (never secrets).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: Value,
}

/// A user of the organization (`GET /v1/admin/users`), shaped as the
/// official client's `TenantUser`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct TenantUser {
    /// User id.
    pub id: String,
    /// Login email.
    pub email: String,
    /// Display name.
    pub display_name: Option<String>,
    /// An organization admin.
    pub tenant_admin: bool,
    /// Not deactivated.
    pub is_active: bool,
    /// Must choose a new password at the next login.
    #[serde(default)]
    pub must_change_password: bool,
}

/// Body of `PATCH /v1/admin/users/{id}`. Through the API a key can only take
/// power away: deactivate a user (`is_active: false`) or unmake an
/// organization admin (`tenant_admin: false`). Reactivating and making
/// admins are done in the dashboard, which asks for the password again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct UpdateUser {
    /// `false` deactivates the user: their sessions end and every key of
    /// theirs is revoked at once.
    #[serde(default)]
    pub is_active: Option<bool>,
    /// `false` unmakes an organization admin: their tenant-admin keys lose
    /// the organization permissions at once.
    #[serde(default)]
    pub tenant_admin: Option<bool>,
}

/// How many sessions ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct SessionsEnded {
    /// The user.
    pub user_id: String,
    /// True.
    pub ended: bool,
}

/// Body of `POST /v1/keys/leaks`: keys found where they should not be
/// (a public repository, a paste, a log), reported by whoever found them.
/// No key is needed to send it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct LeakReport {
    /// 1 to 100 candidates.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::leak_candidates))]
    pub keys: Vec<LeakCandidate>,
}

/// One candidate of a [`LeakReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct LeakCandidate {
    /// The string found (at most 256 characters). Only a well-formed Noxus
    /// key (prefix, length, checksum) is looked up; anything else is
    /// dropped without a lookup, and the answer is the same.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::leak_key))]
    pub key: String,
    /// Where it was found, e.g. the URL of a commit (at most 2048
    /// characters, no control characters). Stored as text and shown to the
    /// key's workspace as text; never fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::leak_url))]
    pub url: Option<String>,
    /// What found it, e.g. `github` or `noxus keys scan` (at most 100
    /// characters, no control characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::leak_source))]
    pub source: Option<String>,
}

/// The answer to every accepted leak report: the same whatever the keys
/// were, so that reporting never tells whether a key is valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[cfg_attr(not(feature = "server"), non_exhaustive)]
pub struct LeakReportAccepted {
    /// Always `accepted`.
    pub status: String,
    /// What happens next, in one sentence (always the same).
    pub detail: String,
}

impl CreateWorkspace {
    /// A workspace named `name`.
    pub fn new(name: impl Into<String>, description: Option<String>) -> Self {
        Self {
            name: name.into(),
            description,
        }
    }
}

impl RateLimitSpec {
    /// `per_second` requests per second, bursts of twice that.
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            burst: None,
        }
    }

    /// With bursts of `burst` requests.
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }
}

impl UpdateWorkspace {
    /// Sets (or with `None` clears) the workspace's default key rate limit.
    pub fn new(rate_limit: Option<RateLimitSpec>) -> Self {
        Self { rate_limit }
    }
}

impl CreateApiKey {
    /// A key named `name`, with the calling key's own permissions, expiry
    /// and rate limit at most; narrow it with the setters.
    ///
    /// ```
    /// use noxus_api::{CreateApiKey, Permission};
    ///
    /// let request = CreateApiKey::new("billing service")
    ///     .permissions([Permission::WorkflowsRead])
    ///     .expires_at("2030-01-31T12:00:00Z");
    /// assert_eq!(request.permissions.as_deref(), Some(&["workflows:read".to_owned()][..]));
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            tenant_admin: false,
            permissions: None,
            expires_at: None,
            rate_limit: None,
        }
    }

    /// A tenant-admin key (only organization admins may create one).
    pub fn tenant_admin(mut self, tenant_admin: bool) -> Self {
        self.tenant_admin = tenant_admin;
        self
    }

    /// Restricts the key to these permissions.
    pub fn permissions(mut self, permissions: impl IntoIterator<Item = Permission>) -> Self {
        self.permissions = Some(
            permissions
                .into_iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
        );
        self
    }

    /// Stops the key at this RFC 3339 time.
    pub fn expires_at(mut self, at: impl Into<String>) -> Self {
        self.expires_at = Some(at.into());
        self
    }

    /// Gives the key its own rate limit.
    pub fn rate_limit(mut self, limit: RateLimitSpec) -> Self {
        self.rate_limit = Some(limit);
        self
    }
}

impl LeakReport {
    /// A report of `candidates` (1 to 100).
    ///
    /// ```
    /// use noxus_api::{LeakCandidate, LeakReport};
    ///
    /// let report = LeakReport::new([LeakCandidate::new("noxus_…")
    ///     .url("https://github.com/acme/app/blob/0a1b2c/.env#L3")
    ///     .source("my scanner")]);
    /// assert_eq!(report.keys.len(), 1);
    /// ```
    pub fn new(candidates: impl IntoIterator<Item = LeakCandidate>) -> Self {
        Self {
            keys: candidates.into_iter().collect(),
        }
    }
}

impl LeakCandidate {
    /// The string found.
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            url: None,
            source: None,
        }
    }

    /// Where it was found.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// What found it.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }
}

impl RotateApiKey {
    /// The old key keeps working `grace_period_seconds` (0 to 604800).
    pub fn new(grace_period_seconds: u64) -> Self {
        Self {
            grace_period_seconds,
        }
    }
}

impl WorkflowWrite {
    /// An empty flow named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: default_workflow_type(),
            definition: None,
            error_handler: None,
        }
    }

    /// `flow` or `agent_flow`.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = kind.into();
        self
    }

    /// The definition: `{flow_version?, nodes, edges}`.
    pub fn definition(mut self, definition: Value) -> Self {
        self.definition = Some(definition);
        self
    }

    /// The error-handler node.
    pub fn error_handler(mut self, node_id: impl Into<String>) -> Self {
        self.error_handler = Some(node_id.into());
        self
    }
}

impl WorkflowVersionWrite {
    /// A version named `name` with `definition`.
    pub fn new(name: impl Into<String>, definition: Value) -> Self {
        Self {
            name: name.into(),
            description: None,
            definition,
        }
    }

    /// With a description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }
}

impl UpdateUser {
    /// Deactivates the user.
    pub fn deactivate() -> Self {
        Self {
            is_active: Some(false),
            tenant_admin: None,
        }
    }

    /// Unmakes an organization admin.
    pub fn unmake_org_admin() -> Self {
        Self {
            is_active: None,
            tenant_admin: Some(false),
        }
    }
}
