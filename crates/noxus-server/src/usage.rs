//! Key use, recorded off the request path: each authenticated request
//! updates an in-memory map (one lock, no I/O); a background task writes
//! the batch to the store every second, and a graceful shutdown writes the
//! rest. At most one flush interval is lost if the process is killed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;

use crate::store::{KeyUse, Store};

/// How often pending uses are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Pending latest uses per key.
#[derive(Debug, Default)]
pub struct UsageRecorder {
    pending: Mutex<HashMap<String, (OffsetDateTime, Option<String>)>>,
}

impl UsageRecorder {
    /// Notes a use of `key_id` now.
    pub fn touch(&self, key_id: &str, addr: Option<&str>) {
        let now = OffsetDateTime::now_utc();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match pending.get_mut(key_id) {
            Some(slot) => {
                slot.0 = now;
                if slot.1.as_deref() != addr {
                    slot.1 = addr.map(str::to_owned);
                }
            }
            None => {
                pending.insert(key_id.to_owned(), (now, addr.map(str::to_owned)));
            }
        }
    }

    /// Writes everything pending; on failure the batch is kept for the next try.
    pub async fn flush(&self, store: &dyn Store) {
        let batch: Vec<KeyUse> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending
                .drain()
                .map(|(key_id, (at, addr))| KeyUse { key_id, at, addr })
                .collect()
        };
        if batch.is_empty() {
            return;
        }
        if let Err(err) = store.record_key_uses(&batch).await {
            tracing::warn!(error = %err, keys = batch.len(), "cannot record key use; will retry");
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for u in batch {
                pending.entry(u.key_id).or_insert((u.at, u.addr));
            }
        }
    }
}
