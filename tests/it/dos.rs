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
