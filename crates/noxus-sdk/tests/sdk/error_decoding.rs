//! Properties of the SDK's error decoding: a tiny local server answers raw
//! HTTP with any status and any body (our error JSON with anything in its
//! fields, other JSON, bytes that are not UTF-8, nothing, a megabyte) and
//! any `Retry-After` or `x-request-id`. The SDK returns the typed error of
//! the status, never panics, keeps a bounded part of the body, and never
//! the API key (its own, echoed by a proxy, or another) beyond its first
//! 10 characters: what `noxus_sdk::ApiError` promises.
//!
//! The cases come from a fixed seed, so CI runs the same ones every time;
//! `PROPTEST_RNG_SEED=<n>` and `PROPTEST_CASES=<n>` explore others. A
//! failure prints the minimal answer, and its seed is kept in
//! `error_decoding.proptest-regressions` beside this file, replayed first on
//! every later run (commit that file with the fix).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use noxus_sdk::types::key_format::key_from_body;
use noxus_sdk::{Client, Error};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{FileFailurePersistence, RngSeed, TestCaseError};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The client's own key, and another one a body may carry.
const OWN_BODY: &str = "OwnKeyOwnKeyOwnKeyOwnKey01234567";
const OTHER_BODY: &str = "AnotherKeyAnotherKeyAnotherKey89";

/// `Display` of an error is at most this long, whatever the body.
const MAX_DISPLAY: usize = 2_000;
/// `Debug` (which escapes characters, up to 10 for one) is at most this long.
const MAX_DEBUG: usize = 64_000;

fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        max_shrink_iters: 1024,
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x6e6f_7875_735f_7364);
    }
    config
}

/// One HTTP answer, exactly as the server writes it.
#[derive(Clone)]
struct Canned {
    status: u16,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Vec<u8>,
}

impl std::fmt::Debug for Canned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, String)> = self
            .headers
            .iter()
            .map(|(n, v)| (*n, String::from_utf8_lossy(v).chars().take(300).collect()))
            .collect();
        let body = String::from_utf8_lossy(&self.body);
        let shown: String = body.chars().take(2000).collect();
        write!(
            f,
            "{} {headers:?} ({} bytes) {shown:?}",
            self.status,
            self.body.len()
        )
    }
}

/// Answers every connection with the current [`Canned`] answer, after
/// reading the request.
struct RawServer {
    url: String,
    next: Arc<Mutex<Canned>>,
}

impl RawServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let next = Arc::new(Mutex::new(Canned {
            status: 500,
            headers: Vec::new(),
            body: Vec::new(),
        }));
        let shared = Arc::clone(&next);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let canned = shared.lock().unwrap().clone();
                tokio::spawn(answer(socket, canned));
            }
        });
        Self { url, next }
    }
}

async fn answer(mut socket: TcpStream, canned: Canned) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let Ok(n) = socket.read(&mut buffer).await else {
            return;
        };
        if n == 0 {
            return;
        }
        request.extend_from_slice(&buffer[..n]);
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if request.len() >= end + 4 + length {
                break;
            }
        }
    }
    let mut response = format!(
        "HTTP/1.1 {} Whatever\r\ncontent-length: {}\r\nconnection: close\r\n",
        canned.status,
        canned.body.len()
    )
    .into_bytes();
    for (name, value) in &canned.headers {
        response.extend_from_slice(name.as_bytes());
        response.extend_from_slice(b": ");
        response.extend_from_slice(value);
        response.extend_from_slice(b"\r\n");
    }
    response.extend_from_slice(b"\r\n");
    response.extend_from_slice(&canned.body);
    let _ = socket.write_all(&response).await;
    let _ = socket.shutdown().await;
}

/// Text of every kind, sometimes holding one of `keys`.
fn text(keys: Vec<String>) -> BoxedStrategy<String> {
    prop_oneof![
        4 => any::<String>(),
        2 => "[a-z ]{1,30}",
        1 => (1usize..200_000, any::<char>()).prop_map(|(n, c)| c.to_string().repeat(n)),
        2 => (".{0,20}", select(keys), ".{0,20}").prop_map(|(a, key, b)| format!("{a}{key}{b}")),
        1 => Just(String::new()),
    ]
    .boxed()
}

fn value(keys: Vec<String>) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        text(keys.clone()).prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec(
                (
                    prop_oneof![
                        select(vec!["detail", "message", "error", "code", "request_id"])
                            .prop_map(str::to_owned),
                        any::<String>(),
                    ],
                    inner
                ),
                0..5
            )
            .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Bodies: our error shape with anything in it, other JSON, bytes.
