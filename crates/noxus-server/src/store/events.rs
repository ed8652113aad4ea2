//! What changed, as the store tells it: every mutating store call publishes
//! the events of its change once its transaction committed (never after a
//! rollback). One task per process feeds them to the verified-key cache
//! ([`crate::key_cache::KeyCache`]), so no handler invalidates anything by hand.
//!
//! Two kinds travel apart. What can change a key's rights (keys, users,
//! workspaces) is numbered and counted ([`EventBus::subscribe`],
//! [`EventBus::published`]). That a run has new events
//! ([`StoreEvent::RunChanged`], for the open event streams,
//! [`EventBus::subscribe_runs`]) is neither numbered nor counted: runs
//! change many times a second, concern no key, and must neither hold the
//! key cache back (it answers nothing while a counted event is unapplied)
//! nor make its subscription lag (which empties it).
//!
//! Read-your-writes within a process: a change is published before the
//! store call returns, and the cache is bypassed while any published event
//! has not been applied yet ([`EventBus::published`] against the cache's
//! applied count), so the response to a revocation is never followed by a
//! request that the stale cache lets through, however late the task runs.
//!
//! Deafness: a store that hears other processes' changes over a connection
//! (PostgreSQL's listener) says so when that connection drops
//! ([`EventBus::went_deaf`]): from then until it hears again and has told
//! everyone to forget everything ([`EventBus::hears_again`]), the cache
//! answers nothing and keeps nothing, so every request looks its key up in
//! the database, where a change made elsewhere meanwhile is seen at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

/// A change that can alter what a key may do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StoreEvent {
    /// A key was created, revoked, rotated or re-hashed.
    KeyChanged(super::KeyId),
    /// A user's standing changed: a role in a workspace, removal from one,
    /// (de)activation, organization admin or not.
    UserChanged(super::UserId),
    /// A workspace was created, deleted, or its settings (rate limit) changed.
    WorkspaceChanged(super::WorkspaceId),
    /// A run has new events (it was claimed, progressed, ended or was
    /// stopped): its open event streams read them. Published on the runs'
    /// channel ([`EventBus::subscribe_runs`]), never to the key cache.
    RunChanged(super::RunId),
    /// Events may have been missed (another process's changes could not be
    /// heard for a while): forget everything.
    Resync,
}

impl StoreEvent {
    /// The event as one short line (`k:<id>`, `u:<id>`, `w:<id>`, `r:<id>`,
    /// `*`), as sent between processes.
    pub fn encode(&self) -> String {
        match self {
            Self::KeyChanged(id) => format!("k:{id}"),
            Self::UserChanged(id) => format!("u:{id}"),
            Self::WorkspaceChanged(id) => format!("w:{id}"),
            Self::RunChanged(id) => format!("r:{id}"),
            Self::Resync => "*".to_owned(),
        }
    }

    /// The event back from [`StoreEvent::encode`]; anything unknown is a
    /// [`StoreEvent::Resync`] (forgetting too much is safe, too little is
    /// not). A process older than [`StoreEvent::RunChanged`] never hears
    /// one: run changes go out on a channel of their own, which it does
    /// not listen to.
    pub fn decode(text: &str) -> Self {
        match text.split_once(':') {
            Some(("k", id)) if !id.is_empty() => Self::KeyChanged(id.into()),
            Some(("u", id)) if !id.is_empty() => Self::UserChanged(id.into()),
            Some(("w", id)) if !id.is_empty() => Self::WorkspaceChanged(id.into()),
            Some(("r", id)) if !id.is_empty() => Self::RunChanged(id.into()),
            _ => Self::Resync,
        }
    }

    /// Whether the event travels on the runs' channel
    /// ([`EventBus::subscribe_runs`]) rather than the counted one.
    pub fn is_run(&self) -> bool {
        matches!(self, Self::RunChanged(_))
    }
}

/// How many events a slow subscriber may fall behind before it is told it
/// lagged (and then forgets everything).
const CAPACITY: usize = 4096;

