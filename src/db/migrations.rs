//! Versioned schema migrations, embedded in the binary, applied at start in one transaction
//! and tracked with `PRAGMA user_version`.

use rusqlite::Connection;

use super::DbError;

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_accounts.sql"),
    include_str!("migrations/0003_trading.sql"),
    include_str!("migrations/0004_market_counts.sql"),
    include_str!("migrations/0005_jobs.sql"),
    include_str!("migrations/0006_search.sql"),
    include_str!("migrations/0008_keyset_paging.sql"),
];

/// The schema version this binary creates and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`SCHEMA_VERSION`]; refuses a database from a newer agora.
pub(super) fn apply(conn: &mut Connection) -> Result<(), DbError> {
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
    tx.commit()?;
    Ok(())
}
