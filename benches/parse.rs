//! weft benchmarks: DAG parsing, end-to-end run latency (W1-W3), scheduler throughput
//! and idle memory. Prints a table and writes BENCHMARKS.md.
//!
//! `cargo bench` (release build). Figures depend on the machine; BENCHMARKS.md records
//! the machine they were taken on.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft::config::Config;
use weft::dag::{DagBag, ValidationContext};
use weft::db::Db;
use weft::scheduler::{Engine, EngineOptions, Registry, SystemClock, commands};

/// A SQLite warehouse in the benchmark's folder (`dags test` uses a temporary one
/// unless told).
fn warehouse_url(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("warehouse.db").display())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn write_parse_corpus(dir: &Path, files: usize, tasks: usize) {
    for f in 0..files {
        let mut s = format!(
            "description = \"generated dag {f}\"\nschedule = \"{} 3 * * *\"\ntimezone = \"Europe/Berlin\"\nstart_date = \"2026-01-01\"\ntags = [\"bench\"]\n\n[defaults]\nretries = 2\nretry_delay = \"30s\"\n\n",
            f % 60
        );
        for t in 0..tasks {
            let dep = if t == 0 {
                String::new()
            } else {
                format!("depends_on = [\"t{}\"]\n", t - 1)
            };
            let _ = write!(
                s,
                "[tasks.t{t}]\nkind = \"shell\"\ncommand = \"echo {{{{ ds }}}} step {t}\"\n{dep}\n"
            );
        }
        std::fs::write(dir.join(format!("dag_{f:04}.toml")), s).expect("write corpus");
    }
}

fn bench_parse(rows: &mut Vec<(String, String, String)>) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_parse_corpus(dir.path(), 1000, 20);
    let ctx = ValidationContext::default();
    let mut times = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let bag = DagBag::load_dir(dir.path(), &ctx).expect("load");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(bag.dags().count(), 1000, "{:?}", bag.errors().next());
    }
    eprintln!("parse: {:.1} ms", median(times.clone()));
    rows.push((
        "parse + validate 1,000 DAG files x 20 tasks (all cores)".into(),
        format!("{:.1} ms", median(times)),
        "< 200 ms".into(),
    ));
}

/// A registry sync when nothing changed: every file (and what it reads) is read again
/// and compared with its bundle; nothing is parsed or written.
async fn bench_rescan(rows: &mut Vec<(String, String, String)>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dags = dir.path().join("dags");
    std::fs::create_dir_all(&dags).expect("mkdir");
    write_parse_corpus(&dags, 1000, 20);
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("weft.db").display());
    let db = Db::connect(&url).await.expect("db");
    db.migrate().await.expect("migrate");
    let registry = Registry::new(dags, ValidationContext::default());
    let first = registry.sync(&db, chrono::Utc::now()).await.expect("sync");
    assert_eq!(first.loaded, 1000, "{:?}", first.errors.first());
    let mut times = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let r = registry.sync(&db, chrono::Utc::now()).await.expect("sync");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(r.new_versions.is_empty());
    }
    eprintln!("rescan: {:.1} ms", median(times.clone()));
    rows.push((
        "DAG folder re-read, 1,000 unchanged files (registry sync: bundles re-read and compared)"
            .into(),
        format!("{:.1} ms", median(times)),
        "< 100 ms (every `dag_poll_interval`, 2 s)".into(),
    ));
}

