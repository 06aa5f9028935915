//! Server-rendered pages (askama templates in `templates/`). Each page reads what it
//! shows in a bounded number of queries (no query per row).

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use askama_web::WebTemplate;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum_csrf::CsrfToken;
use chrono::{Duration, Utc};
use serde::Deserialize;

use super::AppState;
use super::auth::Viewer;
use super::error::{Error, Result};
use super::views::{
    self, Chart, Graph, Time, dag_href, duration_ms, enc, percent, run_href, task_href, time,
};
use crate::accounts;
use crate::dag::Dag;
use crate::db::rows::{Run, TaskInstance};
use crate::db::runs::RunFilter;
use crate::db::{Role, RunState, TaskState, dags, runs, stats, tasks, users};
use crate::scheduler::{commands, plan};

/// A labelled link (an action button, a results page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub label: String,
    pub href: String,
}

impl Link {
    fn new(label: impl Into<String>, href: impl Into<String>) -> Link {
        Link {
            label: label.into(),
            href: href.into(),
        }
    }
}

/// What every page shows around its content.
#[derive(Debug, Clone)]
pub struct Layout {
    pub title: String,
    pub nav: &'static str,
    pub user: Option<String>,
    pub role: String,
    pub operator: bool,
    pub admin: bool,
    pub csrf: String,
    pub notice: Option<String>,
    pub import_errors: usize,
    pub refresh: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct NoticeQuery {
    pub notice: Option<String>,
}

pub(crate) async fn layout(
    state: &AppState,
    viewer: &Viewer,
    token: &CsrfToken,
    title: String,
    nav: &'static str,
    notice: Option<String>,
) -> Result<Layout> {
    viewer.can_read(state)?;
    let import_errors = dags::count_import_errors(&state.db.conn).await?;
    Ok(Layout {
        title,
        nav,
        user: viewer.0.as_ref().map(|u| u.username.clone()),
        role: viewer
            .0
            .as_ref()
            .map(|u| u.role.to_string())
            .unwrap_or_default(),
        operator: viewer.has(Role::Operator),
        admin: viewer.has(Role::Admin),
        csrf: super::auth::csrf_token(token, viewer)?,
        notice: notice
            .filter(|n| !n.is_empty())
            .map(|n| n.chars().take(300).collect()),
        import_errors,
        refresh: false,
    })
}

pub(crate) fn page(token: CsrfToken, t: impl IntoResponse) -> Response {
    (token, t).into_response()
}

fn known_dag(state: &AppState, dag_id: &str) -> Result<(std::sync::Arc<Dag>, i64)> {
    state.registry.current(dag_id).ok_or_else(|| {
        let hint = crate::dag::diag::did_you_mean(
            dag_id,
            state
                .registry
                .all()
                .iter()
                .map(|(d, _)| d.dag_id.as_str())
                .collect::<Vec<_>>(),
        );
        Error::NotFound(format!("no dag \"{dag_id}\"{hint}"))
    })
}

// ---------------------------------------------------------------- DAGs

#[derive(Debug, Clone)]
pub struct Dot {
    pub class: String,
    pub href: String,
    pub title: String,
}

#[derive(Debug, Clone)]
pub struct DagRow {
    pub dag_id: String,
    pub href: String,
    pub description: String,
    pub schedule: String,
    pub schedule_human: String,
    pub timezone: String,
    pub next_run: Option<Time>,
    pub last_state: String,
    pub recent: Vec<Dot>,
    pub run_fail: String,
    pub try_fail: String,
    pub paused: bool,
    pub tags: Vec<String>,
    pub pause_href: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "dags.html")]
pub struct DagsPage {
    pub layout: Layout,
    pub rows: Vec<DagRow>,
    pub q: String,
    pub tag: String,
    pub all_tags: Vec<String>,
    pub total: usize,
}

#[derive(Debug, Default, Deserialize)]
pub struct DagsQuery {
    pub q: Option<String>,
    pub tag: Option<String>,
    pub notice: Option<String>,
}

pub async fn dags_page(
    State(state): State<AppState>,
    viewer: Viewer,
    token: CsrfToken,
    Query(q): Query<DagsQuery>,
) -> Result<Response> {
    let layout = layout(
        &state,
        &viewer,
        &token,
        "DAGs".into(),
        "dags",
        q.notice.clone(),
    )
    .await?;
    let now = Utc::now();
    let db_dags: HashMap<String, crate::db::rows::DagRow> = dags::list_dags(&state.db.conn)
        .await?
        .into_iter()
        .map(|d| (d.dag_id.clone(), d))
        .collect();
    let mut recent: HashMap<String, Vec<Run>> = HashMap::new();
    for r in stats::recent_runs(&state.db.conn, 10).await? {
        recent.entry(r.dag_id.clone()).or_default().push(r);
    }
    let week = now - Duration::days(7);
    let run_rates = stats::run_failure_by_dag(&state.db.conn, week).await?;
    let try_rates = stats::try_failure_by_dag(&state.db.conn, week).await?;
    let last_sched = stats::latest_scheduled_by_dag(&state.db.conn).await?;
    let search = q.q.clone().unwrap_or_default().to_lowercase();
    let tag = q.tag.clone().unwrap_or_default();
    let mut all_tags = std::collections::BTreeSet::new();
    let all = state.registry.all();
    let total = all.len();
    let mut rows = Vec::new();
    for (dag, _) in all {
        all_tags.extend(dag.tags.iter().cloned());
        if !search.is_empty()
            && !dag.dag_id.to_lowercase().contains(&search)
            && !dag
                .description
                .clone()
                .unwrap_or_default()
                .to_lowercase()
                .contains(&search)
        {
            continue;
        }
        if !tag.is_empty() && !dag.tags.contains(&tag) {
            continue;
        }
        let paused = db_dags.get(&dag.dag_id).is_some_and(|d| d.is_paused);
        let runs = recent.remove(&dag.dag_id).unwrap_or_default();
        let next_run = if paused || dag.schedule.is_none() {
            None
        } else {
            plan::plan(
                &dag.timetable(),
                dag.catchup,
                last_sched.get(&dag.dag_id).copied(),
                now,
                0,
            )
            .next_run_after
            .map(time)
        };
        rows.push(DagRow {
            href: dag_href(&dag.dag_id),
            description: dag.description.clone().unwrap_or_default(),
            schedule: dag.schedule.as_str().to_string(),
            schedule_human: dag.schedule.describe(),
            timezone: dag.timezone.name().to_string(),
            next_run,
            last_state: runs
                .first()
                .map(|r| r.state.to_string())
                .unwrap_or_default(),
            recent: runs
                .iter()
                .rev()
                .map(|r| Dot {
                    class: format!("s-{}", r.state),
                    href: run_href(&r.dag_id, &r.run_id),
                    title: format!("{} {}", r.run_id, r.state),
                })
                .collect(),
            run_fail: percent(run_rates.get(&dag.dag_id).and_then(|r| r.percent())),
            try_fail: percent(try_rates.get(&dag.dag_id).and_then(|r| r.percent())),
            paused,
            tags: dag.tags.clone(),
            pause_href: format!(
                "/confirm?action={}&dag={}",
                if paused { "unpause" } else { "pause" },
                enc(&dag.dag_id)
            ),
            dag_id: dag.dag_id.clone(),
        });
    }
    let mut layout = layout;
    layout.refresh = true;
    Ok(page(
        token,
        DagsPage {
            layout,
            rows,
            q: q.q.unwrap_or_default(),
            tag,
            all_tags: all_tags.into_iter().collect(),
            total,
        },
    ))
}

