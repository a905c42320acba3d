//! Policy engine with the shipped policies: every hosted tool allowed and denied, the bypass
//! attempts (namespace only in the body, a Secret in the third document, `kind: secret`,
//! List-wrapped items, omitted namespace, odd-case operation, unknown tool), tools/list
//! filtering of the real open-source tool list, hot reload and fail-closed evaluation.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use eks_mcp_gateway::config::{PolicyConfig, PolicyMode};
use eks_mcp_gateway::identity::{AuthKind, Principal};
use eks_mcp_gateway::policy::{
    ClientInfo, Decision, Era, GatewayFacts, McpFacts, PolicyEngine, PolicyHandle, PolicyInput,
    eval_file, format_report, run_tests,
};
use serde_json::{Value, json};

fn shipped_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
}

fn shipped() -> PolicyEngine {
    let cfg = PolicyConfig {
        dir: shipped_dir(),
        ..PolicyConfig::default()
    };
    PolicyEngine::load(&cfg).expect("shipped policies load")
}

fn principal(id: &str, groups: &[&str]) -> Principal {
    Principal {
        id: id.to_string(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        auth: AuthKind::Jwt,
        claims: Default::default(),
    }
}

const ALICE: (&str, &[&str]) = ("alice", &["payments-dev"]);
const ONCALL: (&str, &[&str]) = ("sam", &["sre-oncall"]);
const ADMIN: (&str, &[&str]) = ("ada", &["platform-admins"]);
const BREAKGLASS: (&str, &[&str]) = ("bob", &["sre-oncall", "sre-breakglass"]);
const NOBODY: (&str, &[&str]) = ("nobody", &[]);

fn method_input(who: (&str, &[&str]), method: &str) -> PolicyInput {
    PolicyInput {
        principal: principal(who.0, who.1),
        client: ClientInfo {
            name: Some("it".into()),
            version: Some("1".into()),
        },
        mcp: McpFacts {
            method: method.to_string(),
            protocol_version: Some("2025-11-25".into()),
            era: Era::Session,
        },
        tool: None,
        target: Default::default(),
        gateway: GatewayFacts {
            mode: PolicyMode::Enforce,
            upstream: "https://eks-mcp.us-west-2.api.aws/mcp".into(),
        },
    }
}

fn call_input(e: &PolicyEngine, who: (&str, &[&str]), tool: &str, args: Value) -> PolicyInput {
    let (tool, target) = e.catalogue().classify(tool, &args);
    let mut input = method_input(who, "tools/call");
    input.tool = Some(tool);
    input.target = target;
    input
}

fn call(e: &PolicyEngine, who: (&str, &[&str]), tool: &str, args: Value) -> Decision {
    e.decide(&call_input(e, who, tool, args))
}

#[track_caller]
fn allowed(d: &Decision) {
    assert!(d.allow, "expected allow, got {d:#?}");
    assert!(d.redact.iter().any(|p| p == "baseline"), "{d:?}");
}

#[track_caller]
fn denied(d: &Decision, rule: &str) {
    assert!(!d.allow, "expected deny by {rule}, got {d:#?}");
    assert!(
        d.rules.iter().any(|r| r == rule),
        "expected rule {rule}, got {d:#?}"
    );
    assert!(!d.reasons.is_empty());
}

#[test]
fn shipped_policy_unit_tests_pass() {
    let report = run_tests(&shipped_dir());
    assert!(report.success(), "{}", format_report(&report, false));
    // Every `test_*` rule written in the directory ran, no more and no fewer (Rego rules
    // start at the beginning of a line; a test rule in a file that is not `*_test.rego`
    // would not run, and fails this too).
    let mut written = Vec::new();
    for entry in std::fs::read_dir(shipped_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rego") {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            for rest in text.lines().filter_map(|l| l.strip_prefix("test_")) {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                written.push((file.clone(), format!("test_{name}")));
            }
        }
    }
    written.sort();
    written.dedup();
    let mut ran: Vec<(String, String)> = report
        .results
        .iter()
        .filter(|r| !r.name.starts_with("fixture "))
        .map(|r| {
            (
                r.file.file_name().unwrap().to_string_lossy().into_owned(),
                r.name.rsplit('.').next().unwrap().to_owned(),
            )
        })
        .collect();
    ran.sort();
    assert_eq!(ran, written, "the tests that ran are the tests written");
    assert!(written.len() >= 80, "the shipped policies lost their tests");
    let text = format_report(&report, true);
    assert!(text.contains("test_prod_is_read_only: PASS"), "{text}");
    assert!(
        text.contains(&format!("PASS: {0}/{0}", report.results.len())),
        "{text}"
    );
}

#[test]
fn failing_rego_test_is_reported_with_its_name() {
    let dir = copy_shipped();
    std::fs::write(
        dir.path().join("broken_test.rego"),
        "package eks_mcp.gateway_test\n\ntest_always_fails if {\n\tdata.eks_mcp.gateway.decision.allow with input as {}\n}\n",
    )
    .unwrap();
    let report = run_tests(dir.path());
    assert!(!report.success());
    assert_eq!(report.failed(), 1);
    let text = format_report(&report, false);
    assert!(text.contains("test_always_fails: FAIL"), "{text}");
    assert!(text.contains("FAIL: 1/"), "{text}");
}

#[test]
fn non_tool_methods_are_allowed_for_authenticated_principals() {
    let e = shipped();
    for m in [
        "initialize",
        "ping",
        "tools/list",
        "resources/list",
        "prompts/get",
        "server/discover",
        "notifications/initialized",
        "stream/get",
    ] {
        allowed(&e.decide(&method_input(NOBODY, m)));
    }
    denied(
        &e.decide(&method_input(("", &[]), "ping")),
        "auth.anonymous",
    );
    denied(
        &e.decide(&method_input(ALICE, "sampling/createMessage")),
        "methods.not_allowed",
    );
}

