//! The embedded EKS MCP simulator, driven with raw HTTP requests (no gateway in between):
//! both protocol eras, SSE, sessions and streams, world mutations, SigV4 verification.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use eks_mcp_gateway::sim::{
    self, ResponseMode, SimConfig, SimCredentials, SimHandle, ToolNames, planted,
};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

const STATELESS: &str = "2026-07-28";
const ACCEPT_BOTH: &str = "application/json, text/event-stream";

async fn start(cfg: SimConfig) -> SimHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    sim::start(cfg, listener).await.unwrap()
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("JSON body ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The JSON-RPC messages of the reply, whether JSON or SSE.
    fn messages(&self) -> Vec<Value> {
        if self.content_type().starts_with("text/event-stream") {
            sse_events(&String::from_utf8_lossy(&self.body))
                .into_iter()
                .filter(|e| !e.data.is_empty())
                .map(|e| serde_json::from_str(&e.data).unwrap())
                .collect()
        } else {
            vec![self.json()]
        }
    }

    /// Text of every content block of a tools/call result.
    fn tool_text(&self) -> String {
        let msg = self.messages().pop().unwrap();
        msg["result"]["content"]
            .as_array()
            .unwrap_or_else(|| panic!("not a tool result: {msg}"))
            .iter()
            .map(|c| c["text"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[derive(Debug, Default)]
struct SseEvent {
    id: Option<String>,
    retry: Option<String>,
    data: String,
    comment: bool,
}

/// Split an SSE text into events (and comment lines, kept as events with `comment: true`).
fn sse_events(text: &str) -> Vec<SseEvent> {
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let mut ev = SseEvent::default();
        let mut data = Vec::new();
        for line in block.lines() {
            if line.starts_with(':') {
                ev.comment = true;
            } else if let Some(v) = line.strip_prefix("id:") {
                ev.id = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("retry:") {
                ev.retry = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
            }
        }
        ev.data = data.join("\n");
        out.push(ev);
    }
    out
}

async fn send(req: Request<Full<Bytes>>) -> Reply {
    let resp = tokio::time::timeout(Duration::from_secs(30), client().request(req))
        .await
        .expect("simulator answered")
        .expect("HTTP exchange");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

async fn post(url: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
    let mut b = Request::post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT_BOTH);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(b.body(Full::new(Bytes::from(body.to_string()))).unwrap()).await
}

fn rpc(id: i64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// `initialize` + `notifications/initialized`; returns the session id.
async fn initialize(url: &str) -> String {
    let reply = post(
        url,
        &rpc(1, "initialize", json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "sim-test", "version": "1"}})),
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["result"]["protocolVersion"], "2025-11-25");
    let sid = reply.headers["mcp-session-id"].to_str().unwrap().to_owned();
    assert!(sid.len() >= 32 && sid.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    let ack = post(
        url,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        &[
            ("mcp-session-id", &sid),
            ("mcp-protocol-version", "2025-11-25"),
        ],
    )
    .await;
    assert_eq!(ack.status, StatusCode::ACCEPTED);
    sid
}

async fn session_call(url: &str, sid: &str, id: i64, method: &str, params: Value) -> Reply {
    post(
        url,
        &rpc(id, method, params),
        &[
            ("mcp-session-id", sid),
            ("mcp-protocol-version", "2025-11-25"),
        ],
    )
    .await
}

fn stateless_body(id: i64, method: &str, mut params: Value) -> Value {
    params["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!(STATELESS);
    rpc(id, method, params)
}

#[tokio::test]
async fn session_era_lifecycle_serves_hosted_tools_and_planted_secrets() {
    let sim = start(SimConfig::default()).await;
    let url = sim.url();
    assert!(url.ends_with("/mcp"));

    let no_session = post(&url, &rpc(1, "tools/list", json!({})), &[]).await;
    assert_eq!(no_session.status, StatusCode::BAD_REQUEST);

    let sid = initialize(&url).await;
    let list = session_call(&url, &sid, 2, "tools/list", json!({})).await;
    let tools = list.json()["result"]["tools"].as_array().unwrap().clone();
    assert_eq!(tools.len(), 20);
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    for expected in [
        "read_k8s_resource",
        "list_eks_resources",
        "describe_eks_resource",
        "search_eks_documentation",
        "search_eks_troubleshooting_guide",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    let hint = |name: &str| {
        tools.iter().find(|t| t["name"] == name).unwrap()["annotations"]["readOnlyHint"].clone()
    };
    assert_eq!(hint("get_pod_logs"), true);
    assert_eq!(hint("apply_yaml"), false);

    let logs = session_call(
        &url,
        &sid,
        3,
        "tools/call",
        json!({"name": "get_pod_logs", "arguments": {"cluster_name": "prod", "namespace": "payments", "pod_name": sim::CRASHLOOP_POD}}),
    )
    .await;
    assert_eq!(logs.status, StatusCode::OK);
    let text = logs.tool_text();
    assert!(text.starts_with("Successfully retrieved"), "{text}");
    for secret in planted::ALL {
        assert!(
            text.contains(secret),
            "the upstream returns {secret} unredacted"
        );
    }
    assert_eq!(sim.tool_calls()[0].0, "get_pod_logs");
    assert_eq!(sim.tool_calls()[0].1["cluster_name"], "prod");

    let unknown_cluster = session_call(
        &url,
        &sid,
        4,
        "tools/call",
        json!({"name": "list_k8s_resources", "arguments": {"cluster_name": "nope", "kind": "Pod", "api_version": "v1"}}),
    )
    .await;
    let result = &unknown_cluster.json()["result"];
    assert_eq!(result["isError"], true);
    assert_eq!(result["content"].as_array().unwrap().len(), 1);

    let delete = send(
        Request::delete(&url)
            .header("mcp-session-id", &sid)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(delete.status, StatusCode::OK);
    let after = session_call(&url, &sid, 5, "tools/list", json!({})).await;
    assert_eq!(after.status, StatusCode::NOT_FOUND);
    assert_eq!(sim.session_count(), 0);
    let methods: Vec<Option<String>> = sim
        .received()
        .iter()
        .map(|r| r.rpc_method.clone())
        .collect();
    assert!(methods.contains(&Some("notifications/initialized".into())));
}

#[tokio::test]
async fn stateless_era_validates_headers_and_versions() {
    let sim = start(SimConfig::default()).await;
    let url = sim.url();
    let headers = |method: &'static str, name: Option<&'static str>| {
        let mut h = vec![("mcp-protocol-version", STATELESS), ("mcp-method", method)];
        if let Some(n) = name {
            h.push(("mcp-name", n));
        }
        h
    };

    let discover = post(
        &url,
        &stateless_body(1, "server/discover", json!({})),
        &headers("server/discover", None),
    )
    .await;
    assert_eq!(discover.status, StatusCode::OK);
    let d = discover.json();
    assert!(
        d["result"]["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!(STATELESS))
    );
    assert!(
        discover.headers.get("mcp-session-id").is_none(),
        "no sessions in the stateless era"
    );

    let list = post(
        &url,
        &stateless_body(2, "tools/list", json!({})),
        &headers("tools/list", None),
    )
    .await
    .json();
    assert!(list["result"]["ttlMs"].is_u64());
    assert!(list["result"]["cacheScope"].is_string());

    let args = json!({"name": "list_k8s_resources", "arguments": {"cluster_name": "dev", "kind": "Pod", "api_version": "v1"}});
    let call = post(
        &url,
        &stateless_body(3, "tools/call", args.clone()),
        &headers("tools/call", Some("list_k8s_resources")),
    )
    .await;
    assert_eq!(call.status, StatusCode::OK);
    assert_eq!(call.json()["result"]["resultType"], "complete");
    assert!(call.tool_text().contains("resources in all namespaces"));

    let wrong_name = post(
        &url,
        &stateless_body(4, "tools/call", args.clone()),
        &headers("tools/call", Some("get_pod_logs")),
    )
    .await;
    assert_eq!(wrong_name.status, StatusCode::BAD_REQUEST);
    assert_eq!(wrong_name.json()["error"]["code"], -32020);

    let encoded = post(
        &url,
        &stateless_body(5, "tools/call", args.clone()),
        &headers("tools/call", Some("=?base64?bGlzdF9rOHNfcmVzb3VyY2Vz?=")),
    )
    .await;
    assert_eq!(
        encoded.status,
        StatusCode::OK,
        "base64 Mcp-Name is decoded before comparing"
    );

    let no_method = post(
        &url,
        &stateless_body(6, "tools/call", args.clone()),
        &[
            ("mcp-protocol-version", STATELESS),
            ("mcp-name", "list_k8s_resources"),
        ],
    )
    .await;
    assert_eq!(no_method.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_method.json()["error"]["code"], -32020);

    let mut old = stateless_body(7, "tools/list", json!({}));
    old["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2030-01-01");
    let unsupported = post(
        &url,
        &old,
        &[
            ("mcp-protocol-version", "2030-01-01"),
            ("mcp-method", "tools/list"),
        ],
    )
    .await;
    assert_eq!(unsupported.status, StatusCode::BAD_REQUEST);
    let err = unsupported.json()["error"].clone();
    assert_eq!(err["code"], -32022);
    assert_eq!(err["data"]["requested"], "2030-01-01");

    let unknown = post(
        &url,
        &stateless_body(8, "nope/nothing", json!({})),
        &headers("nope/nothing", None),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["error"]["code"], -32601);

    let no_accept = send(
        Request::post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(
                stateless_body(9, "tools/list", json!({})).to_string(),
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(no_accept.status, StatusCode::NOT_ACCEPTABLE);
}

#[tokio::test]
async fn sse_mode_sends_progress_before_the_result() {
    let sim = start(SimConfig {
        response_mode: ResponseMode::Sse,
        ..SimConfig::default()
    })
    .await;
    let url = sim.url();
    let body = stateless_body(
        11,
        "tools/call",
        json!({"name": "list_eks_resources", "arguments": {"resource_type": "cluster"}, "_meta": {"progressToken": "tok-1"}}),
    );
    let reply = post(
        &url,
        &body,
        &[
            ("mcp-protocol-version", STATELESS),
            ("mcp-method", "tools/call"),
            ("mcp-name", "list_eks_resources"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.content_type().starts_with("text/event-stream"));
    assert_eq!(reply.headers["x-accel-buffering"], "no");
    let messages = reply.messages();
    let (last, before) = messages.split_last().unwrap();
    assert_eq!(last["id"], 11);
    assert!(
        last["result"]["content"][1]["text"]
            .as_str()
            .unwrap()
            .contains("staging")
    );
    assert!(!before.is_empty());
    for m in before {
        assert_eq!(m["method"], "notifications/progress");
        assert_eq!(m["params"]["progressToken"], "tok-1");
    }

    // Auto mode answers JSON when no progress is asked for.
    let auto = start(SimConfig::default()).await;
    let plain = stateless_body(12, "tools/list", json!({}));
    let reply = post(
        &auto.url(),
        &plain,
        &[
            ("mcp-protocol-version", STATELESS),
            ("mcp-method", "tools/list"),
        ],
    )
    .await;
    assert!(reply.content_type().starts_with("application/json"));
}

#[tokio::test]
async fn get_stream_primes_then_carries_notifications_and_keepalives() {
    let sim = start(SimConfig {
        keepalive: Duration::from_millis(50),
        ..SimConfig::default()
    })
    .await;
    let url = sim.url();
    let sid = initialize(&url).await;
    let http = client();
    let resp = http
        .request(
            Request::get(&url)
                .header("accept", "text/event-stream")
                .header("mcp-session-id", &sid)
                .header("mcp-protocol-version", "2025-11-25")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();

    let second = send(
        Request::get(&url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &sid)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    );
    assert_eq!(
        second.await.status,
        StatusCode::CONFLICT,
        "one GET stream per session"
    );

    // A namespace create changes the resource list and logs a message for the session.
    let create = session_call(
        &url,
        &sid,
        2,
        "tools/call",
        json!({"name": "manage_k8s_resource", "arguments": {"operation": "create", "cluster_name": "dev", "kind": "Namespace", "api_version": "v1", "body": {"metadata": {"name": "team-x"}}}}),
    )
    .await;
    assert_eq!(create.json()["result"]["isError"], false);

    let mut text = String::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
            let events = sse_events(&text);
            if events.iter().any(|e| e.comment)
                && events.iter().any(|e| e.data.contains("list_changed"))
            {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("stream delivered its events");
    let events = sse_events(&text);
    let priming = &events[0];
    assert!(
        priming.id.is_some() && priming.data.is_empty() && priming.retry.is_some(),
        "{priming:?}"
    );
    let methods: Vec<String> = events
        .iter()
        .filter(|e| !e.data.is_empty())
        .map(|e| {
            serde_json::from_str::<Value>(&e.data).unwrap()["method"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        methods.contains(&"notifications/message".to_owned()),
        "{methods:?}"
    );
    assert!(methods.contains(&"notifications/resources/list_changed".to_owned()));
    assert!(
        events
            .iter()
            .filter(|e| !e.data.is_empty())
            .all(|e| e.id.is_some()),
        "events carry ids"
    );

    // DELETE ends the stream.
    let delete = send(
        Request::delete(&url)
            .header("mcp-session-id", &sid)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(delete.status, StatusCode::OK);
    let ended = async {
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .expect("stream ends with the session");
}

#[tokio::test]
async fn privileged_tools_mutate_the_shared_world() {
    let sim = start(SimConfig::default()).await;
    let url = sim.url();
    let sid = initialize(&url).await;
    let create = session_call(
        &url,
        &sid,
        2,
        "tools/call",
        json!({"name": "manage_k8s_resource", "arguments": {
            "operation": "create", "cluster_name": "staging", "kind": "ConfigMap", "api_version": "v1",
            "body": {"metadata": {"name": "feature-flags", "namespace": "checkout"}, "data": {"dark_mode": "on"}}}}),
    )
    .await;
    assert_eq!(
        create.tool_text().lines().next().unwrap(),
        "Successfully created ConfigMap checkout/feature-flags"
    );

    // Read it back in the other era: the world is per server, not per session.
    let read = post(
        &url,
        &stateless_body(3, "tools/call", json!({"name": "read_k8s_resource", "arguments": {
            "cluster_name": "staging", "kind": "ConfigMap", "api_version": "v1", "name": "feature-flags", "namespace": "checkout"}})),
        &[("mcp-protocol-version", STATELESS), ("mcp-method", "tools/call"), ("mcp-name", "read_k8s_resource")],
    )
    .await;
    let msg = read.json();
    let data: Value =
        serde_json::from_str(msg["result"]["content"][1]["text"].as_str().unwrap()).unwrap();
    assert_eq!(data["resource"]["data"]["dark_mode"], "on");

    let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 1}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: checkout}\nstringData: {token: abc}\n";
    let apply = session_call(
        &url,
        &sid,
        4,
        "tools/call",
        json!({"name": "apply_yaml", "arguments": {"cluster_name": "staging", "namespace": "payments", "yaml_content": yaml}}),
    )
    .await;
    assert!(
        apply.tool_text().contains("(2 created, 0 updated)"),
        "{}",
        apply.tool_text()
    );
    let secret = sim.with_world(|w| w.object("staging", "v1", "Secret", Some("checkout"), "s"));
    assert_eq!(
        secret.unwrap()["data"]["token"],
        "YWJj",
        "stringData is stored base64 in data"
    );
    assert!(
        sim.with_world(|w| w.object("dev", "v1", "Secret", Some("checkout"), "s"))
            .is_none()
    );
    let listed = session_call(
        &url,
        &sid,
        5,
        "tools/call",
        json!({"name": "list_k8s_resources", "arguments": {"cluster_name": "staging", "kind": "Deployment", "api_version": "apps/v1", "namespace": "payments"}}),
    )
    .await;
    assert!(
        listed.tool_text().contains("\"name\":\"web\""),
        "the manifest's default namespace was used"
    );
}

fn signed_request(
    url: &str,
    body: &Value,
    creds: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Request<Full<Bytes>> {
    let uri: http::Uri = url.parse().unwrap();
    let body = Bytes::from(body.to_string());
    let mut req = Request::post(url)
        .header("host", uri.authority().unwrap().as_str())
        .header("content-type", "application/json")
        .header("accept", ACCEPT_BOTH)
        .header("content-length", body.len().to_string())
        .body(Full::new(body.clone()))
        .unwrap();
    let identity: Identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    let signable = SignableRequest::new(
        "POST",
        uri.path().to_owned(),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(&body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    instructions.apply_to_request_http1x(&mut req);
    req
}

#[tokio::test]
async fn sigv4_is_verified_like_aws() {
    let sim_creds = SimCredentials {
        access_key_id: "AKIASIMULATEDKEY0001".into(),
        secret_access_key: "c2ltdWxhdGVkLXNlY3JldC1mb3ItdGVzdHMtb25seQ".into(),
        session_token: Some("session-token-1".into()),
    };
    let sim = start(SimConfig {
        credentials: Some(sim_creds.clone()),
        ..SimConfig::default()
    })
    .await;
    let url = sim.url();
    let creds = Credentials::new(
        &sim_creds.access_key_id,
        &sim_creds.secret_access_key,
        sim_creds.session_token.clone(),
        None,
        "test",
    );
    let body = stateless_body(1, "server/discover", json!({}));
    let now = SystemTime::now();

    let unsigned = post(
        &url,
        &body,
        &[
            ("mcp-protocol-version", STATELESS),
            ("mcp-method", "server/discover"),
        ],
    )
    .await;
    assert_eq!(unsigned.status, StatusCode::FORBIDDEN);
    assert_eq!(
        unsigned.headers["x-amzn-errortype"],
        "MissingAuthenticationTokenException"
    );

    let mut good = signed_request(&url, &body, &creds, "us-west-2", "eks-mcp", now);
    good.headers_mut()
        .insert("mcp-protocol-version", STATELESS.parse().unwrap());
    // Unsigned headers may be added after signing; signed ones may not change.
    good.headers_mut()
        .insert("mcp-method", "server/discover".parse().unwrap());
    let ok = send(good).await;
    assert_eq!(
        ok.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&ok.body)
    );
    assert_eq!(sim.verified_requests(), 1);

    let mut tampered = signed_request(&url, &body, &creds, "us-west-2", "eks-mcp", now);
    *tampered.body_mut() = Full::new(Bytes::from(
        stateless_body(1, "tools/list", json!({})).to_string(),
    ));
    tampered.headers_mut().remove("content-length");
    let bad = send(tampered).await;
    assert_eq!(bad.status, StatusCode::FORBIDDEN);
    assert_eq!(bad.headers["x-amzn-errortype"], "InvalidSignatureException");
    assert!(
        bad.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("The request signature we calculated does not match")
    );

    let wrong_secret = Credentials::new(
        &sim_creds.access_key_id,
        "not-the-secret",
        sim_creds.session_token.clone(),
        None,
        "test",
    );
    let bad = send(signed_request(
        &url,
        &body,
        &wrong_secret,
        "us-west-2",
        "eks-mcp",
        now,
    ))
    .await;
    assert_eq!(bad.headers["x-amzn-errortype"], "InvalidSignatureException");

    let stale = send(signed_request(
        &url,
        &body,
        &creds,
        "us-west-2",
        "eks-mcp",
        now - Duration::from_secs(600),
    ))
    .await;
    assert_eq!(stale.status, StatusCode::FORBIDDEN);
    assert!(
        stale.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("Signature expired")
    );

    let wrong_service = send(signed_request(
        &url,
        &body,
        &creds,
        "us-west-2",
        "execute-api",
        now,
    ))
    .await;
    assert_eq!(wrong_service.status, StatusCode::FORBIDDEN);

    let other_key = Credentials::new(
        "AKIAOTHERKEY00000001",
        &sim_creds.secret_access_key,
        sim_creds.session_token.clone(),
        None,
        "test",
    );
    let unknown = send(signed_request(
        &url,
        &body,
        &other_key,
        "us-west-2",
        "eks-mcp",
        now,
    ))
    .await;
    assert_eq!(
        unknown.headers["x-amzn-errortype"],
        "UnrecognizedClientException"
    );

    sim.rotate_credentials(SimCredentials {
        session_token: Some("session-token-2".into()),
        ..sim_creds.clone()
    });
    let expired = send(signed_request(
        &url,
        &body,
        &creds,
        "us-west-2",
        "eks-mcp",
        now,
    ))
    .await;
    assert_eq!(expired.headers["x-amzn-errortype"], "ExpiredTokenException");

    assert_eq!(sim.signature_failures(), 7);
    assert_eq!(sim.received().len(), 8, "refused requests are recorded too");
    assert!(sim.received().iter().all(|r| {
        r.header("authorization")
            .is_none_or(|a| a.starts_with("AWS4-HMAC-SHA256"))
    }));
}

#[tokio::test]
async fn open_source_tool_names_are_available() {
    let sim = start(SimConfig {
        tool_names: ToolNames::OpenSource,
        ..SimConfig::default()
    })
    .await;
    let url = sim.url();
    let sid = initialize(&url).await;
    let list = session_call(&url, &sid, 2, "tools/list", json!({}))
        .await
        .json();
    let tools = list["result"]["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 16);
    assert!(
        tools
            .iter()
            .any(|t| t["name"] == "search_eks_troubleshoot_guide")
    );
    let hosted_only = session_call(
        &url,
        &sid,
        3,
        "tools/call",
        json!({"name": "read_k8s_resource", "arguments": {}}),
    )
    .await
    .json();
    assert_eq!(
        hosted_only["error"]["code"], -32602,
        "unknown tool is a protocol error"
    );
}

#[tokio::test]
async fn stateless_listen_stream_carries_tagged_list_changes() {
    let sim = start(SimConfig {
        keepalive: Duration::from_millis(50),
        ..SimConfig::default()
    })
    .await;
    let url = sim.url();
    let listen = stateless_body(
        40,
        "subscriptions/listen",
        json!({"notifications": {"resourcesListChanged": true, "toolsListChanged": true}}),
    );
    let resp = client()
        .request(
            Request::post(&url)
                .header("content-type", "application/json")
                .header("accept", ACCEPT_BOTH)
                .header("mcp-protocol-version", STATELESS)
                .header("mcp-method", "subscriptions/listen")
                .body(Full::new(Bytes::from(listen.to_string())))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = resp.into_body();

    let create = post(
        &url,
        &stateless_body(41, "tools/call", json!({"name": "manage_k8s_resource", "arguments": {
            "operation": "create", "cluster_name": "prod", "kind": "Namespace", "api_version": "v1", "name": "audit", "body": {}}})),
        &[("mcp-protocol-version", STATELESS), ("mcp-method", "tools/call"), ("mcp-name", "manage_k8s_resource")],
    )
    .await;
    assert_eq!(
        create.json()["result"]["isError"],
        false,
        "{}",
        create.tool_text()
    );

    let mut text = String::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
            if text.contains("list_changed") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("listen stream delivered the change");
    let messages: Vec<Value> = sse_events(&text)
        .into_iter()
        .filter(|e| !e.data.is_empty())
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert_eq!(
        messages[0]["method"],
        "notifications/subscriptions/acknowledged"
    );
    assert_eq!(
        messages[0]["params"]["notifications"],
        json!({"resourcesListChanged": true}),
        "only what can happen is honoured"
    );
    let change = messages
        .iter()
        .find(|m| m["method"] == "notifications/resources/list_changed")
        .unwrap();
    assert_eq!(
        change["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        40
    );

    assert_eq!(sim.listener_count(), 1);
    drop(body);
    tokio::time::timeout(Duration::from_secs(10), async {
        while sim.listener_count() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("closing the stream ends the subscription");
}

/// Open the session's GET stream and read until `want` SSE data events arrived.
async fn read_stream(
    url: &str,
    sid: &str,
    last_event_id: Option<&str>,
    want: usize,
) -> Vec<SseEvent> {
    let mut b = Request::get(url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", sid);
    if let Some(id) = last_event_id {
        b = b.header("last-event-id", id);
    }
    let resp = client()
        .request(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut text = String::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
            if sse_events(&text)
                .iter()
                .filter(|e| !e.data.is_empty())
                .count()
                >= want
            {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("stream delivered the events");
    sse_events(&text)
}

#[tokio::test]
async fn get_stream_delivers_queued_events_and_resumes_after_last_event_id() {
    let sim = start(SimConfig::default()).await;
    let url = sim.url();
    let sid = initialize(&url).await;
    let create_namespace = |id: i64, name: &'static str| {
        session_call(
            &url,
            &sid,
            id,
            "tools/call",
            json!({"name": "manage_k8s_resource", "arguments": {"operation": "create", "cluster_name": "dev", "kind": "Namespace", "api_version": "v1", "name": name, "body": {}}}),
        )
    };
    // Queued while no stream is open: a message and a list change.
    create_namespace(2, "queued").await;
    let first = read_stream(&url, &sid, None, 2).await;
    let data: Vec<&SseEvent> = first.iter().filter(|e| !e.data.is_empty()).collect();
    assert!(
        data[0].data.contains("created Namespace queued"),
        "{:?}",
        data[0]
    );
    let last_seen = data[1].id.clone().unwrap();

    // The first stream was dropped; what happens next is replayed after the last seen id.
    create_namespace(3, "later").await;
    let second = read_stream(&url, &sid, Some(&last_seen), 1).await;
    let replayed: Vec<&SseEvent> = second.iter().filter(|e| !e.data.is_empty()).collect();
    assert!(
        replayed[0].data.contains("created Namespace later"),
        "{:?}",
        replayed[0]
    );
    assert!(
        replayed.iter().all(|e| !e.data.contains("queued")),
        "nothing before Last-Event-ID is repeated"
    );
}
