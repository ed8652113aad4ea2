//! Rate limits and throttles that hold across replicas.
//!
//! Every limit is decided in the process, from local state, as in
//! [`crate::rate_limit`]: no request waits for the network. What makes the
//! limits cluster-wide is a background task that, every
//! [`Config::limits_sync_interval`](crate::Config::limits_sync_interval)
//! (100 ms by default), adds what this replica spent on each active scope
//! (a key, an address's failed authentications, a login counter) to a
//! shared counter and reads back what every replica spent, and charges
//! what the others spent to the local state. Kong's advanced rate limiting
//! calls the interval `sync_rate`.
//!
//! - **Where the shared counters live**: in Redis when `--redis-url` is
//!   given, else in the PostgreSQL database (an unlogged table). A SQLite
//!   data directory serves one process, whose limits are the cluster's.
//! - **The counters** count spending per scope and one-second window of the
//!   wall clock (`<scope>` at second `w`); a sync adds to window `w` and
//!   reads windows `w` and `w - 1`. Per scope, a replica remembers what it
//!   saw of both, so the difference is what the others spent since its last
//!   sync, including when a window ended in between. A scope this replica
//!   has not synced lately starts from zero, so others' spending of the
//!   last one to two seconds is charged to it at once.
//! - **Charging** others' spending to a key's GCRA state moves its
//!   theoretical arrival time by one emission interval per request, from
//!   no earlier than the previous sync (see [`charge`]). A request admitted
//!   anywhere thus costs the same everywhere, and a burst spent on several
//!   replicas at once is paid back after the next sync. With even load, a
//!   cluster of `n` replicas admits at most the limit plus what `n - 1`
//!   replicas admit in one interval, and never less than the limit.
//! - **When the shared counters do not answer** (Redis down, or the
//!   database), each replica keeps limiting with its local state alone (so
//!   the cluster admits up to `n` times a limit), logs it once, and
//!   `/readyz` says so in its `rate_limits` detail; authentication goes on.
//!   The spending of the failed syncs is dropped, not charged late; when
//!   the counters answer again, others' spending of the last two windows
//!   is charged, as for a fresh scope.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use secrecy::{ExposeSecret as _, SecretString};

use crate::clock::Clock;
use crate::rate_limit::{
    throttle_address, AccountKey, AddressThrottle, AuthFailures, LoginCounter, LoginThrottle,
};
use crate::store::{KeyId, Store};
use crate::usage::KeyHot;

/// A key not used here for this long is no longer synced (a new request
/// makes it active again, and the next sync charges others' spending of
/// the last one to two seconds to it).
const KEY_ACTIVE_FOR: Duration = Duration::from_secs(2);

/// The same for the throttles' scopes (an address's failures, a login
/// counter), which matter for longer: a throttled client that a load
/// balancer spreads over the replicas keeps every replica's scope active.
const THROTTLE_ACTIVE_FOR: Duration = Duration::from_secs(60);

/// Scopes idle for this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(120);

/// Scopes remembered at most; beyond that new scopes stay local (limited
/// by each replica alone) until idle ones are forgotten. No client input
/// can make the map, or a sync's batch, grow past it.
const MAX_SCOPES: usize = 100_000;

/// Throttle scopes (addresses, login counters) one sync carries at most:
/// a flood of failures from many addresses costs the shared counters a
/// bounded statement per interval, not one row per address (the rest wait
/// for later syncs; each replica's own throttle holds meanwhile). Keys are
/// not capped: only real keys, used lately, have scopes.
const MAX_THROTTLE_SCOPES_PER_SYNC: usize = 2_000;

/// How long a sync may take before it counts as failed.
const SYNC_TIMEOUT: Duration = Duration::from_millis(500);

/// How often old windows are deleted from the database.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// Windows kept (only the last two are read).
const KEEP_WINDOWS: i64 = 5;

fn unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Seconds a Redis window key lives (it is read for two seconds at most).
const REDIS_WINDOW_TTL_SECONDS: i64 = 5;

