//! `demo`: the gateway in front of the embedded EKS-like upstream, on loopback, no AWS needed.
//!
//! The upstream verifies SigV4 with demo credentials and the gateway signs with the same
//! ones, so the demo exercises every stage a production deployment runs: authenticate (a
//! fixed principal), parse, classify, decide with the shipped policies, sign, forward,
//! redact and audit (to a JSON-lines file whose path is printed).
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;

use crate::config::{AuditConfig, AuthConfig, Config, PolicyConfig, SigningConfig, UpstreamConfig};
use crate::pipeline::{BuildOptions, Gateway};
use crate::sim::{self, SimConfig, SimCredentials};

/// Demo credentials shared by the embedded upstream and the gateway. Not an AWS secret.
const DEMO_ACCESS_KEY: &str = "AKIDEMOGATEWAY000001";
const DEMO_SECRET_KEY: &str = "demo/secret/not-a-real-aws-key/0000000000";
const DEMO_REGION: &str = "us-west-2";

pub struct DemoOptions {
    pub listen: SocketAddr,
    pub policy_dir: PathBuf,
    pub principal: String,
    pub groups: Vec<String>,
}

/// Run the demo until `shutdown` resolves.
pub async fn run(
    opts: DemoOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let upstream_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sim_cfg = SimConfig {
        credentials: Some(SimCredentials {
            access_key_id: DEMO_ACCESS_KEY.into(),
            secret_access_key: DEMO_SECRET_KEY.into(),
            session_token: None,
        }),
        region: DEMO_REGION.into(),
        ..SimConfig::default()
    };
    let upstream = sim::start(sim_cfg, upstream_listener).await?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {}: {e} (choose another address with --listen)",
                opts.listen
            )
        })?;
    let listen = listener.local_addr()?;
    let audit_path = std::env::temp_dir().join(format!(
        "eks-mcp-gateway-demo-audit-{}.jsonl",
        std::process::id()
    ));
    let config = demo_config(&opts, listen, &upstream.url(), &audit_path)?;
    let creds = Credentials::new(DEMO_ACCESS_KEY, DEMO_SECRET_KEY, None, None, "demo");
    let signer = crate::sign::Signer::from_provider(
        &config.signing,
        &config.upstream.url.parse()?,
        SharedCredentialsProvider::new(creds),
    )
    .await?;
    let gateway = Gateway::build_with(
        config,
        BuildOptions {
            signer: Some(signer),
        },
    )
    .await?;
    print_banner(&opts, listen, &audit_path);
    crate::front::serve(
        gateway.clone(),
        listener,
        crate::front::Role::Mcp { with_ops: true },
        shutdown,
    )
    .await?;
    crate::front::flush_audit(&gateway).await;
    upstream.shutdown();
    Ok(())
}

fn demo_config(
    opts: &DemoOptions,
    listen: SocketAddr,
    upstream_url: &str,
    audit_path: &std::path::Path,
) -> anyhow::Result<Config> {
    let mut cfg = Config::from_yaml_str(
        &format!("upstream:\n  url: {upstream_url}\n"),
        std::path::Path::new("<demo>"),
    )?;
    cfg.listen = listen;
    cfg.upstream = UpstreamConfig {
        aws_region: Some(DEMO_REGION.into()),
        ..cfg.upstream
    };
    cfg.policy = PolicyConfig {
        dir: opts.policy_dir.clone(),
        ..PolicyConfig::default()
    };
    cfg.signing = SigningConfig {
        enabled: Some(true),
        service: Some("eks-mcp".into()),
        region: Some(DEMO_REGION.into()),
        ..SigningConfig::default()
    };
    cfg.auth = AuthConfig::Static {
        principal: opts.principal.clone(),
        groups: opts.groups.clone(),
    };
    cfg.audit = AuditConfig {
        sink: audit_path.display().to_string(),
        ..AuditConfig::default()
    };
    Ok(cfg)
}

fn print_banner(opts: &DemoOptions, listen: SocketAddr, audit: &std::path::Path) {
    let url = format!("http://{listen}/mcp");
    println!(
        r#"
eks-mcp-gateway demo
====================
MCP endpoint:   {url}
Upstream:       embedded EKS-like MCP server (clusters dev, staging, prod), SigV4-verified
Caller:         {principal} (groups: {groups})
Policies:       {policies}
Audit records:  {audit}
Metrics:        http://{listen}/metrics     Readiness: http://{listen}/readyz

Client configuration
  Amazon Q Developer CLI (~/.aws/amazonq/mcp.json), Kiro (.kiro/settings/mcp.json),
  Cursor (.cursor/mcp.json):
    {{"mcpServers": {{"eks": {{"url": "{url}"}}}}}}

Try it (each is one JSON-RPC request; the policy decides, the upstream answers):
  allowed, logs redacted:
    curl -s {url} -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
      -d '{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"get_pod_logs","arguments":{{"cluster_name":"dev","namespace":"payments","pod_name":"payments-worker-5b7c9d8f6-kq4zt"}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}}}}' \
      -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: tools/call' -H 'mcp-name: get_pod_logs'
  denied (Secrets are never read through MCP):
    curl -s {url} -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
      -d '{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"read_k8s_resource","arguments":{{"cluster_name":"dev","kind":"Secret","api_version":"v1","namespace":"payments","name":"payments-db-credentials"}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}}}}' \
      -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: tools/call' -H 'mcp-name: read_k8s_resource'
  the tools this caller may use:
    curl -s {url} -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
      -d '{{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{{"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}}}}' \
      -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: tools/list'

Press Ctrl-C to stop.
"#,
        principal = opts.principal,
        groups = opts.groups.join(", "),
        policies = opts.policy_dir.display(),
        audit = audit.display(),
    );
}
