//! The backends the suite runs on, as data: each gives a fresh, empty,
//! migrated store per test (and can open a second instance on the same
//! database, as a second replica would).

use std::sync::Arc;

use noxus_server::store::{connect, DatabaseConfig, PostgresOptions, Store};

#[path = "pg_admin.rs"]
mod pg_admin;

/// The environment variable naming the PostgreSQL server to test against:
/// a URL to a database the user may `CREATE DATABASE` from, e.g.
/// `postgres://postgres@127.0.0.1:5432/postgres`.
pub const PG_URL_VAR: &str = "NOXUS_TEST_DATABASE_URL";

/// A store implementation under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `SqliteStore` in a temporary directory.
    Sqlite,
    /// The PostgreSQL store in a database of its own, on the server named by
    /// [`PG_URL_VAR`].
    Postgres,
}

/// A fresh store, and what keeps its database alive.
pub struct Fresh {
    /// The store under test.
    pub store: Arc<dyn Store>,
    place: Place,
    others: Vec<Arc<dyn Store>>,
}

impl std::fmt::Debug for Fresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fresh").field("store", &self.store).finish()
    }
}

enum Place {
    /// Holds the directory for as long as the store lives.
    Sqlite(tempfile::TempDir),
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
}

impl Backend {
    /// A fresh, empty, migrated store for `test`, or `None` when this
    /// backend cannot be had here (then a SKIPPED line was written; under
    /// `CI` that is a failure instead).
    pub async fn fresh(self, test: &str) -> Option<Fresh> {
        match self {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let store = connect(&DatabaseConfig::Sqlite {
                    data_dir: dir.path().to_owned(),
                })
                .await
                .expect("open the SQLite store");
                Some(Fresh {
                    store,
                    place: Place::Sqlite(dir),
                    others: Vec::new(),
                })
            }
            Backend::Postgres => {
                let Some(admin_url) = std::env::var(PG_URL_VAR).ok().filter(|u| !u.is_empty())
                else {
                    let why = format!("{PG_URL_VAR} not set");
                    assert!(
                        std::env::var_os("CI").is_none(),
                        "{test}: {why} (the PostgreSQL half of the store conformance suite must run in CI)"
                    );
                    noxus_testkit::report_skip(test, &why);
                    return None;
                };
                let name = format!("noxus_c_{}", uuid::Uuid::new_v4().simple());
                pg_admin::create_database(&admin_url, &name).await;
                let url = with_database(&admin_url, &name);
                let store =
                    match connect(&DatabaseConfig::Postgres(PostgresOptions::new(url.clone())))
                        .await
                    {
                        Ok(store) => store,
                        Err(e) => {
                            pg_admin::drop_database(&admin_url, &name).await;
                            panic!("open the PostgreSQL store: {e:#}");
                        }
                    };
                Some(Fresh {
                    store,
                    place: Place::Postgres {
                        admin_url,
                        name,
                        url,
                    },
                    others: Vec::new(),
                })
            }
        }
    }
}

impl Fresh {
    /// Another store instance on the same database (a second process's
    /// view: its own pool, its own event bus).
    pub async fn open_another(&mut self) -> Arc<dyn Store> {
        let config = match &self.place {
            Place::Sqlite(dir) => DatabaseConfig::Sqlite {
                data_dir: dir.path().to_owned(),
            },
            Place::Postgres { url, .. } => {
                DatabaseConfig::Postgres(PostgresOptions::new(url.clone()))
            }
        };
        let store = connect(&config)
            .await
            .expect("open a second store instance");
        self.others.push(Arc::clone(&store));
        store
    }

    /// Closes the stores and drops the database (only after a passing
    /// check: a failed one leaves a PostgreSQL database to look at).
    pub async fn finish(self) {
        for store in self.others.iter().chain(std::iter::once(&self.store)) {
            store.close().await;
        }
        match self.place {
            Place::Sqlite(dir) => drop(dir),
            Place::Postgres {
                admin_url, name, ..
            } => pg_admin::drop_database(&admin_url, &name).await,
        }
    }
}

pub use noxus_testkit::postgres::with_database;

#[test]
fn database_urls_keep_everything_but_the_database() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/db?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://h:5432", "x"),
        "postgres://h:5432/x"
    );
}
