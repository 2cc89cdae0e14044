//! The durable job queue: retries with growing delays, dead jobs, leases, one run at a time,
//! crashes and shutdowns (on a real database, with handlers written for the test), and the
//! jobs API over HTTP.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use agora::{
    db::{Db, DbOptions},
    domain::job::{Job, JobKind, JobStatus, NewJob, QueueConfig},
    jobs::{Handler, WorkerConfig, Workers},
    repo::{
        postgres::{self, PgOptions},
        sqlite::SqliteJobRepository,
        JobRepository,
    },
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::helpers::{database_url, TestApp, TestDb};

/// A queue on a fresh database (the directory's, as [`TestDb::open`] finds it); retries start
/// at `backoff`.
async fn queue(backoff: Duration, lease: Duration) -> (TempDir, Arc<dyn JobRepository>) {
    let dir = tempfile::tempdir().unwrap();
    let config = QueueConfig {
        max_attempts: 5,
        backoff,
        backoff_max: Duration::from_secs(60),
        lease,
    };
    let queue: Arc<dyn JobRepository> = match database_url(dir.path()) {
        Some(url) => {
            let options = PgOptions {
                url,
                pool_size: 8,
                statement_timeout: Duration::from_secs(5),
                connect_timeout: Duration::from_secs(5),
            };
            postgres::open(&options, config).await.unwrap().jobs
        }
        None => {
            let db = Db::open(&dir.path().join("agora.db"), &DbOptions::default()).unwrap();
            Arc::new(SqliteJobRepository::new(Arc::new(db), config))
        }
    };
    (dir, queue)
}

/// A job of a kind agora does not define: the test's handler runs it.
fn job(kind: &str, payload: Value) -> NewJob {
    NewJob::new(JobKind::Other(kind.into()), payload)
}

fn workers(queue: &Arc<dyn JobRepository>, handler: Arc<dyn Handler>, n: usize) -> Workers {
    let config = WorkerConfig {
        workers: n,
        poll: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
    };
    Workers::start(queue.clone(), handler, config)
}

