//! Reading one DAG file: the spanned TOML tree is walked key by key, every problem is
//! collected into a [`Sink`], and a [`Dag`] comes out only when there are none.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use petgraph::graph::DiGraph;
pub(crate) use toml::Spanned;
pub(crate) use toml::de::{DeTable, DeValue};

pub(crate) use super::bundle::{Bundle, FileEntry, GlobEntry, MAX_FILE_BYTES, Want};
pub(crate) use super::diag::{Diagnostic, Sink, did_you_mean};
pub(crate) use super::template;
use super::{
    Callback, Callbacks, Dag, Param, ParamType, Schedule, Task, TriggerRule, ValidationContext,
};
use crate::kinds;

mod callbacks;
mod graph;
mod params;
mod values;

pub(crate) use values::*;

pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

pub(crate) const DAG_KEYS: &[&str] = &[
    "dag_id",
    "description",
    "schedule",
    "timezone",
    "start_date",
    "end_date",
    "catchup",
    "max_active_runs",
    "max_active_tasks",
    "tags",
    "owner",
    "params",
    "defaults",
    "tasks",
    "on_failure",
    "on_success",
    "on_retry",
];

pub(crate) const COMMON_KEYS: &[&str] = &[
    "retries",
    "retry_delay",
    "retry_exponential_backoff",
    "max_retry_delay",
    "timeout",
    "trigger_rule",
    "pool",
    "pool_slots",
    "queue",
    "priority",
    "env",
    "on_failure",
    "on_success",
    "on_retry",
];

pub(crate) const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

/// The most tasks one DAG may have. Bigger graphs are refused with a clear message
/// rather than slowing every scheduler pass and page that shows them.
pub const MAX_TASKS: usize = 10_000;
/// The most `depends_on` entries of one DAG, all tasks together.
pub const MAX_EDGES: usize = 100_000;
/// The longest duration any setting accepts (timeouts, retry delays, windows): a year.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);
/// Dates (start_date, end_date, experiment starts) lie within these years.
pub const MIN_YEAR: i32 = 1970;
pub const MAX_YEAR: i32 = 2999;

/// Parses and validates one DAG file, reading the files it uses from disk.
/// `display` is the path shown in messages.
pub fn parse_dag(
    display: &str,
    path: &Path,
    src: &str,
    ctx: &ValidationContext,
) -> Result<Dag, Vec<Diagnostic>> {
    super::bundle::load(display, path, src.to_string(), ctx).1
}

/// Parses and validates a DAG bundle without any I/O: the result, and what the bundle
/// lacks (files, globs, folders the definition names that it does not hold yet). When
/// something is lacking the result is not final; the loader reads it and parses again.
pub fn parse_bundle(
    display: &str,
    path: &Path,
    bundle: &Bundle,
    ctx: &ValidationContext,
) -> (Result<Dag, Vec<Diagnostic>>, Vec<Want>) {
    let src = bundle.toml.as_str();
    let mut sink = Sink::new(display.to_string(), src);
    if src.len() > MAX_FILE_BYTES {
        sink.error(
            0..0,
            None,
            format!(
                "file is {} bytes; a DAG file may be at most {MAX_FILE_BYTES} bytes",
                src.len()
            ),
        );
        return (Err(sink.diagnostics), Vec::new());
    }
    if src.contains('\0') {
        let at = src.find('\0').unwrap_or(0);
        sink.error(at..at, None, "file contains a NUL byte");
        return (Err(sink.diagnostics), Vec::new());
    }
    if let Some(at) = nesting_too_deep(src) {
        sink.error(
            at..at,
            None,
            format!("arrays or tables nested more than {MAX_NESTING} levels deep"),
        );
        return (Err(sink.diagnostics), Vec::new());
    }
    let (root, syntax_errors) = DeTable::parse_recoverable(src);
    if !syntax_errors.is_empty() {
        for e in syntax_errors {
            let span = e.span().unwrap_or(0..0);
            sink.error(
                span,
                None,
                format!("TOML syntax error: {}", e.message().trim_end_matches('\n')),
            );
        }
        return (Err(sink.diagnostics), Vec::new());
    }
    let mut p = Parser {
        sink,
        src,
        ctx,
        param_names: Vec::new(),
        bundle,
        wants: Vec::new(),
    };
    let dag = p.dag(root.get_ref(), path);
    let mut wants = std::mem::take(&mut p.wants);
    wants.sort();
    wants.dedup();
    let result = match dag {
        Some(d) if !p.sink.has_errors() => Ok(d),
        _ => {
            let mut diags = p.sink.diagnostics;
            diags.sort_by_key(|d| (d.line, d.column));
            Err(diags)
        }
    };
    (result, wants)
}

