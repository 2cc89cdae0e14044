//! HTTP load benchmark: `cargo bench --bench load`.
//!
//! Builds the release server, seeds 100,000 markets and 10,000 users into a temporary data
//! dir, starts the server as its own process, and drives it with 64 keep-alive connections for
//! a fixed time per workload. Prints one table row per workload: requests per second, p50 and
//! p99 latency, errors, and the ratio to the same server's `/healthz` in the same run. Stakes
//! are measured with group commit on and off (`--write-batch 256` vs `1`) under
//! `synchronous=normal` and `full`.
//!
//! Environment: `AGORA_BENCH_SECS` (seconds per workload, default 10), `AGORA_BENCH_MARKETS`
//! (default 100000), `AGORA_BENCH_CONNECTIONS` (default 64).

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
        for _ in 0..100 {
            if std::net::TcpStream::connect(&bind).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not start");
    }

    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    fn stop(mut self) {
        // SIGTERM: graceful shutdown (drains the writer, checkpoints the WAL).
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
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
    let resp: Value = client
        .get(format!(
            "{base}/api/markets?status=active&sort=created_at&limit=100"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Arc::new(
        resp["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_i64().unwrap())
            .collect(),
    )
}

fn row(name: &str, f: &Figures, healthz: f64, rss: f64) {
    println!(
        "| {name:<34} | {:>9.0} | {:>7.2} | {:>7.2} | {:>6} | {:>9} | {:>5.2} | {rss:>6.0} |",
        f.rps,
        f.p50_ms,
        f.p99_ms,
        f.errors,
        f.requests,
        f.rps / healthz
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
    println!(
        "{connections} connections, {secs} s per workload, server RSS at the end of each run\n"
    );
    println!("| workload                           |     req/s | p50 ms  | p99 ms  | errors |  requests | x hz  | RSS MiB |");
    println!("|------------------------------------|-----------|---------|---------|--------|-----------|-------|---------|");

    let server = Server::start(&bin, dir.path(), &[]);
    runtime.block_on(async {
        let base = server.base.clone();
        let tokens = login_all(&client, &base, connections).await;
        let active = active_markets(&client, &base).await;
        let hz = drive(
            &client,
            &base,
            connections,
            secs,
            Arc::new(|_, _| (Method::GET, "/healthz".into(), None, None)),
        )
        .await;
        row("GET /healthz", &hz, hz.rps, server.rss_mib());
        let total = markets.max(1);
        let get = drive(
            &client,
            &base,
            connections,
            secs,
            Arc::new(move |c, n| {
                let id = 1 + (c as u64 * 7919 + n * 104_729) % total;
                (Method::GET, format!("/api/markets/{id}"), None, None)
            }),
        )
        .await;
        row(
            "GET /api/markets/{id} (any of all)",
            &get,
            hz.rps,
            server.rss_mib(),
        );
        let hot = drive(
            &client,
            &base,
            connections,
            secs,
            Arc::new(move |c, n| {
                let id = 1 + (c as u64 + n) % 100;
                (Method::GET, format!("/api/markets/{id}"), None, None)
            }),
        )
        .await;
        row(
            "GET /api/markets/{id} (hot 100)",
            &hot,
            hz.rps,
            server.rss_mib(),
        );
        let list = drive(
            &client,
            &base,
            connections,
            secs,
            Arc::new(|_, _| {
                (
                    Method::GET,
                    "/api/markets?status=active&sort=volume&limit=20".into(),
                    None,
                    None,
                )
            }),
        )
        .await;
        row(
            "GET /api/markets?sort=volume",
            &list,
            hz.rps,
            server.rss_mib(),
        );
        let t = tokens.clone();
        let create = drive(
            &client,
            &base,
            connections,
            secs,
            Arc::new(move |c, n| {
                let body =
                    json!({"name": format!("Bench market {c}-{n}"), "outcomes": ["YES", "NO"]});
                (
                    Method::POST,
                    "/api/markets".into(),
                    Some(body),
                    Some(t[c].clone()),
                )
            }),
        )
        .await;
        row("POST /api/markets", &create, hz.rps, server.rss_mib());
        let (t, a) = (tokens.clone(), active.clone());
        let stake = drive(
            &client,
            &base,
            connections,
            secs,
            Arc::new(move |c, n| {
                let id = a[(c + n as usize) % a.len()];
                (
                    Method::POST,
                    format!("/api/markets/{id}/positions"),
                    Some(json!({"outcome": 0, "amount": 1})),
                    Some(t[c].clone()),
                )
            }),
        )
        .await;
        row(
            "POST positions (normal, batch 256)",
            &stake,
            hz.rps,
            server.rss_mib(),
        );
    });
    server.stop();

    for (sync, batch) in [("normal", "1"), ("full", "256"), ("full", "1")] {
        let server = Server::start(
            &bin,
            dir.path(),
            &["--synchronous", sync, "--write-batch", batch],
        );
        runtime.block_on(async {
            let base = server.base.clone();
            let tokens = login_all(&client, &base, connections).await;
            let active = active_markets(&client, &base).await;
            let hz = drive(
                &client,
                &base,
                connections,
                secs.min(5),
                Arc::new(|_, _| (Method::GET, "/healthz".into(), None, None)),
            )
            .await;
            let stake = drive(
                &client,
                &base,
                connections,
                secs,
                Arc::new(move |c, n| {
                    let id = active[(c + n as usize) % active.len()];
                    (
                        Method::POST,
                        format!("/api/markets/{id}/positions"),
                        Some(json!({"outcome": 1, "amount": 1})),
                        Some(tokens[c].clone()),
                    )
                }),
            )
            .await;
            row(
                &format!("POST positions ({sync}, batch {batch})"),
                &stake,
                hz.rps,
                server.rss_mib(),
            );
        });
        server.stop();
    }
}
