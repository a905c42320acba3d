//! The free-text scanner: finds secrets in log lines, YAML, INI, command lines, error messages.
//!
//! Speed comes from doing nothing on clean text: one Aho-Corasick pass (ASCII case-insensitive)
//! over a few dozen trigger literals (`AKIA`, `eyJ`, `-----BEGIN`, `bearer`, `://`, `ghp_`, and
//! credential words like `pass`, `secret`, `token`, `key`). Only at a trigger does a small
//! hand-written check (or an anchored regex for the fixed token formats) run. A match becomes a
//! span `[start, end)` that covers the WHOLE secret value; spans are merged and each replaced by
//! `[REDACTED:<detector>]`. The scanner never keeps state between calls.
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::Engine as _;
use regex::Regex;

use super::detectors::{self as d, Det, DetectorSet};
use super::names;

/// A found secret: byte range in the scanned text and the detector that found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
    pub det: Det,
}

#[derive(Debug, Clone, Copy)]
enum Rule {
    AwsKeyId,
    AwsSessionToken,
    Pem,
    Jwt,
    Bearer,
    Basic,
    ConnString,
    Keyword,
    Command(CommandKind),
    SasSig,
    Encoded(Encoding),
    Known(u16),
    Extra(u16),
}

/// Commands whose credentials sit in their own flags.
#[derive(Debug, Clone, Copy)]
enum CommandKind {
    /// `curl -u user:password`, `curl --user user:password`.
    Curl,
    /// `mysql -uroot -pSECRET` (the password attached to `-p`).
    Mysql,
    /// `sshpass -p SECRET`.
    Sshpass,
}

/// Base64 payloads recognised by how they start.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    /// gzip (`H4sI`): Helm release data; base64 once more in a Secret (`SDRzSU`).
    Gzip { double: bool },
    /// `-----BEGIN` (`LS0tLS1CRUdJTi`): a PEM file, a private key when it says so.
    Pem,
    /// A pretty-printed docker config (`{\n  "auths":` and the like).
    DockerConfig,
}

/// Decompressed gzip payloads are read up to this size; a larger one is withheld whole.
const MAX_GUNZIP: u64 = 4 << 20;

thread_local! {
    /// Set while the content of a decompressed payload is checked (payloads do not nest).
    static GUNZIP_DEPTH: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// A fixed token format: a regex anchored at the trigger position.
struct KnownFormat {
    det: Det,
    re: Regex,
}

/// An operator-supplied pattern from `redaction.yaml`.
pub(crate) struct ExtraPattern {
    pub det: Det,
    pub re: Regex,
    pub keywords: Vec<String>,
}

/// The trigger literals, matched without regard to ASCII case.
///
/// An `ascii_case_insensitive` Aho-Corasick automaton has no prefilter: it walks its DFA
/// byte by byte (~2.3 ns a byte here), which made it the largest single cost of redacting a
/// tool result. Texts of [`LONG_TEXT`] bytes or more therefore go to a second, equivalent
/// automaton: case-sensitive over the lower-cased literals, run over an ASCII-lower-cased
/// copy of the text, so that its SIMD prefilter can skip ahead (~3-4 times faster on the
/// documents tool results carry, the copy included). Lower-casing ASCII keeps every byte
/// where it was, so both give the same matches: same pattern ids, same positions, same
/// order (tested below). Short texts (keys, most values) stay on the first automaton, where
/// the copy and the prefilter's start-up would cost more than they save.
struct Triggers {
    folded: AhoCorasick,
    lower: AhoCorasick,
    /// The literals as given (for the equivalence test).
    #[cfg(test)]
    patterns: Vec<String>,
}

/// Texts at least this long are searched through a lower-cased copy.
const LONG_TEXT: usize = 64;

impl Triggers {
    fn new(patterns: &[String]) -> Triggers {
        let folded = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            .build(patterns)
            .expect("trigger automaton builds");
        let lowered: Vec<String> = patterns.iter().map(|p| p.to_ascii_lowercase()).collect();
        let lower = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostFirst)
            .build(&lowered)
            .expect("trigger automaton builds");
        Triggers {
            folded,
            lower,
            #[cfg(test)]
            patterns: patterns.to_vec(),
        }
    }

    fn is_match(&self, s: &str) -> bool {
        if s.len() < LONG_TEXT {
            self.folded.is_match(s)
        } else {
            self.lower.is_match(&s.as_bytes().to_ascii_lowercase())
        }
    }

    /// Every leftmost-first match in `s`, in order, until `f` returns `false`.
    fn each(&self, s: &str, mut f: impl FnMut(aho_corasick::Match) -> bool) {
        if s.len() < LONG_TEXT {
            for m in self.folded.find_iter(s) {
                if !f(m) {
                    break;
                }
            }
        } else {
            let low = s.as_bytes().to_ascii_lowercase();
            for m in self.lower.find_iter(&low) {
                if !f(m) {
                    break;
                }
            }
        }
    }
}

/// Compiled once per redactor; `Send + Sync`, used concurrently.
pub(crate) struct TextScanner {
    ac: Triggers,
    rules: Vec<Rule>,
    known: Vec<KnownFormat>,
    extra: Vec<ExtraPattern>,
    yaml_secret_kind: Regex,
    json_secret_kind: Regex,
}

/// Credential words: a hit starts the `key=value` / `key: value` check.
/// (`opaque` is here so that a Secret of `type: Opaque` without a `kind` still gets a look;
/// `certificate-data` for kubeconfig `client-certificate-data`.)
pub(crate) const KEYWORDS: &[&str] = &[
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "credential",
    "auth",
    "opaque",
    "certificate-data",
    "cookie",
    "kty",
    "_pw",
    "-pw",
    ".pw",
];

/// `(trigger literals, detector, anchored regex)` for fixed token formats.
const KNOWN: &[(&[&str], Det, &str)] = &[
    (
        &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
        d::GITHUB_TOKEN,
        r"^gh[pousr]_[A-Za-z0-9]{36,255}",
    ),
    (
        &["github_pat_"],
        d::GITHUB_TOKEN,
        r"^github_pat_[A-Za-z0-9_]{22,255}",
    ),
    (&["glpat-"], d::GITLAB_TOKEN, r"^glpat-[A-Za-z0-9_-]{20,}"),
    (
        &["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-", "xoxe"],
        d::SLACK_TOKEN,
        r"^xox[abposre](?:\.xox[a-z])?-[A-Za-z0-9-]{10,}",
    ),
    (
        &["hooks.slack.com/"],
        d::SLACK_WEBHOOK,
        r"^hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/-]{16,}",
    ),
    (
        &["sk_live_", "sk_test_", "rk_live_", "rk_test_"],
        d::STRIPE_KEY,
        r"^[sr]k_(?:live|test)_[A-Za-z0-9]{16,}",
    ),
    (&["whsec_"], d::STRIPE_KEY, r"^whsec_[A-Za-z0-9+/=]{24,}"),
    (&["AIza"], d::GOOGLE_API_KEY, r"^AIza[0-9A-Za-z_-]{35}"),
    (&["npm_"], d::NPM_TOKEN, r"^npm_[A-Za-z0-9]{36}"),
    (&["pypi-AgE"], d::PYPI_TOKEN, r"^pypi-AgE[A-Za-z0-9_-]{50,}"),
    (
        &["SG."],
        d::SENDGRID_KEY,
        r"^SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}",
    ),
    (
        &["sk-ant-"],
        d::ANTHROPIC_API_KEY,
        r"^sk-ant-[A-Za-z0-9_-]{32,}",
    ),
    (
        &["sk-"],
        d::OPENAI_API_KEY,
        r"^sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,}",
    ),
    (
        &["hvs.", "hvb."],
        d::VAULT_TOKEN,
        r"^hv[sb]\.[A-Za-z0-9_-]{24,}",
    ),
    (
        &["dckr_pat_"],
        d::DOCKER_HUB_TOKEN,
        r"^dckr_pat_[A-Za-z0-9_-]{20,}",
    ),
];

fn is_b64(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'='
}
fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}
fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}
fn run(b: &[u8], mut i: usize, f: impl Fn(u8) -> bool) -> usize {
    let start = i;
    while i < b.len() && f(b[i]) {
        i += 1;
    }
    work(i - start);
    i
}
fn line_end(b: &[u8], i: usize) -> usize {
    let e = memchr::memchr(b'\n', &b[i..]).map_or(b.len(), |p| i + p);
    work(e - i);
    e
}

// ---- linear time --------------------------------------------------------------------------
//
// Every check starts at a trigger and looks a bounded distance, or as far as the span it then
// reports (the scan resumes after a span), or asks an [`Ahead`] memo, which continues one
// forward search across triggers instead of restarting it at each. So scanning a text costs
// a constant times its length, however the triggers are arranged (a 1 MB line of
// `"data":{"x":"y",` used to cost minutes and gigabytes). Tests count the bytes the checks
// look at (`work`) and require the count to grow linearly with the input.

