//! `policy replay`: what a policy change would do to recorded traffic.
//!
//! Each audit record (JSON lines, as the gateway writes them) is turned back into the input
//! document its decision was made on ([`AuditRecord::input`]), decided by the new policy,
//! and compared with the decision it had: the recorded one, or the decision of a baseline
//! policy directory when one is given. The report counts what stayed, what flipped from
//! allow to deny and back, and what kept its verdict but changed reasons, rules or
//! redaction profiles; flips are grouped by rule, principal group and tool with one
//! example each, as recorded (the arguments are the redacted ones the record holds).
//!
//! Input is streamed: one line at a time, at most [`MAX_LINE`] bytes of it held, and the
//! report keeps counts, a bounded number of groups and one example per group, so a week of
//! audit files replays in the memory of a day's. A line that is not a record (truncated,
//! written by another program, too long, of a newer schema) is counted with its file and
//! line number and skipped; it never stops the replay.
//!
//! This module only reads: it never writes a record and never sees a secret the audit
//! trail did not already hold.
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Decision, PolicyEngine, PolicyInput};
use crate::audit::{AuditDecision, AuditFacts, AuditRecord, SCHEMA};
use crate::config::PolicyConfig;
use crate::redact::Redactor;

/// Longest line read; a longer one is skipped (the gateway's own records are bounded by
/// `limits.max_body_bytes`, 4 MiB by default).
pub const MAX_LINE: usize = 64 << 20;

/// Distinct keys kept per grouping (rule, group, tool) and direction; further keys are
/// counted under `(other)`.
const MAX_KEYS: usize = 1000;

/// Skipped lines listed with their location in the report (all are counted).
const MAX_SKIPPED_LISTED: usize = 100;

/// Decisions remembered per policy, keyed by a 128-bit hash of the whole input document.
/// Audit traffic repeats itself (the same caller listing the same namespace); an identical
/// document gets the identical decision without a second evaluation.
const CACHE_ENTRIES: usize = 1 << 15;

/// Where audit lines come from: a file, or `-` for standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSource {
    Stdin,
    File(PathBuf),
}

impl AuditSource {
    pub fn from_arg(arg: &Path) -> AuditSource {
        if arg == Path::new("-") {
            AuditSource::Stdin
        } else {
            AuditSource::File(arg.to_path_buf())
        }
    }

    fn name(&self) -> String {
        match self {
            AuditSource::Stdin => "<stdin>".to_string(),
            AuditSource::File(p) => p.display().to_string(),
        }
    }
}

/// Which decisions flip a CI job (`--fail-on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOn {
    DenyToAllow,
    AllowToDeny,
    /// A flip in either direction (changed reasons or profiles alone do not fail).
    Any,
}

/// One policy directory ready to decide replayed records.
pub struct ReplayPolicy {
    engine: PolicyEngine,
    redactor: Redactor,
    cache: DecisionCache,
}

impl ReplayPolicy {
    /// Load the policies, data, catalogue and redaction profiles of `dir` as `serve` would.
    pub fn load(dir: &Path) -> anyhow::Result<ReplayPolicy> {
        let cfg = PolicyConfig {
            dir: dir.to_path_buf(),
            // A replay has no request to keep waiting; the limit still fails closed a
            // runaway evaluation, as the gateway would.
            ..PolicyConfig::default()
        };
        let engine = PolicyEngine::load(&cfg)
            .map_err(|e| anyhow::anyhow!("policies in {}: {e}", dir.display()))?;
        let redactor = super::redactor_for(dir)?;
        Ok(ReplayPolicy {
            engine,
            redactor,
            cache: DecisionCache::new(),
        })
    }

    pub fn revision(&self) -> &str {
        self.engine.revision()
    }

