//! [`UserRepository`] on SQLite.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};
use time::OffsetDateTime;

use super::{from_millis, to_millis};
use crate::{
    db::Db,
    domain::{
        user::{Role, User},
        Rejection,
    },
    repo::{RepoError, UserRepository},
};

/// Users stored in SQLite.
pub struct SqliteUserRepository {
    db: Arc<Db>,
}

impl SqliteUserRepository {
    /// A repository over `db`.
    pub fn new(db: Arc<Db>) -> Self {
        Self { db }
    }

    /// One user by id inside another repository's transaction.
    pub(crate) fn user_in(conn: &Connection, id: i64) -> rusqlite::Result<Option<User>> {
        get_user(conn, id)
    }
}

const SELECT_USER: &str =
    "SELECT id, username, role, balance, created_at, password_hash FROM users";

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    let role: String = row.get(2)?;
    Ok(User {
        id: row.get(0)?,
        username: row.get(1)?,
        role: Role::parse(&role).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                2,
                rusqlite::types::Type::Text,
                format!("role {role}").into(),
            )
        })?,
        balance: row.get(3)?,
        created_at: from_millis(row.get(4)?),
    })
}

fn get_user(conn: &Connection, id: i64) -> rusqlite::Result<Option<User>> {
    conn.prepare_cached(&format!("{SELECT_USER} WHERE id = ?1"))?
        .query_row([id], user_from_row)
        .optional()
}

/// Inserts a user and its grant; shared with the seeder and the `users create` command.
pub(crate) fn insert_user(
    conn: &Connection,
    username: &str,
    password_hash: &str,
    role: Role,
    grant: i64,
    now: i64,
) -> Result<i64, RepoError> {
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO users (username, password_hash, role, balance, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
        )?
        .query_row(
            params![username, password_hash, role.as_str(), grant, now],
            |r| r.get(0),
        )?;
    if grant > 0 {
        conn.prepare_cached(
            "INSERT INTO ledger (user_id, kind, amount, created_at) VALUES (?1, 'GRANT', ?2, ?3)",
        )?
        .execute(params![id, grant, now])?;
    }
    Ok(id)
}

#[async_trait]
impl UserRepository for SqliteUserRepository {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn create(
        &self,
        username: String,
        password_hash: String,
        role: Role,
        grant: i64,
    ) -> Result<User, RepoError> {
        self.db
            .write(move |conn| {
                let now = to_millis(OffsetDateTime::now_utc());
                let id = insert_user(conn, &username, &password_hash, role, grant, now)?;
                get_user(conn, id)?.ok_or(RepoError::NotFound)
            })
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user.id = id))]
    async fn get(&self, id: i64) -> Result<Option<User>, RepoError> {
        self.db
            .read_point(move |conn| Ok(get_user(conn, id)?))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn find_login(&self, username: String) -> Result<Option<(User, String)>, RepoError> {
        self.db
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(&format!("{SELECT_USER} WHERE username = ?1"))?
                    .query_row([username], |r| Ok((user_from_row(r)?, r.get(5)?)))
                    .optional()?)
            })
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user.id = id))]
    async fn set_role(&self, id: i64, role: Role) -> Result<Option<User>, RepoError> {
        self.db
            .write(move |conn| {
                let Some(user) = get_user(conn, id)? else {
                    return Ok(None);
                };
                if user.role == Role::Admin && role != Role::Admin {
                    let admins: i64 = conn
                        .prepare_cached("SELECT count(*) FROM users WHERE role = 'admin'")?
                        .query_row([], |r| r.get(0))?;
                    if admins <= 1 {
                        return Err(RepoError::Refused(Rejection::LastAdmin));
                    }
                }
                conn.prepare_cached("UPDATE users SET role = ?2 WHERE id = ?1")?
                    .execute(params![id, role.as_str()])?;
                Ok(get_user(conn, id)?)
            })
            .await
    }
}
