//! Every 400 names the real field and says what is wrong in plain words: no internal type
//! names, no validator syntax, enumerations list their values.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{Caller, TestApp};

/// Words of poem-openapi's vocabulary that must never reach a client.
const INTERNAL: &[&str] = &[
    "Body\"",
    "Body)",
    "CreateMarketBody",
    "ReplaceMarketBody",
    "PatchMarketBody",
    "StakeBody",
    "ResolveBody",
    "RegisterBody",
    "LoginBody",
    "RefreshBody",
    "UpdateUserBody",
    "View",
    "integer_",
    "integer(",
    "string_",
    "number_",
    "omittable_",
    "failed to parse",
    "Expected input type",
    "expects an input value",
    "verification failed",
    "exclusive:",
    "occurred while parsing",
    "enumeration value",
];

/// A request and the detail it must answer with.
struct Case {
    method: Method,
    path: String,
    body: Option<Value>,
    field: &'static str,
    message: &'static str,
}

fn case(
    method: Method,
    path: impl Into<String>,
    body: Option<Value>,
    field: &'static str,
    message: &'static str,
) -> Case {
    Case {
        method,
        path: path.into(),
        body,
        field,
        message,
    }
}

async fn cases(app: &TestApp, user: &Caller) -> Vec<Case> {
    let market = user.create_market(json!({"name": "Message market"})).await["id"].clone();
    let m = format!("/api/markets/{market}");
    let (get, post, put, patch) = (Method::GET, Method::POST, Method::PUT, Method::PATCH);
    let _ = app;
    vec![
        // Bodies: the field, even for a type error; every operation with a body.
        case(
            post.clone(),
            "/api/markets",
            Some(json!({"name": "Valid name", "close_time": "tomorrow"})),
            "close_time",
            "must be an RFC 3339 date-time such as 2027-01-01T00:00:00Z",
        ),
        case(
            post.clone(),
            "/api/markets",
            Some(json!({"name": 42})),
            "name",
            "must be a string",
        ),
        case(
            post.clone(),
            "/api/markets",
            Some(json!({})),
            "name",
            "is required",
        ),
        case(
            post.clone(),
            "/api/markets",
            Some(json!({"name": "ab"})),
            "name",
            "must be at least 3 characters long",
        ),
        case(
            post.clone(),
            "/api/markets",
            Some(json!({"name": "Valid name", "outcomes": ["A", "B", 3]})),
            "outcomes[2]",
            "must be a string",
        ),
        case(
            post.clone(),
            "/api/markets",
            Some(json!({"name": "Valid name", "outcomes": ["A"]})),
            "outcomes",
            "must have at least 2 items",
        ),
        case(
            post.clone(),
            "/api/markets",
            Some(json!({"name": "Valid name", "initial_stake": {"outcome": 0}})),
            "initial_stake.amount",
            "is required",
        ),
        case(
            post.clone(),
            "/api/markets",
            Some(json!({"name": "Valid name", "initial_stake": {"outcome": -1, "amount": 5}})),
            "initial_stake.outcome",
            "must be a whole number (0 or more)",
        ),
        case(
            post.clone(),
            "/api/markets",
            Some(json!({"name": "Valid name", "initial_stake": null})),
            "initial_stake",
            "must not be null",
        ),
        case(
            post.clone(),
            "/api/markets",
            Some(json!({"name": "Valid name", "colour": "red"})),
            "colour",
            "is not a field of this request",
        ),
        case(
            post.clone(),
            "/api/markets",
            Some(json!(["an", "array"])),
            "body",
            "must be a JSON object",
        ),
        case(
            put.clone(),
            m.clone(),
            Some(json!({"name": "Valid name", "close_time": 5})),
            "close_time",
            "must be an RFC 3339 date-time such as 2027-01-01T00:00:00Z",
        ),
        case(
            patch.clone(),
            m.clone(),
            Some(json!({"name": null})),
            "name",
            "must not be null",
        ),
        case(
            patch.clone(),
            m.clone(),
            Some(json!({"description": ["x"]})),
            "description",
            "must be a string",
        ),
        case(
            post.clone(),
            format!("{m}/positions"),
            Some(json!({"outcome": 0})),
            "amount",
            "is required",
        ),
        case(
            post.clone(),
            format!("{m}/positions"),
            Some(json!({"outcome": 0, "amount": "ten"})),
            "amount",
            "must be an integer",
        ),
        case(
            post.clone(),
            format!("{m}/positions"),
            Some(json!({"outcome": 0, "amount": 1.5})),
            "amount",
            "must be an integer",
        ),
        case(
            post.clone(),
            format!("{m}/positions"),
            Some(json!({"outcome": "YES", "amount": 5})),
            "outcome",
            "must be a whole number (0 or more)",
        ),
        case(
            post.clone(),
            format!("{m}/resolve"),
            Some(json!({"outcome": true})),
            "outcome",
            "must be a whole number (0 or more)",
        ),
        case(
            post.clone(),
            "/api/auth/register",
            Some(json!({"username": "someone"})),
            "password",
            "is required",
        ),
        case(
            post.clone(),
            "/api/auth/login",
            Some(json!({"username": 7, "password": "x"})),
            "username",
            "must be a string",
        ),
        case(
            post.clone(),
            "/api/auth/refresh",
            Some(json!({})),
            "refresh_token",
            "is required",
        ),
        case(
            post.clone(),
            "/api/auth/logout",
            Some(json!({"refresh_token": null})),
            "refresh_token",
            "must not be null",
        ),
        case(
            patch.clone(),
            format!("/api/users/{}", user.id),
            Some(json!({"role": "king"})),
            "role",
            "must be one of: admin, moderator, user",
        ),
        // Query and path parameters: enumerations list their values.
        case(
            get.clone(),
            "/api/markets?status=open",
            None,
            "status",
            "must be one of: active, closed, resolved, cancelled",
        ),
        case(
            get.clone(),
            "/api/markets?sort=price",
            None,
            "sort",
            "must be one of: volume, created_at, close_time, name",
        ),
        case(
            get.clone(),
            "/api/markets?order=up",
            None,
            "order",
            "must be one of: asc, desc",
        ),
        case(
            get.clone(),
            "/api/markets?limit=500",
            None,
            "limit",
            "must be at most 100",
        ),
        case(
            get.clone(),
            "/api/markets?limit=many",
            None,
            "limit",
            "must be a whole number (0 or more)",
        ),
        case(
            get.clone(),
            "/api/markets?creator_id=0",
            None,
            "creator_id",
            "must be at least 1",
        ),
        case(
            get.clone(),
            "/api/markets/abc",
            None,
            "id",
            "must be an integer",
        ),
        case(
            get.clone(),
            "/api/markets/0",
            None,
            "id",
            "must be at least 1",
        ),
        case(get.clone(), "/api/markets/search", None, "q", "is required"),
        case(
            get.clone(),
            "/api/markets/search?q=x&mode=fuzzy",
            None,
            "mode",
            "must be one of: hybrid, keyword, vector",
        ),
        case(
            get.clone(),
            format!("{m}/related?status=done"),
            None,
            "status",
            "must be one of: active, closed, resolved, cancelled",
        ),
        case(
            get.clone(),
            format!("{m}/positions?offset=-1"),
            None,
            "offset",
            "must be a whole number (0 or more)",
        ),
        case(
            get.clone(),
            "/api/jobs?status=waiting",
            None,
            "status",
            "must be one of: queued, running, succeeded, dead",
        ),
    ]
}

