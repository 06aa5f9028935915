//! The survey's JSON API: a synced form's state and latest metrics
//! (`/api/v1/surveys/{provider}/{form_id}`).

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use super::run::StoredMetrics;
use crate::web::AppState;
use crate::web::api::{ApiResult, read};
use crate::web::auth::Viewer;
use crate::web::error::Error;
use crate::web::insights;

/// The routes, nested under `/api/v1`.
pub fn router() -> Router<AppState> {
    Router::new().route("/surveys/{provider}/{form_id}", get(get_survey))
}

/// A synced survey form: what is stored and its latest metrics.
#[derive(Debug, Serialize, ToSchema)]
pub struct SurveyView {
    pub provider: String,
    pub form_id: String,
    pub dag_id: String,
    pub task_id: String,
    pub responses: i64,
    pub rejects: i64,
    pub high_water: Option<String>,
    pub last_sync: Option<String>,
    /// The `survey_metrics` rows of the latest period, overall first.
    pub metrics: Vec<StoredMetrics>,
}

/// A survey form read by a `survey_sync` task.
#[utoipa::path(get, path = "/api/v1/surveys/{provider}/{form_id}", params(("provider" = String, Path, description = "typeform, zigpoll or csv"), ("form_id" = String, Path, description = "the form")), responses((status = 200, body = SurveyView), (status = 404)))]
pub async fn get_survey(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((provider, form_id)): Path<(String, String)>,
) -> ApiResult<SurveyView> {
    use super::run as survey;
    read(&state, &viewer)?;
    let d = super::page::surveys(&state)
        .into_iter()
        .find(|d| d.spec.provider.name() == provider && d.spec.form_id == form_id)
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no survey_sync task reads {provider} form \"{form_id}\""
            ))
        })?;
    let (st, metrics) = match insights::warehouse(&state, &d.spec.connection).await {
        Some(c) => (
            insights::or_empty(
                "survey state",
                survey::form_state(&c, &provider, &form_id).await,
            ),
            insights::or_empty(
                "survey metrics",
                survey::latest_metrics(&c, &provider, &form_id).await,
            ),
        ),
        None => Default::default(),
    };
    Ok(Json(SurveyView {
        provider,
        form_id,
        dag_id: d.dag_id,
        task_id: d.task_id,
        responses: st.0,
        rejects: st.1,
        high_water: st.2,
        last_sync: st.3,
        metrics,
    }))
}
