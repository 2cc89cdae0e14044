//! Test harness: spawn the real server on port 0 in a temporary data dir, talk to it over HTTP.
//! The storage engine is SQLite, or PostgreSQL when `AGORA_TEST_DATABASE_URL` is set (see
//! [`engine`]); rate limits are counted in process, or in Redis when `AGORA_TEST_REDIS_URL` is
//! set (see [`redis_limits`]).

mod db;
mod engine;
mod process;
mod provider;
mod redis_limits;
mod sse;

use std::time::Duration;

use agora::{App, Config};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};

pub use db::{SqlValue, TestDb};
pub use engine::{
    database_args, database_url, fresh_database, maintenance_url, on_postgres, skip_on_postgres,
    skip_on_sqlite,
};
pub use process::Process;
pub use provider::{start_provider, Provider};
pub use redis_limits::{fresh_prefix, redis_args, redis_server, redis_url, skip_without_redis};
pub use sse::{Next, SseEvent, SseStream};

/// The signing secret test servers use, so tests can forge tokens.
pub const JWT_SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";
/// Password of every test account.
pub const PASSWORD: &str = "correct horse battery";

/// A running server and a client for it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Keep-alive HTTP client.
    pub client: reqwest::Client,
    /// The data directory (deleted on drop).
    pub dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

/// A response, read fully.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `key` of every item of a list's `data`.
    pub fn column(&self, key: &str) -> Vec<Value> {
        self.body["data"]
            .as_array()
            .map(|items| items.iter().map(|m| m[key].clone()).collect())
            .unwrap_or_default()
    }

    /// The ids of a list's items.
    pub fn ids(&self) -> Vec<i64> {
        self.column("id")
            .iter()
            .map(|v| v.as_i64().expect("id"))
            .collect()
    }

    /// Asserts this is an error envelope with `status` and `code`; returns its details.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> Vec<Value> {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "error is not JSON: {:?}",
            self.headers
        );
        assert_eq!(self.body["success"], json!(false), "{}", self.text);
        assert_eq!(self.body["code"], json!(code), "{}", self.text);
        assert!(self.body["error"].as_str().is_some_and(|e| !e.is_empty()));
        let id = self.body["request_id"].as_str().expect("request_id");
        assert_eq!(
            Some(id),
            self.header("x-request-id"),
            "request_id must equal the X-Request-Id header"
        );
        self.body["details"]
            .as_array()
            .expect("details array")
            .clone()
    }

    /// Asserts one detail names `field`.
    #[track_caller]
    pub fn assert_field_error(&self, status: u16, code: &str, field: &str) {
        let details = self.assert_error(status, code);
        assert!(
            details.iter().any(|d| d["field"] == json!(field)),
            "no detail for field {field}: {}",
            self.text
        );
    }
}

impl TestApp {
    /// A server on a fresh data directory.
    pub async fn spawn() -> TestApp {
        Self::spawn_in(tempfile::tempdir().expect("tempdir")).await
    }

    /// A server on `dir` (which may hold an earlier server's data).
    pub async fn spawn_in(dir: TempDir) -> TestApp {
        let config = Self::config(&dir, &[]);
        Self::spawn_with(dir, config).await
    }

    /// Configuration for `dir` (and its database) plus extra flags.
    pub fn config(dir: &TempDir, extra: &[&str]) -> Config {
        let data_dir = dir.path().to_str().expect("utf-8 path").to_owned();
        let database = database_args(dir.path());
        let redis = redis_args();
        let mut args = vec![
            "agora",
            "--bind",
            "127.0.0.1:0",
            "--data-dir",
            &data_dir,
            "--jwt-secret",
            JWT_SECRET,
        ];
        args.extend(database.iter().map(String::as_str));
        args.extend(redis.iter().map(String::as_str));
        // Suites register and log in many accounts from one address; tests of the limiter
        // set the quotas they need (a later flag overrides an earlier one).
        for flag in [
            "--rate-auth",
            "--rate-login",
            "--rate-writes",
            "--rate-reads",
            "--rate-search",
            "--rate-admin",
        ] {
            args.extend_from_slice(&[flag, "100000/s"]);
        }
        args.extend_from_slice(extra);
        Config::from_args(args).expect("valid test config")
    }

    /// A server with an explicit configuration.
    pub async fn spawn_with(dir: TempDir, config: Config) -> TestApp {
        let app = App::build(config).await.expect("server builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        TestApp {
            base,
            client,
            dir,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    /// Kills the server without a graceful shutdown (its task is dropped mid-flight, as in a
    /// crash) and hands back its data directory.
    pub async fn crash(mut self) -> TempDir {
        self.stop.take();
        if let Some(handle) = self.handle.take() {
            handle.abort();
            let _ = handle.await;
        }
        tempfile::tempdir()
            .map(|spare| std::mem::replace(&mut self.dir, spare))
            .expect("tempdir")
    }

    /// Stops the server gracefully and hands back its data directory.
    pub async fn stop(mut self) -> TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
        tempfile::tempdir()
            .map(|spare| std::mem::replace(&mut self.dir, spare))
            .expect("tempdir")
    }

    /// Sends an anonymous request; `body` is sent as JSON when given.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        request(&self.client, &self.base, None, method, path, body, headers).await
    }

