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
pub(crate) enum Script {
    /// Answer with these raw bytes, after an optional delay, then close.
    Raw {
        delay: Duration,
        bytes: &'static [u8],
    },
    /// SSE headers and one event, then a TCP reset.
    ResetMidSse,
    /// An SSE stream that writes an event every 20 ms until the client goes away.
    Endless,
    /// Answer with these raw bytes once a permit is available (the test adds permits).
    Gated {
        gate: Arc<tokio::sync::Semaphore>,
        bytes: &'static [u8],
    },
    /// Write these bytes (a head and part of a body), then say nothing more until the
    /// client goes away.
    Stall { bytes: &'static [u8] },
}

/// A raw-TCP upstream that follows a script, counting requests and detected disconnects.
pub(crate) struct FakeUpstream {
    pub url: String,
    pub requests: Arc<AtomicUsize>,
    disconnects: Arc<AtomicUsize>,
}

pub(crate) async fn fake_upstream(script: Script) -> FakeUpstream {
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
        Script::Gated { gate, bytes } => {
            // One permit, one answer: the permit is used up, not handed back.
            if let Ok(permit) = gate.acquire().await {
                permit.forget();
            }
            let _ = sock.write_all(bytes).await;
            let _ = sock.shutdown().await;
        }
        Script::Stall { bytes } => {
            let _ = sock.write_all(bytes).await;
            let _ = sock.flush().await;
            // Hold the connection open, silent, until the other side closes it.
            let mut sink = [0u8; 1024];
            while matches!(sock.read(&mut sink).await, Ok(n) if n > 0) {}
            disconnects.fetch_add(1, Ordering::SeqCst);
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
        delay: Duration::from_millis(1500),
        bytes: b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 36\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}",
    })
    .await;
    let (client, guard) = gateway_for(&up.url).await;
    let in_flight = {
        let c = client.clone();
        tokio::spawn(async move { c.post_raw(ping(), &[]).await })
    };
    // Stop once the request is in flight: the upstream has it (and answers 1.5 s later).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while up.requests.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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

// ---- limits and timeouts: 503 beyond a cap, then service resumes ----------------------

/// Poll `cond` every 10 ms until it holds; fail after `what` has not happened in 30 s.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn assert_overloaded(reply: &crate::harness::Reply, why: &str) {
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    assert_eq!(reply.headers["retry-after"], "1");
    assert_eq!(reply.error()["code"], jsonrpc::INTERNAL_ERROR);
    assert_eq!(
        reply.error()["message"],
        format!("gateway overloaded: {why}; retry shortly")
    );
}

#[tokio::test]
async fn requests_beyond_max_concurrent_requests_get_503_then_service_resumes() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let up = fake_upstream(Script::Gated {
        gate: gate.clone(),
        bytes: b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 36\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}",
    })
    .await;
    let (client, _g) = gateway_for_with(&up.url, |c| {
        c.limits.max_concurrent_requests = 2;
        // No waiting room: beyond the slots a request is refused at once (the queue and its
        // fairness are tests/it/fairness.rs).
        c.limits.max_queued_per_caller = 0;
    })
    .await;
    // Two requests held by the upstream take both slots.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.post_raw(ping(), &[]).await })
        })
        .collect();
    until("both requests to reach the upstream", || {
        up.requests.load(Ordering::SeqCst) == 2
    })
    .await;
    let third = client.post_raw(ping(), &[]).await;
    assert_overloaded(&third, "too many requests in flight");
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        2,
        "the refused request went upstream"
    );
    assert_still_serving(&client).await;

    // The upstream answers: the held requests complete and the slots are free again.
    gate.add_permits(100);
    for h in held {
        assert_eq!(h.await.unwrap().response()["result"], json!({}));
    }
    for _ in 0..3 {
        let r = client.post_raw(ping(), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.response()["result"], json!({}));
    }
    assert_eq!(up.requests.load(Ordering::SeqCst), 5);
}

/// Two initialized sessions of the harness's caller, so the upstream would accept a GET
/// stream for each.
async fn two_sessions(h: &Harness) -> (McpClient, McpClient) {
    let mut c = h.client();
    c.initialize().await;
    let mut other = h.client();
    other.initialize().await;
    (c, other)
}

