//! The comparison of issue 21: a bare poem handler (the reference for `/healthz`), agora, and
//! optionally the Fastify + better-sqlite3 peer (`AGORA_BENCH_PEER=fastify
//! AGORA_BENCH_PEER_DIR=...`), the same workloads driven by the same generator, with each
//! server's idle and peak PSS over its process tree. In rounds (`AGORA_BENCH_ROUNDS`, default
//! 3), each with fresh servers started together: each workload runs on one server at a time,
//! the servers in turn, so the two figures of a ratio are seconds apart; a last table puts the
//! rounds' ratios side by side with their median.

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
    let up = Up::watch(server);
    let rows = work(&up.server.base);
    up.finish(rows)
}

/// A running server: its PSS when it was first watched, and the sampler of its peak since.
struct Up {
    server: Server,
    idle_pss: f64,
    peak: PeakPss,
}

impl Up {
    fn watch(server: Server) -> Up {
        Up {
            idle_pss: server.pss_mib(),
            peak: PeakPss::start(server.pid()),
            server,
        }
    }

    /// Stops the server; its figures are `rows`.
    fn finish(self, rows: Vec<Figures>) -> Side {
        let peak_pss = self.peak.finish();
        self.server.stop();
        Side {
            rows,
            idle_pss: self.idle_pss,
            peak_pss,
        }
    }
}

fn lines_for(workload: usize) -> usize {
    if workload == 1 {
        BY_ID_LINES
    } else {
        LINES
    }
}

/// Each of `loads` measured on `base`, in order.
fn measure_all(gen: &Generator, base: &str, loads: &[Make]) -> Vec<Figures> {
    (0..loads.len())
        .map(|i| gen.measure_lines(base, &loads[i], lines_for(i)))
        .collect()
}

/// agora's workloads in the order of [`NAMES`] (logging in the users the stakes need).
fn agora_loads(gen: &Generator, base: &str, by_id: &Make) -> Vec<Make> {
    let tokens = gen.runtime.block_on(login_all(&gen.client, base, TOKENS));
    let active = gen
        .runtime
        .block_on(active_markets(&gen.client, base, ACTIVE));
    vec![
        get_path("/healthz"),
        by_id.clone(),
        list_request(),
        agora_stake(tokens, active),
    ]
}

/// The Fastify peer's workloads in the order of [`NAMES`].
fn peer_loads(peer: &Peer, by_id: &Make) -> Vec<Make> {
    vec![
        get_path("/health"),
        by_id.clone(),
        list_request(),
        fastify_stake(USERS, peer.active_markets(ACTIVE)),
    ]
}

/// One round of the comparison: every server of it fresh.
struct Round {
    reference: Side,
    ours: Side,
    theirs: Option<Side>,
}

/// A round: the bare poem handler, agora and the peer started together (a second later each
/// one's idle PSS), then each workload on each server in turn, so that the figures compared
/// are seconds apart rather than minutes (this VM's stolen CPU varies by the minute). Who goes
/// first alternates by workload and by round.
fn round(
    gen: &Generator,
    agora: &Path,
    bare_poem: &Path,
    data_dir: &Path,
    by_id: &Make,
    peer: Option<&Peer>,
    index: usize,
) -> Round {
    let addr = free_addr();
    let mut command = Command::new(bare_poem);
    command.arg(&addr);
    let reference = Server::spawn(command, &addr, "/healthz");
    let ours = Server::agora(agora, data_dir, &[]);
    let theirs = peer.map(Peer::start);
    std::thread::sleep(Duration::from_secs(1));
    let (reference, ours, theirs) = (Up::watch(reference), Up::watch(ours), theirs.map(Up::watch));

    let reference_rows = vec![gen.measure(&reference.server.base, &get_path("/healthz"))];
    let our_loads = agora_loads(gen, &ours.server.base, by_id);
    let their_loads = peer.map(|p| peer_loads(p, by_id));
    let (mut our_rows, mut their_rows) = (Vec::new(), Vec::new());
    for i in 0..NAMES.len() {
        let mut ours_now =
            || our_rows.push(gen.measure_lines(&ours.server.base, &our_loads[i], lines_for(i)));
        let mut theirs_now = || {
            if let (Some(up), Some(loads)) = (&theirs, &their_loads) {
                their_rows.push(gen.measure_lines(&up.server.base, &loads[i], lines_for(i)));
            }
        };
        if (index + i).is_multiple_of(2) {
            ours_now();
            theirs_now();
        } else {
            theirs_now();
            ours_now();
        }
    }
    Round {
        reference: reference.finish(reference_rows),
        ours: ours.finish(our_rows),
        theirs: theirs.map(|up| up.finish(their_rows)),
    }
}

