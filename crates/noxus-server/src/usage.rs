//! Per-key hot state, kept off the database: the rate limiter's timestamp
//! and the latest use (time and address). Each request updates atomics of
//! its key; a background task writes the latest uses to the store every
//! second, and a graceful shutdown writes the rest. At most one flush
//! interval of "last used" is lost if the process is killed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

use crate::store::{KeyUse, Store};

/// How often pending uses are written.
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

/// The hot state of one key.
#[derive(Debug)]
pub struct KeyHot {
    key_id: String,
    /// GCRA theoretical arrival time, in the clock's nanoseconds.
    pub tat: AtomicU64,
    last_used_ms: AtomicI64,
    last_addr: Mutex<Option<IpAddr>>,
    dirty: AtomicBool,
}

impl KeyHot {
    /// Notes a use at `unix_ms` from `addr`.
    pub fn touch(&self, unix_ms: i64, addr: Option<IpAddr>) {
        self.last_used_ms.store(unix_ms, Ordering::Relaxed);
        if let Some(addr) = addr {
            let mut last = self.last_addr.lock().unwrap_or_else(|p| p.into_inner());
            if *last != Some(addr) {
                *last = Some(addr);
            }
        }
        if !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Release);
        }
    }
}

/// Every key's hot state, by key id. Entries outlive cache evictions, so a
/// key's rate-limit state survives a revocation check or a role change.
#[derive(Debug, Default)]
pub struct UsageRecorder {
    keys: Mutex<HashMap<String, Arc<KeyHot>>>,
}

impl UsageRecorder {
    /// The hot state of a key (created on first use; called on cache misses only).
    pub fn key(&self, key_id: &str) -> Arc<KeyHot> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(keys.entry(key_id.to_owned()).or_insert_with(|| {
            Arc::new(KeyHot {
                key_id: key_id.to_owned(),
                tat: AtomicU64::new(0),
                last_used_ms: AtomicI64::new(0),
                last_addr: Mutex::new(None),
                dirty: AtomicBool::new(false),
            })
        }))
    }

    /// Writes the latest use of every key used since the last flush; on
    /// failure they are marked for the next try.
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
        let batch: Vec<KeyUse> = dirty
            .iter()
            .filter_map(|k| {
                let ms = k.last_used_ms.load(Ordering::Relaxed);
                let at =
                    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
                let addr = k
                    .last_addr
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .map(|a| a.to_string());
                Some(KeyUse {
                    key_id: k.key_id.clone(),
                    at,
                    addr,
                })
            })
            .collect();
        if let Err(err) = store.record_key_uses(&batch).await {
            tracing::warn!(error = %err, keys = batch.len(), "cannot record key use; will retry");
            for k in dirty {
                k.dirty.store(true, Ordering::Release);
            }
        }
    }
}
