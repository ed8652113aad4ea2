//! Every resource call against the real platform.

use std::time::Duration;

use futures_util::TryStreamExt;
use noxus_api::{CreateApiKey, Role, WorkflowVersionWrite, WorkflowWrite};
use noxus_sdk::ListWorkflows;
use noxus_testkit::TestApp;
use serde_json::json;

fn definition() -> serde_json::Value {
    json!({"flow_version": "v1",
           "nodes": [{"id": "in", "type": "InputNode"}, {"id": "out", "type": "OutputNode"}],
           "edges": [{"from_id": {"node_id": "in", "connector_name": "output"}, "to_id": {"node_id": "out", "connector_name": "input"}}]})
}

#[tokio::test]
async fn me_models_and_nodes() {
    let app = TestApp::spawn().await;
    let client = app.client_for(Role::Member).await;
    let me = client.me().await.unwrap();
    assert_eq!(me.role, Role::Member);
    assert!(me.value.contains('…'));
    assert!(!client.models().list().await.unwrap().is_empty());
    assert!(!client.models().presets().await.unwrap().is_empty());
    let nodes = client.nodes().list().await.unwrap();
    assert!(nodes.iter().any(|n| n["type"] == "InputNode"));
    app.stop().await;
}

#[tokio::test]
async fn workflows_from_creation_to_deletion() {
    let app = TestApp::spawn().await;
    let client = app.client(&app.owner_key);
    let created = client.workflows().create("Test Workflow").await.unwrap();
    assert_eq!(created.name, "Test Workflow");
    let write = WorkflowWrite {
        name: "with nodes".to_owned(),
        kind: "flow".to_owned(),
        definition: Some(definition()),
        error_handler: None,
    };
    let saved = client.workflows().save(&write).await.unwrap();
    assert_eq!(saved.definition, definition());
    assert_eq!(
        client.workflows().get(&saved.id).await.unwrap().name,
        "with nodes"
    );

    let renamed = WorkflowWrite {
        name: "renamed".to_owned(),
        ..write.clone()
    };
    assert_eq!(
        client
            .workflows()
            .update(&saved.id, &renamed, false)
            .await
            .unwrap()
            .name,
        "renamed"
    );
    let agent = WorkflowWrite {
        kind: "agent_flow".to_owned(),
        ..renamed.clone()
    };
    assert!(client
        .workflows()
        .update(&saved.id, &agent, false)
        .await
        .is_err());
    assert_eq!(
        client
            .workflows()
            .update(&saved.id, &agent, true)
            .await
            .unwrap()
            .kind,
        "agent_flow"
    );

    let version = WorkflowVersionWrite {
        name: "v1".to_owned(),
        description: None,
        definition: definition(),
    };
    let v = client
        .workflows()
        .save_version(&saved.id, &version)
        .await
        .unwrap();
    let v2 = client
        .workflows()
        .update_version(
            &saved.id,
            &v.id,
            &WorkflowVersionWrite {
                name: "v1.1".to_owned(),
                ..version
            },
        )
        .await
        .unwrap();
    assert_eq!(v2.name, "v1.1");
    assert_eq!(
        client.workflows().versions(&saved.id).await.unwrap().len(),
        1
    );
    let page = client
        .workflows()
        .versions_page(&saved.id, 1, 10, false)
        .await
        .unwrap();
    assert_eq!((page.total, page.items.len()), (1, 1));
    assert_eq!(page.items[0].name, "v1.1");
    assert_eq!(
        page.items[0].definition, None,
        "definitions only when asked"
    );
    let with = client
        .workflows()
        .versions_page(&saved.id, 1, 10, true)
        .await
        .unwrap();
    assert_eq!(with.items[0].definition.as_ref(), Some(&v2.definition));

    let listed = client.workflows().list().await.unwrap();
    assert_eq!(listed.len(), 1, "list() is the guide's: flows only");
    assert!(client.workflows().delete(&saved.id).await.unwrap().deleted);
    assert!(client.workflows().get(&saved.id).await.is_err());
    // An id with URL syntax cannot reach another route.
    assert!(matches!(
        client.workflows().get("../admin/me").await,
        Err(noxus_sdk::Error::NotFound(_))
    ));
    app.stop().await;
}

