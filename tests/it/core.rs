//! The gateway core against the embedded EKS-like upstream: both protocol eras, JSON and SSE
//! responses, the GET stream, DELETE, session headers, large results, many sessions.
use std::time::Duration;

use eks_mcp_gateway::jsonrpc;
use eks_mcp_gateway::sim::{ResponseMode, SimConfig};
use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::harness::{Harness, Options, STATELESS};

#[tokio::test]
async fn session_era_lifecycle_through_the_gateway() {
    let h = Harness::start().await;
    let mut c = h.client();
    let init = c.initialize().await;
    let session = c
        .session
        .clone()
        .expect("the upstream's session id reaches the client");
    assert_eq!(init.result()["protocolVersion"], "2025-11-25");
    // The session id is the upstream's: the gateway passed it through unchanged.
    let upstream_sessions: Vec<String> = h
        .sim
        .received()
        .iter()
        .filter_map(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k == "mcp-session-id")
                .map(|(_, v)| v.clone())
        })
        .collect();
    assert_eq!(
        upstream_sessions,
        vec![session.clone()],
        "notifications/initialized carried the session"
    );

    for (method, params) in [
        ("ping", json!({})),
        ("tools/list", json!({})),
        ("resources/list", json!({})),
        ("resources/templates/list", json!({})),
        ("prompts/list", json!({})),
    ] {
        let r = c.request(method, params).await;
        assert_eq!(r.status, StatusCode::OK, "{method}: {}", r.text());
        assert!(
            r.response().get("result").is_some(),
            "{method}: {}",
            r.text()
        );
    }
    let tools = c.request("tools/list", json!({})).await;
    let names: Vec<&str> = tools.result()["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"list_k8s_resources") && names.contains(&"get_pod_logs"),
        "{names:?}"
    );

    // Resources and prompts pass through with the upstream's exact content.
    let resources = c.request("resources/list", json!({})).await;
    assert_eq!(
        resources.result()["resources"][0]["uri"],
        "eks://clusters",
        "{}",
        resources.text()
    );
    let read = c
        .request("resources/read", json!({"uri": "eks://clusters"}))
        .await;
    let contents = &read.result()["contents"];
    assert_eq!(contents[0]["uri"], "eks://clusters", "{}", read.text());
    let doc: Value = serde_json::from_str(contents[0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(doc, json!({"clusters": ["dev", "prod", "staging"]}));
    let prompts = c.request("prompts/list", json!({})).await;
    let prompt_names: Vec<&str> = prompts.result()["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(prompt_names, ["troubleshoot_pod", "upgrade_readiness"]);
    let got = c
        .request(
            "prompts/get",
            json!({"name": "upgrade_readiness", "arguments": {"cluster_name": "dev"}}),
        )
        .await;
    let text = got.result()["messages"][0]["content"]["text"]
        .as_str()
        .unwrap();
    assert!(
        text.starts_with("Check whether EKS cluster dev is ready"),
        "{text}"
    );
    // The upstream's own JSON-RPC error (a required argument missing) reaches the client.
    let missing = c
        .request(
            "prompts/get",
            json!({"name": "troubleshoot_pod", "arguments": {"cluster_name": "dev"}}),
        )
        .await;
    assert_eq!(missing.error()["code"], -32602, "{}", missing.text());
    assert_eq!(
        missing.error()["message"],
        "Missing required argument: namespace"
    );

    let pods = c.call_tool("list_k8s_resources", json!({"cluster_name": "dev", "kind": "Pod", "api_version": "v1", "namespace": "payments"})).await;
    assert!(!pods.is_tool_error(), "{}", pods.text());
    assert!(
        pods.tool_text().contains("payments-api"),
        "{}",
        pods.tool_text()
    );

    assert!(c.delete_session().await.is_success());
    let after = c.request("ping", json!({})).await;
    assert_eq!(
        after.status,
        StatusCode::NOT_FOUND,
        "a terminated session is 404, so clients re-initialize"
    );
}

#[tokio::test]
async fn stateless_era_discover_list_and_call() {
    let h = Harness::start().await;
    let c = h.client();
    let discover = c.stateless("server/discover", json!({})).await;
    assert_eq!(discover.status, StatusCode::OK, "{}", discover.text());
    assert!(discover.response().get("result").is_some());
    assert!(
        discover.headers.get("mcp-session-id").is_none(),
        "no session in the stateless era"
    );

    let list = c.stateless("tools/list", json!({})).await;
    assert_eq!(
        list.result()["cacheScope"],
        "private",
        "a per-caller filtered list must not be shared"
    );
    let call = c
        .stateless_call("list_k8s_resources", json!({"cluster_name": "dev", "kind": "Deployment", "api_version": "apps/v1", "namespace": "payments"}))
        .await;
    assert!(!call.is_tool_error(), "{}", call.text());
    let fwd = h
        .sim
        .received()
        .into_iter()
        .find(|r| r.tool.as_deref() == Some("list_k8s_resources"))
        .unwrap();
    let header = |n: &str| {
        fwd.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("mcp-method").as_deref(), Some("tools/call"));
    assert_eq!(header("mcp-name").as_deref(), Some("list_k8s_resources"));
    assert_eq!(header("mcp-protocol-version").as_deref(), Some(STATELESS));
}

#[tokio::test]
async fn header_body_mismatch_is_refused_before_the_upstream() {
    let h = Harness::start().await;
    let c = h.client();
    let body = json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"manage_k8s_resource","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":STATELESS}}});
    let reply = c
        .post_raw(
            serde_json::to_vec(&body).unwrap(),
            &[
                ("mcp-protocol-version", STATELESS),
                ("mcp-method", "tools/call"),
                ("mcp-name", "list_k8s_resources"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error()["code"], jsonrpc::HEADER_MISMATCH);
    assert_eq!(reply.response()["id"], 5);
    assert!(h.sim.received().is_empty());
}

#[tokio::test]
async fn sse_responses_relay_progress_then_result() {
    let h = Harness::start_with(Options {
        sim: SimConfig {
            response_mode: ResponseMode::Sse,
            ..SimConfig::default()
        },
        ..Options::default()
    })
    .await;
    let mut c = h.client();
    c.initialize().await;
    let reply = c
        .request(
            "tools/call",
            json!({"name": "list_k8s_resources", "arguments": {"cluster_name": "dev", "kind": "Pod", "api_version": "v1", "namespace": "payments"}, "_meta": {"progressToken": "p1"}}),
        )
        .await;
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    assert_eq!(reply.headers["x-accel-buffering"], "no");
    let progress: Vec<&Value> = reply
        .messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert!(
        !progress.is_empty(),
        "progress notifications relayed: {}",
        reply.text()
    );
    assert_eq!(progress[0]["params"]["progressToken"], "p1");
    let last = reply.messages.last().unwrap();
    assert!(
        last.get("result").is_some(),
        "the result comes last: {}",
        reply.text()
    );
}

#[tokio::test]
async fn get_stream_keeps_event_ids_and_retry() {
    let h = Harness::start().await;
    let mut c = h.client();
    c.initialize().await;
    let resp = c.open_stream().await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(seen.contains("id:") && seen.contains("retry:")) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("priming event within 10s");
        let frame = frame.expect("stream open").expect("frame");
        if let Some(d) = frame.data_ref() {
            seen.push_str(&String::from_utf8_lossy(d));
        }
    }
    assert!(seen.contains("id: "), "{seen}");
    assert!(seen.contains("retry: "), "{seen}");
}