#[test]
fn documentation_and_guidance_tools() {
    let e = shipped();
    for tool in [
        "search_eks_documentation",
        "search_eks_troubleshooting_guide",
        "search_eks_troubleshoot_guide",
    ] {
        allowed(&call(&e, NOBODY, tool, json!({"query": "node not ready"})));
    }
    allowed(&call(
        &e,
        NOBODY,
        "get_eks_metrics_guidance",
        json!({"resource_type": "pod"}),
    ));
    allowed(&call(
        &e,
        NOBODY,
        "generate_app_manifest",
        json!({"app_name": "web", "image_uri": "nginx", "namespace": "kube-system"}),
    ));
    allowed(&call(
        &e,
        ALICE,
        "get_policies_for_role",
        json!({"role_name": "eks-node"}),
    ));
    denied(
        &e.decide(&call_input(
            &e,
            ("", &[]),
            "search_eks_documentation",
            json!({"query": "x"}),
        )),
        "auth.anonymous",
    );
}

#[test]
fn eks_level_reads_follow_the_cluster_allowlist() {
    let e = shipped();
    for (tool, args) in [
        (
            "list_eks_resources",
            json!({"resource_type": "nodegroup", "cluster_name": "dev-1"}),
        ),
        (
            "describe_eks_resource",
            json!({"resource_type": "cluster", "cluster_name": "dev-1", "resource_name": "dev-1"}),
        ),
        ("get_eks_insights", json!({"cluster_name": "dev-1"})),
        ("get_eks_vpc_config", json!({"cluster_name": "dev-1"})),
        ("list_api_versions", json!({"cluster_name": "dev-1"})),
        (
            "get_cloudwatch_metrics",
            json!({"cluster_name": "dev-1", "metric_name": "cpu", "namespace": "ContainerInsights"}),
        ),
    ] {
        allowed(&call(&e, ALICE, tool, args.clone()));
        let mut other = args.clone();
        other["cluster_name"] = json!("sandbox-1");
        denied(&call(&e, ALICE, tool, other), "clusters.not_allowed");
        denied(&call(&e, NOBODY, tool, args), "clusters.not_allowed");
    }
    // list_eks_resources without a cluster lists clusters: allowed.
    allowed(&call(
        &e,
        ALICE,
        "list_eks_resources",
        json!({"resource_type": "cluster"}),
    ));
    denied(
        &call(&e, ALICE, "list_api_versions", json!({})),
        "clusters.missing",
    );
}

#[test]
fn kubernetes_reads_follow_the_namespace_allowlist() {
    let e = shipped();
    let list = |ns: Option<&str>| {
        let mut a = json!({"cluster_name": "prod-eu-1", "kind": "Pod", "api_version": "v1"});
        if let Some(ns) = ns {
            a["namespace"] = json!(ns);
        }
        a
    };
    allowed(&call(
        &e,
        ALICE,
        "list_k8s_resources",
        list(Some("payments")),
    ));
    denied(
        &call(&e, ALICE, "list_k8s_resources", list(Some("kube-system"))),
        "namespaces.not_allowed",
    );

    let read = |kind: &str, ns: &str| json!({"cluster_name": "dev-1", "kind": kind, "api_version": "apps/v1", "name": "api", "namespace": ns});
    allowed(&call(
        &e,
        ALICE,
        "read_k8s_resource",
        read("Deployment", "payments"),
    ));
    let d = call(&e, ALICE, "read_k8s_resource", read("Deployment", "web"));
    denied(&d, "namespaces.not_allowed");
    assert!(
        d.reasons[0].contains("namespace web on cluster dev-1")
            && d.reasons[0].contains("payments-dev"),
        "{d:?}"
    );

    let logs = |ns: &str| json!({"cluster_name": "dev-1", "namespace": ns, "pod_name": "api-1"});
    let d = call(&e, ALICE, "get_pod_logs", logs("payments"));
    allowed(&d);
    assert!(d.rules.contains(&"sensitive.redacted".to_string()), "{d:?}");
    denied(
        &call(&e, ALICE, "get_pod_logs", logs("web")),
        "namespaces.not_allowed",
    );
    // Without a namespace the upstream reads the pod in `default`.
    denied(
        &call(
            &e,
            ALICE,
            "get_pod_logs",
            json!({"cluster_name": "dev-1", "pod_name": "p"}),
        ),
        "namespaces.not_allowed",
    );

    let events =
        json!({"cluster_name": "dev-1", "kind": "Pod", "name": "api-1", "namespace": "payments"});
    allowed(&call(&e, ALICE, "get_k8s_events", events));

    let cw = json!({"cluster_name": "dev-1", "resource_type": "pod", "log_type": "application"});
    denied(
        &call(&e, ALICE, "get_cloudwatch_logs", cw.clone()),
        "namespaces.all_namespaces",
    );
    allowed(&call(&e, ONCALL, "get_cloudwatch_logs", cw));
}

#[test]
fn bypass_omitted_or_empty_namespace_is_all_namespaces() {
    let e = shipped();
    for args in [
        json!({"cluster_name": "dev-1", "kind": "Pod", "api_version": "v1"}),
        json!({"cluster_name": "dev-1", "kind": "Pod", "api_version": "v1", "namespace": ""}),
        json!({"cluster_name": "dev-1", "kind": "Pod", "api_version": "v1", "namespace": null}),
    ] {
        let d = call(&e, ALICE, "list_k8s_resources", args.clone());
        denied(&d, "namespaces.all_namespaces");
        allowed(&call(&e, ONCALL, "list_k8s_resources", args));
    }
    denied(
        &call(
            &e,
            ALICE,
            "get_k8s_events",
            json!({"cluster_name": "dev-1", "kind": "Pod", "name": "p"}),
        ),
        "namespaces.all_namespaces",
    );
    // A write without any namespace could land anywhere.
    denied(
        &call(
            &e,
            ALICE,
            "manage_k8s_resource",
            json!({"operation": "delete", "cluster_name": "dev-1", "kind": "ConfigMap", "api_version": "v1", "name": "x"}),
        ),
        "writes.all_namespaces",
    );
}

