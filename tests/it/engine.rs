//! The scheduler and executor end to end: runs, trigger rules, retries, timeouts,
//! pools, clears and DAG edits, on SQLite and (when available) PostgreSQL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use weft::db::{RunState, TaskState, dags, tasks};
use weft::scheduler::{Clock, ManualClock, commands};

use crate::support::{Env, backends, sqlite_db, utc};

const LIMIT: Duration = Duration::from_secs(60);

const CHAIN: &str = r#"
schedule = "none"
[params]
who = "world"
[tasks.a]
kind = "shell"
command = "echo a {{ ds }} {{ params.who }} $WEFT_TASK_ID"
[tasks.b]
kind = "shell"
command = "echo b"
depends_on = ["a"]
[tasks.c]
kind = "sql"
sql = "CREATE TABLE IF NOT EXISTS t (x INTEGER); INSERT INTO t VALUES (1);"
depends_on = ["b"]
"#;

#[tokio::test]
async fn a_chain_runs_in_order_with_templates_logs_and_sql() {
    for t in backends().await {
        let env = Env::start(&t, &[("chain", CHAIN)], |_| {}, None).await;
        let mut params = BTreeMap::new();
        params.insert("who".to_string(), serde_json::json!("weft"));
        let run = env.trigger_with("chain", params).await;
        assert_eq!(env.wait_run(run.id, LIMIT).await, RunState::Success);
        let tis = tasks::of_run(&env.db.conn, run.id).await.expect("tis");
        assert!(
            tis.iter()
                .all(|t| t.state == TaskState::Success && t.try_number == 1),
            "{tis:?}"
        );
        let by = |id: &str| tis.iter().find(|t| t.task_id == id).cloned().expect("task");
        // Dependencies ran in order.
        assert!(by("a").ended_at <= by("b").started_at && by("b").ended_at <= by("c").started_at);
        let tr = tasks::current_try(&env.db.conn, &by("a"))
            .await
            .expect("try")
            .expect("a try");
        let log = tasks::read_log(&env.db.conn, tr.id).await.expect("log");
        let ds = run.data_interval_start.format("%Y-%m-%d").to_string();
        assert!(log.contains(&format!("a {ds} weft a")), "{log}");
        env.stop().await;
        t.cleanup().await;
    }
}

const RULES: &str = r#"
schedule = "none"
[tasks.ok]
kind = "shell"
command = "true"
[tasks.bad]
kind = "shell"
command = "exit 3"
[tasks.all_success]
kind = "shell"
command = "true"
depends_on = ["ok", "bad"]
[tasks.after_upstream_failed]
kind = "shell"
command = "true"
depends_on = ["all_success"]
[tasks.all_done]
kind = "shell"
command = "true"
depends_on = ["ok", "bad"]
trigger_rule = "all_done"
[tasks.one_failed]
kind = "shell"
command = "true"
depends_on = ["ok", "bad"]
trigger_rule = "one_failed"
[tasks.one_success]
kind = "shell"
command = "true"
depends_on = ["ok", "bad"]
trigger_rule = "one_success"
[tasks.all_failed]
kind = "shell"
command = "true"
depends_on = ["bad"]
trigger_rule = "all_failed"
[tasks.none_failed]
kind = "shell"
command = "true"
depends_on = ["ok", "bad"]
trigger_rule = "none_failed"
[tasks.all_failed_skip]
kind = "shell"
command = "true"
depends_on = ["ok"]
trigger_rule = "all_failed"
[tasks.after_skip]
kind = "shell"
command = "true"
depends_on = ["all_failed_skip"]
[tasks.none_failed_after_skip]
kind = "shell"
command = "true"
depends_on = ["all_failed_skip", "ok"]
trigger_rule = "none_failed"
"#;

