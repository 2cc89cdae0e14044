//! Where the suite counts rate limits. Without `AGORA_TEST_REDIS_URL` every test server counts
//! its quotas in process, as the server does by default. With it set to a Redis URL
//! (`redis://127.0.0.1:PORT`, what `tests/redis/server start` prints), every test server is
//! given `--redis-url` and a `--redis-prefix` of its own, so the whole suite's limits are
//! counted in Redis while no two servers share a bucket; a test that wants two servers to share
//! quotas gives both the same prefix (a later flag overrides an earlier one).

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::OnceLock,
};

/// The variable naming the Redis to count rate limits in.
pub const REDIS_URL_VAR: &str = "AGORA_TEST_REDIS_URL";

/// The suite's Redis, when it has one.
pub fn redis_url() -> Option<&'static str> {
    static URL: OnceLock<Option<String>> = OnceLock::new();
    URL.get_or_init(|| {
        std::env::var(REDIS_URL_VAR)
            .ok()
            .filter(|url| !url.trim().is_empty())
    })
    .as_deref()
}

/// For a test that needs Redis: true (after saying why on stderr) when the suite has none, and
/// the test should return.
pub fn skip_without_redis(why: &str) -> bool {
    if redis_url().is_none() {
        eprintln!("skipped without {REDIS_URL_VAR}: {why}");
    }
    redis_url().is_none()
}

/// A key prefix no other server of this run uses.
pub fn fresh_prefix() -> String {
    format!("agora-test-{:016x}:", rand::random::<u64>())
}

/// The flags that make a test server count in the suite's Redis under a prefix of its own;
/// none without one. The check timeout is generous: on a loaded CI machine a check that gave
/// up after the default 100 ms would pass uncounted (fail open) and fail a test that expects
/// a 429; tests of timeouts and outages set their own.
pub fn redis_args() -> Vec<String> {
    redis_url()
        .map(|url| {
            vec![
                "--redis-url".to_owned(),
                url.to_owned(),
                "--redis-prefix".to_owned(),
                fresh_prefix(),
                "--redis-timeout-ms".to_owned(),
                "2000".to_owned(),
            ]
        })
        .unwrap_or_default()
}

/// Runs `tests/redis/server <action> <dir>`: a Redis of the test's own, which it may stop and
/// start again (on the same port) under a running agora. Returns what it printed (the URL on
/// start).
pub fn redis_server(action: &str, dir: &Path) -> String {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/redis/server"))
        .arg(action)
        .arg(dir)
        .stderr(Stdio::inherit())
        .output()
        .expect("tests/redis/server runs");
    assert!(out.status.success(), "tests/redis/server {action} failed");
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned()
}
