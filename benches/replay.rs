//! `policy replay` throughput: audit records replayed per second on one core (one thread),
//! against the shipped policies, compared with the recorded decisions. Each batch is a
//! slice of a team gateway's day, written as the gateway writes records (decided by the
//! same policies): five principals in four teams listing, reading, patching, reading logs
//! and Secrets, listing across namespaces, applying two-document manifests, and the
//! non-tool methods around them.
//!
//! Two mixes: `day_mix` repeats calls the way real traffic does (the same caller listing the
//! same namespace; the replay's decision cache answers repeats), `all_distinct` gives every
//! record its own object name so every record is a full evaluation (the worst case).
//! Target: a million records in under a minute (16,700 records/s).
//!
//! Run: `cargo bench --bench replay`; criterion prints the throughput in elements
//! (records) per second.
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use eks_mcp_gateway::audit::{AuditRecord, RequestOutcome};
use eks_mcp_gateway::config::{PolicyConfig, PolicyMode};
use eks_mcp_gateway::identity::{AuthKind, Principal};
use eks_mcp_gateway::policy::{
    ClientInfo, Era, GatewayFacts, McpFacts, PolicyEngine, PolicyInput, Replayer, replay_bytes,
};
use serde_json::{Value, json};

/// The allocator the gateway binary runs with (src/main.rs), as in benches/decision.rs.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Records per measured batch.
const BATCH: usize = 2_000;

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

const WHO: [(&str, &str, &str); 5] = [
    ("alice", "payments-dev", "payments"),
    ("wendy", "web-dev", "web"),
    ("rita", "readers", "checkout"),
    ("root", "platform-admins", "kube-system"),
    ("sam", "sre-oncall", "monitoring"),
];

/// One request of the day: (method, tool and arguments).
fn call(i: usize, ns: &str, name: &str) -> (&'static str, Option<(&'static str, Value)>) {
    let cluster = ["dev", "dev-1", "staging", "prod"][i % 4];
    match i % 10 {
        0 => ("tools/list", None),
        1 | 2 => (
            "tools/call",
            Some((
                "list_k8s_resources",
                json!({"cluster_name": cluster, "kind": "Pod", "api_version": "v1", "namespace": ns}),
            )),
        ),
        3 => (
            "tools/call",
            Some((
                "read_k8s_resource",
                json!({"cluster_name": cluster, "kind": "Deployment", "api_version": "apps/v1",
                       "namespace": ns, "name": name}),
            )),
        ),
        4 => (
            "tools/call",
            Some((
                "manage_k8s_resource",
                json!({"operation": "patch", "cluster_name": cluster, "kind": "Deployment",
                       "api_version": "apps/v1", "namespace": ns, "name": name,
                       "body": {"spec": {"replicas": 3}}}),
            )),
        ),
        5 => (
            "tools/call",
            Some((
                "get_pod_logs",
                json!({"cluster_name": cluster, "namespace": ns, "pod_name": name}),
            )),
        ),
        6 => (
            "tools/call",
            Some((
                "read_k8s_resource",
                json!({"cluster_name": cluster, "kind": "Secret", "api_version": "v1",
                       "namespace": ns, "name": name}),
            )),
        ),
        7 => (
            "tools/call",
            Some((
                "list_k8s_resources",
                json!({"cluster_name": cluster, "kind": "Deployment", "api_version": "apps/v1"}),
            )),
        ),
        8 => (
            "tools/call",
            Some((
                "apply_yaml",
                json!({"cluster_name": cluster, "namespace": ns, "yaml_content": format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}-cfg}}\ndata: {{a: b}}\n---\n\
                     apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  template:\n    spec:\n      containers:\n      - name: app\n        image: public.ecr.aws/nginx/nginx:1.27\n")}),
            )),
        ),
        _ => ("ping", None),
    }
}

/// `n` audit lines, decided by `engine` and written as the gateway writes them.
fn day(engine: &PolicyEngine, n: usize, distinct: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 900);
    for i in 0..n {
        let (id, group, ns) = WHO[(i / 10) % WHO.len()];
        let name = if distinct {
            format!("api-{i}")
        } else {
            format!("api-{}", i % 7)
        };
        let (method, tool) = call(i, ns, &name);
        let (tool, target) = match &tool {
            Some((t, args)) => {
                let (t, target) = engine.catalogue().classify(t, args);
                (Some(t), target)
            }
            None => (None, Default::default()),
        };
        let input = PolicyInput {
            principal: Principal {
                id: format!("{id}@example.com"),
                groups: vec![group.to_string()],
                auth: AuthKind::Jwt,
                claims: Default::default(),
            },
            client: ClientInfo {
                name: Some("claude-code".into()),
                version: Some("2.1.0".into()),
            },
            mcp: McpFacts {
                method: method.to_string(),
                protocol_version: Some("2025-11-25".into()),
                era: Era::Session,
            },
            tool,
            target,
            gateway: GatewayFacts {
                mode: PolicyMode::Enforce,
                upstream: "https://eks-mcp.us-west-2.api.aws/mcp".into(),
            },
        };
        let decision = engine.decide(&input);
        let arguments = input
            .tool
            .as_ref()
            .map(|t| (t.arguments.clone(), Vec::new()));
        let outcome = RequestOutcome {
            input: &input,
            decision: &decision,
            mode: PolicyMode::Enforce,
            started: Instant::now(),
            arguments: arguments.as_ref(),
            redactions: &[],
            upstream_status: decision.allow.then_some(200),
            upstream_latency: None,
            error: None,
            session_id: Some("session-1"),
            approval: None,
        };
        let rec = AuditRecord::from_outcome(&outcome, engine.revision());
        serde_json::to_writer(&mut out, &rec).expect("record serialises");
        out.push(b'\n');
    }
    out
}

fn bench(c: &mut Criterion) {
    let dir = shipped_dir();
    let engine = PolicyEngine::load(&PolicyConfig {
        dir: dir.clone(),
        ..PolicyConfig::default()
    })
    .expect("policies load");
    let mut group = c.benchmark_group("replay");
    group.sample_size(10);
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, distinct) in [("day_mix", false), ("all_distinct", true)] {
        let lines = day(&engine, BATCH, distinct);
        // Every record reproduces its recorded decision (the bench measures real work).
        let mut check = Replayer::load(&dir, None).expect("replayer");
        let report = replay_bytes(&mut check, name, &lines[..]);
        assert_eq!(report.replayed, BATCH as u64, "{name}");
        assert_eq!(report.unchanged, BATCH as u64, "{name}");
        group.bench_function(name, |b| {
            b.iter_batched(
                // A fresh replayer (and decision cache) per batch, loaded outside the timing.
                || Replayer::load(&dir, None).expect("replayer"),
                |mut r| black_box(replay_bytes(&mut r, name, &lines[..]).replayed),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
