//! Verifying the API key of every `/v1` request, in the order of the
//! architecture: header present → format + checksum → digest lookup (cached)
//! → revoked / expired / owner still a member → permission for the route.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use noxus_api::key_format::{self, check_key_format};
use noxus_api::{Permission, Role};
use time::OffsetDateTime;

use crate::domain::keys::KeyDigest;
use crate::error::{ApiError, INVALID_KEY_DETAIL};
use crate::state::AppState;
use crate::store::{Actor, KeyAuthRecord};
use crate::time_fmt::rfc3339;

/// The identity and rights of the key that made the request.
#[derive(Debug, Clone)]
pub struct AuthContext {
    /// The key and its owner as loaded (possibly from the cache).
    pub record: Arc<KeyAuthRecord>,
    /// The owner's current role in the key's workspace.
    pub role: Role,
    /// Role permissions narrowed by the key's restriction.
    pub permissions: Vec<Permission>,
    /// A tenant-admin key whose owner is still an organization admin.
    pub tenant_admin: bool,
    /// Where the request came from.
    pub client_addr: Option<String>,
}

impl AuthContext {
    /// The key's workspace.
    pub fn workspace_id(&self) -> &str {
        &self.record.key.workspace_id
    }

    /// The key's organization.
    pub fn organization_id(&self) -> &str {
        &self.record.organization_id
    }

    /// The key owner.
    pub fn user_id(&self) -> &str {
        &self.record.key.user_id
    }

    /// Whether the key may do `permission`.
    pub fn has(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }

    /// 403 unless the key may do `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.has(permission) {
            return Ok(());
        }
        let why = match &self.record.key.restriction {
            Some(_) if self.role.grants(permission) => {
                "this key is restricted and does not include it".to_owned()
            }
            _ => format!("the key owner's role in this workspace is {}", self.role),
        };
        Err(ApiError::InsufficientPermissions {
            permission: permission.as_str().to_owned(),
            detail: format!(
                "API key lacks required permissions: this request needs `{permission}` and {why}"
            ),
        })
    }

    /// 403 unless this is a tenant-admin key.
    pub fn require_tenant_admin(&self) -> Result<(), ApiError> {
        if self.tenant_admin {
            return Ok(());
        }
        let detail = if self.record.key.tenant_admin {
            "API key lacks required permissions: this request needs a tenant-admin key and the key owner is no longer an organization admin"
        } else {
            "API key lacks required permissions: this request needs a tenant-admin key"
        };
        Err(ApiError::InsufficientPermissions {
            permission: "tenant_admin".to_owned(),
            detail: detail.to_owned(),
        })
    }

    /// Who is acting, for the audit log.
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: Some(self.record.key.user_id.clone()),
            key_id: Some(self.record.key.id.clone()),
            client_addr: self.client_addr.clone(),
        }
    }
}

/// Verified keys by digest. Entries are dropped exactly when something that
/// decides a key's rights changes in this process (revoke, rotate, role
/// change, removal, workspace deletion); the TTL bounds staleness from
/// changes made by other processes.
#[derive(Debug)]
pub struct KeyCache {
    entries: RwLock<HashMap<KeyDigest, CacheEntry>>,
    /// Bumped on every invalidation; a lookup that started before an
    /// invalidation must not insert what it read.
    generation: AtomicU64,
    ttl: Duration,
    capacity: usize,
}

#[derive(Debug, Clone)]
struct CacheEntry {
    record: Arc<KeyAuthRecord>,
    loaded_at: Instant,
}

