//! Queries on DAG runs. State changes are conditional updates: a transition that finds
//! the row in another state changes nothing and reports `false`.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, NotSet, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Statement, TryInsertResult,
};

use super::entities::{dag_run, task_instance};
use super::machine::RunMove;
use super::{DbResult, RunState, RunType, TaskState};

/// A task instance to add to a run: what the database needs of a task.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub task_id: String,
    pub kind: String,
    pub max_tries: i32,
    pub pool: String,
    pub pool_slots: i32,
    pub queue: String,
    pub priority: i32,
}

/// A run to create.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub dag_id: String,
    pub run_id: String,
    pub run_type: RunType,
    pub logical_date: DateTime<Utc>,
    pub interval_start: DateTime<Utc>,
    pub interval_end: DateTime<Utc>,
    pub dag_version_id: i64,
    pub params: serde_json::Value,
    pub conf: serde_json::Value,
}

/// The run id a scheduled or backfill run gets: `scheduled__2026-01-01T00:00:00Z`.
pub fn run_id_for(run_type: RunType, logical: DateTime<Utc>) -> String {
    format!(
        "{}__{}",
        run_type.as_str(),
        logical.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// Inserts a queued run and its task instances (all `pending`). Returns `None` when a
/// run with the same run_id, or a scheduled/backfill run with the same logical date,
/// already exists: creation is idempotent under races.
pub async fn insert_run<C: ConnectionTrait>(
    c: &C,
    tasks: &[NewTask],
    r: &NewRun,
    now: DateTime<Utc>,
) -> DbResult<Option<dag_run::Model>> {
    let am = dag_run::ActiveModel {
        id: NotSet,
        dag_id: Set(r.dag_id.clone()),
        run_id: Set(r.run_id.clone()),
        run_type: Set(r.run_type),
        state: Set(RunState::Queued),
        logical_date: Set(r.logical_date),
        data_interval_start: Set(r.interval_start),
        data_interval_end: Set(r.interval_end),
        dag_version_id: Set(r.dag_version_id),
        params: Set(r.params.to_string()),
        conf: Set(r.conf.to_string()),
        created_at: Set(now),
        started_at: Set(None),
        ended_at: Set(None),
        note: NotSet,
    };
    let res = dag_run::Entity::insert(am)
        .on_conflict(OnConflict::new().do_nothing().to_owned())
        .try_insert()
        .exec(c)
        .await?;
    let id = match res {
        TryInsertResult::Inserted(r) => r.last_insert_id,
        _ => return Ok(None),
    };
    insert_task_instances(c, id, &r.dag_id, tasks, now).await?;
    // Schedulers elsewhere start it when there is room.
    super::notify(c).await?;
    Ok(dag_run::Entity::find_by_id(id).one(c).await?)
}

/// Adds `pending` task instances to a run.
pub async fn insert_task_instances<C: ConnectionTrait>(
    c: &C,
    run_pk: i64,
    dag_id: &str,
    tasks: &[NewTask],
    now: DateTime<Utc>,
) -> DbResult<()> {
    let rows: Vec<task_instance::ActiveModel> = tasks
        .iter()
        .map(|t| task_instance::ActiveModel {
            id: NotSet,
            dag_run_id: Set(run_pk),
            dag_id: Set(dag_id.to_string()),
            task_id: Set(t.task_id.clone()),
            kind: Set(t.kind.clone()),
            state: Set(TaskState::Pending),
            try_number: Set(0),
            max_tries: Set(t.max_tries),
            pool: Set(t.pool.clone()),
            pool_slots: Set(t.pool_slots),
            queue: Set(t.queue.clone()),
            priority: Set(t.priority),
            scheduled_at: Set(None),
            queued_at: Set(None),
            started_at: Set(None),
            ended_at: Set(None),
            duration_ms: Set(None),
            hostname: Set(None),
            worker_id: Set(None),
            pid: Set(None),
            heartbeat_at: Set(None),
            exit_code: Set(None),
            next_retry_at: Set(None),
            error: Set(None),
            updated_at: Set(now),
            note: NotSet,
        })
        .collect();
    // Chunked so that large DAGs stay under the bind-parameter limits of both backends.
    for chunk in rows.chunks(500) {
        task_instance::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(c)
            .await?;
    }
    Ok(())
}

pub async fn get_run<C: ConnectionTrait>(c: &C, id: i64) -> DbResult<Option<dag_run::Model>> {
    Ok(dag_run::Entity::find_by_id(id).one(c).await?)
}

/// Locks a run's row for the rest of the transaction on PostgreSQL, so that two workers
/// finishing tasks of the same run evaluate it one after the other. SQLite transactions
/// are serialised already.
pub async fn lock_run<C: ConnectionTrait>(c: &C, id: i64) -> DbResult<Option<dag_run::Model>> {
    let mut q = dag_run::Entity::find_by_id(id);
    if c.get_database_backend() == sea_orm::DbBackend::Postgres {
        q = q.lock_exclusive();
    }
    Ok(q.one(c).await?)
}

pub async fn find_run<C: ConnectionTrait>(
    c: &C,
    dag_id: &str,
    run_id: &str,
) -> DbResult<Option<dag_run::Model>> {
    Ok(dag_run::Entity::find()
        .filter(dag_run::Column::DagId.eq(dag_id))
        .filter(dag_run::Column::RunId.eq(run_id))
        .one(c)
        .await?)
}

/// The scheduled or backfill run of a DAG at a logical date.
pub async fn run_at<C: ConnectionTrait>(
    c: &C,
    dag_id: &str,
    logical: DateTime<Utc>,
) -> DbResult<Option<dag_run::Model>> {
    Ok(dag_run::Entity::find()
        .filter(dag_run::Column::DagId.eq(dag_id))
        .filter(dag_run::Column::LogicalDate.eq(logical))
        .filter(dag_run::Column::RunType.ne(RunType::Manual.as_str()))
        .one(c)
        .await?)
}

/// The latest logical date among scheduled runs: where cron scheduling resumes.
pub async fn latest_scheduled<C: ConnectionTrait>(
    c: &C,
    dag_id: &str,
) -> DbResult<Option<DateTime<Utc>>> {
    let row = dag_run::Entity::find()
        .filter(dag_run::Column::DagId.eq(dag_id))
        .filter(dag_run::Column::RunType.eq(RunType::Scheduled.as_str()))
        .order_by_desc(dag_run::Column::LogicalDate)
        .one(c)
        .await?;
    Ok(row.map(|r| r.logical_date))
}

/// `latest_scheduled` of many DAGs in one query (DAGs without a scheduled run are
/// absent).
pub async fn latest_scheduled_of<C: ConnectionTrait>(
    c: &C,
    dag_ids: &[String],
) -> DbResult<std::collections::HashMap<String, DateTime<Utc>>> {
    if dag_ids.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(String, Option<DateTime<Utc>>)> = dag_run::Entity::find()
        .select_only()
        .column(dag_run::Column::DagId)
        .column_as(
            Expr::from(sea_orm::sea_query::Func::max(Expr::col(
                dag_run::Column::LogicalDate,
            ))),
            "latest",
        )
        .filter(dag_run::Column::DagId.is_in(dag_ids.iter().cloned()))
        .filter(dag_run::Column::RunType.eq(RunType::Scheduled.as_str()))
        .group_by(dag_run::Column::DagId)
        .into_tuple()
        .all(c)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(d, t)| Some((d, t?)))
        .collect())
}

