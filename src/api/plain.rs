//! Plain-words validation messages for requests that do not match the document.
//!
//! poem-openapi reports such problems in its own vocabulary: internal type names
//! (`"integer_int64"`, `"string_date-time"`, `"CreateMarketBody"`), validator syntax
//! (`maximum(100, exclusive: false)`), and for a body no field at all when a value has the
//! wrong type. Two sources give the facts in plain words instead:
//!
//! - a body that failed to parse is checked again against its own schema (the one the document
//!   shows), walking the JSON with the path to each value, so every problem is reported with
//!   its field (`close_time`, `initial_stake.amount`, `outcomes[2]`) at once;
//! - a parameter's reason names the parameter's type; [`describe_type`] turns it into what the
//!   value must be, listing an enumeration's values from the document's schemas.

use std::{collections::HashMap, sync::LazyLock};

use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef, Registry},
    OpenApi,
};
use serde_json::Value;

use super::envelope::ErrorDetail;

/// What an RFC 3339 date-time looks like.
pub const DATE_TIME: &str = "must be an RFC 3339 date-time such as 2027-01-01T00:00:00Z";

/// Every named schema of the API (enumerations and objects), by name.
static SCHEMAS: LazyLock<HashMap<String, MetaSchema>> = LazyLock::new(|| {
    let mut registry = Registry::new();
    <super::Apis as OpenApi>::register(&mut registry);
    registry.schemas.into_iter().collect()
});

fn one_of(values: &[Value]) -> String {
    let names: Vec<String> = values
        .iter()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .collect();
    format!("must be one of: {}", names.join(", "))
}

/// What a value of poem-openapi type `name` must be, in plain words (`None`: not a type name).
pub fn describe_type(name: &str) -> Option<String> {
    let plain = match name {
        "string_date-time" => DATE_TIME.to_owned(),
        "integer_int32" | "integer_int64" | "integer" => "must be an integer".to_owned(),
        n if n.starts_with("integer(uint") || n.starts_with("integer_uint") => {
            "must be a whole number (0 or more)".to_owned()
        }
        "boolean" => "must be true or false".to_owned(),
        "string" | "omittable_string" => "must be a string".to_owned(),
        n if n.starts_with("number") => "must be a number".to_owned(),
        n if n.starts_with("integer") => "must be an integer".to_owned(),
        n if n.starts_with('[') || n.starts_with("array") => "must be an array".to_owned(),
        n => {
            let schema = SCHEMAS.get(n.strip_prefix("omittable_").unwrap_or(n))?;
            if schema.enum_items.is_empty() {
                "must be a JSON object".to_owned()
            } else {
                one_of(&schema.enum_items)
            }
        }
    };
    Some(plain)
}

fn characters(n: impl std::fmt::Display) -> String {
    let n = n.to_string();
    if n == "1" {
        "1 character".to_owned()
    } else {
        format!("{n} characters")
    }
}

/// Parses poem-openapi's validator description (`maximum(100, exclusive: false)`).
fn describe_validator(text: &str) -> Option<String> {
    let (name, args) = text.trim().trim_end_matches('.').split_once('(')?;
    let args = args.strip_suffix(')')?;
    let first = args.split(',').next().unwrap_or("").trim();
    let exclusive = args.contains("exclusive: true");
    Some(match (name, exclusive) {
        ("maximum", false) => format!("must be at most {first}"),
        ("maximum", true) => format!("must be less than {first}"),
        ("minimum", false) => format!("must be at least {first}"),
        ("minimum", true) => format!("must be greater than {first}"),
        ("maxLength", _) => format!("must be at most {} long", characters(first)),
        ("minLength", _) => format!("must be at least {} long", characters(first)),
        ("maxItems", _) => format!("must have at most {first} items"),
        ("minItems", _) => format!("must have at least {first} items"),
        ("pattern", _) => format!("must match the pattern {first}"),
        ("multipleOf", _) => format!("must be a multiple of {first}"),
        _ => return None,
    })
}

/// The text between the first pair of `"` after `marker`.
fn quoted_after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let rest = text.split_once(marker)?.1;
    let rest = rest.strip_prefix('"')?;
    rest.split_once('"').map(|(name, _)| name)
}

