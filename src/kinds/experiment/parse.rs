//! The keys of a `experiment` task.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::*;
use crate::dag::parse::*;
use chrono_tz::Tz;

impl Parser<'_, '_> {
    pub(crate) fn row_source(
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

    pub(crate) fn experiment(
        &mut self,
        t: &DeTable<'_>,
        id: &str,
        key_span: Range<usize>,
    ) -> Option<ExperimentSpec> {
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
        Some(ExperimentSpec {
            experiment: experiment?,
            exposures: exposures?,
            range: range?,
            start: start?,
            events: events?,
            control: control?,
            split: split?,
            metrics,
            connection,
        })
    }

    pub(crate) fn metric(&mut self, item: &Value<'_>, id: &str) -> Option<super::Metric> {
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
}
