//! `noop`: does nothing and succeeds at once, in process: a join point or placeholder
//! (Airflow's EmptyOperator). The smallest kind, and the example of what a kind is.

use std::sync::Arc;

use super::{Kind, RunContext, Running, Spec};
use crate::db::tasks::TryOutcome;

pub static KIND: Kind = Kind {
    name: "noop",
    keys: &[],
    doc_keys: "",
    summary: "succeeds at once, in process (a join point, like Airflow's EmptyOperator)",
    parse: |_, _, _, _| Some(Arc::new(NoopSpec)),
    warehouse: &[],
    api_routes: None,
    routes: None,
};

/// A `noop` task has no settings.
#[derive(Debug, Clone)]
pub struct NoopSpec;

impl Spec for NoopSpec {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn run<'a>(&'a self, _ctx: &'a mut RunContext<'_>) -> Running<'a> {
        Box::pin(async { TryOutcome::success() })
    }
}
