//! Rows as the databases return them, and their records: the mapping is
//! written once per table here, not per query, for both backends (the
//! derived `FromRow` is generic over the database). Times are Unix
//! milliseconds (SQLite INTEGER, PostgreSQL BIGINT), booleans SQLite
//! INTEGER or PostgreSQL BOOLEAN, JSON text.

use super::common::*;
use super::*;

/// The columns of [`KeyRow`], from `api_keys k`.
pub(super) const KEY_COLUMNS: &str = "k.id, k.workspace_id, k.user_id, k.name, k.digest, k.prefix, k.suffix,
    k.tenant_admin, k.restriction, k.created_at, k.expires_at, k.revoked_at, k.replaced_by,
    k.last_used_at, k.last_used_addr, k.rate_limit_per_second, k.rate_limit_burst, k.revoked_reason";

fn rate_limit(rate: Option<i64>, burst: Option<i64>) -> Option<RateLimit> {
    rate.map(|r| RateLimit {
        per_second: u32::try_from(r).unwrap_or(u32::MAX),
        burst: burst.and_then(|b| u32::try_from(b).ok()).unwrap_or(1),
    })
}

/// A stored JSON text as it is: checked to be JSON, not parsed into a tree.
fn raw_json_text(text: String, column: &str) -> StoreResult<Box<RawValue>> {
    RawValue::from_string(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct OrganizationRow {
    id: OrganizationId,
    name: String,
}

impl From<OrganizationRow> for Organization {
    fn from(row: OrganizationRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct UserRow {
    id: UserId,
    organization_id: OrganizationId,
    email: String,
    name: String,
    password_hash: String,
    is_org_admin: bool,
    deactivated_at: Option<i64>,
    must_change_password: bool,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password hash.
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl TryFrom<UserRow> for UserRecord {
    type Error = StoreError;
    fn try_from(row: UserRow) -> StoreResult<Self> {
        Ok(Self {
            id: row.id,
            organization_id: row.organization_id,
            email: row.email,
            name: row.name,
            password_hash: row.password_hash,
            is_org_admin: row.is_org_admin,
            deactivated_at: opt_from_ms(row.deactivated_at)?,
            must_change_password: row.must_change_password,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct WorkspaceRow {
    id: WorkspaceId,
    organization_id: OrganizationId,
    name: String,
    description: Option<String>,
    created_at: i64,
    rate_limit_per_second: Option<i64>,
    rate_limit_burst: Option<i64>,
}

impl TryFrom<WorkspaceRow> for WorkspaceRecord {
    type Error = StoreError;
    fn try_from(row: WorkspaceRow) -> StoreResult<Self> {
        Ok(Self {
            id: row.id,
            organization_id: row.organization_id,
            name: row.name,
            description: row.description,
            created_at: from_ms(row.created_at)?,
            rate_limit: rate_limit(row.rate_limit_per_second, row.rate_limit_burst),
        })
    }
}

/// A workspace with the role of one of its members.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct WorkspaceRoleRow {
    #[sqlx(flatten)]
    workspace: WorkspaceRow,
    role: String,
}

impl TryFrom<WorkspaceRoleRow> for (WorkspaceRecord, Role) {
    type Error = StoreError;
    fn try_from(row: WorkspaceRoleRow) -> StoreResult<Self> {
        Ok((row.workspace.try_into()?, parse_role(&row.role)?))
    }
}

/// A user with their role in one workspace.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct MemberRow {
    #[sqlx(flatten)]
    user: UserRow,
    role: String,
}

impl TryFrom<MemberRow> for (UserRecord, Role) {
    type Error = StoreError;
    fn try_from(row: MemberRow) -> StoreResult<Self> {
        Ok((row.user.try_into()?, parse_role(&row.role)?))
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct KeyRow {
    id: KeyId,
    workspace_id: WorkspaceId,
    user_id: UserId,
    name: String,
    digest: String,
    prefix: String,
    suffix: String,
    tenant_admin: bool,
    restriction: Option<String>,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    replaced_by: Option<KeyId>,
    last_used_at: Option<i64>,
    last_used_addr: Option<String>,
    rate_limit_per_second: Option<i64>,
    rate_limit_burst: Option<i64>,
    revoked_reason: Option<String>,
}

impl TryFrom<KeyRow> for KeyRecord {
    type Error = StoreError;
    fn try_from(row: KeyRow) -> StoreResult<Self> {
        let restriction = row
            .restriction
            .map(|text| {
                serde_json::from_str::<Vec<Permission>>(&text)
                    .map_err(|e| StoreError::Corrupt(format!("key restriction: {e}")))
            })
            .transpose()?;
        Ok(Self {
            id: row.id,
            workspace_id: row.workspace_id,
            user_id: row.user_id,
            name: row.name,
            digest: KeyDigest::from_hex(&row.digest)
                .ok_or_else(|| StoreError::Corrupt("key digest is not 64 hex digits".to_owned()))?,
            prefix: row.prefix,
            suffix: row.suffix,
            tenant_admin: row.tenant_admin,
            restriction,
            created_at: from_ms(row.created_at)?,
            expires_at: opt_from_ms(row.expires_at)?,
            revoked_at: opt_from_ms(row.revoked_at)?,
            replaced_by: row.replaced_by,
            last_used_at: opt_from_ms(row.last_used_at)?,
            last_used_addr: row.last_used_addr,
            rate_limit: rate_limit(row.rate_limit_per_second, row.rate_limit_burst),
            revoked_reason: row.revoked_reason.map(|r| RevokedReason::parse(&r)),
        })
    }
}

/// A key with its workspace, owner and owner's role (the auth hot path).
#[derive(Debug, sqlx::FromRow)]
pub(super) struct KeyAuthRow {
    #[sqlx(flatten)]
    key: KeyRow,
    organization_id: OrganizationId,
    workspace_name: String,
    role: Option<String>,
    user_email: String,
    is_org_admin: bool,
    user_deactivated_at: Option<i64>,
    ws_rate: Option<i64>,
    ws_burst: Option<i64>,
}

impl TryFrom<KeyAuthRow> for KeyAuthRecord {
    type Error = StoreError;
    fn try_from(row: KeyAuthRow) -> StoreResult<Self> {
        Ok(Self {
            key: row.key.try_into()?,
            organization_id: row.organization_id,
            workspace_name: row.workspace_name,
            role: row.role.as_deref().map(parse_role).transpose()?,
            user_email: row.user_email,
            user_is_org_admin: row.is_org_admin,
            user_active: row.user_deactivated_at.is_none(),
            workspace_rate_limit: rate_limit(row.ws_rate, row.ws_burst),
        })
    }
}

/// A session with its user.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct SessionUserRow {
    token_digest: String,
    csrf_token: String,
    session_created_at: i64,
    session_expires_at: i64,
    session_last_seen_at: i64,
    session_reauth_at: Option<i64>,
    #[sqlx(flatten)]
    user: UserRow,
}

impl TryFrom<SessionUserRow> for (SessionRecord, UserRecord) {
    type Error = StoreError;
    fn try_from(row: SessionUserRow) -> StoreResult<Self> {
        let user = UserRecord::try_from(row.user)?;
        let session = SessionRecord {
            token_digest: row.token_digest,
            user_id: user.id.clone(),
            csrf_token: row.csrf_token,
            created_at: from_ms(row.session_created_at)?,
            expires_at: from_ms(row.session_expires_at)?,
            last_seen_at: from_ms(row.session_last_seen_at)?,
            reauth_at: opt_from_ms(row.session_reauth_at)?,
        };
        Ok((session, user))
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct WorkflowRow {
    id: WorkflowId,
    workspace_id: WorkspaceId,
    name: String,
    kind: String,
    definition: String,
    error_handler: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<WorkflowRow> for WorkflowRecord {
    type Error = StoreError;
    fn try_from(row: WorkflowRow) -> StoreResult<Self> {
        Ok(Self {
            id: row.id,
            workspace_id: row.workspace_id,
            name: row.name,
            kind: row.kind,
            definition: raw_json_text(row.definition, "definition")?,
            error_handler: row.error_handler,
            created_at: from_ms(row.created_at)?,
            updated_at: from_ms(row.updated_at)?,
        })
    }
}

/// A workflow version; `definition` is absent from listings that did not
/// ask for it (the column is NOT NULL, so `None` means not selected).
#[derive(Debug, sqlx::FromRow)]
pub(super) struct VersionRow {
    id: WorkflowVersionId,
    workflow_id: WorkflowId,
    name: String,
    description: Option<String>,
    #[sqlx(default)]
    definition: Option<String>,
    created_by: Option<UserId>,
    created_at: i64,
}

impl TryFrom<VersionRow> for WorkflowVersionRecord {
    type Error = StoreError;
    fn try_from(row: VersionRow) -> StoreResult<Self> {
        Ok(Self {
            id: row.id,
            workflow_id: row.workflow_id,
            name: row.name,
            description: row.description,
            definition: row
                .definition
                .map(|text| raw_json_text(text, "definition"))
                .transpose()?,
            created_by: row.created_by,
            created_at: from_ms(row.created_at)?,
        })
    }
}

/// A row of `audit_log`. Its fields are also read by the archive, which
/// writes them out as they are stored.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct AuditRow {
    pub(super) id: i64,
    pub(super) organization_id: OrganizationId,
    pub(super) workspace_id: Option<WorkspaceId>,
    pub(super) actor_user_id: Option<UserId>,
    pub(super) actor_key_id: Option<KeyId>,
    pub(super) action: String,
    pub(super) target_type: String,
    pub(super) target_id: String,
    pub(super) details: String,
    pub(super) client_addr: Option<String>,
    pub(super) created_at: i64,
}

impl TryFrom<AuditRow> for AuditRecord {
    type Error = StoreError;
    fn try_from(row: AuditRow) -> StoreResult<Self> {
        Ok(Self {
            id: row.id,
            organization_id: row.organization_id,
            workspace_id: row.workspace_id,
            actor_user_id: row.actor_user_id,
            actor_key_id: row.actor_key_id,
            action: row.action,
            target_type: row.target_type,
            target_id: row.target_id,
            details: serde_json::from_str(&row.details)
                .map_err(|e| StoreError::Corrupt(format!("details: {e}")))?,
            client_addr: row.client_addr,
            created_at: from_ms(row.created_at)?,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct UsageRow {
    key_id: KeyId,
    hour: i64,
    requests: i64,
    ok: i64,
    client_errors: i64,
    server_errors: i64,
    unauthorized: i64,
    forbidden: i64,
    rate_limited: i64,
}

impl From<UsageRow> for UsageHour {
    fn from(row: UsageRow) -> Self {
        let n = |v: i64| v.max(0) as u64;
        Self {
            key_id: row.key_id,
            hour: row.hour,
            counts: UsageCounts {
                requests: n(row.requests),
                ok: n(row.ok),
                client_errors: n(row.client_errors),
                server_errors: n(row.server_errors),
                unauthorized: n(row.unauthorized),
                forbidden: n(row.forbidden),
                rate_limited: n(row.rate_limited),
            },
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct AddressRow {
    addr: String,
    first_seen_at: i64,
    last_seen_at: i64,
}

impl TryFrom<AddressRow> for KeyAddress {
    type Error = StoreError;
    fn try_from(row: AddressRow) -> StoreResult<Self> {
        Ok(Self {
            addr: row.addr,
            first_seen_at: from_ms(row.first_seen_at)?,
            last_seen_at: from_ms(row.last_seen_at)?,
        })
    }
}

/// A row of a page with the total its statement counted (`... AS total`),
/// so that a page and its total come in one statement.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct PageRow<T> {
    #[sqlx(flatten)]
    row: T,
    total: i64,
}

/// Maps fetched rows to records.
pub(super) fn records<R, T>(rows: Vec<R>) -> StoreResult<Vec<T>>
where
    T: TryFrom<R, Error = StoreError>,
{
    rows.into_iter().map(T::try_from).collect()
}

/// The records of a page and the total its first row carries (`None` for
/// a page past the end, which has no row to carry it).
pub(super) fn page<R, T>(rows: Vec<PageRow<R>>) -> StoreResult<(Vec<T>, Option<i64>)>
where
    T: TryFrom<R, Error = StoreError>,
{
    let total = rows.first().map(|r| r.total);
    let items = rows
        .into_iter()
        .map(|r| T::try_from(r.row))
        .collect::<StoreResult<_>>()?;
    Ok((items, total))
}

/// The columns of [`RunRow`] (PostgreSQL's `search` and `seq` left out).
pub(super) const RUN_COLUMNS: &str = "id, group_id, organization_id, workspace_id, workflow_id,
    workflow_version_id, definition, input, status, progress, progress_details, output, error,
    callback_url, started_by_user, started_by_key, created_at, started_at, finished_at, attempts,
    claimed_by, lease_until, last_event_seq";

/// A stored JSON text parsed into a tree.
fn json_text(text: &str, column: &str) -> StoreResult<Value> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct RunRow {
    id: RunId,
    group_id: String,
    organization_id: OrganizationId,
    workspace_id: WorkspaceId,
    workflow_id: WorkflowId,
    workflow_version_id: Option<WorkflowVersionId>,
    definition: String,
    input: String,
    status: String,
    progress: i64,
    progress_details: Option<String>,
    output: Option<String>,
    error: Option<String>,
    callback_url: Option<String>,
    started_by_user: UserId,
    started_by_key: Option<KeyId>,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    attempts: i64,
    claimed_by: Option<String>,
    lease_until: Option<i64>,
    last_event_seq: i64,
}

impl TryFrom<RunRow> for RunRecord {
    type Error = StoreError;
    fn try_from(row: RunRow) -> StoreResult<Self> {
        Ok(Self {
            id: row.id,
            group_id: row.group_id,
            organization_id: row.organization_id,
            workspace_id: row.workspace_id,
            workflow_id: row.workflow_id,
            workflow_version_id: row.workflow_version_id,
            definition: json_text(&row.definition, "definition")?,
            input: json_text(&row.input, "input")?,
            status: RunStatus::parse(&row.status)
                .ok_or_else(|| StoreError::Corrupt(format!("run status {:?}", row.status)))?,
            progress: row.progress,
            progress_details: row
                .progress_details
                .map(|t| json_text(&t, "progress_details"))
                .transpose()?,
            output: row.output.map(|t| json_text(&t, "output")).transpose()?,
            error: row.error,
            callback_url: row.callback_url,
            started_by_user: row.started_by_user,
            started_by_key: row.started_by_key,
            created_at: from_ms(row.created_at)?,
            started_at: opt_from_ms(row.started_at)?,
            finished_at: opt_from_ms(row.finished_at)?,
            attempts: row.attempts,
            claimed_by: row.claimed_by,
            lease_until: opt_from_ms(row.lease_until)?,
            last_event_seq: row.last_event_seq,
        })
    }
}

/// A run with its place in the order its statement claimed runs in.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct OrderedRunRow {
    pub(super) claim_order: i64,
    #[sqlx(flatten)]
    pub(super) run: RunRow,
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct RunEventRow {
    run_id: RunId,
    seq: i64,
    kind: String,
    data: String,
    created_at: i64,
}

impl TryFrom<RunEventRow> for RunEvent {
    type Error = StoreError;
    fn try_from(row: RunEventRow) -> StoreResult<Self> {
        Ok(Self {
            run_id: row.run_id,
            seq: row.seq,
            kind: row.kind,
            data: json_text(&row.data, "event data")?,
            created_at: from_ms(row.created_at)?,
        })
    }
}

/// A node's stored input and output.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct NodeIoRow {
    input: String,
    output: String,
}

impl TryFrom<NodeIoRow> for (Value, Value) {
    type Error = StoreError;
    fn try_from(row: NodeIoRow) -> StoreResult<Self> {
        Ok((
            json_text(&row.input, "node input")?,
            json_text(&row.output, "node output")?,
        ))
    }
}

/// The columns of [`CallbackRow`] (PostgreSQL's `seq` left out).
pub(super) const CALLBACK_COLUMNS: &str = "id, kind, run_id, key_id, workspace_id, url, event,
    payload, status, attempts,
    next_attempt_at, last_attempt_at, last_status_code, last_error, delivered_at, created_at,
    claimed_by, lease_until";

#[derive(Debug, sqlx::FromRow)]
pub(super) struct CallbackRow {
    id: CallbackId,
    kind: String,
    run_id: Option<RunId>,
    key_id: Option<KeyId>,
    workspace_id: WorkspaceId,
    url: String,
    event: String,
    payload: Option<String>,
    status: String,
    attempts: i64,
    next_attempt_at: i64,
    last_attempt_at: Option<i64>,
    last_status_code: Option<i64>,
    last_error: Option<String>,
    delivered_at: Option<i64>,
    created_at: i64,
    claimed_by: Option<String>,
    lease_until: Option<i64>,
}

impl TryFrom<CallbackRow> for CallbackDelivery {
    type Error = StoreError;
    fn try_from(row: CallbackRow) -> StoreResult<Self> {
        Ok(Self {
            id: row.id,
            kind: CallbackKind::parse(&row.kind)
                .ok_or_else(|| StoreError::Corrupt(format!("callback kind {:?}", row.kind)))?,
            run_id: row.run_id,
            key_id: row.key_id,
            workspace_id: row.workspace_id,
            url: row.url,
            event: row.event,
            payload: row.payload,
            status: CallbackStatus::parse(&row.status)
                .ok_or_else(|| StoreError::Corrupt(format!("callback status {:?}", row.status)))?,
            attempts: row.attempts,
            next_attempt_at: from_ms(row.next_attempt_at)?,
            last_attempt_at: opt_from_ms(row.last_attempt_at)?,
            last_status_code: row.last_status_code,
            last_error: row.last_error,
            delivered_at: opt_from_ms(row.delivered_at)?,
            created_at: from_ms(row.created_at)?,
            claimed_by: row.claimed_by,
            lease_until: opt_from_ms(row.lease_until)?,
        })
    }
}
