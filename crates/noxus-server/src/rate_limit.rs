//! Per-key request rate limiting with GCRA (the generic cell rate
//! algorithm): each key may make `per_second` requests per second on
//! average, with bursts of up to `burst`. One timestamp per key, no timers.
//! Limits are per server process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A limit: average rate and burst size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
}

/// The limiter: the theoretical arrival time of the next request per key.
#[derive(Debug)]
pub struct KeyRateLimiter {
    limit: RateLimit,
    emission: Duration,
    tolerance: Duration,
    started: Instant,
    tats: Mutex<HashMap<String, Duration>>,
}

/// A refused request: how long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds, rounded up, at least 1 (the `Retry-After` header).
    pub fn whole_seconds(self) -> u64 {
        let secs = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        secs.max(1)
    }
}

impl KeyRateLimiter {
    /// A limiter for `limit` (a zero rate or burst is treated as 1).
    pub fn new(limit: RateLimit) -> Self {
        let per_second = limit.per_second.max(1);
        let burst = limit.burst.max(1);
        let emission = Duration::from_secs(1) / per_second;
        Self {
            limit: RateLimit { per_second, burst },
            emission,
            tolerance: emission * (burst - 1),
            started: Instant::now(),
            tats: Mutex::new(HashMap::new()),
        }
    }

    /// The configured limit.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Admits or refuses one request of `key_id` now.
    pub fn check(&self, key_id: &str) -> Result<(), RetryAfter> {
        self.check_at(key_id, self.started.elapsed())
    }

    fn check_at(&self, key_id: &str, now: Duration) -> Result<(), RetryAfter> {
        let mut tats = self.tats.lock().unwrap_or_else(|p| p.into_inner());
        let tat = tats.get(key_id).copied().unwrap_or(now).max(now);
        let allowed_at = tat.saturating_sub(self.tolerance);
        if allowed_at > now {
            return Err(RetryAfter(allowed_at - now));
        }
        let next = tat + self.emission;
        match tats.get_mut(key_id) {
            Some(slot) => *slot = next,
            None => {
                if tats.len() >= 100_000 {
                    // Forget keys whose bucket is full again (idle ones).
                    tats.retain(|_, t| *t > now);
                }
                tats.insert(key_id.to_owned(), next);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_admitted_then_the_rate_applies() {
        let limiter = KeyRateLimiter::new(RateLimit {
            per_second: 10,
            burst: 3,
        });
        let t0 = Duration::from_secs(100);
        for _ in 0..3 {
            assert_eq!(limiter.check_at("k", t0), Ok(()));
        }
        let refused = limiter
            .check_at("k", t0)
            .expect_err("the fourth is over the burst");
        assert_eq!(refused.0, Duration::from_millis(100));
        assert_eq!(refused.whole_seconds(), 1);
        // Another key is not affected.
        assert_eq!(limiter.check_at("other", t0), Ok(()));
        // After one emission interval one more request fits.
        assert_eq!(
            limiter.check_at("k", t0 + Duration::from_millis(100)),
            Ok(())
        );
        assert!(limiter
            .check_at("k", t0 + Duration::from_millis(100))
            .is_err());
    }
}
