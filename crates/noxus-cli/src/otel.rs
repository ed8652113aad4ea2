//! OpenTelemetry trace export of `noxus serve` (the `otel` feature): one
//! server span per request, sent over OTLP/HTTP (protobuf) to
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
//!
//! The span is made from the request's access line
//! ([`noxus_server::logging::ACCESS_TARGET`]), which carries everything it
//! needs (method, route template, status, latency, key id, the caller's
//! `traceparent`): the request path pays for no second span, and the export
//! runs on the SDK's own thread. Without the feature, an endpoint in the
//! environment only earns a warning.

/// The trace exporter chosen from the environment, if any.
#[derive(Debug)]
pub struct TraceExport {
    #[cfg(feature = "otel")]
    exporting: Option<exporting::Exporting>,
    /// What to log once the log is installed.
    note: Option<Note>,
}

#[derive(Debug)]
enum Note {
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    Exporting(String),
    #[cfg_attr(feature = "otel", allow(dead_code))]
    NotBuiltIn,
}

/// The configured OTLP endpoint, if any (`OTEL_SDK_DISABLED=true` turns
/// the export off as the OpenTelemetry specification says).
fn configured_endpoint() -> Option<String> {
    if std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return None;
    }
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

impl TraceExport {
    /// Reads the environment; with an endpoint, builds the exporter (its
    /// requests run on `runtime`).
    #[cfg_attr(not(feature = "otel"), allow(clippy::unnecessary_wraps))]
    pub fn from_env(runtime: &tokio::runtime::Handle) -> anyhow::Result<Self> {
        let Some(endpoint) = configured_endpoint() else {
            return Ok(Self {
                #[cfg(feature = "otel")]
                exporting: None,
                note: None,
            });
        };
        #[cfg(feature = "otel")]
        {
            let exporting = exporting::Exporting::start(runtime.clone())?;
            Ok(Self {
                exporting: Some(exporting),
                note: Some(Note::Exporting(shown_endpoint(&endpoint))),
            })
        }
        #[cfg(not(feature = "otel"))]
        {
            let _ = (runtime, endpoint);
            Ok(Self {
                note: Some(Note::NotBuiltIn),
            })
        }
    }

    /// The layer that turns access lines into spans, to install with the log.
    pub fn take_layer(
        &mut self,
    ) -> Option<Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>>
    {
        #[cfg(feature = "otel")]
        {
            self.exporting.as_mut().and_then(|e| e.layer.take())
        }
        #[cfg(not(feature = "otel"))]
        {
            None
        }
    }

    /// Logs whether spans are exported (once the log is installed).
    pub fn announce(&mut self) {
        match self.note.take() {
            Some(Note::Exporting(endpoint)) => tracing::info!(
                %endpoint,
                "exporting a span per request over OTLP/HTTP"
            ),
            Some(Note::NotBuiltIn) => tracing::warn!(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but this noxus was built without the `otel` feature: no spans are exported (cargo build --features otel)"
            ),
            None => {}
        }
    }

    /// Sends the spans still queued (call it while the runtime still runs).
    pub fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(exporting) = self.exporting {
            if let Err(err) = exporting.provider.shutdown() {
                tracing::warn!(error = %err, "the last spans could not be exported");
            }
        }
    }
}

/// The endpoint as logged: scheme, host and port only (no credentials,
/// path or query).
#[cfg_attr(not(feature = "otel"), allow(dead_code))]
fn shown_endpoint(endpoint: &str) -> String {
    match url_origin(endpoint) {
        Some(origin) => origin,
        None => "(unusable URL)".to_owned(),
    }
}