/// What a limit is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A key's rate limit.
    Key(KeyId),
    /// Failed API authentications from an address (IPv6 per /64).
    FailedAuth(IpAddr),
    /// Dashboard logins: one of the login throttle's counters.
    Login(LoginCounter),
    /// Leak reports from an address (IPv6 per /64).
    LeakReports(IpAddr),
}

impl Scope {
    /// The counter's name: `k:<key id>`, `f:<address>`, `lp:<account>:<address>`,
    /// `la:<address>`, `lc:<account>` (an account is a hash of the email),
    /// `r:<address>`.
    fn name(&self) -> String {
        match self {
            Self::Key(id) => format!("k:{id}"),
            Self::FailedAuth(ip) => format!("f:{ip}"),
            Self::Login(LoginCounter::Pair(account, ip)) => format!("lp:{account}:{ip}"),
            Self::Login(LoginCounter::Address(ip)) => format!("la:{ip}"),
            Self::Login(LoginCounter::Account(account)) => format!("lc:{account}"),
            Self::LeakReports(ip) => format!("r:{ip}"),
        }
    }
}

/// Where the shared counters live.
#[async_trait]
trait SharedCounters: Send + Sync + std::fmt::Debug {
    /// What `/readyz` and the logs call it.
    fn name(&self) -> &'static str;
    /// Adds each delta to its counter in `window` (Unix seconds) and returns,
    /// in the batch's order, each counter's total in `window` after the
    /// addition and in `window - 1`. An empty batch checks that they answer.
    async fn add(&self, window: i64, batch: &[(String, i64)]) -> Result<Vec<(i64, i64)>, String>;
    /// Deletes the counters of windows before `window`, if they are not
    /// deleted by themselves.
    async fn prune(&self, _window: i64) {}
}

/// The counters in the PostgreSQL database.
#[derive(Debug)]
struct DatabaseCounters(Arc<dyn Store>);

#[async_trait]
impl SharedCounters for DatabaseCounters {
    fn name(&self) -> &'static str {
        "postgresql"
    }

    async fn add(&self, window: i64, batch: &[(String, i64)]) -> Result<Vec<(i64, i64)>, String> {
        let counters = self
            .0
            .rate_counters()
            .ok_or_else(|| "this database keeps no shared counters".to_owned())?;
        counters
            .add_to_rate_counters(window, batch)
            .await
            .map_err(|e| e.to_string())
    }

    async fn prune(&self, window: i64) {
        if let Some(counters) = self.0.rate_counters() {
            if let Err(err) = counters.prune_rate_counters(window).await {
                tracing::debug!(error = %err, "cannot prune the rate-limit counters");
            }
        }
    }
}

/// The counters in Redis: `noxus:<organization id>:<scope>:<window>`, each
/// living a few seconds. One connection, reopened after a failure.
struct RedisCounters {
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    store: Arc<dyn Store>,
    /// The organization's id, once there is one: it keeps two deployments
    /// that share a Redis apart.
    namespace: tokio::sync::OnceCell<String>,
}

impl std::fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: not shown.
        f.debug_struct("RedisCounters").finish_non_exhaustive()
    }
}

impl RedisCounters {
    async fn namespace(&self) -> Result<&str, String> {
        self.namespace
            .get_or_try_init(|| async {
                match self.store.organization().await {
                    Ok(Some(org)) => Ok(org.id.to_string()),
                    Ok(None) => Err("the platform is not set up yet".to_owned()),
                    Err(err) => Err(err.to_string()),
                }
            })
            .await
            .map(String::as_str)
    }
}

