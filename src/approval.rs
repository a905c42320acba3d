//! approval: the person at the keyboard confirms a call the policy marked `confirm`.
//!
//! The policy decides *that* a call needs confirmation and what to ask (`decision.confirm`);
//! this module owns how the answer is obtained and trusted:
//!
//! - the elicitation form built from the decision's fields, and the check of the answer
//!   (accept with a non-empty reason and every typed confirmation exactly as expected;
//!   decline and cancel are refusals);
//! - in the stateless era (2026-07-28) the `requestState` the gateway seals into its
//!   `InputRequiredResult`: AES-256-GCM over the principal, a digest of the exact method,
//!   tool and arguments, the policy revision, the time asked and an expiry, plus a random id
//!   for the replay cache. Any replica holding the key opens it, so a retry may reach
//!   another replica; the replay cache is per process and safe to lose (see `Approvals`).
//!
//! The sealing keys live only in [`Approvals`]; nothing here prints, logs or returns them,
//! and errors about a key name the file or variable, never its content.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::config::ApprovalConfig;
use crate::policy::Confirmation;

/// Key of the gateway's own entry in `inputRequests` / `inputResponses`.
pub const INPUT_KEY: &str = "io.github.eks-mcp-gateway/confirm";

/// Environment variable with the sealing keys when `approval.key_file` is unset.
pub const KEYS_ENV: &str = "EKS_MCP_GATEWAY_APPROVAL_KEYS";

/// Session era: ids of the gateway's own `elicitation/create` requests start with this, so
/// the client's answer is told from an answer to the upstream's requests.
const ELICITATION_ID_PREFIX: &str = "eksgw-confirm-";

/// Every sealed state starts with this, so the gateway tells its own state from another's.
const STATE_PREFIX: &str = "eksgw1.";

/// Associated data of every seal: a state sealed for anything else never opens as ours.
const AAD: &[u8] = b"eks-mcp-gateway approval state v1";

/// Why a confirmation did not let a call through. Each has its own rule id, metric outcome
/// and sentence for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The person declined.
    Declined,
    /// The person dismissed the question.
    Cancelled,
    /// The state does not open with any key (changed, truncated, or another gateway's).
    Tampered,
    Expired,
    OtherPrincipal,
    ArgumentsChanged,
    /// The policy changed between the question and the answer.
    PolicyChanged,
    /// This approval was already used on this replica.
    Replayed,
    /// Accepted, but a required field is missing or empty.
    InvalidAnswer(String),
    /// Accepted, but a typed confirmation does not match.
    Mismatch {
        field: String,
        expected: String,
    },
    /// The client did not declare the elicitation capability.
    UnsupportedClient,
    /// Session era: no answer within `approval.answer_timeout`.
    Timeout,
    /// Session era: the answer could not reach the waiting request (client gone, no stream).
    Unavailable(String),
}

impl Refusal {
    /// Rule id in the decision, the audit record and `gateway_denials_total`.
    pub fn rule(&self) -> &'static str {
        match self {
            Refusal::Declined => "confirm.declined",
            Refusal::Cancelled => "confirm.cancelled",
            Refusal::Tampered => "confirm.state_invalid",
            Refusal::Expired => "confirm.expired",
            Refusal::OtherPrincipal => "confirm.other_principal",
            Refusal::ArgumentsChanged => "confirm.arguments_changed",
            Refusal::PolicyChanged => "confirm.policy_changed",
            Refusal::Replayed => "confirm.replayed",
            Refusal::InvalidAnswer(_) => "confirm.invalid_answer",
            Refusal::Mismatch { .. } => "confirm.mismatch",
            Refusal::UnsupportedClient => "confirm.unsupported_client",
            Refusal::Timeout => "confirm.timeout",
            Refusal::Unavailable(_) => "confirm.unavailable",
        }
    }

    /// Outcome label of `gateway_approvals_total` and of the audit record's `approval`.
    pub fn outcome(&self) -> &'static str {
        self.rule().trim_start_matches("confirm.")
    }

    /// The sentence the client (and the model) reads.
    pub fn reason(&self) -> String {
        match self {
            Refusal::Declined => "the person at the keyboard declined to confirm this call, so it was not run".into(),
            Refusal::Cancelled => "the person at the keyboard dismissed the confirmation, so this call was not run".into(),
            Refusal::Tampered => "the confirmation state (requestState) is not one this gateway issued or was altered; call the tool again to be asked afresh".into(),
            Refusal::Expired => "the confirmation expired before the call was retried; call the tool again to be asked afresh".into(),
            Refusal::OtherPrincipal => "the confirmation was given to another caller; call the tool again to be asked yourself".into(),
            Refusal::ArgumentsChanged => "the arguments differ from the ones the person confirmed; call the tool again to confirm the new arguments".into(),
            Refusal::PolicyChanged => "the gateway policy changed since the person confirmed; call the tool again to be asked under the current policy".into(),
            Refusal::Replayed => "this confirmation was already used; each confirmation lets exactly one call through, call the tool again".into(),
            Refusal::InvalidAnswer(what) => format!("the confirmation was accepted without {what}; call the tool again and fill in every required field"),
            Refusal::Mismatch { field, expected } => format!("the confirmation field {field} must be exactly {expected}; the call was not run, call the tool again"),
            Refusal::UnsupportedClient => "this call needs the person's confirmation, but the client did not declare the MCP elicitation capability; use a client that supports elicitation (form mode)".into(),
            Refusal::Timeout => "nobody answered the confirmation within approval.answer_timeout, so the call was not run; call the tool again (behind several gateway replicas the answer must reach the replica that asked: route each Mcp-Session-Id to one replica)".into(),
            Refusal::Unavailable(why) => format!("the confirmation could not be completed ({why}); call the tool again"),
        }
    }
}

