//! The embedded store: SQLite in WAL mode with foreign keys on, migrations
//! embedded in the binary and applied at start.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use noxus_api::{Permission, Role};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::*;

mod archive;

pub use archive::AuditArchive;

/// When SQLite makes a commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous = FULL`: the write-ahead log is synced to disk at every
    /// commit, so an acknowledged write survives a power loss. The default.
    Full,
    /// `synchronous = NORMAL`: synced at checkpoints only; a power loss (not a
    /// process crash) may roll back the last commits. For benchmarks.
    Normal,
}

/// How much of the database file SQLite maps into memory (address space,
/// not resident memory: pages are shared with the operating system's cache).
const MMAP_SIZE: u64 = 1 << 30;

/// SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    events: EventBus,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl SqliteStore {
    /// A write transaction that takes SQLite's write lock at once
    /// (`BEGIN IMMEDIATE`). A deferred transaction that reads before it
    /// writes fails with "database is locked" when another writer (such as
    /// the usage flusher) got in between, instead of waiting its turn; an
    /// immediate one waits for the busy timeout.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    /// Commits a write and then publishes its events: after the commit, so
    /// that no subscriber hears of a change that was rolled back, and
    /// before returning, so that the caller's next read through the key
    /// cache sees it (see [`super::events`]).
    async fn commit(
        &self,
        tx: Transaction<'static, Sqlite>,
        events: impl IntoIterator<Item = StoreEvent>,
    ) -> StoreResult<()> {
        tx.commit().await?;
        self.events.publish(events);
        Ok(())
    }

    /// Deletes one row of a workspace (`sql` binds the workspace id, then
    /// `id`) and audits it, in one transaction; `NotFound` if nothing matched.
    async fn delete_audited(
        &self,
        actor: &Actor,
        workspace_id: &str,
        sql: &str,
        id: &str,
        action: &str,
        target_type: &str,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let org = org_of_workspace(&mut tx, workspace_id).await?;
        let deleted = sqlx::query(sql)
            .bind(workspace_id)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        audit(
            &mut tx,
            actor,
            &org,
            Some(workspace_id),
            action,
            (target_type, id),
            json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Opens (creating if needed) `noxus.db` in `data_dir` and migrates it.
    ///
    /// Commits are durable ([`Durability::Full`]): what the platform
    /// acknowledged — a revocation above all — survives a crash of the
    /// machine, not only of the process.
    pub async fn open(data_dir: &Path) -> anyhow::Result<Self> {
        Self::open_with(data_dir, Durability::Full).await
    }

    /// [`SqliteStore::open`] with another durability (benchmarks compare them).
    pub async fn open_with(data_dir: &Path, durability: Durability) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            anyhow::anyhow!("cannot create data directory {}: {e}", data_dir.display())
        })?;
        let synchronous = match durability {
            Durability::Full => SqliteSynchronous::Full,
            Durability::Normal => SqliteSynchronous::Normal,
        };
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join("noxus.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            // Reads straight from the operating system's page cache instead
            // of copying each page through a read() call into SQLite's own
            // small cache: an uncached key lookup in a million keys costs
            // about what it costs in a thousand (bench/key_lookup_scale).
            .pragma("mmap_size", MMAP_SIZE.to_string());
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // A pinged SQLite connection is a round trip to its worker
            // thread before every query, and an embedded file has no peer
            // that could have dropped it: don't.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            events: EventBus::new(),
        })
    }
}

/// A page of a workspace's workflows of one type, with the total, in one
/// statement (one round trip to SQLite's thread). The page's rowids come
/// from an index kept in page order (migration 0004), then only those rows
/// are read; the count is an uncorrelated subquery over the same index,
/// evaluated once. `kind = ?` is written out, not `? IS NULL OR kind = ?`,
/// so that SQLite can pick the index. A test checks the plan sorts nothing.
const PAGE_OF_KIND: &str = "SELECT *,
        (SELECT COUNT(*) FROM workflows WHERE workspace_id = ?1 AND kind = ?2) AS total
    FROM workflows WHERE rowid IN (
        SELECT rowid FROM workflows WHERE workspace_id = ?1 AND kind = ?2
        ORDER BY rowid LIMIT ?3 OFFSET ?4)
    ORDER BY rowid";

/// [`PAGE_OF_KIND`] for workflows of every type.
const PAGE_OF_ALL: &str = "SELECT *,
        (SELECT COUNT(*) FROM workflows WHERE workspace_id = ?1) AS total
    FROM workflows WHERE rowid IN (
        SELECT rowid FROM workflows WHERE workspace_id = ?1
        ORDER BY rowid LIMIT ?2 OFFSET ?3)
    ORDER BY rowid";

/// Deletes a key's addresses beyond the `?2` most recently seen (binds the
/// key id, then the bound). Walks the key's entries of
/// `key_addresses_key_seen_idx` newest first; the rowid breaks ties.
const EVICT_ADDRESSES: &str = "DELETE FROM key_addresses WHERE rowid IN (
        SELECT rowid FROM key_addresses WHERE key_id = ?1
        ORDER BY last_seen_at DESC, rowid DESC LIMIT -1 OFFSET ?2)";

/// A page of a workflow's versions with their definitions, and the total,
/// in saving (rowid) order straight from `workflow_versions_page_idx`, as
/// [`PAGE_OF_KIND`] does for workflows.
const VERSION_PAGE: &str = "SELECT *,
        (SELECT COUNT(*) FROM workflow_versions WHERE workflow_id = ?1) AS total
    FROM workflow_versions WHERE rowid IN (
        SELECT rowid FROM workflow_versions WHERE workflow_id = ?1
        ORDER BY rowid LIMIT ?2 OFFSET ?3)
    ORDER BY rowid";

/// [`VERSION_PAGE`] without the definitions.
const VERSION_PAGE_WITHOUT_DEFINITIONS: &str =
    "SELECT id, workflow_id, name, description, created_by, created_at,
        (SELECT COUNT(*) FROM workflow_versions WHERE workflow_id = ?1) AS total
    FROM workflow_versions WHERE rowid IN (
        SELECT rowid FROM workflow_versions WHERE workflow_id = ?1
        ORDER BY rowid LIMIT ?2 OFFSET ?3)
    ORDER BY rowid";

/// A value bound to a statement built at run time.
#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Text(String),
    Int(i64),
}

/// The smallest string greater than every string that starts with
/// `prefix` (UTF-8 sorts bytewise as code points do), or `None` if there is
/// none. `action >= prefix AND action < successor` is "starts with
/// `prefix`" as an index range.
fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match u32::from(last) + 1 {
            0xD800 => 0xE000,
            n => n,
        };
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The statement of an audit search and its arguments. Only the filters
/// given are written (no `? IS NULL OR ...`), so that SQLite can pick the
/// index that fits: `audit_log_org_idx`, `audit_log_workspace_idx`,
/// `audit_log_workspace_action_idx` or `audit_log_action_idx` (migration
/// 0006; a test checks the plans). Action prefixes match as a range of the
/// index, in lower case: every action is lower-case ASCII, and the LIKE
/// this replaces ignored ASCII case.
fn audit_search(query: &AuditQuery) -> (String, Vec<Arg>) {
    let mut sql = String::from("SELECT * FROM audit_log WHERE organization_id = ?");
    let mut args = vec![Arg::Text(query.organization_id.clone())];
    if let Some(workspace_id) = &query.workspace_id {
        sql.push_str(" AND workspace_id = ?");
        args.push(Arg::Text(workspace_id.clone()));
    }
    if let Some(prefix) = query
        .action_prefix
        .as_ref()
        .map(|p| p.to_ascii_lowercase())
        .filter(|p| !p.is_empty())
    {
        sql.push_str(" AND action >= ?");
        if let Some(successor) = prefix_successor(&prefix) {
            sql.push_str(" AND action < ?");
            args.push(Arg::Text(prefix));
            args.push(Arg::Text(successor));
        } else {
            args.push(Arg::Text(prefix));
        }
    }
    if let Some(before) = query.before_id {
        sql.push_str(" AND id < ?");
        args.push(Arg::Int(before));
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    args.push(Arg::Int(i64::from(query.limit)));
    (sql, args)
}

fn bind_args<'q>(
    mut query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    args: &'q [Arg],
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    for arg in args {
        query = match arg {
            Arg::Text(text) => query.bind(text.as_str()),
            Arg::Int(n) => query.bind(*n),
        };
    }
    query
}

/// A workspace's stored workflows and definition bytes (`workspace_totals`,
/// kept by triggers; zero before its first workflow).
async fn workspace_totals(
    tx: &mut Transaction<'_, Sqlite>,
    workspace_id: &str,
) -> StoreResult<(u64, u64)> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT workflows, definition_bytes FROM workspace_totals WHERE workspace_id = ?",
    )
    .bind(workspace_id)
    .fetch_optional(&mut **tx)
    .await?;
    let (workflows, bytes) = row.unwrap_or((0, 0));
    Ok((
        u64::try_from(workflows).unwrap_or(0),
        u64::try_from(bytes).unwrap_or(0),
    ))
}

