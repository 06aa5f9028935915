//! Reading one DAG file: the spanned TOML tree is walked key by key, every problem is
//! collected into a [`Sink`], and a [`Dag`] comes out only when there are none.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use petgraph::graph::DiGraph;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::bundle::{Bundle, FileEntry, GlobEntry, MAX_FILE_BYTES, Want};
use super::diag::{Diagnostic, Sink, did_you_mean};
use super::template;
use super::{
    Callback, Callbacks, Dag, HttpSpec, Param, ParamType, Schedule, Task, TaskKind, TriggerRule,
    ValidationContext,
};

type Value<'i> = Spanned<DeValue<'i>>;

const DAG_KEYS: &[&str] = &[
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

const COMMON_KEYS: &[&str] = &[
    "retries",
    "retry_delay",
    "retry_exponential_backoff",
    "max_retry_delay",
    "timeout",
    "trigger_rule",
    "pool",
    "pool_slots",
    "priority",
    "env",
    "on_failure",
    "on_success",
    "on_retry",
];

const SHELL_KEYS: &[&str] = &["command", "cwd"];
const HTTP_KEYS: &[&str] = &["url", "method", "headers", "body", "expected_status"];
const SQL_KEYS: &[&str] = &["sql", "file", "connection"];
const INGEST_KEYS: &[&str] = &[
    "source",
    "table",
    "connection",
    "max_reject_ratio",
    "out_of_interval",
];
const TRANSFORM_KEYS: &[&str] = &["models", "connection", "tests", "tests_block"];
const EXPERIMENT_KEYS: &[&str] = &[
    "experiment",
    "exposures",
    "range",
    "start",
    "events",
    "control",
    "split",
    "metrics",
    "connection",
];
const SURVEY_KEYS: &[&str] = &[
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
];
const TEST_TYPES: &[&str] = &[
    "not_null",
    "unique",
    "accepted_values",
    "relationships",
    "sql",
];
const HTTP_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

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
struct Common {
    retries: u32,
    retry_delay: Duration,
    retry_exponential_backoff: bool,
    max_retry_delay: Option<Duration>,
    timeout: Option<Duration>,
    trigger_rule: TriggerRule,
    pool: String,
    pool_slots: u32,
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
            priority: 0,
            env: BTreeMap::new(),
            callbacks: Callbacks::default(),
        }
    }
}

struct Parser<'s, 'c> {
    sink: Sink<'s>,
    src: &'s str,
    ctx: &'c ValidationContext,
    param_names: Vec<String>,
    /// The definition's files; paths in the TOML are relative to the DAG file's folder.
    bundle: &'s Bundle,
    /// What the bundle lacks.
    wants: Vec<Want>,
}

/// The deepest nesting of arrays and inline tables a DAG file may use.
const MAX_NESTING: usize = 64;

/// Where brackets first nest deeper than [`MAX_NESTING`], outside strings and comments;
/// checked before parsing so the TOML parser never recurses that deep.
fn nesting_too_deep(src: &str) -> Option<usize> {
    let b = src.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            q @ (b'"' | b'\'') => {
                let triple = b.get(i..i + 3) == Some(&[q, q, q][..]);
                i += if triple { 3 } else { 1 };
                while i < b.len() {
                    if q == b'"' && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if triple {
                        if b.get(i..i + 3) == Some(&[q, q, q][..]) {
                            i += 2;
                            break;
                        }
                    } else if b[i] == q || b[i] == b'\n' {
                        break;
                    }
                    i += 1;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'\n' if depth == 0 => {}
            _ => {}
        }
        i += 1;
    }
    None
}

/// Entries of a table in the order they appear in the file.
fn entries<'t, 'i>(
    t: &'t DeTable<'i>,
) -> Vec<(&'t Spanned<std::borrow::Cow<'i, str>>, &'t Value<'i>)> {
    let mut v: Vec<_> = t.iter().collect();
    v.sort_by_key(|(k, _)| k.span().start);
    v
}

fn lookup<'t, 'i>(t: &'t DeTable<'i>, key: &str) -> Option<&'t Value<'i>> {
    t.iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, v)| v)
}

/// An http(s) URL, or a template that renders to one at run time.
fn url_or_template(url: &str) -> bool {
    template::is_templated(url) || url.starts_with("http://") || url.starts_with("https://")
}

/// Letters, digits, `_`, `-` and `.`, starting with a letter, digit or `_` (so no id is
/// `.`, `..` or reads as a command-line option such as `-rf`).
fn is_identifier(s: &str) -> bool {
    s.len() <= 200
        && s.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// Parses `2026-01-01`, `2026-01-01T02:00:00` (both in `tz`) or an RFC 3339 time.
pub(crate) fn parse_datetime_in(s: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        let dt = dt.with_timezone(&Utc);
        if !(MIN_YEAR..=MAX_YEAR).contains(&dt.year()) {
            return Err(format!(
                "\"{s}\" is out of range; dates must lie between the years {MIN_YEAR} and {MAX_YEAR}"
            ));
        }
        return Ok(dt);
    }
    let naive = if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0)
    } else {
        [
            "%Y-%m-%dT%H:%M:%S",
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%d %H:%M",
        ]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
    };
    let naive = naive.ok_or_else(|| {
        format!(
            "\"{s}\" is not a date or time; expected e.g. \"2026-01-01\" or \"2026-01-01T02:00:00\""
        )
    })?;
    if !(MIN_YEAR..=MAX_YEAR).contains(&naive.year()) {
        return Err(format!(
            "\"{s}\" is out of range; dates must lie between the years {MIN_YEAR} and {MAX_YEAR}"
        ));
    }
    tz.from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(naive + chrono::Duration::hours(1)))
                .earliest()
        })
        .map(|d| d.with_timezone(&Utc))
        .ok_or_else(|| format!("\"{s}\" does not exist in time zone {tz}"))
}

