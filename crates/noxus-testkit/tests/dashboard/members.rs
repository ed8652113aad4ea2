//! The Members tab: an owner creates an account, adds it to a workspace as
//! a viewer, and the new member sees that workspace with that role; an
//! owner invites someone without an account in one step (the one-time
//! password shown once), changes their role and removes them, each change
//! confirmed in one line; the form keeps what was typed when it is wrong.

use anyhow::{ensure, Context as _};
use noxus_testkit::noxus_api::Role;
use noxus_testkit::TestApp;

use crate::harness;
use crate::pages::{members_path, Browser};

/// The `#flash` confirmation of the page now shown, once it says something.
async fn flash(b: &Browser) -> anyhow::Result<String> {
    let seen =
        crate::pages::eventually(|| async { Ok(!b.text("#flash").await?.trim().is_empty()) })
            .await?;
    ensure!(seen, "no confirmation in #flash");
    Ok(b.text("#flash").await?.trim().to_owned())
}

/// The id of the element that has the keyboard focus.
async fn focused_id(b: &Browser) -> anyhow::Result<String> {
    let id = b
        .client
        .execute(
            "return document.activeElement ? document.activeElement.id : '';",
            vec![],
        )
        .await?;
    Ok(id.as_str().unwrap_or_default().to_owned())
}

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
    let created = flash(&b).await?;
    ensure!(
        created.starts_with(&format!("{email} now has an account.")),
        "after creating a user, #flash says {created:?}"
    );
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
    let added = flash(&b).await?;
    ensure!(
        added == format!("{email} was added to Default as a viewer."),
        "after adding a member, #flash says {added:?}"
    );

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_invites_a_new_teammate_who_logs_in_with_the_password_shown_once() {
    let Some(tools) = harness::tools() else {
        return;
    };
    let app = TestApp::spawn().await;
    harness::run(
        "an_owner_invites_a_new_teammate_who_logs_in_with_the_password_shown_once",
        &tools,
        &app.base_url,
        |browser| invite_change_and_remove(&app, browser),
    )
    .await;
    app.stop().await;
}

