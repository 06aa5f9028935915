//! The `ingest` kind on SQLite and PostgreSQL warehouses: dedup on message_id,
//! idempotent re-runs of an interval, clock-skew correction, rejects with line numbers,
//! the reject threshold, gzip, CSV and templated globs.

use std::io::Write;
use std::time::Duration;

use chrono::Utc;
use weft::db::{Db, RunState, TaskState, tasks};
use weft::scheduler::commands;

use crate::support::{Env, TestDb, backends, scalar, text, utc};

const DAG: &str = r#"
schedule = "@daily"
start_date = "2026-01-01"
[tasks.load]
kind = "ingest"
source = { path = "data/{{ ds }}/*.jsonl*" }
table = "events"
max_reject_ratio = 0.5
[tasks.load_csv]
kind = "ingest"
source = { path = "data/{{ ds }}/export.csv", format = "csv" }
table = "csv_events"
[tasks.strict]
kind = "ingest"
source = { path = "data/{{ ds }}/*.jsonl" }
table = "strict_events"
"#;

const DAY1: &str = r#"{"message_id": "m1", "type": "track", "event": "signup", "user_id": "u1", "timestamp": "2026-01-02T10:00:00Z", "properties": {"plan": "free"}}
{"message_id": "m2", "type": "track", "event": "api_call", "user_id": "u1", "timestamp": "2026-01-02T11:00:00Z", "properties": {"endpoint": "/v1/x", "new_key": 1}}
{"message_id": "m2", "type": "track", "event": "api_call", "user_id": "u1", "timestamp": "2026-01-02T11:00:00Z"}
this is not json
{"message_id": "m3", "event": "no_time"}
{"message_id": "m4", "type": "identify", "user_id": "u2", "timestamp": "2026-01-02T12:00:00Z", "sent_at": "2026-01-02T12:10:00Z", "received_at": "2026-01-02T12:00:05Z"}

{"message_id": "m5", "event": "upgraded", "anonymous_id": "a9", "timestamp": "2026-01-02T23:59:59Z"}
"#;

async fn run_once(env: &Env, logical: chrono::DateTime<Utc>) -> weft::db::entities::dag_run::Model {
    let (dag, vid) = env.registry.current("ingest_test").expect("dag");
    let run = commands::trigger(
        &env.db,
        &dag,
        vid,
        &Default::default(),
        serde_json::Value::Null,
        Some(logical),
        Utc::now(),
    )
    .await
    .expect("trigger");
    env.engine.wake();
    env.wait_run(run.id, Duration::from_secs(60)).await;
    run
}

