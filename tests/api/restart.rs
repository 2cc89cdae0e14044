//! Data survives a stop and a start on the same data directory.

use serde_json::json;

use crate::helpers::{on_postgres, TestApp};

#[tokio::test]
async fn data_written_before_a_restart_is_read_back_after_it() {
    let app = TestApp::spawn().await;
    let user = app.user("alice").await;
    let created = user
        .create_market(json!({"name": "Survives restarts?", "outcomes": ["A", "B", "C"]}))
        .await;
    let path = format!("/api/markets/{}", created["id"]);
    let patched = user
        .patch(&path, json!({"description": "edited before stop"}))
        .await
        .body["data"]
        .clone();
    let list_before = app.get("/api/markets").await.body;

    let dir = app.stop().await;
    assert!(
        on_postgres()
            || !dir.path().join("agora.db-wal").exists()
            || std::fs::metadata(dir.path().join("agora.db-wal"))
                .unwrap()
                .len()
                == 0,
        "a clean shutdown checkpoints the WAL"
    );
    let app = TestApp::spawn_in(dir).await;

    let reply = app.get(&path).await;
    assert_eq!(reply.body["data"], patched);
    assert_eq!(
        reply.header("etag"),
        Some(format!("\"{}-2\"", created["id"]).as_str())
    );
    assert_eq!(app.get("/api/markets").await.body, list_before);
    let user = app.caller("alice", user.id).await;
    let next = user.create_market(json!({"name": "After restart"})).await;
    assert!(next["id"].as_i64() > created["id"].as_i64());
}
