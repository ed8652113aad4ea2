//! [`CallbackStore`] on PostgreSQL. Senders claim deliveries with `FOR
//! UPDATE SKIP LOCKED`, so that concurrent senders (in any number of
//! processes) each take different deliveries without waiting for one
//! another; an attempt is recorded by one conditional `UPDATE`, only by
//! the sender that still holds the delivery.

use super::rows::{CallbackRow, CALLBACK_COLUMNS};
use super::*;

/// Queues the callback of a run that just ended with `status`, if it has a
/// `callback_url` (once: a run has one delivery). Called inside the
/// transaction that ends the run, so that an ended run and its delivery
/// are committed together.
pub(super) async fn queue_callback(
    tx: &mut Tx,
    run_id: &RunId,
    status: RunStatus,
    at: OffsetDateTime,
) -> StoreResult<()> {
    let Some(event) = callback_event(status) else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO callback_deliveries (id, kind, run_id, workspace_id, url, event, status,
             attempts, next_attempt_at, created_at)
         SELECT $1, 'run', id, workspace_id, callback_url, $2, 'pending', 0, $3, $4
         FROM runs WHERE id = $5 AND callback_url IS NOT NULL
         ON CONFLICT (run_id) DO NOTHING",
    )
    .bind(CallbackId::new())
    .bind(event)
    .bind(to_ms(at))
    .bind(to_ms(at))
    .bind(run_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Refuses a run with a `callback_url` in a workspace that already has
/// `quotas.waiting_callbacks_per_workspace` callbacks waiting: pending
/// deliveries, and runs under way that will send one. Inside the
/// transaction that creates the run.
pub(super) async fn check_waiting_callbacks(
    tx: &mut Tx,
    workspace_id: &WorkspaceId,
    quotas: &RunQuotas,
) -> StoreResult<()> {
    let waiting: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM callback_deliveries
                   WHERE workspace_id = $1 AND kind = 'run' AND status = 'pending')
              + (SELECT COUNT(*) FROM runs WHERE workspace_id = $1
                   AND status IN ('queued', 'running') AND callback_url IS NOT NULL)",
    )
    .bind(workspace_id)
    .fetch_one(&mut **tx)
    .await?;
    let limit = quotas.waiting_callbacks_per_workspace;
    if u64::try_from(waiting).unwrap_or(0) >= limit {
        return Err(StoreError::QuotaExceeded {
            quota: Quota::WaitingCallbacksPerWorkspace,
            limit,
        });
    }
    Ok(())
}

async fn generation_in(
    tx: &mut Tx,
    workspace_id: &WorkspaceId,
) -> StoreResult<CallbackSecretGeneration> {
    let row: Option<(i64, Option<i64>)> = sqlx::query_as(
        "SELECT generation, previous_valid_until FROM workspace_callback_secrets
         WHERE workspace_id = $1",
    )
    .bind(workspace_id)
    .fetch_optional(&mut **tx)
    .await?;
    generation_of(row)
}

fn generation_of(row: Option<(i64, Option<i64>)>) -> StoreResult<CallbackSecretGeneration> {
    Ok(match row {
        None => CallbackSecretGeneration::default(),
        Some((generation, until)) => CallbackSecretGeneration {
            generation,
            previous_valid_until: opt_from_ms(until)?,
        },
    })
}

