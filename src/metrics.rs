//! Prometheus metrics: one process-wide registry, counted by every stage, rendered on `/metrics`.
//!
//! Every stage increments the fields of [`global()`] where it does something countable; the
//! front serves [`render()`] as the text exposition format. Label values are always
//! low-cardinality: methods come from the MCP method set, tool names only from the tool
//! catalogue ([`tool_label`] folds anything else into `other`), and no label ever carries a
//! session id, a principal or a request id.
//!
//! The registry is private so nothing outside this module can register metrics behind its back;
//! add a field here instead.
use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets for the MCP semantic-convention operation histograms (seconds).
pub const MCP_DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Buckets for policy evaluation (seconds): evaluations take microseconds, so start low.
const POLICY_EVAL_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25,
];

/// Buckets for upstream round trips (seconds).
const UPSTREAM_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The value used for the `tool` label when a tool is not in the catalogue.
pub const OTHER_TOOL: &str = "other";

/// The `group` label for callers in none of the policy data's groups.
pub const OTHER_GROUP: &str = "other";

/// The label value for a tool name: the name itself when the catalogue knows it, otherwise
/// [`OTHER_TOOL`], so a caller cannot create label values at will. Use `""` for methods that
/// have no tool.
pub fn tool_label(name: &str, known: bool) -> &str {
    if known { name } else { OTHER_TOOL }
}

