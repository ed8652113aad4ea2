//! Small assertions shared by the tests.

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
