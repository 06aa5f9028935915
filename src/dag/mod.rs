//! DAG definitions: TOML files -> spanned raw tables -> a validated [`Dag`].
//!
//! Pure apart from reading the files themselves: nothing here touches the database, the
//! clock or the network. Validation collects every problem in a file before it returns.

pub mod bag;
pub mod bundle;
pub mod diag;
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

impl ValidationContext {
    /// The pools and warehouse connections an installation declares.
    pub fn of(cfg: &crate::config::Config) -> ValidationContext {
        ValidationContext {
            pools: cfg.pool_slots().into_keys().collect(),
            connections: cfg.connections.keys().cloned().collect(),
        }
    }
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
pub use crate::config::DEFAULT_POOL;

/// The queue of tasks that name none; `weft worker` serves it unless told otherwise.
pub const DEFAULT_QUEUE: &str = "default";

/// A queue name: 1 to 64 ASCII letters, digits, `_`, `-` or `.`.
pub fn valid_queue(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A plain SQL name (table, column, model): a letter or `_`, then letters, digits and
/// `_`, at most 60 characters. Names like these are spliced into SQL unquoted.
pub fn is_sql_name(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 60
}

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
    /// What the database records of this DAG.
    pub fn record(&self) -> crate::db::dags::DagRecord {
        crate::db::dags::DagRecord {
            dag_id: self.dag_id.clone(),
            fileloc: self.file.display().to_string(),
            source_hash: self.source_hash.clone(),
            source: self.bundle.toml.clone(),
            files: self.bundle.files_json(),
            description: self.description.clone(),
            schedule: self.schedule.as_str().to_string(),
            timezone: self.timezone.name().to_string(),
            owner: self.owner.clone(),
            tags: self.tags.clone(),
        }
    }

    /// The task instances a new run of this DAG gets, for the given tasks (all when
    /// `only` is `None`), in file order.
    pub fn new_tasks(&self, only: Option<&[&str]>) -> Vec<crate::db::runs::NewTask> {
        self.tasks
            .iter()
            .filter(|t| only.is_none_or(|ids| ids.contains(&t.task_id.as_str())))
            .map(|t| crate::db::runs::NewTask {
                task_id: t.task_id.clone(),
                kind: t.kind_name().to_string(),
                max_tries: i32::try_from(t.retries).unwrap_or(i32::MAX - 1) + 1,
                pool: t.pool.clone(),
                pool_slots: i32::try_from(t.pool_slots).unwrap_or(1),
                queue: t.queue.clone(),
                priority: t.priority,
            })
            .collect()
    }

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

    /// `task_id` and everything upstream of it, transitively.
    pub fn upstream_closure(&self, roots: &[&str]) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = BTreeSet::new();
        let mut stack: Vec<String> = roots.iter().map(|s| s.to_string()).collect();
        while let Some(t) = stack.pop() {
            if out.insert(t.clone())
                && let Some(task) = self.task(&t)
            {
                stack.extend(task.depends_on.iter().cloned());
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
    /// What the task does: its kind's validated settings (see `crate::kinds`).
    pub spec: std::sync::Arc<dyn crate::kinds::Spec>,
    pub depends_on: Vec<String>,
    pub retries: u32,
    pub retry_delay: Duration,
    pub retry_exponential_backoff: bool,
    pub max_retry_delay: Option<Duration>,
    pub timeout: Option<Duration>,
    pub trigger_rule: TriggerRule,
    pub pool: String,
    pub pool_slots: u32,
    /// The worker queue the task runs on (`weft worker --queues`).
    pub queue: String,
    pub priority: i32,
    pub env: BTreeMap<String, String>,
    pub callbacks: Callbacks,
}

impl Task {
    /// The name of the task's kind (`shell`, `sql`, ...).
    pub fn kind_name(&self) -> &'static str {
        self.spec.kind().name
    }

    /// The task's spec as its kind's concrete type, when it is of that kind.
    pub fn spec_of<T: crate::kinds::Spec>(&self) -> Option<&T> {
        self.spec.downcast::<T>()
    }

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
