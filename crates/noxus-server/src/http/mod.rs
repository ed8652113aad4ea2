//! The HTTP API: each resource module owns its routes; this module merges
//! them, adds the OpenAPI document and the per-request layers.

pub mod admin;
pub mod audit;
pub mod body_timeout;
pub mod catalog;
pub mod extract;
pub mod health;
pub mod middleware;
pub mod openapi;
pub mod usage;
pub mod users;
pub mod workflows;

use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Noxus API",
        description = "Workspace-scoped API keys, workspaces and workflows. Authenticate with `X-API-Key: <key>` or `Authorization: Bearer <key>`. Every error is `{detail, code, request_id}` (`ErrorBody`) and every response carries `x-request-id`; a known path with another method answers 405 with `Allow`."
    ),
    modifiers(&SecuritySchemes),
    security(("api_key" = []), ("bearer" = [])),
    tags(
        (name = "admin", description = "The calling key, workspaces and their API keys"),
        (name = "workflows", description = "Workflows and their versions"),
        (name = "catalog", description = "Nodes and models"),
        (name = "health", description = "Probes")
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Builds the router and its OpenAPI description from the same route list.
pub fn router_with_openapi() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(admin::router())
        .merge(workflows::router())
        .merge(usage::router())
        .merge(audit::router())
        .merge(users::router())
        .merge(catalog::router())
        .merge(health::router())
        .split_for_parts()
}

/// The whole application.
pub fn app(state: AppState) -> Router {
    app_with_routes(state, Router::new())
}

/// The application with extra routes behind the same layers (request id,
/// error bodies, panic handling). Benchmarks use it to add a comparison
/// route; they are not part of the API or its OpenAPI document.
pub fn app_with_routes(state: AppState, extra: Router<AppState>) -> Router {
    let https = state
        .config()
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    let (router, mut generated) = router_with_openapi();
    let router = router.merge(extra).merge(crate::web::router());
    generated.info.version = env!("CARGO_PKG_VERSION").to_owned();
    // Built once: the document depends only on the routes and the configuration.
    let document = axum::body::Bytes::from(
        serde_json::to_vec(&openapi::document(&generated, &state)).unwrap_or_default(),
    );
    let body_timeout =
        axum::middleware::from_fn_with_state(state.clone(), body_timeout::request_body_timeout);
    router
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
        .fallback(middleware::fallback)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        .layer(body_timeout)
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn(middleware::request_context))
        .layer(axum::middleware::map_response(
            move |mut response: axum::response::Response| async move {
                if https {
                    // Served over HTTPS: browsers must never come back over plain HTTP.
                    response.headers_mut().insert(
                        axum::http::header::STRICT_TRANSPORT_SECURITY,
                        axum::http::HeaderValue::from_static("max-age=31536000"),
                    );
                }
                response
            },
        ))
        .with_state(state)
}
