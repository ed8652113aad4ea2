//! Prometheus metrics of one server instance (`--metrics-listen`): the
//! counters live in [`crate::AppState`], not in a process-wide recorder, so
//! that several servers in one process (the tests) count apart.
//!
//! Every label value comes from a fixed set (route templates of our router,
//! methods, status classes, outcome codes, operation names): never a key, a
//! fragment of one, a path as sent, or anything else a client chose. What
//! the request path touches is pre-resolved (atomic counters, no lock, no
//! allocation); what other parts already count (the key cache, the event
//! listener, the connection pool, the runs) is read at scrape time.
//! `docs/ops/metrics.md` lists every metric.

pub mod histogram;
pub mod http;
pub mod server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::http::error::ApiError;
use crate::key_cache::KeyCache;
use crate::store::{RunStatus, Store};
use crate::usage::FlushReport;
use histogram::{AtomicHistogram, BATCH_BUCKETS, LAG_BUCKETS, LATENCY_BUCKETS};
pub use http::{RouteId, RouteIndex, RouteStats, RouteTable, UNMATCHED};

/// One fixed label.
type Label = [(&'static str, &'static str); 1];

/// How an API key's authentication ended (`noxus_auth_outcomes_total{code}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The key was verified.
    Ok,
    /// No key was sent.
    Missing,
    /// Malformed, bad checksum, unknown, or its owner gone.
    Invalid,
    /// The key was revoked.
    Revoked,
    /// The key expired.
    Expired,
    /// A verified key lacked the route's permission (also counted as `ok`).
    InsufficientPermissions,
    /// The key's limit, or the address's failed-authentication throttle.
    RateLimited,
    /// The database could not be asked (fail closed).
    ServiceUnavailable,
    /// Anything else (an internal error).
    Error,
}

impl AuthOutcome {
    /// Every outcome, in label order.
    pub const ALL: [Self; 9] = [
        Self::Ok,
        Self::Missing,
        Self::Invalid,
        Self::Revoked,
        Self::Expired,
        Self::InsufficientPermissions,
        Self::RateLimited,
        Self::ServiceUnavailable,
        Self::Error,
    ];

    /// The `code` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::InsufficientPermissions => "insufficient_permissions",
            Self::RateLimited => "rate_limited",
            Self::ServiceUnavailable => "service_unavailable",
            Self::Error => "error",
        }
    }

    /// The outcome of an authentication that ended with `err`.
    pub fn of_error(err: &ApiError) -> Self {
        match err.code() {
            "missing_api_key" => Self::Missing,
            "invalid_api_key" => Self::Invalid,
            "revoked_api_key" => Self::Revoked,
            "expired_api_key" => Self::Expired,
            "insufficient_permissions" => Self::InsufficientPermissions,
            "rate_limited" => Self::RateLimited,
            "service_unavailable" => Self::ServiceUnavailable,
            _ => Self::Error,
        }
    }
}

/// Store calls whose latency is measured (`operation` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOperation {
    /// The key lookup of an authentication that missed the cache.
    KeyForAuth,
    /// A usage flush's write.
    RecordUsage,
    /// The scrape's count of queued and running runs.
    ActiveRuns,
}

impl StoreOperation {
    const ALL: [Self; 3] = [Self::KeyForAuth, Self::RecordUsage, Self::ActiveRuns];

    fn as_str(self) -> &'static str {
        match self {
            Self::KeyForAuth => "key_for_auth",
            Self::RecordUsage => "record_usage",
            Self::ActiveRuns => "active_runs",
        }
    }
}

/// Run statuses counted when a worker of this server ends a run (a stop
/// through the API is not a worker's end).
const FINISHED: [RunStatus; 2] = [RunStatus::Completed, RunStatus::Failed];

/// The metrics of one server instance.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    routes: Arc<RouteTable>,
    auth: [Counter; AuthOutcome::ALL.len()],
    cache_hits: Counter,
    cache_misses: Counter,
    store_queries: [AtomicHistogram; StoreOperation::ALL.len()],
    flush_lag: AtomicHistogram,
    flush_batch: AtomicHistogram,
    flush_failures: Counter,
    last_flush: Gauge<f64, std::sync::atomic::AtomicU64>,
    runs_active: [Gauge; 2],
    runs_finished: [Counter; FINISHED.len()],
}

