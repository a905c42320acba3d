//! The header cross-checks of a POSTed message: `Mcp-Method` / `Mcp-Name` /
//! `MCP-Protocol-Version` against the body (`mcp::era_of`, `mcp::check_headers`,
//! `mcp::decode_header_value`) and the DNS-rebinding check on `Host` and `Origin`
//! (`front::host_origin_refusal`).
//!
//! Invariants, beyond "no panic":
//! - a request the cross-check accepts never has an `Mcp-Method` header that differs from the
//!   body's method, nor an `Mcp-Name` that decodes to anything but the body's target name;
//!   in the stateless era both are present where the protocol requires them;
//! - `=?base64?…?=` encoding of any UTF-8 name decodes back to that name;
//! - on a loopback listener without `allowed_hosts`, an accepted `Host` names a loopback host
//!   as a browser would read it, and an accepted `Origin` is a loopback origin.
#![no_main]
use std::net::SocketAddr;

use base64::Engine as _;

use eks_mcp_gateway::config::{SecurityConfig, is_loopback_host};
use eks_mcp_gateway::front::host_origin_refusal;
use eks_mcp_gateway::jsonrpc::parse_message;
use eks_mcp_gateway::mcp::{self, check_headers, decode_header_value, era_of};
use eks_mcp_gateway::policy::Era;
use eks_mcp_gateway_fuzz::Choices;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 6] = [
    mcp::H_METHOD,
    mcp::H_NAME,
    mcp::H_PROTOCOL_VERSION,
    mcp::H_SESSION_ID,
    "host",
    "origin",
];

fuzz_target!(|data: &[u8]| {
    let mut c = Choices::new(data);
    // Up to four header values, each a length-prefixed slice, then the body.
    let mut headers = HeaderMap::new();
    for _ in 0..c.below(5) {
        let name = HeaderName::from_static(NAMES[c.below(NAMES.len())]);
        let len = c.below(64);
        let raw = c.take(len);
        let value = if c.byte() % 4 == 0 {
            // The encoded form of whatever the bytes spell.
            let s = String::from_utf8_lossy(raw);
            let enc = base64_encode(s.as_bytes());
            assert_eq!(
                decode_header_value(&format!("=?base64?{enc}?=")).as_deref(),
                Some(s.as_ref()),
                "a base64-encoded header value does not decode to itself"
            );
            HeaderValue::from_str(&format!("=?base64?{enc}?=")).ok()
        } else {
            HeaderValue::from_bytes(raw).ok()
        };
        if let Some(v) = value {
            headers.append(name, v);
        }
    }
    let listener: SocketAddr = if c.byte() % 2 == 0 {
        "127.0.0.1:8080".parse().unwrap()
    } else {
        "10.0.0.1:8080".parse().unwrap()
    };
    check_host_origin(&headers, listener);

    let Ok(msg) = parse_message(c.rest()) else {
        return;
    };
    let (era, _) = era_of(&headers, &msg);
    if check_headers(&headers, &msg, era).is_err() {
        return;
    }
    let Some(method) = msg.method() else {
        return;
    };
    let stateless = era == Era::Stateless;
    match mcp::header_str(&headers, mcp::H_METHOD) {
        Some(h) => assert_eq!(
            h, method,
            "accepted an Mcp-Method that differs from the body"
        ),
        None => assert!(
            !(stateless && msg.id().is_some()),
            "accepted a stateless request without Mcp-Method"
        ),
    }
    if matches!(method, "tools/call" | "resources/read" | "prompts/get") {
        match headers.get(mcp::H_NAME) {
            Some(raw) => {
                let decoded = raw.to_str().ok().and_then(decode_header_value);
                assert_eq!(
                    decoded.as_deref(),
                    Some(msg.target_name().unwrap_or_default()),
                    "accepted an Mcp-Name that differs from the body's target"
                );
            }
            None => assert!(!stateless, "accepted a stateless {method} without Mcp-Name"),
        }
    }
});

fn check_host_origin(headers: &HeaderMap, listener: SocketAddr) {
    let sec = SecurityConfig::default();
    let uri = http::Uri::from_static("/mcp");
    if host_origin_refusal(&sec, headers, &uri, listener).is_some() || !listener.ip().is_loopback()
    {
        return;
    }
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .expect("a request without a Host is refused");
    // A browser reads Host as an authority; one it can send must name a loopback host.
    if let Ok(authority) = host.parse::<http::uri::Authority>() {
        assert!(
            is_loopback_host(authority.host()),
            "Host {host:?} accepted on a loopback listener names {:?}",
            authority.host()
        );
    }
    if let Some(origin) = headers.get("origin") {
        let origin = origin.to_str().expect("a non-text Origin is refused");
        let parsed: http::Uri = origin.parse().expect("an unparseable Origin is refused");
        assert!(
            parsed.host().is_some_and(is_loopback_host),
            "Origin {origin:?} accepted on a loopback listener"
        );
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
