//! Accounts and tokens: the register / login / refresh / logout round trip, refresh-token
//! rotation and reuse detection, and every way an access token can be bad.

use futures::future::join_all;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{database_args, TestApp, JWT_SECRET, PASSWORD};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims(sub: i64) -> Value {
    json!({"sub": sub.to_string(), "role": "user", "iat": now(), "nbf": now(), "exp": now() + 600,
           "iss": "agora", "aud": "agora-api", "jti": "t"})
}

fn sign(claims: &Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn b64(v: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn register_login_refresh_logout_round_trip() {
    let app = TestApp::spawn().await;
    let reply = app
        .post(
            "/api/auth/register",
            json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let user = &reply.body["data"];
    assert_eq!(
        (
            user["username"].as_str(),
            user["role"].as_str(),
            user["balance"].as_i64()
        ),
        (Some("alice"), Some("user"), Some(1000))
    );
    let id = user["id"].as_i64().unwrap();
    let grants: (i64, i64) = app.db().query_one(
        "SELECT count(*), CAST(sum(amount) AS BIGINT) FROM ledger WHERE user_id = $1 AND kind = 'GRANT'",
        &[&id],
    );
    assert_eq!(grants, (1, 1000), "the signup grant is one ledger entry");

    let session = app.login("alice").await;
    assert_eq!(session["token_type"], "Bearer");
    assert_eq!(session["expires_in"], 900);
    assert_eq!(session["user"]["id"], id);
    let access = session["access_token"].as_str().unwrap();
    let me = app.get_with_token("/api/me", access).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["data"], *user);

    let refresh = session["refresh_token"].as_str().unwrap();
    let renewed = app
        .post("/api/auth/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.text);
    let next = renewed.body["data"]["refresh_token"].as_str().unwrap();
    assert_ne!(next, refresh, "refresh tokens rotate");
    let access2 = renewed.body["data"]["access_token"].as_str().unwrap();
    let me = app.get_with_token("/api/me", access2).await;
    assert_eq!(me.status, StatusCode::OK);

    let out = app
        .post("/api/auth/logout", json!({"refresh_token": next}))
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    app.post("/api/auth/refresh", json!({"refresh_token": next}))
        .await
        .assert_error(401, "unauthorized");
    let again = app
        .post("/api/auth/logout", json!({"refresh_token": next}))
        .await;
    assert_eq!(again.status, StatusCode::NO_CONTENT, "logout is idempotent");

    let stored: i64 = app.db().query_one(
        "SELECT count(*) FROM refresh_tokens WHERE token_hash IN ($1, $2)",
        &[&refresh, &next],
    );
    assert_eq!(stored, 0, "refresh tokens are stored only as hashes");
}

#[tokio::test]
async fn reusing_a_rotated_refresh_token_revokes_its_whole_family() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let first = app.login("alice").await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let other_login = app.login("alice").await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = app
        .post("/api/auth/refresh", json!({"refresh_token": first}))
        .await
        .body["data"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let replay = app
        .post("/api/auth/refresh", json!({"refresh_token": first}))
        .await;
    replay.assert_error(401, "unauthorized");
    assert!(replay.body["error"]
        .as_str()
        .unwrap()
        .contains("already used"));
    app.post("/api/auth/refresh", json!({"refresh_token": second}))
        .await
        .assert_error(401, "unauthorized");

    let unaffected = app
        .post("/api/auth/refresh", json!({"refresh_token": other_login}))
        .await;
    assert_eq!(
        unaffected.status,
        StatusCode::OK,
        "another login's family is untouched"
    );
}

#[tokio::test]
async fn one_refresh_token_presented_twenty_times_at_once_renews_exactly_once() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let token = app.login("alice").await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let replies =
        join_all((0..20).map(|_| app.post("/api/auth/refresh", json!({"refresh_token": token}))))
            .await;
    let ok = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert_eq!(
        ok,
        1,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(replies
        .iter()
        .filter(|r| r.status != StatusCode::OK)
        .all(|r| r.status == StatusCode::UNAUTHORIZED));
}

#[tokio::test]
async fn every_kind_of_bad_access_token_is_401_with_a_bearer_challenge() {
    let app = TestApp::spawn().await;
    let id = app.register("alice").await;
    // A token of a real session, re-signed by the test: the baseline every case alters.
    let session = app.login("alice").await;
    let sid = crate::helpers::token_claims(session["access_token"].as_str().expect("token"))["sid"]
        .clone();
    let claims = |sub: i64| {
        let mut c = claims(sub);
        c["sid"] = json!(sid);
        c
    };
    let good = sign(&claims(id), JWT_SECRET);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(id);
        f(&mut c);
        sign(&c, JWT_SECRET)
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            format!("Bearer {}", with(&|c| c["exp"] = json!(now() - 60))),
        ),
        (
            "other key",
            format!(
                "Bearer {}",
                sign(&claims(id), "another-secret-0123456789abcdef0123456789")
            ),
        ),
        (
            "alg none",
            format!(
                "Bearer {}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&claims(id))
            ),
        ),
        (
            "alg HS512",
            format!(
                "Bearer {}",
                encode(
                    &Header::new(Algorithm::HS512),
                    &claims(id),
                    &EncodingKey::from_secret(JWT_SECRET.as_bytes())
                )
                .unwrap()
            ),
        ),
        (
            "wrong audience",
            format!("Bearer {}", with(&|c| c["aud"] = json!("someone-else"))),
        ),
        (
            "wrong issuer",
            format!("Bearer {}", with(&|c| c["iss"] = json!("evil"))),
        ),
        (
            "missing exp",
            format!(
                "Bearer {}",
                with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                })
            ),
        ),
        (
            "missing sub",
            format!(
                "Bearer {}",
                with(&|c| {
                    c.as_object_mut().unwrap().remove("sub");
                })
            ),
        ),
        (
            "not yet valid",
            format!("Bearer {}", with(&|c| c["nbf"] = json!(now() + 3600))),
        ),
        (
            "issued in the future",
            format!("Bearer {}", with(&|c| c["iat"] = json!(now() + 3600))),
        ),
        (
            "unknown role",
            format!("Bearer {}", with(&|c| c["role"] = json!("root"))),
        ),
        ("tampered payload", {
            let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
            parts[1] = b64(
                &json!({"sub": id.to_string(), "role": "admin", "iat": now(), "nbf": now(), "exp": now() + 600, "iss": "agora", "aud": "agora-api"}),
            );
            format!("Bearer {}", parts.join("."))
        }),
        ("garbage", "Bearer not.a.jwt".into()),
        ("empty bearer", "Bearer ".into()),
        ("basic scheme", "Basic YWxpY2U6cGFzc3dvcmQ=".into()),
    ];
    for (name, header) in cases {
        let reply = app
            .send(Method::GET, "/api/me", None, &[("authorization", &header)])
            .await;
        reply.assert_error(401, "unauthorized");
        let challenge = reply.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer realm=\"agora\""),
            "{name}: {challenge}"
        );
    }
    let missing = app.get("/api/me").await;
    missing.assert_error(401, "unauthorized");
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"agora\"")
    );

    let ok = app.get_with_token("/api/me", &good).await;
    assert_eq!(
        ok.status,
        StatusCode::OK,
        "the well-formed token is accepted: {}",
        ok.text
    );
}

