//! [`KeyLeakStore`] on SQLite.

use super::super::leaks::{leak_audit_details, leaked_key_event, KeyLeakRow, LEAK_COLUMNS};
use super::rows::{records, KeyRow, KEY_COLUMNS};
use super::*;

#[async_trait]
impl KeyLeakStore for SqliteStore {
    async fn revoke_leaked_key(
        &self,
        actor: &Actor,
        digest: &KeyDigest,
        location: &LeakLocation,
    ) -> StoreResult<Option<KeyRecord>> {
        let mut tx = self.begin_write().await?;
        let found = sqlx::query_as::<_, KeyRow>(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.digest = ?"
        ))
        .bind(digest.as_hex())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(mut key) = found.map(KeyRecord::try_from).transpose()? else {
            return Ok(None);
        };
        let at = now();
        // The rule and the write in one statement: only a key that still
        // works (a rotated one in its grace period does) is revoked.
        let changed = sqlx::query(
            "UPDATE api_keys SET revoked_at = ?1, revoked_reason = 'leaked'
             WHERE id = ?2 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?1)",
        )
        .bind(to_ms(at))
        .bind(&key.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(None);
        }
        key.revoked_at = Some(at);
        key.revoked_reason = Some(RevokedReason::Leaked);
        sqlx::query(
            "INSERT INTO key_leaks (key_id, workspace_id, url, source, reported_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&key.id)
        .bind(&key.workspace_id)
        .bind(location.url.as_deref())
        .bind(location.source.as_deref())
        .bind(to_ms(at))
        .execute(&mut *tx)
        .await?;
        // The workspace's security webhook hears of it, if it has one: the
        // event is queued with the revocation, so neither goes without the
        // other.
        let event_id = CallbackId::new();
        sqlx::query(
            "INSERT INTO callback_deliveries (id, kind, key_id, workspace_id, url, event, payload,
                 status, attempts, next_attempt_at, created_at)
             SELECT ?1, 'security', ?2, workspace_id, url, ?3, ?4, 'pending', 0, ?5, ?5
             FROM workspace_security_webhooks WHERE workspace_id = ?6",
        )
        .bind(&event_id)
        .bind(&key.id)
        .bind(KEY_REPORTED_LEAKED_EVENT)
        .bind(leaked_key_event(&event_id, &key, location, at))
        .bind(to_ms(at))
        .bind(&key.workspace_id)
        .execute(&mut *tx)
        .await?;
        let org = org_of_workspace(&mut tx, &key.workspace_id).await?;
        audit(
            &mut tx,
            actor,
            &org,
            Some(&key.workspace_id),
            "api_key.revoke",
            ("api_key", &key.id),
            leak_audit_details(&key, location),
        )
        .await?;
        self.commit(tx, [StoreEvent::KeyChanged(key.id.clone())])
            .await?;
        Ok(Some(key))
    }

    async fn key_leaks(&self, query: &LeakQuery) -> StoreResult<Vec<KeyLeakRecord>> {
        let rows = sqlx::query_as::<_, KeyLeakRow>(&format!(
            "SELECT {LEAK_COLUMNS} FROM key_leaks
             WHERE workspace_id = ?1 AND reported_at >= ?2 AND (?3 OR dismissed_at IS NULL)
             ORDER BY reported_at DESC, key_id LIMIT ?4"
        ))
        .bind(&query.workspace_id)
        .bind(to_ms(query.since))
        .bind(query.include_dismissed)
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await?;
        records(rows)
    }

    async fn dismiss_key_leak(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        key_id: &KeyId,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let found: Option<(Option<i64>, String, String)> = sqlx::query_as(
            "SELECT l.dismissed_at, k.name, k.prefix FROM key_leaks l
             JOIN api_keys k ON k.id = l.key_id
             WHERE l.workspace_id = ? AND l.key_id = ?",
        )
        .bind(workspace_id)
        .bind(key_id)
        .fetch_optional(&mut *tx)
        .await?;
        let (name, prefix) = match found {
            None => return Err(StoreError::NotFound),
            Some((Some(_), _, _)) => return Ok(()),
            Some((None, name, prefix)) => (name, prefix),
        };
        sqlx::query(
            "UPDATE key_leaks SET dismissed_at = ?, dismissed_by = ?
             WHERE key_id = ? AND dismissed_at IS NULL",
        )
        .bind(to_ms(now()))
        .bind(actor.user_id.as_ref())
        .bind(key_id)
        .execute(&mut *tx)
        .await?;
        let org = org_of_workspace(&mut tx, workspace_id).await?;
        audit(
            &mut tx,
            actor,
            &org,
            Some(workspace_id),
            "api_key.leak_dismiss",
            ("api_key", key_id),
            json!({"name": name, "prefix": prefix}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
