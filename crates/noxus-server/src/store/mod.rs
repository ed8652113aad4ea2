//! Persistence behind one trait, so that SQLite (the embedded default) and
//! PostgreSQL (scale-out) are interchangeable without touching callers.
//! Every mutating call writes its audit-log row in the same transaction.

mod callbacks;
mod common;
pub mod events;
mod ids;
mod leaks;
mod postgres;
mod rows;
mod runs;
mod sqlite;

pub use callbacks::{
    callback_event, CallbackAttempt, CallbackDelivery, CallbackKind, CallbackSecretGeneration,
    CallbackStatus, CallbackStore, SecurityWebhook, INTERRUPTED_LAST_ATTEMPT,
    KEY_REPORTED_LEAKED_EVENT, MAX_CALLBACK_ATTEMPTS,
};
pub use events::{EventBus, EventSubscription, RunSubscription, StoreEvent};
pub use ids::*;
pub use leaks::{leaked_key_event, KeyLeakRecord, KeyLeakStore, LeakLocation, LeakQuery};
pub use postgres::{migrate_only, PostgresStore, EVENTS_CHANNEL, RUNS_CHANNEL};
pub use runs::{
    event_kinds, NewRun, RunEvent, RunOutcome, RunQuotas, RunRecord, RunStatus, RunStep, RunStore,
    DEFAULT_MAX_ACTIVE_RUNS_PER_WORKSPACE, DEFAULT_MAX_RUN_BYTES_PER_WORKSPACE,
    DEFAULT_MAX_WAITING_CALLBACKS_PER_WORKSPACE,
};
pub use sqlite::{AuditArchive, Durability, SqliteStore};

/// Which database the platform runs on.
#[derive(Debug, Clone)]
pub enum DatabaseConfig {
    /// The embedded default: `noxus.db` in a data directory, one process.
    Sqlite {
        /// The directory.
        data_dir: std::path::PathBuf,
    },
    /// A PostgreSQL database shared by any number of processes.
    Postgres(PostgresOptions),
}

/// How to reach PostgreSQL.
#[derive(Clone)]
pub struct PostgresOptions {
    /// `postgres://user:password@host:port/database?...` (secret: it may
    /// hold a password; never logged).
    pub url: secrecy::SecretString,
    /// Most connections in the pool.
    pub max_connections: u32,
    /// Longest wait for a connection (new or from the pool).
    pub connect_timeout: std::time::Duration,
    /// Longest a statement may run (PostgreSQL's `statement_timeout`).
    pub statement_timeout: std::time::Duration,
    /// Where the event listener (`LISTEN`, one connection) connects, when
    /// not to `url`: PostgreSQL itself when `url` goes through a pooler in
    /// transaction mode (PgBouncer), which cannot carry `LISTEN`. Secret
    /// like `url`.
    pub listen_url: Option<secrecy::SecretString>,
}

impl PostgresOptions {
    /// Defaults for `url`: 16 connections, 5 s to connect, 10 s per statement.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: secrecy::SecretString::from(url.into()),
            max_connections: crate::config::defaults::DATABASE_MAX_CONNECTIONS,
            connect_timeout: std::time::Duration::from_millis(
                crate::config::defaults::DATABASE_CONNECT_TIMEOUT_MS,
            ),
            statement_timeout: std::time::Duration::from_millis(
                crate::config::defaults::DATABASE_STATEMENT_TIMEOUT_MS,
            ),
            listen_url: None,
        }
    }
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &"[redacted]")
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field(
                "listen_url",
                &self.listen_url.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// Opens (and migrates) the configured database.
pub async fn connect(database: &DatabaseConfig) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    match database {
        DatabaseConfig::Sqlite { data_dir } => Ok(std::sync::Arc::new(
            SqliteStore::open(data_dir).await.map_err(|e| {
                e.context(format!(
                    "cannot open the database in {}",
                    data_dir.display()
                ))
            })?,
        )),
        DatabaseConfig::Postgres(options) => {
            Ok(std::sync::Arc::new(PostgresStore::open(options).await?))
        }
    }
}

/// The store's traits, for callers: `use crate::store::prelude::*;` brings
/// every aspect's methods into scope on a `&dyn Store`.
pub mod prelude {
    pub use super::{
        AuditStore, CallbackStore, KeyLeakStore, KeyStore, MemberStore, RunStore, SessionStore,
        Store, UsageStore, WorkflowStore, WorkspaceStore,
    };
}

use async_trait::async_trait;
use noxus_api::{Permission, Role};
use serde_json::value::RawValue;
use serde_json::Value;
use time::OffsetDateTime;

use crate::domain::keys::KeyDigest;
use crate::rate_limit::RateLimit;

/// What can go wrong in the store. Callers map these to HTTP errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist (or is not visible in this scope).
    #[error("not found")]
    NotFound,
    /// The write would duplicate what must be unique; nothing changed.
    #[error("{0}")]
    Conflict(ConflictKind),
    /// A rule checked inside the write's transaction refused it; nothing changed.
    #[error("{0}")]
    Precondition(Precondition),
    /// Anything else from the database: becomes a 500 that is logged, never sent.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Stored data that cannot be decoded (a bug or manual tampering).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The write would take the workspace (or workflow) past a configured
    /// quota; checked inside the write's transaction, so concurrent writes
    /// cannot overshoot it together. Nothing was written.
    #[error("quota exceeded: {quota:?} (limit {limit})")]
    QuotaExceeded {
        /// Which quota.
        quota: Quota,
        /// Its configured limit.
        limit: u64,
    },
}

