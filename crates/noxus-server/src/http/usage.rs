//! Reading usage: one key, or a workspace, over the last hours, in hourly
//! or daily buckets. Pending counts are flushed first, so a read sees every
//! request answered before it.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::Json;
use noxus_api::{KeyAddressInfo, KeyUsage, KeyUsageTotal, Permission, UsagePoint, WorkspaceUsage};
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{masked_value, AuthContext};
use crate::error::{ApiError, Result};
use crate::http::admin::{caller_in, target_workspace, visible_key};
use crate::http::extract::QueryPairs;
use crate::state::AppState;
use crate::store::{UsageCounts, UsageHour};
use crate::time_fmt::rfc3339;

/// The usage routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(key_usage))
        .routes(routes!(workspace_usage))
}

/// The range and bucket of a usage query.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    /// First hour (Unix time / 3600), inclusive.
    pub from_hour: i64,
    /// Last hour, inclusive.
    pub to_hour: i64,
    /// Hours per bucket: 1 or 24.
    pub bucket_hours: i64,
}

impl Range {
    /// The last `hours` hours up to now, in buckets of `bucket_hours`.
    pub fn last(hours: i64, bucket_hours: i64) -> Self {
        let now_hour = OffsetDateTime::now_utc().unix_timestamp().div_euclid(3600);
        // Daily buckets start at midnight UTC.
        let to_hour = now_hour;
        let mut from_hour = now_hour - hours + 1;
        if bucket_hours == 24 {
            from_hour = from_hour.div_euclid(24) * 24;
        }
        Self {
            from_hour,
            to_hour,
            bucket_hours,
        }
    }

    fn parse(query: &QueryPairs) -> Result<Self> {
        let hours = query.positive("hours", 24 * 90)?.unwrap_or(24) as i64;
        let bucket_hours =
            match query
                .get("bucket")
                .unwrap_or(if hours > 48 { "day" } else { "hour" })
            {
                "hour" => 1,
                "day" => 24,
                _ => {
                    return Err(ApiError::validation(
                        "bucket",
                        "bucket must be `hour` or `day`",
                    ))
                }
            };
        Ok(Self::last(hours, bucket_hours))
    }

    fn bucket_name(self) -> &'static str {
        if self.bucket_hours == 24 {
            "day"
        } else {
            "hour"
        }
    }

    fn bucket_start(self, hour: i64) -> i64 {
        self.from_hour + (hour - self.from_hour).div_euclid(self.bucket_hours) * self.bucket_hours
    }
}

fn hour_time(hour: i64) -> String {
    OffsetDateTime::from_unix_timestamp(hour * 3600)
        .map(rfc3339)
        .unwrap_or_default()
}

fn point(start_hour: i64, c: &UsageCounts) -> UsagePoint {
    UsagePoint {
        start: hour_time(start_hour),
        requests: c.requests,
        ok: c.ok,
        client_errors: c.client_errors,
        server_errors: c.server_errors,
        unauthorized: c.unauthorized,
        forbidden: c.forbidden,
        rate_limited: c.rate_limited,
    }
}

/// Sums hours into the range's buckets (zeros included) and a total.
pub fn buckets(range: Range, hours: &[UsageHour]) -> (Vec<UsagePoint>, UsagePoint) {
    let mut sums: Vec<UsageCounts> = Vec::new();
    let mut starts = Vec::new();
    let mut start = range.from_hour;
    while start <= range.to_hour {
        starts.push(start);
        sums.push(UsageCounts::default());
        start += range.bucket_hours;
    }
    let mut total = UsageCounts::default();
    for h in hours {
        let index = ((range.bucket_start(h.hour) - range.from_hour) / range.bucket_hours) as usize;
        if let Some(sum) = sums.get_mut(index) {
            sum.add(&h.counts);
            total.add(&h.counts);
        }
    }
    let points = starts
        .iter()
        .zip(&sums)
        .map(|(s, c)| point(*s, c))
        .collect();
    (points, point(range.from_hour, &total))
}

/// Usage of one key: hourly (default, last 24 h) or daily (`bucket=day`,
/// e.g. `hours=168` for 7 days). Own keys with `keys:read`, others' with
/// `keys:manage` (`org:keys:read` in another workspace).
#[utoipa::path(get, path = "/v1/admin/groups/{id}/api-keys/{key_id}/usage", tag = "admin",
    params(("id" = String, Path, description = "Workspace id"), ("key_id" = String, Path, description = "Key id"),
           ("hours" = Option<u64>, Query, description = "How far back, in hours (default 24, at most 2160)"),
           ("bucket" = Option<String>, Query, description = "`hour` or `day` (default: hour up to 48 hours, else day)")),
    responses((status = 200, body = KeyUsage)))]
