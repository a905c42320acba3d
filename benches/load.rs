//! Bounded load benchmark: the embedded EKS-like upstream directly vs through the gateway,
//! in one run, each in its own process, printing req/s, p50/p99 latency and the gateway's
//! peak RSS.
//!
//! `cargo bench --bench load` runs the full benchmark (2,000 tools/call per second for 10 s
//! per phase, then a closed-loop throughput phase). Without `--bench` (as `cargo test
//! --benches` runs it) it does a short smoke run so the benchmark keeps working.
//!
//! The gateway runs as configured in production minus SigV4 (the upstream is plain loopback
//! http): shipped policies, redaction, a file audit sink, metrics.
//!
//! Besides latency and throughput it prints the CPU time (user + system, all threads) the
//! gateway and the upstream processes spent per request in each phase, from
//! `/proc/<pid>/stat`: on a shared machine that is steadier than throughput. Environment:
//! `LOAD_POLICY_DIR` (another policy directory), `LOAD_BIN` (another gateway binary).
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

struct Settings {
    rate: u64,
    seconds: u64,
    closed_loop_seconds: u64,
    workers: usize,
}

struct Phase {
    name: String,
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// CPU time (user + system, all threads) the gateway and the upstream processes used
    /// during the phase.
    gateway_cpu: Duration,
    upstream_cpu: Duration,
}

impl Phase {
    fn pct(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn per_request(&self, cpu: Duration) -> Duration {
        cpu / (self.requests.max(1) as u32)
    }
}

/// CPU time a process has used so far (user + system, all its threads), from
/// `/proc/<pid>/stat`; zero where that file does not exist.
fn cpu_time(pid: u32, ticks_per_sec: u64) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    let ticks: u64 = f.iter().sum();
    Duration::from_nanos(ticks * 1_000_000_000 / ticks_per_sec.max(1))
}