impl<'s> Parser<'s, '_> {
    fn err(&mut self, span: Range<usize>, task: Option<&str>, msg: impl Into<String>) {
        self.sink.error(span, task, msg);
    }

    fn check_keys(&mut self, t: &DeTable<'_>, task: Option<&str>, allowed: &[&str], what: &str) {
        for (k, _) in entries(t) {
            let key = k.get_ref().as_ref();
            if !allowed.contains(&key) {
                let hint = did_you_mean(key, allowed.iter().copied());
                self.err(
                    k.span(),
                    task,
                    format!("unknown key \"{key}\" in {what}{hint}"),
                );
            }
        }
    }

    /// The text of a file the definition reads (`rel` is relative to the DAG file's
    /// folder), or a diagnostic on `span` saying why there is none. A file the bundle
    /// does not hold yet is asked for.
    fn file_text(
        &mut self,
        span: Range<usize>,
        task: Option<&str>,
        key: &str,
        what: &str,
        rel: &str,
    ) -> Option<String> {
        let bundle = self.bundle;
        match bundle.files.get(rel) {
            None => {
                self.wants.push(Want::File(rel.to_string()));
                None
            }
            Some(FileEntry::Text(s)) => Some(s.clone()),
            Some(FileEntry::Outside) => {
                self.err(
                    span,
                    task,
                    format!("\"{key}\" = \"{rel}\" is outside the DAG's folder; files a DAG reads must be inside the folder of its TOML file"),
                );
                None
            }
            Some(FileEntry::TooBig(n)) => {
                self.err(
                    span,
                    task,
                    format!("{what} \"{rel}\" is {n} bytes; at most {MAX_FILE_BYTES} are allowed"),
                );
                None
            }
            Some(FileEntry::Unreadable(e)) => {
                self.err(span, task, format!("cannot read {what} \"{rel}\": {e}"));
                None
            }
        }
    }

    fn type_error(&mut self, v: &Value<'_>, task: Option<&str>, key: &str, want: &str) {
        let found = v.get_ref().type_str();
        self.err(
            v.span(),
            task,
            format!("\"{key}\" must be {want}, found {found}"),
        );
    }

    fn string(&mut self, v: &Value<'_>, task: Option<&str>, key: &str) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) if s.contains('\0') => {
                self.err(
                    v.span(),
                    task,
                    format!("\"{key}\" contains a NUL character"),
                );
                None
            }
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.type_error(v, task, key, "a string");
                None
            }
        }
    }

    fn boolean(&mut self, v: &Value<'_>, task: Option<&str>, key: &str) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.type_error(v, task, key, "true or false");
                None
            }
        }
    }

    fn integer(
        &mut self,
        v: &Value<'_>,
        task: Option<&str>,
        key: &str,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let DeValue::Integer(i) = v.get_ref() else {
            self.type_error(v, task, key, "an integer");
            return None;
        };
        let digits: String = i.as_str().chars().filter(|c| *c != '_').collect();
        let digits = digits
            .trim_start_matches("0x")
            .trim_start_matches("0o")
            .trim_start_matches("0b");
        match i64::from_str_radix(digits, i.radix()) {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            Ok(n) => {
                self.err(
                    v.span(),
                    task,
                    format!("\"{key}\" must be between {min} and {max}, found {n}"),
                );
                None
            }
            Err(_) => {
                self.err(v.span(), task, format!("\"{key}\" is not a valid integer"));
                None
            }
        }
    }

    fn duration(&mut self, v: &Value<'_>, task: Option<&str>, key: &str) -> Option<Duration> {
        let DeValue::String(s) = v.get_ref() else {
            self.type_error(
                v,
                task,
                key,
                "a duration string such as \"90s\", \"5m\" or \"1h30m\"",
            );
            return None;
        };
        match humantime::parse_duration(s.trim()) {
            Ok(d) if d.is_zero() && key != "retry_delay" => {
                self.err(
                    v.span(),
                    task,
                    format!("\"{key}\" must be longer than zero"),
                );
                None
            }
            Ok(d) if d > MAX_DURATION => {
                self.err(
                    v.span(),
                    task,
                    format!("\"{key}\" is {s}; the longest duration weft accepts is 366 days"),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.err(
                    v.span(),
                    task,
                    format!(
                        "\"{key}\": bad duration \"{s}\" ({}); write e.g. \"90s\", \"5m\" or \"1h30m\"",
                        e.to_string().to_lowercase()
                    ),
                );
                None
            }
        }
    }

    fn string_list(
        &mut self,
        v: &Value<'_>,
        task: Option<&str>,
        key: &str,
    ) -> Option<Vec<Spanned<String>>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.type_error(v, task, key, "a list of strings");
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push(Spanned::new(item.span(), s.to_string())),
                _ => {
                    let found = item.get_ref().type_str();
                    self.err(
                        item.span(),
                        task,
                        format!("\"{key}\" must list strings, found {found}"),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// A table of string values (env, headers); values are template-checked.
    fn string_table(
        &mut self,
        v: &Value<'_>,
        task: Option<&str>,
        key: &str,
        templated: bool,
    ) -> Option<BTreeMap<String, String>> {
        let DeValue::Table(t) = v.get_ref() else {
            self.type_error(v, task, key, "a table of strings");
            return None;
        };
        let mut out = BTreeMap::new();
        for (k, val) in entries(t) {
            let name = format!("{key}.{}", k.get_ref());
            let valid_var = |n: &str| {
                n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            };
            if key == "env" && !valid_var(k.get_ref()) {
                self.err(
                    k.span(),
                    task,
                    format!(
                        "environment variable name \"{}\" may only use letters, digits and '_', not starting with a digit",
                        k.get_ref().escape_debug()
                    ),
                );
                continue;
            }
            if let Some(s) = self.string(val, task, &name) {
                if templated {
                    self.check_template(val, &s, task, &[]);
                }
                out.insert(k.get_ref().to_string(), s);
            }
        }
        Some(out)
    }

    fn check_template(&mut self, v: &Value<'_>, text: &str, task: Option<&str>, extra: &[&str]) {
        let params: Vec<&str> = self.param_names.iter().map(String::as_str).collect();
        let problems = template::check(text, &params, extra);
        if problems.is_empty() {
            return;
        }
        let span = v.span();
        let raw = self.src.get(span.clone()).unwrap_or("");
        // Where the text starts inside the literal: after `"`/`'`, or `"""`/`'''` and the
        // newline TOML trims after them. Exact unless the string has escapes.
        let mut prefix = if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
            3
        } else {
            1
        };
        if prefix == 3 && raw[3..].starts_with('\n') {
            prefix += 1;
        }
        for p in problems {
            let at = match p.offset {
                Some(o) if !raw.contains('\\') => span.start + prefix + o,
                _ => span.start,
            };
            self.err(at..at, task, p.message);
        }
    }

    fn dag(&mut self, root: &DeTable<'_>, path: &Path) -> Option<Dag> {
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

    fn params(&mut self, v: &Value<'_>, scheduled: bool) -> Vec<Param> {
        let DeValue::Table(t) = v.get_ref() else {
            self.type_error(v, None, "params", "a table ([params])");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, pv) in entries(t) {
            let name = k.get_ref().to_string();
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                self.err(
                    k.span(),
                    None,
                    format!("param name \"{name}\" may only use letters, digits and '_'"),
                );
                continue;
            }
            let (ty, default, description) = match pv.get_ref() {
                DeValue::Table(pt) => {
                    self.check_keys(
                        pt,
                        None,
                        &["type", "default", "description"],
                        &format!("param \"{name}\""),
                    );
                    let ty = match lookup(pt, "type") {
                        Some(tv) => match self.string(tv, None, "type") {
                            Some(s) => match ParamType::from_name(&s) {
                                Some(t) => Some(t),
                                None => {
                                    let hint = did_you_mean(&s, ParamType::NAMES);
                                    self.err(tv.span(), None, format!("param \"{name}\": unknown type \"{s}\"{hint}; use one of {}", ParamType::NAMES.join(", ")));
                                    continue;
                                }
                            },
                            None => continue,
                        },
                        None => None,
                    };
                    let default = lookup(pt, "default");
                    let description =
                        lookup(pt, "description").and_then(|d| self.string(d, None, "description"));
                    let ty = match (ty, default) {
                        (Some(t), _) => t,
                        (None, Some(d)) => {
                            match infer_type(d.get_ref()) {
                                Some(t) => t,
                                None => {
                                    self.err(d.span(), None, format!("param \"{name}\": cannot infer a type from a {}; set type", d.get_ref().type_str()));
                                    continue;
                                }
                            }
                        }
                        (None, None) => {
                            self.err(
                                pv.span(),
                                None,
                                format!("param \"{name}\" needs a type or a default"),
                            );
                            continue;
                        }
                    };
                    let default = match default {
                        Some(d) => match toml_to_json(d.get_ref()).and_then(|j| ty.coerce(&j).ok())
                        {
                            Some(j) => Some(j),
                            None => {
                                self.err(
                                    d.span(),
                                    None,
                                    format!(
                                        "param \"{name}\": default is a {}, but the type is {}",
                                        d.get_ref().type_str(),
                                        ty.name()
                                    ),
                                );
                                continue;
                            }
                        },
                        None => None,
                    };
                    (ty, default, description)
                }
                other => match infer_type(other) {
                    Some(ty) => (
                        ty,
                        toml_to_json(other).and_then(|j| ty.coerce(&j).ok()),
                        None,
                    ),
                    None => {
                        self.err(pv.span(), None, format!("param \"{name}\": a {} cannot be a param; use a string, integer, float, boolean or date", other.type_str()));
                        continue;
                    }
                },
            };
            if default.is_none() && scheduled {
                self.err(
                    k.span(),
                    None,
                    format!("param \"{name}\" has no default, but scheduled runs need one"),
                );
            }
            out.push(Param {
                name,
                ty,
                default,
                description,
            });
        }
        out
    }

    fn callbacks(&mut self, t: &DeTable<'_>, task: Option<&str>) -> Callbacks {
        let mut cb = Callbacks::default();
        for key in ["on_failure", "on_success", "on_retry"] {
            let Some(v) = lookup(t, key) else { continue };
            let parsed = self.callback(v, task, key);
            match key {
                "on_failure" => cb.on_failure = parsed,
                "on_success" => cb.on_success = parsed,
                _ => cb.on_retry = parsed,
            }
        }
        cb
    }

    fn callback(&mut self, v: &Value<'_>, task: Option<&str>, key: &str) -> Option<Callback> {
        let extra = template::CALLBACK_VARIABLES;
        match v.get_ref() {
            DeValue::String(s) => {
                self.check_template(v, s, task, extra);
                Some(Callback::Command {
                    command: s.to_string(),
                })
            }
            DeValue::Table(t) => {
                self.check_keys(t, task, &["command", "url", "method", "headers"], key);
                match (lookup(t, "command"), lookup(t, "url")) {
                    (Some(c), None) => {
                        let command = self.string(c, task, "command")?;
                        self.check_template(c, &command, task, extra);
                        Some(Callback::Command { command })
                    }
                    (None, Some(u)) => {
                        let url = self.string(u, task, "url")?;
                        self.check_template(u, &url, task, extra);
                        let method = self.method(t, task)?;
                        let headers = lookup(t, "headers")
                            .and_then(|h| self.string_table(h, task, "headers", false))
                            .unwrap_or_default();
                        Some(Callback::Http {
                            url,
                            method,
                            headers,
                        })
                    }
                    _ => {
                        self.err(
                            v.span(),
                            task,
                            format!("\"{key}\" needs exactly one of command or url"),
                        );
                        None
                    }
                }
            }
            _ => {
                self.type_error(
                    v,
                    task,
                    key,
                    "a shell command or a table { command = ... } / { url = ... }",
                );
                None
            }
        }
    }

    fn method(&mut self, t: &DeTable<'_>, task: Option<&str>) -> Option<String> {
        let Some(m) = lookup(t, "method") else {
            return Some("POST".into());
        };
        let s = self.string(m, task, "method")?.to_uppercase();
        if HTTP_METHODS.contains(&s.as_str()) {
            Some(s)
        } else {
            self.err(
                m.span(),
                task,
                format!(
                    "unknown HTTP method \"{s}\"; use one of {}",
                    HTTP_METHODS.join(", ")
                ),
            );
            None
        }
    }

    fn common(&mut self, t: &DeTable<'_>, task: Option<&str>, base: &Common) -> Common {
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

    fn task(
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
                        TaskKind::NAMES.join(", ")
                    ),
                );
                None
            }
        };
        let kind_keys: &[&str] = match kind_name.as_ref().map(|(k, _)| k.as_str()) {
            Some("shell") => SHELL_KEYS,
            Some("http") => HTTP_KEYS,
            Some("sql") => SQL_KEYS,
            Some("ingest") => INGEST_KEYS,
            Some("transform") => TRANSFORM_KEYS,
            Some("experiment") => EXPERIMENT_KEYS,
            Some("survey_sync") => SURVEY_KEYS,
            _ => &[],
        };
        // Keys are checked against the kind so `url` on a shell task says so.
        let known_kind = kind_name.as_ref().is_some_and(|(k, _)| {
            [
                "shell",
                "http",
                "sql",
                "noop",
                "ingest",
                "transform",
                "experiment",
                "survey_sync",
            ]
            .contains(&k.as_str())
        });
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
            let other_kind = [
                ("shell", SHELL_KEYS),
                ("http", HTTP_KEYS),
                ("sql", SQL_KEYS),
                ("ingest", INGEST_KEYS),
                ("transform", TRANSFORM_KEYS),
                ("experiment", EXPERIMENT_KEYS),
                ("survey_sync", SURVEY_KEYS),
            ]
            .iter()
            .find(|(_, keys)| keys.contains(&key))
            .map(|(n, _)| *n);
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

        let kind = match kind_name {
            Some((k, span)) => match k.as_str() {
                "shell" => self.shell(t, id, key_span),
                "http" => self.http(t, id, key_span),
                "sql" => self.sql(t, id, key_span),
                "noop" => Some(TaskKind::Noop),
                "ingest" => self.ingest(t, id, key_span),
                "transform" => self.transform(t, id, key_span),
                "experiment" => self.experiment(t, id, key_span),
                "survey_sync" => self.survey(t, id, key_span),
                other => {
                    let hint = did_you_mean(other, TaskKind::NAMES);
                    self.err(
                        span,
                        task,
                        format!(
                            "unknown kind \"{other}\"{hint}; use one of {}",
                            TaskKind::NAMES.join(", ")
                        ),
                    );
                    None
                }
            },
            None => None,
        }?;
        Some((
            Task {
                task_id: id.to_string(),
                kind,
                depends_on: deps.iter().map(|d| d.get_ref().clone()).collect(),
                retries: common.retries,
                retry_delay: common.retry_delay,
                retry_exponential_backoff: common.retry_exponential_backoff,
                max_retry_delay: common.max_retry_delay,
                timeout: common.timeout,
                trigger_rule: common.trigger_rule,
                pool: common.pool,
                pool_slots: common.pool_slots,
                priority: common.priority,
                env: common.env,
                callbacks: common.callbacks,
            },
            deps,
        ))
    }

    fn required(
        &mut self,
        t: &DeTable<'_>,
        id: &str,
        key: &str,
        key_span: &Range<usize>,
        kind: &str,
    ) -> Option<(String, Range<usize>)> {
        match lookup(t, key) {
            Some(v) => {
                let s = self.string(v, Some(id), key)?;
                if s.trim().is_empty() {
                    self.err(v.span(), Some(id), format!("\"{key}\" is empty"));
                    return None;
                }
                self.check_template(v, &s, Some(id), &[]);
                Some((s, v.span()))
            }
            None => {
                self.err(
                    key_span.clone(),
                    Some(id),
                    format!("{kind} task needs \"{key}\""),
                );
                None
            }
        }
    }

    fn shell(&mut self, t: &DeTable<'_>, id: &str, key_span: Range<usize>) -> Option<TaskKind> {
        let command = self.required(t, id, "command", &key_span, "shell");
        if let (Some((c, span)), Some(v)) = (&command, lookup(t, "command")) {
            let _ = v;
            if template::raw_params(c) {
                self.sink.warn(
                    span.clone(),
                    Some(id),
                    "a param is spliced into the command with `| raw`: its value runs as shell code; pass it through env instead",
                );
            }
        }
        let cwd: Option<std::path::PathBuf> = match lookup(t, "cwd") {
            Some(v) => match self.string(v, Some(id), "cwd") {
                Some(c) => {
                    let is_dir = self.bundle.dirs.get(&c).copied();
                    if is_dir.is_none() {
                        self.wants.push(Want::Dir(c.clone()));
                    } else if is_dir == Some(false) {
                        self.err(
                            v.span(),
                            Some(id),
                            format!("cwd \"{c}\" is not a folder (paths are relative to the DAG file's folder)"),
                        );
                    }
                    Some(c.into())
                }
                None => None,
            },
            None => None,
        };
        Some(TaskKind::Shell {
            command: command?.0,
            cwd,
        })
    }

    fn http(&mut self, t: &DeTable<'_>, id: &str, key_span: Range<usize>) -> Option<TaskKind> {
        let url = self.required(t, id, "url", &key_span, "http");
        if let Some((u, span)) = &url
            && !url_or_template(u)
        {
            self.err(
                span.clone(),
                Some(id),
                format!("url \"{u}\" must start with http:// or https://"),
            );
        }
        let method = match lookup(t, "method") {
            Some(_) => self.method(t, Some(id)),
            None => Some("GET".to_string()),
        };
        let headers = lookup(t, "headers")
            .and_then(|v| self.string_table(v, Some(id), "headers", true))
            .unwrap_or_default();
        let body = match lookup(t, "body") {
            Some(v) => {
                let b = self.string(v, Some(id), "body");
                if let Some(b) = &b {
                    self.check_template(v, b, Some(id), &[]);
                }
                b
            }
            None => None,
        };
        let expected_status = match lookup(t, "expected_status") {
            Some(v) => match v.get_ref() {
                DeValue::Integer(_) => self
                    .integer(v, Some(id), "expected_status", 100, 599)
                    .map(|n| vec![n as u16])
                    .unwrap_or_default(),
                DeValue::Array(items) => items
                    .iter()
                    .filter_map(|i| {
                        self.integer(i, Some(id), "expected_status", 100, 599)
                            .map(|n| n as u16)
                    })
                    .collect(),
                _ => {
                    self.type_error(
                        v,
                        Some(id),
                        "expected_status",
                        "a status code or a list of them",
                    );
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        Some(TaskKind::Http(HttpSpec {
            url: url?.0,
            method: method?,
            headers,
            body,
            expected_status,
        }))
    }

    fn sql(&mut self, t: &DeTable<'_>, id: &str, key_span: Range<usize>) -> Option<TaskKind> {
        let connection = self.connection(t, id)?;
        let sql = match (lookup(t, "sql"), lookup(t, "file")) {
            (Some(_), None) => self.required(t, id, "sql", &key_span, "sql")?.0,
            (None, Some(f)) => {
                let rel = self.string(f, Some(id), "file")?;
                let s = self.file_text(f.span(), Some(id), "file", "sql file", &rel)?;
                let params: Vec<&str> = self.param_names.iter().map(String::as_str).collect();
                for p in template::check(&s, &params, &[]) {
                    self.err(f.span(), Some(id), format!("{rel}: {}", p.message));
                }
                s
            }
            (Some(s), Some(_)) => {
                self.err(
                    s.span(),
                    Some(id),
                    "give either \"sql\" or \"file\", not both",
                );
                return None;
            }
            (None, None) => {
                self.err(
                    key_span,
                    Some(id),
                    "sql task needs \"sql\" (inline statements) or \"file\" (a .sql file)",
                );
                return None;
            }
        };
        Some(TaskKind::Sql { sql, connection })
    }

    fn connection(&mut self, t: &DeTable<'_>, id: &str) -> Option<String> {
        match lookup(t, "connection") {
            Some(v) => {
                let c = self.string(v, Some(id), "connection")?;
                if !self.ctx.connections.contains(&c) {
                    let hint = did_you_mean(&c, self.ctx.connections.iter().map(String::as_str));
                    self.err(v.span(), Some(id), format!("unknown connection \"{c}\"{hint}; connections are declared in weft.toml [connections]"));
                }
                Some(c)
            }
            None => Some("warehouse".to_string()),
        }
    }

    fn ingest(&mut self, t: &DeTable<'_>, id: &str, key_span: Range<usize>) -> Option<TaskKind> {
        let task = Some(id);
        let source = match lookup(t, "source") {
            Some(v) => match v.get_ref() {
                DeValue::Table(st) => {
                    self.check_keys(
                        st,
                        task,
                        &[
                            "path",
                            "url",
                            "dir",
                            "format",
                            "allow_empty",
                            "token",
                            "items",
                            "next",
                            "cursor_param",
                            "page_param",
                        ],
                        "source",
                    );
                    let opt_str = |p: &mut Self, key: &str| {
                        lookup(st, key).and_then(|v| p.string(v, task, key))
                    };
                    let drop_zone = lookup(st, "dir").is_some();
                    let (path, http) = match (
                        lookup(st, "path").or(lookup(st, "dir")),
                        lookup(st, "url"),
                    ) {
                        (Some(_), None) if lookup(st, "path").is_some() && drop_zone => {
                            self.err(
                                v.span(),
                                task,
                                "source takes path (files) or dir (a drop zone), not both",
                            );
                            (None, None)
                        }
                        (Some(p), None) => {
                            let s = self.string(p, task, "path");
                            if let Some(s) = &s {
                                self.check_template(p, s, task, &[]);
                            }
                            (s, None)
                        }
                        (None, Some(u)) => {
                            let url = self.string(u, task, "url");
                            if let Some(url) = &url {
                                self.check_template(u, url, task, &[]);
                                if !url_or_template(url) {
                                    self.err(
                                        u.span(),
                                        task,
                                        format!(
                                            "url \"{url}\" must start with http:// or https://"
                                        ),
                                    );
                                }
                            }
                            let http = url.map(|url| super::HttpEventSource {
                                url,
                                token: opt_str(self, "token"),
                                items: opt_str(self, "items").unwrap_or_else(|| "data".into()),
                                next: opt_str(self, "next"),
                                cursor_param: opt_str(self, "cursor_param")
                                    .unwrap_or_else(|| "cursor".into()),
                                page_param: opt_str(self, "page_param"),
                            });
                            (Some(String::new()), http)
                        }
                        _ => {
                            self.err(v.span(), task, "source needs exactly one of path (files), dir (a drop zone) or url (an HTTP endpoint), e.g. source = { path = \"data/events/*.jsonl\", format = \"jsonl\" }");
                            (None, None)
                        }
                    };
                    let format = match lookup(st, "format") {
                        Some(f) => match self.string(f, task, "format").as_deref() {
                            Some("jsonl") => Some(super::EventFormat::Jsonl),
                            Some("csv") => Some(super::EventFormat::Csv),
                            Some(other) => {
                                let hint = did_you_mean(other, ["jsonl", "csv"]);
                                self.err(
                                    f.span(),
                                    task,
                                    format!("unknown format \"{other}\"{hint}; use jsonl or csv"),
                                );
                                None
                            }
                            None => None,
                        },
                        None => None,
                    };
                    let allow_empty = lookup(st, "allow_empty")
                        .and_then(|b| self.boolean(b, task, "allow_empty"))
                        .unwrap_or(false);
                    path.map(|p| (p, format, allow_empty, http, drop_zone))
                }
                _ => {
                    self.type_error(
                        v,
                        task,
                        "source",
                        "a table such as { path = \"data/*.jsonl\", format = \"jsonl\" }",
                    );
                    None
                }
            },
            None => {
                self.err(key_span.clone(), task, "ingest task needs \"source\" (e.g. source = { path = \"data/events/*.jsonl\", format = \"jsonl\" })");
                None
            }
        };
        let table = match lookup(t, "table") {
            Some(v) => {
                let name = self.string(v, task, "table")?;
                let ok = name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && name.len() <= 60;
                if ok {
                    Some(name)
                } else {
                    self.err(v.span(), task, format!("table \"{name}\" must be a plain SQL name: letters, digits and '_', starting with a letter"));
                    None
                }
            }
            None => {
                self.err(
                    key_span,
                    task,
                    "ingest task needs \"table\" (the warehouse table to load into)",
                );
                None
            }
        };
        let connection = self.connection(t, id)?;
        let max_reject_ratio = match lookup(t, "max_reject_ratio") {
            Some(v) => {
                let r = match v.get_ref() {
                    DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
                    DeValue::Integer(_) => {
                        Some(self.integer(v, task, "max_reject_ratio", i64::MIN, i64::MAX)? as f64)
                    }
                    _ => {
                        self.type_error(v, task, "max_reject_ratio", "a number from 0 to 1");
                        return None;
                    }
                };
                match r {
                    Some(r) if (0.0..=1.0).contains(&r) => r,
                    None => return None,
                    Some(_) => {
                        self.err(v.span(), task, "\"max_reject_ratio\" must be a number from 0 to 1 (0.01 = 1 % of lines may be rejected)");
                        return None;
                    }
                }
            }
            None => 0.0,
        };
        let reject_outside_interval = match lookup(t, "out_of_interval") {
            Some(v) => match self.string(v, task, "out_of_interval").as_deref() {
                Some("keep") => false,
                Some("reject") => true,
                Some(other) => {
                    self.err(
                        v.span(),
                        task,
                        format!("unknown out_of_interval \"{other}\"; use keep or reject"),
                    );
                    return None;
                }
                None => return None,
            },
            None => false,
        };
        let (path, format, allow_empty, http, drop_zone) = source?;
        Some(TaskKind::Ingest(super::IngestSpec {
            http,
            drop_zone,
            path,
            format,
            allow_empty,
            table: table?,
            connection,
            max_reject_ratio,
            reject_outside_interval,
        }))
    }

    fn transform(&mut self, t: &DeTable<'_>, id: &str, key_span: Range<usize>) -> Option<TaskKind> {
        let task = Some(id);
        let Some(mv) = lookup(t, "models") else {
            self.err(key_span, task, "transform task needs \"models\" (a glob such as \"models/*.sql\", or a list of files)");
            return None;
        };
        let patterns: Vec<String> = match mv.get_ref() {
            DeValue::String(s) => vec![s.to_string()],
            _ => self
                .string_list(mv, task, "models")?
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
        };
        let mut models: Vec<super::Model> = Vec::new();
        let mut ok = true;
        for pat in &patterns {
            let bundle = self.bundle;
            let files: &[String] = match bundle.globs.get(pat.as_str()) {
                None => {
                    self.wants.push(Want::Glob(pat.clone()));
                    ok = false;
                    continue;
                }
                Some(GlobEntry::Bad(e)) => {
                    self.err(
                        mv.span(),
                        task,
                        format!("bad models pattern \"{pat}\": {e}"),
                    );
                    ok = false;
                    continue;
                }
                Some(GlobEntry::Outside) => {
                    self.err(
                        mv.span(),
                        task,
                        format!("models pattern \"{pat}\" reaches outside the DAG's folder; model files must be inside it"),
                    );
                    ok = false;
                    continue;
                }
                Some(GlobEntry::Matches(files)) => files,
            };
            if files.is_empty() {
                self.err(mv.span(), task, format!("no model file matches \"{pat}\" (paths are relative to the DAG file's folder)"));
                ok = false;
            }
            for display in files {
                let Some(sql) = self.file_text(mv.span(), task, "models", "model", display) else {
                    ok = false;
                    continue;
                };
                let (m, errs) = super::models::model(display, sql);
                for e in errs {
                    self.err(mv.span(), task, e);
                    ok = false;
                }
                if models.iter().any(|x| x.name == m.name) {
                    self.err(
                        mv.span(),
                        task,
                        format!("two model files are named \"{}\"", m.name),
                    );
                    ok = false;
                }
                let params: Vec<&str> = self.param_names.iter().map(String::as_str).collect();
                for p in template::check(&m.sql, &params, &["ref", "config"]) {
                    self.err(mv.span(), task, format!("model {display}: {}", p.message));
                    ok = false;
                }
                models.push(m);
            }
        }
        let order = match super::models::order(&models) {
            Ok(o) => o,
            Err(errs) => {
                for e in errs {
                    self.err(mv.span(), task, e);
                }
                ok = false;
                Vec::new()
            }
        };
        let connection = self.connection(t, id)?;
        let tests_block = lookup(t, "tests_block")
            .and_then(|v| self.boolean(v, task, "tests_block"))
            .unwrap_or(false);
        let mut tests = Vec::new();
        if let Some(tv) = lookup(t, "tests") {
            match tv.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        match self.data_test(item, id, &models) {
                            Some(x) => tests.push(x),
                            None => ok = false,
                        }
                    }
                }
                _ => {
                    self.type_error(tv, task, "tests", "a list of tests ([[tasks.<id>.tests]])");
                    ok = false;
                }
            }
        }
        ok.then_some(TaskKind::Transform(super::TransformSpec {
            models,
            order,
            connection,
            tests,
            tests_block,
        }))
    }

    fn row_source(
        &mut self,
        v: &Value<'_>,
        id: &str,
        key: &str,
        files: bool,
    ) -> Option<super::RowSource> {
        let task = Some(id);
        let DeValue::Table(t) = v.get_ref() else {
            self.type_error(
                v,
                task,
                key,
                "a table: { table = \"...\" } or { path = \"...\", format = \"jsonl\" }",
            );
            return None;
        };
        self.check_keys(
            t,
            task,
            if files {
                &["table", "path", "format"]
            } else {
                &["table"]
            },
            key,
        );
        match (lookup(t, "table"), lookup(t, "path")) {
            (Some(tv), None) => {
                let name = self.string(tv, task, "table")?;
                if !super::is_sql_name(&name) {
                    self.err(
                        tv.span(),
                        task,
                        format!("table \"{name}\" must be a plain SQL name"),
                    );
                    return None;
                }
                Some(super::RowSource::Table(name))
            }
            (None, Some(pv)) if files => {
                let path = self.string(pv, task, "path")?;
                self.check_template(pv, &path, task, &[]);
                let format = match lookup(t, "format")
                    .and_then(|f| self.string(f, task, "format"))
                    .as_deref()
                {
                    None => None,
                    Some("jsonl") => Some(super::EventFormat::Jsonl),
                    Some("csv") => Some(super::EventFormat::Csv),
                    Some(other) => {
                        self.err(
                            v.span(),
                            task,
                            format!("unknown format \"{other}\"; use jsonl or csv"),
                        );
                        return None;
                    }
                };
                Some(super::RowSource::File { path, format })
            }
            _ => {
                let what = if files {
                    "exactly one of table or path"
                } else {
                    "a table"
                };
                self.err(v.span(), task, format!("\"{key}\" needs {what}"));
                None
            }
        }
    }

    fn experiment(
        &mut self,
        t: &DeTable<'_>,
        id: &str,
        key_span: Range<usize>,
    ) -> Option<TaskKind> {
        let task = Some(id);
        let need = |p: &mut Self, key: &str| {
            let v = lookup(t, key);
            if v.is_none() {
                p.err(
                    key_span.clone(),
                    task,
                    format!("experiment task needs \"{key}\""),
                );
            }
            v
        };
        let experiment = need(self, "experiment").and_then(|v| self.string(v, task, "experiment"));
        let exposures = match lookup(t, "exposures") {
            Some(v) => self.row_source(v, id, "exposures", true).map(Some),
            None => Some(None),
        };
        let range = match lookup(t, "range") {
            Some(v) => match self.string(v, task, "range").as_deref() {
                Some("cumulative") => Some(super::AnalysisRange::Cumulative),
                Some("interval") => Some(super::AnalysisRange::Interval),
                Some(other) => {
                    self.err(v.span(), task, format!("unknown range \"{other}\"; use \"cumulative\" (every exposure up to the interval end, the default) or \"interval\" (users first exposed in the run's data interval)"));
                    None
                }
                None => None,
            },
            None => Some(super::AnalysisRange::Cumulative),
        };
        let start = match lookup(t, "start") {
            Some(v) => {
                let text = match v.get_ref() {
                    DeValue::String(s) => Some(s.to_string()),
                    DeValue::Datetime(d) => Some(d.to_string()),
                    _ => None,
                };
                match text.map(|x| parse_datetime_in(&x, Tz::UTC)) {
                    Some(Ok(d)) => Some(Some(d)),
                    Some(Err(e)) => {
                        self.err(v.span(), task, format!("\"start\": {e}"));
                        None
                    }
                    None => {
                        self.type_error(v, task, "start", "a date such as \"2026-02-01\" (UTC)");
                        None
                    }
                }
            }
            None => Some(None),
        };
        let events = need(self, "events").and_then(|v| self.row_source(v, id, "events", true));
        let control = need(self, "control").and_then(|v| self.string(v, task, "control"));
        let split = match need(self, "split") {
            Some(v) => match v.get_ref() {
                DeValue::Table(st) => {
                    let mut out = Vec::new();
                    for (k, sv) in entries(st) {
                        let share = match sv.get_ref() {
                            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
                            DeValue::Integer(_) => self
                                .integer(sv, task, "split", i64::MIN, i64::MAX)
                                .map(|n| n as f64),
                            _ => None,
                        };
                        match share {
                            Some(s) if s > 0.0 && s.is_finite() => {
                                out.push((k.get_ref().to_string(), s))
                            }
                            _ => self.err(
                                sv.span(),
                                task,
                                format!(
                                    "split share of \"{}\" must be a positive number",
                                    k.get_ref()
                                ),
                            ),
                        }
                    }
                    if out.len() < 2 {
                        self.err(v.span(), task, "split needs at least two variants, e.g. split = { control = 0.5, treatment = 0.5 }");
                    }
                    Some(out)
                }
                _ => {
                    self.type_error(v, task, "split", "a table of variant = share");
                    None
                }
            },
            None => None,
        };
        if let (Some(c), Some(sp), Some(cv)) = (&control, &split, lookup(t, "control"))
            && !sp.iter().any(|(v, _)| v == c)
        {
            let known: Vec<&str> = sp.iter().map(|(v, _)| v.as_str()).collect();
            self.err(
                cv.span(),
                task,
                format!(
                    "control variant \"{c}\" is not in split ({})",
                    known.join(", ")
                ),
            );
        }
        let mut metrics = Vec::new();
        if let Some(v) = need(self, "metrics") {
            match v.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        if let Some(m) = self.metric(item, id) {
                            metrics.push(m);
                        }
                    }
                }
                _ => self.type_error(
                    v,
                    task,
                    "metrics",
                    "a list of metrics ([[tasks.<id>.metrics]])",
                ),
            }
        }
        let connection = self.connection(t, id)?;
        Some(TaskKind::Experiment(super::ExperimentSpec {
            experiment: experiment?,
            exposures: exposures?,
            range: range?,
            start: start?,
            events: events?,
            control: control?,
            split: split?,
            metrics,
            connection,
        }))
    }

    fn survey(&mut self, t: &DeTable<'_>, id: &str, key_span: Range<usize>) -> Option<TaskKind> {
        use super::{MetricsWindow, SurveyProvider};
        let task = Some(id);
        let opt = |p: &mut Self, key: &str| lookup(t, key).and_then(|v| p.string(v, task, key));
        let provider = match lookup(t, "provider") {
            Some(v) => match self.string(v, task, "provider").as_deref() {
                Some("typeform") => Some(SurveyProvider::Typeform),
                Some("zigpoll") => Some(SurveyProvider::Zigpoll),
                Some("csv") => Some(SurveyProvider::Csv),
                Some(other) => {
                    let hint = did_you_mean(other, ["typeform", "zigpoll", "csv"]);
                    self.err(
                        v.span(),
                        task,
                        format!("unknown provider \"{other}\"{hint}; use typeform, zigpoll or csv"),
                    );
                    None
                }
                None => None,
            },
            None => {
                self.err(
                    key_span.clone(),
                    task,
                    "survey_sync task needs \"provider\" (typeform, zigpoll or csv)",
                );
                None
            }
        };
        let form_id = match lookup(t, "form_id") {
            Some(v) => self.string(v, task, "form_id"),
            None => {
                self.err(
                    key_span.clone(),
                    task,
                    "survey_sync task needs \"form_id\" (the Typeform form id, the Zigpoll poll id, or a name for the CSV export's responses)",
                );
                None
            }
        };
        let base_url = opt(self, "base_url");
        if let (Some(u), Some(v)) = (&base_url, lookup(t, "base_url"))
            && !u.starts_with("${")
            && !url_or_template(u)
        {
            self.err(
                v.span(),
                task,
                format!(
                    "base_url \"{u}\" must start with http:// or https:// (or be \"${{NAME}}\")"
                ),
            );
        }
        let token = opt(self, "token");
        let path = opt(self, "path");
        if let (Some(p), Some(v)) = (&path, lookup(t, "path")) {
            self.check_template(v, p, task, &[]);
        }
        match provider {
            Some(SurveyProvider::Csv) => {
                if path.is_none() {
                    self.err(
                        key_span.clone(),
                        task,
                        "provider \"csv\" needs \"path\": the CSV export file",
                    );
                }
                for key in ["base_url", "token", "key_header", "page_size"] {
                    if let Some(v) = lookup(t, key) {
                        self.err(
                            v.span(),
                            task,
                            format!(
                                "\"{key}\" is for API providers; provider \"csv\" reads \"path\""
                            ),
                        );
                    }
                }
            }
            Some(p) => {
                if token.is_none() {
                    self.err(
                        key_span.clone(),
                        task,
                        format!(
                            "provider \"{}\" needs \"token\", e.g. token = \"${{{}_TOKEN}}\"",
                            p.name(),
                            p.name().to_uppercase()
                        ),
                    );
                }
                if let Some(v) = lookup(t, "path") {
                    self.err(
                        v.span(),
                        task,
                        format!(
                            "\"path\" is for provider \"csv\"; provider \"{}\" reads its API",
                            p.name()
                        ),
                    );
                }
                if p == SurveyProvider::Typeform
                    && let Some(v) = lookup(t, "key_header")
                {
                    self.err(
                        v.span(),
                        task,
                        "\"key_header\" is for provider \"zigpoll\"; Typeform takes a bearer token",
                    );
                }
            }
            None => {}
        }
        let page_size = match lookup(t, "page_size") {
            Some(v) => self
                .integer(v, task, "page_size", 1, 1000)
                .map(|n| n as u32),
            None => Some(1000),
        };
        let window = match lookup(t, "metrics_window") {
            Some(v) => match self.string(v, task, "metrics_window").as_deref() {
                Some("interval") => Some(MetricsWindow::Interval),
                Some("all") => Some(MetricsWindow::All),
                Some(other) => match humantime::parse_duration(other.trim()) {
                    Ok(d) if !d.is_zero() => Some(MetricsWindow::Trailing(d)),
                    _ => {
                        self.err(v.span(), task, format!("metrics_window \"{other}\": use \"interval\" (the run's data interval), \"all\" or a trailing duration such as \"30d\""));
                        None
                    }
                },
                None => None,
            },
            None => Some(MetricsWindow::Interval),
        };
        let segments = match lookup(t, "segments") {
            Some(v) => match v.get_ref() {
                DeValue::Table(st) => {
                    self.check_keys(st, task, &["table", "key", "columns"], "segments");
                    let table = lookup(st, "table").and_then(|x| self.string(x, task, "table"));
                    let key = lookup(st, "key")
                        .and_then(|x| self.string(x, task, "key"))
                        .unwrap_or_else(|| "user_id".into());
                    let columns: Vec<String> = lookup(st, "columns")
                        .and_then(|x| self.string_list(x, task, "columns"))
                        .unwrap_or_default()
                        .into_iter()
                        .map(|c| c.into_inner())
                        .collect();
                    let names = table.iter().chain(std::iter::once(&key)).chain(&columns);
                    let bad: Vec<&String> = names.filter(|n| !super::is_sql_name(n)).collect();
                    if !bad.is_empty() {
                        self.err(
                            v.span(),
                            task,
                            format!(
                                "segments: {} must be plain SQL names",
                                bad.iter()
                                    .map(|b| format!("\"{b}\""))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        );
                    }
                    match table {
                        Some(table) if !columns.is_empty() => Some(super::Segments {
                            table,
                            key,
                            columns,
                        }),
                        _ => {
                            self.err(v.span(), task, "segments needs table and columns, e.g. segments = { table = \"users\", columns = [\"plan\"] }");
                            None
                        }
                    }
                }
                _ => {
                    self.type_error(
                        v,
                        task,
                        "segments",
                        "a table { table = \"...\", columns = [...] }",
                    );
                    None
                }
            },
            None => None,
        };
        let connection = self.connection(t, id)?;
        Some(TaskKind::SurveySync(super::SurveySpec {
            provider: provider?,
            form_id: form_id?,
            base_url,
            token,
            key_header: opt(self, "key_header").unwrap_or_else(|| "Authorization".into()),
            path,
            page_size: page_size?,
            nps_field: opt(self, "nps_field"),
            csat_field: opt(self, "csat_field"),
            user_field: opt(self, "user_field").unwrap_or_else(|| "user_id".into()),
            segments,
            metrics_window: window?,
            connection,
        }))
    }

    fn metric(&mut self, item: &Value<'_>, id: &str) -> Option<super::Metric> {
        let task = Some(id);
        let DeValue::Table(mt) = item.get_ref() else {
            self.type_error(item, task, "metrics", "tables ([[tasks.<id>.metrics]])");
            return None;
        };
        self.check_keys(
            mt,
            task,
            &[
                "name",
                "type",
                "event",
                "window",
                "property",
                "numerator",
                "denominator",
            ],
            "metric",
        );
        let name = lookup(mt, "name").and_then(|v| self.string(v, task, "name"));
        let ty = lookup(mt, "type")
            .and_then(|v| self.string(v, task, "type"))
            .unwrap_or_else(|| "conversion".into());
        if ty == "ratio" {
            let window = match lookup(mt, "window") {
                Some(w) => self.duration(w, task, "window"),
                None => Some(std::time::Duration::from_secs(72 * 3600)),
            };
            let measure = |p: &mut Self, key: &str| -> Option<super::Measure> {
                let Some(v) = lookup(mt, key) else {
                    p.err(item.span(), task, format!("a ratio metric needs {key} = {{ event = \"...\", property = \"...\" }} (property optional: without it, events are counted)"));
                    return None;
                };
                let DeValue::Table(m) = v.get_ref() else {
                    p.type_error(
                        v,
                        task,
                        key,
                        "a table { event = \"...\", property = \"...\" }",
                    );
                    return None;
                };
                p.check_keys(m, task, &["event", "property"], key);
                let event = match lookup(m, "event") {
                    Some(e) => p.string(e, task, "event")?,
                    None => {
                        p.err(v.span(), task, format!("{key} needs an event"));
                        return None;
                    }
                };
                let property = match lookup(m, "property") {
                    Some(pv) => {
                        let prop = p.string(pv, task, "property")?;
                        if !super::is_sql_name(&prop) {
                            p.err(
                                pv.span(),
                                task,
                                format!("property \"{prop}\" must be a plain name"),
                            );
                            return None;
                        }
                        Some(prop)
                    }
                    None => None,
                };
                Some(super::Measure { event, property })
            };
            let numerator = measure(self, "numerator");
            let denominator = measure(self, "denominator");
            if let Some(v) = lookup(mt, "event").or(lookup(mt, "property")) {
                self.err(
                    v.span(),
                    task,
                    "a ratio metric takes numerator and denominator, not event/property",
                );
            }
            return Some(super::Metric {
                name: name?,
                kind: super::MetricKind::Ratio {
                    numerator: numerator?,
                    denominator: denominator?,
                    window: window?,
                },
            });
        }
        let event = lookup(mt, "event").and_then(|v| self.string(v, task, "event"));
        let window = match lookup(mt, "window") {
            Some(w) => self.duration(w, task, "window"),
            None => Some(std::time::Duration::from_secs(72 * 3600)),
        };
        let (Some(name), Some(event), Some(window)) = (name, event, window) else {
            self.err(
                item.span(),
                task,
                "a metric needs name and event (and type, window)",
            );
            return None;
        };
        let kind = match ty.as_str() {
            "conversion" => super::MetricKind::Conversion { event, window },
            "mean" => {
                match lookup(mt, "property").and_then(|v| self.string(v, task, "property")) {
                    Some(property) if super::is_sql_name(&property) => super::MetricKind::Mean {
                        event,
                        property,
                        window,
                    },
                    _ => {
                        self.err(item.span(), task, "a mean metric needs property: the numeric event property summed per user");
                        return None;
                    }
                }
            }
            other => {
                self.err(
                    item.span(),
                    task,
                    format!("unknown metric type \"{other}\"; use conversion, mean or ratio"),
                );
                return None;
            }
        };
        Some(super::Metric { name, kind })
    }

    fn data_test(
        &mut self,
        item: &Value<'_>,
        id: &str,
        models: &[super::Model],
    ) -> Option<super::DataTest> {
        let task = Some(id);
        let DeValue::Table(t) = item.get_ref() else {
            self.type_error(item, task, "tests", "a table with model, type and column");
            return None;
        };
        self.check_keys(
            t,
            task,
            &["name", "model", "type", "column", "values", "to", "sql"],
            "test",
        );
        let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
        let model = match lookup(t, "model") {
            Some(v) => {
                let m = self.string(v, task, "model")?;
                if !names.contains(&m.as_str()) {
                    let hint = did_you_mean(&m, names.iter().copied());
                    self.err(
                        v.span(),
                        task,
                        format!("test names unknown model \"{m}\"{hint}"),
                    );
                    return None;
                }
                m
            }
            None => {
                self.err(item.span(), task, "a test needs \"model\"");
                return None;
            }
        };
        let ty = match lookup(t, "type") {
            Some(v) => {
                let ty = self.string(v, task, "type")?;
                if !TEST_TYPES.contains(&ty.as_str()) {
                    let hint = did_you_mean(&ty, TEST_TYPES.iter().copied());
                    self.err(
                        v.span(),
                        task,
                        format!(
                            "unknown test type \"{ty}\"{hint}; use one of {}",
                            TEST_TYPES.join(", ")
                        ),
                    );
                    return None;
                }
                ty
            }
            None => {
                self.err(
                    item.span(),
                    task,
                    format!("a test needs \"type\" (one of {})", TEST_TYPES.join(", ")),
                );
                return None;
            }
        };
        let column = |p: &mut Self, key: &str| -> Option<(String, Range<usize>)> {
            match lookup(t, key) {
                Some(v) => {
                    let c = p.string(v, task, key)?;
                    Some((c, v.span()))
                }
                None => {
                    p.err(item.span(), task, format!("a {ty} test needs \"{key}\""));
                    None
                }
            }
        };
        let check = match ty.as_str() {
            "sql" => super::Check::Sql(column(self, "sql")?.0),
            _ => {
                let (col, span) = column(self, "column")?;
                if !super::is_sql_name(&col) {
                    self.err(
                        span,
                        task,
                        format!("column \"{col}\" is not a plain SQL name"),
                    );
                    return None;
                }
                match ty.as_str() {
                    "not_null" => super::Check::NotNull(col),
                    "unique" => super::Check::Unique(col),
                    "accepted_values" => {
                        let Some(v) = lookup(t, "values") else {
                            self.err(
                                item.span(),
                                task,
                                "an accepted_values test needs \"values\" (a list)",
                            );
                            return None;
                        };
                        let vals = self
                            .string_list(v, task, "values")?
                            .into_iter()
                            .map(Spanned::into_inner)
                            .collect();
                        super::Check::AcceptedValues(col, vals)
                    }
                    _ => {
                        let (to, span) = column(self, "to")?;
                        let Some((m, c)) = to
                            .split_once('.')
                            .filter(|(m, c)| names.contains(m) && super::is_sql_name(c))
                        else {
                            self.err(
                                span,
                                task,
                                format!(
                                    "\"to\" must be model.column with a known model, got \"{to}\""
                                ),
                            );
                            return None;
                        };
                        super::Check::Relationships {
                            column: col,
                            to_model: m.to_string(),
                            to_column: c.to_string(),
                        }
                    }
                }
            }
        };
        let name = match lookup(t, "name") {
            Some(v) => self.string(v, task, "name")?,
            None => match &check {
                super::Check::NotNull(c)
                | super::Check::Unique(c)
                | super::Check::AcceptedValues(c, _) => format!("{ty}({model}.{c})"),
                super::Check::Relationships {
                    column,
                    to_model,
                    to_column,
                } => format!("relationships({model}.{column} -> {to_model}.{to_column})"),
                super::Check::Sql(_) => format!("sql({model})"),
            },
        };
        Some(super::DataTest { name, model, check })
    }

    /// Checks dependencies and returns a topological order, reporting unknown tasks,
    /// self-dependencies and every cycle with its full path.
    fn graph(
        &mut self,
        tasks: &[Task],
        deps: &[Vec<Spanned<String>>],
        spans: &[Range<usize>],
    ) -> Option<Vec<usize>> {
        let ids: Vec<&str> = tasks.iter().map(|t| t.task_id.as_str()).collect();
        let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut g: DiGraph<usize, ()> = DiGraph::new();
        let nodes: Vec<_> = (0..tasks.len()).map(|i| g.add_node(i)).collect();
        let mut ok = true;
        for (i, task) in tasks.iter().enumerate() {
            let mut seen = BTreeSet::new();
            for d in &deps[i] {
                let name = d.get_ref().as_str();
                if !seen.insert(name) {
                    self.err(
                        d.span(),
                        Some(&task.task_id),
                        format!("depends_on lists \"{name}\" twice"),
                    );
                    continue;
                }
                if name == task.task_id {
                    self.err(d.span(), Some(&task.task_id), "task depends on itself");
                    ok = false;
                    continue;
                }
                match index.get(name).copied() {
                    Some(j) => {
                        g.add_edge(nodes[j], nodes[i], ());
                    }
                    None => {
                        let hint =
                            did_you_mean(name, ids.iter().copied().filter(|x| *x != task.task_id));
                        self.err(
                            d.span(),
                            Some(&task.task_id),
                            format!("depends on unknown task \"{name}\"{hint}"),
                        );
                        ok = false;
                    }
                }
            }
        }
        // Kosaraju's algorithm is iterative in petgraph (Tarjan's recurses once per
        // task and overflows the stack on long chains).
        for scc in petgraph::algo::kosaraju_scc(&g) {
            if scc.len() < 2 {
                continue;
            }
            let members: BTreeSet<usize> = scc.iter().map(|n| g[*n]).collect();
            let first = *members.iter().next()?;
            let path = cycle_path(first, &members, tasks, &ids);
            let names: Vec<&str> = path.iter().map(|i| ids[*i]).collect();
            // Point at the depends_on entry of the first task that closes the cycle.
            let prev = ids[path[path.len().saturating_sub(2)]];
            let span = deps[first]
                .iter()
                .find(|d| d.get_ref() == prev)
                .map_or(spans[first].clone(), |d| d.span());
            self.err(
                span,
                Some(ids[first]),
                format!("dependency cycle: {}", names.join(" -> ")),
            );
            ok = false;
        }
        if !ok {
            return None;
        }
        petgraph::algo::toposort(&g, None)
            .ok()
            .map(|order| order.into_iter().map(|n| g[n]).collect())
    }
}

