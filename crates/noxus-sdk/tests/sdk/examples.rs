//! The examples run against a started platform: each must succeed and print
//! its success line. (`cargo test` builds the examples before the tests.)

use std::path::PathBuf;
use std::process::Command;

use noxus_api::Role;
use noxus_testkit::TestApp;

fn example(name: &str) -> PathBuf {
    // target/debug/deps/sdk-… → target/debug/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .join("examples");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is built by `cargo test` (run it from the workspace)",
        path.display()
    );
    path
}

fn run(name: &str, envs: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let mut command = Command::new(example(name));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in envs {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_examples_run_against_the_local_platform() {
    let app = TestApp::spawn().await;
    let viewer = app.user_with_role(Role::Viewer).await;
    let key = app.owner_key.as_str();
    let url = app.base_url.as_str();
    let env = [("NOXUS_API_KEY", key), ("NOXUS_BACKEND_URL", url)];

    let (code, out) = run("direct_init", &[("NOXUS_BACKEND_URL", url)], &[key]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("✅ Authenticated"), "{out}");

    for name in ["environment_variables", "config_struct", "error_handling"] {
        let (code, out) = run(name, &env, &[]);
        assert_eq!(code, 0, "{name}: {out}");
        assert!(out.contains('✅'), "{name}: {out}");
    }
    let (code, out) = run(
        "per_environment",
        &[
            ("ENVIRONMENT", "staging"),
            ("NOXUS_API_KEY_STAGING", &viewer.key),
            ("NOXUS_BACKEND_URL", url),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("NOXUS_API_KEY_STAGING"), "{out}");

    // The error-handling example's failure paths, with the guide's wording.
    let (code, out) = run("error_handling", &[("NOXUS_BACKEND_URL", url)], &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("NOXUS_API_KEY environment variable is required"),
        "{out}"
    );
    let unknown = noxus_api::key_format::key_from_body("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345");
    let (code, out) = run(
        "error_handling",
        &[("NOXUS_API_KEY", &unknown), ("NOXUS_BACKEND_URL", url)],
        &[],
    );
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("Invalid API key - please check your credentials"),
        "{out}"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, out) = run(
        "error_handling",
        &[
            ("NOXUS_API_KEY", key),
            ("NOXUS_BACKEND_URL", &format!("http://{closed}")),
        ],
        &[],
    );
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("Network error"), "{out}");

    // .env: the file supplies the key; the URL set in the environment wins over the file's.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        format!("NOXUS_API_KEY={key}\nNOXUS_BACKEND_URL=http://127.0.0.1:1\n"),
    )
    .unwrap();
    let out = Command::new(example("dotenv"))
        .current_dir(dir.path())
        .env_clear()
        .env("NOXUS_BACKEND_URL", url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("loaded") && text.contains('✅'), "{text}");

    let (code, out) = run("blocking", &env, &[]);
    assert_eq!(code, 0, "{out}");

    // A workflow run: its events, then its output.
    let (code, out) = run("run_workflow", &env, &["Ada"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("▸ greet") && out.contains("100%"), "{out}");
    assert!(out.contains("✅ Hello, Ada!"), "{out}");
    // A viewer may neither save nor run it: the guide's sentence, a failing exit.
    let viewer_env = [
        ("NOXUS_API_KEY", viewer.key.as_str()),
        ("NOXUS_BACKEND_URL", url),
    ];
    let (code, out) = run("run_workflow", &viewer_env, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("API key lacks required permissions"), "{out}");
    app.stop().await;
}

/// The `testing` example starts `noxus-testserver` itself: the one built
/// next to the examples (`cargo test --workspace` builds it; `cargo test -p
/// noxus-sdk` alone does not, and then this test skips, except under `CI`).
#[test]
fn the_testing_example_starts_noxus_testserver_and_tests_against_it() {
    let testserver = example("testing")
        .parent()
        .and_then(|examples| examples.parent())
        .unwrap()
        .join("noxus-testserver");
    if !testserver.exists() {
        let why = format!(
            "{} is not built (build it with `cargo build -p noxus-testkit`, or run `cargo test --workspace`)",
            testserver.display()
        );
        assert!(std::env::var_os("CI").is_none(), "{why}");
        noxus_testkit::report_skip(
            "the_testing_example_starts_noxus_testserver_and_tests_against_it",
            &why,
        );
        return;
    }
    let (code, out) = run(
        "testing",
        &[("NOXUS_TESTSERVER", testserver.to_str().unwrap())],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("viewer refused as expected") && out.contains("✅ done"),
        "{out}"
    );

    // Without the program, the example says how to get it, and fails.
    let (code, out) = run(
        "testing",
        &[("NOXUS_TESTSERVER", "/nonexistent/noxus-testserver")],
        &[],
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("set NOXUS_TESTSERVER"), "{out}");
}
