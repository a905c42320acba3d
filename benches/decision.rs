//! One policy decision with the shipped policies, input construction included (classify the
//! call, build the input document, evaluate, read the decision); `tool_visible` for a whole
//! tools/list; the fixed part of a decision (a constant policy); and how decisions grow with
//! the size of the policy data (100 teams, 1,000 namespace grants). It also prints each
//! shipped case's bytecode instruction count.
//!
//! Run: `cargo bench --bench decision`. The per-request budget is p50 < 25 µs.
//! `DECISION_POLICY_DIR` benches another policy directory; `DECISION_PROFILE_LOOP` (below)
//! runs decisions in a loop for an instruction-level profiler.
use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};
use eks_mcp_gateway::config::{PolicyConfig, PolicyMode};
use eks_mcp_gateway::identity::{AuthKind, Principal};
use eks_mcp_gateway::policy::{
    ClientInfo, Decision, Era, GatewayFacts, McpFacts, PolicyEngine, PolicyInput,
};
use serde_json::{Value, json};

/// The allocator the gateway binary runs with (src/main.rs), so the numbers are the shipped ones.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn shipped_dir() -> PathBuf {
    // DECISION_POLICY_DIR measures another policy directory (e.g. while tuning rules).
    match std::env::var_os("DECISION_POLICY_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
    }
}

fn load(dir: &Path) -> PolicyEngine {
    let cfg = PolicyConfig {
        dir: dir.to_path_buf(),
        ..PolicyConfig::default()
    };
    PolicyEngine::load(&cfg).expect("policies load")
}

/// Everything the pipeline does per tools/call from parsed arguments to a decision.
fn decide(e: &PolicyEngine, id: &str, group: &str, tool: &str, args: &Value) -> Decision {
    e.decide(&input(e, id, group, tool, args))
}

/// The input document the pipeline builds for a tools/call.
fn input(e: &PolicyEngine, id: &str, group: &str, tool: &str, args: &Value) -> PolicyInput {
    let (tool, target) = e.catalogue().classify(tool, args);
    PolicyInput {
        principal: Principal {
            id: id.to_string(),
            groups: vec![group.to_string()],
            auth: AuthKind::Jwt,
            claims: Default::default(),
        },
        client: ClientInfo {
            name: Some("bench".into()),
            version: Some("1".into()),
        },
        mcp: McpFacts {
            method: "tools/call".into(),
            protocol_version: Some("2025-11-25".into()),
            era: Era::Session,
        },
        tool: Some(tool),
        target,
        gateway: GatewayFacts {
            mode: PolicyMode::Enforce,
            upstream: "https://eks-mcp.us-west-2.api.aws/mcp".into(),
        },
    }
}

fn read_args(ns: &str) -> Value {
    json!({"cluster_name": "dev-1", "kind": "Deployment", "api_version": "apps/v1",
           "name": "api", "namespace": ns})
}

fn write_args(ns: &str) -> Value {
    json!({"operation": "patch", "cluster_name": "dev-1", "kind": "Deployment",
           "api_version": "apps/v1", "name": "api", "namespace": ns,
           "body": {"spec": {"replicas": 3}}})
}

const MANIFEST: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  template:
    spec:
      containers:
      - name: app
        image: public.ecr.aws/nginx/nginx:1.27
---
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  ports: [{port: 80}]
";

/// `DECISION_PROFILE_LOOP=N [DECISION_PROFILE_CASE=read|write|denied]`: make N decisions and
/// exit, for an instruction-level profiler (e.g. `valgrind --tool=callgrind`), whose counts,
/// unlike wall time on a shared machine, are repeatable. No evaluation time limit applies,
/// because a profiler slows evaluation down by fifty times.
fn profile_loop(n: usize) -> ! {
    let e = PolicyEngine::load(&PolicyConfig {
        dir: shipped_dir(),
        eval_timeout: std::time::Duration::ZERO,
        ..PolicyConfig::default()
    })
    .expect("policies load");
    let (tool, args) = match std::env::var("DECISION_PROFILE_CASE").as_deref() {
        Ok("write") => ("manage_k8s_resource", write_args("payments")),
        Ok("denied") => ("read_k8s_resource", read_args("kube-system")),
        _ => ("read_k8s_resource", read_args("payments")),
    };
    for _ in 0..n {
        black_box(decide(&e, "alice", "payments-dev", tool, black_box(&args)));
    }
    std::process::exit(0)
}

