//! Live markets over HTTP: the event stream (`GET /api/events`: delivery of a stake within 1 s,
//! resuming with `Last-Event-ID` or `?after=` exactly once and in order, the market filter,
//! every kind of change, refusals, the per-client limit, expiry after pruning, the end of a
//! stream at shutdown, a reader that falls behind dropped with its last id and resuming after
//! it).

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{
    on_postgres, wait_until, Caller, Next, Process, SseEvent, SseStream, TestApp,
};

/// The deadline the issue sets for a stake's event to reach an open stream.
const LIVE: Duration = Duration::from_secs(1);
/// How long a test waits for anything else before it fails (never a measure of speed).
const WAIT: Duration = Duration::from_secs(10);

async fn market(owner: &Caller, name: &str) -> i64 {
    owner
        .create_market(json!({"name": name, "outcomes": ["YES", "NO"]}))
        .await["id"]
        .as_i64()
        .expect("market id")
}

/// Stakes and returns the bet's id.
async fn stake(caller: &Caller, market: i64, outcome: u32, amount: i64) -> i64 {
    let reply = caller.stake(&json!(market), outcome, amount).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.body["data"]["id"].as_i64().expect("bet id")
}

/// Reads messages until the `stake.placed` of `bet`, within `within` in all.
async fn until_bet(stream: &mut SseStream, bet: i64, within: Duration) -> SseEvent {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = match stream.next(left).await {
            Next::Event(event) => event,
            other => panic!("no stake.placed of bet {bet} within {within:?}: {other:?}"),
        };
        if event.event == "stake.placed" && event.data["data"]["bet_id"] == json!(bet) {
            return event;
        }
    }
}

/// Asserts the next messages are the `stake.placed` of `bets`, in that order.
async fn expect_bets(stream: &mut SseStream, bets: &[i64]) -> i64 {
    let mut last = 0;
    for &bet in bets {
        let event = stream.expect(WAIT).await;
        assert_eq!(event.event, "stake.placed", "{event:?}");
        assert_eq!(event.data["data"]["bet_id"], json!(bet), "{event:?}");
        assert!(event.seq() > last, "ids increase: {event:?} after {last}");
        last = event.seq();
    }
    last
}

#[tokio::test]
async fn a_stake_reaches_an_open_stream_within_a_second_of_its_response() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let id = market(&alice, "Will the stream be quick?").await;
    let mut stream = SseStream::connect(&app, "/api/events", &[]).await;

    let reply = alice.stake(&json!(id), 1, 250).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let bet = reply.body["data"]["id"].as_i64().unwrap();
    let event = until_bet(&mut stream, bet, LIVE).await;

    let body = &event.data;
    assert_eq!(
        body["id"].as_i64(),
        Some(event.seq()),
        "id: is the event's id"
    );
    assert_eq!(body["type"], "stake.placed");
    assert_eq!(body["market_id"], json!(id));
    assert!(body["created_at"].is_string());
    let m = app.get(&format!("/api/markets/{id}")).await.body["data"].clone();
    assert_eq!(
        body["data"],
        json!({
            "bet_id": bet,
            "user_id": alice.id,
            "outcome": 1,
            "amount": 250,
            "version": m["version"],
            "volume": 250,
            "pools": [0, 250],
            "probabilities": [0.0, 1.0],
        })
    );
}

#[tokio::test]
async fn a_client_that_resumes_gets_what_it_missed_once_and_in_order_then_goes_on_live() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let id = market(&alice, "Will resuming work?").await;
    let mut stream = SseStream::connect(&app, "/api/events", &[]).await;
    let first = stake(&alice, id, 0, 10).await;
    let mut last = until_bet(&mut stream, first, WAIT).await.seq();
    drop(stream);

    for how in ["header", "query", "both"] {
        let mut missed = Vec::new();
        for n in 0..5 {
            missed.push(stake(&alice, id, n % 2, 1 + n as i64).await);
        }
        let last_text = last.to_string();
        let mut stream = match how {
            "header" => {
                SseStream::connect(&app, "/api/events", &[("Last-Event-ID", &last_text)]).await
            }
            "query" => SseStream::connect(&app, &format!("/api/events?after={last}"), &[]).await,
            // The header wins: `after=0` would replay the market's creation first.
            _ => {
                SseStream::connect(
                    &app,
                    "/api/events?after=0",
                    &[("Last-Event-ID", &last_text)],
                )
                .await
            }
        };
        let replayed = expect_bets(&mut stream, &missed).await;
        assert!(replayed > last, "{how}");
        // Nothing more was replayed: the next message is a stake placed now.
        let sixth = stake(&alice, id, 1, 7).await;
        let live = expect_bets(&mut stream, &[sixth]).await;
        assert!(live > replayed, "{how}");
        last = live;
    }
}

