//! A webhook receiver for tests: a real HTTP server on 127.0.0.1 (the
//! platform started with `allow_loopback_callbacks`) that records what it
//! is posted, answers the statuses it is given, and checks signatures as a
//! receiver would.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// The `t` of `Noxus-Signature` and its `v1` signatures.
    pub fn signature(&self) -> (i64, Vec<String>) {
        let mut t = None;
        let mut v1 = Vec::new();
        for part in self.header("noxus-signature").split(',') {
            match part.split_once('=') {
                Some(("t", value)) => t = value.parse().ok(),
                Some(("v1", value)) => v1.push(value.to_owned()),
                _ => {}
            }
        }
        (t.expect("a timestamp"), v1)
    }

    /// Whether one of the signatures is the body's under `secret`, as a
    /// receiver checks it.
    pub fn signed_with(&self, secret: &str) -> bool {
        let (t, signatures) = self.signature();
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(&self.body);
        let expected = hex::encode(mac.finalize().into_bytes());
        signatures.contains(&expected)
    }
}

/// An HTTP server on 127.0.0.1 that records every POST and answers the
/// statuses it was given in turn, then 200.
pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(answers: &[u16]) -> Self {
        let got = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(answers.iter().copied().collect::<VecDeque<_>>()));
        let app = axum::Router::new().fallback({
            let got = Arc::clone(&got);
            move |headers: HeaderMap, body: axum::body::Bytes| {
                let got = Arc::clone(&got);
                let answers = Arc::clone(&answers);
                async move {
                    got.lock().unwrap().push(Received {
                        headers,
                        body: body.to_vec(),
                    });
                    let status = answers.lock().unwrap().pop_front().unwrap_or(200);
                    (StatusCode::from_u16(status).unwrap(), "ok")
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url: format!("http://127.0.0.1:{port}/hooks/noxus?token=t0k3n"),
            got,
            server,
        }
    }

    pub fn port(&self) -> u16 {
        self.url
            .trim_start_matches("http://127.0.0.1:")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// The first `n` requests, waiting up to 20 s for them.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.got.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver got {} requests, not {n}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}
