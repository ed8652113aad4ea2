//! The Usage tab draws readable charts of real traffic (axis, legend, hour
//! labels, the numbers as a table a keyboard reaches), names flagged keys by
//! name and fragment, and gives sparklines a text alternative; the Audit tab
//! tells what was done as sentences about people and keys, filtered by a
//! kind of change chosen from a list, page after page.

use anyhow::{ensure, Context as _};
use noxus_testkit::noxus_api::key_format::{display_prefix, display_suffix, masked};
use noxus_testkit::noxus_api::Role;
use noxus_testkit::noxus_server::store::Actor;
use noxus_testkit::{KeyOptions, TestApp};

use crate::harness;
use crate::pages::{keys_path, Browser};

/// The traffic of the usage test, by the chart's categories.
struct Traffic {
    requests: u64,
    ok: u64,
    client_errors: u64,
    refused: u64,
    /// The owner key's requests (its sparkline's count).
    owner_requests: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_charts_have_axes_a_legend_and_a_table_of_exactly_the_traffic_sent() {
    let Some(tools) = harness::tools() else {
        return;
    };
    let app = TestApp::spawn().await;
    // A workspace of its own, so that every request in it is the test's.
    let owner = app.second_workspace("Traffic").await;
    let viewer = app.user_in(&owner.workspace_id, Role::Viewer).await;
    let (revoked_key, revoked_id) = app
        .issue_key(
            &owner.workspace_id,
            &owner.id,
            KeyOptions {
                name: Some("old deploy".to_owned()),
                ..Default::default()
            },
        )
        .await;
    // Revoked in the store: a request to revoke it would count as traffic.
    app.state
        .store()
        .revoke_key(
            &Actor::system(),
            &owner.workspace_id.as_str().into(),
            &revoked_id.as_str().into(),
        )
        .await
        .expect("revoke");

    for _ in 0..5 {
        let status = app
            .get("/v1/workflows", &owner.key)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 200);
    }
    for _ in 0..3 {
        let status = app
            .get(
                "/v1/workflows/00000000-0000-4000-8000-000000000000",
                &owner.key,
            )
            .send()
            .await
            .unwrap()
            .status();
        assert!(
            status.is_client_error() && ![401, 403, 429].contains(&status.as_u16()),
            "{status}"
        );
    }
    // Ten refusals for a missing permission make a flag.
    let viewer_client = app.client(&viewer.key);
    for _ in 0..10 {
        assert!(viewer_client.workflows().create("nope").await.is_err());
    }
    for _ in 0..2 {
        let status = app
            .get("/v1/workflows", &revoked_key)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 401);
    }
    let traffic = Traffic {
        requests: 20,
        ok: 5,
        client_errors: 3,
        refused: 12,
        owner_requests: 8,
    };
    harness::run(
        "the_usage_charts_have_axes_a_legend_and_a_table_of_exactly_the_traffic_sent",
        &tools,
        &app.base_url,
        |browser| check_usage(&app, &owner, &viewer, &traffic, browser),
    )
    .await;
    app.stop().await;
}

async fn cell(b: &Browser, css: &str) -> anyhow::Result<u64> {
    b.text(css)
        .await?
        .trim()
        .parse()
        .with_context(|| format!("`{css}` is not a count"))
}