#[tokio::test]
async fn every_trigger_rule_end_to_end() {
    for t in backends().await {
        let env = Env::start(&t, &[("rules", RULES)], |_| {}, None).await;
        let run = env.trigger("rules").await;
        // "bad" is a failed leaf-side branch: the run fails.
        assert_eq!(env.wait_run(run.id, LIMIT).await, RunState::Failed);
        let s = env.states(run.id).await;
        let want = [
            ("ok", TaskState::Success),
            ("bad", TaskState::Failed),
            ("all_success", TaskState::UpstreamFailed),
            ("after_upstream_failed", TaskState::UpstreamFailed),
            ("all_done", TaskState::Success),
            ("one_failed", TaskState::Success),
            ("one_success", TaskState::Success),
            ("all_failed", TaskState::Success),
            ("none_failed", TaskState::UpstreamFailed),
            ("all_failed_skip", TaskState::Skipped),
            ("after_skip", TaskState::Skipped),
            ("none_failed_after_skip", TaskState::Success),
        ];
        for (task, state) in want {
            assert_eq!(s.get(task), Some(&state), "{task}: {s:?}");
        }
        let bad = tasks::of_run(&env.db.conn, run.id)
            .await
            .expect("tis")
            .into_iter()
            .find(|t| t.task_id == "bad")
            .expect("bad");
        assert_eq!(bad.exit_code, Some(3));
        assert_eq!(bad.error.as_deref(), Some("command exited with code 3"));
        env.stop().await;
        t.cleanup().await;
    }
}

#[tokio::test]
async fn retries_wait_with_exponential_backoff_capped_by_max_retry_delay() {
    let t = sqlite_db().await;
    let dag = r#"
schedule = "none"
[tasks.flaky]
kind = "shell"
command = "exit 1"
retries = 3
retry_delay = "10s"
retry_exponential_backoff = true
max_retry_delay = "25s"
"#;
    let t0 = utc(2026, 5, 1, 12, 0);
    let clock = ManualClock::new(t0);
    let env = Env::start(
        &t,
        &[("flaky", dag)],
        |_| {},
        Some(clock.clone() as Arc<dyn Clock>),
    )
    .await;
    let run = env.trigger("flaky").await;
    let ti = |env: &Env| {
        let db = env.db.clone();
        let run_id = run.id;
        async move {
            tasks::of_run(&db.conn, run_id)
                .await
                .expect("tis")
                .remove(0)
        }
    };
    // (seconds after the failure to wait, expected delay before the next try)
    let mut now = t0;
    for (try_number, delay) in [(1, 10), (2, 20), (3, 25)] {
        env.engine.tick().await.expect("tick");
        env.wait_task(run.id, "flaky", TaskState::UpForRetry, LIMIT)
            .await;
        let x = ti(&env).await;
        assert_eq!(x.try_number, try_number);
        assert_eq!(
            x.next_retry_at,
            Some(now + chrono::Duration::seconds(delay)),
            "delay after try {try_number}"
        );
        // One second early: still waiting.
        clock.set(now + chrono::Duration::seconds(delay - 1));
        env.engine.tick().await.expect("tick");
        assert_eq!(ti(&env).await.state, TaskState::UpForRetry);
        now += chrono::Duration::seconds(delay);
        clock.set(now);
    }
    env.engine.tick().await.expect("tick");
    assert_eq!(env.wait_run(run.id, LIMIT).await, RunState::Failed);
    let x = ti(&env).await;
    assert_eq!(
        (x.state, x.try_number, x.max_tries),
        (TaskState::Failed, 4, 4)
    );
    assert_eq!(
        tasks::tries_of(&env.db.conn, x.id)
            .await
            .expect("tries")
            .len(),
        4,
        "one row per try"
    );
    env.stop().await;
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let t = sqlite_db().await;
    let dag = r#"
schedule = "none"
[tasks.slow]
kind = "shell"
timeout = "1s"
# The shell and its child ignore SIGTERM, so only the SIGKILL escalation stops them.
command = "trap '' TERM; sleep 60 & echo $! > child.pid; wait"
"#;
    let env = Env::start(&t, &[("slow", dag)], |_| {}, None).await;
    let run = env.trigger("slow").await;
    assert_eq!(env.wait_run(run.id, LIMIT).await, RunState::Failed);
    let ti = tasks::of_run(&env.db.conn, run.id)
        .await
        .expect("tis")
        .remove(0);
    assert_eq!(
        ti.error.as_deref(),
        Some("timed out after 1s; the process group was killed")
    );
    let pid: i32 = std::fs::read_to_string(env.dags_dir().join("child.pid"))
        .expect("child pid")
        .trim()
        .parse()
        .expect("pid");
    // The grandchild is gone (reaped by init after SIGKILL): give init a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while weft::process::pid_alive(pid) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !weft::process::pid_alive(pid),
        "child process {pid} survived the timeout"
    );
    env.stop().await;
}

