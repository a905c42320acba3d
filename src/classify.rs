//! classify: turn one MCP request into facts the policy can reason about.
//!
//! The tool catalogue is data (`policies/catalogue.yaml`), not code: which tools exist, their
//! access class, how the operation follows from arguments, and where cluster, namespace,
//! kind, api version and name are found. This module never decides anything; it only states
//! facts, and a missing namespace on a namespaced listing is the explicit fact
//! `all_namespaces: true`, never an absent one.
use serde::Serialize;

/// Access class of a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// `input.tool` — the call itself.
#[derive(Debug, Clone, Serialize)]
pub struct ToolFacts {
    pub name: String,
    pub arguments: serde_json::Value,
    pub known: bool,
    pub access: Access,
    pub operation: Option<String>,
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
}
