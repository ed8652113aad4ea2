//! `noxus keys scan`: the real binary on generated trees — keys found by
//! format and checksum only (look-alikes never), printed as fragments, the
//! documented exit codes — and `--report` against a platform started by the
//! test: the key is refused as revoked at once, the workspace's audit log
//! and API Keys page say where it was found, and the endpoint answers the
//! same whatever was reported.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use noxus_api::key_format::{key_from_body, KEY_BODY_LEN};
use noxus_api::Role;
use noxus_testkit::{TestApp, TestUser};
use serde_json::{json, Value};

const KEYS_FOUND: i32 = 9;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `noxus` with a clean environment (no key, no URL) in `cwd`.
fn noxus(cwd: &Path) -> Command {
    let mut cmd = Command::cargo_bin("noxus").unwrap();
    cmd.current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

fn run(cmd: &mut Command) -> Run {
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// The fragment the scan prints for `key`.
fn fragment(key: &str) -> String {
    format!("{}…{}", &key[..10], &key[key.len() - 4..])
}

/// A small deterministic generator (xorshift64*), so that a failing tree
/// can be made again.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn base62(&mut self, n: usize) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        (0..n)
            .map(|_| ALPHABET[(self.next() % 62) as usize] as char)
            .collect()
    }

    /// A real (well-formed) key.
    fn key(&mut self) -> String {
        key_from_body(&self.base62(KEY_BODY_LEN))
    }

    /// The right prefix and length, and a wrong checksum.
    fn look_alike(&mut self) -> String {
        let key = self.key();
        loop {
            let sum = self.base62(6);
            if !key.ends_with(&sum) {
                return format!("{}{sum}", &key[..key.len() - 6]);
            }
        }
    }
}

/// How a string appears in a file: the usual places a key is pasted.
fn in_context(i: usize, text: &str) -> String {
    match i % 5 {
        0 => format!("NOXUS_API_KEY={text}"),
        1 => format!("    api_key = \"{text}\"  # production"),
        2 => format!("{{\"key\": \"{text}\", \"n\": {i}}}"),
        3 => format!("curl -H 'X-API-Key: {text}' https://backend.noxus.ai/v1/admin/me"),
        _ => format!("export KEY='{text}'"),
    }
}

#[test]
fn ten_thousand_look_alikes_report_nothing_and_three_real_keys_are_exactly_those_found() {
    let dir = tempfile::tempdir().unwrap();
    let mut random = Random(0x5eed_1234_abcd_0001);
    // 10 000 look-alikes: 1 000 files of 10 lines, in 10 directories.
    let mut count = 0;
    for d in 0..10 {
        let sub = dir.path().join(format!("pkg{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..100 {
            let lines: Vec<String> = (0..10)
                .map(|i| in_context(i, &random.look_alike()))
                .collect();
            count += lines.len();
            std::fs::write(sub.join(format!("settings{f}.env")), lines.join("\n")).unwrap();
        }
    }
    assert_eq!(count, 10_000);
    let clean = run(noxus(dir.path()).args(["keys", "scan"]));
    assert_eq!(clean.code, 0, "{}{}", clean.stdout, clean.stderr);
    assert_eq!(clean.stdout, "", "nothing reported");
    assert!(
        clean
            .stderr
            .contains("no Noxus key found (1000 files scanned"),
        "{}",
        clean.stderr
    );

    // Three real keys among them, at known places.
    let places = [
        ("pkg0/settings7.env", 4),
        ("pkg5/settings0.env", 1),
        ("pkg9/settings99.env", 10),
    ];
    let mut expected = Vec::new();
    for (file, line) in places {
        let key = random.key();
        let path = dir.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines[line - 1] = format!("{} {}", lines[line - 1], in_context(line, &key));
        std::fs::write(&path, lines.join("\n")).unwrap();
        expected.push((format!("./{file}"), line as u64, key));
    }
    let found = run(noxus(dir.path()).args(["keys", "scan", "."]));
    assert_eq!(found.code, KEYS_FOUND, "{}", found.stderr);
    let printed: Vec<&str> = found.stdout.lines().collect();
    let wanted: Vec<String> = expected
        .iter()
        .map(|(path, line, key)| format!("{path}:{line}: {}", fragment(key)))
        .collect();
    assert_eq!(printed, wanted, "exactly the three keys, in walk order");
    for (_, _, key) in &expected {
        assert!(!found.stdout.contains(key.as_str()) && !found.stderr.contains(key.as_str()));
    }
    assert!(
        found.stderr.contains("3 Noxus keys found"),
        "{}",
        found.stderr
    );

    let report: Value =
        serde_json::from_str(&run(noxus(dir.path()).args(["keys", "scan", "--json"])).stdout)
            .unwrap();
    assert_eq!(report["keys_found"], 3);
    assert_eq!(report["files_scanned"], 1000);
    assert_eq!(report["reported"], false);
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 3);
    for (finding, (path, line, key)) in findings.iter().zip(&expected) {
        assert_eq!(finding["path"], path.as_str());
        assert_eq!(finding["line"], *line);
        assert_eq!(finding["fragment"], fragment(key).as_str());
    }
    assert!(!report.to_string().contains(&expected[0].2));
}

