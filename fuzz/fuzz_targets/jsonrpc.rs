//! The strict JSON-RPC parse every client message goes through (`jsonrpc::parse_message`).
//!
//! Invariants, beyond "no panic":
//! - a message the strict parser accepts re-serialises (`Message::to_bytes`, the bytes that
//!   are evaluated and forwarded) to bytes it accepts again, as the same value and the same
//!   kind, and serialising that again gives the same bytes;
//! - whatever the strict parser accepts, the relay's own JSON reader (`parse_value_faithful`)
//!   reads as the same value, and when that reader calls bytes "faithful", serde_json's
//!   reading of them is that value too (the relay forwards such bytes unchanged).
#![no_main]
use eks_mcp_gateway::jsonrpc::{parse_message, parse_strict, parse_value_faithful};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let strict = parse_strict(data);
    let relay = parse_value_faithful(data);
    if let Ok(v) = &strict {
        let (rv, _) = relay
            .as_ref()
            .expect("JSON the strict parser accepts is JSON the relay's reader accepts");
        assert_eq!(rv, v, "the two readers disagree on a value");
    }
    if let Ok((v, true)) = &relay {
        let plain: serde_json::Value =
            serde_json::from_slice(data).expect("faithful bytes are JSON to serde_json");
        assert_eq!(
            &plain, v,
            "bytes called faithful read differently in serde_json"
        );
    }

    let Ok(msg) = parse_message(data) else {
        return;
    };
    let bytes = msg.to_bytes();
    let again = parse_message(&bytes).unwrap_or_else(|e| {
        panic!(
            "the forwarded form of an accepted message is refused: {e:?}\n{}",
            String::from_utf8_lossy(&bytes)
        )
    });
    // serde_json reads with `float_roundtrip`, so a float comes back as the f64 it was
    // written from (without it, 18473764440749155615 went out as 1.847376444074915e+19 and
    // read back one ulp apart as 1.8473764440749154e+19: docs/fuzzing.md).
    assert_eq!(again.value, msg.value, "re-serialising changed the value");
    assert_eq!(
        again.kind, msg.kind,
        "re-serialising changed the message kind"
    );
    assert_eq!(again.to_bytes(), bytes, "serialisation is not stable");
});
