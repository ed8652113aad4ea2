//! Building and running the platform: bind, migrate, first start, serve
//! until a shutdown signal, then close the database cleanly.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::bootstrap::{first_start, prepare_setup, SetupLink, Welcome};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::data_dir_lock::DataDirLock;
use crate::state::AppState;
use crate::store::DatabaseConfig;

/// A built, bound, not yet serving platform.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    /// `--metrics-listen`, bound.
    metrics_listener: Option<TcpListener>,
    state: AppState,
    welcome: Option<Welcome>,
    setup_link: Option<SetupLink>,
    base_url: String,
    /// SQLite: this process's hold on the data directory, for its whole life.
    data_dir_lock: Option<DataDirLock>,
}

impl Application {
    /// Opens the store, binds the port (0 picks a free one) and performs the
    /// first start if the data directory is new.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config
            .check_metrics_listen()
            .map_err(|why| anyhow::anyhow!(why))?;
        let catalog = Catalog::load(config.catalog_file.as_deref())?;
        let database = config.database();
        // One data directory, one process: refused before anything is opened.
        let data_dir_lock = match &database {
            DatabaseConfig::Sqlite { data_dir } => Some(DataDirLock::acquire(data_dir)?),
            DatabaseConfig::Postgres(_) => None,
        };
        let store = crate::store::connect(&database).await?;
        // SQLite: the lock proves this is the only process on the data, so
        // every run still running belonged to one that died; it resumes now
        // instead of after its lease.
        if data_dir_lock.is_some() {
            crate::runs::service::requeue_orphans(store.as_ref()).await?;
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (--metrics-listen)"))?,
            ),
            None => None,
        };
        let local = listener.local_addr()?;
        let base_url = config.public_url.clone().unwrap_or_else(|| {
            let host = if local.ip().is_unspecified() {
                "127.0.0.1".to_owned()
            } else {
                local.ip().to_string()
            };
            format!("http://{host}:{}", local.port())
        });
        let state = AppState::new(store, catalog, config)?;
        crate::bootstrap::check_pepper(state.store(), state.hasher(), state.config()).await?;
        let welcome = first_start(state.store(), state.hasher(), state.config(), &base_url).await?;
        let setup_link = if welcome.is_none() {
            prepare_setup(state.store(), &base_url).await?
        } else {
            None
        };
        // The hourly maintenance, once before serving (so that it never races
        // with the first requests), then every hour while serving.
        hourly_maintenance(&state).await;
        Ok(Self {
            listener,
            metrics_listener,
            state,
            welcome,
            setup_link,
            base_url,
            data_dir_lock,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Where `/metrics` is served, with `--metrics-listen`.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The URL clients use.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The shared state (tests use it to set up users and roles).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The first-start welcome, if this start created the platform.
    pub fn take_welcome(&mut self) -> Option<Welcome> {
        self.welcome.take()
    }

    /// The setup page's one-time link, if the platform is not set up yet
    /// (no welcome, no preset password): print it where only the operator
    /// reads it.
    pub fn take_setup_link(&mut self) -> Option<SetupLink> {
        self.setup_link.take()
    }

    /// Serves until `shutdown` completes, finishes in-flight requests, then
    /// closes the database.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let app = crate::app::app(self.state.clone());
        // A drain period first, if configured: still serving, but `/readyz`
        // fails and every answer closes its connection.
        let shutdown = {
            let state = self.state.clone();
            async move {
                shutdown.await;
                let drain = state.config().shutdown_drain;
                if !drain.is_zero() {
                    state.start_draining();
                    tracing::info!(
                        drain_ms = drain.as_millis() as u64,
                        "draining: /readyz answers 503 and connections close after their answer"
                    );
                    tokio::time::sleep(drain).await;
                }
                // Event streams and /sync waits can last as long as a run:
                // they end now, or the shutdown would wait for every run
                // a client watches (clients resume: docs/runs.md).
                state.start_closing();
            }
        };
        let flusher = {
            let state = self.state.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(crate::usage::FLUSH_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut ticks: u64 = 0;
                loop {
                    tick.tick().await;
                    // Each second: derived wall-clock times follow a step
                    // of the system clock.
                    state.clock().resync();
                    let flushed = state.usage().flush(state.store()).await;
                    state.metrics().usage_flushed(&flushed);
                    // Hourly (the first run was before serving).
                    if ticks > 0 && ticks.is_multiple_of(3600) {
                        hourly_maintenance(&state).await;
                    }
                    ticks += 1;
                }
            })
        };
        // Cluster-wide limits: the sync with the other replicas.
        let limits_sync = self.state.limits().is_shared().then(|| {
            let state = self.state.clone();
            tokio::spawn(async move {
                let local = crate::cluster_limits::Local {
                    auth_failures: state.auth_failures(),
                    login: state.login_throttle(),
                    leak_reports: state.leak_reports().throttle(),
                    clock: state.clock(),
                };
                state.limits().run(local).await;
            })
        });
        // The metrics listener stops with the public one.
        let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics_server = self.metrics_listener.map(|listener| {
            let state = self.state.clone();
            tokio::spawn(crate::metrics::server::serve(listener, state, async move {
                let _ = metrics_stopped.await;
            }))
        });
        let timeouts = crate::connections::ConnectionTimeouts {
            header_read: self.state.config().header_read_timeout,
            idle: self.state.config().idle_timeout,
        };
        crate::connections::serve(
            self.listener,
            app,
            self.state.config().max_connections,
            timeouts,
            shutdown,
        )
        .await;
        flusher.abort();
        let _ = metrics_stop.send(());
        if let Some(server) = metrics_server {
            // A scrape in flight ends; a connection kept open does not hold the shutdown.
            if tokio::time::timeout(std::time::Duration::from_secs(1), server)
                .await
                .is_err()
            {
                tracing::debug!("the metrics listener did not stop in time");
            }
        }
        if let Some(sync) = limits_sync {
            sync.abort();
        }
        // The runs in flight stop at their next node and go back to the
        // queue, for another replica or the next start.
        crate::runs::service::shutdown(&self.state).await;
        // Leak reports already answered 202: revoke before the database goes.
        if !self
            .state
            .leak_reports()
            .wait_idle(LEAK_REPORTS_DRAIN)
            .await
        {
            tracing::warn!(
                reports = self.state.leak_reports().pending(),
                "shutting down with leak reports not handled yet: they must be sent again"
            );
        }
        // Whatever was counted after the last tick.
        self.state.usage().flush(self.state.store()).await;
        self.state.store().close().await;
        drop(self.data_dir_lock);
        tracing::info!("stopped");
        Ok(())
    }
}