// ---------------------------------------------------------------- DAG detail

#[derive(Debug, Clone)]
pub struct GridCell {
    pub class: String,
    pub href: String,
    pub title: String,
}

#[derive(Debug, Clone)]
pub struct GridRow {
    pub task_id: String,
    pub cells: Vec<GridCell>,
}

#[derive(Debug, Clone)]
pub struct RunRow {
    pub run_id: String,
    pub href: String,
    pub state: String,
    pub run_type: String,
    pub logical: Time,
    pub started: Option<Time>,
    pub duration: String,
}

#[derive(Debug, Clone)]
pub struct VersionRow {
    pub version: i32,
    pub href: String,
    pub created: Time,
    pub hash: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "dag.html")]
pub struct DagPage {
    pub layout: Layout,
    pub dag_id: String,
    pub description: String,
    pub schedule: String,
    pub schedule_human: String,
    pub timezone: String,
    pub owner: String,
    pub tags: Vec<String>,
    pub paused: bool,
    pub pause_href: String,
    pub trigger_href: String,
    pub grid_runs: Vec<Dot>,
    pub grid: Vec<GridRow>,
    pub graph: Graph,
    pub durations: Chart,
    pub runs: Vec<RunRow>,
    pub source: String,
    pub versions: Vec<VersionRow>,
    /// Links to the experiment and survey pages of this DAG's tasks: (label, href).
    pub insights: Vec<Link>,
}

/// The results pages (experiment, survey) a DAG's tasks feed: (label, href).
fn insight_links(dag: &Dag) -> Vec<Link> {
    let mut out: Vec<Link> = Vec::new();
    let links = dag.tasks.iter().filter_map(|t| t.spec.insight());
    for link in links.map(|(label, href)| Link { label, href }) {
        if !out.contains(&link) {
            out.push(link);
        }
    }
    out
}

pub async fn dag_page(
    State(state): State<AppState>,
    viewer: Viewer,
    token: CsrfToken,
    Path(dag_id): Path<String>,
    Query(q): Query<NoticeQuery>,
) -> Result<Response> {
    let mut layout = layout(&state, &viewer, &token, dag_id.clone(), "dags", q.notice).await?;
    layout.refresh = true;
    let (dag, _) = known_dag(&state, &dag_id)?;
    let paused = dags::get_dag(&state.db.conn, &dag_id)
        .await?
        .is_some_and(|d| d.is_paused);
    let mut recent = runs::list_runs(
        &state.db.conn,
        &RunFilter {
            dag_id: Some(dag_id.clone()),
            limit: 25,
            ..Default::default()
        },
    )
    .await?;
    recent.reverse();
    let ids: Vec<i64> = recent.iter().map(|r| r.id).collect();
    let tis = tasks::of_runs(&state.db.conn, &ids).await?;
    let mut by_cell: HashMap<(i64, &str), &TaskInstance> = HashMap::new();
    for t in &tis {
        by_cell.insert((t.dag_run_id, t.task_id.as_str()), t);
    }
    let grid = dag
        .topo_order
        .iter()
        .map(|&i| {
            let task = &dag.tasks[i].task_id;
            GridRow {
                task_id: task.clone(),
                cells: recent
                    .iter()
                    .map(|r| match by_cell.get(&(r.id, task.as_str())) {
                        Some(t) => GridCell {
                            class: format!("s-{}", t.state),
                            href: task_href(&dag_id, &r.run_id, task),
                            title: format!(
                                "{task} in {}: {} (try {})",
                                r.run_id, t.state, t.try_number
                            ),
                        },
                        None => GridCell {
                            class: "s-none".into(),
                            href: String::new(),
                            title: format!("{task} is not in {}", r.run_id),
                        },
                    })
                    .collect(),
            }
        })
        .collect();
    let latest = recent.last().map(|r| r.id);
    let graph = views::graph(&dag, |t| {
        latest.and_then(|id| by_cell.get(&(id, t)).map(|x| x.state.to_string()))
    });
    let bars: Vec<(String, String, i64, String)> = recent
        .iter()
        .filter_map(|r| match (r.started_at, r.ended_at) {
            (Some(s), Some(e)) => Some((
                r.run_id.clone(),
                format!("s-{}", r.state),
                (e - s).num_milliseconds(),
                run_href(&dag_id, &r.run_id),
            )),
            _ => None,
        })
        .collect();
    let versions = dags::versions_of(&state.db.conn, &dag_id)
        .await?
        .into_iter()
        .map(|v| VersionRow {
            href: format!("{}/versions/{}", dag_href(&dag_id), v.version),
            version: v.version,
            created: time(v.created_at),
            hash: v.source_hash.chars().take(12).collect(),
        })
        .collect();
    let runs_rows = recent
        .iter()
        .rev()
        .map(|r| RunRow {
            run_id: r.run_id.clone(),
            href: run_href(&dag_id, &r.run_id),
            state: r.state.to_string(),
            run_type: r.run_type.to_string(),
            logical: time(r.logical_date),
            started: views::opt_time(r.started_at),
            duration: views::between(r.started_at, r.ended_at),
        })
        .collect();
    Ok(page(
        token,
        DagPage {
            layout,
            insights: insight_links(&dag),
            grid_runs: recent
                .iter()
                .map(|r| Dot {
                    class: format!("s-{}", r.state),
                    href: run_href(&dag_id, &r.run_id),
                    title: format!("{} {}", r.run_id, r.state),
                })
                .collect(),
            grid,
            graph,
            durations: views::duration_bars(&bars),
            runs: runs_rows,
            source: dag.source().to_string(),
            versions,
            description: dag.description.clone().unwrap_or_default(),
            schedule: dag.schedule.as_str().to_string(),
            schedule_human: dag.schedule.describe(),
            timezone: dag.timezone.name().to_string(),
            owner: dag.owner.clone().unwrap_or_default(),
            tags: dag.tags.clone(),
            paused,
            pause_href: format!(
                "/confirm?action={}&dag={}",
                if paused { "unpause" } else { "pause" },
                enc(&dag_id)
            ),
            trigger_href: format!("{}/trigger", dag_href(&dag_id)),
            dag_id,
        },
    ))
}

