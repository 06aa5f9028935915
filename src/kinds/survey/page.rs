//! The survey pages: responses, NPS and CSAT per form over the periods of the DAG that
//! syncs it, read from the tables the `survey_sync` kind writes.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;

use super::SurveySpec;
use super::chart::{self as charts, TrendPoint};
use super::run as survey;
use crate::stats;
use crate::web::AppState;
use crate::web::error::{Error, Result};
use crate::web::insights::*;
use crate::web::pages::{Layout, Page};
use crate::web::views::{dag_href, enc};

/// The routes of the survey pages.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/surveys", get(surveys_page))
        .route("/surveys/{provider}/{form_id}", get(survey_page))
}

pub(crate) fn surveys(state: &AppState) -> Vec<Declared<SurveySpec>> {
    declared(state, |a: &SurveySpec, b| {
        a.provider == b.provider && a.form_id == b.form_id
    })
}

#[derive(Debug, Clone)]
pub struct SurveyRow {
    pub provider: String,
    pub form_id: String,
    pub href: String,
    pub dag_id: String,
    pub dag_href: String,
    pub responses: i64,
    pub rejects: i64,
    pub nps: String,
    pub last_sync: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "surveys.html")]
pub struct SurveysPage {
    pub layout: Layout,
    pub rows: Vec<SurveyRow>,
}

fn nps_text(m: &survey::StoredMetrics) -> String {
    match (m.nps, m.nps_ci_low, m.nps_ci_high) {
        (Some(v), Some(a), Some(b)) => format!("{v:+.1} [{a:+.1}, {b:+.1}]"),
        _ => "-".into(),
    }
}

pub async fn surveys_page(State(state): State<AppState>, pg: Page) -> Result<Response> {
    let layout = pg.layout(&state, "Surveys".into(), "surveys", None).await?;
    let mut rows = Vec::new();
    for d in surveys(&state) {
        let provider = d.spec.provider.name();
        let (st, metrics) = match warehouse(&state, &d.spec.connection).await {
            Some(c) => (
                or_empty(
                    "survey state",
                    survey::form_state(&c, provider, &d.spec.form_id).await,
                ),
                or_empty(
                    "survey metrics",
                    survey::latest_metrics(&c, provider, &d.spec.form_id).await,
                ),
            ),
            None => Default::default(),
        };
        rows.push(SurveyRow {
            provider: provider.to_string(),
            href: format!("/surveys/{provider}/{}", enc(&d.spec.form_id)),
            dag_href: dag_href(&d.dag_id),
            responses: st.0,
            rejects: st.1,
            last_sync: st.3.map_or("never".into(), |s| db_time(&s)),
            nps: metrics
                .iter()
                .find(|m| m.segment == "all")
                .map_or("-".into(), nps_text),
            form_id: d.spec.form_id,
            dag_id: d.dag_id,
        });
    }
    Ok(pg.render(SurveysPage { layout, rows }))
}

#[derive(Debug, Clone)]
pub struct MetricsLine {
    pub segment: String,
    pub responses: i64,
    pub promoters: i64,
    pub passives: i64,
    pub detractors: i64,
    pub nps: String,
    pub csat: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "survey.html")]
pub struct SurveyPage {
    pub layout: Layout,
    pub provider: String,
    pub form_id: String,
    pub dag_id: String,
    pub dag_href: String,
    pub task_id: String,
    pub responses: i64,
    pub rejects: i64,
    pub high_water: String,
    pub last_sync: String,
    pub nps_field: String,
    pub trend: String,
    pub distribution: String,
    pub csat_distribution: String,
    pub period: String,
    pub metrics: Vec<MetricsLine>,
}

