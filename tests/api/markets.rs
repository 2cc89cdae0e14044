//! The markets resource: happy paths, conditional requests and concurrent edits.

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{Caller, TestApp};

async fn app_with_user() -> (TestApp, Caller) {
    let app = TestApp::spawn().await;
    let user = app.user("alice").await;
    (app, user)
}

fn future(days: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::days(days))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test]
async fn create_returns_201_with_location_etag_and_default_yes_no_outcomes() {
    let (_app, user) = app_with_user().await;
    let reply = user
        .post("/api/markets", json!({"name": "  Will it rain?  "}))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let m = &reply.body["data"];
    assert_eq!(reply.body["success"], json!(true));
    assert_eq!(m["name"], "Will it rain?", "name is trimmed");
    assert_eq!(m["status"], "active");
    assert_eq!(m["version"], 1);
    assert_eq!(m["volume"], 0);
    assert_eq!(m["description"], Value::Null);
    assert_eq!(m["close_time"], Value::Null);
    assert_eq!(m["resolution"], Value::Null);
    assert_eq!(m["creator"], json!({"id": user.id, "username": "alice"}));
    assert_eq!(
        m["outcomes"],
        json!([
            {"index": 0, "label": "YES", "pool": 0, "probability": 0.5},
            {"index": 1, "label": "NO", "pool": 0, "probability": 0.5}
        ])
    );
    let id = m["id"].as_i64().unwrap();
    assert_eq!(
        reply.header("location"),
        Some(format!("/api/markets/{id}").as_str())
    );
    assert_eq!(reply.header("etag"), Some(format!("\"{id}-1\"").as_str()));
}

