//! HTTP load benchmark: `cargo bench --bench load`.
//!
//! Builds the release server and a bare poem handler (`benches/load/bare_poem.rs`), seeds 100,000
//! markets and 10,000 users into a temporary data dir, and drives each server, started as its
//! own process, with 64 keep-alive connections: a warm-up of each workload (3 s), then the
//! measured seconds (5 s). The generator is `wrk -t2` when it is on PATH (`apt-get install
//! wrk`), else an in-process reqwest client; the first line printed says which ran.
//!
//! First the comparison ([`compare`]): the bare poem handler's `/healthz` beside agora's
//! health, read by id, list and stake workloads and (with `AGORA_BENCH_PEER=fastify
//! AGORA_BENCH_PEER_DIR=<the Fastify server with node_modules>`) the same workloads on the
//! Fastify peer, one server loaded at a time and the servers in turn for each workload, with
//! each server's idle and peak PSS; in `AGORA_BENCH_ROUNDS` rounds (default 3) of fresh
//! servers, then the rounds' ratios side by side.
//!
//! Then one table row per workload of agora: requests per second, p50 and p99 latency,
//! errors, and the ratio to the same server process's `/healthz` (measured at the start of the
//! first server, which runs the read, search, stake and mixed workloads, and just before the
//! workload on each server started with other flags), plus the server's RSS and peak RSS.
//! Stakes are also measured with group commit off (`--write-batch 1`) and with
//! `synchronous=normal` (the default is `full`). All rows are written to
//! `target/bench/load.json`, and at the end the money invariants are checked over the whole
//! database.
//!
//! The generator shares the machine's cores with the server, so the ratios (to `/healthz`, to
//! the bare handler, to Fastify) are the figures to compare, not the absolute rates.
//!
//! With `-- --database-url postgres://...` (`cargo bench --bench load -- --database-url URL`;
//! the bench seeds the database like the SQLite one, or reuses what an earlier run seeded),
//! the comparison adds agora on PostgreSQL: the same workloads, beside agora on SQLite; then two agora processes
//! on that one database, the connections divided between them (a round-robin load balancer),
//! beside one; and the invariants are checked over that database too.
//!
//! Environment: `AGORA_BENCH_SECS` (measured seconds per workload, default 5),
//! `AGORA_BENCH_WARMUP` (default 3), `AGORA_BENCH_MARKETS` (default 100000),
//! `AGORA_BENCH_CONNECTIONS` (default 64), `AGORA_BENCH_ROUNDS` (the comparison's rounds,
//! default 3), `AGORA_BENCH_ONLY=comparison` (the comparison tables alone, not the table of
//! every workload), `AGORA_BENCH_ONLY=search` (the search rows alone: with
//! `AGORA_BENCH_MARKETS=1000000`, search at a million markets), `AGORA_BENCH_ONLY=streams`
//! (stakes per second with 100 open event streams against none, and
//! the memory of an open stream: [`streams`]), `AGORA_BENCH_GENERATOR=reqwest` (the in-process
//! generator even when wrk is on PATH). With `AGORA_BENCH_SOAK_SECS=600` it runs the soak
//! instead: the mixed workload for that long, a row per minute with req/s, p50, p99 and the
//! server's RSS, then the invariants.

mod compare;
mod generator;
mod process;
mod streams;
mod workloads;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Instant,
};

use serde_json::{json, Value};

use generator::{Figures, Generator, Make};
use process::Server;
use workloads::{
    active_markets, get_request, healthz_request, login_all, related_request, search_request,
};
use workloads::{list_request_first_pages, stake_request};

const GRANT: &str = "1000000000";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Builds the release server and the bare poem handler; returns their paths.
fn release_binaries() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--bin", "agora"])
        .args(["--example", "bare_poem"])
        .current_dir(root)
        .status()
        .expect("cargo build runs");
    assert!(status.success(), "release build failed");
    let release = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"))
        .join("release");
    (
        release.join("agora"),
        release.join("examples").join("bare_poem"),
    )
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
            "| {name:<40} | {:>8.0} | {:>7.2} | {:>7.2} | {:>6} | {ratio:>5.2} | {:>8.0} | {rss:>5.0} | {peak:>5.0} |",
            f.rps, f.p50_ms, f.p99_ms, f.errors, self.healthz
        );
        self.rows.push(json!({
            "workload": name, "rps": f.rps, "p50_ms": f.p50_ms, "p99_ms": f.p99_ms, "errors": f.errors,
            "requests": f.requests, "ratio_to_healthz": ratio, "healthz_rps": self.healthz,
            "rss_mib": rss, "peak_rss_mib": peak,
        }));
    }
}

