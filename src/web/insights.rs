//! What the pages of task kinds share (experiment, survey: their handlers live in their
//! kind's folder): the tasks of a kind declared across the DAGs, the warehouse they
//! wrote, and number formatting. A warehouse that is unreachable or not written yet
//! shows as "no results yet" and is logged, never shown as an error text.

use crate::kinds::Warehouse;
use chrono::{DateTime, Utc};

use super::AppState;
use crate::kinds::Spec;

/// A task of the given kind, with its DAG and task ids.
pub(crate) struct Declared<T> {
    pub dag_id: String,
    pub task_id: String,
    pub spec: T,
}

/// The tasks whose spec is a `T`, across the current DAGs (by dag_id), keeping the
/// first of each group that `same` says are one (one experiment, one survey form).
pub(crate) fn declared<T: Spec + Clone>(
    state: &AppState,
    same: impl Fn(&T, &T) -> bool,
) -> Vec<Declared<T>> {
    let mut out: Vec<Declared<T>> = Vec::new();
    let mut dags = state.registry.all();
    dags.sort_by(|a, b| a.0.dag_id.cmp(&b.0.dag_id));
    for (dag, _) in dags {
        for t in &dag.tasks {
            if let Some(spec) = t.spec_of::<T>()
                && !out.iter().any(|d| same(&d.spec, spec))
            {
                out.push(Declared {
                    dag_id: dag.dag_id.clone(),
                    task_id: t.task_id.clone(),
                    spec: spec.clone(),
                });
            }
        }
    }
    out
}

/// The warehouse of a task, or None (logged) when it cannot be reached.
pub(crate) async fn warehouse(state: &AppState, name: &str) -> Option<Warehouse> {
    match state.warehouses.get(name).await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("warehouse \"{name}\" for a results page: {e}");
            None
        }
    }
}

/// A warehouse read whose failure means "nothing written yet" (the table is created by
/// the first run); logged at debug level.
pub(crate) fn or_empty<T: Default>(
    what: &str,
    r: std::result::Result<T, crate::db::QueryError>,
) -> T {
    r.unwrap_or_else(|e| {
        tracing::debug!("{what}: {e}");
        T::default()
    })
}

pub(crate) fn signed_pct(x: Option<f64>) -> String {
    x.filter(|v| v.is_finite())
        .map_or("-".into(), |v| format!("{:+.2}%", v * 100.0))
}

pub(crate) fn num(x: Option<f64>, digits: usize) -> String {
    x.filter(|v| v.is_finite())
        .map_or("-".into(), |v| format!("{v:.digits$}"))
}

pub(crate) fn p_text(p: Option<f64>) -> String {
    match p.filter(|v| v.is_finite()) {
        None => "-".into(),
        Some(v) if v < 0.0001 => "< 0.0001".into(),
        Some(v) => format!("{v:.4}"),
    }
}

/// A time a kind wrote to the warehouse as RFC 3339 text, as the pages show times
/// (local time in the browser, UTC on hover); `None` when it does not parse.
pub(crate) fn stored_time(s: &str) -> Option<crate::web::views::Time> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| crate::web::views::time(t.with_timezone(&Utc)))
}

pub(crate) fn short_time(s: &str) -> String {
    DateTime::parse_from_rfc3339(s)
        .map(|t| {
            t.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M UTC")
                .to_string()
        })
        .unwrap_or_else(|_| s.chars().take(19).collect())
}

/// A time as the warehouse returns it as text (`2026-03-01 10:00:00+00`,
/// `2026-03-01T10:00:00Z`), to the minute.
pub(crate) fn db_time(s: &str) -> String {
    let t: String = s.chars().take(16).collect();
    format!("{} UTC", t.replace('T', " "))
}

pub(crate) fn median(v: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied()
}

// ---------------------------------------------------------------- experiments
