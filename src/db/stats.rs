//! Read-only aggregates for the UI and metrics: recent runs per DAG, failure rates,
//! what is running, slow tasks. Each function is one query.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, Statement, Value};

use super::entities::dag_run;
use super::{DbResult, TaskState};

/// `?` placeholders become `$1, $2, ...` on PostgreSQL.
fn stmt(c: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> Statement {
    let backend = c.get_database_backend();
    let sql = if backend == DbBackend::Postgres {
        let mut out = String::new();
        let mut n = 0;
        for ch in sql.chars() {
            if ch == '?' {
                n += 1;
                out.push_str(&format!("${n}"));
            } else {
                out.push(ch);
            }
        }
        out
    } else {
        sql.to_string()
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// The latest `n` runs of every DAG, newest first within each DAG.
pub async fn recent_runs<C: ConnectionTrait>(c: &C, n: i64) -> DbResult<Vec<dag_run::Model>> {
    // One index seek per DAG on (dag_id, logical_date), not a sort of every run. On
    // PostgreSQL a LATERAL join says so (the IN-subquery form below is re-run for every
    // pair of DAG and run there: 2.3 s for 10k runs); SQLite has no LATERAL and runs
    // the subquery once per DAG.
    let sql = if c.get_database_backend() == DbBackend::Postgres {
        "SELECT r.* FROM dag d CROSS JOIN LATERAL \
         (SELECT x.* FROM dag_run x WHERE x.dag_id = d.dag_id ORDER BY x.logical_date DESC, x.id DESC LIMIT ?) r \
         ORDER BY r.dag_id, r.logical_date DESC, r.id DESC"
    } else {
        "SELECT r.* FROM dag d JOIN dag_run r ON r.id IN \
         (SELECT x.id FROM dag_run x WHERE x.dag_id = d.dag_id ORDER BY x.logical_date DESC, x.id DESC LIMIT ?) \
         ORDER BY r.dag_id, r.logical_date DESC, r.id DESC"
    };
    Ok(dag_run::Entity::find()
        .from_raw_sql(stmt(c, sql, vec![n.into()]))
        .all(c)
        .await?)
}

/// Failed and finished counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rate {
    pub failed: i64,
    pub finished: i64,
}

impl Rate {
    /// Failed share in percent, or `None` when nothing finished.
    pub fn percent(&self) -> Option<f64> {
        (self.finished > 0).then(|| 100.0 * self.failed as f64 / self.finished as f64)
    }
}

#[derive(Debug, FromQueryResult)]
struct KeyRate {
    key: String,
    failed: i64,
    finished: i64,
}

async fn rates<C: ConnectionTrait>(
    c: &C,
    sql: &str,
    since: DateTime<Utc>,
) -> DbResult<HashMap<String, Rate>> {
    let rows = KeyRate::find_by_statement(stmt(c, sql, vec![since.into()]))
        .all(c)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.key,
                Rate {
                    failed: r.failed,
                    finished: r.finished,
                },
            )
        })
        .collect())
}

/// Run failure rate per DAG for runs that ended since `since`.
pub async fn run_failure_by_dag<C: ConnectionTrait>(
    c: &C,
    since: DateTime<Utc>,
) -> DbResult<HashMap<String, Rate>> {
    rates(
        c,
        "SELECT dag_id AS key, CAST(SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS failed, \
         CAST(COUNT(*) AS BIGINT) AS finished FROM dag_run WHERE ended_at >= ? AND state IN ('success', 'failed') GROUP BY dag_id",
        since,
    )
    .await
}

/// Try failure rate per DAG for tries that ended since `since`.
pub async fn try_failure_by_dag<C: ConnectionTrait>(
    c: &C,
    since: DateTime<Utc>,
) -> DbResult<HashMap<String, Rate>> {
    rates(
        c,
        "SELECT dag_id AS key, CAST(SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS failed, \
         CAST(COUNT(*) AS BIGINT) AS finished FROM task_try WHERE ended_at >= ? AND state IN ('success', 'failed') GROUP BY dag_id",
        since,
    )
    .await
}

/// Try failure rate per task kind.
pub async fn try_failure_by_kind<C: ConnectionTrait>(
    c: &C,
    since: DateTime<Utc>,
) -> DbResult<HashMap<String, Rate>> {
    rates(
        c,
        "SELECT ti.kind AS key, CAST(SUM(CASE WHEN tt.state = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS failed, \
         CAST(COUNT(*) AS BIGINT) AS finished FROM task_try tt JOIN task_instance ti ON ti.id = tt.task_instance_id \
         WHERE tt.ended_at >= ? AND tt.state IN ('success', 'failed') GROUP BY ti.kind",
        since,
    )
    .await
}

