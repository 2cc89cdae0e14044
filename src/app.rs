//! The one place that wires everything: database -> repositories -> services -> API ->
//! middleware, and shuts them down in order.

use std::{future::Future, sync::Arc, time::Duration};

use poem::{
    endpoint::make_sync,
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
    middleware::CatchPanic,
    EndpointExt, IntoResponse, Response, Route, Server,
};

use crate::{
    api::{self, error::ApiError},
    config::Config,
    db::{Db, DbError},
    middleware::{access_log::AccessLog, body_limit::BodyLimit},
    repo::{sqlite_markets::SqliteMarketRepository, MarketRepository},
    service::markets::MarketService,
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be created or used.
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// A built, bound, not yet running server.
pub struct App {
    acceptor: TcpAcceptor,
    port: u16,
    db: Arc<Db>,
    config: Config,
}

/// Opens the data directory and database (creating and migrating them as needed).
pub fn open_db(config: &Config) -> Result<Arc<Db>, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    Ok(Arc::new(Db::open(
        &config.db_path(),
        config.synchronous,
        config.db_readers,
    )?))
}

impl App {
    /// Opens storage and binds the listener; call [`App::run_until_stopped`] to serve.
    pub async fn build(config: Config) -> Result<App, StartError> {
        let db = open_db(&config)?;
        let bind_err = |source| StartError::Bind {
            addr: config.bind.to_string(),
            source,
        };
        let acceptor = TcpListener::bind(config.bind)
            .into_acceptor()
            .await
            .map_err(bind_err)?;
        let port = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().map(|s| s.port()))
            .unwrap_or(config.bind.port());
        Ok(App {
            acceptor,
            port,
            db,
            config,
        })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish
    /// (bounded by the shutdown timeout), drains the writer and checkpoints the database.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let App {
            acceptor,
            port,
            db,
            config,
        } = self;
        let markets: Arc<dyn MarketRepository> = Arc::new(SqliteMarketRepository::new(db.clone()));
        let markets = Arc::new(MarketService::new(markets));
        let routes = routes(api::apis(markets, db.clone()), &config);
        tracing::info!(port, data_dir = %config.data_dir.display(), "agora listening");
        let result = Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(
                routes,
                shutdown,
                Some(Duration::from_secs(config.shutdown_timeout_secs)),
            )
            .await;
        db.close().await;
        tracing::info!("agora stopped");
        result
    }
}

/// The whole HTTP surface with its middleware, outermost last.
fn routes(apis: api::Apis, config: &Config) -> impl poem::Endpoint<Output = Response> {
    let service = api::service(apis);
    let docs = api::swagger_ui_html();
    let spec = api::spec_json();
    Route::new()
        .nest("/", service)
        .at(
            "/docs",
            make_sync(move |_| {
                Response::builder()
                    .content_type("text/html; charset=utf-8")
                    .body(docs.clone())
            }),
        )
        .at(
            "/openapi.json",
            make_sync(move |_| {
                Response::builder()
                    .content_type("application/json")
                    .body(spec.clone())
            }),
        )
        .with(BodyLimit {
            limit: config.body_limit,
        })
        .with(CatchPanic::new().with_handler(panic_response))
        .with(AccessLog {
            timeout: config.request_timeout(),
        })
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("a handler panicked").into_response()
}
