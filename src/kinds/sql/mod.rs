//! `sql`: statements on a warehouse connection.

mod parse;
pub mod run;

use std::sync::Arc;

use super::{Kind, RunContext, Running, Spec};

pub static KIND: Kind = Kind {
    name: "sql",
    keys: &["sql", "file", "connection"],
    doc_keys: "`sql` or `file`, `connection` (`warehouse`)",
    summary: "runs the statements on a warehouse connection",
    parse: |p, t, id, span| p.sql(t, id, span).map(|s| Arc::new(s) as Arc<dyn Spec>),
    warehouse: &[],
    api_routes: None,
    routes: None,
};

/// Settings of a `sql` task.
#[derive(Debug, Clone)]
pub struct SqlSpec {
    /// The statements (inline, or the text of `file`, from the DAG's bundle).
    pub sql: String,
    pub connection: String,
}

impl Spec for SqlSpec {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn templates(&self) -> Vec<(&'static str, &str, crate::dag::template::Quoting)> {
        vec![("sql", self.sql.as_str(), crate::dag::template::Quoting::Sql)]
    }

    fn run<'a>(&'a self, ctx: &'a mut RunContext<'_>) -> Running<'a> {
        Box::pin(run::run(ctx, &self.sql, &self.connection))
    }
}
