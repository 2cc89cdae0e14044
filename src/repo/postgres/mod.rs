//! The PostgreSQL engine: the repositories of [`crate::repo`] over a `deadpool-postgres` pool
//! of `tokio-postgres` connections, chosen with `--database-url postgres://...`. A sibling of
//! [`super::sqlite`]; [`open`] is what `app.rs` calls to get this one's [`Storage`].
//!
//! SQLite is the default and needs nothing else. Choose PostgreSQL when its operators already
//! run it, when the data should live apart from the machine that serves it, or to run several
//! agora processes on one database behind a load balancer. The API, its errors and every trading
//! rule are the same; the whole integration suite runs on both engines.
//!
//! ```sh
//! createdb agora                                       # an empty database (any name)
//! export AGORA_DATABASE_URL=postgres://user:password@127.0.0.1:5432/agora
//! cargo run --release -- seed --markets 50             # seed and users create take it too
//! cargo run --release                                  # creates the schema on first start
//! ```
//!
//! - **Schema**: versioned migrations embedded in the binary (`migrations/`), applied at start
//!   in one transaction under an advisory lock (several processes may start at once), tracked
//!   in `agora_schema`. Same tables and columns as on SQLite; times are Unix milliseconds
//!   (`BIGINT`), job payloads `jsonb`, keyword search a generated `tsvector` column with a GIN
//!   index, vectors little-endian `f32` in `bytea` (no pgvector needed).
//! - **Concurrency**: every write is one transaction at READ COMMITTED. Where SQLite's single
//!   writer orders writes, here row locks do: a stake and a settlement lock the market row
//!   first (`FOR NO KEY UPDATE`), then accounts; the balance rule is a conditional debit
//!   (`UPDATE users SET balance = balance - $2 WHERE id = $1 AND balance >= $2`). Deadlocks,
//!   serialization failures and a lost idempotency-key race are retried a bounded number of
//!   times (`transaction`); the rules themselves are the pure functions of
//!   [`crate::domain`], shared with SQLite.
//! - **Errors**: SQLSTATEs are mapped to [`RepoError`] in one place (`codes.rs`); a database
//!   that is unreachable or restarting is `Unavailable` (503), and the pool replaces broken
//!   connections by itself, so agora serves again as soon as the database does.
//! - **Jobs**: claimed with `FOR UPDATE SKIP LOCKED` under a lease; completion is fenced on
//!   the claim's lease token.
//! - **Several processes**: a write notes what it changed (a market, a vector, a session, a
//!   role); after its commit the change is announced with `NOTIFY` (`changes.rs`), and every
//!   other process, listening, drops what it cached of it ([`crate::repo::ChangeFeed`]).
//!
//! ## What differs from SQLite
//!
//!
//! - **Schema**: created and migrated at start (migrations embedded in the binary, one
//!   transaction, under an advisory lock so concurrent starts are safe); `/readyz` reports
//!   PostgreSQL's schema version, and says 503 while the database is unreachable or a read-only
//!   standby.
//! - **Concurrency**: each write is one transaction at READ COMMITTED that locks the market's row
//!   first (stakes, edits and settlements of one market are ordered, as on SQLite's single
//!   writer); a debit is a conditional update; deadlocks and serialization failures are retried up
//!   to 5 times. Jobs are claimed with `FOR UPDATE SKIP LOCKED` under a lease.
//! - **Outages**: while PostgreSQL is down or restarting, requests that need it get 503
//!   `unavailable` (a JSON error; reads the cache holds still answer), and agora serves again as
//!   soon as it is back, without a restart (a test stops and restarts PostgreSQL under a stake
//!   load). A request waits at most 5 s for a connection.
//! - **Search**: keywords use PostgreSQL full-text search (English stemming, names weigh more than
//!   descriptions, a GIN index) ranked by `ts_rank` instead of FTS5's bm25 (one word at a time,
//!   the words' ranks summed, as on SQLite), so keyword rankings can differ slightly; vectors are stored in the database and ranked in agora as on SQLite (no
//!   pgvector needed).
//! - **Durability**: PostgreSQL's. A 201 means the transaction committed; with PostgreSQL's
//!   default `synchronous_commit = on` it is on disk (`--synchronous` is SQLite's setting and does
//!   nothing here). A test kills agora with SIGKILL under a stake load on both engines and finds
//!   every acknowledged stake.
//! - **Backups**: `agora backup`/`restore` and `--backup-every-secs` refuse on PostgreSQL: use
//!   `pg_dump --format=custom` and `pg_restore` (or your platform's backups and point-in-time
//!   recovery). The data dir still holds the generated `jwt-secret` (or pass `--jwt-secret`).
//! - **Connections**: `--db-pool-size` (16) connections at most; TLS is not built in (run agora
//!   next to the database, or through a local TLS proxy).
//!
//! ## Several agora processes on one PostgreSQL
//!
//! On PostgreSQL, any number of agora processes can serve one database behind a load balancer:
//!
//! ```sh
//! export AGORA_DATABASE_URL=postgres://user:password@db.internal:5432/agora
//! export AGORA_JWT_SECRET=$(openssl rand -hex 32)      # the same secret in every process
//! export AGORA_REDIS_URL=redis://redis.internal:6379/0 # one set of rate-limit quotas for all
//! agora serve --bind 0.0.0.0:8081 --data-dir /var/lib/agora-1 &
//! agora serve --bind 0.0.0.0:8082 --data-dir /var/lib/agora-2 &
//! agora serve --bind 0.0.0.0:8083 --data-dir /var/lib/agora-3 &
//! # and a load balancer (nginx, HAProxy, a cloud LB) sending /api/ round-robin to the three
//! ```
//!
//! What each shared piece does:
//!
//! - **PostgreSQL** holds every row and orders every write (row locks); a stake acknowledged by
//!   any process is committed. Refresh-token rotation and reuse detection are transactions on it,
//!   so a token replayed on another process still revokes its family.
//! - **Change announcements** (PostgreSQL `LISTEN`/`NOTIFY`, nothing else to run): every write
//!   that changes a market, a search vector, a session or a role notes it, and once it commits the
//!   process announces it (gathered over 5 ms into one `NOTIFY`, after the commit: a `NOTIFY`
//!   inside the transaction would serialise every commit's WAL flush); every process follows the
//!   others' and drops what it cached. The process that wrote reads its own write at once; the
//!   others serve the new version a few milliseconds after the commit (a test bounds it at 1 s;
//!   measured: 2 ms). A process killed between a commit and its announcement leaves the others on
//!   the TTL for that change. If a process loses its
//!   listening connection, it logs a warning, `agora_change_feed_connected` drops to 0, its cache
//!   falls back to `--cache-ttl-secs` (60 s), and when it reconnects it drops its caches and
//!   reloads its vector index, since announcements may have been missed.
//! - **Jobs** are rows claimed with `FOR UPDATE SKIP LOCKED` under a lease: each runs once
//!   cluster-wide, periodic jobs (the close sweep, pruning) exist once and run once per period,
//!   and a job whose process died is claimed again by another when its lease (the job timeout
//!   plus 10 s) runs out.
//! - **Search**: each process keeps the vector index in memory and follows vectors stored and
//!   statuses changed by any process (and markets written by `agora seed` into the same
//!   database).
//! - **Redis** (`--redis-url`) counts every rate-limit quota for all the processes, so a client
//!   spread over them gets one quota, not one per process; without it each process counts its
//!   own. While Redis cannot answer, limited requests pass uncounted (or get 503 with
//!   `--redis-failure closed`) and logins get 503 ([`crate::middleware::rate_limit`]).

