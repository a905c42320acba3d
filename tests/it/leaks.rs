//! Issue 18 leak classes through the running gateway against the embedded upstream: a pod
//! whose logs, container args and a ConfigMap (Helm release data, XML configs, env lists as
//! YAML text, JWKs, Argo CD parameters, base64 PEM and docker config) carry secrets in the
//! shapes that used to slip through (`ledger-migrator` and `ledger-release` in
//! `src/sim/world.yaml` and `src/sim/cluster-objects.yaml`). No planted value may reach the
//! client, the audit trail or the gateway's logs (captured at TRACE); the identifiers next to
//! them (ARNs) must survive. The staging CloudFormation stack's parameters (as
//! `manage_eks_stacks describe` returns them) carry two more.
use serde_json::{Value, json};

use eks_mcp_gateway::sim::{STACK_DB_PASSWORD, STACK_GITHUB_TOKEN};

use crate::harness::{Harness, LogCapture};

const POD: &str = "ledger-migrator-7c9f8b6d5-j2k4m";

/// Planted in the pod's log lines (split PEM keys, flag then value, JSON fragments, curl,
/// mysql, BASIC_AUTH, token userinfo, URL-encoded, SAS, long key, {noop}, DB_PW, wrapped JWT).
const IN_LOGS: &[&str] = &[
    "MIIEowIBAAKCAQEAsPl1tL1n3sK3yLeakT3stAAAAbbbbCCCCddddEEEEffff0001",
    "q8Zt2vN5mK1pL9xR4wE7uY3iO6aS0dF2SplitPemLineTwoLeakTest00000002",
    "Spl1tFl4g-T0ken-7731",
    "bGVkZ2VyOkZyYWdtZW50LUF1dGgtOTk=",
    "Fr4gment-Cl1ent-S3cret",
    "Curl-Ledg3r-Pw",
    "MySQL-R00t-Pw",
    "B4sic-Auth-Ledger",
    "ghx7f3e9a1b2c4d6e8f0a1b3c5d7e9f1a3b5c7",
    "UrlEnc0ded-Pw-42",
    "Az5asSigLeakTest0123456789abcdEF",
    "L0ngKey-Cl1ent-S3cret",
    "N00p-Ledger-Pw",
    "Sh0rtName-Ledger-Pw",
    "MHcCAQEEIUnterminatedPemLeakTestAAAAbbbbCCCCddddEEEEffff00000003",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJsZWRnZXItbWlncmF",
    "0b3IiLCJleHAiOjE4OTM0NTYwMDB9.V3JhcHBlZEp3dFNpZ25hdHVyZUxlYWtUZX",
    "N0MDEyMzQ1Njc4OQ",
];

/// Planted in the pod's `command` / `args` arrays.
const IN_POD_SPEC: &[&str] = &[
    "Args-Api-T0ken-8812",
    "Args-MySQL-Pw-8813",
    "MIIEvQIBADANBgkqhkiG9w0ArgsSplitPemLeakTest00000004",
    "ArgsSplitPemSecondLineLeakTest00000005",
];

/// Planted in the ConfigMap `ledger-release` (the first three are base64 payloads: Helm
/// release gzip, PEM private key, pretty docker config).
const IN_CONFIGMAP: &[&str] = &[
    "H4sIAAAAAAACA22OsQ6DMAxEf8Xy3AwUsWTu0LFqpU5ZDDEoKjEoiWBA/HuT",
    "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1JSUV2UUlCQURBTkJna3Fo",
    "ewogICJhdXRocyI6IHsKICAgICJyZWdpc3RyeS5leGFtcGxlLmNvbSI6IHsK",
    "Yaml-Env-Ledger-Pw",
    "M4ven-Ledger-Pw",
    "NuG3t-Ledger-Pw",
    "Pr0perty-Ledger-Pw",
    "Argo-Helm-Ledger-Pw",
    "bnBtOk5wbXJjLUF1dGgtTGVkZ2Vy",
    "JwkOctLeakTestKey0123456789abcdEF",
];

fn assert_none_visible(what: &str, body: &str, planted: &[&str]) {
    for s in planted {
        assert!(
            !body.contains(s),
            "{what}: planted secret {s:?} reached the client:\n{body}"
        );
    }
}

/// Every audit record so far, serialised: none of the planted values may be in it.
async fn assert_audit_clean(h: &Harness, at_least: usize, planted: &[&str]) {
    let recs: Vec<Value> = h.audit_records(at_least).await;
    assert!(recs.len() >= at_least, "{} audit records", recs.len());
    let all = serde_json::to_string(&recs).unwrap();
    assert_none_visible("audit trail", &all, planted);
}

/// Capture every event (down to TRACE) the gateway logs while the guard lives.
fn capture_logs() -> (LogCapture, tracing::subscriber::DefaultGuard) {
    let logs = LogCapture::default();
    let guard = logs.install_at(tracing::Level::TRACE);
    (logs, guard)
}