#[test]
fn the_walk_skips_vcs_build_and_dependency_directories_binaries_large_files_and_links() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let mut random = Random(42);
    let tree = dir.path().join("repo");
    for sub in [".git", "target/debug", "node_modules/left-pad", "src"] {
        std::fs::create_dir_all(tree.join(sub)).unwrap();
    }
    let hidden: Vec<String> = (0..6).map(|_| random.key()).collect();
    std::fs::write(tree.join(".git/config"), &hidden[0]).unwrap();
    std::fs::write(tree.join("target/debug/app.d"), &hidden[1]).unwrap();
    std::fs::write(tree.join("node_modules/left-pad/index.js"), &hidden[2]).unwrap();
    let mut binary = vec![0u8, 1, 2];
    binary.extend_from_slice(hidden[3].as_bytes());
    std::fs::write(tree.join("src/logo.png"), binary).unwrap();
    std::fs::write(
        tree.join("src/big.sql"),
        format!("{}\n{}", "x".repeat(2000), hidden[4]),
    )
    .unwrap();
    std::fs::write(outside.path().join("secrets.env"), &hidden[5]).unwrap();
    std::os::unix::fs::symlink(outside.path(), tree.join("src/elsewhere")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secrets.env"), tree.join("src/.env")).unwrap();
    let visible = random.key();
    std::fs::write(
        tree.join("src/main.py"),
        format!("import os\nKEY = \"{visible}\"\n"),
    )
    .unwrap();

    let r =
        run(noxus(dir.path()).args(["keys", "scan", "repo", "--max-file-bytes", "1000", "--json"]));
    assert_eq!(r.code, KEYS_FOUND, "{}", r.stderr);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{report}");
    assert_eq!(findings[0]["path"], "repo/src/main.py");
    assert_eq!(findings[0]["line"], 2);
    assert_eq!(
        report["skipped"],
        json!({"binary": 1, "too_large": 1, "unreadable": 0, "symlinks": 2})
    );
    assert_eq!(report["files_scanned"], 1, "{report}");
    for key in &hidden {
        assert!(!r.stdout.contains(&fragment(key)), "{key} skipped");
    }

    // A path named on the command line is scanned, whatever it is.
    let named = run(noxus(dir.path()).args(["keys", "scan", "repo/node_modules", "repo/src/.env"]));
    assert_eq!(named.code, KEYS_FOUND, "{}", named.stderr);
    assert!(
        named.stdout.contains(&fragment(&hidden[2])),
        "{}",
        named.stdout
    );
    assert!(
        named.stdout.contains(&fragment(&hidden[5])),
        "{}",
        named.stdout
    );

    // Nothing to scan there: a usage error.
    let missing = run(noxus(dir.path()).args(["keys", "scan", "no/such/dir"]));
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(
        missing.stderr.starts_with("error: cannot read no/such/dir"),
        "{}",
        missing.stderr
    );
    // --url means nothing without --report.
    let stray = run(noxus(dir.path()).args(["keys", "scan", "--url", "https://x.test/"]));
    assert_eq!(stray.code, 2, "{}", stray.stderr);
}

