//! TODO(postgres): stands in for `pg_admin.rs` until sqlx's `postgres`
//! feature is enabled for noxus-server's tests (see `backend.rs`). With
//! `NOXUS_TEST_DATABASE_URL` set, the PostgreSQL checks fail here, loudly,
//! instead of skipping: someone asked for PostgreSQL.

pub async fn create_database(_admin_url: &str, name: &str) {
    panic!(
        "TODO(postgres): cannot create {name}: enable sqlx's `postgres` feature in \
         noxus-server's [dev-dependencies] and switch backend.rs to pg_admin.rs"
    );
}

pub async fn drop_database(_admin_url: &str, _name: &str) {}
