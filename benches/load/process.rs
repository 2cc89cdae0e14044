//! The servers under load as child processes: starting one and waiting for its health check,
//! stopping its whole process tree, and its memory (RSS of the process, PSS of the tree).

use std::{
    collections::HashMap,
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

pub const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";

/// A loopback address with a port nobody listens on.
pub fn free_addr() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// A server process; dropping it stops it.
pub struct Server {
    child: Option<Child>,
    pub base: String,
}

impl Server {
    /// Spawns `command` and waits until `GET {health}` on `addr` answers 200.
    pub fn spawn(mut command: Command, addr: &str, health: &str) -> Server {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server starts");
        let server = Server {
            child: Some(child),
            base: format!("http://{addr}"),
        };
        // The port may accept connections before the server answers (agora loads its search
        // index first: half a minute at a million markets). Wait for an answer.
        for _ in 0..3600 {
            if healthy(addr, health) {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server {command:?} did not start");
    }

    /// agora with the bench's flags plus `extra`.
    pub fn agora(bin: &Path, dir: &Path, extra: &[&str]) -> Server {
        let bind = free_addr();
        let mut args = vec![
            "--data-dir",
            dir.to_str().unwrap(),
            "--bind",
            &bind,
            // The default log level: the access log writes its line for every request, as in
            // production (to a null stderr here), and its cost is in every figure.
            "--log",
            "info",
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
        let mut command = Command::new(bin);
        command.args(&args);
        Server::spawn(command, &bind, "/healthz")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Current and peak resident memory of the server process, in MiB.
    pub fn rss_mib(&self) -> (f64, f64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .map_or(0.0, |kb| kb / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// PSS of the server and all its descendants, in MiB.
    pub fn pss_mib(&self) -> f64 {
        tree_pss_mib(self.pid())
    }

    /// SIGTERM to the server (agora drains its writer and checkpoints the WAL; Fastify's
    /// primary stops its workers), then SIGKILL to whatever of its tree is left after 30 s.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let tree = descendants(child.id());
        signal("-TERM", &[child.id()]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        while Instant::now() < deadline && tree.iter().any(|p| alive(*p)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left: Vec<u32> = tree.into_iter().filter(|p| alive(*p)).collect();
        signal("-KILL", &left);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn signal(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(sig)
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

fn alive(pid: u32) -> bool {
    // A zombie has exited: its parent just has not collected it yet.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, s)| !s.starts_with('Z'))
    })
}

/// True when `GET {path}` on `addr` answers 200.
fn healthy(addr: &str, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut answer = [0u8; 12];
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .and_then(|()| stream.read_exact(&mut answer))
        .is_ok_and(|()| answer.ends_with(b"200"))
}

/// All descendants of `root` (children, their children, ...), from `/proc/*/stat`.
fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let (mut out, mut next) = (Vec::new(), vec![root]);
    while let Some(pid) = next.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            out.push(child);
            next.push(child);
        }
    }
    out
}

/// PSS of `root` and all its descendants, in MiB (`Pss:` of `/proc/PID/smaps_rollup`): each
/// shared page counts once over the processes sharing it, so the sum over a tree of workers
/// is what the tree costs the machine.
pub fn tree_pss_mib(root: u32) -> f64 {
    let kib: f64 = std::iter::once(root)
        .chain(descendants(root))
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .sum();
    kib / 1024.0
}

/// The peak of a process tree's PSS, sampled every 0.5 s by a thread until `finish`.
pub struct PeakPss {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<f64>,
}

impl PeakPss {
    pub fn start(root: u32) -> PeakPss {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0.0f64;
            loop {
                peak = peak.max(tree_pss_mib(root));
                if flag.load(Ordering::Relaxed) {
                    return peak;
                }
                std::thread::park_timeout(Duration::from_millis(500));
            }
        });
        PeakPss { stop, handle }
    }

    /// Stops sampling (after one last sample) and returns the peak in MiB.
    pub fn finish(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.thread().unpark();
        self.handle.join().unwrap()
    }
}
