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
use postgres::types::{FromSql, Type};

use super::engine;

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

/// A value of any column type, for comparing whole rows.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// A column value readable from both engines.
pub trait Column: Sized + Send {
    fn from_sqlite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self, String>;
    fn from_pg(row: &postgres::Row, i: usize) -> Result<Self, String>;
}

macro_rules! column {
    ($($t:ty),*) => {$(
        impl Column for $t {
            fn from_sqlite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self, String> {
                row.get(i).map_err(|e| format!("column {i}: {e}"))
            }
            fn from_pg(row: &postgres::Row, i: usize) -> Result<Self, String> {
                row.try_get(i).map_err(|e| {
                    format!(
                        "column {i} ({}): {e}; cast it to the portable type, e.g. CAST(x AS BIGINT)",
                        row.columns()[i].type_()
                    )
                })
            }
        }
    )*};
}

column!(
    i64,
    Option<i64>,
    String,
    Option<String>,
    f64,
    Option<f64>,
    Vec<u8>,
    Option<Vec<u8>>
);

impl Column for SqlValue {
    fn from_sqlite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self, String> {
        use rusqlite::types::ValueRef;
        Ok(match row.get_ref(i).map_err(|e| e.to_string())? {
            ValueRef::Null => SqlValue::Null,
            ValueRef::Integer(n) => SqlValue::Int(n),
            ValueRef::Real(x) => SqlValue::Real(x),
            ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
        })
    }

    fn from_pg(row: &postgres::Row, i: usize) -> Result<Self, String> {
        let ty = row.columns()[i].type_().clone();
        let get = |e: postgres::Error| format!("column {i} ({ty}): {e}");
        let value = match ty {
            Type::INT8 => row
                .try_get::<_, Option<i64>>(i)
                .map_err(get)?
                .map(SqlValue::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)
                .map_err(get)?
                .map(|n| SqlValue::Int(n.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)
                .map_err(get)?
                .map(|n| SqlValue::Int(n.into())),
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)
                .map_err(get)?
                .map(|b| SqlValue::Int(b.into())),
            Type::FLOAT8 => row
                .try_get::<_, Option<f64>>(i)
                .map_err(get)?
                .map(SqlValue::Real),
            Type::BYTEA => row
                .try_get::<_, Option<Vec<u8>>>(i)
                .map_err(get)?
                .map(SqlValue::Blob),
            Type::JSON | Type::JSONB => row
                .try_get::<_, Option<Json>>(i)
                .map_err(get)?
                .map(|j| SqlValue::Text(j.0)),
            _ => row
                .try_get::<_, Option<String>>(i)
                .map_err(|_| format!("column {i} has type {ty}; cast it to BIGINT, TEXT or BYTEA"))?
                .map(SqlValue::Text),
        };
        Ok(value.unwrap_or(SqlValue::Null))
    }
}

/// JSON or JSONB as its text.
struct Json(String);

impl<'a> FromSql<'a> for Json {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        // JSONB's binary form is a version byte (1) and the text.
        let text = if *ty == Type::JSONB { &raw[1..] } else { raw };
        Ok(Json(std::str::from_utf8(text)?.to_owned()))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSON | Type::JSONB)
    }
}

/// A row readable from both engines: one [`Column`] type, a tuple of them, or `Vec<SqlValue>`
/// (every column).
pub trait FromRow: Sized + Send {
    fn from_sqlite(row: &rusqlite::Row<'_>) -> Result<Self, String>;
    fn from_pg(row: &postgres::Row) -> Result<Self, String>;
}

macro_rules! single {
    ($($t:ty),*) => {$(
        impl FromRow for $t {
            fn from_sqlite(row: &rusqlite::Row<'_>) -> Result<Self, String> {
                Column::from_sqlite(row, 0)
            }
            fn from_pg(row: &postgres::Row) -> Result<Self, String> {
                Column::from_pg(row, 0)
            }
        }
    )*};
}

single!(
    i64,
    Option<i64>,
    String,
    Option<String>,
    f64,
    Option<f64>,
    Vec<u8>,
    Option<Vec<u8>>,
    SqlValue
);

macro_rules! tuple {
    ($($name:ident $i:tt),+) => {
        impl<$($name: Column),+> FromRow for ($($name,)+) {
            fn from_sqlite(row: &rusqlite::Row<'_>) -> Result<Self, String> {
                Ok(($($name::from_sqlite(row, $i)?,)+))
            }
            fn from_pg(row: &postgres::Row) -> Result<Self, String> {
                Ok(($($name::from_pg(row, $i)?,)+))
            }
        }
    };
}

tuple!(A 0, B 1);
tuple!(A 0, B 1, C 2);
tuple!(A 0, B 1, C 2, D 3);

impl FromRow for Vec<SqlValue> {
    fn from_sqlite(row: &rusqlite::Row<'_>) -> Result<Self, String> {
        (0..row.as_ref().column_count())
            .map(|i| <SqlValue as Column>::from_sqlite(row, i))
            .collect()
    }

