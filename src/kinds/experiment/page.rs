//! The experiment pages: the latest analysis of each experiment (lift, CI, p-value,
//! sample-ratio check, as a forest plot) and its history, read from the tables the
//! `experiment` kind writes.

use std::collections::{BTreeMap, BTreeSet};

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;

use super::ExperimentSpec;
use super::chart::{self as charts, ForestRow};
use super::run as experiment;
use crate::web::AppState;
use crate::web::error::{Error, Result};
use crate::web::insights::*;
use crate::web::pages::{Layout, Page};
use crate::web::views::{dag_href, enc, lag};

/// The routes of the experiment pages.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/experiments", get(experiments_page))
        .route("/experiments/{experiment}", get(experiment_page))
}

pub(crate) fn experiments(state: &AppState) -> Vec<Declared<ExperimentSpec>> {
    declared(state, |a: &ExperimentSpec, b| a.experiment == b.experiment)
}

#[derive(Debug, Clone)]
pub struct ExperimentRow {
    pub experiment: String,
    pub href: String,
    pub dag_id: String,
    pub dag_href: String,
    pub analysed: Option<crate::web::views::Time>,
    pub summary: String,
    pub srm: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "experiments.html")]
pub struct ExperimentsPage {
    pub layout: Layout,
    pub rows: Vec<ExperimentRow>,
}

