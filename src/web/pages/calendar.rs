//! The calendar: one square per day over a year, for every DAG or one, coloured by
//! the share of runs that failed, each linking to the runs that ended that day.

use axum::Router;
use axum::routing::get;
use chrono::{Datelike, NaiveDate};

use super::*;

/// The routes of these pages.
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/calendar", get(all_dags))
        .route("/dags/{dag_id}/calendar", get(one_dag))
        .route("/runs", get(runs_of_a_day))
}

/// A day's square.
#[derive(Debug, Clone)]
pub struct Square {
    pub x: i64,
    pub y: i64,
    pub class: &'static str,
    pub title: String,
    pub href: String,
}

/// A month's label above its first column.
#[derive(Debug, Clone)]
pub struct MonthLabel {
    pub x: i64,
    pub text: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "calendar.html")]
pub struct CalendarPage {
    pub layout: Layout,
    /// The DAG, or empty for every DAG.
    pub dag_id: String,
    pub squares: Vec<Square>,
    pub months: Vec<MonthLabel>,
    pub width: i64,
    pub runs: i64,
    pub failed: i64,
}

/// The class of a day: no runs, all succeeded, or a share of failures (up to a quarter,
/// up to a half, more).
fn shade(r: Option<&stats::Rate>) -> &'static str {
    match r {
        None => "cal-none",
        Some(r) if r.failed == 0 => "cal-ok",
        Some(r) if r.failed * 4 <= r.finished => "cal-f1",
        Some(r) if r.failed * 2 <= r.finished => "cal-f2",
        Some(_) => "cal-f3",
    }
}

/// The squares of the 53 weeks up to `today`: a column per week (Monday at the top).
fn year_of(
    today: NaiveDate,
    days: &std::collections::BTreeMap<String, stats::Rate>,
    dag: Option<&str>,
) -> (Vec<Square>, Vec<MonthLabel>) {
    const CELL: i64 = 14;
    let back = 52 * 7 + i64::from(today.weekday().num_days_from_monday());
    let first = today - Duration::days(back);
    let mut squares = Vec::new();
    let mut months = Vec::new();
    let mut day = first;
    let mut k = 0i64;
    while day <= today {
        let (col, row) = (k / 7, k % 7);
        let key = day.format("%Y-%m-%d").to_string();
        let rate = days.get(&key);
        if (day.day() <= 7 && row == 0) || k == 0 {
            months.push(MonthLabel {
                x: 30 + col * CELL,
                text: day.format("%b").to_string(),
            });
        }
        let title = match rate {
            None => format!("{key}: no runs ended"),
            Some(r) => format!("{key}: {} of {} runs failed", r.failed, r.finished),
        };
        let mut href = format!("/runs?day={key}");
        if let Some(d) = dag {
            href.push_str(&format!("&dag={}", enc(d)));
        }
        squares.push(Square {
            x: 30 + col * CELL,
            y: 20 + row * CELL,
            class: shade(rate),
            title,
            href,
        });
        day += Duration::days(1);
        k += 1;
    }
    (squares, months)
}

async fn calendar(state: &AppState, pg: Page, dag: Option<String>) -> Result<Response> {
    let title = dag
        .as_ref()
        .map_or("Calendar".to_string(), |d| format!("{d} / calendar"));
    let layout = pg.layout(state, title, "calendar", None).await?;
    let now = Utc::now();
    let today = now.date_naive();
    let since = (today - Duration::days(53 * 7))
        .and_hms_opt(0, 0, 0)
        .map_or(now, |t| t.and_utc());
    let days = stats::daily_run_failure(&state.db.read, since, dag.as_deref()).await?;
    let (squares, months) = year_of(today, &days, dag.as_deref());
    Ok(pg.render(CalendarPage {
        layout,
        runs: days.values().map(|r| r.finished).sum(),
        failed: days.values().map(|r| r.failed).sum(),
        width: 30 + 54 * 14,
        dag_id: dag.unwrap_or_default(),
        squares,
        months,
    }))
}

/// Every DAG's runs over a year.
pub async fn all_dags(State(state): State<AppState>, pg: Page) -> Result<Response> {
    calendar(&state, pg, None).await
}

/// One DAG's runs over a year.
pub async fn one_dag(
    State(state): State<AppState>,
    pg: Page,
    Path(dag_id): Path<String>,
) -> Result<Response> {
    known_dag(&state, &dag_id)?;
    calendar(&state, pg, Some(dag_id)).await
}

/// Which day's runs to list.
#[derive(Debug, Default, Deserialize)]
pub struct DayQuery {
    #[serde(default)]
    pub day: String,
    #[serde(default)]
    pub dag: String,
}

/// A run in the day's list.
#[derive(Debug, Clone)]
pub struct DayRun {
    pub dag_id: String,
    pub dag_href: String,
    pub run_id: String,
    pub href: String,
    pub state: String,
    pub ended: Option<Time>,
    pub duration: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "runs_of_day.html")]
