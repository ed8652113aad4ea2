//! Workspace isolation: a key of workspace A touching anything of
//! workspace B gets 404 (or 403 `wrong_workspace` when it names B itself)
//! and changes nothing.

use noxus_api::Role;
use noxus_testkit::TestApp;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{input_output_definition, json_ok};

struct Fixture {
    app: TestApp,
    /// An admin (not tenant admin) of workspace A.
    a_key: String,
    a_workspace: String,
    b_key: String,
    b_key_id: String,
    b_workspace: String,
    b_workflow: String,
    b_version: String,
}

async fn fixture() -> Fixture {
    let app = TestApp::spawn().await;
    let a = app.user_with_role(Role::Admin).await;
    let b = app.second_workspace("B").await;
    let workflow = json_ok(
        app.post("/v1/workflows", &b.key)
            .json(&json!({"name": "b-flow", "definition": input_output_definition()}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let b_workflow = workflow["id"].as_str().unwrap().to_owned();
    let version = json_ok(
        app.post(&format!("/v1/workflows/{b_workflow}/versions"), &b.key)
            .json(&json!({"name": "v1", "definition": input_output_definition()}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    Fixture {
        a_workspace: a.workspace_id.clone(),
        a_key: a.key,
        b_key: b.key,
        b_key_id: b.key_id,
        b_workspace: b.workspace_id,
        b_workflow,
        b_version: version["id"].as_str().unwrap().to_owned(),
        app,
    }
}

async fn snapshot(f: &Fixture) -> Value {
    let app = &f.app;
    let workflow = json_ok(
        app.get(&format!("/v1/workflows/{}", f.b_workflow), &f.b_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let versions = json_ok(
        app.get(
            &format!("/v1/workflows/{}/versions", f.b_workflow),
            &f.b_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let keys = json_ok(
        app.get(
            &format!("/v1/admin/groups/{}/api-keys", f.b_workspace),
            &f.b_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let workspaces = json_ok(
        app.get("/v1/admin/groups", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    json!({"workflow": workflow, "versions": versions, "keys": keys, "workspaces": workspaces})
}

#[tokio::test]
async fn a_key_of_one_workspace_can_neither_see_nor_change_anything_of_another() {
    let f = fixture().await;
    let before = snapshot(&f).await;
    let wf = &f.b_workflow;
    let body = json!({"name": "hijacked", "type": "flow", "definition": input_output_definition()});
    let version_body = json!({"name": "hijacked", "definition": input_output_definition()});
    let requests: Vec<(Method, String, Option<Value>, u16)> = vec![
        (Method::GET, format!("/v1/workflows/{wf}"), None, 404),
        (
            Method::PATCH,
            format!("/v1/workflows/{wf}?force=True"),
            Some(body.clone()),
            404,
        ),
        (Method::DELETE, format!("/v1/workflows/{wf}"), None, 404),
        (
            Method::GET,
            format!("/v1/workflows/{wf}/versions"),
            None,
            404,
        ),
        (
            Method::POST,
            format!("/v1/workflows/{wf}/versions"),
            Some(version_body.clone()),
            404,
        ),
        (
            Method::PATCH,
            format!("/v1/workflows/{wf}/versions/{}", f.b_version),
            Some(version_body),
            404,
        ),
        (
            Method::DELETE,
            format!("/v1/admin/groups/{}", f.b_workspace),
            None,
            403,
        ),
        (
            Method::GET,
            format!("/v1/admin/groups/{}/api-keys", f.b_workspace),
            None,
            403,
        ),
        (
            Method::POST,
            format!("/v1/admin/groups/{}/api-keys", f.b_workspace),
            Some(json!({"name": "mine now"})),
            403,
        ),
        (
            Method::GET,
            format!("/v1/admin/groups/{}/api-keys/{}", f.b_workspace, f.b_key_id),
            None,
            403,
        ),
        (
            Method::DELETE,
            format!("/v1/admin/groups/{}/api-keys/{}", f.b_workspace, f.b_key_id),
            None,
            403,
        ),
        (
            Method::POST,
            format!(
                "/v1/admin/groups/{}/api-keys/{}/rotate",
                f.b_workspace, f.b_key_id
            ),
            Some(json!({})),
            403,
        ),
        // B's key id under A's workspace path: not found there.
        (
            Method::GET,
            format!("/v1/admin/groups/{}/api-keys/{}", f.a_workspace, f.b_key_id),
            None,
            404,
        ),
        (
            Method::DELETE,
            format!("/v1/admin/groups/{}/api-keys/{}", f.a_workspace, f.b_key_id),
            None,
            404,
        ),
        (
            Method::POST,
            format!(
                "/v1/admin/groups/{}/api-keys/{}/rotate",
                f.a_workspace, f.b_key_id
            ),
            Some(json!({})),
            404,
        ),
    ];
    for (method, path, body, status) in requests {
        let mut request = f
            .app
            .http
            .request(method.clone(), f.app.url(&path))
            .header("X-API-Key", &f.a_key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        let error: Value = response.json().await.unwrap();
        let expected = if status == 404 {
            "not_found"
        } else {
            "wrong_workspace"
        };
        assert_eq!(error["code"], expected, "{method} {path}: {error}");
        // The 404 never says whose the object is.
        assert!(!error.to_string().contains(&f.b_workspace) || status == 403);
    }
    assert_eq!(snapshot(&f).await, before, "nothing of workspace B changed");

    // Lists of A never include B's objects.
    let list = json_ok(f.app.get("/v1/workflows", &f.a_key).send().await.unwrap()).await;
    assert!(!list.to_string().contains(wf));
    let groups = json_ok(
        f.app
            .get("/v1/admin/groups", &f.a_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(groups.as_array().unwrap().len(), 1);
    assert_eq!(groups[0]["id"], f.a_workspace.as_str());
    // And B's key still works.
    json_ok(
        f.app
            .get(&format!("/v1/workflows/{wf}"), &f.b_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    f.app.stop().await;
}

#[tokio::test]
async fn a_workspace_id_that_does_not_exist_is_404_not_403() {
    let f = fixture().await;
    let path = format!("/v1/admin/groups/{}/api-keys", uuid::Uuid::new_v4());
    let response = f.app.get(&path, &f.a_key).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let response = f
        .app
        .get("/v1/workflows/not-a-uuid", &f.a_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    f.app.stop().await;
}

#[tokio::test]
async fn a_tenant_admin_key_manages_every_workspace_of_the_organization() {
    let f = fixture().await;
    let app = &f.app;
    let keys = json_ok(
        app.get(
            &format!("/v1/admin/groups/{}/api-keys", f.b_workspace),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert!(keys.to_string().contains(&f.b_key_id));
    // But workflows stay scoped to the key's own workspace, even for tenant admins.
    let response = app
        .get(&format!("/v1/workflows/{}", f.b_workflow), &app.owner_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    f.app.stop().await;
}
