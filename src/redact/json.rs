//! The structural walk over JSON values: Kubernetes objects, env lists, kubeconfigs, docker
//! configs and credential-named keys are recognised by shape; every other string is handed to
//! the text scanner. A string that holds a JSON document (the usual EKS MCP tool result: a
//! summary block and a `json.dumps` block) is parsed, walked the same way and re-serialised
//! compactly only if something in it was redacted; otherwise its bytes are left untouched.
use base64::Engine as _;
use serde_json::Value;

use super::Redaction;
use super::detectors::{self as d, Det, DetectorSet};
use super::names;
use super::node::Node;
use super::text::{self, Span, TextScanner};

/// JSON documents nested inside strings are followed this many levels deep.
const MAX_NESTED_JSON: u32 = 4;
/// Readings of one string until none finds anything more ([`Walk::string`]).
const MAX_ROUNDS: usize = 3;

/// MCP protocol fields of a result that are never redacted.
const PROTOCOL_RESULT_KEYS: &[&str] = &[
    "tools",
    "nextCursor",
    "protocolVersion",
    "capabilities",
    "serverInfo",
];

/// Secret `type`s that identify a Secret even when `kind` is absent (items of raw API lists).
fn is_secret_type(t: &str) -> bool {
    t == "Opaque"
        || t.starts_with("kubernetes.io/")
        || t == "bootstrap.kubernetes.io/token"
        || t.starts_with("helm.sh/")
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Members that name the value of a name/value pair (`env`, Helm parameters, CloudFormation).
const PAIR_NAME_KEYS: &[&str] = &[
    "name",
    "Name",
    "key",
    "Key",
    "ParameterKey",
    "parameterKey",
    "OptionName",
    "variable",
];
/// Members that hold the value of a name/value pair.
const PAIR_VALUE_KEYS: &[&str] = &["value", "Value", "ParameterValue", "parameterValue"];
/// The private (and symmetric) members of a JSON Web Key (RFC 7518 section 6).
const JWK_PRIVATE_MEMBERS: &[&str] = &["k", "d", "p", "q", "dp", "dq", "qi"];

/// What the structural walk needs from a JSON tree. Two trees implement it: the message's
/// own `serde_json::Value` (walked in place, as it will be sent) and [`Node`], the cheaper
/// tree that documents found inside strings are parsed into. One walk serves both, so a
/// document is judged the same way wherever it sits.
pub(crate) trait Tree: Sized {
    type Members<'a>: Iterator<Item = (&'a String, &'a Self)>
    where
        Self: 'a;
    type MembersMut<'a>: Iterator<Item = (&'a String, &'a mut Self)>
    where
        Self: 'a;
    fn shape(&mut self) -> Shape<'_, Self>;
    /// An object's members, in order (`None` for anything else).
    fn members(&self) -> Option<Self::Members<'_>>;
    fn as_str(&self) -> Option<&str>;
    fn is_object(&self) -> bool;
    fn is_string(&self) -> bool;
    fn is_null(&self) -> bool;
    fn from_string(s: String) -> Self;
}

/// A mutable view of one value of a [`Tree`].
pub(crate) enum Shape<'a, T: Tree + 'a> {
    String(&'a mut String),
    Array(&'a mut Vec<T>),
    Object(T::MembersMut<'a>),
    Other,
}

impl Tree for Value {
    type Members<'a> = serde_json::map::Iter<'a>;
    type MembersMut<'a> = serde_json::map::IterMut<'a>;
    fn shape(&mut self) -> Shape<'_, Self> {
        match self {
            Value::String(s) => Shape::String(s),
            Value::Array(a) => Shape::Array(a),
            Value::Object(m) => Shape::Object(m.iter_mut()),
            _ => Shape::Other,
        }
    }
    fn members(&self) -> Option<Self::Members<'_>> {
        self.as_object().map(|m| m.iter())
    }
    fn as_str(&self) -> Option<&str> {
        Value::as_str(self)
    }
    fn is_object(&self) -> bool {
        Value::is_object(self)
    }
    fn is_string(&self) -> bool {
        Value::is_string(self)
    }
    fn is_null(&self) -> bool {
        Value::is_null(self)
    }
    fn from_string(s: String) -> Self {
        Value::String(s)
    }
}

fn member(m: &(String, Node)) -> (&String, &Node) {
    (&m.0, &m.1)
}

fn member_mut(m: &mut (String, Node)) -> (&String, &mut Node) {
    (&m.0, &mut m.1)
}

type MemberFn<'a> = fn(&'a (String, Node)) -> (&'a String, &'a Node);
type MemberMutFn<'a> = fn(&'a mut (String, Node)) -> (&'a String, &'a mut Node);

