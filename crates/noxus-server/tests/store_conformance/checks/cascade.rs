//! Deleting a workspace takes everything of it and nothing else.

use std::sync::Arc;

use noxus_api::Role;
use noxus_server::store::prelude::*;
use noxus_server::store::{KeyRecord, KeyUsageFlush, StoreError, UsageCounts, VersionSlice};
use serde_json::json;
use time::OffsetDateTime;

use crate::world::*;

struct Filled {
    keys: Vec<KeyRecord>,
    workflow: String,
    member: String,
}

async fn fill(store: &Arc<dyn Store>, w: &World, ws_id: &str, tag: &str) -> Filled {
    let ws = store
        .workspace(&w.org.id, &ws_id.into())
        .await
        .unwrap()
        .unwrap();
    let m = member(store, w, &ws, &format!("{tag}@example.com"), Role::Member).await;
    let keys = vec![
        key(store, &ws_id.into(), &w.owner.id.as_str().into(), "a").await,
        key(store, &ws_id.into(), &m.id.as_str().into(), "b").await,
    ];
    let wf = store
        .create_workflow(
            &actor(&w.owner),
            &ws_id.into(),
            flow(tag, "flow"),
            &quotas(),
        )
        .await
        .unwrap();
    for i in 0..2 {
        store
            .create_workflow_version(
                &actor(&w.owner),
                &ws_id.into(),
                &wf.id,
                "v",
                None,
                json!({"i": i}),
                &quotas(),
            )
            .await
            .unwrap();
    }
    let hour = OffsetDateTime::now_utc().unix_timestamp() / 3600;
    let batch: Vec<_> = keys
        .iter()
        .map(|k| KeyUsageFlush {
            key_id: k.id.clone(),
            workspace_id: ws_id.to_owned().into(),
            last_used: None,
            hours: vec![(
                hour,
                UsageCounts {
                    requests: 3,
                    ok: 3,
                    ..UsageCounts::default()
                },
            )],
            addresses: vec![("10.1.1.1".to_owned(), OffsetDateTime::now_utc())],
        })
        .collect();
    store.record_usage(&batch, 10).await.unwrap();
    Filled {
        keys,
        workflow: wf.id.to_string(),
        member: m.id.to_string(),
    }
}

pub async fn deleting_a_workspace_cascades_and_spares_others(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let doomed = workspace(&store, &w, "doomed").await;
    let gone = fill(&store, &w, doomed.id.as_str(), "gone").await;
    let kept = fill(&store, &w, w.ws.id.as_str(), "kept").await;
    let hour = OffsetDateTime::now_utc().unix_timestamp() / 3600;
    let slice = VersionSlice {
        offset: 0,
        limit: 10,
        definitions: true,
    };

    store
        .delete_workspace(&actor(&w.owner), &w.org.id, &doomed.id)
        .await
        .unwrap();

    // The workspace and everything of it.
    assert!(store
        .workspace(&w.org.id, &doomed.id)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store
            .list_workspaces(&w.org.id)
            .await
            .unwrap()
            .into_iter()
            .map(|ws| ws.id)
            .collect::<Vec<_>>(),
        [w.ws.id.as_str()]
    );
    assert!(store.list_keys(&doomed.id, None).await.unwrap().is_empty());
    assert_eq!(
        store
            .list_keys_page(&doomed.id, None, 0, 10)
            .await
            .unwrap()
            .1,
        0
    );
    for k in &gone.keys {
        assert!(store.key(&doomed.id, &k.id).await.unwrap().is_none());
        assert!(store.key_for_auth(&k.digest).await.unwrap().is_none());
        assert_eq!(store.key_addresses(&k.id, 0, 10).await.unwrap().1, 0);
    }
    assert!(store.list_members(&doomed.id).await.unwrap().is_empty());
    assert_eq!(
        store
            .membership(&doomed.id, &gone.member.as_str().into())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.membership(&doomed.id, &w.owner.id).await.unwrap(),
        None
    );
    assert!(store
        .workspaces_of_user(&gone.member.as_str().into())
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .workflow(&doomed.id, &gone.workflow.as_str().into())
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store
            .list_workflows(&doomed.id, None, 0, 10)
            .await
            .unwrap()
            .1,
        0
    );
    assert!(matches!(
        store
            .list_workflow_versions(&doomed.id, &gone.workflow.as_str().into(), slice)
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(store
        .usage_hours(&doomed.id, None, hour - 1, hour + 1)
        .await
        .unwrap()
        .is_empty());
    // The user is a user of the organization still.
    assert!(store
        .user(&gone.member.as_str().into())
        .await
        .unwrap()
        .is_some());
    // The audit log keeps the workspace's story.
    let story = store
        .search_audit(&noxus_server::store::AuditQuery {
            organization_id: w.org.id.clone(),
            workspace_id: Some(doomed.id.clone()),
            action_prefix: None,
            before_id: None,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(
        story.first().map(|r| r.action.as_str()),
        Some("workspace.delete")
    );
    assert_eq!(
        story.last().map(|r| r.action.as_str()),
        Some("workspace.create")
    );

    // The other workspace is untouched.
    assert_eq!(
        ids(&store.list_keys(&w.ws.id, None).await.unwrap()),
        [kept.keys[1].id.clone(), kept.keys[0].id.clone()]
    );
    for k in &kept.keys {
        let auth = store.key_for_auth(&k.digest).await.unwrap().unwrap();
        assert_eq!(auth.key.id, k.id);
        assert_eq!(store.key_addresses(&k.id, 0, 10).await.unwrap().1, 1);
    }
    assert_eq!(store.list_members(&w.ws.id).await.unwrap().len(), 2);
    assert_eq!(
        store
            .membership(&w.ws.id, &kept.member.as_str().into())
            .await
            .unwrap(),
        Some(Role::Member)
    );
    assert_eq!(
        store
            .list_workflow_versions(&w.ws.id, &kept.workflow.as_str().into(), slice)
            .await
            .unwrap()
            .1,
        2
    );
    let usage = store
        .usage_hours(&w.ws.id, None, hour - 1, hour + 1)
        .await
        .unwrap();
    assert_eq!(usage.len(), 2);
    assert!(usage.iter().all(|h| h.counts.requests == 3));

    // The name is free again, and the new workspace starts empty.
    let again = workspace(&store, &w, "doomed").await;
    assert!(store.list_keys(&again.id, None).await.unwrap().is_empty());
    assert_eq!(store.list_members(&again.id).await.unwrap().len(), 1);
}
