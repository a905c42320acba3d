//! audit: one decision record per MCP request, written as a JSON line.
//!
//! The record is modelled on OPA decision logs: who asked (principal, client), what they asked
//! (method, tool, the facts the policy saw, arguments *after* redaction), what was decided and
//! why (allow, mode, reasons, matched rules, redaction profiles), what was redacted on the way
//! back, what the upstream answered, and which policy revision decided.
//!
//! Records go through a bounded queue to one writer thread (stdout, or a file with size-based
//! rotation). Nothing is dropped silently: with `on_failure: block` a full queue makes callers
//! wait and a failing sink is retried with backoff; with `on_failure: fail_closed` a full queue
//! or a failed sink makes [`AuditSink::record`] return an error, and the pipeline then denies
//! the request. Only `sink: none` discards records, because the operator asked for it.
//!
//! This module never sees caller credentials or raw session ids: the caller passes arguments
//! that were already redacted, and session ids only as a hash ([`session_hash`]).
//!
//! One record (one line in the file, shown wrapped here):
//!
//! ```json
//! {"schema":2,"decision_id":"afa1c7f9-9cb4-4539-b0f3-e2c715c9023e","timestamp":"2026-11-25T14:41:57.455Z",
//!  "principal":{"id":"alice@example.com","groups":["platform-admins"],"auth":"jwt",
//!               "claims":{"iss":"https://idp.example.com","email":"alice@example.com"}},
//!  "client":{"name":"claude-code","version":"2.1.0"},"method":"tools/call","tool":"apply_yaml",
//!  "era":"session","protocol_version":"2025-11-25","session":"3f9a0c1be27d4a55",
//!  "facts":{"cluster":"dev","namespaces":["payments"],"all_namespaces":false,"kinds":["Secret"],
//!           "operation":null,"access":"write"},
//!  "arguments":{"cluster_name":"dev","yaml_content":"...password: [REDACTED:credential_assignment]\n"},
//!  "decision":{"allow":false,"mode":"enforce","enforced":true,
//!              "reasons":["... Secrets are never created or changed through MCP ..."],
//!              "rules":["secrets.write"],"redact":["baseline"]},
//!  "redactions":[{"detector":"credential_assignment","path":"$.params.arguments.yaml_content"}],
//!  "upstream":null,"gateway":{"mode":"enforce","upstream":"https://eks-mcp.us-west-2.api.aws/mcp"},
//!  "policy_revision":"ffb195033f03c257","duration_ms":10.402}
//! ```
//!
//! `upstream` is `{status, latency_ms, error}` when the request went (or tried to go)
//! upstream; `decision.enforced` is false for a deny in `dry_run` mode.
//!
//! **Replayable.** A record carries everything `policy replay` needs to rebuild the input
//! document the policy evaluated (docs/policy.md, "Replaying recorded traffic"): the
//! principal with its groups and non-secret claims, the client, method, era and protocol
//! version, the tool and its (redacted) arguments, from which classify derives the target
//! facts again, and `gateway` (`input.gateway`). `schema` is [`SCHEMA`]; records written
//! before it existed have none and read as schema 1 (no claims, protocol version or
//! `gateway`). Fields are only ever added, so readers of older records keep working.
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::classify::{TargetFacts, ToolFacts};
use crate::config::{AuditConfig, AuditFailure, PolicyMode};
use crate::identity::AuthKind;
use crate::metrics;
use crate::policy::{Decision, Era, PolicyInput};
use crate::redact::Redaction;

/// Version of the record's shape. 2 added `schema`, `principal.claims`, `protocol_version`
/// and `gateway`, so that a record rebuilds the input document of its decision.
pub const SCHEMA: u32 = 2;

/// `principal` in a record: who called (never a credential).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditPrincipal {
    pub id: String,
    pub groups: Vec<String>,
    pub auth: AuthKind,
    /// The non-secret claims the policy saw (`input.principal.claims`; token-like claims are
    /// withheld by identity before the policy sees them). Left out when empty.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// `client` in a record, as the client named itself.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct AuditClient {
    pub name: Option<String>,
    pub version: Option<String>,
}

/// `facts` in a record: what classify established and the policy saw, in summary.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct AuditFacts {
    pub cluster: Option<String>,
    pub namespaces: Vec<String>,
    pub all_namespaces: bool,
    pub kinds: Vec<String>,
    pub operation: Option<String>,
    /// Access class: `read`, `sensitive`, `write`, `unknown`.
    pub access: Option<String>,
}

/// `decision` in a record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditDecision {
    pub allow: bool,
    pub mode: PolicyMode,
    /// True when the decision took effect (always in `enforce`; in `dry_run` only allows do).
    pub enforced: bool,
    pub reasons: Vec<String>,
    pub rules: Vec<String>,
    pub redact: Vec<String>,
}

/// One redaction applied to the arguments or the result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRedaction {
    pub detector: String,
    pub path: String,
}

/// `upstream` in a record. Absent when the request never went upstream.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct AuditUpstream {
    pub status: Option<u16>,
    pub latency_ms: Option<f64>,
    pub error: Option<String>,
}

