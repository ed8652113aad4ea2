//! [`WorkflowStore`] on SQLite.

use super::rows::{page, PageRow, VersionRow, WorkflowRow};
use super::*;

/// A page of a workspace's workflows of one type, with the total, in one
/// statement (one round trip to SQLite's thread). The page's rowids come
/// from an index kept in page order (migration 0004), then only those rows
/// are read; the count is an uncorrelated subquery over the same index,
/// evaluated once. `kind = ?` is written out, not `? IS NULL OR kind = ?`,
/// so that SQLite can pick the index. A test checks the plan sorts nothing.
pub(super) const PAGE_OF_KIND: &str = "SELECT *,
        (SELECT COUNT(*) FROM workflows WHERE workspace_id = ?1 AND kind = ?2) AS total
    FROM workflows WHERE rowid IN (
        SELECT rowid FROM workflows WHERE workspace_id = ?1 AND kind = ?2
        ORDER BY rowid LIMIT ?3 OFFSET ?4)
    ORDER BY rowid";

/// [`PAGE_OF_KIND`] for workflows of every type.
pub(super) const PAGE_OF_ALL: &str = "SELECT *,
        (SELECT COUNT(*) FROM workflows WHERE workspace_id = ?1) AS total
    FROM workflows WHERE rowid IN (
        SELECT rowid FROM workflows WHERE workspace_id = ?1
        ORDER BY rowid LIMIT ?2 OFFSET ?3)
    ORDER BY rowid";

/// A page of a workflow's versions with their definitions, and the total,
/// in saving (rowid) order straight from `workflow_versions_page_idx`, as
/// [`PAGE_OF_KIND`] does for workflows.
pub(super) const VERSION_PAGE: &str = "SELECT *,
        (SELECT COUNT(*) FROM workflow_versions WHERE workflow_id = ?1) AS total
    FROM workflow_versions WHERE rowid IN (
        SELECT rowid FROM workflow_versions WHERE workflow_id = ?1
        ORDER BY rowid LIMIT ?2 OFFSET ?3)
    ORDER BY rowid";

/// [`VERSION_PAGE`] without the definitions.
pub(super) const VERSION_PAGE_WITHOUT_DEFINITIONS: &str =
    "SELECT id, workflow_id, name, description, created_by, created_at,
        (SELECT COUNT(*) FROM workflow_versions WHERE workflow_id = ?1) AS total
    FROM workflow_versions WHERE rowid IN (
        SELECT rowid FROM workflow_versions WHERE workflow_id = ?1
        ORDER BY rowid LIMIT ?2 OFFSET ?3)
    ORDER BY rowid";

#[async_trait]
impl WorkflowStore for SqliteStore {
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
        let mut tx = self.begin_write().await?;
        let org = org_of_workspace(&mut tx, workspace_id).await?;
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
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(workspace_id)
        .bind(&fields.name)
        .bind(&fields.kind)
        .bind(definition.get())
        .bind(&fields.error_handler)
        .bind(to_ms(at))
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
        // One statement for the page and the total (see PAGE_OF_KIND); only
        // a page past the end, which has no rows to carry the total, counts
        // apart.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let statement = match kind {
            Some(kind) => sqlx::query_as::<_, PageRow<WorkflowRow>>(PAGE_OF_KIND)
                .bind(workspace_id)
                .bind(kind),
            None => sqlx::query_as::<_, PageRow<WorkflowRow>>(PAGE_OF_ALL).bind(workspace_id),
        };
        let rows = statement
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        let (items, total) = page(rows)?;
        let total: i64 = match total {
            Some(total) => total,
            None => {
                let count = match kind {
                    Some(kind) => sqlx::query_scalar(
                        "SELECT COUNT(*) FROM workflows WHERE workspace_id = ? AND kind = ?",
                    )
                    .bind(workspace_id)
                    .bind(kind),
                    None => {
                        sqlx::query_scalar("SELECT COUNT(*) FROM workflows WHERE workspace_id = ?")
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
            "SELECT * FROM workflows WHERE workspace_id = ? AND id = ?",
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
        let mut tx = self.begin_write().await?;
        let org = org_of_workspace(&mut tx, workspace_id).await?;
        let old_len: i64 = sqlx::query_scalar(
            "SELECT octet_length(definition) FROM workflows WHERE workspace_id = ? AND id = ?",
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
            "UPDATE workflows SET name = ?, kind = ?, definition = ?, error_handler = ?, updated_at = ?
             WHERE workspace_id = ? AND id = ? RETURNING *",
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
            "DELETE FROM workflows WHERE workspace_id = ? AND id = ?",
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
        let mut tx = self.begin_write().await?;
        let org = org_of_workspace(&mut tx, workspace_id).await?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT id FROM workflows WHERE workspace_id = ? AND id = ?")
                .bind(workspace_id)
                .bind(workflow_id)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        let versions: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM workflow_versions WHERE workflow_id = ?")
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
             VALUES (?, ?, ?, ?, ?, ?, ?)",
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
            sqlx::query_scalar("SELECT id FROM workflows WHERE workspace_id = ? AND id = ?")
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
        let rows = sqlx::query_as::<_, PageRow<VersionRow>>(sql)
            .bind(workflow_id)
            .bind(i64::try_from(slice.limit).unwrap_or(i64::MAX))
            .bind(i64::try_from(slice.offset).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        let (versions, total) = page(rows)?;
        let total: i64 = match total {
            Some(total) => total,
            None => {
                sqlx::query_scalar("SELECT COUNT(*) FROM workflow_versions WHERE workflow_id = ?")
                    .bind(workflow_id)
                    .fetch_one(&self.pool)
                    .await?
            }
        };
        Ok((versions, u64::try_from(total).unwrap_or(0)))
    }

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
        let mut tx = self.begin_write().await?;
        let org = org_of_workspace(&mut tx, workspace_id).await?;
        let old_len: i64 = sqlx::query_scalar(
            "SELECT octet_length(v.definition) FROM workflow_versions v
             JOIN workflows w ON w.id = v.workflow_id
             WHERE v.id = ? AND v.workflow_id = ? AND w.workspace_id = ?",
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
            "UPDATE workflow_versions SET name = ?, description = ?, definition = ?
             WHERE id = ? AND workflow_id = ?
               AND workflow_id IN (SELECT id FROM workflows WHERE workspace_id = ?)
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
