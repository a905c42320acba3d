//! Redaction: the labelled corpus (recall and false-positive rate), structure preservation,
//! and end to end through the gateway against the embedded upstream.
//!
//! Corpus layout (`tests/redaction_corpus/`): every file is one tool result as the EKS MCP
//! server would return it (`*.json`: the JSON document of the second text block; `*.log`: pod
//! log lines, wrapped as a `get_pod_logs` result; `*.yaml`: a text block). `<file>.secrets`
//! lists, one per line, every secret planted in `<file>`. `clean/` holds realistic text with
//! no secrets (git SHAs, UUIDs, image digests, base64 image data, resource versions, ARNs, IPs,
//! pod names with hashes) on which every changed token is a false positive.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use eks_mcp_gateway::redact::Redactor;
use eks_mcp_gateway::sim::{CRASHLOOP_POD, ResponseMode, planted};
use serde_json::{Value, json};

use crate::harness::{self, Harness, Options};

/// Largest accepted false-positive rate on the clean corpus (changed tokens / tokens).
const MAX_FALSE_POSITIVE_RATE: f64 = 0.002;

fn corpus_dir() -> PathBuf {
    harness::repo_root().join("tests/redaction_corpus")
}

struct Sample {
    name: String,
    text: String,
    secrets: Vec<String>,
}

fn load(dir: &Path) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !p.is_file() || name.ends_with(".secrets") || name.ends_with(".md") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let sidecar = p.with_file_name(format!("{name}.secrets"));
        let secrets = std::fs::read_to_string(&sidecar)
            .map(|s| {
                s.lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        out.push(Sample {
            name,
            text,
            secrets,
        });
    }
    out
}

fn profiles() -> Vec<String> {
    vec!["baseline".to_string()]
}

/// The sample as an MCP `tools/call` response, shaped like the EKS MCP server's.
fn as_tool_result(s: &Sample) -> Value {
    let doc_text = if s.name.ends_with(".log") {
        let lines: Vec<&str> = s.text.split('\n').collect();
        let doc = json!({"pod_name": "app-7d9f8b6c5d-x2k4q", "namespace": "payments", "container_name": null, "log_lines": lines});
        serde_json::to_string(&doc).unwrap()
    } else {
        s.text.clone()
    };
    json!({"jsonrpc": "2.0", "id": 11, "result": {"content": [
        {"type": "text", "text": format!("Successfully retrieved {}", s.name)},
        {"type": "text", "text": doc_text}], "isError": false}})
}

/// Every string the client would see: the raw texts, and the strings inside JSON texts
/// (so escaped forms are checked decoded too).
fn visible_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            out.push(s.clone());
            if let Ok(inner) = serde_json::from_str::<Value>(s)
                && (inner.is_object() || inner.is_array())
            {
                visible_strings(&inner, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| visible_strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| visible_strings(x, out)),
        _ => {}
    }
}

/// The planted secret, or any 8-character piece of it, that is still visible. Pieces that
/// the input also contains outside the planted secrets (`residue`) are not the secret's: a
/// base64 PEM client key and the public CA certificate both start `LS0tLS1CRUdJTi`.
fn leaked<'a>(secret: &'a str, visible: &[String], residue: &str) -> Option<&'a str> {
    let b = secret.as_bytes();
    let pieces: Vec<&str> = if b.len() <= 8 {
        vec![secret]
    } else {
        (0..=b.len() - 8)
            .filter_map(|i| secret.get(i..i + 8))
            .collect()
    };
    pieces
        .into_iter()
        .filter(|p| *p == secret || !residue.contains(p))
        .find(|p| visible.iter().any(|v| v.contains(p)))
}

/// The sample's text with every planted secret cut out.
fn residue(s: &Sample) -> String {
    let mut secrets: Vec<&String> = s.secrets.iter().collect();
    secrets.sort_by_key(|x| std::cmp::Reverse(x.len()));
    let mut t = s.text.clone();
    for x in secrets {
        t = t.replace(x.as_str(), "\n");
    }
    t
}