fn mixed(tokens: Arc<Vec<String>>, active: Arc<Vec<i64>>, hot: u64) -> Make {
    let (stake, get) = (stake_request(tokens, active, 1), get_request(hot));
    Arc::new(move |c, n| if n % 10 == 9 { stake(c, n) } else { get(c, n) })
}

/// The mixed workload (90% GET by id, 10% stakes) for `secs`, one row per minute: the figures
/// of that minute and the server's RSS at its end. Both should stay flat.
fn run_soak(gen: &Generator, bin: &Path, dir: &Path, secs: u64, hot: u64) {
    let server = Server::agora(bin, dir, &[]);
    let connections = gen.connections;
    println!("soak: mixed 90% GET by id / 10% stakes, {connections} connections, {secs} s");
    println!("| minute | req/s | p50 ms | p99 ms | errors | RSS MiB | peak MiB |");
    println!("|---|---|---|---|---|---|---|");
    let base = server.base.clone();
    let tokens = gen
        .runtime
        .block_on(login_all(&gen.client, &base, connections));
    let active = gen
        .runtime
        .block_on(active_markets(&gen.client, &base, 500));
    let make = mixed(tokens, active, hot);
    for minute in 1..=secs.div_ceil(60) {
        let span = 60.min(secs - (minute - 1) * 60);
        let f = gen.run(&base, &make, generator::LINES, 0, span);
        let (rss, peak) = server.rss_mib();
        println!(
            "| {minute} | {:.0} | {:.2} | {:.2} | {} | {rss:.0} | {peak:.0} |",
            f.rps, f.p50_ms, f.p99_ms, f.errors
        );
    }
    server.stop();
    check_invariants(dir, "the soak");
}

/// Checks the money invariants over the database in `dir`, prints the verdict and returns
/// what is broken.
fn check_invariants(dir: &Path, after: &str) -> Vec<&'static str> {
    let conn = rusqlite::Connection::open(dir.join("agora.db")).expect("open");
    let broken = agora::db::invariants::violations(&conn).expect("invariant queries");
    println!(
        "\ninvariants after {after}: {}",
        if broken.is_empty() {
            "all hold".to_owned()
        } else {
            format!("BROKEN {broken:?}")
        }
    );
    broken
}

/// The first server: the read, search, stake and mixed workloads, after its `/healthz`.
fn run_first_server(gen: &Generator, table: &mut Table, bin: &Path, dir: &Path, hot: u64) {
    let server = Server::agora(bin, dir, &[]);
    println!("(idle after start: {:.0} MiB RSS)\n", server.rss_mib().0);
    println!("| workload                                 |    req/s |  p50 ms |  p99 ms | errors |  x hz | its /healthz |   RSS |  peak |");
    println!("|------------------------------------------|----------|---------|---------|--------|-------|--------------|-------|-------|");
    let base = server.base.clone();
    let tokens = gen
        .runtime
        .block_on(login_all(&gen.client, &base, gen.connections));
    let active = gen
        .runtime
        .block_on(active_markets(&gen.client, &base, 500));
    let hz = gen.measure(&base, &healthz_request());
    table.healthz = hz.rps;
    table.row("GET /healthz", &hz, &server);
    let get = gen.measure(&base, &get_request(hot));
    table.row("GET /api/markets/{id} (cache warm)", &get, &server);
    let list = gen.measure(&base, &list_request_first_pages());
    table.row("GET /api/markets (active, volume, page)", &list, &server);
    let stake = stake_request(tokens.clone(), active.clone(), 0);
    let stake = gen.measure(&base, &stake);
    table.row("POST positions (group commit, full)", &stake, &server);
    let mixed = gen.measure(&base, &mixed(tokens, active, hot));
    table.row("mixed 90% GET by id / 10% stakes", &mixed, &server);
    server.stop();
}

