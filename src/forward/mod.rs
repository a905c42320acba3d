//! forward: the upstream behind one interface, and the classification of upstream failures.
//!
//! Two kinds of upstream answer the same `send(request) -> response`:
//! - Streamable HTTP (the hosted EKS MCP server): one pooled hyper-util client (HTTP/1.1 and
//!   HTTP/2 over rustls with webpki roots, TCP_NODELAY) shared by all requests;
//! - a supervised stdio child (`upstream.command`, the open-source server): `stdio` gives it
//!   the same Streamable HTTP face over one long-lived MCP session with the child (`child`).
//!
//! The stages before this one never learn which kind they talk to. This module only moves
//! messages and reports what went wrong in words a client can act on; it never changes what
//! the policy evaluated (signing, when it applies, was the last change).
mod child;
pub mod protection;
pub mod stdio;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::UpstreamConfig;
use crate::jsonrpc;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// An error inside a streamed upstream body (a concrete type: a boxed trait object here
/// trips rustc's higher-ranked inference where `Limited` wraps the body in async code).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(pub String);
/// The body of an upstream response, whichever kind of upstream produced it.
pub type UpstreamBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>;

/// The upstream EKS MCP server, over HTTP or as a supervised stdio child.
#[derive(Clone)]
pub struct Upstream {
    kind: Kind,
    /// The upstream's newest complete `tools/list` (drift reports, `Mcp-Param-*` checks).
    tools: Arc<crate::drift::ToolsSeen>,
}

#[derive(Clone)]
enum Kind {
    Http(Box<HttpUpstream>),
    Stdio(Arc<stdio::StdioUpstream>),
}

impl Upstream {
    /// Build the upstream the configuration names; a stdio child is started here.
    pub fn new(cfg: &UpstreamConfig) -> anyhow::Result<Self> {
        let tools = Arc::new(crate::drift::ToolsSeen::default());
        let kind = match &cfg.command {
            Some(_) => Kind::Stdio(stdio::StdioUpstream::start(cfg, tools.clone())?),
            None => Kind::Http(Box::new(HttpUpstream::new(cfg)?)),
        };
        Ok(Upstream { kind, tools })
    }

    /// The URL requests are addressed to (`stdio://<program>` for a child).
    pub fn uri(&self) -> &Uri {
        match &self.kind {
            Kind::Http(h) => &h.uri,
            Kind::Stdio(s) => s.uri(),
        }
    }

    /// True for a supervised stdio child (never signed).
    pub fn is_stdio(&self) -> bool {
        matches!(self.kind, Kind::Stdio(_))
    }

    /// What the gateway knows of the upstream's tools.
    pub fn tools(&self) -> &Arc<crate::drift::ToolsSeen> {
        &self.tools
    }

    /// Send one request and wait (bounded) for the response headers.
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        use http_body_util::BodyExt as _;
        match &self.kind {
            Kind::Http(h) => h
                .send(req)
                .await
                .map(|r| r.map(|b| b.map_err(box_body_error).boxed_unsync())),
            Kind::Stdio(s) => s.send(req).await,
        }
    }

    /// Whether the upstream can serve now, and why (for `/readyz`).
    pub fn reachability(&self) -> (bool, String) {
        match &self.kind {
            Kind::Http(h) => h.reachability(),
            Kind::Stdio(s) => s.readiness(),
        }
    }

    /// Stop a stdio child after the front has drained (nothing to do for HTTP).
    pub async fn shutdown(&self) {
        if let Kind::Stdio(s) = &self.kind {
            s.shutdown().await;
        }
    }
}

fn box_body_error(e: hyper::Error) -> BodyError {
    let mut text = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    BodyError(text)
}

/// The HTTP upstream EKS MCP endpoint and a connection pool to it.
#[derive(Clone)]
pub struct HttpUpstream {
    client: Client<Connector, Full<Bytes>>,
    uri: Uri,
    response_timeout: Duration,
    /// The last connection failure, cleared by the next successful exchange (for `/readyz`).
    last_failure: Arc<Mutex<Option<String>>>,
}

