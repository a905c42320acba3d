//! A stdio MCP server as the upstream (`upstream.command`): the embedded upstream run as a
//! child (`eks-mcp-gateway upstream --stdio`) for multiplexing and supervision, and the real
//! `awslabs.eks-mcp-server` 0.2.1 for interop.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use eks_mcp_gateway::config::CommandConfig;
use eks_mcp_gateway::jsonrpc;
use eks_mcp_gateway::pipeline::Gateway;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::harness::{GatewayGuard, Harness, McpClient, read_jsonl, repo_root};

pub const BIN: &str = env!("CARGO_BIN_EXE_eks-mcp-gateway");

/// `eks-mcp-gateway upstream --stdio` with extra arguments.
pub fn embedded(args: &[&str]) -> CommandConfig {
    let mut all = vec!["upstream".to_owned(), "--stdio".to_owned()];
    all.extend(args.iter().map(|a| a.to_string()));
    command(BIN, &all)
}

pub fn command(program: &str, args: &[String]) -> CommandConfig {
    let doc = json!({"program": program, "args": args, "init_timeout": "20s",
        "restart_backoff": "100ms", "restart_max_backoff": "1s", "stop_timeout": "3s"});
    serde_json::from_value(doc).expect("valid command config")
}

pub struct Gw {
    pub gateway: Arc<Gateway>,
    pub url: String,
    pub audit: PathBuf,
    guard: GatewayGuard,
}

impl Gw {
    pub async fn start(cmd: CommandConfig, principal: &str, groups: &[&str]) -> Gw {
        Self::start_tweaked(cmd, principal, groups, |_| {}).await
    }

    pub async fn start_tweaked(
        cmd: CommandConfig,
        principal: &str,
        groups: &[&str],
        tweak: impl FnOnce(&mut eks_mcp_gateway::config::Config) + Send + 'static,
    ) -> Gw {
        let (gateway, addr, guard, audit) =
            Harness::in_front_of_command(cmd, principal, groups, Some(Box::new(tweak))).await;
        Gw {
            gateway,
            url: format!("http://{addr}/mcp"),
            audit,
            guard,
        }
    }

    pub fn client(&self) -> McpClient {
        McpClient::new(&self.url)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        get_json(&self.url.replace("/mcp", path)).await
    }

    /// Wait until `/readyz` says something about the upstream that `pred` accepts.
    pub async fn wait_upstream(&self, what: &str, pred: impl Fn(bool, &str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (_, doc) = self.get("/readyz").await;
            let ok = doc["checks"]["upstream"]["ok"] == json!(true);
            let detail = doc["checks"]["upstream"]["detail"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if pred(ok, &detail) {
                return detail;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waiting for the upstream to be {what}; /readyz says {doc}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stop the front, then the child, as `serve` does on SIGTERM.
    pub async fn stop(self) {
        self.guard.stop().await;
        self.gateway.upstream.shutdown().await;
    }
}

pub async fn get_json(url: &str) -> (StatusCode, Value) {
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let resp = http
        .request(Request::get(url).body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let doc =
        serde_json::from_slice(&body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&body)));
    (status, doc)
}

/// The pid in a `/readyz` upstream detail ("... running (pid 123, start 1, ...)").
pub fn pid_of(detail: &str) -> i32 {
    detail
        .split("pid ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {detail:?}"))
}

/// True while a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd).contains(marker)
            && alive(pid)
        {
            out.push(pid);
        }
    }
    out
}

pub async fn wait_gone(pid: i32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while alive(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "process {pid} is still running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `initialize` alone (the harness's `initialize` asserts that it succeeds).
async fn initialize_only(client: &McpClient) -> crate::harness::Reply {
    client
        .request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "gateway-tests", "version": "1.0"}}),
        )
        .await
}

