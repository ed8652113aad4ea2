//! The client: one connection pool, the key on every request, bounded
//! retries with backoff for idempotent requests, and typed errors.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use noxus_api::ErrorBody;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::{Config, ConfigError, Environment, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT};
use crate::error::{ApiError, Error, ErrorCode, Result};
use crate::resources::{Admin, Models, Nodes, Workflows};
use crate::runs::Runs;

/// The longest wait between two attempts, whatever `Retry-After` says.
pub const DEFAULT_MAX_RETRY_WAIT: Duration = Duration::from_secs(30);
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(8);

/// A Noxus client. Cheap to clone (clones share one connection pool).
///
/// ```no_run
/// # async fn demo() -> noxus_sdk::Result<()> {
/// let client = noxus_sdk::Client::from_env()?;
/// let me = client.me().await?;
/// println!("authenticated as key {} in workspace {}", me.name, me.workspace_name);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// Headers (key, user agent, extras) to add per request: only when the
    /// caller supplied the `reqwest::Client`; ours has them as defaults.
    config: Config,
    per_request_headers: Option<HeaderMap>,
    max_retries: u32,
    max_retry_wait: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .field("max_retries", &self.inner.max_retries)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for `api_key` with the default backend URL and timeout.
    /// Fails before any network call if the key is empty or malformed.
    pub fn new(api_key: impl Into<String>) -> Result<Self> {
        Self::builder().api_key(api_key).build()
    }

    /// A client configured from `NOXUS_API_KEY`, `NOXUS_BACKEND_URL` and `NOXUS_TIMEOUT`.
    pub fn from_env() -> Result<Self> {
        Self::from_config(Config::from_env()?)
    }

    /// A client whose key comes from `ENVIRONMENT`'s variable
    /// (`NOXUS_API_KEY_PROD`, `_STAGING` or `_DEV`).
    pub fn for_environment(environment: Environment) -> Result<Self> {
        Self::from_config(Config::from_env_for(environment)?)
    }

    /// A client from a [`Config`].
    pub fn from_config(config: Config) -> Result<Self> {
        Self::builder().config(config).build()
    }

    /// A builder for every option.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Checks the key and reports who it is: `GET /v1/admin/me`
    /// (the guide's "test the connection").
    pub async fn me(&self) -> Result<noxus_api::Me> {
        self.get("/v1/admin/me", &[]).await
    }

    /// Models and presets. Resource handles such as this one own a clone of
    /// the client (one `Arc`): keep them, move them into tasks or closures.
    pub fn models(&self) -> Models {
        Models::new(self)
    }

    /// The node catalog.
    pub fn nodes(&self) -> Nodes {
        Nodes::new(self)
    }

    /// Workflows of the key's workspace.
    pub fn workflows(&self) -> Workflows {
        Workflows::new(self)
    }

    /// Workflow runs: list, read, stop, delete, events. Start one with
    /// [`Workflows::run`](crate::Workflows::run).
    pub fn runs(&self) -> Runs {
        Runs::new(self)
    }

    /// Workspaces and their API keys.
    pub fn admin(&self) -> Admin {
        Admin::new(self)
    }

    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T> {
        self.send(Method::GET, path, query, None::<&()>).await
    }

    pub(crate) async fn post<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.send(Method::POST, path, &[], Some(body)).await
    }

    pub(crate) async fn patch<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        path: &str,
        query: &[(&str, String)],
        body: &B,
    ) -> Result<T> {
        self.send(Method::PATCH, path, query, Some(body)).await
    }

    pub(crate) async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(Method::DELETE, path, &[], None::<&()>).await
    }

    /// Sends a request, retrying idempotent ones (GET, DELETE) after a 429,
    /// a 5xx or a connection failure, at most `max_retries` times.
    pub(crate) async fn send<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<T> {
        let (url, response) = self
            .execute(method, path, query, body, Delivery::Json(None))
            .await?;
        decode(url, response).await
    }

    /// As [`Client::send`], with a longer timeout for this request only: a
    /// route that waits on the server's side (`/runs/sync` waits up to 60 s).
    pub(crate) async fn send_waiting<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
        at_least: Duration,
    ) -> Result<T> {
        let timeout = self.inner.config.timeout().max(at_least);
        let (url, response) = self
            .execute(method, path, query, body, Delivery::Json(Some(timeout)))
            .await?;
        decode(url, response).await
    }

    /// Opens a `text/event-stream` GET: the answer's head must arrive
    /// within the configured timeout, its body may then last up to
    /// `lifetime` (the caller reads it and bounds the time between chunks).
    /// Retried like any GET.
    pub(crate) async fn open_event_stream(
        &self,
        path: &str,
        query: &[(&str, String)],
        lifetime: Duration,
    ) -> Result<(String, reqwest::Response)> {
        self.execute(
            Method::GET,
            path,
            query,
            None::<&()>,
            Delivery::EventStream { lifetime },
        )
        .await
    }

    /// Sends a request until it succeeds (a 2xx, returned unread with its
    /// URL), fails for good, or runs out of retries.
    async fn execute<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
        delivery: Delivery,
    ) -> Result<(String, reqwest::Response)> {
        let inner = &*self.inner;
        let mut url = format!("{}{path}", inner.config.base_url());
        if !query.is_empty() {
            url.push('?');
            url.push_str(&serde_urlencoded::to_string(query).unwrap_or_default());
        }
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|source| Error::Decode {
                url: url.clone(),
                status: 0,
                body: String::new(),
                source,
            })?;
        let idempotent = matches!(
            method,
            Method::GET | Method::HEAD | Method::DELETE | Method::PUT | Method::OPTIONS
        );
        // The whole exchange, body included, must end within this.
        let timeout = match delivery {
            Delivery::Json(timeout) => timeout.unwrap_or(inner.config.timeout()),
            Delivery::EventStream { lifetime } => lifetime,
        };
        let mut attempt = 0u32;
        loop {
            // Rebuilt on every attempt: a request cannot be replayed.
            let mut request = inner.http.request(method.clone(), &url);
            // Our own client carries the key, headers and timeout already;
            // a caller-supplied one gets them on each request.
            if let Some(headers) = &inner.per_request_headers {
                request = request.headers(headers.clone());
            }
            if inner.per_request_headers.is_some() || timeout != inner.config.timeout() {
                request = request.timeout(timeout);
            }
            if let Delivery::EventStream { .. } = delivery {
                request = request.header(reqwest::header::ACCEPT, "text/event-stream");
            }
            if let Some(bytes) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(bytes.clone());
            }
            tracing::debug!(%method, path, attempt, key = %inner.config.api_key(), "noxus request");
            let sent = match delivery {
                // A stream's head is bounded by the usual timeout, its
                // body (read by the caller) by `lifetime`.
                Delivery::EventStream { .. } => {
                    match tokio::time::timeout(inner.config.timeout(), request.send()).await {
                        Ok(sent) => sent,
                        Err(_) => {
                            return Err(Error::Timeout {
                                url,
                                timeout: inner.config.timeout(),
                            })
                        }
                    }
                }
                Delivery::Json(_) => request.send().await,
            };
            let retryable_error = match sent {
                Err(err) if err.is_timeout() => {
                    return Err(Error::Timeout { url, timeout });
                }
                Err(err) => {
                    let error = Error::Connection {
                        url: url.clone(),
                        message: connection_message(&err),
                        source: err,
                    };
                    (error, None)
                }
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        return Ok((url, response));
                    }
                    let retry_after = parse_retry_after(response.headers());
                    let api = api_error(response).await;
                    let error = Error::from_status(api, retry_after);
                    if status.as_u16() != 429 && !status.is_server_error() {
                        return Err(error);
                    }
                    (error, retry_after)
                }
            };
            let (error, retry_after) = retryable_error;
            if !idempotent || attempt >= inner.max_retries {
                return Err(error);
            }
            let wait = match retry_after {
                Some(wait) => wait.min(inner.max_retry_wait),
                None => backoff(attempt).min(inner.max_retry_wait),
            };
            tracing::debug!(%method, path, attempt, wait_ms = wait.as_millis() as u64, error = %error, "noxus request will be retried");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

