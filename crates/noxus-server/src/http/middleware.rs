//! Per-request plumbing: a request id on every response, error bodies in
//! one JSON shape (ours and the framework's), and logging of 5xx causes.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use noxus_api::ErrorBody;
use rand::Rng;

use std::sync::Arc;

use crate::http::access_log::RequestFacts;
use crate::http::body_timeout;
use crate::http::error::{ApiError, ErrorPayload};
use crate::metrics::{RouteId, RouteIndex};
use crate::state::AppState;
use crate::usage::KeySlot;

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A new request id: `req_` and 20 random alphanumerics (each from one
/// random byte, 119 bits in all).
pub(crate) fn new_request_id() -> String {
    RequestIdText::new().as_str().to_owned()
}

/// A request id, kept as its bytes (no allocation).
#[derive(Debug, Clone, Copy)]
struct RequestIdText([u8; 24]);

impl RequestIdText {
    fn new() -> Self {
        const PREFIX: &[u8] = b"req_";
        const ALPHABET: &[u8; 62] =
            b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut id = [0u8; 24];
        id[..PREFIX.len()].copy_from_slice(PREFIX);
        let mut random = [0u8; 20];
        rand::thread_rng().fill(&mut random);
        for (byte, random) in id[PREFIX.len()..].iter_mut().zip(random) {
            // A byte scaled to 0..62 by a multiplication, no division: 8 of
            // the 62 characters are 5/4 as likely as the others, so each
            // carries 5.95 bits instead of 5.954 (119 bits in all).
            *byte = ALPHABET[(usize::from(random) * ALPHABET.len()) >> 8];
        }
        Self(id)
    }

    fn as_str(&self) -> &str {
        // Only ASCII letters, digits and `_` are ever written.
        std::str::from_utf8(&self.0).unwrap_or("req_")
    }
}

/// The layer every request passes, around the router: it assigns the
/// request id, renders error bodies and logs the outcome (the access line),
/// counts the answer against the key and adds its `RateLimit-*` headers.
/// Client-sent `x-request-id` headers are ignored: ids are ours, so they can
/// be trusted when a user quotes one.
/// It also applies the request-body timeout, and marks answers given while
/// draining (`Connection: close`) or over HTTPS (HSTS).
///
/// It finds the request's route itself ([`RouteIndex`]: its template for
/// the access line, its counts for the metrics) and turns a panic of the
/// router's call or future into a logged 500 ([`panic_response`]), which
/// it then counts, logs and renders like any other answer: a layer on
/// every route (`Router::layer`) would wrap each route in one more boxed
/// service, cloned, with a boxed future, on every request.
///
/// A plain service with its own future type, not `axum::middleware::from_fn`:
/// that boxes the middleware's future and the inner service on every
/// request, and the request would pass one more router to reach it.
#[derive(Debug, Clone)]
pub struct RequestContext<S> {
    shared: Arc<Shared>,
    inner: S,
}

/// What the request layer reads when it answers: one reference count per
/// request for both.
#[derive(Debug)]
struct Shared {
    state: AppState,
    routes: RouteIndex,
}

impl<S> RequestContext<S> {
    /// Wraps `inner` (the router), whose route templates `routes` holds.
    pub fn new(state: AppState, routes: RouteIndex, inner: S) -> Self {
        Self {
            shared: Arc::new(Shared { state, routes }),
            inner,
        }
    }
}

impl<S> tower::Service<Request> for RequestContext<S>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = ContextFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let (mut request, body_watch) =
            body_timeout::watch_body(request, self.shared.state.config().request_body_timeout);
        let request_id = RequestIdText::new();
        // The connection layer made the slot (with the peer address and
        // the request's start); a request from elsewhere (axum's `serve`,
        // tests) gets one here.
        let slot = match request.extensions().get::<KeySlot>() {
            Some(slot) => slot.clone(),
            None => {
                let slot = KeySlot::default();
                request.extensions_mut().insert(slot.clone());
                slot
            }
        };
        // Logs and traces (access_log.rs): the route template, never the path.
        let facts = RequestFacts::of(&request, slot.started());
        let span = facts.span(request_id.as_str(), request.uri().path());
        let route = self.shared.routes.find(request.uri().path());
        let inner = {
            let _entered = span.enter();
            let inner = &mut self.inner;
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.call(request))) {
                Ok(future) => Guarded::Running { future },
                Err(panic) => Guarded::Panicked {
                    response: Some(panic_response(panic)),
                },
            }
        };
        ContextFuture {
            inner,
            pending: Some(Pending {
                shared: Arc::clone(&self.shared),
                request_id,
                facts,
                slot,
                route,
                body_watch,
                span,
            }),
        }
    }
}

