//! The Redis server for tests about the replicas' shared rate-limit
//! counters: `NOXUS_TEST_REDIS_URL`, by default `redis://127.0.0.1:6379`
//! (where our machines and CI run one). Tests share it safely: the
//! platform keeps each deployment's counters under its organization's id.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The variable naming the Redis server tests use.
pub const ENV: &str = "NOXUS_TEST_REDIS_URL";

/// The default server.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// The Redis server's address for tests (`host:port` of the URL).
pub fn address() -> Option<SocketAddr> {
    let url = std::env::var(ENV)
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let rest = url.strip_prefix("redis://")?;
    let host_port = rest.split('/').next()?;
    let host_port = host_port.rsplit('@').next()?;
    use std::net::ToSocketAddrs as _;
    host_port.to_socket_addrs().ok()?.next()
}

/// Whether a Redis server answers `PING` at `addr`.
pub async fn answers(addr: SocketAddr) -> bool {
    let ping = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await.ok()?;
        Some(&reply == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), ping).await,
        Ok(Some(true))
    )
}

/// The Redis server's address, for a test that needs it: when it does not
/// answer, fails when `CI` is set, and otherwise prints
/// `SKIPPED: <test> (no Redis at ...)` and returns `None`.
pub async fn address_or_skip(test: &str) -> Option<SocketAddr> {
    let addr = address();
    if let Some(addr) = addr {
        if answers(addr).await {
            return Some(addr);
        }
    }
    let why = format!(
        "no Redis answers at {} (set {ENV}, or start redis-server)",
        addr.map_or_else(|| "an unreadable URL".to_owned(), |a| a.to_string())
    );
    if std::env::var_os("CI").is_some() {
        panic!("{test} needs Redis: {why} (CI is set, so this test may not be skipped)");
    }
    let line = format!("\nSKIPPED: {test} ({why})\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    None
}
