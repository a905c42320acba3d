//! Traces reach a local OTLP/HTTP receiver with the MCP semantic-convention attributes and
//! parent links; `/metrics` output parses as the Prometheus text format and counters move.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use eks_mcp_gateway::config::TracingConfig;
use eks_mcp_gateway::{metrics, telemetry};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span as OtlpSpan;
use prost::Message;
use serde_json::json;

use crate::identity::serve;

/// A local OTLP/HTTP trace receiver that keeps every exported span.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<OtlpSpan>>>, Arc<Mutex<Vec<String>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let services = Arc::new(Mutex::new(Vec::new()));
    let (s, r) = (spans.clone(), services.clone());
    let addr = serve(move |req: Request<Incoming>| {
        let (s, r) = (s.clone(), r.clone());
        async move {
            let ok = req.method() == http::Method::POST
                && req.uri().path() == "/v1/traces"
                && req.headers()["content-type"] == "application/x-protobuf";
            if !ok {
                return Response::builder()
                    .status(404)
                    .body(Full::default())
                    .unwrap();
            }
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let export = ExportTraceServiceRequest::decode(body).unwrap();
            for rs in export.resource_spans {
                for kv in rs.resource.iter().flat_map(|r| r.attributes.iter()) {
                    if kv.key == "service.name"
                        && let Some(AnyValue::StringValue(v)) =
                            kv.value.as_ref().and_then(|v| v.value.clone())
                    {
                        r.lock().unwrap().push(v);
                    }
                }
                for ss in rs.scope_spans {
                    s.lock().unwrap().extend(ss.spans);
                }
            }
            Response::builder()
                .header("content-type", "application/x-protobuf")
                .body(Full::new(Bytes::new()))
                .unwrap()
        }
    })
    .await;
    (format!("http://{addr}"), spans, services)
}

fn attr(span: &OtlpSpan, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            AnyValue::BoolValue(b) => Some(b.to_string()),
            AnyValue::IntValue(i) => Some(i.to_string()),
            other => Some(format!("{other:?}")),
        })
}

fn find<'a>(spans: &'a [OtlpSpan], name: &str) -> &'a OtlpSpan {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no span {name:?} in {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

const META_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const META_SPAN: &str = "00f067aa0ba902b7";
const HEADER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const HEADER_SPAN: &str = "b7ad6b7169203331";

