//! The HTTP API: poem-openapi handlers, their schemas, and the OpenAPI document. Handlers parse
//! requests into domain types, call one service method and map the result; `error.rs` is the
//! only place that turns failures into statuses.

mod auth;
mod body;
pub mod envelope;
pub mod error;
mod etag;
pub mod event_models;
mod events;
mod health;
mod job_models;
mod jobs;
mod market_json;
mod market_models;
mod markets;
mod plain;
mod rendered;
mod search;
mod search_models;
pub mod security;
mod spec;
mod text;
mod trading;
mod trading_models;
mod user_models;
mod users;
mod webhook_models;
mod webhooks;

use std::{marker::PhantomData, sync::Arc};

use poem::{endpoint::BoxEndpoint, http::Method};
use poem_openapi::{
    registry::{MetaApi, Registry},
    ContactObject, LicenseObject, OpenApi, OpenApiService, Tags,
};

pub use auth::AuthApi;
pub use events::EventsApi;
pub use health::HealthApi;
pub use jobs::JobsApi;
pub use markets::MarketsApi;
pub use search::SearchApi;
pub use spec::allowed_methods;
use spec::finish;
pub use trading::TradingApi;
pub use users::UsersApi;
pub use webhooks::WebhooksApi;

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
    /// Webhooks: events POSTed to your URL, signed, retried.
    Webhooks,
    /// Background jobs: search indexing and periodic maintenance.
    Jobs,
    /// Liveness and readiness probes.
    Health,
}

/// Every operation the server serves.
pub type Apis = (
    SearchApi,
    EventsApi,
    MarketsApi,
    TradingApi,
    AuthApi,
    UsersApi,
    WebhooksApi,
    JobsApi,
    HealthApi,
);

const DESCRIPTION: &str = "\
agora is a prediction-markets API server: one binary, an embedded SQLite database, this \
OpenAPI document.\n\n\
Every success is `{\"success\": true, \"data\": ..., \"meta\": ...}` and every error is \
`{\"success\": false, \"error\", \"code\", \"details\", \"request_id\"}` with a matching status: \
400 when the request does not match this document, 422 when it matches but breaks a rule the \
document cannot state (a close time in the past, a name that is blank after trimming). \
Money is integer credits. Market reads carry a strong `ETag` (`\"<id>-<version>\"`; market ids are \
never reused); send it back in `If-None-Match` for a 304 (weak comparison) or in `If-Match` to \
make a write conditional (strong comparison: a weak `W/` tag never matches; 412 when stale).\n\n\
Reads are public. Writes need `Authorization: Bearer <access token>` (from `POST /api/auth/login`; \
use Swagger UI's Authorize button): 401 when the token is missing or invalid, 403 when the caller \
may not do this. A user changes only its own markets; moderators and admins any. Once another \
user has staked on a market, its creator can no longer change its name, description or close \
time (409 `market_frozen`) nor resolve it (403); moderators and admins can, and the creator may \
still close or cancel it (a cancellation refunds every stake).\n\nRequests under `/api/` are rate limited per user (per client address when anonymous), with separate quotas for auth, reads, writes, search and admins. Every such response carries `RateLimit-Policy` and `RateLimit`; past a quota the answer is 429 with `Retry-After`. The quotas are counted in the server process, or, with `--redis-url`, in Redis and shared by every agora process that uses it.";

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

/// The Swagger UI page, with [`spec_json`] embedded (it works offline). It names an empty
/// icon, so browsers do not ask for a `/favicon.ico` the server does not have.
pub fn swagger_ui_html() -> String {
    let service = service(SpecOnly::<Apis>(PhantomData));
    let raw = service.spec();
    service
        .swagger_ui_html()
        .replace(&raw, &finish(&raw))
        .replacen("<head>", "<head>\n<link rel=\"icon\" href=\"data:,\">", 1)
}

/// The `Content-Security-Policy` of the Swagger UI page: nothing but its own inline scripts
/// (allowed by their SHA-256 hashes, so an injected script would not run), its inline styles,
/// and requests to this origin; never framed.
pub fn docs_csp(html: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let mut hashes = String::new();
    let mut rest = html;
    while let Some(start) = rest.find("<script") {
        let Some(open_end) = rest[start..].find('>') else {
            break;
        };
        let body_start = start + open_end + 1;
        let Some(len) = rest[body_start..].find("</script>") else {
            break;
        };
        let script = &rest[body_start..body_start + len];
        if !script.is_empty() {
            let digest = sha2::Sha256::digest(script.as_bytes());
            hashes.push_str(&format!(
                " 'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            ));
        }
        rest = &rest[body_start + len..];
    }
    format!(
        "default-src 'none'; script-src{hashes}; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
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
    /// The storage engine (for readiness).
    pub engine: Arc<dyn crate::repo::Engine>,
    /// Rate limits (the per-username login quota is checked by the login handler; readiness
    /// asks whether their store answers).
    pub limits: Arc<crate::middleware::rate_limit::RateLimits>,
    /// With the read cache on, how many list pages to keep rendered.
    pub rendered_pages: Option<u64>,
    /// The event stream's fan-out.
    pub hub: Arc<crate::service::events::EventHub>,
    /// Market histories.
    pub history: Arc<crate::service::events::HistoryService>,
    /// Webhook subscriptions and deliveries.
    pub webhooks: Arc<crate::service::webhooks::WebhookService>,
}

/// Builds the API object from the services.
pub fn apis(s: Services) -> Apis {
    (
        SearchApi { search: s.search },
        EventsApi {
            hub: s.hub,
            history: s.history,
            limits: s.limits.clone(),
        },
        MarketsApi::new(s.markets, s.rendered_pages),
        TradingApi { trading: s.trading },
        AuthApi {
            auth: s.auth,
            limits: s.limits.clone(),
        },
        UsersApi { users: s.users },
        WebhooksApi {
            webhooks: s.webhooks,
        },
        JobsApi { jobs: s.jobs },
        HealthApi {
            engine: s.engine,
            limits: s.limits,
        },
    )
}
