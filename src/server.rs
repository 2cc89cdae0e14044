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
//! Connections are served by a few threads (`--http-threads`, one per core by default), each
//! running its own single-threaded tokio runtime and accepting from the same socket; a
//! connection goes to the thread serving the fewest (the one that accepted it hands it over
//! when another serves fewer) and stays there. The rest of the server (jobs, the database's
//! threads, event tailing, webhooks) runs on the main runtime. See [`serve`] for why.
//!
//! Shutdown: on the signal each thread drops its listener (no new connections once all have)
//! and tells every connection to finish its in-flight request and close, and waits for them up to the
//! shutdown timeout; connections still open then are dropped.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

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
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot, watch},
    task::JoinSet,
};

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
    /// Threads serving connections, each with its own single-threaded runtime.
    pub threads: usize,
    /// Most blocking threads each of those runtimes starts (database reads that scan).
    pub blocking_threads: usize,
}

/// The threads serving connections. They live as long as this value: what a request started
/// on one of them (a database or Redis connection opened in a pool, a load the cache shares)
/// keeps running there until it is dropped. Dropping it ends them at once, with whatever is
/// still running on them, as a crash would; after [`serve`] returned, every connection has
/// already been closed.
pub struct HttpThreads {
    _release: watch::Sender<()>,
}

/// What every serving thread shares.
struct Shared<E> {
    endpoint: E,
    builder: auto::Builder<TokioExecutor>,
    local: LocalAddr,
    limits: ServerLimits,
    balance: Arc<Balance>,
    /// Per thread: where other threads hand it connections.
    inboxes: Vec<mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>>,
}

/// Open connections per serving thread, so that a new one goes to the thread serving the
/// fewest. Whichever thread's poller wakes first accepts: when a client opens its connections
/// in a burst (a load generator, a pool filling up), one thread could accept nearly all of
/// them and serve them on one core while the other cores idle. Measured before this existed:
/// wrk's 64 connections all on one of the two threads in one run of six, most of them in
/// another, at 21k and 28k list requests a second against 34-49k when split evenly.
struct Balance {
    open: Vec<AtomicUsize>,
}