/// The store's channel of committed changes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sender: broadcast::Sender<(u64, StoreEvent)>,
    /// [`StoreEvent::RunChanged`], and [`StoreEvent::Resync`] when some may
    /// have been missed: unnumbered, uncounted.
    runs: broadcast::Sender<StoreEvent>,
    /// Sequence number of the last published event.
    published: Arc<AtomicU64>,
    /// Whether other processes' changes can go unheard right now.
    deaf: Arc<AtomicBool>,
    /// Numbering and sending under one lock, so that subscribers receive
    /// events in the order of their numbers.
    order: Mutex<()>,
    /// Notifications heard from other processes (PostgreSQL), for the metrics.
    notifications: AtomicU64,
    /// Times the listener connection was made again after a loss.
    reconnects: AtomicU64,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A bus with no subscriber yet.
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(CAPACITY);
        let (runs, _) = broadcast::channel(CAPACITY);
        Self {
            inner: Arc::new(Inner {
                sender,
                runs,
                published: Arc::new(AtomicU64::new(0)),
                deaf: Arc::new(AtomicBool::new(false)),
                order: Mutex::new(()),
                notifications: AtomicU64::new(0),
                reconnects: AtomicU64::new(0),
            }),
        }
    }

    /// Publishes committed changes (called after the commit, before the
    /// store call returns). Run changes go to the runs' channel, unnumbered.
    pub fn publish(&self, events: impl IntoIterator<Item = StoreEvent>) {
        let _order = self
            .inner
            .order
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for event in events {
            if event.is_run() {
                // No subscriber is fine (no stream is open).
                let _ = self.inner.runs.send(event);
                continue;
            }
            let seq = self.inner.published.fetch_add(1, Ordering::AcqRel) + 1;
            // No subscriber is fine (a store used without a server).
            let _ = self.inner.sender.send((seq, event));
        }
    }

    /// The sequence number of the last published event.
    pub fn published(&self) -> u64 {
        self.inner.published.load(Ordering::Acquire)
    }

    /// The counter behind [`EventBus::published`], for a reader on the hot
    /// path that must not hold the bus.
    pub fn published_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.inner.published)
    }

    /// The process can no longer hear changes made by other processes (its
    /// listener lost its connection): marks the bus deaf — the key cache
    /// answers nothing and keeps nothing from now on — then publishes
    /// [`StoreEvent::Resync`], which clears the cache at once.
    pub fn went_deaf(&self) {
        self.inner.deaf.store(true, Ordering::Release);
        self.publish([StoreEvent::Resync]);
    }

    /// The process hears other processes again (its listener is connected
    /// and listening): publishes [`StoreEvent::Resync`] first, since what
    /// was said meanwhile is lost, then ends the deafness. Until the cache
    /// has applied that event it keeps answering nothing (the published
    /// count is ahead of its applied count), and a lookup that started
    /// before cannot insert what it read (the event bumps its generation).
    pub fn hears_again(&self) {
        self.publish([StoreEvent::Resync]);
        self.inner.deaf.store(false, Ordering::Release);
    }

    /// Counts a notification heard from another process.
    pub fn heard_notification(&self) {
        self.inner.notifications.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a reconnection of the listener.
    pub fn listener_reconnected(&self) {
        self.inner.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Notifications heard from other processes so far.
    pub fn notifications_heard(&self) -> u64 {
        self.inner.notifications.load(Ordering::Relaxed)
    }

    /// Reconnections of the listener so far.
    pub fn listener_reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// Whether changes made by other processes can go unheard right now
    /// (see [`EventBus::went_deaf`]).
    pub fn is_deaf(&self) -> bool {
        self.inner.deaf.load(Ordering::Acquire)
    }

    /// The flag behind [`EventBus::is_deaf`], for a reader on the hot path
    /// that must not hold the bus.
    pub fn deaf_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.inner.deaf)
    }

    /// Receives every event published from now on, except run changes.
    pub fn subscribe(&self) -> EventSubscription {
        EventSubscription {
            receiver: self.inner.sender.subscribe(),
        }
    }

    /// Receives every [`StoreEvent::RunChanged`] published from now on.
    pub fn subscribe_runs(&self) -> RunSubscription {
        RunSubscription {
            receiver: self.inner.runs.subscribe(),
        }
    }

    /// Run changes may have gone unheard (another process said something on
    /// the runs' channel that this one does not understand): tells the
    /// runs' subscribers to look at every run again
    /// ([`StoreEvent::Resync`] on that channel; the key cache is not told).
    pub fn run_changes_missed(&self) {
        let _ = self.inner.runs.send(StoreEvent::Resync);
    }
}

/// A subscriber's end of the runs' channel of the [`EventBus`].
#[derive(Debug)]
pub struct RunSubscription {
    receiver: broadcast::Receiver<StoreEvent>,
}

