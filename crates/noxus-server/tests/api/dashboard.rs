//! The dashboard's session and CSRF rules, over plain HTTP (no browser):
//! cookies, tokens, throttling, roles, and the key shown once.

use noxus_api::Role;
use noxus_testkit::TestApp;
use reqwest::StatusCode;

use crate::helpers::Browser;

fn keys_path(app: &TestApp) -> String {
    format!(
        "/settings/organization/workspaces/{}/api-keys",
        app.workspace_id
    )
}

#[tokio::test]
async fn logging_in_sets_a_safe_session_cookie_and_logging_out_ends_it() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    let protected = browser.get("/settings/organization/workspaces").await;
    assert_eq!(protected.status, StatusCode::SEE_OTHER);
    assert_eq!(protected.location_path(), "/login");

    let page = browser.login(&app.owner).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let cookie = page.headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(cookie.starts_with("noxus_session="));
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "not over plain http");
    let list = browser.get("/settings/organization/workspaces").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains("Default"));
    assert_eq!(list.headers.get("cache-control").unwrap(), "no-store");
    assert!(list
        .headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));

    let csrf = list.field("csrf").unwrap();
    let out = browser.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let after = browser.get("/settings/organization/workspaces").await;
    assert_eq!(after.location_path(), "/login", "the session ended");
    app.stop().await;
}

