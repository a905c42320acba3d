//! The shipped policies under OPA itself (OPA 1.20.2, the Go engine, through the pinned
//! `opa-golib-python-bindings` that `scripts/setup-interop` installs into `.cache/venv-opa`;
//! the driver is `scripts/interop/opa_eval.py`).
//!
//! The README says the policies are Rego v1 that OPA accepts. Two tests hold it to that:
//! every `test_*` rule passes under OPA as it does under the gateway's runner (regorus), and a
//! differential run: a few thousand seeded, generated requests (every method, every catalogue
//! tool with random arguments and manifests, random principals and groups, both eras, both
//! policy modes, over the shipped data and a variant that turns on the settings the shipped data
//! leaves empty) get the same decision document from the gateway's engine and from OPA, and the
//! same `tool_visible` answers. A difference is a bug in an engine or in the policy:
//! docs/policy.md lists what was found.
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use eks_mcp_gateway::classify::{Catalogue, TargetFacts, parse_manifest};
use eks_mcp_gateway::config::{PolicyConfig, PolicyMode};
use eks_mcp_gateway::identity::{AuthKind, Principal};
use eks_mcp_gateway::policy::{
    ClientInfo, Decision, Era, GatewayFacts, McpFacts, PolicyEngine, PolicyInput, run_tests,
};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const ENTRYPOINT: &str = "data.eks_mcp.gateway.decision";
const VISIBILITY: &str = "data.eks_mcp.gateway.tool_visible";
/// Generated requests per data document (two documents).
const CASES: usize = 1600;
const SEED: u64 = 0x0e4a_2026_1218;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped_dir() -> PathBuf {
    repo().join("policies")
}

/// The OPA driver: the venv's Python and the script.
fn opa_command(args: &[&str]) -> Command {
    let python = repo().join(".cache/venv-opa/bin/python");
    assert!(
        python.exists(),
        "OPA bindings missing: {}; run scripts/setup-interop (installs the pinned OPA engine into .cache/venv-opa)",
        python.display()
    );
    let mut cmd = Command::new(python);
    cmd.arg(repo().join("scripts/interop/opa_eval.py"))
        .args(args)
        .stderr(Stdio::inherit());
    cmd
}

/// The data document of a policy directory as the gateway reads it (its own YAML reader), in a
/// JSON file both engines load.
fn data_json(data: &Value, dir: &Path) -> PathBuf {
    let path = dir.join("opa-data.json");
    std::fs::write(&path, data.to_string()).expect("write data JSON");
    path
}

fn shipped_data() -> Value {
    let text = std::fs::read_to_string(shipped_dir().join("data.yaml")).expect("data.yaml");
    parse_manifest(&text).expect("data.yaml parses").remove(0)
}

