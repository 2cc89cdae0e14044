//! Limits on the request head that agora answers itself, with the JSON envelope: a method it
//! does not know (405 with `Allow`, as for a known method a path does not take: clients and
//! checkers such as schemathesis expect 405 for any method the document does not list), a URI over [`MAX_URI_BYTES`] (414), more than [`MAX_HEADERS`] headers
//! or header fields over [`MAX_HEAD_BYTES`] in all (431). They sit below hyper's own parser
//! ceilings ([`crate::server`]) so that the usual oversized request reaches this check; only
//! a request past those ceilings gets hyper's bare answer.

use poem::{http::Method, IntoResponse, Request, Response};

use crate::api::error::{unknown_method_response, ApiError};

/// Longest request target (path and query), in bytes.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 100;
/// Most bytes of header names and values in one request.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// The method's name if it is one of HTTP's registered methods agora may answer, else `None`.
/// Used as a metrics label, so an unknown method never becomes a new label value.
pub fn known_method(method: &Method) -> Option<&'static str> {
    Some(match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => return None,
    })
}

/// The refusal for a request whose head breaks a limit, or `None` when it is within them.
pub fn check(req: &Request) -> Option<Response> {
    if known_method(req.method()).is_none() {
        return Some(unknown_method_response());
    }
    let uri = req.uri();
    let target = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > MAX_URI_BYTES {
        return Some(
            ApiError::uri_too_long(format!(
                "the request target is longer than {MAX_URI_BYTES} bytes"
            ))
            .into_response(),
        );
    }
    let headers = req.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEAD_BYTES {
        return Some(
            ApiError::headers_too_large(format!(
                "at most {MAX_HEADERS} header fields of {MAX_HEAD_BYTES} bytes in all are accepted"
            ))
            .into_response(),
        );
    }
    None
}
