//! `agora seed`: realistic demo users and markets for exploring the API, written in large
//! transactions so 100,000 markets take seconds.

use std::{fmt, time::Instant};

use rand::{rngs::StdRng, Rng, SeedableRng};
use rusqlite::params;
use time::{Duration, OffsetDateTime};

use crate::{
    app::{open_db, StartError},
    config::{Config, SeedArgs},
    domain::{authority::Standing, user::Role},
    domain::{trading::Stake, Rejection},
    repo::{
        sqlite::{
            search::encode,
            to_millis,
            trading::{place_stake, settle_market},
            users::insert_user,
        },
        MarketText, RepoError,
    },
    search::embedder::{Embedder, HashEmbedder},
    service::passwords::hash_blocking,
};

/// What a seed run did.
#[derive(Debug)]
pub struct SeedReport {
    /// Users created.
    pub users: u32,
    /// Markets created.
    pub markets: u32,
    /// Wall time.
    pub elapsed: std::time::Duration,
}

impl fmt::Display for SeedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seeded {} users and {} markets in {:.2?}",
            self.users, self.markets, self.elapsed
        )
    }
}

const CHUNK: u32 = 10_000;

/// The password of every demo user (`demo1`, `demo2`, ...): for exploring, never production.
pub const DEMO_PASSWORD: &str = "agora-demo";

const SUBJECTS: &[&str] = &[
    "the Riverside bridge",
    "the city council",
    "the national team",
    "the central bank",
    "Mars Rover 3",
    "the harbour tunnel",
    "the new metro line",
    "the mayor",
    "the stock index",
    "the tech giant",
    "the climate summit",
    "the film festival",
    "the chess champion",
    "the heat pump subsidy",
    "the airline",
];
const EVENTS: &[&str] = &[
    "reopen",
    "win the final",
    "cut interest rates",
    "announce a merger",
    "reach 1,000 users",
    "publish its report",
    "hit a record high",
    "approve the budget",
    "launch on schedule",
    "be re-elected",
    "break the world record",
    "sign the treaty",
    "double its revenue",
    "open to the public",
    "go bankrupt",
];
const OUTCOME_SETS: &[&[&str]] = &[
    &["YES", "NO"],
    &["YES", "NO"],
    &["YES", "NO"],
    &["Before Q2", "Q2", "Q3", "Q4", "Later"],
    &["Under 10%", "10-20%", "20-30%", "Over 30%"],
    &["Home win", "Draw", "Away win"],
];

