//! The Usage tab draws real bars from real traffic, and the Audit tab lists
//! what was done in the browser.

use anyhow::{ensure, Context as _};
use noxus_testkit::noxus_api::Role;
use noxus_testkit::TestApp;

use crate::harness;
use crate::pages::Browser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_tab_draws_bars_from_the_traffic_of_the_test() {
    let Some(tools) = harness::tools() else {
        return;
    };
    let app = TestApp::spawn().await;
    // Real traffic: a member's key reads, a viewer's key is refused a write.
    let member = app.client_for(Role::Member).await;
    for _ in 0..30 {
        member
            .workflows()
            .list()
            .await
            .expect("a member reads workflows");
    }
    let viewer = app.client_for(Role::Viewer).await;
    for _ in 0..12 {
        assert!(viewer.workflows().create("nope").await.is_err());
    }
    harness::run(
        "the_usage_tab_draws_bars_from_the_traffic_of_the_test",
        &tools,
        &app.base_url,
        |browser| check_usage(&app, browser),
    )
    .await;
    app.stop().await;
}

async fn check_usage(app: &TestApp, b: Browser) -> anyhow::Result<()> {
    b.log_in(&app.owner.email, &app.owner.password).await?;
    b.open_workspace("Default").await?;
    b.click("a#tab-usage").await?;
    let total: u64 = b
        .text("#usage-total")
        .await?
        .trim()
        .parse()
        .context("the 24-hour total")?;
    ensure!(
        total >= 42,
        "the total counts the test's 42 requests, got {total}"
    );
    let bars = b.find_all_now("#chart-day rect.bar").await?;
    ensure!(bars.len() == 24, "one bar per hour, got {}", bars.len());
    let mut drawn = 0;
    for bar in &bars {
        let height: f64 = bar
            .attr("height")
            .await?
            .unwrap_or_default()
            .parse()
            .unwrap_or(0.0);
        if height > 0.0 {
            drawn += 1;
        }
    }
    ensure!(drawn >= 1, "the current hour's bar has a height");
    ensure!(
        !b.find_all_now("#chart-day rect.bar-errors")
            .await?
            .is_empty(),
        "the 403s show as errors"
    );
    let flags = b.text("#flags").await?;
    ensure!(
        flags.contains("403"),
        "the burst of 403s is flagged: {flags}"
    );
    let screens = harness::screens_dir();
    std::fs::create_dir_all(&screens)?;
    std::fs::write(screens.join("usage.png"), b.screenshot().await?)?;

    b.click("a#tab-audit").await?;
    let audit = b.text("table#audit").await?;
    ensure!(
        audit.contains("api_key.create"),
        "the audit tab lists key creations: {audit}"
    );
    Ok(())
}