#[async_trait]
impl SharedCounters for RedisCounters {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn add(&self, window: i64, batch: &[(String, i64)]) -> Result<Vec<(i64, i64)>, String> {
        let namespace = self.namespace().await?;
        let mut connection = self.connection.lock().await;
        let ping = batch.is_empty();
        if connection.is_none() {
            let opened = self
                .client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| format!("cannot connect to Redis: {e}"))?;
            *connection = Some(opened);
        }
        let Some(conn) = connection.as_mut() else {
            return Err("no Redis connection".to_owned());
        };
        if ping {
            return match redis::cmd("PING").query_async::<String>(conn).await {
                Ok(_) => Ok(Vec::new()),
                Err(err) => {
                    *connection = None;
                    Err(format!("Redis: {err}"))
                }
            };
        }
        let mut pipe = redis::pipe();
        for (scope, delta) in batch {
            let current = format!("noxus:{namespace}:{scope}:{window}");
            pipe.cmd("INCRBY").arg(&current).arg(*delta);
            pipe.cmd("EXPIRE")
                .arg(&current)
                .arg(REDIS_WINDOW_TTL_SECONDS)
                .ignore();
            pipe.cmd("GET")
                .arg(format!("noxus:{namespace}:{scope}:{}", window - 1));
        }
        match pipe.query_async::<Vec<Option<i64>>>(conn).await {
            Ok(values) if values.len() == 2 * batch.len() => Ok(values
                .chunks(2)
                .map(|pair| (pair[0].unwrap_or(0), pair[1].unwrap_or(0)))
                .collect()),
            Ok(values) => Err(format!(
                "Redis answered {} values for {} counters",
                values.len(),
                batch.len()
            )),
            Err(err) => {
                // Reconnect on the next sync.
                *connection = None;
                Err(format!("Redis: {err}"))
            }
        }
    }
}

/// The replica's own limit state that others' spending is charged to (a
/// key's lives in its hot state).
#[derive(Debug, Clone, Copy)]
pub struct Local<'a> {
    /// Failed authentications per address.
    pub auth_failures: &'a AuthFailures,
    /// The dashboard's login throttle.
    pub login: &'a LoginThrottle,
    /// Leak reports per address.
    pub leak_reports: &'a AddressThrottle,
    /// The hot path's clock (GCRA times are on it).
    pub clock: &'a Clock,
}

/// How limits are shared right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// One process (SQLite): its limits are the cluster's.
    PerProcess = 0,
    /// Not synced yet.
    Starting = 1,
    /// Synced with the shared counters.
    Shared = 2,
    /// The shared counters do not answer: local limits only.
    Local = 3,
}

/// What one replica knows of one scope.
#[derive(Debug)]
struct Entry {
    /// Spent here since the last sync (throttle scopes; a key's own count is
    /// in its hot state).
    pending: i64,
    /// The key's hot state (key scopes).
    hot: Option<Arc<KeyHot>>,
    /// The window `seen_current` belongs to.
    window: i64,
    /// The shared totals seen at the last sync, of `window` and the one before.
    seen_current: i64,
    seen_previous: i64,
    /// The last time this replica spent on (or was asked about) the scope.
    last_active: Instant,
    /// The monotonic time of the last sync that included the scope.
    last_sync_ns: Option<u64>,
}

impl Entry {
    fn new(now: Instant) -> Self {
        Self {
            pending: 0,
            hot: None,
            window: i64::MIN,
            seen_current: 0,
            seen_previous: 0,
            last_active: now,
            last_sync_ns: None,
        }
    }
}

/// The cluster-wide part of the limits (see the module's documentation).
#[derive(Debug)]
pub struct ClusterLimits {
    shared: Option<Box<dyn SharedCounters>>,
    interval: Duration,
    mode: AtomicU8,
    entries: Mutex<HashMap<Scope, Entry>>,
    /// Keys that became active since the last sync (pushed by the hot path
    /// once per key and sync).
    new_keys: Mutex<Vec<Arc<KeyHot>>>,
}

impl ClusterLimits {
    /// Limits of one process (SQLite).
    pub fn per_process() -> Self {
        Self::with(None, Duration::from_millis(100))
    }

