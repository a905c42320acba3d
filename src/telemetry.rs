//! Logs and traces: `tracing` to stderr (text or JSON, `RUST_LOG`-style filter) and, when
//! `tracing.otlp_endpoint` is set, OpenTelemetry spans exported over OTLP/HTTP (protobuf).
//!
//! One SERVER span per MCP request follows the OpenTelemetry MCP semantic conventions
//! ([`request_span`]): name `{mcp.method.name} {gen_ai.tool.name}`, attributes
//! `mcp.method.name`, `gen_ai.tool.name`, `jsonrpc.request.id`, `mcp.protocol.version`,
//! `error.type`. The pipeline creates its stage spans (`decide`, `sign`, `upstream`) with
//! `tracing::info_span!` inside it, so they export as its children. W3C trace context comes
//! from `params._meta` (preferred, as the conventions say) or the HTTP headers
//! ([`set_parent_from`]) and goes upstream in both places ([`inject_headers`],
//! [`inject_meta`]).
//!
//! Spans never carry credentials, raw session ids or tool arguments.
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{HeaderExtractor, HeaderInjector, HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Map, Value};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::TracingConfig;

/// Attribute names from the OpenTelemetry MCP / GenAI / JSON-RPC semantic conventions
/// (defined here because the semconv crate's MCP constants are deprecated).
pub mod attr {
    pub const MCP_METHOD_NAME: &str = "mcp.method.name";
    pub const MCP_PROTOCOL_VERSION: &str = "mcp.protocol.version";
    pub const GEN_AI_TOOL_NAME: &str = "gen_ai.tool.name";
    pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
    pub const JSONRPC_REQUEST_ID: &str = "jsonrpc.request.id";
    pub const ERROR_TYPE: &str = "error.type";
    pub const RPC_RESPONSE_STATUS_CODE: &str = "rpc.response.status_code";
    pub const NETWORK_TRANSPORT: &str = "network.transport";
    pub const NETWORK_PROTOCOL_NAME: &str = "network.protocol.name";
    /// Gateway-specific: whether the request belonged to an MCP session (the id itself is
    /// never recorded).
    pub const GATEWAY_SESSION: &str = "mcp_gateway.session";
    /// Gateway-specific policy attributes (not a GenAI guardrail: see the semconv notes).
    pub const POLICY_DECISION: &str = "mcp_gateway.policy.decision";
    pub const POLICY_RULES: &str = "mcp_gateway.policy.rules";
    pub const POLICY_REVISION: &str = "mcp_gateway.policy.revision";
}

/// Keeps the trace exporter alive; flushes and shuts it down when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Export every finished span now (blocks until the exporter answers or times out).
    pub fn flush(&self) {
        if let Some(p) = &self.provider
            && let Err(e) = p.force_flush()
        {
            tracing::warn!(error = %e, "flushing traces failed");
        }
    }

    /// True when spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown_with_timeout(Duration::from_secs(5))
        {
            eprintln!("eks-mcp-gateway: shutting down the trace exporter failed: {e}");
        }
    }
}

/// A telemetry setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "tracing.otlp_endpoint {0:?} is not an http(s) URL. Fix: use e.g. http://127.0.0.1:4318"
    )]
    Endpoint(String),
    #[error("tracing.log_format {0:?} is not known. Fix: use `text` or `json`")]
    LogFormat(String),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    #[error("cannot start the OTLP export thread: {0}")]
    Thread(std::io::Error),
}

/// Install logging (and trace export when configured) for the whole process. Call once at
/// start-up, inside the tokio runtime; keep the guard until exit. A broken tracing setting
/// is reported on stderr and the gateway runs with logs only.
pub fn init(cfg: &TracingConfig) -> TelemetryGuard {
    let provider = match tracer_provider(cfg) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("eks-mcp-gateway: traces are not exported: {e}");
            None
        }
    };
    let dispatch = match dispatch(cfg, provider.as_ref()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("eks-mcp-gateway: {e}; logging as text");
            let text = TracingConfig {
                log_format: "text".into(),
                ..cfg.clone()
            };
            dispatch(&text, provider.as_ref()).unwrap_or_else(|_| tracing::Dispatch::none())
        }
    };
    if tracing::dispatcher::set_global_default(dispatch).is_err() {
        eprintln!("eks-mcp-gateway: a tracing subscriber was already installed; keeping it");
    }
    TelemetryGuard { provider }
}