impl Tree for Node {
    type Members<'a> = std::iter::Map<std::slice::Iter<'a, (String, Node)>, MemberFn<'a>>;
    type MembersMut<'a> = std::iter::Map<std::slice::IterMut<'a, (String, Node)>, MemberMutFn<'a>>;
    fn shape(&mut self) -> Shape<'_, Self> {
        match self {
            Node::String(s) => Shape::String(s),
            Node::Array(a) => Shape::Array(a),
            Node::Object(m) => Shape::Object(m.iter_mut().map(member_mut as MemberMutFn<'_>)),
            _ => Shape::Other,
        }
    }
    fn members(&self) -> Option<Self::Members<'_>> {
        match self {
            Node::Object(m) => Some(m.iter().map(member as MemberFn<'_>)),
            _ => None,
        }
    }
    fn as_str(&self) -> Option<&str> {
        Node::as_str(self)
    }
    fn is_object(&self) -> bool {
        Node::is_object(self)
    }
    fn is_string(&self) -> bool {
        Node::is_string(self)
    }
    fn is_null(&self) -> bool {
        matches!(self, Node::Null)
    }
    fn from_string(s: String) -> Self {
        Node::String(s)
    }
}

/// Context inherited from the parent value.
#[derive(Clone, Copy, Default)]
pub(crate) struct Ctx {
    /// This object is an item of a list of Secrets (`items` of a Secret list or summary).
    secret_item: bool,
    /// This object is the `metadata` of a Secret (its annotations are the Secret's).
    secret_meta: bool,
    /// This object is a kubeconfig `users[].user`.
    kube_user: bool,
}

/// One walk over one value; collects redactions. Holds no state beyond the call.
pub(crate) struct Walk<'a> {
    pub scanner: &'a TextScanner,
    pub names: &'a [&'static str],
    pub active: DetectorSet,
    pub out: &'a mut Vec<Redaction>,
    pub path: String,
    spans: Vec<Span>,
    depth: u32,
    /// The detector of the latest redaction recorded.
    last: Det,
}

fn push_key(path: &mut String, k: &str) {
    let plain = !k.is_empty()
        && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && !k.as_bytes()[0].is_ascii_digit();
    if plain {
        path.push('.');
        path.push_str(k);
    } else {
        path.push('[');
        path.push_str(&serde_json::to_string(k).expect("a string serialises"));
        path.push(']');
    }
}

fn push_index(path: &mut String, i: usize) {
    // Without `write!`: this runs for every array item of every relayed result.
    let mut digits = [0u8; 20];
    let mut n = i;
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    path.push('[');
    path.extend(digits[at..].iter().map(|&d| d as char));
    path.push(']');
}

