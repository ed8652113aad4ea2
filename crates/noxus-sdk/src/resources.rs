//! The API's resources, hanging off the client: `client.workflows().list()`.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::stream::{self, Stream};
use noxus_api::{
    ApiKeyInfo, AuditEntry, CreateApiKey, CreateWorkspace, CreatedApiKey, Deleted, KeyAddressInfo,
    KeyUsage, Page, RateLimitSpec, RotateApiKey, UpdateWorkspace, Workflow, WorkflowVersion,
    WorkflowVersionInfo, WorkflowVersionWrite, WorkflowWrite, Workspace, WorkspaceUsage,
};
use serde_json::Value;

use crate::client::Client;
use crate::error::Result;
use crate::runs::{Run, Runs, StartRun};

/// `GET /v1/models/llms` and `/presets`.
#[derive(Debug, Clone)]
pub struct Models {
    client: Client,
}

impl Models {
    pub(crate) fn new(client: &Client) -> Self {
        Self {
            client: client.clone(),
        }
    }

    /// The language models (objects with at least `id` and `name`).
    pub async fn list(&self) -> Result<Vec<Value>> {
        self.client.get("/v1/models/llms", &[]).await
    }

    /// The chat presets.
    pub async fn presets(&self) -> Result<Vec<Value>> {
        self.client.get("/v1/models/llms/presets", &[]).await
    }
}

/// `GET /v1/nodes`.
#[derive(Debug, Clone)]
pub struct Nodes {
    client: Client,
}

impl Nodes {
    pub(crate) fn new(client: &Client) -> Self {
        Self {
            client: client.clone(),
        }
    }

    /// The node definitions of the workflow builder.
    pub async fn list(&self) -> Result<Vec<Value>> {
        self.client.get("/v1/nodes", &[]).await
    }
}

/// Which workflows to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListWorkflows {
    /// Page number, from 1.
    pub page: u64,
    /// Page size, 1 to 100.
    pub size: u64,
    /// `Some("flow")`, `Some("agent_flow")` or all.
    pub kind: Option<String>,
}

impl Default for ListWorkflows {
    fn default() -> Self {
        Self {
            page: 1,
            size: 10,
            kind: Some("flow".to_owned()),
        }
    }
}

/// `/v1/workflows`.
#[derive(Debug, Clone)]
pub struct Workflows {
    client: Client,
}

impl Workflows {
    pub(crate) fn new(client: &Client) -> Self {
        Self {
            client: client.clone(),
        }
    }

    /// **One page**: the first 10 flows, as the guide's `workflows.list()`.
    /// [`Workflows::stream`] goes through every page, [`Workflows::list_all`]
    /// collects them.
    pub async fn list(&self) -> Result<Vec<Workflow>> {
        Ok(self.page(&ListWorkflows::default()).await?.items)
    }

    /// One page, with its totals.
    pub async fn page(&self, params: &ListWorkflows) -> Result<Page<Workflow>> {
        let mut query = vec![
            ("page", params.page.to_string()),
            ("size", params.size.to_string()),
        ];
        if let Some(kind) = &params.kind {
            query.push(("type", kind.clone()));
        }
        self.client.get("/v1/workflows", &query).await
    }