#[test]
fn manage_k8s_resource_writes_need_grants_and_respect_tiers() {
    let e = shipped();
    let args = |op: &str, cluster: &str, ns: &str| {
        json!({"operation": op, "cluster_name": cluster, "kind": "Deployment", "api_version": "apps/v1",
               "name": "api", "namespace": ns,
               "body": {"spec": {"replicas": 3}}})
    };
    allowed(&call(
        &e,
        ALICE,
        "manage_k8s_resource",
        args("patch", "dev-1", "payments"),
    ));
    denied(
        &call(
            &e,
            ALICE,
            "manage_k8s_resource",
            args("patch", "dev-1", "web"),
        ),
        "writes.no_grant",
    );
    denied(
        &call(
            &e,
            ONCALL,
            "manage_k8s_resource",
            args("patch", "dev-1", "payments"),
        ),
        "writes.no_grant",
    );
    let d = call(
        &e,
        ALICE,
        "manage_k8s_resource",
        args("patch", "prod-eu-1", "payments"),
    );
    denied(&d, "tiers.read_only");
    assert_eq!(
        d.reasons,
        vec![
            "namespace payments on cluster prod-eu-1 is read-only for group payments-dev (tier prod); ask for a break-glass grant"
        ]
    );
    let d = call(
        &e,
        BREAKGLASS,
        "manage_k8s_resource",
        args("patch", "prod-eu-1", "payments"),
    );
    allowed(&d);
    assert!(d.rules.contains(&"tiers.break_glass".to_string()));
    // A read through manage_k8s_resource is a read.
    allowed(&call(
        &e,
        ALICE,
        "manage_k8s_resource",
        args("read", "prod-eu-1", "payments"),
    ));
}

#[test]
fn bypass_operation_in_odd_case() {
    let e = shipped();
    for op in ["DeLeTe", "DELETE", " delete "] {
        let args = json!({"operation": op, "cluster_name": "dev-1", "kind": "Deployment",
                          "api_version": "apps/v1", "name": "api", "namespace": "web"});
        let input = call_input(&e, ALICE, "manage_k8s_resource", args);
        assert_eq!(
            input.tool.as_ref().unwrap().operation.as_deref(),
            Some("delete")
        );
        denied(&e.decide(&input), "writes.no_grant");
    }
    // An operation the catalogue does not know is a write, not a read.
    let args = json!({"operation": "Read2", "cluster_name": "dev-1", "kind": "Deployment",
                      "api_version": "apps/v1", "name": "api", "namespace": "web"});
    denied(
        &call(&e, ALICE, "manage_k8s_resource", args),
        "writes.no_grant",
    );
}

#[test]
fn bypass_namespace_only_in_body_metadata() {
    let e = shipped();
    // alice may write in payments; the body aims at kube-system without a namespace argument.
    let args = json!({"operation": "create", "cluster_name": "dev-1", "kind": "ConfigMap",
                      "api_version": "v1", "name": "x",
                      "body": {"metadata": {"name": "x", "namespace": "kube-system"}}});
    let d = call(&e, ALICE, "manage_k8s_resource", args);
    denied(&d, "writes.no_grant");
    assert!(d.reasons[0].contains("kube-system"), "{d:?}");
    // Both given and different: both must be granted.
    let args = json!({"operation": "create", "cluster_name": "dev-1", "kind": "ConfigMap",
                      "api_version": "v1", "name": "x", "namespace": "payments",
                      "body": {"metadata": {"namespace": "kube-system"}}});
    denied(
        &call(&e, ALICE, "manage_k8s_resource", args),
        "writes.no_grant",
    );
    // Body namespace matching a granted namespace is fine.
    let args = json!({"operation": "create", "cluster_name": "dev-1", "kind": "ConfigMap",
                      "api_version": "v1", "name": "x",
                      "body": {"metadata": {"namespace": "payments"}}});
    allowed(&call(&e, ALICE, "manage_k8s_resource", args));
}

#[test]
fn secrets_are_never_read_or_written() {
    let e = shipped();
    for kind in ["Secret", "secret", "SECRETS"] {
        let read = json!({"cluster_name": "dev-1", "kind": kind, "api_version": "v1", "name": "db", "namespace": "payments"});
        let d = call(&e, ONCALL, "read_k8s_resource", read);
        denied(&d, "secrets.read");
        assert!(
            d.reasons[0].contains("Secret db in namespace payments"),
            "{d:?}"
        );
        let manage = json!({"operation": "read", "cluster_name": "dev-1", "kind": kind, "api_version": "v1",
                            "name": "db", "namespace": "payments"});
        denied(
            &call(&e, ADMIN, "manage_k8s_resource", manage),
            "secrets.read",
        );
        for op in ["create", "replace", "patch", "delete"] {
            let w = json!({"operation": op, "cluster_name": "dev-1", "kind": kind, "api_version": "v1",
                           "name": "db", "namespace": "payments", "body": {"stringData": {"a": "b"}}});
            denied(&call(&e, ADMIN, "manage_k8s_resource", w), "secrets.write");
        }
    }
    // The body says Secret while the kind argument says ConfigMap.
    let sneaky = json!({"operation": "create", "cluster_name": "dev-1", "kind": "ConfigMap", "api_version": "v1",
                        "name": "db", "namespace": "payments", "body": {"kind": "Secret", "data": {"a": "Yg=="}}});
    denied(
        &call(&e, ALICE, "manage_k8s_resource", sneaky),
        "secrets.write",
    );
    // Listing is allowed, with the secret_values redaction profile.
    let list = json!({"cluster_name": "dev-1", "kind": "secret", "api_version": "v1", "namespace": "payments"});
    let d = call(&e, ALICE, "list_k8s_resources", list);
    allowed(&d);
    assert_eq!(d.redact, vec!["baseline", "secret_values"]);
}