impl<'a> Walk<'a> {
    pub(crate) fn new(
        scanner: &'a TextScanner,
        names: &'a [&'static str],
        active: DetectorSet,
        out: &'a mut Vec<Redaction>,
        path: &str,
    ) -> Walk<'a> {
        Walk {
            scanner,
            names,
            active,
            out,
            path: path.to_string(),
            spans: Vec::new(),
            depth: 0,
            last: Det(0),
        }
    }

    fn record(&mut self, det: Det) {
        self.last = det;
        self.out.push(Redaction {
            detector: self.names[det.0 as usize],
            path: self.path.clone(),
        });
    }

    fn replacement(&self, det: Det) -> String {
        format!("[REDACTED:{}]", self.names[det.0 as usize])
    }

    /// Replace `v` whole, if it holds anything, and record it.
    fn redact_whole<T: Tree>(&mut self, v: &mut T, det: Det) {
        let empty = v.is_null()
            || v.as_str()
                .is_some_and(|s| s.is_empty() || text::is_redaction_marker(s));
        if !empty {
            *v = T::from_string(self.replacement(det));
            self.record(det);
        }
    }

    // ---- MCP message shapes -------------------------------------------------------------

    /// A JSON-RPC message going to the client (or a batch of them).
    pub(crate) fn message(&mut self, msg: &mut Value) {
        match msg {
            Value::Array(batch) => {
                let base = self.path.len();
                for (i, m) in batch.iter_mut().enumerate() {
                    push_index(&mut self.path, i);
                    self.message(m);
                    self.path.truncate(base);
                }
            }
            Value::Object(m) => {
                let base = self.path.len();
                if let Some(result) = m.get_mut("result") {
                    self.path.push_str(".result");
                    self.result(result);
                    self.path.truncate(base);
                }
                if let Some(Value::Object(err)) = m.get_mut("error") {
                    self.path.push_str(".error");
                    let eb = self.path.len();
                    for (k, v) in err.iter_mut() {
                        if k == "code" {
                            continue;
                        }
                        push_key(&mut self.path, k);
                        self.value(v, Ctx::default());
                        self.path.truncate(eb);
                    }
                    self.path.truncate(base);
                }
                if m.contains_key("method")
                    && let Some(params) = m.get_mut("params")
                {
                    // Notifications (logging, progress) and server-to-client requests.
                    self.path.push_str(".params");
                    self.value(params, Ctx::default());
                    self.path.truncate(base);
                }
            }
            _ => {}
        }
    }

    fn result(&mut self, result: &mut Value) {
        let Value::Object(r) = result else {
            return self.value(result, Ctx::default());
        };
        let base = self.path.len();
        for (k, v) in r.iter_mut() {
            if PROTOCOL_RESULT_KEYS.contains(&k.as_str()) {
                continue;
            }
            push_key(&mut self.path, k);
            match (k.as_str(), v) {
                ("content", Value::Array(items)) => {
                    let cb = self.path.len();
                    for (i, item) in items.iter_mut().enumerate() {
                        push_index(&mut self.path, i);
                        self.content_item(item);
                        self.path.truncate(cb);
                    }
                }
                ("contents", Value::Array(items)) => {
                    let cb = self.path.len();
                    for (i, item) in items.iter_mut().enumerate() {
                        push_index(&mut self.path, i);
                        self.resource_contents(item);
                        self.path.truncate(cb);
                    }
                }
                (_, v) => self.value(v, Ctx::default()),
            }
            self.path.truncate(base);
        }
    }

    /// One `content[]` block: text, image/audio (binary data left alone), embedded resource,
    /// resource link.
    fn content_item(&mut self, item: &mut Value) {
        let Value::Object(o) = item else {
            return self.value(item, Ctx::default());
        };
        let ty = o.get("type").and_then(Value::as_str).unwrap_or("");
        let binary = ty == "image" || ty == "audio";
        let embedded = ty == "resource";
        let base = self.path.len();
        for (k, v) in o.iter_mut() {
            if k == "type" || (k == "data" && binary) {
                continue;
            }
            push_key(&mut self.path, k);
            if k == "resource" && embedded {
                self.resource_contents(v);
            } else {
                self.value(v, Ctx::default());
            }
            self.path.truncate(base);
        }
    }

    /// Resource contents: `text` is scanned; `blob` only when its MIME type says it is text.
    fn resource_contents(&mut self, rc: &mut Value) {
        let Value::Object(o) = rc else {
            return self.value(rc, Ctx::default());
        };
        let textish = o.get("mimeType").and_then(Value::as_str).is_some_and(|m| {
            let m = m.to_ascii_lowercase();
            m.starts_with("text/")
                || m.contains("json")
                || m.contains("yaml")
                || m.contains("xml")
                || m.contains("x-sh")
        });
        let base = self.path.len();
        for (k, v) in o.iter_mut() {
            push_key(&mut self.path, k);
            match (k.as_str(), v) {
                ("blob", Value::String(b64)) => {
                    if textish {
                        self.text_blob(b64);
                    }
                }
                (_, v) => self.value(v, Ctx::default()),
            }
            self.path.truncate(base);
        }
    }

    fn text_blob(&mut self, b64: &mut String) {
        let engine = base64::engine::general_purpose::STANDARD;
        let Ok(bytes) = engine.decode(b64.as_bytes()) else {
            return;
        };
        let Ok(mut text) = String::from_utf8(bytes) else {
            return;
        };
        let before = self.out.len();
        self.string(&mut text);
        if self.out.len() > before {
            *b64 = engine.encode(text.as_bytes());
        }
    }

    // ---- generic values ------------------------------------------------------------------

    pub(crate) fn value<T: Tree>(&mut self, v: &mut T, ctx: Ctx) {
        if v.is_object() {
            return self.object(v, ctx);
        }
        match v.shape() {
            Shape::String(s) => self.string(s),
            Shape::Array(a) => {
                let base = self.path.len();
                let mut siblings = Siblings::default();
                for (i, x) in a.iter_mut().enumerate() {
                    push_index(&mut self.path, i);
                    match siblings.next(x.as_str(), self.active) {
                        Some(det) => self.redact_whole(x, det),
                        None => self.value(
                            x,
                            Ctx {
                                secret_item: ctx.secret_item,
                                ..Ctx::default()
                            },
                        ),
                    }
                    self.path.truncate(base);
                }
            }
            Shape::Object(_) | Shape::Other => {}
        }
    }

    fn object<T: Tree>(&mut self, m: &mut T, ctx: Ctx) {
        // The few keys that decide the shape, found in one pass over the members: cheaper
        // than five lookups (each a SipHash in a `serde_json::Map`).
        let (mut kind, mut has_data, mut ty, mut is_docker) = (None, false, None, false);
        let (mut pair_name, mut is_jwk) = (None, false);
        for (k, v) in m.members().into_iter().flatten() {
            match k.as_str() {
                "kind" => kind = v.as_str(),
                "data" | "stringData" => has_data = true,
                "type" => ty = v.as_str(),
                "auths" => is_docker = v.is_object(),
                "kty" => is_jwk = v.is_string(),
                k if PAIR_NAME_KEYS.contains(&k) => pair_name = v.as_str(),
                _ => {}
            }
        }
        // `{name: DB_PASSWORD, value: ...}`: env lists, Argo CD `helm.parameters`,
        // CloudFormation `ParameterKey`/`ParameterValue`, any list of name/value pairs.
        let pair_secret = self.active.has(d::SENSITIVE_ENV_VALUE)
            && pair_name.is_some_and(|n| names::classify(n).is_some());
        let is_secret = ctx.secret_item
            || kind == Some("Secret")
            || (kind.is_none() && has_data && ty.is_some_and(is_secret_type));
        let items_are_secrets = matches!(kind, Some("Secret" | "SecretList"));
        let Shape::Object(members) = m.shape() else {
            return;
        };
        let base = self.path.len();
        for (k, v) in members {
            push_key(&mut self.path, k);
            let key = k.as_str();
            if is_secret
                && (key == "data" || key == "stringData")
                && self.active.has(d::K8S_SECRET_DATA)
            {
                self.secret_data(v);
            } else if (is_secret || ctx.secret_meta) && key == "annotations" {
                self.secret_annotations(v);
            } else if is_secret && key == "metadata" {
                self.value(
                    v,
                    Ctx {
                        secret_meta: true,
                        ..Ctx::default()
                    },
                );
            } else if items_are_secrets && key == "items" {
                self.value(
                    v,
                    Ctx {
                        secret_item: true,
                        ..Ctx::default()
                    },
                );
            } else if pair_secret && PAIR_VALUE_KEYS.contains(&key) && v.is_string() {
                self.redact_whole(v, d::SENSITIVE_ENV_VALUE);
            } else if is_jwk
                && JWK_PRIVATE_MEMBERS.contains(&key)
                && v.is_string()
                && self.active.has(d::PRIVATE_KEY)
            {
                self.redact_whole(v, d::PRIVATE_KEY);
            } else if is_docker && key == "auths" {
                self.docker_auths(v);
            } else if let Some(det) = self.key_detector(key, ctx) {
                if v.as_str().is_some_and(text::is_arn) {
                    // `kms-key: arn:aws:kms:...`, `secret: arn:aws:secretsmanager:...`:
                    // the name of a secret, not one.
                } else if v.is_string() {
                    self.redact_whole(v, det);
                } else {
                    self.value(
                        v,
                        Ctx {
                            kube_user: key == "user",
                            ..Ctx::default()
                        },
                    );
                }
            } else {
                let child = Ctx {
                    kube_user: key == "user",
                    ..Ctx::default()
                };
                self.value(v, child);
            }
            self.path.truncate(base);
        }
    }

    /// The detector for a value stored under a credential-named key, if that detector is on.
    fn key_detector(&self, key: &str, ctx: Ctx) -> Option<Det> {
        if !self.scanner.has_trigger(key) {
            return None;
        }
        let det = names::classify(key)?;
        let det = if ctx.kube_user
            && det == d::CREDENTIAL_ASSIGNMENT
            && (key == "token" || key == "password")
        {
            d::KUBECONFIG_CREDENTIAL
        } else {
            det
        };
        self.active.has(det).then_some(det)
    }

    /// `data` / `stringData` of a Secret: every value, keys kept.
    fn secret_data<T: Tree>(&mut self, v: &mut T) {
        if v.is_null() {
            return;
        }
        if !v.is_object() {
            return self.redact_whole(v, d::K8S_SECRET_DATA);
        }
        let Shape::Object(entries) = v.shape() else {
            return;
        };
        let base = self.path.len();
        for (k, ev) in entries {
            push_key(&mut self.path, k);
            self.redact_whole(ev, d::K8S_SECRET_DATA);
            self.path.truncate(base);
        }
    }

    fn secret_annotations<T: Tree>(&mut self, v: &mut T) {
        if !v.is_object() {
            return self.value(v, Ctx::default());
        }
        let Shape::Object(a) = v.shape() else {
            return;
        };
        let base = self.path.len();
        for (k, av) in a {
            push_key(&mut self.path, k);
            if k == LAST_APPLIED && self.active.has(d::K8S_SECRET_LAST_APPLIED) {
                self.redact_whole(av, d::K8S_SECRET_LAST_APPLIED);
            } else {
                self.value(av, Ctx::default());
            }
            self.path.truncate(base);
        }
    }

    /// Docker config `auths.<registry>.{auth,password,identitytoken,registrytoken}`.
    fn docker_auths<T: Tree>(&mut self, v: &mut T) {
        let Shape::Object(regs) = v.shape() else {
            return;
        };
        let on = self.active.has(d::DOCKER_CONFIG);
        let base = self.path.len();
        for (reg, entry) in regs {
            push_key(&mut self.path, reg);
            if on && entry.is_object() {
                if let Shape::Object(fields) = entry.shape() {
                    let eb = self.path.len();
                    for (k, fv) in fields {
                        push_key(&mut self.path, k);
                        let lk = k.to_ascii_lowercase();
                        if matches!(
                            lk.as_str(),
                            "auth" | "password" | "identitytoken" | "registrytoken"
                        ) {
                            self.redact_whole(fv, d::DOCKER_CONFIG);
                        } else {
                            self.value(fv, Ctx::default());
                        }
                        self.path.truncate(eb);
                    }
                }
            } else {
                self.value(entry, Ctx::default());
            }
            self.path.truncate(base);
        }
    }

    /// A string: a JSON document inside it is walked structurally, anything else is text.
    ///
    /// A string that one reading redacted is read again, until a reading finds nothing: a
    /// redaction can change how the rest reads (a JSON fragment written back compactly that
    /// now parses as a whole Secret, a key shortened below the length names are read at, a
    /// PEM header cut in two), and what a second reading would still find is a leak of the
    /// first. At most [`MAX_ROUNDS`] readings; a string still changing after them is withheld
    /// whole. Only strings of the message itself iterate: a document nested in a string is
    /// read again as part of its outer string.
    pub(crate) fn string(&mut self, s: &mut String) {
        if self.depth > 0 {
            return self.string_once(s);
        }
        let mut found = self.out.len();
        self.string_once(s);
        for _ in 1..MAX_ROUNDS {
            if self.out.len() == found {
                return;
            }
            found = self.out.len();
            self.string_once(s);
        }
        if self.out.len() > found {
            let det = self.last;
            *s = self.replacement(det);
            self.record(det);
        }
    }

    fn string_once(&mut self, s: &mut String) {
        if !has_json_escape(s) && !self.scanner.might_redact(s, self.active) {
            return;
        }
        let t = s.trim_start();
        if (t.starts_with('{') || t.starts_with('['))
            && self.depth < MAX_NESTED_JSON
            && let Ok(mut inner) = Node::parse_str(s)
        {
            let before = self.out.len();
            let base = self.path.len();
            self.path.push('$');
            self.depth += 1;
            self.value(&mut inner, Ctx::default());
            self.depth -= 1;
            self.path.truncate(base);
            if self.out.len() > before {
                // Compact output is rarely longer than the text it came from.
                *s = inner.to_json_string(s.len() + 64);
            }
            return;
        }
        if self.depth < MAX_NESTED_JSON {
            self.fragments(s);
        }
        self.text(s);
    }

    /// JSON objects inside a line of text (`DEBU[0000] {"auths": {...}}`, `msg={"password":
    /// ...}`): each is parsed where it starts and walked like a whole document, and written
    /// back compactly when something in it was redacted. The text scan then reads the whole
    /// line as usual. Failed parse attempts may look at four times the text in all (plus a
    /// little); after that the line is left to the text scan alone, so a line of unclosed
    /// objects stays linear to scan.
    fn fragments(&mut self, s: &mut String) {
        let b = s.as_bytes();
        let mut budget = 4 * b.len() + 4096;
        let mut rebuilt: Option<String> = None;
        let mut copied = 0;
        let mut i = 0;
        while let Some(p) = memchr::memchr(b'{', &b[i..]).map(|p| i + p) {
            i = p + 1;
            let q = p
                + 1
                + b[p + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_whitespace())
                    .count();
            if b.get(q) != Some(&b'"') {
                continue;
            }
            let rest = &s[p..];
            let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
            match stream.next() {
                Some(Ok(mut v)) => {
                    let end = p + stream.byte_offset();
                    text::work(end - p);
                    i = end;
                    let before = self.out.len();
                    let base = self.path.len();
                    self.path.push('$');
                    self.depth += 1;
                    self.value(&mut v, Ctx::default());
                    self.depth -= 1;
                    self.path.truncate(base);
                    if self.out.len() > before {
                        let out = rebuilt.get_or_insert_with(|| String::with_capacity(s.len()));
                        out.push_str(&s[copied..p]);
                        out.push_str(&serde_json::to_string(&v).expect("a JSON value serialises"));
                        copied = end;
                    }
                }
                Some(Err(e)) => {
                    let looked = error_offset(rest, &e);
                    text::work(looked);
                    budget = budget.saturating_sub(looked);
                    if budget == 0 {
                        break;
                    }
                }
                None => break,
            }
        }
        if let Some(mut out) = rebuilt {
            out.push_str(&s[copied..]);
            *s = out;
        }
    }

    fn text(&mut self, s: &mut String) {
        let mut spans = std::mem::take(&mut self.spans);
        self.scanner.scan(s, self.active, &mut spans);
        if !spans.is_empty() {
            for sp in &spans {
                self.record(sp.det);
            }
            let names = self.names;
            *s = text::apply(s, &spans, |d| names[d.0 as usize]);
        }
        self.spans = spans;
    }
}