/// Task settings shared by `[defaults]` and each task.
#[derive(Debug, Clone)]
pub(crate) struct Common {
    retries: u32,
    retry_delay: Duration,
    retry_exponential_backoff: bool,
    max_retry_delay: Option<Duration>,
    timeout: Option<Duration>,
    trigger_rule: TriggerRule,
    pool: String,
    pool_slots: u32,
    queue: String,
    priority: i32,
    env: BTreeMap<String, String>,
    callbacks: Callbacks,
}

impl Default for Common {
    fn default() -> Self {
        Common {
            retries: 0,
            retry_delay: Duration::from_secs(300),
            retry_exponential_backoff: false,
            max_retry_delay: None,
            timeout: None,
            trigger_rule: TriggerRule::AllSuccess,
            pool: super::DEFAULT_POOL.to_string(),
            pool_slots: 1,
            queue: super::DEFAULT_QUEUE.to_string(),
            priority: 0,
            env: BTreeMap::new(),
            callbacks: Callbacks::default(),
        }
    }
}

pub(crate) struct Parser<'s, 'c> {
    pub(crate) sink: Sink<'s>,
    pub(crate) src: &'s str,
    pub(crate) ctx: &'c ValidationContext,
    pub(crate) param_names: Vec<String>,
    /// The definition's files; paths in the TOML are relative to the DAG file's folder.
    pub(crate) bundle: &'s Bundle,
    /// What the bundle lacks.
    pub(crate) wants: Vec<Want>,
}

