//! The PostgreSQL engine: the repositories of [`crate::repo`] over a `deadpool-postgres` pool
//! of `tokio-postgres` connections, chosen with `--database-url postgres://...`. A sibling of
//! [`super::sqlite`]; [`open`] is what `app.rs` calls to get this one's [`Storage`].
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
//!   times ([`transaction`]); the rules themselves are the pure functions of
//!   [`crate::domain`], shared with SQLite.
//! - **Errors**: SQLSTATEs are mapped to [`RepoError`] in one place (`codes.rs`); a database
//!   that is unreachable or restarting is `Unavailable` (503), and the pool replaces broken
//!   connections by itself, so agora serves again as soon as the database does.
//! - **Jobs**: claimed with `FOR UPDATE SKIP LOCKED` under a lease; completion is fenced on
//!   the claim's lease token.
//! - **Several processes**: a write notes what it changed (a market, a vector, a session, a
//!   role); after its commit the change is announced with `NOTIFY` (`changes.rs`), and every
//!   other process, listening, drops what it cached of it ([`crate::repo::ChangeFeed`]).

mod changes;
mod codes;
mod engine;
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