async fn check_usage(
    app: &TestApp,
    owner: &noxus_testkit::TestUser,
    viewer: &noxus_testkit::TestUser,
    traffic: &Traffic,
    b: Browser,
) -> anyhow::Result<()> {
    b.log_in(&app.owner.email, &app.owner.password).await?;
    b.open_workspace("Traffic").await?;
    // The API Keys tab: the sparkline says how many requests it draws.
    let label = b
        .find(&format!("tr[data-key-id='{}'] svg.sparkline", owner.key_id))
        .await?
        .attr("aria-label")
        .await?;
    ensure!(
        label.as_deref()
            == Some(&format!("{} requests in the last 24 h", traffic.owner_requests)[..]),
        "the keys list's sparkline tells its count: {label:?}"
    );

    b.click("a#tab-usage").await?;
    ensure!(
        cell(&b, "#usage-total").await? == traffic.requests,
        "the 24-hour total"
    );

    // Legend, y-axis of round values, hour labels.
    let legend = b.text("#chart-day-legend").await?;
    for part in ["Successful", "Client errors", "Refused", "Server errors"] {
        ensure!(legend.contains(part), "the legend names {part}: {legend}");
    }
    let mut ticks = Vec::new();
    for t in b.find_all_now("#chart-day text.y-tick").await? {
        let text = t.text().await?;
        ticks.push(
            text.trim()
                .parse::<u64>()
                .with_context(|| format!("tick {text:?}"))?,
        );
    }
    ensure!(
        ticks.len() >= 2 && ticks[0] == 0,
        "the axis starts at 0: {ticks:?}"
    );
    let step = ticks[1];
    ensure!(
        ticks.windows(2).all(|w| w[1] - w[0] == step),
        "evenly spaced ticks: {ticks:?}"
    );
    let magnitude = 10u64.pow(step.ilog10());
    ensure!(
        [1, 2, 5].contains(&(step / magnitude)) && step % magnitude == 0,
        "a round step: {ticks:?}"
    );
    let hours = b.find_all_now("#chart-day text.x-tick").await?;
    ensure!(
        hours.len() == 8,
        "every third hour is labelled: {}",
        hours.len()
    );
    for h in &hours {
        let text = h.text().await?;
        ensure!(
            text.len() == 5 && text.ends_with(":00"),
            "an hour label reads HH:00: {text:?}"
        );
    }
    for class in ["seg-ok", "seg-client", "seg-refused"] {
        ensure!(
            !b.find_all_now(&format!("#chart-day rect.{class}"))
                .await?
                .is_empty(),
            "the chart draws the {class} part"
        );
    }
    ensure!(
        b.find_all_now("#chart-day rect.seg-server")
            .await?
            .is_empty(),
        "no server error was sent, none is drawn"
    );

    // The numbers as a table, opened from the keyboard.
    let summary = b.find("#chart-day-data summary").await?;
    summary.send_keys("\u{E007}").await?;
    let rows = b.find_all_now("#chart-day-table tbody tr").await?;
    ensure!(rows.len() == 24, "one row per hour, got {}", rows.len());
    let mut highest = 0;
    let mut summed = 0;
    for row in &rows {
        let n: u64 = row
            .find(fantoccini::Locator::Css("td.n-requests"))
            .await?
            .text()
            .await?
            .trim()
            .parse()?;
        highest = highest.max(n);
        summed += n;
    }
    ensure!(
        summed == traffic.requests,
        "the hours add up to the traffic: {summed}"
    );
    let top = *ticks.last().unwrap_or(&0);
    ensure!(
        top >= highest && top - step < highest,
        "the axis reaches the highest bar ({highest}) and no further than a step: {ticks:?}"
    );
    for (class, expected) in [
        ("n-requests", traffic.requests),
        ("n-ok", traffic.ok),
        ("n-client", traffic.client_errors),
        ("n-refused", traffic.refused),
        ("n-server", 0),
    ] {
        let seen = cell(&b, &format!("#chart-day-table tfoot td.{class}")).await?;
        ensure!(
            seen == expected,
            "{class}: the table says {seen}, the test sent {expected}"
        );
    }

    // The flag names the key by name and fragment; so does the sparkline's text.
    let fragment = masked(display_prefix(&viewer.key), display_suffix(&viewer.key));
    let flag = b
        .text(&format!("#flags li[data-key-id='{}']", viewer.key_id))
        .await?;
    ensure!(
        flag.starts_with(&format!("'test key' ({fragment}): ")) && flag.contains("403"),
        "the flag names the key by name and fragment: {flag}"
    );
    let label = b
        .find(&format!(
            "#usage-keys tr[data-key-id='{}'] svg.sparkline",
            viewer.key_id
        ))
        .await?
        .attr("aria-label")
        .await?;
    ensure!(
        label.as_deref() == Some("10 requests in the last 24 h"),
        "the usage list's sparkline tells its count: {label:?}"
    );
    let screens = harness::screens_dir();
    std::fs::create_dir_all(&screens)?;
    std::fs::write(screens.join("usage.png"), b.screenshot().await?)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_tab_tells_who_did_what_in_sentences_and_filters_by_kind() {
    let Some(tools) = harness::tools() else {
        return;
    };
    let app = TestApp::spawn().await;
    let (billing, billing_id) = app
        .issue_key(
            &app.workspace_id,
            &app.owner.id,
            KeyOptions {
                name: Some("billing service".to_owned()),
                ..Default::default()
            },
        )
        .await;
    let member = app.user_with_role(Role::Member).await;
    // More key creations than a page holds.
    let mut last = String::new();
    for n in 0..55 {
        (last, _) = app
            .issue_key(
                &app.workspace_id,
                &member.id,
                KeyOptions {
                    name: Some(format!("batch {n}")),
                    ..Default::default()
                },
            )
            .await;
    }
    let fragment = masked(display_prefix(&billing), display_suffix(&billing));
    let last_fragment = masked(display_prefix(&last), display_suffix(&last));
    harness::run(
        "the_audit_tab_tells_who_did_what_in_sentences_and_filters_by_kind",
        &tools,
        &app.base_url,
        |browser| {
            check_audit(
                &app,
                &member,
                &billing_id,
                [&fragment, &last_fragment],
                browser,
            )
        },
    )
    .await;
    app.stop().await;
}

/// The Audit tab's rows: (action, sentence).
async fn sentences(b: &Browser) -> anyhow::Result<Vec<(String, String)>> {
    Ok(audit_rows(b)
        .await?
        .into_iter()
        .map(|(_, a, s)| (a, s))
        .collect())
}

/// The Audit tab's rows: (anchor, action, sentence).
async fn audit_rows(b: &Browser) -> anyhow::Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    for row in b.find_all_now("table#audit tbody tr").await? {
        let anchor = row.attr("id").await?.unwrap_or_default();
        let action = row.attr("data-action").await?.unwrap_or_default();
        let sentence = row
            .find(fantoccini::Locator::Css("td.audit-sentence"))
            .await?
            .text()
            .await?;
        out.push((anchor, action, sentence));
    }
    Ok(out)
}

