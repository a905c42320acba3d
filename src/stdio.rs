//! `eks-mcp-gateway stdio`: the gateway as a local command that an assistant launches, in
//! place of `mcp-proxy-for-aws`, speaking MCP over its stdin and stdout.
//!
//! Every line on stdin is one JSON-RPC message. It takes exactly the path an HTTP request
//! takes (authentication, strict parsing, policy, signing, redaction, audit): the stdio front
//! is an HTTP/2 client of the gateway's own front over an in-memory pipe. No port is opened,
//! so no other local process can borrow the caller's identity. Each message the front answers
//! with (one JSON document, or any number of SSE events) goes to stdout as one line; logs go to
//! stderr.
//!
//! The session era works as a stateful client of the front would: the `Mcp-Session-Id` of the
//! `initialize` answer and the negotiated protocol version go with every later message, the
//! server's own messages (elicitation, notifications) arrive through the GET stream opened
//! after `notifications/initialized`, and the session is ended with DELETE when stdin closes.
//! A stateless-era message (protocol version in `_meta`) gets the `Mcp-Method` / `Mcp-Name` /
//! `MCP-Protocol-Version` headers from its own body. With JWT or API-key authentication the
//! credential comes from the file named by `EKS_MCP_GATEWAY_TOKEN_FILE` (read again for every
//! message, so a short-lived token can be rotated) or from `EKS_MCP_GATEWAY_TOKEN`.
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::mcp::{H_METHOD, H_NAME, H_PROTOCOL_VERSION, H_SESSION_ID, META_PROTOCOL_VERSION};
use crate::pipeline::Gateway;

/// Environment variable holding the bearer token (JWT or API key) sent with every message.
pub const TOKEN_ENV: &str = "EKS_MCP_GATEWAY_TOKEN";
/// Environment variable naming a file that holds the token, read again for every message, so
/// a credential helper can rotate a short-lived JWT underneath a running session.
pub const TOKEN_FILE_ENV: &str = "EKS_MCP_GATEWAY_TOKEN_FILE";

/// The credential the stdio front presents for its caller.
#[derive(Clone, Default)]
pub enum Credential {
    /// None: for `auth.mode: static`.
    #[default]
    None,
    /// One token for the whole process.
    Token(String),
    /// A file holding the token, read for every message.
    File(std::path::PathBuf),
}

/// Never prints the token itself, so a credential cannot reach a log through `{:?}`.
impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::None => f.write_str("Credential::None"),
            Credential::Token(_) => f.write_str("Credential::Token(<redacted>)"),
            Credential::File(path) => write!(f, "Credential::File({})", path.display()),
        }
    }
}

impl Credential {
    /// From `EKS_MCP_GATEWAY_TOKEN_FILE`, else `EKS_MCP_GATEWAY_TOKEN`.
    pub fn from_env() -> Credential {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        match (var(TOKEN_FILE_ENV), var(TOKEN_ENV)) {
            (Some(path), _) => Credential::File(path.into()),
            (None, Some(token)) => Credential::Token(token.trim().to_string()),
            (None, None) => Credential::None,
        }
    }

    fn current(&self) -> Option<String> {
        match self {
            Credential::None => None,
            Credential::Token(t) => Some(t.clone()),
            Credential::File(path) => match std::fs::read_to_string(path) {
                Ok(text) => Some(text.trim().to_string()).filter(|t| !t.is_empty()),
                Err(e) => {
                    // The request goes without a credential and the front refuses it with
                    // 401, which reaches the client as an error naming the variables.
                    tracing::warn!(path = %path.display(), error = %e, "cannot read the token file ({TOKEN_FILE_ENV})");
                    None
                }
            },
        }
    }
}

/// JSON-RPC code for a failure inside the gateway itself (the front could not be reached).
const INTERNAL_ERROR: i64 = -32603;

/// Serve MCP on this process's stdin and stdout until stdin closes or a signal arrives.
pub async fn run(gateway: Arc<Gateway>) -> anyhow::Result<()> {
    let token = Credential::from_env();
    let stop = crate::front::shutdown_signal();
    serve(
        gateway.clone(),
        tokio::io::stdin(),
        tokio::io::stdout(),
        token,
        stop,
    )
    .await?;
    gateway.upstream.shutdown().await;
    crate::front::flush_audit(&gateway).await;
    Ok(())
}

