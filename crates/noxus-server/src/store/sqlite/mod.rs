//! The embedded store: SQLite in WAL mode with foreign keys on, migrations
//! embedded in the binary and applied at start.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use noxus_api::Role;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use time::OffsetDateTime;

use super::*;

mod archive;
mod audit;
mod callbacks;
mod keys;
mod leaks;
mod members;
use super::common::*;
use super::rows;
mod runs;
mod sessions;
mod usage;
mod workflows;
mod workspaces;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

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
    /// One connection, for write transactions only: writers of this process
    /// queue for it in order ([`SqliteStore::begin_write`]).
    writer: SqlitePool,
    events: EventBus,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl SqliteStore {
    /// A write transaction that takes SQLite's write lock at once
    /// (`BEGIN IMMEDIATE`). A deferred transaction that reads before it
    /// writes fails with "database is locked" when another writer (such as
    /// the usage flusher) got in between, instead of waiting its turn; an
    /// immediate one waits for the busy timeout.
    ///
    /// Write transactions take turns on one connection of their own: SQLite
    /// lets one writer in at a time anyway, and a writer waiting for its
    /// lock inside SQLite polls with growing sleeps (up to 100 ms) and no
    /// order, so under a load of concurrent writes (runs queued and
    /// executed at once) some waited past the busy timeout and failed with
    /// "database is locked" while others went ahead. Waiting for the
    /// connection instead is first come, first served, without sleeps.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
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
        workspace_id: &WorkspaceId,
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
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&pool).await?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            // As long as SQLite's busy timeout: the longest a write waits.
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            writer,
            events: EventBus::new(),
        })
    }
}

/// A workspace's stored workflows and definition bytes (`workspace_totals`,
/// kept by triggers; zero before its first workflow).
async fn workspace_totals(
    tx: &mut Transaction<'_, Sqlite>,
    workspace_id: &WorkspaceId,
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

async fn audit<T: AsRef<str> + ?Sized>(
    tx: &mut Transaction<'_, Sqlite>,
    actor: &Actor,
    organization_id: &OrganizationId,
    workspace_id: Option<&WorkspaceId>,
    action: &str,
    target: (&str, &T),
    details: Value,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_log (organization_id, workspace_id, actor_user_id, actor_key_id,
             action, target_type, target_id, details, client_addr, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(organization_id)
    .bind(workspace_id)
    .bind(actor.user_id.as_ref())
    .bind(actor.key_id.as_ref())
    .bind(action)
    .bind(target.0)
    .bind(target.1.as_ref())
    .bind(details.to_string())
    .bind(actor.client_addr.as_deref())
    .bind(to_ms(now()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn org_of_workspace(
    tx: &mut Transaction<'_, Sqlite>,
    workspace_id: &WorkspaceId,
) -> StoreResult<OrganizationId> {
    sqlx::query_scalar("SELECT organization_id FROM workspaces WHERE id = ?")
        .bind(workspace_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound)
}

/// Refuses (rolling back) a change that left the workspace without an owner.
async fn keeps_an_owner(
    tx: &mut Transaction<'_, Sqlite>,
    workspace_id: &WorkspaceId,
) -> StoreResult<()> {
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
    organization_id: &OrganizationId,
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
) -> StoreResult<Vec<KeyId>> {
    let at = binds.len() + 1;
    let why = binds.len() + 2;
    let sql = format!(
        "UPDATE api_keys SET revoked_at = ?{at}, revoked_reason = ?{why}
         WHERE {filter} AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?{at})
         RETURNING id"
    );
    let mut query = sqlx::query_scalar::<_, KeyId>(&sql);
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

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.writer.close().await;
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

    async fn setting_or_insert(&self, name: &str, value: &str) -> StoreResult<String> {
        // A conflicting insert waits for the other transaction and does
        // nothing: the row read next is the one committed first.
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        let stored: Option<String> =
            sqlx::query_scalar("SELECT value FROM settings WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        stored.ok_or_else(|| StoreError::Corrupt(format!("the setting {name} vanished")))
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

    fn pool_stats(&self) -> super::PoolStats {
        // The readers' pool and the one writer connection, as one.
        let (readers, writer) = (
            super::PoolStats::of(&self.pool),
            super::PoolStats::of(&self.writer),
        );
        super::PoolStats {
            open: readers.open + writer.open,
            idle: readers.idle + writer.idle,
            max: readers.max + writer.max,
        }
    }

    async fn active_runs(&self) -> StoreResult<super::ActiveRuns> {
        // The claim index (status, lease_until) answers it.
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, COUNT(*) FROM runs WHERE status IN ('queued', 'running') GROUP BY status",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(super::active_runs_of(rows))
    }
}
