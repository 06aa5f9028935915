//! The keys of a `survey_sync` task.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::*;
use crate::dag::parse::*;

impl Parser<'_, '_> {
    pub(crate) fn survey(
        &mut self,
        t: &DeTable<'_>,
        id: &str,
        key_span: Range<usize>,
    ) -> Option<SurveySpec> {
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
        Some(SurveySpec {
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
        })
    }
}
