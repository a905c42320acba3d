//! MCP methods of the simulator, independent of HTTP: what each JSON-RPC method returns and
//! which notifications it causes. `transport` decides how and where those are delivered.

use serde_json::{Value, json};

use super::world::World;
use super::{Shared, lock, read, tools};

/// Session-era protocol versions, oldest first.
pub(crate) const LEGACY_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];
/// Stateless-era protocol versions.
pub(crate) const MODERN_VERSIONS: [&str; 1] = ["2026-07-28"];
/// The `_meta` key carrying the protocol version of a stateless request.
pub(crate) const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";

/// Every version this server speaks, newest first (for error data and discovery).
pub(crate) fn supported_versions() -> Vec<&'static str> {
    MODERN_VERSIONS
        .iter()
        .rev()
        .chain(LEGACY_VERSIONS.iter().rev())
        .copied()
        .collect()
}

/// RFC 5424 levels as MCP names them, least severe first.
const LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

pub(crate) fn level_index(name: &str) -> Option<usize> {
    LEVELS.iter().position(|l| *l == name)
}

/// Level of the messages the simulator emits about changes.
const CHANGE_LEVEL: usize = 1;

/// The protocol era a request is served in.
pub(crate) enum Era {
    Session { log_level: usize },
    Stateless,
}

impl Era {
    fn is_stateless(&self) -> bool {
        matches!(self, Era::Stateless)
    }
}

/// A JSON-RPC error.
pub(crate) struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }
    pub fn method_not_found(method: &str) -> Self {
        Self::new(-32601, format!("Method not found: {method}"))
    }
    fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(-32602, message)
    }
}

/// What handling one request produced.
pub(crate) struct Handled {
    pub outcome: Result<Value, RpcError>,
    /// `notifications/progress`, only when the request carried a progress token.
    pub progress: Vec<Value>,
    /// `notifications/message` about this request (already filtered by log level).
    pub related: Vec<Value>,
    /// Notifications for every session (e.g. `notifications/resources/list_changed`).
    pub broadcast: Vec<Value>,
    /// A `logging/setLevel` the transport should store on the session.
    pub set_log_level: Option<usize>,
}

impl Handled {
    fn result(result: Value) -> Self {
        Self {
            outcome: Ok(result),
            progress: Vec::new(),
            related: Vec::new(),
            broadcast: Vec::new(),
            set_log_level: None,
        }
    }
    fn error(error: RpcError) -> Self {
        Self {
            outcome: Err(error),
            ..Self::result(Value::Null)
        }
    }
}

pub(crate) fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

fn server_info() -> Value {
    json!({
        "name": "eks-mcp-server",
        "title": "Amazon EKS MCP Server (simulator)",
        "version": "0.2.1-sim",
    })
}

fn capabilities() -> Value {
    json!({
        "logging": {},
        "prompts": {"listChanged": false},
        "resources": {"subscribe": false, "listChanged": true},
        "tools": {"listChanged": false},
    })
}

const INSTRUCTIONS: &str = "Amazon EKS MCP Server (simulated). Inspect and manage the EKS clusters dev, staging and prod: \
use list_eks_resources to discover clusters, list_k8s_resources/read_k8s_resource for Kubernetes objects, \
get_pod_logs and get_k8s_events for troubleshooting. Privileged tools (manage_k8s_resource, apply_yaml, \
manage_eks_stacks, add_inline_policy) change the clusters.";

/// `InitializeResult` for a negotiated session-era version.
pub(crate) fn initialize_result(version: &str) -> Value {
    json!({
        "protocolVersion": version,
        "capabilities": capabilities(),
        "serverInfo": server_info(),
        "instructions": INSTRUCTIONS,
    })
}

/// Handle one request (not `initialize`, which creates a session in `transport`).
pub(crate) fn handle(shared: &Shared, era: &Era, method: &str, params: &Value) -> Handled {
    let mut handled = match method {
        "ping" => Handled::result(json!({})),
        "server/discover" if era.is_stateless() => Handled::result(json!({
            "supportedVersions": supported_versions(),
            "capabilities": capabilities(),
            "serverInfo": server_info(),
            "instructions": INSTRUCTIONS,
        })),
        "tools/list" => paginated(params, || json!({"tools": read(&shared.catalogue).list()})),
        "tools/call" => call_tool(shared, era, params),
        "resources/list" => paginated(
            params,
            || json!({"resources": resources(&lock(&shared.world))}),
        ),
        "resources/templates/list" => paginated(
            params,
            || json!({"resourceTemplates": resource_templates()}),
        ),
        "resources/read" => read_resource(shared, era, params),
        "prompts/list" => paginated(params, || json!({"prompts": prompts()})),
        "prompts/get" => get_prompt(params),
        "logging/setLevel" => match params["level"].as_str().and_then(level_index) {
            Some(level) => Handled {
                set_log_level: Some(level),
                ..Handled::result(json!({}))
            },
            None => Handled::error(RpcError::invalid_params(format!(
                "Invalid params: level must be one of {}",
                LEVELS.join(", ")
            ))),
        },
        other => Handled::error(RpcError::method_not_found(other)),
    };
    if let (Era::Stateless, Ok(result)) = (era, &mut handled.outcome) {
        result["resultType"] = json!("complete");
        if matches!(
            method,
            "server/discover"
                | "tools/list"
                | "resources/list"
                | "resources/templates/list"
                | "resources/read"
                | "prompts/list"
        ) {
            result["ttlMs"] = json!(if method == "resources/read" {
                5_000
            } else {
                60_000
            });
            result["cacheScope"] = json!(if method == "resources/read" {
                "private"
            } else {
                "public"
            });
        }
    }
    handled
}

