//! Templates in task fields: `{{ ds }}`, `{{ params.country }}` and the other variables
//! of a run (domain reference, section 1), rendered with minijinja in strict mode.
//!
//! Validation happens when a DAG is parsed: syntax errors and unknown variables are
//! reported with their position, so a typo never reaches a running task.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use chrono::{DateTime, SecondsFormat, Utc};
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

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
];

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
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Commands and SQL are not HTML: never escape.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_keep_trailing_newline(true);
        env
    })
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
        if VARIABLES.contains(&head) || extra.contains(&head) {
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
    problems
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
            params,
            state: None,
            error: None,
        }
    }

    /// Renders a template; plain strings pass through untouched.
    pub fn render(&self, text: &str) -> Result<String, String> {
        if !is_templated(text) {
            return Ok(text.to_string());
        }
        env().render_str(text, self).map_err(|e| {
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
