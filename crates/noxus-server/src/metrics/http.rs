//! Requests by route template, method and status class, and their latency
//! per route. The request layer finds the route's counts when the request
//! arrives ([`RouteIndex`]: the application's route templates, matched
//! against the path as axum's router matches it) and counts the answer
//! when it is ready, with the latency it also logs.
//!
//! The counting takes no lock and makes no allocation: every template's
//! counters exist from the start. Labels come from fixed sets: the
//! application's own route templates (never the request's path), a fixed
//! list of methods, and status classes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::histogram::{AtomicHistogram, LATENCY_BUCKETS};

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

    /// Counts an answer given `elapsed` after the request arrived.
    pub fn record(&self, method: &Method, status: StatusCode, elapsed: Duration) {
        self.requests[method_index(method)][class_index(status)].fetch_add(1, Ordering::Relaxed);
        self.latency.observe_duration(elapsed);
    }

    /// The route template, `None` for requests no route matched.
    pub fn template(&self) -> Option<&str> {
        (&*self.route != UNMATCHED).then_some(&*self.route)
    }
}

/// Every route template, with its counts. Read at scrape time; written
/// when the application is built, never per request.
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
            "Time from the request's arrival in the application to its answer's head, by route template.",
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

/// The application's route templates, each with its counts, matched
/// against a request's path the way axum's router matches it (the same
/// `matchit` router, so the same template wins): what the request layer,
/// which wraps the router, knows of the route before the router runs.
/// Built once, from the templates the routes were registered with.
#[derive(Debug)]
pub struct RouteIndex {
    matcher: matchit::Router<RouteId>,
    /// The counts of each route; [`RouteId::UNMATCHED`] first.
    routes: Vec<Arc<RouteStats>>,
}

/// A route of a [`RouteIndex`] (a plain number: the request layer keeps it
/// while the router answers, without a reference count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteId(usize);

impl RouteId {
    /// No route matched.
    pub const UNMATCHED: Self = Self(0);
}

impl RouteIndex {
    /// The index of `templates`, counting into `table`.
    pub fn new<'a>(table: &RouteTable, templates: impl IntoIterator<Item = &'a str>) -> Self {
        let mut matcher = matchit::Router::new();
        let mut routes = vec![table.resolve(UNMATCHED)];
        for template in templates {
            // axum refuses (panics on) conflicting templates when the
            // router is built, before this runs.
            let inserted = matcher.insert(template, RouteId(routes.len()));
            debug_assert!(inserted.is_ok(), "route template {template}: {inserted:?}");
            if inserted.is_ok() {
                routes.push(table.resolve(template));
            }
        }
        Self { matcher, routes }
    }

    /// The route whose template matches `path`, or [`RouteId::UNMATCHED`].
    pub fn find(&self, path: &str) -> RouteId {
        self.matcher
            .at(path)
            .map_or(RouteId::UNMATCHED, |found| *found.value)
    }

    /// The counts of `route`.
    pub fn stats(&self, route: RouteId) -> &RouteStats {
        self.routes
            .get(route.0)
            .unwrap_or(&self.routes[RouteId::UNMATCHED.0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_matches_templates_as_axum_does() {
        let table = RouteTable::default();
        let index = RouteIndex::new(
            &table,
            [
                "/v1/keys",
                "/v1/keys/{id}",
                "/v1/keys/leaks",
                "/static/{*file}",
            ],
        );
        let template = |path: &str| index.stats(index.find(path)).template().map(str::to_owned);
        assert_eq!(template("/v1/keys").as_deref(), Some("/v1/keys"));
        assert_eq!(
            template("/v1/keys/leaks").as_deref(),
            Some("/v1/keys/leaks")
        );
        assert_eq!(
            template("/v1/keys/key_123").as_deref(),
            Some("/v1/keys/{id}")
        );
        assert_eq!(
            template("/static/a/b.css").as_deref(),
            Some("/static/{*file}")
        );
        assert_eq!(template("/v1/keys/"), None);
        assert_eq!(template("/v1/keys/a/b"), None);
        assert_eq!(template("/nothing"), None);
        assert_eq!(index.find("/v1/keys/a"), index.find("/v1/keys/b"));
        assert!(std::ptr::eq(
            index.stats(index.find("/v1/keys/a")),
            &*table.resolve("/v1/keys/{id}")
        ));
    }

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