    /// The decision the gateway would record for this input: the policy's, with reasons
    /// redacted as the pipeline redacts them.
    fn decide(&mut self, input: &PolicyInput) -> Decision {
        let key = self.cache.key(input);
        if let Some(key) = key
            && let Some(d) = self.cache.get(key)
        {
            return d.clone();
        }
        let mut d = self.engine.decide(input);
        d.redact_reasons(&self.redactor);
        // A fail-closed decision may come from the time limit: never remembered.
        if let Some(key) = key
            && !d.is_fail_closed()
        {
            self.cache.put(key, d.clone());
        }
        d
    }

    /// Rebuild a record's input with this policy's catalogue.
    fn input(&self, rec: &AuditRecord) -> Result<PolicyInput, String> {
        rec.input(self.engine.catalogue())
    }
}

/// A bounded map from input documents (by a 128-bit hash of their JSON) to decisions.
struct DecisionCache {
    map: HashMap<u128, Decision>,
    hashers: (std::hash::RandomState, std::hash::RandomState),
    buf: Vec<u8>,
}

impl DecisionCache {
    fn new() -> Self {
        DecisionCache {
            map: HashMap::new(),
            hashers: (std::hash::RandomState::new(), std::hash::RandomState::new()),
            buf: Vec::with_capacity(4096),
        }
    }

    /// Two independently keyed 64-bit hashes of the input's JSON: a collision between two
    /// documents of one replay is as likely as guessing a 128-bit key.
    fn key(&mut self, input: &PolicyInput) -> Option<u128> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, input).ok()?;
        let mut a = self.hashers.0.build_hasher();
        let mut b = self.hashers.1.build_hasher();
        a.write(&self.buf);
        b.write(&self.buf);
        Some((u128::from(a.finish()) << 64) | u128::from(b.finish()))
    }

    fn get(&self, key: u128) -> Option<&Decision> {
        self.map.get(&key)
    }

    fn put(&mut self, key: u128, d: Decision) {
        if self.map.len() >= CACHE_ENTRIES {
            self.map.clear();
        }
        self.map.insert(key, d);
    }
}

/// The policy to replay against and what to compare with.
pub struct Replayer {
    pub new: ReplayPolicy,
    /// Compare with this policy's decisions instead of the recorded ones.
    pub baseline: Option<ReplayPolicy>,
    new_dir: PathBuf,
    baseline_dir: Option<PathBuf>,
}

impl Replayer {
    pub fn load(new_dir: &Path, baseline_dir: Option<&Path>) -> anyhow::Result<Replayer> {
        Ok(Replayer {
            new: ReplayPolicy::load(new_dir)?,
            baseline: baseline_dir.map(ReplayPolicy::load).transpose()?,
            new_dir: new_dir.to_path_buf(),
            baseline_dir: baseline_dir.map(Path::to_path_buf),
        })
    }

    /// Replay every line of every source, in order. Fails only when a source cannot be
    /// opened or read; bad lines are counted in the report.
    pub fn replay(&mut self, sources: &[AuditSource]) -> anyhow::Result<ReplayReport> {
        let mut report = ReplayReport::new(self);
        for source in sources {
            let name = source.name();
            report.files.push(name.clone());
            match source {
                AuditSource::Stdin => {
                    let stdin = io::stdin();
                    self.replay_reader(&mut stdin.lock(), &name, &mut report)?;
                }
                AuditSource::File(path) => {
                    let file = std::fs::File::open(path)
                        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
                    let mut reader = BufReader::with_capacity(1 << 16, file);
                    self.replay_reader(&mut reader, &name, &mut report)?;
                }
            }
        }
        report.finish();
        Ok(report)
    }

    /// Replay the lines of one reader (`name` is how the report refers to it).
    pub fn replay_reader(
        &mut self,
        reader: &mut impl BufRead,
        name: &str,
        report: &mut ReplayReport,
    ) -> anyhow::Result<()> {
        let mut buf = Vec::with_capacity(4096);
        let mut line_no: u64 = 0;
        loop {
            let fits = next_line(reader, &mut buf, MAX_LINE)
                .map_err(|e| anyhow::anyhow!("reading {name}: {e}"))?;
            let Some(fits) = fits else { break };
            line_no += 1;
            report.lines += 1;
            let at = Location {
                file: name.to_string(),
                line: line_no,
            };
            if !fits {
                report.skip(
                    at,
                    Skip::TooLong,
                    format!("longer than {} MiB", MAX_LINE >> 20),
                );
                continue;
            }
            let line = buf.trim_ascii();
            if line.is_empty() {
                continue;
            }
            self.replay_line(line, at, report);
        }
        Ok(())
    }