struct Bed {
    _dir: tempfile::TempDir,
    db: Db,
    registry: Arc<Registry>,
    engine: Engine,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

async fn bed(dags: &[(String, String)], parallelism: u32) -> Bed {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("dags")).expect("mkdir");
    for (name, src) in dags {
        std::fs::write(dir.path().join("dags").join(format!("{name}.toml")), src).expect("write");
    }
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("weft.db").display());
    let db = Db::connect(&url).await.expect("db");
    db.migrate().await.expect("migrate");
    let cfg = Config {
        database_url: url,
        dags_folder: dir.path().join("dags"),
        parallelism,
        ..Default::default()
    };
    let registry = Registry::new(
        cfg.dags_folder.clone(),
        weft::dag::ValidationContext::of(&cfg),
    );
    registry.sync(&db, chrono::Utc::now()).await.expect("sync");
    let options = EngineOptions {
        cron: false,
        watch_folder: false,
        ..Default::default()
    };
    let engine = Engine::new(
        db.clone(),
        cfg,
        registry.clone(),
        Arc::new(SystemClock),
        options,
    )
    .await
    .expect("engine");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let e = engine.clone();
    let handle = tokio::spawn(async move {
        e.run(async {
            let _ = rx.await;
        })
        .await
    });
    Bed {
        _dir: dir,
        db,
        registry,
        engine,
        stop: Some(tx),
        handle: Some(handle),
    }
}

