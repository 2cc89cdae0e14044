//! The README's tour, replayed: the quick start's commands set up a fresh data directory, a
//! server starts on it, and every example of the tour runs in order, each response checked
//! against the one the README shows (status, headers shown, and the body by the rule in
//! [`pattern`]). The README and the server cannot drift apart unnoticed.
//!
//! What the tour may hold, so that it stays machine-checkable: fenced `console` blocks of
//! `$ ` commands, each either `NAME=$(curl -s ... | jq -r .path)` (a capture: later commands
//! use `$NAME`) or `curl -i ...` followed by its response: the status line, the headers worth
//! showing, a blank line and the JSON body. An event stream is read with `curl -i -N
//! --max-time N` (for N seconds) and shown as its messages (`id:`, `event:`, and `data:` with
//! a JSON body checked by the same rule), a last line `...` leaving out the messages after.

mod pattern;

use std::collections::HashMap;

use agora::{
    config::{Cli, Command, UsersCommand},
    Config,
};
use clap::Parser as _;
use reqwest::Method;
use serde_json::Value;

use crate::helpers::{database_args, Reply, TestApp};

const README: &str = include_str!("../../README.md");
/// The address the README's commands use; the test server's replaces it.
const DEFAULT_BASE: &str = "http://127.0.0.1:8080";

#[tokio::test]
async fn the_readme_tour_runs_as_shown_on_the_quick_starts_data() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    // On PostgreSQL, the quick start's commands and server are all given the data dir's
    // database.
    let database = database_args(dir.path());
    run_quick_start(&data_dir, &database).await;
    // The quick start's server: every setting at its default but the port.
    let args = ["agora", "--bind", "127.0.0.1:0", "--data-dir", &data_dir];
    let config = Config::from_args(
        args.iter()
            .copied()
            .chain(database.iter().map(String::as_str)),
    )
    .unwrap();
    let app = TestApp::spawn_with(dir, config).await;

    let steps = tour_steps();
    assert!(steps.len() >= 30, "the tour has only {} steps", steps.len());
    let mut vars = HashMap::new();
    for step in &steps {
        step.run(&app, &mut vars).await;
    }
    app.assert_invariants();
}

/// Runs the quick start's `cargo run --release -- <subcommand>` lines (other than the server
/// itself) against `data_dir` with the flags in `database`, through the binary's own
/// command-line parser.
async fn run_quick_start(data_dir: &str, database: &[String]) {
    let quick_start = section("## Quick start");
    let mut ran = Vec::new();
    for block in blocks(&quick_start).iter().filter(|b| b.lang == "sh") {
        for line in block.body.lines() {
            let line = line.split(" #").next().unwrap_or_default().trim();
            let Some((before, args)) = line.split_once("cargo run --release -- ") else {
                continue;
            };
            let stdin = before
                .strip_prefix("echo '")
                .and_then(|rest| rest.split_once("' |"))
                .map(|(text, _)| text.to_owned());
            let mut argv = vec!["agora".to_owned(), "--data-dir".into(), data_dir.into()];
            argv.extend(args.split_whitespace().map(str::to_owned));
            argv.extend_from_slice(database);
            let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{line}: {e}"));
            match cli.command {
                Some(Command::Seed(args)) => {
                    agora::seed::run(&cli.config, &args).await.unwrap();
                }
                Some(Command::Users(UsersCommand::Create(mut args))) => {
                    args.password = Some(stdin.expect("the password is echoed into the command"));
                    agora::admin::create_user(&cli.config, &args).await.unwrap();
                }
                _ => panic!("the test does not know how to run `{line}`"),
            }
            ran.push(line.to_owned());
        }
    }
    assert!(
        ran.iter().any(|l| l.contains(" seed "))
            && ran.iter().any(|l| l.contains(" users create ")),
        "the quick start seeds and creates the first admin: {ran:?}"
    );
}

/// The text of the README section that starts with `heading`, up to the next `## ` heading.
fn section(heading: &str) -> String {
    let start = README
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README has no {heading:?} section"));
    let rest = &README[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 4);
    rest[..end].to_owned()
}

