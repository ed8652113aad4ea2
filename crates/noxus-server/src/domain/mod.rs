//! Domain rules that do not depend on HTTP or the database.

pub mod keys;
pub mod passwords;
pub mod validation;
