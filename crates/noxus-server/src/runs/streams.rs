//! The open event streams of this process (and the `/sync` waits): what
//! wakes each one, and how many one key or one workspace may hold.
//!
//! A stream sleeps until something concerns it, instead of asking the
//! store every 100 ms (which one key could multiply by opening streams):
//!
//! - its run has new events ([`StoreEvent::RunChanged`], published by the
//!   store for writes of this process and, on PostgreSQL, heard from the
//!   others): it reads them;
//! - its key, the key's owner or its workspace changed
//!   ([`StoreEvent::KeyChanged`], [`StoreEvent::UserChanged`],
//!   [`StoreEvent::WorkspaceChanged`], the events the key cache hears): it
//!   checks its key again (revoked, expired, owner removed or demoted: it
//!   ends with an error event);
//! - something may have been missed ([`StoreEvent::Resync`]: the listener
//!   lost or regained its connection, or a subscriber fell behind): it does
//!   both.
//!
//! One task per process ([`Streams::run_dispatch`], started by
//! [`crate::state::AppState::new`]) routes the events to the streams they
//! concern through the indexes below, so an event costs a map lookup, not
//! a look at every stream. The streams themselves keep a slow safety poll
//! and a timer at their key's expiry (see `crate::http::runs`).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::store::{
    EventSubscription, KeyId, RunId, RunSubscription, StoreEvent, UserId, WorkspaceId,
};

/// Event streams one key may hold open at once in one process, unless configured.
pub const DEFAULT_MAX_STREAMS_PER_KEY: usize = 32;
/// Event streams one workspace may hold open at once in one process, unless configured.
pub const DEFAULT_MAX_STREAMS_PER_WORKSPACE: usize = 256;

/// How many event streams may be open at once in one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Per key.
    pub per_key: usize,
    /// Per workspace (all its keys together).
    pub per_workspace: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            per_key: DEFAULT_MAX_STREAMS_PER_KEY,
            per_workspace: DEFAULT_MAX_STREAMS_PER_WORKSPACE,
        }
    }
}

/// Why a stream was not opened: a limit of [`StreamLimits`] is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooManyStreams {
    /// The key holds `limit` streams already.
    #[error("This API key already has {limit} event streams open on this server, the most it may hold at once; close one (or let a run end) before opening another")]
    Key {
        /// The limit.
        limit: usize,
    },
    /// The workspace holds `limit` streams already.
    #[error("This workspace already has {limit} event streams open on this server, the most it may hold at once; close one (or let a run end) before opening another")]
    Workspace {
        /// The limit.
        limit: usize,
    },
}

/// What woke a stream since it last looked. Wake-ups are never lost: one
/// that comes while the stream is busy is kept for its next wait.
#[derive(Debug, Default)]
pub struct Signal {
    run: AtomicBool,
    key: AtomicBool,
    notify: Notify,
}

impl Signal {
    fn wake(&self, run: bool, key: bool) {
        if run {
            self.run.store(true, Ordering::Release);
        }
        if key {
            self.key.store(true, Ordering::Release);
        }
        // Stores a permit when the stream is not waiting.
        self.notify.notify_one();
    }

    /// Resolves at the next wake-up (at once if one came since the last).
    pub async fn woken(&self) {
        self.notify.notified().await;
    }

    /// Whether the run may have new events (and forgets it).
    pub fn take_run(&self) -> bool {
        self.run.swap(false, Ordering::AcqRel)
    }

    /// Whether the key may have changed (and forgets it).
    pub fn take_key(&self) -> bool {
        self.key.swap(false, Ordering::AcqRel)
    }
}

/// Who opened a stream: what the key-side events are matched against.
#[derive(Debug, Clone)]
pub struct Opener {
    /// The key.
    pub key: KeyId,
    /// Its owner.
    pub user: UserId,
    /// Its workspace (the run's).
    pub workspace: WorkspaceId,
}

type Slots = HashMap<u64, Arc<Signal>>;

/// The streams by what concerns them; every watch is in `by_run`, the
/// streams (not the `/sync` waits) in the other three as well.
#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    by_run: HashMap<RunId, Slots>,
    by_key: HashMap<KeyId, Slots>,
    by_user: HashMap<UserId, Slots>,
    by_workspace: HashMap<WorkspaceId, Slots>,
}

