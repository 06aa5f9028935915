//! Templates in task fields: `{{ ds }}`, `{{ params.country }}` and the other variables
//! of a run (domain reference, section 1), rendered with minijinja in strict mode.
//!
//! Validation happens when a DAG is parsed: syntax errors and unknown variables are
//! reported with their position, so a typo never reaches a running task.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use std::cell::RefCell;

use chrono::{DateTime, SecondsFormat, Utc};
use minijinja::value::ValueKind;
use minijinja::{Environment, UndefinedBehavior, Value};
use serde::Serialize;

pub use super::quote::Quoting;
use super::quote::{self, Captured};

/// Variables every templated field may use (besides `params.<name>`).
pub const VARIABLES: &[&str] = &[
    "ds",
    "ds_nodash",
    "data_interval_start",
    "data_interval_end",
    "logical_date",
    "run_id",
    "dag_id",
    "task_id",
    "try_number",
    "base_url",
];

/// Functions minijinja provides to every template (they show up as names).
const GLOBALS: &[&str] = &["range", "dict", "namespace", "debug"];

/// Extra variables a callback may use.
pub const CALLBACK_VARIABLES: &[&str] = &["state", "error"];

/// A problem in one template: where in the template text, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateProblem {
    /// Byte offset inside the template text, when known.
    pub offset: Option<usize>,
    pub message: String,
}

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        configure(&mut env);
        env
    })
}

/// How much work one render may do (minijinja "fuel"): enough for any real template,
/// and a runaway loop stops with an error instead of holding a worker.
const FUEL: u64 = 100_000;

/// The largest text one render may produce.
pub const MAX_RENDERED_BYTES: usize = 4 * 1024 * 1024;

thread_local! {
    /// Values printed by `{{ ... }}` during the current render on this thread, when
    /// the caller quotes them afterwards (renders are synchronous).
    static CAPTURE: RefCell<Option<Vec<Captured>>> = const { RefCell::new(None) };
}

/// Settings every template environment of weft shares: strict undefined, no HTML
/// escaping, fuel, the `raw` filter, and the formatter that leaves a marker for each
/// value so [`quote::fill`] can quote it for its context.
pub fn configure(env: &mut Environment<'_>) {
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Commands and SQL are not HTML: never HTML-escape.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_keep_trailing_newline(true);
    env.set_fuel(Some(FUEL));
    // `{{ x | raw }}` opts out of quoting: the value is spliced as written.
    env.add_filter("raw", |v: Value| -> Value {
        if v.is_safe() {
            v
        } else {
            Value::from_safe_string(v.to_string())
        }
    });
    env.set_formatter(|out, state, value| {
        let captured = CAPTURE.with(|c| {
            let mut c = c.borrow_mut();
            let list = c.as_mut()?;
            if value.is_safe() {
                return None;
            }
            list.push(Captured {
                text: value.to_string(),
                bare_ok: matches!(value.kind(), ValueKind::Number | ValueKind::Bool),
            });
            Some(list.len() - 1)
        });
        match captured {
            Some(i) => write!(out, "{}{i}{}", quote::OPEN, quote::CLOSE).map_err(|_| {
                minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "write failed")
            }),
            None => minijinja::escape_formatter(out, state, value),
        }
    });
}

/// Renders `text` with `env` and quotes every value for `quoting`.
pub fn render_quoted<S: Serialize>(
    env: &Environment<'_>,
    text: &str,
    ctx: S,
    quoting: Quoting,
) -> Result<String, minijinja::Error> {
    CAPTURE.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let rendered = env.render_str(text, ctx);
    let values = CAPTURE.with(|c| c.borrow_mut().take()).unwrap_or_default();
    let rendered = rendered?;
    if rendered.len() > MAX_RENDERED_BYTES {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!(
                "the rendered text is {} bytes; at most {MAX_RENDERED_BYTES} are allowed",
                rendered.len()
            ),
        ));
    }
    Ok(quote::fill(&rendered, &values, quoting))
}