#[test]
fn a_report_to_a_platform_that_cannot_be_reached_is_a_network_error_after_the_findings() {
    let dir = tempfile::tempdir().unwrap();
    let key = Random(7).key();
    std::fs::write(dir.path().join("leak.txt"), &key).unwrap();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = run(noxus(dir.path())
        .env("NOXUS_BACKEND_URL", format!("http://127.0.0.1:{port}"))
        .args(["keys", "scan", "--report"]));
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(r.stdout.contains(&fragment(&key)), "{}", r.stdout);
    assert!(r.stderr.contains("cannot report the keys"), "{}", r.stderr);
    assert!(!r.stderr.contains(&key));
    let bad_url = run(noxus(dir.path())
        .env("NOXUS_BACKEND_URL", "ftp://example.com")
        .args(["keys", "scan", "--report"]));
    assert_eq!(bad_url.code, 2, "{}", bad_url.stderr);
}

/// A logged-in dashboard session, enough to read pages.
struct Dashboard {
    http: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
}

impl Dashboard {
    async fn login(app: &TestApp, user: &TestUser) -> Self {
        let mut dashboard = Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: app.base_url.clone(),
            cookies: HashMap::new(),
        };
        let login = dashboard.get("/login").await;
        let marker = "name=\"csrf\" value=\"";
        let start = login.find(marker).unwrap() + marker.len();
        let csrf = login[start..start + login[start..].find('"').unwrap()].to_owned();
        let response = dashboard
            .http
            .post(format!("{}/login", dashboard.base))
            .header("cookie", dashboard.cookie_header())
            .form(&[
                ("email", user.email.as_str()),
                ("password", user.password.as_str()),
                ("csrf", csrf.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 303, "logged in");
        dashboard.keep(&response);
        dashboard
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all("set-cookie") {
            let pair = value.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.insert(name.to_owned(), value.to_owned());
        }
    }

    async fn get(&mut self, path: &str) -> String {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(&response);
        response.text().await.unwrap()
    }
}

/// The dashboard's escaping of text.
fn html(text: &str) -> String {
    text.replace('&', "&#38;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
}

#[test]
fn a_key_found_by_scan_and_reported_is_refused_as_revoked_and_its_workspace_is_told_where() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(TestApp::spawn());
    let member = runtime.block_on(app.user_with_role(Role::Member));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(
        dir.path().join("src/config.py"),
        format!("import os\n\nAPI_KEY = \"{}\"\n", member.key),
    )
    .unwrap();
    let url = "https://github.com/acme/app/blob/4f2a9c1/src/config.py#L3";

    let found = run(noxus(dir.path()).args(["keys", "scan", "src"]));
    assert_eq!(found.code, KEYS_FOUND, "{}", found.stderr);
    assert_eq!(
        found.stdout,
        format!("src/config.py:3: {}\n", fragment(&member.key))
    );
    // It works until reported.
    let me = runtime
        .block_on(app.get("/v1/admin/me", &member.key).send())
        .unwrap();
    assert_eq!(me.status(), 200);

    let reported = run(noxus(dir.path())
        .env("NOXUS_BACKEND_URL", &app.base_url)
        .args(["keys", "scan", "src", "--report", "--url", url]));
    assert_eq!(reported.code, KEYS_FOUND, "{}", reported.stderr);
    assert!(
        reported
            .stdout
            .contains(&format!("reported 1 key to {}", app.base_url)),
        "{}",
        reported.stdout
    );
    assert!(!reported.stdout.contains(&member.key) && !reported.stderr.contains(&member.key));

    // The next request with it is refused as revoked (the report is handled
    // off the request path, within moments).
    let started = Instant::now();
    let refusal: Value = loop {
        let response = runtime
            .block_on(app.get("/v1/admin/me", &member.key).send())
            .unwrap();
        if response.status() == 401 {
            break runtime.block_on(response.json()).unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still works");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(refusal["code"], "revoked_api_key", "{refusal}");

    // The audit entry, over the API...
    let audit: Value = runtime
        .block_on(async {
            app.get("/v1/admin/audit?limit=10", &app.owner_key)
                .send()
                .await
                .unwrap()
                .json()
                .await
        })
        .unwrap();
    let entry = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "api_key.revoke" && e["target_id"] == member.key_id.as_str())
        .unwrap_or_else(|| panic!("a revocation entry in {audit}"));
    assert_eq!(entry["details"]["reason"], "reported_leaked", "{entry}");
    assert_eq!(entry["details"]["leak_url"], url, "{entry}");
    assert_eq!(
        entry["details"]["leak_source"], "noxus keys scan",
        "{entry}"
    );

    // ...and as the dashboard tells it, with the banner on the API Keys page.
    let (keys_page, audit_page) = runtime.block_on(async {
        let mut owner = Dashboard::login(&app, &app.owner).await;
        let base = format!("/settings/organization/workspaces/{}", app.workspace_id);
        (
            owner.get(&format!("{base}/api-keys")).await,
            owner.get(&format!("{base}/audit")).await,
        )
    });
    assert!(
        audit_page.contains(&html(&format!(
            "({}): reported leaked at {url} (reported by noxus keys scan).",
            fragment(&member.key)
        ))),
        "{audit_page}"
    );
    let banner = &keys_page[keys_page.find("class=\"leak\"").expect("a banner")..];
    assert!(banner.contains(&fragment(&member.key)), "{banner}");
    assert!(banner.contains("was reported leaked"), "{banner}");
    assert!(banner.contains(&html(url)), "{banner}");

    // Reporting an unknown key, a malformed one and a valid one: the same answer.
    let admin = runtime.block_on(app.user_with_role(Role::Admin));
    let candidates = [
        key_from_body("UnknownUnknownUnknownUnknown0000"),
        format!("{}x", &admin.key[..admin.key.len() - 1]),
        "noxus_not-even-close".to_owned(),
        admin.key.clone(),
    ];
    let answers: Vec<(u16, Vec<String>, String)> = runtime.block_on(async {
        let mut answers = Vec::new();
        for key in &candidates {
            let response = app
                .http
                .post(app.url("/v1/keys/leaks"))
                .json(&json!({"keys": [{"key": key, "url": "https://x.test/paste"}]}))
                .send()
                .await
                .unwrap();
            let mut headers: Vec<String> =
                response.headers().keys().map(|h| h.to_string()).collect();
            headers.sort();
            answers.push((
                response.status().as_u16(),
                headers,
                response.text().await.unwrap(),
            ));
        }
        answers
    });
    assert_eq!(answers[0].0, 202, "{}", answers[0].2);
    for answer in &answers[1..] {
        assert_eq!(answer, &answers[0]);
    }
    runtime.block_on(app.stop());
}

#[tokio::test]
async fn a_key_reported_through_one_replica_is_refused_by_the_other() {
    let test = "scan::a_key_reported_through_one_replica_is_refused_by_the_other";
    // A minute of cache TTL: a refusal on the other replica within seconds
    // can only come from the store's events.
    let Some(cluster) = noxus_testkit::cluster::Cluster::start(
        test,
        Path::new(env!("CARGO_BIN_EXE_noxus")),
        2,
        &["--key-cache-ttl-ms", "60000"],
    )
    .await
    else {
        return;
    };
    let (_, key) = cluster
        .create_key(0, json!({"name": "pasted in a gist"}))
        .await;
    for index in 0..2 {
        let status = cluster
            .get(index, "/v1/nodes", &key)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "replica {index} verified (and cached) the key");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gist.md"), format!("key: {key}\n")).unwrap();
    let reported = tokio::task::spawn_blocking({
        let base = cluster.replicas[0].base_url.clone();
        let cwd = dir.path().to_path_buf();
        move || {
            run(noxus(&cwd)
                .env("NOXUS_BACKEND_URL", base)
                .args(["keys", "scan", "--report"]))
        }
    })
    .await
    .unwrap();
    assert_eq!(reported.code, KEYS_FOUND, "{}", reported.stderr);
    let started = Instant::now();
    loop {
        let status = cluster
            .get(1, "/v1/nodes", &key)
            .send()
            .await
            .unwrap()
            .status();
        if status == 401 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "replica 1 still answers {status}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
