//! The HTTP API: each resource module owns its routes; this module merges
//! them with their OpenAPI description. [`crate::app`] mounts it beside the
//! dashboard, behind the per-request layers.

pub(crate) mod access_log;
pub mod admin;
pub mod audit;
pub mod body_timeout;
pub mod callbacks;
pub mod catalog;
pub mod error;
pub mod extract;
pub mod health;
pub mod leaks;
pub mod middleware;
pub mod openapi;
pub mod runs;
pub mod security_webhook;
pub mod usage;
pub mod users;
pub mod workflows;

use axum::Router;
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
    // Named by `LeakReport`'s `keys` through a custom schema, so not found by itself.
    components(schemas(noxus_api::LeakCandidate)),
    security(("api_key" = []), ("bearer" = [])),
    tags(
        (name = "admin", description = "The calling key, workspaces and their API keys"),
        (name = "workflows", description = "Workflows and their versions"),
        (name = "catalog", description = "Nodes and models"),
        (name = "keys", description = "Reporting leaked keys (no key needed)"),
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
        .merge(runs::router())
        .merge(callbacks::router())
        .merge(security_webhook::router())
        .merge(usage::router())
        .merge(audit::router())
        .merge(users::router())
        .merge(catalog::router())
        .merge(leaks::router())
        .merge(health::router())
        .split_for_parts()
}