/// `approval` in a record: what happened when the policy asked for the person's
/// confirmation. `outcome` is `asked` (the question went to the client), `would_ask`
/// (dry_run: forwarded without asking), `accepted`, or the refusal (`declined`,
/// `cancelled`, `expired`, `state_invalid`, ... as the `confirm.*` rule ids). `reason` and
/// `fields` are the person's answer (redacted like arguments), `at` when the answer came,
/// `round_trip_ms` from the question to the answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct AuditApproval {
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub fields: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_trip_ms: Option<f64>,
}

impl AuditApproval {
    pub fn outcome(outcome: &str) -> Self {
        AuditApproval {
            outcome: outcome.to_owned(),
            ..Default::default()
        }
    }
}

/// `gateway` in a record: `input.gateway` as the policy saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditGateway {
    pub mode: PolicyMode,
    pub upstream: String,
}

/// One decision record. Build it with [`AuditRecord::new`] (or `from_outcome`) and fill
/// the rest; `arguments` must already be redacted. Reading one back (`policy replay`)
/// accepts every schema so far: fields added since schema 1 take their defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    /// [`SCHEMA`] when written; 1 for records from before the field existed.
    #[serde(default = "schema_one")]
    pub schema: u32,
    pub decision_id: String,
    /// RFC 3339, UTC, millisecond precision.
    pub timestamp: String,
    pub principal: AuditPrincipal,
    pub client: AuditClient,
    pub method: String,
    pub tool: Option<String>,
    /// `session` or `stateless`.
    pub era: String,
    /// `input.mcp.protocol_version` (schema 2).
    #[serde(default)]
    pub protocol_version: Option<String>,
    /// SHA-256 prefix of the session id ([`session_hash`]); never the id itself.
    pub session: Option<String>,
    pub facts: AuditFacts,
    /// Tool arguments after redaction.
    pub arguments: Option<serde_json::Value>,
    pub decision: AuditDecision,
    pub redactions: Vec<AuditRedaction>,
    pub upstream: Option<AuditUpstream>,
    /// `input.gateway` (schema 2).
    #[serde(default)]
    pub gateway: Option<AuditGateway>,
    /// Present when the policy asked for the person's confirmation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<AuditApproval>,
    pub policy_revision: String,
    pub duration_ms: f64,
}

fn schema_one() -> u32 {
    1
}

impl AuditFacts {
    /// The summary of classify's facts that a record keeps (kinds sorted and deduplicated).
    pub fn of(tool: Option<&ToolFacts>, target: &TargetFacts) -> AuditFacts {
        let mut kinds: Vec<String> = target
            .resources
            .iter()
            .filter_map(|r| r.kind.clone())
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        AuditFacts {
            cluster: target.cluster.clone(),
            namespaces: target.namespaces.clone(),
            all_namespaces: target.all_namespaces,
            kinds,
            operation: tool.and_then(|t| t.operation.clone()),
            access: tool.map(|t| access_name(t.access).to_owned()),
        }
    }
}

/// `read`, `sensitive`, `write`, `unknown`: the access class as records and the policy spell it.
fn access_name(a: crate::classify::Access) -> &'static str {
    use crate::classify::Access;
    match a {
        Access::Read => "read",
        Access::Sensitive => "sensitive",
        Access::Write => "write",
        Access::Unknown => "unknown",
    }
}

impl AuditRecord {
    /// A record with a fresh decision id and the current time; everything else empty.
    pub fn new(principal: AuditPrincipal, method: &str, decision: AuditDecision) -> Self {
        AuditRecord {
            schema: SCHEMA,
            decision_id: new_decision_id(),
            timestamp: rfc3339_now(),
            principal,
            client: AuditClient::default(),
            method: method.to_owned(),
            tool: None,
            era: "session".to_owned(),
            protocol_version: None,
            session: None,
            facts: AuditFacts::default(),
            arguments: None,
            decision,
            redactions: Vec::new(),
            upstream: None,
            gateway: None,
            approval: None,
            policy_revision: String::new(),
            duration_ms: 0.0,
        }
    }