mod changes;
mod codes;
mod engine;
mod events;
mod jobs;
mod market_list;
mod markets;
mod migrations;
mod search;
mod seed;
mod sessions;
mod trading;
mod trading_lists;
mod users;
mod webhooks;

use std::{future::Future, sync::Arc, time::Duration};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{types::ToSql, NoTls, Row, Statement};

pub use codes::classify;
pub use migrations::SCHEMA_VERSION;

use crate::{
    domain::{job::QueueConfig, paging::KeyPart},
    repo::{RepoError, Storage},
};

/// How to reach and use the database.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/database?...`
    pub url: String,
    /// Most connections in the pool.
    pub pool_size: usize,
    /// Longest a statement may run (zero: no limit).
    pub statement_timeout: Duration,
    /// Longest a request waits for a connection (or for one to be made) before it gets 503.
    pub connect_timeout: Duration,
}

/// Why PostgreSQL could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PgOpenError {
    /// The URL does not parse.
    #[error("--database-url is not a PostgreSQL URL: {0}")]
    Url(String),
    /// The pool could not be built.
    #[error("cannot create the PostgreSQL pool: {0}")]
    Pool(String),
    /// Connecting or migrating failed.
    #[error("cannot use the PostgreSQL database: {0}")]
    Database(String),
    /// The database was migrated by a newer agora.
    #[error("the PostgreSQL database has schema version {found}; this agora supports up to {supported}: upgrade agora")]
    TooNew {
        /// The database's version.
        found: i64,
        /// This build's.
        supported: i64,
    },
}

