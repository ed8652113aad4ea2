//! The one place where the application is assembled: the HTTP API
//! ([`crate::http`]) and the dashboard ([`crate::web`]) side by side, the
//! OpenAPI document, and the layers every request passes (request id and
//! error bodies, panics, body timeout, HSTS), which wrap the router once
//! rather than each route.

use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

use crate::http;
use crate::state::AppState;

/// The whole application: the router inside the request layer.
pub type App = http::middleware::RequestContext<Router>;

/// The whole application.
pub fn app(state: AppState) -> App {
    app_with_routes(state, Router::new())
}

/// The application with extra routes behind the same layers (request id,
/// error bodies, panic handling). Benchmarks use it to add a comparison
/// route; they are not part of the API or its OpenAPI document.
pub fn app_with_routes(state: AppState, extra: Router<AppState>) -> App {
    let (router, mut generated) = http::router_with_openapi();
    let router = router.merge(extra).merge(crate::web::router());
    generated.info.version = env!("CARGO_PKG_VERSION").to_owned();
    // Built once: the document depends only on the routes and the configuration.
    let document = axum::body::Bytes::from(
        serde_json::to_vec(&http::openapi::document(&generated, &state)).unwrap_or_default(),
    );
    let routes = router
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        document,
                    )
                        .into_response()
                }
            }),
        )
        .fallback(crate::web::layout::fallback)
        .method_not_allowed_fallback(crate::web::layout::method_not_allowed)
        // What needs the route (and the fallback) as matched, in one
        // `layer` call: each call wraps every route in one more boxed
        // service, cloned on every request. It leaves the route (template
        // and metric counts) for the request layer, which counts and logs
        // the answer, and turns panics into 500s.
        .layer(http::middleware::PerRouteLayer::new(Arc::clone(
            state.metrics().routes(),
        )))
        .with_state(state.clone());
    // The request context wraps the router once, instead of being applied
    // to each route.
    http::middleware::RequestContext::new(state, routes)
}
