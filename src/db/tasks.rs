//! Queries on task instances, tries and their logs, and on workers.
//!
//! Every state change is one conditional `UPDATE ... WHERE state IN (<expected>)`; a
//! change that finds the row in another state does nothing and returns `false`.
//! Finishing a try is fenced by worker id and try number, so a worker that was
//! declared dead can never overwrite the outcome of the try that replaced it.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, NotSet, QueryFilter,
    QueryOrder, QuerySelect, Statement,
};

use super::entities::{pool, task_instance, task_log, task_try, worker};
use super::machine::{CLAIM, CLEAR, RETRY, START, TaskMove, UNCLAIM};
use super::{DbResult, TaskState, TryState};

type Ti = task_instance::Model;

pub async fn of_run<C: ConnectionTrait>(c: &C, run_pk: i64) -> DbResult<Vec<Ti>> {
    Ok(task_instance::Entity::find()
        .filter(task_instance::Column::DagRunId.eq(run_pk))
        .order_by_asc(task_instance::Column::Id)
        .all(c)
        .await?)
}

/// `(task_id, state)` of every task instance of a run: the narrow read that run
/// evaluation needs after each try.
pub async fn states_of_run<C: ConnectionTrait>(
    c: &C,
    run_pk: i64,
) -> DbResult<Vec<(String, TaskState)>> {
    Ok(task_instance::Entity::find()
        .select_only()
        .column(task_instance::Column::TaskId)
        .column(task_instance::Column::State)
        .filter(task_instance::Column::DagRunId.eq(run_pk))
        .into_tuple()
        .all(c)
        .await?)
}

/// Task instances of many runs at once (one query, for grids and tables).
pub async fn of_runs<C: ConnectionTrait>(c: &C, run_pks: &[i64]) -> DbResult<Vec<Ti>> {
    if run_pks.is_empty() {
        return Ok(Vec::new());
    }
    Ok(task_instance::Entity::find()
        .filter(task_instance::Column::DagRunId.is_in(run_pks.iter().copied()))
        .order_by_asc(task_instance::Column::Id)
        .all(c)
        .await?)
}

/// Which task instances to browse; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Browse {
    pub state: Option<TaskState>,
    pub dag_id: Option<String>,
    pub task_id: Option<String>,
    /// Only those with an id below this (the next page of a newest-first list).
    pub before: Option<i64>,
    pub limit: u64,
}

/// Task instances across all DAGs, newest first, with the run id (text) of each.
pub async fn browse<C: ConnectionTrait>(c: &C, b: &Browse) -> DbResult<Vec<(Ti, String)>> {
    let mut q = task_instance::Entity::find();
    if let Some(s) = b.state {
        q = q.filter(task_instance::Column::State.eq(s));
    }
    if let Some(d) = &b.dag_id {
        q = q.filter(task_instance::Column::DagId.eq(d.as_str()));
    }
    if let Some(t) = &b.task_id {
        q = q.filter(task_instance::Column::TaskId.eq(t.as_str()));
    }
    if let Some(id) = b.before {
        q = q.filter(task_instance::Column::Id.lt(id));
    }
    let tis = q
        .order_by_desc(task_instance::Column::Id)
        .limit(b.limit)
        .all(c)
        .await?;
    let mut run_pks: Vec<i64> = tis.iter().map(|t| t.dag_run_id).collect();
    run_pks.sort_unstable();
    run_pks.dedup();
    let run_ids: HashMap<i64, String> = crate::db::entities::dag_run::Entity::find()
        .filter(crate::db::entities::dag_run::Column::Id.is_in(run_pks))
        .all(c)
        .await?
        .into_iter()
        .map(|r| (r.id, r.run_id))
        .collect();
    Ok(tis
        .into_iter()
        .map(|t| {
            let run = run_ids.get(&t.dag_run_id).cloned().unwrap_or_default();
            (t, run)
        })
        .collect())
}

pub async fn get<C: ConnectionTrait>(c: &C, id: i64) -> DbResult<Option<Ti>> {
    Ok(task_instance::Entity::find_by_id(id).one(c).await?)
}