/// An accepted answer, as recorded (the reason already redacted by the caller).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub reason: String,
    /// The other fields the person filled in.
    pub fields: Map<String, Value>,
}

/// The `elicitation/create` params for a confirmation: a form of string fields.
pub fn elicitation_params(c: &Confirmation) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for f in &c.fields {
        let mut prop = json!({"type": "string", "title": f.title, "description": f.description});
        if f.required {
            prop["minLength"] = json!(1);
            required.push(Value::String(f.name.clone()));
        }
        properties.insert(f.name.clone(), prop);
    }
    json!({
        "mode": "form",
        "message": c.message,
        "requestedSchema": {"type": "object", "properties": properties, "required": required},
    })
}

/// Check an `ElicitResult` (`{action, content}`) against the confirmation asked.
pub fn check_answer(c: &Confirmation, result: &Value) -> Result<Answer, Refusal> {
    match result.get("action").and_then(Value::as_str) {
        Some("accept") => {}
        Some("decline") => return Err(Refusal::Declined),
        Some("cancel") => return Err(Refusal::Cancelled),
        _ => {
            return Err(Refusal::InvalidAnswer(
                "an action of accept, decline or cancel".into(),
            ));
        }
    }
    let empty = Map::new();
    let content = result
        .get("content")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut reason = String::new();
    let mut fields = Map::new();
    for f in &c.fields {
        let value = content
            .get(&f.name)
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or("");
        if f.required && value.is_empty() {
            return Err(Refusal::InvalidAnswer(format!("the field {}", f.name)));
        }
        if let Some(expected) = &f.expect
            && value != expected
        {
            return Err(Refusal::Mismatch {
                field: f.name.clone(),
                expected: expected.clone(),
            });
        }
        if f.name == "reason" {
            reason = value.to_owned();
        } else {
            fields.insert(f.name.clone(), Value::String(value.to_owned()));
        }
    }
    Ok(Answer { reason, fields })
}

/// Whether client capabilities (`initialize`'s or the stateless `_meta` ones) include form
/// elicitation: `elicitation: {}` (form implied) or `elicitation: {form: {...}}`.
pub fn client_can_elicit(capabilities: Option<&Value>) -> bool {
    match capabilities.and_then(|c| c.get("elicitation")) {
        Some(Value::Object(e)) => e.is_empty() || e.contains_key("form"),
        _ => false,
    }
}

/// SHA-256 over the method, the tool name and the arguments exactly as they will be
/// forwarded (the gateway's own serialisation of the parsed request, key order kept).
pub fn call_digest(method: &str, tool: &str, arguments: Option<&Value>) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update([0]);
    h.update(tool.as_bytes());
    h.update([0]);
    match arguments {
        Some(a) => h.update(serde_json::to_vec(a).expect("JSON value serialises")),
        None => h.update(b"-"),
    }
    hex::encode(h.finalize())
}

