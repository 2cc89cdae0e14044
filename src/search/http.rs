//! [`HttpEmbedder`]: an [`Embedder`] calling any OpenAI-compatible `/v1/embeddings` endpoint
//! (OpenAI, Ollama, vLLM, TEI), with timeouts and retries with exponential backoff.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::embedder::{normalize, EmbedError, Embedder};

/// Longest wait honoured from a Retry-After header: a provider asking for more is treated as
/// down rather than stalling indexing for minutes.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Longest wait between attempts whatever the backoff doubling reaches.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How much of an error body is kept in an error message.
const BODY_SNIPPET: usize = 200;

/// Settings of the HTTP embedder.
#[derive(Clone)]
pub struct HttpEmbedderConfig {
    /// e.g. `"http://127.0.0.1:11434"` or `"https://api.openai.com/v1"`: "/v1/embeddings" is
    /// appended, or just "/embeddings" when the base already ends in "/v1" (a base already ending
    /// in "/embeddings" is used as is).
    pub base_url: String,
    /// Model name sent in the request.
    pub model: String,
    /// Bearer key, if the provider needs one (never logged, not even by `Debug`).
    pub api_key: Option<String>,
    /// Timeout of one HTTP call.
    pub timeout: Duration,
    /// Calls per embed() before giving up (0 is taken as 1).
    pub attempts: u32,
    /// Delay before the first retry; doubled each retry, with ±25% jitter, at most 30 s.
    pub backoff: Duration,
}

impl std::fmt::Debug for HttpEmbedderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpEmbedderConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .field("backoff", &self.backoff)
            .finish()
    }
}

/// Embeds through an OpenAI-compatible HTTP API. Its dimensions are learned from the first
/// successful answer (0 until then); an answer of another length later is refused as Invalid.
#[derive(Debug)]
pub struct HttpEmbedder {
    config: HttpEmbedderConfig,
    url: String,
    model_id: String,
    client: reqwest::Client,
    dimensions: AtomicUsize,
}

/// What one call produced: vectors, or an error and whether (and when at the earliest) to retry.
enum Attempt {
    Done(Vec<Vec<f32>>),
    Retry(EmbedError, Option<Duration>),
    Fail(EmbedError),
}

#[derive(serde::Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(serde::Deserialize)]
struct Item {
    embedding: Vec<f32>,
    index: usize,
}

