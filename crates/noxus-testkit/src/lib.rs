//! Boots the real Noxus platform in-process for tests: a free port on
//! 127.0.0.1, a fresh SQLite database in a temporary directory, and keys
//! for users of every role. No mocks: requests go over real HTTP.
//!
//! ```no_run
//! # async fn demo() {
//! use noxus_testkit::TestApp;
//! let app = TestApp::spawn().await;
//! let me = app.get("/v1/admin/me", &app.owner_key).send().await.unwrap();
//! assert_eq!(me.status(), 200);
//! app.stop().await;
//! # }
//! ```

pub mod cluster;
pub mod proxy;
pub mod redis;
pub mod runs_load;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use noxus_api::Role;
use noxus_server::domain::passwords::hash_password;
use noxus_server::store::{Actor, NewUser};
use noxus_server::{AppState, Application, Config};
use secrecy::ExposeSecret;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod postgres;

pub use noxus_api;
pub use noxus_sdk;
pub use noxus_server;

/// The dashboard password of users made by [`TestApp::user_with_role`].
pub const TEST_PASSWORD: &str = "test password 123";

/// A user of the test organization with a key in one workspace.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// User id.
    pub id: String,
    /// Email.
    pub email: String,
    /// Dashboard password.
    pub password: String,
    /// The user's key (full secret).
    pub key: String,
    /// The key's id.
    pub key_id: String,
    /// The workspace of the key.
    pub workspace_id: String,
}

/// Options for keys made by [`TestApp::issue_key`].
#[derive(Debug, Clone, Default)]
pub struct KeyOptions {
    /// Name (default `test key`).
    pub name: Option<String>,
    /// Tenant-admin flag.
    pub tenant_admin: bool,
    /// Restriction.
    pub restriction: Option<Vec<noxus_api::Permission>>,
    /// Expiry.
    pub expires_at: Option<time_shim::OffsetDateTime>,
}

/// Re-export of the time type used by [`KeyOptions`].
pub mod time_shim {
    pub use time::OffsetDateTime;
}