/// Creates demo users, then markets, in chunks of [`CHUNK`] per transaction.
pub async fn run(config: &Config, args: &SeedArgs) -> Result<SeedReport, StartError> {
    let started = Instant::now();
    let db = open_db(config)?;
    let users = args.users.unwrap_or((args.markets / 10).max(10)).max(1);
    let now = OffsetDateTime::now_utc();
    let password_hash =
        hash_blocking(DEMO_PASSWORD).map_err(|e| StartError::Init(e.to_string()))?;
    let grant = config.signup_grant;
    let first_user = db
        .write(move |conn| -> Result<i64, RepoError> {
            let base: i64 =
                conn.query_row("SELECT coalesce(max(id), 0) FROM users", [], |r| r.get(0))?;
            let mut first = None;
            for i in 1..=i64::from(users) {
                let id = insert_user(
                    conn,
                    &format!("demo{}", base + i),
                    &password_hash,
                    Role::User,
                    grant,
                    to_millis(now),
                )?;
                first.get_or_insert(id);
            }
            Ok(first.unwrap_or(base + 1))
        })
        .await
        .map_err(|e| StartError::Init(e.to_string()))?;

    let mut done = 0;
    while done < args.markets {
        let count = CHUNK.min(args.markets - done);
        let seed = u64::from(done);
        db.write(move |conn| -> Result<(), RepoError> {
            // Bulk loading touches every index at random; a large page cache keeps it in memory.
            conn.execute_batch("PRAGMA cache_size = -262144")?;
            let mut rng = StdRng::seed_from_u64(seed);
            let embedder = HashEmbedder::default();
            for _ in 0..count {
                let m = demo_market(&mut rng, now, first_user, users);
                let id = seed_market(conn, &mut rng, &m, first_user, users)?;
                index_market(conn, &embedder, id, &m)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| StartError::Init(e.to_string()))?;
        done += count;
    }
    db.close().await;
    Ok(SeedReport {
        users,
        markets: args.markets,
        elapsed: started.elapsed(),
    })
}

/// Stores the built-in embedder's vector of a demo market at once (a server using another
/// embedder re-indexes seeded markets through jobs when it starts).
fn index_market(
    conn: &rusqlite::Connection,
    embedder: &HashEmbedder,
    id: i64,
    m: &DemoMarket,
) -> Result<(), RepoError> {
    let text = MarketText {
        name: m.name.clone(),
        description: Some(m.description.clone()),
    };
    let vector = embedder.embed_text(&text.joined());
    conn.prepare_cached(
        "INSERT INTO market_vectors (market_id, model, content_hash, vector, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        id,
        embedder.model(),
        text.content_hash(embedder.model()),
        encode(&vector),
        m.created_at
    ])?;
    Ok(())
}

/// Creates one demo market the way the API would: open, with a few stakes from random users
/// (a stake the user cannot afford is skipped), then moved to its final status, settling it
/// when resolved or cancelled. The seeded database keeps every money invariant.
fn seed_market(
    conn: &rusqlite::Connection,
    rng: &mut StdRng,
    m: &DemoMarket,
    first_user: i64,
    users: u32,
) -> Result<i64, RepoError> {
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO markets (name, description, creator_id, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?4) RETURNING id",
        )?
        .query_row(
            params![m.name, m.description, m.creator_id, m.created_at],
            |r| r.get(0),
        )?;
    let mut outcome =
        conn.prepare_cached("INSERT INTO outcomes (market_id, idx, label) VALUES (?1, ?2, ?3)")?;
    for (idx, label) in m.outcomes.iter().enumerate() {
        outcome.execute(params![id, idx as i64, label])?;
    }
    for _ in 0..rng.random_range(0..4) {
        let user = first_user + rng.random_range(0..i64::from(users));
        let stake = Stake {
            outcome: rng.random_range(0..m.outcomes.len()) as u32,
            amount: rng.random_range(1..=20) * 5,
        };
        match place_stake(conn, user, id, &stake, None) {
            Ok(_) | Err(RepoError::Refused(Rejection::InsufficientFunds { .. })) => {}
            Err(e) => return Err(e),
        }
    }
    match m.status {
        "resolved" => {
            settle_market(conn, id, m.resolution.map(|w| (w as u32, Standing::Staff)))?;
        }
        "cancelled" => {
            settle_market(conn, id, None)?;
        }
        "closed" => {
            conn.prepare_cached("UPDATE markets SET status = 'closed' WHERE id = ?1")?
                .execute([id])?;
        }
        _ => {}
    }
    conn.prepare_cached(
        "UPDATE markets SET close_time = ?2, version = 1, updated_at = created_at WHERE id = ?1",
    )?
    .execute(params![id, m.close_time])?;
    Ok(id)
}

struct DemoMarket {
    name: String,
    description: String,
    creator_id: i64,
    status: &'static str,
    close_time: Option<i64>,
    resolution: Option<i64>,
    created_at: i64,
    outcomes: &'static [&'static str],
}

fn demo_market(rng: &mut StdRng, now: OffsetDateTime, first_user: i64, users: u32) -> DemoMarket {
    let subject = SUBJECTS[rng.random_range(0..SUBJECTS.len())];
    let event = EVENTS[rng.random_range(0..EVENTS.len())];
    let created = now - Duration::minutes(rng.random_range(1..180 * 24 * 60));
    let horizon = now + Duration::days(rng.random_range(1..720));
    let name = format!("Will {subject} {event} by {}?", horizon.date());
    let outcomes = OUTCOME_SETS[rng.random_range(0..OUTCOME_SETS.len())];
    let roll = rng.random_range(0..100);
    let (status, close_time, resolution) = match roll {
        0..80 => ("active", (roll % 4 != 0).then(|| to_millis(horizon)), None),
        80..90 => (
            "closed",
            Some(to_millis(created + (now - created) / 2)),
            None,
        ),
        90..95 => (
            "resolved",
            Some(to_millis(created + (now - created) / 2)),
            Some(rng.random_range(0..outcomes.len()) as i64),
        ),
        _ => ("cancelled", None, None),
    };
    DemoMarket {
        description: format!(
            "Resolves to the outcome matching what {subject} does by {}, as reported by two independent sources.",
            horizon.date()
        ),
        name,
        creator_id: first_user + rng.random_range(0..i64::from(users)),
        status,
        close_time,
        resolution,
        created_at: to_millis(created),
        outcomes,
    }
}
