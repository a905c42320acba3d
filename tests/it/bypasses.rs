//! The guardrail bypasses of issue 17 through the running gateway against the embedded
//! upstream: names and namespaces that traverse the request path, YAML that means something
//! else to the upstream's reader, `<Kind>List` bodies and kinds the catalogue cannot place.
//!
//! Each example is shown twice: sent straight to the embedded upstream (which builds request
//! paths, reads YAML and posts list items the way the kubernetes Python client does), it does
//! the damage; sent through the gateway as a caller of `payments-dev`, it is denied and the
//! upstream never receives it. The seed files under `tests/fixtures/adversarial/` are run the
//! same way, so every adversarial input the fuzz targets start from is also a denial test.
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::harness::{Harness, McpClient, Options, repo_root};

/// A gateway for `alice` (group `payments-dev`: reads and writes `payments`, `payments-*` on
/// dev and staging) in front of an unsigned embedded upstream, so tests can also call it
/// directly.
async fn as_payments_dev() -> Harness {
    Harness::start_with(Options {
        signing: false,
        ..Options::default().principal("alice", &["payments-dev"])
    })
    .await
}

/// An initialized session straight to the embedded upstream, bypassing the gateway.
async fn direct(h: &Harness) -> McpClient {
    let mut c = McpClient::new(&h.sim.url());
    c.initialize().await;
    c
}

fn adversarial(kind: &str) -> Vec<(String, String)> {
    let dir: PathBuf = repo_root().join("tests/fixtures/adversarial").join(kind);
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
}

#[track_caller]
fn assert_unparseable(reply: &crate::harness::Reply, what: &str) {
    assert!(
        reply.is_tool_error(),
        "{what} was not denied: {}",
        reply.text()
    );
    assert!(
        reply.tool_text().contains("could not establish what this"),
        "{what} was denied for another reason: {}",
        reply.tool_text()
    );
}

#[tokio::test]
async fn path_traversal_in_names_and_namespaces_never_reaches_the_upstream() {
    let h = as_payments_dev().await;
    let mut c = h.client();
    c.initialize().await;
    let kube_system_configmaps = json!({"cluster_name": "dev", "kind": "ConfigMap",
        "api_version": "v1", "namespace": "payments-x/../kube-system"});
    let every_secret = json!({"cluster_name": "dev", "kind": "Secret", "api_version": "v1",
        "namespace": "payments-x/../.."});
    let delete_namespace = json!({"operation": "delete", "cluster_name": "dev",
        "kind": "ConfigMap", "api_version": "v1", "namespace": "payments",
        "name": "../../../namespaces/kube-system"});

    let r = c
        .call_tool("list_k8s_resources", kube_system_configmaps.clone())
        .await;
    assert_unparseable(&r, "a listing in payments-x/../kube-system");
    assert!(
        r.tool_text().contains("payments-x/../kube-system"),
        "{}",
        r.tool_text()
    );
    let r = c
        .call_tool("list_k8s_resources", every_secret.clone())
        .await;
    assert_unparseable(&r, "a Secret listing in payments-x/../..");
    let r = c
        .call_tool("manage_k8s_resource", delete_namespace.clone())
        .await;
    assert_unparseable(
        &r,
        "a ConfigMap delete named ../../../namespaces/kube-system",
    );
    assert!(
        h.sim.tool_calls().is_empty(),
        "the upstream received {:?}",
        h.sim.tool_calls()
    );
    // The audit record says why.
    let records = h.audit_records(5).await;
    let denied: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["decision"]["rules"]
                .to_string()
                .contains("facts.unparseable")
        })
        .collect();
    assert_eq!(denied.len(), 3, "{records:#?}");

    // The same arguments straight to the upstream read kube-system, list every Secret of the
    // cluster and delete a namespace: what the gateway refused was not a harmless typo.
    let up = direct(&h).await;
    let r = up
        .call_tool("list_k8s_resources", kube_system_configmaps)
        .await;
    assert!(r.tool_text().contains("aws-auth"), "{}", r.tool_text());
    let r = up.call_tool("list_k8s_resources", every_secret).await;
    for name in ["payments-db-credentials", "stripe-api-key", "registry-pull"] {
        assert!(r.tool_text().contains(name), "{name}: {}", r.tool_text());
    }
    assert!(
        h.sim
            .with_world(|w| w.object("dev", "v1", "Namespace", None, "kube-system"))
            .is_some()
    );
    let r = up.call_tool("manage_k8s_resource", delete_namespace).await;
    assert!(!r.is_tool_error(), "{}", r.text());
    assert!(
        h.sim
            .with_world(|w| w.object("dev", "v1", "Namespace", None, "kube-system"))
            .is_none(),
        "the upstream deleted the namespace the name traversed to"
    );
    h.stop().await;
}

