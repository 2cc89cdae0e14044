//! The load generator: `wrk` when it is on PATH (`apt-get install wrk`), replaying requests
//! pre-generated from a workload, else an in-process reqwest client driving the same workload.

use std::{
    fmt::Write as _,
    path::PathBuf,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::{Client, Method};
use serde_json::Value;
use tokio::runtime::Runtime;

/// One request to make, given a connection number and that connection's request count:
/// method, path, body, bearer token.
pub type Make =
    Arc<dyn Fn(usize, u64) -> (Method, String, Option<Value>, Option<String>) + Send + Sync>;

/// What one measured run gave.
pub struct Figures {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx answers and socket errors (connect, read, write, timeout).
    pub errors: u64,
    pub requests: u64,
}

/// Requests pre-generated for wrk per workload, unless the workload asks for more: wrk cycles
/// through them, so a workload whose spread matters (random ids over 100,000 markets) needs
/// more lines than it makes requests in a run.
pub const LINES: usize = 20_000;

/// wrk's Lua side: `init` reads the request file (method, path, token, body; tab-separated)
/// and formats every request once; `request` cycles through them from a random start per
/// thread; `done` prints the figures in one line for the bench to parse, exactly (wrk's own
/// summary rounds latencies to two decimals of a unit).
const SCRIPT: &str = r#"
local requests, count, index = {}, 0, 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end
function init(args)
  for line in io.lines(args[1]) do
    local method, path, token, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    local headers = {}
    if token ~= "" then headers["Authorization"] = "Bearer " .. token end
    if body == "" then body = nil else headers["Content-Type"] = "application/json" end
    count = count + 1
    requests[count] = wrk.format(method, path, headers, body)
  end
  math.randomseed(os.time() * 1000 + (thread_id or 0) * 7919)
  index = math.random(count) - 1
end
function request()
  index = index % count + 1
  return requests[index]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "agora-bench requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d socket=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"#;

struct Wrk {
    version: String,
    dir: tempfile::TempDir,
}

/// Drives a server: every run is a warm-up of the workload, then the measured seconds.
pub struct Generator {
    pub runtime: Runtime,
    pub client: Client,
    pub connections: usize,
    pub warmup: u64,
    pub secs: u64,
    wrk: Option<Wrk>,
}

impl Generator {
    pub fn new(connections: usize, warmup: u64, secs: u64) -> Generator {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let client = Client::builder()
            .pool_max_idle_per_host(connections)
            .build()
            .unwrap();
        // `AGORA_BENCH_GENERATOR=reqwest` chooses the in-process client even with wrk around.
        let in_process = std::env::var("AGORA_BENCH_GENERATOR").is_ok_and(|g| g == "reqwest");
        let wrk = Command::new("wrk")
            .arg("--version")
            .output()
            .ok()
            .filter(|_| !in_process)
            .map(|out| {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let version = text.lines().next().unwrap_or("wrk").to_owned();
                let dir = tempfile::tempdir().unwrap();
                std::fs::write(dir.path().join("replay.lua"), SCRIPT).unwrap();
                Wrk { version, dir }
            });
        Generator {
            runtime,
            client,
            connections,
            warmup,
            secs,
            wrk,
        }
    }

    /// Which generator runs, for the report.
    pub fn describe(&self) -> String {
        let shape = format!(
            "{} connections, {} s warm-up then {} s measured per workload",
            self.connections, self.warmup, self.secs
        );
        match &self.wrk {
            Some(wrk) => format!(
                "generator: {} (-t{} -c{}), {shape}",
                wrk.version.split(" Copyright").next().unwrap_or("wrk"),
                self.threads(),
                self.connections
            ),
            None => format!(
                "generator: in-process reqwest client (wrk is not on PATH or \
                 AGORA_BENCH_GENERATOR=reqwest; `apt-get install wrk` provides it), {shape}"
            ),
        }
    }

    fn threads(&self) -> usize {
        self.connections.clamp(1, 2)
    }

    /// The workload with the default warm-up and measured seconds.
    pub fn measure(&self, base: &str, make: &Make) -> Figures {
        self.run(base, make, LINES, self.warmup, self.secs)
    }

    /// The workload with `lines` pre-generated requests for wrk.
    pub fn measure_lines(&self, base: &str, make: &Make, lines: usize) -> Figures {
        self.run(base, make, lines, self.warmup, self.secs)
    }

    /// `warmup` seconds of the workload (not measured), then `secs` measured.
    pub fn run(&self, base: &str, make: &Make, lines: usize, warmup: u64, secs: u64) -> Figures {
        match &self.wrk {
            Some(wrk) => {
                let file = wrk.dir.path().join("requests.tsv");
                std::fs::write(&file, self.request_lines(make, lines)).unwrap();
                if warmup > 0 {
                    self.wrk_run(wrk, base, &file, warmup);
                }
                self.wrk_run(wrk, base, &file, secs)
            }
            None => self.runtime.block_on(async {
                if warmup > 0 {
                    drive(&self.client, base, self.connections, warmup, make).await;
                }
                drive(&self.client, base, self.connections, secs, make).await
            }),
        }
    }

    /// The workload spread over several servers of one deployment (processes behind a load
    /// balancer): the connections are divided among `bases`, each share driven by its own
    /// generator at the same time. Requests per second add up; the latencies are the worst
    /// server's (p50 and p99 each the largest).
    pub fn measure_spread(&self, bases: &[String], make: &Make, lines: usize) -> Figures {
        let share = (self.connections / bases.len()).max(1);
        // A generator per server: each has its own request file.
        let parts: Vec<Generator> = bases
            .iter()
            .map(|_| Generator::new(share, self.warmup, self.secs))
            .collect();
        let figures: Vec<Figures> = std::thread::scope(|scope| {
            let runs: Vec<_> = bases
                .iter()
                .zip(&parts)
                .map(|(base, part)| {
                    let make = make.clone();
                    scope.spawn(move || part.measure_lines(base, &make, lines))
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let requests: u64 = figures.iter().map(|f| f.requests).sum();
        Figures {
            rps: figures.iter().map(|f| f.rps).sum(),
            p50_ms: figures.iter().map(|f| f.p50_ms).fold(0.0, f64::max),
            p99_ms: figures.iter().map(|f| f.p99_ms).fold(0.0, f64::max),
            errors: figures.iter().map(|f| f.errors).sum(),
            requests,
        }
    }

    /// The workload's first `lines` requests, as the in-process generator would make them
    /// over all its connections, one per line.
    fn request_lines(&self, make: &Make, lines: usize) -> String {
        let mut out = String::with_capacity(lines * 64);
        for i in 0..lines {
            let conn = i % self.connections;
            let (method, path, body, token) = make(conn, (i / self.connections) as u64);
            let body = body.map(|b| b.to_string()).unwrap_or_default();
            let token = token.unwrap_or_default();
            writeln!(out, "{method}\t{path}\t{token}\t{body}").unwrap();
        }
        out
    }

    fn wrk_run(&self, wrk: &Wrk, base: &str, file: &std::path::Path, secs: u64) -> Figures {
        let script: PathBuf = wrk.dir.path().join("replay.lua");
        let out = Command::new("wrk")
            .arg(format!("-t{}", self.threads()))
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{secs}s"))
            .args(["--timeout", "10s", "--latency", "-s"])
            .arg(&script)
            .arg(format!("{base}/"))
            .arg("--")
            .arg(file)
            .output()
            .expect("wrk runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("agora-bench "))
            .unwrap_or_else(|| {
                panic!(
                    "wrk printed no figures: {text}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        let field = |name: &str| -> f64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        let requests = field("requests");
        Figures {
            rps: requests / (field("duration_us") / 1e6).max(1e-9),
            p50_ms: field("p50_us") / 1000.0,
            p99_ms: field("p99_us") / 1000.0,
            errors: (field("non2xx") + field("socket")) as u64,
            requests: requests as u64,
        }
    }
}

/// The in-process generator: `connections` tasks, each sending its next request as soon as the
/// previous one is answered.
async fn drive(client: &Client, base: &str, connections: usize, secs: u64, make: &Make) -> Figures {
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
