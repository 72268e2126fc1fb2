//! The MedPO Arena server: configuration, the axum router around the Leptos app, and the
//! `medpo` command line. `main.rs` only parses arguments and calls [`run`].
//!
//! Routes (besides the app's pages and server functions under `/api/`):
//! - `GET /healthz` — the process is up (always 200 while serving).
//! - `GET /readyz` — the database answers (200, or 503 with the reason).
//! - `GET /pkg/*` — the hashed wasm, JS and CSS, cached for a year (`immutable`).
//! - anything else — a file from the site root, or the app's 404 page.

// The workbench view is a deeply nested type; its layout needs more than the default 128.
#![recursion_limit = "256"]

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};
use tower::ServiceBuilder;
use tower_http::compression::predicate::Predicate as _;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

pub mod api;
pub mod config;
pub mod discover;
pub mod engine;
pub mod evals;
pub mod gallery;
pub mod jobs;
pub mod remote;
pub mod users;

pub use config::{Config, ConfigError, Settings};

/// Shared state of every request.
#[derive(Clone)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub ctx: app::ssr::ServerContext,
    pub config: Arc<Config>,
    /// Loaded models and the generation gate.
    pub engine: Arc<engine::ModelPool>,
    /// Per-key request budget of the OpenAI-compatible API.
    pub api_limiter: Arc<api::openai::RateLimiter>,
    /// Clients of the remote backends.
    pub remotes: Arc<remote::RemotePool>,
}

impl AppState {
    /// The state for a config and an open store.
    pub fn new(config: Config, store: medpo_store::Store) -> Self {
        let slots = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 4);
        AppState {
            leptos_options: leptos_options(&config),
            ctx: app::ssr::ServerContext {
                store,
                data_dir: config.data_dir.clone(),
                models_dir: config.models_dir.clone(),
                login_limiter: Default::default(),
                secure_cookies: config.secure_cookies,
                max_upload_mb: config.max_upload_bytes >> 20,
                benchmarks: config.benchmarks.clone(),
                devices: jobs::devices(),
            },
            engine: Arc::new(engine::ModelPool::new(config.models_dir.clone(), 4, slots)),
            api_limiter: Arc::new(api::openai::RateLimiter::new(config.api_rate_limit)),
            remotes: Arc::new(remote::RemotePool::new(&config.remotes)),
            config: Arc::new(config),
        }
    }
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(s: &AppState) -> Self {
        s.leptos_options.clone()
    }
}

/// Where `scripts/build.sh` writes the front end's content hashes: `hash.txt` next to the
/// binary (Leptos' convention for `hash_files`).
pub fn hash_file() -> Option<std::path::PathBuf> {
    std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join("hash.txt")))
}

