//! The simulator's tool catalogue and its Kubernetes tools.
//!
//! The catalogue is data (`tools-hosted.json`, `tools-oss.json`, the latter copied verbatim
//! from the awslabs server's real `tools/list`); this module validates arguments against each
//! tool's `inputSchema` and dispatches. Results follow the real server's shape: a summary text
//! block plus a text block holding the JSON data, or one text block with `isError: true`.
//! AWS-side tools (EKS, IAM, CloudWatch, CloudFormation, search) live in `aws.rs`.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::ToolNames;
use super::aws;
use super::world::{ApiResource, K8sError, World, strip_nulls};

const HOSTED_TOOLS: &str = include_str!("tools-hosted.json");
const OSS_TOOLS: &str = include_str!("tools-oss.json");

/// The tool set one simulator instance exposes.
pub(crate) struct Catalogue {
    tools: Vec<Value>,
    names: ToolNames,
}

impl Catalogue {
    pub fn new(names: ToolNames) -> Self {
        let text = match names {
            ToolNames::Hosted => HOSTED_TOOLS,
            ToolNames::OpenSource => OSS_TOOLS,
        };
        let tools: Vec<Value> = serde_json::from_str(text).expect("src/sim/tools-*.json is valid");
        Self { tools, names }
    }

    /// A changed tool list (drift tests): tools without a handler answer with a tool error.
    pub fn with_tools(names: ToolNames, tools: Vec<Value>) -> Self {
        Self { tools, names }
    }

    /// Tool definitions as `tools/list` returns them.
    pub fn list(&self) -> &[Value] {
        &self.tools
    }

    fn find(&self, name: &str) -> Option<&Value> {
        self.tools.iter().find(|t| t["name"] == name)
    }
}

/// A change to the world that clients should hear about.
pub(crate) struct Change {
    /// Human-readable description for `notifications/message`.
    pub description: String,
    /// The set of listed resources changed (a namespace was created or deleted).
    pub resource_list_changed: bool,
}

/// What a tool call produced: the `CallToolResult` and any changes it made.
pub(crate) struct ToolOutput {
    pub result: Value,
    pub changes: Vec<Change>,
}

impl ToolOutput {
    /// Success: a summary block and a block with the JSON data.
    pub fn success(summary: impl Into<String>, data: Value) -> Self {
        Self {
            result: json!({
                "content": [
                    {"type": "text", "text": summary.into()},
                    {"type": "text", "text": data.to_string()},
                ],
                "isError": false,
            }),
            changes: Vec::new(),
        }
    }

    /// Success with a single text block (the knowledge-base search answers this way).
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            result: json!({"content": [{"type": "text", "text": text.into()}], "isError": false}),
            changes: Vec::new(),
        }
    }

    /// Tool-level failure: one text block, `isError: true`.
    pub fn error(text: impl Into<String>) -> Self {
        Self {
            result: json!({"content": [{"type": "text", "text": text.into()}], "isError": true}),
            changes: Vec::new(),
        }
    }

    pub fn with_change(mut self, description: String, resource_list_changed: bool) -> Self {
        self.changes.push(Change {
            description,
            resource_list_changed,
        });
        self
    }
}

/// Typed access to validated arguments (nulls read as absent).
pub(crate) struct Args<'a>(&'a Map<String, Value>);

impl<'a> Args<'a> {
    pub fn str(&self, key: &str) -> Option<&'a str> {
        self.0.get(key).and_then(Value::as_str)
    }
    /// A required string; schema validation has already checked presence.
    pub fn req(&self, key: &str) -> &'a str {
        self.str(key).unwrap_or_default()
    }
    pub fn int(&self, key: &str, default: i64) -> i64 {
        self.0.get(key).and_then(Value::as_i64).unwrap_or(default)
    }
    pub fn bool(&self, key: &str, default: bool) -> bool {
        self.0.get(key).and_then(Value::as_bool).unwrap_or(default)
    }
    pub fn value(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }
}

fn type_matches(schema: &Value, value: &Value) -> bool {
    if let Some(options) = schema.get("anyOf").and_then(Value::as_array) {
        return options.iter().any(|s| type_matches(s, value));
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("null") => value.is_null(),
        _ => true,
    }
}

