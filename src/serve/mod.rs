//! The model server behind `classify serve`: HTTP routes for two inference protocols, a web
//! page and metrics, over one model thread that batches concurrent requests.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /` | a web page: drop or pick an image, see the top-5 classes ([`page`]) |
//! | `GET /ping`, `POST /invocations`, `GET /execution-parameters` | the SageMaker inference contract, Batch Transform's included ([`invocations`]) |
//! | `GET /v2/health/live`, `/v2/health/ready`, `/v2`, `/v2/models/classify`, `/v2/models/classify/ready`, `POST /v2/models/classify/infer` | KServe's Open Inference Protocol v2 ([`kserve`]) |
//! | `GET /metrics` | Prometheus text format ([`metrics`]) |
//!
//! Requests flow one way: a connection (at most [`Limits::max_connections`], its head within
//! [`Limits::header_timeout`]) -> body (at most [`BODY_LIMIT`] bytes, else 413; read within
//! [`Limits::body_timeout`], else 408; held within [`Limits::body_memory`] for all requests
//! together, else 503) -> admission (a ticket, else 429) -> decoding on the blocking pool
//! ([`input`]) -> the model thread's queue ([`batcher`]) -> JSON. Every failure is an
//! [`ApiError`], answered as `{"error": "..."}` with its status code. Build the router with
//! [`app`] (tests call it directly); [`run`] serves it on a listener with the [`limits`];
//! [`serve`] binds a socket and runs until SIGTERM or Ctrl-C, letting requests in flight
//! finish (for up to [`SHUTDOWN_GRACE`]).

pub mod batcher;
pub mod error;
pub mod input;
pub mod invocations;
pub mod kserve;
pub mod limits;
pub mod metrics;
pub mod page;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::geometry::Framing;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{Method, Request, Uri, header};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

pub use batcher::{BatchOptions, Batcher, Model, Probabilities};
pub use error::ApiError;
pub use limits::Limits;
pub use metrics::Metrics;

use crate::classifier::Classifier;

/// Largest request body accepted, in bytes (5 MiB); larger bodies get 413.
pub const BODY_LIMIT: usize = 5 * 1024 * 1024;

/// Most prediction requests admitted at once (decoding, queued or being evaluated); more get
/// 429. Far above what the model clears in a second on a small CPU, so only a flood hits it,
/// and small enough that the bodies it holds (at most [`BODY_LIMIT`] each) fit in memory.
pub const QUEUE_CAPACITY: usize = 1024;

/// How long requests in flight may take to finish after SIGTERM or Ctrl-C. Within Docker's
/// default 10 s before it kills the container, long enough for any batch.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The address could not be bound.
    #[error(
        "cannot listen on {address} (is another server using the port? choose another with --port; is the host an address of this machine?)"
    )]
    Bind {
        /// `host:port` as given.
        address: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Accepting connections failed.
    #[error("server failed: {0}")]
    Io(std::io::Error),
}

/// How `classify serve` listens and batches.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on (`127.0.0.1`, `0.0.0.0`, `::`).
    pub host: String,
    /// Port to listen on; 0 picks a free one.
    pub port: u16,
    /// Most images the model evaluates in one forward pass.
    pub max_batch: usize,
    /// Longest a request waits for others to fill a batch.
    pub max_wait: Duration,
    /// What clients may hold: connections, time, body memory.
    pub limits: Limits,
}

/// What every route shares: the model's queue, class names and metrics. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

struct Shared {
    batcher: Batcher,
    classes: Vec<String>,
    /// How request images become the model's input.
    framing: Framing,
    metrics: Arc<Metrics>,
    next_id: AtomicU64,
}

impl AppState {
    /// Starts the model thread for `classifier`.
    pub fn new(classifier: Classifier, options: BatchOptions) -> AppState {
        let classes = classifier.classes().to_vec();
        let framing = classifier.config().framing;
        let model = Box::new(move |images: &[u8]| classifier.probabilities(images));
        AppState::with_framed_model(model, classes, framing, options)
    }

    /// Starts the model thread for any `model` that maps CHW uint8 32x32 images to one
    /// probability row per image over `classes`.
    pub fn with_model(model: Model, classes: Vec<String>, options: BatchOptions) -> AppState {
        AppState::with_framed_model(model, classes, Framing::CIFAR, options)
    }

