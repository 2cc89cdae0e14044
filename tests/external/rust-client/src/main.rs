//! A scenario against a running agora server ($AGORA_URL) through a client that progenitor
//! generates at build time (build.rs) from openapi/openapi.json.
//!
//! Each step prints one line; any surprise ends the run with a message and exit status 1.

use std::time::{SystemTime, UNIX_EPOCH};

use agora::types;
use progenitor_client::Error;

mod agora {
    include!(concat!(env!("OUT_DIR"), "/agora_client.rs"));
}

type Result<T, E = String> = std::result::Result<T, E>;

/// Fails the scenario with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Describes a failed call: the typed error body for documented error statuses, else the error.
fn describe(step: &str, e: Error<types::ErrorBody>) -> String {
    match e {
        Error::ErrorResponse(r) => format!(
            "{step}: HTTP {} {} ({}): {}",
            r.status().as_u16(),
            r.code,
            r.request_id,
            r.error
        ),
        other => {
            // reqwest's own message leaves out the cause (e.g. "connection refused").
            let mut msg = format!("{step}: {other}");
            let mut source = std::error::Error::source(&other);
            while let Some(cause) = source {
                let text = cause.to_string();
                if !msg.contains(&text) {
                    msg += &format!(": {text}");
                }
                source = cause.source();
            }
            msg
        }
    }
}

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e| format!("{what} {s:?} rejected by the generated type: {e}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    match scenario().await {
        Ok(()) => println!("rust-client: scenario passed"),
        Err(e) => {
            eprintln!("rust-client: FAILED: {e}");
            std::process::exit(1);
        }
    }
}

