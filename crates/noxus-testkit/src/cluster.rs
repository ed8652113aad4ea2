//! Several replicas of the platform as separate processes — the real
//! `noxus` binary — on one PostgreSQL database, on loopback ports: what
//! people deploy behind a load balancer, for the tests (and benchmarks)
//! about replicas.
//!
//! The database is a fresh one on the server `NOXUS_TEST_DATABASE_URL`
//! names ([`crate::postgres`]); without it [`Cluster::start`] returns `None`
//! after a visible SKIPPED line (and fails under `CI`). The first replica
//! makes the first start and prints the owner's first key (a tenant-admin
//! key), which the cluster keeps; the others find the platform set up. All
//! share one pepper. Dropping the cluster kills the replicas and drops the
//! database.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::postgres::{fresh_database_or_skip, FreshDatabase};

/// One `noxus serve` process.
#[derive(Debug)]
pub struct Replica {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    child: Child,
}

impl Replica {
    /// The URL of `path` on this replica.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Replicas on one database.
#[derive(Debug)]
pub struct Cluster {
    /// The replicas, in the order they started.
    pub replicas: Vec<Replica>,
    /// The owner's first key (tenant admin), printed by the first start.
    pub owner_key: String,
    /// The first workspace.
    pub workspace_id: String,
    /// A client for requests to the replicas.
    pub http: reqwest::Client,
    database: Option<FreshDatabase>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A 40-character pepper, the same for every replica of one cluster.
const PEPPER: &str = "cluster-test-pepper-0123456789abcdefghij";

impl Cluster {
    /// Starts `replicas` processes of `noxus` (the binary's path, e.g.
    /// `env!("CARGO_BIN_EXE_noxus")` in the CLI's tests) on a fresh
    /// database, each with `extra_args` added to `noxus serve`, and waits
    /// until every one is ready. `None` (after a SKIPPED line) without
    /// PostgreSQL.
    pub async fn start(
        test: &str,
        noxus: &Path,
        replicas: usize,
        extra_args: &[&str],
    ) -> Option<Self> {
        let database = fresh_database_or_skip(test).await?;
        Some(Self::start_on(database, noxus, replicas, extra_args).await)
    }

    /// [`Cluster::start`] on a given database (benchmarks make their own).
    pub async fn start_on(
        database: FreshDatabase,
        noxus: &Path,
        replicas: usize,
        extra_args: &[&str],
    ) -> Self {
        let http = reqwest::Client::new();
        let mut cluster = Self {
            replicas: Vec::new(),
            owner_key: String::new(),
            workspace_id: String::new(),
            http,
            database: Some(database),
        };
        for index in 0..replicas {
            let port = free_port();
            let mut child = Command::new(noxus)
                .arg("serve")
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(extra_args)
                .env("NOXUS_DATABASE_URL", cluster.database_url())
                .env("NOXUS_KEY_PEPPER", PEPPER)
                .env_remove("NOXUS_NO_WELCOME")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("noxus serve starts");
            let stdout = child.stdout.take().expect("stdout");
            if index == 0 {
                // The first start prints the owner's key once.
                let mut lines = BufReader::new(stdout).lines();
                let key = lines
                    .by_ref()
                    .map_while(Result::ok)
                    .find_map(|l| {
                        l.trim()
                            .strip_prefix("export NOXUS_API_KEY=")
                            .map(str::to_owned)
                    })
                    .expect("the first replica prints the first key");
                cluster.owner_key = key;
                // Keep draining stdout so the process never blocks on it.
                std::thread::spawn(move || for _ in lines {});
            } else {
                std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
            }
            let replica = Replica {
                base_url: format!("http://127.0.0.1:{port}"),
                child,
            };
            cluster.wait_ready(&replica).await;
            cluster.replicas.push(replica);
        }
        let me: serde_json::Value = cluster
            .http
            .get(cluster.replicas[0].url("/v1/admin/me"))
            .header("X-API-Key", &cluster.owner_key)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("the owner's key works")
            .json()
            .await
            .expect("JSON");
        cluster.workspace_id = me["workspace_id"].as_str().unwrap_or_default().to_owned();
        cluster
    }

    /// The database's URL (a secret in real deployments; a test database here).
    pub fn database_url(&self) -> String {
        self.database
            .as_ref()
            .map(|d| d.url().to_owned())
            .unwrap_or_default()
    }