/// Refuses a write that grows the workspace's definitions from
/// `stored` bytes by `old_len` → `new_len` past the quota. Shrinking (or
/// keeping the size) is always allowed, so that a full workspace can be
/// cleaned up.
fn check_definition_bytes(
    stored: u64,
    old_len: u64,
    new_len: u64,
    quotas: &WorkflowQuotas,
) -> StoreResult<()> {
    let limit = quotas.definition_bytes_per_workspace;
    if new_len > old_len && stored.saturating_sub(old_len).saturating_add(new_len) > limit {
        return Err(StoreError::QuotaExceeded {
            quota: Quota::DefinitionBytesPerWorkspace,
            limit,
        });
    }
    Ok(())
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn to_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_ms(ms: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| StoreError::Corrupt(format!("timestamp {ms}: {e}")))
}

fn opt_from_ms(ms: Option<i64>) -> StoreResult<Option<OffsetDateTime>> {
    ms.map(from_ms).transpose()
}

fn new_id() -> String {
    Uuid::new_v4().to_string()
}

/// Maps a unique violation to [`StoreError::Conflict`] (each statement this
/// is used on has exactly one such constraint besides its random primary key).
fn on_unique(kind: ConflictKind) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |err| match &err {
        sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation => {
            StoreError::Conflict(kind)
        }
        _ => StoreError::Database(err),
    }
}

