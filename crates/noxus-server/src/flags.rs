//! Unusual activity of a key, computed from its stored usage when it is
//! read. Five signals, each explained in one sentence:
//!
//! - **new address**: a use from an address never seen for that key before
//!   (the key's very first address is not flagged);
//! - **spike**: an hour with more than 5× the key's average over the 7 days
//!   before it, and at least [`SPIKE_MIN_REQUESTS`] requests;
//! - **forbidden burst**: an hour with at least [`FORBIDDEN_BURST`] answers
//!   403 (someone probing what the key may do);
//! - **used after demotion**: the key was used after its owner's role in the
//!   workspace was lowered;
//! - **reported leaked**: someone reported finding the key where it should
//!   not be (`POST /v1/keys/leaks`), which revoked it; the flag stays after
//!   the dashboard's warning is dismissed.

use noxus_api::{Role, UsageFlag};
use time::OffsetDateTime;

use crate::store::OrganizationId;
use crate::store::{
    AuditQuery, AuditRecord, KeyAddress, KeyLeakRecord, KeyRecord, LeakQuery, Store, StoreResult,
    UsageHour,
};
use crate::time_fmt::rfc3339;

/// A spike needs at least this many requests in the hour.
pub const SPIKE_MIN_REQUESTS: u64 = 100;
/// A spike is more than this many times the trailing hourly average.
pub const SPIKE_FACTOR: u64 = 5;
/// Hours of history the spike compares against.
pub const SPIKE_WINDOW_HOURS: i64 = 7 * 24;
/// 403s in one hour that make a burst.
pub const FORBIDDEN_BURST: u64 = 10;
/// Earlier addresses a "new address" sentence names; the rest are counted.
pub const NAMED_EARLIER_ADDRESSES: usize = 5;
/// Flags one view lists at most (the newest); the total is reported apart.
pub const MAX_FLAGS: usize = 100;

/// The flags of a view: the newest [`MAX_FLAGS`], oldest first, and how
/// many there were in all.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// The newest flags, oldest first.
    pub flags: Vec<UsageFlag>,
    /// How many flags the range has in all.
    pub total: u64,
}

fn hour_start(hour: i64) -> String {
    OffsetDateTime::from_unix_timestamp(hour * 3600)
        .map(rfc3339)
        .unwrap_or_default()
}

fn short(t: OffsetDateTime) -> String {
    rfc3339(t)
        .chars()
        .take(16)
        .collect::<String>()
        .replace('T', " ")
        + " UTC"
}

fn flag(kind: &str, key: &KeyRecord, hour: i64, sentence: String) -> UsageFlag {
    UsageFlag {
        kind: kind.to_owned(),
        key_id: key.id.to_string(),
        key_name: key.name.clone(),
        sentence,
        hour: hour_start(hour),
    }
}

/// The flags of `keys` (all of one workspace) in hours `[from_hour,
/// to_hour]`: the newest [`MAX_FLAGS`], oldest first. The workspace's role
/// changes are read once; each key's addresses (at most
/// `max_addresses_per_key`, as the store keeps them) once.
pub async fn flags_of(
    store: &dyn Store,
    organization_id: &OrganizationId,
    keys: &[&KeyRecord],
    from_hour: i64,
    to_hour: i64,
    max_addresses_per_key: usize,
) -> StoreResult<Flags> {
    let Some(first) = keys.first() else {
        return Ok(Flags::default());
    };
    let role_changes = store
        .search_audit(&AuditQuery {
            organization_id: organization_id.to_owned(),
            workspace_id: Some(first.workspace_id.clone()),
            action_prefix: Some("membership.set".to_owned()),
            before_id: None,
            limit: 1000,
        })
        .await?;
    let leaks = store
        .key_leaks(&LeakQuery {
            workspace_id: first.workspace_id.clone(),
            since: OffsetDateTime::from_unix_timestamp(from_hour.saturating_mul(3600))
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            include_dismissed: true,
            limit: MAX_FLAGS as u32,
        })
        .await?;
    let mut flags = Vec::new();
    for key in keys {
        let history = store
            .usage_hours(
                &key.workspace_id,
                Some(&key.id),
                from_hour - SPIKE_WINDOW_HOURS,
                to_hour,
            )
            .await?;
        let (mut addresses, _) = store
            .key_addresses(&key.id, 0, max_addresses_per_key as u64)
            .await?;
        new_addresses(key, &mut addresses, from_hour, to_hour, &mut flags);
        spikes(key, &history, from_hour, &mut flags);
        forbidden_bursts(key, &history, from_hour, &mut flags);
        used_after_demotion(&role_changes, key, from_hour, &mut flags);
        reported_leaked(&leaks, key, to_hour, &mut flags);
    }
    // A stable sort: flags of one hour stay in the order they were found.
    flags.sort_by(|a, b| a.hour.cmp(&b.hour));
    let total = flags.len() as u64;
    let newest = flags.split_off(flags.len().saturating_sub(MAX_FLAGS));
    Ok(Flags {
        flags: newest,
        total,
    })
}

