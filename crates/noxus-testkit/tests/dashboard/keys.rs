//! The API Keys tab: a key created in the browser works with the SDK, is
//! shown once, and stops working when revoked there; a rotation keeps the
//! old key working during its grace period.

use anyhow::{bail, ensure, Context as _};
use noxus_testkit::noxus_api::key_format::check_key_format;
use noxus_testkit::noxus_sdk;
use noxus_testkit::{KeyOptions, TestApp};

use crate::harness;
use crate::pages::{eventually, keys_path, Browser};

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
    b.type_into("#key-name", name).await?;
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

    // Revoke in the browser: the row's link, then the confirmation.
    b.click(&format!("{row} a.revoke-link")).await?;
    b.wait_for_path(&format!("{}/{}/revoke", keys_path(&ws), me.id))
        .await?;
    b.click("button#revoke-confirm").await?;
    b.wait_for_path(&keys_path(&ws)).await?;
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

    // Back on the list: the old key is expiring, the new one active.
    b.click("a#done").await?;
    b.wait_for_path(&keys_path(&ws)).await?;
    let old_status = b.text(&format!("{} td.key-status", row(&old_id))).await?;
    ensure!(
        old_status.trim() == "expiring",
        "the old key is {old_status:?}"
    );
    let new_status = b.text(&format!("{} td.key-status", row(&new.id))).await?;
    ensure!(
        new_status.trim() == "active",
        "the new key is {new_status:?}"
    );
    Ok(())
}