async fn scenario(t: &TestDb) {
    let env = Env::with_warehouse(t, &[("ingest_test", DAG)]).await;
    let day = env.dags_dir().join("data/2026-01-02");
    std::fs::create_dir_all(&day).expect("mkdir");
    std::fs::write(day.join("a.jsonl"), DAY1).expect("write");
    // The same events again, gzipped: every one is a duplicate.
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(day.join("b.jsonl.gz")).expect("gz"),
        flate2::Compression::default(),
    );
    gz.write_all(
        DAY1.lines()
            .take(2)
            .collect::<Vec<_>>()
            .join("\n")
            .as_bytes(),
    )
    .expect("gz write");
    gz.finish().expect("gz finish");
    std::fs::write(day.join("export.csv"), "message_id,type,event,user_id,timestamp,plan\nc1,track,signup,u7,2026-01-02T08:00:00Z,pro\nc2,track,signup,u8,not-a-time,free\n").expect("csv");
    let wh = Db::connect(&env.config.connections["warehouse"].url)
        .await
        .expect("warehouse");

    let run = run_once(&env, utc(2026, 1, 2, 0, 0)).await;
    let s = env.states(run.id).await;
    assert_eq!(
        s["load"],
        TaskState::Success,
        "{s:?} {}",
        crate::support::task_log(&env.db, run.id, "load").await.1
    );
    // strict has the default max_reject_ratio 0: two bad lines fail it, nothing loads.
    assert_eq!(s["strict"], TaskState::Failed);
    assert_eq!(
        s["load_csv"],
        TaskState::Failed,
        "one of two CSV rows is bad (ratio 0)"
    );

    assert_eq!(scalar(&wh, "SELECT COUNT(*) FROM events").await, 4);
    assert_eq!(scalar(&wh, "SELECT COUNT(*) FROM events_rejects").await, 2);
    let reasons = text(&wh, "SELECT source || ':' || CAST(line AS TEXT) || ' ' || reason FROM events_rejects ORDER BY line LIMIT 1").await;
    assert!(
        reasons.starts_with("data/2026-01-02/a.jsonl:4 bad JSON"),
        "{reasons}"
    );
    let missing = text(&wh, "SELECT reason FROM events_rejects WHERE line = 5").await;
    assert_eq!(missing, "missing timestamp");
    // m4's client clock ran 10 minutes fast (sent 12:10, received 12:00:05).
    let ts = text(
        &wh,
        "SELECT CAST(\"timestamp\" AS TEXT) FROM events WHERE message_id = 'm4'",
    )
    .await;
    assert!(
        ts.starts_with("2026-01-02T11:50:05") || ts.starts_with("2026-01-02 11:50:05"),
        "{ts}"
    );
    let props = text(
        &wh,
        "SELECT CAST(properties AS TEXT) FROM events WHERE message_id = 'm2'",
    )
    .await;
    assert!(props.contains("new_key"), "schema drift is kept: {props}");
    assert_eq!(scalar(&wh, "SELECT COUNT(*) FROM strict_events").await, 0);
    assert_eq!(
        scalar(&wh, "SELECT COUNT(*) FROM strict_events_rejects").await,
        2
    );

    let tis = tasks::of_run(&env.db.conn, run.id).await.expect("tis");
    let load = tis.iter().find(|t| t.task_id == "load").expect("load");
    let log = tasks::read_log(
        &env.db.conn,
        tasks::current_try(&env.db.conn, load)
            .await
            .expect("try")
            .expect("try")
            .id,
    )
    .await
    .expect("log");
    assert!(
        log.contains("read 9, loaded 4, duplicates 3, rejected 2"),
        "{log}"
    );
    let strict = tis.iter().find(|t| t.task_id == "strict").expect("strict");
    assert!(
        strict.error.as_deref().is_some_and(
            |e| e.contains("2 of 7 lines rejected") && e.contains("nothing was loaded")
        ),
        "{:?}",
        strict.error
    );

    // Re-running the interval replaces it: same rows, same rejects.
    let cleared = commands::clear(
        &env.db,
        &env.registry,
        "ingest_test",
        &run.run_id,
        &["load".into()],
        &commands::Scope::default(),
        Utc::now(),
    )
    .await
    .expect("clear");
    assert_eq!(cleared, vec!["load".to_string()]);
    env.engine.wake();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ti = tasks::of_run(&env.db.conn, run.id)
            .await
            .expect("tis")
            .into_iter()
            .find(|t| t.task_id == "load")
            .expect("load");
        if ti.try_number == 2 && ti.state == TaskState::Success {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "re-run did not finish: {ti:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(scalar(&wh, "SELECT COUNT(*) FROM events").await, 4);
    assert_eq!(scalar(&wh, "SELECT COUNT(*) FROM events_rejects").await, 2);

    // Another interval with no files: a clear failure naming the path.
    let other = run_once(&env, utc(2026, 1, 5, 0, 0)).await;
    let ti = tasks::of_run(&env.db.conn, other.id)
        .await
        .expect("tis")
        .into_iter()
        .find(|t| t.task_id == "load")
        .expect("load");
    assert_eq!(ti.state, TaskState::Failed);
    assert!(
        ti.error
            .as_deref()
            .is_some_and(|e| e.contains("no file matches \"data/2026-01-05/*.jsonl*\"")),
        "{:?}",
        ti.error
    );
    let r = weft::db::runs::get_run(&env.db.conn, other.id)
        .await
        .expect("run")
        .expect("run");
    assert_eq!(r.state, RunState::Failed);
    env.stop().await;
}