// ---------------------------------------------------------------- trigger

#[derive(Debug, Clone)]
pub struct ParamField {
    pub name: String,
    pub ty: String,
    pub input: &'static str,
    pub value: String,
    pub required: bool,
    pub description: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "trigger.html")]
pub struct TriggerPage {
    pub layout: Layout,
    pub dag_id: String,
    pub action: String,
    pub fields: Vec<ParamField>,
    pub error: String,
}

fn param_fields(dag: &Dag, given: &BTreeMap<String, String>) -> Vec<ParamField> {
    dag.params
        .iter()
        .map(|p| ParamField {
            name: p.name.clone(),
            ty: p.ty.name().to_string(),
            input: match p.ty {
                crate::dag::ParamType::Int | crate::dag::ParamType::Float => "number",
                crate::dag::ParamType::Date => "date",
                _ => "text",
            },
            value: given
                .get(&p.name)
                .cloned()
                .unwrap_or_else(|| match &p.default {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => String::new(),
                }),
            required: p.default.is_none(),
            description: p.description.clone().unwrap_or_default(),
        })
        .collect()
}

pub async fn trigger_form(
    State(state): State<AppState>,
    viewer: Viewer,
    token: CsrfToken,
    Path(dag_id): Path<String>,
) -> Result<Response> {
    let layout = layout(
        &state,
        &viewer,
        &token,
        format!("Trigger {dag_id}"),
        "dags",
        None,
    )
    .await?;
    viewer.require(Role::Operator)?;
    let (dag, _) = known_dag(&state, &dag_id)?;
    let fields = param_fields(&dag, &BTreeMap::new());
    Ok(page(
        token,
        TriggerPage {
            layout,
            action: format!("{}/trigger", dag_href(&dag_id)),
            dag_id,
            fields,
            error: String::new(),
        },
    ))
}

pub async fn trigger_post(
    State(state): State<AppState>,
    viewer: Viewer,
    token: CsrfToken,
    Path(dag_id): Path<String>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Result<Response> {
    super::auth::verify_csrf(&token, &viewer, form.get("authenticity_token"))?;
    viewer.require(Role::Operator)?;
    let (dag, vid) = known_dag(&state, &dag_id)?;
    let mut params = BTreeMap::new();
    for p in &dag.params {
        if let Some(v) = form.get(&format!("param_{}", p.name))
            && (!v.is_empty() || p.ty == crate::dag::ParamType::String)
        {
            let v = if p.ty == crate::dag::ParamType::Bool {
                serde_json::Value::String(if v == "on" || v == "true" {
                    "true".into()
                } else {
                    "false".into()
                })
            } else {
                serde_json::Value::String(v.clone())
            };
            params.insert(p.name.clone(), v);
        }
    }
    let conf = match form.get("conf").map(|c| c.trim()).filter(|c| !c.is_empty()) {
        Some(c) => match serde_json::from_str(c) {
            Ok(v) => v,
            Err(e) => {
                return trigger_error(
                    &state,
                    &viewer,
                    token,
                    &dag,
                    &form,
                    format!("conf is not valid JSON: {e}"),
                )
                .await;
            }
        },
        None => serde_json::Value::Null,
    };
    match commands::trigger(&state.db, &dag, vid, &params, conf, None, Utc::now()).await {
        Ok(run) => {
            if let Some(e) = &state.engine {
                e.wake();
            }
            let notice = format!("created run {}", run.run_id);
            Ok(Redirect::to(&format!(
                "{}?notice={}",
                run_href(&dag_id, &run.run_id),
                enc(&notice)
            ))
            .into_response())
        }
        Err(commands::CommandError::Invalid(m)) => {
            trigger_error(&state, &viewer, token, &dag, &form, m).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn trigger_error(
    state: &AppState,
    viewer: &Viewer,
    token: CsrfToken,
    dag: &Dag,
    form: &BTreeMap<String, String>,
    error: String,
) -> Result<Response> {
    let layout = layout(
        state,
        viewer,
        &token,
        format!("Trigger {}", dag.dag_id),
        "dags",
        None,
    )
    .await?;
    let given: BTreeMap<String, String> = form
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("param_").map(|n| (n.to_string(), v.clone())))
        .collect();
    let t = TriggerPage {
        layout,
        action: format!("{}/trigger", dag_href(&dag.dag_id)),
        dag_id: dag.dag_id.clone(),
        fields: param_fields(dag, &given),
        error,
    };
    Ok((axum::http::StatusCode::BAD_REQUEST, page(token, t)).into_response())
}

// ---------------------------------------------------------------- run

#[derive(Debug, Clone)]
pub struct TiRow {
    pub task_id: String,
    pub href: String,
    pub state: String,
    pub tries: String,
    pub started: Option<Time>,
    pub ended: Option<Time>,
    pub duration: String,
    pub error: String,
    pub clear_href: String,
    pub clear_down_href: String,
    pub success_href: String,
    pub failed_href: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "run.html")]
pub struct RunPage {
    pub layout: Layout,
    pub dag_id: String,
    pub dag_href: String,
    pub run_id: String,
    pub state: String,
    pub run_type: String,
    pub logical: Time,
    pub interval_start: Time,
    pub interval_end: Time,
    pub started: Option<Time>,
    pub ended: Option<Time>,
    pub duration: String,
    pub params: String,
    pub conf: String,
    pub rows: Vec<TiRow>,
    pub gantt: Chart,
    pub finished: bool,
    pub actions: Vec<Link>,
}

fn confirm_href(action: &str, dag: &str, run: &str, task: &str, extra: &str) -> String {
    format!(
        "/confirm?action={action}&dag={}&run={}&task={}{extra}",
        enc(dag),
        enc(run),
        enc(task)
    )
}

pub async fn run_page(
    State(state): State<AppState>,
    viewer: Viewer,
    token: CsrfToken,
    Path((dag_id, run_id)): Path<(String, String)>,
    Query(q): Query<NoticeQuery>,
) -> Result<Response> {
    let mut layout = layout(
        &state,
        &viewer,
        &token,
        format!("{dag_id} / {run_id}"),
        "dags",
        q.notice,
    )
    .await?;
    let run = runs::find_run(&state.db.conn, &dag_id, &run_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("dag \"{dag_id}\" has no run \"{run_id}\"")))?;
    layout.refresh = !run.state.is_finished();
    let dag = state
        .registry
        .version(&state.db, run.dag_version_id)
        .await?;
    let mut tis = tasks::of_run(&state.db.conn, run.id).await?;
    if let Some(d) = &dag {
        let order: HashMap<&str, usize> = d
            .topo_order
            .iter()
            .enumerate()
            .map(|(k, &i)| (d.tasks[i].task_id.as_str(), k))
            .collect();
        tis.sort_by_key(|t| order.get(t.task_id.as_str()).copied().unwrap_or(usize::MAX));
    }
    let rows: Vec<TiRow> = tis
        .iter()
        .map(|t| TiRow {
            href: task_href(&dag_id, &run_id, &t.task_id),
            state: t.state.to_string(),
            tries: format!("{}/{}", t.try_number, t.max_tries),
            started: views::opt_time(t.started_at),
            ended: views::opt_time(t.ended_at),
            duration: t
                .duration_ms
                .map(duration_ms)
                .unwrap_or_else(|| views::between(t.started_at, t.ended_at)),
            error: t.error.clone().unwrap_or_default(),
            clear_href: confirm_href("clear", &dag_id, &run_id, &t.task_id, ""),
            clear_down_href: confirm_href("clear", &dag_id, &run_id, &t.task_id, "&downstream=1"),
            success_href: confirm_href("mark_task", &dag_id, &run_id, &t.task_id, "&state=success"),
            failed_href: confirm_href("mark_task", &dag_id, &run_id, &t.task_id, "&state=failed"),
            task_id: t.task_id.clone(),
        })
        .collect();
    let gantt_rows: Vec<_> = tis
        .iter()
        .map(|t| {
            (
                t.task_id.clone(),
                format!("s-{}", t.state),
                t.started_at,
                t.ended_at,
                task_href(&dag_id, &run_id, &t.task_id),
            )
        })
        .collect();
    let pretty = |s: &str| {
        serde_json::from_str::<serde_json::Value>(s)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| s.to_string())
    };
    let mut actions = vec![Link::new(
        "Clear all tasks",
        confirm_href("clear", &dag_id, &run_id, "", ""),
    )];
    if run.state != RunState::Success {
        actions.push(Link::new(
            "Mark run success",
            confirm_href("mark_run", &dag_id, &run_id, "", "&state=success"),
        ));
    }
    if run.state != RunState::Failed {
        let label = if run.state.is_finished() {
            "Mark run failed"
        } else {
            "Cancel run (mark failed)"
        };
        actions.push(Link::new(
            label,
            confirm_href("mark_run", &dag_id, &run_id, "", "&state=failed"),
        ));
    }
    Ok(page(
        token,
        RunPage {
            layout,
            dag_href: dag_href(&dag_id),
            state: run.state.to_string(),
            run_type: run.run_type.to_string(),
            logical: time(run.logical_date),
            interval_start: time(run.data_interval_start),
            interval_end: time(run.data_interval_end),
            started: views::opt_time(run.started_at),
            ended: views::opt_time(run.ended_at),
            duration: views::between(run.started_at, run.ended_at),
            params: pretty(&run.params),
            conf: pretty(&run.conf),
            rows,
            gantt: views::gantt(&gantt_rows, run.started_at),
            finished: run.state.is_finished(),
            actions,
            dag_id,
            run_id,
        },
    ))
}

