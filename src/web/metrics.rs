//! Prometheus `/metrics`: counters and histograms recorded by the engine, plus gauges
//! read from the database at scrape time (queued and running runs, live task instances
//! by state, queue depth, import errors, scheduler heartbeat age).

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::AppState;
use super::error::Result;
use crate::db::{dags, stats, tasks};

/// The process-wide recorder (installed once; later calls reuse it).
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0, 900.0, 3600.0,
                ])
                .ok()?;
            match builder.install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!("metrics recorder not installed: {e}");
                    None
                }
            }
        })
        .as_ref()
}

pub async fn metrics(State(state): State<AppState>) -> Result<Response> {
    let c = &state.db.read;
    // Gauges of what is live now, read through indexes on state; what finished is
    // counted as it finishes (`weft_dag_runs_total`, `weft_task_tries_total`), so a
    // scrape costs the same with a million task instances in the history.
    let runs: HashMap<String, i64> = stats::live_run_counts(c).await?.into_iter().collect();
    for s in ["queued", "running"] {
        let n = runs.get(s).copied().unwrap_or(0);
        metrics::gauge!("weft_dag_runs", "state" => s).set(n as f64);
    }
    let live = stats::live_task_counts(c).await?;
    for s in [
        crate::db::TaskState::Scheduled,
        crate::db::TaskState::Queued,
        crate::db::TaskState::Running,
        crate::db::TaskState::UpForRetry,
    ] {
        let n = live.get(&s).copied().unwrap_or(0);
        metrics::gauge!("weft_task_instances", "state" => s.as_str()).set(n as f64);
    }
    metrics::gauge!("weft_queue_depth").set(
        live.get(&crate::db::TaskState::Scheduled)
            .copied()
            .unwrap_or(0) as f64,
    );
    metrics::gauge!("weft_dag_import_errors").set(dags::import_errors(c).await?.len() as f64);
    metrics::gauge!("weft_dags_loaded").set(state.registry.all().len() as f64);
    if let Some(hb) = tasks::live_workers(c)
        .await?
        .iter()
        .map(|w| w.heartbeat_at)
        .max()
    {
        metrics::gauge!("weft_scheduler_heartbeat_age_seconds")
            .set((Utc::now() - hb).num_milliseconds() as f64 / 1000.0);
    }
    let body = handle().map(|h| h.render()).unwrap_or_default();
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}
