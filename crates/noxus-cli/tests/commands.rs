//! Every `noxus` command against a platform started by the test, with the
//! documented exit codes, `--json` output, and no key ever printed except
//! by `keys create` / `keys rotate`.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use assert_cmd::Command;
use noxus_api::Role;
use noxus_testkit::{TestApp, TestUser};
use serde_json::Value;

struct Platform {
    runtime: tokio::runtime::Runtime,
    app: TestApp,
    cwd: tempfile::TempDir,
}

impl Platform {
    fn start() -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let app = runtime.block_on(TestApp::spawn());
        Self {
            runtime,
            app,
            cwd: tempfile::tempdir().unwrap(),
        }
    }

    fn user(&self, role: Role) -> TestUser {
        self.runtime.block_on(self.app.user_with_role(role))
    }

    /// `noxus` with a clean environment: only the key and URL given.
    fn noxus(&self, key: &str) -> Command {
        let mut cmd = bare(self.cwd.path());
        cmd.env("NOXUS_API_KEY", key)
            .env("NOXUS_BACKEND_URL", &self.app.base_url);
        cmd
    }
}

fn bare(cwd: &Path) -> Command {
    let mut cmd = Command::cargo_bin("noxus").unwrap();
    cmd.current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Run {
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn json(run: &Run) -> Value {
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.stdout))
}

