//! The stdio front (`eks-mcp-gateway stdio`): MCP as newline-delimited JSON-RPC on
//! stdin/stdout, through the same policy, redaction and audit as HTTP, in front of the embedded
//! upstream. In-process (over pipes) for the details, and the real binary for the command.
use std::process::Stdio;
use std::time::Duration;

use eks_mcp_gateway::config::PolicyMode;
use eks_mcp_gateway::pipeline::Gateway;
use eks_mcp_gateway::sim::{self, SimConfig, SimHandle};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::harness::{base_config, policy_dir, read_jsonl};

use eks_mcp_gateway::sim::CRASHLOOP_POD;

/// A client's side of the stdio front: write lines, read lines.
struct Peer {
    input: tokio::io::DuplexStream,
    output: tokio::io::Lines<BufReader<tokio::io::DuplexStream>>,
}

impl Peer {
    async fn send(&mut self, line: &str) {
        self.input.write_all(line.as_bytes()).await.unwrap();
        self.input.write_all(b"\n").await.unwrap();
    }

    async fn send_json(&mut self, v: Value) {
        self.send(&v.to_string()).await;
    }

    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(20), self.output.next_line())
            .await
            .expect("an answer within 20 s")
            .unwrap()
            .expect("stdout still open");
        assert!(!line.contains('\n'));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// The answer to request `id`, keeping any other message that arrives first.
    async fn answer(&mut self, id: i64, others: &mut Vec<Value>) -> Value {
        loop {
            let m = self.next().await;
            if m.get("id") == Some(&json!(id)) && m.get("method").is_none() {
                return m;
            }
            others.push(m);
        }
    }

    async fn request(&mut self, id: i64, method: &str, params: Value) -> Value {
        self.send_json(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        self.answer(id, &mut Vec::new()).await
    }
}

