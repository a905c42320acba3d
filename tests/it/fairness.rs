//! Fairness at the global concurrency limit: a caller flooding the gateway with slow calls
//! cannot starve another caller's single call. The upstream holds every call until the test
//! lets one answer, so the test counts slots handed out, never wall-clock time.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::faults::{Script, fake_upstream};
use crate::harness::{Harness, McpClient, api_keys};

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 36\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}";

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn ping() -> Vec<u8> {
    serde_json::to_vec(&json!({"jsonrpc":"2.0","id":1,"method":"ping"})).unwrap()
}

/// How many answers the upstream must give before the polite caller's one call completes,
/// with `flood` calls of another caller queued ahead of it (two slots in the gateway).
async fn answers_until_polite_completes(flood: usize) -> (usize, usize) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let up = fake_upstream(Script::Gated {
        gate: gate.clone(),
        bytes: ANSWER,
    })
    .await;
    let keys = tempfile::tempdir().unwrap();
    let auth = api_keys(
        keys.path(),
        &[
            ("flood-key", "flooding-agent", &["platform-admins"]),
            ("polite-key", "polite-agent", &["platform-admins"]),
        ],
    );
    let (gw, addr, guard) = Harness::in_front_of_url(
        &up.url,
        Some(Box::new(move |c: &mut eks_mcp_gateway::config::Config| {
            c.auth = auth;
            c.limits.max_concurrent_requests = 2;
            c.limits.max_queued_per_caller = 64;
        })),
    )
    .await;
    let client = |key: &str| {
        let mut c = McpClient::new(&format!("http://{addr}/mcp"));
        c.headers.push(("x-api-key".into(), key.into()));
        c
    };
    let flood_done = Arc::new(AtomicUsize::new(0));
    let mut flood_calls = Vec::new();
    for _ in 0..flood {
        let (c, done) = (client("flood-key"), flood_done.clone());
        flood_calls.push(tokio::spawn(async move {
            let r = c.post_raw(ping(), &[]).await;
            done.fetch_add(1, Ordering::SeqCst);
            r
        }));
    }
    let in_gateway = flood.min(2);
    until("the flood to fill the slots and the queue", || {
        up.requests.load(Ordering::SeqCst) == in_gateway
            && gw.admission.queued() == flood - in_gateway
    })
    .await;
    let polite_done = Arc::new(AtomicUsize::new(0));
    let polite = {
        let (c, done) = (client("polite-key"), polite_done.clone());
        tokio::spawn(async move {
            let r = c.post_raw(ping(), &[]).await;
            done.fetch_add(1, Ordering::SeqCst);
            r
        })
    };
    if flood >= 2 {
        until("the polite call to wait", || {
            gw.admission.queued() == flood - 1
        })
        .await;
    } else {
        until("the polite call to reach the upstream", || {
            up.requests.load(Ordering::SeqCst) == flood + 1
        })
        .await;
    }
    // Let the upstream answer one call at a time until the polite call is done.
    let mut answers = 0;
    while polite_done.load(Ordering::SeqCst) == 0 {
        let before = flood_done.load(Ordering::SeqCst) + polite_done.load(Ordering::SeqCst);
        gate.add_permits(1);
        answers += 1;
        until("the answer to reach its caller", || {
            flood_done.load(Ordering::SeqCst) + polite_done.load(Ordering::SeqCst) > before
        })
        .await;
    }
    let flood_finished_first = flood_done.load(Ordering::SeqCst);
    let r = polite.await.unwrap();
    assert_eq!(r.response()["result"], json!({}), "{}", r.text());
    // The rest of the flood is served too, none refused.
    gate.add_permits(1000);
    for call in flood_calls {
        let r = call.await.unwrap();
        assert_eq!(r.response()["result"], json!({}), "{}", r.text());
    }
    guard.stop().await;
    drop(keys);
    (answers, flood_finished_first)
}

#[tokio::test]
async fn a_flooding_caller_cannot_starve_another_callers_call() {
    let (alone, _) = answers_until_polite_completes(0).await;
    assert_eq!(alone, 1, "without a flood the polite call needs one answer");
    let flood = 20;
    let (with_flood, flood_first) = answers_until_polite_completes(flood).await;
    // Served in turn: the polite call gets the second freed slot, so it completes after the
    // two calls already at the upstream, the one admitted before its turn, and itself.
    assert!(
        with_flood <= 4,
        "the polite call needed {with_flood} answers behind a flood of {flood}"
    );
    assert!(
        flood_first < flood - 10,
        "most of the flood ({}) was still waiting when the polite call completed",
        flood - flood_first
    );
}
