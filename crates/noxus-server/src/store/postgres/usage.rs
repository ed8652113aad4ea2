//! [`UsageStore`] on PostgreSQL: a flush is a handful of statements
//! whatever its size, each taking whole arrays (`UNNEST`), and counts merge
//! by addition in the database so that several writers add up exactly.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::rows::{AddressRow, UsageRow};
use super::*;

/// Counts to add per (key, hour), merged across the batch: one `ON
/// CONFLICT DO UPDATE` statement may not touch a row twice.
type Hours<'a> = BTreeMap<(&'a str, i64), (&'a str, UsageCounts)>;

#[async_trait]
impl UsageStore for PostgresStore {
    async fn record_usage(
        &self,
        batch: &[KeyUsageFlush],
        max_addresses_per_key: usize,
    ) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        // The batch's keys that still exist, locked in id order until the
        // commit: a key deleted meanwhile (with its workspace) is skipped,
        // none can go before the writes below, and two writers flushing the
        // same keys take turns instead of deadlocking on their rows.
        let ids: BTreeSet<&str> = batch.iter().map(|f| f.key_id.as_str()).collect();
        let ids: Vec<&str> = ids.into_iter().collect();
        let existing: BTreeSet<String> = sqlx::query_scalar(
            "SELECT id FROM api_keys WHERE id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let flushes = batch
            .iter()
            .filter(|f| existing.contains(f.key_id.as_str()));

        // Last use per key (the latest of the batch).
        let mut last_used: BTreeMap<&str, (i64, Option<&str>)> = BTreeMap::new();
        let mut hours: Hours = BTreeMap::new();
        // Per (key, address): first and latest sighting, in the order the
        // batch first names them (new addresses are inserted in that order,
        // which breaks ties between equal sightings, as SQLite's rowid does).
        let mut addresses: Vec<((&str, &str), (i64, i64))> = Vec::new();
        let mut address_index: HashMap<(&str, &str), usize> = HashMap::new();
        for flush in flushes {
            let key = flush.key_id.as_str();
            if let Some((at, addr)) = &flush.last_used {
                let at = to_ms(*at);
                let entry = last_used.entry(key).or_insert((at, addr.as_deref()));
                if at >= entry.0 {
                    *entry = (at, addr.as_deref());
                }
            }
            for (hour, counts) in &flush.hours {
                hours
                    .entry((key, *hour))
                    .or_insert((flush.workspace_id.as_str(), UsageCounts::default()))
                    .1
                    .add(counts);
            }
            for (addr, at) in &flush.addresses {
                let at = to_ms(*at);
                match address_index.entry((key, addr.as_str())) {
                    Entry::Occupied(seen) => {
                        let last = &mut addresses[*seen.get()].1 .1;
                        *last = (*last).max(at);
                    }
                    Entry::Vacant(new) => {
                        new.insert(addresses.len());
                        addresses.push(((key, addr.as_str()), (at, at)));
                    }
                }
            }
        }

        if !last_used.is_empty() {
            let (keys, rest): (Vec<&str>, Vec<(i64, Option<&str>)>) = last_used.into_iter().unzip();
            let (ats, addrs): (Vec<i64>, Vec<Option<&str>>) = rest.into_iter().unzip();
            sqlx::query(
                "UPDATE api_keys k SET last_used_at = u.at, last_used_addr = u.addr
                 FROM UNNEST($1::text[], $2::bigint[], $3::text[]) AS u(id, at, addr)
                 WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at <= u.at)",
            )
            .bind(&keys)
            .bind(&ats)
            .bind(&addrs)
            .execute(&mut *tx)
            .await?;
        }

        if !hours.is_empty() {
            let mut columns: [Vec<i64>; 8] = Default::default();
            let mut keys = Vec::with_capacity(hours.len());
            let mut workspaces = Vec::with_capacity(hours.len());
            for ((key, hour), (workspace, c)) in &hours {
                keys.push(*key);
                workspaces.push(*workspace);
                for (column, value) in columns.iter_mut().zip([
                    *hour,
                    to_i64(c.requests),
                    to_i64(c.ok),
                    to_i64(c.client_errors),
                    to_i64(c.server_errors),
                    to_i64(c.unauthorized),
                    to_i64(c.forbidden),
                    to_i64(c.rate_limited),
                ]) {
                    column.push(value);
                }
            }
            let [hour, requests, ok, client_errors, server_errors, unauthorized, forbidden, rate_limited] =
                columns;
            sqlx::query(
                "INSERT INTO key_usage_hourly (key_id, workspace_id, hour, requests, ok, client_errors,
                     server_errors, unauthorized, forbidden, rate_limited)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                     $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[])
                 ON CONFLICT (key_id, hour) DO UPDATE SET
                     requests = key_usage_hourly.requests + EXCLUDED.requests,
                     ok = key_usage_hourly.ok + EXCLUDED.ok,
                     client_errors = key_usage_hourly.client_errors + EXCLUDED.client_errors,
                     server_errors = key_usage_hourly.server_errors + EXCLUDED.server_errors,
                     unauthorized = key_usage_hourly.unauthorized + EXCLUDED.unauthorized,
                     forbidden = key_usage_hourly.forbidden + EXCLUDED.forbidden,
                     rate_limited = key_usage_hourly.rate_limited + EXCLUDED.rate_limited",
            )
            .bind(&keys)
            .bind(&workspaces)
            .bind(&hour)
            .bind(&requests)
            .bind(&ok)
            .bind(&client_errors)
            .bind(&server_errors)
            .bind(&unauthorized)
            .bind(&forbidden)
            .bind(&rate_limited)
            .execute(&mut *tx)
            .await?;
        }

        if !addresses.is_empty() {
            let mut keys = Vec::with_capacity(addresses.len());
            let mut addrs = Vec::with_capacity(addresses.len());
            let mut firsts = Vec::with_capacity(addresses.len());
            let mut lasts = Vec::with_capacity(addresses.len());
            for ((key, addr), (first, last)) in &addresses {
                keys.push(*key);
                addrs.push(*addr);
                firsts.push(*first);
                lasts.push(*last);
            }
            // Known addresses only move their last sighting; `xmax = 0`
            // tells the rows that were inserted.
            let inserted: Vec<(String, bool)> = sqlx::query_as(
                "INSERT INTO key_addresses (key_id, addr, first_seen_at, last_seen_at)
                 SELECT key_id, addr, first_seen_at, last_seen_at
                 FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[])
                     WITH ORDINALITY AS u(key_id, addr, first_seen_at, last_seen_at, n)
                 ORDER BY n
                 ON CONFLICT (key_id, addr) DO UPDATE SET
                     last_seen_at = GREATEST(key_addresses.last_seen_at, EXCLUDED.last_seen_at)
                 RETURNING key_id, (xmax = 0) AS inserted",
            )
            .bind(&keys)
            .bind(&addrs)
            .bind(&firsts)
            .bind(&lasts)
            .fetch_all(&mut *tx)
            .await?;
            // A new address may take its key past the bound, and only then
            // is anything evicted: the most recently seen are kept (the
            // earlier inserted first among equals), the rest forgotten.
            let grown: BTreeSet<String> = inserted
                .into_iter()
                .filter_map(|(key, new)| new.then_some(key))
                .collect();
            if !grown.is_empty() {
                let grown: Vec<String> = grown.into_iter().collect();
                sqlx::query(
                    "DELETE FROM key_addresses a USING (
                         SELECT seq, row_number() OVER (
                             PARTITION BY key_id ORDER BY last_seen_at DESC, seq DESC) AS rank
                         FROM key_addresses WHERE key_id = ANY($1::text[])
                     ) r
                     WHERE a.seq = r.seq AND r.rank > $2",
                )
                .bind(&grown)
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
        workspace_id: &WorkspaceId,
        key_id: Option<&KeyId>,
        from_hour: i64,
        to_hour: i64,
    ) -> StoreResult<Vec<UsageHour>> {
        let rows = sqlx::query_as::<_, UsageRow>(
            "SELECT * FROM key_usage_hourly
             WHERE workspace_id = $1 AND ($2::text IS NULL OR key_id = $2) AND hour BETWEEN $3 AND $4
             ORDER BY hour, key_id",
        )
        .bind(workspace_id)
        .bind(key_id)
        .bind(from_hour)
        .bind(to_hour)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(UsageHour::from).collect())
    }

    async fn prune_usage(&self, before_hour: i64) -> StoreResult<u64> {
        let hours = sqlx::query("DELETE FROM key_usage_hourly WHERE hour < $1")
            .bind(before_hour)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let cutoff = before_hour.saturating_mul(3_600_000);
        let addresses = sqlx::query("DELETE FROM key_addresses WHERE last_seen_at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?
            .rows_affected();
        // Keys that stopped working before the cutoff leave the lists.
        let keys = sqlx::query(
            "DELETE FROM api_keys WHERE revoked_at < $1 OR (expires_at IS NOT NULL AND expires_at < $1)",
        )
        .bind(cutoff)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(hours + addresses + keys)
    }

    /// Most recently seen first; among equal sightings, the later inserted first.
    async fn key_addresses(
        &self,
        key_id: &KeyId,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(Vec<KeyAddress>, u64)> {
        let rows = sqlx::query_as::<_, AddressRow>(
            "SELECT addr, first_seen_at, last_seen_at FROM key_addresses WHERE key_id = $1
             ORDER BY last_seen_at DESC, seq DESC LIMIT $2 OFFSET $3",
        )
        .bind(key_id)
        .bind(to_i64(limit))
        .bind(to_i64(offset))
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM key_addresses WHERE key_id = $1")
            .bind(key_id)
            .fetch_one(&self.pool)
            .await?;
        let addresses = rows
            .into_iter()
            .map(KeyAddress::try_from)
            .collect::<StoreResult<_>>()?;
        Ok((addresses, u64::try_from(total).unwrap_or(0)))
    }
}
