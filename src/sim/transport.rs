//! Streamable HTTP for the simulator: one endpoint, both protocol eras.
//!
//! Order per request: record it, check the path, verify SigV4 (when configured), check
//! `Origin`, then route by HTTP method. POST bodies carrying modern `_meta` (or
//! `server/discover`) are served statelessly with header/body validation; everything else
//! follows the session era (`initialize` mints `Mcp-Session-Id`, GET opens the session's
//! stream, DELETE ends it). Status codes and error texts follow the TypeScript SDK where the
//! spec leaves them open.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::SystemTime;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use rand::RngCore as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::rpc::{self, Era, Handled, LEGACY_VERSIONS, META_VERSION, MODERN_VERSIONS, RpcError};
use super::sigv4::Verifier;
use super::{ReceivedRequest, ResponseMode, Shared, lock};

/// Largest request body accepted (the TypeScript SDK's limit).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Events kept per session for `Last-Event-ID` resumption.
const HISTORY: usize = 512;
/// `retry:` advice on GET streams, in milliseconds.
const RETRY_MS: u64 = 3000;

pub(crate) type SimBody = BoxBody<Bytes, Infallible>;

/// A session-era session.
pub(crate) struct Session {
    log_level: usize,
    /// Sender of the open GET stream, if any.
    stream: Option<mpsc::UnboundedSender<Bytes>>,
    next_event_id: u64,
    /// Highest event id written to a GET stream.
    delivered: u64,
    history: VecDeque<(u64, Bytes)>,
}

impl Session {
    fn new() -> Self {
        Self {
            log_level: 1,
            stream: None,
            next_event_id: 1,
            delivered: 0,
            history: VecDeque::new(),
        }
    }

    fn allocate_id(&mut self) -> u64 {
        let id = self.next_event_id;
        self.next_event_id += 1;
        id
    }

    /// Queue a server→client message for the GET stream (kept for resumption either way).
    pub(crate) fn notify(&mut self, message: &Value) {
        let id = self.allocate_id();
        let event = Bytes::from(format!("id: {id}\nevent: message\ndata: {message}\n\n"));
        self.history.push_back((id, event.clone()));
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
        if let Some(tx) = &self.stream {
            if tx.send(event).is_ok() {
                self.delivered = id;
            } else {
                self.stream = None;
            }
        }
    }
}

/// A stateless-era `subscriptions/listen` stream and what it opted in to.
pub(crate) struct Listener {
    tx: mpsc::UnboundedSender<Bytes>,
    subscription_id: Value,
    resources_list_changed: bool,
}

impl Listener {
    pub(crate) fn is_open(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Deliver `message` if the listener asked for it; false once the client has gone.
    fn deliver(&self, message: &Value) -> bool {
        if message["method"] != "notifications/resources/list_changed"
            || !self.resources_list_changed
        {
            return self.is_open();
        }
        let mut tagged = message.clone();
        tagged["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] =
            self.subscription_id.clone();
        self.tx.send(sse_event(&tagged)).is_ok()
    }
}

/// An SSE body fed by a channel, with optional keep-alive comments while idle.
struct SseBody {
    rx: mpsc::UnboundedReceiver<Bytes>,
    keepalive: Option<tokio::time::Interval>,
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(bytes)) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        if let Some(keepalive) = self.keepalive.as_mut()
            && keepalive.poll_tick(cx).is_ready()
        {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                b": keep-alive\n\n",
            )))));
        }
        Poll::Pending
    }
}

fn sse_event(message: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {message}\n\n"))
}

fn json_body(value: &Value) -> SimBody {
    Full::new(Bytes::from(value.to_string())).boxed()
}

fn empty() -> SimBody {
    Empty::new().boxed()
}

fn json_response(status: StatusCode, value: &Value) -> Response<SimBody> {
    let mut resp = Response::new(json_body(value));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("static header"),
    );
    resp
}

/// A JSON-RPC error response in an HTTP error (or 200) status.
fn rpc_error(
    status: StatusCode,
    id: Value,
    code: i64,
    message: impl Into<String>,
    data: Option<Value>,
) -> Response<SimBody> {
    let mut error = json!({"code": code, "message": message.into()});
    if let Some(data) = data {
        error["data"] = data;
    }
    json_response(status, &json!({"jsonrpc": "2.0", "id": id, "error": error}))
}

