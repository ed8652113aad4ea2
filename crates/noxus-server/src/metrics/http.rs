//! Requests by route template, method and status class, and their latency
//! per route, counted by a layer that axum puts on every route.
//!
//! The hot path takes no lock and makes no allocation: `Router::layer`
//! builds one service per route (and one for the fallback), and each
//! service resolves its route's counters on its first request, then only
//! checks (one string comparison) that the request's route template is
//! still that one. Labels come from fixed sets: the router's own route
//! templates (never the request's path), a fixed list of methods, and
//! status classes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::http::{Method, Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::MetricType;
use tower::{Layer, Service};

use super::histogram::{AtomicHistogram, LATENCY_BUCKETS};
use crate::http::error::ErrorPayload;

/// The `route` of requests that matched no route (404s of the fallback).
pub const UNMATCHED: &str = "unmatched";

/// The `method` label's values; any other method is `other`.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];

/// The `status_class` label's values.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

fn class_index(status: StatusCode) -> usize {
    usize::from(status.as_u16() / 100).clamp(1, 5) - 1
}

/// The counts of one route template.
#[derive(Debug)]
pub struct RouteStats {
    route: Box<str>,
    /// Answers by method, then status class.
    requests: [[AtomicU64; STATUS_CLASSES.len()]; METHODS.len()],
    latency: AtomicHistogram,
}

impl RouteStats {
    fn new(route: &str) -> Self {
        Self {
            route: route.into(),
            requests: Default::default(),
            latency: AtomicHistogram::seconds(LATENCY_BUCKETS),
        }
    }

    fn record(&self, method: usize, status: StatusCode, started: Instant) {
        self.requests[method][class_index(status)].fetch_add(1, Ordering::Relaxed);
        self.latency.observe_duration(started.elapsed());
    }
}

/// Every route template seen so far, with its counts. Read at scrape time;
/// written once per route (and per route service), never per request.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: RwLock<Vec<Arc<RouteStats>>>,
}

impl RouteTable {
    /// The counts of `route`, created on first use.
    fn resolve(&self, route: &str) -> Arc<RouteStats> {
        let find =
            |routes: &[Arc<RouteStats>]| routes.iter().find(|r| &*r.route == route).map(Arc::clone);
        if let Some(found) = find(&self.routes.read().unwrap_or_else(|p| p.into_inner())) {
            return found;
        }
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = find(&routes) {
            return found;
        }
        let stats = Arc::new(RouteStats::new(route));
        routes.push(Arc::clone(&stats));
        stats
    }

    /// The answers counted for `route`, `method` and `status_class` (tests).
    pub fn requests(&self, route: &str, method: &str, status_class: &str) -> u64 {
        let (Some(m), Some(c)) = (
            METHODS.iter().position(|x| *x == method),
            STATUS_CLASSES.iter().position(|x| *x == status_class),
        ) else {
            return 0;
        };
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|r| &*r.route == route)
            .map_or(0, |r| r.requests[m][c].load(Ordering::Relaxed))
    }
}

impl Collector for RouteTable {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let routes: Vec<Arc<RouteStats>> = self
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        {
            let mut family = encoder.encode_descriptor(
                "noxus_http_requests",
                "Answered HTTP requests by route template, method and status class.",
                None,
                MetricType::Counter,
            )?;
            for stats in &routes {
                for (m, by_class) in stats.requests.iter().enumerate() {
                    for (c, count) in by_class.iter().enumerate() {
                        let count = count.load(Ordering::Relaxed);
                        if count == 0 {
                            continue;
                        }
                        let labels = [
                            ("route", &*stats.route),
                            ("method", METHODS[m]),
                            ("status_class", STATUS_CLASSES[c]),
                        ];
                        family
                            .encode_family(&labels)?
                            .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
                    }
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "noxus_http_request_duration_seconds",
            "Time from routing to the answer's head, by route template.",
            None,
            MetricType::Histogram,
        )?;
        for stats in routes.iter().filter(|s| s.latency.count() > 0) {
            let labels = [("route", &*stats.route)];
            stats.latency.encode_with(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// What the per-route services share.
#[derive(Debug)]
struct Shared {
    table: Arc<RouteTable>,
    /// `noxus_auth_outcomes_total{code="insufficient_permissions"}`: only
    /// the answer tells (handlers check permissions).
    insufficient_permissions: Counter,
}

/// Counts every answer of the routes it is put on (with `Router::layer`).
#[derive(Debug, Clone)]
pub struct HttpMetricsLayer {
    shared: Arc<Shared>,
}

impl HttpMetricsLayer {
    pub(super) fn new(table: Arc<RouteTable>, insufficient_permissions: Counter) -> Self {
        Self {
            shared: Arc::new(Shared {
                table,
                insufficient_permissions,
            }),
        }
    }
}

/// One route's service (see the module's doc).
#[derive(Debug)]
struct RouteCell {
    shared: Arc<Shared>,
    route: OnceLock<Arc<RouteStats>>,
}

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpMetrics {
            inner,
            cell: Arc::new(RouteCell {
                shared: Arc::clone(&self.shared),
                route: OnceLock::new(),
            }),
        }
    }
}

/// The service of [`HttpMetricsLayer`].
#[derive(Debug, Clone)]
pub struct HttpMetrics<S> {
    inner: S,
    cell: Arc<RouteCell>,
}

impl<S, B, ResBody> Service<Request<B>> for HttpMetrics<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let method = method_index(request.method());
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or(UNMATCHED, MatchedPath::as_str);
        let cached = self
            .cell
            .route
            .get_or_init(|| self.cell.shared.table.resolve(route));
        // Another template through the same service (not expected from
        // axum's router, but then it is counted right, only slower).
        let other = (&*cached.route != route).then(|| self.cell.shared.table.resolve(route));
        ResponseFuture {
            inner: self.inner.call(request),
            started,
            method,
            cell: Arc::clone(&self.cell),
            other,
        }
    }
}

pin_project_lite::pin_project! {
    /// Records the answer when the inner service gives it.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        started: Instant,
        method: usize,
        cell: Arc<RouteCell>,
        other: Option<Arc<RouteStats>>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("method", &METHODS[self.method])
            .finish_non_exhaustive()
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            let stats = this.other.as_ref().or_else(|| this.cell.route.get());
            if let Some(stats) = stats {
                stats.record(*this.method, response.status(), *this.started);
            }
            if response
                .extensions()
                .get::<ErrorPayload>()
                .is_some_and(|p| p.code == "insufficient_permissions")
            {
                this.cell.shared.insufficient_permissions.inc();
            }
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_statuses_map_to_fixed_labels() {
        assert_eq!(METHODS[method_index(&Method::GET)], "GET");
        assert_eq!(METHODS[method_index(&Method::TRACE)], "other");
        let custom = Method::from_bytes(b"NOXUS_KEY").unwrap_or(Method::GET);
        assert_eq!(METHODS[method_index(&custom)], "other");
        assert_eq!(STATUS_CLASSES[class_index(StatusCode::OK)], "2xx");
        assert_eq!(STATUS_CLASSES[class_index(StatusCode::CONTINUE)], "1xx");
        assert_eq!(STATUS_CLASSES[class_index(StatusCode::NOT_FOUND)], "4xx");
        assert_eq!(STATUS_CLASSES[class_index(StatusCode::BAD_GATEWAY)], "5xx");
    }
}
