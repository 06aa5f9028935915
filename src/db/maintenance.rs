//! Keeping the database of record small and sound: retention (finished runs older than
//! a cutoff go, with their task instances, tries and logs, in small batches), the
//! invariant checks of `weft db check`, and online backups of SQLite.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionSession, TransactionTrait, Value};
use serde::Serialize;

use super::DbResult;

/// What a clean removed (or, dry, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CleanReport {
    pub runs: u64,
    pub task_instances: u64,
    pub tries: u64,
    pub log_chunks: u64,
    pub dag_versions: u64,
    pub workers: u64,
    pub sessions: u64,
}

impl CleanReport {
    pub fn is_empty(&self) -> bool {
        *self == CleanReport::default()
    }

    fn add(&mut self, o: &CleanReport) {
        self.runs += o.runs;
        self.task_instances += o.task_instances;
        self.tries += o.tries;
        self.log_chunks += o.log_chunks;
        self.dag_versions += o.dag_versions;
        self.workers += o.workers;
        self.sessions += o.sessions;
    }
}

use super::ph;

/// Runs that retention removes: finished before `cutoff` (by end, else creation).
fn old_runs_where(b: DbBackend) -> String {
    format!(
        "state IN ('success', 'failed') AND COALESCE(ended_at, created_at) < {}",
        ph(b, 1)
    )
}

