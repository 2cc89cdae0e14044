//! HTTP middleware: request id and access log (the outermost layer, which also turns every
//! error into the JSON envelope), panic catching, request timeout, rate limiting and body
//! size limit.
//!
//! # Rate limits and resource limits
//!
//! Every request under `/api/` counts against one quota, kept by a
//! [governor](https://docs.rs/governor) keyed limiter in the server process, or in Redis with
//! `--redis-url` (below):
//!
//! | quota | counted per | default | applies to |
//! |---|---|---|---|
//! | `auth` | client address | 30/min | everything under `/api/auth/` |
//! | `login` | username and client address | 10/15min | login attempts (stops a guesser without locking the owner out) |
//! | `login_account` | username | 200/15min | login attempts from all addresses together (the ceiling on guessing spread over many) |
//! | `writes` | user, else client address | 120/min | POST, PUT, PATCH, DELETE |
//! | `reads` | user, else client address | 1200/min | GET (unknown `/api/` paths included) |
//! | `search` | user, else client address | 120/min | market search |
//! | `admin` | admin | 6000/min | an admin's reads and writes: admins have their own quota, not none |
//!
//! A quota `N/window` lets a burst of N requests through and refills one every window/N (GCRA). A
//! request counts as a user's when its bearer token is valid; otherwise it counts against the
//! client address, which is the TCP peer unless the peer is listed in `--trusted-proxies`: then it
//! is the right-most `X-Forwarded-For` (or `Forwarded: for=`) address that is not itself a trusted
//! proxy, so a client cannot pick its own key by sending those headers. `/healthz`, `/readyz`,
//! `/openapi.json` and `/docs` are never limited.
//!
//! Every limited response says where the caller stands, in the syntax of the IETF httpapi
//! [ratelimit-headers draft](https://datatracker.ietf.org/doc/draft-ietf-httpapi-ratelimit-headers/):
//! `RateLimit-Policy: "reads";q=1200;w=60` (the quota and its window in seconds) and
//! `RateLimit: "reads";r=1187;t=8` (requests left, seconds until the quota is full again). Past
//! the quota the answer is 429 with code `rate_limited`, `Retry-After` in whole seconds rounded
//! up (a retry after it succeeds), and `RateLimit: "reads";r=0;t=<Retry-After>`. A refused
//! request changes nothing. The 429 and the headers are declared in the spec.
//!
//! Without `--redis-url` the limiter's state lives in the process: it starts empty on restart
//! and is not shared between processes. That is right for one instance. With several
//! processes each counts its own quotas, so a client spread over N processes gets N times each
//! quota: then pass `--redis-url` (every process counts in one Redis, with the same algorithm,
//! quotas and headers; see [`rate_limit::redis`] for the script, the keys and what happens
//! while Redis cannot answer), or limit at the shared entry point instead (the load balancer or
//! API gateway, e.g. nginx `limit_req` or Envoy's global rate limit service) and turn agora's
//! own off with `--rate-limit off`. In process, memory is bounded: every
//! `--rate-limit-sweep-secs` the server forgets clients whose quota has refilled (governor's
//! `retain_recent`, then `shrink_to_fit`), so it follows the number of recently active clients,
//! not of all clients ever seen (figures in `benches/README.md`); in Redis each key expires
//! once its bucket is full again.
//!
//! Other limits, each answered with a JSON error: request bodies over `--body-limit` (1 MiB) get
//! 413 before the body is read, or as soon as a streamed body passes it; a request (slow body
//! upload included) that takes longer than `--request-timeout-secs` gets 503 `timeout`; a
//! connection that has not sent a whole request head within `--header-timeout-secs` (10 s) is
//! closed unanswered (a slow-header client cannot hold it); a request target over 8 KiB gets 414
//! `uri_too_long`, more than 100 header fields or over 32 KiB of them 431 `headers_too_large`, an
//! unknown method 405 `method_not_allowed` (with `Allow`); at most `--max-concurrent-hashes` password
//! hashes run at once with at most `--max-queued-hashes` waiting (beyond that, 503); pages hold
//! at most 100 items and offsets stop at 1,000,000; names are 3-200 characters, descriptions at
//! most 5,000, outcome labels 1-50, and a market has 2-10 outcomes (400 beyond any of these, all stated in the spec; 422
//! `validation_failed` when trimming spaces brings a name under 3 characters).
//!
//! A few requests never reach agora: the HTTP parser answers them itself, with the right status and
//! an empty body, before any of agora's code runs. They are a request target over 64 KiB (414), a
//! head over 256 KiB or with more than 256 header fields (431), and a request line or header it
//! cannot parse (400). Every other error has the JSON envelope.
//!
//! Every response carries `X-Content-Type-Options: nosniff`; `/docs` also carries a
//! `Content-Security-Policy` that allows only Swagger UI's own inline scripts (by hash) and
//! requests to this origin, and `X-Frame-Options: DENY`. The data directory agora creates is
//! 0700, and the database, its WAL, backups, the lock and the secret are 0600 (they hold password
//! hashes); a database an older agora left readable to others is made 0600 at start.
pub mod access_log;
pub mod body_limit;
pub mod head_limits;
pub mod rate_limit;
pub mod request_id;