/// Audit records, once one matches `pred` (the writer is asynchronous).
pub async fn audit_until(path: &Path, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let records = read_jsonl(path);
        if pred(&records) || tokio::time::Instant::now() > deadline {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_running(ok: bool, detail: &str) -> bool {
    ok && detail.contains("running")
}

// ---- both eras, one child --------------------------------------------------------------------

/// Two session-era clients and a stateless one share the one child: each gets the answer to
/// its own request although they use the same JSON-RPC ids, progress reaches the client that
/// asked for it under its own token, and the child sees gateway ids only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_upstream_serves_both_eras_over_one_child_session() {
    let gw = Gw::start(
        embedded(&["--tool-names", "open-source"]),
        "alice@example.com",
        &["platform-admins"],
    )
    .await;
    let mut a = gw.client();
    let mut b = gw.client();
    let init = a.initialize().await;
    assert_eq!(
        init.result()["serverInfo"]["name"],
        "eks-mcp-server",
        "{}",
        init.text()
    );
    b.initialize_with("2025-06-18", json!({})).await;
    assert_ne!(a.session, b.session);
    // Same ids (both clients count from 2 now), different questions, concurrently.
    let (ra, rb) = tokio::join!(
        a.call_tool(
            "list_k8s_resources",
            json!({"cluster_name": "dev", "kind": "Deployment", "api_version": "apps/v1", "namespace": "payments"})
        ),
        b.call_tool(
            "list_k8s_resources",
            json!({"cluster_name": "dev", "kind": "Deployment", "api_version": "apps/v1", "namespace": "checkout"})
        ),
    );
    assert_eq!(ra.response()["id"], rb.response()["id"]);
    assert!(ra.tool_text().contains("payments-api"), "{}", ra.text());
    assert!(!ra.tool_text().contains("checkout-web"), "{}", ra.text());
    assert!(rb.tool_text().contains("checkout-web"), "{}", rb.text());

    // Progress: an SSE answer with the client's own token on every notification.
    let id = a.next_id();
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": "get_eks_metrics_guidance", "arguments": {"resource_type": "cluster"},
        "_meta": {"progressToken": "my-token"}}});
    let streamed = a.post_raw(serde_json::to_vec(&body).unwrap(), &[]).await;
    let progress: Vec<&Value> = streamed
        .messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert!(!progress.is_empty(), "{}", streamed.text());
    assert!(
        progress
            .iter()
            .all(|p| p["params"]["progressToken"] == "my-token")
    );
    assert_eq!(streamed.response()["id"], id);
    assert_eq!(streamed.result()["isError"], false, "{}", streamed.text());

    // The stateless era on the same child: discover, then a call with resultType.
    let discover = a.stateless("server/discover", json!({})).await;
    assert!(
        discover.result()["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("2026-07-28")),
        "{}",
        discover.text()
    );
    let call = a
        .stateless_call("get_eks_metrics_guidance", json!({"resource_type": "node"}))
        .await;
    assert_eq!(call.result()["resultType"], "complete", "{}", call.text());
    assert_eq!(call.result()["isError"], false, "{}", call.text());

    // An unknown session is refused as the transport prescribes.
    let mut stranger = gw.client();
    stranger.session = Some("not-a-session".into());
    let lost = stranger.request("tools/list", json!({})).await;
    assert_eq!(lost.status, StatusCode::NOT_FOUND, "{}", lost.text());
    assert_eq!(a.delete_session().await, StatusCode::OK);
    gw.stop().await;
}

// ---- supervision ---------------------------------------------------------------------------

/// The child is killed with a call in flight: the call fails at once with -31010, the child
/// is started again, the old session is gone (404, initialize again), a new one works, and
/// the audit record names the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_upstream_child_killed_mid_call_is_restarted() {
    let gw = Gw::start(
        embedded(&["--delay-tool", "get_eks_metrics_guidance=120"]),
        "alice@example.com",
        &["platform-admins"],
    )
    .await;
    let detail = gw.wait_upstream("running", is_running).await;
    let first = pid_of(&detail);
    let mut client = gw.client();
    client.initialize().await;
    let caller = client.clone();
    let call = tokio::spawn(async move {
        caller
            .call_tool(
                "get_eks_metrics_guidance",
                json!({"resource_type": "cluster"}),
            )
            .await
    });
    gw.wait_upstream("holding the call", |ok, d| {
        ok && d.contains("1 call(s) in flight")
    })
    .await;
    // SAFETY: kill(2) on the child the gateway started.
    unsafe {
        libc::kill(first, libc::SIGKILL);
    }
    let reply = call.await.unwrap();
    assert_eq!(
        reply.error()["code"],
        jsonrpc::UPSTREAM_UNAVAILABLE,
        "{}",
        reply.text()
    );
    assert_eq!(reply.error()["data"]["kind"], "upstream_unavailable");
    assert!(
        reply.error()["message"]
            .as_str()
            .unwrap()
            .contains("exited"),
        "{}",
        reply.text()
    );
    let detail = gw
        .wait_upstream("running again", |ok, d| {
            is_running(ok, d) && pid_of(d) != first
        })
        .await;
    assert!(detail.contains("start 2"), "{detail}");
    wait_gone(first).await;
    // The old session ended with the old child.
    let stale = client.request("tools/list", json!({})).await;
    assert_eq!(stale.status, StatusCode::NOT_FOUND, "{}", stale.text());
    let mut again = gw.client();
    again.initialize().await;
    let listed = again.request("tools/list", json!({})).await;
    assert!(
        listed.text().contains("list_k8s_resources"),
        "{}",
        listed.text()
    );
    let records = audit_until(&gw.audit, |r| {
        r.iter().any(|r| r["tool"] == "get_eks_metrics_guidance")
    })
    .await;
    let failed = records
        .iter()
        .find(|r| r["tool"] == "get_eks_metrics_guidance")
        .expect("an audit record for the failed call");
    assert_eq!(
        failed["upstream"]["error"], "upstream_unavailable",
        "{failed}"
    );
    let (_, metrics) = get_json(&gw.url.replace("/mcp", "/metrics")).await;
    assert!(
        metrics
            .as_str()
            .unwrap_or_default()
            .contains("mcp_gateway_upstream_restarts_total"),
        "{metrics}"
    );
    let last = pid_of(&detail);
    gw.stop().await;
    wait_gone(last).await;
}