fn apply(e: &PolicyEngine, who: (&str, &[&str]), yaml: &str) -> Decision {
    call(
        e,
        who,
        "apply_yaml",
        json!({"cluster_name": "dev-1", "namespace": "payments", "yaml_content": yaml}),
    )
}

const CLEAN: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  template:
    spec:
      containers:
      - name: app
        image: public.ecr.aws/nginx/nginx:1.27
";

#[test]
fn apply_yaml_clean_manifest_is_allowed_where_granted() {
    let e = shipped();
    allowed(&apply(&e, ALICE, CLEAN));
    denied(&apply(&e, ONCALL, CLEAN), "writes.no_grant");
    let prod = call(
        &e,
        ALICE,
        "apply_yaml",
        json!({"cluster_name": "prod-1", "namespace": "payments", "yaml_content": CLEAN}),
    );
    denied(&prod, "tiers.read_only");
}

#[test]
fn bypass_secret_in_third_document() {
    let e = shipped();
    let yaml = format!(
        "{CLEAN}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: a}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\nstringData: {{password: hunter2}}\n"
    );
    let d = apply(&e, ALICE, &yaml);
    denied(&d, "secrets.write");
    assert!(
        d.reasons.iter().any(|r| r.contains("yaml_content[2]")),
        "{d:?}"
    );
}

#[test]
fn bypass_lowercase_kind_and_list_wrapping() {
    let e = shipped();
    denied(
        &apply(
            &e,
            ALICE,
            "apiVersion: v1\nkind: secret\nmetadata: {name: s}\n",
        ),
        "secrets.write",
    );
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n\
                - apiVersion: v1\n  kind: SECRET\n  metadata: {name: s, namespace: payments}\n";
    let d = apply(&e, ALICE, list);
    denied(&d, "secrets.write");
    assert!(d.reasons.iter().any(|r| r.contains("items[1]")), "{d:?}");
    // Typed lists (`SecretList`) are expanded too.
    let typed = "apiVersion: v1\nkind: SecretList\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: s}}\n";
    denied(&apply(&e, ALICE, typed), "secrets.write");
    // List items in a namespace without a grant.
    let elsewhere = "kind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a, namespace: kube-system}}\n";
    denied(&apply(&e, ALICE, elsewhere), "writes.no_grant");
}

#[test]
fn apply_yaml_content_guard() {
    let e = shipped();
    let with = |extra_container: &str, extra_spec: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: api}}\nspec:\n  template:\n    spec:\n{extra_spec}      containers:\n      - name: app\n        image: public.ecr.aws/nginx/nginx:1.27\n{extra_container}"
        )
    };
    denied(
        &apply(
            &e,
            ALICE,
            &with("        securityContext: {privileged: true}\n", ""),
        ),
        "content.privileged",
    );
    // A plain YAML 1.1 boolean is refused (the readers type it differently); a quoted one
    // still counts as true to the content guard.
    denied(
        &apply(
            &e,
            ALICE,
            &with("        securityContext: {privileged: yes}\n", ""),
        ),
        "facts.unparseable",
    );
    denied(
        &apply(
            &e,
            ALICE,
            &with("        securityContext: {privileged: \"On\"}\n", ""),
        ),
        "content.privileged",
    );
    denied(
        &apply(&e, ALICE, &with("", "      hostNetwork: true\n")),
        "content.host_namespaces",
    );
    denied(
        &apply(&e, ALICE, &with("", "      hostPID: \"On\"\n")),
        "content.host_namespaces",
    );
    denied(
        &apply(
            &e,
            ALICE,
            &with(
                "",
                "      volumes:\n      - name: root\n        hostPath: {path: /}\n",
            ),
        ),
        "content.host_path",
    );
    denied(
        &apply(
            &e,
            ALICE,
            &with(
                "        securityContext: {capabilities: {add: [SYS_ADMIN]}}\n",
                "",
            ),
        ),
        "content.capabilities",
    );
    allowed(&apply(
        &e,
        ALICE,
        &with(
            "        securityContext: {capabilities: {add: [NET_BIND_SERVICE]}}\n",
            "",
        ),
    ));
    denied(
        &apply(&e, ALICE, &CLEAN.replace("public.ecr.aws/nginx/", "")),
        "content.image_registry",
    );
    // Init containers of a CronJob are checked as well.
    let cron = "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          initContainers:\n          - {name: i, image: public.ecr.aws/x/y, securityContext: {privileged: true}}\n          containers:\n          - {name: c, image: public.ecr.aws/x/y}\n";
    denied(&apply(&e, ALICE, cron), "content.privileged");
    // Anchors and merge keys resolve before the check.
    let merged = "x-sc: &sc {privileged: true}\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: public.ecr.aws/x/y\n    securityContext:\n      <<: *sc\n";
    denied(&apply(&e, ALICE, merged), "content.privileged");
}

