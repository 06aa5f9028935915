//! Task kinds. Each kind is one folder (`kinds/<kind>/`) that owns everything of it:
//! its spec type, its TOML keys and their validation (methods on the DAG parser, with
//! the same file:line diagnostics as the rest of the file), its runner, the warehouse
//! tables it writes and the code that reads them back, and its pages where it has any.
//!
//! [`KINDS`] lists the kinds once. Names, key checks, "did you mean", dispatch and the
//! docs table all come from it: adding a kind is a new folder and one line there.
//!
//! A kind's runner talks to its environment ([`env::RunContext`]: the rendered template
//! context, the task's log, cancellation and the warehouses), never to the executor or
//! the scheduler.

pub mod dialect;
pub mod env;
mod fetch;
pub mod warehouse;

pub mod experiment;
pub mod http;
pub mod ingest;
pub mod noop;
pub mod shell;
pub mod sql;
pub mod survey;
pub mod transform;

use std::any::Any;
use std::fmt::Debug;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use toml::de::DeTable;

use crate::dag::parse::Parser;
use crate::db::tasks::TryOutcome;
pub use env::{RunContext, Warehouses};

/// A connection to a warehouse.
pub type Warehouse = sea_orm::DatabaseConnection;

/// A future a runner returns.
pub type Running<'a> = Pin<Box<dyn Future<Output = TryOutcome> + Send + 'a>>;

/// Reads a task of this kind from its TOML table: the spec, or `None` after reporting
/// every problem to the parser. Arguments: the parser, the task's table, its id, and
/// the span of its `[tasks.<id>]` key.
pub(crate) type ParseFn =
    fn(&mut Parser<'_, '_>, &DeTable<'_>, &str, Range<usize>) -> Option<Arc<dyn Spec>>;

/// Builds a kind's routes (its pages' handlers live in its folder).
pub type RoutesFn = fn() -> axum::Router<crate::web::AppState>;

/// One task kind, as the registry lists it.
#[derive(Debug)]
pub struct Kind {
    /// The value of `kind = "..."`.
    pub name: &'static str,
    /// One line for `weft kinds` and the README's table.
    pub summary: &'static str,
    /// The keys a task of this kind may have besides the common ones.
    pub keys: &'static [&'static str],
    /// The keys as the README's table of kinds shows them (with defaults).
    pub doc_keys: &'static str,
    pub(crate) parse: ParseFn,
    /// Versioned migrations of the warehouse tables the kind writes.
    pub warehouse: &'static [warehouse::Migration],
    /// The routes of the kind's pages, if it has any (their handlers live in its folder).
    pub routes: Option<RoutesFn>,
    /// The kind's JSON API routes under `/api/v1`, if it has any.
    pub api_routes: Option<RoutesFn>,
}

/// Every kind, in the order messages list them.
pub static KINDS: &[&Kind] = &[
    &shell::KIND,
    &http::KIND,
    &sql::KIND,
    &noop::KIND,
    &ingest::KIND,
    &transform::KIND,
    &experiment::KIND,
    &survey::KIND,
];

/// The kind named `name`.
pub fn find(name: &str) -> Option<&'static Kind> {
    KINDS.iter().copied().find(|k| k.name == name)
}

/// The names of every kind, in registry order.
pub fn names() -> impl Iterator<Item = &'static str> + Clone {
    KINDS.iter().map(|k| k.name)
}

/// The routes of the kinds that have pages (their handlers live in their folders).
pub fn routes() -> axum::Router<crate::web::AppState> {
    merged(|k| k.routes)
}

/// The JSON API routes of the kinds that have them (nested under `/api/v1`).
pub fn api_routes() -> axum::Router<crate::web::AppState> {
    merged(|k| k.api_routes)
}

/// One router of the routes `which` names in every kind that has them.
fn merged(which: fn(&Kind) -> Option<RoutesFn>) -> axum::Router<crate::web::AppState> {
    KINDS
        .iter()
        .filter_map(|k| which(k))
        .fold(axum::Router::new(), |r, f| r.merge(f()))
}

/// The README's table of kinds, from the registry.
pub fn docs_table() -> String {
    let mut out = String::from("| kind | keys | does |\n|---|---|---|\n");
    for k in KINDS {
        let row = format!("| `{}` | {} | {} |\n", k.name, k.doc_keys, k.summary);
        out.push_str(&row.replace("|  |", "| |"));
    }
    out
}

/// `s` percent-encoded for one segment of a URL path.
pub fn url_part(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A page a task's results are shown on: (label, href).
pub type Insight = (String, String);

/// A kind's validated settings: what a task of that kind does.
pub trait Spec: Debug + Send + Sync + Any {
    /// The kind this spec belongs to.
    fn kind(&self) -> &'static Kind;

    /// Runs one try. Never panics on bad input: every problem becomes a failed try
    /// with a message.
    fn run<'a>(&'a self, ctx: &'a mut RunContext<'_>) -> Running<'a>;

    /// The results page this task feeds, if its kind has one.
    fn insight(&self) -> Option<Insight> {
        None
    }

    /// The templated fields a try renders (name, template, quoting), for the task
    /// page's "rendered templates".
    fn templates(&self) -> Vec<(&'static str, &str, crate::dag::template::Quoting)> {
        Vec::new()
    }
}

impl dyn Spec {
    /// The spec as its concrete type, when it is of that kind.
    pub fn downcast<T: Spec>(&self) -> Option<&T> {
        (self as &dyn Any).downcast_ref::<T>()
    }
}

/// Runs one try of a task: dispatches to its kind.
pub async fn execute(ctx: &mut RunContext<'_>) -> TryOutcome {
    let spec = ctx.task.spec.clone();
    spec.run(ctx).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_table_of_kinds_comes_from_the_registry() {
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&docs_table()),
            "README.md's table of kinds differs from the registry; it should read:\n{}",
            docs_table()
        );
    }

    #[test]
    fn kind_names_are_unique_and_keys_belong_to_one_kind() {
        let mut names: Vec<&str> = names().collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KINDS.len());
        for k in KINDS {
            assert_eq!(find(k.name).map(|f| f.name), Some(k.name));
            for key in k.keys {
                assert!(
                    !crate::dag::parse::COMMON_KEYS.contains(key),
                    "{}: {key} is a common key",
                    k.name
                );
            }
        }
    }
}
