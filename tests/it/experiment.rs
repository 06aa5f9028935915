//! The `experiment` kind end to end on SQLite and PostgreSQL warehouses: exposures from a
//! file, events from an ingested table, per-user work in SQL, statistics matching the
//! reference values, multi-variant users excluded, results replaced on re-runs.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::Utc;
use weft::db::{Db, RunState};
use weft::scheduler::commands;

use crate::support::{Env, TestDb, backends, float, scalar, utc};

const DAG: &str = r#"
schedule = "@daily"
start_date = "2026-01-01"
[tasks.load]
kind = "ingest"
source = { path = "events.jsonl" }
table = "events"
[tasks.analyze]
kind = "experiment"
depends_on = ["load"]
experiment = "new_onboarding"
exposures = { path = "exposures.jsonl", format = "jsonl" }
events = { table = "events" }
control = "control"
split = { control = 0.5, treatment = 0.5 }
[[tasks.analyze.metrics]]
name = "upgraded"
type = "conversion"
event = "upgraded"
window = "72h"
"#;

/// 5,000 users per arm; 250 control and 295 treatment users upgrade within 72 h (the
/// domain reference); one more control user upgrades too late; 3 users saw both arms.
fn fixtures(dir: &std::path::Path) {
    let mut exp = String::new();
    let mut ev = String::new();
    for i in 0..10_000u32 {
        let variant = if i % 2 == 0 { "control" } else { "treatment" };
        let k = i / 2;
        writeln!(exp, r#"{{"user_id": "u{i}", "experiment": "new_onboarding", "variant": "{variant}", "timestamp": "2026-01-01T10:00:00Z"}}"#).expect("w");
        let converts = if variant == "control" {
            k < 250
        } else {
            k < 295
        };
        if converts {
            writeln!(ev, r#"{{"message_id": "e{i}", "event": "upgraded", "user_id": "u{i}", "timestamp": "2026-01-02T10:00:00Z"}}"#).expect("w");
        }
    }
    // Too late for the window.
    writeln!(ev, r#"{{"message_id": "late", "event": "upgraded", "user_id": "u9998", "timestamp": "2026-01-05T10:00:01Z"}}"#).expect("w");
    for i in 0..3 {
        for v in ["control", "treatment"] {
            writeln!(exp, r#"{{"user_id": "both{i}", "experiment": "new_onboarding", "variant": "{v}", "timestamp": "2026-01-01T11:00:00Z"}}"#).expect("w");
        }
    }
    writeln!(exp, r#"{{"user_id": "other", "experiment": "another_test", "variant": "x", "timestamp": "2026-01-01T11:00:00Z"}}"#).expect("w");
    std::fs::write(dir.join("exposures.jsonl"), exp).expect("exposures");
    std::fs::write(dir.join("events.jsonl"), ev).expect("events");
}

async fn scenario(t: &TestDb) {
    let env = Env::with_warehouse(t, &[("ab", DAG)]).await;
    fixtures(&env.dags_dir());
    let (dag, vid) = env.registry.current("ab").expect("dag");
    for _ in 0..2 {
        let run = commands::trigger(
            &env.db,
            &dag,
            vid,
            &Default::default(),
            serde_json::Value::Null,
            Some(utc(2026, 1, 10, 0, 0)),
            Utc::now(),
        )
        .await
        .expect("trigger");
        env.engine.wake();
        assert_eq!(
            env.wait_run(run.id, Duration::from_secs(120)).await,
            RunState::Success,
            "{:?}",
            env.states(run.id).await
        );
    }
    let wh = Db::connect(&env.config.connections["warehouse"].url)
        .await
        .expect("wh");
    // Re-running the interval replaced its rows: one per variant.
    assert_eq!(
        scalar(&wh, "SELECT COUNT(*) FROM experiment_results").await,
        2
    );
    assert_eq!(
        scalar(
            &wh,
            "SELECT users FROM experiment_results WHERE variant = 'control'"
        )
        .await,
        5000
    );
    assert_eq!(
        scalar(
            &wh,
            "SELECT excluded_users FROM experiment_results WHERE variant = 'control'"
        )
        .await,
        3
    );
    let checks = [
        ("value", "control", 0.05, 1e-9),
        ("value", "treatment", 0.059, 1e-9),
        ("diff", "treatment", 0.009, 1e-9),
        ("p_value", "treatment", 0.04739, 1e-5),
        ("diff_ci_low", "treatment", 0.000103, 1e-6),
        ("diff_ci_high", "treatment", 0.017897, 1e-6),
        ("rel_lift", "treatment", 0.18, 1e-9),
        ("rel_lift_ci_low", "treatment", -0.01336, 1e-5),
        ("rel_lift_ci_high", "treatment", 0.37336, 1e-5),
        ("srm_p_value", "treatment", 1.0, 1e-9),
    ];
    for (col, variant, want, tol) in checks {
        let got = float(
            &wh,
            &format!("SELECT {col} FROM experiment_results WHERE variant = '{variant}'"),
        )
        .await;
        assert!(
            (got - want).abs() <= tol,
            "{col} of {variant}: {got} vs {want}"
        );
    }
    assert_eq!(
        scalar(
            &wh,
            "SELECT COUNT(*) FROM experiment_results WHERE variant = 'control' AND p_value IS NULL"
        )
        .await,
        1
    );
    // The readers the experiment page uses work on this backend too.
    {
        use weft::kinds::experiment::run as experiment;
        let latest = experiment::latest_results(&wh.conn, "new_onboarding")
            .await
            .expect("results");
        assert_eq!(latest.len(), 2);
        assert_eq!(latest[1].variant, "treatment");
        assert!((latest[1].rel_lift.expect("lift") - 0.18).abs() < 1e-9);
        let lags = experiment::turnarounds(&wh.conn, "new_onboarding", 10)
            .await
            .expect("turnaround");
        assert_eq!(lags.len(), 1, "one analysed interval");
        let spec = dag
            .tasks
            .iter()
            .find(|t| t.task_id == "analyze")
            .expect("task")
            .spec_of::<weft::kinds::experiment::ExperimentSpec>()
            .expect("an experiment");
        let daily = experiment::daily_exposures(&wh.conn, spec)
            .await
            .expect("exposures");
        assert_eq!(
            daily,
            vec![
                ("2026-01-01".to_string(), "control".to_string(), 5000),
                ("2026-01-01".to_string(), "treatment".to_string(), 5000)
            ]
        );
    }
    env.stop().await;
}

#[tokio::test]
async fn experiment_results_match_the_reference() {
    for t in backends().await {
        scenario(&t).await;
        t.cleanup().await;
    }
}

/// Exposures by default from the `$exposure` / `$feature_flag_called` events, a ratio
/// metric, the interval range and an experiment start.
const DEFAULTS: &str = r#"
schedule = "@daily"
start_date = "2025-12-01"

[tasks.load]
kind = "ingest"
source = { path = "events.jsonl" }
table = "events"
out_of_interval = "keep"

[tasks.cumulative]
kind = "experiment"
depends_on = ["load"]
experiment = "pricing_page"
events = { table = "events" }
control = "control"
split = { control = 0.5, treatment = 0.5 }
[[tasks.cumulative.metrics]]
name = "rev_per_session"
type = "ratio"
numerator = { event = "purchase", property = "amount" }
denominator = { event = "session" }

[tasks.windowed]
kind = "experiment"
depends_on = ["cumulative"]
experiment = "pricing_page"
events = { table = "events" }
range = "interval"
control = "control"
split = { control = 0.5, treatment = 0.5 }
[[tasks.windowed.metrics]]
name = "rev_per_session"
type = "ratio"
numerator = { event = "purchase", property = "amount" }
denominator = { event = "session" }

[tasks.from_start]
kind = "experiment"
depends_on = ["windowed"]
experiment = "pricing_page"
events = { table = "events" }
start = "2026-01-01"
control = "control"
split = { control = 0.5, treatment = 0.5 }
[[tasks.from_start.metrics]]
name = "rev_per_session"
type = "ratio"
numerator = { event = "purchase", property = "amount" }
denominator = { event = "session" }
"#;

async fn defaults_scenario(t: &TestDb) {
    let env = Env::with_warehouse(t, &[("defaults", DEFAULTS)]).await;
    let mut ev = String::new();
    let mut n = 0;
    let mut emit = |event: &str, user: &str, ts: &str, props: &str| {
        n += 1;
        writeln!(ev, r#"{{"message_id": "m{n}", "event": "{event}", "user_id": "{user}", "timestamp": "{ts}", "properties": {props}}}"#).expect("w");
    };
    // c0 was exposed the day before (through a feature-flag event), the others on day 1.
    emit(
        "$feature_flag_called",
        "c0",
        "2025-12-31T10:00:00Z",
        r#"{"$feature_flag": "pricing_page", "$feature_flag_response": "control"}"#,
    );
    for (u, v) in [
        ("c1", "control"),
        ("c2", "control"),
        ("t1", "treatment"),
        ("t2", "treatment"),
    ] {
        emit(
            "$exposure",
            u,
            "2026-01-01T10:00:00Z",
            &format!(r#"{{"flag": "pricing_page", "variant": "{v}"}}"#),
        );
    }
    emit(
        "$exposure",
        "x9",
        "2026-01-01T10:00:00Z",
        r#"{"flag": "other_flag", "variant": "control"}"#,
    );
    let at = |u: &str| {
        if u == "c0" {
            "2025-12-31T11:00:00Z"
        } else {
            "2026-01-01T11:00:00Z"
        }
    };
    for (u, sessions, amount) in [
        ("c0", 1, Some(5)),
        ("c1", 2, Some(10)),
        ("c2", 1, None),
        ("t1", 1, Some(30)),
        ("t2", 3, Some(10)),
    ] {
        for _ in 0..sessions {
            emit("session", u, at(u), "{}");
        }
        if let Some(a) = amount {
            emit("purchase", u, at(u), &format!(r#"{{"amount": {a}}}"#));
        }
    }
    std::fs::write(env.dags_dir().join("events.jsonl"), ev).expect("events");
    let (dag, vid) = env.registry.current("defaults").expect("dag");
    let run = commands::trigger(
        &env.db,
        &dag,
        vid,
        &Default::default(),
        serde_json::Value::Null,
        Some(utc(2026, 1, 1, 0, 0)),
        Utc::now(),
    )
    .await
    .expect("trigger");
    env.engine.wake();
    let state = env.wait_run(run.id, Duration::from_secs(60)).await;
    let log_of = |task: &'static str| {
        let db = env.db.clone();
        async move { crate::support::task_log(&db, run.id, task).await.2 }
    };
    assert_eq!(
        state,
        RunState::Success,
        "{:?} {}",
        env.states(run.id).await,
        log_of("from_start").await
    );
    // Cumulative: control c0, c1, c2 -> (5 + 10 + 0) / (1 + 2 + 1) = 3.75; treatment
    // (30 + 10) / (1 + 3) = 10.
    let log = log_of("cumulative").await;
    assert!(
        log.contains("rev_per_session control (control): 3 users, value 3.7500"),
        "{log}"
    );
    assert!(
        log.contains("rev_per_session treatment: 2 users, value 10.0000"),
        "{log}"
    );
    // Interval range and experiment start both leave c0 out: 10 / 3.
    for task in ["windowed", "from_start"] {
        let log = log_of(task).await;
        assert!(
            log.contains("rev_per_session control (control): 2 users, value 3.3333"),
            "{task}: {log}"
        );
    }
    env.stop().await;
}

#[tokio::test]
async fn exposures_default_to_flag_events_and_ratio_metrics_use_the_delta_method() {
    for t in backends().await {
        defaults_scenario(&t).await;
        t.cleanup().await;
    }
}

const EDGES: &str = r#"
schedule = "@daily"
start_date = "2026-01-01"
[tasks.load]
kind = "ingest"
source = { path = "edge_events.jsonl" }
table = "events"
[tasks.precise]
kind = "experiment"
depends_on = ["load"]
experiment = "precise"
exposures = { path = "exposures.txt", format = "csv" }
events = { table = "events" }
control = "control"
split = { control = 0.5, treatment = 0.5 }
[[tasks.precise.metrics]]
name = "bought"
type = "conversion"
event = "buy"
window = "7m"
[[tasks.precise.metrics]]
name = "paid"
type = "mean"
event = "pay"
property = "amount"
window = "1d"
[tasks.solo]
kind = "experiment"
depends_on = ["load"]
experiment = "solo"
exposures = { path = "exposures.txt", format = "csv" }
events = { table = "events" }
control = "control"
split = { control = 0.5, treatment = 0.5 }
[[tasks.solo.metrics]]
name = "paid"
type = "mean"
event = "pay"
property = "amount"
window = "1d"
[[tasks.solo.metrics]]
name = "bought"
type = "conversion"
event = "buy"
window = "1d"
[tasks.bad]
kind = "experiment"
depends_on = ["load"]
experiment = "bad"
exposures = { path = "exposures.txt", format = "csv" }
events = { table = "events" }
control = "control"
split = { control = 0.5, treatment = 0.5 }
[[tasks.bad.metrics]]
name = "tipped"
type = "mean"
event = "tip"
property = "eur"
window = "1d"
[[tasks.bad.metrics]]
name = "bought"
type = "conversion"
event = "buy"
window = "1d"
"#;

fn edge_fixtures(dir: &std::path::Path) {
    let t0 = "2026-01-01T10:00:00.500Z";
    let mut exp = String::from("experiment,user_id,variant,timestamp\n");
    let mut ev = String::new();
    let mut id = 0;
    let mut event = |ev: &mut String, user: &str, name: &str, ts: &str, props: &str| {
        id += 1;
        writeln!(ev, r#"{{"message_id": "m{id}", "event": "{name}", "user_id": "{user}", "timestamp": "{ts}", "properties": {{{props}}}}}"#).expect("w");
    };
    for i in 0..20 {
        for (v, arm) in [("control", "c"), ("treatment", "t")] {
            let u = format!("{arm}{i}");
            writeln!(exp, "precise,{u},{v},{t0}").expect("w");
            // Control buys exactly at t0 + 7m (outside [t0, t0 + 7m)); treatment 1 ms before.
            let at = if v == "control" {
                "2026-01-01T10:07:00.500Z"
            } else {
                "2026-01-01T10:07:00.499Z"
            };
            event(&mut ev, &u, "buy", at, "");
            // Amounts around 1e8: one-pass variance loses every digit here.
            let amount = 1e8 + f64::from(i % 3) - 1.0 + if v == "treatment" { 0.5 } else { 0.0 };
            event(
                &mut ev,
                &u,
                "pay",
                "2026-01-01T12:00:00Z",
                &format!("\"amount\": {amount}"),
            );
            // After the interval's end: never counted.
            event(
                &mut ev,
                &u,
                "pay",
                "2026-01-02T00:00:01Z",
                "\"amount\": 1e12",
            );
        }
    }
    // A control user who bought 0.4 s before the exposure (which has milliseconds).
    writeln!(exp, "precise,early,control,{t0}").expect("w");
    event(&mut ev, "early", "buy", "2026-01-01T10:00:00.100Z", "");
    event(
        &mut ev,
        "early",
        "pay",
        "2026-01-01T12:00:00Z",
        "\"amount\": 1e8",
    );
    // Traffic in a variant the split does not list.
    for i in 0..5 {
        writeln!(exp, "precise,h{i},holdout,{t0}").expect("w");
    }
    // solo: five control users, one treatment user.
    for i in 0..5 {
        writeln!(exp, "solo,c{i},control,{t0}").expect("w");
    }
    writeln!(exp, "solo,t0,treatment,{t0}").expect("w");
    // bad: a tip that is not a number.
    for i in 0..4 {
        writeln!(exp, "bad,c{i},control,{t0}").expect("w");
        writeln!(exp, "bad,t{i},treatment,{t0}").expect("w");
        event(
            &mut ev,
            &format!("c{i}"),
            "tip",
            "2026-01-01T11:00:00Z",
            "\"eur\": 2",
        );
    }
    event(
        &mut ev,
        "t3",
        "tip",
        "2026-01-01T11:00:00Z",
        "\"eur\": \"5 EUR\"",
    );
    std::fs::write(dir.join("exposures.txt"), exp).expect("exposures");
    std::fs::write(dir.join("edge_events.jsonl"), ev).expect("events");
}

#[tokio::test]
async fn experiment_edges_are_exact_and_never_lose_the_other_metrics() {
    for t in backends().await {
        let env = Env::with_warehouse(&t, &[("edges", EDGES)]).await;
        edge_fixtures(&env.dags_dir());
        let (dag, vid) = env.registry.current("edges").expect("dag");
        let run = commands::trigger(
            &env.db,
            &dag,
            vid,
            &Default::default(),
            serde_json::Value::Null,
            Some(utc(2026, 1, 1, 0, 0)),
            Utc::now(),
        )
        .await
        .expect("trigger");
        env.engine.wake();
        assert_eq!(
            env.wait_run(run.id, Duration::from_secs(60)).await,
            RunState::Failed
        );
        let s = env.states(run.id).await;
        assert_eq!(
            s["precise"],
            weft::db::TaskState::Success,
            "{}",
            crate::support::task_log(&env.db, run.id, "precise").await.1
        );
        assert_eq!(
            s["solo"],
            weft::db::TaskState::Success,
            "{}",
            crate::support::task_log(&env.db, run.id, "solo").await.1
        );
        assert_eq!(s["bad"], weft::db::TaskState::Failed, "{s:?}");
        let wh = Db::connect(&env.config.connections["warehouse"].url)
            .await
            .expect("wh");
        let val = |exp: &str, metric: &str, variant: &str, col: &str| {
            format!(
                "SELECT {col} FROM experiment_results WHERE experiment = '{exp}' AND metric = '{metric}' AND variant = '{variant}'"
            )
        };
        // [t0, t0 + 7m) compared exactly, exposures with their milliseconds.
        assert_eq!(
            float(&wh, &val("precise", "bought", "control", "value")).await,
            0.0
        );
        assert_eq!(
            float(&wh, &val("precise", "bought", "treatment", "value")).await,
            1.0
        );
        // Means near 1e8 keep their variance: Welch's t on these values (21 control,
        // 20 treatment users) is 1.953 with 38.78 df, p = 0.05806 (computed apart from
        // 1e8, where no precision is lost).
        let p = float(&wh, &val("precise", "paid", "treatment", "p_value")).await;
        assert!((p - 0.05806).abs() < 5e-5, "p = {p}");
        let mean = float(&wh, &val("precise", "paid", "control", "value")).await;
        assert!(
            (mean - 1e8).abs() < 1.0,
            "events after the interval counted: {mean}"
        );
        // The holdout makes the sample ratio a mismatch; Holm's p is written beside the raw one.
        assert_eq!(
            float(&wh, &val("precise", "bought", "control", "srm_p_value")).await,
            0.0
        );
        let adj = float(
            &wh,
            &val("precise", "paid", "treatment", "p_value_adjusted"),
        )
        .await;
        assert!(adj >= p && adj <= 1.0, "{adj} vs {p}");
        // One user in an arm: that row has no statistics and says why; the other metric is written.
        assert_eq!(
            scalar(&wh, "SELECT COUNT(*) FROM experiment_results WHERE experiment = 'solo' AND metric = 'paid' AND variant = 'treatment' AND p_value IS NULL AND reason LIKE '%at least two users%'").await,
            1,
            "{}",
            crate::support::text(&wh, "SELECT metric || '/' || variant || '/' || CAST(users AS TEXT) || '/' || COALESCE(reason, '-') || '/' || COALESCE(CAST(p_value AS TEXT), 'null') FROM experiment_results WHERE experiment = 'solo' AND metric = 'paid' AND variant = 'treatment'").await
        );
        assert_eq!(scalar(&wh, "SELECT COUNT(*) FROM experiment_results WHERE experiment = 'solo' AND metric = 'bought' AND variant = 'treatment' AND value = 1.0 AND reason IS NULL").await, 1);
        // A non-numeric value is named, never coerced; the other metric of the task is written.
        let (_, error, _) = crate::support::task_log(&env.db, run.id, "bad").await;
        assert!(
            error.contains("t3") && error.contains("5 EUR") && error.contains("not a number"),
            "{error}"
        );
        assert_eq!(scalar(&wh, "SELECT COUNT(*) FROM experiment_results WHERE experiment = 'bad' AND metric = 'bought'").await, 2);
        env.stop().await;
        t.cleanup().await;
    }
}

const EVENTS_FILE: &str = r#"
schedule = "@daily"
start_date = "2026-01-01"
[tasks.analyze]
kind = "experiment"
experiment = "from_files"
exposures = { path = "exp.jsonl", format = "jsonl" }
events = { path = "events.csv", format = "csv" }
control = "control"
split = { control = 0.5, treatment = 0.5 }
[[tasks.analyze.metrics]]
name = "bought"
type = "conversion"
event = "buy"
window = "1d"
[[tasks.analyze.metrics]]
name = "spent"
type = "mean"
event = "buy"
property = "amount"
window = "1d"
[[tasks.analyze.metrics]]
name = "per_visit"
type = "ratio"
numerator = { event = "buy", property = "amount" }
denominator = { event = "visit" }
window = "1d"
"#;

#[tokio::test]
async fn experiment_events_can_come_from_a_file() {
    for t in backends().await {
        let env = Env::with_warehouse(&t, &[("files", EVENTS_FILE)]).await;
        let mut exp = String::new();
        let mut ev = String::from("user_id,event,timestamp,amount\n");
        for i in 0..10 {
            let v = if i % 2 == 0 { "control" } else { "treatment" };
            writeln!(exp, r#"{{"user_id": "u{i}", "experiment": "from_files", "variant": "{v}", "timestamp": "2026-01-01T09:00:00Z"}}"#).expect("w");
            // Every treatment user buys for 10; control users 0, 2 buy for 4.
            if v == "treatment" {
                writeln!(ev, "u{i},buy,2026-01-01T12:00:00Z,10").expect("w");
            } else if i < 4 {
                writeln!(ev, "u{i},buy,2026-01-01T12:00:00Z,4").expect("w");
            }
        }
        std::fs::write(env.dags_dir().join("exp.jsonl"), exp).expect("w");
        std::fs::write(env.dags_dir().join("events.csv"), ev).expect("w");
        let (dag, vid) = env.registry.current("files").expect("dag");
        let run = commands::trigger(
            &env.db,
            &dag,
            vid,
            &Default::default(),
            serde_json::Value::Null,
            Some(utc(2026, 1, 1, 0, 0)),
            Utc::now(),
        )
        .await
        .expect("trigger");
        env.engine.wake();
        assert_eq!(
            env.wait_run(run.id, Duration::from_secs(60)).await,
            RunState::Success,
            "{}",
            crate::support::task_log(&env.db, run.id, "analyze").await.1
        );
        let wh = Db::connect(&env.config.connections["warehouse"].url)
            .await
            .expect("wh");
        let v = |metric: &str, variant: &str| {
            format!(
                "SELECT value FROM experiment_results WHERE metric = '{metric}' AND variant = '{variant}'"
            )
        };
        assert_eq!(float(&wh, &v("bought", "control")).await, 0.4);
        assert_eq!(float(&wh, &v("bought", "treatment")).await, 1.0);
        assert_eq!(float(&wh, &v("spent", "control")).await, 1.6);
        assert_eq!(float(&wh, &v("spent", "treatment")).await, 10.0);
        // No one visited: the ratio's denominator is 0 for everyone. The row says so,
        // with NULL statistics, and the other metrics were written all the same.
        let reason = crate::support::text(&wh, "SELECT reason FROM experiment_results WHERE metric = 'per_visit' AND variant = 'treatment'").await;
        assert!(reason.contains("denominator is zero"), "{reason}");
        assert_eq!(scalar(&wh, "SELECT COUNT(*) FROM experiment_results WHERE metric = 'per_visit' AND p_value IS NULL AND value IS NULL").await, 2);
        env.stop().await;
        t.cleanup().await;
    }
}
