//! Per-request plumbing: a request id on every response, error bodies in
//! one JSON shape (ours and the framework's), and logging of 5xx causes.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use noxus_api::ErrorBody;
use rand::Rng;
use tracing::Instrument;

use crate::http::access_log::RequestFacts;
use crate::http::body_timeout;
use crate::http::error::{ApiError, ErrorPayload};
use crate::state::AppState;
use crate::usage::KeySlot;

/// The id of the current request, in request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// A new request id: `req_` and 20 random alphanumerics (two random 64-bit
/// numbers written in base 62, 119 bits in all).
pub(crate) fn new_request_id() -> String {
    const PREFIX: &[u8] = b"req_";
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut id = [0u8; PREFIX.len() + 20];
    id[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut rng = rand::thread_rng();
    for half in id[PREFIX.len()..].chunks_mut(10) {
        // 62^10 < 2^64: ten digits from one number (some ids are up to 5%
        // likelier than others, immaterial for an identifier).
        let mut n: u64 = rng.gen();
        for byte in half {
            *byte = ALPHABET[(n % 62) as usize];
            n /= 62;
        }
    }
    String::from_utf8_lossy(&id).into_owned()
}

/// Assigns the request id, renders error bodies and logs the outcome.
/// Client-sent `x-request-id` headers are ignored: ids are ours, so they can
/// be trusted when a user quotes one.
/// It also applies the request-body timeout, and marks answers given while
/// draining (`Connection: close`) or over HTTPS (HSTS): one layer, because
/// each layer costs an allocation and a copy of the request's future.
pub async fn request_context(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (mut request, body_watch) =
        body_timeout::watch_body(request, state.config().request_body_timeout);
    let request_id = new_request_id();
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));
    // Logs and traces (access_log.rs): the route template, never the path.
    let facts = RequestFacts::of(&request);
    let span = facts.span(&request_id, request.uri().path());

    let slot = KeySlot::default();
    request.extensions_mut().insert(slot.clone());
    let mut response = next.run(request).instrument(span.clone()).await;
    if let Some(watch) = body_watch {
        response = watch.answer(response);
    }
    let key = slot.take();
    let route = slot.route();
    let route = route.as_ref().map(axum::extract::MatchedPath::as_str);
    if let Some(key) = &key {
        key.hot.count(response.status().as_u16(), key.unix_ms);
        if let Some(rate) = key.rate {
            let headers = response.headers_mut();
            headers.insert(RATELIMIT_LIMIT.clone(), HeaderValue::from(rate.limit));
            headers.insert(
                RATELIMIT_REMAINING.clone(),
                HeaderValue::from(rate.remaining),
            );
            headers.insert(
                RATELIMIT_RESET.clone(),
                HeaderValue::from(rate.reset_seconds),
            );
        }
    }

    let payload = response.extensions_mut().remove::<ErrorPayload>();
    let status = response.status();
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
                &request_id,
                status,
                route,
                payload.internal.as_deref().unwrap_or("unknown"),
            );
        } else {
            tracing::debug!(%status, code = payload.code, "request refused");
        }
        if payload.keep_body {
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert("x-request-id", value);
            }
            facts.log_access(
                &request_id,
                status,
                route,
                key.as_ref().map(|k| k.hot.key_id()),
            );
            return finish(&state, response);
        }
        let body = ErrorBody {
            detail: payload.detail,
            code: payload.code.to_owned(),
            request_id: request_id.clone(),
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
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    facts.log_access(
        &request_id,
        status,
        route,
        key.as_ref().map(|k| k.hot.key_id()),
    );
    finish(&state, response)
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

/// Copies the route template axum matched (`MatchedPath`) into the
/// request's [`KeySlot`], where the request layer (which wraps the router,
/// so runs before routing) finds it after the answer. Applied to each route
/// with `route_layer`: a plain service, no boxing, no allocation.
#[derive(Debug, Clone)]
pub struct RecordRoute<S>(pub S);

impl<S> tower::Service<Request> for RecordRoute<S>
where
    S: tower::Service<Request>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if let (Some(slot), Some(route)) = (
            request.extensions().get::<KeySlot>(),
            request.extensions().get::<axum::extract::MatchedPath>(),
        ) {
            slot.set_route(route.clone());
        }
        self.0.call(request)
    }
}

/// Marks an error response whose body is meant as it is (`/readyz`'s 503
/// says why it is not ready), not to be replaced by the error body.
#[derive(Debug, Clone, Copy)]
pub struct OwnBody;

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