#[test]
fn every_rego_unit_test_passes_under_opa() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = data_json(&shipped_data(), dir.path());
    let out = opa_command(&[
        "tests",
        shipped_dir().to_str().expect("utf-8 path"),
        data.to_str().expect("utf-8 path"),
    ])
    .output()
    .expect("run the OPA driver");
    assert!(out.status.success(), "OPA driver failed: {out:?}");
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let (summary, results) = lines.split_last().expect("a summary line");

    // The test rules, counted from the files here (a line starting `test_`, as `opa fmt`
    // writes rules), each once per package.
    let mut declared = BTreeSet::new();
    for entry in std::fs::read_dir(shipped_dir()).expect("policies") {
        let path = entry.expect("entry").path();
        if !path.to_string_lossy().ends_with("_test.rego") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let package = text
            .lines()
            .find_map(|l| l.strip_prefix("package "))
            .expect("package")
            .trim()
            .to_string();
        for line in text.lines().filter(|l| l.starts_with("test_")) {
            let rule: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            declared.insert(format!("data.{package}.{rule}"));
        }
    }
    let failed: Vec<&Value> = results.iter().filter(|r| r["passed"] != true).collect();
    let ran: BTreeSet<String> = results
        .iter()
        .map(|r| r["name"].as_str().expect("name").to_string())
        .collect();
    // What OPA itself finds defined under each test package: with every test passing, the
    // test_* keys of the package documents are every test rule OPA compiled.
    let mut defined = BTreeSet::new();
    for (package, rules) in summary["package_tests"].as_object().expect("package_tests") {
        for rule in rules.as_array().expect("rules") {
            defined.insert(format!("data.{package}.{}", rule.as_str().expect("rule")));
        }
    }
    let regorus = run_tests(&shipped_dir());
    // The runner also checks decision fixtures (policies/fixtures); the Rego test rules are
    // the results from *_test.rego files.
    let regorus_rules = regorus
        .results
        .iter()
        .filter(|r| r.file.to_string_lossy().ends_with("_test.rego"))
        .count();
    println!(
        "OPA 1.20.2: {} of {} Rego unit tests passed ({} test rules declared in policies/*_test.rego, {} run under regorus)",
        ran.len() - failed.len(),
        ran.len(),
        declared.len(),
        regorus_rules,
    );
    assert!(failed.is_empty(), "tests failing under OPA: {failed:#?}");
    assert_eq!(ran, declared, "OPA ran exactly the declared test rules");
    assert_eq!(
        defined, declared,
        "OPA's package documents hold exactly the declared test rules"
    );
    assert!(regorus.success(), "the regorus runner passes too");
    assert_eq!(regorus_rules, declared.len());
    assert!(
        declared.len() >= 80,
        "{} test rules: the shipped suite is larger",
        declared.len()
    );
}

/// The shipped data with the settings it leaves empty turned on: denied methods, default
/// groups, a principal's own entry with grants (the paths where only a grant opens a cluster
/// or namespace), signing roles per access class, an AWS grant to a principal.
fn variant_data() -> Value {
    let mut data = shipped_data();
    let g = &mut data["gateway"];
    g["methods"]["denied"] = json!(["resources/read", "prompts/*"]);
    g["default_groups"] = json!(["everyone"]);
    g["groups"]["everyone"] =
        json!({"clusters": ["sandbox-*"], "namespaces": ["public", "docs-?"]});
    g["principals"] = json!({
        "carol": {"writes": [{"clusters": ["dev-*"], "namespaces": ["tools", "ops-*"], "operations": ["apply", "create"]}]},
        "dora": {"clusters": ["team-*"], "namespaces": ["*"], "cluster_wide_read": true,
                 "writes": [{"clusters": ["team-prod"], "namespaces": ["*"], "cluster_scoped": true}]}
    });
    g["groups"]["payments-dev"]["writes"]
        .as_array_mut()
        .expect("payments-dev writes")
        .push(json!({"clusters": ["sandbox-?"], "namespaces": ["*-batch"], "cluster_scoped": true, "operations": ["delete", "patch"]}));
    g["signing_roles"] = json!({"write": "writer", "sensitive": "log-reader"});
    g["aws_grants"]
        .as_array_mut()
        .expect("aws_grants")
        .push(json!({
            "tools": ["add_inline_policy", "manage_eks_stacks"], "principals": ["dora"],
            "roles": ["team-*"], "clusters": ["team-*"]
        }));
    g["break_glass_groups"] = json!(["sre-breakglass", "incident"]);
    data
}

/// A policy directory with the shipped rules and catalogue and the given data.
fn policy_dir_with(data: &Value, dir: &Path) -> PathBuf {
    let out = dir.join("policies");
    std::fs::create_dir_all(&out).expect("mkdir");
    for entry in std::fs::read_dir(shipped_dir()).expect("policies") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        if (name.ends_with(".rego") && !name.ends_with("_test.rego")) || name == "catalogue.yaml" {
            std::fs::copy(&path, out.join(&name)).expect("copy");
        }
    }
    std::fs::write(out.join("data.json"), data.to_string()).expect("data.json");
    out
}