#[tokio::test]
async fn every_bad_request_names_its_field_and_says_what_is_wrong_in_plain_words() {
    let app = TestApp::spawn().await;
    let admin = app.with_role("messenger", "admin").await;
    let before_cases = cases(&app, &admin).await;
    let before = app.snapshot();
    for c in before_cases {
        let reply = admin
            .send(c.method.clone(), &c.path, c.body.clone(), &[])
            .await;
        let code = if c.body.is_some() {
            "invalid_body"
        } else {
            "invalid_parameter"
        };
        let details = reply.assert_error(400, code);
        let detail = details
            .iter()
            .find(|d| d["field"] == c.field)
            .unwrap_or_else(|| {
                panic!(
                    "{} {}: no detail for {}: {}",
                    c.method, c.path, c.field, reply.text
                )
            });
        assert_eq!(
            detail["message"], c.message,
            "{} {} {:?}",
            c.method, c.path, c.body
        );
    }
    assert_eq!(app.snapshot(), before);
}

#[tokio::test]
async fn a_body_with_several_problems_reports_each_one() {
    let app = TestApp::spawn().await;
    let user = app.user("several").await;
    let reply = user
        .post(
            "/api/markets",
            json!({"name": 1, "close_time": "soon", "outcomes": ["A", null], "initial_stake": {"outcome": 0, "amount": "x"}}),
        )
        .await;
    let details = reply.assert_error(400, "invalid_body");
    let fields: Vec<&str> = details
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["name", "outcomes[1]", "close_time", "initial_stake.amount"],
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn no_error_names_an_internal_type() {
    let app = TestApp::spawn().await;
    let admin = app.with_role("sweeper", "admin").await;
    let mut requests = cases(&app, &admin).await;
    // Bad JSON, wrong types everywhere, and nonsense in every parameter.
    let m = "/api/markets/1";
    for (path, body) in [
        (
            "/api/markets",
            json!({"name": {"a": 1}, "description": 5, "outcomes": "YES", "close_time": true, "initial_stake": [1]}),
        ),
        (
            m,
            json!({"name": [], "description": {}, "close_time": "2027-13-45T99:00:00Z"}),
        ),
        (
            "/api/markets/1/positions",
            json!({"outcome": 99999999999u64, "amount": 1e30}),
        ),
        ("/api/markets/1/positions", json!("just a string")),
        (
            "/api/auth/register",
            json!({"username": null, "password": null}),
        ),
        ("/api/auth/login", json!(null)),
    ] {
        let method = if path == m {
            Method::PATCH
        } else {
            Method::POST
        };
        requests.push(case(method, path, Some(body), "", ""));
    }
    for query in [
        "status=",
        "sort=",
        "order=1",
        "limit=-5",
        "limit=1.5",
        "offset=x",
        "creator_id=x",
        "creator_id=99999999999999999999",
        "cursor=",
    ] {
        requests.push(case(
            Method::GET,
            format!("/api/markets?{query}"),
            None,
            "",
            "",
        ));
    }
    requests.push(case(Method::GET, "/api/jobs?limit=x&kind=", None, "", ""));
    requests.push(case(
        Method::GET,
        "/api/markets/search?q=&limit=0",
        None,
        "",
        "",
    ));
    requests.push(case(
        Method::GET,
        "/api/markets/99999999999999999999",
        None,
        "",
        "",
    ));
    for c in requests {
        let reply = admin
            .send(c.method.clone(), &c.path, c.body.clone(), &[])
            .await;
        assert!(
            reply.status.is_client_error(),
            "{} {}: {}",
            c.method,
            c.path,
            reply.text
        );
        for word in INTERNAL {
            assert!(
                !reply.text.contains(word),
                "{} {} says {word:?}: {}",
                c.method,
                c.path,
                reply.text
            );
        }
        for d in reply.body["details"].as_array().expect("details") {
            assert!(!d["field"].as_str().unwrap().is_empty(), "{}", reply.text);
        }
    }
    // Raw bytes that are not JSON.
    let reply = crate::helpers::request(
        &app.client,
        &app.base,
        Some(&admin.token),
        Method::POST,
        "/api/markets",
        None,
        &[("content-type", "application/json")],
    )
    .await;
    let details = reply.assert_error(400, "invalid_body");
    assert_eq!(details[0]["field"], "body");
    let resp = app
        .client
        .post(format!("{}/api/markets", app.base))
        .bearer_auth(&admin.token)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    let reply = TestApp::read(resp).await;
    let details = reply.assert_error(400, "invalid_body");
    assert_eq!(details[0]["field"], "body");
    let message = details[0]["message"].as_str().unwrap();
    assert!(message.starts_with("is not valid JSON"), "{message}");
}