/// The simulator returns every list in one page; any cursor is one it never issued.
fn paginated(params: &Value, list: impl FnOnce() -> Value) -> Handled {
    if params.get("cursor").is_some_and(|c| !c.is_null()) {
        return Handled::error(RpcError::invalid_params("Invalid params: unknown cursor"));
    }
    Handled::result(list())
}

fn call_tool(shared: &Shared, era: &Era, params: &Value) -> Handled {
    let Some(name) = params["name"].as_str() else {
        return Handled::error(RpcError::invalid_params(
            "Invalid params: tools/call requires a string 'name'",
        ));
    };
    let output = {
        let mut world = lock(&shared.world);
        tools::call(
            &mut world,
            &read(&shared.catalogue),
            name,
            params.get("arguments"),
        )
    };
    let Ok(output) = output else {
        return Handled::error(RpcError::invalid_params(format!("Unknown tool: {name}")));
    };
    let mut handled = Handled::result(output.result);
    if let Some(token) = params
        .pointer("/_meta/progressToken")
        .filter(|t| t.is_string() || t.is_number())
    {
        handled.progress = [(0, "started"), (1, "calling the EKS and Kubernetes APIs"), (2, "done")]
            .into_iter()
            .map(|(step, what)| {
                notification(
                    "notifications/progress",
                    json!({"progressToken": token, "progress": step, "total": 2, "message": format!("{name}: {what}")}),
                )
            })
            .collect();
    }
    let threshold = match era {
        Era::Session { log_level } => Some(*log_level),
        Era::Stateless => params
            .pointer(&format!("/_meta/{}", META_LOG_LEVEL.replace('/', "~1")))
            .and_then(Value::as_str)
            .and_then(level_index),
    };
    for change in &output.changes {
        if threshold.is_some_and(|t| CHANGE_LEVEL >= t) {
            handled.related.push(notification(
                "notifications/message",
                json!({"level": LEVELS[CHANGE_LEVEL], "logger": "eks-mcp-server", "data": {"message": change.description, "tool": name}}),
            ));
        }
        if change.resource_list_changed && handled.broadcast.is_empty() {
            handled.broadcast.push(notification(
                "notifications/resources/list_changed",
                json!({}),
            ));
        }
    }
    handled
}

fn resources(world: &World) -> Vec<Value> {
    let mut out = vec![json!({
        "uri": "eks://clusters",
        "name": "clusters",
        "title": "EKS clusters",
        "description": "The EKS clusters in this account and region",
        "mimeType": "application/json",
    })];
    let ns_res = world.resolve("v1", "Namespace").ok().cloned();
    for cluster in world.cluster_names() {
        out.push(json!({
            "uri": format!("eks://clusters/{cluster}"),
            "name": format!("cluster-{cluster}"),
            "title": format!("EKS cluster {cluster}"),
            "mimeType": "application/json",
        }));
        if let Some(ns_res) = &ns_res {
            for ns in world.list(&cluster, ns_res, None) {
                let ns = ns
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                out.push(json!({
                    "uri": format!("k8s://{cluster}/namespaces/{ns}"),
                    "name": format!("{cluster}-{ns}"),
                    "title": format!("Namespace {ns} on {cluster}"),
                    "mimeType": "application/json",
                }));
            }
        }
    }
    out
}

fn resource_templates() -> Value {
    json!([
        {"uriTemplate": "eks://clusters/{cluster_name}", "name": "cluster", "title": "EKS cluster overview", "mimeType": "application/json"},
        {"uriTemplate": "k8s://{cluster_name}/namespaces/{namespace}", "name": "namespace", "title": "Workloads in a namespace", "mimeType": "application/json"},
    ])
}

