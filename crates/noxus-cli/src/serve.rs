//! `noxus serve`: configuration from flags and `NOXUS_*` variables, logs
//! on stderr, the first-start welcome on stdout, graceful shutdown.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use noxus_server::config::{defaults, LlmEndpoint};
use noxus_server::{shutdown_signal, Application, Config};
use secrecy::SecretString;

use crate::exit::Failure;

/// Options of `noxus serve`. Each flag can also be set by the variable named
/// in its help; flags win.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on (port 0 picks a free one).
    #[arg(long, env = "NOXUS_LISTEN", default_value_t = defaults::LISTEN)]
    listen: SocketAddr,

    /// Address and port of a second listener that serves Prometheus
    /// metrics (`GET /metrics`), e.g. 127.0.0.1:9464. Off by default. Never
    /// the --listen address: keep it where only the monitoring reaches.
    #[arg(long, env = "NOXUS_METRICS_LISTEN", value_name = "ADDRESS")]
    metrics_listen: Option<SocketAddr>,

    /// Directory of the SQLite database; created if missing. Unused with
    /// --database-url.
    #[arg(long, env = "NOXUS_DATA_DIR", default_value = defaults::DATA_DIR)]
    data_dir: PathBuf,

    #[command(flatten)]
    database: crate::database::DatabaseArgs,

    /// Redis for the rate-limit counters shared by the replicas
    /// (redis://[:password@]host:6379/db). Without it they live in the
    /// PostgreSQL database; unused on SQLite. Never printed.
    #[arg(long, env = "NOXUS_REDIS_URL", hide_env_values = true, value_name = "URL", value_parser = crate::database::secret_url)]
    redis_url: Option<crate::database::DatabaseUrl>,

    /// Milliseconds between two syncs of the replicas' rate-limit spending
    /// (with --database-url): a cluster may admit what its other replicas
    /// admit in this time above a limit.
    #[arg(long, env = "NOXUS_LIMITS_SYNC_MS", default_value_t = defaults::LIMITS_SYNC_MS, value_parser = clap::value_parser!(u64).range(10..=10_000))]
    limits_sync_ms: u64,

    /// On SIGTERM or Ctrl-C, milliseconds to go on serving before the
    /// shutdown: /readyz answers 503 and every answer closes its connection,
    /// so that a load balancer moves to the other replicas first. Set it
    /// above the load balancer's health-check interval times its fall count.
    #[arg(long, env = "NOXUS_SHUTDOWN_DRAIN_MS", default_value_t = defaults::SHUTDOWN_DRAIN_MS, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    shutdown_drain_ms: u64,

    /// JSON file with `nodes`, `models` and/or `presets` replacing the built-in catalog.
    #[arg(long, env = "NOXUS_CATALOG")]
    catalog: Option<PathBuf>,

    /// OpenAI-compatible endpoint that TextGenerationNode calls
    /// (`{URL}/chat/completions`), e.g. https://api.openai.com/v1 or a local
    /// vLLM/Ollama. Without it, such nodes fail their run with a sentence.
    #[arg(long, env = "NOXUS_LLM_BASE_URL", value_name = "URL")]
    llm_base_url: Option<String>,

    /// Name of the environment variable holding the endpoint's key (sent as
    /// `Authorization: Bearer`). The key itself is never a command-line
    /// argument, which other users of the machine could read.
    #[arg(
        long,
        env = "NOXUS_LLM_API_KEY_ENV",
        default_value = "NOXUS_LLM_API_KEY",
        value_name = "VARIABLE"
    )]
    llm_api_key_env: String,

    /// Longest wait for one answer of the model endpoint, in seconds.
    #[arg(long, env = "NOXUS_LLM_TIMEOUT_SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    llm_timeout_secs: u64,

    /// Do not create or print a first API key and password on the first start
    /// (for production). The first owner then gets the password in
    /// NOXUS_ADMIN_PASSWORD or, without it, is created on the one-time /setup page.
    #[arg(long, env = "NOXUS_NO_WELCOME")]
    no_welcome: bool,

    /// Email of the first owner, created on the first start. Required with
    /// --no-welcome; otherwise admin@noxus.local.
    #[arg(long, env = "NOXUS_ADMIN_EMAIL")]
    admin_email: Option<String>,

    /// The URL clients use to reach this server, if not http://<listen address>.
    #[arg(long, env = "NOXUS_PUBLIC_URL")]
    public_url: Option<String>,

    /// How long, in milliseconds, a verified key is trusted without a
    /// database lookup (changes made through this process apply at once).
    #[arg(long, env = "NOXUS_KEY_CACHE_TTL_MS", default_value_t = defaults::KEY_CACHE_TTL_MS)]
    key_cache_ttl_ms: u64,

    /// Requests per second allowed per API key (0 turns limiting off).
    #[arg(long, env = "NOXUS_RATE_LIMIT_PER_KEY", default_value_t = defaults::RATE_LIMIT_PER_KEY)]
    rate_limit_per_key: u32,

    /// Requests per key allowed at once, above the sustained rate.
    #[arg(long, env = "NOXUS_RATE_LIMIT_BURST", default_value_t = defaults::RATE_LIMIT_BURST)]
    rate_limit_burst: u32,

    /// Days of hourly usage to keep; older hours, and key addresses not
    /// seen since, are deleted.
    #[arg(long, env = "NOXUS_USAGE_RETENTION_DAYS", default_value_t = defaults::USAGE_RETENTION_DAYS, value_parser = clap::value_parser!(u32).range(1..=3650))]
    usage_retention_days: u32,

    /// Addresses remembered per API key (IPv6 counted per /64); beyond that
    /// the least recently seen is forgotten.
    #[arg(long, env = "NOXUS_MAX_ADDRESSES_PER_KEY", default_value_t = defaults::MAX_ADDRESSES_PER_KEY, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_addresses_per_key: u64,

    /// Run event streams (`GET /v1/runs/{id}/events`) one API key may hold
    /// open at once on this server (429 above it).
    #[arg(long, env = "NOXUS_MAX_EVENT_STREAMS_PER_KEY", default_value_t = defaults::MAX_EVENT_STREAMS_PER_KEY, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_event_streams_per_key: u64,

    /// Run event streams one workspace (all its keys) may hold open at once
    /// on this server (429 above it).
    #[arg(long, env = "NOXUS_MAX_EVENT_STREAMS_PER_WORKSPACE", default_value_t = defaults::MAX_EVENT_STREAMS_PER_WORKSPACE, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_event_streams_per_workspace: u64,

    /// Workflows one workspace may hold (409 above it).
    #[arg(long, env = "NOXUS_MAX_WORKFLOWS_PER_WORKSPACE", default_value_t = defaults::MAX_WORKFLOWS_PER_WORKSPACE, value_parser = clap::value_parser!(u64).range(1..))]
    max_workflows_per_workspace: u64,

    /// Versions one workflow may hold (409 above it).
    #[arg(long, env = "NOXUS_MAX_VERSIONS_PER_WORKFLOW", default_value_t = defaults::MAX_VERSIONS_PER_WORKFLOW, value_parser = clap::value_parser!(u64).range(1..))]
    max_versions_per_workflow: u64,

    /// Bytes of stored workflow and version definitions one workspace may
    /// hold (409 above it).
    #[arg(long, env = "NOXUS_MAX_DEFINITION_BYTES_PER_WORKSPACE", default_value_t = defaults::MAX_DEFINITION_BYTES_PER_WORKSPACE, value_parser = clap::value_parser!(u64).range(1..))]
    max_definition_bytes_per_workspace: u64,

    /// Runs one workspace may have queued or running at once (409 above it).
    #[arg(long, env = "NOXUS_MAX_ACTIVE_RUNS_PER_WORKSPACE", default_value_t = noxus_server::store::DEFAULT_MAX_ACTIVE_RUNS_PER_WORKSPACE, value_parser = clap::value_parser!(u64).range(1..))]
    max_active_runs_per_workspace: u64,

    /// Bytes the runs of one workspace may hold: definitions, inputs,
    /// outputs and every node's input and output (409 on a new run above it).
    #[arg(long, env = "NOXUS_MAX_RUN_BYTES_PER_WORKSPACE", default_value_t = noxus_server::store::DEFAULT_MAX_RUN_BYTES_PER_WORKSPACE, value_parser = clap::value_parser!(u64).range(1..))]
    max_run_bytes_per_workspace: u64,

    /// Run callbacks one workspace may have waiting: deliveries not yet
    /// made, and runs under way with a callback_url (409 on a new run with
    /// a callback_url above it).
    #[arg(long, env = "NOXUS_MAX_WAITING_CALLBACKS_PER_WORKSPACE", default_value_t = noxus_server::store::DEFAULT_MAX_WAITING_CALLBACKS_PER_WORKSPACE, value_parser = clap::value_parser!(u64).range(1..))]
    max_waiting_callbacks_per_workspace: u64,

    /// Ended runs (completed, failed, stopped) older than this many days
    /// are deleted with their events and node data (checked hourly).
    #[arg(long, env = "NOXUS_RUN_RETENTION_DAYS", default_value_t = defaults::RUN_RETENTION_DAYS, value_parser = clap::value_parser!(u32).range(1..=3650))]
    run_retention_days: u32,

    /// Live API keys one user may have in one workspace (409 above it).
    #[arg(long, env = "NOXUS_MAX_KEYS_PER_USER", default_value_t = defaults::MAX_KEYS_PER_USER, value_parser = clap::value_parser!(u32).range(1..))]
    max_keys_per_user: u32,

    /// Live API keys one workspace may have (409 above it).
    #[arg(long, env = "NOXUS_MAX_KEYS_PER_WORKSPACE", default_value_t = defaults::MAX_KEYS_PER_WORKSPACE, value_parser = clap::value_parser!(u32).range(1..))]
    max_keys_per_workspace: u32,

    /// The highest rate limit (requests per second; bursts up to twice
    /// that) anyone may give a key or a workspace.
    #[arg(long, env = "NOXUS_MAX_RATE_LIMIT_PER_KEY", default_value_t = defaults::MAX_RATE_LIMIT_PER_KEY, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_rate_limit_per_key: u32,

    /// Minutes after which an unused dashboard session ends (sessions also
    /// end 12 hours after login).
    #[arg(long, env = "NOXUS_SESSION_IDLE_TIMEOUT_MINS", default_value_t = defaults::SESSION_IDLE_TIMEOUT_MINS, value_parser = clap::value_parser!(u64).range(1..=720))]
    session_idle_timeout_mins: u64,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "NOXUS_MAX_BODY_BYTES", default_value_t = defaults::MAX_BODY_BYTES)]
    max_body_bytes: usize,

    /// Seconds a client has to send a request's line and headers (from the
    /// connection's start, or from the first byte of a later request); then
    /// the connection is closed.
    #[arg(long, env = "NOXUS_HEADER_READ_TIMEOUT_SECS", default_value_t = defaults::HEADER_READ_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_read_timeout_secs: u64,

    /// Seconds a kept-alive connection may wait for its next request. Keep it
    /// above the idle timeout of a reverse proxy in front.
    #[arg(long, env = "NOXUS_IDLE_TIMEOUT_SECS", default_value_t = defaults::IDLE_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=3600))]
    idle_timeout_secs: u64,

    /// Seconds to wait for the next piece of a request body; then 408 and the
    /// connection is closed.
    #[arg(long, env = "NOXUS_REQUEST_BODY_TIMEOUT_SECS", default_value_t = defaults::REQUEST_BODY_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..=3600))]
    request_body_timeout_secs: u64,

    /// Most connections open at once; more are answered 503. Never more than
    /// the file-descriptor limit (ulimit -n) minus 128.
    #[arg(long, env = "NOXUS_MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    max_connections: u64,

    /// Dashboard password hashes (argon2) computed at once; a login that
    /// waits more than a second for one gets 503. Default: half the CPUs.
    #[arg(long, env = "NOXUS_PASSWORD_HASH_CONCURRENCY", value_parser = clap::value_parser!(u64).range(1..=1024))]
    password_hash_concurrency: Option<u64>,

    /// A reverse proxy (IP address or CIDR block, e.g. 10.0.0.0/8) whose
    /// X-Forwarded-For and X-Forwarded-Proto headers are believed. Repeat the
    /// flag, or separate values with commas in the variable. Without it the
    /// connection's peer is the client.
    #[arg(long = "trusted-proxy", env = "NOXUS_TRUSTED_PROXIES", value_name = "CIDR_OR_IP", value_delimiter = ',', value_parser = noxus_server::client_addr::parse_trusted_proxy)]
    trusted_proxies: Vec<noxus_server::config::IpNet>,

    /// Let run callbacks (callback_url) go to loopback addresses
    /// (127.0.0.0/8, ::1, e.g. http://localhost:9000/hook): for tests and
    /// local development. Private, link-local and other non-public
    /// addresses stay refused.
    #[arg(long, env = "NOXUS_ALLOW_LOOPBACK_CALLBACKS")]
    allow_loopback_callbacks: bool,

    /// Format of the log on standard error: `text` for people, `json` for a
    /// log pipeline (one object per line: time, level, target, message and
    /// the line's fields). NOXUS_LOG chooses what is logged (default info).
    #[arg(long, env = "NOXUS_LOG_FORMAT", value_enum, default_value_t = LogFormatArg::Text)]
    log_format: LogFormatArg,

    /// One `noxus::access` line per request (request id, method, route
    /// template, status, latency, key id, trace id): `on` or `off`.
    #[arg(long, env = "NOXUS_ACCESS_LOG", value_enum, default_value_t = Switch::On)]
    access_log: Switch,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

