//! The bytecode (RVM) and the interpreter must decide every request alike: a corpus of
//! inputs over the shipped policies (every principal of the shipped data, every method
//! shape, every catalogued tool over allowed, denied, read-only, unknown and malformed
//! targets, manifests breaking each content rule) is decided both ways and compared.
use std::path::Path;

use serde_json::{Value, json};

use super::*;

fn shipped() -> PolicyEngine {
    // Decisions are compared, not timed: a loaded test machine must not turn a slow
    // evaluation into a fail-closed answer on one side only.
    let cfg = PolicyConfig {
        dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
        eval_timeout: std::time::Duration::from_secs(30),
        ..PolicyConfig::default()
    };
    PolicyEngine::load(&cfg).expect("shipped policies load")
}

fn principals() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("alice", vec!["payments-dev"]),
        ("webby", vec!["web-dev"]),
        ("ada", vec!["platform-admins"]),
        ("sam", vec!["sre-oncall"]),
        ("bob", vec!["sre-oncall", "sre-breakglass"]),
        ("rita", vec!["readers", "web-dev"]),
        ("nobody", vec![]),
        ("", vec![]),
    ]
}

fn input(id: &str, groups: &[&str], method: &str, tool: Option<(&str, &Value)>) -> PolicyInput {
    let mut input = warmup_input();
    input.principal.id = id.to_string();
    input.principal.groups = groups.iter().map(|g| g.to_string()).collect();
    input.principal.auth = AuthKind::Jwt;
    input.mcp.method = method.to_string();
    if let Some((name, args)) = tool {
        let catalogue = Catalogue::from_yaml_str(
            &std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/catalogue.yaml"),
            )
            .expect("catalogue"),
            Path::new("catalogue.yaml"),
        )
        .expect("catalogue parses");
        let (t, target) = catalogue.classify(name, args);
        input.tool = Some(t);
        input.target = target;
    }
    input
}

const MANIFESTS: &[&str] = &[
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n",
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: secret, metadata: {name: db, namespace: payments}}\n",
    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\nspec:\n  template:\n    spec:\n      hostNetwork: yes\n      volumes: [{name: h, hostPath: {path: /}}]\n      containers:\n      - name: app\n        image: evil.example.com/x:1\n        ports: [{containerPort: 80, hostPort: 80}]\n        securityContext: {privileged: true, capabilities: {add: [NET_ADMIN, CHOWN]}}\n",
    "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c, namespace: kube-system}\nspec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers: [{name: a, image: nginx:1.27}]\n          initContainers: [{name: b, image: 123456789012.dkr.ecr.us-west-2.amazonaws.com/app:1}]\n",
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-x}\n",
    "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: public.ecr.aws/nginx/nginx:1.27}]}\n",
    "not: [valid\n",
];

fn tool_calls() -> Vec<(&'static str, Value)> {
    let mut calls = Vec::new();
    let clusters = [
        Value::from("dev-1"),
        Value::from("prod-eu-1"),
        Value::from("staging-2"),
        Value::from("sandbox-1"),
        Value::from("team-prod"),
        Value::from("elsewhere"),
        Value::Null,
    ];
    let namespaces = [
        Value::from("payments"),
        Value::from("payments-api"),
        Value::from("web"),
        Value::from("frontend"),
        Value::from("kube-system"),
        Value::Null,
    ];
    for cluster in &clusters {
        for ns in &namespaces {
            for kind in ["Deployment", "secrets", "Namespace"] {
                calls.push(("read_k8s_resource", json!({"cluster_name": cluster, "kind": kind, "api_version": "v1", "name": "x", "namespace": ns})));
                calls.push(("list_k8s_resources", json!({"cluster_name": cluster, "kind": kind, "api_version": "v1", "namespace": ns})));
                for op in ["patch", "delete", "create", "read"] {
                    calls.push(("manage_k8s_resource", json!({"operation": op, "cluster_name": cluster, "kind": kind, "api_version": "v1", "name": "x", "namespace": ns, "body": {"metadata": {"namespace": "web"}}})));
                }
            }
            calls.push((
                "get_pod_logs",
                json!({"cluster_name": cluster, "pod_name": "p", "namespace": ns}),
            ));
            calls.push((
                "get_k8s_events",
                json!({"cluster_name": cluster, "kind": "Secret", "name": "s", "namespace": ns}),
            ));
        }
        for m in MANIFESTS {
            calls.push((
                "apply_yaml",
                json!({"cluster_name": cluster, "namespace": "payments", "yaml_content": m}),
            ));
            calls.push((
                "apply_yaml",
                json!({"cluster_name": cluster, "yaml_content": m}),
            ));
        }
        calls.push(("get_cloudwatch_logs", json!({"cluster_name": cluster})));
        calls.push((
            "manage_eks_stacks",
            json!({"operation": "deploy", "cluster_name": cluster}),
        ));
        calls.push((
            "manage_eks_stacks",
            json!({"operation": "describe", "cluster_name": cluster}),
        ));
        calls.push(("list_eks_resources", json!({"cluster_name": cluster})));
    }
    calls.push((
        "add_inline_policy",
        json!({"role_name": "eks-node", "policy_name": "p"}),
    ));
    calls.push((
        "add_inline_policy",
        json!({"role_name": "admin", "policy_name": "p"}),
    ));
    calls.push(("search_eks_documentation", json!({"query": "x"})));
    calls.push((
        "apply_yaml",
        json!({"cluster_name": "dev-1", "yaml_path": "/tmp/x.yaml"}),
    ));
    calls.push((
        "read_k8s_resource",
        json!({"cluster_name": 7, "kind": "Pod"}),
    ));
    calls.push(("no_such_tool", json!({"cluster_name": "dev-1"})));
    calls
}

