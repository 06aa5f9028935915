//! The experiment's JSON API: its latest analysis (`/api/v1/experiments/{experiment}`).

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use super::run::StoredResult;
use crate::web::AppState;
use crate::web::api::{ApiResult, read};
use crate::web::auth::Viewer;
use crate::web::error::Error;
use crate::web::insights;

/// The routes, nested under `/api/v1`.
pub fn router() -> Router<AppState> {
    Router::new().route("/experiments/{experiment}", get(get_experiment))
}

/// The latest analysis of an experiment (the rows of `experiment_results` for its
/// latest data interval).
#[derive(Debug, Serialize, ToSchema)]
pub struct ExperimentView {
    pub experiment: String,
    pub dag_id: String,
    pub task_id: String,
    pub control: String,
    /// Empty until the task has written results.
    pub results: Vec<StoredResult>,
}

/// An experiment declared by a DAG, with its latest results.
#[utoipa::path(get, path = "/api/v1/experiments/{experiment}", params(("experiment" = String, Path, description = "the experiment key")), responses((status = 200, body = ExperimentView), (status = 404)))]
pub async fn get_experiment(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(key): Path<String>,
) -> ApiResult<ExperimentView> {
    read(&state, &viewer)?;
    let d = super::page::experiments(&state)
        .into_iter()
        .find(|d| d.spec.experiment == key)
        .ok_or_else(|| Error::NotFound(format!("no experiment \"{key}\" in the DAGs")))?;
    let results = match insights::warehouse(&state, &d.spec.connection).await {
        Some(c) => insights::or_empty(
            "experiment results",
            super::run::latest_results(&c, &key).await,
        ),
        None => Vec::new(),
    };
    Ok(Json(ExperimentView {
        experiment: key,
        dag_id: d.dag_id,
        task_id: d.task_id,
        control: d.spec.control,
        results,
    }))
}
