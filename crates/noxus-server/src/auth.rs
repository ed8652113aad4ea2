//! Verifying the API key of every `/v1` request, in the order of the
//! architecture: header present → format + checksum → digest lookup (cached)
//! → revoked / expired / owner still a member → permission for the route.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName};
use noxus_api::key_format::{self, check_key_format};
use noxus_api::{Permission, Role};

use crate::domain::keys::KeyDigest;
use crate::http::error::{ApiError, INVALID_KEY_DETAIL};
pub use crate::key_cache::{KeyCache, PermissionSet, VerifiedKey};
use crate::metrics::{AuthOutcome, StoreOperation};
use crate::state::AppState;
use crate::store::{Actor, KeyAuthRecord, OrganizationId, RevokedReason, UserId, WorkspaceId};
use crate::time_fmt::rfc3339;
use crate::usage::{KeySlot, RequestKey};

static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The identity and rights of the key that made the request.
#[derive(Debug, Clone)]
pub struct AuthContext {
    /// The verified key (possibly from the cache).
    pub key: Arc<VerifiedKey>,
    /// The owner's current role in the key's workspace.
    pub role: Role,
    /// Role permissions narrowed by the key's restriction.
    pub permissions: PermissionSet,
    /// A tenant-admin key whose owner is still an organization admin.
    pub tenant_admin: bool,
    /// Where the request came from.
    pub client_addr: Option<IpAddr>,
}

impl AuthContext {
    /// The key and its owner.
    pub fn record(&self) -> &KeyAuthRecord {
        &self.key.record
    }

    /// The key's workspace.
    pub fn workspace_id(&self) -> &WorkspaceId {
        &self.key.record.key.workspace_id
    }

    /// The key's organization.
    pub fn organization_id(&self) -> &OrganizationId {
        &self.key.record.organization_id
    }

    /// The key owner.
    pub fn user_id(&self) -> &UserId {
        &self.key.record.key.user_id
    }

    /// Whether the key may do `permission`.
    pub fn has(&self, permission: Permission) -> bool {
        self.permissions.contains(permission)
    }

    /// Why the key lacks `permission`, as the end of a sentence.
    fn why_not(&self, permission: Permission) -> String {
        let key = &self.record().key;
        if permission.is_organization() {
            return if !key.tenant_admin {
                "only tenant-admin keys hold organization permissions".to_owned()
            } else if !self.tenant_admin {
                "the key owner is no longer an organization admin".to_owned()
            } else {
                "this key is restricted and does not include it".to_owned()
            };
        }
        match &key.restriction {
            Some(_) if self.role.grants(permission) => {
                "this key is restricted and does not include it".to_owned()
            }
            None if self.role.grants(permission) && permission.is_management() => format!(
                "this key was created without naming it: a key manages keys, members or the workspace only when it is created with that permission (or is a tenant-admin key); create one with `\"permissions\": [\"{permission}\", ...]`, or use the dashboard"
            ),
            _ => format!("the key owner's role in this workspace is {}", self.role),
        }
    }

    /// 403 unless the key may do `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.has(permission) {
            return Ok(());
        }
        Err(ApiError::InsufficientPermissions {
            permission: permission.as_str().to_owned(),
            detail: format!(
                "API key lacks required permissions: this request needs `{permission}` and {}",
                self.why_not(permission)
            ),
        })
    }

    /// Whether the key may do something in `workspace_id` that needs
    /// `in_workspace` in its own workspace, or `organization_wide` anywhere.
    pub fn can_in(
        &self,
        workspace_id: &WorkspaceId,
        in_workspace: Permission,
        organization_wide: Permission,
    ) -> bool {
        (workspace_id == self.workspace_id() && self.has(in_workspace))
            || self.has(organization_wide)
    }

    /// 403 unless [`AuthContext::can_in`].
    pub fn require_in(
        &self,
        workspace_id: &WorkspaceId,
        in_workspace: Permission,
        organization_wide: Permission,
    ) -> Result<(), ApiError> {
        if self.can_in(workspace_id, in_workspace, organization_wide) {
            return Ok(());
        }
        if workspace_id == self.workspace_id() {
            return self.require(in_workspace);
        }
        Err(ApiError::InsufficientPermissions {
            permission: organization_wide.as_str().to_owned(),
            detail: format!(
                "API key lacks required permissions: acting in another workspace of the organization needs `{organization_wide}` and {}",
                self.why_not(organization_wide)
            ),
        })
    }

    /// Who is acting, for the audit log.
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: Some(self.user_id().clone()),
            key_id: Some(self.record().key.id.clone()),
            client_addr: self.client_addr.map(|a| a.to_string()),
        }
    }
}

