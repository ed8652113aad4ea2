//! What the API and the dashboard both report: usage in buckets over a
//! range of hours, and audit rows with their actors' emails. Each front
//! end parses its own input and renders its own output; the sums and joins
//! are here, once.

use std::collections::HashMap;

use noxus_api::{AuditEntry, UsagePoint};
use time::OffsetDateTime;

use crate::store::{AuditRecord, Store, StoreResult, UsageCounts, UsageHour};
use crate::store::{OrganizationId, UserId};
use crate::time_fmt::rfc3339;

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

    /// `hour` or `day`.
    pub fn bucket_name(self) -> &'static str {
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

/// The start of an hour (Unix time / 3600), as RFC 3339.
pub fn hour_time(hour: i64) -> String {
    OffsetDateTime::from_unix_timestamp(hour * 3600)
        .map(rfc3339)
        .unwrap_or_default()
}

/// One bucket of counts starting at `start_hour`.
pub fn point(start_hour: i64, c: &UsageCounts) -> UsagePoint {
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

/// Turns rows into wire entries, with the actors' emails.
pub async fn audit_entries(
    store: &dyn Store,
    organization_id: &OrganizationId,
    rows: Vec<AuditRecord>,
) -> StoreResult<Vec<AuditEntry>> {
    let emails: HashMap<UserId, String> = store
        .list_users(organization_id)
        .await?
        .into_iter()
        .map(|u| (u.id, u.email))
        .collect();
    Ok(rows
        .into_iter()
        .map(|r| AuditEntry {
            id: r.id,
            at: rfc3339(r.created_at),
            actor_email: r
                .actor_user_id
                .as_ref()
                .and_then(|id| emails.get(id).cloned()),
            action: r.action,
            target_type: r.target_type,
            target_id: r.target_id,
            workspace_id: r.workspace_id.map(String::from),
            actor_user_id: r.actor_user_id.map(String::from),
            actor_key_id: r.actor_key_id.map(String::from),
            client_addr: r.client_addr,
            details: r.details,
        })
        .collect())
}
