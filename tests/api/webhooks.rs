//! Webhooks: deliveries reach a real HTTP receiver run by the test, signed the Standard
//! Webhooks way (verified here with HMAC-SHA256 from scratch), retried with backoff until a 2xx
//! or the last attempt; subscriptions belong to their user; private targets are refused
//! without the flag; redirects are not followed; an event committed just before a kill -9 is
//! streamed and delivered after the restart.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use poem::{
    handler,
    http::HeaderMap,
    listener::{Acceptor, Listener, TcpListener},
    web::Data,
    EndpointExt, IntoResponse, Response, Route, Server,
};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{Caller, Process, SseStream, TestApp};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) id: String,
    timestamp: String,
    signature: String,
    pub(crate) body: String,
}

/// A webhook receiver: answers each request with the next status of `script` (the last one
/// once the script runs out), a redirect to `redirect` for 307.
#[derive(Default)]
pub(crate) struct Receiver {
    script: Vec<u16>,
    redirect: Option<String>,
    got: Mutex<Vec<Received>>,
}

impl Receiver {
    pub(crate) fn answering(script: &[u16]) -> Arc<Self> {
        Arc::new(Receiver {
            script: script.to_vec(),
            ..Receiver::default()
        })
    }

    pub(crate) fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (up to 20 s) until `n` requests have come; returns them.
    pub(crate) async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..400 {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the receiver got {} requests, not {n}", self.got().len());
    }
}

#[handler]
async fn receive(receiver: Data<&Arc<Receiver>>, headers: &HeaderMap, body: String) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let n = {
        let mut got = receiver.got.lock().unwrap();
        got.push(Received {
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            body,
        });
        got.len()
    };
    let status = receiver
        .script
        .get(n - 1)
        .or(receiver.script.last())
        .copied()
        .unwrap_or(204);
    let mut response = StatusCode::from_u16(status).unwrap().into_response();
    if let (307, Some(to)) = (status, &receiver.redirect) {
        response
            .headers_mut()
            .insert("location", to.parse().unwrap());
    }
    response
}

/// Serves `receiver`; returns its URL.
pub(crate) async fn serve(receiver: Arc<Receiver>) -> String {
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    let app = Route::new().at("/hook", poem::post(receive)).data(receiver);
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
    format!("http://{addr}/hook")
}

/// Checks a request's signature the way a receiver following Standard Webhooks does.
fn verify(secret: &str, r: &Received) {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", r.id, r.timestamp, r.body).as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(r.signature, expected, "the signature does not verify");
    let sent: i64 = r.timestamp.parse().expect("integer timestamp");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (now - sent).abs() < 120,
        "timestamp {sent} is not now ({now})"
    );
}

async fn subscribe(caller: &Caller, body: Value) -> Value {
    let reply = caller.post("/api/webhooks", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.body["data"].clone()
}

async fn spawn(extra: &[&str]) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let config = TestApp::config(&dir, extra);
    TestApp::spawn_with(dir, config).await
}

