//! The poem middleware: counts each request against its quota and adds the headers.

use std::sync::Arc;

use poem::{
    http::{header, HeaderMap, HeaderValue},
    Endpoint, IntoResponse, Middleware, Request, Response, Result,
};

use super::{classify, Class, RateLimits, POLICY_HEADER, STATE_HEADER};
use crate::{
    api::error::error_response, domain::user::Actor, middleware::request_id,
    service::authenticator::Authenticator,
};

/// An access token the rate limiter already verified, for the bearer checker to reuse.
#[derive(Debug, Clone)]
pub struct VerifiedActor(pub Actor);

/// The rate-limiting middleware.
pub struct RateLimit {
    /// The limiters.
    pub limits: Arc<RateLimits>,
    /// To tell users (and admins) from anonymous clients.
    pub authenticator: Arc<Authenticator>,
}

impl<E: Endpoint> Middleware<E> for RateLimit {
    type Output = RateLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RateLimitEndpoint {
            inner,
            limits: self.limits.clone(),
            authenticator: self.authenticator.clone(),
        }
    }
}

/// [`RateLimit`] around an endpoint.
pub struct RateLimitEndpoint<E> {
    inner: E,
    limits: Arc<RateLimits>,
    authenticator: Arc<Authenticator>,
}

impl<E: Endpoint> Endpoint for RateLimitEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> Result<Response> {
        if !self.limits.enabled || classify(req.method(), req.uri().path()) == Class::Exempt {
            return Box::pin(self.inner.call(req))
                .await
                .map(IntoResponse::into_response);
        }
        let actor = match bearer(req.headers()) {
            Some(token) => self.authenticator.authenticate(token).await.ok(),
            None => None,
        };
        if let Some(actor) = &actor {
            request_id::set_user(actor.user_id);
            req.extensions_mut().insert(VerifiedActor(*actor));
        }
        let peer = req.remote_addr().as_socket_addr().map(|a| a.ip());
        let ip = self.limits.client_ip(peer, req.headers());
        let checked = self
            .limits
            .check_request(req.method(), req.uri().path(), actor.as_ref(), ip)
            .await;
        let allowed = match checked {
            None => {
                return Box::pin(self.inner.call(req))
                    .await
                    .map(IntoResponse::into_response)
            }
            Some(Err(refused)) => return Ok(refused.response()),
            Some(Ok(allowed)) => allowed,
        };
        // Errors become their response here, not in the access log, so a 4xx that used the
        // quota carries the quota's headers too.
        // Boxed, as every inner call of this layer: see the access log.
        let mut resp = match Box::pin(self.inner.call(req)).await {
            Ok(resp) => resp.into_response(),
            Err(err) => error_response(err),
        };
        // A handler's own refusal (the per-username login quota) keeps its headers.
        if !resp.headers().contains_key(STATE_HEADER) {
            let headers = resp.headers_mut();
            headers.insert(POLICY_HEADER, allowed.policy);
            if let Ok(state) = HeaderValue::from_str(&allowed.state) {
                headers.insert(STATE_HEADER, state);
            }
        }
        Ok(resp)
    }
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
