//! Runs the official Python client's compatibility test
//! (`tests/python/test_official_client.py`) as part of `cargo test --workspace`,
//! with the current release (0.6.0) and the previous release line (0.5.6).
//!
//! Each needs its virtualenv (`target/python-venv`, `target/python-venv-0.5`)
//! with the pinned `noxus-sdk` and pytest. On first use the test makes it
//! itself (`tests/python/run.sh [--client 0.5] --setup-only`: `python3 -m
//! venv` and `pip install` from PyPI), so a fresh
//! checkout's `cargo test --workspace` runs it. Where that cannot work (no
//! `python3`, no `venv` module — Debian's `python3-venv` needs root — or no
//! network to PyPI) the test says SKIPPED on standard error, where it is
//! seen, and passes; in CI (`CI` set) it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

const SETUP: &str = "tests/python/run.sh";

/// One release line of the official client: where its virtualenv lives and
/// which `noxus_sdk.__version__` it must hold.
struct Client {
    line: &'static str,
    venv: &'static str,
    version: &'static str,
}

const CURRENT: Client = Client {
    line: "0.6",
    venv: "target/python-venv",
    version: "0.6.0",
};
const PREVIOUS: Client = Client {
    line: "0.5",
    venv: "target/python-venv-0.5",
    version: "0.5.6",
};

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Why the official client cannot run, if it cannot.
fn missing_setup(python: &Path, client: &Client) -> Option<String> {
    if !python.is_file() {
        return Some(format!("{} does not exist", python.display()));
    }
    let probe = Command::new(python)
        .args([
            "-c",
            &format!(
                "import noxus_sdk, pytest; assert noxus_sdk.__version__ == {:?}, noxus_sdk.__version__",
                client.version
            ),
        ])
        .output();
    match probe {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "the virtualenv lacks noxus_sdk {} or pytest: {}",
            client.version,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("{} cannot be run: {e}", python.display())),
    }
}

/// Makes the virtualenv with the pinned client; the reason when it cannot.
fn set_up(root: &Path, client: &Client) -> Result<(), String> {
    let out = Command::new("bash")
        .args([SETUP, "--client", client.line, "--setup-only"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("bash cannot be run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{SETUP} --client {} --setup-only` failed ({}): {}",
            client.line,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn run_compatibility_test(test: &str, client: &Client) {
    let root = workspace_root();
    let python = root.join(client.venv).join("bin/python");

    if missing_setup(&python, client).is_some() {
        let why = match set_up(&root, client) {
            Ok(()) => missing_setup(&python, client),
            Err(why) => Some(why),
        };
        if let Some(reason) = why {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "the official Python client {} cannot be set up ({reason}); \
                     .ci/run must install python3-venv",
                    client.version
                );
            }
            noxus_testkit::report_skip(
                test,
                &format!(
                    "the official Python client {} could not be set up ({reason}); \
                     install python3 with its venv module (Debian: python3-venv) \
                     and allow access to PyPI",
                    client.version
                ),
            );
            return;
        }
    }

    let server = env!("CARGO_BIN_EXE_noxus-testserver");
    let out = Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/python/test_official_client.py",
        ])
        .current_dir(&root)
        .env("NOXUS_TESTSERVER", server)
        .output()
        .expect("pytest starts");

    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the official Python client {}'s compatibility test failed ({}); pytest's output is above",
        client.version,
        out.status
    );
}

#[test]
fn the_official_python_client_works_unmodified() {
    run_compatibility_test("the_official_python_client_works_unmodified", &CURRENT);
}

#[test]
fn the_previous_official_python_client_0_5_works_unmodified() {
    run_compatibility_test(
        "the_previous_official_python_client_0_5_works_unmodified",
        &PREVIOUS,
    );
}
