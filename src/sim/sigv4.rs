//! SigV4 verification for the simulator: the AWS front door of the hosted EKS MCP server.
//!
//! Recomputes the signature with `aws-sigv4` over exactly what the client signed (method,
//! path and query, the headers named in `SignedHeaders`, the SHA-256 of the body, the time in
//! `X-Amz-Date`) and compares. Failures are answered the way AWS answers them: HTTP 403, a JSON
//! `{"message": …}` body and an `x-amzn-ErrorType` header. The secret key never leaves this
//! module and no error message contains it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::HeaderMap;

use super::SimCredentials;

/// How far `X-Amz-Date` may be from the server clock.
const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// Why a request was refused, with the AWS error type it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignatureFailure {
    pub error_type: &'static str,
    pub message: String,
}

impl SignatureFailure {
    fn new(error_type: &'static str, message: impl Into<String>) -> Self {
        Self {
            error_type,
            message: message.into(),
        }
    }

    fn mismatch() -> Self {
        Self::new(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        )
    }

    fn invalid_token() -> Self {
        Self::new(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    }
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 …` header.
struct AuthorizationHeader<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<AuthorizationHeader<'_>, SignatureFailure> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(|| {
        SignatureFailure::new(
            "IncompleteSignatureException",
            "Authorization header requires the AWS4-HMAC-SHA256 algorithm.",
        )
    })?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let mut missing = Vec::new();
    for (name, v) in [
        ("Credential", credential),
        ("Signature", signature),
        ("SignedHeaders", signed),
    ] {
        if v.is_none_or(str::is_empty) {
            missing.push(format!("Authorization header requires '{name}' parameter."));
        }
    }
    if !missing.is_empty() {
        return Err(SignatureFailure::new(
            "IncompleteSignatureException",
            missing.join(" "),
        ));
    }
    let credential = credential.unwrap_or_default();
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[4] != "aws4_request" {
        return Err(SignatureFailure::new(
            "IncompleteSignatureException",
            format!(
                "Credential should be of the form AKID/YYYYMMDD/region/service/aws4_request, got '{credential}'."
            ),
        ));
    }
    Ok(AuthorizationHeader {
        access_key_id: scope[0],
        date: scope[1],
        region: scope[2],
        service: scope[3],
        signed_headers: signed.unwrap_or_default().split(';').collect(),
        signature: signature.unwrap_or_default(),
    })
}

/// Parse `20261125T101500Z`.
fn parse_amz_date(value: &str) -> Option<SystemTime> {
    let b = value.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| value.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, s) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days from civil (inverse of world::civil_from_days).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2.rem_euclid(400);
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

fn format_amz_date(t: SystemTime) -> String {
    super::world::rfc3339(t).replace(['-', ':'], "")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the verifier needs to know besides the request.
pub(crate) struct Verifier<'a> {
    pub credentials: &'a SimCredentials,
    /// Session tokens that were valid once and have been rotated away.
    pub expired_tokens: &'a [String],
    pub region: &'a str,
    pub service: &'a str,
    pub now: SystemTime,
}

impl Verifier<'_> {
    /// Verify one request. `path_and_query` is the request target as received.
    pub fn verify(
        &self,
        method: &str,
        authority: Option<&str>,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), SignatureFailure> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let Some(authorization) = headers.get(http::header::AUTHORIZATION) else {
            return Err(SignatureFailure::new(
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            ));
        };
        let authorization = authorization
            .to_str()
            .map_err(|_| SignatureFailure::mismatch())?;
        let auth = parse_authorization(authorization)?;

        if auth.access_key_id != self.credentials.access_key_id {
            return Err(SignatureFailure::invalid_token());
        }
        let token = header("x-amz-security-token");
        match (&self.credentials.session_token, token) {
            (Some(expected), Some(got))
                if constant_time_eq(expected.as_bytes(), got.as_bytes()) => {}
            (_, Some(got)) if self.expired_tokens.iter().any(|t| t == got) => {
                return Err(SignatureFailure::new(
                    "ExpiredTokenException",
                    "The security token included in the request is expired",
                ));
            }
            (None, None) => {}
            _ => return Err(SignatureFailure::invalid_token()),
        }

        let Some(amz_date) = header("x-amz-date") else {
            return Err(SignatureFailure::new(
                "IncompleteSignatureException",
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
            ));
        };
        let signed_at = parse_amz_date(amz_date).ok_or_else(|| {
            SignatureFailure::new(
                "IncompleteSignatureException",
                format!("Date must be in ISO-8601 'basic format'. Got '{amz_date}'."),
            )
        })?;
        if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
            return Err(SignatureFailure::new(
                "InvalidSignatureException",
                format!(
                    "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from 'X-Amz-Date'.",
                    auth.date,
                    &amz_date[..8]
                ),
            ));
        }
        if auth.region != self.region {
            return Err(SignatureFailure::new(
                "InvalidSignatureException",
                format!(
                    "Credential should be scoped to a valid region. Expected '{}'.",
                    self.region
                ),
            ));
        }
        if auth.service != self.service {
            return Err(SignatureFailure::new(
                "InvalidSignatureException",
                format!(
                    "Credential should be scoped to correct service: '{}'. ",
                    self.service
                ),
            ));
        }
        let now = format_amz_date(self.now);
        if signed_at + MAX_SKEW < self.now {
            return Err(SignatureFailure::new(
                "InvalidSignatureException",
                format!(
                    "Signature expired: {amz_date} is now earlier than {} ({now} - 5 min.)",
                    format_amz_date(self.now - MAX_SKEW)
                ),
            ));
        }
        if signed_at > self.now + MAX_SKEW {
            return Err(SignatureFailure::new(
                "InvalidSignatureException",
                format!(
                    "Signature not yet current: {amz_date} is still later than {} ({now} + 5 min.)",
                    format_amz_date(self.now + MAX_SKEW)
                ),
            ));
        }

        // Recompute over exactly the headers the client says it signed.
        let mut signed_headers: Vec<(&str, &str)> = Vec::new();
        for name in &auth.signed_headers {
            if *name == "host" && headers.get("host").is_none() {
                continue; // HTTP/2: the signer takes the host from the URI authority below.
            }
            for value in headers.get_all(*name) {
                let value = value.to_str().map_err(|_| SignatureFailure::mismatch())?;
                signed_headers.push((name, value));
            }
        }
        let uri = match (headers.get("host"), authority) {
            (None, Some(authority)) => format!("http://{authority}{path_and_query}"),
            _ => path_and_query.to_owned(),
        };
        let creds = Credentials::new(
            auth.access_key_id,
            self.credentials.secret_access_key.clone(),
            self.credentials.session_token.clone(),
            None,
            "eks-mcp-sim",
        );
        let identity: Identity = creds.into();
        let mut settings = SigningSettings::default();
        settings.excluded_headers = None;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.region)
            .name(self.service)
            .time(signed_at)
            .settings(settings)
            .build()
            .map_err(|_| SignatureFailure::mismatch())?
            .into();
        let signable = SignableRequest::new(
            method,
            uri,
            signed_headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|_| SignatureFailure::mismatch())?;
        let expected = sign(signable, &params).map_err(|_| SignatureFailure::mismatch())?;
        if constant_time_eq(expected.signature().as_bytes(), auth.signature.as_bytes()) {
            Ok(())
        } else {
            Err(SignatureFailure::mismatch())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_round_trip() {
        let t = parse_amz_date("20261125T101500Z").unwrap();
        assert_eq!(format_amz_date(t), "20261125T101500Z");
        assert!(parse_amz_date("2026-11-25T10:15:00Z").is_none());
        assert!(parse_amz_date("20261325T101500Z").is_none());
    }

    #[test]
    fn authorization_header_parts_are_required() {
        let err = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKID/20261125/us-west-2/eks-mcp/aws4_request",
        )
        .err()
        .unwrap();
        assert_eq!(err.error_type, "IncompleteSignatureException");
        assert!(err.message.contains("'Signature'"));
        let ok = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKID/20261125/us-west-2/eks-mcp/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc",
        )
        .unwrap();
        assert_eq!(ok.signed_headers, ["host", "x-amz-date"]);
        assert_eq!(ok.service, "eks-mcp");
    }
}
