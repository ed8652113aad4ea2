//! Runs the official Python client's compatibility test
//! (`tests/python/test_official_client.py`) as part of `cargo test --workspace`.
//!
//! It needs the virtualenv `target/python-venv` with the pinned `noxus-sdk`
//! and pytest. On first use the test makes it itself (`tests/python/run.sh
//! --setup-only`: `python3 -m venv` and `pip install` from PyPI), so a fresh
//! checkout's `cargo test --workspace` runs it. Where that cannot work (no
//! `python3`, no `venv` module — Debian's `python3-venv` needs root — or no
//! network to PyPI) the test says SKIPPED on standard error, where it is
//! seen, and passes; in CI (`CI` set) it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

const SETUP: &str = "tests/python/run.sh";

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

/// Makes the virtualenv with the pinned client; the reason when it cannot.
fn set_up(root: &Path) -> Result<(), String> {
    let out = Command::new("bash")
        .args([SETUP, "--setup-only"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("bash cannot be run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{SETUP} --setup-only` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[test]
fn the_official_python_client_works_unmodified() {
    let root = workspace_root();
    let python = root.join("target/python-venv/bin/python");

    if missing_setup(&python).is_some() {
        let why = match set_up(&root) {
            Ok(()) => missing_setup(&python),
            Err(why) => Some(why),
        };
        if let Some(reason) = why {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "the official Python client cannot be set up ({reason}); \
                     .ci/run must install python3-venv"
                );
            }
            noxus_testkit::report_skip(
                "the_official_python_client_works_unmodified",
                &format!(
                    "the official Python client could not be set up ({reason}); \
                     install python3 with its venv module (Debian: python3-venv) \
                     and allow access to PyPI"
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
        "the official Python client's compatibility test failed ({}); pytest's output is above",
        out.status
    );
}
