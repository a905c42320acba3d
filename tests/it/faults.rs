//! Upstream and client faults: each test asserts the exact answer the client gets and that
//! the gateway keeps serving afterwards.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use eks_mcp_gateway::jsonrpc;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{Harness, McpClient};

/// What the scripted upstream does with each request.
#[derive(Clone)]
enum Script {
    /// Answer with these raw bytes, after an optional delay, then close.
    Raw {
        delay: Duration,
        bytes: &'static [u8],
    },
    /// SSE headers and one event, then a TCP reset.
    ResetMidSse,
    /// An SSE stream that writes an event every 20 ms until the client goes away.
    Endless,
}

/// A raw-TCP upstream that follows a script, counting requests and detected disconnects.
struct FakeUpstream {
    url: String,
    requests: Arc<AtomicUsize>,
    disconnects: Arc<AtomicUsize>,
}

async fn fake_upstream(script: Script) -> FakeUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let disconnects = Arc::new(AtomicUsize::new(0));
    let (r, d) = (requests.clone(), disconnects.clone());
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let (script, r, d) = (script.clone(), r.clone(), d.clone());
            tokio::spawn(async move { serve_one(sock, script, r, d).await });
        }
    });
    FakeUpstream {
        url,
        requests,
        disconnects,
    }
}

async fn read_request(sock: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(n) = sock.read(&mut chunk).await else {
            return false;
        };
        if n == 0 {
            return false;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let Ok(n) = sock.read(&mut chunk).await else {
                    return false;
                };
                if n == 0 {
                    return false;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return true;
        }
    }
}