/// Waits until job `id` is succeeded or dead.
async fn finished(queue: &dyn JobRepository, id: i64) -> Job {
    for _ in 0..400 {
        let job = queue.get(id).await.unwrap().unwrap();
        if matches!(job.status, JobStatus::Succeeded | JobStatus::Dead) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {id} did not finish");
}

/// Fails the first `failures` runs of each job, recording when each run started.
#[derive(Default)]
struct Flaky {
    failures: u32,
    runs: Mutex<HashMap<i64, Vec<Instant>>>,
}

#[async_trait::async_trait]
impl Handler for Flaky {
    async fn run(&self, job: &Job) -> Result<Option<Value>, String> {
        let n = {
            let mut runs = self.runs.lock().unwrap();
            let runs = runs.entry(job.id).or_default();
            runs.push(Instant::now());
            runs.len() as u32
        };
        if n <= self.failures {
            Err(format!("failure number {n}"))
        } else {
            Ok(Some(json!({ "runs": n })))
        }
    }
}

#[tokio::test]
async fn a_job_failing_twice_is_retried_with_growing_delays_and_succeeds() {
    let (_dir, queue) = queue(Duration::from_millis(200), Duration::from_secs(5)).await;
    let handler = Arc::new(Flaky {
        failures: 2,
        ..Flaky::default()
    });
    let workers = workers(&queue, handler.clone(), 2);
    let id = queue
        .enqueue(job("flaky", json!({})))
        .await
        .unwrap()
        .unwrap();
    let job = finished(queue.as_ref(), id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    assert_eq!(job.attempts, 3);
    assert_eq!(job.result, Some(json!({ "runs": 3 })));
    // The error of the last failed run stays on record.
    assert_eq!(job.last_error.as_deref(), Some("failure number 2"));
    let runs = handler.runs.lock().unwrap()[&id].clone();
    let gaps: Vec<Duration> = runs.windows(2).map(|w| w[1] - w[0]).collect();
    // Backoff 200 ms then 400 ms, each less up to a quarter of jitter.
    assert!(gaps[0] >= Duration::from_millis(150), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(300), "{gaps:?}");
    assert!(gaps[1] > gaps[0], "{gaps:?}");
    workers.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_job_that_always_fails_ends_dead_with_its_last_error() {
    let (_dir, queue) = queue(Duration::from_millis(20), Duration::from_secs(5)).await;
    let handler = Arc::new(Flaky {
        failures: u32::MAX,
        ..Flaky::default()
    });
    let workers = workers(&queue, handler.clone(), 1);
    let id = queue
        .enqueue(job("doomed", json!({})).max_attempts(3))
        .await
        .unwrap()
        .unwrap();
    let job = finished(queue.as_ref(), id).await;
    assert_eq!(job.status, JobStatus::Dead);
    assert_eq!(job.attempts, 3);
    assert_eq!(job.last_error.as_deref(), Some("failure number 3"));
    assert!(job.finished_at.is_some());
    // Dead stays dead: nothing runs it again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(handler.runs.lock().unwrap()[&id].len(), 3);
    workers.shutdown(Duration::from_secs(1)).await;
}

/// Records overlapping runs of one job and how often each job ran.
#[derive(Default)]
struct Exclusive {
    running: Mutex<HashSet<i64>>,
    overlaps: Mutex<Vec<i64>>,
    runs: Mutex<HashMap<i64, u32>>,
}

#[async_trait::async_trait]
impl Handler for Exclusive {
    async fn run(&self, job: &Job) -> Result<Option<Value>, String> {
        if !self.running.lock().unwrap().insert(job.id) {
            self.overlaps.lock().unwrap().push(job.id);
        }
        *self.runs.lock().unwrap().entry(job.id).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(3)).await;
        self.running.lock().unwrap().remove(&job.id);
        Ok(None)
    }
}

#[tokio::test]
async fn workers_never_run_the_same_job_at_once_and_run_each_once() {
    let (_dir, queue) = queue(Duration::from_millis(20), Duration::from_secs(5)).await;
    let handler = Arc::new(Exclusive::default());
    let mut ids = Vec::new();
    for i in 0..120 {
        ids.push(
            queue
                .enqueue(job("exclusive", json!({ "i": i })))
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let workers = workers(&queue, handler.clone(), 6);
    for id in &ids {
        assert_eq!(
            finished(queue.as_ref(), *id).await.status,
            JobStatus::Succeeded
        );
    }
    workers.shutdown(Duration::from_secs(1)).await;
    assert!(handler.overlaps.lock().unwrap().is_empty());
    let runs = handler.runs.lock().unwrap();
    assert_eq!(runs.len(), ids.len());
    assert!(runs.values().all(|&n| n == 1), "{runs:?}");
}

#[tokio::test]
async fn a_job_whose_worker_died_runs_again_once_its_lease_runs_out() {
    let (_dir, queue) = queue(Duration::from_millis(20), Duration::from_millis(300)).await;
    let id = queue
        .enqueue(job("orphan", json!({})))
        .await
        .unwrap()
        .unwrap();
    // A worker claims the job and dies without a word.
    let claimed = queue.claim().await.unwrap().expect("the job is due");
    assert_eq!(claimed.job.id, id);
    assert_eq!(
        queue.get(id).await.unwrap().unwrap().status,
        JobStatus::Running
    );
    let started = Instant::now();
    let handler = Arc::new(Flaky::default());
    let workers = workers(&queue, handler.clone(), 2);
    let job = finished(queue.as_ref(), id).await;
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.attempts, 2, "the lost run counts");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "not before the lease ran out"
    );
    // The dead worker's late report is refused: the job is no longer its to record.
    assert!(!queue.succeed(&claimed, None).await.unwrap());
    workers.shutdown(Duration::from_secs(1)).await;
}

/// Panics on its first run, hangs on its second, then succeeds.
struct Unruly {
    runs: Mutex<u32>,
}

#[async_trait::async_trait]
impl Handler for Unruly {
    async fn run(&self, _: &Job) -> Result<Option<Value>, String> {
        let n = {
            let mut runs = self.runs.lock().unwrap();
            *runs += 1;
            *runs
        };
        match n {
            1 => panic!("handler bug"),
            2 => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(None)
            }
            _ => Ok(None),
        }
    }
}

#[tokio::test]
async fn a_panicking_or_hanging_handler_is_a_failed_run_and_the_worker_lives_on() {
    let (_dir, queue) = queue(Duration::from_millis(20), Duration::from_secs(5)).await;
    let workers = workers(
        &queue,
        Arc::new(Unruly {
            runs: Mutex::new(0),
        }),
        1,
    );
    let id = queue
        .enqueue(job("unruly", json!({})))
        .await
        .unwrap()
        .unwrap();
    let job = finished(queue.as_ref(), id).await;
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.attempts, 3);
    workers.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn finished_jobs_are_deleted_after_the_retention_and_nothing_else_is() {
    let (dir, queue) = queue(Duration::from_millis(20), Duration::from_secs(5)).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            queue
                .enqueue(job("kept", json!({ "i": i })))
                .await
                .unwrap()
                .unwrap(),
        );
    }
    for _ in 0..2 {
        let claimed = queue.claim().await.unwrap().unwrap();
        assert!(queue.succeed(&claimed, None).await.unwrap());
    }
    // The first finished job ended long ago; the second just now; the third still waits.
    TestDb::open(dir.path()).execute("UPDATE jobs SET finished_at = 0 WHERE id = $1", &[&ids[0]]);
    assert_eq!(
        queue
            .prune_finished(Duration::from_secs(3600))
            .await
            .unwrap(),
        1
    );
    assert!(queue.get(ids[0]).await.unwrap().is_none());
    assert_eq!(
        queue.get(ids[1]).await.unwrap().unwrap().status,
        JobStatus::Succeeded
    );
    assert_eq!(
        queue.get(ids[2]).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
}