/// Validate like pydantic does in the Python server, with its wording.
fn validate(tool: &Value, args: &Map<String, Value>) -> Result<(), String> {
    let schema = &tool["inputSchema"];
    let title = schema["title"].as_str().unwrap_or("Arguments");
    let mut problems = Vec::new();
    for required in schema["required"].as_array().into_iter().flatten() {
        let key = required.as_str().unwrap_or_default();
        if args.get(key).is_none() {
            problems.push(format!("{key}\n  Field required [type=missing]"));
        }
    }
    if let Some(props) = schema["properties"].as_object() {
        for (key, prop) in props {
            if let Some(value) = args.get(key) {
                if !type_matches(prop, value) {
                    let want = prop["type"].as_str().unwrap_or("a valid value");
                    problems.push(format!(
                        "{key}\n  Input should be a valid {want} [input_value={value}]"
                    ));
                } else if let Some(options) = prop["enum"].as_array()
                    && !options.contains(value)
                {
                    problems.push(format!(
                        "{key}\n  Input should be one of {} [input_value={value}]",
                        Value::Array(options.clone())
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let n = problems.len();
    Err(format!(
        "Error executing tool {}: {n} validation error{} for {title}\n{}",
        tool["name"].as_str().unwrap_or_default(),
        if n == 1 { "" } else { "s" },
        problems.join("\n")
    ))
}

/// Run one tool. `Err(())` means the catalogue has no tool of that name (a protocol error).
pub(crate) fn call(
    world: &mut World,
    catalogue: &Catalogue,
    name: &str,
    arguments: Option<&Value>,
) -> Result<ToolOutput, ()> {
    let tool = catalogue.find(name).ok_or(())?;
    let empty = Map::new();
    let args = match arguments {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Ok(ToolOutput::error(format!(
                "Error executing tool {name}: arguments must be a JSON object"
            )));
        }
    };
    if let Err(message) = validate(tool, args) {
        return Ok(ToolOutput::error(message));
    }
    let a = Args(args);
    Ok(match name {
        "list_k8s_resources" => list_k8s_resources(world, &a),
        "read_k8s_resource" => read_k8s_resource(world, &a),
        "manage_k8s_resource" => manage_k8s_resource(world, &a),
        "apply_yaml" => apply_yaml(world, &a, catalogue.names),
        "get_pod_logs" => get_pod_logs(world, &a),
        "get_k8s_events" => get_k8s_events(world, &a),
        "list_api_versions" => list_api_versions(world, &a),
        "generate_app_manifest" => generate_app_manifest(&a),
        other => aws::call(world, other, &a),
    })
}

fn ns_prefix(namespace: Option<&str>) -> String {
    namespace.map(|ns| format!("{ns}/")).unwrap_or_default()
}

/// One term of a label selector.
enum LabelTerm {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

fn parse_label_selector(selector: &str) -> Result<Vec<LabelTerm>, String> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0, 0);
    let mut parts = Vec::new();
    for (i, ch) in selector.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&selector[start..]);
    for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
        let set = |rest: &str| -> Result<Vec<String>, String> {
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'));
            inner
                .map(|i| i.split(',').map(|v| v.trim().to_owned()).collect())
                .ok_or_else(|| format!("unable to parse requirement: {part}"))
        };
        let term = if let Some((k, v)) = part.split_once("!=") {
            LabelTerm::NotEq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            LabelTerm::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, rest)) = part.split_once(" notin ") {
            LabelTerm::NotIn(k.trim().into(), set(rest)?)
        } else if let Some((k, rest)) = part.split_once(" in ") {
            LabelTerm::In(k.trim().into(), set(rest)?)
        } else if let Some(k) = part.strip_prefix('!') {
            LabelTerm::NotExists(k.trim().into())
        } else if part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        {
            LabelTerm::Exists(part.into())
        } else {
            return Err(format!("unable to parse requirement: {part}"));
        };
        terms.push(term);
    }
    Ok(terms)
}

fn labels_match(obj: &Value, terms: &[LabelTerm]) -> bool {
    let labels = obj.pointer("/metadata/labels");
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    terms.iter().all(|t| match t {
        LabelTerm::Eq(k, v) => get(k) == Some(v.as_str()),
        LabelTerm::NotEq(k, v) => get(k) != Some(v.as_str()),
        LabelTerm::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        LabelTerm::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
        LabelTerm::Exists(k) => get(k).is_some(),
        LabelTerm::NotExists(k) => get(k).is_none(),
    })
}

fn parse_field_selector(selector: &str) -> Result<Vec<(String, bool, String)>, String> {
    selector
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| {
            if let Some((k, v)) = part.split_once("!=") {
                Ok((k.trim().to_owned(), false, v.trim().to_owned()))
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Ok((k.trim().to_owned(), true, v.trim().to_owned()))
            } else {
                Err(format!("invalid field selector: '{part}'"))
            }
        })
        .collect()
}

