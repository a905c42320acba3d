//! parse: strict JSON-RPC 2.0 for MCP, and the one constructor of JSON-RPC errors.
//!
//! What the policy evaluates must be exactly what is forwarded, so this parser refuses the
//! inputs on which two JSON parsers could disagree: duplicate object keys (at any depth),
//! batches, non-object `params`, ids that are neither string nor integer, and a tool or
//! prompt `name` that is not a plain string. The accepted message is kept as a
//! `serde_json::Value`; the bytes sent upstream are that value re-serialised, never the
//! client's original bytes.
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// JSON-RPC standard codes.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// MCP 2026-07-28: an `Mcp-*` header disagrees with the body.
pub const HEADER_MISMATCH: i64 = -32020;

/// Gateway application codes. They sit outside the reserved -32768..-32000 range, as the
/// 2026-07-28 error-code policy asks. `data.source` tells a denial (`policy`) from a problem
/// of the gateway itself (`gateway`) or of the upstream (`upstream`).
pub const POLICY_DENIED: i64 = -31001;
pub const AUDIT_UNAVAILABLE: i64 = -31002;
/// The gateway's own per-caller limit (`gateway.limits` of the policy data); `data.retry_after`
/// says when to try again. Distinct from `UPSTREAM_RATE_LIMITED` (the upstream's 429).
pub const RATE_LIMITED: i64 = -31003;
pub const UPSTREAM_UNAVAILABLE: i64 = -31010;
pub const UPSTREAM_TIMEOUT: i64 = -31011;
pub const UPSTREAM_ERROR: i64 = -31012;
pub const UPSTREAM_RATE_LIMITED: i64 = -31013;
pub const UPSTREAM_AUTH_FAILED: i64 = -31014;
pub const UPSTREAM_BAD_RESPONSE: i64 = -31015;
pub const SIGNING_FAILED: i64 = -31016;

/// A JSON-RPC id: MCP allows strings and integers.
pub type Id = Value;

/// The shape of one accepted message.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Request {
        id: Id,
        method: String,
    },
    Notification {
        method: String,
    },
    /// A client's answer to a server request (elicitation, sampling, roots).
    Response {
        id: Id,
    },
}

/// One accepted JSON-RPC message.
#[derive(Debug, Clone)]
pub struct Message {
    pub kind: Kind,
    /// The whole message object, as evaluated and as it will be forwarded.
    pub value: Map<String, Value>,
}

/// Why a message was refused; becomes a JSON-RPC error with `id: null`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub code: i64,
    pub message: String,
}

impl ParseError {
    fn invalid(message: impl Into<String>) -> Self {
        ParseError {
            code: INVALID_REQUEST,
            message: message.into(),
        }
    }
}

impl Message {
    pub fn method(&self) -> Option<&str> {
        match &self.kind {
            Kind::Request { method, .. } | Kind::Notification { method } => Some(method),
            Kind::Response { .. } => None,
        }
    }

    pub fn id(&self) -> Option<&Id> {
        match &self.kind {
            Kind::Request { id, .. } | Kind::Response { id } => Some(id),
            Kind::Notification { .. } => None,
        }
    }

    pub fn params(&self) -> Option<&Map<String, Value>> {
        self.value.get("params").and_then(Value::as_object)
    }

    /// `params._meta`, if present.
    pub fn meta(&self) -> Option<&Map<String, Value>> {
        self.params()
            .and_then(|p| p.get("_meta"))
            .and_then(Value::as_object)
    }

    /// `params.name` (tools/call, prompts/get) or `params.uri` (resources/read).
    pub fn target_name(&self) -> Option<&str> {
        let p = self.params()?;
        p.get("name")
            .or_else(|| p.get("uri"))
            .and_then(Value::as_str)
    }

    /// The serialised form that is both evaluated and forwarded.
    pub fn to_bytes(&self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(&self.value).expect("a JSON map always serialises"))
    }
}