/// The gateway logged while the test ran (the capture is the test thread's subscriber and the
/// runtime is single-threaded), and none of it holds a planted value.
fn assert_logs_clean(logs: &LogCapture, planted: &[&str]) {
    let text = logs.text();
    assert!(
        text.contains("eks_mcp_gateway"),
        "the capture saw the gateway's events: {text}"
    );
    assert_none_visible("gateway logs", &text, planted);
}

#[tokio::test]
async fn pod_logs_lose_split_embedded_and_encoded_secrets() {
    let (logs, _capture) = capture_logs();
    let h = Harness::start().await;
    let mut c = h.client();
    c.initialize().await;
    let r = c
        .call_tool(
            "get_pod_logs",
            json!({"cluster_name": "dev", "namespace": "payments", "pod_name": POD}),
        )
        .await;
    assert!(!r.is_tool_error(), "{}", r.text());
    let body = r.text();
    assert_none_visible("get_pod_logs", &body, IN_LOGS);
    for kept in [
        "ledger-migrator v1.4.0 starting",
        "secret:payments/ledger-db-password-AbCdEf",
        "acme.blob.core.windows.net/dumps/x.sql?sv=2022-11-02",
        "github.com/acme/ledger.git",
    ] {
        assert!(body.contains(kept), "{kept:?} should survive:\n{body}");
    }
    assert_audit_clean(&h, 2, IN_LOGS).await;
    h.stop().await;
    assert_logs_clean(&logs, IN_LOGS);
}

#[tokio::test]
async fn container_args_lose_flag_values_and_split_keys() {
    let (logs, _capture) = capture_logs();
    let h = Harness::start().await;
    let mut c = h.client();
    c.initialize().await;
    let r = c
        .call_tool(
            "read_k8s_resource",
            json!({"cluster_name": "dev", "kind": "Pod", "api_version": "v1", "namespace": "payments", "name": POD}),
        )
        .await;
    assert!(!r.is_tool_error(), "{}", r.text());
    let body = r.text();
    assert_none_visible("read_k8s_resource Pod", &body, IN_POD_SPEC);
    assert!(
        body.contains("--verbose") && body.contains("/bin/migrate"),
        "{body}"
    );
    assert_audit_clean(&h, 2, IN_POD_SPEC).await;
    h.stop().await;
    assert_logs_clean(&logs, IN_POD_SPEC);
}

#[tokio::test]
async fn configmap_formats_and_encodings_are_redacted() {
    let (logs, _capture) = capture_logs();
    let h = Harness::start().await;
    let mut c = h.client();
    c.initialize().await;
    let r = c
        .call_tool(
            "read_k8s_resource",
            json!({"cluster_name": "dev", "kind": "ConfigMap", "api_version": "v1", "namespace": "payments", "name": "ledger-release"}),
        )
        .await;
    assert!(!r.is_tool_error(), "{}", r.text());
    let body = r.text();
    assert_none_visible("read_k8s_resource ConfigMap", &body, IN_CONFIGMAP);
    assert!(body.contains("[REDACTED:encoded_payload]"), "{body}");
    for kept in [
        "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "secret:payments/ledger-db-password-AbCdEf",
        "ledger-hmac",
        "LOG_LEVEL",
    ] {
        assert!(body.contains(kept), "{kept:?} should survive:\n{body}");
    }
    // Listing ConfigMaps carries the same data.
    let r = c
        .call_tool(
            "list_k8s_resources",
            json!({"cluster_name": "dev", "kind": "ConfigMap", "api_version": "v1", "namespace": "payments"}),
        )
        .await;
    assert_none_visible("list_k8s_resources ConfigMap", &r.text(), IN_CONFIGMAP);
    assert_audit_clean(&h, 3, IN_CONFIGMAP).await;
    h.stop().await;
    assert_logs_clean(&logs, IN_CONFIGMAP);
}

#[tokio::test]
async fn cloudformation_parameters_lose_their_values_but_not_their_keys() {
    let (logs, _capture) = capture_logs();
    let h = Harness::start().await;
    let mut c = h.client();
    c.initialize().await;
    let r = c
        .call_tool(
            "manage_eks_stacks",
            json!({"operation": "describe", "cluster_name": "staging"}),
        )
        .await;
    assert!(!r.is_tool_error(), "{}", r.text());
    let body = r.text();
    let planted = [STACK_DB_PASSWORD, STACK_GITHUB_TOKEN];
    assert_none_visible("manage_eks_stacks describe", &body, &planted);
    for kept in [
        "DbMasterPassword",
        "GitHubToken",
        "ClusterName",
        "secret:staging/db-master-password-Xy12Ab",
        "eks-staging-stack",
    ] {
        assert!(body.contains(kept), "{kept:?} should survive:\n{body}");
    }
    assert_audit_clean(&h, 2, &planted).await;
    h.stop().await;
    assert_logs_clean(&logs, &planted);
}