    fn replay_line(&mut self, line: &[u8], at: Location, report: &mut ReplayReport) {
        let rec: AuditRecord = match serde_json::from_slice(line) {
            Ok(r) => r,
            Err(e) => {
                // A record's shape is checked while parsing; whether the line is JSON at
                // all is only asked when it is not a record.
                let (why, detail) = if e.classify() == serde_json::error::Category::Data {
                    match serde_json::from_slice::<serde::de::IgnoredAny>(line) {
                        Ok(_) => (Skip::NotARecord, e.to_string()),
                        Err(syntax) => not_json(syntax),
                    }
                } else {
                    not_json(e)
                };
                report.skip(at, why, detail);
                return;
            }
        };
        if rec.schema > SCHEMA {
            report.skip(
                at,
                Skip::NewerSchema,
                format!(
                    "schema {} is newer than this gateway reads ({SCHEMA}); replay with the gateway version that wrote it",
                    rec.schema
                ),
            );
            return;
        }
        if let Some(a) = &rec.approval
            && !matches!(a.outcome.as_str(), "asked" | "would_ask" | "accepted")
        {
            report.skip(
                at,
                Skip::ConfirmationRefused,
                format!(
                    "the gateway refused the person's confirmation ({}) after the policy allowed the call; the record holds that refusal, not a policy decision",
                    a.outcome
                ),
            );
            return;
        }
        let new_input = match self.new.input(&rec) {
            Ok(i) => i,
            Err(e) => {
                report.skip(at, Skip::Incomplete, e);
                return;
            }
        };
        let after = self.new.decide(&new_input);
        let facts_changed = AuditFacts::of(new_input.tool.as_ref(), &new_input.target) != rec.facts;
        let before = match &mut self.baseline {
            None => Verdict::recorded(&rec.decision),
            Some(base) => match base.input(&rec) {
                Ok(input) => {
                    let d = base.decide(&input);
                    if Verdict::recorded(&rec.decision) != Verdict::decided(&d) {
                        report.baseline_differs_from_recorded += 1;
                    }
                    Verdict::decided(&d)
                }
                Err(e) => {
                    report.skip(at, Skip::Incomplete, e);
                    return;
                }
            },
        };
        report.observe(&rec, at, before, Verdict::decided(&after), facts_changed);
    }
}

fn not_json(e: serde_json::Error) -> (Skip, String) {
    if e.is_eof() {
        (Skip::NotJson, format!("{e} (a truncated record?)"))
    } else {
        (Skip::NotJson, e.to_string())
    }
}

/// Read one line (without its `\n`) into `buf`, holding at most `max` bytes. `None` at the
/// end of input; `Some(false)` when the line was longer than `max` (the rest of it is read
/// and dropped, so memory stays bounded).
fn next_line(r: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Option<bool>> {
    buf.clear();
    let mut fits = true;
    let mut any = false;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(any.then_some(fits));
        }
        any = true;
        let (take, done) = match memchr::memchr(b'\n', chunk) {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if fits {
            if buf.len() + take <= max {
                buf.extend_from_slice(&chunk[..take]);
            } else {
                fits = false;
                buf.clear();
                buf.shrink_to(4096);
            }
        }
        r.consume(if done { take + 1 } else { take });
        if done {
            return Ok(Some(fits));
        }
    }
}