#[tokio::test]
async fn ingest_is_idempotent_deduplicated_and_reports_rejects() {
    for t in backends().await {
        scenario(&t).await;
        t.cleanup().await;
    }
}

/// An HTTP source that pages with cursors, answers 429 once, and wants a token.
async fn events_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use axum::extract::Query;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::get(move |headers: HeaderMap, Query(q): Query<HashMap<String, String>>| {
            let c = c.clone();
            async move {
                if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer right-token") {
                    return (StatusCode::UNAUTHORIZED, "no").into_response();
                }
                if c.fetch_add(1, Ordering::SeqCst) == 0 {
                    return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "slow down").into_response();
                }
                let ev = |id: &str| serde_json::json!({"message_id": id, "event": "api_call", "user_id": "u", "timestamp": "2026-01-02T10:00:00Z"});
                let body = match q.get("cursor").map(String::as_str) {
                    None => serde_json::json!({"data": [ev("h1"), ev("h2"), ev("h3")], "next_cursor": "p2"}),
                    Some("p2") => serde_json::json!({"data": [ev("h4"), ev("h5"), {"message_id": "bad"}], "next_cursor": "p3"}),
                    Some("p3") => serde_json::json!({"data": [ev("h6")], "next_cursor": null}),
                    Some(_) => serde_json::json!({"data": []}),
                };
                axum::Json(body).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/events"), calls)
}

#[tokio::test]
async fn http_source_pages_retries_and_names_auth_failures() {
    let t = crate::support::sqlite_db().await;
    let (url, calls) = events_server().await;
    let dag = format!(
        "schedule = \"@daily\"\nstart_date = \"2026-01-01\"\n[tasks.pull]\nkind = \"ingest\"\nsource = {{ url = \"{url}?day={{{{ ds }}}}\", token = \"right-token\", items = \"data\", next = \"next_cursor\" }}\ntable = \"api_events\"\nmax_reject_ratio = 0.5\n[tasks.denied]\nkind = \"ingest\"\nsource = {{ url = \"{url}\", token = \"wrong-token\" }}\ntable = \"denied_events\"\n"
    );
    let env = Env::start(&t, &[("ingest_test", &dag)], |_| {}, None).await;
    let run = run_once(&env, utc(2026, 1, 2, 0, 0)).await;
    let tis = tasks::of_run(&env.db.conn, run.id).await.expect("tis");
    let pull = tis.iter().find(|t| t.task_id == "pull").expect("pull");
    let log = tasks::read_log(
        &env.db.conn,
        tasks::current_try(&env.db.conn, pull)
            .await
            .expect("try")
            .expect("try")
            .id,
    )
    .await
    .expect("log");
    assert_eq!(pull.state, TaskState::Success, "{log}");
    assert!(
        log.contains("read 7, loaded 6, duplicates 0, rejected 1"),
        "{log}"
    );
    assert!(
        calls.load(std::sync::atomic::Ordering::SeqCst) >= 4,
        "429 was retried and three pages were read"
    );
    let wh = Db::connect(&env.config.connections["warehouse"].url)
        .await
        .expect("warehouse");
    assert_eq!(scalar(&wh, "SELECT COUNT(*) FROM api_events").await, 6);
    let reason = text(&wh, "SELECT reason FROM api_events_rejects").await;
    assert_eq!(reason, "missing timestamp");
    let denied = tis.iter().find(|t| t.task_id == "denied").expect("denied");
    assert_eq!(denied.state, TaskState::Failed);
    let err = denied.error.clone().unwrap_or_default();
    assert!(
        err.contains("HTTP 401 (check the token)") && err.contains("/events"),
        "{err}"
    );
    env.stop().await;
}

