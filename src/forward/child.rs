//! child: one supervised stdio MCP server process and the one MCP session the gateway holds
//! with it.
//!
//! The gateway starts the program, does the `initialize` handshake once, and then multiplexes
//! every client's requests onto that session: each request gets a gateway-unique integer id
//! (and each progress token a gateway-unique token) before it is written, and the answer is
//! mapped back to the id the client used. Requests the server sends (other than `ping`, which
//! the gateway answers) go to the client whose call is most recent, under an id of the
//! gateway's, and that client's answer is mapped back. Lines are bounded in both directions.
//!
//! Supervision: when the process exits, every call in flight fails at once with
//! `upstream_unavailable` (-31010), and the program is started again after a delay that
//! doubles per failed start. The child runs in its own process group with `PR_SET_PDEATHSIG`
//! (Linux), so neither it nor anything it started outlives the gateway; on shutdown its stdin
//! is closed, then the group gets SIGTERM, then SIGKILL. Its stderr goes to the gateway's log,
//! one line per event prefixed with the program's name, rate limited and redacted.
//!
//! This module never decides anything about a message: what arrives here was already allowed.
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child as Process, Command};
use tokio::sync::{mpsc, oneshot, watch};

use super::UpstreamError;
use crate::config::CommandConfig;
use crate::stdio::LineReader;

/// The protocol version the gateway asks the child for (the newest session-era version).
pub(crate) const CHILD_PROTOCOL_VERSION: &str = "2025-11-25";
/// Related messages buffered per call before further progress is dropped.
const RELATED_BUFFER: usize = 64;
/// A child that ran this long counts as healthy: the next restart starts from the first delay.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Longest stderr line logged; longer lines are cut.
const MAX_STDERR_LINE: usize = 8 * 1024;

/// Where the child's own messages go: the front sessions (`stdio::Sessions`).
pub(crate) trait Router: Send + Sync + 'static {
    /// A server request or notification for one front session's GET stream.
    fn to_session(&self, session: &str, msg: &Value) -> bool;
    /// A notification for every front session.
    fn broadcast(&self, msg: &Value);
    /// A new child finished its handshake (`generation` counts processes).
    fn ready(&self, generation: u64);
    /// The child of `generation` is gone; sessions bound to it end.
    fn gone(&self, generation: u64);
    /// The child said its tool list changed.
    fn tools_changed(&self);
}

/// What the supervisor reports (for `/readyz` and for callers waiting for a child).
#[derive(Clone, Debug)]
pub(crate) enum Status {
    Starting,
    Ready {
        generation: u64,
        pid: u32,
        init: Arc<Value>,
    },
    Restarting {
        why: String,
        attempt: u32,
        next_in: Duration,
    },
    Stopped,
}

/// Who asked, so the child's related messages and answers find their way back.
#[derive(Clone, Default)]
pub(crate) struct Route {
    /// The front session (session era), for server requests when the call does not stream.
    pub session: Option<String>,
    /// Whether the caller reads related messages (an SSE response).
    pub streaming: bool,
}

/// One request in flight, as its caller holds it. Dropping it before the answer arrived
/// (the client went away) cancels the request at the child.
pub(crate) struct Call {
    inner: Arc<Inner>,
    id: u64,
    /// Progress notifications and server requests for this call (when `Route::streaming`).
    pub related: Option<mpsc::Receiver<Value>>,
    pub done: oneshot::Receiver<Result<Value, UpstreamError>>,
    answered: bool,
}

impl Call {
    /// The answer was taken: nothing to cancel any more.
    pub fn answered(&mut self) {
        self.answered = true;
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.answered {
            self.inner.abandon(self.id);
        }
    }
}

struct Pending {
    generation: u64,
    client_id: Value,
    session: Option<String>,
    /// `(gateway token, client token)` of a progress token.
    progress: Option<(String, Value)>,
    related: Option<mpsc::Sender<Value>>,
    done: oneshot::Sender<Result<Value, UpstreamError>>,
}

struct State {
    generation: u64,
    writer: Option<mpsc::Sender<Bytes>>,
    pending: HashMap<u64, Pending>,
    /// Server requests relayed to a client: gateway id -> (generation, the child's id).
    server_requests: HashMap<String, (u64, Value)>,
}