/// The stdio front of `gateway` over in-memory pipes: the client's side, the stop signal and
/// the serving task.
#[allow(clippy::type_complexity)]
fn serve_in_memory(
    gateway: std::sync::Arc<Gateway>,
) -> (
    Peer,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let (client_in, server_in) = tokio::io::duplex(1 << 20);
    let (server_out, client_out) = tokio::io::duplex(1 << 20);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(eks_mcp_gateway::stdio::serve(
        gateway,
        server_in,
        server_out,
        eks_mcp_gateway::stdio::Credential::None,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let peer = Peer {
        input: client_in,
        output: BufReader::new(client_out).lines(),
    };
    (peer, stop_tx, serving)
}

struct Setup {
    sim: SimHandle,
    audit: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = sim::start(SimConfig::default(), listener).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    Setup {
        sim,
        audit,
        _dir: dir,
    }
}

fn tool_text(answer: &Value) -> String {
    answer["result"]["content"]
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn stdio_session_is_decided_redacted_and_audited_like_http() {
    let s = setup().await;
    let mut cfg = base_config(
        &s.sim.url(),
        "alice@example.com",
        &["payments-dev".to_string()],
        PolicyMode::Enforce,
        &policy_dir(),
        &s.audit,
    );
    cfg.limits.max_body_bytes = 64 * 1024;
    let gateway = Gateway::build(cfg).await.unwrap();
    let (mut peer, stop_tx, serving) = serve_in_memory(gateway.clone());

    // Session era: initialize opens an upstream session that later messages carry.
    let init = peer
        .request(
            1,
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "stdio-test", "version": "1"}}),
        )
        .await;
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18", "{init}");
    assert_eq!(s.sim.session_count(), 1);
    peer.send_json(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;

    // tools/list is filtered for the caller: no AWS write tools without an AWS grant.
    let list = peer.request(2, "tools/list", json!({})).await;
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"read_k8s_resource"), "{names:?}");
    assert!(!names.contains(&"add_inline_policy"), "{names:?}");

    // A denied call comes back as a tool error with the policy's reason and never reaches
    // the upstream.
    s.sim.clear_received();
    let denied = peer
        .request(
            3,
            "tools/call",
            json!({"name": "read_k8s_resource", "arguments": {"cluster_name": "dev", "kind": "Secret", "api_version": "v1", "name": "db", "namespace": "payments"}}),
        )
        .await;
    assert_eq!(denied["result"]["isError"], true, "{denied}");
    assert!(
        tool_text(&denied).contains("Secret contents never leave the cluster"),
        "{denied}"
    );
    assert!(
        s.sim.tool_calls().is_empty(),
        "a denied call reached the upstream"
    );

    // An allowed call: the crash-looping pod's logs arrive with their secrets redacted.
    let logs = peer
        .request(
            4,
            "tools/call",
            json!({"name": "get_pod_logs", "arguments": {"cluster_name": "dev", "namespace": "payments", "pod_name": CRASHLOOP_POD}}),
        )
        .await;
    let text = tool_text(&logs);
    assert!(text.contains("[REDACTED:"), "{logs}");
    assert!(!text.contains(sim::planted::PASSWORD), "{text}");
    let upstream_call = s.sim.received().into_iter().last().expect("forwarded");
    assert!(
        upstream_call.header("mcp-session-id").is_some(),
        "the session id goes upstream"
    );
    assert_eq!(
        upstream_call.header("mcp-protocol-version"),
        Some("2025-06-18")
    );

    // Bad lines get a JSON-RPC error and the session goes on.
    peer.send("{not json").await;
    let err = peer.next().await;
    assert_eq!(err["error"]["code"], -32700, "{err}");
    peer.send(&format!(
        r#"{{"jsonrpc":"2.0","id":5,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(70 * 1024)
    ))
    .await;
    let err = peer.next().await;
    assert_eq!(err["id"], Value::Null);
    assert_eq!(err["error"]["code"], -32600, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limits.max_body_bytes"),
        "{err}"
    );
    let ping = peer.request(6, "ping", json!({})).await;
    assert_eq!(ping["result"], json!({}), "{ping}");

    // A stateless-era message carries its own protocol version and no session.
    let stateless = peer
        .request(
            7,
            "tools/call",
            json!({"name": "list_k8s_resources",
                   "arguments": {"cluster_name": "dev", "kind": "Pod", "api_version": "v1", "namespace": "payments"},
                   "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}),
        )
        .await;
    assert!(
        tool_text(&stateless).contains("Pod resources in payments"),
        "{stateless}"
    );
    let forwarded = s.sim.received().into_iter().last().expect("forwarded");
    assert_eq!(forwarded.header("mcp-method"), Some("tools/call"));
    assert_eq!(forwarded.header("mcp-name"), Some("list_k8s_resources"));
    assert_eq!(forwarded.header("mcp-session-id"), None);

    // stdin closes: the session is ended upstream and the audit trail names the caller.
    drop(peer);
    let _ = stop_tx;
    tokio::time::timeout(Duration::from_secs(20), serving)
        .await
        .expect("serve returns when stdin closes")
        .unwrap()
        .unwrap();
    assert!(
        s.sim.received().iter().any(|r| r.http_method == "DELETE"),
        "the session was ended with DELETE"
    );
    eks_mcp_gateway::front::flush_audit(&gateway).await;
    let records = read_jsonl(&s.audit);
    let calls: Vec<&Value> = records
        .iter()
        .filter(|r| r.to_string().contains("get_pod_logs"))
        .collect();
    assert!(!calls.is_empty(), "audit records: {records:?}");
    assert!(calls[0].to_string().contains("alice@example.com"));
    assert!(
        !records
            .iter()
            .any(|r| r.to_string().contains(sim::planted::PASSWORD)),
        "no secret in the audit trail"
    );
}

#[tokio::test]
async fn stdio_command_speaks_only_mcp_on_stdout() {
    let s = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "upstream:\n  url: {}\npolicy:\n  dir: {}\nauth:\n  mode: static\n  principal: alice@example.com\n  groups: [payments-dev]\naudit:\n  sink: {}\n",
            s.sim.url(),
            policy_dir().display(),
            s.audit.display()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_eks-mcp-gateway"))
        .arg("stdio")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let lines = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "apply_yaml", "arguments": {"cluster_name": "prod", "namespace": "payments", "yaml_content": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: payments\n"}}}),
    ];
    for l in &lines {
        stdin.write_all(format!("{l}\n").as_bytes()).await.unwrap();
    }
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the command exits when stdin closes")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let messages: Vec<Value> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stdout line is not JSON-RPC ({e}): {l}"))
        })
        .collect();
    assert_eq!(messages.len(), 2, "{stdout}");
    let write = messages.iter().find(|m| m["id"] == 2).expect("answer to 2");
    assert_eq!(write["result"]["isError"], true, "{write}");
    assert!(tool_text(write).contains("read-only"), "{write}");
    // Debug logs went to stderr.
    assert!(!out.stderr.is_empty());
    assert!(
        s.sim.tool_calls().is_empty(),
        "the denied write reached the upstream"
    );
}