/// Largest number of overlapping [start, end) intervals.
fn max_overlap(mut spans: Vec<(i64, i64)>) -> usize {
    let mut events: Vec<(i64, i32)> = Vec::new();
    for (s, e) in spans.drain(..) {
        events.push((s, 1));
        events.push((e, -1));
    }
    // Ends sort before starts at the same instant.
    events.sort();
    let (mut cur, mut best) = (0i32, 0i32);
    for (_, d) in events {
        cur += d;
        best = best.max(cur);
    }
    best as usize
}

#[tokio::test]
async fn pools_and_max_active_tasks_hold_under_a_200_task_fan_out() {
    let mut src = String::from(
        "schedule = \"none\"\nmax_active_tasks = 5\n[tasks.root]\nkind = \"shell\"\ncommand = \"true\"\n",
    );
    for i in 0..200 {
        let pool = if i % 2 == 0 { "pool = \"small\"\n" } else { "" };
        src.push_str(&format!(
            "[tasks.t{i}]\nkind = \"shell\"\ncommand = \"true\"\ndepends_on = [\"root\"]\n{pool}"
        ));
    }
    let all: Vec<String> = (0..200).map(|i| format!("\"t{i}\"")).collect();
    src.push_str(&format!(
        "[tasks.join]\nkind = \"shell\"\ncommand = \"true\"\ndepends_on = [{}]\n",
        all.join(", ")
    ));
    for t in backends().await {
        let env = Env::start(
            &t,
            &[("fan", &src)],
            |c| {
                c.pools
                    .insert("small".into(), weft::config::PoolConfig::Slots(2));
                c.parallelism = 16;
            },
            None,
        )
        .await;
        let run = env.trigger("fan").await;
        assert_eq!(
            env.wait_run(run.id, Duration::from_secs(120)).await,
            RunState::Success
        );
        let tis = tasks::of_run(&env.db.conn, run.id).await.expect("tis");
        assert_eq!(tis.len(), 202);
        let span = |t: &weft::db::entities::task_instance::Model| {
            // The slot is held from the claim to the commit of the try's end, which contains
            // [started_at, ended_at]: both stamps are taken inside that window.
            (
                t.started_at.expect("started").timestamp_micros(),
                t.ended_at.expect("ended").timestamp_micros(),
            )
        };
        let small: Vec<_> = tis.iter().filter(|t| t.pool == "small").map(span).collect();
        let all: Vec<_> = tis.iter().map(span).collect();
        assert_eq!(small.len(), 100);
        let (small_max, all_max) = (max_overlap(small), max_overlap(all));
        assert!(
            small_max <= 2,
            "pool \"small\" (2 slots) exceeded: {small_max} at once"
        );
        assert!(
            all_max <= 5,
            "max_active_tasks = 5 exceeded: {all_max} at once"
        );
        // The limits are reached, not just respected by running one at a time.
        assert!(
            all_max >= 3,
            "fan-out ran with too little concurrency: {all_max}"
        );
        env.stop().await;
        t.cleanup().await;
    }
}