    /// As [`AppState::with_model`], for a model whose input is framed as `framing` says.
    pub fn with_framed_model(model: Model, classes: Vec<String>, framing: Framing, options: BatchOptions) -> AppState {
        let metrics = Arc::new(Metrics::default());
        let batcher = Batcher::start(model, framing.input().image_bytes(), options, Arc::clone(&metrics));
        AppState(Arc::new(Shared { batcher, classes, framing, metrics, next_id: AtomicU64::new(1) }))
    }

    /// Class names in label order.
    pub fn classes(&self) -> &[String] {
        &self.0.classes
    }

    /// How request images become the model's input.
    pub fn framing(&self) -> Framing {
        self.0.framing
    }

    /// The queue in front of the model.
    pub fn batcher(&self) -> &Batcher {
        &self.0.batcher
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// A fresh id for a response whose request named none.
    fn next_id(&self) -> u64 {
        self.0.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Admits a request, runs `parse` (which turns the body into images plus whatever else
    /// the route needs) on the blocking pool, and classifies the images.
    ///
    /// Requests decode side by side, as many as are admitted: what bounds them is the decode
    /// memory ([`crate::data::budget`]), image by image, whose last quarter is kept for small
    /// images, so a small request is not queued behind heavy decodes.
    async fn predict<T, F>(&self, parse: F) -> Result<(T, Probabilities), ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<(T, Vec<u8>), ApiError> + Send + 'static,
    {
        let ticket = self.batcher().admit()?;
        let (extra, images) = tokio::task::spawn_blocking(parse)
            .await
            .map_err(|e| ApiError::Internal(format!("decoding failed: {e}")))??;
        let probs = self.batcher().classify(ticket, images).await?;
        Ok((extra, probs))
    }
}

/// The router with the default [`Limits`]: every route, the body limits, metrics and JSON
/// 404/405 answers.
pub fn app(state: AppState) -> Router {
    app_with_limits(state, &Limits::default())
}

/// The router, reading bodies within `limits`' deadline and memory.
pub fn app_with_limits(state: AppState, limits: &Limits) -> Router {
    let metrics = Arc::clone(&state.0.metrics);
    let reader =
        limits::BodyReader { budget: limits::BodyBudget::new(limits.body_memory), timeout: limits.body_timeout };
    Router::new()
        .route("/", get(page::index))
        .route("/ping", get(invocations::ping))
        .route("/invocations", post(invocations::invocations))
        .route("/execution-parameters", get(invocations::execution_parameters))
        .route("/v2", get(kserve::server_metadata))
        .route("/v2/health/live", get(kserve::live))
        .route("/v2/health/ready", get(kserve::ready))
        .route("/v2/models/{name}", get(kserve::model_metadata))
        .route("/v2/models/{name}/ready", get(kserve::model_ready))
        .route("/v2/models/{name}/infer", post(kserve::infer))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(Extension(reader.budget.clone()))
        .layer(middleware::from_fn_with_state(reader, limits::read_body))
        .layer(middleware::from_fn(limits::health_only_on_overflow))
        .layer(middleware::from_fn_with_state(metrics, metrics::track))
        .with_state(state)
}

async fn metrics_text(
    State(state): State<AppState>,
    Extension(budget): Extension<limits::BodyBudget>,
) -> impl IntoResponse {
    let batcher = state.batcher();
    let gauges = metrics::Gauges {
        in_flight: batcher.in_flight(),
        capacity: batcher.capacity(),
        ready: batcher.is_ready(),
        body_bytes: budget.held(),
        body_capacity: budget.capacity(),
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics().render(gauges))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_string())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed { method: method.to_string(), path: uri.path().to_string() }
}

/// How long a connection past [`Limits::max_connections`] may take to send its one request's
/// head (at most; [`Limits::header_timeout`] when that is shorter).
const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves [`app_with_limits`] on `listener` until `shutdown` completes, then lets the
/// requests in flight finish and returns.
///
/// Each connection is HTTP/1.1 with hyper's header-read timeout ([`Limits::header_timeout`]),
/// which also closes keep-alive connections idle that long. Past
/// [`Limits::max_connections`], [`limits::OVERFLOW_CONNECTIONS`] more are answered on the
/// health routes only (one request each, 503 on other routes); past those, a new connection
/// is closed as soon as it is accepted. Accepting never stops on an error: out of file
/// descriptors, it waits a moment for connections to close and accepts again.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = app_with_limits(state, &limits);
    let full = Arc::new(Semaphore::new(limits.max_connections));
    let overflow = Arc::new(Semaphore::new(limits::OVERFLOW_CONNECTIONS));
    // `stop` tells connections to finish; each holds a receiver of `open` until it closes.
    let (stop, _) = watch::channel(false);
    let (open, _) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                accept_failed(&error, &mut last_warning).await;
                continue;
            }
        };
        let (permit, overflowed) = match Arc::clone(&full).try_acquire_owned() {
            Ok(permit) => (permit, false),
            Err(_) => match Arc::clone(&overflow).try_acquire_owned() {
                Ok(permit) => (permit, true),
                // Closed at once: the client sees its connection end, not a wait.
                Err(_) => continue,
            },
        };
        let service = TowerToHyperService::new(router.clone().map_request(move |request: Request<Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            if overflowed {
                request.extensions_mut().insert(limits::Overflow);
            }
            request
        }));
        let header_timeout =
            if overflowed { limits.header_timeout.min(OVERFLOW_HEADER_TIMEOUT) } else { limits.header_timeout };
        let mut stopping = stop.subscribe();
        let still_open = open.subscribe();
        // The guard `wait_for` returns is not `Send`: dropped inside, before the select sees it.
        let stopped = async move {
            let _ = stopping.wait_for(|&stop| stop).await;
        };
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(!overflowed);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!("connection ended: {e}");
                    }
                }
                () = stopped => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(permit);
            drop(still_open);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    open.closed().await;
    Ok(())
}

