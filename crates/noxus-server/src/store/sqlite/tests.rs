//! Unit tests of the SQLite store: pragmas, query plans, maintained totals.

use sqlx::Row;

use super::audit::{audit_search, bind_args, prefix_successor, Arg};
use super::usage::EVICT_ADDRESSES;
use super::workflows::{PAGE_OF_ALL, PAGE_OF_KIND, VERSION_PAGE, VERSION_PAGE_WITHOUT_DEFINITIONS};
use super::*;

/// An acknowledged commit survives a power loss: every connection of
/// the pool syncs the write-ahead log at each commit.
#[tokio::test]
async fn commits_are_synced_to_disk_at_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let mut connections = Vec::new();
    for _ in 0..3 {
        connections.push(store.pool.acquire().await.unwrap());
    }
    for connection in &mut connections {
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut **connection)
            .await
            .unwrap();
        assert_eq!(level, 2, "synchronous = FULL");
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut **connection)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    }
}

/// The workflow page statements read the page from an index in page
/// order: no step sorts the matching rows, so page 1 of a workspace with
/// thousands of workflows reads ten rows, not thousands.
#[tokio::test]
async fn workflow_pages_are_read_in_index_order_without_sorting() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    for (sql, args) in [(PAGE_OF_KIND, 4), (PAGE_OF_ALL, 3)] {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut query = sqlx::query(&explain);
        for _ in 0..args {
            query = query.bind(1i64);
        }
        let plan: Vec<String> = query
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<String, _>("detail"))
            .collect();
        let text = plan.join("\n");
        assert!(!text.contains("TEMP B-TREE"), "{text}");
        assert!(
            text.contains("COVERING INDEX workflows_workspace"),
            "{text}"
        );
        assert!(text.contains("INTEGER PRIMARY KEY (rowid=?)"), "{text}");
    }
}

/// A step of `EXPLAIN QUERY PLAN`.
#[derive(sqlx::FromRow)]
struct PlanStep {
    detail: String,
}

async fn plan(store: &SqliteStore, sql: &str, args: &[Arg]) -> String {
    let explain = format!("EXPLAIN QUERY PLAN {sql}");
    bind_args(sqlx::query_as::<_, PlanStep>(&explain), args)
        .fetch_all(&store.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|step| step.detail)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Pages of a workflow's versions come from their index in page order,
/// as workflow pages do (with or without the definitions).
#[tokio::test]
async fn version_pages_are_read_in_index_order_without_sorting() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    for sql in [VERSION_PAGE, VERSION_PAGE_WITHOUT_DEFINITIONS] {
        let args = [Arg::Text("w".to_owned()), Arg::Int(10), Arg::Int(0)];
        let text = plan(&store, sql, &args).await;
        assert!(!text.contains("TEMP B-TREE"), "{text}");
        assert!(
            text.contains("COVERING INDEX workflow_versions_page_idx"),
            "{text}"
        );
        assert!(!text.contains("SCAN workflow_versions"), "{text}");
    }
}

/// Evicting a key's least recently seen addresses walks that key's
/// entries of its index, newest first, without sorting or scanning.
#[tokio::test]
async fn address_eviction_reads_the_keys_index_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let args = [Arg::Text("k".to_owned()), Arg::Int(100)];
    let text = plan(&store, EVICT_ADDRESSES, &args).await;
    assert!(text.contains("key_addresses_key_seen_idx"), "{text}");
    assert!(!text.contains("TEMP B-TREE"), "{text}");
    assert!(!text.contains("SCAN key_addresses"), "{text}");
}

/// Every audit search the API, the Audit tab and the usage flags run
/// reads an index, never the whole table; those without an action
/// filter read it newest first without sorting.
#[tokio::test]
async fn audit_searches_use_an_index_and_never_scan_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let query = |workspace: bool, action: Option<&str>, before: bool| AuditQuery {
        organization_id: "org".into(),
        workspace_id: workspace.then(|| "ws".into()),
        action_prefix: action.map(str::to_owned),
        before_id: before.then_some(1000),
        limit: 50,
    };
    for (q, index, sorts) in [
        // flags.rs: a workspace's role changes.
        (
            query(true, Some("membership.set"), false),
            "audit_log_workspace_action_idx",
            true,
        ),
        // The Audit tab and the API with a workspace, filtered or paged
        // back (paged back, the id range is the tighter bound).
        (
            query(true, Some("api_key."), false),
            "audit_log_workspace_action_idx",
            true,
        ),
        (
            query(true, Some("api_key."), true),
            "audit_log_workspace_idx",
            false,
        ),
        (query(true, None, false), "audit_log_workspace_idx", false),
        (query(true, None, true), "audit_log_workspace_idx", false),
        // Tenant-admin keys: the whole organization.
        (
            query(false, Some("workspace."), false),
            "audit_log_action_idx",
            true,
        ),
        (query(false, None, true), "audit_log_org_idx", false),
    ] {
        let (sql, args) = audit_search(&q);
        let text = plan(&store, &sql, &args).await;
        assert!(!text.contains("SCAN audit_log"), "{q:?}: {text}");
        assert!(
            text.contains(&format!("USING INDEX {index} ")),
            "{q:?}: {text}"
        );
        if !sorts {
            assert!(!text.contains("TEMP B-TREE"), "{q:?}: {text}");
        }
    }
}