/// The session state a stateful MCP client keeps.
#[derive(Default)]
struct Session {
    id: Option<String>,
    version: Option<String>,
    get_stream: bool,
}

struct Front {
    sender: SendRequest<Full<Bytes>>,
    path: String,
    host: String,
    token: Credential,
    session: Mutex<Session>,
    out: mpsc::Sender<String>,
    /// The task relaying the session's GET stream; stopped when the session ends.
    get_stream: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Pause before reopening a GET stream the server closed.
const GET_STREAM_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Serve MCP read from `input`, answers written to `output`, until `input` ends or `stop`
/// resolves. In-flight messages are answered (within `limits.shutdown_grace`) before the
/// session is ended and this returns.
pub async fn serve<R, W>(
    gateway: Arc<Gateway>,
    input: R,
    output: W,
    token: Credential,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let max_line = gateway.config.limits.max_body_bytes;
    let grace = gateway.config.limits.shutdown_grace;
    let sender = connect(gateway.clone()).await?;
    let (out, rx) = mpsc::channel::<String>(1024);
    let writer = tokio::spawn(write_lines(output, rx));
    let front = Arc::new(Front {
        sender,
        path: gateway.config.mcp_path.clone(),
        host: gateway
            .config
            .security
            .allowed_hosts
            .first()
            .cloned()
            .unwrap_or_else(|| "localhost".to_string()),
        token,
        session: Mutex::new(Session::default()),
        out,
        get_stream: Mutex::new(None),
    });

    let mut lines = LineReader::new(input, max_line);
    let mut tasks = JoinSet::new();
    tokio::pin!(stop);
    loop {
        let next = tokio::select! {
            next = lines.next() => next,
            () = &mut stop => break,
            // Reap finished messages as they go, so a long session does not pile them up.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        match next {
            Ok(None) => break,
            Ok(Some(Ok(line))) => {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if is_initialize(&line) {
                    // Later messages need the session it opens: answer it before reading on.
                    front.clone().message(line).await;
                } else {
                    tasks.spawn(front.clone().message(line));
                }
            }
            Ok(Some(Err(TooLong))) => {
                front
                    .emit(error_message(
                        &Value::Null,
                        crate::jsonrpc::INVALID_REQUEST,
                        &format!(
                            "message larger than {max_line} bytes (limits.max_body_bytes); it was not forwarded"
                        ),
                    ))
                    .await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading stdin failed; ending the session");
                break;
            }
        }
    }
    // Answer what is in flight, then end the session upstream.
    if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "shutdown grace period elapsed; abandoning unanswered messages"
        );
        tasks.abort_all();
    }
    if let Some(task) = front.get_stream.lock().expect("get stream lock").take() {
        task.abort();
    }
    front.end_session().await;
    drop(front);
    let _ = writer.await;
    Ok(())
}

/// A line longer than the limit (skipped up to its newline).
pub(crate) struct TooLong;

/// Lines of at most `max` bytes, read without ever holding more than that. Cancel-safe: a
/// partly read line stays in the reader when `next` is dropped in a `select!`.
pub(crate) struct LineReader<R> {
    inner: BufReader<R>,
    max: usize,
    line: Vec<u8>,
    /// Inside a line that went over `max`: drop bytes up to its newline.
    discarding: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(crate) fn new(input: R, max: usize) -> Self {
        LineReader {
            inner: BufReader::new(input),
            max,
            line: Vec::new(),
            discarding: false,
        }
    }

    /// The next line without its `\n` (and `\r`), `Err(TooLong)` for one over the limit,
    /// `None` at the end of the input.
    pub(crate) async fn next(&mut self) -> std::io::Result<Option<Result<Bytes, TooLong>>> {
        loop {
            let chunk = self.inner.fill_buf().await?;
            if chunk.is_empty() {
                if self.discarding {
                    self.discarding = false;
                    return Ok(Some(Err(TooLong)));
                }
                if self.line.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(Ok(self.take())));
            }
            let (part, used, ends) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], i + 1, true),
                None => (chunk, chunk.len(), false),
            };
            if !self.discarding {
                if self.line.len() + part.len() > self.max {
                    self.discarding = true;
                    self.line = Vec::new();
                } else {
                    self.line.extend_from_slice(part);
                }
            }
            self.inner.consume(used);
            if ends {
                if self.discarding {
                    self.discarding = false;
                    return Ok(Some(Err(TooLong)));
                }
                return Ok(Some(Ok(self.take())));
            }
        }
    }

    fn take(&mut self) -> Bytes {
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Bytes::from(line)
    }
}