/// The `status_class` label for an upstream HTTP status code (`2xx`, `3xx`, `4xx`, `5xx`).
/// Transport failures use `timeout` or `unavailable` directly.
pub fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// All gateway metrics. Field docs name the labels and their allowed values.
pub struct Metrics {
    registry: Registry,
    /// MCP requests handled. Labels: `method`, `tool` (see [`tool_label`]), `decision`
    /// (`allow`, `deny`, `dry_run_deny`, `error`).
    pub requests_total: IntCounterVec,
    /// Denials by the policy rule that denied. Label: `rule` (rule names come from the
    /// shipped/loaded policy, a bounded set).
    pub denials_total: IntCounterVec,
    /// Human confirmations by outcome. Label: `outcome` (`asked`, `would_ask`, `accepted`,
    /// `declined`, `cancelled`, `expired`, `state_invalid`, `other_principal`,
    /// `arguments_changed`, `policy_changed`, `replayed`, `invalid_answer`, `mismatch`,
    /// `unsupported_client`, `timeout`, `unavailable`).
    pub approvals_total: IntCounterVec,
    /// Time spent in one policy evaluation.
    pub policy_eval_seconds: Histogram,
    /// Policy evaluations that failed (the request was denied, fail closed).
    pub policy_eval_errors_total: IntCounter,
    /// Policy reload attempts. Label: `result` (`ok`, `error`).
    pub policy_reloads_total: IntCounterVec,
    /// 1 while the newest policy files fail to load (the previous policy stays in force),
    /// 0 otherwise.
    pub policy_reload_failing: IntGauge,
    /// MCP requests by the caller's groups that the policy data names (`data.gateway.groups`
    /// keys; callers in none of them count once as `other`). Labels: `group`, `decision` (as
    /// in `requests_total`).
    pub group_requests_total: IntCounterVec,
    /// The loaded policy revision (value 1). Label: `revision`. Set through
    /// [`Metrics::set_policy_revision`] so only the current revision is exported.
    pub policy_revision_info: IntGaugeVec,
    /// Upstream round trip to response headers. Label: `method`.
    pub upstream_request_seconds: HistogramVec,
    /// Upstream outcomes. Label: `status_class` (`2xx`, `3xx`, `4xx`, `5xx`, `timeout`,
    /// `unavailable`).
    pub upstream_responses_total: IntCounterVec,
    /// Upstream 401/403 answers (signature or credential problems).
    pub upstream_auth_failures_total: IntCounter,
    /// Upstream 429 answers (the EKS MCP server throttling the gateway).
    pub upstream_throttled_total: IntCounter,
    /// Calls refused by a per-caller limit of the policy data (`gateway.limits`), never
    /// forwarded. Labels: `group` (as in `group_requests_total`), `class` (`read`,
    /// `sensitive`, `write`, `unknown`, `other`), `limit` (`rate`, `concurrency`, `bytes`,
    /// `callers`).
    pub caller_limited_total: IntCounterVec,
    /// Requests waiting for one of the `limits.max_concurrent_requests` slots.
    pub queued_requests: IntGauge,
    /// Requests the front refused with 503 before the pipeline. Label: `limit` (`source`:
    /// `limits.max_requests_per_source`; `requests`: every slot and queue taken; `streams`:
    /// `limits.max_sse_streams`; `queue_full`: the caller's queue; `queue_timeout`: waited
    /// `limits.queue_timeout`).
    pub requests_refused_total: IntCounterVec,
    /// Callers whose limits this replica currently remembers (at most `limits.max_callers`).
    pub callers_tracked: IntGauge,
    /// Large inspections (classify + decide of a request, redaction of a response or SSE
    /// event at least `limits.inspect_offload_bytes`) run on the blocking pool. Label:
    /// `outcome` (`done`, `timeout`).
    pub inspections_offloaded_total: IntCounterVec,
    /// Requests waiting on a large inspection now (for a slot or for the work). A request whose
    /// inspection timed out stops counting, though its thread finishes the work.
    pub inspections_in_flight: IntGauge,
    /// The upstream circuit breaker: 0 closed, 1 open (failing fast), 2 probing.
    pub upstream_breaker_state: IntGauge,
    /// Calls the gateway did not send because of the upstream's state. Label: `reason`
    /// (`throttled`: an upstream 429's `Retry-After` is still running; `circuit_open`).
    pub upstream_held_total: IntCounterVec,
    /// Extra attempts of catalogue reads after an unreachable upstream or a 502/503/504.
    pub upstream_retries_total: IntCounter,
    /// Redactions applied to results. Label: `detector`.
    pub redactions_total: IntCounterVec,
    /// Sessions open (initialize seen minus DELETE; best effort, a replica only sees its own).
    pub open_sessions: IntGauge,
    /// SSE streams currently relayed.
    pub open_sse_streams: IntGauge,
    /// Requests past the front's global request limit and not yet answered (to the response
    /// head; streams are counted by `open_sse_streams`).
    pub inflight_requests: IntGauge,
    /// AWS credential refreshes. Label: `result` (`ok`, `error`).
    pub credential_refreshes_total: IntCounterVec,
    /// Per-caller STS role-session cache lookups. Label: `result` (`hit`, `miss`, `error`).
    pub role_session_cache_total: IntCounterVec,
    /// Audit records waiting for the writer.
    pub audit_queue_depth: IntGauge,
    /// Size of the audit queue (`audit.queue_size`), for alerts on how full it is.
    pub audit_queue_capacity: IntGauge,
    /// Audit records by outcome. Label: `result`: `written`, `rejected` (refused in
    /// `fail_closed` mode), `disabled` (`sink: none`), `write_error` (failed write attempts;
    /// the batch is retried, so this counts attempts, not lost records).
    pub audit_records_total: IntCounterVec,
    /// Failed caller authentications. Label: `reason` (`missing`, `invalid`, `expired`,
    /// `unknown_key`, `jwks_unavailable`, `config`); see `identity::AuthError::reason`.
    pub auth_failures_total: IntCounterVec,
    /// This build (value 1). Label: `version`.
    pub build_info: IntGaugeVec,
    /// MCP semantic-convention server operation duration. Labels: `mcp_method_name`,
    /// `error_type` (`""` on success, a JSON-RPC code, or `tool_error`).
    pub mcp_server_operation_duration_seconds: HistogramVec,
    /// Restarts of a stdio upstream process (`upstream.command`) after it exited or failed
    /// to start.
    pub upstream_restarts_total: IntCounter,
    /// Differences between the upstream's `tools/list` and `policies/catalogue.yaml` (value 1
    /// while present; set through `drift::publish`, which clears what went away). Labels:
    /// `kind` (`unknown_tool`, `missing_tool`, `unmapped_argument`, `annotation`), `tool`
    /// (names the upstream lists, capped in number by `drift`).
    pub catalogue_drift: IntGaugeVec,
}