/// The subscription's deliveries once none is pending (up to 20 s).
async fn settled_deliveries(caller: &Caller, webhook: &Value) -> Vec<Value> {
    for _ in 0..400 {
        let reply = caller
            .get(&format!("/api/webhooks/{}/deliveries", webhook["id"]))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let rows = reply.body["data"].as_array().unwrap().clone();
        if !rows.is_empty() && rows.iter().all(|d| d["status"] != "pending") {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("deliveries of webhook {} did not settle", webhook["id"]);
}

#[tokio::test]
async fn a_receiver_that_fails_twice_gets_the_delivery_on_the_third_attempt_signed() {
    let app = spawn(&["--webhook-allow-private", "--job-backoff-ms", "50"]).await;
    let alice = app.user("alice").await;
    let market = alice
        .create_market(json!({"name": "Will the hook land?"}))
        .await;
    let receiver = Receiver::answering(&[500, 503, 204]);
    let url = serve(receiver.clone()).await;
    let hook = subscribe(&alice, json!({"url": url, "markets": [market["id"]]})).await;
    let secret = hook["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{hook}");
    assert_eq!(hook["markets"], json!([market["id"]]));
    assert_eq!(hook["events"], Value::Null);

    let bet = alice.stake(&market["id"], 0, 25).await;
    assert_eq!(bet.status, StatusCode::CREATED, "{}", bet.text);

    let got = receiver.wait_for(3).await;
    let first = &got[0];
    for r in &got {
        verify(&secret, r);
        assert_eq!(r.id, first.id, "every attempt carries the same webhook-id");
        assert_eq!(r.body, first.body, "every attempt sends the same body");
    }
    let event: Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(event["type"], "stake.placed");
    assert_eq!(event["market_id"], market["id"]);
    assert_eq!(first.id, format!("evt_{}", event["id"]));
    assert_eq!(event["data"]["bet_id"], bet.body["data"]["id"]);
    assert_eq!(event["data"]["amount"], 25);
    assert_eq!(event["data"]["user_id"], alice.id);
    assert_eq!(event["data"]["pools"], json!([25, 0]));
    assert_eq!(event["data"]["probabilities"], json!([1.0, 0.0]));

    // The delivery record: three attempts, the third answered.
    let rows = settled_deliveries(&alice, &hook).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let d = &rows[0];
    assert_eq!(d["status"], "succeeded");
    assert_eq!(d["event_id"], event["id"]);
    assert_eq!(d["event_type"], "stake.placed");
    let attempts = d["attempts"].as_array().unwrap();
    let codes: Vec<_> = attempts.iter().map(|a| a["status_code"].clone()).collect();
    assert_eq!(codes, [json!(500), json!(503), json!(204)]);
    assert_eq!(attempts[0]["error"], "the receiver answered 500");
    assert_eq!(attempts[2]["error"], Value::Null);
    let ns: Vec<_> = attempts.iter().map(|a| a["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, [1, 2, 3]);
    // Spaced by the backoff: each retry came after the one before.
    let at = |i: usize| {
        time::OffsetDateTime::parse(
            attempts[i]["at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    assert!(at(0) < at(1) && at(1) < at(2));
    assert_eq!(
        receiver.got().len(),
        3,
        "a delivered event is not sent again"
    );
}

#[tokio::test]
async fn a_delivery_that_never_succeeds_ends_failed_after_its_last_attempt() {
    let app = spawn(&[
        "--webhook-allow-private",
        "--job-backoff-ms",
        "20",
        "--webhook-max-attempts",
        "2",
    ])
    .await;
    let bob = app.user("bob").await;
    let market = bob
        .create_market(json!({"name": "Will it ever answer?"}))
        .await;
    let receiver = Receiver::answering(&[500]);
    let hook = subscribe(&bob, json!({"url": serve(receiver.clone()).await})).await;
    bob.stake(&market["id"], 1, 5).await;
    let rows = settled_deliveries(&bob, &hook).await;
    assert_eq!(rows[0]["status"], "failed");
    assert_eq!(rows[0]["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(receiver.got().len(), 2);
    let failed = bob
        .get(&format!(
            "/api/webhooks/{}/deliveries?status=failed",
            hook["id"]
        ))
        .await;
    assert_eq!(failed.body["meta"]["total"], 1, "{}", failed.text);
    let succeeded = bob
        .get(&format!(
            "/api/webhooks/{}/deliveries?status=succeeded",
            hook["id"]
        ))
        .await;
    assert_eq!(succeeded.body["meta"]["total"], 0, "{}", succeeded.text);
}

#[tokio::test]
async fn subscriptions_get_only_the_markets_and_types_they_name() {
    let app = spawn(&["--webhook-allow-private"]).await;
    let carol = app.user("carol").await;
    let one = carol.create_market(json!({"name": "Market one?"})).await;
    let two = carol.create_market(json!({"name": "Market two?"})).await;
    let stakes = Receiver::answering(&[204]);
    let closes = Receiver::answering(&[204]);
    let everything = Receiver::answering(&[204]);
    subscribe(
        &carol,
        json!({"url": serve(stakes.clone()).await, "markets": [one["id"]], "events": ["stake.placed"]}),
    )
    .await;
    subscribe(
        &carol,
        json!({"url": serve(closes.clone()).await, "events": ["market.closed"]}),
    )
    .await;
    subscribe(&carol, json!({"url": serve(everything.clone()).await})).await;

    carol.stake(&one["id"], 0, 1).await;
    carol.stake(&two["id"], 0, 1).await;
    let closed = carol
        .send(
            Method::POST,
            &format!("/api/markets/{}/close", two["id"]),
            None,
            &[],
        )
        .await;
    assert_eq!(closed.status, StatusCode::OK, "{}", closed.text);
    let three = carol.create_market(json!({"name": "Market three?"})).await;

    // Deliveries of different events run as jobs of their own and may arrive in any order:
    // ordered by event id, as the operation's docs tell receivers to.
    let mut all: Vec<Value> = everything
        .wait_for(4)
        .await
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    all.sort_by_key(|e| e["id"].as_i64());
    let kinds: Vec<(String, Value)> = all
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["market_id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("stake.placed".into(), one["id"].clone()),
            ("stake.placed".into(), two["id"].clone()),
            ("market.closed".into(), two["id"].clone()),
            ("market.created".into(), three["id"].clone()),
        ],
        "a subscription to everything gets every event"
    );
    let got = stakes.wait_for(1).await;
    let closed = closes.wait_for(1).await;
    // Give a wrongly dispatched delivery time to arrive before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stakes.got().len(), 1, "{:?}", stakes.got());
    assert_eq!(closes.got().len(), 1, "{:?}", closes.got());
    let stake: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(
        (stake["type"].as_str(), &stake["market_id"]),
        (Some("stake.placed"), &one["id"])
    );
    let close: Value = serde_json::from_str(&closed[0].body).unwrap();
    assert_eq!(close["type"], "market.closed");
    assert_eq!(close["data"]["status"], "closed");
}

#[tokio::test]
async fn subscriptions_belong_to_their_user_and_admins_see_every_one() {
    let app = spawn(&["--webhook-allow-private"]).await;
    let dave = app.user("dave").await;
    let erin = app.user("erin").await;
    let admin = app.with_role("root", "admin").await;
    let market = dave
        .create_market(json!({"name": "Whose hook is it?"}))
        .await;
    let hook = subscribe(
        &dave,
        json!({"url": "http://127.0.0.1:9/hook", "markets": [market["id"]]}),
    )
    .await;
    let path = format!("/api/webhooks/{}", hook["id"]);

    // The secret is shown once.
    let read = dave.get(&path).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    assert!(read.body["data"].get("secret").is_none(), "{}", read.text);
    assert!(!read.text.contains(hook["secret"].as_str().unwrap()));
    let listed = dave.get("/api/webhooks").await;
    assert_eq!(listed.ids(), [hook["id"].as_i64().unwrap()]);
    assert!(!listed.text.contains("whsec_"), "{}", listed.text);

    // Another user neither sees nor deletes it.
    for reply in [
        erin.get(&path).await,
        erin.get(&format!("{path}/deliveries")).await,
        erin.delete(&path).await,
    ] {
        reply.assert_error(404, "not_found");
    }
    assert_eq!(erin.get("/api/webhooks").await.body["meta"]["total"], 0);
    // An admin sees every subscription.
    let all = admin.get("/api/webhooks").await;
    assert_eq!(all.ids(), [hook["id"].as_i64().unwrap()], "{}", all.text);
    assert_eq!(admin.get(&path).await.status, StatusCode::OK);

    // Anonymous: 401.
    for reply in [
        app.get("/api/webhooks").await,
        app.post("/api/webhooks", json!({"url": "http://127.0.0.1:9/"}))
            .await,
    ] {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
    }

    // Deleted: gone for everyone.
    let deleted = dave.delete(&path).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
    dave.get(&path).await.assert_error(404, "not_found");
    dave.delete(&path).await.assert_error(404, "not_found");
    dave.get(&format!("{path}/deliveries"))
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn bad_subscriptions_are_refused_with_the_field_named() {
    let app = spawn(&["--webhook-allow-private"]).await;
    let frank = app.user("frank").await;
    let market = frank.create_market(json!({"name": "Is this valid?"})).await;
    for (body, field) in [
        (json!({"url": "ftp://example.com/hook"}), "url"),
        (json!({"url": "example.com/hook"}), "url"),
        (json!({"url": "https://user:pw@example.com/"}), "url"),
        (json!({"url": "https://example.com/#x"}), "url"),
        (
            json!({"url": "https://example.com/", "events": ["stake.eaten"]}),
            "events",
        ),
        (
            json!({"url": "https://example.com/", "markets": [0]}),
            "markets",
        ),
    ] {
        let reply = frank.post("/api/webhooks", body.clone()).await;
        assert_eq!(reply.status, 422, "{body}: {}", reply.text);
        reply.assert_field_error(422, "validation_failed", field);
    }
    for body in [
        json!({}),
        json!({"url": ""}),
        json!({"url": ["https://example.com/"]}),
        json!({"url": "https://example.com/", "markets": []}),
        json!({"url": "https://example.com/", "extra": 1}),
    ] {
        let reply = frank.post("/api/webhooks", body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text);
        assert_eq!(reply.body["success"], false, "{}", reply.text);
    }
    let unknown = frank
        .post(
            "/api/webhooks",
            json!({"url": "https://example.com/", "markets": [market["id"], 424242]}),
        )
        .await;
    unknown.assert_field_error(422, "unknown_markets", "markets");
    assert!(unknown.text.contains("424242"), "{}", unknown.text);
    let bad_status = frank.get("/api/webhooks/1/deliveries?status=lost").await;
    assert_eq!(bad_status.status, 400, "{}", bad_status.text);

    // At most 20 each.
    for i in 0..20 {
        subscribe(&frank, json!({"url": format!("https://example.com/{i}")})).await;
    }
    frank
        .post("/api/webhooks", json!({"url": "https://example.com/21"}))
        .await
        .assert_error(409, "webhook_limit");
    assert_eq!(app.count("webhooks"), 20);
}

#[tokio::test]
async fn private_loopback_and_link_local_targets_are_refused_without_the_flag() {
    let app = TestApp::spawn().await;
    let gina = app.user("gina").await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.0.0.7/hook",
        "http://172.16.3.4/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::1]/hook",
        "http://[fe80::1]/hook",
        "http://[fd00::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
    ] {
        let reply = gina.post("/api/webhooks", json!({"url": url})).await;
        reply.assert_field_error(422, "validation_failed", "url");
        assert!(
            reply.text.contains("public addresses only") || reply.text.contains("resolve"),
            "{url}: {}",
            reply.text
        );
    }
    assert_eq!(app.count("webhooks"), 0);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let app = spawn(&["--webhook-allow-private", "--webhook-max-attempts", "1"]).await;
    let hank = app.user("hank").await;
    let market = hank
        .create_market(json!({"name": "Where does it go?"}))
        .await;
    let elsewhere = Receiver::answering(&[204]);
    let elsewhere_url = serve(elsewhere.clone()).await;
    let redirecting = Arc::new(Receiver {
        script: vec![307],
        redirect: Some(elsewhere_url),
        ..Receiver::default()
    });
    let hook = subscribe(&hank, json!({"url": serve(redirecting.clone()).await})).await;
    hank.stake(&market["id"], 0, 3).await;
    let rows = settled_deliveries(&hank, &hook).await;
    assert_eq!(rows[0]["status"], "failed", "{rows:?}");
    assert_eq!(rows[0]["attempts"][0]["status_code"], 307);
    assert_eq!(redirecting.got().len(), 1);
    assert!(elsewhere.got().is_empty(), "the redirect was followed");
}

/// The first `n` events of `/api/events?{query}` on `base` (10 s at most for each).
pub(crate) async fn stream_events(
    client: &Client,
    base: &str,
    query: &str,
    n: usize,
) -> Vec<Value> {
    let path = format!("/api/events?{query}");
    let mut stream = match SseStream::open(client, base, &path, None, &[]).await {
        Ok(stream) => stream,
        Err(reply) => panic!("stream {path} refused: {} {}", reply.status, reply.text),
    };
    let mut events = Vec::new();
    for _ in 0..n {
        events.push(stream.expect(Duration::from_secs(10)).await.data);
    }
    events
}

async fn post(client: &Client, url: String, token: Option<&str>, body: Value) -> Value {
    let mut req = client.post(url).json(&body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn an_event_committed_before_a_kill_is_streamed_and_delivered_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let receiver = Receiver::answering(&[204]);
    let url = serve(receiver.clone()).await;
    // First life: the dispatcher looks at the outbox once at start, then not for 10 s.
    let server = Process::start(
        dir.path(),
        &["--webhook-allow-private", "--event-poll-ms", "10000"],
        &client,
    )
    .await;
    let token = server.account(&client, "ivy").await;
    let market = post(
        &client,
        format!("{}/api/markets", server.base),
        Some(&token),
        json!({"name": "Does it survive a kill?"}),
    )
    .await;
    let market_id = market["data"]["id"].as_i64().unwrap();
    let hook = post(
        &client,
        format!("{}/api/webhooks", server.base),
        Some(&token),
        json!({"url": url, "events": ["stake.placed"]}),
    )
    .await;
    let secret = hook["data"]["secret"].as_str().unwrap().to_owned();
    let after = hook["data"]["after_event_id"].as_i64().unwrap();
    let stake = |base: String, amount: i64| {
        let (client, token) = (client.clone(), token.clone());
        async move {
            post(
                &client,
                format!("{base}/api/markets/{market_id}/positions"),
                Some(&token),
                json!({"outcome": 0, "amount": amount}),
            )
            .await
        }
    };
    let first = stake(server.base.clone(), 11).await;
    assert_eq!(first["success"], true, "{first}");
    // Committed, not yet dispatched: killed.
    server.kill();
    assert!(receiver.got().is_empty());

    // Second life: no job workers, so the delivery is made but not sent; killed again.
    let server = Process::start(
        dir.path(),
        &["--webhook-allow-private", "--job-workers", "0"],
        &client,
    )
    .await;
    let second = stake(server.base.clone(), 22).await;
    assert_eq!(second["success"], true, "{second}");
    let deliveries = format!(
        "{}/api/webhooks/{}/deliveries",
        server.base, hook["data"]["id"]
    );
    for _ in 0..200 {
        let page: Value = client
            .get(&deliveries)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if page["meta"]["total"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill();
    assert!(receiver.got().is_empty());

    // Third life: both are delivered, once each, and both are streamed. (Deliveries of two
    // events may arrive in either order: each is a job of its own; receivers order by id.)
    let server = Process::start(dir.path(), &["--webhook-allow-private"], &client).await;
    let got = receiver.wait_for(2).await;
    let mut events: Vec<Value> = got
        .iter()
        .map(|r| {
            verify(&secret, r);
            serde_json::from_str(&r.body).unwrap()
        })
        .collect();
    events.sort_by_key(|e| e["id"].as_i64());
    let amounts: Vec<_> = events.iter().map(|e| e["data"]["amount"].clone()).collect();
    assert_eq!(amounts, [json!(11), json!(22)]);
    let first_id = events[0]["id"].as_i64().unwrap();
    let second_id = events[1]["id"].as_i64().unwrap();
    let streamed = stream_events(&client, &server.base, &format!("after={after}"), 2).await;
    assert_eq!(
        streamed, events,
        "the stream and the webhook carry the same events"
    );
    let resumed = stream_events(&client, &server.base, &format!("after={first_id}"), 1).await;
    assert_eq!(resumed[0]["id"], second_id);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.got().len(), 2, "each event is delivered once");
}
