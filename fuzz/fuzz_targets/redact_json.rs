//! Redaction of JSON: tool results on the way back (`Redactor::redact_message`, with JSON
//! documents inside text blocks redacted structurally) and tool arguments before they are
//! audited (`Redactor::redact_value`).
//!
//! Invariants, beyond "no panic":
//! - the value changes if and only if a redaction is reported, and every change is a string
//!   that carries a `[REDACTED:<detector>]` marker: redaction never drops, adds or reorders
//!   members and items, never touches a number, boolean or null it does not replace whole;
//! - idempotence: redacting the output again changes nothing and reports nothing.
#![no_main]
use eks_mcp_gateway::jsonrpc::parse_value;
use eks_mcp_gateway_fuzz::idempotence_checked;
use eks_mcp_gateway_fuzz::{Choices, profiles, redactor};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let check_idempotence = idempotence_checked();
    let mut c = Choices::new(data);
    let profiles = profiles(c.byte());
    let shape = c.byte() % 4;
    let payload = c.rest();
    let r = redactor();
    // The payload as a JSON value, or (shape 2, or not JSON) as the text of a tool result.
    let value = parse_value(payload).ok();
    let text = || String::from_utf8_lossy(payload).into_owned();
    let (mut v, as_message) = match (shape, value) {
        (0, Some(v)) => (v, false),
        (1, Some(v)) => (v, true),
        (3, Some(v)) => (
            json!({"jsonrpc": "2.0", "id": 1, "result": {
                "content": [{"type": "text", "text": v.to_string()}],
                "structuredContent": v}}),
            true,
        ),
        _ => (
            json!({"jsonrpc": "2.0", "id": 1, "result": {
                "content": [{"type": "text", "text": text()}]}}),
            true,
        ),
    };
    let redact = |v: &mut Value| {
        if as_message {
            r.redact_message(v, &profiles)
        } else {
            r.redact_value(v, &profiles, "$")
        }
    };
    let before = v.clone();
    let found = redact(&mut v);
    assert_eq!(
        found.is_empty(),
        v == before,
        "changed without a report, or reported without a change: {found:?}"
    );
    only_markers_changed(&before, &v);

    let once = v.clone();
    if !check_idempotence {
        return;
    }
    let found_again = redact(&mut v);
    assert!(
        found_again.is_empty() && v == once,
        "redaction is not idempotent: {found_again:?}\nonce:  {once}\ntwice: {v}"
    );
});

fn only_markers_changed(before: &Value, after: &Value) {
    if before == after {
        return;
    }
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            assert!(
                a.keys().eq(b.keys()),
                "members changed: {:?} -> {:?}",
                a.keys().collect::<Vec<_>>(),
                b.keys().collect::<Vec<_>>()
            );
            for (k, x) in a {
                only_markers_changed(x, &b[k]);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "items were added or dropped");
            for (x, y) in a.iter().zip(b) {
                only_markers_changed(x, y);
            }
        }
        (_, Value::String(s)) => assert!(
            s.contains("[REDACTED:"),
            "a value changed without a marker: {before} -> {after}"
        ),
        _ => panic!("a value changed to a non-string: {before} -> {after}"),
    }
}
