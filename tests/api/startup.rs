//! Starting and stopping: a failed start leaves the data directory untouched, and the start-up
//! log says in one line where the server listens and where its docs are.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use agora::{app::StartError, search::transformer, App, Config};

use crate::helpers::{database_args, fresh_database, on_postgres};

#[tokio::test]
async fn a_start_on_a_taken_port_fails_and_leaves_nothing_in_the_data_dir() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let parent = tempfile::tempdir().unwrap();
    let data_dir = parent.path().join("fresh");
    // No --jwt-secret: a start that got far enough would generate one into the data dir.
    // On PostgreSQL a database of its own (a data dir's would be named in the dir).
    let mut args = vec![
        "agora",
        "--bind",
        &addr,
        "--data-dir",
        data_dir.to_str().unwrap(),
    ];
    let database = on_postgres().then(fresh_database);
    if let Some(url) = &database {
        args.extend(["--database-url", url]);
    }
    let config = Config::from_args(args).unwrap();

    let started = App::build(config).await;

    assert!(
        matches!(started, Err(StartError::Bind { .. })),
        "the start must fail to bind"
    );
    assert!(
        !data_dir.exists(),
        "a failed start created {:?}",
        std::fs::read_dir(&data_dir)
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
}

/// A child process that is killed if the test fails before it stops it.
struct Agora(std::process::Child);

impl Drop for Agora {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Lines the process writes to stderr, as they come.
fn stderr_lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The first line that contains `needle` (a generous bound only keeps a broken start from
/// hanging the suite; nothing here is timed).
fn line_with(lines: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        match lines.recv_timeout(Duration::from_secs(120)) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no log line with {needle:?}: {e}"),
        }
    }
}

/// The binary started on `dir` at a free port with `args` added, its stderr lines, and the
/// start-up line once it has been logged.
fn start(dir: &std::path::Path, args: &[&str]) -> (Agora, mpsc::Receiver<String>, String) {
    let mut child = Agora(
        Command::new(env!("CARGO_BIN_EXE_agora"))
            .args(["--data-dir", dir.to_str().unwrap(), "--bind", "127.0.0.1:0"])
            .args(args)
            .args(database_args(dir))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("agora starts"),
    );
    let lines = stderr_lines(&mut child.0);
    let line = line_with(&lines, "agora listening on");
    (child, lines, line)
}

/// The base URL the start-up line names.
fn base_url(line: &str) -> String {
    line.split("agora listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("an address follows")
        .to_owned()
}

/// Sends SIGTERM; the process logs "agora stopped" and exits with success.
fn terminate(child: &mut Agora, lines: &mpsc::Receiver<String>) {
    let term = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    line_with(lines, "agora stopped");
    assert!(child.0.wait().unwrap().success(), "clean exit");
}

#[tokio::test]
async fn the_start_up_line_names_the_address_and_the_docs_url_in_both_log_formats() {
    for format in ["json", "pretty"] {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, lines, line) = start(dir.path(), &["--log-format", format]);
        let base = base_url(&line);
        assert!(base.starts_with("http://127.0.0.1:"), "{format}: {line}");
        assert!(
            line.contains(&format!("docs at {base}/docs")),
            "{format}: {line}"
        );
        let docs = reqwest::get(format!("{base}/docs")).await.unwrap();
        assert_eq!(docs.status(), 200, "{format}: the logged docs URL serves");

        terminate(&mut child, &lines);
    }
}

/// `--http-threads N` serves connections on N threads of their own (named `agora-http-0` ..),
/// each connection on one of them, and they stop with the server.
#[tokio::test]
async fn connections_are_served_by_the_http_threads_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, lines, line) = start(dir.path(), &["--http-threads", "3"]);
    let base = base_url(&line);

    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", child.0.id()))
        .unwrap()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .map(|comm| comm.trim().to_owned())
        .filter(|comm| comm.starts_with("agora-http"))
        .collect();
    names.sort();
    assert_eq!(names, ["agora-http-0", "agora-http-1", "agora-http-2"]);

    // Twelve connections at once (a client each), three requests on each.
    let requests = (0..12).map(|_| {
        let base = base.clone();
        async move {
            let client = reqwest::Client::new();
            for _ in 0..3 {
                let resp = client.get(format!("{base}/healthz")).send().await.unwrap();
                assert_eq!(resp.status(), 200);
                let body: serde_json::Value = resp.json().await.unwrap();
                assert_eq!(body["status"], "ok", "{body}");
            }
        }
    });
    futures::future::join_all(requests).await;

    terminate(&mut child, &lines);
}

/// `--embedder transformer` refuses to start without all-MiniLM-L6-v2's weights, or with other
/// files in their place, and says how to fetch them.
#[tokio::test]
async fn the_transformer_embedder_needs_its_checked_weights() {
    let data = tempfile::tempdir().unwrap();
    let weights = data.path().join("weights");
    let start = |weights: Option<&std::path::Path>| {
        let mut args = vec![
            "agora".to_owned(),
            "--bind".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data.path().to_str().unwrap().into(),
            "--embedder".into(),
            "transformer".into(),
        ];
        if let Some(w) = weights {
            args.extend(["--embedder-weights".into(), w.to_str().unwrap().into()]);
        }
        App::build(Config::from_args(args).unwrap())
    };
    let why = |started: Result<App, StartError>| match started {
        Err(StartError::Init(why)) => why,
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("started without the weights"),
    };
    // By default they are looked for under the data dir, where fetch.py puts them.
    let missing = why(start(None).await);
    assert!(
        missing.contains("models/all-MiniLM-L6-v2/model.safetensors")
            && missing.contains("data/embedder/fetch.py"),
        "{missing}"
    );
    std::fs::create_dir_all(&weights).unwrap();
    std::fs::write(weights.join("model.safetensors"), b"something else").unwrap();
    let wrong = why(start(Some(&weights)).await);
    assert!(
        wrong.contains("SHA-256") && wrong.contains(transformer::WEIGHTS_SHA256),
        "{wrong}"
    );
}