    /// Every workflow of a type (`None`: all), fetched page by page (100 a
    /// request) as the stream is consumed. The stream owns what it needs
    /// (`'static`): it can be moved into a spawned task.
    ///
    /// ```no_run
    /// use futures_util::TryStreamExt as _;
    ///
    /// # async fn demo(client: noxus_sdk::Client) -> noxus_sdk::Result<()> {
    /// let mut workflows = std::pin::pin!(client.workflows().stream(Some("flow")));
    /// while let Some(workflow) = workflows.try_next().await? {
    ///     println!("{} {}", workflow.id, workflow.name);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn stream(&self, kind: Option<&str>) -> impl Stream<Item = Result<Workflow>> + 'static {
        let client = self.client.clone();
        let first = ListWorkflows {
            page: 1,
            size: 100,
            kind: kind.map(str::to_owned),
        };
        stream::try_unfold(
            (Some(first), VecDeque::new()),
            move |(mut next, mut buffer)| {
                let client = client.clone();
                async move {
                    loop {
                        if let Some(item) = buffer.pop_front() {
                            return Ok(Some((item, (next, buffer))));
                        }
                        let Some(params) = next.take() else {
                            return Ok(None);
                        };
                        let page = Workflows::new(&client).page(&params).await?;
                        if page.items.is_empty() {
                            return Ok(None);
                        }
                        if page.page < page.pages {
                            next = Some(ListWorkflows {
                                page: params.page + 1,
                                ..params
                            });
                        }
                        buffer.extend(page.items);
                    }
                }
            },
        )
    }

    /// Every workflow of a type (`None`: all), all pages collected
    /// ([`Workflows::stream`], gathered).
    pub async fn list_all(&self, kind: Option<&str>) -> Result<Vec<Workflow>> {
        use futures_util::TryStreamExt as _;
        self.stream(kind).try_collect().await
    }

    /// Creates an empty flow named `name` (the guide's `workflows.create(name=...)`).
    pub async fn create(&self, name: &str) -> Result<Workflow> {
        self.save(&WorkflowWrite::new(name)).await
    }

    /// Saves a new workflow with its definition.
    pub async fn save(&self, workflow: &WorkflowWrite) -> Result<Workflow> {
        self.client.post("/v1/workflows", workflow).await
    }

    /// One workflow.
    pub async fn get(&self, id: &str) -> Result<Workflow> {
        self.client
            .get(&format!("/v1/workflows/{}", segment(id)), &[])
            .await
    }

    /// Replaces name, type and definition; `force` allows changing the type.
    pub async fn update(
        &self,
        id: &str,
        workflow: &WorkflowWrite,
        force: bool,
    ) -> Result<Workflow> {
        let force = if force { "True" } else { "False" };
        self.client
            .patch(
                &format!("/v1/workflows/{}", segment(id)),
                &[("force", force.to_owned())],
                workflow,
            )
            .await
    }

    /// Deletes a workflow and its versions.
    pub async fn delete(&self, id: &str) -> Result<Deleted> {
        self.client
            .delete(&format!("/v1/workflows/{}", segment(id)))
            .await
    }

    /// Every version of a workflow with its definition, oldest first (as
    /// the official client's `list_versions`; as many as the server's
    /// versions quota allows). [`Workflows::versions_page`] reads them a page
    /// at a time.
    pub async fn versions(&self, id: &str) -> Result<Vec<WorkflowVersion>> {
        self.client
            .get(&format!("/v1/workflows/{}/versions", segment(id)), &[])
            .await
    }

    /// One page of a workflow's versions (`size` 1 to 100), oldest first;
    /// their definitions only with `include_definition`.
    pub async fn versions_page(
        &self,
        id: &str,
        page: u64,
        size: u64,
        include_definition: bool,
    ) -> Result<Page<WorkflowVersionInfo>> {
        self.client
            .get(
                &format!("/v1/workflows/{}/versions", segment(id)),
                &[
                    ("page", page.to_string()),
                    ("size", size.to_string()),
                    ("include_definition", include_definition.to_string()),
                ],
            )
            .await
    }

    /// Saves a version.
    pub async fn save_version(
        &self,
        id: &str,
        version: &WorkflowVersionWrite,
    ) -> Result<WorkflowVersion> {
        self.client
            .post(&format!("/v1/workflows/{}/versions", segment(id)), version)
            .await
    }

    /// Starts a run of a workflow with this input (`{"{input_node_id}::input":
    /// value}`, or keyed by the input nodes' labels) and returns it queued:
    /// [`Run::wait`] for its end, [`Run::stream`] for its events. Not retried.
    /// Needs `workflows:run`.
    ///
    /// ```no_run
    /// # async fn demo(client: noxus_sdk::Client, id: &str) -> noxus_sdk::Result<()> {
    /// let run = client.workflows().run(id, serde_json::json!({"Name": "Ada"})).await?;
    /// let done = run.wait().await?;
    /// println!("{:?}", done.output);
    /// # Ok(()) }
    /// ```
    pub async fn run(&self, id: &str, input: Value) -> Result<Run> {
        self.run_with(id, &StartRun::new(input)).await
    }

    /// [`Workflows::run`] with a saved version or a group.
    pub async fn run_with(&self, id: &str, start: &StartRun) -> Result<Run> {
        Runs::new(&self.client).start(id, start).await
    }

    /// Starts a run and waits on the server (up to 60 s) for its end: the
    /// run as it ended, or as it stands after 60 s (`queued` or
    /// `running`: [`Run::wait`] for the rest). A failed run is returned,
    /// not an error: look at its `status`. Not retried.
    pub async fn run_sync(&self, id: &str, input: Value) -> Result<Run> {
        let runs = Runs::new(&self.client);
        let run: Run = runs
            .start_and_wait(id, &StartRun::new(input), false)
            .await?;
        Ok(runs.bind(run))
    }

    /// [`Workflows::run_sync`], answered with the output only
    /// (`output_only=true`): `{"{output_node_id}::output": {"text": …}}`,
    /// empty when the run did not complete within 60 s or failed.
    pub async fn run_sync_output(&self, id: &str, input: Value) -> Result<Value> {
        Runs::new(&self.client)
            .start_and_wait(id, &StartRun::new(input), true)
            .await
    }

    /// Replaces a version's name, description and definition.
    pub async fn update_version(
        &self,
        id: &str,
        version_id: &str,
        version: &WorkflowVersionWrite,
    ) -> Result<WorkflowVersion> {
        self.client
            .patch(
                &format!(
                    "/v1/workflows/{}/versions/{}",
                    segment(id),
                    segment(version_id)
                ),
                &[],
                version,
            )
            .await
    }
}

