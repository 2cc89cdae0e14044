//! Every error the server can produce is the JSON envelope with the right status, and a
//! rejected write changes nothing.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{on_postgres, Caller, TestApp};

async fn app_with_market() -> (TestApp, Caller, String) {
    let app = TestApp::spawn().await;
    let user = app.user("alice").await;
    let m = user.create_market(json!({"name": "Existing market"})).await;
    let path = format!("/api/markets/{}", m["id"]);
    (app, user, path)
}

#[tokio::test]
async fn list_parameters_out_of_range_or_unknown_are_400_with_the_field_named() {
    let app = TestApp::spawn().await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("offset=1000001", "offset"),
        ("offset=-5", "offset"),
        ("sort=bogus", "sort"),
        ("order=sideways", "order"),
        ("status=open", "status"),
        ("creator_id=0", "creator_id"),
        ("creator_id=abc", "creator_id"),
    ] {
        let reply = app.get(&format!("/api/markets?{query}")).await;
        reply.assert_field_error(400, "invalid_parameter", field);
    }
    for ok in [
        "limit=1",
        "limit=100",
        "offset=1000000",
        "sort=volume&order=asc",
    ] {
        assert_eq!(
            app.get(&format!("/api/markets?{ok}")).await.status,
            StatusCode::OK,
            "{ok}"
        );
    }
}

#[tokio::test]
async fn a_market_id_that_is_not_a_positive_number_is_400_and_an_unknown_one_404() {
    let (app, user, _) = app_with_market().await;
    for bad in ["abc", "0", "-3", "1.5", "99999999999999999999"] {
        app.get(&format!("/api/markets/{bad}"))
            .await
            .assert_field_error(400, "invalid_parameter", "id");
    }
    app.get("/api/markets/424242")
        .await
        .assert_error(404, "not_found");
    user.patch("/api/markets/424242", json!({"name": "Nobody"}))
        .await
        .assert_error(404, "not_found");
    user.put("/api/markets/424242", json!({"name": "Nobody"}))
        .await
        .assert_error(404, "not_found");
    user.delete("/api/markets/424242")
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_both_json() {
    let app = TestApp::spawn().await;
    app.get("/api/nope")
        .await
        .assert_error(404, "route_not_found");
    app.get("/").await.assert_error(404, "route_not_found");
    // RFC 9110: a 405 lists the methods the path does serve.
    for (method, path, allow) in [
        (Method::DELETE, "/api/markets", "GET, HEAD, POST"),
        (Method::POST, "/healthz", "GET, HEAD"),
        (
            Method::TRACE,
            "/api/markets/7",
            "DELETE, GET, HEAD, PATCH, PUT",
        ),
        (Method::PUT, "/api/markets/search", "GET, HEAD"),
        (Method::GET, "/api/markets/7/close", "POST"),
        (Method::POST, "/docs", "GET, HEAD"),
        (Method::DELETE, "/openapi.json", "GET, HEAD"),
    ] {
        let reply = app.send(method.clone(), path, None, &[]).await;
        reply.assert_error(405, "method_not_allowed");
        assert_eq!(reply.header("allow"), Some(allow), "{method} {path}");
    }
}

#[tokio::test]
async fn invalid_create_bodies_are_refused_with_details_and_create_nothing() {
    let (app, user, _) = app_with_market().await;
    let before = app.snapshot();
    let past = "2001-01-01T00:00:00Z";
    let cases = [
        (json!({"outcomes": ["A", "B"]}), "name"),
        (json!({"name": 5}), "name"),
        (json!({"name": "ab"}), "name"),
        (json!({"name": "   ab   "}), "name"),
        (json!({"name": "x".repeat(201)}), "name"),
        (json!({"name": "Valid name", "creator_id": 2}), "creator_id"),
        (
            json!({"name": "Valid name", "outcomes": "YES,NO"}),
            "outcomes",
        ),
        (
            json!({"name": "Valid name", "outcomes": ["only"]}),
            "outcomes",
        ),
        (
            json!({"name": "Valid name", "outcomes": (0..11).map(|i| i.to_string()).collect::<Vec<_>>()}),
            "outcomes",
        ),
        (
            json!({"name": "Valid name", "outcomes": ["Yes", "yes"]}),
            "outcomes[1]",
        ),
        (
            json!({"name": "Valid name", "outcomes": ["Yes", " "]}),
            "outcomes[1]",
        ),
        (
            json!({"name": "Valid name", "outcomes": ["Yes", "x".repeat(51)]}),
            "outcomes[1]",
        ),
        (
            json!({"name": "Valid name", "close_time": past}),
            "close_time",
        ),
        (
            json!({"name": "Valid name", "close_time": "tomorrow"}),
            "close_time",
        ),
        (
            json!({"name": "Valid name", "description": "x".repeat(5001)}),
            "description",
        ),
        (
            json!({"name": "Valid name", "status": "resolved"}),
            "status",
        ),
        (json!({"name": "Valid\u{0007}name"}), "name"),
        (json!(["not", "an", "object"]), "body"),
    ];
    for (body, field) in cases {
        let reply = user.post("/api/markets", body.clone()).await;
        let (status, code) = if reply.body["code"] == "validation_failed" {
            (422, "validation_failed")
        } else {
            (400, "invalid_body")
        };
        reply.assert_field_error(status, code, field);
        assert!(
            !reply.body["details"][0]["message"]
                .as_str()
                .unwrap()
                .is_empty(),
            "{body}"
        );
    }
    assert_eq!(app.snapshot(), before);
}

#[tokio::test]
async fn null_is_refused_where_the_spec_does_not_allow_it() {
    let (app, user, path) = app_with_market().await;
    let before = app.snapshot();
    // A market's name cannot be cleared: `null` is not "leave it out".
    user.patch(&path, json!({"name": null}))
        .await
        .assert_error(400, "invalid_body");
    assert_eq!(app.snapshot(), before);
    let kept = user.patch(&path, json!({"description": null})).await;
    assert_eq!(kept.status, StatusCode::OK, "{}", kept.text);
    assert!(kept.body["data"]["name"].is_string());
    // Nor is `initial_stake` nullable: left out, it places no stake.
    let before = app.snapshot();
    user.post(
        "/api/markets",
        json!({"name": "No stake", "initial_stake": null}),
    )
    .await
    .assert_error(400, "invalid_body");
    assert_eq!(app.snapshot(), before);
}

#[tokio::test]
async fn validation_reports_every_problem_at_once() {
    let (_app, user, _) = app_with_market().await;
    let reply = user.post(
            "/api/markets",
            json!({"name": "    abc    d", "outcomes": ["A", "a", "B"], "close_time": "2001-01-01T00:00:00Z"}),
        )
        .await;
    let details = reply.assert_error(422, "validation_failed");
    let fields: Vec<_> = details
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["outcomes[1]", "close_time"]);
}