/// With API-key (or JWT) authentication the stdio front sends the credential it was given
/// (for the command: `EKS_MCP_GATEWAY_TOKEN`, or the file `EKS_MCP_GATEWAY_TOKEN_FILE` names,
/// read again for every message so a rotated token is picked up); without one, each request
/// gets a JSON-RPC error saying why, and nothing reaches the upstream.
#[tokio::test]
async fn stdio_with_api_keys_sends_the_credential_and_reports_a_refusal() {
    use eks_mcp_gateway::stdio::Credential;
    let s = setup().await;
    let keys = s.audit.with_file_name("keys.yaml");
    let hash = eks_mcp_gateway::identity::api_key_hash;
    std::fs::write(
        &keys,
        format!(
            "keys:\n  - sha256: {}\n    principal: ci-bot\n    groups: [payments-dev]\n  - sha256: {}\n    principal: ops-bot\n    groups: [payments-dev]\n",
            hash("key-ci-bot-0001"),
            hash("key-ops-bot-0002")
        ),
    )
    .unwrap();
    let mut cfg = base_config(
        &s.sim.url(),
        "unused",
        &[],
        PolicyMode::Enforce,
        &policy_dir(),
        &s.audit,
    );
    cfg.auth = serde_yaml::from_str(&format!("mode: api_key\nfile: {}\n", keys.display())).unwrap();
    let gateway = Gateway::build(cfg).await.unwrap();
    let pods = json!({"name": "list_k8s_resources", "arguments": {"cluster_name": "dev", "kind": "Pod", "api_version": "v1", "namespace": "payments"},
                      "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}});
    let token_file = s.audit.with_file_name("token");
    std::fs::write(&token_file, "key-ci-bot-0001\n").unwrap();

    for credential in [
        Credential::None,
        Credential::Token("key-ci-bot-0001".into()),
        Credential::File(token_file.clone()),
    ] {
        let (client_in, server_in) = tokio::io::duplex(1 << 16);
        let (server_out, client_out) = tokio::io::duplex(1 << 20);
        let serving = tokio::spawn(eks_mcp_gateway::stdio::serve(
            gateway.clone(),
            server_in,
            server_out,
            credential.clone(),
            std::future::pending(),
        ));
        let mut peer = Peer {
            input: client_in,
            output: BufReader::new(client_out).lines(),
        };
        let calls_before = s.sim.tool_calls().len();
        let answer = peer.request(1, "tools/call", pods.clone()).await;
        match &credential {
            Credential::None => {
                let message = answer["error"]["message"].as_str().unwrap_or_default();
                assert!(message.contains("EKS_MCP_GATEWAY_TOKEN"), "{answer}");
                assert_eq!(
                    s.sim.tool_calls().len(),
                    calls_before,
                    "an anonymous call reached the upstream"
                );
            }
            _ => {
                assert!(
                    tool_text(&answer).contains("Pod resources in payments"),
                    "{answer}"
                );
                assert_eq!(s.sim.tool_calls().len(), calls_before + 1);
            }
        }
        if let Credential::File(path) = &credential {
            // The credential helper rotates the token: the next message carries the new one.
            std::fs::write(path, "key-ops-bot-0002\n").unwrap();
            let again = peer.request(2, "tools/call", pods.clone()).await;
            assert!(
                tool_text(&again).contains("Pod resources in payments"),
                "{again}"
            );
        }
        drop(peer);
        serving.await.unwrap().unwrap();
    }
    eks_mcp_gateway::front::flush_audit(&gateway).await;
    let records = read_jsonl(&s.audit);
    let by = |who: &str| {
        records
            .iter()
            .filter(|r| r["principal"]["id"] == who && r["tool"] == "list_k8s_resources")
            .count()
    };
    assert_eq!(by("ci-bot"), 2, "{records:?}");
    assert_eq!(
        by("ops-bot"),
        1,
        "the rotated token names the new key's principal"
    );
    assert!(
        !records.iter().any(|r| {
            let t = r.to_string();
            t.contains("key-ci-bot-0001") || t.contains("key-ops-bot-0002")
        }),
        "keys are never audited"
    );
}

/// What the server sends on its own (here `notifications/resources/list_changed` after a
/// namespace is created) reaches stdout through the session's GET stream.
#[tokio::test]
async fn stdio_relays_server_messages_from_the_get_stream() {
    let s = setup().await;
    let cfg = base_config(
        &s.sim.url(),
        "ada@example.com",
        &["platform-admins".to_string()],
        PolicyMode::Enforce,
        &policy_dir(),
        &s.audit,
    );
    let gateway = Gateway::build(cfg).await.unwrap();
    let (client_in, server_in) = tokio::io::duplex(1 << 16);
    let (server_out, client_out) = tokio::io::duplex(1 << 20);
    let serving = tokio::spawn(eks_mcp_gateway::stdio::serve(
        gateway,
        server_in,
        server_out,
        eks_mcp_gateway::stdio::Credential::None,
        std::future::pending(),
    ));
    let mut peer = Peer {
        input: client_in,
        output: BufReader::new(client_out).lines(),
    };
    peer.request(
        1,
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
    )
    .await;
    peer.send_json(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    // The GET stream opens after notifications/initialized.
    for _ in 0..500 {
        if s.sim.received().iter().any(|r| r.http_method == "GET") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Each namespace created is announced to the session's streams; one announced while the
    // GET stream was still being set up would be missed, so create another until one arrives.
    let mut others = Vec::new();
    let mut seen = false;
    for attempt in 0..20i64 {
        let id = 100 + attempt;
        peer.send_json(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "manage_k8s_resource", "arguments": {"operation": "create", "cluster_name": "dev",
            "kind": "Namespace", "api_version": "v1", "name": format!("stdio-test-{attempt}"),
            "body": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("stdio-test-{attempt}")}}}}}))
            .await;
        let created = peer.answer(id, &mut others).await;
        assert_ne!(created["result"]["isError"], true, "{created}");
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        loop {
            seen = others
                .iter()
                .any(|m| m["method"] == "notifications/resources/list_changed");
            if seen {
                break;
            }
            let Ok(Ok(Some(line))) =
                tokio::time::timeout_at(deadline, peer.output.next_line()).await
            else {
                break;
            };
            others.push(serde_json::from_str(&line).unwrap());
        }
        if seen {
            break;
        }
    }
    assert!(seen, "no list_changed notification on stdout: {others:?}");
    drop(peer);
    tokio::time::timeout(Duration::from_secs(20), serving)
        .await
        .expect("serve returns when stdin closes, GET stream and all")
        .unwrap()
        .unwrap();
}