fn fields_match(obj: &Value, terms: &[(String, bool, String)]) -> bool {
    terms.iter().all(|(path, eq, want)| {
        let pointer = format!("/{}", path.replace('.', "/"));
        let actual = match obj.pointer(&pointer) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        (actual == *want) == *eq
    })
}

fn list_k8s_resources(world: &mut World, a: &Args) -> ToolOutput {
    let (cluster, kind, api_version) = (a.req("cluster_name"), a.req("kind"), a.req("api_version"));
    let namespace = a.str("namespace");
    let fail = |e: String| ToolOutput::error(format!("Failed to list {kind} resources: {e}"));
    if let Err(e) = world.cluster(cluster) {
        return fail(e.to_string());
    }
    let res = match world.resolve(api_version, kind) {
        Ok(r) => r.clone(),
        Err(e) => return fail(e.to_string()),
    };
    let labels = match a
        .str("label_selector")
        .map(parse_label_selector)
        .transpose()
    {
        Ok(l) => l.unwrap_or_default(),
        Err(e) => {
            return fail(
                K8sError {
                    status: 400,
                    reason: "Bad Request",
                    message: e,
                }
                .to_string(),
            );
        }
    };
    let fields = match a
        .str("field_selector")
        .map(parse_field_selector)
        .transpose()
    {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => {
            return fail(
                K8sError {
                    status: 400,
                    reason: "Bad Request",
                    message: e,
                }
                .to_string(),
            );
        }
    };
    // The path the upstream requests, as the API server routes it (`..` resolved).
    let route = match world.route_request(&res, None, namespace) {
        Ok(route) if route.name.is_none() => route,
        Ok(route) => {
            return fail(format!(
                "the response for {} {} is an object, not a list",
                route.res.kind,
                route.name.unwrap_or_default()
            ));
        }
        Err(e) => return fail(e.to_string()),
    };
    let items: Vec<Value> = world
        .list(cluster, &route.res, route.namespace.as_deref())
        .into_iter()
        .filter(|o| labels_match(o, &labels) && fields_match(o, &fields))
        .map(|o| {
            json!({
                "name": o.pointer("/metadata/name"),
                "namespace": o.pointer("/metadata/namespace"),
                "creation_timestamp": o.pointer("/metadata/creationTimestamp"),
                "labels": o.pointer("/metadata/labels"),
                "annotations": o.pointer("/metadata/annotations"),
            })
        })
        .collect();
    let summary = format!(
        "Successfully listed {} {kind} resources in {}all namespaces",
        items.len(),
        ns_prefix(namespace)
    );
    ToolOutput::success(
        summary,
        json!({"kind": kind, "api_version": api_version, "namespace": namespace, "count": items.len(), "items": items}),
    )
}

/// The object as the dynamic client's `to_dict()` shows it: no managedFields, no nulls.
fn presentable(mut obj: Value) -> Value {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    strip_nulls(&mut obj);
    obj
}

fn read_k8s_resource(world: &mut World, a: &Args) -> ToolOutput {
    let (cluster, kind, api_version, name) = (
        a.req("cluster_name"),
        a.req("kind"),
        a.req("api_version"),
        a.req("name"),
    );
    let namespace = a.str("namespace");
    let target = format!("{kind} {}{name}", ns_prefix(namespace));
    let result = world
        .cluster(cluster)
        .map_err(|e| e.to_string())
        .and_then(|_| {
            world
                .resolve(api_version, kind)
                .map_err(|e| e.to_string())
                .cloned()
        })
        .and_then(|res| {
            let route = world
                .route_request(&res, Some(name), namespace)
                .map_err(|e| e.to_string())?;
            match &route.name {
                Some(routed) => world
                    .get(cluster, &route.res, route.namespace.as_deref(), routed)
                    .map_err(|e| e.to_string()),
                None => Err(format!("the path for {name} names a list, not an object")),
            }
        });
    match result {
        Ok(obj) => ToolOutput::success(
            format!("Successfully retrieved {target}"),
            json!({"kind": kind, "name": name, "namespace": namespace, "api_version": api_version, "resource": presentable(obj)}),
        ),
        Err(e) => ToolOutput::error(format!(
            "Failed to read {target}: Error reading {kind} resource: {e}"
        )),
    }
}

