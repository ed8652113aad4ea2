//! What surrounds every page: error pages that keep the header and lead
//! back, the dashboard's own 404 for unknown addresses (JSON stays for
//! programs and `/v1/`), deep links through the login page (local paths
//! only), and the confirmation after logging out.

use anyhow::ensure;
use noxus_testkit::noxus_api::Role;
use noxus_testkit::TestApp;
use reqwest::header::ACCEPT;

use crate::harness;
use crate::pages::{keys_path, Browser};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_pages_keep_the_header_and_lead_back_and_unknown_addresses_get_a_page() {
    let Some(tools) = harness::tools() else {
        return;
    };
    let app = TestApp::spawn().await;
    harness::run(
        "error_pages_keep_the_header_and_lead_back_and_unknown_addresses_get_a_page",
        &tools,
        &app.base_url,
        |browser| errors_lead_back(&app, browser),
    )
    .await;
    app.stop().await;
}

async fn errors_lead_back(app: &TestApp, b: Browser) -> anyhow::Result<()> {
    // Logged out, an unknown address is a page with the way to log in.
    b.goto("/settings/nope").await?;
    ensure!(
        b.text("h1").await? == "Page not found",
        "an unknown address shows {:?}",
        b.text("h1").await?
    );
    let back = b.find("#error-back").await?;
    ensure!(
        back.attr("href").await?.as_deref() == Some("/login"),
        "the logged-out 404 page does not lead to the login page"
    );

    let viewer = app.user_with_role(Role::Viewer).await;
    b.log_in(&viewer.email, &viewer.password).await?;
    let ws = b.open_workspace("Default").await?;

    // A page the role may not open: 403 with the header and the way back.
    b.goto(&format!("{}/new", keys_path(&ws))).await?;
    ensure!(b.text("h1").await? == "Forbidden", "not the 403 page");
    let message = b.text("#error-message").await?;
    ensure!(
        message.contains("viewer") && !message.contains('`') && !message.contains("keys:"),
        "the refusal is not a sentence for people: {message:?}"
    );
    b.find("#logout").await?;
    ensure!(
        b.text("#nav-account").await? == viewer.email,
        "the 403 page's header does not name the user"
    );
    ensure!(
        b.text("#error-back").await? == "Back to API Keys",
        "the way back reads {:?}",
        b.text("#error-back").await?
    );
    b.click("#error-back").await?;
    b.wait_for_path(&keys_path(&ws)).await?;

    // An unknown address while logged in: the 404 page with the header.
    b.goto("/settings/organization/nope/deeper").await?;
    ensure!(b.text("h1").await? == "Page not found", "not the 404 page");
    b.find("#logout").await?;
    b.click("#error-back").await?;
    b.wait_for_path("/settings/organization/workspaces").await?;

    // The address of a form's target typed into the address bar.
    b.goto("/logout").await?;
    ensure!(
        b.text("h1").await? == "Not a page",
        "GET /logout is not a page"
    );
    b.find("#logout").await?;

    // A workspace that does not exist: 404 with the header.
    b.goto("/settings/organization/workspaces/ws_nope/api-keys")
        .await?;
    ensure!(b.text("h1").await? == "Not found", "not the 404 page");
    b.find("#logout").await?;

    // Programs keep the API's JSON: no Accept: text/html, or under /v1/.
    let http = reqwest::Client::new();
    let response = http
        .get(app.url("/logout"))
        .header(ACCEPT, "application/json")
        .send()
        .await?;
    ensure!(
        response.status() == 405,
        "GET /logout: {}",
        response.status()
    );
    let body: serde_json::Value = response.json().await?;
    ensure!(body["code"] == "method_not_allowed", "GET /logout: {body}");
    for (path, accept) in [
        ("/settings/nope", "*/*"),
        ("/v1/nope", "text/html,application/xhtml+xml"),
    ] {
        let response = http
            .get(app.url(path))
            .header(ACCEPT, accept)
            .send()
            .await?;
        ensure!(response.status() == 404, "{path}: {}", response.status());
        let body: serde_json::Value = response.json().await?;
        ensure!(
            body["code"] == "not_found",
            "{path} with Accept {accept}: {body}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_link_survives_the_login_page_and_only_local_paths_are_followed() {
    let Some(tools) = harness::tools() else {
        return;
    };
    let app = TestApp::spawn().await;
    harness::run(
        "a_deep_link_survives_the_login_page_and_only_local_paths_are_followed",
        &tools,
        &app.base_url,
        |browser| deep_links(&app, browser),
    )
    .await;
    app.stop().await;
}

async fn deep_links(app: &TestApp, b: Browser) -> anyhow::Result<()> {
    let member = app.user_with_role(Role::Member).await;
    let usage = format!(
        "/settings/organization/workspaces/{}/usage",
        app.workspace_id
    );
    b.goto(&usage).await?;
    let at = b.path().await?;
    ensure!(
        at.starts_with("/login?next="),
        "a logged-out deep link lands on {at}"
    );
    b.type_into("#login-form #email", &member.email).await?;
    b.type_into("#login-form #password", &member.password)
        .await?;
    b.click("#login-submit").await?;
    b.wait_for_path(&usage).await?;

    // Logging out says so, once.
    b.click("#logout").await?;
    b.wait_for_path("/login").await?;
    let flash = b.text("#flash").await?;
    ensure!(flash == "You are logged out.", "after logout: {flash:?}");
    b.goto("/login").await?;
    b.find("#login-form").await?;
    let flash = b.text("#flash").await?;
    ensure!(
        flash.is_empty(),
        "the confirmation is shown twice: {flash:?}"
    );

    // A next that leaves the site is ignored.
    for evil in [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
    ] {
        b.goto(&format!(
            "/login?next={}",
            evil.replace('/', "%2F")
                .replace('\\', "%5C")
                .replace(':', "%3A")
        ))
        .await?;
        b.type_into("#login-form #email", &member.email).await?;
        b.type_into("#login-form #password", &member.password)
            .await?;
        b.click("#login-submit").await?;
        b.wait_for_path("/settings/organization/workspaces")
            .await
            .map_err(|e| anyhow::anyhow!("next={evil}: {e:#}"))?;
        b.log_out().await?;
    }
    Ok(())
}
