//! The blocking client, from a plain `#[test]` without an async runtime.

use noxus_api::Role;
use noxus_testkit::TestApp;

#[test]
fn the_blocking_client_works_without_async() {
    // The platform runs on its own runtime's threads; the test thread blocks.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(TestApp::spawn());
    let member = runtime.block_on(app.user_with_role(Role::Member));
    let client = noxus_sdk::blocking::Client::wrap(
        noxus_sdk::Client::builder()
            .api_key(&member.key)
            .base_url(&app.base_url)
            .build()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(client.me().unwrap().role, Role::Member);
    let created = client.create_workflow("from a script").unwrap();
    assert_eq!(client.workflow(&created.id).unwrap().name, "from a script");
    assert_eq!(client.workflows().unwrap().len(), 1);
    assert!(!client.models().unwrap().is_empty());
    assert!(client.delete_workflow(&created.id).unwrap().deleted);
    let err = client.workflow(&created.id).unwrap_err();
    assert_eq!(err.status(), Some(404));
    runtime.block_on(app.stop());
}
