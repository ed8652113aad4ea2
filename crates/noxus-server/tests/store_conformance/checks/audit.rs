//! Exactly one audit row per mutation, with the expected action, target,
//! workspace and actor.

use std::sync::Arc;

use noxus_api::Role;
use noxus_server::rate_limit::RateLimit;
use noxus_server::store::prelude::*;
use noxus_server::store::{Actor, KeyQuotas, NewUser};
use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::world::*;

/// Asserts that exactly one row was written since the last look, and what it says.
async fn one_row(
    store: &Arc<dyn Store>,
    audit: &mut AuditWatch,
    action: &str,
    target: (&str, &str),
    workspace_id: Option<&str>,
    actor: &Actor,
) {
    let rows = audit.take(store).await;
    assert_eq!(
        rows.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        [action],
        "exactly one audit row for {action}"
    );
    let row = &rows[0];
    assert_eq!(
        (row.target_type.as_str(), row.target_id.as_str()),
        target,
        "{action}"
    );
    assert_eq!(
        row.workspace_id.as_ref().map(|id| id.as_str()),
        workspace_id,
        "{action}"
    );
    assert_eq!(row.actor_user_id, actor.user_id, "{action}");
    assert_eq!(row.actor_key_id, actor.key_id, "{action}");
    assert_eq!(row.client_addr, actor.client_addr, "{action}");
}

