//! Denial of service: inputs that used to hold the gateway's workers, memory or request
//! slots, sent through the running gateway. None of these tests asserts a speed; each shows
//! that the input gets a clear refusal, and that another caller is served meanwhile.
use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use crate::harness::{Harness, Options};

/// An `apply_yaml` call with `yaml` as its manifest.
fn apply(yaml: String) -> serde_json::Value {
    json!({"cluster_name": "dev", "namespace": "payments", "yaml_content": yaml})
}

/// The manifest was refused with a reason naming `key`, and the upstream never saw it.
async fn assert_refused(h: &Harness, reply: &crate::harness::Reply, key: &str) {
    assert!(reply.is_tool_error(), "{}", reply.text());
    let text = reply.tool_text();
    assert!(text.contains(key), "the denial names {key}: {text}");
    assert!(
        h.sim
            .tool_calls()
            .iter()
            .all(|(name, _)| name != "apply_yaml"),
        "the upstream never receives a refused manifest"
    );
    // The audit writer batches: wait for the record, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !crate::harness::read_jsonl(&h.audit_path)
        .iter()
        .any(|r| r["decision"].to_string().contains(key))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refusal is audited as a denial with its reason"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_flow_collections_are_refused_while_others_are_served() {
    // 150 KB of `[`: quadratic in libyaml (over a minute of one worker before the limit).
    let h = Harness::start().await;
    let mut slow = h.client();
    slow.initialize().await;
    let mut other = h.client();
    other.initialize().await;
    let nested = tokio::spawn(async move {
        slow.call_tool("apply_yaml", apply(format!("x: {}", "[".repeat(150_000))))
            .await
    });
    let ping = other.request("ping", json!({})).await;
    assert_eq!(ping.status, StatusCode::OK, "{}", ping.text());
    let reply = nested.await.unwrap();
    assert_refused(&h, &reply, "limits.max_manifest_depth").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_of_many_documents_is_refused_with_the_limit() {
    // 3.5 MiB of small documents (the body limit is 4 MiB): 58k documents in 4 MiB cost
    // seconds, hundreds of MB and a policy timeout.
    let h = Harness::start().await;
    let mut c = h.client();
    c.initialize().await;
    let doc = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n";
    let yaml = doc.repeat((7 << 19) / doc.len());
    let reply = c.call_tool("apply_yaml", apply(yaml)).await;
    assert_refused(&h, &reply, "limits.max_manifest_documents").await;
    // Within the limit, the same documents are read (and decided on) as usual.
    let reply = c.call_tool("apply_yaml", apply(doc.repeat(3))).await;
    assert!(
        !reply.tool_text().contains("limits.max_manifest"),
        "{}",
        reply.tool_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_bomb_is_refused_before_it_expands() {
    // 17 KB that expands to 5 million values (520 MB in the YAML loader).
    let h = Harness::start().await;
    let mut c = h.client();
    c.initialize().await;
    let bomb = format!(
        "a: &a [{}]\nb: [{}]\n",
        "x,".repeat(1000),
        "*a,".repeat(5000)
    );
    let reply = c.call_tool("apply_yaml", apply(bomb)).await;
    assert_refused(&h, &reply, "limits.max_manifest_values").await;
}

/// Connect to `gateway` from the loopback address `source` (Linux routes all of 127/8).
async fn connect_from(source: &str, gateway: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(gateway).await.unwrap()
}

/// Headers announcing a large body, then one byte of it.
async fn start_trickle(source: &str, gateway: SocketAddr) -> TcpStream {
    let mut s = connect_from(source, gateway).await;
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {gateway}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: 1000000\r\n\r\n{{"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// The status of a complete small request sent from `source`.
async fn status_from(source: &str, gateway: SocketAddr) -> u16 {
    let mut s = connect_from(source, gateway).await;
    // A stateless-era ping: no session needed.
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {gateway}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\n\
         Mcp-Method: ping\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    read_status(&mut s).await
}

async fn read_status(s: &mut TcpStream) -> u16 {
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        let n = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf[got..]))
            .await
            .expect("an answer within 60s")
            .unwrap();
        assert!(n > 0, "connection closed without a status line");
        got += n;
    }
    String::from_utf8_lossy(&buf[9..12]).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_bodies_neither_hold_every_slot_nor_stay_forever() {
    let h = Harness::start_with(Options::default().tweak(|c| {
        c.limits.max_concurrent_requests = 8;
        c.limits.max_requests_per_source = 4;
        c.limits.body_read_timeout = Duration::from_secs(2);
    }))
    .await;
    let gw = h.addr;
    // One source opens as many trickling requests as there are slots in the gateway.
    let mut trickles = Vec::new();
    for _ in 0..8 {
        trickles.push(start_trickle("127.0.0.2", gw).await);
    }
    // Wait until the source's requests are in: its next request is refused.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if status_from("127.0.0.2", gw).await == 503 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the trickles never filled a slot"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another caller is still served (with every slot held by one source, it got 503).
    assert_eq!(status_from("127.0.0.1", gw).await, 200);
    // And a trickle is cut off with 408 once it falls behind the body deadline.
    let status = read_status(&mut trickles[0]).await;
    assert_eq!(
        status, 408,
        "a trickled body is answered with 408 Request Timeout"
    );
}

/// `n` small ConfigMaps in kube-system: a manifest far from every byte limit whose reading,
/// classification and decision are slow (thousands of objects).
fn many_configmaps(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c{i}\n  namespace: kube-system\ndata:\n  k: v{i}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn inspections(outcome: &str) -> u64 {
    eks_mcp_gateway::metrics::global()
        .inspections_offloaded_total
        .with_label_values(&[outcome])
        .get()
}

// One async worker for the gateway, its upstream and both clients: if the large call were
// inspected on it, nothing else could run until the inspection ended.
#[tokio::test(flavor = "current_thread")]
async fn a_large_call_is_inspected_off_the_async_workers_while_another_caller_is_served() {
    let h = Harness::start_with(
        Options::default()
            .principal("alice", &["payments-dev"])
            .tweak(|c| {
                c.limits.max_manifest_documents = 100_000;
                c.limits.max_manifest_objects = 100_000;
                c.limits.max_manifest_values = 10_000_000;
                c.limits.inspect_timeout = Duration::from_secs(300);
                // The decision over 30,000 objects is what is measured here, not the
                // evaluation limit: on a loaded 2-core machine it can pass 250 ms.
                c.policy.eval_timeout = Duration::from_secs(60);
            }),
    )
    .await;
    let mut big = h.client();
    big.initialize().await;
    let mut other = h.client();
    other.initialize().await;
    let gauge = || {
        eks_mcp_gateway::metrics::global()
            .inspections_in_flight
            .get()
    };
    let heavy = tokio::spawn(async move {
        big.call_tool("apply_yaml", apply(many_configmaps(30_000)))
            .await
    });
    // Wait (bounded) until the gateway is inspecting the large call.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while gauge() == 0 {
        assert!(
            !heavy.is_finished(),
            "the large call ended before it was seen in flight"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the large call was never inspected"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Another caller is served while that inspection goes on.
    let ping = other.request("ping", json!({})).await;
    assert_eq!(ping.status, StatusCode::OK, "{}", ping.text());
    let listed = other
        .call_tool(
            "list_k8s_resources",
            json!({"cluster_name": "dev", "kind": "Pod",
            "api_version": "v1", "namespace": "payments"}),
        )
        .await;
    assert!(!listed.is_tool_error(), "{}", listed.text());
    assert_eq!(
        gauge(),
        1,
        "the large call's inspection was still in flight meanwhile"
    );
    assert!(!heavy.is_finished());
    // The large call itself is decided as usual: kube-system is not alice's.
    let reply = heavy.await.unwrap();
    assert!(reply.is_tool_error(), "{}", reply.text());
    assert!(
        reply.tool_text().contains("kube-system"),
        "{}",
        reply.tool_text()
    );
    assert!(inspections("done") >= 1);
    assert!(h.sim.tool_calls().iter().all(|(n, _)| n != "apply_yaml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inspection_past_its_deadline_fails_closed() {
    let h = Harness::start_with(
        Options::default()
            .principal("alice", &["payments-dev"])
            .tweak(|c| {
                c.limits.inspect_offload_bytes = 2048;
                c.limits.inspect_timeout = Duration::from_nanos(1);
            }),
    )
    .await;
    let mut c = h.client();
    c.initialize().await;
    // A large call, in alice's own namespace, that would be allowed: denied, never forwarded.
    let manifest = (0..300)
        .map(|i| {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c{i}\ndata:\n  k: v{i}\n")
        })
        .collect::<Vec<_>>()
        .join("---\n");
    assert!(manifest.len() > 2048);
    let reply = c.call_tool("apply_yaml", apply(manifest)).await;
    assert_refused(&h, &reply, "limits.inspect_timeout").await;
    let records = crate::harness::read_jsonl(&h.audit_path);
    let rec = records
        .iter()
        .find(|r| r["decision"].to_string().contains("limits.inspect_timeout"))
        .unwrap();
    assert_eq!(rec["decision"]["allow"], json!(false), "{rec}");
    assert!(inspections("timeout") >= 1);
    // A small call is inspected inline and served; a large answer to it is withheld, not
    // relayed unredacted (a platform admin may read the bulk logger's logs).
    let admin = Harness::start_with(Options::default().tweak(|c| {
        c.limits.inspect_offload_bytes = 2048;
        c.limits.inspect_timeout = Duration::from_nanos(1);
    }))
    .await;
    let mut a = admin.client();
    a.initialize().await;
    let logs = a
        .call_tool(
            "get_pod_logs",
            json!({"cluster_name": "dev", "namespace": "monitoring",
            "pod_name": "bulk-logger", "tail_lines": 20000, "limit_bytes": 67108864}),
        )
        .await;
    assert!(
        logs.text().contains("limits.inspect_timeout") && logs.text().contains("withheld"),
        "{}",
        &logs.text()[..logs.text().len().min(2000)]
    );
    assert!(!logs.text().contains("seq=0"), "no log line was relayed");
    let ping = c.request("ping", json!({})).await;
    assert_eq!(ping.status, StatusCode::OK, "{}", ping.text());
}

/// The peak resident memory of this test process (nextest runs each test in its own).
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_shaped_megabyte_is_redacted_in_bounded_memory() {
    // 1 MiB of `{"kind":"Secret",` then `"data":{"x":"y",` over and over: the redactor's
    // Secret-in-JSON-text fallback used to be quadratic here (a 128 KB line took 1.6 GB;
    // this one got the process killed). Stored in a ConfigMap through the gateway (the
    // arguments are redacted for the audit record) and read back (the answer is redacted).
    let h = Harness::start().await;
    let mut c = h.client();
    c.initialize().await;
    let mut value = String::from("{\"kind\":\"Secret\",");
    while value.len() < 1024 * 1024 {
        value.push_str("\"data\":{\"x\":\"y\",");
    }
    let before = peak_rss_bytes();
    let created = c
        .call_tool(
            "manage_k8s_resource",
            json!({"operation": "create", "cluster_name": "dev", "kind": "ConfigMap",
                "api_version": "v1", "namespace": "payments", "name": "blob",
                "body": {"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "blob", "namespace": "payments"},
                         "data": {"line": value}}}),
        )
        .await;
    assert!(
        !created.is_tool_error(),
        "{}",
        &created.text()[..2000.min(created.text().len())]
    );
    let read = c
        .call_tool(
            "manage_k8s_resource",
            json!({"operation": "read", "cluster_name": "dev", "kind": "ConfigMap",
                "api_version": "v1", "namespace": "payments", "name": "blob"}),
        )
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert!(
        read.text().contains("blob"),
        "{}",
        &read.text()[..2000.min(read.text().len())]
    );
    h.audit_records(3).await;
    let grown = peak_rss_bytes().saturating_sub(before);
    eprintln!("peak RSS grew by {} MiB for a 1 MiB value", grown >> 20);
    // Linear work on a 1 MiB value (a few copies of it in JSON, YAML-free) stays far below
    // this; the quadratic fallback needed gigabytes.
    assert!(
        grown < 256 * 1024 * 1024,
        "peak RSS grew by {} MiB",
        grown >> 20
    );
}
