//! The scheduler: creates runs from cron schedules, promotes retries, starts queued
//! runs, claims scheduled task instances and hands them to the executor, and rescues
//! the work of dead workers.
//!
//! The loop is a `tokio::select!` over a timer (cron ticks, retry delays, heartbeats,
//! polling for runs created by other processes), a wake-up sent whenever a try finishes
//! (downstream tasks were already scheduled in the same transaction), and shutdown.
//! Planning (`plan`, `rules`) is pure and takes `now` as an argument.

pub mod commands;
pub mod plan;
pub mod registry;
pub mod rules;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, Semaphore, broadcast, watch};

use crate::config::Config;
use crate::db::runs::{self, NewRun};
use crate::db::tasks::{self, ClaimLimits};
use crate::db::{Db, DbResult, RunState, RunType, dags, lease};
use crate::kinds::Warehouses;
use crate::process;
pub use registry::Registry;

/// Where time comes from: the system clock, or a controllable one in tests.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(t: DateTime<Utc>) -> Arc<ManualClock> {
        Arc::new(ManualClock(Mutex::new(t)))
    }

    pub fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How many ended tries may wait for the finisher before workers wait for it.
const FINISH_QUEUE: usize = 4096;

/// A try that ended, waiting to be recorded, and where to send the result.
#[derive(Debug)]
pub struct FinishRequest {
    pub item: commands::FinishItem,
    pub reply: tokio::sync::oneshot::Sender<Result<commands::Finished, String>>,
}

/// Records ends of tries in batches: whatever has arrived while the previous batch was
/// being written goes into the next transaction. A failed write is retried before the
/// tries are reported as unrecorded. A batch whose recording panics is recorded again
/// one try at a time, and a try that panics alone is recorded as failed with the reason,
/// so one bad item never stops the recording of the others.
async fn run_finisher(
    db: Db,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    mut rx: tokio::sync::mpsc::Receiver<FinishRequest>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let items: Vec<commands::FinishItem> = batch.iter().map(|r| r.item.clone()).collect();
        let results = match record_batch(&db, &registry, &clock, items.clone()).await {
            Some(r) => r.map_err(|e| vec![e; items.len()]),
            None => Err(Vec::new()),
        };
        let results: Vec<Result<commands::Finished, String>> = match results {
            Ok(fins) => fins.into_iter().map(Ok).collect(),
            Err(errors) if !errors.is_empty() => errors.into_iter().map(Err).collect(),
            Err(_) => {
                tracing::error!(
                    "recording a batch of {} finished tries panicked; recording them one by one",
                    items.len()
                );
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(record_alone(&db, &registry, &clock, item).await);
                }
                out
            }
        };
        for (req, r) in batch.into_iter().zip(results) {
            let _ = req.reply.send(r);
        }
    }
}

/// Records finished tries in one transaction (retried while the database is
/// unreachable, else up to 5 times), on a task of its own so that a panic is caught:
/// `None` when it panicked.
async fn record_batch(
    db: &Db,
    registry: &Arc<Registry>,
    clock: &Arc<dyn Clock>,
    items: Vec<commands::FinishItem>,
) -> Option<Result<Vec<commands::Finished>, String>> {
    let (db, registry, clock) = (db.clone(), registry.clone(), clock.clone());
    let job = tokio::spawn(async move {
        // While the database cannot be reached (a restart), keep the results and try
        // again for up to UNREACHABLE; any other error, five times.
        const UNREACHABLE: Duration = Duration::from_secs(600);
        let since = std::time::Instant::now();
        let (mut failures, mut attempts) = (0u32, 0u32);
        loop {
            match commands::finish_tries(&db, &registry, &items, clock.now()).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    let wait = if e.is_unreachable() {
                        since.elapsed() < UNREACHABLE
                    } else {
                        failures += 1;
                        failures < 5
                    };
                    if !wait {
                        return Err(e.to_string());
                    }
                    tracing::error!(error = %e, "recording {} finished tries failed; retrying", items.len());
                    let backoff = 100u64 << attempts.min(4);
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(backoff.min(1000))).await;
                }
            }
        }
    });
    match job.await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(error = %e, "recording finished tries panicked");
            None
        }
    }
}

/// Records one try; if that panics too, records it as a failed try without retries,
/// naming the reason, so that its run can finish.
async fn record_alone(
    db: &Db,
    registry: &Arc<Registry>,
    clock: &Arc<dyn Clock>,
    item: commands::FinishItem,
) -> Result<commands::Finished, String> {
    let one = |r: Option<Result<Vec<commands::Finished>, String>>| {
        r.map(|r| r.and_then(|mut v| v.pop().ok_or_else(|| "nothing was recorded".to_string())))
    };
    if let Some(r) = one(record_batch(db, registry, clock, vec![item.clone()]).await) {
        return r;
    }
    let mut failed = item;
    failed.ti.max_tries = failed.ti.try_number;
    failed.outcome = crate::db::tasks::TryOutcome::Failed {
        exit_code: failed.outcome.exit_code(),
        error: "weft could not record this try's result (an internal error, logged by the server); the try is failed without retries"
            .into(),
    };
    one(record_batch(db, registry, clock, vec![failed]).await)
        .unwrap_or_else(|| Err("recording this try panicked".into()))
}

