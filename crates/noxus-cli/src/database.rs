//! Where the platform's database is: SQLite in `--data-dir` (the default)
//! or PostgreSQL with `--database-url`. Shared by `noxus serve` and
//! `noxus migrate`. The URL may hold a password: it is kept secret, never
//! printed (not in `--help`, not in errors, not in `Debug`).

use noxus_server::config::defaults;
use std::time::Duration;

use clap::Args;
use noxus_server::store::PostgresOptions;
use secrecy::{ExposeSecret, SecretString};

use crate::exit::Failure;

/// A database URL, secret.
#[derive(Clone)]
pub struct DatabaseUrl(SecretString);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl([redacted])")
    }
}

/// Accepts any text: checking it here would let clap echo it (with its
/// password) in the error; [`DatabaseArgs::postgres`] checks it instead.
pub fn secret_url(text: &str) -> Result<DatabaseUrl, std::convert::Infallible> {
    Ok(DatabaseUrl(SecretString::from(text.trim().to_owned())))
}

impl DatabaseUrl {
    /// Empty (an empty variable): not given.
    pub fn is_empty(&self) -> bool {
        self.0.expose_secret().is_empty()
    }

    /// Whether it starts with one of `schemes` (e.g. `redis://`).
    pub fn has_scheme(&self, schemes: &[&str]) -> bool {
        let text = self.0.expose_secret();
        schemes.iter().any(|s| text.starts_with(s))
    }

    /// The URL, still secret.
    pub fn into_secret(self) -> SecretString {
        self.0
    }
}

/// The PostgreSQL options of `noxus serve` and `noxus migrate`.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// Run on this PostgreSQL database instead of SQLite in --data-dir:
    /// postgres://user:password@host:5432/database (or postgresql://; add
    /// ?sslmode=require for TLS). Never printed.
    #[arg(long, env = "NOXUS_DATABASE_URL", hide_env_values = true, value_name = "URL", value_parser = secret_url)]
    database_url: Option<DatabaseUrl>,

    /// Where this process listens for other processes' changes (one LISTEN
    /// connection), when not at --database-url: PostgreSQL itself when
    /// --database-url goes through a pooler in transaction mode (PgBouncer),
    /// which cannot carry LISTEN. Never printed.
    #[arg(long, env = "NOXUS_DATABASE_LISTEN_URL", hide_env_values = true, value_name = "URL", value_parser = secret_url)]
    database_listen_url: Option<DatabaseUrl>,

    /// Most PostgreSQL connections this process opens (its pool).
    #[arg(long, env = "NOXUS_DATABASE_MAX_CONNECTIONS", default_value_t = defaults::DATABASE_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    database_max_connections: u32,

    /// Milliseconds to wait for a PostgreSQL connection (a new one, or a
    /// free one of the pool) before the request fails.
    #[arg(long, env = "NOXUS_DATABASE_CONNECT_TIMEOUT_MS", default_value_t = defaults::DATABASE_CONNECT_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    database_connect_timeout_ms: u64,

    /// Milliseconds a PostgreSQL statement may run before the server
    /// cancels it (PostgreSQL's statement_timeout).
    #[arg(long, env = "NOXUS_DATABASE_STATEMENT_TIMEOUT_MS", default_value_t = defaults::DATABASE_STATEMENT_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    database_statement_timeout_ms: u64,
}

impl DatabaseArgs {
    /// The PostgreSQL options, `None` without `--database-url` (SQLite).
    /// Anything but a `postgres://` or `postgresql://` URL is refused,
    /// without repeating it.
    pub fn postgres(&self) -> Result<Option<PostgresOptions>, Failure> {
        let Some(url) = self.database_url.as_ref().filter(|url| !url.is_empty()) else {
            return Ok(None);
        };
        let text = url.0.expose_secret();
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(Failure::config(anyhow::anyhow!(
                "--database-url (NOXUS_DATABASE_URL) must be a PostgreSQL URL starting with postgres:// or postgresql://, e.g. postgres://noxus:PASSWORD@db.internal:5432/noxus; without it the platform runs on SQLite in --data-dir"
            )));
        }
        let mut options = PostgresOptions::new(text);
        if let Some(listen) = self
            .database_listen_url
            .as_ref()
            .filter(|url| !url.is_empty())
        {
            let listen_text = listen.0.expose_secret();
            if !(listen_text.starts_with("postgres://") || listen_text.starts_with("postgresql://"))
            {
                return Err(Failure::config(anyhow::anyhow!(
                    "--database-listen-url (NOXUS_DATABASE_LISTEN_URL) must be a PostgreSQL URL starting with postgres:// or postgresql://, like --database-url"
                )));
            }
            options.listen_url = Some(listen.0.clone());
        }
        options.max_connections = self.database_max_connections;
        options.connect_timeout = Duration::from_millis(self.database_connect_timeout_ms);
        options.statement_timeout = Duration::from_millis(self.database_statement_timeout_ms);
        Ok(Some(options))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        database: DatabaseArgs,
    }

    fn options(args: &[&str]) -> Result<Option<PostgresOptions>, Failure> {
        Cli::try_parse_from(std::iter::once("noxus").chain(args.iter().copied()))
            .unwrap()
            .database
            .postgres()
    }

    #[test]
    fn the_listener_url_is_taken_when_given_and_checked_without_being_repeated() {
        let main = "postgres://noxus:main-secret@pooler:6432/noxus";
        let direct = "postgres://noxus:direct-secret@db:5432/noxus";
        let got = options(&["--database-url", main, "--database-listen-url", direct])
            .unwrap()
            .unwrap();
        assert_eq!(got.url.expose_secret(), main);
        assert_eq!(got.listen_url.unwrap().expose_secret(), direct);
        let got = options(&["--database-url", main]).unwrap().unwrap();
        assert!(got.listen_url.is_none());
        let refused = options(&[
            "--database-url",
            main,
            "--database-listen-url",
            "mysql://u:leaked@db/noxus",
        ])
        .unwrap_err();
        let text = format!("{refused:?}");
        assert!(text.contains("--database-listen-url"), "{text}");
        assert!(!text.contains("leaked"), "{text}");
    }
}