/// A running platform.
#[derive(Debug)]
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// The port.
    pub port: u16,
    /// `http://127.0.0.1:PORT/metrics` when the configuration set
    /// `metrics_listen` (port 0 picks a free one).
    pub metrics_url: Option<String>,
    /// A client for raw requests.
    pub http: reqwest::Client,
    /// The server's state (store, cache) for arranging tests.
    pub state: AppState,
    /// The first owner's tenant-admin key in the first workspace.
    pub owner_key: String,
    /// The first owner.
    pub owner: TestUser,
    /// The organization.
    pub organization_id: String,
    /// The first workspace.
    pub workspace_id: String,
    data_dir: Option<TempDir>,
    /// The PostgreSQL database, when tests run on PostgreSQL
    /// (`NOXUS_TEST_BACKEND=postgres`): dropped at [`TestApp::stop`] when this
    /// app made it in a directory of its own ([`TestApp::spawn`]), handed
    /// over by [`TestApp::stop_keep_data`].
    database: Option<postgres::FreshDatabase>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Starts the platform on a free port with a fresh database.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Starts the platform after `configure` adjusts the configuration.
    pub async fn spawn_with(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temporary data directory");
        let mut app = Self::start_in(dir.path(), configure).await;
        app.data_dir = Some(dir);
        app
    }

    /// Starts the platform on an existing data directory (first start if it
    /// is empty). With `NOXUS_TEST_BACKEND=postgres`, it runs on a
    /// PostgreSQL database of that server instead: a fresh one, or the one
    /// an earlier start on this directory used (see [`postgres::database_for_dir`]).
    pub async fn start_in(data_dir: &Path, configure: impl FnOnce(&mut Config)) -> Self {
        init_logging();
        let database = postgres::database_for_dir(data_dir).await;
        let mut config = Config::new(data_dir);
        config.postgres = database
            .as_ref()
            .map(|db| noxus_server::store::PostgresOptions::new(db.url()));
        config.listen = "127.0.0.1:0".parse().expect("address");
        configure(&mut config);
        let mut application = Application::build(config)
            .await
            .expect("the platform starts");
        let welcome = application.take_welcome();
        let state = application.state().clone();
        let port = application.port();
        let base_url = application.base_url().to_owned();
        let metrics_url = application
            .metrics_addr()
            .map(|addr| format!("http://{addr}/metrics"));
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(application.run_until_stopped(async move {
            let _ = rx.await;
        }));
        let org = state
            .store()
            .organization()
            .await
            .expect("store")
            .expect("organization");
        let (owner, owner_key, workspace_id) = match welcome {
            Some(w) => {
                let key = w
                    .api_key
                    .as_ref()
                    .map(|k| k.expose_secret().to_owned())
                    .unwrap_or_default();
                let key_id = w
                    .outcome
                    .key
                    .as_ref()
                    .map(|k| k.id.to_string())
                    .unwrap_or_default();
                let owner = TestUser {
                    id: w.outcome.user.id.to_string(),
                    email: w.outcome.user.email.clone(),
                    password: w
                        .generated_password
                        .as_ref()
                        .map(|p| p.expose_secret().to_owned())
                        .unwrap_or_default(),
                    key: key.clone(),
                    key_id,
                    workspace_id: w.outcome.workspace.id.to_string(),
                };
                (owner, key, w.outcome.workspace.id.to_string())
            }
            None => {
                // A restart: the first key's secret is gone, so issue another for the owner.
                let workspaces = state
                    .store()
                    .list_workspaces(&org.id)
                    .await
                    .expect("workspaces");
                let workspace_id = workspaces.first().expect("a workspace").id.to_string();
                let user = state
                    .store()
                    .user_by_email(&state.config().admin_email)
                    .await
                    .expect("store")
                    .expect("owner");
                let (key, key_id) = issue(
                    &state,
                    &workspace_id,
                    user.id.as_str(),
                    KeyOptions {
                        tenant_admin: true,
                        ..Default::default()
                    },
                )
                .await;
                let password = state
                    .config()
                    .admin_password
                    .as_ref()
                    .map(|p| p.expose_secret().to_owned())
                    .unwrap_or_default();
                let owner = TestUser {
                    id: user.id.into_string(),
                    email: user.email,
                    password,
                    key: key.clone(),
                    key_id,
                    workspace_id: workspace_id.clone(),
                };
                (owner, key, workspace_id)
            }
        };
        Self {
            base_url,
            port,
            metrics_url,
            http: reqwest::Client::new(),
            state,
            owner_key,
            owner,
            organization_id: org.id.into_string(),
            workspace_id,
            data_dir: None,
            database,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// Whether this platform runs on PostgreSQL (`NOXUS_TEST_BACKEND=postgres`).
    pub fn is_postgres(&self) -> bool {
        self.database.is_some()
    }

    /// The data directory (SQLite files).
    pub fn data_dir(&self) -> &Path {
        self.data_dir
            .as_ref()
            .map(TempDir::path)
            .unwrap_or_else(|| Path::new("."))
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// A GET with `X-API-Key`.
    pub fn get(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).header("X-API-Key", key)
    }

    /// A POST with `X-API-Key`.
    pub fn post(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).header("X-API-Key", key)
    }

    /// A PATCH with `X-API-Key`.
    pub fn patch(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http.patch(self.url(path)).header("X-API-Key", key)
    }

    /// A DELETE with `X-API-Key`.
    pub fn delete(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http.delete(self.url(path)).header("X-API-Key", key)
    }

    /// An SDK client for `key` against this platform.
    pub fn client(&self, key: &str) -> noxus_sdk::Client {
        noxus_sdk::Client::builder()
            .api_key(key)
            .base_url(&self.base_url)
            .build()
            .expect("a client for a test key")
    }

    /// A new user with `role` in the first workspace, and an SDK client with their key.
    pub async fn client_for(&self, role: Role) -> noxus_sdk::Client {
        let user = self.user_with_role(role).await;
        self.client(&user.key)
    }

    /// Creates a user with `role` in the first workspace and a key for them.
    pub async fn user_with_role(&self, role: Role) -> TestUser {
        self.user_in(&self.workspace_id, role).await
    }

    /// Creates a user with `role` in `workspace_id` and a key for them there.
    pub async fn user_in(&self, workspace_id: &str, role: Role) -> TestUser {
        let n = next_number();
        let email = format!("{role}-{n}@test.noxus.local");
        let hash = hash_password(TEST_PASSWORD).expect("hash");
        let user = self
            .state
            .store()
            .create_user(
                &Actor::system(),
                NewUser {
                    organization_id: self.organization_id.as_str().into(),
                    email: email.clone(),
                    name: format!("{role} {n}"),
                    password_hash: hash,
                    is_org_admin: false,
                    must_change_password: false,
                },
            )
            .await
            .expect("user");
        noxus_server::members::set_role(
            &self.state,
            &Actor::system(),
            &workspace_id.into(),
            &user.id,
            role,
        )
        .await
        .expect("membership");
        let (key, key_id) = issue(
            &self.state,
            workspace_id,
            user.id.as_str(),
            KeyOptions::default(),
        )
        .await;
        TestUser {
            id: user.id.into_string(),
            email,
            password: TEST_PASSWORD.to_owned(),
            key,
            key_id,
            workspace_id: workspace_id.to_owned(),
        }
    }

    /// Creates a workspace owned by the first owner and returns the owner's
    /// (non-admin) key in it.
    pub async fn second_workspace(&self, name: &str) -> TestUser {
        let workspace = self
            .state
            .store()
            .create_workspace(
                &Actor::system(),
                &self.organization_id.as_str().into(),
                name,
                None,
                &self.owner.id.as_str().into(),
            )
            .await
            .expect("workspace");
        let (key, key_id) = issue(
            &self.state,
            workspace.id.as_str(),
            &self.owner.id,
            KeyOptions::default(),
        )
        .await;
        TestUser {
            id: self.owner.id.clone(),
            email: self.owner.email.clone(),
            password: self.owner.password.clone(),
            key,
            key_id,
            workspace_id: workspace.id.into_string(),
        }
    }

    /// Issues `user` a second key in their workspace that names every
    /// permission of `role` (the user's role there), management included: a
    /// key made without `permissions` does not manage keys, members or the
    /// workspace. Returns the secret.
    pub async fn management_key(&self, user: &TestUser, role: Role) -> String {
        let (key, _) = issue(
            &self.state,
            &user.workspace_id,
            &user.id,
            KeyOptions {
                name: Some("management key".to_owned()),
                restriction: Some(role.permissions().to_vec()),
                ..Default::default()
            },
        )
        .await;
        key
    }

    /// Issues a key directly in the store (for arranging tests).
    pub async fn issue_key(
        &self,
        workspace_id: &str,
        user_id: &str,
        options: KeyOptions,
    ) -> (String, String) {
        issue(&self.state, workspace_id, user_id, options).await
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown_and_wait().await;
        if let Some(database) = self.database.take() {
            if self.data_dir.is_some() && database.owned() {
                database.drop_database().await;
            } else {
                // The caller's directory names it: a start on it reopens it.
                database.keep();
            }
        }
    }

    async fn shutdown_and_wait(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server ran");
        }
    }

    /// Stops the server and hands over the data directory (to restart on
    /// it) with, on PostgreSQL, its database (dropped with it).
    pub async fn stop_keep_data(mut self) -> KeptData {
        self.shutdown_and_wait().await;
        KeptData {
            database: self.database.take(),
            dir: self
                .data_dir
                .take()
                .expect("a data directory made by spawn"),
        }
    }
}

