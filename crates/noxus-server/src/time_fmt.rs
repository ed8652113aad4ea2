//! Timestamps on the wire: RFC 3339 in UTC with millisecond precision; and
//! waits said as a person would ("2 minutes").

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Formats a time for the API.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t);
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Parses an RFC 3339 time from a client.
pub fn parse_rfc3339(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
    OffsetDateTime::parse(s, &Rfc3339)
}

/// A wait as a person says it, rounded up: "1 second", "40 seconds",
/// "2 minutes" (from one minute on), "1 hour" (from one hour on).
pub fn human_duration(wait: std::time::Duration) -> String {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let (n, unit) = if seconds < 60 {
        (seconds.max(1), "second")
    } else if seconds < 3600 {
        (seconds.div_ceil(60), "minute")
    } else {
        (seconds.div_ceil(3600), "hour")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::human_duration;

    #[test]
    fn waits_read_as_a_person_would_say_them() {
        assert_eq!(human_duration(Duration::from_millis(200)), "1 second");
        assert_eq!(human_duration(Duration::from_secs(1)), "1 second");
        assert_eq!(human_duration(Duration::from_millis(1500)), "2 seconds");
        assert_eq!(human_duration(Duration::from_secs(59)), "59 seconds");
        assert_eq!(human_duration(Duration::from_secs(60)), "1 minute");
        assert_eq!(human_duration(Duration::from_secs(61)), "2 minutes");
        assert_eq!(human_duration(Duration::from_secs(900)), "15 minutes");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1 hour");
    }
}
