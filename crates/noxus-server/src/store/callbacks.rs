//! Callbacks as the store keeps them: one delivery per run that has a
//! `callback_url`, queued in the same transaction that ends the run
//! (completed, failed or stopped), and one per security event (a key of a
//! workspace with a security webhook revoked as reported leaked), queued in
//! the transaction of the revocation; claimed by senders with a lease as
//! runs are claimed by workers; each workspace's security webhook; and the
//! per-workspace generation of the secret that signs them all (the secret
//! itself is derived, never stored: see `crate::runs::callbacks`).

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{
    Actor, CallbackId, KeyId, OrganizationId, RunId, RunStatus, StoreResult, UserId, WorkspaceId,
};

/// The event a security delivery reports: a key revoked because someone
/// reported it leaked.
pub const KEY_REPORTED_LEAKED_EVENT: &str = "api_key.reported_leaked";

/// What a delivery is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallbackKind {
    /// A run's end, posted to its `callback_url`: the run as it is now.
    Run,
    /// A security event, posted to the workspace's security webhook: the
    /// body fixed when it was queued.
    Security,
}

impl CallbackKind {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Security => "security",
        }
    }

    /// From the stored text.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "run" => Self::Run,
            "security" => Self::Security,
            _ => return None,
        })
    }
}

/// A workspace's security webhook: where its security events are posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityWebhook {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// Where to post (checked as a `callback_url` is).
    pub url: String,
    /// When it was set.
    pub updated_at: OffsetDateTime,
    /// Who set it.
    pub updated_by: Option<UserId>,
}

/// Attempts of one delivery before it fails for good (the first and seven
/// retries: about 18 hours with the default backoff).
pub const MAX_CALLBACK_ATTEMPTS: i64 = 8;

/// The sentence a delivery whose last attempt was interrupted ends with.
pub const INTERRUPTED_LAST_ATTEMPT: &str =
    "The last attempt was interrupted (the server sending it stopped) and no attempt is left.";

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallbackStatus {
    /// Waiting for its next attempt (or being attempted).
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed, or the target was refused.
    Failed,
}

impl CallbackStatus {
    /// As stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    /// From the stored text.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => Self::Pending,
            "delivered" => Self::Delivered,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// The event a delivery reports, from the status the run ended with.
pub fn callback_event(status: RunStatus) -> Option<&'static str> {
    match status {
        RunStatus::Completed => Some("run.completed"),
        RunStatus::Failed => Some("run.failed"),
        RunStatus::Stopped => Some("run.stopped"),
        RunStatus::Queued | RunStatus::Running => None,
    }
}

/// One delivery: of a run's callback, or of a security event.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackDelivery {
    /// Id, sent as `Noxus-Delivery` (the same on every attempt, so that a
    /// receiver can drop duplicates); a security event's `id` too.
    pub id: CallbackId,
    /// What it is of.
    pub kind: CallbackKind,
    /// The run, for [`CallbackKind::Run`].
    pub run_id: Option<RunId>,
    /// The key, for [`CallbackKind::Security`].
    pub key_id: Option<KeyId>,
    /// The body, for [`CallbackKind::Security`] (a run's is its current
    /// state, read at each attempt).
    pub payload: Option<String>,
    /// Its workspace.
    pub workspace_id: WorkspaceId,
    /// Where to post (a security event goes to the workspace's security
    /// webhook as it is at each attempt; this is where it was when queued).
    pub url: String,
    /// `run.completed`, `run.failed`, `run.stopped` or
    /// [`KEY_REPORTED_LEAKED_EVENT`].
    pub event: String,
    /// Where it is.
    pub status: CallbackStatus,
    /// Attempts started (counted when claimed, so that an attempt that
    /// crashed its sender counts too).
    pub attempts: i64,
    /// Not attempted before this time.
    pub next_attempt_at: OffsetDateTime,
    /// When the last attempt started.
    pub last_attempt_at: Option<OffsetDateTime>,
    /// The HTTP status the receiver answered last, if it answered.
    pub last_status_code: Option<i64>,
    /// Why the last attempt failed: a sentence.
    pub last_error: Option<String>,
    /// When the receiver answered 2xx.
    pub delivered_at: Option<OffsetDateTime>,
    /// When it was queued (the run's end).
    pub created_at: OffsetDateTime,
    /// The sender that claimed it last.
    pub claimed_by: Option<String>,
    /// Until when that sender's claim holds.
    pub lease_until: Option<OffsetDateTime>,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum CallbackAttempt {
    /// The receiver answered 2xx.
    Delivered {
        /// Its status.
        status_code: u16,
    },
    /// It failed; try again at `next_attempt_at`.
    Retry {
        /// Why: a sentence.
        error: String,
        /// The receiver's status, if it answered.
        status_code: Option<u16>,
        /// When to try again.
        next_attempt_at: OffsetDateTime,
    },
    /// It failed, and no attempt is left (or the target is refused).
    Failed {
        /// Why: a sentence.
        error: String,
        /// The receiver's status, if it answered.
        status_code: Option<u16>,
    },
}