#[tokio::test]
async fn spans_reach_an_otlp_receiver_with_mcp_attributes_and_parents() {
    let (endpoint, received, services) = otlp_receiver().await;
    let cfg = TracingConfig {
        otlp_endpoint: Some(endpoint),
        service_name: "gateway-under-test".into(),
        log_format: "text".into(),
    };
    let provider = telemetry::tracer_provider(&cfg)
        .unwrap()
        .expect("exporting is configured");
    let dispatch = telemetry::dispatch(&cfg, Some(&provider)).unwrap();
    let _default = tracing::dispatcher::set_default(&dispatch);

    // A tool call whose _meta carries the caller's trace, with a different ambient trace
    // in the HTTP headers.
    let mut headers = HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{HEADER_TRACE}-{HEADER_SPAN}-01")
            .parse()
            .unwrap(),
    );
    let meta =
        json!({"traceparent": format!("00-{META_TRACE}-{META_SPAN}-01"), "progressToken": 1});
    let span = telemetry::request_span("tools/call", Some("get_pod_logs"), true, Some("7"));
    telemetry::set_parent_from(&span, &headers, Some(&meta));
    let mut upstream_headers = HeaderMap::new();
    let mut upstream_meta = serde_json::Map::new();
    {
        let _entered = span.enter();
        telemetry::record_protocol_version(&span, "2025-11-25");
        tracing::info_span!("decide").in_scope(|| {
            telemetry::record_decision(&span, "allow", &["read_only".into()], "rev-1");
        });
        tracing::info_span!("sign").in_scope(|| {});
        let up = telemetry::upstream_span("tools/call", Some("get_pod_logs"));
        telemetry::inject_headers(&up, &mut upstream_headers);
        telemetry::inject_meta(&up, &mut upstream_meta);
        drop(up);
    }
    drop(span);

    // A second request: no _meta, the header context is the parent.
    let span = telemetry::request_span("tools/list", None, false, Some("8"));
    telemetry::set_parent_from(&span, &headers, None);
    span.in_scope(|| {
        telemetry::record_error(
            &tracing::Span::current(),
            "-32603",
            Some(-32603),
            "upstream failed",
        );
    });
    drop(span);

    let flusher = provider.clone();
    tokio::task::spawn_blocking(move || flusher.force_flush())
        .await
        .unwrap()
        .unwrap();
    let spans = received.lock().unwrap().clone();
    assert_eq!(
        services.lock().unwrap().first().map(String::as_str),
        Some("gateway-under-test")
    );

    let server = find(&spans, "tools/call get_pod_logs");
    assert_eq!(server.kind, 2, "SERVER span");
    assert_eq!(
        hex::encode(&server.trace_id),
        META_TRACE,
        "the _meta context is the parent"
    );
    assert_eq!(hex::encode(&server.parent_span_id), META_SPAN);
    assert!(
        server
            .links
            .iter()
            .any(|l| hex::encode(&l.trace_id) == HEADER_TRACE
                && hex::encode(&l.span_id) == HEADER_SPAN),
        "the header context is linked"
    );
    assert_eq!(
        attr(server, "mcp.method.name").as_deref(),
        Some("tools/call")
    );
    assert_eq!(
        attr(server, "gen_ai.tool.name").as_deref(),
        Some("get_pod_logs")
    );
    assert_eq!(
        attr(server, "gen_ai.operation.name").as_deref(),
        Some("execute_tool")
    );
    assert_eq!(attr(server, "jsonrpc.request.id").as_deref(), Some("7"));
    assert_eq!(
        attr(server, "mcp.protocol.version").as_deref(),
        Some("2025-11-25")
    );
    assert_eq!(
        attr(server, "mcp_gateway.policy.decision").as_deref(),
        Some("allow")
    );
    assert_eq!(
        attr(server, "mcp_gateway.policy.revision").as_deref(),
        Some("rev-1")
    );

    for child in ["decide", "sign", "upstream tools/call get_pod_logs"] {
        let c = find(&spans, child);
        assert_eq!(
            c.trace_id, server.trace_id,
            "{child} is in the request's trace"
        );
        assert_eq!(
            c.parent_span_id, server.span_id,
            "{child} is a child of the request span"
        );
    }
    let upstream = find(&spans, "upstream tools/call get_pod_logs");
    assert_eq!(upstream.kind, 3, "CLIENT span");

    // What goes upstream continues the trace from the upstream span.
    let expected = format!("00-{META_TRACE}-{}-01", hex::encode(&upstream.span_id));
    assert_eq!(upstream_headers["traceparent"], expected.as_str());
    assert_eq!(upstream_meta["traceparent"], expected.as_str());

    let list = find(&spans, "tools/list");
    assert_eq!(hex::encode(&list.trace_id), HEADER_TRACE);
    assert_eq!(hex::encode(&list.parent_span_id), HEADER_SPAN);
    assert_eq!(attr(list, "error.type").as_deref(), Some("-32603"));
    assert_eq!(
        list.status.as_ref().map(|s| s.code),
        Some(2),
        "ERROR status"
    );
    assert!(attr(list, "gen_ai.tool.name").is_none());

    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn without_an_exporter_nothing_is_injected() {
    let cfg = TracingConfig {
        otlp_endpoint: None,
        service_name: "x".into(),
        log_format: "json".into(),
    };
    assert!(telemetry::tracer_provider(&cfg).unwrap().is_none());
    let dispatch = telemetry::dispatch(&cfg, None).unwrap();
    tracing::dispatcher::with_default(&dispatch, || {
        let span = telemetry::request_span("tools/call", Some("x"), false, None);
        let mut h = HeaderMap::new();
        telemetry::inject_headers(&span, &mut h);
        assert!(h.is_empty());
    });
    let bad = TracingConfig {
        log_format: "yaml".into(),
        ..cfg
    };
    assert!(
        telemetry::dispatch(&bad, None)
            .unwrap_err()
            .to_string()
            .contains("log_format")
    );
}