/// After a failed `accept`: a connection the peer already gave up is nobody's concern; out of
/// file descriptors (or memory), the pending connection stays queued, so wait 10 ms for
/// others to close and accept again. Warns at most once a second.
async fn accept_failed(error: &std::io::Error, last_warning: &mut Option<Instant>) {
    use std::io::ErrorKind;
    if matches!(error.kind(), ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused)
    {
        return;
    }
    if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
        tracing::warn!(
            "cannot accept a connection: {error}; retrying (if out of file descriptors, raise `ulimit -n` or lower --max-connections)"
        );
        *last_warning = Some(Instant::now());
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// Serves `classifier` until SIGTERM or Ctrl-C; requests in flight then finish.
pub fn serve(classifier: Classifier, options: ServeOptions) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("classify-http")
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(async move {
        let address = format!("{}:{}", options.host, options.port);
        let listener = TcpListener::bind((options.host.as_str(), options.port))
            .await
            .map_err(|source| ServeError::Bind { address: address.clone(), source })?;
        let limits = match limits::raise_descriptor_limit() {
            Some(descriptors) => {
                let fitted = options.limits.fit_descriptors(descriptors);
                if fitted.max_connections < options.limits.max_connections {
                    tracing::warn!(
                        "--max-connections {} lowered to {} to fit the limit of {descriptors} open files (ulimit -n)",
                        options.limits.max_connections,
                        fitted.max_connections
                    );
                }
                fitted
            }
            None => options.limits,
        };
        let batching = BatchOptions {
            max_batch: options.max_batch.max(1),
            max_wait: options.max_wait,
            queue_capacity: QUEUE_CAPACITY,
        };
        let classes = classifier.classes().len();
        let state = AppState::new(classifier, batching);
        let local = listener.local_addr().map_or(address, |a| a.to_string());
        tracing::info!(
            "serving {classes} classes on http://{local} (max batch {}, max wait {:?}, {} connections, {} MiB for bodies); SIGTERM or Ctrl-C stops",
            batching.max_batch,
            batching.max_wait,
            limits.max_connections,
            limits.body_memory / (1024 * 1024)
        );
        let (signalled, on_signal) = tokio::sync::oneshot::channel::<()>();
        let server = run(listener, state, limits, async move {
            shutdown_signal().await;
            let _ = signalled.send(());
        });
        // Requests in flight get SHUTDOWN_GRACE to finish; a client that never finishes
        // sending its body cannot hold the process up beyond that.
        let grace = async {
            match on_signal.await {
                Ok(()) => tokio::time::sleep(SHUTDOWN_GRACE).await,
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            result = server => {
                result.map_err(ServeError::Io)?;
                tracing::info!("stopped: requests in flight answered");
            }
            () = grace => tracing::warn!("stopped: connections still open after {SHUTDOWN_GRACE:?} were dropped"),
        }
        Ok(())
    })
}

/// Completes on Ctrl-C or SIGTERM (what `docker stop` and SageMaker send).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
