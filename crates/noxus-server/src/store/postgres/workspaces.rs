//! [`WorkspaceStore`] on PostgreSQL.

use super::rows::{records, WorkspaceRow};
use super::*;

#[async_trait]
impl WorkspaceStore for PostgresStore {
    async fn create_workspace(
        &self,
        actor: &Actor,
        organization_id: &OrganizationId,
        name: &str,
        description: Option<&str>,
        owner_user_id: &UserId,
    ) -> StoreResult<WorkspaceRecord> {
        let id = new_id();
        let created_at = now();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO workspaces (id, organization_id, name, description, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(organization_id)
        .bind(name)
        .bind(description)
        .bind(to_ms(created_at))
        .execute(&mut *tx)
        .await
        .map_err(on_unique(ConflictKind::WorkspaceName))?;
        sqlx::query(
            "INSERT INTO memberships (workspace_id, user_id, role, created_at)
             VALUES ($1, $2, 'owner', $3)",
        )
        .bind(&id)
        .bind(owner_user_id)
        .bind(to_ms(created_at))
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            actor,
            organization_id,
            Some(&id),
            "workspace.create",
            ("workspace", &id),
            json!({"name": name, "owner_user_id": owner_user_id}),
        )
        .await?;
        self.commit(tx, [StoreEvent::WorkspaceChanged(id.clone())])
            .await?;
        Ok(WorkspaceRecord {
            id,
            organization_id: organization_id.to_owned(),
            name: name.to_owned(),
            description: description.map(str::to_owned),
            created_at,
            rate_limit: None,
        })
    }

    /// By creation (`seq`) order.
    async fn list_workspaces(
        &self,
        organization_id: &OrganizationId,
    ) -> StoreResult<Vec<WorkspaceRecord>> {
        let rows = sqlx::query_as::<_, WorkspaceRow>(
            "SELECT * FROM workspaces WHERE organization_id = $1 ORDER BY seq",
        )
        .bind(organization_id)
        .fetch_all(&self.pool)
        .await?;
        records(rows)
    }

    async fn workspace(
        &self,
        organization_id: &OrganizationId,
        id: &WorkspaceId,
    ) -> StoreResult<Option<WorkspaceRecord>> {
        sqlx::query_as::<_, WorkspaceRow>(
            "SELECT * FROM workspaces WHERE organization_id = $1 AND id = $2",
        )
        .bind(organization_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .map(WorkspaceRecord::try_from)
        .transpose()
    }

    async fn set_workspace_rate_limit(
        &self,
        actor: &Actor,
        organization_id: &OrganizationId,
        workspace_id: &WorkspaceId,
        limit: Option<RateLimit>,
    ) -> StoreResult<WorkspaceRecord> {
        let mut tx = self.begin().await?;
        let workspace: WorkspaceRecord = sqlx::query_as::<_, WorkspaceRow>(
            "UPDATE workspaces SET rate_limit_per_second = $1, rate_limit_burst = $2
             WHERE organization_id = $3 AND id = $4 RETURNING *",
        )
        .bind(limit.map(|l| i64::from(l.per_second)))
        .bind(limit.map(|l| i64::from(l.burst)))
        .bind(organization_id)
        .bind(workspace_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?
        .try_into()?;
        audit(
            &mut tx,
            actor,
            organization_id,
            Some(workspace_id),
            "workspace.rate_limit",
            ("workspace", workspace_id),
            json!({"per_second": limit.map(|l| l.per_second), "burst": limit.map(|l| l.burst)}),
        )
        .await?;
        self.commit(tx, [StoreEvent::WorkspaceChanged(workspace_id.to_owned())])
            .await?;
        Ok(workspace)
    }

    async fn delete_workspace(
        &self,
        actor: &Actor,
        organization_id: &OrganizationId,
        id: &WorkspaceId,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let name: Option<String> = sqlx::query_scalar(
            "SELECT name FROM workspaces WHERE organization_id = $1 AND id = $2 FOR UPDATE",
        )
        .bind(organization_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(name) = name else {
            return Err(StoreError::NotFound);
        };
        sqlx::query("DELETE FROM workspaces WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            actor,
            organization_id,
            Some(id),
            "workspace.delete",
            ("workspace", id),
            json!({"name": name}),
        )
        .await?;
        self.commit(tx, [StoreEvent::WorkspaceChanged(id.to_owned())])
            .await?;
        Ok(())
    }
}
