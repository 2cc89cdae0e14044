//! Access tokens act with the account's current role and only while their session stands;
//! login throttling stops guessing without locking the owner out.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{token_claims, TestApp, JWT_SECRET, PASSWORD};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn forge(sub: i64, role: &str, sid: &str) -> String {
    let claims = json!({"sub": sub.to_string(), "role": role, "iat": now(), "nbf": now(),
        "exp": now() + 600, "iss": "agora", "aud": "agora-api", "jti": "t", "sid": sid});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("sign")
}

#[tokio::test]
async fn a_demoted_admin_loses_admin_rights_on_its_very_next_request() {
    let app = TestApp::spawn().await;
    let root = app.with_role("root", "admin").await;
    let mallory = app.with_role("mallory", "admin").await;
    // Mallory's token works as admin before the demotion.
    let probe = mallory
        .patch(&format!("/api/users/{}", root.id), json!({"role": "admin"}))
        .await;
    assert_eq!(probe.status, StatusCode::OK, "{}", probe.text);

    let demoted = root
        .patch(
            &format!("/api/users/{}", mallory.id),
            json!({"role": "user"}),
        )
        .await;
    assert_eq!(demoted.status, StatusCode::OK, "{}", demoted.text);

    // The same, unexpired token can neither re-promote itself nor demote the real admin.
    mallory
        .patch(
            &format!("/api/users/{}", mallory.id),
            json!({"role": "admin"}),
        )
        .await
        .assert_error(403, "forbidden");
    mallory
        .patch(&format!("/api/users/{}", root.id), json!({"role": "user"}))
        .await
        .assert_error(403, "forbidden");
    let me = mallory.get("/api/me").await;
    assert_eq!(me.body["data"]["role"], json!("user"), "{}", me.text);
    let root_me = root.get("/api/me").await;
    assert_eq!(root_me.body["data"]["role"], json!("admin"));
}

#[tokio::test]
async fn a_promoted_user_acts_with_its_new_role_without_signing_in_again() {
    let app = TestApp::spawn().await;
    let root = app.with_role("root", "admin").await;
    let bob = app.user("bob").await;
    bob.get("/api/jobs").await.assert_error(403, "forbidden");
    root.patch(&format!("/api/users/{}", bob.id), json!({"role": "admin"}))
        .await;
    let jobs = bob.get("/api/jobs").await;
    assert_eq!(jobs.status, StatusCode::OK, "{}", jobs.text);
}

#[tokio::test]
async fn a_correctly_signed_token_for_an_account_or_session_that_does_not_exist_is_refused() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let sid = token_claims(&alice.token)["sid"]
        .as_str()
        .expect("sid claim")
        .to_owned();
    // The real session, re-signed: accepted (so the refusals below are about the subject).
    let same = forge(alice.id, "user", &sid);
    assert_eq!(
        app.get_with_token("/api/me", &same).await.status,
        StatusCode::OK
    );
    let cases = [
        ("no such account", forge(999, "admin", &sid)),
        (
            "no such session",
            forge(alice.id, "user", "no-such-session"),
        ),
        (
            "another account's session",
            forge(alice.id + 1, "admin", &sid),
        ),
    ];
    for (name, token) in cases {
        for (method, path, body) in [
            (Method::GET, "/api/me", None),
            (Method::GET, "/api/jobs", None),
            (
                Method::POST,
                "/api/markets",
                Some(json!({"name": "Forged?", "close_time": "2099-01-01T00:00:00Z"})),
            ),
            (
                Method::PATCH,
                "/api/users/1",
                Some(json!({"role": "admin"})),
            ),
        ] {
            let reply = crate::helpers::request(
                &app.client,
                &app.base,
                Some(&token),
                method,
                path,
                body,
                &[],
            )
            .await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{name} {path}: {}",
                reply.text
            );
            reply.assert_error(401, "unauthorized");
        }
    }
    assert_eq!(app.count("markets"), 0);
}