/// One generated request: its input document and, when the gateway could build it, the typed
/// input (the few deliberately malformed documents have none).
struct Case {
    doc: Value,
    typed: Option<PolicyInput>,
}

const PRINCIPALS: &[&str] = &[
    "alice", "webby", "ada", "sam", "bob", "rita", "carol", "dora", "user-17", "",
];
const GROUPS: &[&str] = &[
    "platform-admins",
    "sre-oncall",
    "sre-breakglass",
    "payments-dev",
    "web-dev",
    "readers",
    "everyone",
    "incident",
    "unknown-team",
    "",
];
const METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "prompts/list",
    "prompts/get",
    "notifications/initialized",
    "notifications/cancelled",
    "server/discover",
    "stream/get",
    "session/delete",
    "client/response",
    "completion/complete",
    "subscriptions/listen",
    "tasks/get",
    "logging/setLevel",
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
    "",
    "Tools/Call",
    "resources/*",
];
const CLUSTERS: &[&str] = &[
    "dev",
    "dev-1",
    "sandbox-3",
    "sandbox-12",
    "staging",
    "staging-eu",
    "stg-2",
    "qa-staging",
    "prod",
    "prod-eu-1",
    "team-prod",
    "team-dev",
    "elsewhere",
    "",
    "dev-*",
    "DEV-1",
];
const NAMESPACES: &[&str] = &[
    "payments",
    "payments-api",
    "payments-batch",
    "web",
    "web-blue",
    "frontend",
    "tools",
    "ops-a",
    "public",
    "docs-1",
    "kube-system",
    "default",
    "",
    "*",
];
const KINDS: &[&str] = &[
    "Pod",
    "pods",
    "Deployment",
    "deploy",
    "Secret",
    "secrets",
    "SECRET",
    "secret",
    "ConfigMap",
    "cm",
    "Namespace",
    "ns",
    "ClusterRole",
    "Node",
    "CronJob",
    "Job",
    "StatefulSet",
    "DaemonSet",
    "PodTemplate",
    "ReplicationController",
    "Widget",
    "SecretList",
    "",
];
const OPERATIONS: &[&str] = &[
    "create", "replace", "patch", "delete", "read", "get", "CREATE", "Delete", "list", "apply",
    "deploy", "describe", "generate", "", "explode",
];
const IMAGES: &[&str] = &[
    "nginx:1.27",
    "public.ecr.aws/nginx/nginx:1.27",
    "123456789012.dkr.ecr.us-west-2.amazonaws.com/app:1",
    "registry.k8s.io/pause:3.9",
    "ghcr.io/org/app@sha256:0123",
    "evil.example.com/x:1",
    "localhost:5000/app",
    "GHCR.IO/org/app",
    "docker.io/library/busybox",
    "",
];