/// One flag per address first seen in the range, except the key's very
/// first. Sorting once makes the addresses seen before each one a prefix of
/// the list: O(n log n) in all, and each sentence names at most
/// [`NAMED_EARLIER_ADDRESSES`] of them (the first ones) and counts the rest.
fn new_addresses(
    key: &KeyRecord,
    addresses: &mut [KeyAddress],
    from_hour: i64,
    to_hour: i64,
    flags: &mut Vec<UsageFlag>,
) {
    addresses.sort_by(|a, b| {
        a.first_seen_at
            .cmp(&b.first_seen_at)
            .then_with(|| a.addr.cmp(&b.addr))
    });
    // Start of the run of addresses first seen at the same time as the current one.
    let mut earlier = 0;
    for i in 0..addresses.len() {
        if i > 0 && addresses[i].first_seen_at > addresses[i - 1].first_seen_at {
            earlier = i;
        }
        let a = &addresses[i];
        let hour = a.first_seen_at.unix_timestamp().div_euclid(3600);
        if earlier == 0 || !(from_hour..=to_hour).contains(&hour) {
            continue;
        }
        let named: Vec<&str> = addresses[..earlier.min(NAMED_EARLIER_ADDRESSES)]
            .iter()
            .map(|b| b.addr.as_str())
            .collect();
        let others = earlier - named.len();
        let before = match others {
            0 => named.join(", "),
            1 => format!("{} and 1 other", named.join(", ")),
            n => format!("{} and {n} others", named.join(", ")),
        };
        flags.push(flag(
            "new_address",
            key,
            hour,
            format!(
                "First use from {} at {}; until then this key had been used only from {before}.",
                a.addr,
                short(a.first_seen_at),
            ),
        ));
    }
}

fn spikes(key: &KeyRecord, history: &[UsageHour], from_hour: i64, flags: &mut Vec<UsageFlag>) {
    for h in history
        .iter()
        .filter(|h| h.hour >= from_hour && h.counts.requests >= SPIKE_MIN_REQUESTS)
    {
        let window = (h.hour - SPIKE_WINDOW_HOURS)..h.hour;
        let before: u64 = history
            .iter()
            .filter(|p| window.contains(&p.hour))
            .map(|p| p.counts.requests)
            .sum();
        let average = before as f64 / SPIKE_WINDOW_HOURS as f64;
        if h.counts.requests as f64 > average * SPIKE_FACTOR as f64 {
            flags.push(flag(
                "spike",
                key,
                h.hour,
                format!(
                    "{} requests in the hour from {}, more than {SPIKE_FACTOR}× this key's average of {average:.1} an hour over the week before.",
                    h.counts.requests,
                    hour_start(h.hour).chars().take(16).collect::<String>().replace('T', " ")
                ),
            ));
        }
    }
}

fn forbidden_bursts(
    key: &KeyRecord,
    history: &[UsageHour],
    from_hour: i64,
    flags: &mut Vec<UsageFlag>,
) {
    for h in history
        .iter()
        .filter(|h| h.hour >= from_hour && h.counts.forbidden >= FORBIDDEN_BURST)
    {
        flags.push(flag(
            "forbidden_burst",
            key,
            h.hour,
            format!(
                "{} requests refused for missing permissions (403) in the hour from {}: someone may be probing what this key can do.",
                h.counts.forbidden,
                hour_start(h.hour).chars().take(16).collect::<String>().replace('T', " ")
            ),
        ));
    }
}

fn used_after_demotion(
    changes: &[AuditRecord],
    key: &KeyRecord,
    from_hour: i64,
    flags: &mut Vec<UsageFlag>,
) {
    let Some(last_used) = key.last_used_at else {
        return;
    };
    let demotion = changes.iter().find(|c| {
        let role = |field: &str| c.details.get(field).and_then(|v| v.as_str()).and_then(|r| r.parse::<Role>().ok());
        c.target_id == key.user_id && matches!((role("previous_role"), role("role")), (Some(before), Some(after)) if after < before)
    });
    if let Some(change) = demotion {
        let hour = last_used.unix_timestamp().div_euclid(3600);
        if change.created_at < last_used && hour >= from_hour {
            let role = |field: &str| {
                change
                    .details
                    .get(field)
                    .and_then(|v| v.as_str())
                    .unwrap_or("?")
                    .to_owned()
            };
            flags.push(flag(
                "used_after_demotion",
                key,
                hour,
                format!(
                    "Used at {} although its owner was demoted from {} to {} at {}; check that whoever holds it should still have it.",
                    short(last_used),
                    role("previous_role"),
                    role("role"),
                    short(change.created_at)
                ),
            ));
        }
    }
}

fn reported_leaked(
    leaks: &[KeyLeakRecord],
    key: &KeyRecord,
    to_hour: i64,
    flags: &mut Vec<UsageFlag>,
) {
    for leak in leaks.iter().filter(|l| l.key_id == key.id) {
        let hour = leak.reported_at.unix_timestamp().div_euclid(3600);
        if hour > to_hour {
            continue;
        }
        // The reporter's text, as it came: pages escape it, the API quotes it.
        let by = leak
            .location
            .source
            .as_deref()
            .map_or_else(String::new, |source| format!(" by {source}"));
        let at = leak.location.url.as_deref().map_or_else(
            || " (where it was found was not said)".to_owned(),
            |url| format!(": found at {url}"),
        );
        flags.push(flag(
            "reported_leaked",
            key,
            hour,
            format!(
                "Reported leaked{by} at {}{at}; the key was revoked at once.",
                short(leak.reported_at),
            ),
        ));
    }
}