impl HttpEmbedder {
    /// An embedder for `config`; Invalid if the base URL is not an http(s) URL or the HTTP client
    /// cannot be built.
    pub fn new(config: HttpEmbedderConfig) -> Result<Self, EmbedError> {
        let base = config.base_url.trim_end_matches('/');
        let url = if base.ends_with("/embeddings") {
            base.to_string()
        } else if base.ends_with("/v1") {
            format!("{base}/embeddings")
        } else {
            format!("{base}/v1/embeddings")
        };
        let parsed = reqwest::Url::parse(&url)
            .map_err(|e| EmbedError::Invalid(format!("bad embeddings URL {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(EmbedError::Invalid(format!("bad embeddings URL {url:?}")));
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| EmbedError::Invalid(format!("HTTP client: {e}")))?;
        Ok(Self {
            model_id: format!("http:{}", config.model),
            url,
            client,
            config,
            dimensions: AtomicUsize::new(0),
        })
    }

    /// One HTTP call, classified.
    async fn attempt(&self, texts: &[String]) -> Attempt {
        let body = serde_json::json!({ "model": self.config.model, "input": texts });
        let mut request = self.client.post(&self.url).json(&body);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let response = match request.send().await {
            Ok(response) => response,
            // Connect errors, timeouts, dropped connections: all transient as far as we can tell.
            Err(e) => return Attempt::Retry(EmbedError::Unavailable(self.describe(&e)), None),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER));
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) => return Attempt::Retry(EmbedError::Unavailable(self.describe(&e)), None),
        };
        if status.as_u16() == 429 || status.is_server_error() {
            let message = format!("HTTP {status}: {}", self.snippet(&text));
            return Attempt::Retry(EmbedError::Unavailable(message), retry_after);
        }
        if !status.is_success() {
            return Attempt::Fail(EmbedError::Invalid(format!(
                "HTTP {status}: {}",
                self.snippet(&text)
            )));
        }
        match self.parse(&text, texts.len()) {
            Ok(vectors) => Attempt::Done(vectors),
            Err(e) => Attempt::Fail(e),
        }
    }

    /// Checks and normalizes a successful answer for `expected` texts.
    fn parse(&self, text: &str, expected: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        let response: Response = serde_json::from_str(text)
            .map_err(|e| EmbedError::Invalid(format!("bad JSON answer: {e}")))?;
        let mut data = response.data;
        if data.len() != expected {
            return Err(EmbedError::Invalid(format!(
                "{} embeddings for {expected} texts",
                data.len()
            )));
        }
        data.sort_by_key(|item| item.index);
        let mut vectors = Vec::with_capacity(expected);
        for (position, item) in data.into_iter().enumerate() {
            if item.index != position {
                return Err(EmbedError::Invalid("embedding indexes are not 0..n".into()));
            }
            let mut vector = item.embedding;
            if vector.is_empty() || vector.iter().any(|x| !x.is_finite()) {
                return Err(EmbedError::Invalid("empty or non-finite embedding".into()));
            }
            // The first answer fixes the dimensions; afterwards every vector must match them.
            let known = match self.dimensions.compare_exchange(
                0,
                vector.len(),
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => vector.len(),
                Err(known) => known,
            };
            if vector.len() != known {
                return Err(EmbedError::Invalid(format!(
                    "embedding of {} dimensions, expected {known}",
                    vector.len()
                )));
            }
            normalize(&mut vector);
            vectors.push(vector);
        }
        Ok(vectors)
    }

    /// A reqwest error as text, without anything that could hold the key.
    fn describe(&self, error: &reqwest::Error) -> String {
        let kind = if error.is_timeout() {
            "timeout"
        } else if error.is_connect() {
            "connect error"
        } else {
            "request error"
        };
        self.redact(&format!("{kind} calling {}: {error}", self.url))
    }

    /// The start of an error body, with the key blanked should the provider echo it.
    fn snippet(&self, body: &str) -> String {
        let cut: String = body.chars().take(BODY_SNIPPET).collect();
        self.redact(cut.trim())
    }

    fn redact(&self, text: &str) -> String {
        match &self.config.api_key {
            Some(key) if !key.is_empty() => text.replace(key.as_str(), "<redacted>"),
            _ => text.to_string(),
        }
    }

    /// Wait before retry number `retry` (1-based): backoff * 2^(retry-1), jittered, capped.
    fn backoff(&self, retry: u32) -> Duration {
        let doubled = self
            .config
            .backoff
            .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)));
        let jitter = rand::random_range(0.75..1.25);
        doubled.min(MAX_BACKOFF).mul_f64(jitter)
    }
}

#[async_trait::async_trait]
impl Embedder for HttpEmbedder {
    fn model(&self) -> &str {
        &self.model_id
    }