impl StoreError {
    /// Whether the database could not be reached or could not answer
    /// (connection refused or lost, pool exhausted, statement timeout, disk
    /// I/O, locked): the request may succeed later, and callers answer 503
    /// `service_unavailable` with `Retry-After`, never "allowed because we
    /// could not check".
    pub fn is_unavailable(&self) -> bool {
        let Self::Database(err) = self else {
            return false;
        };
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => true,
            sqlx::Error::Database(db) => {
                let code = db.code();
                let code = code.as_deref().unwrap_or("");
                // PostgreSQL: connection exceptions (class 08), operator
                // intervention (57: shutdown, cannot connect now, statement
                // timeout / cancel), insufficient resources (53).
                code.starts_with("08")
                    || code.starts_with("57")
                    || code.starts_with("53")
                    // SQLite primary codes (extended codes keep them in the
                    // low byte): BUSY 5, LOCKED 6, NOMEM 7, READONLY 8,
                    // IOERR 10, CORRUPT-free FULL 13, CANTOPEN 14, PROTOCOL 15.
                    || code
                        .parse::<i64>()
                        .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 7 | 8 | 10 | 13 | 14 | 15))
            }
            _ => false,
        }
    }
}

/// What a refused write would have duplicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConflictKind {
    /// A workspace of the organization already has this name.
    #[error("a workspace with this name already exists")]
    WorkspaceName,
    /// A user already logs in with this email.
    #[error("a user with this email already exists")]
    UserEmail,
    /// A key with this digest exists (a generated key collided: never in
    /// practice, 190 random bits).
    #[error("a key with this value already exists")]
    KeyDigest,
}

/// A limit on what a workspace may store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// Workflows per workspace.
    WorkflowsPerWorkspace,
    /// Versions per workflow.
    VersionsPerWorkflow,
    /// Bytes of stored definitions (workflows and versions) per workspace.
    DefinitionBytesPerWorkspace,
    /// Queued and running runs per workspace.
    ActiveRunsPerWorkspace,
    /// Bytes held by the runs of a workspace.
    RunBytesPerWorkspace,
    /// Run callbacks waiting to be delivered (and queued or running runs
    /// that will send one) per workspace.
    WaitingCallbacksPerWorkspace,
}

impl Quota {
    /// The sentence a client sees at the limit: what is full, its limit,
    /// and how to make room.
    pub fn sentence(self, limit: u64) -> String {
        match self {
            Self::WorkflowsPerWorkspace => format!(
                "This workspace already has {limit} workflows, the most it may hold; delete workflows it no longer needs to create others"
            ),
            Self::VersionsPerWorkflow => format!(
                "This workflow already has {limit} versions, the most it may hold; save the workflow as a new one, or delete it, to keep more"
            ),
            Self::DefinitionBytesPerWorkspace => format!(
                "This change would take the workflow definitions stored in this workspace past its limit of {limit} bytes; delete workflows (with their versions) it no longer needs, or store smaller definitions"
            ),
            Self::ActiveRunsPerWorkspace => format!(
                "This workspace already has {limit} queued or running runs, the most it may hold; wait for some to finish, or stop those no longer needed, before starting others"
            ),
            Self::RunBytesPerWorkspace => format!(
                "This run would take what the runs of this workspace hold past their limit of {limit} bytes; delete finished runs it no longer needs (DELETE /v1/runs/{{id}}, POST /v1/runs/bulk/delete) before starting others"
            ),
            Self::WaitingCallbacksPerWorkspace => format!(
                "This workspace already has {limit} run callbacks waiting to be delivered (or runs under way that will send one), the most it may hold; check that the receiver answers (GET /v1/runs/{{id}}/callback says why it did not), delete runs whose callbacks are no longer wanted, or start runs without callback_url"
            ),
        }
    }
}

/// The quotas a workflow write is checked against (from the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkflowQuotas {
    /// Workflows per workspace.
    pub workflows_per_workspace: u64,
    /// Versions per workflow.
    pub versions_per_workflow: u64,
    /// Bytes of stored definitions per workspace.
    pub definition_bytes_per_workspace: u64,
}

/// Which versions of a workflow to read: a slice in saving order, with or
/// without their definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionSlice {
    /// Versions to skip.
    pub offset: u64,
    /// At most this many.
    pub limit: u64,
    /// Read the definitions too (else [`WorkflowVersionRecord::definition`] is `None`).
    pub definitions: bool,
}

/// A rule that a write checks inside its own transaction, so that two
/// concurrent writes cannot both pass it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Precondition {
    /// The change would leave the workspace without an owner.
    #[error("a workspace keeps at least one owner: make someone else owner first")]
    LastOwner,
    /// The change would leave the organization without an active admin.
    #[error("the organization keeps at least one active organization admin: make someone else organization admin first")]
    LastOrgAdmin,
    /// Rotation of a key that is revoked.
    #[error("a revoked key cannot be rotated; create a new key")]
    KeyRevoked,
    /// Rotation of a key past its expiry.
    #[error("an expired key cannot be rotated; create a new key")]
    KeyExpired,
    /// Rotation of a key that was already rotated.
    #[error("this key was already rotated; rotate its replacement instead")]
    KeyAlreadyRotated,
    /// The platform is already set up.
    #[error("the platform is already set up")]
    AlreadySetUp,
    /// Too many live keys for one user in one workspace.
    #[error("you already have {limit} live keys in this workspace, the most one user may have; revoke keys you no longer use")]
    TooManyKeysForUser {
        /// The limit.
        limit: u32,
    },
    /// Too many live keys in one workspace.
    #[error("this workspace already has {limit} live keys, the most it may have; revoke keys that are no longer used")]
    TooManyKeysInWorkspace {
        /// The limit.
        limit: u32,
    },
}

