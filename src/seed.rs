//! `agora seed`: realistic demo users and markets for exploring the API, written through the
//! [`SeedRepository`](crate::repo::SeedRepository) in large transactions, so 100,000 markets
//! take seconds.

use std::{fmt, time::Instant};

use rand::{rngs::StdRng, Rng, SeedableRng};
use time::{Duration, OffsetDateTime};

use crate::{
    app::{open_storage, StartError},
    config::{Config, EmbedderKind, SeedArgs},
    domain::trading::Stake,
    repo::{DemoEnd, DemoMarket, MarketText, Storage},
    search::{
        embedder::{Embedder, HashEmbedder},
        minilm::MiniLmEmbedder,
    },
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

/// Creates demo users, then markets, in chunks of `CHUNK` per transaction.
pub async fn run(config: &Config, args: &SeedArgs) -> Result<SeedReport, StartError> {
    let started = Instant::now();
    let storage = open_storage(config).await?;
    let users = args.users.unwrap_or((args.markets / 10).max(10)).max(1);
    let seeded = seed(&storage, config, args.markets, users).await;
    storage.engine.close().await;
    seeded?;
    Ok(SeedReport {
        users,
        markets: args.markets,
        elapsed: started.elapsed(),
    })
}

async fn seed(
    storage: &Storage,
    config: &Config,
    markets: u32,
    users: u32,
) -> Result<(), StartError> {
    let now = OffsetDateTime::now_utc();
    let password_hash =
        hash_blocking(DEMO_PASSWORD).map_err(|e| StartError::Init(e.to_string()))?;
    let first_user = storage
        .seed
        .demo_users(users, password_hash, config.signup_grant, now)
        .await
        .map_err(|e| StartError::Init(e.to_string()))?;
    let embedder = LocalEmbedder::for_config(config);
    let mut done = 0;
    while done < markets {
        let count = CHUNK.min(markets - done);
        let mut rng = StdRng::seed_from_u64(u64::from(done));
        let chunk = (0..count)
            .map(|_| demo_market(&mut rng, now, first_user, users, &embedder))
            .collect();
        storage
            .seed
            .demo_markets(chunk, embedder.model().to_owned())
            .await
            .map_err(|e| StartError::Init(e.to_string()))?;
        done += count;
    }
    Ok(())
}

/// A demo market's name and description: what `subject` does about `event` by `horizon`.
fn demo_text(subject: &str, event: &str, horizon: OffsetDateTime) -> MarketText {
    MarketText {
        name: format!("Will {subject} {event} by {}?", horizon.date()),
        description: Some(format!(
            "Resolves to the outcome matching what {subject} does by {}, as reported by two independent sources.",
            horizon.date()
        )),
    }
}

/// `count` texts drawn as `agora seed` draws its markets' (for benchmarks of search at scale
/// without a database).
pub fn demo_texts(count: usize, seed: u64) -> Vec<MarketText> {
    let mut rng = StdRng::seed_from_u64(seed);
    let now = OffsetDateTime::now_utc();
    (0..count)
        .map(|_| {
            let subject = SUBJECTS[rng.random_range(0..SUBJECTS.len())];
            let event = EVENTS[rng.random_range(0..EVENTS.len())];
            demo_text(
                subject,
                event,
                now + Duration::days(rng.random_range(1..720)),
            )
        })
        .collect()
}

/// The built-in embedder whose vectors the seed stores at once: the configured one (`builtin`
/// or `hash`). A server using the HTTP embedder or the transformer re-indexes seeded markets
/// through jobs when it starts, as it does whenever the stored vectors are another model's.
enum LocalEmbedder {
    MiniLm(MiniLmEmbedder),
    Hash(HashEmbedder),
}

impl LocalEmbedder {
    fn for_config(config: &Config) -> Self {
        match config.embedder {
            EmbedderKind::Hash => LocalEmbedder::Hash(HashEmbedder::default()),
            EmbedderKind::Builtin | EmbedderKind::Http | EmbedderKind::Transformer => {
                LocalEmbedder::MiniLm(MiniLmEmbedder::default())
            }
        }
    }

    fn model(&self) -> &str {
        match self {
            LocalEmbedder::MiniLm(e) => e.model(),
            LocalEmbedder::Hash(e) => e.model(),
        }
    }

    fn embed_text(&self, text: &str) -> Vec<f32> {
        match self {
            LocalEmbedder::MiniLm(e) => e.embed_text(text),
            LocalEmbedder::Hash(e) => e.embed_text(text),
        }
    }
}

/// One demo market: open, or closed, resolved or cancelled, with a few stakes from random
/// users (the repository skips a stake its user cannot afford and settles it as the API
/// would, so the seeded database keeps every money invariant).
fn demo_market(
    rng: &mut StdRng,
    now: OffsetDateTime,
    first_user: i64,
    users: u32,
    embedder: &LocalEmbedder,
) -> DemoMarket {
    let subject = SUBJECTS[rng.random_range(0..SUBJECTS.len())];
    let event = EVENTS[rng.random_range(0..EVENTS.len())];
    let created = now - Duration::minutes(rng.random_range(1..180 * 24 * 60));
    let horizon = now + Duration::days(rng.random_range(1..720));
    let text = demo_text(subject, event, horizon);
    let outcomes = OUTCOME_SETS[rng.random_range(0..OUTCOME_SETS.len())];
    let roll = rng.random_range(0..100);
    let (end, close_time) = match roll {
        0..80 => (DemoEnd::Active, (roll % 4 != 0).then_some(horizon)),
        80..90 => (DemoEnd::Closed, Some(created + (now - created) / 2)),
        90..95 => (
            DemoEnd::Resolved(rng.random_range(0..outcomes.len()) as u32),
            Some(created + (now - created) / 2),
        ),
        _ => (DemoEnd::Cancelled, None),
    };
    let creator_id = first_user + rng.random_range(0..i64::from(users));
    let stakes = (0..rng.random_range(0..4))
        .map(|_| {
            let user = first_user + rng.random_range(0..i64::from(users));
            let stake = Stake {
                outcome: rng.random_range(0..outcomes.len()) as u32,
                amount: rng.random_range(1..=20) * 5,
            };
            (user, stake)
        })
        .collect();
    DemoMarket {
        vector: embedder.embed_text(&text.joined()),
        description: text.description.unwrap_or_default(),
        name: text.name,
        creator_id,
        outcomes: outcomes.iter().map(|o| (*o).to_owned()).collect(),
        created_at: created,
        close_time,
        stakes,
        end,
    }
}
