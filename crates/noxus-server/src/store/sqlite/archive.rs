//! The one way rows leave the append-only audit log: a deliberate archive
//! by an operator (`noxus audit-archive`). The rows created before a date
//! are written to a JSON-lines file, which is synced and read back before
//! anything is deleted; then one transaction opens the archive window
//! (migration 0006), deletes exactly those rows, closes the window and
//! appends an `audit.archive` row naming the file, its SHA-256, the count
//! and the id range. A running server on the same database is fine: SQLite
//! (WAL) lets it read and write meanwhile, and the rows are immutable, so
//! checking their count and id range again inside the transaction proves
//! the deletion removes what the file holds.

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::rows::AuditRow;
use super::{audit, from_ms, now, to_ms, Actor, SqliteStore};
use crate::time_fmt::rfc3339;

/// Rows read from the database per statement while writing the file.
const CHUNK: i64 = 1000;

/// What an archive moved out of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditArchive {
    /// Rows archived (and deleted).
    pub rows: u64,
    /// Lowest archived id.
    pub first_id: i64,
    /// Highest archived id.
    pub last_id: i64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// The file.
    pub file: PathBuf,
    /// Rows created before this were archived (RFC 3339).
    pub before: String,
}

/// The archived rows: count, lowest and highest id.
async fn span(
    executor: impl sqlx::SqliteExecutor<'_>,
    before_ms: i64,
    last_id: i64,
) -> Result<(u64, Option<i64>, Option<i64>), sqlx::Error> {
    let (count, first, last): (i64, Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT COUNT(*), MIN(id), MAX(id) FROM audit_log WHERE created_at < ? AND id <= ?",
    )
    .bind(before_ms)
    .bind(last_id)
    .fetch_one(executor)
    .await?;
    Ok((u64::try_from(count).unwrap_or(0), first, last))
}

fn row_json(row: &AuditRow) -> anyhow::Result<Value> {
    let details = &row.details;
    let created_at = row.created_at;
    Ok(json!({
        "id": row.id,
        "organization_id": row.organization_id,
        "workspace_id": row.workspace_id,
        "actor_user_id": row.actor_user_id,
        "actor_key_id": row.actor_key_id,
        "action": row.action,
        "target_type": row.target_type,
        "target_id": row.target_id,
        // Kept as written if it somehow is not JSON: an archive loses nothing.
        "details": serde_json::from_str::<Value>(details).unwrap_or_else(|_| Value::String(details.clone())),
        "client_addr": row.client_addr,
        "created_at": rfc3339(from_ms(created_at)?),
        "created_at_ms": created_at,
    }))
}

/// Reads `path` back: every line a JSON object, ids strictly increasing
/// from `first` to `last`, `rows` of them, and the bytes hash to `sha256`.
fn verify(path: &Path, rows: u64, first: i64, last: i64, sha256: &str) -> anyhow::Result<()> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot reopen {} to verify it", path.display()))?;
    let mut reader = std::io::BufReader::new(file);
    let mut hasher = Sha256::new();
    let mut line = String::new();
    let mut count = 0u64;
    let mut previous: Option<i64> = None;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        hasher.update(line.as_bytes());
        let value: Value = serde_json::from_str(&line)
            .with_context(|| format!("line {} of the archive is not JSON", count + 1))?;
        let id = value["id"]
            .as_i64()
            .with_context(|| format!("line {} of the archive has no id", count + 1))?;
        if previous.is_some_and(|p| id <= p) || id < first || id > last {
            bail!("line {} of the archive has id {id} out of order", count + 1);
        }
        previous = Some(id);
        count += 1;
    }
    if count != rows {
        bail!("the archive holds {count} rows, {rows} were written");
    }
    if hex::encode(hasher.finalize()) != sha256 {
        bail!("the archive's SHA-256 changed after it was written");
    }
    Ok(())
}