/// How many live (not revoked, not expired, not replaced) keys may exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyQuotas {
    /// Per user in one workspace.
    pub per_user: u32,
    /// Per workspace.
    pub per_workspace: u32,
}

impl Default for KeyQuotas {
    fn default() -> Self {
        Self {
            per_user: crate::config::defaults::MAX_KEYS_PER_USER,
            per_workspace: crate::config::defaults::MAX_KEYS_PER_WORKSPACE,
        }
    }
}

/// Why a key stopped working before its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokedReason {
    /// Revoked by someone (itself, its owner, an admin).
    Revoked,
    /// Rotated without a grace period.
    Rotated,
    /// Its owner was removed from its workspace.
    OwnerRemoved,
    /// Its owner was deactivated.
    OwnerDeactivated,
    /// Someone reported it leaked (`POST /v1/keys/leaks`): it was found
    /// where it should not be.
    Leaked,
}

impl RevokedReason {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Rotated => "rotated",
            Self::OwnerRemoved => "owner_removed",
            Self::OwnerDeactivated => "owner_deactivated",
            Self::Leaked => "leaked",
        }
    }

    /// From the stored text (unknown text reads as `Revoked`).
    pub fn parse(text: &str) -> Self {
        match text {
            "rotated" => Self::Rotated,
            "owner_removed" => Self::OwnerRemoved,
            "owner_deactivated" => Self::OwnerDeactivated,
            "leaked" => Self::Leaked,
            _ => Self::Revoked,
        }
    }

    /// Disabled with its owner (removed or deactivated), not revoked by a person.
    pub fn is_disabled(self) -> bool {
        matches!(self, Self::OwnerRemoved | Self::OwnerDeactivated)
    }

    /// A sentence fragment for people.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Rotated => "replaced by rotation",
            Self::OwnerRemoved => "disabled: its owner was removed from the workspace",
            Self::OwnerDeactivated => "disabled: its owner was deactivated",
            Self::Leaked => "reported leaked",
        }
    }
}

/// Result alias for store calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// Who made a change, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// The user acting (through a key or the dashboard), if any.
    pub user_id: Option<UserId>,
    /// The key used, if the change came through the API.
    pub key_id: Option<KeyId>,
    /// The client's address.
    pub client_addr: Option<String>,
}

impl Actor {
    /// The platform itself (first start, maintenance).
    pub fn system() -> Self {
        Self::default()
    }
}

/// What the first start creates. `Debug` leaves the password hash out.
#[derive(Clone)]
pub struct BootstrapRequest {
    /// Organization name.
    pub organization_name: String,
    /// Owner's email.
    pub admin_email: String,
    /// Owner's display name.
    pub admin_name: String,
    /// Owner's argon2id hash.
    pub password_hash: String,
    /// First workspace's name.
    pub workspace_name: String,
    /// The first key (its digest and display fragments), if one is issued.
    pub first_key: Option<(String, KeyDigest, String, String)>,
}

impl std::fmt::Debug for BootstrapRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapRequest")
            .field("organization_name", &self.organization_name)
            .field("admin_email", &self.admin_email)
            .field("workspace_name", &self.workspace_name)
            .finish_non_exhaustive()
    }
}

/// What the first start created.
#[derive(Debug, Clone)]
pub struct BootstrapOutcome {
    /// The organization.
    pub organization: Organization,
    /// The owner.
    pub user: UserRecord,
    /// The workspace.
    pub workspace: WorkspaceRecord,
    /// The first key.
    pub key: Option<KeyRecord>,
}

/// An organization (tenant).
#[derive(Debug, Clone)]
pub struct Organization {
    /// Id.
    pub id: OrganizationId,
    /// Name.
    pub name: String,
}

/// A user account. `Debug` leaves the password hash out.
#[derive(Clone)]
pub struct UserRecord {
    /// Id.
    pub id: UserId,
    /// Organization.
    pub organization_id: OrganizationId,
    /// Login email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Organization admin: may create tenant-admin keys.
    pub is_org_admin: bool,
    /// When the user was deactivated (cannot log in, keys revoked).
    pub deactivated_at: Option<OffsetDateTime>,
    /// Must choose a new password before anything else (set by an admin).
    pub must_change_password: bool,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("organization_id", &self.organization_id)
            .field("email", &self.email)
            .field("is_org_admin", &self.is_org_admin)
            .field("deactivated_at", &self.deactivated_at)
            .finish_non_exhaustive()
    }
}

impl UserRecord {
    /// Not deactivated.
    pub fn is_active(&self) -> bool {
        self.deactivated_at.is_none()
    }

    /// An organization admin who is active.
    pub fn is_active_org_admin(&self) -> bool {
        self.is_org_admin && self.is_active()
    }
}