// ---------------------------------------------------------------- task try

#[derive(Debug, Clone)]
pub struct TryRow {
    pub number: i32,
    pub href: String,
    pub state: String,
    pub started: Time,
    pub duration: String,
    pub exit_code: String,
    pub error: String,
    pub hostname: String,
    pub selected: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "task.html")]
pub struct TaskPage {
    pub layout: Layout,
    pub dag_id: String,
    pub run_id: String,
    pub task_id: String,
    pub dag_href: String,
    pub run_href: String,
    pub state: String,
    pub kind: String,
    pub tries: Vec<TryRow>,
    pub selected: i32,
    pub log: String,
    pub raw_href: String,
    pub follow: bool,
    pub error: String,
    pub exit_code: String,
    pub hostname: String,
    /// For a task that never ran (upstream_failed, skipped): its upstream tasks that
    /// failed or were skipped, the reason it did not run.
    pub blocked_by: Vec<UpstreamRow>,
}

/// An upstream task instance shown on a task's page.
#[derive(Debug, Clone)]
pub struct UpstreamRow {
    pub task_id: String,
    pub href: String,
    pub state: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct TryQuery {
    #[serde(rename = "try")]
    pub try_number: Option<String>,
    pub notice: Option<String>,
}

/// The upstream tasks (of the run's DAG version) that failed, were skipped or could not
/// run: why `ti` did not run.
async fn upstream_blockers(
    state: &AppState,
    ti: &TaskInstance,
    dag_id: &str,
    run_id: &str,
) -> Result<Vec<UpstreamRow>> {
    let Some(run) = runs::get_run(&state.db.conn, ti.dag_run_id).await? else {
        return Ok(Vec::new());
    };
    let Some(dag) = state
        .registry
        .version(&state.db, run.dag_version_id)
        .await?
    else {
        return Ok(Vec::new());
    };
    let Some(task) = dag.task(&ti.task_id) else {
        return Ok(Vec::new());
    };
    let states: BTreeMap<String, TaskState> = tasks::states_of_run(&state.db.conn, run.id)
        .await?
        .into_iter()
        .collect();
    Ok(task
        .depends_on
        .iter()
        .filter_map(|up| {
            let s = *states.get(up)?;
            matches!(
                s,
                TaskState::Failed
                    | TaskState::UpstreamFailed
                    | TaskState::Skipped
                    | TaskState::Removed
            )
            .then(|| UpstreamRow {
                task_id: up.clone(),
                href: task_href(dag_id, run_id, up),
                state: s.to_string(),
            })
        })
        .collect())
}

async fn find_ti(
    state: &AppState,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
) -> Result<TaskInstance> {
    let run = runs::find_run(&state.db.conn, dag_id, run_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("dag \"{dag_id}\" has no run \"{run_id}\"")))?;
    let tis = tasks::of_run(&state.db.conn, run.id).await?;
    let names: Vec<String> = tis.iter().map(|t| t.task_id.clone()).collect();
    tis.into_iter()
        .find(|t| t.task_id == task_id)
        .ok_or_else(|| {
            let hint = crate::dag::diag::did_you_mean(task_id, names.iter().map(String::as_str));
            Error::NotFound(format!("run \"{run_id}\" has no task \"{task_id}\"{hint}"))
        })
}

