//! Liveness and readiness probes (no key needed).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use noxus_api::Health;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

/// The probes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()), responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        rate_limits: None,
    })
}

/// The process can serve: the database answers. `rate_limits` says how
/// limits hold; shared counters that do not answer (Redis down) leave the
/// replica ready, limiting alone.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, body = Health),
              (status = 503, description = "The database does not answer, or the server is shutting down (`status` says which)", body = Health)))]
async fn readyz(
    State(state): State<AppState>,
) -> (
    StatusCode,
    axum::Extension<super::middleware::OwnBody>,
    Json<Health>,
) {
    let own = axum::Extension(super::middleware::OwnBody);
    let rate_limits = Some(state.limits().describe());
    if state.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            own,
            Json(Health {
                status: "draining".to_owned(),
                rate_limits,
            }),
        );
    }
    match state.store().ping().await {
        Ok(()) => (
            StatusCode::OK,
            own,
            Json(Health {
                status: "ok".to_owned(),
                rate_limits,
            }),
        ),
        Err(err) => {
            tracing::warn!(error = %err, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                own,
                Json(Health {
                    status: "database unavailable".to_owned(),
                    rate_limits,
                }),
            )
        }
    }
}