    /// For a store shared by several processes: counters in Redis at
    /// `redis_url` if given, else in the database; synced every `interval`.
    /// A store that is not shared (SQLite) gets [`ClusterLimits::per_process`].
    pub fn for_store(
        store: &Arc<dyn Store>,
        redis_url: Option<&SecretString>,
        interval: Duration,
    ) -> anyhow::Result<Self> {
        if store.rate_counters().is_none() {
            if redis_url.is_some() {
                anyhow::bail!("--redis-url shares rate limits between replicas, which share a PostgreSQL database (--database-url); a SQLite data directory serves one process, whose limits need no sharing");
            }
            return Ok(Self::per_process());
        }
        let shared: Box<dyn SharedCounters> = match redis_url {
            Some(url) => {
                let client = redis::Client::open(url.expose_secret()).map_err(|e| {
                    anyhow::anyhow!("--redis-url is not a Redis URL (redis://host:port/db): {e}")
                })?;
                Box::new(RedisCounters {
                    client,
                    connection: tokio::sync::Mutex::new(None),
                    store: Arc::clone(store),
                    namespace: tokio::sync::OnceCell::new(),
                })
            }
            None => Box::new(DatabaseCounters(Arc::clone(store))),
        };
        Ok(Self::with(Some(shared), interval))
    }

    fn with(shared: Option<Box<dyn SharedCounters>>, interval: Duration) -> Self {
        let mode = if shared.is_some() {
            Mode::Starting
        } else {
            Mode::PerProcess
        };
        Self {
            shared,
            interval: interval.max(Duration::from_millis(10)),
            mode: AtomicU8::new(mode as u8),
            entries: Mutex::new(HashMap::new()),
            new_keys: Mutex::new(Vec::new()),
        }
    }

