//! [`SessionStore`] on PostgreSQL.

use super::rows::SessionUserRow;
use super::*;

#[async_trait]
impl SessionStore for PostgresStore {
    async fn create_session(&self, session: &SessionRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (token_digest, user_id, csrf_token, created_at, expires_at,
                 last_seen_at, reauth_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&session.token_digest)
        .bind(&session.user_id)
        .bind(&session.csrf_token)
        .bind(to_ms(session.created_at))
        .bind(to_ms(session.expires_at))
        .bind(to_ms(session.last_seen_at))
        .bind(session.reauth_at.map(to_ms))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session(
        &self,
        token_digest: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Option<(SessionRecord, UserRecord)>> {
        sqlx::query_as::<_, SessionUserRow>(
            "SELECT s.token_digest, s.csrf_token, s.created_at AS session_created_at,
                    s.expires_at AS session_expires_at,
                    COALESCE(s.last_seen_at, s.created_at) AS session_last_seen_at,
                    s.reauth_at AS session_reauth_at, u.*
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_digest = $1 AND s.expires_at > $2",
        )
        .bind(token_digest)
        .bind(to_ms(now))
        .fetch_optional(&self.pool)
        .await?
        .map(<(SessionRecord, UserRecord)>::try_from)
        .transpose()
    }

    async fn delete_session(&self, token_digest: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE token_digest = $1")
            .bind(token_digest)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_user_sessions(&self, user_id: &UserId) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn end_sessions(
        &self,
        actor: &Actor,
        user_id: &UserId,
        keep: Option<&str>,
    ) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let org: OrganizationId =
            sqlx::query_scalar("SELECT organization_id FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound)?;
        let ended = sqlx::query(
            "DELETE FROM sessions WHERE user_id = $1 AND token_digest IS DISTINCT FROM $2",
        )
        .bind(user_id)
        .bind(keep)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        audit(
            &mut tx,
            actor,
            &org,
            None,
            "user.sessions_end",
            ("user", user_id),
            json!({"sessions_ended": ended, "kept_current": keep.is_some()}),
        )
        .await?;
        tx.commit().await?;
        Ok(ended)
    }

    async fn touch_session(&self, token_digest: &str, at: OffsetDateTime) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE token_digest = $2")
            .bind(to_ms(at))
            .bind(token_digest)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn set_session_reauth(&self, token_digest: &str, at: OffsetDateTime) -> StoreResult<()> {
        sqlx::query(
            "UPDATE sessions SET reauth_at = $1, last_seen_at = $1 WHERE token_digest = $2",
        )
        .bind(to_ms(at))
        .bind(token_digest)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn purge_expired(
        &self,
        now: OffsetDateTime,
        idle_before: OffsetDateTime,
        nonces_before: OffsetDateTime,
    ) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let sessions = sqlx::query(
            "DELETE FROM sessions WHERE expires_at <= $1 OR COALESCE(last_seen_at, created_at) < $2",
        )
        .bind(to_ms(now))
        .bind(to_ms(idle_before))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let nonces = sqlx::query("DELETE FROM form_nonces WHERE used_at < $1")
            .bind(to_ms(nonces_before))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(sessions + nonces)
    }

    /// Single use under concurrency: of two inserts of one nonce, the
    /// primary key lets exactly one through.
    async fn use_nonce(&self, nonce: &str) -> StoreResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO form_nonces (nonce, used_at) VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING",
        )
        .bind(nonce)
        .bind(to_ms(now()))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }
}