/// True when the text contains template syntax at all (fast path for plain strings).
pub fn is_templated(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// Checks a template: syntax, and that every variable it reads is known. `params` are
/// the DAG's declared param names, `extra` further allowed top-level names.
pub fn check(text: &str, params: &[&str], extra: &[&str]) -> Vec<TemplateProblem> {
    if !is_templated(text) {
        return Vec::new();
    }
    let tmpl = match env().template_from_str(text) {
        Ok(t) => t,
        Err(e) => {
            let offset = e.range().map(|r| r.start);
            let detail = e.detail().unwrap_or("syntax error").to_string();
            return vec![TemplateProblem {
                offset,
                message: format!("template syntax error: {detail}"),
            }];
        }
    };
    let mut names: Vec<String> = tmpl.undeclared_variables(true).into_iter().collect();
    names.sort();
    let mut problems = Vec::new();
    // A trial render with sample values finds what only running shows: unknown
    // functions and tests, includes, runaway recursion or loops. (Errors that sample
    // values may cause, such as type errors, are left to the real render.)
    for (at, name) in filters_used(text) {
        if !filter_exists(&name) {
            problems.push(TemplateProblem {
                offset: Some(at),
                message: format!("template uses unknown filter \"{name}\""),
            });
        }
    }
    for name in names {
        let (head, rest) = match name.split_once('.') {
            Some((h, r)) => (h, Some(r)),
            None => (name.as_str(), None),
        };
        if head == "params" {
            if let Some(p) = rest {
                let p = p.split('.').next().unwrap_or(p);
                if !params.contains(&p) {
                    let hint = super::diag::did_you_mean(p, params.iter().copied());
                    let declared = if params.is_empty() {
                        " (the dag declares no [params])".to_string()
                    } else {
                        String::new()
                    };
                    problems.push(TemplateProblem {
                        offset: find_word(text, p),
                        message: format!(
                            "template uses unknown param \"params.{p}\"{hint}{declared}"
                        ),
                    });
                }
            }
            continue;
        }
        if VARIABLES.contains(&head) || extra.contains(&head) || GLOBALS.contains(&head) {
            continue;
        }
        let known = VARIABLES
            .iter()
            .chain(extra.iter())
            .copied()
            .chain(["params"]);
        let hint = super::diag::did_you_mean(head, known);
        problems.push(TemplateProblem {
            offset: find_word(text, head),
            message: format!(
                "template uses unknown variable \"{head}\"{hint}; known: {}, params.<name>",
                VARIABLES
                    .iter()
                    .chain(extra.iter())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    if problems.is_empty()
        && let Some(message) = trial_render(&tmpl, params, extra)
    {
        problems.push(TemplateProblem {
            offset: None,
            message,
        });
    }
    problems
}

/// The filters a template applies (`x | name`), with their offsets: found in the text
/// of each `{{ }}` / `{% %}` block, outside string literals.
fn filters_used(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find('{') {
        let open = from + i;
        let close = match text.get(open..open + 2) {
            Some("{{") => "}}",
            Some("{%") => "%}",
            _ => {
                from = open + 1;
                continue;
            }
        };
        let body_start = open + 2;
        let Some(len) = text[body_start..].find(close) else {
            break;
        };
        let body = &text[body_start..body_start + len];
        let b = body.as_bytes();
        let mut j = 0;
        let mut quote: Option<u8> = None;
        while j < b.len() {
            let c = b[j];
            match quote {
                Some(_) if c == b'\\' => j += 1,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == b'"' || c == b'\'' => quote = Some(c),
                None if c == b'|' => {
                    let rest = &body[j + 1..];
                    let trimmed = rest.trim_start();
                    let name: String = trimmed
                        .chars()
                        .take_while(|ch| ch.is_alphanumeric() || *ch == '_')
                        .collect();
                    if !name.is_empty() {
                        out.push((body_start + j + 1 + (rest.len() - trimmed.len()), name));
                    }
                }
                None => {}
            }
            j += 1;
        }
        from = body_start + len + 2;
    }
    out
}

fn trial_render(
    tmpl: &minijinja::Template<'_, '_>,
    params: &[&str],
    extra: &[&str],
) -> Option<String> {
    use minijinja::ErrorKind as K;
    let mut ctx: BTreeMap<&str, Value> = VARIABLES
        .iter()
        .chain(extra)
        .map(|v| (*v, Value::from("2026-01-01")))
        .collect();
    ctx.insert("try_number", Value::from(1));
    let p: BTreeMap<&str, Value> = params.iter().map(|p| (*p, Value::from("x"))).collect();
    ctx.insert("params", Value::from_serialize(&p));
    let e = tmpl.render(ctx).err()?;
    let structural = matches!(
        e.kind(),
        K::UnknownFunction | K::UnknownTest | K::TemplateNotFound | K::OutOfFuel
    ) || e.to_string().contains("recursion");
    structural.then(|| {
        let detail = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
        format!("template error: {}{detail}", e.kind())
    })
}

/// Whether the template environment knows a filter (asked once per name).
fn filter_exists(name: &str) -> bool {
    static KNOWN: OnceLock<std::sync::Mutex<BTreeMap<String, bool>>> = OnceLock::new();
    let known = KNOWN.get_or_init(Default::default);
    if let Some(k) = known.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
        return *k;
    }
    let probe = format!("{{{{ 1 | {name} }}}}");
    let exists = match env().render_str(&probe, ()) {
        Ok(_) => true,
        Err(e) => e.kind() != minijinja::ErrorKind::UnknownFilter,
    };
    known
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_string(), exists);
    exists
}

/// True when a template splices a param unquoted (`{{ params.x | raw }}`).
pub fn raw_params(text: &str) -> bool {
    let mut from = 0;
    while let Some(i) = text[from..].find("{{") {
        let start = from + i + 2;
        let Some(len) = text[start..].find("}}") else {
            break;
        };
        let body = &text[start..start + len];
        if body.contains("params")
            && filters_used(&format!("{{{{{body}}}}}"))
                .iter()
                .any(|(_, f)| f == "raw" || f == "safe")
        {
            return true;
        }
        from = start + len + 2;
    }
    false
}

/// The first occurrence of `word` as a whole identifier inside `{{ ... }}` or `{% %}`.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(i) = text[from..].find(word) {
        let at = from + i;
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        if !before.is_some_and(is_ident) && !after.is_some_and(is_ident) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// The values templates see for one task try.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateContext {
    pub ds: String,
    pub ds_nodash: String,
    pub data_interval_start: String,
    pub data_interval_end: String,
    pub logical_date: String,
    pub run_id: String,
    pub dag_id: String,
    pub task_id: String,
    pub try_number: i32,
    /// Where this weft's web server answers (`http://127.0.0.1:8080`), so tasks can
    /// call its API or `/health` whatever the bind address. Also `WEFT_BASE_URL`.
    pub base_url: String,
    pub params: BTreeMap<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// RFC 3339 in UTC with seconds, e.g. `2026-01-01T00:00:00Z`.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl TemplateContext {
    /// Builds the context of a run. `ds` is the start of the data interval as a date in
    /// the DAG's time zone.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dag_id: &str,
        run_id: &str,
        task_id: &str,
        try_number: i32,
        interval_start: DateTime<Utc>,
        interval_end: DateTime<Utc>,
        tz: chrono_tz::Tz,
        params: BTreeMap<String, serde_json::Value>,
    ) -> Self {
        let local = interval_start.with_timezone(&tz);
        TemplateContext {
            ds: local.format("%Y-%m-%d").to_string(),
            ds_nodash: local.format("%Y%m%d").to_string(),
            data_interval_start: rfc3339(interval_start),
            data_interval_end: rfc3339(interval_end),
            logical_date: rfc3339(interval_start),
            run_id: run_id.to_string(),
            dag_id: dag_id.to_string(),
            task_id: task_id.to_string(),
            try_number,
            base_url: String::new(),
            params,
            state: None,
            error: None,
        }
    }

    /// The same context with `base_url` set.
    pub fn with_base_url(mut self, base_url: String) -> Self {
        self.base_url = base_url;
        self
    }

    /// Renders a template as plain text (environment values, paths, URLs); plain
    /// strings pass through untouched.
    pub fn render(&self, text: &str) -> Result<String, String> {
        self.render_for(text, Quoting::Plain)
    }

    /// Renders a template whose values are quoted for where the text goes: a shell
    /// command or an SQL statement (`| raw` opts a value out).
    pub fn render_for(&self, text: &str, quoting: Quoting) -> Result<String, String> {
        if !is_templated(text) {
            return Ok(text.to_string());
        }
        render_quoted(env(), text, self, quoting).map_err(|e| {
            let mut msg = e.to_string();
            if let Some(d) = e.detail()
                && !msg.contains(d)
            {
                msg = format!("{msg}: {d}");
            }
            format!("template error: {msg}")
        })
    }

    /// Environment variables for processes: `WEFT_DS`, `WEFT_RUN_ID`, ... and
    /// `WEFT_PARAM_<NAME>`.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("WEFT_DS".into(), self.ds.clone()),
            ("WEFT_DS_NODASH".into(), self.ds_nodash.clone()),
            (
                "WEFT_DATA_INTERVAL_START".into(),
                self.data_interval_start.clone(),
            ),
            (
                "WEFT_DATA_INTERVAL_END".into(),
                self.data_interval_end.clone(),
            ),
            ("WEFT_LOGICAL_DATE".into(), self.logical_date.clone()),
            ("WEFT_RUN_ID".into(), self.run_id.clone()),
            ("WEFT_DAG_ID".into(), self.dag_id.clone()),
            ("WEFT_TASK_ID".into(), self.task_id.clone()),
            ("WEFT_TRY_NUMBER".into(), self.try_number.to_string()),
            ("WEFT_BASE_URL".into(), self.base_url.clone()),
        ];
        for (k, val) in &self.params {
            let s = match val {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            v.push((format!("WEFT_PARAM_{}", k.to_uppercase()), s));
        }
        if let Some(s) = &self.state {
            v.push(("WEFT_STATE".into(), s.clone()));
        }
        if let Some(e) = &self.error {
            v.push(("WEFT_ERROR".into(), e.clone()));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn unknown_variables_and_params_are_reported_with_offsets() {
        let p = check("echo {{ dss }} {{ params.contry }}", &["country"], &[]);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p.iter().any(|x| x.message.contains("\"dss\"") && x.message.contains("did you mean \"ds\"")));
        assert!(
            p.iter()
                .any(|x| x.message.contains("params.contry") && x.message.contains("\"country\""))
        );
        assert_eq!(
            p.iter()
                .find(|x| x.message.contains("dss"))
                .and_then(|x| x.offset),
            Some(8)
        );
        assert!(check("echo {{ ds }} {{ params.country }}", &["country"], &[]).is_empty());
        assert!(check("echo {{ ds", &[], &[])[0].message.contains("syntax"));
    }

    #[test]
    fn unknown_filters_are_reported_and_raw_params_spotted() {
        let p = check(
            "echo {{ ds | uper }} {{ ds | upper }} {{ 'a|b' }}",
            &[],
            &[],
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].message.contains("unknown filter \"uper\""));
        assert_eq!(p[0].offset, Some(13));
        assert!(check("{{ ds | raw }}", &[], &[]).is_empty());
        assert!(raw_params("echo {{ params.x | raw }}"));
        assert!(!raw_params("echo {{ params.x }} {{ ds | raw }}"));
    }

    #[test]
    fn shell_and_sql_rendering_quote_params() {
        let tz: chrono_tz::Tz = "UTC".parse().unwrap();
        let t = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let params = BTreeMap::from([("x".to_string(), serde_json::json!("$(touch f); 'q'"))]);
        let ctx = TemplateContext::new("d", "r", "t", 1, t, t, tz, params);
        assert_eq!(
            ctx.render_for("echo {{ params.x }} {{ ds }}", Quoting::Shell)
                .unwrap(),
            r"echo '$(touch f); '\''q'\''' 2026-03-01"
        );
        assert_eq!(
            ctx.render_for("echo {{ params.x | raw }}", Quoting::Shell)
                .unwrap(),
            "echo $(touch f); 'q'"
        );
        assert_eq!(
            ctx.render_for(
                "select '{{ ds }}', {{ params.x }}, {{ try_number }}",
                Quoting::Sql
            )
            .unwrap(),
            "select '2026-03-01', '$(touch f); ''q''', 1"
        );
        // A runaway loop runs out of fuel instead of holding a worker.
        assert!(
            ctx.render(
                "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
            )
            .is_err()
        );
    }

    #[test]
    fn renders_dates_in_the_dag_time_zone() {
        let tz: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        let start = Utc.with_ymd_and_hms(2026, 3, 1, 23, 30, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2026, 3, 2, 23, 30, 0).unwrap();
        let ctx = TemplateContext::new("d", "r", "t", 1, start, end, tz, BTreeMap::new());
        assert_eq!(
            ctx.render("{{ ds }} {{ ds_nodash }}").unwrap(),
            "2026-03-02 20260302"
        );
        assert_eq!(
            ctx.render("{{ data_interval_end }}").unwrap(),
            "2026-03-02T23:30:00Z"
        );
        assert!(ctx.render("{{ nope }}").is_err());
    }
}
