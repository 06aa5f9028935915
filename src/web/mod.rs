//! The web server (axum + askama): operator pages, the JSON API, `/metrics` and
//! `/health`.
//!
//! Never changes task or run state except through `scheduler::commands`; never writes
//! SQL (that is `db`). Internal errors are logged and answered with a generic message;
//! every page and response carries security headers.

pub mod api;
pub mod auth;
pub mod charts;
pub mod error;
pub mod figures;
pub(crate) mod insights;
mod metrics;
pub mod pages;
mod versions;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{FromRef, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use axum_csrf::CsrfConfig;
use axum_extra::extract::cookie::Key;
use chrono::Utc;

use crate::config::Config;
use crate::db::Db;
use crate::scheduler::{Engine, Registry};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    pub engine: Option<Engine>,
    pub key: Key,
    pub csrf: CsrfConfig,
    /// Warehouse connections, for the pages that read what tasks wrote there.
    pub warehouses: Arc<crate::kinds::Warehouses>,
    /// Failed logins per account and client address.
    pub login_guard: Arc<auth::LoginGuard>,
    /// Turns to serve a request (`web_concurrency`): a request beyond capacity waits
    /// up to `ADMISSION_WAIT` for one, then gets 503 with `Retry-After`.
    pub admission: Arc<tokio::sync::Semaphore>,
    /// Aggregates over the history, cached for a few seconds.
    pub figures: Arc<figures::Figures>,
}

/// How long a request waits for a turn before the server answers 503.
const ADMISSION_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl FromRef<AppState> for Key {
    fn from_ref(s: &AppState) -> Key {
        s.key.clone()
    }
}

impl FromRef<AppState> for CsrfConfig {
    fn from_ref(s: &AppState) -> CsrfConfig {
        s.csrf.clone()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
}

impl AppState {
    /// The signing key of session cookies is created once and kept in the database, so
    /// every web server of an installation accepts the same sessions.
    pub async fn new(
        db: Db,
        config: Config,
        registry: Arc<Registry>,
        engine: Option<Engine>,
    ) -> crate::accounts::AccountResult<AppState> {
        // The web server's own connections: page load never takes one the engine needs.
        let db = db
            .for_web(config.web_db_connections)
            .await
            .map_err(crate::accounts::AccountError::Db)?;
        let stored = crate::accounts::session_key(&db, || hex(Key::generate().master())).await?;
        let key = unhex(&stored)
            .filter(|b| b.len() >= 64)
            .map(|b| Key::from(&b))
            .unwrap_or_else(Key::generate);
        let csrf = CsrfConfig::default()
            .with_key(Some(key.clone()))
            .with_cookie_name("weft_csrf")
            .with_cookie_same_site(axum_csrf::SameSite::Strict)
            .with_secure(config.secure_cookies);
        let config_web_concurrency = config.web_concurrency.max(1);
        Ok(AppState {
            db,
            warehouses: crate::kinds::Warehouses::new(
                config.connections.clone().into_iter().collect(),
            ),
            config: Arc::new(config),
            registry,
            engine,
            key,
            csrf,
            login_guard: Arc::new(auth::LoginGuard::default()),
            figures: Arc::new(figures::Figures::default()),
            admission: Arc::new(tokio::sync::Semaphore::new(config_web_concurrency as usize)),
        })
    }
}

/// The whole application, for `serve` and for tests driving it with `oneshot`.
pub fn app(state: AppState) -> Router {
    let _ = metrics::handle();
    Router::new()
        .merge(pages::router())
        .route("/static/weft.css", get(css))
        .route("/static/weft.js", get(js))
        .route("/static/favicon.svg", get(favicon))
        .route("/favicon.ico", get(favicon))
        .route("/health", get(health))
        .route("/metrics", get(metrics::metrics))
        .merge(versions::router())
        .merge(crate::kinds::routes())
        .nest("/api/v1", api::router())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), admit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security_headers,
        ))
        .with_state(state)
}

async fn not_found(req: Request) -> Response {
    let path = req.uri().path().to_string();
    let e = error::Error::NotFound(format!("no page at {path}"));
    if path.starts_with("/api/") {
        e.into_json()
    } else {
        e.into_response()
    }
}

