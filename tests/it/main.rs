//! All integration tests, in one binary (linking one test binary per file is slow).
mod harness;

mod core;
mod faults;
mod policy;
mod sim;
mod audit;
mod identity;
mod telemetry;
mod signing;
mod credentials;
mod redaction;
mod interop;
