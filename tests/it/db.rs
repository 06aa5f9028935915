//! The database of record: migrations on both backends, CHECK constraints, unique
//! keys, and entities that round-trip.

use std::sync::Arc;

use chrono::Utc;
use sea_orm::{ConnectionTrait, EntityTrait};
use weft::dag::{ValidationContext, parse_dag};
use weft::db::entities::{dag_run, task_instance};
use weft::db::runs::{self, NewRun};
use weft::db::{RunState, RunType, TaskState, dags, machine, tasks};

use crate::support::{TestDb, backends, utc};

fn sample_dag() -> weft::dag::Dag {
    let src = "schedule = \"@daily\"\nstart_date = \"2026-01-01\"\n[tasks.a]\nkind = \"shell\"\ncommand = \"true\"\n[tasks.b]\nkind = \"shell\"\ncommand = \"true\"\ndepends_on = [\"a\"]\n";
    parse_dag(
        "sample.toml",
        std::path::Path::new("dags/sample.toml"),
        src,
        &ValidationContext::default(),
    )
    .expect("valid")
}

async fn roundtrip(t: &TestDb) {
    let db = &t.db;
    // Migrating twice is a no-op.
    db.migrate().await.expect("second migrate");
    let dag = sample_dag();
    let now = Utc::now();
    let v1 = dags::upsert_dag(&db.conn, &dag.record(), now)
        .await
        .expect("upsert");
    assert_eq!(
        dags::upsert_dag(&db.conn, &dag.record(), now)
            .await
            .expect("same source"),
        v1,
        "same source, same version"
    );
    let mut changed = dag.clone();
    changed.source_hash = "other".into();
    let mut bundle = (*changed.bundle).clone();
    bundle.toml.push_str("# edit\n");
    changed.bundle = Arc::new(bundle);
    let v2 = dags::upsert_dag(&db.conn, &changed.record(), now)
        .await
        .expect("new version");
    assert_ne!(v1, v2);
    let versions = dags::versions_of(&db.conn, "sample")
        .await
        .expect("versions");
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![2, 1]
    );

    let new = NewRun {
        dag_id: "sample".into(),
        run_id: runs::run_id_for(RunType::Scheduled, utc(2026, 1, 1, 0, 0)),
        run_type: RunType::Scheduled,
        logical_date: utc(2026, 1, 1, 0, 0),
        interval_start: utc(2026, 1, 1, 0, 0),
        interval_end: utc(2026, 1, 2, 0, 0),
        dag_version_id: v1,
        params: serde_json::json!({"k": 1}),
        conf: serde_json::json!({}),
    };
    let run = runs::insert_run(&db.conn, &dag.new_tasks(None), &new, now)
        .await
        .expect("insert")
        .expect("created");
    assert_eq!(run.state, RunState::Queued);
    assert_eq!(run.data_interval_end, utc(2026, 1, 2, 0, 0));
    assert_eq!(run.params, "{\"k\":1}");
    // Same logical date again, even as a backfill with another run_id: no duplicate.
    assert!(
        runs::insert_run(&db.conn, &dag.new_tasks(None), &new, now)
            .await
            .expect("dup")
            .is_none()
    );
    let backfill = NewRun {
        run_id: "backfill__x".into(),
        run_type: RunType::Backfill,
        ..new.clone()
    };
    assert!(
        runs::insert_run(&db.conn, &dag.new_tasks(None), &backfill, now)
            .await
            .expect("dup backfill")
            .is_none()
    );
    // A manual run at the same logical date does not collide.
    let manual = NewRun {
        run_id: "manual__x".into(),
        run_type: RunType::Manual,
        ..new.clone()
    };
    assert!(
        runs::insert_run(&db.conn, &dag.new_tasks(None), &manual, now)
            .await
            .expect("manual")
            .is_some()
    );

    let tis = tasks::of_run(&db.conn, run.id).await.expect("tis");
    assert_eq!(tis.len(), 2);
    assert!(
        tis.iter()
            .all(|t| t.state == TaskState::Pending && t.max_tries == 1)
    );
    let fetched = task_instance::Entity::find_by_id(tis[0].id)
        .one(&db.conn)
        .await
        .expect("find")
        .expect("row");
    assert_eq!(fetched, tis[0]);

    // Conditional transitions: the wrong expected state changes nothing.
    assert!(
        !runs::transition(
            &db.conn,
            &machine::RUN_FINISH,
            run.id,
            RunState::Success,
            now
        )
        .await
        .expect("t")
    );
    assert!(
        runs::transition(
            &db.conn,
            &machine::RUN_START,
            run.id,
            RunState::Running,
            now
        )
        .await
        .expect("t")
    );
    let got = dag_run::Entity::find_by_id(run.id)
        .one(&db.conn)
        .await
        .expect("find")
        .expect("row");
    assert_eq!(got.state, RunState::Running);
    assert!(got.started_at.is_some());

    // The CHECK constraint rejects a state the enum does not have.
    let bad = db
        .conn
        .execute_unprepared(&format!(
            "UPDATE task_instance SET state = 'exploded' WHERE id = {}",
            tis[0].id
        ))
        .await;
    assert!(
        bad.is_err(),
        "CHECK constraint must reject unknown task states"
    );
    let bad = db
        .conn
        .execute_unprepared(&format!(
            "UPDATE dag_run SET state = 'paused' WHERE id = {}",
            run.id
        ))
        .await;
    assert!(
        bad.is_err(),
        "CHECK constraint must reject unknown run states"
    );
    // States are tied to their columns: a finished task has its end, a held one its
    // worker, a finished run its end, a running run its start.
    for (sql, why) in [
        (
            format!(
                "UPDATE task_instance SET state = 'success', ended_at = NULL WHERE id = {}",
                tis[0].id
            ),
            "a finished task instance without ended_at",
        ),
        (
            format!(
                "UPDATE task_instance SET state = 'running', worker_id = NULL WHERE id = {}",
                tis[0].id
            ),
            "a running task instance without a worker",
        ),
        (
            format!(
                "UPDATE dag_run SET state = 'failed', ended_at = NULL WHERE id = {}",
                run.id
            ),
            "a finished run without ended_at",
        ),
    ] {
        let r = db.conn.execute_unprepared(&sql).await;
        assert!(r.is_err(), "the database must refuse {why}");
    }

    // Logs round-trip in order.
    let w1 = tasks::NewWorker {
        id: "w1".into(),
        hostname: "host".into(),
        pid: 1,
        role: "worker",
        queues: Vec::new(),
        capacity: 1,
    };
    tasks::register_worker(&db.conn, &w1, now)
        .await
        .expect("worker");
    tasks::transition_by_task(
        &db.conn,
        &machine::SCHEDULE,
        run.id,
        &["a".into()],
        TaskState::Scheduled,
        now,
    )
    .await
    .expect("sched");
    let limits = tasks::ClaimLimits {
        dag_max_active: std::sync::Arc::new([("sample".to_string(), 16)].into()),
        capacity: 10,
        ..Default::default()
    };
    dags::sync_pools(&db.conn, &[("default_pool".to_string(), 128)].into())
        .await
        .expect("pools");
    let claimed = tasks::claim(&db.conn, "w1", "host", &limits, now)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let mut started = tasks::start_tries(&db.conn, &[claimed[0].id], "w1", "host", now)
        .await
        .expect("start");
    assert_eq!(started.len(), 1);
    let (started, run_of_try) = started.remove(0);
    assert_eq!(run_of_try.id, run.id);
    assert_eq!(started.ti.try_number, 1);
    // Another worker cannot start it.
    assert!(
        tasks::start_tries(&db.conn, &[claimed[0].id], "w2", "host", now)
            .await
            .expect("start")
            .is_empty()
    );
    tasks::append_log(&db.conn, started.try_id, 0, "hello\n", now)
        .await
        .expect("log");
    tasks::append_log(&db.conn, started.try_id, 1, "world\n", now)
        .await
        .expect("log");
    assert_eq!(
        tasks::read_log(&db.conn, started.try_id)
            .await
            .expect("read"),
        "hello\nworld\n"
    );
}

