//! Reading usage: one key, or a workspace, over the last hours, in hourly
//! or daily buckets. Pending counts are flushed first, so a read sees every
//! request answered before it.

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use noxus_api::{
    ErrorBody, KeyAddressInfo, KeyUsage, KeyUsageTotal, Page, Permission, UsageBucket,
    WorkspaceUsage,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{masked_value, AuthContext};
use crate::http::admin::{caller_in, target_workspace, visible_key};
use crate::http::error::{ApiError, Result};
use crate::http::extract::{int_query_params, ApiPath, IntParam, QueryPairs, MAX_PAGE_SIZE, PAGE};
use crate::reports::{buckets, hour_time, point, Range};
use crate::state::AppState;
use crate::store::{KeyAddress, KeyRecord, UsageCounts, WorkspaceRecord};
use crate::store::{KeyId, WorkspaceId};
use crate::time_fmt::rfc3339;

/// The usage routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(key_usage))
        .routes(routes!(key_addresses))
        .routes(routes!(workspace_usage))
}

/// Addresses in a key's usage (the first page of `/addresses`).
pub const USAGE_ADDRESSES: u64 = 20;
/// Default page size of `/addresses`.
const DEFAULT_ADDRESS_PAGE: u64 = 20;

/// `size` of `/addresses`.
const ADDRESS_SIZE: IntParam = IntParam {
    name: "size",
    min: 1,
    max: MAX_PAGE_SIZE,
    description: "Page size (default 20)",
};

/// `hours` of a usage query: up to 90 days.
const HOURS: IntParam = IntParam {
    name: "hours",
    min: 1,
    max: 24 * 90,
    description: "How far back, in hours (default 24)",
};

int_query_params!(
    /// `hours` of the usage routes.
    HoursParam = [HOURS]
);

int_query_params!(
    /// Paging of `/addresses`.
    AddressPageQuery = [PAGE, ADDRESS_SIZE]
);

fn address_info(a: KeyAddress) -> KeyAddressInfo {
    KeyAddressInfo {
        addr: a.addr,
        first_seen_at: rfc3339(a.first_seen_at),
        last_seen_at: rfc3339(a.last_seen_at),
    }
}

/// The key of a usage route, if the caller may read its usage: own keys
/// with `keys:read`, others' with `keys:manage` (or as tenant admin in
/// another workspace).
async fn readable_key(
    state: &AppState,
    auth: &AuthContext,
    workspace_id: &WorkspaceId,
    key_id: &KeyId,
) -> Result<(WorkspaceRecord, KeyRecord)> {
    let workspace = target_workspace(state, auth, workspace_id).await?;
    let (caller, _) = caller_in(state, auth, &workspace).await?;
    let key = visible_key(state, &caller, &workspace, key_id).await?;
    Ok((workspace, key))
}

/// `hours` and `bucket` of a usage query.
fn parse_range(query: &QueryPairs) -> Result<Range> {
    let hours = query.int(&HOURS)?.unwrap_or(24) as i64;
    let bucket_hours = match query
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
    Ok(Range::last(hours, bucket_hours))
}

/// Usage of one key: hourly (default, last 24 h) or daily (`bucket=day`,
/// e.g. `hours=168` for 7 days). Own keys with `keys:read`, others' with
/// `keys:manage` (`org:keys:read` in another workspace).
#[utoipa::path(get, path = "/v1/admin/groups/{id}/api-keys/{key_id}/usage", tag = "admin",
    params(("id" = String, Path, description = "Workspace id"), ("key_id" = String, Path, description = "Key id"),
           HoursParam,
           ("bucket" = inline(Option<UsageBucket>), Query, description = "Default: hour up to 48 hours, else day")),
    responses((status = 200, body = KeyUsage),
              (status = 403, description = "Needs `keys:read` for own keys, `keys:manage` for others' (`org:keys:read` in another workspace), or the workspace is not the key's (`wrong_workspace`)", body = ErrorBody)))]
