//! The keys of a `shell` task.

use std::ops::Range;

use toml::de::DeTable;

use super::*;
use crate::dag::parse::*;

impl Parser<'_, '_> {
    pub(crate) fn shell(
        &mut self,
        t: &DeTable<'_>,
        id: &str,
        key_span: Range<usize>,
    ) -> Option<ShellSpec> {
        let command = self.required(t, id, "command", &key_span, "shell");
        if let (Some((c, span)), Some(v)) = (&command, lookup(t, "command")) {
            let _ = v;
            if template::raw_params(c) {
                self.sink.warn(
                    span.clone(),
                    Some(id),
                    "a param is spliced into the command with `| raw`: its value runs as shell code; pass it through env instead",
                );
            }
        }
        let cwd: Option<std::path::PathBuf> = match lookup(t, "cwd") {
            Some(v) => match self.string(v, Some(id), "cwd") {
                Some(c) => {
                    let is_dir = self.bundle.dirs.get(&c).copied();
                    if is_dir.is_none() {
                        self.wants.push(Want::Dir(c.clone()));
                    } else if is_dir == Some(false) {
                        self.err(
                            v.span(),
                            Some(id),
                            format!("cwd \"{c}\" is not a folder (paths are relative to the DAG file's folder)"),
                        );
                    }
                    Some(c.into())
                }
                None => None,
            },
            None => None,
        };
        Some(ShellSpec {
            command: command?.0,
            cwd,
        })
    }
}