/// poem-openapi's reason for a parameter or body value that did not parse, in plain words:
/// the field it names (a body's `field \`x\``, if any) and what is wrong.
pub fn translate(reason: &str) -> (Option<String>, String) {
    let field = reason
        .split_once("field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(field, _)| field.to_owned());
    let message = if reason.contains("unknown field `") {
        "is not a field of this request".to_owned()
    } else if let Some((_, validator)) = reason.split_once("verification failed.") {
        describe_validator(validator).unwrap_or_else(|| "is not valid".to_owned())
    } else if reason.contains("expects an input value") {
        "is required".to_owned()
    } else if let Some(message) = reason
        .split("\": ")
        .nth(1)
        .map(|m| m.split(" (occurred while parsing").next().unwrap_or(m))
        .filter(|m| m.starts_with("must "))
    {
        // Our own types' messages (`Omittable`: "must not be null ...") are plain already.
        message.to_owned()
    } else if let Some(described) = quoted_after(reason, "Expected input type ")
        .or_else(|| quoted_after(reason, "failed to parse "))
        .and_then(describe_type)
    {
        described
    } else {
        "is not valid".to_owned()
    };
    (field, message)
}

fn resolve<'a>(schema: &'a MetaSchemaRef, registry: &'a Registry) -> Option<&'a MetaSchema> {
    match schema {
        MetaSchemaRef::Inline(s) => Some(s),
        MetaSchemaRef::Reference(name) => registry.schemas.get(name),
    }
}

fn integer_range(format: Option<&str>) -> (f64, f64) {
    match format {
        Some("int32") => (f64::from(i32::MIN), f64::from(i32::MAX)),
        Some("uint32") => (0.0, f64::from(u32::MAX)),
        Some("uint64") => (0.0, u64::MAX as f64),
        Some("uint8") => (0.0, 255.0),
        Some("uint16") => (0.0, 65_535.0),
        _ => (i64::MIN as f64, i64::MAX as f64),
    }
}

/// Checks `value` at `path` against `schema`, recording each problem in plain words.
pub fn check(
    value: &Value,
    schema: &MetaSchemaRef,
    registry: &Registry,
    path: &str,
    out: &mut Vec<ErrorDetail>,
) {
    let Some(s) = resolve(schema, registry) else {
        return;
    };
    let field = if path.is_empty() { "body" } else { path };
    let mut problem = |message: String| {
        out.push(ErrorDetail {
            field: field.to_owned(),
            message,
        })
    };
    if value.is_null() && s.nullable {
        return;
    }
    // A documented field that refers to a named schema is `allOf: [{$ref}]` with the field's
    // description beside it.
    if !s.all_of.is_empty() && s.ty.is_empty() {
        for inner in &s.all_of {
            check(value, inner, registry, path, out);
        }
        return;
    }
    if value.is_null() {
        {
            problem(match s.ty {
                "object" if path.is_empty() => "must be a JSON object".to_owned(),
                _ => "must not be null".to_owned(),
            });
        }
        return;
    }
    match s.ty {
        "object" => {
            let Some(object) = value.as_object() else {
                return problem("must be a JSON object".to_owned());
            };
            for (name, property) in &s.properties {
                let inner = if path.is_empty() {
                    (*name).to_owned()
                } else {
                    format!("{path}.{name}")
                };
                match object.get(*name) {
                    Some(v) => check(v, property, registry, &inner, out),
                    None if s.required.contains(name) => out.push(ErrorDetail {
                        field: inner,
                        message: "is required".to_owned(),
                    }),
                    None => {}
                }
            }
        }
        "array" => {
            let Some(items) = value.as_array() else {
                return problem("must be an array".to_owned());
            };
            if let Some(min) = s.min_items.filter(|m| items.len() < *m) {
                problem(format!("must have at least {min} items"));
            }
            if let Some(max) = s.max_items.filter(|m| items.len() > *m) {
                problem(format!("must have at most {max} items"));
            }
            if let Some(item) = &s.items {
                for (i, v) in items.iter().enumerate() {
                    check(v, item, registry, &format!("{field}[{i}]"), out);
                }
            }
        }
        "string" => {
            let Some(text) = value.as_str() else {
                return problem(if s.format == Some("date-time") {
                    DATE_TIME.to_owned()
                } else if !s.enum_items.is_empty() {
                    one_of(&s.enum_items)
                } else {
                    "must be a string".to_owned()
                });
            };
            let len = text.chars().count();
            if !s.enum_items.is_empty() && !s.enum_items.iter().any(|e| e == value) {
                problem(one_of(&s.enum_items));
            } else if s.format == Some("date-time")
                && time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .is_err()
            {
                problem(DATE_TIME.to_owned());
            } else if let Some(min) = s.min_length.filter(|m| len < *m) {
                problem(format!("must be at least {} long", characters(min)));
            } else if let Some(max) = s.max_length.filter(|m| len > *m) {
                problem(format!("must be at most {} long", characters(max)));
            }
        }
        "integer" | "number" => {
            let Some(n) = value.as_f64() else {
                return problem(
                    describe_type(&format!("{}_{}", s.ty, s.format.unwrap_or("")))
                        .unwrap_or_else(|| "must be a number".to_owned()),
                );
            };
            let (low, high) = integer_range(s.format);
            if s.ty == "integer" && !(value.is_i64() || value.is_u64()) {
                problem(
                    describe_type(&format!("integer_{}", s.format.unwrap_or("int64")))
                        .unwrap_or_default(),
                );
            } else if s.ty == "integer" && n < low {
                problem(if low == 0.0 {
                    "must be a whole number (0 or more)".to_owned()
                } else {
                    "is too small".to_owned()
                });
            } else if s.ty == "integer" && n > high {
                problem("is too large".to_owned());
            } else if let Some(min) = s.minimum.filter(|m| n < *m) {
                problem(format!("must be at least {min}"));
            } else if let Some(max) = s.maximum.filter(|m| n > *m) {
                problem(format!("must be at most {max}"));
            }
        }
        "boolean" if !value.is_boolean() => problem("must be true or false".to_owned()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poem_reasons_become_plain_words() {
        let cases = [
            (
                r#"failed to parse "integer_int64": invalid digit found in string"#,
                "must be an integer",
            ),
            (
                r#"failed to parse "MarketStatusView": Expect a valid enumeration value."#,
                "must be one of: active, closed, resolved, cancelled",
            ),
            (
                "verification failed. maximum(100, exclusive: false)",
                "must be at most 100",
            ),
            (
                "verification failed. minLength(1)",
                "must be at least 1 character long",
            ),
            (r#"Type "string" expects an input value."#, "is required"),
            (
                r#"failed to parse "omittable_string": must not be null (leave the field out to keep its value) (occurred while parsing "PatchMarketBody")"#,
                "must not be null (leave the field out to keep its value)",
            ),
            (
                r#"failed to parse "PatchMarketBody": unknown field `foo`."#,
                "is not a field of this request",
            ),
        ];
        for (reason, plain) in cases {
            assert_eq!(translate(reason).1, plain, "{reason}");
        }
        assert_eq!(
            translate("failed to parse \"X\": unknown field `foo`.")
                .0
                .as_deref(),
            Some("foo")
        );
    }
}