fn body(keys: Vec<String>) -> BoxedStrategy<Vec<u8>> {
    let optional = proptest::option::of(text(keys.clone()));
    prop_oneof![
        4 => (text(keys.clone()), text(keys.clone()), text(keys.clone()), optional.clone(), optional)
            .prop_map(|(detail, code, request_id, field, permission)| {
                let mut body = json!({"detail": detail, "code": code, "request_id": request_id});
                if let Some(field) = field {
                    body["field"] = Value::String(field);
                }
                if let Some(permission) = permission {
                    body["required_permission"] = Value::String(permission);
                }
                body.to_string().into_bytes()
            }),
        2 => (select(vec!["detail", "message", "error"]), value(keys.clone()))
            .prop_map(|(name, v)| json!({ name: v }).to_string().into_bytes()),
        2 => value(keys.clone()).prop_map(|v| v.to_string().into_bytes()),
        2 => text(keys).prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..2000),
        1 => select(vec!["", " \r\n", "<html><body>502 Bad Gateway</body></html>", "null", "{", "{\"detail\":"])
            .prop_map(|s| s.as_bytes().to_vec()),
    ]
    .boxed()
}

/// Header values: numbers of every size, text, keys, bytes past ASCII.
fn header_value(keys: Vec<String>) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        select(vec![
            "0",
            "-0",
            "1",
            "-1",
            "0.5",
            "1e20",
            "1e400",
            "-1e400",
            "inf",
            "NaN",
            "18446744073709551616",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        any::<f64>().prop_map(|f| f.to_string().into_bytes()),
        "[ -~]{0,40}".prop_map(String::into_bytes),
        select(keys).prop_map(String::into_bytes),
        proptest::collection::vec(prop_oneof![32u8..127, 128u8..=255], 0..60),
        "[a-zA-Z0-9]{1000,2000}".prop_map(String::into_bytes),
    ]
    .boxed()
}

/// An answer with one of `statuses`, up to 3 headers and any body.
fn canned(statuses: BoxedStrategy<u16>, keys: Vec<String>) -> BoxedStrategy<Canned> {
    let headers = proptest::collection::vec(
        (
            select(vec![
                "retry-after",
                "x-request-id",
                "x-noxus-request-id",
                "content-type",
            ]),
            header_value(keys.clone()),
        ),
        0..3,
    );
    (statuses, headers, body(keys))
        .prop_map(|(status, headers, body)| Canned {
            status,
            headers,
            body,
        })
        .boxed()
}

/// Checks what every error promises: bounded, no key past its first 10
/// characters, anywhere in its `Display`, `Debug` or sources.
fn check_bounded_and_redacted(err: &Error, keys: &[String]) -> Result<(), TestCaseError> {
    let display = err.to_string();
    let debug = format!("{err:?}");
    prop_assert!(
        display.chars().count() <= MAX_DISPLAY,
        "Display of {} characters",
        display.chars().count()
    );
    prop_assert!(
        debug.chars().count() <= MAX_DEBUG,
        "Debug of {} characters",
        debug.chars().count()
    );
    let mut texts = vec![display, debug];
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        texts.push(cause.to_string());
        texts.push(format!("{cause:?}"));
        source = cause.source();
    }
    for text in &texts {
        for key in keys {
            prop_assert!(
                !text.contains(&key[10..]),
                "a key in: {}",
                text.chars().take(3000).collect::<String>()
            );
        }
    }
    Ok(())
}

/// A field of our error body that the SDK keeps as it is.
fn plain(text: &str, max: usize) -> bool {
    !text.trim().is_empty() && text.chars().count() <= max && !text.contains("noxus_")
}