#[cfg(test)]
thread_local! {
    static WORK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Count `n` bytes looked at (tests only; nothing in release builds).
#[inline(always)]
pub(crate) fn work(n: usize) {
    #[cfg(test)]
    WORK.with(|w| w.set(w.get() + n as u64));
    #[cfg(not(test))]
    let _ = n;
}

/// Bytes looked at by the scanner on this thread so far (tests only).
#[cfg(test)]
pub(crate) fn work_done() -> u64 {
    WORK.with(|w| w.get())
}

/// The result of one forward search ("the first position at or after `q` where ..."), kept
/// for the next trigger: a search that started at `from` and stopped at `at` (or found nothing
/// up to the end) answers every later query `q` with `from <= q <= at` without looking again.
/// That holds for any search that stops at the first byte (or literal) of a fixed kind.
#[derive(Clone, Copy)]
struct Ahead {
    from: usize,
    at: Option<usize>,
}

impl Ahead {
    const NEW: Ahead = Ahead {
        from: usize::MAX,
        at: None,
    };

    fn find(&mut self, q: usize, search: impl FnOnce(usize) -> Option<usize>) -> Option<usize> {
        if self.from <= q && self.at.is_none_or(|a| a >= q) {
            return self.at;
        }
        let at = search(q);
        *self = Ahead { from: q, at };
        at
    }
}

/// The forward searches one scan shares between its triggers.
struct Memo {
    /// `-----END` (PEM).
    pem_end: Ahead,
    /// `\"` (a value quoted inside a JSON string).
    escaped_quote: Ahead,
    /// The closing `"` / `'` of a quoted value, or the line end (escapes skipped).
    quote_end: [Ahead; 2],
    /// The end of an unquoted value.
    bare_end: Ahead,
    /// The line end.
    line_end: Ahead,
    /// A quote or the line end (header values).
    quote_or_line_end: Ahead,
    /// `<` or the line end (XML element text).
    tag_open: Ahead,
    /// Decompressed bytes the rest of this text may still cost.
    gunzip_left: u64,
}

impl Memo {
    fn new(text_len: usize) -> Memo {
        Memo {
            gunzip_left: MAX_GUNZIP + 16 * text_len as u64,
            ..Memo::NEW
        }
    }

    const NEW: Memo = Memo {
        pem_end: Ahead::NEW,
        escaped_quote: Ahead::NEW,
        quote_end: [Ahead::NEW; 2],
        bare_end: Ahead::NEW,
        line_end: Ahead::NEW,
        quote_or_line_end: Ahead::NEW,
        tag_open: Ahead::NEW,
        gunzip_left: 0,
    };

    fn line_end(&mut self, b: &[u8], i: usize) -> usize {
        self.line_end
            .find(i, |i| Some(line_end(b, i)))
            .unwrap_or(b.len())
    }
}

/// Searches for a literal from `i`; counts what it looked at.
fn find_from(b: &[u8], i: usize, needle: &[u8]) -> Option<usize> {
    let at = memchr::memmem::find(&b[i.min(b.len())..], needle).map(|p| i + p);
    work(at.map_or(b.len(), |a| a + needle.len()).saturating_sub(i));
    at
}

impl TextScanner {
    pub(crate) fn new(extra: Vec<ExtraPattern>) -> TextScanner {
        let mut pats: Vec<String> = Vec::new();
        let mut rules = Vec::new();
        let mut add = |p: &str, r: Rule| {
            pats.push(p.to_string());
            rules.push(r);
        };
        for p in ["AKIA", "ASIA", "ABIA", "ACCA"] {
            add(p, Rule::AwsKeyId);
        }
        for p in ["IQoJb3JpZ2lu", "FwoGZXIvYXdz", "FQoGZXIvYXdz"] {
            add(p, Rule::AwsSessionToken);
        }
        add("-----BEGIN", Rule::Pem);
        add("eyJ", Rule::Jwt);
        add("bearer", Rule::Bearer);
        add("basic", Rule::Basic);
        add("://", Rule::ConnString);
        add(":\\/\\/", Rule::ConnString);
        add("curl", Rule::Command(CommandKind::Curl));
        add("mysql", Rule::Command(CommandKind::Mysql));
        add("mariadb", Rule::Command(CommandKind::Mysql));
        add("sshpass", Rule::Command(CommandKind::Sshpass));
        add("&sig=", Rule::SasSig);
        add("?sig=", Rule::SasSig);
        add("H4sI", Rule::Encoded(Encoding::Gzip { double: false }));
        add("SDRzSU", Rule::Encoded(Encoding::Gzip { double: true }));
        add("LS0tLS1CRUdJTi", Rule::Encoded(Encoding::Pem));
        for p in [
            "ewogICJhdXRocyI6",
            "ewogICAgImF1dGhzIjo",
            "ewoJImF1dGhzIjo",
            "ew0KICAiYXV0aHMiOi",
            "eyAiYXV0aHMiOi",
        ] {
            add(p, Rule::Encoded(Encoding::DockerConfig));
        }
        for k in KEYWORDS {
            add(k, Rule::Keyword);
        }
        let mut known = Vec::new();
        for (i, (triggers, det, re)) in KNOWN.iter().enumerate() {
            known.push(KnownFormat {
                det: *det,
                re: Regex::new(re).expect("built-in token regex compiles"),
            });
            for t in *triggers {
                add(t, Rule::Known(i as u16));
            }
        }
        for (i, x) in extra.iter().enumerate() {
            for k in &x.keywords {
                add(k, Rule::Extra(i as u16));
            }
        }
        let ac = Triggers::new(&pats);
        TextScanner {
            ac,
            rules,
            known,
            extra,
            yaml_secret_kind: Regex::new(
                r#"(?m)^[ \t]*(?:- )?kind:[ \t]*["']?Secret["']?[ \t]*\r?$"#,
            )
            .expect("static regex"),
            json_secret_kind: Regex::new(r#"\\?["']kind\\?["']\s*:\s*\\?["']Secret\\?["']"#)
                .expect("static regex"),
        }
    }

    /// Does the text contain any trigger at all? (`false` means no detector can fire.)
    pub(crate) fn has_trigger(&self, s: &str) -> bool {
        self.ac.is_match(s)
    }

    /// Could anything in `s` be redacted — by the text rules, or by the structural rules once
    /// `s` is parsed as JSON? A cheap, conservative probe over the raw text: every trigger is
    /// checked the way `scan` would check it, except that a credential word only has to sit in
    /// a credential-like name (`"password"`, `DB_PASSWORD`, `kind: Secret`, `auths`), without a
    /// value after it. `false` means neither `scan` nor the JSON walk can find anything.
    pub(crate) fn might_redact(&self, s: &str, active: DetectorSet) -> bool {
        let b = s.as_bytes();
        let mut scratch = Vec::new();
        let mut found = false;
        let mut memo = Memo::new(s.len());
        let mut jwt_checked = 0;
        let mut extra_tried: Vec<bool> = Vec::new();
        work(s.len());
        self.ac.each(s, |m| {
            let pos = m.start();
            work(1);
            let hit = match self.rules[m.pattern().as_usize()] {
                Rule::Keyword => keyword_in_credential_name(b, pos),
                Rule::AwsKeyId => {
                    self.aws_key_id(s, pos, active, &mut scratch).is_some() || !scratch.is_empty()
                }
                Rule::AwsSessionToken => aws_session_token(b, pos).is_some(),
                Rule::Pem => pem(s, pos, &mut memo).is_some(),
                Rule::Jwt => jwt_or_docker_b64(b, pos, active, &mut jwt_checked).is_some(),
                Rule::Bearer => bearer(b, pos).is_some(),
                Rule::Basic => basic(b, pos).is_some(),
                Rule::ConnString => conn_string(b, pos, m.end()).is_some(),
                Rule::Command(c) => command(b, pos, c).is_some(),
                Rule::SasSig => sas_sig(b, pos).is_some(),
                Rule::Encoded(e) => self.encoded(s, pos, e, active, &mut memo).is_some(),
                Rule::Known(i) => {
                    (pos == 0 || !is_word(b[pos - 1]))
                        && self.known[i as usize].re.is_match(&s[pos..])
                }
                Rule::Extra(i) => {
                    // Each pattern runs over the text once, not once per keyword hit.
                    let i = i as usize;
                    if extra_tried.is_empty() {
                        extra_tried = vec![false; self.extra.len()];
                    }
                    !std::mem::replace(&mut extra_tried[i], true) && {
                        work(s.len());
                        self.extra[i].re.is_match(s)
                    }
                }
            };
            found = hit;
            !hit
        });
        found
    }

    /// Find every secret in `s` for the active detectors; spans come back sorted and disjoint.
    pub(crate) fn scan(&self, s: &str, active: DetectorSet, spans: &mut Vec<Span>) {
        spans.clear();
        let b = s.as_bytes();
        let mut skip_until = 0usize;
        let mut extra_done: Vec<bool> = Vec::new();
        let mut saw_secret_word = false;
        let mut memo = Memo::new(s.len());
        let mut jwt_checked = 0;
        work(s.len());
        self.ac.each(s, |m| {
            let pos = m.start();
            work(1);
            if pos < skip_until {
                return true;
            }
            let found = match self.rules[m.pattern().as_usize()] {
                Rule::Keyword => {
                    if b[pos..].len() >= 6 && b[pos..pos + 6].eq_ignore_ascii_case(b"secret") {
                        saw_secret_word = true;
                    }
                    let (span, checked_until) = self.assignment(s, pos, active, &mut memo);
                    match span {
                        Some(sp) => Some(sp),
                        None => {
                            skip_until = skip_until.max(checked_until);
                            None
                        }
                    }
                }
                Rule::AwsKeyId => self.aws_key_id(s, pos, active, spans),
                Rule::AwsSessionToken => active
                    .has(d::AWS_SESSION_TOKEN)
                    .then(|| aws_session_token(b, pos))
                    .flatten(),
                Rule::Pem => active
                    .has(d::PRIVATE_KEY)
                    .then(|| pem(s, pos, &mut memo))
                    .flatten(),
                Rule::Jwt => jwt_or_docker_b64(b, pos, active, &mut jwt_checked),
                Rule::Bearer => active
                    .has(d::BEARER_TOKEN)
                    .then(|| bearer(b, pos))
                    .flatten(),
                Rule::Basic => active.has(d::BASIC_AUTH).then(|| basic(b, pos)).flatten(),
                Rule::ConnString => active
                    .has(d::CONNECTION_STRING_PASSWORD)
                    .then(|| conn_string(b, pos, m.end()))
                    .flatten(),
                Rule::Command(c) => command(b, pos, c).filter(|sp| active.has(sp.det)),
                Rule::SasSig => sas_sig(b, pos).filter(|sp| active.has(sp.det)),
                Rule::Encoded(e) => self.encoded(s, pos, e, active, &mut memo),
                Rule::Known(i) => {
                    let k = &self.known[i as usize];
                    if active.has(k.det) && (pos == 0 || !is_word(b[pos - 1])) {
                        k.re.find(&s[pos..]).map(|f| Span {
                            start: pos,
                            end: pos + f.end(),
                            det: k.det,
                        })
                    } else {
                        None
                    }
                }
                Rule::Extra(i) => {
                    let i = i as usize;
                    if extra_done.is_empty() {
                        extra_done = vec![false; self.extra.len()];
                    }
                    let x = &self.extra[i];
                    if !extra_done[i] && active.has(x.det) {
                        extra_done[i] = true;
                        work(s.len());
                        for f in x.re.find_iter(s) {
                            if f.end() > f.start() {
                                spans.push(Span {
                                    start: f.start(),
                                    end: f.end(),
                                    det: x.det,
                                });
                            }
                        }
                    }
                    None
                }
            };
            if let Some(sp) = found {
                skip_until = skip_until.max(sp.end);
                spans.push(sp);
            }
            true
        });
        if saw_secret_word
            && (active.has(d::K8S_SECRET_DATA) || active.has(d::K8S_SECRET_LAST_APPLIED))
        {
            if self.yaml_secret_kind.is_match(s) {
                yaml_secret_blocks(s, active, spans);
            }
            if self.json_secret_kind.is_match(s) {
                json_secret_blocks(s, active, spans);
            }
        }
        normalise(s, spans);
    }

    /// `key=value`, `key: value`, `"key": "value"`, `--key value` where the key names a
    /// credential. Returns the span of the value and how far the key itself extended.
    fn assignment(
        &self,
        s: &str,
        pos: usize,
        active: DetectorSet,
        memo: &mut Memo,
    ) -> (Option<Span>, usize) {
        let b = s.as_bytes();
        let n = b.len();
        let ident = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.');
        // Key names are short; a keyword inside a long run (base64 image data, a hash) is
        // not a key. Bounded expansion keeps a trigger-dense blob linear to scan.
        let mut st = pos;
        while st > 0 && pos - st <= MAX_KEY && ident(b[st - 1]) {
            st -= 1;
        }
        let mut en = pos;
        while en < n && en - pos <= MAX_KEY && ident(b[en]) {
            en += 1;
        }
        work(en - st);
        if en - st > MAX_KEY {
            return (None, en);
        }
        let raw = &s[st..en];
        let is_flag = raw.starts_with("--");
        let key = raw
            .trim_start_matches(['-', '.'])
            .trim_end_matches(['-', '.']);
        let Some(det) = names::classify(key) else {
            return (None, en);
        };
        if !active.has(det) || in_arn(b, st) {
            return (None, en);
        }
        // `<password>v</password>` (Maven settings.xml), `<add key="ClearTextPassword"
        // value="v"/>` (NuGet), `<property name="password" value="v"/>`.
        if st > 0 && b[st - 1] == b'<' && b.get(en) == Some(&b'>') {
            let vs = en + 1;
            let ve = memo
                .tag_open
                .find(vs, |q| {
                    let e = memchr::memchr2(b'<', b'\n', &b[q..]).map_or(n, |p| q + p);
                    work(e - q);
                    Some(e)
                })
                .unwrap_or(n);
            return (
                is_secret_value(&s[vs..ve]).then_some(Span {
                    start: vs,
                    end: ve,
                    det,
                }),
                en,
            );
        }
        if st > 0 && b[st - 1] == b'"' && b.get(en) == Some(&b'"') {
            let before = &b[st.saturating_sub(6)..st - 1];
            if before.ends_with(b"key=") || before.ends_with(b"name=") {
                return (xml_value_attribute(s, en + 1, det), en);
            }
        }
        // Whether the key opens its line (YAML / INI style: only indentation, a list dash
        // and a quote before it) and its indentation. Looked for backwards from the key, so
        // the cost is the gap before the key, not the whole line.
        let (key_opens_line, indent) = {
            let mut k = st;
            if k > 0 && matches!(b[k - 1], b'"' | b'\'') {
                k -= 1;
            }
            if k >= 2 && b[k - 2] == b'-' && b[k - 1] == b' ' {
                k -= 2;
            }
            let mut ls = k;
            while ls > 0 && matches!(b[ls - 1], b' ' | b'\t') {
                ls -= 1;
            }
            work(st - ls);
            (ls == 0 || b[ls - 1] == b'\n', k - ls)
        };

        let mut i = en;
        if i < n && matches!(b[i], b'"' | b'\'') {
            i += 1;
        } else if i + 1 < n && b[i] == b'\\' && b[i + 1] == b'"' {
            i += 2;
        }
        i = run(b, i, |c| c == b' ' || c == b'\t');
        let mut colon = false;
        let mut url_encoded = false;
        if b[i..].len() >= 3 && b[i] == b'%' && b[i + 1] == b'3' && matches!(b[i + 2], b'D' | b'd')
        {
            // `password%3Dhunter2` in a logged URL or form body.
            url_encoded = true;
            i += 3;
        } else if i < n && b[i] == b'=' {
            if i + 1 < n && b[i + 1] == b'=' {
                return (None, en);
            }
            i += 1;
            if i < n && b[i] == b'>' {
                i += 1;
            }
        } else if i < n && b[i] == b':' {
            if i + 1 < n && (b[i + 1] == b':' || b[i + 1] == b'/') {
                return (None, en);
            }
            colon = true;
            i += 1;
        } else if !(is_flag && i > en) {
            return (name_value_pair(s, st, en, det, memo), en);
        }
        i = run(b, i, |c| c == b' ' || c == b'\t');
        if i >= n {
            return (None, en);
        }
        let yaml = colon && key_opens_line;
        let (vs, ve) = match b[i] {
            b'\\' if i + 1 < n && b[i + 1] == b'"' => {
                let vs = i + 2;
                match memo.escaped_quote.find(vs, |vs| find_from(b, vs, b"\\\"")) {
                    Some(p) => (vs, p),
                    None => return (None, en),
                }
            }
            q @ (b'"' | b'\'') => {
                let vs = i + 1;
                // Valid to share between triggers: the search never stops inside an escape,
                // and `b[vs - 1]` is the opening quote, so an earlier search that ran past it
                // stepped onto `vs` as this one does.
                let end = memo.quote_end[usize::from(q == b'\'')].find(vs, |vs| {
                    let mut j = vs;
                    while j < n && b[j] != q && b[j] != b'\n' {
                        j += if b[j] == b'\\' { 2 } else { 1 };
                    }
                    work(j - vs);
                    Some(j.min(n))
                });
                (vs, end.unwrap_or(n))
            }
            b'|' | b'>' if yaml => {
                let rest_end = memo.line_end(b, i);
                if !b[i..rest_end]
                    .iter()
                    .all(|c| b"|>+-0123456789 \t\r".contains(c))
                {
                    (i, rest_end)
                } else {
                    match yaml_block(b, rest_end, indent) {
                        Some(r) => r,
                        None => return (None, en),
                    }
                }
            }
            b'{' | b'[' => match bracketed_value(b, i) {
                Some(ve) => (i, ve),
                None => return (None, en),
            },
            _ => {
                let vs = i;
                // Header values (`Authorization: Bearer x`, `Cookie: a=1; session=x`) run to the end.
                let lk = key.to_ascii_lowercase();
                let authz = lk.ends_with("authorization") || lk.ends_with("cookie");
                let mut ve = if authz {
                    // Up to a quote or the end of the line: scheme and credentials.
                    memo.quote_or_line_end
                        .find(vs, |vs| {
                            let e =
                                memchr::memchr3(b'"', b'\'', b'\n', &b[vs..]).map_or(n, |p| vs + p);
                            work(e - vs);
                            Some(e)
                        })
                        .unwrap_or(n)
                } else if yaml {
                    memo.line_end(b, vs)
                } else {
                    memo.bare_end
                        .find(vs, |vs| {
                            Some(run(b, vs, |c| {
                                !c.is_ascii_whitespace()
                                    && !matches!(
                                        c,
                                        b'&' | b','
                                            | b';'
                                            | b'"'
                                            | b'\''
                                            | b')'
                                            | b']'
                                            | b'}'
                                            | b'<'
                                            | b'>'
                                            | b'|'
                                    )
                            }))
                        })
                        .unwrap_or(n)
                };
                while ve > vs && b[ve - 1].is_ascii_whitespace() {
                    ve -= 1;
                }
                if url_encoded {
                    // The next encoded `&`, `"`, space or `,` ends the value.
                    let enc = &b[vs..ve];
                    if let Some(p) = (0..enc.len().saturating_sub(2)).find(|&k| {
                        enc[k] == b'%'
                            && matches!(&enc[k + 1..k + 3], b"26" | b"22" | b"20" | b"2C" | b"2c")
                    }) {
                        ve = vs + p;
                    }
                }
                (vs, ve)
            }
        };
        // Prose, not an assignment: `failed to fetch anonymous token: unexpected status`.
        // A lower-case word after `key: ` that the sentence continues past is not a secret
        // (`password: letmein` at the end of a line or before punctuation still is).
        let unquoted = vs == i;
        if colon && unquoted && !yaml {
            let word = b[vs..ve].iter().all(u8::is_ascii_lowercase);
            let continues =
                b.get(ve) == Some(&b' ') && b.get(ve + 1).is_some_and(u8::is_ascii_lowercase);
            if word && continues {
                return (None, en);
            }
        }
        if !is_secret_value(&s[vs..ve]) {
            return (None, en);
        }
        (
            Some(Span {
                start: vs,
                end: ve,
                det,
            }),
            en,
        )
    }

    /// A base64 payload recognised by its start (see [`Encoding`]): decoded (bounded) and
    /// withheld whole when what it holds is a secret, or when it cannot be read in bounds.
    fn encoded(
        &self,
        s: &str,
        pos: usize,
        e: Encoding,
        active: DetectorSet,
        memo: &mut Memo,
    ) -> Option<Span> {
        let b = s.as_bytes();
        if pos > 0 && is_b64(b[pos - 1]) {
            return None;
        }
        let end = run(b, pos, is_b64);
        let engine = base64::engine::general_purpose::STANDARD;
        let decode = |t: &[u8]| {
            engine
                .decode(t)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(t))
                .ok()
        };
        let span = |det: Det| {
            active.has(det).then_some(Span {
                start: pos,
                end,
                det,
            })
        };
        // The trigger matched without regard to case; these are case-sensitive.
        match e {
            Encoding::Gzip { double } => {
                if end - pos < 24 || !b[pos..].starts_with(if double { b"SDRzSU" } else { b"H4sI" })
                {
                    return None;
                }
                let once = decode(&b[pos..end]);
                let gz = if double {
                    once.and_then(|x| decode(&x))
                } else {
                    once
                };
                let gz = gz?;
                work(gz.len());
                // Bounded: at most MAX_GUNZIP per payload, and all payloads of one text
                // together at most MAX_GUNZIP plus 16 times the text; a payload inside a
                // decompressed payload is not opened again. Whatever cannot be read within
                // those bounds is withheld.
                let limit = MAX_GUNZIP.min(memo.gunzip_left);
                let nested = GUNZIP_DEPTH.with(|g| g.get()) > 0;
                let mut text = Vec::new();
                let read = (!nested).then(|| {
                    std::io::Read::read_to_end(
                        &mut std::io::Read::take(flate2::read::GzDecoder::new(&gz[..]), limit + 1),
                        &mut text,
                    )
                });
                work(text.len());
                memo.gunzip_left = memo.gunzip_left.saturating_sub(text.len() as u64);
                let withhold = match read {
                    None | Some(Err(_)) => true,
                    Some(Ok(_)) if text.len() as u64 > limit => true,
                    Some(Ok(_)) => {
                        let text = String::from_utf8_lossy(&text);
                        GUNZIP_DEPTH.with(|g| g.set(1));
                        let found = self.has_trigger(&text) && self.might_redact(&text, active);
                        GUNZIP_DEPTH.with(|g| g.set(0));
                        found
                    }
                };
                withhold.then(|| span(d::ENCODED_PAYLOAD)).flatten()
            }
            Encoding::Pem => {
                if !b[pos..].starts_with(b"LS0tLS1CRUdJTi") {
                    return None;
                }
                let pem = decode(&b[pos..end])?;
                let head = &pem[..pem.len().min(100)];
                memchr::memmem::find(head, b"PRIVATE KEY")
                    .is_some()
                    .then(|| span(d::PRIVATE_KEY))
                    .flatten()
            }
            Encoding::DockerConfig => {
                let conf = decode(&b[pos..end])?;
                memchr::memmem::find(&conf, b"\"auths\"")
                    .is_some()
                    .then(|| span(d::DOCKER_CONFIG))
                    .flatten()
            }
        }
    }

    fn aws_key_id(
        &self,
        s: &str,
        pos: usize,
        active: DetectorSet,
        spans: &mut Vec<Span>,
    ) -> Option<Span> {
        let b = s.as_bytes();
        if pos > 0 && b[pos - 1].is_ascii_alphanumeric() {
            return None;
        }
        let end = pos + 20;
        if end > b.len()
            || !b[pos..pos + 4].iter().all(u8::is_ascii_uppercase)
            || !b[pos + 4..end]
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            || b.get(end).is_some_and(|c| c.is_ascii_alphanumeric())
        {
            return None;
        }
        // A 40-character secret key shortly after the id (CSV exports, `aws configure` dumps).
        if active.has(d::AWS_SECRET_ACCESS_KEY) {
            let window = (end + 200).min(b.len());
            let mut j = end;
            while j < window {
                if is_b64(b[j]) && b[j] != b'=' {
                    let r = run(b, j, |c| {
                        c.is_ascii_alphanumeric() || c == b'+' || c == b'/'
                    });
                    let len = r - j;
                    let bounded = b.get(r).is_none_or(|c| !is_b64(*c));
                    if len == 40 && bounded && mixed_case(&b[j..r]) {
                        spans.push(Span {
                            start: j,
                            end: r,
                            det: d::AWS_SECRET_ACCESS_KEY,
                        });
                        break;
                    }
                    j = r.max(j + 1);
                } else {
                    j += 1;
                }
            }
        }
        active.has(d::AWS_ACCESS_KEY_ID).then_some(Span {
            start: pos,
            end,
            det: d::AWS_ACCESS_KEY_ID,
        })
    }
}

/// Key names longer than this are not names (a keyword inside base64 or a hash); checks around
/// a keyword look at most this far, which keeps a keyword-dense text linear to scan.
const MAX_KEY: usize = 128;

/// Is the key at `st` part of an ARN (`arn:aws:secretsmanager:...:secret:prod/db-password`,
/// `arn:aws:ssm:...:parameter/app/api-token`)? Those name a secret, they do not hold one.
fn in_arn(b: &[u8], st: usize) -> bool {
    let from = st.saturating_sub(256);
    let mut k = st;
    while k > from
        && !b[k - 1].is_ascii_whitespace()
        && !matches!(b[k - 1], b'"' | b'\'' | b'=' | b',' | b'(' | b'[')
    {
        k -= 1;
    }
    work(st - k);
    memchr::memmem::find(&b[k..st], b"arn:").is_some()
}

/// `value="..."` after `key="<credential name>"` in the same XML element (bounded look).
fn xml_value_attribute(s: &str, from: usize, det: Det) -> Option<Span> {
    let b = s.as_bytes();
    let end = (from + 512).min(b.len());
    let tag = &b[from..end];
    let stop = memchr::memchr(b'>', tag).unwrap_or(tag.len());
    work(stop);
    let at = memchr::memmem::find(&tag[..stop], b"value=")?;
    let q = *tag.get(at + 6)?;
    if !matches!(q, b'"' | b'\'') {
        return None;
    }
    let vs = from + at + 7;
    let ve = vs + memchr::memchr(q, &b[vs..end])?;
    is_secret_value(&s[vs..ve]).then_some(Span {
        start: vs,
        end: ve,
        det,
    })
}

/// A credential name given as the `name` of a name/value pair in text: the env list of a
/// manifest kept as YAML text in a ConfigMap (`- name: DB_PASSWORD` then `value: ...` on the
/// next line), flow style (`{name: DB_PASSWORD, value: ...}`), `Name=DB_PASSWORD,Value=...`.
fn name_value_pair(s: &str, st: usize, en: usize, det: Det, memo: &mut Memo) -> Option<Span> {
    let b = s.as_bytes();
    // `name:` (or `"name": "`, `Name=`, `ParameterKey: `) right before the key.
    let mut k = st;
    if k > 0 && matches!(b[k - 1], b'"' | b'\'') {
        k -= 1;
    }
    while k > 0 && matches!(b[k - 1], b' ' | b'\t') {
        k -= 1;
    }
    if k == 0 || !matches!(b[k - 1], b':' | b'=') {
        return None;
    }
    let mut q = k - 1;
    if q > 0 && matches!(b[q - 1], b'"' | b'\'') {
        q -= 1;
    }
    let ns = q - b[q.saturating_sub(16)..q]
        .iter()
        .rev()
        .take_while(|c| c.is_ascii_alphabetic())
        .count();
    work(st - ns);
    let name_key = &b[ns..q];
    if !(name_key.eq_ignore_ascii_case(b"name")
        || name_key.eq_ignore_ascii_case(b"key")
        || name_key.eq_ignore_ascii_case(b"parameterkey"))
    {
        return None;
    }
    // Then `value` within the next line or so, with only separators in between.
    let end = (en + 256).min(b.len());
    let mut j = en;
    while j < end
        && matches!(
            b[j],
            b'"' | b'\'' | b',' | b' ' | b'\t' | b'\r' | b'\n' | b'-' | b'}'
        )
    {
        j += 1;
    }
    work(j - en);
    let rest = &b[j..end];
    let vk = [
        &b"value"[..],
        b"Value",
        b"ParameterValue",
        b"parameterValue",
    ]
    .into_iter()
    .find(|w| rest.starts_with(w))?;
    let mut i = j + vk.len();
    if b.get(i).is_some_and(|c| matches!(c, b'"' | b'\'')) {
        i += 1;
    }
    i = run(b, i, |c| c == b' ' || c == b'\t');
    if !matches!(b.get(i), Some(b':' | b'=')) {
        return None;
    }
    i = run(b, i + 1, |c| c == b' ' || c == b'\t');
    let (vs, ve) = match b.get(i) {
        Some(&q @ (b'"' | b'\'')) => {
            let vs = i + 1;
            let ve =
                vs + memchr::memchr2(q, b'\n', &b[vs..end.max(vs)]).unwrap_or(end.max(vs) - vs);
            (vs, ve)
        }
        Some(_) => {
            let le = memo.line_end(b, i);
            let ve = i + b[i..le]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b'\r'))
                .unwrap_or(le - i);
            (i, ve)
        }
        None => return None,
    };
    // The look-ahead bound can fall inside a character: the value takes all of it.
    let mut ve = s.ceil_char_boundary(ve);
    while ve > vs && b[ve - 1].is_ascii_whitespace() {
        ve -= 1;
    }
    is_secret_value(&s[vs..ve]).then_some(Span {
        start: vs,
        end: ve,
        det: if det == d::CREDENTIAL_ASSIGNMENT {
            d::SENSITIVE_ENV_VALUE
        } else {
            det
        },
    })
}

