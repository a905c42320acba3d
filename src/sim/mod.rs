//! An embedded stand-in for the AWS-hosted Amazon EKS MCP server, for tests, benches and the
//! `demo` command.
//!
//! It speaks MCP Streamable HTTP on one path in both protocol eras (the session era of
//! 2025-03-26 … 2025-11-25 and the stateless 2026-07-28 era), serves the hosted server's 20
//! tools (or the open-source server's 16) over an in-memory AWS account with clusters `dev`,
//! `staging` and `prod`, optionally verifies SigV4 like the AWS front door, and records every
//! request it receives so tests can assert what did and did not reach the upstream.
//!
//! Layout: this file is the public handle and the accept loop; `transport` is HTTP and the
//! two eras; `rpc` the MCP methods; `tools` and `aws` the tool handlers; `world` the cluster
//! state; `sigv4` signature verification. The sample data lives in the `*.yaml`/`*.json`
//! files beside them. This module never makes outbound calls and never logs request bodies.
//!
//! The sample world (the same objects on every cluster, so tests can pick a tier):
//! - namespaces `default`, `kube-system`, `payments`, `checkout`, `monitoring`; two nodes;
//! - `payments`: deployments `payments-api` (env `DB_PASSWORD` in clear) and `payments-worker`,
//!   the crash-looping pod [`CRASHLOOP_POD`] (BackOff events; its current and previous logs
//!   hold every value in [`planted`]), Secrets `payments-db-credentials` and
//!   `payments-aws-credentials` (base64 `data`, repeated in the
//!   `kubectl.kubernetes.io/last-applied-configuration` annotation), ConfigMap `payments-config`;
//! - `checkout`: `checkout-web`, Secret `stripe-api-key`; `monitoring`: `prometheus-server-0` and
//!   [`BULK_LOGGER_POD`], whose logs are 200 000 generated lines (ask with `tail_lines` and a
//!   large `limit_bytes` for big results);
//! - EKS: node group `<cluster>-general`, five add-ons, insights, VPC; IAM roles
//!   `eks-<cluster>-node-role`, `eks-cluster-role`, `payments-api-pod-role`.
//!
//! Semantics worth knowing: kinds match case-insensitively (`secret` reads Secrets, so a
//! policy must not rely on the exact spelling); `manage_k8s_resource` takes the namespace from
//! the argument, else from `body.metadata.namespace`; `apply_yaml` needs `yaml_content` (the
//! hosted server cannot read `yaml_path`; `ToolNames::OpenSource` reads it like the awslabs server); `get_pod_logs` ignores `since_seconds`. The world
//! is per instance and shared by all sessions and both eras.

mod aws;
mod paths;
mod rpc;
mod sigv4;
mod stdio;
mod tools;
mod transport;
mod world;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use stdio::serve_stdio;
pub use world::{
    BULK_LOGGER_POD, CRASHLOOP_POD, STACK_DB_PASSWORD, STACK_GITHUB_TOKEN, World, planted,
};

/// How the simulator answers requests that need a response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResponseMode {
    /// Always `application/json`.
    Json,
    /// Always `text/event-stream` (progress notifications first when a token is given).
    Sse,
    /// SSE when the request asks for progress (`_meta.progressToken`), JSON otherwise.
    #[default]
    Auto,
}

/// Which server's tool names and schemas to expose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ToolNames {
    /// The hosted EKS MCP server: 20 tools with `readOnlyHint` annotations.
    #[default]
    Hosted,
    /// awslabs.eks-mcp-server 0.2.1: 16 tools, no annotations, `search_eks_troubleshoot_guide`.
    OpenSource,
}

/// Credentials the simulator expects requests to be signed with.
#[derive(Clone)]
pub struct SimCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for SimCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "** redacted **"),
            )
            .finish()
    }
}

/// Simulator settings. `SimConfig::default()` is an unsigned hosted server on `/mcp`.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// When set, every request must carry a valid SigV4 signature for these credentials.
    pub credentials: Option<SimCredentials>,
    /// SigV4 region (default `us-west-2`).
    pub region: String,
    /// SigV4 service name (default `eks-mcp`).
    pub service: String,
    pub response_mode: ResponseMode,
    pub tool_names: ToolNames,
    /// Interval of `: keep-alive` comments on GET streams (default 15 s).
    pub keepalive: Duration,
    /// The MCP endpoint path (default `/mcp`).
    pub path: String,
    /// How many received requests `received()` keeps, oldest dropped first (default
    /// 100 000), so a long-running `demo` does not grow without bound.
    pub record_limit: usize,
    /// Tool definitions served instead of the built-in list (drift tests: a tool added,
    /// removed, an argument or annotation changed). Tools without a handler answer with a
    /// tool error.
    pub tools: Option<Vec<serde_json::Value>>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            credentials: None,
            region: "us-west-2".into(),
            service: "eks-mcp".into(),
            response_mode: ResponseMode::Auto,
            tool_names: ToolNames::Hosted,
            keepalive: Duration::from_secs(15),
            path: "/mcp".into(),
            record_limit: 100_000,
            tools: None,
        }
    }
}