async fn scenario() -> Result<()> {
    let base = std::env::var("AGORA_URL").map_err(|_| "AGORA_URL is not set".to_string())?;
    let base = base.trim_end_matches('/');
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let suffix = format!(
        "{:x}{:x}",
        now.as_micros() & 0xff_ffff_ffff,
        std::process::id()
    );
    let username = format!("rc_{suffix}");
    let password = "rust-client-pass";
    let word = format!("progenitor{suffix}");

    let anon = agora::Client::new(base);

    // 1. Register.
    let body = types::RegisterBody {
        username: parse("username", &username)?,
        password: parse("password", password)?,
    };
    let user = anon
        .register_user(&body)
        .await
        .map_err(|e| describe("register", e))?
        .into_inner()
        .data;
    ensure!(
        user.username == username,
        "register: got username {}",
        user.username
    );
    println!(
        "1. registered {} (id {}, role {}, balance {})",
        user.username, user.id, user.role, user.balance
    );
    let balance = user.balance;

    // 2. Log in; every later call sends the access token as a default header.
    let body = types::LoginBody {
        username: parse("username", &username)?,
        password: parse("password", password)?,
    };
    let session = anon
        .login_user(&body)
        .await
        .map_err(|e| describe("login", e))?
        .into_inner()
        .data;
    ensure!(
        session.token_type == "Bearer",
        "login: token_type {}",
        session.token_type
    );
    let mut auth =
        reqwest::header::HeaderValue::try_from(format!("Bearer {}", session.access_token))
            .map_err(|e| format!("login: access token is not a header value: {e}"))?;
    auth.set_sensitive(true);
    let headers = reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, auth)]);
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .map_err(|e| format!("reqwest client: {e}"))?;
    let client = agora::Client::new_with_client(base, http);
    println!(
        "2. logged in: access token for user {} (expires in {}s)",
        session.user.id, session.expires_in
    );

    // 3. Create a market whose name holds the unique word.
    let name = format!("Will the {word} client scenario pass?");
    let body = types::CreateMarketBody {
        name: parse("market name", &name)?,
        description: Some(parse(
            "description",
            "Created by tests/external/rust-client.",
        )?),
        outcomes: Some(vec![parse("outcome", "YES")?, parse("outcome", "NO")?]),
        close_time: None,
        initial_stake: None,
    };
    let market = client
        .create_market(&body)
        .await
        .map_err(|e| describe("create market", e))?
        .into_inner()
        .data;
    ensure!(
        market.name == name,
        "create market: got name {:?}",
        market.name
    );
    ensure!(
        market.creator.id == user.id,
        "create market: creator {} is not {}",
        market.creator.id,
        user.id
    );
    ensure!(
        market.volume == 0,
        "create market: volume {}",
        market.volume
    );
    println!(
        "3. created market {} {:?} ({}, outcomes {})",
        market.id,
        market.name,
        market.status,
        market
            .outcomes
            .iter()
            .map(|o| o.label.as_str())
            .collect::<Vec<_>>()
            .join("/")
    );
    let market_id = std::num::NonZeroU64::try_from(market.id as u64)
        .map_err(|_| format!("create market: id {} is not positive", market.id))?;

    // 4. Stake on outcome 1 ("NO").
    let stake = 25;
    let body = types::StakeBody {
        outcome: 1,
        amount: std::num::NonZeroU64::new(stake).unwrap(),
    };
    let bet = client
        .create_position(market_id, None, &body)
        .await
        .map_err(|e| describe("stake", e))?
        .into_inner()
        .data;
    ensure!(
        bet.market_id == market.id && bet.outcome == 1 && bet.amount == stake as i64,
        "stake: unexpected bet {bet:?}"
    );
    ensure!(
        bet.balance_after == balance - stake as i64,
        "stake: balance_after {} != {} - {stake}",
        bet.balance_after,
        balance
    );
    println!(
        "4. staked {} on outcome {} of market {} (bet {}, balance now {})",
        bet.amount, bet.outcome, bet.market_id, bet.id, bet.balance_after
    );

    // 5. Read the market back: the stake shows in the pool and the volume.
    let read = client
        .get_market(market_id, None)
        .await
        .map_err(|e| describe("get market", e))?
        .into_inner()
        .data;
    let pools: Vec<i64> = read.outcomes.iter().map(|o| o.pool).collect();
    ensure!(
        pools == [0, stake as i64],
        "get market: pools {pools:?}, want [0, {stake}]"
    );
    ensure!(
        read.volume == stake as i64,
        "get market: volume {}",
        read.volume
    );
    ensure!(
        read.version > market.version,
        "get market: version {} not above {}",
        read.version,
        market.version
    );
    println!(
        "5. read market {} back: volume {}, pools {:?}, P(NO) {:.2}, version {}",
        read.id, read.volume, pools, read.outcomes[1].probability, read.version
    );

    // 6. Search for the unique word.
    let hits = client
        .search_markets(None, None, &parse("q", &word)?, None)
        .await
        .map_err(|e| describe("search", e))?
        .into_inner();
    let hit = hits.data.iter().find(|h| h.market.id == market.id);
    ensure!(
        hit.is_some(),
        "search {word:?}: market {} not among {} hits",
        market.id,
        hits.data.len()
    );
    let hit = hit.unwrap();
    println!(
        "6. search {:?} ({} mode): market {} found (score {:.4}, keyword rank {:?}) among {} hit(s)",
        word,
        hits.meta.mode,
        hit.market.id,
        hit.score,
        hit.keyword_rank,
        hits.data.len()
    );

    // 7. Staking more than the balance: 409 with the typed error body.
    let too_much = bet.balance_after as u64 + 1_000;
    let body = types::StakeBody {
        outcome: 0,
        amount: std::num::NonZeroU64::new(too_much).unwrap(),
    };
    match client.create_position(market_id, None, &body).await {
        Err(Error::ErrorResponse(r)) => {
            ensure!(
                r.status().as_u16() == 409,
                "overdraw: HTTP {}, want 409",
                r.status()
            );
            ensure!(
                r.code == "insufficient_funds" && !r.success,
                "overdraw: error body {:?}",
                r.into_inner()
            );
            println!(
                "7. staking {too_much} (more than the balance) refused as expected: HTTP {} {}: {}",
                r.status().as_u16(),
                r.code,
                r.error
            );
        }
        Err(e) => return Err(describe("overdraw", e)),
        Ok(r) => return Err(format!("overdraw: accepted, HTTP {}", r.status())),
    }

    // 8. The market's events, replayed from the start as Server-Sent Events: its creation,
    // then the stake, each `data:` line an EventView of the generated types.
    let mut stream = client
        .stream_events(Some(0), Some(&market.id.to_string()), None)
        .await
        .map_err(|e| describe("stream events", e))?
        .into_inner()
        .into_inner();
    let (mut text, mut events) = (String::new(), Vec::<types::EventView>::new());
    while events.len() < 2 {
        let chunk = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx))
            .await
            .ok_or("stream events: the stream ended")?
            .map_err(|e| format!("stream events: {e}"))?;
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let message: String = text.drain(..end + 2).collect();
            if let Some(data) = message.lines().find_map(|l| l.strip_prefix("data: ")) {
                events.push(
                    serde_json::from_str(data)
                        .map_err(|e| format!("stream events: {data} is not an EventView: {e}"))?,
                );
            }
        }
    }
    let kinds: Vec<&str> = events.iter().map(|e| e.type_.as_str()).collect();
    ensure!(
        kinds == ["market.created", "stake.placed"],
        "stream events: got {kinds:?}"
    );
    ensure!(
        events[1].data.amount == Some(stake as i64) && events[1].market_id == Some(market.id),
        "stream events: stake event {:?}",
        events[1]
    );
    println!(
        "8. streamed market {}'s events: {kinds:?} (ids {} and {}), P after the stake {:?}",
        market.id, events[0].id, events[1].id, events[1].data.probabilities
    );

    // 9. Its probability history: one point per hour, the last one after the stake.
    let history = client
        .get_market_history(market_id, None, Some(types::IntervalView::X1h), None)
        .await
        .map_err(|e| describe("history", e))?
        .into_inner()
        .data;
    let last = history.points.last().ok_or("history: no points")?;
    ensure!(
        last.probabilities == [0.0, 1.0] && last.volume == stake as i64,
        "history: last point {last:?}"
    );
    println!(
        "9. history of market {} by {}: {} point(s), the last {:?}",
        market.id,
        history.interval,
        history.points.len(),
        last.probabilities
    );
    Ok(())
}
