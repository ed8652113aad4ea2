//! Small assertions shared by the tests.

use std::collections::HashMap;

use noxus_testkit::{TestApp, TestUser};
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use serde_json::Value;

/// Reads an error response and checks its shape: JSON with `detail`,
/// `code`, `request_id` equal to the `x-request-id` header. Returns the body.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let header = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("every response has x-request-id");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type}"
    );
    let body: Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["code"], code, "code in {body}");
    assert_eq!(
        body["request_id"],
        header.as_str(),
        "request_id matches the header"
    );
    let detail = body["detail"].as_str().expect("detail is a string");
    assert!(detail.len() > 10, "detail is a sentence: {detail}");
    body
}

/// Reads a 2xx JSON body.
pub async fn json_ok(response: reqwest::Response) -> Value {
    let status = response.status();
    let text = response.text().await.expect("body");
    assert!(
        status.is_success(),
        "expected success, got {status}: {text}"
    );
    serde_json::from_str(&text).expect("a JSON body")
}

/// The minimal workflow the official client's builder makes: input → output.
pub fn input_output_definition() -> Value {
    let input = uuid::Uuid::new_v4().to_string();
    let output = uuid::Uuid::new_v4().to_string();
    serde_json::json!({
        "flow_version": "v1",
        "nodes": [
            {"type": "InputNode", "id": input, "name": "Input", "display": {"position": {"x": 350, "y": 0}},
             "node_config": {"label": "Input 1"}, "connector_config": {"inputs": [], "outputs": []}},
            {"type": "OutputNode", "id": output, "name": "Output", "display": {"position": {"x": 700, "y": 0}},
             "node_config": {"label": "Output 1"}, "connector_config": {"inputs": [], "outputs": []}}
        ],
        "edges": [
            {"from_id": {"node_id": input, "connector_name": "output", "key": null, "optional": false},
             "to_id": {"node_id": output, "connector_name": "input", "key": null, "optional": false},
             "id": uuid::Uuid::new_v4().to_string()}
        ]
    })
}

/// A minimal browser: keeps cookies, does not follow redirects.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    /// The cookies kept so far.
    pub cookies: HashMap<String, String>,
}

pub struct Page {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn field(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker)? + marker.len();
        let end = self.body[start..].find('"')? + start;
        Some(self.body[start..end].to_owned())
    }

    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Page {
    /// The redirect's path without its query (`/login?next=…` → `/login`).
    pub fn location_path(&self) -> &str {
        let location = self.location();
        location.split('?').next().unwrap_or(location)
    }
}

impl Browser {
    pub fn new(app: &TestApp) -> Self {
        Self::at(&app.base_url)
    }

    /// A browser for the server at `base`.
    pub fn at(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap();
        Self {
            http,
            base: base.to_owned(),
            cookies: HashMap::new(),
        }
    }

    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn keep(&mut self, response: reqwest::Response) -> Page {
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let status = response.status();
        let headers = response.headers().clone();
        Page {
            status,
            headers,
            body: response.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(response).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.keep(response).await
    }

    pub async fn login(&mut self, user: &TestUser) -> Page {
        let page = self.get("/login").await;
        let csrf = page.field("csrf").unwrap();
        self.post(
            "/login",
            &[
                ("email", &user.email),
                ("password", &user.password),
                ("csrf", &csrf),
            ],
        )
        .await
    }

    /// The session's CSRF token, from any page's logout form.
    pub async fn csrf(&mut self) -> String {
        self.get("/settings/organization/workspaces")
            .await
            .field("csrf")
            .unwrap()
    }

    /// The stored digest of this browser's session token.
    pub fn session_digest(&self) -> String {
        use sha2::Digest;
        let token = self.cookies.get("noxus_session").expect("logged in");
        hex::encode(sha2::Sha256::digest(token.as_bytes()))
    }

    /// Makes the session's last password entry 11 minutes old: sensitive
    /// actions ask for the password again.
    pub async fn end_sudo(&self, app: &TestApp) {
        let long_ago = time::OffsetDateTime::now_utc() - time::Duration::minutes(11);
        app.state
            .store()
            .set_session_reauth(&self.session_digest(), long_ago)
            .await
            .unwrap();
    }

    /// Confirms the password on the sudo page; returns where it sends us.
    pub async fn sudo(&mut self, password: &str, next: &str) -> Page {
        let csrf = self.csrf().await;
        self.post(
            "/sudo",
            &[("password", password), ("next", next), ("csrf", &csrf)],
        )
        .await
    }
}

/// A run held `running` by a claimer that is not the app's worker (so it
/// stays open as long as the test wants): created through the store and
/// claimed before the app's worker looks (tried again in the rare case the
/// worker was first).
pub async fn held_run(
    app: &TestApp,
    user: &noxus_testkit::TestUser,
    workflow: &str,
    definition: &Value,
    callback_url: Option<String>,
) -> String {
    use noxus_server::store::{Actor, NewRun, RunQuotas};
    let now = time::OffsetDateTime::now_utc();
    for attempt in 0..20u64 {
        // After a lost race the app's worker runs that run and, a freed
        // slot waking it, claims again at once: give it time to finish and
        // go idle, so that the next creation and claim come between its polls.
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20 + 10 * attempt)).await;
        }
        let run = app
            .state
            .store()
            .create_run(
                &Actor::system(),
                &NewRun {
                    workspace_id: user.workspace_id.as_str().into(),
                    workflow_id: workflow.into(),
                    workflow_version_id: None,
                    definition: definition.clone(),
                    input: serde_json::json!({}),
                    group_id: None,
                    callback_url: callback_url.clone(),
                    started_by_user: user.id.as_str().into(),
                    started_by_key: None,
                },
                &RunQuotas::default(),
            )
            .await
            .unwrap();
        let claimed = app
            .state
            .store()
            .claim_runs("the-test", 100, now, now + time::Duration::minutes(10))
            .await
            .unwrap();
        if claimed.iter().any(|r| r.id == run.id) {
            return run.id.to_string();
        }
    }
    panic!("the app's worker claimed every run first");
}
