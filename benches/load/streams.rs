//! Event streams under load (`AGORA_BENCH_ONLY=streams`).
//!
//! Stakes per second on one server with no event stream open, then with 100 open streams
//! (`GET /api/events`, opened by the bench: one task each, reading every event as it comes and
//! counting the `stake.placed` ones), then with none again, in one run; the ratio is the
//! with-streams rate over the mean of the two without. Every stream must have received every
//! stake of its window (else the count shows it). Then the memory an open stream costs: a fresh
//! server's PSS idle, and again with 1,000 idle streams open; the difference over 1,000.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use reqwest::Client;
use serde_json::{json, Value};

use crate::{
    generator::{Figures, Generator, Make},
    process::Server,
    workloads::{active_markets, login_all, stake_request},
};

/// Streams open during the stake load.
const LOAD_STREAMS: usize = 100;
/// Idle streams open for the memory figure.
const IDLE_STREAMS: usize = 1_000;

/// Open streams, each counting what it reads.
struct Streams {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// `stake.placed` events each stream has read.
    stakes: Arc<Vec<AtomicU64>>,
    /// `stream.dropped` messages (a stream that fell behind).
    dropped: Arc<AtomicU64>,
}

impl Streams {
    /// Opens `n` streams on `base` and returns once every one has its response head.
    fn open(gen: &Generator, base: &str, n: usize, read: bool) -> Streams {
        let client = Client::builder().build().unwrap();
        let opened = Arc::new(AtomicUsize::new(0));
        let stakes: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
        let dropped = Arc::new(AtomicU64::new(0));
        let tasks = (0..n)
            .map(|i| {
                let (client, url) = (client.clone(), format!("{base}/api/events"));
                let (opened, stakes, dropped) = (opened.clone(), stakes.clone(), dropped.clone());
                gen.runtime.spawn(async move {
                    let mut response = client.get(url).send().await.expect("stream opens");
                    assert!(response.status().is_success(), "{}", response.status());
                    opened.fetch_add(1, Ordering::SeqCst);
                    if !read {
                        // Held open, never read: an idle client.
                        std::future::pending::<()>().await;
                    }
                    // Count whole lines: a chunk may end inside one.
                    let mut tail = Vec::new();
                    while let Ok(Some(chunk)) = response.chunk().await {
                        tail.extend_from_slice(&chunk);
                        let Some(end) = tail.iter().rposition(|&b| b == b'\n') else {
                            continue;
                        };
                        let text = String::from_utf8_lossy(&tail[..=end]);
                        let placed = text.matches("event: stake.placed\n").count() as u64;
                        if text.contains("event: stream.dropped\n") {
                            dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        stakes[i].fetch_add(placed, Ordering::Relaxed);
                        tail.drain(..=end);
                    }
                })
            })
            .collect();
        let started = Instant::now();
        while opened.load(Ordering::SeqCst) < n {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "only {} of {n} streams opened",
                opened.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Streams {
            tasks,
            stakes,
            dropped,
        }
    }

    /// The fewest and the most `stake.placed` events one stream has read.
    fn read(&self) -> (u64, u64) {
        let counts = self.stakes.iter().map(|c| c.load(Ordering::Relaxed));
        (counts.clone().min().unwrap_or(0), counts.max().unwrap_or(0))
    }

    fn close(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Stake events in the outbox of the SQLite database in `dir`.
fn stake_events(dir: &Path) -> u64 {
    let conn = rusqlite::Connection::open(dir.join("agora.db")).expect("open");
    conn.query_row(
        "SELECT count(*) FROM events WHERE kind = 'stake.placed'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .expect("count") as u64
}

/// CPU time the process `pid` has used, user and system, in microseconds.
fn cpu_micros(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) are space-separated; utime and
    // stime are the 14th and 15th fields, in clock ticks (100 a second on Linux).
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11..13]
        .iter()
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    ticks * 10_000.0
}

/// One stake window: its figures, the stakes committed in it (warm-up included) and the
/// server's CPU time per stake.
struct Window {
    figures: Figures,
    stakes: u64,
    cpu_per_stake_us: f64,
}

fn window(gen: &Generator, server: &Server, dir: &Path, make: &Make) -> Window {
    let (first, cpu) = (stake_events(dir), cpu_micros(server.pid()));
    let figures = gen.measure(&server.base, make);
    // The stakes in flight when the generator stopped commit, and the streams read them.
    std::thread::sleep(Duration::from_secs(1));
    let stakes = stake_events(dir) - first;
    let cpu_per_stake_us = (cpu_micros(server.pid()) - cpu) / stakes.max(1) as f64;
    Window {
        figures,
        stakes,
        cpu_per_stake_us,
    }
}

fn print_row(name: &str, w: &Window) {
    let f = &w.figures;
    println!(
        "| {name:<34} | {:>7.0} | {:>6.2} | {:>6.2} | {:>6} | {:>11.0} |",
        f.rps, f.p50_ms, f.p99_ms, f.errors, w.cpu_per_stake_us
    );
}

/// Runs both measurements; returns the figures for `load.json`.
pub fn run(gen: &Generator, bin: &Path, dir: &Path) -> Value {
    let limit = ["--event-streams-per-client", "2000"];
    let server = Server::agora(bin, dir, &limit);
    let base = server.base.clone();
    let tokens = gen
        .runtime
        .block_on(login_all(&gen.client, &base, gen.connections));
    let active = gen
        .runtime
        .block_on(active_markets(&gen.client, &base, 500));
    let stake = stake_request(tokens, active, 0);
    println!(
        "\n### stakes with event streams open ({} connections staking)\n",
        gen.connections
    );
    println!("| POST positions                     |   req/s | p50 ms | p99 ms | errors | server CPU µs/stake |");
    println!(
        "|------------------------------------|---------|--------|--------|--------|-------------|"
    );
    let before = window(gen, &server, dir, &stake);
    print_row("no stream open", &before);

    // The tail has passed every earlier stake (a window ends 1 s after its load): the streams
    // see only the next window's.
    let streams = Streams::open(gen, &base, LOAD_STREAMS, true);
    let with = window(gen, &server, dir, &stake);
    print_row(&format!("{LOAD_STREAMS} streams open, reading"), &with);
    let (fewest, most) = streams.read();
    let dropped = streams.dropped.load(Ordering::Relaxed);
    streams.close();
    let after = window(gen, &server, dir, &stake);
    print_row("no stream open (again)", &after);
    let ratio = with.figures.rps / ((before.figures.rps + after.figures.rps) / 2.0);
    println!(
        "\nwith {LOAD_STREAMS} streams: {ratio:.2} x the stake rate without (mean of before and \
         after); each stream read {fewest}..{most} stake events of the {} committed while it \
         was open ({dropped} dropped)",
        with.stakes
    );
    server.stop();

    // Memory: a fresh server, idle, then holding idle streams.
    let server = Server::agora(bin, dir, &limit);
    std::thread::sleep(Duration::from_secs(2));
    let idle = server.pss_mib();
    let streams = Streams::open(gen, &server.base, IDLE_STREAMS, false);
    std::thread::sleep(Duration::from_secs(2));
    let open = server.pss_mib();
    let per_stream_kib = (open - idle) * 1024.0 / IDLE_STREAMS as f64;
    println!(
        "memory: PSS {idle:.1} MiB idle, {open:.1} MiB with {IDLE_STREAMS} idle streams open: \
         {per_stream_kib:.1} KiB per open stream"
    );
    streams.close();
    server.stop();
    json!({
        "stakes_without_streams_rps": [before.figures.rps, after.figures.rps],
        "stakes_with_streams_rps": with.figures.rps,
        "server_cpu_us_per_stake": [before.cpu_per_stake_us, with.cpu_per_stake_us, after.cpu_per_stake_us],
        "streams": LOAD_STREAMS,
        "ratio": ratio,
        "stake_events_in_window": with.stakes,
        "events_read_per_stream": [fewest, most],
        "streams_dropped": dropped,
        "idle_pss_mib": idle,
        "pss_with_idle_streams_mib": open,
        "idle_streams": IDLE_STREAMS,
        "kib_per_stream": per_stream_kib,
    })
}
