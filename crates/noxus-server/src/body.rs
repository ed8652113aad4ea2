//! Reading a request body within a limit, for the API's JSON and the
//! dashboard's forms alike.

use axum::body::Body;
use http_body_util::BodyExt;

/// Read at most this much of an oversized body before answering 413, so that
/// clients which send the whole body before reading get a clean answer.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Over the limit (413).
    #[error("The request body is {seen} bytes or more; the limit is {limit} bytes")]
    TooLarge {
        /// Bytes seen before giving up.
        seen: usize,
        /// The limit.
        limit: usize,
    },
    /// The connection failed or the body timed out while it was read.
    #[error("The request body could not be read: {0}")]
    Unreadable(String),
}

/// The whole body, if it is at most `limit` bytes.
pub async fn read_limited(mut body: Body, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut buffer = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Unreadable(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen > limit {
            if seen > DRAIN_LIMIT {
                break;
            }
            continue;
        }
        buffer.extend_from_slice(&data);
    }
    if seen > limit {
        return Err(BodyError::TooLarge { seen, limit });
    }
    Ok(buffer)
}
