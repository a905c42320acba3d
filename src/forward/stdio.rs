//! The stdio upstream's Streamable HTTP face: the requests the pipeline forwards (POST, GET,
//! DELETE with MCP headers) answered over the one MCP session the gateway holds with the child
//! (`child`), so the stages before `forward` cannot tell it from the hosted server.
//!
//! Both front eras map onto that one session:
//! - session era: `initialize` is answered by the gateway from the child's own
//!   `InitializeResult` (the version the client asked for when it is a session-era version,
//!   else the child's) under a new `Mcp-Session-Id`; `notifications/initialized` stays here;
//!   a GET opens the session's stream of the child's notifications and requests; DELETE ends
//!   the session;
//! - stateless era (2026-07-28): `server/discover` is answered from the same facts, and results
//!   carry `resultType: complete` (list results `ttlMs: 0`, `cacheScope: private` when the
//!   child gave none).
//!
//! Across a child restart: calls in flight fail with -31010 (`upstream_unavailable`), open GET
//! streams end, and the sessions of the old child are gone, so a session-era client gets 404
//! on its next message and initializes again, as the transport specification prescribes for
//! an expired session (the old child's subscriptions and log level are gone with it).
//! Stateless clients only see the failed calls.
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, mpsc};

use super::child::{CHILD_PROTOCOL_VERSION, Call, Child, Route, Router, Status};
use super::{BodyError, UpstreamBody, UpstreamError};
use crate::config::UpstreamConfig;
use crate::drift::ToolsSeen;
use crate::jsonrpc;
use crate::mcp::{self, H_SESSION_ID, META_PROTOCOL_VERSION, STATELESS_VERSION};

/// Session-era versions the gateway answers `initialize` with when a client asks for them.
const SESSION_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", CHILD_PROTOCOL_VERSION];
/// Front sessions kept at once; the oldest without an open stream goes first.
const MAX_SESSIONS: usize = 10_000;
/// Comment lines on an idle GET stream, so proxies and the relay's idle timeout keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Messages buffered per GET stream before further ones are dropped for that client.
const STREAM_BUFFER: usize = 64;

/// The supervised child and the front sessions mapped onto it.
pub struct StdioUpstream {
    uri: Uri,
    child: Child,
    sessions: Arc<Sessions>,
    response_timeout: Duration,
    /// How long a request waits for a child that is (re)starting.
    ready_wait: Duration,
}

struct FrontSession {
    generation: u64,
    created: Instant,
    stream: Option<mpsc::Sender<Value>>,
}

