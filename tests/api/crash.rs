//! Crash safety: the real binary serves a stake load from many clients and is killed with
//! SIGKILL at a random moment, 20 times over. After each restart on the same data directory
//! every stake a client saw acknowledged is present exactly once and every money invariant
//! holds.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use rand::Rng;
use reqwest::Client;
use serde_json::{json, Value};

use crate::helpers::{Process, TestDb, PASSWORD};

const CLIENTS: usize = 8;
const ROUNDS: usize = 20;

/// One client's session: its user id and access token.
struct Session {
    id: i64,
    token: String,
}

async fn post_json(client: &Client, url: String, token: Option<&str>, body: Value) -> Value {
    let mut req = client.post(url).json(&body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap().json().await.unwrap()
}

async fn sessions(client: &Client, base: &str) -> Vec<Session> {
    let mut out = Vec::new();
    for i in 0..CLIENTS {
        let creds = json!({"username": format!("crash{i}"), "password": PASSWORD});
        let reg = post_json(
            client,
            format!("{base}/api/auth/register"),
            None,
            creds.clone(),
        )
        .await;
        let login = post_json(client, format!("{base}/api/auth/login"), None, creds).await;
        out.push(Session {
            id: reg["data"]["id"].as_i64().unwrap(),
            token: login["data"]["access_token"].as_str().unwrap().to_owned(),
        });
    }
    out
}

#[tokio::test]
async fn acknowledged_stakes_survive_twenty_kills_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut server = Process::start(dir.path(), &["--signup-grant", "1000000"], &client).await;
    let sessions = Arc::new(sessions(&client, &server.base).await);
    let mut markets = Vec::new();
    for i in 0..3 {
        let created = post_json(
            &client,
            format!("{}/api/markets", server.base),
            Some(&sessions[0].token),
            json!({"name": format!("Will crash round {i} go well?")}),
        )
        .await;
        markets.push(created["data"]["id"].as_i64().unwrap());
    }
    let markets = Arc::new(markets);
    let (mut acked_total, mut unacked_total) = (0usize, 0usize);
    for round in 0..ROUNDS {
        let acked = Arc::new(Mutex::new(Vec::<(i64, String)>::new()));
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let (client, base) = (client.clone(), server.base.clone());
            let (sessions, markets, acked) = (sessions.clone(), markets.clone(), acked.clone());
            tasks.push(tokio::spawn(async move {
                let mut sent = 0;
                for n in 0.. {
                    let key = format!("r{round}-c{c}-n{n}");
                    let market = markets[(c + n) % markets.len()];
                    let resp = client
                        .post(format!("{base}/api/markets/{market}/positions"))
                        .bearer_auth(&sessions[c].token)
                        .header("Idempotency-Key", &key)
                        .json(&json!({"outcome": n % 2, "amount": 1 + n % 3}))
                        .send()
                        .await;
                    sent += 1;
                    match resp {
                        Ok(r) if r.status().is_success() => {
                            acked.lock().unwrap().push((sessions[c].id, key));
                        }
                        Ok(r) => panic!("stake refused while serving: {}", r.status()),
                        Err(_) => return sent,
                    }
                }
                sent
            }));
        }
        let wait = rand::rng().random_range(150..600);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.kill();
        let mut sent = 0;
        for task in tasks {
            sent += task.await.unwrap();
        }
        server = Process::start(dir.path(), &["--signup-grant", "1000000"], &client).await;

        let db = TestDb::open(dir.path());
        let acked = acked.lock().unwrap().clone();
        for (user, key) in &acked {
            let n: i64 = db.query_one(
                "SELECT count(*) FROM bets WHERE user_id = $1 AND idempotency_key = $2",
                &[user, key],
            );
            assert_eq!(
                n, 1,
                "round {round}: acknowledged stake {key} is present {n} times"
            );
        }
        let stored: i64 = db.query_one(
            "SELECT count(*) FROM bets WHERE idempotency_key LIKE $1",
            &[&format!("r{round}-%")],
        );
        // Stakes committed whose answer the kill swallowed may be there too, each at most once
        // (a request is sent once, and its key is unique per user).
        assert!(
            stored as usize >= acked.len() && stored as usize <= sent,
            "round {round}"
        );
        let broken = db.broken_invariants();
        assert!(broken.is_empty(), "round {round}: {broken:?}");
        acked_total += acked.len();
        unacked_total += stored as usize - acked.len();
    }
    server.kill();
    println!(
        "{ROUNDS} kills: {acked_total} acknowledged stakes all present once; \
         {unacked_total} committed without an answer"
    );
    assert!(
        acked_total > ROUNDS * CLIENTS,
        "the load ran: {acked_total}"
    );
}
