//! Per-key usage, counted off the request path: each request updates its
//! key's in-memory state (a few atomics and one uncontended lock); a
//! background task writes the batch to the store every second, and a
//! graceful shutdown writes the rest. What is stored: per key and hour, the
//! requests and their outcomes (2xx / 4xx / 5xx, 401, 403, 429); the last
//! use and its address; the addresses the key was used from (IPv6 counted
//! per /64), at most a configured number per key, the least recently seen
//! evicted first. If the process is killed, at most one flush interval
//! (1 s) of counts is lost.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;

use crate::store::{KeyId, KeyUsageFlush, Store, UsageCounts, WorkspaceId};

/// How often pending usage is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Default of [`crate::Config::max_addresses_per_key`].
pub const DEFAULT_MAX_ADDRESSES_PER_KEY: usize = 100;

/// The address a use is counted from: an IPv4 address as it is, an IPv6
/// address by its /64 network (a host usually owns a whole /64 and can pick
/// a new address in it for every request). IPv4-mapped IPv6 addresses count
/// as IPv4.
pub fn address_network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// How an address (from [`address_network`]) is stored and shown:
/// `203.0.113.7`, or `2001:db8:1:2::/64`.
pub fn address_text(network: IpAddr) -> String {
    match network {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

/// Reads [`address_text`] back.
pub fn parse_address_text(text: &str) -> Option<IpAddr> {
    text.strip_suffix("/64").unwrap_or(text).parse().ok()
}

/// Addresses with when each was last seen, at most `capacity` of them: a
/// new one beyond that evicts the least recently seen. Every operation is
/// O(log n).
#[derive(Debug)]
pub struct RecentAddresses {
    capacity: usize,
    /// Address → (last seen in Unix ms, sequence number of that sighting).
    seen: HashMap<IpAddr, (i64, u64)>,
    /// The same entries, least recently seen first.
    order: BTreeSet<(i64, u64, IpAddr)>,
    next_seq: u64,
}

impl RecentAddresses {
    /// An empty set that keeps at most `capacity` (at least 1) addresses.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            seen: HashMap::new(),
            order: BTreeSet::new(),
            next_seq: 0,
        }
    }

    /// Notes that `addr` was seen at `unix_ms` (an older time than the one
    /// known changes nothing); evicts the least recently seen address if
    /// that makes one too many.
    pub fn touch(&mut self, addr: IpAddr, unix_ms: i64) {
        if let Some(&(ms, seq)) = self.seen.get(&addr) {
            if ms > unix_ms {
                return;
            }
            self.order.remove(&(ms, seq, addr));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.seen.insert(addr, (unix_ms, seq));
        self.order.insert((unix_ms, seq, addr));
        while self.order.len() > self.capacity {
            if let Some((_, _, evicted)) = self.order.pop_first() {
                self.seen.remove(&evicted);
            }
        }
    }

    /// How many addresses are kept.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Whether `addr` is kept.
    pub fn contains(&self, addr: &IpAddr) -> bool {
        self.seen.contains_key(addr)
    }

    /// Takes every address out, least recently seen first, with its time.
    pub fn drain(&mut self) -> Vec<(IpAddr, i64)> {
        self.seen.clear();
        std::mem::take(&mut self.order)
            .into_iter()
            .map(|(ms, _, addr)| (addr, ms))
            .collect()
    }
}

#[derive(Debug)]
struct Addresses {
    /// The exact address of the latest use (shown as "last used from").
    last: Option<IpAddr>,
    /// When `last` was last seen.
    last_ms: i64,
    /// Networks seen since the last flush, bounded: a key used from
    /// thousands of addresses within a second costs no more memory (or
    /// rows written) than the store keeps anyway.
    pending: RecentAddresses,
}

/// The hot state of one key.
#[derive(Debug)]
pub struct KeyHot {
    key_id: KeyId,
    workspace_id: WorkspaceId,
    /// GCRA theoretical arrival time, in the clock's nanoseconds.
    pub tat: AtomicU64,
    /// What one request costs of `tat` under the key's current limit (0: no limit).
    emission_ns: AtomicU64,
    /// Spending not yet synced with other replicas ([`crate::cluster_limits`]).
    pub sync: KeySync,
    last_used_ms: AtomicI64,
    addresses: Mutex<Addresses>,
    /// The hour the atomic counters below count.
    hour: AtomicI64,
    /// This hour's counts since the last flush (the common, lock-free
    /// case): answers that were not 2xx, 4xx or 5xx, then 2xx, 4xx, 5xx,
    /// 401, 403 and 429. The number of requests is the sum of the first
    /// four, so that a 200 costs one atomic addition, not two.
    hot_counts: [AtomicU64; 7],
    /// Counts of other hours since the last flush (at an hour boundary).
    counts: Mutex<Vec<(i64, UsageCounts)>>,
    dirty: AtomicBool,
    /// When `dirty` was last set (Unix ms): the age of the oldest use not
    /// written yet, for the flush lag.
    dirty_since_ms: AtomicI64,
}

/// A key's spending not yet synced with other replicas.
#[derive(Debug, Default)]
pub struct KeySync {
    /// Requests admitted since the last sync.
    pub spent: AtomicI64,
    /// Whether the key was used since the last sync.
    pub active: AtomicBool,
}

impl KeyHot {
    /// The key's id.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Notes what one request costs under the key's limit (when the key
    /// is loaded; a limit can change with a reload).
    pub fn set_emission(&self, emission_ns: u64) {
        self.emission_ns.store(emission_ns, Ordering::Relaxed);
    }

    /// Charges `requests` admitted at other replicas since `since_ns` to
    /// the key's limit.
    pub fn charge(&self, requests: u64, since_ns: u64) {
        let emission_ns = self.emission_ns.load(Ordering::Relaxed);
        if emission_ns == 0 {
            return;
        }
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(crate::cluster_limits::charge(
                    tat,
                    requests,
                    emission_ns,
                    since_ns,
                ))
            });
    }

    /// Notes a use at `unix_ms` from `addr` (called once the key is verified).
    pub fn touch(&self, unix_ms: i64, addr: Option<IpAddr>) {
        let Some(addr) = addr else {
            self.last_used_ms.store(unix_ms, Ordering::Relaxed);
            self.mark_dirty(unix_ms);
            return;
        };
        {
            let mut a = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
            // The common case, the same address again, only moves a time;
            // the previous address's last sighting is recorded when the
            // address changes, and the current one's when it is flushed.
            if unix_ms < a.last_ms {
                // Concurrent requests are checked as of their start, so an
                // earlier sighting can come second: it counts for its
                // address, and the latest stays the key's last use.
                a.pending.touch(address_network(addr), unix_ms);
            } else if a.last != Some(addr) {
                if let Some(previous) = a.last {
                    let previous_ms = a.last_ms;
                    a.pending.touch(address_network(previous), previous_ms);
                }
                a.last = Some(addr);
                a.last_ms = unix_ms;
                a.pending.touch(address_network(addr), unix_ms);
            } else {
                a.last_ms = unix_ms;
            }
            self.last_used_ms.store(a.last_ms, Ordering::Relaxed);
        }
        self.mark_dirty(unix_ms);
    }

    /// Counts an answer with `status` at `unix_ms`.
    pub fn count(&self, status: u16, unix_ms: i64) {
        let hour = unix_ms.div_euclid(3_600_000);
        if self.hour.load(Ordering::Acquire) == hour {
            let add = |i: usize| {
                self.hot_counts[i].fetch_add(1, Ordering::Relaxed);
            };
            match status {
                200..=299 => add(1),
                400..=499 => add(2),
                500..=599 => add(3),
                _ => add(0),
            }
            match status {
                401 => add(4),
                403 => add(5),
                429 => add(6),
                _ => {}
            }
            self.mark_dirty(unix_ms);
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
        self.mark_dirty(unix_ms);
    }

    fn mark_dirty(&self, unix_ms: i64) {
        if !self.dirty.load(Ordering::Relaxed) {
            self.dirty_since_ms.store(unix_ms, Ordering::Relaxed);
            self.dirty.store(true, Ordering::Release);
        }
    }

    fn drain_hot(&self) -> UsageCounts {
        let take = |i: usize| self.hot_counts[i].swap(0, Ordering::AcqRel);
        let other = take(0);
        let ok = take(1);
        let client_errors = take(2);
        let server_errors = take(3);
        UsageCounts {
            requests: other + ok + client_errors + server_errors,
            ok,
            client_errors,
            server_errors,
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
            if let Some(last) = a.last {
                let last_ms = a.last_ms;
                a.pending.touch(address_network(last), last_ms);
            }
            (a.pending.drain(), a.last)
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
                .filter_map(|(addr, ms)| Some((address_text(addr), at(ms)?)))
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
            if let Some(ip) = parse_address_text(&addr) {
                a.pending
                    .touch(ip, (at.unix_timestamp_nanos() / 1_000_000) as i64);
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
#[derive(Debug)]
pub struct UsageRecorder {
    keys: Mutex<HashMap<KeyId, Arc<KeyHot>>>,
    max_addresses_per_key: usize,
}

impl Default for UsageRecorder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_ADDRESSES_PER_KEY)
    }
}

impl UsageRecorder {
    /// A recorder that keeps (in memory and in the store) at most
    /// `max_addresses_per_key` addresses per key.
    pub fn new(max_addresses_per_key: usize) -> Self {
        Self {
            keys: Mutex::default(),
            max_addresses_per_key: max_addresses_per_key.max(1),
        }
    }

    /// The hot state of a key (created on first use; called on cache misses only).
    pub fn key(&self, key_id: &KeyId, workspace_id: &WorkspaceId) -> Arc<KeyHot> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(keys.entry(key_id.clone()).or_insert_with(|| {
            Arc::new(KeyHot {
                key_id: key_id.clone(),
                workspace_id: workspace_id.clone(),
                tat: AtomicU64::new(0),
                emission_ns: AtomicU64::new(0),
                sync: KeySync::default(),
                last_used_ms: AtomicI64::new(0),
                addresses: Mutex::new(Addresses {
                    last: None,
                    last_ms: 0,
                    pending: RecentAddresses::new(self.max_addresses_per_key),
                }),
                hour: AtomicI64::new(i64::MIN),
                hot_counts: Default::default(),
                counts: Mutex::new(Vec::new()),
                dirty: AtomicBool::new(false),
                dirty_since_ms: AtomicI64::new(0),
            })
        }))
    }

    /// Writes everything counted since the last flush; on failure it is kept for the next try.
    pub async fn flush(&self, store: &dyn Store) -> FlushReport {
        let mut oldest_ms = i64::MAX;
        let dirty: Vec<Arc<KeyHot>> = {
            let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            keys.values()
                .filter(|k| k.dirty.swap(false, Ordering::AcqRel))
                .inspect(|k| oldest_ms = oldest_ms.min(k.dirty_since_ms.load(Ordering::Relaxed)))
                .cloned()
                .collect()
        };
        if dirty.is_empty() {
            return FlushReport::default();
        }
        let now_ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let lag = Duration::from_millis(u64::try_from(now_ms - oldest_ms).unwrap_or(0));
        let batch: Vec<KeyUsageFlush> = dirty.iter().map(|k| k.take()).collect();
        let started = std::time::Instant::now();
        let written = store.record_usage(&batch, self.max_addresses_per_key).await;
        let report = FlushReport {
            keys: batch.len(),
            lag,
            took: started.elapsed(),
            failed: written.is_err(),
        };
        if let Err(err) = written {
            tracing::warn!(error = %err, keys = batch.len(), "cannot record key usage; will retry");
            for (key, flush) in dirty.iter().zip(batch) {
                key.put_back(flush);
            }
        }
        report
    }
}

