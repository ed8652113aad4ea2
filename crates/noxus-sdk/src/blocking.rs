//! A blocking client for programs without an async runtime (scripts, plain
//! `#[test]`s). It runs the async client on its own single-threaded
//! runtime; do not call it from inside an async runtime.

use std::time::Duration;

use noxus_api::{
    ApiKeyInfo, CreateApiKey, CreatedApiKey, Deleted, Me, Page, Workflow, WorkflowVersion,
    WorkflowVersionWrite, WorkflowWrite, Workspace,
};
use serde_json::Value;

use crate::config::{Config, ConfigError, Environment};
use crate::error::Result;
use crate::resources::ListWorkflows;

/// The blocking twin of [`crate::Client`]; same methods, without `.await`.
///
/// ```no_run
/// let client = noxus_sdk::blocking::Client::from_env()?;
/// println!("{}", client.me()?.workspace_name);
/// # Ok::<(), noxus_sdk::Error>(())
/// ```
#[derive(Debug)]
pub struct Client {
    inner: crate::Client,
    runtime: tokio::runtime::Runtime,
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

    /// Wraps an async client built with [`crate::Client::builder`].
    pub fn wrap(inner: crate::Client) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ConfigError::HttpClient(format!("cannot start a runtime: {e}")))?;
        Ok(Self { inner, runtime })
    }

    /// The async client inside.
    pub fn async_client(&self) -> &crate::Client {
        &self.inner
    }

    /// See [`crate::Client::me`].
    pub fn me(&self) -> Result<Me> {
        self.runtime.block_on(self.inner.me())
    }

    /// See [`crate::Models::list`].
    pub fn models(&self) -> Result<Vec<Value>> {
        self.runtime.block_on(self.inner.models().list())
    }

    /// See [`crate::Models::presets`].
    pub fn presets(&self) -> Result<Vec<Value>> {
        self.runtime.block_on(self.inner.models().presets())
    }

    /// See [`crate::Nodes::list`].
    pub fn nodes(&self) -> Result<Vec<Value>> {
        self.runtime.block_on(self.inner.nodes().list())
    }

    /// See [`crate::Workflows::list`].
    pub fn workflows(&self) -> Result<Vec<Workflow>> {
        self.runtime.block_on(self.inner.workflows().list())
    }

    /// See [`crate::Workflows::page`].
    pub fn workflows_page(&self, params: &ListWorkflows) -> Result<Page<Workflow>> {
        self.runtime.block_on(self.inner.workflows().page(params))
    }

    /// See [`crate::Workflows::create`].
    pub fn create_workflow(&self, name: &str) -> Result<Workflow> {
        self.runtime.block_on(self.inner.workflows().create(name))
    }

    /// See [`crate::Workflows::save`].
    pub fn save_workflow(&self, workflow: &WorkflowWrite) -> Result<Workflow> {
        self.runtime.block_on(self.inner.workflows().save(workflow))
    }

    /// See [`crate::Workflows::get`].
    pub fn workflow(&self, id: &str) -> Result<Workflow> {
        self.runtime.block_on(self.inner.workflows().get(id))
    }

    /// See [`crate::Workflows::update`].
    pub fn update_workflow(
        &self,
        id: &str,
        workflow: &WorkflowWrite,
        force: bool,
    ) -> Result<Workflow> {
        self.runtime
            .block_on(self.inner.workflows().update(id, workflow, force))
    }

    /// See [`crate::Workflows::delete`].
    pub fn delete_workflow(&self, id: &str) -> Result<Deleted> {
        self.runtime.block_on(self.inner.workflows().delete(id))
    }

    /// See [`crate::Workflows::versions`].
    pub fn workflow_versions(&self, id: &str) -> Result<Vec<WorkflowVersion>> {
        self.runtime.block_on(self.inner.workflows().versions(id))
    }

    /// See [`crate::Workflows::save_version`].
    pub fn save_workflow_version(
        &self,
        id: &str,
        version: &WorkflowVersionWrite,
    ) -> Result<WorkflowVersion> {
        self.runtime
            .block_on(self.inner.workflows().save_version(id, version))
    }

    /// See [`crate::Admin::workspaces`].
    pub fn workspaces(&self) -> Result<Vec<Workspace>> {
        self.runtime.block_on(self.inner.admin().workspaces())
    }

    /// See [`crate::Admin::create_workspace`].
    pub fn create_workspace(&self, name: &str, description: Option<&str>) -> Result<Workspace> {
        self.runtime
            .block_on(self.inner.admin().create_workspace(name, description))
    }

    /// See [`crate::Admin::delete_workspace`].
    pub fn delete_workspace(&self, id: &str) -> Result<Deleted> {
        self.runtime
            .block_on(self.inner.admin().delete_workspace(id))
    }

    /// See [`crate::Keys::list`].
    pub fn keys(&self, workspace_id: &str) -> Result<Vec<ApiKeyInfo>> {
        self.runtime
            .block_on(self.inner.admin().keys(workspace_id).list())
    }

    /// See [`crate::Keys::create`].
    pub fn create_key(&self, workspace_id: &str, request: &CreateApiKey) -> Result<CreatedApiKey> {
        self.runtime
            .block_on(self.inner.admin().keys(workspace_id).create(request))
    }

    /// See [`crate::Keys::revoke`].
    pub fn revoke_key(&self, workspace_id: &str, key_id: &str) -> Result<ApiKeyInfo> {
        self.runtime
            .block_on(self.inner.admin().keys(workspace_id).revoke(key_id))
    }

    /// See [`crate::Keys::rotate`].
    pub fn rotate_key(
        &self,
        workspace_id: &str,
        key_id: &str,
        grace: Duration,
    ) -> Result<CreatedApiKey> {
        self.runtime
            .block_on(self.inner.admin().keys(workspace_id).rotate(key_id, grace))
    }
}