async fn audit(
    tx: &mut Transaction<'_, Sqlite>,
    actor: &Actor,
    organization_id: &str,
    workspace_id: Option<&str>,
    action: &str,
    target: (&str, &str),
    details: Value,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_log (organization_id, workspace_id, actor_user_id, actor_key_id,
             action, target_type, target_id, details, client_addr, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(organization_id)
    .bind(workspace_id)
    .bind(actor.user_id.as_deref())
    .bind(actor.key_id.as_deref())
    .bind(action)
    .bind(target.0)
    .bind(target.1)
    .bind(details.to_string())
    .bind(actor.client_addr.as_deref())
    .bind(to_ms(now()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn org_of_workspace(
    tx: &mut Transaction<'_, Sqlite>,
    workspace_id: &str,
) -> StoreResult<String> {
    sqlx::query_scalar("SELECT organization_id FROM workspaces WHERE id = ?")
        .bind(workspace_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound)
}

/// Refuses (rolling back) a change that left the workspace without an owner.
async fn keeps_an_owner(tx: &mut Transaction<'_, Sqlite>, workspace_id: &str) -> StoreResult<()> {
    let owners: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM memberships WHERE workspace_id = ? AND role = 'owner'",
    )
    .bind(workspace_id)
    .fetch_one(&mut **tx)
    .await?;
    if owners == 0 {
        return Err(StoreError::Precondition(Precondition::LastOwner));
    }
    Ok(())
}

/// Refuses (rolling back) a change that left the organization without an
/// active organization admin.
async fn keeps_an_org_admin(
    tx: &mut Transaction<'_, Sqlite>,
    organization_id: &str,
) -> StoreResult<()> {
    let admins: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM users
         WHERE organization_id = ? AND is_org_admin = 1 AND deactivated_at IS NULL",
    )
    .bind(organization_id)
    .fetch_one(&mut **tx)
    .await?;
    if admins == 0 {
        return Err(StoreError::Precondition(Precondition::LastOrgAdmin));
    }
    Ok(())
}

/// Revokes, for `reason`, every key matching `filter` (whose `?1`, `?2`…
/// take `binds`) that still works (not revoked, not expired, including
/// rotated keys in their grace period). Returns their ids.
async fn revoke_live_keys(
    tx: &mut Transaction<'_, Sqlite>,
    filter: &str,
    binds: &[&str],
    reason: RevokedReason,
) -> StoreResult<Vec<String>> {
    let at = binds.len() + 1;
    let why = binds.len() + 2;
    let sql = format!(
        "UPDATE api_keys SET revoked_at = ?{at}, revoked_reason = ?{why}
         WHERE {filter} AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?{at})
         RETURNING id"
    );
    let mut query = sqlx::query_scalar::<_, String>(&sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    let mut ids = query
        .bind(to_ms(now()))
        .bind(reason.as_str())
        .fetch_all(&mut **tx)
        .await?;
    ids.sort();
    Ok(ids)
}

fn parse_role(s: &str) -> StoreResult<Role> {
    Role::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn restriction_to_text(r: &Option<Vec<Permission>>) -> Option<String> {
    r.as_ref()
        .map(|perms| serde_json::to_string(perms).unwrap_or_else(|_| "[]".to_owned()))
}

fn user_from_row(row: &SqliteRow) -> StoreResult<UserRecord> {
    Ok(UserRecord {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        password_hash: row.try_get("password_hash")?,
        is_org_admin: row.try_get("is_org_admin")?,
        deactivated_at: opt_from_ms(row.try_get("deactivated_at")?)?,
        must_change_password: row.try_get("must_change_password")?,
    })
}

fn workspace_from_row(row: &SqliteRow) -> StoreResult<WorkspaceRecord> {
    Ok(WorkspaceRecord {
        id: row.try_get("id")?,
        organization_id: row.try_get("organization_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        created_at: from_ms(row.try_get("created_at")?)?,
        rate_limit: rate_limit_from(row, "rate_limit_per_second", "rate_limit_burst")?,
    })
}

const KEY_COLUMNS: &str = "k.id, k.workspace_id, k.user_id, k.name, k.digest, k.prefix, k.suffix,
    k.tenant_admin, k.restriction, k.created_at, k.expires_at, k.revoked_at, k.replaced_by,
    k.last_used_at, k.last_used_addr, k.rate_limit_per_second, k.rate_limit_burst, k.revoked_reason";

fn key_from_row(row: &SqliteRow) -> StoreResult<KeyRecord> {
    let restriction: Option<String> = row.try_get("restriction")?;
    let restriction = restriction
        .map(|text| {
            serde_json::from_str::<Vec<Permission>>(&text)
                .map_err(|e| StoreError::Corrupt(format!("key restriction: {e}")))
        })
        .transpose()?;
    Ok(KeyRecord {
        id: row.try_get("id")?,
        workspace_id: row.try_get("workspace_id")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        digest: {
            let hex_digest: String = row.try_get("digest")?;
            KeyDigest::from_hex(&hex_digest)
                .ok_or_else(|| StoreError::Corrupt("key digest is not 64 hex digits".to_owned()))?
        },
        prefix: row.try_get("prefix")?,
        suffix: row.try_get("suffix")?,
        tenant_admin: row.try_get("tenant_admin")?,
        restriction,
        created_at: from_ms(row.try_get("created_at")?)?,
        expires_at: opt_from_ms(row.try_get("expires_at")?)?,
        revoked_at: opt_from_ms(row.try_get("revoked_at")?)?,
        replaced_by: row.try_get("replaced_by")?,
        last_used_at: opt_from_ms(row.try_get("last_used_at")?)?,
        last_used_addr: row.try_get("last_used_addr")?,
        rate_limit: rate_limit_from(row, "rate_limit_per_second", "rate_limit_burst")?,
        revoked_reason: row
            .try_get::<Option<String>, _>("revoked_reason")?
            .map(|r| RevokedReason::parse(&r)),
    })
}

fn rate_limit_from(row: &SqliteRow, rate: &str, burst: &str) -> StoreResult<Option<RateLimit>> {
    let rate: Option<i64> = row.try_get(rate)?;
    let burst: Option<i64> = row.try_get(burst)?;
    Ok(rate.map(|r| RateLimit {
        per_second: u32::try_from(r).unwrap_or(u32::MAX),
        burst: burst.and_then(|b| u32::try_from(b).ok()).unwrap_or(1),
    }))
}

fn json_column(row: &SqliteRow, column: &str) -> StoreResult<Value> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

/// A stored JSON text as it is: checked to be JSON, not parsed into a tree.
fn raw_json_column(row: &SqliteRow, column: &str) -> StoreResult<Box<RawValue>> {
    let text: String = row.try_get(column)?;
    RawValue::from_string(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

/// A validated definition as JSON text, for storing and for the record.
fn raw_json(value: &Value) -> StoreResult<Box<RawValue>> {
    serde_json::value::to_raw_value(value)
        .map_err(|e| StoreError::Corrupt(format!("definition: {e}")))
}

fn workflow_from_row(row: &SqliteRow) -> StoreResult<WorkflowRecord> {
    Ok(WorkflowRecord {
        id: row.try_get("id")?,
        workspace_id: row.try_get("workspace_id")?,
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        definition: raw_json_column(row, "definition")?,
        error_handler: row.try_get("error_handler")?,
        created_at: from_ms(row.try_get("created_at")?)?,
        updated_at: from_ms(row.try_get("updated_at")?)?,
    })
}

fn version_from_row(row: &SqliteRow) -> StoreResult<WorkflowVersionRecord> {
    let definition = match row.try_column("definition") {
        Ok(_) => Some(raw_json_column(row, "definition")?),
        Err(_) => None,
    };
    Ok(WorkflowVersionRecord {
        id: row.try_get("id")?,
        workflow_id: row.try_get("workflow_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        definition,
        created_by: row.try_get("created_by")?,
        created_at: from_ms(row.try_get("created_at")?)?,
    })
}

async fn insert_key(
    tx: &mut Transaction<'_, Sqlite>,
    key: &NewKey,
    created_at: OffsetDateTime,
) -> StoreResult<KeyRecord> {
    let id = new_id();
    sqlx::query(
        "INSERT INTO api_keys (id, workspace_id, user_id, name, digest, prefix, suffix,
             tenant_admin, restriction, created_at, expires_at, rate_limit_per_second, rate_limit_burst)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&id)
    .bind(&key.workspace_id)
    .bind(&key.user_id)
    .bind(&key.name)
    .bind(key.digest.as_hex())
    .bind(&key.prefix)
    .bind(&key.suffix)
    .bind(key.tenant_admin)
    .bind(restriction_to_text(&key.restriction))
    .bind(to_ms(created_at))
    .bind(key.expires_at.map(to_ms))
    .bind(key.rate_limit.map(|l| i64::from(l.per_second)))
    .bind(key.rate_limit.map(|l| i64::from(l.burst)))
    .execute(&mut **tx)
    .await
    .map_err(on_unique(ConflictKind::KeyDigest))?;
    Ok(KeyRecord {
        id,
        workspace_id: key.workspace_id.clone(),
        user_id: key.user_id.clone(),
        name: key.name.clone(),
        digest: key.digest,
        prefix: key.prefix.clone(),
        suffix: key.suffix.clone(),
        tenant_admin: key.tenant_admin,
        restriction: key.restriction.clone(),
        created_at,
        expires_at: key.expires_at,
        revoked_at: None,
        replaced_by: None,
        last_used_at: None,
        last_used_addr: None,
        rate_limit: key.rate_limit,
        revoked_reason: None,
    })
}

async fn key_in_tx(
    tx: &mut Transaction<'_, Sqlite>,
    workspace_id: &str,
    id: &str,
) -> StoreResult<KeyRecord> {
    let row = sqlx::query(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.workspace_id = ? AND k.id = ?"
    ))
    .bind(workspace_id)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound)?;
    key_from_row(&row)
}

fn key_audit_details(key: &KeyRecord) -> Value {
    json!({
        "name": key.name,
        "prefix": key.prefix,
        "owner_user_id": key.user_id,
        "tenant_admin": key.tenant_admin,
        "restriction": key.restriction,
    })
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn key_for_auth(&self, digest: &KeyDigest) -> StoreResult<Option<KeyAuthRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS}, w.organization_id, w.name AS workspace_name, m.role,
                    u.email AS user_email, u.is_org_admin, u.deactivated_at AS user_deactivated_at,
                    w.rate_limit_per_second AS ws_rate, w.rate_limit_burst AS ws_burst
             FROM api_keys k
             JOIN workspaces w ON w.id = k.workspace_id
             JOIN users u ON u.id = k.user_id
             LEFT JOIN memberships m ON m.workspace_id = k.workspace_id AND m.user_id = k.user_id
             WHERE k.digest = ?"
        ))
        .bind(digest.as_hex())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let role: Option<String> = row.try_get("role")?;
        Ok(Some(KeyAuthRecord {
            key: key_from_row(&row)?,
            organization_id: row.try_get("organization_id")?,
            workspace_name: row.try_get("workspace_name")?,
            role: role.as_deref().map(parse_role).transpose()?,
            user_email: row.try_get("user_email")?,
            user_is_org_admin: row.try_get("is_org_admin")?,
            user_active: row
                .try_get::<Option<i64>, _>("user_deactivated_at")?
                .is_none(),
            workspace_rate_limit: rate_limit_from(&row, "ws_rate", "ws_burst")?,
        }))
    }

    async fn create_key(
        &self,
        actor: &Actor,
        key: NewKey,
        quotas: KeyQuotas,
    ) -> StoreResult<KeyRecord> {
        let mut tx = self.begin_write().await?;
        let org = org_of_workspace(&mut tx, &key.workspace_id).await?;
        let at = now();
        let (for_user, in_workspace): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(user_id = ?2), 0), COUNT(*) FROM api_keys
             WHERE workspace_id = ?1 AND revoked_at IS NULL AND replaced_by IS NULL
               AND (expires_at IS NULL OR expires_at > ?3)",
        )
        .bind(&key.workspace_id)
        .bind(&key.user_id)
        .bind(to_ms(at))
        .fetch_one(&mut *tx)
        .await?;
        if for_user >= i64::from(quotas.per_user) {
            return Err(StoreError::Precondition(Precondition::TooManyKeysForUser {
                limit: quotas.per_user,
            }));
        }
        if in_workspace >= i64::from(quotas.per_workspace) {
            return Err(StoreError::Precondition(
                Precondition::TooManyKeysInWorkspace {
                    limit: quotas.per_workspace,
                },
            ));
        }
        let record = insert_key(&mut tx, &key, at).await?;
        audit(
            &mut tx,
            actor,
            &org,
            Some(&key.workspace_id),
            "api_key.create",
            ("api_key", &record.id),
            key_audit_details(&record),
        )
        .await?;
        self.commit(tx, [StoreEvent::KeyChanged(record.id.clone())])
            .await?;
        Ok(record)
    }

    async fn list_keys(
        &self,
        workspace_id: &str,
        user_id: Option<&str>,
    ) -> StoreResult<Vec<KeyRecord>> {
        sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k
             WHERE k.workspace_id = ? AND (? IS NULL OR k.user_id = ?)
             ORDER BY k.rowid DESC"
        ))
        .bind(workspace_id)
        .bind(user_id)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(key_from_row)
        .collect()
    }

    async fn list_keys_page(
        &self,
        workspace_id: &str,
        user_id: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(Vec<KeyRecord>, u64)> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS}, COUNT(*) OVER () AS total FROM api_keys k
             WHERE k.workspace_id = ?1 AND (?2 IS NULL OR k.user_id = ?2)
             ORDER BY k.rowid DESC LIMIT ?3 OFFSET ?4"
        ))
        .bind(workspace_id)
        .bind(user_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = match rows.first() {
            Some(row) => row.try_get("total")?,
            None => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM api_keys WHERE workspace_id = ?1 AND (?2 IS NULL OR user_id = ?2)",
                )
                .bind(workspace_id)
                .bind(user_id)
                .fetch_one(&self.pool)
                .await?
            }
        };
        let keys = rows.iter().map(key_from_row).collect::<StoreResult<_>>()?;
        Ok((keys, u64::try_from(total).unwrap_or(0)))
    }

    async fn replace_key_digest(
        &self,
        key_id: &str,
        old: &KeyDigest,
        new: &KeyDigest,
    ) -> StoreResult<()> {
        let changed = sqlx::query("UPDATE api_keys SET digest = ? WHERE id = ? AND digest = ?")
            .bind(new.as_hex())
            .bind(key_id)
            .bind(old.as_hex())
            .execute(&self.pool)
            .await?
            .rows_affected();
        if changed > 0 {
            self.events
                .publish([StoreEvent::KeyChanged(key_id.to_owned())]);
        }
        Ok(())
    }

    async fn key(&self, workspace_id: &str, id: &str) -> StoreResult<Option<KeyRecord>> {
        sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.workspace_id = ? AND k.id = ?"
        ))
        .bind(workspace_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(key_from_row)
        .transpose()
    }

    async fn revoke_key(
        &self,
        actor: &Actor,
        workspace_id: &str,
        id: &str,
    ) -> StoreResult<KeyRecord> {
        let mut tx = self.begin_write().await?;
        let org = org_of_workspace(&mut tx, workspace_id).await?;
        let mut key = key_in_tx(&mut tx, workspace_id, id).await?;
        let mut events = Vec::new();
        if key.revoked_at.is_none() {
            events.push(StoreEvent::KeyChanged(id.to_owned()));
            let at = now();
            sqlx::query(
                "UPDATE api_keys SET revoked_at = ?, revoked_reason = 'revoked' WHERE id = ?",
            )
            .bind(to_ms(at))
            .bind(id)
            .execute(&mut *tx)
            .await?;
            key.revoked_at = Some(at);
            key.revoked_reason = Some(RevokedReason::Revoked);
            audit(
                &mut tx,
                actor,
                &org,
                Some(workspace_id),
                "api_key.revoke",
                ("api_key", id),
                key_audit_details(&key),
            )
            .await?;
        }
        self.commit(tx, events).await?;
        Ok(key)
    }

    async fn rotate_key(
        &self,
        actor: &Actor,
        workspace_id: &str,
        id: &str,
        new: NewKey,
        old_valid_until: Option<OffsetDateTime>,
    ) -> StoreResult<(KeyRecord, KeyRecord)> {
        let mut tx = self.begin_write().await?;
        let org = org_of_workspace(&mut tx, workspace_id).await?;
        let mut old = key_in_tx(&mut tx, workspace_id, id).await?;
        let at = now();
        let successor = insert_key(&mut tx, &new, at).await?;
        // Never extend a key's life by rotating it.
        let expires_at =
            old_valid_until.map(|until| old.expires_at.map_or(until, |e| e.min(until)));
        // The rule and the write in one statement: only a live key that was
        // not rotated yet changes.
        let changed = sqlx::query(
            "UPDATE api_keys SET
                 revoked_at = CASE WHEN ?1 IS NULL THEN ?2 ELSE revoked_at END,
                 revoked_reason = CASE WHEN ?1 IS NULL THEN 'rotated' ELSE revoked_reason END,
                 expires_at = COALESCE(?1, expires_at),
                 replaced_by = ?3
             WHERE id = ?4 AND workspace_id = ?5 AND revoked_at IS NULL AND replaced_by IS NULL
               AND (expires_at IS NULL OR expires_at > ?2)",
        )
        .bind(expires_at.map(to_ms))
        .bind(to_ms(at))
        .bind(&successor.id)
        .bind(id)
        .bind(workspace_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            // A key rotated without a grace period is revoked too: it was
            // rotated first of all (its replacement is what to rotate).
            let why = if old.replaced_by.is_some() {
                Precondition::KeyAlreadyRotated
            } else if old.revoked_at.is_some() {
                Precondition::KeyRevoked
            } else {
                Precondition::KeyExpired
            };
            return Err(StoreError::Precondition(why));
        }
        match expires_at {
            None => {
                old.revoked_at = Some(at);
                old.revoked_reason = Some(RevokedReason::Rotated);
            }
            Some(until) => old.expires_at = Some(until),
        }
        old.replaced_by = Some(successor.id.clone());
        let mut details = key_audit_details(&old);
        details["new_key_id"] = json!(successor.id);
        details["old_key_valid_until"] = json!(old_valid_until.map(to_ms));
        audit(
            &mut tx,
            actor,
            &org,
            Some(workspace_id),
            "api_key.rotate",
            ("api_key", id),
            details,
        )
        .await?;
        self.commit(
            tx,
            [
                StoreEvent::KeyChanged(old.id.clone()),
                StoreEvent::KeyChanged(successor.id.clone()),
            ],
        )
        .await?;
        Ok((old, successor))
    }
}

