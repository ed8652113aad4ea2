//! Leaked-key reports (`POST /v1/keys/leaks`) handled off the request path,
//! so that the answer cannot tell a valid key from an unknown one.
//!
//! The request path checks each candidate's format and checksum (offline,
//! what anyone can compute) and puts the well-formed ones in a bounded
//! queue, answering the same `202` whatever they were; when the queue is
//! full it answers `503` before looking at the candidates. One task per
//! process drains the queue: it digests each candidate (under the current
//! pepper, and the previous one during a pepper rotation), reads whether a
//! key with that digest works (a plain read: made-up keys never take the
//! write lock), and if one does asks the store to revoke it
//! ([`crate::store::KeyLeakStore::revoke_leaked_key`], which checks again
//! inside its write), which writes the audit row and the leak record,
//! queues the event for the workspace's security webhook if it has one
//! (sent signed by [`crate::runs::callbacks`]), and publishes the
//! revocation to every replica's cache. So
//! the time of the answer depends on the number of candidates only, never
//! on whether they are keys of this platform, and nothing a reporter sees
//! afterwards does either.
//!
//! The queue lives in memory: a report accepted by a process that dies
//! before its task got to it (usually milliseconds) is lost, and should be
//! sent again. At shutdown the server waits (a few seconds at most) for the
//! queue to empty before it closes the database.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{mpsc, Notify};

use crate::domain::keys::KeyDigest;
use crate::rate_limit::{AddressThrottle, RateLimit, THROTTLE_CAPACITY};
use crate::state::AppState;
use crate::store::{Actor, LeakLocation, StoreError};

/// Reports (of up to 100 candidates each) waiting for the task at most;
/// with bodies of at most 64 KiB, the queue holds at most 4 MiB.
pub const QUEUE_CAPACITY: usize = 64;

/// Attempts of one revocation when the database does not answer, and the
/// pause after the first failure (doubling after each).
const ATTEMPTS: u32 = 3;
const FIRST_RETRY_AFTER: Duration = Duration::from_millis(500);

/// One well-formed candidate, as the task needs it. `Debug` never shows the key.
#[derive(Debug)]
pub struct Candidate {
    /// The key (well formed: prefix, length and checksum checked).
    pub key: SecretString,
    /// Where it was found, as reported.
    pub location: LeakLocation,
    /// Who reported it (the audit row's address).
    pub reporter: Option<IpAddr>,
}

/// The queue is full: the report is refused (`503`) whatever it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// The queue of reports, the throttle of reporters' addresses, and what the
/// shutdown waits for.
#[derive(Debug)]
pub struct LeakReports {
    sender: mpsc::Sender<Vec<Candidate>>,
    /// Taken by [`start`], which hands it to the task.
    receiver: Mutex<Option<mpsc::Receiver<Vec<Candidate>>>>,
    /// Reports queued and not yet handled.
    pending: AtomicUsize,
    /// Told when `pending` reaches zero.
    idle: Notify,
    throttle: AddressThrottle,
}

impl LeakReports {
    /// A queue of `capacity` reports; each address may send `limit`.
    pub fn new(capacity: usize, limit: RateLimit) -> Self {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        Self {
            sender,
            receiver: Mutex::new(Some(receiver)),
            pending: AtomicUsize::new(0),
            idle: Notify::new(),
            throttle: AddressThrottle::new(limit, THROTTLE_CAPACITY),
        }
    }

    /// Reports per address.
    pub fn throttle(&self) -> &AddressThrottle {
        &self.throttle
    }

    /// Queues the well-formed candidates of one report. A place in the
    /// queue is taken first, so that a full queue refuses every report
    /// alike, even one without a well-formed candidate.
    pub fn submit(&self, candidates: Vec<Candidate>) -> Result<(), QueueFull> {
        let permit = self.sender.try_reserve().map_err(|_| QueueFull)?;
        if !candidates.is_empty() {
            self.pending.fetch_add(1, Ordering::AcqRel);
            permit.send(candidates);
        }
        Ok(())
    }

