//! [`WorkflowStore`] on PostgreSQL. Quotas are checked with the
//! workspace's row locked (see [`lock_workspace`]), so that concurrent
//! writes cannot overshoot them together.

use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row};

use super::rows::{VersionRow, WorkflowRow};
use super::*;

/// A page of a workspace's workflows of one type, oldest (`seq`) first,
/// with the total (counted once, as an uncorrelated subquery).
const PAGE_OF_KIND: &str = "SELECT *,
        (SELECT COUNT(*) FROM workflows WHERE workspace_id = $1 AND kind = $2) AS total
    FROM workflows WHERE workspace_id = $1 AND kind = $2
    ORDER BY seq LIMIT $3 OFFSET $4";

/// [`PAGE_OF_KIND`] for workflows of every type.
const PAGE_OF_ALL: &str = "SELECT *,
        (SELECT COUNT(*) FROM workflows WHERE workspace_id = $1) AS total
    FROM workflows WHERE workspace_id = $1
    ORDER BY seq LIMIT $2 OFFSET $3";

/// A page of a workflow's versions in saving (`seq`) order, with the total.
const VERSION_PAGE: &str = "SELECT *,
        (SELECT COUNT(*) FROM workflow_versions WHERE workflow_id = $1) AS total
    FROM workflow_versions WHERE workflow_id = $1
    ORDER BY seq LIMIT $2 OFFSET $3";

/// [`VERSION_PAGE`] without the definitions.
const VERSION_PAGE_WITHOUT_DEFINITIONS: &str =
    "SELECT id, workflow_id, name, description, created_by, created_at,
        (SELECT COUNT(*) FROM workflow_versions WHERE workflow_id = $1) AS total
    FROM workflow_versions WHERE workflow_id = $1
    ORDER BY seq LIMIT $2 OFFSET $3";

/// Records of a page and the total its first row carries.
fn page<R, T>(rows: &[PgRow]) -> StoreResult<(Vec<T>, Option<i64>)>
where
    R: for<'r> FromRow<'r, PgRow>,
    T: TryFrom<R, Error = StoreError>,
{
    let total = rows
        .first()
        .map(|row| row.try_get::<i64, _>("total"))
        .transpose()?;
    let items = rows
        .iter()
        .map(|row| T::try_from(R::from_row(row)?))
        .collect::<StoreResult<_>>()?;
    Ok((items, total))
}

#[async_trait]
impl WorkflowStore for PostgresStore {
    async fn create_workflow(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        fields: WorkflowFields,
        quotas: &WorkflowQuotas,
    ) -> StoreResult<WorkflowRecord> {
        let id = new_id();
        let at = now();
        let definition = raw_json(&fields.definition)?;
        let mut tx = self.begin().await?;
        let org = lock_workspace(&mut tx, workspace_id).await?;
        let (workflows, bytes) = workspace_totals(&mut tx, workspace_id).await?;
        if workflows >= quotas.workflows_per_workspace {
            return Err(StoreError::QuotaExceeded {
                quota: Quota::WorkflowsPerWorkspace,
                limit: quotas.workflows_per_workspace,
            });
        }
        check_definition_bytes(bytes, 0, definition.get().len() as u64, quotas)?;
        sqlx::query(
            "INSERT INTO workflows (id, workspace_id, name, kind, definition, error_handler, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(&id)
        .bind(workspace_id)
        .bind(&fields.name)
        .bind(&fields.kind)
        .bind(definition.get())
        .bind(&fields.error_handler)
        .bind(to_ms(at))
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            actor,
            &org,
            Some(workspace_id),
            "workflow.create",
            ("workflow", &id),
            json!({"name": fields.name, "type": fields.kind}),
        )
        .await?;
        tx.commit().await?;
        Ok(WorkflowRecord {
            id,
            workspace_id: workspace_id.to_owned(),
            name: fields.name,
            kind: fields.kind,
            definition,
            error_handler: fields.error_handler,
            created_at: at,
            updated_at: at,
        })
    }