impl Metrics {
    /// The metrics, with the key cache and the store read at scrape time.
    pub fn new(store: Arc<dyn Store>, cache: Arc<KeyCache>) -> Self {
        let mut registry = Registry::default();
        let routes = Arc::new(RouteTable::default());
        registry.register_collector(Box::new(Arc::clone(&routes)));

        let auth_family = Family::<Label, Counter>::default();
        let auth =
            AuthOutcome::ALL.map(|o| auth_family.get_or_create(&[("code", o.as_str())]).clone());
        registry.register(
            "noxus_auth_outcomes",
            "API key authentications by outcome (insufficient_permissions: a verified key, also counted as ok, refused by the route).",
            auth_family,
        );

        let cache_hits = Counter::default();
        let cache_misses = Counter::default();
        registry.register(
            "noxus_key_cache_hits",
            "Key checks answered by the verified-key cache.",
            cache_hits.clone(),
        );
        registry.register(
            "noxus_key_cache_misses",
            "Key checks that looked the key up in the database.",
            cache_misses.clone(),
        );

        let store_family =
            Family::<Label, AtomicHistogram, fn() -> AtomicHistogram>::new_with_constructor(|| {
                AtomicHistogram::seconds(LATENCY_BUCKETS)
            });
        let store_queries = StoreOperation::ALL.map(|op| {
            store_family
                .get_or_create(&[("operation", op.as_str())])
                .clone()
        });
        registry.register(
            "noxus_store_query_duration_seconds",
            "Latency of store calls, by operation.",
            store_family,
        );

        let flush_lag = AtomicHistogram::seconds(LAG_BUCKETS);
        let flush_batch = AtomicHistogram::units(BATCH_BUCKETS);
        let flush_failures = Counter::default();
        let last_flush = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "noxus_usage_flush_lag_seconds",
            "Per usage flush that wrote something: age of the oldest use it wrote.",
            flush_lag.clone(),
        );
        registry.register(
            "noxus_usage_flush_batch_keys",
            "Per usage flush that wrote something: keys written.",
            flush_batch.clone(),
        );
        registry.register(
            "noxus_usage_flush_failures",
            "Usage flushes that failed (kept for the next one).",
            flush_failures.clone(),
        );
        registry.register(
            "noxus_usage_last_flush_timestamp_seconds",
            "Unix time of the last usage flush that succeeded or had nothing to write.",
            last_flush.clone(),
        );

        let active_family = Family::<Label, Gauge>::default();
        let runs_active = [RunStatus::Queued, RunStatus::Running].map(|s| {
            active_family
                .get_or_create(&[("status", s.as_str())])
                .clone()
        });
        registry.register(
            "noxus_runs",
            "Runs not ended, by status, in the whole database (read at scrape time).",
            active_family,
        );
        let finished_family = Family::<Label, Counter>::default();
        let runs_finished = FINISHED.map(|s| {
            finished_family
                .get_or_create(&[("status", s.as_str())])
                .clone()
        });
        registry.register(
            "noxus_runs_finished",
            "Runs that workers of this server ended, by status.",
            finished_family,
        );

