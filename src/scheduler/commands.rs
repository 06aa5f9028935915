//! State changes of runs and task instances, each one database transaction composed of
//! conditional updates (`db`) and pure decisions (`rules`, `plan`). The web UI, the
//! CLI and the engine change state only through these functions.

pub use crate::db::audit::{Actor, Entry as AuditEntry};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, TransactionTrait};

use super::registry::Registry;
use super::rules;
use crate::dag::Dag;
use crate::db::entities::{dag_run, task_instance};
use crate::db::machine as m;
use crate::db::runs::{self, NewRun};
use crate::db::tasks::{self, TryOutcome};
use crate::db::{Db, DbError, DbResult, RunState, RunType, TaskState};

/// Errors of commands: bad input (a message for the user) or the database.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sea_orm::DbErr> for CommandError {
    fn from(e: sea_orm::DbErr) -> Self {
        CommandError::Db(DbError::Db(e))
    }
}

pub type CommandResult<T> = Result<T, CommandError>;

/// Applies the trigger rules to a run's pending tasks and finishes the run when every
/// task is terminal. Returns the run's final state if this call finished it.
pub async fn evaluate<C: ConnectionTrait>(
    c: &C,
    dag: &Dag,
    run: &dag_run::Model,
    now: DateTime<Utc>,
) -> DbResult<Option<RunState>> {
    let mut states: HashMap<String, TaskState> =
        tasks::states_of_run(c, run.id).await?.into_iter().collect();
    let decisions = rules::evaluate(dag, &states);
    let mut by_state: BTreeMap<TaskState, Vec<String>> = BTreeMap::new();
    for (task, state) in decisions {
        states.insert(task.clone(), state);
        by_state.entry(state).or_default().push(task);
    }
    for (state, ids) in by_state {
        let mv = if state == TaskState::Scheduled {
            &m::SCHEDULE
        } else {
            &m::BLOCK
        };
        tasks::transition_by_task(c, mv, run.id, &ids, state, now).await?;
    }
    if run.state != RunState::Running {
        return Ok(None);
    }
    match rules::run_outcome(dag, &states) {
        Some(fin) if runs::transition(c, &m::RUN_FINISH, run.id, fin, now).await? => {
            // The run made room under max_active_runs: plan the DAG again.
            crate::db::dags::replan(c, &dag.dag_id).await?;
            Ok(Some(fin))
        }
        _ => Ok(None),
    }
}

/// Brings a run's task instances in line with a DAG version: tasks the version lacks
/// become `removed` (if they have not run), new tasks are added as `pending`.
async fn reconcile<C: ConnectionTrait>(
    c: &C,
    dag: &Dag,
    run: &dag_run::Model,
    version_id: i64,
    now: DateTime<Utc>,
) -> DbResult<()> {
    if run.dag_version_id == version_id {
        return Ok(());
    }
    runs::set_version(c, run.id, version_id).await?;
    let tis = tasks::of_run(c, run.id).await?;
    let gone: Vec<String> = tis
        .iter()
        .filter(|t| dag.task(&t.task_id).is_none())
        .map(|t| t.task_id.clone())
        .collect();
    tasks::transition_by_task(c, &m::REMOVE, run.id, &gone, TaskState::Removed, now).await?;
    let have: Vec<&str> = tis.iter().map(|t| t.task_id.as_str()).collect();
    let new: Vec<&str> = dag
        .tasks
        .iter()
        .map(|t| t.task_id.as_str())
        .filter(|id| !have.contains(id))
        .collect();
    runs::insert_task_instances(c, run.id, &dag.dag_id, &dag.new_tasks(Some(&new)), now).await?;
    Ok(())
}