    async fn wait_ready(&self, replica: &Replica) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(replica.url("/readyz")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "replica {} did not become ready",
                replica.base_url
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A GET on replica `index` with a key.
    pub fn get(&self, index: usize, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http
            .get(self.replicas[index].url(path))
            .header("X-API-Key", key)
    }

    /// A POST on replica `index` with a key.
    pub fn post(&self, index: usize, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http
            .post(self.replicas[index].url(path))
            .header("X-API-Key", key)
    }

    /// A DELETE on replica `index` with a key.
    pub fn delete(&self, index: usize, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http
            .delete(self.replicas[index].url(path))
            .header("X-API-Key", key)
    }

    /// Creates a key in the first workspace through replica `index`;
    /// returns its id and its secret.
    pub async fn create_key(&self, index: usize, body: serde_json::Value) -> (String, String) {
        let created: serde_json::Value = self
            .post(
                index,
                &format!("/v1/admin/groups/{}/api-keys", self.workspace_id),
                &self.owner_key,
            )
            .json(&body)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("the key is created")
            .json()
            .await
            .expect("JSON");
        (
            created["id"].as_str().unwrap_or_default().to_owned(),
            created["value"].as_str().unwrap_or_default().to_owned(),
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for replica in &mut self.replicas {
            let _ = replica.child.kill();
            let _ = replica.child.wait();
        }
        // The database goes with its handle (dropped after the processes).
        drop(self.database.take());
    }
}

/// A person of the cluster's organization, made by [`Arranger::user`]: a
/// dashboard login ([`crate::TEST_PASSWORD`]) and a key of theirs.
#[derive(Debug, Clone)]
pub struct ClusterUser {
    /// User id.
    pub id: String,
    /// Login email.
    pub email: String,
    /// Dashboard password.
    pub password: String,
    /// The user's key (full secret), in the workspace they were made in.
    pub key: String,
    /// Its id.
    pub key_id: String,
}

/// What the API cannot arrange, done directly in the cluster's database
/// through the platform's own store (as [`crate::TestApp::user_with_role`]
/// does in process): people, their memberships, keys of theirs. The store
/// is one more instance on the database, so its writes reach the replicas'
/// listeners like any replica's. Changes under test go through a replica.
pub struct Arranger {
    store: noxus_server::store::PostgresStore,
    hasher: noxus_server::domain::keys::KeyHasher,
    organization_id: String,
}

impl std::fmt::Debug for Arranger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arranger")
            .field("organization_id", &self.organization_id)
            .finish_non_exhaustive()
    }
}

/// A dashboard session (cookies and CSRF token), valid on every replica:
/// sessions are rows of the shared database.
#[derive(Clone)]
pub struct Dashboard {
    http: reqwest::Client,
    bases: Vec<String>,
    cookies: Vec<(String, String)>,
    csrf: String,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the session's cookie or token.
        f.debug_struct("Dashboard")
            .field("replicas", &self.bases)
            .finish_non_exhaustive()
    }
}

fn keep_cookies(cookies: &mut Vec<(String, String)>, response: &reqwest::Response) {
    for value in response.headers().get_all("set-cookie") {
        let Some((name, value)) = value
            .to_str()
            .ok()
            .and_then(|text| text.split(';').next())
            .and_then(|pair| pair.split_once('='))
        else {
            continue;
        };
        cookies.retain(|(n, _)| n != name);
        if !value.is_empty() {
            cookies.push((name.to_owned(), value.to_owned()));
        }
    }
}

fn cookie_header(cookies: &[(String, String)]) -> String {
    cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The value of the first `<input name="{name}" value="…">` of a page.
fn form_field(body: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker)? + marker.len();
    let end = body[start..].find('"')? + start;
    Some(body[start..end].to_owned())
}

impl Cluster {
    /// An [`Arranger`] on the cluster's database.
    pub async fn arranger(&self) -> Arranger {
        use noxus_server::store::prelude::*;
        let store = noxus_server::store::PostgresStore::open(
            &noxus_server::store::PostgresOptions::new(self.database_url()),
        )
        .await
        .expect("a store on the cluster's database");
        let organization_id = store
            .organization()
            .await
            .expect("the organization")
            .expect("the first start made it")
            .id
            .into_string();
        let pepper = secrecy::SecretString::from(PEPPER.to_owned());
        Arranger {
            store,
            hasher: noxus_server::domain::keys::KeyHasher::new(Some(&pepper)),
            organization_id,
        }
    }

