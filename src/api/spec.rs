//! The OpenAPI document as served: what poem-openapi derives, with the post-processing that
//! states what its derives cannot (see [`finish`]), and the route table the `Allow` header of a
//! 405 is read from.

use serde_json::{json, Value};

use super::spec_json;

/// Every operation object of `doc` (`paths.<path>.<method>`).
fn operations_mut(doc: &mut Value) -> impl Iterator<Item = &mut Value> {
    doc["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|p| p.values_mut())
        .flat_map(|item| {
            item.as_object_mut()
                .into_iter()
                .flat_map(|o| o.values_mut())
        })
}

/// Calls `f` on every object in `value`, outermost first, `value` itself included.
fn each_object(value: &mut Value, f: &mut impl FnMut(&mut serde_json::Map<String, Value>)) {
    match value {
        Value::Object(map) => {
            f(map);
            map.values_mut().for_each(|v| each_object(v, f));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| each_object(v, f)),
        _ => {}
    }
}

/// Paths served outside the OpenAPI document (Swagger UI, the document itself, metrics).
const UNDOCUMENTED_PATHS: [&str; 3] = ["/docs", "/openapi.json", "/metrics"];

/// The `Allow` header value for `path` (`GET, HEAD, PATCH`): the methods its route serves, for
/// a 405 (RFC 9110 requires it there). `None` when no route matches `path`.
pub fn allowed_methods(path: &str) -> Option<&'static str> {
    /// Each route: its template's segments (`None` for a `{parameter}`) and its methods.
    type Routes = Vec<(Vec<Option<String>>, String)>;
    static ROUTES: std::sync::LazyLock<Routes> = std::sync::LazyLock::new(|| {
        let doc: Value = serde_json::from_str(&spec_json()).unwrap_or_default();
        let mut routes: Routes = UNDOCUMENTED_PATHS
            .iter()
            .map(|p| (segments(p), "GET, HEAD".to_owned()))
            .collect();
        for (template, item) in doc["paths"].as_object().into_iter().flatten() {
            let mut methods: Vec<String> = item
                .as_object()
                .into_iter()
                .flat_map(|o| o.keys())
                .map(|m| m.to_ascii_uppercase())
                .collect();
            if methods.iter().any(|m| m == "GET") {
                methods.push("HEAD".to_owned());
            }
            methods.sort();
            routes.push((segments(template), methods.join(", ")));
        }
        routes
    });
    fn segments(template: &str) -> Vec<Option<String>> {
        template
            .split('/')
            .map(|s| (!s.starts_with('{')).then(|| s.to_owned()))
            .collect()
    }
    let wanted: Vec<&str> = path.split('/').collect();
    ROUTES
        .iter()
        .filter(|(template, _)| {
            template.len() == wanted.len()
                && template
                    .iter()
                    .zip(&wanted)
                    .all(|(t, w)| t.as_deref().is_none_or(|t| t == *w))
        })
        // A literal segment beats a parameter: `/api/markets/search`, not `/api/markets/{id}`.
        .max_by_key(|(template, _)| template.iter().filter(|t| t.is_some()).count())
        .map(|(_, methods)| methods.as_str())
}

