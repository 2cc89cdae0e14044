//! [`SessionRepository`] on PostgreSQL: refresh-token rotation with reuse detection, each call
//! one transaction that locks the token's row first (so two concurrent refreshes of one token
//! cannot both win).

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::FutureExt;
use time::OffsetDateTime;

use super::{now_ms, read, transaction, users::get_user, Conn, Pg, TxError};
use crate::{
    domain::user::Role,
    repo::{to_millis, Change, RepoError, Rotation, SessionRepository},
};

/// Refresh tokens stored in PostgreSQL.
pub struct PgSessionRepository {
    pg: Arc<Pg>,
}

impl PgSessionRepository {
    pub(super) fn new(pg: Arc<Pg>) -> Self {
        Self { pg }
    }
}

const INSERT_TOKEN: &str =
    "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at, created_at)
     VALUES ($1, $2, $3, $4, $5)";

async fn revoke(c: &Conn<'_>, family: &str, now: i64) -> Result<u64, TxError> {
    c.exec(
        "UPDATE refresh_tokens SET revoked_at = $2 WHERE family = $1 AND revoked_at IS NULL",
        &[&family, &now],
    )
    .await
}

#[async_trait]
impl SessionRepository for PgSessionRepository {
    #[tracing::instrument(level = "debug", skip_all, fields(user.id = user_id))]
    async fn insert(
        &self,
        user_id: i64,
        token_hash: String,
        family: String,
        expires_at: OffsetDateTime,
    ) -> Result<(), RepoError> {
        read(&self.pg, |client| async move {
            Conn::client(&client)
                .exec(
                    INSERT_TOKEN,
                    &[
                        &token_hash,
                        &user_id,
                        &family,
                        &to_millis(expires_at),
                        &now_ms(),
                    ],
                )
                .await?;
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
        transaction(&self.pg, |c| {
            let (old_hash, new_hash) = (old_hash.clone(), new_hash.clone());
            async move {
                let now = now_ms();
                let Some(row) = c
                    .opt(
                        "SELECT user_id, family, expires_at, used_at IS NOT NULL, revoked_at IS NOT NULL
                           FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
                        &[&old_hash],
                    )
                    .await?
                else {
                    return Ok(Rotation::Invalid);
                };
                let (user_id, family, expires, used, revoked): (i64, String, i64, bool, bool) = (
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    row.try_get(3)?,
                    row.try_get(4)?,
                );
                if revoked || expires <= now {
                    return Ok(Rotation::Invalid);
                }
                if used {
                    revoke(c, &family, now).await?;
                    c.announce(Change::Session(family.clone()));
                    return Ok(Rotation::Reused { family });
                }
                let Some(user) = get_user(c, user_id).await? else {
                    return Ok(Rotation::Invalid);
                };
                c.exec(
                    "UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1",
                    &[&old_hash, &now],
                )
                .await?;
                c.exec(
                    INSERT_TOKEN,
                    &[&new_hash, &user_id, &family, &to_millis(expires_at), &now],
                )
                .await?;
                Ok(Rotation::Rotated { user, family })
            }
            .boxed()
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn revoke_family(&self, token_hash: String) -> Result<Option<String>, RepoError> {
        transaction(&self.pg, |c| {
            let token_hash = token_hash.clone();
            async move {
                let family: Option<String> = c
                    .opt(
                        "SELECT family FROM refresh_tokens WHERE token_hash = $1",
                        &[&token_hash],
                    )
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?;
                if let Some(family) = &family {
                    revoke(c, family, now_ms()).await?;
                    c.announce(Change::Session(family.clone()));
                }
                Ok(family)
            }
            .boxed()
        })
        .await
    }

    async fn session_role(&self, family: String) -> Result<Option<(i64, Role)>, RepoError> {
        read(&self.pg, |client| async move {
            let found = Conn::client(&client)
                .opt(
                    "SELECT u.id, u.role FROM refresh_tokens t JOIN users u ON u.id = t.user_id
                      WHERE t.family = $1 AND t.revoked_at IS NULL LIMIT 1",
                    &[&family],
                )
                .await?;
            Ok(match found {
                Some(r) => {
                    let id: i64 = r.try_get(0)?;
                    let role: &str = r.try_get(1)?;
                    Role::parse(role).map(|role| (id, role))
                }
                None => None,
            })
        })
        .await
    }
}