impl KeyCache {
    /// A cache with the given time-to-live and maximum number of keys.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            ttl,
            capacity,
        }
    }

    fn get(&self, digest: &KeyDigest) -> Option<Arc<KeyAuthRecord>> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self
            .entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries
            .get(digest)
            .filter(|e| e.loaded_at.elapsed() < self.ttl)
            .map(|e| Arc::clone(&e.record))
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn insert(&self, digest: KeyDigest, record: Arc<KeyAuthRecord>, seen_generation: u64) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Checked under the write lock, which invalidations also take.
        if self.generation() != seen_generation {
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
                record,
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
        entries.retain(|_, e| !matches(&e.record));
    }

    /// Forgets one key (revoked or rotated).
    pub fn invalidate_key(&self, key_id: &str) {
        self.invalidate_where(|r| r.key.id == key_id);
    }

    /// Forgets the keys of a user (role change, removal, org-admin change).
    pub fn invalidate_user(&self, user_id: &str) {
        self.invalidate_where(|r| r.key.user_id == user_id);
    }

    /// Forgets the keys of a workspace (deleted).
    pub fn invalidate_workspace(&self, workspace_id: &str) {
        self.invalidate_where(|r| r.key.workspace_id == workspace_id);
    }

    /// How many keys are cached.
    pub fn len(&self) -> usize {
        self.entries.read().map(|e| e.len()).unwrap_or(0)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Takes the presented key out of the headers. `X-API-Key` wins over
/// `Authorization: Bearer` when both are sent.
fn presented_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let (raw, is_authorization) = match (
        headers.get("x-api-key"),
        headers.get(header::AUTHORIZATION),
    ) {
        (Some(value), _) => (value, false),
        (None, Some(value)) => (value, true),
        (None, None) => return Err(ApiError::MissingApiKey(
            "Missing API key: send it in the X-API-Key header (or as Authorization: Bearer <key>)"
                .to_owned(),
        )),
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
    Ok(text.to_owned())
}

/// Runs the verification order on a request's headers.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    client_addr: Option<String>,
) -> Result<AuthContext, ApiError> {
    let key = presented_key(headers)?;
    check_key_format(&key)
        .map_err(|why| ApiError::InvalidApiKey(format!("{INVALID_KEY_DETAIL} ({why})")))?;
    let digest = state.hasher().digest(&key);
    drop(key);

    let record = match state.cache().get(&digest) {
        Some(hit) => hit,
        None => {
            let generation = state.cache().generation();
            let loaded = state
                .store()
                .key_for_auth(&digest)
                .await?
                .ok_or_else(|| ApiError::InvalidApiKey(INVALID_KEY_DETAIL.to_owned()))?;
            let loaded = Arc::new(loaded);
            state
                .cache()
                .insert(digest, Arc::clone(&loaded), generation);
            loaded
        }
    };

    let key = &record.key;
    let now = OffsetDateTime::now_utc();
    if let Some(revoked_at) = key.revoked_at {
        return Err(ApiError::RevokedApiKey(format!(
            "This API key ({}…) was revoked at {}; create a new key",
            key.prefix,
            rfc3339(revoked_at)
        )));
    }
    if let Some(expires_at) = key.expires_at.filter(|at| *at <= now) {
        let detail = if key.replaced_by.is_some() {
            format!(
                "This API key ({}…) was rotated and its grace period ended at {}; use the new key",
                key.prefix,
                rfc3339(expires_at)
            )
        } else {
            format!(
                "This API key ({}…) expired at {}; create a new key",
                key.prefix,
                rfc3339(expires_at)
            )
        };
        return Err(ApiError::ExpiredApiKey(detail));
    }
    let Some(role) = record.role else {
        return Err(ApiError::InvalidApiKey(format!(
            "{INVALID_KEY_DETAIL} (the key's owner is no longer a member of its workspace)"
        )));
    };
    let permissions = role
        .permissions()
        .iter()
        .copied()
        .filter(|p| key.restriction.as_ref().is_none_or(|r| r.contains(p)))
        .collect();
    if let Some(limiter) = state.rate_limiter() {
        limiter.check(&key.id).map_err(|wait| {
            let limit = limiter.limit();
            ApiError::RateLimited {
                retry_after: wait.whole_seconds(),
                per_second: limit.per_second,
                burst: limit.burst,
            }
        })?;
    }
    state.usage().touch(&key.id, client_addr.as_deref());
    let tenant_admin = key.tenant_admin && record.user_is_org_admin;
    Ok(AuthContext {
        record,
        role,
        permissions,
        tenant_admin,
        client_addr,
    })
}

impl FromRequestParts<AppState> for AuthContext {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let client_addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());
        let context = authenticate(state, &parts.headers, client_addr).await?;
        tracing::Span::current().record("key", context.record.key.prefix.as_str());
        Ok(context)
    }
}

/// Masked display of a key, e.g. `noxus_Ab3d…x9Zq`.
pub fn masked_value(record: &crate::store::KeyRecord) -> String {
    key_format::masked(&record.prefix, &record.suffix)
}