    fn from_pg(row: &postgres::Row) -> Result<Self, String> {
        (0..row.len())
            .map(|i| <SqlValue as Column>::from_pg(row, i))
            .collect()
    }
}

#[test]
fn numbered_placeholders_become_sqlites_and_literals_stay() {
    assert_eq!(
        sqlite_placeholders("SELECT $2, '$1', $10 WHERE a = $1 AND b = 'it''s $3'"),
        "SELECT ?2, '$1', ?10 WHERE a = ?1 AND b = 'it''s $3'"
    );
}

/// Inside the test's runtime, as every test uses the facade: the PostgreSQL client must not
/// notice.
#[tokio::test]
async fn the_facade_reads_and_writes_the_same_sql_on_either_engine() {
    let dir = tempfile::tempdir().unwrap();
    let db = match engine::maintenance_url() {
        Some(_) => TestDb::postgres(&engine::fresh_database()),
        None => TestDb::sqlite(&dir.path().join("facade.db")),
    };
    let (blob, json) = if engine::on_postgres() {
        ("BYTEA", "JSONB")
    } else {
        ("BLOB", "TEXT")
    };
    db.batch(&format!(
        "CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT NOT NULL, note TEXT,
                         bytes {blob}, payload {json} NOT NULL DEFAULT '{{}}');
         CREATE TABLE u (id BIGINT PRIMARY KEY)"
    ));
    let inserted = db.execute(
        "INSERT INTO t (id, name, note, bytes, payload)
         VALUES ($1, $2, $3, $4, '{\"market_id\": 7, \"outcome\": \"embedded\"}'), ($5, 'b', NULL, NULL, '{}')",
        &[&1i64, &"a", &Some("n"), &vec![1u8, 2], &2i64],
    );
    assert_eq!(inserted, 2);
    // Placeholders out of order and inside a literal.
    let (id, name): (i64, String) = db.query_one(
        "SELECT id, name FROM t WHERE name = $2 AND id = $1 AND '$1' = '$1'",
        &[&1i64, &"a"],
    );
    assert_eq!((id, name.as_str()), (1, "a"));
    assert_eq!(
        db.query_rows::<Option<String>>("SELECT note FROM t ORDER BY id", &[]),
        [Some("n".to_owned()), None]
    );
    assert_eq!(
        db.query_one::<i64>("SELECT CAST(sum(id) AS BIGINT) FROM t", &[]),
        3
    );
    assert_eq!(
        db.query_one::<i64>(
            "SELECT id FROM t WHERE CAST(payload ->> 'market_id' AS BIGINT) = $1",
            &[&7i64]
        ),
        1
    );
    assert_eq!(
        db.query_one::<String>("SELECT payload ->> 'outcome' FROM t WHERE id = 1", &[]),
        "embedded"
    );
    assert_eq!(
        db.query_one::<Vec<u8>>("SELECT bytes FROM t WHERE id = 1", &[]),
        [1, 2]
    );
    assert_eq!(
        db.query_one::<Vec<SqlValue>>("SELECT id, name, note, bytes, 0 FROM t WHERE id = 2", &[]),
        [
            SqlValue::Int(2),
            SqlValue::Text("b".into()),
            SqlValue::Null,
            SqlValue::Null,
            SqlValue::Int(0)
        ]
    );
    assert_eq!(db.count("t WHERE note IS NULL"), 1);
    assert_eq!(db.count("u"), 0);
    db.batch("DROP TABLE u");
    let error = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.count("u")))
        .expect_err("the table is gone");
    let message = error.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("SELECT count(*) FROM u"), "{message}");
    // PostgreSQL types a sum of BIGINT as NUMERIC: reading it uncast says what to do.
    if engine::on_postgres() {
        let error = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            db.query_one::<i64>("SELECT sum(id) FROM t", &[])
        }))
        .expect_err("numeric is not i64");
        let message = error.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains("CAST(x AS BIGINT)"), "{message}");
    }
}