/// A program that cannot start, and one that starts but never answers `initialize`: the
/// gateway stays up, `/readyz` says why, calls fail fast with -31010, and nothing the
/// attempts started is left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_upstream_that_never_starts_fails_calls_and_leaves_nothing_behind() {
    let missing = Gw::start_tweaked(
        command("/nonexistent/eks-mcp-server", &[]),
        "alice@example.com",
        &["platform-admins"],
        |c| c.upstream.connect_timeout = Duration::from_millis(300),
    )
    .await;
    let detail = missing
        .wait_upstream("failing to start", |ok, d| {
            !ok && d.contains("could not start")
        })
        .await;
    assert!(detail.contains("/nonexistent/eks-mcp-server"), "{detail}");
    let (status, _) = missing.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let reply = initialize_only(&missing.client()).await;
    assert_eq!(
        reply.error()["code"],
        jsonrpc::UPSTREAM_UNAVAILABLE,
        "{}",
        reply.text()
    );
    missing.stop().await;

    let marker = format!("never-answers-{}", std::process::id());
    let mut silent = command(
        "/bin/sh",
        &["-c".into(), format!("sleep 3600; echo {marker}")],
    );
    silent.init_timeout = Duration::from_millis(300);
    let gw = Gw::start_tweaked(silent, "alice@example.com", &["platform-admins"], |c| {
        c.upstream.connect_timeout = Duration::from_millis(300)
    })
    .await;
    let detail = gw
        .wait_upstream("restarting after a silent start", |ok, d| {
            !ok && d.contains("did not answer initialize") && d.contains("attempt 2")
        })
        .await;
    assert!(detail.contains("init_timeout"), "{detail}");
    let reply = initialize_only(&gw.client()).await;
    assert_eq!(
        reply.error()["code"],
        jsonrpc::UPSTREAM_UNAVAILABLE,
        "{}",
        reply.text()
    );
    gw.stop().await;
    // Each attempt's shell and its `sleep` went with their process group.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !processes_with(&marker).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "left behind: {:?}",
            processes_with(&marker)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child that floods its stderr and writes lines that are not JSON-RPC on stdout: the
/// garbage is skipped, the flood is drained (the child never blocks on a full pipe), and
/// calls keep being answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_upstream_that_floods_stderr_and_writes_garbage_keeps_serving() {
    let script = format!(
        "i=0; while [ $i -lt 3000 ]; do echo \"flood line $i with some padding to fill the pipe quickly .......\" >&2; i=$((i+1)); done; \
         echo 'this is not JSON'; echo '[1,2,3]'; echo '{{\"jsonrpc\":\"2.0\"}}'; \
         exec {BIN} upstream --stdio"
    );
    let mut cmd = command("/bin/sh", &["-c".into(), script]);
    cmd.stderr_lines_per_second = 50;
    let gw = Gw::start(cmd, "alice@example.com", &["platform-admins"]).await;
    gw.wait_upstream("running", is_running).await;
    let mut client = gw.client();
    client.initialize().await;
    for _ in 0..3 {
        let reply = client
            .call_tool(
                "get_eks_metrics_guidance",
                json!({"resource_type": "cluster"}),
            )
            .await;
        assert_eq!(reply.result()["isError"], false, "{}", reply.text());
    }
    gw.wait_upstream("still the first child", |ok, d| {
        is_running(ok, d) && d.contains("start 1")
    })
    .await;
    gw.stop().await;
}