/// An SSE response around `body`, with the headers streaming needs through proxies.
fn sse_response(body: SseBody) -> Response<SimBody> {
    let mut resp = Response::new(body.boxed());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        "text/event-stream".parse().expect("static header"),
    );
    h.insert(
        header::CACHE_CONTROL,
        "no-cache, no-transform".parse().expect("static header"),
    );
    h.insert("x-accel-buffering", "no".parse().expect("static header"));
    resp
}

/// A finite SSE response: the frames, then the end of the stream.
fn sse_frames(frames: Vec<Bytes>) -> Response<SimBody> {
    let (tx, rx) = mpsc::unbounded_channel();
    for frame in frames {
        let _ = tx.send(frame);
    }
    sse_response(SseBody {
        rx,
        keepalive: None,
    })
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn accepts(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| {
            let m = part.split(';').next().unwrap_or_default().trim();
            m.eq_ignore_ascii_case(media)
        })
}

fn origin_allowed(origin: &str) -> bool {
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    let host = if let Some(v6) = rest.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        rest.split(':').next().unwrap_or_default()
    };
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}

/// What a body says about itself, for the request log (best effort, never fails).
fn peek(body: &[u8]) -> (Option<String>, Option<String>, Option<Value>) {
    let Ok(Value::Object(msg)) = serde_json::from_slice::<Value>(body) else {
        return (None, None, None);
    };
    let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
    if method.as_deref() != Some("tools/call") {
        return (method, None, None);
    }
    let params = msg.get("params");
    let tool = params
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let args = params.and_then(|p| p.get("arguments")).cloned();
    (method, tool, args)
}

/// Entry point for every HTTP request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Ok(rpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Value::Null,
                -32000,
                format!("Payload Too Large: request body exceeds {MAX_BODY} bytes"),
                None,
            ));
        }
        Err(_) => {
            return Ok(rpc_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                -32000,
                "Bad Request: could not read the request body",
                None,
            ));
        }
    };

    let (rpc_method, tool, arguments) = peek(&body);
    let mut received = lock(&shared.received);
    if received.len() >= shared.cfg.record_limit.max(1) {
        received.pop_front();
    }
    received.push_back(ReceivedRequest {
        http_method: parts.method.to_string(),
        rpc_method,
        tool,
        arguments,
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.clone(),
    });
    drop(received);

    if parts.uri.path() != shared.cfg.path {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"Not Found")).boxed());
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return Ok(resp);
    }
    if let Some(fault) = shared.take_fault() {
        let status = StatusCode::from_u16(fault.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut resp = rpc_error(
            status,
            Value::Null,
            -32000,
            format!("simulated upstream failure: HTTP {}", status.as_u16()),
            None,
        );
        if let Some(secs) = fault.retry_after {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                secs.to_string().parse().expect("digits"),
            );
        }
        return Ok(resp);
    }

    let credentials = lock(&shared.credentials).clone();
    if let Some(credentials) = credentials {
        let expired = lock(&shared.expired_tokens).clone();
        let verifier = Verifier {
            credentials: &credentials,
            expired_tokens: &expired,
            region: &shared.cfg.region,
            service: &shared.cfg.service,
            now: SystemTime::now(),
        };
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let authority = parts.uri.authority().map(|a| a.as_str());
        match verifier.verify(
            parts.method.as_str(),
            authority,
            path_and_query,
            &parts.headers,
            &body,
        ) {
            Ok(()) => {
                shared.verified.fetch_add(1, Ordering::Relaxed);
            }
            Err(failure) => {
                shared.signature_failures.fetch_add(1, Ordering::Relaxed);
                let mut resp =
                    json_response(StatusCode::FORBIDDEN, &json!({"message": failure.message}));
                let h = resp.headers_mut();
                h.insert(
                    "x-amzn-errortype",
                    failure.error_type.parse().expect("static error type"),
                );
                if let Ok(id) = request_id().parse() {
                    h.insert("x-amzn-requestid", id);
                }
                return Ok(resp);
            }
        }
    }

    if let Some(origin) = parts.headers.get(header::ORIGIN)
        && !origin.to_str().is_ok_and(origin_allowed)
    {
        return Ok(rpc_error(
            StatusCode::FORBIDDEN,
            Value::Null,
            -32000,
            "Forbidden: Origin not allowed",
            None,
        ));
    }

    Ok(match parts.method {
        Method::POST => post(&shared, &parts.headers, &body),
        Method::GET => get(&shared, &parts.headers),
        Method::DELETE => delete(&shared, &parts.headers),
        _ => {
            let mut resp = rpc_error(
                StatusCode::METHOD_NOT_ALLOWED,
                Value::Null,
                -32000,
                "Method not allowed.",
                None,
            );
            resp.headers_mut().insert(
                header::ALLOW,
                "GET, POST, DELETE".parse().expect("static header"),
            );
            resp
        }
    })
}