/// The OTLP/HTTP trace pipeline for `cfg`, or `None` when `otlp_endpoint` is not set.
/// [`init`] uses it; tests use it with [`dispatch`] to trace into a local receiver.
pub fn tracer_provider(cfg: &TracingConfig) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    let Some(endpoint) = cfg
        .otlp_endpoint
        .as_deref()
        .filter(|e| !e.trim().is_empty())
    else {
        return Ok(None);
    };
    let endpoint = traces_url(endpoint)?;
    let client = OtlpHttpClient::start(Duration::from_secs(10))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(cfg.service_name.clone())
                .build(),
        )
        .build();
    Ok(Some(provider))
}

/// A subscriber that logs to stderr in `cfg.log_format` (filtered by `RUST_LOG`, default
/// `info`) and, with a provider, turns spans into OpenTelemetry spans. Install it with
/// `tracing::dispatcher::set_global_default` (what [`init`] does) or `set_default`.
pub fn dispatch(
    cfg: &TracingConfig,
    provider: Option<&SdkTracerProvider>,
) -> Result<tracing::Dispatch, TelemetryError> {
    let filter = || {
        EnvFilter::builder()
            .with_default_directive(LevelFilter::INFO.into())
            .from_env_lossy()
    };
    let (text, json) = match cfg.log_format.as_str() {
        "text" => (
            Some(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)),
            None,
        ),
        "json" => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            ),
        ),
        other => return Err(TelemetryError::LogFormat(other.to_owned())),
    };
    // Spans are exported at INFO and above whatever RUST_LOG says about log lines.
    let otel = provider.map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("eks-mcp-gateway"))
            .with_level(true)
            .with_filter(LevelFilter::INFO)
    });
    let subscriber = Registry::default()
        .with(text.map(|l| l.with_filter(filter())))
        .with(json.map(|l| l.with_filter(filter())))
        .with(otel);
    Ok(tracing::Dispatch::new(subscriber))
}

/// `http://host:4318` → `http://host:4318/v1/traces`; a URL with a path is used as given.
fn traces_url(endpoint: &str) -> Result<String, TelemetryError> {
    let uri: http::Uri = endpoint
        .trim()
        .parse()
        .map_err(|_| TelemetryError::Endpoint(endpoint.to_owned()))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(TelemetryError::Endpoint(endpoint.to_owned()));
    }
    let trimmed = endpoint.trim().trim_end_matches('/');
    if uri.path() == "/" || uri.path().is_empty() {
        Ok(format!("{trimmed}/v1/traces"))
    } else {
        Ok(endpoint.trim().to_owned())
    }
}

// ---------------------------------------------------------------------------------------
// Spans

/// The SERVER span for one MCP request. Enter it (or `.instrument` the request future) and
/// create stage spans inside it; record the outcome with [`record_error`] and
/// [`record_decision`].
pub fn request_span(
    method: &str,
    tool: Option<&str>,
    session: bool,
    request_id: Option<&str>,
) -> Span {
    let name = match tool {
        Some(t) => format!("{method} {t}"),
        None => method.to_owned(),
    };
    let operation = (method == "tools/call").then_some("execute_tool");
    tracing::info_span!(
        "mcp.request",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        mcp.method.name = %method,
        gen_ai.tool.name = tool,
        gen_ai.operation.name = operation,
        jsonrpc.request.id = request_id,
        mcp.protocol.version = tracing::field::Empty,
        error.type = tracing::field::Empty,
        rpc.response.status_code = tracing::field::Empty,
        network.transport = "tcp",
        network.protocol.name = "http",
        mcp_gateway.session = session,
        mcp_gateway.policy.decision = tracing::field::Empty,
        mcp_gateway.policy.rules = tracing::field::Empty,
        mcp_gateway.policy.revision = tracing::field::Empty,
    )
}

/// The CLIENT span for the upstream call (create it inside the request span).
pub fn upstream_span(method: &str, tool: Option<&str>) -> Span {
    let name = match tool {
        Some(t) => format!("upstream {method} {t}"),
        None => format!("upstream {method}"),
    };
    tracing::info_span!(
        "upstream",
        otel.name = %name,
        otel.kind = "client",
        mcp.method.name = %method,
        gen_ai.tool.name = tool,
        http.response.status_code = tracing::field::Empty,
    )
}

/// Record the negotiated MCP protocol version on a request span.
pub fn record_protocol_version(span: &Span, version: &str) {
    span.record(attr::MCP_PROTOCOL_VERSION, version);
}