impl Bed {
    /// Triggers the DAGs at once and returns the time until every run succeeded.
    async fn run_all(&self, dag_ids: &[String]) -> Duration {
        let mut events = self.engine.subscribe();
        let t = Instant::now();
        let mut pending = std::collections::HashSet::new();
        for id in dag_ids {
            let (dag, vid) = self.registry.current(id).expect("dag");
            let run = commands::trigger(
                &self.db,
                &dag,
                vid,
                &Default::default(),
                serde_json::Value::Null,
                None,
                chrono::Utc::now(),
            )
            .await
            .expect("trigger");
            pending.insert(run.id);
        }
        self.engine.wake();
        while !pending.is_empty() {
            let ev = tokio::time::timeout(Duration::from_secs(120), events.recv())
                .await
                .expect("run finished in time")
                .expect("event");
            assert_eq!(
                ev.state,
                weft::db::RunState::Success,
                "benchmark run failed"
            );
            pending.remove(&ev.run_pk);
        }
        t.elapsed()
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

fn chain(n: usize, kind: &str) -> String {
    let mut s = String::from("schedule = \"none\"\nmax_active_tasks = 256\nmax_active_runs = 64\n");
    for i in 0..n {
        let body = if kind == "shell" {
            "kind = \"shell\"\ncommand = \"true\"\n"
        } else {
            "kind = \"noop\"\n"
        };
        let dep = if i == 0 {
            String::new()
        } else {
            format!("depends_on = [\"t{}\"]\n", i - 1)
        };
        let _ = write!(s, "[tasks.t{i}]\n{body}{dep}");
    }
    s
}

fn fan(n: usize, kind: &str) -> String {
    let body = if kind == "shell" {
        "kind = \"shell\"\ncommand = \"true\"\n"
    } else {
        "kind = \"noop\"\n"
    };
    let mut s = format!("schedule = \"none\"\nmax_active_tasks = 100000\n[tasks.root]\n{body}");
    for i in 0..n {
        let _ = write!(s, "[tasks.t{i}]\n{body}depends_on = [\"root\"]\n");
    }
    let all: Vec<String> = (0..n).map(|i| format!("\"t{i}\"")).collect();
    let _ = write!(s, "[tasks.join]\n{body}depends_on = [{}]\n", all.join(", "));
    s
}

async fn bench_runs(rows: &mut Vec<(String, String, String)>) {
    let reps = 5;
    // W1: chain of 20 `true`.
    let b = bed(&[("w1".into(), chain(20, "shell"))], 32).await;
    let mut t = Vec::new();
    for _ in 0..reps {
        t.push(b.run_all(&["w1".into()]).await.as_secs_f64() * 1000.0);
    }
    b.stop().await;
    rows.push((
        "W1 chain of 20 shell tasks (`true`), trigger -> success".into(),
        format!("{:.0} ms", median(t)),
        "< 100 ms (Airflow 21.3 s, Luigi 0.28 s)".into(),
    ));

    // W2: fan-out of 100 + join.
    let b = bed(&[("w2".into(), fan(100, "shell"))], 32).await;
    let mut t = Vec::new();
    for _ in 0..reps {
        t.push(b.run_all(&["w2".into()]).await.as_secs_f64() * 1000.0);
    }
    b.stop().await;
    rows.push((
        "W2 fan-out of 100 + join (`true`)".into(),
        format!("{:.0} ms", median(t)),
        "< 300 ms (Airflow 14.0 s, Luigi 0.87 s)".into(),
    ));

    // W3: 10 DAGs x chain of 20 at once.
    let dags: Vec<(String, String)> = (0..10)
        .map(|i| (format!("w3_{i}"), chain(20, "shell")))
        .collect();
    let ids: Vec<String> = dags.iter().map(|(n, _)| n.clone()).collect();
    let b = bed(&dags, 32).await;
    let mut t = Vec::new();
    for _ in 0..reps {
        t.push(b.run_all(&ids).await.as_secs_f64() * 1000.0);
    }
    b.stop().await;
    rows.push((
        "W3 10 DAGs x chain of 20 at once".into(),
        format!("{:.0} ms", median(t)),
        "< 600 ms (Airflow 32.0 s, Luigi 1.63 s)".into(),
    ));

    // Throughput: 2,000 in-process no-op tasks; each goes pending -> scheduled ->
    // queued -> running -> success (4 transitions).
    let b = bed(&[("tp".into(), fan(2000, "noop"))], 256).await;
    let mut t = Vec::new();
    for _ in 0..3 {
        let d = b.run_all(&["tp".into()]).await;
        t.push(2002.0 * 4.0 / d.as_secs_f64());
    }
    b.stop().await;
    rows.push((
        "scheduler throughput, 2,002 no-op tasks".into(),
        format!("{:.0} transitions/s", median(t)),
        ">= 5,000 transitions/s".into(),
    ));
}

/// Server time of the DAGs page and a DAG's grid with 100 DAGs x 1,000 runs x 20 tasks
/// (2,000,000 task instances) on SQLite.
async fn bench_ui(rows: &mut Vec<(String, String, String)>) {
    use sea_orm::ConnectionTrait;
    use tower::ServiceExt;
    let dags: Vec<(String, String)> = (0..100)
        .map(|i| (format!("dag_{i:03}"), chain(20, "shell")))
        .collect();
    let b = bed(&dags, 4).await;
    let c = &b.db.conn;
    let t = Instant::now();
    c.execute_unprepared(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 999) \
         INSERT INTO dag_run (dag_id, run_id, run_type, state, logical_date, data_interval_start, data_interval_end, dag_version_id, params, conf, created_at, started_at, ended_at) \
         SELECT d.dag_id, 'scheduled__' || n.i, 'scheduled', CASE WHEN n.i % 10 = 3 THEN 'failed' ELSE 'success' END, \
           strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now', '-' || (n.i + 1) || ' days'), strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now', '-' || (n.i + 1) || ' days'), \
           strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now', '-' || n.i || ' days'), d.latest_version_id, '{}', '{}', \
           strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now', '-' || n.i || ' days'), strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now', '-' || n.i || ' days'), \
           strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now', '-' || n.i || ' days', '+5 minutes') FROM dag d, n",
    )
    .await
    .expect("runs");
    c.execute_unprepared(
        "WITH RECURSIVE t(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM t WHERE j < 19) \
         INSERT INTO task_instance (dag_run_id, dag_id, task_id, kind, state, try_number, max_tries, pool, pool_slots, priority, started_at, ended_at, duration_ms, updated_at) \
         SELECT r.id, r.dag_id, 't' || t.j, 'shell', CASE WHEN r.state = 'failed' AND t.j = 19 THEN 'failed' ELSE 'success' END, 1, 1, 'default_pool', 1, 0, r.started_at, r.ended_at, 15000, r.ended_at \
         FROM dag_run r, t",
    )
    .await
    .expect("task instances");
    c.execute_unprepared(
        "INSERT INTO task_try (task_instance_id, dag_run_id, dag_id, task_id, try_number, state, started_at, ended_at, duration_ms, hostname, worker_id) \
         SELECT ti.id, ti.dag_run_id, ti.dag_id, ti.task_id, 1, ti.state, ti.started_at, ti.ended_at, 15000, 'bench', 'bench' \
         FROM task_instance ti JOIN dag_run r ON r.id = ti.dag_run_id WHERE r.ended_at >= strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now', '-30 days')",
    )
    .await
    .expect("tries");
    c.execute_unprepared("ANALYZE").await.expect("analyze");
    eprintln!(
        "ui fixture: 100 dags x 1,000 runs x 20 tasks in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let cfg = Config {
        database_url: String::new(),
        ..Default::default()
    };
    let state = weft::web::AppState::new(b.db.clone(), cfg, b.registry.clone(), None)
        .await
        .expect("state");
    let app = weft::web::app(state);
    for (label, path) in [
        (
            "DAGs page (100 DAGs, 100,000 runs, 2,000,000 task instances)",
            "/dags",
        ),
        ("grid view of one DAG (25 runs x 20 tasks)", "/dags/dag_050"),
    ] {
        let mut times = Vec::new();
        for _ in 0..7 {
            let req = axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .expect("request");
            let t = Instant::now();
            let res = app.clone().oneshot(req).await.expect("response");
            let _ = http_body_util::BodyExt::collect(res.into_body())
                .await
                .expect("body");
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        rows.push((
            format!("UI: {label}, server time"),
            format!("{:.1} ms", median(times)),
            "< 50 ms".into(),
        ));
    }
    b.stop().await;
}