fn url_origin(endpoint: &str) -> Option<String> {
    let (scheme, rest) = endpoint.trim().split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

#[cfg(feature = "otel")]
mod exporting {
    use std::fmt;
    use std::time::{Duration, SystemTime};

    use anyhow::Context as _;
    use noxus_server::logging::ACCESS_TARGET;
    use noxus_server::trace_context;
    use opentelemetry::trace::{
        Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceState,
        Tracer as _, TracerProvider as _,
    };
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
    use tracing::field::{Field, Visit};
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::Context as LayerContext;
    use tracing_subscriber::{Layer, Registry};

    /// The SDK's provider (batching, the export thread) and our layer.
    pub(super) struct Exporting {
        pub provider: SdkTracerProvider,
        pub layer: Option<Box<dyn Layer<Registry> + Send + Sync>>,
    }

    impl fmt::Debug for Exporting {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Exporting").finish_non_exhaustive()
        }
    }

    impl Exporting {
        pub fn start(runtime: tokio::runtime::Handle) -> anyhow::Result<Self> {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .context("cannot build the OTLP HTTP client")?;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_http_client(OnRuntime { client, runtime })
                .build()
                .context("OTEL_EXPORTER_OTLP_ENDPOINT: cannot set up the OTLP exporter")?;
            let mut resource = opentelemetry_sdk::Resource::builder();
            if std::env::var("OTEL_SERVICE_NAME").map_or(true, |v| v.trim().is_empty()) {
                resource = resource.with_service_name("noxus");
            }
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource.build())
                .build();
            let layer = SpanPerRequest {
                tracer: provider.tracer("noxus"),
            }
            .with_filter(Targets::new().with_target(ACCESS_TARGET, tracing::Level::INFO));
            Ok(Self {
                provider,
                layer: Some(Box::new(layer)),
            })
        }
    }

    /// Sends the exporter's requests with the workspace's reqwest client on
    /// the server's runtime: the SDK exports from its own thread, where no
    /// runtime runs.
    #[derive(Debug)]
    struct OnRuntime {
        client: reqwest::Client,
        runtime: tokio::runtime::Handle,
    }

    #[async_trait::async_trait]
    impl opentelemetry_http::HttpClient for OnRuntime {
        async fn send_bytes(
            &self,
            request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
        ) -> Result<
            opentelemetry_http::Response<opentelemetry_http::Bytes>,
            opentelemetry_http::HttpError,
        > {
            let request = reqwest::Request::try_from(request)?;
            let client = self.client.clone();
            let (status, headers, body) = self
                .runtime
                .spawn(async move {
                    let response = client.execute(request).await?;
                    let status = response.status();
                    let headers = response.headers().clone();
                    let body = response.bytes().await?;
                    Ok::<_, reqwest::Error>((status, headers, body))
                })
                .await??;
            let mut response = opentelemetry_http::Response::new(body);
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            Ok(response)
        }
    }

    /// Turns each access line into a finished server span.
    struct SpanPerRequest {
        tracer: SdkTracer,
    }

    impl<S: tracing::Subscriber> Layer<S> for SpanPerRequest {
        fn on_event(&self, event: &tracing::Event<'_>, _ctx: LayerContext<'_, S>) {
            if event.metadata().target() != ACCESS_TARGET {
                return;
            }
            let mut line = AccessLine::default();
            event.record(&mut line);
            let end = SystemTime::now();
            let start = end
                .checked_sub(Duration::from_micros(line.latency_us))
                .unwrap_or(end);
            let method = line.method.unwrap_or_else(|| "HTTP".to_owned());
            let name = match &line.route {
                Some(route) => format!("{method} {route}"),
                None => method.clone(),
            };
            let mut attributes = vec![
                KeyValue::new("http.request.method", method),
                KeyValue::new("http.response.status_code", i64::from(line.status)),
            ];
            if let Some(route) = line.route {
                attributes.push(KeyValue::new("http.route", route));
            }
            if let Some(request_id) = line.request_id {
                attributes.push(KeyValue::new("noxus.request_id", request_id));
            }
            if let Some(key_id) = line.key_id {
                attributes.push(KeyValue::new("noxus.key_id", key_id));
            }
            let parent = match (line.trace_id, line.parent_span_id) {
                (Some(trace_id), Some(parent_id)) => {
                    Context::new().with_remote_span_context(SpanContext::new(
                        opentelemetry::trace::TraceId::from(trace_id.0),
                        opentelemetry::trace::SpanId::from(parent_id.0),
                        if line.sampled {
                            TraceFlags::SAMPLED
                        } else {
                            TraceFlags::default()
                        },
                        true,
                        TraceState::default(),
                    ))
                }
                _ => Context::new(),
            };
            let mut span = self
                .tracer
                .span_builder(name)
                .with_kind(SpanKind::Server)
                .with_start_time(start)
                .with_attributes(attributes)
                .start_with_context(&self.tracer, &parent);
            // Server spans: only 5xx are errors (a 4xx is the client's).
            if line.status >= 500 {
                span.set_status(Status::error(""));
            }
            span.end_with_timestamp(end);
        }
    }

    /// The fields of an access line.
    #[derive(Default)]
    struct AccessLine {
        request_id: Option<String>,
        method: Option<String>,
        route: Option<String>,
        status: u16,
        latency_us: u64,
        key_id: Option<String>,
        trace_id: Option<trace_context::TraceId>,
        parent_span_id: Option<trace_context::SpanId>,
        sampled: bool,
    }

    impl Visit for AccessLine {
        fn record_str(&mut self, field: &Field, value: &str) {
            let value = Some(value.to_owned());
            match field.name() {
                "request_id" => self.request_id = value,
                "method" => self.method = value,
                "route" => self.route = value,
                "key_id" => self.key_id = value,
                _ => {}
            }
        }

        fn record_u64(&mut self, field: &Field, value: u64) {
            match field.name() {
                "status" => self.status = u16::try_from(value).unwrap_or(0),
                "latency_us" => self.latency_us = value,
                _ => {}
            }
        }

        fn record_bool(&mut self, field: &Field, value: bool) {
            if field.name() == "trace_sampled" {
                self.sampled = value;
            }
        }

        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            // The ids are recorded as their hex text (32 or 16 digits).
            let mut text = HexText::default();
            if fmt::write(&mut text, format_args!("{value:?}")).is_err() {
                return;
            }
            match field.name() {
                "trace_id" => self.trace_id = trace_context::TraceId::parse(text.as_str()),
                "parent_span_id" => {
                    self.parent_span_id = trace_context::SpanId::parse(text.as_str());
                }
                _ => {}
            }
        }
    }

    /// Up to 32 ASCII characters, without allocating.
    #[derive(Default)]
    struct HexText {
        bytes: [u8; 32],
        len: usize,
    }

    impl HexText {
        fn as_str(&self) -> &str {
            std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
        }
    }

    impl fmt::Write for HexText {
        fn write_str(&mut self, text: &str) -> fmt::Result {
            let end = self.len + text.len();
            if end > self.bytes.len() {
                return Err(fmt::Error);
            }
            self.bytes[self.len..end].copy_from_slice(text.as_bytes());
            self.len = end;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logged_endpoint_keeps_only_scheme_host_and_port() {
        assert_eq!(
            shown_endpoint("https://user:secret@collector.internal:4318/v1/traces?token=x"),
            "https://collector.internal:4318"
        );
        assert_eq!(
            shown_endpoint("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318"
        );
        assert_eq!(shown_endpoint("collector:4318"), "(unusable URL)");
    }
}