fn manage_k8s_resource(world: &mut World, a: &Args) -> ToolOutput {
    let (operation, cluster, kind, api_version) = (
        a.req("operation"),
        a.req("cluster_name"),
        a.req("kind"),
        a.req("api_version"),
    );
    let (name, namespace, body) = (a.str("name"), a.str("namespace"), a.value("body"));
    const OPS: [&str; 5] = ["create", "replace", "patch", "delete", "read"];
    if !OPS.contains(&operation) {
        return ToolOutput::error(format!(
            "Invalid operation: {operation}. Valid operations are: create, replace, patch, delete, read"
        ));
    }
    let shown_name = name
        .or_else(|| {
            body.and_then(|b| b.pointer("/metadata/name"))
                .and_then(Value::as_str)
        })
        .unwrap_or_default();
    let shown_ns = namespace.or_else(|| {
        body.and_then(|b| b.pointer("/metadata/namespace"))
            .and_then(Value::as_str)
    });
    let target = format!("{kind} {}{shown_name}", ns_prefix(shown_ns));
    let fail = |e: String| {
        ToolOutput::error(format!(
            "Failed to {operation} {target}: Error managing {kind} resource: {e}"
        ))
    };
    if let Err(e) = world.cluster(cluster) {
        return fail(e.to_string());
    }
    let res = match world.resolve(api_version, kind) {
        Ok(r) => r.clone(),
        Err(e) => return fail(e.to_string()),
    };
    if operation != "create" && name.is_none() {
        return fail(format!(
            "Resource name is required for {operation} operation"
        ));
    }
    if matches!(operation, "create" | "replace" | "patch") && body.is_none() {
        return fail(format!(
            "Resource body is required for {operation} operation"
        ));
    }
    let empty = json!({});
    let body = body.unwrap_or(&empty);
    let name_arg = name.unwrap_or_default();
    let outcome = dynamic_client_request(world, cluster, &res, operation, name, namespace, body);
    let obj = match outcome {
        Ok(obj) => obj,
        Err(e) => return fail(e.to_string()),
    };
    let final_ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let final_name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or(name_arg)
        .to_owned();
    let target = format!(
        "{} {}{final_name}",
        res.kind,
        ns_prefix(final_ns.as_deref())
    );
    let verb = match operation {
        "create" => "created",
        "replace" => "replaced",
        "patch" => "patched",
        "delete" => "deleted",
        _ => "retrieved",
    };
    let resource = if operation == "read" {
        presentable(obj)
    } else {
        Value::Null
    };
    let out = ToolOutput::success(
        format!("Successfully {verb} {target}"),
        json!({"kind": kind, "name": final_name, "namespace": final_ns, "api_version": api_version, "operation": operation, "resource": resource}),
    );
    if operation == "read" {
        out
    } else {
        let list_changed = res.kind == "Namespace" && matches!(operation, "create" | "delete");
        out.with_change(
            format!("{verb} {target} on cluster {cluster}"),
            list_changed,
        )
    }
}

/// One `manage_k8s_resource` operation as the dynamic client sends it and the API server acts
/// on it: the body gets the argument's name and namespace, the namespace falls back to the
/// body's (`ensure_namespace`), the request path is built unescaped and routed with `..`
/// resolved, and the API server refuses a body whose namespace differs from the path's.
fn dynamic_client_request(
    world: &mut World,
    cluster: &str,
    res: &ApiResource,
    operation: &str,
    name: Option<&str>,
    namespace: Option<&str>,
    body: &Value,
) -> Result<Value, K8sError> {
    let mut body = body.clone();
    if let Some(map) = body.as_object_mut() {
        let meta = map.entry("metadata").or_insert_with(|| json!({}));
        if let (Some(meta), Some(name)) = (meta.as_object_mut(), name) {
            meta.insert("name".into(), json!(name));
        }
        if let (Some(meta), Some(ns)) = (meta.as_object_mut(), namespace) {
            meta.insert("namespace".into(), json!(ns));
        }
    }
    let body_ns = body
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let namespace = match operation {
        "create" | "replace" | "patch" if res.namespaced => Some(
            namespace
                .map(str::to_owned)
                .or(body_ns.clone())
                .ok_or_else(|| {
                    K8sError::bad_request(format!(
                        "Namespace is required for {}.{}",
                        res.api_version, res.kind
                    ))
                })?,
        ),
        _ => namespace.map(str::to_owned),
    };
    let path_name = if operation == "create" { None } else { name };
    let route = world.route_request(res, path_name, namespace.as_deref())?;
    let routed_ns = route.namespace.as_deref();
    if operation != "create" && route.name.is_none() {
        return Err(K8sError::not_found(format!(
            "the path for {name_arg} names a collection, not an object",
            name_arg = name.unwrap_or_default()
        )));
    }
    if matches!(operation, "create" | "replace")
        && route.res.namespaced
        && body_ns.as_deref().is_some_and(|b| Some(b) != routed_ns)
    {
        return Err(K8sError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
                .to_string(),
        ));
    }
    let body_name = body.pointer("/metadata/name").and_then(Value::as_str);
    if operation == "replace" && body_name != route.name.as_deref() {
        return Err(K8sError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({})",
            body_name.unwrap_or_default(),
            route.name.as_deref().unwrap_or_default()
        )));
    }
    let routed_name = route.name.as_deref().unwrap_or_default();
    match operation {
        "create" => world.create(cluster, &route.res, routed_ns, None, &body),
        "replace" => world.replace(cluster, &route.res, routed_ns, route.name.as_deref(), &body),
        "patch" => world.patch(cluster, &route.res, routed_ns, routed_name, &body),
        "delete" => world.delete(cluster, &route.res, routed_ns, routed_name),
        _ => world.get(cluster, &route.res, routed_ns, routed_name),
    }
}

