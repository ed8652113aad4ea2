//! The blocking twin of the async client, for programs without an async
//! runtime (scripts, plain `#[test]`s): every async call has a blocking one
//! with the same name and the same arguments, without `.await`
//! (`client.workflows().list()`), and `stream` becomes an iterator. It runs
//! the async client on its own single-threaded runtime, shared by clones and
//! resource handles; do not call it from inside an async runtime.
//!
//! ```no_run
//! use noxus_sdk::blocking::Client;
//!
//! let client = Client::builder().api_key("noxus_…").base_url("http://127.0.0.1:8080").build()?;
//! println!("{}", client.me()?.workspace_name);
//! for workflow in client.workflows().list()? {
//!     println!("{} {}", workflow.id, workflow.name);
//! }
//! for workflow in client.workflows().stream(None) {
//!     println!("{}", workflow?.name);
//! }
//! # Ok::<(), noxus_sdk::Error>(())
//! ```
//!
//! A test checks that the two flavours have the same calls
//! (`tests/sdk/blocking.rs`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt as _};
use noxus_api::{
    ApiKeyInfo, AuditEntry, CreateApiKey, CreatedApiKey, Deleted, KeyAddressInfo, KeyUsage, Me,
    Page, RateLimitSpec, Workflow, WorkflowVersion, WorkflowVersionInfo, WorkflowVersionWrite,
    WorkflowWrite, Workspace, WorkspaceUsage,
};
use serde_json::Value;

use crate::config::{Config, ConfigError, Environment};
use crate::error::Result;
use crate::resources::{AuditFilter, ListWorkflows};
use crate::runs::{NodeIo, RunDeletion, RunEvent, StartRun};

/// The runtime every blocking call runs on.
#[derive(Clone)]
struct Runtime(Arc<tokio::runtime::Runtime>);

impl Runtime {
    fn new() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ConfigError::HttpClient(format!("cannot start a runtime: {e}")))?;
        Ok(Self(Arc::new(runtime)))
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.0.block_on(future)
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Runtime")
    }
}

/// The blocking twin of [`crate::Client`]. Cheap to clone (clones share the
/// connection pool and the runtime).
#[derive(Debug, Clone)]
pub struct Client {
    inner: crate::Client,
    runtime: Runtime,
}

impl Client {
    /// See [`crate::Client::new`].
    pub fn new(api_key: impl Into<String>) -> Result<Self> {
        Self::wrap(crate::Client::new(api_key)?)
    }

    /// See [`crate::Client::from_env`].
    pub fn from_env() -> Result<Self> {
        Self::from_config(Config::from_env()?)
    }

    /// See [`crate::Client::for_environment`].
    pub fn for_environment(environment: Environment) -> Result<Self> {
        Self::from_config(Config::from_env_for(environment)?)
    }

    /// See [`crate::Client::from_config`].
    pub fn from_config(config: Config) -> Result<Self> {
        Self::wrap(crate::Client::from_config(config)?)
    }

    /// See [`crate::Client::builder`].
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            inner: crate::Client::builder(),
        }
    }

    /// Wraps an async client.
    pub fn wrap(inner: crate::Client) -> Result<Self> {
        Ok(Self {
            inner,
            runtime: Runtime::new()?,
        })
    }

    /// The async client inside.
    pub fn async_client(&self) -> &crate::Client {
        &self.inner
    }

    /// See [`crate::Client::config`].
    pub fn config(&self) -> &Config {
        self.inner.config()
    }

    /// See [`crate::Client::me`].
    pub fn me(&self) -> Result<Me> {
        self.runtime.block_on(self.inner.me())
    }

    /// See [`crate::Client::models`].
    pub fn models(&self) -> Models {
        Models {
            inner: self.inner.models(),
            runtime: self.runtime.clone(),
        }
    }

    /// See [`crate::Client::nodes`].
    pub fn nodes(&self) -> Nodes {
        Nodes {
            inner: self.inner.nodes(),
            runtime: self.runtime.clone(),
        }
    }

    /// See [`crate::Client::workflows`].
    pub fn workflows(&self) -> Workflows {
        Workflows {
            inner: self.inner.workflows(),
            runtime: self.runtime.clone(),
        }
    }

    /// See [`crate::Client::runs`].
    pub fn runs(&self) -> Runs {
        Runs {
            inner: self.inner.runs(),
            runtime: self.runtime.clone(),
        }
    }

    /// See [`crate::Client::admin`].
    pub fn admin(&self) -> Admin {
        Admin {
            inner: self.inner.admin(),
            runtime: self.runtime.clone(),
        }
    }
}