/// An HTTP/2 connection to the gateway's own front over an in-memory pipe.
async fn connect(gateway: Arc<Gateway>) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let (client_io, server_io) = tokio::io::duplex(256 * 1024);
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let front = crate::front::Front::new(gateway, crate::front::Role::Mcp { with_ops: false });
    let stack = front.connection(crate::front::Connection {
        peer: loopback,
        local: loopback,
    });
    let svc = hyper::service::service_fn(move |req| {
        use tower::ServiceExt as _;
        stack.clone().oneshot(req)
    });
    tokio::spawn(async move {
        let mut server = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        server.timer(TokioTimer::new()).max_concurrent_streams(1024);
        if let Err(e) = server.serve_connection(TokioIo::new(server_io), svc).await {
            tracing::debug!(error = %e, "stdio front connection ended");
        }
    });
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client_io))
            .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "stdio front client connection ended");
        }
    });
    Ok(sender)
}

async fn write_lines<W: AsyncWrite + Unpin>(mut output: W, mut rx: mpsc::Receiver<String>) {
    while let Some(line) = rx.recv().await {
        let mut buf = line.into_bytes();
        buf.push(b'\n');
        if output.write_all(&buf).await.is_err() || output.flush().await.is_err() {
            // The client went away; nothing more can be delivered.
            return;
        }
    }
}

