//! The structural walk over JSON values: Kubernetes objects, env lists, kubeconfigs, docker
//! configs and credential-named keys are recognised by shape; every other string is handed to
//! the text scanner. A string that holds a JSON document (the usual EKS MCP tool result: a
//! summary block and a `json.dumps` block) is parsed, walked the same way and re-serialised
//! compactly only if something in it was redacted; otherwise its bytes are left untouched.
use base64::Engine as _;
use serde_json::{Map, Value};

use super::Redaction;
use super::detectors::{self as d, Det, DetectorSet};
use super::names;
use super::text::{self, Span, TextScanner};

/// JSON documents nested inside strings are followed this many levels deep.
const MAX_NESTED_JSON: u32 = 4;

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
    use std::fmt::Write as _;
    let _ = write!(path, "[{i}]");
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
        }
    }

    fn record(&mut self, det: Det) {
        self.out.push(Redaction {
            detector: self.names[det.0 as usize],
            path: self.path.clone(),
        });
    }

    fn replacement(&self, det: Det) -> Value {
        Value::String(format!("[REDACTED:{}]", self.names[det.0 as usize]))
    }

    /// Replace `v` whole, if it holds anything, and record it.
    fn redact_whole(&mut self, v: &mut Value, det: Det) {
        let empty = match v {
            Value::Null => true,
            Value::String(s) => s.is_empty() || s.starts_with("[REDACTED:"),
            _ => false,
        };
        if !empty {
            *v = self.replacement(det);
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
        let ty = o
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let base = self.path.len();
        for (k, v) in o.iter_mut() {
            if k == "type" || (k == "data" && (ty == "image" || ty == "audio")) {
                continue;
            }
            push_key(&mut self.path, k);
            if k == "resource" && ty == "resource" {
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

    pub(crate) fn value(&mut self, v: &mut Value, ctx: Ctx) {
        match v {
            Value::String(s) => self.string(s),
            Value::Array(a) => {
                let base = self.path.len();
                for (i, x) in a.iter_mut().enumerate() {
                    push_index(&mut self.path, i);
                    self.value(
                        x,
                        Ctx {
                            secret_item: ctx.secret_item,
                            ..Ctx::default()
                        },
                    );
                    self.path.truncate(base);
                }
            }
            Value::Object(m) => self.object(m, ctx),
            _ => {}
        }
    }

    fn object(&mut self, m: &mut Map<String, Value>, ctx: Ctx) {
        let kind = m.get("kind").and_then(Value::as_str);
        let has_data = m.contains_key("data") || m.contains_key("stringData");
        let is_secret = ctx.secret_item
            || kind == Some("Secret")
            || (kind.is_none()
                && has_data
                && m.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(is_secret_type));
        let items_are_secrets = matches!(kind, Some("Secret" | "SecretList"));
        let is_docker = matches!(m.get("auths"), Some(Value::Object(_)));
        let base = self.path.len();
        for (k, v) in m.iter_mut() {
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
            } else if (key == "env" || key == "environment") && matches!(v, Value::Array(_)) {
                self.env_list(v);
            } else if is_docker && key == "auths" {
                self.docker_auths(v);
            } else if let Some(det) = self.key_detector(key, ctx) {
                match v {
                    Value::String(_) => self.redact_whole(v, det),
                    _ => self.value(
                        v,
                        Ctx {
                            kube_user: key == "user",
                            ..Ctx::default()
                        },
                    ),
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
    fn secret_data(&mut self, v: &mut Value) {
        match v {
            Value::Object(entries) => {
                let base = self.path.len();
                for (k, ev) in entries.iter_mut() {
                    push_key(&mut self.path, k);
                    self.redact_whole(ev, d::K8S_SECRET_DATA);
                    self.path.truncate(base);
                }
            }
            Value::Null => {}
            other => self.redact_whole(other, d::K8S_SECRET_DATA),
        }
    }

    fn secret_annotations(&mut self, v: &mut Value) {
        let Value::Object(a) = v else {
            return self.value(v, Ctx::default());
        };
        let base = self.path.len();
        for (k, av) in a.iter_mut() {
            push_key(&mut self.path, k);
            if k == LAST_APPLIED && self.active.has(d::K8S_SECRET_LAST_APPLIED) {
                self.redact_whole(av, d::K8S_SECRET_LAST_APPLIED);
            } else {
                self.value(av, Ctx::default());
            }
            self.path.truncate(base);
        }
    }

    /// `env: [{name, value}]`: the value when the name names a credential; every value is
    /// still scanned as text.
    fn env_list(&mut self, v: &mut Value) {
        let Value::Array(list) = v else { return };
        let base = self.path.len();
        for (i, e) in list.iter_mut().enumerate() {
            push_index(&mut self.path, i);
            let sensitive = self.active.has(d::SENSITIVE_ENV_VALUE)
                && e.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| names::classify(n).is_some());
            match e {
                Value::Object(o) if sensitive => {
                    let eb = self.path.len();
                    for (k, ev) in o.iter_mut() {
                        push_key(&mut self.path, k);
                        if k == "value" && ev.is_string() {
                            self.redact_whole(ev, d::SENSITIVE_ENV_VALUE);
                        } else {
                            self.value(ev, Ctx::default());
                        }
                        self.path.truncate(eb);
                    }
                }
                other => self.value(other, Ctx::default()),
            }
            self.path.truncate(base);
        }
    }

    /// Docker config `auths.<registry>.{auth,password,identitytoken,registrytoken}`.
    fn docker_auths(&mut self, v: &mut Value) {
        let Value::Object(regs) = v else { return };
        let on = self.active.has(d::DOCKER_CONFIG);
        let base = self.path.len();
        for (reg, entry) in regs.iter_mut() {
            push_key(&mut self.path, reg);
            if let (true, Value::Object(fields)) = (on, &mut *entry) {
                let eb = self.path.len();
                for (k, fv) in fields.iter_mut() {
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
            } else {
                self.value(entry, Ctx::default());
            }
            self.path.truncate(base);
        }
    }

    /// A string: a JSON document inside it is walked structurally, anything else is text.
    pub(crate) fn string(&mut self, s: &mut String) {
        if !has_json_escape(s) && !self.scanner.might_redact(s, self.active) {
            return;
        }
        let t = s.trim_start();
        if (t.starts_with('{') || t.starts_with('['))
            && self.depth < MAX_NESTED_JSON
            && let Ok(mut inner) = serde_json::from_str::<Value>(s)
        {
            let before = self.out.len();
            let base = self.path.len();
            self.path.push('$');
            self.depth += 1;
            self.value(&mut inner, Ctx::default());
            self.depth -= 1;
            self.path.truncate(base);
            if self.out.len() > before {
                *s = serde_json::to_string(&inner).expect("a JSON value serialises");
            }
            return;
        }
        self.text(s);
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

/// `\uXXXX` or `\/` escapes can hide a trigger from the raw-text check of a JSON document.
fn has_json_escape(s: &str) -> bool {
    memchr::memchr_iter(b'\\', s.as_bytes())
        .any(|i| matches!(s.as_bytes().get(i + 1), Some(b'u' | b'/')))
}
