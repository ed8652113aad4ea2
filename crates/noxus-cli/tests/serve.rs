//! `noxus serve` as a newcomer runs it: the first start prints how to log
//! in and a working first key, later starts print nothing of the sort, and
//! SIGTERM stops it cleanly.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn noxus() -> Command {
    Command::new(env!("CARGO_BIN_EXE_noxus"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_ready(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(text) = http_get(base, "/readyz", None) {
            if text.contains("ok") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the server did not become ready");
}

/// A tiny HTTP/1.1 GET over a raw socket (keeps this test free of an HTTP client).
fn http_get(base: &str, path: &str, key: Option<&str>) -> std::io::Result<String> {
    use std::io::Write;
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let key_header = key
        .map(|k| format!("X-API-Key: {k}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{key_header}Connection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

fn terminate(mut child: Child) -> (std::process::ExitStatus, String) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (exit, stderr)
}

#[test]
fn the_first_start_prints_a_working_key_once_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = noxus()
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("NOXUS_NO_WELCOME")
        .spawn()
        .unwrap();
    let mut welcome = String::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        welcome.push_str(&line);
        welcome.push('\n');
        if line.contains("printed on the first start only") {
            break;
        }
    }
    let key = welcome
        .lines()
        .find_map(|l| l.trim().strip_prefix("export NOXUS_API_KEY="))
        .expect("an export line for the key")
        .to_owned();
    let base = welcome
        .lines()
        .find_map(|l| l.trim().strip_prefix("export NOXUS_BACKEND_URL="))
        .expect("an export line for the URL")
        .to_owned();
    assert_eq!(base, format!("http://127.0.0.1:{port}"));
    assert!(welcome.contains("email:    admin@noxus.local"));
    assert!(
        welcome.contains(&format!(
            "Log in to the dashboard at http://127.0.0.1:{port}/login"
        )),
        "{welcome}"
    );
    assert!(welcome.contains("password: "));
    assert!(welcome
        .contains("curl -s -H \"X-API-Key: $NOXUS_API_KEY\" \"$NOXUS_BACKEND_URL/v1/admin/me\""));

    // The printed curl works: run it through a shell with the exported variables.
    wait_ready(&base);
    let curl_line = welcome
        .lines()
        .find(|l| l.trim().starts_with("curl "))
        .unwrap()
        .trim()
        .to_owned();
    if Command::new("curl").arg("--version").output().is_ok() {
        let out = Command::new("sh")
            .arg("-c")
            .arg(&curl_line)
            .env("NOXUS_API_KEY", &key)
            .env("NOXUS_BACKEND_URL", &base)
            .output()
            .unwrap();
        let body = String::from_utf8(out.stdout).unwrap();
        assert!(body.contains("\"tenant_admin\":true"), "{body}");
    }
    let me = http_get(&base, "/v1/admin/me", Some(&key)).unwrap();
    assert!(me.starts_with("HTTP/1.1 200"), "{me}");

    let (exit, stderr) = terminate(child);
    assert!(exit.success(), "SIGTERM exits 0: {exit:?}\n{stderr}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    assert!(!stderr.contains(&key[6..]), "the key is not in the log");

    // Second start on the same directory: no welcome, and the old key still works.
    let mut child = noxus()
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(&base);
    let me = http_get(&base, "/v1/admin/me", Some(&key)).unwrap();
    assert!(me.starts_with("HTTP/1.1 200"), "{me}");
    let mut stdout = child.stdout.take().unwrap();
    let (exit, _) = terminate(child);
    assert!(exit.success());
    let mut printed = String::new();
    stdout.read_to_string(&mut printed).unwrap();
    assert!(
        !printed.contains("NOXUS_API_KEY"),
        "no welcome on later starts: {printed}"
    );
}

#[test]
fn with_the_welcome_off_the_first_start_prints_no_secret() {
    // Without a preset password: nothing is created, the log points at /setup.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = noxus()
        .args([
            "serve",
            "--no-welcome",
            "--admin-email",
            "owner@example.com",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("NOXUS_ADMIN_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(&base);
    let login = http_get(&base, "/login", None).unwrap();
    assert!(
        login.starts_with("HTTP/1.1 303") && login.contains("location: /setup"),
        "{login}"
    );
    let mut stdout = child.stdout.take().unwrap();
    let (exit, stderr) = terminate(child);
    assert!(exit.success(), "{stderr}");
    assert!(stderr.contains("/setup"), "{stderr}");
    let mut printed = String::new();
    stdout.read_to_string(&mut printed).unwrap();
    assert!(
        !printed.contains("noxus_") && !printed.contains("password"),
        "{printed}"
    );
    // The one-time setup link goes to stdout only, never to the log.
    let link = printed
        .split_whitespace()
        .find(|w| w.contains("/setup?token="))
        .unwrap_or_else(|| panic!("a setup link in {printed}"));
    assert!(link.starts_with(&base), "{link}");
    assert!(!stderr.contains("token="), "{stderr}");

    // With a preset password: the owner exists, no key is printed.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = noxus()
        .args([
            "serve",
            "--no-welcome",
            "--admin-email",
            "owner@example.com",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .env("NOXUS_ADMIN_PASSWORD", "a long operator password")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(&base);
    let login = http_get(&base, "/login", None).unwrap();
    assert!(login.starts_with("HTTP/1.1 200"), "{login}");
    let mut stdout = child.stdout.take().unwrap();
    let (exit, stderr) = terminate(child);
    assert!(exit.success(), "{stderr}");
    let mut printed = String::new();
    stdout.read_to_string(&mut printed).unwrap();
    assert!(!printed.contains("noxus_"), "no key printed: {printed}");
    assert!(!stderr.contains("a long operator password"));
}

#[test]
fn with_the_welcome_off_the_owner_email_must_be_chosen() {
    let dir = tempfile::tempdir().unwrap();
    let out = noxus()
        .args([
            "serve",
            "--no-welcome",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("NOXUS_ADMIN_EMAIL")
        .env("NOXUS_ADMIN_PASSWORD", "a long operator password")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a configuration error");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("--admin-email"), "{stderr}");
    assert!(stderr.contains("NOXUS_ADMIN_EMAIL"), "{stderr}");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing was created"
    );

    // The variable is enough.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = noxus()
        .args([
            "serve",
            "--no-welcome",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .env("NOXUS_ADMIN_EMAIL", "owner@example.com")
        .env("NOXUS_ADMIN_PASSWORD", "a long operator password")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(&base);
    let (exit, stderr) = terminate(child);
    assert!(exit.success(), "{stderr}");
}

#[test]
fn metrics_are_served_on_their_own_listener_and_never_on_the_public_port() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let public = format!("127.0.0.1:{port}");
    for (flag, metrics) in [
        ("--metrics-listen", public.clone()),
        ("--metrics-listen", format!("0.0.0.0:{port}")),
    ] {
        let out = noxus()
            .args(["serve", "--listen", &public, flag, &metrics, "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "a configuration error");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains("--metrics-listen") && stderr.contains("never on the public"),
            "{stderr}"
        );
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing was created"
    );

    let metrics_port = free_port();
    let base = format!("http://{public}");
    let metrics_base = format!("http://127.0.0.1:{metrics_port}");
    let child = noxus()
        .args(["serve", "--listen", &public, "--data-dir"])
        .arg(dir.path())
        .env("NOXUS_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(&base);
    for _ in 0..2 {
        let answer = http_get(&base, "/v1/models/llms", None).unwrap();
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    let scrape = http_get(&metrics_base, "/metrics", None).unwrap();
    assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
    assert!(
        scrape.contains("noxus_auth_outcomes_total{code=\"missing\"} 2\n"),
        "{scrape}"
    );
    assert!(
        scrape.contains("noxus_http_requests_total{route=\"/v1/models/llms\",method=\"GET\",status_class=\"4xx\"} 2\n"),
        "{scrape}"
    );
    let public_metrics = http_get(&base, "/metrics", None).unwrap();
    assert!(
        public_metrics.starts_with("HTTP/1.1 404"),
        "{public_metrics}"
    );
    let (exit, stderr) = terminate(child);
    assert!(exit.success(), "{stderr}");
    assert!(stderr.contains("serving metrics"), "{stderr}");
}

#[test]
fn serve_help_documents_every_option_and_its_variable() {
    let out = noxus().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--listen",
        "NOXUS_LISTEN",
        "--data-dir",
        "NOXUS_DATA_DIR",
        "--no-welcome",
        "--catalog",
        "--rate-limit-per-key",
        "--header-read-timeout-secs",
        "NOXUS_HEADER_READ_TIMEOUT_SECS",
        "--idle-timeout-secs",
        "NOXUS_IDLE_TIMEOUT_SECS",
        "--request-body-timeout-secs",
        "NOXUS_REQUEST_BODY_TIMEOUT_SECS",
        "--max-connections",
        "NOXUS_MAX_CONNECTIONS",
        "--password-hash-concurrency",
        "NOXUS_PASSWORD_HASH_CONCURRENCY",
        "--trusted-proxy",
        "NOXUS_TRUSTED_PROXIES",
        "--admin-email",
        "NOXUS_ADMIN_EMAIL",
        "--max-keys-per-user",
        "NOXUS_MAX_KEYS_PER_USER",
        "--max-keys-per-workspace",
        "NOXUS_MAX_KEYS_PER_WORKSPACE",
        "--max-rate-limit-per-key",
        "NOXUS_MAX_RATE_LIMIT_PER_KEY",
        "--session-idle-timeout-mins",
        "NOXUS_SESSION_IDLE_TIMEOUT_MINS",
        "--max-addresses-per-key",
        "NOXUS_MAX_ADDRESSES_PER_KEY",
        "--max-event-streams-per-key",
        "NOXUS_MAX_EVENT_STREAMS_PER_KEY",
        "--max-event-streams-per-workspace",
        "NOXUS_MAX_EVENT_STREAMS_PER_WORKSPACE",
        "--max-workflows-per-workspace",
        "NOXUS_MAX_WORKFLOWS_PER_WORKSPACE",
        "--max-versions-per-workflow",
        "NOXUS_MAX_VERSIONS_PER_WORKFLOW",
        "--max-definition-bytes-per-workspace",
        "NOXUS_MAX_DEFINITION_BYTES_PER_WORKSPACE",
        "--max-active-runs-per-workspace",
        "NOXUS_MAX_ACTIVE_RUNS_PER_WORKSPACE",
        "--max-run-bytes-per-workspace",
        "NOXUS_MAX_RUN_BYTES_PER_WORKSPACE",
        "--max-waiting-callbacks-per-workspace",
        "NOXUS_MAX_WAITING_CALLBACKS_PER_WORKSPACE",
        "--allow-loopback-callbacks",
        "NOXUS_ALLOW_LOOPBACK_CALLBACKS",
        "--run-retention-days",
        "NOXUS_RUN_RETENTION_DAYS",
        "--llm-base-url",
        "NOXUS_LLM_BASE_URL",
        "--llm-api-key-env",
        "NOXUS_LLM_API_KEY_ENV",
        "--llm-timeout-secs",
        "NOXUS_LLM_TIMEOUT_SECS",
        "--metrics-listen",
        "NOXUS_METRICS_LISTEN",
    ] {
        assert!(help.contains(needle), "{needle} in\n{help}");
    }
}

#[test]
fn after_a_sigkill_at_most_one_flush_interval_of_usage_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = noxus()
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let key = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.trim()
                .strip_prefix("export NOXUS_API_KEY=")
                .map(str::to_owned)
        })
        .expect("the first key");
    wait_ready(&base);
    let n = 25;
    for _ in 0..n {
        assert!(http_get(&base, "/v1/nodes", Some(&key))
            .unwrap()
            .starts_with("HTTP/1.1 200"));
    }
    // One flush interval (1 s) and a margin, then no chance to flush at exit.
    std::thread::sleep(Duration::from_millis(1600));
    Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();

    let child = noxus()
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(&base);
    let me = http_get(&base, "/v1/admin/me", Some(&key)).unwrap();
    let body = &me[me.find("\r\n\r\n").unwrap() + 4..];
    let id = body
        .split("\"id\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let workspace = body
        .split("\"workspace_id\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let usage = http_get(
        &base,
        &format!("/v1/admin/groups/{workspace}/api-keys/{id}/usage"),
        Some(&key),
    )
    .unwrap();
    let totals = usage.split("\"totals\":").nth(1).unwrap();
    let requests: u64 = totals
        .split("\"requests\":")
        .nth(1)
        .unwrap()
        .split([',', '}'])
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Everything counted before the kill survived (it was flushed within a
    // second), plus the `me` call made after the restart.
    assert_eq!(requests, n + 1, "{usage}");
    let (exit, _) = terminate(child);
    assert!(exit.success());
}

#[test]
fn a_second_serve_on_the_same_data_directory_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let first = noxus()
        .args([
            "serve",
            "--no-welcome",
            "--admin-email",
            "ops@example.com",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(&format!("http://127.0.0.1:{port}"));

    let second = noxus()
        .args([
            "serve",
            "--no-welcome",
            "--admin-email",
            "ops@example.com",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second process started");
    assert!(
        stderr.contains(&format!(
            "in use by another noxus process (pid {})",
            first.id()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("--database-url"), "{stderr}");

    // Once the first one is gone (however it ended), the directory is free.
    let (exit, _) = terminate(first);
    assert!(exit.success());
    let port = free_port();
    let mut third = noxus()
        .args([
            "serve",
            "--no-welcome",
            "--admin-email",
            "ops@example.com",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(&format!("http://127.0.0.1:{port}"));
    third.kill().unwrap();
    third.wait().unwrap();
}