/// Why an upstream exchange failed, in terms the client can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream returned HTTP {status}{detail}")]
    Status {
        status: u16,
        detail: String,
        retry_after: Option<String>,
    },
    #[error("upstream rejected the gateway's credentials (HTTP {status}): {hint}")]
    Auth { status: u16, hint: String },
    #[error("upstream sent an invalid response: {0}")]
    BadResponse(String),
    #[error("upstream stream stopped before the response was complete: {0}")]
    Interrupted(String),
    /// Not sent: an upstream 429's `Retry-After` (for any caller) is still running.
    #[error(
        "upstream rate limited this gateway (HTTP 429); calls are held for {}s more, as its Retry-After asked",
        secs_up(*retry_after)
    )]
    Throttled { retry_after: Duration },
    /// Not sent: the circuit breaker is open.
    #[error(
        "upstream failed {failures} times in a row; the gateway fails calls fast for {}s before probing it again (upstream.breaker_failures, upstream.breaker_open_for)",
        secs_up(*retry_after)
    )]
    CircuitOpen {
        failures: u32,
        retry_after: Duration,
    },
}

/// Whole seconds, rounded up, at least 1 (for `Retry-After` and messages).
pub fn secs_up(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

impl UpstreamError {
    /// The JSON-RPC code for this failure.
    pub fn code(&self) -> i64 {
        match self {
            UpstreamError::Unavailable(_) => jsonrpc::UPSTREAM_UNAVAILABLE,
            UpstreamError::Timeout(_) => jsonrpc::UPSTREAM_TIMEOUT,
            UpstreamError::Status { status: 429, .. } => jsonrpc::UPSTREAM_RATE_LIMITED,
            UpstreamError::Status { .. } => jsonrpc::UPSTREAM_ERROR,
            UpstreamError::Auth { .. } => jsonrpc::UPSTREAM_AUTH_FAILED,
            UpstreamError::BadResponse(_) | UpstreamError::Interrupted(_) => {
                jsonrpc::UPSTREAM_BAD_RESPONSE
            }
            UpstreamError::Throttled { .. } => jsonrpc::UPSTREAM_RATE_LIMITED,
            UpstreamError::CircuitOpen { .. } => jsonrpc::UPSTREAM_UNAVAILABLE,
        }
    }

    /// Short machine-readable kind for `error.data.kind`, metrics and audit.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Unavailable(_) => "upstream_unavailable",
            UpstreamError::Timeout(_) => "upstream_timeout",
            UpstreamError::Status { status: 429, .. } => "upstream_rate_limited",
            UpstreamError::Status { .. } => "upstream_error",
            UpstreamError::Auth { .. } => "upstream_auth_failed",
            UpstreamError::BadResponse(_) => "upstream_bad_response",
            UpstreamError::Interrupted(_) => "upstream_interrupted",
            UpstreamError::Throttled { .. } => "upstream_rate_limited",
            UpstreamError::CircuitOpen { .. } => "upstream_circuit_open",
        }
    }

    pub fn http_status(&self) -> Option<u16> {
        match self {
            UpstreamError::Status { status, .. } | UpstreamError::Auth { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// The JSON-RPC error response for a request with `id`.
    pub fn to_jsonrpc(&self, id: Option<&jsonrpc::Id>) -> serde_json::Value {
        let mut data = serde_json::json!({"source": "upstream", "kind": self.kind()});
        if let Some(s) = self.http_status() {
            data["upstream_status"] = s.into();
        }
        if let UpstreamError::Status {
            retry_after: Some(r),
            ..
        } = self
        {
            data["retry_after"] = r.clone().into();
        }
        if let UpstreamError::Throttled { retry_after }
        | UpstreamError::CircuitOpen { retry_after, .. } = self
        {
            // Held at the gateway: the upstream did not see this call.
            data["retry_after"] = secs_up(*retry_after).to_string().into();
            data["held_by_gateway"] = true.into();
        }
        jsonrpc::error_response(id, self.code(), &self.to_string(), Some(data))
    }
}

impl HttpUpstream {
    pub fn new(cfg: &UpstreamConfig) -> anyhow::Result<Self> {
        let uri: Uri = cfg.url.parse()?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(https);
        Ok(HttpUpstream {
            client,
            uri,
            response_timeout: cfg.response_timeout,
            last_failure: Arc::new(Mutex::new(None)),
        })
    }

    /// Send one request and wait (bounded) for the response headers.
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let result =
            match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
                Err(_) => Err(UpstreamError::Timeout(self.response_timeout)),
                Ok(Err(e)) => Err(classify_client_error(&e)),
                Ok(Ok(resp)) => Ok(resp),
            };
        let mut last = self.last_failure.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Err(e @ UpstreamError::Unavailable(_)) => *last = Some(e.to_string()),
            Ok(_) => *last = None,
            Err(_) => {}
        }
        result
    }

    /// Whether the upstream answered the last exchange (true until proven otherwise).
    pub fn reachability(&self) -> (bool, String) {
        match &*self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) {
            None => (true, format!("{} reachable", self.uri)),
            Some(e) => (false, e.clone()),
        }
    }
}

