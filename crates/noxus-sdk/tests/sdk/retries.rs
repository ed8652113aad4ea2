//! Retry behaviour against small local servers that answer 429, 503, slowly,
//! or drop the connection: attempts, waits within bounds, POST not retried,
//! timeouts reported as timeouts.
//!
//! The waits are checked as the SDK chose them (its debug event "noxus
//! request will be retried" carries `wait_ms`), and the wall clock only
//! from below (a call cannot return before its waits are over): an upper
//! bound on elapsed time would fail on a busy machine.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use noxus_sdk::{Client, Error};

type Handler = Arc<dyn Fn(usize) -> Response + Send + Sync>;

/// Serves `handler(attempt)` for every request; returns the base URL and the attempt counter.
async fn fake_server(
    handler: impl Fn(usize) -> Response + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let handler: Handler = Arc::new(handler);
    let counter = Arc::clone(&count);
    let app = axum::Router::new().fallback(move || {
        let handler = Arc::clone(&handler);
        let counter = Arc::clone(&counter);
        async move {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            handler(n)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), count)
}

/// Runs `call` and returns its output with the waits the SDK chose between
/// attempts, read from its debug events. Tests run on a current-thread
/// runtime, so the thread's default subscriber sees the whole call.
async fn with_chosen_waits<F: Future>(call: F) -> (F::Output, Vec<Duration>) {
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let output = call.await;
    drop(guard);
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let waits = text
        .lines()
        .filter(|line| line.contains("noxus request will be retried"))
        .map(|line| {
            let ms = line
                .split("wait_ms=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_else(|| panic!("no wait_ms in {line:?}"));
            Duration::from_millis(ms.parse().unwrap())
        })
        .collect();
    (output, waits)
}

fn client(base: &str, retries: u32) -> Client {
    Client::builder()
        .api_key(noxus_api::key_format::key_from_body(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345",
        ))
        .base_url(base)
        .max_retries(retries)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn me_json() -> Response {
    let body = serde_json::json!({
        "id": "k", "name": "n", "tenant_admin": false, "value": "noxus_ABCD…2345", "permissions": [],
        "workspace_id": "w", "workspace_name": "W", "role": "viewer", "user_id": "u", "user_email": "e",
        "organization_id": "o", "expires_at": null, "created_at": "2026-01-01T00:00:00Z"
    });
    axum::Json(body).into_response()
}

fn error(status: StatusCode, retry_after: Option<&str>) -> Response {
    let mut headers = HeaderMap::new();
    if let Some(value) = retry_after {
        headers.insert("retry-after", value.parse().unwrap());
    }
    headers.insert("x-request-id", "req_fake".parse().unwrap());
    let body = serde_json::json!({"detail": format!("status {status}"), "code": "fake", "request_id": "req_fake"});
    (status, headers, axum::Json(body)).into_response()
}

#[tokio::test]
async fn a_429_with_retry_after_is_retried_after_that_many_seconds() {
    let (base, count) = fake_server(|n| {
        if n == 0 {
            error(StatusCode::TOO_MANY_REQUESTS, Some("1"))
        } else {
            me_json()
        }
    })
    .await;
    let started = Instant::now();
    let (result, waits) = with_chosen_waits(client(&base, 2).me()).await;
    result.unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert_eq!(
        waits,
        [Duration::from_secs(1)],
        "Retry-After: 1 is honoured"
    );
    assert!(started.elapsed() >= Duration::from_secs(1), "it waited");
}

#[tokio::test]
async fn a_429_without_retry_after_backs_off_exponentially_with_jitter() {
    let (base, count) = fake_server(|n| {
        if n < 2 {
            error(StatusCode::TOO_MANY_REQUESTS, None)
        } else {
            me_json()
        }
    })
    .await;
    let started = Instant::now();
    let (result, waits) = with_chosen_waits(client(&base, 2).me()).await;
    result.unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 3);
    // Waits: [250, 500] ms then [500, 1000] ms.
    assert_eq!(waits.len(), 2, "{waits:?}");
    let ms = |d: Duration| d.as_millis();
    assert!((250..=500).contains(&ms(waits[0])), "{waits:?}");
    assert!((500..=1000).contains(&ms(waits[1])), "{waits:?}");
    assert!(started.elapsed() >= waits[0] + waits[1], "it waited");
}

#[tokio::test]
async fn retry_after_is_capped_by_max_retry_wait() {
    let (base, count) = fake_server(|n| {
        if n == 0 {
            error(StatusCode::TOO_MANY_REQUESTS, Some("3600"))
        } else {
            me_json()
        }
    })
    .await;
    let client = Client::builder()
        .api_key(noxus_api::key_format::key_from_body(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345",
        ))
        .base_url(&base)
        .max_retry_wait(Duration::from_millis(200))
        .build()
        .unwrap();
    let started = Instant::now();
    let (result, waits) = with_chosen_waits(client.me()).await;
    result.unwrap();
    assert_eq!(
        waits,
        [Duration::from_millis(200)],
        "Retry-After: 3600 capped"
    );
    assert!(started.elapsed() >= Duration::from_millis(200), "it waited");
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn retries_are_bounded_and_the_last_answer_is_reported() {
    let (base, count) = fake_server(|_| error(StatusCode::SERVICE_UNAVAILABLE, None)).await;
    let err = client(&base, 2).me().await.unwrap_err();
    assert_eq!(
        count.load(Ordering::SeqCst),
        3,
        "one attempt and two retries"
    );
    let Error::Server(api) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(api.status, 503);
    assert_eq!(api.request_id.as_deref(), Some("req_fake"));

    let (base, count) = fake_server(|_| error(StatusCode::TOO_MANY_REQUESTS, Some("0"))).await;
    let err = client(&base, 0).me().await.unwrap_err();
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "max_retries(0) turns retrying off"
    );
    assert!(matches!(err, Error::RateLimited { retry_after: Some(d), .. } if d.is_zero()));
}

#[tokio::test]
async fn a_post_is_never_retried() {
    let (base, count) = fake_server(|_| error(StatusCode::SERVICE_UNAVAILABLE, None)).await;
    let err = client(&base, 2).workflows().create("x").await.unwrap_err();
    assert!(matches!(err, Error::Server(_)));
    assert_eq!(count.load(Ordering::SeqCst), 1);

    let (base, count) = fake_server(|_| error(StatusCode::TOO_MANY_REQUESTS, Some("0"))).await;
    let err = client(&base, 2).workflows().create("x").await.unwrap_err();
    assert!(matches!(err, Error::RateLimited { .. }));
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_slow_answer_is_reported_as_a_timeout_without_retrying() {
    // The answer would come after 10 s (an async wait: no runtime thread is
    // blocked, so the client's timer runs on time). Getting an error at all
    // proves the timeout fired first; no wall-clock bound is asserted.
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    let app = axum::Router::new().fallback(move || {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(10)).await;
            me_json()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::builder()
        .api_key(noxus_api::key_format::key_from_body(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345",
        ))
        .base_url(&base)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = client.me().await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout { timeout, .. } if timeout == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("Network error"));
    // A retry would have sent a second request before the error came back.
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn dropped_connections_are_retried_then_reported_as_connection_errors() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    let err = client(&base, 2).me().await.unwrap_err();
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_2xx_that_is_not_the_promised_json_is_a_decode_error_with_the_raw_body() {
    let (base, _) =
        fake_server(|_| (StatusCode::OK, "<html>proxy login</html>").into_response()).await;
    let err = client(&base, 2).me().await.unwrap_err();
    let Error::Decode { body, status, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*status, 200);
    assert_eq!(body, "<html>proxy login</html>");
}

#[tokio::test]
async fn an_error_body_that_is_not_ours_still_gives_a_useful_error() {
    let (base, _) =
        fake_server(|_| (StatusCode::BAD_GATEWAY, "upstream down").into_response()).await;
    let err = client(&base, 0).me().await.unwrap_err();
    let Error::Server(api) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(api.detail, "upstream down");
    assert_eq!(api.code, None);
}
