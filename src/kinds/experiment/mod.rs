//! `experiment`: A/B analysis of exposures and events: lift, confidence interval, p-value, sample-ratio check.

pub mod api;
pub mod chart;
pub mod page;
mod parse;
pub mod run;

use std::sync::Arc;
use std::time::Duration;

use super::{Insight, Kind, RunContext, Running, Spec};
#[allow(unused_imports)]
use crate::dag::is_sql_name;
pub use crate::kinds::ingest::EventFormat;

pub static KIND: Kind = Kind {
    name: "experiment",
    keys: &[
        "experiment",
        "exposures",
        "range",
        "start",
        "events",
        "control",
        "split",
        "metrics",
        "connection",
    ],
    doc_keys: "`experiment`, `exposures`, `events`, `control`, `split`, `metrics` (list), `range`, `start`, `connection`",
    summary: "A/B analysis: lift, confidence interval, p-value, sample-ratio check (below)",
    parse: |p, t, id, span| {
        p.experiment(t, id, span)
            .map(|s| Arc::new(s) as Arc<dyn Spec>)
    },
    warehouse: run::MIGRATIONS,
    api_routes: Some(api::router),
    routes: Some(page::router),
};

/// Where experiment rows come from.
#[derive(Debug, Clone)]
pub enum RowSource {
    /// A warehouse table.
    Table(String),
    /// A JSONL or CSV file (templated, relative to the DAG file's folder).
    File {
        path: String,
        format: Option<EventFormat>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum MetricKind {
    /// Users with the goal event within `window` after their first exposure.
    Conversion { event: String, window: Duration },
    /// Per-user sum of a numeric property of `event` within `window`.
    Mean {
        event: String,
        property: String,
        window: Duration,
    },
    /// Sum of the numerator over the sum of the denominator across a variant's users
    /// (e.g. revenue per session), compared with the delta method.
    Ratio {
        numerator: Measure,
        denominator: Measure,
        window: Duration,
    },
}

/// A per-user quantity: how many `event`s, or the sum of their `property`.
#[derive(Debug, Clone, PartialEq)]
pub struct Measure {
    pub event: String,
    pub property: Option<String>,
}

/// Which exposures an analysis covers; always up to the run's data interval end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnalysisRange {
    /// Every exposure since the experiment started (or since `start`).
    Cumulative,
    /// Only users first exposed within the run's data interval.
    Interval,
}

#[derive(Debug, Clone)]
pub struct Metric {
    pub name: String,
    pub kind: MetricKind,
}

/// Settings of an `experiment` task.
#[derive(Debug, Clone)]
pub struct ExperimentSpec {
    pub experiment: String,
    /// Where exposures come from; None = the `$exposure` (or `$feature_flag_called`)
    /// events of the events table.
    pub exposures: Option<RowSource>,
    pub range: AnalysisRange,
    /// Exposures before this time are left out (the experiment's start).
    pub start: Option<chrono::DateTime<chrono::Utc>>,
    /// The events: a warehouse table, or a JSONL/CSV file of user_id, event, timestamp
    /// (and properties) loaded into `weft_experiment_events` for the analysis.
    pub events: RowSource,
    pub control: String,
    /// Planned share of each variant.
    pub split: Vec<(String, f64)>,
    pub metrics: Vec<Metric>,
    pub connection: String,
}

impl Spec for ExperimentSpec {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn run<'a>(&'a self, ctx: &'a mut RunContext<'_>) -> Running<'a> {
        Box::pin(run::run(ctx, self))
    }

    fn insight(&self) -> Option<Insight> {
        Some((
            format!("experiment {}", self.experiment),
            format!("/experiments/{}", super::url_part(&self.experiment)),
        ))
    }
}
