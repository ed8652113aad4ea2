//! The API Keys tab: a key created in the browser works with the SDK, is
//! shown once, and stops working when revoked there; the form speaks of
//! permissions in words, keeps what was typed when something is wrong and
//! opened again with Back makes a new key; a rotation keeps the old key
//! working during its grace period and the list says which key replaced it;
//! where a user may not create keys, the tab says why.

use anyhow::{bail, ensure, Context as _};
use noxus_testkit::noxus_api::key_format::check_key_format;
use noxus_testkit::noxus_api::Role;
use noxus_testkit::noxus_sdk;
use noxus_testkit::noxus_server::members;
use noxus_testkit::noxus_server::store::Actor;
use noxus_testkit::{KeyOptions, TestApp};

use crate::harness;
use crate::pages::{eventually, keys_path, members_path, Browser};

/// The id of the element that has the keyboard focus, once the page has
/// moved it there (`autofocus` applies after the first rendering).
async fn focus_reaches(b: &Browser, id: &str) -> anyhow::Result<String> {
    let focused = || async {
        let id = b
            .client
            .execute(
                "return document.activeElement ? document.activeElement.id : '';",
                vec![],
            )
            .await?;
        anyhow::Ok(id.as_str().unwrap_or_default().to_owned())
    };
    eventually(|| async { Ok(focused().await? == id) }).await?;
    focused().await
}

/// An attribute of the element matching `css` ("" when absent).
async fn attr(b: &Browser, css: &str, name: &str) -> anyhow::Result<String> {
    Ok(b.find(css).await?.attr(name).await?.unwrap_or_default())
}

/// The current value of a form field (what the person sees in it).
async fn value(b: &Browser, css: &str) -> anyhow::Result<String> {
    Ok(b.find(css).await?.prop("value").await?.unwrap_or_default())
}

/// Saves the page as `target/dashboard-screens/<name>.png` for reviewers.
async fn save_screen(b: &Browser, name: &str) -> anyhow::Result<()> {
    let screens = harness::screens_dir();
    std::fs::create_dir_all(&screens)?;
    std::fs::write(screens.join(format!("{name}.png")), b.screenshot().await?)?;
    Ok(())
}

