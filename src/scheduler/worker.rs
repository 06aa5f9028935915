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
    log.flush().await;
    let (reply, wait) = tokio::sync::oneshot::channel();
    let item = commands::FinishItem {
        ti: ti.clone(),
        try_id,
        worker_id: shared.worker_id.clone(),
        outcome: outcome.clone(),
        lost: None,
    };
    let finished = match shared
        .finisher
        .send(crate::scheduler::FinishRequest { item, reply })
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
                    fire_callbacks(dag, run, &ti, &f, &outcome, shared.base_url());
                }
                if let Some(state) = f.run_finished {
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
        commands::fire_callback(cb, ctx.clone(), dag.base_dir());
    }
    if let Some(state) = f.run_finished {
        let cb = match state {
            crate::db::RunState::Success => dag.callbacks.on_success.as_ref(),
            _ => dag.callbacks.on_failure.as_ref(),
        };
        if let Some(cb) = cb {
            ctx.task_id = String::new();
            ctx.state = Some(state.as_str().to_string());
            commands::fire_callback(cb, ctx, dag.base_dir());
        }
    }
}
