//! The front's layer order (src/front/stack.rs) as a client sees it: a bad Host is refused
//! with 403 even when the gateway is full, a full gateway answers 503 (with Retry-After)
//! before it checks credentials, and when it is not full a caller without credentials gets
//! 401. The operational endpoints and 404 sit outside the limits.
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::StatusCode;
use serde_json::json;

use crate::faults::{Script, fake_upstream};
use crate::harness::{Harness, McpClient, Reply, api_keys};

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 36\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}";

fn ping() -> Vec<u8> {
    serde_json::to_vec(&json!({"jsonrpc":"2.0","id":1,"method":"ping"})).unwrap()
}

fn assert_full(reply: &Reply) {
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    assert_eq!(reply.headers["retry-after"], "1");
    assert_eq!(
        reply.error()["message"],
        "gateway overloaded: too many requests in flight; retry shortly"
    );
}

fn refused(limit: &str) -> u64 {
    eks_mcp_gateway::metrics::global()
        .requests_refused_total
        .with_label_values(&[limit])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_refuses_in_layer_order() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let up = fake_upstream(Script::Gated {
        gate: gate.clone(),
        bytes: ANSWER,
    })
    .await;
    let keys = tempfile::tempdir().unwrap();
    let auth = api_keys(keys.path(), &[("alice-key", "alice", &["platform-admins"])]);
    // One request in the front at a time: one slot, no waiting room.
    let (_gw, addr, _guard) = Harness::in_front_of_url(
        &up.url,
        Some(Box::new(move |c: &mut eks_mcp_gateway::config::Config| {
            c.auth = auth;
            c.limits.max_concurrent_requests = 1;
            c.limits.max_queued_requests = 0;
        })),
    )
    .await;
    let url = format!("http://{addr}/mcp");
    let anonymous = McpClient::new(&url);
    let mut alice = McpClient::new(&url);
    alice.headers.push(("x-api-key".into(), "alice-key".into()));
    let evil_host = [("host", "evil.example")];

    // Not full: no credentials is 401, a bad Host 403 (before authentication).
    let r = anonymous.post_raw(ping(), &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    let r = anonymous.post_raw(ping(), &evil_host).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());

    // Full: alice's first call is held by the upstream.
    let held = {
        let alice = alice.clone();
        tokio::spawn(async move { alice.post_raw(ping(), &[]).await })
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while up.requests.load(Ordering::SeqCst) < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call never reached the upstream"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let shed_before = refused("requests");
    // A bad Host is still 403: the Host check comes before the limits.
    let r = alice.post_raw(ping(), &evil_host).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    // Another call of alice's, and one without credentials: 503 before authentication.
    assert_full(&alice.post_raw(ping(), &[]).await);
    assert_full(&anonymous.post_raw(ping(), &[]).await);
    assert!(refused("requests") >= shed_before + 2);
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        1,
        "a refused call went upstream"
    );
    // Outside the limits: the operational endpoints and 404.
    let ops = McpClient::new(&format!("http://{addr}/healthz"));
    let r = ops
        .send(
            http::Request::get(&ops.url)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let elsewhere = McpClient::new(&format!("http://{addr}/elsewhere"));
    assert_eq!(
        elsewhere.post_raw(ping(), &[]).await.status,
        StatusCode::NOT_FOUND
    );

    // The upstream answers: the slot frees and service resumes, in the same order.
    gate.add_permits(100);
    let r = held.await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = alice.post_raw(ping(), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.response()["result"], json!({}));
    let r = anonymous.post_raw(ping(), &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert_eq!(up.requests.load(Ordering::SeqCst), 2);
}
