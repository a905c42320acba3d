//! classify: turn one MCP request into facts the policy can reason about.
//!
//! The tool catalogue is data (`policies/catalogue.yaml`), not code: which tools exist, their
//! access class, how the operation follows from arguments, and where cluster, namespace,
//! kind, api version and name are found. This module never decides anything; it only states
//! facts, and a missing namespace on a namespaced listing is the explicit fact
//! `all_namespaces: true`, never an absent one.
//!
//! Facts err on the side of more: when a namespace could come from two places (an argument
//! and an object body), both are recorded; when content cannot be established (a manifest
//! that does not parse, an argument of the wrong type, a file on the upstream host), the
//! reason is recorded in `target.parse_error` so the policy can deny instead of guessing.
//! Kinds are canonicalised case-insensitively through the catalogue (`kind: secret` and
//! `secrets` both become `Secret`), so a policy comparing `kind == "Secret"` is not bypassed.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::manifest::ManifestLimits;
use crate::policy::PolicyError;

pub mod names;
mod yaml;

/// File name of the catalogue inside the policy directory.
pub const CATALOGUE_FILE: &str = "catalogue.yaml";

/// Deepest nesting of `List` kinds expanded before the manifest counts as unparseable.
const MAX_LIST_DEPTH: usize = 8;

/// Access class of a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Read,
    Sensitive,
    Write,
    Unknown,
}

/// One Kubernetes object a call touches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceRef {
    pub api_version: Option<String>,
    /// Canonical kind (`Secret` for `secret`, `secrets`, `SECRET`); custom kinds as given.
    pub kind: Option<String>,
    /// `None` for cluster-scoped kinds and for listings across all namespaces.
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The kind exactly as the caller wrote it (for audit).
    pub kind_given: Option<String>,
    /// True when the kind is cluster-scoped (catalogue `cluster_scoped_kinds`).
    pub cluster_scoped: bool,
    /// `namespaced`, `cluster`, or `unknown` when the catalogue cannot place the kind (a
    /// custom resource, or no kind at all): the shipped policy then asks for a grant of
    /// cluster-scoped objects, unless the data names the kind as namespaced.
    pub scope: &'static str,
    /// Where this fact was found: `arguments`, `body`, `yaml_content[2]`, `yaml_content[0].items[3]`.
    pub source: String,
    /// Index into `TargetFacts::objects` of the parsed object, when there is one.
    pub object: Option<usize>,
}

/// `input.tool` — the call itself.
#[derive(Debug, Clone, Serialize)]
pub struct ToolFacts {
    pub name: String,
    pub arguments: serde_json::Value,
    pub known: bool,
    pub access: Access,
    /// Lowercased operation argument (`manage_k8s_resource.operation`), when the tool has one.
    pub operation: Option<String>,
    /// The upstream counts this tool as privileged (`eks-mcp:CallPrivilegedTool`).
    pub privileged: bool,
    /// The tool acts on one EKS cluster and needs `target.cluster` to be meaningful.
    pub targets_cluster: bool,
}

/// `input.target` — what the call acts on.
#[derive(Debug, Clone, Serialize, Default)]
pub struct TargetFacts {
    pub cluster: Option<String>,
    pub resources: Vec<ResourceRef>,
    pub namespaces: Vec<String>,
    pub all_namespaces: bool,
    /// Parsed manifest documents (apply_yaml, manage_k8s_resource body), for content checks.
    pub objects: Vec<serde_json::Value>,
    /// Why the facts could not be fully established (unparseable manifest, argument of the
    /// wrong type, content the gateway cannot see). The shipped policy denies such calls.
    pub parse_error: Option<String>,
}

