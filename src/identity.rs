//! authenticate: who is calling. Turns the inbound HTTP request into a `Principal`.
//!
//! Owns caller credentials (bearer tokens, API keys). It must never let a caller token
//! leave this module: nothing here is logged, audited or forwarded upstream.
use serde::{Deserialize, Serialize};

/// How the principal was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    Jwt,
    ApiKey,
    Static,
}

/// The caller, as the policy sees it (`input.principal`).
#[derive(Debug, Clone, Serialize)]
pub struct Principal {
    pub id: String,
    pub groups: Vec<String>,
    pub auth: AuthKind,
    /// Non-secret claims (JWT claims minus anything token-like).
    pub claims: serde_json::Map<String, serde_json::Value>,
}