/// A run reached a final state.
#[derive(Debug, Clone)]
pub struct RunEvent {
    pub dag_id: String,
    pub run_pk: i64,
    pub state: RunState,
}

/// What an engine does: `serve` does everything; `weft scheduler`, `weft worker`,
/// backfills and `dags test` do parts.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Create runs from cron schedules (the leader only: it holds the scheduler lease).
    pub cron: bool,
    /// Start queued runs, promote retries and sweep dead workers' tries.
    pub schedule: bool,
    /// Claim and run tries.
    pub execute: bool,
    /// The queues whose tasks this engine runs; all when empty.
    pub queues: Vec<String>,
    /// Read the DAG folder (and record new versions); otherwise take the DAG
    /// definitions from the database, as recorded by a scheduler.
    pub watch_folder: bool,
    /// Work only on these DAGs (backfill, `dags test`); all when empty.
    pub only_dags: Vec<String>,
    /// How often to look for work made by other processes when no notification came
    /// (on PostgreSQL notifications wake the engine at once; this is the fallback).
    pub poll_interval: Duration,
}

impl EngineOptions {
    /// What this engine is, as `weft status` shows it.
    pub fn role(&self) -> &'static str {
        match (self.schedule, self.execute) {
            _ if !self.only_dags.is_empty() => "local",
            (true, true) => "serve",
            (true, false) => "scheduler",
            _ => "worker",
        }
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            cron: true,
            schedule: true,
            execute: true,
            queues: Vec::new(),
            watch_folder: true,
            only_dags: Vec::new(),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// How many due DAGs one pass plans at most (the rest wait for the next pass, which
/// comes at once).
const DUE_DAGS_PER_PASS: u64 = 1000;

/// How many due DAGs get their runs in one transaction.
const PLAN_BATCH: usize = 50;

/// How long a DAG blocked by `max_active_runs` waits before it is planned again (a run
/// that ends plans it again at once; this bounds a missed wake-up).
const BLOCKED_RECHECK: Duration = Duration::from_secs(30);

/// State shared by the scheduler loop and the tries it runs.
#[derive(Debug)]
pub struct Shared {
    pub db: Db,
    pub config: Config,
    pub registry: Arc<Registry>,
    pub clock: Arc<dyn Clock>,
    pub worker_id: String,
    pub hostname: String,
    pub wake: Notify,
    /// Cancel switches of the tries running in this process, by task instance id.
    pub inflight: Mutex<HashMap<i64, watch::Sender<Option<String>>>>,
    pub run_events: broadcast::Sender<RunEvent>,
    pub warehouses: Arc<Warehouses>,
    pub options: EngineOptions,
    /// Ends of tries go through one finisher task that records them in batches (a
    /// bounded queue: a worker waits when the finisher is that far behind).
    pub finisher: tokio::sync::mpsc::Sender<FinishRequest>,
    /// Another process made work (a PostgreSQL notification arrived).
    pub remote_wake: Notify,
    /// The connection heartbeats go through: on PostgreSQL one of its own, so no load
    /// on the engine's or the web server's pools can delay them.
    heartbeat_db: Db,
    /// True while this engine holds the scheduler lease.
    leader: AtomicBool,
    /// The tries and callbacks running in this process: shutdown waits for them.
    pub tracker: tokio_util::task::TaskTracker,
    permits: Arc<Semaphore>,
    paused: Mutex<HashSet<String>>,
    /// `claimable_dags` as of a registry generation.
    claimable: Mutex<(u64, Arc<HashMap<String, u32>>)>,
    running: AtomicUsize,
    stopping: AtomicBool,
    last_sync: Mutex<Option<DateTime<Utc>>>,
    last_sweep: Mutex<Option<DateTime<Utc>>>,
    /// When this process last failed to reach the database. Workers silent since then
    /// may only have been cut off as it was (a database restart): none is declared
    /// dead until this process has reached it for a whole `heartbeat_timeout`.
    db_failed_at: Mutex<Option<DateTime<Utc>>>,
    /// Set when a long-lived part of the engine (the finisher) stopped: `/health` then
    /// answers 503 and `serve` exits non-zero.
    fault: Mutex<Option<String>>,
    fault_notify: Notify,
    /// The import errors last logged, by file: logged again only when they change.
    logged_errors: Mutex<HashMap<String, String>>,
    /// Where the web server answers, once `serve` has bound it.
    base_url: std::sync::OnceLock<String>,
}

impl Shared {
    /// Where this weft's web server answers: the address `serve` bound, else the
    /// configured `bind` (for `dags test` and backfills, which serve nothing).
    pub fn base_url(&self) -> String {
        self.base_url
            .get()
            .cloned()
            .unwrap_or_else(|| format!("http://{}", self.config.bind))
    }
}

/// A scheduler plus executor in one process.
#[derive(Debug, Clone)]
pub struct Engine {
    pub shared: Arc<Shared>,
}

/// This machine's name, as workers record it (`WEFT_HOSTNAME` overrides it: for
/// containers that share one, or several "hosts" on one machine in tests).
pub fn hostname() -> String {
    if let Ok(h) = std::env::var("WEFT_HOSTNAME")
        && !h.trim().is_empty()
    {
        return h.trim().chars().take(255).collect();
    }
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

impl Engine {
    /// Registers a new worker in the database; `run` then drives it.
    pub async fn new(
        db: Db,
        config: Config,
        registry: Arc<Registry>,
        clock: Arc<dyn Clock>,
        options: EngineOptions,
    ) -> DbResult<Engine> {
        let hostname = hostname();
        let pid = std::process::id();
        let worker_id = format!(
            "{hostname}-{pid}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let me = tasks::NewWorker {
            id: worker_id.clone(),
            hostname: hostname.clone(),
            pid: i32::try_from(pid).unwrap_or(0),
            role: options.role(),
            queues: options.queues.clone(),
            capacity: if options.execute {
                i32::try_from(config.parallelism).unwrap_or(i32::MAX)
            } else {
                0
            },
        };
        tasks::register_worker(&db.conn, &me, clock.now()).await?;
        dags::sync_pools(&db.conn, &config.pool_slots()).await?;
        let warehouses = Warehouses::new(config.connections.clone().into_iter().collect());
        let permits = Arc::new(Semaphore::new(config.parallelism as usize));
        let (finisher, rx) = tokio::sync::mpsc::channel(FINISH_QUEUE);
        let finisher_job = tokio::spawn(run_finisher(
            db.clone(),
            registry.clone(),
            clock.clone(),
            rx,
        ));
        let heartbeat_db = if db.is_postgres() {
            db.dedicated().await?
        } else {
            db.clone()
        };
        let shared = Shared {
            finisher,
            remote_wake: Notify::new(),
            heartbeat_db,
            leader: AtomicBool::new(false),
            tracker: tokio_util::task::TaskTracker::new(),
            db,
            registry,
            clock,
            worker_id,
            hostname,
            wake: Notify::new(),
            inflight: Mutex::new(HashMap::new()),
            run_events: broadcast::channel(4096).0,
            warehouses,
            options,
            permits,
            paused: Mutex::new(HashSet::new()),
            claimable: Mutex::new((0, Arc::new(HashMap::new()))),
            running: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            last_sync: Mutex::new(None),
            last_sweep: Mutex::new(None),
            fault: Mutex::new(None),
            fault_notify: Notify::new(),
            db_failed_at: Mutex::new(None),
            logged_errors: Mutex::new(HashMap::new()),
            base_url: std::sync::OnceLock::new(),
            config,
        };
        let engine = Engine {
            shared: Arc::new(shared),
        };
        // The finisher lives as long as the engine; if it ends, the engine is broken.
        let weak = Arc::downgrade(&engine.shared);
        tokio::spawn(async move {
            let why = match finisher_job.await {
                Ok(()) => "the finisher (which records ends of tries) stopped".to_string(),
                Err(e) => format!("the finisher (which records ends of tries) died: {e}"),
            };
            if let Some(shared) = weak.upgrade() {
                Engine { shared }.set_fault(why);
            }
        });
        Ok(engine)
    }

    /// Records the address the web server answers on (tasks see it as `base_url` and
    /// `WEFT_BASE_URL`).
    pub fn set_base_url(&self, url: String) {
        let _ = self.shared.base_url.set(url);
    }

    /// Why the engine cannot work any more, if it cannot.
    pub fn fault(&self) -> Option<String> {
        self.shared
            .fault
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records that a long-lived part of the engine died; the loop then stops.
    pub fn set_fault(&self, why: String) {
        tracing::error!("{why}; the engine stops and /health answers 503");
        self.shared
            .fault
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(why);
        self.shared.fault_notify.notify_one();
    }

    /// Wakes the loop (a run was created, a try finished).
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    pub fn subscribe(&self) -> broadcast::Receiver<RunEvent> {
        self.shared.run_events.subscribe()
    }

    /// Tries running now in this process.
    pub fn running(&self) -> usize {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// Whether this engine holds the scheduler lease (plans cron runs, sweeps).
    pub fn is_leader(&self) -> bool {
        self.shared.leader.load(Ordering::SeqCst)
    }

    /// Runs until `shutdown` resolves, then shuts down gracefully: no new claims,
    /// running tries get `shutdown_grace` to finish, the rest are stopped (process
    /// groups killed) and recorded as failed tries, retried later if they have tries
    /// left. Heartbeats go on in a task of their own meanwhile, and on PostgreSQL a
    /// listener wakes the loop when another process made work.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let heartbeats = tokio::spawn(self.clone().heartbeats());
        let listener = self
            .shared
            .db
            .is_postgres()
            .then(|| tokio::spawn(self.clone().listen()));
        loop {
            if self.fault().is_some() {
                break;
            }
            // Each pass runs on a task of its own: a panic fails that pass (logged), not
            // the loop.
            let e = self.clone();
            let wait = match tokio::spawn(async move { e.tick().await }).await {
                Ok(Ok(w)) => w,
                Ok(Err(e)) => {
                    self.database_failed(&e);
                    tracing::error!(error = %e, "scheduler pass failed; retrying in 1s");
                    Duration::from_secs(1)
                }
                Err(e) => {
                    tracing::error!(error = %e, "scheduler pass panicked; retrying in 1s");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.shared.remote_wake.notified() => {}
                _ = self.shared.wake.notified() => {
                    // A try finished: its downstream work is already scheduled, so go
                    // straight to claiming it.
                    let e = self.clone();
                    match tokio::spawn(async move { e.claim_and_spawn().await }).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::error!(error = %e, "claiming work failed"),
                        Err(e) => tracing::error!(error = %e, "claiming work panicked"),
                    }
                    continue;
                }
                _ = self.shared.fault_notify.notified() => break,
                _ = &mut shutdown => break,
            }
        }
        self.shutdown().await;
        heartbeats.abort();
        if let Some(l) = listener {
            l.abort();
        }
    }

    /// Sends this worker's heartbeat every `heartbeat_interval`, on a task and (on
    /// PostgreSQL) a connection of its own, so neither scheduler passes nor web load
    /// can delay it. Finding itself declared dead (it was paused past the timeout), it
    /// stops its tries, which others have taken over, and registers as alive again.
    async fn heartbeats(self) {
        let s = self.shared.clone();
        let mut every = tokio::time::interval(s.config.heartbeat_interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(e) = self.heartbeat_once().await {
                self.database_failed(&e);
                tracing::error!(error = %e, "heartbeat failed; retrying at the next interval");
            }
        }
    }

    /// One heartbeat, then stops the tries running here that are no longer this
    /// worker's (marked, cancelled, or taken over after it was declared dead).
    pub async fn heartbeat_once(&self) -> DbResult<()> {
        let s = &self.shared;
        let now = s.clock.now();
        if !tasks::heartbeat(&s.heartbeat_db.conn, &s.worker_id, now).await? {
            tracing::error!(
                worker = %s.worker_id,
                "this worker was declared dead (no heartbeat within heartbeat_timeout); its tries were handed to others: stopping them and registering again"
            );
            for tx in s
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
            {
                let _ = tx.send(Some(
                    "this worker was declared dead (no heartbeat within heartbeat_timeout); the task was handed to another try".into(),
                ));
            }
            tasks::revive(&s.heartbeat_db.conn, &s.worker_id, now).await?;
        }
        self.stop_unwanted_tries().await?;
        self.release_lost_claims(now).await
    }

    /// Task instances held by this worker that it does not run: a claim whose start
    /// failed (the database went away between the two transactions), or a start whose
    /// commit was lost. After a grace period the claim goes back to `scheduled` and the
    /// lost try is rescued (failed, retried if it has tries left), so a database fault
    /// never leaves work held by a live worker forever.
    async fn release_lost_claims(&self, now: DateTime<Utc>) -> DbResult<()> {
        let s = &self.shared;
        let grace = chrono::Duration::seconds(30);
        let held = tasks::held_by(&s.db.conn, std::slice::from_ref(&s.worker_id)).await?;
        for ti in held {
            if s.inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&ti.id)
            {
                continue;
            }
            let since = ti.started_at.or(ti.queued_at).unwrap_or(ti.updated_at);
            if now - since < grace {
                continue;
            }
            if ti.state == crate::db::TaskState::Queued {
                tracing::warn!(
                    ti = ti.id,
                    "a claim of this worker never started; releasing it"
                );
                tasks::unclaim(&s.db.conn, ti.id, &s.worker_id, now).await?;
            } else {
                tracing::warn!(
                    ti = ti.id,
                    "a try this worker started is not running here; rescuing it"
                );
                commands::rescue(
                    &s.db,
                    &s.registry,
                    &ti,
                    "the worker lost track of this try (a database error while starting it)",
                    now,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Wakes the loop on each PostgreSQL notification that another process made work;
    /// reconnects with backoff when the connection drops (polling covers the gap).
    async fn listen(self) {
        use sea_orm::sqlx::postgres::PgListener;
        let url = self.shared.config.database_url.clone();
        let mut backoff = Duration::from_millis(250);
        loop {
            let mut listener = match PgListener::connect(&url).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %crate::db::redact_url(&e.to_string()), "cannot listen for notifications; polling meanwhile, retrying in {}", humantime::format_duration(backoff));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            if let Err(e) = listener.listen(crate::db::WAKE_CHANNEL).await {
                tracing::warn!(error = %e, "cannot listen for notifications; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
            backoff = Duration::from_millis(250);
            // Whatever was missed while not listening is found by the next pass.
            self.shared.remote_wake.notify_one();
            loop {
                match listener.try_recv().await {
                    Ok(Some(_)) => self.shared.remote_wake.notify_one(),
                    Ok(None) => {
                        tracing::warn!("the notification connection was lost; reconnecting");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for notifications failed; reconnecting");
                        break;
                    }
                }
            }
        }
    }

    async fn shutdown(&self) {
        let s = &self.shared;
        s.stopping.store(true, Ordering::SeqCst);
        let n = self.running();
        if n > 0 {
            tracing::info!(
                "shutting down: waiting up to {} for {n} running tries",
                humantime::format_duration(s.config.shutdown_grace)
            );
        }
        let deadline = tokio::time::Instant::now() + s.config.shutdown_grace;
        while self.running() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.running() > 0 {
            tracing::warn!(
                "stopping {} tries that did not finish in time",
                self.running()
            );
            for tx in s
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
            {
                let _ = tx.send(Some("the worker shut down while the task ran".into()));
            }
            let deadline =
                tokio::time::Instant::now() + s.config.kill_grace + Duration::from_secs(5);
            while self.running() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Callbacks still running get the same short grace; whatever is left is stopped
        // with the process (its process group is killed when its handle drops).
        s.tracker.close();
        let grace = s.config.kill_grace + Duration::from_secs(5);
        if tokio::time::timeout(grace, s.tracker.wait()).await.is_err() {
            tracing::warn!(
                "{} tries or callbacks still running at shutdown",
                s.tracker.len()
            );
        }
        if let Err(e) = tasks::stop_worker(&s.db.conn, &s.worker_id, s.clock.now()).await {
            tracing::error!(error = %e, "could not mark this worker stopped");
        }
        if self.is_leader()
            && let Err(e) = lease::release(&s.db.conn, lease::SCHEDULER, &s.worker_id).await
        {
            tracing::error!(error = %e, "could not give up the scheduler lease");
        }
    }

    fn due(slot: &Mutex<Option<DateTime<Utc>>>, now: DateTime<Utc>, every: Duration) -> bool {
        let mut g = slot.lock().unwrap_or_else(|e| e.into_inner());
        let due = g.is_none_or(|t| {
            now - t >= chrono::Duration::from_std(every).unwrap_or_default() || now < t
        });
        if due {
            *g = Some(now);
        }
        due
    }

    fn wanted(&self, dag_id: &str) -> bool {
        let only = &self.shared.options.only_dags;
        only.is_empty() || only.iter().any(|d| d == dag_id)
    }

    /// One full scheduling pass. Returns how long the loop may sleep.
    pub async fn tick(&self) -> DbResult<Duration> {
        let started = std::time::Instant::now();
        let wait = self.tick_inner().await;
        metrics::histogram!("weft_scheduler_loop_seconds").record(started.elapsed().as_secs_f64());
        wait
    }

    async fn tick_inner(&self) -> DbResult<Duration> {
        let s = &self.shared;
        let o = &s.options;
        let now = s.clock.now();
        if Self::due(&s.last_sync, now, s.config.dag_poll_interval) {
            if o.watch_folder {
                self.sync_folder(now).await?;
            } else {
                s.registry.sync_from_db(&s.db).await?;
            }
        }
        // The lease goes to one scheduler; engines that plan no cron runs (a worker, a
        // backfill) never take it.
        let leader = o.cron && self.take_lease(now).await?;
        if s.leader.swap(leader, Ordering::SeqCst) != leader {
            if leader {
                tracing::info!(worker = %s.worker_id, "took the scheduler lease: this scheduler plans cron runs and sweeps dead workers");
            } else {
                tracing::warn!(worker = %s.worker_id, "lost the scheduler lease");
            }
        }
        // Sweeps run on the leader, or on an engine that has no leader role (a backfill):
        // every rescue is fenced, so a second sweeper changes nothing.
        if o.schedule
            && (leader || !o.cron)
            && Self::due(&s.last_sweep, now, s.config.heartbeat_interval)
        {
            self.sweep_orphans(now).await?;
        }
        let paused: HashSet<String> = dags::paused_ids(&s.db.conn).await?.into_iter().collect();
        *s.paused.lock().unwrap_or_else(|e| e.into_inner()) = paused.clone();
        let mut next: Option<DateTime<Utc>> = None;
        if leader {
            self.plan_due_dags(now).await?;
            next = dags::earliest_next_run(&s.db.conn).await?;
        }
        if o.schedule {
            tasks::promote_due_retries(&s.db.conn, now).await?;
            if let Some(t) = tasks::next_retry_at(&s.db.conn).await? {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
            for dag_id in runs::dags_with_queued_runs(&s.db.conn).await? {
                if !self.wanted(&dag_id) || paused.contains(&dag_id) {
                    continue;
                }
                if let Some((dag, vid)) = s.registry.current(&dag_id) {
                    commands::start_queued(&s.db, &dag, vid, now).await?;
                }
            }
        }
        if o.execute {
            // Tries an operator marked or cancelled elsewhere stop within a pass.
            self.stop_unwanted_tries().await?;
        }
        self.claim_and_spawn().await?;
        let mut wait = o.poll_interval;
        if let Some(t) = next {
            let until = (t - now).to_std().unwrap_or(Duration::ZERO);
            wait = wait.min(until.max(Duration::from_millis(5)));
        }
        Ok(wait)
    }

    /// Takes or renews the scheduler lease. A holder known to be dead (its worker row
    /// stopped, or its process gone from this host, as after a `kill -9` and restart)
    /// is replaced at once rather than when its lease expires.
    async fn take_lease(&self, now: DateTime<Utc>) -> DbResult<bool> {
        let s = &self.shared;
        let ttl = s.config.lease_timeout;
        if lease::hold(&s.db.conn, lease::SCHEDULER, &s.worker_id, now, ttl).await? {
            return Ok(true);
        }
        let Some((holder, _)) = lease::holder(&s.db.conn, lease::SCHEDULER).await? else {
            return Ok(false);
        };
        let dead = match tasks::worker(&s.db.conn, &holder).await? {
            Some(w) => {
                w.stopped_at.is_some()
                    || (w.hostname == s.hostname
                        && w.pid != i32::try_from(std::process::id()).unwrap_or(0)
                        && !process::pid_alive(w.pid))
            }
            None => true,
        };
        Ok(dead
            && lease::take_over(
                &s.db.conn,
                lease::SCHEDULER,
                &holder,
                &s.worker_id,
                now,
                ttl,
            )
            .await?)
    }

    /// Re-reads the DAG folder; logs each broken file once per change of its problems.
    async fn sync_folder(&self, now: DateTime<Utc>) -> DbResult<()> {
        let s = &self.shared;
        let report = s.registry.sync(&s.db, now).await?;
        let mut seen = s.logged_errors.lock().unwrap_or_else(|e| e.into_inner());
        for (file, msg) in &report.errors {
            if seen.get(file) != Some(msg) {
                tracing::warn!(file = %file, "dag file has errors; the last good version (if any) keeps running:\n{msg}");
                seen.insert(file.clone(), msg.clone());
            }
        }
        seen.retain(|file, _| report.errors.iter().any(|(f, _)| f == file));
        drop(seen);
        for d in &report.new_versions {
            tracing::info!(dag = %d, "loaded a new version of the dag");
        }
        Ok(())
    }

    /// Creates the scheduled runs that are due, for the DAGs whose `next_run_after`
    /// passed (one bounded query, whatever the number of DAGs), and records when each
    /// is due next. Reads are batched over the due DAGs and their runs are written
    /// `PLAN_BATCH` DAGs per transaction.
    async fn plan_due_dags(&self, now: DateTime<Utc>) -> DbResult<()> {
        let s = &self.shared;
        let c = &s.db.conn;
        let later = now + chrono::Duration::from_std(BLOCKED_RECHECK).unwrap_or_default();
        let mut plannable = Vec::new();
        for dag_id in dags::due_dags(c, now, DUE_DAGS_PER_PASS).await? {
            match s.registry.current(&dag_id) {
                // Not loaded here (yet): look again after the next folder read.
                None => dags::set_next_run_after(c, &dag_id, later).await?,
                Some((dag, _)) if dag.schedule.is_none() => {
                    dags::set_next_run_after(c, &dag_id, dags::never()).await?
                }
                Some(_) if !self.wanted(&dag_id) => {}
                Some((dag, vid)) => plannable.push((dag, vid)),
            }
        }
        if plannable.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = plannable.iter().map(|(d, _)| d.dag_id.clone()).collect();
        let latest = runs::latest_scheduled_of(c, &ids).await?;
        let active = runs::count_runs_of(c, &ids, &[RunState::Queued, RunState::Running]).await?;
        for batch in plannable.chunks(PLAN_BATCH) {
            let txn = sea_orm::TransactionTrait::begin(c).await?;
            for (dag, vid) in batch {
                let running = active.get(&dag.dag_id).copied().unwrap_or(0);
                let room = usize::try_from(u64::from(dag.max_active_runs).saturating_sub(running))
                    .unwrap_or(0);
                let last = latest.get(&dag.dag_id).copied();
                let p = plan::plan(&dag.timetable(), dag.catchup, last, now, room);
                for iv in &p.due {
                    let new = NewRun {
                        dag_id: dag.dag_id.clone(),
                        run_id: runs::run_id_for(RunType::Scheduled, iv.start),
                        run_type: RunType::Scheduled,
                        logical_date: iv.start,
                        interval_start: iv.start,
                        interval_end: iv.end,
                        dag_version_id: *vid,
                        params: serde_json::to_value(dag.default_params()).unwrap_or_default(),
                        conf: serde_json::json!({}),
                    };
                    if let Some(run) = commands::create_run_in(&txn, dag, *vid, &new, now).await? {
                        tracing::info!(dag = %dag.dag_id, run = %run.run_id, "created scheduled run");
                    }
                }
                let next = if p.due.len() == plan::MAX_RUNS_PER_PASS {
                    tracing::info!(dag = %dag.dag_id, "catching up: created {} runs in this pass; the next pass creates more", p.due.len());
                    now
                } else if p.due.len() >= room && p.next_run_after.is_some_and(|t| t <= now) {
                    // Blocked by max_active_runs: a run that ends plans the DAG again.
                    later
                } else {
                    p.next_run_after.unwrap_or_else(dags::never)
                };
                dags::set_next_run_after(&txn, &dag.dag_id, next).await?;
            }
            txn.commit().await?;
        }
        Ok(())
    }

    /// Claims as much scheduled work as this process has room for and starts it.
    pub async fn claim_and_spawn(&self) -> DbResult<usize> {
        let s = &self.shared;
        if s.stopping.load(Ordering::SeqCst) {
            return Ok(0);
        }
        let capacity = s.permits.available_permits() as u64;
        if capacity == 0 {
            return Ok(0);
        }
        if !s.options.execute {
            return Ok(0);
        }
        // Paused DAGs as of the last full pass (at most one poll interval old).
        let paused = s.paused.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let limits = ClaimLimits {
            dag_max_active: self.claimable_dags(),
            capacity,
            queues: s.options.queues.clone(),
            excluded_dags: paused.into_iter().collect(),
        };
        // On SQLite (one writer) claiming and starting are one transaction: a try
        // costs one commit less. On PostgreSQL the claim commits first: its lock
        // serialises every worker's claims, so it is held for the claim only.
        let txn = sea_orm::TransactionTrait::begin(&s.db.conn).await?;
        let claimed = tasks::claim(&txn, &s.worker_id, &s.hostname, &limits, s.clock.now()).await?;
        let ids: Vec<i64> = claimed.iter().map(|t| t.id).collect();
        let apart = s.db.is_postgres() || ids.is_empty();
        let txn = if apart {
            txn.commit().await?;
            if ids.is_empty() {
                return Ok(0);
            }
            sea_orm::TransactionTrait::begin(&s.db.conn).await?
        } else {
            txn
        };
        // Read after the claim took its lock: a try's start is after the end of the try
        // whose slot it took (the try history shows pools and limits honestly).
        let started_at = s.clock.now();
        let start = async {
            let started =
                tasks::start_tries(&txn, &ids, &s.worker_id, &s.hostname, started_at).await?;
            txn.commit().await?;
            DbResult::Ok(started)
        };
        let started = match start.await {
            Ok(started) => started,
            Err(e) => {
                if apart {
                    // Hand the claims back at once (if the database answers; otherwise
                    // the heartbeat releases them later).
                    for id in &ids {
                        let _ = tasks::unclaim(&s.db.conn, *id, &s.worker_id, s.clock.now()).await;
                    }
                }
                return Err(e);
            }
        };
        let n = started.len();
        for (st, run) in started {
            let Ok(permit) = s.permits.clone().try_acquire_owned() else {
                // Cannot happen: capacity was checked before claiming. Record it honestly.
                tracing::error!(ti = st.ti.id, "no executor slot for a started try");
                continue;
            };
            s.running.fetch_add(1, Ordering::SeqCst);
            let shared = self.shared.clone();
            s.tracker.spawn(async move {
                crate::scheduler::worker::run_started(shared.clone(), st, run).await;
                shared.running.fetch_sub(1, Ordering::SeqCst);
                drop(permit);
            });
        }
        Ok(n)
    }

    /// The DAGs this engine claims from with their `max_active_tasks`, rebuilt only
    /// when the registry changed. Paused DAGs are left out of a small map (the claim
    /// names the open DAGs) and excluded by the claim from a big one.
    fn claimable_dags(&self) -> Arc<HashMap<String, u32>> {
        let s = &self.shared;
        let generation = s.registry.generation();
        let all = {
            let mut cache = s.claimable.lock().unwrap_or_else(|e| e.into_inner());
            if cache.0 != generation || cache.1.is_empty() {
                *cache = (
                    generation,
                    Arc::new(
                        s.registry
                            .all()
                            .into_iter()
                            .filter(|(d, _)| self.wanted(&d.dag_id))
                            .map(|(d, _)| (d.dag_id.clone(), d.max_active_tasks))
                            .collect(),
                    ),
                );
            }
            cache.1.clone()
        };
        if all.len() > tasks::CLAIM_LIST_DAGS {
            return all;
        }
        let paused = s.paused.lock().unwrap_or_else(|e| e.into_inner());
        Arc::new(
            all.iter()
                .filter(|(d, _)| !paused.contains(*d))
                .map(|(d, m)| (d.clone(), *m))
                .collect(),
        )
    }

    /// Stops tries running here whose task instance is no longer this worker's running
    /// try (an operator marked it, or the run was cancelled).
    pub async fn stop_unwanted_tries(&self) -> DbResult<()> {
        let s = &self.shared;
        let ids: Vec<i64> = s
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let held: HashSet<i64> = tasks::held_by(&s.db.conn, std::slice::from_ref(&s.worker_id))
            .await?
            .into_iter()
            .map(|t| t.id)
            .collect();
        let map = s.inflight.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            if !held.contains(&id)
                && let Some(tx) = map.get(&id)
            {
                let _ = tx.send(Some(
                    "the task was marked or cancelled by an operator".into(),
                ));
            }
        }
        Ok(())
    }

    /// Notes when `e` says this process could not reach the database (see
    /// `db_failed_at`); other errors say nothing about other workers' silence.
    fn database_failed(&self, e: &crate::db::DbError) {
        if !e.is_unreachable() {
            return;
        }
        *self
            .shared
            .db_failed_at
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(self.shared.clock.now());
    }

    /// Finds workers that died (no heartbeat within `heartbeat_timeout`, or a process on
    /// this host that no longer exists), kills what they left running on this host, and
    /// fails or requeues their task instances. Silence counts only once this process
    /// has itself reached the database for a whole `heartbeat_timeout`: after a
    /// database restart every worker was silent, and none of them died.
    pub async fn sweep_orphans(&self, now: DateTime<Utc>) -> DbResult<usize> {
        let s = &self.shared;
        let timeout = chrono::Duration::from_std(s.config.heartbeat_timeout).unwrap_or_default();
        let failed_at = *s.db_failed_at.lock().unwrap_or_else(|e| e.into_inner());
        let silence_counts = failed_at.is_none_or(|t| now - t > timeout);
        let mut rescued = 0;
        for w in tasks::live_workers(&s.db.conn).await? {
            if w.id == s.worker_id {
                continue;
            }
            let silent = silence_counts && now - w.heartbeat_at > timeout;
            let gone_here = w.hostname == s.hostname && !process::pid_alive(w.pid);
            if !(silent || gone_here) {
                continue;
            }
            let reason = if gone_here {
                format!(
                    "worker {} (pid {}) is gone; the try was lost with it",
                    w.id, w.pid
                )
            } else {
                format!(
                    "worker {} sent no heartbeat since {}; the try was lost with it",
                    w.id, w.heartbeat_at
                )
            };
            // Declared dead only if it is still silent at this moment (re-checked in the
            // same statement): a heartbeat that arrived meanwhile keeps its tries.
            let silent_since = (!gone_here).then(|| now - timeout);
            if !tasks::bury_worker(&s.db.conn, &w.id, silent_since, now).await? {
                continue;
            }
            tracing::warn!(worker = %w.id, "{reason}");
            for ti in tasks::held_by(&s.db.conn, std::slice::from_ref(&w.id)).await? {
                self.kill_leftover(&ti).await;
                commands::rescue(&s.db, &s.registry, &ti, &reason, now).await?;
                rescued += 1;
            }
        }
        for ti in tasks::held_by_unknown_workers(&s.db.conn).await? {
            self.kill_leftover(&ti).await;
            commands::rescue(&s.db, &s.registry, &ti, "its worker is unknown", now).await?;
            rescued += 1;
        }
        if rescued > 0 {
            tracing::warn!("rescued {rescued} task instances from dead workers");
            s.wake.notify_one();
        }
        Ok(rescued)
    }

    /// Kills the process group a dead worker left behind on this host, if it is
    /// verifiably the task's process.
    async fn kill_leftover(&self, ti: &crate::db::entities::task_instance::Model) {
        let (Some(pid), Some(host)) = (ti.pid, ti.hostname.as_deref()) else {
            return;
        };
        if host == self.shared.hostname && process::is_our_task_process(pid, ti.id) {
            tracing::warn!(
                ti = ti.id,
                pid,
                "killing the leftover process group of a dead worker's try"
            );
            process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}