    /// Reads a response fully. Every response of the suite passes here, so this is also where
    /// the suite checks that no body ever carries a password hash.
    pub async fn read(resp: reqwest::Response) -> Reply {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        assert!(
            !text.contains("$argon2"),
            "a response carries a password hash: {text}"
        );
        assert!(
            !text.contains("password_hash") && !text.contains("token_hash"),
            "a response names a hash: {text}"
        );
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(body), &[]).await
    }

    /// A GET with `Authorization: Bearer <token>`.
    pub async fn get_with_token(&self, path: &str, token: &str) -> Reply {
        request(
            &self.client,
            &self.base,
            Some(token),
            Method::GET,
            path,
            None,
            &[],
        )
        .await
    }

    /// Registers an account through the API; returns its id.
    pub async fn register(&self, username: &str) -> i64 {
        let reply = self
            .post(
                "/api/auth/register",
                json!({"username": username, "password": PASSWORD}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        reply.body["data"]["id"].as_i64().expect("id")
    }

    /// Logs in; returns the session `data`.
    pub async fn login(&self, username: &str) -> Value {
        let reply = self
            .post(
                "/api/auth/login",
                json!({"username": username, "password": PASSWORD}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply.body["data"].clone()
    }

    /// A registered, logged-in `user`.
    pub async fn user(&self, username: &str) -> Caller {
        self.with_role(username, "user").await
    }

    /// A registered account given `role` (directly in the database), then logged in.
    pub async fn with_role(&self, username: &str, role: &str) -> Caller {
        let id = self.register(username).await;
        if role != "user" {
            self.db()
                .execute("UPDATE users SET role = $1 WHERE id = $2", &[&role, &id]);
        }
        self.caller(username, id).await
    }

    /// Logs in an existing account (id `id`) and returns its client.
    pub async fn caller(&self, username: &str, id: i64) -> Caller {
        let session = self.login(username).await;
        Caller {
            id,
            token: session["access_token"].as_str().expect("token").to_owned(),
            client: self.client.clone(),
            base: self.base.clone(),
        }
    }

    /// A direct connection to the server's database, for setting up and checking state.
    pub fn db(&self) -> TestDb {
        TestDb::open(self.dir.path())
    }

    /// Number of rows in `from` (a table, maybe with a `WHERE` clause).
    #[track_caller]
    pub fn count(&self, from: &str) -> i64 {
        self.db().count(from)
    }

    /// A stable fingerprint of every market and outcome row, to show nothing changed.
    pub fn snapshot(&self) -> String {
        let db = self.db();
        let mut out = String::new();
        for sql in [
            "SELECT id, name, description, creator_id, status, close_time, version, updated_at
               FROM markets ORDER BY id",
            "SELECT market_id, idx, label, pool FROM outcomes ORDER BY market_id, idx",
        ] {
            for row in db.query_rows::<Vec<SqlValue>>(sql, &[]) {
                out.push_str(&format!("{row:?}\n"));
            }
        }
        out
    }
}

/// An authenticated client: every request carries its bearer token.
#[derive(Clone)]
pub struct Caller {
    /// The account's id.
    pub id: i64,
    /// Access token.
    pub token: String,
    client: reqwest::Client,
    base: String,
}

impl Caller {
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        request(
            &self.client,
            &self.base,
            Some(&self.token),
            method,
            path,
            body,
            headers,
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(body), &[]).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(Method::PATCH, path, Some(body), &[]).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(Method::PUT, path, Some(body), &[]).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None, &[]).await
    }

    /// Creates a market through the API and returns its `data`.
    pub async fn create_market(&self, body: Value) -> Value {
        let reply = self.post("/api/markets", body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        reply.body["data"].clone()
    }
}

/// Sends a request, with a bearer token when given.
pub async fn request(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = client.request(method, format!("{base}{path}"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    TestApp::read(req.send().await.expect("request sent")).await
}

impl TestApp {
    /// Checks every money invariant of DESIGN.md section 4 by SQL over the whole database.
    #[track_caller]
    pub fn assert_invariants(&self) {
        self.db().assert_invariants();
    }

    /// A user's balance, from the database.
    #[track_caller]
    pub fn balance(&self, user_id: i64) -> i64 {
        self.db()
            .query_one("SELECT balance FROM users WHERE id = $1", &[&user_id])
    }
}

impl Caller {
    /// Stakes through the API.
    pub async fn stake(&self, market_id: &Value, outcome: u32, amount: i64) -> Reply {
        self.post(
            &format!("/api/markets/{market_id}/positions"),
            json!({"outcome": outcome, "amount": amount}),
        )
        .await
    }
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes; whether it held.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The claims of an access token the server issued, decoded without checking its signature.
pub fn token_claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("JWT payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("claims")
}