fn pick<'a, T: ?Sized>(rng: &mut StdRng, items: &'a [&'a T]) -> &'a T {
    items.choose(rng).expect("non-empty")
}

/// A string argument, sometimes absent, null, or of the wrong type.
fn arg(rng: &mut StdRng, items: &[&str]) -> Option<Value> {
    match rng.random_range(0..20) {
        0..=2 => None,
        3 => Some(Value::Null),
        4 => Some(json!(rng.random_range(0..100))),
        _ => Some(Value::from(pick(rng, items))),
    }
}

/// A truthy or falsy value as YAML may spell it.
fn flag(rng: &mut StdRng) -> Value {
    [
        json!(true),
        json!(false),
        json!("yes"),
        json!("On"),
        json!("TRUE"),
        json!("no"),
        json!("y"),
        json!(1),
        Value::Null,
    ]
    .choose(rng)
    .expect("non-empty")
    .clone()
}

fn container(rng: &mut StdRng, n: usize) -> Value {
    let mut c = json!({"name": format!("c{n}"), "image": pick(rng, IMAGES)});
    if rng.random_bool(0.1) {
        c.as_object_mut().expect("object").remove("image");
    }
    if rng.random_bool(0.3) {
        c["securityContext"] = json!({"privileged": flag(rng)});
    }
    if rng.random_bool(0.3) {
        let caps: Vec<Value> = (0..rng.random_range(0..3))
            .map(|_| {
                [
                    json!("NET_ADMIN"),
                    json!("CHOWN"),
                    json!("cap_sys_admin"),
                    json!("CAP_KILL"),
                    json!("net_bind_service"),
                    json!(7),
                ]
                .choose(rng)
                .expect("non-empty")
                .clone()
            })
            .collect();
        c["securityContext"]["capabilities"] = json!({"add": caps});
    }
    if rng.random_bool(0.3) {
        let port = [
            json!(80),
            json!(0),
            json!("8080"),
            json!(1.5),
            json!(70000),
            json!(-1),
            json!(9007199254740993u64),
            Value::Null,
        ]
        .choose(rng)
        .expect("non-empty")
        .clone();
        c["ports"] = json!([{"containerPort": 80, "hostPort": port}]);
    }
    c
}

fn pod_spec(rng: &mut StdRng) -> Value {
    let mut spec = json!({"containers": (0..rng.random_range(0..3)).map(|i| container(rng, i)).collect::<Vec<_>>()});
    for key in ["initContainers", "ephemeralContainers"] {
        if rng.random_bool(0.15) {
            spec[key] = json!([container(rng, 9)]);
        }
    }
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        if rng.random_bool(0.1) {
            spec[key] = flag(rng);
        }
    }
    if rng.random_bool(0.2) {
        spec["volumes"] = json!([
            {"name": "data", "emptyDir": {}},
            if rng.random_bool(0.5) { json!({"name": "host", "hostPath": {"path": "/"}}) } else { json!("not-an-object") }
        ]);
    }
    spec
}

/// One Kubernetes object of a random kind, with a pod template where the kind has one.
fn object(rng: &mut StdRng, depth: usize) -> Value {
    let kind = pick(rng, KINDS);
    let mut obj = json!({"apiVersion": if rng.random_bool(0.5) { "v1" } else { "apps/v1" }, "kind": kind,
                         "metadata": {"name": format!("o{}", rng.random_range(0..9))}});
    if rng.random_bool(0.6) {
        obj["metadata"]["namespace"] = Value::from(pick(rng, NAMESPACES));
    }
    let spec = pod_spec(rng);
    match kind {
        "Pod" | "pods" => obj["spec"] = spec,
        "Deployment" | "deploy" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicationController" => {
            obj["spec"] = json!({"template": {"spec": spec}})
        }
        "PodTemplate" => obj["template"] = json!({"spec": spec}),
        "CronJob" => obj["spec"] = json!({"jobTemplate": {"spec": {"template": {"spec": spec}}}}),
        "Secret" | "secret" | "secrets" | "SECRET" => obj["data"] = json!({"k": "c2VjcmV0"}),
        "SecretList" if depth < 2 => {
            obj["items"] = json!([{"metadata": {"name": "s"}}, object(rng, depth + 1)])
        }
        _ => {}
    }
    if depth < 2 && rng.random_bool(0.05) {
        obj = json!({"apiVersion": "v1", "kind": "List", "items": [object(rng, depth + 1), object(rng, depth + 1)]});
    }
    obj
}

/// A manifest of one to three documents, written as YAML (block or flow style), sometimes with
/// YAML 1.1 booleans spelled out, sometimes broken.
fn manifest(rng: &mut StdRng) -> Value {
    if rng.random_bool(0.05) {
        return Value::from("kind: [unclosed\n");
    }
    let docs: Vec<String> = (0..rng.random_range(1..4))
        .map(|_| {
            let obj = object(rng, 0);
            if rng.random_bool(0.5) {
                serde_yaml::to_string(&obj).expect("YAML")
            } else {
                obj.to_string()
            }
        })
        .collect();
    let mut text = docs.join("\n---\n");
    if rng.random_bool(0.1) {
        text.push_str("\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: yes\n  containers:\n  - name: a\n    image: nginx\n    securityContext: {privileged: on}\n");
    }
    Value::from(text)
}

