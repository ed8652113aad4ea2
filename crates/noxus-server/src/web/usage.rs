//! The Usage tab (charts of the last 24 hours and 7 days, per-key totals,
//! unusual activity) and the Audit tab. Charts are SVG drawn on the server.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use noxus_api::{Permission, UsageFlag, UsagePoint};

use time::OffsetDateTime;

use super::keys::WorkspaceNav;
use super::layout::Layout;
use super::organization::access;
use super::session::CurrentUser;
use super::{page, WebResult};
use crate::reports::{buckets, hour_time, Range};
use crate::state::AppState;
use crate::store::{AuditQuery, UsageCounts, UsageHour};
use crate::store::{KeyId, WorkspaceId};

mod audit_text;

/// The parts of a bar, bottom to top, in the legend's order. They do not
/// overlap: "refused" (401, 403, 429) is taken out of the client errors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Breakdown {
    /// Every request (the parts, plus the rare 1xx/3xx answer).
    pub requests: u64,
    /// 2xx answers.
    pub ok: u64,
    /// 401 (revoked or expired key, owner gone), 403 (missing permission)
    /// and 429 (over the rate limit).
    pub refused: u64,
    /// The other 4xx answers (bad input, not found, conflict, ...).
    pub client_errors: u64,
    /// 5xx answers.
    pub server_errors: u64,
}

impl Breakdown {
    fn of(p: &UsagePoint) -> Self {
        let refused = p.unauthorized + p.forbidden + p.rate_limited;
        Self {
            requests: p.requests,
            ok: p.ok,
            refused,
            client_errors: p.client_errors.saturating_sub(refused),
            server_errors: p.server_errors,
        }
    }

    fn add(&mut self, other: &Self) {
        self.requests += other.requests;
        self.ok += other.ok;
        self.refused += other.refused;
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
    }

    /// The parts with their CSS class and legend label, bottom to top.
    fn parts(&self) -> [(&'static str, &'static str, u64); 4] {
        [
            ("seg-ok", "successful", self.ok),
            ("seg-client", "client errors", self.client_errors),
            ("seg-refused", "refused", self.refused),
            ("seg-server", "server errors", self.server_errors),
        ]
    }
}

/// One coloured part of a bar, in SVG units.
pub(super) struct Segment {
    pub class: &'static str,
    pub y: String,
    pub height: String,
}

/// One bar of a chart, in SVG units.
pub(super) struct Bar {
    pub x: String,
    pub width: String,
    pub segments: Vec<Segment>,
    /// The bucket as the table and the tooltip say it ("2025-06-03 14:00 UTC").
    pub label: String,
    /// The bucket's start (RFC 3339), the target of a flag's link.
    pub anchor: String,
    pub counts: Breakdown,
    /// "12 requests: 10 successful, 2 refused".
    pub summary: String,
}

/// A labelled value on the y-axis.
pub(super) struct Tick {
    pub y: String,
    pub label: String,
}

/// A label under the x-axis, centred on its bar.
pub(super) struct XLabel {
    pub x: String,
    pub text: String,
}

/// A stacked bar chart of requests per bucket (successful, client errors,
/// refused, server errors), with a y-axis of round values, labelled
/// buckets, and the same numbers as a table for keyboards and screen
/// readers.
pub(super) struct Chart {
    pub width: u32,
    pub height: u32,
    /// The plot area: left edge, bottom and right edge.
    pub left: u32,
    pub bottom: u32,
    pub right: u32,
    pub bars: Vec<Bar>,
    pub ticks: Vec<Tick>,
    pub x_labels: Vec<XLabel>,
    pub max: u64,
    pub totals: Breakdown,
    /// "Hour (UTC)" or "Day (UTC)": the table's first column.
    pub bucket: &'static str,
}

/// Plot margins: room for the y-axis labels on the left, the x-axis labels below.
const LEFT: u32 = 56;
const RIGHT: u32 = 8;
const TOP: u32 = 12;
const BELOW: u32 = 30;

