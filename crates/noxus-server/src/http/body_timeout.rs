//! The request-body timeout: a body whose next piece does not arrive within
//! the configured time fails (tower-http's `TimeoutBody`), and the request
//! is answered `408 request_timeout` with `Connection: close`, whatever the
//! handler made of the failed read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::body::HttpBody as _;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tower_http::timeout::{TimeoutBody, TimeoutError};

use crate::http::error::ErrorPayload;
use crate::state::AppState;

/// Wraps the request body in the timeout and turns a timed-out read into 408.
pub async fn request_body_timeout(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    // Most API requests have no body: nothing to watch.
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let timeout = state.config().request_body_timeout;
    let timed_out = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&timed_out);
    let request = request.map(|body| {
        Body::new(TimeoutBody::new(timeout, body).map_err(move |err| {
            if err.is::<TimeoutError>() {
                flag.store(true, Ordering::Relaxed);
            }
            err
        }))
    });
    let response = next.run(request).await;
    if !timed_out.load(Ordering::Relaxed) {
        return response;
    }
    tracing::info!(
        timeout_s = timeout.as_secs_f64(),
        "request body stalled: answering 408"
    );
    let mut response = StatusCode::REQUEST_TIMEOUT.into_response();
    // The rest of the body may still come: never read it as the next request.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response.extensions_mut().insert(ErrorPayload {
        code: "request_timeout",
        detail: format!(
            "The request body stopped arriving: nothing came for {}; send the request again",
            crate::time_fmt::human_duration(timeout)
        ),
        required_permission: None,
        field: None,
        internal: None,
        keep_body: false,
    });
    response
}
