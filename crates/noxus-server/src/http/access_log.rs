//! What the log says about each request: the facts gathered when it
//! arrives (method, W3C trace parent) and the access line written when its
//! answer is ready ([`crate::logging::ACCESS_TARGET`]), with the route
//! template the request layer found for the path
//! ([`crate::metrics::RouteIndex`]).
//!
//! Only fixed or server-made strings reach the log: the route is the
//! router's template (`/v1/keys/{id}`), never the path, which may hold a
//! key pasted into it; the key is named by its public id, never by itself.

use std::time::Instant;

use axum::extract::Request;
use axum::http::{Method, StatusCode};

use crate::store::KeyId;
use crate::trace_context::TraceParent;

/// What is known of a request before it is served.
#[derive(Debug)]
pub(crate) struct RequestFacts {
    pub method: Method,
    /// The caller's valid `traceparent`, if it sent one.
    pub trace: Option<TraceParent>,
    pub started: Instant,
}

impl RequestFacts {
    /// The facts of `request`, which arrived at `started`.
    pub fn of(request: &Request, started: Instant) -> Self {
        Self {
            method: request.method().clone(),
            trace: TraceParent::from_headers(request.headers()),
            started,
        }
    }

    /// The request's span: `debug`, so that it costs next to nothing unless
    /// `NOXUS_LOG` asks for it (its fields are only computed then); events
    /// inside it then carry its fields, including the path with any key in
    /// it cut to its first 10 characters.
    pub fn span(&self, request_id: &str, path: &str) -> tracing::Span {
        tracing::debug_span!(
            "request",
            request_id,
            method = self.method.as_str(),
            path = %noxus_api::key_format::redact(path),
            trace_id = self.trace.map(|t| tracing::field::display(t.trace_id)),
        )
    }

    /// The access line (`info`, on [`crate::logging::ACCESS_TARGET`]); its
    /// fields are only computed when some layer wants the line. `route`:
    /// the matched route's template, `None` for the fallback (no route);
    /// `latency`: from [`Self::started`] to the answer, ready at `answered`.
    pub fn log_access(
        &self,
        request_id: &str,
        status: StatusCode,
        route: Option<&str>,
        latency: std::time::Duration,
        key_id: Option<&KeyId>,
        answered: &crate::clock::Now,
    ) {
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if let Some(sink) = crate::logging::access_sink() {
            sink.write(&crate::logging::AccessLine {
                request_id,
                method: self.method.as_str(),
                route,
                status: status.as_u16(),
                latency_us,
                key_id: key_id.map(KeyId::as_str),
                trace: self.trace,
                unix_us: answered.unix_us,
            });
            if !sink.also_event() {
                return;
            }
        }
        tracing::info!(
            target: "noxus::access",
            parent: None,
            request_id,
            method = self.method.as_str(),
            route,
            status = status.as_u16(),
            latency_us,
            key_id = key_id.map(KeyId::as_str),
            trace_id = self.trace.map(|t| tracing::field::display(t.trace_id)),
            parent_span_id = self.trace.map(|t| tracing::field::display(t.parent_id)),
            trace_sampled = self.trace.map(|t| t.sampled()),
            "request"
        );
    }

    /// A 5xx's cause, with the request's identity (the answer's `detail`
    /// sends its reader to this line by the request id).
    pub fn log_failure(
        &self,
        request_id: &str,
        status: StatusCode,
        route: Option<&str>,
        cause: &str,
    ) {
        tracing::error!(
            parent: None,
            request_id,
            method = self.method.as_str(),
            route,
            status = status.as_u16(),
            trace_id = self.trace.map(|t| tracing::field::display(t.trace_id)),
            cause,
            "request failed"
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_access_target_is_the_documented_one() {
        // `tracing::info!(target: …)` needs a literal; keep it in step.
        assert_eq!(crate::logging::ACCESS_TARGET, "noxus::access");
    }
}