#[derive(Debug, FromQueryResult)]
struct DayRate {
    key: String,
    day: String,
    failed: i64,
    finished: i64,
}

/// Try failure rate per DAG and UTC day since `since`, for trend sparklines.
pub async fn daily_try_failure<C: ConnectionTrait>(
    c: &C,
    since: DateTime<Utc>,
) -> DbResult<HashMap<String, Vec<(String, Rate)>>> {
    let day = if c.get_database_backend() == DbBackend::Postgres {
        "to_char(ended_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    } else {
        "substr(ended_at, 1, 10)"
    };
    let sql = format!(
        "SELECT dag_id AS key, {day} AS day, CAST(SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS failed, \
         CAST(COUNT(*) AS BIGINT) AS finished FROM task_try WHERE ended_at >= ? AND state IN ('success', 'failed') \
         GROUP BY dag_id, {day} ORDER BY 1, 2"
    );
    let rows = DayRate::find_by_statement(stmt(c, &sql, vec![since.into()]))
        .all(c)
        .await?;
    let mut out: HashMap<String, Vec<(String, Rate)>> = HashMap::new();
    for r in rows {
        out.entry(r.key).or_default().push((
            r.day,
            Rate {
                failed: r.failed,
                finished: r.finished,
            },
        ));
    }
    Ok(out)
}

#[derive(Debug, FromQueryResult)]
struct DayRuns {
    day: String,
    failed: i64,
    finished: i64,
}

/// Runs that ended on each UTC day since `since` (of one DAG, or all), and how many of
/// them failed: the calendar's squares.
pub async fn daily_run_failure<C: ConnectionTrait>(
    c: &C,
    since: DateTime<Utc>,
    dag_id: Option<&str>,
) -> DbResult<BTreeMap<String, Rate>> {
    let day = if c.get_database_backend() == DbBackend::Postgres {
        "to_char(ended_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    } else {
        "substr(ended_at, 1, 10)"
    };
    let mut values: Vec<Value> = vec![since.into()];
    let only = match dag_id {
        Some(d) => {
            values.push(d.into());
            "AND dag_id = ?"
        }
        None => "",
    };
    let sql = format!(
        "SELECT {day} AS day, CAST(SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS failed, \
         CAST(COUNT(*) AS BIGINT) AS finished FROM dag_run WHERE ended_at >= ? {only} \
         AND state IN ('success', 'failed') GROUP BY {day}"
    );
    let rows = DayRuns::find_by_statement(stmt(c, &sql, values))
        .all(c)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.day,
                Rate {
                    failed: r.failed,
                    finished: r.finished,
                },
            )
        })
        .collect())
}

#[derive(Debug, FromQueryResult)]
struct StateCount {
    state: String,
    n: i64,
}

/// How many task instances are in each live state (scheduled, queued, running,
/// up_for_retry).
pub async fn live_task_counts<C: ConnectionTrait>(c: &C) -> DbResult<HashMap<TaskState, i64>> {
    let rows = StateCount::find_by_statement(stmt(
        c,
        "SELECT state, CAST(COUNT(*) AS BIGINT) AS n FROM task_instance \
         WHERE state IN ('scheduled', 'queued', 'running', 'up_for_retry') GROUP BY state",
        vec![],
    ))
    .all(c)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| TaskState::parse(&r.state).map(|s| (s, r.n)))
        .collect())
}

/// Runs queued or running, per state, for metrics (finished runs are counted as they
/// finish: `weft_dag_runs_total`).
pub async fn live_run_counts<C: ConnectionTrait>(c: &C) -> DbResult<Vec<(String, i64)>> {
    let rows = StateCount::find_by_statement(stmt(
        c,
        "SELECT state, CAST(COUNT(*) AS BIGINT) AS n FROM dag_run \
         WHERE state IN ('queued', 'running') GROUP BY state",
        vec![],
    ))
    .all(c)
    .await?;
    Ok(rows.into_iter().map(|r| (r.state, r.n)).collect())
}

/// A slow try.
#[derive(Debug, Clone, FromQueryResult)]
pub struct SlowTask {
    pub dag_id: String,
    pub task_id: String,
    pub avg_ms: f64,
    pub max_ms: i64,
    pub tries: i64,
}

/// Tasks with the longest average successful try since `since`.
pub async fn slowest_tasks<C: ConnectionTrait>(
    c: &C,
    since: DateTime<Utc>,
    limit: i64,
) -> DbResult<Vec<SlowTask>> {
    Ok(SlowTask::find_by_statement(stmt(
        c,
        "SELECT dag_id, task_id, CAST(AVG(duration_ms) AS DOUBLE PRECISION) AS avg_ms, CAST(MAX(duration_ms) AS BIGINT) AS max_ms, \
         CAST(COUNT(*) AS BIGINT) AS tries FROM task_try WHERE ended_at >= ? AND state = 'success' AND duration_ms IS NOT NULL \
         GROUP BY dag_id, task_id ORDER BY 3 DESC LIMIT ?",
        vec![since.into(), limit.into()],
    ))
    .all(c)
    .await?)
}

