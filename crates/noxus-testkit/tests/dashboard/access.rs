//! What the server refuses whatever the page shows: a viewer's forged
//! requests, and forms posted without their CSRF token.

use anyhow::{ensure, Context as _};
use noxus_testkit::noxus_api::Role;
use noxus_testkit::TestApp;
use reqwest::header::{COOKIE, LOCATION};
use reqwest::StatusCode;

use crate::harness;
use crate::pages::{keys_path, Browser};

/// 32 characters, the length of a form nonce.
const NONCE: &str = "forgedforgedforgedforgedforged00";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_create_button_and_a_forged_create_from_their_session_gets_403() {
    let Some(tools) = harness::tools() else {
        return;
    };
    let app = TestApp::spawn().await;
    harness::run(
        "a_viewer_sees_no_create_button_and_a_forged_create_from_their_session_gets_403",
        &tools,
        &app.base_url,
        |browser| viewer_is_refused(&app, browser),
    )
    .await;
    app.stop().await;
}

async fn viewer_is_refused(app: &TestApp, b: Browser) -> anyhow::Result<()> {
    let viewer = app.user_with_role(Role::Viewer).await;
    b.log_in(&viewer.email, &viewer.password).await?;
    let ws = b.open_workspace("Default").await?;
    let heading = b.text("h1").await?;
    ensure!(
        heading.contains("your role: viewer"),
        "the workspace heading says {heading:?}"
    );
    // The page has loaded (the viewer's own key is listed), without the button.
    let row = format!("tr[data-key-id='{}']", viewer.key_id);
    b.find(&row).await?;
    ensure!(
        b.find_all_now("a#create-key").await?.is_empty(),
        "a viewer is offered a#create-key"
    );
    let why = b.text("#create-key-why").await?;
    ensure!(
        why == "Viewers cannot create keys; ask an owner or admin of this workspace.",
        "instead of the button, the tab says {why:?}"
    );
    ensure!(
        b.find_all_now(&format!("{row} a.rotate-link, {row} a.revoke-link"))
            .await?
            .is_empty(),
        "a viewer is offered Rotate or Revoke for their key"
    );

    // The form's page itself is refused when typed into the address bar.
    b.goto(&format!("{}/new", keys_path(&ws))).await?;
    let title = b.text("h1").await?;
    ensure!(
        title == "Forbidden",
        "GET …/api-keys/new shows {title:?} to a viewer"
    );
    b.goto(&keys_path(&ws)).await?;

    // A forged POST with the session's valid CSRF token: refused by role.
    let csrf = b.csrf().await?;
    let status = b
        .post_from_page(
            &keys_path(&ws),
            &[("csrf", &csrf), ("name", "x"), ("nonce", NONCE)],
        )
        .await?;
    ensure!(
        status == 403,
        "a viewer's forged create got {status}, not 403"
    );
    let status = b
        .post_from_page(
            &format!("{}/{}/revoke", keys_path(&ws), viewer.key_id),
            &[("csrf", &csrf)],
        )
        .await?;
    ensure!(
        status == 403,
        "a viewer's forged revoke got {status}, not 403"
    );

    // The same create sent with the session cookie outside the browser.
    let cookie = b.session_cookie().await?;
    let response = no_redirects()?
        .post(app.url(&keys_path(&ws)))
        .header(COOKIE, format!("noxus_session={cookie}"))
        .form(&[("csrf", csrf.as_str()), ("name", "y"), ("nonce", NONCE)])
        .send()
        .await?;
    ensure!(
        response.status() == StatusCode::FORBIDDEN,
        "the create sent with the viewer's cookie got {}",
        response.status()
    );

    let keys = app
        .state
        .store()
        .list_keys(&ws.as_str().into(), Some(&viewer.id.as_str().into()))
        .await?;
    ensure!(
        keys.len() == 1 && keys[0].id == viewer.key_id,
        "the viewer has {} keys after the forged requests",
        keys.len()
    );
    ensure!(
        keys[0].revoked_at.is_none(),
        "the forged revoke revoked the key"
    );
    app.client(&viewer.key)
        .me()
        .await
        .context("the viewer's key stopped working")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_posted_without_their_csrf_token_are_refused_with_403_and_change_nothing() {
    let Some(tools) = harness::tools() else {
        return;
    };
    let app = TestApp::spawn().await;
    harness::run(
        "forms_posted_without_their_csrf_token_are_refused_with_403_and_change_nothing",
        &tools,
        &app.base_url,
        |browser| csrf_is_required(&app, browser),
    )
    .await;
    app.stop().await;
}

async fn csrf_is_required(app: &TestApp, b: Browser) -> anyhow::Result<()> {
    let workspace_names = || async {
        anyhow::Ok(
            app.state
                .store()
                .list_workspaces(&app.organization_id.as_str().into())
                .await?
                .into_iter()
                .map(|w| w.name)
                .collect::<Vec<_>>(),
        )
    };
    b.log_in(&app.owner.email, &app.owner.password).await?;

    // A person's form with its token removed (as a cross-site form would lack it).
    b.find("form#create-workspace-form").await?;
    b.client
        .execute(
            "document.querySelector('#create-workspace-form input[name=csrf]').remove();",
            vec![],
        )
        .await?;
    b.type_into("#workspace-name", "Tampered").await?;
    b.click("#create-workspace-submit").await?;
    b.wait_for_text("h1", "Forbidden")
        .await
        .context("after posting the form without its token")?;
    let message = b.text("p.error").await?;
    ensure!(
        message.contains("security token"),
        "the refusal says {message:?}"
    );
    ensure!(
        !workspace_names().await?.iter().any(|n| n == "Tampered"),
        "a workspace was created without the CSRF token"
    );

    // The create-key form from the page's script: no token, then a wrong one.
    b.goto("/settings/organization/workspaces").await?;
    let csrf = b.csrf().await?;
    let keys_url = keys_path(&app.workspace_id);
    for (label, fields) in [
        (
            "without a token",
            vec![("name", "no token"), ("nonce", NONCE)],
        ),
        (
            "with a wrong token",
            vec![
                ("csrf", "0123456789abcdef0123456789abcdef"),
                ("name", "no token"),
                ("nonce", NONCE),
            ],
        ),
    ] {
        let status = b.post_from_page(&keys_url, &fields).await?;
        ensure!(status == 403, "create-key {label} got {status}, not 403");
    }
    let created = app
        .state
        .store()
        .list_keys(&app.workspace_id.as_str().into(), None)
        .await?
        .into_iter()
        .filter(|k| k.name == "no token")
        .count();
    ensure!(
        created == 0,
        "{created} keys were created without the token"
    );

    // With the session cookie outside the browser: refused without the
    // token, accepted with it (so the 403 was the token, not the session).
    let cookie = format!("noxus_session={}", b.session_cookie().await?);
    let http = no_redirects()?;
    let post = |fields: &[(&str, &str)]| {
        http.post(app.url("/settings/organization/workspaces"))
            .header(COOKIE, &cookie)
            .form(fields)
            .send()
    };
    let refused = post(&[("name", "Forged")]).await?;
    ensure!(
        refused.status() == StatusCode::FORBIDDEN,
        "create-workspace without the token got {}",
        refused.status()
    );
    ensure!(
        !workspace_names().await?.iter().any(|n| n == "Forged"),
        "a workspace was created without the CSRF token"
    );
    let accepted = post(&[("csrf", &csrf), ("name", "Forged")]).await?;
    ensure!(
        accepted.status() == StatusCode::SEE_OTHER,
        "create-workspace with the token got {}",
        accepted.status()
    );
    ensure!(
        accepted.headers().contains_key(LOCATION),
        "create-workspace with the token did not redirect"
    );
    ensure!(
        workspace_names().await?.iter().any(|n| n == "Forged"),
        "create-workspace with the token created nothing"
    );

    // The login form's token (double-submit cookie, before any session).
    let login = no_redirects()?
        .post(app.url("/login"))
        .form(&[
            ("email", app.owner.email.as_str()),
            ("password", app.owner.password.as_str()),
        ])
        .send()
        .await?;
    ensure!(
        login.status() == StatusCode::FORBIDDEN,
        "a login without the form token got {}",
        login.status()
    );
    Ok(())
}

/// A client that shows redirects instead of following them.
fn no_redirects() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}
