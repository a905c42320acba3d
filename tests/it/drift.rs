//! Catalogue drift through the running gateway: the embedded upstream's tools change while
//! the gateway runs (a tool added, one removed, a new argument, a changed annotation), the
//! upstream says so with `notifications/tools/list_changed`, and the gateway reports each
//! difference in `mcp_gateway_catalogue_drift`, on `/readyz` and through `catalogue diff`,
//! while every decision stays what the catalogue says (an unknown tool stays denied).
use std::time::Duration;

use http_body_util::BodyExt as _;
use serde_json::{Value, json};

use crate::harness::{Harness, Options, repo_root};

/// The four kinds of drift, applied to the upstream's current list.
fn drifted(mut tools: Vec<Value>) -> Vec<Value> {
    let at = |tools: &[Value], name: &str| {
        tools
            .iter()
            .position(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} is in the embedded upstream's list"))
    };
    let gone = at(&tools, "get_eks_vpc_config");
    tools.remove(gone);
    let list = at(&tools, "list_k8s_resources");
    tools[list]["inputSchema"]["properties"]["target_namespace"] =
        json!({"type": "string", "description": "Namespace to copy the listed objects into"});
    let events = at(&tools, "get_k8s_events");
    tools[events]["annotations"]["destructiveHint"] = json!(true);
    tools[events]["annotations"]["readOnlyHint"] = json!(false);
    tools.push(json!({
        "name": "scale_k8s_workload",
        "description": "Scale a Deployment or StatefulSet.",
        "inputSchema": {"type": "object", "properties": {
            "cluster_name": {"type": "string"}, "namespace": {"type": "string"},
            "name": {"type": "string"}, "replicas": {"type": "integer"}},
            "required": ["cluster_name", "namespace", "name", "replicas"]},
        "annotations": {"readOnlyHint": false, "destructiveHint": true}
    }));
    tools
}

const EXPECTED: &[(&str, &str)] = &[
    ("unknown_tool", "scale_k8s_workload"),
    ("missing_tool", "get_eks_vpc_config"),
    ("unmapped_argument", "list_k8s_resources"),
    ("annotation", "get_k8s_events"),
];