#[test]
fn an_action_prefix_is_an_index_range() {
    assert_eq!(prefix_successor("api_key.").as_deref(), Some("api_key/"));
    assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
    assert_eq!(prefix_successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
    assert_eq!(prefix_successor("\u{10FFFF}"), None);
    let (sql, args) = audit_search(&AuditQuery {
        organization_id: "org".into(),
        workspace_id: None,
        action_prefix: Some("API_KEY.".to_owned()),
        before_id: None,
        limit: 5,
    });
    assert!(sql.contains("action >= ? AND action < ?"), "{sql}");
    assert_eq!(
        args,
        vec![
            Arg::Text("org".to_owned()),
            Arg::Text("api_key.".to_owned()),
            Arg::Text("api_key/".to_owned()),
            Arg::Int(5)
        ]
    );
}

/// `workspace_totals` (kept by triggers) always equals what a full
/// recount gives, whatever was written or deleted, cascades included.
#[tokio::test]
async fn workspace_totals_follow_every_write_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let actor = Actor::system();
    let org = store.create_organization(&actor, "Org").await.unwrap();
    let user = store
        .create_user(
            &actor,
            NewUser {
                organization_id: org.id.clone(),
                email: "a@b.c".to_owned(),
                name: "A".to_owned(),
                password_hash: "hash".to_owned(),
                is_org_admin: true,
                must_change_password: false,
            },
        )
        .await
        .unwrap();
    let quotas = WorkflowQuotas {
        workflows_per_workspace: 100,
        versions_per_workflow: 100,
        definition_bytes_per_workspace: 1 << 30,
    };
    let recount = |workspace: String| {
        let pool = store.pool.clone();
        async move {
            let stored: Option<(i64, i64)> = sqlx::query_as(
                "SELECT workflows, definition_bytes FROM workspace_totals WHERE workspace_id = ?",
            )
            .bind(&workspace)
            .fetch_optional(&pool)
            .await
            .unwrap();
            let counted: (i64, i64) = sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM workflows WHERE workspace_id = ?1),
                        COALESCE((SELECT SUM(octet_length(definition)) FROM workflows WHERE workspace_id = ?1), 0)
                      + COALESCE((SELECT SUM(octet_length(v.definition)) FROM workflow_versions v
                                  JOIN workflows f ON f.id = v.workflow_id WHERE f.workspace_id = ?1), 0)",
            )
            .bind(&workspace)
            .fetch_one(&pool)
            .await
            .unwrap();
            (stored.unwrap_or((0, 0)), counted)
        }
    };
    let ws = store
        .create_workspace(&actor, &org.id, "W", None, &user.id)
        .await
        .unwrap();
    let fields = |text: &str| WorkflowFields {
        name: "w".to_owned(),
        kind: "flow".to_owned(),
        definition: json!({"nodes": [], "edges": [], "note": text}),
        error_handler: None,
    };
    let a = store
        .create_workflow(&actor, &ws.id, fields("héllo"), &quotas)
        .await
        .unwrap();
    let b = store
        .create_workflow(&actor, &ws.id, fields("b"), &quotas)
        .await
        .unwrap();
    let v = store
        .create_workflow_version(
            &actor,
            &ws.id,
            &a.id,
            "v",
            None,
            json!({"x": "ünï"}),
            &quotas,
        )
        .await
        .unwrap();
    store
        .create_workflow_version(&actor, &ws.id, &a.id, "v2", None, json!({"y": 1}), &quotas)
        .await
        .unwrap();
    store
        .update_workflow(&actor, &ws.id, &b.id, fields("a longer note"), &quotas)
        .await
        .unwrap();
    store
        .update_workflow_version(&actor, &ws.id, &a.id, &v.id, "v", None, json!({}), &quotas)
        .await
        .unwrap();
    let (stored, counted) = recount(ws.id.to_string()).await;
    assert_eq!(stored.0, 2);
    assert_eq!(stored, counted);
    store.delete_workflow(&actor, &ws.id, &a.id).await.unwrap();
    let (stored, counted) = recount(ws.id.to_string()).await;
    assert_eq!(stored.0, 1);
    assert_eq!(stored, counted, "a workflow's versions go with it");
    store
        .delete_workspace(&actor, &org.id, &ws.id)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM workspace_totals")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}
