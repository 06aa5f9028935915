//! The `transform` kind on SQLite and PostgreSQL warehouses: models built in ref order
//! as tables, views and incremental tables; data tests with counts and samples;
//! tests_block keeping the previous table; SQL errors naming the model file.

use std::time::Duration;

use chrono::Utc;
use weft::db::{Db, TaskState, tasks};
use weft::scheduler::commands;

use crate::support::{Env, TestDb, backends, scalar, utc};

const DAG: &str = r#"
schedule = "@daily"
start_date = "2026-01-01"
[tasks.seed]
kind = "sql"
sql = """
CREATE TABLE IF NOT EXISTS raw_orders (id INTEGER, customer TEXT, status TEXT, day TEXT);
DELETE FROM raw_orders WHERE day = '{{ ds }}';
INSERT INTO raw_orders VALUES (1, 'ann', 'paid', '{{ ds }}'), (2, 'bob', 'paid', '{{ ds }}'), (2, 'bob', 'weird', '{{ ds }}'), (3, NULL, 'refunded', '{{ ds }}');
"""
[tasks.models]
kind = "transform"
depends_on = ["seed"]
models = "models/*.sql"
[[tasks.models.tests]]
model = "orders"
type = "unique"
column = "id"
[[tasks.models.tests]]
model = "orders"
type = "not_null"
column = "customer"
[[tasks.models.tests]]
model = "orders"
type = "accepted_values"
column = "status"
values = ["paid", "refunded"]
[[tasks.models.tests]]
model = "orders"
type = "relationships"
column = "customer"
to = "customers.name"
[[tasks.models.tests]]
model = "paid_orders"
type = "sql"
name = "no_negative_ids"
sql = "select id from paid_orders where id < 0"
[[tasks.models.tests]]
model = "orders"
type = "relationships"
name = "customer_is_vip"
column = "customer"
to = "vips.name"
[[tasks.models.tests]]
model = "orders"
type = "sql"
name = "no_weird_status"
sql = "select id from orders where status = 'weird'"
"#;

async fn run_day(env: &Env, day: u32) -> (weft::db::entities::task_instance::Model, String) {
    let (dag, vid) = env.registry.current("shop").expect("dag");
    let run = commands::trigger(
        &env.db,
        &dag,
        vid,
        &Default::default(),
        serde_json::Value::Null,
        Some(utc(2026, 1, day, 0, 0)),
        Utc::now(),
    )
    .await
    .expect("trigger");
    env.engine.wake();
    env.wait_run(run.id, Duration::from_secs(60)).await;
    let ti = tasks::of_run(&env.db.conn, run.id)
        .await
        .expect("tis")
        .into_iter()
        .find(|t| t.task_id == "models")
        .expect("models");
    let tr = tasks::current_try(&env.db.conn, &ti)
        .await
        .expect("try")
        .expect("try");
    let log = tasks::read_log(&env.db.conn, tr.id).await.expect("log");
    (ti, log)
}