#[async_trait]
impl WorkspaceStore for SqliteStore {
    async fn create_workspace(
        &self,
        actor: &Actor,
        organization_id: &str,
        name: &str,
        description: Option<&str>,
        owner_user_id: &str,
    ) -> StoreResult<WorkspaceRecord> {
        let id = new_id();
        let created_at = now();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO workspaces (id, organization_id, name, description, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(organization_id)
        .bind(name)
        .bind(description)
        .bind(to_ms(created_at))
        .execute(&mut *tx)
        .await
        .map_err(on_unique(ConflictKind::WorkspaceName))?;
        sqlx::query("INSERT INTO memberships (workspace_id, user_id, role, created_at) VALUES (?, ?, 'owner', ?)")
            .bind(&id)
            .bind(owner_user_id)
            .bind(to_ms(created_at))
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            actor,
            organization_id,
            Some(&id),
            "workspace.create",
            ("workspace", &id),
            json!({"name": name, "owner_user_id": owner_user_id}),
        )
        .await?;
        self.commit(tx, [StoreEvent::WorkspaceChanged(id.clone())])
            .await?;
        Ok(WorkspaceRecord {
            id,
            organization_id: organization_id.to_owned(),
            name: name.to_owned(),
            description: description.map(str::to_owned),
            created_at,
            rate_limit: None,
        })
    }