/// Parse one client→gateway message with the strict rules above.
pub fn parse_message(body: &[u8]) -> Result<Message, ParseError> {
    let value = parse_strict(body).map_err(|e| ParseError {
        code: e.0,
        message: e.1,
    })?;
    let obj = match value {
        Value::Object(o) => o,
        Value::Array(_) => {
            return Err(ParseError::invalid(
                "JSON-RPC batches are not supported: send one message per request",
            ));
        }
        _ => {
            return Err(ParseError::invalid(
                "a JSON-RPC message must be a JSON object",
            ));
        }
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(ParseError::invalid("`jsonrpc` must be the string \"2.0\""));
    }
    if let Some(params) = obj.get("params")
        && !params.is_object()
    {
        return Err(ParseError::invalid("`params` must be an object"));
    }
    let id = match obj.get("id") {
        None => None,
        Some(v @ Value::String(_)) => Some(v.clone()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(Value::Number(n.clone())),
        Some(_) => return Err(ParseError::invalid("`id` must be a string or an integer")),
    };
    let kind = match obj.get("method") {
        Some(Value::String(m)) => {
            if obj.contains_key("result") || obj.contains_key("error") {
                return Err(ParseError::invalid(
                    "a message cannot carry both `method` and `result`/`error`",
                ));
            }
            check_method_params(m, obj.get("params"))?;
            match id {
                Some(id) => Kind::Request {
                    id,
                    method: m.clone(),
                },
                None => Kind::Notification { method: m.clone() },
            }
        }
        Some(_) => return Err(ParseError::invalid("`method` must be a string")),
        None => {
            let id = id.ok_or_else(|| {
                ParseError::invalid("a message without `method` must be a response with an `id`")
            })?;
            match (obj.get("result"), obj.get("error")) {
                (Some(_), None) => {}
                (None, Some(Value::Object(_))) => {}
                _ => {
                    return Err(ParseError::invalid(
                        "a response must carry exactly one of `result` or `error` (an object)",
                    ));
                }
            }
            Kind::Response { id }
        }
    };
    Ok(Message { kind, value: obj })
}

/// Method-specific shape checks the policy relies on.
fn check_method_params(method: &str, params: Option<&Value>) -> Result<(), ParseError> {
    let field = match method {
        "tools/call" | "prompts/get" => "name",
        // Only the methods whose target the policy reads; others (resources/subscribe, which
        // the stateless era removed, unknown methods) are forwarded for the upstream to judge.
        "resources/read" => "uri",
        _ => return Ok(()),
    };
    let value = params.and_then(|p| p.get(field));
    match value {
        Some(Value::String(s)) if !s.is_empty() => {}
        _ => {
            return Err(ParseError::invalid(format!(
                "`params.{field}` of {method} must be a non-empty string"
            )));
        }
    }
    if method == "tools/call"
        && let Some(args) = params.and_then(|p| p.get("arguments"))
        && !args.is_object()
    {
        return Err(ParseError::invalid("`params.arguments` must be an object"));
    }
    Ok(())
}

/// Parse JSON, refusing duplicate keys anywhere. Errors are `(code, message)`.
pub fn parse_strict(body: &[u8]) -> Result<Value, (i64, String)> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let v = StrictValue::deserialize(&mut de).map_err(|e| {
        let msg = e.to_string();
        if msg.contains("duplicate key") {
            (INVALID_REQUEST, msg)
        } else {
            (PARSE_ERROR, format!("parse error: {msg}"))
        }
    })?;
    de.end()
        .map_err(|e| (PARSE_ERROR, format!("parse error: {e}")))?;
    Ok(v.0)
}

struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key {key:?}: each object key may appear once"
                )));
            }
            let StrictValue(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Parse any JSON document into a `Value`: the same value `serde_json::from_slice` gives
/// (same numbers, same key order, a repeated key keeps its first position and its last
/// value), built with fewer allocations. serde_json grows every object's index map one key
/// at a time (a rehash and a reallocation at each doubling); here the entries of the objects
/// and arrays still open wait on one reused stack and each finished one is allocated once,
/// at its final size. Used for upstream responses and for JSON documents inside strings,
/// where parsing was a large part of the relay's cost.
pub fn parse_value(bytes: &[u8]) -> serde_json::Result<Value> {
    parse_value_faithful(bytes).map(|(v, _)| v)
}

/// [`parse_value`], also saying whether the bytes are a faithful spelling of the value:
/// no object repeats a key (a repeated key collapses to its last value, so the bytes would
/// hold a member the value does not) and every number is an integer that fits `i64`/`u64`
/// (a float, or an integer too large for 64 bits, is parsed as an `f64` and might not read
/// back as the same number). When it is `true`, any JSON parser reads the bytes as exactly
/// this value, so a relay that inspected the value and changed nothing may send the bytes
/// as they came instead of writing the value out again.
pub fn parse_value_faithful(bytes: &[u8]) -> serde_json::Result<(Value, bool)> {
    let mut scratch = Scratch {
        faithful: true,
        ..Scratch::default()
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = ValueSeed(&mut scratch).deserialize(&mut de)?;
    de.end()?;
    Ok((v, scratch.faithful))
}

/// [`parse_value`] for a `str` (no second UTF-8 check).
pub fn parse_value_str(s: &str) -> serde_json::Result<Value> {
    parse_value_str_faithful(s).map(|(v, _)| v)
}

/// [`parse_value_faithful`] for a `str`.
pub fn parse_value_str_faithful(s: &str) -> serde_json::Result<(Value, bool)> {
    let mut scratch = Scratch {
        faithful: true,
        ..Scratch::default()
    };
    let mut de = serde_json::Deserializer::from_str(s);
    let v = ValueSeed(&mut scratch).deserialize(&mut de)?;
    de.end()?;
    Ok((v, scratch.faithful))
}

/// Members of the objects and items of the arrays being parsed, innermost last.
#[derive(Default)]
struct Scratch {
    entries: Vec<(String, Value)>,
    items: Vec<Value>,
    /// Cleared at the first repeated key or non-integer number (see `parse_value_faithful`).
    faithful: bool,
}

struct ValueSeed<'a>(&'a mut Scratch);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        self.0.faithful = false;
        // As serde_json: a float that is not finite becomes null.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let start = self.0.items.len();
        while let Some(v) = seq.next_element_seed(ValueSeed(&mut *self.0))? {
            self.0.items.push(v);
        }
        Ok(Value::Array(self.0.items.drain(start..).collect()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let start = self.0.entries.len();
        while let Some(key) = map.next_key::<String>()? {
            let v = map.next_value_seed(ValueSeed(&mut *self.0))?;
            self.0.entries.push((key, v));
        }
        // Collecting inserts in order: a repeated key keeps its first position and takes the
        // later value, exactly as serde_json's own map does.
        let members = self.0.entries.len() - start;
        let map: Map<String, Value> = self.0.entries.drain(start..).collect();
        if map.len() != members {
            self.0.faithful = false;
        }
        Ok(Value::Object(map))
    }
}

/// The one constructor of JSON-RPC error responses.
pub fn error_response(id: Option<&Id>, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut err = Map::new();
    err.insert("code".into(), Value::from(code));
    err.insert("message".into(), Value::String(message.to_owned()));
    if let Some(d) = data {
        err.insert("data".into(), d);
    }
    let mut m = Map::new();
    m.insert("jsonrpc".into(), Value::String("2.0".into()));
    m.insert("id".into(), id.cloned().unwrap_or(Value::Null));
    m.insert("error".into(), Value::Object(err));
    Value::Object(m)
}

/// A successful response carrying `result`.
pub fn result_response(id: &Id, result: Value) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_request_notification_and_response() {
        let m = parse_message(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert_eq!(
            m.kind,
            Kind::Request {
                id: Value::from(1),
                method: "tools/list".into()
            }
        );
        let n =
            parse_message(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(n.method(), Some("notifications/initialized"));
        let r = parse_message(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert_eq!(
            r.kind,
            Kind::Response {
                id: Value::from("a")
            }
        );
    }

    #[test]
    fn duplicate_keys_are_rejected_at_any_depth() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_k8s_resources","arguments":{"namespace":"dev","namespace":"prod"}}}"#;
        let e = parse_message(body).unwrap_err();
        assert_eq!(e.code, INVALID_REQUEST);
        assert!(
            e.message.contains("duplicate key \"namespace\""),
            "{}",
            e.message
        );
        let top = br#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}"#;
        assert_eq!(parse_message(top).unwrap_err().code, INVALID_REQUEST);
    }

    #[test]
    fn batches_and_bad_shapes_are_invalid_requests() {
        for body in [
            &br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#[..],
            br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#,
            br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
            br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["x"]}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":"y"}}"#,
            br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            br#"{"jsonrpc":"2.0","id":1}"#,
        ] {
            let e = parse_message(body).unwrap_err();
            assert_eq!(e.code, INVALID_REQUEST, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn garbage_is_a_parse_error() {
        assert_eq!(parse_message(b"{not json").unwrap_err().code, PARSE_ERROR);
        assert_eq!(
            parse_message(br#"{"jsonrpc":"2.0"} x"#).unwrap_err().code,
            PARSE_ERROR
        );
    }

    #[test]
    fn unicode_escaped_names_are_decoded_once_and_forwarded_decoded() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get\u005fpod_logs"}}"#;
        let m = parse_message(body).unwrap();
        assert_eq!(m.target_name(), Some("get_pod_logs"));
        let fwd = String::from_utf8(m.to_bytes().to_vec()).unwrap();
        assert!(fwd.contains("\"get_pod_logs\""), "{fwd}");
    }

    #[test]
    fn parse_value_gives_what_serde_json_gives() {
        for doc in [
            r#"{"a":1,"b":[true,false,null,-3,4.5,1e300,18446744073709551615,-9223372036854775808],"c":{"d":"e\u00e9\n","f":{}},"g":[]}"#,
            r#"{"z":1,"a":2,"z":3,"m":{"k":[{"x":1,"x":2}]}}"#,
            r#"[1,[2,[3,{"a":[4]}]],"s",{"":""}]"#,
            r#"  "just a string"  "#,
            "12",
            "-0.0",
            "{}",
            r#"{"nested":"{\"inner\":[1,2,{\"k\":\"v\"}]}"}"#,
        ] {
            let want: Value = serde_json::from_str(doc).unwrap();
            let got = parse_value(doc.as_bytes()).unwrap();
            assert_eq!(got, want, "{doc}");
            assert_eq!(
                serde_json::to_string(&got).unwrap(),
                serde_json::to_string(&want).unwrap(),
                "key order of {doc}"
            );
            assert_eq!(parse_value_str(doc).unwrap(), want, "{doc}");
        }
        for bad in ["{", r#"{"a":1} x"#, "[1,]", r#"{"a" 1}"#, "", r"\u0000"] {
            assert!(parse_value(bad.as_bytes()).is_err(), "{bad}");
            assert!(parse_value_str(bad).is_err(), "{bad}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(
            parse_value(deep.as_bytes()).is_err(),
            "the recursion limit still applies"
        );
    }

    #[test]
    fn faithful_means_the_bytes_read_back_as_the_value() {
        for (doc, faithful) in [
            (
                r#"{"a":1,"b":[true,null,-3,18446744073709551615,-9223372036854775808],"c":{"d":"e\u00e9\n\ud83d\ude00"}}"#,
                true,
            ),
            (r#" {"k": [ {"x": "y"} ] } "#, true),
            (r#"{"a":1,"a":2}"#, false),
            (r#"{"m":{"k":[{"x":1,"y":2,"x":3}]}}"#, false),
            (r#"{"a":1.5}"#, false),
            (r#"{"a":1e2}"#, false),
            (r#"[123456789012345678901234]"#, false),
            (r#"{"a":-0.0}"#, false),
        ] {
            let (v, f) = parse_value_faithful(doc.as_bytes()).unwrap();
            assert_eq!(f, faithful, "{doc}");
            assert_eq!(v, parse_value(doc.as_bytes()).unwrap(), "{doc}");
            assert_eq!(
                parse_value_str_faithful(doc).unwrap(),
                (v.clone(), f),
                "{doc}"
            );
            if f {
                let reread: Value = serde_json::from_str(doc).unwrap();
                assert_eq!(v, reread, "{doc}");
                assert_eq!(v.to_string(), reread.to_string(), "{doc}");
            }
        }
    }

    #[test]
    fn numbers_beyond_64_bits_forward_as_the_float_that_was_evaluated() {
        // Found by the jsonrpc fuzz target: without serde_json's `float_roundtrip`, the
        // forwarded spelling read back one ulp apart and printed differently.
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"ie":18473764440749155615,"f":18446.7440537790555}}}"#;
        let msg = parse_message(body).unwrap();
        let bytes = msg.to_bytes();
        let again = parse_message(&bytes).unwrap();
        assert_eq!(again.value, msg.value);
        assert_eq!(again.to_bytes(), bytes);
        assert_eq!(
            msg.value["params"]["arguments"]["ie"].as_f64(),
            Some(18473764440749155615.0)
        );
    }

    #[test]
    fn error_response_shape() {
        let v = error_response(Some(&Value::from(7)), POLICY_DENIED, "denied", None);
        assert_eq!(v["id"], 7);
        assert_eq!(v["error"]["code"], POLICY_DENIED);
        assert!(!(-32768..=-32000).contains(&POLICY_DENIED));
    }
}
