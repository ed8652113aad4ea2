//! Nobody holds a connection open for ever: half-sent request heads, idle
//! kept-alive connections and stalled bodies are closed after their
//! (test-configured) timeouts, and over the connection cap a new connection
//! gets a 503 until others close. Raw TCP, so that the client sends exactly
//! what an attacker would.

use std::time::Duration;

use noxus_testkit::TestApp;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Generous: the machine is shared; the timeouts under test are 1 s.
const PATIENCE: Duration = Duration::from_secs(20);

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(("127.0.0.1", app.port)).await.unwrap()
}

/// Reads until the server closes the connection (end of stream or reset),
/// or the deadline passes. Returns what was received, or `None` if the
/// connection was still open at the deadline.
async fn read_until_closed(stream: &mut TcpStream, deadline: Instant) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_elapsed) => return None,
            Ok(Ok(0)) => return Some(received),
            Ok(Ok(n)) => received.extend_from_slice(&chunk[..n]),
            Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(received)
            }
            Ok(Err(err)) => panic!("unexpected read error: {err}"),
        }
    }
}

/// A response read off a raw connection.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

fn parse_head(head: &str) -> u16 {
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Reads one response (with a `content-length`) and leaves the connection open.
async fn read_response(stream: &mut TcpStream) -> RawResponse {
    let deadline = Instant::now() + PATIENCE;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(buffer[..end].to_vec()).unwrap();
            let mut response = RawResponse {
                status: parse_head(&head),
                head,
                body: Vec::new(),
            };
            let length: usize = response
                .header("content-length")
                .expect("a content-length")
                .parse()
                .unwrap();
            let mut body = buffer[end + 4..].to_vec();
            while body.len() < length {
                let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
                    .await
                    .expect("the body in time")
                    .unwrap();
                assert!(n > 0, "the connection closed inside the body");
                body.extend_from_slice(&chunk[..n]);
            }
            response.body = body;
            return response;
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "the connection closed before a response");
        buffer.extend_from_slice(&chunk[..n]);
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
}

#[tokio::test]
async fn two_hundred_half_sent_request_heads_are_all_closed_after_the_header_timeout() {
    let app = TestApp::spawn_with(|config| {
        config.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let mut connections = Vec::new();
    for _ in 0..200 {
        let mut stream = connect(&app).await;
        stream
            .write_all(b"GET /v1/admin/me HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-")
            .await
            .unwrap();
        connections.push(stream);
    }

    let deadline = Instant::now() + PATIENCE;
    let mut closed = 0;
    for stream in &mut connections {
        if read_until_closed(stream, deadline).await.is_some() {
            closed += 1;
        }
    }
    assert_eq!(
        closed, 200,
        "every half-sent request was closed by the server"
    );

    // The server still serves.
    let me = app
        .get("/v1/admin/me", &app.owner_key)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let app = TestApp::spawn_with(|config| {
        config.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let mut stream = connect(&app).await;
    stream.write_all(get("/healthz").as_bytes()).await.unwrap();
    let response = read_response(&mut stream).await;
    assert_eq!(response.status, 200);
    assert_ne!(response.header("connection"), Some("close"), "kept alive");

    let rest = read_until_closed(&mut stream, Instant::now() + PATIENCE).await;
    assert_eq!(
        rest,
        Some(Vec::new()),
        "the idle connection was closed, without a word"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_kept_alive_connection_serves_request_after_request_even_after_a_pause() {
    // The idle wait between requests is the idle timeout's, not the header
    // timeout's: a pause longer than the header timeout is fine.
    let app = TestApp::spawn_with(|config| {
        config.header_read_timeout = Duration::from_secs(1);
        config.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let mut stream = connect(&app).await;
    for round in 0..3 {
        if round == 2 {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let request = format!(
            "GET /v1/admin/me HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {}\r\n\r\n",
            app.owner_key
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let response = read_response(&mut stream).await;
        assert_eq!(response.status, 200, "round {round}: {}", response.head);
        assert_eq!(response.json()["tenant_admin"], true);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_request_body_that_stops_half_way_gets_408_and_the_connection_closes() {
    let app = TestApp::spawn_with(|config| {
        config.request_body_timeout = Duration::from_secs(1);
    })
    .await;
    let mut stream = connect(&app).await;
    let head = format!(
        "POST /v1/workflows HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
        app.owner_key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(br#"{"name": "half"#).await.unwrap();

    let received = read_until_closed(&mut stream, Instant::now() + PATIENCE)
        .await
        .expect("the server answered and closed the connection");
    let text = String::from_utf8(received).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    assert_eq!(parse_head(head), 408, "{text}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["code"], "request_timeout", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("1 second"),
        "{body}"
    );
    assert!(body["request_id"].as_str().unwrap().starts_with("req_"));

    // Nothing was created from the half body.
    let list = app
        .get("/v1/workflows", &app.owner_key)
        .send()
        .await
        .unwrap();
    let list: Value = list.json().await.unwrap();
    assert!(!list.to_string().contains("half"), "{list}");
    app.stop().await;
}

#[tokio::test]
async fn over_the_connection_cap_a_new_connection_gets_503_until_others_close() {
    let app = TestApp::spawn_with(|config| {
        config.max_connections = 20;
        // Held connections must not time out while the test runs.
        config.header_read_timeout = Duration::from_secs(600);
        config.idle_timeout = Duration::from_secs(600);
    })
    .await;
    // Twenty connections that each made a request and stay open.
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut stream = connect(&app).await;
        stream.write_all(get("/healthz").as_bytes()).await.unwrap();
        assert_eq!(read_response(&mut stream).await.status, 200);
        held.push(stream);
    }

    let mut extra = connect(&app).await;
    // The server answers whether or not the request was sent.
    let _ = extra.write_all(get("/healthz").as_bytes()).await;
    let received = read_until_closed(&mut extra, Instant::now() + PATIENCE)
        .await
        .expect("the 21st connection is answered and closed");
    let text = String::from_utf8(received).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    assert_eq!(parse_head(head), 503, "{text}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["code"], "service_unavailable", "{body}");
    assert!(body["detail"].as_str().unwrap().len() > 10, "{body}");
    assert!(body["request_id"].as_str().unwrap().starts_with("req_"));

    // The held connections still work.
    held[0].write_all(get("/healthz").as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut held[0]).await.status, 200);

    // Once they close, new connections are served again.
    drop(held);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut stream = connect(&app).await;
        stream.write_all(get("/healthz").as_bytes()).await.unwrap();
        let response = read_response(&mut stream).await;
        if response.status == 200 {
            break;
        }
        assert_eq!(response.status, 503);
        assert!(
            Instant::now() < deadline,
            "still refused after the others closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}