    /// The record for one finished request, from what the pipeline gathered.
    pub fn from_outcome(o: &RequestOutcome<'_>, policy_revision: &str) -> Self {
        let input = o.input;
        let p = &input.principal;
        let principal = AuditPrincipal {
            id: p.id.clone(),
            groups: p.groups.clone(),
            auth: p.auth,
            claims: p.claims.clone(),
        };
        let decision = AuditDecision {
            allow: o.decision.allow,
            mode: o.mode,
            enforced: o.decision.allow || o.mode == PolicyMode::Enforce,
            reasons: o.decision.reasons.clone(),
            rules: o.decision.rules.clone(),
            redact: o.decision.redact.clone(),
        };
        let mut rec = AuditRecord::new(principal, &input.mcp.method, decision);
        rec.protocol_version = input.mcp.protocol_version.clone();
        rec.gateway = Some(AuditGateway {
            mode: input.gateway.mode,
            upstream: input.gateway.upstream.clone(),
        });
        rec.client = AuditClient {
            name: input.client.name.clone(),
            version: input.client.version.clone(),
        };
        rec.era = match input.mcp.era {
            Era::Session => "session",
            Era::Stateless => "stateless",
        }
        .to_owned();
        rec.session = o.session_id.map(session_hash);
        rec.facts = AuditFacts::of(input.tool.as_ref(), &input.target);
        rec.tool = input.tool.as_ref().map(|t| t.name.clone());
        if let Some((args, arg_redactions)) = o.arguments {
            rec.arguments = Some(args.clone());
            rec.redactions
                .extend(arg_redactions.iter().map(|r| AuditRedaction {
                    detector: r.detector.to_owned(),
                    path: if r.path.starts_with('$') {
                        r.path.clone()
                    } else {
                        format!("$.params.arguments{}", path_suffix(&r.path))
                    },
                }));
        }
        rec.redactions
            .extend(o.redactions.iter().map(|r| AuditRedaction {
                detector: r.detector.to_owned(),
                path: r.path.clone(),
            }));
        if o.upstream_status.is_some() || o.upstream_latency.is_some() {
            rec.upstream = Some(AuditUpstream {
                status: o.upstream_status,
                latency_ms: o.upstream_latency.map(millis),
                error: o.error.map(str::to_owned),
            });
        } else if o.decision.allow && o.error.is_some() {
            rec.upstream = Some(AuditUpstream {
                status: None,
                latency_ms: None,
                error: o.error.map(str::to_owned),
            });
        }
        rec.approval = o.approval.cloned();
        rec.policy_revision = policy_revision.to_owned();
        rec.duration_ms = millis(o.started.elapsed());
        rec
    }
}

impl AuditRecord {
    /// The input document this record's decision was made on, rebuilt for `policy replay`.
    /// The target facts (and the tool's access class and operation) are derived again from
    /// the recorded arguments by `catalogue`, as the gateway derives them from a request;
    /// the arguments are the recorded ones, so a value that was redacted is the redaction
    /// marker, not the original. Schema 1 records have no claims, protocol version or
    /// upstream: those are empty.
    pub fn input(&self, catalogue: &crate::classify::Catalogue) -> Result<PolicyInput, String> {
        let era = match self.era.as_str() {
            "session" => Era::Session,
            "stateless" => Era::Stateless,
            other => return Err(format!("era {other:?} is neither session nor stateless")),
        };
        let (tool, target) = match &self.tool {
            Some(name) => {
                let args = self.arguments.as_ref().ok_or_else(|| {
                    format!("the record names tool {name:?} but has no arguments")
                })?;
                let (tool, target) = catalogue.classify(name, args);
                (Some(tool), target)
            }
            None => (None, TargetFacts::default()),
        };
        let gateway = match &self.gateway {
            Some(g) => crate::policy::GatewayFacts {
                mode: g.mode,
                upstream: g.upstream.clone(),
            },
            None => crate::policy::GatewayFacts {
                mode: self.decision.mode,
                upstream: String::new(),
            },
        };
        Ok(PolicyInput {
            principal: crate::identity::Principal {
                id: self.principal.id.clone(),
                groups: self.principal.groups.clone(),
                auth: self.principal.auth,
                claims: self.principal.claims.clone(),
            },
            client: crate::policy::ClientInfo {
                name: self.client.name.clone(),
                version: self.client.version.clone(),
            },
            mcp: crate::policy::McpFacts {
                method: self.method.clone(),
                protocol_version: self.protocol_version.clone(),
                era,
            },
            tool,
            target,
            gateway,
        })
    }

    /// True when a redactor changed the arguments before they were recorded (the replayed
    /// input then holds `[REDACTED:...]` where the caller sent a value).
    pub fn arguments_redacted(&self) -> bool {
        self.redactions
            .iter()
            .any(|r| r.path.starts_with("$.params.arguments"))
    }
}

/// The record of a finished request serialised straight from what the pipeline holds:
/// the same JSON as `AuditRecord::from_outcome` followed by `serde_json` (same fields, same
/// order, same values), without first copying the principal, the arguments, the decision and
/// the redactions into an owned [`AuditRecord`]. This is what the request path writes.
#[derive(Serialize)]
struct OutcomeRecord<'a> {
    schema: u32,
    decision_id: &'a str,
    timestamp: &'a str,
    principal: OutcomePrincipal<'a>,
    client: OutcomeClient<'a>,
    method: &'a str,
    tool: Option<&'a str>,
    era: &'static str,
    protocol_version: Option<&'a str>,
    session: Option<String>,
    facts: OutcomeFacts<'a>,
    arguments: Option<&'a serde_json::Value>,
    decision: OutcomeDecision<'a>,
    redactions: OutcomeRedactions<'a>,
    upstream: Option<AuditUpstream>,
    gateway: OutcomeGateway<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<&'a AuditApproval>,
    policy_revision: &'a str,
    duration_ms: f64,
}

#[derive(Serialize)]
struct OutcomePrincipal<'a> {
    id: &'a str,
    groups: &'a [String],
    auth: AuthKind,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    claims: &'a serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
struct OutcomeGateway<'a> {
    mode: PolicyMode,
    upstream: &'a str,
}

#[derive(Serialize)]
struct OutcomeClient<'a> {
    name: Option<&'a str>,
    version: Option<&'a str>,
}