#[tokio::test]
async fn migrations_and_entities_round_trip_on_every_backend() {
    for t in backends().await {
        roundtrip(&t).await;
        t.cleanup().await;
    }
}

/// The hand-written aggregate SQL of the UI runs on both backends.
#[tokio::test]
async fn ui_aggregates_run_on_every_backend() {
    use weft::db::stats;
    for t in backends().await {
        let db = &t.db;
        let dag = sample_dag();
        let now = Utc::now();
        let v = dags::upsert_dag(&db.conn, &dag.record(), now)
            .await
            .expect("dag");
        for day in 1..=12 {
            let start = utc(2026, 1, day, 0, 0);
            let new = NewRun {
                dag_id: "sample".into(),
                run_id: runs::run_id_for(RunType::Scheduled, start),
                run_type: RunType::Scheduled,
                logical_date: start,
                interval_start: start,
                interval_end: utc(2026, 1, day + 1, 0, 0),
                dag_version_id: v,
                params: serde_json::json!({}),
                conf: serde_json::json!({}),
            };
            let run = runs::insert_run(&db.conn, &dag.new_tasks(None), &new, now)
                .await
                .expect("insert")
                .expect("new");
            runs::transition(
                &db.conn,
                &machine::RUN_START,
                run.id,
                RunState::Running,
                now,
            )
            .await
            .expect("t");
            let fin = if day % 4 == 0 {
                RunState::Failed
            } else {
                RunState::Success
            };
            runs::transition(&db.conn, &machine::RUN_FINISH, run.id, fin, now)
                .await
                .expect("t");
        }
        let recent = stats::recent_runs(&db.conn, 10).await.expect("recent");
        assert_eq!(recent.len(), 10, "ten most recent of twelve");
        assert_eq!(recent[0].logical_date, utc(2026, 1, 12, 0, 0));
        let last = stats::latest_scheduled_by_dag(&db.conn)
            .await
            .expect("last");
        assert_eq!(last.get("sample"), Some(&utc(2026, 1, 12, 0, 0)));
        let rates = stats::run_failure_by_dag(&db.conn, now - chrono::Duration::days(1))
            .await
            .expect("rates");
        assert_eq!(
            rates["sample"],
            stats::Rate {
                failed: 3,
                finished: 12
            }
        );
        stats::try_failure_by_dag(&db.conn, now)
            .await
            .expect("tries");
        stats::try_failure_by_kind(&db.conn, now)
            .await
            .expect("kinds");
        stats::daily_try_failure(&db.conn, now)
            .await
            .expect("daily");
        stats::slowest_tasks(&db.conn, now, 5).await.expect("slow");
        stats::pool_usage(&db.conn).await.expect("pools");
        stats::live_task_counts(&db.conn).await.expect("live");
        // The twelve finished runs are not live; a thirteenth left running is.
        assert!(
            stats::live_run_counts(&db.conn)
                .await
                .expect("counts")
                .is_empty()
        );
        let start = utc(2026, 1, 13, 0, 0);
        let new = NewRun {
            dag_id: "sample".into(),
            run_id: runs::run_id_for(RunType::Scheduled, start),
            run_type: RunType::Scheduled,
            logical_date: start,
            interval_start: start,
            interval_end: utc(2026, 1, 14, 0, 0),
            dag_version_id: v,
            params: serde_json::json!({}),
            conf: serde_json::json!({}),
        };
        let run = runs::insert_run(&db.conn, &dag.new_tasks(None), &new, now)
            .await
            .expect("insert")
            .expect("new");
        runs::transition(
            &db.conn,
            &machine::RUN_START,
            run.id,
            RunState::Running,
            now,
        )
        .await
        .expect("t");
        assert_eq!(
            stats::live_run_counts(&db.conn).await.expect("counts"),
            vec![("running".to_string(), 1)]
        );
        t.cleanup().await;
    }
}