#[tokio::test]
async fn large_results_arrive_whole() {
    let h = Harness::start().await;
    let c = h.client();
    let reply = c
        .stateless_call("get_pod_logs", json!({"cluster_name": "dev", "namespace": "monitoring", "pod_name": "bulk-logger", "tail_lines": 100000, "limit_bytes": 67108864}))
        .await;
    assert!(
        !reply.is_tool_error(),
        "{}",
        &reply.text()[..reply.text().len().min(500)]
    );
    assert!(
        reply.body.len() > 4 * 1024 * 1024,
        "expected a multi-megabyte result, got {} bytes",
        reply.body.len()
    );
    let data: Value =
        serde_json::from_str(reply.result()["content"][1]["text"].as_str().unwrap()).unwrap();
    let lines = data["log_lines"].as_array().unwrap();
    // Every line asked for arrived (the server splits its text on newlines, like the
    // awslabs server, so the final newline leaves one empty entry at the end), and the
    // summary block counts the same entries.
    assert_eq!(lines.iter().filter(|l| *l != "").count(), 100_000);
    assert_eq!(lines.last(), Some(&json!("")));
    assert_eq!(
        reply.result()["content"][0]["text"],
        "Successfully retrieved 100001 log lines from pod monitoring/bulk-logger"
    );
}

