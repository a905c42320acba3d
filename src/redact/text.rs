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
    Known(u16),
    Extra(u16),
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
}

impl Memo {
    const NEW: Memo = Memo {
        pem_end: Ahead::NEW,
        escaped_quote: Ahead::NEW,
        quote_end: [Ahead::NEW; 2],
        bare_end: Ahead::NEW,
        line_end: Ahead::NEW,
        quote_or_line_end: Ahead::NEW,
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
        let mut memo = Memo::NEW;
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
                Rule::Jwt => jwt_or_docker_b64(b, pos, active).is_some(),
                Rule::Bearer => bearer(b, pos).is_some(),
                Rule::Basic => basic(b, pos).is_some(),
                Rule::ConnString => conn_string(b, pos, m.end()).is_some(),
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
        let mut memo = Memo::NEW;
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
                Rule::Jwt => jwt_or_docker_b64(b, pos, active),
                Rule::Bearer => active
                    .has(d::BEARER_TOKEN)
                    .then(|| bearer(b, pos))
                    .flatten(),
                Rule::Basic => active.has(d::BASIC_AUTH).then(|| basic(b, pos)).flatten(),
                Rule::ConnString => active
                    .has(d::CONNECTION_STRING_PASSWORD)
                    .then(|| conn_string(b, pos, m.end()))
                    .flatten(),
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
        const MAX_KEY: usize = 64;
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
        if !active.has(det) {
            return (None, en);
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
        if i < n && b[i] == b'=' {
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
            return (None, en);
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
            b'{' | b'[' => return (None, en),
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

/// Is the credential word at `pos` part of a name that a structural or assignment rule acts
/// on? (`password`, `DB_PASSWORD`, `Secret`, `SecretList`, `auths`, `Opaque`; not `key`,
/// `tokenizer`, `keyboard`.)
fn keyword_in_credential_name(b: &[u8], pos: usize) -> bool {
    const MAX_KEY: usize = 64;
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
    if ["auth", "auths", "opaque", "identitytoken", "registrytoken"]
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

fn jwt_or_docker_b64(b: &[u8], pos: usize, active: DetectorSet) -> Option<Span> {
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
    if h - pos < 10 || b.get(h) != Some(&b'.') {
        return None;
    }
    let p = run(b, h + 1, is_b64url);
    if p - (h + 1) < 2 || b.get(p) != Some(&b'.') {
        return None;
    }
    let end = run(b, p + 1, is_b64url);
    Some(Span {
        start: pos,
        end,
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
    let stop = |c: u8| {
        c.is_ascii_whitespace()
            || matches!(
                c,
                b'/' | b'?' | b'#' | b'@' | b'"' | b'\'' | b'<' | b'>' | b'\\'
            )
    };
    let user_end = run(b, after, |c| !stop(c) && c != b':');
    if b.get(user_end) != Some(&b':') {
        return None;
    }
    let ps = user_end + 1;
    let pe = run(b, ps, |c| !stop(c));
    if pe == ps || b.get(pe) != Some(&b'@') {
        return None;
    }
    let pw = std::str::from_utf8(&b[ps..pe]).ok()?;
    is_secret_value(pw).then_some(Span {
        start: ps,
        end: pe,
        det: d::CONNECTION_STRING_PASSWORD,
    })
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

/// Sort spans, merge overlaps (the first-starting span names the merged one) and drop any
/// span that does not fall on UTF-8 character boundaries (all detectors end on ASCII bytes).
fn normalise(s: &str, spans: &mut Vec<Span>) {
    spans.retain(|sp| {
        sp.end > sp.start && s.is_char_boundary(sp.start) && s.is_char_boundary(sp.end)
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