#[tokio::test]
async fn a_stream_of_some_markets_carries_only_their_events() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let (a, b, c) = (
        market(&alice, "Market A").await,
        market(&alice, "Market B").await,
        market(&alice, "Market C").await,
    );
    let filter = format!("/api/events?markets={a},{c}");
    let mut live = SseStream::connect(&app, &filter, &[]).await;
    let mut wanted = Vec::new();
    for (m, outcome) in [(b, 0), (a, 1), (b, 1), (c, 0), (b, 0), (a, 0)] {
        let bet = stake(&alice, m, outcome, 5).await;
        if m != b {
            wanted.push(bet);
        }
    }
    // A live stream starts where the server's tail of the outbox is, which may be just before
    // the creations: they may come first, but only A's and C's.
    let mut seen = Vec::new();
    while seen.last() != wanted.last() {
        let event = live.expect(WAIT).await;
        let m = event.data["market_id"].as_i64();
        assert!(m == Some(a) || m == Some(c), "{event:?}");
        if event.event == "stake.placed" {
            seen.push(event.data["data"]["bet_id"].as_i64().unwrap());
        }
    }
    assert_eq!(seen, wanted);

    // A replay is filtered too: the creations of A and C, then their stakes.
    let mut replay = SseStream::connect(&app, &format!("{filter}&after=0"), &[]).await;
    for m in [a, c] {
        let created = replay.expect(WAIT).await;
        assert_eq!(
            (created.event.as_str(), &created.data["market_id"]),
            ("market.created", &json!(m))
        );
    }
    expect_bets(&mut replay, &wanted).await;
    let late = stake(&alice, b, 0, 1).await;
    let later = stake(&alice, c, 0, 1).await;
    assert!(late < later);
    expect_bets(&mut replay, &[later]).await;
}

#[tokio::test]
async fn every_change_to_a_market_is_an_event_with_its_market_and_state() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let live = SseStream::connect(&app, "/api/events", &[]).await;
    // (type, market, what `data` must hold)
    let mut expected: Vec<(&str, i64, Value)> = Vec::new();

    let one = alice
        .create_market(json!({"name": "Kinds one", "outcomes": ["YES", "NO"]}))
        .await;
    let one_id = one["id"].as_i64().unwrap();
    expected.push((
        "market.created",
        one_id,
        json!({"name": "Kinds one", "status": "active", "version": one["version"], "volume": 0,
               "pools": [0, 0], "probabilities": [0.5, 0.5]}),
    ));
    let path = format!("/api/markets/{one_id}");
    let patched = alice
        .patch(&path, json!({"name": "Kinds one, renamed"}))
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    expected.push((
        "market.updated",
        one_id,
        json!({"name": "Kinds one, renamed", "status": "active",
               "version": patched.body["data"]["version"]}),
    ));
    let bet = stake(&alice, one_id, 0, 40).await;
    expected.push((
        "stake.placed",
        one_id,
        json!({"bet_id": bet, "user_id": alice.id, "outcome": 0, "amount": 40, "volume": 40,
               "pools": [40, 0], "probabilities": [1.0, 0.0]}),
    ));
    let closed = alice.post(&format!("{path}/close"), json!({})).await;
    assert_eq!(closed.status, StatusCode::OK, "{}", closed.text);
    expected.push(("market.closed", one_id, json!({"status": "closed"})));
    let resolved = alice
        .post(&format!("{path}/resolve"), json!({"outcome": 0}))
        .await;
    assert_eq!(resolved.status, StatusCode::OK, "{}", resolved.text);
    expected.push((
        "market.resolved",
        one_id,
        json!({"status": "resolved", "resolution": 0}),
    ));

    let two = market(&alice, "Kinds two").await;
    expected.push(("market.created", two, json!({"name": "Kinds two"})));
    for (who, outcome) in [(&alice, 0), (&bob, 1)] {
        let bet = stake(who, two, outcome, 25).await;
        expected.push((
            "stake.placed",
            two,
            json!({"bet_id": bet, "user_id": who.id}),
        ));
    }
    let cancelled = alice
        .post(&format!("/api/markets/{two}/cancel"), json!({}))
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text);
    expected.push(("market.cancelled", two, json!({"status": "cancelled"})));

    let three = market(&alice, "Kinds three").await;
    expected.push(("market.created", three, json!({"name": "Kinds three"})));
    let deleted = alice.delete(&format!("/api/markets/{three}")).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
    expected.push(("market.deleted", three, json!({})));

    let replay = SseStream::connect(&app, "/api/events?after=0", &[]).await;
    for (name, mut stream) in [("live", live), ("replay", replay)] {
        let mut last = 0;
        for (kind, market, data) in &expected {
            let event = stream.expect(WAIT).await;
            let body = &event.data;
            assert_eq!(
                (event.event.as_str(), &body["market_id"]),
                (*kind, &json!(market)),
                "{name}: {event:?}"
            );
            assert_eq!(body["type"], json!(kind));
            assert_eq!(body["id"].as_i64(), Some(event.seq()));
            assert!(event.seq() > last, "{name}: ids strictly increase");
            last = event.seq();
            for (key, value) in data.as_object().unwrap() {
                assert_eq!(&body["data"][key], value, "{name}: {kind} data.{key}");
            }
            if *kind == "market.deleted" {
                assert_eq!(body["data"], json!({}));
            }
        }
        if name == "replay" {
            // No change went unrecorded and none is recorded twice.
            let n = app.count("events");
            assert_eq!(n, expected.len() as i64);
        }
    }
}