/// How a request's answer is read.
#[derive(Debug, Clone, Copy)]
enum Delivery {
    /// One JSON body, read within the timeout (the configured one unless given).
    Json(Option<Duration>),
    /// Server-sent events: the head within the configured timeout, the
    /// body for up to `lifetime`.
    EventStream { lifetime: Duration },
}

/// Exponential backoff with jitter: a random wait in [d/2, d] where
/// d = 500 ms × 2^attempt, capped at 8 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let full = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(10))
        .min(BACKOFF_CAP);
    let half = full / 2;
    half + half.mul_f64(jitter())
}

/// A number in [0, 1) that differs from call to call and process to
/// process: the standard library's randomly keyed hasher, which is plenty
/// to spread retries (no cryptography needed, and no `rand` to compile).
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?;
    let seconds: f64 = raw.trim().parse().ok()?;
    // Not `from_secs_f64`: it panics on values no `Duration` holds (`1e20`).
    Duration::try_from_secs_f64(seconds).ok()
}

/// Longest server sentence an error keeps, in characters.
const MAX_DETAIL_CHARS: usize = 1000;
/// Longest plain-text body (not our JSON) kept as the detail.
const MAX_TEXT_DETAIL_CHARS: usize = 300;
/// Longest code, request id, field or permission an error keeps.
const MAX_TOKEN_CHARS: usize = 200;
/// Longest raw body a decode error keeps.
const MAX_BODY_CHARS: usize = 4096;