/// A fenced block: its language, text, and line within its section.
struct Block {
    lang: String,
    body: String,
    line: usize,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(lang)) => {
                open = Some(Block {
                    lang: lang.trim().to_owned(),
                    body: String::new(),
                    line: i + 1,
                })
            }
            (Some(_), Some("")) => out.extend(open.take()),
            (Some(block), _) => {
                block.body.push_str(line);
                block.body.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// One example of the tour.
enum Step {
    /// `NAME=$(curl -s ... | jq -r PATH)`.
    Capture {
        at: String,
        name: String,
        curl: String,
        path: String,
    },
    /// `curl -i ...` and the response the README shows.
    Call {
        at: String,
        curl: String,
        shown: String,
    },
}

fn tour_steps() -> Vec<Step> {
    let tour = section("## Tour");
    let mut steps = Vec::new();
    for block in blocks(&tour) {
        let at = format!("README tour, block at line {} of the section", block.line);
        assert_eq!(
            block.lang, "console",
            "{at}: the tour holds only console blocks"
        );
        for (command, response) in commands(&block.body) {
            steps.push(step(&at, command, response));
        }
    }
    steps
}

/// The commands of a console block with what follows each: `$ ` starts a command, a trailing
/// `\` continues it on the next line, and the lines up to the next command are its response.
fn commands(body: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut continued = false;
    for line in body.lines() {
        if continued {
            let (command, _) = out.last_mut().expect("a command to continue");
            command.push(' ');
            command.push_str(line.trim().trim_end_matches('\\').trim_end());
        } else if let Some(command) = line.strip_prefix("$ ") {
            out.push((
                command.trim_end_matches('\\').trim_end().to_owned(),
                String::new(),
            ));
        } else {
            let (_, response) = out.last_mut().expect("a response follows a command");
            response.push_str(line);
            response.push('\n');
        }
        continued = line.ends_with('\\');
    }
    out
}

fn step(at: &str, command: String, response: String) -> Step {
    let at = at.to_owned();
    let capture = command.split_once("=$(").filter(|(n, _)| {
        n.chars()
            .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
    });
    match capture {
        Some((name, inner)) => {
            assert!(
                response.trim().is_empty(),
                "{at}: a capture shows no response: {command}"
            );
            let inner = inner.strip_suffix(')').expect("a capture ends with `)`");
            let (curl, path) = inner
                .rsplit_once(" | jq -r ")
                .expect("a capture pipes to jq -r");
            Step::Capture {
                name: name.to_owned(),
                curl: curl.to_owned(),
                path: path.to_owned(),
                at,
            }
        }
        None => Step::Call {
            at,
            curl: command,
            shown: response,
        },
    }
}

impl Step {
    async fn run(&self, app: &TestApp, vars: &mut HashMap<String, String>) {
        match self {
            Step::Capture {
                at,
                name,
                curl,
                path,
            } => {
                let reply = send(app, curl, vars, at).await;
                assert!(reply.status.is_success(), "{at}: `{curl}`: {}", reply.text);
                let value = jq(&reply.body, path)
                    .unwrap_or_else(|| panic!("{at}: no {path} in {}", reply.text));
                let text = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned);
                vars.insert(name.clone(), text);
            }
            Step::Call { at, curl, shown } => {
                assert!(
                    curl.starts_with("curl -i "),
                    "{at}: a shown response needs `curl -i`: {curl}"
                );
                let reply = send(app, curl, vars, at).await;
                let problems = compare(shown, &reply);
                assert!(
                    problems.is_empty(),
                    "{at}: `{curl}`\nthe README shows:\n{shown}\nthe server sent {} {:?}\n{}\n\ndifferences:\n{}",
                    reply.status,
                    reply.headers,
                    reply.text,
                    problems.join("\n")
                );
            }
        }
    }
}

/// Where a response differs from the README's: status, each header shown, the body.
fn compare(shown: &str, reply: &Reply) -> Vec<String> {
    let mut lines = shown.lines();
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
    let mut problems = Vec::new();
    if reply.status.as_u16() != status {
        problems.push(format!("status: shown {status}, got {}", reply.status));
    }
    for header in lines.by_ref().take_while(|l| !l.trim().is_empty()) {
        let (name, value) = header.split_once(": ").expect("`name: value` headers");
        match reply.header(name) {
            Some(got) if pattern::text_matches(value, got) => {}
            got => problems.push(format!("header {name}: shown {value:?}, got {got:?}")),
        }
    }
    let body: String = lines.collect::<Vec<_>>().join("\n");
    let streamed = reply
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/event-stream"));
    if streamed {
        problems.extend(event_differences(&body, &reply.text));
    } else if !body.trim().is_empty() {
        match pattern::parse(&body) {
            Ok(p) => problems.extend(pattern::differences(&p, &reply.body)),
            Err(e) => panic!("the README's body does not parse: {e}\n{body}"),
        }
    }
    problems
}