    fn dimensions(&self) -> usize {
        self.dimensions.load(Ordering::SeqCst)
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let attempts = self.config.attempts.max(1);
        let mut attempt = 1;
        loop {
            let (error, retry_after) = match self.attempt(texts).await {
                Attempt::Done(vectors) => return Ok(vectors),
                Attempt::Fail(error) => return Err(error),
                Attempt::Retry(error, retry_after) => (error, retry_after),
            };
            if attempt >= attempts {
                return Err(error);
            }
            let wait = self.backoff(attempt).max(retry_after.unwrap_or_default());
            tracing::warn!(
                request_id = crate::middleware::request_id::known(),
                model = %self.config.model,
                attempt,
                attempts,
                wait_ms = wait.as_millis() as u64,
                error = %error,
                "embedding call failed, retrying"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What the test server saw: the number of requests and their raw text.
    #[derive(Default)]
    struct Seen {
        calls: AtomicUsize,
        requests: Mutex<Vec<String>>,
    }

    /// A one-request-per-connection HTTP/1.1 server on 127.0.0.1; `answer(call)` (1-based) gives
    /// the status and body, or None to never answer.
    async fn serve(
        answer: impl Fn(usize) -> Option<(u16, String)> + Send + Sync + 'static,
    ) -> (String, Arc<Seen>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Seen::default());
        let answer = Arc::new(answer);
        let server_seen = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let (seen, answer) = (server_seen.clone(), answer.clone());
                tokio::spawn(async move {
                    let request = read_request(&mut socket).await;
                    seen.requests.lock().unwrap().push(request);
                    let call = seen.calls.fetch_add(1, Ordering::SeqCst) + 1;
                    let Some((status, body)) = answer(call) else {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return;
                    };
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    socket.write_all(head.as_bytes()).await.unwrap();
                    socket.write_all(body.as_bytes()).await.unwrap();
                    socket.shutdown().await.ok();
                });
            }
        });
        (url, seen)
    }

    async fn read_request(socket: &mut tokio::net::TcpStream) -> String {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = socket.read(&mut chunk).await.unwrap();
            buffer.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buffer).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_lowercase()
                            .strip_prefix("content-length:")
                            .map(str::to_string)
                    })
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                if n == 0 || buffer.len() >= end + 4 + length {
                    return text;
                }
            } else if n == 0 {
                return text;
            }
        }
    }

    fn embedder(url: &str, attempts: u32, timeout_ms: u64) -> HttpEmbedder {
        HttpEmbedder::new(HttpEmbedderConfig {
            base_url: url.to_string(),
            model: "test-model".into(),
            api_key: Some("sk-secret".into()),
            timeout: Duration::from_millis(timeout_ms),
            attempts,
            backoff: Duration::from_millis(10),
        })
        .unwrap()
    }

    const OK: &str = r#"{"data":[{"embedding":[0,4],"index":1},{"embedding":[3,4],"index":0}]}"#;

    fn texts() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[tokio::test]
    async fn retries_503_then_succeeds() {
        let (url, seen) = serve(|call| {
            Some(if call < 3 {
                (503, "busy".into())
            } else {
                (200, OK.into())
            })
        })
        .await;
        let e = embedder(&url, 3, 2000);
        assert_eq!(e.dimensions(), 0);
        let vectors = e.embed(&texts()).await.unwrap();
        assert_eq!(vectors, vec![vec![0.6, 0.8], vec![0.0, 1.0]]);
        assert_eq!(seen.calls.load(Ordering::SeqCst), 3);
        assert_eq!(e.dimensions(), 2);
        assert_eq!(e.model(), "http:test-model");
        let request = seen.requests.lock().unwrap()[0].clone();
        assert!(request.starts_with("POST /v1/embeddings "), "{request}");
        assert!(
            request.contains(r#""input":["a","b"]"#) && request.contains(r#""model":"test-model""#)
        );
    }

    #[tokio::test]
    async fn always_500_is_unavailable_after_all_attempts() {
        let (url, seen) = serve(|_| Some((500, "down".into()))).await;
        let result = embedder(&url, 4, 2000).embed(&texts()).await;
        assert!(
            matches!(result, Err(EmbedError::Unavailable(_))),
            "{result:?}"
        );
        assert_eq!(seen.calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn client_error_is_invalid_without_retry() {
        let (url, seen) = serve(|_| Some((400, r#"{"error":"bad key sk-secret"}"#.into()))).await;
        let result = embedder(&url, 3, 2000).embed(&texts()).await;
        let Err(EmbedError::Invalid(message)) = result else {
            panic!("{result:?}")
        };
        assert!(!message.contains("sk-secret"), "{message}");
        assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let (url, seen) = serve(|_| None).await;
        let started = Instant::now();
        let result = embedder(&url, 2, 300).embed(&texts()).await;
        let elapsed = started.elapsed();
        assert!(
            matches!(result, Err(EmbedError::Unavailable(_))),
            "{result:?}"
        );
        assert_eq!(seen.calls.load(Ordering::SeqCst), 2);
        assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(2000), "{elapsed:?}");
    }

    #[tokio::test]
    async fn sends_bearer_key_and_handles_v1_base() {
        let (url, seen) = serve(|_| Some((200, OK.into()))).await;
        embedder(&format!("{url}/v1/"), 1, 2000)
            .embed(&texts())
            .await
            .unwrap();
        let request = seen.requests.lock().unwrap()[0].to_lowercase();
        assert!(request.starts_with("post /v1/embeddings "), "{request}");
        assert!(
            request.contains("authorization: bearer sk-secret\r\n"),
            "{request}"
        );
        let debug = format!("{:?}", embedder(&url, 1, 10));
        assert!(!debug.contains("sk-secret"), "{debug}");
    }

    #[tokio::test]
    async fn bad_answers_are_invalid() {
        let one = r#"{"data":[{"embedding":[1,0],"index":0}]}"#;
        let (url, seen) = serve(move |_| Some((200, one.into()))).await;
        let result = embedder(&url, 3, 2000).embed(&texts()).await;
        assert!(matches!(result, Err(EmbedError::Invalid(_))), "{result:?}");
        assert_eq!(seen.calls.load(Ordering::SeqCst), 1);

        let (url, _) = serve(|_| Some((200, "not json".into()))).await;
        let result = embedder(&url, 3, 2000).embed(&texts()).await;
        assert!(matches!(result, Err(EmbedError::Invalid(_))), "{result:?}");
        assert!(embedder(&url, 1, 10).embed(&[]).await.unwrap().is_empty());
        assert!(HttpEmbedder::new(HttpEmbedderConfig {
            base_url: "ftp://x".into(),
            ..embedder(&url, 1, 10).config
        })
        .is_err());
    }
}