async fn serve_one(
    mut sock: TcpStream,
    script: Script,
    requests: Arc<AtomicUsize>,
    disconnects: Arc<AtomicUsize>,
) {
    if !read_request(&mut sock).await {
        return;
    }
    requests.fetch_add(1, Ordering::SeqCst);
    match script {
        Script::Raw { delay, bytes } => {
            tokio::time::sleep(delay).await;
            let _ = sock.write_all(bytes).await;
            let _ = sock.shutdown().await;
        }
        Script::ResetMidSse => {
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            let ev = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":1}}\n\n";
            let _ = sock
                .write_all(format!("{:x}\r\n", ev.len()).as_bytes())
                .await;
            let _ = sock.write_all(ev).await;
            let _ = sock.write_all(b"\r\n").await;
            let _ = sock.flush().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            #[allow(deprecated)]
            let _ = sock.set_linger(Some(Duration::ZERO));
            drop(sock);
        }
        Script::Endless => {
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            for i in 0..1000u32 {
                let ev = format!(
                    "data: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"progressToken\":1,\"progress\":{i}}}}}\n\n"
                );
                let frame = format!("{:x}\r\n{ev}\r\n", ev.len());
                if sock.write_all(frame.as_bytes()).await.is_err() || sock.flush().await.is_err() {
                    disconnects.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn gateway_for(url: &str) -> (McpClient, crate::harness::GatewayGuard) {
    gateway_for_with(url, |_| {}).await
}

async fn gateway_for_with(
    url: &str,
    tweak: impl FnOnce(&mut eks_mcp_gateway::config::Config) + Send + 'static,
) -> (McpClient, crate::harness::GatewayGuard) {
    let (_gw, addr, guard) = Harness::in_front_of_url(url, Some(Box::new(tweak))).await;
    (McpClient::new(&format!("http://{addr}/mcp")), guard)
}

async fn assert_still_serving(client: &McpClient) {
    let url = client.url.replace("/mcp", "/healthz");
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let resp = http
        .request(Request::get(url).body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "gateway stopped serving after the fault"
    );
}

fn ping() -> Vec<u8> {
    serde_json::to_vec(&json!({"jsonrpc":"2.0","id":1,"method":"ping"})).unwrap()
}

#[tokio::test]
async fn upstream_down_is_a_clear_error_not_a_hang() {
    // Bind and drop: a port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (client, _g) = gateway_for(&format!("http://127.0.0.1:{port}/mcp")).await;
    let reply = client.post_raw(ping(), &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.error()["code"], jsonrpc::UPSTREAM_UNAVAILABLE);
    assert_eq!(reply.error()["data"]["source"], "upstream");
    assert_eq!(reply.response()["id"], 1);
    assert_still_serving(&client).await;
    // Readiness tells the orchestrator the upstream is unreachable.
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let ready = http
        .request(
            Request::get(client.url.replace("/mcp", "/readyz"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let doc: serde_json::Value =
        serde_json::from_slice(&ready.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(doc["checks"]["upstream"]["ok"], false, "{doc}");
}

#[tokio::test]
async fn slow_upstream_times_out_with_a_timeout_error() {
    let up = fake_upstream(Script::Raw {
        delay: Duration::from_secs(3),
        bytes: b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 36\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}",
    })
    .await;
    let (client, _g) = gateway_for_with(&up.url, |c| {
        c.upstream.response_timeout = Duration::from_millis(300)
    })
    .await;
    let reply = client.post_raw(ping(), &[]).await;
    assert_eq!(reply.error()["code"], jsonrpc::UPSTREAM_TIMEOUT);
    assert_eq!(reply.headers["x-mcp-gateway-error"], "upstream_timeout");
    assert_still_serving(&client).await;
}

#[tokio::test]
async fn upstream_5xx_and_429_are_distinguishable_errors() {
    let up = fake_upstream(Script::Raw {
        delay: Duration::ZERO,
        bytes: b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\ndown",
    })
    .await;
    let (client, _g) = gateway_for(&up.url).await;
    let reply = client.post_raw(ping(), &[]).await;
    assert_eq!(reply.error()["code"], jsonrpc::UPSTREAM_ERROR);
    assert_eq!(reply.error()["data"]["upstream_status"], 503);
    assert_ne!(reply.error()["code"], jsonrpc::POLICY_DENIED);

    let limited = fake_upstream(Script::Raw {
        delay: Duration::ZERO,
        bytes: b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\ncontent-length: 0\r\n\r\n",
    })
    .await;
    let (client, _g2) = gateway_for(&limited.url).await;
    let reply = client.post_raw(ping(), &[]).await;
    assert_eq!(reply.error()["code"], jsonrpc::UPSTREAM_RATE_LIMITED);
    assert_eq!(reply.error()["data"]["retry_after"], "7");
    assert_still_serving(&client).await;
}

#[tokio::test]
async fn malformed_upstream_body_is_a_bad_response_error() {
    let up = fake_upstream(Script::Raw {
        delay: Duration::ZERO,
        bytes: b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\nnot json!",
    })
    .await;
    let (client, _g) = gateway_for(&up.url).await;
    let reply = client.post_raw(ping(), &[]).await;
    assert_eq!(reply.error()["code"], jsonrpc::UPSTREAM_BAD_RESPONSE);
    assert!(
        !reply.text().contains("not json!"),
        "garbage must not reach the client"
    );
    assert_still_serving(&client).await;
}

/// A 200 `application/json` answer with `body`, for `Script::Raw`.
fn json_reply(body: &str) -> &'static [u8] {
    let raw = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    Box::leak(raw.into_bytes().into_boxed_slice())
}

#[tokio::test]
async fn clean_answers_arrive_as_sent_and_repeated_keys_as_the_gateway_read_them() {
    // Nothing to redact and nothing ambiguous: the upstream's bytes, formatting and escapes
    // included, are what the client gets.
    let clean = "{ \"jsonrpc\": \"2.0\", \"id\": 1,\n  \"result\": {\"z\": \"caf\\u00e9 \\/ ok\", \"a\": [1, -2, {\"k\": null}], \"big\": 18446744073709551615} }";
    let up = fake_upstream(Script::Raw {
        delay: Duration::ZERO,
        bytes: json_reply(clean),
    })
    .await;
    let (client, _g) = gateway_for(&up.url).await;
    let reply = client.post_raw(ping(), &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), clean);
    assert_eq!(reply.result()["z"], "caf\u{e9} / ok");

    // A repeated key: the gateway inspected the last `content` (clean); a client that keeps
    // the first would read the password. The client gets the message as the gateway read it.
    let repeated = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"note: DB_PASSWORD=hunter2"}],"content":[{"type":"text","text":"ok"}]}}"#;
    let up = fake_upstream(Script::Raw {
        delay: Duration::ZERO,
        bytes: json_reply(repeated),
    })
    .await;
    let (client, _g2) = gateway_for(&up.url).await;
    let reply = client.post_raw(ping(), &[]).await;
    assert_eq!(
        reply.text(),
        r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}"#
    );

    // A float may not read back as the number the gateway parsed: written out as parsed.
    let float = r#"{"jsonrpc":"2.0","id":1,"result":{"v":1E2}}"#;
    let up = fake_upstream(Script::Raw {
        delay: Duration::ZERO,
        bytes: json_reply(float),
    })
    .await;
    let (client, _g3) = gateway_for(&up.url).await;
    let reply = client.post_raw(ping(), &[]).await;
    assert_eq!(
        reply.text(),
        r#"{"jsonrpc":"2.0","id":1,"result":{"v":100.0}}"#
    );

    // Something redacted: written out with the redaction, as before.
    let secret = r#"{"jsonrpc":"2.0", "id":1, "result":{"content":[{"type":"text","text":"DB_PASSWORD=hunter2"}]}}"#;
    let up = fake_upstream(Script::Raw {
        delay: Duration::ZERO,
        bytes: json_reply(secret),
    })
    .await;
    let (client, _g4) = gateway_for(&up.url).await;
    let reply = client.post_raw(ping(), &[]).await;
    assert!(!reply.text().contains("hunter2"), "{}", reply.text());
    assert!(
        reply.text().starts_with(r#"{"jsonrpc":"2.0","id":1,"#),
        "{}",
        reply.text()
    );
    assert_still_serving(&client).await;
}

#[tokio::test]
async fn reset_mid_sse_ends_with_an_error_event_for_the_request() {
    let up = fake_upstream(Script::ResetMidSse).await;
    let (client, _g) = gateway_for(&up.url).await;
    let reply = client.post_raw(ping(), &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    // The progress notification that did arrive is relayed, then a JSON-RPC error for id 1.
    assert_eq!(reply.messages[0]["method"], "notifications/progress");
    let err = reply.error();
    assert_eq!(err["code"], jsonrpc::UPSTREAM_BAD_RESPONSE);
    assert_eq!(reply.response()["id"], 1);
    assert_still_serving(&client).await;
}

#[tokio::test]
async fn client_disconnect_mid_stream_cancels_the_upstream_request() {
    let up = fake_upstream(Script::Endless).await;
    let (client, _g) = gateway_for(&up.url).await;
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let req = Request::post(&client.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(Full::new(Bytes::from(ping())))
        .unwrap();
    let resp = http.request(req).await.unwrap();
    let mut body = resp.into_body();
    // Read a couple of events, then walk away.
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some());
    drop(body);
    drop(http);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while up.disconnects.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "upstream kept streaming after the client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);
    assert_still_serving(&client).await;
}

#[tokio::test]
async fn oversized_body_gets_413_and_never_reaches_the_upstream() {
    let h = Harness::start_with(
        crate::harness::Options::default().tweak(|c| c.limits.max_body_bytes = 64 * 1024),
    )
    .await;
    let client = h.client();
    let big = "x".repeat(100 * 1024);
    let body =
        serde_json::to_vec(&json!({"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad": big}}))
            .unwrap();
    let reply = client.post_raw(body, &[]).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.error()["code"], jsonrpc::INVALID_REQUEST);
    assert!(
        h.sim.received().is_empty(),
        "an oversized request reached the upstream"
    );
    let ok = client.stateless("ping", json!({})).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
}

#[tokio::test]
async fn bad_origin_and_bad_host_get_403() {
    let h = Harness::start().await;
    let client = h.client();
    let stateless = [
        ("mcp-protocol-version", crate::harness::STATELESS),
        ("mcp-method", "ping"),
    ];
    let ping = || {
        serde_json::to_vec(&json!({"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":crate::harness::STATELESS}}})).unwrap()
    };
    let with = |extra: (&'static str, String)| {
        let mut h: Vec<(&str, String)> =
            stateless.iter().map(|(k, v)| (*k, v.to_string())).collect();
        h.push(extra);
        h
    };
    let evil = with(("origin", "https://evil.example".into()));
    let reply = client
        .post_raw(
            ping(),
            &evil
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.text().contains("Origin not allowed"));
    let host = with(("host", "attacker.example:8080".into()));
    let reply = client
        .post_raw(
            ping(),
            &host
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let local = with(("origin", format!("http://{}", h.addr)));
    let reply = client
        .post_raw(
            ping(),
            &local
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "a loopback origin on a loopback gateway is fine: {}",
        reply.text()
    );
    assert!(
        h.sim
            .received()
            .iter()
            .all(|r| r.rpc_method.as_deref() == Some("ping"))
    );
    assert_eq!(h.sim.received().len(), 1);
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let up = fake_upstream(Script::Raw {
        delay: Duration::from_millis(700),
        bytes: b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 36\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}",
    })
    .await;
    let (client, guard) = gateway_for(&up.url).await;
    let in_flight = {
        let c = client.clone();
        tokio::spawn(async move { c.post_raw(ping(), &[]).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = tokio::spawn(guard.stop());
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.response()["result"],
        json!({}),
        "the in-flight request completed during the drain"
    );
    stopping.await.unwrap();
    // The listener is closed now: new connections are refused.
    let addr = client
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "gateway still accepting after shutdown"
    );
}