#[tokio::test]
async fn create_keeps_custom_outcomes_description_and_close_time() {
    let (_app, user) = app_with_user().await;
    let close = future(30);
    let m = user
        .create_market(json!({
            "name": "Who wins the final?", "description": "Official result.",
            "outcomes": ["Home", "Draw", "Away"], "close_time": close
        }))
        .await;
    let labels: Vec<_> = m["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["label"].clone())
        .collect();
    assert_eq!(labels, [json!("Home"), json!("Draw"), json!("Away")]);
    assert!((m["outcomes"][0]["probability"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(m["description"], "Official result.");
    let stored = time::OffsetDateTime::parse(
        m["close_time"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let sent = time::OffsetDateTime::parse(&close, &time::format_description::well_known::Rfc3339)
        .unwrap();
    assert!((stored - sent).abs() < time::Duration::milliseconds(1));
}

#[tokio::test]
async fn get_returns_the_market_with_etag_and_304_when_the_client_copy_is_current() {
    let (app, user) = app_with_user().await;
    let m = user.create_market(json!({"name": "Will it snow?"})).await;
    let path = format!("/api/markets/{}", m["id"]);
    let reply = app.get(&path).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["data"], m);
    let tag = format!("\"{}-1\"", m["id"]);
    assert_eq!(reply.header("etag"), Some(tag.as_str()));
    assert_eq!(reply.header("cache-control"), Some("no-cache"));

    let not_modified = app
        .send(Method::GET, &path, None, &[("if-none-match", &tag)])
        .await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert!(not_modified.text.is_empty());
    assert_eq!(not_modified.header("etag"), Some(tag.as_str()));

    let stale = app
        .send(Method::GET, &path, None, &[("if-none-match", "\"1\"")])
        .await;
    assert_eq!(stale.status, StatusCode::OK);
}

#[tokio::test]
async fn list_filters_sorts_pages_and_counts() {
    let (app, alice) = app_with_user().await;
    let bob = app.user("bob").await;
    let names = [
        "Delta rises?",
        "alpha falls?",
        "Charlie wins?",
        "bravo loses?",
    ];
    let mut ids = vec![];
    for (i, name) in names.iter().enumerate() {
        let creator = if i % 2 == 0 { &alice } else { &bob };
        let close = if i == 3 {
            Value::Null
        } else {
            json!(future(10 - i as i64))
        };
        ids.push(
            creator
                .create_market(json!({"name": name, "close_time": close}))
                .await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    app.db().execute(
        "UPDATE markets SET status = 'closed' WHERE id = $1",
        &[&ids[0]],
    );

    let page = app.get("/api/markets").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.body["meta"],
        json!({"limit": 20, "offset": 0, "total": 4, "next_cursor": null})
    );
    let got = page.ids();
    assert_eq!(
        got,
        ids.iter().rev().copied().collect::<Vec<_>>(),
        "default: newest first"
    );

    let by_name = app.get("/api/markets?sort=name").await;
    let got = by_name.column("name");
    assert_eq!(
        got,
        [
            "alpha falls?",
            "bravo loses?",
            "Charlie wins?",
            "Delta rises?"
        ],
        "case-insensitive ascending"
    );

    let by_close = app.get("/api/markets?sort=close_time").await;
    let got = by_close.ids();
    assert_eq!(
        got,
        [ids[2], ids[1], ids[0], ids[3]],
        "soonest first, no close time last"
    );

    let desc = app
        .get("/api/markets?sort=name&order=desc&limit=2&offset=1")
        .await;
    let got = desc.column("name");
    assert_eq!(got, ["Charlie wins?", "bravo loses?"]);
    assert!(desc.body["meta"]["next_cursor"].is_string());
    assert_eq!(desc.body["meta"]["total"], 4);
    assert_eq!(desc.body["meta"]["offset"], 1);

    let active = app.get("/api/markets?status=active").await;
    assert_eq!(active.body["meta"]["total"], 3);
    assert!(active.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["status"] == "active"));

    let bobs = app
        .get(&format!("/api/markets?creator_id={}&status=active", bob.id))
        .await;
    assert_eq!(bobs.body["meta"]["total"], 2);
    assert!(bobs.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["creator"]["username"] == "bob"));

    let past_end = app.get("/api/markets?offset=10").await;
    assert_eq!(past_end.body["data"], json!([]));
    assert_eq!(past_end.body["meta"]["total"], 4);
}

#[tokio::test]
async fn put_replaces_editable_fields_and_clears_omitted_ones() {
    let (app, user) = app_with_user().await;
    let m = user
        .create_market(json!({"name": "Old name", "description": "d", "close_time": future(5)}))
        .await;
    let path = format!("/api/markets/{}", m["id"]);
    let reply = user.put(&path, json!({"name": "New name"})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let d = &reply.body["data"];
    assert_eq!(d["name"], "New name");
    assert_eq!(d["description"], Value::Null);
    assert_eq!(d["close_time"], Value::Null);
    assert_eq!(d["version"], 2);
    assert_eq!(d["outcomes"], m["outcomes"], "outcomes are not editable");
    assert_eq!(
        reply.header("etag"),
        Some(format!("\"{}-2\"", m["id"]).as_str())
    );
    assert_eq!(app.get(&path).await.body["data"], *d);
}

#[tokio::test]
async fn patch_changes_only_present_fields_and_null_clears() {
    let (_app, user) = app_with_user().await;
    let m = user
        .create_market(json!({"name": "Patch me", "description": "keep"}))
        .await;
    let path = format!("/api/markets/{}", m["id"]);
    let close = future(3);
    let reply = user.patch(&path, json!({"close_time": close})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["data"]["description"], "keep");
    assert_eq!(reply.body["data"]["name"], "Patch me");
    assert!(reply.body["data"]["close_time"].is_string());

    let reply = user.patch(&path, json!({"description": null})).await;
    assert_eq!(reply.body["data"]["description"], Value::Null);
    assert!(reply.body["data"]["close_time"].is_string());
    assert_eq!(reply.body["data"]["version"], 3);

    let unchanged = user.patch(&path, json!({})).await;
    assert_eq!(unchanged.status, StatusCode::OK);
    assert_eq!(
        unchanged.body["data"]["version"], 3,
        "an empty patch changes nothing"
    );
}

#[tokio::test]
async fn writes_with_a_stale_if_match_get_412_and_change_nothing() {
    let (app, user) = app_with_user().await;
    let m = user.create_market(json!({"name": "Conditional"})).await;
    let path = format!("/api/markets/{}", m["id"]);
    assert_eq!(
        user.patch(&path, json!({"name": "Conditional 2"}))
            .await
            .status,
        StatusCode::OK
    );
    let before = app.snapshot();

    let body = Some(json!({"name": "Lost update"}));
    for (method, body) in [
        (Method::PATCH, body.clone()),
        (Method::PUT, body),
        (Method::DELETE, None),
    ] {
        for tag in [format!("\"{}-1\"", m["id"]), "garbage".into()] {
            let reply = user
                .send(method.clone(), &path, body.clone(), &[("if-match", &tag)])
                .await;
            reply.assert_error(412, "precondition_failed");
        }
    }
    assert_eq!(app.snapshot(), before);

    let fresh = user
        .send(
            Method::PATCH,
            &path,
            Some(json!({"name": "Won"})),
            &[("if-match", &format!("\"{}-2\"", m["id"]))],
        )
        .await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.text);
    let any = user
        .send(
            Method::PATCH,
            &path,
            Some(json!({"name": "Any version"})),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(any.status, StatusCode::OK);
}

#[tokio::test]
async fn delete_removes_the_market_and_its_outcomes() {
    let (app, user) = app_with_user().await;
    let m = user.create_market(json!({"name": "Delete me"})).await;
    let path = format!("/api/markets/{}", m["id"]);
    let reply = user
        .send(
            Method::DELETE,
            &path,
            None,
            &[("if-match", &format!("\"{}-1\"", m["id"]))],
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.text.is_empty());
    app.get(&path).await.assert_error(404, "not_found");
    user.delete(&path).await.assert_error(404, "not_found");
    assert_eq!(app.count("outcomes"), 0);
}

#[tokio::test]
async fn a_market_settled_before_any_stake_can_still_be_deleted() {
    let (app, user) = app_with_user().await;
    for action in ["cancel", "resolve"] {
        let m = user.create_market(json!({"name": "Settled empty"})).await;
        let path = format!("/api/markets/{}", m["id"]);
        if action == "resolve" {
            let closed = user.post(&format!("{path}/close"), json!({})).await;
            assert_eq!(closed.status, StatusCode::OK, "{}", closed.text);
        }
        let body = if action == "resolve" {
            json!({"outcome": 0})
        } else {
            json!({})
        };
        let settled = user.post(&format!("{path}/{action}"), body).await;
        assert_eq!(settled.status, StatusCode::OK, "{action}: {}", settled.text);
        assert_eq!(
            user.delete(&path).await.status,
            StatusCode::NO_CONTENT,
            "{action}"
        );
        app.get(&path).await.assert_error(404, "not_found");
    }
    assert_eq!(app.count("settlements"), 0);
    app.assert_invariants();
}

#[tokio::test]
async fn markets_that_are_no_longer_active_cannot_be_edited() {
    let (app, user) = app_with_user().await;
    let m = user.create_market(json!({"name": "Closed soon"})).await;
    app.db()
        .execute("UPDATE markets SET status = 'closed'", &[]);
    let before = app.snapshot();
    let path = format!("/api/markets/{}", m["id"]);
    user.patch(&path, json!({"name": "Too late"}))
        .await
        .assert_error(409, "market_not_active");
    user.put(&path, json!({"name": "Too late"}))
        .await
        .assert_error(409, "market_not_active");
    assert_eq!(app.snapshot(), before);
}

#[tokio::test]
async fn markets_with_stakes_cannot_be_deleted() {
    let (app, user) = app_with_user().await;
    let m = user.create_market(json!({"name": "Has volume"})).await;
    app.db().execute("UPDATE markets SET volume = 10", &[]);
    user.delete(&format!("/api/markets/{}", m["id"]))
        .await
        .assert_error(409, "market_has_stakes");
    assert_eq!(app.count("markets"), 1);
}

#[tokio::test]
async fn concurrent_edits_all_land_without_if_match_and_exactly_one_wins_with_it() {
    let (app, user) = app_with_user().await;
    let m = user.create_market(json!({"name": "Contended"})).await;
    let path = format!("/api/markets/{}", m["id"]);

    let edits = (0..20).map(|i| {
        let (user, path) = (&user, path.clone());
        async move {
            user.patch(&path, json!({"description": format!("edit {i}")}))
                .await
                .status
        }
    });
    let statuses = join_all(edits).await;
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let conflicts = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!(ok + conflicts, 20, "{statuses:?}");
    let version = app.get(&path).await.body["data"]["version"]
        .as_i64()
        .unwrap();
    assert_eq!(
        version,
        1 + ok as i64,
        "every acknowledged edit bumped the version once"
    );

    let tag = format!("\"{}-{version}\"", m["id"]);
    let guarded = (0..20).map(|i| {
        let (user, path, tag) = (&user, path.clone(), tag.clone());
        async move {
            user.send(
                Method::PATCH,
                &path,
                Some(json!({"description": format!("guarded {i}")})),
                &[("if-match", &tag)],
            )
            .await
            .status
        }
    });
    let statuses = join_all(guarded).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
            .count(),
        19
    );
}