#[tokio::test]
async fn behind_https_the_session_cookie_is_secure() {
    // X-Forwarded-Proto counts from a trusted proxy only (see login_protection.rs).
    let app = TestApp::spawn_with(|config| {
        config.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http
        .get(app.url("/login"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let pre = page
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let body = page.text().await.unwrap();
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let response = http
        .post(app.url("/login"))
        .header("cookie", pre.as_str())
        .header("x-forwarded-proto", "https")
        .form(&[
            ("email", app.owner.email.as_str()),
            ("password", app.owner.password.as_str()),
            ("csrf", csrf.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("; Secure"), "{cookie}");
    // The __Host- prefix: no subdomain or plain-HTTP answer can plant it.
    assert!(cookie.starts_with("__Host-noxus_session="), "{cookie}");
    assert!(pre.starts_with("__Host-noxus_form="), "{pre}");
    let session = cookie.split(';').next().unwrap();
    let page = http
        .get(app.url("/settings/organization/workspaces"))
        .header("cookie", session)
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    // The same token under the plain name is not a session over HTTPS.
    let plain = session.trim_start_matches("__Host-");
    let page = http
        .get(app.url("/settings/organization/workspaces"))
        .header("cookie", plain)
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    app.stop().await;
}

#[tokio::test]
async fn with_an_https_public_url_every_answer_sends_hsts() {
    let app = TestApp::spawn_with(|config| {
        config.public_url = Some("https://noxus.example".to_owned());
    })
    .await;
    for path in ["/healthz", "/login", "/v1/admin/me"] {
        // The public URL names the proxy in front; the test talks to the port.
        let url = format!("http://127.0.0.1:{}{path}", app.port);
        let response = app.http.get(url).send().await.unwrap();
        assert_eq!(
            response.headers()["strict-transport-security"],
            "max-age=31536000",
            "{path}"
        );
    }
    app.stop().await;
    let plain = TestApp::spawn().await;
    let response = plain.http.get(plain.url("/healthz")).send().await.unwrap();
    assert!(response
        .headers()
        .get("strict-transport-security")
        .is_none());
    plain.stop().await;
}

#[tokio::test]
async fn an_idle_session_ends_after_thirty_minutes_and_old_rows_are_purged() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    browser.login(&app.owner).await;
    assert_eq!(
        browser.get("/settings/account").await.status,
        StatusCode::OK
    );
    let digest = browser.session_digest();
    let idle = time::OffsetDateTime::now_utc() - time::Duration::minutes(31);
    app.state
        .store()
        .touch_session(&digest, idle)
        .await
        .unwrap();
    assert_eq!(
        browser.get("/settings/account").await.location_path(),
        "/login"
    );
    // Another idle session and an old nonce are purged by the maintenance.
    let mut other = Browser::new(&app);
    other.login(&app.owner).await;
    let other_digest = other.session_digest();
    app.state
        .store()
        .touch_session(&other_digest, idle)
        .await
        .unwrap();
    let purged = noxus_server::startup::purge_expired(&app.state)
        .await
        .unwrap();
    assert!(purged >= 1, "{purged}");
    assert!(app
        .state
        .store()
        .session(&other_digest, time::OffsetDateTime::now_utc())
        .await
        .unwrap()
        .is_none());
    // A used nonce is kept a day (a resubmitted form must still be refused), then purged.
    let nonce = "an old nonce of 32 characters...";
    assert!(app.state.store().use_nonce(nonce).await.unwrap());
    assert!(!app.state.store().use_nonce(nonce).await.unwrap());
    let now = time::OffsetDateTime::now_utc();
    app.state
        .store()
        .purge_expired(
            now,
            now - time::Duration::minutes(30),
            now + time::Duration::seconds(1),
        )
        .await
        .unwrap();
    assert!(app.state.store().use_nonce(nonce).await.unwrap(), "purged");
    app.stop().await;
}

#[tokio::test]
async fn forms_without_the_right_csrf_token_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    // The login form itself needs its token.
    browser.get("/login").await;
    let refused = browser
        .post(
            "/login",
            &[
                ("email", &app.owner.email),
                ("password", &app.owner.password),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body.contains("security token"));

    browser.login(&app.owner).await;
    let csrf = browser.csrf().await;
    let new_key = browser.get(&format!("{}/new", keys_path(&app))).await;
    let nonce = new_key.field("nonce").unwrap();
    for token in [None, Some("wrong-token-wrong-token-wrong-tok")] {
        let mut form = vec![("name", "sneaky"), ("nonce", nonce.as_str())];
        if let Some(token) = token {
            form.push(("csrf", token));
        }
        let page = browser.post(&keys_path(&app), &form).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{token:?}");
        let page = browser
            .post(
                "/settings/organization/workspaces",
                &[("name", "Sneaky"), ("csrf", token.unwrap_or(""))],
            )
            .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
    }
    let keys = app
        .state
        .store()
        .list_keys(&app.workspace_id.as_str().into(), None)
        .await
        .unwrap();
    assert!(
        keys.iter().all(|k| k.name != "sneaky"),
        "no key was created"
    );
    let workspaces = app
        .state
        .store()
        .list_workspaces(&app.organization_id.as_str().into())
        .await
        .unwrap();
    assert!(workspaces.iter().all(|w| w.name != "Sneaky"));
    // With the token it works.
    let created = browser
        .post(
            &keys_path(&app),
            &[("name", "real"), ("nonce", &nonce), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    app.stop().await;
}

#[tokio::test]
async fn a_created_key_is_shown_once_and_a_resubmission_shows_nothing() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    browser.login(&app.owner).await;
    let csrf = browser.csrf().await;
    let form = browser.get(&format!("{}/new", keys_path(&app))).await;
    let nonce = form.field("nonce").unwrap();
    let created = browser
        .post(
            &keys_path(&app),
            &[
                ("name", "from the dashboard"),
                ("nonce", &nonce),
                ("csrf", &csrf),
                ("expires_in", "30d"),
                ("permissions", "workflows:read"),
                ("permissions", "models:read"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.headers.get("cache-control").unwrap(), "no-store");
    let start = created.body.find("id=\"new-key-value\">").unwrap() + "id=\"new-key-value\">".len();
    let secret = created.body[start..start + 44].to_owned();
    assert_eq!(noxus_api::check_key_format(&secret), Ok(()));
    assert!(
        created.body.contains("it won&#39;t be shown again")
            || created.body.contains("it won't be shown again")
            || created.body.contains("it won&#x27;t be shown again"),
        "{}",
        created.body
    );

    let me = app.client(&secret).me().await.unwrap();
    assert_eq!(me.name, "from the dashboard");
    assert_eq!(
        me.permissions.len(),
        2,
        "restricted to the two ticked permissions"
    );
    assert!(me.expires_at.is_some());

    let again = browser
        .post(
            &keys_path(&app),
            &[
                ("name", "from the dashboard"),
                ("nonce", &nonce),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(!again.body.contains(&secret[10..]));
    let keys = app
        .state
        .store()
        .list_keys(&app.workspace_id.as_str().into(), None)
        .await
        .unwrap();
    assert_eq!(
        keys.iter()
            .filter(|k| k.name == "from the dashboard")
            .count(),
        1,
        "no second key"
    );
    // Last use is written within a flush interval; flush now instead of waiting.
    app.state.usage().flush(app.state.store()).await;
    let list = browser.get(&keys_path(&app)).await;
    assert!(
        list.body.contains(&secret[..10]) && !list.body.contains(&secret[10..]),
        "the list shows the fragment only"
    );
    assert!(list.body.contains("from 127.0.0.1"), "last used is shown");
    app.stop().await;
}

#[tokio::test]
async fn a_viewer_sees_no_create_button_and_a_forged_post_is_403() {
    let app = TestApp::spawn().await;
    let viewer = app.user_with_role(Role::Viewer).await;
    let mut browser = Browser::new(&app);
    browser.login(&viewer).await;
    let page = browser.get(&keys_path(&app)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("id=\"create-key\""));
    let csrf = page.field("csrf").unwrap();
    let forged = browser
        .post(
            &keys_path(&app),
            &[
                ("name", "x"),
                ("nonce", "abcdefghijabcdefghijabcdefghij12"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let new_page = browser.get(&format!("{}/new", keys_path(&app))).await;
    assert_eq!(new_page.status, StatusCode::FORBIDDEN);
    // Nor may a viewer change members.
    let members = format!(
        "/settings/organization/workspaces/{}/members",
        app.workspace_id
    );
    // A viewer does not even see the members (members:read is for admins and owners).
    let page = browser.get(&members).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.body
            .contains("As a viewer of this workspace you cannot see the members of the workspace"),
        "{}",
        page.body
    );
    let forged = browser
        .post(
            &members,
            &[("email", &viewer.email), ("role", "owner"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.state
            .store()
            .membership(
                &app.workspace_id.as_str().into(),
                &viewer.id.as_str().into()
            )
            .await
            .unwrap(),
        Some(Role::Viewer)
    );
    app.stop().await;
}

#[tokio::test]
async fn failed_logins_are_throttled_per_account_with_a_clear_message() {
    // Five failures are free, the sixth starts the wait (long here, so that
    // the test does not race it).
    let app = TestApp::spawn_with(|config| {
        config.login_throttle.first_delay = std::time::Duration::from_secs(60);
    })
    .await;
    let member = app.user_with_role(Role::Member).await;
    let mut browser = Browser::new(&app);
    browser.get("/login").await;
    let csrf = browser.get("/login").await.field("csrf").unwrap();
    for _ in 0..6 {
        let page = browser
            .post(
                "/login",
                &[
                    ("email", &member.email),
                    ("password", "wrong password"),
                    ("csrf", &csrf),
                ],
            )
            .await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
        assert!(page.body.contains("Wrong email or password"));
    }
    let blocked = browser
        .post(
            "/login",
            &[
                ("email", &member.email),
                ("password", &member.password),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(blocked.body.contains("Too many failed attempts"));
    assert!(blocked.headers.get("retry-after").is_some());
    // Another account from the same address still logs in.
    let page = browser.login(&app.owner).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    app.stop().await;
}

#[tokio::test]
async fn an_expired_session_sends_you_to_the_login_page() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    browser.login(&app.owner).await;
    let token = browser.cookies.get("noxus_session").unwrap().clone();
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(token.as_bytes()))
    };
    let found = app
        .state
        .store()
        .session(&digest, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert!(found.is_some(), "only the digest of the cookie is stored");
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(13);
    assert!(
        app.state
            .store()
            .session(&digest, later)
            .await
            .unwrap()
            .is_none(),
        "sessions last 12 hours"
    );
    app.state
        .store()
        .delete_user_sessions(&app.owner.id.as_str().into())
        .await
        .unwrap();
    assert_eq!(
        browser
            .get("/settings/organization/workspaces")
            .await
            .location(),
        "/login?next=%2Fsettings%2Forganization%2Fworkspaces"
    );
    app.stop().await;
}

#[tokio::test]
async fn membership_rules_hold_whatever_the_page_shows() {
    let app = TestApp::spawn().await;
    let admin = app.user_with_role(Role::Admin).await;
    let member = app.user_with_role(Role::Member).await;
    let members = format!(
        "/settings/organization/workspaces/{}/members",
        app.workspace_id
    );
    let mut browser = Browser::new(&app);
    browser.login(&admin).await;
    let csrf = browser.csrf().await;
    // An admin cannot make an owner, nor touch the owner.
    let page = browser
        .post(
            &format!("{members}/{}/role", member.id),
            &[("role", "owner"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let page = browser
        .post(
            &format!("{members}/{}/remove", app.owner.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    // But can demote a member, and the member's key loses its writes at once.
    let page = browser
        .post(
            &format!("{members}/{}/role", member.id),
            &[("role", "viewer"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let err = app
        .client(&member.key)
        .workflows()
        .create("x")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403));

    // The last owner can be neither demoted nor removed, even by themself.
    let mut owner = Browser::new(&app);
    owner.login(&app.owner).await;
    let csrf = owner.csrf().await;
    let page = owner
        .post(
            &format!("{members}/{}/role", app.owner.id),
            &[("role", "admin"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert!(page.body.contains("at least one owner"));
    let page = owner
        .post(
            &format!("{members}/{}/remove", app.owner.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(page.status, StatusCode::CONFLICT);
    // Removing a member makes their key 401 at once.
    let page = owner
        .post(
            &format!("{members}/{}/remove", member.id),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        app.client(&member.key).me().await.unwrap_err().status(),
        Some(401)
    );
    // Adding by email: a malformed email gets a clear message, and the
    // form keeps what was typed.
    let nonce = owner.get(&members).await.field("nonce").unwrap();
    let page = owner
        .post(
            &members,
            &[
                ("email", "nobody at example.com"),
                ("role", "viewer"),
                ("nonce", &nonce),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.body.contains("email address, such as ada@example.com"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("value=\"nobody at example.com\""),
        "the form keeps what was typed: {}",
        page.body
    );
    let page = owner
        .post(
            &members,
            &[
                ("email", &member.email),
                ("role", "viewer"),
                ("nonce", &nonce),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let confirmed = owner.get(page.location()).await;
    assert!(
        confirmed
            .body
            .contains(&format!("{} was added to", member.email)),
        "{}",
        confirmed.body
    );
    assert_eq!(
        app.state
            .store()
            .membership(
                &app.workspace_id.as_str().into(),
                &member.id.as_str().into()
            )
            .await
            .unwrap(),
        Some(Role::Viewer)
    );
    app.stop().await;
}

#[tokio::test]
async fn the_setup_page_creates_the_owner_once_when_the_first_start_did_not() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    assert_eq!(
        browser.get("/setup").await.location_path(),
        "/login",
        "already set up"
    );
    app.stop().await;

    // Production mode without a preset password: the first start creates nothing.
    let dir = tempfile::tempdir().unwrap();
    let mut config = noxus_server::Config::new(dir.path());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.welcome = false;
    let mut application = noxus_server::Application::build(config).await.unwrap();
    assert!(application.take_welcome().is_none());
    let link = {
        use secrecy::ExposeSecret as _;
        application
            .take_setup_link()
            .unwrap()
            .0
            .expose_secret()
            .to_owned()
    };
    let token = link.split_once("?token=").unwrap().1.to_owned();
    let base = application.base_url().to_owned();
    let state = application.state().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let mut browser = Browser::at(&base);
    assert_eq!(browser.get("/login").await.location(), "/setup");
    // Without the one-time token printed at start, nobody may set it up.
    let bare = browser.get("/setup").await;
    assert_eq!(bare.status, StatusCode::FORBIDDEN);
    assert!(bare.body.contains("one-time link"), "{}", bare.body);
    assert_eq!(
        browser.get("/setup?token=guessed").await.status,
        StatusCode::FORBIDDEN
    );
    let form = browser.get(&format!("/setup?token={token}")).await;
    assert_eq!(form.status, StatusCode::OK);
    let csrf = form.field("csrf").unwrap();
    let forged = browser
        .post(
            "/setup",
            &[
                ("organization", "Evil"),
                ("email", "evil@x.test"),
                ("password", "a long enough password"),
                ("password_confirm", "a long enough password"),
                ("token", "guessed"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let short = browser
        .post(
            "/setup",
            &[
                ("organization", "Acme"),
                ("email", "ops@acme.test"),
                ("password", "short"),
                ("password_confirm", "short"),
                ("token", &token),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(short.body.contains("at least 12 characters"));
    let password = "a long enough password";
    // Two people submit at the same moment: one sets it up, the other gets 409.
    let mut rival = Browser::at(&base);
    let rival_csrf = rival
        .get(&format!("/setup?token={token}"))
        .await
        .field("csrf")
        .unwrap();
    let acme = [
        ("organization", "Acme"),
        ("email", "ops@acme.test"),
        ("password", password),
        ("password_confirm", password),
        ("token", token.as_str()),
        ("csrf", csrf.as_str()),
    ];
    let other = [
        ("organization", "Rival"),
        ("email", "rival@acme.test"),
        ("password", password),
        ("password_confirm", password),
        ("token", token.as_str()),
        ("csrf", rival_csrf.as_str()),
    ];
    let (done, lost) = tokio::join!(browser.post("/setup", &acme), rival.post("/setup", &other));
    let (done, lost) = if done.status == StatusCode::SEE_OTHER {
        (done, lost)
    } else {
        (lost, done)
    };
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(lost.status, StatusCode::CONFLICT, "{}", lost.body);
    let name = state.store().organization().await.unwrap().unwrap().name;
    let winner_email = if name == "Acme" {
        "ops@acme.test"
    } else {
        "rival@acme.test"
    };
    // Once only.
    assert_eq!(browser.get("/setup").await.location_path(), "/login");
    let again = browser
        .post(
            "/setup",
            &[
                ("organization", "Evil"),
                ("email", "evil@x.test"),
                ("password", password),
                ("password_confirm", password),
                ("token", &token),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let login_form = browser.get("/login").await;
    let csrf = login_form.field("csrf").unwrap();
    let logged_in = browser
        .post(
            "/login",
            &[
                ("email", winner_email),
                ("password", password),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(logged_in.status, StatusCode::SEE_OTHER);
    let _ = tx.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_usage_and_audit_tabs_follow_the_role() {
    let app = TestApp::spawn().await;
    let viewer = app.user_with_role(Role::Viewer).await;
    let member = app.user_with_role(Role::Member).await;
    for _ in 0..3 {
        app.client(&member.key).me().await.unwrap();
    }
    app.client(&viewer.key).me().await.unwrap();
    let usage = format!(
        "/settings/organization/workspaces/{}/usage",
        app.workspace_id
    );
    let audit = format!(
        "/settings/organization/workspaces/{}/audit",
        app.workspace_id
    );

    let mut owner = Browser::new(&app);
    owner.login(&app.owner).await;
    let page = owner.get(&usage).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("id=\"usage-total\">4<"),
        "all keys: 4 requests"
    );
    assert!(page.body.contains("<rect class=\"seg-ok\""));
    let log = owner.get(&format!("{audit}?action=membership.")).await;
    assert_eq!(log.status, StatusCode::OK);
    assert!(
        log.body.contains("data-action=\"membership.set\"")
            && !log.body.contains("data-action=\"api_key.create\"")
    );
    let unknown = owner.get(&format!("{audit}?action=api_key")).await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        unknown.body.contains("choose one from the list"),
        "{}",
        unknown.body
    );
    let damaged = owner.get(&format!("{audit}?before=abc")).await;
    assert_eq!(damaged.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(damaged.body.contains("damaged"), "{}", damaged.body);

    let mut browser = Browser::new(&app);
    browser.login(&viewer).await;
    let page = browser.get(&usage).await;
    assert!(
        page.body.contains("Your keys in this workspace")
            && page.body.contains("id=\"usage-total\">1<"),
        "only the viewer's own key"
    );
    assert_eq!(browser.get(&audit).await.status, StatusCode::FORBIDDEN);
    app.stop().await;
}

#[tokio::test]
async fn the_usage_tab_lists_only_the_newest_hundred_flags() {
    let app = TestApp::spawn_with(|c| c.max_addresses_per_key = 300).await;
    let member = app.user_with_role(Role::Member).await;
    let now = time::OffsetDateTime::now_utc();
    let addresses = (0..250i64)
        .map(|i| {
            (
                format!("198.51.{}.{}", i / 200, 1 + i % 200),
                now - time::Duration::seconds(i),
            )
        })
        .collect();
    app.state
        .store()
        .record_usage(
            &[noxus_server::store::KeyUsageFlush {
                key_id: member.key_id.clone().into(),
                workspace_id: app.workspace_id.clone().into(),
                addresses,
                last_used: None,
                hours: Vec::new(),
            }],
            300,
        )
        .await
        .unwrap();
    let mut owner = Browser::new(&app);
    owner.login(&app.owner).await;
    let page = owner
        .get(&format!(
            "/settings/organization/workspaces/{}/usage",
            app.workspace_id
        ))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.body.matches("class=\"flag flag-new_address\"").count(),
        100
    );
    assert!(
        page.body.contains("The newest 100 of 249 flags"),
        "says the list was cut"
    );
    assert!(page.body.len() < 200_000, "{} bytes", page.body.len());
    app.stop().await;
}
