//! The committed OpenAPI document is exactly what the server serves, and Swagger UI is served.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::TestApp;

#[tokio::test]
async fn committed_openapi_json_matches_what_the_server_serves() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json is committed");
    let app = TestApp::spawn().await;
    let reply = app.get("/openapi.json").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(
        reply.text == committed && agora::api::spec_json() == committed,
        "openapi/openapi.json is stale; regenerate it with:\n    cargo run -q -- openapi > openapi/openapi.json"
    );
}

#[tokio::test]
async fn every_operation_has_an_operation_id_a_tag_and_a_summary() {
    let spec: serde_json::Value = serde_json::from_str(&agora::api::spec_json()).unwrap();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(
                id.contains('_') && id.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{id} is not verb_resource"
            );
            assert_eq!(
                op["tags"].as_array().map(Vec::len),
                Some(1),
                "{id}: one tag"
            );
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{id}: summary"
            );
        }
    }
}

#[tokio::test]
async fn swagger_ui_is_served_at_docs() {
    let app = TestApp::spawn().await;
    let reply = app.get("/docs").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(reply.text.contains("swagger"), "Swagger UI page");
    // It names its (empty) icon, so a browser does not ask for a /favicon.ico that is a 404.
    assert!(reply.text.contains(r#"<link rel="icon" href="data:,">"#));
}

#[tokio::test]
async fn no_response_schema_can_carry_a_password_or_a_hash() {
    let spec: serde_json::Value = serde_json::from_str(&agora::api::spec_json()).unwrap();
    let schemas = spec["components"]["schemas"].as_object().unwrap();
    let request_bodies = ["RegisterBody", "LoginBody"];
    for (name, schema) in schemas {
        for prop in schema["properties"]
            .as_object()
            .into_iter()
            .flat_map(|p| p.keys())
        {
            let p = prop.to_lowercase();
            assert!(!p.contains("hash"), "{name}.{prop} could expose a hash");
            if p.contains("password") {
                assert!(
                    request_bodies.contains(&name.as_str()),
                    "{name}.{prop}: passwords only go in"
                );
            }
        }
    }
}

/// Shapes the stricter generators refuse or mistype, which poem-openapi emits on its own and
/// the server's post-processing puts right (each was found by a generated client in
/// `tests/external`).
#[tokio::test]
async fn the_spec_avoids_the_shapes_client_generators_choke_on() {
    let spec: Value = serde_json::from_str(&agora::api::spec_json()).unwrap();
    let mut problems = Vec::new();
    walk(&spec, "#", &mut |pointer, node| {
        let Some(map) = node.as_object() else { return };
        // openapi-python-client: "Cannot take allOf a non-object" for `allOf: [$ref, {description}]`.
        if let Some(parts) = map.get("allOf").and_then(Value::as_array) {
            if parts.iter().any(|p| {
                p.as_object()
                    .is_some_and(|o| o.keys().all(|k| k == "description"))
            }) {
                problems.push(format!("{pointer}: allOf with a description-only part"));
            }
        }
        // openapi-typescript helpers look for `application/json`, not `...; charset=utf-8`.
        if let Some(content) = map.get("content").and_then(Value::as_object) {
            for media in content.keys().filter(|m| m.contains(';')) {
                problems.push(format!("{pointer}: media type key {media}"));
            }
        }
        // schemathesis: a negative number is schema-valid for `format: uint32` alone.
        if map
            .get("format")
            .and_then(Value::as_str)
            .is_some_and(|f| f.starts_with("uint"))
            && map.get("minimum").is_none()
        {
            problems.push(format!("{pointer}: unsigned without minimum"));
        }
    });
    assert!(problems.is_empty(), "{problems:#?}");

    // A nullable response field is always sent, so clients must not also expect it missing.
    let market = &spec["components"]["schemas"]["MarketView"];
    for field in ["close_time", "description", "resolution"] {
        assert_eq!(market["properties"][field]["nullable"], true, "{field}");
        assert!(
            market["required"]
                .as_array()
                .unwrap()
                .contains(&json!(field)),
            "{field}"
        );
    }
    // ... but a nullable request field stays optional.
    let create = &spec["components"]["schemas"]["CreateMarketBody"];
    assert_eq!(create["required"], json!(["name"]));

    // schemathesis (OpenAPI 3.0) checks each event of a stream against the stream's schema:
    // it describes one event, whose `data` is an EventView as JSON.
    let stream = &spec["paths"]["/api/events"]["get"]["responses"]["200"]["content"]
        ["text/event-stream"]["schema"];
    assert_eq!(stream["type"], "object", "{stream}");
    assert_eq!(stream["properties"]["data"]["type"], "string", "{stream}");
    assert_eq!(
        stream["properties"]["data"]["x-content-schema"]["$ref"],
        "#/components/schemas/EventView"
    );
}

fn walk(node: &Value, pointer: &str, visit: &mut dyn FnMut(&str, &Value)) {
    visit(pointer, node);
    match node {
        Value::Object(map) => {
            for (key, child) in map {
                let key = key.replace('~', "~0").replace('/', "~1");
                walk(child, &format!("{pointer}/{key}"), visit);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                walk(child, &format!("{pointer}/{i}"), visit);
            }
        }
        _ => {}
    }
}
