//! The metrics listener (`--metrics-listen`): `GET /metrics` and nothing
//! else, apart from the public port.

use std::future::Future;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::state::AppState;

/// What Prometheus is told the answer is (the text format of OpenMetrics 1.0).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `/metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "This listener serves only GET /metrics\n",
            )
        })
        .with_state(state);
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(error = %err, "the metrics listener stopped");
    }
}

async fn scrape(State(state): State<AppState>) -> Response {
    let text = state.metrics().render(state.store()).await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}
