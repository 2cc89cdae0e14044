//! Rate-limiter bench: `cargo bench --bench limiter`.
//!
//! Prints the cost of one limiter decision (one hot client; a new client each time), then
//! passes 1,000,000 distinct client addresses through the limiter in batches of 100,000 and
//! prints the process RSS and the number of tracked keys after each batch: once with the
//! periodic sweep the server runs (`retain_recent` + `shrink_to_fit`), once without it.
//! With the sweep the memory stays flat; without it, it grows with every new client.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use agora::middleware::rate_limit::{Allowed, Quotas, RateLimits, Refused};
use futures_util::FutureExt;
use poem::http::Method;

fn quotas(rate: &str) -> Quotas {
    let rate = rate.parse().expect("rate");
    Quotas {
        enabled: true,
        auth: rate,
        login: rate,
        login_account: rate,
        writes: rate,
        reads: rate,
        search: rate,
        admin: rate,
        trusted_proxies: Vec::new(),
    }
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + n))
}

/// One decision; in process it never waits, so the future is ready when first polled.
fn check(limits: &RateLimits, path: &str, ip: IpAddr) -> Option<Result<Allowed, Refused>> {
    limits
        .check_request(&Method::GET, path, None, ip)
        .now_or_never()
        .expect("an in-process check is ready at once")
}

fn cost(limits: &RateLimits, label: &str, n: u32, key: impl Fn(u32) -> IpAddr) {
    let started = Instant::now();
    let mut allowed = 0u32;
    for i in 0..n {
        let verdict = check(limits, "/api/markets/1", key(i));
        allowed += u32::from(matches!(verdict, Some(Ok(_))));
    }
    let ns = started.elapsed().as_nanos() as f64 / f64::from(n);
    println!("{label:<44} {ns:>8.0} ns/decision ({allowed} of {n} allowed)");
}

fn distinct(sweep: bool) {
    // A client used once is indistinguishable from a fresh one 1 ms later.
    let limits = RateLimits::new(&quotas("1000/s"));
    let batch = 100_000u32;
    let mut series = Vec::new();
    for round in 0..10 {
        for n in round * batch..(round + 1) * batch {
            let _ = check(&limits, "/api/markets", ip(n));
        }
        std::thread::sleep(Duration::from_millis(5));
        let tracked = if sweep {
            limits.sweep()
        } else {
            batch as usize * (round as usize + 1)
        };
        series.push(format!("{:.0}", rss_mib()));
        if round == 9 {
            println!(
                "{:<44} RSS MiB per 100k keys: {} (tracked keys at the end: {tracked})",
                if sweep {
                    "1,000,000 clients, swept after each 100k"
                } else {
                    "1,000,000 clients, never swept"
                },
                series.join(" ")
            );
        }
    }
}

fn main() {
    println!("RSS at start: {:.0} MiB", rss_mib());
    let generous = RateLimits::new(&quotas("100000000/s"));
    cost(&generous, "one client, allowed", 2_000_000, |_| ip(1));
    let tight = RateLimits::new(&quotas("10/min"));
    cost(&tight, "one client, refused (429)", 2_000_000, |_| ip(1));
    drop((generous, tight));
    let fresh = RateLimits::new(&quotas("100000000/s"));
    cost(&fresh, "a new client every time", 1_000_000, ip);
    drop(fresh);
    println!("RSS after dropping those limiters: {:.0} MiB", rss_mib());
    distinct(true);
    distinct(false);
}
