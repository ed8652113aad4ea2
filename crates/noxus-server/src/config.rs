//! Server configuration. The CLI fills it from flags and `NOXUS_*` variables;
//! tests build it directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

pub use ipnet::IpNet;

use crate::domain::keys::PreviousPepper;
use crate::domain::passwords::PasswordPool;
use crate::rate_limit::{LoginThrottlePolicy, RateLimit};
use crate::store::{DatabaseConfig, KeyQuotas, PostgresOptions};

/// The defaults of every setting, in one place: [`Config::new`] and the
/// `noxus serve` flags (whose `--help` shows them) both take them from here.
pub mod defaults {
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

    /// `--listen`.
    pub const LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
    /// `--data-dir`.
    pub const DATA_DIR: &str = "./noxus-data";
    /// `--admin-email` with the welcome on.
    pub const ADMIN_EMAIL: &str = "admin@noxus.local";
    /// `--key-cache-ttl-ms`.
    pub const KEY_CACHE_TTL_MS: u64 = 1_000;
    /// Keys kept in the verified-key cache.
    pub const KEY_CACHE_CAPACITY: usize = 100_000;
    /// `--max-body-bytes`.
    pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
    /// `--rate-limit-per-key`.
    pub const RATE_LIMIT_PER_KEY: u32 = 100;
    /// `--rate-limit-burst`.
    pub const RATE_LIMIT_BURST: u32 = 200;
    /// `--usage-retention-days`.
    pub const USAGE_RETENTION_DAYS: u32 = 90;
    /// `--max-rate-limit-per-key` (the burst ceiling is twice it).
    pub const MAX_RATE_LIMIT_PER_KEY: u32 = 10_000;
    /// `--max-keys-per-user`.
    pub const MAX_KEYS_PER_USER: u32 = 100;
    /// `--max-keys-per-workspace`.
    pub const MAX_KEYS_PER_WORKSPACE: u32 = 1_000;
    /// `--session-idle-timeout-mins`.
    pub const SESSION_IDLE_TIMEOUT_MINS: u64 = 30;
    /// `--header-read-timeout-secs`.
    pub const HEADER_READ_TIMEOUT_SECS: u64 = 10;
    /// `--idle-timeout-secs`.
    pub const IDLE_TIMEOUT_SECS: u64 = 75;
    /// `--request-body-timeout-secs`.
    pub const REQUEST_BODY_TIMEOUT_SECS: u64 = 30;
    /// `--max-connections`.
    pub const MAX_CONNECTIONS: u64 = 10_000;
    /// `--max-addresses-per-key`.
    pub const MAX_ADDRESSES_PER_KEY: u64 = crate::usage::DEFAULT_MAX_ADDRESSES_PER_KEY as u64;
    /// `--max-event-streams-per-key`.
    pub const MAX_EVENT_STREAMS_PER_KEY: u64 =
        crate::runs::streams::DEFAULT_MAX_STREAMS_PER_KEY as u64;
    /// `--max-event-streams-per-workspace`.
    pub const MAX_EVENT_STREAMS_PER_WORKSPACE: u64 =
        crate::runs::streams::DEFAULT_MAX_STREAMS_PER_WORKSPACE as u64;
    /// `--max-workflows-per-workspace`.
    pub const MAX_WORKFLOWS_PER_WORKSPACE: u64 = 10_000;
    /// `--max-versions-per-workflow`.
    pub const MAX_VERSIONS_PER_WORKFLOW: u64 = 1_000;
    /// `--max-definition-bytes-per-workspace`.
    pub const MAX_DEFINITION_BYTES_PER_WORKSPACE: u64 = 256 * 1024 * 1024;
    /// `--database-max-connections`.
    pub const DATABASE_MAX_CONNECTIONS: u32 = 16;
    /// `--database-connect-timeout-ms`.
    pub const DATABASE_CONNECT_TIMEOUT_MS: u64 = 5_000;
    /// `--database-statement-timeout-ms`.
    pub const DATABASE_STATEMENT_TIMEOUT_MS: u64 = 10_000;
    /// How often replicas sync their rate-limit spending, in milliseconds.
    pub const LIMITS_SYNC_MS: u64 = 100;
    /// `--run-retention-days`.
    pub const RUN_RETENTION_DAYS: u32 = 30;
    /// `--shutdown-drain-ms`: no drain period.
    pub const SHUTDOWN_DRAIN_MS: u64 = 0;
    /// The wait before a callback's first retry (each next one is three
    /// times longer), in seconds.
    pub const CALLBACK_RETRY_BASE_SECS: u64 = 60;
}

/// An OpenAI-compatible chat-completions endpoint (`--llm-base-url`).
#[derive(Debug, Clone)]
pub struct LlmEndpoint {
    /// `{base_url}/chat/completions` is called, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …`; read from an environment
    /// variable, never from the command line (where `ps` would show it).
    pub api_key: Option<SecretString>,
    /// Longest wait for one answer.
    pub timeout: Duration,
}