async fn readyz(h: &Harness) -> String {
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let r = http
        .request(
            http::Request::get(format!("http://{}/readyz", h.addr))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// Wait (bounded) until `/readyz` says something `pred` accepts.
async fn wait_readyz(h: &Harness, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let doc = readyz(h).await;
        if pred(&doc) {
            return doc;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waiting for /readyz to show {what}; it says {doc}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn drift_gauge(kind: &str, tool: &str) -> i64 {
    eks_mcp_gateway::metrics::global()
        .catalogue_drift
        .with_label_values(&[kind, tool])
        .get()
}

#[tokio::test]
async fn drift_of_every_kind_is_reported_while_decisions_stay_the_catalogues() {
    let h = Harness::start_with(Options {
        signing: false,
        ..Options::default()
            .principal("alice", &["payments-dev"])
            .tweak(|c| c.upstream.watch_tools = true)
    })
    .await;
    // At start the gateway reads the upstream's tools by itself: they match.
    wait_readyz(&h, "a clean catalogue check", |d| {
        d.contains("the upstream's tools match the catalogue")
    })
    .await;
    for (kind, tool) in EXPECTED {
        assert_eq!(
            drift_gauge(kind, tool),
            0,
            "{kind} {tool} before the change"
        );
    }

    // A session-era client holds the GET stream the upstream's notices arrive on.
    let mut c = h.client();
    c.initialize().await;
    let stream = c.open_stream().await;
    assert_eq!(stream.status(), http::StatusCode::OK);
    let relayed = tokio::spawn(async move {
        let mut body = stream.into_body();
        let mut seen = String::new();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen.push_str(&String::from_utf8_lossy(&data));
                if seen.contains("notifications/tools/list_changed") {
                    return seen;
                }
            }
        }
        seen
    });

    let original = h.sim.tools();
    h.sim.set_tools(drifted(original.clone()));
    let seen = tokio::time::timeout(Duration::from_secs(30), relayed)
        .await
        .expect("the notice reached the client")
        .unwrap();
    assert!(seen.contains("notifications/tools/list_changed"), "{seen}");
    // The notice made the gateway read the list again, before any client listed tools.
    let doc = wait_readyz(&h, "four differences", |d| d.contains("4 difference(s)")).await;
    for (kind, tool) in EXPECTED {
        assert!(
            doc.contains(&format!("{kind} {tool}")),
            "{kind} {tool}: {doc}"
        );
        assert_eq!(drift_gauge(kind, tool), 1, "{kind} {tool} in the metric");
    }
    assert!(
        h.sim
            .received()
            .iter()
            .filter(|r| r.rpc_method.as_deref() == Some("tools/list"))
            .count()
            >= 2,
        "the gateway listed the tools at start and after the notice"
    );

    // Decisions are the catalogue's: the new tool is unknown and denied before the upstream,
    // the tool with a new argument is decided as before (alice may list in payments, not in
    // kube-system), the one now marked destructive is still a read.
    let r = c
        .call_tool(
            "scale_k8s_workload",
            json!({"cluster_name": "dev", "namespace": "payments", "name": "api", "replicas": 0}),
        )
        .await;
    assert!(r.is_tool_error(), "{}", r.text());
    assert!(
        h.sim
            .tool_calls()
            .iter()
            .all(|(n, _)| n != "scale_k8s_workload")
    );
    let listed = c
        .call_tool(
            "list_k8s_resources",
            json!({"cluster_name": "dev", "kind": "Pod", "api_version": "v1",
                "namespace": "payments", "target_namespace": "kube-system"}),
        )
        .await;
    assert!(!listed.is_tool_error(), "{}", listed.text());
    let denied = c
        .call_tool(
            "list_k8s_resources",
            json!({"cluster_name": "dev", "kind": "Pod", "api_version": "v1", "namespace": "kube-system"}),
        )
        .await;
    assert!(denied.is_tool_error(), "{}", denied.text());
    let events = c
        .call_tool(
            "get_k8s_events",
            json!({"cluster_name": "dev", "kind": "Pod", "name": "x", "namespace": "payments"}),
        )
        .await;
    assert!(
        !events.tool_text().contains("denied"),
        "get_k8s_events stays a read for alice: {}",
        events.text()
    );

    // `catalogue diff` against the same upstream prints each difference and exits 1.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_eks-mcp-gateway"))
        .args([
            "catalogue",
            "diff",
            "--upstream",
            &h.sim.url(),
            "--policies",
        ])
        .arg(repo_root().join("policies"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("4 difference(s)"), "{stdout}");
    for (kind, tool) in EXPECTED {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(kind) && l.contains(tool)),
            "{kind} {tool}: {stdout}"
        );
    }

    // The upstream goes back to the catalogue's tools; with no stream open the notice waits,
    // but any client's tools/list through the gateway is seen too: the report clears.
    h.sim.set_tools(original);
    let listed = c.request("tools/list", json!({})).await;
    assert_eq!(listed.status, http::StatusCode::OK);
    wait_readyz(&h, "a clean catalogue check again", |d| {
        d.contains("the upstream's tools match the catalogue")
    })
    .await;
    for (kind, tool) in EXPECTED {
        assert_eq!(drift_gauge(kind, tool), 0, "{kind} {tool} after the fix");
    }
    h.stop().await;
}

/// A stateless `tools/call` of `list_k8s_resources` with extra headers.
async fn listed_with(
    c: &crate::harness::McpClient,
    args: Value,
    extra: &[(&str, &str)],
) -> crate::harness::Reply {
    c.stateless_with(
        "tools/call",
        json!({"name": "list_k8s_resources", "arguments": args}),
        extra,
    )
    .await
}

#[tokio::test]
async fn mirrored_parameter_headers_are_checked_once_the_schema_declares_them() {
    // The upstream's schema mirrors cluster_name and namespace into Mcp-Param-* headers,
    // which an upstream may read instead of the body.
    let mut tools = eks_mcp_gateway::sim::SimConfig::default();
    let h0 = Harness::start_with(Options {
        signing: false,
        ..Options::default()
    })
    .await;
    let mut list = h0.sim.tools();
    h0.stop().await;
    let at = list
        .iter()
        .position(|t| t["name"] == "list_k8s_resources")
        .unwrap();
    list[at]["inputSchema"]["properties"]["cluster_name"]["x-mcp-header"] = json!("Cluster");
    list[at]["inputSchema"]["properties"]["namespace"]["x-mcp-header"] = json!("Namespace");
    tools.tools = Some(list);
    let h = Harness::start_with(Options {
        signing: false,
        sim: tools,
        ..Options::default()
            .principal("alice", &["payments-dev"])
            .tweak(|c| c.upstream.watch_tools = true)
    })
    .await;
    wait_readyz(&h, "the upstream's tools read", |d| {
        d.contains("the upstream's tools match the catalogue")
    })
    .await;
    let c = h.client();
    let args =
        json!({"cluster_name": "dev", "kind": "Pod", "api_version": "v1", "namespace": "payments"});

    // Headers that say what the body says: decided on the body and forwarded.
    let ok = listed_with(
        &c,
        args.clone(),
        &[
            ("mcp-param-cluster", "dev"),
            ("mcp-param-namespace", "=?base64?cGF5bWVudHM=?="),
        ],
    )
    .await;
    assert_eq!(ok.status, http::StatusCode::OK, "{}", ok.text());
    assert!(!ok.is_tool_error(), "{}", ok.text());
    assert_eq!(h.sim.tool_calls().len(), 1);

    // A namespace header the policy never saw, a missing header, a header without its
    // argument: 400 with -32020, and the upstream receives nothing.
    for (what, args, extra) in [
        (
            "kube-system in the header",
            args.clone(),
            vec![
                ("mcp-param-cluster", "dev"),
                ("mcp-param-namespace", "kube-system"),
            ],
        ),
        (
            "no namespace header",
            args.clone(),
            vec![("mcp-param-cluster", "dev")],
        ),
        (
            "a header without its argument",
            json!({"cluster_name": "dev", "kind": "Pod", "api_version": "v1"}),
            vec![
                ("mcp-param-cluster", "dev"),
                ("mcp-param-namespace", "payments"),
            ],
        ),
    ] {
        let r = listed_with(&c, args, &extra).await;
        assert_eq!(
            r.status,
            http::StatusCode::BAD_REQUEST,
            "{what}: {}",
            r.text()
        );
        assert_eq!(
            r.response()["error"]["code"],
            json!(-32020),
            "{what}: {}",
            r.text()
        );
        assert!(
            r.text().contains("Mcp-Param-Namespace"),
            "{what}: {}",
            r.text()
        );
    }
    assert_eq!(
        h.sim.tool_calls().len(),
        1,
        "nothing mismatched was forwarded"
    );
    h.stop().await;
}
