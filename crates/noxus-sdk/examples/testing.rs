//! Testing without mocks: `noxus-testkit` boots the real platform in-process
//! (free port, fresh database) and hands out clients for each role.
//!
//!     cargo run -p noxus-sdk --example testing

use noxus_api::Role;
use noxus_testkit::TestApp;

#[tokio::main]
async fn main() -> Result<(), noxus_sdk::Error> {
    let app = TestApp::spawn().await;
    let member = app.client_for(Role::Member).await;
    let workflow = member.workflows().create("Test Workflow").await?;
    println!("created workflow {}", workflow.id);

    let viewer = app.client_for(Role::Viewer).await;
    match viewer.workflows().create("not allowed").await {
        Err(noxus_sdk::Error::Forbidden(e)) => println!("viewer refused as expected: {}", e.detail),
        other => panic!("a viewer must not write: {other:?}"),
    }
    app.stop().await;
    println!("✅ done");
    Ok(())
}
