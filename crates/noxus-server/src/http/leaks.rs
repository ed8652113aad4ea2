//! `POST /v1/keys/leaks`: whoever finds a Noxus key where it should not be
//! (a public repository, a paste, a log) reports it, without a key of their
//! own, as GitHub's secret-scanning partners receive reports. Each
//! well-formed candidate that names a key that still works gets it revoked
//! within moments, off the request path ([`crate::leaks`]); the answer is
//! the same `202` whatever the candidates were, and so is its timing, so
//! that the endpoint never tells whether a key is valid.
//!
//! In order: the address's throttle (429), the body within its own small
//! cap (413), its shape (422: 1 to 100 candidates, bounded texts), each
//! candidate's format and checksum (offline: a malformed one is dropped
//! without a lookup), then the queue (503 when full, whatever the body).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::Json;
use noxus_api::limits::{
    is_valid_leak_text, LEAK_CANDIDATES_MAX, LEAK_KEY_MAX_CHARS, LEAK_REPORT_BODY_MAX_BYTES,
    LEAK_SOURCE_MAX_CHARS, LEAK_URL_MAX_CHARS,
};
use noxus_api::{LeakReport, LeakReportAccepted};
use secrecy::SecretString;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::error::{ApiError, Result};
use crate::http::extract::parse_json_object;
use crate::leaks::{Candidate, QueueFull};
use crate::state::AppState;
use crate::store::LeakLocation;

/// What every accepted report is told.
pub const ACCEPTED_DETAIL: &str = "Thank you. Every well-formed key among these that still works is revoked within seconds, and its workspace is told where it was found. This answer is the same whatever the keys were.";

/// The leak-report route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(report_leaked_keys))
}

/// Report keys found where they should not be. No key needed.
///
/// Each candidate that is a well-formed Noxus key (prefix, length and
/// checksum, checked before any lookup) and names a key that still works —
/// a rotated key in its grace period too — is revoked within seconds:
/// requests with it are refused as `revoked_api_key`, its workspace's audit
/// log says "revoked: reported leaked at <url>", and its API Keys page shows
/// where it was found until an admin dismisses the warning (or for 30
/// days). The answer is `202` with the same body whatever the candidates
/// were (no count, nothing per key), and the lookups happen after it, so
/// that reporting never tells whether a key is valid. Throttled per client
/// address; the body is at most 64 KiB.
#[utoipa::path(post, path = "/v1/keys/leaks", tag = "keys", security(()),
    request_body = LeakReport,
    responses((status = 202, description = "Accepted: every well-formed key among the candidates that still works is revoked within seconds; the same answer whatever the candidates were", body = LeakReportAccepted),
              (status = 413, description = "The body is over 64 KiB (`payload_too_large`)"),
              (status = 429, description = "Too many reports from this address (`rate_limited`); `Retry-After` says when to retry"),
              (status = 503, description = "Too many reports are waiting to be handled, whatever this one holds, or the server is at its connection limit (`service_unavailable`); `Retry-After` says when to retry")))]
async fn report_leaked_keys(
    State(state): State<AppState>,
    request: Request,
) -> Result<(StatusCode, Json<LeakReportAccepted>)> {
    let (parts, body) = request.into_parts();
    let reporter = crate::client_addr::request_client_ip(&parts, &state.config().trusted_proxies);
    if let Some(ip) = reporter {
        let now_ns = state.clock().now().mono_ns;
        if let Err(wait) = state.leak_reports().throttle().admit(ip, now_ns) {
            tracing::debug!(%ip, "too many leak reports");
            return Err(ApiError::ReportsThrottled {
                retry_after: wait.whole_seconds(),
            });
        }
        state
            .limits()
            .spent(crate::cluster_limits::leak_reports_scope(ip), 1);
    }
    let report: LeakReport = read_report(body).await?;
    check(&report)?;
    // Format and checksum only: what anyone can compute offline. Whether a
    // well-formed key is known is decided after the answer.
    let candidates = report
        .keys
        .into_iter()
        .filter(|c| noxus_api::check_key_format(&c.key).is_ok())
        .map(|c| Candidate {
            key: SecretString::from(c.key),
            location: LeakLocation {
                url: c.url,
                source: c.source,
            },
            reporter,
        })
        .collect();
    state
        .leak_reports()
        .submit(candidates)
        .map_err(|QueueFull| ApiError::ServiceUnavailable {
            detail: "Too many leak reports are waiting to be handled; retry in a moment".to_owned(),
            retry_after: 1,
            cause: anyhow::anyhow!("the leak-report queue is full"),
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(LeakReportAccepted {
            status: "accepted".to_owned(),
            detail: ACCEPTED_DETAIL.to_owned(),
        }),
    ))
}

async fn read_report(body: Body) -> Result<LeakReport> {
    let bytes = crate::body::read_limited(body, LEAK_REPORT_BODY_MAX_BYTES).await?;
    parse_json_object(&bytes)
}

/// The report's bounds (the OpenAPI document states the same, from the
/// same constants).
fn check(report: &LeakReport) -> Result<()> {
    if report.keys.is_empty() || report.keys.len() > LEAK_CANDIDATES_MAX {
        return Err(ApiError::validation(
            "keys",
            format!(
                "keys must hold 1 to {LEAK_CANDIDATES_MAX} candidates (this report has {}); send more in further reports",
                report.keys.len()
            ),
        ));
    }
    for (i, candidate) in report.keys.iter().enumerate() {
        if candidate.key.chars().count() > LEAK_KEY_MAX_CHARS {
            return Err(ApiError::validation(
                format!("keys[{i}].key"),
                format!("keys[{i}].key has more than {LEAK_KEY_MAX_CHARS} characters: a Noxus key has {}", noxus_api::key_format::KEY_LEN),
            ));
        }
        let texts = [
            ("url", candidate.url.as_deref(), LEAK_URL_MAX_CHARS),
            ("source", candidate.source.as_deref(), LEAK_SOURCE_MAX_CHARS),
        ];
        for (field, text, max) in texts {
            if text.is_some_and(|t| !is_valid_leak_text(t, max)) {
                return Err(ApiError::validation(
                    format!("keys[{i}].{field}"),
                    format!("keys[{i}].{field} must be 1 to {max} characters, without control characters"),
                ));
            }
        }
    }
    Ok(())
}
