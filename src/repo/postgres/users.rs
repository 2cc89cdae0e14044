//! [`UserRepository`] on PostgreSQL. Usernames are unique case-insensitively (a unique index
//! on `lower(username)`).

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::FutureExt;
use tokio_postgres::Row;

use super::{now_ms, read, transaction, Conn, Pg, TxError};
use crate::{
    domain::{
        user::{Role, User},
        Rejection,
    },
    repo::{from_millis, Change, RepoError, UserRepository},
};

/// Users stored in PostgreSQL.
pub struct PgUserRepository {
    pg: Arc<Pg>,
}

impl PgUserRepository {
    pub(super) fn new(pg: Arc<Pg>) -> Self {
        Self { pg }
    }
}

const SELECT_USER: &str =
    "SELECT id, username, role, balance, created_at, password_hash FROM users";

fn user_from_row(row: &Row) -> Result<User, TxError> {
    let role: &str = row.try_get(2)?;
    Ok(User {
        id: row.try_get(0)?,
        username: row.try_get(1)?,
        role: Role::parse(role)
            .ok_or_else(|| TxError::Repo(RepoError::Internal(format!("bad role {role}"))))?,
        balance: row.try_get(3)?,
        created_at: from_millis(row.try_get(4)?),
    })
}

/// One user by id.
pub(super) async fn get_user(c: &Conn<'_>, id: i64) -> Result<Option<User>, TxError> {
    c.opt(&format!("{SELECT_USER} WHERE id = $1"), &[&id])
        .await?
        .map(|r| user_from_row(&r))
        .transpose()
}

/// Inserts a user and its grant inside the caller's transaction; shared with the seeder.
pub(super) async fn insert_user(
    c: &Conn<'_>,
    username: &str,
    password_hash: &str,
    role: Role,
    grant: i64,
    now: i64,
) -> Result<i64, TxError> {
    let id: i64 = c
        .one(
            "INSERT INTO users (username, password_hash, role, balance, created_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[&username, &password_hash, &role.as_str(), &grant, &now],
        )
        .await?
        .try_get(0)?;
    if grant > 0 {
        c.exec(
            "INSERT INTO ledger (user_id, kind, amount, created_at) VALUES ($1, 'GRANT', $2, $3)",
            &[&id, &grant, &now],
        )
        .await?;
    }
    Ok(id)
}

#[async_trait]
impl UserRepository for PgUserRepository {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn create(
        &self,
        username: String,
        password_hash: String,
        role: Role,
        grant: i64,
    ) -> Result<User, RepoError> {
        transaction(&self.pg, |c| {
            let (username, password_hash) = (username.clone(), password_hash.clone());
            async move {
                let id = insert_user(c, &username, &password_hash, role, grant, now_ms()).await?;
                get_user(c, id)
                    .await?
                    .ok_or(TxError::Repo(RepoError::NotFound))
            }
            .boxed()
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user.id = id))]
    async fn get(&self, id: i64) -> Result<Option<User>, RepoError> {
        read(&self.pg, |client| async move {
            get_user(&Conn::client(&client), id).await
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn find_login(&self, username: String) -> Result<Option<(User, String)>, RepoError> {
        read(&self.pg, |client| async move {
            Conn::client(&client)
                .opt(
                    &format!("{SELECT_USER} WHERE lower(username) = lower($1)"),
                    &[&username],
                )
                .await?
                .map(|r| Ok((user_from_row(&r)?, r.try_get(5)?)))
                .transpose()
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(user.id = id))]
    async fn set_role(&self, id: i64, role: Role) -> Result<Option<User>, RepoError> {
        transaction(&self.pg, |c| {
            async move {
                // The admins' rows are locked (in id order) before they are counted: two
                // demotions of the last two admins cannot both see another admin left.
                let admins = c
                    .rows(
                        "SELECT id FROM users WHERE role = 'admin' ORDER BY id FOR UPDATE",
                        &[],
                    )
                    .await?
                    .len();
                let Some(user) = get_user(c, id).await? else {
                    return Ok(None);
                };
                if user.role == Role::Admin && role != Role::Admin && admins <= 1 {
                    return Err(RepoError::Refused(Rejection::LastAdmin).into());
                }
                c.exec(
                    "UPDATE users SET role = $2 WHERE id = $1",
                    &[&id, &role.as_str()],
                )
                .await?;
                c.announce(Change::User(id));
                get_user(c, id).await
            }
            .boxed()
        })
        .await
    }
}
