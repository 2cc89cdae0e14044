//! Versioned schema migrations for PostgreSQL, embedded in the binary and applied at start in
//! one transaction, tracked in `agora_schema`. Several agora processes may start at once on one
//! database: a transaction-scoped advisory lock lets one migrate while the others wait, then
//! find nothing to do.

use super::{Pg, PgOpenError};

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_events.sql"),
    include_str!("migrations/0003_webhooks.sql"),
];

/// The schema version this binary creates and understands on PostgreSQL.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Any number, the same in every agora: the advisory lock migrations hold.
const MIGRATION_LOCK: i64 = 0x6167_6f72_615f_6d69; // "agora_mi"

/// Brings the database up to [`SCHEMA_VERSION`]; refuses a database from a newer agora.
pub(super) async fn apply(pg: &Pg) -> Result<(), PgOpenError> {
    let db = |e: tokio_postgres::Error| PgOpenError::Database(e.to_string());
    let mut client = pg
        .pool
        .get()
        .await
        .map_err(|e| PgOpenError::Database(e.to_string()))?;
    let tx = client.transaction().await.map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS agora_schema (version BIGINT NOT NULL)")
        .await
        .map_err(db)?;
    let current: i64 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM agora_schema", &[])
        .await
        .map_err(db)?
        .get(0);
    if current > SCHEMA_VERSION {
        return Err(PgOpenError::TooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql).await.map_err(db)?;
        let version = i as i64 + 1;
        tx.execute("DELETE FROM agora_schema", &[])
            .await
            .map_err(db)?;
        tx.execute(
            "INSERT INTO agora_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(db)?;
        tracing::info!(db.migration = version, "applied migration");
    }
    tx.commit().await.map_err(db)?;
    Ok(())
}

/// The version the database is at (readiness).
pub(super) async fn version(client: &super::Client) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT coalesce(max(version), 0) FROM agora_schema", &[])
        .await?
        .get(0))
}