/// One HTTP request as the simulator received it (before any verification).
#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    pub http_method: String,
    /// JSON-RPC `method`, when the body is a JSON-RPC request or notification.
    pub rpc_method: Option<String>,
    /// `params.name` of a `tools/call`.
    pub tool: Option<String>,
    /// `params.arguments` of a `tools/call`.
    pub arguments: Option<serde_json::Value>,
    /// All request headers, names lower-case, in received order.
    pub headers: Vec<(String, String)>,
    pub body: bytes::Bytes,
}

impl ReceivedRequest {
    /// First value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A failure the simulator answers MCP requests with instead of serving them (tests of
/// upstream throttling, retries and the circuit breaker). The request is still recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// HTTP status to answer with (429, 500, 503, ...).
    pub status: u16,
    /// `Retry-After` header, in seconds.
    pub retry_after: Option<u64>,
    /// How many requests get it; `None`: every request until [`SimHandle::set_fault`] clears it.
    pub times: Option<u32>,
}

/// State shared by every connection of one simulator instance.
pub(crate) struct Shared {
    cfg: SimConfig,
    catalogue: std::sync::RwLock<tools::Catalogue>,
    world: Mutex<World>,
    sessions: Mutex<HashMap<String, transport::Session>>,
    /// Open stateless-era `subscriptions/listen` streams.
    listeners: Mutex<Vec<transport::Listener>>,
    received: Mutex<VecDeque<ReceivedRequest>>,
    credentials: Mutex<Option<SimCredentials>>,
    expired_tokens: Mutex<Vec<String>>,
    verified: AtomicU64,
    signature_failures: AtomicU64,
    fault: Mutex<Option<Fault>>,
}

impl Shared {
    /// The fault to answer this request with, if one is set (counting down `times`).
    pub(crate) fn take_fault(&self) -> Option<Fault> {
        let mut slot = lock(&self.fault);
        let fault = slot.clone()?;
        match fault.times {
            Some(n) if n <= 1 => *slot = None,
            Some(n) => {
                if let Some(f) = slot.as_mut() {
                    f.times = Some(n - 1);
                }
            }
            None => {}
        }
        Some(fault)
    }
}