/// Front sessions, and the child's messages routed to them.
struct Sessions {
    map: Mutex<HashMap<String, FrontSession>>,
    /// Asks the tool-list task to fetch `tools/list` again.
    refresh_tools: Notify,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, FrontSession>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Router for Sessions {
    fn to_session(&self, session: &str, msg: &Value) -> bool {
        self.lock()
            .get(session)
            .and_then(|s| s.stream.as_ref())
            .is_some_and(|tx| tx.try_send(msg.clone()).is_ok())
    }

    fn broadcast(&self, msg: &Value) {
        for s in self.lock().values() {
            if let Some(tx) = &s.stream {
                let _ = tx.try_send(msg.clone());
            }
        }
    }

    fn ready(&self, _generation: u64) {
        self.refresh_tools.notify_one();
    }

    fn gone(&self, generation: u64) {
        self.lock().retain(|_, s| s.generation != generation);
    }

    fn tools_changed(&self) {
        self.refresh_tools.notify_one();
    }
}

impl StdioUpstream {
    /// Start supervising `cfg.command` (the first start happens in the background).
    pub fn start(cfg: &UpstreamConfig, tools: Arc<ToolsSeen>) -> anyhow::Result<Arc<Self>> {
        let command = cfg
            .command
            .clone()
            .ok_or_else(|| anyhow::anyhow!("upstream.command is not set"))?;
        let uri: Uri = cfg.url.parse()?;
        let label = uri.host().unwrap_or("stdio-server").to_owned();
        let sessions = Arc::new(Sessions {
            map: Mutex::new(HashMap::new()),
            refresh_tools: Notify::new(),
        });
        let child = Child::start(command, label, cfg.max_message_bytes, sessions.clone());
        let upstream = Arc::new(StdioUpstream {
            uri,
            child,
            sessions,
            response_timeout: cfg.response_timeout,
            ready_wait: cfg.connect_timeout,
        });
        tokio::spawn(watch_tools(
            upstream.child.clone(),
            upstream.sessions.clone(),
            tools,
            cfg.response_timeout,
        ));
        Ok(upstream)
    }

    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// `/readyz`: ready once the child finished its handshake.
    pub fn readiness(&self) -> (bool, String) {
        let label = self.child.label();
        match self.child.status() {
            Status::Ready {
                generation, pid, ..
            } => (
                true,
                format!(
                    "stdio upstream {label} running (pid {pid}, start {generation}, {} call(s) in flight)",
                    self.child.in_flight()
                ),
            ),
            Status::Starting => (
                false,
                format!("stdio upstream {label} is starting (MCP handshake not finished)"),
            ),
            Status::Restarting {
                why,
                attempt,
                next_in,
            } => (
                false,
                format!(
                    "stdio upstream {label} is not running: {why}; restart attempt {attempt} in {next_in:?}"
                ),
            ),
            Status::Stopped => (false, format!("stdio upstream {label} was stopped")),
        }
    }

    /// Stop the child after the front has drained.
    pub async fn shutdown(&self) {
        self.child.shutdown().await;
    }

    /// One forwarded request, answered as a Streamable HTTP server would.
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let (parts, body) = req.into_parts();
        match parts.method {
            Method::POST => {
                let bytes = body
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                self.post(&parts.headers, &bytes).await
            }
            Method::GET => Ok(self.open_stream(&parts.headers)),
            Method::DELETE => Ok(self.end_session(&parts.headers)),
            _ => Ok(error(
                StatusCode::METHOD_NOT_ALLOWED,
                None,
                jsonrpc::INVALID_REQUEST,
                "use POST, GET or DELETE",
            )),
        }
    }