fn parse_try(q: &TryQuery) -> Result<Option<i32>> {
    match q.try_number.as_deref().filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse::<i32>()
            .map(Some)
            .map_err(|_| Error::BadRequest(format!("try must be a number, got \"{s}\""))),
    }
}

pub async fn task_page(
    State(state): State<AppState>,
    viewer: Viewer,
    token: CsrfToken,
    Path((dag_id, run_id, task_id)): Path<(String, String, String)>,
    Query(q): Query<TryQuery>,
) -> Result<Response> {
    let mut layout = layout(
        &state,
        &viewer,
        &token,
        format!("{dag_id} / {task_id}"),
        "dags",
        q.notice.clone(),
    )
    .await?;
    let want = parse_try(&q)?;
    let ti = find_ti(&state, &dag_id, &run_id, &task_id).await?;
    let tries = tasks::tries_of(&state.db.conn, ti.id).await?;
    let selected = match want {
        Some(n) => {
            tries
                .iter()
                .find(|t| t.try_number == n)
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "task \"{task_id}\" has no try {n} (it has {})",
                        tries.len()
                    ))
                })?
                .try_number
        }
        None => tries.last().map_or(0, |t| t.try_number),
    };
    let current = tries.iter().find(|t| t.try_number == selected);
    let log = match current {
        Some(_) if viewer.can_read_logs(&state).is_err() => {
            "(log in to read task logs: anonymous readers do not see them unless public_logs = true)".to_string()
        }
        Some(t) => tasks::read_log(&state.db.conn, t.id).await?,
        None => String::new(),
    };
    let follow = current.is_some_and(|t| t.state == crate::db::TryState::Running);
    layout.refresh = false;
    let base = task_href(&dag_id, &run_id, &task_id);
    let blocked_by =
        if tries.is_empty() && matches!(ti.state, TaskState::UpstreamFailed | TaskState::Skipped) {
            upstream_blockers(&state, &ti, &dag_id, &run_id).await?
        } else {
            Vec::new()
        };
    Ok(page(
        token,
        TaskPage {
            layout,
            dag_href: dag_href(&dag_id),
            run_href: run_href(&dag_id, &run_id),
            state: ti.state.to_string(),
            kind: ti.kind.clone(),
            tries: tries
                .iter()
                .map(|t| TryRow {
                    number: t.try_number,
                    href: format!("{base}?try={}", t.try_number),
                    state: t.state.to_string(),
                    started: time(t.started_at),
                    duration: t
                        .duration_ms
                        .map(duration_ms)
                        .unwrap_or_else(|| views::between(Some(t.started_at), t.ended_at)),
                    exit_code: t
                        .exit_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into()),
                    error: t.error.clone().unwrap_or_default(),
                    hostname: t.hostname.clone(),
                    selected: t.try_number == selected,
                })
                .collect(),
            selected,
            log,
            raw_href: format!("{base}/log?try={selected}"),
            follow,
            blocked_by,
            error: current.and_then(|t| t.error.clone()).unwrap_or_default(),
            exit_code: current
                .and_then(|t| t.exit_code)
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            hostname: current.map(|t| t.hostname.clone()).unwrap_or_default(),
            dag_id,
            run_id,
            task_id,
        },
    ))
}

/// The raw log of a try as text (download, and the log follower's source).
pub async fn raw_log(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((dag_id, run_id, task_id)): Path<(String, String, String)>,
    Query(q): Query<TryQuery>,
) -> Result<Response> {
    viewer.can_read_logs(&state)?;
    let want = parse_try(&q)?;
    let ti = find_ti(&state, &dag_id, &run_id, &task_id).await?;
    let tries = tasks::tries_of(&state.db.conn, ti.id).await?;
    let t = match want {
        Some(n) => tries.iter().find(|t| t.try_number == n),
        None => tries.last(),
    }
    .ok_or_else(|| Error::NotFound(format!("task \"{task_id}\" has no such try")))?;
    let text = tasks::read_log(&state.db.conn, t.id).await?;
    let name = format!("{dag_id}_{task_id}_try{}.log", t.try_number).replace(
        |c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '.' && c != '-',
        "_",
    );
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{name}\""),
            ),
            (
                header::HeaderName::from_static("x-weft-try-state"),
                t.state.to_string(),
            ),
        ],
        text,
    )
        .into_response())
}

// ---------------------------------------------------------------- dashboard

#[derive(Debug, Clone)]
pub struct RateRow {
    pub key: String,
    pub href: String,
    pub day: String,
    pub week: String,
    pub month: String,
    pub spark: String,
}

#[derive(Debug, Clone)]
pub struct SlowRow {
    pub dag_id: String,
    pub task_id: String,
    pub avg: String,
    pub max: String,
    pub tries: i64,
}

/// Latest and median of a lag, per DAG.
#[derive(Debug, Clone)]
pub struct LagRow {
    pub dag_id: String,
    pub href: String,
    pub latest: String,
    pub median: String,
    pub runs: usize,
}

fn lag_rows(lags: HashMap<String, Vec<f64>>) -> Vec<LagRow> {
    let mut rows: Vec<LagRow> = lags
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(dag_id, v)| {
            let mut sorted = v.clone();
            sorted.sort_by(|a, b| a.total_cmp(b));
            LagRow {
                href: dag_href(&dag_id),
                latest: views::lag(*v.last().unwrap_or(&0.0)),
                median: views::lag(sorted[sorted.len() / 2]),
                runs: v.len(),
                dag_id,
            }
        })
        .collect();
    rows.sort_by(|a, b| a.dag_id.cmp(&b.dag_id));
    rows
}

#[derive(Template, WebTemplate)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    pub freshness: Vec<LagRow>,
    pub turnaround: Vec<LagRow>,
    pub layout: Layout,
    pub dag_rates: Vec<RateRow>,
    pub kind_rates: Vec<RateRow>,
    pub running: i64,
    pub queued: i64,
    pub scheduled: i64,
    pub retrying: i64,
    pub slow: Vec<SlowRow>,
}