/// The Leptos options for a config: output name `medpo`, content-hashed file names when the
/// build wrote them (Leptos panics on a missing hash file, so never claim one that is absent).
pub fn leptos_options(config: &Config) -> LeptosOptions {
    LeptosOptions::builder()
        .output_name("medpo")
        .site_root(config.site_root.display().to_string())
        .site_pkg_dir("pkg")
        .site_addr(config.bind)
        .hash_files(hash_file().is_some_and(|h| h.is_file()))
        .build()
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    // The route list is the same for every router; build it once per process. Building it
    // renders the app, and two such renders at once (tests build a router each, in parallel)
    // can stall in Leptos' process-global executor.
    static ROUTES: std::sync::OnceLock<Vec<leptos_axum::AxumRouteListing>> = std::sync::OnceLock::new();
    let routes = ROUTES.get_or_init(|| generate_route_list(app::App)).clone();
    let ctx = state.ctx.clone();
    let ctx_fallback = state.ctx.clone();
    let pkg_dir = std::path::Path::new(&*state.leptos_options.site_root).join(&*state.leptos_options.site_pkg_dir);
    let pkg = ServiceBuilder::new()
        // Hashed names never change content: cache them for a year, but never a miss.
        .layer(SetResponseHeaderLayer::overriding(header::CACHE_CONTROL, |res: &axum::http::Response<_>| {
            res.status()
                .is_success()
                .then(|| HeaderValue::from_static("public, max-age=31536000, immutable"))
        }))
        .service(ServeDir::new(pkg_dir));
    // The upload limit applies to the file; the form around it gets 1 MiB of slack.
    let limit = state.config.max_upload_bytes + (1 << 20);
    let limit_mb = state.config.max_upload_bytes >> 20;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(api::routes())
        .nest_service("/pkg", pkg)
        .nest_service("/phantoms", ServeDir::new(gallery::dir(&state.ctx.data_dir).join("images")))
        .leptos_routes_with_context(
            &state,
            routes,
            move || provide_context(ctx.clone()),
            {
                let options = state.leptos_options.clone();
                move || app::shell(options.clone())
            },
        )
        .fallback(leptos_axum::file_and_error_handler_with_context::<AppState, _>(
            move || provide_context(ctx_fallback.clone()),
            app::shell,
        ))
        .layer(
            ServiceBuilder::new()
                .layer(TraceLayer::new_for_http())
                .layer(axum::middleware::from_fn(same_origin_guard))
                // Never compress the streamed answers: a compressor buffers, and tokens must
                // reach the page as they are made.
                .layer(CompressionLayer::new().compress_when(
                    tower_http::compression::predicate::DefaultPredicate::new()
                        .and(tower_http::compression::predicate::NotForContentType::const_new("application/x-ndjson")),
                ))
                .layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| async move {
                    let api = req.uri().path().starts_with("/v1/");
                    too_large_message(next.run(req).await, limit_mb, api)
                }))
                .layer(axum::extract::DefaultBodyLimit::max(limit))
                .layer(RequestBodyLimitLayer::new(limit))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("same-origin"),
                )),
        )
        .with_state(state)
}

/// Cross-site request forgery guard: a state-changing request (anything but GET, HEAD,
/// OPTIONS) that a browser marks as coming from another site (`Sec-Fetch-Site: cross-site` or
/// `same-site`, or an `Origin` whose host differs from `Host`) is refused with 403. Browsers
/// send these headers on every such request; clients without them (curl, scripts) carry no
/// ambient cookies, so they cannot be forged cross-site. The session cookie is also
/// `SameSite=Strict`.
pub async fn same_origin_guard(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::http::Method;
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let h = req.headers();
    let refused = if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        // Modern browsers say where the request came from; trust that alone (it survives
        // proxies that rewrite Host).
        site != "same-origin" && site != "none"
    } else if let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()).filter(|o| *o != "null") {
        let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or(origin).trim_end_matches('/');
        let hosts = [header::HeaderName::from_static("x-forwarded-host"), header::HOST];
        let host = hosts
            .iter()
            .find_map(|n| h.get(n).and_then(|v| v.to_str().ok()))
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        host != Some(origin_host)
    } else {
        false
    };
    if refused {
        tracing::warn!(method = %req.method(), path = %req.uri().path(), "refused a cross-site state-changing request");
        return (StatusCode::FORBIDDEN, "cross-site request refused\n").into_response();
    }
    next.run(req).await
}

/// A bare 413 from the body limit becomes a JSON message the page can show (in OpenAI's error
/// shape under `/v1/`).
fn too_large_message(res: axum::response::Response, limit_mb: usize, api: bool) -> axum::response::Response {
    let plain = res.headers().get(header::CONTENT_TYPE).is_none_or(|v| !v.as_bytes().starts_with(b"application/json"));
    if res.status() == StatusCode::PAYLOAD_TOO_LARGE && plain && api {
        return api::openai::OpenAiError::too_large(format!("the request is larger than the server's limit of {limit_mb} MB"))
            .into_response();
    }
    if res.status() == StatusCode::PAYLOAD_TOO_LARGE && plain {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            axum::Json(serde_json::json!({ "error": format!("the upload is larger than the server's limit of {limit_mb} MB") })),
        )
            .into_response();
    }
    res
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")], "ok\n")
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match tokio::time::timeout(Duration::from_secs(3), state.ctx.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")], "ready\n".to_string()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, [(header::CACHE_CONTROL, "no-store")], "database unavailable\n".to_string())
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CACHE_CONTROL, "no-store")],
            "database unavailable: no answer within 3 s\n".to_string(),
        ),
    }
}

