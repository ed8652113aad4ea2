//! The verified-key cache of the authentication hot path: keys by digest,
//! with the verdict computed once ([`VerifiedKey`], [`PermissionSet`]).
//!
//! Entries are dropped when the store says something that decides a key's
//! rights changed ([`crate::store::StoreEvent`], applied by
//! [`KeyCache::run_invalidation`]); the TTL bounds what an unheard change
//! could leave behind. While an event published by the store has not been
//! applied yet, the cache answers nothing (every lookup goes to the store),
//! so a change is seen by the very next request, however late the
//! invalidation task runs. While the store cannot hear other processes'
//! changes ([`EventBus::is_deaf`]: PostgreSQL's listener lost its
//! connection), the cache answers nothing and keeps nothing either: every
//! lookup goes to the database until the listener is back and the cache
//! has been cleared again.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use noxus_api::{Permission, Role};

use crate::domain::keys::KeyDigest;
use crate::rate_limit::Gcra;
use crate::store::{EventBus, EventSubscription, KeyAuthRecord, StoreEvent};
use crate::usage::KeyHot;

/// A set of permissions as bits (one per [`Permission`]), so that checking
/// and copying them on every request costs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PermissionSet(u32);

impl PermissionSet {
    /// The permissions a key has (see [`noxus_api::effective_permissions`]):
    /// its owner's role, plus the organization permissions for a tenant-admin
    /// key of an organization admin, narrowed by its restriction; without a
    /// restriction, no management permission unless it is a tenant-admin key.
    pub fn of(role: Option<Role>, tenant_admin: bool, restriction: Option<&[Permission]>) -> Self {
        Self::from_slice(&noxus_api::effective_permissions(
            role,
            tenant_admin,
            restriction,
        ))
    }

    /// The set of the given permissions.
    pub fn from_slice(permissions: &[Permission]) -> Self {
        Self(
            permissions
                .iter()
                .fold(0u32, |acc, p| acc | (1 << (*p as u32))),
        )
    }

    /// Whether `permission` is in the set.
    pub fn contains(self, permission: Permission) -> bool {
        self.0 & (1 << (permission as u32)) != 0
    }

    /// Whether every permission of `self` is in `other`.
    pub fn is_subset_of(self, other: Self) -> bool {
        self.0 & !other.0 == 0
    }

    /// The permissions of `self` missing from `other`.
    pub fn missing_from(self, other: Self) -> Vec<Permission> {
        Self(self.0 & !other.0).to_vec()
    }

    /// Both sets.
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Only the permissions in both.
    pub fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// Only the organization permissions.
    pub fn organization_part(self) -> Self {
        self.intersection(Self::from_slice(Permission::ORGANIZATION))
    }

    /// The permissions, in the order of [`Permission::ALL`].
    pub fn to_vec(self) -> Vec<Permission> {
        Permission::ALL
            .iter()
            .copied()
            .filter(|p| self.contains(*p))
            .collect()
    }
}

/// A key as the cache holds it: the stored record and the verdict computed
/// from it once, plus the key's hot state (rate limit, last use).
#[derive(Debug)]
pub struct VerifiedKey {
    /// The key and its owner, as loaded.
    pub record: KeyAuthRecord,
    /// Effective permissions (role narrowed by restriction); empty without a role.
    pub permissions: PermissionSet,
    /// A tenant-admin key whose owner is still an active organization admin.
    pub tenant_admin: bool,
    /// Expiry in Unix milliseconds.
    expires_at_ms: Option<i64>,
    /// Rate-limit and last-use state.
    pub hot: Arc<KeyHot>,
    /// The key's limit: its own, else its workspace's, else the server's.
    pub gcra: Option<Gcra>,
}