/// The blocking twin of [`crate::ClientBuilder`].
#[derive(Debug)]
pub struct ClientBuilder {
    inner: crate::ClientBuilder,
}

impl ClientBuilder {
    /// See [`crate::ClientBuilder::api_key`].
    pub fn api_key(self, key: impl Into<String>) -> Self {
        Self {
            inner: self.inner.api_key(key),
        }
    }

    /// See [`crate::ClientBuilder::config`].
    pub fn config(self, config: Config) -> Self {
        Self {
            inner: self.inner.config(config),
        }
    }

    /// See [`crate::ClientBuilder::base_url`].
    pub fn base_url(self, url: impl Into<String>) -> Self {
        Self {
            inner: self.inner.base_url(url),
        }
    }

    /// See [`crate::ClientBuilder::timeout`].
    pub fn timeout(self, timeout: Duration) -> Self {
        Self {
            inner: self.inner.timeout(timeout),
        }
    }

    /// See [`crate::ClientBuilder::max_retries`].
    pub fn max_retries(self, retries: u32) -> Self {
        Self {
            inner: self.inner.max_retries(retries),
        }
    }

    /// See [`crate::ClientBuilder::max_retry_wait`].
    pub fn max_retry_wait(self, wait: Duration) -> Self {
        Self {
            inner: self.inner.max_retry_wait(wait),
        }
    }

    /// See [`crate::ClientBuilder::header`].
    pub fn header(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            inner: self.inner.header(name, value),
        }
    }

    /// See [`crate::ClientBuilder::user_agent`].
    pub fn user_agent(self, agent: impl Into<String>) -> Self {
        Self {
            inner: self.inner.user_agent(agent),
        }
    }

    /// See [`crate::ClientBuilder::http_client`].
    pub fn http_client(self, client: reqwest::Client) -> Self {
        Self {
            inner: self.inner.http_client(client),
        }
    }

    /// See [`crate::ClientBuilder::build`].
    pub fn build(self) -> Result<Client> {
        Client::wrap(self.inner.build()?)
    }
}

/// The blocking twin of [`crate::Models`].
#[derive(Debug, Clone)]
pub struct Models {
    inner: crate::Models,
    runtime: Runtime,
}

impl Models {
    /// See [`crate::Models::list`].
    pub fn list(&self) -> Result<Vec<Value>> {
        self.runtime.block_on(self.inner.list())
    }

    /// See [`crate::Models::presets`].
    pub fn presets(&self) -> Result<Vec<Value>> {
        self.runtime.block_on(self.inner.presets())
    }
}

/// The blocking twin of [`crate::Nodes`].
#[derive(Debug, Clone)]
pub struct Nodes {
    inner: crate::Nodes,
    runtime: Runtime,
}

impl Nodes {
    /// See [`crate::Nodes::list`].
    pub fn list(&self) -> Result<Vec<Value>> {
        self.runtime.block_on(self.inner.list())
    }
}

/// The blocking twin of [`crate::Workflows`].
#[derive(Debug, Clone)]
pub struct Workflows {
    inner: crate::Workflows,
    runtime: Runtime,
}

/// Every workflow, page by page as it is iterated: the blocking twin of
/// [`crate::Workflows::stream`].
pub struct WorkflowIter {
    stream: Pin<Box<dyn Stream<Item = Result<Workflow>> + Send>>,
    runtime: Runtime,
}

impl fmt::Debug for WorkflowIter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkflowIter").finish_non_exhaustive()
    }
}

impl Iterator for WorkflowIter {
    type Item = Result<Workflow>;

    fn next(&mut self) -> Option<Self::Item> {
        self.runtime.block_on(self.stream.next())
    }
}

impl Workflows {
    /// See [`crate::Workflows::list`]: one page.
    pub fn list(&self) -> Result<Vec<Workflow>> {
        self.runtime.block_on(self.inner.list())
    }

    /// See [`crate::Workflows::page`].
    pub fn page(&self, params: &ListWorkflows) -> Result<Page<Workflow>> {
        self.runtime.block_on(self.inner.page(params))
    }

