//! Shared helpers for the integration tests.
#![allow(dead_code)]

use chrono::{DateTime, TimeZone, Utc};

pub fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0)
        .single()
        .expect("valid test time")
}

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use weft::config::Config;
use weft::db::entities::dag_run;
use weft::db::{Db, RunState, TaskState, runs, tasks};
use weft::scheduler::{Clock, Engine, EngineOptions, Registry, SystemClock, commands};

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, migrated database that is dropped (Postgres) or deleted (SQLite) with it.
pub struct TestDb {
    pub db: Db,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<(String, String)>,
}

impl TestDb {
    pub async fn cleanup(self) {
        if let Some((admin, name)) = &self.pg_name {
            self.db.conn.clone().close().await.ok();
            if let Ok(admin) = Db::connect(admin).await {
                use sea_orm::ConnectionTrait;
                let _ = admin
                    .conn
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            }
        }
    }
}

pub async fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("weft.db").display());
    let db = Db::connect(&url).await.expect("connect sqlite");
    db.migrate().await.expect("migrate sqlite");
    TestDb {
        db,
        url,
        _dir: Some(dir),
        pg_name: None,
    }
}

/// A fresh Postgres database, or `None` (with the reason printed) when no server is
/// configured. With WEFT_REQUIRE_POSTGRES=1 (CI) a missing server fails the test.
pub async fn postgres_db() -> Option<TestDb> {
    let admin = match std::env::var("WEFT_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            if std::env::var("WEFT_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                panic!("WEFT_REQUIRE_POSTGRES=1 but WEFT_TEST_POSTGRES_URL is not set");
            }
            eprintln!("skipping the PostgreSQL part: WEFT_TEST_POSTGRES_URL is not set");
            return None;
        }
    };
    let admin_db = match Db::connect(&admin).await {
        Ok(d) => d,
        Err(e) => {
            if std::env::var("WEFT_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                panic!("WEFT_REQUIRE_POSTGRES=1 but PostgreSQL is unreachable: {e}");
            }
            eprintln!("skipping the PostgreSQL part: cannot connect ({e})");
            return None;
        }
    };
    let name = format!("weft_t_{}", uuid::Uuid::new_v4().simple());
    use sea_orm::ConnectionTrait;
    admin_db
        .conn
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    admin_db.conn.close().await.ok();
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .expect("url with a database name");
    let url = format!("{base}/{name}");
    let db = Db::connect(&url).await.expect("connect test database");
    db.migrate().await.expect("migrate postgres");
    Some(TestDb {
        db,
        url,
        _dir: None,
        pg_name: Some((admin, name)),
    })
}

/// The backends to run a test on: SQLite always, Postgres when available.
pub async fn backends() -> Vec<TestDb> {
    let mut v = vec![sqlite_db().await];
    if let Some(pg) = postgres_db().await {
        v.push(pg);
    }
    v
}

/// A DAG folder, a registry, and an engine running in the background.
pub struct Env {
    pub db: Db,
    pub dir: tempfile::TempDir,
    pub registry: Arc<Registry>,
    pub engine: Engine,
    pub config: Config,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

pub fn test_config(dir: &Path, url: &str) -> Config {
    let mut c = Config {
        database_url: url.to_string(),
        dags_folder: dir.join("dags"),
        heartbeat_interval: Duration::from_millis(200),
        kill_grace: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(5),
        ..Default::default()
    };
    c.connections.insert(
        "warehouse".into(),
        weft::config::Connection {
            url: format!("sqlite://{}?mode=rwc", dir.join("warehouse.db").display()),
        },
    );
    c
}

impl Env {
    /// Writes the DAG files, syncs them, and starts an engine (unless `clock` is a
    /// manual one: then the test drives `engine.tick()` itself).
    pub async fn start(
        db: &TestDb,
        dags: &[(&str, &str)],
        tweak: impl FnOnce(&mut Config),
        clock: Option<Arc<dyn Clock>>,
    ) -> Env {
        let options = EngineOptions {
            cron: false,
            watch_folder: false,
            poll_interval: Duration::from_millis(100),
            ..Default::default()
        };
        Env::start_with(db, dags, tweak, clock, options).await
    }

