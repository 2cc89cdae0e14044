//! PostgreSQL only: SQLSTATEs mapped to repository errors, and PostgreSQL going away under load: the real binary serves stakes from many
//! clients on a cluster of the test's own; the cluster is stopped mid-load, then started again.
//! While it is down every request that needs it gets 503 with a JSON error (never a 500, never
//! a hang past the pool's wait), `/readyz` says why, and within 5 s of PostgreSQL returning
//! agora serves again without a restart. No acknowledged stake is lost and every money
//! invariant holds.

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::Client;
use serde_json::{json, Value};

use crate::helpers::{maintenance_url, skip_on_sqlite, Process, PASSWORD};

const CLIENTS: usize = 8;

/// Runs `tests/pg/cluster <action> <dir>`; returns what it printed (the URL on start).
fn cluster(action: &str, dir: &Path) -> String {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pg/cluster"))
        .arg(action)
        .arg(dir)
        .stderr(Stdio::inherit())
        .output()
        .expect("tests/pg/cluster runs");
    assert!(out.status.success(), "tests/pg/cluster {action} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn sql(url: &str, statement: &str) -> Vec<tokio_postgres::Row> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client.query(statement, &[]).await.expect(statement)
}

async fn post(client: &Client, url: String, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = client.post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let json = r
                .headers()
                .get("content-type")
                .is_some_and(|c| c.to_str().is_ok_and(|c| c.starts_with("application/json")));
            assert!(json, "a {status} that is not JSON");
            (status, r.json().await.expect("a JSON body"))
        }
        Err(e) => panic!("the request failed outright: {e}"),
    }
}

