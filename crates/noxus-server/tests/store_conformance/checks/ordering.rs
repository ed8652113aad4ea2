//! Every ordering promise of the trait docs.

use std::sync::Arc;

use noxus_api::Role;
use noxus_server::store::prelude::*;
use noxus_server::store::{AuditQuery, KeyUsageFlush, UserId, VersionSlice, WorkflowId};
use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::world::*;

/// `list_workspaces`: by creation time (names chosen not to sort that way).
pub async fn workspaces_are_listed_by_creation(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let mut expected = vec![w.ws.id.clone()];
    for name in ["zeta", "alpha", "mid", "beta"] {
        expected.push(workspace(&store, &w, name).await.id);
    }
    let listed: Vec<_> = store
        .list_workspaces(&w.org.id)
        .await
        .unwrap()
        .into_iter()
        .map(|ws| ws.id)
        .collect();
    assert_eq!(listed, expected);
}

/// `list_keys` and `list_keys_page`: newest first, per user when asked,
/// with the total of the whole list on every page (past the end too).
pub async fn keys_are_listed_newest_first_with_totals_and_pages(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let other = member(&store, &w, &w.ws, "other@example.com", Role::Member).await;
    let mut all = Vec::new();
    let mut owners = Vec::new();
    for i in 0..7 {
        let user = if i % 3 == 1 { &other } else { &w.owner };
        let k = key(&store, &w.ws.id, &user.id, &format!("k{i}")).await;
        if user.id == w.owner.id {
            owners.push(k.id.clone());
        }
        all.push(k.id);
    }
    // A key of another workspace is never listed.
    let ws2 = workspace(&store, &w, "second").await;
    key(&store, &ws2.id, &w.owner.id, "elsewhere").await;
    all.reverse();
    owners.reverse();

    assert_eq!(ids(&store.list_keys(&w.ws.id, None).await.unwrap()), all);
    assert_eq!(
        ids(&store.list_keys(&w.ws.id, Some(&w.owner.id)).await.unwrap()),
        owners
    );
    // A revoked key keeps its place.
    store
        .revoke_key(&actor(&w.owner), &w.ws.id, &all[3])
        .await
        .unwrap();
    assert_eq!(ids(&store.list_keys(&w.ws.id, None).await.unwrap()), all);

    let (page, total) = store.list_keys_page(&w.ws.id, None, 0, 3).await.unwrap();
    assert_eq!((ids(&page), total), (all[0..3].to_vec(), 7));
    let (page, total) = store.list_keys_page(&w.ws.id, None, 3, 3).await.unwrap();
    assert_eq!((ids(&page), total), (all[3..6].to_vec(), 7));
    let (page, total) = store.list_keys_page(&w.ws.id, None, 6, 3).await.unwrap();
    assert_eq!((ids(&page), total), (all[6..].to_vec(), 7));
    let (page, total) = store.list_keys_page(&w.ws.id, None, 9, 3).await.unwrap();
    assert_eq!((ids(&page), total), (vec![], 7));
    let (page, total) = store
        .list_keys_page(&w.ws.id, Some(&w.owner.id), 1, 2)
        .await
        .unwrap();
    assert_eq!((ids(&page), total), (owners[1..3].to_vec(), 5));
    let (page, total) = store
        .list_keys_page(&w.ws.id, Some(&other.id), 5, 2)
        .await
        .unwrap();
    assert_eq!((ids(&page), total), (vec![], 2));
    let (page, total) = store
        .list_keys_page(&ws2.id, Some(&other.id), 0, 10)
        .await
        .unwrap();
    assert_eq!((ids(&page), total), (vec![], 0));
}

