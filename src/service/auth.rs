//! Accounts and sessions: sign-up (with the signup grant), login, refresh-token rotation with
//! reuse detection, logout.

use std::sync::Arc;

use time::OffsetDateTime;

use super::{
    authenticator::Authenticator,
    passwords::Passwords,
    tokens::{hash_refresh, Tokens},
};
use crate::{
    domain::user::{Credentials, Role, User, PASSWORD_MAX, USERNAME_MAX},
    error::AppError,
    repo::{RepoError, Rotation, SessionRepository, UserRepository},
};

/// A logged-in session: an access token and the refresh token that renews it.
pub struct Session {
    /// The user.
    pub user: User,
    /// Access JWT.
    pub access_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Opaque refresh token (shown once; only its hash is stored).
    pub refresh_token: String,
    /// Seconds until the refresh token expires.
    pub refresh_expires_in: u64,
}

/// Sign-up, login, refresh, logout.
pub struct AuthService {
    users: Arc<dyn UserRepository>,
    sessions: Arc<dyn SessionRepository>,
    passwords: Arc<Passwords>,
    tokens: Arc<Tokens>,
    authenticator: Arc<Authenticator>,
    signup_grant: i64,
}

const BAD_LOGIN: &str = "wrong username or password";

impl AuthService {
    /// The service over its repositories.
    pub fn new(
        users: Arc<dyn UserRepository>,
        sessions: Arc<dyn SessionRepository>,
        passwords: Arc<Passwords>,
        tokens: Arc<Tokens>,
        authenticator: Arc<Authenticator>,
        signup_grant: i64,
    ) -> Self {
        Self {
            users,
            sessions,
            passwords,
            tokens,
            authenticator,
            signup_grant,
        }
    }

    /// Creates an account with role `user` and the signup grant.
    pub async fn register(&self, credentials: Credentials) -> Result<User, AppError> {
        let hash = self.passwords.hash(credentials.password).await?;
        self.users
            .create(credentials.username, hash, Role::User, self.signup_grant)
            .await
            .map_err(|e| match e {
                RepoError::Duplicate(_) => {
                    AppError::conflict("username_taken", "this username is taken")
                }
                other => other.into(),
            })
    }

    /// Checks a username and password and opens a session. Unknown users and wrong passwords
    /// get the same error after the same work.
    pub async fn login(&self, username: String, password: String) -> Result<Session, AppError> {
        if username.chars().count() > USERNAME_MAX || password.chars().count() > PASSWORD_MAX {
            return Err(AppError::Unauthorized(BAD_LOGIN.into()));
        }
        let found = self.users.find_login(username).await?;
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), Some(hash)),
            None => (None, None),
        };
        let ok = self.passwords.verify(password, hash).await?;
        match user {
            Some(user) if ok => {
                let (refresh, refresh_hash) = self.tokens.new_refresh();
                let family = uuid::Uuid::new_v4().to_string();
                self.sessions
                    .insert(user.id, refresh_hash, family.clone(), self.refresh_expiry())
                    .await?;
                self.session(user, refresh, &family)
            }
            _ => Err(AppError::Unauthorized(BAD_LOGIN.into())),
        }
    }

    /// Exchanges a current refresh token for a new session; the old token is used up. Presenting
    /// a used-up token revokes every token of its login.
    pub async fn refresh(&self, refresh_token: String) -> Result<Session, AppError> {
        let (next, next_hash) = self.tokens.new_refresh();
        match self
            .sessions
            .rotate(
                hash_refresh(&refresh_token),
                next_hash,
                self.refresh_expiry(),
            )
            .await?
        {
            Rotation::Rotated { user, family } => self.session(user, next, &family),
            Rotation::Reused { family } => {
                self.authenticator.forget_session(&family).await;
                tracing::warn!(
                    request_id = crate::middleware::request_id::known(),
                    "refresh token reused; its session family is revoked"
                );
                Err(AppError::Unauthorized(
                    "the refresh token was already used; sign in again".into(),
                ))
            }
            Rotation::Invalid => Err(AppError::Unauthorized(
                "the refresh token is invalid or expired".into(),
            )),
        }
    }

    /// Ends the login a refresh token belongs to: its refresh tokens and the access tokens it
    /// issued stop working. Unknown tokens are ignored (idempotent).
    pub async fn logout(&self, refresh_token: String) -> Result<(), AppError> {
        if let Some(family) = self
            .sessions
            .revoke_family(hash_refresh(&refresh_token))
            .await?
        {
            self.authenticator.forget_session(&family).await;
        }
        Ok(())
    }

    fn refresh_expiry(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + self.tokens.refresh_ttl()
    }

    fn session(
        &self,
        user: User,
        refresh_token: String,
        family: &str,
    ) -> Result<Session, AppError> {
        let access = self.tokens.issue(&user, family)?;
        Ok(Session {
            user,
            access_token: access.token,
            expires_in: access.expires_in,
            refresh_token,
            refresh_expires_in: self.tokens.refresh_ttl().as_secs(),
        })
    }
}
