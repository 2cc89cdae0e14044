//! Who a request acts as: an access token's signature proves who it was issued to, and the
//! session and account behind it are checked as they are *now*, on every request.
//!
//! A JWT alone cannot be taken back: a demoted admin's token kept admin rights until it
//! expired, a token signed for an account that no longer exists was accepted, and logging out
//! left the session's access tokens working. So a token names its session (`sid`, the login's
//! refresh-token family), and the acting role is the account's current role, read with the
//! session from the database: a session that was logged out (or revoked because a refresh
//! token was replayed), or whose account is gone, authenticates nobody.
//!
//! That read is cached per session (moka, bounded, short TTL) so an authenticated request costs
//! a hash lookup, not a query. Whatever changes the answer invalidates it when it commits:
//! logout and refresh-token reuse forget the session, a role change forgets every session of
//! the user. A read that raced such an invalidation is not left in the cache (an epoch counter
//! is checked after the insert), so once a role change or logout has returned, no request acts
//! on the old state.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use moka::future::Cache;

use super::tokens::Tokens;
use crate::{
    domain::user::{Actor, Role},
    error::AppError,
    repo::SessionRepository,
};

/// Sessions whose state is kept in memory.
const CACHED_SESSIONS: u64 = 20_000;
/// Longest a cached session state is trusted; changes made through this server are seen at
/// once, this bounds changes made behind its back.
const CACHE_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
struct SessionState {
    user_id: i64,
    /// The account's role; `None` when the session has ended or the account is gone.
    role: Option<Role>,
}

/// Turns bearer tokens into actors, checking the session and account behind them.
pub struct Authenticator {
    tokens: Arc<Tokens>,
    sessions: Arc<dyn SessionRepository>,
    cache: Cache<Arc<str>, SessionState>,
    epoch: AtomicU64,
}

impl Authenticator {
    /// An authenticator verifying with `tokens` and reading sessions from `sessions`.
    pub fn new(tokens: Arc<Tokens>, sessions: Arc<dyn SessionRepository>) -> Self {
        Self {
            tokens,
            sessions,
            cache: Cache::builder()
                .name("sessions")
                .max_capacity(CACHED_SESSIONS)
                .time_to_live(CACHE_TTL)
                .support_invalidation_closures()
                .build(),
            epoch: AtomicU64::new(0),
        }
    }

    /// The actor `token` speaks for, with its account's current role; `Unauthorized` saying
    /// why when the token is invalid, its session has ended or its account is gone.
    pub async fn authenticate(&self, token: &str) -> Result<Actor, AppError> {
        let subject = self.tokens.verify(token)?;
        let session: Arc<str> = subject.session.into();
        let state = match self.cache.get(&session).await {
            Some(state) => state,
            None => self.load(session).await?,
        };
        match state.role {
            Some(role) if state.user_id == subject.user_id => Ok(Actor {
                user_id: subject.user_id,
                role,
            }),
            _ => Err(AppError::Unauthorized(
                "the session has ended or its account no longer exists; sign in again".into(),
            )),
        }
    }

    async fn load(&self, session: Arc<str>) -> Result<SessionState, AppError> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let state = match self.sessions.session_role(session.to_string()).await? {
            Some((user_id, role)) => SessionState {
                user_id,
                role: Some(role),
            },
            None => SessionState {
                user_id: 0,
                role: None,
            },
        };
        self.cache.insert(session.clone(), state).await;
        if self.epoch.load(Ordering::Acquire) != epoch {
            // Something was invalidated while this was read: it may be stale.
            self.cache.invalidate(&session).await;
        }
        Ok(state)
    }

    /// Forgets what is known of `session`, after it was ended (logout, reuse).
    pub async fn forget_session(&self, session: &str) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate(session).await;
    }

    /// Forgets every session (another process's logouts or role changes may have been missed).
    pub fn forget_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate_all();
    }

    /// Forgets every session of `user_id`, after its role changed.
    pub fn forget_user(&self, user_id: i64) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = self
            .cache
            .invalidate_entries_if(move |_, state| state.user_id == user_id)
        {
            // Only possible without `support_invalidation_closures`; drop everything instead.
            tracing::error!(
                request_id = crate::middleware::request_id::known(),
                error = %e,
                "invalidating a user's sessions failed"
            );
            self.cache.invalidate_all();
        }
    }
}
