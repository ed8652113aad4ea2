//! One clock for the request path: a monotonic reading, and the wall-clock
//! time derived from it without a second system call.
//!
//! The derived wall-clock time is re-anchored on the system clock by
//! [`Clock::resync`], which the server calls every second: a step of the
//! system clock (an NTP correction, a virtual machine resumed after a
//! pause, during which the monotonic clock stood still) reaches the times
//! the server derives (key expiry, usage hours, the access line's time)
//! within a second.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// One clock for the request path: a monotonic reading, and the wall-clock
/// time derived from it without a second system call.
#[derive(Debug)]
pub struct Clock {
    started: Instant,
    /// The Unix time of `started`, in microseconds, as of the last
    /// [`Clock::resync`].
    started_unix_us: AtomicI64,
}

impl Default for Clock {
    fn default() -> Self {
        let clock = Self {
            started: Instant::now(),
            started_unix_us: AtomicI64::new(0),
        };
        clock.resync();
        clock
    }
}

/// A moment on the request path.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic.
    pub instant: Instant,
    /// Nanoseconds since the clock started (for the rate limiter).
    pub mono_ns: u64,
    /// Unix milliseconds.
    pub unix_ms: i64,
    /// Unix microseconds.
    pub unix_us: i64,
}

impl Clock {
    /// Reads the clock once.
    pub fn now(&self) -> Now {
        self.at(Instant::now())
    }

    /// The moment `instant` (read earlier), with its wall-clock time.
    pub fn at(&self, instant: Instant) -> Now {
        let since = instant.saturating_duration_since(self.started);
        let unix_us = self
            .started_unix_us
            .load(Ordering::Relaxed)
            .saturating_add(i64::try_from(since.as_micros()).unwrap_or(i64::MAX));
        Now {
            instant,
            mono_ns: u64::try_from(since.as_nanos()).unwrap_or(u64::MAX),
            unix_ms: unix_us.div_euclid(1_000),
            unix_us,
        }
    }

    /// Re-anchors the derived wall-clock time on the system clock.
    pub fn resync(&self) {
        let since = Instant::now().saturating_duration_since(self.started);
        let wall_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let since_us = i64::try_from(since.as_micros()).unwrap_or(i64::MAX);
        self.started_unix_us
            .store(wall_us.saturating_sub(since_us), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_times_follow_the_system_clock_after_a_resync() {
        let clock = Clock::default();
        let wall = |now: Now| now.unix_us;
        let system_us = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as i64)
        };
        let before = system_us();
        let now = clock.now();
        let after = system_us();
        // Within the two readings, give or take the rounding of one resync.
        assert!(wall(now) >= before - 1_000 && wall(now) <= after + 1_000);
        assert_eq!(now.unix_ms, now.unix_us.div_euclid(1_000));
        // A later instant is later by exactly the monotonic difference.
        let later = clock.at(now.instant + std::time::Duration::from_millis(1_500));
        assert_eq!(later.unix_us - now.unix_us, 1_500_000);
        assert_eq!(later.mono_ns - now.mono_ns, 1_500_000_000);
        // The system clock stepped (simulated: the anchor is off by an
        // hour); a resync brings derived times back.
        clock
            .started_unix_us
            .fetch_sub(3_600_000_000, Ordering::Relaxed);
        assert!(clock.now().unix_us < system_us() - 3_000_000_000);
        clock.resync();
        let resynced = clock.now().unix_us;
        assert!((resynced - system_us()).abs() < 1_000_000, "{resynced}");
    }
}
