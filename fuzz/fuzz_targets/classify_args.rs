//! classify on arbitrary tool arguments (`Catalogue::classify_within`), for every tool of the
//! shipped catalogue and for unknown names. Input: the tool name, a newline, the arguments
//! as JSON (any JSON: non-objects are a case too).
//!
//! Invariants, beyond "no panic":
//! - the tool is `known` exactly when the catalogue names it, and an unknown tool has access
//!   `unknown` and no target facts;
//! - unless the facts carry a `parse_error` (which the policy denies), every cluster,
//!   namespace, object name, kind and api version in them is one Kubernetes and EKS accept
//!   (no `..` segment, `/`, `%`, whitespace, over-long label: issue 17's path traversal), and
//!   every resource's `object` index points into `objects`;
//! - classify is a function of its input: the same call classifies the same way twice.
#![no_main]
use eks_mcp_gateway::classify::names::{
    api_version_problem, cluster_problem, kind_problem, namespace_problem, object_name_problem,
};
use eks_mcp_gateway::classify::{Access, TargetFacts};
use eks_mcp_gateway::jsonrpc::parse_value;
use eks_mcp_gateway::manifest::ManifestLimits;
use eks_mcp_gateway_fuzz::catalogue;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let cat = catalogue();
    // `<tool name>\n<arguments JSON>`, as the seeds spell a `tools/call`.
    let (name, json) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b""[..], data),
    };
    let Ok(name) = std::str::from_utf8(name) else {
        return;
    };
    let Ok(args) = parse_value(json) else {
        return;
    };
    // Small limits as well as the defaults, so the limit paths are reached too.
    let limits = ManifestLimits {
        max_depth: 16,
        max_documents: 8,
        max_values: 2_000,
        max_objects: 16,
    };
    let (tool, target) = cat.classify_within(name, &args, &limits);
    assert_eq!(tool.known, cat.known(name));
    if !tool.known {
        assert_eq!(tool.access, Access::Unknown);
        assert!(target.resources.is_empty() && target.parse_error.is_none());
    }
    if target.parse_error.is_none() {
        names_are_kubernetes_names(&target);
    }
    let (tool2, target2) = cat.classify_within(name, &args, &limits);
    assert_eq!(
        serde_json::to_value(&tool).unwrap(),
        serde_json::to_value(&tool2).unwrap()
    );
    assert_eq!(
        serde_json::to_value(&target).unwrap(),
        serde_json::to_value(&target2).unwrap()
    );
    let _: Value = serde_json::to_value(cat.classify(name, &args).1).unwrap();
});

fn names_are_kubernetes_names(t: &TargetFacts) {
    let ok = |what: &str, v: &str, problem: Option<&str>| {
        assert!(
            problem.is_none(),
            "{what} {v:?} reached the policy: {problem:?}"
        );
    };
    if let Some(cl) = &t.cluster {
        ok("cluster", cl, cluster_problem(cl));
    }
    for ns in &t.namespaces {
        ok("namespace", ns, namespace_problem(ns));
    }
    for r in &t.resources {
        if let Some(ns) = &r.namespace {
            ok("namespace", ns, namespace_problem(ns));
        }
        if let Some(n) = &r.name {
            ok("name", n, object_name_problem(n));
        }
        if let Some(k) = &r.kind_given {
            ok("kind", k, kind_problem(k));
        }
        if let Some(v) = &r.api_version {
            ok("api version", v, api_version_problem(v));
        }
        if let Some(i) = r.object {
            assert!(
                i < t.objects.len(),
                "object index {i} of {}",
                t.objects.len()
            );
        }
    }
}
