//! DAG definitions: TOML files -> spanned raw tables -> a validated [`Dag`].
//!
//! Pure apart from reading the files themselves: nothing here touches the database, the
//! clock or the network. Validation collects every problem in a file before it returns.

pub mod bag;
pub mod bundle;
pub mod diag;
pub mod models;
pub(crate) mod parse;
pub mod quote;
pub mod schedule;
pub mod template;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

pub use bag::{DagBag, LoadedFile};
pub use bundle::Bundle;
pub use diag::Diagnostic;
pub use models::is_sql_name;
pub use parse::parse_dag;

/// Parses a date or time (`2026-01-01`, `2026-01-01T02:00:00` in `tz`, or RFC 3339).
pub fn parse_datetime(s: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    parse::parse_datetime_in(s, tz)
}
pub use schedule::{Interval, Schedule, Timetable};

/// What the validator needs to know about the installation: which pools and warehouse
/// connections exist.
#[derive(Debug, Clone)]
pub struct ValidationContext {
    pub pools: BTreeSet<String>,
    pub connections: BTreeSet<String>,
}

impl Default for ValidationContext {
    fn default() -> Self {
        ValidationContext {
            pools: [DEFAULT_POOL.to_string()].into(),
            connections: ["warehouse".to_string()].into(),
        }
    }
}

/// The longest exponential backoff when `max_retry_delay` is not set.
pub const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The pool every task uses unless it names another.
pub const DEFAULT_POOL: &str = "default_pool";

/// A validated DAG.
#[derive(Debug, Clone)]
pub struct Dag {
    pub dag_id: String,
    /// The file it was read from.
    pub file: PathBuf,
    /// sha256 of the whole bundle: a new hash is a new version.
    pub source_hash: String,
    /// Everything the definition was parsed from: the TOML and the files it reads.
    /// Stored with each version, so a run always executes exactly its version's files.
    pub bundle: std::sync::Arc<Bundle>,
    pub description: Option<String>,
    pub schedule: Schedule,
    pub timezone: Tz,
    pub start_date: Option<DateTime<Utc>>,
    pub end_date: Option<DateTime<Utc>>,
    pub catchup: bool,
    pub max_active_runs: u32,
    pub max_active_tasks: u32,
    pub tags: Vec<String>,
    pub owner: Option<String>,
    pub params: Vec<Param>,
    pub callbacks: Callbacks,
    /// Tasks in file order.
    pub tasks: Vec<Task>,
    /// Task indices in a topological order (upstreams first).
    pub topo_order: Vec<usize>,
    /// For each task (by index), the indices of the tasks that depend on it.
    pub downstream: Vec<Vec<usize>>,
    /// Problems that do not stop the DAG from loading (`dags check` shows them).
    pub warnings: Vec<diag::Diagnostic>,
}

impl Dag {
    /// The DAG file's text.
    pub fn source(&self) -> &str {
        &self.bundle.toml
    }

