//! [`RunStore`] on SQLite. Every write takes the write lock at once
//! (`BEGIN IMMEDIATE`), so a claim, a stop and a finish run one after
//! another: each run is claimed once, and of a stop and a finish racing,
//! the first wins and the other changes nothing.

use super::rows::{NodeIoRow, OrderedRunRow, RunEventRow, RunRow, RUN_COLUMNS};
use super::*;
use crate::store::runs::{
    event_data, fts5_query, outcome_columns, outcome_event, requeued_event, step_events, unique_ids,
};
use crate::store::RunStep;

/// Bumps a run's event counter and writes the event with the new number;
/// `None` if the run does not exist.
async fn append_event(
    tx: &mut Transaction<'_, Sqlite>,
    run_id: &RunId,
    kind: &str,
    data: Value,
) -> StoreResult<Option<i64>> {
    let row: Option<(i64, String)> = sqlx::query_as(
        "UPDATE runs SET last_event_seq = last_event_seq + 1 WHERE id = ?
         RETURNING last_event_seq, status",
    )
    .bind(run_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((seq, status)) = row else {
        return Ok(None);
    };
    let status = RunStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("run status {status:?}")))?;
    insert_event(tx, run_id, seq, kind, &event_data(status, data)).await?;
    Ok(Some(seq))
}