    async fn list_workflows(
        &self,
        workspace_id: &WorkspaceId,
        kind: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(Vec<WorkflowRecord>, u64)> {
        let query = match kind {
            Some(kind) => sqlx::query(PAGE_OF_KIND).bind(workspace_id).bind(kind),
            None => sqlx::query(PAGE_OF_ALL).bind(workspace_id),
        };
        let rows = query
            .bind(to_i64(limit))
            .bind(to_i64(offset))
            .fetch_all(&self.pool)
            .await?;
        let (items, total) = page::<WorkflowRow, WorkflowRecord>(&rows)?;
        let total: i64 = match total {
            Some(total) => total,
            // A page past the end has no row to carry the total.
            None => {
                let count = match kind {
                    Some(kind) => sqlx::query_scalar(
                        "SELECT COUNT(*) FROM workflows WHERE workspace_id = $1 AND kind = $2",
                    )
                    .bind(workspace_id)
                    .bind(kind),
                    None => {
                        sqlx::query_scalar("SELECT COUNT(*) FROM workflows WHERE workspace_id = $1")
                            .bind(workspace_id)
                    }
                };
                count.fetch_one(&self.pool).await?
            }
        };
        Ok((items, u64::try_from(total).unwrap_or(0)))
    }

    async fn workflow(
        &self,
        workspace_id: &WorkspaceId,
        id: &WorkflowId,
    ) -> StoreResult<Option<WorkflowRecord>> {
        sqlx::query_as::<_, WorkflowRow>(
            "SELECT * FROM workflows WHERE workspace_id = $1 AND id = $2",
        )
        .bind(workspace_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(WorkflowRecord::try_from)
        .transpose()
    }

    async fn update_workflow(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        id: &WorkflowId,
        fields: WorkflowFields,
        quotas: &WorkflowQuotas,
    ) -> StoreResult<WorkflowRecord> {
        let definition = fields.definition.to_string();
        let mut tx = self.begin().await?;
        let org = lock_workspace(&mut tx, workspace_id).await?;
        let old_len: i64 = sqlx::query_scalar(
            "SELECT octet_length(definition)::bigint FROM workflows WHERE workspace_id = $1 AND id = $2",
        )
        .bind(workspace_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let (_, bytes) = workspace_totals(&mut tx, workspace_id).await?;
        check_definition_bytes(
            bytes,
            u64::try_from(old_len).unwrap_or(0),
            definition.len() as u64,
            quotas,
        )?;
        let record: WorkflowRecord = sqlx::query_as::<_, WorkflowRow>(
            "UPDATE workflows SET name = $1, kind = $2, definition = $3, error_handler = $4, updated_at = $5
             WHERE workspace_id = $6 AND id = $7 RETURNING *",
        )
        .bind(&fields.name)
        .bind(&fields.kind)
        .bind(&definition)
        .bind(&fields.error_handler)
        .bind(to_ms(now()))
        .bind(workspace_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?
        .try_into()?;
        audit(
            &mut tx,
            actor,
            &org,
            Some(workspace_id),
            "workflow.update",
            ("workflow", id),
            json!({"name": fields.name, "type": fields.kind}),
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn delete_workflow(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        id: &WorkflowId,
    ) -> StoreResult<()> {
        self.delete_audited(
            actor,
            workspace_id,
            "DELETE FROM workflows WHERE workspace_id = $1 AND id = $2",
            id.as_str(),
            "workflow.delete",
            "workflow",
        )
        .await
    }

    async fn create_workflow_version(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        workflow_id: &WorkflowId,
        name: &str,
        description: Option<&str>,
        definition: Value,
        quotas: &WorkflowQuotas,
    ) -> StoreResult<WorkflowVersionRecord> {
        let definition = raw_json(&definition)?;
        let mut tx = self.begin().await?;
        let org = lock_workspace(&mut tx, workspace_id).await?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT id FROM workflows WHERE workspace_id = $1 AND id = $2")
                .bind(workspace_id)
                .bind(workflow_id)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        let versions: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM workflow_versions WHERE workflow_id = $1")
                .bind(workflow_id)
                .fetch_one(&mut *tx)
                .await?;
        if u64::try_from(versions).unwrap_or(0) >= quotas.versions_per_workflow {
            return Err(StoreError::QuotaExceeded {
                quota: Quota::VersionsPerWorkflow,
                limit: quotas.versions_per_workflow,
            });
        }
        let (_, bytes) = workspace_totals(&mut tx, workspace_id).await?;
        check_definition_bytes(bytes, 0, definition.get().len() as u64, quotas)?;
        let record = WorkflowVersionRecord {
            id: new_id(),
            workflow_id: workflow_id.to_owned(),
            name: name.to_owned(),
            description: description.map(str::to_owned),
            definition: Some(definition),
            created_by: actor.user_id.clone(),
            created_at: now(),
        };
        sqlx::query(
            "INSERT INTO workflow_versions (id, workflow_id, name, description, definition, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&record.id)
        .bind(workflow_id)
        .bind(name)
        .bind(description)
        .bind(record.definition.as_deref().map(RawValue::get))
        .bind(&record.created_by)
        .bind(to_ms(record.created_at))
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            actor,
            &org,
            Some(workspace_id),
            "workflow_version.create",
            ("workflow_version", &record.id),
            json!({"workflow_id": workflow_id, "name": name}),
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn list_workflow_versions(
        &self,
        workspace_id: &WorkspaceId,
        workflow_id: &WorkflowId,
        slice: VersionSlice,
    ) -> StoreResult<(Vec<WorkflowVersionRecord>, u64)> {
        let exists: Option<String> =
            sqlx::query_scalar("SELECT id FROM workflows WHERE workspace_id = $1 AND id = $2")
                .bind(workspace_id)
                .bind(workflow_id)
                .fetch_optional(&self.pool)
                .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        let sql = if slice.definitions {
            VERSION_PAGE
        } else {
            VERSION_PAGE_WITHOUT_DEFINITIONS
        };
        let rows = sqlx::query(sql)
            .bind(workflow_id)
            .bind(to_i64(slice.limit))
            .bind(to_i64(slice.offset))
            .fetch_all(&self.pool)
            .await?;
        let (versions, total) = page::<VersionRow, WorkflowVersionRecord>(&rows)?;
        let total: i64 = match total {
            Some(total) => total,
            None => {
                sqlx::query_scalar("SELECT COUNT(*) FROM workflow_versions WHERE workflow_id = $1")
                    .bind(workflow_id)
                    .fetch_one(&self.pool)
                    .await?
            }
        };
        Ok((versions, u64::try_from(total).unwrap_or(0)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn update_workflow_version(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        workflow_id: &WorkflowId,
        version_id: &WorkflowVersionId,
        name: &str,
        description: Option<&str>,
        definition: Value,
        quotas: &WorkflowQuotas,
    ) -> StoreResult<WorkflowVersionRecord> {
        let definition = definition.to_string();
        let mut tx = self.begin().await?;
        let org = lock_workspace(&mut tx, workspace_id).await?;
        let old_len: i64 = sqlx::query_scalar(
            "SELECT octet_length(v.definition)::bigint FROM workflow_versions v
             JOIN workflows w ON w.id = v.workflow_id
             WHERE v.id = $1 AND v.workflow_id = $2 AND w.workspace_id = $3",
        )
        .bind(version_id)
        .bind(workflow_id)
        .bind(workspace_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let (_, bytes) = workspace_totals(&mut tx, workspace_id).await?;
        check_definition_bytes(
            bytes,
            u64::try_from(old_len).unwrap_or(0),
            definition.len() as u64,
            quotas,
        )?;
        let record: WorkflowVersionRecord = sqlx::query_as::<_, VersionRow>(
            "UPDATE workflow_versions SET name = $1, description = $2, definition = $3
             WHERE id = $4 AND workflow_id = $5
               AND workflow_id IN (SELECT id FROM workflows WHERE workspace_id = $6)
             RETURNING *",
        )
        .bind(name)
        .bind(description)
        .bind(&definition)
        .bind(version_id)
        .bind(workflow_id)
        .bind(workspace_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?
        .try_into()?;
        audit(
            &mut tx,
            actor,
            &org,
            Some(workspace_id),
            "workflow_version.update",
            ("workflow_version", version_id),
            json!({"workflow_id": workflow_id, "name": name}),
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }
}