/// `/v1/admin/...`: workspaces and API keys.
#[derive(Debug, Clone)]
pub struct Admin {
    client: Client,
}

impl Admin {
    pub(crate) fn new(client: &Client) -> Self {
        Self {
            client: client.clone(),
        }
    }

    /// Workspaces: all of the organization with a tenant-admin key, else the key's own.
    pub async fn workspaces(&self) -> Result<Vec<Workspace>> {
        self.client.get("/v1/admin/groups", &[]).await
    }

    /// Creates a workspace (tenant-admin keys); the key's owner becomes its owner.
    pub async fn create_workspace(
        &self,
        name: &str,
        description: Option<&str>,
    ) -> Result<Workspace> {
        let body = CreateWorkspace::new(name, description.map(str::to_owned));
        self.client.post("/v1/admin/groups", &body).await
    }

    /// Deletes a workspace with its keys and workflows (tenant-admin keys).
    pub async fn delete_workspace(&self, id: &str) -> Result<Deleted> {
        self.client
            .delete(&format!("/v1/admin/groups/{}", segment(id)))
            .await
    }

    /// Usage of all keys of a workspace over the last `hours` hours
    /// (`daily`: one point per day instead of per hour). Needs `keys:manage`.
    pub async fn workspace_usage(
        &self,
        workspace_id: &str,
        hours: u32,
        daily: bool,
    ) -> Result<WorkspaceUsage> {
        let query = usage_query(hours, daily);
        self.client
            .get(
                &format!("/v1/admin/groups/{}/usage", segment(workspace_id)),
                &query,
            )
            .await
    }

    /// Sets (or with `None` clears) the default rate limit of a workspace's keys.
    pub async fn set_workspace_rate_limit(
        &self,
        workspace_id: &str,
        limit: Option<RateLimitSpec>,
    ) -> Result<Workspace> {
        let body = UpdateWorkspace::new(limit);
        self.client
            .patch(
                &format!("/v1/admin/groups/{}", segment(workspace_id)),
                &[],
                &body,
            )
            .await
    }

