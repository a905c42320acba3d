//! The per-message parse and relay path, without sockets: what the gateway does to one
//! request on the way in (strict parse, era and header checks, re-serialisation) and to one
//! response message on the way out (JSON parse, redaction, serialisation), and the SSE
//! framing around a message. The response cases call the gateway's own response path
//! (`pipeline::relay_payload`, `pipeline::relay_event_data`), so the figures follow the code.
//! Run: `cargo bench --bench relay`.
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eks_mcp_gateway::jsonrpc::parse_message;
use eks_mcp_gateway::mcp;
use eks_mcp_gateway::pipeline::{relay_event_data, relay_payload};
use eks_mcp_gateway::redact::Redactor;
use eks_mcp_gateway::sse::{SseItem, SseParser, encode_event};
use http::HeaderMap;
use serde_json::{Value, json};

fn request_bytes() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "jsonrpc": "2.0", "id": 42, "method": "tools/call",
        "params": {
            "name": "list_k8s_resources",
            "arguments": {"cluster_name": "dev", "kind": "Pod", "api_version": "v1", "namespace": "payments", "label_selector": "app=payments-api"},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "progressToken": "p-42"}
        }
    }))
    .unwrap()
}

/// A `list_k8s_resources` result of ~4 KB, shaped like the EKS MCP server's.
fn response_value() -> Value {
    let items: Vec<Value> = (0..20)
        .map(|i| {
            json!({
                "name": format!("payments-api-6d8f7b9c4-{i:05}"), "namespace": "payments",
                "creation_timestamp": "2026-11-24T14:00:00Z",
                "labels": {"app": "payments-api", "pod-template-hash": "6d8f7b9c4"},
                "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-24T13:59:00Z"}
            })
        })
        .collect();
    let doc = json!({"kind": "Pod", "api_version": "v1", "namespace": "payments", "count": items.len(), "items": items});
    json!({"jsonrpc": "2.0", "id": 42, "result": {"content": [
        {"type": "text", "text": "Successfully listed 20 Pod resources in payments/all namespaces"},
        {"type": "text", "text": doc.to_string()}
    ], "isError": false}})
}

/// The load bench's result, fetched from the embedded upstream: `list_k8s_resources` of the
/// Deployments in `dev/payments` (~2.8 KB). Its JSON text block holds
/// `last-applied-configuration` annotations (JSON inside JSON inside the message) with a
/// database password, so every level is parsed, walked and written back.
fn password_result() -> Vec<u8> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = eks_mcp_gateway::sim::start(Default::default(), listener)
            .await
            .unwrap();
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_k8s_resources","arguments":{"cluster_name":"dev","kind":"Deployment","api_version":"apps/v1","namespace":"payments"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        let req = http::Request::post(sim.url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "list_k8s_resources")
            .body(Full::new(bytes::Bytes::from_static(body.as_bytes())))
            .unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http();
        let resp = client.request(req).await.unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
        sim.stop().await;
        bytes
    })
}

fn stateless_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("mcp-protocol-version", "2026-07-28".parse().unwrap());
    h.insert("mcp-method", "tools/call".parse().unwrap());
    h.insert("mcp-name", "list_k8s_resources".parse().unwrap());
    h
}

fn bench(c: &mut Criterion) {
    let req = request_bytes();
    let headers = stateless_headers();
    let mut g = c.benchmark_group("request");
    g.throughput(Throughput::Bytes(req.len() as u64));
    g.bench_function("parse_check_reserialise", |b| {
        b.iter(|| {
            let msg = parse_message(black_box(&req)).unwrap();
            let (era, _) = mcp::era_of(&headers, &msg);
            mcp::check_headers(&headers, &msg, era).unwrap();
            black_box(msg.to_bytes())
        })
    });
    g.finish();

    let redactor = Redactor::builtin();
    let profiles = vec!["baseline".to_string()];
    let resp = serde_json::to_vec(&response_value()).unwrap();
    let mut g = c.benchmark_group("response");
    g.throughput(Throughput::Bytes(resp.len() as u64));
    // The gateway's own response path (`pipeline::relay_payload`, what `Relay::process_payload`
    // runs) with its redaction step; this result is clean, so the upstream's bytes go out as
    // they came.
    let resp_bytes = bytes::Bytes::from(resp.clone());
    let redact = |v: &mut Value| !redactor.redact_message(v, &profiles).is_empty();
    g.bench_function("gateway_relay_clean", |b| {
        b.iter(|| black_box(relay_payload(black_box(&resp_bytes), redact).unwrap()))
    });
    // The same message when it has to be written out again (as when something was redacted
    // or the upstream's spelling was not faithful): parse, redact, serialise.
    g.bench_function("gateway_relay_reserialised", |b| {
        b.iter(|| {
            black_box(
                relay_payload(black_box(&resp_bytes), |v| {
                    redact(v);
                    true
                })
                .unwrap(),
            )
        })
    });
    let framed = format!(
        "event: message\nid: 7\ndata: {}\n\n",
        String::from_utf8_lossy(&resp)
    )
    .into_bytes();
    // One SSE event through the gateway's own per-event step (`pipeline::relay_event_data`).
    g.bench_function("sse_event_parse_redact_encode", |b| {
        b.iter(|| {
            let mut parser = SseParser::new(32 << 20);
            let mut out = Vec::new();
            for item in parser.push(black_box(&framed)).unwrap() {
                if let SseItem::Event(mut ev) = item {
                    assert!(relay_event_data(&mut ev.data, redact));
                    out.push(encode_event(&ev));
                }
            }
            black_box(out)
        })
    });
    g.finish();

    // What the gateway does to the load bench's response (`Relay::process_payload`).
    let resp = password_result();
    let mut g = c.benchmark_group("response_with_password");
    g.throughput(Throughput::Bytes(resp.len() as u64));
    let resp = bytes::Bytes::from(resp);
    g.bench_function("parse_redact_serialise", |b| {
        b.iter(|| {
            black_box(
                relay_payload(black_box(&resp), |v| {
                    let found = redactor.redact_message(v, &profiles);
                    assert!(!found.is_empty());
                    true
                })
                .unwrap(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
