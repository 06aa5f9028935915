//! The worker side of the engine: runs a started try (renders its templates, runs its
//! kind, stores its log) and hands the outcome to the finisher, which records it through
//! `commands::finish_tries` and schedules what the try unblocks.
//!
//! Never decides what runs next (that is the scheduler loop), never writes SQL itself
//! (that is `db`), never knows what a kind does (that is `kinds`).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Shared, commands};
use crate::dag::template::TemplateContext;
use crate::db::TaskState;
use crate::db::entities::task_instance;
use crate::db::tasks::{self, TryOutcome};
use crate::kinds::{RunContext, execute};
use crate::tasklog::LogSink;

/// Runs one started try to its end.
pub async fn run_started(
    shared: Arc<Shared>,
    started: tasks::StartedTry,
    run: crate::db::entities::dag_run::Model,
) {
    let db = &shared.db;
    let ti = started.ti;
    let try_id = started.try_id;
    let started_at = ti.started_at;
    let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(None);
    shared
        .inflight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(ti.id, cancel_tx);
    let secrets = std::sync::Arc::new(shared.config.secrets());
    let mut log =
        LogSink::new(db.clone(), try_id, shared.config.log_max_bytes).with_secrets(secrets.clone());
    let mut outcome = prepare_and_execute(&shared, &ti, &run, try_id, &mut log, cancel_rx).await;
    outcome = outcome.map_error(|e| crate::config::redact(&e, &secrets));
    shared
        .inflight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&ti.id);
    match outcome.error() {
        None => log.line("[weft] task succeeded").await,
        Some(e) => log.line(&format!("[weft] task failed: {e}")).await,
    }
    let (reply, wait) = tokio::sync::oneshot::channel();
    let item = commands::FinishItem {
        ti: ti.clone(),
        try_id,
        worker_id: shared.worker_id.clone(),
        outcome: outcome.clone(),
        lost: None,
        log_tail: log.take_tail(),
    };
    let finished = match shared
        .finisher
        .send(crate::scheduler::FinishRequest { item, reply })
        .await
    {
        Ok(()) => wait
            .await
            .unwrap_or_else(|_| Err("the finisher stopped".into())),
        Err(_) => Err("the finisher stopped".into()),
    };
    match finished {
        Ok(f) => {
            if f.recorded && f.state != crate::db::TaskState::Success {
                tracing::warn!(
                    dag = %ti.dag_id,
                    run = %run.run_id,
                    task = %ti.task_id,
                    try_number = ti.try_number,
                    state = %f.state,
                    "try failed: {}",
                    outcome.error().unwrap_or("(no message)")
                );
            }
            if let (Some(dag), Some(run)) = (&f.dag, &f.run) {
                if f.recorded {
                    fire_callbacks(&shared, dag, run, &ti, &f, &outcome, shared.base_url());
                }
                if let Some(state) = f.run_finished {
                    metrics::counter!("weft_dag_runs_total", "state" => state.as_str())
                        .increment(1);
                    if state == crate::db::RunState::Failed {
                        tracing::warn!(dag = %dag.dag_id, run = %run.run_id, "run failed");
                    }
                    let _ = shared.run_events.send(crate::scheduler::RunEvent {
                        dag_id: dag.dag_id.clone(),
                        run_pk: run.id,
                        state,
                    });
                }
            }
            let label = if f.recorded {
                f.state.as_str()
            } else {
                "unrecorded"
            };
            metrics::counter!("weft_task_tries_total", "state" => label).increment(1);
            if let Some(d) = started_at.map(|s| (shared.clock.now() - s).num_milliseconds()) {
                metrics::histogram!("weft_task_try_duration_seconds", "kind" => ti.kind.clone())
                    .record(d as f64 / 1000.0);
            }
        }
        Err(e) => {
            tracing::error!(ti = ti.id, error = %e, "could not record the end of a try; it stays running until this worker is restarted and the sweep fails it")
        }
    }
    shared.wake.notify_one();
}

async fn prepare_and_execute(
    shared: &Shared,
    ti: &task_instance::Model,
    run: &crate::db::entities::dag_run::Model,
    try_id: i64,
    log: &mut LogSink,
    cancel: tokio::sync::watch::Receiver<Option<String>>,
) -> TryOutcome {
    let db = &shared.db;
    let dag = match shared.registry.version(db, run.dag_version_id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return crate::db::tasks::TryOutcome::failed(format!(
                "the definition (version {}) of this run cannot be loaded",
                run.dag_version_id
            ));
        }
        Err(e) => return crate::db::tasks::TryOutcome::failed(format!("database error: {e}")),
    };
    let Some(task) = dag.task(&ti.task_id) else {
        return crate::db::tasks::TryOutcome::failed(format!(
            "task \"{}\" is not in this run's dag version",
            ti.task_id
        ));
    };
    let tmpl = template_context(&dag, run, ti).with_base_url(shared.base_url());
    log.line(&format!(
        "[weft] {} {} try {} of {} on {} (worker {})",
        dag.dag_id, ti.task_id, ti.try_number, ti.max_tries, shared.hostname, shared.worker_id
    ))
    .await;
    let mut ctx = RunContext {
        db,
        dag: &dag,
        task,
        tmpl: &tmpl,
        ti_id: ti.id,
        try_id,
        kill_grace: shared.config.kill_grace,
        pass_env: &shared.config.task_pass_env,
        cancel,
        warehouses: &shared.warehouses,
        log,
    };
    execute(&mut ctx).await
}