#[test]
fn auth_status_reports_the_key_workspace_role_and_permissions() {
    let p = Platform::start();
    let r = run(p.noxus(&p.app.owner_key).args(["auth", "status"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(&p.app.owner_key[..10]), "{}", r.stdout);
    assert!(
        !r.stdout.contains(&p.app.owner_key),
        "the full key is never printed"
    );
    for needle in [
        "Authentication successful",
        "Default",
        "owner, tenant admin",
        "workflows:write",
        &p.app.base_url,
    ] {
        assert!(r.stdout.contains(needle), "{needle} in {}", r.stdout);
    }
    assert!(
        !r.stdout.contains('\u{1b}'),
        "no colour when not on a terminal"
    );
    let status = json(&run(p
        .noxus(&p.app.owner_key)
        .args(["auth", "status", "--json"])));
    assert_eq!(status["role"], "owner");
    assert_eq!(status["workspace_id"], p.app.workspace_id.as_str());
}

#[test]
fn every_documented_exit_code_is_produced() {
    let p = Platform::start();
    let unknown = noxus_api::key_format::key_from_body("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345");
    let r = run(p.noxus(&unknown).args(["auth", "status"]));
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with("error: Invalid API key - please check your credentials"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("request id: req_"), "{}", r.stderr);

    let viewer = p.user(Role::Viewer);
    let r = run(p.noxus(&viewer.key).args(["workflows", "create", "nope"]));
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains("API key lacks required permissions"),
        "{}",
        r.stderr
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let r = run(p
        .noxus(&p.app.owner_key)
        .env("NOXUS_BACKEND_URL", format!("http://{closed}"))
        .args(["auth", "status"]));
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(r.stderr.contains("Network error"), "{}", r.stderr);

    let r = run(bare(p.cwd.path()).args(["auth", "status"]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("NOXUS_API_KEY environment variable is required"),
        "{}",
        r.stderr
    );
    let r = run(p
        .noxus("noxus_1234567890abcdef...")
        .args(["auth", "status"]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("malformed API key"), "{}", r.stderr);
    let r = run(p.noxus(&p.app.owner_key).args([
        "auth",
        "status",
        "--backend-url",
        "backend.noxus.ai",
    ]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = run(p
        .noxus(&p.app.owner_key)
        .args(["auth", "status", "--timeout", "0"]));
    assert_eq!(r.code, 2, "{}", r.stderr);

    let r = run(p.noxus(&p.app.owner_key).args([
        "workflows",
        "get",
        "00000000-0000-0000-0000-000000000000",
    ]));
    assert_eq!(r.code, 6, "{}", r.stderr);
    let r = run(p.noxus(&p.app.owner_key).args(["keys", "frobnicate"]));
    assert_eq!(r.code, 2, "usage errors exit 2: {}", r.stderr);
}

#[test]
fn a_quiet_key_feeds_a_later_command_and_the_key_commands_work_end_to_end() {
    let p = Platform::start();
    let owner = &p.app.owner_key;
    let created = run(p.noxus(owner).args(["keys", "create", "ci", "--quiet"]));
    assert_eq!(created.code, 0, "{}", created.stderr);
    let secret = created.stdout.trim().to_owned();
    assert_eq!(
        created.stdout,
        format!("{secret}\n"),
        "only the secret on stdout"
    );
    assert_eq!(noxus_api::check_key_format(&secret), Ok(()));

    // export NOXUS_API_KEY=$(noxus keys create ci --quiet); noxus auth status
    let me = json(&run(p.noxus(&secret).args(["auth", "status", "--json"])));
    assert_eq!(me["key_name"], "ci");
    let key_id = me["key_id"].as_str().unwrap().to_owned();

    let human = run(p.noxus(owner).args([
        "keys",
        "create",
        "human",
        "--permission",
        "workflows:read",
        "--expires-in",
        "30d",
    ]));
    assert_eq!(human.code, 0, "{}", human.stderr);
    assert!(
        human.stderr.contains("it will not be shown again"),
        "{}",
        human.stderr
    );
    assert!(
        human.stdout.contains("Created API key \"human\""),
        "{}",
        human.stdout
    );

    let listed = json(&run(p.noxus(owner).args(["keys", "list", "--json"])));
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["id"] == key_id.as_str()));
    let table = run(p.noxus(owner).args(["keys", "list"]));
    assert!(
        table.stdout.starts_with("ID") && table.stdout.contains("workflows:read"),
        "{}",
        table.stdout
    );
    let shown = json(&run(p
        .noxus(owner)
        .args(["keys", "show", &key_id, "--json"])));
    assert_eq!(shown["status"], "active");

    let rotated = json(&run(p
        .noxus(owner)
        .args(["keys", "rotate", &key_id, "--grace", "1h", "--json"])));
    let new_secret = rotated["value"].as_str().unwrap().to_owned();
    assert_eq!(
        run(p.noxus(&secret).args(["auth", "status"])).code,
        0,
        "old key works during the grace period"
    );
    assert_eq!(run(p.noxus(&new_secret).args(["auth", "status"])).code, 0);
    let too_long = run(p.noxus(owner).args([
        "keys",
        "rotate",
        rotated["id"].as_str().unwrap(),
        "--grace",
        "8d",
    ]));
    assert_eq!(too_long.code, 2, "{}", too_long.stderr);

    let new_id = rotated["id"].as_str().unwrap().to_owned();
    let unconfirmed = run(p.noxus(owner).args(["keys", "revoke", &new_id]));
    assert_eq!(unconfirmed.code, 2, "{}", unconfirmed.stderr);
    assert!(
        unconfirmed.stderr.contains("--yes"),
        "{}",
        unconfirmed.stderr
    );
    assert_eq!(
        run(p.noxus(&new_secret).args(["auth", "status"])).code,
        0,
        "nothing was revoked"
    );
    let revoked = run(p.noxus(owner).args(["keys", "revoke", &new_id, "--yes"]));
    assert_eq!(revoked.code, 0, "{}", revoked.stderr);
    assert_eq!(run(p.noxus(&new_secret).args(["auth", "status"])).code, 3);
}

#[test]
fn keys_check_is_offline_and_never_prints_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = noxus_api::key_format::key_from_body("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345");
    let ok = run(bare(dir.path()).args(["keys", "check", &key]));
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(
        ok.stdout.contains(&key[..10]) && !ok.stdout.contains(&key[10..]),
        "{}",
        ok.stdout
    );
    let mut typo = key.clone();
    typo.replace_range(20..21, if &key[20..21] == "a" { "b" } else { "a" });
    let bad = run(bare(dir.path()).args(["keys", "check", &typo]));
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("checksum") && !bad.stderr.contains(&typo[10..]),
        "{}",
        bad.stderr
    );
    let piped = run(bare(dir.path())
        .args(["keys", "check", "-", "--json"])
        .write_stdin(format!("{key}\n")));
    assert_eq!(json(&piped)["valid"], true);
}

#[test]
fn workspaces_workflows_and_models_commands() {
    let p = Platform::start();
    let owner = &p.app.owner_key;
    let ws = json(&run(p.noxus(owner).args([
        "workspaces",
        "create",
        "Team",
        "-d",
        "the team",
        "--json",
    ])));
    let list = json(&run(p.noxus(owner).args(["workspaces", "list", "--json"])));
    assert_eq!(list.as_array().unwrap().len(), 2);
    let table = run(p.noxus(owner).args(["workspaces", "list"]));
    assert!(
        table.stdout.contains("Team") && table.stdout.contains("the team"),
        "{}",
        table.stdout
    );
    // A key created in another workspace with --workspace.
    let other = run(p.noxus(owner).args([
        "keys",
        "create",
        "team key",
        "-q",
        "--workspace",
        ws["id"].as_str().unwrap(),
    ]));
    let team_key = other.stdout.trim().to_owned();
    assert_eq!(
        json(&run(p.noxus(&team_key).args(["auth", "status", "--json"])))["workspace_name"],
        "Team"
    );
    let deleted =
        run(p
            .noxus(owner)
            .args(["workspaces", "delete", ws["id"].as_str().unwrap(), "--yes"]));
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);

    let file = p.cwd.path().join("flow.json");
    std::fs::write(&file, r#"{"nodes": [{"id": "a", "type": "InputNode"}, {"id": "b", "type": "OutputNode"}], "edges": []}"#).unwrap();
    let created = json(&run(p.noxus(owner).args([
        "workflows",
        "create",
        "from file",
        "--file",
        file.to_str().unwrap(),
        "--json",
    ])));
    let id = created["id"].as_str().unwrap();
    run(p.noxus(owner).args(["workflows", "create", "empty"]));
    let all = json(&run(p.noxus(owner).args(["workflows", "list", "--json"])));
    assert_eq!(all.as_array().unwrap().len(), 2);
    let got = run(p.noxus(owner).args(["workflows", "get", id]));
    assert!(
        got.stdout.contains("from file") && got.stdout.contains("nodes"),
        "{}",
        got.stdout
    );
    let bad_file =
        run(p
            .noxus(owner)
            .args(["workflows", "create", "x", "--file", "/nonexistent.json"]));
    assert_eq!(bad_file.code, 2);
    assert_eq!(
        run(p.noxus(owner).args(["workflows", "delete", id, "--yes"])).code,
        0
    );

    let models = run(p.noxus(owner).args(["models", "list"]));
    assert!(
        models.stdout.starts_with("ID") && models.stdout.contains("gpt-4o-mini"),
        "{}",
        models.stdout
    );
    assert!(json(&run(p.noxus(owner).args(["models", "list", "--json"]))).is_array());
}

#[test]
fn the_key_comes_from_flags_then_environment_then_dotenv() {
    let p = Platform::start();
    let viewer = p.user(Role::Viewer);
    let member = p.user(Role::Member);
    let role_of = |cmd: &mut Command| {
        json(&run(cmd.args(["auth", "status", "--json"])))["role"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    // .env alone.
    std::fs::write(
        p.cwd.path().join(".env"),
        format!(
            "NOXUS_API_KEY={}\nNOXUS_BACKEND_URL={}\n",
            viewer.key, p.app.base_url
        ),
    )
    .unwrap();
    assert_eq!(role_of(&mut bare(p.cwd.path())), "viewer");
    // The environment beats .env.
    assert_eq!(
        role_of(bare(p.cwd.path()).env("NOXUS_API_KEY", &member.key)),
        "member"
    );
    // A flag beats both.
    assert_eq!(
        role_of(
            bare(p.cwd.path())
                .env("NOXUS_API_KEY", &member.key)
                .args(["--api-key", &p.app.owner_key])
        ),
        "owner"
    );
    // Per-environment keys.
    assert_eq!(
        role_of(
            bare(p.cwd.path())
                .env("NOXUS_API_KEY_STAGING", &member.key)
                .args(["--environment", "staging"])
        ),
        "member"
    );
    assert_eq!(
        role_of(
            bare(p.cwd.path())
                .env("ENVIRONMENT", "production")
                .env("NOXUS_API_KEY_PROD", &p.app.owner_key)
        ),
        "owner"
    );
    // Aliases and case do not matter.
    assert_eq!(
        role_of(
            bare(p.cwd.path())
                .env("ENVIRONMENT", "PROD")
                .env("NOXUS_API_KEY_PROD", &p.app.owner_key)
        ),
        "owner"
    );
    // An ENVIRONMENT naming no environment is an error naming it, never a
    // silent fall back to another key.
    let typo = run(bare(p.cwd.path())
        .env("ENVIRONMENT", "prodution")
        .env("NOXUS_API_KEY", &member.key)
        .args(["auth", "status"]));
    assert_eq!(typo.code, 2, "{}", typo.stderr);
    assert!(typo.stderr.contains("\"prodution\""), "{}", typo.stderr);
    let missing = run(bare(p.cwd.path()).args(["auth", "status", "--environment", "production"]));
    assert_eq!(missing.code, 2);
    assert!(
        missing
            .stderr
            .contains("NOXUS_API_KEY_PROD environment variable is required"),
        "{}",
        missing.stderr
    );
}

#[test]
fn a_whole_scripted_session_prints_keys_only_when_creating_or_rotating() {
    let p = Platform::start();
    let owner = p.app.owner_key.clone();
    let mut outputs: Vec<(String, String)> = Vec::new();
    let mut record = |label: &str, r: Run| {
        outputs.push((label.to_owned(), format!("{}{}", r.stdout, r.stderr)));
        r
    };
    let created = record(
        "create",
        run(p.noxus(&owner).args(["keys", "create", "scan", "--json"])),
    );
    let created: Value = serde_json::from_str(&created.stdout).unwrap();
    let secret = created["value"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    let rotated = record(
        "rotate",
        run(p
            .noxus(&owner)
            .args(["keys", "rotate", &id, "--grace", "1h"])),
    );
    let new_secret = rotated
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("noxus_"))
        .unwrap()
        .to_owned();
    let secrets = [owner.clone(), secret.clone(), new_secret.clone()];
    for key in &secrets {
        for args in [
            vec!["auth", "status"],
            vec!["auth", "status", "--json"],
            vec!["keys", "list"],
            vec!["keys", "list", "--json"],
            vec!["keys", "show", &id],
            vec!["workflows", "list"],
            vec!["workspaces", "list", "--json"],
            vec!["models", "list"],
            vec!["keys", "revoke", &id],
        ] {
            record("other", run(p.noxus(key).args(&args)));
        }
        record(
            "check",
            run(bare(p.cwd.path()).args(["keys", "check", key])),
        );
        let mut broken = key.clone();
        broken.push('x');
        record("bad key", run(p.noxus(&broken).args(["auth", "status"])));
    }
    for (label, text) in &outputs {
        for key in &secrets {
            let printed = text.contains(&key[10..]);
            let allowed =
                (label == "create" && key == &secret) || (label == "rotate" && key == &new_secret);
            assert!(!printed || allowed, "{label} printed a key: {text}");
        }
    }
}

#[test]
fn help_and_completions_read_well() {
    let dir = tempfile::tempdir().unwrap();
    let help = run(bare(dir.path()).arg("--help"));
    assert_eq!(help.code, 0);
    for needle in [
        "serve",
        "auth",
        "keys",
        "workspaces",
        "workflows",
        "models",
        "completions",
        "Exit codes",
        "--json",
        "--environment",
    ] {
        assert!(help.stdout.contains(needle), "{needle} in {}", help.stdout);
    }
    for sub in [
        vec!["keys", "--help"],
        vec!["keys", "create", "--help"],
        vec!["keys", "rotate", "--help"],
        vec!["auth", "status", "--help"],
        vec!["workflows", "--help"],
    ] {
        let r = run(bare(dir.path()).args(&sub));
        assert_eq!(r.code, 0, "{sub:?}");
        assert!(r.stdout.len() > 200, "{sub:?}: {}", r.stdout);
    }
    let create = run(bare(dir.path()).args(["keys", "create", "--help"]));
    assert!(
        create.stdout.contains("will not") || create.stdout.contains("once"),
        "{}",
        create.stdout
    );
    for shell in ["bash", "zsh", "fish"] {
        let r = run(bare(dir.path()).args(["completions", shell]));
        assert_eq!(r.code, 0);
        assert!(
            r.stdout.contains("noxus") && r.stdout.contains("keys"),
            "{shell}"
        );
    }
}

#[test]
fn keys_usage_and_audit_show_what_happened() {
    let p = Platform::start();
    let owner = &p.app.owner_key;
    let member = p.user(Role::Member);
    for _ in 0..4 {
        assert_eq!(run(p.noxus(&member.key).args(["auth", "status"])).code, 0);
    }
    let usage = json(&run(p.noxus(owner).args([
        "keys",
        "usage",
        &member.key_id,
        "--json",
    ])));
    assert_eq!(usage["totals"]["requests"], 4, "{usage}");
    let human = run(p.noxus(owner).args(["keys", "usage", &member.key_id]));
    assert_eq!(human.code, 0, "{}", human.stderr);
    assert!(
        human.stdout.contains("127.0.0.1") && human.stdout.contains('█'),
        "{}",
        human.stdout
    );
    let weekly = json(&run(p.noxus(owner).args([
        "keys",
        "usage",
        &member.key_id,
        "--days",
        "7",
        "--json",
    ])));
    assert_eq!(weekly["bucket"], "day");

    let created = json(&run(p
        .noxus(owner)
        .args(["keys", "create", "audited", "--json"])));
    run(p
        .noxus(owner)
        .args(["keys", "revoke", created["id"].as_str().unwrap(), "--yes"]));
    let audit = json(&run(p
        .noxus(owner)
        .args(["audit", "--action", "api_key.", "--json"])));
    assert_eq!(audit[0]["action"], "api_key.revoke");
    assert_eq!(audit[1]["action"], "api_key.create");
    let table = run(p.noxus(owner).args(["audit", "--limit", "5"]));
    assert!(
        table.stdout.starts_with("ID")
            && table.stdout.contains("api_key.revoke")
            && table.stdout.contains("\"audited\""),
        "{}",
        table.stdout
    );
    let forbidden = run(p.noxus(&member.key).args(["audit"]));
    assert_eq!(forbidden.code, 4, "{}", forbidden.stderr);
}

#[test]
fn audit_archive_moves_old_rows_to_a_file_and_refuses_careless_runs() {
    if noxus_testkit::postgres::skip_on_postgres(
        "audit_archive_moves_old_rows_to_a_file_and_refuses_careless_runs",
        "`noxus audit-archive` works on SQLite only",
    ) {
        return;
    }
    let p = Platform::start();
    let data_dir = p.app.data_dir().to_str().unwrap().to_owned();
    let out = p.cwd.path().join("audit.jsonl");

    // --out is required.
    let r = run(bare(p.cwd.path()).args([
        "audit-archive",
        "--data-dir",
        &data_dir,
        "--before",
        "2020-01-01",
    ]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--out"), "{}", r.stderr);
    // A date in the future is refused, and writes nothing.
    let r = run(bare(p.cwd.path()).args([
        "audit-archive",
        "--data-dir",
        &data_dir,
        "--before",
        "2999-01-01T00:00:00Z",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("in the future"), "{}", r.stderr);
    assert!(!out.exists());
    let r = run(bare(p.cwd.path()).args([
        "audit-archive",
        "--data-dir",
        &data_dir,
        "--before",
        "yesterday",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("RFC 3339"), "{}", r.stderr);
    // Nothing that old: no file.
    let r = run(bare(p.cwd.path()).args([
        "audit-archive",
        "--data-dir",
        &data_dir,
        "--before",
        "2020-01-01",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("nothing archived"), "{}", r.stdout);
    assert!(!out.exists());

    // Everything written so far, while the server runs on the same directory.
    std::thread::sleep(std::time::Duration::from_millis(5));
    let now = noxus_server::time_fmt::rfc3339(time::OffsetDateTime::now_utc());
    let archived = json(&run(bare(p.cwd.path()).args([
        "audit-archive",
        "--data-dir",
        &data_dir,
        "--before",
        &now,
        "--out",
        out.to_str().unwrap(),
        "--json",
    ])));
    let rows = archived["rows"].as_u64().unwrap();
    assert!(rows >= 1, "{archived}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count() as u64, rows);
    assert!(text.contains("platform.bootstrap"));
    let log = json(&run(p.noxus(&p.app.owner_key).args(["audit", "--json"])));
    let entries = log.as_array().unwrap();
    assert_eq!(
        entries.len(),
        1,
        "only the archive's own row is left: {log}"
    );
    assert_eq!(entries[0]["action"], "audit.archive");
    assert_eq!(entries[0]["details"]["sha256"], archived["sha256"]);
    // It never overwrites a file.
    let r = run(bare(p.cwd.path()).args([
        "audit-archive",
        "--data-dir",
        &data_dir,
        "--before",
        &now,
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
}

#[test]
fn workflows_run_waits_prints_the_output_and_exits_by_the_runs_outcome() {
    let p = Platform::start();
    let member = p.user(Role::Member);
    let file = p.cwd.path().join("greeting.json");
    std::fs::write(
        &file,
        serde_json::json!({
            "nodes": [
                {"id": "in", "type": "InputNode", "node_config": {"label": "Name"}},
                {"id": "compose", "type": "ComposeTextNode", "node_config": {"template": "Hello, {input}!"}},
                {"id": "out", "type": "OutputNode"}
            ],
            "edges": [
                {"from_id": {"node_id": "in", "connector_name": "output"}, "to_id": {"node_id": "compose", "connector_name": "input"}},
                {"from_id": {"node_id": "compose", "connector_name": "output"}, "to_id": {"node_id": "out", "connector_name": "input"}}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let created = json(&run(p.noxus(&member.key).args([
        "workflows",
        "create",
        "greeting",
        "--file",
        file.to_str().unwrap(),
        "--json",
    ])));
    let id = created["id"].as_str().unwrap();

    // --wait --json: only the ended run, as JSON, on stdout.
    let done = json(&run(p.noxus(&member.key).args([
        "workflows",
        "run",
        id,
        "--input",
        "Name=Ada",
        "--wait",
        "--json",
    ])));
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"]["out::output"]["text"], "Hello, Ada!");

    // For people: the output alone on stdout, the progress on stderr, a
    // line per event when stderr is not a terminal.
    let r = run(p.noxus(&member.key).args([
        "workflows",
        "run",
        id,
        "--input-json",
        r#"{"Name": "Bo"}"#,
        "--wait",
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "Hello, Bo!\n");
    for needle in [
        "queued",
        "node 1/3 started: InputNode \"Name\" (in)",
        "node 2/3 started: ComposeTextNode (compose)",
        "progress 100%",
        "completed",
    ] {
        assert!(r.stderr.contains(needle), "{needle} in {}", r.stderr);
    }
    assert!(!r.stderr.contains('\u{1b}'), "no escapes: {}", r.stderr);

    // Without --wait: the run's id and status.
    let started = run(p
        .noxus(&member.key)
        .args(["workflows", "run", id, "-i", "Name=Cy"]));
    assert_eq!(started.code, 0, "{}", started.stderr);
    assert!(
        started.stdout.contains("run") && started.stdout.contains("queued"),
        "{}",
        started.stdout
    );

    // A run that fails: exit 7 with the server's sentence; --json still
    // prints the run.
    let failed = run(p
        .noxus(&member.key)
        .args(["workflows", "run", id, "--wait"]));
    assert_eq!(failed.code, 7, "{}", failed.stderr);
    assert!(
        failed.stderr.contains("error: The run ")
            && failed
                .stderr
                .contains("failed: Node in: the run input has no value for 'Name'"),
        "{}",
        failed.stderr
    );
    assert_eq!(failed.stdout, "");
    let failed = run(p
        .noxus(&member.key)
        .args(["workflows", "run", id, "--wait", "--json"]));
    assert_eq!(failed.code, 7, "{}", failed.stderr);
    let body: Value = serde_json::from_str(&failed.stdout).unwrap();
    assert_eq!(body["status"], "failed");

    // Bad input is a usage error; a viewer may not run.
    let bad = run(p
        .noxus(&member.key)
        .args(["workflows", "run", id, "--input", "Name"]));
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("KEY=VALUE"), "{}", bad.stderr);
    let viewer = p.user(Role::Viewer);
    let refused =
        run(p
            .noxus(&viewer.key)
            .args(["workflows", "run", id, "-i", "Name=Ada", "--wait"]));
    assert_eq!(refused.code, 4, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("workflows:run"),
        "{}",
        refused.stderr
    );
}