#[tokio::test]
async fn invalid_edits_are_refused_and_change_nothing() {
    let (app, user, path) = app_with_market().await;
    let before = app.snapshot();
    for (body, field) in [
        (json!({"foo": 1}), "foo"),
        (json!({"name": "ok name", "status": "closed"}), "status"),
        (json!({"creator_id": 2}), "creator_id"),
        (json!({"name": "ab"}), "name"),
        (json!({"name": 7}), "name"),
        (json!({"close_time": "2001-01-01T00:00:00Z"}), "close_time"),
        (json!({"description": "x".repeat(5001)}), "description"),
    ] {
        let reply = user.patch(&path, body).await;
        let (status, code) = if reply.body["code"] == "validation_failed" {
            (422, "validation_failed")
        } else {
            (400, "invalid_body")
        };
        reply.assert_field_error(status, code, field);
    }
    user.put(&path, json!({"description": "no name"}))
        .await
        .assert_field_error(400, "invalid_body", "name");
    user.put(&path, json!({"name": "Fine", "outcomes": ["A", "B"]}))
        .await
        .assert_field_error(400, "invalid_body", "outcomes");
    assert_eq!(app.snapshot(), before);
}

#[tokio::test]
async fn malformed_json_and_wrong_content_types_are_rejected_as_json_errors() {
    let (app, user, path) = app_with_market().await;
    let before = app.snapshot();
    let raw = |method: Method, path: String, ctype: Option<&'static str>, body: &'static str| {
        let mut req = app
            .client
            .request(method, format!("{}{}", app.base, path))
            .bearer_auth(&user.token)
            .body(body);
        if let Some(ctype) = ctype {
            req = req.header("content-type", ctype);
        }
        async move { TestApp::read(req.send().await.unwrap()).await }
    };
    raw(
        Method::POST,
        "/api/markets".into(),
        Some("application/json"),
        "{\"name\": ",
    )
    .await
    .assert_error(400, "invalid_body");
    raw(
        Method::POST,
        "/api/markets".into(),
        Some("application/json"),
        "",
    )
    .await
    .assert_error(400, "invalid_body");
    raw(
        Method::PATCH,
        path.clone(),
        Some("application/json"),
        "not json",
    )
    .await
    .assert_error(400, "invalid_body");
    raw(
        Method::POST,
        "/api/markets".into(),
        Some("text/plain"),
        "{}",
    )
    .await
    .assert_error(415, "unsupported_media_type");
    raw(Method::POST, "/api/markets".into(), None, "{}")
        .await
        .assert_error(415, "unsupported_media_type");
    raw(
        Method::PUT,
        path,
        Some("application/x-www-form-urlencoded"),
        "name=x",
    )
    .await
    .assert_error(415, "unsupported_media_type");
    assert_eq!(app.snapshot(), before);
}

