//! Entity tags: `If-Match` compares strongly, and market ids (so ETags) are never reused.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::TestApp;

fn path(market: &Value) -> String {
    format!("/api/markets/{}", market["id"])
}

fn tag(market: &Value) -> String {
    format!("\"{}-{}\"", market["id"], market["version"])
}

#[tokio::test]
async fn if_match_compares_strongly_and_weak_tags_never_match() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let m = alice.create_market(json!({"name": "Strong tags"})).await;
    let (p, current) = (path(&m), tag(&m));
    assert_eq!(app.get(&p).await.header("etag"), Some(current.as_str()));
    let before = app.snapshot();
    for header in [
        format!("W/{current}"),
        "\"1\"".to_owned(),
        format!("W/{current}, \"0-0\""),
        format!("*, {current}"),
    ] {
        alice
            .send(
                Method::PATCH,
                &p,
                Some(json!({"name": "Weak"})),
                &[("if-match", &header)],
            )
            .await
            .assert_error(412, "precondition_failed");
    }
    assert_eq!(app.snapshot(), before);
    let listed = alice
        .send(
            Method::PATCH,
            &p,
            Some(json!({"name": "Listed"})),
            &[("if-match", &format!("W/{current}, \"x,y\", {current}"))],
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    let any = alice
        .send(
            Method::PATCH,
            &p,
            Some(json!({"name": "Any"})),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(any.status, StatusCode::OK);
    let weak_read = app
        .send(
            Method::GET,
            &p,
            None,
            &[("if-none-match", &format!("W/{}", tag(&any.body["data"])))],
        )
        .await;
    assert_eq!(
        weak_read.status,
        StatusCode::NOT_MODIFIED,
        "If-None-Match compares weakly"
    );
}

#[tokio::test]
async fn market_ids_are_never_reused_so_an_old_etag_never_matches_a_new_market() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let first = alice.create_market(json!({"name": "First"})).await;
    let newest = alice.create_market(json!({"name": "Newest"})).await;
    let old_tag = app
        .get(&path(&newest))
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    assert_eq!(
        alice.delete(&path(&newest)).await.status,
        StatusCode::NO_CONTENT
    );

    let next = alice.create_market(json!({"name": "Next"})).await;
    assert!(next["id"].as_i64() > newest["id"].as_i64(), "{next}");
    assert_ne!(tag(&next), old_tag);
    for id in [&newest["id"], &next["id"]] {
        let reply = app
            .send(
                Method::GET,
                &format!("/api/markets/{id}"),
                None,
                &[("if-none-match", &old_tag)],
            )
            .await;
        assert_ne!(reply.status, StatusCode::NOT_MODIFIED, "{id}");
    }
    assert_eq!(
        alice.delete(&path(&next)).await.status,
        StatusCode::NO_CONTENT
    );

    let dir = app.stop().await;
    let app = TestApp::spawn_in(dir).await;
    let alice = app.caller("alice", alice.id).await;
    let after = alice.create_market(json!({"name": "After restart"})).await;
    assert!(after["id"].as_i64() > next["id"].as_i64(), "{after}");
    assert!(first["id"].as_i64() < after["id"].as_i64());
}