/// The words a reader sees: for a JSON document the words of its keys and leaf values (so a
/// compact re-serialisation is not counted as a change), else the words of the text.
fn tokens(s: &str) -> Vec<String> {
    fn words(s: &str, out: &mut Vec<String>) {
        out.extend(
            s.split(|c: char| c.is_whitespace() || "\"',{}[]()".contains(c))
                .filter(|t| !t.is_empty())
                .map(str::to_string),
        );
    }
    fn leaves(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => words(s, out),
            Value::Array(a) => a.iter().for_each(|x| leaves(x, out)),
            Value::Object(m) => m.iter().for_each(|(k, x)| {
                words(k, out);
                leaves(x, out)
            }),
            other => out.push(other.to_string()),
        }
    }
    let mut out = Vec::new();
    match serde_json::from_str::<Value>(s) {
        Ok(v) if v.is_object() || v.is_array() => leaves(&v, &mut out),
        _ => words(s, &mut out),
    }
    out
}

/// Tokens of `before` missing from `after` (multiset difference), and the token count.
fn changed_tokens(before: &str, after: &str) -> (usize, usize) {
    let mut count: HashMap<String, i64> = HashMap::new();
    let tb = tokens(before);
    for t in &tb {
        *count.entry(t.clone()).or_default() += 1;
    }
    for t in tokens(after) {
        if let Some(c) = count.get_mut(&t) {
            *c -= 1;
        }
    }
    let changed = count
        .values()
        .filter(|c| **c > 0)
        .map(|c| *c as usize)
        .sum();
    (changed, tb.len())
}

#[test]
fn corpus_recall_is_total_and_false_positives_are_rare() {
    let r = Redactor::builtin();
    let samples = load(&corpus_dir());
    let clean = load(&corpus_dir().join("clean"));
    assert!(
        samples.len() >= 12 && clean.len() >= 8,
        "corpus is missing files"
    );

    let mut planted_total = 0;
    let mut leaks = Vec::new();
    for s in &samples {
        assert!(!s.secrets.is_empty(), "{} has no .secrets sidecar", s.name);
        // As a tool result going to the client.
        let mut msg = as_tool_result(s);
        let found = r.redact_message(&mut msg, &profiles());
        assert!(!found.is_empty(), "{}: nothing redacted", s.name);
        let mut visible = Vec::new();
        visible_strings(&msg, &mut visible);
        // As tool arguments before audit (a manifest or a body the client sent).
        let mut args = match serde_json::from_str::<Value>(&s.text) {
            Ok(v) => json!({"body": v}),
            Err(_) => json!({"yaml_content": s.text}),
        };
        r.redact_value(&mut args, &profiles(), "$.params.arguments");
        let mut visible_args = Vec::new();
        visible_strings(&args, &mut visible_args);
        let residue = residue(s);
        for secret in &s.secrets {
            planted_total += 1;
            if let Some(p) = leaked(secret, &visible, &residue) {
                leaks.push(format!(
                    "{}: result leaks {p:?} of a planted secret",
                    s.name
                ));
            }
            if let Some(p) = leaked(secret, &visible_args, &residue) {
                leaks.push(format!(
                    "{}: arguments leak {p:?} of a planted secret",
                    s.name
                ));
            }
        }
        // JSON documents stay valid JSON with the same keys.
        if s.name.ends_with(".json") {
            let after: Value =
                serde_json::from_str(msg["result"]["content"][1]["text"].as_str().unwrap())
                    .unwrap_or_else(|e| panic!("{}: redacted JSON no longer parses: {e}", s.name));
            let before: Value = serde_json::from_str(&s.text).unwrap();
            assert_eq!(
                key_paths(&before),
                key_paths(&after),
                "{}: keys changed",
                s.name
            );
        }
    }
    let recall = 1.0 - leaks.len() as f64 / (2 * planted_total) as f64;
    eprintln!(
        "redaction corpus: {} files, {planted_total} planted secrets, recall {:.2}% (results and arguments)",
        samples.len(),
        recall * 100.0
    );
    assert!(
        leaks.is_empty(),
        "planted secrets survived:\n{}",
        leaks.join("\n")
    );

    let (mut changed, mut total) = (0, 0);
    let mut fp_detail = Vec::new();
    for s in &clean {
        let mut msg = as_tool_result(s);
        let found = r.redact_message(&mut msg, &profiles());
        let after = msg["result"]["content"][1]["text"]
            .as_str()
            .unwrap()
            .to_string();
        let before = as_tool_result(s)["result"]["content"][1]["text"]
            .as_str()
            .unwrap()
            .to_string();
        let (c, t) = changed_tokens(&before, &after);
        if c > 0 {
            fp_detail.push(format!("{}: {c} tokens changed by {:?}", s.name, found));
        }
        changed += c;
        total += t;
    }
    let rate = changed as f64 / total as f64;
    eprintln!(
        "redaction corpus: clean text {} files, {total} tokens, {changed} changed: false-positive rate {:.4}% (bound {:.2}%)",
        clean.len(),
        rate * 100.0,
        MAX_FALSE_POSITIVE_RATE * 100.0
    );
    for d in &fp_detail {
        eprintln!("  false positive: {d}");
    }
    assert!(
        rate <= MAX_FALSE_POSITIVE_RATE,
        "false-positive rate {rate} above bound:\n{}",
        fp_detail.join("\n")
    );
}