/// `count_runs` of many DAGs in one query (DAGs without such runs are absent).
pub async fn count_runs_of<C: ConnectionTrait>(
    c: &C,
    dag_ids: &[String],
    states: &[RunState],
) -> DbResult<std::collections::HashMap<String, u64>> {
    if dag_ids.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(String, i64)> = dag_run::Entity::find()
        .select_only()
        .column(dag_run::Column::DagId)
        .column_as(
            Expr::from(sea_orm::sea_query::Func::count(Expr::col(
                dag_run::Column::Id,
            ))),
            "n",
        )
        .filter(dag_run::Column::DagId.is_in(dag_ids.iter().cloned()))
        .filter(dag_run::Column::State.is_in(states.iter().map(|s| s.as_str())))
        .group_by(dag_run::Column::DagId)
        .into_tuple()
        .all(c)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(d, n)| (d, u64::try_from(n).unwrap_or(0)))
        .collect())
}

pub async fn count_runs<C: ConnectionTrait>(
    c: &C,
    dag_id: &str,
    states: &[RunState],
) -> DbResult<u64> {
    Ok(dag_run::Entity::find()
        .filter(dag_run::Column::DagId.eq(dag_id))
        .filter(dag_run::Column::State.is_in(states.iter().map(|s| s.as_str())))
        .count(c)
        .await?)
}

/// Serialises, per DAG, the transactions that start its queued runs (a
/// transaction-scoped advisory lock on PostgreSQL; SQLite has one writer anyway).
pub async fn lock_dag_runs<C: ConnectionTrait>(c: &C, dag_id: &str) -> DbResult<()> {
    if c.get_database_backend() == DbBackend::Postgres {
        c.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(7318203, hashtext($1))",
            [dag_id.into()],
        ))
        .await?;
    }
    Ok(())
}