/// A runtime, the server, and a client with retries off (each case is one
/// request).
fn arrange() -> (tokio::runtime::Runtime, RawServer, Client, Vec<String>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(RawServer::start());
    let own = key_from_body(OWN_BODY);
    let client = Client::builder()
        .api_key(&own)
        .base_url(&server.url)
        .max_retries(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    (
        runtime,
        server,
        client,
        vec![own, key_from_body(OTHER_BODY)],
    )
}

#[test]
fn any_refusal_is_a_typed_bounded_error_without_keys() {
    let (runtime, server, client, keys) = arrange();
    proptest!(config(512), |(canned in canned((400u16..600).boxed(), keys.clone()))| {
        let status = canned.status;
        *server.next.lock().unwrap() = canned.clone();
        let err = runtime.block_on(client.me()).expect_err("a refusal is an error");
        let mapped = match &err {
            Error::Unauthorized(_) => status == 401,
            Error::Forbidden(_) => status == 403,
            Error::NotFound(_) => status == 404,
            Error::Validation(_) => status == 422,
            Error::RateLimited { .. } => status == 429,
            Error::Server(_) => status >= 500,
            Error::Api(_) => status < 500 && ![401, 403, 404, 422, 429].contains(&status),
            _ => false,
        };
        prop_assert!(mapped, "{status} became {err:?}");
        prop_assert_eq!(err.status(), Some(status));
        let api = err.api().unwrap();
        prop_assert!(!api.detail.trim().is_empty(), "an empty detail");
        check_bounded_and_redacted(&err, &keys)?;
        // Our own error body, with ordinary values, is kept as it is.
        if let Ok(sent) = serde_json::from_slice::<noxus_sdk::types::ErrorBody>(&canned.body) {
            if plain(&sent.detail, 1000) && plain(&sent.code, 200) && plain(&sent.request_id, 200) {
                prop_assert_eq!(&api.detail, &sent.detail);
                prop_assert_eq!(api.code.as_ref().map(|c| c.as_str()), Some(sent.code.as_str()));
                prop_assert_eq!(api.request_id.as_deref(), Some(sent.request_id.as_str()));
                for (kept, sent) in [(&api.field, &sent.field), (&api.required_permission, &sent.required_permission)] {
                    if sent.as_deref().is_some_and(|s| plain(s, 200)) {
                        prop_assert_eq!(kept, sent);
                    }
                }
            }
        }
    });
}

#[test]
fn any_undecodable_success_is_a_bounded_decode_error_without_keys() {
    let (runtime, server, client, keys) = arrange();
    let successes = select(vec![200u16, 201, 202, 203, 206]).boxed();
    proptest!(config(256), |(canned in canned(successes.clone(), keys.clone()))| {
        let status = canned.status;
        *server.next.lock().unwrap() = canned;
        match runtime.block_on(client.me()) {
            Ok(_) => {}
            Err(err) => {
                let Error::Decode { status: seen, body, .. } = &err else {
                    return Err(TestCaseError::fail(format!("{status} became {err:?}")));
                };
                prop_assert_eq!(*seen, status);
                prop_assert!(body.chars().count() <= 4097, "a body of {} characters", body.chars().count());
                check_bounded_and_redacted(&err, &keys)?;
            }
        }
    });
}

/// Found by `any_refusal_is_a_typed_bounded_error_without_keys`: a
/// `Retry-After` too large for a `Duration` made the SDK panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_too_large_for_a_duration_is_ignored() {
    let server = RawServer::start().await;
    let client = Client::builder()
        .api_key(key_from_body(OWN_BODY))
        .base_url(&server.url)
        .max_retries(0)
        .build()
        .unwrap();
    for value in ["1e20", "18446744073709551616", "1e400"] {
        *server.next.lock().unwrap() = Canned {
            status: 429,
            headers: vec![("retry-after", value.as_bytes().to_vec())],
            body: Vec::new(),
        };
        let err = client.me().await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::RateLimited {
                    retry_after: None,
                    ..
                }
            ),
            "{value}: {err:?}"
        );
    }
}

/// Found by `any_refusal_is_a_typed_bounded_error_without_keys`: the
/// server's sentence was kept whole (a megabyte), and so was a key in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_error_body_or_one_with_a_key_is_kept_short_and_redacted() {
    let server = RawServer::start().await;
    let own = key_from_body(OWN_BODY);
    let client = Client::builder()
        .api_key(&own)
        .base_url(&server.url)
        .max_retries(0)
        .build()
        .unwrap();
    let echoed = format!("proxy refused: X-API-Key: {own}");
    for (body, quotes_the_key) in [
        (
            json!({"detail": "x".repeat(1 << 20), "code": "c", "request_id": "r"}),
            false,
        ),
        (
            json!({"detail": echoed, "code": own, "request_id": own}),
            true,
        ),
        (json!({"message": echoed}), true),
    ] {
        *server.next.lock().unwrap() = Canned {
            status: 502,
            headers: vec![("x-request-id", own.as_bytes().to_vec())],
            body: body.to_string().into_bytes(),
        };
        let err = client.me().await.unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(text.len() < 5000, "{} bytes", text.len());
        assert!(!text.contains(&own[10..]), "{text}");
        if quotes_the_key {
            assert!(
                text.contains(&own[..10]),
                "the key's first characters stay: {text}"
            );
        }
    }
    *server.next.lock().unwrap() = Canned {
        status: 200,
        headers: Vec::new(),
        // serde quotes a string of the wrong type in its message.
        body: json!({"tenant_admin": own}).to_string().into_bytes(),
    };
    let err = client.me().await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(matches!(err, Error::Decode { .. }), "{text}");
    assert!(!text.contains(&own[10..]), "{text}");
}
