//! The SQLite engine: the repositories of [`crate::repo`] over [`crate::db`] (one writer
//! thread, a pool of read-only connections, migrations). A second engine is a sibling of this
//! folder; [`open`] is what `app.rs` calls to get this one's [`Storage`].
//!
//! Everything that names a rusqlite type above `db/` lives here: the row mappings, the SQL, and
//! the one mapping of SQLite error codes to [`RepoError`] (`codes.rs`).

mod changes;
mod codes;
mod engine;
pub mod events;
pub mod jobs;
mod market_list;
pub mod markets;
pub mod search;
mod seed;
pub mod sessions;
pub mod trading;
mod trading_lists;
pub mod users;
pub mod webhooks;

use std::{path::Path, sync::Arc};

pub use engine::{SqliteBackup, SqliteEngine};
pub use events::SqliteEventRepository;
pub use jobs::SqliteJobRepository;
pub use markets::SqliteMarketRepository;
pub use search::SqliteSearchRepository;
pub use seed::SqliteSeedRepository;
pub use sessions::SqliteSessionRepository;
pub use trading::SqliteTradingRepository;
pub use users::SqliteUserRepository;
pub use webhooks::SqliteWebhookRepository;

pub(crate) use crate::repo::{from_millis, to_millis};
use crate::{
    db::{Db, DbError, DbOptions},
    domain::{job::QueueConfig, paging::KeyPart},
    repo::{Backup, RepoError, Storage},
};

/// Opens the database at `db_file` in `data_dir` with its start-up checks (creating it if
/// needed; refusing a damaged one or one from a newer agora; migrating it: [`Db::open`]) and
/// returns every repository over it; `queue` sets the job queue's retries and leases.
pub fn open(
    db_file: &Path,
    data_dir: &Path,
    options: &DbOptions,
    queue: QueueConfig,
) -> Result<Storage, DbError> {
    let db = Arc::new(Db::open(db_file, options)?);
    Ok(Storage {
        engine: Arc::new(SqliteEngine::new(db.clone())),
        backup: backups(db_file, data_dir),
        markets: Arc::new(SqliteMarketRepository::new(db.clone())),
        trading: Arc::new(SqliteTradingRepository::new(db.clone())),
        users: Arc::new(SqliteUserRepository::new(db.clone())),
        sessions: Arc::new(SqliteSessionRepository::new(db.clone())),
        search: Arc::new(SqliteSearchRepository::new(db.clone())),
        jobs: Arc::new(SqliteJobRepository::new(db.clone(), queue)),
        events: Arc::new(SqliteEventRepository::new(db.clone())),
        webhooks: Arc::new(SqliteWebhookRepository::new(db.clone())),
        seed: Arc::new(SqliteSeedRepository::new(db.clone())),
        changes: Some(Arc::new(changes::SqliteChangeFeed::new(db))),
    })
}

/// Backups of the database at `db_file` in `data_dir`, without opening it.
pub fn backups(db_file: &Path, data_dir: &Path) -> Arc<dyn Backup> {
    Arc::new(SqliteBackup::new(db_file, data_dir))
}

impl From<DbError> for RepoError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Sqlite(e) => codes::classify(e),
            DbError::Closed | DbError::Pool(_) => RepoError::Unavailable(e.to_string()),
            other => RepoError::Internal(other.to_string()),
        }
    }
}

impl From<rusqlite::Error> for RepoError {
    fn from(e: rusqlite::Error) -> Self {
        codes::classify(e)
    }
}

/// A cursor's key part binds as the value it stands for.
impl rusqlite::ToSql for KeyPart {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            KeyPart::Int(i) => i.to_sql(),
            KeyPart::Text(s) => s.to_sql(),
            KeyPart::Null => rusqlite::types::Null.to_sql(),
        }
    }
}
