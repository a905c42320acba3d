//! The audit trail: one JSON line per record under concurrent load, backpressure in `block`
//! mode, errors in `fail_closed` mode when the sink is stuck or failing, and file rotation.
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use eks_mcp_gateway::audit::{AuditDecision, AuditError, AuditPrincipal, AuditRecord, AuditSink};
use eks_mcp_gateway::config::{AuditConfig, AuditFailure, PolicyMode};
use eks_mcp_gateway::identity::AuthKind;
use serde_json::{Value, json};

fn config(sink: &Path, queue_size: usize, on_failure: AuditFailure) -> AuditConfig {
    AuditConfig {
        sink: sink.display().to_string(),
        queue_size,
        on_failure,
        ..AuditConfig::default()
    }
}

fn record(n: usize) -> AuditRecord {
    let principal = AuditPrincipal {
        id: format!("user-{n}"),
        groups: vec!["dev".into()],
        auth: AuthKind::Jwt,
        claims: Default::default(),
    };
    let decision = AuditDecision {
        allow: !n.is_multiple_of(3),
        mode: PolicyMode::Enforce,
        enforced: true,
        reasons: if n.is_multiple_of(3) {
            vec!["writes need a grant".into()]
        } else {
            vec![]
        },
        rules: vec!["write_gating".into()],
        redact: vec!["baseline".into()],
    };
    let mut r = AuditRecord::new(principal, "tools/call", decision);
    r.tool = Some("list_k8s_resources".into());
    r.arguments = Some(json!({"seq": n, "cluster_name": "dev-1", "kind": "Pod"}));
    r.policy_revision = "rev-test".into();
    r
}

