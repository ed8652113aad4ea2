//! [`MemberStore`] on SQLite.

use super::keys::insert_key;
use super::rows::{records, MemberRow, OrganizationRow, UserRow, WorkspaceRoleRow};
use super::*;

#[async_trait]
impl MemberStore for SqliteStore {
    async fn bootstrap(&self, request: BootstrapRequest) -> StoreResult<Option<BootstrapOutcome>> {
        let mut tx = self.begin_write().await?;
        let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM organizations")
            .fetch_one(&mut *tx)
            .await?;
        if existing > 0 {
            return Ok(None);
        }
        let at = now();
        let organization = Organization {
            id: new_id(),
            name: request.organization_name.clone(),
        };
        sqlx::query("INSERT INTO organizations (id, name, created_at) VALUES (?, ?, ?)")
            .bind(&organization.id)
            .bind(&organization.name)
            .bind(to_ms(at))
            .execute(&mut *tx)
            .await?;
        let user = UserRecord {
            id: new_id(),
            organization_id: organization.id.clone(),
            email: request.admin_email.clone(),
            name: request.admin_name.clone(),
            password_hash: request.password_hash.clone(),
            is_org_admin: true,
            deactivated_at: None,
            must_change_password: false,
        };
        sqlx::query(
            "INSERT INTO users (id, organization_id, email, name, password_hash, is_org_admin, created_at)
             VALUES (?, ?, ?, ?, ?, 1, ?)",
        )
        .bind(&user.id)
        .bind(&user.organization_id)
        .bind(&user.email)
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(to_ms(at))
        .execute(&mut *tx)
        .await?;
        let workspace = WorkspaceRecord {
            id: new_id(),
            organization_id: organization.id.clone(),
            name: request.workspace_name.clone(),
            description: None,
            created_at: at,
            rate_limit: None,
        };
        sqlx::query("INSERT INTO workspaces (id, organization_id, name, description, created_at) VALUES (?, ?, ?, NULL, ?)")
            .bind(&workspace.id)
            .bind(&organization.id)
            .bind(&workspace.name)
            .bind(to_ms(at))
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO memberships (workspace_id, user_id, role, created_at) VALUES (?, ?, 'owner', ?)")
            .bind(&workspace.id)
            .bind(&user.id)
            .bind(to_ms(at))
            .execute(&mut *tx)
            .await?;
        let system = Actor::system();
        audit(&mut tx, &system, &organization.id, Some(&workspace.id), "platform.bootstrap", ("organization", &organization.id),
            json!({"owner_user_id": user.id, "owner_email": user.email, "workspace_id": workspace.id})).await?;
        let key = match &request.first_key {
            None => None,
            Some((name, digest, prefix, suffix)) => {
                let new = NewKey {
                    workspace_id: workspace.id.clone(),
                    user_id: user.id.clone(),
                    name: name.clone(),
                    digest: *digest,
                    prefix: prefix.clone(),
                    suffix: suffix.clone(),
                    tenant_admin: true,
                    restriction: None,
                    expires_at: None,
                    rate_limit: None,
                };
                let record = insert_key(&mut tx, &new, at).await?;
                audit(
                    &mut tx,
                    &system,
                    &organization.id,
                    Some(&workspace.id),
                    "api_key.create",
                    ("api_key", &record.id),
                    key_audit_details(&record),
                )
                .await?;
                Some(record)
            }
        };
        let events = std::iter::once(StoreEvent::WorkspaceChanged(workspace.id.clone()))
            .chain(key.iter().map(|k| StoreEvent::KeyChanged(k.id.clone())));
        self.commit(tx, events).await?;
        Ok(Some(BootstrapOutcome {
            organization,
            user,
            workspace,
            key,
        }))
    }

    async fn organization(&self) -> StoreResult<Option<Organization>> {
        Ok(sqlx::query_as::<_, OrganizationRow>(
            "SELECT id, name FROM organizations ORDER BY rowid LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?
        .map(Organization::from))
    }

    async fn create_organization(&self, actor: &Actor, name: &str) -> StoreResult<Organization> {
        let id = new_id();
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO organizations (id, name, created_at) VALUES (?, ?, ?)")
            .bind(&id)
            .bind(name)
            .bind(to_ms(now()))
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            actor,
            &id,
            None,
            "organization.create",
            ("organization", &id),
            json!({"name": name}),
        )
        .await?;
        tx.commit().await?;
        Ok(Organization {
            id,
            name: name.to_owned(),
        })
    }