/// An option that is `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Switch {
    On,
    Off,
}

/// The endpoint as logged: without any user name or password in it.
fn shown_endpoint(url: &str) -> String {
    noxus_server::runs::openai::OpenAiCompatible::new(url, None, Duration::from_secs(1))
        .map(|endpoint| endpoint.base_url())
        .unwrap_or_else(|_| "(unusable URL)".to_owned())
}

fn secret_env(name: &str) -> Option<SecretString> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map(SecretString::from)
}

/// Runs the platform until SIGINT or SIGTERM.
pub fn run(mut args: ServeArgs) -> Result<(), Failure> {
    let admin_email = args
        .admin_email
        .take()
        .map(|email| email.trim().to_owned())
        .filter(|email| !email.is_empty());
    // Production must not get the predictable default owner login.
    let admin_email = match (admin_email, args.no_welcome) {
        (Some(email), _) => email,
        (None, false) => defaults::ADMIN_EMAIL.to_owned(),
        (None, true) => {
            return Err(Failure::config(anyhow::anyhow!(
                "--no-welcome needs --admin-email (or NOXUS_ADMIN_EMAIL): choose the first owner's login instead of the predictable admin@noxus.local"
            )))
        }
    };
    noxus_server::config::check_metrics_listen(args.listen, args.metrics_listen)
        .map_err(|why| Failure::config(anyhow::anyhow!(why)))?;
    let postgres = args.database.postgres()?;
    if let Some(url) = args.redis_url.as_ref().filter(|u| !u.is_empty()) {
        if !url.has_scheme(&["redis://"]) {
            return Err(Failure::config(anyhow::anyhow!(
                "--redis-url (NOXUS_REDIS_URL) must be a Redis URL starting with redis://, e.g. redis://:PASSWORD@cache.internal:6379/0"
            )));
        }
        if postgres.is_none() {
            return Err(Failure::config(anyhow::anyhow!(
                "--redis-url shares rate limits between replicas, which share a PostgreSQL database (--database-url); a SQLite data directory serves one process, whose limits need no sharing"
            )));
        }
    }
    let llm = llm_endpoint(&args)?;
    serve(args, admin_email, postgres, llm).map_err(Failure::from)
}

