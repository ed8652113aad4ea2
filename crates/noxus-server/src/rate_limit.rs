//! Rate limits and throttles, decided in the process (and shared between
//! replicas by [`crate::cluster_limits`], which charges what other replicas
//! spent to the state here):
//!
//! - per-key request rate limiting with GCRA (the generic cell rate
//!   algorithm): each key may make `per_second` requests per second on
//!   average, with bursts of up to `burst`. The state is one atomic
//!   timestamp per key (the theoretical arrival time), updated without locks;
//! - [`AuthFailures`]: failed API authentications per client address;
//! - [`LoginThrottle`]: failed dashboard logins, with growing delays;
//! - [`AddressThrottle`]: requests per address to an endpoint that needs
//!   no key (leak reports).
//!
//! Every map here has a fixed capacity and forgets the least recently used
//! entry when full, and is keyed by fixed-size values (addresses, hashes of
//! emails), so that no client input can make it grow without bound.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;
use sha2::{Digest, Sha256};

use crate::domain::keys::KeyDigest;

/// Entries each throttle map keeps at most.
pub const THROTTLE_CAPACITY: usize = 100_000;

fn bounded<K: std::hash::Hash + Eq, V>(capacity: usize) -> LruCache<K, V> {
    LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN))
}

/// A client address as the throttles count it: IPv4 as is, IPv6 reduced to
/// its /64 (one machine usually has a whole /64 to pick addresses from).
pub fn throttle_address(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

/// An account (a normalized email) as the throttles know it: 16 bytes of
/// SHA-256, whatever the email's length, and not the email itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccountKey([u8; 16]);

impl AccountKey {
    /// The key of `email` (already trimmed and lowercased).
    pub fn of(email: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(b"noxus login throttle\0")
            .chain_update(email.as_bytes())
            .finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        Self(key)
    }
}

impl std::fmt::Display for AccountKey {
    /// Hexadecimal (the hash, not the email).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

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

    /// What one request costs: nanoseconds of the theoretical arrival time.
    pub fn emission_ns(&self) -> u64 {
        self.emission_ns
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

/// Failed authentications per client address (IPv6 per /64): after a burst
/// of 30, one a second. Over that, requests from the address whose key is
/// not already verified get 429 until the address slows down. Remembers at
/// most [`THROTTLE_CAPACITY`] addresses.
///
/// A throttled address does not lock out the keys that work: digests of keys
/// verified in the last [`KNOWN_VALID_FOR`] are still looked up (and so
/// re-verified: a revocation wins at once), while unknown keys from the
/// address get 429 without a lookup.
#[derive(Debug)]
pub struct AuthFailures {
    gcra: Gcra,
    addresses: Mutex<LruCache<IpAddr, u64>>,
    known_valid: Mutex<LruCache<KeyDigest, u64>>,
}

/// How long a key verified once still gets through a throttled address
/// (Unkey keeps verified keys 10 minutes as stale-while-revalidate).
pub const KNOWN_VALID_FOR: Duration = Duration::from_secs(10 * 60);

impl Default for AuthFailures {
    fn default() -> Self {
        Self::with_capacity(THROTTLE_CAPACITY)
    }
}

/// Failed authentications an address may make: a burst of 30, then one a second.
pub const DEFAULT_AUTH_FAILURE_LIMIT: RateLimit = RateLimit {
    per_second: 1,
    burst: 30,
};

impl AuthFailures {
    /// Remembering at most `capacity` addresses.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::new(DEFAULT_AUTH_FAILURE_LIMIT, capacity)
    }

    /// Allowing `limit` failures per address, remembering at most `capacity` addresses.
    pub fn new(limit: RateLimit, capacity: usize) -> Self {
        Self {
            gcra: Gcra::new(limit),
            addresses: Mutex::new(bounded(capacity)),
            known_valid: Mutex::new(bounded(capacity)),
        }
    }

    /// Notes that the key with `digest` was verified (and worked) at `now_ns`.
    pub fn remember_valid(&self, digest: KeyDigest, now_ns: u64) {
        self.known_valid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(digest, now_ns);
    }

    /// Whether the key with `digest` worked in the last [`KNOWN_VALID_FOR`].
    pub fn recently_valid(&self, digest: &KeyDigest, now_ns: u64) -> bool {
        let window = KNOWN_VALID_FOR.as_nanos() as u64;
        self.known_valid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .peek(digest)
            .is_some_and(|at| now_ns.saturating_sub(*at) < window)
    }

    /// If the address is over its limit, how long to wait.
    pub fn blocked(&self, addr: IpAddr, now_ns: u64) -> Option<RetryAfter> {
        let addresses = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        let tat = *addresses.peek(&throttle_address(addr))?;
        let allowed_at = tat.saturating_sub(self.gcra.tolerance_ns);
        (allowed_at > now_ns).then(|| RetryAfter(Duration::from_nanos(allowed_at - now_ns)))
    }

    /// Records a failure; `Err` when it is one too many.
    pub fn record(&self, addr: IpAddr, now_ns: u64) -> Result<(), RetryAfter> {
        let mut addresses = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        let slot = addresses.get_or_insert_mut(throttle_address(addr), || 0);
        let tat = AtomicU64::new(*slot);
        let result = self.gcra.check(&tat, now_ns).map(|_| ());
        *slot = tat.load(Ordering::Relaxed);
        result
    }

    /// Charges `failures` made at other replicas to `addr` (see
    /// [`crate::cluster_limits::charge`]).
    pub fn charge(&self, addr: IpAddr, failures: u64, since_ns: u64) {
        let mut addresses = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        let slot = addresses.get_or_insert_mut(throttle_address(addr), || 0);
        *slot = crate::cluster_limits::charge(*slot, failures, self.gcra.emission_ns, since_ns);
    }

    /// Addresses remembered.
    pub fn len(&self) -> usize {
        self.addresses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Whether no address is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Requests per client address (IPv6 per /64) to an endpoint anyone may
/// call without a key (leak reports): GCRA, the limit shared by every
/// request from the address. Remembers at most [`THROTTLE_CAPACITY`]
/// addresses.
#[derive(Debug)]
pub struct AddressThrottle {
    gcra: Gcra,
    addresses: Mutex<LruCache<IpAddr, u64>>,
}

/// Leak reports an address may send: a burst of 20, then one a second
/// (each may carry 100 candidates).
pub const DEFAULT_LEAK_REPORT_LIMIT: RateLimit = RateLimit {
    per_second: 1,
    burst: 20,
};

impl AddressThrottle {
    /// Allowing `limit` requests per address, remembering at most `capacity` addresses.
    pub fn new(limit: RateLimit, capacity: usize) -> Self {
        Self {
            gcra: Gcra::new(limit),
            addresses: Mutex::new(bounded(capacity)),
        }
    }

    /// Admits one request from `addr` at `now_ns`, or says how long to wait.
    pub fn admit(&self, addr: IpAddr, now_ns: u64) -> Result<(), RetryAfter> {
        let mut addresses = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        let slot = addresses.get_or_insert_mut(throttle_address(addr), || 0);
        let tat = AtomicU64::new(*slot);
        let result = self.gcra.check(&tat, now_ns).map(|_| ());
        *slot = tat.load(Ordering::Relaxed);
        result
    }

    /// Charges `requests` made at other replicas to `addr` (see
    /// [`crate::cluster_limits::charge`]).
    pub fn charge(&self, addr: IpAddr, requests: u64, since_ns: u64) {
        let mut addresses = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        let slot = addresses.get_or_insert_mut(throttle_address(addr), || 0);
        *slot = crate::cluster_limits::charge(*slot, requests, self.gcra.emission_ns, since_ns);
    }
}

/// How failed dashboard logins slow down. Each counter allows some
/// failures for free; after the first failure over that, the next attempt
/// waits `first_delay`, and the wait doubles with each further failure up
/// to `max_delay`. A counter is forgotten after `forget_after` without
/// failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginThrottlePolicy {
    /// Free failures for one account from one address.
    pub free_per_account_and_address: u32,
    /// Free failures from one address, all accounts together.
    pub free_per_address: u32,
    /// Free failures for one account from addresses that never logged in
    /// to it (those that did are not held back by this counter).
    pub free_per_account: u32,
    /// The first wait.
    pub first_delay: Duration,
    /// The longest wait.
    pub max_delay: Duration,
    /// A counter without failures for this long starts again from zero.
    pub forget_after: Duration,
    /// Entries each map keeps at most.
    pub capacity: usize,
}

impl Default for LoginThrottlePolicy {
    fn default() -> Self {
        Self {
            free_per_account_and_address: 5,
            free_per_address: 20,
            free_per_account: 100,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(24 * 3600),
            capacity: THROTTLE_CAPACITY,
        }
    }
}

/// Failures counted against one key.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    /// How long the next attempt must still wait, if at all.
    fn wait(&self, free: u32, policy: &LoginThrottlePolicy, now: Instant) -> Option<Duration> {
        if self.count <= free {
            return None;
        }
        let doublings = (self.count - free - 1).min(30);
        let delay = policy
            .first_delay
            .saturating_mul(1u32 << doublings)
            .min(policy.max_delay);
        let until = self.last + delay;
        (until > now).then(|| until - now)
    }
}

/// An (account, address) pair as a fixed-size key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PairKey(AccountKey, IpAddr);

#[derive(Debug)]
struct LoginMaps {
    pairs: LruCache<PairKey, Failures>,
    addresses: LruCache<IpAddr, Failures>,
    accounts: LruCache<AccountKey, Failures>,
    /// Pairs that logged in successfully.
    known: LruCache<PairKey, ()>,
}

/// Failed dashboard logins, counted per (account, address), per address and
/// per account, with growing delays instead of a lock. An attempt is
/// counted as a failure from the moment it is admitted (so that parallel
/// attempts cannot slip past the count) until it is known to be something
/// else.
#[derive(Debug)]
pub struct LoginThrottle {
    policy: LoginThrottlePolicy,
    maps: Mutex<LoginMaps>,
}

/// An admitted login attempt; report its outcome to the throttle.
#[derive(Debug)]
#[must_use = "report the outcome: failed, succeeded or abandoned"]
pub struct LoginAttempt {
    pair: PairKey,
}

impl LoginAttempt {
    /// The account tried.
    pub fn account(&self) -> AccountKey {
        self.pair.0
    }

    /// The address it was tried from, as the throttle counts it.
    pub fn address(&self) -> IpAddr {
        self.pair.1
    }
}

/// One of the login throttle's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginCounter {
    /// One account from one address.
    Pair(AccountKey, IpAddr),
    /// One address, all accounts.
    Address(IpAddr),
    /// One account, all addresses.
    Account(AccountKey),
}

impl LoginCounter {
    /// The three counters an attempt on `account` from `ip` counts on.
    pub fn all(account: AccountKey, ip: IpAddr) -> [Self; 3] {
        let ip = throttle_address(ip);
        [
            Self::Pair(account, ip),
            Self::Address(ip),
            Self::Account(account),
        ]
    }
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(LoginThrottlePolicy::default())
    }
}