fn request_id() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn new_session_id() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn post(shared: &Shared, headers: &HeaderMap, body: &Bytes) -> Response<SimBody> {
    if !(accepts(headers, "application/json") && accepts(headers, "text/event-stream")) {
        return rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            Value::Null,
            -32000,
            "Not Acceptable: Client must accept both application/json and text/event-stream",
            None,
        );
    }
    let content_type = header_str(headers, "content-type").unwrap_or_default();
    if !content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .eq_ignore_ascii_case("application/json")
    {
        return rpc_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Value::Null,
            -32000,
            "Unsupported Media Type: Content-Type must be application/json",
            None,
        );
    }
    let message: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                -32700,
                format!("Parse error: {e}"),
                None,
            );
        }
    };
    if message.is_array() {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            -32600,
            "Invalid Request: batch requests are not supported by this server",
            None,
        );
    }
    let Some(msg) = message.as_object() else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            -32600,
            "Invalid Request: expected a JSON-RPC message object",
            None,
        );
    };
    let id = msg.get("id").cloned();
    if msg.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            id.unwrap_or(Value::Null),
            -32600,
            "Invalid Request: jsonrpc must be \"2.0\"",
            None,
        );
    }
    if id
        .as_ref()
        .is_some_and(|id| !(id.is_string() || id.is_i64() || id.is_u64()))
    {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            -32600,
            "Invalid Request: id must be a string or an integer",
            None,
        );
    }
    let Some(method) = msg.get("method").and_then(Value::as_str) else {
        // A response to a server request: nothing is waiting for it here.
        return if id.is_some() && (msg.contains_key("result") || msg.contains_key("error")) {
            accepted(None)
        } else {
            rpc_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                -32600,
                "Invalid Request: missing method",
                None,
            )
        };
    };
    let params = match msg.get("params") {
        None | Some(Value::Null) => json!({}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                id.unwrap_or(Value::Null),
                -32602,
                "Invalid params: params must be an object",
                None,
            );
        }
    };
    let meta_version = params
        .get("_meta")
        .and_then(|m| m.get(META_VERSION))
        .cloned();
    if meta_version.is_some() || method == "server/discover" {
        stateless(shared, headers, id, method, &params, meta_version)
    } else {
        session_era(shared, headers, id, method, &params)
    }
}

fn accepted(session_id: Option<&str>) -> Response<SimBody> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::ACCEPTED;
    if let Some(sid) = session_id.and_then(|s| s.parse().ok()) {
        resp.headers_mut().insert("mcp-session-id", sid);
    }
    resp
}

/// Decode a `=?base64?…?=` header value.
fn decode_header_value(value: &str) -> Option<String> {
    match value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        None => Some(value.to_owned()),
    }
}

