//! [`JsonBody`]: a JSON request body like poem-openapi's `Json`, whose problems are reported
//! field by field in plain words.
//!
//! `Json<T>` stops at the first problem and, for a value of the wrong type, does not say which
//! field holds it. When `T` does not parse, `JsonBody` checks the body again against `T`'s
//! schema (see [`super::plain`]) and reports every problem with its field. The successful path
//! costs nothing more than `Json`'s; the document is the same.

use poem::{FromRequest, Request, RequestBody, Result};
use poem_openapi::{
    impl_apirequest_for_payload,
    payload::{Json, ParsePayload, Payload},
    registry::{MetaSchemaRef, Registry},
    types::{ParseFromJSON, Type},
};
use serde_json::Value;

use super::{envelope::ErrorDetail, plain};

/// A request body in JSON.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

/// A body that does not match its schema, with each problem.
#[derive(Debug, thiserror::Error)]
#[error("the request body is not valid")]
pub struct InvalidBody(pub Vec<ErrorDetail>);

impl poem::error::ResponseError for InvalidBody {
    fn status(&self) -> poem::http::StatusCode {
        poem::http::StatusCode::BAD_REQUEST
    }
}

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = <Json<T> as Payload>::CONTENT_TYPE;

    fn check_content_type(content_type: &str) -> bool {
        <Json<T> as Payload>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: ParseFromJSON> ParsePayload for JsonBody<T> {
    const IS_REQUIRED: bool = T::IS_REQUIRED;

    async fn from_request(request: &Request, body: &mut RequestBody) -> Result<Self> {
        let data = Vec::<u8>::from_request(request, body).await?;
        let value = if data.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&data).map_err(|e| {
                InvalidBody(vec![ErrorDetail {
                    field: "body".into(),
                    message: format!("is not valid JSON: {e}"),
                }])
            })?
        };
        match T::parse_from_json(Some(value)) {
            Ok(parsed) => Ok(JsonBody(parsed)),
            Err(e) => Err(InvalidBody(problems::<T>(&data, e.message())).into()),
        }
    }
}

impl_apirequest_for_payload!(JsonBody<T>, T: ParseFromJSON);

/// Every problem of the body `data` (which `T` refused with `reason`), in plain words.
fn problems<T: Type>(data: &[u8], reason: &str) -> Vec<ErrorDetail> {
    let value: Value = serde_json::from_slice(data).unwrap_or(Value::Null);
    let mut registry = Registry::new();
    T::register(&mut registry);
    let mut found = Vec::new();
    plain::check(&value, &T::schema_ref(), &registry, "", &mut found);
    if found.is_empty() {
        // A rule the schema does not show (an unknown field, a null where a field may only
        // be left out): poem-openapi's reason, translated.
        let (field, message) = plain::translate(reason);
        found.push(ErrorDetail {
            field: field.unwrap_or_else(|| "body".into()),
            message,
        });
    }
    found
}