/// Human confirmation with the assistant on the other end of stdin/stdout: in the session era
/// the gateway's `elicitation/create` arrives as a stdout line and the client's answer goes
/// back as a stdin line; in 2026-07-28 the `InputRequiredResult` comes back and the retry
/// carries the answer and the sealed state. Nothing reaches the upstream before an accept.
#[tokio::test]
async fn stdio_confirmations_in_both_eras() {
    let s = setup().await;
    let cfg = base_config(
        &s.sim.url(),
        "dana@example.com",
        &["payments-dev".to_string()],
        PolicyMode::Enforce,
        &policy_dir(),
        &s.audit,
    );
    let gateway = Gateway::build(cfg).await.unwrap();
    let (mut peer, stop_tx, serving) = serve_in_memory(gateway.clone());
    let patch = |replicas: u64| {
        json!({"operation": "patch", "cluster_name": "staging", "kind": "Deployment",
               "api_version": "apps/v1", "name": "payments-api", "namespace": "payments",
               "body": {"spec": {"replicas": replicas}}})
    };
    let writes = |sim: &SimHandle| {
        sim.tool_calls()
            .iter()
            .filter(|(t, _)| t == "manage_k8s_resource")
            .count()
    };

    // Session era.
    peer.request(
        1,
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {"elicitation": {}},
               "clientInfo": {"name": "stdio-test", "version": "1"}}),
    )
    .await;
    peer.send_json(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    for (id, action, forwarded) in [(2, "decline", 0), (3, "accept", 1)] {
        peer.send_json(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                              "params": {"name": "manage_k8s_resource", "arguments": patch(2)}}))
            .await;
        let question = loop {
            let m = peer.next().await;
            if m["method"] == "elicitation/create" {
                break m;
            }
        };
        assert!(
            question["params"]["message"]
                .as_str()
                .unwrap()
                .contains("payments-api"),
            "{question}"
        );
        assert_eq!(writes(&s.sim), 0, "nothing forwarded before the answer");
        peer.send_json(json!({"jsonrpc": "2.0", "id": question["id"],
                              "result": {"action": action, "content": {"reason": "stdio test"}}}))
            .await;
        let answer = peer.answer(id, &mut Vec::new()).await;
        assert_eq!(
            answer["result"]["isError"],
            action != "accept",
            "{action}: {answer}"
        );
        assert_eq!(writes(&s.sim), forwarded, "{action}");
    }

    // Stateless era.
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}});
    let first = peer
        .request(
            4,
            "tools/call",
            json!({"name": "manage_k8s_resource", "arguments": patch(4), "_meta": meta}),
        )
        .await;
    assert_eq!(first["result"]["resultType"], "input_required", "{first}");
    assert_eq!(writes(&s.sim), 1);
    let retry = peer
        .request(
            5,
            "tools/call",
            json!({"name": "manage_k8s_resource", "arguments": patch(4), "_meta": meta,
                   "requestState": first["result"]["requestState"],
                   "inputResponses": {"io.github.eks-mcp-gateway/confirm":
                       {"action": "accept", "content": {"reason": "stdio stateless"}}}}),
        )
        .await;
    assert_eq!(retry["result"]["resultType"], "complete", "{retry}");
    assert_ne!(retry["result"]["isError"], true, "{retry}");
    assert_eq!(writes(&s.sim), 2);

    let _ = stop_tx.send(());
    let _ = serving.await;
    // Records land shortly after their requests: wait (bounded) for both accepted ones.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let reasons = loop {
        let records = read_jsonl(&s.audit);
        let reasons: Vec<Value> = records
            .iter()
            .filter(|r| r["approval"]["outcome"] == "accepted")
            .map(|r| r["approval"]["reason"].clone())
            .collect();
        if reasons.len() >= 2 || tokio::time::Instant::now() > deadline {
            break reasons;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(reasons, vec![json!("stdio test"), json!("stdio stateless")]);
}