#[test]
fn apply_yaml_manifests_that_cannot_be_read_are_denied() {
    let e = shipped();
    denied(&apply(&e, ALICE, "kind: [unclosed"), "facts.unparseable");
    // Duplicate keys: readers disagree about which one wins.
    let dup = "apiVersion: v1\nkind: ConfigMap\nkind: Secret\nmetadata: {name: a}\n";
    let d = apply(&e, ALICE, dup);
    denied(&d, "facts.unparseable");
    assert!(d.reasons[0].contains("duplicate"), "{d:?}");
    denied(
        &apply(&e, ALICE, "kind: !python/object Pod\n"),
        "facts.unparseable",
    );
    denied(
        &call(
            &e,
            ALICE,
            "apply_yaml",
            json!({"cluster_name": "dev-1", "yaml_path": "/tmp/x.yaml"}),
        ),
        "facts.unparseable",
    );
    denied(&apply(&e, ALICE, "---\n---\n"), "writes.nothing");
}

#[test]
fn privileged_aws_tools_are_off_unless_granted() {
    let e = shipped();
    let describe = json!({"operation": "Describe", "cluster_name": "dev-1"});
    allowed(&call(&e, ALICE, "manage_eks_stacks", describe));
    let deploy =
        json!({"operation": "deploy", "cluster_name": "dev-1", "template_file": "/t.yaml"});
    denied(
        &call(&e, ALICE, "manage_eks_stacks", deploy.clone()),
        "aws.not_granted",
    );
    allowed(&call(&e, ADMIN, "manage_eks_stacks", deploy));
    let prod_delete = json!({"operation": "DELETE", "cluster_name": "prod-1"});
    denied(
        &call(&e, ADMIN, "manage_eks_stacks", prod_delete),
        "tiers.read_only",
    );

    let inline = |role: &str| json!({"policy_name": "p", "role_name": role, "permissions": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]});
    denied(
        &call(&e, ALICE, "add_inline_policy", inline("eks-node")),
        "aws.not_granted",
    );
    allowed(&call(&e, ADMIN, "add_inline_policy", inline("eks-node")));
    denied(
        &call(&e, ADMIN, "add_inline_policy", inline("OrganizationAdmin")),
        "aws.not_granted",
    );
}

#[test]
fn unknown_tools_are_denied() {
    let e = shipped();
    let d = call(
        &e,
        ADMIN,
        "exec_in_pod",
        json!({"cluster_name": "dev-1", "command": "sh"}),
    );
    denied(&d, "tools.unknown");
    assert!(d.reasons[0].contains("exec_in_pod"));
}

#[test]
fn tools_list_of_the_open_source_server_is_filtered_per_principal() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/awslabs-eks-mcp-server-0.2.1-tools-list.json");
    let text =
        std::fs::read_to_string(&fixture).expect("tests/fixtures holds the captured tools/list");
    let doc: Value = serde_json::from_str(&text).unwrap();
    let tools = doc.get("result").unwrap_or(&doc)["tools"]
        .as_array()
        .unwrap()
        .clone();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 16);
    let e = shipped();
    let visible = |who| -> Vec<&str> {
        let input = method_input(who, "tools/list");
        let flags = e.visible_tools(&input, names.iter().copied());
        names
            .iter()
            .zip(flags)
            .filter(|(_, v)| *v)
            .map(|(n, _)| *n)
            .collect()
    };
    for n in &names {
        assert!(e.catalogue().known(n), "{n} not in the catalogue");
    }
    let hidden = |v: &[&str]| -> Vec<String> {
        let mut h: Vec<String> = names
            .iter()
            .filter(|n| !v.contains(n))
            .map(|n| n.to_string())
            .collect();
        h.sort();
        h
    };
    assert_eq!(hidden(&visible(ADMIN)), Vec::<String>::new());
    assert_eq!(hidden(&visible(ALICE)), vec!["add_inline_policy"]);
    assert_eq!(
        hidden(&visible(ONCALL)),
        vec!["add_inline_policy", "apply_yaml"]
    );
    // tool_visible agrees with the batch form, and nothing is shown to anonymous callers.
    let input = method_input(ONCALL, "tools/list");
    assert!(e.tool_visible(&input, "list_k8s_resources"));
    assert!(!e.tool_visible(&input, "apply_yaml"));
    assert!(!e.tool_visible(&input, "not_a_tool"));
    assert!(visible(("", &[])).is_empty());
}

// --- engine behaviour: fail closed, hot reload ----------------------------------------

fn copy_shipped() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(shipped_dir()).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    dir
}

fn dir_with_policy(rego: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        shipped_dir().join("catalogue.yaml"),
        dir.path().join("catalogue.yaml"),
    )
    .unwrap();
    std::fs::write(dir.path().join("p.rego"), rego).unwrap();
    dir
}

fn cfg(dir: &Path) -> PolicyConfig {
    PolicyConfig {
        dir: dir.to_path_buf(),
        ..PolicyConfig::default()
    }
}

#[test]
fn evaluation_errors_fail_closed() {
    // Two complete definitions that disagree: a runtime conflict error for tools/call.
    let dir = dir_with_policy(
        "package eks_mcp.gateway\n\
         decision := {\"allow\": true} if input.mcp.method == \"tools/call\"\n\
         decision := {\"allow\": false} if input.mcp.method == \"tools/call\"\n\
         decision := {\"allow\": true} if input.mcp.method == \"ping\"\n",
    );
    let e = PolicyEngine::load(&cfg(dir.path())).unwrap();
    allowed(&e.decide(&method_input(ALICE, "ping")));
    let d = call(
        &e,
        ALICE,
        "list_api_versions",
        json!({"cluster_name": "dev-1"}),
    );
    assert!(!d.allow && d.is_fail_closed(), "{d:?}");
    assert!(
        d.reasons[0].starts_with("policy evaluation failed"),
        "{d:?}"
    );
    assert_eq!(d.redact, vec!["baseline"]);
    // Undefined for this request.
    let d = e.decide(&method_input(ALICE, "initialize"));
    assert!(!d.allow && d.is_fail_closed());
    assert!(d.reasons[0].contains("undefined"), "{d:?}");
}

