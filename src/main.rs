//! The `eks-mcp-gateway` command line: `serve`, `stdio`, `demo`, `check`, `policy test`,
//! `policy eval`, `policy replay`.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use eks_mcp_gateway::config::Config;

/// A proxy allocates and frees many short-lived buffers per request; mimalloc does that with
/// less lock traffic than glibc malloc across tokio's worker threads (measure with benches/load.rs).
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
        Command::Upstream { listen, sse } => run_async(async move {
            use eks_mcp_gateway::sim;
            let listener = tokio::net::TcpListener::bind(listen).await?;
            let cfg = sim::SimConfig {
                response_mode: if sse {
                    sim::ResponseMode::Sse
                } else {
                    sim::ResponseMode::Json
                },
                ..sim::SimConfig::default()
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