/// A stopped [`TestApp`]'s data: its directory and, on PostgreSQL, its
/// database (named in the directory), which goes when this is dropped.
/// Derefs to the directory's [`TempDir`].
#[derive(Debug)]
pub struct KeptData {
    // Fields drop in order: the database, then the directory.
    database: Option<postgres::FreshDatabase>,
    dir: TempDir,
}

impl KeptData {
    /// The PostgreSQL database, when tests run on PostgreSQL.
    pub fn database(&self) -> Option<&postgres::FreshDatabase> {
        self.database.as_ref()
    }
}

impl std::ops::Deref for KeptData {
    type Target = TempDir;
    fn deref(&self) -> &TempDir {
        &self.dir
    }
}

/// The configuration [`TestApp::start_in`] starts from for `data_dir`
/// (on PostgreSQL: the directory's database, which this leaves in place),
/// for tests that build the platform themselves.
pub async fn config_in(data_dir: &Path) -> Config {
    let mut config = Config::new(data_dir);
    if let Some(database) = postgres::database_for_dir(data_dir).await {
        config.postgres = Some(noxus_server::store::PostgresOptions::new(database.url()));
        // Whoever holds the directory owns its database.
        database.keep();
    }
    config.listen = "127.0.0.1:0".parse().expect("address");
    config
}

async fn issue(
    state: &AppState,
    workspace_id: &str,
    user_id: &str,
    options: KeyOptions,
) -> (String, String) {
    let request = noxus_server::keys::IssueRequest {
        workspace_id: workspace_id.into(),
        user_id: user_id.into(),
        name: options.name.unwrap_or_else(|| "test key".to_owned()),
        tenant_admin: options.tenant_admin,
        restriction: options.restriction,
        expires_at: options.expires_at,
        rate_limit: None,
    };
    let (record, secret) = noxus_server::keys::issue(state, &Actor::system(), request)
        .await
        .expect("key");
    (secret.expose_secret().to_owned(), record.id.into_string())
}

fn next_number() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Says, where the person running the tests sees it, that `test` was
/// skipped and why. The test harness captures what tests print with
/// `println!` and shows it only for failures; this writes to the process's
/// standard error directly, so a skip is never silent.
pub fn report_skip(test: &str, why: &str) {
    let line = format!("\nSKIPPED {test}: {why}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

#[derive(Clone)]
struct CaptureWriter;

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::env::var_os("NOXUS_TEST_LOG").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        log_buffer()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per process) a tracing subscriber that records everything
/// the platform logs, at TRACE level for our crates, into a buffer that
/// [`captured_logs`] returns. `NOXUS_TEST_LOG=1` also echoes it to stderr.
pub fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::new(
            "noxus_server=trace,noxus_testkit=trace,tower_http=trace,sqlx=debug,info",
        );
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(|| CaptureWriter)
            .try_init();
    });
}

/// Everything logged in this process so far.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}