/// What the request layer keeps while the router answers.
struct Pending {
    shared: Arc<Shared>,
    request_id: RequestIdText,
    facts: RequestFacts,
    slot: KeySlot,
    route: RouteId,
    body_watch: Option<body_timeout::BodyWatch>,
    span: tracing::Span,
}

pin_project_lite::pin_project! {
    /// The future of [`RequestContext`]: the router's answer, finished.
    pub struct ContextFuture<F> {
        #[pin]
        inner: Guarded<F>,
        pending: Option<Pending>,
    }
}

impl<F> std::fmt::Debug for ContextFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextFuture")
            .field("request_id", &self.pending.as_ref().map(|p| p.request_id))
            .finish_non_exhaustive()
    }
}

impl<F> std::future::Future for ContextFuture<F>
where
    F: std::future::Future<Output = Result<Response, std::convert::Infallible>>,
{
    type Output = Result<Response, std::convert::Infallible>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let polled = match this.pending.as_ref() {
            Some(pending) => {
                let _entered = pending.span.enter();
                this.inner.poll(cx)
            }
            None => this.inner.poll(cx),
        };
        let std::task::Poll::Ready(Ok(response)) = polled else {
            return polled;
        };
        std::task::Poll::Ready(Ok(match this.pending.take() {
            Some(pending) => pending.answer(response),
            None => response,
        }))
    }
}

impl Pending {
    /// The router's answer as it is sent: counted, logged, with our headers
    /// and error body.
    fn answer(self, mut response: Response) -> Response {
        let Pending {
            shared,
            request_id,
            facts,
            slot,
            route,
            body_watch,
            span,
        } = self;
        let state = &shared.state;
        let route = shared.routes.stats(route);
        if let Some(watch) = body_watch {
            response = watch.answer(response);
        }
        // The index and the router agree on whether a route matched (only
        // the fallback marks its answers `Unrouted`): a route registered
        // without its template would be counted and logged as unmatched.
        debug_assert!(
            route.template().is_some() != response.extensions().get::<Unrouted>().is_some(),
            "the route index and the router disagree on {:?}",
            route.template()
        );
        let key = slot.finish();
        // The one clock reading of the answer: its latency and the access
        // line's time.
        let answered = state.clock().now();
        let elapsed = answered.instant.saturating_duration_since(facts.started);
        let request_id_text = request_id;
        let request_id = request_id_text.as_str();
        let rate = key.as_ref().and_then(|key| {
            key.hot.count(response.status().as_u16(), key.unix_ms);
            key.rate
        });

        let payload = response.extensions_mut().remove::<ErrorPayload>();
        let status = response.status();
        // Counted as answered, before the error body is rendered.
        route.record(&facts.method, status, elapsed);
        if payload
            .as_ref()
            .is_some_and(|p| p.code == "insufficient_permissions")
        {
            state
                .metrics()
                .auth_outcome(crate::metrics::AuthOutcome::InsufficientPermissions);
        }
        let route = route.template();
        let payload = match payload {
            Some(payload) => Some(payload),
            // The framework's own rejections (e.g. a panic caught below us) arrive
            // as plain responses: give them our shape too.
            None if (status.is_client_error() || status.is_server_error())
                && !is_html(&response)
                && response.extensions().get::<OwnBody>().is_none() =>
            {
                Some(framework_error(status))
            }
            None => None,
        };
        if let Some(payload) = payload {
            let _entered = span.enter();
            if status.is_server_error() {
                facts.log_failure(
                    request_id,
                    status,
                    route,
                    payload.internal.as_deref().unwrap_or("unknown"),
                );
            } else {
                tracing::debug!(%status, code = payload.code, "request refused");
            }
            if !payload.keep_body {
                let body = ErrorBody {
                    detail: payload.detail,
                    code: payload.code.to_owned(),
                    request_id: request_id.to_owned(),
                    required_permission: payload.required_permission,
                    field: payload.field,
                };
                let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
                let headers = response.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                headers.remove(header::CONTENT_LENGTH);
                *response.body_mut() = Body::from(bytes);
            }
        }
        facts.log_access(
            request_id,
            status,
            route,
            elapsed,
            key.as_ref().map(|k| k.hot.key_id()),
            &answered,
        );
        insert_id_and_rate_headers(response.headers_mut(), &request_id_text, rate);
        finish(state, response)
    }
}

