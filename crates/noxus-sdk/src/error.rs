//! Every way a call can fail, kept apart: the server's answers (by status,
//! each with its `code`, `detail` and `request_id`), transport failures,
//! undecodable bodies, and configuration problems.

use std::fmt;
use std::time::Duration;

use crate::config::ConfigError;

/// Result alias of the SDK.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the server said when it refused a request. Every text comes from
/// the response, bounded (the detail to 1000 characters, the others to
/// 200) and with anything that looks like an API key cut to its first 10
/// characters, whatever the body held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Machine code, e.g. `invalid_api_key` (absent if the body was not ours).
    pub code: Option<String>,
    /// The server's sentence.
    pub detail: String,
    /// The request id (body or `x-request-id` header), to quote to support.
    pub request_id: Option<String>,
    /// For 403: the permission the route needs.
    pub required_permission: Option<String>,
    /// For 422: the field at fault.
    pub field: Option<String>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.detail)?;
        match (&self.code, &self.request_id) {
            (Some(code), Some(id)) => write!(f, " ({}, {code}, request {id})", self.status),
            (Some(code), None) => write!(f, " ({}, {code})", self.status),
            (None, Some(id)) => write!(f, " ({}, request {id})", self.status),
            (None, None) => write!(f, " ({})", self.status),
        }
    }
}

/// The guide's sentence for a 401.
pub const UNAUTHORIZED: &str = "Invalid API key - please check your credentials";
/// The guide's sentence for a 403.
pub const FORBIDDEN: &str = "API key lacks required permissions";

/// `sentence: detail`, without repeating the sentence when the server's
/// detail already starts with it.
fn prefixed(sentence: &str, api: &ApiError) -> String {
    if api.detail.starts_with(sentence) {
        api.to_string()
    } else {
        format!("{sentence}: {api}")
    }
}

/// An SDK error. Messages follow the authentication guide's wording and
/// never contain the API key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 401: missing, malformed, unknown, revoked or expired key.
    #[error("{}", prefixed(UNAUTHORIZED, .0))]
    Unauthorized(Box<ApiError>),
    /// 403: the key's role (or restriction) lacks the permission, or the
    /// request named another workspace.
    #[error("{}", prefixed(FORBIDDEN, .0))]
    Forbidden(Box<ApiError>),
    /// 404: no such object in the key's workspace.
    #[error("Not found: {0}")]
    NotFound(Box<ApiError>),
    /// 422: the request was invalid; `field` says where.
    #[error("Invalid request: {0}")]
    Validation(Box<ApiError>),
    /// 429 after the retries: wait `retry_after` before trying again.
    #[error("Rate limited: {api}")]
    RateLimited {
        /// The server's answer.
        api: Box<ApiError>,
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// 5xx after the retries.
    #[error("Server error: {0}")]
    Server(Box<ApiError>),
    /// Any other refusal (400, 405, 409, 413, ...).
    #[error("Request failed: {0}")]
    Api(Box<ApiError>),
    /// No answer within the timeout.
    #[error("Network error: no response from {url} within {timeout:?}")]
    Timeout {
        /// The URL (never contains the key).
        url: String,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// Could not connect, or the connection broke.
    #[error("Network error: {message} ({url})")]
    Connection {
        /// The URL.
        url: String,
        /// What happened.
        message: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// A 2xx whose body is not what the API promises.
    #[error("Cannot decode the response of {url} (status {status}): {source}")]
    Decode {
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// The raw body, for debugging: at most 4096 characters, keys cut
        /// to their first 10.
        body: String,
        /// The parse error (its message bounded and keys cut the same way).
        #[source]
        source: serde_json::Error,
    },
    /// A configuration problem, found before any request.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl Error {
    /// The server's answer, for errors that have one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Self::Unauthorized(a)
            | Self::Forbidden(a)
            | Self::NotFound(a)
            | Self::Validation(a)
            | Self::Server(a)
            | Self::Api(a) => Some(a),
            Self::RateLimited { api, .. } => Some(api),
            _ => None,
        }
    }

    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        self.api().map(|a| a.status)
    }

    /// The server's machine code, e.g. `revoked_api_key`.
    pub fn code(&self) -> Option<&str> {
        self.api().and_then(|a| a.code.as_deref())
    }

    /// The request id to quote to support.
    pub fn request_id(&self) -> Option<&str> {
        self.api().and_then(|a| a.request_id.as_deref())
    }

    /// Whether this is a timeout or a connection failure.
    pub fn is_network(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Connection { .. })
    }

    pub(crate) fn from_status(api: ApiError, retry_after: Option<Duration>) -> Self {
        let api = Box::new(api);
        match api.status {
            401 => Self::Unauthorized(api),
            403 => Self::Forbidden(api),
            404 => Self::NotFound(api),
            422 => Self::Validation(api),
            429 => Self::RateLimited { api, retry_after },
            500..=599 => Self::Server(api),
            _ => Self::Api(api),
        }
    }
}
