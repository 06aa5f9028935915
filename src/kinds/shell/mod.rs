//! `shell`: a command in its own process group.

mod parse;
pub mod run;

use std::path::PathBuf;
use std::sync::Arc;

use super::{Kind, RunContext, Running, Spec};

pub static KIND: Kind = Kind {
    name: "shell",
    keys: &["command", "cwd"],
    doc_keys: "`command`, `cwd`",
    summary: "`sh -c command` in its own process group, working directory = the DAG file's folder (or `cwd` relative to it); stdout and stderr go to the log; exit code 0 is success",
    parse: |p, t, id, span| p.shell(t, id, span).map(|s| Arc::new(s) as Arc<dyn Spec>),
    warehouse: &[],
    api_routes: None,
    routes: None,
};

/// Settings of a `shell` task.
#[derive(Debug, Clone)]
pub struct ShellSpec {
    pub command: String,
    /// Working directory relative to the DAG file's folder.
    pub cwd: Option<PathBuf>,
}

impl Spec for ShellSpec {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn templates(&self) -> Vec<(&'static str, &str, crate::dag::template::Quoting)> {
        vec![(
            "command",
            self.command.as_str(),
            crate::dag::template::Quoting::Shell,
        )]
    }

    fn run<'a>(&'a self, ctx: &'a mut RunContext<'_>) -> Running<'a> {
        Box::pin(run::run(ctx, &self.command, self.cwd.as_deref()))
    }
}
