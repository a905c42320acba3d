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
//!
//! A/B of two builds: with `LOAD_B_BIN=<binary>` the run is a comparison instead. Two gateways
//! (A is `LOAD_BIN` or this build, B is `LOAD_B_BIN`) run side by side in front of one upstream
//! and take turns, in alternating order, for `LOAD_AB_ROUNDS` rounds (default 4) of an open-loop
//! phase at the fixed rate and a closed-loop phase; only one of them is loaded at a time. It
//! prints each build's CPU per request per round and the B/A ratios (median over rounds), and
//! the closed-loop throughput ratio: same-run ratios, which hold on a shared machine where
//! absolute figures move by tens of percent. `scripts/alloc-compare` runs it for mimalloc
//! against glibc malloc. The smoke run does one short round of the same build against itself
//! so that this mode keeps working.
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
    /// A/B mode: rounds, and the length of each build's open- and closed-loop turn.
    ab_rounds: usize,
    ab_open_seconds: u64,
    ab_closed_seconds: u64,
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
            ab_rounds: 4,
            ab_open_seconds: 4,
            ab_closed_seconds: 3,
        }
    } else {
        Settings {
            rate: 200,
            seconds: 1,
            closed_loop_seconds: 1,
            workers: 8,
            ab_rounds: 1,
            ab_open_seconds: 1,
            ab_closed_seconds: 1,
        }
    };
    let settings = Settings {
        ab_rounds: std::env::var("LOAD_AB_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(settings.ab_rounds)
            .max(1),
        ..settings
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
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http();
    if let Ok(b_bin) = std::env::var("LOAD_B_BIN") {
        compare_builds(
            &s,
            [bin, &b_bin],
            &policy_dir,
            &upstream_url,
            up_pid,
            &client,
        )
        .await;
        return;
    }
    let (_gateway, port) = spawn_gateway(
        bin,
        dir.path(),
        &load_config(&upstream_url, &policy_dir, dir.path()),
    );
    let gw_pid = _gateway.0.id();
    let gateway_url = format!("http://127.0.0.1:{port}/mcp");
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
    if !full {
        // Keep the A/B mode working: this build against itself, one short round.
        compare_builds(&s, [bin, bin], &policy_dir, &upstream_url, up_pid, &client).await;
    }
}

/// The gateway as the load phases run it: production minus SigV4 (plain loopback upstream),
/// a static principal in `platform-admins`, a file audit sink in `dir`, metrics.
fn load_config(upstream_url: &str, policy_dir: &str, dir: &std::path::Path) -> String {
    format!(
        "upstream:\n  url: {upstream_url}\nsigning:\n  enabled: false\npolicy:\n  dir: {policy_dir}\n  hot_reload: false\nauth:\n  mode: static\n  principal: load@example.com\n  groups: [platform-admins]\naudit:\n  sink: {}\ntracing:\n  log_format: text\n",
        dir.join("audit.jsonl").display()
    )
}

/// A/B of two gateway builds (`LOAD_B_BIN`): both run side by side in front of one upstream,
/// configured alike, and take turns (A then B in even rounds, B then A in odd ones, so a
/// drift in the machine's load falls on both). Each turn is an open-loop phase at the fixed
/// rate and a closed-loop phase; what is compared is the CPU (user + system) each gateway
/// process used per request and the closed-loop throughput, as B/A ratios within a round.
async fn compare_builds(
    s: &Settings,
    bins: [&str; 2],
    policy_dir: &str,
    upstream_url: &str,
    up_pid: u32,
    client: &Client<HttpConnector, Full<Bytes>>,
) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let gateways: Vec<(Proc, u16)> = (0..2)
        .map(|i| {
            spawn_gateway(
                bins[i],
                dirs[i].path(),
                &load_config(upstream_url, policy_dir, dirs[i].path()),
            )
        })
        .collect();
    let urls: Vec<String> = gateways
        .iter()
        .map(|(_, port)| format!("http://127.0.0.1:{port}/mcp"))
        .collect();
    for (_, port) in &gateways {
        wait_ready(client, &format!("http://127.0.0.1:{port}/readyz")).await;
    }
    for url in &urls {
        open_loop(client, url, s.rate, Duration::from_secs(1), s.workers, "").await; // warm-up
    }
    let ticks = clock_ticks();
    // turns[round][build] = (open-loop phase, closed-loop phase)
    let mut turns: Vec<[Option<(Phase, Phase)>; 2]> = Vec::new();
    for round in 0..s.ab_rounds {
        let mut this = [None, None];
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let pids = (gateways[i].0.0.id(), up_pid);
            let open = measured(
                pids,
                ticks,
                open_loop(
                    client,
                    &urls[i],
                    s.rate,
                    Duration::from_secs(s.ab_open_seconds),
                    s.workers,
                    "",
                ),
            )
            .await;
            let closed = measured(
                pids,
                ticks,
                closed_loop(
                    client,
                    &urls[i],
                    s.workers,
                    Duration::from_secs(s.ab_closed_seconds),
                    "",
                ),
            )
            .await;
            for p in [&open, &closed] {
                assert!(p.requests > 0, "{}: no request completed", bins[i]);
                assert_eq!(p.errors, 0, "{}: requests failed", bins[i]);
            }
            this[i] = Some((open, closed));
        }
        turns.push(this);
    }
    let rss: Vec<u64> = gateways
        .iter()
        .map(|(g, _)| peak_rss_kib(g.0.id()))
        .collect();

    println!(
        "\nA/B of two gateway builds, {} rounds in alternating order (policy {policy_dir}){}",
        s.ab_rounds,
        if s.ab_rounds == 1 && s.ab_open_seconds == 1 {
            " [smoke run]"
        } else {
            ""
        }
    );
    println!("A: {}\nB: {}", bins[0], bins[1]);
    println!(
        "{:<7} {:>14} {:>14} {:>7}   {:>14} {:>14} {:>7} {:>9}",
        "round",
        format!("A cpu/req@{}", s.rate),
        format!("B cpu/req@{}", s.rate),
        "B/A",
        "A cpu/req max",
        "B cpu/req max",
        "B/A",
        "B/A req/s"
    );
    let (mut open_ratio, mut closed_ratio, mut rps_ratio) = (Vec::new(), Vec::new(), Vec::new());
    for (round, t) in turns.iter().enumerate() {
        let [Some((ao, ac)), Some((bo, bc))] = t else {
            unreachable!("both builds ran in every round")
        };
        let (a_open, b_open) = (
            ao.per_request(ao.gateway_cpu),
            bo.per_request(bo.gateway_cpu),
        );
        let (a_closed, b_closed) = (
            ac.per_request(ac.gateway_cpu),
            bc.per_request(bc.gateway_cpu),
        );
        let ratio = |b: Duration, a: Duration| b.as_secs_f64() / a.as_secs_f64().max(1e-12);
        open_ratio.push(ratio(b_open, a_open));
        closed_ratio.push(ratio(b_closed, a_closed));
        rps_ratio.push(bc.rps() / ac.rps().max(1e-12));
        println!(
            "{:<7} {:>14.1?} {:>14.1?} {:>7.2}   {:>14.1?} {:>14.1?} {:>7.2} {:>9.2}",
            round + 1,
            a_open,
            b_open,
            open_ratio[round],
            a_closed,
            b_closed,
            closed_ratio[round],
            rps_ratio[round],
        );
    }
    println!(
        "median B/A: CPU per request {:.2} at {}/s, {:.2} closed loop; closed-loop throughput {:.2}",
        median(&mut open_ratio),
        s.rate,
        median(&mut closed_ratio),
        median(&mut rps_ratio)
    );
    println!(
        "peak RSS: A {:.1} MB, B {:.1} MB",
        rss[0] as f64 / 1024.0,
        rss[1] as f64 / 1024.0
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
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