/// Clock ticks per second for `/proc/<pid>/stat` (`getconf CLK_TCK`, 100 when unknown).
fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Run `phase` and charge it the CPU time the gateway and upstream processes used meanwhile.
async fn measured(
    pids: (u32, u32),
    ticks: u64,
    phase: impl std::future::Future<Output = Phase>,
) -> Phase {
    let (g0, u0) = (cpu_time(pids.0, ticks), cpu_time(pids.1, ticks));
    let mut p = phase.await;
    p.gateway_cpu = cpu_time(pids.0, ticks).saturating_sub(g0);
    p.upstream_cpu = cpu_time(pids.1, ticks).saturating_sub(u0);
    p
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let settings = if full {
        Settings {
            rate: 2000,
            seconds: 10,
            closed_loop_seconds: 5,
            workers: 64,
        }
    } else {
        Settings {
            rate: 200,
            seconds: 1,
            closed_loop_seconds: 1,
            workers: 8,
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(settings, full));
}

async fn run(s: Settings, full: bool) {
    // LOAD_BIN runs another build of the gateway (A/B comparisons of two builds).
    let bin = std::env::var("LOAD_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_eks-mcp-gateway").to_owned());
    let bin = bin.as_str();
    let repo = env!("CARGO_MANIFEST_DIR");
    // Upstream in its own process; its first stdout line is its URL.
    let mut up = Command::new(bin)
        .args(["upstream", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start upstream");
    let mut line = String::new();
    BufReader::new(up.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let up_pid = up.id();
    let _upstream = Proc(up);
    let upstream_url = line.trim().to_owned();

    let dir = tempfile::tempdir().unwrap();
    // LOAD_POLICY_DIR swaps in another policy directory, e.g. benches/policies-allow-all to
    // measure the relay without the cost of the shipped policies.
    let policy_dir =
        std::env::var("LOAD_POLICY_DIR").unwrap_or_else(|_| format!("{repo}/policies"));
    let (_gateway, port) = spawn_gateway(
        bin,
        dir.path(),
        &format!(
            "upstream:\n  url: {upstream_url}\nsigning:\n  enabled: false\npolicy:\n  dir: {policy_dir}\n  hot_reload: false\nauth:\n  mode: static\n  principal: load@example.com\n  groups: [platform-admins]\naudit:\n  sink: {}\ntracing:\n  log_format: text\n",
            dir.path().join("audit.jsonl").display()
        ),
    );
    let gw_pid = _gateway.0.id();
    let gateway_url = format!("http://127.0.0.1:{port}/mcp");

    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http();
    wait_ready(&client, &format!("http://127.0.0.1:{port}/readyz")).await;

    let ticks = clock_ticks();
    let pids = (gw_pid, up_pid);
    let mut phases = Vec::new();
    for (name, url) in [("direct", &upstream_url), ("gateway", &gateway_url)] {
        open_loop(&client, url, s.rate, Duration::from_secs(1), s.workers, "").await; // warm-up
        let mut p = measured(
            pids,
            ticks,
            open_loop(
                &client,
                url,
                s.rate,
                Duration::from_secs(s.seconds),
                s.workers,
                "",
            ),
        )
        .await;
        p.name = format!("{name} @ {}/s", s.rate);
        phases.push(p);
    }
    for (name, url) in [("direct", &upstream_url), ("gateway", &gateway_url)] {
        let mut p = measured(
            pids,
            ticks,
            closed_loop(
                &client,
                url,
                s.workers,
                Duration::from_secs(s.closed_loop_seconds),
                "",
            ),
        )
        .await;
        p.name = format!("{name} max ({} conns)", s.workers);
        phases.push(p);
    }
    let rss = peak_rss_kib(gw_pid);

    println!(
        "\nload benchmark: stateless tools/call list_k8s_resources (~2.8 KB result){}",
        if full { "" } else { " [smoke run]" }
    );
    println!(
        "{:<28} {:>9} {:>8} {:>10} {:>10} {:>12} {:>12}",
        "phase", "req/s", "errors", "p50", "p99", "gw cpu/req", "up cpu/req"
    );
    for p in &phases {
        println!(
            "{:<28} {:>9.0} {:>8} {:>10.3?} {:>10.3?} {:>12.1?} {:>12.1?}",
            p.name,
            p.rps(),
            p.errors,
            p.pct(0.50),
            p.pct(0.99),
            p.per_request(p.gateway_cpu),
            p.per_request(p.upstream_cpu),
        );
    }
    let added_p99 = phases[1].pct(0.99).saturating_sub(phases[0].pct(0.99));
    let ratio = phases[3].rps() / phases[2].rps();
    println!("gateway added p99 at {}/s: {:.3?}", s.rate, added_p99);
    println!(
        "gateway throughput vs direct (closed loop): {:.0}%",
        ratio * 100.0
    );
    println!(
        "gateway CPU per request (process user+system time / requests): {:.1?} at {}/s, {:.1?} closed loop",
        phases[1].per_request(phases[1].gateway_cpu),
        s.rate,
        phases[3].per_request(phases[3].gateway_cpu)
    );
    println!("gateway peak RSS: {:.1} MB", rss as f64 / 1024.0);
    for p in &phases {
        assert!(p.requests > 0, "{}: no request completed", p.name);
        assert_eq!(p.errors, 0, "{}: requests failed", p.name);
    }
    drop(_gateway);
    two_tenants(&s, bin, &policy_dir, &upstream_url, &client).await;
}

/// Two tenants on one shared gateway with few slots (`limits.max_concurrent_requests: 4`,
/// API keys): a polite tenant sending at a steady rate on one connection, alone and then
/// while a flooding tenant keeps `workers` connections busy back to back. Prints the polite
/// tenant's p50/p99 in both phases: fair admission (src/admission.rs) keeps its calls from
/// queueing behind the flood.
async fn two_tenants(
    s: &Settings,
    bin: &str,
    policy_dir: &str,
    upstream_url: &str,
    client: &Client<HttpConnector, Full<Bytes>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let mut y = String::from("keys:\n");
    for (key, principal) in [
        ("flood-key", "flooding-tenant"),
        ("polite-key", "polite-tenant"),
    ] {
        y.push_str(&format!(
            "  - sha256: {}\n    principal: {principal}\n    groups: [platform-admins]\n",
            eks_mcp_gateway::identity::api_key_hash(key)
        ));
    }
    std::fs::write(&keys, y).unwrap();
    let (_gateway, port) = spawn_gateway(
        bin,
        dir.path(),
        &format!(
            "upstream:\n  url: {upstream_url}\nsigning:\n  enabled: false\npolicy:\n  dir: {policy_dir}\n  hot_reload: false\nauth:\n  mode: api_key\n  file: {}\naudit:\n  sink: none\nlimits:\n  max_concurrent_requests: 4\n  max_queued_per_caller: {}\n",
            keys.display(),
            s.workers + 8,
        ),
    );
    let url = format!("http://127.0.0.1:{port}/mcp");
    wait_ready(client, &format!("http://127.0.0.1:{port}/readyz")).await;
    let polite_rate = 50;
    let dur = Duration::from_secs(s.seconds);
    open_loop(
        client,
        &url,
        polite_rate,
        Duration::from_secs(1),
        1,
        "polite-key",
    )
    .await; // warm-up
    let alone = open_loop(client, &url, polite_rate, dur, 1, "polite-key").await;
    let (flood, polite) = tokio::join!(
        closed_loop(client, &url, s.workers, dur, "flood-key"),
        open_loop(client, &url, polite_rate, dur, 1, "polite-key"),
    );
    println!(
        "\ntwo tenants on one gateway (max_concurrent_requests 4): polite tenant {polite_rate}/s on 1 connection{}",
        if s.seconds < 10 { " [smoke run]" } else { "" }
    );
    println!(
        "{:<34} {:>10} {:>10} {:>8}",
        "phase", "polite p50", "polite p99", "errors"
    );
    for (name, p) in [
        ("polite alone", &alone),
        ("polite while the other floods", &polite),
    ] {
        println!(
            "{:<34} {:>10.3?} {:>10.3?} {:>8}",
            name,
            p.pct(0.50),
            p.pct(0.99),
            p.errors
        );
    }
    println!(
        "flooding tenant: {} connections back to back, {:.0} req/s, {} refused or failed",
        s.workers,
        flood.rps(),
        flood.errors
    );
    assert_eq!(alone.errors, 0, "the polite tenant's calls failed alone");
    assert_eq!(
        polite.errors, 0,
        "the polite tenant's calls failed during the flood"
    );
    assert!(flood.requests > 0, "the flood sent nothing");
}

/// Start `eks-mcp-gateway serve` with `config` (everything but `listen`) on a free loopback
/// port; the process ends when the returned `Proc` drops.
fn spawn_gateway(bin: &str, dir: &std::path::Path, config: &str) -> (Proc, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg_path = dir.join("gateway.yaml");
    std::fs::write(&cfg_path, format!("listen: 127.0.0.1:{port}\n{config}")).unwrap();
    let gw = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&cfg_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start gateway");
    (Proc(gw), port)
}

fn body(id: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"list_k8s_resources","arguments":{{"cluster_name":"dev","kind":"Deployment","api_version":"apps/v1","namespace":"payments"}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}}}}"#
    ))
}