/// Arguments for a tool: the keys the catalogue reads, each present or not, of the right type or
/// not.
fn arguments(rng: &mut StdRng) -> Value {
    let mut args = serde_json::Map::new();
    let strings: [(&str, &[&str]); 9] = [
        ("cluster_name", CLUSTERS),
        ("namespace", NAMESPACES),
        ("kind", KINDS),
        (
            "api_version",
            &["v1", "apps/v1", "batch/v1", "rbac.authorization.k8s.io/v1"],
        ),
        ("name", &["api", "db-credentials", "x"]),
        ("operation", OPERATIONS),
        ("pod_name", &["web-7d9f", "api-0"]),
        ("role_name", &["eks-node", "team-app", "admin", "eks-*"]),
        ("resource_name", &["my-cluster", "nodegroup-1"]),
    ];
    for (key, values) in strings {
        if let Some(v) = arg(rng, values) {
            args.insert(key.to_string(), v);
        }
    }
    if rng.random_bool(0.4) {
        let body = if rng.random_bool(0.9) {
            object(rng, 0)
        } else {
            json!("not an object")
        };
        args.insert("body".into(), body);
    }
    if rng.random_bool(0.4) {
        let key = pick(rng, &["yaml_content", "manifest", "yaml"]);
        args.insert(key.into(), manifest(rng));
    }
    if rng.random_bool(0.05) {
        args.insert("yaml_path".into(), json!("/tmp/x.yaml"));
    }
    if rng.random_bool(0.2) {
        args.insert("query".into(), json!("how do I rotate secrets"));
    }
    Value::Object(args)
}

fn input_for(rng: &mut StdRng, catalogue: &Catalogue, tools: &[String]) -> PolicyInput {
    let id = pick(rng, PRINCIPALS).to_string();
    let groups: Vec<String> = (0..rng.random_range(0..3))
        .map(|_| pick(rng, GROUPS).to_string())
        .collect();
    let era = if rng.random_bool(0.5) {
        Era::Session
    } else {
        Era::Stateless
    };
    let protocol_version = match era {
        Era::Session => ["2025-03-26", "2025-06-18", "2025-11-25"]
            .choose(rng)
            .map(|v| v.to_string()),
        Era::Stateless => Some("2026-07-28".to_string()),
    };
    let method = if rng.random_bool(0.75) {
        "tools/call"
    } else {
        pick(rng, METHODS)
    };
    let (tool, target) = if method == "tools/call" && rng.random_bool(0.98) {
        let name = if rng.random_bool(0.95) {
            tools.choose(rng).expect("tools").clone()
        } else {
            pick(rng, &["no_such_tool", "Apply_Yaml", ""]).to_string()
        };
        let args = match rng.random_range(0..40) {
            0 => Value::Null,
            1 => json!(["not", "an", "object"]),
            _ => arguments(rng),
        };
        let (t, target) = catalogue.classify(&name, &args);
        (Some(t), target)
    } else {
        (None, TargetFacts::default())
    };
    let mut claims = serde_json::Map::new();
    if rng.random_bool(0.3) {
        claims.insert("email".into(), json!(format!("{id}@example.com")));
    }
    PolicyInput {
        principal: Principal {
            id,
            groups,
            auth: *[AuthKind::Jwt, AuthKind::ApiKey, AuthKind::Static]
                .choose(rng)
                .expect("non-empty"),
            claims,
        },
        client: ClientInfo {
            name: rng.random_bool(0.7).then(|| "claude-code".to_string()),
            version: rng.random_bool(0.7).then(|| "2.1.0".to_string()),
        },
        mcp: McpFacts {
            method: method.to_string(),
            protocol_version,
            era,
        },
        tool,
        target,
        gateway: GatewayFacts {
            mode: if rng.random_bool(0.8) {
                PolicyMode::Enforce
            } else {
                PolicyMode::DryRun
            },
            upstream: "https://eks-mcp.us-west-2.api.aws/mcp".to_string(),
        },
    }
}