/// What a sealed state binds.
#[derive(Debug, Serialize, Deserialize)]
struct Sealed {
    /// Principal id.
    p: String,
    /// [`call_digest`].
    d: String,
    /// Policy revision that asked.
    r: String,
    /// Asked at, Unix milliseconds.
    i: u64,
    /// Expires at, Unix milliseconds.
    e: u64,
    /// Random id for the replay cache.
    n: String,
}

/// A verified state: when it was asked, for the audit record's round trip.
#[derive(Debug)]
pub struct Verified {
    pub asked_at_ms: u64,
    nonce: String,
    expires_ms: u64,
}

/// The sealing keys, the approval lifetime and this replica's replay cache.
///
/// Replay protection: a state is accepted once per replica (the cache holds each used id
/// until its expiry). Another replica that never saw it accepts it once too, so across N
/// replicas one approval can let the same call (same principal, byte-identical arguments)
/// through at most N times, and only within `approval.ttl`. A restart empties the cache,
/// with the same bound.
pub struct Approvals {
    keys: Vec<RandomizedNonceKey>,
    pub ttl: Duration,
    pub answer_timeout: Duration,
    used: Mutex<HashMap<String, u64>>,
    /// Session era: questions waiting for the client's answer, by elicitation id.
    waiting: Mutex<HashMap<String, Waiting>>,
    /// Session era: whether a session's `initialize` declared form elicitation, by session
    /// id hash (this replica's sessions only).
    sessions: Mutex<HashMap<String, bool>>,
    /// No key configured: a random key for this process only.
    pub ephemeral: bool,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals")
            .field(
                "keys",
                &format_args!("<{} sealing key(s), withheld>", self.keys.len()),
            )
            .field("ttl", &self.ttl)
            .field("ephemeral", &self.ephemeral)
            .finish()
    }
}

impl Approvals {
    /// Keys from `approval.key_file`, else from [`KEYS_ENV`], else a random one.
    pub fn from_config(cfg: &ApprovalConfig) -> anyhow::Result<Approvals> {
        let (text, source) = match &cfg.key_file {
            Some(path) => (
                std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("approval.key_file {}: cannot be read ({e})", path.display())
                })?,
                format!("approval.key_file {}", path.display()),
            ),
            None => match std::env::var(KEYS_ENV) {
                Ok(v) => (v, format!("environment variable {KEYS_ENV}")),
                Err(_) => {
                    let random: [u8; 32] = rand::random();
                    return Ok(Self::with_keys(&[random], cfg, true));
                }
            },
        };
        let keys = parse_keys(&text).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        Ok(Self::with_keys(&keys, cfg, false))
    }

    fn with_keys(keys: &[[u8; 32]], cfg: &ApprovalConfig, ephemeral: bool) -> Approvals {
        Approvals {
            keys: keys
                .iter()
                .map(|k| RandomizedNonceKey::new(&AES_256_GCM, k).expect("a 32-byte AES key"))
                .collect(),
            ttl: cfg.ttl,
            answer_timeout: cfg.answer_timeout,
            used: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            ephemeral,
        }
    }

    /// Seal a new state for this principal, call and policy revision.
    pub fn seal(&self, principal: &str, digest: &str, revision: &str) -> String {
        let now = now_ms();
        let sealed = Sealed {
            p: principal.to_owned(),
            d: digest.to_owned(),
            r: revision.to_owned(),
            i: now,
            e: now + self.ttl.as_millis() as u64,
            n: hex::encode(rand::random::<[u8; 16]>()),
        };
        let mut buf = serde_json::to_vec(&sealed).expect("state serialises");
        let nonce = self.keys[0]
            .seal_in_place_append_tag(Aad::from(AAD), &mut buf)
            .expect("AES-GCM sealing does not fail for small inputs");
        let mut out = nonce.as_ref().to_vec();
        out.extend_from_slice(&buf);
        format!("{STATE_PREFIX}{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// Open a state and check it binds this principal, call and policy revision and has not
    /// expired. Does not consume it (see [`Approvals::consume`]).
    pub fn verify(
        &self,
        state: &str,
        principal: &str,
        digest: &str,
        revision: &str,
    ) -> Result<Verified, Refusal> {
        let sealed = self.open(state).ok_or(Refusal::Tampered)?;
        if now_ms() >= sealed.e {
            return Err(Refusal::Expired);
        }
        if sealed.p != principal {
            return Err(Refusal::OtherPrincipal);
        }
        if sealed.d != digest {
            return Err(Refusal::ArgumentsChanged);
        }
        if sealed.r != revision {
            return Err(Refusal::PolicyChanged);
        }
        Ok(Verified {
            asked_at_ms: sealed.i,
            nonce: sealed.n,
            expires_ms: sealed.e,
        })
    }

    /// Mark a verified state used; `Err(Replayed)` when this replica already let it through.
    pub fn consume(&self, v: &Verified) -> Result<(), Refusal> {
        let now = now_ms();
        let mut used = lock(&self.used);
        used.retain(|_, expires| *expires > now);
        if used.insert(v.nonce.clone(), v.expires_ms).is_some() {
            return Err(Refusal::Replayed);
        }
        Ok(())
    }

    fn open(&self, state: &str) -> Option<Sealed> {
        let raw = URL_SAFE_NO_PAD
            .decode(state.strip_prefix(STATE_PREFIX)?)
            .ok()?;
        if raw.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        for key in &self.keys {
            let mut buf = sealed.to_vec();
            let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
            if let Ok(plain) = key.open_in_place(nonce, Aad::from(AAD), &mut buf) {
                return serde_json::from_slice(plain).ok();
            }
        }
        None
    }
}

/// A question waiting for its answer: who was asked, and where the answer goes.
struct Waiting {
    principal: String,
    answer: tokio::sync::oneshot::Sender<Value>,
}

/// What became of a client's answer to one of the gateway's `elicitation/create` requests.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Handed to the waiting tools/call.
    Delivered,
    /// Sent by another principal than the one asked; dropped.
    OtherPrincipal,
    /// No question with this id waits here: answered already, timed out, or asked by
    /// another replica (several replicas need session affinity).
    NotWaiting,
}

