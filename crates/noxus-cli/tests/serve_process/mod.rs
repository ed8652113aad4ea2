//! A real `noxus serve` process for the log tests: started on a free port
//! in a temporary data directory, its first key read from the welcome text,
//! its standard error collected line by line, stopped with SIGTERM.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Served {
    child: Child,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The first key, from the welcome text.
    pub key: String,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
}

/// Variables of the test's environment that would change what is logged.
const CLEARED: [&str; 8] = [
    "NOXUS_LOG",
    "NOXUS_LOG_FORMAT",
    "NOXUS_ACCESS_LOG",
    "NOXUS_NO_WELCOME",
    "NOXUS_DATABASE_URL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SDK_DISABLED",
];

/// Starts `noxus serve` with `args` and `envs`, and waits until it is ready.
pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_noxus"));
    command
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in CLEARED {
        command.env_remove(name);
    }
    for (name, value) in envs {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();

    let stderr = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let stderr = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                stderr.lock().unwrap().push(line);
            }
        })
    };
    let mut key = None;
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in stdout.by_ref() {
        let line = line.unwrap();
        if let Some(found) = line.trim().strip_prefix("export NOXUS_API_KEY=") {
            key = Some(found.to_owned());
        }
        if line.contains("printed on the first start only") {
            break;
        }
    }
    // Keep reading: a closed pipe would fail the server's next print.
    std::thread::spawn(move || stdout.map_while(Result::ok).for_each(drop));
    let served = Served {
        child,
        _dir: dir,
        base: format!("http://127.0.0.1:{port}"),
        key: key.expect("the welcome text prints the first key"),
        stderr,
        reader,
    };
    served.wait_ready();
    served
}

impl Served {
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let ready = std::net::TcpStream::connect(self.base.trim_start_matches("http://"))
                .and_then(|mut stream| {
                    use std::io::{Read, Write};
                    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                    write!(
                        stream,
                        "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    )?;
                    let mut answer = String::new();
                    stream.read_to_string(&mut answer)?;
                    Ok(answer.starts_with("HTTP/1.1 200"))
                })
                .unwrap_or(false);
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server did not become ready");
    }

    /// `noxus` (the CLI) against this server with `key`.
    pub fn cli(&self, key: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_noxus"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NOXUS_API_KEY", key)
            .env("NOXUS_BACKEND_URL", &self.base);
        command
    }

    /// The standard-error lines so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, then the exit status and every standard-error line.
    pub fn stop(mut self) -> (ExitStatus, Vec<String>) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        self.reader.join().unwrap();
        let lines = self.stderr.lock().unwrap().clone();
        (status, lines)
    }
}
