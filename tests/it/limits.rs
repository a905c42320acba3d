//! A gateway a team shares: per-caller limits from the policy data, through the running
//! gateway, with callers told apart by API key.
use eks_mcp_gateway::jsonrpc;
use eks_mcp_gateway::metrics;
use serde_json::{Value, json};

use crate::harness::{Harness, McpClient, Options, api_keys, policy_dir_with};

fn write_args() -> Value {
    json!({"operation": "patch", "cluster_name": "dev", "kind": "Deployment", "api_version": "apps/v1",
           "name": "payments-api", "namespace": "payments", "body": {"spec": {"replicas": 3}}})
}

fn read_args() -> Value {
    json!({"cluster_name": "dev", "kind": "Deployment", "api_version": "apps/v1", "namespace": "payments"})
}

fn as_caller(h: &Harness, key: &str) -> McpClient {
    let mut c = h.client();
    c.headers.push(("x-api-key".into(), key.into()));
    c
}

/// Writes limited hard (one, then one per 1000 s), reads generously; a gateway in front of
/// the embedded upstream where `alice` and `bob` (both platform-admins) call with API keys.
async fn team_gateway(edit: impl FnOnce(&mut Value)) -> (Harness, tempfile::TempDir) {
    let dir = policy_dir_with(|data| {
        data["gateway"]["limits"] = json!({
            "defaults": {
                "write": {"rate": 0.001, "burst": 1, "concurrency": 4},
                "read": {"rate": 1000, "burst": 1000},
            },
            "byte_tools": ["get_pod_logs"],
        });
        edit(data);
    });
    let keys = tempfile::tempdir().unwrap();
    let auth = api_keys(
        keys.path(),
        &[
            ("alice-key", "alice", &["platform-admins"]),
            ("bob-key", "bob", &["platform-admins"]),
            ("carol-key", "carol", &["readers"]),
        ],
    );
    let h = Harness::start_with(
        Options {
            policy_dir: dir.path().to_path_buf(),
            ..Options::default()
        }
        .tweak(move |cfg| cfg.auth = auth),
    )
    .await;
    // The policy directory must outlive the gateway only until it loaded; the key file is
    // read at start. Keep both anyway for hot reloads.
    std::mem::forget(keys);
    (h, dir)
}

fn limited_count(group: &str, class: &str, limit: &str) -> u64 {
    metrics::global()
        .caller_limited_total
        .with_label_values(&[group, class, limit])
        .get()
}

#[tokio::test]
async fn a_caller_over_its_write_rate_gets_the_gateways_error_and_another_caller_does_not() {
    let (h, _dir) = team_gateway(|_| {}).await;
    let alice = as_caller(&h, "alice-key");
    let bob = as_caller(&h, "bob-key");
    let before = limited_count("platform-admins", "write", "rate");

    let r = alice
        .stateless_call("manage_k8s_resource", write_args())
        .await;
    assert!(
        !r.is_tool_error(),
        "the first write is within the burst: {}",
        r.text()
    );
    let r = alice
        .stateless_call("manage_k8s_resource", write_args())
        .await;
    let err = r.error();
    assert_eq!(err["code"], jsonrpc::RATE_LIMITED, "{}", r.text());
    assert_ne!(err["code"], jsonrpc::UPSTREAM_RATE_LIMITED);
    assert_eq!(err["data"]["source"], "gateway");
    assert_eq!(err["data"]["kind"], "rate_limited");
    assert_eq!(err["data"]["limit"], "rate");
    assert_eq!(err["data"]["class"], "write");
    let retry = err["data"]["retry_after"].as_f64().unwrap();
    assert!(retry > 900.0, "one write per 1000 s: retry after {retry}");
    assert_eq!(r.headers["retry-after"], format!("{}", retry.ceil() as u64));

    // alice's reads are another class; bob has his own bucket.
    let r = alice
        .stateless_call("list_k8s_resources", read_args())
        .await;
    assert!(!r.is_tool_error(), "{}", r.text());
    let r = bob
        .stateless_call("manage_k8s_resource", write_args())
        .await;
    assert!(
        !r.is_tool_error(),
        "bob is not limited by alice: {}",
        r.text()
    );

    let writes = h
        .sim
        .tool_calls()
        .iter()
        .filter(|(t, _)| t == "manage_k8s_resource")
        .count();
    assert_eq!(writes, 2, "the limited write never reached the upstream");
    assert!(limited_count("platform-admins", "write", "rate") > before);
    let records = h.audit_records(4).await;
    let limited: Vec<&Value> = records
        .iter()
        .filter(|r| r["upstream"]["error"] == "rate_limited")
        .collect();
    assert_eq!(
        limited.len(),
        1,
        "one audit record for the limited call: {records:?}"
    );
    assert!(limited[0].to_string().contains("alice"), "{}", limited[0]);
    h.stop().await;
}