/// The pool, and how long to wait on it.
pub(crate) struct Pg {
    pool: Pool,
    waits: std::sync::atomic::AtomicU64,
    /// Sends committed changes to the other processes.
    pub(crate) announcer: changes::Announcer,
}

/// A pooled connection.
pub(crate) type Client = deadpool_postgres::Object;

impl Pg {
    /// A connection from the pool; `Unavailable` when none can be had in time (the database is
    /// down, or every connection is busy for longer than the wait timeout).
    pub(crate) async fn client(&self) -> Result<Client, RepoError> {
        if self.pool.status().available == 0 {
            self.waits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.pool
            .get()
            .await
            .map_err(|e| RepoError::Unavailable(format!("no database connection: {e}")))
    }
}

/// One statement run on a pooled connection or inside a transaction, prepared once per
/// connection (`prepare_cached`): a query costs one round trip, not a parse each time. Inside a
/// transaction it also collects the changes the transaction announces
/// ([`Conn::announce`]), sent to the other processes once it commits.
pub(crate) struct Conn<'a> {
    on: On<'a>,
    announced: std::sync::Mutex<Vec<crate::repo::Change>>,
}

enum On<'a> {
    Client(&'a Client),
    Tx(&'a deadpool_postgres::Transaction<'a>),
}

/// Parameters of a statement.
pub(crate) type Params<'p> = [&'p (dyn ToSql + Sync)];

impl<'a> Conn<'a> {
    /// Statements outside a transaction.
    pub(crate) fn client(client: &'a Client) -> Self {
        Conn {
            on: On::Client(client),
            announced: Default::default(),
        }
    }

    fn tx(tx: &'a deadpool_postgres::Transaction<'a>) -> Self {
        Conn {
            on: On::Tx(tx),
            announced: Default::default(),
        }
    }

    /// Notes a change to announce when the transaction commits.
    pub(crate) fn announce(&self, change: crate::repo::Change) {
        if let Ok(mut announced) = self.announced.lock() {
            announced.push(change);
        }
    }

    fn announced(self) -> Vec<crate::repo::Change> {
        self.announced.into_inner().unwrap_or_default()
    }

    async fn statement(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        match self.on {
            On::Client(c) => c.prepare_cached(sql).await,
            On::Tx(t) => t.prepare_cached(sql).await,
        }
    }

