//! decide: one Rego evaluation (regorus) per MCP request over `PolicyInput`.
//!
//! The engine is prepared once and shared; hot reload swaps it atomically. Any evaluation
//! error or undefined decision fails closed. The policy decides; Rust executes.
use serde::{Deserialize, Serialize};

use crate::classify::{TargetFacts, ToolFacts};
use crate::config::PolicyMode;
use crate::identity::Principal;

/// `input.client`
#[derive(Debug, Clone, Serialize, Default)]
pub struct ClientInfo {
    pub name: Option<String>,
    pub version: Option<String>,
}

/// Protocol era of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Era {
    Session,
    Stateless,
}

/// `input.mcp`
#[derive(Debug, Clone, Serialize)]
pub struct McpFacts {
    pub method: String,
    pub protocol_version: Option<String>,
    pub era: Era,
}

/// `input.gateway`
#[derive(Debug, Clone, Serialize)]
pub struct GatewayFacts {
    pub mode: PolicyMode,
    pub upstream: String,
}

/// The whole input document (see `docs/policy-input.md`).
#[derive(Debug, Clone, Serialize)]
pub struct PolicyInput {
    pub principal: Principal,
    pub client: ClientInfo,
    pub mcp: McpFacts,
    pub tool: Option<ToolFacts>,
    pub target: TargetFacts,
    pub gateway: GatewayFacts,
}

/// What the policy decided.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Decision {
    pub allow: bool,
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Redaction profiles to apply to everything returned for this request.
    #[serde(default)]
    pub redact: Vec<String>,
    /// Identifiers of the rules that matched (for audit and metrics).
    #[serde(default)]
    pub rules: Vec<String>,
    /// Optional role name (a key of `signing.assume_role.roles`) to sign this call with.
    #[serde(default)]
    pub role: Option<String>,
}
