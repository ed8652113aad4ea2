//! Timestamps on the wire: RFC 3339 in UTC with millisecond precision; and
//! waits said as a person would ("2 minutes").

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// Formats a time for the API.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.checked_to_offset(UtcOffset::UTC).unwrap_or(t);
    let t = t
        .replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .unwrap_or(t);
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// A client's time that is not an RFC 3339 date-time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 date-time such as 2030-01-31T12:00:00Z")]
pub struct InvalidTime;

/// Parses an RFC 3339 date-time from a client (what JSON Schema's
/// `date-time` format accepts: `T` or `t` between date and time), in UTC.
/// An instant after the year 9999 in UTC (9999-12-31T23:00:00-02:00) is
/// the last representable one: as good as never.
pub fn parse_rfc3339(s: &str) -> Result<OffsetDateTime, InvalidTime> {
    if !matches!(s.as_bytes().get(10), Some(b'T' | b't')) {
        return Err(InvalidTime);
    }
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| InvalidTime)?;
    Ok(match t.checked_to_offset(UtcOffset::UTC) {
        Some(utc) => utc,
        None if t.year() > 0 => PrimitiveDateTime::MAX.assume_utc(),
        None => PrimitiveDateTime::MIN.assume_utc(),
    })
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

    use super::{human_duration, parse_rfc3339, rfc3339};

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

    #[test]
    fn client_times_are_rfc_3339_date_times_in_utc() {
        let cases = [
            ("2030-01-31T12:00:00Z", Some("2030-01-31T12:00:00Z")),
            ("2030-01-31t12:00:00z", Some("2030-01-31T12:00:00Z")),
            (
                "2030-01-31T12:00:00.123456+02:00",
                Some("2030-01-31T10:00:00.123Z"),
            ),
            (
                "9999-12-31T23:59:59-23:59",
                Some("9999-12-31T23:59:59.999Z"),
            ),
            ("0001-01-01T00:00:00+23:59", Some("0000-12-31T00:01:00Z")),
            ("2030-01-31 12:00:00Z", None),
            ("2030-01-31T12:00:00", None),
            ("2030-02-30T12:00:00Z", None),
            ("tomorrow", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse_rfc3339(text).ok().map(rfc3339).as_deref(),
                expected,
                "{text}"
            );
        }
    }
}