fn stateless(
    shared: &Shared,
    headers: &HeaderMap,
    id: Option<Value>,
    method: &str,
    params: &Value,
    meta_version: Option<Value>,
) -> Response<SimBody> {
    let Some(id) = id else {
        return accepted(None);
    };
    let mismatch =
        |message: String| rpc_error(StatusCode::BAD_REQUEST, id.clone(), -32020, message, None);
    let header_value = |name: &str| -> Result<Option<&str>, String> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(Some)
                .map_err(|_| format!("Header mismatch: {name} header contains invalid characters")),
        }
    };
    let body_version = match meta_version {
        None => None,
        Some(Value::String(v)) => Some(v),
        Some(_) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                id,
                -32602,
                format!("Invalid params: _meta[\"{META_VERSION}\"] must be a string"),
                None,
            );
        }
    };
    let header_version = match header_value("mcp-protocol-version") {
        Ok(v) => v,
        Err(m) => return mismatch(m),
    };
    let version = match (header_version, body_version.as_deref()) {
        (None, _) => {
            return mismatch(
                "Header mismatch: missing required MCP-Protocol-Version header".into(),
            );
        }
        (Some(h), Some(b)) if h != b => {
            return mismatch(format!(
                "Header mismatch: MCP-Protocol-Version header value '{h}' does not match body value '{b}'"
            ));
        }
        (Some(h), _) => h.to_owned(),
    };
    match header_value("mcp-method") {
        Err(m) => return mismatch(m),
        Ok(None) => return mismatch("Header mismatch: missing required Mcp-Method header".into()),
        Ok(Some(h)) if h != method => {
            return mismatch(format!(
                "Header mismatch: Mcp-Method header value '{h}' does not match body value '{method}'"
            ));
        }
        Ok(Some(_)) => {}
    }
    let name_field = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    if let Some(field) = name_field {
        let body_name = params[field].as_str().unwrap_or_default();
        match header_value("mcp-name") {
            Err(m) => return mismatch(m),
            Ok(None) => {
                return mismatch("Header mismatch: missing required Mcp-Name header".into());
            }
            Ok(Some(h)) => match decode_header_value(h) {
                Some(decoded) if decoded == body_name => {}
                Some(decoded) => {
                    return mismatch(format!(
                        "Header mismatch: Mcp-Name header value '{decoded}' does not match body value '{body_name}'"
                    ));
                }
                None => {
                    return mismatch(
                        "Header mismatch: Mcp-Name header has an invalid base64 value".into(),
                    );
                }
            },
        }
    }
    if !MODERN_VERSIONS.contains(&version.as_str()) {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            id,
            -32022,
            "Unsupported protocol version",
            Some(json!({"supported": rpc::supported_versions(), "requested": version})),
        );
    }
    if method == "subscriptions/listen" {
        return listen(shared, id, params);
    }
    let era = Era::Stateless;
    let handled = rpc::handle(shared, &era, method, params);
    let wants_progress = params.pointer("/_meta/progressToken").is_some();
    respond(shared, None, id, handled, wants_progress, true)
}

/// `subscriptions/listen`: a long-lived SSE response that acknowledges the honoured subset
/// of the requested notifications, then carries them, tagged with the subscription id,
/// until the client closes it. Only resource-list changes ever happen in the simulator.
fn listen(shared: &Shared, id: Value, params: &Value) -> Response<SimBody> {
    let requested = &params["notifications"];
    if !requested.is_object() {
        return rpc_error(
            StatusCode::OK,
            id,
            -32602,
            "Invalid params: subscriptions/listen requires a 'notifications' object",
            None,
        );
    }
    let resources_list_changed = requested["resourcesListChanged"] == true;
    let mut honoured = serde_json::Map::new();
    if resources_list_changed {
        honoured.insert("resourcesListChanged".into(), Value::Bool(true));
    }
    let ack = rpc::notification(
        "notifications/subscriptions/acknowledged",
        json!({"_meta": {"io.modelcontextprotocol/subscriptionId": id}, "notifications": honoured}),
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = tx.send(sse_event(&ack));
    lock(&shared.listeners).push(Listener {
        tx,
        subscription_id: id,
        resources_list_changed,
    });
    let period = shared.cfg.keepalive;
    let keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    sse_response(SseBody {
        rx,
        keepalive: Some(keepalive),
    })
}

fn session_era(
    shared: &Shared,
    headers: &HeaderMap,
    id: Option<Value>,
    method: &str,
    params: &Value,
) -> Response<SimBody> {
    if method == "initialize" {
        let Some(id) = id else {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                -32600,
                "Invalid Request: initialize must be a request with an id",
                None,
            );
        };
        let requested = params["protocolVersion"].as_str().unwrap_or_default();
        let version = if LEGACY_VERSIONS.contains(&requested) {
            requested
        } else {
            LEGACY_VERSIONS[LEGACY_VERSIONS.len() - 1]
        };
        let session_id = new_session_id();
        lock(&shared.sessions).insert(session_id.clone(), Session::new());
        let handled = Handled {
            outcome: Ok(rpc::initialize_result(version)),
            progress: Vec::new(),
            related: Vec::new(),
            broadcast: Vec::new(),
            set_log_level: None,
        };
        return respond(shared, Some(&session_id), id, handled, false, false);
    }
    let session_id = match session_of(shared, headers) {
        Ok(found) => found,
        Err(resp) => return resp,
    };
    let Some(id) = id else {
        // notifications/initialized, notifications/cancelled, …: nothing to answer.
        return accepted(Some(&session_id));
    };
    let log_level = lock(&shared.sessions)
        .get(&session_id)
        .map(|s| s.log_level)
        .unwrap_or(1);
    let era = Era::Session { log_level };
    let handled = rpc::handle(shared, &era, method, params);
    if let Some(level) = handled.set_log_level
        && let Some(s) = lock(&shared.sessions).get_mut(&session_id)
    {
        s.log_level = level;
    }
    let wants_progress = params.pointer("/_meta/progressToken").is_some();
    respond(
        shared,
        Some(&session_id),
        id,
        handled,
        wants_progress,
        false,
    )
}