/// What an absent namespace argument means for a namespaced kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
enum NamespaceMissing {
    All,
    Default,
    #[default]
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct OperationSpec {
    argument: String,
    access: BTreeMap<String, Access>,
    #[serde(default = "write")]
    missing: Access,
}

fn write() -> Access {
    Access::Write
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolSpec {
    access: Access,
    #[serde(default)]
    privileged: bool,
    #[serde(default)]
    also_named: Vec<String>,
    #[serde(default)]
    operation: Option<OperationSpec>,
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    cluster_optional: bool,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    namespace_missing: NamespaceMissing,
    #[serde(default)]
    all_namespaces: bool,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    fixed_kind: Option<String>,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    manifests: Vec<String>,
    #[serde(default)]
    opaque: Vec<String>,
    #[serde(default)]
    reads_objects: bool,
    /// The tool's other arguments, which carry no fact (a query, a limit): listed so that
    /// drift detection can tell a new argument from a known one.
    #[serde(default)]
    arguments: Vec<String>,
}

/// What drift detection compares an upstream tool with (see `drift`).
#[derive(Debug, Clone)]
pub struct ToolShape {
    /// Every argument the entry names: mapped to a fact, or listed under `arguments`.
    pub arguments: std::collections::BTreeSet<String>,
    /// The least and the most access a call of the tool can have.
    pub least: Access,
    pub most: Access,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    version: u32,
    tools: BTreeMap<String, ToolSpec>,
    #[serde(default)]
    kinds: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    cluster_scoped_kinds: Vec<String>,
    #[serde(default)]
    sensitive_read_kinds: Vec<String>,
}

/// The tool catalogue, loaded from `policies/catalogue.yaml`.
#[derive(Debug, Clone)]
pub struct Catalogue {
    /// Every name (canonical and `also_named`) → spec.
    tools: BTreeMap<String, ToolSpec>,
    /// Lowercased kind or alias → canonical kind.
    kinds: HashMap<String, String>,
    cluster_scoped: HashSet<String>,
    sensitive_read: HashSet<String>,
    /// Each entry once: its name and its `also_named` spellings.
    entries: Vec<(String, Vec<String>)>,
}

impl Catalogue {
    /// Load `catalogue.yaml` from the policy directory.
    pub fn load(dir: &Path) -> Result<Catalogue, PolicyError> {
        let path = dir.join(CATALOGUE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Io {
            path: path.clone(),
            source,
        })?;
        Self::from_yaml_str(&text, &path)
    }

    /// Parse catalogue YAML; `path` is only used in messages.
    pub fn from_yaml_str(text: &str, path: &Path) -> Result<Catalogue, PolicyError> {
        let invalid = |message: String| PolicyError::Catalogue {
            path: path.to_path_buf(),
            message,
        };
        let file: CatalogueFile = serde_yaml::from_str(text).map_err(|e| {
            invalid(format!(
                "{e}. Fix: see the field list at the top of catalogue.yaml"
            ))
        })?;
        if file.version != 1 {
            return Err(invalid(format!(
                "`version: {}` is not supported. Fix: write `version: 1`",
                file.version
            )));
        }
        let mut kinds = HashMap::new();
        for (canonical, aliases) in &file.kinds {
            for spelling in std::iter::once(canonical).chain(aliases) {
                let key = spelling.to_ascii_lowercase();
                if let Some(prev) = kinds.insert(key, canonical.clone())
                    && &prev != canonical
                {
                    return Err(invalid(format!(
                        "kind spelling {spelling:?} names both {prev} and {canonical}. \
                         Fix: keep it under one kind in `kinds`"
                    )));
                }
            }
        }
        let canon = |k: &String| {
            kinds
                .get(&k.to_ascii_lowercase())
                .cloned()
                .unwrap_or(k.clone())
        };
        let cluster_scoped = file.cluster_scoped_kinds.iter().map(canon).collect();
        let sensitive_read = file.sensitive_read_kinds.iter().map(canon).collect();
        let mut tools = BTreeMap::new();
        let mut entries = Vec::new();
        for (name, spec) in file.tools {
            entries.push((name.clone(), spec.also_named.clone()));
            if let Some(op) = &spec.operation
                && op.access.keys().any(|k| k.to_ascii_lowercase() != *k)
            {
                return Err(invalid(format!(
                    "tools.{name}.operation.access keys must be lowercase. Fix: \
                     lowercase them (calls are matched case-insensitively)"
                )));
            }
            for alias in spec.also_named.clone() {
                if tools.insert(alias.clone(), spec.clone()).is_some() {
                    return Err(invalid(format!(
                        "tool {alias:?} is listed twice. Fix: keep one entry"
                    )));
                }
            }
            if tools.insert(name.clone(), spec).is_some() {
                return Err(invalid(format!(
                    "tool {name:?} is listed twice. Fix: keep one entry"
                )));
            }
        }
        Ok(Catalogue {
            tools,
            kinds,
            cluster_scoped,
            sensitive_read,
            entries,
        })
    }

    /// Each catalogue entry once: its name and its other spellings.
    pub fn entries(&self) -> &[(String, Vec<String>)] {
        &self.entries
    }

    /// The arguments and access range of a tool (any spelling), for drift detection.
    pub fn shape(&self, name: &str) -> Option<ToolShape> {
        let spec = self.tools.get(name)?;
        let mut arguments: std::collections::BTreeSet<String> = [
            &spec.cluster,
            &spec.namespace,
            &spec.kind,
            &spec.api_version,
            &spec.name,
            &spec.body,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .chain(spec.manifests.iter().cloned())
        .chain(spec.opaque.iter().cloned())
        .chain(spec.arguments.iter().cloned())
        .collect();
        if let Some(op) = &spec.operation {
            arguments.insert(op.argument.clone());
        }
        let (least, most) = match &spec.operation {
            None => (spec.access, spec.access),
            Some(op) => {
                let all = op
                    .access
                    .values()
                    .copied()
                    .chain([op.missing, Access::Write]);
                (self.least_access(name), all.max().unwrap_or(Access::Write))
            }
        };
        Some(ToolShape {
            arguments,
            least,
            most,
        })
    }

    /// True when `name` is a tool of the catalogue (canonical name or `also_named`).
    pub fn known(&self, name: &str) -> bool {
        self.tools.contains_key(name)
    }

    /// Every tool name the catalogue knows, including alternative spellings.
    pub fn tool_names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }

    /// The canonical spelling of a kind (`secrets` → `Secret`); unknown kinds as given.
    pub fn canonical_kind(&self, kind: &str) -> String {
        self.kinds
            .get(&kind.to_ascii_lowercase())
            .cloned()
            .unwrap_or_else(|| kind.to_string())
    }

    /// Where the catalogue places a (canonical) kind of an API version: `namespaced`,
    /// `cluster` or `unknown`. A `<Kind>List` is placed where its element kind is. The
    /// catalogue lists the built-in API, so a kind named in an API group that Kubernetes does
    /// not own (one with a dot that does not end in `.k8s.io`: `karpenter.sh`,
    /// `evil.example.com`) is `unknown` even when a built-in kind has the same name.
    pub fn scope(&self, kind: Option<&str>, api_version: Option<&str>) -> &'static str {
        let Some(kind) = kind else { return "unknown" };
        if let Some((group, _)) = api_version.and_then(|av| av.split_once('/'))
            && group.contains('.')
            && !group.ends_with(".k8s.io")
        {
            return "unknown";
        }
        let element = kind
            .strip_suffix("List")
            .filter(|k| !k.is_empty())
            .map(|k| self.canonical_kind(k));
        let place = |k: &str| {
            if self.cluster_scoped.contains(k) {
                Some("cluster")
            } else if self
                .kinds
                .get(&k.to_ascii_lowercase())
                .is_some_and(|c| c == k)
            {
                Some("namespaced")
            } else {
                None
            }
        };
        place(kind)
            .or_else(|| element.as_deref().and_then(place))
            .unwrap_or("unknown")
    }

    /// The least access any call of this tool can have (`Unknown` for unknown tools): the
    /// class used when deciding whether `tools/list` shows the tool at all.
    pub fn least_access(&self, name: &str) -> Access {
        match self.tools.get(name) {
            None => Access::Unknown,
            Some(spec) => match &spec.operation {
                None => spec.access,
                Some(op) => op.access.values().copied().min().unwrap_or(op.missing),
            },
        }
    }

    /// Facts for a tool call with the name and a probe at its least access, as `tools/list`
    /// filtering uses them (no arguments, no target).
    pub fn probe(&self, name: &str) -> ToolFacts {
        let spec = self.tools.get(name);
        ToolFacts {
            name: name.to_string(),
            arguments: Value::Object(Map::new()),
            known: spec.is_some(),
            access: self.least_access(name),
            operation: None,
            privileged: spec.is_some_and(|s| s.privileged),
            targets_cluster: spec.is_some_and(|s| s.cluster.is_some() && !s.cluster_optional),
        }
    }

    /// Facts for one `tools/call`, with the default manifest limits.
    pub fn classify(&self, tool_name: &str, arguments: &Value) -> (ToolFacts, TargetFacts) {
        self.classify_within(tool_name, arguments, &ManifestLimits::default())
    }

    /// Facts for one `tools/call`; manifests beyond `limits` are not parsed (a `parse_error`).
    pub fn classify_within(
        &self,
        tool_name: &str,
        arguments: &Value,
        limits: &ManifestLimits,
    ) -> (ToolFacts, TargetFacts) {
        let Some(spec) = self.tools.get(tool_name) else {
            return (
                ToolFacts {
                    name: tool_name.to_string(),
                    arguments: arguments.clone(),
                    known: false,
                    access: Access::Unknown,
                    operation: None,
                    privileged: false,
                    targets_cluster: false,
                },
                TargetFacts::default(),
            );
        };
        let mut b = Builder {
            cat: self,
            limits,
            facts: TargetFacts::default(),
            too_many_objects: false,
        };
        let empty = Map::new();
        let args = match arguments {
            Value::Object(m) => m,
            Value::Null => &empty,
            _ => {
                b.error("`arguments` is not an object".to_string());
                &empty
            }
        };

        // Operation and access class.
        let mut access = spec.access;
        let mut operation = None;
        if let Some(op) = &spec.operation {
            match args.get(&op.argument) {
                None | Some(Value::Null) => access = op.missing,
                Some(Value::String(s)) => {
                    let lower = s.trim().to_lowercase();
                    access = op.access.get(&lower).copied().unwrap_or(Access::Write);
                    operation = Some(lower);
                }
                Some(_) => {
                    b.error(format!("argument `{}` is not a string", op.argument));
                    access = Access::Write;
                }
            }
        }

        let cluster = spec.cluster.as_ref().and_then(|a| b.string_arg(args, a));
        b.facts.cluster = cluster;
        let targets_cluster = spec.cluster.is_some() && !spec.cluster_optional;

        // The namespace argument; an empty string means "not given" upstream.
        let ns_arg = spec.namespace.as_ref().and_then(|a| b.string_arg(args, a));
        let kind_given = match &spec.fixed_kind {
            Some(k) => Some(k.clone()),
            None => spec.kind.as_ref().and_then(|a| b.string_arg(args, a)),
        };
        let api_version = spec
            .api_version
            .as_ref()
            .and_then(|a| b.string_arg(args, a));
        let name = spec.name.as_ref().and_then(|a| b.string_arg(args, a));

        if spec.all_namespaces {
            b.facts.all_namespaces = true;
        }

        let mut arg_resource_namespaced = false;
        if spec.kind.is_some() || spec.fixed_kind.is_some() {
            let kind = kind_given.as_deref().map(|k| self.canonical_kind(k));
            let cluster_scoped = kind
                .as_ref()
                .is_some_and(|k| self.cluster_scoped.contains(k));
            let namespace = if cluster_scoped {
                None
            } else {
                arg_resource_namespaced = true;
                match (&ns_arg, spec.namespace_missing) {
                    (Some(ns), _) => Some(ns.clone()),
                    (None, NamespaceMissing::Default) => Some("default".to_string()),
                    (None, NamespaceMissing::All) => None,
                    (None, NamespaceMissing::None) => None,
                }
            };
            b.facts.resources.push(ResourceRef {
                api_version: api_version.clone(),
                scope: self.scope(kind.as_deref(), api_version.as_deref()),
                kind,
                namespace,
                name: name.clone(),
                kind_given: kind_given.clone(),
                cluster_scoped,
                source: "arguments".to_string(),
                object: None,
            });
        } else if let Some(ns) = &ns_arg {
            b.add_namespace(ns);
        }

        // manage_k8s_resource.body: the body's own namespace decides when the argument is
        // absent, and is recorded as well when both are given and differ.
        let mut body_namespace = None;
        if let Some(body_arg) = &spec.body {
            match args.get(body_arg) {
                None | Some(Value::Null) => {}
                Some(Value::Object(body)) => {
                    let idx = b.facts.objects.len();
                    b.facts.objects.push(Value::Object(body.clone()));
                    let body_ns = match body.get("metadata").and_then(|m| m.get("namespace")) {
                        None | Some(Value::Null) => None,
                        Some(Value::String(s)) if s.is_empty() => None,
                        Some(Value::String(s)) => Some(s.clone()),
                        Some(_) => {
                            b.error(format!("`{body_arg}.metadata.namespace` is not a string"));
                            None
                        }
                    };
                    let body_kind = match body.get("kind") {
                        Some(Value::String(k)) if !k.is_empty() => Some(k.clone()),
                        None | Some(Value::Null) | Some(Value::String(_)) => None,
                        Some(_) => {
                            b.error(format!("`{body_arg}.kind` is not a string"));
                            None
                        }
                    };
                    let body_name = match body.get("metadata").and_then(|m| m.get("name")) {
                        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                        None | Some(Value::Null) | Some(Value::String(_)) => None,
                        Some(_) => {
                            b.error(format!("`{body_arg}.metadata.name` is not a string"));
                            None
                        }
                    };
                    // Point the argument resource at the body for content checks; without a
                    // name argument the upstream creates the body's name.
                    if let Some(r) = b.facts.resources.first_mut() {
                        r.object = Some(idx);
                        if r.name.is_none() {
                            r.name = body_name;
                        }
                    }
                    // A body kind that differs from the argument is a second fact.
                    let arg_kind = b.facts.resources.first().and_then(|r| r.kind.clone());
                    if let Some(bk) = &body_kind {
                        let canonical = self.canonical_kind(bk);
                        if arg_kind.as_deref() != Some(canonical.as_str()) {
                            let cluster_scoped = self.cluster_scoped.contains(&canonical);
                            let body_api_version = body
                                .get("apiVersion")
                                .and_then(Value::as_str)
                                .map(str::to_string);
                            b.facts.resources.push(ResourceRef {
                                scope: self
                                    .scope(Some(canonical.as_str()), body_api_version.as_deref()),
                                api_version: body_api_version,
                                kind: Some(canonical),
                                namespace: if cluster_scoped {
                                    None
                                } else {
                                    body_ns.clone().or_else(|| ns_arg.clone())
                                },
                                name: name.clone(),
                                kind_given: Some(bk.clone()),
                                cluster_scoped,
                                source: format!("{body_arg}.kind"),
                                object: Some(idx),
                            });
                        }
                    }
                    body_namespace = body_ns;
                }
                Some(_) => b.error(format!("argument `{body_arg}` is not an object")),
            }
        }
        if let Some(body_ns) = body_namespace
            && arg_resource_namespaced
        {
            let first = &mut b.facts.resources[0];
            match &ns_arg {
                None => first.namespace = Some(body_ns),
                Some(arg) if *arg != body_ns => {
                    let mut second = first.clone();
                    second.namespace = Some(body_ns);
                    second.source = "body.metadata.namespace".to_string();
                    b.facts.resources.push(second);
                }
                Some(_) => {}
            }
        }

        // A namespaced resource from arguments without any namespace spans all namespaces.
        if arg_resource_namespaced
            && spec.namespace_missing == NamespaceMissing::All
            && b.facts
                .resources
                .first()
                .is_some_and(|r| r.namespace.is_none())
        {
            b.facts.all_namespaces = true;
        }

        // A typed List kind (`SecretList`, `v1/List`) with `body.items`: the upstream's dynamic
        // client posts every item to the element kind, in the namespace argument (else the
        // item's), under the name argument when one is given. Each item is a resource.
        let list_kind = kind_given
            .as_deref()
            .map(|k| self.canonical_kind(k))
            .filter(|k| k.len() >= 4 && k.to_ascii_lowercase().ends_with("list"));
        if let (Some(list_kind), Some(body_arg)) = (&list_kind, &spec.body)
            && let Some(Value::Object(body)) = args.get(body_arg)
            && body.contains_key("items")
        {
            let mut list = body.clone();
            list.insert("kind".into(), Value::String(list_kind.clone()));
            let first = b.facts.resources.len();
            b.add_document(Value::Object(list), body_arg, ns_arg.as_deref(), None, 0);
            let added: Vec<ResourceRef> = b.facts.resources.drain(first..).collect();
            for mut r in added {
                if let Some(n) = &name {
                    r.name = Some(n.clone());
                }
                match (&ns_arg, r.cluster_scoped) {
                    (Some(ns), false) if r.namespace.as_ref() != Some(ns) => {
                        let mut in_arg = r.clone();
                        in_arg.namespace = Some(ns.clone());
                        b.facts.resources.push(r);
                        b.facts.resources.push(in_arg);
                    }
                    _ => b.facts.resources.push(r),
                }
            }
        }

        // Manifests: every document, List kinds expanded.
        for arg in &spec.manifests {
            match args.get(arg) {
                None | Some(Value::Null) => {}
                Some(Value::String(text)) => {
                    match check_manifest(text, limits).and_then(|()| read_manifest(text)) {
                        Ok(docs) => {
                            for (i, doc) in docs.into_iter().enumerate() {
                                b.add_document(
                                    doc,
                                    &format!("{arg}[{i}]"),
                                    ns_arg.as_deref(),
                                    None,
                                    0,
                                );
                            }
                        }
                        Err(e) => b.error(format!("argument `{arg}` {e}")),
                    }
                }
                Some(Value::Array(docs)) => {
                    for (i, doc) in docs.iter().enumerate() {
                        b.add_document(
                            doc.clone(),
                            &format!("{arg}[{i}]"),
                            ns_arg.as_deref(),
                            None,
                            0,
                        );
                    }
                }
                Some(doc @ Value::Object(_)) => b.add_document(
                    doc.clone(),
                    &format!("{arg}[0]"),
                    ns_arg.as_deref(),
                    None,
                    0,
                ),
                Some(_) => b.error(format!("argument `{arg}` is not a YAML string")),
            }
        }
        for arg in &spec.opaque {
            if args.get(arg).is_some_and(|v| !v.is_null()) {
                b.error(format!(
                    "argument `{arg}` names content on the upstream host that the gateway \
                     cannot inspect; pass the manifest inline instead"
                ));
            }
        }

        // Namespace facts from resources, in order of first appearance.
        let resource_namespaces: Vec<String> = b
            .facts
            .resources
            .iter()
            .filter_map(|r| r.namespace.clone())
            .collect();
        for ns in resource_namespaces {
            b.add_namespace(&ns);
        }
        // The namespace argument is a fact even when a document overrides it.
        if let Some(ns) = &ns_arg
            && (!spec.manifests.is_empty() || spec.body.is_some())
        {
            b.add_namespace(ns);
        }

        b.check_names();

        // Reads returning whole objects of a sensitive kind (Secret) are sensitive.
        if access == Access::Read
            && spec.reads_objects
            && b.facts.resources.iter().any(|r| {
                r.kind
                    .as_ref()
                    .is_some_and(|k| self.sensitive_read.contains(k))
            })
        {
            access = Access::Sensitive;
        }

        let tool = ToolFacts {
            name: tool_name.to_string(),
            arguments: arguments.clone(),
            known: true,
            access,
            operation,
            privileged: spec.privileged,
            targets_cluster,
        };
        (tool, b.facts)
    }
}

/// Accumulates target facts for one call.
struct Builder<'a> {
    cat: &'a Catalogue,
    limits: &'a ManifestLimits,
    facts: TargetFacts,
    /// The object limit was reached and reported.
    too_many_objects: bool,
}