#[tokio::test]
async fn get_streams_beyond_max_sse_streams_get_503_until_one_closes() {
    let h = Harness::start_with(
        crate::harness::Options::default().tweak(|c| c.limits.max_sse_streams = 1),
    )
    .await;
    // Two sessions, so the upstream would accept a stream for each: only the gateway's cap
    // refuses the second.
    let (c, other) = two_sessions(&h).await;
    let first = c.open_stream().await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["content-type"], "text/event-stream");
    let second = other
        .send(
            Request::get(&other.url)
                .header("accept", "text/event-stream")
                .header("mcp-session-id", other.session.clone().unwrap())
                .header("mcp-protocol-version", crate::harness::SESSION_ERA)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_overloaded(&second, "too many open SSE streams");
    // POSTs are not streams: they still flow.
    let ping = other.request("ping", json!({})).await;
    assert_eq!(ping.status, StatusCode::OK, "{}", ping.text());
    let gets = || {
        h.sim
            .received()
            .iter()
            .filter(|r| r.http_method == "GET")
            .count()
    };
    assert_eq!(gets(), 1, "the refused stream reached the upstream");

    // The first client closes its stream: the slot frees and the other session's opens.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let again = other.open_stream().await;
        if again.status() == StatusCode::OK {
            break;
        }
        assert_eq!(again.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed stream's slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gets(), 2);
    h.stop().await;
}

#[tokio::test]
async fn open_get_streams_do_not_hold_request_slots() {
    // One request slot, no waiting room: were an idle GET stream to keep its slot, every
    // call of every caller would be refused for as long as the stream stays open.
    let h = Harness::start_with(crate::harness::Options::default().tweak(|c| {
        c.limits.max_concurrent_requests = 1;
        c.limits.max_queued_per_caller = 0;
        c.limits.max_queued_requests = 0;
    }))
    .await;
    let (c, other) = two_sessions(&h).await;
    let first = c.open_stream().await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = other.open_stream().await;
    assert_eq!(second.status(), StatusCode::OK);
    // Both streams open: calls still get the slot, one after another, from either session.
    for client in [&c, &other, &c] {
        let r = client.request("tools/list", json!({})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert!(r.response()["result"]["tools"].as_array().is_some());
    }
    // Neither stream has ended meanwhile.
    use http_body::Body as _;
    assert!(!first.body().is_end_stream() && !second.body().is_end_stream());
    drop((first, second));
    h.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let (client, _g) = gateway_for_with("http://127.0.0.1:9/mcp", |c| {
        c.limits.header_read_timeout = Duration::from_millis(300)
    })
    .await;
    let addr = client
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned();
    let mut sock = TcpStream::connect(&addr).await.unwrap();
    sock.write_all(b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: appl")
        .await
        .unwrap();
    // The gateway gives up on the headers after 300 ms (its default would be 10 s) and
    // closes the connection, answering 408 at most.
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), sock.read_to_end(&mut got)).await;
    assert!(
        read.is_ok(),
        "the connection was still open 8 s after a 300 ms header_read_timeout"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(
        got.is_empty() || text.starts_with("HTTP/1.1 408"),
        "unexpected answer to unfinished headers: {text}"
    );
    assert_still_serving(&client).await;
}

#[tokio::test]
async fn an_upstream_that_goes_silent_times_out_after_idle_timeout() {
    let idle = |c: &mut eks_mcp_gateway::config::Config| {
        c.upstream.idle_timeout = Duration::from_millis(300)
    };
    // A JSON body that stops half-way.
    let json = fake_upstream(Script::Stall {
        bytes: b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 36\r\n\r\n{\"jsonrpc\":\"2.0\",",
    })
    .await;
    let (client, _g) = gateway_for_with(&json.url, idle).await;
    let reply = client.post_raw(ping(), &[]).await;
    assert_eq!(reply.headers["x-mcp-gateway-error"], "upstream_timeout");
    assert_eq!(reply.error()["code"], jsonrpc::UPSTREAM_TIMEOUT);
    assert_eq!(reply.response()["id"], 1);
    until("the gateway to drop the silent upstream", || {
        json.disconnects.load(Ordering::SeqCst) == 1
    })
    .await;

    // An SSE stream that sends one event, then nothing.
    let event = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":1}}\n\n";
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
        event.len()
    );
    let sse = fake_upstream(Script::Stall {
        bytes: Box::leak(head.into_bytes().into_boxed_slice()),
    })
    .await;
    let (client, _g2) = gateway_for_with(&sse.url, idle).await;
    let reply = client.post_raw(ping(), &[]).await;
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    assert_eq!(reply.messages.len(), 2, "{}", reply.text());
    assert_eq!(reply.messages[0]["method"], "notifications/progress");
    assert_eq!(reply.error()["code"], jsonrpc::UPSTREAM_TIMEOUT);
    assert_eq!(reply.error()["data"]["kind"], "upstream_timeout");
    assert_eq!(reply.response()["id"], 1);
    until("the gateway to drop the silent stream", || {
        sse.disconnects.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_still_serving(&client).await;
}

#[tokio::test]
async fn a_quiet_get_stream_ends_cleanly_after_idle_timeout() {
    // The embedded upstream has nothing to say on a fresh session's GET stream.
    let h = Harness::start_with(
        crate::harness::Options::default()
            .tweak(|c| c.upstream.idle_timeout = Duration::from_millis(300)),
    )
    .await;
    let mut c = h.client();
    c.initialize().await;
    let stream = c.open_stream().await;
    assert_eq!(stream.status(), StatusCode::OK);
    // The stream ends by itself, without an error event, and the body ends cleanly.
    let body = tokio::time::timeout(Duration::from_secs(30), stream.into_body().collect())
        .await
        .expect("the quiet stream was never ended")
        .expect("the stream ended cleanly")
        .to_bytes();
    assert!(
        !String::from_utf8_lossy(&body).contains("\"error\""),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // Its audit record shows no upstream failure; the session goes on.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let get = loop {
        let records = h.audit_records(1).await;
        if let Some(get) = records.into_iter().find(|r| r["method"] == "stream/get") {
            break get;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no audit record for the GET stream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(get["upstream"]["error"].is_null(), "{get}");
    let r = c.request("ping", json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    h.stop().await;
}

#[tokio::test]
async fn upstream_messages_over_max_message_bytes_are_refused_not_relayed() {
    use eks_mcp_gateway::sim::{BULK_LOGGER_POD, ResponseMode};
    let logs = json!({"cluster_name": "dev", "namespace": "monitoring", "pod_name": BULK_LOGGER_POD,
                      "tail_lines": 2000, "limit_bytes": 1_000_000});
    for mode in [ResponseMode::Json, ResponseMode::Sse] {
        let mut opts =
            crate::harness::Options::default().tweak(|c| c.upstream.max_message_bytes = 16 * 1024);
        opts.sim.response_mode = mode;
        let h = Harness::start_with(opts).await;
        let c = h.client();
        // Small answers pass.
        let small = c.stateless("ping", json!({})).await;
        assert_eq!(small.status, StatusCode::OK, "{mode:?}: {}", small.text());
        assert!(small.result().is_object(), "{mode:?}: {}", small.text());
        // A ~150 KB log result is one message over the 16 KiB limit.
        let big = c.stateless_call("get_pod_logs", logs.clone()).await;
        let err = big.error();
        assert_eq!(
            err["code"],
            jsonrpc::UPSTREAM_BAD_RESPONSE,
            "{mode:?}: {err}"
        );
        assert_eq!(err["data"]["kind"], "upstream_bad_response", "{mode:?}");
        assert!(
            big.body.len() < 16 * 1024,
            "{mode:?}: {} bytes relayed",
            big.body.len()
        );
        assert_eq!(big.response()["id"], c.next_id() - 1, "{mode:?}");
        assert_eq!(
            h.sim.tool_calls().len(),
            1,
            "{mode:?}: the call was made; only its answer was refused"
        );
        h.stop().await;
    }
}

#[tokio::test]
async fn configured_origins_and_hosts_replace_the_loopback_defaults() {
    const HOST_REFUSED: &str = "Host header not allowed (security.allowed_hosts)";
    const ORIGIN_REFUSED: &str = "Origin not allowed (security.allowed_origins)";
    let h = Harness::start_with(crate::harness::Options::default().tweak(|c| {
        c.security.allowed_origins = vec!["https://console.example.com".into()];
        c.security.allowed_hosts = vec!["gateway.example.com".into()];
    }))
    .await;
    let c = h.client();
    let ping = serde_json::to_vec(&json!({"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":crate::harness::STATELESS}}})).unwrap();
    let send = |host: &'static str, origin: Option<&'static str>| {
        let (c, ping) = (c.clone(), ping.clone());
        async move {
            let mut headers = vec![
                ("mcp-protocol-version", crate::harness::STATELESS),
                ("mcp-method", "ping"),
                ("host", host),
            ];
            if let Some(o) = origin {
                headers.push(("origin", o));
            }
            c.post_raw(ping, &headers).await
        }
    };
    // Allowed: the configured host (with or without a port), the configured origin.
    for (host, origin) in [
        ("gateway.example.com", None),
        ("gateway.example.com:8443", None),
        ("GATEWAY.example.com", Some("https://console.example.com")),
    ] {
        let r = send(host, origin).await;
        assert_eq!(r.status, StatusCode::OK, "{host} {origin:?}: {}", r.text());
    }
    let allowed = h.sim.received().len();
    assert_eq!(allowed, 3);
    // Refused: a loopback Host is no longer implied, nor a loopback Origin; look-alikes fail.
    for (host, origin, why) in [
        ("127.0.0.1", None, HOST_REFUSED),
        ("localhost", None, HOST_REFUSED),
        ("gateway.example.com.evil.example", None, HOST_REFUSED),
        (
            "gateway.example.com",
            Some("http://localhost:3000"),
            ORIGIN_REFUSED,
        ),
        (
            "gateway.example.com",
            Some("https://console.example.com.evil.example"),
            ORIGIN_REFUSED,
        ),
        (
            "gateway.example.com",
            Some("http://console.example.com"),
            ORIGIN_REFUSED,
        ),
    ] {
        let r = send(host, origin).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{host} {origin:?}: {}",
            r.text()
        );
        assert_eq!(r.error()["message"], why, "{host} {origin:?}");
    }
    assert_eq!(
        h.sim.received().len(),
        allowed,
        "a refused request reached the upstream"
    );
    h.stop().await;
}
