//! The HTTP API: poem-openapi handlers, their schemas, and the OpenAPI document. Handlers parse
//! requests into domain types, call one service method and map the result; `error.rs` is the
//! only place that turns failures into statuses.

mod auth;
pub mod envelope;
pub mod error;
mod health;
mod market_models;
mod markets;
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
pub use markets::MarketsApi;
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
    /// Liveness and readiness probes.
    Health,
}

/// Every operation the server serves.
pub type Apis = (MarketsApi, TradingApi, AuthApi, UsersApi, HealthApi);

const DESCRIPTION: &str = "\
agora is a prediction-markets API server: one binary, an embedded SQLite database, this \
OpenAPI document.\n\n\
Every success is `{\"success\": true, \"data\": ..., \"meta\": ...}` and every error is \
`{\"success\": false, \"error\", \"code\", \"details\", \"request_id\"}` with a matching status. \
Money is integer credits. Market reads carry an `ETag` (the market's version); send it back in \
`If-None-Match` for a 304 or in `If-Match` to make a write conditional (412 when stale).\n\n\
Reads are public. Writes need `Authorization: Bearer <access token>` (from `POST /api/auth/login`; \
use Swagger UI's Authorize button): 401 when the token is missing or invalid, 403 when the caller \
may not do this. A user changes only its own markets; moderators and admins any.";

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
///   the root says so explicitly).
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
    /// The database (for readiness).
    pub db: Arc<crate::db::Db>,
}

/// Builds the API object from the services.
pub fn apis(s: Services) -> Apis {
    (
        MarketsApi { markets: s.markets },
        TradingApi { trading: s.trading },
        AuthApi { auth: s.auth },
        UsersApi { users: s.users },
        HealthApi { db: s.db },
    )
}