    async fn create_user(&self, actor: &Actor, user: NewUser) -> StoreResult<UserRecord> {
        let id = new_id();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO users (id, organization_id, email, name, password_hash, is_org_admin,
                 must_change_password, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(&user.organization_id)
        .bind(&user.email)
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(user.is_org_admin)
        .bind(user.must_change_password)
        .bind(to_ms(now()))
        .execute(&mut *tx)
        .await
        .map_err(on_unique(ConflictKind::UserEmail))?;
        audit(
            &mut tx,
            actor,
            &user.organization_id,
            None,
            "user.create",
            ("user", &id),
            json!({"email": user.email, "is_org_admin": user.is_org_admin}),
        )
        .await?;
        tx.commit().await?;
        Ok(UserRecord {
            id,
            organization_id: user.organization_id,
            email: user.email,
            name: user.name,
            password_hash: user.password_hash,
            is_org_admin: user.is_org_admin,
            deactivated_at: None,
            must_change_password: user.must_change_password,
        })
    }

    async fn create_member(
        &self,
        actor: &Actor,
        user: NewUser,
        workspace_id: &WorkspaceId,
        role: Role,
    ) -> StoreResult<UserRecord> {
        let id: UserId = new_id();
        let mut tx = self.begin_write().await?;
        let org = org_of_workspace(&mut tx, workspace_id).await?;
        if org != user.organization_id {
            return Err(StoreError::NotFound);
        }
        let at = to_ms(now());
        sqlx::query(
            "INSERT INTO users (id, organization_id, email, name, password_hash, is_org_admin,
                 must_change_password, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(&user.organization_id)
        .bind(&user.email)
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(false)
        .bind(user.must_change_password)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(on_unique(ConflictKind::UserEmail))?;
        sqlx::query(
            "INSERT INTO memberships (workspace_id, user_id, role, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(workspace_id)
        .bind(&id)
        .bind(role.as_str())
        .bind(at)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            actor,
            &org,
            Some(workspace_id),
            "user.create",
            ("user", &id),
            json!({"email": user.email, "is_org_admin": false, "invited_to": workspace_id}),
        )
        .await?;
        audit(
            &mut tx,
            actor,
            &org,
            Some(workspace_id),
            "membership.set",
            ("user", &id),
            json!({"role": role, "previous_role": null}),
        )
        .await?;
        self.commit(tx, [StoreEvent::UserChanged(id.clone())])
            .await?;
        Ok(UserRecord {
            id,
            organization_id: user.organization_id,
            email: user.email,
            name: user.name,
            password_hash: user.password_hash,
            is_org_admin: false,
            deactivated_at: None,
            must_change_password: user.must_change_password,
        })
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRecord>> {
        sqlx::query_as::<_, UserRow>("SELECT * FROM users WHERE email = ?")
            .bind(email)
            .fetch_optional(&self.pool)
            .await?
            .map(UserRecord::try_from)
            .transpose()
    }

    async fn user(&self, id: &UserId) -> StoreResult<Option<UserRecord>> {
        sqlx::query_as::<_, UserRow>("SELECT * FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(UserRecord::try_from)
            .transpose()
    }

    async fn set_membership(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        user_id: &UserId,
        role: Role,
    ) -> StoreResult<Option<Role>> {
        let mut tx = self.begin_write().await?;
        let org = org_of_workspace(&mut tx, workspace_id).await?;
        let previous: Option<String> = sqlx::query_scalar(
            "SELECT role FROM memberships WHERE workspace_id = ? AND user_id = ?",
        )
        .bind(workspace_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let previous = previous.as_deref().map(parse_role).transpose()?;
        sqlx::query(
            "INSERT INTO memberships (workspace_id, user_id, role, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role",
        )
        .bind(workspace_id)
        .bind(user_id)
        .bind(role.as_str())
        .bind(to_ms(now()))
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db)
                if db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation =>
            {
                StoreError::NotFound
            }
            _ => StoreError::Database(e),
        })?;
        if previous == Some(Role::Owner) && role != Role::Owner {
            keeps_an_owner(&mut tx, workspace_id).await?;
        }
        audit(
            &mut tx,
            actor,
            &org,
            Some(workspace_id),
            "membership.set",
            ("user", user_id),
            json!({"role": role, "previous_role": previous}),
        )
        .await?;
        self.commit(tx, [StoreEvent::UserChanged(user_id.to_owned())])
            .await?;
        Ok(previous)
    }

    async fn remove_membership(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        user_id: &UserId,
    ) -> StoreResult<Vec<KeyId>> {
        let mut tx = self.begin_write().await?;
        let org = org_of_workspace(&mut tx, workspace_id).await?;
        let removed: Option<String> = sqlx::query_scalar(
            "DELETE FROM memberships WHERE workspace_id = ? AND user_id = ? RETURNING role",
        )
        .bind(workspace_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(removed) = removed else {
            return Err(StoreError::NotFound);
        };
        if parse_role(&removed)? == Role::Owner {
            keeps_an_owner(&mut tx, workspace_id).await?;
        }
        let revoked = revoke_live_keys(
            &mut tx,
            "user_id = ?1 AND workspace_id = ?2",
            &[user_id.as_str(), workspace_id.as_str()],
            RevokedReason::OwnerRemoved,
        )
        .await?;
        audit(
            &mut tx,
            actor,
            &org,
            Some(workspace_id),
            "membership.remove",
            ("user", user_id),
            json!({"previous_role": removed, "revoked_key_ids": revoked}),
        )
        .await?;
        self.commit(
            tx,
            std::iter::once(StoreEvent::UserChanged(user_id.to_owned()))
                .chain(revoked.iter().cloned().map(StoreEvent::KeyChanged)),
        )
        .await?;
        Ok(revoked)
    }

    async fn set_user_active(
        &self,
        actor: &Actor,
        organization_id: &OrganizationId,
        user_id: &UserId,
        active: bool,
    ) -> StoreResult<(UserRecord, Vec<KeyId>)> {
        let mut tx = self.begin_write().await?;
        let user: UserRecord = sqlx::query_as::<_, UserRow>(
            "UPDATE users SET deactivated_at = CASE WHEN ? THEN NULL ELSE COALESCE(deactivated_at, ?) END
             WHERE organization_id = ? AND id = ? RETURNING *",
        )
        .bind(active)
        .bind(to_ms(now()))
        .bind(organization_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?
        .try_into()?;
        let mut revoked = Vec::new();
        if !active {
            keeps_an_org_admin(&mut tx, organization_id).await?;
            revoked = revoke_live_keys(
                &mut tx,
                "user_id = ?1",
                &[user_id.as_str()],
                RevokedReason::OwnerDeactivated,
            )
            .await?;
            sqlx::query("DELETE FROM sessions WHERE user_id = ?")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        audit(
            &mut tx,
            actor,
            organization_id,
            None,
            if active {
                "user.reactivate"
            } else {
                "user.deactivate"
            },
            ("user", user_id),
            json!({"email": user.email, "revoked_key_ids": revoked}),
        )
        .await?;
        self.commit(
            tx,
            std::iter::once(StoreEvent::UserChanged(user_id.to_owned()))
                .chain(revoked.iter().cloned().map(StoreEvent::KeyChanged)),
        )
        .await?;
        Ok((user, revoked))
    }

    async fn set_org_admin(
        &self,
        actor: &Actor,
        organization_id: &OrganizationId,
        user_id: &UserId,
        is_org_admin: bool,
    ) -> StoreResult<UserRecord> {
        let mut tx = self.begin_write().await?;
        let user: UserRecord = sqlx::query_as::<_, UserRow>(
            "UPDATE users SET is_org_admin = ? WHERE organization_id = ? AND id = ? RETURNING *",
        )
        .bind(is_org_admin)
        .bind(organization_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?
        .try_into()?;
        if !is_org_admin {
            keeps_an_org_admin(&mut tx, organization_id).await?;
        }
        audit(
            &mut tx,
            actor,
            organization_id,
            None,
            "user.org_admin",
            ("user", user_id),
            json!({"email": user.email, "is_org_admin": is_org_admin}),
        )
        .await?;
        self.commit(tx, [StoreEvent::UserChanged(user_id.to_owned())])
            .await?;
        Ok(user)
    }

    async fn set_password(
        &self,
        actor: &Actor,
        user_id: &UserId,
        password_hash: &str,
        must_change: bool,
        keep_session: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let org: OrganizationId = sqlx::query_scalar(
            "UPDATE users SET password_hash = ?, must_change_password = ? WHERE id = ?
             RETURNING organization_id",
        )
        .bind(password_hash)
        .bind(must_change)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        let ended = sqlx::query("DELETE FROM sessions WHERE user_id = ? AND token_digest IS NOT ?")
            .bind(user_id)
            .bind(keep_session)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let by_self = actor.user_id.as_ref() == Some(user_id);
        audit(
            &mut tx,
            actor,
            &org,
            None,
            if by_self {
                "user.password_change"
            } else {
                "user.password_reset"
            },
            ("user", user_id),
            json!({"sessions_ended": ended, "must_change": must_change}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn membership(
        &self,
        workspace_id: &WorkspaceId,
        user_id: &UserId,
    ) -> StoreResult<Option<Role>> {
        let role: Option<String> = sqlx::query_scalar(
            "SELECT role FROM memberships WHERE workspace_id = ? AND user_id = ?",
        )
        .bind(workspace_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        role.as_deref().map(parse_role).transpose()
    }

    async fn list_users(&self, organization_id: &OrganizationId) -> StoreResult<Vec<UserRecord>> {
        let rows = sqlx::query_as::<_, UserRow>(
            "SELECT * FROM users WHERE organization_id = ? ORDER BY email",
        )
        .bind(organization_id)
        .fetch_all(&self.pool)
        .await?;
        records(rows)
    }

    async fn list_members(
        &self,
        workspace_id: &WorkspaceId,
    ) -> StoreResult<Vec<(UserRecord, Role)>> {
        let rows = sqlx::query_as::<_, MemberRow>(
            "SELECT u.*, m.role FROM memberships m JOIN users u ON u.id = m.user_id
             WHERE m.workspace_id = ? ORDER BY u.email",
        )
        .bind(workspace_id)
        .fetch_all(&self.pool)
        .await?;
        records(rows)
    }

    async fn workspaces_of_user(
        &self,
        user_id: &UserId,
    ) -> StoreResult<Vec<(WorkspaceRecord, Role)>> {
        let rows = sqlx::query_as::<_, WorkspaceRoleRow>(
            "SELECT w.*, m.role FROM memberships m JOIN workspaces w ON w.id = m.workspace_id
             WHERE m.user_id = ? ORDER BY w.rowid",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        records(rows)
    }
}
