//! `/v1/nodes` and `/v1/models/llms[/presets]`: the configured catalog,
//! served as pre-serialized, byte-stable JSON.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use noxus_api::{ErrorBody, Permission};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AuthContext;
use crate::http::error::Result;
use crate::state::AppState;

/// The catalog routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_nodes))
        .routes(routes!(list_models))
        .routes(routes!(list_presets))
}

fn json(bytes: Bytes) -> impl IntoResponse {
    // A static header value: a `&str` would be copied into a new one (an
    // allocation) on every answer.
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
}

/// Node types for the workflow builder. Any valid key may read it (the
/// official client loads it when it starts).
#[utoipa::path(get, path = "/v1/nodes", tag = "catalog",
    responses((status = 200, description = "Bare array of node definitions", body = Vec<Object>)))]
async fn list_nodes(State(state): State<AppState>, _auth: AuthContext) -> impl IntoResponse {
    json(state.catalog().nodes_json())
}

/// Language models. Needs `models:read`.
#[utoipa::path(get, path = "/v1/models/llms", tag = "catalog",
    responses((status = 200, description = "Array of models", body = Vec<Object>),
              (status = 403, description = "Needs `models:read` (`insufficient_permissions`)", body = ErrorBody)))]
async fn list_models(
    State(state): State<AppState>,
    auth: AuthContext,
) -> Result<impl IntoResponse> {
    auth.require(Permission::ModelsRead)?;
    Ok(json(state.catalog().models_json()))
}

/// Chat presets. Needs `models:read`.
#[utoipa::path(get, path = "/v1/models/llms/presets", tag = "catalog",
    responses((status = 200, description = "Array of presets", body = Vec<Object>),
              (status = 403, description = "Needs `models:read` (`insufficient_permissions`)", body = ErrorBody)))]
async fn list_presets(
    State(state): State<AppState>,
    auth: AuthContext,
) -> Result<impl IntoResponse> {
    auth.require(Permission::ModelsRead)?;
    Ok(json(state.catalog().presets_json()))
}