async fn one(client: &Client<HttpConnector, Full<Bytes>>, url: &str, id: u64, key: &str) -> bool {
    let mut req = Request::post(url);
    if !key.is_empty() {
        req = req.header("x-api-key", key);
    }
    let req = req
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "list_k8s_resources")
        .body(Full::new(body(id)))
        .unwrap();
    match client.request(req).await {
        Ok(resp) => {
            let ok = resp.status().is_success();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            ok && contains(&body, b"\"result\"") && !contains(&body, b"\"isError\":true")
        }
        Err(_) => false,
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Requests sent on a fixed schedule over a fixed set of connections (as wrk2 does):
/// request `i` is due at `start + i / rate` and goes out on connection `i % workers` as soon
/// as that connection is free. Latency is measured from the due time, so a stall shows up in
/// the percentiles instead of silently lowering the offered load.
async fn open_loop(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    rate: u64,
    dur: Duration,
    workers: usize,
    key: &str,
) -> Phase {
    let total = (rate * dur.as_secs()).max(1);
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers as u64 {
        let client = client.clone();
        let url = url.to_owned();
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut errors = 0usize;
            let mut i = w;
            while i < total {
                let due = start + interval * i as u32;
                tokio::time::sleep_until(due).await;
                if !one(&client, &url, i, &key).await {
                    errors += 1;
                }
                out.push(due.elapsed());
                i += workers as u64;
            }
            (out, errors)
        }));
    }
    let mut latencies = Vec::with_capacity(total as usize);
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        latencies.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Phase {
        name: String::new(),
        requests: total as usize,
        errors,
        elapsed,
        latencies,
        gateway_cpu: Duration::ZERO,
        upstream_cpu: Duration::ZERO,
    }
}

/// `workers` connections sending back to back: the throughput ceiling.
async fn closed_loop(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    workers: usize,
    dur: Duration,
    key: &str,
) -> Phase {
    let start = Instant::now();
    let stop = start + dur;
    let results = Arc::new(std::sync::Mutex::new((Vec::new(), 0usize)));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (client, url, results) = (client.clone(), url.to_owned(), results.clone());
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < stop {
                let t = Instant::now();
                let ok = one(&client, &url, (w as u64) << 32 | i, &key).await;
                let mut r = results.lock().unwrap();
                r.0.push(t.elapsed());
                if !ok {
                    r.1 += 1;
                }
                i += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    let (mut latencies, errors) = std::mem::take(&mut *results.lock().unwrap());
    latencies.sort();
    Phase {
        name: String::new(),
        requests: latencies.len(),
        errors,
        elapsed,
        latencies,
        gateway_cpu: Duration::ZERO,
        upstream_cpu: Duration::ZERO,
    }
}

async fn wait_ready(client: &Client<HttpConnector, Full<Bytes>>, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
        if let Ok(r) = client.request(req).await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "gateway did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// VmHWM of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
