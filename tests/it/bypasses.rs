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

/// PyYAML's reading of `manifest` as the upstream does it (`yaml.safe_load_all`, empty
/// documents dropped), through the pinned interop venv; `Err` with PyYAML's message when it
/// refuses the text.
fn pyyaml_reading(manifest: &str) -> Result<Vec<Value>, String> {
    use std::io::Write;
    let python = repo_root().join(".cache/venv-mcp/bin/python");
    assert!(
        python.exists(),
        "{} missing; run scripts/setup-interop (installs the pinned interop tools into .cache)",
        python.display()
    );
    let script = "import json, sys, yaml\n\
        try:\n    docs = [d for d in yaml.safe_load_all(sys.stdin.read()) if d]\n    print(json.dumps({'docs': docs}, default=str))\n\
        except Exception as e:\n    print(json.dumps({'error': str(e)}))\n";
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    match v.get("docs") {
        Some(Value::Array(docs)) => Ok(docs.clone()),
        _ => Err(v["error"].as_str().unwrap_or_default().to_string()),
    }
}

/// Documents the upstream applies: it drops empty ones (`if doc`).
fn applied(docs: Vec<Value>) -> Vec<Value> {
    docs.into_iter()
        .filter(|d| match d {
            Value::Null => false,
            Value::Object(m) => !m.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::String(s) => !s.is_empty(),
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
        })
        .collect()
}

/// Ordinary manifests the gateway must keep accepting, read exactly as PyYAML reads them.
const ORDINARY_MANIFESTS: &[&str] = &[
    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: payments, labels: &l {app: web}}\n\
     spec:\n  replicas: 2\n  selector: {matchLabels: *l}\n  template:\n    metadata: {labels: *l}\n    spec:\n\
     \x20     containers:\n      - &c {name: web, image: public.ecr.aws/nginx/nginx:1.27, ports: [{containerPort: 80}]}\n\
     \x20     - <<: *c\n        name: sidecar\n        args: [\"--verbose\", \"yes\", '012']\n",
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: scripts}\ndata:\n  run.sh: |\n    #!/bin/sh\n    \
     if [ ! -f /x ] && [ \"$a\" != b ]; then echo hi !; fi\n  enabled: \"true\"\n  created: 2026-12-05\n\
     ---\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 443, targetPort: 8443}]\n  \
     selector: {app: web}\n  publishNotReadyAddresses: false\n  sessionAffinity: ~\n",
    "base: &b {cpu: 100m, memory: 64Mi}\nkind: Pod\napiVersion: v1\nmetadata: {name: p}\nspec:\n  containers:\n  \
     - name: c\n    image: registry.k8s.io/pause:3.10\n    resources:\n      requests:\n        <<: *b\n        \
     cpu: 200m\n      limits: {<<: [*b, {ephemeral-storage: 1Gi}]}\n",
];

#[test]
fn manifests_the_gateway_accepts_read_as_pyyaml_reads_them_and_the_rest_are_refused() {
    let mut refused = Vec::new();
    let seeds = adversarial("manifests");
    let ordinary = ORDINARY_MANIFESTS
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("ordinary[{i}]"), m.to_string()));
    for (name, manifest) in seeds.iter().cloned().chain(ordinary) {
        let upstream = pyyaml_reading(&manifest);
        match eks_mcp_gateway::classify::read_manifest(&manifest) {
            Ok(docs) => assert_eq!(
                Ok(applied(docs)),
                upstream,
                "{name}: the gateway accepted a reading PyYAML does not share"
            ),
            Err(e) => {
                assert!(!name.starts_with("ordinary"), "{name} refused: {e}");
                refused.push((name, e, upstream));
            }
        }
    }
    // The merge-tag seeds are refused, and PyYAML does read a Secret, a namespace or a
    // privileged container into them: the refusal is what keeps the policy honest.
    let reading = |seed: &str| -> Value {
        let (_, e, upstream) = refused
            .iter()
            .find(|(n, _, _)| n == seed)
            .unwrap_or_else(|| panic!("{seed} was accepted"));
        assert!(e.contains("tag") || e.contains("merge"), "{seed}: {e}");
        upstream
            .clone()
            .unwrap_or_else(|e| panic!("PyYAML refused {seed}: {e}"))[0]
            .clone()
    };
    for seed in [
        "merge-tag-hides-secret-kind.yaml",
        "verbatim-merge-tag-hides-secret-kind.yaml",
        "tag-directive-merge-hides-secret-kind.yaml",
    ] {
        assert_eq!(reading(seed)["kind"], "Secret", "{seed}");
    }
    assert_eq!(
        reading("merge-tag-hides-namespace.yaml")["metadata"]["namespace"],
        "kube-system"
    );
    let pod = reading("merge-tag-hides-privileged-pod.yaml");
    assert_eq!(pod["spec"]["hostPID"], true);
    assert_eq!(
        pod["spec"]["containers"][0]["securityContext"]["privileged"],
        true
    );
    assert_eq!(
        reading("merge-sources-share-namespace.yaml")["metadata"]["namespace"],
        "kube-system",
        "PyYAML 6.0.4 keeps the later source for a long key"
    );
}