impl VerifiedKey {
    pub(crate) fn new(
        record: KeyAuthRecord,
        hot: Arc<KeyHot>,
        server_default: Option<Gcra>,
    ) -> Self {
        let gcra = record
            .key
            .rate_limit
            .or(record.workspace_rate_limit)
            .map(Gcra::new)
            .or(server_default);
        hot.set_emission(gcra.map_or(0, |g| g.emission_ns()));
        let tenant_admin =
            record.key.tenant_admin && record.user_is_org_admin && record.user_active;
        let permissions = if record.user_active {
            PermissionSet::of(record.role, tenant_admin, record.key.restriction.as_deref())
        } else {
            PermissionSet::default()
        };
        let expires_at_ms = record
            .key
            .expires_at
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64);
        Self {
            record,
            permissions,
            tenant_admin,
            expires_at_ms,
            hot,
            gcra,
        }
    }

    /// Whether the key's expiry is at or before `now_ms` (Unix milliseconds).
    pub fn expired_at(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }
}

/// Hashes a key digest for the cache map by taking 8 of its bytes: the
/// digest is already uniformly distributed, so hashing it again is waste.
#[derive(Debug, Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }

    fn write_usize(&mut self, _length_prefix: usize) {}
}

type DigestMap<V> = HashMap<KeyDigest, V, BuildHasherDefault<DigestHasher>>;

/// Verified keys by digest (see the module's documentation for when entries go).
#[derive(Debug)]
pub struct KeyCache {
    entries: RwLock<DigestMap<CacheEntry>>,
    /// Bumped on every invalidation; a lookup that started before an
    /// invalidation must not insert what it read.
    generation: AtomicU64,
    /// The store's count of published events ([`EventBus::published`]).
    published: Arc<AtomicU64>,
    /// How many of them this cache applied.
    applied: AtomicU64,
    /// The store cannot hear other processes' changes ([`EventBus::is_deaf`]).
    deaf: Arc<AtomicBool>,
    ttl: Duration,
    capacity: usize,
    /// Invalidations applied (store events that concern keys), for the metrics.
    invalidations: AtomicU64,
}

#[derive(Debug, Clone)]
struct CacheEntry {
    key: Arc<VerifiedKey>,
    loaded_at: Instant,
}

impl KeyCache {
    /// A cache with the given time-to-live and maximum number of keys, fed
    /// by the events of `bus` (run [`KeyCache::run_invalidation`] on a
    /// subscription taken before the cache is used).
    pub fn new(ttl: Duration, capacity: usize, bus: &EventBus) -> Self {
        let published = bus.published_counter();
        let applied = AtomicU64::new(published.load(Ordering::Acquire));
        Self {
            entries: RwLock::new(DigestMap::default()),
            generation: AtomicU64::new(0),
            published,
            applied,
            deaf: bus.deaf_flag(),
            ttl,
            capacity,
            invalidations: AtomicU64::new(0),
        }
    }

    /// The cached key, unless it is older than the TTL, a change is
    /// waiting to be applied, or the store is deaf.
    pub(crate) fn get(&self, digest: &KeyDigest, now: Instant) -> Option<Arc<VerifiedKey>> {
        if self.ttl.is_zero() || !self.is_current() {
            return None;
        }
        let entries = self
            .entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries
            .get(digest)
            .filter(|e| now.saturating_duration_since(e.loaded_at) < self.ttl)
            .map(|e| Arc::clone(&e.key))
    }