pub async fn dashboard(
    State(state): State<AppState>,
    viewer: Viewer,
    token: CsrfToken,
) -> Result<Response> {
    let mut layout = layout(&state, &viewer, &token, "Health".into(), "health", None).await?;
    layout.refresh = true;
    let now = Utc::now();
    let c = &state.db.conn;
    let windows = [
        now - Duration::hours(24),
        now - Duration::days(7),
        now - Duration::days(30),
    ];
    let mut by_dag = Vec::new();
    let mut by_kind = Vec::new();
    for since in windows {
        by_dag.push(stats::try_failure_by_dag(c, since).await?);
        by_kind.push(stats::try_failure_by_kind(c, since).await?);
    }
    let daily = stats::daily_try_failure(c, now - Duration::days(14)).await?;
    // The trend has one point per UTC day of the last 14, days without tries at 0.
    let days: Vec<String> = (0..14)
        .rev()
        .map(|d| (now - Duration::days(d)).format("%Y-%m-%d").to_string())
        .collect();
    let rate_rows = |maps: &[HashMap<String, stats::Rate>],
                     link: bool,
                     spark: &HashMap<String, Vec<(String, stats::Rate)>>| {
        let mut keys: Vec<String> = maps.iter().flat_map(|m| m.keys().cloned()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .map(|k| RateRow {
                href: if link { dag_href(&k) } else { String::new() },
                day: percent(maps[0].get(&k).and_then(|r| r.percent())),
                week: percent(maps[1].get(&k).and_then(|r| r.percent())),
                month: percent(maps[2].get(&k).and_then(|r| r.percent())),
                spark: match spark.get(&k) {
                    Some(v) => views::sparkline(
                        &days
                            .iter()
                            .map(|d| {
                                v.iter()
                                    .find(|(day, _)| day == d)
                                    .and_then(|(_, r)| r.percent())
                                    .unwrap_or(0.0)
                            })
                            .collect::<Vec<_>>(),
                    ),
                    None => String::new(),
                },
                key: k,
            })
            .collect::<Vec<_>>()
    };
    let dag_rates = rate_rows(&by_dag, true, &daily);
    let kind_rates = rate_rows(&by_kind, false, &HashMap::new());
    let live = stats::live_task_counts(c).await?;
    let slow = stats::slowest_tasks(c, now - Duration::days(7), 10)
        .await?
        .into_iter()
        .map(|s| SlowRow {
            avg: duration_ms(s.avg_ms as i64),
            max: duration_ms(s.max_ms),
            tries: s.tries,
            dag_id: s.dag_id,
            task_id: s.task_id,
        })
        .collect();
    use crate::kinds::{experiment, ingest, transform};
    let week = now - Duration::days(7);
    let freshness =
        lag_rows(stats::lags(c, transform::KIND.name, Some(ingest::KIND.name), week).await?);
    let turnaround = lag_rows(stats::lags(c, experiment::KIND.name, None, week).await?);
    Ok(page(
        token,
        DashboardPage {
            freshness,
            turnaround,
            layout,
            dag_rates,
            kind_rates,
            running: live.get(&TaskState::Running).copied().unwrap_or(0),
            queued: live.get(&TaskState::Queued).copied().unwrap_or(0),
            scheduled: live.get(&TaskState::Scheduled).copied().unwrap_or(0),
            retrying: live.get(&TaskState::UpForRetry).copied().unwrap_or(0),
            slow,
        },
    ))
}

// ---------------------------------------------------------------- import errors, pools, users

/// A file that does not load.
#[derive(Debug)]
pub struct ImportErrorRow {
    pub file: String,
    pub message: String,
    pub found: Time,
}

/// A pool: its slots and how many are in use.
#[derive(Debug)]
pub struct PoolRow {
    pub name: String,
    pub slots: i32,
    pub used: i64,
    pub description: String,
}

/// A hidden form field.
#[derive(Debug)]
pub struct HiddenField {
    pub name: String,
    pub value: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "import_errors.html")]
pub struct ImportErrorsPage {
    pub layout: Layout,
    pub errors: Vec<ImportErrorRow>,
}

pub async fn import_errors(
    State(state): State<AppState>,
    viewer: Viewer,
    token: CsrfToken,
) -> Result<Response> {
    let layout = layout(
        &state,
        &viewer,
        &token,
        "Import errors".into(),
        "dags",
        None,
    )
    .await?;
    let errors = dags::import_errors(&state.db.conn)
        .await?
        .into_iter()
        .map(|e| ImportErrorRow {
            file: e.fileloc,
            message: e.message,
            found: time(e.created_at),
        })
        .collect();
    Ok(page(token, ImportErrorsPage { layout, errors }))
}

#[derive(Template, WebTemplate)]
#[template(path = "pools.html")]
pub struct PoolsPage {
    pub layout: Layout,
    pub pools: Vec<PoolRow>,
}

pub async fn pools_page(
    State(state): State<AppState>,
    viewer: Viewer,
    token: CsrfToken,
    Query(q): Query<NoticeQuery>,
) -> Result<Response> {
    let layout = layout(&state, &viewer, &token, "Pools".into(), "pools", q.notice).await?;
    let used = stats::pool_usage(&state.db.conn).await?;
    let pools = dags::pools(&state.db.conn)
        .await?
        .into_iter()
        .map(|p| {
            let used = used.get(&p.name).copied().unwrap_or(0);
            PoolRow {
                name: p.name,
                slots: p.slots,
                used,
                description: p.description.unwrap_or_default(),
            }
        })
        .collect();
    Ok(page(token, PoolsPage { layout, pools }))
}

#[derive(Debug, Deserialize)]
pub struct PoolForm {
    pub authenticity_token: String,
    pub name: String,
    pub slots: String,
}

pub async fn pools_post(
    State(state): State<AppState>,
    viewer: Viewer,
    token: CsrfToken,
    Form(f): Form<PoolForm>,
) -> Result<Response> {
    super::auth::verify_csrf(&token, &viewer, Some(&f.authenticity_token))?;
    viewer.require(Role::Admin)?;
    let name = f.name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Error::BadRequest(format!(
            "pool name \"{name}\" may only use letters, digits, '_' and '-'"
        )));
    }
    let slots: u32 = f.slots.trim().parse().map_err(|_| {
        Error::BadRequest(format!("slots must be a whole number, got \"{}\"", f.slots))
    })?;
    commands::set_pool(&state.db, name, slots).await?;
    Ok(Redirect::to(&format!(
        "/pools?notice={}",
        enc(&format!("pool {name} now has {slots} slots"))
    ))
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "users.html")]
pub struct UsersPage {
    pub layout: Layout,
    pub users: Vec<UserRow>,
}