/// Checks that the web front end was built (by `scripts/build.sh`) for this binary.
pub fn check_site(config: &Config) -> Result<(), ConfigError> {
    let pkg = config.site_root.join("pkg");
    let built = pkg.is_dir() && hash_file().is_some_and(|h| h.is_file());
    if !built {
        return Err(ConfigError {
            setting: "--site-root".into(),
            value: config.site_root.display().to_string(),
            cause: "the web front end is not built for this binary; run `scripts/build.sh --release` (or `scripts/run.sh`)".into(),
        });
    }
    Ok(())
}

/// Opens the database named by the config, creating and migrating it as needed.
pub async fn open_store(config: &Config) -> Result<medpo_store::Store, ConfigError> {
    let settings = medpo_store::ConnectSettings { max_connections: 16, acquire_timeout: Duration::from_secs(10) };
    medpo_store::Store::open(&config.database_url, &settings).await.map_err(|e| {
        let cause = match &e {
            medpo_store::Error::Connect { source, .. } => format!("cannot connect: {}", one_line(&source.to_string())),
            medpo_store::Error::BadUrl { reason, .. } => reason.clone(),
            other => one_line(&other.to_string()),
        };
        ConfigError { setting: "--database-url".into(), value: config.database_url_redacted(), cause }
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs the web server until SIGINT or SIGTERM, then drains requests and closes the pool.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    config.prepare_data_dir()?;
    let listener = tokio::net::TcpListener::bind(config.bind).await.map_err(|e| ConfigError {
        setting: "--bind".into(),
        value: config.bind.to_string(),
        cause: match e.kind() {
            std::io::ErrorKind::AddrInUse => "the address is already in use (another server running?)".into(),
            std::io::ErrorKind::PermissionDenied => "permission denied (ports below 1024 need privileges)".into(),
            _ => e.to_string(),
        },
    })?;
    check_site(&config)?;
    let store = open_store(&config).await?;
    {
        let data_dir = config.data_dir.clone();
        tokio::task::spawn_blocking(move || gallery::ensure(&data_dir)).await?;
    }
    let _ = store.purge_expired_sessions().await;
    discover::register_models_dir(&store, &config.models_dir).await;
    remote::register_remotes(&store, &config.remotes).await;
    let state = AppState::new(config.clone(), store.clone());
    if config.workers {
        jobs::start_workers(&state).await?;
    } else {
        tracing::info!("job queue workers are off in this process (--workers false)");
    }
    tracing::info!(
        address = %format!("http://{}", config.bind),
        database = %config.database_url_redacted(),
        data_dir = %config.data_dir.display(),
        models_dir = %config.models_dir.display(),
        "MedPO Arena is serving"
    );
    // On SIGINT/SIGTERM stop accepting, let requests in flight finish (at most 20 s), then
    // close the database.
    let (tx, rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, router(state)).with_graceful_shutdown({
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    });
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    });
    let drain_deadline = {
        let mut rx = rx;
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
    };
    tokio::select! {
        r = server => r?,
        _ = drain_deadline => tracing::warn!("requests still running 20 s after the shutdown signal; stopping anyway"),
    }
    tracing::info!("shutting down: closing the database");
    store.close().await;
    Ok(())
}

/// `medpo worker`: the job queue's workers without the web server, until SIGINT or SIGTERM.
pub async fn work(config: Config) -> anyhow::Result<()> {
    config.prepare_data_dir()?;
    let store = open_store(&config).await?;
    discover::register_models_dir(&store, &config.models_dir).await;
    let q = jobs::Queue {
        store: store.clone(),
        data_dir: config.data_dir.clone(),
        models_dir: config.models_dir.clone(),
        benchmarks: config.benchmarks.clone(),
    };
    jobs::start(q).await?;
    tracing::info!(database = %config.database_url_redacted(), devices = ?jobs::devices(), "job queue worker running");
    shutdown_signal().await;
    // A running job stays `running` in the database; the next worker or server resumes it
    // from its last checkpoint.
    store.close().await;
    Ok(())
}

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
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