#[tokio::test]
async fn a_stream_walks_every_page() {
    let app = TestApp::spawn_with(|c| c.key_rate_limit = None).await;
    let client = app.client(&app.owner_key);
    for i in 0..205 {
        client
            .workflows()
            .create(&format!("w{i:03}"))
            .await
            .unwrap();
    }
    let page = client
        .workflows()
        .page(&ListWorkflows {
            page: 3,
            size: 100,
            kind: None,
        })
        .await
        .unwrap();
    assert_eq!((page.total, page.pages, page.items.len()), (205, 3, 5));
    let all: Vec<_> = client
        .workflows()
        .stream(Some("flow"))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 205);
    assert_eq!(all[0].name, "w000");
    assert_eq!(all[204].name, "w204");
    let none: Vec<_> = client
        .workflows()
        .stream(Some("agent_flow"))
        .try_collect()
        .await
        .unwrap();
    assert!(none.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn workspaces_and_keys_through_the_admin_api() {
    let app = TestApp::spawn().await;
    let client = app.client(&app.owner_key);
    let team = client
        .admin()
        .create_workspace("Team", Some("the team"))
        .await
        .unwrap();
    assert_eq!(client.admin().workspaces().await.unwrap().len(), 2);

    let keys = client.admin().keys(&team.id);
    let request = CreateApiKey {
        name: "team ci".to_owned(),
        tenant_admin: false,
        permissions: Some(vec!["workflows:read".to_owned()]),
        expires_at: None,
        rate_limit: None,
    };
    let created = keys.create(&request).await.unwrap();
    let team_client = app.client(&created.value);
    assert_eq!(team_client.me().await.unwrap().workspace_id, team.id);
    assert_eq!(keys.list().await.unwrap().len(), 1);
    assert_eq!(keys.get(&created.id).await.unwrap().status, "active");

    let rotated = keys
        .rotate(&created.id, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(rotated.replaces.as_deref(), Some(created.id.as_str()));
    team_client.me().await.unwrap();
    app.client(&rotated.value).me().await.unwrap();
    keys.revoke(&created.id).await.unwrap();
    assert!(team_client.me().await.is_err());

    assert!(
        client
            .admin()
            .delete_workspace(&team.id)
            .await
            .unwrap()
            .deleted
    );
    app.stop().await;
}

#[tokio::test]
async fn a_caller_supplied_reqwest_client_still_sends_the_key_and_extra_headers() {
    let app = TestApp::spawn().await;
    let client = noxus_sdk::Client::builder()
        .api_key(&app.owner_key)
        .base_url(&app.base_url)
        .http_client(reqwest::Client::new())
        .header("x-team", "platform")
        .build()
        .unwrap();
    assert_eq!(client.me().await.unwrap().id, app.owner.key_id);
    app.stop().await;
}

#[tokio::test]
async fn key_usage_and_its_addresses() {
    let app = TestApp::spawn().await;
    let client = app.client(&app.owner_key);
    client.workflows().list().await.unwrap();
    let keys = client.admin().keys(&app.workspace_id);
    let usage = keys.usage(&app.owner.key_id, 24, false).await.unwrap();
    assert_eq!(usage.addresses_total, 1);
    assert_eq!(usage.addresses[0].addr, "127.0.0.1");
    assert_eq!(usage.flags_total, 0);
    let page = keys.addresses(&app.owner.key_id, 1, 5).await.unwrap();
    assert_eq!((page.total, page.size), (1, 5));
    assert_eq!(page.items[0].addr, "127.0.0.1");
    // As instants: RFC 3339 texts with trimmed fractions do not sort as strings.
    let at = |text: &str| {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
    };
    assert!(at(&page.items[0].last_seen_at) >= at(&usage.addresses[0].last_seen_at));
    app.stop().await;
}