/// A dashboard session. The token itself is only in the user's cookie.
#[derive(Clone)]
pub struct SessionRecord {
    /// SHA-256 of the cookie token, hex.
    pub token_digest: String,
    /// The user.
    pub user_id: UserId,
    /// The per-session CSRF token put in every form.
    pub csrf_token: String,
    /// Created.
    pub created_at: OffsetDateTime,
    /// Ends at the latest.
    pub expires_at: OffsetDateTime,
    /// Last request (the idle timeout counts from it; written at most once a minute).
    pub last_seen_at: OffsetDateTime,
    /// When the password was last entered in this session (sudo mode).
    pub reauth_at: Option<OffsetDateTime>,
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("user_id", &self.user_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A workspace.
#[derive(Debug, Clone)]
pub struct WorkspaceRecord {
    /// Id.
    pub id: WorkspaceId,
    /// Organization.
    pub organization_id: OrganizationId,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Created.
    pub created_at: OffsetDateTime,
    /// Default rate limit of the workspace's keys (else the server's).
    pub rate_limit: Option<RateLimit>,
}

/// A stored API key: never the secret, only its digest and display fragments.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// Id.
    pub id: KeyId,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Owner.
    pub user_id: UserId,
    /// Name.
    pub name: String,
    /// SHA-256 (or HMAC-SHA-256 with the pepper) of the key, hex.
    pub digest: KeyDigest,
    /// First 10 characters.
    pub prefix: String,
    /// Last 4 characters.
    pub suffix: String,
    /// Organization-wide admin key.
    pub tenant_admin: bool,
    /// Restriction to a subset of the owner's permissions.
    pub restriction: Option<Vec<Permission>>,
    /// Created.
    pub created_at: OffsetDateTime,
    /// Expiry (also set by rotation to the end of the grace period).
    pub expires_at: Option<OffsetDateTime>,
    /// Revocation time.
    pub revoked_at: Option<OffsetDateTime>,
    /// Successor by rotation.
    pub replaced_by: Option<KeyId>,
    /// Last use (flushed in batches, up to a second late).
    pub last_used_at: Option<OffsetDateTime>,
    /// This key's own rate limit, overriding the workspace's default.
    pub rate_limit: Option<RateLimit>,
    /// Address of the last use.
    pub last_used_addr: Option<String>,
    /// Why it was revoked, when it was.
    pub revoked_reason: Option<RevokedReason>,
}

/// Request counts of one key in one hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCounts {
    /// Every request made with the key.
    pub requests: u64,
    /// 2xx answers.
    pub ok: u64,
    /// 4xx answers.
    pub client_errors: u64,
    /// 5xx answers.
    pub server_errors: u64,
    /// 401: the key was revoked, expired, or its owner left the workspace.
    pub unauthorized: u64,
    /// 403: the key lacked a permission.
    pub forbidden: u64,
    /// 429: over the key's rate limit.
    pub rate_limited: u64,
}

impl UsageCounts {
    /// Counts one answer with `status`.
    pub fn count(&mut self, status: u16) {
        self.requests += 1;
        match status {
            200..=299 => self.ok += 1,
            400..=499 => self.client_errors += 1,
            500..=599 => self.server_errors += 1,
            _ => {}
        }
        match status {
            401 => self.unauthorized += 1,
            403 => self.forbidden += 1,
            429 => self.rate_limited += 1,
            _ => {}
        }
    }

    /// Adds another count.
    pub fn add(&mut self, other: &UsageCounts) {
        self.requests += other.requests;
        self.ok += other.ok;
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
        self.unauthorized += other.unauthorized;
        self.forbidden += other.forbidden;
        self.rate_limited += other.rate_limited;
    }
}

/// What the usage recorder writes for one key in one flush.
#[derive(Debug, Clone)]
pub struct KeyUsageFlush {
    /// The key.
    pub key_id: KeyId,
    /// Its workspace.
    pub workspace_id: WorkspaceId,
    /// Latest use and its address.
    pub last_used: Option<(OffsetDateTime, Option<String>)>,
    /// Counts to add, per hour (Unix time / 3600).
    pub hours: Vec<(i64, UsageCounts)>,
    /// Addresses seen since the last flush, with when.
    pub addresses: Vec<(String, OffsetDateTime)>,
}

/// One stored hour of one key.
#[derive(Debug, Clone)]
pub struct UsageHour {
    /// The key.
    pub key_id: KeyId,
    /// Unix time / 3600.
    pub hour: i64,
    /// The counts.
    pub counts: UsageCounts,
}

/// An address a key was used from.
#[derive(Debug, Clone)]
pub struct KeyAddress {
    /// The address.
    pub addr: String,
    /// First use from it.
    pub first_seen_at: OffsetDateTime,
    /// Latest use from it (flushed).
    pub last_seen_at: OffsetDateTime,
}

/// A key with everything needed to authorize a request made with it.
#[derive(Debug, Clone)]
pub struct KeyAuthRecord {
    /// The key.
    pub key: KeyRecord,
    /// The workspace's organization.
    pub organization_id: OrganizationId,
    /// The workspace's name.
    pub workspace_name: String,
    /// The owner's current role in the key's workspace; `None` if no longer a member.
    pub role: Option<Role>,
    /// The owner's email.
    pub user_email: String,
    /// Whether the owner is (still) an organization admin.
    pub user_is_org_admin: bool,
    /// Whether the owner is active (not deactivated).
    pub user_active: bool,
    /// The workspace's default rate limit for its keys.
    pub workspace_rate_limit: Option<RateLimit>,
}

