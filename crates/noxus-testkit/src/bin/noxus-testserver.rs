//! Starts a throwaway platform (free port, fresh database in a temporary
//! directory) with users of every role, prints one JSON line describing it
//! on stdout, and runs until stdin closes or SIGINT/SIGTERM. For tests in
//! other languages (the official Python client's compatibility test).
//!
//! Output: `{"base_url", "workspace_id", "owner_key" (tenant admin),
//! "admin_key", "member_key", "viewer_key"}`.

use std::io::Read;

use noxus_api::Role;
use noxus_testkit::TestApp;

#[tokio::main]
async fn main() {
    let app = TestApp::spawn().await;
    let admin = app.user_with_role(Role::Admin).await;
    let member = app.user_with_role(Role::Member).await;
    let viewer = app.user_with_role(Role::Viewer).await;
    let line = serde_json::json!({
        "base_url": app.base_url,
        "workspace_id": app.workspace_id,
        "owner_key": app.owner_key,
        "admin_key": admin.key,
        "member_key": member.key,
        "viewer_key": viewer.key,
    });
    println!("{line}");

    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    });
    tokio::select! {
        _ = stdin_closed => {}
        () = noxus_server::shutdown_signal() => {}
    }
    app.stop().await;
}
