//! The one place where failures become HTTP: [`AppError`] from services and `poem::Error`s
//! raised by the framework (routing, parameter and body parsing, limits) both end up as an
//! [`ApiError`], whose body is always the JSON [`ErrorBody`].

use poem::{
    error::{MethodNotAllowedError, NotFoundError, ReadBodyError},
    http::StatusCode,
    IntoResponse, Response,
};
use poem_openapi::{
    error::{
        AuthorizationError, ContentTypeError, ParseParamError, ParsePathError,
        ParseRequestPayloadError,
    },
    payload::Json,
    ApiResponse,
};

use super::{
    body::InvalidBody,
    envelope::{ErrorBody, ErrorDetail},
    plain,
    security::InvalidToken,
};
use crate::{
    domain::FieldError,
    error::AppError,
    middleware::{
        rate_limit::{Refused, Throttled},
        request_id,
    },
};

/// Every error response an operation can give.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request does not match this document: bad JSON, a wrong type, an unknown field, a
    /// value outside a stated limit. `details` names each offending field.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Authentication is missing or invalid: no bearer token, or one that is malformed,
    /// expired, or signed by someone else; or wrong login credentials.
    #[oai(status = 401)]
    Unauthorized(
        Json<ErrorBody>,
        /// `Bearer realm="agora"`, with `error="invalid_token"` when a token was refused.
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
    /// Authenticated, but this caller may not do this (role or ownership).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such resource.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The request conflicts with the resource's current state.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// `If-Match` does not match the resource's current ETag.
    #[oai(status = 412)]
    PreconditionFailed(Json<ErrorBody>),
    /// The request body is larger than the server accepts (1 MiB by default).
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// The request target (path and query) is longer than 8 KiB.
    #[oai(status = 414)]
    UriTooLong(Json<ErrorBody>),
    /// The body is not `application/json`.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// The request matches this document but breaks a rule it cannot state: a close time in
    /// the past, a blank name, duplicate outcome labels, an unknown outcome, a reused
    /// idempotency key. `details` names each offending field.
    #[oai(status = 422)]
    Unprocessable(Json<ErrorBody>),
    /// Too many requests: the caller used up a rate-limit quota (see `RateLimit-Policy`).
    /// Retry after `Retry-After` seconds.
    #[oai(status = 429)]
    TooManyRequests(
        Json<ErrorBody>,
        /// Whole seconds after which a retry can succeed (rounded up).
        #[oai(header = "Retry-After")]
        u64,
        /// The quota that was used up, e.g. `"writes";q=120;w=60`.
        #[oai(header = "RateLimit-Policy")]
        String,
        /// What is left of it, e.g. `"writes";r=0;t=1` (`t`: seconds until more).
        #[oai(header = "RateLimit")]
        String,
    ),
    /// More than 100 header fields, or more than 32 KiB of them.
    #[oai(status = 431)]
    HeadersTooLarge(Json<ErrorBody>),
    /// An unexpected error; the details are in the server log under the request id.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The server cannot serve now (database busy or shutting down, request timed out);
    /// retry later.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

/// Builds an error body for the current request.
fn body(code: &str, message: impl Into<String>, details: Vec<ErrorDetail>) -> Json<ErrorBody> {
    Json(ErrorBody {
        success: false,
        error: message.into(),
        code: code.into(),
        details,
        request_id: request_id::current(),
    })
}

fn details(fields: Vec<FieldError>) -> Vec<ErrorDetail> {
    fields
        .into_iter()
        .map(|f| ErrorDetail {
            field: f.field,
            message: f.message,
        })
        .collect()
}

impl ApiError {
    /// The 500 sent for a bug; the cause is logged here, once, and never sent.
    pub fn internal(cause: &str) -> Self {
        tracing::error!(
            request_id = request_id::known(),
            error = cause,
            "internal error"
        );
        ApiError::Internal(body("internal_error", "internal server error", vec![]))
    }
}

impl ApiError {
    /// The 429 for a used-up quota.
    pub fn rate_limited(t: &Throttled) -> Self {
        ApiError::TooManyRequests(
            body(
                "rate_limited",
                format!("too many requests; retry in {} s", t.retry_after),
                vec![],
            ),
            t.retry_after,
            t.policy.to_str().unwrap_or_default().to_owned(),
            t.state.clone(),
        )
    }
}

impl ApiError {
    /// The readiness 503 while the rate-limit store does not answer and limited requests are
    /// refused meanwhile; the cause is logged here.
    pub fn rate_limit_store_down(cause: &str) -> Self {
        tracing::warn!(
            error = cause,
            "not ready: the rate-limit store (Redis) does not answer"
        );
        ApiError::Unavailable(body(
            "unavailable",
            "the rate-limit store (Redis) does not answer; limited requests are refused until it does",
            vec![],
        ))
    }
}

impl From<&Refused> for ApiError {
    fn from(refused: &Refused) -> Self {
        match refused {
            Refused::Throttled(t) => ApiError::rate_limited(t),
            Refused::Unchecked => ApiError::Unavailable(body(
                "unavailable",
                "rate limits cannot be checked right now; retry shortly",
                vec![],
            )),
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Validation(fields) => ApiError::Unprocessable(body(
                "validation_failed",
                "validation failed",
                details(fields),
            )),
            AppError::Unauthorized(why) => unauthorized(&why, false),
            AppError::Forbidden(why) => ApiError::Forbidden(body("forbidden", why, vec![])),
            AppError::NotFound(what) => {
                ApiError::NotFound(body("not_found", format!("{what} not found"), vec![]))
            }
            AppError::Conflict { code, message } => ApiError::Conflict(body(code, message, vec![])),
            e @ AppError::PreconditionFailed { .. } => {
                ApiError::PreconditionFailed(body("precondition_failed", e.to_string(), vec![]))
            }
            AppError::Unprocessable {
                code,
                message,
                details: fields,
            } => ApiError::Unprocessable(body(code, message, details(fields))),
            AppError::Unavailable(why) => {
                tracing::warn!(request_id = request_id::known(), error = %why, "service unavailable");
                ApiError::Unavailable(body(
                    "unavailable",
                    "service temporarily unavailable; retry later",
                    vec![],
                ))
            }
            AppError::TooManyStreams { limit } => ApiError::TooManyRequests(
                body(
                    "too_many_streams",
                    format!("this client holds {limit} open event streams, as many as it may; close one first"),
                    vec![],
                ),
                1,
                format!("\"streams\";q={limit}"),
                "\"streams\";r=0;t=1".into(),
            ),
            AppError::Internal(why) => ApiError::internal(&why),
        }
    }
}

impl ApiError {
    /// The 422 for query or path parameters that match the document but break a rule it
    /// cannot state (a damaged cursor, a cursor from another list, a cursor with an offset).
    pub fn invalid_parameters(fields: Vec<FieldError>) -> Self {
        let first = fields.first().map_or("", |f| f.field.as_str());
        ApiError::Unprocessable(body(
            "invalid_parameter",
            format!("invalid parameter `{first}`"),
            details(fields),
        ))
    }
}

impl From<Vec<FieldError>> for ApiError {
    fn from(fields: Vec<FieldError>) -> Self {
        AppError::Validation(fields).into()
    }
}

/// The answer to a request that took longer than the configured timeout.
pub fn timeout_response() -> Response {
    ApiError::Unavailable(body(
        "timeout",
        "the request took too long; retry later",
        vec![],
    ))
    .into_response()
}

/// Turns any error raised outside a handler (routing, parsing, limits, timeouts) into the JSON
/// envelope. Errors that already carry a response (a handler's [`ApiError`]) pass unchanged.
pub fn error_response(err: poem::Error) -> Response {
    if err.is_from_response() {
        return err.into_response();
    }
    let api = if err.is::<AuthorizationError>() {
        unauthorized(
            "a bearer token is required (Authorization: Bearer <access token>)",
            false,
        )
    } else if let Some(InvalidToken(why)) = err.downcast_ref::<InvalidToken>() {
        unauthorized(why, true)
    } else if err.is::<NotFoundError>() {
        ApiError::NotFound(body(
            "route_not_found",
            "no route matches this path",
            vec![],
        ))
    } else if err.is::<MethodNotAllowedError>() {
        return status_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this path",
        );
    } else if let Some(e) = err.downcast_ref::<ParseParamError>() {
        param_error(e.name, &e.reason)
    } else if let Some(e) = err.downcast_ref::<ParsePathError>() {
        param_error(e.name, &e.reason)
    } else if let Some(InvalidBody(problems)) = err.downcast_ref::<InvalidBody>() {
        ApiError::BadRequest(body(
            "invalid_body",
            "the request body is not valid",
            problems.clone(),
        ))
    } else if let Some(e) = err.downcast_ref::<ParseRequestPayloadError>() {
        payload_error(&e.reason)
    } else if let Some(e) = err.downcast_ref::<ContentTypeError>() {
        ApiError::UnsupportedMediaType(body(
            "unsupported_media_type",
            format!("{e}; send application/json"),
            vec![],
        ))
    } else if let Some(ReadBodyError::PayloadTooLarge) = err.downcast_ref::<ReadBodyError>() {
        // The rest of the body is never read, so the connection cannot carry another request:
        // saying so keeps a client from sending its next request on it as it closes.
        let mut response =
            ApiError::PayloadTooLarge(body("payload_too_large", "request body too large", vec![]))
                .into_response();
        response.headers_mut().insert(
            poem::http::header::CONNECTION,
            poem::http::HeaderValue::from_static("close"),
        );
        return response;
    } else if err.status().is_client_error() {
        ApiError::BadRequest(body("bad_request", err.to_string(), vec![]))
    } else {
        ApiError::internal(&err.to_string())
    };
    api.into_response()
}

