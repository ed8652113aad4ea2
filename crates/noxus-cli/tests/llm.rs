//! `noxus serve --llm-base-url`: a `TextGenerationNode` calls the
//! operator's OpenAI-compatible endpoint (here a local stub) with the key
//! taken from the environment; the key never reaches the log, and an
//! unusable endpoint URL is refused before anything starts.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

const LLM_KEY: &str = "sk-stub-5f2c9a71e0d84b6c";

#[derive(Default)]
struct Seen {
    authorization: Vec<Option<String>>,
    bodies: Vec<Value>,
}

/// A chat-completions endpoint that answers `Model <model> says: <prompt>`
/// to the right key and 401 to any other.
async fn stub() -> (String, Arc<Mutex<Seen>>) {
    async fn completions(
        State(seen): State<Arc<Mutex<Seen>>>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        let authorization = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        {
            let mut seen = seen.lock().unwrap();
            seen.authorization.push(authorization.clone());
            seen.bodies.push(body.clone());
        }
        if authorization.as_deref() != Some(&format!("Bearer {LLM_KEY}")) {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": {"message": "Incorrect API key provided"}})),
            );
        }
        let prompt = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_owned();
        let text = format!(
            "Model {} says: {prompt}",
            body["model"].as_str().unwrap_or("?")
        );
        (
            StatusCode::OK,
            Json(json!({"choices": [{"message": {"role": "assistant", "content": text}}]})),
        )
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{address}/v1"), seen)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `noxus serve` on a fresh data directory with `extra` arguments and
/// environment; returns the process, the welcome key and the base URL.
fn serve(dir: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> (Child, String, String) {
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_noxus"));
    command
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .args(extra)
        .env_remove("NOXUS_NO_WELCOME")
        .env_remove("NOXUS_LLM_BASE_URL")
        .env_remove("NOXUS_LLM_API_KEY")
        .env_remove("NOXUS_LLM_API_KEY_ENV")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let mut key = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(k) = line.trim().strip_prefix("export NOXUS_API_KEY=") {
            key = Some(k.to_owned());
        }
        if line.contains("printed on the first start only") {
            break;
        }
    }
    let base = format!("http://127.0.0.1:{port}");
    (child, key.expect("the welcome prints a key"), base)
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not become ready");
}

fn stop(mut child: Child) -> String {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
}

/// Input (Question) → TextGenerationNode → Output; returns the run's output text.
async fn ask(http: &reqwest::Client, base: &str, key: &str, question: &str) -> Value {
    let edge = |from: &str, to: &str, connector: &str| {
        json!({"from_id": {"node_id": from, "connector_name": "output", "key": null, "optional": false},
               "to_id": {"node_id": to, "connector_name": connector, "key": null, "optional": false},
               "id": format!("{from}-{to}")})
    };
    let definition = json!({
        "flow_version": "v1",
        "nodes": [
            {"type": "InputNode", "id": "question", "node_config": {"label": "Question"}, "connector_config": {"inputs": [], "outputs": []}},
            {"type": "TextGenerationNode", "id": "llm", "node_config": {"model": "tiny-local-model", "system_prompt": "Answer briefly."}, "connector_config": {"inputs": [], "outputs": []}},
            {"type": "OutputNode", "id": "answer", "node_config": {"label": "Answer"}, "connector_config": {"inputs": [], "outputs": []}}
        ],
        "edges": [edge("question", "llm", "prompt"), edge("llm", "answer", "input")]
    });
    let saved: Value = http
        .post(format!("{base}/v1/workflows"))
        .header("X-API-Key", key)
        .json(&json!({"name": "ask", "type": "flow", "definition": definition}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let workflow = saved["id"].as_str().expect("a saved workflow").to_owned();
    let response = http
        .post(format!("{base}/v1/workflows/{workflow}/runs/sync"))
        .header("X-API-Key", key)
        .json(&json!({"input": {"Question": question}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_generation_calls_the_configured_endpoint_with_the_key_from_the_environment() {
    let (llm_url, seen) = stub().await;
    let dir = tempfile::tempdir().unwrap();
    let (child, key, base) = serve(
        dir.path(),
        &[
            "--llm-base-url",
            &llm_url,
            "--llm-api-key-env",
            "STUB_LLM_KEY",
        ],
        &[("STUB_LLM_KEY", LLM_KEY)],
    );
    let http = reqwest::Client::new();
    wait_ready(&http, &base).await;

    let run = ask(&http, &base, &key, "What is the capital of France?").await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(
        run["output"]["answer::output"]["text"],
        "Model tiny-local-model says: What is the capital of France?"
    );
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.authorization, vec![Some(format!("Bearer {LLM_KEY}"))]);
        let body = &seen.bodies[0];
        assert_eq!(body["model"], "tiny-local-model");
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][0]["content"], "Answer briefly.");
        assert_eq!(
            body["messages"][1]["content"],
            "What is the capital of France?"
        );
    }
    let log = stop(child);
    assert!(
        log.contains("text generation calls the model endpoint"),
        "{log}"
    );
    assert!(
        log.contains("STUB_LLM_KEY"),
        "the log names the variable: {log}"
    );
    assert!(!log.contains(LLM_KEY), "the key is not in the log: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_endpoint_key_fails_the_run_with_a_sentence_and_no_key() {
    let (llm_url, seen) = stub().await;
    let dir = tempfile::tempdir().unwrap();
    // The default variable, holding a key the endpoint does not accept.
    let wrong = "sk-wrong-7d1e4c2b9a";
    let (child, key, base) = serve(
        dir.path(),
        &["--llm-base-url", &llm_url],
        &[("NOXUS_LLM_API_KEY", wrong)],
    );
    let http = reqwest::Client::new();
    wait_ready(&http, &base).await;
    let run = ask(&http, &base, &key, "Hello?").await;
    assert_eq!(run["status"], "failed", "{run}");
    let detail = run.to_string();
    assert!(
        detail.contains("the model tiny-local-model failed: the model endpoint answered 401 Unauthorized: Incorrect API key provided"),
        "{detail}"
    );
    assert!(!detail.contains(wrong), "{detail}");
    assert_eq!(
        seen.lock().unwrap().authorization,
        vec![Some(format!("Bearer {wrong}"))]
    );
    let log = stop(child);
    assert!(!log.contains(wrong), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_text_generation_fails_the_run_naming_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let (child, key, base) = serve(dir.path(), &[], &[]);
    let http = reqwest::Client::new();
    wait_ready(&http, &base).await;
    let run = ask(&http, &base, &key, "Hello?").await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run.to_string().contains(
            "no model provider is configured for model tiny-local-model; start the server with --llm-base-url"
        ),
        "{run}"
    );
    stop(child);
}

#[test]
fn an_unusable_endpoint_url_is_refused_before_anything_starts() {
    for (url, why) in [
        (
            "ftp://models.internal/v1",
            "must start with http:// or https://",
        ),
        ("not a url", "is not a URL"),
        ("https://api.example.com/v1?key=x", "no query or fragment"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_noxus"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(["--llm-base-url", url])
            .env_remove("NOXUS_LLM_API_KEY")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains("--llm-base-url"), "{url}: {stderr}");
        assert!(stderr.contains(why), "{url}: {stderr}");
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "{url}: nothing was created in the data directory"
        );
    }
}