    /// Every row.
    pub(crate) async fn rows(&self, sql: &str, p: &Params<'_>) -> Result<Vec<Row>, TxError> {
        let st = self.statement(sql).await?;
        Ok(match self.on {
            On::Client(c) => c.query(&st, p).await?,
            On::Tx(t) => t.query(&st, p).await?,
        })
    }

    /// The row, if any (more than one is an error).
    pub(crate) async fn opt(&self, sql: &str, p: &Params<'_>) -> Result<Option<Row>, TxError> {
        let st = self.statement(sql).await?;
        Ok(match self.on {
            On::Client(c) => c.query_opt(&st, p).await?,
            On::Tx(t) => t.query_opt(&st, p).await?,
        })
    }

    /// Exactly one row.
    pub(crate) async fn one(&self, sql: &str, p: &Params<'_>) -> Result<Row, TxError> {
        let st = self.statement(sql).await?;
        Ok(match self.on {
            On::Client(c) => c.query_one(&st, p).await?,
            On::Tx(t) => t.query_one(&st, p).await?,
        })
    }

    /// Rows changed.
    pub(crate) async fn exec(&self, sql: &str, p: &Params<'_>) -> Result<u64, TxError> {
        let st = self.statement(sql).await?;
        Ok(match self.on {
            On::Client(c) => c.execute(&st, p).await?,
            On::Tx(t) => t.execute(&st, p).await?,
        })
    }
}

/// A failure inside a transaction: the driver's (classified, and maybe retried, at the end) or
/// a repository's own.
#[derive(Debug)]
pub(crate) enum TxError {
    /// From the database.
    Db(tokio_postgres::Error),
    /// Decided here (a rule refused, a row is missing).
    Repo(RepoError),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        TxError::Db(e)
    }
}

impl From<RepoError> for TxError {
    fn from(e: RepoError) -> Self {
        TxError::Repo(e)
    }
}

impl From<TxError> for RepoError {
    fn from(e: TxError) -> Self {
        match e {
            TxError::Db(e) => classify(e),
            TxError::Repo(e) => e,
        }
    }
}

/// How many times a transaction that lost a race (deadlock, serialization failure, a
/// concurrent insert of the same idempotency key) is run again before the error is returned.
pub(crate) const RETRIES: u32 = 5;

/// Runs `body` in a transaction at READ COMMITTED and commits it; runs it again from the
/// start (at most [`RETRIES`] times, after a short growing pause) when the database says it
/// lost a race that a retry resolves ([`codes::retryable`]). `body` gets the transaction as a
/// [`Conn`] and must be safe to run more than once (it is: a failed attempt rolls back).
pub(crate) async fn transaction<T, F>(pg: &Pg, mut body: F) -> Result<T, RepoError>
where
    F: for<'c> FnMut(&'c Conn<'c>) -> futures_util::future::BoxFuture<'c, Result<T, TxError>>,
{
    let mut attempt = 0;
    loop {
        let mut client = pg.client().await?;
        let result = async {
            let tx = client.transaction().await?;
            let (value, announced) = {
                let conn = Conn::tx(&tx);
                let value = body(&conn).await?;
                (value, conn.announced())
            };
            tx.commit().await?;
            pg.announcer.send(announced);
            Ok::<_, TxError>(value)
        }
        .await;
        match result {
            Err(TxError::Db(e)) if attempt < RETRIES && codes::retryable(&e) => {
                attempt += 1;
                tracing::debug!(attempt, error = %e, "retrying a transaction that lost a race");
                tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 2)).await;
            }
            other => return other.map_err(RepoError::from),
        }
    }
}

/// Runs `body` on a pooled connection outside a transaction (one statement, or reads that need
/// no common snapshot).
pub(crate) async fn read<T, F, Fut>(pg: &Pg, body: F) -> Result<T, RepoError>
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = Result<T, TxError>>,
{
    let client = pg.client().await?;
    body(client).await.map_err(RepoError::from)
}