/// Starts queued runs of a DAG, oldest logical date first, while fewer than
/// `max_active_runs` run. A run that starts adopts the DAG's current version.
pub async fn start_queued_in<C: ConnectionTrait>(
    c: &C,
    dag: &Dag,
    version_id: i64,
    now: DateTime<Utc>,
) -> DbResult<Vec<i64>> {
    // Several schedulers (and workers finishing runs) may start a DAG's queued runs
    // at once: on PostgreSQL they take turns per DAG, so the count below stays true
    // until this transaction ends and max_active_runs holds across processes.
    runs::lock_dag_runs(c, &dag.dag_id).await?;
    let running = runs::count_runs(c, &dag.dag_id, &[RunState::Running]).await?;
    let room = u64::from(dag.max_active_runs).saturating_sub(running);
    if room == 0 {
        return Ok(Vec::new());
    }
    let mut started = Vec::new();
    for run in runs::queued_runs(c, &dag.dag_id, room).await? {
        reconcile(c, dag, &run, version_id, now).await?;
        if runs::transition(c, &m::RUN_START, run.id, RunState::Running, now).await? {
            let run = dag_run::Model {
                state: RunState::Running,
                dag_version_id: version_id,
                ..run
            };
            evaluate(c, dag, &run, now).await?;
            started.push(run.id);
        }
    }
    Ok(started)
}

/// `start_queued_in` in its own transaction.
pub async fn start_queued(
    db: &Db,
    dag: &Dag,
    version_id: i64,
    now: DateTime<Utc>,
) -> DbResult<Vec<i64>> {
    let txn = db.conn.begin().await?;
    let started = start_queued_in(&txn, dag, version_id, now).await?;
    txn.commit().await?;
    Ok(started)
}

/// Creates a run (queued) and, when there is room, starts it, in one transaction.
/// Returns `None` when the run already exists.
pub async fn create_run(
    db: &Db,
    dag: &Dag,
    version_id: i64,
    new: &NewRun,
    now: DateTime<Utc>,
) -> DbResult<Option<dag_run::Model>> {
    let txn = db.conn.begin().await?;
    let Some(run) = create_run_in(&txn, dag, version_id, new, now).await? else {
        txn.rollback().await?;
        return Ok(None);
    };
    txn.commit().await?;
    Ok(Some(run))
}

/// `create_run` inside a transaction of the caller's (the scheduler creates the runs
/// of many due DAGs in one transaction).
pub async fn create_run_in<C: ConnectionTrait>(
    c: &C,
    dag: &Dag,
    version_id: i64,
    new: &NewRun,
    now: DateTime<Utc>,
) -> DbResult<Option<dag_run::Model>> {
    let Some(run) = runs::insert_run(c, &dag.new_tasks(None), new, now).await? else {
        return Ok(None);
    };
    start_queued_in(c, dag, version_id, now).await?;
    Ok(Some(runs::get_run(c, run.id).await?.unwrap_or(run)))
}