    async fn post(
        &self,
        headers: &HeaderMap,
        bytes: &[u8],
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let Ok(Value::Object(mut msg)) = serde_json::from_slice::<Value>(bytes) else {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                None,
                jsonrpc::PARSE_ERROR,
                "the body is not a JSON-RPC message",
            ));
        };
        let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
        let id = msg.get("id").cloned();
        let stateless = method.as_deref() == Some("server/discover")
            || msg
                .get("params")
                .and_then(|p| p.get("_meta"))
                .and_then(|m| m.get(META_PROTOCOL_VERSION))
                .is_some();
        let session = mcp::header_str(headers, H_SESSION_ID).map(str::to_owned);
        match (method.as_deref(), &id) {
            (Some("initialize"), Some(id)) if !stateless => return self.initialize(id, &msg).await,
            (Some("server/discover"), Some(id)) => return self.discover(id).await,
            _ => {}
        }
        if !stateless && let Err(resp) = self.check_session(session.as_deref(), id.as_ref()) {
            return Ok(resp);
        }
        match (method.as_deref(), id) {
            (Some(method), Some(_)) => {
                let method = method.to_owned();
                let streaming = accepts_sse(headers)
                    && msg
                        .get("params")
                        .and_then(|p| p.pointer("/_meta/progressToken"))
                        .is_some();
                let route = Route {
                    session: session.filter(|_| !stateless),
                    streaming,
                };
                let call = self.child.call(msg, route, self.ready_wait).await?;
                if streaming {
                    Ok(self.streamed(call, stateless, method))
                } else {
                    self.answer(call, stateless, &method).await
                }
            }
            (Some("notifications/initialized"), None) => Ok(accepted()),
            (Some("notifications/cancelled"), None) => {
                // Only a session's own calls can be cancelled by id (ids are the client's).
                let target = session.as_deref().and_then(|s| {
                    let client_id = msg.get("params")?.get("requestId")?;
                    self.child.gateway_id_of(s, client_id)
                });
                if let Some(gw) = target {
                    msg["params"]["requestId"] = json!(gw);
                    self.child.notify(msg).await?;
                }
                Ok(accepted())
            }
            (Some(_), None) => {
                self.child.notify(msg).await?;
                Ok(accepted())
            }
            (None, _) => {
                if !self.child.answer_server_request(msg).await {
                    tracing::debug!("a client answered a server request that is no longer pending");
                }
                Ok(accepted())
            }
        }
    }

    async fn initialize(
        &self,
        id: &Value,
        msg: &Map<String, Value>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let (generation, init) = self.child.ready(self.ready_wait).await?;
        let requested = msg
            .get("params")
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str);
        let version = match requested {
            Some(v) if SESSION_VERSIONS.contains(&v) => Value::String(v.to_owned()),
            _ => init
                .get("protocolVersion")
                .cloned()
                .unwrap_or_else(|| json!(CHILD_PROTOCOL_VERSION)),
        };
        let mut result = Map::new();
        result.insert("protocolVersion".into(), version);
        for key in ["capabilities", "serverInfo", "instructions"] {
            if let Some(v) = init.get(key) {
                result.insert(key.into(), v.clone());
            }
        }
        let session_id = hex::encode(rand::random::<[u8; 16]>());
        {
            let mut map = self.sessions.lock();
            if map.len() >= MAX_SESSIONS {
                let oldest = map
                    .iter()
                    .filter(|(_, s)| s.stream.is_none())
                    .min_by_key(|(_, s)| s.created)
                    .or_else(|| map.iter().min_by_key(|(_, s)| s.created))
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    map.remove(&k);
                }
            }
            map.insert(
                session_id.clone(),
                FrontSession {
                    generation,
                    created: Instant::now(),
                    stream: None,
                },
            );
        }
        let mut resp = json_body(
            StatusCode::OK,
            &jsonrpc::result_response(id, Value::Object(result)),
        );
        resp.headers_mut().insert(
            H_SESSION_ID,
            HeaderValue::from_str(&session_id).expect("hex is a valid header value"),
        );
        Ok(resp)
    }

    async fn discover(&self, id: &Value) -> Result<Response<UpstreamBody>, UpstreamError> {
        let (_, init) = self.child.ready(self.ready_wait).await?;
        let mut versions = vec![json!(STATELESS_VERSION)];
        versions.extend(SESSION_VERSIONS.iter().rev().map(|v| json!(v)));
        let mut result = Map::new();
        result.insert("supportedVersions".into(), Value::Array(versions));
        for key in ["capabilities", "serverInfo", "instructions"] {
            if let Some(v) = init.get(key) {
                result.insert(key.into(), v.clone());
            }
        }
        result.insert("resultType".into(), json!("complete"));
        Ok(json_body(
            StatusCode::OK,
            &jsonrpc::result_response(id, Value::Object(result)),
        ))
    }

    /// A session-era message must name a session of the running child.
    #[allow(clippy::result_large_err)]
    fn check_session(
        &self,
        session: Option<&str>,
        id: Option<&Value>,
    ) -> Result<(), Response<UpstreamBody>> {
        let Some(session) = session else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                id,
                jsonrpc::INVALID_REQUEST,
                "Bad Request: Mcp-Session-Id header is required (send initialize first)",
            ));
        };
        if self.sessions.lock().contains_key(session) {
            Ok(())
        } else {
            Err(session_not_found(id))
        }
    }

    /// A JSON answer: wait (bounded) for the child's response.
    async fn answer(
        &self,
        mut call: Call,
        stateless: bool,
        method: &str,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let outcome = tokio::time::timeout(self.response_timeout, &mut call.done).await;
        let mut msg = match outcome {
            // Dropping `call` cancels the request at the child.
            Err(_) => return Err(UpstreamError::Timeout(self.response_timeout)),
            Ok(Err(_)) => {
                return Err(UpstreamError::Unavailable(
                    "the upstream process dropped the request".into(),
                ));
            }
            Ok(Ok(r)) => r?,
        };
        call.answered();
        if stateless {
            mark_stateless(&mut msg, method);
        }
        Ok(json_body(StatusCode::OK, &msg))
    }

    /// An SSE answer: progress and server requests as they come, then the response.
    fn streamed(&self, call: Call, stateless: bool, method: String) -> Response<UpstreamBody> {
        struct St {
            call: Call,
            related: Option<mpsc::Receiver<Value>>,
            done: bool,
            stateless: bool,
            method: String,
            client_id: Value,
        }
        let mut call = call;
        let related = call.related.take();
        let st = St {
            call,
            related,
            done: false,
            stateless,
            method,
            client_id: Value::Null,
        };
        let stream = futures_util::stream::unfold(st, |mut st| async move {
            if st.done {
                return None;
            }
            let next = match st.related.as_mut() {
                Some(rx) => tokio::select! {
                    biased;
                    m = rx.recv() => match m {
                        Some(m) => Some(m),
                        None => { st.related = None; None }
                    },
                    r = &mut st.call.done => { st.done = true; Some(final_message(r, &st.client_id)) }
                },
                None => {
                    let r = (&mut st.call.done).await;
                    st.done = true;
                    Some(final_message(r, &st.client_id))
                }
            };
            let mut msg = match next {
                Some(m) => m,
                None => Value::Null,
            };
            if st.done {
                st.call.answered();
                if st.stateless {
                    mark_stateless(&mut msg, &st.method);
                }
            }
            if msg.is_null() {
                // The related channel closed; the next turn waits for the answer.
                return Some((Ok::<_, BodyError>(Frame::data(Bytes::new())), st));
            }
            let event = format!("event: message\ndata: {msg}\n\n");
            Some((Ok(Frame::data(Bytes::from(event))), st))
        });
        Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "text/event-stream")
            .header(http::header::CACHE_CONTROL, "no-cache")
            .body(StreamBody::new(stream).boxed_unsync())
            .expect("valid response")
    }

    /// GET: the session's stream of the child's notifications and requests.
    fn open_stream(&self, headers: &HeaderMap) -> Response<UpstreamBody> {
        let Some(session) = mcp::header_str(headers, H_SESSION_ID) else {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                None,
                jsonrpc::INVALID_REQUEST,
                "a GET stream needs an Mcp-Session-Id (session era); stateless clients use subscriptions/listen",
            );
        };
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        match self.sessions.lock().get_mut(session) {
            Some(s) => s.stream = Some(tx),
            None => return session_not_found(None),
        }
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            let chunk = match tokio::time::timeout(KEEPALIVE, rx.recv()).await {
                Err(_) => Bytes::from_static(b": keep-alive\n\n"),
                Ok(None) => return None,
                Ok(Some(msg)) => Bytes::from(format!("event: message\ndata: {msg}\n\n")),
            };
            Some((Ok::<_, BodyError>(Frame::data(chunk)), rx))
        });
        Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "text/event-stream")
            .header(http::header::CACHE_CONTROL, "no-cache")
            .body(StreamBody::new(stream).boxed_unsync())
            .expect("valid response")
    }

    fn end_session(&self, headers: &HeaderMap) -> Response<UpstreamBody> {
        let removed = mcp::header_str(headers, H_SESSION_ID)
            .and_then(|s| self.sessions.lock().remove(s))
            .is_some();
        if removed {
            Response::builder()
                .status(StatusCode::OK)
                .body(empty())
                .expect("valid response")
        } else {
            session_not_found(None)
        }
    }
}