#[tokio::test]
async fn malformed_stream_requests_are_refused_with_json_naming_the_field() {
    let app = TestApp::spawn().await;
    let many: Vec<String> = (1..=101).map(|i| i.to_string()).collect();
    for markets in ["abc", "0", "1,,2", "-3", &many.join(",")] {
        let reply = SseStream::open(
            &app.client,
            &app.base,
            &format!("/api/events?markets={markets}"),
            None,
            &[],
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("markets={markets} was accepted"));
        reply.assert_field_error(422, "validation_failed", "markets");
    }
    let hundred: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
    let path = format!("/api/events?markets={}", hundred.join(","));
    assert!(SseStream::open(&app.client, &app.base, &path, None, &[])
        .await
        .is_ok());

    for after in ["-1", "x"] {
        let reply = SseStream::open(
            &app.client,
            &app.base,
            &format!("/api/events?after={after}"),
            None,
            &[],
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("after={after} was accepted"));
        reply.assert_field_error(400, "invalid_parameter", "after");
    }
    for id in ["abc", "-5", "1.5"] {
        let reply = SseStream::open(
            &app.client,
            &app.base,
            "/api/events",
            None,
            &[("Last-Event-ID", id)],
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("Last-Event-ID {id} was accepted"));
        reply.assert_field_error(422, "validation_failed", "Last-Event-ID");
    }
}

#[tokio::test]
async fn a_client_holds_at_most_its_limit_of_streams_and_a_closed_one_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let config = TestApp::config(
        &dir,
        &[
            "--event-streams-per-client",
            "2",
            "--event-heartbeat-secs",
            "1",
        ],
    );
    let app = TestApp::spawn_with(dir, config).await;
    let alice = app.user("alice").await;
    let first = SseStream::connect(&app, "/api/events", &[]).await;
    let _second = SseStream::connect(&app, "/api/events?after=0", &[]).await;
    let refused = SseStream::open(&app.client, &app.base, "/api/events", None, &[])
        .await
        .err()
        .expect("a third stream is refused");
    refused.assert_error(429, "too_many_streams");
    let retry: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry >= 1, "{retry}");

    // A signed-in user is a client of its own, whatever its address.
    let mine = SseStream::open(
        &app.client,
        &app.base,
        "/api/events",
        Some(&alice.token),
        &[],
    )
    .await;
    assert!(mine.is_ok(), "alice's own streams are counted apart");

    drop(first);
    // The server learns of the closed connection at its next write (a heartbeat, 1 s here).
    let freed = wait_until(WAIT, || async {
        match SseStream::open(&app.client, &app.base, "/api/events", None, &[]).await {
            Ok(_) => true,
            Err(reply) => {
                reply.assert_error(429, "too_many_streams");
                false
            }
        }
    })
    .await;
    assert!(freed, "closing a stream frees its slot");
}

