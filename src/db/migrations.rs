//! Versioned schema migrations, embedded in the binary, applied at start in one transaction
//! and tracked with `PRAGMA user_version`.

use rusqlite::{Connection, OptionalExtension};

use super::DbError;

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_accounts.sql"),
    include_str!("migrations/0003_trading.sql"),
    include_str!("migrations/0004_market_counts.sql"),
    include_str!("migrations/0005_jobs.sql"),
    include_str!("migrations/0006_search.sql"),
    include_str!("migrations/0007_market_ids.sql"),
    include_str!("migrations/0008_keyset_paging.sql"),
    include_str!("migrations/0009_market_changes.sql"),
    include_str!("migrations/0010_events.sql"),
    include_str!("migrations/0011_webhooks.sql"),
];

/// The schema version this binary creates and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`SCHEMA_VERSION`]; refuses a database from a newer agora.
///
/// Migrations run with foreign-key enforcement off: one that rebuilds a table (SQLite's
/// `ALTER TABLE` cannot change a primary key) drops the old table, and with enforcement on
/// that drop would cascade into the rows that reference it. Enforcement can only be switched
/// outside a transaction, so it is switched around it, and `PRAGMA foreign_key_check` must
/// find nothing before the migrations commit.
pub(super) fn apply(conn: &mut Connection) -> Result<(), DbError> {
    conn.pragma_update(None, "foreign_keys", false)?;
    let applied = apply_unchecked(conn);
    conn.pragma_update(None, "foreign_keys", true)?;
    applied
}

fn apply_unchecked(conn: &mut Connection) -> Result<(), DbError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > SCHEMA_VERSION {
        return Err(DbError::TooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tracing::info!(db.migration = i + 1, "applied migration");
    }
    if current < SCHEMA_VERSION {
        let broken: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
            .optional()?;
        if let Some(table) = broken {
            return Err(DbError::BrokenReferences(table));
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database at schema 6 with markets 1 and 2 (outcomes, a vector, a stake) and a market 3
    /// that was deleted after its indexing job was queued.
    fn version_6() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        for sql in &MIGRATIONS[..6] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 6).unwrap();
        conn.execute_batch(
            "INSERT INTO users (username, password_hash, balance, created_at) VALUES ('a', 'h', 90, 1);
             INSERT INTO markets (name, creator_id, volume, created_at, updated_at)
             VALUES ('rain tomorrow', 1, 10, 1, 1), ('snow', 1, 0, 1, 1), ('gone', 1, 0, 1, 1);
             INSERT INTO outcomes (market_id, idx, label, pool) VALUES (1, 0, 'Y', 10), (1, 1, 'N', 0), (2, 0, 'Y', 0);
             INSERT INTO positions (market_id, outcome, user_id, amount, updated_at) VALUES (1, 0, 1, 10, 1);
             INSERT INTO bets (user_id, market_id, outcome, amount, balance_after, created_at) VALUES (1, 1, 0, 10, 90, 1);
             INSERT INTO market_vectors (market_id, model, content_hash, vector, updated_at) VALUES (2, 'm', 'h', x'00', 1);
             INSERT INTO jobs (kind, payload, run_at, created_at, updated_at) VALUES ('index_market', '{\"market_id\":3}', 1, 1, 1);
             DELETE FROM markets WHERE id = 3;",
        )
        .unwrap();
        conn
    }

    #[test]
    fn migration_7_keeps_every_row_and_never_reuses_a_market_id() {
        let mut conn = version_6();
        apply(&mut conn).unwrap();
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("PRAGMA user_version"), SCHEMA_VERSION);
        assert_eq!(count("PRAGMA foreign_keys"), 1, "enforcement is back on");
        assert_eq!(count("SELECT count(*) FROM outcomes"), 3, "no cascade");
        assert_eq!(
            count("SELECT count(*) FROM market_vectors"),
            1,
            "no cascade"
        );
        assert_eq!(count("SELECT count(*) FROM positions"), 1);
        assert_eq!(
            count("SELECT n FROM market_counts WHERE status = 'active'"),
            2
        );
        assert_eq!(
            count("SELECT rowid FROM markets_fts WHERE markets_fts MATCH 'rain'"),
            1
        );
        conn.execute(
            "INSERT INTO markets (name, creator_id, created_at, updated_at) VALUES ('new', 1, 2, 2)",
            [],
        )
        .unwrap();
        assert_eq!(
            count("SELECT max(id) FROM markets"),
            4,
            "above the deleted market 3"
        );
        assert_eq!(
            count("SELECT n FROM market_counts WHERE status = 'active'"),
            3
        );
        assert_eq!(
            count("SELECT rowid FROM markets_fts WHERE markets_fts MATCH 'new'"),
            4
        );
        conn.execute("DELETE FROM markets WHERE id = 4", [])
            .unwrap();
        conn.execute(
            "INSERT INTO markets (name, creator_id, created_at, updated_at) VALUES ('newer', 1, 3, 3)",
            [],
        )
        .unwrap();
        assert_eq!(count("SELECT max(id) FROM markets"), 5, "4 is not reused");
        let err = conn
            .execute("DELETE FROM markets WHERE id = 1", [])
            .unwrap_err();
        assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
    }
}