/// Search at scale, on a server of its own with the rate limiter off (as the search targets
/// are set): its start-up (the search index loaded and partitioned) and idle PSS, then hybrid,
/// keyword-only and vector-only searches with the corpus's queries in turn, and the markets
/// related to random ones.
fn run_search_server(gen: &Generator, table: &mut Table, bin: &Path, dir: &Path, markets: u64) {
    let started = Instant::now();
    let server = Server::agora(bin, dir, &["--rate-limit", "off"]);
    println!(
        "\nsearch: {markets} markets, rate limiter off; ready {:.1} s after start (the index \
         loaded), idle PSS {:.0} MiB\n",
        started.elapsed().as_secs_f64(),
        server.pss_mib()
    );
    println!("| workload                                 |    req/s |  p50 ms |  p99 ms | errors |  x hz | its /healthz |   RSS |  peak |");
    println!("|------------------------------------------|----------|---------|---------|--------|-------|--------------|-------|-------|");
    let base = server.base.clone();
    table.healthz = gen.measure(&base, &healthz_request()).rps;
    for (name, mode) in [
        ("GET /api/markets/search (hybrid)", "hybrid"),
        ("GET /api/markets/search (keyword only)", "keyword"),
        ("GET /api/markets/search (vector only)", "vector"),
    ] {
        let figures = gen.measure(&base, &search_request(mode));
        table.row(name, &figures, &server);
    }
    let related = gen.measure(&base, &related_request(markets));
    table.row("GET /api/markets/{id}/related", &related, &server);
    server.stop();
}

#[derive(Clone, Copy, PartialEq)]
enum Load {
    Healthz,
    Get,
    Stakes,
}

/// The servers started with other flags: each row after that server's own `/healthz`.
fn run_other_servers(gen: &Generator, table: &mut Table, bin: &Path, dir: &Path, hot: u64) {
    let configs: [(&str, &[&str], Load); 6] = [
        (
            "GET /api/markets/{id} (cache off)",
            &["--cache-mb", "0"],
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
        let server = Server::agora(bin, dir, flags);
        let base = server.base.clone();
        // Each server's own `/healthz`, measured just before, is the reference for its row
        // (machine noise drifts over a run); the limiter-off `/healthz` row is compared with
        // the first server's, which had the limiter on.
        table.healthz = if load == Load::Healthz {
            first_healthz
        } else {
            gen.measure(&base, &healthz_request()).rps
        };
        let make = match load {
            Load::Stakes => {
                let tokens = gen
                    .runtime
                    .block_on(login_all(&gen.client, &base, gen.connections));
                let active = gen
                    .runtime
                    .block_on(active_markets(&gen.client, &base, 500));
                stake_request(tokens, active, 1)
            }
            Load::Get => get_request(hot),
            Load::Healthz => healthz_request(),
        };
        let figures = gen.measure(&base, &make);
        table.row(name, &figures, &server);
        server.stop();
    }
}

/// The value of `--database-url` among the bench's arguments (after `--`).
fn database_url() -> Option<String> {
    let mut args = std::env::args().skip_while(|a| a != "--database-url");
    args.next()?;
    Some(args.next().expect("--database-url needs a postgres:// URL"))
}

/// Seeds `markets` markets and [`compare::USERS`] users through `agora seed` with `extra` flags
/// (the data dir, and the database URL on PostgreSQL).
fn seed(bin: &Path, extra: &[&str], markets: u64, what: &str) {
    let started = Instant::now();
    let status = Command::new(bin)
        .args(extra)
        .args(["--log", "warn", "--signup-grant", GRANT, "seed"])
        .args(["--markets", &markets.to_string(), "--users"])
        .arg(compare::USERS.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "seeding {what} failed");
    println!(
        "seeded {markets} markets and {} users {what} in {:.1} s",
        compare::USERS,
        started.elapsed().as_secs_f64()
    );
}

/// Markets already in the PostgreSQL database at `url` (an earlier run's seed is reused: seeding
/// 100,000 markets there takes minutes); 0 when it has no schema yet.
fn seeded_markets(url: &str) -> u64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to PostgreSQL");
        tokio::spawn(connection);
        match client.query_one("SELECT count(*) FROM markets", &[]).await {
            Ok(row) => row.get::<_, i64>(0) as u64,
            Err(_) => 0,
        }
    })
}

