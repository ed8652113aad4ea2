//! [`KeyStore`] on SQLite.

use super::rows::{page, records, KeyAuthRow, KeyRow, PageRow, KEY_COLUMNS};
use super::*;

pub(super) async fn insert_key(
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
    workspace_id: &WorkspaceId,
    id: &KeyId,
) -> StoreResult<KeyRecord> {
    sqlx::query_as::<_, KeyRow>(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.workspace_id = ? AND k.id = ?"
    ))
    .bind(workspace_id)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound)?
    .try_into()
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn key_for_auth(&self, digest: &KeyDigest) -> StoreResult<Option<KeyAuthRecord>> {
        sqlx::query_as::<_, KeyAuthRow>(&format!(
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
        .await?
        .map(KeyAuthRecord::try_from)
        .transpose()
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
        workspace_id: &WorkspaceId,
        user_id: Option<&UserId>,
    ) -> StoreResult<Vec<KeyRecord>> {
        let rows = sqlx::query_as::<_, KeyRow>(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k
             WHERE k.workspace_id = ? AND (? IS NULL OR k.user_id = ?)
             ORDER BY k.rowid DESC"
        ))
        .bind(workspace_id)
        .bind(user_id)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        records(rows)
    }

    async fn list_keys_page(
        &self,
        workspace_id: &WorkspaceId,
        user_id: Option<&UserId>,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(Vec<KeyRecord>, u64)> {
        let rows = sqlx::query_as::<_, PageRow<KeyRow>>(&format!(
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
        let (keys, total) = page(rows)?;
        let total: i64 = match total {
            Some(total) => total,
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
        Ok((keys, u64::try_from(total).unwrap_or(0)))
    }

    async fn replace_key_digest(
        &self,
        key_id: &KeyId,
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

    async fn key(&self, workspace_id: &WorkspaceId, id: &KeyId) -> StoreResult<Option<KeyRecord>> {
        sqlx::query_as::<_, KeyRow>(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.workspace_id = ? AND k.id = ?"
        ))
        .bind(workspace_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(KeyRecord::try_from)
        .transpose()
    }

    async fn revoke_key(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        id: &KeyId,
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
        workspace_id: &WorkspaceId,
        id: &KeyId,
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