/// Takes the presented key out of the headers. `X-API-Key` wins over
/// `Authorization: Bearer` when both are sent.
fn presented_key(headers: &HeaderMap) -> Result<&str, ApiError> {
    let (raw, is_authorization) = match headers.get(&X_API_KEY) {
        Some(value) => (value, false),
        None => match headers.get(header::AUTHORIZATION) {
            Some(value) => (value, true),
            None => {
                return Err(ApiError::MissingApiKey(
                    "Missing API key: send it in the X-API-Key header (or as Authorization: Bearer <key>)".to_owned(),
                ))
            }
        },
    };
    let text = raw.to_str().map_err(|_| {
        ApiError::InvalidApiKey(format!(
            "{INVALID_KEY_DETAIL} (the header contains characters that are not printable ASCII)"
        ))
    })?;
    let text = if is_authorization {
        let Some((scheme, token)) = text.split_once(' ') else {
            return Err(ApiError::MissingApiKey(
                "Missing API key: the Authorization header must be `Bearer <key>`".to_owned(),
            ));
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::MissingApiKey(
                "Missing API key: the Authorization header must use the Bearer scheme".to_owned(),
            ));
        }
        token
    } else {
        text
    };
    if text.trim().is_empty() {
        return Err(ApiError::MissingApiKey(
            "Missing API key: the X-API-Key header is empty".to_owned(),
        ));
    }
    Ok(text)
}

/// Counts a failed authentication against the client's address; one too
/// many turns the answer into a 429.
fn failed_authentication(
    state: &AppState,
    client_addr: Option<IpAddr>,
    now_ns: u64,
    err: ApiError,
) -> ApiError {
    let Some(ip) = client_addr else { return err };
    match state.auth_failures().record(ip, now_ns) {
        Ok(()) => {
            state
                .limits()
                .spent(crate::cluster_limits::failed_auth_scope(ip), 1);
            err
        }
        Err(wait) => {
            tracing::warn!(%ip, "too many failed authentications");
            ApiError::AuthThrottled {
                retry_after: wait.whole_seconds(),
            }
        }
    }
}

/// During a pepper rotation, a key made under the previous pepper: found by
/// its old digest, then stored under the current one.
async fn rehash_under_current_pepper(
    state: &AppState,
    presented: &str,
    digest: &KeyDigest,
) -> Result<Option<KeyAuthRecord>, ApiError> {
    let Some(previous) = state.hasher().previous_digest(presented) else {
        return Ok(None);
    };
    let Some(mut found) = state.store().key_for_auth(&previous).await? else {
        return Ok(None);
    };
    state
        .store()
        .replace_key_digest(&found.key.id, &previous, digest)
        .await?;
    found.key.digest = *digest;
    tracing::info!(key_id = %found.key.id, "key re-digested under the current pepper");
    Ok(Some(found))
}

/// Runs the verification order on a request's headers.
/// `slot` (from the request's extensions) learns the key and its rate-limit
/// state, so that the answer is counted against the key.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    client_addr: Option<IpAddr>,
    slot: Option<&KeySlot>,
) -> Result<AuthContext, ApiError> {
    let verified = verify(state, headers, client_addr, slot, true).await;
    state.metrics().auth_outcome(match &verified {
        Ok(_) => AuthOutcome::Ok,
        Err(err) => AuthOutcome::of_error(err),
    });
    verified
}

/// Whether the key of a request that was let in is still good for
/// `permission` now (revoked, expired, owner removed or demoted: refused):
/// what a long-lived answer, such as an event stream, checks while it
/// lasts, with the key as it stands (its expiry may have changed: a
/// rotation sets one). It reads the key cache, which every replica's store
/// events keep current, and is not charged to the key's rate limit.
pub async fn still_allowed(
    state: &AppState,
    headers: &HeaderMap,
    client_addr: Option<IpAddr>,
    permission: Permission,
) -> Result<AuthContext, ApiError> {
    let auth = verify(state, headers, client_addr, None, false).await?;
    auth.require(permission)?;
    Ok(auth)
}

