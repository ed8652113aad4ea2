//! The replicas' shared rate-limit counters (`rate_counters`, an unlogged
//! table: a crash of the database forgets the last seconds of spending,
//! nothing else).

use std::collections::HashMap;

use super::*;

#[async_trait]
impl RateCounterStore for PostgresStore {
    async fn add_to_rate_counters(
        &self,
        window: i64,
        batch: &[(String, i64)],
    ) -> StoreResult<Vec<(i64, i64)>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // In scope order, so that two replicas adding to the same counters
        // lock their rows in the same order (and never deadlock).
        let mut sorted: Vec<(&str, i64)> = batch.iter().map(|(s, d)| (s.as_str(), *d)).collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        sorted.dedup_by(|later, first| {
            if later.0 == first.0 {
                first.1 += later.1;
                true
            } else {
                false
            }
        });
        let scopes: Vec<&str> = sorted.iter().map(|(s, _)| *s).collect();
        let deltas: Vec<i64> = sorted.iter().map(|(_, d)| *d).collect();
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "WITH added AS (
                 INSERT INTO rate_counters (scope, win, total)
                 SELECT scope, $3, delta FROM UNNEST($1::text[], $2::bigint[]) AS b(scope, delta)
                 ORDER BY scope
                 ON CONFLICT (scope, win) DO UPDATE SET total = rate_counters.total + EXCLUDED.total
                 RETURNING scope, total
             )
             SELECT added.scope, added.total, COALESCE(previous.total, 0)
             FROM added
             LEFT JOIN rate_counters previous ON previous.scope = added.scope AND previous.win = $3 - 1",
        )
        .bind(&scopes)
        .bind(&deltas)
        .bind(window)
        .fetch_all(&self.pool)
        .await?;
        let totals: HashMap<String, (i64, i64)> = rows
            .into_iter()
            .map(|(scope, current, previous)| (scope, (current, previous)))
            .collect();
        batch
            .iter()
            .map(|(scope, _)| {
                totals
                    .get(scope)
                    .copied()
                    .ok_or_else(|| StoreError::Corrupt(format!("no counter came back for {scope}")))
            })
            .collect()
    }

    async fn prune_rate_counters(&self, window: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM rate_counters WHERE win < $1")
            .bind(window)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
