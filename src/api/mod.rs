//! The HTTP API: poem-openapi handlers, their schemas, and the OpenAPI document. Handlers parse
//! requests into domain types, call one service method and map the result; `error.rs` is the
//! only place that turns failures into statuses.

mod auth;
pub mod envelope;
pub mod error;
mod health;
mod job_models;
mod jobs;
mod market_models;
mod markets;
mod search;
mod search_models;
pub mod security;
mod text;
mod trading;
mod trading_models;
mod user_models;
mod users;

use std::{marker::PhantomData, sync::Arc};

use poem::{endpoint::BoxEndpoint, http::Method};
use poem_openapi::{
    registry::{MetaApi, Registry},
    ContactObject, LicenseObject, OpenApi, OpenApiService, Tags,
};

pub use auth::AuthApi;
pub use health::HealthApi;
pub use jobs::JobsApi;
pub use markets::MarketsApi;
pub use search::SearchApi;
pub use trading::TradingApi;
pub use users::UsersApi;

/// One tag per resource.
#[derive(Tags)]
pub enum ApiTags {
    /// Prediction markets: questions with outcomes that users stake credits on.
    Markets,
    /// Stakes: credits on a market's outcomes, aggregated per user and outcome.
    Positions,
    /// Accounts and sessions: register, log in, refresh and revoke tokens.
    Auth,
    /// The caller's account, and account administration.
    Users,
    /// Background jobs: search indexing and periodic maintenance.
    Jobs,
    /// Liveness and readiness probes.
    Health,
}

/// Every operation the server serves.
pub type Apis = (
    SearchApi,
    MarketsApi,
    TradingApi,
    AuthApi,
    UsersApi,
    JobsApi,
    HealthApi,
);

const DESCRIPTION: &str = "\
agora is a prediction-markets API server: one binary, an embedded SQLite database, this \
OpenAPI document.\n\n\
Every success is `{\"success\": true, \"data\": ..., \"meta\": ...}` and every error is \
`{\"success\": false, \"error\", \"code\", \"details\", \"request_id\"}` with a matching status. \
Money is integer credits. Market reads carry an `ETag` (the market's version); send it back in \
`If-None-Match` for a 304 or in `If-Match` to make a write conditional (412 when stale).\n\n\
Reads are public. Writes need `Authorization: Bearer <access token>` (from `POST /api/auth/login`; \
use Swagger UI's Authorize button): 401 when the token is missing or invalid, 403 when the caller \
may not do this. A user changes only its own markets; moderators and admins any.\n\nRequests under `/api/` are rate limited per user (per client address when anonymous), with separate quotas for auth, reads, writes, search and admins. Every such response carries `RateLimit-Policy` and `RateLimit`; past a quota the answer is 429 with `Retry-After`. The limits live in the server process: meant for one instance.";

/// The OpenAPI service for `api`, titled and described.
pub fn service<T: OpenApi>(api: T) -> OpenApiService<T, ()> {
    OpenApiService::new(api, "agora", env!("CARGO_PKG_VERSION"))
        .description(DESCRIPTION)
        .server("/")
        .contact(ContactObject::new().name("agora maintainers"))
        .license(LicenseObject::new("MIT").url("https://opensource.org/licenses/MIT"))
}

/// The OpenAPI document (pretty JSON) of [`Apis`]: exactly what `/openapi.json` serves and
/// `openapi/openapi.json` holds. Built from types alone, so it needs no database.
pub fn spec_json() -> String {
    finish(&service(SpecOnly::<Apis>(PhantomData)).spec())
}

/// The Swagger UI page, with [`spec_json`] embedded (it works offline).
pub fn swagger_ui_html() -> String {
    let service = service(SpecOnly::<Apis>(PhantomData));
    let raw = service.spec();
    service.swagger_ui_html().replace(&raw, &finish(&raw))
}

/// What poem-openapi cannot say through its derives, added to its document:
/// - every request body rejects unknown fields (`deny_unknown_fields` on each body type), so
///   its schema gets `additionalProperties: false`;
/// - operations without a security requirement of their own are public (`security: []` at
///   the root says so explicitly);
/// - the rate limiter (a middleware) adds `RateLimit-Policy` and `RateLimit` to every response
///   under `/api/`; the unlimited probes never answer 429.
fn finish(raw: &str) -> String {
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(raw) else {
        return raw.to_owned();
    };
    let mut bodies = Vec::new();
    for item in doc["paths"]
        .as_object()
        .into_iter()
        .flat_map(|p| p.values())
    {
        for op in item.as_object().into_iter().flat_map(|o| o.values()) {
            for media in op["requestBody"]["content"]
                .as_object()
                .into_iter()
                .flat_map(|c| c.values())
            {
                if let Some(name) = media["schema"]["$ref"]
                    .as_str()
                    .and_then(|r| r.rsplit('/').next())
                {
                    bodies.push(name.to_owned());
                }
            }
        }
    }
    rate_limit_headers(&mut doc);
    for name in bodies {
        if let Some(schema) = doc["components"]["schemas"][&name].as_object_mut() {
            schema.insert("additionalProperties".into(), false.into());
        }
    }
    if let Some(root) = doc.as_object_mut() {
        root.entry("security")
            .or_insert_with(|| serde_json::json!([]));
    }
    let mut out = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| raw.to_owned());
    out.push('\n');
    out
}

