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
        // The whole batch in a few statements, whatever its size: each
        // takes its rows as one JSON array (`json_each`), as PostgreSQL's
        // store takes arrays (`UNNEST`). Keys deleted meanwhile (with their
        // workspace) are skipped by each statement.
        let mut last_used = Vec::new();
        let mut hours = Vec::new();
        let mut addresses = Vec::new();
        let mut key_ids = Vec::new();
        for flush in batch {
            key_ids.push(json!(flush.key_id));
            if let Some((at, addr)) = &flush.last_used {
                last_used.push(json!([flush.key_id, to_ms(*at), addr]));
            }
            for (hour, c) in &flush.hours {
                hours.push(json!([
                    flush.key_id,
                    flush.workspace_id,
                    hour,
                    c.requests,
                    c.ok,
                    c.client_errors,
                    c.server_errors,
                    c.unauthorized,
                    c.forbidden,
                    c.rate_limited
                ]));
            }
            for (addr, at) in &flush.addresses {
                addresses.push(json!([flush.key_id, addr, to_ms(*at)]));
            }
        }
        let mut tx = self.begin_write().await?;
        if !last_used.is_empty() {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = j.at, last_used_addr = j.addr
                 FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS at,
                              json_extract(value, '$[2]') AS addr
                       FROM json_each(?1)) AS j
                 WHERE api_keys.id = j.id
                   AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at <= j.at)",
            )
            .bind(Value::Array(last_used).to_string())
            .execute(&mut *tx)
            .await?;
        }
        if !hours.is_empty() {
            sqlx::query(
                "INSERT INTO key_usage_hourly (key_id, workspace_id, hour, requests, ok, client_errors,
                     server_errors, unauthorized, forbidden, rate_limited)
                 SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
                        json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
                        json_extract(value, '$[6]'), json_extract(value, '$[7]'), json_extract(value, '$[8]'),
                        json_extract(value, '$[9]')
                 FROM json_each(?1)
                 WHERE EXISTS (SELECT 1 FROM api_keys WHERE id = json_extract(value, '$[0]'))
                 ON CONFLICT (key_id, hour) DO UPDATE SET
                     requests = requests + excluded.requests, ok = ok + excluded.ok,
                     client_errors = client_errors + excluded.client_errors,
                     server_errors = server_errors + excluded.server_errors,
                     unauthorized = unauthorized + excluded.unauthorized,
                     forbidden = forbidden + excluded.forbidden,
                     rate_limited = rate_limited + excluded.rate_limited",
            )
            .bind(Value::Array(hours).to_string())
            .execute(&mut *tx)
            .await?;
        }
        if !addresses.is_empty() {
            // Known addresses only move their last sighting; new ones are
            // added in the order the batch names them (the rowid breaks
            // ties of last sighting at eviction).
            sqlx::query(
                "INSERT INTO key_addresses (key_id, addr, first_seen_at, last_seen_at)
                 SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                        json_extract(value, '$[2]'), json_extract(value, '$[2]')
                 FROM json_each(?1)
                 WHERE EXISTS (SELECT 1 FROM api_keys WHERE id = json_extract(value, '$[0]'))
                 ORDER BY key
                 ON CONFLICT (key_id, addr) DO UPDATE SET
                     last_seen_at = MAX(last_seen_at, excluded.last_seen_at)",
            )
            .bind(Value::Array(addresses).to_string())
            .execute(&mut *tx)
            .await?;
            // Keys now past their bound keep the most recently seen; the
            // rest are forgotten (and count as new if they come back).
            let bound = i64::try_from(max_addresses_per_key).unwrap_or(i64::MAX);
            let over: Vec<String> = sqlx::query_scalar(
                "SELECT key_id FROM key_addresses
                 WHERE key_id IN (SELECT value FROM json_each(?1))
                 GROUP BY key_id HAVING COUNT(*) > ?2",
            )
            .bind(Value::Array(key_ids).to_string())
            .bind(bound)
            .fetch_all(&mut *tx)
            .await?;
            for key_id in over {
                sqlx::query(EVICT_ADDRESSES)
                    .bind(&key_id)
                    .bind(bound)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn usage_hours(
        &self,
        workspace_id: &WorkspaceId,
        key_id: Option<&KeyId>,
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
        key_id: &KeyId,
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
