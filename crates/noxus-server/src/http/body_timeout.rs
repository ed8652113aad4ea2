//! The request-body timeout: a body whose next piece does not arrive within
//! the configured time fails (tower-http's `TimeoutBody`), and the request
//! is answered `408 request_timeout` with `Connection: close`, whatever the
//! handler made of the failed read. The request layer
//! ([`crate::http::middleware::RequestContext`]) applies it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::body::HttpBody as _;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tower_http::timeout::{TimeoutBody, TimeoutError};

use crate::http::error::ErrorPayload;

/// A request body under watch: whether its timeout struck.
pub(crate) struct BodyWatch {
    timed_out: Arc<AtomicBool>,
    timeout: Duration,
}

/// Wraps the request body in the timeout. Most API requests have no body:
/// nothing to watch then.
pub(crate) fn watch_body(request: Request, timeout: Duration) -> (Request, Option<BodyWatch>) {
    if request.body().is_end_stream() {
        return (request, None);
    }
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
    (request, Some(BodyWatch { timed_out, timeout }))
}

impl BodyWatch {
    /// The answer to send: the handler's, or 408 if the body stalled.
    pub(crate) fn answer(self, response: Response) -> Response {
        if !self.timed_out.load(Ordering::Relaxed) {
            return response;
        }
        let timeout = self.timeout;
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
}