async fn check_audit(
    app: &TestApp,
    member: &noxus_testkit::TestUser,
    billing_id: &str,
    [fragment, last_fragment]: [&str; 2],
    b: Browser,
) -> anyhow::Result<()> {
    b.log_in(&app.owner.email, &app.owner.password).await?;
    let ws = b.open_workspace("Default").await?;
    b.goto(&format!("{}/{billing_id}/revoke", keys_path(&ws)))
        .await?;
    b.click("button#revoke-confirm").await?;
    b.wait_for_path(&keys_path(&ws)).await?;

    b.click("a#tab-audit").await?;
    b.find("table#audit").await?;
    let rows = sentences(&b).await?;
    ensure!(rows.len() == 50, "50 entries a page, got {}", rows.len());
    let expected = format!(
        "{} revoked key 'billing service' ({fragment}).",
        app.owner.email
    );
    ensure!(
        rows[0] == ("api_key.revoke".to_owned(), expected.clone()),
        "the newest entry tells the revocation: {:?}",
        rows[0]
    );
    let screens = harness::screens_dir();
    std::fs::create_dir_all(&screens)?;
    std::fs::write(screens.join("audit.png"), b.screenshot().await?)?;
    let table = b.text("table#audit").await?;
    for id in [billing_id, member.id.as_str(), member.key_id.as_str()] {
        ensure!(!table.contains(id), "no raw id ({id}) in the log: {table}");
    }
    ensure!(
        b.find_all_now("table#audit tr[id^='entry-']").await?.len() == 50,
        "each entry has a stable anchor"
    );

    // Filter: key revocations only, chosen from the list.
    b.click("#audit-action option[value='api_key.revoke']")
        .await?;
    b.click("#audit-filter button[type=submit]").await?;
    b.wait_for_path(&format!(
        "/settings/organization/workspaces/{ws}/audit?action=api_key.revoke"
    ))
    .await?;
    let rows = sentences(&b).await?;
    ensure!(
        rows == vec![("api_key.revoke".to_owned(), expected)],
        "only the revocation is left: {rows:?}"
    );

    // Members: the person by email, not id.
    b.click("#audit-action option[value='membership.set']")
        .await?;
    b.click("#audit-filter button[type=submit]").await?;
    b.wait_for_path(&format!(
        "/settings/organization/workspaces/{ws}/audit?action=membership.set"
    ))
    .await?;
    let rows = sentences(&b).await?;
    ensure!(
        rows.iter()
            .any(|(_, s)| s == &format!("The platform added {} as a member.", member.email)),
        "the member's addition reads as a sentence: {rows:?}"
    );

    // Paging keeps the filter: more creations than a page, 50 then the rest.
    b.click("#audit-action option[value='api_key.create']")
        .await?;
    b.click("#audit-filter button[type=submit]").await?;
    b.find("a#audit-older").await?;
    let first = audit_rows(&b).await?;
    b.click("a#audit-older").await?;
    b.find("a#audit-newest").await?;
    let second = audit_rows(&b).await?;
    ensure!(
        first.len() == 50
            && !second.is_empty()
            && first
                .iter()
                .chain(&second)
                .all(|(_, a, _)| a == "api_key.create"),
        "two pages of key creations: {} then {}",
        first.len(),
        second.len()
    );
    ensure!(
        second
            .iter()
            .all(|(anchor, ..)| first.iter().all(|(a, ..)| a != anchor)),
        "the second page goes on where the first stopped"
    );
    let newest = format!(
        "The platform created key 'batch 54' ({last_fragment}) for {}.",
        member.email
    );
    ensure!(
        first[0].2 == newest,
        "the newest creation names the key and its owner: {:?}",
        first[0]
    );
    Ok(())
}
