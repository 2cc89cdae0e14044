//! The comparison of issue 21, one server at a time in one run: a bare poem handler (the
//! reference for `/healthz`), agora, and optionally the Fastify + better-sqlite3 peer
//! (`AGORA_BENCH_PEER=fastify AGORA_BENCH_PEER_DIR=...`), the same workloads driven by the same
//! generator, with each server's idle and peak PSS over its process tree.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use serde_json::{json, Value};

use crate::{
    generator::{Figures, Generator, Make, LINES},
    process::{free_addr, PeakPss, Server},
    workloads::{active_markets, agora_stake, fastify_stake, get_path, list_request, login_all},
};

/// Users of the seeded databases; agora stakes with tokens of the first `TOKENS` of them.
pub const USERS: u64 = 10_000;
const TOKENS: usize = 200;
const ACTIVE: usize = 1_000;
/// Random ids over 100,000 markets: enough lines that wrk's cycle does not shrink the set of
/// markets read below what the caches hold.
const BY_ID_LINES: usize = 200_000;

const NAMES: [&str; 4] = [
    "health: GET /healthz (Fastify: /health)",
    "read by id: GET /api/markets/{random id}",
    "list: active by volume, random page of 500",
    "stake: POST /api/markets/{id}/positions",
];

/// The Fastify server of `AGORA_BENCH_PEER_DIR` (with its `node_modules` installed) and the
/// database the bench seeded for it.
pub struct Peer {
    dir: PathBuf,
    db: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Peer {
    /// The peer named by `AGORA_BENCH_PEER`, seeded with `markets` markets; none without it.
    pub fn from_env(markets: u64) -> Option<Peer> {
        let name = std::env::var("AGORA_BENCH_PEER").ok()?;
        assert_eq!(name, "fastify", "AGORA_BENCH_PEER: only `fastify` is known");
        let dir = PathBuf::from(
            std::env::var("AGORA_BENCH_PEER_DIR")
                .expect("AGORA_BENCH_PEER_DIR: a copy of the Fastify server with node_modules"),
        );
        assert!(
            dir.join("node_modules").is_dir(),
            "{}: no node_modules (run npm install there)",
            dir.display()
        );
        let tmp = tempfile::tempdir().unwrap();
        let db = tmp.path().join("fastify.db");
        let status = Command::new("python3")
            .arg(dir.join("seed.py"))
            .arg(&db)
            .args([markets.to_string(), USERS.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("python3 runs");
        assert!(status.success(), "seeding the Fastify database failed");
        Some(Peer { dir, db, _tmp: tmp })
    }

    fn start(&self) -> Server {
        let addr = free_addr();
        let port = addr.rsplit(':').next().unwrap();
        let mut command = Command::new(self.dir.join("run.sh"));
        command.arg(port).arg(&self.db);
        Server::spawn(command, &addr, "/health")
    }

    /// The ids of `n` active markets of its database, newest first as agora's are picked.
    fn active_markets(&self, n: usize) -> Arc<Vec<i64>> {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        let mut stmt = conn
            .prepare("SELECT id FROM markets WHERE status = 'active' ORDER BY created_at DESC, id LIMIT ?1")
            .unwrap();
        let ids = stmt
            .query_map([n as i64], |row| row.get(0))
            .unwrap()
            .collect::<Result<Vec<i64>, _>>()
            .unwrap();
        Arc::new(ids)
    }
}

/// One server's figures: a row per workload it ran, and its memory.
struct Side {
    rows: Vec<Figures>,
    idle_pss: f64,
    peak_pss: f64,
}

/// Starts a server, takes its idle PSS a second after it first answers, samples its peak PSS
/// while `work` runs on it, and stops it.
fn measure_server(server: Server, work: impl FnOnce(&str) -> Vec<Figures>) -> Side {
    std::thread::sleep(Duration::from_secs(1));
    let idle_pss = server.pss_mib();
    let peak = PeakPss::start(server.pid());
    let rows = work(&server.base);
    let peak_pss = peak.finish();
    server.stop();
    Side {
        rows,
        idle_pss,
        peak_pss,
    }
}

fn lines_for(workload: usize) -> usize {
    if workload == 1 {
        BY_ID_LINES
    } else {
        LINES
    }
}

/// Runs the comparison and prints its tables; returns them for `load.json`.
pub fn run(
    gen: &Generator,
    agora: &Path,
    bare_poem: &Path,
    data_dir: &Path,
    markets: u64,
    peer: Option<&Peer>,
    postgres: Option<&Postgres>,
) -> Value {
    let addr = free_addr();
    let mut command = Command::new(bare_poem);
    command.arg(&addr);
    let reference = measure_server(Server::spawn(command, &addr, "/healthz"), |base| {
        vec![gen.measure(base, &get_path("/healthz"))]
    });

    let by_id: Make = Arc::new(move |c, n| {
        let id = 1 + crate::workloads::spread(c, n) % markets;
        (
            reqwest::Method::GET,
            format!("/api/markets/{id}"),
            None,
            None,
        )
    });
    let agora_loads = |base: &str| -> Vec<Figures> {
        let tokens = gen.runtime.block_on(login_all(&gen.client, base, TOKENS));
        let active = gen
            .runtime
            .block_on(active_markets(&gen.client, base, ACTIVE));
        let loads = [
            get_path("/healthz"),
            by_id.clone(),
            list_request(),
            agora_stake(tokens, active),
        ];
        (0..loads.len())
            .map(|i| gen.measure_lines(base, &loads[i], lines_for(i)))
            .collect()
    };
    let ours = measure_server(Server::agora(agora, data_dir, &[]), agora_loads);
    let on_postgres = postgres.map(|pg| {
        measure_server(
            Server::agora(agora, pg.data_dir.path(), &["--database-url", &pg.url]),
            agora_loads,
        )
    });

    let theirs = peer.map(|peer| {
        let active = peer.active_markets(ACTIVE);
        measure_server(peer.start(), |base| {
            let loads = [
                get_path("/health"),
                by_id.clone(),
                list_request(),
                fastify_stake(USERS, active),
            ];
            (0..loads.len())
                .map(|i| gen.measure_lines(base, &loads[i], lines_for(i)))
                .collect()
        })
    });

    // Two processes on the one PostgreSQL database, the connections divided between them (as
    // a round-robin load balancer would), beside the one process above.
    let two_processes = postgres.map(|pg| {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let servers: Vec<Server> = dirs
            .iter()
            .map(|d| Server::agora(agora, d.path(), &["--database-url", &pg.url]))
            .collect();
        let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
        let tokens = gen
            .runtime
            .block_on(login_all(&gen.client, &bases[0], TOKENS));
        let active = gen
            .runtime
            .block_on(active_markets(&gen.client, &bases[0], ACTIVE));
        let loads = [
            get_path("/healthz"),
            by_id.clone(),
            list_request(),
            agora_stake(tokens, active),
        ];
        let rows: Vec<Figures> = (0..loads.len())
            .map(|i| gen.measure_spread(&bases, &loads[i], lines_for(i)))
            .collect();
        for s in servers {
            s.stop();
        }
        rows
    });

    print(&reference, &ours, theirs.as_ref());
    if let Some(pg) = &on_postgres {
        print_postgres(&ours, pg);
        if let Some(two) = &two_processes {
            print_two_processes(pg, two);
        }
    }
    let side = |s: &Side, names: &[&str]| {
        json!({
            "idle_pss_mib": s.idle_pss, "peak_pss_mib": s.peak_pss,
            "rows": s.rows.iter().zip(names).map(|(f, name)| json!({
                "workload": name, "rps": f.rps, "p50_ms": f.p50_ms, "p99_ms": f.p99_ms,
                "errors": f.errors, "requests": f.requests,
            })).collect::<Vec<_>>(),
        })
    };
    json!({
        "bare_poem": side(&reference, &["GET /healthz"]),
        "agora": side(&ours, &NAMES),
        "fastify": theirs.as_ref().map(|t| side(t, &NAMES)),
        "agora_postgres": on_postgres.as_ref().map(|p| side(p, &NAMES)),
        "agora_postgres_two_processes": two_processes.as_ref().map(|rows| rows.iter().zip(&NAMES).map(|(f, name)| json!({
            "workload": name, "rps": f.rps, "p50_ms": f.p50_ms, "p99_ms": f.p99_ms,
            "errors": f.errors, "requests": f.requests,
        })).collect::<Vec<_>>()),
    })
}

/// One agora process on PostgreSQL beside two on the same database (the generator's connections
/// divided between them; the worse process's latencies).
fn print_two_processes(one: &Side, two: &[Figures]) {
    println!("### Two agora processes on the one PostgreSQL beside one\n");
    println!("| workload | one process req/s | p99 ms | two processes req/s | p99 ms | errors | two / one |");
    println!("|---|---|---|---|---|---|---|");
    for (i, name) in NAMES.iter().enumerate() {
        let (a, b) = (&one.rows[i], &two[i]);
        println!(
            "| {name:<44} | {:>8.0} | {:>7.2} | {:>8.0} | {:>7.2} | {:>6} | {:>5.2} |",
            a.rps,
            a.p99_ms,
            b.rps,
            b.p99_ms,
            b.errors,
            b.rps / a.rps
        );
    }
    println!();
}

/// agora on PostgreSQL (`--database-url`): a database the bench seeded like the SQLite one,
/// and a data dir of its own (for the JWT secret).
pub struct Postgres {
    /// The database's URL.
    pub url: String,
    /// The server's data dir.
    pub data_dir: tempfile::TempDir,
}

/// The same workloads on agora over PostgreSQL (on the same machine), beside agora on SQLite.
/// PSS is agora's process only: PostgreSQL's own processes are not counted.
fn print_postgres(sqlite: &Side, pg: &Side) {
    let cells = |f: &Figures| {
        format!(
            "{:>8.0} | {:>7.2} | {:>7.2} | {:>6}",
            f.rps, f.p50_ms, f.p99_ms, f.errors
        )
    };
    println!("\n### agora on PostgreSQL (same machine) beside agora on SQLite\n");
    println!("| workload | PostgreSQL req/s | p50 ms | p99 ms | errors | SQLite req/s | p50 ms | p99 ms | errors | PostgreSQL / SQLite |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (i, name) in NAMES.iter().enumerate() {
        let (p, s) = (&pg.rows[i], &sqlite.rows[i]);
        println!(
            "| {name:<44} | {} | {} | {:>5.2} |",
            cells(p),
            cells(s),
            p.rps / s.rps
        );
    }
    println!(
        "\nagora's PSS on PostgreSQL (its own process; PostgreSQL's not counted): idle {:.0} MiB, peak {:.0} MiB\n",
        pg.idle_pss, pg.peak_pss
    );
}

fn print(reference: &Side, ours: &Side, theirs: Option<&Side>) {
    let hz = reference.rows[0].rps;
    let cells = |f: &Figures| {
        format!(
            "{:>8.0} | {:>7.2} | {:>7.2} | {:>6}",
            f.rps, f.p50_ms, f.p99_ms, f.errors
        )
    };
    println!("\n### Comparison (one server at a time, same generator, same run)\n");
    match theirs {
        Some(_) => {
            println!("| workload | agora req/s | p50 ms | p99 ms | errors | x bare poem | Fastify req/s | p50 ms | p99 ms | errors | agora / Fastify |");
            println!("|---|---|---|---|---|---|---|---|---|---|---|");
        }
        None => {
            println!("| workload | agora req/s | p50 ms | p99 ms | errors | x bare poem |");
            println!("|---|---|---|---|---|---|");
        }
    }
    let blank = if theirs.is_some() { " | | | | |" } else { "" };
    println!(
        "| {:<44} | {} | {:>5.2} |{blank}",
        "reference: bare poem GET /healthz",
        cells(&reference.rows[0]),
        1.0
    );
    for (i, name) in NAMES.iter().enumerate() {
        let f = &ours.rows[i];
        print!("| {name:<44} | {} | {:>5.2} |", cells(f), f.rps / hz);
        match theirs {
            Some(t) => println!(" {} | {:>5.2} |", cells(&t.rows[i]), f.rps / t.rows[i].rps),
            None => println!(),
        }
    }
    println!(
        "\nagora's /healthz: {:.2} of the bare poem handler's ({:.0} req/s)\n",
        ours.rows[0].rps / hz,
        hz
    );
    println!("| PSS MiB (process tree) | idle after start | peak under its run |");
    println!("|---|---|---|");
    println!("| agora | {:.0} | {:.0} |", ours.idle_pss, ours.peak_pss);
    if let Some(t) = theirs {
        println!(
            "| Fastify (primary + 2 workers) | {:.0} | {:.0} |",
            t.idle_pss, t.peak_pss
        );
    }
    println!(
        "| bare poem | {:.0} | {:.0} |",
        reference.idle_pss, reference.peak_pss
    );
}