/// What poem-openapi cannot say through its derives, or says in a shape generators reject,
/// put right in its document:
/// - every request body rejects unknown fields (`deny_unknown_fields` on each body type), so
///   its schema gets `additionalProperties: false`;
/// - operations without a security requirement of their own are public (`security: []` at
///   the root says so explicitly);
/// - the rate limiter (a middleware) adds `RateLimit-Policy` and `RateLimit` to every response
///   under `/api/`; the unlimited probes never answer 429;
/// - an unsigned Rust integer (`format: uint32`, `uint64`) is never negative, and a `u32`
///   never above 4294967295: the range the format implies is stated as `minimum`/`maximum`,
///   which generators and validators understand (the `uint*` formats are not standard);
/// - a documented field that refers to another schema comes out as
///   `allOf: [{$ref}, {description}]`, which openapi-python-client refuses for enums and turns
///   into an anonymous copy for objects: it becomes `allOf: [{$ref}]` beside the description;
/// - bodies are keyed `application/json` (the media type; the server's `Content-Type` adds
///   `; charset=utf-8`, and it accepts either), which JSON-aware client helpers look for;
/// - a response field that is `nullable` is always sent (as `null` when empty), so it is
///   `required`: clients then type it `T | null`, not `T | null | undefined`.
pub(super) fn finish(raw: &str) -> String {
    let Ok(mut doc) = serde_json::from_str::<Value>(raw) else {
        return raw.to_owned();
    };
    let bodies = request_schemas(&mut doc);
    rate_limit_headers(&mut doc);
    each_object(&mut doc, &mut |map| {
        unsigned_range(map);
        plain_ref(map);
    });
    json_media_types(&mut doc);
    event_streams(&mut doc);
    for (name, schema) in doc["components"]["schemas"]
        .as_object_mut()
        .into_iter()
        .flatten()
    {
        let Some(schema) = schema.as_object_mut() else {
            continue;
        };
        if bodies.top.contains(name) {
            schema.insert("additionalProperties".into(), false.into());
        }
        if !bodies.all.contains(name) {
            nulls_required(schema);
        }
    }
    if let Some(root) = doc.as_object_mut() {
        root.entry("security").or_insert_with(|| json!([]));
    }
    let mut out = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| raw.to_owned());
    out.push('\n');
    out
}

/// The component schemas requests carry: `top`, the request bodies themselves, and `all`,
/// those and every schema they refer to (directly or not).
struct RequestSchemas {
    top: std::collections::BTreeSet<String>,
    all: std::collections::BTreeSet<String>,
}

fn request_schemas(doc: &mut Value) -> RequestSchemas {
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(name) = map.get("$ref").and_then(Value::as_str) {
                    out.extend(name.rsplit('/').next().map(str::to_owned));
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut top = Vec::new();
    for op in operations_mut(doc) {
        refs(&op["requestBody"], &mut top);
    }
    let mut all = std::collections::BTreeSet::new();
    let mut pending = top.clone();
    while let Some(name) = pending.pop() {
        if all.insert(name.clone()) {
            refs(&doc["components"]["schemas"][&name], &mut pending);
        }
    }
    RequestSchemas {
        top: top.into_iter().collect(),
        all,
    }
}

/// `allOf: [{$ref}, {description}]` -> `allOf: [{$ref}]` (the outer description stays).
fn plain_ref(map: &mut serde_json::Map<String, Value>) {
    let Some(Value::Array(parts)) = map.get_mut("allOf") else {
        return;
    };
    let only_description = |part: &Value| {
        part.as_object()
            .is_some_and(|p| p.keys().all(|k| k == "description"))
    };
    if parts.iter().any(|p| p.get("$ref").is_some()) {
        parts.retain(|p| !only_description(p));
    }
}

/// A `text/event-stream` body's schema describes one event, as OpenAPI 3.0 readers take it
/// (3.2 says so with `itemSchema`): an object of the SSE fields, whose `data` is the event's
/// JSON (the schema poem-openapi gives, an array of `$ref`, is kept as `x-content-schema` of
/// `data`). As an array, checkers validated each event of a stream against the array.
fn event_streams(doc: &mut Value) {
    for op in operations_mut(doc) {
        let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
            continue;
        };
        for response in responses.values_mut() {
            let Some(stream) = response.pointer_mut("/content/text~1event-stream") else {
                continue;
            };
            let Some(item) = stream.pointer_mut("/schema/items").map(Value::take) else {
                continue;
            };
            stream["schema"] = json!({
                "type": "object",
                "description": "One Server-Sent Event.",
                "required": ["data"],
                "properties": {
                    "id": {"type": "string", "description": "The event's sequence number."},
                    "event": {"type": "string", "description": "The event's type."},
                    "data": {
                        "type": "string",
                        "description": "The event as JSON.",
                        "x-content-media-type": "application/json",
                        "x-content-schema": item,
                    },
                    "retry": {"type": "integer", "minimum": 0},
                },
            });
        }
    }
}

