//! Aggregates over the history (failure rates, trends, slow tasks, lags) that pages
//! show, cached per web server for `FIGURES_TTL`: they cover days and weeks, so a
//! few seconds of age cost nothing, while computing them for every request of every
//! client would make page load scale with the history. One request computes them; the
//! others arriving meanwhile wait for that result (single flight) instead of
//! computing it again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

use crate::db::stats::{self, Rate, SlowTask};
use crate::db::{Db, DbResult};

/// How old cached figures may be.
pub const FIGURES_TTL: Duration = Duration::from_secs(15);

/// A value computed at most once per `ttl`.
#[derive(Debug)]
pub struct Cached<T> {
    ttl: Duration,
    slot: Mutex<Option<(Instant, Arc<T>)>>,
}

impl<T> Cached<T> {
    pub fn new(ttl: Duration) -> Self {
        Cached {
            ttl,
            slot: Mutex::new(None),
        }
    }

    /// The cached value if it is younger than the ttl, else `compute`'s (cached). An
    /// error is returned and not cached.
    pub async fn get<F, Fut>(&self, compute: F) -> DbResult<Arc<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = DbResult<T>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some((at, v)) = slot.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(v.clone());
        }
        let v = Arc::new(compute().await?);
        *slot = Some((Instant::now(), v.clone()));
        Ok(v)
    }
}

/// The figures of the DAG list: failure rates of the last 7 days.
#[derive(Debug)]
pub struct DagListFigures {
    pub run_rates: HashMap<String, Rate>,
    pub try_rates: HashMap<String, Rate>,
}

/// The figures of the Health page.
#[derive(Debug)]
pub struct HealthFigures {
    /// Try failure rates per DAG and per kind over the last day, week and month.
    pub by_dag: Vec<HashMap<String, Rate>>,
    pub by_kind: Vec<HashMap<String, Rate>>,
    /// Per DAG, per UTC day of the last 14: try failures.
    pub daily: HashMap<String, Vec<(String, Rate)>>,
    pub slow: Vec<SlowTask>,
    pub freshness: HashMap<String, Vec<f64>>,
    pub turnaround: HashMap<String, Vec<f64>>,
}

/// The cached figures of one web server.
#[derive(Debug)]
pub struct Figures {
    pub dag_list: Cached<DagListFigures>,
    pub health: Cached<HealthFigures>,
}

impl Default for Figures {
    fn default() -> Self {
        Figures {
            dag_list: Cached::new(FIGURES_TTL),
            health: Cached::new(FIGURES_TTL),
        }
    }
}

impl DagListFigures {
    pub async fn compute(db: &Db, now: DateTime<Utc>) -> DbResult<Self> {
        let c = &db.read;
        let week = now - chrono::Duration::days(7);
        Ok(DagListFigures {
            run_rates: stats::run_failure_by_dag(c, week).await?,
            try_rates: stats::try_failure_by_dag(c, week).await?,
        })
    }
}

impl HealthFigures {
    pub async fn compute(db: &Db, now: DateTime<Utc>) -> DbResult<Self> {
        let c = &db.read;
        use crate::kinds::{experiment, ingest, transform};
        let mut by_dag = Vec::new();
        let mut by_kind = Vec::new();
        for since in [
            now - chrono::Duration::hours(24),
            now - chrono::Duration::days(7),
            now - chrono::Duration::days(30),
        ] {
            by_dag.push(stats::try_failure_by_dag(c, since).await?);
            by_kind.push(stats::try_failure_by_kind(c, since).await?);
        }
        let week = now - chrono::Duration::days(7);
        Ok(HealthFigures {
            by_dag,
            by_kind,
            daily: stats::daily_try_failure(c, now - chrono::Duration::days(14)).await?,
            slow: stats::slowest_tasks(c, week, 10).await?,
            freshness: stats::lags(c, transform::KIND.name, Some(ingest::KIND.name), week).await?,
            turnaround: stats::lags(c, experiment::KIND.name, None, week).await?,
        })
    }
}
