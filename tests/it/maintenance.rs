//! Retention, invariant checks and backups of the database of record, on SQLite and
//! PostgreSQL.

use std::time::Duration;

use chrono::Utc;
use sea_orm::ConnectionTrait;
use weft::db::maintenance;
use weft::db::{RunState, TaskState};
use weft::scheduler::commands;

use crate::support::{Env, backends, scalar, sqlite_db};

const LIMIT: Duration = Duration::from_secs(60);
const DAG: &str = "schedule = \"none\"\n[tasks.a]\nkind = \"shell\"\ncommand = \"echo a\"\n[tasks.b]\nkind = \"noop\"\ndepends_on = [\"a\"]\n";

#[tokio::test]
async fn clean_removes_old_history_in_batches_and_keeps_the_rest() {
    for t in backends().await {
        let env = Env::start(&t, &[("d", DAG)], |_| {}, None).await;
        let mut ids = Vec::new();
        for _ in 0..5 {
            let run = env.trigger("d").await;
            assert_eq!(env.wait_run(run.id, LIMIT).await, RunState::Success);
            ids.push(run.id);
        }
        // Three runs ended 100 days ago.
        let old: Vec<String> = ids[..3].iter().map(i64::to_string).collect();
        env.db
            .conn
            .execute_unprepared(&format!(
                "UPDATE dag_run SET ended_at = created_at - INTERVAL '100 days' WHERE id IN ({})",
                old.join(",")
            ))
            .await
            .or(env
                .db
                .conn
                .execute_unprepared(&format!(
                    "UPDATE dag_run SET ended_at = datetime(created_at, '-100 days') WHERE id IN ({})",
                    old.join(",")
                ))
                .await)
            .expect("age runs");
        let cutoff = Utc::now() - chrono::Duration::days(90);
        let preview = maintenance::clean_preview(&env.db.conn, cutoff)
            .await
            .expect("preview");
        assert_eq!(
            (preview.runs, preview.task_instances, preview.tries),
            (3, 6, 6)
        );
        assert!(preview.log_chunks >= 3);
        // A dry run deletes nothing.
        assert_eq!(scalar(&env.db, "SELECT COUNT(*) FROM dag_run").await, 5);
        let done = maintenance::clean(&env.db.conn, cutoff, 2, Duration::ZERO)
            .await
            .expect("clean");
        assert_eq!(
            (done.runs, done.task_instances, done.tries, done.log_chunks),
            (3, 6, 6, preview.log_chunks)
        );
        assert_eq!(scalar(&env.db, "SELECT COUNT(*) FROM dag_run").await, 2);
        assert_eq!(
            scalar(&env.db, "SELECT COUNT(*) FROM task_instance").await,
            4
        );
        assert_eq!(
            scalar(
                &env.db,
                "SELECT COUNT(*) FROM task_log WHERE task_try_id NOT IN (SELECT id FROM task_try)"
            )
            .await,
            0
        );
        // The kept runs still read fine, and a second clean finds nothing.
        let (_, _, log) = crate::support::task_log(&env.db, ids[4], "a").await;
        assert!(log.contains('a'));
        let again = maintenance::clean(&env.db.conn, cutoff, 2, Duration::ZERO)
            .await
            .expect("clean");
        assert_eq!(again.runs, 0);
        env.stop().await;
        t.cleanup().await;
    }
}

#[tokio::test]
async fn check_finds_broken_invariants_and_repair_mends_them_through_the_state_machine() {
    for t in backends().await {
        let env = Env::start(&t, &[("d", DAG)], |_| {}, None).await;
        let run = env.trigger("d").await;
        assert_eq!(env.wait_run(run.id, LIMIT).await, RunState::Success);
        let now = Utc::now();
        assert!(
            maintenance::check(&env.db.conn, now, Duration::from_secs(30))
                .await
                .expect("check")
                .is_empty()
        );
        // A finished run with a task left running on a worker that does not exist.
        env.db
            .conn
            .execute_unprepared(&format!(
                "UPDATE task_instance SET state = 'running', worker_id = 'ghost' WHERE dag_run_id = {} AND task_id = 'b'",
                run.id
            ))
            .await
            .expect("break");
        let problems = maintenance::check(&env.db.conn, now, Duration::from_secs(30))
            .await
            .expect("check");
        let kinds: Vec<&str> = problems.iter().map(|p| p.kind).collect();
        assert!(
            kinds.contains(&"orphaned_try") && kinds.contains(&"unfinished_task_in_finished_run"),
            "{problems:?}"
        );
        let repaired = commands::repair(&env.db, &env.registry, &problems, now)
            .await
            .expect("repair");
        assert!(repaired >= 1, "{problems:?}");
        let after = maintenance::check(&env.db.conn, Utc::now(), Duration::from_secs(30))
            .await
            .expect("check");
        assert!(after.is_empty(), "{after:?}");
        let b = env.states(run.id).await.get("b").copied();
        assert!(
            matches!(b, Some(TaskState::Failed | TaskState::Skipped)),
            "{b:?}"
        );
        env.stop().await;
        t.cleanup().await;
    }
}

#[tokio::test]
async fn backup_copies_a_live_sqlite_database() {
    let t = sqlite_db().await;
    let env = Env::start(&t, &[("d", DAG)], |_| {}, None).await;
    let run = env.trigger("d").await;
    assert_eq!(env.wait_run(run.id, LIMIT).await, RunState::Success);
    let file = env.dir.path().join("backup.db");
    maintenance::backup_sqlite(&env.db.conn, &file.display().to_string())
        .await
        .expect("backup");
    let copy = weft::db::Db::connect(&format!("sqlite://{}", file.display()))
        .await
        .expect("open backup");
    assert_eq!(scalar(&copy, "SELECT COUNT(*) FROM dag_run").await, 1);
    assert_eq!(scalar(&copy, "SELECT COUNT(*) FROM task_instance").await, 2);
    env.stop().await;
}