/// Sessions remembered for their elicitation capability before the map is cleared (then a
/// forgotten session is asked as if it had declared the capability; a client that has not
/// answers with an error, which is refused as `unsupported_client`).
const MAX_SESSIONS: usize = 65_536;

impl Approvals {
    /// Session era: register a question for `principal`; returns the id to put on the
    /// `elicitation/create` request and the answer's receiver. [`Approvals::forget`] it
    /// however the request ends.
    pub fn ask(&self, principal: &str) -> (String, tokio::sync::oneshot::Receiver<Value>) {
        let id = format!(
            "{ELICITATION_ID_PREFIX}{}",
            hex::encode(rand::random::<[u8; 16]>())
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&self.waiting).insert(
            id.clone(),
            Waiting {
                principal: principal.to_owned(),
                answer: tx,
            },
        );
        (id, rx)
    }

    /// Stop waiting for the answer to question `id` (answered, timed out, or abandoned).
    pub fn forget(&self, id: &str) {
        lock(&self.waiting).remove(id);
    }

    /// Session era: the client POSTed a response to one of the gateway's questions.
    pub fn deliver(&self, id: &str, principal: &str, response: Value) -> Delivery {
        let mut waiting = lock(&self.waiting);
        match waiting.get(id) {
            None => Delivery::NotWaiting,
            Some(w) if w.principal != principal => Delivery::OtherPrincipal,
            Some(_) => {
                let w = waiting.remove(id).expect("present");
                match w.answer.send(response) {
                    Ok(()) => Delivery::Delivered,
                    Err(_) => Delivery::NotWaiting,
                }
            }
        }
    }

    /// Remember whether a session's `initialize` declared form elicitation.
    pub fn note_session(&self, session_id: &str, can_elicit: bool) {
        let mut sessions = lock(&self.sessions);
        if sessions.len() >= MAX_SESSIONS {
            sessions.clear();
        }
        sessions.insert(crate::audit::session_hash(session_id), can_elicit);
    }

    /// Whether this replica saw the session declare form elicitation (None: not seen).
    pub fn session_can_elicit(&self, session_id: &str) -> Option<bool> {
        lock(&self.sessions)
            .get(&crate::audit::session_hash(session_id))
            .copied()
    }
}

/// Whether a JSON-RPC id is one of the gateway's own elicitation requests.
pub fn is_gateway_elicitation(id: &Value) -> bool {
    id.as_str()
        .is_some_and(|s| s.starts_with(ELICITATION_ID_PREFIX))
}

