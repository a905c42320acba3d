//! All integration tests, in one binary (linking one test binary per file is slow).
mod harness;

mod audit;
mod bypasses;
mod confirm;
mod core;
mod credentials;
mod deploy;
mod dos;
mod drift;
mod fairness;
mod faults;
mod front;
mod identity;
mod interop;
mod leaks;
mod limits;
mod opa;
mod policy;
mod protection;
mod redaction;
mod replay;
mod signing;
mod sim;
mod stdio;
mod stdio_upstream;
mod telemetry;