/// Text from a response, as an error keeps it: anything that looks like an
/// API key cut to its first 10 characters (a proxy may echo the request's
/// headers), and at most `max` characters (then ending in `…`).
pub(crate) fn clip(text: &str, max: usize) -> String {
    let text = noxus_api::key_format::redact(text);
    match text.char_indices().nth(max) {
        None => text.into_owned(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

/// serde's message quotes the body (a string of the wrong type, of any
/// length): past the bounds of [`clip`], the error is replaced by one with
/// the clipped message.
fn clipped_source(err: serde_json::Error) -> serde_json::Error {
    let message = err.to_string();
    let clipped = clip(&message, MAX_DETAIL_CHARS);
    if clipped == message {
        err
    } else {
        <serde_json::Error as serde::de::Error>::custom(clipped)
    }
}

pub(crate) fn connection_message(err: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut message = if err.is_connect() {
        "cannot connect".to_owned()
    } else {
        "the connection failed".to_owned()
    };
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

async fn decode<T: DeserializeOwned>(url: String, response: reqwest::Response) -> Result<T> {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.map_err(|err| Error::Connection {
        url: url.clone(),
        message: connection_message(&err),
        source: err,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Decode {
        url,
        status,
        body: clip(&String::from_utf8_lossy(&bytes), MAX_BODY_CHARS),
        source: clipped_source(source),
    })
}

/// The error a refusal carries: our `{detail, code, request_id}` body, or
/// whatever another server (a proxy) said, every part of it clipped.
async fn api_error(response: reqwest::Response) -> ApiError {
    let status = response.status().as_u16();
    let header_id = response
        .headers()
        .get("x-request-id")
        .or_else(|| response.headers().get("x-noxus-request-id"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.unwrap_or_default();
    let token = |t: &str| clip(t, MAX_TOKEN_CHARS);
    let sentence = |d: &str| {
        if d.trim().is_empty() {
            format!("HTTP {status}")
        } else {
            clip(d, MAX_DETAIL_CHARS)
        }
    };
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => ApiError {
            status,
            code: Some(ErrorCode::parse(&token(&body.code))),
            detail: sentence(&body.detail),
            request_id: Some(body.request_id)
                .filter(|id| !id.is_empty())
                .or(header_id)
                .map(|id| token(&id)),
            required_permission: body.required_permission.as_deref().map(token),
            field: body.field.as_deref().map(token),
        },
        Err(_) => {
            // Not our error shape (a proxy, another server): keep what we can.
            let value: Option<serde_json::Value> = serde_json::from_str(&text).ok();
            let detail = value
                .as_ref()
                .and_then(|v| {
                    ["detail", "message", "error"]
                        .iter()
                        .find_map(|k| v.get(*k)?.as_str())
                })
                .map(sentence)
                .unwrap_or_else(|| sentence(&clip(text.trim(), MAX_TEXT_DETAIL_CHARS)));
            ApiError {
                status,
                code: None,
                detail,
                request_id: header_id.as_deref().map(token),
                required_permission: None,
                field: None,
            }
        }
    }
}

/// Builds a [`Client`].
#[derive(Default)]
pub struct ClientBuilder {
    api_key: Option<String>,
    config: Option<Config>,
    base_url: Option<String>,
    timeout: Option<Duration>,
    max_retries: Option<u32>,
    max_retry_wait: Option<Duration>,
    headers: Vec<(String, String)>,
    user_agent: Option<String>,
    http: Option<reqwest::Client>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field(
                "api_key",
                &self
                    .api_key
                    .as_deref()
                    .map(noxus_api::key_format::display_prefix),
            )
            .field("config", &self.config)
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// The API key (required unless [`ClientBuilder::config`] gives one).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Start from a [`Config`] (key, URL, timeout); later setters override it.
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// The backend URL (default `https://backend.noxus.ai`).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Per-request timeout (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Retries of idempotent requests (default 2; 0 turns retrying off).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }

    /// The longest wait between attempts, capping `Retry-After` (default 30 s).
    pub fn max_retry_wait(mut self, wait: Duration) -> Self {
        self.max_retry_wait = Some(wait);
        self
    }

    /// An extra header on every request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The `User-Agent` (default `noxus-sdk-rust/<version>`).
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = Some(agent.into());
        self
    }

    /// Use this `reqwest::Client` (its pool, proxy and TLS settings).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Validates everything and builds the client. No network call.
    pub fn build(self) -> Result<Client> {
        let mut config = match (self.config, self.api_key) {
            (Some(config), Some(key)) => config.with_api_key(key)?,
            (Some(config), None) => config,
            (None, Some(key)) => Config::new(key)?,
            (None, None) => return Err(ConfigError::NoApiKey.into()),
        };
        if let Some(url) = &self.base_url {
            config = config.with_base_url(url)?;
        }
        if let Some(timeout) = self.timeout {
            config = config.with_timeout(timeout)?;
        }
        let mut headers = HeaderMap::new();
        let mut key_value =
            HeaderValue::from_str(config.api_key().expose_secret()).map_err(|_| {
                ConfigError::MalformedApiKey(noxus_api::KeyFormatError::InvalidCharacter)
            })?;
        key_value.set_sensitive(true);
        headers.insert("x-api-key", key_value);
        let agent = self
            .user_agent
            .unwrap_or_else(|| format!("noxus-sdk-rust/{}", env!("CARGO_PKG_VERSION")));
        headers.insert(
            reqwest::header::USER_AGENT,
            HeaderValue::from_str(&agent).map_err(|e| ConfigError::InvalidHeader {
                name: "user-agent".to_owned(),
                reason: e.to_string(),
            })?,
        );
        for (name, value) in self.headers {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|e| {
                ConfigError::InvalidHeader {
                    name: name.clone(),
                    reason: e.to_string(),
                }
            })?;
            let value = HeaderValue::from_str(&value).map_err(|e| ConfigError::InvalidHeader {
                name: name.clone(),
                reason: e.to_string(),
            })?;
            headers.insert(header, value);
        }
        let (http, per_request_headers) = match self.http {
            Some(http) => (http, Some(headers)),
            None => (
                reqwest::Client::builder()
                    .connect_timeout(config.timeout().min(DEFAULT_TIMEOUT))
                    .timeout(config.timeout())
                    .default_headers(headers)
                    .build()
                    .map_err(|e| ConfigError::HttpClient(e.to_string()))?,
                None,
            ),
        };
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                config,
                per_request_headers,
                max_retries: self.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
                max_retry_wait: self.max_retry_wait.unwrap_or(DEFAULT_MAX_RETRY_WAIT),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_waits_are_spread_within_their_bounds() {
        let samples: Vec<f64> = (0..200).map(|_| jitter()).collect();
        assert!(samples.iter().all(|j| (0.0..1.0).contains(j)));
        let distinct: std::collections::BTreeSet<u64> =
            samples.iter().map(|j| (j * 1e6) as u64).collect();
        assert!(distinct.len() > 150, "jitter repeats: {distinct:?}");
        assert!(samples.iter().any(|j| *j < 0.5) && samples.iter().any(|j| *j >= 0.5));
        for attempt in 0..12 {
            let full = BACKOFF_BASE
                .saturating_mul(1u32 << attempt.min(10))
                .min(BACKOFF_CAP);
            let wait = backoff(attempt);
            assert!(
                wait >= full / 2 && wait <= full,
                "attempt {attempt}: {wait:?}"
            );
        }
    }
}