    /// `start` with the engine's options given.
    pub async fn start_with(
        db: &TestDb,
        dags: &[(&str, &str)],
        tweak: impl FnOnce(&mut Config),
        clock: Option<Arc<dyn Clock>>,
        options: EngineOptions,
    ) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("dags")).expect("mkdir");
        for (name, src) in dags {
            std::fs::write(dir.path().join("dags").join(format!("{name}.toml")), src)
                .expect("write dag");
        }
        let mut config = test_config(dir.path(), &db.url);
        tweak(&mut config);
        let registry = Registry::new(
            config.dags_folder.clone(),
            weft::dag::ValidationContext::of(&config),
        );
        let manual = clock.is_some();
        let clock = clock.unwrap_or_else(|| Arc::new(SystemClock));
        let engine = Engine::new(
            db.db.clone(),
            config.clone(),
            registry.clone(),
            clock.clone(),
            options,
        )
        .await
        .expect("engine");
        let report = registry.sync(&db.db, clock.now()).await.expect("sync");
        assert!(
            report.errors.is_empty(),
            "test dags have errors: {:?}",
            report.errors
        );
        let mut env = Env {
            db: db.db.clone(),
            dir,
            registry,
            engine,
            config,
            stop: None,
            handle: None,
        };
        if !manual {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let e = env.engine.clone();
            env.handle = Some(tokio::spawn(async move {
                e.run(async {
                    let _ = rx.await;
                })
                .await
            }));
            env.stop = Some(tx);
        }
        env
    }

    /// An engine whose warehouse is the test database itself on Postgres (its own
    /// tables), and a SQLite file beside the DAGs otherwise.
    pub async fn with_warehouse(db: &TestDb, dags: &[(&str, &str)]) -> Env {
        let pg = db.url.starts_with("postgres").then(|| db.url.clone());
        Env::start(
            db,
            dags,
            |c| {
                if let Some(u) = &pg {
                    c.connections.insert(
                        "warehouse".into(),
                        weft::config::Connection { url: u.clone() },
                    );
                }
            },
            None,
        )
        .await
    }

    pub fn dags_dir(&self) -> PathBuf {
        self.dir.path().join("dags")
    }

    pub async fn trigger(&self, dag_id: &str) -> dag_run::Model {
        self.trigger_with(dag_id, BTreeMap::new()).await
    }

    pub async fn trigger_with(
        &self,
        dag_id: &str,
        params: BTreeMap<String, serde_json::Value>,
    ) -> dag_run::Model {
        let (dag, vid) = self.registry.current(dag_id).expect("dag loaded");
        let now = self.engine.shared.clock.now();
        let run = commands::trigger(
            &self.db,
            &dag,
            vid,
            &params,
            serde_json::Value::Null,
            None,
            now,
        )
        .await
        .expect("trigger");
        self.engine.wake();
        run
    }

    /// Waits (bounded) until a run is finished and returns its final state.
    pub async fn wait_run(&self, run_pk: i64, limit: Duration) -> RunState {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let run = runs::get_run(&self.db.conn, run_pk)
                .await
                .expect("get run")
                .expect("run exists");
            if run.state.is_finished() {
                return run.state;
            }
            if tokio::time::Instant::now() > deadline {
                let states = self.states(run_pk).await;
                panic!(
                    "run {run_pk} did not finish within {limit:?}: {:?}, tasks {states:?}",
                    run.state
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until a task instance of a run reaches `state`.
    pub async fn wait_task(&self, run_pk: i64, task: &str, state: TaskState, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.states(run_pk).await.get(task) == Some(&state) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{task} never became {state}: {:?}",
                self.states(run_pk).await
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn states(&self, run_pk: i64) -> BTreeMap<String, TaskState> {
        tasks::of_run(&self.db.conn, run_pk)
            .await
            .expect("tis")
            .into_iter()
            .map(|t| (t.task_id, t.state))
            .collect()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

/// The first column of the first row of a query, as an integer.
pub async fn scalar(db: &Db, sql: &str) -> i64 {
    use sea_orm::ConnectionTrait;
    let stmt = sea_orm::Statement::from_string(db.conn.get_database_backend(), sql.to_string());
    let row = db
        .conn
        .query_one_raw(stmt)
        .await
        .expect("query")
        .expect("row");
    row.try_get_by_index::<i64>(0).expect("integer")
}

/// The first column of the first row of a query, as text.
pub async fn text(db: &Db, sql: &str) -> String {
    use sea_orm::ConnectionTrait;
    let stmt = sea_orm::Statement::from_string(db.conn.get_database_backend(), sql.to_string());
    let row = db
        .conn
        .query_one_raw(stmt)
        .await
        .expect("query")
        .expect("row");
    row.try_get_by_index::<String>(0).expect("text")
}

/// The first column of the first row of a query, as a float.
pub async fn float(db: &Db, sql: &str) -> f64 {
    use sea_orm::ConnectionTrait;
    let row = db
        .conn
        .query_one_raw(sea_orm::Statement::from_string(
            db.conn.get_database_backend(),
            sql.to_string(),
        ))
        .await
        .expect("q")
        .expect("row");
    row.try_get_by_index::<f64>(0).expect("float")
}

/// A task's state, error and the log of its current try.
pub async fn task_log(db: &Db, run_pk: i64, task: &str) -> (TaskState, String, String) {
    let tis = weft::db::tasks::of_run(&db.conn, run_pk)
        .await
        .expect("tis");
    let ti = tis
        .iter()
        .find(|t| t.task_id == task)
        .unwrap_or_else(|| panic!("no task {task}"));
    let tr = weft::db::tasks::current_try(&db.conn, ti)
        .await
        .expect("try")
        .expect("a try");
    let log = weft::db::tasks::read_log(&db.conn, tr.id)
        .await
        .expect("log");
    (ti.state, ti.error.clone().unwrap_or_default(), log)
}
