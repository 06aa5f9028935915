//! The keys of a `ingest` task.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::*;
use crate::dag::parse::*;

impl Parser<'_, '_> {
    pub(crate) fn ingest(
        &mut self,
        t: &DeTable<'_>,
        id: &str,
        key_span: Range<usize>,
    ) -> Option<IngestSpec> {
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
        Some(IngestSpec {
            http,
            drop_zone,
            path,
            format,
            allow_empty,
            table: table?,
            connection,
            max_reject_ratio,
            reject_outside_interval,
        })
    }
}