#[derive(Serialize)]
struct OutcomeFacts<'a> {
    cluster: Option<&'a str>,
    namespaces: &'a [String],
    all_namespaces: bool,
    kinds: Vec<&'a str>,
    operation: Option<&'a str>,
    access: Option<crate::classify::Access>,
}

#[derive(Serialize)]
struct OutcomeDecision<'a> {
    allow: bool,
    mode: PolicyMode,
    enforced: bool,
    reasons: &'a [String],
    rules: &'a [String],
    redact: &'a [String],
}

/// The argument redactions (paths put under `$.params.arguments`) then the response's.
struct OutcomeRedactions<'a> {
    arguments: &'a [Redaction],
    response: &'a [Redaction],
}

impl Serialize for OutcomeRedactions<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        #[derive(Serialize)]
        struct Item<'b> {
            detector: &'b str,
            path: &'b str,
        }
        let mut seq = s.serialize_seq(Some(self.arguments.len() + self.response.len()))?;
        for r in self.arguments {
            if r.path.starts_with('$') {
                seq.serialize_element(&Item {
                    detector: r.detector,
                    path: &r.path,
                })?;
            } else {
                let path = format!("$.params.arguments{}", path_suffix(&r.path));
                seq.serialize_element(&Item {
                    detector: r.detector,
                    path: &path,
                })?;
            }
        }
        for r in self.response {
            seq.serialize_element(&Item {
                detector: r.detector,
                path: &r.path,
            })?;
        }
        seq.end()
    }
}

impl<'a> OutcomeRecord<'a> {
    fn new(
        o: &'a RequestOutcome<'a>,
        policy_revision: &'a str,
        decision_id: &'a str,
        timestamp: &'a str,
        duration_ms: f64,
    ) -> Self {
        let input = o.input;
        let p = &input.principal;
        let mut kinds: Vec<&str> = input
            .target
            .resources
            .iter()
            .filter_map(|r| r.kind.as_deref())
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        let tool = input.tool.as_ref();
        let upstream = if o.upstream_status.is_some() || o.upstream_latency.is_some() {
            Some(AuditUpstream {
                status: o.upstream_status,
                latency_ms: o.upstream_latency.map(millis),
                error: o.error.map(str::to_owned),
            })
        } else if o.decision.allow && o.error.is_some() {
            Some(AuditUpstream {
                status: None,
                latency_ms: None,
                error: o.error.map(str::to_owned),
            })
        } else {
            None
        };
        OutcomeRecord {
            schema: SCHEMA,
            decision_id,
            timestamp,
            principal: OutcomePrincipal {
                id: &p.id,
                groups: &p.groups,
                auth: p.auth,
                claims: &p.claims,
            },
            client: OutcomeClient {
                name: input.client.name.as_deref(),
                version: input.client.version.as_deref(),
            },
            method: &input.mcp.method,
            tool: tool.map(|t| t.name.as_str()),
            era: match input.mcp.era {
                Era::Session => "session",
                Era::Stateless => "stateless",
            },
            protocol_version: input.mcp.protocol_version.as_deref(),
            session: o.session_id.map(session_hash),
            facts: OutcomeFacts {
                cluster: input.target.cluster.as_deref(),
                namespaces: &input.target.namespaces,
                all_namespaces: input.target.all_namespaces,
                kinds,
                operation: tool.and_then(|t| t.operation.as_deref()),
                access: tool.map(|t| t.access),
            },
            arguments: o.arguments.map(|(args, _)| args),
            decision: OutcomeDecision {
                allow: o.decision.allow,
                mode: o.mode,
                enforced: o.decision.allow || o.mode == PolicyMode::Enforce,
                reasons: &o.decision.reasons,
                rules: &o.decision.rules,
                redact: &o.decision.redact,
            },
            redactions: OutcomeRedactions {
                arguments: o.arguments.map_or(&[], |(_, r)| r.as_slice()),
                response: o.redactions,
            },
            upstream,
            gateway: OutcomeGateway {
                mode: input.gateway.mode,
                upstream: &input.gateway.upstream,
            },
            approval: o.approval,
            policy_revision,
            duration_ms,
        }
    }
}

/// One JSON line (newline included) for a finished request, with a fresh decision id and
/// the current time.
fn outcome_line(o: &RequestOutcome<'_>, policy_revision: &str) -> serde_json::Result<Vec<u8>> {
    let decision_id = new_decision_id();
    let timestamp = rfc3339_now();
    let duration_ms = millis(o.started.elapsed());
    let rec = OutcomeRecord::new(o, policy_revision, &decision_id, &timestamp, duration_ms);
    let mut line = Vec::with_capacity(1024);
    serde_json::to_writer(&mut line, &rec)?;
    line.push(b'\n');
    Ok(line)
}

/// What the pipeline knows about a finished request, borrowed for [`AuditRecord::from_outcome`].
pub struct RequestOutcome<'a> {
    pub input: &'a PolicyInput,
    pub decision: &'a Decision,
    pub mode: PolicyMode,
    pub started: Instant,
    /// Tool arguments after redaction, with the redactions applied to them (paths relative
    /// to the arguments object).
    pub arguments: Option<&'a (serde_json::Value, Vec<Redaction>)>,
    /// Redactions applied to the response (paths as the redactor reports them).
    pub redactions: &'a [Redaction],
    pub upstream_status: Option<u16>,
    pub upstream_latency: Option<Duration>,
    /// Error kind (`timeout`, `unavailable`, `client_disconnected`, ...), if any.
    pub error: Option<&'a str>,
    /// The raw session id; only its hash is recorded.
    pub session_id: Option<&'a str>,
    /// The confirmation, when the policy asked for one.
    pub approval: Option<&'a AuditApproval>,
}

