//! The reference for agora's per-request overhead: a bare poem server with one JSON handler
//! and nothing else (no middleware, no OpenAPI layer), on the same runtime agora uses. The
//! load bench (`cargo bench --bench load`) builds it with
//! `cargo build --release --example bare_poem`, serves `GET /healthz` from it in the same run,
//! and reports agora's `/healthz` as a fraction of it.
//!
//! usage: bare_poem ADDR

use poem::{get, handler, listener::TcpListener, web::Json, Route, Server};

#[handler]
fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".into());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(
            Server::new(TcpListener::bind(addr)).run(Route::new().at("/healthz", get(healthz))),
        )
}