#[derive(Debug, FromQueryResult)]
struct LastScheduled {
    dag_id: String,
    logical: Option<DateTime<Utc>>,
}

/// The latest scheduled logical date of every DAG.
pub async fn latest_scheduled_by_dag<C: ConnectionTrait>(
    c: &C,
) -> DbResult<HashMap<String, DateTime<Utc>>> {
    let rows = LastScheduled::find_by_statement(stmt(
        c,
        "SELECT d.dag_id, (SELECT r.logical_date FROM dag_run r WHERE r.dag_id = d.dag_id AND r.run_type = 'scheduled' \
         ORDER BY r.logical_date DESC LIMIT 1) AS logical FROM dag d",
        vec![],
    ))
    .all(c)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.logical.map(|l| (r.dag_id, l)))
        .collect())
}

/// Slots in use per pool (queued and running task instances, by their pool_slots).
pub async fn pool_usage<C: ConnectionTrait>(c: &C) -> DbResult<HashMap<String, i64>> {
    #[derive(Debug, FromQueryResult)]
    struct PoolUse {
        pool: String,
        used: i64,
    }
    let rows = PoolUse::find_by_statement(stmt(
        c,
        "SELECT pool, CAST(SUM(pool_slots) AS BIGINT) AS used FROM task_instance WHERE state IN ('queued', 'running') GROUP BY pool",
        vec![],
    ))
    .all(c)
    .await?;
    Ok(rows.into_iter().map(|r| (r.pool, r.used)).collect())
}

#[derive(Debug, FromQueryResult)]
struct Lag {
    dag_id: String,
    interval_end: DateTime<Utc>,
    done: Option<DateTime<Utc>>,
}

/// Per DAG, for runs that ended since `since`: seconds from the data interval's end to
/// the end of the last successful task of `kind` in the run — but only in runs that
/// also loaded data (`requires` succeeded), when given. Freshness is (`transform`,
/// requires `ingest`); experiment turnaround is (`experiment`, none).
pub async fn lags<C: ConnectionTrait>(
    c: &C,
    kind: &str,
    requires: Option<&str>,
    since: DateTime<Utc>,
) -> DbResult<HashMap<String, Vec<f64>>> {
    let require = match requires {
        Some(_) => {
            "AND EXISTS (SELECT 1 FROM task_instance i WHERE i.dag_run_id = r.id AND i.kind = ? AND i.state = 'success')"
        }
        None => "",
    };
    let sql = format!(
        "SELECT r.dag_id, r.data_interval_end AS interval_end, MAX(t.ended_at) AS done FROM dag_run r \
         JOIN task_instance t ON t.dag_run_id = r.id AND t.kind = ? AND t.state = 'success' \
         WHERE r.ended_at >= ? {require} GROUP BY r.id, r.dag_id, r.data_interval_end ORDER BY r.data_interval_end"
    );
    let mut values: Vec<Value> = vec![kind.into(), since.into()];
    if let Some(k) = requires {
        values.push(k.into());
    }
    let rows = Lag::find_by_statement(stmt(c, &sql, values)).all(c).await?;
    let mut out: HashMap<String, Vec<f64>> = HashMap::new();
    for r in rows {
        if let Some(done) = r.done {
            out.entry(r.dag_id)
                .or_default()
                .push((done - r.interval_end).num_milliseconds() as f64 / 1000.0);
        }
    }
    Ok(out)
}

/// An engine process (scheduler, worker or both) as `weft status` and the Health page
/// show it.
#[derive(Debug, Clone)]
pub struct Process {
    pub id: String,
    pub hostname: String,
    pub pid: i32,
    pub role: String,
    /// Empty: every queue.
    pub queues: String,
    pub capacity: i32,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    /// Tries it runs now.
    pub running: i64,
}

#[derive(FromQueryResult)]
struct HolderCount {
    worker_id: String,
    n: i64,
}

