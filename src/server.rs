//! The HTTP server loop: hyper (HTTP/1.1, and HTTP/2 over cleartext) serving the poem
//! endpoint, with the connection bounds poem's own `Server` does not set.
//!
//! Why not `poem::Server`: it builds hyper without a timer, so hyper's request-head timeout
//! never runs (a client sending one header line every 20 s held a connection for minutes and
//! was then served), and it cannot set hyper's header limits. Here every connection gets:
//! - a **head timeout** (`--header-timeout-secs`, 10 s): from the moment the server waits for a
//!   request head (a new connection, or a keep-alive connection after its last response) to
//!   the end of that head. A connection that has not sent a whole head by then is closed, so
//!   this is also how long an idle keep-alive connection stays open;
//! - hyper's parser limits a little above agora's own ([`crate::middleware::head_limits`]), so
//!   the usual oversized request (a long URI, too many headers) reaches agora and gets the
//!   JSON error envelope. Requests past hyper's ceilings (a URI over 64 KiB, a head over
//!   [`MAX_HEAD_BYTES`], more than [`MAX_HEADERS`] headers) and requests hyper cannot parse
//!   (a malformed request line or header) are answered by hyper itself, with the right status
//!   and an empty body: no agora code runs for them.
//!
//! Shutdown: on the signal the listener is dropped (no new connections), every connection is
//! told to finish its in-flight request and close, and the loop waits for them up to the
//! shutdown timeout; connections still open then are dropped.

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use poem::{
    http::uri::Scheme,
    web::{LocalAddr, RemoteAddr},
    Addr, Endpoint, Response,
};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

/// Most headers hyper parses in one request (agora itself refuses more than
/// [`crate::middleware::head_limits::MAX_HEADERS`] with a JSON 431).
pub const MAX_HEADERS: usize = 256;
/// Largest request head hyper buffers, in bytes (agora refuses heads over
/// [`crate::middleware::head_limits::MAX_HEAD_BYTES`] with a JSON 431).
pub const MAX_HEAD_BYTES: usize = 256 * 1024;

type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Longest wait for a whole request head (also the keep-alive idle time).
    pub header_timeout: Duration,
    /// Longest wait for open connections after the shutdown signal.
    pub shutdown_timeout: Duration,
}

/// Serves `endpoint` on `listener` until `shutdown` completes, then shuts down gracefully.
pub async fn serve<E>(
    listener: TcpListener,
    endpoint: E,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    E: Endpoint<Output = Response> + 'static,
{
    let endpoint = Arc::new(endpoint);
    let local = LocalAddr(Addr::SocketAddr(listener.local_addr()?));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
            // Reap finished connections so the set does not grow with the server's age.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let remote = RemoteAddr(Addr::SocketAddr(peer));
        let (endpoint, local, builder, mut stop) = (
            endpoint.clone(),
            local.clone(),
            builder.clone(),
            stop_rx.clone(),
        );
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let endpoint = endpoint.clone();
                let req = poem::Request::from((req, local.clone(), remote.clone(), Scheme::HTTP));
                async move {
                    let resp = endpoint.get_response(req).await;
                    Ok::<_, Infallible>(hyper::Response::<BoxBody>::from(resp))
                }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.changed() => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open after the shutdown timeout are dropped"
        );
        connections.shutdown().await;
    }
    Ok(())
}