impl RunSubscription {
    /// The next run change: [`StoreEvent::RunChanged`], or
    /// [`StoreEvent::Resync`] when some may have been missed (the
    /// subscriber fell behind, or another process said something unknown).
    /// `None` when the bus is gone.
    pub async fn next(&mut self) -> Option<StoreEvent> {
        match self.receiver.recv().await {
            Ok(event) => Some(event),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(StoreEvent::Resync),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// A subscriber's end of the [`EventBus`].
#[derive(Debug)]
pub struct EventSubscription {
    receiver: broadcast::Receiver<(u64, StoreEvent)>,
}

impl EventSubscription {
    /// The next event with its sequence number; a subscriber that fell
    /// behind gets [`StoreEvent::Resync`] (numbered 0: it proves nothing
    /// about what was applied) and then the events still held. `None` when
    /// the bus is gone.
    pub async fn next(&mut self) -> Option<(u64, StoreEvent)> {
        match self.receiver.recv().await {
            Ok(item) => Some(item),
            Err(broadcast::error::RecvError::Lagged(_)) => Some((0, StoreEvent::Resync)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_unknown_lines_forget_everything() {
        for event in [
            StoreEvent::KeyChanged("a-b".into()),
            StoreEvent::UserChanged("u".into()),
            StoreEvent::WorkspaceChanged("w:x".into()),
            StoreEvent::RunChanged("r-1".into()),
            StoreEvent::Resync,
        ] {
            assert_eq!(StoreEvent::decode(&event.encode()), event);
        }
        for junk in ["", "k:", "r:", "x:1", "k", "hello", "run:1"] {
            assert_eq!(StoreEvent::decode(junk), StoreEvent::Resync, "{junk}");
        }
    }

    #[tokio::test]
    async fn subscribers_get_events_in_order_with_their_numbers() {
        let bus = EventBus::new();
        let mut sub = bus.subscribe();
        bus.publish([
            StoreEvent::KeyChanged("1".into()),
            StoreEvent::UserChanged("2".into()),
        ]);
        assert_eq!(bus.published(), 2);
        assert_eq!(
            sub.next().await,
            Some((1, StoreEvent::KeyChanged("1".into())))
        );
        assert_eq!(
            sub.next().await,
            Some((2, StoreEvent::UserChanged("2".into())))
        );
    }

    #[tokio::test]
    async fn going_deaf_and_hearing_again_each_tell_subscribers_to_resync() {
        let bus = EventBus::new();
        let mut sub = bus.subscribe();
        assert!(!bus.is_deaf());
        bus.went_deaf();
        assert!(bus.is_deaf());
        assert_eq!(sub.next().await, Some((1, StoreEvent::Resync)));
        bus.hears_again();
        assert!(!bus.is_deaf());
        assert_eq!(sub.next().await, Some((2, StoreEvent::Resync)));
    }

    #[tokio::test]
    async fn run_changes_go_to_the_runs_channel_unnumbered_and_uncounted() {
        let bus = EventBus::new();
        let mut keys = bus.subscribe();
        let mut runs = bus.subscribe_runs();
        bus.publish([
            StoreEvent::RunChanged("r1".into()),
            StoreEvent::KeyChanged("k1".into()),
            StoreEvent::RunChanged("r2".into()),
        ]);
        // The key cache's count and subscription see the key change only.
        assert_eq!(bus.published(), 1);
        assert_eq!(
            keys.next().await,
            Some((1, StoreEvent::KeyChanged("k1".into())))
        );
        assert_eq!(runs.next().await, Some(StoreEvent::RunChanged("r1".into())));
        assert_eq!(runs.next().await, Some(StoreEvent::RunChanged("r2".into())));
        bus.run_changes_missed();
        assert_eq!(runs.next().await, Some(StoreEvent::Resync));
        assert_eq!(bus.published(), 1, "not counted either");
        // A subscriber that fell behind is told to look at every run again.
        bus.publish((0..CAPACITY + 10).map(|i| StoreEvent::RunChanged(i.to_string().into())));
        assert_eq!(runs.next().await, Some(StoreEvent::Resync));
    }

    #[tokio::test]
    async fn a_lagging_subscriber_is_told_to_resync() {
        let bus = EventBus::new();
        let mut sub = bus.subscribe();
        bus.publish((0..CAPACITY + 10).map(|i| StoreEvent::KeyChanged(i.to_string().into())));
        assert_eq!(sub.next().await, Some((0, StoreEvent::Resync)));
    }
}