// ---------------------------------------------------------------------------------------
// Prometheus exposition

#[derive(Debug, Default)]
pub(crate) struct Family {
    kind: String,
    samples: Vec<(String, HashMap<String, String>, f64)>,
}

impl Family {
    /// Sum over every series (for a counter: all label combinations).
    pub(crate) fn total(&self) -> f64 {
        self.samples.iter().map(|s| s.2).sum()
    }
}

/// A strict reader of the Prometheus text exposition format (0.0.4): every sample belongs
/// to a family declared by `# TYPE`, names and labels are well formed, values are numbers,
/// histogram buckets are cumulative and end in `+Inf` equal to `_count`.
pub(crate) fn parse_exposition(text: &str) -> HashMap<String, Family> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut families: HashMap<String, Family> = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, val) = (parts.next().unwrap(), parts.next().unwrap(), parts.next());
            assert!(name_ok(name), "bad metric name in {line:?}");
            match kw {
                "HELP" => {}
                "TYPE" => {
                    let kind = val.unwrap().to_owned();
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"]
                            .contains(&kind.as_str()),
                        "{line}"
                    );
                    families.entry(name.to_owned()).or_default().kind = kind;
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, HashMap::new()),
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line:?}"));
                let mut labels = HashMap::new();
                let mut rest = body;
                while !rest.is_empty() {
                    let (k, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line:?}"));
                    assert!(name_ok(k), "bad label name in {line:?}");
                    let mut val = String::new();
                    let mut chars = after.char_indices();
                    let end = loop {
                        match chars.next() {
                            Some((_, '\\')) => match chars.next() {
                                Some((_, 'n')) => val.push('\n'),
                                Some((_, c)) => val.push(c),
                                None => panic!("{line:?}"),
                            },
                            Some((i, '"')) => break i,
                            Some((_, c)) => val.push(c),
                            None => panic!("unterminated label value in {line:?}"),
                        }
                    };
                    labels.insert(k.to_owned(), val);
                    rest = after[end + 1..].trim_start_matches(',');
                }
                (n, labels)
            }
        };
        assert!(name_ok(name), "bad sample name in {line:?}");
        let family = [
            name,
            name.strip_suffix("_bucket").unwrap_or(""),
            name.strip_suffix("_sum").unwrap_or(""),
            name.strip_suffix("_count").unwrap_or(""),
        ]
        .into_iter()
        .find(|f| !f.is_empty() && families.contains_key(*f))
        .unwrap_or_else(|| panic!("sample {name} has no # TYPE"));
        families
            .get_mut(family)
            .unwrap()
            .samples
            .push((name.to_owned(), labels, value));
    }
    for (name, f) in &families {
        if f.kind != "histogram" {
            continue;
        }
        let mut by_series: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
        let mut counts: HashMap<String, f64> = HashMap::new();
        for (sample, labels, v) in &f.samples {
            let mut key: Vec<_> = labels.iter().filter(|(k, _)| *k != "le").collect();
            key.sort();
            let key = format!("{key:?}");
            if sample.ends_with("_bucket") {
                let le = &labels["le"];
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                by_series.entry(key).or_default().push((le, *v));
            } else if sample.ends_with("_count") {
                counts.insert(key, *v);
            }
        }
        for (key, buckets) in by_series {
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{name} {key}"
            );
            let last = buckets.last().unwrap();
            assert!(last.0.is_infinite(), "{name} {key} lacks +Inf");
            assert_eq!(
                Some(&last.1),
                counts.get(&key),
                "{name} {key}: +Inf equals _count"
            );
        }
    }
    families
}

