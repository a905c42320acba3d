//! drift: the upstream's `tools/list` compared with `policies/catalogue.yaml`.
//!
//! The hosted EKS MCP server is a preview, and the open-source server changes between
//! releases; the policies were written for the catalogue. This module reports where the two
//! differ: tools the catalogue does not know, catalogue tools the upstream does not list,
//! input-schema properties no catalogue key names (a new argument might carry a namespace or a
//! manifest), and annotations that contradict the catalogue's access class. It reports only:
//! a decision never reads a drift report, so drift can never loosen one (an unknown tool stays
//! denied; a tool the catalogue calls read stays decided as read until a person edits it).
//!
//! The gateway sees the upstream's list at every stdio child start, after every
//! `notifications/tools/list_changed`, and in every complete `tools/list` answer it relays.
//! [`ToolsSeen`] holds the newest list; [`spawn_monitor`] recomputes the report when the list
//! or the policy revision changes, sets `mcp_gateway_catalogue_drift{kind,tool}`, logs each
//! change once, and keeps the text `/readyz` shows. The same comparison serves
//! `eks-mcp-gateway catalogue diff` and the skeleton entries of `catalogue sync`.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::classify::{Access, Catalogue};

/// Most drift entries exported as metric series (the `tool` label comes from the upstream).
const MAX_SERIES: usize = 200;

/// One difference between the upstream's tools and the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Drift {
    /// `unknown_tool`, `missing_tool`, `unmapped_argument` or `annotation`.
    pub kind: &'static str,
    pub tool: String,
    /// What differs, and what the gateway does about it, in a sentence.
    pub detail: String,
}

