//! The Health page: failure rates by DAG and kind, the slowest tasks, freshness and
//! experiment turnaround, what is running now.

use axum::Router;
use axum::routing::get;

use super::*;

/// The routes of these pages.
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(dashboard))
        .route("/task-instances", get(task_instances))
}

/// Filters of the task instance list.
#[derive(Debug, Default, Deserialize, Clone)]
pub struct BrowseQuery {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub dag: String,
    #[serde(default)]
    pub task: String,
    /// The next page: task instances older than this id.
    pub before: Option<String>,
}

/// A task instance in the list.
#[derive(Debug, Clone)]
pub struct BrowseRow {
    pub dag_id: String,
    pub dag_href: String,
    pub run_id: String,
    pub run_href: String,
    pub task_id: String,
    pub href: String,
    pub state: String,
    pub tries: String,
    pub started: Option<Time>,
    pub duration: String,
    pub error: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "task_instances.html")]
pub struct BrowsePage {
    pub layout: Layout,
    pub rows: Vec<BrowseRow>,
    pub filter: BrowseQuery,
    pub states: Vec<&'static str>,
    pub older: Option<String>,
}

/// Task instances across every DAG, newest first, 50 a page, by state, DAG and task:
/// what the Health page's counts link to.
pub async fn task_instances(
    State(state): State<AppState>,
    pg: Page,
    Query(q): Query<BrowseQuery>,
) -> Result<Response> {
    const PER_PAGE: u64 = 50;
    let layout = pg
        .layout(&state, "Task instances".into(), "health", None)
        .await?;
    let wanted = q.state.trim();
    let task_state = match wanted {
        "" => None,
        s => Some(TaskState::parse(s).ok_or_else(|| {
            Error::BadRequest(format!("state \"{s}\" is not a task instance state"))
        })?),
    };
    let before = match q.before.as_deref().map(str::trim).filter(|b| !b.is_empty()) {
        None => None,
        Some(b) => Some(b.parse::<i64>().map_err(|_| {
            Error::BadRequest(format!("before must be a task instance id, got \"{b}\""))
        })?),
    };
    let text = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
    let filter = tasks::Browse {
        state: task_state,
        dag_id: text(&q.dag),
        task_id: text(&q.task),
        before,
        limit: PER_PAGE + 1,
    };
    let mut found = tasks::browse(&state.db.read, &filter).await?;
    let more = found.len() as u64 > PER_PAGE;
    found.truncate(PER_PAGE as usize);
    let older = more.then(|| {
        let last = found.last().map_or(0, |(t, _)| t.id);
        format!(
            "/task-instances?state={}&dag={}&task={}&before={last}",
            enc(&q.state),
            enc(&q.dag),
            enc(&q.task)
        )
    });
    let rows = found
        .into_iter()
        .map(|(t, run_id)| BrowseRow {
            dag_href: dag_href(&t.dag_id),
            run_href: run_href(&t.dag_id, &run_id),
            href: task_href(&t.dag_id, &run_id, &t.task_id),
            state: t.state.to_string(),
            tries: format!("{}/{}", t.try_number, t.max_tries),
            started: views::opt_time(t.started_at),
            duration: t
                .duration_ms
                .map(duration_ms)
                .unwrap_or_else(|| views::between(t.started_at, t.ended_at)),
            error: t.error.clone().unwrap_or_default(),
            dag_id: t.dag_id,
            task_id: t.task_id,
            run_id,
        })
        .collect();
    Ok(pg.render(BrowsePage {
        layout,
        rows,
        states: TaskState::ALL.iter().map(|s| s.as_str()).collect(),
        filter: q,
        older,
    }))
}

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

/// A scheduler or worker, as the Health page lists it.
#[derive(Debug, Clone)]
pub struct ProcessRow {
    pub id: String,
    pub role: String,
    pub leader: bool,
    pub condition: &'static str,
    /// The state colour: alive as success, silent as up for retry, stopped as removed.
    pub class: &'static str,
    pub heartbeat: String,
    pub load: String,
    pub queues: String,
    pub host: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    pub processes: Vec<ProcessRow>,
    pub queues: Vec<stats::QueueDepth>,
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

pub async fn dashboard(State(state): State<AppState>, pg: Page) -> Result<Response> {
    let mut layout = pg.layout(&state, "Health".into(), "health", None).await?;
    layout.refresh = true;
    let now = Utc::now();
    let c = &state.db.read;
    let figures = state
        .figures
        .health
        .get(|| crate::web::figures::HealthFigures::compute(&state.db, now))
        .await?;
    let (by_dag, by_kind, daily) = (&figures.by_dag, &figures.by_kind, &figures.daily);
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
    let dag_rates = rate_rows(by_dag, true, daily);
    let kind_rates = rate_rows(by_kind, false, &HashMap::new());
    let live = stats::live_task_counts(c).await?;
    let deployment = stats::deployment(c, now).await?;
    let leader = deployment.leader.map(|(h, _)| h);
    let processes = deployment
        .processes
        .iter()
        .map(|p| {
            let condition = p.condition(now, state.config.heartbeat_timeout);
            ProcessRow {
                leader: leader.as_deref() == Some(p.id.as_str()),
                class: match condition {
                    "alive" => "s-success",
                    "silent" => "s-up_for_retry",
                    _ => "s-removed",
                },
                condition,
                heartbeat: p.heartbeat_label(now),
                load: p.load_label(),
                queues: p.queues_label(),
                host: format!("{}:{}", p.hostname, p.pid),
                role: p.role.clone(),
                id: p.id.clone(),
            }
        })
        .collect();
    let slow = figures
        .slow
        .iter()
        .cloned()
        .map(|s| SlowRow {
            avg: duration_ms(s.avg_ms as i64),
            max: duration_ms(s.max_ms),
            tries: s.tries,
            dag_id: s.dag_id,
            task_id: s.task_id,
        })
        .collect();
    let freshness = lag_rows(figures.freshness.clone());
    let turnaround = lag_rows(figures.turnaround.clone());
    Ok(pg.render(DashboardPage {
        processes,
        queues: deployment.queues,
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
    }))
}

// ---------------------------------------------------------------- import errors, pools, users