#[tokio::test]
async fn stopping_postgres_under_load_gives_503s_and_agora_serves_again_within_5_s_of_its_return() {
    if skip_on_sqlite("it stops and starts a PostgreSQL cluster of its own") {
        return;
    }
    let pg_dir = tempfile::tempdir().unwrap();
    let maintenance = cluster("start", pg_dir.path());
    sql(&maintenance, "CREATE DATABASE agora").await;
    let db_url = format!("{}/agora", maintenance.rsplit_once('/').unwrap().0);
    let data = tempfile::tempdir().unwrap();
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let args: Vec<String> = [
        "--signup-grant",
        "1000000",
        "--rate-limit",
        "off",
        "--database-url",
        &db_url,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let server = Process::start_with(data.path(), &args, &client).await;
    let base = server.base.clone();

    let mut tokens = Vec::new();
    for i in 0..CLIENTS {
        let creds = json!({"username": format!("staker{i}"), "password": PASSWORD});
        let (status, _) = post(
            &client,
            format!("{base}/api/auth/register"),
            None,
            creds.clone(),
        )
        .await;
        assert_eq!(status, 201);
        let (_, login) = post(&client, format!("{base}/api/auth/login"), None, creds).await;
        tokens.push(login["data"]["access_token"].as_str().unwrap().to_owned());
    }
    let (status, market) = post(
        &client,
        format!("{base}/api/markets"),
        Some(&tokens[0]),
        json!({"name": "Outage market", "outcomes": ["YES", "NO"]}),
    )
    .await;
    assert_eq!(status, 201);
    let market = market["data"]["id"].as_i64().unwrap();

    // The load: every client stakes 1 credit in a loop; each reply's status, and the ids of
    // acknowledged bets, are kept.
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let statuses = Arc::new(Mutex::new(Vec::<(Instant, u16)>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for token in tokens.clone() {
        let (client, base) = (client.clone(), base.clone());
        let (acked, statuses, stop) = (acked.clone(), statuses.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, body) = post(
                    &client,
                    format!("{base}/api/markets/{market}/positions"),
                    Some(&token),
                    json!({"outcome": 0, "amount": 1}),
                )
                .await;
                statuses.lock().unwrap().push((Instant::now(), status));
                match status {
                    201 => acked
                        .lock()
                        .unwrap()
                        .push(body["data"]["id"].as_i64().unwrap()),
                    503 => {
                        assert_eq!(body["code"], "unavailable", "{body}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => panic!("a stake got {other} while PostgreSQL went away: {body}"),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster("stop", pg_dir.path());
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status().as_u16(),
        503,
        "/readyz while PostgreSQL is down"
    );
    let down: Vec<u16> = statuses
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, _)| *at > stopped + Duration::from_millis(500))
        .map(|(_, s)| *s)
        .collect();
    assert!(
        !down.is_empty() && down.iter().all(|s| *s == 503),
        "{down:?}"
    );

    let again = cluster("start", pg_dir.path());
    assert_eq!(again, maintenance, "the cluster came back on its port");
    let returned = Instant::now();
    loop {
        let served = statuses
            .lock()
            .unwrap()
            .iter()
            .any(|(at, s)| *at > returned && *s == 201);
        if served {
            break;
        }
        assert!(
            returned.elapsed() < Duration::from_secs(5),
            "agora did not serve stakes within 5 s of PostgreSQL returning"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let serving_after = returned.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        task.await.expect("no client saw a 500 or a non-JSON reply");
    }
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    eprintln!("agora served stakes again {serving_after:?} after PostgreSQL returned");

    let stored: Vec<i64> = sql(
        &db_url,
        &format!("SELECT id FROM bets WHERE market_id = {market}"),
    )
    .await
    .iter()
    .map(|r| r.get(0))
    .collect();
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    let missing: Vec<_> = acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(missing.is_empty(), "acknowledged stakes lost: {missing:?}");
    for (name, check) in agora::db::invariants::CHECKS {
        let n: i64 = sql(&db_url, check).await[0].get(0);
        assert_eq!(n, 0, "broken: {name}");
    }
    server.kill();
    cluster("stop", pg_dir.path());
}

#[tokio::test]
async fn sqlstates_map_to_repository_errors_in_one_place() {
    use agora::repo::{postgres::classify, RepoError};
    if skip_on_sqlite("it maps PostgreSQL's SQLSTATEs") {
        return;
    }
    let url = maintenance_url().unwrap().to_owned();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TEMP TABLE p (id BIGINT PRIMARY KEY, u TEXT UNIQUE, n BIGINT NOT NULL CHECK (n >= 0));
             CREATE TEMP TABLE c (p BIGINT REFERENCES p (id));
             INSERT INTO p VALUES (1, 'a', 0);",
        )
        .await
        .unwrap();
    let run = |sql: &'static str| {
        let client = &client;
        async move { classify(client.execute(sql, &[]).await.unwrap_err()) }
    };
    assert!(matches!(
        run("INSERT INTO p VALUES (2, 'a', 0)").await,
        RepoError::Duplicate(_)
    ));
    assert!(matches!(
        run("INSERT INTO p VALUES (1, 'b', 0)").await,
        RepoError::Duplicate(_)
    ));
    assert!(matches!(
        run("INSERT INTO c VALUES (99)").await,
        RepoError::MissingReference
    ));
    assert!(matches!(
        run("INSERT INTO p VALUES (3, 'c', -1)").await,
        RepoError::Constraint(_)
    ));
    assert!(matches!(
        run("INSERT INTO p VALUES (3, 'c', NULL)").await,
        RepoError::Constraint(_)
    ));
    assert!(matches!(run("SELEC 1").await, RepoError::Internal(_)));
    client
        .batch_execute("SET statement_timeout = 50")
        .await
        .unwrap();
    assert!(matches!(
        run("SELECT pg_sleep(1)").await,
        RepoError::Unavailable(_)
    ));
    client
        .batch_execute("SET statement_timeout = 0; SET default_transaction_read_only = on")
        .await
        .unwrap();
    assert!(matches!(
        run("CREATE TABLE read_only_check (a BIGINT)").await,
        RepoError::Unavailable(_)
    ));
    // A connection that is gone is unavailable too.
    drop(client);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let gone = tokio::spawn(connection);
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let (killer, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    killer
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let _ = gone.await;
    let e = client.execute("SELECT 1", &[]).await.unwrap_err();
    assert!(matches!(classify(e), RepoError::Unavailable(_)));
}
