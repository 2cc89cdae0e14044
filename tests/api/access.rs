//! Who may do what: every protected route against anonymous callers and each role, with
//! ownership on top. A refused request changes nothing.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{request, Caller, Reply, TestApp};

struct Cast {
    app: TestApp,
    owner: Caller,
    other: Caller,
    moderator: Caller,
    admin: Caller,
}

async fn cast() -> Cast {
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let other = app.user("other").await;
    let moderator = app.with_role("moderator", "moderator").await;
    let admin = app.with_role("admin", "admin").await;
    Cast {
        app,
        owner,
        other,
        moderator,
        admin,
    }
}

impl Cast {
    /// Sends as `who` (`None` = anonymous).
    async fn send(
        &self,
        who: Option<&Caller>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        match who {
            Some(c) => c.send(method, path, body, &[]).await,
            None => {
                request(
                    &self.app.client,
                    &self.app.base,
                    None,
                    method,
                    path,
                    body,
                    &[],
                )
                .await
            }
        }
    }

    fn everyone(&self) -> [(&'static str, Option<&Caller>); 5] {
        [
            ("anonymous", None),
            ("owner", Some(&self.owner)),
            ("other user", Some(&self.other)),
            ("moderator", Some(&self.moderator)),
            ("admin", Some(&self.admin)),
        ]
    }
}

#[tokio::test]
async fn every_protected_route_gives_each_role_exactly_the_expected_status() {
    let c = cast().await;
    let market = c
        .owner
        .create_market(json!({"name": "Owned by owner"}))
        .await;
    let path = format!("/api/markets/{}", market["id"]);
    // The market's indexing job, enqueued for its creator.
    let job: i64 = c
        .app
        .db()
        .query_one("SELECT min(id) FROM jobs WHERE kind = 'index_market'", &[]);

    // (method, path, body, expected status for anonymous, owner, other, moderator, admin)
    let matrix: Vec<(Method, String, Option<Value>, [u16; 5])> = vec![
        (
            Method::GET,
            "/api/markets".into(),
            None,
            [200, 200, 200, 200, 200],
        ),
        (Method::GET, path.clone(), None, [200, 200, 200, 200, 200]),
        (
            Method::POST,
            "/api/markets".into(),
            Some(json!({"name": "New market"})),
            [401, 201, 201, 201, 201],
        ),
        (
            Method::PATCH,
            path.clone(),
            Some(json!({"description": "patched"})),
            [401, 200, 403, 200, 200],
        ),
        (
            Method::PUT,
            path.clone(),
            Some(json!({"name": "Owned by owner"})),
            [401, 200, 403, 200, 200],
        ),
        (
            Method::GET,
            "/api/me".into(),
            None,
            [401, 200, 200, 200, 200],
        ),
        (
            Method::PATCH,
            format!("/api/users/{}", c.other.id),
            Some(json!({"role": "user"})),
            [401, 403, 403, 403, 200],
        ),
        (
            Method::POST,
            "/api/auth/logout".into(),
            Some(json!({"refresh_token": "unknown"})),
            [204, 204, 204, 204, 204],
        ),
        (
            Method::GET,
            "/api/markets/search?q=owned".into(),
            None,
            [200, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            format!("{path}/related"),
            None,
            [200, 200, 200, 200, 200],
        ),
        (
            Method::GET,
            format!("/api/jobs/{job}"),
            None,
            [401, 200, 404, 404, 200],
        ),
        (
            Method::GET,
            "/api/jobs".into(),
            None,
            [401, 403, 403, 403, 200],
        ),
        (
            Method::POST,
            "/api/admin/reindex".into(),
            None,
            [401, 403, 403, 403, 202],
        ),
    ];
    for (method, path, body, expected) in matrix {
        for ((who, caller), status) in c.everyone().into_iter().zip(expected) {
            let reply = c.send(caller, method.clone(), &path, body.clone()).await;
            assert_eq!(
                reply.status.as_u16(),
                status,
                "{who} {method} {path}: {}",
                reply.text
            );
            match status {
                401 => drop(reply.assert_error(401, "unauthorized")),
                403 => drop(reply.assert_error(403, "forbidden")),
                404 => drop(reply.assert_error(404, "not_found")),
                _ => {}
            }
        }
    }

    // DELETE needs a fresh market per caller that may delete.
    for ((who, caller), status) in c.everyone().into_iter().zip([401, 204, 403, 204, 204]) {
        let m = c
            .owner
            .create_market(json!({"name": format!("Deletable by {who}?")}))
            .await;
        let reply = c
            .send(
                caller,
                Method::DELETE,
                &format!("/api/markets/{}", m["id"]),
                None,
            )
            .await;
        assert_eq!(
            reply.status.as_u16(),
            status,
            "{who} DELETE: {}",
            reply.text
        );
    }
}

#[tokio::test]
async fn another_user_cannot_modify_or_delete_what_only_its_owner_may_and_nothing_changes() {
    let c = cast().await;
    let market = c
        .owner
        .create_market(json!({"name": "Mine alone", "description": "original"}))
        .await;
    let path = format!("/api/markets/{}", market["id"]);
    let before = c.app.snapshot();
    c.other
        .patch(&path, json!({"description": "hijacked"}))
        .await
        .assert_error(403, "forbidden");
    c.other
        .put(&path, json!({"name": "Hijacked"}))
        .await
        .assert_error(403, "forbidden");
    c.other.delete(&path).await.assert_error(403, "forbidden");
    assert_eq!(c.app.snapshot(), before);
    assert_eq!(c.app.get(&path).await.body["data"], market);
}

#[tokio::test]
async fn nobody_can_raise_their_own_role_through_any_payload() {
    let c = cast().await;
    for who in [&c.other, &c.moderator] {
        who.patch(&format!("/api/users/{}", who.id), json!({"role": "admin"}))
            .await
            .assert_error(403, "forbidden");
    }
    c.other
        .post("/api/markets", json!({"name": "Sneaky", "role": "admin"}))
        .await
        .assert_field_error(400, "invalid_body", "role");
    c.other
        .patch("/api/me", json!({"role": "admin"}))
        .await
        .assert_error(405, "method_not_allowed");
    let roles: Vec<String> = c
        .app
        .db()
        .query_rows("SELECT role FROM users ORDER BY id", &[]);
    assert_eq!(roles, ["user", "user", "moderator", "admin"]);
}

#[tokio::test]
async fn a_role_change_by_an_admin_applies_from_the_callers_next_request() {
    let c = cast().await;
    let market = c.owner.create_market(json!({"name": "Moderate me"})).await;
    let path = format!("/api/markets/{}", market["id"]);
    let promoted = c
        .admin
        .patch(
            &format!("/api/users/{}", c.other.id),
            json!({"role": "moderator"}),
        )
        .await;
    assert_eq!(promoted.status, StatusCode::OK);
    // The token it already holds acts as a moderator now; no new login needed.
    assert_eq!(
        c.other
            .patch(&path, json!({"description": "moderated"}))
            .await
            .status,
        StatusCode::OK
    );
    c.admin
        .patch("/api/users/999999", json!({"role": "user"}))
        .await
        .assert_error(404, "not_found");
    c.admin
        .patch(
            &format!("/api/users/{}", c.other.id),
            json!({"role": "root"}),
        )
        .await
        .assert_field_error(400, "invalid_body", "role");
}

#[tokio::test]
async fn the_last_admin_cannot_be_demoted_but_one_of_two_can() {
    let c = cast().await;
    let me = format!("/api/users/{}", c.admin.id);
    c.admin
        .patch(&me, json!({"role": "user"}))
        .await
        .assert_error(409, "last_admin");
    let promoted = c
        .admin
        .patch(
            &format!("/api/users/{}", c.other.id),
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!(promoted.status, StatusCode::OK);
    let demoted = c.admin.patch(&me, json!({"role": "moderator"})).await;
    assert_eq!(demoted.status, StatusCode::OK, "{}", demoted.text);
    assert_eq!(demoted.body["data"]["role"], "moderator");
}
