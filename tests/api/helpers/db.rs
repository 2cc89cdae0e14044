//! A direct connection to a test server's database, on either engine, for setting up state
//! and checking it: [`TestDb`].
//!
//! SQL is written once and must run on SQLite and on PostgreSQL 15 alike (the schemas share
//! table and column names):
//! - placeholders are `$1`, `$2`, ... (turned into `?1`, `?2` for SQLite);
//! - integers are read as `i64`, which PostgreSQL gives only for BIGINT: cast what it would
//!   type otherwise, e.g. `CAST(sum(amount) AS BIGINT)` (a sum of BIGINT is NUMERIC there);
//! - `->>` gives text on PostgreSQL: `CAST(payload ->> 'market_id' AS BIGINT) = $1`.
//!
//! The `postgres` client runs its own runtime and refuses to be driven from inside the test's
//! tokio runtime, so every PostgreSQL call runs on a short-lived plain thread.

use std::{cell::RefCell, path::Path, time::Duration};

use agora::db::rusqlite;

use super::engine;

mod rows;
mod tests;

pub use rows::{Column, FromRow, SqlValue};

/// A connection to one test database.
pub struct TestDb {
    inner: Inner,
}

enum Inner {
    Sqlite(rusqlite::Connection),
    // `Option` so that `Drop` can move the client to a plain thread (its runtime must not be
    // dropped on the test's runtime thread).
    Postgres(RefCell<Option<postgres::Client>>),
}

impl TestDb {
    /// The database of the server on data directory `dir`.
    pub fn open(dir: &Path) -> TestDb {
        match engine::database_url(dir) {
            Some(url) => TestDb::postgres(&url),
            None => TestDb::sqlite(&dir.join("agora.db")),
        }
    }

    /// A SQLite database file.
    pub fn sqlite(file: &Path) -> TestDb {
        let conn = rusqlite::Connection::open(file)
            .unwrap_or_else(|e| panic!("open {}: {e}", file.display()));
        conn.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        TestDb {
            inner: Inner::Sqlite(conn),
        }
    }

    /// A PostgreSQL database.
    pub fn postgres(url: &str) -> TestDb {
        let client = off_runtime(|| postgres::Client::connect(url, postgres::NoTls))
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        TestDb {
            inner: Inner::Postgres(RefCell::new(Some(client))),
        }
    }

    /// The one row `sql` returns (panics when there is none or more).
    #[track_caller]
    pub fn query_one<T: FromRow>(&self, sql: &str, params: &[&dyn Param]) -> T {
        let mut rows = self.query_rows::<T>(sql, params);
        assert_eq!(rows.len(), 1, "{sql}: expected one row");
        rows.remove(0)
    }

    /// Every row `sql` returns.
    #[track_caller]
    pub fn query_rows<T: FromRow>(&self, sql: &str, params: &[&dyn Param]) -> Vec<T> {
        let rows = match &self.inner {
            Inner::Sqlite(conn) => sqlite_rows(conn, sql, params),
            Inner::Postgres(client) => with_client(client, |client| {
                client
                    .query(sql, &pg_params(params))
                    .map_err(|e| pg_error(&e))?
                    .iter()
                    .map(T::from_pg)
                    .collect()
            }),
        };
        rows.unwrap_or_else(|e| panic!("{} query failed: {e}\n{sql}", engine::engine_name()))
    }

    /// Runs one statement; returns the number of rows it changed.
    #[track_caller]
    pub fn execute(&self, sql: &str, params: &[&dyn Param]) -> u64 {
        let changed = match &self.inner {
            Inner::Sqlite(conn) => {
                let params: Vec<&dyn rusqlite::ToSql> = params.iter().map(|p| *p as _).collect();
                conn.execute(&sqlite_placeholders(sql), params.as_slice())
                    .map(|n| n as u64)
                    .map_err(|e| e.to_string())
            }
            Inner::Postgres(client) => with_client(client, |client| {
                client
                    .execute(sql, &pg_params(params))
                    .map_err(|e| pg_error(&e))
            }),
        };
        changed.unwrap_or_else(|e| panic!("{} statement failed: {e}\n{sql}", engine::engine_name()))
    }

    /// Runs statements separated by `;`, without parameters.
    #[track_caller]
    pub fn batch(&self, sql: &str) {
        let done = match &self.inner {
            Inner::Sqlite(conn) => conn.execute_batch(sql).map_err(|e| e.to_string()),
            Inner::Postgres(client) => with_client(client, |client| {
                client.batch_execute(sql).map_err(|e| pg_error(&e))
            }),
        };
        done.unwrap_or_else(|e| panic!("{} batch failed: {e}\n{sql}", engine::engine_name()))
    }

    /// `SELECT count(*) FROM <from>`, where `from` is a table and maybe a `WHERE` clause.
    #[track_caller]
    pub fn count(&self, from: &str) -> i64 {
        self.query_one(&format!("SELECT count(*) FROM {from}"), &[])
    }

    /// The money invariants of DESIGN.md section 4 (and the derived counts) that do not hold:
    /// agora's own portable checks, each a query counting its violations.
    #[track_caller]
    pub fn broken_invariants(&self) -> Vec<&'static str> {
        agora::db::invariants::CHECKS
            .iter()
            .filter(|(_, sql)| self.query_one::<i64>(sql, &[]) != 0)
            .map(|(name, _)| *name)
            .collect()
    }

    /// Checks every invariant.
    #[track_caller]
    pub fn assert_invariants(&self) {
        let broken = self.broken_invariants();
        assert!(broken.is_empty(), "broken invariants: {broken:?}");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Inner::Postgres(client) = &self.inner {
            if let Some(client) = client.borrow_mut().take() {
                off_runtime(move || drop(client));
            }
        }
    }
}

/// Runs `f` on a plain thread, outside any tokio runtime.
fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn with_client<R: Send>(
    client: &RefCell<Option<postgres::Client>>,
    f: impl FnOnce(&mut postgres::Client) -> R + Send,
) -> R {
    let mut client = client.borrow_mut();
    let client = client.as_mut().expect("an open client");
    off_runtime(move || f(client))
}

fn pg_params<'a>(params: &[&'a dyn Param]) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    params.iter().map(|p| *p as _).collect()
}

/// A PostgreSQL error with the server's message, detail and hint.
fn pg_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {}", db.severity(), db.message());
            for extra in [db.detail(), db.hint()].into_iter().flatten() {
                text.push_str(&format!(" ({extra})"));
            }
            text
        }
        None => e.to_string(),
    }
}

fn sqlite_rows<T: FromRow>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[&dyn Param],
) -> Result<Vec<T>, String> {
    let params: Vec<&dyn rusqlite::ToSql> = params.iter().map(|p| *p as _).collect();
    let mut stmt = conn
        .prepare(&sqlite_placeholders(sql))
        .map_err(|e| e.to_string())?;
    let mut rows = stmt.query(params.as_slice()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(|e| e.to_string())? {
        out.push(T::from_sqlite(row)?);
    }
    Ok(out)
}

/// `$1`, `$2`, ... as SQLite's `?1`, `?2`, ... (to SQLite `$1` is a named parameter, numbered
/// by first appearance); string literals are left alone.
fn sqlite_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => quoted = !quoted,
            '$' if !quoted && chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push('?');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// A statement parameter: any value both drivers can bind (`i64`, `&str`, `String`,
/// `Option<i64>`, `Vec<u8>`, ...).
pub trait Param: rusqlite::ToSql + postgres::types::ToSql + Sync {}

impl<T: rusqlite::ToSql + postgres::types::ToSql + Sync> Param for T {}
