//! Request body size limit. A declared `Content-Length` over the limit is refused before the
//! body is read; a body without one is read up to the limit and refused past it. Either way
//! the client gets 413 and no handler runs.

use poem::{
    error::ReadBodyError, Body, Endpoint, IntoResponse, Middleware, Request, Response, Result,
};

/// The body-limit middleware.
pub struct BodyLimit {
    /// Largest accepted body, in bytes.
    pub limit: usize,
}

impl<E: Endpoint> Middleware<E> for BodyLimit {
    type Output = BodyLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        BodyLimitEndpoint {
            inner,
            limit: self.limit,
        }
    }
}

/// [`BodyLimit`] around an endpoint.
pub struct BodyLimitEndpoint<E> {
    inner: E,
    limit: usize,
}

impl<E: Endpoint> Endpoint for BodyLimitEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> Result<Response> {
        let declared = req
            .headers()
            .get(poem::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(len) if len > self.limit as u64 => {
                return Err(ReadBodyError::PayloadTooLarge.into())
            }
            Some(0) => {}
            _ => {
                let bytes = req.take_body().into_bytes_limit(self.limit).await?;
                req.set_body(Body::from_bytes(bytes));
            }
        }
        // Boxed so this future stays small (see the access log).
        Box::pin(self.inner.call(req))
            .await
            .map(IntoResponse::into_response)
    }
}