impl Builder<'_> {
    fn error(&mut self, message: String) {
        match &mut self.facts.parse_error {
            Some(existing) => {
                existing.push_str("; ");
                existing.push_str(&message);
            }
            None => self.facts.parse_error = Some(message),
        }
    }

    /// Every cluster, namespace, name, kind and api version fact must be one Kubernetes (and
    /// EKS) would accept: the upstream puts them into URLs unescaped (see `names`).
    fn check_names(&mut self) {
        let mut problems = Vec::new();
        let mut check = |what: &str, value: &str, source: &str, problem: Option<&str>| {
            if let Some(problem) = problem {
                problems.push(format!("{what} {} ({source}) {problem}", shown(value)));
            }
        };
        if let Some(cluster) = &self.facts.cluster {
            check(
                "cluster",
                cluster,
                "arguments",
                names::cluster_problem(cluster),
            );
        }
        for ns in &self.facts.namespaces {
            check("namespace", ns, "namespaces", names::namespace_problem(ns));
        }
        for r in &self.facts.resources {
            let src = r.source.as_str();
            if let Some(ns) = &r.namespace {
                check("namespace", ns, src, names::namespace_problem(ns));
            }
            if let Some(name) = &r.name {
                check("name", name, src, names::object_name_problem(name));
            }
            if let Some(kind) = &r.kind_given {
                check("kind", kind, src, names::kind_problem(kind));
            }
            if let Some(v) = &r.api_version {
                check("api version", v, src, names::api_version_problem(v));
            }
        }
        problems.dedup();
        for p in problems {
            self.error(p);
        }
    }

    fn add_namespace(&mut self, ns: &str) {
        if !self.facts.namespaces.iter().any(|n| n == ns) {
            self.facts.namespaces.push(ns.to_string());
        }
    }

    /// A string argument; empty strings count as absent (the upstream treats them so).
    fn string_arg(&mut self, args: &Map<String, Value>, name: &str) -> Option<String> {
        match args.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.error(format!("argument `{name}` is not a string"));
                None
            }
        }
    }

    /// One manifest document (or a `List` item): a resource fact plus the object itself.
    /// `element_kind` is the kind a typed List (`SecretList`) gives its items: the upstream
    /// posts every item to that kind's endpoint whatever the item says.
    fn add_document(
        &mut self,
        doc: Value,
        source: &str,
        default_ns: Option<&str>,
        element_kind: Option<&str>,
        depth: usize,
    ) {
        if self.facts.objects.len() >= self.limits.max_objects {
            if !self.too_many_objects {
                self.too_many_objects = true;
                self.error(format!(
                    "the call names more than {} Kubernetes objects (limits.max_manifest_objects)",
                    self.limits.max_objects
                ));
            }
            return;
        }
        let obj = match doc {
            Value::Null => return, // empty document, skipped by kubectl and the upstream
            Value::Object(obj) => obj,
            _ => {
                self.error(format!("{source} is not a mapping"));
                return;
            }
        };
        let kind_given = match obj.get("kind") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => {
                self.error(format!("{source}.kind is not a string"));
                None
            }
        };
        let item_kind = kind_given.as_deref().map(|k| self.cat.canonical_kind(k));
        // An item of a typed List is the List's element kind (and, when it names another kind,
        // that one too); an item of `v1/List` must name its own.
        let kind = match (element_kind, &item_kind) {
            (Some(element), Some(own)) if own != element => {
                let mut extra = obj.clone();
                extra.insert("kind".into(), Value::String(own.clone()));
                self.add_document(Value::Object(extra), source, default_ns, None, depth);
                Some(element.to_string())
            }
            (Some(element), _) => Some(element.to_string()),
            (None, own) => own.clone(),
        };
        let is_list = element_kind.is_none()
            && kind
                .as_deref()
                .is_some_and(|k| k.len() >= 4 && k.to_ascii_lowercase().ends_with("list"));
        if is_list && obj.contains_key("items") {
            let list_kind = kind.clone().unwrap_or_default();
            // `SecretList` lists Secrets; `List` (v1) lists whatever each item names.
            let element = (list_kind != "List")
                .then(|| self.cat.canonical_kind(&list_kind[..list_kind.len() - 4]));
            // The upstream posts items with the List document's namespace (else the call's).
            let list_ns = match obj.get("metadata").and_then(|m| m.get("namespace")) {
                Some(Value::String(ns)) if !ns.is_empty() => Some(ns.clone()),
                _ => default_ns.map(str::to_string),
            };
            if depth >= MAX_LIST_DEPTH {
                self.error(format!(
                    "{source} nests List kinds deeper than {MAX_LIST_DEPTH}"
                ));
                return;
            }
            match obj.get("items") {
                Some(Value::Array(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        let src = format!("{source}.items[{i}]");
                        if element.is_none()
                            && item.is_object()
                            && !item.get("kind").is_some_and(Value::is_string)
                        {
                            self.error(format!(
                                "{src} names no kind and its List gives none; write the item's kind"
                            ));
                            continue;
                        }
                        self.add_document(
                            item.clone(),
                            &src,
                            list_ns.as_deref(),
                            element.as_deref(),
                            depth + 1,
                        );
                    }
                }
                Some(Value::Null) => {}
                _ => self.error(format!("{source}.items is not a list")),
            }
            return;
        }
        let metadata = obj.get("metadata");
        let field = |key: &str| -> Result<Option<String>, ()> {
            match metadata.and_then(|m| m.get(key)) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(()),
            }
        };
        let doc_ns = field("namespace").unwrap_or_else(|()| {
            self.error(format!("{source}.metadata.namespace is not a string"));
            None
        });
        let name = field("name").unwrap_or_else(|()| {
            self.error(format!("{source}.metadata.name is not a string"));
            None
        });
        if metadata.is_some_and(|m| !m.is_object() && !m.is_null()) {
            self.error(format!("{source}.metadata is not a mapping"));
        }
        let api_version = match obj.get("apiVersion") {
            Some(Value::String(s)) => Some(s.clone()),
            None | Some(Value::Null) => None,
            Some(_) => {
                self.error(format!("{source}.apiVersion is not a string"));
                None
            }
        };
        let cluster_scoped = kind
            .as_ref()
            .is_some_and(|k| self.cat.cluster_scoped.contains(k));
        let namespace = if cluster_scoped {
            None
        } else {
            doc_ns.or_else(|| Some(default_ns.unwrap_or("default").to_string()))
        };
        let idx = self.facts.objects.len();
        self.facts.objects.push(Value::Object(obj));
        self.facts.resources.push(ResourceRef {
            scope: self.cat.scope(kind.as_deref(), api_version.as_deref()),
            api_version,
            kind,
            namespace,
            name,
            kind_given,
            cluster_scoped,
            source: source.to_string(),
            object: Some(idx),
        });
    }
}