/// `ingest` of 1,000,000 JSONL events (about 300 MB) into SQLite, run by `weft dags
/// test` in a child process: events per second and the child's peak RSS.
fn bench_ingest(rows: &mut Vec<(String, String, String)>) {
    use std::io::Write as _;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("dags/data")).expect("mkdir");
    let t = Instant::now();
    {
        let f = std::fs::File::create(dir.path().join("dags/data/events.jsonl")).expect("file");
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        for i in 0..1_000_000u32 {
            writeln!(
                w,
                r#"{{"message_id":"m{i:08}","type":"track","event":"api_call","user_id":"user-{u}","anonymous_id":null,"timestamp":"2026-02-01T{h:02}:{m:02}:{s:02}Z","sent_at":"2026-02-01T{h:02}:{m:02}:{s:02}Z","received_at":"2026-02-01T{h:02}:{m:02}:{s:02}Z","properties":{{"endpoint":"/v1/runs","ms":{ms},"plan":"team","region":"eu-west-1"}},"context":{{"library":{{"name":"analytics.js","version":"4.1.0"}},"ip":"203.0.113.7"}}}}"#,
                u = i % 5000,
                h = (i / 3600) % 24,
                m = (i / 60) % 60,
                s = i % 60,
                ms = i % 900
            )
            .expect("write");
        }
    }
    let size = std::fs::metadata(dir.path().join("dags/data/events.jsonl"))
        .map(|m| m.len())
        .unwrap_or(0);
    eprintln!(
        "ingest fixture: {} MB in {:.1} s",
        size / 1_000_000,
        t.elapsed().as_secs_f64()
    );
    std::fs::write(dir.path().join("dags/ingest_bench.toml"), "schedule = \"none\"\n[tasks.load]\nkind = \"ingest\"\nsource = { path = \"data/events.jsonl\" }\ntable = \"events\"\n").expect("dag");
    std::fs::write(
        dir.path().join("weft.toml"),
        "[connections.warehouse]\nurl = \"sqlite://warehouse.db?mode=rwc\"\n",
    )
    .expect("config");
    let t = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .current_dir(dir.path())
        .args([
            "dags",
            "test",
            "ingest_bench",
            "--warehouse",
            &warehouse_url(dir.path()),
        ])
        .output()
        .expect("weft dags test");
    let secs = t.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ingest benchmark failed: {text}");
    let rate = text
        .lines()
        .find_map(|l| {
            l.split(" s (")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse::<f64>().ok())
        })
        .unwrap_or(f64::NAN);
    let peak_kb = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .map(|u| u.max_rss())
        .unwrap_or(0);
    eprintln!(
        "ingest: {rate:.0} events/s, whole command {secs:.1} s, peak RSS {} MB",
        peak_kb / 1024
    );
    rows.push((
        format!(
            "ingest 1,000,000 JSONL events ({} MB) into SQLite",
            size / 1_000_000
        ),
        format!("{rate:.0} events/s"),
        ">= 100,000 events/s".into(),
    ));
    rows.push((
        "peak RSS of that ingest (`weft dags test`, whole process)".into(),
        format!("{:.0} MB", peak_kb as f64 / 1024.0),
        "< 200 MB".into(),
    ));
}

