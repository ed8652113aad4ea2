//! People leave, and sensitive actions re-ask the password: deactivation,
//! demotion, removal, password changes and resets, sessions ended, sudo
//! mode, the last owner kept under concurrency, and who sees whom.

use noxus_api::Role;
use noxus_server::store::Actor;
use noxus_testkit::TestApp;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, json_ok, Browser};

fn keys_page(workspace_id: &str) -> String {
    format!("/settings/organization/workspaces/{workspace_id}/api-keys")
}

/// Deactivating a user ends their sessions and disables their keys in every
/// workspace at once; reactivation does not bring the keys back.
#[tokio::test]
async fn deactivating_a_user_ends_sessions_and_disables_keys_everywhere() {
    let app = TestApp::spawn().await;
    let leaver = app.user_with_role(Role::Member).await;
    let other = app.second_workspace("Other").await;
    let elsewhere = app.user_in(&other.workspace_id, Role::Member).await;
    // The same person in the other workspace: give the leaver a key there too.
    noxus_server::members::set_role(
        &app.state,
        &Actor::system(),
        &other.workspace_id.as_str().into(),
        &leaver.id.as_str().into(),
        Role::Member,
    )
    .await
    .unwrap();
    let (other_key, _) = app
        .issue_key(&other.workspace_id, &leaver.id, Default::default())
        .await;
    for key in [&leaver.key, &other_key] {
        json_ok(app.get("/v1/workflows", key).send().await.unwrap()).await;
    }
    let mut browser = Browser::new(&app);
    assert_eq!(browser.login(&leaver).await.status, StatusCode::SEE_OTHER);
    assert_eq!(
        browser
            .get("/settings/organization/workspaces")
            .await
            .status,
        StatusCode::OK
    );

    let user = json_ok(
        app.patch(&format!("/v1/admin/users/{}", leaver.id), &app.owner_key)
            .json(&json!({"is_active": false}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(user["is_active"], false);
    for key in [&leaver.key, &other_key] {
        let body = assert_error(
            app.get("/v1/workflows", key).send().await.unwrap(),
            401,
            "revoked_api_key",
        )
        .await;
        assert!(body["detail"].as_str().unwrap().contains("deactivated"));
    }
    let page = browser.get("/settings/organization/workspaces").await;
    assert_eq!(page.location_path(), "/login", "the session ended");
    // They cannot log in again.
    let again = browser.login(&leaver).await;
    assert_eq!(again.status, StatusCode::FORBIDDEN);
    // The keys list says why.
    let listed = json_ok(
        app.get(
            &format!("/v1/admin/groups/{}/api-keys", app.workspace_id),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == leaver.key_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["status"], "disabled");
    assert_eq!(entry["revoked_reason"], "owner_deactivated");
    // Someone else's key is untouched.
    json_ok(
        app.get("/v1/workflows", &elsewhere.key)
            .send()
            .await
            .unwrap(),
    )
    .await;

    // Giving power back is not done with a key: the dashboard asks for the password.
    let refused = app
        .patch(&format!("/v1/admin/users/{}", leaver.id), &app.owner_key)
        .json(&json!({"is_active": true}))
        .send()
        .await
        .unwrap();
    assert_error(refused, 403, "insufficient_permissions").await;
    let mut admin = Browser::new(&app);
    admin.login(&app.owner).await;
    let csrf = admin.csrf().await;
    let page = admin
        .post(
            &format!("/settings/organization/users/{}/reactivate", leaver.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let users = admin.get(page.location()).await;
    assert!(
        users.body.contains("was reactivated and may log in again"),
        "the Users page confirms: {}",
        users.body
    );
    assert_eq!(
        browser.login(&leaver).await.status,
        StatusCode::SEE_OTHER,
        "may log in again"
    );
    assert_error(
        app.get("/v1/workflows", &leaver.key).send().await.unwrap(),
        401,
        "revoked_api_key",
    )
    .await;
    app.stop().await;
}

/// Removing a member disables their keys in that workspace for good:
/// adding them back does not revive the old keys (it used to).
#[tokio::test]
async fn removing_a_member_disables_their_keys_there_for_good() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    json_ok(app.get("/v1/workflows", &member.key).send().await.unwrap()).await;
    noxus_server::members::remove(
        &app.state,
        &Actor::system(),
        &app.workspace_id.as_str().into(),
        &member.id.as_str().into(),
    )
    .await
    .unwrap();
    noxus_server::members::set_role(
        &app.state,
        &Actor::system(),
        &app.workspace_id.as_str().into(),
        &member.id.as_str().into(),
        Role::Member,
    )
    .await
    .unwrap();
    assert_error(
        app.get("/v1/workflows", &member.key).send().await.unwrap(),
        401,
        "revoked_api_key",
    )
    .await;
    let shown = json_ok(
        app.get(
            &format!(
                "/v1/admin/groups/{}/api-keys/{}",
                app.workspace_id, member.key_id
            ),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(shown["status"], "disabled");
    assert_eq!(shown["revoked_reason"], "owner_removed");
    // The dashboard says so too.
    let mut owner = Browser::new(&app);
    owner.login(&app.owner).await;
    let page = owner.get(&keys_page(&app.workspace_id)).await;
    let row = page
        .body
        .find(&format!("data-key-id=\"{}\"", member.key_id))
        .unwrap();
    let row = &page.body[row..row + 2000];
    assert!(row.contains("status-disabled"), "{row}");
    assert!(row.contains("removed from the workspace"), "{row}");
    app.stop().await;
}

/// Unmaking an organization admin strips their tenant-admin keys of the
/// organization permissions at once; the last admin stays.
#[tokio::test]
async fn demoting_an_organization_admin_takes_their_tenant_keys_powers_at_once() {
    let app = TestApp::spawn().await;
    let second = app.user_with_role(Role::Owner).await;
    noxus_server::users::set_org_admin(
        &app.state,
        &Actor::system(),
        &app.organization_id.as_str().into(),
        &second.id.as_str().into(),
        true,
    )
    .await
    .unwrap();
    let (tenant_key, _) = app
        .issue_key(
            &app.workspace_id,
            &second.id,
            noxus_testkit::KeyOptions {
                tenant_admin: true,
                ..Default::default()
            },
        )
        .await;
    json_ok(
        app.get("/v1/admin/users", &tenant_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let demoted = json_ok(
        app.patch(&format!("/v1/admin/users/{}", second.id), &app.owner_key)
            .json(&json!({"tenant_admin": false}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(demoted["tenant_admin"], false);
    let body = assert_error(
        app.get("/v1/admin/users", &tenant_key)
            .send()
            .await
            .unwrap(),
        403,
        "insufficient_permissions",
    )
    .await;
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("no longer an organization admin"));
    // The last organization admin cannot be demoted (or deactivated).
    let last = app
        .patch(&format!("/v1/admin/users/{}", app.owner.id), &app.owner_key)
        .json(&json!({"tenant_admin": false}))
        .send()
        .await
        .unwrap();
    assert_error(last, 409, "conflict").await;
    app.stop().await;
}

/// Changing one's password ends one's other sessions; "log out other
/// sessions" does the same without a new password.
#[tokio::test]
async fn a_password_change_ends_the_other_sessions() {
    let app = TestApp::spawn().await;
    let user = app.user_with_role(Role::Member).await;
    let mut laptop = Browser::new(&app);
    let mut phone = Browser::new(&app);
    laptop.login(&user).await;
    phone.login(&user).await;
    let csrf = laptop.csrf().await;
    let wrong = laptop
        .post(
            "/settings/account/password",
            &[
                ("current_password", "not the password"),
                ("password", "a brand new password"),
                ("password_confirm", "a brand new password"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        phone.get("/settings/account").await.status,
        StatusCode::OK,
        "nothing changed"
    );
    let changed = laptop
        .post(
            "/settings/account/password",
            &[
                ("current_password", &user.password),
                ("password", "a brand new password"),
                ("password_confirm", "a brand new password"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.body);
    assert_eq!(changed.location(), "/settings/account");
    let account = laptop.get(changed.location()).await;
    assert!(account.body.contains("other sessions were logged out"));
    assert!(
        !laptop
            .get("/settings/account")
            .await
            .body
            .contains("other sessions were logged out"),
        "the confirmation is shown once"
    );
    assert_eq!(
        phone.get("/settings/account").await.location_path(),
        "/login"
    );
    assert_eq!(laptop.get("/settings/account").await.status, StatusCode::OK);
    let mut renewed = user.clone();
    renewed.password = "a brand new password".to_owned();
    let mut tablet = Browser::new(&app);
    assert_eq!(tablet.login(&renewed).await.status, StatusCode::SEE_OTHER);
    assert_eq!(
        Browser::new(&app).login(&user).await.status,
        StatusCode::UNAUTHORIZED,
        "the old password is gone"
    );

    let csrf = laptop.csrf().await;
    let page = laptop
        .post("/settings/account/sessions", &[("csrf", &csrf)])
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let page = laptop.get(page.location()).await;
    assert!(
        page.body.contains("1 other session was logged out"),
        "{}",
        page.body
    );
    assert_eq!(
        tablet.get("/settings/account").await.location_path(),
        "/login"
    );
    assert_eq!(laptop.get("/settings/account").await.status, StatusCode::OK);
    app.stop().await;
}

/// A user created (or reset) with a password someone else chose must
/// choose their own before anything else.
#[tokio::test]
async fn a_password_chosen_by_an_admin_must_be_changed_at_first_login() {
    let app = TestApp::spawn().await;
    let mut admin = Browser::new(&app);
    admin.login(&app.owner).await;
    let csrf = admin.csrf().await;
    // A password too short: the form comes back with the email and name
    // kept (never the password), the password field focused and marked.
    let refused = admin
        .post(
            "/settings/organization/users",
            &[
                ("email", "Newcomer@Example.com"),
                ("name", "Newcomer"),
                ("password", "short one"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("value=\"newcomer@example.com\""));
    assert!(refused.body.contains("value=\"Newcomer\""));
    assert!(!refused.body.contains("short one"));
    assert!(
        refused.body.contains(
            "minlength=\"12\" required autocomplete=\"new-password\" aria-invalid=\"true\" aria-describedby=\"users-error\" autofocus"
        ),
        "{}",
        refused.body
    );
    let created = admin
        .post(
            "/settings/organization/users",
            &[
                ("email", "newcomer@example.com"),
                ("name", "Newcomer"),
                ("password", "initial password 1"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    assert!(admin
        .get(created.location())
        .await
        .body
        .contains("newcomer@example.com now has an account."));
    let newcomer = app
        .state
        .store()
        .user_by_email("newcomer@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(newcomer.must_change_password);
    let mut browser = Browser::new(&app);
    let login_page = browser.get("/login").await;
    let form_csrf = login_page.field("csrf").unwrap();
    let logged_in = browser
        .post(
            "/login",
            &[
                ("email", "newcomer@example.com"),
                ("password", "initial password 1"),
                ("csrf", &form_csrf),
            ],
        )
        .await;
    assert_eq!(logged_in.status, StatusCode::SEE_OTHER);
    for path in ["/settings/organization/workspaces", "/settings/account"] {
        let page = browser.get(path).await;
        assert_eq!(page.location(), "/settings/account/password", "{path}");
    }
    let form = browser.get("/settings/account/password").await;
    assert!(form.body.contains("password-forced"));
    let csrf = form.field("csrf").unwrap();
    let changed = browser
        .post(
            "/settings/account/password",
            &[
                ("current_password", "initial password 1"),
                ("password", "only I know this one"),
                ("password_confirm", "only I know this one"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.body);
    assert_eq!(changed.location(), "/settings/organization/workspaces");
    assert_eq!(
        browser
            .get("/settings/organization/workspaces")
            .await
            .status,
        StatusCode::OK
    );

    // An admin's reset sets a temporary password that must be changed too,
    // and ends the user's sessions.
    let admin_csrf = admin.csrf().await;
    let page = admin
        .post(
            &format!("/settings/organization/users/{}/password", newcomer.id),
            &[("password", "temporary password 2"), ("csrf", &admin_csrf)],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert!(admin
        .get(page.location())
        .await
        .body
        .contains("password was reset"));
    assert_eq!(
        browser
            .get("/settings/organization/workspaces")
            .await
            .location_path(),
        "/login"
    );
    // An organization admin's password is not reset by another admin.
    let page = admin
        .post(
            &format!("/settings/organization/users/{}/password", app.owner.id),
            &[("password", "temporary password 3"), ("csrf", &admin_csrf)],
        )
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT, "{}", page.body);
    app.stop().await;
}

/// Showing a new key's secret, rotating, creating an organization admin and
/// deactivating a user re-ask the password after 10 minutes.
#[tokio::test]
async fn sensitive_actions_reask_the_password_after_ten_minutes() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let mut browser = Browser::new(&app);
    browser.login(&app.owner).await;
    browser.end_sudo(&app).await;
    let new_key = format!("{}/new", keys_page(&app.workspace_id));

    let page = browser.get(&new_key).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(
        page.location().starts_with("/sudo?next="),
        "{}",
        page.location()
    );
    // A form posted without a fresh password is sent to the same page.
    let csrf = browser.csrf().await;
    let posted = browser
        .post(
            &keys_page(&app.workspace_id),
            &[
                ("name", "x"),
                ("nonce", "abcdefghijabcdefghijabcdefghij12"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert!(
        posted.location().starts_with("/sudo"),
        "{}",
        posted.location()
    );
    assert!(!posted.body.contains("noxus_"));
    for (path, form) in [
        (
            format!("/settings/organization/users/{}/deactivate", member.id),
            vec![],
        ),
        (
            "/settings/organization/users".to_owned(),
            vec![
                ("email", "admin2@example.com"),
                ("name", "Second admin"),
                ("password", "initial password 1"),
                ("org_admin", "on"),
            ],
        ),
    ] {
        let mut form = form;
        form.push(("csrf", &csrf));
        let page = browser.post(&path, &form).await;
        assert!(
            page.location().starts_with("/sudo"),
            "{path}: {}",
            page.status
        );
    }
    json_ok(app.get("/v1/workflows", &member.key).send().await.unwrap()).await;
    assert!(app
        .state
        .store()
        .user_by_email("admin2@example.com")
        .await
        .unwrap()
        .is_none());

    // A wrong password does not open it; the right one goes back to the page.
    let wrong = browser.sudo("not my password", &new_key).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let right = browser.sudo(&app.owner.password, &new_key).await;
    assert_eq!(right.status, StatusCode::SEE_OTHER);
    assert_eq!(right.location(), new_key);
    assert_eq!(browser.get(&new_key).await.status, StatusCode::OK);
    // Only local paths are followed.
    browser.end_sudo(&app).await;
    let elsewhere = browser.sudo(&app.owner.password, "//evil.example/x").await;
    assert_eq!(elsewhere.location(), "/settings");
    app.stop().await;
}

/// Two owners demoting each other at the same moment: one succeeds, the
/// other is refused, never zero owners (1 run in 5 left none before the
/// rule moved into the write's transaction).
#[tokio::test]
async fn two_owners_demoting_each_other_at_once_leave_one_owner() {
    let app = TestApp::spawn().await;
    for round in 0..20 {
        let workspace = app
            .state
            .store()
            .create_workspace(
                &Actor::system(),
                &app.organization_id.as_str().into(),
                &format!("race {round}"),
                None,
                &app.owner.id.as_str().into(),
            )
            .await
            .unwrap();
        let a = app.user_in(workspace.id.as_str(), Role::Owner).await;
        let b = app.user_in(workspace.id.as_str(), Role::Owner).await;
        noxus_server::members::remove(
            &app.state,
            &Actor::system(),
            &workspace.id,
            &app.owner.id.as_str().into(),
        )
        .await
        .unwrap();
        let demote = |actor: &str, target: &str| {
            let state = app.state.clone();
            let (actor, target, ws) = (actor.to_owned(), target.to_owned(), workspace.id.clone());
            tokio::spawn(async move {
                noxus_server::members::change_checked(
                    &state,
                    &Actor {
                        user_id: Some(actor.into()),
                        ..Actor::default()
                    },
                    Role::Owner,
                    &ws,
                    &target.as_str().into(),
                    Role::Admin,
                )
                .await
            })
        };
        let (x, y) = tokio::join!(demote(&a.id, &b.id), demote(&b.id, &a.id));
        let results = [x.unwrap(), y.unwrap()];
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}: {results:?}"
        );
        assert!(results
            .iter()
            .any(|r| matches!(r, Err(noxus_server::members::MemberError::LastOwner))));
        let owners = app
            .state
            .store()
            .list_members(&workspace.id)
            .await
            .unwrap()
            .into_iter()
            .filter(|(_, role)| *role == Role::Owner)
            .count();
        assert_eq!(owners, 1, "round {round}");
    }
    app.stop().await;
}

/// Who sees the organization's users and a workspace's members follows
/// docs/permissions.md: organization admins see users, `members:read`
/// (admins and owners) sees members; viewers and members see neither.
#[tokio::test]
async fn only_admins_see_users_and_members() {
    let app = TestApp::spawn().await;
    let viewer = app.user_with_role(Role::Viewer).await;
    let member = app.user_with_role(Role::Member).await;
    let admin = app.user_with_role(Role::Admin).await;
    let members = format!(
        "/settings/organization/workspaces/{}/members",
        app.workspace_id
    );
    for (user, sees_members) in [(&viewer, false), (&member, false), (&admin, true)] {
        let mut browser = Browser::new(&app);
        browser.login(user).await;
        let page = browser.get("/settings/organization/users").await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", user.email);
        assert!(!page.body.contains(&app.owner.email), "no user list");
        let page = browser.get(&members).await;
        let expected = if sees_members {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(page.status, expected, "{}", user.email);
        let keys = browser.get(&keys_page(&app.workspace_id)).await;
        assert_eq!(keys.body.contains("id=\"tab-members\""), sees_members);
    }
    let mut owner = Browser::new(&app);
    owner.login(&app.owner).await;
    let page = owner.get("/settings/organization/users").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(&viewer.email));
    // The API: org:users:read (a tenant-admin key) only.
    for key in [&viewer.key, &admin.key] {
        assert_error(
            app.get("/v1/admin/users", key).send().await.unwrap(),
            403,
            "insufficient_permissions",
        )
        .await;
    }
    let users = json_ok(
        app.get("/v1/admin/users", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(users.to_string().contains(&viewer.email));
    app.stop().await;
}

/// A lost laptop: an organization's tenant-admin key ends a user's sessions
/// through the API (audited); a key without `org:users:write` cannot.
#[tokio::test]
async fn a_users_sessions_are_ended_through_the_api_and_audited() {
    let app = TestApp::spawn().await;
    let user = app.user_with_role(Role::Admin).await;
    let mut laptop = Browser::new(&app);
    laptop.login(&user).await;
    assert_eq!(laptop.get("/settings/account").await.status, StatusCode::OK);
    let path = format!("/v1/admin/users/{}/sessions", user.id);
    let management = app.management_key(&user, Role::Admin).await;
    assert_error(
        app.delete(&path, &management).send().await.unwrap(),
        403,
        "insufficient_permissions",
    )
    .await;
    let ended = json_ok(app.delete(&path, &app.owner_key).send().await.unwrap()).await;
    assert_eq!(ended["ended"], true);
    assert_eq!(
        laptop.get("/settings/account").await.location_path(),
        "/login"
    );
    let log = app
        .state
        .store()
        .audit_log(&app.organization_id.as_str().into(), None, 20)
        .await
        .unwrap();
    let row = log
        .iter()
        .find(|r| r.action == "user.sessions_end" && r.target_id == user.id)
        .expect("audited");
    assert_eq!(row.details["sessions_ended"], 1);
    assert_eq!(
        row.actor_key_id.as_ref().map(|id| id.as_str()),
        Some(app.owner.key_id.as_str())
    );
    // Someone outside the organization: not found.
    assert_error(
        app.delete("/v1/admin/users/nobody/sessions", &app.owner_key)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    app.stop().await;
}

/// Rotating one's own key in the dashboard re-asks the password too.
#[tokio::test]
async fn rotating_in_the_dashboard_reasks_the_password_after_ten_minutes() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    browser.login(&app.owner).await;
    browser.end_sudo(&app).await;
    let rotate = format!(
        "{}/{}/rotate",
        keys_page(&app.workspace_id),
        app.owner.key_id
    );
    let page = browser.get(&rotate).await;
    assert!(
        page.location().starts_with("/sudo?next="),
        "{}",
        page.status
    );
    let csrf = browser.csrf().await;
    let posted = browser
        .post(
            &rotate,
            &[
                ("grace", "0"),
                ("nonce", "abcdefghijabcdefghijabcdefghij12"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert!(posted.location().starts_with("/sudo"), "{}", posted.status);
    // Nothing was rotated: the key still works.
    json_ok(
        app.get("/v1/admin/me", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    browser.sudo(&app.owner.password, &rotate).await;
    assert_eq!(browser.get(&rotate).await.status, StatusCode::OK);
    app.stop().await;
}

/// The text of the element with `id` in a page (up to its closing tag).
fn element_text(body: &str, id: &str) -> Option<String> {
    let start = body.find(&format!("id=\"{id}\""))?;
    let start = start + body[start..].find('>')? + 1;
    let end = start + body[start..].find('<')?;
    Some(body[start..end].to_owned())
}

/// An admin of a workspace adds someone without an account in one step:
/// the account is created (a plain user, a member with the chosen role,
/// audited), its initial password is shown in that answer only, never
/// stored in plain text, and must be replaced at first login. Posting the
/// same form again creates nothing and shows nothing; an existing account
/// is only added, never given a new password; an admin cannot invite an
/// owner; and after 10 minutes the password is asked again first.
#[tokio::test]
async fn inviting_a_person_creates_their_account_once_and_never_touches_an_existing_one() {
    let app = TestApp::spawn().await;
    let admin = app.user_with_role(Role::Admin).await;
    let existing = app.user_in(&app.workspace_id, Role::Viewer).await;
    let other_ws = app
        .state
        .store()
        .create_workspace(
            &Actor::system(),
            &app.organization_id.as_str().into(),
            "elsewhere",
            None,
            &app.owner.id.as_str().into(),
        )
        .await
        .unwrap();
    let members = format!(
        "/settings/organization/workspaces/{}/members",
        app.workspace_id
    );
    let mut browser = Browser::new(&app);
    browser.login(&admin).await;
    let csrf = browser.csrf().await;

    // An admin may not invite an owner: the form comes back as typed.
    let nonce = browser.get(&members).await.field("nonce").unwrap();
    let page = browser
        .post(
            &members,
            &[
                ("email", "Boss@Example.com"),
                ("name", "Boss"),
                ("role", "owner"),
                ("nonce", &nonce),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(
        page.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        page.body
    );
    assert!(page.body.contains("Only an owner can make someone owner"));
    assert!(page.body.contains("value=\"boss@example.com\""));
    assert!(app
        .state
        .store()
        .user_by_email("boss@example.com")
        .await
        .unwrap()
        .is_none());

    // After 10 minutes, creating an account asks for the password first and
    // comes back to the form as it was typed.
    browser.end_sudo(&app).await;
    let page = browser
        .post(
            &members,
            &[
                ("email", "ada@example.com"),
                ("name", "Ada Lovelace"),
                ("role", "member"),
                ("nonce", &nonce),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(
        page.location().starts_with("/sudo?next="),
        "{}",
        page.location()
    );
    assert!(app
        .state
        .store()
        .user_by_email("ada@example.com")
        .await
        .unwrap()
        .is_none());
    let back = browser
        .sudo(
            &admin.password,
            &format!("{members}?email=ada%40example.com&name=Ada+Lovelace&role=member"),
        )
        .await;
    let form = browser.get(back.location()).await;
    assert!(
        form.body.contains("value=\"ada@example.com\""),
        "{}",
        form.body
    );
    assert!(form.body.contains("value=\"Ada Lovelace\""));

    // The invitation: 201, not cached, the password shown once.
    let nonce = form.field("nonce").unwrap();
    let fields = [
        ("email", "ada@example.com"),
        ("name", "Ada Lovelace"),
        ("role", "member"),
        ("nonce", nonce.as_str()),
        ("csrf", csrf.as_str()),
    ];
    let page = browser.post(&members, &fields).await;
    assert_eq!(page.status, StatusCode::CREATED, "{}", page.body);
    assert_eq!(page.headers["cache-control"], "no-store");
    let password = element_text(&page.body, "initial-password").expect("the password is shown");
    assert!(password.len() >= 12, "{password:?}");
    let ada = app
        .state
        .store()
        .user_by_email("ada@example.com")
        .await
        .unwrap()
        .expect("the account exists");
    assert!(ada.must_change_password && !ada.is_org_admin);
    assert_eq!(ada.name, "Ada Lovelace");
    assert!(
        !ada.password_hash.contains(&password),
        "only a hash is stored"
    );
    assert_eq!(
        app.state
            .store()
            .membership(&app.workspace_id.as_str().into(), &ada.id)
            .await
            .unwrap(),
        Some(Role::Member)
    );
    assert_eq!(
        app.state
            .store()
            .membership(&other_ws.id, &ada.id)
            .await
            .unwrap(),
        None,
        "a member of this workspace only"
    );
    let log = app
        .state
        .store()
        .audit_log(&app.organization_id.as_str().into(), None, 20)
        .await
        .unwrap();
    for action in ["user.create", "membership.set"] {
        let row = log
            .iter()
            .find(|r| r.action == action && r.target_id == ada.id.as_str())
            .unwrap_or_else(|| panic!("no {action} audit entry"));
        assert_eq!(
            row.actor_user_id.as_ref().map(|u| u.as_str()),
            Some(admin.id.as_str())
        );
        assert!(!row.details.to_string().contains(&password));
    }

    // The same form posted again: nothing created, nothing shown.
    let again = browser.post(&members, &fields).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert!(!again.body.contains(&password));
    assert!(again.body.contains("already-submitted"));

    // Ada logs in with it and must choose her own password first.
    let mut ada_browser = Browser::new(&app);
    let csrf_login = ada_browser.get("/login").await.field("csrf").unwrap();
    let logged_in = ada_browser
        .post(
            "/login",
            &[
                ("email", "ada@example.com"),
                ("password", &password),
                ("csrf", &csrf_login),
            ],
        )
        .await;
    assert_eq!(logged_in.status, StatusCode::SEE_OTHER);
    assert_eq!(
        ada_browser
            .get(&keys_page(&app.workspace_id))
            .await
            .location(),
        "/settings/account/password"
    );

    // An existing account is added, never given a new password (it was a
    // viewer here; remove them, then add them back as a member).
    let owner_csrf = {
        let mut owner = Browser::new(&app);
        owner.login(&app.owner).await;
        let csrf = owner.csrf().await;
        let removed = owner
            .post(
                &format!("{members}/{}/remove", existing.id),
                &[("csrf", &csrf)],
            )
            .await;
        assert_eq!(removed.status, StatusCode::SEE_OTHER);
        assert!(owner
            .get(removed.location())
            .await
            .body
            .contains(&format!("{} was removed from", existing.email)));
        csrf
    };
    assert!(!owner_csrf.is_empty());
    let before = app
        .state
        .store()
        .user_by_email(&existing.email)
        .await
        .unwrap()
        .unwrap();
    let nonce = browser.get(&members).await.field("nonce").unwrap();
    let page = browser
        .post(
            &members,
            &[
                ("email", existing.email.as_str()),
                ("name", "Someone Else"),
                ("role", "member"),
                ("nonce", &nonce),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert!(!page.body.contains("initial-password"));
    let after = app
        .state
        .store()
        .user_by_email(&existing.email)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.password_hash, before.password_hash);
    assert_eq!(after.name, before.name);
    assert!(!after.must_change_password);
    let confirmed = browser.get(page.location()).await;
    assert!(
        confirmed
            .body
            .contains(&format!("{} was added to", existing.email)),
        "{}",
        confirmed.body
    );
    // Adding them again says they are already a member.
    let nonce = confirmed.field("nonce").unwrap();
    let page = browser
        .post(
            &members,
            &[
                ("email", existing.email.as_str()),
                ("role", "viewer"),
                ("nonce", &nonce),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.body.contains("is already a member of this workspace"),
        "{}",
        page.body
    );
    app.stop().await;
}