#[tokio::test]
async fn resuming_from_before_what_was_pruned_is_told_so_first() {
    let dir = tempfile::tempdir().unwrap();
    let config = TestApp::config(
        &dir,
        &["--job-poll-ms", "50", "--event-retention-hours", "1"],
    );
    let app = TestApp::spawn_with(dir, config).await;
    let alice = app.user("alice").await;
    let id = market(&alice, "Will old events go?").await;
    let bets = [
        stake(&alice, id, 0, 1).await,
        stake(&alice, id, 1, 2).await,
        stake(&alice, id, 0, 3).await,
    ];
    let db = app.db();
    let seqs: Vec<i64> = db.query_rows("SELECT seq FROM events ORDER BY seq", &[]);
    assert_eq!(seqs.len(), 4, "a creation and three stakes");
    // The creation and the first two stakes are older than the retention (1 h).
    let cut = seqs[2];
    db.execute(
        "UPDATE events SET created_at = created_at - 7200000 WHERE seq <= $1",
        &[&cut],
    );
    // The hourly prune job ran at start-up; make its next run due now.
    let due = wait_until(WAIT, || async {
        app.db().execute(
            "UPDATE jobs SET run_at = 0 WHERE kind = 'prune_events' AND status = 'queued'",
            &[],
        ) == 1
    })
    .await;
    assert!(due, "the periodic prune_events job is queued");
    let pruned = wait_until(WAIT, || async {
        app.db()
            .query_one::<i64>("SELECT pruned_through FROM event_state", &[])
            == cut
    })
    .await;
    assert!(pruned, "the job pruned the old events");
    assert_eq!(app.count("events"), 1);

    let mut stream = SseStream::connect(&app, "/api/events?after=1", &[]).await;
    let expired = stream.expect(WAIT).await;
    assert_eq!(expired.event, "stream.expired", "{expired:?}");
    assert_eq!(expired.seq(), cut);
    assert_eq!(
        expired.data,
        json!({"id": cut, "type": "stream.expired", "data": {"after": 1, "pruned_through": cut}})
    );
    expect_bets(&mut stream, &bets[2..]).await;
    let live = stake(&alice, id, 1, 4).await;
    expect_bets(&mut stream, &[live]).await;

    // Resuming from the last pruned event itself misses nothing.
    let cut_text = cut.to_string();
    let mut stream = SseStream::connect(&app, "/api/events", &[("Last-Event-ID", &cut_text)]).await;
    expect_bets(&mut stream, &[bets[2], live]).await;
}

#[tokio::test]
async fn sigterm_ends_an_open_stream_and_the_server_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut server = Process::start(dir.path(), &[], &client).await;
    let token = server.account(&client, "alice").await;
    let created: Value = client
        .post(format!("{}/api/markets", server.base))
        .bearer_auth(&token)
        .json(&json!({"name": "Will shutdown be clean?"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(created["data"]["id"].is_i64(), "{created}");
    let mut stream = SseStream::open(&client, &server.base, "/api/events?after=0", None, &[])
        .await
        .unwrap_or_else(|reply| panic!("{}", reply.text));
    assert_eq!(stream.expect(WAIT).await.event, "market.created");

    server.terminate();
    match stream.next(WAIT).await {
        Next::Ended => {}
        other => panic!("the stream goes on after SIGTERM: {other:?}"),
    }
    let status = server.exited(WAIT).await.expect("the server exits");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_client_that_reads_too_slowly_is_dropped_with_its_last_id_and_resumes_after_it() {
    // A ring of 64: a stream further behind than that is dropped.
    let dir = tempfile::tempdir().unwrap();
    let config = TestApp::config(&dir, &["--event-buffer", "64"]);
    let app = TestApp::spawn_with(dir, config).await;
    let alice = app.user("alice").await;
    let id = market(&alice, "Too fast to read?").await;
    let mut slow = SseStream::connect(&app, "/api/events", &[]).await;
    // A burst of events far past the ring, written at once into the outbox, while the client
    // reads nothing: the stream falls behind the ring.
    let n: i64 = 20_000;
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let sql = if on_postgres() {
        "INSERT INTO events (kind, market_id, data, created_at)
         SELECT 'market.updated', $1, '{}', $2 FROM generate_series(1, $3::bigint)"
    } else {
        "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < $3)
         INSERT INTO events (kind, market_id, data, created_at)
         SELECT 'market.updated', $1, '{}', $2 FROM k"
    };
    assert_eq!(app.db().execute(sql, &[&id, &now, &n]), n as u64);
    let newest: i64 = app.db().query_one("SELECT max(seq) FROM events", &[]);
    // The server reads the burst and keeps writing while it can.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut read = Vec::new();
    let last = loop {
        match slow.next(WAIT).await {
            Next::Event(e) if e.event == "stream.dropped" => {
                break e.data["data"]["last"].as_i64().expect("the last id");
            }
            Next::Event(e) => read.push(e.seq()),
            other => panic!("no stream.dropped after {} events: {other:?}", read.len()),
        }
    };
    assert!(
        matches!(slow.next(WAIT).await, Next::Ended),
        "a dropped stream ends"
    );
    // Dropped before the end (a burst this far past the ring may drop it before it was sent
    // anything: `last` is then where it started).
    assert!(
        last < newest && read.len() < n as usize,
        "dropped at {last}"
    );
    if let Some(&sent) = read.last() {
        assert_eq!(last, sent, "`last` is the last event it was sent");
    }
    assert!(read.windows(2).all(|w| w[0] < w[1]));

    // Resuming after `last` misses nothing: the rest, in order, once.
    let mut resumed = SseStream::connect(&app, &format!("/api/events?after={last}"), &[]).await;
    let mut expected = last + 1;
    while expected <= newest {
        let e = resumed.expect(WAIT).await;
        assert_eq!(e.seq(), expected, "resumed after {last}");
        expected += 1;
    }
}
