//! The outermost layer: assigns the request id, bounds the request's time, turns any error
//! into the JSON envelope, echoes `X-Request-Id`, and writes one log line per request.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};
use poem_openapi::OperationId;
use tracing::Instrument as _;

use super::{head_limits, request_id};
use crate::{
    api::error::{error_response, timeout_response},
    metrics::Metrics,
    telemetry::{self, AccessLine},
};

/// The request-context middleware.
pub struct AccessLog {
    /// Longest a request may take before it is answered with 503.
    pub timeout: Duration,
    /// Where request counts and latencies are recorded.
    pub metrics: Arc<Metrics>,
}

impl<E: Endpoint> Middleware<E> for AccessLog {
    type Output = AccessLogEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        AccessLogEndpoint {
            inner,
            timeout: self.timeout,
            metrics: self.metrics.clone(),
        }
    }
}

/// [`AccessLog`] around an endpoint.
pub struct AccessLogEndpoint<E> {
    inner: E,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl<E: Endpoint> Endpoint for AccessLogEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Response> {
        let started = Instant::now();
        let id = request_id::accept_or_generate(
            req.headers()
                .get(request_id::HEADER)
                .and_then(|v| v.to_str().ok()),
        );
        let method = head_limits::known_method(req.method()).unwrap_or("other");
        let path = req.uri().path().to_owned();
        // At debug level: lines written while handling a request carry `request_id` themselves
        // (`request_id::known()`); `--log debug` adds this span to every line.
        let span = tracing::debug_span!("request", request_id = %id);

        let call = async {
            if let Some(refused) = head_limits::check(&req) {
                return refused;
            }
            // Boxed: the layers below make a future of kilobytes, which every move of this
            // one (hyper moves it into its connection state) would otherwise copy.
            let inner = Box::pin(self.inner.call(req));
            match tokio::time::timeout(self.timeout, inner).await {
                Ok(Ok(out)) => out.into_response(),
                Ok(Err(err)) => error_response(err),
                Err(_) => timeout_response(),
            }
        };
        let (mut resp, user_id) = request_id::scope(id.clone(), call.instrument(span)).await;

        let route = resp.data::<OperationId>().map_or("-", |op| op.0);
        let status = resp.status().as_u16();
        let seconds = started.elapsed().as_secs_f64();
        self.metrics.request(method, route, status, seconds);
        telemetry::access(&AccessLine {
            request_id: &id,
            method,
            path: &path,
            route,
            status,
            latency_ms: seconds * 1000.0,
            user_id,
        });
        let headers = resp.headers_mut();
        if let Ok(value) = id.parse() {
            headers.insert(request_id::HEADER, value);
        }
        // No response may be sniffed into another type (a JSON error rendered as HTML).
        headers.insert(
            poem::http::header::X_CONTENT_TYPE_OPTIONS,
            poem::http::HeaderValue::from_static("nosniff"),
        );
        if status == 405 {
            if let Some(allow) = crate::api::allowed_methods(&path) {
                resp.headers_mut().insert(
                    poem::http::header::ALLOW,
                    poem::http::HeaderValue::from_static(allow),
                );
            }
        }
        Ok(resp)
    }
}