async fn key_usage(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath((id, key_id)): ApiPath<(WorkspaceId, KeyId)>,
    query: QueryPairs,
) -> Result<Json<KeyUsage>> {
    let range = parse_range(&query)?;
    let (workspace, key) = readable_key(&state, &auth, &id, &key_id).await?;
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
    let (addresses, addresses_total) = state
        .store()
        .key_addresses(&key.id, 0, USAGE_ADDRESSES)
        .await?;
    let flags = crate::flags::flags_of(
        state.store(),
        auth.organization_id(),
        &[&key],
        range.from_hour,
        range.to_hour,
        state.config().max_addresses_per_key,
    )
    .await?;
    Ok(Json(KeyUsage {
        key_id: key.id.to_string(),
        name: key.name.clone(),
        bucket: range.bucket_name().to_owned(),
        from: hour_time(range.from_hour),
        to: hour_time(range.to_hour + 1),
        points,
        totals,
        last_used_at: key.last_used_at.map(rfc3339),
        last_used_addr: key.last_used_addr.clone(),
        addresses: addresses.into_iter().map(address_info).collect(),
        addresses_total,
        flags: flags.flags,
        flags_total: flags.total,
    }))
}

/// The addresses a key was used from, most recently seen first, a page at a
/// time. IPv6 addresses are counted per /64; the server remembers the most
/// recently seen (`--max-addresses-per-key`, default 100) for the usage
/// retention. Same access as the key's usage.
#[utoipa::path(get, path = "/v1/admin/groups/{id}/api-keys/{key_id}/addresses", tag = "admin",
    params(("id" = String, Path, description = "Workspace id"), ("key_id" = String, Path, description = "Key id"),
           AddressPageQuery),
    responses((status = 200, body = Page<KeyAddressInfo>),
              (status = 403, description = "Needs `keys:read` for own keys, `keys:manage` for others' (`org:keys:read` in another workspace), or the workspace is not the key's (`wrong_workspace`)", body = ErrorBody)))]
async fn key_addresses(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath((id, key_id)): ApiPath<(WorkspaceId, KeyId)>,
    query: QueryPairs,
) -> Result<Json<Page<KeyAddressInfo>>> {
    let page = query.int(&PAGE)?.unwrap_or(1);
    let size = query.int(&ADDRESS_SIZE)?.unwrap_or(DEFAULT_ADDRESS_PAGE);
    let (_, key) = readable_key(&state, &auth, &id, &key_id).await?;
    state.usage().flush(state.store()).await;
    let (addresses, total) = state
        .store()
        .key_addresses(&key.id, (page - 1) * size, size)
        .await?;
    Ok(Json(Page {
        items: addresses.into_iter().map(address_info).collect(),
        total,
        page,
        size,
        pages: total.div_ceil(size),
    }))
}

/// Usage of a workspace's keys together, and per key. Needs `keys:manage`
/// (`org:keys:read` for another workspace).
#[utoipa::path(get, path = "/v1/admin/groups/{id}/usage", tag = "admin",
    params(("id" = String, Path, description = "Workspace id"),
           HoursParam,
           ("bucket" = inline(Option<UsageBucket>), Query, description = "Default: hour up to 48 hours, else day")),
    responses((status = 200, body = WorkspaceUsage),
              (status = 403, description = "Needs `keys:manage` (`org:keys:read` for another workspace), or the workspace is not the key's (`wrong_workspace`)", body = ErrorBody)))]
async fn workspace_usage(
    State(state): State<AppState>,
    auth: AuthContext,
    ApiPath(id): ApiPath<WorkspaceId>,
    query: QueryPairs,
) -> Result<Json<WorkspaceUsage>> {
    let range = parse_range(&query)?;
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
                key_id: k.id.to_string(),
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
        state.config().max_addresses_per_key,
    )
    .await?;
    Ok(Json(WorkspaceUsage {
        workspace_id: workspace.id.into_string(),
        bucket: range.bucket_name().to_owned(),
        from: hour_time(range.from_hour),
        to: hour_time(range.to_hour + 1),
        points,
        totals,
        keys: totals_per_key,
        flags: flags.flags,
        flags_total: flags.total,
    }))
}