/// Responses and NPS (with CI) per period of the DAG that syncs the form: its
/// schedule's data intervals in its time zone (the periods `survey_metrics` is computed
/// for), or weeks from Monday in its time zone for a manual-only DAG. Periods without a
/// response keep their place on the axis.
fn periodic(
    scores: &[(DateTime<Utc>, Option<i64>, i64)],
    dag: &crate::dag::Dag,
) -> Vec<TrendPoint> {
    let tz = dag.timezone;
    let tt = dag.timetable();
    let cron = !dag.schedule.is_none();
    // The period containing `t` and the one after it.
    let period = |t: DateTime<Utc>| -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if cron {
            let iv = tt.interval_containing(t)?;
            return Some((iv.start, iv.end));
        }
        let local = t.with_timezone(&tz).date_naive();
        let monday = local - chrono::Days::new(u64::from(local.weekday().num_days_from_monday()));
        let at = |d: NaiveDate| {
            d.and_hms_opt(0, 0, 0)
                .and_then(|n| n.and_local_timezone(tz).earliest())
                .map(|x| x.with_timezone(&Utc))
        };
        Some((at(monday)?, at(monday + chrono::Days::new(7))?))
    };
    let mut periods: BTreeMap<DateTime<Utc>, (DateTime<Utc>, i64, Vec<u8>)> = BTreeMap::new();
    for (at, score, n) in scores {
        let Some((start, end)) = period(*at) else {
            continue;
        };
        let e = periods.entry(start).or_insert((end, 0, Vec::new()));
        e.1 += n;
        if let Some(s) = score.and_then(|s| u8::try_from(s).ok()) {
            e.2.extend(std::iter::repeat_n(s, usize::try_from(*n).unwrap_or(0)));
        }
    }
    let (Some(first), Some(last)) = (
        periods.keys().next().copied(),
        periods.keys().next_back().copied(),
    ) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut start = first;
    while start <= last && out.len() < 520 {
        let (end, responses, scores) = match periods.remove(&start) {
            Some(p) => p,
            None => match period(start) {
                Some((_, end)) => (end, 0, Vec::new()),
                None => break,
            },
        };
        out.push(TrendPoint {
            label: start.with_timezone(&tz).format("%b %d").to_string(),
            responses,
            nps: stats::nps(&scores)
                .ok()
                .map(|n| (n.nps, n.ci_low, n.ci_high)),
        });
        if end <= start {
            break;
        }
        start = end;
    }
    out
}

fn counts(daily: &[(DateTime<Utc>, Option<i64>, i64)], lo: i64, hi: i64) -> Vec<i64> {
    let mut c = vec![0i64; (hi - lo + 1) as usize];
    for (_, s, n) in daily {
        if let Some(s) = s
            && (lo..=hi).contains(s)
        {
            c[(s - lo) as usize] += n;
        }
    }
    c
}

pub async fn survey_page(
    State(state): State<AppState>,
    pg: Page,
    Path((provider, form_id)): Path<(String, String)>,
) -> Result<Response> {
    let all = surveys(&state);
    let Some(d) = all
        .iter()
        .find(|d| d.spec.provider.name() == provider && d.spec.form_id == form_id)
    else {
        return Err(Error::NotFound(format!(
            "no survey_sync task reads {provider} form \"{form_id}\""
        )));
    };
    let layout = pg
        .layout(
            &state,
            format!("Survey {provider} {form_id}"),
            "surveys",
            None,
        )
        .await?;
    let spec = &d.spec;
    let p = spec.provider.name();
    let (st, nps_daily, csat_daily, metrics) = match warehouse(&state, &spec.connection).await {
        Some(c) => (
            or_empty("survey state", survey::form_state(&c, p, &form_id).await),
            or_empty(
                "survey scores",
                survey::scores_by_quarter_hour(&c, p, &form_id, false).await,
            ),
            if spec.csat_field.is_some() {
                or_empty(
                    "survey csat",
                    survey::scores_by_quarter_hour(&c, p, &form_id, true).await,
                )
            } else {
                Vec::new()
            },
            or_empty(
                "survey metrics",
                survey::latest_metrics(&c, p, &form_id).await,
            ),
        ),
        None => Default::default(),
    };
    let nps_counts = counts(&nps_daily, 0, 10);
    let csat_counts = counts(&csat_daily, 1, 5);
    let period = metrics.first().map_or(String::new(), |m| {
        format!(
            "{} to {}",
            m.period_start
                .as_deref()
                .map_or("the first response".to_string(), db_time),
            db_time(&m.period_end)
        )
    });
    let page_data = SurveyPage {
        layout,
        provider: p.to_string(),
        form_id: form_id.clone(),
        dag_id: d.dag_id.clone(),
        dag_href: dag_href(&d.dag_id),
        task_id: d.task_id.clone(),
        responses: st.0,
        rejects: st.1,
        high_water: st.2.map_or("none".into(), |s| db_time(&s)),
        last_sync: st.3.map_or("never".into(), |s| db_time(&s)),
        nps_field: spec.nps_field.clone().unwrap_or_default(),
        trend: charts::nps_trend(&match state.registry.current(&d.dag_id) {
            Some((dag, _)) => periodic(&nps_daily, &dag),
            None => Vec::new(),
        }),
        distribution: if nps_counts.iter().any(|c| *c > 0) {
            charts::score_bars(0, &nps_counts, |s| match s {
                0..=6 => "detractor",
                7 | 8 => "passive",
                _ => "promoter",
            })
        } else {
            String::new()
        },
        csat_distribution: if csat_counts.iter().any(|c| *c > 0) {
            charts::score_bars(1, &csat_counts, csat_class)
        } else {
            String::new()
        },
        period,
        metrics: metrics
            .iter()
            .map(|m| MetricsLine {
                segment: if m.segment == "all" {
                    "all responses".into()
                } else {
                    format!("{} = {}", m.segment, m.segment_value)
                },
                responses: m.responses,
                promoters: m.promoters,
                passives: m.passives,
                detractors: m.detractors,
                nps: nps_text(m),
                csat: m.csat.map_or("-".into(), |c| {
                    format!("{:.1}% of {}", c * 100.0, m.csat_responses)
                }),
            })
            .collect(),
    };
    Ok(pg.render(page_data))
}

