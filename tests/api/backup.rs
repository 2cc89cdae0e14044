//! Backups taken under load restore to a sound database; restore waits for the server to stop;
//! the admin endpoint and its retention; start-up refuses what it cannot serve safely. Backups
//! are copies of SQLite's `agora.db`: on PostgreSQL they are `pg_dump`'s job, and `agora
//! backup` and `agora restore` say so.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use agora::{
    db::backup::{self, BackupError},
    App,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    helpers::{database_args, skip_on_postgres, skip_on_sqlite, TestApp},
    jobs::indexed,
};

#[tokio::test]
async fn a_backup_taken_during_a_stake_load_restores_to_a_sound_database() {
    if skip_on_postgres("copies and restores the SQLite file agora.db") {
        return;
    }
    let app = TestApp::spawn().await;
    let owner = app.user("owner").await;
    let mut markets = Vec::new();
    for i in 0..4 {
        markets.push(
            owner
                .create_market(json!({ "name": format!("Busy market {i}?") }))
                .await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let mut stakers = Vec::new();
    for i in 0..8 {
        stakers.push(app.user(&format!("staker{i}")).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, staker) in stakers.into_iter().enumerate() {
        let (stop, markets) = (stop.clone(), markets.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let market = markets[(i + n) % markets.len()];
                let body = json!({"outcome": n % 2, "amount": 1});
                staker
                    .post(&format!("/api/markets/{market}/positions"), body)
                    .await;
                n += 1;
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (db_file, dest) = (
        app.dir.path().join("agora.db"),
        app.dir.path().join("copies").join("during-load.db"),
    );
    let taken = tokio::task::spawn_blocking({
        let dest = dest.clone();
        move || backup::backup(&db_file, &dest)
    })
    .await
    .unwrap()
    .expect("backup while staking");
    assert!(taken.bytes > 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut placed = 0;
    for task in tasks {
        placed += task.await.unwrap();
    }
    assert!(placed > 20, "the load ran ({placed} stakes)");

    // A backup never overwrites; a restore is refused while the server runs.
    assert!(matches!(
        backup::backup(&app.dir.path().join("agora.db"), &dest),
        Err(BackupError::Exists(_))
    ));
    assert!(matches!(
        backup::restore(&dest, app.dir.path()),
        Err(BackupError::InUse(_))
    ));
    let live_bets = app.count("bets");
    let dir = app.stop().await;

    // Restored into the stopped server's directory: sound, and as of the backup.
    let kept = backup::restore(&dest, dir.path()).expect("restore after stop");
    assert!(kept.exists(), "the replaced database is kept");
    let app = TestApp::spawn_in(dir).await;
    app.assert_invariants();
    let restored_bets = app.count("bets");
    assert!(
        restored_bets > 0 && restored_bets <= live_bets,
        "{restored_bets} of {live_bets}"
    );
    assert_eq!(app.count("markets"), 4);
    let reply = app.get(&format!("/api/markets/{}", markets[0])).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn the_admin_backup_endpoint_leaves_checked_copies_and_keeps_the_newest() {
    if skip_on_postgres("the backup job copies the SQLite file agora.db") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = TestApp::config(&dir, &["--backup-keep", "2"]);
    let app = TestApp::spawn_with(dir, config).await;
    let admin = app.with_role("root", "admin").await;
    let user = app.user("alice").await;
    user.create_market(json!({"name": "Will the backup hold?"}))
        .await;
    indexed(&app).await;
    user.post("/api/admin/backup", json!({}))
        .await
        .assert_error(403, "forbidden");
    app.post("/api/admin/backup", json!({}))
        .await
        .assert_error(401, "unauthorized");
    let mut paths = Vec::new();
    for _ in 0..3 {
        let accepted = admin.post("/api/admin/backup", json!({})).await;
        assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
        let location = accepted.header("location").unwrap().to_owned();
        let mut job = Value::Null;
        for _ in 0..400 {
            job = admin.get(&location).await.body["data"].clone();
            if job["status"] == "succeeded" || job["status"] == "dead" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["result"]["integrity"], "ok");
        let path = std::path::PathBuf::from(job["result"]["path"].as_str().unwrap());
        backup::verify(&path).expect("the copy checks out");
        paths.push(path);
    }
    let left: Vec<_> = paths.iter().filter(|p| p.exists()).collect();
    assert_eq!(left, [&paths[1], &paths[2]], "the oldest copy was pruned");
}

async fn build_error(dir: &std::path::Path) -> String {
    let config = TestApp::config(&tempfile::tempdir().unwrap(), &[]);
    let config = agora::Config {
        data_dir: dir.to_path_buf(),
        ..config
    };
    match App::build(config).await {
        Ok(_) => panic!("the server started"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn start_up_refuses_a_second_server_and_a_damaged_or_newer_database() {
    if skip_on_postgres("the data-dir lock and agora.db's files are SQLite's") {
        return;
    }
    let app = TestApp::spawn().await;
    let why = build_error(app.dir.path()).await;
    assert!(why.contains("a running agora server holds"), "{why}");
    let dir = app.stop().await;

    let db = dir.path().join("agora.db");
    app_db_set_version(&db, 999);
    let why = build_error(dir.path()).await;
    assert!(why.contains("newer than this agora supports"), "{why}");

    std::fs::write(&db, vec![7u8; 64 * 1024]).unwrap();
    for side in ["agora.db-wal", "agora.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(side));
    }
    let why = build_error(dir.path()).await;
    assert!(why.contains("cannot open database"), "{why}");
}

#[tokio::test]
async fn start_up_refuses_a_data_dir_it_cannot_create() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let why = build_error(&file.join("data")).await;
    assert!(why.contains("a-file/data"), "{why}");
}

fn app_db_set_version(db: &std::path::Path, version: i64) {
    let conn = agora::db::rusqlite::Connection::open(db).unwrap();
    conn.pragma_update(None, "user_version", version).unwrap();
}

#[tokio::test]
async fn a_full_disk_refuses_writes_with_503_whole_and_reads_go_on() {
    if skip_on_postgres("--db-max-size-mb caps the SQLite file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The fresh database takes about 0.5 MiB; a 2 MiB cap fills after some markets.
    let config = TestApp::config(&dir, &["--db-max-size-mb", "2", "--job-workers", "0"]);
    let app = TestApp::spawn_with(dir, config).await;
    let user = app.user("filler").await;
    let description = "x".repeat(4_000);
    let mut full = None;
    for i in 0..2_000 {
        let before = app.count("markets");
        let reply = user
            .post(
                "/api/markets",
                json!({"name": format!("Filler market {i}?"), "description": description}),
            )
            .await;
        if reply.status != StatusCode::CREATED {
            reply.assert_error(503, "unavailable");
            assert_eq!(app.count("markets"), before, "nothing half-written");
            full = Some(i);
            break;
        }
    }
    let created = full.expect("the cap was reached");
    assert!(created > 10, "{created} markets fit");
    // Reads go on, the money is consistent, and small writes that fit still succeed.
    let list = app.get("/api/markets?limit=5").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["meta"]["total"], created);
    app.assert_invariants();
    // With room again (a larger cap after a restart), writes succeed.
    let dir = app.stop().await;
    let config = TestApp::config(&dir, &["--db-max-size-mb", "64"]);
    let app = TestApp::spawn_with(dir, config).await;
    let user = app.caller("filler", user.id).await;
    user.create_market(json!({"name": "More room?", "description": description}))
        .await;
    app.assert_invariants();
}

#[cfg(unix)]
#[tokio::test]
async fn the_data_dir_database_wal_and_backups_are_private_to_the_server_user() {
    if skip_on_postgres("the files checked are SQLite's: agora.db, its WAL and the lock") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let parent = tempfile::tempdir().expect("tempdir");
    let data = parent.path().join("fresh");
    let config = TestApp::config(&parent, &["--data-dir", data.to_str().expect("utf-8")]);
    let app = TestApp::spawn_with(tempfile::tempdir().expect("tempdir"), config).await;
    let alice = app.user("alice").await;
    alice.create_market(json!({"name": "Private?"})).await;
    assert_eq!(mode(&data), 0o700, "data dir");
    for file in ["agora.db", "agora.db-wal", "agora.db-shm", "agora.lock"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    let dest = data.join("backups").join("agora-test.db");
    backup::backup(&data.join("agora.db"), &dest).expect("backup");
    assert_eq!(mode(&data.join("backups")), 0o700, "backups dir");
    assert_eq!(mode(&dest), 0o600, "backup file");
    app.stop().await;

    // A database an older agora left world-readable is made private at the next start.
    for file in ["agora.db", "agora.db-wal"] {
        let path = data.join(file);
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let config = TestApp::config(&parent, &["--data-dir", data.to_str().expect("utf-8")]);
    let app = TestApp::spawn_with(tempfile::tempdir().expect("tempdir"), config).await;
    assert_eq!(mode(&data.join("agora.db")), 0o600);
    app.stop().await;
}

#[tokio::test]
async fn on_postgresql_backup_and_restore_refuse_and_name_pg_dump_and_pg_restore() {
    if skip_on_sqlite("agora backup and restore copy agora.db there (the tests above)") {
        return;
    }
    let app = TestApp::spawn().await;
    app.user("alice").await;
    let dir = app.stop().await;
    let copy = dir.path().join("copy.db");
    let run = |command: &str, tool: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_agora"))
            .args(["--data-dir", dir.path().to_str().unwrap(), "--log", "error"])
            .args(database_args(dir.path()))
            .args([command, copy.to_str().unwrap()])
            .output()
            .expect("agora runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "agora {command} succeeded: {stderr}");
        assert!(
            stderr.contains(tool),
            "agora {command} does not name {tool}: {stderr}"
        );
    };
    run("backup", "pg_dump");
    assert!(!copy.exists(), "a refused backup wrote {}", copy.display());
    std::fs::write(&copy, b"not a database").unwrap();
    run("restore", "pg_restore");
    let app = TestApp::spawn_in(dir).await;
    assert_eq!(app.count("users"), 1, "a refused restore changed nothing");
}
