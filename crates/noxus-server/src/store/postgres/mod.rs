//! The shared store: PostgreSQL, for any number of server processes on one
//! database. Same contract as [`super::SqliteStore`], method for method:
//! the same ordering promises, errors, audit rows and events.
//!
//! How the rules that SQLite gets from its single writer hold here
//! (PostgreSQL runs every transaction READ COMMITTED):
//!
//! - **Conditional writes**: rotation is one `UPDATE ... WHERE revoked_at IS
//!   NULL AND replaced_by IS NULL ...` on the key's row, locked first
//!   (`FOR NO KEY UPDATE`), so of two concurrent rotations exactly one wins
//!   and the other is told why from the row as the winner left it.
//! - **Rules over several rows** (a workspace keeps an owner, the
//!   organization keeps an active admin, key and workflow quotas) lock the
//!   row they are about first — the workspace, or the organization —
//!   `FOR NO KEY UPDATE`, which serializes the writes that could break them
//!   together without blocking foreign-key checks or readers.
//! - **First start** takes a transaction-level advisory lock, so that
//!   concurrent first starts create one organization.
//! - **Order**: what SQLite lists in rowid order is listed by an explicit
//!   `seq` identity column; the audit log's `id` is an identity column.
//!
//! Events: each write that publishes events runs `pg_notify('noxus_events',
//! '<instance> <event>')` inside its transaction (PostgreSQL delivers them on
//! commit only, never after a rollback) and, once committed, publishes them
//! on this process's [`EventBus`] (read-your-writes). A background task
//! listens on `noxus_events` on its own connection and republishes what
//! other instances sent. When that connection drops, the bus goes deaf
//! ([`EventBus::went_deaf`]: a [`StoreEvent::Resync`] clears the key cache
//! and, until the listener is back, the cache is bypassed, so every key is
//! looked up in the database); the task reconnects (backoff up to 1 s) and
//! then publishes [`StoreEvent::Resync`] again, since events may have been
//! missed, before the cache serves again ([`EventBus::hears_again`]). While
//! it is down, [`PostgresStore::listener_connected`] is false and
//! [`Store::ping`] fails (so `/readyz` answers 503): a process that cannot
//! hear revocations made elsewhere should not take traffic.
//!
//! Run changes ([`StoreEvent::RunChanged`], one per write that appends run
//! events) go out on a channel of their own, `noxus_runs`, which the same
//! connection also listens on: a process that predates them does not
//! listen there, so it never mistakes them for something it must forget
//! its key cache over; one that hears something it does not understand
//! there tells its streams to look at every run again
//! ([`EventBus::run_changes_missed`]).
//!
//! The listener connects to [`PostgresOptions::listen_url`] when it is set
//! (PostgreSQL directly, when the main URL goes through a pooler in
//! transaction mode, which cannot carry `LISTEN`), else to the main URL.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use noxus_api::Role;
use secrecy::ExposeSecret;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use time::OffsetDateTime;
use tokio::sync::watch;
use uuid::Uuid;

use super::*;

mod audit;
mod callbacks;
mod keys;
mod leaks;
mod members;
mod rate_counters;
mod runs;
use super::common::*;
use super::rows;
mod sessions;
mod usage;
mod workflows;
mod workspaces;

#[cfg(test)]
mod tests;

/// The channel every instance notifies and listens on.
pub const EVENTS_CHANNEL: &str = "noxus_events";

/// The channel of run changes ([`StoreEvent::RunChanged`]).
pub const RUNS_CHANNEL: &str = "noxus_runs";

/// Key of the transaction-level advisory lock taken by the first start.
const BOOTSTRAP_LOCK: i64 = 0x6e6f_7875_7301;

/// Longest pause between two attempts to reconnect the listener.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

type Tx = Transaction<'static, Postgres>;

/// PostgreSQL implementation of [`Store`]. Cheap to clone; the listener task
/// ends when the last clone is dropped or [`Store::close`] is called.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    events: EventBus,
    /// Random id of this store, prefixed to its notifications so that its
    /// listener skips its own (already published locally at commit).
    instance: Arc<str>,
    listener: Arc<ListenerHandle>,
}

