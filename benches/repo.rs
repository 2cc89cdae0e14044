//! Criterion micro-benchmarks of the repository and service hot paths:
//! `cargo bench --bench repo`. A database of 10,000 seeded markets in a temporary directory.

use std::{sync::Arc, time::Duration};

use agora::{
    config::SeedArgs,
    domain::{
        market::{ListQuery, MarketStatus, SortKey},
        trading::{settle, PositionStake, Stake},
        user::{Role, User},
    },
    repo::{
        cached::{CacheConfig, CachedMarketRepository, MarketCache},
        MarketRepository,
    },
    service::tokens::Tokens,
    Config,
};
use criterion::{criterion_group, criterion_main, Criterion};

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let config = Config::from_args([
        "agora",
        "--data-dir",
        data_dir,
        "--log",
        "warn",
        "--signup-grant",
        "1000000000",
    ])
    .unwrap();
    rt.block_on(agora::seed::run(
        &config,
        &SeedArgs {
            markets: 10_000,
            users: Some(100),
        },
    ))
    .unwrap();
    let storage = rt.block_on(agora::app::open_storage(&config)).unwrap();
    let sqlite: Arc<dyn MarketRepository> = storage.markets.clone();
    let cache = MarketCache::new(CacheConfig {
        market_bytes: 64 << 20,
        pages: 1_000,
        ttl: Duration::from_secs(600),
    });
    let cached = CachedMarketRepository::new(sqlite.clone(), cache);
    let trading = storage.trading.clone();
    let active = rt
        .block_on(
            sqlite.list(
                ListQuery::parse(
                    Some(MarketStatus::Active),
                    None,
                    None,
                    None,
                    Some(100),
                    None,
                    None,
                )
                .unwrap(),
            ),
        )
        .unwrap()
        .items
        .clone();
    let page = ListQuery::parse(
        Some(MarketStatus::Active),
        None,
        Some(SortKey::Volume),
        None,
        Some(20),
        None,
        None,
    )
    .unwrap();

    let mut n = 0u64;
    c.bench_function("market get by id (sqlite)", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(sqlite.get(1 + (n * 7919) as i64 % 10_000))
                .unwrap()
        })
    });
    c.bench_function("market get by id (cache hit)", |b| {
        rt.block_on(cached.get(42)).unwrap();
        b.iter(|| rt.block_on(cached.get(42)).unwrap())
    });
    c.bench_function("market list page (sqlite, active by volume)", |b| {
        b.iter(|| rt.block_on(sqlite.list(page.clone())).unwrap())
    });
    let mut i = 0usize;
    c.bench_function("stake (one writer transaction)", |b| {
        b.iter(|| {
            i += 1;
            let market = &active[i % active.len()];
            let stake = Stake {
                outcome: 0,
                amount: 1,
            };
            rt.block_on(trading.stake(1 + (i % 100) as i64, market.id, stake, None))
                .unwrap()
        })
    });
    let positions: Vec<PositionStake> = (0..1_000)
        .map(|u| PositionStake {
            user_id: u,
            outcome: (u % 3) as u32,
            amount: 1 + u * 7 % 500,
        })
        .collect();
    c.bench_function("settle 1000 positions (payout rule)", |b| {
        b.iter(|| settle(&positions, Some(1)))
    });
    let tokens = Tokens::new(
        &[7u8; 32],
        Duration::from_secs(900),
        Duration::from_secs(3600),
    );
    let user = User {
        id: 7,
        username: "alice".into(),
        role: Role::User,
        balance: 0,
        created_at: time::OffsetDateTime::now_utc(),
    };
    let token = tokens.issue(&user, "bench-session").unwrap().token;
    c.bench_function("access token verify", |b| {
        b.iter(|| tokens.verify(&token).unwrap())
    });
    rt.block_on(storage.engine.close());
}

criterion_group! {
    name = hot_paths;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(hot_paths);