#[tokio::test]
async fn max_active_runs_queues_the_rest() {
    let t = sqlite_db().await;
    let dag = "schedule = \"none\"\nmax_active_runs = 2\n[tasks.a]\nkind = \"shell\"\ncommand = \"sleep 0.2\"\n";
    let env = Env::start(&t, &[("limited", dag)], |_| {}, None).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(env.trigger("limited").await.id);
    }
    for id in &ids {
        assert_eq!(env.wait_run(*id, LIMIT).await, RunState::Success);
    }
    let runs = weft::db::runs::list_runs(
        &env.db.conn,
        &weft::db::runs::RunFilter {
            dag_id: Some("limited".into()),
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .expect("runs");
    let spans: Vec<_> = runs
        .iter()
        .map(|r| {
            (
                r.started_at.expect("s").timestamp_micros(),
                r.ended_at.expect("e").timestamp_micros(),
            )
        })
        .collect();
    assert!(
        max_overlap(spans) <= 2,
        "more than max_active_runs = 2 runs ran at once"
    );
    env.stop().await;
}

#[tokio::test]
async fn clear_with_downstream_reruns_exactly_those_tasks() {
    for t in backends().await {
        let dag = "schedule = \"none\"\n[tasks.a]\nkind = \"shell\"\ncommand = \"true\"\n[tasks.b]\nkind = \"shell\"\ncommand = \"true\"\ndepends_on = [\"a\"]\n[tasks.c]\nkind = \"shell\"\ncommand = \"true\"\ndepends_on = [\"b\"]\n[tasks.d]\nkind = \"shell\"\ncommand = \"true\"\ndepends_on = [\"a\"]\n";
        let env = Env::start(&t, &[("clearme", dag)], |_| {}, None).await;
        let run = env.trigger("clearme").await;
        assert_eq!(env.wait_run(run.id, LIMIT).await, RunState::Success);
        let cleared = commands::clear(
            &env.db,
            &env.registry,
            "clearme",
            &run.run_id,
            &["b".into()],
            &commands::Scope::downstream(true),
            Utc::now(),
        )
        .await
        .expect("clear");
        assert_eq!(
            cleared.iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["b", "c"]
        );
        env.engine.wake();
        // The run goes back to work and finishes again.
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            let tis = tasks::of_run(&env.db.conn, run.id).await.expect("tis");
            let r = weft::db::runs::get_run(&env.db.conn, run.id)
                .await
                .expect("run")
                .expect("run");
            if r.state == RunState::Success
                && tis.iter().all(|t| t.state == TaskState::Success)
                && tis.iter().any(|t| t.try_number == 2)
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "cleared run did not finish: {tis:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let tries: BTreeMap<String, i32> = tasks::of_run(&env.db.conn, run.id)
            .await
            .expect("tis")
            .into_iter()
            .map(|t| (t.task_id, t.try_number))
            .collect();
        assert_eq!(
            tries,
            [
                ("a".into(), 1),
                ("b".into(), 2),
                ("c".into(), 2),
                ("d".into(), 1)
            ]
            .into()
        );
        // Unknown tasks are named.
        let err = commands::clear(
            &env.db,
            &env.registry,
            "clearme",
            &run.run_id,
            &["bb".into()],
            &commands::Scope::default(),
            Utc::now(),
        )
        .await
        .expect_err("unknown");
        assert!(
            err.to_string()
                .contains("no task \"bb\" (did you mean \"b\"?)"),
            "{err}"
        );
        env.stop().await;
        t.cleanup().await;
    }
}

#[tokio::test]
async fn a_broken_edit_keeps_the_last_good_version_running() {
    let t = sqlite_db().await;
    let good = "schedule = \"none\"\n[tasks.a]\nkind = \"shell\"\ncommand = \"echo v1\"\n";
    let env = Env::start(&t, &[("edit", good)], |_| {}, None).await;
    let (_, v1) = env.registry.current("edit").expect("loaded");
    let path = env.dags_dir().join("edit.toml");
    std::fs::write(
        &path,
        "schedule = \"none\"\n[tasks.a]\nkind = \"shel\"\ncommand = \"echo v2\"\n",
    )
    .expect("write");
    let report = env.registry.sync(&env.db, Utc::now()).await.expect("sync");
    assert_eq!(report.errors.len(), 1);
    assert!(
        report.errors[0].1.contains("unknown kind \"shel\""),
        "{:?}",
        report.errors
    );
    let errors = dags::import_errors(&env.db.conn)
        .await
        .expect("import errors");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].message.contains("edit.toml:3:8"),
        "{}",
        errors[0].message
    );
    // The last good version is still current and still runs.
    let (dag, v) = env.registry.current("edit").expect("still loaded");
    assert_eq!(v, v1);
    assert!(
        dag.task("a")
            .expect("a")
            .spec_of::<weft::kinds::shell::ShellSpec>()
            .is_some_and(|s| s.command == "echo v1")
    );
    let run = env.trigger("edit").await;
    assert_eq!(env.wait_run(run.id, LIMIT).await, RunState::Success);
    // A fix is a new version; the import error goes away.
    std::fs::write(&path, "schedule = \"none\"\n[tasks.a]\nkind = \"shell\"\ncommand = \"echo v2\"\n[tasks.b]\nkind = \"shell\"\ncommand = \"true\"\n").expect("write");
    let report = env.registry.sync(&env.db, Utc::now()).await.expect("sync");
    assert!(report.errors.is_empty());
    assert_eq!(report.new_versions, vec!["edit".to_string()]);
    let (_, v2) = env.registry.current("edit").expect("loaded");
    assert_ne!(v1, v2);
    assert!(
        dags::import_errors(&env.db.conn)
            .await
            .expect("errors")
            .is_empty()
    );
    // The old run keeps the version it ran with.
    let old = weft::db::runs::get_run(&env.db.conn, run.id)
        .await
        .expect("run")
        .expect("run");
    assert_eq!(old.dag_version_id, v1);
    env.stop().await;
}