#[tokio::test]
async fn a_drop_zone_loads_each_file_once() {
    let t = crate::support::sqlite_db().await;
    let dag = "schedule = \"@daily\"\nstart_date = \"2026-01-01\"\n[tasks.zone]\nkind = \"ingest\"\nsource = { dir = \"incoming\", format = \"jsonl\", allow_empty = true }\ntable = \"zone_events\"\n";
    let env = Env::start(&t, &[("ingest_test", dag)], |_| {}, None).await;
    let zone = env.dags_dir().join("incoming");
    std::fs::create_dir_all(&zone).expect("mkdir");
    let line = |id: &str| {
        format!("{{\"message_id\": \"{id}\", \"timestamp\": \"2026-01-02T10:00:00Z\"}}\n")
    };
    std::fs::write(zone.join("f1.jsonl"), format!("{}{}", line("a"), line("b"))).expect("w");
    let wh = Db::connect(&env.config.connections["warehouse"].url)
        .await
        .expect("warehouse");
    let day2 = run_once(&env, utc(2026, 1, 2, 0, 0)).await;
    assert_eq!(scalar(&wh, "SELECT COUNT(*) FROM zone_events").await, 2);
    std::fs::write(zone.join("f2.jsonl"), line("c")).expect("w");
    std::fs::write(zone.join(".f3.jsonl.part"), line("d")).expect("w");
    run_once(&env, utc(2026, 1, 3, 0, 0)).await;
    assert_eq!(
        scalar(&wh, "SELECT COUNT(*) FROM zone_events").await,
        3,
        "only f2 was new; the partial file waits"
    );
    assert_eq!(
        scalar(&wh, "SELECT COUNT(*) FROM zone_events_files").await,
        2
    );
    // Re-running day 2 loads f1 again (its rows are replaced, nothing doubles).
    commands::clear(
        &env.db,
        &env.registry,
        "ingest_test",
        &day2.run_id,
        &[],
        &commands::Scope::default(),
        Utc::now(),
    )
    .await
    .expect("clear");
    env.engine.wake();
    env.wait_task(day2.id, "zone", TaskState::Success, Duration::from_secs(30))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tasks::of_run(&env.db.conn, day2.id).await.expect("tis")[0].try_number < 2 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.wait_run(day2.id, Duration::from_secs(30)).await;
    assert_eq!(scalar(&wh, "SELECT COUNT(*) FROM zone_events").await, 3);
    assert_eq!(
        text(
            &wh,
            "SELECT file FROM zone_events_files ORDER BY file LIMIT 1"
        )
        .await,
        "incoming/f1.jsonl"
    );
    env.stop().await;
}

const EDGE_DAG: &str = r#"
schedule = "@daily"
start_date = "2026-01-01"
[tasks.gz]
kind = "ingest"
source = { path = "data/{{ ds }}/*.jsonl.gz" }
table = "gz_events"
[tasks.bom]
kind = "ingest"
source = { path = "data/{{ ds }}/bom.jsonl" }
table = "bom_events"
[tasks.csv]
kind = "ingest"
source = { path = "data/{{ ds }}/props.csv", format = "csv" }
table = "csv_props"
"#;