    pub fn task(&self, task_id: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.task_id == task_id)
    }

    pub fn task_index(&self, task_id: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t.task_id == task_id)
    }

    /// Ids of the tasks that depend directly on `task_id`.
    pub fn downstream_of(&self, task_id: &str) -> Vec<&str> {
        match self.task_index(task_id) {
            Some(i) => self.downstream[i]
                .iter()
                .map(|j| self.tasks[*j].task_id.as_str())
                .collect(),
            None => Vec::new(),
        }
    }

    /// True when no task depends on the task at `index`.
    pub fn is_leaf(&self, index: usize) -> bool {
        self.downstream.get(index).is_none_or(Vec::is_empty)
    }

    /// `task_id` and everything downstream of it, transitively.
    pub fn downstream_closure(&self, roots: &[&str]) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = BTreeSet::new();
        let mut stack: Vec<String> = roots.iter().map(|s| s.to_string()).collect();
        while let Some(t) = stack.pop() {
            if out.insert(t.clone()) {
                stack.extend(self.downstream_of(&t).into_iter().map(str::to_string));
            }
        }
        out
    }

    /// The folder relative paths (commands' working directory, SQL files) resolve
    /// against: the DAG file's folder.
    pub fn base_dir(&self) -> PathBuf {
        self.file
            .parent()
            .map(PathBuf::from)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."))
    }

    pub fn timetable(&self) -> Timetable<'_> {
        Timetable {
            schedule: &self.schedule,
            tz: self.timezone,
            start_date: self.start_date,
            end_date: self.end_date,
        }
    }

    /// The default values of the DAG's params, for scheduled runs.
    pub fn default_params(&self) -> BTreeMap<String, serde_json::Value> {
        self.params
            .iter()
            .filter_map(|p| p.default.clone().map(|d| (p.name.clone(), d)))
            .collect()
    }

    /// Type-checks the params of a manual trigger against the DAG's `[params]` and fills
    /// in defaults. `given` values may be strings (from the command line) or typed JSON.
    pub fn resolve_params(
        &self,
        given: &BTreeMap<String, serde_json::Value>,
    ) -> Result<BTreeMap<String, serde_json::Value>, Vec<String>> {
        let mut out = BTreeMap::new();
        let mut errors = Vec::new();
        for key in given.keys() {
            if !self.params.iter().any(|p| &p.name == key) {
                let hint = diag::did_you_mean(key, self.params.iter().map(|p| p.name.as_str()));
                errors.push(format!("unknown param \"{key}\"{hint}"));
            }
        }
        for p in &self.params {
            match given.get(&p.name) {
                Some(v) => match p.ty.coerce(v) {
                    Ok(v) => {
                        out.insert(p.name.clone(), v);
                    }
                    Err(e) => errors.push(format!("param \"{}\": {e}", p.name)),
                },
                None => match &p.default {
                    Some(d) => {
                        out.insert(p.name.clone(), d.clone());
                    }
                    None => errors.push(format!(
                        "param \"{}\" ({}) is required: it has no default",
                        p.name,
                        p.ty.name()
                    )),
                },
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }
}

/// A typed parameter of manual triggers.
#[derive(Debug, Clone, Serialize)]
pub struct Param {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ParamType,
    pub default: Option<serde_json::Value>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Int,
    Float,
    Bool,
    Date,
}

impl ParamType {
    pub const NAMES: [&'static str; 5] = ["string", "int", "float", "bool", "date"];

    pub fn from_name(s: &str) -> Option<ParamType> {
        Some(match s {
            "string" => ParamType::String,
            "int" => ParamType::Int,
            "float" => ParamType::Float,
            "bool" => ParamType::Bool,
            "date" => ParamType::Date,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::Bool => "bool",
            ParamType::Date => "date",
        }
    }

    /// Converts a given value to this type. Strings are parsed (command-line `k=v`).
    pub fn coerce(self, v: &serde_json::Value) -> Result<serde_json::Value, String> {
        use serde_json::Value as J;
        let bad = || format!("expected {}, got {v}", self.name());
        match (self, v) {
            (ParamType::String, J::String(_)) => Ok(v.clone()),
            (ParamType::Int, J::Number(n)) if n.is_i64() => Ok(v.clone()),
            (ParamType::Int, J::String(s)) => {
                s.trim().parse::<i64>().map(J::from).map_err(|_| bad())
            }
            (ParamType::Float, J::Number(n)) => n.as_f64().map(J::from).ok_or_else(bad),
            (ParamType::Float, J::String(s)) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(J::from)
                .ok_or_else(bad),
            (ParamType::Bool, J::Bool(_)) => Ok(v.clone()),
            (ParamType::Bool, J::String(s)) => match s.trim() {
                "true" => Ok(J::Bool(true)),
                "false" => Ok(J::Bool(false)),
                _ => Err(bad()),
            },
            (ParamType::Date, J::String(s)) => {
                chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
                    .map(|d| J::String(d.to_string()))
                    .map_err(|_| format!("expected a date like 2026-01-31, got {v}"))
            }
            _ => Err(bad()),
        }
    }
}

/// The trigger rule of a task: when its upstream states let it run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerRule {
    AllSuccess,
    AllDone,
    AllFailed,
    OneSuccess,
    OneFailed,
    NoneFailed,
}

impl TriggerRule {
    pub const NAMES: [&'static str; 6] = [
        "all_success",
        "all_done",
        "all_failed",
        "one_success",
        "one_failed",
        "none_failed",
    ];

    pub fn from_name(s: &str) -> Option<TriggerRule> {
        Some(match s {
            "all_success" => TriggerRule::AllSuccess,
            "all_done" => TriggerRule::AllDone,
            "all_failed" => TriggerRule::AllFailed,
            "one_success" => TriggerRule::OneSuccess,
            "one_failed" => TriggerRule::OneFailed,
            "none_failed" => TriggerRule::NoneFailed,
            _ => return None,
        })
    }
}

/// A hook run when a task or run fails, succeeds, or is retried.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Callback {
    /// `sh -c <command>` with the context in `WEFT_*` variables.
    Command { command: String },
    /// An HTTP request with the context as a JSON body.
    Http {
        url: String,
        method: String,
        headers: BTreeMap<String, String>,
    },
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Callbacks {
    pub on_failure: Option<Callback>,
    pub on_success: Option<Callback>,
    pub on_retry: Option<Callback>,
}

/// One task of a DAG.
#[derive(Debug, Clone)]
pub struct Task {
    pub task_id: String,
    pub kind: TaskKind,
    pub depends_on: Vec<String>,
    pub retries: u32,
    pub retry_delay: Duration,
    pub retry_exponential_backoff: bool,
    pub max_retry_delay: Option<Duration>,
    pub timeout: Option<Duration>,
    pub trigger_rule: TriggerRule,
    pub pool: String,
    pub pool_slots: u32,
    pub priority: i32,
    pub env: BTreeMap<String, String>,
    pub callbacks: Callbacks,
}

impl Task {
    /// The delay before try `try_number + 1`, after try `try_number` failed
    /// (domain reference section 2).
    pub fn retry_delay_after(&self, try_number: u32) -> Duration {
        if !self.retry_exponential_backoff {
            return self.retry_delay;
        }
        let exp = try_number.saturating_sub(1).min(30);
        let delay = self.retry_delay.saturating_mul(1u32 << exp);
        // Like Airflow, exponential backoff never waits more than a day unless
        // max_retry_delay says otherwise.
        delay.min(self.max_retry_delay.unwrap_or(MAX_BACKOFF))
    }
}

/// What a task does; the kind-specific settings.
#[derive(Debug, Clone)]
pub enum TaskKind {
    Shell {
        command: String,
        cwd: Option<PathBuf>,
    },
    Http(HttpSpec),
    Sql {
        sql: String,
        connection: String,
    },
    /// Does nothing and succeeds at once, in process: a join point or placeholder
    /// (Airflow's EmptyOperator).
    Noop,
    /// Events from files into a warehouse table, per data interval.
    Ingest(IngestSpec),
    /// SQL models built in dependency order, then data tests.
    Transform(TransformSpec),
    /// A/B analysis of an experiment: exposures + events -> lift, CI, p-value, SRM.
    Experiment(ExperimentSpec),
    /// Survey responses from a provider's API or a CSV export -> warehouse, plus NPS.
    SurveySync(SurveySpec),
}

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

/// How a model is materialised in the warehouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Materialized {
    /// Built as a new table, then swapped in atomically.
    Table,
    View,
    /// The interval's rows (by `interval_column`) are deleted, then inserted.
    Incremental,
}

impl Materialized {
    pub fn name(self) -> &'static str {
        match self {
            Materialized::Table => "table",
            Materialized::View => "view",
            Materialized::Incremental => "incremental",
        }
    }
}