async fn scenario(t: &TestDb) {
    let env = Env::with_warehouse(t, &[]).await;
    let dags = env.dags_dir();
    std::fs::create_dir_all(dags.join("models")).expect("mkdir");
    std::fs::write(
        dags.join("models/orders.sql"),
        "select id, customer, status, day from raw_orders",
    )
    .expect("w");
    std::fs::write(
        dags.join("models/customers.sql"),
        "{{ config(materialized=\"view\") }}\nselect 'ann' as name union all select 'bob'",
    )
    .expect("w");
    std::fs::write(
        dags.join("models/vips.sql"),
        "{{ config(materialized=\"view\") }}\nselect 'ann' as name",
    )
    .expect("w");
    std::fs::write(
        dags.join("models/paid_orders.sql"),
        "{{ config(materialized=\"incremental\", interval_column=\"loaded_for\") }}\nselect id, customer, '{{ data_interval_start }}' as loaded_for from {{ ref(\"orders\") }} where status = 'paid' and day = '{{ ds }}'",
    )
    .expect("w");
    std::fs::write(dags.join("shop.toml"), DAG).expect("dag");
    env.registry.sync(&env.db, Utc::now()).await.expect("sync");
    let wh = Db::connect(&env.config.connections["warehouse"].url)
        .await
        .expect("warehouse");

    let (ti, log) = run_day(&env, 2).await;
    assert_eq!(ti.state, TaskState::Failed, "{log}");
    // Every test ran and says what it found.
    assert!(
        log.contains("FAIL unique(orders.id): 1 offending, e.g. 2"),
        "{log}"
    );
    assert!(
        log.contains("FAIL not_null(orders.customer): 1 offending"),
        "{log}"
    );
    assert!(
        log.contains("FAIL accepted_values(orders.status): 1 offending, e.g. weird"),
        "{log}"
    );
    assert!(
        log.contains("PASS relationships(orders.customer -> customers.name)"),
        "{log}"
    );
    assert!(log.contains("PASS no_negative_ids"), "{log}");
    assert!(
        log.contains("FAIL customer_is_vip: 1 offending, e.g. bob"),
        "{log}"
    );
    assert!(
        log.contains("FAIL no_weird_status: 1 offending, e.g. 2"),
        "{log}"
    );
    let err = ti.error.clone().unwrap_or_default();
    assert!(err.starts_with("5 of 7 data test(s) failed"), "{err}");
    // Models were built in ref order, with their materialisations.
    assert_eq!(scalar(&wh, "SELECT COUNT(*) FROM orders").await, 4);
    assert_eq!(scalar(&wh, "SELECT COUNT(*) FROM customers").await, 2);
    assert_eq!(scalar(&wh, "SELECT COUNT(*) FROM paid_orders").await, 2);
    assert_eq!(
        scalar(
            &wh,
            "SELECT COUNT(*) FROM weft_test_results WHERE status = 'fail'"
        )
        .await,
        5
    );

    // Incremental: another day adds its rows; re-running a day replaces them.
    let (_, log3) = run_day(&env, 3).await;
    assert_eq!(
        scalar(&wh, "SELECT COUNT(*) FROM paid_orders").await,
        4,
        "day 2's rows stay, day 3's are added: {log3}"
    );
    run_day(&env, 3).await;
    assert_eq!(
        scalar(&wh, "SELECT COUNT(*) FROM paid_orders").await,
        4,
        "re-running day 3 replaces its rows"
    );

    // A SQL error names the model file.
    std::fs::write(
        dags.join("models/orders.sql"),
        "select id, customer, status, day from raw_ordrs",
    )
    .expect("w");
    env.registry.sync(&env.db, Utc::now()).await.expect("sync");
    let (ti, _) = run_day(&env, 4).await;
    assert_eq!(ti.state, TaskState::Failed);
    let err = ti.error.unwrap_or_default();
    assert!(
        err.starts_with("model models/orders.sql:") && err.contains("raw_ordrs"),
        "{err}"
    );
    // The last good orders table is still there.
    assert_eq!(scalar(&wh, "SELECT COUNT(*) FROM orders").await, 8);
    env.stop().await;
}

#[tokio::test]
async fn transform_builds_models_in_order_and_runs_data_tests() {
    for t in backends().await {
        scenario(&t).await;
        t.cleanup().await;
    }
}

#[tokio::test]
async fn tests_block_keeps_the_previous_table() {
    let t = crate::support::sqlite_db().await;
    let env = Env::start(&t, &[], |_| {}, None).await;
    let dags = env.dags_dir();
    std::fs::create_dir_all(dags.join("models")).expect("mkdir");
    std::fs::write(dags.join("models/nums.sql"), "select 1 as n").expect("w");
    let dag = "schedule = \"none\"\n[tasks.m]\nkind = \"transform\"\nmodels = [\"models/nums.sql\"]\ntests_block = true\n[[tasks.m.tests]]\nmodel = \"nums\"\ntype = \"unique\"\ncolumn = \"n\"\n";
    std::fs::write(dags.join("blocky.toml"), dag).expect("dag");
    env.registry.sync(&env.db, Utc::now()).await.expect("sync");
    let r1 = env.trigger("blocky").await;
    assert_eq!(
        env.wait_run(r1.id, Duration::from_secs(30)).await,
        weft::db::RunState::Success
    );
    std::fs::write(
        dags.join("models/nums.sql"),
        "select 1 as n union all select 1 union all select 2",
    )
    .expect("w");
    // Editing a model is a new version of the DAG.
    let report = env.registry.sync(&env.db, Utc::now()).await.expect("sync");
    assert_eq!(report.new_versions, vec!["blocky".to_string()]);
    let r2 = env.trigger("blocky").await;
    assert_eq!(
        env.wait_run(r2.id, Duration::from_secs(30)).await,
        weft::db::RunState::Failed
    );
    let wh = Db::connect(&env.config.connections["warehouse"].url)
        .await
        .expect("wh");
    assert_eq!(
        scalar(&wh, "SELECT COUNT(*) FROM nums").await,
        1,
        "the failing build was not swapped in"
    );
    let ti = tasks::of_run(&env.db.conn, r2.id)
        .await
        .expect("tis")
        .remove(0);
    assert!(
        ti.error
            .unwrap_or_default()
            .contains("kept the previous nums")
    );
    env.stop().await;
}

