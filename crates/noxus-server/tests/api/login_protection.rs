//! The dashboard login under attack: password hashing cannot stall the API,
//! over-long input is refused before it costs anything, and failed logins
//! slow down the attacker without locking out the account's owner.
//! Clients bind to several loopback addresses (Linux accepts all of
//! 127.0.0.0/8) to log in "from" different machines.

use std::net::IpAddr;
use std::time::Duration;

use noxus_testkit::TestApp;
use reqwest::header::HeaderMap;
use reqwest::redirect::Policy;
use reqwest::StatusCode;

/// A browser at one address that holds the login form's token.
struct LoginClient {
    http: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

/// The answer to a login attempt.
#[derive(Debug)]
struct Attempt {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Attempt {
    fn retry_after(&self) -> u64 {
        self.headers
            .get("retry-after")
            .expect("a Retry-After header")
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }
}

fn address(text: &str) -> IpAddr {
    text.parse().unwrap()
}

impl LoginClient {
    async fn at(app: &TestApp, from: &str) -> Self {
        let http = reqwest::Client::builder()
            .redirect(Policy::none())
            .local_address(address(from))
            .build()
            .unwrap();
        let page = http.get(app.url("/login")).send().await.unwrap();
        let cookie = page
            .headers()
            .get("set-cookie")
            .expect("the form's cookie")
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
        Self {
            http,
            base: app.base_url.clone(),
            cookie,
            csrf,
        }
    }

    async fn attempt_with(
        &self,
        email: &str,
        password: &str,
        extra_headers: &[(&str, &str)],
    ) -> Attempt {
        let mut request = self
            .http
            .post(format!("{}/login", self.base))
            .header("cookie", &self.cookie)
            .form(&[
                ("email", email),
                ("password", password),
                ("csrf", &self.csrf),
            ]);
        for (name, value) in extra_headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        Attempt {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    async fn attempt(&self, email: &str, password: &str) -> Attempt {
        self.attempt_with(email, password, &[]).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bogus_logins_does_not_stall_the_api() {
    let app = TestApp::spawn().await;
    let mut flood = tokio::task::JoinSet::new();
    for n in 0..16 {
        let client = LoginClient::at(&app, &format!("127.0.0.{}", 10 + n)).await;
        flood.spawn(async move {
            let mut statuses = Vec::new();
            for attempt in 0..3 {
                let email = format!("nobody-{n}-{attempt}@example.com");
                statuses.push(client.attempt(&email, "not the password").await.status);
            }
            statuses
        });
    }
    // Meanwhile the API answers every request.
    for _ in 0..20 {
        let me = tokio::time::timeout(
            Duration::from_secs(60),
            app.get("/v1/admin/me", &app.owner_key).send(),
        )
        .await
        .expect("the API answers while logins are hashed")
        .unwrap();
        assert_eq!(me.status(), StatusCode::OK);
    }
    while let Some(statuses) = flood.join_next().await {
        for status in statuses.unwrap() {
            assert!(
                [
                    StatusCode::UNAUTHORIZED,
                    StatusCode::TOO_MANY_REQUESTS,
                    StatusCode::SERVICE_UNAVAILABLE
                ]
                .contains(&status),
                "a bogus login got {status}"
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn when_every_hashing_slot_is_busy_the_login_answers_503_and_asks_to_retry() {
    let app = TestApp::spawn_with(|config| config.password_hash_concurrency = 1).await;
    let client = LoginClient::at(&app, "127.0.0.1").await;
    // Hold the only slot, as a long hash would.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (started, has_started) = tokio::sync::oneshot::channel::<()>();
    let holder = tokio::spawn({
        let passwords = app.state.passwords().clone();
        async move {
            passwords
                .run(move || {
                    let _ = started.send(());
                    let _ = released.recv();
                })
                .await
        }
    });
    has_started.await.unwrap();

    let busy = client.attempt(&app.owner.email, &app.owner.password).await;
    assert_eq!(
        busy.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        busy.body
    );
    assert!(
        busy.body
            .contains("The server is busy; try again in a moment"),
        "{}",
        busy.body
    );
    assert!(busy.retry_after() >= 1);

    release.send(()).unwrap();
    holder.await.unwrap().unwrap();
    let ok = client.attempt(&app.owner.email, &app.owner.password).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    app.stop().await;
}

#[tokio::test]
async fn over_long_emails_and_passwords_are_refused_before_any_throttle() {
    let app = TestApp::spawn().await;
    let client = LoginClient::at(&app, "127.0.0.1").await;
    let long_email = format!("{}@example.com", "a".repeat(300));
    for _ in 0..25 {
        let refused = client.attempt(&long_email, "whatever").await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            refused.body.contains("at most 254 characters"),
            "{}",
            refused.body
        );
        assert!(!refused.body.contains(&long_email), "not echoed back");
    }
    let long_password = "p".repeat(2000);
    let refused = client.attempt(&app.owner.email, &long_password).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("at most 1024 characters"));

    // None of that counted as a failed login from this address.
    let ok = client.attempt(&app.owner.email, &app.owner.password).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    app.stop().await;
}
