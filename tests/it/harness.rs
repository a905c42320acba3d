//! Test harness: the embedded EKS-like upstream and a gateway in front of it, in-process, on
//! 127.0.0.1 ephemeral ports, plus a small MCP-over-HTTP client that speaks both eras.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use bytes::Bytes;
use eks_mcp_gateway::config::{AuthConfig, Config, PolicyMode};
use eks_mcp_gateway::pipeline::{BuildOptions, Gateway};
use eks_mcp_gateway::sim::{self, SimConfig, SimCredentials, SimHandle};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

pub const ACCESS_KEY: &str = "AKIATESTGATEWAY00001";
pub const SECRET_KEY: &str = "test/secret/key/for/the/embedded/upstream";
pub const SESSION_TOKEN: &str = "FwoGZXIvYXdzEBAaDtest-session-token";
pub const REGION: &str = "us-west-2";
pub const STATELESS: &str = "2026-07-28";
pub const SESSION_ERA: &str = "2025-11-25";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn policy_dir() -> PathBuf {
    repo_root().join("policies")
}

/// A last-minute change to the gateway configuration.
pub type ConfigTweak = Box<dyn FnOnce(&mut Config) + Send>;

/// How to start a harness.
pub struct Options {
    pub principal: String,
    pub groups: Vec<String>,
    pub mode: PolicyMode,
    pub sim: SimConfig,
    /// Sim verifies SigV4 and the gateway signs (with a session token).
    pub signing: bool,
    /// When signing: where the gateway's credentials come from (default: the sim's own
    /// static credentials).
    pub credentials: Option<SharedCredentialsProvider>,
    pub policy_dir: PathBuf,
    /// Last-minute changes to the gateway configuration.
    pub tweak: Option<ConfigTweak>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            principal: "alice@example.com".into(),
            groups: vec!["platform-admins".into()],
            mode: PolicyMode::Enforce,
            sim: SimConfig::default(),
            signing: true,
            credentials: None,
            policy_dir: policy_dir(),
            tweak: None,
        }
    }
}

impl Options {
    pub fn principal(mut self, id: &str, groups: &[&str]) -> Self {
        self.principal = id.into();
        self.groups = groups.iter().map(|g| g.to_string()).collect();
        self
    }
    pub fn tweak(mut self, f: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.tweak = Some(Box::new(f));
        self
    }
}

/// A running upstream + gateway pair.
pub struct Harness {
    pub sim: SimHandle,
    pub gateway: Arc<Gateway>,
    pub addr: SocketAddr,
    pub audit_path: PathBuf,
    guard: GatewayGuard,
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(mut opts: Options) -> Harness {
        if opts.signing {
            opts.sim.credentials = Some(SimCredentials {
                access_key_id: ACCESS_KEY.into(),
                secret_access_key: SECRET_KEY.into(),
                session_token: Some(SESSION_TOKEN.into()),
            });
            opts.sim.region = REGION.into();
        }
        let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = sim::start(opts.sim, sim_listener).await.unwrap();
        let credentials = match (opts.signing, opts.credentials) {
            (false, _) => None,
            (true, Some(provider)) => Some(provider),
            (true, None) => Some(SharedCredentialsProvider::new(Credentials::new(
                ACCESS_KEY,
                SECRET_KEY,
                Some(SESSION_TOKEN.into()),
                None,
                "test",
            ))),
        };
        Self::start_in_front_of(
            sim,
            credentials,
            opts.principal,
            opts.groups,
            opts.mode,
            opts.policy_dir,
            opts.tweak,
        )
        .await
    }

    /// A gateway in front of an upstream that is not the sim (fault tests, third-party servers).
    pub async fn in_front_of_url(
        url: &str,
        tweak: Option<ConfigTweak>,
    ) -> (Arc<Gateway>, SocketAddr, GatewayGuard) {
        let audit_dir = tempfile::tempdir().unwrap();
        let mut cfg = base_config(
            url,
            "alice@example.com",
            &["platform-admins".to_string()],
            PolicyMode::Enforce,
            &policy_dir(),
            &audit_dir.path().join("audit.jsonl"),
        );
        cfg.signing.enabled = Some(false);
        if let Some(t) = tweak {
            t(&mut cfg);
        }
        serve(cfg, BuildOptions::default(), audit_dir).await
    }

