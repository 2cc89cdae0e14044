//! Logging setup, the access log's fast path, and running blocking work off the async runtime
//! inside the caller's span.
//!
//! # Cost
//!
//! One access-log line is written per request, so its cost is part of every request's. Through
//! tracing-subscriber's JSON formatter (a field visitor building a map, then serde) it took
//! about a third of `/healthz`'s throughput on the development machine (37-40k req/s with it,
//! 52-59k with the log at `warn`). The line is therefore formatted by hand, in exactly the shape
//! the JSON formatter gives, and every line goes to a [`LogSink`]: a buffer a writer thread empties in
//! bursts (one `write(2)` per tick or per 64 KiB, no wake-up per line).

mod sink;

use std::{io::Write as _, sync::OnceLock};

use tracing::{Instrument as _, Level};
use tracing_subscriber::{fmt, EnvFilter};

pub use sink::{LogSink, SinkGuard};

use crate::config::LogFormat;

/// The writer the hand-formatted access lines go to: set when the JSON format is installed.
static ACCESS_WRITER: OnceLock<LogSink> = OnceLock::new();

/// The target access lines are filtered and labelled by (`--log agora::middleware::access_log=warn`
/// turns them off).
pub const ACCESS_TARGET: &str = "agora::middleware::access_log";

/// Keeps the log writer's thread running; dropping it writes out every line still buffered.
pub struct LogGuard {
    _writer: Option<SinkGuard>,
}

/// Installs the global tracing subscriber. Safe to call more than once (later calls are no-ops).
///
/// Lines are formatted on the thread that logs them and written to stderr by a writer thread
/// ([`LogSink`]: lossless, a logger waits when the buffer is full). A request's access-log line so
/// costs a copy into a buffer instead of a `write` system call on the request's path. Keep the
/// returned guard until the process ends.
pub fn init(format: LogFormat, filter: &str) -> LogGuard {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = LogSink::start("agora-log", std::io::stderr());
    let builder = fmt().with_env_filter(filter).with_writer(writer.clone());
    let installed = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.pretty().try_init(),
    };
    if installed.is_ok() && matches!(format, LogFormat::Json) {
        let _ = ACCESS_WRITER.set(writer);
    }
    LogGuard {
        _writer: installed.is_ok().then_some(guard),
    }
}

/// One request, as the access log records it.
pub struct AccessLine<'a> {
    /// The request id.
    pub request_id: &'a str,
    /// The method's name (or `other`).
    pub method: &'a str,
    /// The request's path, without the query.
    pub path: &'a str,
    /// The operation id, or `-`.
    pub route: &'a str,
    /// The response status.
    pub status: u16,
    /// Time from the request's head to its response, in milliseconds.
    pub latency_ms: f64,
    /// The user the request authenticated as.
    pub user_id: Option<i64>,
}

/// Writes the access log's line for one request: `WARN` for a 5xx, else `INFO`, when that level
/// is enabled for [`ACCESS_TARGET`].
pub fn access(line: &AccessLine<'_>) {
    let server_error = line.status >= 500;
    let enabled = if server_error {
        tracing::enabled!(target: ACCESS_TARGET, Level::WARN)
    } else {
        tracing::enabled!(target: ACCESS_TARGET, Level::INFO)
    };
    if !enabled {
        return;
    }
    let Some(writer) = ACCESS_WRITER.get() else {
        // Pretty format, or no subscriber installed by this process (tests): through tracing.
        event(line);
        return;
    };
    let mut out = Vec::with_capacity(512);
    json_line(&mut out, line, time::OffsetDateTime::now_utc());
    writer.append(&out);
}

/// The access log's event through tracing (what [`json_line`] writes by hand).
fn event(line: &AccessLine<'_>) {
    let AccessLine {
        request_id,
        method,
        path,
        route,
        status,
        latency_ms,
        user_id,
    } = *line;
    if status >= 500 {
        tracing::warn!(target: ACCESS_TARGET, request_id, method, path, route, status, latency_ms, user_id, "request");
    } else {
        tracing::info!(target: ACCESS_TARGET, request_id, method, path, route, status, latency_ms, user_id, "request");
    }
}

