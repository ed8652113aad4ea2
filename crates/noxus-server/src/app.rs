//! The one place where the application is assembled: the HTTP API
//! ([`crate::http`]) and the dashboard ([`crate::web`]) side by side, the
//! OpenAPI document, and the layers every request passes (request id and
//! error bodies, panics, body timeout, HSTS).

use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

use crate::http;
use crate::state::AppState;

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
    let (router, mut generated) = http::router_with_openapi();
    let router = router.merge(extra).merge(crate::web::router());
    generated.info.version = env!("CARGO_PKG_VERSION").to_owned();
    // Built once: the document depends only on the routes and the configuration.
    let document = axum::body::Bytes::from(
        serde_json::to_vec(&http::openapi::document(&generated, &state)).unwrap_or_default(),
    );
    let body_timeout = axum::middleware::from_fn_with_state(
        state.clone(),
        http::body_timeout::request_body_timeout,
    );
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
        .fallback(crate::web::layout::fallback)
        .method_not_allowed_fallback(crate::web::layout::method_not_allowed)
        .layer(body_timeout)
        // The metrics count outside the panic handler (a panic is a 5xx)
        // and inside the request context, so that they see the answer's
        // error code before the context renders the body. One `layer` call
        // for both: each call wraps every route in one more boxed service.
        .layer(
            tower::ServiceBuilder::new()
                .layer(state.metrics().http_layer())
                .layer(CatchPanicLayer::custom(http::middleware::panic_response)),
        )
        .layer(axum::middleware::from_fn(http::middleware::request_context))
        .layer(axum::middleware::map_response({
            let state = state.clone();
            move |mut response: axum::response::Response| {
                let draining = state.is_draining();
                async move {
                    if draining {
                        // Shutting down: the client's next request goes on a new
                        // connection, to another replica.
                        response.headers_mut().insert(
                            axum::http::header::CONNECTION,
                            axum::http::HeaderValue::from_static("close"),
                        );
                    }
                    if https {
                        // Served over HTTPS: browsers must never come back over plain HTTP.
                        response.headers_mut().insert(
                            axum::http::header::STRICT_TRANSPORT_SECURITY,
                            axum::http::HeaderValue::from_static("max-age=31536000"),
                        );
                    }
                    response
                }
            }
        }))
        .with_state(state)
}