    /// A gateway whose upstream is a stdio server it starts (`upstream.command`). Returns the
    /// audit file's path with the gateway.
    pub async fn in_front_of_command(
        command: eks_mcp_gateway::config::CommandConfig,
        principal: &str,
        groups: &[&str],
        tweak: Option<ConfigTweak>,
    ) -> (Arc<Gateway>, SocketAddr, GatewayGuard, PathBuf) {
        let audit_dir = tempfile::tempdir().unwrap();
        let audit_path = audit_dir.path().join("audit.jsonl");
        let mut cfg = Config::from_yaml_str(
            &serde_json::json!({"upstream": {"command": {"program": command.program}}}).to_string(),
            Path::new("<test>"),
        )
        .unwrap();
        cfg.upstream.command = Some(command);
        cfg.upstream.watch_tools = false;
        let base = base_config(
            "http://127.0.0.1:1/mcp",
            principal,
            &groups.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
            PolicyMode::Enforce,
            &policy_dir(),
            &audit_path,
        );
        cfg.policy = base.policy;
        cfg.auth = base.auth;
        cfg.audit = base.audit;
        cfg.limits = base.limits;
        if let Some(t) = tweak {
            t(&mut cfg);
        }
        let (gateway, addr, guard) = serve(cfg, BuildOptions::default(), audit_dir).await;
        (gateway, addr, guard, audit_path)
    }

