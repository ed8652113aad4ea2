//! Exit codes that mean something, and errors printed as `error: ...` on
//! stderr with their whole cause chain.

use std::process::ExitCode;

use noxus_sdk::Error as SdkError;

use crate::output::Output;

/// Success.
pub const OK: u8 = 0;
/// Anything not listed below.
pub const OTHER: u8 = 1;
/// Bad usage or configuration (missing or malformed key, bad URL...).
pub const CONFIG: u8 = 2;
/// The platform refused the key (401).
pub const UNAUTHORIZED: u8 = 3;
/// The key lacks a permission (403).
pub const FORBIDDEN: u8 = 4;
/// The platform could not be reached, or did not answer in time.
pub const NETWORK: u8 = 5;
/// No such object (404).
pub const NOT_FOUND: u8 = 6;
/// A run that was waited for failed (`workflows run --wait`).
pub const RUN_FAILED: u8 = 7;
/// A run that was waited for was stopped before it ended.
pub const RUN_STOPPED: u8 = 8;
/// `keys scan` found at least one Noxus key (reported or not).
pub const KEYS_FOUND: u8 = 9;

/// A failed command: what to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    error: anyhow::Error,
    request_id: Option<String>,
    /// Already reported (e.g. as JSON on stdout): print nothing more.
    silent: bool,
}

impl Failure {
    /// Exit 1.
    pub fn other(error: anyhow::Error) -> Self {
        Self {
            code: OTHER,
            error,
            request_id: None,
            silent: false,
        }
    }

    /// Exit 2.
    pub fn config(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: CONFIG,
            error: error.into(),
            request_id: None,
            silent: false,
        }
    }

    /// Exit 5: the platform could not be reached or did not answer in time.
    pub fn network(error: anyhow::Error) -> Self {
        Self {
            code: NETWORK,
            error,
            request_id: None,
            silent: false,
        }
    }

    /// An answer of the platform that is an error: exit 1, with its request id.
    pub fn answered(error: anyhow::Error, request_id: Option<String>) -> Self {
        Self {
            code: OTHER,
            error,
            request_id,
            silent: false,
        }
    }

    /// Exit with `code` without printing anything more.
    pub fn silent(code: u8) -> Self {
        Self {
            code,
            error: anyhow::anyhow!("failed"),
            request_id: None,
            silent: true,
        }
    }

    /// Prints `error: ...` (and the request id) and returns the exit code.
    pub fn report(self, out: &Output) -> ExitCode {
        if self.silent {
            return ExitCode::from(self.code);
        }
        out.error(&format!("{:#}", self.error));
        if let Some(id) = &self.request_id {
            out.error_hint(&format!("request id: {id} (quote it when asking for help)"));
        }
        if self.code == OK {
            return ExitCode::from(OTHER);
        }
        ExitCode::from(self.code)
    }
}

impl From<SdkError> for Failure {
    fn from(err: SdkError) -> Self {
        let code = match &err {
            SdkError::Unauthorized(_) => UNAUTHORIZED,
            SdkError::Forbidden(_) => FORBIDDEN,
            SdkError::NotFound(_) => NOT_FOUND,
            SdkError::Timeout { .. } | SdkError::Connection { .. } => NETWORK,
            SdkError::Config(_) => CONFIG,
            SdkError::RunFailed(_) => RUN_FAILED,
            SdkError::RunStopped(_) => RUN_STOPPED,
            _ => OTHER,
        };
        let request_id = err.request_id().map(str::to_owned);
        Self {
            code,
            error: err.into(),
            request_id,
            silent: false,
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self::other(error)
    }
}

impl From<noxus_sdk::ConfigError> for Failure {
    fn from(err: noxus_sdk::ConfigError) -> Self {
        Self::config(err)
    }
}
