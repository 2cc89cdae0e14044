//! Several agora processes on one PostgreSQL (PostgreSQL only): three real `agora` processes
//! share one database and are driven round-robin. Concurrent stakes keep every money
//! invariant; each periodic job exists once; a write through one process is read through another within 1 s; a market
//! created through one is found by vector search through another; a session revoked or a
//! refresh token replayed through one is refused by the others at once; and one process killed
//! with SIGKILL mid-load loses no acknowledged stake while the job it had claimed is finished
//! by another after its lease. Every process's event stream carries every event, whichever
//! process wrote it, and a webhook gets each event once however many processes dispatch.

use std::{
    sync::{atomic::Ordering, Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::{Client, Method};
use serde_json::{json, Value};

use crate::helpers::{
    request, skip_on_sqlite, start_provider, Process, Provider, Reply, TestDb, PASSWORD,
};

const USERS: usize = 9;

/// Three processes' bases, and the requests spread over them.
struct Cluster {
    client: Client,
    bases: Vec<String>,
}

impl Cluster {
    async fn send(
        &self,
        i: usize,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let base = &self.bases[i % self.bases.len()];
        request(&self.client, base, token, method, path, body, &[]).await
    }

    async fn post(&self, i: usize, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.send(i, Method::POST, path, token, Some(body)).await
    }

    async fn get(&self, i: usize, path: &str, token: Option<&str>) -> Reply {
        self.send(i, Method::GET, path, token, None).await
    }
}

/// `n` agora processes on one fresh PostgreSQL database, each with `flags` after
/// `--database-url`: the cluster, the processes (stopped when dropped), their data directories
/// and the database's URL.
async fn start_cluster(
    n: usize,
    flags: &[&str],
) -> (Cluster, Vec<Process>, Vec<tempfile::TempDir>, String) {
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let url = crate::helpers::database_url(dirs[0].path()).expect("a database on PostgreSQL");
    let args: Vec<String> = ["--database-url", url.as_str()]
        .iter()
        .chain(flags)
        .map(|s| s.to_string())
        .collect();
    let mut processes = Vec::new();
    for dir in &dirs {
        processes.push(Process::start_with(dir.path(), &args, &client).await);
    }
    let cluster = Cluster {
        client,
        bases: processes.iter().map(|p| p.base.clone()).collect(),
    };
    (cluster, processes, dirs, url)
}

/// Registers and logs in `username` through process `i`; returns (id, access, refresh).
async fn account(c: &Cluster, i: usize, username: &str) -> (i64, String, String) {
    let creds = json!({"username": username, "password": PASSWORD});
    let reg = c.post(i, "/api/auth/register", None, creds.clone()).await;
    assert_eq!(reg.status, 201, "{}", reg.text);
    let login = c.post(i + 1, "/api/auth/login", None, creds).await;
    assert_eq!(login.status, 200, "{}", login.text);
    (
        reg.body["data"]["id"].as_i64().unwrap(),
        login.body["data"]["access_token"]
            .as_str()
            .unwrap()
            .to_owned(),
        login.body["data"]["refresh_token"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

/// Polls `check` until it holds; returns how long that took, failing past `limit`.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn three_processes_on_one_postgresql_act_as_one_server() {
    if skip_on_sqlite("several processes share only a PostgreSQL database") {
        return;
    }
    // Every process embeds through the same stand-in provider (one model); the second one's
    // provider hangs, so a job it claims stays claimed until it is killed.
    let working = start_provider(Arc::new(Provider::default())).await;
    let hanging = Arc::new(Provider {
        hang: true,
        ..Provider::default()
    });
    let hanging_url = start_provider(hanging.clone()).await;
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // One database: the first data dir names it, the others are pointed at the same one.
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let url = crate::helpers::database_url(dirs[0].path()).expect("a database on PostgreSQL");
    let flags = |embedder: &str, poll: &str| -> Vec<String> {
        [
            "--database-url",
            &url,
            "--signup-grant",
            "100000",
            "--rate-limit",
            "off",
            "--embedder",
            "http",
            "--embedder-url",
            embedder,
            "--embedder-model",
            "stand-in",
            "--embedder-timeout-ms",
            "600000",
            "--job-timeout-secs",
            "1",
            "--job-poll-ms",
            poll,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut processes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        // The others poll for jobs rarely: the one that creates a market wakes its own
        // workers at once, so the second process claims what it enqueues.
        let (embedder, poll) = if i == 1 {
            (&hanging_url, "50")
        } else {
            (&working, "2000")
        };
        processes.push(Some(
            Process::start_with(dir.path(), &flags(embedder, poll), &client).await,
        ));
    }
    let c = Cluster {
        client: client.clone(),
        bases: processes
            .iter()
            .map(|p| p.as_ref().unwrap().base.clone())
            .collect(),
    };
    let db = TestDb::postgres(&url);

    // Concurrent stakes from many users on shared markets, round-robin over the three.
    let mut users = Vec::new();
    for i in 0..USERS {
        users.push(account(&c, i, &format!("multi{i}")).await);
    }
    let mut markets = Vec::new();
    for (i, (_, token, _)) in users.iter().take(3).enumerate() {
        let m = c
            .post(
                i,
                "/api/markets",
                Some(token),
                json!({"name": format!("Shared market {i}"), "outcomes": ["YES", "NO", "MAYBE"]}),
            )
            .await;
        assert_eq!(m.status, 201, "{}", m.text);
        markets.push(m.body["data"]["id"].as_i64().unwrap());
    }
    let c = Arc::new(c);
    let mut tasks = Vec::new();
    for (u, (_, token, _)) in users.iter().enumerate() {
        let (c, token, markets) = (c.clone(), token.clone(), markets.clone());
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for n in 0..20 {
                let market = markets[(u + n) % markets.len()];
                let reply = c
                    .post(
                        u + n,
                        &format!("/api/markets/{market}/positions"),
                        Some(&token),
                        json!({"outcome": n % 3, "amount": 1 + n as i64}),
                    )
                    .await;
                assert_eq!(reply.status, 201, "{}", reply.text);
                ok += 1;
            }
            ok
        }));
    }
    let mut placed = 0;
    for t in tasks {
        placed += t.await.unwrap();
    }
    assert_eq!(placed, USERS * 20);
    assert_eq!(db.count("bets"), (USERS * 20) as i64);
    db.assert_invariants();
    // Three processes scheduled the periodic jobs: each exists once, so it runs once per
    // period, not once per process.
    for kind in ["close_due_markets", "prune_jobs"] {
        let n: i64 = db.query_one(
            "SELECT count(*) FROM jobs WHERE kind = $1 AND every_ms IS NOT NULL",
            &[&kind],
        );
        assert_eq!(n, 1, "periodic {kind} jobs");
    }

    // A write through the first process is read through the third within 1 s (the third
    // cached the market before the write).
    let market = markets[0];
    let before = c.get(2, &format!("/api/markets/{market}"), None).await;
    let version = before.body["data"]["version"].as_i64().unwrap();
    let staked = c
        .post(
            0,
            &format!("/api/markets/{market}/positions"),
            Some(&users[0].1),
            json!({"outcome": 1, "amount": 5}),
        )
        .await;
    assert_eq!(staked.status, 201);
    let took = within(
        Duration::from_secs(1),
        "a stake through A read through C",
        || {
            let c = c.clone();
            async move {
                let now = c.get(2, &format!("/api/markets/{market}"), None).await;
                now.body["data"]["version"].as_i64() == Some(version + 1)
            }
        },
    )
    .await;
    eprintln!("a stake through process A was read through process C after {took:?}");

    // A session ended through one process is refused by the others (their session caches
    // forget it); a refresh token replayed through another process revokes its family.
    let (_, access, refresh) = account(&c, 0, "multi-session").await;
    assert_eq!(
        c.get(2, "/api/me", Some(&access)).await.status,
        200,
        "C caches the session"
    );
    let rotated = c
        .post(
            1,
            "/api/auth/refresh",
            None,
            json!({"refresh_token": refresh}),
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let replayed = c
        .post(
            2,
            "/api/auth/refresh",
            None,
            json!({"refresh_token": refresh}),
        )
        .await;
    replayed.assert_error(401, "unauthorized");
    let newer = rotated.body["data"]["refresh_token"].as_str().unwrap();
    c.post(
        0,
        "/api/auth/refresh",
        None,
        json!({"refresh_token": newer}),
    )
    .await
    .assert_error(401, "unauthorized");
    within(
        Duration::from_secs(1),
        "the revoked family's access token on C",
        || {
            let (c, access) = (c.clone(), access.clone());
            async move { c.get(2, "/api/me", Some(&access)).await.status == 401 }
        },
    )
    .await;

    // Kill the second process mid-load, holding the indexing job of a market it created.
    let created = c
        .post(
            1,
            "/api/markets",
            Some(&users[1].1),
            json!({"name": "Will the harbour bridge reopen by spring?", "outcomes": ["YES", "NO"]}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let indexed = created.body["data"]["id"].as_i64().unwrap();
    within(
        Duration::from_secs(5),
        "process B claims the indexing job",
        || {
            let hanging = hanging.clone();
            async move { hanging.calls.load(Ordering::SeqCst) > 0 }
        },
    )
    .await;
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for (u, (_, token, _)) in users.iter().enumerate() {
        let (c, token, acked, stop, market) = (
            c.clone(),
            token.clone(),
            acked.clone(),
            stop.clone(),
            markets[u % 3],
        );
        load.push(tokio::spawn(async move {
            let mut n = u;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let path = format!("/api/markets/{market}/positions");
                let body = json!({"outcome": 0, "amount": 1});
                let base = &c.bases[n % 3];
                // The killed process refuses connections: not acknowledged, so not counted.
                let sent = c
                    .client
                    .post(format!("{base}{path}"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
                if let Ok(r) = sent {
                    if r.status() == 201 {
                        let v: Value = r.json().await.unwrap();
                        acked
                            .lock()
                            .unwrap()
                            .push(v["data"]["id"].as_i64().unwrap());
                    } else {
                        assert!(r.status() != 500, "a 500 during the kill");
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    processes[1].take().unwrap().kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let stored: Vec<i64> = db.query_rows("SELECT id FROM bets", &[]);
    let lost: Vec<_> = acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged stakes lost: {lost:?}");
    db.assert_invariants();

    // After the killed process's lease (its --job-timeout + 10 s) another claims the job,
    // embeds through the working provider, and the market is found by meaning on the third.
    let job: i64 = db.query_one(
        "SELECT id FROM jobs WHERE kind = 'index_market' AND CAST(payload ->> 'market_id' AS BIGINT) = $1",
        &[&indexed],
    );
    within(
        Duration::from_secs(30),
        "another process finishes the killed one's job",
        || {
            let db = TestDb::postgres(&url);
            async move {
                let (status, attempts): (String, i64) =
                    db.query_one("SELECT status, attempts FROM jobs WHERE id = $1", &[&job]);
                status == "succeeded" && attempts >= 2
            }
        },
    )
    .await;
    let found = within(
        Duration::from_secs(2),
        "vector search through C finds the market",
        || {
            let c = c.clone();
            async move {
                let hits = c
                    .get(
                        2,
                        "/api/markets/search?q=bridge+reopening&mode=vector",
                        None,
                    )
                    .await;
                hits.body["data"]
                    .as_array()
                    .is_some_and(|h| h.iter().any(|h| h["market"]["id"] == json!(indexed)))
            }
        },
    )
    .await;
    eprintln!("the market indexed by another process was found through C after {found:?}");
}

#[tokio::test]
async fn an_anonymous_flood_over_three_processes_meets_one_shared_quota() {
    if skip_on_sqlite("several processes share only a PostgreSQL database") {
        return;
    }
    let Ok(redis) = std::env::var("AGORA_TEST_REDIS_URL") else {
        eprintln!("skipped without AGORA_TEST_REDIS_URL: the processes share quotas through Redis");
        return;
    };
    // Keys of this test alone: other tests count in the same Redis.
    let prefix = format!("agora-test:{:016x}:", rand::random::<u64>());
    let flags = [
        "--redis-url",
        &redis,
        "--redis-prefix",
        &prefix,
        "--rate-reads",
        "30/min",
    ];
    let (c, _processes, _dirs, _) = start_cluster(3, &flags).await;
    // 90 anonymous reads from one address, round-robin: the one shared quota of 30 (refilled
    // at one every 2 s) lets about 30 through, not 90.
    let mut passed = 0;
    let mut limited = 0;
    for i in 0..90 {
        let reply = c.get(i, "/api/markets", None).await;
        match reply.status.as_u16() {
            200 => passed += 1,
            429 => {
                limited += 1;
                reply.assert_error(429, "rate_limited");
                assert!(reply.header("retry-after").is_some());
            }
            other => panic!("{other}: {}", reply.text),
        }
    }
    assert!(
        (30..=32).contains(&passed),
        "{passed} passed and {limited} were limited: one quota of 30 across three processes"
    );
}

#[tokio::test]
async fn a_process_whose_change_feed_drops_reconnects_and_catches_up() {
    if skip_on_sqlite("several processes share only a PostgreSQL database") {
        return;
    }
    let (c, _processes, _dirs, url) = start_cluster(2, &["--rate-limit", "off"]).await;
    let c = Arc::new(c);
    let (_, token, _) = account(&c, 0, "feed-drop").await;
    let body = json!({"name": "Feed drop market", "outcomes": ["YES", "NO"]});
    let created = c.post(0, "/api/markets", Some(&token), body).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let market = created.body["data"]["id"].as_i64().unwrap();
    let path = format!("/api/markets/{market}");
    // B caches the market once the creation's announcement has come and gone.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(c.get(1, &path, None).await.status, 200);
    // A change made behind agora's back is announced by nobody: B keeps serving its copy.
    let db = TestDb::postgres(&url);
    db.execute(
        "UPDATE markets SET name = 'Renamed behind agora' WHERE id = $1",
        &[&market],
    );
    assert_eq!(
        c.get(1, &path, None).await.body["data"]["name"],
        "Feed drop market"
    );

    // Cut every listening connection (the server ends them, as a restart or a network cut
    // would), then write through A at once: B misses that announcement.
    let cut: Vec<i64> = db.query_rows(
        "WITH listening AS MATERIALIZED (
             SELECT pid FROM pg_stat_activity
              WHERE datname = current_database() AND query IN ('LISTEN agora_changes', 'SELECT 1'))
         SELECT CAST(pid AS BIGINT) FROM listening WHERE pg_terminate_backend(pid)",
        &[],
    );
    assert_eq!(cut.len(), 2, "one listening connection per process");
    let stake = json!({"outcome": 0, "amount": 7});
    let staked = c
        .post(0, &format!("{path}/positions"), Some(&token), stake)
        .await;
    assert_eq!(staked.status, 201, "{}", staked.text);

    // B reconnects (a second later), drops its caches since the gap may hide announcements,
    // and serves the write and the change made behind its back: long before the 60 s TTL.
    let caught_up = within(
        Duration::from_secs(6),
        "B catches up after its feed returns",
        || {
            let (c, path) = (c.clone(), path.clone());
            async move { c.get(1, &path, None).await.body["data"]["volume"].as_i64() == Some(7) }
        },
    )
    .await;
    assert!(
        caught_up >= Duration::from_millis(500),
        "B had missed the announcement"
    );
    let now = c.get(1, &path, None).await;
    assert_eq!(now.body["data"]["name"], "Renamed behind agora");
    let metrics = c
        .client
        .get(format!("{}/metrics", c.bases[1]))
        .send()
        .await
        .unwrap();
    assert!(metrics
        .text()
        .await
        .unwrap()
        .contains("agora_change_feed_connected 1"));
    eprintln!("B caught up {caught_up:?} after its change feed was cut");
    // And the feed works again: a later write is seen within 1 s.
    let stake = json!({"outcome": 1, "amount": 3});
    let staked = c
        .post(0, &format!("{path}/positions"), Some(&token), stake)
        .await;
    assert_eq!(staked.status, 201, "{}", staked.text);
    within(
        Duration::from_secs(1),
        "a write after the reconnection",
        || {
            let (c, path) = (c.clone(), path.clone());
            async move { c.get(1, &path, None).await.body["data"]["volume"].as_i64() == Some(10) }
        },
    )
    .await;
}

#[tokio::test]
async fn every_stream_carries_every_process_s_events_and_each_webhook_delivery_is_made_once() {
    if skip_on_sqlite("several processes share only a PostgreSQL database") {
        return;
    }
    let (c, _processes, _dirs, _) =
        start_cluster(3, &["--rate-limit", "off", "--webhook-allow-private"]).await;
    let (_, token, _) = account(&c, 0, "live-cluster").await;
    let created = c
        .post(
            0,
            "/api/markets",
            Some(&token),
            json!({"name": "Live on three?"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let market = created.body["data"]["id"].as_i64().unwrap();
    let receiver = crate::webhooks::Receiver::answering(&[204]);
    let url = crate::webhooks::serve(receiver.clone()).await;
    let hook = c
        .post(
            1,
            "/api/webhooks",
            Some(&token),
            json!({"url": url, "markets": [market]}),
        )
        .await;
    assert_eq!(hook.status, 201, "{}", hook.text);
    let after = hook.body["data"]["after_event_id"].as_i64().unwrap();
    // A stream on each process, opened before the stakes.
    let streams: Vec<_> = c
        .bases
        .iter()
        .map(|base| {
            let (client, base) = (c.client.clone(), base.clone());
            let query = format!("after={after}&markets={market}");
            tokio::spawn(
                async move { crate::webhooks::stream_events(&client, &base, &query, 9).await },
            )
        })
        .collect();
    for i in 0..9 {
        let path = format!("/api/markets/{market}/positions");
        let reply = c
            .post(
                i,
                &path,
                Some(&token),
                json!({"outcome": 0, "amount": i + 1}),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
    }
    let amounts: Vec<Value> = (1..=9).map(|a| json!(a)).collect();
    for stream in streams {
        let events = stream.await.unwrap();
        let got: Vec<Value> = events.iter().map(|e| e["data"]["amount"].clone()).collect();
        assert_eq!(
            got, amounts,
            "each stream carries every stake, in commit order"
        );
        assert!(events
            .windows(2)
            .all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64()));
    }
    let got = receiver.wait_for(9).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ids: Vec<String> = receiver.got().iter().map(|r| r.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        (ids.len(), receiver.got().len()),
        (9, 9),
        "each event delivered once: {got:?}"
    );
}