/// A key to insert.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Owner.
    pub user_id: UserId,
    /// Name.
    pub name: String,
    /// Digest of the secret.
    pub digest: KeyDigest,
    /// First 10 characters.
    pub prefix: String,
    /// Last 4 characters.
    pub suffix: String,
    /// Tenant admin.
    pub tenant_admin: bool,
    /// Restriction.
    pub restriction: Option<Vec<Permission>>,
    /// Expiry.
    pub expires_at: Option<OffsetDateTime>,
    /// Own rate limit (overrides the workspace default).
    pub rate_limit: Option<RateLimit>,
}

/// A user to create.
#[derive(Clone)]
pub struct NewUser {
    /// Organization.
    pub organization_id: OrganizationId,
    /// Login email (lowercase).
    pub email: String,
    /// Display name.
    pub name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Organization admin.
    pub is_org_admin: bool,
    /// Must choose a new password at first login (someone else chose this one).
    pub must_change_password: bool,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("email", &self.email)
            .field("is_org_admin", &self.is_org_admin)
            .finish_non_exhaustive()
    }
}

/// A workflow row.
#[derive(Debug, Clone)]
pub struct WorkflowRecord {
    /// Id.
    pub id: WorkflowId,
    /// Workspace.
    pub workspace_id: WorkspaceId,
    /// Name.
    pub name: String,
    /// `flow` or `agent_flow`.
    pub kind: String,
    /// Definition, verbatim: the stored JSON text, checked but not parsed
    /// into a tree, so that listing serves it without re-encoding.
    pub definition: Box<RawValue>,
    /// Error handler node id.
    pub error_handler: Option<String>,
    /// Created.
    pub created_at: OffsetDateTime,
    /// Updated.
    pub updated_at: OffsetDateTime,
}

/// The writable fields of a workflow.
#[derive(Debug, Clone)]
pub struct WorkflowFields {
    /// Name.
    pub name: String,
    /// `flow` or `agent_flow`.
    pub kind: String,
    /// Definition.
    pub definition: Value,
    /// Error handler.
    pub error_handler: Option<String>,
}

/// A workflow version row.
#[derive(Debug, Clone)]
pub struct WorkflowVersionRecord {
    /// Id.
    pub id: WorkflowVersionId,
    /// Workflow.
    pub workflow_id: WorkflowId,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Definition, verbatim (stored JSON text); `None` when a listing did
    /// not ask for it.
    pub definition: Option<Box<RawValue>>,
    /// User who saved it.
    pub created_by: Option<UserId>,
    /// When.
    pub created_at: OffsetDateTime,
}

/// Which audit rows to read.
#[derive(Debug, Clone)]
pub struct AuditQuery {
    /// The organization.
    pub organization_id: OrganizationId,
    /// Only this workspace's rows.
    pub workspace_id: Option<WorkspaceId>,
    /// Only actions starting with this, e.g. `api_key.`.
    pub action_prefix: Option<String>,
    /// Only rows older than this sequence number (paging).
    pub before_id: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// One row of the audit log.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// Sequence number.
    pub id: i64,
    /// Organization.
    pub organization_id: OrganizationId,
    /// Workspace concerned, if any.
    pub workspace_id: Option<WorkspaceId>,
    /// Acting user.
    pub actor_user_id: Option<UserId>,
    /// Acting key.
    pub actor_key_id: Option<KeyId>,
    /// E.g. `api_key.revoke`.
    pub action: String,
    /// E.g. `api_key`.
    pub target_type: String,
    /// Id of the target.
    pub target_id: String,
    /// Extra facts (never secrets).
    pub details: Value,
    /// Client address.
    pub client_addr: Option<String>,
    /// When.
    pub created_at: OffsetDateTime,
}

/// API keys. The authentication hot path needs only this aspect.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Looks a key up by digest, with its owner's current role (the hot path
    /// behind the cache).
    async fn key_for_auth(&self, digest: &KeyDigest) -> StoreResult<Option<KeyAuthRecord>>;
    /// Inserts a key, unless its owner or its workspace already has as many
    /// live keys as `quotas` allows (checked in the same transaction:
    /// [`Precondition::TooManyKeysForUser`], [`Precondition::TooManyKeysInWorkspace`]).
    async fn create_key(
        &self,
        actor: &Actor,
        key: NewKey,
        quotas: KeyQuotas,
    ) -> StoreResult<KeyRecord>;
    /// Keys of a workspace, newest first; only `user_id`'s when given.
    async fn list_keys(
        &self,
        workspace_id: &WorkspaceId,
        user_id: Option<&UserId>,
    ) -> StoreResult<Vec<KeyRecord>>;
    /// One page of [`KeyStore::list_keys`], with the total.
    async fn list_keys_page(
        &self,
        workspace_id: &WorkspaceId,
        user_id: Option<&UserId>,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(Vec<KeyRecord>, u64)>;
    /// Replaces a key's stored digest (a key verified under the previous
    /// pepper is re-hashed under the current one).
    async fn replace_key_digest(
        &self,
        key_id: &KeyId,
        old: &KeyDigest,
        new: &KeyDigest,
    ) -> StoreResult<()>;
    /// One key of a workspace.
    async fn key(&self, workspace_id: &WorkspaceId, id: &KeyId) -> StoreResult<Option<KeyRecord>>;
    /// Revokes a key (idempotent: revoking twice keeps the first time).
    async fn revoke_key(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        id: &KeyId,
    ) -> StoreResult<KeyRecord>;
    /// Inserts `new` as the successor of key `id`, whose expiry becomes
    /// `old_valid_until` (or which is revoked at once when that is `None`).
    /// Only a live key that was not rotated yet can be rotated; the check is a
    /// conditional write in the same transaction, so of two concurrent
    /// rotations exactly one wins ([`Precondition::KeyAlreadyRotated`],
    /// [`Precondition::KeyRevoked`], [`Precondition::KeyExpired`]).
    async fn rotate_key(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        id: &KeyId,
        new: NewKey,
        old_valid_until: Option<OffsetDateTime>,
    ) -> StoreResult<(KeyRecord, KeyRecord)>;
}

