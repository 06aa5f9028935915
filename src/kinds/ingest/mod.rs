//! `ingest`: events from JSONL/CSV files or HTTP into a warehouse table, idempotent per data interval.

mod parse;
pub mod run;

use std::sync::Arc;

use super::{Kind, RunContext, Running, Spec};
#[allow(unused_imports)]
use crate::dag::is_sql_name;

pub static KIND: Kind = Kind {
    name: "ingest",
    keys: &[
        "source",
        "table",
        "connection",
        "max_reject_ratio",
        "out_of_interval",
    ],
    doc_keys: "`source = { path \\| dir \\| url, format, allow_empty, ... }`, `table`, `connection`, `max_reject_ratio` (0), `out_of_interval` (`keep`)",
    summary: "loads events from JSONL or CSV files into a warehouse table (below)",
    parse: |p, t, id, span| p.ingest(t, id, span).map(|s| Arc::new(s) as Arc<dyn Spec>),
    warehouse: &[],
    api_routes: None,
    routes: None,
};

/// File formats `ingest` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFormat {
    Jsonl,
    Csv,
}

/// Settings of an `ingest` task.
#[derive(Debug, Clone)]
pub struct IngestSpec {
    /// Path or glob, templated, relative to the DAG file's folder; `.gz` is read
    /// transparently.
    pub path: String,
    /// Format; by default from the file extension.
    pub format: Option<EventFormat>,
    /// Succeed with nothing loaded when no file matches (default: fail).
    pub allow_empty: bool,
    pub table: String,
    pub connection: String,
    /// Largest share of rejected lines that still succeeds (default 0).
    pub max_reject_ratio: f64,
    /// Reject events whose corrected time is outside the data interval (default: keep
    /// them, attributed to the interval they were loaded for).
    pub reject_outside_interval: bool,
    /// Read from an HTTP endpoint returning JSON pages instead of files.
    pub http: Option<HttpEventSource>,
    /// `path` is a drop-zone folder: each file is loaded once, by the first interval that
    /// finds it (a re-run of that interval loads the same files again).
    pub drop_zone: bool,
}

/// An HTTP endpoint that returns events as JSON pages.
#[derive(Debug, Clone)]
pub struct HttpEventSource {
    /// Templated URL of the first page.
    pub url: String,
    /// Bearer token; `${NAME}` reads the environment at run time.
    pub token: Option<String>,
    /// Key of the array of events in a page (default `data`; a page may also be the
    /// array itself).
    pub items: String,
    /// Key of the next cursor in a page (cursor paging).
    pub next: Option<String>,
    /// Query parameter that carries the cursor (default `cursor`).
    pub cursor_param: String,
    /// Query parameter of page numbers (page paging, from 1, until an empty page).
    pub page_param: Option<String>,
}

impl Spec for IngestSpec {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn run<'a>(&'a self, ctx: &'a mut RunContext<'_>) -> Running<'a> {
        Box::pin(run::run(ctx, self))
    }
}