    /// Logs `email` into the dashboard through replica `index`.
    pub async fn dashboard(&self, index: usize, email: &str, password: &str) -> Dashboard {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client");
        let bases: Vec<String> = self.replicas.iter().map(|r| r.base_url.clone()).collect();
        let mut cookies = Vec::new();
        let page = http
            .get(format!("{}/login", bases[index]))
            .send()
            .await
            .expect("the login page");
        keep_cookies(&mut cookies, &page);
        let body = page.text().await.expect("the login page");
        let token = form_field(&body, "csrf").expect("the login form's token");
        let login = http
            .post(format!("{}/login", bases[index]))
            .header("cookie", cookie_header(&cookies))
            .form(&[("email", email), ("password", password), ("csrf", &token)])
            .send()
            .await
            .expect("the login");
        assert!(
            login.status().is_redirection(),
            "the login of {email} answered {}",
            login.status()
        );
        keep_cookies(&mut cookies, &login);
        let page = http
            .get(format!("{}/settings/account", bases[index]))
            .header("cookie", cookie_header(&cookies))
            .send()
            .await
            .expect("a page");
        let body = page.text().await.expect("a page");
        let csrf = form_field(&body, "csrf").expect("the session's token");
        Dashboard {
            http,
            bases,
            cookies,
            csrf,
        }
    }
}

impl Dashboard {
    /// Posts a form (the session's CSRF token added) to replica `index`;
    /// redirects are not followed.
    pub async fn post(&self, index: usize, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        fields.push(("csrf", &self.csrf));
        self.http
            .post(format!("{}{path}", self.bases[index]))
            .header("cookie", cookie_header(&self.cookies))
            .form(&fields)
            .send()
            .await
            .expect("the dashboard answers")
    }
}

impl Arranger {
    /// The store (one more instance on the cluster's database).
    pub fn store(&self) -> &noxus_server::store::PostgresStore {
        &self.store
    }

    /// Makes a user of the organization with `role` in `workspace_id`, and
    /// a key of theirs there (unrestricted, no expiry).
    pub async fn user(&self, workspace_id: &str, role: noxus_api::Role) -> ClusterUser {
        use noxus_server::store::prelude::*;
        let n = uuid::Uuid::new_v4().simple().to_string();
        let email = format!("{role}-{}@cluster.noxus.local", &n[..12]);
        let user = self
            .store
            .create_user(
                &noxus_server::store::Actor::system(),
                noxus_server::store::NewUser {
                    organization_id: self.organization_id.as_str().into(),
                    email: email.clone(),
                    name: format!("{role} {}", &n[..6]),
                    password_hash: noxus_server::domain::passwords::hash_password(
                        crate::TEST_PASSWORD,
                    )
                    .expect("a hash"),
                    is_org_admin: false,
                    must_change_password: false,
                },
            )
            .await
            .expect("the user");
        self.set_role(workspace_id, user.id.as_str(), role).await;
        let (key_id, key) = self
            .key(workspace_id, user.id.as_str(), crate::KeyOptions::default())
            .await;
        ClusterUser {
            id: user.id.into_string(),
            email,
            password: crate::TEST_PASSWORD.to_owned(),
            key,
            key_id,
        }
    }

    /// Gives `user_id` `role` in `workspace_id` (adding them if needed).
    pub async fn set_role(&self, workspace_id: &str, user_id: &str, role: noxus_api::Role) {
        use noxus_server::store::prelude::*;
        self.store
            .set_membership(
                &noxus_server::store::Actor::system(),
                &workspace_id.into(),
                &user_id.into(),
                role,
            )
            .await
            .expect("the membership");
    }

    /// Makes `user_id` an organization admin (as the dashboard does).
    pub async fn make_org_admin(&self, user_id: &str) {
        use noxus_server::store::prelude::*;
        self.store
            .set_org_admin(
                &noxus_server::store::Actor::system(),
                &self.organization_id.as_str().into(),
                &user_id.into(),
                true,
            )
            .await
            .expect("an organization admin");
    }

    /// Issues a key of `user_id` in `workspace_id`; returns its id and secret.
    pub async fn key(
        &self,
        workspace_id: &str,
        user_id: &str,
        options: crate::KeyOptions,
    ) -> (String, String) {
        use noxus_server::store::prelude::*;
        let issued = self.hasher.issue();
        let record = self
            .store
            .create_key(
                &noxus_server::store::Actor::system(),
                noxus_server::store::NewKey {
                    workspace_id: workspace_id.into(),
                    user_id: user_id.into(),
                    name: options.name.unwrap_or_else(|| "cluster key".to_owned()),
                    digest: issued.digest,
                    prefix: issued.prefix,
                    suffix: issued.suffix,
                    tenant_admin: options.tenant_admin,
                    restriction: options.restriction,
                    expires_at: options.expires_at,
                    rate_limit: None,
                },
                noxus_server::store::KeyQuotas {
                    per_user: u32::MAX,
                    per_workspace: u32::MAX,
                },
            )
            .await
            .expect("the key");
        use secrecy::ExposeSecret as _;
        (
            record.id.into_string(),
            issued.secret.expose_secret().to_owned(),
        )
    }

    /// Closes the store.
    pub async fn close(&self) {
        use noxus_server::store::prelude::*;
        self.store.close().await;
    }
}