/// Moves the named tasks of a run that are in one of the move's `from` states to `to`
/// (one of its targets). Returns how many rows changed. Entering `scheduled` stamps
/// `scheduled_at`; entering a terminal state stamps `ended_at`.
pub async fn transition_by_task<C: ConnectionTrait>(
    c: &C,
    mv: &TaskMove,
    run_pk: i64,
    task_ids: &[String],
    to: TaskState,
    now: DateTime<Utc>,
) -> DbResult<u64> {
    mv.check_target(to)?;
    if task_ids.is_empty() {
        return Ok(0);
    }
    let mut q = task_instance::Entity::update_many()
        .col_expr(task_instance::Column::State, Expr::value(to.as_str()))
        .col_expr(task_instance::Column::UpdatedAt, Expr::value(now));
    match to {
        TaskState::Scheduled => {
            q = q.col_expr(task_instance::Column::ScheduledAt, Expr::value(now))
        }
        TaskState::Skipped
        | TaskState::UpstreamFailed
        | TaskState::Removed
        | TaskState::Success
        | TaskState::Failed => q = q.col_expr(task_instance::Column::EndedAt, Expr::value(now)),
        _ => {}
    }
    let res = q
        .filter(task_instance::Column::DagRunId.eq(run_pk))
        .filter(task_instance::Column::TaskId.is_in(task_ids.iter().cloned()))
        .filter(task_instance::Column::State.is_in(mv.from_strs()))
        .exec(c)
        .await?;
    if to == TaskState::Scheduled && res.rows_affected > 0 {
        super::notify(c).await?;
    }
    Ok(res.rows_affected)
}

/// Sets the error text of the named task instances of a run.
pub async fn set_error_by_task<C: ConnectionTrait>(
    c: &C,
    run_pk: i64,
    task_ids: &[String],
    error: &str,
) -> DbResult<()> {
    if task_ids.is_empty() {
        return Ok(());
    }
    task_instance::Entity::update_many()
        .col_expr(task_instance::Column::Error, Expr::value(error))
        .filter(task_instance::Column::DagRunId.eq(run_pk))
        .filter(task_instance::Column::TaskId.is_in(task_ids.iter().cloned()))
        .exec(c)
        .await?;
    Ok(())
}