#[tokio::test]
async fn every_adversarial_arguments_seed_is_denied_before_the_upstream() {
    let h = as_payments_dev().await;
    let mut c = h.client();
    c.initialize().await;
    for (file, text) in adversarial("arguments") {
        let tool = file.split("__").next().unwrap();
        let args: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let r = c.call_tool(tool, args).await;
        assert!(r.is_tool_error(), "{file} was not denied: {}", r.text());
    }
    assert!(
        h.sim.tool_calls().is_empty(),
        "the upstream received {:?}",
        h.sim.tool_calls()
    );
    // A legitimate call of the same caller goes through.
    let ok = c
        .call_tool(
            "list_k8s_resources",
            json!({"cluster_name": "dev", "kind": "ConfigMap", "api_version": "v1",
                   "namespace": "payments"}),
        )
        .await;
    assert!(!ok.is_tool_error(), "{}", ok.text());
    assert_eq!(h.sim.tool_calls().len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn every_adversarial_manifest_seed_is_denied_before_the_upstream() {
    let h = as_payments_dev().await;
    let mut c = h.client();
    c.initialize().await;
    for (file, manifest) in adversarial("manifests") {
        let r = c
            .call_tool(
                "apply_yaml",
                json!({"cluster_name": "dev", "namespace": "payments", "yaml_content": manifest}),
            )
            .await;
        assert!(r.is_tool_error(), "{file} was not denied: {}", r.text());
    }
    assert!(
        h.sim.tool_calls().is_empty(),
        "the upstream received {:?}",
        h.sim.tool_calls()
    );
    let ok = c
        .call_tool(
            "apply_yaml",
            json!({"cluster_name": "dev", "namespace": "payments",
                   "yaml_content": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fine}\ndata: {a: b}\n"}),
        )
        .await;
    assert!(!ok.is_tool_error(), "{}", ok.text());
    assert!(
        h.sim
            .with_world(|w| w.object("dev", "v1", "ConfigMap", Some("payments"), "fine"))
            .is_some()
    );
    h.stop().await;
}

#[tokio::test]
async fn a_manifest_name_that_traverses_patches_what_the_path_reaches_upstream() {
    let h = as_payments_dev().await;
    let manifest = std::fs::read_to_string(
        repo_root().join("tests/fixtures/adversarial/manifests/name-dotdot-patches-namespace.yaml"),
    )
    .unwrap();
    let mut c = h.client();
    c.initialize().await;
    let args = json!({"cluster_name": "dev", "namespace": "payments", "yaml_content": manifest});
    let r = c.call_tool("apply_yaml", args.clone()).await;
    assert_unparseable(&r, "a manifest named ../../../namespaces/kube-system");
    assert!(h.sim.tool_calls().is_empty());
    // Upstream, the existence check reaches the kube-system Namespace and patches it.
    let up = direct(&h).await;
    let r = up.call_tool("apply_yaml", args).await;
    assert!(r.tool_text().contains("1 updated"), "{}", r.text());
    let ns = h
        .sim
        .with_world(|w| w.object("dev", "v1", "Namespace", None, "kube-system"))
        .unwrap();
    assert_eq!(ns["data"], json!({"a": "b"}), "{ns}");
    h.stop().await;
}
