//! The Usage tab (charts of the last 24 hours and 7 days, per-key totals,
//! unusual activity) and the Audit tab. Charts are SVG drawn on the server.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use noxus_api::{Permission, UsageFlag, UsagePoint};

use super::keys::WorkspaceNav;
use super::layout::Layout;
use super::organization::access;
use super::session::CurrentUser;
use super::{page, WebResult};
use crate::reports::{buckets, Range};
use crate::state::AppState;
use crate::store::{AuditQuery, UsageCounts, UsageHour};
use crate::store::{KeyId, WorkspaceId};

/// One bar of a chart, in SVG units.
pub(super) struct Bar {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub errors_height: u32,
    pub label: String,
    /// The bucket's start (RFC 3339), the target of a flag's link.
    pub anchor: String,
    pub value: u64,
}

/// A bar chart of requests per bucket; the error part of each bar is drawn darker.
pub(super) struct Chart {
    pub width: u32,
    pub height: u32,
    pub bars: Vec<Bar>,
    pub max: u64,
    pub total: u64,
    pub first_label: String,
    pub last_label: String,
}

impl Chart {
    fn of(points: &[UsagePoint], width: u32, height: u32, daily: bool) -> Self {
        let max = points.iter().map(|p| p.requests).max().unwrap_or(0);
        let slot = width / (points.len().max(1) as u32);
        let label = |p: &UsagePoint| {
            let text: String = p.start.chars().take(16).collect();
            if daily {
                text[..10.min(text.len())].to_owned()
            } else {
                text.replace('T', " ") + " UTC"
            }
        };
        let scale = |v: u64| {
            if max == 0 {
                0
            } else {
                ((v as f64 / max as f64) * f64::from(height)).round() as u32
            }
        };
        let bars = points
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let h = scale(p.requests).max(u32::from(p.requests > 0));
                Bar {
                    x: i as u32 * slot + 1,
                    y: height - h,
                    width: slot.saturating_sub(2).max(1),
                    height: h,
                    errors_height: scale(p.client_errors + p.server_errors).min(h),
                    label: label(p),
                    anchor: p.start.clone(),
                    value: p.requests,
                }
            })
            .collect();
        Self {
            width,
            height,
            bars,
            max,
            total: points.iter().map(|p| p.requests).sum(),
            first_label: points.first().map(label).unwrap_or_default(),
            last_label: points.last().map(label).unwrap_or_default(),
        }
    }
}

/// A small line of the last 24 hours, for a key's row.
pub(super) fn sparkline(hours: &[UsageHour], key_id: &KeyId, range: Range) -> String {
    let mine: Vec<UsageHour> = hours
        .iter()
        .filter(|h| &h.key_id == key_id)
        .cloned()
        .collect();
    let (points, _) = buckets(range, &mine);
    let max = points.iter().map(|p| p.requests).max().unwrap_or(0).max(1) as f64;
    let step = 96.0 / (points.len().max(2) - 1) as f64;
    points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                22.0 - (p.requests as f64 / max) * 20.0
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

struct KeyRow {
    id: String,
    name: String,
    value: String,
    requests: u64,
    errors: u64,
    last_used: String,
    sparkline: String,
}

#[derive(Template)]
#[template(path = "usage.html")]
struct UsagePage<'a> {
    layout: Layout,
    csrf: &'a str,
    nav: WorkspaceNav,
    day: Chart,
    week: Chart,
    keys: Vec<KeyRow>,
    flags: Vec<UsageFlag>,
    /// Flags in the range in all (more than `flags` when the list was cut).
    flags_total: u64,
    showing_all: bool,
    totals: UsageCounts,
}

