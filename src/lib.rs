//! eks-mcp-gateway: a policy-enforcing MCP gateway for Amazon EKS.
//!
//! One request flows through the stages below; `pipeline` is the one file that calls them in
//! this order. Each stage is a module with typed input and output.
//!
//! front → identity (authenticate) → jsonrpc, mcp (parse) → classify → policy (decide)
//!       → sign, credentials → forward → sse, redact (filter) → audit, metrics, telemetry
//!
//! `sim` is the embedded EKS-like upstream (demo, tests, benches); `demo` wires the two.
/// This build's version (the crate version), reported at start, on `/readyz` and as
/// `mcp_gateway_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod admission;
pub mod approval;
pub mod audit;
pub mod classify;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod drift;
pub mod forward;
pub mod front;
pub mod identity;
pub mod jsonrpc;
pub mod limits;
pub mod manifest;
pub mod mcp;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod redact;
pub mod sign;
pub mod sim;
pub mod sse;
pub mod stdio;
pub mod telemetry;