/// Queued runs of a DAG, oldest logical date first.
pub async fn queued_runs<C: ConnectionTrait>(
    c: &C,
    dag_id: &str,
    limit: u64,
) -> DbResult<Vec<dag_run::Model>> {
    Ok(dag_run::Entity::find()
        .filter(dag_run::Column::DagId.eq(dag_id))
        .filter(dag_run::Column::State.eq(RunState::Queued.as_str()))
        .order_by_asc(dag_run::Column::LogicalDate)
        .order_by_asc(dag_run::Column::Id)
        .limit(limit)
        .all(c)
        .await?)
}

/// DAG ids that have queued runs.
pub async fn dags_with_queued_runs<C: ConnectionTrait>(c: &C) -> DbResult<Vec<String>> {
    Ok(dag_run::Entity::find()
        .select_only()
        .column(dag_run::Column::DagId)
        .distinct()
        .filter(dag_run::Column::State.eq(RunState::Queued.as_str()))
        .into_tuple::<String>()
        .all(c)
        .await?)
}

/// Conditional move of a run from one of the move's `from` states to `to` (one of its
/// targets). Sets `started_at` when it first runs and `ended_at` when it finishes.
pub async fn transition<C: ConnectionTrait>(
    c: &C,
    mv: &RunMove,
    id: i64,
    to: RunState,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    mv.check_target(to)?;
    let mut q =
        dag_run::Entity::update_many().col_expr(dag_run::Column::State, Expr::value(to.as_str()));
    match to {
        RunState::Running => {
            // A run's first start is never overwritten (a reopened run keeps it).
            q = q
                .col_expr(
                    dag_run::Column::StartedAt,
                    Expr::from(sea_orm::sea_query::Func::coalesce([
                        sea_orm::sea_query::SimpleExpr::from(Expr::col(dag_run::Column::StartedAt)),
                        sea_orm::sea_query::SimpleExpr::from(Expr::value(now)),
                    ])),
                )
                .col_expr(
                    dag_run::Column::EndedAt,
                    Expr::value(Option::<DateTime<Utc>>::None),
                );
        }
        RunState::Success | RunState::Failed => {
            q = q.col_expr(dag_run::Column::EndedAt, Expr::value(now))
        }
        RunState::Queued => {
            q = q.col_expr(
                dag_run::Column::EndedAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
        }
    }
    let res = q
        .filter(dag_run::Column::Id.eq(id))
        .filter(dag_run::Column::State.is_in(mv.from_strs()))
        .exec(c)
        .await?;
    Ok(res.rows_affected == 1)
}

/// Moves a run to a new DAG version.
pub async fn set_version<C: ConnectionTrait>(c: &C, id: i64, version_id: i64) -> DbResult<()> {
    dag_run::Entity::update_many()
        .col_expr(dag_run::Column::DagVersionId, Expr::value(version_id))
        .filter(dag_run::Column::Id.eq(id))
        .exec(c)
        .await?;
    Ok(())
}

/// Filters for listing runs.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub dag_id: Option<String>,
    pub states: Vec<RunState>,
    pub limit: u64,
    pub offset: u64,
}

/// Runs that ended between `from` and `to` (of one DAG, or all), newest first, at most
/// `limit`.
pub async fn ended_between<C: ConnectionTrait>(
    c: &C,
    dag_id: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: u64,
) -> DbResult<Vec<dag_run::Model>> {
    let mut q = dag_run::Entity::find()
        .filter(dag_run::Column::EndedAt.gte(from))
        .filter(dag_run::Column::EndedAt.lt(to));
    if let Some(d) = dag_id {
        q = q.filter(dag_run::Column::DagId.eq(d));
    }
    Ok(q.order_by_desc(dag_run::Column::EndedAt)
        .limit(limit)
        .all(c)
        .await?)
}

/// Runs, newest first.
pub async fn list_runs<C: ConnectionTrait>(c: &C, f: &RunFilter) -> DbResult<Vec<dag_run::Model>> {
    let mut q = dag_run::Entity::find();
    if let Some(d) = &f.dag_id {
        q = q.filter(dag_run::Column::DagId.eq(d));
    }
    if !f.states.is_empty() {
        q = q.filter(dag_run::Column::State.is_in(f.states.iter().map(|s| s.as_str())));
    }
    Ok(q.order_by_desc(dag_run::Column::LogicalDate)
        .order_by_desc(dag_run::Column::Id)
        .limit(f.limit.max(1))
        .offset(f.offset)
        .all(c)
        .await?)
}
