//! Request body size limit. A body over the limit (declared by its `Content-Length`, or found
//! so while reading one without) gets 413 and no handler runs.
//!
//! Before answering, the rest of such a body is read and dropped, up to [`DRAIN_MAX`] bytes in
//! all: a client still sending it would otherwise have its connection closed under it (the
//! server cannot read the next request after an unread body) and see a broken pipe instead of
//! the 413. The 413 says `Connection: close` all the same (see `api::error`).

use futures_util::StreamExt;
use poem::{
    error::ReadBodyError, Body, Endpoint, IntoResponse, Middleware, Request, Response, Result,
};

/// Most bytes of a refused body read (and dropped) so that its client can finish sending it;
/// past this the connection is closed under a client still sending.
pub const DRAIN_MAX: u64 = 16 * 1024 * 1024;

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
                if len <= DRAIN_MAX {
                    drain(req.take_body(), 0).await;
                }
                return Err(ReadBodyError::PayloadTooLarge.into());
            }
            Some(0) => {}
            _ => {
                let bytes = read_within(req.take_body(), self.limit).await?;
                req.set_body(Body::from_bytes(bytes));
            }
        }
        // Boxed so this future stays small (see the access log).
        Box::pin(self.inner.call(req))
            .await
            .map(IntoResponse::into_response)
    }
}

/// The whole body if it is at most `limit` bytes; past that the rest is drained and the body
/// refused.
async fn read_within(body: Body, limit: usize) -> Result<bytes::Bytes> {
    let mut stream = body.into_bytes_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadBodyError::Io)?;
        if buf.len() + chunk.len() > limit {
            let read = (buf.len() + chunk.len()) as u64;
            drop(buf);
            drain_stream(stream, read).await;
            return Err(ReadBodyError::PayloadTooLarge.into());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Reads and drops `body` until its end, an error, or [`DRAIN_MAX`] bytes with `read` already.
async fn drain(body: Body, read: u64) {
    drain_stream(body.into_bytes_stream(), read).await;
}

async fn drain_stream(
    mut stream: impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Unpin,
    mut read: u64,
) {
    while read < DRAIN_MAX {
        match stream.next().await {
            Some(Ok(chunk)) => read += chunk.len() as u64,
            _ => return,
        }
    }
}