    /// The audit log, newest first.
    pub async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let mut query = vec![("limit", filter.limit.to_string())];
        if let Some(ws) = &filter.workspace_id {
            query.push(("workspace_id", ws.clone()));
        }
        if let Some(action) = &filter.action {
            query.push(("action", action.clone()));
        }
        if let Some(before) = filter.before {
            query.push(("before", before.to_string()));
        }
        self.client.get("/v1/admin/audit", &query).await
    }

    /// The API keys of a workspace.
    pub fn keys(&self, workspace_id: &str) -> Keys {
        Keys {
            client: self.client.clone(),
            workspace_id: workspace_id.to_owned(),
        }
    }
}

/// `/v1/admin/groups/{id}/api-keys`.
#[derive(Debug, Clone)]
pub struct Keys {
    client: Client,
    workspace_id: String,
}

impl Keys {
    fn path(&self) -> String {
        format!("/v1/admin/groups/{}/api-keys", segment(&self.workspace_id))
    }

    /// Keys of the workspace (yours, or all with `keys:manage`); never their secrets.
    pub async fn list(&self) -> Result<Vec<ApiKeyInfo>> {
        self.client.get(&self.path(), &[]).await
    }

    /// One key.
    pub async fn get(&self, key_id: &str) -> Result<ApiKeyInfo> {
        self.client
            .get(&format!("{}/{}", self.path(), segment(key_id)), &[])
            .await
    }

    /// Creates a key; its secret is in the answer only. Not retried.
    pub async fn create(&self, request: &CreateApiKey) -> Result<CreatedApiKey> {
        self.client.post(&self.path(), request).await
    }

    /// Revokes a key at once and for good.
    pub async fn revoke(&self, key_id: &str) -> Result<ApiKeyInfo> {
        self.client
            .delete(&format!("{}/{}", self.path(), segment(key_id)))
            .await
    }

    /// Usage of one key over the last `hours` hours, hourly or `daily`.
    pub async fn usage(&self, key_id: &str, hours: u32, daily: bool) -> Result<KeyUsage> {
        let query = usage_query(hours, daily);
        self.client
            .get(
                &format!("{}/{}/usage", self.path(), segment(key_id)),
                &query,
            )
            .await
    }

    /// One page of the addresses a key was used from (`size` 1 to 100),
    /// most recently seen first; IPv6 addresses are counted per /64.
    pub async fn addresses(
        &self,
        key_id: &str,
        page: u64,
        size: u64,
    ) -> Result<Page<KeyAddressInfo>> {
        self.client
            .get(
                &format!("{}/{}/addresses", self.path(), segment(key_id)),
                &[("page", page.to_string()), ("size", size.to_string())],
            )
            .await
    }

    /// Replaces a key; the old one keeps working for `grace` (at most 7 days).
    pub async fn rotate(&self, key_id: &str, grace: Duration) -> Result<CreatedApiKey> {
        let body = RotateApiKey::new(grace.as_secs());
        self.client
            .post(
                &format!("{}/{}/rotate", self.path(), segment(key_id)),
                &body,
            )
            .await
    }
}

fn usage_query(hours: u32, daily: bool) -> Vec<(&'static str, String)> {
    vec![
        ("hours", hours.to_string()),
        ("bucket", if daily { "day" } else { "hour" }.to_owned()),
    ]
}

/// Which audit entries to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this workspace (tenant-admin keys may name any).
    pub workspace_id: Option<String>,
    /// Only actions starting with this, e.g. `api_key.`.
    pub action: Option<String>,
    /// Only entries older than this id.
    pub before: Option<i64>,
    /// At most this many (1 to 1000).
    pub limit: u32,
}

impl Default for AuditFilter {
    fn default() -> Self {
        Self {
            workspace_id: None,
            action: None,
            before: None,
            limit: 100,
        }
    }
}

/// Percent-encodes a path segment so that an id can never change the route.
pub(crate) fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
