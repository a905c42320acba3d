//! MCP transport facts: which protocol era a request belongs to, and the 2026-07-28 rule that
//! `Mcp-Method` / `Mcp-Name` / `MCP-Protocol-Version` headers must agree with the body.
//!
//! Decisions are always made from the parsed body; headers are only cross-checked, so a
//! request whose headers say one thing and whose body says another is refused before any
//! stage acts on it.
use base64::Engine as _;
use http::HeaderMap;
use serde_json::Value;

use crate::jsonrpc::Message;
use crate::policy::Era;

/// The first protocol version of the stateless era.
pub const STATELESS_VERSION: &str = "2026-07-28";
/// `_meta` key carrying the protocol version in the stateless era.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

pub const H_SESSION_ID: &str = "mcp-session-id";
pub const H_PROTOCOL_VERSION: &str = "mcp-protocol-version";
pub const H_METHOD: &str = "mcp-method";
pub const H_NAME: &str = "mcp-name";
pub const H_PARAM_PREFIX: &str = "mcp-param-";
pub const H_LAST_EVENT_ID: &str = "last-event-id";

/// Era and protocol version of one POSTed message.
pub fn era_of(headers: &HeaderMap, msg: &Message) -> (Era, Option<String>) {
    let header_version = header_str(headers, H_PROTOCOL_VERSION).map(str::to_owned);
    if let Some(v) = msg
        .meta()
        .and_then(|m| m.get(META_PROTOCOL_VERSION))
        .and_then(|v| v.as_str())
    {
        return (Era::Stateless, Some(v.to_owned()));
    }
    if msg.method() == Some("server/discover") {
        return (Era::Stateless, header_version);
    }
    if msg.method() == Some("initialize") {
        let v = msg
            .params()
            .and_then(|p| p.get("protocolVersion"))
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        return (Era::Session, v.or(header_version));
    }
    match header_version {
        Some(v) if v.as_str() >= STATELESS_VERSION => (Era::Stateless, Some(v)),
        other => (Era::Session, other),
    }
}

/// A header that disagrees with the body (HTTP 400, JSON-RPC -32020).
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderMismatch(pub String);

/// Check `Mcp-Method`, `Mcp-Name` and `MCP-Protocol-Version` against the body.
///
/// In the stateless era the headers are required (`Mcp-Name` only for methods that name a
/// target); in the session era they are checked when present.
pub fn check_headers(headers: &HeaderMap, msg: &Message, era: Era) -> Result<(), HeaderMismatch> {
    let Some(method) = msg.method() else {
        return Ok(());
    };
    let stateless = era == Era::Stateless;
    match header_str(headers, H_METHOD) {
        Some(h) if h != method => {
            return Err(HeaderMismatch(format!(
                "Mcp-Method header {h:?} does not match the body's method {method:?}"
            )));
        }
        None if stateless && msg.id().is_some() => {
            return Err(HeaderMismatch(format!(
                "missing Mcp-Method header (required in protocol {STATELESS_VERSION}); send Mcp-Method: {method}"
            )));
        }
        _ => {}
    }
    let names_target = matches!(method, "tools/call" | "resources/read" | "prompts/get");
    if names_target {
        let body_name = msg.target_name().unwrap_or_default();
        match headers.get(H_NAME) {
            Some(raw) => {
                let decoded = raw
                    .to_str()
                    .ok()
                    .and_then(decode_header_value)
                    .ok_or_else(|| HeaderMismatch("Mcp-Name header is not decodable".into()))?;
                if decoded != body_name {
                    return Err(HeaderMismatch(format!(
                        "Mcp-Name header {decoded:?} does not match the body's {body_name:?}"
                    )));
                }
            }
            None if stateless => {
                return Err(HeaderMismatch(format!(
                    "missing Mcp-Name header (required for {method} in protocol {STATELESS_VERSION})"
                )));
            }
            None => {}
        }
    }
    if stateless {
        let meta_version = msg
            .meta()
            .and_then(|m| m.get(META_PROTOCOL_VERSION))
            .and_then(|v| v.as_str());
        if let (Some(h), Some(b)) = (header_str(headers, H_PROTOCOL_VERSION), meta_version)
            && h != b
        {
            return Err(HeaderMismatch(format!(
                "MCP-Protocol-Version header {h:?} does not match params._meta[{META_PROTOCOL_VERSION:?}] {b:?}"
            )));
        }
    }
    Ok(())
}

