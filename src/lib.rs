//! agora: a prediction-markets API server. One binary serves an OpenAPI-documented REST API on
//! an embedded SQLite database.
//!
//! Layers, dependencies pointing down: `api` (HTTP handlers) -> `service` (rules) -> `repo`
//! (data access behind traits) -> `db` (connections, writer, migrations). `app` wires them;
//! `main` only parses the command line.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod app;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod jobs;
pub mod metrics;
pub mod middleware;
pub mod repo;
pub mod search;
pub mod seed;
pub mod server;
pub mod service;
pub mod telemetry;

pub use app::App;
pub use config::Config;