/// The `ElicitResult` in a client's JSON-RPC response, or why there is none.
pub fn elicit_result(response: &Value) -> Result<&Value, Refusal> {
    if let Some(result) = response.get("result") {
        return Ok(result);
    }
    match response.pointer("/error/code").and_then(Value::as_i64) {
        Some(-32601) => Err(Refusal::UnsupportedClient),
        _ => Err(Refusal::Unavailable(format!(
            "the client answered the confirmation with an error: {}",
            response
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no message")
        ))),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a `requestState` looks like one of this gateway's (it may still not open).
pub fn is_gateway_state(state: &str) -> bool {
    state.starts_with(STATE_PREFIX)
}

/// Keys, one per line or comma-separated, each base64 (standard or URL-safe) or hex of 32
/// bytes; blank lines and `#` comments are skipped. At most two (current, previous).
fn parse_keys(text: &str) -> Result<Vec<[u8; 32]>, String> {
    let mut keys = Vec::new();
    for (i, item) in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .enumerate()
    {
        let bytes = if item.len() == 64 && item.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(item).ok()
        } else {
            STANDARD
                .decode(item)
                .ok()
                .or_else(|| URL_SAFE_NO_PAD.decode(item.trim_end_matches('=')).ok())
        };
        let key: [u8; 32] = bytes
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("key {} is not 32 bytes written as base64 or hex; generate one with `openssl rand -base64 32`", i + 1))?;
        keys.push(key);
    }
    match keys.len() {
        0 => Err("holds no key; put one key (`openssl rand -base64 32`) on the first line".into()),
        1 | 2 => Ok(keys),
        n => Err(format!(
            "holds {n} keys; keep the current key first and at most one previous key"
        )),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Unix milliseconds to an age in milliseconds from now (the audit's `round_trip_ms`).
pub fn since_ms(asked_at_ms: u64) -> f64 {
    now_ms().saturating_sub(asked_at_ms) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ConfirmField;

    const KEY_A: &str = "q3Jk0Jx0l1mJ0T6o2m3YVtQe9D8w7Rk2c5aZ1b2C3d4=";
    const KEY_B: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn approvals(keys: &str, ttl: Duration) -> Approvals {
        let cfg = ApprovalConfig {
            ttl,
            ..ApprovalConfig::default()
        };
        Approvals::with_keys(&parse_keys(keys).unwrap(), &cfg, false)
    }

    fn confirmation() -> Confirmation {
        Confirmation {
            message: "m".into(),
            fields: vec![
                ConfirmField {
                    name: "reason".into(),
                    title: "Reason".into(),
                    description: String::new(),
                    required: true,
                    expect: None,
                },
                ConfirmField {
                    name: "confirm_name".into(),
                    title: "Type api".into(),
                    description: String::new(),
                    required: true,
                    expect: Some("api".into()),
                },
            ],
        }
    }

    #[test]
    fn a_state_opens_only_for_its_principal_call_and_revision() {
        let a = approvals(KEY_A, Duration::from_secs(60));
        let s = a.seal("alice", "d1", "rev1");
        assert!(is_gateway_state(&s));
        assert!(a.verify(&s, "alice", "d1", "rev1").is_ok());
        assert_eq!(
            a.verify(&s, "bob", "d1", "rev1").unwrap_err(),
            Refusal::OtherPrincipal
        );
        assert_eq!(
            a.verify(&s, "alice", "d2", "rev1").unwrap_err(),
            Refusal::ArgumentsChanged
        );
        assert_eq!(
            a.verify(&s, "alice", "d1", "rev2").unwrap_err(),
            Refusal::PolicyChanged
        );
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let a = approvals(KEY_A, Duration::from_secs(60));
        let s = a.seal("alice", "d1", "rev1");
        let raw = URL_SAFE_NO_PAD.decode(&s[STATE_PREFIX.len()..]).unwrap();
        for bit in 0..raw.len() * 8 {
            let mut t = raw.clone();
            t[bit / 8] ^= 1 << (bit % 8);
            let state = format!("{STATE_PREFIX}{}", URL_SAFE_NO_PAD.encode(&t));
            assert_eq!(
                a.verify(&state, "alice", "d1", "rev1").unwrap_err(),
                Refusal::Tampered,
                "bit {bit}"
            );
        }
    }

    #[test]
    fn rollover_opens_states_of_the_previous_key_and_seals_with_the_first() {
        let old = approvals(KEY_A, Duration::from_secs(60));
        let rolled = approvals(&format!("{KEY_B}\n{KEY_A}\n"), Duration::from_secs(60));
        let new_only = approvals(KEY_B, Duration::from_secs(60));
        let s = old.seal("alice", "d", "r");
        assert!(rolled.verify(&s, "alice", "d", "r").is_ok());
        assert_eq!(
            new_only.verify(&s, "alice", "d", "r").unwrap_err(),
            Refusal::Tampered
        );
        let s2 = rolled.seal("alice", "d", "r");
        assert!(new_only.verify(&s2, "alice", "d", "r").is_ok());
        assert_eq!(
            old.verify(&s2, "alice", "d", "r").unwrap_err(),
            Refusal::Tampered
        );
    }

    #[test]
    fn a_state_is_used_once_per_replica_and_expires() {
        let a = approvals(KEY_A, Duration::from_secs(60));
        let b = approvals(KEY_A, Duration::from_secs(60));
        let s = a.seal("alice", "d", "r");
        let v = a.verify(&s, "alice", "d", "r").unwrap();
        assert!(a.consume(&v).is_ok());
        let v = a.verify(&s, "alice", "d", "r").unwrap();
        assert_eq!(a.consume(&v).unwrap_err(), Refusal::Replayed);
        let v = b.verify(&s, "alice", "d", "r").unwrap();
        assert!(
            b.consume(&v).is_ok(),
            "another replica with the same key accepts it"
        );
        let short = approvals(KEY_A, Duration::from_millis(0));
        let s = short.seal("alice", "d", "r");
        assert_eq!(
            short.verify(&s, "alice", "d", "r").unwrap_err(),
            Refusal::Expired
        );
    }

    #[test]
    fn key_errors_never_quote_the_key() {
        let short = "c2hvcnQta2V5LXRoYXQtbXVzdC1ub3QtbGVhaw==";
        let e = parse_keys(short).unwrap_err();
        assert!(!e.contains(short) && !e.contains("c2hvcnQ"), "{e}");
        assert!(e.contains("key 1 is not 32 bytes"), "{e}");
        let a = approvals(KEY_A, Duration::from_secs(1));
        let dbg = format!("{a:?}");
        assert!(!dbg.contains(KEY_A) && dbg.contains("withheld"), "{dbg}");
        assert!(parse_keys(&format!("{KEY_A},{KEY_B},{KEY_A}")).is_err());
    }

    #[test]
    fn answers_are_checked_against_the_fields_asked() {
        let c = confirmation();
        let ok = check_answer(
            &c,
            &json!({"action": "accept", "content": {"reason": " rollback ", "confirm_name": "api"}}),
        )
        .unwrap();
        assert_eq!(ok.reason, "rollback");
        assert_eq!(
            ok.fields,
            json!({"confirm_name": "api"}).as_object().cloned().unwrap()
        );
        let no_reason =
            json!({"action": "accept", "content": {"reason": "  ", "confirm_name": "api"}});
        assert_eq!(
            check_answer(&c, &no_reason).unwrap_err().rule(),
            "confirm.invalid_answer"
        );
        let wrong = json!({"action": "accept", "content": {"reason": "x", "confirm_name": "API"}});
        assert_eq!(
            check_answer(&c, &wrong).unwrap_err().rule(),
            "confirm.mismatch"
        );
        assert_eq!(
            check_answer(&c, &json!({"action": "decline"})).unwrap_err(),
            Refusal::Declined
        );
        assert_eq!(
            check_answer(&c, &json!({"action": "cancel"})).unwrap_err(),
            Refusal::Cancelled
        );
        let schema = elicitation_params(&c);
        assert_eq!(
            schema["requestedSchema"]["required"],
            json!(["reason", "confirm_name"])
        );
        assert!(client_can_elicit(Some(&json!({"elicitation": {}}))));
        assert!(client_can_elicit(Some(
            &json!({"elicitation": {"form": {}}})
        )));
        assert!(!client_can_elicit(Some(
            &json!({"elicitation": {"url": {}}})
        )));
        assert!(!client_can_elicit(Some(&json!({}))));
        assert!(!client_can_elicit(None));
    }
}