fn read_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn seq(v: &Value) -> u64 {
    v["arguments"]["seq"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_is_one_json_line_under_concurrent_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = AuditSink::start(&config(&path, 16, AuditFailure::Block)).unwrap();
    let mut tasks = Vec::new();
    for t in 0..25 {
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                sink.record(record(t * 20 + i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    sink.flush().await;
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 500);
    let seqs: HashSet<u64> = lines.iter().map(seq).collect();
    assert_eq!(seqs.len(), 500, "each record exactly once");
    let ids: HashSet<&str> = lines
        .iter()
        .map(|l| l["decision_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 500, "decision ids are unique");
    let first = &lines[0];
    for field in [
        "timestamp",
        "principal",
        "method",
        "tool",
        "facts",
        "decision",
        "policy_revision",
    ] {
        assert!(first.get(field).is_some(), "record lacks {field}: {first}");
    }
    assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));
}

fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo failed");
}

/// Read `n` lines from a FIFO on a blocking thread.
fn drain_fifo(path: PathBuf, n: usize) -> tokio::task::JoinHandle<Vec<Value>> {
    tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&path).unwrap();
        let mut out = Vec::new();
        for line in BufReader::new(f).lines() {
            out.push(serde_json::from_str(&line.unwrap()).unwrap());
            if out.len() == n {
                break;
            }
        }
        out
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_mode_holds_callers_while_the_sink_is_stuck_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.fifo");
    mkfifo(&path); // nobody reads yet: the writer is stuck
    let sink = AuditSink::start(&config(&path, 4, AuditFailure::Block)).unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for n in 0..40 {
        let (sink, done) = (sink.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            sink.record(record(n)).await.unwrap();
            done.fetch_add(1, Ordering::SeqCst);
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let finished = done.load(Ordering::SeqCst);
    assert!(
        finished < 40,
        "callers must wait while the queue is full ({finished} finished)"
    );
    assert!(sink.accepting(), "block mode still accepts (it waits)");

    let reader = drain_fifo(path, 40);
    for t in tasks {
        t.await.unwrap();
    }
    let lines = reader.await.unwrap();
    let seqs: HashSet<u64> = lines.iter().map(seq).collect();
    assert_eq!(seqs, (0..40).collect::<HashSet<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_records_while_the_queue_is_full_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.fifo");
    mkfifo(&path);
    let sink = AuditSink::start(&config(&path, 2, AuditFailure::FailClosed)).unwrap();
    let mut accepted = 0;
    let mut refused = None;
    for n in 0..50 {
        match sink.record(record(n)).await {
            Ok(()) => accepted += 1,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = refused.expect("a stuck sink must make fail_closed refuse records");
    assert!(matches!(err, AuditError::QueueFull { .. }), "{err}");
    assert!(err.to_string().contains("fail_closed"), "{err}");
    assert!(!sink.accepting());

    // A reader appears: everything accepted so far is written, then records flow again.
    let reader = drain_fifo(path, accepted + 1);
    let mut ok = false;
    for _ in 0..200 {
        if sink.record(record(1000)).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ok, "records are accepted again once the sink drains");
    let lines = reader.await.unwrap();
    assert_eq!(lines.len(), accepted + 1);
    assert_eq!(lines.last().map(seq), Some(1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_records_while_the_sink_fails() {
    let metric = || {
        eks_mcp_gateway::metrics::global()
            .audit_records_total
            .with_label_values(&["write_error"])
            .get()
    };
    let errors_before = metric();
    // Every write to /dev/full fails with "no space left on device".
    let sink =
        AuditSink::start(&config(Path::new("/dev/full"), 8, AuditFailure::FailClosed)).unwrap();
    sink.record(record(1)).await.unwrap();
    let mut refused = None;
    for n in 0..200 {
        if let Err(e) = sink.record(record(n)).await {
            refused = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let err = refused.expect("a failing sink must make fail_closed refuse records");
    assert!(matches!(err, AuditError::SinkFailed { .. }), "{err}");
    assert!(err.to_string().contains("/dev/full"), "{err}");
    assert!(sink.failing());
    let (ready, detail) = sink.readiness();
    assert!(!ready && detail.contains("/dev/full"), "{detail}");
    assert!(metric() > errors_before, "write errors are counted");
}

#[tokio::test]
async fn files_rotate_by_size_and_keep_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let cfg = AuditConfig {
        rotate_bytes: 4_000,
        keep_files: 3,
        ..config(&path, 64, AuditFailure::Block)
    };
    let sink = AuditSink::start(&cfg).unwrap();
    for n in 0..200 {
        sink.record(record(n)).await.unwrap();
    }
    sink.flush().await;
    let rotated = |n: usize| PathBuf::from(format!("{}.{n}", path.display()));
    assert!(path.exists());
    for n in 1..=3 {
        assert!(rotated(n).exists(), "{} should exist", rotated(n).display());
    }
    assert!(
        !rotated(4).exists(),
        "only keep_files rotated files are kept"
    );

    // Oldest first: .3, .2, .1, current. Every file holds whole lines within the limit, and
    // together they hold the newest records in order, ending with the last one.
    let mut all = Vec::new();
    for p in [rotated(3), rotated(2), rotated(1), path.clone()] {
        let size = std::fs::metadata(&p).unwrap().len();
        assert!(size <= 4_000, "{} is {size} bytes", p.display());
        all.extend(read_lines(&p).iter().map(seq));
    }
    assert_eq!(all.last(), Some(&199));
    assert!(
        all.windows(2).all(|w| w[1] == w[0] + 1),
        "contiguous and ordered: {all:?}"
    );
    assert!(all.len() < 200, "old files fell off");
}

#[tokio::test]
async fn sink_none_accepts_without_writing_and_bad_paths_are_named() {
    let sink = AuditSink::start(&AuditConfig {
        sink: "none".into(),
        ..AuditConfig::default()
    })
    .unwrap();
    sink.record(record(1)).await.unwrap();
    sink.flush().await;

    let err = AuditSink::start(&AuditConfig {
        sink: "/nonexistent-dir/audit.jsonl".into(),
        ..AuditConfig::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("/nonexistent-dir") && err.contains("Fix"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Through the gateway

async fn scrape(addr: std::net::SocketAddr) -> String {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let resp = client
        .request(
            http::Request::get(format!("http://{addr}/metrics"))
                .body(http_body_util::Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), http::StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_calls_through_the_gateway_leave_one_clean_record_each() {
    use crate::harness::{Harness, is_child, run_in_child};
    use crate::telemetry::{parse_exposition, parse_total, sample};
    use eks_mcp_gateway::sim::{CRASHLOOP_POD, planted};
    // Alone in a child process, so the process-wide counters move by exactly these calls.
    const NAME: &str = "audit::mixed_calls_through_the_gateway_leave_one_clean_record_each";
    if !is_child(NAME) {
        return run_in_child(NAME, &[]).await;
    }

    let h = Harness::start().await;
    let before = parse_exposition(&scrape(h.addr).await);

    // (tool, arguments, allowed, redacted on the way back)
    let secret_manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: leaked\n  namespace: payments\n\
         stringData:\n  password: {}\n",
        planted::DB_PASSWORD
    );
    let calls = [
        (
            "list_k8s_resources",
            json!({"cluster_name": "dev", "kind": "Pod", "api_version": "v1", "namespace": "payments"}),
            true,
            false,
        ),
        (
            "get_pod_logs",
            json!({"cluster_name": "dev", "namespace": "payments", "pod_name": CRASHLOOP_POD}),
            true,
            true,
        ),
        (
            "read_k8s_resource",
            json!({"cluster_name": "dev", "kind": "Secret", "api_version": "v1",
                   "namespace": "payments", "name": "payments-db-credentials"}),
            false,
            false,
        ),
        (
            "apply_yaml",
            json!({"cluster_name": "dev", "namespace": "payments", "yaml_content": secret_manifest}),
            false,
            false,
        ),
    ];
    const ROUNDS: usize = 6;
    let mut tasks = Vec::new();
    for round in 0..ROUNDS {
        let mut client = h.client();
        let calls = calls.clone();
        tasks.push(tokio::spawn(async move {
            // Half the callers use a session, half the stateless era.
            let session = round % 2 == 0;
            if session {
                client.initialize().await;
            }
            for (tool, args, allowed, _) in calls {
                let r = if session {
                    client.call_tool(tool, args).await
                } else {
                    client.stateless_call(tool, args).await
                };
                assert_eq!(!r.is_tool_error(), allowed, "{tool}: {}", r.text());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let expected_calls = ROUNDS * calls.len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let records = loop {
        let recs: Vec<Value> = crate::harness::read_jsonl(&h.audit_path)
            .into_iter()
            .filter(|r| r["method"] == "tools/call")
            .collect();
        if recs.len() >= expected_calls || tokio::time::Instant::now() > deadline {
            break recs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        records.len(),
        expected_calls,
        "exactly one record per tool call"
    );
    for (tool, _, allowed, redacted) in &calls {
        let mine: Vec<&Value> = records.iter().filter(|r| r["tool"] == *tool).collect();
        assert_eq!(mine.len(), ROUNDS, "{tool}");
        for r in mine {
            assert_eq!(r["decision"]["allow"], *allowed, "{tool}: {r}");
            assert_eq!(r["principal"]["id"], "alice@example.com");
            assert_eq!(r["facts"]["cluster"], "dev", "{tool}: {r}");
            if !allowed {
                assert!(
                    !r["decision"]["reasons"].as_array().unwrap().is_empty(),
                    "{r}"
                );
                assert!(
                    !r["decision"]["rules"].as_array().unwrap().is_empty(),
                    "{r}"
                );
                assert!(
                    r["upstream"].is_null(),
                    "denied calls never went upstream: {r}"
                );
            } else {
                assert_eq!(r["upstream"]["status"], 200, "{tool}: {r}");
            }
            if *redacted {
                assert!(
                    !r["redactions"].as_array().unwrap().is_empty(),
                    "{tool}: {r}"
                );
            }
            for red in r["redactions"].as_array().unwrap() {
                assert!(red["path"].as_str().unwrap().starts_with("$."), "{red}");
                assert!(red["detector"].is_string(), "{red}");
            }
        }
    }
    let stateless = records.iter().filter(|r| r["era"] == "stateless").count();
    assert_eq!(stateless, ROUNDS / 2 * calls.len());
    for r in records.iter().filter(|r| r["era"] == "session") {
        let s = r["session"]
            .as_str()
            .expect("session calls carry the session hash");
        assert_eq!(s.len(), 16, "a hash, not the id: {s}");
    }

    let applied = records.iter().find(|r| r["tool"] == "apply_yaml").unwrap();
    let yaml = applied["arguments"]["yaml_content"].as_str().unwrap();
    assert!(
        yaml.contains("[REDACTED:"),
        "arguments are recorded redacted: {yaml}"
    );

    // No planted secret anywhere in the audit output (arguments were redacted first).
    let raw = std::fs::read_to_string(&h.audit_path).unwrap();
    for secret in planted::ALL {
        assert!(
            !raw.contains(secret),
            "planted secret {secret:?} reached the audit log"
        );
    }

    // The same calls moved the counters.
    let after = parse_exposition(&scrape(h.addr).await);
    for (tool, _, allowed, _) in &calls {
        let labels = [
            ("method", "tools/call"),
            ("tool", *tool),
            ("decision", if *allowed { "allow" } else { "deny" }),
        ];
        let moved = sample(&after, "mcp_gateway_requests_total", &labels)
            - sample(&before, "mcp_gateway_requests_total", &labels);
        assert_eq!(moved, ROUNDS as f64, "{tool}: counter moved by {moved}");
    }
    // Each redaction of a result is counted once; the audit records list those (with the
    // redactions of arguments, whose paths are under `$.params.arguments`).
    let result_redactions = records
        .iter()
        .flat_map(|r| r["redactions"].as_array().unwrap())
        .filter(|red| {
            !red["path"]
                .as_str()
                .unwrap()
                .starts_with("$.params.arguments")
        })
        .count();
    assert!(result_redactions >= ROUNDS, "{result_redactions}");
    assert_eq!(
        parse_total(&after, "mcp_gateway_redactions_total")
            - parse_total(&before, "mcp_gateway_redactions_total"),
        result_redactions as f64,
        "redactions are counted"
    );
    h.stop().await;
}

/// `audit.on_failure: fail_closed` through the running gateway: once the sink fails, every
/// call is refused with the audit error and nothing reaches the upstream; `/readyz` says why.
#[tokio::test]
async fn fail_closed_gateway_refuses_calls_while_the_sink_fails() {
    use crate::harness::{Harness, Options};
    let h = Harness::start_with(Options::default().tweak(|c| {
        // Every write to /dev/full fails with "no space left on device".
        c.audit.sink = "/dev/full".into();
        c.audit.on_failure = AuditFailure::FailClosed;
    }))
    .await;
    let c = h.client();
    // The first call is accepted (the sink has not failed yet); writing its record fails.
    let first = c.stateless("ping", json!({})).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !h.gateway.audit.failing() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sink never reported its failed write"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.sim.clear_received();

    let args =
        json!({"cluster_name": "dev", "kind": "Pod", "api_version": "v1", "namespace": "payments"});
    let stateless = c.stateless_call("list_k8s_resources", args.clone()).await;
    let mut session_client = h.client();
    session_client.session = Some("any-session".into());
    session_client.protocol = Some(crate::harness::SESSION_ERA.into());
    let session = session_client.call_tool("list_k8s_resources", args).await;
    for (era, r) in [("stateless", &stateless), ("session", &session)] {
        assert_eq!(r.status, 200, "{era}: {}", r.text());
        assert_eq!(
            r.headers["x-mcp-gateway-error"], "audit_unavailable",
            "{era}"
        );
        let err = r.error();
        assert_eq!(
            err["code"],
            eks_mcp_gateway::jsonrpc::AUDIT_UNAVAILABLE,
            "{era}: {err}"
        );
        assert_eq!(
            err["data"],
            json!({"source": "gateway", "kind": "audit_unavailable"})
        );
    }
    // A request without an id (the GET stream) gets the HTTP status instead.
    let stream = session_client.open_stream().await;
    assert_eq!(stream.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        h.sim.received().is_empty(),
        "refused requests reached the upstream: {:?}",
        h.sim.received()
    );

    let ready = crate::harness::McpClient::new(&format!("http://{}/readyz", h.addr))
        .send(
            http::Request::get(format!("http://{}/readyz", h.addr))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(ready.status, http::StatusCode::SERVICE_UNAVAILABLE);
    let doc: Value = serde_json::from_slice(&ready.body).unwrap();
    assert_eq!(doc["checks"]["audit"]["ok"], false, "{doc}");
    assert!(
        doc["checks"]["audit"]["detail"]
            .as_str()
            .unwrap()
            .contains("/dev/full"),
        "{doc}"
    );
    h.stop().await;
}