/// A key the cache does not hold: looked up in the store (or re-digested
/// during a pepper rotation) and cached.
async fn load_for_auth(
    state: &AppState,
    presented: &str,
    digest: &KeyDigest,
    client_addr: Option<IpAddr>,
    now_ns: u64,
) -> Result<Arc<VerifiedKey>, ApiError> {
    // An address that keeps failing gets no more database lookups
    // for a while, except for keys that worked lately: others'
    // failures at the same address never lock a valid key out.
    if let Some(wait) = client_addr.and_then(|ip| state.auth_failures().blocked(ip, now_ns)) {
        if !state.auth_failures().recently_valid(digest, now_ns) {
            return Err(ApiError::AuthThrottled {
                retry_after: wait.whole_seconds(),
            });
        }
    }
    let generation = state.cache().generation();
    let started = std::time::Instant::now();
    let found = state.store().key_for_auth(digest).await;
    state
        .metrics()
        .store_query(StoreOperation::KeyForAuth, started.elapsed());
    let loaded = match found? {
        Some(found) => Some(found),
        None => rehash_under_current_pepper(state, presented, digest).await?,
    }
    .ok_or_else(|| {
        failed_authentication(
            state,
            client_addr,
            now_ns,
            ApiError::InvalidApiKey(INVALID_KEY_DETAIL.to_owned()),
        )
    })?;
    let hot = state.usage().key(&loaded.key.id, &loaded.key.workspace_id);
    let verified = Arc::new(VerifiedKey::new(loaded, hot, state.rate_limit().copied()));
    state
        .cache()
        .insert(*digest, Arc::clone(&verified), generation);
    Ok(verified)
}

/// The key a request is counted against, handed to the request's slot when
/// the key check ends (dropped), whichever way it ends.
struct Charged<'a> {
    slot: Option<&'a KeySlot>,
    hot: Option<Arc<crate::usage::KeyHot>>,
    rate: Option<crate::rate_limit::RateInfo>,
    unix_ms: i64,
}

impl Drop for Charged<'_> {
    fn drop(&mut self) {
        if let (Some(slot), Some(hot)) = (self.slot, self.hot.take()) {
            slot.set_key(RequestKey {
                hot,
                rate: self.rate,
                unix_ms: self.unix_ms,
            });
        }
    }
}