/// The SQL text a DAG version's task runs.
fn sql_of(dag: &weft::dag::Dag, task: &str) -> String {
    let t = dag.task(task).expect("task");
    match t.spec_of::<weft::kinds::sql::SqlSpec>() {
        Some(s) => s.sql.clone(),
        None => panic!("not a sql task: {:?}", t.spec),
    }
}

#[tokio::test]
async fn a_version_is_its_whole_bundle_before_and_after_a_restart() {
    let t = sqlite_db().await;
    let other = "schedule = \"none\"\n[tasks.a]\nkind = \"noop\"\n";
    let env = Env::with_warehouse(&t, &[("other", other)]).await;
    let dags_dir = env.dags_dir();
    let sql = dags_dir.join("q.sql");
    let toml = dags_dir.join("versioned.toml");
    // Modification times are kept an hour old throughout: no clock may be needed to see
    // an edit.
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    let write = |path: &std::path::Path, text: &str| {
        std::fs::write(path, text).expect("write");
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(old))
            .expect("set mtime");
    };
    write(
        &sql,
        "CREATE TABLE IF NOT EXISTS marks (v TEXT); INSERT INTO marks VALUES ('v1');",
    );
    write(
        &toml,
        "schedule = \"none\"\n[tasks.q]\nkind = \"sql\"\nfile = \"q.sql\"\n",
    );
    let report = env.registry.sync(&env.db, Utc::now()).await.expect("sync");
    assert_eq!(report.new_versions, vec!["versioned".to_string()]);
    let (_, v1) = env.registry.current("versioned").expect("loaded");
    // Nothing changed: no new version.
    let report = env.registry.sync(&env.db, Utc::now()).await.expect("sync");
    assert!(report.new_versions.is_empty(), "{report:?}");

    // Only the SQL file changes, with the same modification time.
    write(
        &sql,
        "CREATE TABLE IF NOT EXISTS marks (v TEXT); INSERT INTO marks VALUES ('v2');",
    );
    let report = env.registry.sync(&env.db, Utc::now()).await.expect("sync");
    assert_eq!(report.new_versions, vec!["versioned".to_string()]);
    let (current, v2) = env.registry.current("versioned").expect("loaded");
    assert_ne!(v1, v2);
    assert!(sql_of(&current, "q").contains("'v2'"));

    // A restart: a fresh registry reads each version from its stored bundle, never from
    // the files on disk, so version 1 still runs the SQL it was recorded with.
    let fresh = weft::scheduler::Registry::new(
        dags_dir.clone(),
        weft::dag::ValidationContext::of(&env.config),
    );
    let d1 = fresh.version(&env.db, v1).await.expect("db").expect("v1");
    assert!(sql_of(&d1, "q").contains("'v1'"), "{}", sql_of(&d1, "q"));
    let d2 = fresh.version(&env.db, v2).await.expect("db").expect("v2");
    assert!(sql_of(&d2, "q").contains("'v2'"));
    // Even with the file gone.
    std::fs::remove_file(&sql).expect("rm");
    let fresh =
        weft::scheduler::Registry::new(dags_dir, weft::dag::ValidationContext::of(&env.config));
    let d1 = fresh.version(&env.db, v1).await.expect("db").expect("v1");
    assert!(sql_of(&d1, "q").contains("'v1'"));
    // The stored version lists the file.
    let stored = dags::get_version(&env.db.conn, v2)
        .await
        .expect("db")
        .expect("row");
    assert!(stored.files.contains("q.sql"), "{}", stored.files);
    env.stop().await;
}

