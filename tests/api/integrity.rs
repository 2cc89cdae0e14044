//! Market integrity: text that shows what it says, and creators' rights once others' money is
//! on a market (edits frozen, resolution left to moderators and admins).

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{Caller, TestApp};

fn path(market: &Value) -> String {
    format!("/api/markets/{}", market["id"])
}

#[tokio::test]
async fn names_and_labels_that_show_nothing_reorder_text_or_repeat_a_label_are_refused_with_422() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let refused = [
        (
            json!({"name": "\u{200B}\u{200C}\u{200D}\u{2060}\u{FEFF}"}),
            "name",
        ),
        (json!({"name": "ab\u{00AD}"}), "name"),
        (json!({"name": "Pay \u{202E}ON\u{202C} now"}), "name"),
        (
            json!({"name": "Fine name", "outcomes": ["YES", "\u{200B}"]}),
            "outcomes[1]",
        ),
        (
            json!({"name": "Fine name", "outcomes": ["\u{2066}YES", "NO"]}),
            "outcomes[0]",
        ),
        (
            json!({"name": "Fine name", "outcomes": ["YES", "NO\u{200F}"]}),
            "outcomes[1]",
        ),
        (
            json!({"name": "Fine name", "outcomes": ["Yes", " Y\u{200B}ES "]}),
            "outcomes[1]",
        ),
        (
            json!({"name": "Fine name", "outcomes": ["New York", "new\u{00A0} york"]}),
            "outcomes[1]",
        ),
        (
            json!({"name": "Fine name", "outcomes": ["Straße", "STRASSE"]}),
            "outcomes[1]",
        ),
    ];
    for (body, field) in refused {
        alice
            .post("/api/markets", body.clone())
            .await
            .assert_field_error(422, "validation_failed", field);
    }
    assert_eq!(app.count("markets"), 0);

    let m = alice
        .create_market(json!({"name": "Will 👩\u{200D}💻 ship?", "outcomes": ["Sí", "Si"]}))
        .await;
    assert_eq!(
        m["name"], "Will 👩\u{200D}💻 ship?",
        "joiners inside text are kept"
    );
    let before = app.snapshot();
    for method in [Method::PUT, Method::PATCH] {
        for name in ["\u{200B}\u{200B}\u{200B}", "Rename \u{202D}me"] {
            alice
                .send(method.clone(), &path(&m), Some(json!({"name": name})), &[])
                .await
                .assert_field_error(422, "validation_failed", "name");
        }
    }
    assert_eq!(app.snapshot(), before, "nothing changed");
}