/// Join a redaction path under a prefix: `""` stays empty, `.a`/`[0]` are appended as is,
/// anything else gets a dot.
fn path_suffix(path: &str) -> String {
    if path.is_empty() || path.starts_with('.') || path.starts_with('[') {
        path.to_owned()
    } else {
        format!(".{path}")
    }
}

/// A duration in milliseconds with microsecond resolution, for records.
pub fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// The form of a session id that may appear in a record: the first 16 hex digits of its
/// SHA-256. Enough to correlate records of one session, useless to hijack it.
pub fn session_hash(session_id: &str) -> String {
    let digest = Sha256::digest(session_id.as_bytes());
    hex::encode(&digest[..8])
}

/// A random, UUID-v4-shaped decision id.
pub fn new_decision_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Now as RFC 3339 in UTC with milliseconds, e.g. `2026-11-25T14:06:08.123Z`.
pub fn rfc3339_now() -> String {
    rfc3339(SystemTime::now())
}

fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Why a record could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(
        "the audit queue is full ({capacity} records waiting) and audit.on_failure is fail_closed"
    )]
    QueueFull { capacity: usize },
    #[error(
        "the audit sink {sink} is failing ({detail}) and audit.on_failure is fail_closed; \
         fix the sink (disk space, permissions, path) and records are accepted again"
    )]
    SinkFailed { sink: String, detail: String },
    #[error("the audit writer has stopped; restart the gateway")]
    Stopped,
    #[error("audit record could not be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error(
        "audit.sink {path}: directory {dir} does not exist. Fix: create it or point audit.sink \
         at a writable path (or use `stdout`)"
    )]
    NoDirectory { path: String, dir: String },
    #[error("audit.queue_size must be at least 1")]
    QueueSize,
    #[error("cannot start the audit writer thread: {0}")]
    Spawn(io::Error),
}

enum Msg {
    Line(Vec<u8>),
    Flush(oneshot::Sender<()>),
}

#[derive(Debug, Clone)]
enum Target {
    Stdout,
    File {
        path: PathBuf,
        rotate_bytes: u64,
        keep: usize,
    },
}

impl Target {
    fn describe(&self) -> String {
        match self {
            Target::Stdout => "stdout".to_owned(),
            Target::File { path, .. } => path.display().to_string(),
        }
    }
}

struct Shared {
    on_failure: AuditFailure,
    /// Set by the writer while the sink is failing, cleared when a write succeeds again.
    failed: AtomicBool,
    last_error: std::sync::Mutex<String>,
    sink: String,
    capacity: usize,
}

/// The audit trail: a bounded queue in front of one writer. Cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    tx: Option<mpsc::Sender<Msg>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSink")
            .field("sink", &self.shared.sink)
            .field("on_failure", &self.shared.on_failure)
            .finish()
    }
}

impl AuditSink {
    /// Start the writer for `cfg.sink`: `stdout`, `none`, or a file path.
    pub fn start(cfg: &AuditConfig) -> Result<AuditSink, AuditError> {
        if cfg.queue_size == 0 {
            return Err(AuditError::QueueSize);
        }
        let target = match cfg.sink.as_str() {
            "none" => {
                return Ok(AuditSink {
                    tx: None,
                    shared: Arc::new(Shared {
                        on_failure: cfg.on_failure,
                        failed: AtomicBool::new(false),
                        last_error: Default::default(),
                        sink: "none".to_owned(),
                        capacity: cfg.queue_size,
                    }),
                });
            }
            "stdout" | "-" => Target::Stdout,
            path => {
                let path = PathBuf::from(path);
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                if !dir.is_dir() {
                    return Err(AuditError::NoDirectory {
                        path: path.display().to_string(),
                        dir: dir.display().to_string(),
                    });
                }
                Target::File {
                    path,
                    rotate_bytes: cfg.rotate_bytes,
                    keep: cfg.keep_files,
                }
            }
        };
        let shared = Arc::new(Shared {
            on_failure: cfg.on_failure,
            failed: AtomicBool::new(false),
            last_error: Default::default(),
            sink: target.describe(),
            capacity: cfg.queue_size,
        });
        metrics::global()
            .audit_queue_capacity
            .set(cfg.queue_size as i64);
        let (tx, rx) = mpsc::channel(cfg.queue_size);
        let writer = Writer {
            target,
            out: None,
            written: 0,
            shared: shared.clone(),
        };
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(AuditError::Spawn)?;
        Ok(AuditSink {
            tx: Some(tx),
            shared,
        })
    }

    /// Queue one record. With `on_failure: block` this waits while the queue is full; with
    /// `fail_closed` it returns an error at once when the queue is full or the sink is
    /// failing, and the caller must then refuse the request.
    pub async fn record(&self, rec: AuditRecord) -> Result<(), AuditError> {
        if self.tx.is_none() {
            return self.enqueue(Vec::new()).await;
        }
        let mut line = Vec::with_capacity(1024);
        serde_json::to_writer(&mut line, &rec)?;
        line.push(b'\n');
        self.enqueue(line).await
    }

