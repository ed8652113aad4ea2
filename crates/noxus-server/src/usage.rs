//! Per-key usage, counted off the request path: each request updates its
//! key's in-memory state (a few atomics and one uncontended lock); a
//! background task writes the batch to the store every second, and a
//! graceful shutdown writes the rest. What is stored: per key and hour, the
//! requests and their outcomes (2xx / 4xx / 5xx, 401, 403, 429); the last
//! use and its address; every address the key was used from. If the process
//! is killed, at most one flush interval (1 s) of counts is lost.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

use crate::store::{KeyUsageFlush, Store, UsageCounts};

/// How often pending usage is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// One clock for the hot path: a monotonic reading, and the wall-clock time
/// derived from it without a second system call.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    started: Instant,
    started_unix_ms: i64,
}

impl Default for Clock {
    fn default() -> Self {
        let started_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Self {
            started: Instant::now(),
            started_unix_ms,
        }
    }
}

/// A moment on the hot path.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic.
    pub instant: Instant,
    /// Nanoseconds since the clock started (for the rate limiter).
    pub mono_ns: u64,
    /// Unix milliseconds.
    pub unix_ms: i64,
}

impl Clock {
    /// Reads the clock once.
    pub fn now(&self) -> Now {
        let instant = Instant::now();
        let since = instant.duration_since(self.started);
        Now {
            instant,
            mono_ns: since.as_nanos() as u64,
            unix_ms: self.started_unix_ms + since.as_millis() as i64,
        }
    }
}

#[derive(Debug, Default)]
struct Addresses {
    last: Option<IpAddr>,
    seen: HashSet<IpAddr>,
    pending: Vec<(IpAddr, i64)>,
}

/// The hot state of one key.
#[derive(Debug)]
pub struct KeyHot {
    key_id: String,
    workspace_id: String,
    /// GCRA theoretical arrival time, in the clock's nanoseconds.
    pub tat: AtomicU64,
    last_used_ms: AtomicI64,
    addresses: Mutex<Addresses>,
    /// The hour the atomic counters below count.
    hour: AtomicI64,
    /// This hour's counts since the last flush (the common, lock-free case).
    hot_counts: [AtomicU64; 7],
    /// Counts of other hours since the last flush (at an hour boundary).
    counts: Mutex<Vec<(i64, UsageCounts)>>,
    dirty: AtomicBool,
}

impl KeyHot {
    /// Notes a use at `unix_ms` from `addr` (called once the key is verified).
    pub fn touch(&self, unix_ms: i64, addr: Option<IpAddr>) {
        self.last_used_ms.store(unix_ms, Ordering::Relaxed);
        if let Some(addr) = addr {
            let mut addresses = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
            if addresses.last != Some(addr) {
                addresses.last = Some(addr);
                if addresses.seen.insert(addr) || addresses.seen.len() > 10_000 {
                    addresses.pending.push((addr, unix_ms));
                }
            }
        }
        self.mark_dirty();
    }

    /// Counts an answer with `status` at `unix_ms`.
    pub fn count(&self, status: u16, unix_ms: i64) {
        let hour = unix_ms.div_euclid(3_600_000);
        if self.hour.load(Ordering::Acquire) == hour {
            let add = |i: usize| {
                self.hot_counts[i].fetch_add(1, Ordering::Relaxed);
            };
            add(0);
            match status {
                200..=299 => add(1),
                400..=499 => add(2),
                500..=599 => add(3),
                _ => {}
            }
            match status {
                401 => add(4),
                403 => add(5),
                429 => add(6),
                _ => {}
            }
            self.mark_dirty();
            return;
        }
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        // A new hour: move the atomic counts of the old one aside, count this hour atomically from now on.
        let previous = self.hour.swap(hour, Ordering::AcqRel);
        let moved = self.drain_hot();
        if moved.requests > 0 {
            merge(&mut counts, previous, &moved);
        }
        match counts.iter_mut().find(|(h, _)| *h == hour) {
            Some((_, c)) => c.count(status),
            None => {
                let mut c = UsageCounts::default();
                c.count(status);
                counts.push((hour, c));
            }
        }
        drop(counts);
        self.mark_dirty();
    }

    fn mark_dirty(&self) {
        if !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Release);
        }
    }

    fn drain_hot(&self) -> UsageCounts {
        let take = |i: usize| self.hot_counts[i].swap(0, Ordering::AcqRel);
        UsageCounts {
            requests: take(0),
            ok: take(1),
            client_errors: take(2),
            server_errors: take(3),
            unauthorized: take(4),
            forbidden: take(5),
            rate_limited: take(6),
        }
    }

    fn take(&self) -> KeyUsageFlush {
        let hours = {
            let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            let hot = self.drain_hot();
            if hot.requests > 0 {
                merge(&mut counts, self.hour.load(Ordering::Acquire), &hot);
            }
            std::mem::take(&mut *counts)
        };
        let (addresses, last_addr) = {
            let mut a = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
            (std::mem::take(&mut a.pending), a.last)
        };
        let at =
            |ms: i64| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok();
        let last_ms = self.last_used_ms.load(Ordering::Relaxed);
        KeyUsageFlush {
            key_id: self.key_id.clone(),
            workspace_id: self.workspace_id.clone(),
            last_used: (last_ms > 0)
                .then(|| at(last_ms))
                .flatten()
                .map(|t| (t, last_addr.map(|a| a.to_string()))),
            hours,
            addresses: addresses
                .into_iter()
                .filter_map(|(addr, ms)| Some((addr.to_string(), at(ms)?)))
                .collect(),
        }
    }

    fn put_back(&self, flush: KeyUsageFlush) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for (hour, c) in flush.hours {
            match counts.iter_mut().find(|(h, _)| *h == hour) {
                Some((_, existing)) => existing.add(&c),
                None => counts.push((hour, c)),
            }
        }
        drop(counts);
        let mut a = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        for (addr, at) in flush.addresses {
            if let Ok(ip) = addr.parse() {
                a.pending
                    .push((ip, (at.unix_timestamp_nanos() / 1_000_000) as i64));
            }
        }
        drop(a);
        self.dirty.store(true, Ordering::Release);
    }
}

