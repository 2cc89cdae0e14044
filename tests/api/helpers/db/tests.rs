//! The facade itself, on the engine under test.

use super::{engine, sqlite_placeholders, SqlValue, TestDb};

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