/// A manual run: params are type-checked against the DAG's `[params]`.
pub async fn trigger(
    db: &Db,
    dag: &Dag,
    version_id: i64,
    params: &BTreeMap<String, serde_json::Value>,
    conf: serde_json::Value,
    logical_date: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> CommandResult<dag_run::Model> {
    let params = dag
        .resolve_params(params)
        .map_err(|e| CommandError::Invalid(format!("dag \"{}\": {}", dag.dag_id, e.join("; "))))?;
    if !conf.is_object() && !conf.is_null() {
        return Err(CommandError::Invalid("conf must be a JSON object".into()));
    }
    let logical = logical_date.unwrap_or(now);
    // With an explicit logical date on a cron DAG, the run covers the interval that
    // contains it, so `ds` is what a scheduled run would have had.
    let interval = match logical_date {
        Some(t) => dag
            .timetable()
            .interval_containing(t)
            .map(|iv| (iv.start, iv.end))
            .unwrap_or((t, t)),
        None => (now, now),
    };
    let mut run_id = format!(
        "manual__{}",
        logical.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    for n in 1.. {
        if runs::find_run(&db.conn, &dag.dag_id, &run_id)
            .await?
            .is_none()
        {
            break;
        }
        run_id = format!(
            "manual__{}_{n}",
            logical.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
    }
    let new = NewRun {
        dag_id: dag.dag_id.clone(),
        run_id: run_id.clone(),
        run_type: RunType::Manual,
        logical_date: interval.0,
        interval_start: interval.0,
        interval_end: interval.1,
        dag_version_id: version_id,
        params: serde_json::to_value(params).unwrap_or_default(),
        conf: if conf.is_null() {
            serde_json::json!({})
        } else {
            conf
        },
    };
    create_run(db, dag, version_id, &new, now)
        .await?
        .ok_or_else(|| CommandError::Invalid(format!("run \"{run_id}\" already exists")))
}

/// What finishing a try did.
#[derive(Debug, Clone)]
pub struct Finished {
    /// False when the try was no longer this worker's (it was rescued as an orphan).
    pub recorded: bool,
    pub state: TaskState,
    pub run_finished: Option<RunState>,
    pub run: Option<dag_run::Model>,
    pub dag: Option<Arc<Dag>>,
}

/// The end of one try, to be recorded.
#[derive(Debug, Clone)]
pub struct FinishItem {
    pub ti: task_instance::Model,
    pub try_id: i64,
    pub worker_id: String,
    pub outcome: TryOutcome,
    /// Set when the worker is gone and another process records the end (the rescue
    /// move): the line written to the try's log, in the same transaction as the fenced
    /// update, so it is written exactly when the rescue happens.
    pub lost: Option<String>,
    /// The end of the try's log, written in the same transaction as its result (one
    /// commit less per try).
    pub log_tail: Option<crate::tasklog::LogTail>,
}

/// Records the end of a try and, in the same transaction, schedules what it unblocks:
/// downstream tasks, the run's final state, and the next queued run of the DAG.
pub async fn finish_try(
    db: &Db,
    reg: &Registry,
    ti: &task_instance::Model,
    try_id: i64,
    worker_id: &str,
    outcome: &TryOutcome,
    now: DateTime<Utc>,
) -> DbResult<Finished> {
    let item = FinishItem {
        ti: ti.clone(),
        try_id,
        worker_id: worker_id.to_string(),
        outcome: outcome.clone(),
        lost: None,
        log_tail: None,
    };
    let mut out = finish_tries(db, reg, std::slice::from_ref(&item), now).await?;
    out.pop()
        .ok_or_else(|| DbError::NotFound("no result for a finished try".into()))
}

/// `finish_try` for many tries in one transaction: each try is recorded with its own
/// fenced update, and each affected run is evaluated once. Batching keeps every
/// guarantee (it is all one transaction) and saves a run evaluation per try when many
/// tasks of one run finish together.
pub async fn finish_tries(
    db: &Db,
    reg: &Registry,
    items: &[FinishItem],
    now: DateTime<Utc>,
) -> DbResult<Vec<Finished>> {
    let mut run_ids: Vec<i64> = items.iter().map(|i| i.ti.dag_run_id).collect();
    run_ids.sort_unstable();
    run_ids.dedup();
    // Definitions are loaded before the transaction: loading one may need the database,
    // and SQLite has a single connection.
    let mut defs: HashMap<i64, Arc<Dag>> = HashMap::new();
    for id in &run_ids {
        if let Some(r) = runs::get_run(&db.conn, *id).await?
            && let Some(d) = reg.version(db, r.dag_version_id).await?
        {
            defs.insert(*id, d);
        }
    }
    let txn = db.conn.begin().await?;
    // The ends of the tries' logs, whether or not their results are recorded below: it
    // is what the tries printed.
    let tails: Vec<(i64, i32, &str)> = items
        .iter()
        .filter_map(|it| {
            it.log_tail
                .as_ref()
                .map(|t| (it.try_id, t.seq, t.content.as_str()))
        })
        .collect();
    tasks::append_logs(&txn, &tails, now).await?;
    let mut out = Vec::with_capacity(items.len());
    let mut to_evaluate: BTreeMap<i64, usize> = BTreeMap::new();
    for it in items {
        let ti = &it.ti;
        let dag = defs.get(&ti.dag_run_id).cloned();
        let task = dag.as_ref().and_then(|d| d.task(&ti.task_id));
        let (state, next_retry) = if it.outcome.is_success() {
            (TaskState::Success, None)
        } else if ti.try_number < ti.max_tries {
            let delay = task.map_or(std::time::Duration::from_secs(300), |t| {
                t.retry_delay_after(u32::try_from(ti.try_number).unwrap_or(1))
            });
            // Delays are bounded at validation; the arithmetic is checked all the same.
            let at = chrono::Duration::from_std(delay)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .unwrap_or(now + chrono::Duration::days(1));
            (TaskState::UpForRetry, Some(at))
        } else {
            (TaskState::Failed, None)
        };
        let mv = if it.lost.is_some() {
            &m::RESCUE
        } else {
            &m::FINISH
        };
        let recorded = tasks::finish_try(
            &txn,
            mv,
            ti,
            it.try_id,
            &it.worker_id,
            &it.outcome,
            state,
            next_retry,
            now,
        )
        .await?;
        if let (true, Some(line)) = (recorded, &it.lost) {
            // After anything the lost worker may have written.
            tasks::append_log(&txn, it.try_id, i32::MAX - 1, line, now).await?;
        }
        if !recorded {
            tracing::warn!(ti = ti.id, task = %ti.task_id, "try {} finished, but it was no longer this worker's (declared dead or marked by an operator); its result was not recorded", ti.try_number);
        } else if state != TaskState::UpForRetry {
            to_evaluate.insert(ti.dag_run_id, out.len());
        }
        out.push(Finished {
            recorded,
            state,
            run_finished: None,
            run: None,
            dag,
        });
    }
    // The runs are locked only now, for their evaluation: the fenced updates above
    // touch this batch's own rows, so batches of other workers record their tries in
    // parallel and take turns only to evaluate a run they share. Locked in id order so
    // concurrent batches cannot deadlock.
    let mut locked: HashMap<i64, dag_run::Model> = HashMap::new();
    for id in &run_ids {
        if let Some(r) = runs::lock_run(&txn, *id).await? {
            locked.insert(*id, r);
        }
    }
    for (f, it) in out.iter_mut().zip(items) {
        f.run = locked.get(&it.ti.dag_run_id).cloned();
    }
    for (run_id, last_item) in to_evaluate {
        let (Some(run), Some(dag)) = (locked.get(&run_id), defs.get(&run_id)) else {
            continue;
        };
        let fin = evaluate(&txn, dag, run, now).await?;
        if fin.is_some() {
            if let Some((current, vid)) = reg.current(&dag.dag_id) {
                start_queued_in(&txn, &current, vid, now).await?;
            }
            out[last_item].run_finished = fin;
        }
    }
    txn.commit().await?;
    Ok(out)
}

/// Which task instances a clear (or a mark) reaches beyond the named ones, as in
/// Airflow: everything upstream and/or downstream of them; `only_failed` keeps only
/// those that failed or were upstream_failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scope {
    pub upstream: bool,
    pub downstream: bool,
    pub only_failed: bool,
}

impl Scope {
    /// `downstream` alone, the clear of earlier versions.
    pub fn downstream(downstream: bool) -> Scope {
        Scope {
            downstream,
            ..Scope::default()
        }
    }

    /// The tasks `roots` reach with this scope (every task when `roots` is empty).
    fn reach(&self, dag: &Dag, roots: &[String], all: &[String]) -> BTreeSet<String> {
        if roots.is_empty() {
            return all.iter().cloned().collect();
        }
        let r: Vec<&str> = roots.iter().map(String::as_str).collect();
        let mut out: BTreeSet<String> = roots.iter().cloned().collect();
        if self.downstream {
            out.extend(dag.downstream_closure(&r));
        }
        if self.upstream {
            out.extend(dag.upstream_closure(&r));
        }
        out
    }
}

/// Can a task instance in `state` be cleared (queued and running ones are left alone)?
fn clearable(state: TaskState, only_failed: bool) -> bool {
    if only_failed {
        return matches!(state, TaskState::Failed | TaskState::UpstreamFailed);
    }
    !matches!(state, TaskState::Queued | TaskState::Running)
}

/// The run, its definition and version, and the task instances a clear of `task_ids`
/// with `scope` would reset, in DAG order, with their current states.
async fn clear_targets(
    db: &Db,
    reg: &Registry,
    dag_id: &str,
    run_id: &str,
    task_ids: &[String],
    scope: &Scope,
) -> CommandResult<(dag_run::Model, Arc<Dag>, i64, Vec<(String, TaskState)>)> {
    let run = find_run(db, dag_id, run_id).await?;
    let (dag, vid) = match reg.current(dag_id) {
        Some(c) => c,
        None => {
            let d = reg.version(db, run.dag_version_id).await?.ok_or_else(|| {
                CommandError::NotFound(format!("no definition of dag \"{dag_id}\""))
            })?;
            (d, run.dag_version_id)
        }
    };
    let tis = tasks::states_of_run(&db.conn, run.id).await?;
    for t in task_ids {
        if !tis.iter().any(|(id, _)| id == t) {
            return Err(no_task(run_id, t, tis.iter().map(|(id, _)| id.as_str())));
        }
    }
    let all: Vec<String> = tis.iter().map(|(t, _)| t.clone()).collect();
    let reach = scope.reach(&dag, task_ids, &all);
    let order = |t: &str| dag.task_index(t).unwrap_or(usize::MAX);
    let mut targets: Vec<(String, TaskState)> = tis
        .into_iter()
        .filter(|(t, s)| reach.contains(t) && clearable(*s, scope.only_failed))
        .collect();
    targets.sort_by_key(|(t, _)| (order(t), t.clone()));
    Ok((run, dag, vid, targets))
}

/// What `clear` would reset, without changing anything: the preview an operator
/// confirms.
pub async fn clear_preview(
    db: &Db,
    reg: &Registry,
    dag_id: &str,
    run_id: &str,
    task_ids: &[String],
    scope: &Scope,
) -> CommandResult<Vec<(String, TaskState)>> {
    Ok(clear_targets(db, reg, dag_id, run_id, task_ids, scope)
        .await?
        .3)
}

/// Clears task instances of a run so they run again: the named ones and what `scope`
/// reaches from them (an empty `task_ids` clears every task). Returns the cleared task
/// ids. Tasks that are queued or running are left alone.
pub async fn clear(
    db: &Db,
    reg: &Registry,
    dag_id: &str,
    run_id: &str,
    task_ids: &[String],
    scope: &Scope,
    now: DateTime<Utc>,
) -> CommandResult<Vec<String>> {
    let (run, dag, vid, targets) = clear_targets(db, reg, dag_id, run_id, task_ids, scope).await?;
    let targets: BTreeSet<String> = targets.into_iter().map(|(t, _)| t).collect();
    let txn = db.conn.begin().await?;
    let mut cleared = Vec::new();
    for ti in tasks::of_run(&txn, run.id).await? {
        if !targets.contains(&ti.task_id) || !clearable(ti.state, scope.only_failed) {
            continue;
        }
        let retries = dag.task(&ti.task_id).map_or(0, |t| t.retries);
        if tasks::reset_for_clear(&txn, &ti, retries, now).await? {
            cleared.push(ti.task_id.clone());
        }
    }
    if !cleared.is_empty() {
        // A finished run goes back to the queue; a running one re-evaluates at once.
        runs::transition(&txn, &m::RUN_CLEAR, run.id, RunState::Queued, now).await?;
        let run = runs::get_run(&txn, run.id).await?.unwrap_or(run);
        if run.state == RunState::Running {
            evaluate(&txn, &dag, &run, now).await?;
        } else {
            start_queued_in(&txn, &dag, vid, now).await?;
        }
    }
    txn.commit().await?;
    Ok(cleared)
}

/// Fails the running try of a task instance whose worker is gone (fenced by that
/// worker's id), retrying it if it has tries left; a claim that never started goes
/// back to `scheduled`.
pub async fn rescue(
    db: &Db,
    reg: &Registry,
    ti: &task_instance::Model,
    reason: &str,
    now: DateTime<Utc>,
) -> DbResult<()> {
    let Some(worker) = ti.worker_id.clone() else {
        return Ok(());
    };
    if ti.state == TaskState::Queued {
        tasks::unclaim(&db.conn, ti.id, &worker, now).await?;
        return Ok(());
    }
    match tasks::current_try(&db.conn, ti).await? {
        Some(t) => {
            let item = FinishItem {
                ti: ti.clone(),
                try_id: t.id,
                worker_id: worker,
                outcome: TryOutcome::failed(reason),
                lost: Some(format!("[weft] this try was lost: {reason}\n")),
                log_tail: None,
            };
            finish_tries(db, reg, &[item], now).await?;
        }
        None => {
            tasks::unclaim(&db.conn, ti.id, &worker, now).await?;
        }
    }
    Ok(())
}

/// A run by its DAG and run id, or a NotFound naming both.
async fn find_run(db: &Db, dag_id: &str, run_id: &str) -> CommandResult<dag_run::Model> {
    runs::find_run(&db.conn, dag_id, run_id)
        .await?
        .ok_or_else(|| CommandError::NotFound(format!("dag \"{dag_id}\" has no run \"{run_id}\"")))
}

/// The error of a task name the run does not have, with a suggestion from its tasks.
fn no_task<'a>(run_id: &str, task: &str, names: impl Iterator<Item = &'a str>) -> CommandError {
    let hint = crate::dag::diag::did_you_mean(task, names);
    CommandError::NotFound(format!("run \"{run_id}\" has no task \"{task}\"{hint}"))
}

/// Finds a run and the definition it runs with.
async fn run_and_dag(
    db: &Db,
    reg: &Registry,
    dag_id: &str,
    run_id: &str,
) -> CommandResult<(dag_run::Model, Arc<Dag>)> {
    let run = find_run(db, dag_id, run_id).await?;
    let dag = reg.version(db, run.dag_version_id).await?.ok_or_else(|| {
        CommandError::NotFound(format!(
            "the definition of run \"{run_id}\" cannot be loaded"
        ))
    })?;
    Ok((run, dag))
}

/// Operator action: sets one task instance to `success` or `failed` (with `scope`,
/// its upstream and/or downstream tasks too; a running try is stopped by its worker
/// at once), then re-evaluates the run, reopening it if it had finished. Returns the
/// task ids it marked.
#[allow(clippy::too_many_arguments)]
pub async fn mark_task(
    db: &Db,
    reg: &Registry,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    state: TaskState,
    scope: &Scope,
    now: DateTime<Utc>,
) -> CommandResult<Vec<String>> {
    if !matches!(state, TaskState::Success | TaskState::Failed) {
        return Err(CommandError::Invalid(format!(
            "a task can be marked success or failed, not {state}"
        )));
    }
    let (run, dag) = run_and_dag(db, reg, dag_id, run_id).await?;
    let txn = db.conn.begin().await?;
    let run = runs::lock_run(&txn, run.id).await?.unwrap_or(run);
    let tis = tasks::states_of_run(&txn, run.id).await?;
    let Some((_, current)) = tis.iter().find(|(t, _)| t == task_id) else {
        return Err(no_task(
            run_id,
            task_id,
            tis.iter().map(|(t, _)| t.as_str()),
        ));
    };
    let widened = scope.upstream || scope.downstream;
    if *current == state && !widened {
        return Err(CommandError::Invalid(format!(
            "task \"{task_id}\" is already {state}"
        )));
    }
    if !m::MARK.from.contains(current) && !widened {
        return Err(CommandError::Invalid(format!(
            "task \"{task_id}\" is {current}: it is not in this run's DAG version, so it cannot be marked"
        )));
    }
    let all: Vec<String> = tis.iter().map(|(t, _)| t.clone()).collect();
    let reach = scope.reach(&dag, &[task_id.to_string()], &all);
    let marked: Vec<String> = tis
        .iter()
        .filter(|(t, s)| reach.contains(t) && *s != state && m::MARK.from.contains(s))
        .map(|(t, _)| t.clone())
        .collect();
    if marked.is_empty() {
        return Err(CommandError::Invalid(format!(
            "every task this mark reaches is already {state}"
        )));
    }
    tasks::transition_by_task(&txn, &m::MARK, run.id, &marked, state, now).await?;
    for t in &marked {
        tasks::mark_ended(&txn, run.id, t, now).await?;
    }
    reopen_and_evaluate(&txn, &dag, &run, now).await?;
    // A worker elsewhere running the marked try stops it at once.
    crate::db::notify(&txn).await?;
    txn.commit().await?;
    Ok(marked)
}

/// A finished run whose tasks changed goes back to running and is evaluated again.
async fn reopen_and_evaluate<C: ConnectionTrait>(
    c: &C,
    dag: &Dag,
    run: &dag_run::Model,
    now: DateTime<Utc>,
) -> DbResult<Option<RunState>> {
    let mut run = run.clone();
    if run.state.is_finished()
        && runs::transition(c, &m::RUN_REOPEN, run.id, RunState::Running, now).await?
    {
        run.state = RunState::Running;
    }
    if run.state == RunState::Running {
        return evaluate(c, dag, &run, now).await;
    }
    Ok(None)
}

/// Operator action: marks a run `success` (every unfinished task becomes success) or
/// `failed` (running tasks fail and are stopped, tasks that have not run are skipped)
/// — "cancel run" is marking it failed.
pub async fn mark_run(
    db: &Db,
    reg: &Registry,
    dag_id: &str,
    run_id: &str,
    state: RunState,
    by: &str,
    now: DateTime<Utc>,
) -> CommandResult<()> {
    let (run, _dag) = run_and_dag(db, reg, dag_id, run_id).await?;
    let txn = db.conn.begin().await?;
    let run = runs::lock_run(&txn, run.id).await?.unwrap_or(run);
    if run.state == state {
        return Err(CommandError::Invalid(format!(
            "run \"{run_id}\" is already {state}"
        )));
    }
    let tis = tasks::states_of_run(&txn, run.id).await?;
    let ids = |pred: &dyn Fn(TaskState) -> bool| -> Vec<String> {
        tis.iter()
            .filter(|(_, s)| pred(*s))
            .map(|(t, _)| t.clone())
            .collect()
    };
    match state {
        RunState::Success => {
            let open = ids(&|s| s != TaskState::Success && m::MARK.from.contains(&s));
            tasks::transition_by_task(&txn, &m::MARK, run.id, &open, TaskState::Success, now)
                .await?;
        }
        RunState::Failed => {
            let stopped = ids(&|s| m::CANCEL.from.contains(&s));
            tasks::transition_by_task(&txn, &m::CANCEL, run.id, &stopped, TaskState::Failed, now)
                .await?;
            // "Cancel run": the stopped tasks say who stopped them.
            tasks::set_error_by_task(&txn, run.id, &stopped, &format!("cancelled by {by}")).await?;
            tasks::transition_by_task(
                &txn,
                &m::CANCEL_WAITING,
                run.id,
                &ids(&|s| m::CANCEL_WAITING.from.contains(&s)),
                TaskState::Skipped,
                now,
            )
            .await?;
        }
        _ => {
            return Err(CommandError::Invalid(format!(
                "a run can be marked success or failed, not {state}"
            )));
        }
    }
    if runs::transition(&txn, &m::RUN_MARK, run.id, state, now).await? {
        crate::db::dags::replan(&txn, dag_id).await?;
    }
    // Workers elsewhere stop what was marked at once.
    crate::db::notify(&txn).await?;
    txn.commit().await?;
    Ok(())
}

/// Operator action: pause or unpause a DAG. `definition` records the DAG first when the
/// database does not know it yet (a CLI command before `serve` ever ran).
pub async fn set_paused(
    db: &Db,
    dag_id: &str,
    paused: bool,
    definition: Option<&Dag>,
) -> CommandResult<()> {
    if let Some(d) = definition {
        crate::db::dags::upsert_dag(&db.conn, &d.record(), Utc::now()).await?;
    }
    crate::db::dags::set_paused(&db.conn, dag_id, paused)
        .await
        .map_err(|e| match e {
            DbError::NotFound(m) => CommandError::NotFound(m),
            other => CommandError::Db(other),
        })
}

/// Operator action: creates a pool or sets its slots.
pub async fn set_pool(db: &Db, name: &str, slots: u32) -> CommandResult<()> {
    crate::db::dags::sync_pools(&db.conn, &[(name.to_string(), slots)].into()).await?;
    Ok(())
}

/// Records a DAG definition (a CLI command before `serve` ever ran); the id of the
/// version that now describes it.
pub async fn record_dag(db: &Db, dag: &Dag) -> CommandResult<i64> {
    Ok(crate::db::dags::upsert_dag(&db.conn, &dag.record(), Utc::now()).await?)
}

/// Repairs what `weft db check` found, each through the transition that owns it:
/// orphaned tries are rescued (failed, retried if they have tries left); unfinished
/// task instances of a finished run are closed (`running -> failed`, the rest
/// `-> skipped`); a run whose tasks all finished is evaluated so it finishes. Returns
/// how many problems were repaired.
pub async fn repair(
    db: &Db,
    reg: &Registry,
    problems: &[crate::db::maintenance::Problem],
    now: DateTime<Utc>,
) -> CommandResult<usize> {
    let mut repaired = 0;
    for p in problems {
        // The engine may mend the same thing meanwhile (a rescue sweep): a problem that
        // fails to repair is logged and left to the next check, not fatal for the rest.
        match repair_one(db, reg, p, now).await {
            Ok(true) => repaired += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(kind = p.kind, run = p.run_pk, error = %e, "could not repair"),
        }
    }
    Ok(repaired)
}

/// The state of one task of a run.
async fn ti_state<C: ConnectionTrait>(
    c: &C,
    run_pk: i64,
    task_id: &str,
) -> DbResult<Option<TaskState>> {
    Ok(tasks::states_of_run(c, run_pk)
        .await?
        .into_iter()
        .find(|(t, _)| t == task_id)
        .map(|(_, s)| s))
}

async fn repair_one(
    db: &Db,
    reg: &Registry,
    p: &crate::db::maintenance::Problem,
    now: DateTime<Utc>,
) -> CommandResult<bool> {
    let Some(run) = runs::get_run(&db.conn, p.run_pk).await? else {
        return Ok(false);
    };
    match p.kind {
        "orphaned_try" => {
            let Some(task_id) = &p.task_id else {
                return Ok(false);
            };
            let tis = tasks::of_run(&db.conn, run.id).await?;
            let Some(ti) = tis.iter().find(|t| &t.task_id == task_id) else {
                return Ok(false);
            };
            if !matches!(ti.state, TaskState::Running | TaskState::Queued) {
                return Ok(false);
            }
            rescue(
                db,
                reg,
                ti,
                "its worker is gone (repaired by weft db check)",
                now,
            )
            .await?;
            Ok(true)
        }
        "unfinished_task_in_finished_run" => {
            let Some(task_id) = &p.task_id else {
                return Ok(false);
            };
            let ids = std::slice::from_ref(task_id);
            let txn = db.conn.begin().await?;
            let running = ti_state(&txn, run.id, task_id).await? == Some(TaskState::Running);
            let to = if running {
                TaskState::Failed
            } else {
                TaskState::Skipped
            };
            let n = tasks::transition_by_task(&txn, &m::REPAIR, run.id, ids, to, now).await?;
            txn.commit().await?;
            Ok(n > 0)
        }
        "finished_run_still_running" => {
            let Some(dag) = reg.version(db, run.dag_version_id).await? else {
                return Ok(false);
            };
            let txn = db.conn.begin().await?;
            let run = runs::lock_run(&txn, run.id).await?.unwrap_or(run);
            let done = evaluate(&txn, &dag, &run, now).await?;
            txn.commit().await?;
            Ok(done.is_some())
        }
        _ => Ok(false),
    }
}

/// The longest note an operator can keep on a run or a task instance.
pub const NOTE_MAX: usize = 10_000;

/// Operator action: sets (an empty text removes) the note of a run, or of one of its
/// task instances.
pub async fn set_note(
    db: &Db,
    dag_id: &str,
    run_id: &str,
    task_id: Option<&str>,
    note: &str,
) -> CommandResult<()> {
    let note = note.trim();
    if note.chars().count() > NOTE_MAX {
        return Err(CommandError::Invalid(format!(
            "a note holds at most {NOTE_MAX} characters; this one has {}",
            note.chars().count()
        )));
    }
    let run = find_run(db, dag_id, run_id).await?;
    match task_id {
        None => crate::db::audit::set_run_note(&db.conn, run.id, note).await?,
        Some(t) => {
            let tis = tasks::of_run(&db.conn, run.id).await?;
            let Some(ti) = tis.iter().find(|ti| ti.task_id == t) else {
                return Err(no_task(run_id, t, tis.iter().map(|ti| ti.task_id.as_str())));
            };
            crate::db::audit::set_task_note(&db.conn, ti.id, note).await?;
        }
    }
    Ok(())
}

/// Records an operator's action in the audit log. A failure to record is logged, not
/// returned: the action itself already happened.
pub async fn audit(db: &Db, actor: &Actor, entry: AuditEntry<'_>) {
    if let Err(e) = crate::db::audit::record(&db.conn, actor, &entry, Utc::now()).await {
        tracing::error!(error = %e, action = entry.action, "could not record an action in the audit log");
    }
}