/// Declares the rate-limit headers on every response of a limited (`/api/`) operation, and
/// drops 429 from the others.
fn rate_limit_headers(doc: &mut serde_json::Value) {
    use serde_json::json;
    let header = |description: &str, example: &str| json!({"description": description, "schema": {"type": "string"}, "example": example});
    doc["components"]["headers"] = json!({
        "RateLimit-Policy": header(
            "The quota this request counted against: `\"name\";q=<requests>;w=<window seconds>` \
             (IETF httpapi ratelimit-headers draft).",
            "\"reads\";q=1200;w=60",
        ),
        "RateLimit": header(
            "What is left of that quota: `\"name\";r=<remaining>;t=<seconds until full>`.",
            "\"reads\";r=1199;t=1",
        ),
    });
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let limited = path.starts_with("/api/");
        for op in item
            .as_object_mut()
            .into_iter()
            .flat_map(|o| o.values_mut())
        {
            let Some(responses) = op["responses"].as_object_mut() else {
                continue;
            };
            if !limited {
                responses.remove("429");
            }
            for (status, response) in responses.iter_mut() {
                let Some(response) = response.as_object_mut() else {
                    continue;
                };
                let headers = response.entry("headers").or_insert_with(|| json!({}));
                if let Some(declared) = headers.as_object_mut() {
                    // poem-openapi upper-cases header names; use their usual spelling.
                    *declared = std::mem::take(declared)
                        .into_iter()
                        .map(|(name, value)| (header_case(&name), value))
                        .collect();
                }
                if limited && status != "429" {
                    for name in ["RateLimit-Policy", "RateLimit"] {
                        headers[name] = json!({"$ref": format!("#/components/headers/{name}")});
                    }
                }
                if headers.as_object().is_some_and(|h| h.is_empty()) {
                    response.remove("headers");
                }
            }
        }
    }
}

/// `ETAG` -> `ETag`, `RATELIMIT-POLICY` -> `RateLimit-Policy`, `X-FOO` -> `X-Foo`.
fn header_case(name: &str) -> String {
    const SPECIAL: [&str; 4] = ["ETag", "WWW-Authenticate", "RateLimit", "RateLimit-Policy"];
    if let Some(known) = SPECIAL.iter().find(|k| k.eq_ignore_ascii_case(name)) {
        return (*known).to_owned();
    }
    name.split('-')
        .map(|word| {
            let lower = word.to_ascii_lowercase();
            let mut chars = lower.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// An [`OpenApi`] that has `T`'s document but serves nothing.
struct SpecOnly<T>(PhantomData<T>);

impl<T: OpenApi> OpenApi for SpecOnly<T> {
    fn meta() -> Vec<MetaApi> {
        T::meta()
    }

    fn register(registry: &mut Registry) {
        T::register(registry)
    }

    fn add_routes(
        self,
        _: &mut std::collections::HashMap<
            String,
            std::collections::HashMap<Method, BoxEndpoint<'static>>,
        >,
    ) {
    }
}

/// The services behind the API.
pub struct Services {
    /// Markets.
    pub markets: Arc<crate::service::markets::MarketService>,
    /// Sign-up and sessions.
    pub auth: Arc<crate::service::auth::AuthService>,
    /// Accounts.
    pub users: Arc<crate::service::users::UserService>,
    /// Staking and settlement.
    pub trading: Arc<crate::service::trading::TradingService>,
    /// Search.
    pub search: Arc<crate::service::search::SearchService>,
    /// Background jobs.
    pub jobs: Arc<crate::service::jobs::JobService>,
    /// The database (for readiness).
    pub db: Arc<crate::db::Db>,
    /// Rate limits (the per-username login quota is checked by the login handler).
    pub limits: Arc<crate::middleware::rate_limit::RateLimits>,
}

/// Builds the API object from the services.
pub fn apis(s: Services) -> Apis {
    (
        SearchApi { search: s.search },
        MarketsApi { markets: s.markets },
        TradingApi { trading: s.trading },
        AuthApi {
            auth: s.auth,
            limits: s.limits,
        },
        UsersApi { users: s.users },
        JobsApi { jobs: s.jobs },
        HealthApi { db: s.db },
    )
}
