//! The HTTP API: poem-openapi handlers, their schemas, and the OpenAPI document. Handlers parse
//! requests into domain types, call one service method and map the result; `error.rs` is the
//! only place that turns failures into statuses.

pub mod envelope;
pub mod error;
mod health;
mod market_models;
mod markets;

use std::{marker::PhantomData, sync::Arc};

use poem::{endpoint::BoxEndpoint, http::Method};
use poem_openapi::{
    registry::{MetaApi, Registry},
    OpenApi, OpenApiService, Tags,
};

pub use health::HealthApi;
pub use markets::MarketsApi;

/// One tag per resource.
#[derive(Tags)]
pub enum ApiTags {
    /// Prediction markets: questions with outcomes that users stake credits on.
    Markets,
    /// Liveness and readiness probes.
    Health,
}

/// Every operation the server serves.
pub type Apis = (MarketsApi, HealthApi);

const DESCRIPTION: &str = "\
agora is a prediction-markets API server: one binary, an embedded SQLite database, this \
OpenAPI document.\n\n\
Every success is `{\"success\": true, \"data\": ..., \"meta\": ...}` and every error is \
`{\"success\": false, \"error\", \"code\", \"details\", \"request_id\"}` with a matching status. \
Money is integer credits. Market reads carry an `ETag` (the market's version); send it back in \
`If-None-Match` for a 304 or in `If-Match` to make a write conditional (412 when stale).";

/// The OpenAPI service for `api`, titled and described.
pub fn service<T: OpenApi>(api: T) -> OpenApiService<T, ()> {
    OpenApiService::new(api, "agora", env!("CARGO_PKG_VERSION"))
        .description(DESCRIPTION)
        .server("/")
        .license("MIT")
}

/// The OpenAPI document (pretty JSON) of [`Apis`]: exactly what `/openapi.json` serves and
/// `openapi/openapi.json` holds. Built from types alone, so it needs no database.
pub fn spec_json() -> String {
    let mut spec = service(SpecOnly::<Apis>(PhantomData)).spec();
    spec.push('\n');
    spec
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

    fn add_routes(self, _: &mut std::collections::HashMap<String, std::collections::HashMap<Method, BoxEndpoint<'static>>>) {}
}

/// Builds the API object from the services.
pub fn apis(markets: Arc<crate::service::markets::MarketService>, db: Arc<crate::db::Db>) -> Apis {
    (MarketsApi { markets }, HealthApi { db })
}