/// Resolve the session of a non-initialize request: 400 without the header, 404 if unknown,
/// 400 on an unsupported `MCP-Protocol-Version`.
#[allow(clippy::result_large_err)]
fn session_of(shared: &Shared, headers: &HeaderMap) -> Result<String, Response<SimBody>> {
    let Some(session_id) = header_str(headers, "mcp-session-id") else {
        return Err(rpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            -32000,
            "Bad Request: Mcp-Session-Id header is required",
            None,
        ));
    };
    if !lock(&shared.sessions).contains_key(session_id) {
        return Err(rpc_error(
            StatusCode::NOT_FOUND,
            Value::Null,
            -32001,
            "Session not found",
            None,
        ));
    }
    if let Some(requested) = header_str(headers, "mcp-protocol-version")
        && !LEGACY_VERSIONS.contains(&requested)
    {
        return Err(rpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            -32000,
            format!(
                "Bad Request: Unsupported protocol version: {requested} (supported versions: {})",
                LEGACY_VERSIONS.join(", ")
            ),
            None,
        ));
    }
    Ok(session_id.to_owned())
}

/// Deliver the outcome of one request as JSON or SSE, routing notifications.
fn respond(
    shared: &Shared,
    session_id: Option<&str>,
    id: Value,
    handled: Handled,
    wants_progress: bool,
    stateless: bool,
) -> Response<SimBody> {
    let Handled {
        outcome,
        progress,
        related,
        broadcast,
        ..
    } = handled;
    let (status, message) = match outcome {
        Ok(result) => (
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": id, "result": result}),
        ),
        Err(RpcError {
            code,
            message,
            data,
        }) => {
            // 2026-07-28: an unknown method is HTTP 404 so era probes can tell.
            let status = if stateless && code == -32601 {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            };
            let mut error = json!({"code": code, "message": message});
            if let Some(data) = data {
                error["data"] = data;
            }
            (status, json!({"jsonrpc": "2.0", "id": id, "error": error}))
        }
    };

    let sse = status == StatusCode::OK
        && match shared.cfg.response_mode {
            ResponseMode::Json => false,
            ResponseMode::Sse => true,
            ResponseMode::Auto => wants_progress,
        };
    let mut resp = if sse {
        let frames = progress
            .iter()
            .chain(related.iter())
            .chain(std::iter::once(&message))
            .map(sse_event)
            .collect();
        sse_frames(frames)
    } else {
        // Without a response stream, messages about this request go to the session's
        // GET stream (queued until one is open); the stateless era has nowhere to put them.
        if let Some(sid) = session_id
            && let Some(session) = lock(&shared.sessions).get_mut(sid)
        {
            related.iter().for_each(|m| session.notify(m));
        }
        json_response(status, &message)
    };
    if !broadcast.is_empty() {
        let mut sessions = lock(&shared.sessions);
        for session in sessions.values_mut() {
            broadcast.iter().for_each(|m| session.notify(m));
        }
        drop(sessions);
        lock(&shared.listeners).retain(|l| broadcast.iter().all(|m| l.deliver(m)));
    }
    if let Some(sid) = session_id.and_then(|s| s.parse().ok()) {
        resp.headers_mut().insert("mcp-session-id", sid);
    }
    resp
}

