//! `agora seed`: realistic demo users and markets for exploring the API, written in large
//! transactions so 100,000 markets take seconds.

use std::{fmt, time::Instant};

use rand::{rngs::StdRng, Rng, SeedableRng};
use rusqlite::params;
use time::{Duration, OffsetDateTime};

use crate::{
    app::{open_db, StartError},
    config::{Config, SeedArgs},
    db::DbError,
    domain::user::Role,
    repo::{sqlite_users::insert_user, to_millis, RepoError},
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
        db.write(move |conn| -> Result<(), DbError> {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut market = conn.prepare_cached(
                "INSERT INTO markets (name, description, creator_id, status, close_time, resolution, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) RETURNING id",
            )?;
            let mut outcome = conn.prepare_cached("INSERT INTO outcomes (market_id, idx, label) VALUES (?1, ?2, ?3)")?;
            for _ in 0..count {
                let m = demo_market(&mut rng, now, first_user, users);
                let id: i64 = market.query_row(
                    params![m.name, m.description, m.creator_id, m.status, m.close_time, m.resolution, m.created_at],
                    |r| r.get(0),
                )?;
                for (idx, label) in m.outcomes.iter().enumerate() {
                    outcome.execute(params![id, idx as i64, label])?;
                }
            }
            Ok(())
        })
        .await?;
        done += count;
    }
    db.close().await;
    Ok(SeedReport {
        users,
        markets: args.markets,
        elapsed: started.elapsed(),
    })
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
