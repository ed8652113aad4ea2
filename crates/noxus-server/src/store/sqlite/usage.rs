//! [`UsageStore`] on SQLite.

use super::rows::{records, AddressRow, UsageRow};
use super::*;

/// Deletes a key's addresses beyond the `?2` most recently seen (binds the
/// key id, then the bound). Walks the key's entries of
/// `key_addresses_key_seen_idx` newest first; the rowid breaks ties.
pub(super) const EVICT_ADDRESSES: &str = "DELETE FROM key_addresses WHERE rowid IN (
        SELECT rowid FROM key_addresses WHERE key_id = ?1
        ORDER BY last_seen_at DESC, rowid DESC LIMIT -1 OFFSET ?2)";

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
        let rows = sqlx::query_as::<_, UsageRow>(
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
        Ok(rows.into_iter().map(UsageHour::from).collect())
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
        let rows = sqlx::query_as::<_, AddressRow>(
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
        let addresses = records(rows)?;
        Ok((addresses, u64::try_from(total).unwrap_or(0)))
    }
}