impl Front {
    /// Forward one message and write whatever comes back.
    async fn message(self: Arc<Self>, line: Bytes) {
        let parsed: Option<Value> = serde_json::from_slice(&line).ok();
        let method = parsed
            .as_ref()
            .and_then(|v| v.get("method"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let id = parsed
            .as_ref()
            .filter(|_| method.is_some())
            .and_then(|v| v.get("id"))
            .cloned();
        let meta_version = parsed
            .as_ref()
            .and_then(|v| v.pointer("/params/_meta"))
            .and_then(|m| m.get(META_PROTOCOL_VERSION))
            .and_then(Value::as_str)
            .map(str::to_owned);

        let mut req = self.request(Method::POST, meta_version.is_some());
        let headers = req.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(v) = meta_version
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert(H_PROTOCOL_VERSION, v);
        }
        if let Some(m) = method
            .as_deref()
            .and_then(|m| HeaderValue::from_str(m).ok())
        {
            headers.insert(H_METHOD, m);
        }
        if matches!(
            method.as_deref(),
            Some("tools/call" | "resources/read" | "prompts/get")
        ) && let Some(name) = parsed
            .as_ref()
            .and_then(|v| v.get("params"))
            .and_then(|p| p.get("name").or_else(|| p.get("uri")))
            .and_then(Value::as_str)
        {
            headers.insert(H_NAME, header_value(name));
        }
        *req.body_mut() = Full::new(line);

        let resp = match self.sender.clone().send_request(req).await {
            Ok(resp) => resp,
            Err(e) => {
                if let Some(id) = &id {
                    let text = format!("the gateway could not take the message: {e}");
                    self.emit(error_message(id, INTERNAL_ERROR, &text)).await;
                }
                return;
            }
        };
        let initialize = method.as_deref() == Some("initialize");
        if initialize
            && resp.status().is_success()
            && let Some(sid) = resp
                .headers()
                .get(H_SESSION_ID)
                .and_then(|v| v.to_str().ok())
        {
            self.session.lock().expect("session lock").id = Some(sid.to_owned());
        }
        let watch_for_version = if initialize { id.clone() } else { None };
        self.relay(resp, id.as_ref(), watch_for_version).await;

        // The client has finished initializing: open the stream the server talks on.
        if method.as_deref() == Some("notifications/initialized") {
            self.clone().open_get_stream();
        }
    }

    /// A request to the front with the session's headers (not for stateless-era messages).
    fn request(&self, method: Method, stateless: bool) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.method_mut() = method;
        *req.uri_mut() = self
            .path
            .parse()
            .unwrap_or_else(|_| "/mcp".parse().expect("uri"));
        let headers = req.headers_mut();
        if let Ok(host) = HeaderValue::from_str(&self.host) {
            headers.insert(header::HOST, host);
        }
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        if let Some(token) = self.token.current()
            && let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            headers.insert(header::AUTHORIZATION, v);
        }
        if !stateless {
            let session = self.session.lock().expect("session lock");
            if let Some(v) = session
                .id
                .as_deref()
                .and_then(|s| HeaderValue::from_str(s).ok())
            {
                headers.insert(H_SESSION_ID, v);
            }
            if let Some(v) = session
                .version
                .as_deref()
                .and_then(|s| HeaderValue::from_str(s).ok())
            {
                headers.insert(H_PROTOCOL_VERSION, v);
            }
        }
        req
    }

    /// Write the messages of one answer: a JSON document, SSE events, or for an HTTP error
    /// without a JSON-RPC body, an error for the request that caused it.
    async fn relay(
        &self,
        resp: Response<Incoming>,
        id: Option<&Value>,
        watch_for_version: Option<Value>,
    ) {
        let status = resp.status();
        if status == StatusCode::ACCEPTED {
            return;
        }
        let challenged = resp.headers().contains_key(header::WWW_AUTHENTICATE);
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut body = resp.into_body();
        if content_type.starts_with("text/event-stream") {
            let mut parser = crate::sse::SseParser::new(usize::MAX);
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    break;
                };
                let Some(chunk) = frame.data_ref() else {
                    continue;
                };
                let Ok(items) = parser.push(chunk) else {
                    break;
                };
                for item in items {
                    if let crate::sse::SseItem::Event(ev) = item
                        && !ev.data.trim().is_empty()
                    {
                        self.deliver(&ev.data, watch_for_version.as_ref()).await;
                    }
                }
            }
            return;
        }
        let bytes = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                if let Some(id) = id {
                    let text = format!("the answer was cut off: {e}");
                    self.emit(error_message(id, INTERNAL_ERROR, &text)).await;
                }
                return;
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        if content_type.starts_with("application/json") && !text.trim().is_empty() {
            match (id, serde_json::from_str::<Value>(&text)) {
                // An error the front gave before it read the message (authentication,
                // overload) carries no id; over stdio it answers this request.
                (Some(id), Ok(mut v))
                    if !status.is_success() && v.get("id").is_none_or(Value::is_null) =>
                {
                    v["id"] = id.clone();
                    if challenged
                        && let Some(m) = v.pointer_mut("/error/message")
                        && let Some(text) = m.as_str()
                    {
                        *m = Value::from(format!(
                            "{text} (the stdio front sends the credential in {TOKEN_ENV} or the file named by {TOKEN_FILE_ENV})"
                        ));
                    }
                    self.emit(v.to_string()).await;
                }
                _ => self.deliver(&text, watch_for_version.as_ref()).await,
            }
        } else if let Some(id) = id {
            let detail = text.trim();
            let message = format!(
                "the gateway answered HTTP {}{}{}",
                status.as_u16(),
                if detail.is_empty() { "" } else { ": " },
                detail
            );
            self.emit(error_message(id, INTERNAL_ERROR, &message)).await;
        }
    }

    /// One JSON-RPC message to stdout, as one line. The answer to `initialize` also sets the
    /// protocol version later messages carry.
    async fn deliver(&self, text: &str, watch_for_version: Option<&Value>) {
        let value: Option<Value> = serde_json::from_str(text).ok();
        if let (Some(id), Some(v)) = (watch_for_version, value.as_ref())
            && v.get("id") == Some(id)
            && let Some(version) = v.pointer("/result/protocolVersion").and_then(Value::as_str)
        {
            self.session.lock().expect("session lock").version = Some(version.to_owned());
        }
        let line = match value {
            // A line must not contain a newline; compact JSON never does.
            Some(v) if text.contains('\n') => v.to_string(),
            _ => text.to_owned(),
        };
        self.emit(line).await;
    }

    async fn emit(&self, line: String) {
        let _ = self.out.send(line).await;
    }

    /// Open the GET stream of a session (once) and relay what the server sends on it. A
    /// stream the server ends is reopened after a pause, for as long as the server accepts it
    /// (a server without a GET stream answers 405 once and is left alone).
    fn open_get_stream(self: Arc<Self>) {
        {
            let mut session = self.session.lock().expect("session lock");
            if session.id.is_none() || session.get_stream {
                return;
            }
            session.get_stream = true;
        }
        let front = self.clone();
        let task = tokio::spawn(async move {
            loop {
                let mut req = front.request(Method::GET, false);
                req.headers_mut().insert(
                    header::ACCEPT,
                    HeaderValue::from_static("text/event-stream"),
                );
                match front.sender.clone().send_request(req).await {
                    Ok(resp) if resp.status().is_success() => front.relay(resp, None, None).await,
                    Ok(resp) => {
                        tracing::debug!(status = %resp.status(), "the server offers no GET stream");
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "opening the GET stream failed");
                        return;
                    }
                }
                tokio::time::sleep(GET_STREAM_RETRY).await;
            }
        });
        *self.get_stream.lock().expect("get stream lock") = Some(task);
    }

    /// DELETE the session, if there is one, so the upstream can free it.
    async fn end_session(&self) {
        if self.session.lock().expect("session lock").id.is_none() {
            return;
        }
        let req = self.request(Method::DELETE, false);
        match self.sender.clone().send_request(req).await {
            Ok(resp) => {
                let _ = resp.into_body().collect().await;
            }
            Err(e) => tracing::debug!(error = %e, "ending the session failed"),
        }
    }
}