/// Runs the comparison (`AGORA_BENCH_ROUNDS` rounds, default 3, each with fresh servers) and
/// prints its tables; returns them for `load.json`.
pub fn run(
    gen: &Generator,
    agora: &Path,
    bare_poem: &Path,
    data_dir: &Path,
    markets: u64,
    peer: Option<&Peer>,
    postgres: Option<&Postgres>,
) -> Value {
    let rounds = crate::env_or("AGORA_BENCH_ROUNDS", 3) as usize;
    let by_id: Make = Arc::new(move |c, n| {
        let id = 1 + crate::workloads::spread(c, n) % markets;
        (
            reqwest::Method::GET,
            format!("/api/markets/{id}"),
            None,
            None,
        )
    });
    let rounds: Vec<Round> = (0..rounds.max(1))
        .map(|index| round(gen, agora, bare_poem, data_dir, &by_id, peer, index))
        .collect();
    for (index, r) in rounds.iter().enumerate() {
        println!(
            "\n### Comparison, round {} of {} (one server loaded at a time, in turn)\n",
            index + 1,
            rounds.len()
        );
        print(&r.reference, &r.ours, r.theirs.as_ref());
    }
    if rounds.len() > 1 {
        print_rounds(&rounds);
    }

    // agora on PostgreSQL, after the rounds, beside the first round's agora on SQLite.
    let on_postgres = postgres.map(|pg| {
        measure_server(
            Server::agora(agora, pg.data_dir.path(), &["--database-url", &pg.url]),
            |base| measure_all(gen, base, &agora_loads(gen, base, &by_id)),
        )
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
        let loads = agora_loads(gen, &bases[0], &by_id);
        let rows: Vec<Figures> = (0..loads.len())
            .map(|i| gen.measure_spread(&bases, &loads[i], lines_for(i)))
            .collect();
        for s in servers {
            s.stop();
        }
        rows
    });

    if let Some(pg) = &on_postgres {
        print_postgres(&rounds[0].ours, pg);
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
        "rounds": rounds.iter().map(|r| json!({
            "bare_poem": side(&r.reference, &["GET /healthz"]),
            "agora": side(&r.ours, &NAMES),
            "fastify": r.theirs.as_ref().map(|t| side(t, &NAMES)),
        })).collect::<Vec<_>>(),
        "agora_postgres": on_postgres.as_ref().map(|p| side(p, &NAMES)),
        "agora_postgres_two_processes": two_processes.as_ref().map(|rows| rows.iter().zip(&NAMES).map(|(f, name)| json!({
            "workload": name, "rps": f.rps, "p50_ms": f.p50_ms, "p99_ms": f.p99_ms,
            "errors": f.errors, "requests": f.requests,
        })).collect::<Vec<_>>()),
    })
}

/// The rounds side by side: agora against the peer (or, without one, against the bare poem
/// handler for `/healthz` alone), round by round and the median.
fn print_rounds(rounds: &[Round]) {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let heads: Vec<String> = (1..=rounds.len()).map(|k| format!("round {k}")).collect();
    println!("### The rounds side by side\n");
    println!("| | {} | median |", heads.join(" | "));
    println!("|---|{}---|", "---|".repeat(rounds.len()));
    let row = |label: &str, ratios: Vec<f64>| {
        let cells: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "| {label} | {} | {:.2} |",
            cells.join(" | "),
            median(ratios)
        );
    };
    row(
        "/healthz x bare poem",
        rounds
            .iter()
            .map(|r| r.ours.rows[0].rps / r.reference.rows[0].rps)
            .collect(),
    );
    if rounds.iter().all(|r| r.theirs.is_some()) {
        for (i, name) in NAMES.iter().enumerate() {
            let ratios = rounds
                .iter()
                .map(|r| r.ours.rows[i].rps / r.theirs.as_ref().unwrap().rows[i].rps)
                .collect();
            row(&format!("{name}: agora / Fastify"), ratios);
        }
        let pss = |label: &str, f: &dyn Fn(&Side) -> f64| {
            row(
                label,
                rounds
                    .iter()
                    .map(|r| f(&r.ours) / f(r.theirs.as_ref().unwrap()))
                    .collect(),
            )
        };
        pss("idle PSS: agora / Fastify", &|s| s.idle_pss);
        pss("peak PSS: agora / Fastify", &|s| s.peak_pss);
    }
    println!();
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