impl LoginThrottle {
    /// A throttle with `policy`.
    pub fn new(policy: LoginThrottlePolicy) -> Self {
        Self {
            maps: Mutex::new(LoginMaps {
                pairs: bounded(policy.capacity),
                addresses: bounded(policy.capacity),
                accounts: bounded(policy.capacity),
                known: bounded(policy.capacity),
            }),
            policy,
        }
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, LoginMaps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits an attempt to log in to `email` (normalized) from `ip` at
    /// `now`, counting it, or says how long to wait.
    pub fn admit(&self, email: &str, ip: IpAddr, now: Instant) -> Result<LoginAttempt, RetryAfter> {
        let pair = PairKey(AccountKey::of(email), throttle_address(ip));
        let policy = self.policy;
        let mut maps = self.maps();
        let LoginMaps {
            pairs,
            addresses,
            accounts,
            known,
        } = &mut *maps;
        let known = known.get(&pair).is_some();
        let fresh = |f: &Failures| now.saturating_duration_since(f.last) < policy.forget_after;
        let pair_entry = pairs.get(&pair).copied().filter(fresh);
        let address_entry = addresses.get(&pair.1).copied().filter(fresh);
        let account_entry = accounts.get(&pair.0).copied().filter(fresh);
        let mut wait =
            pair_entry.and_then(|f| f.wait(policy.free_per_account_and_address, &policy, now));
        if !known {
            // An address that logged in to this account before is not held
            // back by what others do, only by its own failures.
            for candidate in [
                address_entry.and_then(|f| f.wait(policy.free_per_address, &policy, now)),
                account_entry.and_then(|f| f.wait(policy.free_per_account, &policy, now)),
            ] {
                wait = wait.max(candidate);
            }
        }
        if let Some(wait) = wait {
            return Err(RetryAfter(wait));
        }
        let count = |f: Option<Failures>| Failures {
            count: f.map_or(0, |f| f.count).saturating_add(1),
            last: now,
        };
        pairs.put(pair, count(pair_entry));
        addresses.put(pair.1, count(address_entry));
        accounts.put(pair.0, count(account_entry));
        Ok(LoginAttempt { pair })
    }

    /// The attempt failed at `now`: its count stays, and the wait runs from now.
    pub fn failed(&self, attempt: LoginAttempt, now: Instant) {
        let pair = attempt.pair;
        let mut maps = self.maps();
        if let Some(f) = maps.pairs.peek_mut(&pair) {
            f.last = now;
        }
        if let Some(f) = maps.addresses.peek_mut(&pair.1) {
            f.last = now;
        }
        if let Some(f) = maps.accounts.peek_mut(&pair.0) {
            f.last = now;
        }
    }

    /// The right password: the pair's failures are forgotten, the attempt
    /// is no failure, and this address may log in to this account past the
    /// account's counter from now on.
    pub fn succeeded(&self, attempt: LoginAttempt) {
        let pair = attempt.pair;
        let mut maps = self.maps();
        maps.pairs.pop(&pair);
        Self::uncount(&mut maps, &pair);
        maps.known.put(pair, ());
    }

    /// No verdict (the server was busy or failed): the attempt does not count.
    pub fn abandoned(&self, attempt: LoginAttempt) {
        let pair = attempt.pair;
        let mut maps = self.maps();
        if let Some(f) = maps.pairs.peek_mut(&pair) {
            f.count = f.count.saturating_sub(1);
        }
        Self::uncount(&mut maps, &pair);
    }

    fn uncount(maps: &mut LoginMaps, pair: &PairKey) {
        if let Some(f) = maps.addresses.peek_mut(&pair.1) {
            f.count = f.count.saturating_sub(1);
        }
        if let Some(f) = maps.accounts.peek_mut(&pair.0) {
            f.count = f.count.saturating_sub(1);
        }
    }

    /// Counts `failures` made at other replicas on `counter`, as of `now`.
    pub fn charge(&self, counter: LoginCounter, failures: u64, now: Instant) {
        let failures = u32::try_from(failures).unwrap_or(u32::MAX);
        let mut maps = self.maps();
        let add = |entry: Option<&mut Failures>| match entry {
            Some(f) => {
                f.count = f.count.saturating_add(failures);
                f.last = f.last.max(now);
                None
            }
            None => Some(Failures {
                count: failures,
                last: now,
            }),
        };
        match counter {
            LoginCounter::Pair(account, ip) => {
                let key = PairKey(account, ip);
                if let Some(new) = add(maps.pairs.get_mut(&key)) {
                    maps.pairs.put(key, new);
                }
            }
            LoginCounter::Address(ip) => {
                if let Some(new) = add(maps.addresses.get_mut(&ip)) {
                    maps.addresses.put(ip, new);
                }
            }
            LoginCounter::Account(account) => {
                if let Some(new) = add(maps.accounts.get_mut(&account)) {
                    maps.accounts.put(account, new);
                }
            }
        }
    }

    /// Entries in the largest map (for tests and metrics).
    pub fn len(&self) -> usize {
        let maps = self.maps();
        maps.pairs
            .len()
            .max(maps.addresses.len())
            .max(maps.accounts.len())
            .max(maps.known.len())
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn throttles_count_an_ipv6_slash_64_as_one_address() {
        assert_eq!(
            throttle_address(ip("2001:db8:1:2:aaaa::1")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            throttle_address(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(throttle_address(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(throttle_address(ip("10.1.2.3")), ip("10.1.2.3"));

        let failures = AuthFailures::default();
        for n in 0..31u16 {
            let _ = failures.record(ip(&format!("2001:db8::{n:x}")), 1_000_000_000);
        }
        assert!(failures
            .blocked(ip("2001:db8::ffff"), 1_000_000_000)
            .is_some());
    }

    #[test]
    fn the_auth_failure_map_never_grows_past_its_capacity() {
        let failures = AuthFailures::with_capacity(1000);
        for n in 0..5000u32 {
            let _ = failures.record(IpAddr::from(n.to_be_bytes()), 1_000_000_000);
        }
        assert_eq!(failures.len(), 1000);
    }

    fn policy() -> LoginThrottlePolicy {
        LoginThrottlePolicy {
            free_per_account_and_address: 2,
            free_per_address: 4,
            free_per_account: 6,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            forget_after: Duration::from_secs(3600),
            capacity: 100,
        }
    }

    #[test]
    fn the_wait_after_failed_logins_doubles_up_to_the_maximum() {
        let throttle = LoginThrottle::new(policy());
        let a = ip("10.0.0.1");
        let mut now = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..8 {
            let attempt = match throttle.admit("user@example.com", a, now) {
                Ok(attempt) => attempt,
                Err(wait) => {
                    waits.push(wait.0);
                    now += wait.0;
                    throttle
                        .admit("user@example.com", a, now)
                        .expect("admitted once the wait is over")
                }
            };
            throttle.failed(attempt, now);
        }
        // Two free failures, then 1, 2, 4, 8, 8 seconds.
        assert_eq!(
            waits,
            [1, 2, 4, 8, 8].map(Duration::from_secs).to_vec(),
            "{waits:?}"
        );
    }

    #[test]
    fn a_success_forgets_the_pairs_failures_and_lets_that_address_past_the_account_counter() {
        let throttle = LoginThrottle::new(policy());
        let now = Instant::now();
        let home = ip("10.0.0.1");
        let ok = throttle
            .admit("user@example.com", home, now)
            .expect("admitted");
        throttle.succeeded(ok);
        // One failure from each of many addresses.
        for n in 0..7 {
            let attempt = throttle
                .admit("user@example.com", ip(&format!("192.0.2.{n}")), now)
                .expect("free failures");
            throttle.failed(attempt, now);
        }
        // 7 failures on the account (6 free): a new address waits...
        assert!(throttle
            .admit("user@example.com", ip("198.51.100.1"), now)
            .is_err());
        // ...the address that logged in before does not.
        let attempt = throttle
            .admit("user@example.com", home, now)
            .expect("the known address gets through");
        throttle.succeeded(attempt);
        // Other accounts are not affected.
        let other = throttle
            .admit("other@example.com", ip("198.51.100.1"), now)
            .expect("another account");
        throttle.abandoned(other);
    }

    #[test]
    fn parallel_attempts_count_before_their_verdict_and_abandoned_ones_do_not() {
        let throttle = LoginThrottle::new(policy());
        let now = Instant::now();
        let a = ip("10.0.0.1");
        let in_flight: Vec<_> = (0..3)
            .map_while(|_| throttle.admit("user@example.com", a, now).ok())
            .collect();
        assert_eq!(in_flight.len(), 3, "two free failures, and one more");
        assert!(throttle.admit("user@example.com", a, now).is_err());
        for attempt in in_flight {
            throttle.abandoned(attempt);
        }
        let attempt = throttle
            .admit("user@example.com", a, now)
            .expect("abandoned attempts do not count");
        throttle.abandoned(attempt);
    }

    #[test]
    fn failures_are_forgotten_after_a_quiet_period() {
        let throttle = LoginThrottle::new(policy());
        let mut now = Instant::now();
        let a = ip("10.0.0.1");
        for _ in 0..3 {
            let attempt = throttle
                .admit("user@example.com", a, now)
                .expect("admitted");
            throttle.failed(attempt, now);
        }
        assert!(throttle.admit("user@example.com", a, now).is_err());
        now += Duration::from_secs(3600);
        let attempt = throttle
            .admit("user@example.com", a, now)
            .expect("forgotten");
        throttle.failed(attempt, now);
    }

    #[test]
    fn the_login_maps_never_grow_past_their_capacity() {
        let throttle = LoginThrottle::new(policy());
        let now = Instant::now();
        for n in 0..1000u32 {
            let attempt = throttle
                .admit(
                    &format!("user-{n}@example.com"),
                    IpAddr::from(n.to_be_bytes()),
                    now,
                )
                .expect("admitted");
            throttle.succeeded(attempt);
        }
        assert_eq!(throttle.len(), 100);
    }
}