/// Workspaces of the organization and their settings.
#[async_trait]
pub trait WorkspaceStore: Send + Sync {
    /// Creates a workspace with `owner_user_id` as its owner.
    async fn create_workspace(
        &self,
        actor: &Actor,
        organization_id: &OrganizationId,
        name: &str,
        description: Option<&str>,
        owner_user_id: &UserId,
    ) -> StoreResult<WorkspaceRecord>;
    /// Workspaces of the organization, by creation time.
    async fn list_workspaces(
        &self,
        organization_id: &OrganizationId,
    ) -> StoreResult<Vec<WorkspaceRecord>>;
    /// One workspace of the organization.
    async fn workspace(
        &self,
        organization_id: &OrganizationId,
        id: &WorkspaceId,
    ) -> StoreResult<Option<WorkspaceRecord>>;
    /// Sets (or clears) the default rate limit of a workspace's keys.
    async fn set_workspace_rate_limit(
        &self,
        actor: &Actor,
        organization_id: &OrganizationId,
        workspace_id: &WorkspaceId,
        limit: Option<RateLimit>,
    ) -> StoreResult<WorkspaceRecord>;
    /// Deletes a workspace with its keys, memberships and workflows.
    async fn delete_workspace(
        &self,
        actor: &Actor,
        organization_id: &OrganizationId,
        id: &WorkspaceId,
    ) -> StoreResult<()>;
}

/// The organization, its users, and who is a member of which workspace with which role.
#[async_trait]
pub trait MemberStore: Send + Sync {
    /// First start, in one transaction: creates the organization, its first
    /// owner (an organization admin), a workspace and, if given, a
    /// tenant-admin key. Returns `None`, changing nothing, when an
    /// organization already exists.
    async fn bootstrap(&self, request: BootstrapRequest) -> StoreResult<Option<BootstrapOutcome>>;
    /// The organization, if the platform has been set up.
    async fn organization(&self) -> StoreResult<Option<Organization>>;
    /// Creates the organization (first start).
    async fn create_organization(&self, actor: &Actor, name: &str) -> StoreResult<Organization>;
    /// Creates a user.
    async fn create_user(&self, actor: &Actor, user: NewUser) -> StoreResult<UserRecord>;
    /// Invites a person into a workspace in one transaction: creates the
    /// user (never an organization admin, whatever `user` says) and makes
    /// them a member of `workspace_id` with `role`, with an audit entry for
    /// each (`user.create` naming the workspace, then `membership.set`).
    /// An email already taken is [`ConflictKind::UserEmail`] and changes
    /// nothing; a workspace of another organization is
    /// [`StoreError::NotFound`].
    async fn create_member(
        &self,
        actor: &Actor,
        user: NewUser,
        workspace_id: &WorkspaceId,
        role: Role,
    ) -> StoreResult<UserRecord>;
    /// Finds a user by login email.
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>>;
    /// Finds a user by id.
    async fn user(&self, id: &UserId) -> StoreResult<Option<UserRecord>>;
    /// Grants or changes a role; returns the previous one. Demoting the
    /// workspace's last owner is refused inside the transaction
    /// ([`Precondition::LastOwner`]), so two owners demoting each other at
    /// once cannot leave none.
    async fn set_membership(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        user_id: &UserId,
        role: Role,
    ) -> StoreResult<Option<Role>>;
    /// Removes a user from a workspace and, in the same transaction, revokes
    /// their live keys there for good ([`RevokedReason::OwnerRemoved`]):
    /// adding them back does not revive them. Removing the last owner is
    /// refused ([`Precondition::LastOwner`]). Returns the revoked keys' ids.
    async fn remove_membership(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        user_id: &UserId,
    ) -> StoreResult<Vec<KeyId>>;
    /// Deactivates a user (`active = false`): in one transaction, marks them
    /// deactivated, revokes every live key of theirs in every workspace
    /// ([`RevokedReason::OwnerDeactivated`]) and ends their sessions; the last
    /// active organization admin is refused ([`Precondition::LastOrgAdmin`]).
    /// Reactivating (`active = true`) lets them log in again; their keys stay
    /// revoked. Returns the user and the revoked keys' ids.
    async fn set_user_active(
        &self,
        actor: &Actor,
        organization_id: &OrganizationId,
        user_id: &UserId,
        active: bool,
    ) -> StoreResult<(UserRecord, Vec<KeyId>)>;
    /// Makes or unmakes an organization admin; never leaves the organization
    /// without an active one ([`Precondition::LastOrgAdmin`]).
    async fn set_org_admin(
        &self,
        actor: &Actor,
        organization_id: &OrganizationId,
        user_id: &UserId,
        is_org_admin: bool,
    ) -> StoreResult<UserRecord>;
    /// Replaces a user's password hash and ends their sessions, except
    /// `keep_session` (a token digest) when given. `must_change` is set for a
    /// password chosen by someone else (an admin's reset).
    async fn set_password(
        &self,
        actor: &Actor,
        user_id: &UserId,
        password_hash: &str,
        must_change: bool,
        keep_session: Option<&str>,
    ) -> StoreResult<()>;
    /// The user's role in a workspace.
    async fn membership(
        &self,
        workspace_id: &WorkspaceId,
        user_id: &UserId,
    ) -> StoreResult<Option<Role>>;
    /// Users of the organization, by email.
    async fn list_users(&self, organization_id: &OrganizationId) -> StoreResult<Vec<UserRecord>>;
    /// Members of a workspace with their roles, by email.
    async fn list_members(
        &self,
        workspace_id: &WorkspaceId,
    ) -> StoreResult<Vec<(UserRecord, Role)>>;
    /// Workspaces the user is a member of, with the role.
    async fn workspaces_of_user(
        &self,
        user_id: &UserId,
    ) -> StoreResult<Vec<(WorkspaceRecord, Role)>>;
}