#[tokio::test]
async fn many_concurrent_sessions() {
    let h = Harness::start().await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let mut c = h.client();
        tasks.push(tokio::spawn(async move {
            c.initialize().await;
            let ns = if i % 2 == 0 { "payments" } else { "checkout" };
            let r = c.call_tool("list_k8s_resources", json!({"cluster_name": "staging", "kind": "Pod", "api_version": "v1", "namespace": ns})).await;
            assert!(!r.is_tool_error(), "{}", r.text());
            assert!(r.tool_text().contains(ns));
            c.session.clone().unwrap()
        }));
    }
    let mut sessions = std::collections::HashSet::new();
    for t in tasks {
        sessions.insert(t.await.unwrap());
    }
    assert_eq!(
        sessions.len(),
        40,
        "every client kept its own upstream session"
    );
}

#[tokio::test]
async fn client_token_never_reaches_the_upstream_and_region_is_pinned() {
    let h = Harness::start().await;
    let c = h.client();
    let body = json!({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"list_api_versions","arguments":{"cluster_name":"dev"},"_meta":{"io.modelcontextprotocol/protocolVersion":STATELESS,"AWS_REGION":"eu-west-1"}}});
    let reply = c
        .post_raw(
            serde_json::to_vec(&body).unwrap(),
            &[
                ("mcp-protocol-version", STATELESS),
                ("mcp-method", "tools/call"),
                ("mcp-name", "list_api_versions"),
                ("authorization", "Bearer client-secret-token"),
                ("cookie", "sid=abc"),
            ],
        )
        .await;
    assert!(!reply.is_tool_error(), "{}", reply.text());
    let got = h
        .sim
        .received()
        .into_iter()
        .find(|r| r.tool.as_deref() == Some("list_api_versions"))
        .unwrap();
    for (k, v) in &got.headers {
        assert!(
            !v.contains("client-secret-token"),
            "client token forwarded in {k}"
        );
        assert_ne!(k, "cookie");
    }
    let sent: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(
        sent["params"]["_meta"]["AWS_REGION"], "us-west-2",
        "the client cannot move the operating region"
    );
    assert_eq!(
        h.sim.signature_failures(),
        0,
        "every forwarded request was correctly signed"
    );
}

#[tokio::test]
async fn bad_json_rpc_gets_a_clear_error_and_nothing_is_forwarded() {
    let h = Harness::start().await;
    let c = h.client();
    for (body, code) in [
        (&b"{oops"[..], jsonrpc::PARSE_ERROR),
        (br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, jsonrpc::INVALID_REQUEST),
        (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_pod_logs","name":"list_api_versions"}}"#, jsonrpc::INVALID_REQUEST),
    ] {
        let r = c.post_raw(body.to_vec(), &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.error()["code"], code);
    }
    let r = c
        .post_raw(b"{}".to_vec(), &[("content-type", "text/plain")])
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(h.sim.received().is_empty());
}

#[tokio::test]
async fn operational_endpoints() {
    let h = Harness::start().await;
    let c = h.client();
    c.stateless("tools/list", json!({})).await;
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let get = |path: &str| {
        let url = format!("http://{}{path}", h.addr);
        let http = http.clone();
        async move {
            let r = http
                .request(
                    http::Request::get(url)
                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = r.status();
            (
                status,
                String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec())
                    .unwrap(),
            )
        }
    };
    assert_eq!(get("/healthz").await.0, StatusCode::OK);
    let (status, ready) = get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert!(ready.contains("\"policy\""), "{ready}");
    let (status, metrics) = get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains("tools/list"),
        "requests are counted by method: {metrics}"
    );
}