/// The manifest bounds (nesting, documents, values) checked before a caller's manifest is
/// parsed; a refusal reads as the reason for the `parse_error`.
fn check_manifest(text: &str, limits: &ManifestLimits) -> Result<(), String> {
    crate::manifest::check(text, limits)
        .map_err(|e| format!("is over the gateway's manifest limits: {e}"))
}

/// A caller's value for a message: quoted, escaped, and cut at 80 characters.
fn shown(value: &str) -> String {
    match value.char_indices().nth(80) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}

/// A caller's manifest as the upstream will read it: refused (with the reason) when its
/// PyYAML reading could differ from the gateway's (see `yaml`), else every document.
pub fn read_manifest(text: &str) -> Result<Vec<Value>, String> {
    yaml::check_reading(text).map_err(|e| format!("is refused: it {e}"))?;
    parse_manifest(text).map_err(|e| format!("is not valid YAML: {e}"))
}

/// Parse a multi-document YAML manifest into JSON documents.
///
/// Aliases are resolved and merge keys (`<<`) applied the way PyYAML does it; a mapping with
/// a duplicate key, a non-string key or a custom tag is an error, because different YAML
/// readers disagree about such documents and the policy must see what the upstream applies.
pub fn parse_manifest(text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let mut value =
            serde_yaml::Value::deserialize(de).map_err(|e| format!("document {i}: {e}"))?;
        yaml::check_merges(&value).map_err(|e| format!("document {i} {e}"))?;
        value
            .apply_merge()
            .map_err(|e| format!("document {i}: {e}"))?;
        docs.push(yaml_to_json(value).map_err(|e| format!("document {i}: {e}"))?);
    }
    Ok(docs)
}