pub struct DayPage {
    pub layout: Layout,
    pub day: String,
    pub dag_id: String,
    pub runs: Vec<DayRun>,
    pub more: bool,
    /// The day's runs on a 24-hour axis, one row each, and how many ran at once per hour.
    pub timeline: Vec<TimelineBar>,
    pub busy: Vec<BusyHour>,
    pub timeline_height: i64,
}

/// A run's bar on the day's timeline.
#[derive(Debug, Clone)]
pub struct TimelineBar {
    pub x: i64,
    pub y: i64,
    pub w: i64,
    pub class: String,
    pub title: String,
    pub href: String,
}

/// An hour of the day: how many runs were running in it at most, as a shade.
#[derive(Debug, Clone)]
pub struct BusyHour {
    pub x: i64,
    pub runs: usize,
    pub opacity: String,
}

/// The timeline's left margin and width of 24 hours, in SVG units.
const TL_LEFT: i64 = 40;
const TL_WIDTH: i64 = 960;

/// Bars for runs on the day starting at `from` (clipped to it), and per hour the
/// number of runs that overlapped it.
fn timeline(runs: &[Run], from: chrono::DateTime<Utc>) -> (Vec<TimelineBar>, Vec<BusyHour>, i64) {
    let day_ms = 86_400_000f64;
    let to = from + Duration::days(1);
    let at = |t: chrono::DateTime<Utc>| {
        let ms = (t.clamp(from, to) - from).num_milliseconds() as f64;
        TL_LEFT + (ms / day_ms * TL_WIDTH as f64) as i64
    };
    let mut spans: Vec<&Run> = runs.iter().filter(|r| r.ended_at.is_some()).collect();
    spans.sort_by_key(|r| r.started_at.or(r.ended_at));
    let bars: Vec<TimelineBar> = spans
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let end = r.ended_at.unwrap_or(to);
            let start = r.started_at.unwrap_or(end);
            TimelineBar {
                x: at(start),
                y: 24 + k as i64 * 14,
                w: (at(end) - at(start)).max(2),
                class: format!("s-{}", r.state),
                title: format!(
                    "{} {}: {}",
                    r.dag_id,
                    r.run_id,
                    views::between(r.started_at, r.ended_at)
                ),
                href: run_href(&r.dag_id, &r.run_id),
            }
        })
        .collect();
    let counts: Vec<usize> = (0..24)
        .map(|h| {
            let (a, b) = (from + Duration::hours(h), from + Duration::hours(h + 1));
            spans
                .iter()
                .filter(|r| {
                    let end = r.ended_at.unwrap_or(to);
                    r.started_at.unwrap_or(end) < b && end > a
                })
                .count()
        })
        .collect();
    let most = counts.iter().copied().max().unwrap_or(0).max(1);
    let busy = counts
        .iter()
        .enumerate()
        .map(|(h, n)| BusyHour {
            x: TL_LEFT + h as i64 * TL_WIDTH / 24,
            runs: *n,
            opacity: format!("{:.2}", 0.1 + 0.9 * *n as f64 / most as f64),
        })
        .collect();
    (bars, busy, 40 + spans.len() as i64 * 14)
}

/// The runs that ended on a UTC day (of one DAG, or all): where a calendar square leads.
pub async fn runs_of_a_day(
    State(state): State<AppState>,
    pg: Page,
    Query(q): Query<DayQuery>,
) -> Result<Response> {
    const LIMIT: u64 = 500;
    let day = NaiveDate::parse_from_str(q.day.trim(), "%Y-%m-%d").map_err(|_| {
        Error::BadRequest(format!(
            "day must be a date like 2026-03-01, got \"{}\"",
            q.day
        ))
    })?;
    let dag = Some(q.dag.trim().to_string()).filter(|d| !d.is_empty());
    if let Some(d) = &dag {
        known_dag(&state, d)?;
    }
    let layout = pg
        .layout(&state, format!("Runs of {day}"), "dags", None)
        .await?;
    let from = day
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .ok_or_else(|| Error::BadRequest(format!("day {day} has no midnight")))?;
    let mut found = runs::ended_between(
        &state.db.read,
        dag.as_deref(),
        from,
        from + Duration::days(1),
        LIMIT + 1,
    )
    .await?;
    let more = found.len() as u64 > LIMIT;
    found.truncate(LIMIT as usize);
    let (timeline, busy, timeline_height) = timeline(&found, from);
    Ok(pg.render(DayPage {
        timeline,
        busy,
        timeline_height,
        layout,
        day: day.to_string(),
        dag_id: dag.unwrap_or_default(),
        more,
        runs: found
            .iter()
            .map(|r| DayRun {
                dag_href: dag_href(&r.dag_id),
                href: run_href(&r.dag_id, &r.run_id),
                state: r.state.to_string(),
                ended: views::opt_time(r.ended_at),
                duration: views::between(r.started_at, r.ended_at),
                dag_id: r.dag_id.clone(),
                run_id: r.run_id.clone(),
            })
            .collect(),
    }))
}
