//! Redaction of free text (`Redactor::redact_text`: log lines, error messages, deny reasons).
//!
//! Invariants, beyond "no panic":
//! - the text changes if and only if a redaction is reported, and a changed text carries a
//!   `[REDACTED:<detector>]` marker;
//! - idempotence: redacting the output again changes nothing and reports nothing.
#![no_main]
use eks_mcp_gateway_fuzz::idempotence_checked;
use eks_mcp_gateway_fuzz::{Choices, profiles, redactor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let check_idempotence = idempotence_checked();
    let mut c = Choices::new(data);
    let profiles = profiles(c.byte());
    let Ok(text) = std::str::from_utf8(c.rest()) else {
        return;
    };
    let r = redactor();
    let (out, found) = r.redact_text(text, &profiles);
    assert_eq!(
        found.is_empty(),
        out == text,
        "changed without a report, or reported without a change: {found:?}"
    );
    if !found.is_empty() {
        assert!(out.contains("[REDACTED:"), "a redaction left no marker: {out:?}");
    }

    if !check_idempotence {
        return;
    }
    let (again, found_again) = r.redact_text(&out, &profiles);
    assert!(
        found_again.is_empty() && again == out,
        "redaction is not idempotent: {found_again:?}\nonce:  {out:?}\ntwice: {again:?}"
    );
});
