//! The Health page: failure rates by DAG and kind, the slowest tasks, freshness and
//! experiment turnaround, what is running now.

use axum::Router;
use axum::routing::get;

use super::*;

/// The routes of these pages.
pub(super) fn router() -> Router<AppState> {
    Router::new().route("/dashboard", get(dashboard))
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