#[tokio::test]
async fn registration_rules_duplicates_and_role_smuggling_are_rejected() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    for (body, field) in [
        (json!({"username": "al", "password": PASSWORD}), "username"),
        (
            json!({"username": "x".repeat(33), "password": PASSWORD}),
            "username",
        ),
        (
            json!({"username": "bad name", "password": PASSWORD}),
            "username",
        ),
        (json!({"username": "bob", "password": "short"}), "password"),
        (
            json!({"username": "bob", "password": "x".repeat(129)}),
            "password",
        ),
        (
            json!({"username": "bob", "password": PASSWORD, "role": "admin"}),
            "role",
        ),
        (json!({"username": "bob", "password": 12345678}), "password"),
        (json!({"username": "bob"}), "password"),
    ] {
        app.post("/api/auth/register", body)
            .await
            .assert_field_error(400, "invalid_body", field);
    }
    app.post(
        "/api/auth/register",
        json!({"username": "ALICE", "password": PASSWORD}),
    )
    .await
    .assert_error(409, "username_taken");
    assert_eq!(app.count("users"), 1);
    assert_eq!(app.count("ledger"), 1);
}

#[tokio::test]
async fn wrong_passwords_and_unknown_users_get_the_same_401() {
    let app = TestApp::spawn().await;
    app.register("alice").await;
    let wrong = app
        .post(
            "/api/auth/login",
            json!({"username": "alice", "password": "not the password"}),
        )
        .await;
    let unknown = app
        .post(
            "/api/auth/login",
            json!({"username": "nobody", "password": "not the password"}),
        )
        .await;
    wrong.assert_error(401, "unauthorized");
    unknown.assert_error(401, "unauthorized");
    assert_eq!(wrong.body["error"], unknown.body["error"]);
    let long = app
        .post(
            "/api/auth/login",
            json!({"username": "alice", "password": "x".repeat(129)}),
        )
        .await;
    long.assert_field_error(400, "invalid_body", "password");
    let upper = app
        .post(
            "/api/auth/login",
            json!({"username": "ALICE", "password": PASSWORD}),
        )
        .await;
    assert_eq!(
        upper.status,
        StatusCode::OK,
        "usernames are case-insensitive"
    );
}

