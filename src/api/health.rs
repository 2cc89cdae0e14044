//! Liveness and readiness probes.

use std::sync::Arc;

use poem_openapi::{payload::Json, types::Example, Object, OpenApi};

use super::{error::ApiError, ApiTags};
use crate::{
    error::AppError,
    middleware::rate_limit::{FailureMode, RateLimits, StoreHealth},
    repo::{Engine, SCHEMA_VERSION},
};

/// Health probes.
pub struct HealthApi {
    /// The storage engine, to check that it is writable and migrated.
    pub engine: Arc<dyn Engine>,
    /// The rate limits, to check that their store (Redis, when configured) answers.
    pub limits: Arc<RateLimits>,
}

/// Probe result.
#[derive(Debug, Object)]
#[oai(example)]
pub struct HealthStatus {
    /// `ok` when healthy. Readiness says `degraded` when it is ready but the rate-limit store
    /// (Redis) does not answer and requests pass uncounted meanwhile (`--redis-failure open`).
    pub status: String,
    /// Database schema version (readiness only).
    #[oai(skip_serializing_if_is_none)]
    pub schema_version: Option<i64>,
}

impl Example for HealthStatus {
    fn example() -> Self {
        HealthStatus {
            status: "ok".into(),
            schema_version: Some(SCHEMA_VERSION),
        }
    }
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness
    ///
    /// 200 while the process serves HTTP. Cheap: touches nothing else.
    #[oai(path = "/healthz", method = "get", operation_id = "get_health")]
    async fn get_health(&self) -> Result<Json<HealthStatus>, ApiError> {
        Ok(Json(HealthStatus {
            status: "ok".into(),
            schema_version: None,
        }))
    }

    /// Readiness
    ///
    /// 200 when the database accepts a write transaction and its schema is current, and, with
    /// `--redis-url`, Redis answers; else 503. While Redis does not answer and requests pass
    /// uncounted (`--redis-failure open`), 200 with status `degraded`.
    #[oai(path = "/readyz", method = "get", operation_id = "get_readiness")]
    async fn get_readiness(&self) -> Result<Json<HealthStatus>, ApiError> {
        let version = self
            .engine
            .ready()
            .await
            .map_err(|why| ApiError::from(AppError::Unavailable(why)))?;
        let status = match self.limits.store_health().await {
            StoreHealth::InProcess | StoreHealth::Up => "ok",
            StoreHealth::Down {
                mode: FailureMode::Open,
                ..
            } => "degraded",
            StoreHealth::Down {
                why,
                mode: FailureMode::Closed,
            } => return Err(ApiError::rate_limit_store_down(&why)),
        };
        Ok(Json(HealthStatus {
            status: status.into(),
            schema_version: Some(version),
        }))
    }
}
