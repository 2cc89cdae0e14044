//! The `agora` binary: parses the command line and runs the chosen subcommand.
//!
//! - `agora serve` (the default): serve the API. `agora openapi`: print the OpenAPI document.
//! - `agora seed --markets N [--users M]`: add demo users (`demo<id>`, password `agora-demo`,
//!   the signup grant) and markets with a few stakes each; running it again adds more.
//! - `agora users create --username NAME [--role admin|moderator|user]`: create an account;
//!   the password comes from `--password`, `AGORA_USER_PASSWORD` or one line of stdin. This is
//!   how to make the first admin, on a fresh data directory or while the server runs.
//! - `agora backup PATH` / `agora restore PATH`: a consistent copy of the database while the
//!   server runs; put a checked copy back while no server runs (see `db`'s docs).
//!
//! With cargo, put the subcommand after `--`: `cargo run --release -- seed --markets 50`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use agora::{
    config::{Cli, Command, UsersCommand},
    App,
};
use clap::Parser;

/// mimalloc: freeing a block allocated on another thread costs it no lock (tokio moves a
/// connection's task between workers, and glibc's malloc spent ~20% of a read by id on
/// contended arena locks for that). Its options are set by [`allocator_options`].
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The allocator's options, read from the environment when the process loads (before `main`):
/// no eager commit of its 1 GiB arena and freed pages returned to the system at once. With
/// mimalloc's defaults an idle server on 100,000 markets held 98 MiB (PSS) instead of 56: the
/// eagerly committed arena's freed pages are only reset (`MADV_FREE`), which the kernel leaves
/// resident until it runs short. Set at run time the first arena is already committed, so when
/// any is missing the process re-executes itself once with them set (same PID and arguments);
/// options the user set are kept. If that fails, agora runs with mimalloc's defaults.
const ALLOCATOR_OPTIONS: [(&str, &str); 2] = [
    ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
    ("MIMALLOC_PURGE_DELAY", "0"),
];

fn allocator_options() {
    use std::os::unix::process::CommandExt as _;
    let missing: Vec<_> = ALLOCATOR_OPTIONS
        .iter()
        .filter(|(name, _)| std::env::var_os(name).is_none())
        .collect();
    if missing.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    command.args(args);
    for (name, value) in missing {
        command.env(name, value);
    }
    // Returns only when the exec failed; then run on as we are.
    let _ = command.exec();
}

fn main() -> ExitCode {
    allocator_options();
    let cli = Cli::parse();
    // Blocking threads run database reads, and a read needs one of the pooled connections:
    // more threads than connections (plus a few for jobs and search scans) only wait, each
    // with its own stack and allocator arena. Tokio's default allows 512.
    let blocking = cli.config.db_readers as usize + 8;
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(blocking)
        .build()
    {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => fail(&e),
    }
}

async fn run(cli: Cli) -> ExitCode {
    let config = cli.config;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => {
            print!("{}", agora::api::spec_json());
            ExitCode::SUCCESS
        }
        Command::Seed(args) => {
            let _log = agora::telemetry::init(config.log_format, &config.log);
            match agora::seed::run(&config, &args).await {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Users(UsersCommand::Create(args)) => {
            let _log = agora::telemetry::init(config.log_format, &config.log);
            match agora::admin::create_user(&config, &args).await {
                Ok(user) => {
                    println!(
                        "created {} {} (id {})",
                        user.role.as_str(),
                        user.username,
                        user.id
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Backup(args) => {
            let db_file = config.db_path();
            match agora::app::backups(&config).backup_to(args.path).await {
                Ok(b) => {
                    println!(
                        "backed up {} to {} ({} bytes, integrity ok)",
                        db_file.display(),
                        b.path.display(),
                        b.bytes
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Restore(args) => match agora::app::backups(&config)
            .restore_from(args.path.clone())
            .await
        {
            Ok(kept) => {
                println!(
                    "restored {} into {} (the replaced database is at {})",
                    args.path.display(),
                    config.db_path().display(),
                    kept.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::Serve => {
            let _log = agora::telemetry::init(config.log_format, &config.log);
            let app = match App::build(config).await {
                Ok(app) => app,
                Err(e) => return fail(&e),
            };
            match app.run_until_stopped(shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    tracing::error!(error = %e, "agora failed");
    eprintln!("agora: {e}");
    ExitCode::FAILURE
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}
