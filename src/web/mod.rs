//! The web server (axum): health and, as it grows, the operator UI and JSON API.
//!
//! Never changes task or run state except through `scheduler::commands`; never writes
//! SQL (that is `db`). Internal errors are logged and answered with a generic message.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;

use crate::config::Config;
use crate::db::Db;
use crate::scheduler::{Engine, Registry};

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    pub engine: Option<Engine>,
}

impl AppState {
    pub fn new(
        db: Db,
        config: Config,
        registry: Arc<Registry>,
        engine: Option<Engine>,
    ) -> AppState {
        AppState {
            db,
            config: Arc::new(config),
            registry,
            engine,
        }
    }
}

/// The whole application, for `serve` and for tests driving it with `oneshot`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(state)
}

/// Binds `addr` and serves in the background; returns the bound address.
pub async fn serve(state: AppState, addr: &str) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    let router = app(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "web server stopped");
        }
    });
    Ok(local)
}

async fn health(State(s): State<AppState>) -> Response {
    let db_ok = s.db.ping().await.is_ok();
    let heartbeat = match crate::db::tasks::live_workers(&s.db.conn).await {
        Ok(ws) => ws.iter().map(|w| w.heartbeat_at).max(),
        Err(e) => {
            tracing::error!(error = %e, "health check could not read workers");
            None
        }
    };
    let age = heartbeat.map(|h| (Utc::now() - h).num_milliseconds() as f64 / 1000.0);
    let healthy = db_ok && age.is_some_and(|a| a < s.config.heartbeat_timeout.as_secs_f64());
    let body = serde_json::json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "database": if db_ok { "ok" } else { "unreachable" },
        "scheduler_heartbeat_age_seconds": age,
    });
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}