async fn count<C: ConnectionTrait>(c: &C, sql: &str, values: Vec<Value>) -> DbResult<u64> {
    let b = c.get_database_backend();
    let row = c
        .query_one_raw(Statement::from_sql_and_values(b, sql, values))
        .await?;
    Ok(row
        .and_then(|r| r.try_get_by_index::<i64>(0).ok())
        .map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

/// Counts what [`clean`] would remove, without removing anything.
pub async fn clean_preview<C: ConnectionTrait>(
    c: &C,
    cutoff: DateTime<Utc>,
) -> DbResult<CleanReport> {
    let b = c.get_database_backend();
    let runs = format!("SELECT id FROM dag_run WHERE {}", old_runs_where(b));
    let v = || vec![Value::from(cutoff)];
    Ok(CleanReport {
        runs: count(c, &format!("SELECT COUNT(*) FROM ({runs}) x"), v()).await?,
        task_instances: count(
            c,
            &format!("SELECT COUNT(*) FROM task_instance WHERE dag_run_id IN ({runs})"),
            v(),
        )
        .await?,
        tries: count(
            c,
            &format!("SELECT COUNT(*) FROM task_try WHERE dag_run_id IN ({runs})"),
            v(),
        )
        .await?,
        log_chunks: count(
            c,
            &format!(
                "SELECT COUNT(*) FROM task_log WHERE task_try_id IN (SELECT id FROM task_try WHERE dag_run_id IN ({runs}))"
            ),
            v(),
        )
        .await?,
        dag_versions: count(c, &format!("SELECT COUNT(*) FROM dag_version v WHERE {}", unused_versions_where(b)), v()).await?,
        workers: count(
            c,
            &format!("SELECT COUNT(*) FROM worker WHERE {}", old_workers_where(b)),
            v(),
        )
        .await?,
        sessions: count(
            c,
            &format!("SELECT COUNT(*) FROM web_session WHERE expires_at < {}", ph(b, 1)),
            vec![Value::from(Utc::now())],
        )
        .await?,
    })
}

/// DAG versions older than the cutoff that no run refers to and that are not the
/// current version of their DAG (`v` is the version table's alias).
fn unused_versions_where(b: DbBackend) -> String {
    format!(
        "v.created_at < {} AND NOT EXISTS (SELECT 1 FROM dag_run r WHERE r.dag_version_id = v.id) \
         AND NOT EXISTS (SELECT 1 FROM dag d WHERE d.latest_version_id = v.id)",
        ph(b, 1)
    )
}

/// Workers that stopped, or went silent, before the cutoff.
fn old_workers_where(b: DbBackend) -> String {
    format!("COALESCE(stopped_at, heartbeat_at) < {}", ph(b, 1))
}

/// Removes one batch of at most `batch` old runs (with their task instances, tries and
/// log chunks) in one short transaction. Returns what it removed; an empty report
/// means nothing old is left.
pub async fn clean_runs_batch<C: ConnectionTrait + TransactionTrait>(
    c: &C,
    cutoff: DateTime<Utc>,
    batch: u64,
) -> DbResult<CleanReport> {
    let b = c.get_database_backend();
    let sql = format!(
        "SELECT id FROM dag_run WHERE {} ORDER BY id LIMIT {batch}",
        old_runs_where(b)
    );
    let ids: Vec<i64> = c
        .query_all_raw(Statement::from_sql_and_values(
            b,
            &sql,
            vec![Value::from(cutoff)],
        ))
        .await?
        .into_iter()
        .filter_map(|r| r.try_get_by_index::<i64>(0).ok())
        .collect();
    if ids.is_empty() {
        return Ok(CleanReport::default());
    }
    // Integers from the database, not user text: safe to list inline.
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let txn = c.begin().await?;
    let exec = |sql: String| {
        let txn = &txn;
        async move {
            Ok::<u64, sea_orm::DbErr>(
                txn.execute_raw(Statement::from_string(b, sql))
                    .await?
                    .rows_affected(),
            )
        }
    };
    let log_chunks = exec(format!(
        "DELETE FROM task_log WHERE task_try_id IN (SELECT id FROM task_try WHERE dag_run_id IN ({list}))"
    ))
    .await?;
    let tries = exec(format!("DELETE FROM task_try WHERE dag_run_id IN ({list})")).await?;
    let task_instances = exec(format!(
        "DELETE FROM task_instance WHERE dag_run_id IN ({list})"
    ))
    .await?;
    let runs = exec(format!("DELETE FROM dag_run WHERE id IN ({list})")).await?;
    txn.commit().await?;
    Ok(CleanReport {
        runs,
        task_instances,
        tries,
        log_chunks,
        ..Default::default()
    })
}

/// Removes unused DAG versions, old worker rows and expired sessions.
pub async fn clean_rest<C: ConnectionTrait>(c: &C, cutoff: DateTime<Utc>) -> DbResult<CleanReport> {
    let b = c.get_database_backend();
    let run = |sql: String, v: Value| async move {
        Ok::<u64, sea_orm::DbErr>(
            c.execute_raw(Statement::from_sql_and_values(b, sql, vec![v]))
                .await?
                .rows_affected(),
        )
    };
    Ok(CleanReport {
        dag_versions: run(
            format!(
                "DELETE FROM dag_version WHERE id IN (SELECT v.id FROM dag_version v WHERE {})",
                unused_versions_where(b)
            ),
            Value::from(cutoff),
        )
        .await?,
        workers: run(
            format!("DELETE FROM worker WHERE {}", old_workers_where(b)),
            Value::from(cutoff),
        )
        .await?,
        sessions: run(
            format!("DELETE FROM web_session WHERE expires_at < {}", ph(b, 1)),
            Value::from(Utc::now()),
        )
        .await?,
        ..Default::default()
    })
}

/// Removes everything older than `cutoff`, `batch` runs per transaction, pausing
/// `pause` between batches so the scheduler's writes go first.
pub async fn clean<C: ConnectionTrait + TransactionTrait>(
    c: &C,
    cutoff: DateTime<Utc>,
    batch: u64,
    pause: std::time::Duration,
) -> DbResult<CleanReport> {
    let mut total = CleanReport::default();
    loop {
        let r = clean_runs_batch(c, cutoff, batch).await?;
        if r.runs == 0 {
            break;
        }
        total.add(&r);
        tokio::time::sleep(pause).await;
    }
    total.add(&clean_rest(c, cutoff).await?);
    Ok(total)
}

/// One broken invariant found by [`check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `orphaned_try`, `unfinished_task_in_finished_run`, `finished_run_still_running`.
    pub kind: &'static str,
    pub dag_id: String,
    pub run_pk: i64,
    pub task_id: Option<String>,
    pub detail: String,
}

/// The invariants of the database of record: every running or queued task instance is
/// owned by a live worker (heartbeat within `heartbeat_timeout`); a finished run has no
/// unfinished task instance; a running run whose task instances are all finished is
/// not left running.
pub async fn check<C: ConnectionTrait>(
    c: &C,
    now: DateTime<Utc>,
    heartbeat_timeout: std::time::Duration,
) -> DbResult<Vec<Problem>> {
    let b = c.get_database_backend();
    let dead_after = now - chrono::Duration::from_std(heartbeat_timeout).unwrap_or_default();
    let mut out = Vec::new();
    let sql = format!(
        "SELECT ti.dag_id, ti.dag_run_id, ti.task_id, ti.state, COALESCE(ti.worker_id, '') \
         FROM task_instance ti LEFT JOIN worker w ON w.id = ti.worker_id \
         WHERE ti.state IN ('running', 'queued') \
         AND (w.id IS NULL OR w.stopped_at IS NOT NULL OR w.heartbeat_at < {})",
        ph(b, 1)
    );
    for r in c
        .query_all_raw(Statement::from_sql_and_values(
            b,
            &sql,
            vec![Value::from(dead_after)],
        ))
        .await?
    {
        let worker: String = r.try_get_by_index(4).unwrap_or_default();
        let state: String = r.try_get_by_index(3).unwrap_or_default();
        out.push(Problem {
            kind: "orphaned_try",
            dag_id: r.try_get_by_index(0).unwrap_or_default(),
            run_pk: r.try_get_by_index(1).unwrap_or_default(),
            task_id: r.try_get_by_index(2).ok(),
            detail: if worker.is_empty() {
                format!("{state} without a worker")
            } else {
                format!("{state} on worker {worker}, which is stopped or silent")
            },
        });
    }
    let sql = "SELECT r.dag_id, r.id, ti.task_id, ti.state, r.state FROM dag_run r \
               JOIN task_instance ti ON ti.dag_run_id = r.id \
               WHERE r.state IN ('success', 'failed') \
               AND ti.state IN ('pending', 'scheduled', 'queued', 'running', 'up_for_retry')";
    for r in c.query_all_raw(Statement::from_string(b, sql)).await? {
        let ti_state: String = r.try_get_by_index(3).unwrap_or_default();
        let run_state: String = r.try_get_by_index(4).unwrap_or_default();
        out.push(Problem {
            kind: "unfinished_task_in_finished_run",
            dag_id: r.try_get_by_index(0).unwrap_or_default(),
            run_pk: r.try_get_by_index(1).unwrap_or_default(),
            task_id: r.try_get_by_index(2).ok(),
            detail: format!("task is {ti_state} but its run is {run_state}"),
        });
    }
    let sql = "SELECT r.dag_id, r.id FROM dag_run r WHERE r.state = 'running' \
               AND EXISTS (SELECT 1 FROM task_instance ti WHERE ti.dag_run_id = r.id) \
               AND NOT EXISTS (SELECT 1 FROM task_instance ti WHERE ti.dag_run_id = r.id \
               AND ti.state IN ('pending', 'scheduled', 'queued', 'running', 'up_for_retry'))";
    for r in c.query_all_raw(Statement::from_string(b, sql)).await? {
        out.push(Problem {
            kind: "finished_run_still_running",
            dag_id: r.try_get_by_index(0).unwrap_or_default(),
            run_pk: r.try_get_by_index(1).unwrap_or_default(),
            task_id: None,
            detail: "every task instance is finished but the run is still running".into(),
        });
    }
    Ok(out)
}

/// Copies a live SQLite database to `path` (`VACUUM INTO`: a consistent snapshot while
/// weft keeps running). `path` must not exist yet.
pub async fn backup_sqlite<C: ConnectionTrait>(c: &C, path: &str) -> DbResult<()> {
    let b = c.get_database_backend();
    c.execute_raw(Statement::from_sql_and_values(
        b,
        "VACUUM INTO ?",
        vec![Value::from(path.to_string())],
    ))
    .await?;
    Ok(())
}