    /// Reports queued and not yet handled.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Waits until every queued report was handled, or `timeout` passed;
    /// `false` on timeout.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, async {
            loop {
                let idle = self.idle.notified();
                if self.pending() == 0 {
                    return;
                }
                idle.await;
            }
        })
        .await
        .is_ok()
    }

    fn handled(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// Starts the task that drains the queue; it ends with the state.
pub fn start(state: &AppState) {
    let receiver = state
        .leak_reports()
        .receiver
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(receiver) = receiver {
        tokio::spawn(drain(state.downgrade(), receiver));
    }
}

async fn drain(weak: Weak<crate::state::Inner>, mut receiver: mpsc::Receiver<Vec<Candidate>>) {
    // Ends when the state (which holds the sender) is dropped.
    while let Some(report) = receiver.recv().await {
        let Some(state) = AppState::upgrade(&weak) else {
            return;
        };
        handle(&state, report).await;
        state.leak_reports().handled();
    }
}

/// Revokes the key each candidate names, if it still works.
async fn handle(state: &AppState, report: Vec<Candidate>) {
    let mut seen = HashSet::new();
    for candidate in report {
        let key = candidate.key.expose_secret();
        let digests = std::iter::once(state.hasher().digest(key))
            .chain(state.hasher().previous_digest(key))
            .filter(|d| seen.insert(*d))
            .collect::<Vec<_>>();
        let actor = Actor {
            client_addr: candidate.reporter.map(|a| a.to_string()),
            ..Actor::system()
        };
        for digest in digests {
            if revoke(state, &actor, &digest, &candidate.location).await {
                break;
            }
        }
    }
}

/// Whether a key with `digest` exists and still works, by a plain read:
/// well-formed keys cost nothing to make up, so a flood of unknown ones
/// must not take the database's write lock one after another.
async fn still_works(state: &AppState, digest: &KeyDigest) -> Result<bool, StoreError> {
    let now = time::OffsetDateTime::now_utc();
    Ok(state
        .store()
        .key_for_auth(digest)
        .await?
        .is_some_and(|found| {
            found.key.revoked_at.is_none() && found.key.expires_at.is_none_or(|at| at > now)
        }))
}

/// One revocation (a read first, the conditional write only for a key that
/// works), tried again while the database does not answer; whether a key
/// was revoked.
async fn revoke(
    state: &AppState,
    actor: &Actor,
    digest: &KeyDigest,
    location: &LeakLocation,
) -> bool {
    let mut wait = FIRST_RETRY_AFTER;
    for attempt in 1..=ATTEMPTS {
        let outcome = match still_works(state, digest).await {
            Ok(false) => Ok(None),
            Ok(true) => {
                state
                    .store()
                    .revoke_leaked_key(actor, digest, location)
                    .await
            }
            Err(err) => Err(err),
        };
        match outcome {
            Ok(Some(key)) => {
                tracing::warn!(
                    key_id = %key.id,
                    workspace_id = %key.workspace_id,
                    key = %format!("{}…", key.prefix),
                    "key revoked: reported leaked"
                );
                // Its workspace's security webhook may have an event queued.
                state.callbacks().wake();
                return true;
            }
            Ok(None) => return false,
            Err(err) if err.is_unavailable() && attempt < ATTEMPTS => {
                tracing::debug!(error = %err, attempt, "leak report: the database does not answer; trying again");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(err) => {
                log_failure(&err);
                return false;
            }
        }
    }
    false
}

fn log_failure(err: &StoreError) {
    tracing::error!(error = %err, "a leak report could not be handled: report the key again");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn candidate() -> Candidate {
        Candidate {
            key: SecretString::from(noxus_api::key_format::key_from_body(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345",
            )),
            location: LeakLocation::default(),
            reporter: None,
        }
    }

    #[tokio::test]
    async fn a_full_queue_refuses_every_report_alike() {
        let reports = LeakReports::new(2, crate::rate_limit::DEFAULT_LEAK_REPORT_LIMIT);
        assert_eq!(reports.submit(vec![candidate()]), Ok(()));
        assert_eq!(reports.submit(vec![candidate()]), Ok(()));
        // Full: refused, with or without a well-formed candidate.
        assert_eq!(reports.submit(vec![candidate()]), Err(QueueFull));
        assert_eq!(reports.submit(Vec::new()), Err(QueueFull));
        assert_eq!(reports.pending(), 2);
        assert!(!reports.wait_idle(Duration::from_millis(10)).await);
        let mut receiver = reports.receiver.lock().unwrap().take().unwrap();
        for _ in 0..2 {
            assert_eq!(receiver.recv().await.map(|r| r.len()), Some(1));
            reports.handled();
        }
        assert!(reports.wait_idle(Duration::from_millis(10)).await);
        // Room again; an empty report takes none.
        assert_eq!(reports.submit(Vec::new()), Ok(()));
        assert_eq!(reports.pending(), 0);
    }

    #[test]
    fn a_candidate_never_shows_its_key() {
        let c = candidate();
        assert!(!format!("{c:?}").contains(c.key.expose_secret()));
    }
}