/// Keys request and response bodies by the bare media type `application/json`.
fn json_media_types(doc: &mut Value) {
    fn bare(body: &mut Value) {
        let Some(content) = body.get_mut("content").and_then(Value::as_object_mut) else {
            return;
        };
        *content = std::mem::take(content)
            .into_iter()
            .map(|(media, value)| match media.split_once(';') {
                Some(("application/json", _)) => ("application/json".to_owned(), value),
                _ => (media, value),
            })
            .collect();
    }
    for op in operations_mut(doc) {
        if let Some(body) = op.get_mut("requestBody") {
            bare(body);
        }
        if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
            responses.values_mut().for_each(bare);
        }
    }
}

/// Adds each `nullable` property of a response schema to its `required` list.
fn nulls_required(schema: &mut serde_json::Map<String, Value>) {
    let nullable: Vec<String> = schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, p)| p["nullable"] == true)
        .map(|(name, _)| name.clone())
        .collect();
    if nullable.is_empty() {
        return;
    }
    let required = schema.entry("required").or_insert_with(|| json!([]));
    if let Some(list) = required.as_array_mut() {
        for name in nullable {
            if !list.iter().any(|r| r == name.as_str()) {
                list.push(name.into());
            }
        }
    }
}

/// Adds `minimum: 0` to an unsigned integer schema, and the `u32` maximum to a `uint32` one,
/// keeping any narrower bound a validator already set.
fn unsigned_range(map: &mut serde_json::Map<String, Value>) {
    let max = match map.get("format").and_then(Value::as_str) {
        Some("uint32") => Some(u64::from(u32::MAX)),
        Some("uint64") => Some(u64::MAX),
        Some("uint8" | "uint16") => None,
        _ => return,
    };
    map.entry("minimum").or_insert_with(|| 0.into());
    if let Some(max) = max {
        map.entry("maximum").or_insert_with(|| max.into());
    }
}

/// Declares the rate-limit headers on every response of a limited (`/api/`) operation, and
/// drops 429 from the others.
fn rate_limit_headers(doc: &mut Value) {
    let header = |description: &str, example: &str| json!({"description": description, "schema": {"type": "string"}, "example": example});
    doc["components"]["headers"] = json!({
        "RateLimit-Policy": header(
            "The quota this request counted against: `\"name\";q=<requests>;w=<window seconds>` \
             (IETF httpapi ratelimit-headers draft).",
            "\"reads\";q=1200;w=60",
        ),
        "RateLimit": header(
            "What is left of that quota: `\"name\";r=<remaining>;t=<seconds until full>`.",
            "\"reads\";r=1199;t=1",
        ),
    });
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let limited = path.starts_with("/api/");
        for op in item
            .as_object_mut()
            .into_iter()
            .flat_map(|o| o.values_mut())
        {
            let Some(responses) = op["responses"].as_object_mut() else {
                continue;
            };
            if !limited {
                responses.remove("429");
            }
            for (status, response) in responses.iter_mut() {
                let Some(response) = response.as_object_mut() else {
                    continue;
                };
                let headers = response.entry("headers").or_insert_with(|| json!({}));
                if let Some(declared) = headers.as_object_mut() {
                    // poem-openapi upper-cases header names; use their usual spelling.
                    *declared = std::mem::take(declared)
                        .into_iter()
                        .map(|(name, value)| (header_case(&name), value))
                        .collect();
                }
                if limited && status != "429" {
                    for name in ["RateLimit-Policy", "RateLimit"] {
                        headers[name] = json!({"$ref": format!("#/components/headers/{name}")});
                    }
                }
                if headers.as_object().is_some_and(|h| h.is_empty()) {
                    response.remove("headers");
                }
            }
        }
    }
}

/// `ETAG` -> `ETag`, `RATELIMIT-POLICY` -> `RateLimit-Policy`, `X-FOO` -> `X-Foo`.
fn header_case(name: &str) -> String {
    const SPECIAL: [&str; 4] = ["ETag", "WWW-Authenticate", "RateLimit", "RateLimit-Policy"];
    if let Some(known) = SPECIAL.iter().find(|k| k.eq_ignore_ascii_case(name)) {
        return (*known).to_owned();
    }
    name.split('-')
        .map(|word| {
            let lower = word.to_ascii_lowercase();
            let mut chars = lower.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}