/// Fetch the child's whole `tools/list` (every page) at each start and after each
/// `notifications/tools/list_changed`, for drift reports and `Mcp-Param-*` checks.
async fn watch_tools(
    child: Child,
    sessions: Arc<Sessions>,
    tools: Arc<ToolsSeen>,
    timeout: Duration,
) {
    loop {
        sessions.refresh_tools.notified().await;
        match list_tools(&child, timeout).await {
            Ok(list) => tools.observe(list),
            Err(e) => {
                tracing::warn!(upstream = %child.label(), error = %e, "could not read the upstream's tools/list")
            }
        }
    }
}

async fn list_tools(child: &Child, timeout: Duration) -> Result<Vec<Value>, UpstreamError> {
    let mut all = Vec::new();
    let mut cursor: Option<Value> = None;
    for page in 0..100u32 {
        let mut params = Map::new();
        if let Some(c) = cursor.take() {
            params.insert("cursor".into(), c);
        }
        let msg = json!({"jsonrpc": "2.0", "id": format!("gw-tools-{page}"), "method": "tools/list", "params": params});
        let Value::Object(msg) = msg else {
            unreachable!("a JSON object literal")
        };
        let mut call = child.call(msg, Route::default(), timeout).await?;
        let answer = tokio::time::timeout(timeout, &mut call.done)
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))?
            .map_err(|_| UpstreamError::Unavailable("the upstream process went away".into()))??;
        call.answered();
        let result = answer
            .get("result")
            .ok_or_else(|| UpstreamError::BadResponse(format!("tools/list failed: {answer}")))?;
        if let Some(Value::Array(tools)) = result.get("tools") {
            all.extend(tools.iter().cloned());
        }
        match result.get("nextCursor") {
            Some(c) if !c.is_null() => cursor = Some(c.clone()),
            _ => return Ok(all),
        }
    }
    Err(UpstreamError::BadResponse(
        "tools/list did not end after 100 pages".into(),
    ))
}