/// A value that starts with `{` or `[` but is not a YAML/JSON collection: Spring's
/// `{noop}secret` / `{bcrypt}$2a$...`, a password starting with `[`. Returns its end.
fn bracketed_value(b: &[u8], i: usize) -> Option<usize> {
    let bare = |c: u8| {
        !c.is_ascii_whitespace() && !matches!(c, b'"' | b'\'' | b',' | b';' | b'&' | b'<' | b'>')
    };
    if b[i] == b'{' {
        let close = run(b, i + 1, |c| {
            c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
        });
        if close == i + 1 || b.get(close) != Some(&b'}') {
            return None;
        }
        let end = run(b, close + 1, bare);
        (end > close + 1).then_some(end)
    } else {
        // `[`: a flow sequence has `[`, `]` and `, `; a value runs without spaces or commas.
        let end = run(b, i + 1, |c| bare(c) && c != b']' && c != b'[');
        if end == i + 1 || b.get(end) == Some(&b']') && end + 1 >= b.len() {
            return None;
        }
        let end = if b.get(end) == Some(&b']') {
            run(b, end + 1, bare)
        } else {
            end
        };
        Some(end)
    }
}

/// A command-line flag that takes a credential as its next argument: `--api-token`,
/// `--password`, `-password`, and `-p` once a user flag or a MySQL-family command came before.
pub(crate) fn is_credential_flag(w: &str, user_seen: bool) -> bool {
    if w == "-p" {
        return user_seen;
    }
    let Some(name) = w.strip_prefix('-') else {
        return false;
    };
    let name = name.trim_start_matches('-');
    name.len() >= 2 && !name.contains(['=', ':']) && names::classify(name).is_some()
}

