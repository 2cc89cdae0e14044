//! What a hostile or careless client does below the API: unknown methods, slow or oversized
//! request heads, odd headers; and the headers every response carries.

use std::time::Duration;

use reqwest::{header::HeaderValue, Method, StatusCode};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::TestApp;

/// Sends raw bytes on a new connection and reads until the server closes it (every request
/// here says `Connection: close`, or is one the server refuses and closes).
async fn raw(app: &TestApp, request: &[u8]) -> String {
    let addr = app.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

/// The JSON body of a raw response (after the blank line).
fn json_of(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not a JSON body: {response:?}"))
}

#[tokio::test]
async fn unknown_methods_get_405_json_and_never_become_new_metric_labels() {
    let app = TestApp::spawn().await;
    let first = app
        .send(
            Method::from_bytes(b"BREW").expect("method"),
            "/api/markets",
            None,
            &[],
        )
        .await;
    first.assert_error(405, "method_not_allowed");
    // Scrape once first, so the scrape's own series exist in `before`.
    app.get("/metrics").await;
    let before = app.get("/metrics").await.text;
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    for i in 0..200 {
        let name = format!("X{i}METHOD");
        let reply = app
            .send(
                Method::from_bytes(name.as_bytes()).expect("method"),
                "/api/markets",
                None,
                &[],
            )
            .await;
        reply.assert_error(405, "method_not_allowed");
    }
    let long = "Q".repeat(4000);
    let reply = raw(
        &app,
        format!("{long} /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(matches!(status_of(&reply), 400 | 405), "{reply}");
    let after = app.get("/metrics").await.text;
    assert!(!after.contains("X1METHOD") && !after.contains("QQQQ"));
    assert!(after.contains("method=\"other\""), "{after}");
    assert_eq!(series(&after), series(&before), "{before}\n---\n{after}");
}

#[tokio::test]
async fn a_client_that_trickles_its_request_head_is_cut_off_at_the_head_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = TestApp::config(&dir, &["--header-timeout-secs", "1"]);
    let app = TestApp::spawn_with(dir, config).await;
    let addr = app.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    // One header line every 300 ms for 4 s: never a whole head before the 1 s deadline.
    let mut cut_off = false;
    for i in 0..13 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if stream
            .write_all(format!("x-slow-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            cut_off = true;
            break;
        }
    }
    let _ = stream.write_all(b"\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        !text.contains("200 OK"),
        "a trickled head was served: {text} (write failed: {cut_off})"
    );
    // A prompt client on a new connection is served as usual.
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn oversized_request_heads_get_the_json_envelope_where_agora_can_answer() {
    let app = TestApp::spawn().await;
    let long_query = format!(
        "GET /api/markets/search?q={} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "a".repeat(10_000)
    );
    let reply = raw(&app, long_query.as_bytes()).await;
    assert_eq!(status_of(&reply), 414, "{reply}");
    assert_eq!(json_of(&reply)["code"], json!("uri_too_long"));

    let mut many = String::from("GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n");
    for i in 0..150 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let reply = raw(&app, many.as_bytes()).await;
    assert_eq!(status_of(&reply), 431, "{reply}");
    assert_eq!(json_of(&reply)["code"], json!("headers_too_large"));

    let big = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-big: {}\r\n\r\n",
        "b".repeat(40_000)
    );
    let reply = raw(&app, big.as_bytes()).await;
    assert_eq!(status_of(&reply), 431, "{reply}");
    assert_eq!(json_of(&reply)["success"], json!(false));

    // Past the HTTP parser's own ceilings (documented): its status, with no body.
    let huge = format!(
        "GET /healthz?q={} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "a".repeat(100_000)
    );
    assert_eq!(status_of(&raw(&app, huge.as_bytes()).await), 414);
    assert_eq!(status_of(&raw(&app, b"NOT A REQUEST\r\n\r\n").await), 400);
}

#[tokio::test]
async fn every_response_forbids_sniffing_and_the_docs_page_is_locked_down() {
    let app = TestApp::spawn().await;
    for path in [
        "/healthz",
        "/api/markets",
        "/api/nope",
        "/openapi.json",
        "/docs",
    ] {
        let reply = app.get(path).await;
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
    let docs = app.get("/docs").await;
    assert_eq!(docs.header("x-frame-options"), Some("DENY"));
    let csp = docs.header("content-security-policy").expect("CSP");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let scripts = csp
        .split(';')
        .find(|d| d.trim_start().starts_with("script-src"))
        .expect("script-src");
    assert!(
        scripts.contains("'sha256-") && !scripts.contains("unsafe-inline"),
        "{scripts}"
    );
}

#[tokio::test]
async fn every_invalid_idempotency_key_is_refused_the_same_way_and_moves_no_money() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let market = alice
        .create_market(json!({"name": "Idempotent?", "close_time": "2099-01-01T00:00:00Z"}))
        .await;
    let path = format!("{}/api/markets/{}/positions", app.base, market["id"]);
    let balance = app.balance(alice.id);
    let send = |values: Vec<HeaderValue>| {
        let mut req = app
            .client
            .post(&path)
            .bearer_auth(&alice.token)
            .json(&json!({"outcome": 0, "amount": 5}));
        for value in values {
            req = req.header("idempotency-key", value);
        }
        async move { TestApp::read(req.send().await.expect("send")).await }
    };
    for (name, values) in [
        ("space", vec![HeaderValue::from_static("a b")]),
        (
            "non-ASCII",
            vec![HeaderValue::from_bytes("ключ".as_bytes()).expect("bytes")],
        ),
        (
            "Latin-1 byte",
            vec![HeaderValue::from_bytes(b"k\xe9y").expect("bytes")],
        ),
        (
            "two headers",
            vec![
                HeaderValue::from_static("k1"),
                HeaderValue::from_static("k1"),
            ],
        ),
    ] {
        for _ in 0..2 {
            let reply = send(values.clone()).await;
            assert_eq!(reply.status.as_u16(), 422, "{name}: {}", reply.text);
            reply.assert_field_error(422, "validation_failed", "Idempotency-Key");
        }
    }
    assert_eq!(app.balance(alice.id), balance);
    assert_eq!(app.count("bets"), 0);
    // A valid key still works, once.
    for _ in 0..2 {
        let reply = send(vec![HeaderValue::from_static("good-key")]).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    assert_eq!(app.count("bets"), 1);
}

#[tokio::test]
async fn client_errors_that_used_the_quota_carry_the_rate_limit_headers() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    for reply in [
        app.get("/api/markets/999999").await,
        app.get("/api/markets?status=nope").await,
        alice.post("/api/markets", json!({"name": 5})).await,
        alice
            .send(
                Method::POST,
                "/api/markets",
                None,
                &[("content-type", "application/json")],
            )
            .await,
    ] {
        assert!(reply.status.is_client_error(), "{}", reply.text);
        assert!(reply.header("ratelimit").is_some(), "{:?}", reply.headers);
        assert!(reply.header("ratelimit-policy").is_some());
    }
}