pub async fn every_mutation_writes_exactly_one_audit_row(store: Arc<dyn Store>) {
    let w = world(&store).await;
    let by = Actor {
        user_id: Some(w.owner.id.clone()),
        key_id: Some("some-key-id".into()),
        client_addr: Some("198.51.100.7".to_owned()),
    };
    let mut audit = AuditWatch::new(&store, w.org.id.as_str()).await;
    let ws_id = w.ws.id.as_str();

    // Bootstrap wrote one row (no first key).
    let rows = audit_rows(&store, &w.org.id.as_str().into()).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].action.as_str(), rows[0].target_id.as_str()),
        ("platform.bootstrap", w.org.id.as_str())
    );

    // Users.
    let u = store
        .create_user(
            &by,
            NewUser {
                organization_id: w.org.id.clone(),
                email: "u@example.com".to_owned(),
                name: "U".to_owned(),
                password_hash: "h".to_owned(),
                is_org_admin: false,
                must_change_password: true,
            },
        )
        .await
        .unwrap();
    one_row(
        &store,
        &mut audit,
        "user.create",
        ("user", u.id.as_str()),
        None,
        &by,
    )
    .await;
    store
        .set_org_admin(&by, &w.org.id, &u.id, true)
        .await
        .unwrap();
    one_row(
        &store,
        &mut audit,
        "user.org_admin",
        ("user", u.id.as_str()),
        None,
        &by,
    )
    .await;
    store
        .set_password(&by, &u.id, "h2", true, None)
        .await
        .unwrap();
    one_row(
        &store,
        &mut audit,
        "user.password_reset",
        ("user", u.id.as_str()),
        None,
        &by,
    )
    .await;
    let by_u = actor(&u);
    store
        .set_password(&by_u, &u.id, "h3", false, None)
        .await
        .unwrap();
    one_row(
        &store,
        &mut audit,
        "user.password_change",
        ("user", u.id.as_str()),
        None,
        &by_u,
    )
    .await;
    assert_eq!(store.end_sessions(&by, &u.id, None).await.unwrap(), 0);
    one_row(
        &store,
        &mut audit,
        "user.sessions_end",
        ("user", u.id.as_str()),
        None,
        &by,
    )
    .await;

    // Memberships.
    assert_eq!(
        store
            .set_membership(&by, &ws_id.into(), &u.id, Role::Member)
            .await
            .unwrap(),
        None
    );
    one_row(
        &store,
        &mut audit,
        "membership.set",
        ("user", u.id.as_str()),
        Some(ws_id),
        &by,
    )
    .await;
    assert_eq!(
        store
            .set_membership(&by, &ws_id.into(), &u.id, Role::Admin)
            .await
            .unwrap(),
        Some(Role::Member)
    );
    one_row(
        &store,
        &mut audit,
        "membership.set",
        ("user", u.id.as_str()),
        Some(ws_id),
        &by,
    )
    .await;

    // Keys.
    let k = store
        .create_key(
            &by,
            new_key(&ws_id.into(), &u.id.as_str().into(), "k"),
            KeyQuotas::default(),
        )
        .await
        .unwrap();
    one_row(
        &store,
        &mut audit,
        "api_key.create",
        ("api_key", k.id.as_str()),
        Some(ws_id),
        &by,
    )
    .await;
    let (_, next) = store
        .rotate_key(
            &by,
            &ws_id.into(),
            &k.id,
            new_key(&ws_id.into(), &u.id.as_str().into(), "next"),
            Some(OffsetDateTime::now_utc() + Duration::hours(1)),
        )
        .await
        .unwrap();
    one_row(
        &store,
        &mut audit,
        "api_key.rotate",
        ("api_key", k.id.as_str()),
        Some(ws_id),
        &by,
    )
    .await;
    store
        .revoke_key(&by, &ws_id.into(), &next.id)
        .await
        .unwrap();
    one_row(
        &store,
        &mut audit,
        "api_key.revoke",
        ("api_key", next.id.as_str()),
        Some(ws_id),
        &by,
    )
    .await;
    let k2 = store
        .create_key(
            &by,
            new_key(&ws_id.into(), &u.id.as_str().into(), "k2"),
            KeyQuotas::default(),
        )
        .await
        .unwrap();
    audit.take(&store).await;
    let revoked = store
        .remove_membership(&by, &ws_id.into(), &u.id)
        .await
        .unwrap();
    // The grace-period key `k` still worked and goes with its owner too.
    let mut expected = vec![k.id.clone(), k2.id.clone()];
    expected.sort();
    assert_eq!(revoked, expected);
    one_row(
        &store,
        &mut audit,
        "membership.remove",
        ("user", u.id.as_str()),
        Some(ws_id),
        &by,
    )
    .await;
    store
        .set_user_active(&by, &w.org.id, &u.id, false)
        .await
        .unwrap();
    one_row(
        &store,
        &mut audit,
        "user.deactivate",
        ("user", u.id.as_str()),
        None,
        &by,
    )
    .await;
    store
        .set_user_active(&by, &w.org.id, &u.id, true)
        .await
        .unwrap();
    one_row(
        &store,
        &mut audit,
        "user.reactivate",
        ("user", u.id.as_str()),
        None,
        &by,
    )
    .await;

    // Workspaces.
    let ws2 = store
        .create_workspace(&by, &w.org.id, "second", Some("d"), &w.owner.id)
        .await
        .unwrap();
    one_row(
        &store,
        &mut audit,
        "workspace.create",
        ("workspace", ws2.id.as_str()),
        Some(ws2.id.as_str()),
        &by,
    )
    .await;
    let limit = RateLimit {
        per_second: 7,
        burst: 9,
    };
    let updated = store
        .set_workspace_rate_limit(&by, &w.org.id, &ws2.id, Some(limit))
        .await
        .unwrap();
    assert_eq!(updated.rate_limit, Some(limit));
    one_row(
        &store,
        &mut audit,
        "workspace.rate_limit",
        ("workspace", ws2.id.as_str()),
        Some(ws2.id.as_str()),
        &by,
    )
    .await;

    // Workflows.
    let wf = store
        .create_workflow(&by, &ws2.id, flow("f", "flow"), &quotas())
        .await
        .unwrap();
    one_row(
        &store,
        &mut audit,
        "workflow.create",
        ("workflow", wf.id.as_str()),
        Some(ws2.id.as_str()),
        &by,
    )
    .await;
    store
        .update_workflow(&by, &ws2.id, &wf.id, flow("g", "agent_flow"), &quotas())
        .await
        .unwrap();
    one_row(
        &store,
        &mut audit,
        "workflow.update",
        ("workflow", wf.id.as_str()),
        Some(ws2.id.as_str()),
        &by,
    )
    .await;
    let v = store
        .create_workflow_version(&by, &ws2.id, &wf.id, "v1", None, json!({}), &quotas())
        .await
        .unwrap();
    one_row(
        &store,
        &mut audit,
        "workflow_version.create",
        ("workflow_version", v.id.as_str()),
        Some(ws2.id.as_str()),
        &by,
    )
    .await;
    store
        .update_workflow_version(
            &by,
            &ws2.id,
            &wf.id,
            &v.id,
            "v1b",
            Some("d"),
            json!({"a": 1}),
            &quotas(),
        )
        .await
        .unwrap();
    one_row(
        &store,
        &mut audit,
        "workflow_version.update",
        ("workflow_version", v.id.as_str()),
        Some(ws2.id.as_str()),
        &by,
    )
    .await;
    store.delete_workflow(&by, &ws2.id, &wf.id).await.unwrap();
    one_row(
        &store,
        &mut audit,
        "workflow.delete",
        ("workflow", wf.id.as_str()),
        Some(ws2.id.as_str()),
        &by,
    )
    .await;
    store
        .delete_workspace(&by, &w.org.id, &ws2.id)
        .await
        .unwrap();
    one_row(
        &store,
        &mut audit,
        "workspace.delete",
        ("workspace", ws2.id.as_str()),
        Some(ws2.id.as_str()),
        &by,
    )
    .await;

    // Another organization's creation is audited in that organization.
    let other = store.create_organization(&by, "Other").await.unwrap();
    let theirs = audit_rows(&store, &other.id.as_str().into()).await;
    assert_eq!(theirs.len(), 1);
    assert_eq!(
        (theirs[0].action.as_str(), theirs[0].target_id.as_str()),
        ("organization.create", other.id.as_str())
    );
    assert_eq!(audit.take(&store).await.len(), 0);
}
