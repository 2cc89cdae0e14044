//! The one place that wires everything: database -> repositories -> services -> API ->
//! middleware, and shuts them down in order.

use std::{future::Future, sync::Arc, time::Duration};

use poem::{
    endpoint::{make, make_sync},
    middleware::CatchPanic,
    EndpointExt, IntoResponse, Response, Route,
};
use tokio::net::TcpListener;

use crate::{
    api::{self, error::ApiError, event_models::EventView},
    config::{Config, EmbedderKind},
    db::{backup::DataDirLock, DbError, DbOptions},
    domain::job::JobKind,
    jobs::{
        handlers::{AgoraJobs, Backups},
        Workers,
    },
    metrics::{Metrics, Sources},
    middleware::{
        access_log::AccessLog,
        body_limit::BodyLimit,
        rate_limit::{RateLimit, RateLimits, RedisStore},
    },
    repo::{
        cached::{CacheConfig, CachedMarketRepository, CachedTradingRepository, MarketCache},
        postgres::{self, PgOptions},
        sqlite, Backup, Change, ChangeFeed, JobRepository, MarketRepository, Render, Storage,
        TradingRepository,
    },
    search::{
        embedder::{Embedder, HashEmbedder},
        http::{HttpEmbedder, HttpEmbedderConfig},
        minilm::MiniLmEmbedder,
        transformer::TransformerEmbedder,
    },
    service::{
        auth::AuthService,
        authenticator::Authenticator,
        events::{EventHub, HistoryService},
        jobs::JobService,
        markets::MarketService,
        passwords::Passwords,
        search::SearchService,
        tokens::{Tokens, SECRET_MIN},
        trading::TradingService,
        users::UserService,
        webhooks::WebhookService,
        MarketListener,
    },
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be created or used.
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The token signing secret is unusable.
    #[error("{0}")]
    Secret(String),
    /// A startup step failed.
    #[error("{0}")]
    Init(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// A built, bound, not yet running server.
pub struct App {
    listener: TcpListener,
    addr: std::net::SocketAddr,
    storage: Storage,
    config: Config,
    tokens: Arc<Tokens>,
    passwords: Arc<Passwords>,
    embedder: Arc<dyn Embedder>,
    limits: Arc<RateLimits>,
    lock: Option<DataDirLock>,
}

/// The embedder `config` asks for.
pub fn embedder(config: &Config) -> Result<Arc<dyn Embedder>, StartError> {
    Ok(match config.embedder {
        EmbedderKind::Builtin => Arc::new(MiniLmEmbedder::default()),
        EmbedderKind::Transformer => {
            let dir = config
                .embedder_weights
                .clone()
                .unwrap_or_else(|| TransformerEmbedder::default_dir(&config.data_dir));
            Arc::new(
                TransformerEmbedder::load(&dir)
                    .map_err(|e| StartError::Init(format!("--embedder transformer: {e}")))?,
            )
        }
        EmbedderKind::Hash => Arc::new(HashEmbedder::default()),
        EmbedderKind::Http => {
            let base_url = config
                .embedder_url
                .clone()
                .ok_or_else(|| StartError::Init("--embedder http needs --embedder-url".into()))?;
            Arc::new(
                HttpEmbedder::new(HttpEmbedderConfig {
                    base_url,
                    model: config.embedder_model.clone(),
                    api_key: config.embedder_key.as_ref().map(|k| k.0.clone()),
                    timeout: Duration::from_millis(config.embedder_timeout_ms.max(1)),
                    attempts: config.embedder_attempts.max(1),
                    backoff: Duration::from_millis(config.embedder_backoff_ms),
                })
                .map_err(|e| StartError::Init(e.to_string()))?,
            )
        }
    })
}

/// Creates the data directory (0700) when it is missing.
fn create_data_dir(config: &Config) -> Result<(), StartError> {
    crate::db::files::create_private_dir(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })
}

/// Opens the storage engine `config` names (creating, checking and migrating the database as
/// needed): the one place that picks the engine. With `--database-url` that is PostgreSQL;
/// otherwise SQLite in the data directory (created when missing). The server, `agora seed` and
/// `agora users create` all go through it.
pub async fn open_storage(config: &Config) -> Result<Storage, StartError> {
    if let Some(options) = postgres_options(config)? {
        return postgres::open(&options, config.queue())
            .await
            .map_err(|e| StartError::Init(e.to_string()));
    }
    create_data_dir(config)?;
    let options = DbOptions {
        synchronous: config.synchronous,
        readers: config.db_readers,
        write_batch: config.write_batch,
        max_size_mb: config.db_max_size_mb,
    };
    Ok(sqlite::open(
        &config.db_path(),
        &config.data_dir,
        &options,
        config.queue(),
    )?)
}

/// The PostgreSQL settings when `--database-url` asks for PostgreSQL; an error for a URL of
/// any other kind.
fn postgres_options(config: &Config) -> Result<Option<PgOptions>, StartError> {
    let Some(url) = &config.database_url else {
        return Ok(None);
    };
    if !(url.0.starts_with("postgres://") || url.0.starts_with("postgresql://")) {
        return Err(StartError::Init(
            "--database-url must be a postgres:// or postgresql:// URL (without it, agora uses \
             SQLite in the data directory)"
                .into(),
        ));
    }
    if config.backup_every_secs > 0 {
        return Err(StartError::Init(
            "--backup-every-secs backs up SQLite; on PostgreSQL back up with pg_dump or your \
             platform's backups"
                .into(),
        ));
    }
    Ok(Some(PgOptions {
        url: url.0.clone(),
        pool_size: config.db_pool_size,
        statement_timeout: Duration::from_millis(config.db_statement_timeout_ms),
        connect_timeout: Duration::from_secs(5),
    }))
}

/// The rate limiters `config` asks for: counted in this process, or in Redis with
/// `--redis-url` (and limiting on). Redis need not answer yet: until it does, requests get what
/// `--redis-failure` says, and a warning says so.
async fn rate_limits(config: &Config) -> Result<RateLimits, StartError> {
    let quotas = config.quotas();
    if config.redis.redis_url.is_none() || !quotas.enabled {
        return Ok(RateLimits::new(&quotas));
    }
    let store = RedisStore::connect(&config.redis).map_err(StartError::Init)?;
    match store.ping().await {
        Ok(()) => tracing::info!(redis = store.target(), "rate limits are counted in Redis"),
        Err(why) => tracing::warn!(
            redis = store.target(),
            error = %why,
            failure_mode = ?store.failure_mode(),
            "Redis does not answer at start; rate limits follow --redis-failure until it does"
        ),
    }
    Ok(RateLimits::shared(&quotas, Arc::new(store)))
}

/// Backups of the database `config` names, without opening it (`agora backup` and `agora
/// restore`); on PostgreSQL they refuse, naming `pg_dump` and `pg_restore`.
pub fn backups(config: &Config) -> Arc<dyn Backup> {
    if config.database_url.is_some() {
        return postgres::backups();
    }
    sqlite::backups(&config.db_path(), &config.data_dir)
}

impl App {
    /// Binds the listener, then opens storage; call [`App::run_until_stopped`] to serve.
    ///
    /// The listener comes first: a start that cannot listen (the port is taken) fails before
    /// it creates anything in the data directory (the directory, the secret, the lock file or
    /// the database), so it leaves nothing behind.
    pub async fn build(config: Config) -> Result<App, StartError> {
        let bind_err = |source| StartError::Bind {
            addr: config.bind.to_string(),
            source,
        };
        let listener = TcpListener::bind(config.bind).await.map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let embedder = embedder(&config)?;
        create_data_dir(&config)?;
        let secret = jwt_secret(&config)?;
        // One server per SQLite data directory; `agora restore` waits for it to stop. Several
        // servers may share one PostgreSQL database.
        let lock = match config.database_url {
            None => Some(
                DataDirLock::acquire(&config.data_dir)
                    .map_err(|e| StartError::Init(e.to_string()))?,
            ),
            Some(_) => None,
        };
        let storage = open_storage(&config).await?;
        let limits = Arc::new(rate_limits(&config).await?);
        let tokens = Arc::new(Tokens::new(
            &secret,
            Duration::from_secs(config.access_token_ttl_secs),
            Duration::from_secs(config.refresh_token_ttl_secs),
        ));
        let passwords = Arc::new(
            Passwords::new(config.max_concurrent_hashes, config.max_queued_hashes)
                .map_err(|e| StartError::Init(e.to_string()))?,
        );
        Ok(App {
            listener,
            addr,
            storage,
            config,
            tokens,
            passwords,
            embedder,
            limits,
            lock,
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish
    /// (bounded by the shutdown timeout), drains the writer and checkpoints the database.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let App {
            listener,
            addr,
            storage,
            config,
            tokens,
            passwords,
            embedder,
            limits,
            lock,
        } = self;
        let queue = storage.jobs.clone();
        let mut markets: Arc<dyn MarketRepository> = storage.markets.clone();
        let mut trading: Arc<dyn TradingRepository> = storage.trading.clone();
        let mut market_cache = None;
        if config.cache_mb > 0 {
            let cache = MarketCache::new(CacheConfig {
                market_bytes: config.cache_mb.saturating_mul(1 << 20),
                pages: config.cache_pages,
                ttl: Duration::from_secs(config.cache_ttl_secs.max(1)),
            });
            markets = Arc::new(CachedMarketRepository::new(markets, cache.clone()));
            trading = Arc::new(CachedTradingRepository::new(trading, cache.clone()));
            market_cache = Some(cache);
        }
        let (users, sessions) = (storage.users.clone(), storage.sessions.clone());
        let authenticator = Arc::new(Authenticator::new(tokens.clone(), sessions.clone()));
        let search = Arc::new(SearchService::new(
            storage.search.clone(),
            markets.clone(),
            embedder,
            queue.clone(),
            Duration::from_millis(config.search_timeout_ms.max(1)),
        ));
        let indexed = search.clone();
        let follow: MarketListener = Arc::new(move |changed| indexed.follow(changed));
        let trading =
            Arc::new(TradingService::new(trading, markets.clone()).telling(follow.clone()));
        if let Some(changes) = &storage.changes {
            // Before the index loads: a vector stored meanwhile is announced, or loaded.
            follow_changes(
                changes.as_ref(),
                market_cache.clone(),
                search.clone(),
                authenticator.clone(),
            )
            .await;
        }
        match search.load().await {
            Ok((loaded, enqueued)) => {
                tracing::info!(
                    loaded,
                    enqueued,
                    model = search.model(),
                    "search index loaded"
                )
            }
            Err(e) => tracing::error!(error = %e, "loading the search index failed"),
        }
        schedule_periodic_jobs(queue.as_ref(), &config).await;
        let backups = Backups {
            store: storage.backup.clone(),
            dir: config.data_dir.join("backups"),
            keep: config.backup_keep,
        };
        // A delivery's body is the event as the stream sends it.
        let render: Render =
            Arc::new(|event| poem_openapi::types::ToJSON::to_json_string(&EventView::from(event)));
        let webhooks = Arc::new(WebhookService::new(
            storage.webhooks.clone(),
            render,
            config.webhooks(),
        ));
        let workers = Workers::start(
            queue.clone(),
            Arc::new(
                AgoraJobs::new(
                    trading.clone(),
                    search.clone(),
                    backups,
                    queue.clone(),
                    Duration::from_secs(config.job_retention_hours * 3600),
                )
                .pruning_events(
                    storage.events.clone(),
                    storage.webhooks.clone(),
                    Duration::from_secs(config.event_retention_hours * 3600),
                )
                .delivering(webhooks.clone()),
            ),
            config.workers(),
        );
        webhooks.start_dispatcher(queue.clone());
        let hub = EventHub::new(storage.events.clone(), config.events());
        hub.start().await;
        let history = Arc::new(HistoryService::new(storage.events.clone(), markets.clone()));
        // Redis keys expire by themselves; only in-process limiters need forgetting.
        let forgetter = limits.in_process().then(|| {
            tokio::spawn(forget_idle_clients(
                limits.clone(),
                Duration::from_secs(config.rate_limit_sweep_secs.max(1)),
            ))
        });
        let services = api::Services {
            trading,
            search,
            jobs: Arc::new(
                JobService::new(queue.clone()).refusing_backups(storage.backup.refusal()),
            ),
            markets: Arc::new(MarketService::new(markets, queue.clone()).telling(follow)),
            auth: Arc::new(AuthService::new(
                users.clone(),
                sessions,
                passwords,
                tokens,
                authenticator.clone(),
                config.signup_grant,
            )),
            users: Arc::new(UserService::new(users, authenticator.clone())),
            engine: storage.engine.clone(),
            limits: limits.clone(),
            rendered_pages: (config.cache_mb > 0).then_some(config.cache_pages),
            hub: hub.clone(),
            history,
            webhooks: webhooks.clone(),
        };
        let metrics = Arc::new(Metrics::new(Sources {
            cache: market_cache,
            queue: queue.clone(),
            limits: limits.clone(),
            engine: storage.engine.clone(),
            changes: storage.changes.clone(),
            hub: hub.clone(),
        }));
        let routes = routes(api::apis(services), &config, authenticator, limits, metrics);
        tracing::info!(
            %addr,
            data_dir = %config.data_dir.display(),
            "agora listening on http://{addr} — docs at http://{addr}/docs"
        );
        let server_limits = crate::server::ServerLimits {
            header_timeout: Duration::from_secs(config.header_timeout_secs),
            shutdown_timeout: Duration::from_secs(config.shutdown_timeout_secs),
            threads: config.http_threads(),
            blocking_threads: config.db_readers as usize + 8,
        };
        // Open event streams end first: a connection waits for its response to finish.
        let streams = hub.clone();
        let dispatcher = webhooks.clone();
        let shutdown = async move {
            shutdown.await;
            streams.close();
            dispatcher.close();
        };
        // The serving threads are kept to the end: a pooled connection one of their requests
        // opened may be what the workers use below.
        let served = crate::server::serve(listener, routes, server_limits, shutdown).await;
        // Every task and thread of ours ends before "agora stopped": the sweeper is joined (not
        // just told to stop), the workers and the database threads are joined below, so what
        // the runtime's drop waits for afterwards is only what a client request left behind.
        if let Some(forgetter) = forgetter {
            forgetter.abort();
            let _ = forgetter.await;
        }
        workers
            .shutdown(Duration::from_secs(config.shutdown_timeout_secs))
            .await;
        storage.engine.close().await;
        drop(lock);
        tracing::info!("agora stopped");
        served.map(drop)
    }
}

/// The whole HTTP surface with its middleware, outermost last.
fn routes(
    apis: api::Apis,
    config: &Config,
    authenticator: Arc<Authenticator>,
    limits: Arc<RateLimits>,
    metrics: Arc<Metrics>,
) -> impl poem::Endpoint<Output = Response> {
    let scraped = metrics.clone();
    let service = api::service(apis);
    let docs = api::swagger_ui_html();
    let csp = api::docs_csp(&docs);
    let spec = api::spec_json();
    Route::new()
        .nest("/", service)
        .at(
            "/docs",
            poem::get(make_sync(move |_| {
                Response::builder()
                    .content_type("text/html; charset=utf-8")
                    .header("content-security-policy", csp.as_str())
                    .header("x-frame-options", "DENY")
                    .header("referrer-policy", "no-referrer")
                    .body(docs.clone())
            })),
        )
        .at(
            "/openapi.json",
            poem::get(make_sync(move |_| {
                Response::builder()
                    .content_type("application/json")
                    .body(spec.clone())
            })),
        )
        .at(
            "/metrics",
            poem::get(make(move |_| {
                let metrics = scraped.clone();
                async move {
                    Response::builder()
                        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
                        .body(metrics.render().await)
                }
            })),
        )
        .data(authenticator.clone())
        .with(BodyLimit {
            limit: config.body_limit,
        })
        .with(RateLimit {
            limits,
            authenticator,
        })
        .with(CatchPanic::new().with_handler(panic_response))
        .with(AccessLog {
            timeout: config.request_timeout(),
            metrics,
        })
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("a handler panicked").into_response()
}

/// The access-token signing secret: the configured one, else the one kept in the data dir,
/// else a new random one written there with owner-only permissions (so tokens survive
/// restarts). Secrets shorter than [`SECRET_MIN`] bytes are refused.
pub fn jwt_secret(config: &Config) -> Result<Vec<u8>, StartError> {
    let short = |from: &str| {
        StartError::Secret(format!(
            "the JWT secret from {from} is shorter than {SECRET_MIN} bytes"
        ))
    };
    if let Some(secret) = &config.jwt_secret {
        return if secret.0.len() >= SECRET_MIN {
            Ok(secret.0.clone().into_bytes())
        } else {
            Err(short("--jwt-secret / AGORA_JWT_SECRET"))
        };
    }
    let path = config.data_dir.join("jwt-secret");
    let io_err =
        |e: std::io::Error| StartError::Secret(format!("cannot use {}: {e}", path.display()));
    crate::db::files::create_private_dir(&config.data_dir).map_err(io_err)?;
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = text.trim();
            if text.len() >= SECRET_MIN {
                Ok(text.as_bytes().to_vec())
            } else {
                Err(short(&path.display().to_string()))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use rand::RngCore;
            use std::io::Write;
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let secret = hex::encode(bytes);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&path).map_err(io_err)?;
            file.write_all(secret.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io_err)?;
            tracing::info!(path = %path.display(), "generated a new JWT secret");
            Ok(secret.into_bytes())
        }
        Err(e) => Err(io_err(e)),
    }
}