/// How the platform runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where Prometheus metrics are served (`GET /metrics`), on a listener
    /// of their own; none by default. Never the public port:
    /// [`Config::check_metrics_listen`].
    pub metrics_listen: Option<SocketAddr>,
    /// Where the SQLite database lives (when `postgres` is not set).
    pub data_dir: PathBuf,
    /// Run on this PostgreSQL database instead of SQLite in `data_dir`.
    pub postgres: Option<PostgresOptions>,
    /// Redis for the replicas' shared rate-limit counters (else they live in
    /// the PostgreSQL database). May hold a password: a secret.
    pub redis_url: Option<SecretString>,
    /// How often replicas sync their rate-limit spending (with PostgreSQL).
    pub limits_sync_interval: Duration,
    /// On SIGTERM, how long to go on serving before closing the listener:
    /// meanwhile `/readyz` answers 503 (`draining`) and every answer
    /// carries `Connection: close`, so that a load balancer moves to the
    /// other replicas before any connection is closed under a request.
    pub shutdown_drain: Duration,
    /// Server-side secret mixed into key digests (HMAC-SHA-256), at least 32
    /// bytes. Its fingerprint is stored in the database: starting with another
    /// (or none) is refused, unless the stored one is `previous_pepper`.
    pub pepper: Option<SecretString>,
    /// The pepper before a rotation: keys made under it keep working and are
    /// re-hashed under `pepper` when next used.
    pub previous_pepper: Option<PreviousPepper>,
    /// A JSON file with `nodes`, `models` and `presets` replacing the defaults.
    pub catalog_file: Option<PathBuf>,
    /// The OpenAI-compatible endpoint `TextGenerationNode` calls; without
    /// it, such a node fails its run with a sentence.
    pub llm: Option<LlmEndpoint>,
    /// Print the welcome (login and first key) on the first start.
    pub welcome: bool,
    /// Email of the first owner.
    pub admin_email: String,
    /// Password of the first owner; random (and printed once) when absent.
    pub admin_password: Option<SecretString>,
    /// The URL people and clients use to reach this server, for the welcome text.
    pub public_url: Option<String>,
    /// How long a verified key is trusted without a database lookup.
    pub key_cache_ttl: Duration,
    /// Most keys kept in the cache.
    pub key_cache_capacity: usize,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Requests per key; `None` turns limiting off.
    pub key_rate_limit: Option<RateLimit>,
    /// Hourly usage, and key addresses last seen, older than this many days
    /// are deleted (checked hourly).
    pub usage_retention_days: u32,
    /// The highest rate limit anyone may give a key or a workspace.
    pub max_rate_limit_per_key: RateLimit,
    /// How many live keys a user may have in a workspace, and a workspace in all.
    pub key_quotas: KeyQuotas,
    /// A dashboard session unused this long ends (besides its 12-hour limit).
    pub session_idle_timeout: Duration,
    /// Time allowed for a request head (request line and headers): from the
    /// accept on a new connection, from the first byte of the next request on
    /// a kept-alive one. The connection is closed when it runs out.
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Longest wait for the next piece of a request body; past it the request
    /// is answered 408 and the connection closed.
    pub request_body_timeout: Duration,
    /// Most connections open at once (also capped by the file-descriptor
    /// limit); more are answered 503 and closed.
    pub max_connections: usize,
    /// Password hashes (argon2) computed at once; more wait up to a second,
    /// then get 503.
    pub password_hash_concurrency: usize,
    /// Reverse proxies whose `X-Forwarded-For` / `X-Forwarded-Proto` are
    /// believed; empty: none (the connection's peer is the client).
    pub trusted_proxies: Vec<IpNet>,
    /// How failed dashboard logins slow down.
    pub login_throttle: LoginThrottlePolicy,
    /// Failed API authentications (missing, malformed or unknown keys) an
    /// address may make before it is answered 429.
    pub auth_failure_limit: RateLimit,
    /// Leak reports (`POST /v1/keys/leaks`, no key needed) an address may
    /// send before it is answered 429.
    pub leak_report_limit: RateLimit,
    /// Addresses remembered per key (IPv6 per /64); beyond that the least
    /// recently seen is forgotten.
    pub max_addresses_per_key: usize,
    /// Run event streams (`GET /v1/runs/{id}/events`) one key, and one
    /// workspace, may hold open at once in this process; more are 429.
    pub event_streams: crate::runs::streams::StreamLimits,
    /// Workflows a workspace may hold.
    pub max_workflows_per_workspace: u64,
    /// Versions a workflow may hold.
    pub max_versions_per_workflow: u64,
    /// Bytes of stored definitions (workflows and their versions, as JSON)
    /// a workspace may hold.
    pub max_definition_bytes_per_workspace: u64,
    /// Runs a workspace may have queued or running, and bytes its runs
    /// may hold.
    pub run_quotas: crate::store::RunQuotas,
    /// Ended runs older than this many days are deleted (checked hourly).
    pub run_retention_days: u32,
    /// Let run callbacks go to loopback addresses (127.0.0.0/8, ::1): for
    /// tests and local development. Every other non-public address stays
    /// refused.
    pub allow_loopback_callbacks: bool,
    /// The wait before a failed callback is tried again the first time;
    /// each next wait is three times longer (with ±20 % jitter). Tests
    /// shorten it; not a flag.
    pub callback_retry_base: Duration,
}

