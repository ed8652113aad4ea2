//! The blocking client, from a plain `#[test]` without an async runtime,
//! and its parity with the async client: every async call has a blocking
//! twin with the same name.

use std::collections::{BTreeMap, BTreeSet};

use noxus_api::{CreateApiKey, Permission, Role, WorkflowVersionWrite, WorkflowWrite};
use noxus_testkit::TestApp;

/// `pub fn` / `pub async fn` names per `impl Type` block of a source file.
fn public_methods(source: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut methods: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in source.lines() {
        if let Some(rest) = line.strip_prefix("impl") {
            // `impl Type {`, `impl<'c> Type<'c> {`, `impl Iterator for X {` (skipped).
            let rest = rest.trim_start_matches(|c| c != ' ').trim();
            current = (!rest.contains(" for "))
                .then(|| rest.split(['<', ' ', '{']).next().unwrap_or("").to_owned())
                .filter(|name| !name.is_empty());
            continue;
        }
        if line.starts_with('}') {
            current = None;
            continue;
        }
        let trimmed = line.trim_start();
        let name = trimmed
            .strip_prefix("pub async fn ")
            .or_else(|| trimmed.strip_prefix("pub fn "));
        if let (Some(ty), Some(name)) = (&current, name) {
            let name = name.split(['(', '<']).next().unwrap_or("").to_owned();
            methods.entry(ty.clone()).or_default().insert(name);
        }
    }
    methods
}

#[test]
fn every_async_call_has_a_blocking_twin_with_the_same_name() {
    let mut async_api = public_methods(include_str!("../../src/client.rs"));
    async_api.extend(public_methods(include_str!("../../src/resources.rs")));
    async_api.extend(public_methods(include_str!("../../src/runs.rs")));
    let blocking_api = public_methods(include_str!("../../src/blocking.rs"));
    for ty in [
        "Client",
        "ClientBuilder",
        "Models",
        "Nodes",
        "Workflows",
        "Runs",
        "Run",
        "Admin",
        "Keys",
    ] {
        let theirs = async_api
            .get(ty)
            .unwrap_or_else(|| panic!("async {ty} found"));
        let ours = blocking_api
            .get(ty)
            .unwrap_or_else(|| panic!("blocking::{ty} is missing"));
        let missing: Vec<&String> = theirs.difference(ours).collect();
        assert!(missing.is_empty(), "blocking::{ty} lacks {missing:?}");
        assert!(!theirs.is_empty(), "the scan found {ty}'s methods");
    }
    // The scan reads every call, not a few.
    let total: usize = async_api.values().map(BTreeSet::len).sum();
    assert!(
        total >= 40,
        "only {total} async methods found: {async_api:?}"
    );
}

#[test]
fn the_blocking_client_works_without_async() {
    // The platform runs on its own runtime's threads; the test thread blocks.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(TestApp::spawn());
    let member = runtime.block_on(app.user_with_role(Role::Member));
    let client = noxus_sdk::blocking::Client::builder()
        .api_key(&member.key)
        .base_url(&app.base_url)
        .build()
        .unwrap();
    assert_eq!(client.me().unwrap().role, Role::Member);
    let workflows = client.workflows();
    let created = workflows.create("from a script").unwrap();
    assert_eq!(workflows.get(&created.id).unwrap().name, "from a script");
    assert_eq!(workflows.list().unwrap().len(), 1);
    let renamed = workflows
        .update(&created.id, &WorkflowWrite::new("renamed"), false)
        .unwrap();
    assert_eq!(renamed.name, "renamed");
    let version = workflows
        .save_version(
            &created.id,
            &WorkflowVersionWrite::new("v1", serde_json::json!({"nodes": [], "edges": []})),
        )
        .unwrap();
    assert_eq!(workflows.versions(&created.id).unwrap()[0].id, version.id);
    // The stream is an iterator here, and clones work from other threads.
    let names: Vec<String> = workflows.stream(None).map(|w| w.unwrap().name).collect();
    assert_eq!(names, vec!["renamed"]);
    let clone = client.clone();
    let from_thread = std::thread::spawn(move || clone.models().list().unwrap().len())
        .join()
        .unwrap();
    assert!(from_thread > 0);
    assert!(!client.nodes().list().unwrap().is_empty());
    assert_eq!(workflows.list_all(None).unwrap().len(), 1);
    assert!(workflows.delete(&created.id).unwrap().deleted);
    let err = workflows.get(&created.id).unwrap_err();
    assert_eq!(err.status(), Some(404));

    // Keys, through the admin handle, with a key that may manage keys.
    let owner = noxus_sdk::blocking::Client::builder()
        .api_key(&app.owner_key)
        .base_url(&app.base_url)
        .build()
        .unwrap();
    let keys = owner.admin().keys(&app.workspace_id);
    let made = keys
        .create(&CreateApiKey::new("script key").permissions([Permission::WorkflowsRead]))
        .unwrap();
    assert_eq!(keys.get(&made.id).unwrap().name, "script key");
    assert!(keys.list().unwrap().iter().any(|k| k.id == made.id));
    assert_eq!(keys.revoke(&made.id).unwrap().status, "revoked");
    assert!(owner
        .admin()
        .workspaces()
        .unwrap()
        .iter()
        .any(|w| w.id == app.workspace_id));
    runtime.block_on(app.stop());
}

#[test]
fn a_blocking_run_is_started_waited_for_and_streamed() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let app = runtime.block_on(TestApp::spawn());
    let member = runtime.block_on(app.user_with_role(Role::Member));
    let client = noxus_sdk::blocking::Client::builder()
        .api_key(&member.key)
        .base_url(&app.base_url)
        .build()
        .unwrap();
    let edge = |from: &str, to: &str| {
        serde_json::json!({"from_id": {"node_id": from, "connector_name": "output"},
                           "to_id": {"node_id": to, "connector_name": "input"}})
    };
    let mut write = WorkflowWrite::new("shout");
    write.definition = Some(serde_json::json!({
        "nodes": [
            {"id": "in", "type": "InputNode", "node_config": {"label": "Word"}},
            {"id": "c", "type": "ComposeTextNode", "node_config": {"template": "{input}!"}},
            {"id": "out", "type": "OutputNode"}
        ],
        "edges": [edge("in", "c"), edge("c", "out")]
    }));
    let workflow = client.workflows().save(&write).unwrap();
    let run = client
        .workflows()
        .run(&workflow.id, serde_json::json!({"Word": "hey"}))
        .unwrap();
    let done = run.wait().unwrap();
    assert_eq!(done.status, noxus_sdk::RunStatus::Completed);
    assert_eq!(
        done.output,
        Some(serde_json::json!({"out::output": {"text": "hey!"}}))
    );
    let events: Vec<noxus_sdk::RunEvent> = run.stream().map(Result::unwrap).collect();
    assert!(events.last().unwrap().is_terminal());
    let page = client.runs().list(&workflow.id, 1, 10).unwrap();
    assert_eq!(page.items[0].id, run.id);
    let failed = client
        .workflows()
        .run(&workflow.id, serde_json::json!({}))
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(
        matches!(failed, noxus_sdk::Error::RunFailed(_)),
        "{failed:?}"
    );
    runtime.block_on(app.stop());
}