#[tokio::test]
async fn unknown_methods_are_decided_by_policy_and_forwarded_when_allowed() {
    // Shipped policy: a method it does not know is refused with a reason, never forwarded.
    let h = Harness::start().await;
    let r = h.client().stateless("vendor/custom", json!({})).await;
    assert_eq!(r.error()["code"], jsonrpc::POLICY_DENIED);
    assert!(
        r.error()["message"]
            .as_str()
            .unwrap()
            .contains("vendor/custom")
    );
    assert!(h.sim.received().is_empty());

    // A policy that allows it: the gateway forwards it untouched (Mcp-Param-* included) and
    // relays the upstream's own answer.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        crate::harness::policy_dir().join("catalogue.yaml"),
        dir.path().join("catalogue.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("allow_all.rego"),
        "package eks_mcp.gateway\n\ndecision := {\"allow\": true, \"reasons\": [], \"redact\": [\"baseline\"], \"rules\": [\"test.allow_all\"]}\n\ntool_visible := true\n",
    )
    .unwrap();
    let h = Harness::start_with(Options {
        policy_dir: dir.path().to_path_buf(),
        ..Options::default()
    })
    .await;
    let c = h.client();
    let id = c.next_id();
    let body = json!({"jsonrpc":"2.0","id":id,"method":"vendor/custom","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":STATELESS}}});
    let r = c
        .post_raw(
            serde_json::to_vec(&body).unwrap(),
            &[
                ("mcp-protocol-version", STATELESS),
                ("mcp-method", "vendor/custom"),
                ("mcp-param-region", "eu-west-1"),
            ],
        )
        .await;
    assert_eq!(
        r.error()["code"],
        jsonrpc::METHOD_NOT_FOUND,
        "the upstream's own answer: {}",
        r.text()
    );
    let got = h
        .sim
        .received()
        .into_iter()
        .find(|x| x.rpc_method.as_deref() == Some("vendor/custom"))
        .expect("forwarded");
    assert!(
        got.headers
            .iter()
            .any(|(k, v)| k == "mcp-param-region" && v == "eu-west-1")
    );
}

#[tokio::test]
async fn dry_run_records_denials_but_blocks_and_hides_nothing() {
    let opts = Options {
        mode: eks_mcp_gateway::config::PolicyMode::DryRun,
        ..Options::default()
    }
    .principal("bob@example.com", &["payments-dev"]);
    let h = Harness::start_with(opts).await;
    let c = h.client();
    let all = c.stateless("tools/list", json!({})).await;
    assert_eq!(
        all.result()["tools"].as_array().unwrap().len(),
        20,
        "dry_run hides no tool"
    );
    let r = c
        .stateless_call("read_k8s_resource", json!({"cluster_name": "dev", "kind": "Secret", "api_version": "v1", "namespace": "payments", "name": "payments-db-credentials"}))
        .await;
    assert!(!r.is_tool_error(), "dry_run never blocks: {}", r.text());
    assert!(
        h.sim
            .tool_calls()
            .iter()
            .any(|(t, _)| t == "read_k8s_resource"),
        "the call was forwarded"
    );
    let recs = h.audit_records(2).await;
    let rec = recs
        .iter()
        .find(|r| r["tool"] == "read_k8s_resource")
        .expect("audited");
    assert_eq!(rec["decision"]["allow"], false, "{rec}");
    assert_eq!(rec["decision"]["enforced"], false, "{rec}");
    assert_eq!(rec["decision"]["mode"], "dry_run");
}

#[tokio::test]
async fn a_secret_in_the_arguments_never_comes_back_in_a_deny_reason_or_the_audit() {
    let h = Harness::start().await;
    let key = "AKIAQ3EGTRMN7XZ4PLKD";
    let r = h
        .client()
        .stateless_call("read_k8s_resource", json!({"cluster_name": "dev", "kind": "Secret", "api_version": "v1", "namespace": "payments", "name": key}))
        .await;
    assert!(r.is_tool_error(), "{}", r.text());
    assert!(
        !r.text().contains(key),
        "deny reason echoed the key: {}",
        r.text()
    );
    assert!(r.tool_text().contains("[REDACTED:"), "{}", r.tool_text());
    let recs = h.audit_records(1).await;
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["tool"], "read_k8s_resource", "{recs:?}");
    assert_eq!(
        recs[0]["arguments"]["name"], "[REDACTED:aws_access_key_id]",
        "{recs:?}"
    );
    let audit = serde_json::to_string(&recs).unwrap();
    assert!(!audit.contains(key), "audit holds the key: {audit}");
    assert!(h.sim.received().is_empty());
}