/// Directories the open-source server refuses to read manifests from (`path_validation.py`).
const PROTECTED_DIRS: [&str; 7] = [
    "~/.aws",
    "~/.ssh",
    "~/.kube",
    "~/.gnupg",
    "~/.docker",
    "/etc",
    "/root",
];

/// The open-source server's `yaml_path`: an absolute local path outside protected dirs.
fn read_manifest_file(path: &str) -> Result<String, String> {
    let p = std::path::Path::new(path);
    if !p.is_absolute() {
        return Err(format!("Path must be absolute: {path}"));
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let canonical =
        std::fs::canonicalize(p).map_err(|e| format!("Error reading YAML file {path}: {e}"))?;
    for dir in PROTECTED_DIRS {
        let dir = match dir.strip_prefix("~/") {
            Some(rest) if !home.is_empty() => std::path::Path::new(&home).join(rest),
            Some(_) => continue,
            None => std::path::PathBuf::from(dir),
        };
        if canonical.starts_with(&dir) {
            return Err(format!(
                "Access to {path} is not allowed: it is inside the protected directory {}",
                dir.display()
            ));
        }
    }
    std::fs::read_to_string(&canonical).map_err(|e| format!("Error reading YAML file {path}: {e}"))
}

fn apply_yaml(world: &mut World, a: &Args, names: ToolNames) -> ToolOutput {
    let (cluster, namespace, force) = (
        a.req("cluster_name"),
        a.req("namespace"),
        a.bool("force", true),
    );
    let (content, source) = match (a.str("yaml_content"), a.str("yaml_path")) {
        (Some(content), _) => (content.to_owned(), "YAML content".to_owned()),
        // Only the open-source server runs next to the client and can read its files.
        (None, Some(path)) if names == ToolNames::OpenSource => match read_manifest_file(path) {
            Ok(content) => (content, format!("YAML file {path}")),
            Err(e) => return ToolOutput::error(format!("Failed to apply YAML: {e}")),
        },
        (None, Some(_)) => {
            return ToolOutput::error(
                "Failed to apply YAML: yaml_path is not supported: the EKS MCP server cannot read files on your machine. Pass the manifest text in yaml_content",
            );
        }
        (None, None) => return ToolOutput::error("Failed to apply YAML: yaml_content is required"),
    };
    let content = content.as_str();
    if let Err(e) = world.cluster(cluster) {
        return ToolOutput::error(format!("Failed to apply YAML: {e}"));
    }
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(content).enumerate() {
        match Value::deserialize(doc) {
            Ok(Value::Null) => {}
            Ok(v) if v.is_object() => docs.push(v),
            Ok(_) => {
                return ToolOutput::error(format!(
                    "Failed to apply YAML: document {} is not a mapping",
                    i + 1
                ));
            }
            Err(e) => return ToolOutput::error(format!("Failed to apply YAML: invalid YAML: {e}")),
        }
    }
    let (mut created, mut updated) = (0, 0);
    let mut out_changes = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let kind = doc["kind"].as_str().unwrap_or_default();
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        let name = doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let doc_ns = doc.pointer("/metadata/namespace").and_then(Value::as_str);
        let ns = doc_ns.unwrap_or(namespace);
        let target = format!("{kind} {}{name}", ns_prefix(Some(ns)));
        let fail = |e: String| {
            ToolOutput::error(format!(
                "Failed to apply YAML: Error applying document {} ({target}): {e}",
                i + 1
            ))
        };
        let res = match world.resolve(api_version, kind) {
            Ok(r) => r.clone(),
            Err(e) => return fail(e.to_string()),
        };
        let ns_arg = res.namespaced.then_some(ns);
        // The upstream asks whether the object exists (a GET of its path), then patches that
        // same path or creates under the collection: both paths built unescaped, `..` resolved.
        let existing = world
            .route_request(&res, Some(name), ns_arg)
            .ok()
            .filter(|r| {
                r.name.as_deref().is_some_and(|n| {
                    world
                        .get(cluster, &r.res, r.namespace.as_deref(), n)
                        .is_ok()
                })
            });
        match existing {
            Some(route) if force => {
                let routed_name = route.name.as_deref().unwrap_or_default();
                match world.patch(
                    cluster,
                    &route.res,
                    route.namespace.as_deref(),
                    routed_name,
                    doc,
                ) {
                    Ok(_) => {
                        updated += 1;
                        out_changes.push((format!("updated {target} on cluster {cluster}"), false));
                    }
                    Err(e) => return fail(e.to_string()),
                }
            }
            _ => match dynamic_client_request(world, cluster, &res, "create", None, ns_arg, doc) {
                Ok(_) => {
                    created += 1;
                    out_changes.push((
                        format!("created {target} on cluster {cluster}"),
                        res.kind == "Namespace",
                    ));
                }
                Err(e) => return fail(e.to_string()),
            },
        }
    }
    let mut out = ToolOutput::success(
        format!(
            "Successfully applied all resources from {source} ({created} created, {updated} updated)"
        ),
        json!({"force_applied": force, "resources_created": created, "resources_updated": updated}),
    );
    for (description, list_changed) in out_changes {
        out = out.with_change(description, list_changed);
    }
    out
}