#[tokio::test]
async fn a_truncated_gzip_fails_at_once_a_bom_is_accepted_and_csv_columns_merge() {
    let t = crate::support::sqlite_db().await;
    let env = Env::with_warehouse(&t, &[("ingest_edges", EDGE_DAG)]).await;
    let day = env.dags_dir().join("data/2026-01-02");
    std::fs::create_dir_all(&day).expect("mkdir");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for i in 0..5000 {
        writeln!(
            gz,
            r#"{{"message_id": "g{i}", "event": "e", "timestamp": "2026-01-02T10:00:00Z"}}"#
        )
        .expect("gz");
    }
    let whole = gz.finish().expect("gz");
    std::fs::write(day.join("cut.jsonl.gz"), &whole[..whole.len() / 2]).expect("write");
    std::fs::write(
        day.join("bom.jsonl"),
        "\u{feff}{\"message_id\": \"b1\", \"event\": \"e\", \"timestamp\": \"2026-01-02T10:00:00Z\"}\r\n",
    )
    .expect("write");
    std::fs::write(
        day.join("props.csv"),
        "message_id,event,timestamp,properties,plan\nc1,e,2026-01-02T10:00:00Z,\"{\"\"a\"\": 1}\",pro\n",
    )
    .expect("write");
    let started = std::time::Instant::now();
    let (dag, vid) = env.registry.current("ingest_edges").expect("dag");
    let run = commands::trigger(
        &env.db,
        &dag,
        vid,
        &Default::default(),
        serde_json::Value::Null,
        Some(utc(2026, 1, 2, 0, 0)),
        Utc::now(),
    )
    .await
    .expect("trigger");
    env.engine.wake();
    env.wait_run(run.id, Duration::from_secs(60)).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the broken file was retried"
    );
    let s = env.states(run.id).await;
    assert_eq!(s["gz"], TaskState::Failed);
    let (_, error, _) = crate::support::task_log(&env.db, run.id, "gz").await;
    assert!(
        error.contains("cut.jsonl.gz") && error.contains("cannot read past line"),
        "{error}"
    );
    assert_eq!(s["bom"], TaskState::Success);
    assert_eq!(s["csv"], TaskState::Success);
    let wh = Db::connect(&env.config.connections["warehouse"].url)
        .await
        .expect("warehouse");
    assert_eq!(scalar(&wh, "SELECT COUNT(*) FROM bom_events").await, 1);
    let props = text(&wh, "SELECT CAST(properties AS TEXT) FROM csv_props").await;
    let v: serde_json::Value = serde_json::from_str(&props).expect("json");
    assert_eq!(v, serde_json::json!({"a": 1, "plan": "pro"}));
    env.stop().await;
}

const ORDER_DAG: &str = r#"
schedule = "@daily"
start_date = "2026-01-01"
[tasks.a]
kind = "ingest"
source = { path = "days/{{ ds }}.jsonl" }
table = "order_a"
[tasks.b]
kind = "ingest"
source = { path = "days/{{ ds }}.jsonl" }
table = "order_b"
"#;

fn line(id: &str, day: &str) -> String {
    format!(
        "{{\"message_id\": \"{id}\", \"event\": \"e\", \"timestamp\": \"{day}T10:00:00Z\", \"properties\": {{\"from\": \"{day}\"}}}}\n"
    )
}

/// Re-runs in any order give the table that running each interval once on the current
/// files gives: a message id belongs to the earliest interval whose files hold it.
#[tokio::test]
async fn re_runs_are_order_independent() {
    for t in backends().await {
        let env = Env::with_warehouse(&t, &[("order", ORDER_DAG)]).await;
        let days = env.dags_dir().join("days");
        std::fs::create_dir_all(&days).expect("mkdir");
        let d1 = ["m1", "m2", "m3", "m4"]
            .map(|m| line(m, "2026-01-02"))
            .concat();
        let d2 = ["m4", "m5"].map(|m| line(m, "2026-01-03")).concat();
        std::fs::write(days.join("2026-01-02.jsonl"), &d1).expect("w");
        std::fs::write(days.join("2026-01-03.jsonl"), &d2).expect("w");
        let (dag, vid) = env.registry.current("order").expect("dag");
        let trigger = |day: u32| {
            let (dag, env) = (dag.clone(), &env);
            async move {
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
                run
            }
        };
        let rerun = |run_id: String, task: &'static str| {
            let env = &env;
            async move {
                commands::clear(
                    &env.db,
                    &env.registry,
                    "order",
                    &run_id,
                    &[task.into()],
                    &commands::Scope::default(),
                    Utc::now(),
                )
                .await
                .expect("clear");
                env.engine.wake();
                tokio::time::sleep(Duration::from_millis(200)).await;
                let run = weft::db::runs::find_run(&env.db.conn, "order", &run_id)
                    .await
                    .expect("q")
                    .expect("run");
                env.wait_run(run.id, Duration::from_secs(60)).await;
            }
        };
        // Table a: day 1, day 2, then day 1's file loses m4 and day 1 is re-run.
        let r1 = trigger(2).await;
        let r2 = trigger(3).await;
        std::fs::write(
            days.join("2026-01-02.jsonl"),
            ["m1", "m2", "m3"].map(|m| line(m, "2026-01-02")).concat(),
        )
        .expect("w");
        rerun(r1.run_id.clone(), "a").await;
        // Table b was loaded by the same runs; re-run it in the other order on the
        // current files: day 2 first, then day 1.
        rerun(r2.run_id.clone(), "b").await;
        rerun(r1.run_id.clone(), "b").await;
        let wh = Db::connect(&env.config.connections["warehouse"].url)
            .await
            .expect("wh");
        let rows = |table: &str| {
            let wh = &wh;
            let sql = format!(
                "SELECT message_id || '@' || SUBSTR(CAST(interval_start AS TEXT), 1, 10) FROM {table} ORDER BY message_id"
            );
            async move {
                use sea_orm::ConnectionTrait;
                wh.conn
                    .query_all_raw(sea_orm::Statement::from_string(
                        wh.conn.get_database_backend(),
                        sql,
                    ))
                    .await
                    .expect("rows")
                    .into_iter()
                    .map(|r| r.try_get_by_index::<String>(0).expect("text"))
                    .collect::<Vec<_>>()
            }
        };
        let a = rows("order_a").await;
        assert_eq!(
            a,
            [
                "m1@2026-01-02",
                "m2@2026-01-02",
                "m3@2026-01-02",
                "m4@2026-01-03",
                "m5@2026-01-03"
            ],
            "m4 lives on in day 2's file"
        );
        assert_eq!(
            rows("order_b").await,
            a,
            "the order of re-runs does not matter"
        );
        // Day 1's file gets m4 back: it is day 1's again (the earliest interval holding it).
        std::fs::write(days.join("2026-01-02.jsonl"), &d1).expect("w");
        rerun(r1.run_id.clone(), "a").await;
        assert_eq!(rows("order_a").await[3], "m4@2026-01-02");
        env.stop().await;
        t.cleanup().await;
    }
}