pub(crate) fn sample(
    families: &HashMap<String, Family>,
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    families
        .values()
        .flat_map(|f| f.samples.iter())
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.2)
        .unwrap_or(0.0)
}

/// A denied call of a tool the catalogue does not know moves each of its series by exactly
/// one. The test runs alone in a child process: the registry is process-wide, and with
/// `cargo test` other tests of this binary (an unknown tool is denied in several) would move
/// the same series at the same time.
#[tokio::test]
async fn metrics_render_as_prometheus_text_and_counters_move() {
    use crate::harness::{Harness, is_child, run_in_child};
    const NAME: &str = "telemetry::metrics_render_as_prometheus_text_and_counters_move";
    if !is_child(NAME) {
        return run_in_child(NAME, &[]).await;
    }
    let h = Harness::start().await;
    let labels = [
        ("method", "tools/call"),
        ("tool", "other"),
        ("decision", "deny"),
    ];
    let before = parse_exposition(&metrics::render());
    let r = h
        .client()
        .stateless_call("made-up-tool", json!({"cluster_name": "dev"}))
        .await;
    assert!(r.is_tool_error(), "{}", r.text());
    let rules: Vec<String> = serde_json::from_value(
        r.result()["_meta"]["io.github.eks-mcp-gateway/denial"]["rules"].clone(),
    )
    .unwrap();
    assert!(rules.contains(&"tools.unknown".to_owned()), "{rules:?}");
    h.stop().await;
    metrics::global().set_policy_revision("rev \"quoted\"\\");

    let after = parse_exposition(&metrics::render());
    let moved = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    assert_eq!(moved("mcp_gateway_requests_total", &labels), 1.0);
    assert_eq!(
        parse_total(&after, "mcp_gateway_requests_total")
            - parse_total(&before, "mcp_gateway_requests_total"),
        1.0,
        "one request, one count"
    );
    for rule in &rules {
        assert_eq!(
            moved("mcp_gateway_denials_total", &[("rule", rule)]),
            1.0,
            "{rule}"
        );
    }
    assert_eq!(
        parse_total(&after, "mcp_gateway_denials_total")
            - parse_total(&before, "mcp_gateway_denials_total"),
        rules.len() as f64
    );
    assert_eq!(
        moved(
            "mcp_server_operation_duration_seconds_count",
            &[("mcp_method_name", "tools/call"), ("error_type", "")]
        ),
        1.0
    );
    assert_eq!(moved("mcp_gateway_policy_eval_seconds_count", &[]), 1.0);
    assert_eq!(
        parse_total(&after, "mcp_gateway_upstream_responses_total"),
        parse_total(&before, "mcp_gateway_upstream_responses_total"),
        "a denied call never went upstream"
    );
    assert_eq!(
        sample(
            &after,
            "mcp_gateway_policy_revision_info",
            &[("revision", "rev \"quoted\"\\")]
        ),
        1.0
    );
    for family in [
        "mcp_gateway_requests_total",
        "mcp_gateway_policy_eval_seconds",
        "mcp_server_operation_duration_seconds",
        "mcp_gateway_policy_revision_info",
    ] {
        assert!(after.contains_key(family), "{family} is exported");
    }
    assert_eq!(after["mcp_gateway_policy_eval_seconds"].kind, "histogram");
    assert_eq!(after["mcp_gateway_requests_total"].kind, "counter");
    // The caller's tool name never becomes a label value.
    assert!(!metrics::render().contains("made-up"));
}

/// Sum of every series of a counter family.
pub(crate) fn parse_total(families: &HashMap<String, Family>, name: &str) -> f64 {
    families.get(name).map(|f| f.total()).unwrap_or(0.0)
}

