//! Logging setup, and running blocking work off the async runtime inside the caller's span.

use tracing::Instrument as _;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Keeps the log writer's thread running; dropping it writes out every line still queued.
pub struct LogGuard {
    _writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Installs the global tracing subscriber. Safe to call more than once (later calls are no-ops).
///
/// Lines are formatted on the thread that logs them and written to stderr by a writer thread
/// (tracing-appender's non-blocking writer, lossless: when its queue is full a logger waits,
/// no line is dropped). A request's access-log line so costs a queue push instead of a
/// `write` system call on the request's path. Keep the returned guard until the process ends.
pub fn init(format: LogFormat, filter: &str) -> LogGuard {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("agora-log")
        .finish(std::io::stderr());
    let builder = fmt().with_env_filter(filter).with_writer(writer);
    let installed = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.pretty().try_init(),
    };
    LogGuard {
        _writer: installed.is_ok().then_some(guard),
    }
}

/// Runs `f` on tokio's blocking pool, keeping the current tracing span, so log lines from
/// database work carry the request's fields.
pub async fn spawn_blocking_in_span<F, R>(f: F) -> Result<R, tokio::task::JoinError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .instrument(tracing::Span::current())
        .await
}
