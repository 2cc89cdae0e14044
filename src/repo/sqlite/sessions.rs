//! [`SessionRepository`] on SQLite: refresh-token rotation with reuse detection, each call one
//! transaction on the single writer (so two concurrent refreshes of one token cannot both win).

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use time::OffsetDateTime;

use super::{to_millis, users::SqliteUserRepository};
use crate::{
    db::Db,
    domain::user::Role,
    repo::{RepoError, Rotation, SessionRepository},
};

/// Refresh tokens stored in SQLite.
pub struct SqliteSessionRepository {
    db: Arc<Db>,
}

impl SqliteSessionRepository {
    /// A repository over `db`.
    pub fn new(db: Arc<Db>) -> Self {
        Self { db }
    }
}

#[async_trait]
impl SessionRepository for SqliteSessionRepository {
    #[tracing::instrument(level = "debug", skip_all, fields(user.id = user_id))]
    async fn insert(
        &self,
        user_id: i64,
        token_hash: String,
        family: String,
        expires_at: OffsetDateTime,
    ) -> Result<(), RepoError> {
        self.db
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![token_hash, user_id, family, to_millis(expires_at), to_millis(OffsetDateTime::now_utc())])?;
                Ok(())
            })
            .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn rotate(
        &self,
        old_hash: String,
        new_hash: String,
        expires_at: OffsetDateTime,
    ) -> Result<Rotation, RepoError> {
        self.db
            .write(move |conn| {
                let now = to_millis(OffsetDateTime::now_utc());
                let found = conn
                    .prepare_cached(
                        "SELECT user_id, family, expires_at, used_at IS NOT NULL, revoked_at IS NOT NULL
                           FROM refresh_tokens WHERE token_hash = ?1",
                    )?
                    .query_row([&old_hash], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get(3)?, r.get(4)?)))
                    .optional()?;
                let Some((user_id, family, expires, used, revoked)) = found else {
                    return Ok(Rotation::Invalid);
                };
                if revoked || expires <= now {
                    return Ok(Rotation::Invalid);
                }
                if used {
                    revoke(conn, &family, now)?;
                    return Ok(Rotation::Reused { family });
                }
                let Some(user) = SqliteUserRepository::user_in(conn, user_id)? else {
                    return Ok(Rotation::Invalid);
                };
                conn.prepare_cached("UPDATE refresh_tokens SET used_at = ?2 WHERE token_hash = ?1")?.execute(params![old_hash, now])?;
                conn.prepare_cached(
                    "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![new_hash, user_id, family, to_millis(expires_at), now])?;
                Ok(Rotation::Rotated { user, family })
            })
            .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn revoke_family(&self, token_hash: String) -> Result<Option<String>, RepoError> {
        self.db
            .write(move |conn| {
                let family: Option<String> = conn
                    .prepare_cached("SELECT family FROM refresh_tokens WHERE token_hash = ?1")?
                    .query_row([token_hash], |r| r.get(0))
                    .optional()?;
                if let Some(family) = &family {
                    revoke(conn, family, to_millis(OffsetDateTime::now_utc()))?;
                }
                Ok(family)
            })
            .await
    }

    async fn session_role(&self, family: String) -> Result<Option<(i64, Role)>, RepoError> {
        self.db
            .read_point(move |conn| {
                let found: Option<(i64, String)> = conn
                    .prepare_cached(
                        "SELECT u.id, u.role FROM refresh_tokens t JOIN users u ON u.id = t.user_id
                          WHERE t.family = ?1 AND t.revoked_at IS NULL LIMIT 1",
                    )?
                    .query_row([family], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                Ok(found.and_then(|(id, role)| Some((id, Role::parse(&role)?))))
            })
            .await
    }
}

fn revoke(conn: &rusqlite::Connection, family: &str, now: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "UPDATE refresh_tokens SET revoked_at = ?2 WHERE family = ?1 AND revoked_at IS NULL",
    )?
    .execute(params![family, now])
}