/// Is the credential word at `pos` part of a name that a structural or assignment rule acts
/// on? (`password`, `DB_PASSWORD`, `Secret`, `SecretList`, `auths`, `Opaque`; not `key`,
/// `tokenizer`, `keyboard`.)
fn keyword_in_credential_name(b: &[u8], pos: usize) -> bool {
    let ident = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'/');
    let mut st = pos;
    while st > 0 && pos - st <= MAX_KEY && ident(b[st - 1]) {
        st -= 1;
    }
    let mut en = pos;
    while en < b.len() && en - pos <= MAX_KEY && ident(b[en]) {
        en += 1;
    }
    if en - st > MAX_KEY {
        return false;
    }
    let Ok(name) = std::str::from_utf8(&b[st..en]) else {
        return true;
    };
    let name = name.trim_matches(['-', '.', '/']);
    // Shapes the JSON walk recognises by a name that is not itself a credential name.
    const SUFFIX: &[u8] = b"/last-applied-configuration";
    let nb = name.as_bytes();
    if [
        "auth",
        "auths",
        "opaque",
        "identitytoken",
        "registrytoken",
        "kty",
    ]
    .iter()
    .any(|w| name.eq_ignore_ascii_case(w))
        || (nb.len() >= SUFFIX.len() && nb[nb.len() - SUFFIX.len()..].eq_ignore_ascii_case(SUFFIX))
    {
        return true;
    }
    names::classify(name).is_some() || name.split('/').any(|part| names::classify(part).is_some())
}