/// The workspace's organization, if it is `organization_id`.
async fn workspace_in(
    tx: &mut Tx,
    organization_id: &OrganizationId,
    workspace_id: &WorkspaceId,
) -> StoreResult<()> {
    let org = org_of_workspace(tx, workspace_id).await?;
    if &org != organization_id {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

#[async_trait]
impl CallbackStore for PostgresStore {
    async fn claim_callbacks(
        &self,
        sender: &str,
        limit: u32,
        per_workspace: u32,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> StoreResult<Vec<CallbackDelivery>> {
        if limit == 0 || per_workspace == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE callback_deliveries SET status = 'failed', last_error = $1, lease_until = NULL,
                 claimed_by = NULL
             WHERE status = 'pending' AND attempts >= $2 AND lease_until < $3",
        )
        .bind(INTERRUPTED_LAST_ATTEMPT)
        .bind(MAX_CALLBACK_ATTEMPTS)
        .bind(to_ms(now))
        .execute(&mut *tx)
        .await?;
        // Each due delivery is numbered within its workspace (soonest
        // first) after the workspace's deliveries being sent now; those
        // numbered past `per_workspace` wait for a later claim. Rows another
        // sender has locked are skipped, not waited for; a row that changed
        // between the snapshot and its lock is rechecked against the
        // conditions on `r` (READ COMMITTED), so a delivery just claimed
        // elsewhere is not taken again. (Two replicas claiming at the same
        // moment may each count the other's claims late: a workspace then
        // gets at most `per_workspace` per replica.)
        let mut claimed = sqlx::query_as::<_, CallbackRow>(&format!(
            "WITH busy AS (
                 SELECT workspace_id, COUNT(*) AS n FROM callback_deliveries
                 WHERE status = 'pending' AND lease_until >= $3
                 GROUP BY workspace_id),
             due AS (
                 SELECT c.id, c.seq, c.next_attempt_at,
                     ROW_NUMBER() OVER (
                         PARTITION BY c.workspace_id ORDER BY c.next_attempt_at, c.seq)
                     + COALESCE(b.n, 0) AS place
                 FROM callback_deliveries c LEFT JOIN busy b ON b.workspace_id = c.workspace_id
                 WHERE c.status = 'pending' AND c.next_attempt_at <= $3 AND c.attempts < $5
                   AND (c.lease_until IS NULL OR c.lease_until < $3)),
             picked AS (
                 SELECT r.id FROM callback_deliveries r JOIN due ON due.id = r.id
                 WHERE due.place <= $6
                   AND r.status = 'pending' AND r.attempts < $5
                   AND (r.lease_until IS NULL OR r.lease_until < $3)
                 ORDER BY due.next_attempt_at, due.seq LIMIT $4
                 FOR UPDATE OF r SKIP LOCKED)
             UPDATE callback_deliveries SET claimed_by = $1, lease_until = $2,
                 attempts = callback_deliveries.attempts + 1, last_attempt_at = $3
             FROM picked WHERE callback_deliveries.id = picked.id
             RETURNING {}",
            qualified_callback_columns()
        ))
        .bind(sender)
        .bind(to_ms(lease_until))
        .bind(to_ms(now))
        .bind(i64::from(limit))
        .bind(MAX_CALLBACK_ATTEMPTS)
        .bind(i64::from(per_workspace))
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(CallbackDelivery::try_from)
        .collect::<StoreResult<Vec<_>>>()?;
        tx.commit().await?;
        // RETURNING gives no order: soonest due first, as claimed.
        claimed.sort_by_key(|d| d.next_attempt_at);
        Ok(claimed)
    }

    async fn record_callback_attempt(
        &self,
        id: &CallbackId,
        sender: &str,
        attempt: &CallbackAttempt,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let (status, code, error, next, delivered) = match attempt {
            CallbackAttempt::Delivered { status_code } => (
                CallbackStatus::Delivered,
                Some(i64::from(*status_code)),
                None,
                None,
                Some(to_ms(now)),
            ),
            CallbackAttempt::Retry {
                error,
                status_code,
                next_attempt_at,
            } => (
                CallbackStatus::Pending,
                status_code.map(i64::from),
                Some(error.as_str()),
                Some(to_ms(*next_attempt_at)),
                None,
            ),
            CallbackAttempt::Failed { error, status_code } => (
                CallbackStatus::Failed,
                status_code.map(i64::from),
                Some(error.as_str()),
                None,
                None,
            ),
        };
        let updated = sqlx::query(
            "UPDATE callback_deliveries SET status = $1, last_status_code = $2, last_error = $3,
                 next_attempt_at = COALESCE($4, next_attempt_at), delivered_at = $5,
                 claimed_by = NULL, lease_until = NULL
             WHERE id = $6 AND status = 'pending' AND claimed_by = $7",
        )
        .bind(status.as_str())
        .bind(code)
        .bind(error)
        .bind(next)
        .bind(delivered)
        .bind(id)
        .bind(sender)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    async fn run_callback(
        &self,
        workspace_id: &WorkspaceId,
        run_id: &RunId,
    ) -> StoreResult<Option<CallbackDelivery>> {
        sqlx::query_as::<_, CallbackRow>(&format!(
            "SELECT {CALLBACK_COLUMNS} FROM callback_deliveries WHERE workspace_id = $1 AND run_id = $2"
        ))
        .bind(workspace_id)
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?
        .map(CallbackDelivery::try_from)
        .transpose()
    }

    async fn security_webhook(
        &self,
        workspace_id: &WorkspaceId,
    ) -> StoreResult<Option<SecurityWebhook>> {
        let row: Option<(String, i64, Option<UserId>)> = sqlx::query_as(
            "SELECT url, updated_at, updated_by FROM workspace_security_webhooks
             WHERE workspace_id = $1",
        )
        .bind(workspace_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(url, updated_at, updated_by)| {
            Ok(SecurityWebhook {
                workspace_id: workspace_id.clone(),
                url,
                updated_at: from_ms(updated_at)?,
                updated_by,
            })
        })
        .transpose()
    }

    async fn set_security_webhook(
        &self,
        actor: &Actor,
        organization_id: &OrganizationId,
        workspace_id: &WorkspaceId,
        url: &str,
    ) -> StoreResult<SecurityWebhook> {
        let at = now();
        let mut tx = self.begin().await?;
        workspace_in(&mut tx, organization_id, workspace_id).await?;
        let replaced: Option<String> = sqlx::query_scalar(
            "SELECT url FROM workspace_security_webhooks WHERE workspace_id = $1",
        )
        .bind(workspace_id)
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO workspace_security_webhooks (workspace_id, url, updated_at, updated_by)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (workspace_id) DO UPDATE SET url = $2, updated_at = $3,
                 updated_by = $4",
        )
        .bind(workspace_id)
        .bind(url)
        .bind(to_ms(at))
        .bind(actor.user_id.as_ref())
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            actor,
            organization_id,
            Some(workspace_id),
            "workspace.security_webhook.set",
            ("workspace", workspace_id),
            json!({
                "origin": super::super::callbacks::url_origin(url),
                "replaced": replaced.is_some(),
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(SecurityWebhook {
            workspace_id: workspace_id.clone(),
            url: url.to_owned(),
            // As stored (milliseconds), as a read answers it.
            updated_at: from_ms(to_ms(at))?,
            updated_by: actor.user_id.clone(),
        })
    }

    async fn remove_security_webhook(
        &self,
        actor: &Actor,
        organization_id: &OrganizationId,
        workspace_id: &WorkspaceId,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        workspace_in(&mut tx, organization_id, workspace_id).await?;
        let removed: Option<String> = sqlx::query_scalar(
            "DELETE FROM workspace_security_webhooks WHERE workspace_id = $1 RETURNING url",
        )
        .bind(workspace_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(url) = removed else {
            return Err(StoreError::NotFound);
        };
        audit(
            &mut tx,
            actor,
            organization_id,
            Some(workspace_id),
            "workspace.security_webhook.delete",
            ("workspace", workspace_id),
            json!({"origin": super::super::callbacks::url_origin(&url)}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn security_deliveries(
        &self,
        workspace_id: &WorkspaceId,
        limit: u32,
    ) -> StoreResult<Vec<CallbackDelivery>> {
        sqlx::query_as::<_, CallbackRow>(&format!(
            "SELECT {CALLBACK_COLUMNS} FROM callback_deliveries
             WHERE workspace_id = $1 AND kind = 'security'
             ORDER BY created_at DESC, id DESC LIMIT $2"
        ))
        .bind(workspace_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(CallbackDelivery::try_from)
        .collect()
    }

    async fn callback_secret_generation(
        &self,
        workspace_id: &WorkspaceId,
    ) -> StoreResult<CallbackSecretGeneration> {
        let row: Option<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT generation, previous_valid_until FROM workspace_callback_secrets
             WHERE workspace_id = $1",
        )
        .bind(workspace_id)
        .fetch_optional(&self.pool)
        .await?;
        generation_of(row)
    }

    async fn reveal_callback_secret(
        &self,
        actor: &Actor,
        organization_id: &OrganizationId,
        workspace_id: &WorkspaceId,
    ) -> StoreResult<CallbackSecretGeneration> {
        let mut tx = self.begin().await?;
        workspace_in(&mut tx, organization_id, workspace_id).await?;
        let current = generation_in(&mut tx, workspace_id).await?;
        audit(
            &mut tx,
            actor,
            organization_id,
            Some(workspace_id),
            "workspace.callback_secret.read",
            ("workspace", workspace_id),
            json!({"generation": current.generation}),
        )
        .await?;
        tx.commit().await?;
        Ok(current)
    }

    async fn rotate_callback_secret(
        &self,
        actor: &Actor,
        organization_id: &OrganizationId,
        workspace_id: &WorkspaceId,
        previous_valid_until: Option<OffsetDateTime>,
    ) -> StoreResult<CallbackSecretGeneration> {
        let at = now();
        let mut tx = self.begin().await?;
        workspace_in(&mut tx, organization_id, workspace_id).await?;
        let row: (i64, Option<i64>) = sqlx::query_as(
            "INSERT INTO workspace_callback_secrets
                 (workspace_id, generation, previous_valid_until, rotated_at)
             VALUES ($1, 2, $2, $3)
             ON CONFLICT (workspace_id) DO UPDATE SET
                 generation = workspace_callback_secrets.generation + 1,
                 previous_valid_until = $2, rotated_at = $3
             RETURNING generation, previous_valid_until",
        )
        .bind(workspace_id)
        .bind(previous_valid_until.map(to_ms))
        .bind(to_ms(at))
        .fetch_one(&mut *tx)
        .await?;
        let rotated = generation_of(Some(row))?;
        audit(
            &mut tx,
            actor,
            organization_id,
            Some(workspace_id),
            "workspace.callback_secret.rotate",
            ("workspace", workspace_id),
            json!({
                "generation": rotated.generation,
                "previous_valid_until": previous_valid_until.map(crate::time_fmt::rfc3339),
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(rotated)
    }
}

/// [`CALLBACK_COLUMNS`] of `callback_deliveries` (in an `UPDATE ... FROM`, where
/// `id` is ambiguous).
fn qualified_callback_columns() -> String {
    CALLBACK_COLUMNS
        .split(',')
        .map(|c| format!("callback_deliveries.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}