fn insert<K: Eq + Hash + Clone>(
    map: &mut HashMap<K, Slots>,
    at: &K,
    id: u64,
    signal: &Arc<Signal>,
) {
    map.entry(at.clone())
        .or_default()
        .insert(id, Arc::clone(signal));
}

fn remove<K: Eq + Hash>(map: &mut HashMap<K, Slots>, at: &K, id: u64) {
    if let Some(slots) = map.get_mut(at) {
        slots.remove(&id);
        if slots.is_empty() {
            map.remove(at);
        }
    }
}

fn count<K: Eq + Hash>(map: &HashMap<K, Slots>, at: &K) -> usize {
    map.get(at).map_or(0, HashMap::len)
}

fn wake<K: Eq + Hash>(map: &HashMap<K, Slots>, at: &K, run: bool, key: bool) {
    for signal in map.get(at).into_iter().flat_map(HashMap::values) {
        signal.wake(run, key);
    }
}

/// The open streams and waits of this process. Shared (`Arc`).
#[derive(Debug, Default)]
pub struct Streams {
    registry: Mutex<Registry>,
    limits: StreamLimits,
}

impl Streams {
    /// No stream yet; at most `limits` at once.
    pub fn new(limits: StreamLimits) -> Self {
        Self {
            registry: Mutex::default(),
            limits,
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers an event stream of `run` opened by `opener`, unless the
    /// key or the workspace holds the most streams it may already.
    pub fn open(self: &Arc<Self>, run: &RunId, opener: Opener) -> Result<Watch, TooManyStreams> {
        let signal = Arc::new(Signal::default());
        let mut registry = self.registry();
        if count(&registry.by_key, &opener.key) >= self.limits.per_key {
            return Err(TooManyStreams::Key {
                limit: self.limits.per_key,
            });
        }
        if count(&registry.by_workspace, &opener.workspace) >= self.limits.per_workspace {
            return Err(TooManyStreams::Workspace {
                limit: self.limits.per_workspace,
            });
        }
        registry.next_id += 1;
        let id = registry.next_id;
        insert(&mut registry.by_run, run, id, &signal);
        insert(&mut registry.by_key, &opener.key, id, &signal);
        insert(&mut registry.by_user, &opener.user, id, &signal);
        insert(&mut registry.by_workspace, &opener.workspace, id, &signal);
        drop(registry);
        Ok(Watch {
            streams: Arc::clone(self),
            id,
            run: run.clone(),
            opener: Some(opener),
            signal,
        })
    }

    /// Registers a wait for `run`'s changes that no key-side event concerns
    /// and no limit counts (`/sync`: it creates its run, which the run
    /// quota bounds).
    pub fn watch_run(self: &Arc<Self>, run: &RunId) -> Watch {
        let signal = Arc::new(Signal::default());
        let mut registry = self.registry();
        registry.next_id += 1;
        let id = registry.next_id;
        insert(&mut registry.by_run, run, id, &signal);
        drop(registry);
        Watch {
            streams: Arc::clone(self),
            id,
            run: run.clone(),
            opener: None,
            signal,
        }
    }

    /// How many event streams are open (not counting `/sync` waits).
    pub fn open_streams(&self) -> usize {
        self.registry().by_key.values().map(HashMap::len).sum()
    }

    /// Wakes the streams an event concerns.
    pub fn apply(&self, event: &StoreEvent) {
        let registry = self.registry();
        match event {
            StoreEvent::RunChanged(run) => wake(&registry.by_run, run, true, false),
            StoreEvent::KeyChanged(key) => wake(&registry.by_key, key, false, true),
            StoreEvent::UserChanged(user) => wake(&registry.by_user, user, false, true),
            StoreEvent::WorkspaceChanged(workspace) => {
                wake(&registry.by_workspace, workspace, false, true)
            }
            StoreEvent::Resync => {
                for signal in registry.by_run.values().flat_map(HashMap::values) {
                    signal.wake(true, true);
                }
            }
        }
    }

    /// Routes the store's events to the streams until the store is gone.
    /// One such task runs per process.
    pub async fn run_dispatch(&self, mut keys: EventSubscription, mut runs: RunSubscription) {
        loop {
            let event = tokio::select! {
                event = keys.next() => event.map(|(_, event)| event),
                event = runs.next() => match event {
                    // Run changes missed: every run may have new events, no
                    // key changed.
                    Some(StoreEvent::Resync) => {
                        for signal in self.registry().by_run.values().flat_map(HashMap::values) {
                            signal.wake(true, false);
                        }
                        continue;
                    }
                    other => other,
                },
            };
            let Some(event) = event else { return };
            self.apply(&event);
        }
    }
}

/// One registered stream or wait; unregistered when dropped.
#[derive(Debug)]
pub struct Watch {
    streams: Arc<Streams>,
    id: u64,
    run: RunId,
    opener: Option<Opener>,
    signal: Arc<Signal>,
}

impl Watch {
    /// What woke it.
    pub fn signal(&self) -> &Arc<Signal> {
        &self.signal
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut registry = self.streams.registry();
        remove(&mut registry.by_run, &self.run, self.id);
        if let Some(opener) = &self.opener {
            remove(&mut registry.by_key, &opener.key, self.id);
            remove(&mut registry.by_user, &opener.user, self.id);
            remove(&mut registry.by_workspace, &opener.workspace, self.id);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn opener(key: &str, user: &str, workspace: &str) -> Opener {
        Opener {
            key: key.into(),
            user: user.into(),
            workspace: workspace.into(),
        }
    }

    fn woken(watch: &Watch) -> (bool, bool) {
        (watch.signal().take_run(), watch.signal().take_key())
    }

    #[tokio::test]
    async fn events_wake_only_the_streams_they_concern() {
        let streams = Arc::new(Streams::new(StreamLimits::default()));
        let a = streams
            .open(&"r1".into(), opener("k1", "u1", "w1"))
            .unwrap();
        let b = streams
            .open(&"r2".into(), opener("k2", "u2", "w1"))
            .unwrap();
        let sync = streams.watch_run(&"r1".into());

        streams.apply(&StoreEvent::RunChanged("r1".into()));
        assert_eq!(woken(&a), (true, false));
        assert_eq!(woken(&b), (false, false));
        assert_eq!(woken(&sync), (true, false));
        // The wake-up was kept for the next wait.
        tokio::time::timeout(std::time::Duration::from_secs(1), a.signal().woken())
            .await
            .unwrap();

        streams.apply(&StoreEvent::KeyChanged("k2".into()));
        assert_eq!(woken(&a), (false, false));
        assert_eq!(woken(&b), (false, true));
        streams.apply(&StoreEvent::UserChanged("u1".into()));
        assert_eq!(woken(&a), (false, true));
        assert_eq!(woken(&b), (false, false));
        streams.apply(&StoreEvent::WorkspaceChanged("w1".into()));
        assert_eq!(woken(&a), (false, true));
        assert_eq!(woken(&b), (false, true));
        assert_eq!(woken(&sync), (false, false), "a wait has no key");
        streams.apply(&StoreEvent::Resync);
        assert_eq!(woken(&a), (true, true));
        assert_eq!(woken(&b), (true, true));
        assert_eq!(woken(&sync), (true, true));

        // Dropped watches are gone from every index.
        drop((a, b, sync));
        let registry = streams.registry();
        assert!(registry.by_run.is_empty() && registry.by_key.is_empty());
        assert!(registry.by_user.is_empty() && registry.by_workspace.is_empty());
    }

    #[test]
    fn a_key_and_a_workspace_hold_at_most_their_limit() {
        let streams = Arc::new(Streams::new(StreamLimits {
            per_key: 2,
            per_workspace: 3,
        }));
        let run: RunId = "r".into();
        let first = streams.open(&run, opener("k1", "u", "w")).unwrap();
        let _second = streams.open(&run, opener("k1", "u", "w")).unwrap();
        assert_eq!(
            streams.open(&run, opener("k1", "u", "w")).unwrap_err(),
            TooManyStreams::Key { limit: 2 }
        );
        let _third = streams.open(&run, opener("k2", "u", "w")).unwrap();
        assert_eq!(
            streams.open(&run, opener("k3", "u", "w")).unwrap_err(),
            TooManyStreams::Workspace { limit: 3 }
        );
        // Another workspace is not concerned; waits count nowhere.
        let _elsewhere = streams.open(&run, opener("k9", "u9", "w9")).unwrap();
        let _sync = streams.watch_run(&run);
        assert_eq!(streams.open_streams(), 4);
        // A stream that ends frees its place.
        drop(first);
        streams.open(&run, opener("k1", "u", "w")).unwrap();
    }
}