/// `x-request-id` and, for a key under a rate limit, the `RateLimit-*`
/// headers. The id is its own exact-size buffer: slices of one shared
/// buffer (or a buffer with spare capacity) make `bytes` count references
/// with an atomic operation on every slice and every drop, which costs
/// more than the small allocation. The `RateLimit-*` values come from
/// [`RateValues`].
fn insert_id_and_rate_headers(
    headers: &mut axum::http::HeaderMap,
    request_id: &RequestIdText,
    rate: Option<crate::rate_limit::RateInfo>,
) {
    if let Ok(id) =
        HeaderValue::from_maybe_shared(axum::body::Bytes::copy_from_slice(&request_id.0))
    {
        headers.insert(X_REQUEST_ID.clone(), id);
    }
    if let Some(rate) = rate {
        let [limit, remaining, reset] = RateValues::of(rate);
        headers.insert(RATELIMIT_LIMIT.clone(), limit);
        headers.insert(RATELIMIT_REMAINING.clone(), remaining);
        headers.insert(RATELIMIT_RESET.clone(), reset);
    }
}

/// The `RateLimit-*` header values of a thread's last answer, reused while
/// the numbers stay the same: a key's limit never changes, and a key used
/// at less than its rate shows the same remaining count (its burst less
/// one) and reset (1 second) answer after answer. A value reused is one
/// reference count up and down instead of an allocation, a copy, a
/// validation and a free; a number that changed costs what it cost before.
struct RateValues {
    numbers: [u64; 3],
    values: [Option<HeaderValue>; 3],
}

impl RateValues {
    fn of(rate: crate::rate_limit::RateInfo) -> [HeaderValue; 3] {
        thread_local! {
            static LAST: std::cell::RefCell<RateValues> = const {
                std::cell::RefCell::new(RateValues { numbers: [0; 3], values: [None, None, None] })
            };
        }
        let numbers = [
            u64::from(rate.limit),
            u64::from(rate.remaining),
            rate.reset_seconds,
        ];
        LAST.with_borrow_mut(|last| {
            std::array::from_fn(|i| match &last.values[i] {
                Some(value) if last.numbers[i] == numbers[i] => value.clone(),
                _ => {
                    let value = HeaderValue::from(numbers[i]);
                    last.numbers[i] = numbers[i];
                    last.values[i] = Some(value.clone());
                    value
                }
            })
        })
    }
}

/// Headers every answer gets from the server's situation.
fn finish(state: &AppState, mut response: Response) -> Response {
    if state.is_draining() {
        // Shutting down: the client's next request goes on a new
        // connection, to another replica.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if state.config().serves_https() {
        // Served over HTTPS: browsers must never come back over plain HTTP.
        response.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

pin_project_lite::pin_project! {
    /// The router's future inside [`ContextFuture`]: its answer, or a 500
    /// if it panicked.
    #[project = GuardedProjection]
    pub enum Guarded<F> {
        /// The router is answering.
        Running { #[pin] future: F },
        /// The router panicked when called.
        Panicked { response: Option<Response> },
    }
}

impl<F> std::fmt::Debug for Guarded<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Running { .. } => "Guarded::Running",
            Self::Panicked { .. } => "Guarded::Panicked",
        })
    }
}