pub async fn experiments_page(State(state): State<AppState>, pg: Page) -> Result<Response> {
    let layout = pg
        .layout(&state, "Experiments".into(), "experiments", None)
        .await?;
    let mut rows = Vec::new();
    for d in experiments(&state) {
        let results = match warehouse(&state, &d.spec.connection).await {
            Some(c) => or_empty(
                "experiment results",
                experiment::latest_results(&c, &d.spec.experiment).await,
            ),
            None => Vec::new(),
        };
        let summary = results
            .iter()
            .filter(|r| r.variant != d.spec.control)
            .map(|r| {
                format!(
                    "{} {}: {} (p {})",
                    r.metric,
                    r.variant,
                    signed_pct(r.rel_lift),
                    p_text(r.p_value)
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        rows.push(ExperimentRow {
            href: format!("/experiments/{}", enc(&d.spec.experiment)),
            dag_href: dag_href(&d.dag_id),
            analysed: results.first().and_then(|r| stored_time(&r.computed_at)),
            srm: results
                .first()
                .and_then(|r| r.srm_p_value)
                .is_some_and(|p| p < 0.001),
            summary,
            experiment: d.spec.experiment,
            dag_id: d.dag_id,
        });
    }
    Ok(pg.render(ExperimentsPage { layout, rows }))
}

#[derive(Debug, Clone)]
pub struct ResultLine {
    pub metric: String,
    pub variant: String,
    pub control: bool,
    pub users: i64,
    pub value: String,
    pub diff: String,
    pub lift: String,
    pub p_value: String,
    pub p_adjusted: String,
    pub significant: bool,
    /// Why the statistics are missing, when they are.
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct TurnaroundLine {
    pub interval_end: String,
    pub lag: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "experiment.html")]
pub struct ExperimentPage {
    pub layout: Layout,
    pub experiment: String,
    pub dag_id: String,
    pub dag_href: String,
    pub task_id: String,
    pub control: String,
    pub split: String,
    pub analysed: bool,
    pub interval_end: String,
    pub computed_at: Option<crate::web::views::Time>,
    pub srm_p: String,
    pub srm_warning: bool,
    pub excluded: i64,
    pub lines: Vec<ResultLine>,
    pub forest: String,
    pub exposures: String,
    pub turnaround_latest: String,
    pub turnaround_median: String,
    pub turnarounds: Vec<TurnaroundLine>,
}

pub async fn experiment_page(
    State(state): State<AppState>,
    pg: Page,
    Path(key): Path<String>,
) -> Result<Response> {
    let all = experiments(&state);
    let Some(d) = all.iter().find(|d| d.spec.experiment == key) else {
        let hint =
            crate::dag::diag::did_you_mean(&key, all.iter().map(|d| d.spec.experiment.as_str()));
        return Err(Error::NotFound(format!(
            "no experiment \"{key}\" in the DAGs{hint}"
        )));
    };
    let layout = pg
        .layout(&state, format!("Experiment {key}"), "experiments", None)
        .await?;
    let spec = &d.spec;
    let (results, lags, daily) = match warehouse(&state, &spec.connection).await {
        Some(c) => (
            or_empty(
                "experiment results",
                experiment::latest_results(&c, &spec.experiment).await,
            ),
            or_empty(
                "experiment turnaround",
                experiment::turnarounds(&c, &spec.experiment, 30).await,
            ),
            or_empty("exposures", experiment::daily_exposures(&c, spec).await),
        ),
        None => Default::default(),
    };
    let lines = results
        .iter()
        .map(|r| {
            let control = r.variant == spec.control;
            ResultLine {
                metric: r.metric.clone(),
                variant: r.variant.clone(),
                control,
                users: r.users,
                value: num(r.value, 4),
                diff: if control {
                    "-".into()
                } else {
                    format!(
                        "{} [{}, {}]",
                        num(r.diff, 4),
                        num(r.diff_ci_low, 4),
                        num(r.diff_ci_high, 4)
                    )
                },
                lift: if control {
                    "-".into()
                } else {
                    format!(
                        "{} [{}, {}]",
                        signed_pct(r.rel_lift),
                        signed_pct(r.rel_lift_ci_low),
                        signed_pct(r.rel_lift_ci_high)
                    )
                },
                p_value: if control {
                    "-".into()
                } else {
                    p_text(r.p_value)
                },
                p_adjusted: if control {
                    "-".into()
                } else {
                    p_text(r.p_value_adjusted)
                },
                // Significance is read from the adjusted p-value (several comparisons).
                significant: r.p_value_adjusted.is_some_and(|p| p < 0.05),
                reason: r.reason.clone().unwrap_or_default(),
            }
        })
        .collect();
    let forest_rows: Vec<ForestRow> = results
        .iter()
        .filter(|r| r.variant != spec.control)
        .filter_map(|r| {
            Some(ForestRow {
                label: format!("{} · {}", r.metric, r.variant),
                value: r.rel_lift?,
                lo: r.rel_lift_ci_low?,
                hi: r.rel_lift_ci_high?,
            })
        })
        .collect();
    // Exposures: one series per variant over every day seen.
    let days: Vec<String> = daily
        .iter()
        .map(|(d, ..)| d.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut by_variant: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (day, variant, n) in &daily {
        let i = days.iter().position(|d| d == day).unwrap_or(0);
        by_variant
            .entry(variant.clone())
            .or_insert_with(|| vec![0; days.len()])[i] += n;
    }
    let series: Vec<(String, Vec<i64>)> = by_variant.into_iter().collect();
    let first = results.first();
    let srm = first.and_then(|r| r.srm_p_value);
    let lag_values: Vec<f64> = lags.iter().map(|(_, s)| *s).collect();
    let page_data = ExperimentPage {
        layout,
        experiment: spec.experiment.clone(),
        dag_id: d.dag_id.clone(),
        dag_href: dag_href(&d.dag_id),
        task_id: d.task_id.clone(),
        control: spec.control.clone(),
        split: spec
            .split
            .iter()
            .map(|(v, s)| format!("{v} {s}"))
            .collect::<Vec<_>>()
            .join(", "),
        analysed: first.is_some(),
        interval_end: first.map_or(String::new(), |r| short_time(&r.interval_end)),
        computed_at: first.and_then(|r| stored_time(&r.computed_at)),
        srm_p: p_text(srm),
        srm_warning: srm.is_some_and(|p| p < 0.001),
        excluded: first.map_or(0, |r| r.excluded_users),
        lines,
        forest: charts::forest(&forest_rows),
        exposures: charts::cumulative_lines(&days, &series),
        turnaround_latest: lag_values.last().map_or("-".into(), |s| lag(*s)),
        turnaround_median: median(&lag_values).map_or("-".into(), lag),
        turnarounds: lags
            .iter()
            .rev()
            .take(10)
            .map(|(end, s)| TurnaroundLine {
                interval_end: short_time(end),
                lag: lag(*s),
            })
            .collect(),
    };
    Ok(pg.render(page_data))
}

// ---------------------------------------------------------------- surveys