impl Config {
    /// Whether the public URL is HTTPS (answers then carry HSTS).
    pub fn serves_https(&self) -> bool {
        self.public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
    }

    /// The database this configuration runs on.
    pub fn database(&self) -> DatabaseConfig {
        match &self.postgres {
            Some(options) => DatabaseConfig::Postgres(options.clone()),
            None => DatabaseConfig::Sqlite {
                data_dir: self.data_dir.clone(),
            },
        }
    }

    /// Refuses a metrics address that is (or overlaps) the public one:
    /// metrics are for the operator's network only.
    pub fn check_metrics_listen(&self) -> Result<(), String> {
        check_metrics_listen(self.listen, self.metrics_listen)
    }

    /// Defaults for a data directory: listen on 127.0.0.1:8080.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: defaults::LISTEN,
            metrics_listen: None,
            data_dir: data_dir.into(),
            postgres: None,
            redis_url: None,
            limits_sync_interval: Duration::from_millis(defaults::LIMITS_SYNC_MS),
            shutdown_drain: Duration::from_millis(defaults::SHUTDOWN_DRAIN_MS),
            pepper: None,
            previous_pepper: None,
            catalog_file: None,
            llm: None,
            welcome: true,
            admin_email: defaults::ADMIN_EMAIL.to_owned(),
            admin_password: None,
            public_url: None,
            key_cache_ttl: Duration::from_millis(defaults::KEY_CACHE_TTL_MS),
            key_cache_capacity: defaults::KEY_CACHE_CAPACITY,
            max_body_bytes: defaults::MAX_BODY_BYTES,
            key_rate_limit: Some(RateLimit {
                per_second: defaults::RATE_LIMIT_PER_KEY,
                burst: defaults::RATE_LIMIT_BURST,
            }),
            usage_retention_days: defaults::USAGE_RETENTION_DAYS,
            max_rate_limit_per_key: RateLimit {
                per_second: defaults::MAX_RATE_LIMIT_PER_KEY,
                burst: defaults::MAX_RATE_LIMIT_PER_KEY * 2,
            },
            key_quotas: KeyQuotas {
                per_user: defaults::MAX_KEYS_PER_USER,
                per_workspace: defaults::MAX_KEYS_PER_WORKSPACE,
            },
            session_idle_timeout: Duration::from_secs(defaults::SESSION_IDLE_TIMEOUT_MINS * 60),
            header_read_timeout: Duration::from_secs(defaults::HEADER_READ_TIMEOUT_SECS),
            idle_timeout: Duration::from_secs(defaults::IDLE_TIMEOUT_SECS),
            request_body_timeout: Duration::from_secs(defaults::REQUEST_BODY_TIMEOUT_SECS),
            max_connections: defaults::MAX_CONNECTIONS as usize,
            password_hash_concurrency: PasswordPool::default_concurrency(),
            trusted_proxies: Vec::new(),
            login_throttle: LoginThrottlePolicy::default(),
            auth_failure_limit: crate::rate_limit::DEFAULT_AUTH_FAILURE_LIMIT,
            leak_report_limit: crate::rate_limit::DEFAULT_LEAK_REPORT_LIMIT,
            max_addresses_per_key: crate::usage::DEFAULT_MAX_ADDRESSES_PER_KEY,
            event_streams: crate::runs::streams::StreamLimits::default(),
            max_workflows_per_workspace: defaults::MAX_WORKFLOWS_PER_WORKSPACE,
            max_versions_per_workflow: defaults::MAX_VERSIONS_PER_WORKFLOW,
            max_definition_bytes_per_workspace: defaults::MAX_DEFINITION_BYTES_PER_WORKSPACE,
            run_quotas: crate::store::RunQuotas::default(),
            run_retention_days: defaults::RUN_RETENTION_DAYS,
            allow_loopback_callbacks: false,
            callback_retry_base: Duration::from_secs(defaults::CALLBACK_RETRY_BASE_SECS),
        }
    }
}

/// Refuses a metrics address (`--metrics-listen`) that is, or overlaps,
/// the public one (`--listen`): the same port on the same address or on
/// the unspecified address (port 0 picks a port of its own, so it never
/// is the same).
pub fn check_metrics_listen(listen: SocketAddr, metrics: Option<SocketAddr>) -> Result<(), String> {
    let Some(metrics) = metrics else {
        return Ok(());
    };
    let same_port = metrics.port() != 0 && metrics.port() == listen.port();
    let same_ip = metrics.ip() == listen.ip()
        || metrics.ip().is_unspecified()
        || listen.ip().is_unspecified();
    if same_port && same_ip {
        return Err(format!(
            "--metrics-listen ({metrics}) must not be the public address (--listen {listen}): metrics are served on a port of their own, never on the public one"
        ));
    }
    Ok(())
}