    /// Whether limits are shared with other processes (the hot path asks
    /// before recording anything).
    #[inline]
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Relaxed) {
            0 => Mode::PerProcess,
            1 => Mode::Starting,
            2 => Mode::Shared,
            _ => Mode::Local,
        }
    }

    /// Whether the last sync failed, so that each replica limits alone.
    pub fn is_degraded(&self) -> bool {
        self.mode() == Mode::Local
    }

    /// One line for `/readyz`: how limits hold right now.
    pub fn describe(&self) -> String {
        let name = self.shared.as_ref().map_or("", |s| s.name());
        match self.mode() {
            Mode::PerProcess => "per process (one process serves this database)".to_owned(),
            Mode::Starting => format!("cluster-wide ({name}), first sync pending"),
            Mode::Shared => format!("cluster-wide ({name})"),
            // Why is in the log only: /readyz answers anyone.
            Mode::Local => format!("per replica: the shared counters ({name}) do not answer"),
        }
    }

    /// The hot path, after a request with `hot`'s key was admitted
    /// (`admitted`) or refused by its limit: counts it for the next sync.
    #[inline]
    pub fn key_used(&self, hot: &Arc<KeyHot>, admitted: bool) {
        if admitted {
            hot.sync.spent.fetch_add(1, Ordering::Relaxed);
        }
        if !hot.sync.active.load(Ordering::Relaxed) && !hot.sync.active.swap(true, Ordering::AcqRel)
        {
            self.new_keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Arc::clone(hot));
        }
    }

    /// Records `delta` spent on a throttle scope (a failed authentication,
    /// a login attempt counted or uncounted).
    pub fn spent(&self, scope: Scope, delta: i64) {
        if !self.is_shared() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_SCOPES && !entries.contains_key(&scope) {
            // Full (many addresses at once): this scope stays local; the
            // idle ones are forgotten at the next syncs.
            return;
        }
        let entry = entries.entry(scope).or_insert_with(|| Entry::new(now));
        entry.pending += delta;
        entry.last_active = now;
    }

    /// Records an admitted login attempt on its three counters.
    pub fn login_counted(&self, account: AccountKey, ip: IpAddr) {
        for counter in LoginCounter::all(account, ip) {
            self.spent(Scope::Login(counter), 1);
        }
    }

    /// Takes an attempt back from the counters (abandoned, or a success
    /// that is not a failure).
    pub fn login_uncounted(&self, account: AccountKey, ip: IpAddr) {
        for counter in LoginCounter::all(account, ip) {
            self.spent(Scope::Login(counter), -1);
        }
    }

    /// Syncs every interval, charging others' spending to `local` (the
    /// task runs while the server serves).
    pub async fn run(&self, local: Local<'_>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune = Instant::now();
        loop {
            tick.tick().await;
            self.sync_once(local).await;
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = Instant::now();
                if let Some(shared) = &self.shared {
                    shared.prune(unix_seconds() - KEEP_WINDOWS).await;
                }
            }
        }
    }

    /// One sync: pushes what was spent here, charges what others spent.
    pub async fn sync_once(&self, local: Local<'_>) {
        let Some(shared) = &self.shared else { return };
        let now = Instant::now();
        let now_ns = local.clock.now().mono_ns;
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let window = unix_ms.div_euclid(1000);
        let (scopes, batch) = self.collect(now);
        if batch.is_empty() && self.mode() == Mode::Shared {
            // Nothing to sync: an empty batch checks that the counters
            // answer (`/readyz` tells) only while they were failing.
            return;
        }
        let result = match tokio::time::timeout(SYNC_TIMEOUT, shared.add(window, &batch)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} ms", SYNC_TIMEOUT.as_millis())),
        };
        match result {
            Ok(totals) => {
                if self.mode.swap(Mode::Shared as u8, Ordering::AcqRel) == Mode::Local as u8 {
                    tracing::info!(
                        counters = shared.name(),
                        "the shared rate-limit counters answer again: limits are cluster-wide again"
                    );
                }
                self.charge_others(local, window, unix_ms, now_ns, &scopes, &batch, &totals);
            }
            Err(why) => {
                if self.mode.swap(Mode::Local as u8, Ordering::AcqRel) != Mode::Local as u8 {
                    tracing::warn!(counters = shared.name(), problem = %why, "the shared rate-limit counters do not answer: each replica limits alone until they do");
                }
                // This replica's spending of the failed sync is dropped; what
                // it saw stays, so that after the outage only others'
                // spending of the last two windows is charged.
            }
        }
    }

    /// The scopes to sync and what this replica spent on each since the last sync.
    fn collect(&self, now: Instant) -> (Vec<Scope>, Vec<(String, i64)>) {
        let new_keys =
            std::mem::take(&mut *self.new_keys.lock().unwrap_or_else(|p| p.into_inner()));
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        for hot in new_keys {
            let scope = Scope::Key(hot.key_id().clone());
            if entries.len() >= MAX_SCOPES && !entries.contains_key(&scope) {
                // Full: the key stays local until idle scopes are forgotten.
                hot.sync.active.store(false, Ordering::Release);
                continue;
            }
            let entry = entries.entry(scope).or_insert_with(|| Entry::new(now));
            entry.hot = Some(hot);
        }
        entries.retain(|_, e| now.saturating_duration_since(e.last_active) < FORGET_AFTER);
        let mut scopes = Vec::new();
        let mut batch = Vec::new();
        let mut throttle_scopes = 0usize;
        for (scope, entry) in entries.iter_mut() {
            let is_key = matches!(scope, Scope::Key(_));
            if !is_key && throttle_scopes >= MAX_THROTTLE_SCOPES_PER_SYNC {
                // Spending stays pending for a later sync.
                continue;
            }
            let mut delta = std::mem::take(&mut entry.pending);
            if let Some(hot) = &entry.hot {
                delta += hot.sync.spent.swap(0, Ordering::AcqRel);
                if hot.sync.active.swap(false, Ordering::AcqRel) {
                    entry.last_active = now;
                }
            }
            if delta != 0 {
                entry.last_active = now;
            }
            let active_for = match scope {
                Scope::Key(_) => KEY_ACTIVE_FOR,
                Scope::FailedAuth(_) | Scope::Login(_) | Scope::LeakReports(_) => {
                    THROTTLE_ACTIVE_FOR
                }
            };
            if now.saturating_duration_since(entry.last_active) < active_for {
                throttle_scopes += usize::from(!is_key);
                scopes.push(scope.clone());
                batch.push((scope.name(), delta));
            }
        }
        (scopes, batch)
    }

    #[allow(clippy::too_many_arguments)]
    fn charge_others(
        &self,
        local: Local<'_>,
        window: i64,
        unix_ms: i64,
        now_ns: u64,
        scopes: &[Scope],
        batch: &[(String, i64)],
        totals: &[(i64, i64)],
    ) {
        // The start of the previous window, on the monotonic clock: the
        // earliest others' spending a fresh scope is charged can be from.
        let previous_window_start_ns =
            now_ns.saturating_sub(((unix_ms - (window - 1) * 1000).max(0) as u64) * 1_000_000);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        for ((scope, (_, delta)), &(current, previous)) in scopes.iter().zip(batch).zip(totals) {
            let Some(entry) = entries.get_mut(scope) else {
                continue;
            };
            let (seen_current, seen_previous) = if entry.window == window {
                (entry.seen_current, entry.seen_previous)
            } else if entry.window == window - 1 {
                (0, entry.seen_current)
            } else {
                (0, 0)
            };
            let others =
                (current - seen_current - delta).max(0) + (previous - seen_previous).max(0);
            entry.window = window;
            entry.seen_current = current;
            entry.seen_previous = previous;
            let since_ns = entry.last_sync_ns.unwrap_or(previous_window_start_ns);
            entry.last_sync_ns = Some(now_ns);
            if others == 0 {
                continue;
            }
            let others = u64::try_from(others).unwrap_or(0);
            match scope {
                Scope::Key(_) => {
                    if let Some(hot) = &entry.hot {
                        hot.charge(others, since_ns);
                    }
                }
                Scope::FailedAuth(ip) => local.auth_failures.charge(*ip, others, since_ns),
                Scope::Login(counter) => local.login.charge(*counter, others, Instant::now()),
                Scope::LeakReports(ip) => local.leak_reports.charge(*ip, others, since_ns),
            }
        }
    }
}