fn unauthorized(why: &str, token_refused: bool) -> ApiError {
    let challenge = if token_refused {
        r#"Bearer realm="agora", error="invalid_token""#
    } else {
        r#"Bearer realm="agora""#
    };
    ApiError::Unauthorized(body("unauthorized", why, vec![]), challenge.into())
}

fn param_error(name: &str, reason: &str) -> ApiError {
    // poem-openapi reports path parameters by their internal names (`param0`, ...); every
    // agora route has exactly one path parameter, `id`.
    let name = if name.starts_with("param") && name[5..].bytes().all(|b| b.is_ascii_digit()) {
        "id"
    } else {
        name
    };
    ApiError::BadRequest(body(
        "invalid_parameter",
        format!("invalid parameter `{name}`"),
        vec![ErrorDetail {
            field: name.into(),
            message: plain::translate(reason).1,
        }],
    ))
}

/// A body refused by a `Json` payload (request bodies use [`super::body::JsonBody`], which
/// names every field; this is the fallback): the reason in plain words.
fn payload_error(reason: &str) -> ApiError {
    let (field, message) = if reason.contains(" at line ") {
        (None, format!("is not valid JSON: {reason}"))
    } else {
        plain::translate(reason)
    };
    ApiError::BadRequest(body(
        "invalid_body",
        "the request body is not valid",
        vec![ErrorDetail {
            field: field.unwrap_or_else(|| "body".into()),
            message,
        }],
    ))
}

/// The JSON envelope for 405, which no operation declares (it answers methods the document
/// does not list).
fn status_response(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(body(code, message, vec![]).0)).into_response()
}

/// The 405 for a method HTTP does not define (or agora does not know), on any path.
pub fn unknown_method_response() -> Response {
    status_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "unknown HTTP method; agora answers GET, HEAD, POST, PUT, PATCH, DELETE and OPTIONS",
    )
}

impl ApiError {
    /// The 414 for a request target over the limit.
    pub fn uri_too_long(message: String) -> Self {
        ApiError::UriTooLong(body("uri_too_long", message, vec![]))
    }

    /// The 431 for too many or too large header fields.
    pub fn headers_too_large(message: String) -> Self {
        ApiError::HeadersTooLarge(body("headers_too_large", message, vec![]))
    }
}