#[tokio::test]
async fn group_and_principal_entries_replace_the_defaults() {
    let (h, _dir) = team_gateway(|data| {
        data["gateway"]["limits"]["groups"] =
            json!({"readers": {"read": {"rate": 0.001, "burst": 2}}});
        data["gateway"]["limits"]["principals"] =
            json!({"bob": {"write": {"rate": 1000, "burst": 1000}}});
    })
    .await;
    let carol = as_caller(&h, "carol-key");
    let bob = as_caller(&h, "bob-key");
    let before = limited_count("readers", "read", "rate");
    for _ in 0..2 {
        let r = carol
            .stateless_call("list_k8s_resources", read_args())
            .await;
        assert!(!r.is_tool_error(), "{}", r.text());
    }
    let r = carol
        .stateless_call("list_k8s_resources", read_args())
        .await;
    assert_eq!(r.error()["code"], jsonrpc::RATE_LIMITED, "{}", r.text());
    assert_eq!(r.error()["data"]["class"], "read");
    assert!(limited_count("readers", "read", "rate") > before);
    for _ in 0..3 {
        let r = bob
            .stateless_call("manage_k8s_resource", write_args())
            .await;
        assert!(!r.is_tool_error(), "bob's own entry: {}", r.text());
    }
    h.stop().await;
}

#[tokio::test]
async fn log_reads_are_limited_by_result_bytes() {
    let (h, _dir) = team_gateway(|data| {
        data["gateway"]["limits"]["defaults"]["bytes"] = json!({"rate": 1, "burst": 1});
    })
    .await;
    let alice = as_caller(&h, "alice-key");
    let logs = json!({"cluster_name": "dev", "namespace": "payments", "pod_name": eks_mcp_gateway::sim::CRASHLOOP_POD});
    let r = alice.stateless_call("get_pod_logs", logs.clone()).await;
    assert!(
        r.messages.iter().all(|m| m.get("error").is_none()),
        "{}",
        r.text()
    );
    assert!(r.body.len() > 10, "a result with some bytes: {}", r.text());
    let r = alice.stateless_call("get_pod_logs", logs).await;
    assert_eq!(r.error()["code"], jsonrpc::RATE_LIMITED, "{}", r.text());
    assert_eq!(r.error()["data"]["limit"], "bytes");
    // Other tools are not charged.
    let r = alice
        .stateless_call("list_k8s_resources", read_args())
        .await;
    assert!(!r.is_tool_error(), "{}", r.text());
    h.stop().await;
}

#[tokio::test]
async fn distinct_callers_do_not_grow_the_caller_table_past_its_bound() {
    let dir = policy_dir_with(|data| {
        data["gateway"]["limits"] = json!({"defaults": {"read": {"rate": 100, "burst": 100}}});
    });
    let keys = tempfile::tempdir().unwrap();
    let names: Vec<(String, String)> = (0..200)
        .map(|i| (format!("key-{i}"), format!("agent-{i}")))
        .collect();
    let entries: Vec<(&str, &str, &[&str])> = names
        .iter()
        .map(|(k, p)| (k.as_str(), p.as_str(), &["platform-admins"][..]))
        .collect();
    let auth = api_keys(keys.path(), &entries);
    let h = Harness::start_with(
        Options {
            policy_dir: dir.path().to_path_buf(),
            ..Options::default()
        }
        .tweak(move |cfg| {
            cfg.auth = auth;
            cfg.limits.max_callers = 16;
        }),
    )
    .await;
    let mut most = 0;
    for (key, _) in &names {
        let r = as_caller(&h, key)
            .stateless_call("list_k8s_resources", read_args())
            .await;
        assert!(!r.is_tool_error(), "{}", r.text());
        most = most.max(h.gateway.callers.len());
    }
    assert!(most <= 16, "the table held {most} callers");
    assert_eq!(h.gateway.callers.bound(), 16);
    assert!(!h.gateway.callers.is_empty());
    drop(keys);
    h.stop().await;
}