#[tokio::test]
async fn callbacks_fire_with_the_context() {
    let t = sqlite_db().await;
    let dag = r#"
schedule = "none"
on_failure = "sleep 300 & echo $! > callback_child.pid; echo run $WEFT_STATE > run_failed.txt"
[tasks.boom]
kind = "shell"
command = "exit 2"
on_failure = { command = "echo '{{ task_id }} {{ state }} {{ error }}' > task_failed.txt" }
"#;
    let env = Env::start(&t, &[("cb", dag)], |_| {}, None).await;
    let run = env.trigger("cb").await;
    assert_eq!(env.wait_run(run.id, LIMIT).await, RunState::Failed);
    let read = |name: &str| {
        let p = env.dags_dir().join(name);
        async move {
            for _ in 0..250 {
                if let Ok(s) = std::fs::read_to_string(&p)
                    && !s.is_empty()
                {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("callback did not write {}", p.display());
        }
    };
    // Callbacks run in the DAG's folder, like its tasks.
    assert_eq!(
        read("task_failed.txt").await.trim(),
        "boom failed command exited with code 2"
    );
    assert_eq!(read("run_failed.txt").await.trim(), "run failed");
    // A callback runs like a task: what it leaves in the background is stopped with it.
    let pid: i32 = read("callback_child.pid")
        .await
        .trim()
        .parse()
        .expect("pid");
    let mut alive = true;
    for _ in 0..150 {
        alive = weft::process::pid_alive(pid);
        if !alive {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !alive,
        "the callback's background process {pid} outlived it"
    );
    env.stop().await;
}

/// Marking a task success reopens its run without rewriting the run's first start;
/// clearing leaves no stale timing on the task instance (its tries keep theirs).
#[tokio::test]
async fn marks_and_clears_keep_history_honest() {
    let t = sqlite_db().await;
    let dag = "schedule = \"none\"\n[tasks.a]\nkind = \"shell\"\ncommand = \"sleep 0.3; exit 1\"\n";
    let env = Env::start(&t, &[("hist", dag)], |_| {}, None).await;
    let run = env.trigger("hist").await;
    assert_eq!(env.wait_run(run.id, LIMIT).await, RunState::Failed);
    let first = weft::db::runs::get_run(&env.db.conn, run.id)
        .await
        .expect("q")
        .expect("run");
    let started = first.started_at.expect("started");
    commands::mark_task(
        &env.db,
        &env.registry,
        "hist",
        &run.run_id,
        "a",
        TaskState::Success,
        &commands::Scope::default(),
        Utc::now(),
    )
    .await
    .expect("mark");
    let deadline = tokio::time::Instant::now() + LIMIT;
    let after = loop {
        let r = weft::db::runs::get_run(&env.db.conn, run.id)
            .await
            .expect("q")
            .expect("run");
        if r.state == RunState::Success || tokio::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(after.state, RunState::Success);
    assert_eq!(
        after.started_at,
        Some(started),
        "the run's first start was rewritten"
    );
    assert!(after.ended_at.is_some_and(|e| e > started));
    // Clear the task with the DAG paused, so it stays cleared: no old start or duration.
    commands::set_paused(&env.db, "hist", true, None)
        .await
        .expect("pause");
    commands::clear(
        &env.db,
        &env.registry,
        "hist",
        &run.run_id,
        &["a".into()],
        &commands::Scope::default(),
        Utc::now(),
    )
    .await
    .expect("clear");
    let ti = tasks::of_run(&env.db.conn, run.id)
        .await
        .expect("tis")
        .remove(0);
    assert_eq!(
        (ti.started_at, ti.ended_at, ti.duration_ms),
        (None, None, None),
        "{ti:?}"
    );
    env.stop().await;
}

#[tokio::test]
async fn the_state_machine_holes_stay_closed() {
    use sea_orm::ConnectionTrait;
    for t in backends().await {
        let clock = ManualClock::new(utc(2026, 3, 1, 0, 0));
        let dag = "schedule = \"none\"\n[tasks.a]\nkind = \"noop\"\n[tasks.b]\nkind = \"noop\"\n[tasks.c]\nkind = \"noop\"\n";
        let env = Env::start(
            &t,
            &[("holes", dag)],
            |_| {},
            Some(clock.clone() as Arc<dyn Clock>),
        )
        .await;
        let run = env.trigger("holes").await;
        let tis = tasks::of_run(&env.db.conn, run.id).await.expect("tis");
        let id = |task: &str| tis.iter().find(|t| t.task_id == task).expect("ti").id;
        let set = |task_pk: i64, state: &str, worker: &str| {
            let db = env.db.clone();
            // A finished state carries its end (the database refuses one without).
            let ended = if ["success", "failed", "removed", "skipped"].contains(&state) {
                "updated_at"
            } else {
                "NULL"
            };
            let sql = format!(
                "UPDATE task_instance SET state = '{state}', worker_id = '{worker}', ended_at = {ended} WHERE id = {task_pk}"
            );
            async move { db.conn.execute_unprepared(&sql).await.expect("update") }
        };
        // unclaim is fenced by the worker that claimed.
        set(id("a"), "queued", "w1").await;
        assert!(
            !tasks::unclaim(&env.db.conn, id("a"), "w2", Utc::now())
                .await
                .expect("unclaim")
        );
        assert_eq!(env.states(run.id).await["a"], TaskState::Queued);
        assert!(
            tasks::unclaim(&env.db.conn, id("a"), "w1", Utc::now())
                .await
                .expect("unclaim")
        );
        assert_eq!(env.states(run.id).await["a"], TaskState::Scheduled);
        // A removed task cannot be marked.
        set(id("b"), "removed", "").await;
        let err = commands::mark_task(
            &env.db,
            &env.registry,
            "holes",
            &run.run_id,
            "b",
            TaskState::Success,
            &commands::Scope::default(),
            Utc::now(),
        )
        .await
        .expect_err("removed cannot be marked");
        assert!(err.to_string().contains("cannot be marked"), "{err}");
        assert_eq!(env.states(run.id).await["b"], TaskState::Removed);
        // Clear takes finished tasks only: a pending or scheduled one is left as it is.
        set(id("c"), "success", "").await;
        let cleared = commands::clear(
            &env.db,
            &env.registry,
            "holes",
            &run.run_id,
            &[],
            &commands::Scope::default(),
            Utc::now(),
        )
        .await
        .expect("clear");
        assert_eq!(cleared, vec!["b".to_string(), "c".to_string()]);
        // A rescue that lost its fence (the worker is not the one holding the try) writes
        // no log line and changes nothing.
        set(id("a"), "scheduled", "").await;
        let limits = tasks::ClaimLimits {
            dag_max_active: std::sync::Arc::new([("holes".to_string(), 16)].into_iter().collect()),
            capacity: 16,
            ..Default::default()
        };
        let claimed = tasks::claim(&env.db.conn, "w1", "h", &limits, Utc::now())
            .await
            .expect("claim");
        let ids: Vec<i64> = claimed.iter().map(|t| t.id).collect();
        let started = tasks::start_tries(&env.db.conn, &ids, "w1", "h", Utc::now())
            .await
            .expect("start");
        let a = started
            .iter()
            .find(|(s, _)| s.ti.task_id == "a")
            .expect("a started");
        let mut stale = a.0.ti.clone();
        stale.worker_id = Some("w-old".into());
        commands::rescue(&env.db, &env.registry, &stale, "gone", Utc::now())
            .await
            .expect("rescue");
        assert_eq!(
            env.states(run.id).await["a"],
            TaskState::Running,
            "the fence held"
        );
        assert_eq!(
            tasks::read_log(&env.db.conn, a.0.try_id)
                .await
                .expect("log"),
            ""
        );
        // The right worker's rescue fails the try and writes the line.
        commands::rescue(&env.db, &env.registry, &a.0.ti, "gone", Utc::now())
            .await
            .expect("rescue");
        assert_eq!(env.states(run.id).await["a"], TaskState::Failed);
        assert!(
            tasks::read_log(&env.db.conn, a.0.try_id)
                .await
                .expect("log")
                .contains("this try was lost: gone")
        );
        env.stop().await;
        t.cleanup().await;
    }
}

#[tokio::test]
async fn an_http_task_says_why_it_could_not_connect() {
    let t = sqlite_db().await;
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dag = format!(
        "schedule = \"none\"\n[tasks.ping]\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}/health\"\n"
    );
    let env = Env::start(&t, &[("ping", &dag)], |_| {}, None).await;
    let run = env.trigger("ping").await;
    assert_eq!(env.wait_run(run.id, LIMIT).await, RunState::Failed);
    let tis = tasks::of_run(&env.db.conn, run.id).await.expect("tis");
    let error = tis[0].error.clone().unwrap_or_default();
    assert!(
        error.to_lowercase().contains("connection refused"),
        "the cause is named: {error}"
    );
    env.stop().await;
}

#[tokio::test]
async fn a_log_keeps_stdout_and_stderr_in_the_order_written_with_a_time_on_each_line() {
    let t = sqlite_db().await;
    let command = "for i in 1 2 3 4 5 6 7 8 9 10; do echo out$i; echo err$i >&2; done";
    let dag =
        format!("schedule = \"none\"\n[tasks.mix]\nkind = \"shell\"\ncommand = \"{command}\"\n");
    let env = Env::start(&t, &[("mix", &dag)], |_| {}, None).await;
    let run = env.trigger("mix").await;
    assert_eq!(
        env.wait_run(run.id, Duration::from_secs(30)).await,
        RunState::Success
    );
    let (_, _, log) = crate::support::task_log(&env.db, run.id, "mix").await;
    let mut want = Vec::new();
    for i in 1..=10 {
        want.push(format!("out{i}"));
        want.push(format!("err{i}"));
    }
    let mut got = Vec::new();
    for line in log.lines() {
        let (stamp, text) = line.split_once(' ').expect("a time stamp, then the line");
        assert!(
            chrono::DateTime::parse_from_rfc3339(stamp).is_ok() && stamp.ends_with('Z'),
            "{line}"
        );
        // weft's own lines (the try's header) aside.
        if !text.starts_with("[weft]") {
            got.push(text.to_string());
        }
    }
    assert_eq!(got, want, "{log}");
    env.stop().await;
    t.cleanup().await;
}
