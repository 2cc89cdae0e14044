//! Accounts and sessions: register, login, refresh, logout.

use std::sync::Arc;

use poem_openapi::{payload::Json, ApiResponse, OpenApi};

use super::{
    body::JsonBody,
    error::ApiError,
    user_models::{LoginBody, RefreshBody, RegisterBody, SessionEnvelope, UserEnvelope},
    ApiTags,
};
use crate::{
    domain::user::Credentials, middleware::rate_limit::RateLimits, service::auth::AuthService,
};

/// Auth API.
pub struct AuthApi {
    /// Sign-up and sessions.
    pub auth: Arc<AuthService>,
    /// The per-username login quota.
    pub limits: Arc<RateLimits>,
}

/// A created account.
#[derive(ApiResponse)]
pub enum Registered {
    /// The account, with the signup grant as its balance.
    #[oai(status = 201)]
    Created(Json<UserEnvelope>),
}

/// Tokens, which no cache may keep.
#[derive(ApiResponse)]
pub enum SessionIssued {
    /// The session's tokens.
    #[oai(status = 200)]
    Ok(
        Json<SessionEnvelope>,
        /// Always `no-store`: the body holds credentials.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

impl SessionIssued {
    fn new(session: crate::service::auth::Session) -> Self {
        SessionIssued::Ok(
            Json(SessionEnvelope::new(session.into())),
            "no-store".into(),
        )
    }
}

/// A revoked session.
#[derive(ApiResponse)]
pub enum LoggedOut {
    /// The session's refresh tokens are revoked (also when the token was unknown).
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(prefix_path = "/api/auth", tag = "ApiTags::Auth")]
impl AuthApi {
    /// Register an account
    ///
    /// Creates a `user` account holding the signup grant (recorded in the ledger). A taken
    /// username gets 409. Then log in for tokens.
    #[oai(path = "/register", method = "post", operation_id = "register_user")]
    async fn register_user(&self, body: JsonBody<RegisterBody>) -> Result<Registered, ApiError> {
        let credentials = Credentials::parse(&body.0.username.0, &body.0.password.0)?;
        let user = self.auth.register(credentials).await?;
        Ok(Registered::Created(Json(UserEnvelope::new(user.into()))))
    }

    /// Log in
    ///
    /// Exchanges a username and password for an access token and a refresh token. Wrong
    /// credentials get 401, the same for unknown users and wrong passwords. Attempts on one
    /// username are limited per client address (10 per 15 minutes by default) and from all
    /// addresses together (200 per 15 minutes): past either, 429. A stranger's failed attempts
    /// from elsewhere do not lock the owner out. With the quotas counted in Redis, an attempt
    /// gets 503 while Redis cannot answer (these quotas bound password guessing: they never
    /// let attempts through uncounted).
    #[oai(path = "/login", method = "post", operation_id = "login_user")]
    async fn login_user(
        &self,
        body: JsonBody<LoginBody>,
        req: &poem::Request,
    ) -> Result<SessionIssued, ApiError> {
        let peer = req.remote_addr().as_socket_addr().map(|a| a.ip());
        let ip = self.limits.client_ip(peer, req.headers());
        self.limits
            .check_login(&body.0.username.0, ip)
            .await
            .map_err(|refused| ApiError::from(&refused))?;
        let session = self
            .auth
            .login(body.0.username.0, body.0.password.0)
            .await?;
        Ok(SessionIssued::new(session))
    }

    /// Refresh a session
    ///
    /// Exchanges a refresh token for new tokens. Each refresh token works once; presenting a
    /// used one again revokes the whole session (every token of that login) and gets 401.
    #[oai(path = "/refresh", method = "post", operation_id = "refresh_session")]
    async fn refresh_session(
        &self,
        body: JsonBody<RefreshBody>,
    ) -> Result<SessionIssued, ApiError> {
        let session = self.auth.refresh(body.0.refresh_token.0).await?;
        Ok(SessionIssued::new(session))
    }

    /// Log out
    ///
    /// Ends the session the refresh token belongs to: its refresh tokens and every access
    /// token it issued stop working at once.
    #[oai(path = "/logout", method = "post", operation_id = "logout_session")]
    async fn logout_session(&self, body: JsonBody<RefreshBody>) -> Result<LoggedOut, ApiError> {
        self.auth.logout(body.0.refresh_token.0).await?;
        Ok(LoggedOut::NoContent)
    }
}