/// A server that promises 10,000 bytes of JSON and hangs up after a few.
async fn cut_off_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        for _ in 0..20 {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n{\"data\": [{\"message_id\": \"m1\"")
                .await;
            let _ = sock.shutdown().await;
        }
    });
    format!("http://{addr}/events")
}

#[tokio::test]
async fn a_body_cut_off_midway_fails_the_try_and_a_corrupt_csv_gz_too() {
    let t = crate::support::sqlite_db().await;
    let url = cut_off_server().await;
    let dag = format!(
        "schedule = \"@daily\"\nstart_date = \"2026-01-01\"\n[tasks.pull]\nkind = \"ingest\"\nsource = {{ url = \"{url}\", items = \"data\" }}\ntable = \"cut_events\"\n[tasks.csv]\nkind = \"ingest\"\nsource = {{ path = \"data/{{{{ ds }}}}/*.csv.gz\", format = \"csv\" }}\ntable = \"cut_csv\"\n"
    );
    let env = Env::start(&t, &[("ingest_test", &dag)], |_| {}, None).await;
    let day = env.dags_dir().join("data/2026-01-02");
    std::fs::create_dir_all(&day).expect("mkdir");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    writeln!(gz, "message_id,event,timestamp").expect("gz");
    for i in 0..5000 {
        writeln!(gz, "c{i},e,2026-01-02T10:00:00Z").expect("gz");
    }
    let whole = gz.finish().expect("gz");
    std::fs::write(day.join("cut.csv.gz"), &whole[..whole.len() / 2]).expect("write");
    let run = run_once(&env, utc(2026, 1, 2, 0, 0)).await;
    let s = env.states(run.id).await;
    assert_eq!(s["pull"], TaskState::Failed);
    let (_, err, _) = crate::support::task_log(&env.db, run.id, "pull").await;
    assert!(
        err.contains("cut off") || err.contains("could not be read"),
        "{err}"
    );
    assert_eq!(s["csv"], TaskState::Failed);
    let (_, err, _) = crate::support::task_log(&env.db, run.id, "csv").await;
    assert!(
        err.contains("cut.csv.gz") && err.contains("cannot read"),
        "{err}"
    );
    env.stop().await;
}