#[test]
fn bytecode_and_interpreter_decide_the_corpus_alike() {
    let engine = shipped();
    assert!(
        engine.uses_bytecode(),
        "the shipped policies compile to bytecode"
    );
    let mut inputs = Vec::new();
    for (id, groups) in principals() {
        for method in [
            "ping",
            "initialize",
            "tools/list",
            "resources/read",
            "notifications/initialized",
            "sampling/createMessage",
            "tools/call",
        ] {
            inputs.push(input(id, &groups, method, None));
        }
    }
    let calls = tool_calls();
    for (i, (id, groups)) in principals().into_iter().enumerate() {
        // Every principal sees every call shape; the anonymous one a sample.
        for (name, args) in calls
            .iter()
            .skip(i % 2)
            .step_by(if id.is_empty() { 7 } else { 2 })
        {
            inputs.push(input(id, &groups, "tools/call", Some((name, args))));
        }
    }
    let (mut allowed, mut denied) = (0, 0);
    for inp in &inputs {
        let doc = serde_json::to_value(inp).expect("input serialises");
        let fast = engine
            .bytecode
            .as_ref()
            .expect("bytecode")
            .eval(regorus::Value::from(doc.clone()))
            .map(|v| parse_decision(&v));
        let slow = engine.interpret(regorus::Value::from(doc.clone()));
        let fast = match fast {
            Ok(Ok(d)) => d,
            other => panic!("bytecode failed on {doc}: {other:?}"),
        };
        assert_eq!(fast, slow, "decisions differ for {doc}");
        assert!(!slow.is_fail_closed(), "interpreter failed on {doc}");
        if slow.allow {
            allowed += 1;
        } else {
            denied += 1;
        }
    }
    assert!(
        allowed > 100 && denied > 100,
        "{allowed} allowed, {denied} denied"
    );
}

/// Grants that open what no group does (the `else` branches of `cluster_allowed` and
/// `namespace_readable`), and a principal named by id.
#[test]
fn bytecode_and_interpreter_agree_when_only_a_grant_opens_the_namespace() {
    let shipped_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let dir = tempfile::tempdir().expect("tempdir");
    for name in [
        "gateway.rego",
        "tools.rego",
        "writes.rego",
        "secrets.rego",
        "content.rego",
        "confirm.rego",
        "catalogue.yaml",
    ] {
        std::fs::copy(shipped_dir.join(name), dir.path().join(name)).expect("copy");
    }
    let text = std::fs::read_to_string(shipped_dir.join("data.yaml")).expect("data.yaml");
    let mut data = crate::classify::parse_manifest(&text)
        .expect("data parses")
        .remove(0);
    data["gateway"]["principals"]["carol"] =
        json!({"writes": [{"clusters": ["dev-*"], "namespaces": ["tools", "ops-*"]}]});
    data["gateway"]["groups"]["payments-dev"]["writes"]
        .as_array_mut()
        .expect("payments-dev writes")
        .push(
            json!({"clusters": ["sandbox-?"], "namespaces": ["*-batch"], "cluster_scoped": true}),
        );
    std::fs::write(dir.path().join("data.json"), data.to_string()).expect("write data");
    let engine = PolicyEngine::load(&PolicyConfig {
        dir: dir.path().to_path_buf(),
        ..PolicyConfig::default()
    })
    .expect("loads");
    assert!(engine.uses_bytecode());
    let mut allowed = 0;
    for (id, groups) in [
        ("carol", vec![]),
        ("alice", vec!["payments-dev"]),
        ("carol", vec!["web-dev"]),
    ] {
        for cluster in ["dev-1", "sandbox-1", "sandbox-12", "prod-1"] {
            for ns in ["tools", "ops-a", "payments-batch", "web", "kube-system"] {
                for (tool, args) in [
                    (
                        "read_k8s_resource",
                        json!({"cluster_name": cluster, "kind": "Deployment", "api_version": "apps/v1", "name": "x", "namespace": ns}),
                    ),
                    (
                        "manage_k8s_resource",
                        json!({"operation": "create", "cluster_name": cluster, "kind": "ConfigMap", "api_version": "v1", "name": "x", "namespace": ns, "body": {}}),
                    ),
                    (
                        "manage_k8s_resource",
                        json!({"operation": "create", "cluster_name": cluster, "kind": "Namespace", "api_version": "v1", "name": ns, "body": {}}),
                    ),
                ] {
                    let inp = input(id, &groups, "tools/call", Some((tool, &args)));
                    let doc = serde_json::to_value(&inp).expect("input serialises");
                    let fast = engine
                        .bytecode
                        .as_ref()
                        .expect("bytecode")
                        .eval(regorus::Value::from(doc.clone()));
                    let fast =
                        parse_decision(&fast.expect("bytecode evaluates")).expect("decision");
                    let slow = engine.interpret(regorus::Value::from(doc.clone()));
                    assert_eq!(fast, slow, "decisions differ for {doc}");
                    if slow.allow {
                        allowed += 1;
                    }
                }
            }
        }
    }
    assert!(allowed >= 4, "{allowed} allowed");
}
