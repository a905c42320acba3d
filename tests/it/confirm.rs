//! Human confirmation (`decision.confirm`) through the running gateway against the embedded
//! upstream: the question, the person's answer, and every way a retry is refused. The shipped
//! policy asks a payments developer to confirm writes in staging, and a break-glass member to
//! confirm (typing the name) writes in prod.
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use eks_mcp_gateway::config::PolicyMode;
use serde_json::{Value, json};

use crate::harness::{Harness, McpClient, Options, Reply};

const KEY: &str = "tJ8m0n3y5Qk2VwXz4c6b8d0f2h4j6l8n0p2r4t6v8x0=";
const OTHER_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const INPUT_KEY: &str = "io.github.eks-mcp-gateway/confirm";
const DEV: (&str, &[&str]) = ("dana@example.com", &["payments-dev"]);

fn staging_patch(replicas: u64) -> Value {
    json!({"operation": "patch", "cluster_name": "staging", "kind": "Deployment",
           "api_version": "apps/v1", "name": "payments-api", "namespace": "payments",
           "body": {"spec": {"replicas": replicas}}})
}

/// A key file in a directory the caller keeps alive.
fn key_file(keys: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("approval.key");
    std::fs::write(&path, format!("{keys}\n")).unwrap();
    (dir, path)
}

async fn gateway(
    who: (&str, &[&str]),
    key: &std::path::Path,
    tweak: impl FnOnce(&mut eks_mcp_gateway::config::Config) + Send + 'static,
) -> Harness {
    let key = key.to_path_buf();
    let mut opts = Options::default().principal(who.0, who.1).tweak(move |c| {
        c.approval.key_file = Some(key);
        tweak(c);
    });
    opts.signing = false;
    Harness::start_with(opts).await
}