/// `noxus_abcd…wxyz`: how the pages show a key.
fn fragment(secret: &str) -> String {
    format!("{}…{}", &secret[..10], &secret[secret.len() - 4..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_created_in_the_browser_works_with_the_sdk_is_shown_once_and_dies_when_revoked() {
    let Some(tools) = harness::tools() else {
        return;
    };
    let app = TestApp::spawn().await;
    harness::run(
        "a_key_created_in_the_browser_works_with_the_sdk_is_shown_once_and_dies_when_revoked",
        &tools,
        &app.base_url,
        |browser| create_use_reload_and_revoke(&app, browser),
    )
    .await;
    app.stop().await;
}

async fn create_use_reload_and_revoke(app: &TestApp, b: Browser) -> anyhow::Result<()> {
    let name = "billing service (browser test)";
    b.log_in(&app.owner.email, &app.owner.password).await?;
    let ws = b.open_workspace("Default").await?;
    ensure!(
        ws == app.workspace_id,
        "the Default workspace link has id {ws}"
    );

    b.click("a#create-key").await?;
    b.wait_for_path(&format!("{}/new", keys_path(&ws))).await?;
    let first_nonce = attr(&b, "#create-key-form input[name=nonce]", "value").await?;

    // The restriction in words, grouped by what it is about, and what
    // leaving it all unticked means.
    let legends = {
        let mut texts = Vec::new();
        for legend in b.find_all_now("fieldset.permission-group legend").await? {
            texts.push(legend.text().await?);
        }
        texts
    };
    ensure!(
        ["Models", "Workflows", "API keys", "Members", "Workspace"]
            .iter()
            .all(|l| legends.iter().any(|t| t == l)),
        "the permission groups are {legends:?}"
    );
    for (id, label) in [
        ("perm-workflows-read", "Read workflows"),
        ("perm-workflows-write", "Create and change workflows"),
        (
            "perm-keys-write",
            "Create, revoke and rotate your own API keys",
        ),
    ] {
        let text = b.text(&format!("label[for={id}]")).await?;
        ensure!(text.starts_with(label), "label[for={id}] reads {text:?}");
        ensure!(
            !text.contains(':'),
            "label[for={id}] shows a code: {text:?}"
        );
    }
    let help = b.text("#key-permissions-help").await?;
    ensure!(
        help.contains("everything your role here (owner) allows, except management"),
        "the restriction's help says {help:?}"
    );

    // A blank name: the form comes back with what was chosen, the name
    // marked invalid, tied to its message, and focused.
    b.type_into("#key-name", "   ").await?;
    b.click("#key-expiry option[value='30d']").await?;
    b.click("#perm-workflows-read").await?;
    b.click("#create-key-submit").await?;
    let message = b.text("#key-name-error").await?;
    ensure!(
        message.contains("name"),
        "the name's error says {message:?}"
    );
    ensure!(
        attr(&b, "#key-name", "aria-invalid").await? == "true",
        "the blank name is not aria-invalid"
    );
    ensure!(
        attr(&b, "#key-name", "aria-describedby")
            .await?
            .split(' ')
            .any(|id| id == "key-name-error"),
        "the name field is not described by its error"
    );
    let focused = focus_reaches(&b, "key-name").await?;
    ensure!(
        focused == "key-name",
        "after the error, focus is on #{focused}"
    );
    ensure!(
        value(&b, "#key-expiry").await? == "30d",
        "the chosen expiry was lost"
    );
    ensure!(
        b.find("#perm-workflows-read").await?.is_selected().await?,
        "the ticked permission was lost"
    );

    // A tampered expiry: the name typed is kept, the expiry is the field
    // marked and focused.
    b.type_into("#key-name", name).await?;
    b.client
        .execute(
            "document.querySelector('#key-expiry option:checked').value = 'in a century';",
            vec![],
        )
        .await?;
    b.click("#create-key-submit").await?;
    b.find("#key-expiry-error").await?;
    let focused = focus_reaches(&b, "key-expiry").await?;
    ensure!(
        focused == "key-expiry",
        "after the error, focus is on #{focused}"
    );
    ensure!(
        attr(&b, "#key-expiry", "aria-invalid").await? == "true",
        "the bad expiry is not aria-invalid"
    );
    save_screen(&b, "key-form-error").await?;
    b.check_a11y("key-form-error").await?;
    ensure!(
        attr(&b, "#key-name", "aria-invalid").await?.is_empty(),
        "the name is still marked invalid"
    );
    ensure!(
        value(&b, "#key-name").await? == name,
        "the name typed was lost"
    );
    b.click("#perm-workflows-read").await?;
    b.click("#create-key-submit").await?;

    let secret = b.text("code#new-key-value").await?.trim().to_owned();
    ensure!(
        check_key_format(&secret).is_ok(),
        "code#new-key-value does not hold a well-formed key ({} characters)",
        secret.len()
    );
    let warning = b.text("p#key-warning").await?;
    ensure!(
        warning.contains("won't be shown again"),
        "p#key-warning says {warning:?}"
    );
    // One line confirms it, and the focus is on the key's Copy button.
    let flash = b.text("#flash").await?;
    ensure!(
        flash == format!("Key '{name}' created ({}).", fragment(&secret)),
        "the confirmation reads {flash:?}"
    );
    let focused = focus_reaches(&b, "copy-key").await?;
    ensure!(
        focused == "copy-key",
        "on the new key's page, focus is on #{focused}"
    );
    // The page's script replaced the POST's history entry with the keys list.
    b.wait_for_path(&keys_path(&ws)).await?;
    let created_screen = b.screenshot().await?;

    // The copy button reports what it did (copied, or selected for Ctrl+C).
    b.click("button#copy-key").await?;
    let copied = {
        let b = &b;
        eventually(|| async move { Ok(!b.text("#copy-status").await?.trim().is_empty()) }).await?
    };
    ensure!(copied, "the copy button left #copy-status empty");
    println!("copy button: {}", b.text("#copy-status").await?.trim());

    let me = app
        .client(&secret)
        .me()
        .await
        .context("the SDK refuses the key just created in the browser")?;
    ensure!(
        me.name == name,
        "the SDK reports the key's name as {:?}",
        me.name
    );
    ensure!(
        me.workspace_id == ws,
        "the key belongs to workspace {}",
        me.workspace_id
    );
    let row = format!("tr[data-key-id='{}']", me.id);

    // A reload shows the keys list: the secret is gone, the form not re-posted.
    b.client.refresh().await.context("reloading the page")?;
    b.wait_for_path(&keys_path(&ws)).await?;
    b.find(&row).await?;
    let html = b.source().await?;
    ensure!(
        !html.contains(&secret),
        "after a reload the page still contains the secret"
    );
    let hidden_middle = &secret[10..secret.len() - 4];
    ensure!(
        !html.contains(hidden_middle),
        "after a reload the page contains the secret's hidden middle"
    );
    let same_name = app
        .state
        .store()
        .list_keys(&ws.as_str().into(), None)
        .await?
        .into_iter()
        .filter(|k| k.name == name)
        .count();
    ensure!(
        same_name == 1,
        "{same_name} keys named {name:?}: the reload re-posted the form"
    );
    let status = b.text(&format!("{row} td.key-status")).await?;
    ensure!(
        status.trim() == "active",
        "the new key's status is {status:?}"
    );

    // Back: the form again, with a fresh nonce: it makes a second key
    // instead of answering "already shown".
    b.client.back().await.context("going back")?;
    b.wait_for_path(&format!("{}/new", keys_path(&ws))).await?;
    let second_nonce = attr(&b, "#create-key-form input[name=nonce]", "value").await?;
    ensure!(
        second_nonce != first_nonce,
        "the form opened again with Back has the used nonce"
    );
    let second_name = "billing service (second)";
    b.type_into("#key-name", second_name).await?;
    b.click("#create-key-submit").await?;
    let second = b.text("code#new-key-value").await?.trim().to_owned();
    ensure!(
        check_key_format(&second).is_ok() && second != secret,
        "the second submission did not show a new key"
    );
    let second_me = app
        .client(&second)
        .me()
        .await
        .context("the SDK refuses the second key")?;
    ensure!(
        second_me.name == second_name,
        "the second key is {:?}",
        second_me.name
    );
    b.goto(&keys_path(&ws)).await?;

    // Revoke in the browser: the row's link, then the confirmation.
    b.click(&format!("{row} a.revoke-link")).await?;
    b.wait_for_path(&format!("{}/{}/revoke", keys_path(&ws), me.id))
        .await?;
    b.click("button#revoke-confirm").await?;
    b.wait_for_path(&keys_path(&ws)).await?;
    let flash = b.text("#flash").await?;
    ensure!(
        flash
            == format!(
                "Key '{name}' revoked. Programs using {} are refused from now on.",
                fragment(&secret)
            ),
        "after revoking, the confirmation reads {flash:?}"
    );
    let status = b.text(&format!("{row} td.key-status")).await?;
    ensure!(
        status.trim() == "revoked",
        "after revoking, the status is {status:?}"
    );
    ensure!(
        b.find_all_now(&format!("{row} a.revoke-link, {row} a.rotate-link"))
            .await?
            .is_empty(),
        "a revoked key still offers Rotate or Revoke"
    );

    match app.client(&secret).me().await {
        Err(noxus_sdk::Error::Unauthorized(_)) => {}
        Err(other) => bail!("after revoking, the SDK got {other} instead of Unauthorized"),
        Ok(me) => bail!("after revoking, the key still works (as {:?})", me.name),
    }

    let screens = harness::screens_dir();
    std::fs::create_dir_all(&screens)?;
    let path = screens.join("key-created.png");
    std::fs::write(&path, created_screen)?;
    println!("screenshot of the created-key page: {}", path.display());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_in_the_browser_with_one_hour_of_grace_leaves_old_and_new_working() {
    let Some(tools) = harness::tools() else {
        return;
    };
    let app = TestApp::spawn().await;
    harness::run(
        "a_key_rotated_in_the_browser_with_one_hour_of_grace_leaves_old_and_new_working",
        &tools,
        &app.base_url,
        |browser| rotate_with_grace(&app, browser),
    )
    .await;
    app.stop().await;
}

async fn rotate_with_grace(app: &TestApp, b: Browser) -> anyhow::Result<()> {
    let name = "deploy bot";
    let (old_secret, old_id) = app
        .issue_key(
            &app.workspace_id,
            &app.owner.id,
            KeyOptions {
                name: Some(name.to_owned()),
                ..Default::default()
            },
        )
        .await;
    let row = |id: &str| format!("tr[data-key-id='{id}']");

    b.log_in(&app.owner.email, &app.owner.password).await?;
    let ws = b.open_workspace("Default").await?;
    b.click(&format!("{} a.rotate-link", row(&old_id))).await?;
    b.find("form#rotate-form").await?;
    b.click("#grace-1h").await?;
    ensure!(
        b.find("#grace-1h").await?.is_selected().await?,
        "#grace-1h is not selected after clicking it"
    );
    b.click("button#rotate-submit").await?;

    let new_secret = b.text("code#new-key-value").await?.trim().to_owned();
    ensure!(
        check_key_format(&new_secret).is_ok(),
        "code#new-key-value does not hold a well-formed key"
    );
    ensure!(new_secret != old_secret, "the rotation showed the old key");
    let note = b.text("p#key-note").await?;
    ensure!(
        note.contains("keeps working until"),
        "p#key-note says {note:?}"
    );

    let old = app
        .client(&old_secret)
        .me()
        .await
        .context("the old key stopped working during its grace period")?;
    ensure!(old.id == old_id, "the old key is now {}", old.id);
    let new = app
        .client(&new_secret)
        .me()
        .await
        .context("the SDK refuses the rotated key")?;
    ensure!(new.id != old_id, "the new key has the old key's id");
    ensure!(new.name == name, "the new key is named {:?}", new.name);
    ensure!(
        old.expires_at.is_some(),
        "the old key has no end of grace (expires_at)"
    );

    let flash = b.text("#flash").await?;
    ensure!(
        flash.starts_with(&format!(
            "Key '{name}' rotated: the new key is {}. The old key {} keeps working until ",
            fragment(&new_secret),
            fragment(&old_secret)
        )),
        "the rotation's confirmation reads {flash:?}"
    );

    // Back on the list: the old key says it was rotated, until when it
    // works and which key replaced it; it offers Revoke, not Rotate again.
    b.click("a#done").await?;
    b.wait_for_path(&keys_path(&ws)).await?;
    let old_status = b.text(&format!("{} td.key-status", row(&old_id))).await?;
    // "2030-01-01 12:00" from the API's "2030-01-01T12:00:00Z" (UTC).
    let until = old
        .expires_at
        .as_deref()
        .and_then(|t| t.get(..16))
        .unwrap_or_default()
        .replace('T', " ");
    let expected = format!(
        "rotated — works until {until} UTC, replaced by {}",
        fragment(&new_secret)
    );
    ensure!(
        old_status.trim() == expected,
        "the old key's status reads {old_status:?}, not {expected:?}"
    );
    ensure!(
        b.find_all_now(&format!("{} a.rotate-link", row(&old_id)))
            .await?
            .is_empty(),
        "the rotated key offers Rotate again"
    );
    b.find(&format!("{} a.revoke-link", row(&old_id))).await?;
    let new_status = b.text(&format!("{} td.key-status", row(&new.id))).await?;
    ensure!(
        new_status.trim() == "active",
        "the new key is {new_status:?}"
    );
    b.find(&format!("{} a.rotate-link", row(&new.id))).await?;
    save_screen(&b, "keys-after-rotation").await?;
    // The two rows tell themselves apart: fragments, and the new one names
    // the key it replaces.
    let old_value = b.text(&format!("{} td.key-value", row(&old_id))).await?;
    let new_value = b.text(&format!("{} td.key-value", row(&new.id))).await?;
    ensure!(
        old_value.trim() == fragment(&old_secret),
        "the old row shows {old_value:?}"
    );
    ensure!(
        new_value.contains(&fragment(&new_secret))
            && new_value.contains(&format!("replaces {}", fragment(&old_secret))),
        "the new row shows {new_value:?}"
    );

    // Revoking the old key now: its grace ends at once, the new one works.
    b.click(&format!("{} a.revoke-link", row(&old_id))).await?;
    b.click("button#revoke-confirm").await?;
    b.wait_for_path(&keys_path(&ws)).await?;
    let flash = b.text("#flash").await?;
    ensure!(
        flash.contains(&format!("Key '{name}' revoked")) && flash.contains(&fragment(&old_secret)),
        "after revoking the old key, the confirmation reads {flash:?}"
    );
    match app.client(&old_secret).me().await {
        Err(noxus_sdk::Error::Unauthorized(_)) => {}
        other => bail!("the revoked old key answers {other:?}"),
    }
    app.client(&new_secret)
        .me()
        .await
        .context("revoking the old key stopped the new one")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_a_user_may_not_create_keys_the_tab_says_why_and_the_header_their_real_role() {
    let Some(tools) = harness::tools() else {
        return;
    };
    let app = TestApp::spawn().await;
    harness::run(
        "where_a_user_may_not_create_keys_the_tab_says_why_and_the_header_their_real_role",
        &tools,
        &app.base_url,
        |browser| no_create_explained(&app, browser),
    )
    .await;
    app.stop().await;
}

async fn no_create_explained(app: &TestApp, b: Browser) -> anyhow::Result<()> {
    // A workspace someone else created: the organization admin (the owner
    // of the test platform) is not a member of it.
    let colleague = app.user_with_role(Role::Member).await;
    let team = app
        .state
        .store()
        .create_workspace(
            &Actor::system(),
            &app.organization_id.as_str().into(),
            "Team B",
            None,
            &colleague.id.as_str().into(),
        )
        .await?;

    b.log_in(&app.owner.email, &app.owner.password).await?;
    let ws = b.open_workspace("Team B").await?;
    ensure!(ws == team.id.as_str(), "Team B has id {ws}");
    let standing = b.text("#workspace-role").await?;
    ensure!(
        standing == "not a member — organization admin (acts as owner)",
        "a non-member organization admin's header says {standing:?}"
    );
    ensure!(
        b.find_all_now("a#create-key").await?.is_empty(),
        "a non-member is offered a#create-key"
    );
    let why = b.text("#create-key-why").await?;
    ensure!(
        why == "You are not a member of this workspace: add yourself in Members.",
        "the tab says {why:?}"
    );
    b.click("#add-yourself").await?;
    b.wait_for_path(&members_path(&ws)).await?;

    // A member as viewer: the header names both, the tab says why.
    members::set_role(
        &app.state,
        &Actor::system(),
        &ws.as_str().into(),
        &app.owner.id.as_str().into(),
        Role::Viewer,
    )
    .await?;
    b.goto(&keys_path(&ws)).await?;
    let standing = b.text("#workspace-role").await?;
    ensure!(
        standing == "your role: viewer — you act as owner here as organization admin",
        "an organization admin who is a viewer sees {standing:?}"
    );
    let why = b.text("#create-key-why").await?;
    ensure!(
        why.contains("viewers cannot create keys") && why.contains("change your role in Members"),
        "the tab says {why:?}"
    );
    b.goto(&format!("{}/new", keys_path(&ws))).await?;
    ensure!(
        b.text("h1").await? == "Forbidden",
        "the create form opens for an organization admin who is a viewer"
    );

    // In the workspace where they are owner: their role, and the button.
    b.goto(&keys_path(&app.workspace_id)).await?;
    let standing = b.text("#workspace-role").await?;
    ensure!(
        standing == "your role: owner (and organization admin)",
        "the owner's header says {standing:?}"
    );
    b.find("a#create-key").await?;
    ensure!(
        b.find_all_now("#create-key-why").await?.is_empty(),
        "the owner is told why they cannot create keys"
    );
    Ok(())
}
