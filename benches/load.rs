//! HTTP load benchmark: `cargo bench --bench load`.
//!
//! Builds the release server, seeds 100,000 markets and 10,000 users into a temporary data
//! dir, starts the server as its own process, and drives it with 64 keep-alive connections for
//! a fixed time per workload. Prints one table row per workload: requests per second, p50 and
//! p99 latency, errors, and the ratio to the same server process's `/healthz` (measured at the
//! start of the first server, which runs the read, search, stake and mixed workloads, and just
//! before the workload on each server started with other flags), plus the server's RSS and
//! peak RSS; writes the rows to `target/bench/load.json`. Stakes are also
//! measured with group commit off (`--write-batch 1`) and with `synchronous=normal` (the
//! default is `full`). At the end
//! the money invariants are checked over the whole database.
//!
//! The load generator runs in this process and shares the machine's cores with the server, so
//! the ratios to `/healthz` are the figures to compare, not the absolute rates.
//!
//! Environment: `AGORA_BENCH_SECS` (seconds per workload, default 10), `AGORA_BENCH_MARKETS`
//! (default 100000), `AGORA_BENCH_CONNECTIONS` (default 64). With `AGORA_BENCH_SOAK_SECS=600`
//! it runs the soak instead: the mixed workload for that long, a row per minute with req/s,
//! p50, p99 and the server's RSS, then the invariants.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::{Client, Method};
use serde_json::{json, Value};

