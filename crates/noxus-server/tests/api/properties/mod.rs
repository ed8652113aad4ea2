//! Property tests: generated bad input (JSON bodies of every shape, raw
//! bytes, query strings, mistyped keys) against the real platform. The
//! answer is always a 2xx or a 4xx with our error body; never a 5xx.
//!
//! Each property runs a fixed number of cases from a fixed seed, so CI runs
//! the same ones every time; `PROPTEST_RNG_SEED=<n>` and `PROPTEST_CASES=<n>`
//! explore others. A failure prints the minimal input, and its seed is kept
//! in `<module>.proptest-regressions` beside the module's file, replayed
//! first on every later run (commit that file with the fix).

mod bodies;
mod json;
mod key_digest;
mod queries;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;

use noxus_testkit::noxus_api::key_format::redact;
use noxus_testkit::TestApp;
use proptest::prelude::ProptestConfig;
use proptest::test_runner::{FileFailurePersistence, RngSeed, TestCaseError};
use reqwest::Method;

/// `cases` cases from a fixed seed (unless the environment asks for
/// others), shrinking bounded so that a failure against a server is found
/// and minimized in seconds.
pub fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        max_shrink_iters: 512,
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x6e6f_7875_735f_6170);
    }
    config
}

/// One platform for a whole property, and a runtime to drive it from
/// proptest's (synchronous) runner.
pub struct Platform {
    runtime: tokio::runtime::Runtime,
    pub app: TestApp,
    /// How many answers of each status the property saw.
    statuses: Mutex<BTreeMap<u16, u32>>,
}

impl Platform {
    /// A fresh platform without the per-key rate limit (a property sends
    /// hundreds of requests a second with one key), after `configure`.
    pub fn start(configure: impl FnOnce(&mut noxus_testkit::noxus_server::Config)) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let app = runtime.block_on(TestApp::spawn_with(|c| {
            c.key_rate_limit = None;
            configure(c);
        }));
        Self {
            runtime,
            app,
            statuses: Mutex::default(),
        }
    }

    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Sends a request with the owner's key (a tenant-admin key: it may
    /// call every route), counts its status and checks the answer's shape.
    pub fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Body>,
    ) -> Result<Answer, TestCaseError> {
        let answer = self.request(method.clone(), path_and_query, body);
        *self
            .statuses
            .lock()
            .unwrap()
            .entry(answer.status)
            .or_default() += 1;
        let what = format!("{method} {path_and_query}");
        let what: String = what.chars().take(300).collect();
        answer.check(&what)?;
        Ok(answer)
    }

    /// Arranges a property: a request that must succeed, not counted.
    pub fn arrange(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let body = body.map(|b| Body {
            bytes: b.to_string().into_bytes(),
            content_type: Some("application/json"),
        });
        let answer = self.request(method, path, body.as_ref());
        let json = answer.json();
        assert!(answer.status < 300, "{path}: {} {json}", answer.status);
        json
    }

    /// Sends a request with the owner's key.
    fn request(&self, method: Method, path_and_query: &str, body: Option<&Body>) -> Answer {
        let app = &self.app;
        self.block_on(async {
            let mut request = app
                .http
                .request(method, app.url(path_and_query))
                .header("X-API-Key", &app.owner_key);
            if let Some(body) = body {
                if let Some(content_type) = body.content_type {
                    request = request.header("content-type", content_type);
                }
                request = request.body(body.bytes.clone());
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let bytes = response.bytes().await.unwrap();
            Answer {
                status,
                headers,
                bytes: bytes.to_vec(),
            }
        })
    }

    /// Stops the platform. The property must have reached the handlers:
    /// out of 50 answers or more, some were successes and some refusals
    /// (else the generators only ever produce one kind of input).
    pub fn stop(self, name: &str) {
        let Self {
            runtime,
            app,
            statuses,
        } = self;
        runtime.block_on(app.stop());
        let statuses = statuses.into_inner().unwrap();
        eprintln!("{name}: answers by status {statuses:?}");
        let sent: u32 = statuses.values().sum();
        assert!(
            sent < 50 || statuses.keys().any(|s| *s < 300) && statuses.keys().any(|s| *s >= 400),
            "{name}: only {statuses:?}"
        );
        assert!(
            !noxus_testkit::captured_logs().contains("panicked"),
            "a handler panicked"
        );
    }
}

/// Longest `detail` of an error (the longest sentences list every permission).
const MAX_DETAIL: usize = 1000;
/// Longest `field` of a 422.
const MAX_FIELD: usize = 250;

/// A request body as generated: bytes (not always JSON, not always UTF-8)
/// and a `Content-Type`, if any.
#[derive(Clone)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub content_type: Option<&'static str>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = String::from_utf8_lossy(&self.bytes);
        let shown: String = text.chars().take(2000).collect();
        write!(
            f,
            "Body({} bytes, {:?}): {shown:?}{}",
            self.bytes.len(),
            self.content_type,
            if shown.len() < text.len() { "…" } else { "" }
        )
    }
}

/// What the platform answered.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.bytes).unwrap_or_default()
    }

    /// 2xx with a JSON body, or 4xx with `{detail, code, request_id}`
    /// (the id also in `x-request-id`), quoting no key and nothing long;
    /// nothing else.
    fn check(&self, what: &str) -> Result<(), TestCaseError> {
        let status = self.status;
        let text = String::from_utf8_lossy(&self.bytes);
        let excerpt: String = text.chars().take(500).collect();
        proptest::prop_assert!(
            (200..300).contains(&status) || (400..500).contains(&status),
            "{what}: status {status}: {excerpt}"
        );
        let body: serde_json::Value = serde_json::from_slice(&self.bytes).map_err(|e| {
            TestCaseError::fail(format!("{what}: {status}, not JSON ({e}): {excerpt}"))
        })?;
        if status >= 400 {
            let request_id = self
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            proptest::prop_assert!(
                body["detail"]
                    .as_str()
                    .is_some_and(|d| !d.trim().is_empty())
                    && body["code"].as_str().is_some_and(|c| !c.is_empty())
                    && body["request_id"].as_str() == Some(request_id)
                    && request_id.starts_with("req_"),
                "{what}: {status} without our error body: {excerpt}"
            );
            // Client text quoted back is bounded and never holds a key.
            let detail = body["detail"].as_str().unwrap_or_default();
            proptest::prop_assert!(
                detail.chars().count() <= MAX_DETAIL,
                "{what}: a detail of {} characters: {excerpt}",
                detail.chars().count()
            );
            let field = body["field"].as_str().unwrap_or_default();
            proptest::prop_assert!(
                field.chars().count() <= MAX_FIELD,
                "{what}: a field of {} characters: {excerpt}",
                field.chars().count()
            );
            proptest::prop_assert!(
                redact(&text) == text,
                "{what}: {status} quotes a key: {excerpt}"
            );
        }
        Ok(())
    }
}