/// Charges `requests` spent elsewhere to a GCRA theoretical arrival time:
/// each costs one `emission_ns`, from no earlier than `since_ns` (they were
/// spent after the previous sync).
pub fn charge(tat: u64, requests: u64, emission_ns: u64, since_ns: u64) -> u64 {
    tat.max(since_ns)
        .saturating_add(requests.saturating_mul(emission_ns))
}

/// The scope of failed authentications from `ip`.
pub fn failed_auth_scope(ip: IpAddr) -> Scope {
    Scope::FailedAuth(throttle_address(ip))
}

/// The scope of leak reports from `ip`.
pub fn leak_reports_scope(ip: IpAddr) -> Scope {
    Scope::LeakReports(throttle_address(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charging_moves_the_arrival_time_from_no_earlier_than_the_last_sync() {
        // Idle key: the charge starts at the last sync.
        assert_eq!(charge(100, 3, 10, 1_000), 1_030);
        // A key in debt: the charge adds to the debt.
        assert_eq!(charge(5_000, 3, 10, 1_000), 5_030);
        assert_eq!(charge(u64::MAX - 1, 3, 10, 0), u64::MAX);
    }

    #[test]
    fn scope_names_hide_nothing_they_do_not_need_and_stay_apart() {
        let account = AccountKey::of("user@example.com");
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let names: Vec<String> = [
            Scope::Key(KeyId::from("k1".to_owned())),
            Scope::FailedAuth(ip),
            Scope::Login(LoginCounter::Pair(account, ip)),
            Scope::Login(LoginCounter::Address(ip)),
            Scope::Login(LoginCounter::Account(account)),
            Scope::LeakReports(ip),
        ]
        .iter()
        .map(Scope::name)
        .collect();
        assert_eq!(names[0], "k:k1");
        assert_eq!(names[1], "f:10.0.0.1");
        assert!(names.iter().all(|n| !n.contains("example.com")));
        let distinct: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), names.len());
    }
}