fn read_resource(shared: &Shared, era: &Era, params: &Value) -> Handled {
    let Some(uri) = params["uri"].as_str() else {
        return Handled::error(RpcError::invalid_params(
            "Invalid params: resources/read requires a string 'uri'",
        ));
    };
    let world = lock(&shared.world);
    let body = if uri == "eks://clusters" {
        Some(json!({"clusters": world.cluster_names()}))
    } else if let Some(cluster) = uri.strip_prefix("eks://clusters/") {
        world.cluster(cluster).ok().map(|c| {
            json!({"name": cluster, "version": c.spec.version, "tier": c.spec.tier, "vpc_id": c.spec.vpc.vpc_id, "status": "ACTIVE"})
        })
    } else if let Some((cluster, ns)) = uri
        .strip_prefix("k8s://")
        .and_then(|r| r.split_once("/namespaces/"))
    {
        namespace_overview(&world, cluster, ns)
    } else {
        None
    };
    match body {
        Some(body) => Handled::result(json!({
            "contents": [{"uri": uri, "mimeType": "application/json", "text": body.to_string()}]
        })),
        None => {
            // 2025-11-25 and earlier use -32002; 2026-07-28 moved "not found" to -32602.
            let code = if era.is_stateless() { -32602 } else { -32002 };
            Handled::error(RpcError {
                code,
                message: "Resource not found".into(),
                data: Some(json!({"uri": uri})),
            })
        }
    }
}

fn namespace_overview(world: &World, cluster: &str, ns: &str) -> Option<Value> {
    let ns_res = world.resolve("v1", "Namespace").ok()?;
    world.get(cluster, ns_res, None, ns).ok()?;
    let mut counts = serde_json::Map::new();
    for (api_version, kind) in [
        ("apps/v1", "Deployment"),
        ("v1", "Pod"),
        ("v1", "Service"),
        ("v1", "ConfigMap"),
    ] {
        if let Ok(res) = world.resolve(api_version, kind) {
            let names: Vec<Value> = world
                .list(cluster, res, Some(ns))
                .into_iter()
                .filter_map(|o| o.pointer("/metadata/name").cloned())
                .collect();
            counts.insert(format!("{}s", kind.to_lowercase()), Value::Array(names));
        }
    }
    Some(json!({"cluster": cluster, "namespace": ns, "workloads": counts}))
}

fn prompts() -> Value {
    json!([
        {
            "name": "troubleshoot_pod",
            "title": "Troubleshoot a failing pod",
            "description": "Walk through logs, events and configuration of a pod that is failing or restarting",
            "arguments": [
                {"name": "cluster_name", "description": "EKS cluster name", "required": true},
                {"name": "namespace", "description": "Namespace of the pod", "required": true},
                {"name": "pod_name", "description": "Name of the pod", "required": true},
            ],
        },
        {
            "name": "upgrade_readiness",
            "title": "Check cluster upgrade readiness",
            "description": "Review EKS insights and add-on versions before a Kubernetes version upgrade",
            "arguments": [{"name": "cluster_name", "description": "EKS cluster name", "required": true}],
        },
    ])
}

fn get_prompt(params: &Value) -> Handled {
    let name = params["name"].as_str().unwrap_or_default();
    let arg = |key: &str| {
        params
            .pointer(&format!("/arguments/{key}"))
            .and_then(Value::as_str)
    };
    let required: &[&str] = match name {
        "troubleshoot_pod" => &["cluster_name", "namespace", "pod_name"],
        "upgrade_readiness" => &["cluster_name"],
        _ => return Handled::error(RpcError::invalid_params(format!("Unknown prompt: {name}"))),
    };
    if let Some(missing) = required.iter().find(|k| arg(k).is_none()) {
        return Handled::error(RpcError::invalid_params(format!(
            "Missing required argument: {missing}"
        )));
    }
    let text = match name {
        "troubleshoot_pod" => format!(
            "Pod {ns}/{pod} on EKS cluster {cluster} is unhealthy. Use get_pod_logs (also with previous=true), \
get_k8s_events for the pod, and read_k8s_resource for its spec to find the cause. Do not print secret values.",
            cluster = arg("cluster_name").unwrap_or_default(),
            ns = arg("namespace").unwrap_or_default(),
            pod = arg("pod_name").unwrap_or_default()
        ),
        _ => format!(
            "Check whether EKS cluster {} is ready for a Kubernetes upgrade: run get_eks_insights with category \
UPGRADE_READINESS, describe the cluster's add-ons, and summarise the blockers.",
            arg("cluster_name").unwrap_or_default()
        ),
    };
    Handled::result(json!({
        "description": format!("{name} prompt"),
        "messages": [{"role": "user", "content": {"type": "text", "text": text}}],
    }))
}
