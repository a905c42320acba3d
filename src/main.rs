//! The `eks-mcp-gateway` command line: `serve`, `stdio`, `demo`, `check`, `policy test`,
//! `policy eval`, `policy replay`, `catalogue diff`, `catalogue sync`.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use eks_mcp_gateway::config::Config;

/// A proxy allocates and frees many short-lived buffers per request; mimalloc does that with
/// less lock traffic than glibc malloc across tokio's worker threads. The default feature
/// `mimalloc`; without it the binary uses glibc malloc (`scripts/alloc-compare` measures both).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "eks-mcp-gateway",
    version,
    about = "Policy-enforcing MCP gateway for Amazon EKS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a YAML configuration file.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start an embedded EKS-like upstream and the gateway in front of it (no AWS needed).
    Demo {
        /// Address of the gateway's MCP listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Policy directory (defaults to ./policies).
        #[arg(long)]
        policies: Option<PathBuf>,
        /// Principal every demo request runs as.
        #[arg(long, default_value = "alice@example.com")]
        principal: String,
        /// Groups of that principal (comma separated).
        #[arg(long, default_value = "payments-dev", value_delimiter = ',')]
        groups: Vec<String>,
    },
    /// Run only the embedded EKS-like upstream (for load benchmarks and client experiments).
    Upstream {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Answer requests with SSE instead of JSON.
        #[arg(long)]
        sse: bool,
        #[command(flatten)]
        stdio: UpstreamStdioArgs,
    },
    /// Compare a live upstream's tools with policies/catalogue.yaml.
    Catalogue {
        #[command(subcommand)]
        command: CatalogueCommand,
    },
    /// Speak MCP on stdin/stdout (one JSON-RPC message per line), for assistants that launch
    /// an MCP server as a local command: every message goes through the gateway's policy,
    /// signing, redaction and audit as with `serve`. Logs go to stderr. With JWT or API-key
    /// authentication the credential is read from the file EKS_MCP_GATEWAY_TOKEN_FILE names
    /// (again for every message) or from EKS_MCP_GATEWAY_TOKEN.
    Stdio {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file and the policies it names, then exit.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Policy tools: run the Rego unit tests, evaluate one input, replay recorded traffic.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

// --- upstream --stdio and catalogue (issue 13) --------------------------------------------

/// `upstream --stdio`: the embedded upstream as a stdio MCP server, the way the open-source
/// server runs (one session on stdin/stdout, logs on stderr).
#[derive(clap::Args)]
struct UpstreamStdioArgs {
    /// Speak MCP on stdin/stdout instead of listening on a port.
    #[arg(long)]
    stdio: bool,
    /// Which server's tool set to serve: `hosted` (20 tools) or `open-source` (awslabs 0.2.1).
    #[arg(long, default_value = "hosted")]
    tool_names: String,
    /// A JSON file with the tool definitions to serve instead (drift experiments).
    #[arg(long)]
    tools_file: Option<PathBuf>,
    /// Hold every call of one tool back, as NAME=SECONDS (supervision tests).
    #[arg(long, hide = true)]
    delay_tool: Option<String>,
}

impl UpstreamStdioArgs {
    fn sim_config(&self) -> anyhow::Result<eks_mcp_gateway::sim::SimConfig> {
        use eks_mcp_gateway::sim::{SimConfig, ToolNames};
        let tool_names = match self.tool_names.as_str() {
            "hosted" => ToolNames::Hosted,
            "open-source" | "oss" => ToolNames::OpenSource,
            other => anyhow::bail!("--tool-names {other:?}: use hosted or open-source"),
        };
        let tools = match &self.tools_file {
            None => None,
            Some(path) => Some(
                serde_json::from_str(&std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("cannot read --tools-file {}: {e}", path.display())
                })?)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "--tools-file {}: not a JSON array of tools: {e}",
                        path.display()
                    )
                })?,
            ),
        };
        Ok(SimConfig {
            tool_names,
            tools,
            ..SimConfig::default()
        })
    }

    fn delay(&self) -> anyhow::Result<Option<(String, std::time::Duration)>> {
        let Some(spec) = &self.delay_tool else {
            return Ok(None);
        };
        let (name, secs) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--delay-tool takes NAME=SECONDS"))?;
        let secs: f64 = secs
            .parse()
            .map_err(|_| anyhow::anyhow!("--delay-tool {spec}: SECONDS is not a number"))?;
        Ok(Some((
            name.to_owned(),
            std::time::Duration::from_secs_f64(secs),
        )))
    }
}