/// The y-axis: a round step (1, 2 or 5 × 10ⁿ) that reaches `max` in at
/// most five steps, and the axis top (a whole number of steps, at least one).
pub(super) fn y_scale(max: u64) -> (u64, u64) {
    let mut magnitude: u64 = 1;
    let step = 'found: loop {
        for m in [1, 2, 5] {
            let step = m * magnitude;
            if step.saturating_mul(5) >= max {
                break 'found step;
            }
        }
        magnitude = magnitude.saturating_mul(10);
    };
    let top = max.div_ceil(step).max(1) * step;
    (step, top)
}

/// A tick value as written on the axis: exact, shortened to `k` or `M`
/// when the step allows (20k, 1.5M never happens: steps are round).
fn tick_label(value: u64, step: u64) -> String {
    if step >= 1_000_000 {
        format!("{}M", value / 1_000_000)
    } else if step >= 1_000 {
        format!("{}k", value / 1_000)
    } else {
        value.to_string()
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

impl Chart {
    fn of(points: &[UsagePoint], daily: bool) -> Self {
        let (width, height) = (760u32, 220u32);
        let (left, right, top, bottom) = (LEFT, width - RIGHT, TOP, height - BELOW);
        let counts: Vec<Breakdown> = points.iter().map(Breakdown::of).collect();
        let max = counts.iter().map(|c| c.requests).max().unwrap_or(0);
        let (step, axis_top) = y_scale(max);
        let plot_height = f64::from(bottom - top);
        let y_of = |v: u64| f64::from(bottom) - (v as f64 / axis_top as f64) * plot_height;
        let slot = f64::from(right - left) / points.len().max(1) as f64;
        let gap = (slot * 0.15).clamp(1.0, 8.0);
        let times: Vec<Option<OffsetDateTime>> = points
            .iter()
            .map(|p| crate::time_fmt::parse_rfc3339(&p.start).ok())
            .collect();
        let label = |i: usize| -> String {
            match times[i] {
                Some(t) if daily => format!("{} UTC", t.date()),
                Some(t) => format!("{} {:02}:00 UTC", t.date(), t.hour()),
                None => points[i].start.clone(),
            }
        };
        let bars = counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut below = 0;
                let segments = c
                    .parts()
                    .iter()
                    .filter(|(_, _, n)| *n > 0)
                    .map(|&(class, _, n)| {
                        let (y0, y1) = (y_of(below), y_of(below + n));
                        below += n;
                        Segment {
                            class,
                            y: format!("{y1:.1}"),
                            height: format!("{:.1}", y0 - y1),
                        }
                    })
                    .collect();
                let parts: Vec<String> = c
                    .parts()
                    .iter()
                    .filter(|(_, _, n)| *n > 0)
                    .map(|(_, name, n)| format!("{n} {name}"))
                    .collect();
                let summary = if parts.is_empty() {
                    "no requests".to_owned()
                } else {
                    format!(
                        "{}: {}",
                        plural(c.requests, "request", "requests"),
                        parts.join(", ")
                    )
                };
                Bar {
                    x: format!("{:.1}", f64::from(left) + i as f64 * slot + gap / 2.0),
                    width: format!("{:.1}", (slot - gap).max(1.0)),
                    segments,
                    label: label(i),
                    anchor: points[i].start.clone(),
                    counts: *c,
                    summary,
                }
            })
            .collect();
        let ticks = (0..=axis_top / step)
            .map(|n| Tick {
                y: format!("{:.1}", y_of(n * step)),
                label: tick_label(n * step, step),
            })
            .collect();
        // Every day is named; hours every three, at 00, 03, ... UTC.
        let x_labels = times
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let t = (*t)?;
                let text = if daily {
                    format!(
                        "{} {} {}",
                        &t.weekday().to_string()[..3],
                        t.day(),
                        &t.month().to_string()[..3]
                    )
                } else if t.hour() % 3 == 0 {
                    format!("{:02}:00", t.hour())
                } else {
                    return None;
                };
                Some(XLabel {
                    x: format!("{:.1}", f64::from(left) + (i as f64 + 0.5) * slot),
                    text,
                })
            })
            .collect();
        let mut totals = Breakdown::default();
        for c in &counts {
            totals.add(c);
        }
        Self {
            width,
            height,
            left,
            bottom,
            right,
            bars,
            ticks,
            x_labels,
            max,
            totals,
            bucket: if daily { "Day (UTC)" } else { "Hour (UTC)" },
        }
    }
}