/// Compare an upstream tool list with the catalogue.
pub fn compare(catalogue: &Catalogue, tools: &[Value]) -> Vec<Drift> {
    let mut out = Vec::new();
    let listed: BTreeSet<&str> = tools
        .iter()
        .filter_map(|t| t.get("name").and_then(Value::as_str))
        .collect();
    for tool in tools {
        let Some(name) = tool.get("name").and_then(Value::as_str) else {
            continue;
        };
        let Some(shape) = catalogue.shape(name) else {
            out.push(Drift {
                kind: "unknown_tool",
                tool: name.to_owned(),
                detail: format!(
                    "the upstream offers {name}, which the catalogue does not know: calls are denied as unknown until it is classified in catalogue.yaml (catalogue sync prints a skeleton)"
                ),
            });
            continue;
        };
        for arg in schema_properties(tool) {
            if !shape.arguments.contains(arg) {
                out.push(Drift {
                    kind: "unmapped_argument",
                    tool: name.to_owned(),
                    detail: format!(
                        "{name} takes an argument {arg:?} that no catalogue key names: the policy does not see what it carries (it might name a namespace or hold a manifest); map it or list it under arguments"
                    ),
                });
            }
        }
        let hint = |key: &str| {
            tool.get("annotations")
                .and_then(|a| a.get(key))
                .and_then(Value::as_bool)
        };
        if hint("readOnlyHint") == Some(true) && shape.least == Access::Write {
            out.push(Drift {
                kind: "annotation",
                tool: name.to_owned(),
                detail: format!(
                    "the upstream marks {name} readOnlyHint: true, the catalogue classifies every call of it as write: calls stay gated as writes"
                ),
            });
        }
        if (hint("readOnlyHint") == Some(false) || hint("destructiveHint") == Some(true))
            && shape.most < Access::Write
        {
            out.push(Drift {
                kind: "annotation",
                tool: name.to_owned(),
                detail: format!(
                    "the upstream marks {name} as changing things (readOnlyHint: false or destructiveHint: true), the catalogue classifies it as {:?}: calls are still decided as that class; check the catalogue entry",
                    shape.most
                ),
            });
        }
    }
    for (name, aliases) in catalogue.entries() {
        let present = std::iter::once(name)
            .chain(aliases)
            .any(|n| listed.contains(n.as_str()));
        if !present {
            out.push(Drift {
                kind: "missing_tool",
                tool: name.clone(),
                detail: format!(
                    "the catalogue classifies {name}, which the upstream does not list (nothing to do for the gateway; remove the entry once the tool is gone for good)"
                ),
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

fn schema_properties(tool: &Value) -> impl Iterator<Item = &str> {
    tool.pointer("/inputSchema/properties")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|p| p.keys().map(String::as_str))
}

/// Catalogue entries for the tools the catalogue does not know, as YAML to paste into
/// `tools:` and complete. Access is `write` (the most guarded class) until a person decides.
pub fn skeleton(drift: &[Drift], tools: &[Value]) -> String {
    let mut out = String::new();
    for d in drift.iter().filter(|d| d.kind == "unknown_tool") {
        let Some(tool) = tools
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some(&d.tool))
        else {
            continue;
        };
        let description = tool
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(100)
            .collect::<String>();
        out.push_str(&format!("  {}:\n", d.tool));
        if !description.is_empty() {
            out.push_str(&format!("    # {description}\n"));
        }
        out.push_str(
            "    # To complete: set access (read | sensitive | write); map the arguments that name\n    # a namespace, kind, object name, body or manifest; list the rest under arguments.\n",
        );
        out.push_str("    access: write\n");
        let args: Vec<&str> = schema_properties(tool).collect();
        if args.contains(&"cluster_name") {
            out.push_str("    cluster: cluster_name\n");
        }
        let rest: Vec<&str> = args.into_iter().filter(|a| *a != "cluster_name").collect();
        if !rest.is_empty() {
            // Left as a comment: until a person says what each one carries, drift keeps
            // reporting them.
            out.push_str(&format!("    # arguments: [{}]\n", rest.join(", ")));
        }
    }
    out
}

/// The newest complete tool list the upstream gave, shared by the forward stage (which sees
/// it) and the monitor (which compares it).
pub struct ToolsSeen {
    tx: watch::Sender<Option<Arc<Vec<Value>>>>,
    /// Woken by a relayed `notifications/tools/list_changed`: read the list again.
    refresh: Arc<tokio::sync::Notify>,
    /// For the newest list, the tools whose schema mirrors arguments into `Mcp-Param-*`
    /// headers, with those parameters: computed once per list, looked up per call.
    mirrors: Mutex<HashMap<String, Arc<[crate::mcp::Mirrored]>>>,
    /// The current report, for `/readyz`.
    report: Mutex<Option<Vec<Drift>>>,
}

impl Default for ToolsSeen {
    fn default() -> Self {
        ToolsSeen {
            tx: watch::channel(None).0,
            refresh: Arc::new(tokio::sync::Notify::new()),
            mirrors: Mutex::new(HashMap::new()),
            report: Mutex::new(None),
        }
    }
}

impl ToolsSeen {
    /// Record a complete list; listeners wake only when it differs from the last one.
    pub fn observe(&self, tools: Vec<Value>) {
        self.tx.send_if_modified(|cur| {
            if cur.as_deref() == Some(&tools) {
                false
            } else {
                let mirrors = tools
                    .iter()
                    .filter_map(|t| {
                        let name = t.get("name")?.as_str()?;
                        let m = crate::mcp::mirrored_parameters(t.get("inputSchema")?);
                        (!m.is_empty()).then(|| (name.to_owned(), Arc::from(m)))
                    })
                    .collect();
                *self.mirrors.lock().unwrap_or_else(|p| p.into_inner()) = mirrors;
                *cur = Some(Arc::new(tools));
                true
            }
        });
    }

    /// The upstream said its tools changed: the watcher (`upstream.watch_tools`) reads them.
    pub fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// The newest list, if one was seen.
    pub fn current(&self) -> Option<Arc<Vec<Value>>> {
        self.tx.borrow().clone()
    }

    /// The parameters a tool of the newest list mirrors into `Mcp-Param-*` headers (None
    /// when it mirrors none, or the tool is not listed).
    pub fn mirrored(&self, name: &str) -> Option<Arc<[crate::mcp::Mirrored]>> {
        self.mirrors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// `/readyz` detail: drift never makes the replica unready, it is reported.
    pub fn readiness(&self) -> String {
        match &*self.report.lock().unwrap_or_else(|p| p.into_inner()) {
            None => "no tools/list seen from the upstream yet".to_owned(),
            Some(d) if d.is_empty() => "the upstream's tools match the catalogue".to_owned(),
            Some(d) => format!(
                "{} difference(s) from the catalogue: {}",
                d.len(),
                d.iter()
                    .map(|d| format!("{} {}", d.kind, d.tool))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Recompute the drift report when the upstream's list or the policy revision changes.
pub fn spawn_monitor(seen: Arc<ToolsSeen>, policy: Arc<crate::policy::PolicyHandle>) {
    tokio::spawn(async move {
        let mut rx = seen.tx.subscribe();
        let mut previous: Vec<Drift> = Vec::new();
        loop {
            let tools = rx.borrow_and_update().clone();
            let engine = policy.current();
            if let Some(tools) = tools {
                let report = compare(engine.catalogue(), &tools);
                publish(&previous, &report);
                previous = report.clone();
                *seen.report.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
            }
            let revision = engine.revision().to_owned();
            // Wake on a new list, or look at the policy revision every few seconds.
            loop {
                tokio::select! {
                    changed = rx.changed() => {
                        if changed.is_err() { return; }
                        break;
                    }
                    () = tokio::time::sleep(Duration::from_secs(2)) => {
                        if policy.current().revision() != revision { break; }
                    }
                }
            }
        }
    });
}

/// `upstream.watch_tools`: read the upstream's tools at start, retrying with backoff (1 s
/// doubling to 60 s) until it answers, and again whenever `request_refresh` is called. Holds
/// the gateway only while reading, and ends once the gateway is gone.
pub fn spawn_watcher(gateway: std::sync::Weak<crate::pipeline::Gateway>) {
    let Some(refresh) = gateway
        .upgrade()
        .map(|g| g.upstream.tools().refresh.clone())
    else {
        return;
    };
    tokio::spawn(async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            let Some(gw) = gateway.upgrade() else { return };
            let fetched = fetch_tools(&gw.upstream, gw.signer.as_ref()).await;
            let tools = gw.upstream.tools().clone();
            drop(gw);
            match fetched {
                Ok(list) => {
                    backoff = Duration::from_secs(1);
                    tools.observe(list);
                }
                Err(e) => {
                    tracing::warn!(
                        error = %format!("{e:#}"),
                        retry_in = ?backoff,
                        "could not read the upstream's tools/list for the catalogue check"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    continue;
                }
            }
            // Wait for the next change notice; look every minute whether the gateway is gone.
            loop {
                tokio::select! {
                    () = refresh.notified() => break,
                    () = tokio::time::sleep(Duration::from_secs(60)) => {
                        if gateway.strong_count() == 0 { return; }
                    }
                }
            }
        }
    });
}

/// The whole `tools/list` of a live upstream, asked the way a client asks (a session-era
/// `initialize`, then every page of `tools/list`, then DELETE), through the forward stage,
/// signed when `signer` is given: `catalogue diff` and `catalogue sync`.
pub async fn fetch_tools(
    upstream: &crate::forward::Upstream,
    signer: Option<&crate::sign::Signer>,
) -> anyhow::Result<Vec<Value>> {
    use anyhow::Context as _;
    let principal = crate::identity::Principal {
        id: "eks-mcp-gateway-catalogue".into(),
        groups: Vec::new(),
        auth: crate::identity::AuthKind::Static,
        claims: Default::default(),
    };
    let session: std::sync::Mutex<Option<String>> = Default::default();
    let session_id = || session.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let exchange = async |method: http::Method, body: Value| -> anyhow::Result<Option<Value>> {
        let bytes = if body.is_null() {
            bytes::Bytes::new()
        } else {
            bytes::Bytes::from(body.to_string())
        };
        let mut builder = http::Request::builder()
            .method(method)
            .uri(upstream.uri().clone())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25");
        if let Some(authority) = upstream.uri().authority() {
            builder = builder.header("host", authority.as_str());
        }
        if let Some(s) = session_id() {
            builder = builder.header(crate::mcp::H_SESSION_ID, s);
        }
        let (mut parts, ()) = builder.body(())?.into_parts();
        if let Some(signer) = signer {
            signer.sign(&mut parts, &bytes, &principal, None).await?;
        }
        let req = http::Request::from_parts(parts, http_body_util::Full::new(bytes));
        let resp = upstream.send(req).await?;
        let status = resp.status();
        if let Some(s) = crate::mcp::header_str(resp.headers(), crate::mcp::H_SESSION_ID) {
            *session.lock().unwrap_or_else(|p| p.into_inner()) = Some(s.to_owned());
        }
        let sse = crate::mcp::header_str(resp.headers(), "content-type")
            .is_some_and(|c| c.starts_with("text/event-stream"));
        let bytes = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map_err(|e| anyhow::anyhow!("reading the upstream's answer: {e}"))?
            .to_bytes();
        if !status.is_success() {
            anyhow::bail!(
                "the upstream answered HTTP {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            );
        }
        if bytes.is_empty() {
            return Ok(None);
        }
        if !sse {
            return Ok(Some(serde_json::from_slice(&bytes)?));
        }
        let mut parser = crate::sse::SseParser::new(bytes.len() + 1);
        let items = parser.push(&bytes)?;
        Ok(items.into_iter().rev().find_map(|item| match item {
            crate::sse::SseItem::Event(ev) => serde_json::from_str::<Value>(&ev.data)
                .ok()
                .filter(|v| v.get("id").is_some() && v.get("method").is_none()),
            crate::sse::SseItem::Comment(_) => None,
        }))
    };
    let init = exchange(
        http::Method::POST,
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "eks-mcp-gateway catalogue", "version": env!("CARGO_PKG_VERSION")}}}),
    )
    .await
    .context("initialize")?;
    if let Some(err) = init.as_ref().and_then(|v| v.get("error")) {
        anyhow::bail!("the upstream refused initialize: {err}");
    }
    exchange(
        http::Method::POST,
        serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await
    .context("notifications/initialized")?;
    let mut tools = Vec::new();
    let mut cursor: Option<Value> = None;
    for page in 0..100 {
        let mut params = serde_json::Map::new();
        if let Some(c) = cursor.take() {
            params.insert("cursor".into(), c);
        }
        let answer = exchange(
            http::Method::POST,
            serde_json::json!({"jsonrpc": "2.0", "id": 2 + page, "method": "tools/list", "params": params}),
        )
        .await
        .context("tools/list")?
        .ok_or_else(|| anyhow::anyhow!("tools/list got an empty answer"))?;
        let result = answer
            .get("result")
            .ok_or_else(|| anyhow::anyhow!("tools/list failed: {answer}"))?;
        if let Some(Value::Array(list)) = result.get("tools") {
            tools.extend(list.iter().cloned());
        }
        match result.get("nextCursor") {
            Some(c) if !c.is_null() => cursor = Some(c.clone()),
            _ => break,
        }
    }
    if session_id().is_some() {
        let _ = exchange(http::Method::DELETE, Value::Null).await;
    }
    Ok(tools)
}

/// Metric series and one log line per change between two reports.
fn publish(previous: &[Drift], current: &[Drift]) {
    let gauge = &crate::metrics::global().catalogue_drift;
    let key = |d: &Drift| (d.kind, d.tool.clone(), d.detail.clone());
    let before: BTreeMap<_, &Drift> = previous.iter().map(|d| (key(d), d)).collect();
    let after: BTreeMap<_, &Drift> = current.iter().map(|d| (key(d), d)).collect();
    for (k, d) in &before {
        if !after.contains_key(k) {
            tracing::info!(kind = d.kind, tool = %d.tool, "catalogue drift resolved: {}", d.detail);
        }
    }
    for (k, d) in &after {
        if !before.contains_key(k) {
            tracing::warn!(kind = d.kind, tool = %d.tool, "catalogue drift: {}", d.detail);
        }
    }
    let series = |r: &[Drift]| -> BTreeMap<(&'static str, String), i64> {
        let mut m = BTreeMap::new();
        for d in r.iter().take(MAX_SERIES) {
            *m.entry((d.kind, d.tool.clone())).or_insert(0) = 1;
        }
        m
    };
    let (old, new) = (series(previous), series(current));
    for (kind, tool) in old.keys() {
        if !new.contains_key(&(*kind, tool.clone())) {
            let _ = gauge.remove_label_values(&[kind, tool.as_str()]);
        }
    }
    for ((kind, tool), v) in &new {
        gauge.with_label_values(&[kind, tool.as_str()]).set(*v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalogue() -> Catalogue {
        Catalogue::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"))
            .expect("shipped catalogue loads")
    }

    fn sim_tools(file: &str) -> Vec<Value> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn the_hosted_tool_set_matches_the_catalogue() {
        let drift = compare(&catalogue(), &sim_tools("src/sim/tools-hosted.json"));
        assert!(drift.is_empty(), "{drift:#?}");
    }

    #[test]
    fn each_kind_of_drift_is_reported() {
        let mut tools = sim_tools("src/sim/tools-hosted.json");
        tools.retain(|t| t["name"] != "list_api_versions");
        tools.push(
            json!({"name": "restart_deployment", "inputSchema": {"type": "object",
            "properties": {"cluster_name": {}, "namespace": {}}}}),
        );
        let logs = tools
            .iter_mut()
            .find(|t| t["name"] == "get_pod_logs")
            .unwrap();
        logs["inputSchema"]["properties"]["target_namespace"] = json!({"type": "string"});
        let list = tools
            .iter_mut()
            .find(|t| t["name"] == "list_k8s_resources")
            .unwrap();
        list["annotations"] = json!({"readOnlyHint": false, "destructiveHint": true});
        let drift = compare(&catalogue(), &tools);
        let kinds: Vec<(&str, &str)> = drift.iter().map(|d| (d.kind, d.tool.as_str())).collect();
        assert_eq!(
            kinds,
            vec![
                ("annotation", "list_k8s_resources"),
                ("missing_tool", "list_api_versions"),
                ("unknown_tool", "restart_deployment"),
                ("unmapped_argument", "get_pod_logs"),
            ]
        );
        let skeleton = skeleton(&drift, &tools);
        assert!(skeleton.contains("  restart_deployment:\n"), "{skeleton}");
        assert!(skeleton.contains("    access: write\n"), "{skeleton}");
        assert!(
            skeleton.contains("    cluster: cluster_name\n    # arguments: [namespace]\n"),
            "{skeleton}"
        );
    }
}
