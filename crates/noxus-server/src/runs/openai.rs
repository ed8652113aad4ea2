//! A [`ModelProvider`] for any OpenAI-compatible endpoint
//! (`POST {base_url}/chat/completions`): OpenAI itself, vLLM, Ollama,
//! LiteLLM... The key stays in a [`SecretString`]: it is sent in the
//! `Authorization` header and never appears in an error or in `Debug`.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use super::executor::ModelProvider;
use crate::domain::validation::clip;

/// Largest answer read from the endpoint.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// How long connecting may take, whatever the overall timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An OpenAI-compatible chat-completions endpoint.
#[derive(Clone)]
pub struct OpenAiCompatible {
    /// `{base_url}/chat/completions` is called; e.g. `https://api.openai.com/v1`.
    base_url: Url,
    /// Sent as `Authorization: Bearer …` when present.
    api_key: Option<SecretString>,
    http: reqwest::Client,
    timeout: Duration,
}

impl fmt::Debug for OpenAiCompatible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiCompatible")
            .field("base_url", &shown_url(&self.base_url))
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl OpenAiCompatible {
    /// A provider calling `base_url` (http or https), each call bounded by
    /// `timeout`. Fails with a sentence when the URL is unusable.
    pub fn new(
        base_url: &str,
        api_key: Option<SecretString>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let mut url = Url::parse(base_url.trim())
            .map_err(|e| format!("the model endpoint URL is not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "the model endpoint URL must start with http:// or https:// and name a host, not {}",
                clip(&shown_url(&url), 80)
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("the model endpoint URL must have no query or fragment".to_owned());
        }
        // `…/v1` and `…/v1/` both mean `…/v1/chat/completions`.
        let path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{path}/"));
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .timeout(timeout)
            // A redirect would carry the key elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot prepare the HTTP client for the model endpoint ({e})"))?;
        Ok(Self {
            base_url: url,
            api_key,
            http,
            timeout,
        })
    }

    /// The endpoint, without any user or password it carries.
    pub fn base_url(&self) -> String {
        shown_url(&self.base_url)
    }

    fn endpoint(&self) -> Result<Url, String> {
        self.base_url
            .join("chat/completions")
            .map_err(|e| format!("cannot build the model endpoint URL ({e})"))
    }

    /// `message` with the key (if it appears) replaced, and clipped.
    fn scrub(&self, message: &str) -> String {
        let message = match &self.api_key {
            Some(key) if !key.expose_secret().is_empty() => {
                message.replace(key.expose_secret(), "[redacted]")
            }
            _ => message.to_owned(),
        };
        clip(&message, 300)
    }

    fn transport_error(&self, error: &reqwest::Error) -> String {
        if error.is_timeout() {
            return format!(
                "the model endpoint {} did not answer within {} seconds",
                self.base_url(),
                self.timeout.as_secs_f64()
            );
        }
        // The chain of causes without the URL (which may hold a user name).
        let mut why = Vec::new();
        let mut cause: Option<&dyn std::error::Error> = Some(error);
        while let Some(c) = cause {
            let text = c.to_string();
            if !why.contains(&text) {
                why.push(text);
            }
            cause = c.source();
        }
        let why = why
            .join(": ")
            .replace(self.base_url.as_str(), &self.base_url());
        format!(
            "cannot reach the model endpoint {} ({})",
            self.base_url(),
            self.scrub(&why)
        )
    }
}

#[async_trait]
impl ModelProvider for OpenAiCompatible {
    async fn complete(
        &self,
        model: &str,
        system_prompt: Option<&str>,
        prompt: &str,
        temperature: f64,
        max_tokens: u32,
    ) -> Result<String, String> {
        let mut messages = Vec::new();
        if let Some(system) = system_prompt.filter(|s| !s.is_empty()) {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": prompt}));
        let body = json!({
            "model": model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
        });
        let mut request = self.http.post(self.endpoint()?).json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose_secret());
        }
        let mut response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let mut answer = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(&e))?
        {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(format!(
                    "the model endpoint's answer is larger than {} MiB",
                    MAX_ANSWER_BYTES / (1024 * 1024)
                ));
            }
            answer.extend_from_slice(&chunk);
        }
        let parsed: Option<Value> = serde_json::from_slice(&answer).ok();
        if !status.is_success() {
            return Err(self.status_error(status, parsed.as_ref(), &answer));
        }
        parsed
            .as_ref()
            .and_then(|v| v.pointer("/choices/0/message/content"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                "the model endpoint's answer has no text (choices[0].message.content)".to_owned()
            })
    }
}

impl OpenAiCompatible {
    fn status_error(&self, status: StatusCode, parsed: Option<&Value>, raw: &[u8]) -> String {
        let message = parsed
            .and_then(|v| {
                v.pointer("/error/message")
                    .or_else(|| v.get("error"))
                    .or_else(|| v.get("detail"))
            })
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&raw[..raw.len().min(1024)]).into_owned());
        let message = message.trim();
        let reason = status.canonical_reason().unwrap_or("");
        if message.is_empty() {
            format!("the model endpoint answered {} {reason}", status.as_u16())
        } else {
            format!(
                "the model endpoint answered {} {reason}: {}",
                status.as_u16(),
                self.scrub(message)
            )
        }
    }
}