/// A key's line of the last 24 hours, with its text alternative.
pub struct Sparkline {
    /// The polyline's points.
    pub points: String,
    /// Requests in the 24 hours.
    pub requests: u64,
}

impl Sparkline {
    /// "12 requests in the last 24 h": what the line says, for screen readers.
    pub fn label(&self) -> String {
        format!(
            "{} in the last 24 h",
            plural(self.requests, "request", "requests")
        )
    }
}

/// The points, so that a template may write `{{ k.sparkline }}`.
impl std::fmt::Display for Sparkline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.points)
    }
}

/// A small line of the last 24 hours, for a key's row.
pub(super) fn sparkline(hours: &[UsageHour], key_id: &KeyId, range: Range) -> Sparkline {
    let mine: Vec<UsageHour> = hours
        .iter()
        .filter(|h| &h.key_id == key_id)
        .cloned()
        .collect();
    let (points, total) = buckets(range, &mine);
    let max = points.iter().map(|p| p.requests).max().unwrap_or(0).max(1) as f64;
    let step = 96.0 / (points.len().max(2) - 1) as f64;
    let points = points
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
        .join(" ");
    Sparkline {
        points,
        requests: total.requests,
    }
}

/// An unusual-activity flag with its key named by name and fragment.
struct FlagRow {
    kind: String,
    key_id: String,
    /// "'billing service' (noxus_ENJ6…5txN)".
    key: String,
    sentence: String,
    /// The chart part the flag links to: the hour's bar in the last 24
    /// hours, else its day's bar.
    target: String,
    /// "hour" or "day".
    target_unit: &'static str,
}

struct KeyRow {
    id: String,
    name: String,
    value: String,
    requests: u64,
    errors: u64,
    last_used: String,
    sparkline: Sparkline,
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
    flags: Vec<FlagRow>,
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
    let mut flags: Vec<UsageFlag> = found.flags;
    flags.sort_by(|a, b| b.hour.cmp(&a.hour));
    let fragments: HashMap<&str, String> = keys
        .iter()
        .map(|k| {
            (
                k.id.as_str(),
                noxus_api::key_format::masked(&k.prefix, &k.suffix),
            )
        })
        .collect();
    let flags = flags
        .into_iter()
        .map(|f| {
            let hour = crate::time_fmt::parse_rfc3339(&f.hour)
                .map(|t| t.unix_timestamp().div_euclid(3600))
                .unwrap_or(day_range.from_hour);
            let (target, target_unit) = if hour >= day_range.from_hour {
                (format!("hour-{}", f.hour), "hour")
            } else {
                (
                    format!("day-{}", hour_time(hour.div_euclid(24) * 24)),
                    "day",
                )
            };
            FlagRow {
                key: match fragments.get(f.key_id.as_str()) {
                    Some(fragment) => format!("'{}' ({fragment})", f.key_name),
                    None => format!("'{}'", f.key_name),
                },
                kind: f.kind,
                key_id: f.key_id,
                sentence: f.sentence,
                target,
                target_unit,
            }
        })
        .collect();
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
            day: Chart::of(&day_points, false),
            week: Chart::of(&week_points, true),
            keys: rows,
            flags,
            flags_total,
            showing_all,
            totals,
        },
    ))
}

struct AuditRow {
    /// The row's anchor (`entry-<sequence number>`): a stable link target,
    /// never shown (the numbers have gaps: other workspaces' rows).
    anchor: String,
    at: String,
    /// The action code, for tests and scripts (`data-action`).
    action: String,
    sentence: String,
    from: String,
}

