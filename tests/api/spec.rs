//! The committed OpenAPI document is exactly what the server serves, and Swagger UI is served.

use reqwest::StatusCode;

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