/// One mirrored parameter: the path of argument keys, and the header's `{Name}`.
pub type Mirrored = (Vec<String>, String);

/// The arguments a tool's input schema mirrors into `Mcp-Param-{Name}` headers (2026-07-28,
/// SEP-2243): every property, at any depth of nested `properties`, annotated
/// `"x-mcp-header": "Name"`.
pub fn mirrored_parameters(schema: &Value) -> Vec<Mirrored> {
    fn walk(schema: &Value, path: &mut Vec<String>, out: &mut Vec<Mirrored>) {
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (key, prop) in props {
            path.push(key.clone());
            if let Some(name) = prop.get("x-mcp-header").and_then(Value::as_str) {
                out.push((path.clone(), name.to_owned()));
            }
            walk(prop, path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(schema, &mut Vec::new(), &mut out);
    out
}

/// Check the `Mcp-Param-*` headers of a `tools/call` against its arguments, for the
/// parameters the tool's schema mirrors (`mirrored_parameters`): an argument that is present (not null) needs its
/// header with the same value (decoded from `=?base64?…?=`; integers and other numbers
/// compared numerically, booleans as `true`/`false`), and a header needs its argument. The
/// upstream may act on either, so they must say what the policy evaluated. Headers the
/// schema does not declare are forwarded as they are, as the specification requires. In
/// the session eras, where clients do not mirror, a missing header is not an error.
pub fn check_param_headers(
    headers: &HeaderMap,
    mirrored: &[Mirrored],
    arguments: Option<&Value>,
    era: Era,
) -> Result<(), HeaderMismatch> {
    for (path, name) in mirrored {
        let header = format!("{H_PARAM_PREFIX}{}", name.to_ascii_lowercase());
        let mut values = headers.get_all(header.as_str()).iter();
        let raw = values.next();
        if values.next().is_some() {
            return Err(HeaderMismatch(format!(
                "Mcp-Param-{name} appears more than once"
            )));
        }
        let arg = arguments
            .and_then(|a| path.iter().try_fold(a, |v, k| v.get(k)))
            .filter(|v| !v.is_null());
        let shown = path.join(".");
        match (arg, raw) {
            (None, None) => {}
            // Session-era clients do not mirror; only headers they do send are checked.
            (Some(_), None) if era != Era::Stateless => {}
            (Some(_), None) => {
                return Err(HeaderMismatch(format!(
                    "missing Mcp-Param-{name} header for argument {shown} (the tool mirrors it)"
                )));
            }
            (None, Some(_)) => {
                return Err(HeaderMismatch(format!(
                    "Mcp-Param-{name} header given, but the arguments carry no {shown}"
                )));
            }
            (Some(v), Some(raw)) => {
                let decoded = raw
                    .to_str()
                    .ok()
                    .and_then(decode_header_value)
                    .ok_or_else(|| {
                        HeaderMismatch(format!("Mcp-Param-{name} header is not decodable"))
                    })?;
                let same = match v {
                    Value::String(s) => *s == decoded,
                    Value::Bool(b) => decoded == if *b { "true" } else { "false" },
                    Value::Number(n) => match (n.as_i64(), decoded.trim().parse::<i64>()) {
                        (Some(a), Ok(b)) => a == b,
                        _ => n
                            .as_f64()
                            .zip(decoded.trim().parse::<f64>().ok())
                            .is_some_and(|(a, b)| a == b),
                    },
                    // Objects and arrays cannot be mirrored: never equal to a header.
                    _ => false,
                };
                if !same {
                    return Err(HeaderMismatch(format!(
                        "Mcp-Param-{name} header {decoded:?} does not match argument {shown} {v}"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Decode a header value, including the `=?base64?…?=` form used for values that are not
/// header-safe.
pub fn decode_header_value(raw: &str) -> Option<String> {
    if let Some(inner) = raw
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(inner)
            .ok()?;
        return String::from_utf8(bytes).ok();
    }
    Some(raw.to_owned())
}

pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::parse_message;

    fn hdrs(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    const CALL: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_pod_logs","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;

    #[test]
    fn stateless_detected_from_meta() {
        let m = parse_message(CALL).unwrap();
        assert_eq!(
            era_of(&HeaderMap::new(), &m),
            (Era::Stateless, Some("2026-07-28".into()))
        );
        let legacy = parse_message(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        let h = hdrs(&[("mcp-protocol-version", "2025-06-18")]);
        assert_eq!(
            era_of(&h, &legacy),
            (Era::Session, Some("2025-06-18".into()))
        );
    }

    #[test]
    fn header_body_mismatch_is_refused() {
        let m = parse_message(CALL).unwrap();
        let ok = hdrs(&[
            ("mcp-method", "tools/call"),
            ("mcp-name", "get_pod_logs"),
            ("mcp-protocol-version", "2026-07-28"),
        ]);
        check_headers(&ok, &m, Era::Stateless).unwrap();
        let wrong_name = hdrs(&[
            ("mcp-method", "tools/call"),
            ("mcp-name", "list_k8s_resources"),
        ]);
        assert!(check_headers(&wrong_name, &m, Era::Stateless).is_err());
        let wrong_method = hdrs(&[("mcp-method", "tools/list"), ("mcp-name", "get_pod_logs")]);
        assert!(check_headers(&wrong_method, &m, Era::Stateless).is_err());
        let missing = hdrs(&[("mcp-method", "tools/call")]);
        assert!(check_headers(&missing, &m, Era::Stateless).is_err());
        let b64 = hdrs(&[
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?Z2V0X3BvZF9sb2dz?="),
        ]);
        check_headers(&b64, &m, Era::Stateless).unwrap();
    }

    #[test]
    fn mirrored_parameter_headers_must_say_what_the_arguments_say() {
        let schema = serde_json::json!({"type": "object", "properties": {
            "cluster_name": {"type": "string", "x-mcp-header": "Cluster"},
            "replicas": {"type": "integer", "x-mcp-header": "Replicas"},
            "dry_run": {"type": "boolean", "x-mcp-header": "DryRun"},
            "target": {"type": "object", "properties": {
                "namespace": {"type": "string", "x-mcp-header": "Namespace"}}},
            "body": {"type": "object"}}});
        assert_eq!(
            mirrored_parameters(&schema),
            vec![
                (vec!["cluster_name".to_owned()], "Cluster".to_owned()),
                (vec!["replicas".to_owned()], "Replicas".to_owned()),
                (vec!["dry_run".to_owned()], "DryRun".to_owned()),
                (
                    vec!["target".to_owned(), "namespace".to_owned()],
                    "Namespace".to_owned()
                ),
            ]
        );
        let args = serde_json::json!({"cluster_name": "dev", "replicas": 3, "dry_run": false,
            "target": {"namespace": "payments"}});
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            m
        };
        let all = [
            ("mcp-param-cluster", "dev"),
            ("mcp-param-replicas", "3"),
            ("mcp-param-dryrun", "false"),
            ("mcp-param-namespace", "=?base64?cGF5bWVudHM=?="),
        ];
        let check = |pairs: &[(&str, &str)], era| {
            check_param_headers(&h(pairs), &mirrored_parameters(&schema), Some(&args), era)
        };
        assert!(check(&all, Era::Stateless).is_ok());
        // A value the policy did not evaluate.
        let mut other = all;
        other[3] = ("mcp-param-namespace", "kube-system");
        let err = check(&other, Era::Stateless).unwrap_err().0;
        assert!(
            err.contains("Mcp-Param-Namespace") && err.contains("kube-system"),
            "{err}"
        );
        other = all;
        other[1] = ("mcp-param-replicas", "30");
        assert!(check(&other, Era::Stateless).is_err());
        // Missing in the stateless era; tolerated in the session era.
        assert!(
            check(&all[..3], Era::Stateless)
                .unwrap_err()
                .0
                .contains("missing Mcp-Param-Namespace")
        );
        assert!(check(&all[..3], Era::Session).is_ok());
        // A header without its argument, and a repeated header.
        let no_ns = serde_json::json!({"cluster_name": "dev", "replicas": 3, "dry_run": false});
        assert!(
            check_param_headers(
                &h(&all),
                &mirrored_parameters(&schema),
                Some(&no_ns),
                Era::Session
            )
            .is_err()
        );
        let mut twice: Vec<(&str, &str)> = all.to_vec();
        twice.push(("mcp-param-cluster", "dev"));
        assert!(
            check(&twice, Era::Stateless)
                .unwrap_err()
                .0
                .contains("more than once")
        );
        // Undeclared Mcp-Param-* headers are not the gateway's to judge.
        let mut extra: Vec<(&str, &str)> = all.to_vec();
        extra.push(("mcp-param-region", "eu-west-1"));
        assert!(check(&extra, Era::Stateless).is_ok());
    }
}