fn yaml_to_json(value: serde_yaml::Value) -> Result<Value, String> {
    use serde_yaml::Value as Y;
    Ok(match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| format!("number {n} has no JSON form"))?
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(seq) => Value::Array(
            seq.into_iter()
                .map(yaml_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = match k {
                    Y::String(s) => s,
                    other => {
                        return Err(format!(
                            "mapping key {} is not a string",
                            serde_yaml::to_string(&other).unwrap_or_default().trim()
                        ));
                    }
                };
                out.insert(key, yaml_to_json(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => return Err(format!("custom tag {} is not accepted", t.tag)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_kind_is_placed_by_catalogue_and_api_group() {
        let c = cat();
        assert_eq!(c.scope(Some("ConfigMap"), Some("v1")), "namespaced");
        assert_eq!(c.scope(Some("Deployment"), Some("apps/v1")), "namespaced");
        assert_eq!(c.scope(Some("SecretList"), Some("v1")), "namespaced");
        for k in [
            "FlowSchema",
            "PriorityLevelConfiguration",
            "ServiceCIDR",
            "IPAddress",
            "VolumeAttributesClass",
            "DeviceClass",
            "MutatingAdmissionPolicy",
            "MutatingAdmissionPolicyBinding",
            "ClusterTrustBundle",
            "ClusterRoleBinding",
        ] {
            assert_eq!(c.scope(Some(k), None), "cluster", "{k}");
        }
        // Custom resources, and built-in names in a group Kubernetes does not own.
        assert_eq!(
            c.scope(Some("NodePool"), Some("karpenter.sh/v1")),
            "unknown"
        );
        assert_eq!(
            c.scope(Some("ClusterIssuer"), Some("cert-manager.io/v1")),
            "unknown"
        );
        assert_eq!(
            c.scope(Some("ConfigMap"), Some("evil.example.com/v1")),
            "unknown"
        );
        assert_eq!(c.scope(Some("Widget"), Some("v1")), "unknown");
        assert_eq!(c.scope(None, Some("v1")), "unknown");
        // Groups Kubernetes owns keep the catalogue's placement.
        assert_eq!(
            c.scope(Some("FlowSchema"), Some("flowcontrol.apiserver.k8s.io/v1")),
            "cluster"
        );
    }

    fn cat() -> Catalogue {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        Catalogue::load(&dir).expect("shipped catalogue loads")
    }

    fn kinds(t: &TargetFacts) -> Vec<(Option<&str>, Option<&str>)> {
        t.resources
            .iter()
            .map(|r| (r.kind.as_deref(), r.namespace.as_deref()))
            .collect()
    }

    #[test]
    fn shipped_catalogue_covers_hosted_and_open_source_tools() {
        let c = cat();
        for name in [
            "search_eks_documentation",
            "search_eks_troubleshooting_guide",
            "search_eks_troubleshoot_guide",
            "list_eks_resources",
            "describe_eks_resource",
            "get_eks_insights",
            "get_eks_vpc_config",
            "list_k8s_resources",
            "read_k8s_resource",
            "list_api_versions",
            "get_pod_logs",
            "get_k8s_events",
            "get_cloudwatch_logs",
            "get_cloudwatch_metrics",
            "get_eks_metrics_guidance",
            "get_policies_for_role",
            "generate_app_manifest",
            "manage_k8s_resource",
            "apply_yaml",
            "manage_eks_stacks",
            "add_inline_policy",
        ] {
            assert!(c.known(name), "{name} missing from catalogue");
        }
        assert_eq!(c.tool_names().count(), 21);
    }

    #[test]
    fn unknown_tool_is_unknown() {
        let (tool, target) = cat().classify("exec_in_pod", &json!({"cluster_name": "dev-1"}));
        assert!(!tool.known);
        assert_eq!(tool.access, Access::Unknown);
        assert!(target.cluster.is_none());
    }

    #[test]
    fn listing_without_namespace_is_all_namespaces() {
        let c = cat();
        let (tool, t) = c.classify(
            "list_k8s_resources",
            &json!({"cluster_name": "dev-1", "kind": "Pod", "api_version": "v1"}),
        );
        assert_eq!(tool.access, Access::Read);
        assert!(t.all_namespaces);
        assert!(t.namespaces.is_empty());
        // An empty string is the same as absent upstream.
        let (_, t) = c.classify(
            "list_k8s_resources",
            &json!({"cluster_name": "dev-1", "kind": "Pod", "api_version": "v1", "namespace": ""}),
        );
        assert!(t.all_namespaces);
        // Cluster-scoped kinds have no namespace and do not span namespaces.
        let (_, t) = c.classify(
            "list_k8s_resources",
            &json!({"cluster_name": "dev-1", "kind": "nodes", "api_version": "v1"}),
        );
        assert!(!t.all_namespaces);
        assert_eq!(kinds(&t), vec![(Some("Node"), None)]);
        let (_, t) = c.classify(
            "list_k8s_resources",
            &json!({"cluster_name": "dev-1", "kind": "Pod", "api_version": "v1", "namespace": "web"}),
        );
        assert!(!t.all_namespaces);
        assert_eq!(t.namespaces, vec!["web"]);
    }

    #[test]
    fn kinds_are_canonical_whatever_the_case() {
        let c = cat();
        for spelling in ["secret", "SECRET", "Secrets", "secrets"] {
            let (tool, t) = c.classify(
                "read_k8s_resource",
                &json!({"cluster_name": "dev-1", "kind": spelling, "api_version": "v1",
                        "name": "db", "namespace": "web"}),
            );
            assert_eq!(t.resources[0].kind.as_deref(), Some("Secret"), "{spelling}");
            assert_eq!(t.resources[0].kind_given.as_deref(), Some(spelling));
            assert_eq!(tool.access, Access::Sensitive, "a Secret read is sensitive");
        }
    }

    #[test]
    fn operation_is_lowercased_and_classifies_access() {
        let c = cat();
        let args = |op: &str| {
            json!({"operation": op, "cluster_name": "dev-1", "kind": "Deployment",
                   "api_version": "apps/v1", "name": "web", "namespace": "web"})
        };
        let (tool, _) = c.classify("manage_k8s_resource", &args("DeLeTe"));
        assert_eq!(tool.operation.as_deref(), Some("delete"));
        assert_eq!(tool.access, Access::Write);
        let (tool, _) = c.classify("manage_k8s_resource", &args("READ"));
        assert_eq!(tool.access, Access::Read);
        let (tool, _) = c.classify("manage_k8s_resource", &args("obliterate"));
        assert_eq!(tool.access, Access::Write, "unknown operations are writes");
        let (tool, _) = c.classify(
            "manage_eks_stacks",
            &json!({"operation": "Describe", "cluster_name": "x"}),
        );
        assert_eq!(tool.access, Access::Read);
        let (tool, _) = c.classify(
            "manage_eks_stacks",
            &json!({"operation": "deploy", "cluster_name": "x"}),
        );
        assert_eq!(tool.access, Access::Write);
    }

    #[test]
    fn body_namespace_decides_when_argument_is_absent_and_both_are_kept_when_they_differ() {
        let c = cat();
        let (_, t) = c.classify(
            "manage_k8s_resource",
            &json!({"operation": "create", "cluster_name": "dev-1", "kind": "ConfigMap",
                    "api_version": "v1", "name": "x",
                    "body": {"metadata": {"name": "x", "namespace": "kube-system"}}}),
        );
        assert_eq!(kinds(&t), vec![(Some("ConfigMap"), Some("kube-system"))]);
        assert!(!t.all_namespaces);
        assert_eq!(t.namespaces, vec!["kube-system"]);
        assert_eq!(t.objects.len(), 1);

        let (_, t) = c.classify(
            "manage_k8s_resource",
            &json!({"operation": "create", "cluster_name": "dev-1", "kind": "ConfigMap",
                    "api_version": "v1", "name": "x", "namespace": "web",
                    "body": {"metadata": {"namespace": "kube-system"}}}),
        );
        assert_eq!(t.namespaces, vec!["web", "kube-system"]);

        // A body kind that disagrees with the argument is a second resource.
        let (_, t) = c.classify(
            "manage_k8s_resource",
            &json!({"operation": "create", "cluster_name": "dev-1", "kind": "ConfigMap",
                    "api_version": "v1", "namespace": "web", "body": {"kind": "secret"}}),
        );
        assert_eq!(
            kinds(&t),
            vec![
                (Some("ConfigMap"), Some("web")),
                (Some("Secret"), Some("web"))
            ]
        );
    }

    #[test]
    fn every_manifest_document_is_a_fact_and_lists_are_expanded() {
        let c = cat();
        let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\n\
                    apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: b, namespace: web}\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: secret, metadata: {name: s, namespace: db}}\n\
                    - {apiVersion: v1, kind: Namespace, metadata: {name: n}}\n";
        let (tool, t) = c.classify(
            "apply_yaml",
            &json!({"cluster_name": "dev-1", "namespace": "apps", "yaml_content": yaml}),
        );
        assert_eq!(tool.access, Access::Write);
        assert!(t.parse_error.is_none(), "{:?}", t.parse_error);
        assert_eq!(
            kinds(&t),
            vec![
                (Some("ConfigMap"), Some("apps")),
                (Some("Deployment"), Some("web")),
                (Some("Secret"), Some("db")),
                (Some("Namespace"), None),
            ]
        );
        assert_eq!(t.objects.len(), 4);
        assert_eq!(t.resources[2].source, "yaml_content[3].items[0]");
        assert_eq!(t.namespaces, vec!["apps", "web", "db"]);
    }

    #[test]
    fn manifest_without_namespace_argument_lands_in_default() {
        let (_, t) = cat().classify(
            "apply_yaml",
            &json!({"cluster_name": "dev-1", "yaml_content": "kind: Pod\nmetadata: {name: p}\n"}),
        );
        assert_eq!(kinds(&t), vec![(Some("Pod"), Some("default"))]);
    }

    #[test]
    fn unparseable_or_ambiguous_manifests_are_facts() {
        let c = cat();
        let err = |yaml: &str| {
            let (_, t) = c.classify(
                "apply_yaml",
                &json!({"cluster_name": "d", "yaml_content": yaml}),
            );
            t.parse_error.unwrap_or_default()
        };
        assert!(err("kind: [unclosed").contains("not valid YAML"));
        assert!(err("kind: Pod\nkind: Secret\n").contains("duplicate"));
        assert!(err("kind: !custom Pod\n").contains("tag"));
        assert!(err("- just\n- a list\n").contains("not a mapping"));
        assert!(err("kind: Pod\nmetadata: {namespace: [a]}\n").contains("namespace"));
        let (_, t) = c.classify(
            "apply_yaml",
            &json!({"cluster_name": "d", "yaml_path": "/x.yaml"}),
        );
        assert!(t.parse_error.unwrap().contains("yaml_path"));
        let (_, t) = c.classify(
            "list_k8s_resources",
            &json!({"cluster_name": "d", "namespace": 5}),
        );
        assert!(t.parse_error.unwrap().contains("namespace"));
    }

    #[test]
    fn manifests_over_the_limits_are_refused_before_parsing() {
        let c = cat();
        let call = |yaml: String, limits: &ManifestLimits| {
            c.classify_within(
                "apply_yaml",
                &json!({"cluster_name": "d", "namespace": "apps", "yaml_content": yaml}),
                limits,
            )
            .1
        };
        let defaults = ManifestLimits::default();
        let t = call(format!("x: {}", "[".repeat(150_000)), &defaults);
        let err = t.parse_error.unwrap();
        assert!(err.contains("limits.max_manifest_depth"), "{err}");
        assert!(t.resources.is_empty());

        let doc = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n";
        let t = call(doc.repeat(600), &defaults);
        let err = t.parse_error.unwrap();
        assert!(err.contains("limits.max_manifest_documents"), "{err}");
        assert!(
            t.resources.is_empty(),
            "refused before any document was read"
        );

        // Objects count documents and List items together.
        let small = ManifestLimits {
            max_objects: 3,
            ..defaults
        };
        let list = "kind: List\nitems:\n- {kind: ConfigMap, metadata: {name: a}}\n- {kind: ConfigMap, metadata: {name: b}}\n";
        let t = call(format!("{list}---\n{list}"), &small);
        let err = t.parse_error.unwrap();
        assert!(err.contains("limits.max_manifest_objects"), "{err}");
        assert_eq!(t.resources.len(), 3);
        let t = call(list.to_string(), &small);
        assert_eq!(t.parse_error, None);
    }

    #[test]
    fn anchors_and_merge_keys_resolve_like_the_upstream() {
        let yaml = "base: &b {privileged: true}\nkind: Pod\nspec:\n  containers:\n  - name: c\n    securityContext:\n      <<: *b\n";
        let docs = parse_manifest(yaml).unwrap();
        assert_eq!(
            docs[0]["spec"]["containers"][0]["securityContext"]["privileged"],
            json!(true)
        );
    }

    #[test]
    fn names_that_are_not_kubernetes_names_are_parse_errors_wherever_they_hide() {
        let c = cat();
        let err = |tool: &str, args: Value| {
            let (_, t) = c.classify(tool, &args);
            t.parse_error
                .unwrap_or_else(|| panic!("{tool} {args} was accepted"))
        };
        let e = err(
            "list_k8s_resources",
            json!({"cluster_name": "dev", "kind": "Secret", "api_version": "v1",
                   "namespace": "payments-x/../kube-system"}),
        );
        assert!(e.contains("namespace \"payments-x/../kube-system\""), "{e}");
        let e = err(
            "manage_k8s_resource",
            json!({"operation": "delete", "cluster_name": "dev", "kind": "ConfigMap",
                   "api_version": "v1", "namespace": "payments",
                   "name": "../../../namespaces/kube-system"}),
        );
        assert!(e.contains("name") && e.contains("path separator"), "{e}");
        err(
            "manage_k8s_resource",
            json!({"operation": "create", "cluster_name": "dev", "kind": "ConfigMap",
                   "api_version": "v1",
                   "body": {"metadata": {"name": "x?dryRun=All", "namespace": "payments"}}}),
        );
        err(
            "manage_k8s_resource",
            json!({"operation": "create", "cluster_name": "dev", "kind": "ConfigMap",
                   "api_version": "v1", "name": "x",
                   "body": {"metadata": {"namespace": "payments/../kube-system"}}}),
        );
        err(
            "read_k8s_resource",
            json!({"cluster_name": "dev", "kind": "Secret/..", "api_version": "v1",
                   "name": "x", "namespace": "payments"}),
        );
        err(
            "read_k8s_resource",
            json!({"cluster_name": "dev", "kind": "ConfigMap", "api_version": "v1/../../apis/x",
                   "name": "x", "namespace": "payments"}),
        );
        err(
            "get_pod_logs",
            json!({"cluster_name": "dev", "pod_name": "p#x", "namespace": "payments"}),
        );
        err(
            "list_k8s_resources",
            json!({"cluster_name": "dev/../prod", "kind": "Pod", "api_version": "v1",
                   "namespace": "payments"}),
        );
        err(
            "apply_yaml",
            json!({"cluster_name": "dev", "namespace": "payments",
                   "yaml_content": "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a, namespace: \"payments-x/../kube-system\"}}\n"}),
        );
        err(
            "apply_yaml",
            json!({"cluster_name": "dev", "namespace": "payments/..",
                   "yaml_content": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"}),
        );
        // Valid names pass, with RBAC's colons.
        let (_, t) = c.classify(
            "manage_k8s_resource",
            &json!({"operation": "read", "cluster_name": "dev", "kind": "ClusterRole",
                    "api_version": "rbac.authorization.k8s.io/v1",
                    "name": "system:controller:job-controller"}),
        );
        assert_eq!(t.parse_error, None);
        // Without a name argument, the body's name is the fact.
        let (_, t) = c.classify(
            "manage_k8s_resource",
            &json!({"operation": "create", "cluster_name": "dev", "kind": "ConfigMap",
                    "api_version": "v1", "body": {"metadata": {"name": "cm", "namespace": "web"}}}),
        );
        assert_eq!(t.resources[0].name.as_deref(), Some("cm"));
    }

    #[test]
    fn typed_lists_yield_one_resource_per_item_with_the_element_kind() {
        let c = cat();
        let facts = |tool: &str, args: Value| c.classify(tool, &args).1;
        // manage_k8s_resource with SecretList: every item is a Secret in the argument's namespace.
        let t = facts(
            "manage_k8s_resource",
            json!({"operation": "create", "cluster_name": "dev", "kind": "SecretList",
                   "api_version": "v1", "namespace": "payments",
                   "body": {"items": [{"metadata": {"name": "a"}, "stringData": {"k": "v"}},
                                      {"kind": "ConfigMap", "metadata": {"name": "b"}}]}}),
        );
        assert!(t.parse_error.is_none(), "{:?}", t.parse_error);
        let secrets: Vec<_> = t
            .resources
            .iter()
            .filter(|r| r.kind.as_deref() == Some("Secret"))
            .map(|r| (r.name.as_deref(), r.namespace.as_deref()))
            .collect();
        assert_eq!(
            secrets,
            vec![(Some("a"), Some("payments")), (Some("b"), Some("payments"))]
        );
        // A cluster-scoped element kind has no namespace.
        let t = facts(
            "manage_k8s_resource",
            json!({"operation": "create", "cluster_name": "dev", "kind": "ClusterRoleBindingList",
                   "api_version": "rbac.authorization.k8s.io/v1", "namespace": "payments",
                   "body": {"items": [{"metadata": {"name": "x"}, "roleRef": {"name": "cluster-admin"}}]}}),
        );
        assert!(
            t.resources
                .iter()
                .any(|r| r.kind.as_deref() == Some("ClusterRoleBinding")
                    && r.cluster_scoped
                    && r.namespace.is_none())
        );
        // A PodList item is content-checked as a Pod.
        let t = facts(
            "manage_k8s_resource",
            json!({"operation": "create", "cluster_name": "dev", "kind": "PodList",
                   "api_version": "v1", "namespace": "payments",
                   "body": {"items": [{"metadata": {"name": "p"}, "spec": {"hostPID": true}}]}}),
        );
        let pod = t
            .resources
            .iter()
            .find(|r| r.kind.as_deref() == Some("Pod"))
            .unwrap();
        assert_eq!(
            t.objects[pod.object.unwrap()]["spec"]["hostPID"],
            json!(true)
        );
        // Manifests: a SecretList document, its namespace inherited by items without one.
        let t = facts(
            "apply_yaml",
            json!({"cluster_name": "dev", "namespace": "payments", "yaml_content":
                "apiVersion: v1\nkind: SecretList\nmetadata: {name: l, namespace: kube-system}\nitems:\n- metadata: {name: s}\n"}),
        );
        assert_eq!(kinds(&t), vec![(Some("Secret"), Some("kube-system"))]);
        // A v1 List item without a kind cannot be placed.
        let t = facts(
            "apply_yaml",
            json!({"cluster_name": "dev", "namespace": "payments", "yaml_content":
                "apiVersion: v1\nkind: List\nitems:\n- metadata: {name: s}\n"}),
        );
        assert!(t.parse_error.unwrap().contains("names no kind"));
    }

    #[test]
    fn cloudwatch_namespace_is_not_a_kubernetes_namespace() {
        let c = cat();
        let (_, t) = c.classify(
            "get_cloudwatch_metrics",
            &json!({"cluster_name": "dev-1", "namespace": "ContainerInsights", "metric_name": "x"}),
        );
        assert!(t.namespaces.is_empty() && !t.all_namespaces && t.resources.is_empty());
        let (tool, t) = c.classify("get_cloudwatch_logs", &json!({"cluster_name": "dev-1"}));
        assert_eq!(tool.access, Access::Sensitive);
        assert!(t.all_namespaces);
    }

    #[test]
    fn pod_logs_default_namespace_and_events_span_all_namespaces() {
        let c = cat();
        let (tool, t) = c.classify(
            "get_pod_logs",
            &json!({"cluster_name": "d", "pod_name": "p"}),
        );
        assert_eq!(tool.access, Access::Sensitive);
        assert_eq!(kinds(&t), vec![(Some("Pod"), Some("default"))]);
        let (_, t) = c.classify(
            "get_k8s_events",
            &json!({"cluster_name": "d", "kind": "Pod", "name": "p"}),
        );
        assert!(t.all_namespaces);
    }

    #[test]
    fn probe_uses_least_access() {
        let c = cat();
        assert_eq!(c.probe("manage_k8s_resource").access, Access::Read);
        assert_eq!(c.probe("apply_yaml").access, Access::Write);
        assert_eq!(c.probe("add_inline_policy").access, Access::Write);
        assert_eq!(c.probe("nope").access, Access::Unknown);
    }
}