#[derive(Debug, Clone)]
pub struct UserRow {
    pub name: String,
    pub role: String,
    pub created: Time,
    pub last_login: Option<Time>,
    pub disabled: bool,
    pub tokens: Vec<TokenRow>,
}

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub name: String,
    pub scope: String,
    pub expires: Option<Time>,
    pub last_used: Option<Time>,
}

pub async fn users_page(
    State(state): State<AppState>,
    viewer: Viewer,
    token: CsrfToken,
    Query(q): Query<NoticeQuery>,
) -> Result<Response> {
    let layout = layout(&state, &viewer, &token, "Users".into(), "users", q.notice).await?;
    viewer.require(Role::Admin)?;
    let mut tokens: BTreeMap<i64, Vec<TokenRow>> = BTreeMap::new();
    for t in users::tokens(&state.db.conn, None).await? {
        tokens.entry(t.user_id).or_default().push(TokenRow {
            name: t.name,
            scope: t.scope,
            expires: views::opt_time(t.expires_at),
            last_used: views::opt_time(t.last_used_at),
        });
    }
    let users = users::list(&state.db.conn)
        .await?
        .into_iter()
        .map(|u| UserRow {
            tokens: tokens.remove(&u.id).unwrap_or_default(),
            name: u.username,
            role: u.role.to_string(),
            created: time(u.created_at),
            last_login: views::opt_time(u.last_login_at),
            disabled: u.disabled,
        })
        .collect();
    Ok(page(token, UsersPage { layout, users }))
}

#[derive(Debug, Deserialize)]
pub struct ManageUserForm {
    pub authenticity_token: String,
    pub user: String,
    /// disable, enable, delete, or revoke (with `token`).
    pub op: String,
    pub token: Option<String>,
}

/// Disables, enables or deletes a user, or revokes one of their API tokens (admin).
pub async fn users_manage(
    State(state): State<AppState>,
    viewer: Viewer,
    token: CsrfToken,
    Form(f): Form<ManageUserForm>,
) -> Result<Response> {
    super::auth::verify_csrf(&token, &viewer, Some(&f.authenticity_token))?;
    let me = viewer.require(Role::Admin)?;
    let user = accounts::find(&state.db, &f.user).await?;
    if user.id == me.id && matches!(f.op.as_str(), "disable" | "delete") {
        return Err(Error::BadRequest(
            "you cannot disable or delete yourself; ask another admin".into(),
        ));
    }
    let notice = match f.op.as_str() {
        "disable" => {
            accounts::set_disabled(&state.db, &user, true).await?;
            format!(
                "disabled {}: sessions ended, logins and tokens refused",
                user.username
            )
        }
        "enable" => {
            accounts::set_disabled(&state.db, &user, false).await?;
            format!("enabled {}", user.username)
        }
        "delete" => {
            accounts::delete_user(&state.db, &user).await?;
            format!("deleted {}", user.username)
        }
        "revoke" => {
            let name = f.token.as_deref().unwrap_or_default();
            accounts::revoke_token(&state.db, &user, name).await?;
            format!("revoked token \"{name}\" of {}", user.username)
        }
        other => {
            return Err(Error::BadRequest(format!(
                "unknown operation \"{other}\"; use disable, enable, delete or revoke"
            )));
        }
    };
    tracing::info!(admin = %me.username, user = %user.username, op = %f.op, "user changed");
    Ok(Redirect::to(&format!("/users?notice={}", enc(&notice))).into_response())
}

#[derive(Debug, Deserialize)]
pub struct UserForm {
    pub authenticity_token: String,
    pub username: String,
    pub password: String,
    pub role: String,
}

pub async fn users_post(
    State(state): State<AppState>,
    viewer: Viewer,
    token: CsrfToken,
    Form(f): Form<UserForm>,
) -> Result<Response> {
    super::auth::verify_csrf(&token, &viewer, Some(&f.authenticity_token))?;
    viewer.require(Role::Admin)?;
    let username = f.username.trim().to_string();
    let role = Role::parse(&f.role).ok_or_else(|| {
        Error::BadRequest(format!(
            "unknown role \"{}\"; use admin, operator or viewer",
            f.role
        ))
    })?;
    accounts::create_user(&state.db, &username, &f.password, role, Utc::now()).await?;
    Ok(Redirect::to(&format!(
        "/users?notice={}",
        enc(&format!("created {role} {username}"))
    ))
    .into_response())
}

// ---------------------------------------------------------------- login

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub layout: Layout,
    pub next: String,
    pub failed: bool,
    pub no_users: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    pub next: Option<String>,
    pub error: Option<String>,
}

pub async fn login_page(
    State(state): State<AppState>,
    token: CsrfToken,
    Query(q): Query<LoginQuery>,
) -> Result<Response> {
    let mut layout = layout(
        &state,
        &Viewer(None),
        &token,
        "Log in".into(),
        "login",
        None,
    )
    .await
    .or_else(|e| match e {
        // The login page is readable even when reading needs a login.
        Error::Unauthorized => Ok(Layout {
            title: "Log in".into(),
            nav: "login",
            user: None,
            role: String::new(),
            operator: false,
            admin: false,
            csrf: super::auth::csrf_token(&token, &Viewer(None))?,
            notice: None,
            import_errors: 0,
            refresh: false,
        }),
        other => Err(other),
    })?;
    layout.refresh = false;
    let no_users = users::count(&state.db.conn).await? == 0;
    Ok(page(
        token,
        LoginPage {
            layout,
            next: q.next.unwrap_or_else(|| "/dags".into()),
            failed: q.error.is_some(),
            no_users,
        },
    ))
}

// ---------------------------------------------------------------- confirm + actions

#[derive(Debug, Default, Deserialize, Clone)]
pub struct ActionQuery {
    pub action: Option<String>,
    pub dag: Option<String>,
    pub run: Option<String>,
    pub task: Option<String>,
    pub state: Option<String>,
    pub downstream: Option<String>,
    pub authenticity_token: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    pub layout: Layout,
    pub question: String,
    pub fields: Vec<HiddenField>,
    pub back: String,
}

/// A parsed operator action.
enum Action {
    Pause(String, bool),
    Clear {
        dag: String,
        run: String,
        task: Option<String>,
        downstream: bool,
    },
    MarkTask {
        dag: String,
        run: String,
        task: String,
        state: TaskState,
    },
    MarkRun {
        dag: String,
        run: String,
        state: RunState,
    },
}