/// Read a lock, recovering the data if a panicking thread poisoned it.
fn read<T>(l: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Lock a mutex, recovering the data if a panicking thread poisoned it (test servers should
/// keep answering so the failing test reports its own assertion, not a poison error).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running simulator. Dropping it stops the server.
pub struct SimHandle {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// `http://127.0.0.1:PORT/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.shared.cfg.path)
    }

    /// Everything received, in order (the last `SimConfig::record_limit` requests).
    pub fn received(&self) -> Vec<ReceivedRequest> {
        lock(&self.shared.received).iter().cloned().collect()
    }

    /// `(tool, arguments)` of every `tools/call` received, in order.
    pub fn tool_calls(&self) -> Vec<(String, serde_json::Value)> {
        lock(&self.shared.received)
            .iter()
            .filter_map(|r| {
                let tool = r.tool.clone()?;
                Some((tool, r.arguments.clone().unwrap_or(serde_json::Value::Null)))
            })
            .collect()
    }

    /// Requests refused for a missing or bad signature.
    pub fn signature_failures(&self) -> u64 {
        self.shared.signature_failures.load(Ordering::Relaxed)
    }

    /// Requests whose signature verified.
    pub fn verified_requests(&self) -> u64 {
        self.shared.verified.load(Ordering::Relaxed)
    }

    /// Forget everything recorded so far.
    pub fn clear_received(&self) {
        lock(&self.shared.received).clear();
    }

    /// Number of open stateless-era `subscriptions/listen` streams (closed ones are pruned
    /// on the next notification).
    pub fn listener_count(&self) -> usize {
        lock(&self.shared.listeners)
            .iter()
            .filter(|l| l.is_open())
            .count()
    }

    /// Number of live legacy-era sessions.
    pub fn session_count(&self) -> usize {
        lock(&self.shared.sessions).len()
    }

    /// Switch to new credentials, as an STS refresh does. A request still carrying the old
    /// session token then gets `ExpiredTokenException`, so credential refresh can be tested.
    pub fn rotate_credentials(&self, credentials: SimCredentials) {
        let mut current = lock(&self.shared.credentials);
        if let Some(token) = current.as_ref().and_then(|c| c.session_token.clone()) {
            lock(&self.shared.expired_tokens).push(token);
        }
        *current = Some(credentials);
    }

    /// Answer the next MCP requests with `fault` (`None`: serve normally again).
    pub fn set_fault(&self, fault: Option<Fault>) {
        *lock(&self.shared.fault) = fault;
    }

    /// Run `f` on the simulated world (inspect or change the clusters directly).
    /// Serve `tools` from now on (drift tests: the upstream's tools change while the gateway
    /// runs) and tell every session with `notifications/tools/list_changed` (on its GET
    /// stream; the capability still says `listChanged: false`, as the hosted server's does, so
    /// only a test that calls this sends it).
    pub fn set_tools(&self, tools: Vec<serde_json::Value>) {
        *self
            .shared
            .catalogue
            .write()
            .unwrap_or_else(|p| p.into_inner()) =
            tools::Catalogue::with_tools(self.shared.cfg.tool_names, tools);
        let note =
            serde_json::json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
        for session in lock(&self.shared.sessions).values_mut() {
            session.notify(&note);
        }
    }

    /// The tool definitions served now.
    pub fn tools(&self) -> Vec<serde_json::Value> {
        read(&self.shared.catalogue).list().to_vec()
    }

    pub fn with_world<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        f(&mut lock(&self.shared.world))
    }

    /// Stop accepting connections and end open streams.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    /// Like `shutdown`, and wait until the server task has finished.
    pub async fn stop(mut self) {
        self.stop_now();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Dropping the senders ends every GET and listen stream.
        lock(&self.shared.sessions).clear();
        lock(&self.shared.listeners).clear();
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// The sample account the simulator serves (clusters `dev`, `staging`, `prod`).
pub fn sample_world() -> World {
    World::sample()
}

/// The built-in tool definitions for `names` (what `tools/list` serves without
/// `SimConfig::tools`): tests derive drifted lists from it.
pub fn tool_definitions(names: ToolNames) -> Vec<serde_json::Value> {
    tools::Catalogue::new(names).list().to_vec()
}

fn catalogue_of(cfg: &SimConfig) -> tools::Catalogue {
    match &cfg.tools {
        Some(list) => tools::Catalogue::with_tools(cfg.tool_names, list.clone()),
        None => tools::Catalogue::new(cfg.tool_names),
    }
}

/// The state of a simulator with no listener (the stdio transport).
fn shared_state(cfg: SimConfig) -> Arc<Shared> {
    Arc::new(Shared {
        catalogue: std::sync::RwLock::new(catalogue_of(&cfg)),
        world: Mutex::new(World::sample()),
        sessions: Mutex::new(HashMap::new()),
        listeners: Mutex::new(Vec::new()),
        received: Mutex::new(VecDeque::new()),
        credentials: Mutex::new(None),
        expired_tokens: Mutex::new(Vec::new()),
        verified: AtomicU64::new(0),
        signature_failures: AtomicU64::new(0),
        fault: Mutex::new(None),
        cfg,
    })
}

/// Start a simulator on `listener` and return once it accepts connections.
pub async fn start(
    cfg: SimConfig,
    listener: tokio::net::TcpListener,
) -> std::io::Result<SimHandle> {
    if !cfg.path.starts_with('/') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("SimConfig.path must start with '/', got {:?}", cfg.path),
        ));
    }
    if cfg.keepalive.is_zero() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "SimConfig.keepalive must be greater than zero",
        ));
    }
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        catalogue: std::sync::RwLock::new(catalogue_of(&cfg)),
        world: Mutex::new(World::sample()),
        sessions: Mutex::new(HashMap::new()),
        listeners: Mutex::new(Vec::new()),
        received: Mutex::new(VecDeque::new()),
        credentials: Mutex::new(cfg.credentials.clone()),
        expired_tokens: Mutex::new(Vec::new()),
        verified: AtomicU64::new(0),
        signature_failures: AtomicU64::new(0),
        fault: Mutex::new(None),
        cfg,
    });
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(serve(listener, shared.clone(), stop_rx));
    Ok(SimHandle {
        addr,
        shared,
        stop: Some(stop_tx),
        task: Some(task),
    })
}

async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _peer)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                let shared = shared.clone();
                let service = service_fn(move |req| transport::handle(shared.clone(), req));
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = &mut stop => break,
        }
    }
    drop(listener);
    lock(&shared.sessions).clear();
    lock(&shared.listeners).clear();
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
}