/// GET …/usage: the workspace's keys (or, without `keys:manage`, the user's own).
pub async fn usage_page(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<WorkspaceId>,
) -> WebResult {
    let access = access(&state, &user, &id).await?;
    let showing_all = access.can(Permission::KeysManage);
    state.usage().flush(state.store()).await;
    let keys = state
        .store()
        .list_keys(
            &access.workspace.id,
            (!showing_all).then_some(&user.user.id),
        )
        .await?;
    let day_range = Range::last(24, 1);
    let week_range = Range::last(7 * 24, 24);
    let all_hours = state
        .store()
        .usage_hours(
            &access.workspace.id,
            None,
            week_range.from_hour,
            day_range.to_hour,
        )
        .await?;
    let visible: HashMap<&str, ()> = keys.iter().map(|k| (k.id.as_str(), ())).collect();
    let hours: Vec<UsageHour> = all_hours
        .into_iter()
        .filter(|h| visible.contains_key(h.key_id.as_str()))
        .collect();
    let day_hours: Vec<UsageHour> = hours
        .iter()
        .filter(|h| h.hour >= day_range.from_hour)
        .cloned()
        .collect();
    let (day_points, _) = buckets(day_range, &day_hours);
    let (week_points, _) = buckets(week_range, &hours);
    let mut totals = UsageCounts::default();
    let mut per_key: HashMap<&str, UsageCounts> = HashMap::new();
    for h in &day_hours {
        totals.add(&h.counts);
        per_key.entry(h.key_id.as_str()).or_default().add(&h.counts);
    }
    let key_refs: Vec<&crate::store::KeyRecord> = keys.iter().collect();
    let found = crate::flags::flags_of(
        state.store(),
        &user.user.organization_id,
        &key_refs,
        week_range.from_hour,
        day_range.to_hour,
        state.config().max_addresses_per_key,
    )
    .await?;
    let flags_total = found.total;
    let mut flags = found.flags;
    flags.sort_by(|a, b| b.hour.cmp(&a.hour));
    let mut rows: Vec<KeyRow> = keys
        .iter()
        .map(|k| {
            let c = per_key.get(k.id.as_str()).copied().unwrap_or_default();
            KeyRow {
                id: k.id.to_string(),
                name: k.name.clone(),
                value: noxus_api::key_format::masked(&k.prefix, &k.suffix),
                requests: c.requests,
                errors: c.client_errors + c.server_errors,
                last_used: k.last_used_at.map_or_else(
                    || "never".to_owned(),
                    |t| {
                        crate::time_fmt::rfc3339(t)
                            .chars()
                            .take(16)
                            .collect::<String>()
                            .replace('T', " ")
                    },
                ),
                sparkline: sparkline(&day_hours, &k.id, day_range),
            }
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.requests));
    Ok(page(
        StatusCode::OK,
        &UsagePage {
            layout: Layout::of(&user),
            csrf: user.csrf(),
            nav: WorkspaceNav::of(&access, "usage"),
            day: Chart::of(&day_points, 720, 160, false),
            week: Chart::of(&week_points, 720, 160, true),
            keys: rows,
            flags,
            flags_total,
            showing_all,
            totals,
        },
    ))
}

struct AuditRow {
    id: i64,
    at: String,
    action: String,
    target: String,
    actor: String,
    from: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage<'a> {
    layout: Layout,
    csrf: &'a str,
    nav: WorkspaceNav,
    rows: Vec<AuditRow>,
    action: String,
    next_before: Option<i64>,
}

/// Filters of the Audit tab.
#[derive(Debug, serde::Deserialize)]
pub struct AuditFilter {
    action: Option<String>,
    before: Option<i64>,
}

/// GET …/audit: the workspace's audit log, filterable by action, 50 a page.
pub async fn audit_page(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<WorkspaceId>,
    Query(filter): Query<AuditFilter>,
) -> WebResult {
    let access = access(&state, &user, &id).await?;
    access.require(Permission::KeysManage)?;
    let action = filter
        .action
        .unwrap_or_default()
        .trim()
        .chars()
        .take(100)
        .collect::<String>();
    let rows = state
        .store()
        .search_audit(&AuditQuery {
            organization_id: user.user.organization_id.clone(),
            workspace_id: Some(access.workspace.id.clone()),
            action_prefix: (!action.is_empty()).then(|| action.clone()),
            before_id: filter.before,
            limit: 50,
        })
        .await?;
    let next_before = (rows.len() == 50)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let entries = crate::reports::audit_entries(state.store(), &user.user.organization_id, rows)
        .await
        .map_err(|e| super::WebError::Internal(anyhow::anyhow!("{e}")))?;
    let rows = entries
        .into_iter()
        .map(|e| {
            let name = e
                .details
                .get("name")
                .and_then(|n| n.as_str())
                .map(|n| format!(" \"{n}\""))
                .unwrap_or_default();
            AuditRow {
                id: e.id,
                at: e.at.chars().take(19).collect::<String>().replace('T', " "),
                action: e.action,
                target: format!("{} {}{name}", e.target_type, e.target_id),
                actor: e.actor_email.unwrap_or_else(|| "platform".to_owned()),
                from: e.client_addr.unwrap_or_default(),
            }
        })
        .collect();
    Ok(page(
        StatusCode::OK,
        &AuditPage {
            layout: Layout::of(&user),
            csrf: user.csrf(),
            nav: WorkspaceNav::of(&access, "audit"),
            rows,
            action,
            next_before,
        },
    ))
}
