//! Wire types of the Noxus HTTP API and the API-key format, shared by the
//! server, the SDK and the CLI. Serde only: no HTTP or database code here.

pub mod key_format;
pub mod limits;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod permissions;
pub mod types;
pub mod whole_number;

pub use key_format::{check_key_format, KeyFormatError};
pub use permissions::{effective_permissions, Permission, Role};
pub use types::*;