/// Why a line was not replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    /// Not JSON at all, or cut off (a truncated record, another program's text output).
    NotJson,
    /// JSON, but not a gateway audit record (another program's JSON log line).
    NotARecord,
    /// A record of a schema newer than this gateway knows.
    NewerSchema,
    /// A record that cannot rebuild its input (a tool without arguments, an unknown era).
    Incomplete,
    /// Longer than [`MAX_LINE`].
    TooLong,
    /// The policy allowed the call once confirmed, and the gateway refused the confirmation
    /// (declined, expired, tampered, ...): the record holds that refusal, not the policy's
    /// decision, so there is nothing to compare a replay with.
    ConfirmationRefused,
}

impl Skip {
    fn describe(self) -> &'static str {
        match self {
            Skip::NotJson => "not JSON",
            Skip::NotARecord => "not an audit record",
            Skip::NewerSchema => "newer schema",
            Skip::Incomplete => "cannot rebuild the input",
            Skip::TooLong => "line too long",
            Skip::ConfirmationRefused => "confirmation refused by the gateway",
        }
    }
}

/// A line of an audit source.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: u64,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One skipped line.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedLine {
    #[serde(flatten)]
    pub at: Location,
    pub reason: Skip,
    pub detail: String,
}

/// The parts of a decision a replay compares.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub allow: bool,
    pub rules: Vec<String>,
    pub reasons: Vec<String>,
    pub redact: Vec<String>,
}

impl Verdict {
    fn recorded(d: &AuditDecision) -> Verdict {
        Verdict {
            allow: d.allow,
            rules: d.rules.clone(),
            reasons: d.reasons.clone(),
            redact: d.redact.clone(),
        }
    }

    fn decided(d: &Decision) -> Verdict {
        Verdict {
            allow: d.allow,
            rules: d.rules.clone(),
            reasons: d.reasons.clone(),
            redact: d.redact.clone(),
        }
    }
}

/// How a replayed decision differs from the one it is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    AllowToDeny,
    DenyToAllow,
    /// Same verdict; other reasons, rules or redaction profiles.
    Changed,
}

impl Change {
    fn label(self) -> &'static str {
        match self {
            Change::AllowToDeny => "allow -> deny",
            Change::DenyToAllow => "deny -> allow",
            Change::Changed => "same verdict, other reasons, rules or redaction profiles",
        }
    }
}

/// One replayed record that changed, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    #[serde(flatten)]
    pub at: Location,
    pub decision_id: String,
    pub timestamp: String,
    pub principal: String,
    pub groups: Vec<String>,
    pub method: String,
    pub tool: Option<String>,
    /// The arguments as recorded (redacted).
    pub arguments: Option<serde_json::Value>,
    pub before: Verdict,
    pub after: Verdict,
    /// The recorded arguments had values redacted, so the replayed input differs from the
    /// original there.
    pub arguments_redacted: bool,
    /// The facts the new policy's catalogue derives differ from the recorded ones.
    pub facts_changed: bool,
}

/// Changes sharing one key (a rule id, a principal group, a tool), with the first example.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub key: String,
    pub count: u64,
    pub example: Example,
}

/// The changes of one kind grouped three ways.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Grouped {
    pub by_rule: Vec<Group>,
    pub by_principal_group: Vec<Group>,
    pub by_tool: Vec<Group>,
}

/// Records replayed with an input that may differ from the original one.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inexact {
    /// Arguments were redacted before they were recorded.
    pub arguments_redacted: u64,
    /// The new catalogue derives other facts (cluster, namespaces, kinds, access, operation)
    /// than were recorded: the catalogue changed, or a redacted value carried a fact.
    pub facts_changed: u64,
    /// Schema 1 records: no claims, protocol version or upstream to rebuild.
    pub schema_1: u64,
}

/// Counts of same-verdict changes by what changed (a record may count in several).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Changed {
    pub total: u64,
    pub reasons: u64,
    pub rules: u64,
    pub redact: u64,
}

/// A policy directory and its revision.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyRef {
    pub dir: String,
    pub revision: String,
}

