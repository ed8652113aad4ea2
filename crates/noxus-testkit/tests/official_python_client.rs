//! Runs the official Python client's compatibility test
//! (`tests/python/test_official_client.py`) as part of `cargo test --workspace`.
//!
//! It needs the virtualenv `target/python-venv` with the pinned `noxus-sdk`,
//! made by `tests/python/run.sh --setup-only`. Without it the test is skipped
//! locally and fails in CI (`CI` set).

use std::path::{Path, PathBuf};
use std::process::Command;

const SETUP: &str = "tests/python/run.sh --setup-only";

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Why the official client cannot run, if it cannot.
fn missing_setup(python: &Path) -> Option<String> {
    if !python.is_file() {
        return Some(format!("{} does not exist", python.display()));
    }
    let probe = Command::new(python)
        .args(["-c", "import noxus_sdk, pytest"])
        .output();
    match probe {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "the virtualenv lacks noxus_sdk or pytest: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("{} cannot be run: {e}", python.display())),
    }
}

#[test]
fn the_official_python_client_works_unmodified() {
    let root = workspace_root();
    let python = root.join("target/python-venv/bin/python");

    if let Some(reason) = missing_setup(&python) {
        if std::env::var_os("CI").is_some() {
            panic!(
                "the official Python client is not installed ({reason}); \
                 .ci/run must run `{SETUP}` before `cargo test`"
            );
        }
        println!("skipped: run tests/python/run.sh to set up the official client ({reason})");
        return;
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
        "the official Python client's compatibility test failed ({}); pytest's output is above",
        out.status
    );
}
