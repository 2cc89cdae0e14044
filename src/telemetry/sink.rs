//! Where log lines go: a buffer in memory that one writer thread empties into stderr.
//!
//! A line costs its logger a lock and a copy into the buffer; the writer thread is woken only
//! when the buffer passes [`FLUSH_AT`] or its [`TICK`] comes round, so under load one
//! `write(2)` carries hundreds of lines and nobody is woken per line. (tracing-appender's
//! non-blocking writer, used before, woke its thread and flushed for nearly every line: 20% of
//! the process's time under a `/healthz` load went to that thread, half of it in futex calls.)
//!
//! Nothing is dropped: a logger that finds [`MAX_BUFFERED`] bytes waiting blocks until the
//! writer has taken them. A line waits at most one [`TICK`]; on shutdown
//! ([`SinkGuard`] dropped) everything buffered is written before the thread ends. A `kill -9`
//! loses at most the last tick's lines, as any buffered log does.

use std::{
    io::Write,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::JoinHandle,
    time::Duration,
};

/// Buffered bytes that wake the writer before its tick.
pub const FLUSH_AT: usize = 64 * 1024;
/// Buffered bytes past which loggers wait for the writer.
pub const MAX_BUFFERED: usize = 4 * 1024 * 1024;
/// Longest a line waits in the buffer.
pub const TICK: Duration = Duration::from_millis(50);

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    closed: bool,
}

/// The buffer and the conditions its writer and loggers wait on.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// The writer waits here for a full buffer or the close.
    full: Condvar,
    /// Loggers wait here when the buffer is at [`MAX_BUFFERED`].
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves whole lines in the buffer: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A handle to the log buffer: appends whole lines. Cloning it is cheap.
#[derive(Clone)]
pub struct LogSink(Arc<Shared>);

/// Stops the writer thread when dropped, after it has written everything buffered.
pub struct SinkGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LogSink {
    /// A sink whose writer thread (named `name`) writes into `out`.
    pub fn start(name: &str, out: impl Write + Send + 'static) -> (LogSink, SinkGuard) {
        let shared = Arc::new(Shared::default());
        let writer = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || write_out(&writer, out))
            .ok();
        (LogSink(shared.clone()), SinkGuard { shared, thread })
    }

    /// Appends `line` (one or more whole lines) to the buffer.
    pub fn append(&self, line: &[u8]) {
        let shared = &self.0;
        let mut state = shared.lock();
        while state.buf.len() >= MAX_BUFFERED && !state.closed {
            state = shared.room.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        let before = state.buf.len();
        state.buf.extend_from_slice(line);
        if before < FLUSH_AT && state.buf.len() >= FLUSH_AT {
            shared.full.notify_one();
        }
    }
}

/// The writer thread: takes the whole buffer at every tick (or sooner when it fills) and
/// writes it out, until closed and empty.
fn write_out(shared: &Shared, mut out: impl Write) {
    let mut spare = Vec::new();
    loop {
        let mut state = shared.lock();
        if state.buf.len() < FLUSH_AT && !state.closed {
            state = shared
                .full
                .wait_timeout(state, TICK)
                .map(|(s, _)| s)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        std::mem::swap(&mut state.buf, &mut spare);
        let done = state.closed;
        drop(state);
        shared.room.notify_all();
        if !spare.is_empty() {
            // Nowhere to report a failing stderr: the lines are dropped, the server goes on.
            let _ = out.write_all(&spare);
            let _ = out.flush();
            // Keep the allocation unless a burst made it large.
            spare.clear();
            if spare.capacity() > MAX_BUFFERED {
                spare = Vec::new();
            }
        }
        if done && shared.lock().buf.is_empty() {
            return;
        }
    }
}

impl Drop for SinkGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.full.notify_one();
        self.shared.room.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The `io::Write` tracing-subscriber formats an event into: each `write` is one whole event.
pub struct SinkWriter<'a>(&'a LogSink);

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Out(Arc<Mutex<Vec<u8>>>);

    impl Write for Out {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_whole_and_in_order_by_shutdown() {
        let out = Out::default();
        let (sink, guard) = LogSink::start("test-log", out.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        sink.append(format!("{t} {i} {}\n", "x".repeat(i % 300)).as_bytes());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let written = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let mut next = [0usize; 4];
        for line in written.lines() {
            let mut parts = line.split(' ');
            let t: usize = parts.next().unwrap().parse().unwrap();
            let i: usize = parts.next().unwrap().parse().unwrap();
            assert_eq!(i, next[t], "thread {t}'s lines in order, none lost");
            assert_eq!(parts.next().unwrap().len(), i % 300, "a line is whole");
            next[t] += 1;
        }
        assert_eq!(next, [20_000; 4]);
    }

    #[test]
    fn a_line_is_written_within_a_tick_without_shutdown() {
        let out = Out::default();
        let (sink, _guard) = LogSink::start("test-log", out.clone());
        sink.append(b"hello\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while out.0.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "written within a tick"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hello\n");
    }
}