/// What a replay found. Serialised as the `--format json` output.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub policy: PolicyRef,
    /// The baseline policy compared with; `null` compares with the recorded decisions.
    pub baseline: Option<PolicyRef>,
    pub files: Vec<String>,
    /// Lines read (blank ones included).
    pub lines: u64,
    pub replayed: u64,
    pub skipped: u64,
    pub skipped_by_reason: BTreeMap<Skip, u64>,
    /// The first skipped lines with where and why.
    pub skipped_lines: Vec<SkippedLine>,
    pub unchanged: u64,
    pub allow_to_deny: u64,
    pub deny_to_allow: u64,
    pub changed: Changed,
    pub inexact: Inexact,
    /// With a baseline: records whose recorded decision the baseline does not reproduce
    /// (the baseline is not what decided them, or the input could not be rebuilt exactly).
    pub baseline_differs_from_recorded: u64,
    /// Policy revisions that made the recorded decisions, with their record counts.
    pub recorded_revisions: BTreeMap<String, u64>,
    pub flips: BTreeMap<Change, Grouped>,
    #[serde(skip)]
    index: HashMap<(Change, u8, String), usize>,
}

impl ReplayReport {
    fn new(r: &Replayer) -> ReplayReport {
        ReplayReport {
            policy: PolicyRef {
                dir: r.new_dir.display().to_string(),
                revision: r.new.revision().to_string(),
            },
            baseline: r.baseline.as_ref().map(|b| PolicyRef {
                dir: r
                    .baseline_dir
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
                revision: b.revision().to_string(),
            }),
            files: Vec::new(),
            lines: 0,
            replayed: 0,
            skipped: 0,
            skipped_by_reason: BTreeMap::new(),
            skipped_lines: Vec::new(),
            unchanged: 0,
            allow_to_deny: 0,
            deny_to_allow: 0,
            changed: Changed::default(),
            inexact: Inexact::default(),
            baseline_differs_from_recorded: 0,
            recorded_revisions: BTreeMap::new(),
            flips: BTreeMap::new(),
            index: HashMap::new(),
        }
    }

    fn skip(&mut self, at: Location, reason: Skip, detail: String) {
        self.skipped += 1;
        *self.skipped_by_reason.entry(reason).or_default() += 1;
        if self.skipped_lines.len() < MAX_SKIPPED_LISTED {
            let mut detail = detail;
            truncate(&mut detail, 300);
            self.skipped_lines.push(SkippedLine { at, reason, detail });
        }
    }

    fn observe(
        &mut self,
        rec: &AuditRecord,
        at: Location,
        before: Verdict,
        after: Verdict,
        facts_changed: bool,
    ) {
        self.replayed += 1;
        let redacted = rec.arguments_redacted();
        self.inexact.arguments_redacted += u64::from(redacted);
        self.inexact.facts_changed += u64::from(facts_changed);
        self.inexact.schema_1 += u64::from(rec.schema < 2);
        if self.recorded_revisions.len() < MAX_KEYS
            || self.recorded_revisions.contains_key(&rec.policy_revision)
        {
            *self
                .recorded_revisions
                .entry(rec.policy_revision.clone())
                .or_default() += 1;
        } else {
            *self
                .recorded_revisions
                .entry("(other)".to_string())
                .or_default() += 1;
        }
        let change = match (before.allow, after.allow) {
            (true, false) => Change::AllowToDeny,
            (false, true) => Change::DenyToAllow,
            _ if before == after => {
                self.unchanged += 1;
                return;
            }
            _ => Change::Changed,
        };
        match change {
            Change::AllowToDeny => self.allow_to_deny += 1,
            Change::DenyToAllow => self.deny_to_allow += 1,
            Change::Changed => {
                self.changed.total += 1;
                self.changed.reasons += u64::from(before.reasons != after.reasons);
                self.changed.rules += u64::from(before.rules != after.rules);
                self.changed.redact += u64::from(before.redact != after.redact);
            }
        }
        // The rules that explain the change: the denying side's for a flip (the rule that
        // now denies, or the one that no longer does), both sides' otherwise.
        let mut rules: Vec<String> = match change {
            Change::AllowToDeny => after.rules.clone(),
            Change::DenyToAllow => before.rules.clone(),
            Change::Changed => {
                let mut r: Vec<String> = after
                    .rules
                    .iter()
                    .filter(|x| !before.rules.contains(x))
                    .chain(before.rules.iter().filter(|x| !after.rules.contains(x)))
                    .cloned()
                    .collect();
                if r.is_empty() {
                    r = after.rules.clone();
                }
                r
            }
        };
        if rules.is_empty() {
            rules.push("(no rule)".to_string());
        }
        let mut groups = rec.principal.groups.clone();
        if groups.is_empty() {
            groups.push("(no group)".to_string());
        }
        let tool = match &rec.tool {
            Some(t) => t.clone(),
            None => format!("({})", rec.method),
        };
        let example = Example {
            at,
            decision_id: rec.decision_id.clone(),
            timestamp: rec.timestamp.clone(),
            principal: rec.principal.id.clone(),
            groups: rec.principal.groups.clone(),
            method: rec.method.clone(),
            tool: rec.tool.clone(),
            arguments: rec.arguments.clone(),
            before,
            after,
            arguments_redacted: redacted,
            facts_changed,
        };
        for rule in rules {
            self.count(change, 0, rule, &example);
        }
        for group in groups {
            self.count(change, 1, group, &example);
        }
        self.count(change, 2, tool, &example);
    }