/// The model endpoint of `--llm-base-url`, checked before anything starts.
fn llm_endpoint(args: &ServeArgs) -> Result<Option<LlmEndpoint>, Failure> {
    let Some(base_url) = args
        .llm_base_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
    else {
        return Ok(None);
    };
    let endpoint = LlmEndpoint {
        base_url: base_url.to_owned(),
        api_key: secret_env(&args.llm_api_key_env),
        timeout: Duration::from_secs(args.llm_timeout_secs),
    };
    // The same check the server makes when it starts, but answered as a
    // configuration mistake (exit code 2) before anything is opened.
    noxus_server::runs::openai::OpenAiCompatible::new(&endpoint.base_url, None, endpoint.timeout)
        .map_err(|why| {
        Failure::config(anyhow::anyhow!(
            "--llm-base-url (NOXUS_LLM_BASE_URL): {why}"
        ))
    })?;
    Ok(Some(endpoint))
}

fn serve(
    args: ServeArgs,
    admin_email: String,
    postgres: Option<noxus_server::store::PostgresOptions>,
    llm: Option<LlmEndpoint>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let log_settings = noxus_server::logging::LogSettings {
        format: match args.log_format {
            LogFormatArg::Text => noxus_server::logging::LogFormat::Text,
            LogFormatArg::Json => noxus_server::logging::LogFormat::Json,
        },
        access_log: args.access_log == Switch::On,
        directives: std::env::var("NOXUS_LOG").ok(),
        ansi: std::io::stderr().is_terminal(),
    };
    let mut traces = crate::otel::TraceExport::from_env(runtime.handle())?;
    let log_guard = noxus_server::logging::init(&log_settings, traces.take_layer())?;
    traces.announce();

    let mut config = Config::new(args.data_dir);
    config.postgres = postgres;
    config.redis_url = args
        .redis_url
        .filter(|u| !u.is_empty())
        .map(crate::database::DatabaseUrl::into_secret);
    config.limits_sync_interval = Duration::from_millis(args.limits_sync_ms);
    config.shutdown_drain = Duration::from_millis(args.shutdown_drain_ms);
    config.listen = args.listen;
    config.metrics_listen = args.metrics_listen;
    config.catalog_file = args.catalog;
    if let Some(llm) = &llm {
        match &llm.api_key {
            Some(_) => tracing::info!(
                endpoint = %shown_endpoint(&llm.base_url),
                key_from = %args.llm_api_key_env,
                "text generation calls the model endpoint"
            ),
            None => tracing::warn!(
                endpoint = %shown_endpoint(&llm.base_url),
                "text generation calls the model endpoint without a key: {} is not set",
                args.llm_api_key_env
            ),
        }
    }
    config.llm = llm;
    config.welcome = !args.no_welcome;
    config.admin_email = admin_email;
    config.admin_password = secret_env("NOXUS_ADMIN_PASSWORD");
    config.pepper = secret_env("NOXUS_KEY_PEPPER");
    config.previous_pepper = secret_env("NOXUS_KEY_PEPPER_PREVIOUS").map(|previous| {
        use secrecy::ExposeSecret as _;
        if previous.expose_secret() == "none" {
            noxus_server::domain::keys::PreviousPepper::None
        } else {
            noxus_server::domain::keys::PreviousPepper::Pepper(previous)
        }
    });
    config.public_url = args.public_url.map(|u| u.trim_end_matches('/').to_owned());
    config.key_cache_ttl = Duration::from_millis(args.key_cache_ttl_ms);
    config.max_body_bytes = args.max_body_bytes;
    config.usage_retention_days = args.usage_retention_days;
    config.header_read_timeout = Duration::from_secs(args.header_read_timeout_secs);
    config.idle_timeout = Duration::from_secs(args.idle_timeout_secs);
    config.request_body_timeout = Duration::from_secs(args.request_body_timeout_secs);
    config.max_connections = usize::try_from(args.max_connections).unwrap_or(usize::MAX);
    config.trusted_proxies = args.trusted_proxies;
    config.allow_loopback_callbacks = args.allow_loopback_callbacks;
    if let Some(slots) = args.password_hash_concurrency {
        config.password_hash_concurrency = usize::try_from(slots).unwrap_or(1);
    }
    config.max_addresses_per_key =
        usize::try_from(args.max_addresses_per_key).unwrap_or(usize::MAX);
    config.event_streams = noxus_server::runs::streams::StreamLimits {
        per_key: usize::try_from(args.max_event_streams_per_key).unwrap_or(usize::MAX),
        per_workspace: usize::try_from(args.max_event_streams_per_workspace).unwrap_or(usize::MAX),
    };
    config.max_workflows_per_workspace = args.max_workflows_per_workspace;
    config.max_versions_per_workflow = args.max_versions_per_workflow;
    config.max_definition_bytes_per_workspace = args.max_definition_bytes_per_workspace;
    config.run_quotas = noxus_server::store::RunQuotas {
        active_runs_per_workspace: args.max_active_runs_per_workspace,
        run_bytes_per_workspace: args.max_run_bytes_per_workspace,
        waiting_callbacks_per_workspace: args.max_waiting_callbacks_per_workspace,
    };
    config.run_retention_days = args.run_retention_days;
    config.key_quotas = noxus_server::store::KeyQuotas {
        per_user: args.max_keys_per_user,
        per_workspace: args.max_keys_per_workspace,
    };
    config.max_rate_limit_per_key = noxus_server::rate_limit::RateLimit {
        per_second: args.max_rate_limit_per_key,
        burst: args.max_rate_limit_per_key.saturating_mul(2),
    };
    config.session_idle_timeout = Duration::from_secs(args.session_idle_timeout_mins * 60);
    config.key_rate_limit =
        (args.rate_limit_per_key > 0).then_some(noxus_server::rate_limit::RateLimit {
            per_second: args.rate_limit_per_key,
            burst: args.rate_limit_burst.max(1),
        });

    let served = runtime.block_on(async move {
        // Before anything is served: a SIGTERM from the moment `/readyz`
        // answers must drain and exit 0, not kill the process.
        let stop = shutdown_signal();
        let mut app = Application::build(config).await?;
        if let Some(welcome) = app.take_welcome() {
            // stdout, not the log: the key must never reach log files.
            println!("{welcome}");
        }
        if let Some(link) = app.take_setup_link() {
            use secrecy::ExposeSecret as _;
            // stdout, not the log: whoever holds this link creates the first owner.
            println!(
                "Noxus has no organization yet. Open this link to create it and its first owner\n(it works once; a restart makes a new one):\n\n  {}\n",
                link.0.expose_secret()
            );
        }
        tracing::info!(url = %app.base_url(), "listening");
        if let Some(addr) = app.metrics_addr() {
            tracing::info!(url = %format!("http://{addr}/metrics"), "serving metrics");
        }
        app.run_until_stopped(stop).await
    });
    // The spans still queued are sent while the runtime still runs, then
    // the log's last lines are written.
    traces.shutdown();
    drop(runtime);
    drop(log_guard);
    served
}
