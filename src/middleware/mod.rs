//! HTTP middleware: request id and access log (the outermost layer, which also turns every
//! error into the JSON envelope), panic catching, request timeout, rate limiting and body
//! size limit.

pub mod access_log;
pub mod body_limit;
pub mod head_limits;
pub mod rate_limit;
pub mod request_id;