    /// Count one change under `key` of grouping `by` (0 rule, 1 principal group, 2 tool).
    fn count(&mut self, change: Change, by: u8, key: String, example: &Example) {
        let grouped = self.flips.entry(change).or_default();
        let list = match by {
            0 => &mut grouped.by_rule,
            1 => &mut grouped.by_principal_group,
            _ => &mut grouped.by_tool,
        };
        let mut index_key = (change, by, key);
        if !self.index.contains_key(&index_key) && list.len() >= MAX_KEYS {
            index_key.2 = "(other)".to_string();
        }
        match self.index.get(&index_key) {
            Some(&i) => list[i].count += 1,
            None => {
                list.push(Group {
                    key: index_key.2.clone(),
                    count: 1,
                    example: example.clone(),
                });
                self.index.insert(index_key, list.len() - 1);
            }
        }
    }

    /// Groups sorted by count (then key) for output.
    pub fn finish(&mut self) {
        self.index.clear();
        for g in self.flips.values_mut() {
            for list in [&mut g.by_rule, &mut g.by_principal_group, &mut g.by_tool] {
                list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
            }
        }
    }

    /// Whether `--fail-on` fails the run.
    pub fn fails(&self, on: FailOn) -> bool {
        match on {
            FailOn::DenyToAllow => self.deny_to_allow > 0,
            FailOn::AllowToDeny => self.allow_to_deny > 0,
            FailOn::Any => self.deny_to_allow + self.allow_to_deny > 0,
        }
    }

