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

    /// The `RateLimit-*` header values after a request admitted at `now_ns`
    /// left the theoretical arrival time at `tat`.
    pub fn info(&self, tat: u64, now_ns: u64) -> RateInfo {
        let debt = tat.saturating_sub(now_ns);
        let capacity = self.tolerance_ns + self.emission_ns;
        RateInfo {
            limit: self.limit.burst,
            remaining: (capacity.saturating_sub(debt) / self.emission_ns)
                .min(u64::from(self.limit.burst)) as u32,
            reset_seconds: debt.div_ceil(1_000_000_000),
        }
    }

    /// Admits or refuses one request at `now_ns` (nanoseconds on a monotonic
    /// clock, after 0), updating `tat` (the key's theoretical arrival time).
    /// Returns the new theoretical arrival time.
    pub fn check(&self, tat: &AtomicU64, now_ns: u64) -> Result<u64, RetryAfter> {
        let mut current = tat.load(Ordering::Acquire);
        loop {
            let start = current.max(now_ns);
            let allowed_at = start.saturating_sub(self.tolerance_ns);
            if allowed_at > now_ns {
                return Err(RetryAfter(Duration::from_nanos(allowed_at - now_ns)));
            }
            let next = start + self.emission_ns;
            match tat.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(next),
                Err(seen) => current = seen,
            }
        }
    }
}

/// What the `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`
/// headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    /// Requests allowed at once (the burst).
    pub limit: u32,
    /// Requests that could be made right now.
    pub remaining: u32,
    /// Seconds until the full burst is available again.
    pub reset_seconds: u64,
}

/// Failed authentications per client address: after a burst of 30, one a
/// second. Over that, requests from the address whose key is not already
/// verified get 429 until the address slows down.
#[derive(Debug)]
pub struct AuthFailures {
    gcra: Gcra,
    addresses: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u64>>,
}

impl Default for AuthFailures {
    fn default() -> Self {
        Self {
            gcra: Gcra::new(RateLimit {
                per_second: 1,
                burst: 30,
            }),
            addresses: Default::default(),
        }
    }
}

impl AuthFailures {
    /// If the address is over its limit, how long to wait.
    pub fn blocked(&self, addr: std::net::IpAddr, now_ns: u64) -> Option<RetryAfter> {
        let addresses = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        let tat = *addresses.get(&addr)?;
        let allowed_at = tat.saturating_sub(self.gcra.tolerance_ns);
        (allowed_at > now_ns).then(|| RetryAfter(Duration::from_nanos(allowed_at - now_ns)))
    }

    /// Records a failure; `Err` when it is one too many.
    pub fn record(&self, addr: std::net::IpAddr, now_ns: u64) -> Result<(), RetryAfter> {
        let mut addresses = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        if addresses.len() > 100_000 {
            addresses.retain(|_, tat| *tat > now_ns);
        }
        let slot = addresses.entry(addr).or_insert(0);
        let tat = AtomicU64::new(*slot);
        let result = self.gcra.check(&tat, now_ns).map(|_| ());
        *slot = tat.load(Ordering::Relaxed);
        result
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
        let mut infos = Vec::new();
        for _ in 0..3 {
            let after = gcra.check(&tat, t0).expect("within the burst");
            infos.push(gcra.info(after, t0));
        }
        assert_eq!(
            infos.iter().map(|i| i.remaining).collect::<Vec<_>>(),
            vec![2, 1, 0]
        );
        assert!(infos.iter().all(|i| i.limit == 3));
        assert_eq!(infos[2].reset_seconds, 1);
        let refused = gcra
            .check(&tat, t0)
            .expect_err("the fourth is over the burst");
        assert_eq!(refused.0, Duration::from_millis(100));
        assert_eq!(refused.whole_seconds(), 1);
        // Another key (another timestamp) is not affected.
        assert!(gcra.check(&AtomicU64::new(0), t0).is_ok());
        // After one emission interval one more request fits.
        assert!(gcra.check(&tat, t0 + 100_000_000).is_ok());
        assert!(gcra.check(&tat, t0 + 100_000_000).is_err());
    }

    #[test]
    fn failed_authentications_are_throttled_per_address() {
        let failures = AuthFailures::default();
        let a: std::net::IpAddr = [10, 0, 0, 1].into();
        let b: std::net::IpAddr = [10, 0, 0, 2].into();
        let now = 5_000_000_000;
        for _ in 0..30 {
            assert!(failures.record(a, now).is_ok());
        }
        assert!(failures.record(a, now).is_err());
        assert!(failures.blocked(a, now).is_some());
        assert!(failures.blocked(b, now).is_none());
        assert!(
            failures.blocked(a, now + 2_000_000_000).is_none(),
            "slowing down lets it in again"
        );
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