fn classify_client_error(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    let mut text = e.to_string();
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    if e.is_connect() {
        UpstreamError::Unavailable(text)
    } else {
        UpstreamError::BadResponse(text)
    }
}

/// Request headers forwarded upstream. Everything else (hop-by-hop headers, cookies,
/// the client's `Authorization`, proxy headers) stays at the gateway.
pub fn forwardable_request_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "accept"
            | "content-type"
            | "mcp-session-id"
            | "mcp-protocol-version"
            | "mcp-method"
            | "mcp-name"
            | "last-event-id"
            | "traceparent"
            | "tracestate"
            | "baggage"
    ) || n.starts_with("mcp-param-")
}

/// Response headers relayed to the client.
pub fn forwardable_response_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "content-type"
            | "mcp-session-id"
            | "mcp-protocol-version"
            | "cache-control"
            | "retry-after"
    )
}

/// Copy the forwardable request headers from the client request.
pub fn upstream_headers(client: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in client {
        if forwardable_request_header(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static(concat!("eks-mcp-gateway/", env!("CARGO_PKG_VERSION"))),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_token_and_hop_by_hop_headers_are_not_forwarded() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer secret"),
            ("cookie", "a=b"),
            ("connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("x-forwarded-for", "1.2.3.4"),
            ("mcp-session-id", "s1"),
            ("mcp-param-region", "x"),
            ("accept", "application/json, text/event-stream"),
        ] {
            h.insert(HeaderName::from_static(k), v.parse().unwrap());
        }
        let out = upstream_headers(&h);
        assert!(out.get("authorization").is_none());
        assert!(out.get("cookie").is_none());
        assert!(out.get("connection").is_none());
        assert!(out.get("transfer-encoding").is_none());
        assert!(out.get("x-forwarded-for").is_none());
        assert_eq!(out["mcp-session-id"], "s1");
        assert_eq!(out["mcp-param-region"], "x");
        assert!(out.get("user-agent").is_some());
    }

    #[test]
    fn upstream_errors_are_distinguishable_from_denials() {
        let e = UpstreamError::Status {
            status: 429,
            detail: String::new(),
            retry_after: Some("3".into()),
        };
        let v = e.to_jsonrpc(Some(&serde_json::json!(4)));
        assert_eq!(v["error"]["code"], jsonrpc::UPSTREAM_RATE_LIMITED);
        assert_eq!(v["error"]["data"]["source"], "upstream");
        assert_eq!(v["error"]["data"]["retry_after"], "3");
        assert_ne!(e.code(), jsonrpc::POLICY_DENIED);
    }
}
