//! A small Server-Sent Events client for `GET /api/events`: reads the response body as it
//! arrives and parses it by the WHATWG rules (`id:`, `event:`, `data:` lines, `:` comments, a
//! blank line ends a message). Every read has a deadline, so a test never hangs on a stream.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::Value;
use tokio::time::{timeout_at, Instant};

use super::{Reply, TestApp};

/// One message of the stream.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// Its `id:` field.
    pub id: Option<String>,
    /// Its `event:` field (`message` when absent).
    pub event: String,
    /// Its `data:` lines joined by `\n`, as JSON (`Null` when it is not JSON).
    pub data: Value,
}

impl SseEvent {
    /// The `id:` as a number.
    #[track_caller]
    pub fn seq(&self) -> i64 {
        self.id
            .as_deref()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("message without a numeric id: {self:?}"))
    }
}

/// What a read brought.
#[derive(Debug)]
pub enum Next {
    /// A message.
    Event(SseEvent),
    /// The server ended the body.
    Ended,
    /// Nothing before the deadline.
    TimedOut,
}

/// An open event stream.
pub struct SseStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
    /// Comment lines (heartbeats) seen so far.
    pub comments: usize,
    partial: Partial,
    ended: bool,
}

impl SseStream {
    /// Opens `path` on `base` with `headers` (and a bearer `token` when given). A refusal (any
    /// status but 200) comes back read fully as the `Err`.
    pub async fn open(
        client: &Client,
        base: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<SseStream, Reply> {
        let mut req = client
            .get(format!("{base}{path}"))
            .header("Accept", "text/event-stream");
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let response = req.send().await.expect("stream request sent");
        if response.status() != StatusCode::OK {
            return Err(TestApp::read(response).await);
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            content_type.starts_with("text/event-stream"),
            "not an event stream: {content_type}"
        );
        Ok(SseStream {
            response,
            buffer: Vec::new(),
            comments: 0,
            partial: Partial::default(),
            ended: false,
        })
    }

    /// Opens an anonymous stream that must be accepted.
    pub async fn connect(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> SseStream {
        match Self::open(&app.client, &app.base, path, None, headers).await {
            Ok(stream) => stream,
            Err(reply) => panic!("stream {path} refused: {} {}", reply.status, reply.text),
        }
    }

    /// The next message, the end of the body, or nothing within `within`.
    pub async fn next(&mut self, within: Duration) -> Next {
        let deadline = Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = String::from_utf8(line).expect("UTF-8 stream");
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if let Some(done) = self.partial.dispatch() {
                        return Next::Event(done);
                    }
                    continue;
                }
                if line.starts_with(':') {
                    self.comments += 1;
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => self.partial.id = Some(value.to_owned()),
                    "event" => self.partial.event = Some(value.to_owned()),
                    "data" => self.partial.data.push(value.to_owned()),
                    _ => {}
                }
            }
            if self.ended {
                return Next::Ended;
            }
            match timeout_at(deadline, self.response.chunk()).await {
                // A message cut by the deadline is kept and finished by the next read.
                Err(_) => return Next::TimedOut,
                Ok(Ok(Some(chunk))) => self.buffer.extend_from_slice(&chunk),
                // A body cut off (the server went away) ends the stream as a clean end does.
                Ok(Ok(None)) | Ok(Err(_)) => self.ended = true,
            }
        }
    }

    /// The next message, which must come within `within`.
    pub async fn expect(&mut self, within: Duration) -> SseEvent {
        match self.next(within).await {
            Next::Event(event) => event,
            other => panic!("expected a message within {within:?}, got {other:?}"),
        }
    }
}

/// A message being read.
#[derive(Default)]
struct Partial {
    id: Option<String>,
    event: Option<String>,
    data: Vec<String>,
}

impl Partial {
    /// The message a blank line ends (none when it had no data).
    fn dispatch(&mut self) -> Option<SseEvent> {
        let taken = std::mem::take(self);
        if taken.data.is_empty() {
            return None;
        }
        let text = taken.data.join("\n");
        Some(SseEvent {
            id: taken.id,
            event: taken.event.unwrap_or_else(|| "message".into()),
            data: serde_json::from_str(&text).unwrap_or(Value::Null),
        })
    }
}