#[test]
fn ill_typed_decision_fails_closed() {
    let dir = dir_with_policy("package eks_mcp.gateway\ndecision := {\"allow\": \"yes\"}\n");
    let e = PolicyEngine::load(&cfg(dir.path())).unwrap();
    let d = e.decide(&method_input(ALICE, "ping"));
    assert!(!d.allow && d.is_fail_closed(), "{d:?}");
    assert!(d.reasons[0].contains("allow"), "{d:?}");
}

#[test]
fn runaway_policy_is_stopped_by_the_time_limit() {
    let dir = dir_with_policy(
        "package eks_mcp.gateway\n\
         decision := {\"allow\": true} if input.mcp.method == \"ping\"\n\
         decision := {\"allow\": n > 0} if {\n\
         \tinput.mcp.method == \"tools/call\"\n\
         \tn := count({x | some i in numbers.range(1, 5000); some j in numbers.range(1, 5000); x := i * j})\n\
         }\n",
    );
    let mut c = cfg(dir.path());
    c.eval_timeout = Duration::from_millis(20);
    let e = PolicyEngine::load(&c).unwrap();
    let d = call(
        &e,
        ALICE,
        "list_api_versions",
        json!({"cluster_name": "dev-1"}),
    );
    assert!(!d.allow && d.is_fail_closed(), "{d:?}");
}

