//! A handler that panics is answered like any other failure: a 500 in our
//! error shape with the request id, counted in the metrics as a 5xx of its
//! route, its cause in the log (not in the answer), and the server goes on.
//! Two kinds: a panic while the handler's future runs (an `async fn`), and
//! one when the route's service is called, before any future exists.
//!
//! A test binary of its own: the failure lines these panics write would
//! fail the tests of the `api` binary that check the shared captured log
//! for "panicked" (under `cargo test` they share one process).

use axum::body::Body;
use axum::extract::Request;
use axum::routing::get;
use http_body_util::BodyExt;
use noxus_server::app::{app_with_routes, Routes};
use noxus_testkit::TestApp;
use tower::ServiceExt;

async fn panics_in_its_future() -> &'static str {
    tokio::task::yield_now().await;
    panic!("the future gave up (test)");
}

fn routes() -> Routes {
    Routes::default()
        .route("/test/panic/future", get(panics_in_its_future))
        .route_service(
            "/test/panic/call",
            tower::service_fn(
                |_: Request| -> std::future::Ready<
                    Result<axum::response::Response, std::convert::Infallible>,
                > { panic!("the call gave up (test)") },
            ),
        )
        .route("/test/fine", get(|| async { "fine" }))
}

async fn get_json(
    app: &noxus_server::app::App,
    path: &str,
) -> (u16, Option<String>, serde_json::Value) {
    let response = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).expect("a request"))
        .await
        .expect("the application always answers");
    let status = response.status().as_u16();
    let id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, id, body)
}

#[tokio::test]
async fn a_panicking_handler_gets_a_500_in_our_shape_and_the_server_goes_on() {
    let test = TestApp::spawn().await;
    let app = app_with_routes(test.state.clone(), routes());
    for (path, cause) in [
        ("/test/panic/future", "the future gave up (test)"),
        ("/test/panic/call", "the call gave up (test)"),
    ] {
        let (status, id, body) = get_json(&app, path).await;
        assert_eq!(status, 500, "{path}: {body}");
        assert_eq!(body["code"], "internal_error", "{path}: {body}");
        let id = id.expect("an x-request-id header");
        assert_eq!(body["request_id"], id.as_str(), "{path}: {body}");
        assert!(
            !body.to_string().contains(cause),
            "the panic's text stays in the log: {body}"
        );
        let logs = noxus_testkit::captured_logs();
        let line = logs
            .lines()
            .find(|line| line.contains(&id) && line.contains("request failed"))
            .unwrap_or_else(|| panic!("no failure line for {id} in the log"));
        assert!(
            line.contains(&format!("handler panicked: {cause}")),
            "{line}"
        );
        assert_eq!(
            test.state.metrics().routes().requests(path, "GET", "5xx"),
            1,
            "{path} counted once as a 5xx of its route"
        );
    }
    let (status, _, _) = get_json(&app, "/test/fine").await;
    assert_eq!(
        status, 200,
        "the server goes on after its handlers panicked"
    );
    assert_eq!(
        test.state
            .metrics()
            .routes()
            .requests("/test/fine", "GET", "2xx"),
        1
    );
    test.stop().await;
}

/// A route added around [`Routes`] (without its template) would be counted
/// and logged as unmatched: debug builds refuse the disagreement.
#[cfg(debug_assertions)]
#[tokio::test]
#[should_panic(expected = "the route index and the router disagree")]
async fn a_route_without_its_template_is_caught_in_debug_builds() {
    let test = TestApp::spawn().await;
    let untracked = Routes::default()
        .map_router(|router| router.route("/test/untracked", get(|| async { "untracked" })));
    let app = app_with_routes(test.state.clone(), untracked);
    let _ = get_json(&app, "/test/untracked").await;
}