/// Takes a while.
struct Slow;

#[async_trait::async_trait]
impl Handler for Slow {
    async fn run(&self, _: &Job) -> Result<Option<Value>, String> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(Some(json!("done")))
    }
}

#[tokio::test]
async fn shutdown_lets_running_jobs_finish_and_leaves_the_rest_queued() {
    let (_dir, queue) = queue(Duration::from_millis(20), Duration::from_secs(5)).await;
    let first = queue
        .enqueue(job("slow", json!({})))
        .await
        .unwrap()
        .unwrap();
    let workers = workers(&queue, Arc::new(Slow), 1);
    for _ in 0..100 {
        if queue.get(first).await.unwrap().unwrap().status == JobStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = queue
        .enqueue(job("slow", json!({})))
        .await
        .unwrap()
        .unwrap();
    workers.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        queue.get(first).await.unwrap().unwrap().status,
        JobStatus::Succeeded
    );
    assert_eq!(
        queue.get(second).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
}

#[tokio::test]
async fn a_job_enqueued_before_a_crash_runs_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = TestApp::config(&dir, &["--job-workers", "0"]);
    let app = TestApp::spawn_with(dir, config).await;
    let alice = app.user("alice").await;
    let market = alice
        .create_market(json!({"name": "Will the lighthouse be repainted red?"}))
        .await;
    let mid = market["id"].as_i64().unwrap();
    let job_id: i64 = app.db().query_one(
        "SELECT id FROM jobs
          WHERE kind = 'index_market' AND CAST(payload ->> 'market_id' AS BIGINT) = $1",
        &[&mid],
    );
    let job = alice.get(&format!("/api/jobs/{job_id}")).await;
    assert_eq!(job.status, StatusCode::OK, "{}", job.text);
    assert_eq!(job.body["data"]["status"], "queued");
    assert_eq!(job.body["data"]["kind"], "index_market");

    let dir = app.crash().await;
    let app = TestApp::spawn_in(dir).await;
    let alice = app.caller("alice", alice.id).await;
    let mut status = Value::Null;
    for _ in 0..200 {
        let job = alice.get(&format!("/api/jobs/{job_id}")).await;
        status = job.body["data"]["status"].clone();
        if status == "succeeded" {
            assert_eq!(job.body["data"]["result"]["outcome"], "embedded");
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status, "succeeded");
    let found = app
        .get("/api/markets/search?q=lighthouse&mode=vector")
        .await;
    assert_eq!(
        found.body["data"][0]["market"]["id"],
        json!(mid),
        "{}",
        found.text
    );
}

#[tokio::test]
async fn jobs_are_readable_by_their_owner_and_admins_and_listed_for_admins_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = TestApp::config(&dir, &["--job-workers", "0"]);
    let app = TestApp::spawn_with(dir, config).await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let admin = app.with_role("root", "admin").await;
    alice
        .create_market(json!({"name": "Will it hail in May?"}))
        .await;
    let listed = admin.get("/api/jobs?kind=index_market&status=queued").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert_eq!(listed.body["meta"]["total"], 1);
    let id = listed.body["data"][0]["id"].as_i64().unwrap();
    let path = format!("/api/jobs/{id}");
    assert_eq!(alice.get(&path).await.status, StatusCode::OK);
    assert_eq!(admin.get(&path).await.status, StatusCode::OK);
    bob.get(&path).await.assert_error(404, "not_found");
    app.get(&path).await.assert_error(401, "unauthorized");
    alice
        .get("/api/jobs/999999")
        .await
        .assert_error(404, "not_found");
    alice
        .get("/api/jobs/0")
        .await
        .assert_field_error(400, "invalid_parameter", "id");
    alice.get("/api/jobs").await.assert_error(403, "forbidden");
    admin
        .get("/api/jobs?status=unknown")
        .await
        .assert_field_error(400, "invalid_parameter", "status");
    admin
        .get("/api/jobs?limit=0")
        .await
        .assert_field_error(400, "invalid_parameter", "limit");
    let periodic = admin.get("/api/jobs?kind=close_due_markets").await;
    assert_eq!(periodic.body["data"][0]["every_secs"], json!(5.0));

    alice
        .post("/api/admin/reindex", json!({}))
        .await
        .assert_error(403, "forbidden");
    let accepted = admin.post("/api/admin/reindex", json!({})).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    let location = accepted.header("location").unwrap().to_owned();
    assert_eq!(
        location,
        format!("/api/jobs/{}", accepted.body["data"]["id"])
    );
    // A second request while the first waits returns the same job.
    let again = admin.post("/api/admin/reindex", json!({})).await;
    assert_eq!(again.body["data"]["id"], accepted.body["data"]["id"]);
    assert_eq!(admin.get(&location).await.body["data"]["status"], "queued");
}