/// What a usage flush did, for the metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlushReport {
    /// Keys written (or tried).
    pub keys: usize,
    /// Age of the oldest use written: how far behind the store was.
    pub lag: Duration,
    /// How long the write took.
    pub took: Duration,
    /// Whether the write failed (the counts are kept for the next flush).
    pub failed: bool,
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

/// Deletes hourly usage, and addresses last seen, more than `retention_days` ago.
pub async fn prune(store: &dyn Store, retention_days: u32) {
    let now_hour = OffsetDateTime::now_utc().unix_timestamp().div_euclid(3600);
    let before = now_hour - i64::from(retention_days) * 24;
    match store.prune_usage(before).await {
        Ok(0) => {}
        Ok(rows) => tracing::info!(rows, retention_days, "pruned old usage"),
        Err(err) => tracing::warn!(error = %err, "cannot prune old usage"),
    }
}

/// A request's slot for its key: the request layer puts one in the
/// request's extensions, authentication fills it (the key, then its
/// rate-limit state), and the request layer reads it back to count the
/// answer against the key and to add the `RateLimit-*` headers. It also
/// carries the connection's peer address: the connection layer creates the
/// slot with it, so that a request carries one extension of ours, not two.
#[derive(Debug, Clone)]
pub struct KeySlot(Arc<SlotInner>);