impl Balance {
    fn new(threads: usize) -> Self {
        Self {
            open: (0..threads).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// The thread a connection `local` accepted should be served on (`local` itself unless
    /// another serves fewer), counted as open there.
    fn pick(&self, local: usize) -> usize {
        let count = |i: usize| self.open[i].load(Ordering::Relaxed);
        let fewest = (0..self.open.len())
            .min_by_key(|&i| count(i))
            .unwrap_or(local);
        let to = if count(fewest) < count(local) {
            fewest
        } else {
            local
        };
        self.open[to].fetch_add(1, Ordering::Relaxed);
        to
    }

    /// A connection counted on `thread` has closed (or never reached it).
    fn closed(&self, thread: usize) {
        self.open[thread].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a connection as closed on its thread when dropped: when the connection's task ends
/// or is aborted.
struct Open {
    balance: Arc<Balance>,
    thread: usize,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.balance.closed(self.thread);
    }
}

/// Serves `endpoint` on `listener` until `shutdown` completes, then shuts down gracefully:
/// each serving thread stops accepting, tells its connections to finish their in-flight
/// request and close, and waits for them up to the shutdown timeout. The threads are handed
/// back (see [`HttpThreads`]).
///
/// Why a runtime per thread rather than one runtime over all the cores: a connection is
/// accepted by one of `limits.threads` threads and stays there, so its wake-ups, timers and
/// tasks never cross to another core (no work stealing, no sibling worker woken to steal). On
/// the 2-core bench machine, shared with the load generator, `/healthz` went from 18-19 to
/// 13-14 µs of server CPU a request and a read by id from a warm cache from 29 to 24-26
/// (benches/README.md). The threads accept from the same listening socket, each through its
/// own runtime's poller, and the one that accepts a connection hands it to another when that
/// one serves fewer ([`Balance`]).
pub async fn serve<E>(
    listener: TcpListener,
    endpoint: E,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<HttpThreads>
where
    E: Endpoint<Output = Response> + 'static,
{
    let local = LocalAddr(Addr::SocketAddr(listener.local_addr()?));
    let listener = listener.into_std()?;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let threads = limits.threads.max(1);
    let (inboxes, mut inboxes_rx): (Vec<_>, Vec<_>) =
        (0..threads).map(|_| mpsc::unbounded_channel()).unzip();
    let shared = Arc::new(Shared {
        endpoint,
        builder,
        local,
        limits,
        balance: Arc::new(Balance::new(threads)),
        inboxes,
    });
    let (release, released) = watch::channel(());
    let (stop, stopping) = watch::channel(false);
    let mut finished = Vec::new();
    for (n, inbox) in inboxes_rx.drain(..).enumerate() {
        let (done, stopped) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(limits.blocking_threads.max(1))
            .build()?;
        let thread = Thread {
            index: n,
            listener: listener.try_clone()?,
            inbox,
            shared: shared.clone(),
            stopping: stopping.clone(),
            released: released.clone(),
            done,
        };
        std::thread::Builder::new()
            .name(format!("agora-http-{n}"))
            .spawn(move || thread.run(runtime))?;
        finished.push(stopped);
    }
    // The socket closes when the last thread drops its copy.
    drop(listener);
    shutdown.await;
    let _ = stop.send(true);
    for stopped in finished {
        let _ = stopped.await;
    }
    Ok(HttpThreads { _release: release })
}

/// One serving thread.
struct Thread<E> {
    /// Its place among the serving threads.
    index: usize,
    listener: std::net::TcpListener,
    /// Connections other threads accepted for it.
    inbox: mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    shared: Arc<Shared<E>>,
    /// True once the server is shutting down.
    stopping: watch::Receiver<bool>,
    /// Closed when the [`HttpThreads`] is dropped.
    released: watch::Receiver<()>,
    /// Sent when its connections are closed.
    done: oneshot::Sender<()>,
}

impl<E: Endpoint<Output = Response> + 'static> Thread<E> {
    /// Accepts and serves until the server stops, reports when its connections are closed,
    /// then keeps its runtime running until released.
    fn run(self, runtime: tokio::runtime::Runtime) {
        let Thread {
            index,
            listener,
            inbox,
            shared,
            stopping,
            mut released,
            done,
        } = self;
        runtime.block_on(async move {
            let serving = async {
                match TcpListener::from_std(listener) {
                    Ok(listener) => {
                        serve_connections(listener, inbox, index, stopping, shared).await
                    }
                    Err(e) => tracing::error!(error = %e, "a serving thread could not listen"),
                }
                let _ = done.send(());
                // Until released, so that what requests started here runs on.
                std::future::pending::<()>().await;
            };
            tokio::select! {
                () = serving => {}
                _ = released.changed() => {}
            }
        });
        // Whatever is left (a blocking read, an abandoned stream) is dropped, not waited for.
        runtime.shutdown_background();
    }
}

/// Hands a connection `stream` accepted here to thread `to` (already counted there); if that
/// thread has stopped, the connection is closed.
fn hand_over<E>(shared: &Shared<E>, to: usize, stream: TcpStream, peer: SocketAddr) {
    let sent = stream
        .into_std()
        .map_err(|e| tracing::warn!(error = %e, "a connection could not be handed over"))
        .and_then(|stream| shared.inboxes[to].send((stream, peer)).map_err(drop));
    if sent.is_err() {
        shared.balance.closed(to);
    }
}

/// Accepts connections (handing each to the thread serving the fewest) and serves its own
/// until `stopping`, then closes them gracefully.
async fn serve_connections<E>(
    listener: TcpListener,
    mut inbox: mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    index: usize,
    mut stopping: watch::Receiver<bool>,
    shared: Arc<Shared<E>>,
) where
    E: Endpoint<Output = Response> + 'static,
{
    let (close, closing) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stopping.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match shared.balance.pick(index) {
                    to if to == index => (stream, peer),
                    to => {
                        hand_over(&shared, to, stream, peer);
                        continue;
                    }
                },
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some((stream, peer)) = inbox.recv() => match TcpStream::from_std(stream) {
                Ok(stream) => (stream, peer),
                Err(e) => {
                    shared.balance.closed(index);
                    tracing::warn!(error = %e, "a connection handed over could not be served");
                    continue;
                }
            },
            // Reap finished connections so the set does not grow with the server's age.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let open = Open {
            balance: shared.balance.clone(),
            thread: index,
        };
        let _ = stream.set_nodelay(true);
        let remote = RemoteAddr(Addr::SocketAddr(peer));
        let (shared, mut closing) = (shared.clone(), closing.clone());
        connections.spawn(async move {
            let _open = open;
            let for_service = shared.clone();
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let shared = for_service.clone();
                let req =
                    poem::Request::from((req, shared.local.clone(), remote.clone(), Scheme::HTTP));
                async move {
                    let resp = shared.endpoint.get_response(req).await;
                    Ok::<_, Infallible>(hyper::Response::<BoxBody>::from(resp))
                }
            });
            let conn = shared
                .builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = closing.changed() => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    // Connections other threads handed over but this one has not taken are closed now, and
    // any handed over from here on are closed by the thread that accepted them.
    drop(inbox);
    let _ = close.send(true);
    let drained = tokio::time::timeout(shared.limits.shutdown_timeout, async {
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
}

#[cfg(test)]
mod tests {
    use super::Balance;

    fn counts(balance: &Balance) -> Vec<usize> {
        balance
            .open
            .iter()
            .map(|n| n.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    }

    #[test]
    fn a_burst_accepted_by_one_thread_is_spread_evenly() {
        let balance = Balance::new(2);
        let picked: Vec<usize> = (0..64).map(|_| balance.pick(0)).collect();
        assert_eq!(counts(&balance), [32, 32]);
        // Alternating: the accepting thread keeps a connection when the other serves as many.
        assert_eq!(&picked[..4], [0, 1, 0, 1]);
    }

    #[test]
    fn a_new_connection_goes_where_connections_have_closed() {
        let balance = Balance::new(3);
        for _ in 0..9 {
            balance.pick(1);
        }
        assert_eq!(counts(&balance), [3, 3, 3]);
        balance.closed(2);
        balance.closed(2);
        assert_eq!(balance.pick(0), 2);
        assert_eq!(balance.pick(1), 2);
        // All even again: each thread keeps what it accepts.
        assert_eq!(balance.pick(1), 1);
        assert_eq!(counts(&balance), [3, 4, 3]);
    }
}
