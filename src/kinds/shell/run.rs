//! `shell`: `sh -c <command>` in its own process group, with the run's variables in the
//! environment (`WEFT_DS`, ...), output streamed to the try's log.

use std::path::Path;

use crate::dag::template::Quoting;
use crate::db::tasks::{self, TryOutcome};
use crate::kinds::env::{RunContext, failure};
use crate::process::{self, Stop};

pub async fn run(ctx: &mut RunContext<'_>, command: &str, cwd: Option<&Path>) -> TryOutcome {
    let command = match ctx.tmpl.render_for(command, Quoting::Shell) {
        Ok(c) => c,
        Err(e) => return failure(e),
    };
    let mut env = process::base_env(ctx.pass_env);
    env.extend(ctx.tmpl.env_vars());
    env.push(("WEFT_TI_ID".to_string(), ctx.ti_id.to_string()));
    env.push((
        process::MARKER.to_string(),
        format!("{}-{}", ctx.try_id, uuid::Uuid::new_v4().simple()),
    ));
    for (k, v) in &ctx.task.env {
        match ctx.render(v) {
            Ok(v) => env.push((k.clone(), v)),
            Err(e) => return failure(format!("env {k}: {e}")),
        }
    }
    let base = ctx.base_dir();
    let dir = match cwd {
        Some(c) => base.join(c),
        None => base,
    };
    if !dir.is_dir() {
        return failure(format!(
            "working directory {} does not exist",
            dir.display()
        ));
    }
    ctx.log.line(&format!("[weft] $ {command}")).await;
    let db = ctx.db.clone();
    let ti_id = ctx.ti_id;
    let record_pid = async move |pid: i32| {
        if let Err(e) = tasks::set_pid(&db.conn, ti_id, Some(pid)).await {
            tracing::warn!(ti_id, error = %e, "could not record the pid of a task process");
        }
    };
    let exit = process::run_shell(
        &command,
        &dir,
        &env,
        ctx.task.timeout,
        ctx.kill_grace,
        ctx.cancel.clone(),
        ctx.log,
        record_pid,
    )
    .await;
    let exit = match exit {
        Ok(e) => e,
        Err(e) => return failure(format!("could not start sh: {e}")),
    };
    match (exit.stopped, exit.code, exit.signal) {
        (Some(Stop::Timeout(t)), _, _) => failure(format!(
            "timed out after {}; the process group was killed",
            humantime::format_duration(t)
        )),
        (Some(Stop::Cancelled), _, _) => {
            failure("stopped: the worker shut down while the task ran")
        }
        (None, Some(0), _) => TryOutcome::Success { exit_code: Some(0) },
        (None, Some(code), _) => TryOutcome::Failed {
            exit_code: Some(code),
            error: format!("command exited with code {code}"),
        },
        (None, None, Some(sig)) => failure(format!("command was killed by signal {sig}")),
        (None, None, None) => failure("command ended without an exit status"),
    }
}