/// Makes the periodic jobs match the configuration: the close sweep, job pruning, and backups
/// when `--backup-every-secs` asks for them.
async fn schedule_periodic_jobs(queue: &dyn JobRepository, config: &Config) {
    let backup_every =
        (config.backup_every_secs > 0).then(|| Duration::from_secs(config.backup_every_secs));
    let periodic = [
        (
            JobKind::CloseDueMarkets,
            Some(Duration::from_secs(config.close_sweep_secs.max(1))),
        ),
        (JobKind::PruneJobs, Some(Duration::from_secs(3600))),
        (JobKind::PruneEvents, Some(Duration::from_secs(3600))),
        (JobKind::Backup, backup_every),
    ];
    for (kind, every) in periodic {
        let scheduled = match every {
            Some(every) => queue.ensure_periodic(kind.clone(), every).await,
            None => queue.cancel_periodic(kind.clone()).await,
        };
        if let Err(e) = scheduled {
            tracing::error!(job.kind = %kind, error = %e, "scheduling a periodic job failed");
        }
    }
}

/// Applies changes made to the database (by other processes; on SQLite this one's too) to what
/// this process keeps in memory, one at a time in the order announced: the market cache
/// forgets a changed market (and every list page), the vector index takes a stored vector or a
/// new status or drops a deleted market, the session cache forgets a revoked session or a user
/// whose role changed. After a gap in the announcements everything is dropped and loaded again.
async fn follow_changes(
    feed: &dyn ChangeFeed,
    cache: Option<Arc<MarketCache>>,
    search: Arc<SearchService>,
    authenticator: Arc<Authenticator>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Change>();
    tokio::spawn(async move {
        while let Some(change) = rx.recv().await {
            match change {
                Change::Market(id) => {
                    if let Some(cache) = &cache {
                        cache.written(id);
                    }
                }
                Change::Status(id) => {
                    if let Some(cache) = &cache {
                        cache.written(id);
                    }
                    if let Err(e) = search.follow_market(id).await {
                        tracing::warn!(market.id = id, error = %e, "taking a market's new status into the index failed");
                    }
                }
                Change::MarketDeleted(id) => {
                    if let Some(cache) = &cache {
                        cache.written(id);
                    }
                    search.forget(id);
                }
                Change::Vector(id) => {
                    if let Err(e) = search.follow_vector(id).await {
                        tracing::warn!(market.id = id, error = %e, "taking another process's vector into the index failed");
                    }
                }
                Change::Session(family) => authenticator.forget_session(&family).await,
                Change::User(id) => authenticator.forget_user(id),
                Change::Resync => {
                    if let Some(cache) = &cache {
                        cache.clear();
                    }
                    authenticator.forget_all();
                    match search.reload().await {
                        Ok(n) => tracing::info!(loaded = n, "search index reloaded"),
                        Err(e) => tracing::error!(error = %e, "reloading the search index failed"),
                    }
                }
            }
        }
    });
    feed.follow(Arc::new(move |change| {
        let _ = tx.send(change);
    }))
    .await;
}

/// Forgets the rate-limit state of clients whose buckets are full again, every `every`, so
/// the limiter's memory follows the number of recently active clients, not of all clients ever.
async fn forget_idle_clients(limits: Arc<RateLimits>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let tracked = limits.sweep();
        tracing::debug!(tracked_keys = tracked, "rate limiter swept");
    }
}
