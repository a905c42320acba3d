//! redact / filter: removes secrets from everything the gateway sends back to the client, and
//! from tool arguments and free text before they are audited or logged.
//!
//! What it owns: the detectors (named, switchable, see `detectors.rs`), the redaction profiles
//! of `policies/redaction.yaml` (the policy decision names which profiles apply), and the walk
//! over MCP message shapes (`result.content[]` text blocks — with JSON documents inside them
//! redacted structurally — `structuredContent`, embedded resources, `resources/read` contents,
//! logging/progress notifications, errors).
//!
//! What it must never do: report or log a secret value (a [`Redaction`] names the detector and
//! the JSON path, never the value); leave part of a secret in place (the whole value is
//! replaced by `[REDACTED:<detector>]`); touch protocol fields (ids, methods, `tools/list`
//! schemas); fail open (an unknown profile name applies `baseline`). It keeps no state between
//! calls, so each SSE event's message is redacted on its own with memory bounded by its size.
mod detectors;
mod json;
mod names;
mod node;
mod text;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde::Deserialize;
use serde_json::Value;

use detectors::{BUILTIN, Det, DetectorSet, MAX_DETECTORS};
use text::{ExtraPattern, TextScanner};

/// The shipped `policies/redaction.yaml`, compiled in for [`Redactor::builtin`].
const SHIPPED_POLICY: &str = include_str!("../../policies/redaction.yaml");

/// The profile applied for unknown profile names; it must exist in every redaction policy.
pub const BASELINE: &str = "baseline";

/// One thing removed: which detector and where (a JSON path; a string holding a JSON document
/// contributes a second `$...` path inside it, e.g.
/// `$.result.content[1].text$.items[0].data.password`). Never the value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Redaction {
    pub detector: &'static str,
    pub path: String,
}

/// Loading or validating a redaction policy failed. Messages name the file/field and the fix.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error("cannot read redaction policy {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "redaction policy is not valid YAML for the expected schema: {0} (see policies/redaction.yaml for the format)"
    )]
    Yaml(String),
    #[error(
        "redaction policy: profile `{profile}` lists `{entry}`, which is neither a detector nor a profile; detectors are: {known}"
    )]
    UnknownEntry {
        profile: String,
        entry: String,
        known: String,
    },
    #[error(
        "redaction policy: `detectors` switches unknown detector `{name}`; detectors are: {known}"
    )]
    UnknownDetector { name: String, known: String },
    #[error(
        "redaction policy: `always_apply` names unknown profile `{0}`; define it under `profiles`"
    )]
    UnknownAlways(String),
    #[error(
        "redaction policy: profile `{0}` must be defined (unknown profile names fall back to it)"
    )]
    MissingBaseline(&'static str),
    #[error("redaction policy: profiles include each other in a cycle through `{0}`")]
    ProfileCycle(String),
    #[error("redaction policy: profile name `{0}` is also a detector name; rename the profile")]
    ProfileNamedLikeDetector(String),
    #[error(
        "redaction policy: extra pattern `{name}`: {problem} (names are [a-z0-9_], 1-48 chars, unique, not a built-in detector)"
    )]
    BadExtraName { name: String, problem: &'static str },
    #[error("redaction policy: extra pattern `{name}` has an invalid regex: {error}")]
    BadExtraRegex { name: String, error: String },
    #[error(
        "redaction policy: extra pattern `{0}` needs `keywords`: literal strings (3+ chars) that every match contains, used to find candidates quickly"
    )]
    MissingKeywords(String),
    #[error(
        "redaction policy: too many detectors ({0}); at most {MAX_DETECTORS} including built-ins"
    )]
    TooManyDetectors(usize),
}

// ---- policy file schema -------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    /// Format version; only 1 exists.
    #[serde(default)]
    version: Option<u32>,
    /// Profiles applied to every message whatever the decision names (default `[baseline]`).
    #[serde(default = "default_always")]
    always_apply: Vec<String>,
    /// Detector switches: `name: false` turns a detector off everywhere.
    #[serde(default)]
    detectors: BTreeMap<String, bool>,
    /// Profile name -> detector names and/or other profile names.
    profiles: BTreeMap<String, Vec<String>>,
    /// Operator-defined detectors.
    #[serde(default)]
    extra_patterns: Vec<ExtraPatternSpec>,
}