    /// Whether every event the store published was applied and the store
    /// hears every change (it is not deaf).
    fn is_current(&self) -> bool {
        !self.deaf.load(Ordering::Acquire)
            && self.applied.load(Ordering::Acquire) >= self.published.load(Ordering::Acquire)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn insert(&self, digest: KeyDigest, key: Arc<VerifiedKey>, seen_generation: u64) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Checked under the write lock, which invalidations also take.
        // Nothing is kept while deaf: what was read may already be stale.
        if self.generation() != seen_generation || self.deaf.load(Ordering::Acquire) {
            return;
        }
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, e| e.loaded_at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            digest,
            CacheEntry {
                key,
                loaded_at: Instant::now(),
            },
        );
    }

    fn invalidate_where(&self, matches: impl Fn(&KeyAuthRecord) -> bool) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.invalidations.fetch_add(1, Ordering::Relaxed);
        entries.retain(|_, e| !matches(&e.key.record));
    }

    /// Applies one store event: forgets the keys it concerns.
    pub fn apply(&self, event: &StoreEvent) {
        match event {
            StoreEvent::KeyChanged(id) => self.invalidate_where(|r| r.key.id == *id),
            StoreEvent::UserChanged(id) => self.invalidate_where(|r| r.key.user_id == *id),
            StoreEvent::WorkspaceChanged(id) => {
                self.invalidate_where(|r| r.key.workspace_id == *id)
            }
            StoreEvent::Resync => self.invalidate_where(|_| true),
            // Concerns no key (and travels on the runs' channel anyway).
            StoreEvent::RunChanged(_) => {}
        }
    }

    /// Applies the store's events as they come, until the store is gone.
    /// One such task runs per process ([`crate::startup`] starts it).
    pub async fn run_invalidation(&self, mut events: EventSubscription) {
        while let Some((seq, event)) = events.next().await {
            self.apply(&event);
            if seq > 0 {
                self.applied.fetch_max(seq, Ordering::AcqRel);
            }
        }
    }

    /// How many keys are cached.
    pub fn len(&self) -> usize {
        self.entries.read().map(|e| e.len()).unwrap_or(0)
    }

    /// Invalidations applied so far (each store event about a key, a
    /// user or a workspace, and each order to forget everything).
    pub fn invalidations(&self) -> u64 {
        self.invalidations.load(Ordering::Relaxed)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::KeyRecord;
    use crate::usage::UsageRecorder;

    fn verified(id: &str) -> Arc<VerifiedKey> {
        let key = KeyRecord {
            id: id.into(),
            workspace_id: "w".into(),
            user_id: "u".into(),
            name: "k".to_owned(),
            digest: KeyDigest::from_hex(&"ab".repeat(32)).unwrap(),
            prefix: "nx_0123456".to_owned(),
            suffix: "wxyz".to_owned(),
            tenant_admin: false,
            restriction: None,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            expires_at: None,
            revoked_at: None,
            replaced_by: None,
            last_used_at: None,
            rate_limit: None,
            last_used_addr: None,
            revoked_reason: None,
        };
        let hot = UsageRecorder::default().key(&key.id, &key.workspace_id);
        let record = KeyAuthRecord {
            key,
            organization_id: "o".into(),
            workspace_name: "W".to_owned(),
            role: Some(Role::Member),
            user_email: "m@example.com".to_owned(),
            user_is_org_admin: false,
            user_active: true,
            workspace_rate_limit: None,
        };
        Arc::new(VerifiedKey::new(record, hot, None))
    }

    /// Applies every event published so far, as the invalidation task does.
    async fn drain(cache: &KeyCache, events: &mut EventSubscription, bus: &EventBus) {
        while cache.applied.load(Ordering::Acquire) < bus.published() {
            let (seq, event) = events.next().await.unwrap();
            cache.apply(&event);
            cache.applied.fetch_max(seq, Ordering::AcqRel);
        }
    }

    #[tokio::test]
    async fn a_deaf_store_empties_the_cache_and_keeps_it_empty_until_it_hears_again() {
        let bus = EventBus::new();
        let mut events = bus.subscribe();
        let cache = KeyCache::new(Duration::from_secs(60), 100, &bus);
        let digest = KeyDigest::from_hex(&"cd".repeat(32)).unwrap();
        cache.insert(digest, verified("k1"), cache.generation());
        assert!(cache.get(&digest, Instant::now()).is_some());

        // The listener lost its connection: the entry is not served, even
        // before the invalidation task ran, and is gone once it has.
        bus.went_deaf();
        assert!(cache.get(&digest, Instant::now()).is_none());
        drain(&cache, &mut events, &bus).await;
        assert!(cache.is_empty());
        // Nothing is served or kept while deaf, events all applied or not.
        cache.insert(digest, verified("k1"), cache.generation());
        assert!(cache.is_empty());
        assert!(cache.get(&digest, Instant::now()).is_none());

        // A lookup that started while deaf cannot insert after the listener is back.
        let started_deaf = cache.generation();
        bus.hears_again();
        assert!(cache.get(&digest, Instant::now()).is_none());
        drain(&cache, &mut events, &bus).await;
        cache.insert(digest, verified("k1"), started_deaf);
        assert!(cache.is_empty());
        // Then caching resumes.
        cache.insert(digest, verified("k1"), cache.generation());
        assert!(cache.get(&digest, Instant::now()).is_some());
    }
}
