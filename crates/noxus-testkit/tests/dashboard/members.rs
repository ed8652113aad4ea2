//! The Members tab: an owner creates an account, adds it to a workspace as
//! a viewer, and the new member sees that workspace with that role.

use anyhow::{ensure, Context as _};
use noxus_testkit::noxus_api::Role;
use noxus_testkit::TestApp;

use crate::harness;
use crate::pages::{members_path, Browser};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_adds_a_user_by_email_as_viewer_in_the_members_tab_and_sees_the_row() {
    let Some(tools) = harness::tools() else {
        return;
    };
    let app = TestApp::spawn().await;
    harness::run(
        "an_owner_adds_a_user_by_email_as_viewer_in_the_members_tab_and_sees_the_row",
        &tools,
        &app.base_url,
        |browser| add_viewer(&app, browser),
    )
    .await;
    app.stop().await;
}

async fn add_viewer(app: &TestApp, b: Browser) -> anyhow::Result<()> {
    let email = "new.colleague@test.noxus.local";
    let password = "colleague password 42";
    b.log_in(&app.owner.email, &app.owner.password).await?;

    // Settings → Organization → Users: create the account.
    b.click("#nav-settings").await?;
    b.click("#nav-users").await?;
    b.wait_for_path("/settings/organization/users").await?;
    b.type_into("#user-email", email).await?;
    b.type_into("#user-name", "New Colleague").await?;
    b.type_into("#user-password", password).await?;
    b.click("#create-user-submit").await?;
    b.wait_for_path("/settings/organization/users").await?;
    let users = b.text("table#users").await?;
    ensure!(
        users.contains(email),
        "table#users lacks {email}: {users:?}"
    );
    let user = app
        .state
        .store()
        .user_by_email(email)
        .await?
        .context("the user created in the browser is not in the store")?;

    // Default → Members: add them by email as a viewer.
    let ws = b.open_workspace("Default").await?;
    b.click("a#tab-members").await?;
    b.wait_for_path(&members_path(&ws)).await?;
    let row = format!("table#members tr[data-user-id='{}']", user.id);
    ensure!(
        b.find_all_now(&row).await?.is_empty(),
        "{email} is a member before being added"
    );
    b.type_into("#member-email", email).await?;
    b.find("select#member-role")
        .await?
        .select_by_value("viewer")
        .await?;
    b.click("#add-member-submit").await?;
    b.wait_for_path(&members_path(&ws)).await?;

    let shown_email = b.text(&format!("{row} td.member-email")).await?;
    ensure!(
        shown_email.trim() == email,
        "the new row shows {shown_email:?}"
    );
    let shown_role = b
        .find(&format!("{row} select.role-select"))
        .await?
        .prop("value")
        .await?;
    ensure!(
        shown_role.as_deref() == Some("viewer"),
        "the new row's role is {shown_role:?}"
    );
    let stored = app
        .state
        .store()
        .membership(&ws.as_str().into(), &user.id)
        .await?;
    ensure!(
        stored == Some(Role::Viewer),
        "the store has the role {stored:?}"
    );

    // The new member logs in, must choose their own password (the admin
    // chose the first one), then finds the workspace, as a viewer.
    b.log_out().await?;
    b.log_in_choosing_password(email, password, "a password only I know")
        .await?;
    b.open_workspace("Default").await?;
    let heading = b.text("h1").await?;
    ensure!(
        heading.contains("your role: viewer"),
        "the new member's workspace heading says {heading:?}"
    );
    ensure!(
        b.find_all_now("a#create-key").await?.is_empty(),
        "the new viewer is offered a#create-key"
    );
    Ok(())
}
