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
pub(crate) use toml::Spanned;
pub(crate) use toml::de::{DeTable, DeValue};

pub(crate) use super::bundle::{Bundle, FileEntry, GlobEntry, MAX_FILE_BYTES, Want};
pub(crate) use super::diag::{Diagnostic, Sink, did_you_mean};
pub(crate) use super::template;
use super::{
    Callback, Callbacks, Dag, Param, ParamType, Schedule, Task, TriggerRule, ValidationContext,
};
use crate::kinds;

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

/// The deepest nesting of arrays and inline tables a DAG file may use.
pub(crate) const MAX_NESTING: usize = 64;

/// Where brackets first nest deeper than [`MAX_NESTING`], outside strings and comments;
/// checked before parsing so the TOML parser never recurses that deep.
pub(crate) fn nesting_too_deep(src: &str) -> Option<usize> {
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
pub(crate) fn entries<'t, 'i>(
    t: &'t DeTable<'i>,
) -> Vec<(&'t Spanned<std::borrow::Cow<'i, str>>, &'t Value<'i>)> {
    let mut v: Vec<_> = t.iter().collect();
    v.sort_by_key(|(k, _)| k.span().start);
    v
}

pub(crate) fn lookup<'t, 'i>(t: &'t DeTable<'i>, key: &str) -> Option<&'t Value<'i>> {
    t.iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, v)| v)
}

/// An http(s) URL, or a template that renders to one at run time.
pub(crate) fn url_or_template(url: &str) -> bool {
    template::is_templated(url) || url.starts_with("http://") || url.starts_with("https://")
}

/// Letters, digits, `_`, `-` and `.`, starting with a letter, digit or `_` (so no id is
/// `.`, `..` or reads as a command-line option such as `-rf`).
pub(crate) fn is_identifier(s: &str) -> bool {
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
    pub(crate) fn err(&mut self, span: Range<usize>, task: Option<&str>, msg: impl Into<String>) {
        self.sink.error(span, task, msg);
    }

    pub(crate) fn check_keys(
        &mut self,
        t: &DeTable<'_>,
        task: Option<&str>,
        allowed: &[&str],
        what: &str,
    ) {
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
    pub(crate) fn file_text(
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

    pub(crate) fn type_error(&mut self, v: &Value<'_>, task: Option<&str>, key: &str, want: &str) {
        let found = v.get_ref().type_str();
        self.err(
            v.span(),
            task,
            format!("\"{key}\" must be {want}, found {found}"),
        );
    }

    pub(crate) fn string(
        &mut self,
        v: &Value<'_>,
        task: Option<&str>,
        key: &str,
    ) -> Option<String> {
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

    pub(crate) fn boolean(&mut self, v: &Value<'_>, task: Option<&str>, key: &str) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.type_error(v, task, key, "true or false");
                None
            }
        }
    }

    pub(crate) fn integer(
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

    pub(crate) fn duration(
        &mut self,
        v: &Value<'_>,
        task: Option<&str>,
        key: &str,
    ) -> Option<Duration> {
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

    pub(crate) fn string_list(
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
    pub(crate) fn string_table(
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

    pub(crate) fn check_template(
        &mut self,
        v: &Value<'_>,
        text: &str,
        task: Option<&str>,
        extra: &[&str],
    ) {
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

    pub(crate) fn params(&mut self, v: &Value<'_>, scheduled: bool) -> Vec<Param> {
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

    pub(crate) fn callbacks(&mut self, t: &DeTable<'_>, task: Option<&str>) -> Callbacks {
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

    pub(crate) fn callback(
        &mut self,
        v: &Value<'_>,
        task: Option<&str>,
        key: &str,
    ) -> Option<Callback> {
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

    pub(crate) fn method(&mut self, t: &DeTable<'_>, task: Option<&str>) -> Option<String> {
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
                priority: common.priority,
                env: common.env,
                callbacks: common.callbacks,
            },
            deps,
        ))
    }

    pub(crate) fn required(
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

    pub(crate) fn connection(&mut self, t: &DeTable<'_>, id: &str) -> Option<String> {
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

    /// Checks dependencies and returns a topological order, reporting unknown tasks,
    /// self-dependencies and every cycle with its full path.
    pub(crate) fn graph(
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
pub(crate) fn cycle_path(
    start: usize,
    members: &BTreeSet<usize>,
    tasks: &[Task],
    ids: &[&str],
) -> Vec<usize> {
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

pub(crate) fn infer_type(v: &DeValue<'_>) -> Option<ParamType> {
    Some(match v {
        DeValue::String(_) => ParamType::String,
        DeValue::Integer(_) => ParamType::Int,
        DeValue::Float(_) => ParamType::Float,
        DeValue::Boolean(_) => ParamType::Bool,
        DeValue::Datetime(d) if d.date.is_some() && d.time.is_none() => ParamType::Date,
        _ => return None,
    })
}

pub(crate) fn toml_to_json(v: &DeValue<'_>) -> Option<serde_json::Value> {
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