/// SIGTERM to a running `serve` with a call in flight: the call is answered (drained), then
/// the child is stopped and the gateway exits 0. SIGKILL to the gateway takes the child
/// with it (PR_SET_PDEATHSIG).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_upstream_sigterm_drains_the_call_then_stops_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("gateway.yaml");
    let write_config = |port: u16, args: &str| {
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\nupstream:\n  command:\n    program: {program}\n    args: {args}\n\
                 policy:\n  dir: {}\n  hot_reload: false\nauth:\n  mode: static\n  principal: alice@example.com\n  groups: [platform-admins]\n\
                 audit:\n  sink: {}\nlimits:\n  shutdown_grace: 20s\n",
                repo_root().join("policies").display(),
                dir.path().join("audit.jsonl").display(),
                program = if args.starts_with("[-c") { "/bin/sh" } else { BIN },
            ),
        )
        .unwrap();
    };
    write_config(
        port,
        "[upstream, --stdio, --delay-tool, get_eks_metrics_guidance=1]",
    );
    let mut gateway = tokio::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let readyz = url.replace("/mcp", "/readyz");
    let child_pid = wait_ready_pid(&readyz, "").await;
    let mut client = McpClient::new(&url);
    client.initialize().await;
    let caller = client.clone();
    let call = tokio::spawn(async move {
        caller
            .call_tool(
                "get_eks_metrics_guidance",
                json!({"resource_type": "cluster"}),
            )
            .await
    });
    wait_ready_pid(&readyz, "1 call(s) in flight").await;
    // SAFETY: kill(2) on the gateway process this test started.
    unsafe {
        libc::kill(gateway.id().unwrap() as i32, libc::SIGTERM);
    }
    let reply = call.await.unwrap();
    assert_eq!(reply.result()["isError"], false, "{}", reply.text());
    let status = tokio::time::timeout(Duration::from_secs(30), gateway.wait())
        .await
        .expect("the gateway exits after draining")
        .unwrap();
    assert!(status.success(), "{status}");
    wait_gone(child_pid).await;

    // A gateway killed outright does not leave its child behind either, even a child that
    // would outlive the end of its input (a shell that goes on after the server exits).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    write_config(port, &format!("[-c, \"{BIN} upstream --stdio; sleep 30\"]"));
    let mut gateway = tokio::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let readyz = format!("http://127.0.0.1:{port}/readyz");
    let child_pid = wait_ready_pid(&readyz, "").await;
    gateway.start_kill().unwrap();
    let _ = gateway.wait().await;
    wait_gone(child_pid).await;
}

