//! A run's page (its tasks and Gantt), a task instance's page (tries, log, blockers) and
//! the raw log.

use axum::Router;
use axum::routing::get;

use super::*;
use crate::db::audit;

/// The routes of these pages.
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/dags/{dag_id}/runs/{run_id}", get(run_page))
        .route(
            "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}",
            get(task_page),
        )
        .route(
            "/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/log",
            get(raw_log),
        )
}

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
    pub duration: String,
    pub params: String,
    pub conf: String,
    pub rows: Vec<TiRow>,
    pub gantt: Chart,
    pub actions: Vec<Link>,
    pub note: String,
    /// What operators did to this run (the audit log), newest first.
    pub history: Vec<AuditRow>,
}

/// An entry of the audit log as the pages show it.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub at: Time,
    pub actor: String,
    pub source: String,
    pub client: String,
    pub action: String,
    pub dag_id: String,
    pub dag_href: String,
    pub run_id: String,
    pub run_href: String,
    pub task_id: String,
    pub detail: String,
}

impl AuditRow {
    pub fn of(e: &crate::db::rows::AuditEntry) -> AuditRow {
        let dag_id = e.dag_id.clone().unwrap_or_default();
        let run_id = e.run_id.clone().unwrap_or_default();
        AuditRow {
            at: time(e.at),
            actor: e.actor.clone(),
            source: e.source.clone(),
            client: e.client.clone().unwrap_or_default(),
            action: e.action.clone(),
            dag_href: if dag_id.is_empty() {
                String::new()
            } else {
                dag_href(&dag_id)
            },
            run_href: if run_id.is_empty() {
                String::new()
            } else {
                run_href(&dag_id, &run_id)
            },
            dag_id,
            run_id,
            task_id: e.task_id.clone().unwrap_or_default(),
            detail: e.detail.clone(),
        }
    }
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
    pg: Page,
    Path((dag_id, run_id)): Path<(String, String)>,
    Query(q): Query<NoticeQuery>,
) -> Result<Response> {
    let mut layout = pg
        .layout(&state, format!("{dag_id} / {run_id}"), "dags", q.notice)
        .await?;
    let run = runs::find_run(&state.db.read, &dag_id, &run_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("dag \"{dag_id}\" has no run \"{run_id}\"")))?;
    layout.refresh = !run.state.is_finished();
    let dag = state
        .registry
        .version(&state.db, run.dag_version_id)
        .await?;
    let mut tis = tasks::of_run(&state.db.read, run.id).await?;
    if let Some(d) = &dag {
        let order: HashMap<&str, usize> = super::dag::display_order(d)
            .into_iter()
            .enumerate()
            .map(|(k, i)| (d.tasks[i].task_id.as_str(), k))
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
            success_href: confirm_href("mark_task", &dag_id, &run_id, &t.task_id, "&state=success"),
            failed_href: confirm_href("mark_task", &dag_id, &run_id, &t.task_id, "&state=failed"),
            task_id: t.task_id.clone(),
        })
        .collect();
    // Every try of every task, each on its task's row.
    let ids: Vec<i64> = tis.iter().map(|t| t.id).collect();
    let mut tries_by_ti: HashMap<i64, Vec<views::GanttTry>> = HashMap::new();
    for tr in tasks::tries_of_many(&state.db.read, &ids).await? {
        let href = format!(
            "{}?try={}",
            task_href(&dag_id, &run_id, &tr.task_id),
            tr.try_number
        );
        tries_by_ti.entry(tr.task_instance_id).or_default().push((
            tr.try_number,
            format!("s-{}", tr.state),
            tr.started_at,
            tr.ended_at,
            href,
        ));
    }
    let gantt_rows: Vec<views::GanttRow> = tis
        .iter()
        .map(|t| views::GanttRow {
            task: t.task_id.clone(),
            queued: t.queued_at.zip(t.started_at),
            tries: tries_by_ti.remove(&t.id).unwrap_or_default(),
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
    let filter = audit::Filter {
        dag_id: Some(dag_id.clone()),
        run_id: Some(run_id.clone()),
        ..Default::default()
    };
    let history = audit::list(&state.db.read, &filter, 50, 0)
        .await?
        .0
        .iter()
        .map(AuditRow::of)
        .collect();
    Ok(pg.render(RunPage {
        layout,
        note: run.note.clone().unwrap_or_default(),
        history,
        dag_href: dag_href(&dag_id),
        state: run.state.to_string(),
        run_type: run.run_type.to_string(),
        logical: time(run.logical_date),
        interval_start: time(run.data_interval_start),
        interval_end: time(run.data_interval_end),
        duration: views::between(run.started_at, run.ended_at),
        params: pretty(&run.params),
        conf: pretty(&run.conf),
        rows,
        gantt: views::gantt(&gantt_rows, run.started_at),
        actions,
        dag_id,
        run_id,
    }))
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
    pub note: String,
    /// The log search and what it found ("3 of 120 lines contain ...").
    pub search: String,
    pub matched: Option<String>,
    /// The task's templates as the selected try renders them: (field, text, an error).
    pub rendered: Vec<(String, String, bool)>,
}

/// The templated fields of `task` of `dag` (its kind's, then its `env`), rendered with
/// the variables of try `try_number` in `run`, secrets redacted. An error shows in place
/// of the text.
fn rendered_templates(
    state: &AppState,
    run: &Run,
    dag: &Dag,
    task: &crate::dag::Task,
    try_number: i32,
) -> Vec<(String, String, bool)> {
    let params: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&run.params).unwrap_or_default();
    let mut ctx = crate::dag::template::TemplateContext::new(
        &dag.dag_id,
        &run.run_id,
        &task.task_id,
        try_number.max(1),
        run.data_interval_start,
        run.data_interval_end,
        dag.timezone,
        params,
    );
    if let Some(e) = &state.engine {
        ctx = ctx.with_base_url(e.shared.base_url());
    }
    let secrets = state.config.secrets();
    let plain = crate::dag::template::Quoting::Plain;
    let env = task
        .env
        .iter()
        .map(|(k, v)| (format!("env {k}"), v.as_str(), plain));
    let fields = task
        .spec
        .templates()
        .into_iter()
        .map(|(n, t, q)| (n.to_string(), t, q));
    fields
        .chain(env)
        .map(
            |(name, text, quoting)| match ctx.render_for(text, quoting) {
                Ok(r) => (name, crate::config::redact(&r, &secrets), false),
                Err(e) => (name, format!("cannot be rendered: {e}"), true),
            },
        )
        .collect()
}