fn final_message(
    r: Result<Result<Value, UpstreamError>, tokio::sync::oneshot::error::RecvError>,
    client_id: &Value,
) -> Value {
    match r {
        Ok(Ok(msg)) => msg,
        Ok(Err(e)) => e.to_jsonrpc(Some(client_id)),
        Err(_) => UpstreamError::Unavailable("the upstream process dropped the request".into())
            .to_jsonrpc(Some(client_id)),
    }
}

/// What a 2026-07-28 client expects on a result the session-era child produced.
fn mark_stateless(msg: &mut Value, method: &str) {
    let Some(result) = msg.get_mut("result").and_then(Value::as_object_mut) else {
        return;
    };
    result
        .entry("resultType")
        .or_insert_with(|| json!("complete"));
    if matches!(
        method,
        "tools/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
            | "prompts/list"
    ) {
        result.entry("ttlMs").or_insert_with(|| json!(0));
        result
            .entry("cacheScope")
            .or_insert_with(|| json!("private"));
    }
}

fn accepts_sse(headers: &HeaderMap) -> bool {
    mcp::header_str(headers, "accept").is_some_and(|a| a.contains("text/event-stream"))
}

fn session_not_found(id: Option<&Value>) -> Response<UpstreamBody> {
    error(
        StatusCode::NOT_FOUND,
        id,
        jsonrpc::INVALID_REQUEST,
        "Session not found: it ended, or the upstream process restarted since it began; send initialize again",
    )
}

fn error(
    status: StatusCode,
    id: Option<&Value>,
    code: i64,
    message: &str,
) -> Response<UpstreamBody> {
    json_body(status, &jsonrpc::error_response(id, code, message, None))
}

fn json_body(status: StatusCode, v: &Value) -> Response<UpstreamBody> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(
            Full::new(Bytes::from(
                serde_json::to_vec(v).expect("JSON value serialises"),
            ))
            .map_err(|e: Infallible| match e {})
            .boxed_unsync(),
        )
        .expect("valid response")
}

fn accepted() -> Response<UpstreamBody> {
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .body(empty())
        .expect("valid response")
}

fn empty() -> UpstreamBody {
    http_body_util::Empty::new()
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}