fn counter_vec(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let m = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    reg.register(Box::new(m.clone()))
        .expect("metric registered once");
    m
}

fn counter(reg: &Registry, name: &str, help: &str) -> IntCounter {
    let m = IntCounter::new(name, help).expect("valid metric definition");
    reg.register(Box::new(m.clone()))
        .expect("metric registered once");
    m
}

fn gauge(reg: &Registry, name: &str, help: &str) -> IntGauge {
    let m = IntGauge::new(name, help).expect("valid metric definition");
    reg.register(Box::new(m.clone()))
        .expect("metric registered once");
    m
}

fn histogram_vec(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let m = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric definition");
    reg.register(Box::new(m.clone()))
        .expect("metric registered once");
    m
}

/// The `limit` label values of `mcp_gateway_requests_refused_total`.
pub const REFUSAL_LIMITS: [&str; 5] = [
    "source",
    "requests",
    "streams",
    "queue_full",
    "queue_timeout",
];

impl Metrics {
    /// A registry with every metric, and the series of every fixed label value at zero: an
    /// alert on `increase(...{result="error"}[5m])` needs the series to exist before the
    /// first error, or the first error is never seen as an increase.
    fn new() -> Self {
        let m = Self::unset();
        for result in ["ok", "error"] {
            m.policy_reloads_total.with_label_values(&[result]);
            m.credential_refreshes_total.with_label_values(&[result]);
        }
        for result in ["hit", "miss", "error"] {
            m.role_session_cache_total.with_label_values(&[result]);
        }
        for result in ["written", "rejected", "disabled", "write_error"] {
            m.audit_records_total.with_label_values(&[result]);
        }
        // Callers in none of the policy data's groups, so the shared-gateway alerts see the
        // series before the first refusal.
        for class in ["read", "sensitive", "write", "unknown", "other"] {
            for limit in ["rate", "concurrency", "bytes", "callers"] {
                m.caller_limited_total
                    .with_label_values(&[OTHER_GROUP, class, limit]);
            }
        }
        for limit in REFUSAL_LIMITS {
            m.requests_refused_total.with_label_values(&[limit]);
        }
        for reason in ["throttled", "circuit_open"] {
            m.upstream_held_total.with_label_values(&[reason]);
        }
        for class in ["2xx", "3xx", "4xx", "5xx", "timeout", "unavailable"] {
            m.upstream_responses_total.with_label_values(&[class]);
        }
        for reason in [
            "missing",
            "invalid",
            "expired",
            "unknown_key",
            "jwks_unavailable",
            "config",
        ] {
            m.auth_failures_total.with_label_values(&[reason]);
        }
        m
    }