/// A document the gateway never builds: a field removed or of another type, to compare the two
/// engines where the policy's guards (`is_string`, `is_object`) decide.
fn malformed(rng: &mut StdRng, mut doc: Value) -> Value {
    let paths: &[&[&str]] = &[
        &["principal", "id"],
        &["principal", "groups"],
        &["tool"],
        &["tool", "access"],
        &["tool", "known"],
        &["tool", "name"],
        &["target", "parse_error"],
        &["tool", "operation"],
        &["target", "cluster"],
        &["target", "namespaces"],
        &["target", "resources"],
        &["target", "objects"],
        &["mcp", "method"],
    ];
    let path = paths.choose(rng).expect("non-empty");
    let replacement = [
        None,
        Some(Value::Null),
        Some(json!(42)),
        Some(json!("x")),
        Some(json!({})),
        Some(json!([])),
    ]
    .choose(rng)
    .expect("non-empty")
    .clone();
    let (last, parents) = path.split_last().expect("path");
    let mut node = &mut doc;
    for key in parents {
        node = &mut node[*key];
    }
    if let Value::Object(map) = node {
        match replacement {
            None => {
                map.remove(*last);
            }
            Some(v) => {
                map.insert(last.to_string(), v);
            }
        }
    }
    doc
}

fn generate(seed: u64, catalogue: &Catalogue, count: usize) -> Vec<Case> {
    let mut rng = StdRng::seed_from_u64(seed);
    let tools: Vec<String> = catalogue.tool_names().map(str::to_string).collect();
    (0..count)
        .map(|_| {
            let input = input_for(&mut rng, catalogue, &tools);
            let doc = serde_json::to_value(&input).expect("input serialises");
            if rng.random_bool(0.05) {
                Case {
                    doc: malformed(&mut rng, doc),
                    typed: None,
                }
            } else {
                Case {
                    doc,
                    typed: Some(input),
                }
            }
        })
        .collect()
}