const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";
const GRANT: &str = "1000000000";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn release_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--bin", "agora"])
        .current_dir(root)
        .status()
        .expect("cargo build runs");
    assert!(status.success(), "release build failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    target.join("release").join("agora")
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(bin: &Path, dir: &Path, extra: &[&str]) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bind = format!("127.0.0.1:{port}");
        let mut args = vec![
            "--data-dir",
            dir.to_str().unwrap(),
            "--bind",
            &bind,
            "--log",
            "warn",
            "--jwt-secret",
            SECRET,
        ];
        // The limiter stays on (its cost is part of every figure) with quotas this load never
        // reaches: 64 connections from one address would otherwise be limited as one client.
        for flag in [
            "--rate-auth",
            "--rate-login",
            "--rate-writes",
            "--rate-reads",
            "--rate-search",
            "--rate-admin",
        ] {
            args.extend_from_slice(&[flag, "100000000/s"]);
        }
        args.extend_from_slice(extra);
        let child = Command::new(bin)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server starts");
        let server = Server {
            child,
            base: format!("http://{bind}"),
        };
        // The port accepts connections as soon as it is bound; the server answers once it
        // has loaded its search index. Wait for an answer.
        for _ in 0..600 {
            if healthy(&bind) {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not start");
    }

    /// Current and peak resident memory, in MiB.
    fn rss_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .map_or(0.0, |kb| kb / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn stop(mut self) {
        // SIGTERM: graceful shutdown (drains the writer, checkpoints the WAL).
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// True when `GET /healthz` on `addr` answers 200.
fn healthy(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut answer = [0u8; 12];
    stream
        .write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
        .and_then(|()| stream.read_exact(&mut answer))
        .is_ok_and(|()| answer.ends_with(b"200"))
}

/// One request to make: method, path, body, bearer token.
type Make =
    Arc<dyn Fn(usize, u64) -> (Method, String, Option<Value>, Option<String>) + Send + Sync>;

struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    requests: u64,
}

async fn drive(client: &Client, base: &str, connections: usize, secs: u64, make: Make) -> Figures {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|conn| {
            let (client, base, make) = (client.clone(), base.to_owned(), make.clone());
            tokio::spawn(async move {
                let (mut latencies, mut errors, mut n) = (Vec::with_capacity(100_000), 0u64, 0u64);
                while Instant::now() < deadline {
                    let (method, path, body, token) = make(conn, n);
                    n += 1;
                    let mut req = client.request(method, format!("{base}{path}"));
                    if let Some(token) = token {
                        req = req.bearer_auth(token);
                    }
                    if let Some(body) = body {
                        req = req.json(&body);
                    }
                    let t = Instant::now();
                    let ok = match req.send().await {
                        Ok(resp) => {
                            let success = resp.status().is_success();
                            let _ = resp.bytes().await;
                            success
                        }
                        Err(_) => false,
                    };
                    latencies.push(t.elapsed().as_micros() as u32);
                    if !ok {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await.unwrap();
        all.extend(latencies);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    Figures {
        rps: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors,
        requests: all.len() as u64,
    }
}

async fn login_all(client: &Client, base: &str, n: usize) -> Arc<Vec<String>> {
    let mut tokens = Vec::new();
    for i in 1..=n {
        let resp: Value = client
            .post(format!("{base}/api/auth/login"))
            .json(&json!({"username": format!("demo{i}"), "password": "agora-demo"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens.push(
            resp["data"]["access_token"]
                .as_str()
                .expect("login")
                .to_owned(),
        );
    }
    Arc::new(tokens)
}

async fn active_markets(client: &Client, base: &str) -> Arc<Vec<i64>> {
    let mut ids = Vec::new();
    for offset in (0..500).step_by(100) {
        let resp: Value = client
            .get(format!(
                "{base}/api/markets?status=active&sort=created_at&limit=100&offset={offset}"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.extend(
            resp["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_i64().unwrap()),
        );
    }
    Arc::new(ids)
}

/// A cheap, deterministic spread of numbers for picking ids and offsets.
fn spread(conn: usize, n: u64) -> u64 {
    (conn as u64 + 1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(n.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        >> 17
}

/// Collects the table rows, printing each and keeping them for the JSON file.
struct Table {
    healthz: f64,
    rows: Vec<Value>,
}

impl Table {
    fn row(&mut self, name: &str, f: &Figures, server: &Server) {
        let (rss, peak) = server.rss_mib();
        let ratio = f.rps / self.healthz;
        println!(
            "| {name:<40} | {:>8.0} | {:>7.2} | {:>7.2} | {:>6} | {ratio:>5.2} | {rss:>5.0} | {peak:>5.0} |",
            f.rps, f.p50_ms, f.p99_ms, f.errors
        );
        self.rows.push(json!({
            "workload": name, "rps": f.rps, "p50_ms": f.p50_ms, "p99_ms": f.p99_ms, "errors": f.errors,
            "requests": f.requests, "ratio_to_healthz": ratio, "healthz_rps": self.healthz,
            "rss_mib": rss, "peak_rss_mib": peak,
        }));
    }
}

fn stake_request(tokens: Arc<Vec<String>>, active: Arc<Vec<i64>>, outcome: u32) -> Make {
    Arc::new(move |c, n| {
        let id = active[spread(c, n) as usize % active.len()];
        let body = json!({"outcome": outcome, "amount": 1});
        (
            Method::POST,
            format!("/api/markets/{id}/positions"),
            Some(body),
            Some(tokens[c].clone()),
        )
    })
}

/// Searches with the corpus's queries, in turn.
fn search_request(mode: &'static str) -> Make {
    let corpus: Value =
        serde_json::from_str(include_str!("../data/search/corpus.json")).expect("corpus");
    let queries: Arc<Vec<String>> = Arc::new(
        corpus["queries"]
            .as_array()
            .expect("queries")
            .iter()
            .filter_map(|q| q["q"].as_str())
            .map(|q| q.replace(' ', "%20"))
            .collect(),
    );
    Arc::new(move |c, n| {
        let q = &queries[spread(c, n) as usize % queries.len()];
        (
            Method::GET,
            format!("/api/markets/search?q={q}&mode={mode}&limit=10"),
            None,
            None,
        )
    })
}

fn healthz_request() -> Make {
    Arc::new(|_, _| (Method::GET, "/healthz".into(), None, None))
}

fn get_request(hot: u64) -> Make {
    Arc::new(move |c, n| {
        (
            Method::GET,
            format!("/api/markets/{}", 1 + spread(c, n) % hot),
            None,
            None,
        )
    })
}

/// The mixed workload (90% GET by id, 10% stakes) for `secs`, one row per minute: the figures
/// of that minute and the server's RSS at its end. Both should stay flat.
fn run_soak(
    runtime: &tokio::runtime::Runtime,
    client: &Client,
    bin: &Path,
    dir: &Path,
    connections: usize,
    secs: u64,
    hot: u64,
) {
    let server = Server::start(bin, dir, &[]);
    println!("soak: mixed 90% GET by id / 10% stakes, {connections} connections, {secs} s");
    println!("| minute | req/s | p50 ms | p99 ms | errors | RSS MiB | peak MiB |");
    println!("|---|---|---|---|---|---|---|");
    runtime.block_on(async {
        let base = server.base.clone();
        let tokens = login_all(client, &base, connections).await;
        let active = active_markets(client, &base).await;
        for minute in 1..=secs.div_ceil(60) {
            let (stake, get) = (
                stake_request(tokens.clone(), active.clone(), 1),
                get_request(hot),
            );
            let f = drive(
                client,
                &base,
                connections,
                60.min(secs - (minute - 1) * 60),
                Arc::new(move |c, n| if n % 10 == 9 { stake(c, n) } else { get(c, n) }),
            )
            .await;
            let (rss, peak) = server.rss_mib();
            println!(
                "| {minute} | {:.0} | {:.2} | {:.2} | {} | {rss:.0} | {peak:.0} |",
                f.rps, f.p50_ms, f.p99_ms, f.errors
            );
        }
    });
    server.stop();
    let conn = rusqlite::Connection::open(dir.join("agora.db")).expect("open");
    let broken = agora::db::invariants::violations(&conn).expect("invariant queries");
    println!(
        "invariants after the soak: {}",
        if broken.is_empty() {
            "all hold".to_owned()
        } else {
            format!("{broken:?}")
        }
    );
}

fn main() {
    let secs = env_or("AGORA_BENCH_SECS", 10);
    let markets = env_or("AGORA_BENCH_MARKETS", 100_000);
    let connections = env_or("AGORA_BENCH_CONNECTIONS", 64) as usize;
    let bin = release_binary();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let status = Command::new(&bin)
        .args([
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--log",
            "warn",
            "--signup-grant",
            GRANT,
            "seed",
        ])
        .args(["--markets", &markets.to_string(), "--users", "10000"])
        .status()
        .unwrap();
    assert!(status.success());
    println!(
        "seeded {markets} markets and 10000 users in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap();
    // The cache holds 10,000 markets by default: "cache warm" reads pick among the first 10,000.
    let hot = markets.min(10_000);
    println!(
        "{connections} connections, {secs} s per workload; RSS and peak RSS of the server in MiB\n"
    );
    println!("| workload                                 |    req/s |  p50 ms |  p99 ms | errors |  x hz |   RSS |  peak |");
    println!("|------------------------------------------|----------|---------|---------|--------|-------|-------|-------|");
    let mut table = Table {
        healthz: 1.0,
        rows: Vec::new(),
    };

    let soak = env_or("AGORA_BENCH_SOAK_SECS", 0);
    if soak > 0 {
        run_soak(&runtime, &client, &bin, dir.path(), connections, soak, hot);
        return;
    }
    let server = Server::start(&bin, dir.path(), &[]);
    println!("(idle after start: {:.0} MiB)", server.rss_mib().0);
    runtime.block_on(async {
        let base = server.base.clone();
        let tokens = login_all(&client, &base, connections).await;
        let active = active_markets(&client, &base).await;
        let hz = drive(&client, &base, connections, secs, healthz_request()).await;
        table.healthz = hz.rps;
        table.row("GET /healthz", &hz, &server);
        drive(
            &client,
            &base,
            connections,
            2,
            Arc::new(move |c, n| {
                (
                    Method::GET,
                    format!(
                        "/api/markets/{}",
                        1 + (n * connections as u64 + c as u64) % hot
                    ),
                    None,
                    None,
                )
            }),
        )
        .await;
        let get = drive(&client, &base, connections, secs, get_request(hot)).await;
        table.row("GET /api/markets/{id} (cache warm)", &get, &server);
        let list = drive(
            &client,
            &base,
            connections,
            secs,
            Arc::new(|c, n| {
                let offset = spread(c, n) % 100 * 20;
                (
                    Method::GET,
                    format!("/api/markets?status=active&sort=volume&limit=20&offset={offset}"),
                    None,
                    None,
                )
            }),
        )
        .await;
        table.row("GET /api/markets (active, volume, page)", &list, &server);
        for (name, mode) in [
            ("GET /api/markets/search (hybrid)", "hybrid"),
            ("GET /api/markets/search (keyword only)", "keyword"),
        ] {
            let figures = drive(&client, &base, connections, secs, search_request(mode)).await;
            table.row(name, &figures, &server);
        }
        let stake = drive(
            &client,
            &base,
            connections,
            secs,
            stake_request(tokens.clone(), active.clone(), 0),
        )
        .await;
        table.row("POST positions (group commit, full)", &stake, &server);
        let (stake, get) = (
            stake_request(tokens.clone(), active.clone(), 1),
            get_request(hot),
        );
        let mixed = drive(
            &client,
            &base,
            connections,
            secs,
            Arc::new(move |c, n| if n % 10 == 9 { stake(c, n) } else { get(c, n) }),
        )
        .await;
        table.row("mixed 90% GET by id / 10% stakes", &mixed, &server);
    });
    server.stop();

    #[derive(Clone, Copy, PartialEq)]
    enum Load {
        Healthz,
        Get,
        Stakes,
    }
    let configs: [(&str, &[&str], Load); 6] = [
        (
            "GET /api/markets/{id} (cache off)",
            &["--cache-markets", "0"],
            Load::Get,
        ),
        (
            "GET /healthz (rate limiter off)",
            &["--rate-limit", "off"],
            Load::Healthz,
        ),
        (
            "GET /api/markets/{id} (warm, limiter off)",
            &["--rate-limit", "off"],
            Load::Get,
        ),
        (
            "POST positions (one commit each, full)",
            &["--write-batch", "1"],
            Load::Stakes,
        ),
        (
            "POST positions (group commit, normal)",
            &["--synchronous", "normal"],
            Load::Stakes,
        ),
        (
            "POST positions (one commit each, normal)",
            &["--synchronous", "normal", "--write-batch", "1"],
            Load::Stakes,
        ),
    ];
    let first_healthz = table.healthz;
    for (name, flags, load) in configs {
        let server = Server::start(&bin, dir.path(), flags);
        runtime.block_on(async {
            let base = server.base.clone();
            // Each server's own `/healthz`, measured just before, is the reference for its row
            // (machine noise drifts over a run); the limiter-off `/healthz` row is compared
            // with the first server's, which had the limiter on.
            table.healthz = if load == Load::Healthz {
                first_healthz
            } else {
                drive(&client, &base, connections, secs, healthz_request())
                    .await
                    .rps
            };
            let make = match load {
                Load::Stakes => {
                    let tokens = login_all(&client, &base, connections).await;
                    let active = active_markets(&client, &base).await;
                    stake_request(tokens, active, 1)
                }
                Load::Get => {
                    // Warm the cache as the first run did.
                    drive(&client, &base, connections, 2, get_request(hot)).await;
                    get_request(hot)
                }
                Load::Healthz => healthz_request(),
            };
            let figures = drive(&client, &base, connections, secs, make).await;
            table.row(name, &figures, &server);
        });
        server.stop();
    }

    let conn = rusqlite::Connection::open(dir.path().join("agora.db")).unwrap();
    let broken = agora::db::invariants::violations(&conn).unwrap();
    println!(
        "\ninvariants after the run: {}",
        if broken.is_empty() {
            "all hold".to_owned()
        } else {
            format!("BROKEN {broken:?}")
        }
    );
    let out = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench");
    std::fs::create_dir_all(&out).unwrap();
    let report = json!({"connections": connections, "seconds": secs, "markets": markets, "rows": table.rows, "invariants_broken": broken});
    std::fs::write(
        out.join("load.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    println!("rows written to target/bench/load.json");
    assert!(broken.is_empty(), "invariants broken");
}
