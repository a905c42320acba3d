//! Upstream protection through the running gateway: an upstream 429 holds every caller's
//! calls, the circuit breaker fails fast and probes the upstream back, and only catalogue
//! reads are retried (a write reaches the upstream once). The embedded upstream answers with
//! the failures its fault switch names.
use std::time::Duration;

use eks_mcp_gateway::jsonrpc;
use eks_mcp_gateway::sim::Fault;
use serde_json::{Value, json};

use crate::harness::{Harness, McpClient, Options, Reply, api_keys};

fn read_args() -> Value {
    json!({"cluster_name": "dev", "kind": "Deployment", "api_version": "apps/v1", "namespace": "payments"})
}

fn write_args() -> Value {
    json!({"operation": "patch", "cluster_name": "dev", "kind": "Deployment", "api_version": "apps/v1",
           "name": "payments-api", "namespace": "payments", "body": {"spec": {"replicas": 3}}})
}

async fn gateway(
    tweak: impl FnOnce(&mut eks_mcp_gateway::config::Config) + Send + 'static,
) -> (Harness, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let auth = api_keys(
        keys.path(),
        &[
            ("alice-key", "alice", &["platform-admins"]),
            ("bob-key", "bob", &["platform-admins"]),
        ],
    );
    let h = Harness::start_with(Options::default().tweak(move |cfg| {
        cfg.auth = auth;
        cfg.upstream.retry_backoff = Duration::from_millis(5);
        tweak(cfg);
    }))
    .await;
    (h, keys)
}

fn caller(h: &Harness, key: &str) -> McpClient {
    let mut c = h.client();
    c.headers.push(("x-api-key".into(), key.into()));
    c
}

fn calls_of(h: &Harness, tool: &str) -> usize {
    h.sim.tool_calls().iter().filter(|(t, _)| t == tool).count()
}

/// Calls of `method` the upstream received (tools/call counted by tool elsewhere).
fn received(h: &Harness, method: &str) -> usize {
    h.sim
        .received()
        .iter()
        .filter(|r| r.rpc_method.as_deref() == Some(method))
        .count()
}

fn ok(r: &Reply) -> bool {
    r.messages.iter().any(|m| m.get("result").is_some())
}

#[tokio::test]
async fn an_upstream_429_holds_every_callers_calls_until_its_retry_after() {
    let (h, _keys) = gateway(|_| {}).await;
    let (alice, bob) = (caller(&h, "alice-key"), caller(&h, "bob-key"));
    h.sim.set_fault(Some(Fault {
        status: 429,
        retry_after: Some(2),
        times: Some(1),
    }));
    let r = alice
        .stateless_call("list_k8s_resources", read_args())
        .await;
    let err = r.error();
    assert_eq!(err["code"], jsonrpc::UPSTREAM_RATE_LIMITED, "{}", r.text());
    assert_eq!(err["data"]["upstream_status"], 429);
    assert_eq!(err["data"]["retry_after"], "2");
    assert_eq!(calls_of(&h, "list_k8s_resources"), 1);

    // bob finds out from the gateway, without spending the account's quota.
    let r = bob.stateless_call("list_k8s_resources", read_args()).await;
    let err = r.error();
    assert_eq!(err["code"], jsonrpc::UPSTREAM_RATE_LIMITED, "{}", r.text());
    assert_ne!(
        err["code"],
        jsonrpc::RATE_LIMITED,
        "not the caller's own limit"
    );
    assert_eq!(err["data"]["held_by_gateway"], true);
    assert!(err["data"]["retry_after"] == "1" || err["data"]["retry_after"] == "2");
    assert_eq!(calls_of(&h, "list_k8s_resources"), 1, "held, never sent");

    // Once the Retry-After has passed, calls flow again; none was sent before.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = bob.stateless_call("list_k8s_resources", read_args()).await;
        if ok(&r) {
            break;
        }
        assert_eq!(r.error()["data"]["held_by_gateway"], true, "{}", r.text());
        assert_eq!(calls_of(&h, "list_k8s_resources"), 1);
        assert!(
            tokio::time::Instant::now() < deadline,
            "still held after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(calls_of(&h, "list_k8s_resources"), 2);
    h.stop().await;
}

#[tokio::test]
async fn the_breaker_opens_fails_fast_probes_and_closes_after_recovery() {
    let (h, _keys) = gateway(|cfg| {
        cfg.upstream.breaker_failures = 3;
        cfg.upstream.breaker_open_for = Duration::from_millis(300);
    })
    .await;
    let c = caller(&h, "alice-key");
    let list = || c.stateless("tools/list", json!({}));
    h.sim.set_fault(Some(Fault {
        status: 503,
        retry_after: None,
        times: None,
    }));
    for _ in 0..3 {
        let r = list().await;
        assert_eq!(r.error()["code"], jsonrpc::UPSTREAM_ERROR, "{}", r.text());
        assert_eq!(r.error()["data"]["upstream_status"], 503);
    }
    assert_eq!(received(&h, "tools/list"), 3);
    let r = list().await;
    let err = r.error();
    assert_eq!(err["code"], jsonrpc::UPSTREAM_UNAVAILABLE, "{}", r.text());
    assert_eq!(err["data"]["kind"], "upstream_circuit_open");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("3 times in a row"),
        "{err}"
    );
    assert_eq!(received(&h, "tools/list"), 3, "failed fast, not sent");

    // After open_for one probe goes through; it fails, so the breaker opens again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while received(&h, "tools/list") == 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no probe within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = list().await;
    }
    assert_eq!(received(&h, "tools/list"), 4, "one probe");
    let r = list().await;
    assert_eq!(
        r.error()["data"]["kind"],
        "upstream_circuit_open",
        "{}",
        r.text()
    );
    assert_eq!(received(&h, "tools/list"), 4);

    // The upstream recovers: the next probe succeeds and closes the breaker.
    h.sim.set_fault(None);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not closed within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        if ok(&list().await) {
            break;
        }
    }
    let before = received(&h, "tools/list");
    for _ in 0..3 {
        let r = list().await;
        assert!(ok(&r), "closed: {}", r.text());
    }
    assert_eq!(received(&h, "tools/list"), before + 3);
    h.stop().await;
}

#[tokio::test]
async fn reads_are_retried_and_a_write_reaches_the_upstream_once() {
    let (h, _keys) = gateway(|_| {}).await;
    let c = caller(&h, "alice-key");
    h.sim.set_fault(Some(Fault {
        status: 503,
        retry_after: None,
        times: Some(2),
    }));
    let r = c.stateless_call("list_k8s_resources", read_args()).await;
    assert!(
        ok(&r) && !r.is_tool_error(),
        "retried to success: {}",
        r.text()
    );
    assert_eq!(
        calls_of(&h, "list_k8s_resources"),
        3,
        "two 503s, then the answer"
    );

    h.sim.set_fault(Some(Fault {
        status: 503,
        retry_after: None,
        times: Some(1),
    }));
    let r = c.stateless_call("manage_k8s_resource", write_args()).await;
    assert_eq!(r.error()["code"], jsonrpc::UPSTREAM_ERROR, "{}", r.text());
    assert_eq!(
        calls_of(&h, "manage_k8s_resource"),
        1,
        "the write is sent once"
    );
    // The fault is spent: nothing would have stopped a retry from succeeding.
    let r = c.stateless_call("list_k8s_resources", read_args()).await;
    assert!(ok(&r), "{}", r.text());
    assert_eq!(calls_of(&h, "manage_k8s_resource"), 1);
    h.stop().await;
}
