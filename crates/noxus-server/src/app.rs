//! The one place where the application is assembled: the HTTP API
//! ([`crate::http`]) and the dashboard ([`crate::web`]) side by side, the
//! OpenAPI document, and the layer every request passes (request id and
//! error bodies, route counts, panics, body timeout, HSTS), which wraps
//! the router once rather than each route.

use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};
use axum::Router;

use crate::http;
use crate::state::AppState;

/// The whole application: the router inside the request layer.
pub type App = http::middleware::RequestContext<Router>;

/// The whole application.
pub fn app(state: AppState) -> App {
    app_with_routes(state, Routes::default())
}

/// Routes with their templates: the request layer matches each request's
/// path against the templates itself ([`crate::metrics::RouteIndex`]), so
/// every route is registered through this (or, for the API, through its
/// OpenAPI document, which holds the same templates).
#[derive(Debug, Default)]
pub struct Routes {
    router: Router<AppState>,
    templates: Vec<&'static str>,
}

impl Routes {
    /// Adds `method_router` at `template` (see `axum::Router::route`).
    #[must_use]
    pub fn route(mut self, template: &'static str, method_router: MethodRouter<AppState>) -> Self {
        self.router = self.router.route(template, method_router);
        self.templates.push(template);
        self
    }

    /// Adds `service` at `template` (see `axum::Router::route_service`).
    #[must_use]
    pub fn route_service<T>(mut self, template: &'static str, service: T) -> Self
    where
        T: tower::Service<axum::extract::Request, Error = std::convert::Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        T::Response: IntoResponse,
        T::Future: Send + 'static,
    {
        self.router = self.router.route_service(template, service);
        self.templates.push(template);
        self
    }

    /// Changes the router without adding routes (e.g. a layer).
    #[must_use]
    pub fn map_router(mut self, change: impl FnOnce(Router<AppState>) -> Router<AppState>) -> Self {
        self.router = change(self.router);
        self
    }

    /// The router and its templates.
    pub fn into_parts(self) -> (Router<AppState>, Vec<&'static str>) {
        (self.router, self.templates)
    }
}

/// The application with extra routes behind the same layers (request id,
/// error bodies, panic handling). Benchmarks use it to add a comparison
/// route; they are not part of the API or its OpenAPI document.
pub fn app_with_routes(state: AppState, extra: Routes) -> App {
    let (router, mut generated) = http::router_with_openapi();
    let (extra, extra_templates) = extra.into_parts();
    let (web, web_templates) = crate::web::router().into_parts();
    let router = router.merge(extra).merge(web);
    let templates: Vec<String> = generated
        .paths
        .paths
        .keys()
        .cloned()
        .chain(
            extra_templates
                .into_iter()
                .chain(web_templates)
                .chain([OPENAPI_JSON])
                .map(str::to_owned),
        )
        .collect();
    let index = crate::metrics::RouteIndex::new(
        state.metrics().routes(),
        templates.iter().map(String::as_str),
    );
    generated.info.version = env!("CARGO_PKG_VERSION").to_owned();
    // Built once: the document depends only on the routes and the configuration.
    let document = axum::body::Bytes::from(
        serde_json::to_vec(&http::openapi::document(&generated, &state)).unwrap_or_default(),
    );
    let routes = router
        .route(
            OPENAPI_JSON,
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
        .with_state(state.clone());
    // The request context wraps the router once, instead of anything being
    // applied to each route (`Router::layer` wraps every route in one more
    // boxed service, cloned on every request).
    http::middleware::RequestContext::new(state, index, routes)
}

const OPENAPI_JSON: &str = "/openapi.json";
