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
    env.stop().await;
}

#[tokio::test]
async fn experiment_results_match_the_reference() {
    for t in backends().await {
        scenario(&t).await;
        t.cleanup().await;
    }
}