fn get_pod_logs(world: &mut World, a: &Args) -> ToolOutput {
    let (cluster, namespace, pod) = (a.req("cluster_name"), a.req("namespace"), a.req("pod_name"));
    let container = a.str("container_name");
    let tail_lines = a.int("tail_lines", 100).max(0) as usize;
    let limit_bytes = a.int("limit_bytes", 10_240).max(1) as usize;
    let container_note = container
        .map(|c| format!(" (container: {c})"))
        .unwrap_or_default();
    let fail = |e: String| {
        ToolOutput::error(format!(
            "Failed to get logs from pod {namespace}/{pod}{container_note}: Error getting logs from pod {namespace}/{pod}: {e}"
        ))
    };
    if let Err(e) = world.cluster(cluster) {
        return fail(e.to_string());
    }
    let (_, source) = match world.pod_logs(
        cluster,
        namespace,
        pod,
        container,
        a.bool("previous", false),
    ) {
        Ok(found) => found,
        Err(e) => return fail(e.to_string()),
    };
    let lines = source.tail(tail_lines);
    let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in &lines {
        text.push_str(line);
        text.push('\n');
    }
    if text.len() > limit_bytes {
        let mut cut = limit_bytes;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    let log_lines: Vec<&str> = if text.is_empty() {
        Vec::new()
    } else {
        text.split('\n').collect()
    };
    ToolOutput::success(
        format!(
            "Successfully retrieved {} log lines from pod {namespace}/{pod}{container_note}",
            log_lines.len()
        ),
        json!({"pod_name": pod, "namespace": namespace, "container_name": container, "log_lines": log_lines}),
    )
}

fn get_k8s_events(world: &mut World, a: &Args) -> ToolOutput {
    let (cluster, kind, name) = (a.req("cluster_name"), a.req("kind"), a.req("name"));
    let namespace = a.str("namespace");
    let target = format!("{kind} {}{name}", ns_prefix(namespace));
    if let Err(e) = world.cluster(cluster) {
        return ToolOutput::error(format!("Failed to get events for {target}: {e}"));
    }
    let Ok(event_res) = world.resolve("v1", "Event").cloned() else {
        return ToolOutput::error(format!(
            "Failed to get events for {target}: events are not served"
        ));
    };
    let events: Vec<Value> = world
        .list(cluster, &event_res, namespace)
        .into_iter()
        .filter(|e| e["involvedObject"]["kind"] == kind && e["involvedObject"]["name"] == name)
        .map(|e| {
            json!({
                "first_timestamp": e["firstTimestamp"],
                "last_timestamp": e["lastTimestamp"],
                "count": e["count"],
                "message": e["message"],
                "reason": e["reason"],
                "reporting_component": e["reportingComponent"],
                "type": e["type"],
            })
        })
        .collect();
    ToolOutput::success(
        format!(
            "Successfully retrieved {} events for {target}",
            events.len()
        ),
        json!({
            "involved_object_kind": kind,
            "involved_object_name": name,
            "involved_object_namespace": namespace,
            "count": events.len(),
            "events": events,
        }),
    )
}

fn list_api_versions(world: &mut World, a: &Args) -> ToolOutput {
    let cluster = a.req("cluster_name");
    if let Err(e) = world.cluster(cluster) {
        return ToolOutput::error(format!(
            "Failed to list API versions for cluster {cluster}: {e}"
        ));
    }
    let mut versions: BTreeSet<String> = world
        .api_resources
        .iter()
        .map(|r| r.api_version.clone())
        .collect();
    for extra in [
        "admissionregistration.k8s.io/v1",
        "apiextensions.k8s.io/v1",
        "coordination.k8s.io/v1",
        "discovery.k8s.io/v1",
        "events.k8s.io/v1",
        "vpcresources.k8s.aws/v1beta1",
    ] {
        versions.insert(extra.to_owned());
    }
    let versions: Vec<String> = versions.into_iter().collect();
    ToolOutput::success(
        format!(
            "Successfully retrieved {} API versions for cluster {cluster}",
            versions.len()
        ),
        json!({"cluster_name": cluster, "api_versions": versions, "count": versions.len()}),
    )
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn generate_app_manifest(a: &Args) -> ToolOutput {
    let app = a.req("app_name");
    if !is_dns_label(app) {
        return ToolOutput::error(format!(
            "Invalid app_name '{app}': must be a lowercase RFC 1123 label (a-z, 0-9, '-', at most 63 characters, starting and ending with an alphanumeric character)"
        ));
    }
    let namespace = a.str("namespace").unwrap_or("default");
    let scheme = a.str("load_balancer_scheme").unwrap_or("internal");
    if !matches!(scheme, "internal" | "internet-facing") {
        return ToolOutput::error(format!(
            "Invalid load_balancer_scheme '{scheme}': use \"internal\" or \"internet-facing\""
        ));
    }
    let port = a.int("port", 80);
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "namespace": namespace, "labels": {"app": app}},
        "spec": {
            "replicas": a.int("replicas", 2),
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{
                    "name": app,
                    "image": a.req("image_uri"),
                    "ports": [{"containerPort": port}],
                    "resources": {"requests": {"cpu": a.str("cpu").unwrap_or("100m"), "memory": a.str("memory").unwrap_or("128Mi")}},
                }]},
            },
        },
    });
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": app,
            "namespace": namespace,
            "annotations": {
                "service.beta.kubernetes.io/aws-load-balancer-type": "external",
                "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
                "service.beta.kubernetes.io/aws-load-balancer-scheme": scheme,
            },
        },
        "spec": {"type": "LoadBalancer", "selector": {"app": app}, "ports": [{"port": 80, "targetPort": port, "protocol": "TCP"}]},
    });
    let manifest = [deployment, service]
        .iter()
        .map(|doc| serde_yaml::to_string(doc).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("---\n");
    ToolOutput::success(
        format!("Successfully generated manifest for {app} in namespace {namespace}"),
        json!({"app_name": app, "namespace": namespace, "output_file_path": a.str("output_dir").map(|d| format!("{}/{app}-manifest.yaml", d.trim_end_matches('/'))), "manifest": manifest}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(world: &mut World, name: &str, args: Value) -> Value {
        let cat = Catalogue::new(ToolNames::Hosted);
        call(world, &cat, name, Some(&args))
            .unwrap_or_else(|_| panic!("{name} exists"))
            .result
    }

    fn data(result: &Value) -> Value {
        serde_json::from_str(result["content"][1]["text"].as_str().unwrap()).unwrap()
    }

    #[test]
    fn catalogues_have_the_expected_sizes_and_hints() {
        let hosted = Catalogue::new(ToolNames::Hosted);
        assert_eq!(hosted.list().len(), 20);
        let ro = hosted
            .list()
            .iter()
            .filter(|t| t["annotations"]["readOnlyHint"] == true)
            .count();
        assert_eq!(ro, 16);
        assert!(hosted.find("search_eks_troubleshooting_guide").is_some());
        let oss = Catalogue::new(ToolNames::OpenSource);
        assert_eq!(oss.list().len(), 16);
        assert!(oss.find("search_eks_troubleshoot_guide").is_some());
        assert!(oss.find("read_k8s_resource").is_none());
    }

    #[test]
    fn every_listed_tool_has_a_handler_and_answers_minimal_arguments() {
        for names in [ToolNames::Hosted, ToolNames::OpenSource] {
            let cat = Catalogue::new(names);
            for tool in cat.list() {
                let name = tool["name"].as_str().unwrap();
                let mut args = Map::new();
                for key in tool["inputSchema"]["required"].as_array().unwrap() {
                    let key = key.as_str().unwrap();
                    let value = match key {
                        "cluster_name" => json!("dev"),
                        "resource_type" if name.contains("eks_resource") => json!("cluster"),
                        "resource_type" => json!("pod"),
                        "operation" => json!("describe"),
                        "permissions" => {
                            json!({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"})
                        }
                        "role_name" => json!("eks-cluster-role"),
                        "dimensions" => json!({"ClusterName": "dev"}),
                        _ => json!("x"),
                    };
                    args.insert(key.to_owned(), value);
                }
                let mut world = World::sample();
                let out = call(&mut world, &cat, name, Some(&Value::Object(args))).unwrap();
                let text = out.result["content"][0]["text"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                assert!(!text.contains("no handler"), "{name}: {text}");
                assert!(!text.contains("validation error"), "{name}: {text}");
            }
        }
    }

    #[test]
    fn missing_required_argument_is_a_tool_error() {
        let mut world = World::sample();
        let r = run(&mut world, "get_pod_logs", json!({"cluster_name": "dev"}));
        assert_eq!(r["isError"], true);
        let text = r["content"][0]["text"].as_str().unwrap();
        assert!(
            text.contains("2 validation errors for get_pod_logsArguments"),
            "{text}"
        );
        assert!(text.contains("namespace\n  Field required"));
    }

    #[test]
    fn list_spans_all_namespaces_and_filters_by_label() {
        let mut world = World::sample();
        let all = run(
            &mut world,
            "list_k8s_resources",
            json!({"cluster_name": "dev", "kind": "Secret", "api_version": "v1"}),
        );
        let d = data(&all);
        assert_eq!(
            all["content"][0]["text"],
            "Successfully listed 4 Secret resources in all namespaces"
        );
        assert!(
            d["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["namespace"] == "checkout")
        );
        let some = run(
            &mut world,
            "list_k8s_resources",
            json!({"cluster_name": "dev", "kind": "Pod", "api_version": "v1", "namespace": "payments", "label_selector": "app in (payments-api)"}),
        );
        assert_eq!(data(&some)["count"], 2);
    }

    #[test]
    fn apply_yaml_creates_then_updates() {
        let mut world = World::sample();
        let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, namespace: checkout}\n";
        let args = json!({"cluster_name": "dev", "namespace": "payments", "yaml_content": yaml});
        let first = run(&mut world, "apply_yaml", args.clone());
        assert_eq!(data(&first)["resources_created"], 2, "{first}");
        let second = run(&mut world, "apply_yaml", args);
        assert_eq!(data(&second)["resources_updated"], 2);
        let only_path = run(
            &mut world,
            "apply_yaml",
            json!({"cluster_name": "dev", "namespace": "x", "yaml_path": "/tmp/a.yaml"}),
        );
        assert_eq!(only_path["isError"], true);
    }

    #[test]
    fn open_source_apply_yaml_reads_absolute_paths_only() {
        let mut world = World::sample();
        let cat = Catalogue::new(ToolNames::OpenSource);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.yaml");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-file}\n",
        )
        .unwrap();
        let args = json!({"cluster_name": "dev", "namespace": "checkout", "yaml_path": path.to_str().unwrap()});
        let out = call(&mut world, &cat, "apply_yaml", Some(&args))
            .unwrap()
            .result;
        assert_eq!(out["isError"], false, "{out}");
        assert!(
            out["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("from YAML file /")
        );
        assert!(
            world
                .object("dev", "v1", "ConfigMap", Some("checkout"), "from-file")
                .is_some()
        );
        let relative =
            json!({"cluster_name": "dev", "namespace": "checkout", "yaml_path": "app.yaml"});
        let out = call(&mut world, &cat, "apply_yaml", Some(&relative))
            .unwrap()
            .result;
        assert_eq!(out["isError"], true);
        let etc =
            json!({"cluster_name": "dev", "namespace": "checkout", "yaml_path": "/etc/passwd"});
        let out = call(&mut world, &cat, "apply_yaml", Some(&etc))
            .unwrap()
            .result;
        let text = out["content"][0]["text"].as_str().unwrap();
        assert!(text.contains("not allowed"), "{text}");
    }

    #[test]
    fn pod_logs_respect_limit_bytes() {
        let mut world = World::sample();
        let r = run(
            &mut world,
            "get_pod_logs",
            json!({"cluster_name": "dev", "namespace": "monitoring", "pod_name": "bulk-logger", "tail_lines": 5000, "limit_bytes": 1000}),
        );
        let d = data(&r);
        let total: usize = d["log_lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().len() + 1)
            .sum();
        assert!(total <= 1001);
    }
}
