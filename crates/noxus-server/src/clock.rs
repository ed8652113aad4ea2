//! One clock for the authentication hot path: a monotonic reading, and the
//! wall-clock time derived from it without a second system call.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

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
