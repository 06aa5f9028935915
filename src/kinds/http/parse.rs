//! The keys of a `http` task.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::*;
use crate::dag::parse::*;

impl Parser<'_, '_> {
    pub(crate) fn http(
        &mut self,
        t: &DeTable<'_>,
        id: &str,
        key_span: Range<usize>,
    ) -> Option<HttpSpec> {
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
        Some(HttpSpec {
            url: url?.0,
            method: method?,
            headers,
            body,
            expected_status,
        })
    }
}
