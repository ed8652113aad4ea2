//! Prometheus metrics on their own listener: exact counts after known
//! traffic, no key (or anything else a client chose) in any label, and a
//! Grafana dashboard that only uses metrics a real scrape has.

use std::collections::{BTreeMap, BTreeSet};

use noxus_api::Role;
use noxus_testkit::TestApp;

use crate::helpers::{assert_error, json_ok};

async fn spawn_with_metrics() -> TestApp {
    TestApp::spawn_with(|config| {
        config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

/// A scrape: the text, and each sample (`name{labels}`) with its value.
struct Scrape {
    text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    fn value(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    /// Sample names (without labels).
    fn names(&self) -> BTreeSet<&str> {
        self.samples
            .keys()
            .map(|k| k.split('{').next().unwrap_or(k))
            .collect()
    }

    /// Every label value of every sample.
    fn label_values(&self) -> Vec<(String, String)> {
        let mut values = Vec::new();
        for series in self.samples.keys() {
            let Some((_, labels)) = series.split_once('{') else {
                continue;
            };
            let labels = labels.trim_end_matches('}');
            for pair in labels.split("\",") {
                if let Some((name, value)) = pair.split_once("=\"") {
                    values.push((name.to_owned(), value.trim_end_matches('"').to_owned()));
                }
            }
        }
        values
    }
}

async fn scrape(app: &TestApp) -> Scrape {
    let url = app.metrics_url.as_deref().expect("metrics listener");
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "a complete exposition");
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        samples.insert(series.to_owned(), value.parse::<f64>().expect(line));
    }
    Scrape { text, samples }
}

fn keys_path(app: &TestApp) -> String {
    format!("/v1/admin/groups/{}/api-keys", app.workspace_id)
}

#[tokio::test]
async fn a_scrape_after_known_traffic_counts_it_exactly() {
    let app = spawn_with_metrics().await;
    let member = app.user_with_role(Role::Member).await;
    let viewer = app.user_with_role(Role::Viewer).await;
    json_ok(
        app.delete(
            &format!("{}/{}", keys_path(&app), member.key_id),
            &app.owner_key,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;

    for _ in 0..3 {
        let response = app
            .get("/v1/models/llms", &member.key)
            .send()
            .await
            .unwrap();
        assert_error(response, 401, "revoked_api_key").await;
    }
    for _ in 0..2 {
        json_ok(
            app.get("/v1/models/llms", &app.owner_key)
                .send()
                .await
                .unwrap(),
        )
        .await;
    }
    let response = app
        .http
        .get(app.url("/v1/models/llms"))
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "missing_api_key").await;
    let response = app
        .get("/v1/models/llms", "noxus_not-a-key")
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "invalid_api_key").await;
    let response = app
        .post("/v1/workflows", &viewer.key)
        .json(&serde_json::json!({"name": "w", "definition": crate::helpers::input_output_definition()}))
        .send()
        .await
        .unwrap();
    assert_error(response, 403, "insufficient_permissions").await;
    let response = app
        .get("/no/such/route", &app.owner_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    let scrape = scrape(&app).await;
    let auth = |code: &str| scrape.value(&format!("noxus_auth_outcomes_total{{code=\"{code}\"}}"));
    assert_eq!(auth("revoked"), 3.0, "{}", scrape.text);
    assert_eq!(auth("missing"), 1.0);
    assert_eq!(auth("invalid"), 1.0);
    assert_eq!(auth("insufficient_permissions"), 1.0);
    // The owner's 2, the owner's revocation, the viewer's refused POST
    // (a verified key), the owner's request to a route that does not exist
    // is never authenticated.
    assert_eq!(auth("ok"), 4.0);
    assert_eq!(auth("expired"), 0.0);
    assert_eq!(auth("rate_limited"), 0.0);

    let requests = |route: &str, method: &str, class: &str| {
        scrape.value(&format!(
            "noxus_http_requests_total{{route=\"{route}\",method=\"{method}\",status_class=\"{class}\"}}"
        ))
    };
    assert_eq!(requests("/v1/models/llms", "GET", "2xx"), 2.0);
    assert_eq!(requests("/v1/models/llms", "GET", "4xx"), 5.0);
    assert_eq!(requests("/v1/workflows", "POST", "4xx"), 1.0);
    assert_eq!(
        requests("/v1/admin/groups/{id}/api-keys/{key_id}", "DELETE", "2xx"),
        1.0
    );
    assert_eq!(requests("unmatched", "GET", "4xx"), 1.0);
    assert_eq!(
        scrape.value("noxus_http_request_duration_seconds_count{route=\"/v1/models/llms\"}"),
        7.0
    );
    assert_eq!(
        app.state
            .metrics()
            .requests("/v1/models/llms", "GET", "4xx"),
        5,
        "the scrape shows what the server counted"
    );

    // Key checks: the revoked key is looked up once, then cached (its
    // revocation is the answer); the others likewise.
    let hits = scrape.value("noxus_key_cache_hits_total");
    let misses = scrape.value("noxus_key_cache_misses_total");
    assert_eq!(
        hits + misses,
        7.0,
        "one cache lookup per well-formed key checked: {}",
        scrape.text
    );
    assert!(misses >= 3.0, "member, owner and viewer were looked up");
    assert!(scrape.value("noxus_key_cache_invalidations_total") >= 1.0);
    assert!(
        scrape.value("noxus_store_query_duration_seconds_count{operation=\"key_for_auth\"}") >= 3.0
    );
    assert!(scrape.value("noxus_store_pool_max_connections") >= 1.0);
    assert_eq!(scrape.value("noxus_runs{status=\"queued\"}"), 0.0);
    assert!(scrape
        .samples
        .contains_key("noxus_runs{status=\"running\"}"));
    assert!(scrape
        .samples
        .contains_key("noxus_store_notifications_received_total"));

    // The public port never serves the metrics.
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn usage_flushes_are_measured() {
    let app = spawn_with_metrics().await;
    json_ok(
        app.get("/v1/models/llms", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    // The flush runs every second.
    let mut flushed = 0.0;
    for _ in 0..50 {
        let scrape = scrape(&app).await;
        flushed = scrape.value("noxus_usage_flush_batch_keys_count");
        if flushed >= 1.0 {
            assert!(scrape.value("noxus_usage_flush_batch_keys_sum") >= 1.0);
            assert!(scrape.value("noxus_usage_flush_lag_seconds_count") >= 1.0);
            assert!(scrape.value("noxus_usage_last_flush_timestamp_seconds") > 1.7e9);
            assert!(
                scrape
                    .value("noxus_store_query_duration_seconds_count{operation=\"record_usage\"}")
                    >= 1.0
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(flushed >= 1.0, "a flush wrote the key's use");
    app.stop().await;
}

#[tokio::test]
async fn no_label_carries_a_key_a_fragment_or_a_path_as_sent() {
    let app = spawn_with_metrics().await;
    let key = app.owner_key.clone();
    let member = app.user_with_role(Role::Member).await;
    let fragment = &key[..10];
    let client = reqwest::Client::new();
    // Keys in the path (of real and of unknown routes), the query, the
    // headers; an invented method; a route template's parameter.
    let paths = [
        format!("/v1/{key}"),
        format!("/{key}/models"),
        format!("/v1/admin/groups/{key}/api-keys"),
        format!("/v1/workflows/{}", member.key),
        format!("/v1/models/llms?api_key={key}"),
        "/secret-path-zz9/plural".to_owned(),
        format!("/keys/{fragment}"),
    ];
    for path in &paths {
        for sent in [&key, &member.key] {
            let _ = client
                .get(app.url(path))
                .header("x-api-key", sent.as_str())
                .send()
                .await
                .unwrap();
        }
        let _ = client
            .post(app.url(path))
            .header("authorization", format!("Bearer {key}"))
            .send()
            .await
            .unwrap();
    }
    let odd = reqwest::Method::from_bytes(b"SECRETZZ").unwrap();
    let _ = client
        .request(odd, app.url("/v1/models/llms"))
        .header("x-api-key", key.as_str())
        .send()
        .await
        .unwrap();
    let _ = client
        .get(app.url("/v1/models/llms"))
        .header("x-api-key", "noxus_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .header("user-agent", "agent-zz9")
        .send()
        .await
        .unwrap();

    let scrape = scrape(&app).await;
    for needle in [
        key.as_str(),
        fragment,
        &member.key[..10],
        "noxus_A",
        "secret-path-zz9",
        "SECRETZZ",
        "agent-zz9",
        "api_key",
    ] {
        assert!(
            !scrape.text.contains(needle),
            "`{needle}` in the scrape:\n{}",
            scrape.text
        );
    }
    let methods = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
    ];
    let classes = ["1xx", "2xx", "3xx", "4xx", "5xx"];
    let mut routes = BTreeSet::new();
    for (name, value) in scrape.label_values() {
        match name.as_str() {
            "route" => {
                assert!(
                    value == "unmatched" || value.starts_with('/'),
                    "route {value}"
                );
                assert!(!value.contains("noxus_"), "route {value}");
                routes.insert(value);
            }
            "method" => assert!(methods.contains(&value.as_str()), "method {value}"),
            "status_class" => assert!(classes.contains(&value.as_str()), "class {value}"),
            "le" => assert!(
                value == "+Inf" || value.parse::<f64>().is_ok(),
                "le={value}"
            ),
            "code" | "operation" | "status" | "state" => assert!(
                value.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}={value}"
            ),
            other => panic!("unexpected label {other}={value}"),
        }
    }
    // Only templates of the router: what was sent in the path is not one.
    assert!(routes.contains("unmatched"));
    assert!(
        routes.contains("/v1/workflows/{id}"),
        "a parameter is its template: {routes:?}"
    );
    assert!(
        routes.contains("/v1/admin/groups/{id}/api-keys"),
        "{routes:?}"
    );
    assert!(
        scrape
            .value("noxus_http_requests_total{route=\"/v1/models/llms\",method=\"other\",status_class=\"4xx\"}")
            >= 1.0,
        "the invented method counts as other"
    );
    app.stop().await;
}

/// `docs/ops/grafana-noxus.json`, parsed.
fn dashboard() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/ops/grafana-noxus.json"
    );
    let text = std::fs::read_to_string(path).expect("the dashboard file");
    serde_json::from_str(&text).expect("the dashboard is valid JSON")
}

/// Every `noxus_...` name in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("noxus_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn the_grafana_dashboard_uses_only_metrics_that_a_scrape_has() {
    let dashboard = dashboard();
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "a panel per area");
    let mut used = BTreeSet::new();
    for panel in panels {
        if panel["type"] == "row" {
            continue;
        }
        assert!(panel["title"].as_str().is_some(), "{panel}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr}");
            used.extend(names);
        }
    }

    // A real scrape after some traffic (so that the per-route series exist).
    let app = spawn_with_metrics().await;
    json_ok(
        app.get("/v1/models/llms", &app.owner_key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let scrape = scrape(&app).await;
    let names = scrape.names();
    for name in &used {
        assert!(
            names.contains(name.as_str()),
            "the dashboard uses {name}, which the scrape does not have: {names:?}"
        );
    }
    // And the dashboard shows each area.
    for area in [
        "noxus_http_requests_total",
        "noxus_http_request_duration_seconds_bucket",
        "noxus_auth_outcomes_total",
        "noxus_key_cache_hits_total",
        "noxus_key_cache_invalidations_total",
        "noxus_store_notifications_received_total",
        "noxus_store_listener_reconnects_total",
        "noxus_store_query_duration_seconds_bucket",
        "noxus_store_pool_connections",
        "noxus_usage_flush_lag_seconds_bucket",
        "noxus_usage_flush_batch_keys_bucket",
        "noxus_runs",
        "noxus_runs_finished_total",
    ] {
        assert!(used.contains(area), "the dashboard shows {area}");
    }
    app.stop().await;
}