impl<'s> Parser<'s, '_> {
    pub(crate) fn dag(&mut self, root: &DeTable<'_>, path: &Path) -> Option<Dag> {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("dag")
            .to_string();
        let dag_id = match lookup(root, "dag_id") {
            Some(v) => match self.string(v, None, "dag_id") {
                Some(id) if is_identifier(&id) => id,
                Some(id) => {
                    self.err(
                        v.span(),
                        None,
                        format!("dag_id \"{id}\" may only use letters, digits, '_', '-' and '.', starting with a letter, digit or '_'"),
                    );
                    stem.clone()
                }
                None => stem.clone(),
            },
            None => {
                if !is_identifier(&stem) {
                    self.err(0..0, None, format!("file name \"{stem}\" is not a valid dag_id (letters, digits, '_', '-', '.'); set dag_id"));
                }
                stem.clone()
            }
        };
        self.sink.dag_id = Some(dag_id.clone());
        self.check_keys(root, None, DAG_KEYS, "dag file");

        let timezone = match lookup(root, "timezone") {
            Some(v) => match self.string(v, None, "timezone") {
                Some(name) => match Tz::from_str(name.trim()) {
                    Ok(tz) => tz,
                    Err(_) => {
                        let hint =
                            did_you_mean(&name, chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()));
                        self.err(v.span(), None, format!("unknown time zone \"{name}\"{hint}; use an IANA name such as \"Europe/Berlin\" or \"UTC\""));
                        Tz::UTC
                    }
                },
                None => Tz::UTC,
            },
            None => Tz::UTC,
        };

        let schedule = match lookup(root, "schedule") {
            Some(v) => match self.string(v, None, "schedule") {
                Some(expr) => match Schedule::parse(&expr) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        self.err(v.span(), None, e);
                        None
                    }
                },
                None => None,
            },
            None => Some(Schedule::None),
        };

        let date = |p: &mut Self, key: &str| -> Option<(DateTime<Utc>, Range<usize>)> {
            let v = lookup(root, key)?;
            let text = match v.get_ref() {
                DeValue::String(s) => s.to_string(),
                DeValue::Datetime(d) => d.to_string(),
                _ => {
                    p.type_error(v, None, key, "a date such as \"2026-01-01\"");
                    return None;
                }
            };
            match parse_datetime_in(&text, timezone) {
                Ok(d) => Some((d, v.span())),
                Err(e) => {
                    p.err(v.span(), None, format!("\"{key}\": {e}"));
                    None
                }
            }
        };
        let start_date = date(self, "start_date");
        let end_date = date(self, "end_date");
        if let (Some((s, _)), Some((e, espan))) = (&start_date, &end_date)
            && s > e
        {
            self.err(
                espan.clone(),
                None,
                format!(
                    "end_date {} is before start_date {}",
                    e.with_timezone(&timezone).format("%Y-%m-%d %H:%M"),
                    s.with_timezone(&timezone).format("%Y-%m-%d %H:%M")
                ),
            );
        }
        if let (Some(s), None) = (&schedule, &start_date)
            && !s.is_none()
            && lookup(root, "start_date").is_none()
        {
            let span = lookup(root, "schedule").map_or(0..0, |v| v.span());
            self.err(span, None, "a scheduled dag needs a start_date (e.g. start_date = \"2026-01-01\"); use schedule = \"none\" for manual-only dags");
        }

        let description =
            lookup(root, "description").and_then(|v| self.string(v, None, "description"));
        let owner = lookup(root, "owner").and_then(|v| self.string(v, None, "owner"));
        let catchup = lookup(root, "catchup")
            .and_then(|v| self.boolean(v, None, "catchup"))
            .unwrap_or(false);
        let max_active_runs = lookup(root, "max_active_runs")
            .and_then(|v| self.integer(v, None, "max_active_runs", 1, 10_000))
            .unwrap_or(16) as u32;
        let max_active_tasks = lookup(root, "max_active_tasks")
            .and_then(|v| self.integer(v, None, "max_active_tasks", 1, 100_000))
            .unwrap_or(16) as u32;
        let tags = lookup(root, "tags")
            .and_then(|v| self.string_list(v, None, "tags"))
            .map(|l| l.into_iter().map(Spanned::into_inner).collect())
            .unwrap_or_default();

        let params = match lookup(root, "params") {
            Some(v) => self.params(v, schedule.as_ref().is_some_and(|s| !s.is_none())),
            None => Vec::new(),
        };
        self.param_names = params.iter().map(|p| p.name.clone()).collect();

        let dag_callbacks = self.callbacks(root, None);

        let defaults = match lookup(root, "defaults") {
            Some(v) => match v.get_ref() {
                DeValue::Table(t) => {
                    self.check_keys(t, None, COMMON_KEYS, "[defaults]");
                    self.common(t, None, &Common::default())
                }
                _ => {
                    self.type_error(v, None, "defaults", "a table");
                    Common::default()
                }
            },
            None => Common::default(),
        };

        let mut tasks: Vec<Task> = Vec::new();
        let mut dep_spans: Vec<Vec<Spanned<String>>> = Vec::new();
        let mut task_spans: Vec<Range<usize>> = Vec::new();
        match lookup(root, "tasks") {
            Some(v) => match v.get_ref() {
                DeValue::Table(t) if t.len() > MAX_TASKS => {
                    self.err(
                        v.span(),
                        None,
                        format!(
                            "dag has {} tasks; a dag may have at most {MAX_TASKS} (split it into several dags)",
                            t.len()
                        ),
                    );
                }
                DeValue::Table(t) => {
                    for (k, tv) in entries(t) {
                        let id = k.get_ref().to_string();
                        if !is_identifier(&id) || id.contains('.') {
                            self.err(
                                k.span(),
                                None,
                                format!(
                                    "task id \"{id}\" may only use letters, digits, '_' and '-', starting with a letter, digit or '_'"
                                ),
                            );
                        }
                        let DeValue::Table(tt) = tv.get_ref() else {
                            self.err(tv.span(), Some(&id), format!("task \"{id}\" must be a table: write [tasks.{id}] with kind = \"shell\" and its settings"));
                            continue;
                        };
                        if let Some((task, deps)) = self.task(&id, tt, k.span(), &defaults) {
                            tasks.push(task);
                            dep_spans.push(deps);
                            task_spans.push(k.span());
                        }
                    }
                    if t.is_empty() {
                        self.err(
                            v.span(),
                            None,
                            "dag has no tasks: add at least one [tasks.<id>] table",
                        );
                    }
                }
                _ => self.type_error(v, None, "tasks", "a table of tasks ([tasks.<id>])"),
            },
            None => self.err(
                0..0,
                None,
                "dag has no tasks: add at least one [tasks.<id>] table",
            ),
        }

        let edges: usize = dep_spans.iter().map(Vec::len).sum();
        if edges > MAX_EDGES {
            let span = lookup(root, "tasks").map_or(0..0, |v| v.span());
            self.err(
                span,
                None,
                format!("dag has {edges} dependencies (depends_on entries); a dag may have at most {MAX_EDGES}"),
            );
            return None;
        }
        let topo_order = self.graph(&tasks, &dep_spans, &task_spans);
        let index: HashMap<&str, usize> = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.task_id.as_str(), i))
            .collect();
        let mut downstream = vec![Vec::new(); tasks.len()];
        for (i, t) in tasks.iter().enumerate() {
            for d in &t.depends_on {
                if let Some(&j) = index.get(d.as_str()) {
                    downstream[j].push(i);
                }
            }
        }

        let schedule = schedule?;
        // The version is the hash of the whole bundle: editing a model is a new version.
        let bundle = std::sync::Arc::new(self.bundle.clone());
        Some(Dag {
            dag_id,
            file: path.to_path_buf(),
            source_hash: bundle.hash(),
            bundle,
            description,
            schedule,
            timezone,
            start_date: start_date.map(|(d, _)| d),
            end_date: end_date.map(|(d, _)| d),
            catchup,
            max_active_runs,
            max_active_tasks,
            tags,
            owner,
            params,
            callbacks: dag_callbacks,
            tasks,
            topo_order: topo_order?,
            downstream,
            warnings: std::mem::take(&mut self.sink.warnings),
        })
    }

    pub(crate) fn common(&mut self, t: &DeTable<'_>, task: Option<&str>, base: &Common) -> Common {
        let mut c = base.clone();
        if let Some(v) = lookup(t, "retries") {
            c.retries = self
                .integer(v, task, "retries", 0, 1000)
                .map_or(c.retries, |n| n as u32);
        }
        if let Some(v) = lookup(t, "retry_delay") {
            c.retry_delay = self
                .duration(v, task, "retry_delay")
                .unwrap_or(c.retry_delay);
        }
        if let Some(v) = lookup(t, "retry_exponential_backoff") {
            c.retry_exponential_backoff = self
                .boolean(v, task, "retry_exponential_backoff")
                .unwrap_or(false);
        }
        if let Some(v) = lookup(t, "max_retry_delay") {
            c.max_retry_delay = self.duration(v, task, "max_retry_delay");
        }
        if let Some(v) = lookup(t, "timeout") {
            c.timeout = self.duration(v, task, "timeout");
        }
        if let Some(v) = lookup(t, "trigger_rule")
            && let Some(s) = self.string(v, task, "trigger_rule")
        {
            match TriggerRule::from_name(&s) {
                Some(r) => c.trigger_rule = r,
                None => {
                    let hint = did_you_mean(&s, TriggerRule::NAMES);
                    self.err(
                        v.span(),
                        task,
                        format!(
                            "unknown trigger_rule \"{s}\"{hint}; use one of {}",
                            TriggerRule::NAMES.join(", ")
                        ),
                    );
                }
            }
        }
        if let Some(v) = lookup(t, "pool")
            && let Some(s) = self.string(v, task, "pool")
        {
            if self.ctx.pools.contains(&s) {
                c.pool = s;
            } else {
                let hint = did_you_mean(&s, self.ctx.pools.iter().map(String::as_str));
                let known: Vec<&str> = self.ctx.pools.iter().map(String::as_str).collect();
                self.err(v.span(), task, format!("unknown pool \"{s}\"{hint}; pools are declared in weft.toml [pools] (known: {})", known.join(", ")));
            }
        }
        if let Some(v) = lookup(t, "pool_slots") {
            c.pool_slots = self
                .integer(v, task, "pool_slots", 1, 100_000)
                .map_or(1, |n| n as u32);
        }
        if let Some(v) = lookup(t, "queue")
            && let Some(s) = self.string(v, task, "queue")
        {
            if super::valid_queue(&s) {
                c.queue = s;
            } else {
                self.err(v.span(), task, format!("queue \"{}\" is not a queue name: use 1 to 64 letters, digits, `_`, `-` or `.`", s.chars().take(80).collect::<String>()));
            }
        }
        if let Some(v) = lookup(t, "priority") {
            c.priority = self
                .integer(v, task, "priority", -1_000_000, 1_000_000)
                .map_or(0, |n| n as i32);
        }
        if let Some(v) = lookup(t, "env")
            && let Some(env) = self.string_table(v, task, "env", true)
        {
            c.env.extend(env);
        }
        let cb = self.callbacks(t, task);
        c.callbacks.on_failure = cb.on_failure.or(c.callbacks.on_failure);
        c.callbacks.on_success = cb.on_success.or(c.callbacks.on_success);
        c.callbacks.on_retry = cb.on_retry.or(c.callbacks.on_retry);
        if let (Some(max), true) = (c.max_retry_delay, c.retry_exponential_backoff)
            && max < c.retry_delay
            && let Some(v) = lookup(t, "max_retry_delay")
        {
            self.err(
                v.span(),
                task,
                "max_retry_delay is shorter than retry_delay",
            );
        }
        c
    }

    pub(crate) fn task(
        &mut self,
        id: &str,
        t: &DeTable<'_>,
        key_span: Range<usize>,
        defaults: &Common,
    ) -> Option<(Task, Vec<Spanned<String>>)> {
        let task = Some(id);
        let kind_name = match lookup(t, "kind") {
            Some(v) => self.string(v, task, "kind").map(|k| (k, v.span())),
            None => {
                self.err(
                    key_span.clone(),
                    task,
                    format!(
                        "task has no kind; add kind = \"shell\" (one of {})",
                        kinds::names().collect::<Vec<_>>().join(", ")
                    ),
                );
                None
            }
        };
        let kind = kind_name
            .as_ref()
            .and_then(|(k, _)| kinds::find(k.as_str()));
        let kind_keys: &[&str] = kind.map_or(&[], |k| k.keys);
        // Keys are checked against the kind so `url` on a shell task says so.
        let known_kind = kind.is_some();
        for (k, _) in entries(t) {
            let key = k.get_ref().as_ref();
            if key == "kind"
                || key == "depends_on"
                || COMMON_KEYS.contains(&key)
                || kind_keys.contains(&key)
                || !known_kind
            {
                continue;
            }
            let other_kind = kinds::KINDS
                .iter()
                .find(|k| k.keys.contains(&key))
                .map(|k| k.name);
            let kind = kind_name.as_ref().map_or("", |(k, _)| k.as_str());
            match other_kind {
                Some(other) => self.err(
                    k.span(),
                    task,
                    format!("key \"{key}\" belongs to kind \"{other}\", not \"{kind}\""),
                ),
                None => {
                    let all = ["kind", "depends_on"]
                        .iter()
                        .chain(COMMON_KEYS)
                        .chain(kind_keys)
                        .copied();
                    let hint = did_you_mean(key, all);
                    self.err(
                        k.span(),
                        task,
                        format!("unknown key \"{key}\" in task of kind \"{kind}\"{hint}"),
                    );
                }
            }
        }

        let deps = match lookup(t, "depends_on") {
            Some(v) => match v.get_ref() {
                DeValue::String(s) => vec![Spanned::new(v.span(), s.to_string())],
                _ => self.string_list(v, task, "depends_on").unwrap_or_default(),
            },
            None => Vec::new(),
        };
        let common = self.common(t, task, defaults);

        let spec = match (kind_name, kind) {
            (Some(_), Some(kind)) => (kind.parse)(self, t, id, key_span),
            (Some((other, span)), None) => {
                let hint = did_you_mean(&other, kinds::names());
                self.err(
                    span,
                    task,
                    format!(
                        "unknown kind \"{other}\"{hint}; use one of {}",
                        kinds::names().collect::<Vec<_>>().join(", ")
                    ),
                );
                None
            }
            (None, _) => None,
        }?;
        Some((
            Task {
                task_id: id.to_string(),
                spec,
                depends_on: deps.iter().map(|d| d.get_ref().clone()).collect(),
                retries: common.retries,
                retry_delay: common.retry_delay,
                retry_exponential_backoff: common.retry_exponential_backoff,
                max_retry_delay: common.max_retry_delay,
                timeout: common.timeout,
                trigger_rule: common.trigger_rule,
                pool: common.pool,
                pool_slots: common.pool_slots,
                queue: common.queue,
                priority: common.priority,
                env: common.env,
                callbacks: common.callbacks,
            },
            deps,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_parses_without_io_and_asks_for_what_it_lacks() {
        let ctx = ValidationContext::default();
        let path = Path::new("/nonexistent/dir/d.toml");
        let toml = "[tasks.q]\nkind = \"sql\"\nfile = \"q.sql\"\n[tasks.m]\nkind = \"transform\"\nmodels = \"models/*.sql\"\n";
        let mut b = Bundle::of_toml(toml);
        let (_, wants) = parse_bundle("d.toml", path, &b, &ctx);
        assert_eq!(
            wants,
            vec![
                Want::File("q.sql".into()),
                Want::Glob("models/*.sql".into())
            ]
        );
        // The folder does not exist: everything comes from the bundle.
        b.files
            .insert("q.sql".into(), FileEntry::Text("SELECT 1".into()));
        b.globs.insert(
            "models/*.sql".into(),
            GlobEntry::Matches(vec!["models/a.sql".into()]),
        );
        b.files.insert(
            "models/a.sql".into(),
            FileEntry::Text("SELECT 2 AS x".into()),
        );
        let (r, wants) = parse_bundle("d.toml", path, &b, &ctx);
        assert!(wants.is_empty());
        let dag = r.expect("valid");
        assert_eq!(dag.source_hash, b.hash());
        let sql = dag
            .task("q")
            .and_then(|t| t.spec_of::<crate::kinds::sql::SqlSpec>());
        assert_eq!(sql.map(|s| s.sql.as_str()), Some("SELECT 1"));
        // A file the loader could not read is an error at the key.
        b.files
            .insert("q.sql".into(), FileEntry::Unreadable("denied".into()));
        let (r, _) = parse_bundle("d.toml", path, &b, &ctx);
        let e = r.expect_err("unreadable");
        assert!(
            e.iter()
                .any(|d| d.message == "cannot read sql file \"q.sql\": denied" && d.line == 3),
            "{e:?}"
        );
    }

    #[test]
    fn unknown_kinds_and_foreign_keys_come_from_the_registry() {
        let ctx = ValidationContext::default();
        let parse = |src: &str| {
            parse_bundle("k.toml", Path::new("k.toml"), &Bundle::of_toml(src), &ctx)
                .0
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|d| d.message)
                .collect::<Vec<_>>()
        };
        let e = parse("[tasks.a]\nkind = \"shel\"\n");
        assert!(
            e[0].starts_with("unknown kind \"shel\" (did you mean \"shell\"?)"),
            "{e:?}"
        );
        assert!(e[0].contains(&kinds::names().collect::<Vec<_>>().join(", ")));
        let e = parse("[tasks.a]\nkind = \"shell\"\ncommand = \"true\"\nurl = \"https://e.com\"\n");
        assert_eq!(
            e,
            vec!["key \"url\" belongs to kind \"http\", not \"shell\"".to_string()]
        );
    }
}