#[derive(Debug)]
struct SlotInner {
    peer: Option<std::net::SocketAddr>,
    /// When the request was handed to the application: the moment its
    /// latency counts from, and the one its key is checked at.
    started: std::time::Instant,
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    key: Option<RequestKey>,
}

impl Default for KeySlot {
    /// The slot of a request that did not come over our connection layer,
    /// starting now.
    fn default() -> Self {
        Self(Arc::new(SlotInner {
            peer: None,
            started: std::time::Instant::now(),
            state: Mutex::default(),
        }))
    }
}

impl KeySlot {
    /// The slot of a request that came over a connection from `peer`, handed
    /// to the application at `started`.
    pub fn for_peer(peer: std::net::SocketAddr, started: std::time::Instant) -> Self {
        Self(Arc::new(SlotInner {
            peer: Some(peer),
            started,
            state: Mutex::default(),
        }))
    }

    /// The connection's peer, when the connection layer made the slot.
    pub fn peer(&self) -> Option<std::net::SocketAddr> {
        self.0.peer
    }

    /// When the request was handed to the application.
    pub fn started(&self) -> std::time::Instant {
        self.0.started
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Names the key of the request and its rate-limit state, once, when
    /// its check is over (one lock per request).
    pub fn set_key(&self, key: RequestKey) {
        self.lock().key = Some(key);
    }

    /// The request's key, if it presented a known one, taken out of the
    /// slot once the answer is ready.
    pub fn finish(&self) -> Option<RequestKey> {
        self.lock().key.take()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv6_addresses_count_per_64_and_ipv4_as_they_are() {
        let a = address_network(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"));
        let b = address_network(ip("2001:db8:1:2::1"));
        let other = address_network(ip("2001:db8:1:3::1"));
        assert_eq!(a, b, "one /64, one address");
        assert_ne!(a, other);
        assert_eq!(address_text(a), "2001:db8:1:2::/64");
        assert_eq!(parse_address_text(&address_text(a)), Some(a));
        assert_eq!(
            address_text(address_network(ip("203.0.113.7"))),
            "203.0.113.7"
        );
        assert_eq!(
            address_network(ip("::ffff:203.0.113.7")),
            ip("203.0.113.7"),
            "IPv4-mapped counts as IPv4"
        );
        assert_eq!(parse_address_text("203.0.113.7"), Some(ip("203.0.113.7")));
        assert_eq!(parse_address_text("nonsense/64"), None);
    }

    #[test]
    fn recent_addresses_evict_the_least_recently_seen() {
        let mut recent = RecentAddresses::new(3);
        recent.touch(ip("10.0.0.1"), 1);
        recent.touch(ip("10.0.0.2"), 2);
        recent.touch(ip("10.0.0.3"), 3);
        // Seen again: now the most recent.
        recent.touch(ip("10.0.0.1"), 4);
        recent.touch(ip("10.0.0.4"), 5);
        assert_eq!(recent.len(), 3);
        assert!(
            !recent.contains(&ip("10.0.0.2")),
            "least recently seen went"
        );
        assert!(recent.contains(&ip("10.0.0.1")));
        // An older sighting than the one known changes nothing.
        recent.touch(ip("10.0.0.3"), 0);
        recent.touch(ip("10.0.0.5"), 6);
        assert!(!recent.contains(&ip("10.0.0.3")));
        assert_eq!(
            recent.drain(),
            vec![
                (ip("10.0.0.1"), 4),
                (ip("10.0.0.4"), 5),
                (ip("10.0.0.5"), 6)
            ]
        );
        assert!(recent.is_empty());

        let mut many = RecentAddresses::new(100);
        for i in 0..10_000u32 {
            many.touch(
                IpAddr::from(std::net::Ipv4Addr::from(0x7f01_0000 + i)),
                i64::from(i),
            );
        }
        assert_eq!(many.len(), 100);
        let kept = many.drain();
        assert_eq!(kept.first().map(|k| k.1), Some(9_900));
        assert_eq!(kept.last().map(|k| k.1), Some(9_999));
    }

    #[test]
    fn an_earlier_use_checked_second_does_not_become_the_last_use() {
        let recorder = UsageRecorder::new(50);
        let key = recorder.key(&"k".into(), &"w".into());
        key.touch(2_000, Some(ip("10.0.0.2")));
        // A request that started earlier, from another address, checked
        // after the one above (concurrent requests).
        key.touch(1_000, Some(ip("10.0.0.1")));
        let flush = key.take();
        let (at, addr) = flush.last_used.unwrap();
        assert_eq!(addr.as_deref(), Some("10.0.0.2"));
        assert_eq!(at.unix_timestamp_nanos(), 2_000 * 1_000_000);
        let mut texts: Vec<&str> = flush.addresses.iter().map(|(a, _)| a.as_str()).collect();
        texts.sort_unstable();
        assert_eq!(texts, vec!["10.0.0.1", "10.0.0.2"], "both addresses count");
    }

    #[test]
    fn a_key_used_from_thousands_of_addresses_flushes_at_most_its_bound() {
        let recorder = UsageRecorder::new(50);
        let key = recorder.key(&"k".into(), &"w".into());
        for i in 0..5_000u32 {
            let v6 = Ipv6Addr::from(0x2001_0db8_0000_0001_0000_0000_0000_0000u128 + u128::from(i));
            key.touch(1_000 + i64::from(i), Some(IpAddr::V6(v6)));
        }
        for i in 0..5_000u32 {
            let v4 = std::net::Ipv4Addr::from(0x7f02_0000 + i);
            key.touch(10_000 + i64::from(i), Some(IpAddr::V4(v4)));
        }
        let flush = key.take();
        assert_eq!(flush.addresses.len(), 50);
        assert_eq!(
            flush.last_used.and_then(|(_, addr)| addr).as_deref(),
            Some("127.2.19.135"),
            "the last use keeps its exact address"
        );
        let again = UsageRecorder::new(50).key(&"k2".into(), &"w".into());
        for i in 0..5_000u32 {
            let v6 = Ipv6Addr::from(0x2001_0db8_0000_0001_0000_0000_0000_0000u128 + u128::from(i));
            again.touch(1_000 + i64::from(i), Some(IpAddr::V6(v6)));
        }
        let flush = again.take();
        let texts: Vec<&str> = flush.addresses.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(texts, vec!["2001:db8:0:1::/64"], "one /64 is one address");
    }
}
