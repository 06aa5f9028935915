//! `http`: one HTTP request.

mod parse;
pub mod run;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Kind, RunContext, Running, Spec};

pub static KIND: Kind = Kind {
    name: "http",
    keys: &["url", "method", "headers", "body", "expected_status"],
    doc_keys: "`url`, `method` (GET), `headers`, `body`, `expected_status` (any 2xx)",
    summary: "one request; status and the start of the body are logged",
    parse: |p, t, id, span| p.http(t, id, span).map(|s| Arc::new(s) as Arc<dyn Spec>),
    warehouse: &[],
    api_routes: None,
    routes: None,
};

#[derive(Debug, Clone)]
pub struct HttpSpec {
    pub url: String,
    pub method: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    /// Accepted status codes; empty means any 2xx.
    pub expected_status: Vec<u16>,
}

impl Spec for HttpSpec {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn templates(&self) -> Vec<(&'static str, &str, crate::dag::template::Quoting)> {
        let plain = crate::dag::template::Quoting::Plain;
        let mut out = vec![("url", self.url.as_str(), plain)];
        if let Some(b) = &self.body {
            out.push(("body", b.as_str(), plain));
        }
        out
    }

    fn run<'a>(&'a self, ctx: &'a mut RunContext<'_>) -> Running<'a> {
        Box::pin(run::run(ctx, self))
    }
}