/// The longest request URI served (longer: 414).
const MAX_URI_BYTES: usize = 8 * 1024;
/// The most request header bytes served (more: 431).
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// `{"error": {"code", "message"}}` for an answer the router or hyper's limits make,
/// the code named after the status.
fn json_error(status: StatusCode, message: &str) -> Response {
    let code = status
        .canonical_reason()
        .unwrap_or("error")
        .to_lowercase()
        .replace(' ', "_");
    (
        status,
        Json(serde_json::json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// Stops, in this process, the tries an operator just marked or cancelled (not at the
/// next heartbeat), and wakes the engine.
pub(crate) async fn stop_marked(state: &AppState) {
    if let Some(e) = &state.engine {
        if let Err(err) = e.stop_unwanted_tries().await {
            tracing::warn!(error = %err, "could not stop marked tries at once");
        }
        e.wake();
    }
}

/// Serves at most `web_concurrency` requests at once; the rest wait briefly for a
/// turn and are answered 503 with `Retry-After` when none comes, so load beyond
/// capacity gets a fast answer instead of a long queue. `/health` and static files
/// are always served (a load balancer must see the truth).
async fn admit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/health" || path.starts_with("/static/") {
        return next.run(req).await;
    }
    let api = path.starts_with("/api/");
    match tokio::time::timeout(ADMISSION_WAIT, state.admission.clone().acquire_owned()).await {
        Ok(Ok(permit)) => {
            let res = next.run(req).await;
            drop(permit);
            res
        }
        _ => {
            ::metrics::counter!("weft_web_rejected_total").increment(1);
            if api {
                error::Error::Busy.into_json()
            } else {
                error::Error::Busy.into_response()
            }
        }
    }
}

async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let https = state.config.secure_cookies
        || req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    // Limits below hyper's own (whose 414/431 answers carry no body): an API client
    // gets them as JSON like every other error.
    let uri_len = req.uri().to_string().len();
    let header_len: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let too_big = if uri_len > MAX_URI_BYTES {
        Some((
            StatusCode::URI_TOO_LONG,
            format!("the URI is {uri_len} bytes; at most {MAX_URI_BYTES} are accepted"),
        ))
    } else if header_len > MAX_HEADER_BYTES {
        Some((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request headers are {header_len} bytes; at most {MAX_HEADER_BYTES} are accepted"
            ),
        ))
    } else {
        None
    };
    let mut res = match too_big {
        Some((status, message)) if api => json_error(status, &message),
        Some((status, message)) => (status, message).into_response(),
        None => next.run(req).await,
    };
    // Answers axum makes itself (405, 413, 414, 415, 431, body rejections) have plain
    // bodies; the API answers JSON, always.
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if api && !is_json && (res.status().is_client_error() || res.status().is_server_error()) {
        let status = res.status();
        let message = match status {
            StatusCode::METHOD_NOT_ALLOWED => "method not allowed for this path".to_string(),
            StatusCode::PAYLOAD_TOO_LARGE => "request body too large".to_string(),
            StatusCode::URI_TOO_LONG => "URI too long".to_string(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "request headers too large".to_string(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "send the body as application/json".to_string(),
            s if s.is_server_error() => "internal error".to_string(),
            s => s.canonical_reason().unwrap_or("bad request").to_lowercase(),
        };
        let headers = res.headers().clone();
        res = json_error(status, &message);
        for (k, v) in &headers {
            if k == header::ALLOW || k == header::RETRY_AFTER || k == header::WWW_AUTHENTICATE {
                res.headers_mut().insert(k, v.clone());
            }
        }
    }
    let h = res.headers_mut();
    if https {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    res
}

/// A small woven "w": the tab icon.
async fn favicon() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "max-age=86400"),
        ],
        include_str!("../../static/favicon.svg"),
    )
        .into_response()
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../../static/weft.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../../static/weft.js"),
    )
        .into_response()
}

/// Binds `addr` and serves in the background; returns the bound address.
pub async fn serve(state: AppState, addr: &str) -> std::io::Result<SocketAddr> {
    serve_on(bind(addr).await?, state)
}

/// Binds `addr` (first, so a busy port is reported before anything else happens).
pub async fn bind(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Serves on a bound listener in the background; returns its address.
pub fn serve_on(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<SocketAddr> {
    let local = listener.local_addr()?;
    let router = app(state);
    tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, service).await {
            tracing::error!(error = %e, "web server stopped");
        }
    });
    Ok(local)
}

/// For load balancers: 200 when the database answers and a scheduler heartbeat is
/// fresh, 503 otherwise.
pub async fn health(State(s): State<AppState>) -> Response {
    let body = health_body(&s).await;
    let code = if body["status"] == "healthy" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

pub(crate) async fn health_body(s: &AppState) -> serde_json::Value {
    let db_ok = s.db.ping().await.is_ok();
    let heartbeat = match crate::db::tasks::live_workers(&s.db.read).await {
        Ok(ws) => ws.iter().map(|w| w.heartbeat_at).max(),
        Err(e) => {
            tracing::error!(error = %e, "health check could not read workers");
            None
        }
    };
    let age = heartbeat.map(|h| (Utc::now() - h).num_milliseconds() as f64 / 1000.0);
    // Who plans cron runs now (none when the lease expired: no scheduler is leading).
    let leader = match crate::db::lease::holder(&s.db.read, crate::db::lease::SCHEDULER).await {
        Ok(Some((holder, until))) if until > Utc::now() => Some(holder),
        Ok(_) => None,
        Err(e) => {
            tracing::error!(error = %e, "health check could not read the scheduler lease");
            None
        }
    };
    let fault = s.engine.as_ref().and_then(Engine::fault);
    let healthy = db_ok
        && fault.is_none()
        && age.is_some_and(|a| a < s.config.heartbeat_timeout.as_secs_f64());
    serde_json::json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "engine": match &fault { Some(_) => "stopped", None if s.engine.is_some() => "ok", None => "not in this process" },
        "database": if db_ok { "ok" } else { "unreachable" },
        "scheduler_heartbeat_age_seconds": age,
        "scheduler_leader": leader,
        "dags_loaded": s.registry.all().len(),
    })
}