/// The listener task's side of the store. Dropping it (with the last
/// store) drops `shutdown`, which ends the task.
#[derive(Debug)]
struct ListenerHandle {
    connected: Arc<AtomicBool>,
    shutdown: watch::Sender<bool>,
    pool: PgPool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the connection options (the URL may hold a password).
        f.debug_struct("PostgresStore")
            .field("instance", &self.instance)
            .field("pool_size", &self.pool.size())
            .field("listener_connected", &self.listener_connected())
            .finish_non_exhaustive()
    }
}

/// Connection options from [`PostgresOptions`]: the URL plus the statement
/// timeout (sent at connection start, so every pooled connection has it).
/// A URL that does not parse is described without echoing it.
fn connect_options(options: &PostgresOptions) -> anyhow::Result<PgConnectOptions> {
    let url = options.url.expose_secret();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        anyhow::bail!(
            "the database URL must start with postgres:// or postgresql:// (postgres://user:password@host:5432/database)"
        );
    }
    let parsed = PgConnectOptions::from_str(url).map_err(|e| {
        anyhow::anyhow!(
            "the database URL cannot be read: {}",
            redact(&e.to_string(), url)
        )
    })?;
    let statement_timeout = options.statement_timeout.as_millis().max(1);
    Ok(parsed
        .application_name("noxus")
        .options([("statement_timeout", statement_timeout.to_string())]))
}

/// `text` without any piece of `url` that could be secret (the whole URL,
/// its password).
fn redact(text: &str, url: &str) -> String {
    let mut out = text.replace(url, "[database URL]");
    if let Some(password) = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split('@').next().filter(|_| rest.contains('@')))
        .and_then(|userinfo| userinfo.split_once(':'))
        .map(|(_, password)| password)
        .filter(|p| !p.is_empty())
    {
        out = out.replace(password, "[redacted]");
    }
    out
}

/// The pool the store runs on.
fn pool_options(options: &PostgresOptions) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.connect_timeout)
        // A pooled connection may have been dropped by the server, a proxy
        // or a failover: check it before use.
        .test_before_acquire(true)
}

/// Connects (without echoing the URL in errors). One connection is opened
/// directly first, so that a failure says why (refused, unknown host,
/// authentication...) rather than only that the pool timed out.
async fn connect_pool(options: &PostgresOptions) -> anyhow::Result<PgPool> {
    use sqlx::{ConnectOptions as _, Connection as _};
    let connect = connect_options(options)?;
    let url = options.url.expose_secret();
    match tokio::time::timeout(options.connect_timeout, connect.connect()).await {
        Err(_) => anyhow::bail!(
            "cannot connect to PostgreSQL: no connection within {} ms",
            options.connect_timeout.as_millis()
        ),
        Ok(Err(e)) => anyhow::bail!(
            "cannot connect to PostgreSQL: {}",
            redact(&e.to_string(), url)
        ),
        Ok(Ok(probe)) => {
            let _ = probe.close().await;
        }
    }
    pool_options(options)
        .connect_with(connect)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to PostgreSQL: {}",
                redact(&e.to_string(), options.url.expose_secret())
            )
        })
}

/// Applies the migrations (`noxus migrate`) and closes the connection.
/// Safe while other processes run: the migrator takes an advisory lock, and
/// applied migrations are skipped.
pub async fn migrate_only(options: &PostgresOptions) -> anyhow::Result<()> {
    let pool = connect_pool(options).await?;
    let result = MIGRATOR.run(&pool).await;
    pool.close().await;
    result.map_err(|e| anyhow::anyhow!("cannot apply the PostgreSQL migrations: {e}"))
}

