//! The dashboard login under attack: password hashing cannot stall the API,
//! over-long input is refused before it costs anything, and failed logins
//! slow down the attacker without locking out the account's owner.
//! Clients bind to several loopback addresses (Linux accepts all of
//! 127.0.0.0/8) to log in "from" different machines.

use std::net::IpAddr;
use std::time::Duration;

use noxus_api::Role;
use noxus_testkit::noxus_server::client_addr::parse_trusted_proxy;
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
        Self::at_with(app, from, &[]).await
    }

    /// Gets the login form with extra headers (a proxy's, say).
    async fn at_with(app: &TestApp, from: &str, headers: &[(&str, &str)]) -> Self {
        let http = reqwest::Client::builder()
            .redirect(Policy::none())
            .local_address(address(from))
            .build()
            .unwrap();
        let mut request = http.get(app.url("/login"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let page = request.send().await.unwrap();
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

fn statuses_are_401_or_429(attempts: &[Attempt]) {
    for attempt in attempts {
        assert!(
            [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&attempt.status),
            "{}: {}",
            attempt.status,
            attempt.body
        );
    }
}

#[tokio::test]
async fn wrong_passwords_from_one_address_do_not_lock_the_owner_out_from_another() {
    let app = TestApp::spawn().await;
    let member = app.user_with_role(Role::Member).await;
    let attacker = LoginClient::at(&app, "127.0.0.2").await;
    let mut attempts = Vec::new();
    for _ in 0..20 {
        attempts.push(attacker.attempt(&member.email, "guess").await);
    }
    statuses_are_401_or_429(&attempts);
    assert!(
        attempts[..6]
            .iter()
            .all(|a| a.status == StatusCode::UNAUTHORIZED),
        "five failures are free, and the sixth is tried"
    );

    let owner_of_account = LoginClient::at(&app, "127.0.0.3").await;
    let ok = owner_of_account
        .attempt(&member.email, &member.password)
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    // Another account, another address: untouched.
    let someone = LoginClient::at(&app, "127.0.0.4").await;
    let ok = someone.attempt(&app.owner.email, &app.owner.password).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    app.stop().await;
}

#[tokio::test]
async fn an_address_that_logged_in_before_gets_through_while_the_account_is_under_attack() {
    let app = TestApp::spawn_with(|config| {
        config.login_throttle.free_per_account = 5;
        config.login_throttle.first_delay = Duration::from_secs(60);
    })
    .await;
    let member = app.user_with_role(Role::Member).await;
    let home = LoginClient::at(&app, "127.0.0.5").await;
    let ok = home.attempt(&member.email, &member.password).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);

    // Attackers at two addresses, three guesses each: six failures on the account.
    for from in ["127.0.0.6", "127.0.0.7"] {
        let attacker = LoginClient::at(&app, from).await;
        for _ in 0..3 {
            let failed = attacker.attempt(&member.email, "guess").await;
            assert_eq!(failed.status, StatusCode::UNAUTHORIZED);
        }
    }
    // A new address must wait, even with the right password...
    let stranger = LoginClient::at(&app, "127.0.0.8").await;
    let held = stranger.attempt(&member.email, &member.password).await;
    assert_eq!(held.status, StatusCode::TOO_MANY_REQUESTS, "{}", held.body);
    // ...the address that logged in before does not, even after its own
    // five wrong tries.
    for _ in 0..5 {
        let typo = home.attempt(&member.email, "typo").await;
        assert_eq!(typo.status, StatusCode::UNAUTHORIZED, "{}", typo.body);
    }
    let ok = home.attempt(&member.email, &member.password).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    app.stop().await;
}

#[tokio::test]
async fn an_address_spraying_many_accounts_is_slowed_without_touching_other_addresses() {
    let app = TestApp::spawn_with(|config| {
        config.login_throttle.first_delay = Duration::from_secs(60);
    })
    .await;
    let sprayer = LoginClient::at(&app, "127.0.0.9").await;
    let mut attempts = Vec::new();
    for n in 0..22 {
        attempts.push(
            sprayer
                .attempt(&format!("user-{n}@example.com"), "Summer2024!")
                .await,
        );
    }
    assert!(attempts[..21]
        .iter()
        .all(|a| a.status == StatusCode::UNAUTHORIZED));
    assert_eq!(attempts[21].status, StatusCode::TOO_MANY_REQUESTS);
    // Even the right password waits at that address...
    let held = sprayer.attempt(&app.owner.email, &app.owner.password).await;
    assert_eq!(held.status, StatusCode::TOO_MANY_REQUESTS);
    // ...and nowhere else.
    let elsewhere = LoginClient::at(&app, "127.0.0.10").await;
    let ok = elsewhere
        .attempt(&app.owner.email, &app.owner.password)
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    app.stop().await;
}

#[tokio::test]
async fn the_wait_grows_with_each_failure_and_is_said_in_seconds() {
    let app = TestApp::spawn_with(|config| {
        config.login_throttle.free_per_account_and_address = 1;
        config.login_throttle.first_delay = Duration::from_secs(5);
    })
    .await;
    let member = app.user_with_role(Role::Member).await;
    let client = LoginClient::at(&app, "127.0.0.11").await;
    for _ in 0..2 {
        let failed = client.attempt(&member.email, "guess").await;
        assert_eq!(failed.status, StatusCode::UNAUTHORIZED);
    }
    let first = client.attempt(&member.email, "guess").await;
    assert_eq!(first.status, StatusCode::TOO_MANY_REQUESTS);
    let first_wait = first.retry_after();
    assert!((1..=5).contains(&first_wait), "{first_wait}");
    assert!(
        first.body.contains(&format!(
            "try again in {first_wait} second{}",
            if first_wait == 1 { "" } else { "s" }
        )),
        "{}",
        first.body
    );

    // Once the wait is over the next guess is tried (and fails)...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = client.attempt(&member.email, "guess").await;
        if attempt.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(attempt.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(tokio::time::Instant::now() < deadline, "the wait ended");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // ...and the wait after it is twice as long.
    let second = client.attempt(&member.email, "guess").await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    let second_wait = second.retry_after();
    assert!(
        second_wait > 5 && second_wait <= 10,
        "the second wait ({second_wait} s) is longer than the first delay"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_long_wait_is_said_in_minutes() {
    let app = TestApp::spawn_with(|config| {
        config.login_throttle.free_per_account_and_address = 1;
        config.login_throttle.first_delay = Duration::from_secs(90);
    })
    .await;
    let client = LoginClient::at(&app, "127.0.0.12").await;
    for _ in 0..2 {
        let failed = client.attempt(&app.owner.email, "guess").await;
        assert_eq!(failed.status, StatusCode::UNAUTHORIZED);
    }
    let held = client.attempt(&app.owner.email, "guess").await;
    assert_eq!(held.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        held.body.contains("try again in 2 minutes"),
        "{}",
        held.body
    );
    let wait = held.retry_after();
    assert!(wait > 60 && wait <= 90, "{wait}");
    app.stop().await;
}

#[tokio::test]
async fn x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let app = TestApp::spawn_with(|config| {
        config.login_throttle.first_delay = Duration::from_secs(60);
    })
    .await;
    let member = app.user_with_role(Role::Member).await;
    let client = LoginClient::at(&app, "127.0.0.1").await;
    let mut attempts = Vec::new();
    for n in 0..7 {
        let forged = format!("198.51.100.{n}");
        attempts.push(
            client
                .attempt_with(&member.email, "guess", &[("x-forwarded-for", &forged)])
                .await,
        );
    }
    assert!(attempts[..6]
        .iter()
        .all(|a| a.status == StatusCode::UNAUTHORIZED));
    assert_eq!(
        attempts[6].status,
        StatusCode::TOO_MANY_REQUESTS,
        "every attempt counted against 127.0.0.1, whatever the header said"
    );
    app.stop().await;
}

#[tokio::test]
async fn x_forwarded_for_from_a_trusted_proxy_is_the_client() {
    let app = TestApp::spawn_with(|config| {
        config.trusted_proxies = vec![parse_trusted_proxy("127.0.0.0/8").unwrap()];
        config.login_throttle.first_delay = Duration::from_secs(60);
    })
    .await;
    let member = app.user_with_role(Role::Member).await;
    // One proxy, many clients behind it.
    let proxy = LoginClient::at(&app, "127.0.0.1").await;
    let attacker = [("x-forwarded-for", "198.51.100.1")];
    for _ in 0..6 {
        let failed = proxy.attempt_with(&member.email, "guess", &attacker).await;
        assert_eq!(failed.status, StatusCode::UNAUTHORIZED);
    }
    let held = proxy.attempt_with(&member.email, "guess", &attacker).await;
    assert_eq!(held.status, StatusCode::TOO_MANY_REQUESTS);
    // The real user behind the same proxy (a client-forged entry on the
    // left is not believed: the right-most untrusted entry is the client).
    let user = [("x-forwarded-for", "198.51.100.1, 198.51.100.2")];
    let ok = proxy
        .attempt_with(&member.email, &member.password, &user)
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    app.stop().await;
}

#[tokio::test]
async fn x_forwarded_proto_counts_only_from_a_trusted_proxy() {
    for (trusted, secure) in [(false, false), (true, true)] {
        let app = TestApp::spawn_with(|config| {
            if trusted {
                config.trusted_proxies = vec![parse_trusted_proxy("127.0.0.1").unwrap()];
            }
        })
        .await;
        let https = [("x-forwarded-proto", "https")];
        let client = LoginClient::at_with(&app, "127.0.0.1", &https).await;
        let ok = client
            .attempt_with(&app.owner.email, &app.owner.password, &https)
            .await;
        assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
        let cookie = ok.headers.get("set-cookie").unwrap().to_str().unwrap();
        assert_eq!(
            cookie.contains("; Secure"),
            secure,
            "trusted={trusted}: {cookie}"
        );
        assert_eq!(
            cookie.starts_with("__Host-noxus_session="),
            secure,
            "the __Host- prefix over HTTPS: {cookie}"
        );
        app.stop().await;
    }
}

/// Sends bad keys with `forwarded` as X-Forwarded-For until the API
/// throttles them; returns how many were answered before the 429.
async fn bad_keys_until_throttled(app: &TestApp, forwarded: &str) -> usize {
    for n in 0..100 {
        let response = app
            .http
            .get(app.url("/v1/admin/me"))
            .header("X-API-Key", "noxus_notakey")
            .header("x-forwarded-for", forwarded)
            .send()
            .await
            .unwrap();
        match response.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => return n,
            other => panic!("unexpected {other}"),
        }
    }
    panic!("never throttled");
}

#[tokio::test]
async fn api_authentication_failures_are_counted_per_client_behind_a_trusted_proxy() {
    // Trusted: each forwarded client has its own allowance.
    let app = TestApp::spawn_with(|config| {
        config.trusted_proxies = vec![parse_trusted_proxy("127.0.0.1").unwrap()];
    })
    .await;
    assert!(bad_keys_until_throttled(&app, "198.51.100.7").await >= 30);
    let other = app
        .http
        .get(app.url("/v1/admin/me"))
        .header("X-API-Key", "noxus_notakey")
        .header("x-forwarded-for", "198.51.100.8")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED, "another client");
    app.stop().await;

    // Untrusted: the header changes nothing, the peer is throttled.
    let app = TestApp::spawn().await;
    assert!(bad_keys_until_throttled(&app, "198.51.100.7").await >= 30);
    let other = app
        .http
        .get(app.url("/v1/admin/me"))
        .header("X-API-Key", "noxus_notakey")
        .header("x-forwarded-for", "198.51.100.8")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::TOO_MANY_REQUESTS);
    app.stop().await;
}