/// The entrypoint's value under OPA for each document, in order.
fn opa_values(dir: &Path, data: &Path, entrypoint: &str, docs: &[Value]) -> Vec<Value> {
    let mut child = opa_command(&[
        "decide",
        dir.to_str().expect("utf-8 path"),
        data.to_str().expect("utf-8 path"),
        entrypoint,
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .expect("start the OPA driver");
    let mut stdin = child.stdin.take().expect("stdin");
    let lines: String = docs.iter().map(|d| format!("{d}\n")).collect();
    let writer = std::thread::spawn(move || stdin.write_all(lines.as_bytes()));
    let out = child.wait_with_output().expect("OPA driver output");
    writer.join().expect("writer").expect("write inputs");
    assert!(out.status.success(), "OPA driver failed: {:?}", out.status);
    let values: Vec<Value> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(values.len(), docs.len(), "one OPA answer per input");
    values
}

/// The gateway engine's answer in the driver's shape: `{"value": v}`, `{"undefined": true}` or
/// `{"error": ...}` (error texts differ between engines; only the kind is compared).
fn outcome(result: Result<Option<Value>, String>) -> Value {
    match result {
        Ok(Some(v)) => json!({"value": v}),
        Ok(None) => json!({"undefined": true}),
        Err(e) => json!({"error": e}),
    }
}

fn same_outcome(a: &Value, b: &Value) -> bool {
    match (a.get("error"), b.get("error")) {
        (Some(_), Some(_)) => true,
        (None, None) => a == b,
        _ => false,
    }
}

/// The two ways the engines differ on documents the gateway never builds (a field of the wrong
/// type), as docs/policy.md describes them; `None` for any other difference.
fn known_divergence(ours: &Value, opa: &Value) -> Option<&'static str> {
    // A built-in given an operand of the wrong type (`count(42)`): OPA stops with
    // eval_type_error (the gateway would fail closed), regorus, with strict built-in errors off
    // as the gateway runs it, reads the call as undefined and goes on.
    if ours.get("value").is_some()
        && opa["error"]
            .as_str()
            .is_some_and(|e| e.contains("eval_type_error"))
    {
        return Some("built-in type error");
    }
    // sprintf's %s given a non-string: OPA prints Go's `%!s(int64=42)`, regorus the value.
    let without_reasons = |v: &Value| {
        let mut v = v["value"].clone();
        v.as_object_mut().map(|o| o.remove("reasons"));
        v
    };
    if ours.get("value").is_some()
        && opa.get("value").is_some()
        && without_reasons(ours) == without_reasons(opa)
        && opa["value"]["reasons"].to_string().contains("%!s(")
    {
        return Some("sprintf %s of a non-string");
    }
    None
}

#[derive(Default)]
struct Tally {
    cases: usize,
    malformed: usize,
    allowed: usize,
    denied: usize,
    undefined_or_error: usize,
    rules: BTreeMap<String, usize>,
    roles: usize,
    secret_values: usize,
    known: BTreeMap<&'static str, usize>,
    differences: Vec<String>,
}

fn compare(engine: &PolicyEngine, dir: &Path, data: &Path, cases: &[Case], tally: &mut Tally) {
    let docs: Vec<Value> = cases.iter().map(|c| c.doc.clone()).collect();
    let opa = opa_values(dir, data, ENTRYPOINT, &docs);
    for (case, opa) in cases.iter().zip(&opa) {
        tally.cases += 1;
        tally.malformed += usize::from(case.typed.is_none());
        let ours = outcome(engine.decision_document(case.doc.clone()));
        if !same_outcome(&ours, opa) {
            if case.typed.is_none()
                && let Some(kind) = known_divergence(&ours, opa)
            {
                *tally.known.entry(kind).or_default() += 1;
                continue;
            }
            tally.differences.push(format!(
                "input {}\n  regorus: {ours}\n  OPA:     {opa}",
                case.doc
            ));
            continue;
        }
        let Some(value) = opa.get("value") else {
            tally.undefined_or_error += 1;
            continue;
        };
        let from_opa = Decision::from_document(value);
        if let Some(input) = &case.typed {
            // The request path (typed input straight into the engine) decides as OPA does.
            let decided = engine.decide(input);
            if from_opa.as_ref() != Ok(&decided) {
                tally.differences.push(format!(
                    "input {}\n  gateway decision: {decided:?}\n  from OPA's value: {from_opa:?}",
                    case.doc
                ));
                continue;
            }
        }
        let Ok(d) = from_opa else { continue };
        if d.allow {
            tally.allowed += 1;
        } else {
            tally.denied += 1;
        }
        for r in &d.rules {
            *tally.rules.entry(r.clone()).or_default() += 1;
        }
        tally.roles += usize::from(d.role.is_some());
        tally.secret_values += usize::from(d.redact.iter().any(|p| p == "secret_values"));
    }
}

/// `tool_visible` for every catalogue tool (and an unknown one) for a spread of callers: the
/// probe document the gateway builds for tools/list filtering, answered by OPA and compared with
/// the gateway's own filter.
fn compare_visibility(
    engine: &PolicyEngine,
    dir: &Path,
    data: &Path,
    rng: &mut StdRng,
    tally: &mut Tally,
) -> usize {
    let catalogue = engine.catalogue();
    let names: Vec<String> = catalogue
        .tool_names()
        .map(str::to_string)
        .chain(["no_such_tool".to_string()])
        .collect();
    let tools: Vec<String> = catalogue.tool_names().map(str::to_string).collect();
    let mut docs = Vec::new();
    let mut expected = Vec::new();
    for _ in 0..60 {
        let mut input = input_for(rng, catalogue, &tools);
        input.mcp.method = "tools/list".into();
        input.tool = None;
        input.target = TargetFacts::default();
        let visible = engine.visible_tools(&input, names.iter().map(String::as_str));
        for (name, visible) in names.iter().zip(visible) {
            let mut doc = serde_json::to_value(&input).expect("input");
            doc["tool"] = serde_json::to_value(catalogue.probe(name)).expect("probe");
            docs.push(doc);
            expected.push(visible);
        }
    }
    let opa = opa_values(dir, data, VISIBILITY, &docs);
    let mut shown = 0;
    for ((doc, ours), theirs) in docs.iter().zip(expected).zip(opa) {
        // An undefined tool_visible hides the tool, as the gateway reads it.
        let theirs_visible = theirs.get("value") == Some(&Value::Bool(true));
        if ours != theirs_visible || theirs.get("error").is_some() {
            tally.differences.push(format!(
                "tool_visible for {doc}\n  gateway: {ours}\n  OPA:     {theirs}"
            ));
        }
        shown += usize::from(ours);
    }
    assert!(
        shown > 0 && shown < docs.len(),
        "visibility varies: {shown} of {}",
        docs.len()
    );
    docs.len()
}

#[test]
fn regorus_and_opa_decide_generated_requests_alike() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut tally = Tally::default();
    let mut visibility = 0;
    let mut rng = StdRng::seed_from_u64(SEED ^ 0x7001);
    for (i, (label, data)) in [("shipped", shipped_data()), ("variant", variant_data())]
        .into_iter()
        .enumerate()
    {
        let root = tmp.path().join(label);
        let dir = policy_dir_with(&data, &root);
        let data = data_json(&data, &root);
        let engine = PolicyEngine::load(&PolicyConfig {
            dir: dir.clone(),
            ..PolicyConfig::default()
        })
        .unwrap_or_else(|e| panic!("{label} data loads: {e}"));
        let cases = generate(SEED + i as u64, engine.catalogue(), CASES);
        compare(&engine, &dir, &data, &cases, &mut tally);
        visibility += compare_visibility(&engine, &dir, &data, &mut rng, &mut tally);
    }
    println!(
        "OPA 1.20.2 vs regorus: {} generated requests (seed {SEED:#x}; {} of them malformed on purpose), {} tool_visible probes; {} differences",
        tally.cases,
        tally.malformed,
        visibility,
        tally.differences.len(),
    );
    println!(
        "  decisions: {} allowed, {} denied, {} undefined or errors on both, {} with a signing role, {} with secret_values redaction; {} distinct rules fired",
        tally.allowed,
        tally.denied,
        tally.undefined_or_error,
        tally.roles,
        tally.secret_values,
        tally.rules.len(),
    );
    println!(
        "  documented engine differences on malformed documents: {:?}",
        tally.known
    );
    println!("  rules: {:?}", tally.rules);
    assert!(
        tally.differences.is_empty(),
        "{} of {} answers differ between regorus and OPA; the first ones:\n{}",
        tally.differences.len(),
        tally.cases + visibility,
        tally.differences[..tally.differences.len().min(5)].join("\n")
    );

    // The generator reaches every rule the decision can name.
    let mut declared = BTreeSet::new();
    for entry in std::fs::read_dir(shipped_dir()).expect("policies") {
        let path = entry.expect("entry").path();
        let name = path.to_string_lossy().to_string();
        if !name.ends_with(".rego") || name.ends_with("_test.rego") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        for part in text.split("\"rule\": \"").skip(1) {
            declared.insert(part.split('"').next().expect("rule id").to_string());
        }
    }
    let missing: Vec<&String> = declared
        .iter()
        .filter(|r| !tally.rules.contains_key(*r))
        .collect();
    assert!(
        missing.is_empty(),
        "rules the generated requests never fire: {missing:?}"
    );
    assert!(tally.allowed > 200 && tally.denied > 1000);
    assert!(tally.roles > 50 && tally.secret_values > 5);
}