/// The template variables of a try of `ti` in `run`.
fn template_context(
    dag: &crate::dag::Dag,
    run: &crate::db::entities::dag_run::Model,
    ti: &task_instance::Model,
) -> TemplateContext {
    let params: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&run.params).unwrap_or_default();
    TemplateContext::new(
        &dag.dag_id,
        &run.run_id,
        &ti.task_id,
        ti.try_number,
        run.data_interval_start,
        run.data_interval_end,
        dag.timezone,
        params,
    )
}

fn fire_callbacks(
    shared: &Arc<Shared>,
    dag: &crate::dag::Dag,
    run: &crate::db::entities::dag_run::Model,
    ti: &task_instance::Model,
    f: &commands::Finished,
    outcome: &TryOutcome,
    base_url: String,
) {
    let Some(task) = dag.task(&ti.task_id) else {
        return;
    };
    let mut ctx = template_context(dag, run, ti).with_base_url(base_url);
    ctx.state = Some(f.state.as_str().to_string());
    ctx.error = outcome.error().map(str::to_string);
    let cb = match f.state {
        TaskState::Success => task.callbacks.on_success.as_ref(),
        TaskState::UpForRetry => task.callbacks.on_retry.as_ref(),
        TaskState::Failed => task.callbacks.on_failure.as_ref(),
        _ => None,
    };
    if let Some(cb) = cb {
        fire_callback(shared, cb, ctx.clone(), dag.base_dir());
    }
    if let Some(state) = f.run_finished {
        let cb = match state {
            crate::db::RunState::Success => dag.callbacks.on_success.as_ref(),
            _ => dag.callbacks.on_failure.as_ref(),
        };
        if let Some(cb) = cb {
            ctx.task_id = String::new();
            ctx.state = Some(state.as_str().to_string());
            fire_callback(shared, cb, ctx, dag.base_dir());
        }
    }
}

/// The longest a command callback may run; then its process group is stopped like a
/// task's at its timeout.
pub const CALLBACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs a callback in the background, tracked with the engine's tries (shutdown waits
/// for it). A command runs through the same process-group code as a shell task: its own
/// group, the minimal environment, a timeout, and nothing it started outlives it; its
/// output goes to the server log at debug level. Failures are logged; they never change
/// task state.
fn fire_callback(
    shared: &Arc<Shared>,
    cb: &crate::dag::Callback,
    ctx: TemplateContext,
    dir: std::path::PathBuf,
) {
    use crate::dag::Callback;
    let cb = cb.clone();
    let kill_grace = shared.config.kill_grace;
    shared.tracker.spawn(async move {
        let result = match &cb {
            Callback::Command { command } => {
                match ctx.render_for(command, crate::dag::template::Quoting::Shell) {
                    Ok(cmd) => {
                        let mut env = crate::process::base_env(&[]);
                        env.extend(ctx.env_vars());
                        env.push((
                            crate::process::MARKER.to_string(),
                            format!("callback-{}", uuid::Uuid::new_v4().simple()),
                        ));
                        let (_keep, cancel) = tokio::sync::watch::channel(None);
                        let mut out = crate::process::Traced {
                            what: format!("callback of {} {}", ctx.dag_id, ctx.task_id),
                            limit: 100,
                            seen: 0,
                        };
                        crate::process::run_shell(
                            &cmd,
                            &dir,
                            &env,
                            Some(CALLBACK_TIMEOUT),
                            kill_grace,
                            cancel,
                            &mut out,
                            async |_| {},
                        )
                        .await
                        .map_err(|e| format!("cannot start: {e}"))
                        .and_then(|exit| match (exit.stopped, exit.code) {
                            (Some(stop), _) => Err(format!("stopped ({stop:?})")),
                            (None, Some(0)) => Ok(()),
                            (None, code) => Err(format!(
                                "exited with code {}",
                                code.map_or_else(
                                    || format!("none (signal {:?})", exit.signal),
                                    |c| c.to_string()
                                )
                            )),
                        })
                    }
                    Err(e) => Err(e),
                }
            }
            Callback::Http {
                url,
                method,
                headers,
            } => match ctx.render(url) {
                Ok(url) => {
                    let mut h: Vec<(String, String)> = headers
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    h.push(("content-type".into(), "application/json".into()));
                    let body = serde_json::to_string(&ctx).unwrap_or_default();
                    crate::kinds::http::run::send(
                        method,
                        &url,
                        &h,
                        Some(body),
                        Some(std::time::Duration::from_secs(30)),
                    )
                    .await
                    .and_then(|(s, _)| {
                        if (200..300).contains(&s) {
                            Ok(())
                        } else {
                            Err(format!("HTTP {s}"))
                        }
                    })
                }
                Err(e) => Err(e),
            },
        };
        if let Err(e) = result {
            tracing::warn!(dag = %ctx.dag_id, task = %ctx.task_id, "callback failed: {e}");
        }
    });
}