/// The line tracing-subscriber's JSON formatter writes for the access log's event, field for
/// field: `{"timestamp":...,"level":...,"message":"request",<fields>,"target":...}\n`.
fn json_line(out: &mut Vec<u8>, line: &AccessLine<'_>, now: time::OffsetDateTime) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(out, now);
    out.extend_from_slice(if line.status >= 500 {
        b"\",\"level\":\"WARN\",\"message\":\"request\",\"request_id\":"
    } else {
        b"\",\"level\":\"INFO\",\"message\":\"request\",\"request_id\":"
    });
    json_str(out, line.request_id);
    out.extend_from_slice(b",\"method\":");
    json_str(out, line.method);
    out.extend_from_slice(b",\"path\":");
    json_str(out, line.path);
    out.extend_from_slice(b",\"route\":");
    json_str(out, line.route);
    let _ = write!(out, ",\"status\":{},\"latency_ms\":", line.status);
    // serde_json writes floats as tracing's formatter does (ryu: shortest round-trip form).
    let _ = serde_json::to_writer(&mut *out, &line.latency_ms);
    if let Some(user) = line.user_id {
        let _ = write!(out, ",\"user_id\":{user}");
    }
    out.extend_from_slice(b",\"target\":\"");
    out.extend_from_slice(ACCESS_TARGET.as_bytes());
    out.extend_from_slice(b"\"}\n");
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// RFC 3339 in UTC with microseconds, as tracing-subscriber's default timer writes it.
fn timestamp(out: &mut Vec<u8>, t: time::OffsetDateTime) {
    // Digit by digit: `write!` through `core::fmt` was a fifth of the line's cost.
    fn digits(out: &mut Vec<u8>, value: u32, width: u32) {
        for place in (0..width).rev() {
            out.push(b'0' + (value / 10u32.pow(place) % 10) as u8);
        }
    }
    digits(out, t.year().clamp(0, 9999) as u32, 4);
    out.push(b'-');
    digits(out, u8::from(t.month()).into(), 2);
    out.push(b'-');
    digits(out, t.day().into(), 2);
    out.push(b'T');
    digits(out, t.hour().into(), 2);
    out.push(b':');
    digits(out, t.minute().into(), 2);
    out.push(b':');
    digits(out, t.second().into(), 2);
    out.push(b'.');
    digits(out, t.microsecond(), 6);
    out.push(b'Z');
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What tracing's JSON formatter writes for the same event, through a captured writer.
    fn through_tracing(line: &AccessLine<'_>) -> String {
        let captured = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = captured.clone();
        let subscriber = fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(move || Captured(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || event(line));
        let bytes = captured.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn without_timestamp(line: &str) -> String {
        let start = line.find("\"timestamp\":\"").unwrap() + 13;
        let end = start + line[start..].find('"').unwrap();
        format!("{}{}", &line[..start], &line[end..])
    }

    #[test]
    fn the_hand_written_access_line_is_the_one_tracing_writes() {
        let lines = [
            AccessLine {
                request_id: "dfe1b586-6cda-4d02-86ac-20c86e632576",
                method: "GET",
                path: "/api/markets/7",
                route: "get_market",
                status: 200,
                latency_ms: 0.709423,
                user_id: None,
            },
            AccessLine {
                request_id: "trace.1",
                method: "other",
                path: "/api/\"quoted\"\\/\u{7f}\u{1}ünï",
                route: "-",
                status: 503,
                latency_ms: 12.5,
                user_id: Some(42),
            },
        ];
        for line in &lines {
            let mut ours = Vec::new();
            json_line(&mut ours, line, time::OffsetDateTime::now_utc());
            let ours = String::from_utf8(ours).unwrap();
            assert_eq!(
                without_timestamp(&ours),
                without_timestamp(&through_tracing(line))
            );
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let t = time::macros::datetime!(2026-03-04 05:06:07.000089 UTC);
        let mut out = Vec::new();
        timestamp(&mut out, t);
        assert_eq!(out, b"2026-03-04T05:06:07.000089Z");
    }
}