fn merge(counts: &mut Vec<(i64, UsageCounts)>, hour: i64, add: &UsageCounts) {
    match counts.iter_mut().find(|(h, _)| *h == hour) {
        Some((_, c)) => c.add(add),
        None => counts.push((hour, *add)),
    }
}

/// Every key's hot state, by key id. Entries outlive cache evictions, so a
/// key's rate-limit state and pending counts survive a revocation or a role change.
#[derive(Debug, Default)]
pub struct UsageRecorder {
    keys: Mutex<HashMap<String, Arc<KeyHot>>>,
}

impl UsageRecorder {
    /// The hot state of a key (created on first use; called on cache misses only).
    pub fn key(&self, key_id: &str, workspace_id: &str) -> Arc<KeyHot> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(keys.entry(key_id.to_owned()).or_insert_with(|| {
            Arc::new(KeyHot {
                key_id: key_id.to_owned(),
                workspace_id: workspace_id.to_owned(),
                tat: AtomicU64::new(0),
                last_used_ms: AtomicI64::new(0),
                addresses: Mutex::new(Addresses::default()),
                hour: AtomicI64::new(i64::MIN),
                hot_counts: Default::default(),
                counts: Mutex::new(Vec::new()),
                dirty: AtomicBool::new(false),
            })
        }))
    }

    /// Writes everything counted since the last flush; on failure it is kept for the next try.
    pub async fn flush(&self, store: &dyn Store) {
        let dirty: Vec<Arc<KeyHot>> = {
            let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            keys.values()
                .filter(|k| k.dirty.swap(false, Ordering::AcqRel))
                .cloned()
                .collect()
        };
        if dirty.is_empty() {
            return;
        }
        let batch: Vec<KeyUsageFlush> = dirty.iter().map(|k| k.take()).collect();
        if let Err(err) = store.record_usage(&batch).await {
            tracing::warn!(error = %err, keys = batch.len(), "cannot record key usage; will retry");
            for (key, flush) in dirty.iter().zip(batch) {
                key.put_back(flush);
            }
        }
    }
}

/// What the request layer learns about the key of a request.
#[derive(Debug, Clone)]
pub struct RequestKey {
    /// The key's hot state, to count the answer against.
    pub hot: Arc<KeyHot>,
    /// The key's rate-limit state after this request, for the headers.
    pub rate: Option<crate::rate_limit::RateInfo>,
    /// When the request was verified (Unix milliseconds), to count it in its hour.
    pub unix_ms: i64,
}

/// Deletes hourly usage older than `retention_days`.
pub async fn prune(store: &dyn Store, retention_days: u32) {
    let now_hour = OffsetDateTime::now_utc().unix_timestamp().div_euclid(3600);
    let before = now_hour - i64::from(retention_days) * 24;
    match store.prune_usage(before).await {
        Ok(0) => {}
        Ok(rows) => tracing::info!(rows, retention_days, "pruned old usage"),
        Err(err) => tracing::warn!(error = %err, "cannot prune old usage"),
    }
}

tokio::task_local! {
    /// The key a request was made with, once known.
    static REQUEST_KEY: RefCell<Option<RequestKey>>;
}

/// Runs a request with a slot for its key, and returns the key (if the
/// request presented a known one) with the answer.
pub async fn with_key_slot<F: std::future::Future>(future: F) -> (F::Output, Option<RequestKey>) {
    REQUEST_KEY
        .scope(RefCell::new(None), async move {
            let output = future.await;
            let key = REQUEST_KEY.with(|slot| slot.borrow_mut().take());
            (output, key)
        })
        .await
}

/// Names the key of the current request (no-op outside a request).
pub fn set_request_key(key: &Arc<KeyHot>, unix_ms: i64) {
    let _ = REQUEST_KEY.try_with(|slot| {
        *slot.borrow_mut() = Some(RequestKey {
            hot: Arc::clone(key),
            rate: None,
            unix_ms,
        })
    });
}

/// Notes the current request's rate-limit state (no-op outside a request).
pub fn set_request_rate(rate: crate::rate_limit::RateInfo) {
    let _ = REQUEST_KEY.try_with(|slot| {
        if let Some(key) = slot.borrow_mut().as_mut() {
            key.rate = Some(rate);
        }
    });
}