    /// See [`crate::Workflows::stream`]: an iterator here.
    pub fn stream(&self, kind: Option<&str>) -> WorkflowIter {
        WorkflowIter {
            stream: Box::pin(self.inner.stream(kind)),
            runtime: self.runtime.clone(),
        }
    }

    /// See [`crate::Workflows::list_all`].
    pub fn list_all(&self, kind: Option<&str>) -> Result<Vec<Workflow>> {
        self.runtime.block_on(self.inner.list_all(kind))
    }

    /// See [`crate::Workflows::create`].
    pub fn create(&self, name: &str) -> Result<Workflow> {
        self.runtime.block_on(self.inner.create(name))
    }

    /// See [`crate::Workflows::save`].
    pub fn save(&self, workflow: &WorkflowWrite) -> Result<Workflow> {
        self.runtime.block_on(self.inner.save(workflow))
    }

    /// See [`crate::Workflows::get`].
    pub fn get(&self, id: &str) -> Result<Workflow> {
        self.runtime.block_on(self.inner.get(id))
    }

    /// See [`crate::Workflows::update`].
    pub fn update(&self, id: &str, workflow: &WorkflowWrite, force: bool) -> Result<Workflow> {
        self.runtime
            .block_on(self.inner.update(id, workflow, force))
    }

    /// See [`crate::Workflows::delete`].
    pub fn delete(&self, id: &str) -> Result<Deleted> {
        self.runtime.block_on(self.inner.delete(id))
    }

    /// See [`crate::Workflows::versions`].
    pub fn versions(&self, id: &str) -> Result<Vec<WorkflowVersion>> {
        self.runtime.block_on(self.inner.versions(id))
    }

    /// See [`crate::Workflows::versions_page`].
    pub fn versions_page(
        &self,
        id: &str,
        page: u64,
        size: u64,
        include_definition: bool,
    ) -> Result<Page<WorkflowVersionInfo>> {
        self.runtime
            .block_on(self.inner.versions_page(id, page, size, include_definition))
    }

    /// See [`crate::Workflows::save_version`].
    pub fn save_version(
        &self,
        id: &str,
        version: &WorkflowVersionWrite,
    ) -> Result<WorkflowVersion> {
        self.runtime.block_on(self.inner.save_version(id, version))
    }

    /// See [`crate::Workflows::update_version`].
    pub fn update_version(
        &self,
        id: &str,
        version_id: &str,
        version: &WorkflowVersionWrite,
    ) -> Result<WorkflowVersion> {
        self.runtime
            .block_on(self.inner.update_version(id, version_id, version))
    }

    /// See [`crate::Workflows::run`]: the run's `wait` blocks here.
    pub fn run(&self, id: &str, input: Value) -> Result<Run> {
        let run = self.runtime.block_on(self.inner.run(id, input))?;
        Ok(Run::wrap(run, &self.runtime))
    }

    /// See [`crate::Workflows::run_with`].
    pub fn run_with(&self, id: &str, start: &StartRun) -> Result<Run> {
        let run = self.runtime.block_on(self.inner.run_with(id, start))?;
        Ok(Run::wrap(run, &self.runtime))
    }

    /// See [`crate::Workflows::run_sync`].
    pub fn run_sync(&self, id: &str, input: Value) -> Result<Run> {
        let run = self.runtime.block_on(self.inner.run_sync(id, input))?;
        Ok(Run::wrap(run, &self.runtime))
    }

    /// See [`crate::Workflows::run_sync_output`].
    pub fn run_sync_output(&self, id: &str, input: Value) -> Result<Value> {
        self.runtime.block_on(self.inner.run_sync_output(id, input))
    }
}

/// The blocking twin of [`crate::Run`]: its fields are read through it
/// (`run.id`, `run.status`, `run.output`), its calls block.
#[derive(Clone)]
pub struct Run {
    inner: crate::Run,
    runtime: Runtime,
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl std::ops::Deref for Run {
    type Target = crate::Run;

    fn deref(&self) -> &crate::Run {
        &self.inner
    }
}

/// The events of a run, as they arrive: the blocking twin of
/// [`crate::Run::stream`] and [`crate::Runs::events`].
pub struct RunEventIter {
    stream: Pin<Box<dyn Stream<Item = Result<RunEvent>> + Send>>,
    runtime: Runtime,
}

impl fmt::Debug for RunEventIter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunEventIter").finish_non_exhaustive()
    }
}