/// Which secret signs a workspace's callbacks: its generation (the secret
/// is derived from it), and, for a while after a rotation, the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallbackSecretGeneration {
    /// 1 until the first rotation, then one more at each.
    pub generation: i64,
    /// Callbacks are also signed with the previous generation's secret
    /// until this time (a rotation with a grace period).
    pub previous_valid_until: Option<OffsetDateTime>,
}

impl Default for CallbackSecretGeneration {
    fn default() -> Self {
        Self {
            generation: 1,
            previous_valid_until: None,
        }
    }
}

/// Callbacks: deliveries claimed by senders with leases, their attempts,
/// each workspace's security webhook, and the generation of each
/// workspace's signing secret. Run deliveries are queued by
/// [`super::RunStore::finish_run`] and [`super::RunStore::stop_run`] (in
/// their transaction) for runs that have a `callback_url`, one per run, and
/// go with their run or workspace; security deliveries by
/// [`super::KeyLeakStore::revoke_leaked_key`] (in its transaction) when the
/// key's workspace has a security webhook, and go with their key or
/// workspace.
#[async_trait]
pub trait CallbackStore: Send + Sync {
    /// Atomically claims for `sender` up to `limit` pending deliveries due
    /// at `now` (`next_attempt_at` reached, not claimed or with a lease
    /// that ran out), soonest due first, but no more of one workspace than
    /// take its claimed deliveries (by any sender, leases running) to
    /// `per_workspace`: one workspace's slow receiver cannot hold every
    /// sender. Each gets `attempts` one more, `last_attempt_at` = `now`,
    /// and the claim until `lease_until`. Of several concurrent claimers
    /// (processes), each delivery goes to one.
    /// A pending delivery whose last allowed attempt was interrupted (its
    /// lease ran out with [`MAX_CALLBACK_ATTEMPTS`] attempts made) fails
    /// with [`INTERRUPTED_LAST_ATTEMPT`] instead.
    async fn claim_callbacks(
        &self,
        sender: &str,
        limit: u32,
        per_workspace: u32,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> StoreResult<Vec<CallbackDelivery>>;
    /// Records an attempt of a delivery that `sender` claimed and still
    /// holds (pending, claimed by it): delivered, retried later, or failed,
    /// and releases the claim. `false` (nothing changed) if it is no longer
    /// `sender`'s, or gone with its run.
    async fn record_callback_attempt(
        &self,
        id: &CallbackId,
        sender: &str,
        attempt: &CallbackAttempt,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// The delivery of a run of the workspace, once the run ended with a
    /// `callback_url`.
    async fn run_callback(
        &self,
        workspace_id: &WorkspaceId,
        run_id: &RunId,
    ) -> StoreResult<Option<CallbackDelivery>>;
    /// The workspace's security webhook, if it has one.
    async fn security_webhook(
        &self,
        workspace_id: &WorkspaceId,
    ) -> StoreResult<Option<SecurityWebhook>>;
    /// Sets (or replaces) the workspace's security webhook to `url`
    /// (checked by the caller), with an audit row
    /// `workspace.security_webhook.set` naming the URL's origin only (its
    /// path and query may hold a token). [`super::StoreError::NotFound`] for
    /// a workspace not in the organization.
    async fn set_security_webhook(
        &self,
        actor: &Actor,
        organization_id: &OrganizationId,
        workspace_id: &WorkspaceId,
        url: &str,
    ) -> StoreResult<SecurityWebhook>;
    /// Removes the workspace's security webhook, with an audit row
    /// `workspace.security_webhook.delete`; its events not yet delivered
    /// fail at their next attempt. [`super::StoreError::NotFound`] when the
    /// workspace (of the organization) has none.
    async fn remove_security_webhook(
        &self,
        actor: &Actor,
        organization_id: &OrganizationId,
        workspace_id: &WorkspaceId,
    ) -> StoreResult<()>;
    /// The workspace's latest security deliveries, newest first, at most
    /// `limit`.
    async fn security_deliveries(
        &self,
        workspace_id: &WorkspaceId,
        limit: u32,
    ) -> StoreResult<Vec<CallbackDelivery>>;
    /// The generation of the workspace's signing secret (the default one
    /// until the first rotation), to sign with.
    async fn callback_secret_generation(
        &self,
        workspace_id: &WorkspaceId,
    ) -> StoreResult<CallbackSecretGeneration>;
    /// The same, for handing the secret out: with an audit row
    /// `workspace.callback_secret.read`. [`super::StoreError::NotFound`]
    /// for a workspace not in the organization.
    async fn reveal_callback_secret(
        &self,
        actor: &Actor,
        organization_id: &OrganizationId,
        workspace_id: &WorkspaceId,
    ) -> StoreResult<CallbackSecretGeneration>;
    /// Moves the workspace to the next generation of its signing secret;
    /// the previous one keeps signing too until `previous_valid_until`
    /// (`None`: it stops at once). With an audit row
    /// `workspace.callback_secret.rotate`. Returns the new generation.
    /// [`super::StoreError::NotFound`] for a workspace not in the
    /// organization.
    async fn rotate_callback_secret(
        &self,
        actor: &Actor,
        organization_id: &OrganizationId,
        workspace_id: &WorkspaceId,
        previous_valid_until: Option<OffsetDateTime>,
    ) -> StoreResult<CallbackSecretGeneration>;
}

/// The origin (`scheme://host[:port]`) of a webhook URL, for the audit
/// log: its path and query may hold a token.
pub(super) fn url_origin(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for status in [
            CallbackStatus::Pending,
            CallbackStatus::Delivered,
            CallbackStatus::Failed,
        ] {
            assert_eq!(CallbackStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(CallbackStatus::parse("sent"), None);
    }

    #[test]
    fn the_audit_log_gets_a_webhook_url_without_its_path_or_query() {
        assert_eq!(
            url_origin("https://hooks.example.com:8443/noxus?token=s3cret"),
            "https://hooks.example.com:8443"
        );
        assert_eq!(url_origin("http://127.0.0.1:9/x"), "http://127.0.0.1:9");
    }

    #[test]
    fn kinds_round_trip() {
        for kind in [CallbackKind::Run, CallbackKind::Security] {
            assert_eq!(CallbackKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(CallbackKind::parse("Run"), None);
    }

    #[test]
    fn only_ended_runs_have_an_event() {
        assert_eq!(callback_event(RunStatus::Completed), Some("run.completed"));
        assert_eq!(callback_event(RunStatus::Stopped), Some("run.stopped"));
        assert_eq!(callback_event(RunStatus::Running), None);
    }
}