/// How a CSAT score (1-5) is drawn: dissatisfied (1-2), neutral (3), satisfied (4-5),
/// with the colours of NPS's detractors, passives and promoters.
fn csat_class(score: i64) -> &'static str {
    match score {
        ..=2 => "detractor",
        3 => "passive",
        _ => "promoter",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csat_scores_are_drawn_in_three_groups() {
        let classes: Vec<&str> = (1..=5).map(csat_class).collect();
        assert_eq!(
            classes,
            vec!["detractor", "detractor", "passive", "promoter", "promoter"]
        );
    }

    fn dag(schedule: &str, tz: &str) -> crate::dag::Dag {
        let src = format!(
            "schedule = \"{schedule}\"\ntimezone = \"{tz}\"\nstart_date = \"2026-01-01\"\n[tasks.a]\nkind = \"noop\"\n"
        );
        crate::dag::parse_dag(
            "s.toml",
            std::path::Path::new("s.toml"),
            &src,
            &Default::default(),
        )
        .expect("dag")
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn periods_are_the_dags_intervals_in_its_zone_and_gaps_are_kept() {
        let scores = vec![
            (at("2026-09-01T10:00:00Z"), Some(10), 2), // Tuesday
            (at("2026-09-06T12:00:00Z"), Some(0), 1),  // Sunday, same week
            (at("2026-09-06T12:00:00Z"), None, 1),
            (at("2026-09-15T10:00:00Z"), Some(9), 1), // two weeks later
        ];
        // A manual-only DAG: weeks from Monday.
        let w = periodic(&scores, &dag("none", "UTC"));
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].label, "Aug 31");
        assert_eq!(w[0].responses, 4);
        let (nps, lo, hi) = w[0].nps.expect("scored");
        assert!((nps - 100.0 / 3.0).abs() < 1e-9);
        assert!(lo >= -100.0 && hi <= 100.0);
        assert_eq!((w[1].responses, w[1].nps), (0, None));
        assert_eq!(w[2].nps.map(|n| n.0), Some(100.0));
        // Sunday 23:30 UTC is already Monday in Berlin: a week later there.
        let late = vec![(at("2026-09-06T23:30:00Z"), Some(10), 1)];
        assert_eq!(
            periodic(&late, &dag("none", "Europe/Berlin"))[0].label,
            "Sep 07"
        );
        assert_eq!(periodic(&late, &dag("none", "UTC"))[0].label, "Aug 31");
        // A daily DAG in New York: the interval that holds 03:00 UTC is the day before.
        let ny = periodic(
            &[(at("2026-09-02T03:00:00Z"), Some(9), 1)],
            &dag("0 0 * * *", "America/New_York"),
        );
        assert_eq!(ny[0].label, "Sep 01");
    }
}