#[derive(Subcommand)]
enum CatalogueCommand {
    /// Print where the upstream's tools/list differs from the catalogue; exit 1 on drift.
    Diff {
        #[command(flatten)]
        target: CatalogueTarget,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print catalogue entries (YAML, to complete and paste under `tools:`) for the tools the
    /// upstream offers and the catalogue does not know.
    Sync {
        #[command(flatten)]
        target: CatalogueTarget,
        /// Write the entries to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Which upstream and which catalogue: a configuration file, or `--upstream URL` /
/// `--command PROGRAM ARGS...` with `--policies DIR`.
#[derive(clap::Args)]
struct CatalogueTarget {
    #[arg(long, short, conflicts_with_all = ["upstream", "command"])]
    config: Option<PathBuf>,
    /// An HTTP MCP server (signed when it is https, as `serve` would).
    #[arg(long, conflicts_with = "command")]
    upstream: Option<String>,
    /// A stdio MCP server to start, with its arguments (put it last).
    #[arg(long, num_args = 1.., allow_hyphen_values = true)]
    command: Option<Vec<String>>,
    /// Policy directory holding catalogue.yaml (default ./policies, or the config's).
    #[arg(long)]
    policies: Option<PathBuf>,
}

impl CatalogueTarget {
    fn config(&self) -> anyhow::Result<Config> {
        let mut cfg = match (&self.config, &self.upstream, &self.command) {
            (Some(path), _, _) => Config::load(path)?,
            (None, Some(url), _) => Config::from_yaml_str(
                &format!("upstream:\n  url: {}\n", serde_json::to_string(url)?),
                Path::new("<--upstream>"),
            )?,
            (None, None, Some(cmd)) => {
                let doc = serde_json::json!({"upstream": {"command": {
                    "program": cmd[0], "args": &cmd[1..],
                    "inherit_env": ["AWS_REGION", "AWS_PROFILE", "AWS_ACCESS_KEY_ID",
                        "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE",
                        "AWS_SHARED_CREDENTIALS_FILE", "KUBECONFIG"]}}});
                Config::from_yaml_str(&doc.to_string(), Path::new("<--command>"))?
            }
            (None, None, None) => {
                anyhow::bail!(
                    "name the upstream: --config FILE, --upstream URL or --command PROGRAM ..."
                )
            }
        };
        if let Some(dir) = &self.policies {
            cfg.policy.dir = dir.clone();
        } else if self.config.is_none() {
            cfg.policy.dir = default_policy_dir();
        }
        Ok(cfg)
    }
}

/// `catalogue diff` / `catalogue sync`.
async fn catalogue(command: CatalogueCommand) -> anyhow::Result<ExitCode> {
    use eks_mcp_gateway::drift;
    let (target, sync_out, json) = match &command {
        CatalogueCommand::Diff { target, json } => (target, None, *json),
        CatalogueCommand::Sync { target, out } => (target, Some(out.clone()), false),
    };
    let cfg = target.config()?;
    let catalogue = eks_mcp_gateway::classify::Catalogue::load(&cfg.policy.dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", cfg.policy.dir.display()))?;
    let upstream = eks_mcp_gateway::forward::Upstream::new(&cfg.upstream)?;
    let signer = if upstream.is_stdio() {
        None
    } else {
        eks_mcp_gateway::sign::Signer::from_config(&cfg.signing, upstream.uri()).await?
    };
    let fetched = drift::fetch_tools(&upstream, signer.as_ref()).await;
    upstream.shutdown().await;
    let tools =
        fetched.map_err(|e| anyhow::anyhow!("reading {}'s tools: {e:#}", cfg.upstream.url))?;
    let report = drift::compare(&catalogue, &tools);
    if let Some(out) = sync_out {
        let yaml = drift::skeleton(&report, &tools);
        match out {
            Some(path) => std::fs::write(&path, &yaml)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?,
            None => print!("{yaml}"),
        }
        let n = report.iter().filter(|d| d.kind == "unknown_tool").count();
        eprintln!(
            "{n} tool(s) of {} missing from the catalogue",
            cfg.upstream.url
        );
        return Ok(ExitCode::SUCCESS);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: {} tools listed, {} difference(s) from {}",
            cfg.upstream.url,
            tools.len(),
            report.len(),
            cfg.policy.dir.join("catalogue.yaml").display()
        );
        for d in &report {
            println!("{:<18} {:<34} {}", d.kind, d.tool, d.detail);
        }
    }
    Ok(if report.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run every `test_*` rule in `*_test.rego` under DIR (default: ./policies), then the
    /// fixtures: each NAME.expected.json in DIR/fixtures (or --fixtures) states the decision
    /// for NAME.json, a recorded audit record or an input document.
    Test {
        dir: Option<PathBuf>,
        /// Fixture directory (default: DIR/fixtures when it exists).
        #[arg(long)]
        fixtures: Option<PathBuf>,
        /// Print every test, not only failures.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Evaluate the decision for one input document (JSON).
    Eval {
        #[arg(long)]
        input: PathBuf,
        #[arg(long, default_value = "policies")]
        dir: PathBuf,
    },
    /// Replay recorded audit records (JSON lines) against a policy directory and report
    /// which decisions would change: allow -> deny, deny -> allow, other reasons or
    /// redaction. Compares with the recorded decisions, or with --baseline-dir's.
    /// Exit status: 0 done, 1 error (a policy does not load, a file cannot be read,
    /// nothing could be replayed), 2 --fail-on found flips of that kind.
    Replay {
        /// Audit files (current and rotated ones, in any order); `-` reads stdin.
        #[arg(long, required = true, num_args = 1..)]
        audit: Vec<PathBuf>,
        /// The policy directory to replay against (the change under review).
        #[arg(long, default_value = "policies")]
        dir: PathBuf,
        /// Compare with this policy directory's decisions (e.g. the main branch's) instead
        /// of the decisions recorded in the audit.
        #[arg(long)]
        baseline_dir: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReplayFormat::Text)]
        format: ReplayFormat,
        /// Exit with status 2 when flips of this kind are found.
        #[arg(long, value_enum)]
        fail_on: Option<FailOn>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ReplayFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum FailOn {
    /// A denied request would now be allowed (the change widens access).
    DenyToAllow,
    /// An allowed request would now be denied (the change breaks someone's work).
    AllowToDeny,
    /// A flip in either direction.
    Any,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => run_async(async move {
            let cfg = Config::load(&config)?;
            let _telemetry = eks_mcp_gateway::telemetry::init(&cfg.tracing);
            eks_mcp_gateway::front::run(cfg, eks_mcp_gateway::front::shutdown_signal()).await
        }),
        Command::Stdio { config } => run_async(async move {
            let cfg = Config::load(&config)?;
            let _telemetry = eks_mcp_gateway::telemetry::init(&cfg.tracing);
            let gateway = eks_mcp_gateway::pipeline::Gateway::build(cfg).await?;
            eks_mcp_gateway::stdio::run(gateway).await
        }),
        Command::Demo {
            listen,
            policies,
            principal,
            groups,
        } => run_async(async move {
            let opts = eks_mcp_gateway::demo::DemoOptions {
                listen,
                policy_dir: policies.unwrap_or_else(default_policy_dir),
                principal,
                groups,
            };
            let _telemetry = eks_mcp_gateway::telemetry::init(&Default::default());
            eks_mcp_gateway::demo::run(opts, eks_mcp_gateway::front::shutdown_signal()).await
        }),
        Command::Upstream { stdio, .. } if stdio.stdio => run_async(async move {
            let cfg = stdio.sim_config()?;
            let delay = stdio.delay()?;
            eks_mcp_gateway::sim::serve_stdio(cfg, tokio::io::stdin(), tokio::io::stdout(), delay)
                .await?;
            Ok(())
        }),
        Command::Catalogue { command } => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(catalogue(command)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Upstream { listen, sse, stdio } => run_async(async move {
            use eks_mcp_gateway::sim;
            let listener = tokio::net::TcpListener::bind(listen).await?;
            let cfg = sim::SimConfig {
                response_mode: if sse {
                    sim::ResponseMode::Sse
                } else {
                    sim::ResponseMode::Json
                },
                ..stdio.sim_config()?
            };
            let handle = sim::start(cfg, listener).await?;
            // The first stdout line is the URL; scripts and benches read it.
            println!("{}", handle.url());
            eks_mcp_gateway::front::shutdown_signal().await;
            handle.shutdown();
            Ok(())
        }),
        Command::Check { config } => check(&config),
        Command::Policy {
            command:
                PolicyCommand::Test {
                    dir,
                    fixtures,
                    verbose,
                },
        } => {
            let dir = dir.unwrap_or_else(default_policy_dir);
            let report = match fixtures {
                Some(f) => eks_mcp_gateway::policy::run_tests_with(&dir, Some(&f)),
                None => eks_mcp_gateway::policy::run_tests(&dir),
            };
            print!(
                "{}",
                eks_mcp_gateway::policy::format_report(&report, verbose)
            );
            if report.load_error.is_none() && report.failed() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Policy {
            command:
                PolicyCommand::Replay {
                    audit,
                    dir,
                    baseline_dir,
                    format,
                    fail_on,
                },
        } => replay(&audit, &dir, baseline_dir.as_deref(), format, fail_on),
        Command::Policy {
            command: PolicyCommand::Eval { input, dir },
        } => {
            let text = match std::fs::read_to_string(&input) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: cannot read {}: {e}", input.display());
                    return ExitCode::FAILURE;
                }
            };
            match eks_mcp_gateway::policy::eval_file(&dir, &text) {
                Ok(d) => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&d).expect("decision serialises")
                    );
                    if d.allow {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(2)
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn replay(
    audit: &[PathBuf],
    dir: &Path,
    baseline_dir: Option<&Path>,
    format: ReplayFormat,
    fail_on: Option<FailOn>,
) -> ExitCode {
    use eks_mcp_gateway::policy::{self, AuditSource};
    let mut replayer = match policy::Replayer::load(dir, baseline_dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let sources: Vec<AuditSource> = audit.iter().map(|p| AuditSource::from_arg(p)).collect();
    let report = match replayer.replay(&sources) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match format {
        ReplayFormat::Text => print!("{}", report.to_text()),
        ReplayFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        ),
    }
    if report.replayed == 0 {
        eprintln!(
            "error: no audit record could be replayed from {} ({} lines, {} skipped). Fix: pass the gateway's audit files (audit.sink) with --audit",
            report.files.join(", "),
            report.lines,
            report.skipped
        );
        return ExitCode::FAILURE;
    }
    let fail_on = fail_on.map(|f| match f {
        FailOn::DenyToAllow => policy::FailOn::DenyToAllow,
        FailOn::AllowToDeny => policy::FailOn::AllowToDeny,
        FailOn::Any => policy::FailOn::Any,
    });
    if fail_on.is_some_and(|f| report.fails(f)) {
        eprintln!(
            "policy replay: {} allow -> deny, {} deny -> allow; failing as --fail-on asks",
            report.allow_to_deny, report.deny_to_allow
        );
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

fn default_policy_dir() -> PathBuf {
    let local = PathBuf::from("policies");
    if local.is_dir() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
    }
}

fn check(path: &Path) -> ExitCode {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = eks_mcp_gateway::approval::Approvals::from_config(&cfg.approval) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    match eks_mcp_gateway::policy::PolicyEngine::load(&cfg.policy) {
        Ok(engine) => {
            println!(
                "ok: {} is valid; policies in {} compile (revision {}), {} catalogued tools",
                path.display(),
                cfg.policy.dir.display(),
                engine.revision(),
                engine.catalogue().tool_names().count()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: policies in {}: {e}", cfg.policy.dir.display());
            ExitCode::FAILURE
        }
    }
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
