//! The log of a real `noxus serve`: with `--log-format json` every line on
//! standard error is one JSON object; each request has one access line
//! (request id, method, route template, status, latency, key id, and the
//! trace id of a valid `traceparent`); no line ever holds a key or its
//! secret part, whether it came in a header, the path or the query.

#![allow(clippy::unwrap_used)]

mod serve_process;

use std::collections::HashMap;

use serde_json::Value;

const TRACE_ID: &str = "5c3b6f0e9d1a4b7c8e2f0a1b2c3d4e5f";
const PARENT_ID: &str = "1a2b3c4d5e6f7081";

/// One request, with what its access line must say.
struct Sent {
    what: &'static str,
    request_id: String,
    status: u16,
    route: Option<&'static str>,
    key_id: Option<String>,
    trace_id: Option<&'static str>,
}

fn get(runtime: &tokio::runtime::Runtime, url: String, headers: &[(&str, &str)]) -> (u16, String) {
    runtime.block_on(async {
        let mut request = reqwest::Client::new().get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let request_id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        (response.status().as_u16(), request_id)
    })
}

fn json_output(command: &mut std::process::Command) -> Value {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The key's secret part (after `noxus_`) and every 8 characters of what
/// its display fragment (first 10, last 4) does not show.
fn secret_pieces(key: &str) -> Vec<String> {
    let hidden = &key[10..key.len() - 4];
    let mut pieces = vec![key.to_owned(), key[6..].to_owned()];
    for start in 0..=hidden.len() - 8 {
        pieces.push(hidden[start..start + 8].to_owned());
    }
    pieces
}

#[test]
fn json_logs_have_one_access_line_per_request_and_never_a_key() {
    let served = serve_process::start(&["--log-format", "json"], &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let key = served.key.clone();
    let base = served.base.clone();

    let me = json_output(served.cli(&key).args(["auth", "status", "--json"]));
    let key_id = me["key_id"].as_str().unwrap().to_owned();
    let created = json_output(
        served
            .cli(&key)
            .args(["keys", "create", "soon-revoked", "--json"]),
    );
    let revoked_key = created["value"].as_str().unwrap().to_owned();
    let revoked_id = created["id"].as_str().unwrap().to_owned();
    let revoke = served
        .cli(&key)
        .args(["keys", "revoke", &revoked_id, "--yes"])
        .output()
        .unwrap();
    assert!(revoke.status.success());
    // Well-formed, but its checksum is wrong.
    let last = if key.ends_with('A') { "B" } else { "A" };
    let bad_key = format!("{}{last}", &key[..key.len() - 1]);

    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let mut sent = Vec::new();
    let mut send = |what: &'static str,
                    path: String,
                    headers: &[(&str, &str)],
                    status: u16,
                    route: Option<&'static str>,
                    key_id: Option<&str>,
                    trace_id: Option<&'static str>| {
        let (got, request_id) = get(&runtime, format!("{base}{path}"), headers);
        assert_eq!(got, status, "{what}");
        sent.push(Sent {
            what,
            request_id,
            status,
            route,
            key_id: key_id.map(str::to_owned),
            trace_id,
        });
    };
    send(
        "a valid key in X-API-Key, with a traceparent",
        "/v1/models/llms".into(),
        &[("X-API-Key", &key), ("traceparent", &traceparent)],
        200,
        Some("/v1/models/llms"),
        Some(&key_id),
        Some(TRACE_ID),
    );
    send(
        "a valid key as a bearer token, with an invalid traceparent",
        "/v1/models/llms".into(),
        &[
            ("Authorization", &format!("Bearer {key}")),
            ("traceparent", &traceparent.to_uppercase()),
        ],
        200,
        Some("/v1/models/llms"),
        Some(&key_id),
        None,
    );
    send(
        "a key in the path of a route",
        format!("/v1/workflows/{key}"),
        &[("X-API-Key", &key)],
        404,
        Some("/v1/workflows/{id}"),
        Some(&key_id),
        None,
    );
    send(
        "a key in the path of no route",
        format!("/v1/{key}"),
        &[],
        404,
        None,
        None,
        None,
    );
    send(
        "a key in the query",
        format!("/v1/models/llms?api_key={key}"),
        &[],
        401,
        Some("/v1/models/llms"),
        None,
        None,
    );
    send(
        "a revoked key",
        "/v1/models/llms".into(),
        &[("X-API-Key", &revoked_key)],
        401,
        Some("/v1/models/llms"),
        Some(&revoked_id),
        None,
    );
    send(
        "a key with a bad checksum",
        "/v1/models/llms".into(),
        &[("X-API-Key", &bad_key), ("traceparent", &traceparent)],
        401,
        Some("/v1/models/llms"),
        None,
        Some(TRACE_ID),
    );

    let (status, lines) = served.stop();
    assert!(status.success(), "{status}");

    let mut access: HashMap<String, Vec<Value>> = HashMap::new();
    let mut messages = Vec::new();
    for line in &lines {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for field in ["time", "level", "target", "message"] {
            assert!(value[field].is_string(), "no {field}: {line}");
        }
        let time = value["time"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
                .is_ok(),
            "{line}"
        );
        messages.push(value["message"].as_str().unwrap().to_owned());
        if value["target"] == "noxus::access" {
            assert_eq!(value["level"], "INFO", "{line}");
            let id = value["request_id"].as_str().unwrap().to_owned();
            access.entry(id).or_default().push(value);
        }
    }
    assert!(messages.iter().any(|m| m == "listening"), "{lines:#?}");

    for request in &sent {
        let found = access
            .get(&request.request_id)
            .unwrap_or_else(|| panic!("{}: no access line in {lines:#?}", request.what));
        assert_eq!(found.len(), 1, "{}: {found:?}", request.what);
        let line = &found[0];
        let what = request.what;
        assert_eq!(line["method"], "GET", "{what}: {line}");
        assert_eq!(line["status"], request.status, "{what}: {line}");
        assert!(line["latency_us"].is_u64(), "{what}: {line}");
        assert_eq!(line["route"].as_str(), request.route, "{what}: {line}");
        assert_eq!(
            line["key_id"].as_str(),
            request.key_id.as_deref(),
            "{what}: {line}"
        );
        assert_eq!(
            line["trace_id"].as_str(),
            request.trace_id,
            "{what}: {line}"
        );
        if request.trace_id.is_some() {
            assert_eq!(line["parent_span_id"], PARENT_ID, "{what}: {line}");
            assert_eq!(line["trace_sampled"], true, "{what}: {line}");
        }
    }
    // The CLI's requests and the readiness checks have theirs too.
    assert!(access.len() > sent.len(), "{access:?}");

    for secret in [&key, &revoked_key, &bad_key] {
        for piece in secret_pieces(secret) {
            for line in &lines {
                assert!(!line.contains(&piece), "a key's secret part in: {line}");
            }
        }
    }
}

#[test]
fn text_logs_carry_the_access_line_unless_it_is_turned_off() {
    for (access_log, expected) in [("on", true), ("off", false)] {
        let served = serve_process::start(&[], &[("NOXUS_ACCESS_LOG", access_log)]);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (status, request_id) = get(
            &runtime,
            format!("{}/v1/models/llms", served.base),
            &[("X-API-Key", &served.key)],
        );
        assert_eq!(status, 200);
        let (exit, lines) = served.stop();
        assert!(exit.success());
        let access: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("noxus::access"))
            .collect();
        let ours: Vec<&&String> = access
            .iter()
            .filter(|l| {
                l.contains(&format!("request_id=\"{request_id}\""))
                    || l.contains(&format!("request_id={request_id}"))
            })
            .collect();
        if expected {
            assert_eq!(ours.len(), 1, "{lines:#?}");
            assert!(
                ours[0].contains("route=\"/v1/models/llms\"")
                    || ours[0].contains("route=/v1/models/llms"),
                "{}",
                ours[0]
            );
            assert!(ours[0].contains("status=200"), "{}", ours[0]);
            assert!(!lines.iter().any(|l| l.starts_with('{')), "text, not JSON");
        } else {
            assert!(access.is_empty(), "{access:#?}");
        }
    }
}