fn default_always() -> Vec<String> {
    vec![BASELINE.to_string()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtraPatternSpec {
    name: String,
    regex: String,
    keywords: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
}

/// Detector names must be `&'static str` (they go into audit records and metric labels
/// without allocation). Extra pattern names are interned once per process.
fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(n) = set.get(name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}

// ---- the redactor -------------------------------------------------------------------------

/// Compiled redaction policy. Built once, shared via `Arc`; `Send + Sync`.
pub struct Redactor {
    scanner: TextScanner,
    /// Detector names by id (built-ins, then extra patterns).
    names: Vec<&'static str>,
    /// Detectors switched on.
    enabled: DetectorSet,
    profiles: HashMap<String, DetectorSet>,
    always: DetectorSet,
    baseline: DetectorSet,
    /// Unknown profile names already reported (each is logged once; bounded).
    reported_unknown: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("detectors", &self.names.len())
            .field("profiles", &self.profile_names())
            .finish()
    }
}

impl Redactor {
    /// Load `policies/redaction.yaml` (or another file of that format).
    pub fn from_file(path: &Path) -> Result<Redactor, RedactError> {
        let s = std::fs::read_to_string(path).map_err(|source| RedactError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Redactor::from_yaml_str(&s)
    }

    /// Compile a redaction policy from YAML text.
    pub fn from_yaml_str(s: &str) -> Result<Redactor, RedactError> {
        let file: PolicyFile =
            serde_yaml::from_str(s).map_err(|e| RedactError::Yaml(e.to_string()))?;
        if let Some(v) = file.version
            && v != 1
        {
            return Err(RedactError::Yaml(format!(
                "`version: {v}` is not supported; use `version: 1`"
            )));
        }
        let mut names: Vec<&'static str> = BUILTIN.iter().map(|(n, _)| *n).collect();
        let mut extra = Vec::new();
        for x in &file.extra_patterns {
            let ok_chars = !x.name.is_empty()
                && x.name.len() <= 48
                && x.name
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
            if !ok_chars {
                return Err(RedactError::BadExtraName {
                    name: x.name.clone(),
                    problem: "invalid name",
                });
            }
            if names.contains(&x.name.as_str()) {
                return Err(RedactError::BadExtraName {
                    name: x.name.clone(),
                    problem: "name already in use",
                });
            }
            if x.keywords.is_empty() || x.keywords.iter().any(|k| k.len() < 3) {
                return Err(RedactError::MissingKeywords(x.name.clone()));
            }
            let re = regex::RegexBuilder::new(&x.regex)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| RedactError::BadExtraRegex {
                    name: x.name.clone(),
                    error: e.to_string(),
                })?;
            if names.len() >= MAX_DETECTORS {
                return Err(RedactError::TooManyDetectors(names.len() + 1));
            }
            let det = Det(names.len() as u8);
            names.push(intern(&x.name));
            extra.push(ExtraPattern {
                det,
                re,
                keywords: x.keywords.clone(),
            });
        }
        let known = || names.join(", ");
        let id_of = |n: &str| names.iter().position(|x| *x == n).map(|i| Det(i as u8));

        let mut enabled = DetectorSet::default();
        for i in 0..names.len() {
            enabled.insert(Det(i as u8));
        }
        for (name, on) in &file.detectors {
            let Some(det) = id_of(name) else {
                return Err(RedactError::UnknownDetector {
                    name: name.clone(),
                    known: known(),
                });
            };
            if !on {
                enabled.0 &= !(1u128 << det.0);
            }
        }

        // Resolve profiles (entries are detectors or other profiles).
        for p in file.profiles.keys() {
            if id_of(p).is_some() {
                return Err(RedactError::ProfileNamedLikeDetector(p.clone()));
            }
        }
        let mut resolved: HashMap<String, DetectorSet> = HashMap::new();
        fn resolve(
            p: &str,
            file: &PolicyFile,
            id_of: &dyn Fn(&str) -> Option<Det>,
            known: &dyn Fn() -> String,
            done: &mut HashMap<String, DetectorSet>,
            stack: &mut Vec<String>,
        ) -> Result<DetectorSet, RedactError> {
            if let Some(s) = done.get(p) {
                return Ok(*s);
            }
            if stack.iter().any(|x| x == p) {
                return Err(RedactError::ProfileCycle(p.to_string()));
            }
            stack.push(p.to_string());
            let mut set = DetectorSet::default();
            for entry in &file.profiles[p] {
                if let Some(det) = id_of(entry) {
                    set.insert(det);
                } else if file.profiles.contains_key(entry) {
                    set = set.union(resolve(entry, file, id_of, known, done, stack)?);
                } else {
                    return Err(RedactError::UnknownEntry {
                        profile: p.to_string(),
                        entry: entry.clone(),
                        known: known(),
                    });
                }
            }
            stack.pop();
            done.insert(p.to_string(), set);
            Ok(set)
        }
        for p in file.profiles.keys() {
            resolve(p, &file, &id_of, &known, &mut resolved, &mut Vec::new())?;
        }
        let baseline = *resolved
            .get(BASELINE)
            .ok_or(RedactError::MissingBaseline(BASELINE))?;
        let mut always = DetectorSet::default();
        for p in &file.always_apply {
            let set = resolved
                .get(p)
                .ok_or_else(|| RedactError::UnknownAlways(p.clone()))?;
            always = always.union(*set);
        }
        Ok(Redactor {
            scanner: TextScanner::new(extra),
            names,
            enabled,
            profiles: resolved,
            always,
            baseline,
            reported_unknown: Mutex::new(HashSet::new()),
        })
    }

    /// The shipped `policies/redaction.yaml`, compiled into the binary.
    pub fn builtin() -> Redactor {
        Redactor::from_yaml_str(SHIPPED_POLICY)
            .expect("the shipped policies/redaction.yaml is valid (unit-tested)")
    }

    /// Profile names defined by the policy, sorted.
    pub fn profile_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.profiles.keys().cloned().collect();
        v.sort();
        v
    }

    /// Names of all detectors (built-ins, then extra patterns), switched on or off.
    pub fn detector_names(&self) -> Vec<&'static str> {
        self.names.clone()
    }

    /// The detectors that run for these profiles: `always_apply` plus each named profile
    /// (unknown names apply `baseline`, reported once), minus switched-off detectors.
    fn active(&self, profiles: &[String]) -> DetectorSet {
        let mut set = self.always;
        for p in profiles {
            match self.profiles.get(p) {
                Some(s) => set = set.union(*s),
                None => {
                    set = set.union(self.baseline);
                    self.report_unknown(p);
                }
            }
        }
        set.intersect(self.enabled)
    }

    fn report_unknown(&self, p: &str) {
        let mut seen = self
            .reported_unknown
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if seen.len() < 256 && seen.insert(p.to_string()) {
            tracing::error!(
                profile = %p,
                known = ?self.profile_names(),
                "the policy decision names an unknown redaction profile; applying `baseline` instead \
                 (define the profile in policies/redaction.yaml or fix the policy)"
            );
        }
    }

    /// Redact one JSON-RPC message going back to the client (a response, notification or
    /// server request), in place. Returns what was removed, in document order.
    pub fn redact_message(&self, msg: &mut Value, profiles: &[String]) -> Vec<Redaction> {
        let active = self.active(profiles);
        let mut out = Vec::new();
        if active.is_empty() {
            return out;
        }
        json::Walk::new(&self.scanner, &self.names, active, &mut out, "$").message(msg);
        out
    }

    /// Redact an arbitrary JSON value (e.g. tool arguments before they are audited or logged);
    /// `path` prefixes the reported paths (e.g. `$.params.arguments`).
    pub fn redact_value(&self, v: &mut Value, profiles: &[String], path: &str) -> Vec<Redaction> {
        let active = self.active(profiles);
        let mut out = Vec::new();
        if active.is_empty() {
            return out;
        }
        json::Walk::new(&self.scanner, &self.names, active, &mut out, path)
            .value(v, Default::default());
        out
    }

    /// Redact free text (log lines, deny reasons, error messages): the same treatment as a
    /// string inside a message (a JSON document in it, or JSON objects embedded in a line,
    /// are walked structurally). Paths start with `$`.
    pub fn redact_text<'s>(
        &self,
        s: &'s str,
        profiles: &[String],
    ) -> (Cow<'s, str>, Vec<Redaction>) {
        let active = self.active(profiles);
        if active.is_empty() || !self.scanner.has_trigger(s) {
            return (Cow::Borrowed(s), Vec::new());
        }
        let mut out = Vec::new();
        let mut text = s.to_owned();
        json::Walk::new(&self.scanner, &self.names, active, &mut out, "$").string(&mut text);
        if out.is_empty() {
            return (Cow::Borrowed(s), out);
        }
        (Cow::Owned(text), out)
    }
}

#[cfg(test)]
mod tests;