    fn unset() -> Self {
        let r = Registry::new();
        let policy_eval_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "mcp_gateway_policy_eval_seconds",
                "Time spent in one policy evaluation.",
            )
            .buckets(POLICY_EVAL_BUCKETS.to_vec()),
        )
        .expect("valid metric definition");
        r.register(Box::new(policy_eval_seconds.clone()))
            .expect("metric registered once");
        let policy_revision_info = IntGaugeVec::new(
            Opts::new(
                "mcp_gateway_policy_revision_info",
                "The loaded policy revision (value 1).",
            ),
            &["revision"],
        )
        .expect("valid metric definition");
        r.register(Box::new(policy_revision_info.clone()))
            .expect("metric registered once");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "mcp_gateway_build_info",
                "The running build (value 1), by version.",
            ),
            &["version"],
        )
        .expect("valid metric definition");
        r.register(Box::new(build_info.clone()))
            .expect("metric registered once");
        build_info.with_label_values(&[crate::VERSION]).set(1);
        let catalogue_drift = IntGaugeVec::new(
            Opts::new(
                "mcp_gateway_catalogue_drift",
                "Differences between the upstream's tools/list and the tool catalogue (1 while present), by kind and tool.",
            ),
            &["kind", "tool"],
        )
        .expect("valid metric definition");
        r.register(Box::new(catalogue_drift.clone()))
            .expect("metric registered once");
        Metrics {
            upstream_restarts_total: counter(
                &r,
                "mcp_gateway_upstream_restarts_total",
                "Restarts of the stdio upstream process after it exited or failed to start.",
            ),
            catalogue_drift,
            requests_total: counter_vec(
                &r,
                "mcp_gateway_requests_total",
                "MCP requests handled, by method, tool and decision.",
                &["method", "tool", "decision"],
            ),
            denials_total: counter_vec(
                &r,
                "mcp_gateway_denials_total",
                "Requests denied, by the policy rule that denied them.",
                &["rule"],
            ),
            approvals_total: counter_vec(
                &r,
                "mcp_gateway_approvals_total",
                "Human confirmations asked for by the policy, by outcome.",
                &["outcome"],
            ),
            policy_eval_seconds,
            policy_eval_errors_total: counter(
                &r,
                "mcp_gateway_policy_eval_errors_total",
                "Policy evaluations that failed (the request was denied).",
            ),
            policy_reloads_total: counter_vec(
                &r,
                "mcp_gateway_policy_reloads_total",
                "Policy reload attempts, by result.",
                &["result"],
            ),
            policy_reload_failing: gauge(
                &r,
                "mcp_gateway_policy_reload_failing",
                "1 while the newest policy files fail to load (the previous policy stays in force).",
            ),
            group_requests_total: counter_vec(
                &r,
                "mcp_gateway_group_requests_total",
                "MCP requests by the caller's policy groups and decision.",
                &["group", "decision"],
            ),
            policy_revision_info,
            upstream_request_seconds: histogram_vec(
                &r,
                "mcp_gateway_upstream_request_seconds",
                "Upstream round trip to response headers, by MCP method.",
                &["method"],
                UPSTREAM_BUCKETS,
            ),
            upstream_responses_total: counter_vec(
                &r,
                "mcp_gateway_upstream_responses_total",
                "Upstream outcomes, by HTTP status class or transport failure.",
                &["status_class"],
            ),
            upstream_auth_failures_total: counter(
                &r,
                "mcp_gateway_upstream_auth_failures_total",
                "Upstream 401/403 answers (signature or credential problems).",
            ),
            upstream_throttled_total: counter(
                &r,
                "mcp_gateway_upstream_throttled_total",
                "Upstream 429 answers (the EKS MCP server throttling the gateway).",
            ),
            caller_limited_total: counter_vec(
                &r,
                "mcp_gateway_caller_limited_total",
                "Calls refused by a per-caller limit, by group, call class and limit.",
                &["group", "class", "limit"],
            ),
            queued_requests: gauge(
                &r,
                "mcp_gateway_queued_requests",
                "Requests waiting for a slot at the global concurrency limit.",
            ),
            callers_tracked: gauge(
                &r,
                "mcp_gateway_callers_tracked",
                "Callers whose per-caller limits this replica remembers.",
            ),
            inspections_offloaded_total: counter_vec(
                &r,
                "mcp_gateway_inspections_offloaded_total",
                "Large inspections run off the async workers, by outcome (done, timeout).",
                &["outcome"],
            ),
            inspections_in_flight: gauge(
                &r,
                "mcp_gateway_inspections_in_flight",
                "Requests waiting on a large inspection (for a slot or for the work).",
            ),
            requests_refused_total: counter_vec(
                &r,
                "mcp_gateway_requests_refused_total",
                "Requests refused with 503 by a limit of the front, by limit.",
                &["limit"],
            ),
            upstream_breaker_state: gauge(
                &r,
                "mcp_gateway_upstream_breaker_state",
                "Upstream circuit breaker: 0 closed, 1 open, 2 probing.",
            ),
            upstream_held_total: counter_vec(
                &r,
                "mcp_gateway_upstream_held_total",
                "Calls not sent because of the upstream's state, by reason.",
                &["reason"],
            ),
            upstream_retries_total: counter(
                &r,
                "mcp_gateway_upstream_retries_total",
                "Extra attempts of catalogue reads after an unreachable upstream or a 502/503/504.",
            ),
            redactions_total: counter_vec(
                &r,
                "mcp_gateway_redactions_total",
                "Redactions applied to results, by detector.",
                &["detector"],
            ),
            open_sessions: gauge(
                &r,
                "mcp_gateway_open_sessions",
                "MCP sessions open on this replica (initialize minus DELETE, best effort).",
            ),
            open_sse_streams: gauge(
                &r,
                "mcp_gateway_open_sse_streams",
                "SSE streams currently relayed.",
            ),
            inflight_requests: gauge(
                &r,
                "mcp_gateway_inflight_requests",
                "Requests past the front's global request limit and not yet answered (to the response head).",
            ),
            credential_refreshes_total: counter_vec(
                &r,
                "mcp_gateway_credential_refreshes_total",
                "AWS credential refreshes, by result.",
                &["result"],
            ),
            role_session_cache_total: counter_vec(
                &r,
                "mcp_gateway_role_session_cache_total",
                "Per-caller STS role-session cache lookups, by result.",
                &["result"],
            ),
            audit_queue_depth: gauge(
                &r,
                "mcp_gateway_audit_queue_depth",
                "Audit records waiting for the writer.",
            ),
            audit_queue_capacity: gauge(
                &r,
                "mcp_gateway_audit_queue_capacity",
                "Size of the audit queue (audit.queue_size).",
            ),
            audit_records_total: counter_vec(
                &r,
                "mcp_gateway_audit_records_total",
                "Audit records, by outcome.",
                &["result"],
            ),
            auth_failures_total: counter_vec(
                &r,
                "mcp_gateway_auth_failures_total",
                "Failed caller authentications, by reason.",
                &["reason"],
            ),
            mcp_server_operation_duration_seconds: histogram_vec(
                &r,
                "mcp_server_operation_duration_seconds",
                "MCP server operation duration (OpenTelemetry MCP semantic conventions).",
                &["mcp_method_name", "error_type"],
                MCP_DURATION_BUCKETS,
            ),
            build_info,
            registry: r,
        }
    }

    /// Export `revision` as the one current policy revision.
    pub fn set_policy_revision(&self, revision: &str) {
        self.policy_revision_info.reset();
        self.policy_revision_info
            .with_label_values(&[revision])
            .set(1);
    }

    /// The text exposition of every metric in this registry.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

/// The Prometheus text exposition (content type [`CONTENT_TYPE`]) of the global metrics.
pub fn render() -> String {
    global().render()
}

/// The `Content-Type` for [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_tools_fold_into_other() {
        assert_eq!(tool_label("get_pod_logs", true), "get_pod_logs");
        assert_eq!(tool_label("made_up_tool_123", false), OTHER_TOOL);
    }

    #[test]
    fn revision_info_keeps_only_the_current_revision() {
        let m = Metrics::new();
        m.set_policy_revision("abc");
        m.set_policy_revision("def");
        let text = m.render();
        assert!(text.contains("mcp_gateway_policy_revision_info{revision=\"def\"} 1"));
        assert!(!text.contains("revision=\"abc\""));
    }
}