impl Iterator for RunEventIter {
    type Item = Result<RunEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        self.runtime.block_on(self.stream.next())
    }
}

impl Run {
    fn wrap(inner: crate::Run, runtime: &Runtime) -> Self {
        Self {
            inner,
            runtime: runtime.clone(),
        }
    }

    /// The async client's run (its data, and calls to `.await`).
    pub fn into_async(self) -> crate::Run {
        self.inner
    }

    /// See [`crate::Run::refresh`].
    pub fn refresh(&self) -> Result<Run> {
        let run = self.runtime.block_on(self.inner.refresh())?;
        Ok(Self::wrap(run, &self.runtime))
    }

    /// See [`crate::Run::wait`]: blocks until the run ends.
    pub fn wait(&self) -> Result<Run> {
        let run = self.runtime.block_on(self.inner.wait())?;
        Ok(Self::wrap(run, &self.runtime))
    }

    /// See [`crate::Run::wait_timeout`].
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Run> {
        let run = self.runtime.block_on(self.inner.wait_timeout(timeout))?;
        Ok(Self::wrap(run, &self.runtime))
    }

    /// See [`crate::Run::stream`]: an iterator here.
    pub fn stream(&self) -> RunEventIter {
        RunEventIter {
            stream: Box::pin(self.inner.stream()),
            runtime: self.runtime.clone(),
        }
    }

    /// See [`crate::Run::stop`].
    pub fn stop(&self) -> Result<Run> {
        let run = self.runtime.block_on(self.inner.stop())?;
        Ok(Self::wrap(run, &self.runtime))
    }

    /// See [`crate::Run::delete`].
    pub fn delete(&self) -> Result<RunDeletion> {
        self.runtime.block_on(self.inner.delete())
    }

    /// See [`crate::Run::data`].
    pub fn data(&self) -> Result<Value> {
        self.runtime.block_on(self.inner.data())
    }

    /// See [`crate::Run::node_io`].
    pub fn node_io(&self, node_id: &str) -> Result<NodeIo> {
        self.runtime.block_on(self.inner.node_io(node_id))
    }
}

/// One page of runs: the blocking twin of [`crate::Runs::list`]'s `Page<Run>`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunPage {
    /// The runs of this page, newest first.
    pub items: Vec<Run>,
    /// How many runs there are in all (at least; the server counts one page ahead).
    pub total: u64,
    /// This page's number, from 1.
    pub page: u64,
    /// The page size.
    pub size: u64,
    /// How many pages there are.
    pub pages: u64,
}

/// The blocking twin of [`crate::Runs`].
#[derive(Debug, Clone)]
pub struct Runs {
    inner: crate::Runs,
    runtime: Runtime,
}

impl Runs {
    fn wrap(&self, run: crate::Run) -> Run {
        Run::wrap(run, &self.runtime)
    }

    /// See [`crate::Runs::list`].
    pub fn list(&self, workflow_id: &str, page: u64, size: u64) -> Result<RunPage> {
        let runs = self
            .runtime
            .block_on(self.inner.list(workflow_id, page, size))?;
        Ok(RunPage {
            total: runs.total,
            page: runs.page,
            size: runs.size,
            pages: runs.pages,
            items: runs.items.into_iter().map(|r| self.wrap(r)).collect(),
        })
    }

    /// See [`crate::Runs::get`].
    pub fn get(&self, workflow_id: &str, run_id: &str) -> Result<Run> {
        let run = self.runtime.block_on(self.inner.get(workflow_id, run_id))?;
        Ok(self.wrap(run))
    }

    /// See [`crate::Runs::stop`].
    pub fn stop(&self, run_id: &str) -> Result<Run> {
        let run = self.runtime.block_on(self.inner.stop(run_id))?;
        Ok(self.wrap(run))
    }

    /// See [`crate::Runs::delete`].
    pub fn delete(&self, run_id: &str) -> Result<RunDeletion> {
        self.runtime.block_on(self.inner.delete(run_id))
    }

    /// See [`crate::Runs::data`].
    pub fn data(&self, run_id: &str) -> Result<Value> {
        self.runtime.block_on(self.inner.data(run_id))
    }

