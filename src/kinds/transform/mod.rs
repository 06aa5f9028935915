//! `transform`: templated SQL models built in dependency order, then data tests.

pub mod models;
mod parse;
pub mod run;

use std::sync::Arc;

use super::{Kind, RunContext, Running, Spec};
#[allow(unused_imports)]
use crate::dag::is_sql_name;

pub static KIND: Kind = Kind {
    name: "transform",
    keys: &["models", "connection", "tests", "tests_block"],
    doc_keys: "`models` (glob or list), `connection`, `tests` (list), `tests_block` (false)",
    summary: "builds SQL models in dependency order, then runs data tests (below)",
    parse: |p, t, id, span| {
        p.transform(t, id, span)
            .map(|s| Arc::new(s) as Arc<dyn Spec>)
    },
    warehouse: run::MIGRATIONS,
    api_routes: None,
    routes: None,
};

/// How a model is materialised in the warehouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Materialized {
    /// Built as a new table, then swapped in atomically.
    Table,
    View,
    /// The interval's rows (by `interval_column`) are deleted, then inserted.
    Incremental,
}

impl Materialized {
    pub fn name(self) -> &'static str {
        match self {
            Materialized::Table => "table",
            Materialized::View => "view",
            Materialized::Incremental => "incremental",
        }
    }
}

/// One SQL model: a `SELECT` in a file, named after the file.
#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    /// The file, as shown in messages.
    pub file: String,
    /// The template text of the file.
    pub sql: String,
    /// Models this one reads through `{{ ref("...") }}`.
    pub refs: Vec<String>,
    pub materialized: Materialized,
    pub interval_column: Option<String>,
}

/// A data test: a query counting offending values (0 = pass).
#[derive(Debug, Clone)]
pub enum Check {
    NotNull(String),
    Unique(String),
    AcceptedValues(String, Vec<String>),
    Relationships {
        column: String,
        to_model: String,
        to_column: String,
    },
    /// A query that must return no rows.
    Sql(String),
}

#[derive(Debug, Clone)]
pub struct DataTest {
    pub name: String,
    pub model: String,
    pub check: Check,
}

/// Settings of a `transform` task.
#[derive(Debug, Clone)]
pub struct TransformSpec {
    pub models: Vec<Model>,
    /// Model indices in dependency order.
    pub order: Vec<usize>,
    pub connection: String,
    pub tests: Vec<DataTest>,
    /// Run a table model's tests before swapping it in (a failure keeps the old table).
    pub tests_block: bool,
}

impl Spec for TransformSpec {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn run<'a>(&'a self, ctx: &'a mut RunContext<'_>) -> Running<'a> {
        Box::pin(run::run(ctx, self))
    }
}