#[tokio::test]
async fn gateway_requests_export_a_server_span_with_stage_children() {
    use crate::harness::Harness;

    let (endpoint, received, _) = otlp_receiver().await;
    let cfg = TracingConfig {
        otlp_endpoint: Some(endpoint),
        service_name: "gateway-e2e".into(),
        log_format: "text".into(),
    };
    let provider = telemetry::tracer_provider(&cfg).unwrap().unwrap();
    let dispatch = telemetry::dispatch(&cfg, Some(&provider)).unwrap();
    // This test's runtime is single-threaded, so the gateway's tasks run on this thread and
    // see this thread's subscriber.
    let _default = tracing::dispatcher::set_default(&dispatch);

    let h = Harness::start().await;
    let mut c = h.client();
    c.initialize().await;
    h.sim.clear_received();
    let args =
        json!({"cluster_name": "dev", "kind": "Pod", "api_version": "v1", "namespace": "payments"});
    let r = c
        .request(
            "tools/call",
            json!({"name": "list_k8s_resources", "arguments": args,
                   "_meta": {"traceparent": format!("00-{META_TRACE}-{META_SPAN}-01")}}),
        )
        .await;
    assert!(!r.is_tool_error(), "{}", r.text());
    // A denied call is traced too, without an upstream span.
    let denied = c
        .call_tool(
            "read_k8s_resource",
            json!({"cluster_name": "dev", "kind": "Secret", "api_version": "v1",
                   "namespace": "payments", "name": "payments-db-credentials"}),
        )
        .await;
    assert!(denied.is_tool_error());
    let upstream_saw = h
        .sim
        .received()
        .into_iter()
        .find(|r| r.tool.as_deref() == Some("list_k8s_resources"))
        .expect("the allowed call reached the upstream");
    h.stop().await;

    let flusher = provider.clone();
    tokio::task::spawn_blocking(move || flusher.force_flush())
        .await
        .unwrap()
        .unwrap();
    let spans = received.lock().unwrap().clone();

    let server = find(&spans, "tools/call list_k8s_resources");
    assert_eq!(server.kind, 2);
    assert_eq!(
        hex::encode(&server.trace_id),
        META_TRACE,
        "_meta.traceparent is the parent"
    );
    assert_eq!(hex::encode(&server.parent_span_id), META_SPAN);
    assert_eq!(
        attr(server, "mcp.method.name").as_deref(),
        Some("tools/call")
    );
    assert_eq!(
        attr(server, "gen_ai.tool.name").as_deref(),
        Some("list_k8s_resources")
    );
    assert!(attr(server, "jsonrpc.request.id").is_some());
    assert_eq!(
        attr(server, "mcp_gateway.policy.decision").as_deref(),
        Some("allow")
    );

    let children: Vec<&OtlpSpan> = spans
        .iter()
        .filter(|s| s.parent_span_id == server.span_id)
        .collect();
    let names: Vec<&str> = children.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"decide"), "{names:?}");
    assert!(names.contains(&"sign"), "{names:?}");
    let upstream = children
        .iter()
        .find(|s| s.kind == 3)
        .unwrap_or_else(|| panic!("no CLIENT child span in {names:?}"));
    assert_eq!(upstream.trace_id, server.trace_id);

    // The upstream continued the same trace, from the gateway's upstream span.
    let expected = format!("00-{META_TRACE}-{}-01", hex::encode(&upstream.span_id));
    assert_eq!(upstream_saw.header("traceparent"), Some(expected.as_str()));
    let body: serde_json::Value = serde_json::from_slice(&upstream_saw.body).unwrap();
    // `_meta` is rewritten before the upstream span exists, so it names a gateway span of
    // the same trace (the server span or the upstream span), never the caller's own span.
    let in_meta = body["params"]["_meta"]["traceparent"].as_str().unwrap();
    let gateway_spans = [
        format!("00-{META_TRACE}-{}-01", hex::encode(&server.span_id)),
        expected.clone(),
    ];
    assert!(gateway_spans.iter().any(|g| g == in_meta), "{in_meta}");

    let denied_span = find(&spans, "tools/call read_k8s_resource");
    assert!(
        !spans
            .iter()
            .any(|s| s.parent_span_id == denied_span.span_id && s.kind == 3),
        "a denied call has no upstream span"
    );
    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .unwrap();
}