#[tokio::test]
async fn bodies_over_one_mebibyte_are_413_whether_declared_or_streamed() {
    let (app, user, path) = app_with_market().await;
    let before = app.snapshot();
    let big = format!(
        "{{\"name\": \"Big one\", \"description\": \"{}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let declared = app
        .client
        .post(format!("{}/api/markets", app.base))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    let declared = TestApp::read(declared).await;
    declared.assert_error(413, "payload_too_large");
    // The body was not read: the connection closes, and says so.
    assert_eq!(declared.headers["connection"], "close");

    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .into_bytes()
        .chunks(64 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let streamed = app
        .client
        .patch(format!("{}{path}", app.base))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    let streamed = TestApp::read(streamed).await;
    streamed.assert_error(413, "payload_too_large");
    assert_eq!(streamed.headers["connection"], "close");
    assert_eq!(app.snapshot(), before);

    let just_under = format!("{{\"description\": \"{}\"}}", "y".repeat(4000));
    assert_eq!(
        user.patch(&path, serde_json::from_str(&just_under).unwrap())
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_sane_incoming_request_id_is_echoed_and_an_unsafe_one_replaced() {
    let app = TestApp::spawn().await;
    let reply = app
        .send(
            Method::GET,
            "/api/markets/999",
            None,
            &[("x-request-id", "trace-abc.123")],
        )
        .await;
    reply.assert_error(404, "not_found");
    assert_eq!(reply.header("x-request-id"), Some("trace-abc.123"));
    assert_eq!(reply.body["request_id"], "trace-abc.123");

    let reply = app
        .send(
            Method::GET,
            "/healthz",
            None,
            &[("x-request-id", "evil\"value with spaces")],
        )
        .await;
    let id = reply.header("x-request-id").unwrap();
    assert_ne!(id, "evil\"value with spaces");
    assert_eq!(id.len(), 36, "a generated UUID");
}

#[tokio::test]
async fn health_and_readiness_answer_json() {
    let app = TestApp::spawn().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body, json!({"status": "ok"}));
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body["status"], "ok");
    // Each engine numbers its own migrations.
    let version = if on_postgres() {
        agora::repo::postgres::SCHEMA_VERSION
    } else {
        agora::db::SCHEMA_VERSION
    };
    assert_eq!(ready.body["schema_version"], version);
}

#[tokio::test]
async fn an_internal_error_is_a_generic_500_that_leaks_no_detail() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    app.db().batch("DROP TABLE ledger");
    let reply = alice.get("/api/me/ledger").await;
    reply.assert_error(500, "internal_error");
    assert_eq!(reply.body["error"], "internal server error");
    assert!(
        !reply.text.contains("ledger") && !reply.text.contains("SQL"),
        "{}",
        reply.text
    );
    let health = app.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK, "the server lives on");
}