fn mixed_case(v: &[u8]) -> bool {
    v.iter().any(u8::is_ascii_uppercase) && v.iter().any(u8::is_ascii_lowercase)
}

/// Values that are placeholders, not secrets (`null`, `****`, `${DB_PASSWORD}`, already redacted).
///
/// Only a value that is nothing but the placeholder counts: `[REDACTED:jwt] hunter2` or a
/// multi-line block that starts with `${X}` is still a secret. (This also keeps the scan
/// linear: a value judged a placeholder is short, so re-reading it from a later trigger is
/// cheap.)
pub(crate) fn is_secret_value(v: &str) -> bool {
    let t = v.trim();
    if t.is_empty()
        || is_redaction_marker(t)
        || t.bytes().all(|c| c == b'*' || c == b'x' || c == b'X')
    {
        return false;
    }
    if (t.starts_with("${") || t.starts_with("{{") || t.starts_with("$("))
        && t.len() <= 256
        && !t.contains('\n')
    {
        return false;
    }
    // `kubectl describe secret` prints sizes, not values: `password:  16 bytes`.
    if let Some(n) = t.strip_suffix(" bytes")
        && !n.is_empty()
        && n.bytes().all(|c| c.is_ascii_digit())
    {
        return false;
    }
    if is_arn(t) {
        return false;
    }
    if t.len() > 12 {
        return true;
    }
    !matches!(
        t.to_ascii_lowercase().as_str(),
        "null"
            | "none"
            | "nil"
            | "true"
            | "false"
            | "undefined"
            | "<redacted>"
            | "redacted"
            | "<none>"
            | "\"\""
            | "''"
    )
}

/// An AWS ARN (`arn:aws:kms:...:key/...`, `arn:aws-cn:...`): it names a resource, even one
/// that holds a secret.
pub(crate) fn is_arn(t: &str) -> bool {
    let Some(rest) = t.strip_prefix("arn:aws") else {
        return false;
    };
    rest.len() <= 2048
        && (rest.starts_with(':') || rest.starts_with('-'))
        && rest.bytes().filter(|c| *c == b':').count() >= 4
        && !rest.bytes().any(|c| c.is_ascii_whitespace())
}

/// `[REDACTED:<name>]` (or a prefix of it cut at a delimiter), alone.
pub(crate) fn is_redaction_marker(t: &str) -> bool {
    let Some(rest) = t.strip_prefix("[REDACTED") else {
        return false;
    };
    match rest.find(']') {
        Some(p) => p + 1 == rest.len(),
        None => rest.len() <= 64 && !rest.contains(char::is_whitespace),
    }
}

/// A YAML block scalar after a `key: |` line: the more-indented lines that follow.
fn yaml_block(b: &[u8], first_nl: usize, key_indent: usize) -> Option<(usize, usize)> {
    let mut i = first_nl;
    let mut start = None;
    let mut end = None;
    while i < b.len() {
        let ls = i + 1;
        if ls >= b.len() {
            break;
        }
        let le = line_end(b, ls);
        let content = run(b, ls, |c| c == b' ' || c == b'\t');
        let blank = b[content..le].iter().all(|c| c.is_ascii_whitespace());
        if !blank && content - ls <= key_indent {
            break;
        }
        if !blank {
            start.get_or_insert(content);
            let mut e = le;
            while e > content && b[e - 1].is_ascii_whitespace() {
                e -= 1;
            }
            end = Some(e);
        }
        i = le;
    }
    Some((start?, end?))
}

