//! `agora seed` fills a database that the list endpoint then pages correctly.

use agora::config::SeedArgs;
use serde_json::Value;

use crate::helpers::TestApp;

#[tokio::test]
async fn seeded_markets_list_in_order_with_correct_totals() {
    let dir = tempfile::tempdir().unwrap();
    let config = TestApp::config(&dir, &[]);
    let report = agora::seed::run(
        &config,
        &SeedArgs {
            markets: 3_000,
            users: Some(50),
        },
    )
    .await
    .unwrap();
    assert_eq!((report.users, report.markets), (50, 3_000));
    let app = TestApp::spawn_in(dir).await;
    assert_eq!(app.count("markets"), 3_000);
    assert!(app.count("bets") > 1_000, "demo markets carry stakes");
    app.assert_invariants();
    // Seeded markets are indexed for search by the seed itself: no job needed.
    assert_eq!(app.count("market_vectors"), 3_000);
    assert_eq!(app.count("jobs WHERE kind = 'index_market'"), 0);
    let name = app.get("/api/markets?limit=1").await.body["data"][0]["name"].clone();
    let q = name.as_str().unwrap().replace(' ', "%20").replace('?', "");
    let found = app
        .get(&format!("/api/markets/search?q={q}&limit=50"))
        .await;
    assert_eq!(found.body["meta"]["mode"], "hybrid");
    assert!(
        found.body["data"].as_array().is_some_and(|d| !d.is_empty()),
        "{}",
        found.text
    );
    let top = app.get("/api/markets?sort=volume&limit=5").await;
    let volumes: Vec<i64> = top
        .column("volume")
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert!(
        volumes.windows(2).all(|w| w[0] >= w[1]) && volumes[0] > 0,
        "{volumes:?}"
    );

    let all = app.get("/api/markets?limit=100").await;
    assert_eq!(all.body["meta"]["total"], 3_000);
    let created: Vec<&str> = all.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["created_at"].as_str().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first");

    for status in ["active", "closed", "resolved", "cancelled"] {
        let expected: i64 = app
            .db()
            .query_one("SELECT count(*) FROM markets WHERE status = $1", &[&status]);
        assert!(expected > 0, "seed makes some {status} markets");
        let page = app
            .get(&format!("/api/markets?status={status}&sort=name&limit=100"))
            .await;
        assert_eq!(page.body["meta"]["total"], expected);
        let names: Vec<String> = page.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_lowercase())
            .collect();
        assert!(names.windows(2).all(|w| w[0] <= w[1]), "sorted by name");
        let resolved_have_resolution = page.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| (m["status"] == "resolved") != m["resolution"].is_null());
        assert!(resolved_have_resolution);
    }

    let mut seen = std::collections::HashSet::new();
    for offset in (0..300).step_by(100) {
        let page = app
            .get(&format!(
                "/api/markets?sort=close_time&limit=100&offset={offset}"
            ))
            .await;
        for m in page.body["data"].as_array().unwrap() {
            assert!(
                seen.insert(m["id"].as_i64().unwrap()),
                "pages do not overlap"
            );
            assert!(m["outcomes"].as_array().is_some_and(|o| o.len() >= 2));
            assert_ne!(m["creator"]["username"], Value::Null);
        }
    }

    // Every sort, direction and filter pages exactly like the plain SQL ordering (the list
    // query reads a page's ids from the index before reading the rows).
    let creator: i64 = app
        .db()
        .query_one("SELECT creator_id FROM markets LIMIT 1", &[]);
    for (sort, column) in [
        ("volume", "volume"),
        ("created_at", "created_at"),
        ("close_time", "close_time"),
        // SQLite's NOCASE folds ASCII letters only, as lower() does on SQLite and on the
        // test cluster (C locale).
        ("name", "lower(name)"),
    ] {
        for desc in [false, true] {
            for (filter, sql_filter) in [
                (String::new(), "1 = 1".to_owned()),
                ("&status=active".to_owned(), "status = 'active'".to_owned()),
                (
                    format!("&creator_id={creator}"),
                    format!("creator_id = {creator}"),
                ),
            ] {
                let dir = if desc { "DESC" } else { "ASC" };
                let nulls = if sort == "close_time" {
                    " NULLS LAST"
                } else {
                    ""
                };
                let expected: Vec<i64> = app.db().query_rows(
                    &format!(
                        "SELECT id FROM markets WHERE {sql_filter}
                          ORDER BY {column} {dir}{nulls}, id {dir} LIMIT 13 OFFSET 37"
                    ),
                    &[],
                );
                let order = if desc { "desc" } else { "asc" };
                let page = app
                    .get(&format!(
                        "/api/markets?sort={sort}&order={order}{filter}&limit=13&offset=37"
                    ))
                    .await;
                assert_eq!(page.ids(), expected, "sort={sort} order={order}{filter}");
            }
        }
    }
}