#[tokio::test]
async fn a_generated_secret_is_private_and_keeps_tokens_valid_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let database = database_args(dir.path());
    let config = || {
        let args = ["agora", "--bind", "127.0.0.1:0", "--data-dir", &data_dir];
        agora::Config::from_args(args.into_iter().chain(database.iter().map(String::as_str)))
            .unwrap()
    };
    let app = TestApp::spawn_with(dir, config()).await;
    app.register("alice").await;
    let access = app.login("alice").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret = app.dir.path().join("jwt-secret");
    assert!(std::fs::read_to_string(&secret).unwrap().len() >= 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let dir = app.stop().await;
    let app = TestApp::spawn_with(dir, config()).await;
    let me = app.get_with_token("/api/me", &access).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
}

#[tokio::test]
async fn a_short_configured_secret_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let database = database_args(dir.path());
    let args = [
        "agora",
        "--bind",
        "127.0.0.1:0",
        "--data-dir",
        data_dir,
        "--jwt-secret",
        "too-short",
    ];
    let config =
        agora::Config::from_args(args.into_iter().chain(database.iter().map(String::as_str)))
            .unwrap();
    let err = agora::App::build(config).await.err().expect("refused");
    assert!(err.to_string().contains("shorter than 32 bytes"), "{err}");
}

#[tokio::test]
async fn the_first_admin_is_made_from_the_command_line_on_a_fresh_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let config = TestApp::config(&dir, &[]);
    let args = agora::config::CreateUserArgs {
        username: "root".into(),
        role: agora::config::RoleArg::Admin,
        password: Some(PASSWORD.into()),
    };
    let admin = agora::admin::create_user(&config, &args).await.unwrap();
    assert_eq!(admin.role.as_str(), "admin");
    assert!(
        agora::admin::create_user(&config, &args).await.is_err(),
        "a taken username is refused"
    );

    let app = TestApp::spawn_in(dir).await;
    let root = app.caller("root", admin.id).await;
    let bob = app.user("bob").await;
    let promoted = root
        .patch(
            &format!("/api/users/{}", bob.id),
            json!({"role": "moderator"}),
        )
        .await;
    assert_eq!(promoted.status, StatusCode::OK, "{}", promoted.text);
    assert_eq!(promoted.body["data"]["role"], "moderator");
    let me = root.get("/api/me").await;
    assert_eq!(me.body["data"]["role"], "admin");
}