/// Dashboard sessions (only token digests are stored) and single-use form nonces.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a session (only the digest of its token).
    async fn create_session(&self, session: &SessionRecord) -> StoreResult<()>;
    /// A live session and its user, by token digest.
    async fn session(
        &self,
        token_digest: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Option<(SessionRecord, UserRecord)>>;
    /// Ends a session.
    async fn delete_session(&self, token_digest: &str) -> StoreResult<()>;
    /// Ends every session of a user.
    async fn delete_user_sessions(&self, user_id: &UserId) -> StoreResult<()>;
    /// Ends every session of a user but `keep` (a token digest), and audits
    /// it (`user.sessions_end`); returns how many ended.
    async fn end_sessions(
        &self,
        actor: &Actor,
        user_id: &UserId,
        keep: Option<&str>,
    ) -> StoreResult<u64>;
    /// Notes a request in a session (its idle timeout counts from it).
    async fn touch_session(&self, token_digest: &str, at: OffsetDateTime) -> StoreResult<()>;
    /// Notes that the password was just entered in a session (sudo mode).
    async fn set_session_reauth(&self, token_digest: &str, at: OffsetDateTime) -> StoreResult<()>;
    /// Deletes sessions that ended (past their limit, or idle since before
    /// `idle_before`) and form nonces used before `nonces_before`; returns
    /// how many rows went.
    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        idle_before: OffsetDateTime,
        nonces_before: OffsetDateTime,
    ) -> StoreResult<u64>;
    /// Marks a form nonce used; `false` if it already was.
    async fn use_nonce(&self, nonce: &str) -> StoreResult<bool>;
}

/// Per-key usage: hourly counts, last use, the addresses a key was used from.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Adds a batch of usage (counts, last use, addresses) in one
    /// transaction, and keeps at most `max_addresses_per_key` addresses per
    /// key (the most recently seen).
    async fn record_usage(
        &self,
        batch: &[KeyUsageFlush],
        max_addresses_per_key: usize,
    ) -> StoreResult<()>;
    /// Hourly usage of a workspace's keys (or one key) in `[from_hour, to_hour]`.
    async fn usage_hours(
        &self,
        workspace_id: &WorkspaceId,
        key_id: Option<&KeyId>,
        from_hour: i64,
        to_hour: i64,
    ) -> StoreResult<Vec<UsageHour>>;
    /// Deletes hourly usage before `before_hour`, key addresses last seen
    /// before it, and keys that stopped working (revoked or expired) before
    /// it; returns how many rows went.
    async fn prune_usage(&self, before_hour: i64) -> StoreResult<u64>;
    /// A page of the addresses a key was used from, most recently seen
    /// first, and how many there are.
    async fn key_addresses(
        &self,
        key_id: &KeyId,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(Vec<KeyAddress>, u64)>;
}

/// The append-only audit log (every mutating call of every aspect writes its row in its own transaction).
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// The newest audit rows of an organization, optionally from one workspace.
    async fn audit_log(
        &self,
        organization_id: &OrganizationId,
        workspace_id: Option<&WorkspaceId>,
        limit: u32,
    ) -> StoreResult<Vec<AuditRecord>> {
        self.search_audit(&AuditQuery {
            organization_id: organization_id.clone(),
            workspace_id: workspace_id.cloned(),
            action_prefix: None,
            before_id: None,
            limit,
        })
        .await
    }
    /// Audit rows matching a query, newest first.
    async fn search_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRecord>>;
}

