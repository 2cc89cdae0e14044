//! A stand-in for an OpenAI-compatible embedding provider, served by the test itself.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use agora::search::embedder::HashEmbedder;
use poem::{
    handler,
    listener::{Acceptor, Listener, TcpListener},
    web::{Data, Json},
    EndpointExt, IntoResponse, Response, Route, Server,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A stand-in for an OpenAI-compatible embedding provider: fails the first `fail_first`
/// calls with 503, answers with the built-in embedder's vectors after that, and is down
/// (503) while `down` is set. Records when each call came.
#[derive(Default)]
pub struct Provider {
    pub fail_first: usize,
    pub calls: AtomicUsize,
    pub down: AtomicBool,
    pub times: Mutex<Vec<Instant>>,
    /// Never answers (a provider that hangs): calls are counted, then wait forever.
    pub hang: bool,
}

#[handler]
async fn embeddings(provider: Data<&Arc<Provider>>, body: Json<Value>) -> Response {
    let n = provider.calls.fetch_add(1, Ordering::SeqCst) + 1;
    provider.times.lock().unwrap().push(Instant::now());
    if provider.hang {
        std::future::pending::<()>().await;
    }
    if n <= provider.fail_first || provider.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let embedder = HashEmbedder::default();
    let data: Vec<Value> = body["input"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, text)| {
            json!({"index": i, "embedding": embedder.embed_text(text.as_str().unwrap())})
        })
        .collect();
    poem::web::Json(json!({ "data": data })).into_response()
}

/// Serves `provider` on a free port; returns its base URL.
pub async fn start_provider(provider: Arc<Provider>) -> String {
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    let app = Route::new()
        .at("/v1/embeddings", poem::post(embeddings))
        .data(provider);
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
    format!("http://{addr}")
}