/// The number before `unit` in the first log line containing `marker`.
fn logged_number(text: &str, marker: &str, unit: &str) -> f64 {
    text.lines()
        .filter(|l| l.contains(marker))
        .find_map(|l| {
            let before = l.split(unit).next()?;
            before.split_whitespace().last()?.parse::<f64>().ok()
        })
        .unwrap_or(f64::NAN)
}

/// `experiment` over 100,000 users and `survey_sync` of a 100,000-response CSV export,
/// each through `weft dags test` on SQLite; the figures are the tasks' own timings.
fn bench_analytics(rows: &mut Vec<(String, String, String)>) {
    use std::io::Write as _;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("dags/data")).expect("mkdir");
    let users = 100_000u32;
    {
        let f = std::fs::File::create(dir.path().join("dags/data/events.jsonl")).expect("file");
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        let mut n = 0u64;
        let mut emit = |w: &mut std::io::BufWriter<std::fs::File>,
                        ev: &str,
                        u: u32,
                        ts: &str,
                        props: String| {
            n += 1;
            writeln!(w, r#"{{"message_id":"m{n}","event":"{ev}","user_id":"u{u}","timestamp":"{ts}","properties":{props}}}"#).expect("write");
        };
        for u in 0..users {
            let variant = if u % 2 == 0 { "control" } else { "treatment" };
            let h = u % 20;
            emit(
                &mut w,
                "$exposure",
                u,
                &format!("2026-02-01T{h:02}:00:00Z"),
                format!(r#"{{"flag":"bench_flag","variant":"{variant}"}}"#),
            );
            for k in 0..3 {
                emit(
                    &mut w,
                    "api_call",
                    u,
                    &format!("2026-02-01T{:02}:30:00Z", h + 1 + k),
                    format!(r#"{{"ms":{}}}"#, 100 + (u * 7 + k) % 900),
                );
            }
            if u % 9 == 0 || (variant == "treatment" && u % 31 == 0) {
                emit(
                    &mut w,
                    "upgraded",
                    u,
                    &format!("2026-02-02T{h:02}:00:00Z"),
                    "{}".into(),
                );
            }
        }
        let f = std::fs::File::create(dir.path().join("dags/data/responses.csv")).expect("file");
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        writeln!(w, "token,submitted_at,nps,reason,comment,user_id").expect("write");
        for i in 0..users {
            writeln!(
                w,
                "r{i},2026-02-{:02} {:02}:{:02}:00,{},{},{},u{i}",
                1 + i % 28,
                i % 24,
                i % 60,
                i % 11,
                ["Speed", "Docs", "Price"][(i % 3) as usize],
                if i % 4 == 0 {
                    "a comment, with a comma"
                } else {
                    ""
                }
            )
            .expect("write");
        }
    }
    std::fs::write(
        dir.path().join("dags/analytics_bench.toml"),
        r#"schedule = "@daily"
start_date = "2026-02-05"
[tasks.load]
kind = "ingest"
source = { path = "data/events.jsonl" }
table = "events"
[tasks.analyze]
kind = "experiment"
depends_on = ["load"]
experiment = "bench_flag"
events = { table = "events" }
control = "control"
split = { control = 0.5, treatment = 0.5 }
[[tasks.analyze.metrics]]
name = "upgraded"
event = "upgraded"
[[tasks.analyze.metrics]]
name = "latency"
type = "mean"
event = "api_call"
property = "ms"
[[tasks.analyze.metrics]]
name = "latency_per_call"
type = "ratio"
numerator = { event = "api_call", property = "ms" }
denominator = { event = "api_call" }
[tasks.survey]
kind = "survey_sync"
depends_on = ["analyze"]
provider = "csv"
form_id = "bench"
path = "data/responses.csv"
nps_field = "nps"
metrics_window = "all"
"#,
    )
    .expect("dag");
    std::fs::write(
        dir.path().join("weft.toml"),
        "[connections.warehouse]\nurl = \"sqlite://warehouse.db?mode=rwc\"\n",
    )
    .expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .current_dir(dir.path())
        .args([
            "dags",
            "test",
            "analytics_bench",
            "--date",
            "2026-02-05",
            "--warehouse",
            &warehouse_url(dir.path()),
        ])
        .output()
        .expect("weft dags test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "analytics benchmark failed: {text}");
    let exp_ms = logged_number(&text, "[weft] analysed", " ms");
    let sync_ms = logged_number(&text, "response(s) upserted", " ms;");
    eprintln!("experiment: {exp_ms} ms; survey sync: {sync_ms} ms");
    rows.push((
        "experiment: 100,000 users, 3 metrics (conversion, mean, ratio) over 411k events, SQLite"
            .into(),
        format!("{:.2} s", exp_ms / 1000.0),
        "< 10 s".into(),
    ));
    rows.push((
        "survey_sync: CSV export of 100,000 responses into SQLite".into(),
        format!("{:.0} responses/s", 100_000.0 / (sync_ms / 1000.0)),
        ">= 20,000 responses/s".into(),
    ));
}

fn rss_of_serve(rows: &mut Vec<(String, String, String)>) {
    let exe = env!("CARGO_BIN_EXE_weft");
    let dir = tempfile::tempdir().expect("tempdir");
    let dags = Path::new(env!("CARGO_MANIFEST_DIR")).join("dags");
    std::fs::write(
        dir.path().join("weft.toml"),
        format!(
            "bind = \"127.0.0.1:0\"\ndags_folder = \"{}\"\n",
            dags.display()
        ),
    )
    .expect("config");
    let mut child = std::process::Command::new(exe)
        .arg("serve")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn weft serve");
    std::thread::sleep(Duration::from_secs(8));
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let _ = child.kill();
    let _ = child.wait();
    rows.push((
        "RSS of `weft serve`, idle, example DAGs".into(),
        format!("{:.1} MB", kb / 1024.0),
        "< 50 MB".into(),
    ));
}

/// A simulated year of 20 hourly DAGs (3 tasks, one try and a 1 KB log each) with a
/// 30-day retention applied once a simulated day: the database's size levels off at
/// the retention window instead of growing with the year.
async fn bench_retention(rows: &mut Vec<(String, String, String)>) {
    use sea_orm::ConnectionTrait;
    let dags: Vec<(String, String)> = (0..20)
        .map(|i| (format!("hourly_{i:02}"), chain(3, "shell")))
        .collect();
    let b = bed(&dags, 4).await;
    let c = &b.db.conn;
    let size = |c: &'_ sea_orm::DatabaseConnection| {
        let c = c.clone();
        async move {
            c.execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)")
                .await
                .expect("checkpoint");
            let q = |sql: &'static str| {
                let c = c.clone();
                async move {
                    c.query_one_raw(sea_orm::Statement::from_string(
                        sea_orm::DbBackend::Sqlite,
                        sql,
                    ))
                    .await
                    .expect("pragma")
                    .and_then(|r| r.try_get_by_index::<i64>(0).ok())
                    .unwrap_or(0)
                }
            };
            q("PRAGMA page_count").await * q("PRAGMA page_size").await
        }
    };
    let start = chrono::Utc::now() - chrono::Duration::days(365);
    let t = Instant::now();
    let mut sizes = Vec::new();
    for day in 0..365i64 {
        let d0 = start + chrono::Duration::days(day);
        let base = d0.format("%Y-%m-%d %H:%M:%S").to_string();
        let to = (d0 + chrono::Duration::hours(24)).to_rfc3339();
        // Hour h of the day, and its end, in the format the database stores.
        let at = |plus: &str| {
            format!("strftime('%Y-%m-%dT%H:%M:%S+00:00', '{base}', '+' || (h.i{plus}) || ' hours')")
        };
        let (start, end) = (at(""), at(" + 1"));
        c.execute_unprepared(&format!(
            "WITH RECURSIVE h(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM h WHERE i < 23) \
             INSERT INTO dag_run (dag_id, run_id, run_type, state, logical_date, data_interval_start, data_interval_end, dag_version_id, params, conf, created_at, started_at, ended_at) \
             SELECT d.dag_id, 'scheduled__{day}_' || h.i, 'scheduled', 'success', {start}, {start}, {end}, d.latest_version_id, '{{}}', '{{}}', {end}, {end}, {end} FROM dag d, h"
        ))
        .await
        .expect("runs");
        c.execute_unprepared(&format!(
            "WITH RECURSIVE t(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM t WHERE j < 2) \
             INSERT INTO task_instance (dag_run_id, dag_id, task_id, kind, state, try_number, max_tries, pool, pool_slots, priority, started_at, ended_at, duration_ms, updated_at) \
             SELECT r.id, r.dag_id, 't' || t.j, 'shell', 'success', 1, 1, 'default_pool', 1, 0, r.started_at, r.ended_at, 1000, r.ended_at \
             FROM dag_run r, t WHERE r.run_id LIKE 'scheduled__{day}\\_%' ESCAPE '\\'"
        ))
        .await
        .expect("tis");
        c.execute_unprepared(
            "INSERT INTO task_try (task_instance_id, dag_run_id, dag_id, task_id, try_number, state, started_at, ended_at, duration_ms, hostname, worker_id) \
             SELECT ti.id, ti.dag_run_id, ti.dag_id, ti.task_id, 1, 'success', ti.started_at, ti.ended_at, 1000, 'bench', 'bench' \
             FROM task_instance ti WHERE ti.id > (SELECT COALESCE(MAX(task_instance_id), 0) FROM task_try)",
        )
        .await
        .expect("tries");
        c.execute_unprepared(&format!(
            "INSERT INTO task_log (task_try_id, seq, content, created_at) \
             SELECT tt.id, 0, printf('%.1000c', 'x'), '{to}' FROM task_try tt WHERE tt.id > (SELECT COALESCE(MAX(task_try_id), 0) FROM task_log)"
        ))
        .await
        .expect("logs");
        let cutoff = d0 + chrono::Duration::days(1) - chrono::Duration::days(30);
        weft::db::maintenance::clean(c, cutoff, 500, Duration::ZERO)
            .await
            .expect("clean");
        if [29, 89, 179, 364].contains(&day) {
            sizes.push((day + 1, size(c).await));
        }
    }
    let runs: i64 = c
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Sqlite,
            "SELECT COUNT(*) FROM dag_run",
        ))
        .await
        .expect("count")
        .and_then(|r| r.try_get_by_index::<i64>(0).ok())
        .unwrap_or(0);
    eprintln!(
        "retention: a simulated year in {:.1} s, {runs} runs kept",
        t.elapsed().as_secs_f64()
    );
    let mb = |b: i64| b as f64 / 1_048_576.0;
    let text: Vec<String> = sizes
        .iter()
        .map(|(d, s)| format!("day {d}: {:.1} MB", mb(*s)))
        .collect();
    let (first, last) = (
        sizes.first().map_or(0, |s| s.1),
        sizes.last().map_or(0, |s| s.1),
    );
    rows.push((
        "DB size, 20 hourly DAGs for a simulated year, retention 30d (175,200 runs made)".into(),
        text.join(", "),
        format!(
            "flat after day 30 (day 365 / day 30 = {:.2})",
            last as f64 / first.max(1) as f64
        ),
    ));
    b.stop().await;
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mut rows = Vec::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // WEFT_BENCH_ONLY=ui|ingest|analytics|runs|retention|parse measures one part and leaves BENCHMARKS.md alone.
    let only = std::env::var("WEFT_BENCH_ONLY").unwrap_or_default();
    if !only.is_empty() {
        match only.as_str() {
            "ui" => rt.block_on(bench_ui(&mut rows)),
            "ingest" => bench_ingest(&mut rows),
            "analytics" => bench_analytics(&mut rows),
            "retention" => rt.block_on(bench_retention(&mut rows)),
            "runs" => rt.block_on(bench_runs(&mut rows)),
            "parse" => {
                bench_parse(&mut rows);
                rt.block_on(bench_rescan(&mut rows));
            }
            other => {
                panic!(
                    "WEFT_BENCH_ONLY={other}: use ui, ingest, analytics, runs, retention or parse"
                )
            }
        }
        for (name, value, target) in &rows {
            println!("{name}: {value} (target {target})");
        }
        return;
    }
    // First: the ingest child's peak RSS must not include other children.
    bench_ingest(&mut rows);
    bench_analytics(&mut rows);
    bench_parse(&mut rows);
    rt.block_on(bench_rescan(&mut rows));
    rt.block_on(bench_runs(&mut rows));
    rt.block_on(bench_ui(&mut rows));
    rt.block_on(bench_retention(&mut rows));
    rss_of_serve(&mut rows);

    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(10);
    println!("\n{:<w$}  {:>22}  target", "benchmark", "result");
    for (name, value, target) in &rows {
        println!("{name:<w$}  {value:>22}  {target}");
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut md =
        String::from("Produced by `cargo bench` (benches/parse.rs); medians of repeated runs.\n");
    let _ = write!(
        md,
        "Machine: {cores} cores, {cpu}. Database: embedded SQLite (WAL) in a temp folder.\n\n| benchmark | result | target |\n|---|---|---|\n"
    );
    for (name, value, target) in &rows {
        let _ = writeln!(md, "| {name} | {value} | {target} |");
    }
    md.push_str(
        "\nWhat bounds each figure: W1 is sequential (20 process spawns plus, per task, one claim, one start and one finish transaction on a single SQLite connection); W2 and W3 are bounded by `parallelism` (32) process spawns at a time and by SQLite's single writer; throughput counts the four state transitions of each in-process `noop` task; RSS is the resident set after 8 s of `weft serve` with the example DAGs; the ingest figure is the loader's own events/s (from its log line), its RSS the peak of the whole `weft dags test` process (getrusage); UI figures are the time to render the page in-process (no network), median of 7, on a SQLite database filled by SQL with 100 DAGs x 1,000 daily runs x 20 task instances and tries for the last 30 days.\n",
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, with_generated(&old, &md)).expect("write BENCHMARKS.md");
    println!("\nwrote {}", path.display());
}

const GENERATED_START: &str = "<!-- generated by `cargo bench` (benches/parse.rs): everything up to the end marker is rewritten by it -->";
const GENERATED_END: &str = "<!-- end of generated figures -->";

/// BENCHMARKS.md with its generated part replaced by `generated`; the hand-written notes
/// around it are kept as they are.
fn with_generated(old: &str, generated: &str) -> String {
    let block = format!("{GENERATED_START}\n{}{GENERATED_END}", generated);
    match (old.find(GENERATED_START), old.find(GENERATED_END)) {
        (Some(a), Some(b)) if b > a => {
            format!("{}{block}{}", &old[..a], &old[b + GENERATED_END.len()..])
        }
        _ => format!("# Benchmarks\n\n{block}\n"),
    }
}