    /// The report for people.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let against = match &self.baseline {
            Some(b) => format!(
                "the decisions of the baseline {} (revision {})",
                b.dir, b.revision
            ),
            None => "the recorded decisions".to_string(),
        };
        let _ = writeln!(
            out,
            "replayed {} of {} lines from {} against {} (revision {}), compared with {against}",
            self.replayed,
            self.lines,
            self.files.join(", "),
            self.policy.dir,
            self.policy.revision,
        );
        let _ = writeln!(out, "  unchanged      {:>8}", self.unchanged);
        let _ = writeln!(out, "  allow -> deny  {:>8}", self.allow_to_deny);
        let _ = writeln!(out, "  deny -> allow  {:>8}", self.deny_to_allow);
        let _ = writeln!(
            out,
            "  same verdict, changed {:>8}  (reasons {}, rules {}, redaction profiles {})",
            self.changed.total, self.changed.reasons, self.changed.rules, self.changed.redact
        );
        if self.skipped > 0 {
            let by: Vec<String> = self
                .skipped_by_reason
                .iter()
                .map(|(k, v)| format!("{} {v}", k.describe()))
                .collect();
            let _ = writeln!(
                out,
                "  skipped        {:>8}  ({})",
                self.skipped,
                by.join(", ")
            );
            for s in &self.skipped_lines {
                let _ = writeln!(out, "    {}: {}: {}", s.at, s.reason.describe(), s.detail);
            }
            if self.skipped > self.skipped_lines.len() as u64 {
                let _ = writeln!(
                    out,
                    "    ... {} more",
                    self.skipped - self.skipped_lines.len() as u64
                );
            }
        }
        let i = &self.inexact;
        if i.arguments_redacted + i.facts_changed + i.schema_1 > 0 {
            let _ = writeln!(
                out,
                "  inexact inputs: {} with redacted arguments, {} whose facts differ from the recorded ones, {} schema 1 records (see docs/policy.md, \"Replaying recorded traffic\")",
                i.arguments_redacted, i.facts_changed, i.schema_1
            );
        }
        if self.baseline.is_some() && self.baseline_differs_from_recorded > 0 {
            let _ = writeln!(
                out,
                "  the baseline does not reproduce {} recorded decisions",
                self.baseline_differs_from_recorded
            );
        }
        for (change, grouped) in &self.flips {
            let total = match change {
                Change::AllowToDeny => self.allow_to_deny,
                Change::DenyToAllow => self.deny_to_allow,
                Change::Changed => self.changed.total,
            };
            let _ = writeln!(out, "\n{} ({total})", change.label());
            for (title, list) in [
                ("by rule", &grouped.by_rule),
                ("by principal group", &grouped.by_principal_group),
                ("by tool", &grouped.by_tool),
            ] {
                let _ = writeln!(out, "  {title}:");
                for g in list {
                    let _ = writeln!(
                        out,
                        "    {:<32} {:>8}  e.g. {}",
                        g.key,
                        g.count,
                        brief(&g.example)
                    );
                }
            }
        }
        out
    }
}

/// One line describing an example: where, who, what, and the new answer.
fn brief(e: &Example) -> String {
    let what = match (&e.tool, &e.arguments) {
        (Some(t), Some(a)) => {
            let mut args = a.to_string();
            truncate(&mut args, 160);
            format!("{t} {args}")
        }
        (Some(t), None) => t.clone(),
        _ => e.method.clone(),
    };
    let now = if e.after.allow {
        format!("now allowed ({})", e.after.rules.join(", "))
    } else {
        let mut reason = e.after.reasons.first().cloned().unwrap_or_default();
        truncate(&mut reason, 200);
        format!("now denied: {reason}")
    };
    let mut marks = String::new();
    if e.arguments_redacted {
        marks.push_str(" [arguments redacted]");
    }
    if e.facts_changed {
        marks.push_str(" [facts changed]");
    }
    format!(
        "{} {} by {}: {what}; {now}{marks}",
        e.at, e.decision_id, e.principal
    )
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
}

/// Replay `reader` (all of it) against `replayer`: the whole report, for tests and benches.
pub fn replay_bytes(replayer: &mut Replayer, name: &str, bytes: impl Read) -> ReplayReport {
    let mut report = ReplayReport::new(replayer);
    report.files.push(name.to_string());
    let mut reader = BufReader::new(bytes);
    // Reading from memory cannot fail.
    let _ = replayer.replay_reader(&mut reader, name, &mut report);
    report.finish();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<Option<Vec<u8>>> {
        let mut r = BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(fits) = next_line(&mut r, &mut buf, max).unwrap() {
            out.push(fits.then(|| buf.clone()));
        }
        out
    }

    #[test]
    fn lines_are_bounded_and_the_last_one_needs_no_newline() {
        let got = lines(b"ab\n\nlong line here\ncd", 5);
        assert_eq!(
            got,
            vec![
                Some(b"ab".to_vec()),
                Some(Vec::new()),
                None,
                Some(b"cd".to_vec())
            ]
        );
        assert!(lines(b"", 5).is_empty());
    }
}
