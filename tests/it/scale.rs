//! Scale-out on PostgreSQL with real processes: `weft scheduler`, `weft worker` and
//! `weft webserver` sharing one database, and the faults they must survive (`kill -9`
//! of a worker and of the leader, a worker paused past its heartbeat timeout, every
//! database connection cut). Skipped with a reason without PostgreSQL; required in CI.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use weft::db::Db;

use crate::cli::{run_in, text, weft};

/// A process of one role; killed (SIGKILL) when dropped.
struct Proc {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("signal");
    }

    fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    fn output(&self) -> String {
        format!(
            "--- {} ---\n{}",
            self.name,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A project on a fresh PostgreSQL database, with short heartbeats and leases.
struct Cluster {
    dir: tempfile::TempDir,
    db: Db,
    procs: Vec<Proc>,
}

impl Cluster {
    async fn new(url: &str, dags: &[(&str, &str)]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("dags")).expect("mkdir");
        for (name, src) in dags {
            std::fs::write(dir.path().join("dags").join(format!("{name}.toml")), src)
                .expect("write");
        }
        std::fs::write(
            dir.path().join("weft.toml"),
            format!(
                "database_url = \"{url}\"\nbind = \"127.0.0.1:0\"\nheartbeat_interval = \"200ms\"\nheartbeat_timeout = \"2s\"\nlease_timeout = \"2s\"\nkill_grace = \"1s\"\nshutdown_grace = \"3s\"\ndag_poll_interval = \"500ms\"\n"
            ),
        )
        .expect("config");
        Cluster {
            dir,
            db: Db::connect(url).await.expect("connect"),
            procs: Vec::new(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `weft <args>` as `name` (its output goes to `<name>.log`), optionally
    /// under another host name.
    fn start(&mut self, name: &str, args: &[&str], host: Option<&str>) -> usize {
        let log = self.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = weft();
        cmd.current_dir(self.path())
            .args(args)
            .env("WEFT_LOG", "weft=info")
            .stdout(Stdio::null())
            .stderr(file);
        if let Some(h) = host {
            cmd.env("WEFT_HOSTNAME", h);
        }
        self.procs.push(Proc {
            child: cmd.spawn().expect("spawn"),
            name: name.to_string(),
            log,
        });
        self.procs.len() - 1
    }

    fn logs(&self) -> String {
        self.procs
            .iter()
            .map(Proc::output)
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn rows(&self, sql: &str) -> Vec<sea_orm::QueryResult> {
        self.db
            .conn
            .query_all_raw(Statement::from_string(DbBackend::Postgres, sql))
            .await
            .expect("query")
    }

    async fn int(&self, sql: &str) -> i64 {
        let rows = self.rows(sql).await;
        rows.first()
            .and_then(|r| r.try_get_by_index::<i64>(0).ok())
            .unwrap_or(0)
    }

    async fn until<F, Fut>(&self, what: &str, limit: Duration, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + limit;
        while !f().await {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until a scheduler has recorded `dag`.
    async fn recorded(&self, dag: &str) {
        let sql = format!("SELECT COUNT(*) FROM dag WHERE dag_id = '{dag}'");
        self.until(
            "the dag to be recorded",
            Duration::from_secs(30),
            || async { self.int(&sql).await == 1 },
        )
        .await;
    }

    /// Waits until the slow task runs and has written its start.
    async fn slow_started(&self) {
        self.until("slow to start", Duration::from_secs(30), || async {
            self.int("SELECT COUNT(*) FROM task_instance WHERE state = 'running'")
                .await
                == 1
                && ran(self).len() == 1
        })
        .await;
    }

    /// Waits until the (only) run finished.
    async fn run_finished(&self) {
        self.until("the run to finish", Duration::from_secs(60), || async {
            self.int("SELECT COUNT(*) FROM dag_run WHERE state IN ('success', 'failed')")
                .await
                == 1
        })
        .await;
    }

    /// The index of the process whose worker id holds the running try of `task`.
    async fn holder_of(&self, task: &str) -> usize {
        let rows = self
            .rows(&format!(
                "SELECT worker_id FROM task_instance WHERE task_id = '{task}' AND state = 'running'"
            ))
            .await;
        let worker: String = rows[0].try_get_by_index(0).expect("worker id");
        self.procs
            .iter()
            .position(|p| worker.contains(&format!("-{}-", p.pid())))
            .unwrap_or_else(|| panic!("no process holds {worker}\n{}", self.logs()))
    }
}

/// A slow task that records each start and end in `ran.txt`, retried once.
const SLOW: &str = r#"schedule = "none"
[tasks.slow]
kind = "shell"
command = "echo start >> ran.txt; sleep 8; echo end >> ran.txt"
retries = 1
retry_delay = "1s"
"#;

fn ran(c: &Cluster) -> Vec<String> {
    std::fs::read_to_string(c.path().join("dags").join("ran.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn status(c: &Cluster) -> serde_json::Value {
    let o = run_in(c.path(), &["status", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).expect("json")
}

fn trigger(c: &Cluster, dag: &str) -> String {
    let o = run_in(c.path(), &["trigger", dag, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("json")["run_id"]
        .as_str()
        .expect("run id")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_distributed_roles_refuse_sqlite_with_a_clear_message() {
    let dir = crate::cli::project(&[]);
    for role in ["scheduler", "worker", "webserver"] {
        let o = run_in(dir.path(), &[role]);
        assert_eq!(o.status.code(), Some(2), "{role}: {}", text(&o));
        let out = text(&o);
        assert!(
            out.contains(&format!("`weft {role}` needs PostgreSQL")) && out.contains("weft serve"),
            "{role}: {out}"
        );
    }
    assert!(
        !dir.path().join("weft.db").exists(),
        "a refused role created a database"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_task_loses_its_try_to_another_worker_once() {
    let Some(pg) = crate::support::postgres_db().await else {
        return;
    };
    let mut c = Cluster::new(&pg.url, &[("slow", SLOW)]).await;
    c.start("scheduler", &["scheduler"], None);
    c.start("w1", &["worker", "--concurrency", "3"], None);
    c.start("w2", &["worker", "--queues", "default,reports"], None);
    c.recorded("slow").await;
    let run_id = trigger(&c, "slow");
    c.slow_started().await;
    // `weft status` lists the three processes, which leads, who runs the try.
    let before = status(&c);
    let roles: Vec<(String, bool, i64, i64)> = before["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .map(|p| {
            (
                p["role"].as_str().unwrap_or("").to_string(),
                p["leader"].as_bool().unwrap_or(false),
                p["running"].as_i64().unwrap_or(-1),
                p["capacity"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(roles.len(), 3, "{before}");
    assert!(
        roles.contains(&("scheduler".into(), true, 0, 0)),
        "{before}"
    );
    assert_eq!(
        roles
            .iter()
            .filter(|r| r.0 == "worker")
            .map(|r| r.2)
            .sum::<i64>(),
        1,
        "{before}"
    );
    assert!(
        roles.iter().any(|r| r.0 == "worker" && r.3 == 3),
        "{before}"
    );
    assert!(
        before["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .any(|p| p["queues"] == serde_json::json!(["default", "reports"])),
        "{before}"
    );
    assert_eq!(
        before["queues"],
        serde_json::json!([{"queue": "default", "scheduled": 0, "queued": 0, "running": 1}]),
        "{before}"
    );
    let victim = c.holder_of("slow").await;
    c.procs[victim].kill9();
    c.run_finished().await;
    // The killed worker is listed as stopped (declared dead), the others alive.
    let after = status(&c);
    let conditions: Vec<&str> = after["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .map(|p| p["condition"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        conditions.iter().filter(|c| **c == "stopped").count(),
        1,
        "{after}"
    );
    assert_eq!(
        conditions.iter().filter(|c| **c == "alive").count(),
        2,
        "{after}"
    );
    let table = run_in(c.path(), &["status"]);
    assert!(table.status.success(), "{}", text(&table));
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(table.contains("scheduler (leader)"), "{table}");
    assert!(table.contains("default, reports"), "{table}");
    let state = c.rows("SELECT state FROM dag_run").await[0]
        .try_get_by_index::<String>(0)
        .expect("state");
    assert_eq!(state, "success", "run {run_id}\n{}", c.logs());
    // Two tries: the lost one failed (rescued), the retry succeeded on the other
    // worker; nothing reported success twice; the lost try's process was stopped
    // (one end for two starts).
    assert_eq!(
        c.int("SELECT COUNT(*) FROM task_try WHERE state = 'success'")
            .await,
        1
    );
    assert_eq!(
        c.int("SELECT COUNT(*) FROM task_try WHERE state = 'failed' AND try_number = 1 AND error LIKE '%worker%'")
            .await,
        1,
        "{}",
        c.logs()
    );
    assert_eq!(
        c.int("SELECT COUNT(DISTINCT worker_id) FROM task_try")
            .await,
        2
    );
    assert_eq!(ran(&c), vec!["start", "start", "end"], "{}", c.logs());
    drop(c);
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_paused_past_its_timeout_is_fenced_and_stops_what_it_no_longer_owns() {
    let Some(pg) = crate::support::postgres_db().await else {
        return;
    };
    let mut c = Cluster::new(&pg.url, &[("slow", SLOW)]).await;
    c.start("scheduler", &["scheduler"], None);
    // The workers are "elsewhere": the scheduler cannot kill their processes itself.
    c.start("w1", &["worker"], Some("host-a"));
    c.recorded("slow").await;
    trigger(&c, "slow");
    c.slow_started().await;
    c.start("w2", &["worker"], Some("host-b"));
    let paused = c.holder_of("slow").await;
    c.procs[paused].signal(nix::sys::signal::Signal::SIGSTOP);
    // Declared dead after the timeout; the retry runs on the other worker.
    c.until(
        "the retry to start elsewhere",
        Duration::from_secs(30),
        || async {
            c.int("SELECT COUNT(*) FROM task_try WHERE try_number = 2 AND state = 'running'")
                .await
                == 1
        },
    )
    .await;
    c.procs[paused].signal(nix::sys::signal::Signal::SIGCONT);
    c.run_finished().await;
    // The late worker found itself declared dead and stopped its process (one end,
    // from the retry); its late result was refused by the fence (try 1 keeps the
    // rescue's verdict).
    assert_eq!(ran(&c), vec!["start", "start", "end"], "{}", c.logs());
    let err = c
        .rows("SELECT error FROM task_try WHERE try_number = 1")
        .await[0]
        .try_get_by_index::<Option<String>>(0)
        .expect("error")
        .unwrap_or_default();
    assert!(err.contains("sent no heartbeat"), "{err}\n{}", c.logs());
    assert_eq!(
        c.int("SELECT COUNT(*) FROM task_try WHERE state = 'success'")
            .await,
        1
    );
    let late = c.procs[paused].output();
    assert!(late.contains("was declared dead"), "{late}");
    // It registered again and serves work.
    assert_eq!(
        c.int("SELECT COUNT(*) FROM worker WHERE stopped_at IS NULL AND hostname = 'host-a'")
            .await,
        1,
        "{}",
        c.logs()
    );
    drop(c);
    pg.cleanup().await;
}

/// Every minute of the last `n` minutes, a quick task; two runs at a time.
fn catchup_dag(n: i64) -> String {
    let start = chrono::Utc::now() - chrono::Duration::minutes(n);
    format!(
        "schedule = \"* * * * *\"\nstart_date = \"{}\"\ncatchup = true\nmax_active_runs = 2\n[tasks.t]\nkind = \"shell\"\ncommand = \"sleep 0.2\"\n",
        start.format("%Y-%m-%dT%H:%M:00Z")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_leader_hands_cron_to_another_scheduler_without_gaps_or_doubles() {
    let Some(pg) = crate::support::postgres_db().await else {
        return;
    };
    let mut c = Cluster::new(&pg.url, &[("minutely", &catchup_dag(20))]).await;
    c.start("s1", &["scheduler"], Some("host-1"));
    c.start("s2", &["scheduler"], Some("host-2"));
    c.start("w", &["worker"], None);
    c.until("a few runs", Duration::from_secs(60), || async {
        c.int("SELECT COUNT(*) FROM dag_run WHERE state = 'success'")
            .await
            >= 4
    })
    .await;
    let holder: String = c
        .rows("SELECT holder FROM lease WHERE name = 'scheduler'")
        .await[0]
        .try_get_by_index(0)
        .expect("holder");
    let leader = c
        .procs
        .iter()
        .position(|p| holder.contains(&format!("-{}-", p.pid())))
        .expect("leader process");
    let killed_at = Instant::now();
    c.procs[leader].kill9();
    // Another host cannot see the process is gone: it takes over when the lease
    // expires, within two lease periods.
    c.until("another leader", Duration::from_secs(20), || async {
        let rows = c
            .rows("SELECT holder FROM lease WHERE name = 'scheduler'")
            .await;
        rows[0]
            .try_get_by_index::<String>(0)
            .ok()
            .is_some_and(|h| h != holder)
    })
    .await;
    assert!(
        killed_at.elapsed() < Duration::from_secs(4) + Duration::from_millis(1500),
        "takeover took {:?}",
        killed_at.elapsed()
    );
    c.until(
        "every interval to run",
        Duration::from_secs(120),
        || async {
            c.int("SELECT COUNT(*) FROM dag_run WHERE state = 'success'")
                .await
                >= 20
        },
    )
    .await;
    // No interval twice, none skipped: one run per minute, contiguous.
    let rows = c
        .rows("SELECT logical_date FROM dag_run ORDER BY logical_date")
        .await;
    let dates: Vec<chrono::DateTime<chrono::Utc>> = rows
        .iter()
        .map(|r| r.try_get_by_index(0).expect("date"))
        .collect();
    for w in dates.windows(2) {
        assert_eq!(
            w[1] - w[0],
            chrono::Duration::minutes(1),
            "a gap or a double: {dates:?}"
        );
    }
    drop(c);
    pg.cleanup().await;
}

/// A chain of short tasks.
const CHAIN: &str = r#"schedule = "none"
[tasks.a]
kind = "shell"
command = "sleep 0.5; echo a >> chain.txt"
[tasks.b]
kind = "shell"
command = "sleep 0.5; echo b >> chain.txt"
depends_on = ["a"]
[tasks.c]
kind = "shell"
command = "sleep 0.5; echo c >> chain.txt"
depends_on = ["b"]
[tasks.d]
kind = "shell"
command = "sleep 0.5; echo d >> chain.txt"
depends_on = ["c"]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_database_restart_mid_run_loses_nothing_and_declares_no_one_dead() {
    let Some(pg) = crate::support::postgres_db().await else {
        return;
    };
    let mut c = Cluster::new(&pg.url, &[("chain", CHAIN)]).await;
    c.start("scheduler", &["scheduler"], None);
    c.start("worker", &["worker"], None);
    c.recorded("chain").await;
    trigger(&c, "chain");
    let db_name = pg.url.rsplit('/').next().expect("db name").to_string();
    // What a PostgreSQL restart does to its clients, three times during the run.
    let admin = Db::connect(&std::env::var("WEFT_TEST_POSTGRES_URL").expect("admin url"))
        .await
        .expect("admin");
    let sql = |s: String| {
        let admin = admin.clone();
        async move { admin.conn.execute_unprepared(&s).await.expect(&s) }
    };
    for cut in 0..3 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        // The second time the database stays down for 3 s, refusing new connections,
        // as a restarting server does.
        let down = cut == 1;
        if down {
            sql(format!(
                "ALTER DATABASE \"{db_name}\" ALLOW_CONNECTIONS false"
            ))
            .await;
        }
        sql(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db_name}' AND pid <> pg_backend_pid()"
        ))
        .await;
        if down {
            tokio::time::sleep(Duration::from_secs(3)).await;
            sql(format!(
                "ALTER DATABASE \"{db_name}\" ALLOW_CONNECTIONS true"
            ))
            .await;
        }
    }
    // The test's own connection was cut too: a new one.
    let c2 = Db::connect(&pg.url).await.expect("reconnect");
    let finished = |db: Db| async move {
        db.conn
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT state FROM dag_run",
            ))
            .await
            .ok()
            .and_then(|r| r.first().and_then(|r| r.try_get_by_index::<String>(0).ok()))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let state = loop {
        if let Some(s @ ("success" | "failed")) = finished(c2.clone()).await.as_deref() {
            break s.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the run did not finish\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(state, "success", "{}", c.logs());
    // They said so, and nobody was declared dead for the database's silence.
    let logs = c.logs();
    assert!(logs.contains("reconnecting"), "{logs}");
    assert!(!logs.contains("declared dead"), "{logs}");
    let chain = std::fs::read_to_string(c.path().join("dags").join("chain.txt")).expect("chain");
    assert_eq!(chain, "a\nb\nc\nd\n", "{}", c.logs());
    c.db = c2;
    assert_eq!(
        c.int("SELECT COUNT(*) FROM task_try").await,
        4,
        "one try per task\n{}",
        c.logs()
    );
    drop(c);
    pg.cleanup().await;
}

// ---- In-process: the pieces the processes above are made of, on both backends. ----

use std::sync::Arc;

use crate::support::{Env, backends, utc};
use weft::db::{dags, lease, tasks as db_tasks};
use weft::scheduler::{Clock, EngineOptions, ManualClock};

const HOURLY: &str = "schedule = \"0 * * * *\"\nstart_date = \"2026-05-01T00:00:00Z\"\ncatchup = false\n[tasks.t]\nkind = \"shell\"\ncommand = \"true\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn the_scheduler_plans_only_due_dags_and_keeps_next_run_after() {
    for t in backends().await {
        let t0 = utc(2026, 5, 1, 10, 30);
        let clock = ManualClock::new(t0);
        let options = EngineOptions {
            cron: true,
            watch_folder: false,
            execute: false,
            poll_interval: Duration::from_millis(100),
            ..Default::default()
        };
        let env = Env::start_with(
            &t,
            &[("h1", HOURLY), ("h2", HOURLY), ("manual", SLOW)],
            |_| {},
            Some(clock.clone() as Arc<dyn Clock>),
            options,
        )
        .await;
        let c = &env.db.conn;
        env.engine.tick().await.expect("tick");
        assert!(env.engine.is_leader(), "the only scheduler leads");
        // Each hourly DAG got the interval 09:00-10:00 and is next due at 11:00; the
        // unscheduled DAG is never due.
        for d in ["h1", "h2"] {
            let row = dags::get_dag(c, d).await.expect("dag").expect("row");
            assert_eq!(row.next_run_after, Some(utc(2026, 5, 1, 11, 0)), "{d}");
        }
        let manual = dags::get_dag(c, "manual").await.expect("dag").expect("row");
        assert_eq!(manual.next_run_after, Some(dags::never()));
        assert!(
            dags::due_dags(c, t0, 100).await.expect("due").is_empty(),
            "nothing is due until 11:00"
        );
        assert_eq!(
            dags::earliest_next_run(c).await.expect("next"),
            Some(utc(2026, 5, 1, 11, 0))
        );
        // Paused DAGs are not due; unpausing plans the DAG again at the next pass.
        weft::scheduler::commands::set_paused(&env.db, "h2", true, None)
            .await
            .expect("pause");
        let t1 = utc(2026, 5, 1, 11, 0);
        clock.set(t1);
        assert_eq!(
            dags::due_dags(c, t1, 100).await.expect("due"),
            vec!["h1".to_string()]
        );
        env.engine.tick().await.expect("tick");
        let runs_of = |d: &'static str| {
            let db = env.db.clone();
            async move {
                weft::db::runs::list_runs(
                    &db.conn,
                    &weft::db::runs::RunFilter {
                        dag_id: Some(d.into()),
                        limit: 100,
                        ..Default::default()
                    },
                )
                .await
                .expect("runs")
                .len()
            }
        };
        assert_eq!(runs_of("h1").await, 2);
        assert_eq!(runs_of("h2").await, 1, "paused: no new run");
        // The batched reads the planner uses.
        let ids = vec!["h1".to_string(), "h2".to_string(), "manual".to_string()];
        let latest = weft::db::runs::latest_scheduled_of(c, &ids)
            .await
            .expect("latest");
        assert_eq!(latest.get("h1"), Some(&utc(2026, 5, 1, 10, 0)));
        assert_eq!(latest.get("h2"), Some(&utc(2026, 5, 1, 9, 0)));
        assert!(!latest.contains_key("manual"));
        let active = weft::db::runs::count_runs_of(
            c,
            &ids,
            &[weft::db::RunState::Queued, weft::db::RunState::Running],
        )
        .await
        .expect("active");
        assert_eq!((active.get("h1"), active.get("h2")), (Some(&2), Some(&1)));
        weft::scheduler::commands::set_paused(&env.db, "h2", false, None)
            .await
            .expect("unpause");
        assert_eq!(
            dags::get_dag(c, "h2")
                .await
                .expect("dag")
                .expect("row")
                .next_run_after,
            None,
            "unpausing asks for planning"
        );
        env.engine.tick().await.expect("tick");
        // catchup = false: the latest interval only, once.
        assert_eq!(runs_of("h2").await, 2);
        env.engine.tick().await.expect("tick");
        assert_eq!(runs_of("h2").await, 2, "no interval twice");
        env.stop().await;
        t.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_holder_per_lease_until_it_expires_or_its_holder_is_dead() {
    for t in backends().await {
        let c = &t.db.conn;
        let ttl = Duration::from_secs(10);
        let t0 = utc(2026, 5, 1, 10, 0);
        assert!(lease::hold(c, "x", "a", t0, ttl).await.expect("a"));
        assert!(!lease::hold(c, "x", "b", t0, ttl).await.expect("b"));
        // Renewal by the holder moves the expiry.
        let t1 = t0 + chrono::Duration::seconds(8);
        assert!(lease::hold(c, "x", "a", t1, ttl).await.expect("renew"));
        assert!(
            !lease::hold(c, "x", "b", t0 + chrono::Duration::seconds(15), ttl)
                .await
                .expect("b")
        );
        // Expired: the next one takes it.
        let t2 = t1 + chrono::Duration::seconds(11);
        assert!(lease::hold(c, "x", "b", t2, ttl).await.expect("takeover"));
        assert!(!lease::hold(c, "x", "a", t2, ttl).await.expect("a lost it"));
        // A take-over names the holder it replaces: only one of two takers wins.
        assert!(
            lease::take_over(c, "x", "b", "c", t2, ttl)
                .await
                .expect("c")
        );
        assert!(
            !lease::take_over(c, "x", "b", "d", t2, ttl)
                .await
                .expect("d")
        );
        lease::release(c, "x", "c").await.expect("release");
        assert!(lease::hold(c, "x", "d", t2, ttl).await.expect("free"));
        t.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_claim_only_the_queues_they_serve() {
    let dag = "schedule = \"none\"\n[tasks.cpu]\nkind = \"shell\"\ncommand = \"true\"\n[tasks.gpu]\nkind = \"shell\"\ncommand = \"true\"\nqueue = \"gpu\"\n";
    for t in backends().await {
        let options = EngineOptions {
            cron: false,
            watch_folder: false,
            queues: vec!["default".into()],
            poll_interval: Duration::from_millis(100),
            ..Default::default()
        };
        let env = Env::start_with(&t, &[("q", dag)], |_| {}, None, options).await;
        let run = env.trigger("q").await;
        env.wait_task(
            run.id,
            "cpu",
            weft::db::TaskState::Success,
            Duration::from_secs(30),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let tis = db_tasks::of_run(&env.db.conn, run.id).await.expect("tis");
        let gpu = tis.iter().find(|t| t.task_id == "gpu").expect("gpu");
        assert_eq!(
            (gpu.state, gpu.queue.as_str()),
            (weft::db::TaskState::Scheduled, "gpu"),
            "a default-queue worker leaves gpu work alone"
        );
        // A gpu worker takes it.
        let gpu_worker = weft::scheduler::Engine::new(
            env.db.clone(),
            env.config.clone(),
            env.registry.clone(),
            Arc::new(weft::scheduler::SystemClock),
            EngineOptions {
                cron: false,
                schedule: false,
                watch_folder: false,
                queues: vec!["gpu".into()],
                poll_interval: Duration::from_millis(100),
                ..Default::default()
            },
        )
        .await
        .expect("gpu worker");
        assert_eq!(gpu_worker.claim_and_spawn().await.expect("claim"), 1);
        assert_eq!(
            env.wait_run(run.id, Duration::from_secs(30)).await,
            weft::db::RunState::Success
        );
        env.stop().await;
        t.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_made_elsewhere_wakes_a_worker_through_postgres_not_a_poll() {
    let Some(t) = crate::support::postgres_db().await else {
        return;
    };
    // The engine polls once a minute: only a notification can start the task sooner.
    let options = EngineOptions {
        cron: false,
        watch_folder: false,
        poll_interval: Duration::from_secs(60),
        ..Default::default()
    };
    let quick = "schedule = \"none\"\n[tasks.a]\nkind = \"shell\"\ncommand = \"true\"\n[tasks.b]\nkind = \"shell\"\ncommand = \"true\"\ndepends_on = [\"a\"]\n";
    let env = Env::start_with(&t, &[("quick", quick)], |_| {}, None, options).await;
    // Let the engine make its first pass and start listening.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Another process (its own connection) triggers the run.
    let other = Db::connect(&t.url).await.expect("other process");
    let (dag, vid) = env.registry.current("quick").expect("dag");
    let run = weft::scheduler::commands::trigger(
        &other,
        &dag,
        vid,
        &Default::default(),
        serde_json::Value::Null,
        None,
        chrono::Utc::now(),
    )
    .await
    .expect("trigger");
    assert_eq!(
        env.wait_run(run.id, Duration::from_secs(20)).await,
        weft::db::RunState::Success,
        "the run finished long before the next poll"
    );
    env.stop().await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn web_requests_beyond_capacity_get_a_fast_503_with_retry_after() {
    use tower::ServiceExt;
    let t = crate::support::sqlite_db().await;
    let env = Env::start(&t, &[("slow", SLOW)], |c| c.web_concurrency = 1, None).await;
    let state = weft::web::AppState::new(
        env.db.clone(),
        env.config.clone(),
        env.registry.clone(),
        Some(env.engine.clone()),
    )
    .await
    .expect("state");
    let busy = state
        .admission
        .clone()
        .acquire_owned()
        .await
        .expect("permit");
    let app = weft::web::app(state);
    let get = |path: &str| {
        axum::http::Request::builder()
            .uri(path)
            .body(axum::body::Body::empty())
            .expect("request")
    };
    let started = Instant::now();
    let res = app.clone().oneshot(get("/dags")).await.expect("response");
    assert_eq!(res.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "1");
    assert!(started.elapsed() < Duration::from_secs(10));
    let res = app
        .clone()
        .oneshot(get("/api/v1/dags"))
        .await
        .expect("response");
    assert_eq!(res.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("body");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"]["code"], "busy");
    // Health is always answered.
    let res = app.clone().oneshot(get("/health")).await.expect("response");
    assert!(res.headers().get("retry-after").is_none());
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("body");
    assert!(
        String::from_utf8_lossy(&body).contains("\"scheduler_heartbeat_age_seconds\""),
        "{}",
        String::from_utf8_lossy(&body)
    );
    drop(busy);
    let res = app.oneshot(get("/dags")).await.expect("response");
    assert_eq!(res.status(), axum::http::StatusCode::OK);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_schedulers_starting_queued_runs_keep_max_active_runs() {
    let Some(t) = crate::support::postgres_db().await else {
        return;
    };
    let one = "schedule = \"none\"\nmax_active_runs = 1\n[tasks.a]\nkind = \"shell\"\ncommand = \"true\"\n";
    let options = EngineOptions {
        cron: false,
        schedule: false,
        execute: false,
        watch_folder: false,
        ..Default::default()
    };
    let env = Env::start_with(&t, &[("one", one)], |_| {}, None, options).await;
    let (dag, vid) = env.registry.current("one").expect("dag");
    let other = Db::connect(&t.url).await.expect("second scheduler");
    let running = |db: Db| async move {
        weft::db::runs::count_runs(&db.conn, "one", &[weft::db::RunState::Running])
            .await
            .expect("count")
    };
    for round in 0..10 {
        // One run running, two queued; the running one ends, and two schedulers race to
        // start the next.
        let mut made = Vec::new();
        for _ in 0..3 {
            made.push(
                weft::scheduler::commands::trigger(
                    &env.db,
                    &dag,
                    vid,
                    &Default::default(),
                    serde_json::Value::Null,
                    None,
                    chrono::Utc::now(),
                )
                .await
                .expect("trigger"),
            );
        }
        assert_eq!(running(env.db.clone()).await, 1, "round {round}");
        for r in &made {
            let _ = weft::scheduler::commands::mark_run(
                &env.db,
                &env.registry,
                "one",
                &r.run_id,
                weft::db::RunState::Success,
                "test",
                chrono::Utc::now(),
            )
            .await;
            let now = chrono::Utc::now();
            let (a, b) = tokio::join!(
                weft::scheduler::commands::start_queued(&env.db, &dag, vid, now),
                weft::scheduler::commands::start_queued(&other, &dag, vid, now)
            );
            a.expect("a");
            b.expect("b");
            assert!(
                running(env.db.clone()).await <= 1,
                "round {round}: max_active_runs = 1 was exceeded"
            );
        }
    }
    env.stop().await;
    t.cleanup().await;
}

/// A soak DAG of 20 tasks in a binary tree (task i depends on task (i-1)/2), one daily
/// run due. `fail_once` tasks fail their first try and are retried; `fail_always`
/// tasks fail for good (their subtrees end `upstream_failed`, the run `failed`). Every
/// third task takes a slot of the `soak` pool.
fn soak_dag(fail_once: &[usize], fail_always: &[usize]) -> String {
    let start = chrono::Utc::now().date_naive() - chrono::Days::new(1);
    let mut s =
        format!("schedule = \"0 0 * * *\"\nstart_date = \"{start}T00:00:00Z\"\ncatchup = true\n");
    for i in 0..20 {
        let command = if fail_always.contains(&i) {
            "sleep 0.05; exit 3"
        } else if fail_once.contains(&i) {
            "sleep 0.05; test {{ try_number }} -gt 1"
        } else {
            "sleep 0.05"
        };
        // Retries also cover tries lost with a killed worker.
        let retries = if fail_always.contains(&i) { 0 } else { 5 };
        s.push_str(&format!(
            "[tasks.t{i}]\nkind = \"shell\"\ncommand = \"{command}\"\nretries = {retries}\nretry_delay = \"1s\"\n"
        ));
        if i % 3 == 0 {
            s.push_str("pool = \"soak\"\n");
        }
        if i > 0 {
            s.push_str(&format!("depends_on = [\"t{}\"]\n", (i - 1) / 2));
        }
    }
    s
}

/// xorshift64: the soak's choices, reproducible from the seed it prints.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

const SOAK_POOL_SLOTS: i64 = 3;

#[tokio::test(flavor = "multi_thread")]
async fn soak_two_schedulers_three_workers_random_failures_and_kills() {
    let Some(pg) = crate::support::postgres_db().await else {
        return;
    };
    // A new seed each run; WEFT_SOAK_SEED replays one.
    let seed = std::env::var("WEFT_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
        | 1;
    println!("soak seed {seed} (WEFT_SOAK_SEED replays it)");
    let mut rng = Rng(seed);
    let mut dags = Vec::new();
    let mut failing = 0;
    for d in 0..50 {
        let fail_once: Vec<usize> = (0..3).map(|_| rng.below(20)).collect();
        let fail_always: Vec<usize> = if d % 10 == 0 {
            failing += 1;
            vec![1 + rng.below(19)]
        } else {
            Vec::new()
        };
        dags.push((format!("soak_{d:02}"), soak_dag(&fail_once, &fail_always)));
    }
    let refs: Vec<(&str, &str)> = dags.iter().map(|(n, s)| (n.as_str(), s.as_str())).collect();
    let mut c = Cluster::new(&pg.url, &refs).await;
    let config = c.path().join("weft.toml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!("[pools]\nsoak = {SOAK_POOL_SLOTS}\n"));
    std::fs::write(&config, text).expect("config");
    // Each process on its own "host", so a killed one is found by its silence.
    let roles: [(&str, &[&str]); 5] = [
        ("s1", &["scheduler"]),
        ("s2", &["scheduler"]),
        ("w1", &["worker", "--concurrency", "6"]),
        ("w2", &["worker", "--concurrency", "6"]),
        ("w3", &["worker", "--concurrency", "6"]),
    ];
    let mut live: Vec<usize> = roles
        .iter()
        .map(|(name, args)| c.start(name, args, Some(&format!("host-{name}"))))
        .collect();
    // Kill a random process every 1-3 s, eight times, restarting it at once.
    let mut kills = Vec::new();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(1000 + 250 * rng.below(9) as u64)).await;
        let r = rng.below(roles.len());
        c.procs[live[r]].kill9();
        kills.push(roles[r].0);
        let (name, args) = roles[r];
        live[r] = c.start(
            &format!("{name}-{}", kills.len()),
            args,
            Some(&format!("host-{name}")),
        );
    }
    println!("killed {kills:?}");
    c.until("every run to end", Duration::from_secs(180), || async {
        c.int("SELECT COUNT(*) FROM dag_run").await == 50
            && c.int("SELECT COUNT(*) FROM dag_run WHERE state IN ('success', 'failed')")
                .await
                == 50
    })
    .await;
    // One run per DAG, each terminal with terminal task instances.
    assert_eq!(
        c.int("SELECT COUNT(*) FROM dag_run WHERE state = 'failed'")
            .await,
        failing,
        "seed {seed}"
    );
    assert_eq!(
        c.int("SELECT COUNT(*) FROM task_instance WHERE state NOT IN ('success', 'failed', 'upstream_failed')")
            .await,
        0,
        "seed {seed}"
    );
    // Every succeeded task has exactly one successful try; no other has any.
    assert_eq!(
        c.int("SELECT COUNT(*) FROM task_instance ti WHERE (ti.state = 'success') <> \
               ((SELECT COUNT(*) FROM task_try t WHERE t.task_instance_id = ti.id AND t.state = 'success') = 1)")
            .await,
        0,
        "seed {seed}"
    );
    assert_eq!(
        c.int(
            "SELECT COUNT(*) FROM (SELECT task_instance_id FROM task_try WHERE state = 'success' \
               GROUP BY task_instance_id HAVING COUNT(*) > 1) x"
        )
        .await,
        0,
        "seed {seed}"
    );
    assert_eq!(
        c.int("SELECT COUNT(*) FROM task_try WHERE state = 'running' OR ended_at IS NULL")
            .await,
        0,
        "seed {seed}"
    );
    // The pool was never over its slots: replay the tries of its tasks in time order.
    let rows = c
        .rows(
            "SELECT t.started_at, t.ended_at FROM task_try t \
             JOIN task_instance ti ON ti.id = t.task_instance_id WHERE ti.pool = 'soak'",
        )
        .await;
    let mut events: Vec<(chrono::DateTime<chrono::Utc>, i64)> = Vec::new();
    for r in &rows {
        events.push((r.try_get_by_index(0).expect("start"), 1));
        events.push((r.try_get_by_index(1).expect("end"), -1));
    }
    // Ends before starts at the same instant: a slot freed and taken at once.
    events.sort();
    let (mut now, mut most) = (0i64, 0i64);
    for (_, d) in &events {
        now += d;
        most = most.max(now);
    }
    assert!(rows.len() >= 50 * 7, "{} pool tries", rows.len());
    assert!(
        most <= SOAK_POOL_SLOTS,
        "{most} tries of the soak pool at once (seed {seed})"
    );
    assert!(most >= 2, "the pool was never shared: {most}");
    let lost = c
        .int("SELECT COUNT(*) FROM task_try WHERE error LIKE '%heartbeat%'")
        .await;
    println!(
        "{} tries, {lost} lost with a killed worker, pool peak {most}/{SOAK_POOL_SLOTS}",
        c.int("SELECT COUNT(*) FROM task_try").await
    );
    drop(c);
    pg.cleanup().await;
}