fn aws_session_token(b: &[u8], pos: usize) -> Option<Span> {
    if pos > 0 && is_b64(b[pos - 1]) {
        return None;
    }
    let end = run(b, pos, is_b64);
    (end - pos >= 40 && b[pos..pos + 4].iter().any(u8::is_ascii_uppercase)).then_some(Span {
        start: pos,
        end,
        det: d::AWS_SESSION_TOKEN,
    })
}

/// A PEM private key block, BEGIN line to END line; a block with no END (truncated output)
/// extends over everything that can be key material.
fn pem(s: &str, pos: usize, memo: &mut Memo) -> Option<Span> {
    let b = s.as_bytes();
    work(90);
    let head_end =
        pos + 10 + memchr::memmem::find(b.get(pos + 10..(pos + 90).min(b.len()))?, b"-----")?;
    let header = &s[pos..head_end];
    if !header.contains("PRIVATE KEY") || !header.starts_with("-----BEGIN") {
        return None;
    }
    let body = head_end + 5;
    let end = match memo.pem_end.find(body, |q| find_from(b, q, b"-----END")) {
        Some(p) => {
            let e = p + 8;
            work(80);
            match memchr::memmem::find(&b[e..(e + 80).min(b.len())], b"-----") {
                Some(q) => e + q + 5,
                None => line_end(b, e),
            }
        }
        None => {
            // Truncated: key material is base64, whitespace and escaped newlines.
            let mut i = body;
            while i < b.len() {
                if is_b64(b[i]) || b[i].is_ascii_whitespace() {
                    i += 1;
                } else if b[i] == b'\\' && i + 1 < b.len() && matches!(b[i + 1], b'n' | b'r') {
                    i += 2;
                } else {
                    break;
                }
            }
            work(i - body);
            i
        }
    };
    Some(Span {
        start: pos,
        end,
        det: d::PRIVATE_KEY,
    })
}

/// `checked` is raised past a wrapped token that turned out not to be a JWT, so the later
/// `eyJ` triggers inside it are not examined again (that kept a column of such lines linear).
fn jwt_or_docker_b64(
    b: &[u8],
    pos: usize,
    active: DetectorSet,
    checked: &mut usize,
) -> Option<Span> {
    if pos < *checked {
        return None;
    }
    if &b[pos..pos + 3] != b"eyJ"
        || (pos > 0 && (is_b64url(b[pos - 1]) || b[pos - 1] == b'+' || b[pos - 1] == b'/'))
    {
        return None;
    }
    // base64 of `{"auths":` — an encoded .dockerconfigjson.
    if b[pos..].starts_with(b"eyJhdXRocyI6") {
        let end = run(b, pos, is_b64);
        return active.has(d::DOCKER_CONFIG).then_some(Span {
            start: pos,
            end,
            det: d::DOCKER_CONFIG,
        });
    }
    if !active.has(d::JWT) {
        return None;
    }
    let h = run(b, pos, is_b64url);
    if h - pos < 10 {
        return None;
    }
    if b.get(h) == Some(&b'.') {
        let p = run(b, h + 1, is_b64url);
        if p - (h + 1) >= 2 && b.get(p) == Some(&b'.') {
            let end = run(b, p + 1, is_b64url);
            if !wraps(b, end) {
                return Some(Span {
                    start: pos,
                    end,
                    det: d::JWT,
                });
            }
        }
    }
    wrapped_jwt(b, pos, checked)
}

/// A line break (`\n`, `\r\n` or an escaped `\\n`) at `i` followed by more token: its length.
fn wrap_at(b: &[u8], i: usize) -> Option<usize> {
    let k = if b[i..].starts_with(b"\r\n") || b[i..].starts_with(b"\\n") {
        2
    } else if b[i..].starts_with(b"\n") {
        1
    } else {
        return None;
    };
    b.get(i + k).is_some_and(|c| is_b64url(*c)).then_some(k)
}

/// Is `i` the end of a line wrapped at a fixed width (64 or 76 columns) with more token after
/// the break?
fn wraps(b: &[u8], i: usize) -> bool {
    if wrap_at(b, i).is_none() {
        return false;
    }
    let from = i.saturating_sub(80);
    work(i - from);
    let start = match memchr::memrchr(b'\n', &b[from..i]) {
        Some(p) => from + p + 1,
        None if from == 0 => 0,
        None => match memchr::memmem::rfind(&b[from..i], b"\\n") {
            Some(p) => from + p + 2,
            None => return false,
        },
    };
    let start = match memchr::memmem::rfind(&b[start..i], b"\\n") {
        Some(p) => start + p + 2,
        None => start,
    };
    matches!(i - start, 64 | 76)
}

/// A JWT wrapped at a fixed width (64 or 76 columns, as `fold` or a PEM-style printer leaves
/// it): token characters and dots across line breaks that end lines of exactly that width.
/// Header of 10+ characters, two dots.
fn wrapped_jwt(b: &[u8], pos: usize, checked: &mut usize) -> Option<Span> {
    let mut i = pos;
    let mut dots = 0;
    let mut header = None;
    loop {
        let e = run(b, i, |c| is_b64url(c) || c == b'.');
        for (k, c) in b[i..e].iter().enumerate() {
            if *c == b'.' {
                dots += 1;
                header.get_or_insert(i + k);
            }
        }
        i = e;
        if !wraps(b, e) {
            break;
        }
        i = e + wrap_at(b, e).unwrap_or(0);
    }
    if dots < 2 {
        *checked = i;
        return None;
    }
    let header_len = header.map(|h| h - pos)?;
    (header_len >= 10 && i > pos).then_some(Span {
        start: pos,
        end: i,
        det: d::JWT,
    })
}

/// `Bearer <token>`: the token (>= 8 chars, with a digit or >= 20 chars, so prose survives).
fn bearer(b: &[u8], pos: usize) -> Option<Span> {
    if pos > 0 && b[pos - 1].is_ascii_alphanumeric() {
        return None;
    }
    let mut i = pos + 6;
    let ws = i;
    loop {
        if i < b.len() && matches!(b[i], b' ' | b'\t' | b'+') {
            i += 1;
        } else if b[i..].starts_with(b"%20") {
            i += 3;
        } else {
            break;
        }
    }
    if i == ws {
        return None;
    }
    let end = run(b, i, |c| {
        c.is_ascii_alphanumeric() || b"-._~+/=".contains(&c)
    });
    let tok = &b[i..end];
    (tok.len() >= 8 && (tok.len() >= 20 || tok.iter().any(u8::is_ascii_digit))).then_some(Span {
        start: i,
        end,
        det: d::BEARER_TOKEN,
    })
}

/// `Basic <base64(user:password)>`: only when the base64 really decodes to `user:password`.
fn basic(b: &[u8], pos: usize) -> Option<Span> {
    if pos > 0 && b[pos - 1].is_ascii_alphanumeric() {
        return None;
    }
    let i = run(b, pos + 5, |c| c == b' ' || c == b'\t');
    if i == pos + 5 {
        return None;
    }
    let end = run(b, i, is_b64);
    if end - i < 8 {
        return None;
    }
    let tok = &b[i..end];
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(tok)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(tok))
        .ok()?;
    (decoded.contains(&b':') && decoded.iter().all(|c| (0x20..0x7f).contains(c))).then_some(Span {
        start: i,
        end,
        det: d::BASIC_AUTH,
    })
}

/// `curl -u user:password`, `mysql -pSECRET`, `sshpass -p SECRET`: the password, looked for
/// in the rest of the command (bounded: the same line, at most 512 bytes on).
fn command(b: &[u8], pos: usize, kind: CommandKind) -> Option<Span> {
    if pos > 0 && (b[pos - 1].is_ascii_alphanumeric() || b[pos - 1] == b'_') {
        return None;
    }
    // The window ends on a character boundary, so a value cut by it is still text to check.
    let mut window_end = (pos + 512).min(b.len());
    while window_end < b.len() && (b[window_end] & 0xC0) == 0x80 {
        window_end += 1;
    }
    let window = &b[pos..window_end];
    let line = memchr::memchr(b'\n', window).unwrap_or(window.len());
    work(line);
    let cmd = &window[..line];
    // Flags are words after whitespace (or after `"`, `'` in a JSON-quoted command).
    let mut i = 0;
    while i < cmd.len() {
        let at_word = i == 0 || matches!(cmd[i - 1], b' ' | b'\t' | b'"' | b'\'');
        if !(at_word && cmd[i] == b'-') {
            i += 1;
            continue;
        }
        let w_end = i + cmd[i..]
            .iter()
            .position(|c| c.is_ascii_whitespace() || matches!(c, b'"' | b'\''))
            .unwrap_or(cmd.len() - i);
        let word = &cmd[i..w_end];
        // The value: attached (`-pX`, `--user=u:p`) or the next word.
        let next_word = |from: usize| {
            let vs = from
                + cmd[from..]
                    .iter()
                    .take_while(|c| matches!(c, b' ' | b'\t'))
                    .count();
            let (vs, quoted) = match cmd.get(vs) {
                Some(b'\'' | b'"') => (vs + 1, true),
                _ => (vs, false),
            };
            let ve = vs
                + cmd[vs..]
                    .iter()
                    .position(|c| {
                        if quoted {
                            matches!(c, b'\'' | b'"')
                        } else {
                            c.is_ascii_whitespace() || matches!(c, b'"' | b'\'')
                        }
                    })
                    .unwrap_or(cmd.len() - vs);
            (vs, ve)
        };
        let value = match kind {
            CommandKind::Curl if word == b"-u" || word == b"--user" => Some(next_word(w_end)),
            CommandKind::Curl if word.starts_with(b"--user=") => Some((i + 7, w_end)),
            CommandKind::Curl if word.starts_with(b"-u") && word.len() > 2 => Some((i + 2, w_end)),
            CommandKind::Mysql if word.starts_with(b"-p") && word.len() > 2 => {
                let q = matches!(word[2], b'\'' | b'"');
                Some((i + 2 + usize::from(q), w_end))
            }
            CommandKind::Sshpass if word == b"-p" => Some(next_word(w_end)),
            CommandKind::Sshpass if word.starts_with(b"-p") && word.len() > 2 => {
                Some((i + 2, w_end))
            }
            _ => None,
        };
        if let Some((vs, ve)) = value {
            let (vs, ve) = if matches!(kind, CommandKind::Curl) {
                // `user:password`: the password; a bare user makes curl prompt.
                let colon = cmd[vs..ve].iter().position(|c| *c == b':')?;
                (vs + colon + 1, ve)
            } else {
                (vs, ve)
            };
            let v = std::str::from_utf8(&cmd[vs..ve]).ok()?;
            if ve > vs && is_secret_value(v) {
                return Some(Span {
                    start: pos + vs,
                    end: pos + ve,
                    det: d::CREDENTIAL_ASSIGNMENT,
                });
            }
        }
        i = w_end.max(i + 1);
    }
    None
}

