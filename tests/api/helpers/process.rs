//! The real `agora` binary as a child process (the crash, outage and multi-process tests kill
//! it with SIGKILL, which an in-process server cannot be).

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use reqwest::Client;

use super::{database_args, JWT_SECRET, PASSWORD};

/// A running `agora serve` child.
pub struct Process {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Process {
    /// Registers `username` (password [`PASSWORD`]) through this process and logs it in;
    /// returns its access token.
    pub async fn account(&self, client: &Client, username: &str) -> String {
        let creds = serde_json::json!({"username": username, "password": PASSWORD});
        for step in ["register", "login"] {
            let reply = client
                .post(format!("{}/api/auth/{step}", self.base))
                .json(&creds)
                .send()
                .await
                .expect("request sent");
            assert!(reply.status().is_success(), "{step}: {}", reply.status());
            if step == "login" {
                let body: serde_json::Value = reply.json().await.expect("JSON");
                return body["data"]["access_token"]
                    .as_str()
                    .expect("an access token")
                    .to_owned();
            }
        }
        unreachable!("login returns")
    }

    /// Starts agora on a free port with the test secret, on `dir` (and its database, on
    /// PostgreSQL), the rate limiter off unless `extra` turns it on, plus `extra`; returns once
    /// `/healthz` answers.
    pub async fn start(dir: &Path, extra: &[&str], client: &Client) -> Process {
        let mut args: Vec<String> = vec!["--rate-limit".into(), "off".into()];
        args.extend(database_args(dir));
        args.extend(extra.iter().map(|a| a.to_string()));
        Self::start_with(dir, &args, client).await
    }

    /// Starts agora on `dir` with exactly `args` besides the address, secret and log level.
    pub async fn start_with(dir: &Path, args: &[String], client: &Client) -> Process {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_agora"))
            .args(["--data-dir", dir.to_str().unwrap()])
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(["--jwt-secret", JWT_SECRET, "--log", "error"])
            .args(args)
            .stdout(Stdio::null())
            // Its errors (a refused flag, a failed start) show in the test's output.
            .stderr(Stdio::inherit())
            .spawn()
            .expect("agora starts");
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..400 {
            if let Some(status) = child.try_wait().expect("child status") {
                panic!("agora exited at start: {status}");
            }
            if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
                if r.status().is_success() {
                    return Process { child, base };
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("agora did not come up");
    }

    /// SIGKILL: no shutdown, no flush beyond what each commit did.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reaped");
    }
}

impl Process {
    /// Sends SIGTERM: a graceful shutdown, as a service manager asks for one.
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits up to `within` for the process to exit; its status, or `None` while it runs on.
    pub async fn exited(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