/// Longest wait at shutdown for the leak reports already accepted.
const LEAK_REPORTS_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Prunes usage, addresses and dead keys past the retention, ended runs
/// past theirs, and ended sessions and old form nonces.
async fn hourly_maintenance(state: &AppState) {
    crate::usage::prune(state.store(), state.config().usage_retention_days).await;
    match purge_old_runs(state).await {
        Ok(0) => {}
        Ok(runs) => tracing::info!(runs, "deleted ended runs past the retention"),
        Err(err) => tracing::warn!(error = %err, "cannot delete ended runs past the retention"),
    }
    match purge_expired(state).await {
        Ok(0) => {}
        Ok(rows) => tracing::info!(rows, "purged ended sessions and used form nonces"),
        Err(err) => tracing::warn!(error = %err, "cannot purge ended sessions"),
    }
}

/// Runs deleted per statement by the retention: short transactions, so
/// that the purge never holds the database for long.
const RUN_PURGE_BATCH: u32 = 500;

/// Deletes ended runs that ended more than `--run-retention-days` ago, in
/// batches until none is left. Run hourly.
pub async fn purge_old_runs(state: &AppState) -> crate::store::StoreResult<u64> {
    let cutoff = time::OffsetDateTime::now_utc()
        - time::Duration::days(i64::from(state.config().run_retention_days));
    let mut total = 0;
    loop {
        let purged = state
            .store()
            .purge_ended_runs(cutoff, RUN_PURGE_BATCH)
            .await?;
        total += purged;
        if purged < u64::from(RUN_PURGE_BATCH) {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

/// Deletes dashboard sessions that ended (past their 12 hours, or idle
/// longer than the idle timeout) and form nonces used more than a day ago
/// (a nonce only needs to outlive the form page it was on). Run hourly.
pub async fn purge_expired(state: &AppState) -> crate::store::StoreResult<u64> {
    let now = time::OffsetDateTime::now_utc();
    let idle = time::Duration::try_from(state.config().session_idle_timeout)
        .unwrap_or(time::Duration::minutes(30));
    state
        .store()
        .purge_expired(now, now - idle, now - time::Duration::days(1))
        .await
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
///
/// The handlers are installed when this is called, not when the future is
/// first polled: a server that already answers `/readyz` must not die of
/// the signal's default action (no drain, a non-zero exit) because the
/// task that polls this had not run yet. Call it before serving.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{signal, SignalKind};
        let install = |kind: SignalKind, name: &'static str| match signal(kind) {
            Ok(stream) => Some(stream),
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for {name}");
                None
            }
        };
        (
            install(SignalKind::interrupt(), "Ctrl-C"),
            install(SignalKind::terminate(), "SIGTERM"),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |stream: Option<tokio::signal::unix::Signal>| async move {
                match stream {
                    Some(mut stream) => {
                        stream.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(interrupt) => tracing::info!("SIGINT received, shutting down"),
                () = wait(terminate) => tracing::info!("SIGTERM received, shutting down"),
            }
        }
        #[cfg(not(unix))]
        {
            if let Err(err) = tokio::signal::ctrl_c().await {
                tracing::warn!(error = %err, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
            tracing::info!("SIGINT received, shutting down");
        }
    }
}