/// Sets what an ended run holds, in bytes: its definition, input, output,
/// error and every node's recorded input and output.
async fn settle_stored_bytes(tx: &mut Transaction<'_, Sqlite>, run_id: &RunId) -> StoreResult<()> {
    sqlx::query(
        "UPDATE runs SET stored_bytes =
             length(CAST(definition AS BLOB)) + length(CAST(input AS BLOB))
             + COALESCE(length(CAST(output AS BLOB)), 0) + COALESCE(length(CAST(error AS BLOB)), 0)
             + COALESCE((SELECT SUM(length(CAST(io.input AS BLOB)) + length(CAST(io.output AS BLOB)))
                         FROM run_node_io io WHERE io.run_id = runs.id), 0)
         WHERE id = ?",
    )
    .bind(run_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes an event whose number the caller took from `last_event_seq`.
async fn insert_event(
    tx: &mut Transaction<'_, Sqlite>,
    run_id: &RunId,
    seq: i64,
    kind: &str,
    data: &str,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO run_events (run_id, seq, kind, data, created_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(run_id)
    .bind(seq)
    .bind(kind)
    .bind(data)
    .bind(to_ms(now()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes events (run, `seq`, kind, data), numbered by the caller, in one
/// statement: a round trip per event was most of what a run cost.
async fn insert_events(
    tx: &mut Transaction<'_, Sqlite>,
    events: &[(&RunId, i64, &str, &str)],
) -> StoreResult<()> {
    let at = to_ms(now());
    // Well under the bound parameters a statement may have (5 per event).
    for part in events.chunks(1000) {
        let mut insert = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO run_events (run_id, seq, kind, data, created_at) ",
        );
        insert.push_values(part, |mut row, (run_id, seq, kind, data)| {
            row.push_bind(*run_id)
                .push_bind(*seq)
                .push_bind(*kind)
                .push_bind(*data)
                .push_bind(at);
        });
        insert.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Records (or replaces) what nodes of a run received and produced, in one
/// statement (a node appears once: the last of its entries).
async fn upsert_nodes_io(
    tx: &mut Transaction<'_, Sqlite>,
    run_id: &RunId,
    nodes: &[(&str, &Value, &Value)],
) -> StoreResult<()> {
    let mut seen = std::collections::HashSet::new();
    let mut rows: Vec<(&str, String, String)> = nodes
        .iter()
        .rev()
        .filter(|(node_id, _, _)| seen.insert(*node_id))
        .map(|(node_id, input, output)| (*node_id, input.to_string(), output.to_string()))
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    rows.reverse();
    let at = to_ms(now());
    for part in rows.chunks(1000) {
        let mut upsert = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO run_node_io (run_id, node_id, iteration, input, output, created_at) ",
        );
        upsert.push_values(part, |mut row, (node_id, input, output)| {
            row.push_bind(run_id)
                .push_bind(*node_id)
                .push_bind(0_i64)
                .push_bind(input.as_str())
                .push_bind(output.as_str())
                .push_bind(at);
        });
        upsert.push(
            " ON CONFLICT (run_id, node_id, iteration) DO UPDATE SET
                 input = excluded.input, output = excluded.output,
                 created_at = excluded.created_at",
        );
        upsert
            .build()
            .execute(&mut **tx)
            .await
            .map_err(on_missing_run)?;
    }
    Ok(())
}

/// Records (or replaces) what a node of a run received and produced.
async fn upsert_node_io<'e, E>(
    executor: E,
    run_id: &RunId,
    node_id: &str,
    input: &Value,
    output: &Value,
) -> StoreResult<()>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    sqlx::query(
        "INSERT INTO run_node_io (run_id, node_id, iteration, input, output, created_at)
         VALUES (?, ?, 0, ?, ?, ?)
         ON CONFLICT (run_id, node_id, iteration) DO UPDATE SET
             input = excluded.input, output = excluded.output, created_at = excluded.created_at",
    )
    .bind(run_id)
    .bind(node_id)
    .bind(input.to_string())
    .bind(output.to_string())
    .bind(to_ms(now()))
    .execute(executor)
    .await
    .map_err(on_missing_run)?;
    Ok(())
}

/// Queues again the running runs `worker` gives back (`released`, the
/// claim not counted) or, with `None`, every running run (`interrupted`,
/// the claim counted), each with a `requeued` event.
async fn requeue(
    tx: &mut Transaction<'_, Sqlite>,
    worker: Option<&str>,
) -> StoreResult<Vec<RunId>> {
    let (reason, uncount) = match worker {
        Some(_) => ("released", 1),
        None => ("interrupted", 0),
    };
    let rows: Vec<(RunId, i64)> = sqlx::query_as(
        "UPDATE runs SET status = 'queued', claimed_by = NULL, lease_until = NULL,
             attempts = MAX(attempts - ?1, 0), progress = 0, progress_details = NULL,
             last_event_seq = last_event_seq + 1
         WHERE status = 'running' AND (?2 IS NULL OR claimed_by = ?2)
         RETURNING id, last_event_seq",
    )
    .bind(uncount)
    .bind(worker)
    .fetch_all(&mut **tx)
    .await?;
    let data = requeued_event(reason);
    let events: Vec<(&RunId, i64, &str, &str)> = rows
        .iter()
        .map(|(id, seq)| (id, *seq, event_kinds::REQUEUED, data.as_str()))
        .collect();
    insert_events(tx, &events).await?;
    Ok(rows.into_iter().map(|(id, _)| id).collect())
}

#[async_trait]
impl RunStore for SqliteStore {
    async fn create_run(
        &self,
        actor: &Actor,
        run: &NewRun,
        quotas: &RunQuotas,
    ) -> StoreResult<RunRecord> {
        let id = RunId::new();
        let at = now();
        let mut tx = self.begin_write().await?;
        let org: OrganizationId = sqlx::query_scalar(
            "SELECT w.organization_id FROM workflows f JOIN workspaces w ON w.id = f.workspace_id
             WHERE f.workspace_id = ? AND f.id = ?",
        )
        .bind(&run.workspace_id)
        .bind(&run.workflow_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let active: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE workspace_id = ? AND status IN ('queued', 'running')",
        )
        .bind(&run.workspace_id)
        .fetch_one(&mut *tx)
        .await?;
        if u64::try_from(active).unwrap_or(0) >= quotas.active_runs_per_workspace {
            return Err(StoreError::QuotaExceeded {
                quota: Quota::ActiveRunsPerWorkspace,
                limit: quotas.active_runs_per_workspace,
            });
        }
        let definition = run.definition.to_string();
        let input = run.input.to_string();
        let new_bytes = u64::try_from(definition.len() + input.len()).unwrap_or(u64::MAX);
        let stored: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(stored_bytes), 0) FROM runs WHERE workspace_id = ?",
        )
        .bind(&run.workspace_id)
        .fetch_one(&mut *tx)
        .await?;
        if u64::try_from(stored).unwrap_or(0).saturating_add(new_bytes)
            > quotas.run_bytes_per_workspace
        {
            return Err(StoreError::QuotaExceeded {
                quota: Quota::RunBytesPerWorkspace,
                limit: quotas.run_bytes_per_workspace,
            });
        }
        if run.callback_url.is_some() {
            super::callbacks::check_waiting_callbacks(&mut tx, &run.workspace_id, quotas).await?;
        }
        let record: RunRecord = sqlx::query_as::<_, RunRow>(&format!(
            "INSERT INTO runs (id, group_id, organization_id, workspace_id, workflow_id,
                 workflow_version_id, definition, input, status, callback_url, started_by_user,
                 started_by_key, created_at, last_event_seq, stored_bytes)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, 1, ?)
             RETURNING {RUN_COLUMNS}"
        ))
        .bind(&id)
        .bind(run.group_id.as_deref().unwrap_or(id.as_str()))
        .bind(&org)
        .bind(&run.workspace_id)
        .bind(&run.workflow_id)
        .bind(&run.workflow_version_id)
        .bind(&definition)
        .bind(&input)
        .bind(&run.callback_url)
        .bind(&run.started_by_user)
        .bind(&run.started_by_key)
        .bind(to_ms(at))
        .bind(i64::try_from(new_bytes).unwrap_or(i64::MAX))
        .fetch_one(&mut *tx)
        .await?
        .try_into()?;
        insert_event(
            &mut tx,
            &id,
            1,
            event_kinds::QUEUED,
            &event_data(RunStatus::Queued, Value::Null),
        )
        .await?;
        audit(
            &mut tx,
            actor,
            &org,
            Some(&run.workspace_id),
            "run.start",
            ("run", &id),
            json!({"workflow_id": run.workflow_id, "workflow_version_id": run.workflow_version_id}),
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn run(&self, workspace_id: &WorkspaceId, id: &RunId) -> StoreResult<Option<RunRecord>> {
        sqlx::query_as::<_, RunRow>(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE workspace_id = ? AND id = ?"
        ))
        .bind(workspace_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(RunRecord::try_from)
        .transpose()
    }

    async fn list_runs(
        &self,
        workspace_id: &WorkspaceId,
        workflow_id: &WorkflowId,
        offset: u64,
        limit: u64,
    ) -> StoreResult<Vec<RunRecord>> {
        // Newest first: rowid order, read backwards from runs_workflow_idx.
        let rows = sqlx::query_as::<_, RunRow>(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE workflow_id = ? AND workspace_id = ?
             ORDER BY rowid DESC LIMIT ? OFFSET ?"
        ))
        .bind(workflow_id)
        .bind(workspace_id)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows::records(rows)
    }

    async fn ended_runs(
        &self,
        workspace_id: &WorkspaceId,
        workflow_id: &WorkflowId,
        created_before: Option<OffsetDateTime>,
        limit: u64,
    ) -> StoreResult<Vec<RunRecord>> {
        let rows = sqlx::query_as::<_, RunRow>(&format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE workflow_id = ? AND workspace_id = ?
               AND status IN ('completed', 'failed', 'stopped') AND created_at < ?
             ORDER BY created_at, id LIMIT ?"
        ))
        .bind(workflow_id)
        .bind(workspace_id)
        .bind(created_before.map_or(i64::MAX, to_ms))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows::records(rows)
    }

    async fn claim_runs(
        &self,
        worker: &str,
        limit: u32,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> StoreResult<Vec<RunRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        // `status IN (...)` spelled as in runs_claim_idx, so that SQLite
        // reads the candidates from that partial index.
        let mut rows = sqlx::query_as::<_, OrderedRunRow>(&format!(
            "UPDATE runs SET status = 'running', claimed_by = ?1, lease_until = ?2,
                 attempts = attempts + 1, started_at = COALESCE(started_at, ?3),
                 last_event_seq = last_event_seq + 1
             WHERE rowid IN (
                 SELECT rowid FROM runs
                 WHERE status IN ('queued', 'running') AND (status = 'queued' OR lease_until < ?3)
                 ORDER BY rowid LIMIT ?4)
             RETURNING rowid AS claim_order, {RUN_COLUMNS}"
        ))
        .bind(worker)
        .bind(to_ms(lease_until))
        .bind(to_ms(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        rows.sort_by_key(|row| row.claim_order);
        let claimed = rows
            .into_iter()
            .map(|row| RunRecord::try_from(row.run))
            .collect::<StoreResult<Vec<_>>>()?;
        let data: Vec<String> = claimed
            .iter()
            .map(|run| event_data(RunStatus::Running, json!({"attempt": run.attempts})))
            .collect();
        let events: Vec<(&RunId, i64, &str, &str)> = claimed
            .iter()
            .zip(&data)
            .map(|(run, data)| {
                (
                    &run.id,
                    run.last_event_seq,
                    event_kinds::STARTED,
                    data.as_str(),
                )
            })
            .collect();
        insert_events(&mut tx, &events).await?;
        let changed: Vec<StoreEvent> = claimed
            .iter()
            .map(|run| StoreEvent::RunChanged(run.id.clone()))
            .collect();
        self.commit(tx, changed).await?;
        Ok(claimed)
    }

    async fn renew_run_lease(
        &self,
        run_id: &RunId,
        worker: &str,
        lease_until: OffsetDateTime,
    ) -> StoreResult<bool> {
        let renewed = sqlx::query(
            "UPDATE runs SET lease_until = ?
             WHERE id = ? AND status = 'running' AND claimed_by = ?",
        )
        .bind(to_ms(lease_until))
        .bind(run_id)
        .bind(worker)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(renewed == 1)
    }

    async fn record_node_io(
        &self,
        run_id: &RunId,
        node_id: &str,
        input: &Value,
        output: &Value,
    ) -> StoreResult<()> {
        upsert_node_io(&self.pool, run_id, node_id, input, output).await
    }

    async fn node_io(
        &self,
        workspace_id: &WorkspaceId,
        run_id: &RunId,
        node_id: &str,
    ) -> StoreResult<Option<(Value, Value)>> {
        sqlx::query_as::<_, NodeIoRow>(
            "SELECT io.input, io.output FROM run_node_io io JOIN runs r ON r.id = io.run_id
             WHERE r.workspace_id = ? AND io.run_id = ? AND io.node_id = ? AND io.iteration = 0",
        )
        .bind(workspace_id)
        .bind(run_id)
        .bind(node_id)
        .fetch_optional(&self.pool)
        .await?
        .map(<(Value, Value)>::try_from)
        .transpose()
    }

    async fn update_run_progress(
        &self,
        run_id: &RunId,
        worker: &str,
        progress: i64,
        progress_details: Option<&Value>,
    ) -> StoreResult<bool> {
        let progress = progress.clamp(0, 100);
        let mut tx = self.begin_write().await?;
        let seq: Option<i64> = sqlx::query_scalar(
            "UPDATE runs SET progress = ?, progress_details = ?, last_event_seq = last_event_seq + 1
             WHERE id = ? AND status = 'running' AND claimed_by = ?
             RETURNING last_event_seq",
        )
        .bind(progress)
        .bind(progress_details.map(Value::to_string))
        .bind(run_id)
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(seq) = seq else {
            return Ok(false);
        };
        insert_event(
            &mut tx,
            run_id,
            seq,
            event_kinds::PROGRESS,
            &event_data(
                RunStatus::Running,
                json!({"progress": progress, "progress_details": progress_details}),
            ),
        )
        .await?;
        self.commit(tx, [StoreEvent::RunChanged(run_id.clone())])
            .await?;
        Ok(true)
    }

    async fn finish_run(
        &self,
        run_id: &RunId,
        worker: &str,
        outcome: &RunOutcome,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let status = outcome.status();
        let (output, error) = outcome_columns(outcome);
        let mut tx = self.begin_write().await?;
        let seq: Option<i64> = sqlx::query_scalar(
            "UPDATE runs SET status = ?1, output = ?2, error = ?3, finished_at = ?4,
                 progress = CASE WHEN ?1 = 'completed' THEN 100 ELSE progress END,
                 lease_until = NULL, last_event_seq = last_event_seq + 1
             WHERE id = ?5 AND status = 'running' AND claimed_by = ?6
             RETURNING last_event_seq",
        )
        .bind(status.as_str())
        .bind(output)
        .bind(error)
        .bind(to_ms(now))
        .bind(run_id)
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(seq) = seq else {
            return Ok(false);
        };
        let (kind, data) = outcome_event(outcome);
        insert_event(&mut tx, run_id, seq, kind, &data).await?;
        settle_stored_bytes(&mut tx, run_id).await?;
        super::callbacks::queue_callback(&mut tx, run_id, status, now).await?;
        self.commit(tx, [StoreEvent::RunChanged(run_id.clone())])
            .await?;
        Ok(true)
    }

    async fn record_run_steps(
        &self,
        run_id: &RunId,
        worker: &str,
        steps: &[RunStep<'_>],
        end: Option<&RunOutcome>,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let (events, progress) = step_events(steps, end);
        let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
        let has_progress = progress.is_some();
        let (percent, details) = progress.unwrap_or((0, None));
        let mut tx = self.begin_write().await?;
        // The guard and the event numbers at once: the run must still be
        // this worker's.
        let last: Option<i64> = sqlx::query_scalar(
            "UPDATE runs SET last_event_seq = last_event_seq + ?1,
                 progress = CASE WHEN ?2 THEN ?3 ELSE progress END,
                 progress_details = CASE WHEN ?2 THEN ?4 ELSE progress_details END
             WHERE id = ?5 AND status = 'running' AND claimed_by = ?6
             RETURNING last_event_seq",
        )
        .bind(count)
        .bind(has_progress)
        .bind(percent)
        .bind(details)
        .bind(run_id)
        .bind(worker)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(last) = last else {
            return Ok(false);
        };
        let nodes: Vec<(&str, &Value, &Value)> = steps
            .iter()
            .filter_map(|step| match step {
                RunStep::NodeFinished {
                    node_id,
                    input,
                    output,
                    ..
                } => Some((*node_id, *input, *output)),
                RunStep::NodeStarted { .. } => None,
            })
            .collect();
        upsert_nodes_io(&mut tx, run_id, &nodes).await?;
        let rows: Vec<(&RunId, i64, &str, &str)> = (last - count + 1..)
            .zip(&events)
            .map(|(seq, (kind, data))| (run_id, seq, *kind, data.as_str()))
            .collect();
        insert_events(&mut tx, &rows).await?;
        if let Some(outcome) = end {
            let (output, error) = outcome_columns(outcome);
            sqlx::query(
                "UPDATE runs SET status = ?1, output = ?2, error = ?3, finished_at = ?4,
                     progress = CASE WHEN ?1 = 'completed' THEN 100 ELSE progress END,
                     lease_until = NULL
                 WHERE id = ?5",
            )
            .bind(outcome.status().as_str())
            .bind(output)
            .bind(error)
            .bind(to_ms(now))
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
            settle_stored_bytes(&mut tx, run_id).await?;
            super::callbacks::queue_callback(&mut tx, run_id, outcome.status(), now).await?;
        }
        self.commit(tx, [StoreEvent::RunChanged(run_id.clone())])
            .await?;
        Ok(true)
    }

    async fn renew_run_leases(
        &self,
        worker: &str,
        lease_until: OffsetDateTime,
    ) -> StoreResult<Vec<RunId>> {
        Ok(sqlx::query_scalar(
            "UPDATE runs SET lease_until = ?
             WHERE status = 'running' AND claimed_by = ?
             RETURNING id",
        )
        .bind(to_ms(lease_until))
        .bind(worker)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn release_runs(&self, worker: &str) -> StoreResult<Vec<RunId>> {
        let mut tx = self.begin_write().await?;
        let ids = requeue(&mut tx, Some(worker)).await?;
        let changed: Vec<StoreEvent> = ids.iter().cloned().map(StoreEvent::RunChanged).collect();
        self.commit(tx, changed).await?;
        Ok(ids)
    }

    async fn requeue_running_runs(&self) -> StoreResult<Vec<RunId>> {
        let mut tx = self.begin_write().await?;
        let ids = requeue(&mut tx, None).await?;
        let changed: Vec<StoreEvent> = ids.iter().cloned().map(StoreEvent::RunChanged).collect();
        self.commit(tx, changed).await?;
        Ok(ids)
    }

    async fn stop_run(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        id: &RunId,
        now: OffsetDateTime,
    ) -> StoreResult<Option<RunRecord>> {
        let mut tx = self.begin_write().await?;
        let stopped = sqlx::query_as::<_, RunRow>(&format!(
            "UPDATE runs SET status = 'stopped', finished_at = ?, lease_until = NULL,
                 last_event_seq = last_event_seq + 1
             WHERE workspace_id = ? AND id = ? AND status IN ('queued', 'running')
             RETURNING {RUN_COLUMNS}"
        ))
        .bind(to_ms(now))
        .bind(workspace_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(stopped) = stopped else {
            // Ended already (or not there): returned as it is.
            drop(tx);
            return self.run(workspace_id, id).await;
        };
        let run = RunRecord::try_from(stopped)?;
        insert_event(
            &mut tx,
            id,
            run.last_event_seq,
            event_kinds::STOPPED,
            &event_data(RunStatus::Stopped, Value::Null),
        )
        .await?;
        settle_stored_bytes(&mut tx, id).await?;
        super::callbacks::queue_callback(&mut tx, id, RunStatus::Stopped, now).await?;
        audit(
            &mut tx,
            actor,
            &run.organization_id,
            Some(workspace_id),
            "run.stop",
            ("run", id),
            json!({"workflow_id": run.workflow_id}),
        )
        .await?;
        self.commit(tx, [StoreEvent::RunChanged(id.clone())])
            .await?;
        Ok(Some(run))
    }

    async fn delete_runs(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        ids: &[RunId],
    ) -> StoreResult<(Vec<RunId>, Vec<RunId>)> {
        let mut deleted = Vec::new();
        let mut not_found = Vec::new();
        let mut tx = self.begin_write().await?;
        for id in unique_ids(ids) {
            // The run's node input/output and events go with it (cascade),
            // and its search row (trigger).
            let gone: Option<(OrganizationId, WorkflowId)> = sqlx::query_as(
                "DELETE FROM runs WHERE workspace_id = ? AND id = ?
                 RETURNING organization_id, workflow_id",
            )
            .bind(workspace_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            match gone {
                Some((org, workflow_id)) => {
                    audit(
                        &mut tx,
                        actor,
                        &org,
                        Some(workspace_id),
                        "run.delete",
                        ("run", id),
                        json!({"workflow_id": workflow_id}),
                    )
                    .await?;
                    deleted.push(id.clone());
                }
                None => not_found.push(id.clone()),
            }
        }
        tx.commit().await?;
        Ok((deleted, not_found))
    }

    async fn append_run_event(&self, run_id: &RunId, kind: &str, data: &Value) -> StoreResult<i64> {
        let mut tx = self.begin_write().await?;
        let seq = append_event(&mut tx, run_id, kind, data.clone())
            .await?
            .ok_or(StoreError::NotFound)?;
        self.commit(tx, [StoreEvent::RunChanged(run_id.clone())])
            .await?;
        Ok(seq)
    }

    async fn run_events_after(
        &self,
        workspace_id: &WorkspaceId,
        run_id: &RunId,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<RunEvent>> {
        let rows = sqlx::query_as::<_, RunEventRow>(
            "SELECT e.run_id, e.seq, e.kind, e.data, e.created_at
             FROM run_events e JOIN runs r ON r.id = e.run_id
             WHERE r.workspace_id = ? AND e.run_id = ? AND e.seq > ?
             ORDER BY e.seq LIMIT ?",
        )
        .bind(workspace_id)
        .bind(run_id)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows::records(rows)
    }

    async fn search_runs(
        &self,
        workspace_id: &WorkspaceId,
        query: &str,
        limit: u32,
    ) -> StoreResult<Vec<RunRecord>> {
        let Some(query) = fts5_query(query) else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query_as::<_, RunRow>(&format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE workspace_id = ?
               AND rowid IN (SELECT rowid FROM run_search WHERE run_search MATCH ?)
             ORDER BY rowid DESC LIMIT ?"
        ))
        .bind(workspace_id)
        .bind(query)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows::records(rows)
    }

    async fn run_storage_bytes(&self, workspace_id: &WorkspaceId) -> StoreResult<u64> {
        let bytes: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(stored_bytes), 0) FROM runs WHERE workspace_id = ?",
        )
        .bind(workspace_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    async fn purge_ended_runs(&self, ended_before: OffsetDateTime, limit: u32) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        // Events, node input/output and the search row go with the run
        // (ON DELETE CASCADE, the search trigger).
        let purged = sqlx::query(
            "DELETE FROM runs WHERE id IN (
                 SELECT id FROM runs
                 WHERE finished_at IS NOT NULL AND finished_at < ?
                   AND status IN ('completed', 'failed', 'stopped')
                 ORDER BY finished_at LIMIT ?)",
        )
        .bind(to_ms(ended_before))
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(purged)
    }
}