/// The first stateless tools/call, from a client that declares form elicitation.
async fn call(client: &McpClient, tool: &str, args: Value) -> Reply {
    client
        .stateless(
            "tools/call",
            json!({"name": tool, "arguments": args,
                   "_meta": {"io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}}}}),
        )
        .await
}

/// The retry carrying the person's answer and the echoed state.
async fn retry(client: &McpClient, tool: &str, args: Value, state: &str, answer: Value) -> Reply {
    client
        .stateless(
            "tools/call",
            json!({"name": tool, "arguments": args,
                   "inputResponses": {INPUT_KEY: answer},
                   "requestState": state,
                   "_meta": {"io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}}}}),
        )
        .await
}

fn accept(reason: &str) -> Value {
    json!({"action": "accept", "content": {"reason": reason}})
}

/// The question: an InputRequiredResult with one elicitation and a sealed state.
fn question(reply: &Reply) -> (Value, String) {
    let result = reply.result();
    assert_eq!(result["resultType"], "input_required", "{result}");
    let ask = &result["inputRequests"][INPUT_KEY];
    assert_eq!(ask["method"], "elicitation/create", "{result}");
    assert_eq!(
        result["inputRequests"].as_object().unwrap().len(),
        1,
        "{result}"
    );
    let state = result["requestState"]
        .as_str()
        .expect("requestState")
        .to_owned();
    (ask["params"].clone(), state)
}

fn refused_by(reply: &Reply, rule: &str) {
    assert!(
        reply.is_tool_error(),
        "expected a tool error: {}",
        reply.text()
    );
    let result = reply.result();
    assert_eq!(result["resultType"], "complete", "{result}");
    assert_eq!(
        result["_meta"]["io.github.eks-mcp-gateway/denial"]["rules"],
        json!([rule]),
        "{result}"
    );
}

fn upstream_writes(h: &Harness) -> Vec<Value> {
    h.sim
        .tool_calls()
        .into_iter()
        .filter(|(t, _)| t == "manage_k8s_resource")
        .map(|(_, a)| a)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_confirmation_forwards_the_call_once_and_is_audited() {
    let (_dir, key) = key_file(KEY);
    let h = gateway(DEV, &key, |_| {}).await;
    let c = h.client();
    let args = staging_patch(3);

    let first = call(&c, "manage_k8s_resource", args.clone()).await;
    let (ask, state) = question(&first);
    assert_eq!(
        ask["message"],
        "dana@example.com asks to run manage_k8s_resource (operation patch) on Deployment payments-api in namespace payments of cluster staging (tier staging). Confirm only if you intend this change, and say why."
    );
    assert_eq!(ask["requestedSchema"]["required"], json!(["reason"]));
    assert!(
        upstream_writes(&h).is_empty(),
        "nothing reaches the upstream before the person answers"
    );

    let ok = retry(
        &c,
        "manage_k8s_resource",
        args.clone(),
        &state,
        accept("scale up for INC-42"),
    )
    .await;
    assert!(!ok.is_tool_error(), "{}", ok.text());
    assert_eq!(ok.result()["resultType"], "complete", "{}", ok.text());
    assert_eq!(
        upstream_writes(&h),
        vec![args.clone()],
        "forwarded once, as confirmed"
    );
    let sent = h
        .sim
        .received()
        .into_iter()
        .find(|r| r.tool.as_deref() == Some("manage_k8s_resource"))
        .unwrap();
    let body = String::from_utf8_lossy(&sent.body);
    assert!(
        !body.contains("requestState") && !body.contains(INPUT_KEY),
        "the gateway's state and answer never go upstream: {body}"
    );

    // The same retry again: used once, refused, still one write upstream.
    let again = retry(
        &c,
        "manage_k8s_resource",
        args,
        &state,
        accept("scale up for INC-42"),
    )
    .await;
    refused_by(&again, "confirm.replayed");
    assert_eq!(upstream_writes(&h).len(), 1);

    let recs = h.audit_records(3).await;
    assert_eq!(
        recs[0]["approval"],
        json!({"outcome": "asked"}),
        "{}",
        recs[0]
    );
    assert_eq!(recs[0]["upstream"], Value::Null, "{}", recs[0]);
    let approved = &recs[1];
    assert_eq!(approved["principal"]["id"], "dana@example.com");
    assert_eq!(approved["decision"]["allow"], true);
    assert_eq!(approved["approval"]["outcome"], "accepted", "{approved}");
    assert_eq!(approved["approval"]["reason"], "scale up for INC-42");
    assert!(approved["approval"]["at"].as_str().unwrap().ends_with('Z'));
    assert!(approved["approval"]["round_trip_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(approved["upstream"]["status"], 200, "{approved}");
    assert_eq!(recs[2]["decision"]["rules"], json!(["confirm.replayed"]));
    assert_eq!(recs[2]["approval"]["outcome"], "replayed");
    // policy replay: the question and the accepted call decide as recorded; the refused
    // replay is a gateway refusal, skipped rather than reported as a deny -> allow flip.
    let mut replayer =
        eks_mcp_gateway::policy::Replayer::load(&crate::harness::policy_dir(), None).unwrap();
    let text = std::fs::read_to_string(&h.audit_path).unwrap();
    let report = eks_mcp_gateway::policy::replay_bytes(&mut replayer, "audit", text.as_bytes());
    assert_eq!(report.deny_to_allow, 0, "{}", report.to_text());
    assert_eq!(report.allow_to_deny, 0, "{}", report.to_text());
    assert_eq!(report.unchanged, 2, "{}", report.to_text());
    assert_eq!(report.skipped, 1, "{}", report.to_text());
    let m = eks_mcp_gateway::metrics::global();
    for outcome in ["asked", "accepted", "replayed"] {
        assert!(
            m.approvals_total.with_label_values(&[outcome]).get() >= 1,
            "{outcome}"
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_and_cancelled_confirmations_run_nothing() {
    let (_dir, key) = key_file(KEY);
    let h = gateway(DEV, &key, |_| {}).await;
    let c = h.client();
    let args = staging_patch(0);
    for (action, rule, words) in [
        ("decline", "confirm.declined", "declined"),
        ("cancel", "confirm.cancelled", "dismissed"),
    ] {
        let (_, state) = question(&call(&c, "manage_k8s_resource", args.clone()).await);
        let reply = retry(
            &c,
            "manage_k8s_resource",
            args.clone(),
            &state,
            json!({"action": action}),
        )
        .await;
        refused_by(&reply, rule);
        assert!(reply.tool_text().contains(words), "{}", reply.tool_text());
    }
    // Accepted without a reason is no confirmation either.
    let (_, state) = question(&call(&c, "manage_k8s_resource", args.clone()).await);
    let reply = retry(
        &c,
        "manage_k8s_resource",
        args,
        &state,
        json!({"action": "accept", "content": {"reason": " "}}),
    )
    .await;
    refused_by(&reply, "confirm.invalid_answer");
    assert!(upstream_writes(&h).is_empty(), "{:?}", upstream_writes(&h));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_changed_and_foreign_states_are_refused_with_their_own_rules() {
    let (_dir, key) = key_file(KEY);
    let h = gateway(DEV, &key, |_| {}).await;
    let c = h.client();
    let args = staging_patch(3);
    let (_, state) = question(&call(&c, "manage_k8s_resource", args.clone()).await);

    // One bit flipped inside the sealed bytes.
    let (prefix, sealed) = state.split_at(state.find('.').unwrap() + 1);
    let mut raw = URL_SAFE_NO_PAD.decode(sealed).unwrap();
    let middle = raw.len() / 2;
    raw[middle] ^= 0x01;
    let flipped = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(&raw));
    let reply = retry(
        &c,
        "manage_k8s_resource",
        args.clone(),
        &flipped,
        accept("x"),
    )
    .await;
    refused_by(&reply, "confirm.state_invalid");

    // An answer with no state of the gateway's.
    let reply = c
        .stateless(
            "tools/call",
            json!({"name": "manage_k8s_resource", "arguments": args.clone(),
                   "inputResponses": {INPUT_KEY: accept("x")},
                   "_meta": {"io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}}}),
        )
        .await;
    refused_by(&reply, "confirm.state_invalid");

    // One argument changed after the person confirmed.
    let reply = retry(
        &c,
        "manage_k8s_resource",
        staging_patch(30),
        &state,
        accept("x"),
    )
    .await;
    refused_by(&reply, "confirm.arguments_changed");

    // Sealed by a gateway with another key.
    let (_dir2, other_key) = key_file(OTHER_KEY);
    let other = gateway(DEV, &other_key, |_| {}).await;
    let (_, foreign) = question(&call(&other.client(), "manage_k8s_resource", args.clone()).await);
    let reply = retry(
        &c,
        "manage_k8s_resource",
        args.clone(),
        &foreign,
        accept("x"),
    )
    .await;
    refused_by(&reply, "confirm.state_invalid");

    // The legitimate retry still works after all that.
    let ok = retry(&c, "manage_k8s_resource", args.clone(), &state, accept("x")).await;
    assert!(!ok.is_tool_error(), "{}", ok.text());
    assert_eq!(upstream_writes(&h), vec![args]);
    assert!(upstream_writes(&other).is_empty());
    other.stop().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_with_the_same_key_accepts_the_retry_but_not_for_another_principal() {
    let (_dir, key) = key_file(KEY);
    let h = gateway(DEV, &key, |_| {}).await;
    let key2 = key.clone();
    let (_gw2, addr2, guard2) = Harness::in_front_of_url(
        &h.sim.url(),
        Some(Box::new(move |c| {
            c.approval.key_file = Some(key2);
            c.auth = eks_mcp_gateway::config::AuthConfig::Static {
                principal: DEV.0.into(),
                groups: vec!["payments-dev".into()],
            };
        })),
    )
    .await;
    let key3 = key.clone();
    let (_gw3, addr3, guard3) = Harness::in_front_of_url(
        &h.sim.url(),
        Some(Box::new(move |c| {
            c.approval.key_file = Some(key3);
            c.auth = eks_mcp_gateway::config::AuthConfig::Static {
                principal: "erin@example.com".into(),
                groups: vec!["payments-dev".into()],
            };
        })),
    )
    .await;
    let args = staging_patch(4);
    let (_, state) = question(&call(&h.client(), "manage_k8s_resource", args.clone()).await);

    let other_principal = McpClient::new(&format!("http://{addr3}/mcp"));
    let reply = retry(
        &other_principal,
        "manage_k8s_resource",
        args.clone(),
        &state,
        accept("mine now"),
    )
    .await;
    refused_by(&reply, "confirm.other_principal");
    assert!(upstream_writes(&h).is_empty());

    let replica = McpClient::new(&format!("http://{addr2}/mcp"));
    let ok = retry(
        &replica,
        "manage_k8s_resource",
        args.clone(),
        &state,
        accept("rollout"),
    )
    .await;
    assert!(!ok.is_tool_error(), "{}", ok.text());
    assert_eq!(upstream_writes(&h), vec![args]);
    guard3.stop().await;
    guard2.stop().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_confirmation_is_refused() {
    let (_dir, key) = key_file(KEY);
    let h = gateway(DEV, &key, |c| c.approval.ttl = Duration::from_millis(200)).await;
    let c = h.client();
    let args = staging_patch(5);
    let (_, state) = question(&call(&c, "manage_k8s_resource", args.clone()).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = retry(&c, "manage_k8s_resource", args, &state, accept("late")).await;
    refused_by(&reply, "confirm.expired");
    assert!(upstream_writes(&h).is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_confirmation_must_match_for_break_glass_in_prod() {
    let (_dir, key) = key_file(KEY);
    let h = gateway(
        ("bob@example.com", &["sre-oncall", "sre-breakglass"]),
        &key,
        |_| {},
    )
    .await;
    let c = h.client();
    let mut args = staging_patch(1);
    args["cluster_name"] = json!("prod");
    let (ask, state) = question(&call(&c, "manage_k8s_resource", args.clone()).await);
    assert_eq!(
        ask["requestedSchema"]["required"],
        json!(["reason", "confirm_name"])
    );
    assert_eq!(
        ask["requestedSchema"]["properties"]["confirm_name"]["title"],
        "Type payments-api to confirm"
    );
    let wrong =
        json!({"action": "accept", "content": {"reason": "outage", "confirm_name": "payments"}});
    refused_by(
        &retry(&c, "manage_k8s_resource", args.clone(), &state, wrong).await,
        "confirm.mismatch",
    );
    let right = json!({"action": "accept", "content": {"reason": "outage", "confirm_name": "payments-api"}});
    let ok = retry(&c, "manage_k8s_resource", args.clone(), &state, right).await;
    assert!(!ok.is_tool_error(), "{}", ok.text());
    assert_eq!(upstream_writes(&h), vec![args]);
    let recs = h.audit_records(3).await;
    assert_eq!(
        recs[2]["approval"]["fields"],
        json!({"confirm_name": "payments-api"})
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_elicitation_is_told_what_is_needed() {
    let (_dir, key) = key_file(KEY);
    let h = gateway(DEV, &key, |_| {}).await;
    let reply = h
        .client()
        .stateless_call("manage_k8s_resource", staging_patch(2))
        .await;
    refused_by(&reply, "confirm.unsupported_client");
    assert!(
        reply.tool_text().contains("elicitation"),
        "{}",
        reply.tool_text()
    );
    assert!(upstream_writes(&h).is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_forwards_and_records_that_it_would_have_asked() {
    let (_dir, key) = key_file(KEY);
    let h = gateway(DEV, &key, |c| c.policy.mode = PolicyMode::DryRun).await;
    let args = staging_patch(2);
    let reply = call(&h.client(), "manage_k8s_resource", args.clone()).await;
    assert!(!reply.is_tool_error(), "{}", reply.text());
    assert_ne!(reply.result()["resultType"], "input_required");
    assert_eq!(upstream_writes(&h), vec![args]);
    let recs = h.audit_records(1).await;
    assert_eq!(recs[0]["approval"], json!({"outcome": "would_ask"}));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sealing_key_never_appears_in_answers_audit_or_errors() {
    let (_dir, key) = key_file(KEY);
    let h = gateway(DEV, &key, |c| c.approval.ttl = Duration::from_millis(200)).await;
    let c = h.client();
    let args = staging_patch(6);
    let mut seen = String::new();
    let first = call(&c, "manage_k8s_resource", args.clone()).await;
    let (_, state) = question(&first);
    seen += &first.text();
    let bad = retry(
        &c,
        "manage_k8s_resource",
        args.clone(),
        &format!("{state}A"),
        accept("x"),
    )
    .await;
    seen += &bad.text();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = retry(&c, "manage_k8s_resource", args, &state, accept("x")).await;
    seen += &late.text();
    seen += &std::fs::read_to_string(&h.audit_path).unwrap_or_default();
    seen += &format!("{:?} {:?}", h.gateway.approvals, h.gateway.config);
    let hex_key = hex::encode(
        base64::engine::general_purpose::STANDARD
            .decode(KEY)
            .unwrap(),
    );
    for needle in [KEY, &KEY[..20], &hex_key[..20]] {
        assert!(!seen.contains(needle), "the key leaked: {needle}");
    }
    // A wrong key file: the error names the file, never the content.
    let (_d2, short) = key_file("c2hvcnQta2V5LXRoYXQtbXVzdC1ub3QtbGVhaw==");
    let mut cfg = h.gateway.config.clone();
    cfg.approval.key_file = Some(short.clone());
    let err = match eks_mcp_gateway::pipeline::Gateway::build(cfg).await {
        Ok(_) => panic!("a 29-byte key must be refused"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("approval.key_file") && err.contains("not 32 bytes"),
        "{err}"
    );
    assert!(!err.contains("c2hvcnQta2V5"), "{err}");
    h.stop().await;
}

// ---- session era (2025-06-18 / 2025-11-25): elicitation/create on the tools/call stream ----

/// A session-era tools/call whose SSE response is read event by event.
struct OpenCall {
    body: hyper::body::Incoming,
    buffer: Vec<u8>,
    content_type: String,
    status: http::StatusCode,
}

impl OpenCall {
    async fn start(c: &McpClient, args: Value) -> OpenCall {
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<bytes::Bytes>>();
        let body = json!({"jsonrpc": "2.0", "id": c.next_id(), "method": "tools/call",
                          "params": {"name": "manage_k8s_resource", "arguments": args}});
        let req = http::Request::post(&c.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", c.session.as_deref().unwrap())
            .header("mcp-protocol-version", c.protocol.as_deref().unwrap())
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(30), http.request(req))
            .await
            .expect("headers within 30s")
            .unwrap();
        OpenCall {
            status: resp.status(),
            content_type: resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default(),
            body: resp.into_body(),
            buffer: Vec::new(),
        }
    }

    /// The next complete SSE event's JSON, or None at the end of the stream.
    async fn next(&mut self) -> Option<Value> {
        use http_body_util::BodyExt as _;
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let msgs = crate::harness::sse_messages(&event);
                if let Some(m) = msgs.into_iter().next() {
                    return Some(m);
                }
                continue;
            }
            let frame = tokio::time::timeout(Duration::from_secs(30), self.body.frame())
                .await
                .expect("the stream moves within 30s");
            match frame {
                None => return None,
                Some(f) => {
                    if let Ok(data) = f.unwrap().into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The rest of the stream's messages.
    async fn rest(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(m) = self.next().await {
            out.push(m);
        }
        out
    }
}

async fn session_client(h: &Harness, capabilities: Value) -> McpClient {
    let mut c = h.client();
    c.initialize_with(crate::harness::SESSION_ERA, capabilities)
        .await;
    c
}

/// POST the client's answer to the gateway's question; returns the HTTP status.
async fn answer(c: &McpClient, question: &Value, result: Value) -> http::StatusCode {
    let body = json!({"jsonrpc": "2.0", "id": question["id"], "result": result});
    c.post_raw(body.to_string(), &[]).await.status
}

fn final_result(messages: &[Value]) -> &Value {
    let last = messages.last().expect("a final message");
    assert!(last.get("result").is_some(), "{messages:?}");
    &last["result"]
}

fn denied_with(result: &Value, rule: &str) {
    assert_eq!(result["isError"], true, "{result}");
    assert_eq!(
        result["_meta"]["io.github.eks-mcp-gateway/denial"]["rules"],
        json!([rule]),
        "{result}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_era_asks_on_the_call_stream_and_forwards_after_accept() {
    let (_dir, key) = key_file(KEY);
    let h = gateway(DEV, &key, |_| {}).await;
    let c = session_client(&h, json!({"elicitation": {}})).await;
    let args = staging_patch(3);
    let mut open = OpenCall::start(&c, args.clone()).await;
    assert_eq!(open.status, http::StatusCode::OK);
    assert!(
        open.content_type.starts_with("text/event-stream"),
        "{}",
        open.content_type
    );
    let question = open.next().await.expect("the question");
    assert_eq!(question["method"], "elicitation/create", "{question}");
    assert!(
        question["params"]["message"]
            .as_str()
            .unwrap()
            .contains("payments-api")
    );
    assert!(
        upstream_writes(&h).is_empty(),
        "nothing forwarded before the answer"
    );
    let status = answer(&c, &question, accept("hotfix rollout")).await;
    assert_eq!(status, http::StatusCode::ACCEPTED);
    let rest = open.rest().await;
    let result = final_result(&rest);
    assert_ne!(result["isError"], true, "{result}");
    assert_eq!(upstream_writes(&h), vec![args]);
    // The same answer again finds nobody waiting.
    assert_eq!(
        answer(&c, &question, accept("again")).await,
        http::StatusCode::CONFLICT
    );
    let rec = tool_record(&h).await;
    assert_eq!(rec["approval"]["outcome"], "accepted", "{rec}");
    assert_eq!(rec["approval"]["reason"], "hotfix rollout");
    assert!(rec["approval"]["round_trip_ms"].as_f64().is_some());
    assert!(rec["session"].is_string(), "{rec}");
    assert_eq!(rec["upstream"]["status"], 200, "{rec}");
    h.stop().await;
}

/// The person may take minutes: a call waiting for their answer holds none of the replica's
/// request slots. With one slot and no waiting room, the same caller's ping and the answer
/// itself still get through while the question is open (both were refused with 503 when the
/// wait held the slot); once accepted, the call takes a slot again and is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_era_a_waiting_confirmation_holds_no_request_slot() {
    let (_dir, key) = key_file(KEY);
    let h = gateway(DEV, &key, |c| {
        c.limits.max_concurrent_requests = 1;
        c.limits.max_queued_per_caller = 0;
    })
    .await;
    let c = session_client(&h, json!({"elicitation": {}})).await;
    let args = staging_patch(4);
    let mut open = OpenCall::start(&c, args.clone()).await;
    let question = open.next().await.expect("the question");
    assert_eq!(question["method"], "elicitation/create", "{question}");
    let ping = c.request("ping", json!({})).await;
    assert_eq!(ping.status, http::StatusCode::OK, "{}", ping.text());
    assert_eq!(
        answer(&c, &question, accept("scale up for the sale")).await,
        http::StatusCode::ACCEPTED
    );
    let result = final_result(&open.rest().await).clone();
    assert_ne!(result["isError"], true, "{result}");
    assert_eq!(upstream_writes(&h), vec![args]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_era_decline_cancel_and_an_answer_at_another_replica_run_nothing() {
    let (_dir, key) = key_file(KEY);
    let h = gateway(DEV, &key, |c| {
        c.approval.answer_timeout = Duration::from_secs(1)
    })
    .await;
    let c = session_client(&h, json!({"elicitation": {"form": {}}})).await;
    for (action, rule) in [
        ("decline", "confirm.declined"),
        ("cancel", "confirm.cancelled"),
    ] {
        let mut open = OpenCall::start(&c, staging_patch(0)).await;
        let question = open.next().await.unwrap();
        assert_eq!(
            answer(&c, &question, json!({"action": action})).await,
            http::StatusCode::ACCEPTED
        );
        denied_with(final_result(&open.rest().await), rule);
    }
    // An answer that reaches another replica (same key, no session affinity) is refused
    // there, and the question times out here with a denial that names the fix.
    let (_gw2, addr2, guard2) = {
        let key2 = key.clone();
        Harness::in_front_of_url(
            &h.sim.url(),
            Some(Box::new(move |cfg| {
                cfg.approval.key_file = Some(key2);
            })),
        )
        .await
    };
    let mut open = OpenCall::start(&c, staging_patch(0)).await;
    let question = open.next().await.unwrap();
    let mut elsewhere = McpClient::new(&format!("http://{addr2}/mcp"));
    elsewhere.session = c.session.clone();
    elsewhere.protocol = c.protocol.clone();
    assert_eq!(
        answer(&elsewhere, &question, accept("from another replica")).await,
        http::StatusCode::CONFLICT,
        "another replica is not waiting for this answer"
    );
    let result = final_result(&open.rest().await).clone();
    denied_with(&result, "confirm.timeout");
    assert!(
        result["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Mcp-Session-Id"),
        "{result}"
    );
    assert!(upstream_writes(&h).is_empty());
    guard2.stop().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_era_client_without_elicitation_is_denied_at_once() {
    let (_dir, key) = key_file(KEY);
    let h = gateway(DEV, &key, |_| {}).await;
    let c = session_client(&h, json!({})).await;
    let reply = c.call_tool("manage_k8s_resource", staging_patch(2)).await;
    refused_by_session(&reply, "confirm.unsupported_client");
    assert!(upstream_writes(&h).is_empty());
    h.stop().await;
}

fn refused_by_session(reply: &Reply, rule: &str) {
    assert!(reply.is_tool_error(), "{}", reply.text());
    denied_with(reply.result(), rule);
}

/// The audit record of the (one) manage_k8s_resource call, once it is written.
async fn tool_record(h: &Harness) -> Value {
    let mut n = 1;
    loop {
        let recs = h.audit_records(n).await;
        if let Some(r) = recs.iter().find(|r| r["tool"] == "manage_k8s_resource") {
            return r.clone();
        }
        n = recs.len() + 1;
    }
}