/// An incremental model keyed by a local date (`'{{ ds }}'`): re-running a day replaces
/// exactly that day, in any time zone, on both backends.
#[tokio::test]
async fn incremental_dates_are_days_of_the_dags_time_zone() {
    for t in backends().await {
        for tz in ["UTC", "Europe/Berlin", "America/New_York"] {
            let dag = format!(
                "schedule = \"@daily\"\ntimezone = \"{tz}\"\nstart_date = \"2026-01-01\"\n[tasks.m]\nkind = \"transform\"\nmodels = \"inc/*.sql\"\n"
            );
            // The model file must exist before the DAG that reads it is loaded.
            let env = Env::with_warehouse(
                &t,
                &[("inc", "schedule = \"none\"\n[tasks.m]\nkind = \"noop\"\n")],
            )
            .await;
            std::fs::create_dir_all(env.dags_dir().join("inc")).expect("mkdir");
            let table = format!("per_day_{}", tz.replace('/', "_").to_lowercase());
            std::fs::write(
                env.dags_dir().join(format!("inc/{table}.sql")),
                "{{ config(materialized=\"incremental\", interval_column=\"day\") }}\nselect '{{ ds }}' as day, 1 as n",
            )
            .expect("model");
            std::fs::write(env.dags_dir().join("inc.toml"), &dag).expect("dag");
            let report = env.registry.sync(&env.db, Utc::now()).await.expect("sync");
            assert!(report.errors.is_empty(), "{:?}", report.errors);
            let (dag, vid) = env.registry.current("inc").expect("dag");
            let tzv: chrono_tz::Tz = tz.parse().expect("tz");
            let mut runs = Vec::new();
            for day in 1..=4 {
                use chrono::TimeZone;
                let local = tzv
                    .with_ymd_and_hms(2026, 1, day, 0, 0, 0)
                    .single()
                    .expect("time");
                let run = commands::trigger(
                    &env.db,
                    &dag,
                    vid,
                    &Default::default(),
                    serde_json::Value::Null,
                    Some(local.with_timezone(&Utc)),
                    Utc::now(),
                )
                .await
                .expect("trigger");
                env.engine.wake();
                env.wait_run(run.id, Duration::from_secs(60)).await;
                runs.push(run);
            }
            // Re-run day 2 twice.
            for _ in 0..2 {
                commands::clear(
                    &env.db,
                    &env.registry,
                    "inc",
                    &runs[1].run_id,
                    &["m".into()],
                    &commands::Scope::default(),
                    Utc::now(),
                )
                .await
                .expect("clear");
                env.engine.wake();
                env.wait_run(runs[1].id, Duration::from_secs(60)).await;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                while env.states(runs[1].id).await.get("m") != Some(&TaskState::Success)
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            let wh = Db::connect(&env.config.connections["warehouse"].url)
                .await
                .expect("wh");
            for day in ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"] {
                assert_eq!(
                    scalar(
                        &wh,
                        &format!("SELECT COUNT(*) FROM {table} WHERE CAST(day AS TEXT) = '{day}'")
                    )
                    .await,
                    1,
                    "{tz} {day}"
                );
            }
            env.stop().await;
        }
        t.cleanup().await;
    }
}

/// accepted_values compares numbers as numbers: a REAL column holding 1.0 passes
/// `values = ["1", "2"]` on both backends; a value outside the list still fails.
#[tokio::test]
async fn accepted_values_compare_with_the_column_type() {
    for t in backends().await {
        let env = Env::with_warehouse(
            &t,
            &[("acc", "schedule = \"none\"\n[tasks.m]\nkind = \"noop\"\n")],
        )
        .await;
        std::fs::create_dir_all(env.dags_dir().join("acc")).expect("mkdir");
        std::fs::write(
            env.dags_dir().join("acc/scores.sql"),
            "select CAST(1.0 AS REAL) as score union all select CAST(2.0 AS REAL) union all select CAST(2.5 AS REAL)",
        )
        .expect("model");
        std::fs::write(
            env.dags_dir().join("acc.toml"),
            "schedule = \"none\"\n[tasks.m]\nkind = \"transform\"\nmodels = \"acc/*.sql\"\n[[tasks.m.tests]]\nmodel = \"scores\"\ntype = \"accepted_values\"\ncolumn = \"score\"\nvalues = [\"1\", \"2\", \"3\"]\n",
        )
        .expect("dag");
        let report = env.registry.sync(&env.db, Utc::now()).await.expect("sync");
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let run = env.trigger("acc").await;
        env.wait_run(run.id, Duration::from_secs(60)).await;
        let wh = Db::connect(&env.config.connections["warehouse"].url)
            .await
            .expect("wh");
        // Only 2.5 is outside the list: 1.0 and 2.0 are the accepted "1" and "2".
        assert_eq!(
            scalar(&wh, "SELECT failures FROM weft_test_results").await,
            1
        );
        let sample = crate::support::text(&wh, "SELECT sample FROM weft_test_results").await;
        assert!(
            sample.contains("2.5") && !sample.contains("\"1"),
            "{sample}"
        );
        env.stop().await;
        t.cleanup().await;
    }
}