#[tokio::test]
async fn logout_ends_that_sessions_access_tokens_and_leaves_other_sessions_working() {
    let app = TestApp::spawn().await;
    let id = app.register("alice").await;
    let first = app.login("alice").await;
    let second = app.login("alice").await;
    let token = |s: &Value| s["access_token"].as_str().expect("token").to_owned();
    assert_eq!(
        app.get_with_token("/api/me", &token(&first)).await.status,
        StatusCode::OK
    );
    let out = app
        .post(
            "/api/auth/logout",
            json!({"refresh_token": first["refresh_token"]}),
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    app.get_with_token("/api/me", &token(&first))
        .await
        .assert_error(401, "unauthorized");
    let other = app.get_with_token("/api/me", &token(&second)).await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.text);
    assert_eq!(other.body["data"]["id"], json!(id));
}

#[tokio::test]
async fn a_replayed_refresh_token_ends_the_sessions_access_tokens_too() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let session = app.login("alice").await;
    let refreshed = app
        .post(
            "/api/auth/refresh",
            json!({"refresh_token": session["refresh_token"]}),
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::OK);
    let token = refreshed.body["data"]["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(
        app.get_with_token("/api/me", &token).await.status,
        StatusCode::OK
    );
    // Someone replays the used refresh token: the whole login ends.
    app.post(
        "/api/auth/refresh",
        json!({"refresh_token": session["refresh_token"]}),
    )
    .await
    .assert_error(401, "unauthorized");
    app.get_with_token("/api/me", &token)
        .await
        .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn token_responses_are_never_stored_by_caches() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let login = app
        .post(
            "/api/auth/login",
            json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.header("cache-control"), Some("no-store"));
    let refresh = app
        .post(
            "/api/auth/refresh",
            json!({"refresh_token": login.body["data"]["refresh_token"]}),
        )
        .await;
    assert_eq!(refresh.status, StatusCode::OK);
    assert_eq!(refresh.header("cache-control"), Some("no-store"));
}

/// A server with the login quotas of production, behind a trusted proxy at 127.0.0.1 so each
/// request can say which client address it comes from.
async fn login_limited(account_ceiling: &str) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = TestApp::config(
        &dir,
        &[
            "--rate-login",
            "10/15min",
            "--rate-login-account",
            account_ceiling,
            "--trusted-proxies",
            "127.0.0.1",
        ],
    );
    TestApp::spawn_with(dir, config).await
}

async fn login_from(app: &TestApp, ip: &str, username: &str, password: &str) -> StatusCode {
    app.send(
        Method::POST,
        "/api/auth/login",
        Some(json!({"username": username, "password": password})),
        &[("x-forwarded-for", ip)],
    )
    .await
    .status
}

#[tokio::test]
async fn a_stranger_guessing_passwords_does_not_lock_the_owner_out() {
    let app = login_limited("200/15min").await;
    app.register("alice").await;
    for _ in 0..10 {
        assert_eq!(
            login_from(&app, "203.0.113.5", "alice", "wrong password").await,
            StatusCode::UNAUTHORIZED
        );
    }
    // The guesser is cut off, even with the right password...
    assert_eq!(
        login_from(&app, "203.0.113.5", "alice", PASSWORD).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // ...while the owner, from its own address, signs in.
    assert_eq!(
        login_from(&app, "198.51.100.7", "ALICE", PASSWORD).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn guessing_spread_over_many_addresses_meets_the_per_account_ceiling() {
    let app = login_limited("15/15min").await;
    app.register("alice").await;
    let mut statuses = Vec::new();
    for i in 0..10 {
        for _ in 0..2 {
            statuses.push(login_from(&app, &format!("203.0.113.{i}"), "alice", "nope").await);
        }
    }
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(refused, 5, "{statuses:?}");
    assert!(statuses[..15]
        .iter()
        .all(|s| *s == StatusCode::UNAUTHORIZED));
}