/// `list_workflows`: oldest first, with the total, filtered by kind.
pub async fn workflows_are_listed_oldest_first_with_totals_and_kind(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let mut all = Vec::new();
    let mut agents = Vec::new();
    for (i, name) in ["z", "a", "m", "b", "y", "c"].iter().enumerate() {
        let kind = if i % 2 == 0 { "flow" } else { "agent_flow" };
        let wf = store
            .create_workflow(&actor(&w.owner), &w.ws.id, flow(name, kind), &quotas())
            .await
            .unwrap();
        if kind == "agent_flow" {
            agents.push(wf.id.clone());
        }
        all.push(wf.id);
    }
    let ws2 = workspace(&store, &w, "second").await;
    store
        .create_workflow(&actor(&w.owner), &ws2.id, flow("x", "flow"), &quotas())
        .await
        .unwrap();
    let page = |items: Vec<noxus_server::store::WorkflowRecord>| -> Vec<WorkflowId> {
        items.into_iter().map(|wf| wf.id).collect()
    };

    let (items, total) = store.list_workflows(&w.ws.id, None, 0, 100).await.unwrap();
    assert_eq!((page(items), total), (all.clone(), 6));
    // Updating a workflow does not move it.
    store
        .update_workflow(
            &actor(&w.owner),
            &w.ws.id,
            &all[0],
            flow("renamed", "flow"),
            &quotas(),
        )
        .await
        .unwrap();
    let (items, total) = store.list_workflows(&w.ws.id, None, 2, 3).await.unwrap();
    assert_eq!((page(items), total), (all[2..5].to_vec(), 6));
    let (items, total) = store.list_workflows(&w.ws.id, None, 6, 3).await.unwrap();
    assert_eq!((page(items), total), (vec![], 6));
    let (items, total) = store
        .list_workflows(&w.ws.id, Some("agent_flow"), 0, 100)
        .await
        .unwrap();
    assert_eq!((page(items), total), (agents.clone(), 3));
    let (items, total) = store
        .list_workflows(&w.ws.id, Some("agent_flow"), 1, 1)
        .await
        .unwrap();
    assert_eq!((page(items), total), (agents[1..2].to_vec(), 3));
    let (items, total) = store
        .list_workflows(&w.ws.id, Some("agent_flow"), 5, 1)
        .await
        .unwrap();
    assert_eq!((page(items), total), (vec![], 3));
    let (items, total) = store
        .list_workflows(&w.ws.id, Some("none_such"), 0, 10)
        .await
        .unwrap();
    assert_eq!((page(items), total), (vec![], 0));
}

/// `list_workflow_versions`: saving order, with the total, definitions
/// only when asked; another workspace's workflow is not found.
pub async fn workflow_versions_are_listed_in_saving_order(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let wf = store
        .create_workflow(&actor(&w.owner), &w.ws.id, flow("f", "flow"), &quotas())
        .await
        .unwrap();
    let mut saved = Vec::new();
    for (i, name) in ["v-z", "v-a", "v-m", "v-b", "v-c"].iter().enumerate() {
        let v = store
            .create_workflow_version(
                &actor(&w.owner),
                &w.ws.id,
                &wf.id,
                name,
                Some("d"),
                json!({"n": i}),
                &quotas(),
            )
            .await
            .unwrap();
        assert_eq!(
            v.created_by.as_ref().map(|id| id.as_str()),
            Some(w.owner.id.as_str())
        );
        saved.push(v.id);
    }
    // Updating a version does not move it.
    store
        .update_workflow_version(
            &actor(&w.owner),
            &w.ws.id,
            &wf.id,
            &saved[0],
            "v-first",
            None,
            json!({"n": "first"}),
            &quotas(),
        )
        .await
        .unwrap();
    let slice = |offset, limit, definitions| VersionSlice {
        offset,
        limit,
        definitions,
    };
    let (all, total) = store
        .list_workflow_versions(&w.ws.id, &wf.id, slice(0, 100, true))
        .await
        .unwrap();
    assert_eq!(total, 5);
    assert_eq!(all.iter().map(|v| v.id.clone()).collect::<Vec<_>>(), saved);
    let definitions: Vec<_> = all
        .iter()
        .map(|v| {
            serde_json::from_str::<serde_json::Value>(v.definition.as_ref().unwrap().get()).unwrap()
        })
        .collect();
    assert_eq!(
        definitions,
        vec![
            json!({"n": "first"}),
            json!({"n": 1}),
            json!({"n": 2}),
            json!({"n": 3}),
            json!({"n": 4})
        ]
    );
    assert_eq!(all[0].name, "v-first");
    assert_eq!(all[0].description, None);
    assert_eq!(all[1].description.as_deref(), Some("d"));

    let (part, total) = store
        .list_workflow_versions(&w.ws.id, &wf.id, slice(1, 3, false))
        .await
        .unwrap();
    assert_eq!(total, 5);
    assert_eq!(
        part.iter().map(|v| v.id.clone()).collect::<Vec<_>>(),
        saved[1..4].to_vec()
    );
    assert!(part.iter().all(|v| v.definition.is_none()));
    assert_eq!(
        part.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["v-a", "v-m", "v-b"]
    );
    let (part, total) = store
        .list_workflow_versions(&w.ws.id, &wf.id, slice(5, 3, true))
        .await
        .unwrap();
    assert_eq!((part.len(), total), (0, 5));

    let ws2 = workspace(&store, &w, "second").await;
    assert!(matches!(
        store
            .list_workflow_versions(&ws2.id, &wf.id, slice(0, 10, false))
            .await,
        Err(noxus_server::store::StoreError::NotFound)
    ));
}