/// Checks the money invariants over the PostgreSQL database at `url`.
fn check_postgres_invariants(gen: &Generator, url: &str) -> Vec<&'static str> {
    let broken = gen.runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to PostgreSQL");
        tokio::spawn(connection);
        let mut broken = Vec::new();
        for (name, sql) in agora::db::invariants::CHECKS {
            let n: i64 = client.query_one(*sql, &[]).await.expect("check").get(0);
            if n != 0 {
                broken.push(*name);
            }
        }
        broken
    });
    println!(
        "invariants on PostgreSQL: {}",
        if broken.is_empty() {
            "all hold".to_owned()
        } else {
            format!("BROKEN {broken:?}")
        }
    );
    broken
}

fn main() {
    let secs = env_or("AGORA_BENCH_SECS", 5);
    let warmup = env_or("AGORA_BENCH_WARMUP", 3);
    let markets = env_or("AGORA_BENCH_MARKETS", 100_000);
    let connections = env_or("AGORA_BENCH_CONNECTIONS", 64) as usize;
    let (bin, bare_poem) = release_binaries();
    let dir = tempfile::tempdir().unwrap();
    seed(
        &bin,
        &["--data-dir", dir.path().to_str().unwrap()],
        markets,
        "into SQLite",
    );
    let postgres = database_url().map(|url| {
        let data_dir = tempfile::tempdir().unwrap();
        let flags = [
            "--data-dir",
            data_dir.path().to_str().unwrap(),
            "--database-url",
            &url,
        ];
        let seeded = seeded_markets(&url);
        if seeded >= markets {
            println!("reusing the {seeded} markets already in the PostgreSQL database");
        } else {
            seed(&bin, &flags, markets - seeded, "into PostgreSQL");
        }
        compare::Postgres { url, data_dir }
    });
    let gen = Generator::new(connections, warmup, secs);
    println!("{}", gen.describe());
    // The cache holds 10,000 markets by default: "cache warm" reads pick among the first 10,000.
    let hot = markets.min(10_000);

    let soak = env_or("AGORA_BENCH_SOAK_SECS", 0);
    if soak > 0 {
        run_soak(&gen, &bin, dir.path(), soak, hot);
        return;
    }

    // `AGORA_BENCH_ONLY=search`: the search rows alone (with AGORA_BENCH_MARKETS=1000000, the
    // 1M case).
    let only = std::env::var("AGORA_BENCH_ONLY").unwrap_or_default();
    if only == "search" {
        let mut table = Table {
            healthz: 1.0,
            rows: Vec::new(),
        };
        run_search_server(&gen, &mut table, &bin, dir.path(), markets);
        return;
    }

    // `AGORA_BENCH_ONLY=streams`: stakes with and without open event streams, and the memory
    // of an open stream.
    if only == "streams" {
        let figures = streams::run(&gen, &bin, dir.path());
        let broken = check_invariants(dir.path(), "the streams run");
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(
            out.join("streams.json"),
            serde_json::to_string_pretty(&figures).unwrap(),
        )
        .unwrap();
        println!("figures written to target/bench/streams.json");
        assert!(broken.is_empty(), "invariants broken");
        return;
    }

    let peer = compare::Peer::from_env(markets);
    if peer.is_some() {
        println!("seeded the Fastify peer's database ({markets} markets)");
    }
    let comparison = compare::run(
        &gen,
        &bin,
        &bare_poem,
        dir.path(),
        markets,
        peer.as_ref(),
        postgres.as_ref(),
    );

    // `AGORA_BENCH_ONLY=comparison`: the comparison tables alone (a quicker run).
    let only_comparison = only == "comparison";
    println!("\n### agora's workloads (RSS and peak RSS of the server in MiB)\n");
    let mut table = Table {
        healthz: 1.0,
        rows: Vec::new(),
    };
    if !only_comparison {
        run_first_server(&gen, &mut table, &bin, dir.path(), hot);
        run_other_servers(&gen, &mut table, &bin, dir.path(), hot);
        run_search_server(&gen, &mut table, &bin, dir.path(), markets);
    }

    let mut broken = check_invariants(dir.path(), "the run");
    if let Some(pg) = &postgres {
        broken.extend(check_postgres_invariants(&gen, &pg.url));
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench");
    std::fs::create_dir_all(&out).unwrap();
    let report = json!({
        "generator": gen.describe(), "connections": connections, "seconds": secs,
        "warmup_seconds": warmup, "markets": markets, "comparison": comparison,
        "rows": table.rows, "invariants_broken": broken,
    });
    std::fs::write(
        out.join("load.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    println!("rows written to target/bench/load.json");
    assert!(broken.is_empty(), "invariants broken");
}