/// Mark a request span failed: `error_type` is the JSON-RPC code as a string, `tool_error`
/// for a result with `isError`, or a gateway kind (`timeout`, `denied`, ...).
pub fn record_error(span: &Span, error_type: &str, jsonrpc_code: Option<i64>, message: &str) {
    span.record(attr::ERROR_TYPE, error_type);
    if let Some(code) = jsonrpc_code {
        span.record(attr::RPC_RESPONSE_STATUS_CODE, code);
    }
    span.record("otel.status_code", "error");
    span.record("otel.status_description", message);
}

/// Record what the policy decided on a request span.
pub fn record_decision(span: &Span, decision: &str, rules: &[String], revision: &str) {
    if span.is_disabled() {
        return;
    }
    span.record(attr::POLICY_DECISION, decision);
    span.record(attr::POLICY_RULES, rules.join(",").as_str());
    span.record(attr::POLICY_REVISION, revision);
}

struct MetaCarrier<'a>(&'a Map<String, Value>);

impl Extractor for MetaCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct MetaInjector<'a>(&'a mut Map<String, Value>);

impl Injector for MetaInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), Value::String(value));
    }
}

/// Make the caller's trace the parent of `span`: `params._meta.traceparent` when present and
/// valid (the MCP conventions prefer it), else the `traceparent` header. When both are
/// present and differ, the header context becomes a link. Call before the span is entered.
pub fn set_parent_from(span: &Span, headers: &HeaderMap, meta: Option<&Value>) {
    if span.is_disabled() {
        // Filtered out (no exporter and a log filter above INFO): no context to attach.
        return;
    }
    let propagator = TraceContextPropagator::new();
    let from_meta = meta
        .and_then(Value::as_object)
        .map(|m| propagator.extract(&MetaCarrier(m)))
        .filter(|cx| cx.span().span_context().is_valid());
    let from_headers = Some(propagator.extract(&HeaderExtractor(headers)))
        .filter(|cx| cx.span().span_context().is_valid());
    match (from_meta, from_headers) {
        (Some(meta_cx), headers_cx) => {
            if let Some(h) = headers_cx {
                let linked = h.span().span_context().clone();
                if linked.trace_id() != meta_cx.span().span_context().trace_id() {
                    span.add_link(linked);
                }
            }
            let _ = span.set_parent(meta_cx);
        }
        (None, Some(h)) => {
            let _ = span.set_parent(h);
        }
        (None, None) => {}
    }
}

/// Write `span`'s context as `traceparent`/`tracestate` headers for the upstream request.
/// Nothing is written when spans are not exported.
pub fn inject_headers(span: &Span, headers: &mut HeaderMap) {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
    }
}

/// Write `span`'s context into a `params._meta` object for the upstream request (the
/// body changes, so do it before signing). Nothing is written when spans are not exported.
pub fn inject_meta(span: &Span, meta: &mut Map<String, Value>) {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut MetaInjector(meta));
    }
}

// ---------------------------------------------------------------------------------------
// OTLP transport

type ExportClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The HTTP client of the OTLP exporter. The SDK's batch processor exports from its own
/// thread without a tokio runtime, so requests run on a small runtime of their own (one
/// thread, stopped when the exporter is dropped). This also keeps exports working when the
/// caller's runtime is busy or single-threaded.
#[derive(Debug)]
struct OtlpHttpClient {
    client: ExportClient,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl OtlpHttpClient {
    fn start(timeout: Duration) -> Result<Self, TelemetryError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(TelemetryError::Thread)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
            })
            .map_err(TelemetryError::Thread)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(OtlpHttpClient {
            client,
            runtime: handle,
            timeout,
            _stop: stop,
        })
    }
}

impl HttpClient for OtlpHttpClient {
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let client = self.client.clone();
        let timeout = self.timeout;
        let task = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let request = Request::from_parts(parts, Full::new(body));
            let response = tokio::time::timeout(timeout, client.request(request))
                .await
                .map_err(|_| HttpError::from("OTLP export timed out"))?
                .map_err(|e| HttpError::from(e.to_string()))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| HttpError::from(e.to_string()))?
                .to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        });
        Box::pin(async move {
            task.await
                .map_err(|e| HttpError::from(format!("OTLP export task failed: {e}")))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_gets_the_traces_path() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://127.0.0.1:4318/").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://c.example/otlp/v1/traces").unwrap(),
            "https://c.example/otlp/v1/traces"
        );
        assert!(traces_url("127.0.0.1:4318").is_err());
    }
}