/// One SQL model: a `SELECT` in a file, named after the file.
#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    /// The file, as shown in messages.
    pub file: String,
    /// The template text of the file.
    pub sql: String,
    /// Models this one reads through `{{ ref("...") }}`.
    pub refs: Vec<String>,
    pub materialized: Materialized,
    pub interval_column: Option<String>,
}

/// A data test: a query counting offending values (0 = pass).
#[derive(Debug, Clone)]
pub enum Check {
    NotNull(String),
    Unique(String),
    AcceptedValues(String, Vec<String>),
    Relationships {
        column: String,
        to_model: String,
        to_column: String,
    },
    /// A query that must return no rows.
    Sql(String),
}

#[derive(Debug, Clone)]
pub struct DataTest {
    pub name: String,
    pub model: String,
    pub check: Check,
}

/// Settings of a `transform` task.
#[derive(Debug, Clone)]
pub struct TransformSpec {
    pub models: Vec<Model>,
    /// Model indices in dependency order.
    pub order: Vec<usize>,
    pub connection: String,
    pub tests: Vec<DataTest>,
    /// Run a table model's tests before swapping it in (a failure keeps the old table).
    pub tests_block: bool,
}

/// File formats `ingest` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFormat {
    Jsonl,
    Csv,
}

/// Settings of an `ingest` task.
#[derive(Debug, Clone)]
pub struct IngestSpec {
    /// Path or glob, templated, relative to the DAG file's folder; `.gz` is read
    /// transparently.
    pub path: String,
    /// Format; by default from the file extension.
    pub format: Option<EventFormat>,
    /// Succeed with nothing loaded when no file matches (default: fail).
    pub allow_empty: bool,
    pub table: String,
    pub connection: String,
    /// Largest share of rejected lines that still succeeds (default 0).
    pub max_reject_ratio: f64,
    /// Reject events whose corrected time is outside the data interval (default: keep
    /// them, attributed to the interval they were loaded for).
    pub reject_outside_interval: bool,
    /// Read from an HTTP endpoint returning JSON pages instead of files.
    pub http: Option<HttpEventSource>,
    /// `path` is a drop-zone folder: each file is loaded once, by the first interval that
    /// finds it (a re-run of that interval loads the same files again).
    pub drop_zone: bool,
}