#[tokio::test]
async fn a_reindex_indexes_every_market_and_skips_unchanged_text() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let admin = app.with_role("root", "admin").await;
    for name in ["Will the ferry run on time?", "Will the harbour freeze?"] {
        alice.create_market(json!({ "name": name })).await;
    }
    indexed(&app).await;
    let accepted = admin.post("/api/admin/reindex", json!({})).await;
    let location = accepted.header("location").unwrap().to_owned();
    let mut job = Value::Null;
    for _ in 0..200 {
        job = admin.get(&location).await.body["data"].clone();
        if job["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["enqueued"], 2);
    indexed(&app).await;
    let outcomes: Vec<String> = app.db().query_rows(
        "SELECT result ->> 'outcome' FROM jobs WHERE kind = 'index_market' ORDER BY id",
        &[],
    );
    assert_eq!(outcomes, ["embedded", "embedded"]);
    // The reindex is one batch job for both markets, which finds both vectors current.
    let batch = admin.get("/api/jobs?kind=index_markets").await;
    assert_eq!(
        batch.body["data"].as_array().unwrap().len(),
        1,
        "{}",
        batch.text
    );
    assert_eq!(batch.body["data"][0]["status"], "succeeded");
    assert_eq!(
        batch.body["data"][0]["result"],
        json!({"markets": 2, "embedded": 0, "unchanged": 2, "superseded": 0})
    );
    assert_eq!(app.count("market_vectors"), 2);
}

/// A reindex after the stored vectors were lost embeds every market again, 32 a job.
#[tokio::test]
async fn a_reindex_embeds_in_batches_of_32() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let admin = app.with_role("root", "admin").await;
    for n in 0..40 {
        alice
            .create_market(json!({ "name": format!("Will ferry {n} run on time?") }))
            .await;
    }
    indexed(&app).await;
    app.db().execute("DELETE FROM market_vectors", &[]);
    let accepted = admin.post("/api/admin/reindex", json!({})).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    indexed(&app).await;
    let mut done = Vec::new();
    for _ in 0..200 {
        done = admin.get("/api/jobs?kind=index_markets").await.body["data"]
            .as_array()
            .unwrap()
            .clone();
        if done.len() == 2 && done.iter().all(|j| j["status"] == "succeeded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut sizes: Vec<u64> = done
        .iter()
        .map(|j| j["payload"]["market_ids"].as_array().unwrap().len() as u64)
        .collect();
    sizes.sort();
    assert_eq!(sizes, [8, 32], "{done:?}");
    let embedded: u64 = done
        .iter()
        .map(|j| j["result"]["embedded"].as_u64().unwrap())
        .sum();
    assert_eq!(embedded, 40);
    assert_eq!(app.count("market_vectors"), 40);
    // Searching finds a re-embedded market by its words.
    let found = app
        .get("/api/markets/search?q=ferry%2017&mode=keyword")
        .await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.text);
}

/// Waits until every `index_market` and `index_markets` job has ended.
pub async fn indexed(app: &TestApp) {
    for _ in 0..800 {
        let pending = app
            .db()
            .count("jobs WHERE kind IN ('index_market', 'index_markets') AND status IN ('queued', 'running')");
        if pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("indexing did not finish");
}