/// Workflows and their versions, within the workspace's quotas.
#[async_trait]
pub trait WorkflowStore: Send + Sync {
    /// Inserts a workflow, within the workspace's quotas.
    async fn create_workflow(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        fields: WorkflowFields,
        quotas: &WorkflowQuotas,
    ) -> StoreResult<WorkflowRecord>;
    /// One page of a workspace's workflows of a type, oldest first, with the total.
    async fn list_workflows(
        &self,
        workspace_id: &WorkspaceId,
        kind: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(Vec<WorkflowRecord>, u64)>;
    /// One workflow of a workspace.
    async fn workflow(
        &self,
        workspace_id: &WorkspaceId,
        id: &WorkflowId,
    ) -> StoreResult<Option<WorkflowRecord>>;
    /// Replaces a workflow's fields (a larger definition must fit the
    /// workspace's definition bytes quota; a smaller one always may).
    async fn update_workflow(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        id: &WorkflowId,
        fields: WorkflowFields,
        quotas: &WorkflowQuotas,
    ) -> StoreResult<WorkflowRecord>;
    /// Deletes a workflow and its versions.
    async fn delete_workflow(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        id: &WorkflowId,
    ) -> StoreResult<()>;
    /// Saves a version of a workflow of the workspace, within the quotas.
    #[allow(clippy::too_many_arguments)]
    async fn create_workflow_version(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        workflow_id: &WorkflowId,
        name: &str,
        description: Option<&str>,
        definition: Value,
        quotas: &WorkflowQuotas,
    ) -> StoreResult<WorkflowVersionRecord>;
    /// A slice of a workflow's versions in saving order (oldest first), and
    /// how many it has.
    async fn list_workflow_versions(
        &self,
        workspace_id: &WorkspaceId,
        workflow_id: &WorkflowId,
        slice: VersionSlice,
    ) -> StoreResult<(Vec<WorkflowVersionRecord>, u64)>;
    /// Replaces a version's name, description and definition (within the
    /// definition bytes quota, as [`WorkflowStore::update_workflow`]).
    #[allow(clippy::too_many_arguments)]
    async fn update_workflow_version(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        workflow_id: &WorkflowId,
        version_id: &WorkflowVersionId,
        name: &str,
        description: Option<&str>,
        definition: Value,
        quotas: &WorkflowQuotas,
    ) -> StoreResult<WorkflowVersionRecord>;
}

/// The rate-limit counters that replicas sharing a database add to
/// ([`crate::cluster_limits`]): per scope and one-second window.
#[async_trait]
pub trait RateCounterStore: Send + Sync {
    /// Adds each delta of `batch` (scope, delta) to the scope's counter in
    /// `window` (Unix seconds), and returns, in the batch's order, each
    /// counter's total in `window` after the addition and in `window - 1`.
    async fn add_to_rate_counters(
        &self,
        window: i64,
        batch: &[(String, i64)],
    ) -> StoreResult<Vec<(i64, i64)>>;
    /// Deletes the counters of windows before `window`; returns how many.
    async fn prune_rate_counters(&self, window: i64) -> StoreResult<u64>;
}

/// Storage of the platform: every aspect, plus what concerns the database
/// as a whole. Implementations must be safe to share between request
/// handlers, must make every method atomic, and must publish the
/// [`StoreEvent`]s of every committed change (never of a rolled-back one)
/// on [`Store::events`].
#[async_trait]
pub trait Store:
    KeyStore
    + KeyLeakStore
    + WorkspaceStore
    + MemberStore
    + SessionStore
    + UsageStore
    + AuditStore
    + WorkflowStore
    + RunStore
    + CallbackStore
    + std::fmt::Debug
    + 'static
{
    /// Checks that the database answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;
    /// Flushes and closes connections (graceful shutdown).
    async fn close(&self);
    /// A platform setting.
    async fn setting(&self, name: &str) -> StoreResult<Option<String>>;
    /// Sets a platform setting.
    async fn set_setting(&self, name: &str, value: &str) -> StoreResult<()>;
    /// Sets a platform setting that is not set yet, and returns the stored
    /// value: `value`, or the one already there. Of several processes
    /// calling it at once, all get the same value.
    async fn setting_or_insert(&self, name: &str, value: &str) -> StoreResult<String>;
    /// Where this store publishes the events of committed changes (its own,
    /// and with a shared database those of other processes).
    fn events(&self) -> &EventBus;
    /// A subscription to [`Store::events`] (what can change a key's rights).
    fn subscribe(&self) -> EventSubscription {
        self.events().subscribe()
    }
    /// A subscription to the run changes of [`Store::events`]
    /// ([`StoreEvent::RunChanged`]), its own and, with a shared database,
    /// those of other processes.
    fn subscribe_runs(&self) -> RunSubscription {
        self.events().subscribe_runs()
    }
    /// The shared rate-limit counters, for a database that several
    /// processes share (PostgreSQL); `None` for one that serves one process
    /// (SQLite), whose limits need no sharing.
    fn rate_counters(&self) -> Option<&dyn RateCounterStore> {
        None
    }
    /// The connection pool as it is now (for the metrics): its
    /// connections, how many are idle, and its bound.
    fn pool_stats(&self) -> PoolStats;
    /// How many runs wait for a worker and how many are running now, over
    /// the whole database (for the metrics).
    async fn active_runs(&self) -> StoreResult<ActiveRuns>;
}

/// A connection pool as it is now ([`Store::pool_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open.
    pub open: u32,
    /// Of those, connections not in use.
    pub idle: u32,
    /// Most connections the pool opens.
    pub max: u32,
}

impl PoolStats {
    /// The stats of a sqlx pool.
    pub fn of<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) -> Self {
        Self {
            open: pool.size(),
            idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
            max: pool.options().get_max_connections(),
        }
    }
}

/// Runs not ended yet ([`Store::active_runs`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActiveRuns {
    /// Waiting for a worker.
    pub queued: u64,
    /// Claimed by a worker.
    pub running: u64,
}

/// [`ActiveRuns`] from `(status, count)` rows.
pub(crate) fn active_runs_of(rows: Vec<(String, i64)>) -> ActiveRuns {
    let mut runs = ActiveRuns::default();
    for (status, count) in rows {
        let count = u64::try_from(count).unwrap_or(0);
        match RunStatus::parse(&status) {
            Some(RunStatus::Queued) => runs.queued = count,
            Some(RunStatus::Running) => runs.running = count,
            _ => {}
        }
    }
    runs
}
