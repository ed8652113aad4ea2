//! What the benchmarks share: a PostgreSQL database of their own on a
//! server given by URL, created at the start and dropped at the end.

use anyhow::Context;
use sqlx::Connection;

/// A database created on a PostgreSQL server for one benchmark run.
#[derive(Debug)]
pub struct BenchDatabase {
    server_url: String,
    name: String,
    url: String,
}

impl BenchDatabase {
    /// Creates `noxus_bench_<pid>_<label>` on the server `server_url` names
    /// (a URL to any database there the user may create databases from).
    pub async fn create(server_url: &str, label: &str) -> anyhow::Result<Self> {
        let name = format!("noxus_bench_{}_{label}", std::process::id());
        let mut admin = sqlx::PgConnection::connect(server_url)
            .await
            .context("cannot reach the PostgreSQL server")?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        Ok(Self {
            server_url: server_url.to_owned(),
            url: with_database(server_url, &name)?,
            name,
        })
    }

    /// The URL of the database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops the database (closing its sessions).
    pub async fn drop_database(self) -> anyhow::Result<()> {
        let mut admin = sqlx::PgConnection::connect(&self.server_url).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await?;
        admin.close().await?;
        Ok(())
    }
}

/// `url` with its database replaced by `database`.
pub fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").context("a URL")? + 3;
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}