/// Stamps `ended_at` on a task instance that an operator marked.
pub async fn mark_ended<C: ConnectionTrait>(
    c: &C,
    run_pk: i64,
    task_id: &str,
    now: DateTime<Utc>,
) -> DbResult<()> {
    task_instance::Entity::update_many()
        .col_expr(task_instance::Column::EndedAt, Expr::value(now))
        .col_expr(
            task_instance::Column::NextRetryAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(task_instance::Column::DagRunId.eq(run_pk))
        .filter(task_instance::Column::TaskId.eq(task_id))
        .exec(c)
        .await?;
    Ok(())
}

/// The clear move: a finished task instance goes back to `pending`, with room for
/// `retries + 1` more tries, like Airflow's clear. Queued and running ones are left.
pub async fn reset_for_clear<C: ConnectionTrait>(
    c: &C,
    ti: &Ti,
    retries: u32,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    let res = task_instance::Entity::update_many()
        .col_expr(
            task_instance::Column::State,
            Expr::value(CLEAR.to[0].as_str()),
        )
        .col_expr(
            task_instance::Column::MaxTries,
            Expr::value(ti.try_number + i32::try_from(retries).unwrap_or(0) + 1),
        )
        .col_expr(
            task_instance::Column::ScheduledAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(
            task_instance::Column::QueuedAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(
            task_instance::Column::EndedAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        // A cleared task instance has no current timing: its earlier tries keep theirs
        // in the try history.
        .col_expr(
            task_instance::Column::StartedAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(
            task_instance::Column::DurationMs,
            Expr::value(Option::<i64>::None),
        )
        .col_expr(
            task_instance::Column::ExitCode,
            Expr::value(Option::<i32>::None),
        )
        .col_expr(
            task_instance::Column::NextRetryAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(
            task_instance::Column::Error,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            task_instance::Column::WorkerId,
            Expr::value(Option::<String>::None),
        )
        .col_expr(task_instance::Column::UpdatedAt, Expr::value(now))
        .filter(task_instance::Column::Id.eq(ti.id))
        .filter(task_instance::Column::State.is_in(CLEAR.from_strs()))
        .exec(c)
        .await?;
    Ok(res.rows_affected == 1)
}

/// Limits a claim must respect.
#[derive(Debug, Clone, Default)]
pub struct ClaimLimits {
    /// max_active_tasks per DAG (DAGs not listed are not claimed: they are unknown to
    /// this worker).
    pub dag_max_active: std::sync::Arc<HashMap<String, u32>>,
    /// How many tries this worker may start now.
    pub capacity: u64,
    /// The queues this worker serves; all when empty.
    pub queues: Vec<String>,
    /// DAGs not to claim from (paused ones).
    pub excluded_dags: Vec<String>,
}

/// Up to this many DAGs are named in the claim query (`dag_id IN ...`); beyond, the
/// query names the DAGs it must skip instead (full or excluded), so a claim costs the
/// same with 10,000 DAGs as with 10.
pub const CLAIM_LIST_DAGS: usize = 100;

/// Claims up to `limits.capacity` scheduled task instances for `worker_id`, highest
/// priority first, without exceeding any pool's slots or any DAG's max_active_tasks:
/// `scheduled -> queued`. On PostgreSQL claims are serialised by a transaction-scoped
/// advisory lock so pool accounting is exact across schedulers; candidates are
/// additionally locked with `FOR UPDATE SKIP LOCKED`.
pub async fn claim<C: ConnectionTrait>(
    c: &C,
    worker_id: &str,
    hostname: &str,
    limits: &ClaimLimits,
    now: DateTime<Utc>,
) -> DbResult<Vec<Ti>> {
    if limits.capacity == 0 {
        return Ok(Vec::new());
    }
    let pg = c.get_database_backend() == DbBackend::Postgres;
    if pg {
        c.execute_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(7318201)",
        ))
        .await?;
    }
    let active = [TaskState::Queued.as_str(), TaskState::Running.as_str()];
    // One grouped read gives both the slots used per pool and the active tries per DAG.
    let active_rows: Vec<(String, String, i64, i64)> = task_instance::Entity::find()
        .select_only()
        .column(task_instance::Column::Pool)
        .column(task_instance::Column::DagId)
        .column_as(
            Expr::from(Func::sum(Expr::col(task_instance::Column::PoolSlots))),
            "used",
        )
        .column_as(
            Expr::from(Func::count(Expr::col(task_instance::Column::Id))),
            "n",
        )
        .filter(task_instance::Column::State.is_in(active))
        .group_by(task_instance::Column::Pool)
        .group_by(task_instance::Column::DagId)
        .into_tuple()
        .all(c)
        .await?;
    let mut used: BTreeMap<String, i64> = BTreeMap::new();
    let mut per_dag: BTreeMap<String, i64> = BTreeMap::new();
    for (p, d, u, n) in active_rows {
        *used.entry(p).or_default() += u;
        *per_dag.entry(d).or_default() += n;
    }
    let mut free: BTreeMap<String, i64> = pool::Entity::find()
        .all(c)
        .await?
        .into_iter()
        .map(|p| (p.name, i64::from(p.slots)))
        .collect();
    for (p, n) in used {
        if let Some(f) = free.get_mut(&p) {
            *f -= n;
        }
    }
    let mut dag_room: HashMap<String, i64> = limits
        .dag_max_active
        .iter()
        .map(|(d, m)| (d.clone(), i64::from(*m)))
        .collect();
    for (d, n) in per_dag {
        if let Some(r) = dag_room.get_mut(&d) {
            *r -= n;
        }
    }
    let open_pools: Vec<String> = free
        .iter()
        .filter(|(_, f)| **f > 0)
        .map(|(p, _)| p.clone())
        .collect();
    let open_dags: Vec<String> = dag_room
        .iter()
        .filter(|(_, r)| **r > 0)
        .map(|(d, _)| d.clone())
        .collect();
    if open_pools.is_empty() || open_dags.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = task_instance::Entity::find()
        .filter(task_instance::Column::State.eq(TaskState::Scheduled.as_str()))
        .filter(task_instance::Column::Pool.is_in(open_pools));
    if dag_room.len() <= CLAIM_LIST_DAGS {
        q = q.filter(task_instance::Column::DagId.is_in(open_dags));
    } else {
        let skip: Vec<String> = dag_room
            .iter()
            .filter(|(_, r)| **r <= 0)
            .map(|(d, _)| d.clone())
            .chain(limits.excluded_dags.iter().cloned())
            .collect();
        if !skip.is_empty() {
            q = q.filter(task_instance::Column::DagId.is_not_in(skip));
        }
    }
    if !limits.queues.is_empty() {
        q = q.filter(task_instance::Column::Queue.is_in(limits.queues.iter().cloned()));
    }
    let mut q = q
        .order_by_desc(task_instance::Column::Priority)
        .order_by_asc(task_instance::Column::Id)
        .limit(limits.capacity * 4 + 16);
    if pg {
        q = q.lock_with_behavior(
            sea_orm::sea_query::LockType::Update,
            sea_orm::sea_query::LockBehavior::SkipLocked,
        );
    }
    let candidates = q.all(c).await?;
    let mut chosen: Vec<Ti> = Vec::new();
    for ti in candidates {
        if chosen.len() as u64 >= limits.capacity {
            break;
        }
        let slots = i64::from(ti.pool_slots);
        let pool_free = free.get(&ti.pool).copied().unwrap_or(0);
        let room = dag_room.get(&ti.dag_id).copied().unwrap_or(0);
        if pool_free < slots || room < 1 {
            continue;
        }
        free.insert(ti.pool.clone(), pool_free - slots);
        dag_room.insert(ti.dag_id.clone(), room - 1);
        chosen.push(ti);
    }
    if chosen.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = chosen.iter().map(|t| t.id).collect();
    let res = task_instance::Entity::update_many()
        .col_expr(
            task_instance::Column::State,
            Expr::value(CLAIM.to[0].as_str()),
        )
        .col_expr(task_instance::Column::WorkerId, Expr::value(worker_id))
        .col_expr(task_instance::Column::Hostname, Expr::value(hostname))
        .col_expr(task_instance::Column::QueuedAt, Expr::value(now))
        .col_expr(task_instance::Column::UpdatedAt, Expr::value(now))
        .filter(task_instance::Column::Id.is_in(ids.clone()))
        .filter(task_instance::Column::State.is_in(CLAIM.from_strs()))
        .exec(c)
        .await?;
    if res.rows_affected == chosen.len() as u64 {
        // Every chosen row moved (they were read in this transaction, locked on
        // PostgreSQL): they are what a re-read would return.
        for ti in &mut chosen {
            ti.state = TaskState::Queued;
            ti.worker_id = Some(worker_id.to_string());
            ti.hostname = Some(hostname.to_string());
            ti.queued_at = Some(now);
            ti.updated_at = now;
        }
        return Ok(chosen);
    }
    Ok(task_instance::Entity::find()
        .filter(task_instance::Column::Id.is_in(ids))
        .filter(task_instance::Column::State.eq(TaskState::Queued.as_str()))
        .filter(task_instance::Column::WorkerId.eq(worker_id))
        .order_by_desc(task_instance::Column::Priority)
        .order_by_asc(task_instance::Column::Id)
        .all(c)
        .await?)
}

/// A try that has started.
#[derive(Debug, Clone)]
pub struct StartedTry {
    pub ti: Ti,
    pub try_id: i64,
}

/// `queued -> running` for many task instances this worker claimed, in one
/// transaction: counts each try, records its `task_try` row, and returns each with its
/// run. Instances that are no longer queued for this worker are left out.
pub async fn start_tries<C: ConnectionTrait>(
    c: &C,
    ids: &[i64],
    worker_id: &str,
    hostname: &str,
    now: DateTime<Utc>,
) -> DbResult<Vec<(StartedTry, super::entities::dag_run::Model)>> {
    use super::entities::dag_run;
    use chrono::SubsecRound;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // Both backends keep microseconds; `now` must read back equal to itself.
    let now = now.trunc_subsecs(6);
    task_instance::Entity::update_many()
        .col_expr(
            task_instance::Column::State,
            Expr::value(START.to[0].as_str()),
        )
        .col_expr(
            task_instance::Column::TryNumber,
            Expr::col(task_instance::Column::TryNumber).add(1),
        )
        .col_expr(task_instance::Column::StartedAt, Expr::value(now))
        .col_expr(task_instance::Column::HeartbeatAt, Expr::value(now))
        .col_expr(
            task_instance::Column::EndedAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(
            task_instance::Column::DurationMs,
            Expr::value(Option::<i64>::None),
        )
        .col_expr(
            task_instance::Column::ExitCode,
            Expr::value(Option::<i32>::None),
        )
        .col_expr(
            task_instance::Column::Error,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            task_instance::Column::NextRetryAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(task_instance::Column::UpdatedAt, Expr::value(now))
        .filter(task_instance::Column::Id.is_in(ids.iter().copied()))
        .filter(task_instance::Column::State.is_in(START.from_strs()))
        .filter(task_instance::Column::WorkerId.eq(worker_id))
        .exec(c)
        .await?;
    // Exactly the instances started above: running for this worker, started now.
    let started: Vec<Ti> = task_instance::Entity::find()
        .filter(task_instance::Column::Id.is_in(ids.iter().copied()))
        .filter(task_instance::Column::State.eq(TaskState::Running.as_str()))
        .filter(task_instance::Column::WorkerId.eq(worker_id))
        .filter(task_instance::Column::StartedAt.eq(now))
        .order_by_desc(task_instance::Column::Priority)
        .order_by_asc(task_instance::Column::Id)
        .all(c)
        .await?;
    if started.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<task_try::ActiveModel> = started
        .iter()
        .map(|ti| task_try::ActiveModel {
            id: NotSet,
            task_instance_id: Set(ti.id),
            dag_run_id: Set(ti.dag_run_id),
            dag_id: Set(ti.dag_id.clone()),
            task_id: Set(ti.task_id.clone()),
            try_number: Set(ti.try_number),
            state: Set(TryState::Running),
            started_at: Set(now),
            ended_at: Set(None),
            duration_ms: Set(None),
            exit_code: Set(None),
            error: Set(None),
            hostname: Set(hostname.to_string()),
            worker_id: Set(worker_id.to_string()),
            pid: Set(None),
        })
        .collect();
    let mut tries: HashMap<(i64, i32), i64> = HashMap::new();
    for chunk in rows.chunks(500) {
        for t in task_try::Entity::insert_many(chunk.to_vec())
            .exec_with_returning(c)
            .await?
        {
            tries.insert((t.task_instance_id, t.try_number), t.id);
        }
    }
    let mut run_ids: Vec<i64> = started.iter().map(|t| t.dag_run_id).collect();
    run_ids.sort_unstable();
    run_ids.dedup();
    let runs: HashMap<i64, dag_run::Model> = dag_run::Entity::find()
        .filter(dag_run::Column::Id.is_in(run_ids))
        .all(c)
        .await?
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    Ok(started
        .into_iter()
        .filter_map(|ti| {
            let try_id = *tries.get(&(ti.id, ti.try_number))?;
            let run = runs.get(&ti.dag_run_id)?.clone();
            Some((StartedTry { ti, try_id }, run))
        })
        .collect())
}

/// Records the process id of a running try on its task instance, so a restarted
/// scheduler on the same host can kill what a crashed one left behind.
pub async fn set_pid<C: ConnectionTrait>(c: &C, ti_id: i64, pid: Option<i32>) -> DbResult<()> {
    task_instance::Entity::update_many()
        .col_expr(task_instance::Column::Pid, Expr::value(pid))
        .filter(task_instance::Column::Id.eq(ti_id))
        .exec(c)
        .await?;
    Ok(())
}

/// How a try ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TryOutcome {
    /// It did its work; the process's exit code where there was a process.
    Success { exit_code: Option<i32> },
    /// It did not; the exit code where there was a process, and why, for the operator.
    Failed {
        exit_code: Option<i32>,
        error: String,
    },
}

impl TryOutcome {
    /// Success without a process.
    pub fn success() -> TryOutcome {
        TryOutcome::Success { exit_code: None }
    }

    /// Failure without a process.
    pub fn failed(error: impl Into<String>) -> TryOutcome {
        TryOutcome::Failed {
            exit_code: None,
            error: error.into(),
        }
    }

    pub fn is_success(&self) -> bool {
        matches!(self, TryOutcome::Success { .. })
    }

    pub fn exit_code(&self) -> Option<i32> {
        match self {
            TryOutcome::Success { exit_code } | TryOutcome::Failed { exit_code, .. } => *exit_code,
        }
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            TryOutcome::Success { .. } => None,
            TryOutcome::Failed { error, .. } => Some(error),
        }
    }

    /// The same outcome with its error text rewritten (e.g. secrets redacted).
    pub fn map_error(self, f: impl FnOnce(String) -> String) -> TryOutcome {
        match self {
            TryOutcome::Failed { exit_code, error } => TryOutcome::Failed {
                exit_code,
                error: f(error),
            },
            ok => ok,
        }
    }
}

/// The finish (or rescue) move: `running -> success | failed | up_for_retry`, fenced
/// by worker and try number. Returns false (and changes nothing) when the try is no
/// longer this worker's.
#[allow(clippy::too_many_arguments)]
pub async fn finish_try<C: ConnectionTrait>(
    c: &C,
    mv: &TaskMove,
    ti: &Ti,
    try_id: i64,
    worker_id: &str,
    outcome: &TryOutcome,
    to: TaskState,
    next_retry_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    mv.check_target(to)?;
    let started = ti.started_at.unwrap_or(now);
    let duration = std::cmp::max((now - started).num_milliseconds(), 0);
    let res = task_instance::Entity::update_many()
        .col_expr(task_instance::Column::State, Expr::value(to.as_str()))
        .col_expr(task_instance::Column::EndedAt, Expr::value(now))
        .col_expr(task_instance::Column::DurationMs, Expr::value(duration))
        .col_expr(
            task_instance::Column::ExitCode,
            Expr::value(outcome.exit_code()),
        )
        .col_expr(
            task_instance::Column::Error,
            Expr::value(outcome.error().map(str::to_string)),
        )
        .col_expr(
            task_instance::Column::NextRetryAt,
            Expr::value(next_retry_at),
        )
        .col_expr(task_instance::Column::Pid, Expr::value(Option::<i32>::None))
        .col_expr(task_instance::Column::UpdatedAt, Expr::value(now))
        .filter(task_instance::Column::Id.eq(ti.id))
        .filter(task_instance::Column::State.is_in(mv.from_strs()))
        .filter(task_instance::Column::WorkerId.eq(worker_id))
        .filter(task_instance::Column::TryNumber.eq(ti.try_number))
        .exec(c)
        .await?;
    if res.rows_affected != 1 {
        return Ok(false);
    }
    close_try(c, try_id, outcome, duration, now).await?;
    Ok(true)
}

/// Closes the row of one try.
pub async fn close_try<C: ConnectionTrait>(
    c: &C,
    try_id: i64,
    outcome: &TryOutcome,
    duration_ms: i64,
    now: DateTime<Utc>,
) -> DbResult<()> {
    let state = if outcome.is_success() {
        TryState::Success
    } else {
        TryState::Failed
    };
    task_try::Entity::update_many()
        .col_expr(task_try::Column::State, Expr::value(state.as_str()))
        .col_expr(task_try::Column::EndedAt, Expr::value(now))
        .col_expr(task_try::Column::DurationMs, Expr::value(duration_ms))
        .col_expr(task_try::Column::ExitCode, Expr::value(outcome.exit_code()))
        .col_expr(
            task_try::Column::Error,
            Expr::value(outcome.error().map(str::to_string)),
        )
        .filter(task_try::Column::Id.eq(try_id))
        .filter(task_try::Column::State.eq(TryState::Running.as_str()))
        .exec(c)
        .await?;
    Ok(())
}

/// Retries whose delay has passed: `up_for_retry -> scheduled`. Returns the run ids
/// that got work.
pub async fn promote_due_retries<C: ConnectionTrait>(
    c: &C,
    now: DateTime<Utc>,
) -> DbResult<Vec<i64>> {
    let due: Vec<(i64, i64)> = task_instance::Entity::find()
        .select_only()
        .column(task_instance::Column::Id)
        .column(task_instance::Column::DagRunId)
        .filter(task_instance::Column::State.eq(TaskState::UpForRetry.as_str()))
        .filter(task_instance::Column::NextRetryAt.lte(now))
        .into_tuple()
        .all(c)
        .await?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    task_instance::Entity::update_many()
        .col_expr(
            task_instance::Column::State,
            Expr::value(RETRY.to[0].as_str()),
        )
        .col_expr(task_instance::Column::ScheduledAt, Expr::value(now))
        .col_expr(
            task_instance::Column::WorkerId,
            Expr::value(Option::<String>::None),
        )
        .col_expr(task_instance::Column::UpdatedAt, Expr::value(now))
        .filter(task_instance::Column::Id.is_in(due.iter().map(|(id, _)| *id)))
        .filter(task_instance::Column::State.is_in(RETRY.from_strs()))
        .exec(c)
        .await?;
    super::notify(c).await?;
    let mut runs: Vec<i64> = due.into_iter().map(|(_, r)| r).collect();
    runs.sort_unstable();
    runs.dedup();
    Ok(runs)
}

/// When the next retry becomes due.
pub async fn next_retry_at<C: ConnectionTrait>(c: &C) -> DbResult<Option<DateTime<Utc>>> {
    let row = task_instance::Entity::find()
        .filter(task_instance::Column::State.eq(TaskState::UpForRetry.as_str()))
        .order_by_asc(task_instance::Column::NextRetryAt)
        .one(c)
        .await?;
    Ok(row.and_then(|r| r.next_retry_at))
}

/// Task instances held (queued or running) by any of `workers`.
pub async fn held_by<C: ConnectionTrait>(c: &C, workers: &[String]) -> DbResult<Vec<Ti>> {
    if workers.is_empty() {
        return Ok(Vec::new());
    }
    Ok(task_instance::Entity::find()
        .filter(
            task_instance::Column::State
                .is_in([TaskState::Queued.as_str(), TaskState::Running.as_str()]),
        )
        .filter(task_instance::Column::WorkerId.is_in(workers.iter().cloned()))
        .all(c)
        .await?)
}

/// Task instances in `queued`/`running` whose worker has no row at all (e.g. a worker
/// row deleted by hand): also orphans.
pub async fn held_by_unknown_workers<C: ConnectionTrait>(c: &C) -> DbResult<Vec<Ti>> {
    let known: Vec<String> = worker::Entity::find()
        .select_only()
        .column(worker::Column::Id)
        .into_tuple()
        .all(c)
        .await?;
    let mut q = task_instance::Entity::find().filter(
        task_instance::Column::State
            .is_in([TaskState::Queued.as_str(), TaskState::Running.as_str()]),
    );
    if !known.is_empty() {
        q = q.filter(task_instance::Column::WorkerId.is_not_in(known));
    }
    Ok(q.all(c).await?)
}

/// The unclaim move, `queued -> scheduled`, for a claim that never started (its worker
/// died or stopped); fenced by the worker that claimed it.
pub async fn unclaim<C: ConnectionTrait>(
    c: &C,
    ti_id: i64,
    worker_id: &str,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    let res = task_instance::Entity::update_many()
        .col_expr(
            task_instance::Column::State,
            Expr::value(UNCLAIM.to[0].as_str()),
        )
        .col_expr(
            task_instance::Column::WorkerId,
            Expr::value(Option::<String>::None),
        )
        .col_expr(task_instance::Column::UpdatedAt, Expr::value(now))
        .filter(task_instance::Column::Id.eq(ti_id))
        .filter(task_instance::Column::State.is_in(UNCLAIM.from_strs()))
        .filter(task_instance::Column::WorkerId.eq(worker_id))
        .exec(c)
        .await?;
    if res.rows_affected == 1 {
        super::notify(c).await?;
    }
    Ok(res.rows_affected == 1)
}

/// The try row of a task instance's current try.
pub async fn current_try<C: ConnectionTrait>(c: &C, ti: &Ti) -> DbResult<Option<task_try::Model>> {
    Ok(task_try::Entity::find()
        .filter(task_try::Column::TaskInstanceId.eq(ti.id))
        .filter(task_try::Column::TryNumber.eq(ti.try_number))
        .one(c)
        .await?)
}

pub async fn tries_of<C: ConnectionTrait>(c: &C, ti_id: i64) -> DbResult<Vec<task_try::Model>> {
    Ok(task_try::Entity::find()
        .filter(task_try::Column::TaskInstanceId.eq(ti_id))
        .order_by_asc(task_try::Column::TryNumber)
        .all(c)
        .await?)
}

/// Every try of these task instances (a run's), in task instance and try order.
pub async fn tries_of_many<C: ConnectionTrait>(
    c: &C,
    ti_ids: &[i64],
) -> DbResult<Vec<task_try::Model>> {
    let mut out = Vec::new();
    for part in ti_ids.chunks(500) {
        out.extend(
            task_try::Entity::find()
                .filter(task_try::Column::TaskInstanceId.is_in(part.iter().copied()))
                .order_by_asc(task_try::Column::TaskInstanceId)
                .order_by_asc(task_try::Column::TryNumber)
                .all(c)
                .await?,
        );
    }
    Ok(out)
}

/// Appends one chunk of a try's log.
pub async fn append_log<C: ConnectionTrait>(
    c: &C,
    try_id: i64,
    seq: i32,
    content: &str,
    now: DateTime<Utc>,
) -> DbResult<()> {
    append_logs(c, &[(try_id, seq, content)], now).await
}

/// Appends chunks of tries' logs (`(try id, seq, content)`) in one statement per 500.
pub async fn append_logs<C: ConnectionTrait>(
    c: &C,
    chunks: &[(i64, i32, &str)],
    now: DateTime<Utc>,
) -> DbResult<()> {
    for part in chunks.chunks(500) {
        task_log::Entity::insert_many(part.iter().map(|(try_id, seq, content)| {
            task_log::ActiveModel {
                id: NotSet,
                task_try_id: Set(*try_id),
                seq: Set(*seq),
                content: Set(content.to_string()),
                created_at: Set(now),
            }
        }))
        .exec_without_returning(c)
        .await?;
    }
    Ok(())
}

/// The whole log of a try, in order.
pub async fn read_log<C: ConnectionTrait>(c: &C, try_id: i64) -> DbResult<String> {
    let chunks = task_log::Entity::find()
        .filter(task_log::Column::TaskTryId.eq(try_id))
        .order_by_asc(task_log::Column::Seq)
        .all(c)
        .await?;
    Ok(chunks.into_iter().map(|c| c.content).collect())
}

/// What an engine registers about itself: who it is and what work it takes.
#[derive(Debug, Clone)]
pub struct NewWorker {
    pub id: String,
    pub hostname: String,
    pub pid: i32,
    /// `serve`, `scheduler`, `worker` or `local` (a one-DAG engine of the CLI).
    pub role: &'static str,
    /// The queues whose tries it runs; empty: all (or none, for a scheduler).
    pub queues: Vec<String>,
    /// Tries it runs at once; 0 when it runs none.
    pub capacity: i32,
}

/// Registers a worker as alive.
pub async fn register_worker<C: ConnectionTrait>(
    c: &C,
    w: &NewWorker,
    now: DateTime<Utc>,
) -> DbResult<()> {
    worker::Entity::insert(worker::ActiveModel {
        id: Set(w.id.clone()),
        hostname: Set(w.hostname.clone()),
        pid: Set(w.pid),
        started_at: Set(now),
        heartbeat_at: Set(now),
        stopped_at: Set(None),
        role: Set(w.role.to_string()),
        queues: Set(w.queues.join(",")),
        capacity: Set(w.capacity),
    })
    .exec_without_returning(c)
    .await?;
    Ok(())
}

/// Records that worker `id` is alive. False when it was declared dead meanwhile (it
/// stopped sending heartbeats for longer than the timeout, e.g. paused by SIGSTOP):
/// its tries were rescued, and it must stop them and `revive` before claiming again.
pub async fn heartbeat<C: ConnectionTrait>(c: &C, id: &str, now: DateTime<Utc>) -> DbResult<bool> {
    let res = worker::Entity::update_many()
        .col_expr(worker::Column::HeartbeatAt, Expr::value(now))
        .filter(worker::Column::Id.eq(id))
        .filter(worker::Column::StoppedAt.is_null())
        .exec(c)
        .await?;
    if res.rows_affected == 0 {
        return Ok(false);
    }
    task_instance::Entity::update_many()
        .col_expr(task_instance::Column::HeartbeatAt, Expr::value(now))
        .filter(task_instance::Column::WorkerId.eq(id))
        .filter(task_instance::Column::State.eq(TaskState::Running.as_str()))
        .exec(c)
        .await?;
    Ok(true)
}

/// A worker that was declared dead and is running again registers as alive again.
pub async fn revive<C: ConnectionTrait>(c: &C, id: &str, now: DateTime<Utc>) -> DbResult<()> {
    worker::Entity::update_many()
        .col_expr(worker::Column::HeartbeatAt, Expr::value(now))
        .col_expr(
            worker::Column::StoppedAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .filter(worker::Column::Id.eq(id))
        .exec(c)
        .await?;
    Ok(())
}

pub async fn stop_worker<C: ConnectionTrait>(c: &C, id: &str, now: DateTime<Utc>) -> DbResult<()> {
    worker::Entity::update_many()
        .col_expr(worker::Column::StoppedAt, Expr::value(now))
        .filter(worker::Column::Id.eq(id))
        .exec(c)
        .await?;
    Ok(())
}

/// One worker's row.
pub async fn worker<C: ConnectionTrait>(c: &C, id: &str) -> DbResult<Option<worker::Model>> {
    Ok(worker::Entity::find_by_id(id.to_string()).one(c).await?)
}

/// Workers that are not stopped, for the orphan sweep.
pub async fn live_workers<C: ConnectionTrait>(c: &C) -> DbResult<Vec<worker::Model>> {
    Ok(worker::Entity::find()
        .filter(worker::Column::StoppedAt.is_null())
        .all(c)
        .await?)
}

/// Declares a worker dead, re-checking in the same statement that it is still silent
/// (no heartbeat since `silent_since`; `None` when it is known gone, e.g. its process
/// no longer exists on this host). True when this call declared it dead: only then
/// may its tries be rescued, so a worker whose heartbeat arrived meanwhile keeps them.
pub async fn bury_worker<C: ConnectionTrait>(
    c: &C,
    id: &str,
    silent_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    let mut q = worker::Entity::update_many()
        .col_expr(worker::Column::StoppedAt, Expr::value(now))
        .filter(worker::Column::Id.eq(id))
        .filter(worker::Column::StoppedAt.is_null());
    if let Some(t) = silent_since {
        q = q.filter(worker::Column::HeartbeatAt.lt(t));
    }
    Ok(q.exec(c).await?.rows_affected == 1)
}
