//! Starts a throwaway platform (free port, fresh database in a temporary
//! directory) with users of every role, prints one JSON line describing it
//! on stdout, and runs until stdin closes or SIGINT/SIGTERM. For tests in
//! other languages (the official Python client's compatibility test, the
//! OpenAPI fuzzer).
//!
//! Output: `{"base_url", "workspace_id", "owner_key" (tenant admin),
//! "admin_key", "member_key", "viewer_key"}`.
//!
//! `--fuzz` prepares it for the OpenAPI fuzzer run of `tests/schemathesis`
//! (see docs/testing.md): failed authentications and leak reports are not
//! throttled (the fuzzer sends requests without a key on purpose, and a
//! 429 there would hide the 401 or the 202 it checks), and the line also has:
//! - `fuzz_key`: a tenant-admin key of the owner in the first workspace,
//!   with its own rate limit (the operator's ceiling), so that a workspace
//!   limit set by a generated call cannot starve it;
//! - `revoker_key`: another such key, for the revoke and rotate operations,
//!   which the run points at `scratch_workspace_id`, a workspace of the
//!   owner that holds only keys made there by the run: no generated call can
//!   revoke or rotate a key the run uses.

use std::io::Read;

use noxus_api::Role;
use noxus_server::keys::IssueRequest;
use noxus_server::rate_limit::RateLimit;
use noxus_server::store::Actor;
use noxus_testkit::TestApp;
use secrecy::ExposeSecret;

const USAGE: &str = "usage: noxus-testserver [--fuzz]";

#[tokio::main]
async fn main() {
    let mut fuzz = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--fuzz" => fuzz = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => {
                eprintln!("error: unknown argument `{other}`\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let stop = noxus_server::shutdown_signal();
    let app = TestApp::spawn_with(|config| {
        if fuzz {
            config.auth_failure_limit = RateLimit {
                per_second: 1_000_000,
                burst: 1_000_000,
            };
            config.leak_report_limit = RateLimit {
                per_second: 1_000_000,
                burst: 1_000_000,
            };
        }
    })
    .await;
    let admin = app.user_with_role(Role::Admin).await;
    let member = app.user_with_role(Role::Member).await;
    let viewer = app.user_with_role(Role::Viewer).await;
    let mut line = serde_json::json!({
        "base_url": app.base_url,
        "workspace_id": app.workspace_id,
        "owner_key": app.owner_key,
        "admin_key": admin.key,
        "member_key": member.key,
        "viewer_key": viewer.key,
    });
    if fuzz {
        let scratch = app.second_workspace("fuzz scratch").await;
        line["fuzz_key"] = fuzz_key(&app, "fuzz key").await.into();
        line["revoker_key"] = fuzz_key(&app, "fuzz revoker key").await.into();
        line["scratch_workspace_id"] = scratch.workspace_id.into();
    }
    println!("{line}");

    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    });
    tokio::select! {
        _ = stdin_closed => {}
        () = stop => {}
    }
    app.stop().await;
}

/// A tenant-admin key of the owner in the first workspace, limited to the
/// operator's ceiling whatever its workspace's limit.
async fn fuzz_key(app: &TestApp, name: &str) -> String {
    let request = IssueRequest {
        workspace_id: app.workspace_id.clone().into(),
        user_id: app.owner.id.clone().into(),
        name: name.to_owned(),
        tenant_admin: true,
        restriction: None,
        expires_at: None,
        rate_limit: Some(app.state.config().max_rate_limit_per_key),
    };
    let (_, secret) = noxus_server::keys::issue(&app.state, &Actor::system(), request)
        .await
        .expect("a fuzz key");
    secret.expose_secret().to_owned()
}
