//! The one error type of the HTTP layer. Every error leaves the server as
//! `{"detail", "code", "request_id", ...}` with a matching status; the
//! request id is filled in by [`crate::http::middleware::RequestContext`],
//! which also logs 5xx (so `into_response` has no side effects).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::domain::sentence;
use crate::domain::validation::ValidationError;
use crate::store::StoreError;

/// The invalid-key sentence of the guide, which the official client shows.
pub const INVALID_KEY_DETAIL: &str = "Invalid API key - please check your credentials";

/// `Retry-After` of a 503 when the database does not answer: the pool
/// reconnects on the next request, so a second is enough once it is back.
pub const DATABASE_RETRY_AFTER_SECONDS: u64 = 1;

/// `Retry-After` of a 429 `too_many_streams`.
pub const TOO_MANY_STREAMS_RETRY_AFTER_SECONDS: u64 = 5;

/// Result alias for handlers.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// An error answered to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 `missing_api_key`: no `X-API-Key` / bearer token, or an empty one.
    #[error("{0}")]
    MissingApiKey(String),
    /// 401 `invalid_api_key`: malformed, bad checksum, unknown, or its owner left the workspace.
    #[error("{0}")]
    InvalidApiKey(String),
    /// 401 `revoked_api_key`.
    #[error("{0}")]
    RevokedApiKey(String),
    /// 401 `expired_api_key` (including a rotated key after its grace period).
    #[error("{0}")]
    ExpiredApiKey(String),
    /// 403 `insufficient_permissions`, naming the permission the route needs.
    #[error("{detail}")]
    InsufficientPermissions {
        /// The permission (or `tenant_admin`) that is missing.
        permission: String,
        /// The sentence.
        detail: String,
    },
    /// 403 `wrong_workspace`: the request names a workspace the key does not belong to.
    #[error("{0}")]
    WrongWorkspace(String),
    /// 404 `not_found`: also for objects of other workspaces, whose existence is never revealed.
    #[error("{0}")]
    NotFound(String),
    /// 405 `method_not_allowed`.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409 `conflict`: e.g. a duplicate name, or a quota reached.
    #[error("{0}")]
    Conflict(String),
    /// 413 `payload_too_large`.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 422 `validation_error`, naming the field.
    #[error("{detail}")]
    Validation {
        /// The field or parameter, e.g. `definition.nodes[0].type`.
        field: Option<String>,
        /// The sentence.
        detail: String,
    },
    /// 429 `rate_limited`, with `Retry-After` in whole seconds.
    #[error("Too many requests with this API key: the limit is {per_second} per second (bursts of {burst}); retry in {retry_after} s")]
    RateLimited {
        /// Seconds to wait.
        retry_after: u64,
        /// The sustained limit.
        per_second: u32,
        /// The burst.
        burst: u32,
    },
    /// 429 `rate_limited`: too many failed authentications from the client's address.
    #[error("Too many failed authentications from your address; retry in {retry_after} s")]
    AuthThrottled {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// 429 `too_many_streams`, with `Retry-After`: the key (or its
    /// workspace) holds the most event streams it may hold open at once.
    #[error("{0}")]
    TooManyStreams(#[from] crate::runs::streams::TooManyStreams),
    /// 429 `rate_limited`: too many leak reports from the client's address.
    #[error("Too many leak reports from your address; retry in {retry_after} s")]
    ReportsThrottled {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// 503 `service_unavailable`, with `Retry-After`: the database does not
    /// answer. Authentication fails closed: a key that is not in the cache
    /// is never let through because it could not be checked.
    #[error("{detail}")]
    ServiceUnavailable {
        /// The sentence.
        detail: String,
        /// Seconds to wait.
        retry_after: u64,
        /// The cause, for the log only.
        #[source]
        cause: anyhow::Error,
    },
    /// 500 `internal_error`: the cause is logged with the request id, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// A 422 about one field.
    pub fn validation(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Validation {
            field: Some(field.into()),
            detail: detail.into(),
        }
    }

    /// A 503: the database did not answer.
    pub fn database_unavailable(cause: StoreError) -> Self {
        Self::ServiceUnavailable {
            detail: "The platform cannot reach its database right now; retry in a moment (if this was a change, check whether it was made before repeating it)".to_owned(),
            retry_after: DATABASE_RETRY_AFTER_SECONDS,
            cause: cause.into(),
        }
    }

    /// A 404 for a kind of object.
    pub fn not_found(what: &str) -> Self {
        Self::NotFound(format!("{what} not found"))
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingApiKey(_)
            | Self::InvalidApiKey(_)
            | Self::RevokedApiKey(_)
            | Self::ExpiredApiKey(_) => StatusCode::UNAUTHORIZED,
            Self::InsufficientPermissions { .. } | Self::WrongWorkspace(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. }
            | Self::AuthThrottled { .. }
            | Self::ReportsThrottled { .. }
            | Self::TooManyStreams(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::ServiceUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingApiKey(_) => "missing_api_key",
            Self::InvalidApiKey(_) => "invalid_api_key",
            Self::RevokedApiKey(_) => "revoked_api_key",
            Self::ExpiredApiKey(_) => "expired_api_key",
            Self::InsufficientPermissions { .. } => "insufficient_permissions",
            Self::WrongWorkspace(_) => "wrong_workspace",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::Validation { .. } => "validation_error",
            Self::RateLimited { .. }
            | Self::AuthThrottled { .. }
            | Self::ReportsThrottled { .. } => "rate_limited",
            Self::TooManyStreams(_) => "too_many_streams",
            Self::ServiceUnavailable { .. } => "service_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }
}

impl From<crate::keys::KeyRuleError> for ApiError {
    fn from(err: crate::keys::KeyRuleError) -> Self {
        match err {
            crate::keys::KeyRuleError::Forbidden { permission, detail } => {
                Self::InsufficientPermissions { permission, detail }
            }
            crate::keys::KeyRuleError::Invalid { field, detail } => Self::validation(field, detail),
        }
    }
}

impl From<crate::body::BodyError> for ApiError {
    fn from(err: crate::body::BodyError) -> Self {
        match err {
            crate::body::BodyError::TooLarge { .. } => Self::PayloadTooLarge(err.to_string()),
            crate::body::BodyError::Unreadable(_) => Self::Validation {
                field: None,
                detail: err.to_string(),
            },
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        Self::Validation {
            field: Some(err.field),
            detail: err.detail,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => Self::not_found("object"),
            StoreError::Precondition(why) => Self::Conflict(sentence(&why.to_string())),
            StoreError::Conflict(kind) => Self::Conflict(sentence(&kind.to_string())),
            StoreError::QuotaExceeded { quota, limit } => Self::Conflict(quota.sentence(limit)),
            other if other.is_unavailable() => Self::database_unavailable(other),
            other => Self::Internal(other.into()),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        Self::Internal(err)
    }
}

/// What an error response carries until the request-context middleware
/// turns it into the JSON body (it alone knows the request id).
#[derive(Debug, Clone)]
pub struct ErrorPayload {
    /// Machine code.
    pub code: &'static str,
    /// Sentence for the client.
    pub detail: String,
    /// For 403s.
    pub required_permission: Option<String>,
    /// For 422s.
    pub field: Option<String>,
    /// For 5xx: the cause, for the log only.
    pub internal: Option<String>,
    /// The response already has its body (an HTML page): only log.
    pub keep_body: bool,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code();
        let retry_after = match &self {
            Self::RateLimited { retry_after, .. }
            | Self::AuthThrottled { retry_after }
            | Self::ReportsThrottled { retry_after }
            | Self::ServiceUnavailable { retry_after, .. } => Some(*retry_after),
            // When one of the others ends is not known: soon, usually.
            Self::TooManyStreams(_) => Some(TOO_MANY_STREAMS_RETRY_AFTER_SECONDS),
            _ => None,
        };
        let (detail, required_permission, field, internal) = match self {
            Self::InsufficientPermissions { permission, detail } => {
                (detail, Some(permission), None, None)
            }
            Self::Validation { field, detail } => (detail, None, field, None),
            Self::ServiceUnavailable { detail, cause, .. } => {
                (detail, None, None, Some(format!("{cause:#}")))
            }
            Self::Internal(cause) => (
                "Internal server error; the request id identifies it in the server log".to_owned(),
                None,
                None,
                Some(format!("{cause:#}")),
            ),
            other => (other.to_string(), None, None, None),
        };
        let mut response = status.into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response.extensions_mut().insert(ErrorPayload {
            code,
            detail,
            required_permission,
            field,
            internal,
            keep_body: false,
        });
        response
    }
}
