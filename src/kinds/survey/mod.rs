//! `survey_sync`: survey responses from Typeform- and Zigpoll-style APIs or CSV exports into the warehouse, then NPS and CSAT.

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

pub static KIND: Kind = Kind {
    name: "survey_sync",
    keys: &[
        "provider",
        "form_id",
        "base_url",
        "token",
        "key_header",
        "path",
        "page_size",
        "nps_field",
        "csat_field",
        "user_field",
        "segments",
        "metrics_window",
        "connection",
    ],
    doc_keys: "`provider`, `form_id`, `base_url`, `token`, `path`, `page_size`, `nps_field`, `csat_field`, `user_field`, `segments`, `metrics_window`, `key_header`, `connection`",
    summary: "survey responses from Typeform, Zigpoll or a CSV export into the warehouse, then NPS/CSAT (below)",
    parse: |p, t, id, span| p.survey(t, id, span).map(|s| Arc::new(s) as Arc<dyn Spec>),
    warehouse: run::MIGRATIONS,
    api_routes: Some(api::router),
    routes: Some(page::router),
};

/// Where survey responses come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SurveyProvider {
    Typeform,
    Zigpoll,
    Csv,
}

impl SurveyProvider {
    pub fn name(self) -> &'static str {
        match self {
            SurveyProvider::Typeform => "typeform",
            SurveyProvider::Zigpoll => "zigpoll",
            SurveyProvider::Csv => "csv",
        }
    }

    /// The provider's public API, used when `base_url` is not given.
    pub fn default_base_url(self) -> &'static str {
        match self {
            SurveyProvider::Typeform => "https://api.typeform.com",
            SurveyProvider::Zigpoll => "https://v1.zigpoll.com",
            SurveyProvider::Csv => "",
        }
    }
}

/// Which responses the metrics row of a run covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsWindow {
    /// Responses submitted in the run's data interval (all up to its end when the
    /// interval is empty, as for a manual run).
    Interval,
    /// Every response up to the interval end.
    All,
    /// A trailing window ending at the interval end.
    Trailing(Duration),
}

/// User properties to break the metrics down by: `table` joined on `key` = the
/// response's user id.
#[derive(Debug, Clone)]
pub struct Segments {
    pub table: String,
    pub key: String,
    pub columns: Vec<String>,
}

/// Settings of a `survey_sync` task.
#[derive(Debug, Clone)]
pub struct SurveySpec {
    pub provider: SurveyProvider,
    /// Typeform form id, Zigpoll poll id, or the name the CSV export's rows are kept under.
    pub form_id: String,
    /// API base URL; `${NAME}` reads the environment at run time.
    pub base_url: Option<String>,
    /// Typeform personal token or Zigpoll API key; `${NAME}` reads the environment.
    pub token: Option<String>,
    /// Header that carries the Zigpoll API key (default `Authorization`).
    pub key_header: String,
    /// CSV export (templated, relative to the DAG file's folder).
    pub path: Option<String>,
    pub page_size: u32,
    /// Field (ref, id or CSV column) holding the 0-10 NPS score.
    pub nps_field: Option<String>,
    /// Field holding a 1-5 satisfaction score.
    pub csat_field: Option<String>,
    /// Hidden field carrying the user id (default `user_id`).
    pub user_field: String,
    pub segments: Option<Segments>,
    pub metrics_window: MetricsWindow,
    pub connection: String,
}

impl Spec for SurveySpec {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn run<'a>(&'a self, ctx: &'a mut RunContext<'_>) -> Running<'a> {
        Box::pin(run::run(ctx, self))
    }

    fn insight(&self) -> Option<Insight> {
        Some((
            format!("survey {} {}", self.provider.name(), self.form_id),
            format!(
                "/surveys/{}/{}",
                self.provider.name(),
                super::url_part(&self.form_id)
            ),
        ))
    }
}
