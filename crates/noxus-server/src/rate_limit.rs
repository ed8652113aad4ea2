//! Per-key request rate limiting with GCRA (the generic cell rate
//! algorithm): each key may make `per_second` requests per second on
//! average, with bursts of up to `burst`. The state is one atomic
//! timestamp per key (the theoretical arrival time), updated without locks.
//! Limits are per server process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A limit: average rate and burst size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
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

/// The limit in the form GCRA uses it.
#[derive(Debug, Clone, Copy)]
pub struct Gcra {
    limit: RateLimit,
    emission_ns: u64,
    tolerance_ns: u64,
}

impl Gcra {
    /// For `limit` (a zero rate or burst is treated as 1).
    pub fn new(limit: RateLimit) -> Self {
        let per_second = limit.per_second.max(1);
        let burst = limit.burst.max(1);
        let emission_ns = 1_000_000_000 / u64::from(per_second);
        Self {
            limit: RateLimit { per_second, burst },
            emission_ns,
            tolerance_ns: emission_ns * u64::from(burst - 1),
        }
    }

    /// The configured limit.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Admits or refuses one request at `now_ns` (nanoseconds on a monotonic
    /// clock, after 0), updating `tat` (the key's theoretical arrival time).
    pub fn check(&self, tat: &AtomicU64, now_ns: u64) -> Result<(), RetryAfter> {
        let mut current = tat.load(Ordering::Acquire);
        loop {
            let start = current.max(now_ns);
            let allowed_at = start.saturating_sub(self.tolerance_ns);
            if allowed_at > now_ns {
                return Err(RetryAfter(Duration::from_nanos(allowed_at - now_ns)));
            }
            match tat.compare_exchange_weak(
                current,
                start + self.emission_ns,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(seen) => current = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_admitted_then_the_rate_applies() {
        let gcra = Gcra::new(RateLimit {
            per_second: 10,
            burst: 3,
        });
        let tat = AtomicU64::new(0);
        let t0 = 100_000_000_000u64;
        for _ in 0..3 {
            assert_eq!(gcra.check(&tat, t0), Ok(()));
        }
        let refused = gcra
            .check(&tat, t0)
            .expect_err("the fourth is over the burst");
        assert_eq!(refused.0, Duration::from_millis(100));
        assert_eq!(refused.whole_seconds(), 1);
        // Another key (another timestamp) is not affected.
        assert_eq!(gcra.check(&AtomicU64::new(0), t0), Ok(()));
        // After one emission interval one more request fits.
        assert_eq!(gcra.check(&tat, t0 + 100_000_000), Ok(()));
        assert!(gcra.check(&tat, t0 + 100_000_000).is_err());
    }

    #[test]
    fn concurrent_requests_never_exceed_the_burst() {
        let gcra = Gcra::new(RateLimit {
            per_second: 1,
            burst: 50,
        });
        let tat = AtomicU64::new(0);
        let admitted = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        if gcra.check(&tat, 1_000_000_000).is_ok() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::Relaxed), 50);
    }
}