    /// See [`crate::Runs::node_io`].
    pub fn node_io(&self, run_id: &str, node_id: &str) -> Result<NodeIo> {
        self.runtime.block_on(self.inner.node_io(run_id, node_id))
    }

    /// See [`crate::Runs::search`].
    pub fn search(&self, query: &str, limit: u32, offset: u32) -> Result<Vec<Run>> {
        let runs = self
            .runtime
            .block_on(self.inner.search(query, limit, offset))?;
        Ok(runs.into_iter().map(|r| self.wrap(r)).collect())
    }

    /// See [`crate::Runs::events`]: an iterator here.
    pub fn events(&self, run_id: &str, after: Option<u64>) -> RunEventIter {
        RunEventIter {
            stream: Box::pin(self.inner.events(run_id, after)),
            runtime: self.runtime.clone(),
        }
    }
}

/// The blocking twin of [`crate::Admin`].
#[derive(Debug, Clone)]
pub struct Admin {
    inner: crate::Admin,
    runtime: Runtime,
}

impl Admin {
    /// See [`crate::Admin::workspaces`].
    pub fn workspaces(&self) -> Result<Vec<Workspace>> {
        self.runtime.block_on(self.inner.workspaces())
    }

    /// See [`crate::Admin::create_workspace`].
    pub fn create_workspace(&self, name: &str, description: Option<&str>) -> Result<Workspace> {
        self.runtime
            .block_on(self.inner.create_workspace(name, description))
    }

    /// See [`crate::Admin::delete_workspace`].
    pub fn delete_workspace(&self, id: &str) -> Result<Deleted> {
        self.runtime.block_on(self.inner.delete_workspace(id))
    }

    /// See [`crate::Admin::workspace_usage`].
    pub fn workspace_usage(
        &self,
        workspace_id: &str,
        hours: u32,
        daily: bool,
    ) -> Result<WorkspaceUsage> {
        self.runtime
            .block_on(self.inner.workspace_usage(workspace_id, hours, daily))
    }

    /// See [`crate::Admin::set_workspace_rate_limit`].
    pub fn set_workspace_rate_limit(
        &self,
        workspace_id: &str,
        limit: Option<RateLimitSpec>,
    ) -> Result<Workspace> {
        self.runtime
            .block_on(self.inner.set_workspace_rate_limit(workspace_id, limit))
    }

    /// See [`crate::Admin::audit`].
    pub fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        self.runtime.block_on(self.inner.audit(filter))
    }

    /// See [`crate::Admin::keys`].
    pub fn keys(&self, workspace_id: &str) -> Keys {
        Keys {
            inner: self.inner.keys(workspace_id),
            runtime: self.runtime.clone(),
        }
    }
}

/// The blocking twin of [`crate::Keys`].
#[derive(Debug, Clone)]
pub struct Keys {
    inner: crate::Keys,
    runtime: Runtime,
}

impl Keys {
    /// See [`crate::Keys::list`].
    pub fn list(&self) -> Result<Vec<ApiKeyInfo>> {
        self.runtime.block_on(self.inner.list())
    }

    /// See [`crate::Keys::get`].
    pub fn get(&self, key_id: &str) -> Result<ApiKeyInfo> {
        self.runtime.block_on(self.inner.get(key_id))
    }

    /// See [`crate::Keys::create`].
    pub fn create(&self, request: &CreateApiKey) -> Result<CreatedApiKey> {
        self.runtime.block_on(self.inner.create(request))
    }

    /// See [`crate::Keys::revoke`].
    pub fn revoke(&self, key_id: &str) -> Result<ApiKeyInfo> {
        self.runtime.block_on(self.inner.revoke(key_id))
    }

    /// See [`crate::Keys::usage`].
    pub fn usage(&self, key_id: &str, hours: u32, daily: bool) -> Result<KeyUsage> {
        self.runtime
            .block_on(self.inner.usage(key_id, hours, daily))
    }

    /// See [`crate::Keys::addresses`].
    pub fn addresses(&self, key_id: &str, page: u64, size: u64) -> Result<Page<KeyAddressInfo>> {
        self.runtime
            .block_on(self.inner.addresses(key_id, page, size))
    }

    /// See [`crate::Keys::rotate`].
    pub fn rotate(&self, key_id: &str, grace: Duration) -> Result<CreatedApiKey> {
        self.runtime.block_on(self.inner.rotate(key_id, grace))
    }
}
