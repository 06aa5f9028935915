//! The JSON API under `/api/v1`, with its OpenAPI document at
//! `/api/v1/openapi.json`. Errors are `{"error": {"code", "message"}}`. Writes need a
//! bearer token (`weft users token NAME`) of an operator; reads follow `public_read`.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::AppState;
use super::auth::Viewer;
use super::error::Error;
use crate::dag::template::rfc3339;
use crate::db::rows::{Run, TaskInstance};
use crate::db::runs::RunFilter;
use crate::db::{Role, RunState, dags, runs, tasks};
use crate::kinds::experiment::run::StoredResult;
use crate::kinds::survey::run::StoredMetrics;
use crate::scheduler::commands;

/// An API error: the JSON form of [`Error`].
#[derive(Debug)]
pub struct ApiError(pub Error);

impl<E: Into<Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.into_json()
    }
}

pub type ApiResult<T> = Result<Json<T>, ApiError>;

#[derive(Debug, Serialize, ToSchema)]
pub struct DagView {
    pub dag_id: String,
    pub description: Option<String>,
    pub schedule: String,
    pub schedule_description: String,
    pub timezone: String,
    pub paused: bool,
    pub tags: Vec<String>,
    pub owner: Option<String>,
    pub tasks: Vec<TaskView>,
    pub file: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskView {
    pub task_id: String,
    pub kind: String,
    pub depends_on: Vec<String>,
    pub retries: u32,
    pub pool: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    pub dag_id: String,
    pub run_id: String,
    pub run_type: String,
    pub state: String,
    pub logical_date: String,
    pub data_interval_start: String,
    pub data_interval_end: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    #[schema(value_type = Object)]
    pub conf: serde_json::Value,
    /// The operators' note on the run.
    pub note: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunView>,
    pub limit: u64,
    pub offset: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TaskInstanceView {
    pub task_id: String,
    pub state: String,
    pub try_number: i32,
    pub max_tries: i32,
    pub pool: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub hostname: Option<String>,
    /// The operators' note on the task instance.
    pub note: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogView {
    pub try_number: i32,
    pub state: String,
    pub content: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PoolView {
    pub name: String,
    pub slots: i32,
    pub used: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportErrorView {
    pub file: String,
    pub message: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct TriggerBody {
    /// Params by name; checked against the DAG's `[params]`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Free-form run configuration (a JSON object).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub conf: serde_json::Value,
    /// RFC 3339; the run covers the scheduled interval that contains it.
    pub logical_date: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ClearBody {
    /// Also clear everything downstream of the task.
    #[serde(default)]
    pub downstream: bool,
    /// Also clear everything upstream of the task.
    #[serde(default)]
    pub upstream: bool,
    /// Clear only task instances that failed or were upstream_failed.
    #[serde(default)]
    pub only_failed: bool,
    /// Answer what would be cleared and change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// An empty body means the defaults; anything else must be a JSON object of
/// [`ClearBody`] (not `[]`, not broken UTF-8, not 10,000 nested arrays): a request
/// that says something weft does not understand is refused, never half-obeyed.
fn parse_clear_body(body: &[u8]) -> Result<ClearBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ClearBody::default());
    }
    let bad = |m: String| ApiError(Error::BadRequest(format!("bad request body: {m}")));
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    if !v.is_object() {
        return Err(bad(
            "expected a JSON object such as {\"downstream\": true}".into()
        ));
    }
    serde_json::from_value(v).map_err(|e| bad(e.to_string()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Cleared {
    pub cleared: Vec<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "weft API",
        description = "Runs, tasks, logs and pools of a weft installation."
    ),
    paths(
        list_dags,
        get_dag,
        pause_dag,
        unpause_dag,
        list_runs,
        trigger_run,
        get_run,
        list_tasks,
        clear_task,
        mark_task,
        cancel_run,
        task_logs,
        list_pools,
        health,
        list_import_errors,
        list_audit,
        crate::kinds::experiment::api::get_experiment,
        crate::kinds::survey::api::get_survey
    ),
    components(schemas(
        DagView,
        TaskView,
        RunView,
        RunList,
        TaskInstanceView,
        LogView,
        PoolView,
        ImportErrorView,
        AuditView,
        AuditList,
        TriggerBody,
        ClearBody,
        Cleared,
        MarkBody,
        crate::kinds::experiment::api::ExperimentView,
        StoredResult,
        crate::kinds::survey::api::SurveyView,
        StoredMetrics
    ))
)]
struct ApiDoc;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/dags", get(list_dags))
        .route("/dags/{dag_id}", get(get_dag))
        .route("/dags/{dag_id}/pause", post(pause_dag))
        .route("/dags/{dag_id}/unpause", post(unpause_dag))
        .route("/dags/{dag_id}/runs", get(list_runs).post(trigger_run))
        .route("/dags/{dag_id}/runs/{run_id}", get(get_run))
        .route("/dags/{dag_id}/runs/{run_id}/tasks", get(list_tasks))
        .route(
            "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/clear",
            post(clear_task),
        )
        .route(
            "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/mark",
            post(mark_task),
        )
        .route("/dags/{dag_id}/runs/{run_id}/cancel", post(cancel_run))
        .route(
            "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/logs",
            get(task_logs),
        )
        .route("/pools", get(list_pools))
        .route("/health", get(health))
        .route("/import-errors", get(list_import_errors))
        .route("/audit", get(list_audit))
        .merge(crate::kinds::api_routes())
}

async fn openapi() -> Response {
    Json(ApiDoc::openapi()).into_response()
}

pub fn read(state: &AppState, viewer: &Viewer) -> Result<(), ApiError> {
    viewer.can_read(state).map_err(ApiError)
}

/// The user of the request's bearer token. API writes take this, never a [`Viewer`]:
/// a session cookie is not enough for the API (it has no CSRF tokens), and neither is
/// any other kind of `Authorization` header.
#[derive(Debug)]
pub struct BearerUser(pub super::auth::User, pub Option<std::net::IpAddr>);

impl axum::extract::FromRequestParts<AppState> for BearerUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        let token = super::auth::bearer(&parts.headers).ok_or(ApiError(Error::Unauthorized))?;
        let client = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(BearerUser(
            super::auth::token_user(state, &token).await?,
            client,
        ))
    }
}

impl BearerUser {
    /// The user, when the token may act (operate scope) and its user is an operator.
    fn operator(&self) -> Result<&super::auth::User, ApiError> {
        Viewer(Some(self.0.clone()))
            .require(Role::Operator)
            .map_err(ApiError)?;
        Ok(&self.0)
    }

    /// Who acts, for the audit log.
    fn actor(&self) -> commands::Actor {
        commands::Actor {
            who: self.0.username.clone(),
            source: "api",
            client: self.1.map(|a| a.to_string()),
        }
    }
}

/// Records an API action in the audit log.
async fn audit(
    state: &AppState,
    bearer: &BearerUser,
    action: &str,
    at: (&str, Option<&str>, Option<&str>),
    detail: String,
) {
    let entry = commands::AuditEntry {
        action,
        dag_id: Some(at.0),
        run_id: at.1,
        task_id: at.2,
        detail,
    };
    commands::audit(&state.db, &bearer.actor(), entry).await;
}

fn t(d: Option<DateTime<Utc>>) -> Option<String> {
    d.map(rfc3339)
}

fn run_view(r: &Run) -> RunView {
    RunView {
        dag_id: r.dag_id.clone(),
        run_id: r.run_id.clone(),
        run_type: r.run_type.to_string(),
        state: r.state.to_string(),
        logical_date: rfc3339(r.logical_date),
        data_interval_start: rfc3339(r.data_interval_start),
        data_interval_end: rfc3339(r.data_interval_end),
        started_at: t(r.started_at),
        ended_at: t(r.ended_at),
        params: serde_json::from_str(&r.params).unwrap_or_default(),
        conf: serde_json::from_str(&r.conf).unwrap_or_default(),
        note: r.note.clone(),
    }
}

fn ti_view(ti: &TaskInstance) -> TaskInstanceView {
    TaskInstanceView {
        task_id: ti.task_id.clone(),
        state: ti.state.to_string(),
        try_number: ti.try_number,
        max_tries: ti.max_tries,
        pool: ti.pool.clone(),
        started_at: t(ti.started_at),
        ended_at: t(ti.ended_at),
        duration_ms: ti.duration_ms,
        exit_code: ti.exit_code,
        error: ti.error.clone(),
        hostname: ti.hostname.clone(),
        note: ti.note.clone(),
    }
}

fn dag_view(dag: &crate::dag::Dag, paused: bool) -> DagView {
    DagView {
        dag_id: dag.dag_id.clone(),
        description: dag.description.clone(),
        schedule: dag.schedule.as_str().to_string(),
        schedule_description: dag.schedule.describe(),
        timezone: dag.timezone.name().to_string(),
        paused,
        tags: dag.tags.clone(),
        owner: dag.owner.clone(),
        tasks: dag
            .tasks
            .iter()
            .map(|t| TaskView {
                task_id: t.task_id.clone(),
                kind: t.kind_name().into(),
                depends_on: t.depends_on.clone(),
                retries: t.retries,
                pool: t.pool.clone(),
            })
            .collect(),
        file: crate::dag::bag::display_path(&dag.file),
    }
}

fn known(
    state: &AppState,
    dag_id: &str,
) -> Result<(std::sync::Arc<crate::dag::Dag>, i64), ApiError> {
    state
        .registry
        .current(dag_id)
        .ok_or_else(|| ApiError(Error::NotFound(format!("no dag \"{dag_id}\""))))
}

async fn find_run(state: &AppState, dag_id: &str, run_id: &str) -> Result<Run, ApiError> {
    runs::find_run(&state.db.read, dag_id, run_id)
        .await?
        .ok_or_else(|| {
            ApiError(Error::NotFound(format!(
                "dag \"{dag_id}\" has no run \"{run_id}\""
            )))
        })
}

/// All DAGs.
#[utoipa::path(get, path = "/api/v1/dags", responses((status = 200, body = [DagView])))]
async fn list_dags(State(state): State<AppState>, viewer: Viewer) -> ApiResult<Vec<DagView>> {
    read(&state, &viewer)?;
    let paused: HashMap<String, bool> = dags::list_dags(&state.db.read)
        .await?
        .into_iter()
        .map(|d| (d.dag_id, d.is_paused))
        .collect();
    let mut out = Vec::new();
    for (d, _) in state.registry.all() {
        let p = paused.get(&d.dag_id).copied().unwrap_or(false);
        out.push(dag_view(&d, p));
    }
    Ok(Json(out))
}

/// One DAG.
#[utoipa::path(get, path = "/api/v1/dags/{dag_id}", params(("dag_id" = String, Path, description = "the DAG")), responses((status = 200, body = DagView), (status = 404)))]
async fn get_dag(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(dag_id): Path<String>,
) -> ApiResult<DagView> {
    read(&state, &viewer)?;
    let (d, _) = known(&state, &dag_id)?;
    let paused = dags::get_dag(&state.db.read, &dag_id)
        .await?
        .is_some_and(|x| x.is_paused);
    Ok(Json(dag_view(&d, paused)))
}

/// Pause a DAG (operator).
#[utoipa::path(post, path = "/api/v1/dags/{dag_id}/pause", params(("dag_id" = String, Path, description = "the DAG")), responses((status = 200, body = DagView), (status = 401), (status = 403)))]
async fn pause_dag(
    State(state): State<AppState>,
    bearer: BearerUser,
    Path(dag_id): Path<String>,
) -> ApiResult<DagView> {
    set_paused(state, bearer, dag_id, true).await
}

/// Unpause a DAG (operator).
#[utoipa::path(post, path = "/api/v1/dags/{dag_id}/unpause", params(("dag_id" = String, Path, description = "the DAG")), responses((status = 200, body = DagView), (status = 401), (status = 403)))]
async fn unpause_dag(
    State(state): State<AppState>,
    bearer: BearerUser,
    Path(dag_id): Path<String>,
) -> ApiResult<DagView> {
    set_paused(state, bearer, dag_id, false).await
}

async fn set_paused(
    state: AppState,
    bearer: BearerUser,
    dag_id: String,
    paused: bool,
) -> ApiResult<DagView> {
    bearer.operator()?;
    let (d, _) = known(&state, &dag_id)?;
    commands::set_paused(&state.db, &dag_id, paused, None).await?;
    let action = if paused { "pause" } else { "unpause" };
    audit(
        &state,
        &bearer,
        action,
        (&dag_id, None, None),
        String::new(),
    )
    .await;
    Ok(Json(dag_view(&d, paused)))
}

fn parse_u64(
    q: &HashMap<String, String>,
    key: &str,
    default: u64,
    max: u64,
) -> Result<u64, ApiError> {
    match q.get(key) {
        None => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(ApiError(Error::BadRequest(format!(
                "{key} must be a whole number from 0 to {max}, got \"{v}\""
            )))),
        },
    }
}

/// Runs of a DAG, newest first. Query: `state`, `limit` (max 500), `offset`.
#[utoipa::path(get, path = "/api/v1/dags/{dag_id}/runs", params(("dag_id" = String, Path, description = "the DAG")), responses((status = 200, body = RunList), (status = 400)))]
async fn list_runs(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(dag_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<RunList> {
    read(&state, &viewer)?;
    known(&state, &dag_id)?;
    let limit = parse_u64(&q, "limit", 25, 500)?.max(1);
    let offset = parse_u64(&q, "offset", 0, u64::MAX / 2)?;
    let states = match q.get("state") {
        Some(s) => vec![RunState::parse(s).ok_or_else(|| {
            ApiError(Error::BadRequest(format!(
                "unknown state \"{s}\"; use queued, running, success or failed"
            )))
        })?],
        None => Vec::new(),
    };
    let list = runs::list_runs(
        &state.db.read,
        &RunFilter {
            dag_id: Some(dag_id),
            states,
            limit,
            offset,
        },
    )
    .await?;
    Ok(Json(RunList {
        runs: list.iter().map(run_view).collect(),
        limit,
        offset,
    }))
}

/// Trigger a manual run (operator).
#[utoipa::path(post, path = "/api/v1/dags/{dag_id}/runs", params(("dag_id" = String, Path, description = "the DAG")), request_body = TriggerBody, responses((status = 201, body = RunView), (status = 400), (status = 401)))]
async fn trigger_run(
    State(state): State<AppState>,
    bearer: BearerUser,
    Path(dag_id): Path<String>,
    body: Result<Json<TriggerBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    bearer.operator()?;
    let Json(body) = body.map_err(|e| {
        ApiError(Error::BadRequest(format!(
            "bad request body: {}",
            e.body_text()
        )))
    })?;
    let (dag, vid) = known(&state, &dag_id)?;
    let logical = match &body.logical_date {
        Some(s) => Some(
            crate::dag::parse_datetime(s, dag.timezone)
                .map_err(|e| ApiError(Error::BadRequest(format!("logical_date: {e}"))))?,
        ),
        None => None,
    };
    let run = commands::trigger(
        &state.db,
        &dag,
        vid,
        &body.params,
        body.conf,
        logical,
        Utc::now(),
    )
    .await?;
    audit(
        &state,
        &bearer,
        "trigger",
        (&dag_id, Some(&run.run_id), None),
        format!("logical date {}", rfc3339(run.logical_date)),
    )
    .await;
    if let Some(e) = &state.engine {
        e.wake();
    }
    Ok((StatusCode::CREATED, Json(run_view(&run))).into_response())
}

/// One run.
#[utoipa::path(get, path = "/api/v1/dags/{dag_id}/runs/{run_id}", params(("dag_id" = String, Path, description = "the DAG"), ("run_id" = String, Path, description = "the run (run_id, e.g. manual__2026-01-01T00:00:00Z)")), responses((status = 200, body = RunView), (status = 404)))]
async fn get_run(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((dag_id, run_id)): Path<(String, String)>,
) -> ApiResult<RunView> {
    read(&state, &viewer)?;
    Ok(Json(run_view(&find_run(&state, &dag_id, &run_id).await?)))
}

/// Task instances of a run.
#[utoipa::path(get, path = "/api/v1/dags/{dag_id}/runs/{run_id}/tasks", params(("dag_id" = String, Path, description = "the DAG"), ("run_id" = String, Path, description = "the run (run_id, e.g. manual__2026-01-01T00:00:00Z)")), responses((status = 200, body = [TaskInstanceView]), (status = 404)))]
async fn list_tasks(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((dag_id, run_id)): Path<(String, String)>,
) -> ApiResult<Vec<TaskInstanceView>> {
    read(&state, &viewer)?;
    let run = find_run(&state, &dag_id, &run_id).await?;
    Ok(Json(
        tasks::of_run(&state.db.read, run.id)
            .await?
            .iter()
            .map(ti_view)
            .collect(),
    ))
}

/// Clear a task (and optionally its downstream) so it runs again (operator).
#[utoipa::path(post, path = "/api/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/clear", params(("dag_id" = String, Path, description = "the DAG"), ("run_id" = String, Path, description = "the run (run_id, e.g. manual__2026-01-01T00:00:00Z)"), ("task_id" = String, Path, description = "the task")), request_body = ClearBody, responses((status = 200, body = Cleared), (status = 404)))]
async fn clear_task(
    State(state): State<AppState>,
    bearer: BearerUser,
    Path((dag_id, run_id, task_id)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Cleared> {
    bearer.operator()?;
    let b = parse_clear_body(&body)?;
    let scope = commands::Scope {
        upstream: b.upstream,
        downstream: b.downstream,
        only_failed: b.only_failed,
    };
    let tasks = [task_id.clone()];
    if b.dry_run {
        let preview =
            commands::clear_preview(&state.db, &state.registry, &dag_id, &run_id, &tasks, &scope)
                .await?;
        let cleared = preview.into_iter().map(|(t, _)| t).collect();
        return Ok(Json(Cleared { cleared }));
    }
    let cleared = commands::clear(
        &state.db,
        &state.registry,
        &dag_id,
        &run_id,
        &tasks,
        &scope,
        Utc::now(),
    )
    .await?;
    if !cleared.is_empty() {
        let detail = format!("cleared {}", cleared.join(", "));
        audit(
            &state,
            &bearer,
            "clear",
            (&dag_id, Some(&run_id), Some(&task_id)),
            detail,
        )
        .await;
    }
    if let Some(e) = &state.engine {
        e.wake();
    }
    Ok(Json(Cleared { cleared }))
}

/// What to mark a task instance.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkBody {
    /// `success` or `failed`.
    pub state: String,
    /// Also mark everything downstream of the task.
    #[serde(default)]
    pub downstream: bool,
    /// Also mark everything upstream of the task.
    #[serde(default)]
    pub upstream: bool,
}

/// Mark a task instance success or failed (operator); a running try is stopped.
#[utoipa::path(post, path = "/api/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/mark", params(("dag_id" = String, Path, description = "the DAG"), ("run_id" = String, Path, description = "the run (run_id, e.g. manual__2026-01-01T00:00:00Z)"), ("task_id" = String, Path, description = "the task")), request_body = MarkBody, responses((status = 200, body = TaskInstanceView), (status = 400), (status = 404)))]
async fn mark_task(
    State(state): State<AppState>,
    bearer: BearerUser,
    Path((dag_id, run_id, task_id)): Path<(String, String, String)>,
    body: Result<Json<MarkBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<TaskInstanceView> {
    bearer.operator()?;
    let Json(body) = body.map_err(|e| {
        ApiError(Error::BadRequest(format!(
            "bad request body: {}",
            e.body_text()
        )))
    })?;
    let to = match body.state.as_str() {
        "success" => crate::db::TaskState::Success,
        "failed" => crate::db::TaskState::Failed,
        other => {
            return Err(ApiError(Error::BadRequest(format!(
                "a task can be marked success or failed, not \"{other}\""
            ))));
        }
    };
    let scope = commands::Scope {
        upstream: body.upstream,
        downstream: body.downstream,
        only_failed: false,
    };
    let marked = commands::mark_task(
        &state.db,
        &state.registry,
        &dag_id,
        &run_id,
        &task_id,
        to,
        &scope,
        Utc::now(),
    )
    .await?;
    let detail = format!("marked {} {to}", marked.join(", "));
    audit(
        &state,
        &bearer,
        "mark",
        (&dag_id, Some(&run_id), Some(&task_id)),
        detail,
    )
    .await;
    super::stop_marked(&state).await;
    let run = find_run(&state, &dag_id, &run_id).await?;
    let ti = tasks::of_run(&state.db.read, run.id)
        .await?
        .into_iter()
        .find(|t| t.task_id == task_id)
        .ok_or_else(|| {
            ApiError(Error::NotFound(format!(
                "run \"{run_id}\" has no task \"{task_id}\""
            )))
        })?;
    Ok(Json(ti_view(&ti)))
}

/// Cancel a run (operator): it is marked failed, its running tries are stopped at once
/// and its waiting tasks skipped; the stopped tasks say who cancelled them.
#[utoipa::path(post, path = "/api/v1/dags/{dag_id}/runs/{run_id}/cancel", params(("dag_id" = String, Path, description = "the DAG"), ("run_id" = String, Path, description = "the run (run_id, e.g. manual__2026-01-01T00:00:00Z)")), responses((status = 200, body = RunView), (status = 400), (status = 404)))]
async fn cancel_run(
    State(state): State<AppState>,
    bearer: BearerUser,
    Path((dag_id, run_id)): Path<(String, String)>,
) -> ApiResult<RunView> {
    let user = bearer.operator()?.username.clone();
    commands::mark_run(
        &state.db,
        &state.registry,
        &dag_id,
        &run_id,
        crate::db::RunState::Failed,
        &user,
        Utc::now(),
    )
    .await?;
    audit(
        &state,
        &bearer,
        "cancel",
        (&dag_id, Some(&run_id), None),
        String::new(),
    )
    .await;
    super::stop_marked(&state).await;
    let run = find_run(&state, &dag_id, &run_id).await?;
    Ok(Json(run_view(&run)))
}

/// The log of a try (`try` query parameter; default the latest).
#[utoipa::path(get, path = "/api/v1/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/logs", params(("dag_id" = String, Path, description = "the DAG"), ("run_id" = String, Path, description = "the run (run_id, e.g. manual__2026-01-01T00:00:00Z)"), ("task_id" = String, Path, description = "the task")), responses((status = 200, body = LogView), (status = 404)))]
async fn task_logs(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((dag_id, run_id, task_id)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<LogView> {
    viewer.can_read_logs(&state).map_err(ApiError)?;
    let run = find_run(&state, &dag_id, &run_id).await?;
    let ti = tasks::of_run(&state.db.read, run.id)
        .await?
        .into_iter()
        .find(|t| t.task_id == task_id)
        .ok_or_else(|| {
            ApiError(Error::NotFound(format!(
                "run \"{run_id}\" has no task \"{task_id}\""
            )))
        })?;
    let tries = tasks::tries_of(&state.db.read, ti.id).await?;
    let wanted = match q.get("try") {
        Some(s) => Some(s.parse::<i32>().map_err(|_| {
            ApiError(Error::BadRequest(format!(
                "try must be a number, got \"{s}\""
            )))
        })?),
        None => None,
    };
    let t = match wanted {
        Some(n) => tries.iter().find(|t| t.try_number == n),
        None => tries.last(),
    }
    .ok_or_else(|| {
        ApiError(Error::NotFound(format!(
            "task \"{task_id}\" has no such try"
        )))
    })?;
    let content = tasks::read_log(&state.db.read, t.id).await?;
    Ok(Json(LogView {
        try_number: t.try_number,
        state: t.state.to_string(),
        content,
    }))
}

/// Pools and their use.
#[utoipa::path(get, path = "/api/v1/pools", responses((status = 200, body = [PoolView])))]
async fn list_pools(State(state): State<AppState>, viewer: Viewer) -> ApiResult<Vec<PoolView>> {
    read(&state, &viewer)?;
    let used = crate::db::stats::pool_usage(&state.db.read).await?;
    Ok(Json(
        dags::pools(&state.db.read)
            .await?
            .into_iter()
            .map(|p| PoolView {
                used: used.get(&p.name).copied().unwrap_or(0),
                name: p.name,
                slots: p.slots,
            })
            .collect(),
    ))
}

/// Health summary: database, scheduler heartbeat, live task counts.
#[utoipa::path(get, path = "/api/v1/health", responses((status = 200)))]
async fn health(State(state): State<AppState>, viewer: Viewer) -> Result<Response, ApiError> {
    read(&state, &viewer)?;
    let mut body = super::health_body(&state).await;
    let live = crate::db::stats::live_task_counts(&state.db.read).await?;
    let counts: BTreeMap<String, i64> = live.into_iter().map(|(s, n)| (s.to_string(), n)).collect();
    body["tasks"] = serde_json::to_value(counts).unwrap_or_default();
    Ok(Json(body).into_response())
}

/// An operator's action, as the audit log recorded it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub at: String,
    pub actor: String,
    /// `ui`, `api` or `cli`.
    pub source: String,
    /// The client's address (web) or host (CLI).
    pub client: Option<String>,
    pub action: String,
    pub dag_id: Option<String>,
    pub run_id: Option<String>,
    pub task_id: Option<String>,
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditView>,
    pub total: u64,
    pub limit: u64,
    pub offset: u64,
}

/// The audit log, newest first (admins). Query: `actor`, `action`, `dag_id`, `run_id`,
/// `source`, `limit` (max 500), `offset`.
#[utoipa::path(get, path = "/api/v1/audit", responses((status = 200, body = AuditList), (status = 400), (status = 401), (status = 403)))]
async fn list_audit(
    State(state): State<AppState>,
    bearer: BearerUser,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<AuditList> {
    // Reading it is a read: a token of either scope will do, if its user is an admin.
    if bearer.0.role != Role::Admin {
        return Err(ApiError(Error::Forbidden(format!(
            "the audit log is for admins; \"{}\" is {}",
            bearer.0.username, bearer.0.role
        ))));
    }
    let limit = parse_u64(&q, "limit", 50, 500)?.max(1);
    let offset = parse_u64(&q, "offset", 0, 1_000_000_000)?;
    let filter = crate::db::audit::Filter {
        actor: q.get("actor").cloned(),
        action: q.get("action").cloned(),
        dag_id: q.get("dag_id").cloned(),
        run_id: q.get("run_id").cloned(),
        source: q.get("source").cloned(),
    };
    let (rows, total) = crate::db::audit::list(&state.db.read, &filter, limit, offset).await?;
    Ok(Json(AuditList {
        entries: rows
            .into_iter()
            .map(|e| AuditView {
                at: rfc3339(e.at),
                actor: e.actor,
                source: e.source,
                client: e.client,
                action: e.action,
                dag_id: e.dag_id,
                run_id: e.run_id,
                task_id: e.task_id,
                detail: e.detail,
            })
            .collect(),
        total,
        limit,
        offset,
    }))
}

/// DAG files that do not load.
#[utoipa::path(get, path = "/api/v1/import-errors", responses((status = 200, body = [ImportErrorView])))]
async fn list_import_errors(
    State(state): State<AppState>,
    viewer: Viewer,
) -> ApiResult<Vec<ImportErrorView>> {
    read(&state, &viewer)?;
    Ok(Json(
        dags::import_errors(&state.db.read)
            .await?
            .into_iter()
            .map(|e| ImportErrorView {
                file: e.fileloc,
                message: e.message,
            })
            .collect(),
    ))
}