/// `state=success` (true) or `state=failed` (false) of a mark action on `what`.
fn marked_success(q: &ActionQuery, what: &str) -> Result<bool> {
    match q.state.as_deref() {
        Some("success") => Ok(true),
        Some("failed") => Ok(false),
        other => Err(Error::BadRequest(format!(
            "a {what} can be marked success or failed, not {:?}",
            other.unwrap_or("")
        ))),
    }
}

fn parse_action(q: &ActionQuery) -> Result<Action> {
    let need = |v: &Option<String>, name: &str| {
        v.clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::BadRequest(format!("missing \"{name}\"")))
    };
    let action = need(&q.action, "action")?;
    let dag = need(&q.dag, "dag")?;
    Ok(match action.as_str() {
        "pause" => Action::Pause(dag, true),
        "unpause" => Action::Pause(dag, false),
        "clear" => Action::Clear {
            dag,
            run: need(&q.run, "run")?,
            task: q.task.clone().filter(|t| !t.is_empty()),
            downstream: q.downstream.as_deref() == Some("1"),
        },
        "mark_task" => {
            let state = if marked_success(q, "task")? {
                TaskState::Success
            } else {
                TaskState::Failed
            };
            Action::MarkTask {
                dag,
                run: need(&q.run, "run")?,
                task: need(&q.task, "task")?,
                state,
            }
        }
        "mark_run" => {
            let state = if marked_success(q, "run")? {
                RunState::Success
            } else {
                RunState::Failed
            };
            Action::MarkRun {
                dag,
                run: need(&q.run, "run")?,
                state,
            }
        }
        other => {
            return Err(Error::BadRequest(format!(
                "unknown action \"{other}\"; use pause, unpause, clear, mark_task or mark_run"
            )));
        }
    })
}

impl Action {
    fn question(&self) -> String {
        match self {
            Action::Pause(d, true) => format!(
                "Pause dag \"{d}\"? It will create and start no runs until unpaused; running tries finish."
            ),
            Action::Pause(d, false) => {
                format!("Unpause dag \"{d}\"? Due runs will be created and started.")
            }
            Action::Clear {
                run, task: None, ..
            } => format!("Clear every task of run \"{run}\" so the whole run runs again?"),
            Action::Clear {
                run,
                task: Some(t),
                downstream: false,
                ..
            } => format!("Clear task \"{t}\" of run \"{run}\" so it runs again?"),
            Action::Clear {
                run,
                task: Some(t),
                downstream: true,
                ..
            } => format!("Clear task \"{t}\" and everything downstream of it in run \"{run}\"?"),
            Action::MarkTask {
                run, task, state, ..
            } => format!(
                "Mark task \"{task}\" of run \"{run}\" as {state}? A running try is stopped."
            ),
            Action::MarkRun {
                run,
                state: RunState::Failed,
                ..
            } => format!(
                "Mark run \"{run}\" failed? Running tries are stopped and tasks that have not run are skipped."
            ),
            Action::MarkRun { run, state, .. } => {
                format!("Mark run \"{run}\" and all its unfinished tasks as {state}?")
            }
        }
    }

    fn back(&self) -> String {
        match self {
            Action::Pause(d, _) => dag_href(d),
            Action::Clear { dag, run, .. }
            | Action::MarkTask { dag, run, .. }
            | Action::MarkRun { dag, run, .. } => run_href(dag, run),
        }
    }
}

pub async fn confirm_page(
    State(state): State<AppState>,
    viewer: Viewer,
    token: CsrfToken,
    Query(q): Query<ActionQuery>,
) -> Result<Response> {
    let layout = layout(&state, &viewer, &token, "Confirm".into(), "dags", None).await?;
    if viewer.0.is_none() {
        let next = format!("/confirm?{}", serde_urlencoded_query(&q));
        return Ok(Redirect::to(&format!("/login?next={}", enc(&next))).into_response());
    }
    viewer.require(Role::Operator)?;
    let action = parse_action(&q)?;
    let mut fields = Vec::new();
    for (k, v) in [
        ("action", &q.action),
        ("dag", &q.dag),
        ("run", &q.run),
        ("task", &q.task),
        ("state", &q.state),
        ("downstream", &q.downstream),
    ] {
        if let Some(v) = v {
            fields.push(HiddenField {
                name: k.to_string(),
                value: v.clone(),
            });
        }
    }
    Ok(page(
        token,
        ConfirmPage {
            layout,
            question: action.question(),
            fields,
            back: action.back(),
        },
    ))
}

fn serde_urlencoded_query(q: &ActionQuery) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("action", &q.action),
        ("dag", &q.dag),
        ("run", &q.run),
        ("task", &q.task),
        ("state", &q.state),
        ("downstream", &q.downstream),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k}={}", enc(v)));
        }
    }
    parts.join("&")
}

pub async fn action_post(
    State(state): State<AppState>,
    viewer: Viewer,
    token: CsrfToken,
    Form(q): Form<ActionQuery>,
) -> Result<Response> {
    super::auth::verify_csrf(&token, &viewer, q.authenticity_token.as_ref())?;
    viewer.require(Role::Operator)?;
    let action = parse_action(&q)?;
    let now = Utc::now();
    let back = action.back();
    let notice = match &action {
        Action::Pause(d, p) => {
            commands::set_paused(&state.db, d, *p, None).await?;
            format!("dag {d} {}", if *p { "paused" } else { "unpaused" })
        }
        Action::Clear {
            dag,
            run,
            task,
            downstream,
        } => {
            let tasks: Vec<String> = task.iter().cloned().collect();
            let cleared = commands::clear(
                &state.db,
                &state.registry,
                dag,
                run,
                &tasks,
                *downstream,
                now,
            )
            .await?;
            if cleared.is_empty() {
                "nothing was cleared (queued or running tasks are left alone)".to_string()
            } else {
                format!("cleared {}", cleared.join(", "))
            }
        }
        Action::MarkTask {
            dag,
            run,
            task,
            state: s,
        } => {
            commands::mark_task(&state.db, &state.registry, dag, run, task, *s, now).await?;
            format!("marked {task} {s}")
        }
        Action::MarkRun { dag, run, state: s } => {
            let by = viewer
                .0
                .as_ref()
                .map_or("an operator", |u| u.username.as_str());
            commands::mark_run(&state.db, &state.registry, dag, run, *s, by, now).await?;
            format!("marked run {s}")
        }
    };
    super::stop_marked(&state).await;
    Ok(Redirect::to(&format!("{back}?notice={}", enc(&notice))).into_response())
}

pub async fn root() -> Redirect {
    Redirect::to("/dags")
}