struct Inner {
    cfg: CommandConfig,
    label: String,
    max_line: usize,
    state: Mutex<State>,
    status: watch::Sender<Status>,
    next_id: AtomicU64,
    router: Arc<dyn Router>,
    stop: watch::Sender<bool>,
    redactor: Arc<crate::redact::Redactor>,
}

/// The supervised child. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Child {
    inner: Arc<Inner>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Child {
    /// Start supervising `cfg.program` (the first start happens in the background).
    pub fn start(
        cfg: CommandConfig,
        label: String,
        max_line: usize,
        router: Arc<dyn Router>,
    ) -> Self {
        let (status, _) = watch::channel(Status::Starting);
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            cfg,
            label,
            max_line,
            state: Mutex::new(State {
                generation: 0,
                writer: None,
                pending: HashMap::new(),
                server_requests: HashMap::new(),
            }),
            status,
            next_id: AtomicU64::new(1),
            router,
            stop,
            redactor: Arc::new(crate::redact::Redactor::builtin()),
        });
        tokio::spawn(supervise(inner.clone()));
        Child { inner }
    }

    pub fn status(&self) -> Status {
        self.inner.status.borrow().clone()
    }

    /// Requests written to the child and not answered yet.
    pub fn in_flight(&self) -> usize {
        lock(&self.inner.state).pending.len()
    }

    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// Wait up to `wait` for a child that has finished its handshake.
    pub async fn ready(&self, wait: Duration) -> Result<(u64, Arc<Value>), UpstreamError> {
        let mut rx = self.inner.status.subscribe();
        let found = tokio::time::timeout(wait, async {
            loop {
                match &*rx.borrow_and_update() {
                    Status::Ready {
                        generation, init, ..
                    } => return Some((*generation, init.clone())),
                    Status::Stopped => return None,
                    _ => {}
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match found {
            Ok(Some(r)) => Ok(r),
            _ => Err(UpstreamError::Unavailable(self.inner.not_ready_text())),
        }
    }

    /// Send a request (the client's id is replaced and restored) and return the handle that
    /// receives its answer.
    pub async fn call(
        &self,
        msg: Map<String, Value>,
        route: Route,
        wait: Duration,
    ) -> Result<Call, UpstreamError> {
        let (generation, _) = self.ready(wait).await?;
        self.inner.send_request(generation, msg, route).await
    }

    /// Forward a client notification (`notifications/cancelled` is mapped by the caller).
    pub async fn notify(&self, msg: Map<String, Value>) -> Result<(), UpstreamError> {
        let writer = lock(&self.inner.state).writer.clone();
        match writer {
            Some(w) => w
                .send(line_of(&Value::Object(msg)))
                .await
                .map_err(|_| UpstreamError::Unavailable(self.inner.not_ready_text())),
            None => Err(UpstreamError::Unavailable(self.inner.not_ready_text())),
        }
    }

    /// A client's answer to a server request: restore the child's id and forward it.
    /// Returns false when the request is unknown (already answered, or from an older child).
    pub async fn answer_server_request(&self, mut msg: Map<String, Value>) -> bool {
        let key = match msg.get("id") {
            Some(Value::String(s)) => s.clone(),
            _ => return false,
        };
        let (writer, original) = {
            let mut st = lock(&self.inner.state);
            let Some((generation, original)) = st.server_requests.remove(&key) else {
                return false;
            };
            if generation != st.generation {
                return false;
            }
            (st.writer.clone(), original)
        };
        msg.insert("id".into(), original);
        match writer {
            Some(w) => w.send(line_of(&Value::Object(msg))).await.is_ok(),
            None => false,
        }
    }

    /// The gateway id of a call a front session made with `client_id` (for cancellation).
    pub fn gateway_id_of(&self, session: &str, client_id: &Value) -> Option<u64> {
        let st = lock(&self.inner.state);
        st.pending
            .iter()
            .find(|(_, p)| p.session.as_deref() == Some(session) && &p.client_id == client_id)
            .map(|(id, _)| *id)
    }

    /// Stop the child (stdin closed, then SIGTERM, then SIGKILL) and wait until it is gone.
    pub async fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
        let mut rx = self.inner.status.subscribe();
        let _ = rx.wait_for(|s| matches!(s, Status::Stopped)).await;
    }
}

impl Inner {
    fn not_ready_text(&self) -> String {
        match &*self.status.borrow() {
            Status::Starting => format!(
                "the upstream process {} is starting and has not finished its MCP handshake",
                self.label
            ),
            Status::Restarting {
                why,
                attempt,
                next_in,
            } => format!(
                "the upstream process {} is not running ({why}); restart attempt {attempt} in {next_in:?}",
                self.label
            ),
            Status::Stopped => format!(
                "the upstream process {} was stopped (the gateway is shutting down)",
                self.label
            ),
            Status::Ready { .. } => format!(
                "the upstream process {} did not take the message",
                self.label
            ),
        }
    }

    async fn send_request(
        self: &Arc<Self>,
        generation: u64,
        mut msg: Map<String, Value>,
        route: Route,
    ) -> Result<Call, UpstreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let client_id = msg.insert("id".into(), json!(id)).unwrap_or(Value::Null);
        let progress = msg
            .get_mut("params")
            .and_then(|p| p.get_mut("_meta"))
            .and_then(Value::as_object_mut)
            .and_then(|meta| {
                let original = meta.get("progressToken")?.clone();
                let token = format!("gw-progress-{id}");
                meta.insert("progressToken".into(), Value::String(token.clone()));
                Some((token, original))
            });
        let (related_tx, related_rx) = if route.streaming {
            let (tx, rx) = mpsc::channel(RELATED_BUFFER);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let (done_tx, done_rx) = oneshot::channel();
        let writer = {
            let mut st = lock(&self.state);
            match &st.writer {
                Some(w) if st.generation == generation => {
                    let w = w.clone();
                    st.pending.insert(
                        id,
                        Pending {
                            generation,
                            client_id,
                            session: route.session,
                            progress,
                            related: related_tx,
                            done: done_tx,
                        },
                    );
                    w
                }
                _ => return Err(UpstreamError::Unavailable(self.not_ready_text())),
            }
        };
        let call = Call {
            inner: self.clone(),
            id,
            related: related_rx,
            done: done_rx,
            answered: false,
        };
        if writer.send(line_of(&Value::Object(msg))).await.is_err() {
            return Err(UpstreamError::Unavailable(self.not_ready_text()));
        }
        Ok(call)
    }

    /// The caller stopped waiting: forget the call and tell the child.
    fn abandon(&self, id: u64) {
        let writer = {
            let mut st = lock(&self.state);
            if st.pending.remove(&id).is_none() {
                return;
            }
            st.writer.clone()
        };
        if let Some(w) = writer {
            let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": id, "reason": "the client stopped waiting"}});
            let _ = w.try_send(line_of(&cancel));
        }
    }

    /// One line from the child's stdout.
    fn on_line(&self, generation: u64, line: &[u8]) {
        let msg: Value = match serde_json::from_slice(line) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                let shown = String::from_utf8_lossy(&line[..line.len().min(120)]).into_owned();
                let (shown, _) = self
                    .redactor
                    .redact_text(&shown, &[crate::redact::BASELINE.to_owned()]);
                tracing::warn!(upstream = %self.label, line = %shown,
                    "the upstream process wrote a line that is not a JSON-RPC message on stdout; ignored");
                return;
            }
        };
        let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
        match (method, msg.get("id").cloned()) {
            (None, Some(id)) => self.on_response(generation, id, msg),
            (Some(m), Some(id)) => self.on_server_request(generation, &m, id, msg),
            (Some(m), None) => self.on_notification(generation, &m, msg),
            (None, None) => {
                tracing::warn!(upstream = %self.label, "the upstream process wrote a JSON object that is not a JSON-RPC message; ignored")
            }
        }
    }

    fn on_response(&self, generation: u64, id: Value, mut msg: Value) {
        let pending = {
            let mut st = lock(&self.state);
            match id
                .as_u64()
                .and_then(|i| st.pending.remove(&i).map(|p| (i, p)))
            {
                Some((_, p)) if p.generation == generation => Some(p),
                _ => None,
            }
        };
        let Some(p) = pending else {
            tracing::debug!(upstream = %self.label, %id, "answer to a request nobody waits for (cancelled or timed out); dropped");
            return;
        };
        msg["id"] = p.client_id;
        let _ = p.done.send(Ok(msg));
    }

    fn on_server_request(&self, generation: u64, method: &str, id: Value, mut msg: Value) {
        if method == "ping" {
            self.reply(json!({"jsonrpc": "2.0", "id": id, "result": {}}));
            return;
        }
        let key = format!("gw-server-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        msg["id"] = Value::String(key.clone());
        // The most recent call gets it: through its own stream, else its session's GET stream.
        let routes: Vec<(Option<mpsc::Sender<Value>>, Option<String>)> = {
            let mut st = lock(&self.state);
            st.server_requests
                .insert(key.clone(), (generation, id.clone()));
            let mut calls: Vec<_> = st
                .pending
                .iter()
                .filter(|(_, p)| p.generation == generation)
                .collect();
            calls.sort_by(|a, b| b.0.cmp(a.0));
            calls
                .into_iter()
                .map(|(_, p)| (p.related.clone(), p.session.clone()))
                .collect()
        };
        for (related, session) in routes {
            if let Some(tx) = related
                && tx.try_send(msg.clone()).is_ok()
            {
                return;
            }
            if let Some(s) = session
                && self.router.to_session(&s, &msg)
            {
                return;
            }
        }
        lock(&self.state).server_requests.remove(&key);
        tracing::warn!(upstream = %self.label, %method, "the upstream process sent a request no connected client can answer; refused");
        self.reply(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603,
            "message": "no client connected to the gateway can answer this request now"}}));
    }

    fn on_notification(&self, generation: u64, method: &str, mut msg: Value) {
        match method {
            "notifications/progress" => {
                let token = msg.pointer("/params/progressToken").cloned();
                let target = {
                    let st = lock(&self.state);
                    st.pending
                        .values()
                        .find(|p| {
                            p.generation == generation
                                && p.progress.as_ref().map(|(t, _)| json!(t)) == token
                        })
                        .and_then(|p| Some((p.related.clone()?, p.progress.as_ref()?.1.clone())))
                };
                if let Some((tx, original)) = target {
                    msg["params"]["progressToken"] = original;
                    let _ = tx.try_send(msg);
                }
            }
            "notifications/tools/list_changed" => {
                self.router.tools_changed();
                self.router.broadcast(&msg);
            }
            "notifications/cancelled" => {
                // The child withdrew a request it sent: tell clients under the gateway's id.
                let child_id = msg.pointer("/params/requestId").cloned();
                let key = {
                    let mut st = lock(&self.state);
                    let key = st
                        .server_requests
                        .iter()
                        .find(|(_, (g, id))| *g == generation && Some(id) == child_id.as_ref())
                        .map(|(k, _)| k.clone());
                    if let Some(k) = &key {
                        st.server_requests.remove(k);
                    }
                    key
                };
                if let Some(k) = key {
                    msg["params"]["requestId"] = Value::String(k);
                    self.router.broadcast(&msg);
                }
            }
            _ => self.router.broadcast(&msg),
        }
    }

    fn reply(&self, msg: Value) {
        if let Some(w) = lock(&self.state).writer.clone() {
            let _ = w.try_send(line_of(&msg));
        }
    }

    /// The child of `generation` is gone: every call it held fails now.
    fn fail_generation(&self, generation: u64, why: &str) {
        let failed: Vec<Pending> = {
            let mut st = lock(&self.state);
            st.writer = None;
            st.server_requests.retain(|_, (g, _)| *g != generation);
            let ids: Vec<u64> = st
                .pending
                .iter()
                .filter(|(_, p)| p.generation == generation)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| st.pending.remove(id)).collect()
        };
        for p in failed {
            let _ = p.done.send(Err(UpstreamError::Unavailable(format!(
                "the upstream process {} {why} while this request was in flight; the gateway restarts it, retry the request",
                self.label
            ))));
        }
        self.router.gone(generation);
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }
}

