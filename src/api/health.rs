//! Liveness and readiness probes.

use std::sync::Arc;

use poem_openapi::{payload::Json, types::Example, Object, OpenApi};

use super::{error::ApiError, ApiTags};
use crate::{
    error::AppError,
    repo::{Engine, SCHEMA_VERSION},
};

/// Health probes.
pub struct HealthApi {
    /// The storage engine, to check that it is writable and migrated.
    pub engine: Arc<dyn Engine>,
}

/// Probe result.
#[derive(Debug, Object)]
#[oai(example)]
pub struct HealthStatus {
    /// `ok` when healthy.
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
    /// 200 when the database accepts a write transaction and its schema is current; else 503.
    #[oai(path = "/readyz", method = "get", operation_id = "get_readiness")]
    async fn get_readiness(&self) -> Result<Json<HealthStatus>, ApiError> {
        let version = self
            .engine
            .ready()
            .await
            .map_err(|why| ApiError::from(AppError::Unavailable(why)))?;
        Ok(Json(HealthStatus {
            status: "ok".into(),
            schema_version: Some(version),
        }))
    }
}