/// The `sig=` signature of an Azure shared access signature URL (`?sv=...&sig=...`).
fn sas_sig(b: &[u8], pos: usize) -> Option<Span> {
    let vs = pos + 5;
    let ve = run(b, vs, |c| {
        c.is_ascii_alphanumeric() || matches!(c, b'%' | b'+' | b'/' | b'=')
    });
    (ve - vs >= 16).then_some(Span {
        start: vs,
        end: ve,
        det: d::CONNECTION_STRING_PASSWORD,
    })
}

/// `scheme://user:password@host`: the password only. RFC 3986 forbids unencoded `/ ? # @` in
/// userinfo, so the password ends at the first `@` and contains none of those.
fn conn_string(b: &[u8], pos: usize, after: usize) -> Option<Span> {
    let scheme_start = {
        let mut s = pos;
        while s > 0 && (b[s - 1].is_ascii_alphanumeric() || matches!(b[s - 1], b'+' | b'.' | b'-'))
        {
            s -= 1;
        }
        s
    };
    if pos - scheme_start < 2 || !b[scheme_start].is_ascii_alphabetic() {
        return None;
    }
    // The authority ends at the path, query or fragment (or where the text stops looking
    // like a URL); its userinfo runs to the LAST `@` in it and its password from the first
    // `:` of the userinfo, as URL parsers (WHATWG, RFC 3986 readers such as urllib3 and
    // libpq's) read `postgres://app:p@ss@db/x`: the password is `p@ss`. Stopping at the first
    // `@` left the rest of such a password in the text (found by fuzzing: re-redacting the
    // output found a new password). A marker this scanner wrote is one opaque unit: its `:`
    // is not the userinfo's, or redacting a redacted text would find a "password" in it.
    let stop = |c: u8| {
        c.is_ascii_whitespace()
            || matches!(c, b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'\\')
    };
    let authority_end = run(b, after, |c| !stop(c));
    let at = after + memchr::memrchr(b'@', &b[after..authority_end])?;
    let Some(colon) = userinfo_colon(&b[after..at]) else {
        // `https://<token>@github.com/org/repo.git`: a token as the whole userinfo (a plain
        // user name such as `git@` or `deploy@` is short or has no digits).
        let u = &b[after..at];
        let tokenish = u.len() >= 20
            && u.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'~'))
            && u.iter().any(u8::is_ascii_digit)
            && u.iter().any(u8::is_ascii_alphabetic);
        return tokenish.then_some(Span {
            start: after,
            end: at,
            det: d::CONNECTION_STRING_PASSWORD,
        });
    };
    let ps = after + colon + 1;
    let pe = at;
    if pe == ps {
        return None;
    }
    let pw = std::str::from_utf8(&b[ps..pe]).ok()?;
    is_secret_value(pw).then_some(Span {
        start: ps,
        end: pe,
        det: d::CONNECTION_STRING_PASSWORD,
    })
}

/// The first `:` of a URL's userinfo, outside the `[REDACTED:<name>]` markers in it.
fn userinfo_colon(u: &[u8]) -> Option<usize> {
    work(u.len());
    let mut i = 0;
    while i < u.len() {
        match u[i] {
            b':' => return Some(i),
            b'[' => i += marker_len(&u[i..]).unwrap_or(1),
            _ => i += 1,
        }
    }
    None
}

/// Whether position `at` lies inside a `[REDACTED:<name>]` marker (after its `[`, before
/// its end). A detector that starts a value there has read the marker's own `:` as a
/// `key: value` or `key=value` separator (found by fuzzing: `accessKeyId=[REDACTED:…]` in a
/// Secret's data block, and a JSON Secret's value `password=[REDACTED:…],info`, were
/// redacted again from `aws_access_key_id]` on). Such a span holds no secret of the text.
fn starts_inside_a_marker(b: &[u8], at: usize) -> bool {
    // A marker is at most `[REDACTED:` + a 48-character name + `]` long.
    let from = at.saturating_sub(64);
    let Some(open) = memchr::memrchr(b'[', &b[from..at]).map(|i| from + i) else {
        return false;
    };
    marker_len(&b[open..]).is_some_and(|len| at < open + len)
}

/// `[REDACTED:<name>]` alone, perhaps between spaces and quotes (`"…"`, `'…'`, `\"…\"`).
fn is_only_a_marker(v: &[u8]) -> bool {
    let mut t = v.trim_ascii();
    for q in [&b"\\\""[..], b"\"", b"'"] {
        if let Some(inner) = t.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            t = inner;
            break;
        }
    }
    marker_len(t) == Some(t.len())
}

/// The length of the `[REDACTED:<name>]` marker `b` starts with, if it starts with one.
fn marker_len(b: &[u8]) -> Option<usize> {
    const OPEN: &[u8] = b"[REDACTED:";
    let rest = b.strip_prefix(OPEN)?;
    let name = rest
        .iter()
        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || **c == b'_')
        .count();
    (name > 0 && rest.get(name) == Some(&b']')).then_some(OPEN.len() + name + 1)
}

/// In a YAML document that declares `kind: Secret`: every value under `data:` / `stringData:`
/// and the last-applied-configuration annotation.
fn yaml_secret_blocks(s: &str, active: DetectorSet, spans: &mut Vec<Span>) {
    let b = s.as_bytes();
    work(2 * b.len());
    // Split into documents on `---` lines; only documents with a `kind: Secret` line count.
    let mut doc_start = 0;
    let mut i = 0;
    let mut docs = Vec::new();
    while i <= b.len() {
        let le = if i < b.len() { line_end(b, i) } else { b.len() };
        let line = &b[i..le];
        if line.starts_with(b"---") || le >= b.len() {
            let de = if le >= b.len() { b.len() } else { i };
            docs.push((doc_start, de));
            doc_start = (le + 1).min(b.len());
        }
        if le >= b.len() {
            break;
        }
        i = le + 1;
    }
    let kind = |line: &[u8]| {
        let t = line.trim_ascii();
        let t = t.strip_prefix(b"- ").unwrap_or(t).trim_ascii_start();
        t.strip_prefix(b"kind:").is_some_and(|r| {
            let r = r.trim_ascii();
            r == b"Secret" || r == b"\"Secret\"" || r == b"'Secret'"
        })
    };
    for (ds, de) in docs {
        let doc = &b[ds..de];
        if !doc.split(|c| *c == b'\n').any(kind) {
            continue;
        }
        let mut i = ds;
        while i < de {
            let le = line_end(b, i).min(de);
            let content = run(b, i, |c| c == b' ' || c == b'\t');
            let indent = content - i;
            let line = s[content..le].trim_end();
            let line_nodash = line.strip_prefix("- ").unwrap_or(line);
            let is_data = line_nodash == "data:" || line_nodash == "stringData:";
            if is_data && active.has(d::K8S_SECRET_DATA) {
                // Entries: the following lines indented deeper than `data:`.
                let mut j = le + 1;
                while j < de {
                    let lj = line_end(b, j).min(de);
                    let cj = run(b, j, |c| c == b' ' || c == b'\t');
                    if b[cj..lj].iter().all(|c| c.is_ascii_whitespace()) {
                        j = lj + 1;
                        continue;
                    }
                    if cj - j <= indent {
                        break;
                    }
                    if let Some(colon) = memchr::memchr(b':', &b[cj..lj]) {
                        let vs = run(b, cj + colon + 1, |c| c == b' ' || c == b'\t');
                        let mut ve = lj;
                        while ve > vs && b[ve - 1].is_ascii_whitespace() {
                            ve -= 1;
                        }
                        if ve > vs {
                            let v = &b[vs..ve];
                            if matches!(v[0], b'|' | b'>')
                                && v.iter().all(|c| b"|>+-0123456789".contains(c))
                            {
                                if let Some((bs, be)) = yaml_block(b, lj, cj - j) {
                                    spans.push(Span {
                                        start: bs,
                                        end: be.min(de),
                                        det: d::K8S_SECRET_DATA,
                                    });
                                }
                            } else {
                                spans.push(Span {
                                    start: vs,
                                    end: ve,
                                    det: d::K8S_SECRET_DATA,
                                });
                            }
                        }
                    } else {
                        // Continuation of a block scalar or a wrapped value: all of it.
                        let mut ve = lj;
                        while ve > cj && b[ve - 1].is_ascii_whitespace() {
                            ve -= 1;
                        }
                        spans.push(Span {
                            start: cj,
                            end: ve,
                            det: d::K8S_SECRET_DATA,
                        });
                    }
                    j = lj + 1;
                }
                // The block's lines are values, never `data:` keys of their own: go on after
                // it (a `data:` nested in `data:` nested in ... would otherwise be re-walked
                // once per level).
                i = j.max(le + 1);
                continue;
            } else if let Some(rest) =
                line.strip_prefix("kubectl.kubernetes.io/last-applied-configuration:")
                && active.has(d::K8S_SECRET_LAST_APPLIED)
            {
                let r = rest.trim();
                if r.starts_with('|') || r.starts_with('>') {
                    if let Some((bs, be)) = yaml_block(b, le, indent) {
                        spans.push(Span {
                            start: bs,
                            end: be.min(de),
                            det: d::K8S_SECRET_LAST_APPLIED,
                        });
                        i = line_end(b, be) + 1;
                        continue;
                    }
                } else if !r.is_empty() {
                    let prefix = line.len() - rest.len();
                    let vs = content + prefix + (rest.len() - rest.trim_start().len());
                    spans.push(Span {
                        start: vs,
                        end: vs + r.len(),
                        det: d::K8S_SECRET_LAST_APPLIED,
                    });
                }
            }
            i = le + 1;
        }
    }
}