    async fn list_workspaces(&self, organization_id: &str) -> StoreResult<Vec<WorkspaceRecord>> {
        sqlx::query("SELECT * FROM workspaces WHERE organization_id = ? ORDER BY rowid")
            .bind(organization_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(workspace_from_row)
            .collect()
    }

    async fn workspace(
        &self,
        organization_id: &str,
        id: &str,
    ) -> StoreResult<Option<WorkspaceRecord>> {
        sqlx::query("SELECT * FROM workspaces WHERE organization_id = ? AND id = ?")
            .bind(organization_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(workspace_from_row)
            .transpose()
    }

    async fn set_workspace_rate_limit(
        &self,
        actor: &Actor,
        organization_id: &str,
        workspace_id: &str,
        limit: Option<RateLimit>,
    ) -> StoreResult<WorkspaceRecord> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE workspaces SET rate_limit_per_second = ?, rate_limit_burst = ?
             WHERE organization_id = ? AND id = ? RETURNING *",
        )
        .bind(limit.map(|l| i64::from(l.per_second)))
        .bind(limit.map(|l| i64::from(l.burst)))
        .bind(organization_id)
        .bind(workspace_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let workspace = workspace_from_row(&row)?;
        audit(
            &mut tx,
            actor,
            organization_id,
            Some(workspace_id),
            "workspace.rate_limit",
            ("workspace", workspace_id),
            json!({"per_second": limit.map(|l| l.per_second), "burst": limit.map(|l| l.burst)}),
        )
        .await?;
        self.commit(tx, [StoreEvent::WorkspaceChanged(workspace_id.to_owned())])
            .await?;
        Ok(workspace)
    }

    async fn delete_workspace(
        &self,
        actor: &Actor,
        organization_id: &str,
        id: &str,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let name: Option<String> =
            sqlx::query_scalar("SELECT name FROM workspaces WHERE organization_id = ? AND id = ?")
                .bind(organization_id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(name) = name else {
            return Err(StoreError::NotFound);
        };
        sqlx::query("DELETE FROM workspaces WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            actor,
            organization_id,
            Some(id),
            "workspace.delete",
            ("workspace", id),
            json!({"name": name}),
        )
        .await?;
        self.commit(tx, [StoreEvent::WorkspaceChanged(id.to_owned())])
            .await?;
        Ok(())
    }
}

#[async_trait]
impl MemberStore for SqliteStore {
    async fn bootstrap(&self, request: BootstrapRequest) -> StoreResult<Option<BootstrapOutcome>> {
        let mut tx = self.begin_write().await?;
        let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM organizations")
            .fetch_one(&mut *tx)
            .await?;
        if existing > 0 {
            return Ok(None);
        }
        let at = now();
        let organization = Organization {
            id: new_id(),
            name: request.organization_name.clone(),
        };
        sqlx::query("INSERT INTO organizations (id, name, created_at) VALUES (?, ?, ?)")
            .bind(&organization.id)
            .bind(&organization.name)
            .bind(to_ms(at))
            .execute(&mut *tx)
            .await?;
        let user = UserRecord {
            id: new_id(),
            organization_id: organization.id.clone(),
            email: request.admin_email.clone(),
            name: request.admin_name.clone(),
            password_hash: request.password_hash.clone(),
            is_org_admin: true,
            deactivated_at: None,
            must_change_password: false,
        };
        sqlx::query(
            "INSERT INTO users (id, organization_id, email, name, password_hash, is_org_admin, created_at)
             VALUES (?, ?, ?, ?, ?, 1, ?)",
        )
        .bind(&user.id)
        .bind(&user.organization_id)
        .bind(&user.email)
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(to_ms(at))
        .execute(&mut *tx)
        .await?;
        let workspace = WorkspaceRecord {
            id: new_id(),
            organization_id: organization.id.clone(),
            name: request.workspace_name.clone(),
            description: None,
            created_at: at,
            rate_limit: None,
        };
        sqlx::query("INSERT INTO workspaces (id, organization_id, name, description, created_at) VALUES (?, ?, ?, NULL, ?)")
            .bind(&workspace.id)
            .bind(&organization.id)
            .bind(&workspace.name)
            .bind(to_ms(at))
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO memberships (workspace_id, user_id, role, created_at) VALUES (?, ?, 'owner', ?)")
            .bind(&workspace.id)
            .bind(&user.id)
            .bind(to_ms(at))
            .execute(&mut *tx)
            .await?;
        let system = Actor::system();
        audit(&mut tx, &system, &organization.id, Some(&workspace.id), "platform.bootstrap", ("organization", &organization.id),
            json!({"owner_user_id": user.id, "owner_email": user.email, "workspace_id": workspace.id})).await?;
        let key = match &request.first_key {
            None => None,
            Some((name, digest, prefix, suffix)) => {
                let new = NewKey {
                    workspace_id: workspace.id.clone(),
                    user_id: user.id.clone(),
                    name: name.clone(),
                    digest: *digest,
                    prefix: prefix.clone(),
                    suffix: suffix.clone(),
                    tenant_admin: true,
                    restriction: None,
                    expires_at: None,
                    rate_limit: None,
                };
                let record = insert_key(&mut tx, &new, at).await?;
                audit(
                    &mut tx,
                    &system,
                    &organization.id,
                    Some(&workspace.id),
                    "api_key.create",
                    ("api_key", &record.id),
                    key_audit_details(&record),
                )
                .await?;
                Some(record)
            }
        };
        let events = std::iter::once(StoreEvent::WorkspaceChanged(workspace.id.clone()))
            .chain(key.iter().map(|k| StoreEvent::KeyChanged(k.id.clone())));
        self.commit(tx, events).await?;
        Ok(Some(BootstrapOutcome {
            organization,
            user,
            workspace,
            key,
        }))
    }

    async fn organization(&self) -> StoreResult<Option<Organization>> {
        let row = sqlx::query("SELECT id, name FROM organizations ORDER BY rowid LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(Organization {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
            })
        })
        .transpose()
    }

    async fn create_organization(&self, actor: &Actor, name: &str) -> StoreResult<Organization> {
        let id = new_id();
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO organizations (id, name, created_at) VALUES (?, ?, ?)")
            .bind(&id)
            .bind(name)
            .bind(to_ms(now()))
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            actor,
            &id,
            None,
            "organization.create",
            ("organization", &id),
            json!({"name": name}),
        )
        .await?;
        tx.commit().await?;
        Ok(Organization {
            id,
            name: name.to_owned(),
        })
    }

    async fn create_user(&self, actor: &Actor, user: NewUser) -> StoreResult<UserRecord> {
        let id = new_id();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO users (id, organization_id, email, name, password_hash, is_org_admin,
                 must_change_password, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(&user.organization_id)
        .bind(&user.email)
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(user.is_org_admin)
        .bind(user.must_change_password)
        .bind(to_ms(now()))
        .execute(&mut *tx)
        .await
        .map_err(on_unique(ConflictKind::UserEmail))?;
        audit(
            &mut tx,
            actor,
            &user.organization_id,
            None,
            "user.create",
            ("user", &id),
            json!({"email": user.email, "is_org_admin": user.is_org_admin}),
        )
        .await?;
        tx.commit().await?;
        Ok(UserRecord {
            id,
            organization_id: user.organization_id,
            email: user.email,
            name: user.name,
            password_hash: user.password_hash,
            is_org_admin: user.is_org_admin,
            deactivated_at: None,
            must_change_password: user.must_change_password,
        })
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        sqlx::query("SELECT * FROM users WHERE email = ?")
            .bind(email)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn user(&self, id: &str) -> StoreResult<Option<UserRecord>> {
        sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn set_membership(
        &self,
        actor: &Actor,
        workspace_id: &str,
        user_id: &str,
        role: Role,
    ) -> StoreResult<Option<Role>> {
        let mut tx = self.begin_write().await?;
        let org = org_of_workspace(&mut tx, workspace_id).await?;
        let previous: Option<String> = sqlx::query_scalar(
            "SELECT role FROM memberships WHERE workspace_id = ? AND user_id = ?",
        )
        .bind(workspace_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let previous = previous.as_deref().map(parse_role).transpose()?;
        sqlx::query(
            "INSERT INTO memberships (workspace_id, user_id, role, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role",
        )
        .bind(workspace_id)
        .bind(user_id)
        .bind(role.as_str())
        .bind(to_ms(now()))
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db)
                if db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation =>
            {
                StoreError::NotFound
            }
            _ => StoreError::Database(e),
        })?;
        if previous == Some(Role::Owner) && role != Role::Owner {
            keeps_an_owner(&mut tx, workspace_id).await?;
        }
        audit(
            &mut tx,
            actor,
            &org,
            Some(workspace_id),
            "membership.set",
            ("user", user_id),
            json!({"role": role, "previous_role": previous}),
        )
        .await?;
        self.commit(tx, [StoreEvent::UserChanged(user_id.to_owned())])
            .await?;
        Ok(previous)
    }

    async fn remove_membership(
        &self,
        actor: &Actor,
        workspace_id: &str,
        user_id: &str,
    ) -> StoreResult<Vec<String>> {
        let mut tx = self.begin_write().await?;
        let org = org_of_workspace(&mut tx, workspace_id).await?;
        let removed: Option<String> = sqlx::query_scalar(
            "DELETE FROM memberships WHERE workspace_id = ? AND user_id = ? RETURNING role",
        )
        .bind(workspace_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(removed) = removed else {
            return Err(StoreError::NotFound);
        };
        if parse_role(&removed)? == Role::Owner {
            keeps_an_owner(&mut tx, workspace_id).await?;
        }
        let revoked = revoke_live_keys(
            &mut tx,
            "user_id = ?1 AND workspace_id = ?2",
            &[user_id, workspace_id],
            RevokedReason::OwnerRemoved,
        )
        .await?;
        audit(
            &mut tx,
            actor,
            &org,
            Some(workspace_id),
            "membership.remove",
            ("user", user_id),
            json!({"previous_role": removed, "revoked_key_ids": revoked}),
        )
        .await?;
        self.commit(
            tx,
            std::iter::once(StoreEvent::UserChanged(user_id.to_owned()))
                .chain(revoked.iter().cloned().map(StoreEvent::KeyChanged)),
        )
        .await?;
        Ok(revoked)
    }

    async fn set_user_active(
        &self,
        actor: &Actor,
        organization_id: &str,
        user_id: &str,
        active: bool,
    ) -> StoreResult<(UserRecord, Vec<String>)> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE users SET deactivated_at = CASE WHEN ? THEN NULL ELSE COALESCE(deactivated_at, ?) END
             WHERE organization_id = ? AND id = ? RETURNING *",
        )
        .bind(active)
        .bind(to_ms(now()))
        .bind(organization_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let user = user_from_row(&row)?;
        let mut revoked = Vec::new();
        if !active {
            keeps_an_org_admin(&mut tx, organization_id).await?;
            revoked = revoke_live_keys(
                &mut tx,
                "user_id = ?1",
                &[user_id],
                RevokedReason::OwnerDeactivated,
            )
            .await?;
            sqlx::query("DELETE FROM sessions WHERE user_id = ?")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        audit(
            &mut tx,
            actor,
            organization_id,
            None,
            if active {
                "user.reactivate"
            } else {
                "user.deactivate"
            },
            ("user", user_id),
            json!({"email": user.email, "revoked_key_ids": revoked}),
        )
        .await?;
        self.commit(
            tx,
            std::iter::once(StoreEvent::UserChanged(user_id.to_owned()))
                .chain(revoked.iter().cloned().map(StoreEvent::KeyChanged)),
        )
        .await?;
        Ok((user, revoked))
    }

    async fn set_org_admin(
        &self,
        actor: &Actor,
        organization_id: &str,
        user_id: &str,
        is_org_admin: bool,
    ) -> StoreResult<UserRecord> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE users SET is_org_admin = ? WHERE organization_id = ? AND id = ? RETURNING *",
        )
        .bind(is_org_admin)
        .bind(organization_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let user = user_from_row(&row)?;
        if !is_org_admin {
            keeps_an_org_admin(&mut tx, organization_id).await?;
        }
        audit(
            &mut tx,
            actor,
            organization_id,
            None,
            "user.org_admin",
            ("user", user_id),
            json!({"email": user.email, "is_org_admin": is_org_admin}),
        )
        .await?;
        self.commit(tx, [StoreEvent::UserChanged(user_id.to_owned())])
            .await?;
        Ok(user)
    }

    async fn set_password(
        &self,
        actor: &Actor,
        user_id: &str,
        password_hash: &str,
        must_change: bool,
        keep_session: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let org: String = sqlx::query_scalar(
            "UPDATE users SET password_hash = ?, must_change_password = ? WHERE id = ?
             RETURNING organization_id",
        )
        .bind(password_hash)
        .bind(must_change)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let ended = sqlx::query("DELETE FROM sessions WHERE user_id = ? AND token_digest IS NOT ?")
            .bind(user_id)
            .bind(keep_session)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let by_self = actor.user_id.as_deref() == Some(user_id);
        audit(
            &mut tx,
            actor,
            &org,
            None,
            if by_self {
                "user.password_change"
            } else {
                "user.password_reset"
            },
            ("user", user_id),
            json!({"sessions_ended": ended, "must_change": must_change}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn membership(&self, workspace_id: &str, user_id: &str) -> StoreResult<Option<Role>> {
        let role: Option<String> = sqlx::query_scalar(
            "SELECT role FROM memberships WHERE workspace_id = ? AND user_id = ?",
        )
        .bind(workspace_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        role.as_deref().map(parse_role).transpose()
    }

    async fn list_users(&self, organization_id: &str) -> StoreResult<Vec<UserRecord>> {
        sqlx::query("SELECT * FROM users WHERE organization_id = ? ORDER BY email")
            .bind(organization_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(user_from_row)
            .collect()
    }

    async fn list_members(&self, workspace_id: &str) -> StoreResult<Vec<(UserRecord, Role)>> {
        let rows = sqlx::query(
            "SELECT u.*, m.role FROM memberships m JOIN users u ON u.id = m.user_id
             WHERE m.workspace_id = ? ORDER BY u.email",
        )
        .bind(workspace_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let role: String = row.try_get("role")?;
                Ok((user_from_row(row)?, parse_role(&role)?))
            })
            .collect()
    }

    async fn workspaces_of_user(&self, user_id: &str) -> StoreResult<Vec<(WorkspaceRecord, Role)>> {
        let rows = sqlx::query(
            "SELECT w.*, m.role FROM memberships m JOIN workspaces w ON w.id = m.workspace_id
             WHERE m.user_id = ? ORDER BY w.rowid",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let role: String = row.try_get("role")?;
                Ok((workspace_from_row(row)?, parse_role(&role)?))
            })
            .collect()
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(&self, session: &SessionRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (token_digest, user_id, csrf_token, created_at, expires_at,
                 last_seen_at, reauth_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&session.token_digest)
        .bind(&session.user_id)
        .bind(&session.csrf_token)
        .bind(to_ms(session.created_at))
        .bind(to_ms(session.expires_at))
        .bind(to_ms(session.last_seen_at))
        .bind(session.reauth_at.map(to_ms))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session(
        &self,
        token_digest: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Option<(SessionRecord, UserRecord)>> {
        let row = sqlx::query(
            "SELECT s.token_digest, s.csrf_token, s.created_at AS session_created_at,
                    s.expires_at AS session_expires_at,
                    COALESCE(s.last_seen_at, s.created_at) AS session_last_seen_at,
                    s.reauth_at AS session_reauth_at, u.*
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_digest = ? AND s.expires_at > ?",
        )
        .bind(token_digest)
        .bind(to_ms(now))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let user = user_from_row(&row)?;
        let session = SessionRecord {
            token_digest: row.try_get("token_digest")?,
            user_id: user.id.clone(),
            csrf_token: row.try_get("csrf_token")?,
            created_at: from_ms(row.try_get("session_created_at")?)?,
            expires_at: from_ms(row.try_get("session_expires_at")?)?,
            last_seen_at: from_ms(row.try_get("session_last_seen_at")?)?,
            reauth_at: opt_from_ms(row.try_get("session_reauth_at")?)?,
        };
        Ok(Some((session, user)))
    }

    async fn delete_session(&self, token_digest: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE token_digest = ?")
            .bind(token_digest)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_user_sessions(&self, user_id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE user_id = ?")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn end_sessions(
        &self,
        actor: &Actor,
        user_id: &str,
        keep: Option<&str>,
    ) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let org: String = sqlx::query_scalar("SELECT organization_id FROM users WHERE id = ?")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let ended = sqlx::query("DELETE FROM sessions WHERE user_id = ? AND token_digest IS NOT ?")
            .bind(user_id)
            .bind(keep)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        audit(
            &mut tx,
            actor,
            &org,
            None,
            "user.sessions_end",
            ("user", user_id),
            json!({"sessions_ended": ended, "kept_current": keep.is_some()}),
        )
        .await?;
        tx.commit().await?;
        Ok(ended)
    }

    async fn touch_session(&self, token_digest: &str, at: OffsetDateTime) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET last_seen_at = ? WHERE token_digest = ?")
            .bind(to_ms(at))
            .bind(token_digest)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_session_reauth(&self, token_digest: &str, at: OffsetDateTime) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET reauth_at = ?, last_seen_at = ? WHERE token_digest = ?")
            .bind(to_ms(at))
            .bind(to_ms(at))
            .bind(token_digest)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        idle_before: OffsetDateTime,
        nonces_before: OffsetDateTime,
    ) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let sessions = sqlx::query(
            "DELETE FROM sessions WHERE expires_at <= ? OR COALESCE(last_seen_at, created_at) < ?",
        )
        .bind(to_ms(now))
        .bind(to_ms(idle_before))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let nonces = sqlx::query("DELETE FROM form_nonces WHERE used_at < ?")
            .bind(to_ms(nonces_before))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(sessions + nonces)
    }

    async fn use_nonce(&self, nonce: &str) -> StoreResult<bool> {
        let inserted =
            sqlx::query("INSERT OR IGNORE INTO form_nonces (nonce, used_at) VALUES (?, ?)")
                .bind(nonce)
                .bind(to_ms(now()))
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(inserted == 1)
    }
}

#[async_trait]
impl UsageStore for SqliteStore {
    async fn record_usage(
        &self,
        batch: &[KeyUsageFlush],
        max_addresses_per_key: usize,
    ) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for flush in batch {
            // A key deleted meanwhile (with its workspace) has nothing to update.
            let exists: Option<String> = sqlx::query_scalar("SELECT id FROM api_keys WHERE id = ?")
                .bind(&flush.key_id)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                continue;
            }
            if let Some((at, addr)) = &flush.last_used {
                sqlx::query(
                    "UPDATE api_keys SET last_used_at = ?, last_used_addr = ?
                     WHERE id = ? AND (last_used_at IS NULL OR last_used_at <= ?)",
                )
                .bind(to_ms(*at))
                .bind(addr.as_deref())
                .bind(&flush.key_id)
                .bind(to_ms(*at))
                .execute(&mut *tx)
                .await?;
            }
            for (hour, c) in &flush.hours {
                sqlx::query(
                    "INSERT INTO key_usage_hourly (key_id, workspace_id, hour, requests, ok, client_errors,
                         server_errors, unauthorized, forbidden, rate_limited)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                     ON CONFLICT (key_id, hour) DO UPDATE SET
                         requests = requests + excluded.requests, ok = ok + excluded.ok,
                         client_errors = client_errors + excluded.client_errors,
                         server_errors = server_errors + excluded.server_errors,
                         unauthorized = unauthorized + excluded.unauthorized,
                         forbidden = forbidden + excluded.forbidden,
                         rate_limited = rate_limited + excluded.rate_limited",
                )
                .bind(&flush.key_id)
                .bind(&flush.workspace_id)
                .bind(hour)
                .bind(c.requests as i64)
                .bind(c.ok as i64)
                .bind(c.client_errors as i64)
                .bind(c.server_errors as i64)
                .bind(c.unauthorized as i64)
                .bind(c.forbidden as i64)
                .bind(c.rate_limited as i64)
                .execute(&mut *tx)
                .await?;
            }
            // Known addresses only move their last sighting; a new one may
            // take the key past its bound, and only then is anything evicted.
            let mut inserted = false;
            for (addr, at) in &flush.addresses {
                let new = sqlx::query(
                    "INSERT INTO key_addresses (key_id, addr, first_seen_at, last_seen_at) VALUES (?, ?, ?, ?)
                     ON CONFLICT (key_id, addr) DO NOTHING",
                )
                .bind(&flush.key_id)
                .bind(addr)
                .bind(to_ms(*at))
                .bind(to_ms(*at))
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                if new {
                    inserted = true;
                } else {
                    sqlx::query(
                        "UPDATE key_addresses SET last_seen_at = MAX(last_seen_at, ?)
                         WHERE key_id = ? AND addr = ?",
                    )
                    .bind(to_ms(*at))
                    .bind(&flush.key_id)
                    .bind(addr)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            if inserted {
                // Keep the most recently seen; the rest are forgotten (and
                // count as new if they come back).
                sqlx::query(EVICT_ADDRESSES)
                    .bind(&flush.key_id)
                    .bind(i64::try_from(max_addresses_per_key).unwrap_or(i64::MAX))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn usage_hours(
        &self,
        workspace_id: &str,
        key_id: Option<&str>,
        from_hour: i64,
        to_hour: i64,
    ) -> StoreResult<Vec<UsageHour>> {
        let rows = sqlx::query(
            "SELECT * FROM key_usage_hourly
             WHERE workspace_id = ? AND (? IS NULL OR key_id = ?) AND hour BETWEEN ? AND ?
             ORDER BY hour, key_id",
        )
        .bind(workspace_id)
        .bind(key_id)
        .bind(key_id)
        .bind(from_hour)
        .bind(to_hour)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let n =
                    |c: &str| -> StoreResult<u64> { Ok(row.try_get::<i64, _>(c)?.max(0) as u64) };
                Ok(UsageHour {
                    key_id: row.try_get("key_id")?,
                    hour: row.try_get("hour")?,
                    counts: UsageCounts {
                        requests: n("requests")?,
                        ok: n("ok")?,
                        client_errors: n("client_errors")?,
                        server_errors: n("server_errors")?,
                        unauthorized: n("unauthorized")?,
                        forbidden: n("forbidden")?,
                        rate_limited: n("rate_limited")?,
                    },
                })
            })
            .collect()
    }

    async fn prune_usage(&self, before_hour: i64) -> StoreResult<u64> {
        let hours = sqlx::query("DELETE FROM key_usage_hourly WHERE hour < ?")
            .bind(before_hour)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let addresses = sqlx::query("DELETE FROM key_addresses WHERE last_seen_at < ?")
            .bind(before_hour.saturating_mul(3_600_000))
            .execute(&self.pool)
            .await?
            .rows_affected();
        // Keys that stopped working before the cutoff leave the lists (their
        // usage went with the same retention; the audit log keeps their story),
        // so that creating and revoking keys cannot grow the table forever.
        let keys = sqlx::query(
            "DELETE FROM api_keys WHERE revoked_at < ?1 OR (expires_at IS NOT NULL AND expires_at < ?1)",
        )
        .bind(before_hour.saturating_mul(3_600_000))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(hours + addresses + keys)
    }

    async fn key_addresses(
        &self,
        key_id: &str,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(Vec<KeyAddress>, u64)> {
        let rows = sqlx::query(
            "SELECT addr, first_seen_at, last_seen_at FROM key_addresses WHERE key_id = ?
             ORDER BY last_seen_at DESC, rowid DESC LIMIT ? OFFSET ?",
        )
        .bind(key_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM key_addresses WHERE key_id = ?")
            .bind(key_id)
            .fetch_one(&self.pool)
            .await?;
        let addresses = rows
            .iter()
            .map(|row| {
                Ok(KeyAddress {
                    addr: row.try_get("addr")?,
                    first_seen_at: from_ms(row.try_get("first_seen_at")?)?,
                    last_seen_at: from_ms(row.try_get("last_seen_at")?)?,
                })
            })
            .collect::<StoreResult<_>>()?;
        Ok((addresses, u64::try_from(total).unwrap_or(0)))
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn search_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRecord>> {
        let (sql, args) = audit_search(query);
        let rows = bind_args(sqlx::query(&sql), &args)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditRecord {
                    id: row.try_get("id")?,
                    organization_id: row.try_get("organization_id")?,
                    workspace_id: row.try_get("workspace_id")?,
                    actor_user_id: row.try_get("actor_user_id")?,
                    actor_key_id: row.try_get("actor_key_id")?,
                    action: row.try_get("action")?,
                    target_type: row.try_get("target_type")?,
                    target_id: row.try_get("target_id")?,
                    details: json_column(row, "details")?,
                    client_addr: row.try_get("client_addr")?,
                    created_at: from_ms(row.try_get("created_at")?)?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl WorkflowStore for SqliteStore {
    async fn create_workflow(
        &self,
        actor: &Actor,
        workspace_id: &str,
        fields: WorkflowFields,
        quotas: &WorkflowQuotas,
    ) -> StoreResult<WorkflowRecord> {
        let id = new_id();
        let at = now();
        let definition = raw_json(&fields.definition)?;
        let mut tx = self.begin_write().await?;
        let org = org_of_workspace(&mut tx, workspace_id).await?;
        let (workflows, bytes) = workspace_totals(&mut tx, workspace_id).await?;
        if workflows >= quotas.workflows_per_workspace {
            return Err(StoreError::QuotaExceeded {
                quota: Quota::WorkflowsPerWorkspace,
                limit: quotas.workflows_per_workspace,
            });
        }
        check_definition_bytes(bytes, 0, definition.get().len() as u64, quotas)?;
        sqlx::query(
            "INSERT INTO workflows (id, workspace_id, name, kind, definition, error_handler, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(workspace_id)
        .bind(&fields.name)
        .bind(&fields.kind)
        .bind(definition.get())
        .bind(&fields.error_handler)
        .bind(to_ms(at))
        .bind(to_ms(at))
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            actor,
            &org,
            Some(workspace_id),
            "workflow.create",
            ("workflow", &id),
            json!({"name": fields.name, "type": fields.kind}),
        )
        .await?;
        tx.commit().await?;
        Ok(WorkflowRecord {
            id,
            workspace_id: workspace_id.to_owned(),
            name: fields.name,
            kind: fields.kind,
            definition,
            error_handler: fields.error_handler,
            created_at: at,
            updated_at: at,
        })
    }

    async fn list_workflows(
        &self,
        workspace_id: &str,
        kind: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(Vec<WorkflowRecord>, u64)> {
        // One statement for the page and the total (see PAGE_OF_KIND); only
        // a page past the end, which has no rows to carry the total, counts
        // apart.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let page = match kind {
            Some(kind) => sqlx::query(PAGE_OF_KIND).bind(workspace_id).bind(kind),
            None => sqlx::query(PAGE_OF_ALL).bind(workspace_id),
        };
        let rows = page.bind(limit).bind(offset).fetch_all(&self.pool).await?;
        let total: i64 = match rows.first() {
            Some(row) => row.try_get("total")?,
            None => {
                let count = match kind {
                    Some(kind) => sqlx::query_scalar(
                        "SELECT COUNT(*) FROM workflows WHERE workspace_id = ? AND kind = ?",
                    )
                    .bind(workspace_id)
                    .bind(kind),
                    None => {
                        sqlx::query_scalar("SELECT COUNT(*) FROM workflows WHERE workspace_id = ?")
                            .bind(workspace_id)
                    }
                };
                count.fetch_one(&self.pool).await?
            }
        };
        let items = rows
            .iter()
            .map(workflow_from_row)
            .collect::<StoreResult<_>>()?;
        Ok((items, u64::try_from(total).unwrap_or(0)))
    }

    async fn workflow(&self, workspace_id: &str, id: &str) -> StoreResult<Option<WorkflowRecord>> {
        sqlx::query("SELECT * FROM workflows WHERE workspace_id = ? AND id = ?")
            .bind(workspace_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(workflow_from_row)
            .transpose()
    }

    async fn update_workflow(
        &self,
        actor: &Actor,
        workspace_id: &str,
        id: &str,
        fields: WorkflowFields,
        quotas: &WorkflowQuotas,
    ) -> StoreResult<WorkflowRecord> {
        let definition = fields.definition.to_string();
        let mut tx = self.begin_write().await?;
        let org = org_of_workspace(&mut tx, workspace_id).await?;
        let old_len: i64 = sqlx::query_scalar(
            "SELECT octet_length(definition) FROM workflows WHERE workspace_id = ? AND id = ?",
        )
        .bind(workspace_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let (_, bytes) = workspace_totals(&mut tx, workspace_id).await?;
        check_definition_bytes(
            bytes,
            u64::try_from(old_len).unwrap_or(0),
            definition.len() as u64,
            quotas,
        )?;
        let updated = sqlx::query(
            "UPDATE workflows SET name = ?, kind = ?, definition = ?, error_handler = ?, updated_at = ?
             WHERE workspace_id = ? AND id = ? RETURNING *",
        )
        .bind(&fields.name)
        .bind(&fields.kind)
        .bind(&definition)
        .bind(&fields.error_handler)
        .bind(to_ms(now()))
        .bind(workspace_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let record = workflow_from_row(&updated)?;
        audit(
            &mut tx,
            actor,
            &org,
            Some(workspace_id),
            "workflow.update",
            ("workflow", id),
            json!({"name": fields.name, "type": fields.kind}),
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn delete_workflow(
        &self,
        actor: &Actor,
        workspace_id: &str,
        id: &str,
    ) -> StoreResult<()> {
        self.delete_audited(
            actor,
            workspace_id,
            "DELETE FROM workflows WHERE workspace_id = ? AND id = ?",
            id,
            "workflow.delete",
            "workflow",
        )
        .await
    }

    async fn create_workflow_version(
        &self,
        actor: &Actor,
        workspace_id: &str,
        workflow_id: &str,
        name: &str,
        description: Option<&str>,
        definition: Value,
        quotas: &WorkflowQuotas,
    ) -> StoreResult<WorkflowVersionRecord> {
        let definition = raw_json(&definition)?;
        let mut tx = self.begin_write().await?;
        let org = org_of_workspace(&mut tx, workspace_id).await?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT id FROM workflows WHERE workspace_id = ? AND id = ?")
                .bind(workspace_id)
                .bind(workflow_id)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        let versions: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM workflow_versions WHERE workflow_id = ?")
                .bind(workflow_id)
                .fetch_one(&mut *tx)
                .await?;
        if u64::try_from(versions).unwrap_or(0) >= quotas.versions_per_workflow {
            return Err(StoreError::QuotaExceeded {
                quota: Quota::VersionsPerWorkflow,
                limit: quotas.versions_per_workflow,
            });
        }
        let (_, bytes) = workspace_totals(&mut tx, workspace_id).await?;
        check_definition_bytes(bytes, 0, definition.get().len() as u64, quotas)?;
        let record = WorkflowVersionRecord {
            id: new_id(),
            workflow_id: workflow_id.to_owned(),
            name: name.to_owned(),
            description: description.map(str::to_owned),
            definition: Some(definition),
            created_by: actor.user_id.clone(),
            created_at: now(),
        };
        sqlx::query(
            "INSERT INTO workflow_versions (id, workflow_id, name, description, definition, created_by, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&record.id)
        .bind(workflow_id)
        .bind(name)
        .bind(description)
        .bind(record.definition.as_deref().map(RawValue::get))
        .bind(&record.created_by)
        .bind(to_ms(record.created_at))
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            actor,
            &org,
            Some(workspace_id),
            "workflow_version.create",
            ("workflow_version", &record.id),
            json!({"workflow_id": workflow_id, "name": name}),
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn list_workflow_versions(
        &self,
        workspace_id: &str,
        workflow_id: &str,
        slice: VersionSlice,
    ) -> StoreResult<(Vec<WorkflowVersionRecord>, u64)> {
        let exists: Option<String> =
            sqlx::query_scalar("SELECT id FROM workflows WHERE workspace_id = ? AND id = ?")
                .bind(workspace_id)
                .bind(workflow_id)
                .fetch_optional(&self.pool)
                .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        let sql = if slice.definitions {
            VERSION_PAGE
        } else {
            VERSION_PAGE_WITHOUT_DEFINITIONS
        };
        let rows = sqlx::query(sql)
            .bind(workflow_id)
            .bind(i64::try_from(slice.limit).unwrap_or(i64::MAX))
            .bind(i64::try_from(slice.offset).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        let total: i64 = match rows.first() {
            Some(row) => row.try_get("total")?,
            None => {
                sqlx::query_scalar("SELECT COUNT(*) FROM workflow_versions WHERE workflow_id = ?")
                    .bind(workflow_id)
                    .fetch_one(&self.pool)
                    .await?
            }
        };
        let versions = rows
            .iter()
            .map(version_from_row)
            .collect::<StoreResult<_>>()?;
        Ok((versions, u64::try_from(total).unwrap_or(0)))
    }

    async fn update_workflow_version(
        &self,
        actor: &Actor,
        workspace_id: &str,
        workflow_id: &str,
        version_id: &str,
        name: &str,
        description: Option<&str>,
        definition: Value,
        quotas: &WorkflowQuotas,
    ) -> StoreResult<WorkflowVersionRecord> {
        let definition = definition.to_string();
        let mut tx = self.begin_write().await?;
        let org = org_of_workspace(&mut tx, workspace_id).await?;
        let old_len: i64 = sqlx::query_scalar(
            "SELECT octet_length(v.definition) FROM workflow_versions v
             JOIN workflows w ON w.id = v.workflow_id
             WHERE v.id = ? AND v.workflow_id = ? AND w.workspace_id = ?",
        )
        .bind(version_id)
        .bind(workflow_id)
        .bind(workspace_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let (_, bytes) = workspace_totals(&mut tx, workspace_id).await?;
        check_definition_bytes(
            bytes,
            u64::try_from(old_len).unwrap_or(0),
            definition.len() as u64,
            quotas,
        )?;
        let row = sqlx::query(
            "UPDATE workflow_versions SET name = ?, description = ?, definition = ?
             WHERE id = ? AND workflow_id = ?
               AND workflow_id IN (SELECT id FROM workflows WHERE workspace_id = ?)
             RETURNING *",
        )
        .bind(name)
        .bind(description)
        .bind(&definition)
        .bind(version_id)
        .bind(workflow_id)
        .bind(workspace_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let record = version_from_row(&row)?;
        audit(
            &mut tx,
            actor,
            &org,
            Some(workspace_id),
            "workflow_version.update",
            ("workflow_version", version_id),
            json!({"workflow_id": workflow_id, "name": name}),
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn setting(&self, name: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn set_setting(&self, name: &str, value: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES (?, ?)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn events(&self) -> &EventBus {
        &self.events
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// An acknowledged commit survives a power loss: every connection of
    /// the pool syncs the write-ahead log at each commit.
    #[tokio::test]
    async fn commits_are_synced_to_disk_at_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let mut connections = Vec::new();
        for _ in 0..3 {
            connections.push(store.pool.acquire().await.unwrap());
        }
        for connection in &mut connections {
            let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut **connection)
                .await
                .unwrap();
            assert_eq!(level, 2, "synchronous = FULL");
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut **connection)
                .await
                .unwrap();
            assert_eq!(mode, "wal");
        }
    }

    /// The workflow page statements read the page from an index in page
    /// order: no step sorts the matching rows, so page 1 of a workspace with
    /// thousands of workflows reads ten rows, not thousands.
    #[tokio::test]
    async fn workflow_pages_are_read_in_index_order_without_sorting() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        for (sql, args) in [(PAGE_OF_KIND, 4), (PAGE_OF_ALL, 3)] {
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let mut query = sqlx::query(&explain);
            for _ in 0..args {
                query = query.bind(1i64);
            }
            let plan: Vec<String> = query
                .fetch_all(&store.pool)
                .await
                .unwrap()
                .iter()
                .map(|row| row.get::<String, _>("detail"))
                .collect();
            let text = plan.join("\n");
            assert!(!text.contains("TEMP B-TREE"), "{text}");
            assert!(
                text.contains("COVERING INDEX workflows_workspace"),
                "{text}"
            );
            assert!(text.contains("INTEGER PRIMARY KEY (rowid=?)"), "{text}");
        }
    }

    async fn plan(store: &SqliteStore, sql: &str, args: &[Arg]) -> String {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        bind_args(sqlx::query(&explain), args)
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<String, _>("detail"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Pages of a workflow's versions come from their index in page order,
    /// as workflow pages do (with or without the definitions).
    #[tokio::test]
    async fn version_pages_are_read_in_index_order_without_sorting() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        for sql in [VERSION_PAGE, VERSION_PAGE_WITHOUT_DEFINITIONS] {
            let args = [Arg::Text("w".to_owned()), Arg::Int(10), Arg::Int(0)];
            let text = plan(&store, sql, &args).await;
            assert!(!text.contains("TEMP B-TREE"), "{text}");
            assert!(
                text.contains("COVERING INDEX workflow_versions_page_idx"),
                "{text}"
            );
            assert!(!text.contains("SCAN workflow_versions"), "{text}");
        }
    }

    /// Evicting a key's least recently seen addresses walks that key's
    /// entries of its index, newest first, without sorting or scanning.
    #[tokio::test]
    async fn address_eviction_reads_the_keys_index_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let args = [Arg::Text("k".to_owned()), Arg::Int(100)];
        let text = plan(&store, EVICT_ADDRESSES, &args).await;
        assert!(text.contains("key_addresses_key_seen_idx"), "{text}");
        assert!(!text.contains("TEMP B-TREE"), "{text}");
        assert!(!text.contains("SCAN key_addresses"), "{text}");
    }

    /// Every audit search the API, the Audit tab and the usage flags run
    /// reads an index, never the whole table; those without an action
    /// filter read it newest first without sorting.
    #[tokio::test]
    async fn audit_searches_use_an_index_and_never_scan_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let query = |workspace: bool, action: Option<&str>, before: bool| AuditQuery {
            organization_id: "org".to_owned(),
            workspace_id: workspace.then(|| "ws".to_owned()),
            action_prefix: action.map(str::to_owned),
            before_id: before.then_some(1000),
            limit: 50,
        };
        for (q, index, sorts) in [
            // flags.rs: a workspace's role changes.
            (
                query(true, Some("membership.set"), false),
                "audit_log_workspace_action_idx",
                true,
            ),
            // The Audit tab and the API with a workspace, filtered or paged
            // back (paged back, the id range is the tighter bound).
            (
                query(true, Some("api_key."), false),
                "audit_log_workspace_action_idx",
                true,
            ),
            (
                query(true, Some("api_key."), true),
                "audit_log_workspace_idx",
                false,
            ),
            (query(true, None, false), "audit_log_workspace_idx", false),
            (query(true, None, true), "audit_log_workspace_idx", false),
            // Tenant-admin keys: the whole organization.
            (
                query(false, Some("workspace."), false),
                "audit_log_action_idx",
                true,
            ),
            (query(false, None, true), "audit_log_org_idx", false),
        ] {
            let (sql, args) = audit_search(&q);
            let text = plan(&store, &sql, &args).await;
            assert!(!text.contains("SCAN audit_log"), "{q:?}: {text}");
            assert!(
                text.contains(&format!("USING INDEX {index} ")),
                "{q:?}: {text}"
            );
            if !sorts {
                assert!(!text.contains("TEMP B-TREE"), "{q:?}: {text}");
            }
        }
    }

    #[test]
    fn an_action_prefix_is_an_index_range() {
        assert_eq!(prefix_successor("api_key.").as_deref(), Some("api_key/"));
        assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_successor("\u{10FFFF}"), None);
        let (sql, args) = audit_search(&AuditQuery {
            organization_id: "org".to_owned(),
            workspace_id: None,
            action_prefix: Some("API_KEY.".to_owned()),
            before_id: None,
            limit: 5,
        });
        assert!(sql.contains("action >= ? AND action < ?"), "{sql}");
        assert_eq!(
            args,
            vec![
                Arg::Text("org".to_owned()),
                Arg::Text("api_key.".to_owned()),
                Arg::Text("api_key/".to_owned()),
                Arg::Int(5)
            ]
        );
    }

    /// `workspace_totals` (kept by triggers) always equals what a full
    /// recount gives, whatever was written or deleted, cascades included.
    #[tokio::test]
    async fn workspace_totals_follow_every_write_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let actor = Actor::system();
        let org = store.create_organization(&actor, "Org").await.unwrap();
        let user = store
            .create_user(
                &actor,
                NewUser {
                    organization_id: org.id.clone(),
                    email: "a@b.c".to_owned(),
                    name: "A".to_owned(),
                    password_hash: "hash".to_owned(),
                    is_org_admin: true,
                    must_change_password: false,
                },
            )
            .await
            .unwrap();
        let quotas = WorkflowQuotas {
            workflows_per_workspace: 100,
            versions_per_workflow: 100,
            definition_bytes_per_workspace: 1 << 30,
        };
        let recount = |workspace: String| {
            let pool = store.pool.clone();
            async move {
                let stored: Option<(i64, i64)> = sqlx::query_as(
                    "SELECT workflows, definition_bytes FROM workspace_totals WHERE workspace_id = ?",
                )
                .bind(&workspace)
                .fetch_optional(&pool)
                .await
                .unwrap();
                let counted: (i64, i64) = sqlx::query_as(
                    "SELECT (SELECT COUNT(*) FROM workflows WHERE workspace_id = ?1),
                        COALESCE((SELECT SUM(octet_length(definition)) FROM workflows WHERE workspace_id = ?1), 0)
                      + COALESCE((SELECT SUM(octet_length(v.definition)) FROM workflow_versions v
                                  JOIN workflows f ON f.id = v.workflow_id WHERE f.workspace_id = ?1), 0)",
                )
                .bind(&workspace)
                .fetch_one(&pool)
                .await
                .unwrap();
                (stored.unwrap_or((0, 0)), counted)
            }
        };
        let ws = store
            .create_workspace(&actor, &org.id, "W", None, &user.id)
            .await
            .unwrap();
        let fields = |text: &str| WorkflowFields {
            name: "w".to_owned(),
            kind: "flow".to_owned(),
            definition: json!({"nodes": [], "edges": [], "note": text}),
            error_handler: None,
        };
        let a = store
            .create_workflow(&actor, &ws.id, fields("héllo"), &quotas)
            .await
            .unwrap();
        let b = store
            .create_workflow(&actor, &ws.id, fields("b"), &quotas)
            .await
            .unwrap();
        let v = store
            .create_workflow_version(
                &actor,
                &ws.id,
                &a.id,
                "v",
                None,
                json!({"x": "ünï"}),
                &quotas,
            )
            .await
            .unwrap();
        store
            .create_workflow_version(&actor, &ws.id, &a.id, "v2", None, json!({"y": 1}), &quotas)
            .await
            .unwrap();
        store
            .update_workflow(&actor, &ws.id, &b.id, fields("a longer note"), &quotas)
            .await
            .unwrap();
        store
            .update_workflow_version(&actor, &ws.id, &a.id, &v.id, "v", None, json!({}), &quotas)
            .await
            .unwrap();
        let (stored, counted) = recount(ws.id.clone()).await;
        assert_eq!(stored.0, 2);
        assert_eq!(stored, counted);
        store.delete_workflow(&actor, &ws.id, &a.id).await.unwrap();
        let (stored, counted) = recount(ws.id.clone()).await;
        assert_eq!(stored.0, 1);
        assert_eq!(stored, counted, "a workflow's versions go with it");
        store
            .delete_workspace(&actor, &org.id, &ws.id)
            .await
            .unwrap();
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM workspace_totals")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(left, 0);
    }
}
