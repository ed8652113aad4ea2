//! OTLP export (the `otel` feature; CI runs this binary with it): a real
//! `noxus serve` sends a span per request to a receiver started here (an
//! axum server on 127.0.0.1:0 taking `POST /v1/traces` and decoding the
//! protobuf), and the span joins the trace of the `traceparent` the request
//! carried, as the child of the caller's span.

#![allow(clippy::unwrap_used)]

mod serve_process;

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use tokio::sync::mpsc;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";

/// A received span with its resource's `service.name`.
#[derive(Debug)]
struct Received {
    service: Option<String>,
    span: Span,
}

async fn receive(
    State(spans): State<mpsc::UnboundedSender<Received>>,
    body: Bytes,
) -> ([(&'static str, &'static str); 1], Vec<u8>) {
    let request = ExportTraceServiceRequest::decode(body).unwrap();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| text_attribute(&r.attributes, "service.name"));
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                let _ = spans.send(Received {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
    (
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key) {
        Some(AnyValue::StringValue(text)) => Some(text.clone()),
        _ => None,
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn request_id_of(span: &Span) -> String {
    text_attribute(&span.attributes, "noxus.request_id").unwrap_or_default()
}

#[test]
fn each_request_is_exported_as_a_span_that_joins_the_callers_trace() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (sender, mut spans) = mpsc::unbounded_channel();
    let receiver = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/v1/traces", post(receive))
            .with_state(sender);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        address
    });
    let endpoint = format!("http://{receiver}");
    let served = serve_process::start(
        &["--log-format", "json"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );
    let me: serde_json::Value = {
        let output = served
            .cli(&served.key)
            .args(["auth", "status", "--json"])
            .output()
            .unwrap();
        assert!(output.status.success());
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let key_id = me["key_id"].as_str().unwrap().to_owned();

    let get = |headers: &[(&str, &str)]| -> (u16, String) {
        runtime.block_on(async {
            let mut request = reqwest::Client::new().get(format!("{}/v1/models/llms", served.base));
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let response = request.send().await.unwrap();
            let id = response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned();
            (response.status().as_u16(), id)
        })
    };
    let key = served.key.clone();
    // The caller does not record this trace: nothing is exported for it.
    let (_, unsampled) = get(&[
        ("X-API-Key", &key),
        ("traceparent", &format!("00-{TRACE_ID}-{PARENT_ID}-00")),
    ]);
    let (status, traced) = get(&[
        ("X-API-Key", &key),
        ("traceparent", &format!("00-{TRACE_ID}-{PARENT_ID}-01")),
    ]);
    assert_eq!(status, 200);
    let (_, untraced) = get(&[("X-API-Key", &key)]);
    let (status, refused) = get(&[("X-API-Key", "noxus_not-a-real-key")]);
    assert_eq!(status, 401);

    let mut received = Vec::new();
    let wanted = [&traced, &untraced, &refused];
    runtime.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !wanted.iter().all(|id| {
            received
                .iter()
                .any(|r: &Received| &request_id_of(&r.span) == *id)
        }) {
            match tokio::time::timeout_at(deadline, spans.recv()).await {
                Ok(Some(span)) => received.push(span),
                _ => panic!("spans missing; received {received:#?}"),
            }
        }
    });
    let (exit, _) = served.stop();
    assert!(exit.success());
    while let Ok(span) = spans.try_recv() {
        received.push(span);
    }
    let find = |id: &str| {
        received
            .iter()
            .find(|r| request_id_of(&r.span) == id)
            .unwrap()
    };

    let traced = find(&traced);
    let span = &traced.span;
    assert_eq!(span.name, "GET /v1/models/llms");
    assert_eq!(span.trace_id, hex(TRACE_ID), "the caller's trace");
    assert_eq!(span.parent_span_id, hex(PARENT_ID), "the caller's span");
    assert_eq!(span.span_id.len(), 8);
    assert_ne!(span.span_id, hex(PARENT_ID));
    assert_eq!(span.kind, 2, "a server span");
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    assert_eq!(traced.service.as_deref(), Some("noxus"));
    assert_eq!(
        text_attribute(&span.attributes, "http.route").as_deref(),
        Some("/v1/models/llms")
    );
    assert_eq!(
        text_attribute(&span.attributes, "http.request.method").as_deref(),
        Some("GET")
    );
    assert!(matches!(
        attribute(&span.attributes, "http.response.status_code"),
        Some(AnyValue::IntValue(200))
    ));
    assert_eq!(
        text_attribute(&span.attributes, "noxus.key_id").as_deref(),
        Some(key_id.as_str())
    );

    let untraced = &find(&untraced).span;
    assert!(untraced.parent_span_id.is_empty(), "a new trace");
    assert_eq!(untraced.trace_id.len(), 16);
    assert_ne!(untraced.trace_id, hex(TRACE_ID));

    let refused = &find(&refused).span;
    assert!(matches!(
        attribute(&refused.attributes, "http.response.status_code"),
        Some(AnyValue::IntValue(401))
    ));
    assert_eq!(text_attribute(&refused.attributes, "noxus.key_id"), None);

    assert!(
        received.iter().all(|r| request_id_of(&r.span) != unsampled),
        "an unsampled trace was exported"
    );
    let everything = format!("{received:?}");
    assert!(!everything.contains(&key[6..]), "a key in a span");
    assert!(!everything.contains("not-a-real-key"), "a key in a span");
}