fn line_of(v: &Value) -> Bytes {
    let mut out = serde_json::to_vec(v).expect("JSON value serialises");
    out.push(b'\n');
    Bytes::from(out)
}

/// The child's environment: a few harmless basics, the names listed in `inherit_env`, `env`.
fn command(cfg: &CommandConfig) -> Command {
    let mut cmd = Command::new(&cfg.program);
    cmd.args(&cfg.args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    for name in ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER"]
        .iter()
        .copied()
        .chain(cfg.inherit_env.iter().map(String::as_str))
    {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    cmd.envs(&cfg.env);
    if let Some(dir) = &cfg.cwd {
        cmd.current_dir(dir);
    }
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid, _exit).
        unsafe {
            cmd.pre_exec(move || {
                // The kernel kills the child when the gateway dies, however it dies.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The gateway died before prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    cmd
}

fn signal_group(pid: u32, signal: i32) {
    // SAFETY: kill(2) on the child's own process group (created with process_group(0)).
    unsafe {
        libc::kill(-(pid as libc::pid_t), signal);
    }
}

/// The supervisor: start, handshake, wait for the exit, restart with backoff; stop on request.
async fn supervise(inner: Arc<Inner>) {
    let mut backoff = inner.cfg.restart_backoff;
    let mut attempt: u32 = 0;
    let mut stop = inner.stop.subscribe();
    loop {
        if inner.stopping() {
            break;
        }
        attempt += 1;
        let started = Instant::now();
        let why = match run_once(&inner, &mut stop).await {
            Ok(()) => break,
            Err(why) => why,
        };
        if inner.stopping() {
            break;
        }
        if started.elapsed() >= STABLE_AFTER {
            backoff = inner.cfg.restart_backoff;
            attempt = 1;
        }
        tracing::warn!(upstream = %inner.label, reason = %why, next_in = ?backoff, attempt,
            "the upstream process is not running; restarting it");
        crate::metrics::global().upstream_restarts_total.inc();
        inner.status.send_replace(Status::Restarting {
            why,
            attempt,
            next_in: backoff,
        });
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stopped(&mut stop) => break,
        }
        backoff = (backoff * 2).min(inner.cfg.restart_max_backoff);
    }
    inner.status.send_replace(Status::Stopped);
}

/// One process from start to exit. `Ok` only when the gateway stopped it.
async fn run_once(inner: &Arc<Inner>, stop: &mut watch::Receiver<bool>) -> Result<(), String> {
    let mut process: Process = command(&inner.cfg)
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", inner.cfg.program))?;
    let pid = process.id().unwrap_or_default();
    let stdin = process.stdin.take().expect("stdin is piped");
    let stdout = process.stdout.take().expect("stdout is piped");
    let stderr = process.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let generation = {
        let mut st = lock(&inner.state);
        st.generation += 1;
        st.writer = Some(tx);
        st.generation
    };
    tracing::info!(upstream = %inner.label, pid, generation, "started the upstream process");
    let writer = tokio::spawn(write_lines(stdin, rx));
    let reader = {
        let inner = inner.clone();
        tokio::spawn(async move {
            let mut lines = LineReader::new(stdout, inner.max_line);
            loop {
                match lines.next().await {
                    Ok(Some(Ok(line))) => inner.on_line(generation, &line),
                    Ok(Some(Err(_))) => {
                        tracing::warn!(upstream = %inner.label, max = inner.max_line,
                        "the upstream process wrote a line longer than upstream.max_message_bytes; dropped")
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        })
    };
    let logger = tokio::spawn(log_stderr(
        stderr,
        inner.label.clone(),
        inner.cfg.stderr_lines_per_second,
        inner.redactor.clone(),
    ));

    let mut stop_later = stop.clone();
    let outcome = tokio::select! {
        r = handshake(inner, generation) => match r {
            Ok(init) => {
                inner.status.send_replace(Status::Ready { generation, pid, init: Arc::new(init) });
                inner.router.ready(generation);
                tokio::select! {
                    status = process.wait() => Err(exit_text(status)),
                    () = stopped(&mut stop_later) => Ok(()),
                }
            }
            Err(why) => Err(why),
        },
        status = process.wait() => Err(exit_text(status)),
        () = stopped(stop) => Ok(()),
    };
    let why = match &outcome {
        Ok(()) => "was stopped".to_owned(),
        Err(w) => w.clone(),
    };
    // No new message reaches this process from here on; its calls fail now.
    inner.fail_generation(generation, &why);
    // Dropping the writer drops the child's stdin: MCP servers exit at the end of their input.
    writer.abort();
    let _ = writer.await;
    end_process(inner, &mut process, pid, outcome.is_ok()).await;
    reader.abort();
    // Its last stderr lines, unless something that escaped the group still holds the pipe.
    let mut logger = logger;
    if tokio::time::timeout(Duration::from_secs(1), &mut logger)
        .await
        .is_err()
    {
        logger.abort();
    }
    outcome
}

/// Close stdin and give the process `stop_timeout`, then SIGTERM, then SIGKILL; finally kill
/// whatever is left of its process group.
async fn end_process(inner: &Inner, process: &mut Process, pid: u32, graceful: bool) {
    let t = inner.cfg.stop_timeout;
    if graceful
        && matches!(process.try_wait(), Ok(None))
        && tokio::time::timeout(t, process.wait()).await.is_err()
    {
        signal_group(pid, libc::SIGTERM);
        if tokio::time::timeout(t, process.wait()).await.is_err() {
            tracing::warn!(upstream = %inner.label, pid, "the upstream process ignored SIGTERM; killing it");
        }
    }
    // What is left of the group (the child's own children) goes with it. The group id stays
    // taken while any member lives, so this reaches no stranger.
    signal_group(pid, libc::SIGKILL);
    let _ = process.kill().await;
}

/// Resolves once the gateway asks the child to stop.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn exit_text(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => format!("exited ({s})"),
        Err(e) => format!("could not be waited for ({e})"),
    }
}

/// `initialize`, then `notifications/initialized`. The gateway declares no client
/// capabilities: it cannot promise that every client behind it answers sampling,
/// elicitation or roots requests.
async fn handshake(inner: &Arc<Inner>, generation: u64) -> Result<Value, String> {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": CHILD_PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "eks-mcp-gateway", "version": env!("CARGO_PKG_VERSION")},
    }});
    let Value::Object(init) = init else {
        unreachable!("a JSON object literal")
    };
    let mut call = inner
        .send_request(generation, init, Route::default())
        .await
        .map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(inner.cfg.init_timeout, &mut call.done).await;
    call.answered();
    let answer = match answer {
        Err(_) => {
            return Err(format!(
                "did not answer initialize within {:?} (upstream.command.init_timeout)",
                inner.cfg.init_timeout
            ));
        }
        Ok(Err(_)) => return Err("exited during the MCP handshake".into()),
        Ok(Ok(Err(e))) => return Err(e.to_string()),
        Ok(Ok(Ok(v))) => v,
    };
    let Some(result) = answer.get("result").filter(|r| r.is_object()) else {
        return Err(format!(
            "refused initialize: {}",
            answer.get("error").cloned().unwrap_or(Value::Null)
        ));
    };
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let writer = lock(&inner.state).writer.clone();
    match writer {
        Some(w) if w.send(line_of(&initialized)).await.is_ok() => {}
        _ => return Err("closed its stdin during the MCP handshake".into()),
    }
    let version = result
        .get("protocolVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("?");
    tracing::info!(upstream = %inner.label, generation, version,
        "the upstream process finished the MCP handshake");
    Ok(result.clone())
}

async fn write_lines(mut stdin: tokio::process::ChildStdin, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(line) = rx.recv().await {
        if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
            break;
        }
    }
}

/// The child's stderr into the gateway's log, each line prefixed with the program's name,
/// at most `per_second` lines a second (the rest counted), secrets redacted.
async fn log_stderr(
    stderr: tokio::process::ChildStderr,
    label: String,
    per_second: u32,
    redactor: Arc<crate::redact::Redactor>,
) {
    let mut lines = LineReader::new(stderr, MAX_STDERR_LINE);
    let mut window = Instant::now();
    let mut logged = 0u32;
    let mut suppressed = 0u64;
    let profiles = [crate::redact::BASELINE.to_owned()];
    loop {
        let line = match lines.next().await {
            Ok(Some(Ok(l))) => String::from_utf8_lossy(&l).into_owned(),
            Ok(Some(Err(_))) => format!("[a line longer than {MAX_STDERR_LINE} bytes, dropped]"),
            Ok(None) | Err(_) => break,
        };
        if window.elapsed() >= Duration::from_secs(1) {
            if suppressed > 0 {
                tracing::warn!(upstream = %label, suppressed, "[{label}] stderr: {suppressed} lines not logged (over upstream.command.stderr_lines_per_second)");
            }
            window = Instant::now();
            logged = 0;
            suppressed = 0;
        }
        if logged >= per_second {
            suppressed += 1;
            continue;
        }
        logged += 1;
        let (clean, _) = redactor.redact_text(&line, &profiles);
        tracing::info!(target: "eks_mcp_gateway::upstream_stderr", upstream = %label, "[{label}] {clean}");
    }
    if suppressed > 0 {
        tracing::warn!(upstream = %label, suppressed, "[{label}] stderr: {suppressed} lines not logged (over upstream.command.stderr_lines_per_second)");
    }
}