impl PostgresStore {
    /// Connects, applies the migrations, starts listening for other
    /// instances' events, and returns once the listener is connected.
    pub async fn open(options: &PostgresOptions) -> anyhow::Result<Self> {
        let pool = connect_pool(options).await?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| anyhow::anyhow!("cannot apply the PostgreSQL migrations: {e}"))?;
        // The listener's own connection, outside the main pool, so that it
        // never takes a slot of the requests' pool; to `listen_url` if set.
        let listen_options = PostgresOptions {
            url: options
                .listen_url
                .clone()
                .unwrap_or_else(|| options.url.clone()),
            ..options.clone()
        };
        let listener_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.connect_timeout)
            .max_lifetime(None)
            .idle_timeout(None)
            .test_before_acquire(true)
            .connect_lazy_with(
                connect_options(&listen_options)?.application_name("noxus-listener"),
            );
        let first = listen(&listener_pool).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen for events on PostgreSQL: {}",
                redact(&e.to_string(), listen_options.url.expose_secret())
            )
        })?;
        let events = EventBus::new();
        let instance: Arc<str> = Arc::from(Uuid::new_v4().simple().to_string());
        let connected = Arc::new(AtomicBool::new(true));
        let (shutdown, shutdown_rx) = watch::channel(false);
        tokio::spawn(run_listener(
            first,
            listener_pool.clone(),
            Arc::clone(&instance),
            events.clone(),
            Arc::clone(&connected),
            shutdown_rx,
        ));
        Ok(Self {
            pool,
            events,
            instance,
            listener: Arc::new(ListenerHandle {
                connected,
                shutdown,
                pool: listener_pool,
            }),
        })
    }

    /// Whether the event listener is connected: while it is not, changes
    /// made by other processes are not heard (the key cache's TTL is the
    /// only bound on staleness) and [`Store::ping`] fails.
    pub fn listener_connected(&self) -> bool {
        self.listener.connected.load(Ordering::Acquire)
    }

    /// This store's instance id (the prefix of its notifications).
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    async fn begin(&self) -> Result<Tx, sqlx::Error> {
        self.pool.begin().await
    }

    /// Commits a write with its events: notifies them inside the
    /// transaction (delivered to other instances on commit only), commits,
    /// then publishes them on this process's bus before returning.
    async fn commit(
        &self,
        mut tx: Tx,
        events: impl IntoIterator<Item = StoreEvent>,
    ) -> StoreResult<()> {
        let events: Vec<StoreEvent> = events.into_iter().collect();
        if !events.is_empty() {
            let channels: Vec<&str> = events
                .iter()
                .map(|e| {
                    if e.is_run() {
                        RUNS_CHANNEL
                    } else {
                        EVENTS_CHANNEL
                    }
                })
                .collect();
            let payloads: Vec<String> = events
                .iter()
                .map(|e| format!("{} {}", self.instance, e.encode()))
                .collect();
            sqlx::query("SELECT pg_notify(c, p) FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS t(c, p, n) ORDER BY n")
                .bind(&channels)
                .bind(&payloads)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.events.publish(events);
        Ok(())
    }

    /// Deletes one row of a workspace (`sql` binds the workspace id as $1,
    /// then `id` as $2) and audits it, in one transaction; `NotFound` if
    /// nothing matched.
    async fn delete_audited(
        &self,
        actor: &Actor,
        workspace_id: &WorkspaceId,
        sql: &str,
        id: &str,
        action: &str,
        target_type: &str,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let org = org_of_workspace(&mut tx, workspace_id).await?;
        let deleted = sqlx::query(sql)
            .bind(workspace_id)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        audit(
            &mut tx,
            actor,
            &org,
            Some(workspace_id),
            action,
            (target_type, id),
            json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// A listener on [`EVENTS_CHANNEL`] and [`RUNS_CHANNEL`] on the listener
/// pool's connection.
async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Reconnection is this module's job (so that it can tell, and resync).
    listener.eager_reconnect(false);
    listener.ignore_pool_close_event(true);
    listener.listen_all([EVENTS_CHANNEL, RUNS_CHANNEL]).await?;
    Ok(listener)
}

/// Applies one notification: another instance's events go on the local
/// bus; this instance's own (published at commit) are skipped.
fn on_notification(channel: &str, payload: &str, instance: &str, events: &EventBus) {
    let event = match payload.split_once(' ') {
        Some((from, _)) if from == instance => return,
        Some((_, event)) => StoreEvent::decode(event),
        None => StoreEvent::Resync,
    };
    events.heard_notification();
    if channel == RUNS_CHANNEL && !event.is_run() {
        // Something about runs this process does not understand (a newer
        // one said it): every stream looks again; the key cache is not
        // concerned.
        events.run_changes_missed();
    } else {
        // Not ours to understand on the key channel: forgetting too much
        // is safe.
        events.publish([event]);
    }
}

/// The listener task: republishes other instances' events until the store
/// is closed or dropped; reconnects when the connection drops and then
/// publishes [`StoreEvent::Resync`].
async fn run_listener(
    first: PgListener,
    pool: PgPool,
    instance: Arc<str>,
    events: EventBus,
    connected: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut listener = Some(first);
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut current = match listener.take() {
            Some(current) => current,
            None => {
                let attempt = tokio::select! {
                    biased;
                    _ = shutdown.changed() => return,
                    attempt = listen(&pool) => attempt,
                };
                match attempt {
                    Ok(current) => {
                        tracing::info!("PostgreSQL event listener reconnected");
                        backoff = Duration::from_millis(50);
                        connected.store(true, Ordering::Release);
                        events.listener_reconnected();
                        // Whatever was notified while disconnected is lost:
                        // forget everything, then let the cache serve again.
                        events.hears_again();
                        current
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "cannot reconnect the PostgreSQL event listener");
                        tokio::select! {
                            biased;
                            _ = shutdown.changed() => return,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
        };
        loop {
            let received = tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                received = current.try_recv() => received,
            };
            match received {
                Ok(Some(notification)) => on_notification(
                    notification.channel(),
                    notification.payload(),
                    &instance,
                    &events,
                ),
                Ok(None) | Err(_) => {
                    // From now on changes made elsewhere go unheard: clear
                    // the key cache and bypass it (every key is looked up
                    // in the database) until the listener is back. Before
                    // `/readyz` can tell, so that a 503 there implies it.
                    events.went_deaf();
                    connected.store(false, Ordering::Release);
                    if let Err(err) = received {
                        tracing::warn!(error = %err, "PostgreSQL event listener lost its connection");
                    } else {
                        tracing::warn!("PostgreSQL event listener lost its connection");
                    }
                    break;
                }
            }
        }
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn audit<T: AsRef<str> + ?Sized>(
    tx: &mut Tx,
    actor: &Actor,
    organization_id: &OrganizationId,
    workspace_id: Option<&WorkspaceId>,
    action: &str,
    target: (&str, &T),
    details: Value,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_log (organization_id, workspace_id, actor_user_id, actor_key_id,
             action, target_type, target_id, details, client_addr, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(organization_id)
    .bind(workspace_id)
    .bind(actor.user_id.as_ref())
    .bind(actor.key_id.as_ref())
    .bind(action)
    .bind(target.0)
    .bind(target.1.as_ref())
    .bind(details.to_string())
    .bind(actor.client_addr.as_deref())
    .bind(to_ms(now()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn org_of_workspace(tx: &mut Tx, workspace_id: &WorkspaceId) -> StoreResult<OrganizationId> {
    sqlx::query_scalar("SELECT organization_id FROM workspaces WHERE id = $1")
        .bind(workspace_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound)
}

/// [`org_of_workspace`], locking the workspace's row until the transaction
/// ends: writes whose rule spans several rows of a workspace (its owners,
/// its key and workflow quotas) take it first, so that they run one after
/// another and each checks what the previous one committed.
async fn lock_workspace(tx: &mut Tx, workspace_id: &WorkspaceId) -> StoreResult<OrganizationId> {
    sqlx::query_scalar("SELECT organization_id FROM workspaces WHERE id = $1 FOR NO KEY UPDATE")
        .bind(workspace_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound)
}

/// Locks the organization's row (the "keeps an active admin" rule), as
/// [`lock_workspace`] does for a workspace. `NotFound` if it does not exist.
async fn lock_organization(tx: &mut Tx, organization_id: &OrganizationId) -> StoreResult<()> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT id FROM organizations WHERE id = $1 FOR NO KEY UPDATE")
            .bind(organization_id)
            .fetch_optional(&mut **tx)
            .await?;
    found.map(|_| ()).ok_or(StoreError::NotFound)
}

/// Refuses (rolling back) a change that left the workspace without an owner.
async fn keeps_an_owner(tx: &mut Tx, workspace_id: &WorkspaceId) -> StoreResult<()> {
    let owners: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM memberships WHERE workspace_id = $1 AND role = 'owner'",
    )
    .bind(workspace_id)
    .fetch_one(&mut **tx)
    .await?;
    if owners == 0 {
        return Err(StoreError::Precondition(Precondition::LastOwner));
    }
    Ok(())
}

/// Refuses (rolling back) a change that left the organization without an
/// active organization admin.
async fn keeps_an_org_admin(tx: &mut Tx, organization_id: &OrganizationId) -> StoreResult<()> {
    let admins: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM users
         WHERE organization_id = $1 AND is_org_admin AND deactivated_at IS NULL",
    )
    .bind(organization_id)
    .fetch_one(&mut **tx)
    .await?;
    if admins == 0 {
        return Err(StoreError::Precondition(Precondition::LastOrgAdmin));
    }
    Ok(())
}

/// Revokes, for `reason`, every key matching `filter` (whose `$1`, `$2`…
/// take `binds`) that still works (not revoked, not expired, including
/// rotated keys in their grace period). Returns their ids, sorted.
async fn revoke_live_keys(
    tx: &mut Tx,
    filter: &str,
    binds: &[&str],
    reason: RevokedReason,
) -> StoreResult<Vec<KeyId>> {
    let at = binds.len() + 1;
    let why = binds.len() + 2;
    // The rows are locked in id order first, as the usage flusher locks
    // them, so that the two never deadlock.
    let sql = format!(
        "UPDATE api_keys SET revoked_at = ${at}, revoked_reason = ${why}
         WHERE id IN (
             SELECT id FROM api_keys
             WHERE {filter} AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ${at})
             ORDER BY id FOR NO KEY UPDATE)
           AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ${at})
         RETURNING id"
    );
    let mut query = sqlx::query_scalar::<_, KeyId>(&sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    let mut ids = query
        .bind(to_ms(now()))
        .bind(reason.as_str())
        .fetch_all(&mut **tx)
        .await?;
    ids.sort();
    Ok(ids)
}

/// A workspace's stored workflows and definition bytes (`workspace_totals`,
/// kept by triggers; zero before its first workflow).
async fn workspace_totals(tx: &mut Tx, workspace_id: &WorkspaceId) -> StoreResult<(u64, u64)> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT workflows, definition_bytes FROM workspace_totals WHERE workspace_id = $1",
    )
    .bind(workspace_id)
    .fetch_optional(&mut **tx)
    .await?;
    let (workflows, bytes) = row.unwrap_or((0, 0));
    Ok((
        u64::try_from(workflows).unwrap_or(0),
        u64::try_from(bytes).unwrap_or(0),
    ))
}

#[async_trait]
impl Store for PostgresStore {
    /// Fails when the database does not answer, and also while the event
    /// listener is disconnected (this process would not hear revocations
    /// made through others).
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        if !self.listener_connected() {
            return Err(StoreError::Database(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the PostgreSQL event listener is disconnected (reconnecting)",
            ))));
        }
        Ok(())
    }

    fn rate_counters(&self) -> Option<&dyn RateCounterStore> {
        Some(self)
    }

    async fn close(&self) {
        let _ = self.listener.shutdown.send(true);
        self.listener.connected.store(false, Ordering::Release);
        self.pool.close().await;
        self.listener.pool.close().await;
    }

    async fn setting(&self, name: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn setting_or_insert(&self, name: &str, value: &str) -> StoreResult<String> {
        // A conflicting insert waits for the other transaction and does
        // nothing: the row read next is the one committed first.
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        let stored: Option<String> =
            sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        stored.ok_or_else(|| StoreError::Corrupt(format!("the setting {name} vanished")))
    }

    async fn set_setting(&self, name: &str, value: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn events(&self) -> &EventBus {
        &self.events
    }

    fn pool_stats(&self) -> super::PoolStats {
        // The requests' pool (the listener's connection is apart).
        super::PoolStats::of(&self.pool)
    }

    async fn active_runs(&self) -> StoreResult<super::ActiveRuns> {
        // The partial claim index (status in queued, running) answers it.
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, COUNT(*) FROM runs WHERE status IN ('queued', 'running') GROUP BY status",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(super::active_runs_of(rows))
    }
}
