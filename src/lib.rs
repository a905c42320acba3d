//! eks-mcp-gateway: a policy-enforcing MCP gateway for Amazon EKS.
//!
//! One request flows through the stages in the order of this list; `pipeline` is the one
//! file that calls them in that order. Each stage is a module with typed input and output.
//!
//! front → identity (authenticate) → jsonrpc (parse) → classify → policy (decide)
//!       → sign → forward → redact / filter → audit
pub mod config;
pub mod front;
pub mod identity;
pub mod jsonrpc;
pub mod mcp;
pub mod classify;
pub mod policy;
pub mod sign;
pub mod credentials;
pub mod forward;
pub mod sse;
pub mod redact;
pub mod audit;
pub mod metrics;
pub mod telemetry;
pub mod pipeline;
pub mod sim;
pub mod demo;