/// The engines alive, and those that stopped (or were declared dead) after `since`,
/// newest first, with how many tries each runs now.
pub async fn processes<C: ConnectionTrait>(c: &C, since: DateTime<Utc>) -> DbResult<Vec<Process>> {
    use super::entities::worker;
    use sea_orm::{ColumnTrait, Condition, QueryFilter, QueryOrder};
    let workers = worker::Entity::find()
        .filter(
            Condition::any()
                .add(worker::Column::StoppedAt.is_null())
                .add(worker::Column::StoppedAt.gt(since)),
        )
        .order_by_desc(worker::Column::StartedAt)
        .all(c)
        .await?;
    let running: HashMap<String, i64> = HolderCount::find_by_statement(stmt(
        c,
        "SELECT worker_id, CAST(COUNT(*) AS BIGINT) AS n FROM task_instance \
         WHERE state = 'running' AND worker_id IS NOT NULL GROUP BY worker_id",
        vec![],
    ))
    .all(c)
    .await?
    .into_iter()
    .map(|r| (r.worker_id, r.n))
    .collect();
    Ok(workers
        .into_iter()
        .map(|w| Process {
            running: running.get(&w.id).copied().unwrap_or(0),
            id: w.id,
            hostname: w.hostname,
            pid: w.pid,
            role: w.role,
            queues: w.queues,
            capacity: w.capacity,
            started_at: w.started_at,
            heartbeat_at: w.heartbeat_at,
            stopped_at: w.stopped_at,
        })
        .collect())
}

/// Task instances waiting for or holding a worker, per queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub queue: String,
    /// Ready, waiting for a slot (pool, concurrency) or a worker.
    pub scheduled: i64,
    /// Claimed by a worker, not started yet.
    pub queued: i64,
    pub running: i64,
}

#[derive(FromQueryResult)]
struct QueueStateCount {
    queue: String,
    state: String,
    n: i64,
}

/// Per queue, how many task instances are scheduled, queued and running, by queue name.
pub async fn queue_depths<C: ConnectionTrait>(c: &C) -> DbResult<Vec<QueueDepth>> {
    let rows = QueueStateCount::find_by_statement(stmt(
        c,
        "SELECT queue, state, CAST(COUNT(*) AS BIGINT) AS n FROM task_instance \
         WHERE state IN ('scheduled', 'queued', 'running') GROUP BY queue, state",
        vec![],
    ))
    .all(c)
    .await?;
    let mut by_queue: std::collections::BTreeMap<String, QueueDepth> = Default::default();
    for r in rows {
        let d = by_queue
            .entry(r.queue.clone())
            .or_insert_with(|| QueueDepth {
                queue: r.queue,
                ..Default::default()
            });
        match r.state.as_str() {
            "scheduled" => d.scheduled = r.n,
            "queued" => d.queued = r.n,
            _ => d.running = r.n,
        }
    }
    Ok(by_queue.into_values().collect())
}

impl Process {
    /// `alive`, `silent` (no heartbeat for longer than `timeout`: about to be declared
    /// dead) or `stopped` (stopped, or declared dead).
    pub fn condition(&self, now: DateTime<Utc>, timeout: std::time::Duration) -> &'static str {
        if self.stopped_at.is_some() {
            "stopped"
        } else if (now - self.heartbeat_at).to_std().unwrap_or_default() > timeout {
            "silent"
        } else {
            "alive"
        }
    }

    /// Seconds since its last heartbeat.
    pub fn heartbeat_age(&self, now: DateTime<Utc>) -> f64 {
        (now - self.heartbeat_at).num_milliseconds().max(0) as f64 / 1000.0
    }

    /// The heartbeat age as shown (`-` once stopped).
    pub fn heartbeat_label(&self, now: DateTime<Utc>) -> String {
        match self.stopped_at {
            Some(_) => "-".into(),
            None => format!("{:.1}s", self.heartbeat_age(now)),
        }
    }

    /// Running tries out of its capacity (`-` when it runs none: a scheduler).
    pub fn load_label(&self) -> String {
        match self.capacity {
            0 => "-".into(),
            n => format!("{}/{n}", self.running),
        }
    }

    /// The queues it serves: `all`, a list, or `-` when it runs no tries.
    pub fn queues_label(&self) -> String {
        match (self.capacity, self.queues.is_empty()) {
            (0, _) => "-".into(),
            (_, true) => "all".into(),
            _ => self.queues.replace(',', ", "),
        }
    }
}

/// The processes of a deployment, the queues and the scheduler lease's holder.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub processes: Vec<Process>,
    pub queues: Vec<QueueDepth>,
    /// The engine holding the scheduler lease, and until when, if any holds it.
    pub leader: Option<(String, DateTime<Utc>)>,
}

/// What `weft status` prints: live engines and those stopped in the last hour.
pub async fn deployment<C: ConnectionTrait>(c: &C, now: DateTime<Utc>) -> DbResult<Deployment> {
    let leader = super::lease::holder(c, super::lease::SCHEDULER)
        .await?
        .filter(|(_, until)| *until > now);
    Ok(Deployment {
        processes: processes(c, now - chrono::Duration::hours(1)).await?,
        queues: queue_depths(c).await?,
        leader,
    })
}