/// The messages of an event stream: each one's fields (comments left out).
fn messages(text: &str) -> Vec<Vec<(String, String)>> {
    text.split("\n\n")
        .map(|message| {
            message
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with(':'))
                .map(|l| {
                    let (field, value) = l.split_once(':').unwrap_or((l, ""));
                    (
                        field.to_owned(),
                        value.strip_prefix(' ').unwrap_or(value).to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .filter(|m| !m.is_empty())
        .collect()
}

/// Where a streamed body differs from the README's messages.
fn event_differences(shown: &str, got: &str) -> Vec<String> {
    let shown = shown.trim();
    let (shown, more) = match shown.strip_suffix("...") {
        Some(rest) => (rest.trim_end(), true),
        None => (shown, false),
    };
    let (want, have) = (messages(shown), messages(got));
    let mut problems = Vec::new();
    if have.len() < want.len() || (!more && have.len() != want.len()) {
        problems.push(format!(
            "{} messages shown{}, {} streamed",
            want.len(),
            if more { " and more" } else { "" },
            have.len()
        ));
    }
    for (i, (w, h)) in want.iter().zip(&have).enumerate() {
        let fields = |m: &[(String, String)]| m.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>();
        if fields(w) != fields(h) {
            problems.push(format!(
                "message {i}: fields {:?}, got {:?}",
                fields(w),
                fields(h)
            ));
            continue;
        }
        for ((field, value), (_, got)) in w.iter().zip(h) {
            if field == "data" {
                let pattern = pattern::parse(value)
                    .unwrap_or_else(|e| panic!("the README's data does not parse: {e}\n{value}"));
                let actual: Value = serde_json::from_str(got).unwrap_or(Value::Null);
                problems.extend(
                    pattern::differences(&pattern, &actual)
                        .into_iter()
                        .map(|p| format!("message {i}: {p}")),
                );
            } else if !pattern::text_matches(value, got) {
                problems.push(format!(
                    "message {i}: {field}: shown {value:?}, got {got:?}"
                ));
            }
        }
    }
    problems
}

/// Sends the request a `curl` command line describes.
async fn send(app: &TestApp, curl: &str, vars: &HashMap<String, String>, at: &str) -> Reply {
    let words = words(curl, vars).unwrap_or_else(|e| panic!("{at}: {e}: {curl}"));
    let mut args = words.iter().map(String::as_str);
    assert_eq!(
        args.next(),
        Some("curl"),
        "{at}: only curl commands: {curl}"
    );
    let (mut method, mut url, mut headers, mut body) = (None, None, Vec::new(), None);
    let mut max_time = None;
    while let Some(arg) = args.next() {
        match arg {
            "-i" | "-s" | "-N" => {}
            "--max-time" => {
                let secs: f64 = args.next().and_then(|s| s.parse().ok()).expect("seconds");
                max_time = Some(std::time::Duration::from_secs_f64(secs));
            }
            "-X" => method = args.next().map(str::to_owned),
            "-H" => headers.push(args.next().expect("-H takes a header")),
            "-d" => body = args.next().map(str::to_owned),
            url_arg if url_arg.starts_with(DEFAULT_BASE) => {
                url = Some(url_arg.replacen(DEFAULT_BASE, &app.base, 1))
            }
            other => panic!("{at}: the test does not know curl's {other:?}"),
        }
    }
    let method = method.unwrap_or(if body.is_some() { "POST" } else { "GET" }.into());
    let url = url.unwrap_or_else(|| panic!("{at}: no {DEFAULT_BASE} URL: {curl}"));
    let mut req = app
        .client
        .request(Method::from_bytes(method.as_bytes()).unwrap(), url);
    for header in headers {
        let (name, value) = header.split_once(':').expect("`Name: value`");
        req = req.header(name.trim(), value.trim());
    }
    if let Some(body) = body {
        req = req.body(body);
    }
    let resp = req.send().await.expect("request sent");
    match max_time {
        None => TestApp::read(resp).await,
        // As curl does: whatever arrives until the time is up (an event stream never ends).
        Some(limit) => {
            let (status, headers) = (resp.status(), resp.headers().clone());
            let mut resp = resp;
            let mut bytes = Vec::new();
            let deadline = tokio::time::Instant::now() + limit;
            while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, resp.chunk()).await {
                bytes.extend_from_slice(&chunk);
            }
            let text = String::from_utf8(bytes).expect("utf-8 body");
            Reply {
                status,
                headers,
                body: serde_json::from_str(&text).unwrap_or(Value::Null),
                text,
            }
        }
    }
}

/// A jq path such as `.data.access_token` or `.data[0].id`.
fn jq<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let mut at = value;
    for part in path.strip_prefix('.')?.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((key, rest)) => (key, Some(rest.strip_suffix(']')?.parse::<usize>().ok()?)),
            None => (part, None),
        };
        if !key.is_empty() {
            at = at.get(key)?;
        }
        if let Some(i) = index {
            at = at.get(i)?;
        }
    }
    Some(at)
}

/// Splits a command line into words as sh does for the quoting the README uses: '...' is
/// literal, "..." expands `$NAME` and honours `\"`, `\\` and `\$`.
fn words(line: &str, vars: &HashMap<String, String>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => out.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("an unterminated '".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') if chars.peek().is_some_and(|c| "\"\\$".contains(*c)) => {
                            w.extend(chars.next())
                        }
                        Some('$') => w.push_str(&expand(&mut chars, vars)?),
                        Some(c) => w.push(c),
                        None => return Err("an unterminated \"".into()),
                    }
                }
            }
            '$' => {
                let value = expand(&mut chars, vars)?;
                word.get_or_insert_with(String::new).push_str(&value);
            }
            '|' | '>' | '<' | ';' | '&' | '`' => return Err(format!("unsupported {c:?}")),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    out.extend(word);
    Ok(out)
}

fn expand(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    vars: &HashMap<String, String>,
) -> Result<String, String> {
    let braced = chars.next_if_eq(&'{').is_some();
    let mut name = String::new();
    while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_') {
        name.push(c);
    }
    if braced && chars.next() != Some('}') {
        return Err(format!("an unterminated ${{{name}"));
    }
    vars.get(&name)
        .cloned()
        .ok_or_else(|| format!("${name} is not set by an earlier capture"))
}
