//! Host / Origin check: DNS-rebinding protection, the first thing a request on the MCP
//! listener meets (only the operational endpoints are outside it). A browser page must not
//! be able to reach the gateway through a hostname it controls, nor from an origin that is
//! not allowed: such a request gets 403 whatever else is true of it (a full gateway too).
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use tower::Service;
use tower::layer::{Layer, layer_fn};

use super::stack::{Answer, Connection, Next, answer, pass, ready};
use crate::config::{SecurityConfig, is_loopback_host};
use crate::pipeline::{GatewayBody, json_error_status};

/// Refuse a request whose `Host` or `Origin` the configuration does not allow (403).
pub(super) fn layer<S>(
    security: Arc<SecurityConfig>,
    conn: Connection,
) -> impl Layer<S, Service = HostCheck<S>> + Clone {
    layer_fn(move |inner: S| HostCheck {
        inner,
        security: security.clone(),
        conn,
    })
}

#[derive(Clone)]
pub(super) struct HostCheck<S> {
    inner: S,
    security: Arc<SecurityConfig>,
    conn: Connection,
}

impl<S, B> Service<Request<B>> for HostCheck<S>
where
    S: Next<Request<B>>,
    B: Send + 'static,
{
    type Response = Response<GatewayBody>;
    type Error = std::convert::Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready()
    }

    fn call(&mut self, req: Request<B>) -> Answer {
        match host_origin_refusal(&self.security, req.headers(), req.uri(), self.conn.local) {
            None => pass(&self.inner, req),
            Some(why) => {
                let peer = self.conn.peer;
                tracing::warn!(%peer, "refused request with a disallowed Host or Origin");
                answer(json_error_status(
                    StatusCode::FORBIDDEN,
                    None,
                    crate::jsonrpc::INVALID_REQUEST,
                    why,
                ))
            }
        }
    }
}

/// Why a request's `Host` (or URI authority) or `Origin` is refused on a listener at
/// `local`, or `None` when both are acceptable. Public for the `headers` fuzz target.
#[doc(hidden)]
pub fn host_origin_refusal(
    sec: &SecurityConfig,
    headers: &http::HeaderMap,
    uri: &http::Uri,
    local: SocketAddr,
) -> Option<&'static str> {
    let host = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let host_ok = match host {
        None => false,
        Some(h) if !sec.allowed_hosts.is_empty() => {
            let bare = strip_port(h);
            sec.allowed_hosts
                .iter()
                .any(|a| a.eq_ignore_ascii_case(h) || a.eq_ignore_ascii_case(bare))
        }
        Some(h) => !local.ip().is_loopback() || is_loopback_host(strip_port(h)),
    };
    if !host_ok {
        return Some("Host header not allowed (security.allowed_hosts)");
    }
    if let Some(origin) = headers.get(http::header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let allowed = sec
            .allowed_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
            || (sec.allowed_origins.is_empty()
                && origin_is_loopback(origin)
                && local.ip().is_loopback());
        if !allowed {
            return Some("Origin not allowed (security.allowed_origins)");
        }
    }
    None
}

/// The host of a `Host` value (`host`, `host:port`, `[v6]`, `[v6]:port`). A value of any
/// other shape (userinfo, text after the brackets) is returned whole, so it matches no
/// loopback name: the fuzz target `headers` found `[::1]:8i@)` accepted as `::1`, which an
/// authority parser reads as the host `)`.
fn strip_port(host: &str) -> &str {
    let port_ok = |p: &str| p.is_empty() || p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((v6, after))
                if after.is_empty() || after.strip_prefix(':').is_some_and(port_ok) =>
            {
                v6
            }
            _ => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn origin_is_loopback(origin: &str) -> bool {
    origin
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(is_loopback_host))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt as _;

    #[test]
    fn ports_are_stripped_for_host_checks() {
        assert_eq!(strip_port("localhost:8080"), "localhost");
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("example.com"), "example.com");
        assert!(origin_is_loopback("http://127.0.0.1:3000"));
        assert!(!origin_is_loopback("http://evil.example"));
    }

    /// From the fuzz target `headers`: a bracketed host followed by anything but a port is
    /// not a loopback Host (an authority parser reads `[::1]:8i@)` as the host `)`).
    #[test]
    fn a_host_of_another_shape_is_not_loopback() {
        let sec = SecurityConfig::default();
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let uri = http::Uri::from_static("/mcp");
        let refusal = |host: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::HOST, host.parse().unwrap());
            host_origin_refusal(&sec, &h, &uri, local)
        };
        for bad in [
            "[::1]:8i@)",
            "[::1]x",
            "[::1]:80@evil.example",
            "localhost.evil.example",
        ] {
            assert!(refusal(bad).is_some(), "{bad} accepted");
        }
        for good in ["[::1]", "[::1]:8080", "localhost:8080", "127.0.0.1"] {
            assert_eq!(refusal(good), None, "{good} refused");
        }
    }

    /// Alone: a refused Host never reaches the inner service; an allowed one does.
    #[tokio::test]
    async fn a_refused_host_never_reaches_the_inner_service() {
        let reached = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = reached.clone();
        let inner = tower::service_fn(move |_req: Request<()>| {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {
                Ok::<_, std::convert::Infallible>(crate::pipeline::plain_status(
                    StatusCode::OK,
                    "in",
                ))
            }
        });
        let conn = Connection {
            peer: "127.0.0.1:50000".parse().unwrap(),
            local: "127.0.0.1:8080".parse().unwrap(),
        };
        let svc = layer(Arc::new(SecurityConfig::default()), conn).layer(inner);
        let with_host = |h: &str| Request::get("/mcp").header("host", h).body(()).unwrap();
        let bad = svc
            .clone()
            .oneshot(with_host("evil.example"))
            .await
            .unwrap();
        assert_eq!(bad.status(), StatusCode::FORBIDDEN);
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0);
        let good = svc.oneshot(with_host("localhost:8080")).await.unwrap();
        assert_eq!(good.status(), StatusCode::OK);
        assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