/// Secret JSON that did not parse as a whole (a log line that printed a Secret, a truncated
/// document, a Python repr): the string values inside `"data": {...}` / `"stringData": {...}`.
fn json_secret_blocks(s: &str, active: DetectorSet, spans: &mut Vec<Span>) {
    if !active.has(d::K8S_SECRET_DATA) {
        return;
    }
    let b = s.as_bytes();
    for needle in [&b"data"[..], &b"stringData"[..]] {
        // A `"data": {` inside a block already walked is part of that block's values: walking
        // it again would make a line of repeated `"data":{"x":"y",` quadratic in time and in
        // spans.
        let mut walked_until = 0;
        work(b.len());
        for p in memchr::memmem::find_iter(b, needle) {
            if p < walked_until {
                continue;
            }
            // Must be a quoted key: `"data"`, `\"data\"` or `'data'`, then `:` then `{`.
            let Some(&q) = b.get(p.wrapping_sub(1)) else {
                continue;
            };
            if !matches!(q, b'"' | b'\'') || b.get(p + needle.len()) != Some(&q) {
                continue;
            }
            let mut i = p + needle.len() + 1;
            if b.get(i) == Some(&b'\\') {
                i += 1;
            }
            i = run(b, i, |c| c.is_ascii_whitespace());
            if b.get(i) != Some(&b':') {
                continue;
            }
            i = run(b, i + 1, |c| c.is_ascii_whitespace());
            if b.get(i) != Some(&b'{') {
                continue;
            }
            // Walk `key: value` pairs to the closing brace; every value is a span.
            let close = memchr::memchr(b'}', &b[i..]).map_or(b.len(), |c| i + c);
            work(close - i);
            walked_until = close;
            let mut j = i + 1;
            while j < close {
                // Each value follows a ':' at this level.
                let Some(c) = memchr::memchr(b':', &b[j..close]) else {
                    break;
                };
                let mut vs = run(b, j + c + 1, |c| c.is_ascii_whitespace());
                let mut ve;
                if b.get(vs) == Some(&b'\\') && b.get(vs + 1) == Some(&b'"') {
                    vs += 2;
                    ve = memchr::memmem::find(&b[vs..close], b"\\\"").map_or(close, |e| vs + e);
                } else if matches!(b.get(vs), Some(b'"' | b'\'')) {
                    let q = b[vs];
                    vs += 1;
                    ve = vs;
                    while ve < close && b[ve] != q {
                        ve += if b[ve] == b'\\' { 2 } else { 1 };
                    }
                    ve = ve.min(close);
                } else {
                    ve = run(b, vs, |c| !matches!(c, b',' | b'}'));
                    ve = ve.min(close);
                    while ve > vs && b[ve - 1].is_ascii_whitespace() {
                        ve -= 1;
                    }
                }
                if ve > vs {
                    spans.push(Span {
                        start: vs,
                        end: ve,
                        det: d::K8S_SECRET_DATA,
                    });
                }
                j = memchr::memchr(b',', &b[ve.min(close)..close]).map_or(close, |c| ve + c + 1);
            }
        }
    }
}

/// Sort spans, merge overlaps (the first-starting span names the merged one). A span whose
/// end falls inside a character (a detector's bounded look-ahead cut it) is widened to take
/// the whole character, never dropped: dropping it would leave its secret in place.
///
/// A span that holds nothing but a marker this scanner wrote (`[REDACTED:docker_config]`,
/// perhaps quoted) is dropped too: it holds no secret, and re-marking it under another
/// detector's name made redaction not idempotent (found by fuzzing: a Secret's data value
/// redacted as `docker_config` became `k8s_secret_data` on a second pass).
fn normalise(s: &str, spans: &mut Vec<Span>) {
    for sp in spans.iter_mut() {
        sp.start = s.floor_char_boundary(sp.start);
        sp.end = s.ceil_char_boundary(sp.end);
    }
    spans.retain(|sp| {
        sp.end > sp.start
            && !is_only_a_marker(&s.as_bytes()[sp.start..sp.end])
            && !starts_inside_a_marker(s.as_bytes(), sp.start)
    });
    if spans.len() < 2 {
        return;
    }
    spans.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut w = 0;
    for r in 1..spans.len() {
        if spans[r].start < spans[w].end {
            spans[w].end = spans[w].end.max(spans[r].end);
        } else {
            w += 1;
            spans[w] = spans[r];
        }
    }
    spans.truncate(w + 1);
}

/// Rebuild `s` with each span replaced by `[REDACTED:<name>]`.
pub(crate) fn apply(s: &str, spans: &[Span], name: impl Fn(Det) -> &'static str) -> String {
    let mut out = String::with_capacity(s.len() + spans.len() * 16);
    let mut last = 0;
    for sp in spans {
        out.push_str(&s[last..sp.start]);
        out.push_str("[REDACTED:");
        out.push_str(name(sp.det));
        out.push(']');
        last = sp.end;
    }
    out.push_str(&s[last..]);
    out
}

#[cfg(test)]
mod trigger_tests {
    use super::*;

    /// The lower-casing automaton finds exactly what an `ascii_case_insensitive` one finds:
    /// same patterns, same positions, same order, on short and long texts.
    #[test]
    fn lower_cased_triggers_match_like_a_case_insensitive_automaton() {
        let scanner = TextScanner::new(Vec::new());
        let reference = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            .build(&scanner.ac.patterns)
            .unwrap();
        let mut texts: Vec<String> = vec![
            String::new(),
            "nothing to see".into(),
            "DB_PASSWORD=hunter2 Authorization: Bearer eyJhbGciOi.x.y".into(),
            "postgresql://app:Pg-S3cret@db:5432/x and https:\\/\\/host".into(),
            "AKIAIOSFODNN7EXAMPLE aKiA ghp_ GHP_ Xoxb- sk-ant- SG. aiza AIza".into(),
            "kind: Secret\ndata:\n  TOKEN: c2VjcmV0\n-----begin RSA PRIVATE KEY-----".into(),
            "ünïcödé İstanbul ſecret \u{212a}ey Straße pässwörd PASSWORD".into(),
        ];
        let base = texts.clone();
        for t in &base {
            for n in [LONG_TEXT - 3, LONG_TEXT, LONG_TEXT + 1, 300, 3000] {
                let mut long = String::new();
                while long.len() < n {
                    long.push_str(t);
                    long.push_str(" Key=");
                }
                texts.push(long);
            }
        }
        for p in &scanner.ac.patterns {
            let upper = p.to_ascii_uppercase();
            let mixed: String = p
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i % 2 == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            texts.push(format!("x{p} {upper}-{mixed}_{p}{p}"));
        }
        for t in &texts {
            let want: Vec<_> = reference
                .find_iter(t.as_str())
                .map(|m| (m.pattern(), m.start(), m.end()))
                .collect();
            let mut got = Vec::new();
            scanner.ac.each(t, |m| {
                got.push((m.pattern(), m.start(), m.end()));
                true
            });
            assert_eq!(got, want, "{t:?}");
            assert_eq!(
                scanner.ac.is_match(t),
                reference.is_match(t.as_str()),
                "{t:?}"
            );
        }
    }
}
