//! The DAG list, a DAG's page (grid, graph, durations, runs, versions, source) and the
//! trigger form.

use axum::Router;
use axum::routing::get;

use super::*;

/// The routes of these pages.
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/dags", get(dags_page))
        .route("/dags/{dag_id}", get(dag_page))
        .route(
            "/dags/{dag_id}/trigger",
            get(trigger_form).post(trigger_post),
        )
}

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
    pub recent: Vec<Dot>,
    pub run_fail: String,
    pub try_fail: String,
    pub paused: bool,
    pub tags: Vec<String>,
    pub pause_href: String,
    pub owner: String,
    /// The latest run: when it started (or was created), its state and link.
    pub last_run: Option<LastRun>,
}

/// A DAG's latest run as the DAG list shows it.
#[derive(Debug, Clone)]
pub struct LastRun {
    pub at: Time,
    pub state: String,
    pub href: String,
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
    pub owner: String,
    pub all_owners: Vec<String>,
    pub last_state: String,
    pub paused: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct DagsQuery {
    pub q: Option<String>,
    pub tag: Option<String>,
    /// Only DAGs of this owner.
    pub owner: Option<String>,
    /// Only DAGs whose latest run is in this state (`none`: no run yet).
    pub state: Option<String>,
    /// `yes` or `no`: only paused or only active DAGs.
    pub paused: Option<String>,
    pub notice: Option<String>,
}

pub async fn dags_page(
    State(state): State<AppState>,
    pg: Page,
    Query(q): Query<DagsQuery>,
) -> Result<Response> {
    let layout = pg
        .layout(&state, "DAGs".into(), "dags", q.notice.clone())
        .await?;
    let now = Utc::now();
    let db_dags: HashMap<String, crate::db::rows::DagRow> = dags::list_dags(&state.db.read)
        .await?
        .into_iter()
        .map(|d| (d.dag_id.clone(), d))
        .collect();
    let mut recent: HashMap<String, Vec<Run>> = HashMap::new();
    for r in stats::recent_runs(&state.db.read, 10).await? {
        recent.entry(r.dag_id.clone()).or_default().push(r);
    }
    let figures = state
        .figures
        .dag_list
        .get(|| crate::web::figures::DagListFigures::compute(&state.db, now))
        .await?;
    let (run_rates, try_rates) = (&figures.run_rates, &figures.try_rates);
    let last_sched = stats::latest_scheduled_by_dag(&state.db.read).await?;
    let search = q.q.clone().unwrap_or_default().to_lowercase();
    let tag = q.tag.clone().unwrap_or_default();
    let owner = q.owner.clone().unwrap_or_default();
    let last_state = q.state.clone().unwrap_or_default();
    let paused_filter = q.paused.clone().unwrap_or_default();
    if !matches!(paused_filter.as_str(), "" | "yes" | "no") {
        return Err(Error::BadRequest(format!(
            "paused must be yes or no, not \"{paused_filter}\""
        )));
    }
    if !last_state.is_empty() && last_state != "none" && RunState::parse(&last_state).is_none() {
        return Err(Error::BadRequest(format!(
            "state must be a run state (queued, running, success, failed) or none, not \"{last_state}\""
        )));
    }
    let mut all_owners = std::collections::BTreeSet::new();
    let mut all_tags = std::collections::BTreeSet::new();
    let all = state.registry.all();
    let total = all.len();
    let mut rows = Vec::new();
    for (dag, _) in all {
        all_tags.extend(dag.tags.iter().cloned());
        let dag_owner = dag.owner.clone().unwrap_or_default();
        if !dag_owner.is_empty() {
            all_owners.insert(dag_owner.clone());
        }
        if !owner.is_empty() && dag_owner != owner {
            continue;
        }
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
        if (paused_filter == "yes" && !paused) || (paused_filter == "no" && paused) {
            continue;
        }
        let runs = recent.remove(&dag.dag_id).unwrap_or_default();
        let latest = runs.first();
        let latest_state = latest.map_or("none".to_string(), |r| r.state.to_string());
        if !last_state.is_empty() && latest_state != last_state {
            continue;
        }
        let last_run = latest.map(|r| LastRun {
            at: time(r.started_at.unwrap_or(r.created_at)),
            state: r.state.to_string(),
            href: run_href(&r.dag_id, &r.run_id),
        });
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
            .map(|t| views::time_in(t, dag.timezone))
        };
        rows.push(DagRow {
            href: dag_href(&dag.dag_id),
            description: dag.description.clone().unwrap_or_default(),
            schedule: dag.schedule.as_str().to_string(),
            schedule_human: dag.schedule.describe(),
            timezone: dag.timezone.name().to_string(),
            next_run,
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
            owner: dag_owner,
            last_run,
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
    Ok(pg.render(DagsPage {
        layout,
        rows,
        q: q.q.unwrap_or_default(),
        tag,
        all_tags: all_tags.into_iter().collect(),
        total,
        owner,
        all_owners: all_owners.into_iter().collect(),
        last_state,
        paused: paused_filter,
    }))
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

/// A run's column head in the grid: its state, a bar as tall as its duration is long
/// (relative to the longest shown), and its dates on hover.
#[derive(Debug, Clone)]
pub struct GridRun {
    pub class: String,
    pub href: String,
    pub title: String,
    /// Bar height in pixels (0..=40).
    pub bar: i64,
}

/// A DAG's tasks in the order its pages list them: by depth (roots first), then as
/// they are written in the file — a fan-out reads t00, t01, ... t11.
pub fn display_order(dag: &Dag) -> Vec<usize> {
    let mut depth = vec![0usize; dag.tasks.len()];
    for &i in &dag.topo_order {
        for up in &dag.tasks[i].depends_on {
            if let Some(u) = dag.task_index(up) {
                depth[i] = depth[i].max(depth[u] + 1);
            }
        }
    }
    let mut order: Vec<usize> = (0..dag.tasks.len()).collect();
    order.sort_by_key(|&i| (depth[i], i));
    order
}

/// The page of the DAG page's grid (`?runs=N`, 1 = the newest 25 runs).
#[derive(Debug, Default, Deserialize)]
pub struct DagPageQuery {
    pub notice: Option<String>,
    pub runs: Option<String>,
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
    pub grid_runs: Vec<GridRun>,
    pub grid: Vec<GridRow>,
    /// Links to older and newer runs of the grid (25 a page).
    pub older: Option<String>,
    pub newer: Option<String>,
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

/// The grid's column heads: duration bars scaled to the longest run shown, dates in
/// the DAG's zone on hover.
fn grid_runs(dag: &Dag, runs: &[Run]) -> Vec<GridRun> {
    let ms = |r: &Run| match (r.started_at, r.ended_at) {
        (Some(s), e) => Some((e.unwrap_or_else(Utc::now) - s).num_milliseconds().max(0)),
        _ => None,
    };
    let longest = runs.iter().filter_map(ms).max().unwrap_or(0).max(1);
    runs.iter()
        .map(|r| {
            let took = ms(r);
            GridRun {
                class: format!("s-{}", r.state),
                href: run_href(&dag.dag_id, &r.run_id),
                title: format!(
                    "{} · {} · logical date {} · {}",
                    r.run_id,
                    r.state,
                    views::time_in(r.logical_date, dag.timezone).text,
                    views::between(r.started_at, r.ended_at)
                ),
                bar: took.map_or(0, |t| (t * 40 / longest).max(2)),
            }
        })
        .collect()
}

pub async fn dag_page(
    State(state): State<AppState>,
    pg: Page,
    Path(dag_id): Path<String>,
    Query(q): Query<DagPageQuery>,
) -> Result<Response> {
    const PER_PAGE: u64 = 25;
    let page = super::page_number(q.runs.as_deref(), "runs", 100_000)?;
    let mut layout = pg.layout(&state, dag_id.clone(), "dags", q.notice).await?;
    // Older pages do not change: only the newest refreshes itself.
    layout.refresh = page == 1;
    let (dag, _) = known_dag(&state, &dag_id)?;
    let paused = dags::get_dag(&state.db.read, &dag_id)
        .await?
        .is_some_and(|d| d.is_paused);
    let mut recent = runs::list_runs(
        &state.db.read,
        &RunFilter {
            dag_id: Some(dag_id.clone()),
            limit: PER_PAGE + 1,
            offset: (page - 1) * PER_PAGE,
            ..Default::default()
        },
    )
    .await?;
    let has_older = recent.len() as u64 > PER_PAGE;
    recent.truncate(PER_PAGE as usize);
    recent.reverse();
    let page_link = |p: u64| format!("{}?runs={p}#grid", dag_href(&dag_id));
    let older = has_older.then(|| page_link(page + 1));
    let newer = (page > 1).then(|| page_link(page - 1));
    let ids: Vec<i64> = recent.iter().map(|r| r.id).collect();
    let tis = tasks::of_runs(&state.db.read, &ids).await?;
    let mut by_cell: HashMap<(i64, &str), &TaskInstance> = HashMap::new();
    for t in &tis {
        by_cell.insert((t.dag_run_id, t.task_id.as_str()), t);
    }
    let grid = display_order(&dag)
        .into_iter()
        .map(|i| {
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
    let versions = dags::versions_of(&state.db.read, &dag_id)
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
    Ok(pg.render(DagPage {
        layout,
        insights: insight_links(&dag),
        grid_runs: grid_runs(&dag, &recent),
        grid,
        older,
        newer,
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
    }))
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
    /// What the conf box held (kept when the form comes back with an error).
    pub conf: String,
    /// The logical date asked for, as typed (empty: now).
    pub logical_date: String,
    pub timezone: String,
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
    pg: Page,
    Path(dag_id): Path<String>,
) -> Result<Response> {
    let layout = pg
        .layout(&state, format!("Trigger {dag_id}"), "dags", None)
        .await?;
    pg.viewer.require(Role::Operator)?;
    let (dag, _) = known_dag(&state, &dag_id)?;
    let fields = param_fields(&dag, &BTreeMap::new());
    Ok(pg.render(TriggerPage {
        layout,
        action: format!("{}/trigger", dag_href(&dag_id)),
        dag_id,
        fields,
        conf: String::new(),
        logical_date: String::new(),
        timezone: dag.timezone.name().to_string(),
        error: String::new(),
    }))
}

pub async fn trigger_post(
    State(state): State<AppState>,
    pg: Page,
    Path(dag_id): Path<String>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Result<Response> {
    crate::web::auth::verify_csrf(&pg.token, &pg.viewer, form.get("authenticity_token"))?;
    pg.viewer.require(Role::Operator)?;
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
                    pg,
                    &dag,
                    &form,
                    format!("conf is not valid JSON: {e}"),
                )
                .await;
            }
        },
        None => serde_json::Value::Null,
    };
    // A logical date in the DAG's time zone (a date, a local time, or RFC 3339).
    let logical = match form
        .get("logical_date")
        .map(|d| d.trim())
        .filter(|d| !d.is_empty())
    {
        Some(d) => match crate::dag::parse_datetime(d, dag.timezone) {
            Ok(t) => Some(t),
            Err(e) => {
                return trigger_error(&state, pg, &dag, &form, format!("logical date: {e}")).await;
            }
        },
        None => None,
    };
    match commands::trigger(&state.db, &dag, vid, &params, conf, logical, Utc::now()).await {
        Ok(run) => {
            if let Some(e) = &state.engine {
                e.wake();
            }
            let detail = format!(
                "logical date {}",
                crate::dag::template::rfc3339(run.logical_date)
            );
            let e = super::actions::entry("trigger", &dag_id, Some(&run.run_id), None, detail);
            pg.audit(&state, e).await;
            let notice = format!("created run {}", run.run_id);
            Ok(Redirect::to(&format!(
                "{}?notice={}",
                run_href(&dag_id, &run.run_id),
                enc(&notice)
            ))
            .into_response())
        }
        Err(commands::CommandError::Invalid(m)) => trigger_error(&state, pg, &dag, &form, m).await,
        Err(e) => Err(e.into()),
    }
}

async fn trigger_error(
    state: &AppState,
    pg: Page,
    dag: &Dag,
    form: &BTreeMap<String, String>,
    error: String,
) -> Result<Response> {
    let layout = pg
        .layout(state, format!("Trigger {}", dag.dag_id), "dags", None)
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
        conf: form.get("conf").cloned().unwrap_or_default(),
        logical_date: form.get("logical_date").cloned().unwrap_or_default(),
        timezone: dag.timezone.name().to_string(),
        error,
    };
    Ok((axum::http::StatusCode::BAD_REQUEST, pg.render(t)).into_response())
}

// ---------------------------------------------------------------- run