    /// Queue the record of a finished request, serialised straight from `outcome` (the same
    /// line [`AuditSink::record`] writes for `AuditRecord::from_outcome`, without the copy).
    /// Waits or fails exactly as [`AuditSink::record`] does.
    pub async fn record_outcome(
        &self,
        outcome: &RequestOutcome<'_>,
        policy_revision: &str,
    ) -> Result<(), AuditError> {
        if self.tx.is_none() {
            return self.enqueue(Vec::new()).await;
        }
        let line = outcome_line(outcome, policy_revision)?;
        self.enqueue(line).await
    }

    async fn enqueue(&self, line: Vec<u8>) -> Result<(), AuditError> {
        let m = metrics::global();
        let Some(tx) = &self.tx else {
            m.audit_records_total.with_label_values(&["disabled"]).inc();
            return Ok(());
        };
        let result = match self.shared.on_failure {
            AuditFailure::Block => tx
                .send(Msg::Line(line))
                .await
                .map_err(|_| AuditError::Stopped),
            AuditFailure::FailClosed => {
                if self.shared.failed.load(Ordering::Acquire) {
                    Err(self.sink_failed())
                } else {
                    tx.try_send(Msg::Line(line)).map_err(|e| match e {
                        mpsc::error::TrySendError::Full(_) => AuditError::QueueFull {
                            capacity: self.shared.capacity,
                        },
                        mpsc::error::TrySendError::Closed(_) => AuditError::Stopped,
                    })
                }
            }
        };
        match &result {
            Ok(()) => m.audit_queue_depth.set(self.depth(tx)),
            Err(_) => m.audit_records_total.with_label_values(&["rejected"]).inc(),
        }
        result
    }

    /// True when a record would be accepted now without waiting past a failure: always in
    /// `block` mode; in `fail_closed` mode only while the sink works and the queue has room.
    pub fn accepting(&self) -> bool {
        match (&self.tx, self.shared.on_failure) {
            (None, _) => true,
            (Some(tx), AuditFailure::Block) => !tx.is_closed(),
            (Some(tx), AuditFailure::FailClosed) => {
                !self.shared.failed.load(Ordering::Acquire) && tx.capacity() > 0
            }
        }
    }

    /// Whether records are being written, with a one-line detail for `/readyz`.
    pub fn readiness(&self) -> (bool, String) {
        if self.tx.is_none() {
            return (
                true,
                "audit records are discarded (audit.sink: none)".into(),
            );
        }
        if self.failing() {
            let detail = self
                .shared
                .last_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default();
            return (
                false,
                format!("audit sink {} is failing: {detail}", self.shared.sink),
            );
        }
        (true, format!("writing to {}", self.shared.sink))
    }

    /// True while the writer reports the sink failing.
    pub fn failing(&self) -> bool {
        self.shared.failed.load(Ordering::Acquire)
    }

    /// Wait until every record queued before this call is written. Waits as long as the
    /// sink keeps failing in `block` mode; wrap it in a timeout at shutdown.
    pub async fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done, wait) = oneshot::channel();
        if tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    fn depth(&self, tx: &mpsc::Sender<Msg>) -> i64 {
        (self.shared.capacity.saturating_sub(tx.capacity())) as i64
    }

    fn sink_failed(&self) -> AuditError {
        let detail = self
            .shared
            .last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default();
        AuditError::SinkFailed {
            sink: self.shared.sink.clone(),
            detail,
        }
    }
}

/// The writer thread: owns the output, batches what is queued, rotates files, retries.
struct Writer {
    target: Target,
    out: Option<File>,
    /// Bytes in the current file.
    written: u64,
    shared: Arc<Shared>,
}

const MAX_BATCH: usize = 256;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// After writing a batch the writer pauses this long before it looks at the queue again, so
/// that under load the next records gather into one batch. Parked on an empty queue instead,
/// the writer would be woken by every record (a futex call on the request path plus two
/// context switches here, about 15 µs of CPU per request in the load benchmark); pausing, it
/// wakes at most once per interval and writes everything that came in one system call.
/// Records reach the file at most this much later; an idle gateway still writes each record
/// at once, because the first record after a quiet period wakes the parked writer.
const LINGER: Duration = Duration::from_millis(5);