#[tokio::test]
async fn the_creator_edits_freely_until_another_user_stakes_then_only_staff_may() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let moderator = app.with_role("mod", "moderator").await;
    let admin = app.with_role("root", "admin").await;
    let m = alice
        .create_market(json!({"name": "Frozen soon?", "description": "Criteria"}))
        .await;
    let p = path(&m);
    assert_eq!(
        alice
            .patch(&p, json!({"name": "Frozen later?"}))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        alice.stake(&m["id"], 0, 10).await.status,
        StatusCode::CREATED
    );
    let edited = alice
        .patch(
            &p,
            json!({"name": "Still mine?", "close_time": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(
        edited.status,
        StatusCode::OK,
        "only her own money: {}",
        edited.text
    );

    assert_eq!(bob.stake(&m["id"], 1, 10).await.status, StatusCode::CREATED);
    let before = app.snapshot();
    for body in [
        json!({"name": "Renamed after bob staked"}),
        json!({"close_time": "2098-01-01T00:00:00Z"}),
        json!({"close_time": null}),
        json!({"description": "New criteria"}),
    ] {
        let reply = alice.patch(&p, body).await;
        reply.assert_error(409, "market_frozen");
        assert!(reply.body["error"].as_str().unwrap().contains("moderator"));
    }
    alice
        .put(
            &p,
            json!({"name": "Still mine?", "description": "Criteria"}),
        )
        .await
        .assert_error(409, "market_frozen");
    assert_eq!(app.snapshot(), before, "a refused edit changes nothing");
    let same = alice
        .patch(
            &p,
            json!({"name": "Still mine?", "description": "Criteria"}),
        )
        .await;
    assert_eq!(
        same.status,
        StatusCode::OK,
        "unchanged values are no change: {}",
        same.text
    );

    let by_mod = moderator
        .patch(&p, json!({"name": "Clarified by a moderator"}))
        .await;
    assert_eq!(by_mod.status, StatusCode::OK, "{}", by_mod.text);
    let by_admin = admin
        .put(
            &p,
            json!({"name": "Replaced by an admin", "close_time": "2097-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(by_admin.status, StatusCode::OK, "{}", by_admin.text);
    app.assert_invariants();
}

#[tokio::test]
async fn edits_racing_another_users_stake_never_land_once_the_stake_is_in() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let m = alice
        .create_market(json!({"name": "Race the freeze"}))
        .await;
    let p = path(&m);
    let edits = join_all((0..20).map(|i| {
        let (alice, p) = (&alice, p.clone());
        async move { alice.patch(&p, json!({"name": format!("Race {i}")})).await }
    }));
    let (edits, staked) = tokio::join!(edits, bob.stake(&m["id"], 0, 5));
    assert_eq!(staked.status, StatusCode::CREATED);
    for reply in &edits {
        match reply.status {
            // An edit that landed saw no stake from bob in its own transaction.
            StatusCode::OK => assert_eq!(reply.body["data"]["volume"], 0, "{}", reply.text),
            StatusCode::CONFLICT => {
                assert!(["market_frozen", "edit_conflict"]
                    .contains(&reply.body["code"].as_str().unwrap()))
            }
            other => panic!("unexpected {other}: {}", reply.text),
        }
    }
    alice
        .patch(&p, json!({"name": "After the race"}))
        .await
        .assert_error(409, "market_frozen");
}

async fn resolve(caller: &Caller, market: &Value, outcome: u32) -> crate::helpers::Reply {
    caller
        .post(
            &format!("{}/resolve", path(market)),
            json!({"outcome": outcome}),
        )
        .await
}

#[tokio::test]
async fn only_a_moderator_or_an_admin_resolves_a_market_others_have_staked_on() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let moderator = app.with_role("mod", "moderator").await;
    let admin = app.with_role("root", "admin").await;
    let (m1, m2) = (
        alice.create_market(json!({"name": "Resolve one"})).await,
        alice.create_market(json!({"name": "Resolve two"})).await,
    );
    for m in [&m1, &m2] {
        alice.stake(&m["id"], 0, 100).await;
        bob.stake(&m["id"], 1, 100).await;
    }
    let before = app.snapshot();
    let refused = resolve(&alice, &m1, 0).await;
    refused.assert_error(403, "forbidden");
    assert!(refused.body["error"]
        .as_str()
        .unwrap()
        .contains("other users have staked"));
    assert_eq!(
        app.snapshot(),
        before,
        "a refused resolution changes nothing"
    );
    let closed = alice.post(&format!("{}/close", path(&m1)), json!({})).await;
    assert_eq!(closed.status, StatusCode::OK, "closing early is still hers");
    resolve(&alice, &m1, 0).await.assert_error(403, "forbidden");
    assert_eq!((app.balance(alice.id), app.balance(bob.id)), (800, 800));

    assert_eq!(resolve(&moderator, &m1, 1).await.status, StatusCode::OK);
    assert_eq!(resolve(&admin, &m2, 0).await.status, StatusCode::OK);
    assert_eq!((app.balance(alice.id), app.balance(bob.id)), (1000, 1000));
    app.assert_invariants();
}

#[tokio::test]
async fn the_creator_resolves_with_only_its_own_stake_and_cancels_with_others() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let own = alice.create_market(json!({"name": "Only mine"})).await;
    alice.stake(&own["id"], 0, 50).await;
    let resolved = resolve(&alice, &own, 0).await;
    assert_eq!(resolved.status, StatusCode::OK, "{}", resolved.text);

    let shared = alice.create_market(json!({"name": "Shared"})).await;
    alice.stake(&shared["id"], 0, 50).await;
    bob.stake(&shared["id"], 1, 70).await;
    let cancelled = alice
        .post(&format!("{}/cancel", path(&shared)), json!({}))
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text);
    assert_eq!((app.balance(alice.id), app.balance(bob.id)), (1000, 1000));
    app.assert_invariants();
}

#[tokio::test]
async fn a_creator_cannot_mint_credits_through_a_second_account() {
    let app = TestApp::spawn().await;
    let (alice, sock, bob) = (
        app.user("alice").await,
        app.user("alice2").await,
        app.user("bob").await,
    );
    let m = alice.create_market(json!({"name": "Rigged?"})).await;
    bob.stake(&m["id"], 0, 900).await;
    sock.stake(&m["id"], 1, 1).await;
    resolve(&alice, &m, 1).await.assert_error(403, "forbidden");
    assert_eq!(
        app.balance(alice.id) + app.balance(sock.id),
        1999,
        "nothing minted"
    );
    assert_eq!(app.balance(bob.id), 100);
    assert_eq!(app.count("settlements"), 0);
    app.assert_invariants();
}