/// The lines of `log` that contain `needle` (case-insensitive), each with its line
/// number, and how many lines the log has.
fn grep(log: &str, needle: &str) -> (String, usize) {
    let needle = needle.to_lowercase();
    let mut out = String::new();
    let mut total = 0;
    for (i, line) in log.lines().enumerate() {
        total += 1;
        if line.to_lowercase().contains(&needle) {
            out.push_str(&format!("{:>6}  {line}\n", i + 1));
        }
    }
    (out, total)
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
    /// Show only the log lines containing this (case-insensitive).
    pub q: Option<String>,
}

/// The upstream tasks of `task` (of the run's DAG version) that failed, were skipped
/// or could not run: why it did not run.
async fn upstream_blockers(
    state: &AppState,
    run: &Run,
    task: &crate::dag::Task,
) -> Result<Vec<UpstreamRow>> {
    let states: BTreeMap<String, TaskState> = tasks::states_of_run(&state.db.read, run.id)
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
                href: task_href(&run.dag_id, &run.run_id, up),
                state: s.to_string(),
            })
        })
        .collect())
}

/// A run and one of its task instances, by name.
async fn find_ti(
    state: &AppState,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
) -> Result<(Run, TaskInstance)> {
    let run = runs::find_run(&state.db.read, dag_id, run_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("dag \"{dag_id}\" has no run \"{run_id}\"")))?;
    let tis = tasks::of_run(&state.db.read, run.id).await?;
    let names: Vec<String> = tis.iter().map(|t| t.task_id.clone()).collect();
    let ti = tis
        .into_iter()
        .find(|t| t.task_id == task_id)
        .ok_or_else(|| {
            let hint = crate::dag::diag::did_you_mean(task_id, names.iter().map(String::as_str));
            Error::NotFound(format!("run \"{run_id}\" has no task \"{task_id}\"{hint}"))
        })?;
    Ok((run, ti))
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
    pg: Page,
    Path((dag_id, run_id, task_id)): Path<(String, String, String)>,
    Query(q): Query<TryQuery>,
) -> Result<Response> {
    let mut layout = pg
        .layout(
            &state,
            format!("{dag_id} / {task_id}"),
            "dags",
            q.notice.clone(),
        )
        .await?;
    let want = parse_try(&q)?;
    let (run, ti) = find_ti(&state, &dag_id, &run_id, &task_id).await?;
    let tries = tasks::tries_of(&state.db.read, ti.id).await?;
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
        Some(_) if pg.viewer.can_read_logs(&state).is_err() => {
            "(log in to read task logs: anonymous readers do not see them unless public_logs = true)".to_string()
        }
        Some(t) => tasks::read_log(&state.db.read, t.id).await?,
        None => String::new(),
    };
    let search =
        q.q.as_deref()
            .map(str::trim)
            .unwrap_or_default()
            .to_string();
    let (log, matched) = if search.is_empty() {
        (log, None)
    } else {
        let (shown, total) = grep(&log, &search);
        let n = shown.lines().count();
        (
            shown,
            Some(format!("{n} of {total} lines contain \"{search}\"")),
        )
    };
    let follow =
        search.is_empty() && current.is_some_and(|t| t.state == crate::db::TryState::Running);
    // Rendered templates hold what the log holds (the command line): for log readers.
    // A task that never ran says which upstream stopped it. Both read the run's version
    // of the task, loaded once.
    let shows_templates = pg.viewer.can_read_logs(&state).is_ok();
    let blocked =
        tries.is_empty() && matches!(ti.state, TaskState::UpstreamFailed | TaskState::Skipped);
    let dag = if shows_templates || blocked {
        state
            .registry
            .version(&state.db, run.dag_version_id)
            .await?
    } else {
        None
    };
    let task = dag.as_deref().and_then(|d| Some((d, d.task(&task_id)?)));
    let rendered = match task {
        Some((d, t)) if shows_templates => rendered_templates(&state, &run, d, t, selected),
        _ => Vec::new(),
    };
    layout.refresh = false;
    let base = task_href(&dag_id, &run_id, &task_id);
    let blocked_by = match task {
        Some((_, t)) if blocked => upstream_blockers(&state, &run, t).await?,
        _ => Vec::new(),
    };
    Ok(pg.render(TaskPage {
        layout,
        note: ti.note.clone().unwrap_or_default(),
        search,
        matched,
        rendered,
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
    }))
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
    let (_, ti) = find_ti(&state, &dag_id, &run_id, &task_id).await?;
    let tries = tasks::tries_of(&state.db.read, ti.id).await?;
    let t = match want {
        Some(n) => tries.iter().find(|t| t.try_number == n),
        None => tries.last(),
    }
    .ok_or_else(|| Error::NotFound(format!("task \"{task_id}\" has no such try")))?;
    let text = tasks::read_log(&state.db.read, t.id).await?;
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