async fn verify(
    state: &AppState,
    headers: &HeaderMap,
    client_addr: Option<IpAddr>,
    slot: Option<&KeySlot>,
    charge: bool,
) -> Result<AuthContext, ApiError> {
    // A request is checked as of its start (read once by the connection
    // layer); a check without one (an event stream's) as of now.
    let now = match slot {
        Some(slot) => state.clock().at(slot.started()),
        None => state.clock().now(),
    };
    let failed = |err: ApiError| failed_authentication(state, client_addr, now.mono_ns, err);
    let presented = presented_key(headers).map_err(failed)?;
    let check_format = || {
        check_key_format(presented).map_err(|why| {
            failed(ApiError::InvalidApiKey(format!(
                "{INVALID_KEY_DETAIL} ({why})"
            )))
        })
    };
    // The cache holds only keys the store found, all well formed: a hit
    // needs no format check, and a miss gets it before anything else. Only
    // a text of a key's length is digested before its check (the digest's
    // cost stays that of a key, whatever the header holds).
    if presented.len() != key_format::KEY_LEN {
        check_format()?;
    }
    let digest = state.hasher().digest(presented);

    let cached = state.cache().get(&digest, now.instant);
    if cached.is_none() {
        check_format()?;
    }
    if charge {
        state.metrics().key_cache_lookup(cached.is_some());
    }
    let (verified, from_store) = match cached {
        Some(hit) => (hit, false),
        // Boxed: the lookup's state (store queries, the pepper rotation's
        // re-digest) would otherwise be part of every request's future,
        // moved and allocated with it even when the cache answers.
        None => (
            Box::pin(load_for_auth(
                state,
                presented,
                &digest,
                client_addr,
                now.mono_ns,
            ))
            .await?,
            true,
        ),
    };

    // From here on the answer is counted against this key, whatever it is:
    // the slot learns the key (and its rate-limit state, once known) when
    // this check ends, on every way out.
    let mut charged = Charged {
        slot,
        hot: slot.map(|_| Arc::clone(&verified.hot)),
        rate: None,
        unix_ms: now.unix_ms,
    };
    let key = &verified.record.key;
    if let Some(revoked_at) = key.revoked_at {
        let why = match key.revoked_reason {
            Some(RevokedReason::OwnerRemoved) => {
                " because its owner was removed from the workspace"
            }
            Some(RevokedReason::OwnerDeactivated) => " because its owner was deactivated",
            Some(RevokedReason::Rotated) => " when it was rotated",
            Some(RevokedReason::Leaked) => {
                " because it was reported leaked (found where it should not be)"
            }
            _ => "",
        };
        return Err(ApiError::RevokedApiKey(format!(
            "This API key ({}…) was revoked at {}{why}; create a new key",
            key.prefix,
            rfc3339(revoked_at)
        )));
    }
    if verified.expired_at(now.unix_ms) {
        let expires_at = key.expires_at.map(rfc3339).unwrap_or_default();
        let detail = if key.replaced_by.is_some() {
            format!("This API key ({}…) was rotated and its grace period ended at {expires_at}; use the new key", key.prefix)
        } else {
            format!(
                "This API key ({}…) expired at {expires_at}; create a new key",
                key.prefix
            )
        };
        return Err(ApiError::ExpiredApiKey(detail));
    }
    if !verified.record.user_active {
        return Err(ApiError::InvalidApiKey(format!(
            "{INVALID_KEY_DETAIL} (the key's owner was deactivated)"
        )));
    }
    let Some(role) = verified.record.role else {
        return Err(ApiError::InvalidApiKey(format!(
            "{INVALID_KEY_DETAIL} (the key's owner is no longer a member of its workspace)"
        )));
    };
    if let Some(gcra) = verified.gcra.as_ref().filter(|_| charge) {
        // A clock read delayed by preemption can look early: re-read once before refusing.
        let mut at = now.mono_ns;
        let checked = gcra.check(&verified.hot.tat, at).or_else(|_| {
            at = state.clock().now().mono_ns;
            gcra.check(&verified.hot.tat, at)
        });
        if state.limits().is_shared() {
            state.limits().key_used(&verified.hot, checked.is_ok());
        }
        match checked {
            Ok(tat) => charged.rate = Some(gcra.info(tat, at)),
            Err(wait) => {
                let limit = gcra.limit();
                charged.rate = Some(crate::rate_limit::RateInfo {
                    limit: limit.burst,
                    remaining: 0,
                    reset_seconds: wait.whole_seconds(),
                });
                return Err(ApiError::RateLimited {
                    retry_after: wait.whole_seconds(),
                    per_second: limit.per_second,
                    burst: limit.burst,
                });
            }
        }
    }
    verified.hot.touch(now.unix_ms, client_addr);
    if from_store {
        state.auth_failures().remember_valid(digest, now.mono_ns);
    }
    Ok(AuthContext {
        role,
        permissions: verified.permissions,
        tenant_admin: verified.tenant_admin,
        key: verified,
        client_addr,
    })
}

impl FromRequestParts<AppState> for AuthContext {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let client_addr =
            crate::client_addr::request_client_ip(parts, &state.config().trusted_proxies);
        let slot = parts.extensions.get::<KeySlot>();
        authenticate(state, &parts.headers, client_addr, slot).await
    }
}

/// Masked display of a key, e.g. `noxus_Ab3d…x9Zq`.
pub fn masked_value(record: &crate::store::KeyRecord) -> String {
    key_format::masked(&record.prefix, &record.suffix)
}

#[cfg(test)]
mod tests {
    use axum::extract::FromRequestParts;

    /// The size of the future `make` returns, without running it.
    fn future_size<A, F: std::future::Future>(_make: impl FnOnce(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every authenticated request's future embeds the key check's: the
    /// cache miss (store queries, a pepper rotation's re-digest) is boxed
    /// apart, so that the common path is not moved and allocated with
    /// kilobytes of state it never uses (it was 1.6 KiB, the handler's
    /// future above mimalloc's small-object limit).
    #[test]
    fn the_key_checks_future_stays_small() {
        let extract = future_size(
            |(parts, state): (&mut axum::http::request::Parts, &crate::state::AppState)| {
                super::AuthContext::from_request_parts(parts, state)
            },
        );
        assert!(
            extract <= 640,
            "AuthContext's extraction future is {extract} bytes"
        );
    }
}