#[tokio::test]
async fn warehouse_tables_are_migrated_once_per_warehouse_and_legacy_tables_catch_up() {
    use sea_orm::ConnectionTrait;
    for t in crate::support::backends().await {
        let c = &t.db.conn;
        // A results table as an early release made it: without the later columns.
        c.execute_unprepared(
            "CREATE TABLE experiment_results (experiment TEXT NOT NULL, metric TEXT NOT NULL, variant TEXT NOT NULL, users BIGINT NOT NULL, \
             value DOUBLE PRECISION, diff DOUBLE PRECISION, diff_ci_low DOUBLE PRECISION, diff_ci_high DOUBLE PRECISION, rel_lift DOUBLE PRECISION, \
             rel_lift_ci_low DOUBLE PRECISION, rel_lift_ci_high DOUBLE PRECISION, p_value DOUBLE PRECISION, srm_p_value DOUBLE PRECISION, \
             excluded_users BIGINT NOT NULL, interval_end TEXT NOT NULL, computed_at TEXT NOT NULL)",
        )
        .await
        .expect("legacy table");
        let first = weft::kinds::warehouse::migrate(c).await.expect("migrate");
        let with_tables = weft::kinds::KINDS
            .iter()
            .map(|k| k.warehouse.len())
            .sum::<usize>();
        assert_eq!(first, with_tables);
        assert_eq!(weft::kinds::warehouse::migrate(c).await.expect("again"), 0);
        assert_eq!(
            crate::support::scalar(&t.db, "SELECT COUNT(*) FROM weft_warehouse_migrations").await,
            i64::try_from(with_tables).expect("n")
        );
        // The legacy table has the new columns, and the other tables exist.
        c.execute_unprepared(
            "INSERT INTO experiment_results VALUES ('e', 'm', 'v', 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, 'x', 'y', 0.5, 'why')",
        )
        .await
        .expect("new columns");
        for table in [
            "survey_responses",
            "survey_metrics",
            "weft_test_results",
            "weft_exposures",
        ] {
            assert_eq!(
                crate::support::scalar(&t.db, &format!("SELECT COUNT(*) FROM {table}")).await,
                0
            );
        }
        t.cleanup().await;
    }
}

