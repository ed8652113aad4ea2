//! Creates and drops the per-test PostgreSQL database.

use sqlx::Connection;

pub async fn create_database(admin_url: &str, name: &str) {
    let mut connection = sqlx::PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to NOXUS_TEST_DATABASE_URL: {e}"));
    // `name` is ours (noxus_c_ and hex digits): safe to splice.
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut connection)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    let _ = connection.close().await;
}

pub async fn drop_database(admin_url: &str, name: &str) {
    let mut connection = sqlx::PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to NOXUS_TEST_DATABASE_URL: {e}"));
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut connection)
        .await
        .unwrap_or_else(|e| panic!("DROP DATABASE {name}: {e}"));
    let _ = connection.close().await;
}