fn shipped_policies(c: &mut Criterion) {
    if let Ok(n) = std::env::var("DECISION_PROFILE_LOOP") {
        profile_loop(n.parse().expect("DECISION_PROFILE_LOOP is a count"));
    }
    let e = load(&shipped_dir());
    // The bytecode instruction count of each case: repeatable where wall time is not.
    for (case, tool, args) in [
        (
            "read_k8s_resource",
            "read_k8s_resource",
            read_args("payments"),
        ),
        (
            "manage_k8s_resource_patch",
            "manage_k8s_resource",
            write_args("payments"),
        ),
        (
            "read_k8s_resource_denied",
            "read_k8s_resource",
            read_args("kube-system"),
        ),
    ] {
        let cost = e.cost(&input(&e, "alice", "payments-dev", tool, &args));
        println!("decision/shipped/{case}: {cost:?} VM instructions");
    }
    let mut g = c.benchmark_group("decision/shipped");
    let read = read_args("payments");
    assert!(decide(&e, "alice", "payments-dev", "read_k8s_resource", &read).allow);
    g.bench_function("read_k8s_resource", |b| {
        b.iter(|| {
            decide(
                &e,
                "alice",
                "payments-dev",
                "read_k8s_resource",
                black_box(&read),
            )
        })
    });
    let write = write_args("payments");
    assert!(decide(&e, "alice", "payments-dev", "manage_k8s_resource", &write).allow);
    g.bench_function("manage_k8s_resource_patch", |b| {
        b.iter(|| {
            decide(
                &e,
                "alice",
                "payments-dev",
                "manage_k8s_resource",
                black_box(&write),
            )
        })
    });
    let denied = read_args("kube-system");
    assert!(!decide(&e, "alice", "payments-dev", "read_k8s_resource", &denied).allow);
    g.bench_function("read_k8s_resource_denied", |b| {
        b.iter(|| {
            decide(
                &e,
                "alice",
                "payments-dev",
                "read_k8s_resource",
                black_box(&denied),
            )
        })
    });
    let apply = json!({"cluster_name": "dev-1", "namespace": "payments", "yaml_content": MANIFEST});
    assert!(decide(&e, "alice", "payments-dev", "apply_yaml", &apply).allow);
    g.bench_function("apply_yaml_two_documents", |b| {
        b.iter(|| decide(&e, "alice", "payments-dev", "apply_yaml", black_box(&apply)))
    });
    // tools/list filtering: one `tool_visible` evaluation per catalogue tool.
    let names: Vec<&str> = e.catalogue().tool_names().collect();
    let mut list = input(&e, "alice", "payments-dev", "read_k8s_resource", &read);
    list.mcp.method = "tools/list".into();
    list.tool = None;
    g.bench_function(
        format!("tools_list_visibility_{}_tools", names.len()),
        |b| b.iter(|| e.visible_tools(black_box(&list), names.iter().copied())),
    );
    g.finish();
}

/// The fixed part of a decision: the same input built, evaluated and read back, with a
/// policy whose decision is a constant (the shipped catalogue and data, no rules to run).
fn fixed_cost(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        shipped_dir().join("catalogue.yaml"),
        dir.path().join("catalogue.yaml"),
    )
    .expect("copy catalogue");
    std::fs::write(
        dir.path().join("constant.rego"),
        "package eks_mcp.gateway\n\ndecision := {\"allow\": true, \"reasons\": [], \"redact\": [\"baseline\"], \"rules\": [], \"role\": null}\n",
    )
    .expect("write policy");
    let e = load(dir.path());
    let read = read_args("payments");
    assert!(decide(&e, "alice", "payments-dev", "read_k8s_resource", &read).allow);
    c.bench_function("decision/fixed_cost/read_k8s_resource", |b| {
        b.iter(|| {
            decide(
                &e,
                "alice",
                "payments-dev",
                "read_k8s_resource",
                black_box(&read),
            )
        })
    });
}

/// The shipped rules with generated data: `teams` groups, `grants` namespace grants spread
/// evenly over them.
fn generated_dir(teams: usize, grants: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(shipped_dir()).expect("policies dir") {
        let p = entry.expect("entry").path();
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.ends_with(".rego") && !name.ends_with("_test.rego") || name == "catalogue.yaml" {
            std::fs::copy(&p, dir.path().join(&name)).expect("copy");
        }
    }
    let text = std::fs::read_to_string(shipped_dir().join("data.yaml")).expect("data.yaml");
    let mut data: Value = serde_yaml::from_str(&text).expect("data.yaml parses");
    let gw = data["gateway"].as_object_mut().expect("gateway");
    // Each team's namespace write grants sit under its group, as in the shipped data.
    let per_team = grants.div_ceil(teams.max(1));
    let mut groups = serde_json::Map::new();
    for t in 0..teams {
        let writes: Vec<Value> = (t * per_team..((t + 1) * per_team).min(grants))
            .map(|i| {
                json!({"id": format!("g{i}"), "clusters": ["dev-*", "staging-*"],
                       "namespaces": [format!("team-{t}-svc-{}", i % per_team)]})
            })
            .collect();
        groups.insert(
            format!("team-{t}"),
            json!({"clusters": ["dev-*", "staging-*", "prod-*"],
                   "namespaces": [format!("team-{t}-*")], "writes": writes}),
        );
    }
    gw.insert("groups".into(), Value::Object(groups));
    std::fs::write(
        dir.path().join("data.json"),
        serde_json::to_string(&data).expect("json"),
    )
    .expect("write data.json");
    dir
}

fn data_growth(c: &mut Criterion) {
    let mut g = c.benchmark_group("decision/data_size");
    for (teams, grants) in [(10, 100), (100, 1000)] {
        let dir = generated_dir(teams, grants);
        let e = load(dir.path());
        let team = teams / 2;
        let group = format!("team-{team}");
        let read = read_args(&format!("team-{team}-svc-3"));
        assert!(decide(&e, "u", &group, "read_k8s_resource", &read).allow);
        g.bench_function(format!("read/{teams}_teams_{grants}_grants"), |b| {
            b.iter(|| decide(&e, "u", &group, "read_k8s_resource", black_box(&read)))
        });
        let write = write_args(&format!("team-{team}-svc-3"));
        assert!(decide(&e, "u", &group, "manage_k8s_resource", &write).allow);
        g.bench_function(format!("write/{teams}_teams_{grants}_grants"), |b| {
            b.iter(|| decide(&e, "u", &group, "manage_k8s_resource", black_box(&write)))
        });
    }
    g.finish();
}

criterion_group!(benches, shipped_policies, fixed_cost, data_growth);
criterion_main!(benches);
