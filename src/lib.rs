//! agora: a prediction-markets API server. One binary serves an OpenAPI-documented REST API on
//! an embedded SQLite database, or on PostgreSQL with `--database-url`.
//!
//! Layers, dependencies pointing down: `api` (HTTP handlers) -> `service` (rules) -> `repo`
//! (data access behind traits; the SQLite engine in `repo/sqlite/` over `db`, its connections,
//! writer and migrations; the PostgreSQL engine in `repo/postgres/`). `jobs` (workers and handlers) sits beside `api`, above the
//! services it calls. `app` wires them; `main` only parses the command line.
//!
//! ## Architecture
//!
//! Connections are served by `server.rs` (hyper with a request-head timeout and parser limits;
//! poem's own server sets neither) on threads of their own, one per core, each running a
//! single-threaded tokio runtime; a connection goes to the thread serving the fewest and stays
//! there, and the rest (jobs, tailing the outbox, webhooks) runs on the main runtime. Requests pass through
//! middleware (request id and one JSON access-log line per request, written by a writer
//! thread; request-head limits; request timeout, panic catcher, rate limiter, body limit),
//! then `api/` (poem-openapi handlers: parse and validate into domain types, call one service method, map the result to a typed response;
//! the bearer scheme in `api/security.rs` asks `service/authenticator.rs` for the acting user:
//! the token's signature, its session still open, the account's current role),
//! `service/` (business rules, including role and ownership checks), `repo/` (data access behind
//! traits, one SQL statement or transaction per method) and `db/`; `src/app.rs` is the one place
//! that wires them together, and `main.rs` only parses the command line. `db/` has exactly one
//! writer thread: writes queue up, and the thread runs every write waiting at that moment in one
//! `BEGIN IMMEDIATE` transaction, each in its own savepoint (a failing write rolls back alone),
//! commits once, and only then answers (group commit). A stake or a settlement is one such write,
//! so stakes, closes and resolutions of a market are totally ordered. Jobs are a repository
//! like the others (`repo/jobs.rs`: the durable queue, each job claimed under a lease; the
//! typed job kinds in `domain/job.rs`, the retry rule in `domain/retry.rs`): a service
//! names the jobs a write enqueues and the repository inserts them in the write's own
//! transaction, so a crash cannot lose them. `jobs/` runs them (`worker.rs`: tokio workers;
//! `handlers.rs`: what each job kind does) and `search/` holds the embedders, the in-memory vector
//! index (partitioned by nearest centroid), keyword ranking with bounded work and rank fusion;
//! `service/search.rs` puts them together. Reads use a pool of `query_only`
//! connections and never wait for the writer. Market reads go through a quick_cache cache
//! (`repo/cached.rs`, decorators that `app.rs` wraps around the SQLite repositories), sized by
//! memory (`--cache-mb`, each market weighed by its size): a market is loaded once under
//! concurrent misses (a placeholder the others wait on), and every write that changes a market
//! (edit, stake, close, resolve, cancel, the close sweep) removes its entry, or the placeholder
//! of a load in flight, after the commit and before the response; a load whose
//! placeholder was removed does not insert, so no read that starts after a write has returned
//! sees the older value; list pages are keyed by a generation number every market write bumps.
//! (moka, used before, cost more per miss than the SQLite read a hit saves: see the module.) The schema is versioned SQL embedded in the binary,
//! applied at start in one transaction and tracked with `PRAGMA user_version`; a database from a
//! newer agora is refused.
//!
//! The storage seam: everything engine-specific is in `repo/sqlite/` (the repositories, the
//! SQL, the row mappings, the SQLite error codes) with `db/` (its machinery), and in
//! `repo/postgres/` (the same for PostgreSQL: a deadpool pool, row locks where SQLite has its
//! single writer, `FOR UPDATE SKIP LOCKED` job claims, `tsvector` keyword search, SQLSTATEs
//! mapped in `codes.rs`); nothing above them names a driver type, and only `app::open_storage`
//! (the one place that picks the engine, from `--database-url`) reaches into them: it opens the engine with its start-up checks and gets a `repo::Storage`,
//! every repository as an `Arc<dyn Trait>` plus the engine's probes (`repo::Engine`: readiness,
//! pool waits, closing) and backups (`repo::Backup`). Rules both engines need are pure functions in `domain/`: the
//! stake rules (`domain/staking.rs`), settlement (`domain/trading.rs`), the retry rule of jobs
//! (`domain/retry.rs`); a repository reads what they need inside its transaction and writes what
//! they allow. Keyword search passes one word at a time; each engine ranks the markets having it
//! with its own full-text index, and the service adds the words' scores up. What each process
//! keeps in memory (the vector index, the read cache) follows the database whoever writes it:
//! `repo::ChangeFeed` (SQLite: a table filled by triggers, polled; PostgreSQL: `NOTIFY`).
//!
//! Live markets: every change to a market and every stake appends an event to an outbox table
//! in its own transaction (`repo/*/events.rs`; sequence numbers visible in commit order on both
//! engines), and each stake updates its market's row of the minute in `market_history`. Each
//! process tails the outbox: `service/events.rs` fans new events out to the open Server-Sent
//! Event streams (one bounded ring; a stream that falls behind is dropped with its position, so
//! writers never wait for readers) and serves histories; `service/webhooks.rs` turns events
//! into webhook deliveries under a cursor kept in the database (one transaction: deliveries,
//! their `deliver_webhook` jobs, the cursor), and the job queue sends and retries them. The
//! rules (event kinds, history points, signatures, which addresses are refused) are in
//! `domain/event.rs` and `domain/webhook.rs`.
//!
//! Storage and durability (what a commit survives, checkpoints, backups, what start-up refuses)
//! are described in [`db`]; how fast each path is, in `benches/README.md`; how it is tested, in
//! `tests/README.md`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod app;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod jobs;
pub mod metrics;
pub mod middleware;
pub mod repo;
pub mod search;
pub mod seed;
pub mod server;
pub mod service;
pub mod telemetry;

pub use app::App;
pub use config::Config;
