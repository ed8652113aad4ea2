//! Every main page of the dashboard passes axe-core (no violation of impact
//! critical, serious or moderate) at desktop and phone width, fits a phone
//! without sideways scrolling, and leaves a screenshot of each width in
//! `target/dashboard-screens/` ([`Browser::check_a11y`] in `axe.rs`).

use anyhow::{ensure, Context as _};
use noxus_testkit::noxus_api::Role;
use noxus_testkit::{KeyOptions, TestApp};

use crate::harness;
use crate::pages::{keys_path, members_path, Browser};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_page_passes_axe_and_fits_a_phone() {
    let Some(tools) = harness::tools() else {
        return;
    };
    let app = TestApp::spawn().await;
    harness::run(
        "every_key_page_passes_axe_and_fits_a_phone",
        &tools,
        &app.base_url,
        |browser| walk_key_pages(&app, browser),
    )
    .await;
    app.stop().await;
}

/// The API Keys tab with a few keys (one restricted, one rotated with
/// grace, one revoked), the create form, the created key, and the rotate
/// and revoke confirmations.
async fn walk_key_pages(app: &TestApp, b: Browser) -> anyhow::Result<()> {
    let key = |name: &str, restriction| KeyOptions {
        name: Some(name.to_owned()),
        restriction,
        ..Default::default()
    };
    let ws = app.workspace_id.clone();
    let (_, deploy) = app
        .issue_key(&ws, &app.owner.id, key("deploy bot", None))
        .await;
    let (_, old) = app
        .issue_key(&ws, &app.owner.id, key("old integration", None))
        .await;
    let (reader, _) = app
        .issue_key(
            &ws,
            &app.owner.id,
            key(
                "a reporting job with a rather long descriptive name",
                Some(Role::Viewer.permissions().to_vec()),
            ),
        )
        .await;
    // Traffic, so the sparklines and "last used" have something to show.
    for _ in 0..3 {
        app.client(&reader)
            .me()
            .await
            .context("the reporting key")?;
    }
    let row = |id: &str| format!("tr[data-key-id='{id}']");

    b.log_in(&app.owner.email, &app.owner.password).await?;
    b.open_workspace("Default").await?;
    b.check_a11y("keys").await?;

    b.click("a#create-key").await?;
    b.find("form#create-key-form").await?;
    b.check_a11y("key-new").await?;
    b.type_into("#key-name", "ci").await?;
    b.click("#create-key-submit").await?;
    b.find("code#new-key-value").await?;
    b.check_a11y("key-created").await?;

    b.goto(&keys_path(&ws)).await?;
    b.click(&format!("{} a.rotate-link", row(&deploy))).await?;
    b.find("form#rotate-form").await?;
    b.check_a11y("key-rotate").await?;
    b.click("button#rotate-submit").await?;
    b.find("code#new-key-value").await?;
    b.check_a11y("key-rotated").await?;

    b.goto(&keys_path(&ws)).await?;
    b.click(&format!("{} a.revoke-link", row(&old))).await?;
    b.find("form#revoke-form").await?;
    b.check_a11y("key-revoke").await?;
    b.click("button#revoke-confirm").await?;
    b.wait_for_path(&keys_path(&ws)).await?;
    let status = b.text(&format!("{} td.key-status", row(&old))).await?;
    ensure!(
        status.contains("revoked"),
        "the revoked key shows {status:?}"
    );

    // The list with every kind of row: active, rotated (still working),
    // restricted, revoked.
    b.check_a11y("keys-after-rotate-and-revoke").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_settings_page_passes_axe_and_fits_a_phone() {
    let Some(tools) = harness::tools() else {
        return;
    };
    let app = TestApp::spawn().await;
    // Traffic for the Usage tab: reads, and a viewer refused writes (a flag).
    let member = app.client_for(Role::Member).await;
    for _ in 0..5 {
        member.workflows().list().await.expect("a member reads");
    }
    let viewer = app.user_with_role(Role::Viewer).await;
    for _ in 0..12 {
        let refused = app.client(&viewer.key).workflows().create("nope").await;
        assert!(refused.is_err(), "a viewer may not create workflows");
    }
    harness::run(
        "every_settings_page_passes_axe_and_fits_a_phone",
        &tools,
        &app.base_url,
        |browser| walk_settings_pages(&app, &viewer, browser),
    )
    .await;
    app.stop().await;
}

/// Login, the organization's pages, a workspace's other tabs (Callbacks
/// with its secret shown too), the account
/// pages, and a 403 as a viewer.
async fn walk_settings_pages(
    app: &TestApp,
    viewer: &noxus_testkit::TestUser,
    b: Browser,
) -> anyhow::Result<()> {
    b.goto("/login").await?;
    b.find("form#login-form").await?;
    b.check_a11y("login").await?;

    b.log_in(&app.owner.email, &app.owner.password).await?;
    b.find("table#workspaces").await?;
    b.check_a11y("workspaces").await?;

    b.goto("/settings/organization").await?;
    b.find("#nav-workspaces").await?;
    b.check_a11y("organization").await?;

    b.goto("/settings/organization/users").await?;
    b.find("table#users").await?;
    b.check_a11y("users").await?;

    let ws = &app.workspace_id;
    b.goto(&members_path(ws)).await?;
    b.find("table#members").await?;
    b.check_a11y("members").await?;

    b.goto(&format!("/settings/organization/workspaces/{ws}/usage"))
        .await?;
    b.find("#chart-day").await?;
    b.check_a11y("usage").await?;

    b.goto(&format!("/settings/organization/workspaces/{ws}/audit"))
        .await?;
    b.find("table#audit").await?;
    b.check_a11y("audit").await?;

    // The Callbacks tab, then its secret shown (the owner just logged in:
    // no password asked).
    b.goto(&format!("/settings/organization/workspaces/{ws}/callbacks"))
        .await?;
    if std::env::var("NOXUS_TEST_BACKEND").as_deref() == Ok("postgres") {
        // The test platform on PostgreSQL has no NOXUS_KEY_PEPPER, hence no
        // secret to sign callbacks with: the tab says so.
        b.find("#callbacks-unavailable").await?;
        b.check_a11y("callbacks-unavailable").await?;
    } else {
        b.find("form#reveal-form").await?;
        b.check_a11y("callbacks").await?;
        b.click("#reveal-submit").await?;
        b.find("#signing-secret").await?;
        b.check_a11y("callbacks-secret").await?;
    }

    b.goto("/settings/account").await?;
    b.find("#account-email").await?;
    b.check_a11y("account").await?;

    b.goto("/settings/account/password").await?;
    b.find("form#password-form").await?;
    b.check_a11y("password").await?;

    // The password asked again before a sensitive action (sudo mode), and
    // that form with a wrong password.
    let token = b.session_cookie().await?;
    let digest = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(token.as_bytes()))
    };
    app.state
        .store()
        .set_session_reauth(
            &digest,
            // Past the 10-minute sudo window, within the 30-minute idle timeout
            // (the call also sets the last use).
            time::OffsetDateTime::now_utc() - time::Duration::minutes(15),
        )
        .await?;
    b.goto("/sudo?next=/settings/organization/users").await?;
    b.find("form#sudo-form").await?;
    b.check_a11y("sudo").await?;
    b.type_into("#sudo-password", "not the password").await?;
    b.click("#sudo-submit").await?;
    b.find("#sudo-error").await?;
    b.check_a11y("sudo-error").await?;

    // An error page: a viewer opening the create-key form.
    b.log_out().await?;
    b.log_in(&viewer.email, &viewer.password).await?;
    b.goto(&format!("{}/new", keys_path(ws))).await?;
    b.wait_for_text("h1", "Forbidden").await?;
    b.check_a11y("error-403").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_setup_page_passes_axe_and_fits_a_phone() {
    let Some(tools) = harness::tools() else {
        return;
    };
    // A first start without the welcome leaves the platform to the setup
    // page (with its one-time token); TestApp always sets it up, so start
    // the application directly.
    let dir = tempfile::tempdir().expect("a data directory");
    let mut config = noxus_testkit::noxus_server::Config::new(dir.path());
    config.listen = "127.0.0.1:0".parse().expect("an address");
    config.welcome = false;
    let mut application = noxus_testkit::noxus_server::Application::build(config)
        .await
        .expect("the platform starts");
    let link = {
        use secrecy::ExposeSecret as _;
        application
            .take_setup_link()
            .expect("a setup link on a first start without the welcome")
            .0
            .expose_secret()
            .to_owned()
    };
    let path = link
        .find("/setup?token=")
        .map(|at| link[at..].to_owned())
        .expect("the setup link has a token");
    let base = application.base_url().to_owned();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    harness::run(
        "the_setup_page_passes_axe_and_fits_a_phone",
        &tools,
        &base,
        |b| async move {
            b.goto(&path).await?;
            b.find("form#setup-form").await?;
            b.check_a11y("setup").await
        },
    )
    .await;
    let _ = stop.send(());
    let _ = server.await;
}

/// PENDING until the shared layout lands (issue 15, point 2): an unknown
/// dashboard URL answers the API's JSON 404 on this branch, which has no
/// `lang`, title or landmarks; the HTML 404 page with the header must pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_dashboard_url_shows_an_html_page_that_passes_axe() {
    let Some(tools) = harness::tools() else {
        return;
    };
    let app = TestApp::spawn().await;
    let owner = &app.owner;
    harness::run(
        "an_unknown_dashboard_url_shows_an_html_page_that_passes_axe",
        &tools,
        &app.base_url,
        |b| async move {
            b.log_in(&owner.email, &owner.password).await?;
            b.goto("/settings/nope").await?;
            ensure!(
                !b.find_all_now("header #logout").await?.is_empty(),
                "/settings/nope shows no dashboard header (Log out): {}",
                b.source().await?.chars().take(300).collect::<String>()
            );
            b.check_a11y("error-404").await
        },
    )
    .await;
    app.stop().await;
}