/// `key_addresses`: most recently seen first, paged, with the total; only
/// the `max_addresses_per_key` most recently seen are kept.
pub async fn key_addresses_are_most_recently_seen_first(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let k = key(&store, &w.ws.id, &w.owner.id, "k").await;
    let base = OffsetDateTime::now_utc().replace_millisecond(0).unwrap() - Duration::hours(1);
    let at = |minutes: i64| base + Duration::minutes(minutes);
    let flush = |addresses: Vec<(&str, OffsetDateTime)>| KeyUsageFlush {
        key_id: k.id.clone(),
        workspace_id: w.ws.id.clone(),
        last_used: None,
        hours: vec![],
        addresses: addresses
            .into_iter()
            .map(|(a, t)| (a.to_owned(), t))
            .collect(),
    };
    store
        .record_usage(
            &[flush(vec![
                ("10.0.0.1", at(1)),
                ("10.0.0.2", at(5)),
                ("10.0.0.3", at(3)),
            ])],
            10,
        )
        .await
        .unwrap();
    // A later sighting of a known address moves it up, keeps its first sighting.
    store
        .record_usage(&[flush(vec![("10.0.0.1", at(9)), ("10.0.0.4", at(7))])], 10)
        .await
        .unwrap();
    let (page, total) = store.key_addresses(&k.id, 0, 10).await.unwrap();
    assert_eq!(total, 4);
    assert_eq!(
        page.iter().map(|a| a.addr.as_str()).collect::<Vec<_>>(),
        ["10.0.0.1", "10.0.0.4", "10.0.0.2", "10.0.0.3"]
    );
    assert_eq!(page[0].first_seen_at, at(1));
    assert_eq!(page[0].last_seen_at, at(9));
    // An older sighting does not move it back.
    store
        .record_usage(&[flush(vec![("10.0.0.1", at(2))])], 10)
        .await
        .unwrap();
    let (page, total) = store.key_addresses(&k.id, 1, 2).await.unwrap();
    assert_eq!(total, 4);
    assert_eq!(
        page.iter().map(|a| a.addr.as_str()).collect::<Vec<_>>(),
        ["10.0.0.4", "10.0.0.2"]
    );
    let (page, total) = store.key_addresses(&k.id, 4, 2).await.unwrap();
    assert_eq!((page.len(), total), (0, 4));

    // A new address past the bound of 3 evicts the least recently seen.
    store
        .record_usage(&[flush(vec![("10.0.0.5", at(8))])], 3)
        .await
        .unwrap();
    let (page, total) = store.key_addresses(&k.id, 0, 10).await.unwrap();
    assert_eq!(total, 3);
    assert_eq!(
        page.iter().map(|a| a.addr.as_str()).collect::<Vec<_>>(),
        ["10.0.0.1", "10.0.0.5", "10.0.0.4"]
    );
}

/// `search_audit`: newest first; `before_id` pages; an action prefix and a
/// workspace filter.
pub async fn audit_search_is_newest_first_with_paging_and_prefix(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let ws2 = workspace(&store, &w, "second").await;
    let k1 = key(&store, &w.ws.id, &w.owner.id, "k1").await;
    let k2 = key(&store, &ws2.id, &w.owner.id, "k2").await;
    store
        .revoke_key(&actor(&w.owner), &w.ws.id, &k1.id)
        .await
        .unwrap();
    user(&store, &w.org, "u@example.com").await;

    let all = audit_rows(&store, &w.org.id.as_str().into()).await;
    let actions: Vec<_> = all.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "user.create",
            "api_key.revoke",
            "api_key.create",
            "api_key.create",
            "workspace.create",
            "platform.bootstrap"
        ]
    );
    assert!(all.windows(2).all(|p| p[0].id > p[1].id), "newest first");
    assert_eq!(all[1].target_id, k1.id);
    assert_eq!(all[3].target_id, k1.id);
    assert_eq!(all[2].target_id, k2.id);

    let query = |workspace_id: Option<&str>, prefix: Option<&str>, before_id, limit| AuditQuery {
        organization_id: w.org.id.clone(),
        workspace_id: workspace_id.map(Into::into),
        action_prefix: prefix.map(str::to_owned),
        before_id,
        limit,
    };
    let page1 = store
        .search_audit(&query(None, None, None, 4))
        .await
        .unwrap();
    assert_eq!(
        page1.iter().map(|r| r.id).collect::<Vec<_>>(),
        all[..4].iter().map(|r| r.id).collect::<Vec<_>>()
    );
    let page2 = store
        .search_audit(&query(None, None, Some(page1[3].id), 4))
        .await
        .unwrap();
    assert_eq!(
        page2.iter().map(|r| r.id).collect::<Vec<_>>(),
        all[4..].iter().map(|r| r.id).collect::<Vec<_>>()
    );

    let keys = store
        .search_audit(&query(None, Some("api_key."), None, 100))
        .await
        .unwrap();
    assert_eq!(
        keys.iter().map(|r| r.id).collect::<Vec<_>>(),
        all[1..4].iter().map(|r| r.id).collect::<Vec<_>>()
    );
    let keys_page = store
        .search_audit(&query(None, Some("api_key."), Some(all[1].id), 1))
        .await
        .unwrap();
    assert_eq!(
        keys_page.iter().map(|r| r.id).collect::<Vec<_>>(),
        [all[2].id]
    );
    let none = store
        .search_audit(&query(None, Some("api_key.x"), None, 100))
        .await
        .unwrap();
    assert!(none.is_empty());

    // Per workspace: the second workspace's creation and its key.
    let second = store
        .search_audit(&query(Some(ws2.id.as_str()), None, None, 100))
        .await
        .unwrap();
    assert_eq!(
        second.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        ["api_key.create", "workspace.create"]
    );
    let second_keys = store
        .search_audit(&query(Some(ws2.id.as_str()), Some("api_key."), None, 100))
        .await
        .unwrap();
    assert_eq!(
        second_keys
            .iter()
            .map(|r| r.target_id.as_str())
            .collect::<Vec<_>>(),
        [k2.id.as_str()]
    );

    // Another organization's rows are never seen.
    let other = store
        .create_organization(&noxus_server::store::Actor::system(), "Other")
        .await
        .unwrap();
    let theirs = audit_rows(&store, &other.id.as_str().into()).await;
    assert_eq!(
        theirs.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        ["organization.create"]
    );
    assert_eq!(
        audit_rows(&store, &w.org.id.as_str().into()).await.len(),
        all.len()
    );
}