fn get(shared: &Shared, headers: &HeaderMap) -> Response<SimBody> {
    if !accepts(headers, "text/event-stream") {
        return rpc_error(
            StatusCode::NOT_ACCEPTABLE,
            Value::Null,
            -32000,
            "Not Acceptable: Client must accept text/event-stream",
            None,
        );
    }
    let session_id = match session_of(shared, headers) {
        Ok(found) => found,
        Err(resp) => return resp,
    };
    let last_event_id =
        header_str(headers, "last-event-id").and_then(|v| v.trim().parse::<u64>().ok());
    let mut sessions = lock(&shared.sessions);
    let Some(session) = sessions.get_mut(&session_id) else {
        return rpc_error(
            StatusCode::NOT_FOUND,
            Value::Null,
            -32001,
            "Session not found",
            None,
        );
    };
    if session.stream.as_ref().is_some_and(|tx| !tx.is_closed()) {
        return rpc_error(
            StatusCode::CONFLICT,
            Value::Null,
            -32000,
            "Conflict: Only one SSE stream is allowed per session",
            None,
        );
    }
    let priming_id = session.allocate_id();
    let mut frames = vec![Bytes::from(format!(
        "retry: {RETRY_MS}\nid: {priming_id}\ndata: \n\n"
    ))];
    let after = last_event_id.unwrap_or(session.delivered);
    let mut last_sent = session.delivered;
    for (event_id, event) in session
        .history
        .iter()
        .filter(|(event_id, _)| *event_id > after)
    {
        frames.push(event.clone());
        last_sent = last_sent.max(*event_id);
    }
    let (tx, rx) = mpsc::unbounded_channel();
    for frame in frames {
        let _ = tx.send(frame);
    }
    let period = shared.cfg.keepalive;
    let keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut resp = sse_response(SseBody {
        rx,
        keepalive: Some(keepalive),
    });
    session.stream = Some(tx);
    session.delivered = last_sent;
    if let Ok(sid) = session_id.parse() {
        resp.headers_mut().insert("mcp-session-id", sid);
    }
    resp
}

fn delete(shared: &Shared, headers: &HeaderMap) -> Response<SimBody> {
    let Some(session_id) = header_str(headers, "mcp-session-id") else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            -32000,
            "Bad Request: Mcp-Session-Id header is required",
            None,
        );
    };
    match lock(&shared.sessions).remove(session_id) {
        Some(_) => Response::new(empty()),
        None => rpc_error(
            StatusCode::NOT_FOUND,
            Value::Null,
            -32001,
            "Session not found",
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_by_host() {
        assert!(origin_allowed("http://localhost:3000"));
        assert!(origin_allowed("https://127.0.0.1"));
        assert!(origin_allowed("http://[::1]:8080"));
        assert!(!origin_allowed("https://evil.example"));
        assert!(!origin_allowed("http://localhost.evil.example"));
        assert!(!origin_allowed("null"));
    }

    #[test]
    fn header_values_decode_base64_sentinels() {
        assert_eq!(
            decode_header_value("get_pod_logs").as_deref(),
            Some("get_pod_logs")
        );
        assert_eq!(
            decode_header_value("=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(),
            Some("Hello, 世界")
        );
        assert_eq!(decode_header_value("=?base64?!!?="), None);
    }

    #[test]
    fn accept_lists_are_parsed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            "application/json;q=0.9, text/event-stream".parse().unwrap(),
        );
        assert!(accepts(&h, "application/json") && accepts(&h, "text/event-stream"));
        assert!(!accepts(&h, "text/html"));
    }
}