impl<F> std::future::Future for Guarded<F>
where
    F: std::future::Future<Output = Result<Response, std::convert::Infallible>>,
{
    type Output = Result<Response, std::convert::Infallible>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.project() {
            GuardedProjection::Running { future } => {
                // A future that panicked is not polled again: the 500 is
                // the request's answer.
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(polled) => polled,
                    Err(panic) => std::task::Poll::Ready(Ok(panic_response(panic))),
                }
            }
            GuardedProjection::Panicked { response } => std::task::Poll::Ready(Ok(response
                .take()
                .unwrap_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response()))),
        }
    }
}

/// Marks an error response whose body is meant as it is (`/readyz`'s 503
/// says why it is not ready), not to be replaced by the error body.
#[derive(Debug, Clone, Copy)]
pub struct OwnBody;

/// Marks the fallback's answers (no route matched the path), so that the
/// request layer can check, in debug builds, that its [`RouteIndex`]
/// found no route either.
#[derive(Debug, Clone, Copy)]
pub struct Unrouted;

/// Dashboard pages carry their own (HTML) error bodies.
fn is_html(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"))
}

fn framework_error(status: StatusCode) -> ErrorPayload {
    let (code, detail): (&'static str, String) = match status {
        StatusCode::NOT_FOUND => ("not_found", "No such route".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "This route does not support that method".to_owned(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "The request body is too large".to_owned(),
        ),
        s if s.is_server_error() => (
            "internal_error",
            "Internal server error; the request id identifies it in the server log".to_owned(),
        ),
        s => ("bad_request", format!("The request was refused ({s})")),
    };
    ErrorPayload {
        code,
        detail,
        required_permission: None,
        field: None,
        internal: status
            .is_server_error()
            .then(|| format!("framework response {status}")),
        keep_body: false,
    }
}

/// Turns a caught panic into a logged 500 (the payload text goes to the log only).
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    ApiError::Internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
}

/// 404 for unknown routes.
pub async fn fallback(request: Request) -> ApiError {
    ApiError::NotFound(format!(
        "There is no route {} {}",
        request.method(),
        crate::domain::validation::truncate(request.uri().path())
    ))
}

/// 405 for a known route with the wrong method.
pub async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{} is not supported on {}",
        request.method(),
        crate::domain::validation::truncate(request.uri().path())
    ))
}

#[cfg(test)]
mod tests {
    use super::{RateValues, RequestIdText};
    use crate::rate_limit::RateInfo;

    #[test]
    fn rate_limit_values_are_the_numbers_whether_reused_or_not() {
        let text = |rate| RateValues::of(rate).map(|v| v.to_str().unwrap_or_default().to_owned());
        let rate = |limit, remaining, reset_seconds| RateInfo {
            limit,
            remaining,
            reset_seconds,
        };
        // The first answer, the same numbers again (reused), one number
        // changed, a number back to an earlier one, and the extremes.
        for (limit, remaining, reset) in [
            (60, 59, 1),
            (60, 59, 1),
            (60, 58, 1),
            (60, 59, 1),
            (600, 0, 10),
            (u32::MAX, u32::MAX, u64::MAX),
            (0, 0, 0),
        ] {
            assert_eq!(
                text(rate(limit, remaining, reset)),
                [limit.to_string(), remaining.to_string(), reset.to_string()]
            );
        }
        // Another thread has its own.
        std::thread::spawn(move || assert_eq!(text(rate(7, 6, 1)), ["7", "6", "1"]))
            .join()
            .unwrap_or_else(|_| panic!("the other thread failed"));
        assert_eq!(text(rate(0, 0, 0)), ["0", "0", "0"]);
    }

    #[test]
    fn request_ids_are_req_and_20_alphanumerics_using_every_one() {
        let mut seen = std::collections::HashSet::new();
        let mut characters = std::collections::HashSet::new();
        for _ in 0..2_000 {
            let id = RequestIdText::new();
            let text = id.as_str();
            assert_eq!(text.len(), 24, "{text}");
            let rest = text.strip_prefix("req_").unwrap_or_default();
            assert!(
                rest.len() == 20 && rest.bytes().all(|b| b.is_ascii_alphanumeric()),
                "{text}"
            );
            characters.extend(rest.bytes());
            assert!(seen.insert(text.to_owned()), "{text} twice");
        }
        assert_eq!(characters.len(), 62, "every alphanumeric character occurs");
    }
}