/// `list_users` and `list_members`: by email, with roles.
pub async fn users_and_members_are_listed_by_email(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let zed = member(&store, &w, &w.ws, "zed@example.com", Role::Viewer).await;
    let amy = member(&store, &w, &w.ws, "amy@example.com", Role::Admin).await;
    let pam = user(&store, &w.org, "pam@example.com").await;
    let bob = member(&store, &w, &w.ws, "bob@example.com", Role::Member).await;
    // A user of another organization is not listed.
    let other = store
        .create_organization(&noxus_server::store::Actor::system(), "Other")
        .await
        .unwrap();
    user(&store, &other, "aaa@example.com").await;

    let users: Vec<_> = store
        .list_users(&w.org.id)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(
        users,
        [&amy.id, &bob.id, &w.owner.id, &pam.id, &zed.id].map(UserId::clone)
    );
    let members: Vec<_> = store
        .list_members(&w.ws.id)
        .await
        .unwrap()
        .into_iter()
        .map(|(u, role)| (u.id, role))
        .collect();
    assert_eq!(
        members,
        [
            (amy.id.clone(), Role::Admin),
            (bob.id.clone(), Role::Member),
            (w.owner.id.clone(), Role::Owner),
            (zed.id.clone(), Role::Viewer),
        ]
    );
}

/// `workspaces_of_user`: exactly the workspaces the user is a member of,
/// each with its role. (The trait promises no order: compared as a set.)
pub async fn workspaces_of_user_are_exactly_their_memberships(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let b = workspace(&store, &w, "b").await;
    let c = workspace(&store, &w, "c").await;
    let d = workspace(&store, &w, "d").await;
    let u = member(&store, &w, &c, "u@example.com", Role::Admin).await;
    store
        .set_membership(&actor(&w.owner), &w.ws.id, &u.id, Role::Viewer)
        .await
        .unwrap();
    store
        .set_membership(&actor(&w.owner), &d.id, &u.id, Role::Member)
        .await
        .unwrap();
    store
        .remove_membership(&actor(&w.owner), &d.id, &u.id)
        .await
        .unwrap();
    let mut of_u: Vec<_> = store
        .workspaces_of_user(&u.id)
        .await
        .unwrap()
        .into_iter()
        .map(|(ws, role)| (ws.id, ws.name, role))
        .collect();
    of_u.sort();
    let mut expected = vec![
        (w.ws.id.clone(), w.ws.name.clone(), Role::Viewer),
        (c.id.clone(), "c".to_owned(), Role::Admin),
    ];
    expected.sort();
    assert_eq!(of_u, expected);
    let mut of_owner: Vec<_> = store
        .workspaces_of_user(&w.owner.id)
        .await
        .unwrap()
        .into_iter()
        .map(|(ws, role)| (ws.id, role))
        .collect();
    of_owner.sort();
    let mut expected: Vec<_> = [&w.ws.id, &b.id, &c.id, &d.id]
        .into_iter()
        .map(|id| (id.clone(), Role::Owner))
        .collect();
    expected.sort();
    assert_eq!(of_owner, expected);
}
