//! What every handler shares: the store, the key hasher, the password
//! pool, the verified-key cache, the catalog and the configuration.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::cluster_limits::ClusterLimits;
use crate::config::Config;
use crate::domain::keys::KeyHasher;
use crate::domain::passwords::{PasswordPool, QUEUE_WAIT};
use crate::key_cache::KeyCache;
use crate::rate_limit::{Gcra, LoginThrottle};
use crate::store::Store;
use crate::usage::UsageRecorder;

/// Cheap to clone: one `Arc`.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub(crate) struct Inner {
    store: Arc<dyn Store>,
    hasher: KeyHasher,
    passwords: PasswordPool,
    cache: Arc<KeyCache>,
    catalog: Catalog,
    rate_limit: Option<Gcra>,
    clock: Clock,
    usage: UsageRecorder,
    auth_failures: crate::rate_limit::AuthFailures,
    login_throttle: LoginThrottle,
    /// Leaked-key reports waiting to be handled, and their throttle.
    leak_reports: crate::leaks::LeakReports,
    limits: ClusterLimits,
    /// Set when a shutdown began: `/readyz` fails and every answer closes
    /// its connection, while requests are still served.
    draining: AtomicBool,
    /// Set when the server stops serving (after the drain): long-lived
    /// answers (event streams, `/sync` waits) end so that the shutdown
    /// does not wait for runs to finish.
    closing: tokio::sync::watch::Sender<bool>,
    /// Workflow runs: wake-ups between the request path, the workers and
    /// the event streams.
    runs: crate::runs::service::RunHub,
    /// The model endpoint `TextGenerationNode` calls, when configured.
    models: Option<crate::runs::openai::OpenAiCompatible>,
    /// Run callbacks: the sender's wake-up and the signer.
    callbacks: crate::runs::callbacks::CallbackHub,
    /// The open run event streams, woken by the store's events.
    streams: Arc<crate::runs::streams::Streams>,
    /// This instance's Prometheus metrics.
    metrics: crate::metrics::Metrics,
    config: Config,
}

impl AppState {
    /// Assembles the state, and starts the tasks that apply the store's
    /// events to the key cache and to the open event streams (so it must be
    /// called inside a Tokio runtime; the tasks end with the store). Fails on a Redis URL that cannot be
    /// used (it does not connect yet).
    pub fn new(store: Arc<dyn Store>, catalog: Catalog, config: Config) -> anyhow::Result<Self> {
        let limits = ClusterLimits::for_store(
            &store,
            config.redis_url.as_ref(),
            config.limits_sync_interval,
        )?;
        let cache = Arc::new(KeyCache::new(
            config.key_cache_ttl,
            config.key_cache_capacity,
            store.events(),
        ));
        let models = config
            .llm
            .as_ref()
            .map(|llm| {
                crate::runs::openai::OpenAiCompatible::new(
                    &llm.base_url,
                    llm.api_key.clone(),
                    llm.timeout,
                )
                .map_err(|why| anyhow::anyhow!("--llm-base-url: {why}"))
            })
            .transpose()?;
        let events = store.subscribe();
        tokio::spawn({
            let cache = Arc::clone(&cache);
            async move { cache.run_invalidation(events).await }
        });
        let streams = Arc::new(crate::runs::streams::Streams::new(config.event_streams));
        let (key_events, run_events) = (store.subscribe(), store.subscribe_runs());
        tokio::spawn({
            let streams = Arc::clone(&streams);
            async move { streams.run_dispatch(key_events, run_events).await }
        });
        let metrics = crate::metrics::Metrics::new(Arc::clone(&store), Arc::clone(&cache));
        let state = Self(Arc::new(Inner {
            hasher: KeyHasher::rotating(config.pepper.as_ref(), config.previous_pepper.as_ref()),
            passwords: PasswordPool::new(config.password_hash_concurrency, QUEUE_WAIT),
            cache,
            rate_limit: config.key_rate_limit.map(Gcra::new),
            clock: Clock::default(),
            usage: UsageRecorder::new(config.max_addresses_per_key),
            auth_failures: crate::rate_limit::AuthFailures::new(
                config.auth_failure_limit,
                crate::rate_limit::THROTTLE_CAPACITY,
            ),
            login_throttle: LoginThrottle::new(config.login_throttle),
            leak_reports: crate::leaks::LeakReports::new(
                crate::leaks::QUEUE_CAPACITY,
                config.leak_report_limit,
            ),
            limits,
            draining: AtomicBool::new(false),
            closing: tokio::sync::watch::Sender::new(false),
            runs: crate::runs::service::RunHub::default(),
            models,
            callbacks: crate::runs::callbacks::CallbackHub::new(&config)?,
            streams,
            metrics,
            store,
            catalog,
            config,
        }));
        crate::runs::service::start(&state);
        crate::runs::callbacks::start(&state);
        crate::leaks::start(&state);
        Ok(state)
    }

