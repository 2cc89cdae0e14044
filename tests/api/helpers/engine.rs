//! Which storage engine the suite runs on. Without `AGORA_TEST_DATABASE_URL` every test server
//! uses SQLite in its data directory, as the server does by default. With it set to a
//! PostgreSQL maintenance URL (`postgres://postgres@127.0.0.1:PORT/postgres`, what
//! `tests/pg/cluster start` prints), every data directory gets its own fresh database in that
//! cluster and every server started on it is given `--database-url`.
//!
//! A data directory's database is named in `<dir>/test-database-url` when it is created, so a
//! server started again on the same directory (a restart, a crash, the binary run on it)
//! reaches the same data, exactly as it finds the same `agora.db` on SQLite. Databases are not
//! dropped: the cluster is throwaway.

use std::{path::Path, sync::OnceLock};

/// The variable naming the PostgreSQL cluster to test against.
pub const DATABASE_URL_VAR: &str = "AGORA_TEST_DATABASE_URL";
/// The file in a data directory naming its PostgreSQL database.
const URL_FILE: &str = "test-database-url";

/// The cluster's maintenance URL when the suite runs on PostgreSQL.
pub fn maintenance_url() -> Option<&'static str> {
    static URL: OnceLock<Option<String>> = OnceLock::new();
    URL.get_or_init(|| {
        std::env::var(DATABASE_URL_VAR)
            .ok()
            .filter(|url| !url.trim().is_empty())
    })
    .as_deref()
}

/// Whether the suite runs on PostgreSQL.
pub fn on_postgres() -> bool {
    maintenance_url().is_some()
}

/// The engine's name, for messages.
pub fn engine_name() -> &'static str {
    if on_postgres() {
        "PostgreSQL"
    } else {
        "SQLite"
    }
}

/// For a test that only makes sense on SQLite: true (after saying why on stderr) when the
/// suite runs on PostgreSQL, and the test should return.
pub fn skip_on_postgres(why: &str) -> bool {
    if on_postgres() {
        eprintln!("skipped on PostgreSQL: {why}");
    }
    on_postgres()
}

/// For a test that only makes sense on PostgreSQL: true (after saying why on stderr) when the
/// suite runs on SQLite, and the test should return.
pub fn skip_on_sqlite(why: &str) -> bool {
    if !on_postgres() {
        eprintln!("skipped on SQLite: {why}");
    }
    !on_postgres()
}

/// The PostgreSQL database of data directory `dir` (which must exist): the one named in it, or
/// a fresh one, then named in it. `None` on SQLite.
pub fn database_url(dir: &Path) -> Option<String> {
    maintenance_url()?;
    let file = dir.join(URL_FILE);
    if let Ok(url) = std::fs::read_to_string(&file) {
        return Some(url.trim().to_owned());
    }
    let url = fresh_database();
    std::fs::write(&file, &url).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    Some(url)
}

/// The flags that point a server on data directory `dir` at its database: `--database-url URL`
/// on PostgreSQL, none on SQLite.
pub fn database_args(dir: &Path) -> Vec<String> {
    database_url(dir)
        .map(|url| vec!["--database-url".to_owned(), url])
        .unwrap_or_default()
}

/// A new, empty database in the cluster, tied to no data directory; its URL.
///
/// Panics on SQLite.
pub fn fresh_database() -> String {
    let maintenance = maintenance_url().expect("fresh_database on PostgreSQL only");
    let name = format!("agora_test_{:016x}", rand::random::<u64>());
    super::db::TestDb::postgres(maintenance).batch(&format!("CREATE DATABASE {name}"));
    with_database(maintenance, &name)
}

/// `url` with its database name replaced by `name` (its query string kept).
fn with_database(url: &str, name: &str) -> String {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let (base, query) = match url.find('?') {
        Some(q) => url.split_at(q),
        None => (url, ""),
    };
    let end_of_host = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    format!("{}/{name}{query}", &base[..end_of_host])
}

#[test]
fn a_database_url_keeps_everything_but_the_database_name() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
        "postgres://postgres@127.0.0.1:5432/t1"
    );
    assert_eq!(
        with_database("postgres://u:p@h:1?sslmode=disable", "t2"),
        "postgres://u:p@h:1/t2?sslmode=disable"
    );
    assert_eq!(
        with_database("postgresql://h/postgres?x=/y", "t3"),
        "postgresql://h/t3?x=/y"
    );
}