/// Every key path of a JSON value (array indices folded), sorted.
fn key_paths(v: &Value) -> Vec<String> {
    fn walk(v: &Value, p: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let q = format!("{p}.{k}");
                    out.push(q.clone());
                    walk(x, &q, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, &format!("{p}[]"), out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, "$", &mut out);
    out.sort();
    out.dedup();
    out
}

#[test]
fn clean_json_documents_are_passed_through_byte_for_byte() {
    let r = Redactor::builtin();
    for s in load(&corpus_dir().join("clean")) {
        if !s.name.ends_with(".json") {
            continue;
        }
        let mut msg = as_tool_result(&s);
        assert!(
            r.redact_message(&mut msg, &profiles()).is_empty(),
            "{}",
            s.name
        );
        assert_eq!(
            msg["result"]["content"][1]["text"].as_str().unwrap(),
            s.text,
            "{}",
            s.name
        );
    }
}

#[test]
fn redactions_name_detector_and_path_never_the_value() {
    let r = Redactor::builtin();
    let s = load(&corpus_dir())
        .into_iter()
        .find(|s| s.name == "secret-read-opaque.json")
        .unwrap();
    let mut msg = as_tool_result(&s);
    let found = r.redact_message(&mut msg, &profiles());
    let paths: Vec<(&str, &str)> = found
        .iter()
        .map(|f| (f.detector, f.path.as_str()))
        .collect();
    assert!(
        paths.contains(&(
            "k8s_secret_data",
            "$.result.content[1].text$.resource.data.password"
        )),
        "{paths:?}"
    );
    assert!(paths.contains(&(
        "k8s_secret_last_applied",
        "$.result.content[1].text$.resource.metadata.annotations[\"kubectl.kubernetes.io/last-applied-configuration\"]"
    )));
    let audit = serde_json::to_string(&found).unwrap();
    for secret in &s.secrets {
        assert!(!audit.contains(secret.as_str()));
    }
}

// ---- end to end through the gateway ----------------------------------------------------

fn planted_forms() -> Vec<String> {
    use base64::Engine as _;
    let mut v: Vec<String> = planted::ALL.iter().map(|s| s.to_string()).collect();
    v.extend(
        planted::ALL
            .iter()
            .map(|s| base64::engine::general_purpose::STANDARD.encode(s)),
    );
    v
}

fn assert_no_planted(what: &str, body: &str) {
    for s in planted_forms() {
        assert!(
            !body.contains(&s),
            "{what}: planted secret {s:?} reached the client:\n{body}"
        );
    }
}

#[tokio::test]
async fn crash_looping_pod_logs_reach_the_client_redacted() {
    let h = Harness::start().await;
    let mut c = h.client();
    c.initialize().await;
    let r = c
        .call_tool(
            "get_pod_logs",
            json!({"cluster_name": "dev", "namespace": "payments", "pod_name": CRASHLOOP_POD}),
        )
        .await;
    assert!(!r.is_tool_error(), "{}", r.text());
    let text = r.tool_text();
    assert!(text.contains("[REDACTED:"), "{text}");
    assert_no_planted("get_pod_logs", &r.text());
    h.stop().await;
}

#[tokio::test]
async fn listing_secrets_returns_names_without_values() {
    let h = Harness::start().await;
    let mut c = h.client();
    c.initialize().await;
    let r = c
        .call_tool("list_k8s_resources", json!({"cluster_name": "dev", "kind": "Secret", "api_version": "v1", "namespace": "payments"}))
        .await;
    assert!(!r.is_tool_error(), "{}", r.text());
    let text = r.tool_text();
    assert!(
        text.contains("payments-db-credentials"),
        "names stay visible: {text}"
    );
    assert_no_planted("list_k8s_resources Secret", &r.text());
    h.stop().await;
}

/// A policy bundle copied from `policies/` that lets `read_k8s_resource` read Secrets the way
/// listing is allowed (with `secret_values` redaction).
fn policies_allowing_secret_reads() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(harness::policy_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let data = dir.path().join("data.yaml");
    let s = std::fs::read_to_string(&data).unwrap();
    let s2 = s.replace(
        "listing_tools: [list_k8s_resources]",
        "listing_tools: [list_k8s_resources, read_k8s_resource]",
    );
    assert_ne!(
        s, s2,
        "policies/data.yaml no longer has the secrets.listing_tools line this test edits"
    );
    std::fs::write(&data, s2).unwrap();
    dir
}

#[tokio::test]
async fn reading_a_secret_allowed_with_redaction_returns_no_values() {
    let dir = policies_allowing_secret_reads();
    let h = Harness::start_with(Options {
        policy_dir: dir.path().to_path_buf(),
        ..Options::default()
    })
    .await;
    let mut c = h.client();
    c.initialize().await;
    let r = c
        .call_tool(
            "read_k8s_resource",
            json!({"cluster_name": "dev", "kind": "Secret", "api_version": "v1", "namespace": "payments", "name": "payments-db-credentials"}),
        )
        .await;
    assert!(!r.is_tool_error(), "{}", r.text());
    let text = r.tool_text();
    assert!(text.contains("[REDACTED:k8s_secret_data]"), "{text}");
    assert_no_planted("read_k8s_resource Secret", &r.text());
    h.stop().await;
}

// ---- the same through an upstream that answers with SSE --------------------------------

/// A gateway in front of the embedded upstream answering every request as an SSE stream.
async fn sse_upstream(principal: &str, groups: &[&str]) -> Harness {
    let mut opts = Options::default().principal(principal, groups);
    opts.sim.response_mode = ResponseMode::Sse;
    Harness::start_with(opts).await
}

/// The reply came as an SSE stream (so the redaction under test is the SSE relay's) and
/// carries no planted secret, raw or base64.
fn assert_sse_and_clean(what: &str, r: &crate::harness::Reply) {
    assert_eq!(
        r.headers["content-type"],
        "text/event-stream",
        "{what}: {}",
        r.text()
    );
    assert_no_planted(what, &r.text());
}

#[tokio::test]
async fn sse_results_are_redacted_in_both_eras() {
    let h = sse_upstream("alice@example.com", &["platform-admins"]).await;
    let logs = json!({"cluster_name": "dev", "namespace": "payments", "pod_name": CRASHLOOP_POD});
    let secrets = json!({"cluster_name": "dev", "kind": "Secret", "api_version": "v1", "namespace": "payments"});

    let mut c = h.client();
    c.initialize().await;
    let session_logs = c.call_tool("get_pod_logs", logs.clone()).await;
    let session_list = c.call_tool("list_k8s_resources", secrets.clone()).await;
    let stateless_logs = c.stateless_call("get_pod_logs", logs).await;
    let stateless_list = c.stateless_call("list_k8s_resources", secrets).await;
    for (what, r) in [
        ("session get_pod_logs", &session_logs),
        ("stateless get_pod_logs", &stateless_logs),
    ] {
        assert_sse_and_clean(what, r);
        assert!(!r.is_tool_error(), "{what}: {}", r.text());
        assert!(r.tool_text().contains("[REDACTED:"), "{what}: {}", r.text());
        let doc: Value =
            serde_json::from_str(r.result()["content"][1]["text"].as_str().unwrap()).unwrap();
        assert_eq!(doc["pod_name"], CRASHLOOP_POD, "{what}");
        assert!(!doc["log_lines"].as_array().unwrap().is_empty(), "{what}");
    }
    for (what, r) in [
        ("session Secret listing", &session_list),
        ("stateless Secret listing", &stateless_list),
    ] {
        assert_sse_and_clean(what, r);
        assert!(!r.is_tool_error(), "{what}: {}", r.text());
        let text = r.tool_text();
        assert!(
            text.contains("payments-db-credentials") && text.contains("payments-aws-credentials"),
            "{what}: names stay visible: {text}"
        );
        // A listing carries no `data`; each Secret's last-applied annotation (which repeats
        // its values) is what the upstream sent and the gateway took out.
        let doc: Value =
            serde_json::from_str(r.result()["content"][1]["text"].as_str().unwrap()).unwrap();
        let items = doc["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{what}: {text}");
        for item in items {
            assert_eq!(
                item["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
                "[REDACTED:k8s_secret_last_applied]",
                "{what}: {text}"
            );
        }
    }
    // The upstream did send the secrets: the gateway took them out.
    let upstream_calls = h.sim.tool_calls();
    assert_eq!(upstream_calls.len(), 4, "{upstream_calls:?}");
    h.stop().await;
}

#[tokio::test]
async fn tools_list_arriving_as_sse_is_filtered_like_json() {
    let names = |r: &crate::harness::Reply| -> Vec<String> {
        r.result()["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    // The same caller through a JSON upstream: what the policy lets this caller see.
    let json_h = Harness::start_with(Options::default().principal("sam", &["sre-oncall"])).await;
    let json_list = json_h.client().stateless("tools/list", json!({})).await;
    assert_eq!(json_list.headers["content-type"], "application/json");
    let visible = names(&json_list);
    json_h.stop().await;
    assert!(
        visible.len() < 20 && !visible.contains(&"apply_yaml".to_owned()),
        "the caller may not see every tool: {visible:?}"
    );

    let h = sse_upstream("sam", &["sre-oncall"]).await;
    let mut c = h.client();
    let stateless = c.stateless("tools/list", json!({})).await;
    assert_eq!(stateless.headers["content-type"], "text/event-stream");
    assert_eq!(names(&stateless), visible, "stateless era over SSE");
    assert_eq!(stateless.result()["cacheScope"], "private");
    c.initialize().await;
    let session = c.request("tools/list", json!({})).await;
    assert_eq!(session.headers["content-type"], "text/event-stream");
    assert_eq!(names(&session), visible, "session era over SSE");
    h.stop().await;
}

/// What the server sends on its own on the session's GET stream is redacted like a result:
/// here a log notification quoting an AWS secret key, from an upstream that streams it.
#[tokio::test]
async fn a_secret_in_a_server_message_on_the_get_stream_is_redacted() {
    use crate::faults::{Script, fake_upstream};
    let note = json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {
        "level": "warning", "logger": "eks-mcp-server",
        "data": format!("node bootstrap: AWS_SECRET_ACCESS_KEY={} exported", planted::AWS_SECRET_ACCESS_KEY)}});
    let body = format!("id: 1\nevent: message\ndata: {note}\n\n");
    let raw = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let up = fake_upstream(Script::Raw {
        delay: std::time::Duration::ZERO,
        bytes: Box::leak(raw.into_bytes().into_boxed_slice()),
    })
    .await;
    let (_gw, addr, guard) = Harness::in_front_of_url(&up.url, None).await;
    let mut c = crate::harness::McpClient::new(&format!("http://{addr}/mcp"));
    c.session = Some("session-from-the-upstream".into());
    c.protocol = Some(crate::harness::SESSION_ERA.into());
    let resp = c.open_stream().await;
    assert_eq!(resp.status(), http::StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let bytes = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        http_body_util::BodyExt::collect(resp.into_body()),
    )
    .await
    .expect("the stream ends when the upstream's does")
    .unwrap()
    .to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    assert_no_planted("GET stream", &text);
    let messages = crate::harness::sse_messages(&bytes);
    assert_eq!(messages.len(), 1, "{text}");
    assert_eq!(messages[0]["method"], "notifications/message");
    assert_eq!(
        messages[0]["params"]["data"],
        "node bootstrap: AWS_SECRET_ACCESS_KEY=[REDACTED:aws_secret_access_key] exported",
        "{text}"
    );
    assert_eq!(up.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    guard.stop().await;
}