/// An HTTP endpoint that returns events as JSON pages.
#[derive(Debug, Clone)]
pub struct HttpEventSource {
    /// Templated URL of the first page.
    pub url: String,
    /// Bearer token; `${NAME}` reads the environment at run time.
    pub token: Option<String>,
    /// Key of the array of events in a page (default `data`; a page may also be the
    /// array itself).
    pub items: String,
    /// Key of the next cursor in a page (cursor paging).
    pub next: Option<String>,
    /// Query parameter that carries the cursor (default `cursor`).
    pub cursor_param: String,
    /// Query parameter of page numbers (page paging, from 1, until an empty page).
    pub page_param: Option<String>,
}

impl TaskKind {
    pub const NAMES: [&'static str; 8] = [
        "shell",
        "http",
        "sql",
        "noop",
        "ingest",
        "transform",
        "experiment",
        "survey_sync",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            TaskKind::Shell { .. } => "shell",
            TaskKind::Http(_) => "http",
            TaskKind::Sql { .. } => "sql",
            TaskKind::Noop => "noop",
            TaskKind::Ingest(_) => "ingest",
            TaskKind::Transform(_) => "transform",
            TaskKind::Experiment(_) => "experiment",
            TaskKind::SurveySync(_) => "survey_sync",
        }
    }
}

#[derive(Debug, Clone)]
pub struct HttpSpec {
    pub url: String,
    pub method: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    /// Accepted status codes; empty means any 2xx.
    pub expected_status: Vec<u16>,
}
