//! Testing without mocks: start the real platform with `noxus-testserver`
//! (free port, fresh database, a key for each role), point clients at it,
//! and stop it at the end.
//!
//! `noxus-testserver` is a program of the Noxus in Rust repository
//! (`cargo install --path crates/noxus-testkit --bin noxus-testserver` in
//! a checkout). This example runs `$NOXUS_TESTSERVER` if set, else
//! `noxus-testserver` from `PATH`:
//!
//!     NOXUS_TESTSERVER=target/debug/noxus-testserver cargo run -p noxus-sdk --example testing

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use noxus_sdk::{Client, Error};

/// A platform started for a test. It prints one JSON line (`base_url`,
/// `workspace_id`, `owner_key`, `admin_key`, `member_key`, `viewer_key`)
/// and runs until its standard input closes, which `Drop` does.
struct TestServer {
    child: Child,
    stdin: Option<ChildStdin>,
    // Kept open: the server's standard output stays a pipe someone reads.
    _stdout: BufReader<ChildStdout>,
    line: serde_json::Value,
}

impl TestServer {
    fn start() -> Result<Self, String> {
        let program =
            std::env::var_os("NOXUS_TESTSERVER").unwrap_or_else(|| "noxus-testserver".into());
        let mut child = Command::new(&program)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {}: {e} (install noxus-testserver, or set NOXUS_TESTSERVER to its path)",
                    program.to_string_lossy()
                )
            })?;
        // On an error below, dropping `child` closes the server's input: it stops.
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut text = String::new();
        stdout
            .read_line(&mut text)
            .map_err(|e| format!("reading noxus-testserver's first line: {e}"))?;
        let line = serde_json::from_str(&text)
            .map_err(|e| format!("noxus-testserver printed {text:?}, not a JSON line: {e}"))?;
        Ok(Self {
            stdin: child.stdin.take(),
            child,
            _stdout: stdout,
            line,
        })
    }

    /// A client with the key the server printed as `field` (`member_key`, …).
    fn client(&self, field: &str) -> Result<Client, Error> {
        let text = |name: &str| self.line[name].as_str().unwrap_or_default().to_owned();
        Client::builder()
            .api_key(text(field))
            .base_url(text("base_url"))
            .build()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        drop(self.stdin.take()); // the server stops when its input closes
        let _ = self.child.wait();
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = TestServer::start()?;

    let member = server.client("member_key")?;
    let workflow = member.workflows().create("Test Workflow").await?;
    println!("created workflow {}", workflow.id);

    let viewer = server.client("viewer_key")?;
    match viewer.workflows().create("not allowed").await {
        Err(Error::Forbidden(e)) => println!("viewer refused as expected: {}", e.detail),
        other => return Err(format!("a viewer must not write: {other:?}").into()),
    }
    drop(server);
    println!("✅ done");
    Ok(())
}