/// Runs `body` in a read-only REPEATABLE READ transaction: several statements (a page and its
/// total) that read one snapshot.
pub(crate) async fn snapshot<T, F>(pg: &Pg, body: F) -> Result<T, RepoError>
where
    F: for<'c> FnOnce(&'c Conn<'c>) -> futures_util::future::BoxFuture<'c, Result<T, TxError>>,
{
    let mut client = pg.client().await?;
    let result = async {
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let value = {
            let conn = Conn::tx(&tx);
            body(&conn).await?
        };
        tx.commit().await?;
        Ok::<_, TxError>(value)
    }
    .await;
    result.map_err(RepoError::from)
}

/// Opens the database at `options.url` (creating the schema or migrating it, refusing one from
/// a newer agora) and returns every repository over it; `queue` sets the job queue's retries
/// and leases.
pub async fn open(options: &PgOptions, queue: QueueConfig) -> Result<Storage, PgOpenError> {
    let (mut pg, config) = connect(options)?;
    pg.announcer = changes::Announcer::start(config.clone());
    let pg = Arc::new(pg);
    migrations::apply(&pg).await?;
    Ok(Storage {
        engine: Arc::new(engine::PgEngine::new(pg.clone())),
        backup: backups(),
        markets: Arc::new(markets::PgMarketRepository::new(pg.clone())),
        trading: Arc::new(trading::PgTradingRepository::new(pg.clone())),
        users: Arc::new(users::PgUserRepository::new(pg.clone())),
        sessions: Arc::new(sessions::PgSessionRepository::new(pg.clone())),
        search: Arc::new(search::PgSearchRepository::new(pg.clone())),
        jobs: Arc::new(jobs::PgJobRepository::new(pg.clone(), queue)),
        events: Arc::new(events::PgEventRepository::new(pg.clone())),
        webhooks: Arc::new(webhooks::PgWebhookRepository::new(pg.clone())),
        seed: Arc::new(seed::PgSeedRepository::new(pg)),
        changes: Some(Arc::new(changes::PgChangeFeed::new(config))),
    })
}

/// Backups on PostgreSQL: refused, naming the tools that do them (`pg_dump`, `pg_restore`).
pub fn backups() -> Arc<dyn crate::repo::Backup> {
    Arc::new(engine::PgBackup)
}

/// The pool for `options` (no connection is made until one is needed), and the connection
/// settings it uses.
fn connect(options: &PgOptions) -> Result<(Pg, tokio_postgres::Config), PgOpenError> {
    let mut config: tokio_postgres::Config = options
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| PgOpenError::Url(e.to_string()))?;
    if config.get_application_name().is_none() {
        config.application_name("agora");
    }
    let timeout = options.statement_timeout.as_millis();
    // Every session of the pool: statements bounded, times in UTC.
    config.options(format!(
        "-c statement_timeout={timeout} -c idle_in_transaction_session_timeout=60000 -c TimeZone=UTC"
    ));
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.connect_timeout);
    }
    // A dead peer (the network, not the server, went away) is noticed within a minute.
    config.keepalives_idle(Duration::from_secs(30));
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(options.pool_size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(options.connect_timeout))
        .create_timeout(Some(options.connect_timeout))
        .recycle_timeout(Some(options.connect_timeout))
        .build()
        .map_err(|e| PgOpenError::Pool(e.to_string()))?;
    let pg = Pg {
        pool,
        waits: std::sync::atomic::AtomicU64::new(0),
        announcer: changes::Announcer::none(),
    };
    Ok((pg, config))
}

/// A cursor's key part as a statement parameter.
pub(crate) fn key_param(k: &KeyPart) -> Box<dyn ToSql + Sync + Send> {
    match k {
        KeyPart::Int(i) => Box::new(*i),
        KeyPart::Text(s) => Box::new(s.clone()),
        KeyPart::Null => Box::new(None::<i64>),
    }
}

/// Now, as stored.
pub(crate) fn now_ms() -> i64 {
    super::to_millis(time::OffsetDateTime::now_utc())
}
