//! The bearer security scheme: `Authorization: Bearer <access JWT>`, checked by
//! [`Authenticator`] (signature, session, current role) into the acting [`Actor`].
//!
//! Public: reads (markets, a market's positions, the probes) and `/api/auth/*`; everything that
//! writes, `/api/me` and `PATCH /api/users/{id}` need a token. 401 `unauthorized` means no
//! usable credentials (missing, malformed, expired, signed with another secret, or its login
//! has ended) and carries `WWW-Authenticate: Bearer realm="agora"`, with `, error="invalid_token"`
//! when a presented access token was refused (a failed login or refresh gets the plain
//! challenge). 403 `forbidden`: authenticated, but the role or ownership does not allow it.

use std::sync::Arc;

use poem::{error::ResponseError, http::StatusCode, Request};
use poem_openapi::{auth::Bearer, SecurityScheme};

use crate::{
    domain::user::Actor,
    error::AppError,
    middleware::{rate_limit::VerifiedActor, request_id},
    service::authenticator::Authenticator,
};

/// An access token from `POST /api/auth/login` or `/api/auth/refresh`, sent as
/// `Authorization: Bearer <token>`. Tokens expire after 15 minutes by default; renew them with
/// the refresh token.
#[derive(SecurityScheme)]
#[oai(
    rename = "bearerAuth",
    ty = "bearer",
    bearer_format = "JWT",
    checker = "check_bearer"
)]
pub struct BearerAuth(pub Actor);

/// Why a presented access token was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidToken(pub String);

impl ResponseError for InvalidToken {
    fn status(&self) -> StatusCode {
        StatusCode::UNAUTHORIZED
    }
}

async fn check_bearer(req: &Request, bearer: Bearer) -> poem::Result<Actor> {
    if let Some(VerifiedActor(actor)) = req.extensions().get::<VerifiedActor>() {
        // The rate limiter already authenticated this request's token.
        return Ok(*actor);
    }
    let authenticator = req.data::<Arc<Authenticator>>().ok_or_else(|| {
        poem::Error::from_string("authenticator missing", StatusCode::INTERNAL_SERVER_ERROR)
    })?;
    let actor = authenticator
        .authenticate(&bearer.token)
        .await
        .map_err(|e| match e {
            AppError::Unauthorized(why) => poem::Error::from(InvalidToken(why)),
            other => poem::Error::from(crate::api::error::ApiError::from(other)),
        })?;
    request_id::set_user(actor.user_id);
    Ok(actor)
}