/// Poll a gateway's `/readyz` until the upstream runs and its detail contains `needle`.
async fn wait_ready_pid(readyz: &str, needle: &str) -> i32 {
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) = http
            .request(Request::get(readyz).body(Full::new(Bytes::new())).unwrap())
            .await
        {
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let detail = doc["checks"]["upstream"]["detail"].as_str().unwrap_or("");
            if doc["checks"]["upstream"]["ok"] == json!(true)
                && detail.contains("running")
                && detail.contains(needle)
            {
                return pid_of(detail);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{readyz} never showed a running upstream with {needle:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---- interop: the real awslabs.eks-mcp-server 0.2.1 -----------------------------------------

fn awslabs_server() -> PathBuf {
    let server = repo_root().join(".cache/venv-mcp/bin/awslabs.eks-mcp-server");
    assert!(
        server.exists(),
        "{} missing; run scripts/setup-interop",
        server.display()
    );
    server
}

/// The real server behind the gateway, through a wrapper that records every line the
/// gateway writes to the server's stdin.
fn recorded_awslabs(record: &Path) -> CommandConfig {
    let mut cmd = command(
        "/bin/sh",
        &[
            "-c".into(),
            "tee -a \"$RECORD\" | \"$SERVER\" --auth-mode iam".into(),
        ],
    );
    cmd.env = [
        ("RECORD", record.display().to_string()),
        ("SERVER", awslabs_server().display().to_string()),
        ("AWS_REGION", "us-west-2".into()),
        ("AWS_ACCESS_KEY_ID", "AKIAINTEROPTESTKEY01".into()),
        (
            "AWS_SECRET_ACCESS_KEY",
            "interop/test/secret/key/not/real/0000000".into(),
        ),
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("FASTMCP_LOG_LEVEL", "WARNING".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    cmd.init_timeout = Duration::from_secs(60);
    cmd
}

/// `awslabs.eks-mcp-server` 0.2.1 as the stdio upstream of a principal in `readers`:
/// `tools/list` hides the tools it may never use, `get_eks_metrics_guidance` (offline) is
/// allowed and answered, every write tool and an unknown tool are denied before the server
/// sees them (its recorded stdin holds no such call), and each call has its audit record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_awslabs_eks_mcp_server_as_stdio_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("server-stdin.jsonl");
    let gw = Gw::start_tweaked(
        recorded_awslabs(&record),
        "rita@example.com",
        &["readers"],
        |c| c.upstream.connect_timeout = Duration::from_secs(60),
    )
    .await;
    let mut client = gw.client();
    let init = client.initialize().await;
    assert_eq!(
        init.result()["serverInfo"]["name"],
        "awslabs.eks-mcp-server",
        "{}",
        init.text()
    );
    let listed = client.request("tools/list", json!({})).await;
    let names: Vec<&str> = listed.result()["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", listed.text()))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for visible in [
        "get_eks_metrics_guidance",
        "list_k8s_resources",
        "search_eks_troubleshoot_guide",
    ] {
        assert!(names.contains(&visible), "{visible} missing from {names:?}");
    }
    for hidden in ["apply_yaml", "add_inline_policy"] {
        assert!(
            !names.contains(&hidden),
            "{hidden} shown to a reader: {names:?}"
        );
    }

    let guidance = client
        .call_tool(
            "get_eks_metrics_guidance",
            json!({"resource_type": "cluster"}),
        )
        .await;
    assert_eq!(guidance.result()["isError"], false, "{}", guidance.text());
    assert!(
        guidance.tool_text().contains("cluster"),
        "{}",
        guidance.text()
    );

    let denied = [
        (
            "manage_k8s_resource",
            json!({"operation": "create", "cluster_name": "dev", "kind": "ConfigMap", "api_version": "v1",
                   "name": "x", "namespace": "payments", "body": {"data": {"a": "b"}}}),
        ),
        (
            "apply_yaml",
            json!({"cluster_name": "dev", "namespace": "payments", "yaml_path": "/tmp/app.yaml"}),
        ),
        (
            "manage_eks_stacks",
            json!({"operation": "deploy", "cluster_name": "dev", "template_file": "/tmp/stack.yaml"}),
        ),
        (
            "add_inline_policy",
            json!({"policy_name": "p", "role_name": "eks-dev-node-role", "permissions": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": "*"}]}),
        ),
        ("delete_everything", json!({"cluster_name": "dev"})),
    ];
    for (tool, args) in &denied {
        let reply = client.call_tool(tool, args.clone()).await;
        assert!(reply.is_tool_error(), "{tool}: {}", reply.text());
        assert!(
            reply.result()["_meta"]["io.github.eks-mcp-gateway/denial"].is_object(),
            "{tool} was not denied by the policy: {}",
            reply.text()
        );
    }

    // What the server received: the handshake, the listing, the one allowed call.
    let lines: Vec<Value> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("the gateway writes JSON lines"))
        .collect();
    let calls: Vec<&str> = lines
        .iter()
        .filter(|l| l["method"] == "tools/call")
        .filter_map(|l| l["params"]["name"].as_str())
        .collect();
    assert_eq!(calls, vec!["get_eks_metrics_guidance"], "{lines:?}");
    assert_eq!(lines[0]["method"], "initialize");
    assert!(
        lines
            .iter()
            .all(|l| l.get("id").is_none_or(|id| id.is_u64()))
    );

    let records = audit_until(&gw.audit, |r| {
        denied
            .iter()
            .all(|(tool, _)| r.iter().any(|rec| rec["tool"] == *tool))
    })
    .await;
    for (tool, _) in &denied {
        let rec = records
            .iter()
            .find(|r| r["tool"] == *tool)
            .unwrap_or_else(|| panic!("no audit record for {tool}: {records:?}"));
        assert_eq!(rec["decision"]["allow"], false, "{rec}");
        assert_eq!(rec["principal"]["id"], "rita@example.com");
    }
    let allowed = records
        .iter()
        .find(|r| r["tool"] == "get_eks_metrics_guidance")
        .expect("audit record of the allowed call");
    assert_eq!(allowed["decision"]["allow"], true, "{allowed}");
    assert_eq!(allowed["upstream"]["error"], Value::Null, "{allowed}");
    gw.stop().await;
}