    async fn start_in_front_of(
        sim: SimHandle,
        credentials: Option<SharedCredentialsProvider>,
        principal: String,
        groups: Vec<String>,
        mode: PolicyMode,
        policy_dir: PathBuf,
        tweak: Option<ConfigTweak>,
    ) -> Harness {
        let audit_dir = tempfile::tempdir().unwrap();
        let audit_path = audit_dir.path().join("audit.jsonl");
        let mut cfg = base_config(
            &sim.url(),
            &principal,
            &groups,
            mode,
            &policy_dir,
            &audit_path,
        );
        let mut options = BuildOptions::default();
        if let Some(provider) = credentials {
            cfg.signing.enabled = Some(true);
            cfg.signing.region = Some(REGION.into());
            cfg.signing.service = Some("eks-mcp".into());
            let signer = eks_mcp_gateway::sign::Signer::from_provider(
                &cfg.signing,
                &cfg.upstream.url.parse().unwrap(),
                provider,
            )
            .await
            .unwrap();
            options.signer = Some(signer);
        } else {
            cfg.signing.enabled = Some(false);
        }
        if let Some(t) = tweak {
            t(&mut cfg);
        }
        let (gateway, addr, guard) = serve(cfg, options, audit_dir).await;
        Harness {
            sim,
            gateway,
            addr,
            audit_path,
            guard,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    pub fn client(&self) -> McpClient {
        McpClient::new(&self.url())
    }

    /// Audit records written so far, once there are at least `at_least` of them (the writer
    /// batches, so records land shortly after their requests). Fails the test when fewer
    /// than `at_least` records arrive within 30 s: a check of what the records hold must
    /// never pass because nothing was written.
    pub async fn audit_records(&self, at_least: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let recs = read_jsonl(&self.audit_path);
            if recs.len() >= at_least {
                return recs;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected at least {at_least} audit records, found {}: {recs:?}",
                recs.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop accepting, drain, and wait for the server task.
    pub async fn stop(self) {
        self.guard.stop().await;
    }
}

/// Build a gateway and serve it on an ephemeral loopback port until the guard stops it.
async fn serve(
    cfg: Config,
    options: BuildOptions,
    audit_dir: tempfile::TempDir,
) -> (Arc<Gateway>, SocketAddr, GatewayGuard) {
    let gateway = Gateway::build_with(cfg, options).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let gw = gateway.clone();
    let task = tokio::spawn(async move {
        let stop = async {
            let _ = rx.await;
        };
        eks_mcp_gateway::front::serve(
            gw,
            listener,
            eks_mcp_gateway::front::Role::Mcp { with_ops: true },
            stop,
        )
        .await
    });
    let guard = GatewayGuard {
        _audit_dir: audit_dir,
        shutdown: Some(tx),
        task: Some(task),
    };
    (gateway, addr, guard)
}

/// A copy of the shipped policy directory whose data (`data.yaml`) `edit` changed.
pub fn policy_dir_with(edit: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&policy_dir(), dir.path());
    let path = dir.path().join("data.yaml");
    let mut data: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut data);
    std::fs::write(&path, serde_yaml::to_string(&data).unwrap()).unwrap();
    dir
}

/// An API key file for `entries` of (key, principal, groups), and the auth config using it.
pub fn api_keys(dir: &Path, entries: &[(&str, &str, &[&str])]) -> AuthConfig {
    let mut y = String::from("keys:\n");
    for (key, principal, groups) in entries {
        y.push_str(&format!(
            "  - sha256: {}\n    principal: {principal}\n    groups: {groups:?}\n",
            eks_mcp_gateway::identity::api_key_hash(key)
        ));
    }
    let path = dir.join("keys.yaml");
    std::fs::write(&path, y).unwrap();
    AuthConfig::ApiKey { file: path }
}

/// The complete lines of a JSON-lines file. A last line without its newline is still being
/// written (a large record lands in several writes) and is left for the next read.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect()
}

/// Keeps a gateway started by `in_front_of_url` alive.
pub struct GatewayGuard {
    _audit_dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl GatewayGuard {
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

pub fn base_config(
    upstream: &str,
    principal: &str,
    groups: &[String],
    mode: PolicyMode,
    policy_dir: &Path,
    audit_path: &Path,
) -> Config {
    let mut cfg = Config::from_yaml_str(
        &format!("upstream:\n  url: {upstream}\n"),
        Path::new("<test>"),
    )
    .unwrap();
    cfg.policy.dir = policy_dir.to_path_buf();
    cfg.policy.mode = mode;
    cfg.policy.hot_reload = false;
    cfg.auth = AuthConfig::Static {
        principal: principal.into(),
        groups: groups.to_vec(),
    };
    cfg.audit.sink = audit_path.display().to_string();
    cfg.limits.shutdown_grace = Duration::from_secs(5);
    // Tests count what the upstream receives; the drift tests turn the watcher back on.
    cfg.upstream.watch_tools = false;
    cfg
}

/// A response as the client saw it: status, headers and the JSON-RPC messages it carried
/// (one for JSON, any number for SSE), plus the raw body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub messages: Vec<Value>,
}

impl Reply {
    /// The final response message (the one with an id and no method).
    pub fn response(&self) -> &Value {
        self.messages
            .iter()
            .rev()
            .find(|m| {
                m.get("method").is_none() && (m.get("result").is_some() || m.get("error").is_some())
            })
            .unwrap_or_else(|| {
                panic!(
                    "no JSON-RPC response in {:?}: {}",
                    self.status,
                    String::from_utf8_lossy(&self.body)
                )
            })
    }
    pub fn result(&self) -> &Value {
        let r = self.response();
        r.get("result")
            .unwrap_or_else(|| panic!("expected a result, got {r}"))
    }
    pub fn error(&self) -> &Value {
        let r = self.response();
        r.get("error")
            .unwrap_or_else(|| panic!("expected an error, got {r}"))
    }
    /// All text of a CallToolResult, joined.
    pub fn tool_text(&self) -> String {
        self.result()["content"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(|b| b["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    }
    pub fn is_tool_error(&self) -> bool {
        self.result()["isError"] == json!(true)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parse an SSE body into the JSON messages of its events. Events without data (a priming
/// event carrying only `id:`/`retry:`) carry no message; an event whose data is not one JSON
/// value fails the test, since a client would choke on it too.
pub fn sse_messages(body: &[u8]) -> Vec<Value> {
    let mut p = eks_mcp_gateway::sse::SseParser::new(256 << 20);
    let items = p.push(body).expect("valid SSE");
    assert!(
        !p.finish(),
        "the SSE body ends inside an event:\n{}",
        String::from_utf8_lossy(body)
    );
    let mut out = Vec::new();
    for item in items {
        if let eks_mcp_gateway::sse::SseItem::Event(ev) = item
            && !ev.data.is_empty()
        {
            out.push(serde_json::from_str(&ev.data).unwrap_or_else(|e| {
                panic!(
                    "an SSE event's data is not JSON ({e}): {:?}\nin the body:\n{}",
                    ev.data,
                    String::from_utf8_lossy(body)
                )
            }));
        }
    }
    out
}

/// A minimal MCP Streamable HTTP client for tests.
#[derive(Clone)]
pub struct McpClient {
    http: HyperClient<HttpConnector, Full<Bytes>>,
    pub url: String,
    pub session: Option<String>,
    pub protocol: Option<String>,
    /// Sent with every request (e.g. `x-api-key` to call as one of several principals).
    pub headers: Vec<(String, String)>,
    next_id: Arc<std::sync::atomic::AtomicI64>,
}

impl McpClient {
    pub fn new(url: &str) -> Self {
        McpClient {
            http: HyperClient::builder(TokioExecutor::new()).build_http(),
            url: url.into(),
            session: None,
            protocol: None,
            headers: Vec::new(),
            next_id: Arc::new(std::sync::atomic::AtomicI64::new(1)),
        }
    }

    pub fn next_id(&self) -> i64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// POST raw bytes with extra headers.
    pub async fn post_raw(&self, body: impl Into<Bytes>, headers: &[(&str, &str)]) -> Reply {
        let mut b = Request::post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if let Some(s) = &self.session {
            b = b.header("mcp-session-id", s);
        }
        if let Some(v) = &self.protocol {
            b = b.header("mcp-protocol-version", v);
        }
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        let mut req = b.body(Full::new(body.into())).unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        self.send(req).await
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        let resp = tokio::time::timeout(Duration::from_secs(30), self.http.request(req))
            .await
            .expect("gateway answered within 30s")
            .expect("HTTP exchange with the gateway");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = tokio::time::timeout(Duration::from_secs(60), resp.into_body().collect())
            .await
            .expect("body within 60s")
            .expect("body read")
            .to_bytes();
        let ct = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let messages = if ct.starts_with("text/event-stream") {
            sse_messages(&body)
        } else if ct.starts_with("application/json") && !body.is_empty() {
            vec![
                serde_json::from_slice(&body)
                    .unwrap_or_else(|e| panic!("bad JSON {e}: {}", String::from_utf8_lossy(&body))),
            ]
        } else {
            Vec::new()
        };
        Reply {
            status,
            headers,
            body,
            messages,
        }
    }

    /// A session-era request (uses and records the session id).
    pub async fn request(&self, method: &str, params: Value) -> Reply {
        let id = self.next_id();
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.post_raw(serde_json::to_vec(&body).unwrap(), &[]).await
    }

    /// `initialize` + `notifications/initialized`; keeps the session id.
    pub async fn initialize(&mut self) -> Reply {
        self.initialize_with(SESSION_ERA, json!({})).await
    }

    pub async fn initialize_with(&mut self, version: &str, capabilities: Value) -> Reply {
        let reply = self
            .request(
                "initialize",
                json!({"protocolVersion": version, "capabilities": capabilities, "clientInfo": {"name": "gateway-tests", "version": "1.0"}}),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "initialize failed: {}",
            reply.text()
        );
        self.session = reply
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.protocol = Some(version.to_owned());
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let ack = self.post_raw(serde_json::to_vec(&note).unwrap(), &[]).await;
        assert_eq!(
            ack.status,
            StatusCode::ACCEPTED,
            "initialized notification: {}",
            ack.text()
        );
        reply
    }

    /// Session-era tools/call.
    pub async fn call_tool(&self, name: &str, args: Value) -> Reply {
        self.request("tools/call", json!({"name": name, "arguments": args}))
            .await
    }

    /// A stateless-era (2026-07-28) request with the required headers.
    pub async fn stateless(&self, method: &str, params: Value) -> Reply {
        self.stateless_with(method, params, &[]).await
    }

    /// A stateless-era request with `extra` headers besides the mirrored standard ones.
    pub async fn stateless_with(
        &self,
        method: &str,
        mut params: Value,
        extra: &[(&str, &str)],
    ) -> Reply {
        let id = self.next_id();
        params["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!(STATELESS);
        let name = params
            .get("name")
            .or_else(|| params.get("uri"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let mut headers = vec![("mcp-protocol-version", STATELESS), ("mcp-method", method)];
        if let Some(n) = &name {
            headers.push(("mcp-name", n.as_str()));
        }
        headers.extend_from_slice(extra);
        let client = McpClient {
            session: None,
            protocol: None,
            ..self.clone()
        };
        client
            .post_raw(serde_json::to_vec(&body).unwrap(), &headers)
            .await
    }

    pub async fn stateless_call(&self, name: &str, args: Value) -> Reply {
        self.stateless("tools/call", json!({"name": name, "arguments": args}))
            .await
    }

    pub async fn delete_session(&self) -> StatusCode {
        let mut b = Request::delete(&self.url);
        if let Some(s) = &self.session {
            b = b.header("mcp-session-id", s);
        }
        if let Some(v) = &self.protocol {
            b = b.header("mcp-protocol-version", v);
        }
        self.send(b.body(Full::new(Bytes::new())).unwrap())
            .await
            .status
    }

    /// Open the GET stream; returns the raw response for incremental reading.
    pub async fn open_stream(&self) -> http::Response<hyper::body::Incoming> {
        let mut b = Request::get(&self.url).header("accept", "text/event-stream");
        if let Some(s) = &self.session {
            b = b.header("mcp-session-id", s);
        }
        if let Some(v) = &self.protocol {
            b = b.header("mcp-protocol-version", v);
        }
        self.http
            .request(b.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap()
    }
}

const CHILD_MARK: &str = "EKS_MCP_GATEWAY_TEST_CHILD";

/// True inside the child process started for `test` by [`run_in_child`].
pub fn is_child(test: &str) -> bool {
    std::env::var(CHILD_MARK).is_ok_and(|v| v == test)
}

/// Run `test` (its full path in this test binary, e.g. `audit::some_test`) alone in a child
/// process, and fail unless exactly that one test ran and passed. The child's environment has
/// no inherited `AWS_*` variables, IMDS disabled, no shared config files, plus `env`.
///
/// Two reasons to use it: the AWS credential chain reads process-wide environment variables,
/// and the Prometheus registry is process-wide. With `cargo test` every test of this binary
/// runs as a thread of one process, so a counter's delta is only exact when the test that
/// reads it is alone in its process (nextest already runs each test in its own process; the
/// child then costs one process start).
pub async fn run_in_child(test: &str, env: &[(&str, String)]) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"]);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    let nowhere = std::env::temp_dir().join("eks-mcp-gateway-no-such-aws-file");
    cmd.env(CHILD_MARK, test)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", &nowhere)
        .env("AWS_SHARED_CREDENTIALS_FILE", &nowhere);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("child test finishes")
        .expect("child test starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child run of {test} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
}

/// Log lines written while a test's subscriber is the thread's default (a current-thread
/// runtime runs the gateway's spawned tasks on the test's thread, so their events land here).
#[derive(Clone, Default)]
pub struct LogCapture(Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Make this capture the thread's subscriber until the guard drops (INFO and above).
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        self.install_at(tracing::Level::INFO)
    }

    /// The same, with every event down to `level`.
    pub fn install_at(&self, level: tracing::Level) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_max_level(level)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