/// `url` without user name and password.
fn shown_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::HeaderMap;
    use axum::routing::post;
    use axum::{Json, Router};

    pub(crate) const KEY: &str = "sk-test-0123456789abcdef";

    #[derive(Default)]
    pub(crate) struct Seen {
        bodies: Vec<Value>,
        authorization: Vec<Option<String>>,
    }

    /// A local chat-completions stub: answers `Echo: <last message>`,
    /// 401 (echoing the key, as some servers do) without the right key,
    /// and 500 when the prompt is `fail`.
    pub(crate) async fn stub(seen: Arc<Mutex<Seen>>) -> String {
        async fn completions(
            State(seen): State<Arc<Mutex<Seen>>>,
            headers: HeaderMap,
            Json(body): Json<Value>,
        ) -> (axum::http::StatusCode, Json<Value>) {
            let authorization = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            {
                let mut seen = seen.lock().expect("lock");
                seen.bodies.push(body.clone());
                seen.authorization.push(authorization.clone());
            }
            if authorization.as_deref() != Some(&format!("Bearer {KEY}")) {
                return (
                    axum::http::StatusCode::UNAUTHORIZED,
                    Json(
                        json!({"error": {"message": format!("Incorrect API key provided: {}", authorization.unwrap_or_default())}}),
                    ),
                );
            }
            let prompt = body["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_str())
                .unwrap_or_default()
                .to_owned();
            if prompt == "fail" {
                return (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"error": {"message": "the model is overloaded"}})),
                );
            }
            if prompt == "slow" {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            (
                axum::http::StatusCode::OK,
                Json(
                    json!({"choices": [{"message": {"role": "assistant", "content": format!("Echo: {prompt}")}}]}),
                ),
            )
        }
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(seen);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{address}/v1")
    }

    fn provider(base_url: &str, key: &str) -> OpenAiCompatible {
        OpenAiCompatible::new(
            base_url,
            Some(SecretString::from(key.to_owned())),
            Duration::from_secs(2),
        )
        .expect("valid URL")
    }

    #[tokio::test]
    async fn a_completion_posts_the_chat_request_and_returns_the_text() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let base = stub(seen.clone()).await;
        let answer = provider(&base, KEY)
            .complete("gpt-4o-mini", Some("Be brief."), "Hello", 0.2, 64)
            .await
            .expect("answer");
        assert_eq!(answer, "Echo: Hello");
        let seen = seen.lock().expect("lock");
        assert_eq!(
            seen.authorization[0].as_deref(),
            Some(&*format!("Bearer {KEY}"))
        );
        assert_eq!(
            seen.bodies[0],
            json!({"model": "gpt-4o-mini", "temperature": 0.2, "max_tokens": 64,
                   "messages": [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Hello"}]})
        );
    }

    #[tokio::test]
    async fn a_trailing_slash_in_the_base_url_changes_nothing() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let base = stub(seen).await;
        let answer = provider(&format!("{base}/"), KEY)
            .complete("m", None, "Hi", 0.0, 1)
            .await
            .expect("answer");
        assert_eq!(answer, "Echo: Hi");
    }

    #[tokio::test]
    async fn a_refused_key_is_reported_without_the_key() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let base = stub(seen).await;
        let wrong = "sk-wrong-key-that-must-not-leak";
        let provider = provider(&base, wrong);
        let error = provider
            .complete("m", None, "Hi", 0.0, 1)
            .await
            .expect_err("401");
        assert!(error.contains("401 Unauthorized"), "{error}");
        assert!(error.contains("Incorrect API key"), "{error}");
        assert!(!error.contains(wrong), "{error}");
        assert!(!format!("{provider:?}").contains(wrong));
    }

    #[tokio::test]
    async fn a_server_error_is_a_sentence_with_its_message() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let base = stub(seen).await;
        let error = provider(&base, KEY)
            .complete("m", None, "fail", 0.0, 1)
            .await
            .expect_err("500");
        assert_eq!(
            error,
            "the model endpoint answered 500 Internal Server Error: the model is overloaded"
        );
    }

    #[tokio::test]
    async fn a_slow_endpoint_times_out_with_a_sentence() {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let base = stub(seen).await;
        let provider =
            OpenAiCompatible::new(&base, None, Duration::from_millis(300)).expect("valid URL");
        // Without a key the stub answers 401 at once, so send the key.
        let provider = OpenAiCompatible {
            api_key: Some(SecretString::from(KEY.to_owned())),
            ..provider
        };
        let error = provider
            .complete("m", None, "slow", 0.0, 1)
            .await
            .expect_err("timeout");
        assert!(
            error.contains("did not answer within 0.3 seconds"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_reported_without_credentials() {
        // Bind then drop a listener: the port is (almost surely) closed.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        let provider = provider(&format!("http://user:hunter2@127.0.0.1:{port}/v1"), KEY);
        let error = provider
            .complete("m", None, "Hi", 0.0, 1)
            .await
            .expect_err("unreachable");
        assert!(
            error.starts_with("cannot reach the model endpoint http://127.0.0.1:"),
            "{error}"
        );
        assert!(
            !error.contains("hunter2") && !error.contains(KEY),
            "{error}"
        );
        assert!(!format!("{provider:?}").contains("hunter2"));
    }

    #[test]
    fn unusable_urls_are_refused_with_a_sentence() {
        for (url, expected) in [
            ("not a url", "is not a URL"),
            (
                "ftp://example.com/v1",
                "must start with http:// or https://",
            ),
            ("http://example.com/v1?x=1", "no query or fragment"),
        ] {
            let error = OpenAiCompatible::new(url, None, Duration::from_secs(1)).expect_err(url);
            assert!(error.contains(expected), "{url}: {error}");
        }
    }
}