/// A cycle through `start` within `members`, following edges from a task to the tasks
/// that depend on it; the path starts and ends at `start` (`a -> b -> c -> a`).
fn cycle_path(start: usize, members: &BTreeSet<usize>, tasks: &[Task], ids: &[&str]) -> Vec<usize> {
    // Edges inside the component, from a task to the tasks that depend on it.
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut downs: HashMap<usize, Vec<usize>> = HashMap::new();
    for &j in members {
        for d in &tasks[j].depends_on {
            if let Some(&i) = index.get(d.as_str())
                && members.contains(&i)
            {
                downs.entry(i).or_default().push(j);
            }
        }
    }
    // Breadth-first search with parent links: the path is rebuilt once at the end.
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for &next in downs.get(&node).map_or(&[][..], Vec::as_slice) {
            if next == start {
                let mut path = vec![start, node];
                let mut at = node;
                while at != start {
                    at = parent[&at];
                    path.push(at);
                }
                path.reverse();
                return path;
            }
            if next != start && !parent.contains_key(&next) {
                parent.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    vec![start, start]
}

fn infer_type(v: &DeValue<'_>) -> Option<ParamType> {
    Some(match v {
        DeValue::String(_) => ParamType::String,
        DeValue::Integer(_) => ParamType::Int,
        DeValue::Float(_) => ParamType::Float,
        DeValue::Boolean(_) => ParamType::Bool,
        DeValue::Datetime(d) if d.date.is_some() && d.time.is_none() => ParamType::Date,
        _ => return None,
    })
}

fn toml_to_json(v: &DeValue<'_>) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    Some(match v {
        DeValue::String(s) => J::String(s.to_string()),
        DeValue::Integer(i) => {
            let digits: String = i.as_str().chars().filter(|c| *c != '_').collect();
            J::from(i64::from_str_radix(&digits, i.radix()).ok()?)
        }
        DeValue::Float(f) => J::from(f.as_str().replace('_', "").parse::<f64>().ok()?),
        DeValue::Boolean(b) => J::Bool(*b),
        DeValue::Datetime(d) => J::String(d.to_string()),
        _ => return None,
    })
}