#[tokio::test]
async fn a_merge_tag_cannot_smuggle_a_secret_or_a_privileged_pod_past_the_policy() {
    let h = as_payments_dev().await;
    let mut c = h.client();
    c.initialize().await;
    for seed in [
        "merge-tag-hides-secret-kind.yaml",
        "tag-directive-merge-hides-secret-kind.yaml",
        "merge-tag-hides-privileged-pod.yaml",
        "merge-sources-share-namespace.yaml",
        "quoted-merge-key-read-as-text-upstream.yaml",
    ] {
        let manifest = std::fs::read_to_string(
            repo_root()
                .join("tests/fixtures/adversarial/manifests")
                .join(seed),
        )
        .unwrap();
        let r = c
            .call_tool(
                "apply_yaml",
                json!({"cluster_name": "dev", "namespace": "payments", "yaml_content": manifest}),
            )
            .await;
        assert_unparseable(&r, seed);
    }
    assert!(h.sim.tool_calls().is_empty(), "{:?}", h.sim.tool_calls());
    h.stop().await;
}

#[tokio::test]
async fn kinds_the_catalogue_cannot_place_need_a_cluster_scoped_grant() {
    let h = as_payments_dev().await;
    let mut c = h.client();
    c.initialize().await;
    // Cluster-scoped in the cluster, unknown to the catalogue: a namespace grant on
    // `payments` must not let alice create them, whatever namespace the call names.
    let node_pool = json!({"operation": "create", "cluster_name": "dev", "kind": "NodePool",
        "api_version": "karpenter.sh/v1", "namespace": "payments", "name": "gpu",
        "body": {"apiVersion": "karpenter.sh/v1", "kind": "NodePool",
                 "metadata": {"name": "gpu"}, "spec": {"limits": {"cpu": "100000"}}}});
    let r = c.call_tool("manage_k8s_resource", node_pool).await;
    assert!(r.is_tool_error(), "{}", r.text());
    assert!(
        r.tool_text()
            .contains("NodePool gpu is a kind the gateway's catalogue cannot place"),
        "{}",
        r.tool_text()
    );
    for (what, manifest, reason) in [
        (
            "a Kyverno ClusterPolicy",
            "apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata:\n  name: allow-all\nspec: {}\n",
            "catalogue cannot place",
        ),
        (
            "a ConfigMap kind in a group Kubernetes does not own",
            "apiVersion: evil.example.com/v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
            "catalogue cannot place",
        ),
        (
            "a built-in FlowSchema (Kubernetes 1.34 API, cluster-scoped)",
            "apiVersion: flowcontrol.apiserver.k8s.io/v1\nkind: FlowSchema\nmetadata:\n  name: exempt-me\nspec:\n  priorityLevelConfiguration:\n    name: exempt\n",
            "cluster-scoped",
        ),
    ] {
        let r = c
            .call_tool(
                "apply_yaml",
                json!({"cluster_name": "dev", "namespace": "payments", "yaml_content": manifest}),
            )
            .await;
        assert!(r.is_tool_error(), "{what} was allowed: {}", r.text());
        assert!(r.tool_text().contains(reason), "{what}: {}", r.tool_text());
    }
    assert!(h.sim.tool_calls().is_empty(), "{:?}", h.sim.tool_calls());

    // A custom kind the shipped data lists as namespaced (monitoring.coreos.com/ServiceMonitor)
    // is gated by the namespace grants like a built-in: alice may create one in payments.
    let r = c
        .call_tool(
            "apply_yaml",
            json!({"cluster_name": "dev", "namespace": "payments", "yaml_content":
                "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata:\n  name: api\nspec:\n  endpoints: [{port: http}]\n"}),
        )
        .await;
    assert!(
        !r.tool_text().contains("cannot place"),
        "a listed namespaced custom kind was refused: {}",
        r.tool_text()
    );
    assert_eq!(h.sim.tool_calls().len(), 1, "{:?}", h.sim.tool_calls());
    let records = h.audit_records(5).await;
    let unknown_scope = records
        .iter()
        .filter(|r| {
            r["decision"]["rules"]
                .to_string()
                .contains("writes.unknown_scope")
        })
        .count();
    assert_eq!(unknown_scope, 2 + 1, "{records:#?}");
    h.stop().await;
}