/// A secret spread over the string elements of one array (a container's `args` or `command`,
/// `log_lines`, any list of strings): a PEM private key printed one line per element, up to
/// its END line or, when that never comes, to the end of the array; the value element after
/// a credential flag (`["--api-token", "<value>"]`, `["-u", "root", "-p", "<value>"]`, a log
/// line ending in `--password`). The elements are judged one after another, in one pass.
#[derive(Default)]
struct Siblings {
    /// Inside a PEM private key that started in an earlier element.
    in_key: bool,
    /// The previous element asked for its value in this one.
    value_next: bool,
    /// A user flag or a MySQL-family command came earlier, so `-p` is a password flag.
    user_seen: bool,
    /// Inside a JWT wrapped one line per element: the width of its full lines.
    jwt_width: usize,
}

/// A line of a wrapped token: only base64url characters and dots.
fn token_line(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

impl Siblings {
    /// The detector that removes this element whole, if it belongs to a split secret.
    fn next(&mut self, s: Option<&str>, active: DetectorSet) -> Option<Det> {
        let Some(s) = s else {
            *self = Siblings::default();
            return None;
        };
        if self.jwt_width > 0 {
            if token_line(s) && s.len() <= self.jwt_width {
                if s.len() < self.jwt_width {
                    self.jwt_width = 0;
                }
                return active.has(d::JWT).then_some(d::JWT);
            }
            self.jwt_width = 0;
        }
        // The first line of a JWT wrapped at 64 or 76 columns, one line per element (the
        // text scan cannot see the token whole there).
        if s.starts_with("eyJ") && matches!(s.len(), 64 | 76) && token_line(s) && s.contains('.') {
            self.jwt_width = s.len();
            return active.has(d::JWT).then_some(d::JWT);
        }
        if self.in_key {
            if s.contains("-----END") {
                self.in_key = false;
            }
            return active.has(d::PRIVATE_KEY).then_some(d::PRIVATE_KEY);
        }
        if let Some(b) = s.find("-----BEGIN")
            && s[b..].contains("PRIVATE KEY-----")
            && !s[b..].contains("-----END")
        {
            // This element is redacted by the text scanner (BEGIN to its end); the rest
            // of the key follows in the next elements.
            self.in_key = true;
            self.value_next = false;
            return None;
        }
        let take = std::mem::take(&mut self.value_next);
        let last = s.trim_end().rsplit([' ', '\t']).next().unwrap_or("");
        self.user_seen |= is_user_flag(last) || is_mysql_like(s);
        self.value_next = text::is_credential_flag(last, self.user_seen);
        (take && !s.trim().is_empty())
            .then_some(d::CREDENTIAL_ASSIGNMENT)
            .filter(|d| active.has(*d))
    }
}

fn is_user_flag(w: &str) -> bool {
    matches!(w, "-u" | "-U" | "--user" | "--username") || (w.starts_with("-u") && w.len() > 2)
}

fn is_mysql_like(s: &str) -> bool {
    let cmd = s.trim().rsplit('/').next().unwrap_or("");
    cmd.starts_with("mysql") || cmd.starts_with("mariadb") || cmd == "sshpass"
}

/// How far into `s` the parser read before it failed (from the error's line and column).
fn error_offset(s: &str, e: &serde_json::Error) -> usize {
    let line_start = if e.line() <= 1 {
        0
    } else {
        memchr::memchr_iter(b'\n', s.as_bytes())
            .nth(e.line() - 2)
            .map_or(s.len(), |p| p + 1)
    };
    (line_start + e.column()).min(s.len())
}

/// `\uXXXX` or `\/` escapes can hide a trigger from the raw-text check of a JSON document.
fn has_json_escape(s: &str) -> bool {
    memchr::memchr_iter(b'\\', s.as_bytes())
        .any(|i| matches!(s.as_bytes().get(i + 1), Some(b'u' | b'/')))
}

#[cfg(test)]
mod path_tests {
    #[test]
    fn array_indexes_are_written_in_decimal() {
        for i in [0usize, 7, 10, 99, 100, 12345, usize::MAX] {
            let mut p = String::from("$.a");
            super::push_index(&mut p, i);
            assert_eq!(p, format!("$.a[{i}]"));
        }
    }
}