/// Queues smaller than this are not lingered on: a tiny `fail_closed` queue could otherwise
/// fill during the pause and refuse requests that a prompt writer would have taken.
const LINGER_MIN_QUEUE: usize = 256;

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let m = metrics::global();
        let mut batch: Vec<Vec<u8>> = Vec::with_capacity(MAX_BATCH);
        let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Line(l) => batch.push(l),
                    Msg::Flush(done) => flushes.push(done),
                }
                if batch.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            let capacity = self.shared.capacity;
            m.audit_queue_depth
                .set(capacity.saturating_sub(rx.capacity()) as i64);
            self.write_with_retry(&batch);
            m.audit_records_total
                .with_label_values(&["written"])
                .inc_by(batch.len() as u64);
            let written = batch.len();
            batch.clear();
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
            if written > 0 && capacity >= LINGER_MIN_QUEUE {
                std::thread::sleep(LINGER);
            }
        }
    }

    /// Write the batch, retrying with backoff until it succeeds: a record is never dropped.
    fn write_with_retry(&mut self, batch: &[Vec<u8>]) {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.write_batch(batch) {
                Ok(()) => {
                    if self.shared.failed.swap(false, Ordering::AcqRel) {
                        tracing::info!(sink = %self.shared.sink, "audit sink recovered");
                    }
                    return;
                }
                Err(e) => {
                    metrics::global()
                        .audit_records_total
                        .with_label_values(&["write_error"])
                        .inc();
                    if let Ok(mut last) = self.shared.last_error.lock() {
                        *last = e.to_string();
                    }
                    if !self.shared.failed.swap(true, Ordering::AcqRel) {
                        tracing::error!(
                            sink = %self.shared.sink,
                            error = %e,
                            "audit sink write failed; retrying with backoff"
                        );
                    }
                    // Reopen on the next attempt (the file may have been removed or the
                    // disk freed).
                    self.out = None;
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn write_batch(&mut self, batch: &[Vec<u8>]) -> io::Result<()> {
        match self.target.clone() {
            Target::Stdout => {
                let mut out = io::stdout().lock();
                for line in batch {
                    out.write_all(line)?;
                }
                out.flush()
            }
            Target::File {
                path,
                rotate_bytes,
                keep,
            } => {
                // Whole lines go out together in one write per file, so a rotation never
                // splits a record and a batch costs one system call, not one per record.
                let mut pending: Vec<u8> = Vec::new();
                for line in batch {
                    if self.out.is_none() {
                        let f = OpenOptions::new().create(true).append(true).open(&path)?;
                        self.written = f.metadata().map(|m| m.len()).unwrap_or(0);
                        self.out = Some(f);
                    }
                    let size = self.written + pending.len() as u64;
                    if size > 0 && size + line.len() as u64 > rotate_bytes {
                        if let Some(f) = &mut self.out {
                            f.write_all(&pending)?;
                        }
                        pending.clear();
                        self.out = None;
                        rotate(&path, keep)?;
                        self.written = 0;
                        let f = OpenOptions::new().create(true).append(true).open(&path)?;
                        self.out = Some(f);
                    }
                    pending.extend_from_slice(line);
                }
                if let Some(f) = &mut self.out {
                    f.write_all(&pending)?;
                    self.written += pending.len() as u64;
                    f.flush()?;
                }
                Ok(())
            }
        }
    }
}

/// `path` → `path.1` → … → `path.keep`; the oldest falls off. With `keep == 0` the current
/// file is removed.
fn rotate(path: &Path, keep: usize) -> io::Result<()> {
    let numbered = |n: usize| {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    };
    if keep == 0 {
        return remove_if_exists(path);
    }
    remove_if_exists(&numbered(keep))?;
    for n in (1..keep).rev() {
        let from = numbered(n);
        if from.exists() {
            std::fs::rename(&from, numbered(n + 1))?;
        }
    }
    std::fs::rename(path, numbered(1))
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_079_568_123);
        assert_eq!(rfc3339(t), "2025-11-25T14:06:08.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn decision_ids_look_like_uuids_and_differ() {
        let a = new_decision_id();
        let b = new_decision_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    /// The line the request path writes (`record_outcome`) is byte for byte the line of
    /// `AuditRecord::from_outcome`, for a full outcome and for a bare one.
    #[test]
    fn outcome_line_is_the_from_outcome_record() {
        use crate::classify::{Access, ResourceRef, TargetFacts, ToolFacts};
        use crate::identity::Principal;
        use crate::policy::{ClientInfo, GatewayFacts, McpFacts};
        let resource = |kind: Option<&str>| ResourceRef {
            api_version: Some("v1".into()),
            kind: kind.map(str::to_owned),
            namespace: Some("payments".into()),
            name: None,
            kind_given: None,
            cluster_scoped: false,
            scope: "namespaced",
            source: "arguments".into(),
            object: None,
        };
        let full = PolicyInput {
            principal: Principal {
                id: "alice@example.com".into(),
                groups: vec!["platform-admins".into(), "team \"x\"".into()],
                auth: AuthKind::Jwt,
                claims: serde_json::json!({"iss": "https://idp.example.com", "tenant": "t1"})
                    .as_object()
                    .cloned()
                    .unwrap(),
            },
            client: ClientInfo {
                name: Some("claude-code".into()),
                version: Some("2.1.0".into()),
            },
            mcp: McpFacts {
                method: "tools/call".into(),
                protocol_version: Some("2026-07-28".into()),
                era: Era::Stateless,
            },
            tool: Some(ToolFacts {
                name: "apply_yaml".into(),
                arguments: serde_json::json!({"cluster_name": "dev"}),
                known: true,
                access: Access::Write,
                operation: Some("create".into()),
                privileged: true,
                targets_cluster: true,
            }),
            target: TargetFacts {
                cluster: Some("dev".into()),
                resources: vec![
                    resource(Some("Secret")),
                    resource(None),
                    resource(Some("ConfigMap")),
                    resource(Some("Secret")),
                ],
                namespaces: vec!["payments".into()],
                all_namespaces: false,
                ..Default::default()
            },
            gateway: GatewayFacts {
                mode: PolicyMode::Enforce,
                upstream: "http://127.0.0.1:1/mcp".into(),
            },
        };
        let bare = PolicyInput {
            tool: None,
            target: TargetFacts::default(),
            client: ClientInfo::default(),
            mcp: McpFacts {
                method: "stream/get".into(),
                protocol_version: None,
                era: Era::Session,
            },
            ..full.clone()
        };
        let decision = Decision {
            allow: false,
            reasons: vec!["no \u{1F600} writes".into()],
            redact: vec!["baseline".into()],
            rules: vec!["writes.denied".into()],
            role: None,
            confirm: None,
        };
        let args = (
            serde_json::json!({"yaml_content": "password: [REDACTED:credential_assignment]"}),
            vec![
                Redaction {
                    detector: "credential_assignment",
                    path: "$.params.arguments.yaml_content".into(),
                },
                Redaction {
                    detector: "bearer_token",
                    path: ".token".into(),
                },
                Redaction {
                    detector: "bearer_token",
                    path: "x".into(),
                },
            ],
        );
        let response = vec![Redaction {
            detector: "sensitive_env_value",
            path: "$.result.content[1].text$.items[0].env[2].value".into(),
        }];
        let started = Instant::now();
        let outcomes = [
            RequestOutcome {
                input: &full,
                decision: &decision,
                mode: PolicyMode::Enforce,
                started,
                arguments: Some(&args),
                redactions: &response,
                upstream_status: Some(200),
                upstream_latency: Some(Duration::from_micros(1234)),
                error: None,
                session_id: Some("sess-1"),
                approval: None,
            },
            RequestOutcome {
                input: &bare,
                decision: &Decision {
                    allow: true,
                    ..decision.clone()
                },
                mode: PolicyMode::DryRun,
                started,
                arguments: None,
                redactions: &[],
                upstream_status: None,
                upstream_latency: None,
                error: Some("client_disconnected"),
                session_id: None,
                approval: None,
            },
            RequestOutcome {
                input: &bare,
                decision: &decision,
                mode: PolicyMode::DryRun,
                started,
                arguments: None,
                redactions: &[],
                upstream_status: None,
                upstream_latency: None,
                error: None,
                session_id: None,
                approval: None,
            },
        ];
        for o in &outcomes {
            let rec = AuditRecord::from_outcome(o, "rev-1");
            let want = serde_json::to_vec(&rec).unwrap();
            let borrowed = OutcomeRecord::new(
                o,
                "rev-1",
                &rec.decision_id,
                &rec.timestamp,
                rec.duration_ms,
            );
            let got = serde_json::to_vec(&borrowed).unwrap();
            assert_eq!(
                String::from_utf8(got).unwrap(),
                String::from_utf8(want).unwrap()
            );
            let line = outcome_line(o, "rev-1").unwrap();
            assert!(line.ends_with(b"\n"));
            // What `policy replay` reads back is the record that was written.
            let read: AuditRecord = serde_json::from_slice(&line).unwrap();
            assert_eq!(read.schema, SCHEMA);
            assert_eq!(read.principal, rec.principal);
            assert_eq!(read.protocol_version, rec.protocol_version);
            assert_eq!(read.gateway, rec.gateway);
            assert_eq!(read.arguments, rec.arguments);
            assert_eq!(read.decision, rec.decision);
            assert_eq!(read.facts, rec.facts);
            let parsed: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(parsed["policy_revision"], "rev-1");
            assert_eq!(parsed["decision_id"].as_str().unwrap().len(), 36);
        }
    }

    /// Records written before `schema` existed still read, as schema 1 without the fields
    /// added since.
    #[test]
    fn schema_one_records_read_back() {
        let line = r#"{"decision_id":"d1","timestamp":"2026-11-25T14:41:57.455Z","principal":{"id":"alice","groups":["g"],"auth":"jwt"},"client":{"name":null,"version":null},"method":"tools/call","tool":"list_k8s_resources","era":"session","session":null,"facts":{"cluster":"dev","namespaces":["payments"],"all_namespaces":false,"kinds":["Pod"],"operation":null,"access":"read"},"arguments":{"cluster_name":"dev"},"decision":{"allow":true,"mode":"enforce","enforced":true,"reasons":[],"rules":["reads.allowed"],"redact":["baseline"]},"redactions":[],"upstream":{"status":200,"latency_ms":1.5,"error":null},"policy_revision":"ffb195033f03c257","duration_ms":2.0}"#;
        let rec: AuditRecord = serde_json::from_str(line).unwrap();
        assert_eq!(rec.schema, 1);
        assert!(rec.principal.claims.is_empty());
        assert_eq!(rec.protocol_version, None);
        assert_eq!(rec.gateway, None);
        assert_eq!(rec.facts.kinds, vec!["Pod"]);
    }

    #[test]
    fn session_hash_hides_the_id() {
        let h = session_hash("secret-session-id");
        assert_eq!(h.len(), 16);
        assert!(!h.contains("secret"));
        assert_eq!(h, session_hash("secret-session-id"));
    }
}