async fn invite_change_and_remove(app: &TestApp, b: Browser) -> anyhow::Result<()> {
    let email = "ada@test.noxus.local";
    b.log_in(&app.owner.email, &app.owner.password).await?;
    let ws = b.open_workspace("Default").await?;
    b.click("a#tab-members").await?;
    b.wait_for_path(&members_path(&ws)).await?;

    // Roles in people's words: a sentence per role, no permission codes.
    let help = b.text("dl#role-help").await?;
    ensure!(
        !help.contains("keys:write") && !help.contains("members:write"),
        "dl#role-help still shows permission codes: {help:?}"
    );
    let member_help = b.text("dl#role-help dd[data-role='member']").await?;
    ensure!(
        member_help.starts_with("creates and uses their own API keys"),
        "the member role reads {member_help:?}"
    );
    let option = b
        .find("select#member-role option[value='viewer']")
        .await?
        .prop("textContent")
        .await?
        .unwrap_or_default();
    ensure!(
        option.starts_with("Viewer — sees the workspace"),
        "the viewer option reads {option:?}"
    );

    // A wrong email: the form comes back as typed, the field focused and
    // tied to the sentence that says what is wrong.
    b.type_into("#member-email", "ada at test.noxus.local")
        .await?;
    b.type_into("#member-name", "Ada Lovelace").await?;
    b.find("select#member-role")
        .await?
        .select_by_value("admin")
        .await?;
    b.click("#add-member-submit").await?;
    let error = b.text("#member-error").await?;
    ensure!(
        error.contains("email address"),
        "#member-error says {error:?}"
    );
    let field = b.find("#member-email").await?;
    ensure!(
        field.prop("value").await?.as_deref() == Some("ada at test.noxus.local"),
        "the email typed was not kept"
    );
    ensure!(
        field.attr("aria-invalid").await?.as_deref() == Some("true")
            && field.attr("aria-describedby").await?.as_deref() == Some("member-error"),
        "the email field is not marked invalid and tied to #member-error"
    );
    let name = b.find("#member-name").await?.prop("value").await?;
    ensure!(
        name.as_deref() == Some("Ada Lovelace"),
        "the name became {name:?}"
    );
    let role = b.find("select#member-role").await?.prop("value").await?;
    ensure!(role.as_deref() == Some("admin"), "the role became {role:?}");
    let focused = focused_id(&b).await?;
    ensure!(focused == "member-email", "the focus is on {focused:?}");
    let screens = harness::screens_dir();
    std::fs::create_dir_all(&screens)?;
    std::fs::write(
        screens.join("members-form-error.png"),
        b.screenshot().await?,
    )?;
    b.check_a11y("members-form-error").await?;

    // Corrected: the account is created and its password shown once.
    b.type_into("#member-email", email).await?;
    b.click("#add-member-submit").await?;
    let password = b.text("code#initial-password").await?.trim().to_owned();
    ensure!(
        password.len() >= 12,
        "the initial password is {} characters",
        password.len()
    );
    let warning = b.text("#password-warning").await?;
    ensure!(
        warning.contains("won't be shown again"),
        "#password-warning says {warning:?}"
    );
    // The page's script replaced the POST's history entry with the list.
    b.wait_for_path(&members_path(&ws)).await?;
    std::fs::write(screens.join("member-invited.png"), b.screenshot().await?)?;
    b.check_a11y("member-invited").await?;

    let ada = app
        .state
        .store()
        .user_by_email(email)
        .await?
        .context("the invited account is not in the store")?;
    ensure!(
        ada.must_change_password && !ada.is_org_admin,
        "the invited account is not a plain user who must choose a password"
    );

    // A reload shows the list: the password is gone, nothing created twice.
    b.client.refresh().await.context("reloading the page")?;
    b.wait_for_path(&members_path(&ws)).await?;
    let row = format!("table#members tr[data-user-id='{}']", ada.id);
    b.find(&row).await?;
    ensure!(
        !b.source().await?.contains(&password),
        "after a reload the page still shows the password"
    );
    ensure!(
        app.state
            .store()
            .list_users(&ada.organization_id)
            .await?
            .iter()
            .filter(|u| u.email == email)
            .count()
            == 1,
        "the account exists twice"
    );

    // Changing the role is confirmed in one line.
    b.find(&format!("{row} select.role-select"))
        .await?
        .select_by_value("member")
        .await?;
    b.click(&format!("{row} form.role-form button")).await?;
    b.wait_for_path(&members_path(&ws)).await?;
    let changed = flash(&b).await?;
    ensure!(
        changed == format!("{email} is now a member (was an admin)."),
        "after changing the role, #flash says {changed:?}"
    );

    // Ada logs in with the password, must choose her own, and finds the
    // workspace with the role given.
    b.log_out().await?;
    b.log_in_to_choose_password(email, &password).await?;
    b.check_a11y("password-forced").await?;
    b.choose_password(email, &password, "ada's very own password")
        .await?;
    let welcome = flash(&b).await?;
    ensure!(
        welcome.starts_with("Your password is set"),
        "after choosing a password: {welcome:?}"
    );
    b.open_workspace("Default").await?;
    let heading = b.text("h1").await?;
    ensure!(
        heading.contains("your role: member"),
        "Ada's workspace heading says {heading:?}"
    );
    ensure!(
        app.state
            .store()
            .membership(&ws.as_str().into(), &ada.id)
            .await?
            == Some(Role::Member),
        "the store disagrees about Ada's role"
    );

    // The owner removes her: confirmed in one line.
    b.log_out().await?;
    b.log_in(&app.owner.email, &app.owner.password).await?;
    b.goto(&members_path(&ws)).await?;
    b.click(&format!("{row} a.remove-member-link")).await?;
    b.click("#remove-member-confirm").await?;
    b.wait_for_path(&members_path(&ws)).await?;
    let removed = flash(&b).await?;
    ensure!(
        removed.starts_with(&format!("{email} was removed from Default")),
        "after removing, #flash says {removed:?}"
    );
    ensure!(
        b.find_all_now(&row).await?.is_empty(),
        "Ada's row is still listed"
    );
    Ok(())
}