/// An `initialize` request (a cheap test first: most lines are not).
fn is_initialize(line: &[u8]) -> bool {
    line.windows(12).any(|w| w == b"\"initialize\"")
        && serde_json::from_slice::<Value>(line)
            .ok()
            .is_some_and(|v| v.get("method").and_then(Value::as_str) == Some("initialize"))
}

/// A header value for `name`: as it is when header-safe, else the `=?base64?…?=` form.
fn header_value(name: &str) -> HeaderValue {
    let plain = name.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !name.starts_with(' ')
        && !name.ends_with(' ')
        && !name.starts_with("=?");
    if plain && let Ok(v) = HeaderValue::from_str(name) {
        return v;
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(name.as_bytes());
    HeaderValue::from_str(&format!("=?base64?{encoded}?=")).expect("base64 is header-safe")
}

fn error_message(id: &Value, code: i64, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_never_prints_its_token() {
        let shown = format!("{:?}", Credential::Token("key-secret-0001".into()));
        assert!(!shown.contains("key-secret-0001"), "{shown}");
        assert_eq!(shown, "Credential::Token(<redacted>)");
    }

    #[tokio::test]
    async fn lines_are_bounded_and_a_long_one_is_skipped_whole() {
        let input: &[u8] =
            b"{\"a\":1}\r\n\n0123456789abcdef-too-long\n{\"b\":2}\nlast-without-newline";
        let mut r = LineReader::new(input, 12);
        let mut got = Vec::new();
        while let Some(line) = r.next().await.unwrap() {
            got.push(line.map(|b| String::from_utf8(b.to_vec()).unwrap()).ok());
        }
        assert_eq!(
            got,
            vec![
                Some("{\"a\":1}".to_string()),
                Some(String::new()),
                None,
                Some("{\"b\":2}".to_string()),
                None,
            ]
        );
        // The last line is 20 bytes, over the limit of 12 even without its newline.
        let mut r = LineReader::new(&b"short"[..], 12);
        assert_eq!(r.next().await.unwrap().unwrap().ok().unwrap(), "short");
        assert!(r.next().await.unwrap().is_none());
    }

    #[test]
    fn names_that_are_not_header_safe_are_base64_encoded() {
        assert_eq!(header_value("get_pod_logs"), "get_pod_logs");
        let v = header_value("ünïcode");
        let decoded = crate::mcp::decode_header_value(v.to_str().unwrap()).unwrap();
        assert_eq!(decoded, "ünïcode");
        let v = header_value("line\nbreak");
        assert!(v.to_str().unwrap().starts_with("=?base64?"));
        assert_eq!(
            crate::mcp::decode_header_value(header_value("=?x").to_str().unwrap()).unwrap(),
            "=?x"
        );
    }
}