        registry.register_collector(Box::new(ScrapeTime { store, cache }));
        Self {
            registry,
            routes,
            auth,
            cache_hits,
            cache_misses,
            store_queries,
            flush_lag,
            flush_batch,
            flush_failures,
            last_flush,
            runs_active,
            runs_finished,
        }
    }

    /// The counts of requests by route (the request layer's
    /// [`RouteIndex`] resolves them).
    pub fn routes(&self) -> &Arc<RouteTable> {
        &self.routes
    }

    /// Counts an authentication's outcome.
    pub fn auth_outcome(&self, outcome: AuthOutcome) {
        if let Some(i) = AuthOutcome::ALL.iter().position(|o| *o == outcome) {
            self.auth[i].inc();
        }
    }

    /// Counts a key check answered by the cache (`true`) or not.
    pub fn key_cache_lookup(&self, hit: bool) {
        if hit {
            self.cache_hits.inc();
        } else {
            self.cache_misses.inc();
        }
    }

    /// Notes how long a store call took.
    pub fn store_query(&self, operation: StoreOperation, elapsed: Duration) {
        let i = match operation {
            StoreOperation::KeyForAuth => 0,
            StoreOperation::RecordUsage => 1,
            StoreOperation::ActiveRuns => 2,
        };
        self.store_queries[i].observe_duration(elapsed);
    }

    /// Notes a usage flush.
    pub fn usage_flushed(&self, report: &FlushReport) {
        if report.keys > 0 {
            self.store_query(StoreOperation::RecordUsage, report.took);
            self.flush_batch.observe(report.keys as u64);
            self.flush_lag.observe_duration(report.lag);
        }
        if report.failed {
            self.flush_failures.inc();
        } else {
            let now = time::OffsetDateTime::now_utc();
            self.last_flush.set(now.unix_timestamp_nanos() as f64 / 1e9);
        }
    }

    /// Counts a run this server ended with `status`.
    pub fn run_finished(&self, status: RunStatus) {
        if let Some(i) = FINISHED.iter().position(|s| *s == status) {
            self.runs_finished[i].inc();
        }
    }

    /// The answers counted for `route` (a template), `method` and
    /// `status_class` (`2xx`...): for tests.
    pub fn requests(&self, route: &str, method: &str, status_class: &str) -> u64 {
        self.routes.requests(route, method, status_class)
    }

    /// The scrape: reads what is read at scrape time, then writes every
    /// metric in the OpenMetrics text format.
    pub async fn render(&self, store: &dyn Store) -> String {
        let started = Instant::now();
        match store.active_runs().await {
            Ok(runs) => {
                self.store_query(StoreOperation::ActiveRuns, started.elapsed());
                self.runs_active[0].set(i64::try_from(runs.queued).unwrap_or(i64::MAX));
                self.runs_active[1].set(i64::try_from(runs.running).unwrap_or(i64::MAX));
            }
            // The gauges keep their last values; the pool and the auth
            // outcomes tell that the database is unreachable.
            Err(err) => tracing::debug!(error = %err, "metrics: cannot count the runs"),
        }
        let mut text = String::with_capacity(16 * 1024);
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %err, "metrics: cannot encode");
        }
        text
    }
}

/// What other parts count themselves, read at scrape time.
#[derive(Debug)]
struct ScrapeTime {
    store: Arc<dyn Store>,
    cache: Arc<KeyCache>,
}

impl Collector for ScrapeTime {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64| {
            let metric = ConstCounter::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
        };
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64| {
            let metric = ConstGauge::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
        };
        counter(
            &mut encoder,
            "noxus_key_cache_invalidations",
            "Invalidations applied to the verified-key cache (store events about keys, users, workspaces; orders to forget all).",
            self.cache.invalidations(),
        )?;
        gauge(
            &mut encoder,
            "noxus_key_cache_entries",
            "Keys in the verified-key cache.",
            i64::try_from(self.cache.len()).unwrap_or(i64::MAX),
        )?;
        let events = self.store.events();
        counter(
            &mut encoder,
            "noxus_store_notifications_received",
            "Change notifications heard from other replicas (PostgreSQL LISTEN; 0 on SQLite).",
            events.notifications_heard(),
        )?;
        counter(
            &mut encoder,
            "noxus_store_listener_reconnects",
            "Times the PostgreSQL event listener connected again after losing its connection.",
            events.listener_reconnects(),
        )?;
        gauge(
            &mut encoder,
            "noxus_store_listener_deaf",
            "1 while changes made by other replicas can go unheard (listener down: the key cache is bypassed).",
            i64::from(events.is_deaf()),
        )?;
        let pool = self.store.pool_stats();
        {
            let mut family = encoder.encode_descriptor(
                "noxus_store_pool_connections",
                "Database connections of the pool, by state.",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (state, value) in [
                ("idle", pool.idle),
                ("in_use", pool.open.saturating_sub(pool.idle)),
            ] {
                ConstGauge::new(i64::from(value))
                    .encode(family.encode_family(&[("state", state)])?)?;
            }
        }
        gauge(
            &mut encoder,
            "noxus_store_pool_max_connections",
            "Most connections the pool opens.",
            i64::from(pool.max),
        )?;
        Ok(())
    }
}