/// One choice of the action filter.
struct ActionKind {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage<'a> {
    layout: Layout,
    csrf: &'a str,
    nav: WorkspaceNav,
    rows: Vec<AuditRow>,
    kinds: Vec<ActionKind>,
    /// The chosen kind's label ("API keys revoked"), when one is chosen.
    chosen: Option<&'static str>,
    /// Link to the next (older) page, keeping the filter.
    older: Option<String>,
    /// Link back to the newest entries, when paging.
    newest: Option<String>,
}

/// Filters of the Audit tab.
#[derive(Debug, serde::Deserialize)]
pub struct AuditFilter {
    action: Option<String>,
    /// Read as text, so that a mangled link gets a sentence, not axum's
    /// plain-text 400.
    before: Option<String>,
}

/// Entries of the Audit tab per page.
const AUDIT_PAGE: u32 = 50;

/// The query string of an Audit tab link.
fn audit_query(action: &str, before: Option<i64>) -> String {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    if !action.is_empty() {
        pairs.push(("action", action.to_owned()));
    }
    if let Some(before) = before {
        pairs.push(("before", before.to_string()));
    }
    if pairs.is_empty() {
        return "?".to_owned();
    }
    format!(
        "?{}",
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    )
}

/// GET …/audit: the workspace's audit log as sentences, newest first,
/// filtered by a kind of change chosen from a list, 50 a page.
pub async fn audit_page(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<WorkspaceId>,
    Query(filter): Query<AuditFilter>,
) -> WebResult {
    let access = access(&state, &user, &id).await?;
    access.require(Permission::KeysManage)?;
    let action = filter.action.unwrap_or_default();
    let action = action.trim();
    let Some(&(action, chosen)) = audit_text::ACTION_KINDS
        .iter()
        .find(|(value, _)| *value == action)
    else {
        return Err(super::WebError::Invalid(
            "That is not a kind of change the audit log can be filtered by; choose one from the list."
                .to_owned(),
        ));
    };
    let before = match filter.before.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(text.parse::<i64>().map_err(|_| {
            super::WebError::Invalid(
                "That link to older entries is damaged; go back to the newest entries and page from there."
                    .to_owned(),
            )
        })?),
    };
    let rows = state
        .store()
        .search_audit(&AuditQuery {
            organization_id: user.user.organization_id.clone(),
            workspace_id: Some(access.workspace.id.clone()),
            action_prefix: (!action.is_empty()).then(|| action.to_owned()),
            before_id: before,
            limit: AUDIT_PAGE,
        })
        .await?;
    let older = (rows.len() == AUDIT_PAGE as usize)
        .then(|| rows.last().map(|r| audit_query(action, Some(r.id))))
        .flatten();
    let mut names = audit_text::Names {
        emails: state
            .store()
            .list_users(&user.user.organization_id)
            .await?
            .into_iter()
            .map(|u| (u.id, u.email))
            .collect(),
        keys: HashMap::new(),
    };
    // The keys the page names (target, replacement, acting key): each
    // looked up once, by primary key.
    let mut wanted: Vec<KeyId> = Vec::new();
    for r in &rows {
        if r.target_type == "api_key" {
            wanted.push(r.target_id.as_str().into());
        }
        if let Some(new) = r.details.get("new_key_id").and_then(|v| v.as_str()) {
            wanted.push(new.into());
        }
        wanted.extend(r.actor_key_id.clone());
    }
    wanted.sort();
    wanted.dedup();
    for key_id in wanted {
        if let Some(k) = state.store().key(&access.workspace.id, &key_id).await? {
            names.keys.insert(
                key_id,
                (
                    k.name.clone(),
                    noxus_api::key_format::masked(&k.prefix, &k.suffix),
                ),
            );
        }
    }
    let rows = rows
        .iter()
        .map(|r| AuditRow {
            anchor: format!("entry-{}", r.id),
            at: crate::time_fmt::rfc3339(r.created_at)
                .chars()
                .take(19)
                .collect::<String>()
                .replace('T', " "),
            action: r.action.clone(),
            sentence: audit_text::sentence(r, &names),
            from: r.client_addr.clone().unwrap_or_default(),
        })
        .collect();
    Ok(page(
        StatusCode::OK,
        &AuditPage {
            layout: Layout::of(&user),
            csrf: user.csrf(),
            nav: WorkspaceNav::of(&access, "audit"),
            rows,
            kinds: audit_text::ACTION_KINDS
                .iter()
                .map(|&(value, label)| ActionKind {
                    value,
                    label,
                    selected: value == action,
                })
                .collect(),
            chosen: (!action.is_empty()).then_some(chosen),
            older,
            newest: before.map(|_| audit_query(action, None)),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_y_axis_steps_are_round_and_reach_the_highest_bar_within_a_step() {
        assert_eq!(y_scale(0), (1, 1));
        assert_eq!(y_scale(1), (1, 1));
        assert_eq!(y_scale(5), (1, 5));
        assert_eq!(y_scale(14), (5, 15));
        assert_eq!(y_scale(100), (20, 100));
        assert_eq!(y_scale(101), (50, 150));
        assert_eq!(y_scale(12_345), (5_000, 15_000));
        assert_eq!(tick_label(15_000, 5_000), "15k");
        assert_eq!(tick_label(3_000_000, 1_000_000), "3M");
        assert_eq!(tick_label(40, 20), "40");
    }

    fn point(hour: i64, ok: u64, forbidden: u64, not_found: u64, server: u64) -> UsagePoint {
        UsagePoint {
            start: hour_time(hour),
            requests: ok + forbidden + not_found + server,
            ok,
            client_errors: forbidden + not_found,
            server_errors: server,
            forbidden,
            ..Default::default()
        }
    }

    #[test]
    fn bars_stack_parts_that_do_not_overlap_and_the_table_totals_add_up() {
        // 2025-06-02 22:00 UTC onwards, 24 hours.
        let first = 1_748_901_600 / 3600;
        let points: Vec<UsagePoint> = (0..24)
            .map(|i| {
                if i == 23 {
                    point(first + i, 5, 4, 3, 2)
                } else {
                    point(first + i, 0, 0, 0, 0)
                }
            })
            .collect();
        let chart = Chart::of(&points, false);
        assert_eq!(chart.max, 14);
        assert_eq!(
            chart.totals,
            Breakdown {
                requests: 14,
                ok: 5,
                refused: 4,
                client_errors: 3,
                server_errors: 2
            }
        );
        let labels: Vec<&str> = chart.ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["0", "5", "10", "15"]);
        let hours: Vec<&str> = chart.x_labels.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            hours,
            ["00:00", "03:00", "06:00", "09:00", "12:00", "15:00", "18:00", "21:00"]
        );
        let last = chart.bars.last().expect("24 bars");
        let classes: Vec<&str> = last.segments.iter().map(|s| s.class).collect();
        assert_eq!(
            classes,
            ["seg-ok", "seg-client", "seg-refused", "seg-server"]
        );
        let height: f64 = last
            .segments
            .iter()
            .map(|s| s.height.parse::<f64>().expect("a number"))
            .sum();
        // 14 of an axis of 15, over a plot 178 units high.
        assert!((height - 14.0 / 15.0 * 178.0).abs() < 0.3, "{height}");
        assert_eq!(
            last.summary,
            "14 requests: 5 successful, 3 client errors, 4 refused, 2 server errors"
        );
        assert_eq!(last.label, "2025-06-03 21:00 UTC");
        assert!(chart.bars[0].segments.is_empty());
        let week = Chart::of(&points[..7], true);
        assert_eq!(week.x_labels[0].text, "Mon 2 Jun");
    }

    #[test]
    fn a_sparkline_tells_its_count() {
        let one = Sparkline {
            points: String::new(),
            requests: 1,
        };
        assert_eq!(one.label(), "1 request in the last 24 h");
        let twelve = Sparkline {
            points: String::new(),
            requests: 12,
        };
        assert_eq!(twelve.label(), "12 requests in the last 24 h");
    }
}