#[tokio::test]
async fn upgrading_mends_rows_an_older_weft_left_untied() {
    use migration::MigratorTrait;
    use sea_orm::ConnectionTrait;
    for t in backends().await {
        let db = &t.db;
        let now = Utc::now();
        let dag = sample_dag();
        let vid = dags::upsert_dag(&db.conn, &dag.record(), now)
            .await
            .expect("dag");
        let new = NewRun {
            dag_id: "sample".into(),
            run_id: "manual__legacy".into(),
            run_type: RunType::Manual,
            logical_date: now,
            interval_start: now,
            interval_end: now,
            dag_version_id: vid,
            params: serde_json::json!({}),
            conf: serde_json::json!({}),
        };
        let run = runs::insert_run(&db.conn, &dag.new_tasks(None), &new, now)
            .await
            .expect("insert")
            .expect("new");
        // Before the invariants (m0005 and every migration after it undone): a finished
        // task without an end, a queued one without a worker, a finished run without an end.
        let after_m0004 = u32::try_from(migration::Migrator::migrations().len() - 4).expect("n");
        migration::Migrator::down(&db.conn, Some(after_m0004))
            .await
            .expect("down");
        for sql in [
            format!(
                "UPDATE task_instance SET state = 'skipped', ended_at = NULL WHERE dag_run_id = {} AND task_id = 'a'",
                run.id
            ),
            format!(
                "UPDATE task_instance SET state = 'queued', worker_id = NULL WHERE dag_run_id = {} AND task_id = 'b'",
                run.id
            ),
            format!(
                "UPDATE dag_run SET state = 'failed', ended_at = NULL WHERE id = {}",
                run.id
            ),
        ] {
            db.conn.execute_unprepared(&sql).await.expect("legacy row");
        }
        migration::Migrator::up(&db.conn, None).await.expect("up");
        let tis = tasks::of_run(&db.conn, run.id).await.expect("tis");
        let a = tis.iter().find(|t| t.task_id == "a").expect("a");
        let b = tis.iter().find(|t| t.task_id == "b").expect("b");
        assert!(a.ended_at.is_some(), "the skipped task got an end");
        assert_eq!(
            b.state,
            TaskState::Scheduled,
            "the unheld claim was given back"
        );
        let r = runs::get_run(&db.conn, run.id)
            .await
            .expect("q")
            .expect("run");
        assert!(r.ended_at.is_some());
        t.cleanup().await;
    }
}
