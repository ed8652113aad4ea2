//! The W3C Trace Context `traceparent` header
//! (<https://www.w3.org/TR/trace-context/>): parsed strictly, so that a
//! request's log lines and its exported span join the caller's trace. A
//! header that does not parse is ignored, never an error.

use std::fmt;

use axum::http::{HeaderMap, HeaderName};

/// The header's name.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A trace id: 16 bytes, never all zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub u128);

/// A span id: 8 bytes, never all zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub u64);

/// Written as 32 lowercase hex digits, as in the header.
impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Written as 16 lowercase hex digits, as in the header.
impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl TraceId {
    /// 32 lowercase hex digits, not all zeros.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        (bytes.len() == 32)
            .then(|| lower_hex(bytes))
            .flatten()
            .filter(|&id| id != 0)
            .map(Self)
    }
}

impl SpanId {
    /// 16 lowercase hex digits, not all zeros.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        (bytes.len() == 16)
            .then(|| lower_hex(bytes))
            .flatten()
            .and_then(|id| u64::try_from(id).ok())
            .filter(|&id| id != 0)
            .map(Self)
    }
}

/// The caller's place in a trace, from its `traceparent` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace the request belongs to.
    pub trace_id: TraceId,
    /// The caller's span: the parent of the span that serves the request.
    pub parent_id: SpanId,
    /// The trace flags (bit 0: the caller records this trace).
    pub flags: u8,
}

impl TraceParent {
    /// Parses version `00` exactly: `00-<32 hex>-<16 hex>-<2 hex>`, lowercase,
    /// 55 characters, neither id all zeros. Other versions (including the
    /// invalid `ff`) and anything else give `None`.
    pub fn parse(value: &[u8]) -> Option<Self> {
        if value.len() != 55 || &value[..3] != b"00-" || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let trace_id = lower_hex(&value[3..35]).filter(|&id| id != 0)?;
        let parent_id = lower_hex(&value[36..52])
            .and_then(|id| u64::try_from(id).ok())
            .filter(|&id| id != 0)?;
        let flags = u8::try_from(lower_hex(&value[53..55])?).ok()?;
        Some(Self {
            trace_id: TraceId(trace_id),
            parent_id: SpanId(parent_id),
            flags,
        })
    }

    /// The request's trace parent: its one `traceparent` header, if valid.
    /// Several such headers make it ambiguous, so it is ignored.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut values = headers.get_all(&TRACEPARENT).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        Self::parse(value.as_bytes())
    }

    /// Whether the caller records this trace (the `sampled` flag).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// Lowercase hex digits (at most 32) as a number; `None` for any other byte.
fn lower_hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, &digit| {
        let value = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        Some((acc << 4) | u128::from(value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specification_example_parses() {
        let parent = TraceParent::parse(VALID.as_bytes()).expect("valid");
        assert_eq!(
            parent.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parent.parent_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(parent.flags, 1);
        assert!(parent.sampled());
        let unsampled = VALID.replace("-01", "-00");
        assert!(!TraceParent::parse(unsampled.as_bytes())
            .expect("valid")
            .sampled());
    }

    #[test]
    fn anything_but_a_strict_version_00_header_is_ignored() {
        let invalid = [
            "",
            "00",
            // Another version, and the forbidden one.
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Uppercase, signs, other characters, wrong separators.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            // Too short, too long (version 00 has nothing after the flags).
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            // Multibyte text of the right length is not hex either.
            "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
        ];
        for header in invalid {
            assert_eq!(TraceParent::parse(header.as_bytes()), None, "{header}");
        }
    }

    #[test]
    fn two_traceparent_headers_are_ignored() {
        let mut headers = HeaderMap::new();
        headers.append(TRACEPARENT.clone(), VALID.parse().expect("header value"));
        assert!(TraceParent::from_headers(&headers).is_some());
        headers.append(TRACEPARENT.clone(), VALID.parse().expect("header value"));
        assert_eq!(TraceParent::from_headers(&headers), None);
    }

    #[test]
    fn ids_round_trip_through_their_text() {
        let parent = TraceParent::parse(VALID.as_bytes()).expect("valid");
        assert_eq!(
            TraceId::parse(&parent.trace_id.to_string()),
            Some(parent.trace_id)
        );
        assert_eq!(
            SpanId::parse(&parent.parent_id.to_string()),
            Some(parent.parent_id)
        );
        assert_eq!(TraceId::parse("0".repeat(32).as_str()), None);
        assert_eq!(SpanId::parse("ABCDEF0123456789"), None);
    }
}