    /// The open run event streams (and `/sync` waits).
    pub fn streams(&self) -> &Arc<crate::runs::streams::Streams> {
        &self.0.streams
    }

    /// The runs' wake-ups.
    pub fn runs(&self) -> &crate::runs::service::RunHub {
        &self.0.runs
    }

    /// The run callbacks' sender and signer.
    pub fn callbacks(&self) -> &crate::runs::callbacks::CallbackHub {
        &self.0.callbacks
    }

    /// A handle that does not keep the state alive (for background tasks
    /// that end with it).
    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.0)
    }

    /// The state again, while anything else still holds it.
    pub(crate) fn upgrade(weak: &std::sync::Weak<Inner>) -> Option<Self> {
        weak.upgrade().map(Self)
    }

    /// The model endpoint runs call, if the operator configured one.
    pub fn models(&self) -> Option<&dyn crate::runs::executor::ModelProvider> {
        self.0
            .models
            .as_ref()
            .map(|m| m as &dyn crate::runs::executor::ModelProvider)
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        self.0.store.as_ref()
    }

    /// The store, shared.
    pub fn store_arc(&self) -> Arc<dyn Store> {
        Arc::clone(&self.0.store)
    }

    /// The key hasher.
    pub fn hasher(&self) -> &KeyHasher {
        &self.0.hasher
    }

    /// Where dashboard passwords are hashed and checked (argon2, off the
    /// async workers, a few at a time).
    pub fn passwords(&self) -> &PasswordPool {
        &self.0.passwords
    }

    /// The verified-key cache.
    pub fn cache(&self) -> &KeyCache {
        &self.0.cache
    }

    /// The per-key limit, if limiting is on.
    pub fn rate_limit(&self) -> Option<&Gcra> {
        self.0.rate_limit.as_ref()
    }

    /// The hot path's clock.
    pub fn clock(&self) -> &Clock {
        &self.0.clock
    }

    /// Key-use recorder.
    pub fn usage(&self) -> &UsageRecorder {
        &self.0.usage
    }

    /// Failed API authentications per address.
    pub fn auth_failures(&self) -> &crate::rate_limit::AuthFailures {
        &self.0.auth_failures
    }

    /// Failed-login throttle of the dashboard.
    pub fn login_throttle(&self) -> &LoginThrottle {
        &self.0.login_throttle
    }

    /// Leaked-key reports: their queue and their throttle.
    pub fn leak_reports(&self) -> &crate::leaks::LeakReports {
        &self.0.leak_reports
    }

    /// How the limits are shared with other replicas.
    pub fn limits(&self) -> &ClusterLimits {
        &self.0.limits
    }

    /// Notes that a shutdown began (see [`crate::Config::shutdown_drain`]).
    pub fn start_draining(&self) {
        self.0.draining.store(true, Ordering::Release);
    }

    /// Whether a shutdown began.
    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::Acquire)
    }

    /// The server stops serving: long-lived answers end now.
    pub fn start_closing(&self) {
        self.0.closing.send_replace(true);
    }

    /// Resolves once [`AppState::start_closing`] was called (at once if it was).
    pub fn closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closing = self.0.closing.subscribe();
        async move {
            // An error means the state is gone: closing too.
            let _ = closing.wait_for(|c| *c).await;
        }
    }

    /// Nodes, models and presets.
    pub fn catalog(&self) -> &Catalog {
        &self.0.catalog
    }

    /// This instance's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.0.metrics
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.0.config
    }
}
