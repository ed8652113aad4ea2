//! Fresh PostgreSQL databases for tests, on the server named by
//! `NOXUS_TEST_DATABASE_URL` (e.g. `postgres://postgres@127.0.0.1:5432/postgres`;
//! its role must be allowed to create databases).
//!
//! Two switches: `NOXUS_TEST_DATABASE_URL` alone runs the tests that are
//! about PostgreSQL (the store conformance suite's PostgreSQL half, the
//! backend's own tests, the outage tests) next to the whole suite on SQLite;
//! `NOXUS_TEST_BACKEND=postgres` as well runs every [`crate::TestApp`] (the
//! whole HTTP, SDK, CLI and dashboard suite) on PostgreSQL.
//!
//! Each [`FreshDatabase`] is `noxus_t_<random>` on that server, dropped
//! (`WITH (FORCE)`) by [`FreshDatabase::drop_database`] or, best effort,
//! when it is dropped. Without the variable, [`fresh_database_or_skip`]
//! prints a visible `SKIPPED:` line — or fails when `CI` is set, so that a
//! CI job cannot silently skip the PostgreSQL tests.

use std::io::Write as _;
use std::path::Path;

use sqlx::{Connection, PgConnection};

/// The variable naming the PostgreSQL server tests run on.
pub const ENV: &str = "NOXUS_TEST_DATABASE_URL";

/// The file in a [`crate::TestApp`]'s data directory naming its database,
/// so that a restart on that directory reopens the same database.
const DATABASE_FILE: &str = "postgres-test-database";

/// `NOXUS_TEST_DATABASE_URL`, if set (and not empty).
pub fn server_url() -> Option<String> {
    std::env::var(ENV).ok().filter(|url| !url.trim().is_empty())
}

/// The variable choosing the backend of every [`crate::TestApp`]:
/// `postgres`, or `sqlite` (the default).
pub const BACKEND_ENV: &str = "NOXUS_TEST_BACKEND";

/// Whether every [`crate::TestApp`] runs on PostgreSQL
/// (`NOXUS_TEST_BACKEND=postgres`, with `NOXUS_TEST_DATABASE_URL` naming
/// the server). Panics on an unknown backend, or on `postgres` without a
/// server: a misspelt switch must not quietly test SQLite again.
pub fn enabled() -> bool {
    let backend = std::env::var(BACKEND_ENV).unwrap_or_default();
    match backend.trim().to_ascii_lowercase().as_str() {
        "" | "sqlite" => false,
        "postgres" | "postgresql" => {
            assert!(
                server_url().is_some(),
                "{BACKEND_ENV}=postgres needs {ENV} (the PostgreSQL server to create test databases on)"
            );
            true
        }
        other => panic!("{BACKEND_ENV} is `{other}`: expected `sqlite` or `postgres`"),
    }
}

fn skip_line(test: &str, why: &str) {
    let line = format!("\nSKIPPED: {test} ({why})\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// For a test that needs SQLite itself (reads its files, opens it
/// directly): on PostgreSQL, prints `SKIPPED: <test> (SQLite only: <why>)`
/// and returns `true` (the test then returns).
pub fn skip_on_postgres(test: &str, why: &str) -> bool {
    if enabled() {
        skip_line(test, &format!("SQLite only: {why}"));
        true
    } else {
        false
    }
}

/// A database created for one test (or one [`crate::TestApp`]). `Debug`
/// shows its name only (the URL may hold a password).
pub struct FreshDatabase {
    server: String,
    name: String,
    url: String,
    /// Dropped with this handle (false once dropped, or when kept).
    owned: bool,
}

impl std::fmt::Debug for FreshDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreshDatabase")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// `url` with its database (path) replaced by `name`, query kept.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_end = base
        .find("://")
        .map(|scheme| {
            let rest = scheme + 3;
            base[rest..]
                .find('/')
                .map_or(base.len(), |slash| rest + slash)
        })
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

async fn admin(server: &str) -> PgConnection {
    PgConnection::connect(server)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {ENV}'s server: {e}"))
}

impl FreshDatabase {
    /// Creates `noxus_t_<random>` on `server` (a URL of that server).
    pub async fn create(server: &str) -> Self {
        let name = format!("noxus_t_{}", uuid::Uuid::new_v4().simple());
        let mut connection = admin(server).await;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut connection)
            .await
            .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e}"));
        let _ = connection.close().await;
        Self::adopt(server, name)
    }

    /// Takes over an existing database `name` on `server` (dropped with the handle).
    pub fn adopt(server: &str, name: String) -> Self {
        Self {
            server: server.to_owned(),
            url: with_database(server, &name),
            name,
            owned: true,
        }
    }

    /// The URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether dropping this handle drops the database.
    pub fn owned(&self) -> bool {
        self.owned
    }

    /// Leaves the database in place when this handle is dropped.
    pub fn keep(mut self) -> String {
        self.owned = false;
        self.name.clone()
    }

    /// Drops the database (terminating its connections).
    pub async fn drop_database(mut self) {
        self.owned = false;
        drop_named(&self.server, &self.name).await;
    }
}

async fn drop_named(server: &str, name: &str) {
    let Ok(mut connection) = PgConnection::connect(server).await else {
        return;
    };
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut connection)
        .await;
    let _ = connection.close().await;
}

impl Drop for FreshDatabase {
    /// Best effort: drops the database from a thread of its own (this may
    /// run inside, or outside, an async runtime).
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        self.owned = false;
        let server = self.server.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(drop_named(&server, &name));
            }
        })
        .join();
    }
}

/// A fresh database on `NOXUS_TEST_DATABASE_URL`'s server, or `None` when
/// the variable is not set. Panics if it cannot be created.
pub async fn fresh_database() -> Option<FreshDatabase> {
    match server_url() {
        Some(server) => Some(FreshDatabase::create(&server).await),
        None => None,
    }
}

/// [`fresh_database`] for a test that only runs on PostgreSQL: without the
/// variable it fails when `CI` is set, and otherwise prints
/// `SKIPPED: <test> (NOXUS_TEST_DATABASE_URL not set)` and returns `None`.
pub async fn fresh_database_or_skip(test: &str) -> Option<FreshDatabase> {
    if server_url().is_none() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "{test} needs PostgreSQL: set {ENV} (CI is set, so this test may not be skipped)"
            );
        }
        skip_line(test, &format!("{ENV} not set"));
        return None;
    }
    fresh_database().await
}

/// The database of a [`crate::TestApp`] data directory: the one named in
/// it (a restart; the handle does not own it: whoever holds the directory
/// does, see [`crate::KeptData`]), else a fresh one (owned), whose name is
/// written there. `None` when [`crate::TestApp`]s run on SQLite.
pub async fn database_for_dir(data_dir: &Path) -> Option<FreshDatabase> {
    if !enabled() {
        return None;
    }
    let server = server_url()?;
    let file = data_dir.join(DATABASE_FILE);
    if let Ok(name) = std::fs::read_to_string(&file) {
        let name = name.trim().to_owned();
        if !name.is_empty() {
            let mut database = FreshDatabase::adopt(&server, name);
            database.owned = false;
            return Some(database);
        }
    }
    let database = FreshDatabase::create(&server).await;
    std::fs::write(&file, database.name()).expect("the test database's name is written");
    Some(database)
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres", "x"),
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://h/postgres?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
    }
}