impl SqliteStore {
    /// Moves the audit rows created before `before` into `out` (JSON
    /// lines, one row each, oldest first), then deletes them and appends an
    /// `audit.archive` row, in one transaction. Refuses a `before` in the
    /// future and an `out` that already exists. Returns `None` (writing no
    /// file) when no row is that old.
    pub async fn archive_audit(
        &self,
        before: OffsetDateTime,
        out: &Path,
        actor: &Actor,
        operator: Option<&str>,
    ) -> anyhow::Result<Option<AuditArchive>> {
        if before > now() {
            bail!(
                "--before {} is in the future; only rows already written can be archived",
                rfc3339(before)
            );
        }
        if out.exists() {
            bail!(
                "{} already exists; name a new file (an archive never overwrites one)",
                out.display()
            );
        }
        let before_ms = to_ms(before);
        let (rows, first, last) = span(&self.pool, before_ms, i64::MAX).await?;
        let (Some(first), Some(last)) = (first, last) else {
            return Ok(None);
        };

        // 1. The file, written and hashed as it goes, then synced.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        let mut writer = BufWriter::new(file);
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        let mut after = first - 1;
        loop {
            let chunk = sqlx::query_as::<_, AuditRow>(
                "SELECT * FROM audit_log WHERE id > ? AND id <= ? AND created_at < ?
                 ORDER BY id LIMIT ?",
            )
            .bind(after)
            .bind(last)
            .bind(before_ms)
            .bind(CHUNK)
            .fetch_all(&self.pool)
            .await?;
            let Some(tail) = chunk.last() else {
                break;
            };
            after = tail.id;
            for row in &chunk {
                let mut line = serde_json::to_string(&row_json(row)?)?;
                line.push('\n');
                hasher.update(line.as_bytes());
                writer.write_all(line.as_bytes())?;
                written += 1;
            }
        }
        let file = writer
            .into_inner()
            .map_err(|e| anyhow::anyhow!("cannot write {}: {}", out.display(), e.error()))?;
        file.sync_all()
            .with_context(|| format!("cannot sync {}", out.display()))?;
        drop(file);
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The file's directory entry must survive a crash too.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("cannot sync directory {}", dir.display()))?;
        }
        let sha256 = hex::encode(hasher.finalize());
        if written != rows {
            bail!("wrote {written} rows, expected {rows}; nothing was deleted");
        }

        // 2. Read it back.
        verify(out, rows, first, last, &sha256)
            .with_context(|| format!("{} did not verify; nothing was deleted", out.display()))?;

        // 3. Delete exactly those rows and record the archive, atomically.
        let mut tx = self.begin_write().await?;
        if span(&mut *tx, before_ms, last).await? != (rows, Some(first), Some(last)) {
            bail!(
                "the audit rows before {} changed while they were written (another archive?); nothing was deleted, {} can be removed",
                rfc3339(before),
                out.display()
            );
        }
        sqlx::query("INSERT INTO audit_archive_window (id, last_id) VALUES (1, ?)")
            .bind(last)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM audit_log WHERE created_at < ? AND id <= ?")
            .bind(before_ms)
            .bind(last)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted != rows {
            bail!("would delete {deleted} rows instead of {rows}; nothing was deleted");
        }
        sqlx::query("DELETE FROM audit_archive_window")
            .execute(&mut *tx)
            .await?;
        let organization: Option<crate::store::OrganizationId> =
            sqlx::query_scalar("SELECT id FROM organizations ORDER BY created_at LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        let file_name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = std::fs::canonicalize(out).unwrap_or_else(|_| out.to_path_buf());
        audit(
            &mut tx,
            actor,
            &organization.unwrap_or_else(|| crate::store::OrganizationId::from("")),
            None,
            "audit.archive",
            ("audit_log", &format!("{first}-{last}")),
            json!({
                "rows": rows,
                "first_id": first,
                "last_id": last,
                "before": rfc3339(before),
                "sha256": sha256,
                "file": file_name,
                "path": path.display().to_string(),
                "operator": operator,
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(AuditArchive {
            rows,
            first_id: first,
            last_id: last,
            sha256,
            file: path,
            before: rfc3339(before),
        }))
    }
}