async fn key_usage(
    State(state): State<AppState>,
    auth: AuthContext,
    Path((id, key_id)): Path<(String, String)>,
    query: QueryPairs,
) -> Result<Json<KeyUsage>> {
    let range = Range::parse(&query)?;
    let workspace = target_workspace(&state, &auth, &id).await?;
    let (caller, _) = caller_in(&state, &auth, &workspace).await?;
    let key = visible_key(&state, &caller, &workspace, &key_id).await?;
    state.usage().flush(state.store()).await;
    let key = state
        .store()
        .key(&workspace.id, &key.id)
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    let hours = state
        .store()
        .usage_hours(&workspace.id, Some(&key.id), range.from_hour, range.to_hour)
        .await?;
    let (points, totals) = buckets(range, &hours);
    let addresses = state
        .store()
        .key_addresses(&key.id)
        .await?
        .into_iter()
        .map(|a| KeyAddressInfo {
            addr: a.addr,
            first_seen_at: rfc3339(a.first_seen_at),
            last_seen_at: rfc3339(a.last_seen_at),
        })
        .collect();
    Ok(Json(KeyUsage {
        key_id: key.id.clone(),
        name: key.name.clone(),
        bucket: range.bucket_name().to_owned(),
        from: hour_time(range.from_hour),
        to: hour_time(range.to_hour + 1),
        points,
        totals,
        last_used_at: key.last_used_at.map(rfc3339),
        last_used_addr: key.last_used_addr.clone(),
        addresses,
        flags: crate::flags::flags_of(
            state.store(),
            auth.organization_id(),
            &[&key],
            range.from_hour,
            range.to_hour,
        )
        .await?,
    }))
}

/// Usage of a workspace's keys together, and per key. Needs `keys:manage`
/// (`org:keys:read` for another workspace).
#[utoipa::path(get, path = "/v1/admin/groups/{id}/usage", tag = "admin",
    params(("id" = String, Path, description = "Workspace id"),
           ("hours" = Option<u64>, Query, description = "How far back, in hours (default 24)"),
           ("bucket" = Option<String>, Query, description = "`hour` or `day`")),
    responses((status = 200, body = WorkspaceUsage)))]
async fn workspace_usage(
    State(state): State<AppState>,
    auth: AuthContext,
    Path(id): Path<String>,
    query: QueryPairs,
) -> Result<Json<WorkspaceUsage>> {
    let range = Range::parse(&query)?;
    let workspace = target_workspace(&state, &auth, &id).await?;
    auth.require_in(
        &workspace.id,
        Permission::KeysManage,
        Permission::OrgKeysRead,
    )?;
    state.usage().flush(state.store()).await;
    let hours = state
        .store()
        .usage_hours(&workspace.id, None, range.from_hour, range.to_hour)
        .await?;
    let (points, totals) = buckets(range, &hours);
    let mut per_key: HashMap<&str, UsageCounts> = HashMap::new();
    for h in &hours {
        per_key.entry(h.key_id.as_str()).or_default().add(&h.counts);
    }
    let keys = state.store().list_keys(&workspace.id, None).await?;
    let mut totals_per_key: Vec<KeyUsageTotal> = keys
        .iter()
        .filter_map(|k| {
            let c = per_key.get(k.id.as_str())?;
            Some(KeyUsageTotal {
                key_id: k.id.clone(),
                name: k.name.clone(),
                value: masked_value(k),
                totals: point(range.from_hour, c),
            })
        })
        .collect();
    totals_per_key.sort_by_key(|k| std::cmp::Reverse(k.totals.requests));
    let used: Vec<&crate::store::KeyRecord> = keys
        .iter()
        .filter(|k| per_key.contains_key(k.id.as_str()) || k.last_used_at.is_some())
        .collect();
    let flags = crate::flags::flags_of(
        state.store(),
        auth.organization_id(),
        &used,
        range.from_hour,
        range.to_hour,
    )
    .await?;
    Ok(Json(WorkspaceUsage {
        workspace_id: workspace.id,
        bucket: range.bucket_name().to_owned(),
        from: hour_time(range.from_hour),
        to: hour_time(range.to_hour + 1),
        points,
        totals,
        keys: totals_per_key,
        flags,
    }))
}