#[test]
fn broken_policies_do_not_load_and_name_file_and_line() {
    let dir = dir_with_policy("package eks_mcp.gateway\n\ndecision := {\"allow\": true\n");
    let err = PolicyEngine::load(&cfg(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("p.rego:4"), "{err}");
    // An entrypoint no policy defines.
    let dir = dir_with_policy("package other\nx := 1\n");
    let err = PolicyEngine::load(&cfg(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("data.eks_mcp.gateway.decision"), "{err}");
    // Missing catalogue.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(
        empty.path().join("p.rego"),
        "package eks_mcp.gateway\ndecision := {\"allow\": true}\n",
    )
    .unwrap();
    let err = PolicyEngine::load(&cfg(empty.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("catalogue.yaml"), "{err}");
}

#[test]
fn eval_file_decides_a_json_input_document() {
    let input = serde_json::to_string(&call_input(
        &shipped(),
        ALICE,
        "read_k8s_resource",
        json!({"cluster_name": "dev-1", "kind": "Secret", "api_version": "v1", "name": "db", "namespace": "payments"}),
    ))
    .unwrap();
    let d = eval_file(&shipped_dir(), &input).unwrap();
    denied(&d, "secrets.read");
    assert!(eval_file(&shipped_dir(), "[1]").is_err());
}

#[test]
fn hot_reload_swaps_and_a_broken_file_keeps_the_old_policy() {
    let dir = copy_shipped();
    let handle = PolicyHandle::load(&cfg(dir.path())).unwrap();
    let read_web = |h: &PolicyHandle| {
        let e = h.current();
        call(
            &e,
            ALICE,
            "read_k8s_resource",
            json!({"cluster_name": "dev-1", "kind": "Pod", "api_version": "v1", "name": "p", "namespace": "web"}),
        )
    };
    denied(&read_web(&handle), "namespaces.not_allowed");
    let first = handle.current().revision().to_string();
    assert!(!handle.reload().unwrap(), "nothing changed");

    // A data change: payments-dev may now read `web`.
    let data_path = dir.path().join("data.yaml");
    let data = std::fs::read_to_string(&data_path).unwrap();
    let widened = data.replace(
        "namespaces: [\"payments\", \"payments-*\"]\n",
        "namespaces: [\"payments\", \"payments-*\", \"web\"]\n",
    );
    assert_ne!(widened, data);
    std::fs::write(&data_path, &widened).unwrap();
    let in_flight = handle.current(); // a request that started before the swap
    assert!(handle.reload().unwrap());
    allowed(&read_web(&handle));
    assert_ne!(handle.current().revision(), first);
    // The request in flight keeps deciding with the policy it started with.
    denied(
        &call(
            &in_flight,
            ALICE,
            "read_k8s_resource",
            json!({"cluster_name": "dev-1", "kind": "Pod", "api_version": "v1", "name": "p", "namespace": "web"}),
        ),
        "namespaces.not_allowed",
    );

    // A broken policy file: the old policy stays, the error names file and line.
    let second = handle.current().revision().to_string();
    std::fs::write(
        dir.path().join("oops.rego"),
        "package eks_mcp.gateway\n\nbroken := {\n",
    )
    .unwrap();
    let err = handle.reload().unwrap_err().to_string();
    assert!(err.contains("oops.rego:4"), "{err}");
    assert_eq!(handle.current().revision(), second);
    allowed(&read_web(&handle));
    let shown = handle.last_reload_error().expect("error kept for /readyz");
    assert!(shown.contains("oops.rego"), "{shown}");
    // Broken data is caught the same way.
    std::fs::remove_file(dir.path().join("oops.rego")).unwrap();
    std::fs::write(&data_path, "gateway:\n  groups: {a: 1}\n  groups: {b: 2}\n").unwrap();
    let err = handle.reload().unwrap_err().to_string();
    assert!(
        err.contains("data.yaml") && err.contains("duplicate"),
        "{err}"
    );
    assert_eq!(handle.current().revision(), second);
    // So is data that parses but fails the policy's own checks: a misspelled setting that
    // would otherwise be ignored (here, grants that would silently stop applying).
    std::fs::write(
        &data_path,
        widened.replace("      writes:\n", "      write:\n"),
    )
    .unwrap();
    let err = handle.reload().unwrap_err().to_string();
    assert!(
        err.contains("data.yaml: the policy data fails its checks")
            && err.contains("data.gateway.groups.payments-dev.write is not a setting"),
        "{err}"
    );
    assert_eq!(handle.current().revision(), second);
    allowed(&read_web(&handle));
    let shown = handle.last_reload_error().expect("error kept for /readyz");
    assert!(
        shown.contains("groups.payments-dev.write is not a setting"),
        "{shown}"
    );

    // Fixing it clears the error.
    std::fs::write(&data_path, &widened).unwrap();
    assert!(
        !handle.reload().unwrap(),
        "same files as the policy in force"
    );
    assert!(handle.last_reload_error().is_none());
}

#[tokio::test]
async fn watcher_picks_up_changes() {
    let dir = copy_shipped();
    let handle = Arc::new(PolicyHandle::load(&cfg(dir.path())).unwrap());
    let first = handle.current().revision().to_string();
    let task = handle.spawn_watcher(Duration::from_millis(20));
    let data_path = dir.path().join("data.yaml");
    let data = std::fs::read_to_string(&data_path).unwrap();
    std::fs::write(
        &data_path,
        data.replace("default_groups: []", "default_groups: [readers]"),
    )
    .unwrap();
    let mut swapped = false;
    for _ in 0..500 {
        if handle.current().revision() != first {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    assert!(swapped, "the watcher did not reload the changed data");
    let e = handle.current();
    allowed(&call(
        &e,
        NOBODY,
        "read_k8s_resource",
        json!({"cluster_name": "dev-1", "kind": "Pod", "api_version": "v1", "name": "p", "namespace": "web"}),
    ));
}

/// Through the running gateway in front of the embedded upstream: denied calls come back as
/// tool errors carrying the policy's reasons and never reach the upstream.
mod e2e {
    use serde_json::{Value, json};

    use crate::harness::{Harness, Options};

    async fn as_principal(id: &str, groups: &[&str]) -> Harness {
        Harness::start_with(Options::default().principal(id, groups)).await
    }

    const THREE_DOCS: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n\
        apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n---\n\
        apiVersion: v1\nkind: Secret\nmetadata: {name: c}\nstringData: {password: hunter2}\n";

    /// A denial is a complete `CallToolResult` in either era: in 2026-07-28 it names its
    /// `resultType`, which that era's clients require (the Python `mcp` 2.3.0 client rejects
    /// the result without it).
    #[tokio::test]
    async fn denied_tool_results_carry_the_eras_result_type() {
        let h = as_principal("alice", &["payments-dev"]).await;
        let secret = json!({"name": "read_k8s_resource", "arguments": {"cluster_name": "dev",
            "kind": "Secret", "api_version": "v1", "name": "payments-db-credentials",
            "namespace": "payments"}});
        let c = h.client();
        let stateless = c.stateless("tools/call", secret.clone()).await;
        assert_eq!(
            stateless.result()["isError"],
            true,
            "{:?}",
            stateless.messages
        );
        assert_eq!(stateless.result()["resultType"], "complete");
        let mut c = h.client();
        c.initialize().await;
        let session = c.request("tools/call", secret).await;
        assert_eq!(session.result()["isError"], true);
        assert!(session.result().get("resultType").is_none());
        h.stop().await;
    }

    #[tokio::test]
    async fn denied_calls_are_tool_errors_and_never_reach_the_upstream() {
        let h = as_principal("alice", &["payments-dev"]).await;
        let mut c = h.client();
        c.initialize().await;
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "read_k8s_resource",
                json!({"cluster_name": "dev", "kind": "Secret", "api_version": "v1",
                       "name": "payments-db-credentials", "namespace": "payments"}),
                "Secret contents never leave the cluster",
            ),
            (
                "read_k8s_resource",
                json!({"cluster_name": "dev", "kind": "secret", "api_version": "v1",
                       "name": "payments-db-credentials", "namespace": "payments"}),
                "Secret contents never leave the cluster",
            ),
            (
                "apply_yaml",
                json!({"cluster_name": "dev", "namespace": "payments", "yaml_content": THREE_DOCS}),
                "yaml_content[2]",
            ),
            (
                "apply_yaml",
                json!({"cluster_name": "dev", "namespace": "payments", "yaml_content":
                       "kind: List\nitems:\n- {apiVersion: v1, kind: SECRET, metadata: {name: s}}\n"}),
                "items[0]",
            ),
            (
                "manage_k8s_resource",
                json!({"operation": "create", "cluster_name": "dev", "kind": "ConfigMap",
                       "api_version": "v1", "name": "x",
                       "body": {"metadata": {"name": "x", "namespace": "kube-system"}}}),
                "namespace kube-system on cluster dev is read-only",
            ),
            (
                "list_k8s_resources",
                json!({"cluster_name": "dev", "kind": "Pod", "api_version": "v1"}),
                "reaches all namespaces",
            ),
            (
                "manage_k8s_resource",
                json!({"operation": "DeLeTe", "cluster_name": "dev", "kind": "ConfigMap",
                       "api_version": "v1", "name": "checkout-config", "namespace": "checkout"}),
                "namespace checkout on cluster dev is read-only",
            ),
            (
                "manage_k8s_resource",
                json!({"operation": "patch", "cluster_name": "prod", "kind": "Deployment",
                       "api_version": "apps/v1", "name": "payments-api", "namespace": "payments",
                       "body": {"spec": {"replicas": 0}}}),
                "ask for a break-glass grant",
            ),
            (
                "exec_in_pod",
                json!({"cluster_name": "dev"}),
                "unknown tools are denied",
            ),
            (
                "add_inline_policy",
                json!({"policy_name": "p", "role_name": "eks-dev-node-role",
                       "permissions": {"Effect": "Allow", "Action": "*", "Resource": "*"}}),
                "off unless granted",
            ),
        ];
        for (tool, args, expect) in cases {
            let r = c.call_tool(tool, args).await;
            assert!(r.is_tool_error(), "{tool} should be denied: {}", r.text());
            assert!(r.tool_text().contains(expect), "{tool}: {}", r.tool_text());
        }
        // The same bytes with an escaped tool name are the same tool.
        let raw = br#"{"jsonrpc":"2.0","id":900,"method":"tools/call","params":{"name":"read\u005fk8s\u005fresource","arguments":{"cluster_name":"dev","kind":"Secret","api_version":"v1","name":"payments-db-credentials","namespace":"payments"}}}"#;
        let r = c.post_raw(&raw[..], &[]).await;
        assert!(r.is_tool_error(), "{}", r.text());
        assert!(
            h.sim.tool_calls().is_empty(),
            "the upstream received denied calls: {:?}",
            h.sim.tool_calls()
        );

        // Allowed calls do reach it.
        let ok = c
            .call_tool(
                "list_k8s_resources",
                json!({"cluster_name": "dev", "kind": "Pod", "api_version": "v1", "namespace": "payments"}),
            )
            .await;
        assert!(!ok.is_tool_error(), "{}", ok.text());
        assert_eq!(h.sim.tool_calls().len(), 1);
        h.stop().await;
    }

    #[tokio::test]
    async fn tools_list_is_filtered_per_principal() {
        let names = |r: &crate::harness::Reply| -> Vec<String> {
            r.result()["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_string())
                .collect()
        };
        let h = as_principal("sam", &["sre-oncall"]).await;
        let mut c = h.client();
        c.initialize().await;
        let listed = names(&c.request("tools/list", json!({})).await);
        assert!(
            listed.contains(&"list_k8s_resources".to_string()),
            "{listed:?}"
        );
        assert!(
            listed.contains(&"manage_k8s_resource".to_string()),
            "{listed:?}"
        );
        assert!(!listed.contains(&"apply_yaml".to_string()), "{listed:?}");
        assert!(
            !listed.contains(&"add_inline_policy".to_string()),
            "{listed:?}"
        );
        h.stop().await;

        let h = as_principal("ada", &["platform-admins"]).await;
        let c = h.client();
        let listed = names(&c.stateless("tools/list", json!({})).await);
        assert_eq!(listed.len(), 20, "{listed:?}");
        h.stop().await;
    }

    #[tokio::test]
    async fn a_denied_non_tool_method_is_a_json_rpc_error_with_an_application_code() {
        // A copy of the shipped policies whose data refuses resources/read.
        let dir = super::copy_shipped();
        let data = std::fs::read_to_string(dir.path().join("data.yaml")).unwrap();
        let refusing = data.replace("denied: []", "denied: [\"resources/read\"]");
        assert_ne!(refusing, data);
        std::fs::write(dir.path().join("data.yaml"), refusing).unwrap();
        let opts = Options {
            policy_dir: dir.path().to_path_buf(),
            ..Options::default().principal("alice", &["payments-dev"])
        };
        let h = Harness::start_with(opts).await;
        let mut c = h.client();
        c.initialize().await;
        let r = c
            .request("resources/read", json!({"uri": "eks://dev/anything"}))
            .await;
        let err = r.error();
        assert_eq!(
            err["code"],
            eks_mcp_gateway::jsonrpc::POLICY_DENIED,
            "{err}"
        );
        assert_eq!(err["data"]["source"], "policy", "{err}");
        assert!(
            h.sim
                .received()
                .iter()
                .all(|r| r.rpc_method.as_deref() != Some("resources/read")),
            "a denied resources/read reached the upstream"
        );
        assert!(
            err["message"].as_str().unwrap().contains("resources/read"),
            "{err}"
        );
        h.stop().await;
    }
}

/// The allow-all policy directory the load bench takes through `LOAD_POLICY_DIR` (to measure
/// the relay without the shipped policies) loads, allows what the shipped policies deny, hides
/// no tool, and still redacts with the baseline profile.
#[tokio::test]
async fn the_load_benchs_allow_all_policy_directory_works() {
    use crate::harness::{Harness, Options};
    let h = Harness::start_with(Options {
        policy_dir: crate::harness::repo_root().join("benches/policies-allow-all"),
        ..Options::default().principal("load@example.com", &[])
    })
    .await;
    let c = h.client();
    let tools = c.stateless("tools/list", json!({})).await;
    assert_eq!(tools.result()["tools"].as_array().unwrap().len(), 20);
    let r = c
        .stateless_call(
            "get_pod_logs",
            json!({"cluster_name": "prod", "namespace": "payments", "pod_name": eks_mcp_gateway::sim::CRASHLOOP_POD}),
        )
        .await;
    assert!(!r.is_tool_error(), "{}", r.text());
    assert!(r.tool_text().contains("[REDACTED:"), "{}", r.tool_text());
    assert!(!r.text().contains(eks_mcp_gateway::sim::planted::PASSWORD));
    assert_eq!(h.sim.tool_calls().len(), 1);
    let records = h.audit_records(2).await;
    let call = records
        .iter()
        .find(|r| r["method"] == "tools/call")
        .unwrap();
    assert_eq!(
        call["decision"]["rules"],
        json!(["bench.allow_all"]),
        "{call}"
    );
    h.stop().await;
}
