//! `cargo bench --bench scale`: the scheduler with many DAGs, and the web server under
//! load while the engine runs. Prints a table and rewrites its block of BENCHMARKS.md.
//!
//! `WEFT_BENCH_ONLY=scheduler|throughput|explain|load` runs one part (and leaves BENCHMARKS.md alone);
//! `WEFT_BENCH_POSTGRES_URL` (or `WEFT_TEST_POSTGRES_URL`) adds PostgreSQL;
//! `WEFT_BENCH_LOAD_SECS` (60) is how long the load lasts.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use weft::config::Config;
use weft::db::{Db, dags};
use weft::scheduler::{Clock, Engine, EngineOptions, ManualClock, Registry};

type Rows = Vec<(String, String, String)>;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// CPU seconds this process has used (user + system).
fn cpu_seconds() -> f64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(f64::NAN)
}

fn pg_admin() -> Option<String> {
    ["WEFT_BENCH_POSTGRES_URL", "WEFT_TEST_POSTGRES_URL"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// A database for one measurement: a SQLite file in `dir`, or a fresh PostgreSQL
/// database (dropped by `drop_pg`).
async fn fresh_db(dir: &Path, pg: Option<&str>) -> (String, Option<String>) {
    match pg {
        None => (
            format!("sqlite://{}?mode=rwc", dir.join("weft.db").display()),
            None,
        ),
        Some(admin) => {
            let name = format!("weft_bench_{}", uuid::Uuid::new_v4().simple());
            let a = Db::connect(admin).await.expect("admin");
            a.conn
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create database");
            a.conn.close().await.ok();
            let base = admin.rsplit_once('/').map(|(b, _)| b).expect("url");
            (format!("{base}/{name}"), Some(name))
        }
    }
}

async fn drop_pg(name: Option<String>) {
    if let (Some(name), Some(admin)) = (name, pg_admin())
        && let Ok(a) = Db::connect(&admin).await
    {
        let _ = a
            .conn
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
}

const HOURLY: &str = "schedule = \"0 * * * *\"\nstart_date = \"2026-01-01T00:00:00Z\"\ncatchup = false\n[tasks.t]\nkind = \"noop\"\n";

/// The scheduler alone (no tries run) with `n` hourly DAGs: the pass with nothing due,
/// the CPU of an idle scheduler, and the time to create every run at the top of the hour.
async fn scheduler_scale(n: usize, pg: Option<&str>, rows: &mut Rows) {
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("dags");
    std::fs::create_dir_all(&folder).expect("mkdir");
    for i in 0..n {
        std::fs::write(folder.join(format!("d{i:05}.toml")), HOURLY).expect("write");
    }
    let (url, pg_name) = fresh_db(dir.path(), pg).await;
    let db = Db::connect(&url).await.expect("db");
    db.migrate().await.expect("migrate");
    let cfg = Config {
        database_url: url.clone(),
        dags_folder: folder.clone(),
        ..Default::default()
    };
    let registry = Registry::new(folder, weft::dag::ValidationContext::of(&cfg));
    let t = Instant::now();
    registry.sync(&db, Utc::now()).await.expect("sync");
    let first_sync = t.elapsed();
    let t = Instant::now();
    registry.sync(&db, Utc::now()).await.expect("sync");
    let poll = t.elapsed();
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 5, 1, 10, 30, 0).unwrap());
    let options = EngineOptions {
        cron: true,
        execute: false,
        watch_folder: false,
        ..Default::default()
    };
    let engine = Engine::new(
        db.clone(),
        cfg,
        registry.clone(),
        clock.clone() as Arc<dyn Clock>,
        options,
    )
    .await
    .expect("engine");
    let backend = if pg.is_some() { "PostgreSQL" } else { "SQLite" };
    let until_planned = |engine: Engine, db: Db, now| async move {
        let t = Instant::now();
        loop {
            engine.tick().await.expect("tick");
            if dags::due_dags(&db.conn, now, 1)
                .await
                .expect("due")
                .is_empty()
            {
                break;
            }
        }
        t.elapsed()
    };
    until_planned(engine.clone(), db.clone(), clock.now()).await;
    // Nothing due: the cost of one pass.
    let mut passes = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        engine.tick().await.expect("tick");
        passes.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    // Idle: the loop as it runs, for 10 s.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let e = engine.clone();
    let cpu0 = cpu_seconds();
    let job = tokio::spawn(async move {
        e.run(async {
            let _ = stopped.await;
        })
        .await
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_cpu = (cpu_seconds() - cpu0) / 10.0 * 100.0;
    let _ = stop.send(());
    let _ = job.await;
    // The top of the hour: every DAG is due at once.
    let top = Utc.with_ymd_and_hms(2026, 5, 1, 11, 0, 0).unwrap();
    clock.set(top);
    let engine = Engine::new(
        db.clone(),
        Config {
            database_url: url,
            ..Default::default()
        },
        registry,
        clock.clone() as Arc<dyn Clock>,
        EngineOptions {
            cron: true,
            execute: false,
            watch_folder: false,
            ..Default::default()
        },
    )
    .await
    .expect("engine");
    let create = until_planned(engine, db.clone(), top).await;
    let runs: i64 = db
        .conn
        .query_one_raw(Statement::from_string(
            db.backend(),
            "SELECT COUNT(*) FROM dag_run",
        ))
        .await
        .expect("count")
        .and_then(|r| r.try_get_by_index(0).ok())
        .unwrap_or(0);
    assert_eq!(runs, 2 * n as i64, "one run per DAG per hour");
    let label = format!("{n} hourly DAGs, {backend}");
    rows.push((
        format!("scheduler pass with nothing due, {label}"),
        format!("{:.2} ms", median(passes)),
        "flat from 100 to 10,000 DAGs".into(),
    ));
    rows.push((
        format!("idle scheduler CPU (no folder reads), {label}"),
        format!("{idle_cpu:.2} %"),
        "flat".into(),
    ));
    rows.push((
        format!("create the {n} due runs at the top of the hour, {label}"),
        format!("{:.2} s", create.as_secs_f64()),
        "< 60 s for 10,000".into(),
    ));
    if pg.is_none() {
        rows.push((
            format!(
                "DAG-folder poll, {n} unchanged files (first read {:.1} s)",
                first_sync.as_secs_f64()
            ),
            format!("{:.0} ms", poll.as_secs_f64() * 1000.0),
            "every dag_poll_interval (2 s)".into(),
        ));
    }
    db.conn.clone().close().await.ok();
    drop_pg(pg_name).await;
}

const DAGS: usize = 20;
const RUNS_PER_DAG: usize = 2_500;
const TASKS: usize = 20;

fn chain_dag() -> String {
    let mut s = String::from("schedule = \"none\"\nmax_active_runs = 64\n");
    for j in 0..TASKS {
        let _ = write!(s, "[tasks.t{j}]\nkind = \"shell\"\ncommand = \"true\"\n");
        if j > 0 {
            let _ = writeln!(s, "depends_on = [\"t{}\"]", j - 1);
        }
    }
    s
}

/// 20 DAGs x 2,500 hourly runs x 20 task instances (1,000,000), tries for the last
/// 30 days, written by SQL.
async fn load_fixture(db: &Db) {
    let pg = db.backend() == DbBackend::Postgres;
    let (runs, tis, tries) = if pg {
        (
            format!(
                "INSERT INTO dag_run (dag_id, run_id, run_type, state, logical_date, data_interval_start, data_interval_end, dag_version_id, params, conf, created_at, started_at, ended_at) \
                 SELECT d.dag_id, 'scheduled__' || n, 'scheduled', CASE WHEN n % 10 = 3 THEN 'failed' ELSE 'success' END, \
                   now() - (n + 1) * interval '1 hour', now() - (n + 1) * interval '1 hour', now() - n * interval '1 hour', d.latest_version_id, '{{}}', '{{}}', \
                   now() - n * interval '1 hour', now() - n * interval '1 hour', now() - n * interval '1 hour' + interval '5 minutes' \
                 FROM dag d, generate_series(0, {}) n",
                RUNS_PER_DAG - 1
            ),
            format!(
                "INSERT INTO task_instance (dag_run_id, dag_id, task_id, kind, state, try_number, max_tries, pool, pool_slots, priority, started_at, ended_at, duration_ms, updated_at, queue) \
                 SELECT r.id, r.dag_id, 't' || j, 'shell', CASE WHEN r.state = 'failed' AND j = {last} THEN 'failed' ELSE 'success' END, 1, 1, 'default_pool', 1, 0, r.started_at, r.ended_at, 15000, r.ended_at, 'default' \
                 FROM dag_run r, generate_series(0, {last}) j",
                last = TASKS - 1
            ),
            "INSERT INTO task_try (task_instance_id, dag_run_id, dag_id, task_id, try_number, state, started_at, ended_at, duration_ms, hostname, worker_id) \
             SELECT ti.id, ti.dag_run_id, ti.dag_id, ti.task_id, 1, ti.state, ti.started_at, ti.ended_at, 15000, 'bench', 'bench' \
             FROM task_instance ti JOIN dag_run r ON r.id = ti.dag_run_id WHERE r.ended_at >= now() - interval '30 days'"
                .to_string(),
        )
    } else {
        let ts = |e: &str| format!("strftime('%Y-%m-%dT%H:%M:%S+00:00', 'now', {e})");
        (
            format!(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {}) \
                 INSERT INTO dag_run (dag_id, run_id, run_type, state, logical_date, data_interval_start, data_interval_end, dag_version_id, params, conf, created_at, started_at, ended_at) \
                 SELECT d.dag_id, 'scheduled__' || n.i, 'scheduled', CASE WHEN n.i % 10 = 3 THEN 'failed' ELSE 'success' END, \
                   {a}, {a}, {b}, d.latest_version_id, '{{}}', '{{}}', {b}, {b}, {c} FROM dag d, n",
                RUNS_PER_DAG - 1,
                a = ts("'-' || (n.i + 1) || ' hours'"),
                b = ts("'-' || n.i || ' hours'"),
                c = ts("'-' || n.i || ' hours', '+5 minutes'"),
            ),
            format!(
                "WITH RECURSIVE t(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM t WHERE j < {last}) \
                 INSERT INTO task_instance (dag_run_id, dag_id, task_id, kind, state, try_number, max_tries, pool, pool_slots, priority, started_at, ended_at, duration_ms, updated_at, queue) \
                 SELECT r.id, r.dag_id, 't' || t.j, 'shell', CASE WHEN r.state = 'failed' AND t.j = {last} THEN 'failed' ELSE 'success' END, 1, 1, 'default_pool', 1, 0, r.started_at, r.ended_at, 15000, r.ended_at, 'default' \
                 FROM dag_run r, t",
                last = TASKS - 1
            ),
            format!(
                "INSERT INTO task_try (task_instance_id, dag_run_id, dag_id, task_id, try_number, state, started_at, ended_at, duration_ms, hostname, worker_id) \
                 SELECT ti.id, ti.dag_run_id, ti.dag_id, ti.task_id, 1, ti.state, ti.started_at, ti.ended_at, 15000, 'bench', 'bench' \
                 FROM task_instance ti JOIN dag_run r ON r.id = ti.dag_run_id WHERE r.ended_at >= {}",
                ts("'-30 days'")
            ),
        )
    };
    for sql in [runs, tis, tries] {
        db.conn.execute_unprepared(&sql).await.expect("fixture");
    }
    db.conn
        .execute_unprepared("ANALYZE")
        .await
        .expect("analyze");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// What the load measured.
#[derive(Default)]
struct Tally {
    latencies: std::collections::BTreeMap<&'static str, Vec<f64>>,
    ok: u64,
    busy: u64,
    errors: u64,
}

const PAGES: &[(&str, &str)] = &[
    ("/dags", "/dags"),
    ("DAG page (grid)", "/dags/dag_05"),
    ("run page", "/dags/dag_05/runs/scheduled__7"),
    ("/dashboard", "/dashboard"),
    ("API runs", "/api/v1/dags/dag_05/runs?limit=25"),
];

async fn get(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Empty<axum::body::Bytes>,
    >,
    url: &str,
) -> Result<(u16, axum::body::Bytes), String> {
    use http_body_util::BodyExt;
    let uri: axum::http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let res = client.get(uri).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// The load fixture in a fresh database under `dir`: the DAG folder, its DAGs recorded,
/// 1,000,000 task instances. Returns the database's URL, its PostgreSQL name (to drop)
/// and the open database with its config and registry.
async fn loaded_fixture(
    dir: &Path,
    pg: Option<&str>,
) -> (String, Option<String>, Db, Config, Arc<Registry>) {
    let folder = dir.join("dags");
    std::fs::create_dir_all(&folder).expect("mkdir");
    for i in 0..DAGS {
        std::fs::write(folder.join(format!("dag_{i:02}.toml")), chain_dag()).expect("write");
    }
    let (url, pg_name) = fresh_db(dir, pg).await;
    let db = Db::connect(&url).await.expect("db");
    db.migrate().await.expect("migrate");
    let cfg = Config {
        database_url: url.clone(),
        dags_folder: folder.clone(),
        ..Default::default()
    };
    let registry = Registry::new(folder, weft::dag::ValidationContext::of(&cfg));
    registry.sync(&db, Utc::now()).await.expect("sync");
    let t = Instant::now();
    load_fixture(&db).await;
    eprintln!(
        "load fixture: {DAGS} dags x {RUNS_PER_DAG} runs x {TASKS} tasks in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    (url, pg_name, db, cfg, registry)
}

/// `weft serve` on 1,000,000 task instances, with 200 keep-alive clients reading pages
/// for `secs` seconds while a run is triggered every 5 s.
async fn web_load(pg: Option<&str>, secs: u64, rows: &mut Rows) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, pg_name, db, _, _) = loaded_fixture(dir.path(), pg).await;
    db.conn.close().await.ok();
    let port = free_port();
    std::fs::write(
        dir.path().join("weft.toml"),
        format!("database_url = \"{url}\"\nbind = \"127.0.0.1:{port}\"\n"),
    )
    .expect("config");
    let exe = env!("CARGO_BIN_EXE_weft");
    // An API token to trigger runs with, as an operator's script would.
    let cli = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write as _;
        let mut child = std::process::Command::new(exe)
            .args(args)
            .current_dir(dir.path())
            .env("WEFT_LOG", "weft=warn")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("weft");
        if let Some(text) = stdin {
            let _ = child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes());
        }
        let out = child.wait_with_output().expect("weft");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    cli(
        &[
            "users",
            "create",
            "bench",
            "--role",
            "admin",
            "--password-stdin",
        ],
        Some("benchpass123\n"),
    );
    let token = cli(&["users", "token", "bench"], None)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    let mut server = std::process::Command::new(exe)
        .arg("serve")
        .current_dir(dir.path())
        .env("WEFT_LOG", "weft=warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("serve.log")).expect("log"))
        .spawn()
        .expect("spawn serve");
    let base = format!("http://127.0.0.1:{port}");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http::<http_body_util::Empty<axum::body::Bytes>>();
    let ready = Instant::now();
    while get(&client, &format!("{base}/health")).await.is_err() {
        assert!(
            ready.elapsed() < Duration::from_secs(60),
            "serve did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the first passes settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Each page alone first (median of 5): what one request costs without contention.
    for (label, path) in PAGES {
        let mut v = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let r = get(&client, &format!("{base}{path}")).await;
            assert!(matches!(r, Ok((200, _))), "{path}: {:?}", r.map(|(s, _)| s));
            v.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let backend = if pg.is_some() { "PostgreSQL" } else { "SQLite" };
        rows.push((
            format!("  {label} alone (no load), {backend}"),
            format!("{:.1} ms", median(v)),
            "".into(),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut clients = Vec::new();
    for c in 0..200usize {
        let client = client.clone();
        let base = base.clone();
        clients.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut i = c;
            while Instant::now() < deadline {
                let (label, path) = PAGES[i % PAGES.len()];
                i += 1;
                let t = Instant::now();
                match get(&client, &format!("{base}{path}")).await {
                    Ok((200, _)) => {
                        tally.ok += 1;
                        tally
                            .latencies
                            .entry(label)
                            .or_default()
                            .push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    Ok((503, _)) => tally.busy += 1,
                    _ => tally.errors += 1,
                }
            }
            tally
        }));
    }
    // Triggers (through the API) and heartbeat samples.
    let poster = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<axum::body::Bytes>>();
    let mut heartbeat_max: f64 = 0.0;
    let mut triggered = 0;
    let mut next_trigger = Instant::now();
    while Instant::now() < deadline {
        if Instant::now() >= next_trigger {
            let d = format!("dag_{:02}", triggered % DAGS);
            let req = axum::http::Request::post(format!("{base}/api/v1/dags/{d}/runs"))
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(axum::body::Bytes::from_static(
                    b"{}",
                )))
                .expect("request");
            if poster
                .request(req)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                triggered += 1;
            }
            next_trigger += Duration::from_secs(5);
        }
        if let Ok((_, body)) = get(&client, &format!("{base}/health")).await
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
            && let Some(a) = v["scheduler_heartbeat_age_seconds"].as_f64()
        {
            heartbeat_max = heartbeat_max.max(a);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut total = Tally::default();
    for c in clients {
        let t = c.await.expect("client");
        total.ok += t.ok;
        total.busy += t.busy;
        total.errors += t.errors;
        for (k, v) in t.latencies {
            total.latencies.entry(k).or_default().extend(v);
        }
    }
    // Give the last runs time to finish, then read trigger-to-first-task from the database.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _ = server.kill();
    let _ = server.wait();
    let db = Db::connect(&url).await.expect("db");
    let starts = db
        .conn
        .query_all_raw(Statement::from_string(
            db.backend(),
            "SELECT r.created_at, MIN(ti.started_at) FROM dag_run r JOIN task_instance ti ON ti.dag_run_id = r.id \
             WHERE r.run_type = 'manual' GROUP BY r.id, r.created_at",
        ))
        .await
        .expect("starts");
    let mut to_first: Vec<f64> = starts
        .iter()
        .filter_map(|r| {
            let created: chrono::DateTime<Utc> = r.try_get_by_index(0).ok()?;
            let first: Option<chrono::DateTime<Utc>> = r.try_get_by_index(1).ok()?;
            Some((first? - created).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    let unstarted = starts.len() - to_first.len();
    db.conn.close().await.ok();
    drop_pg(pg_name).await;
    let backend = if pg.is_some() { "PostgreSQL" } else { "SQLite" };
    let requests = total.ok + total.busy + total.errors;
    rows.push((
        format!("200 clients x {secs} s on 1,000,000 task instances, {backend}: requests"),
        format!(
            "{:.0} req/s, {} errors, {} busy (503)",
            requests as f64 / secs as f64,
            total.errors,
            total.busy
        ),
        "0 errors".into(),
    ));
    for (label, _) in PAGES {
        let mut v = total.latencies.remove(label).unwrap_or_default();
        let p50 = percentile(&mut v, 0.5);
        let p99 = percentile(&mut v, 0.99);
        rows.push((
            format!("  {label} under that load, {backend}"),
            format!("p50 {p50:.0} ms, p99 {p99:.0} ms"),
            "p99 < 100 ms".into(),
        ));
    }
    rows.push((
        format!("  trigger -> first task under that load, {backend} ({triggered} runs)"),
        format!(
            "median {:.0} ms, max {:.0} ms{}",
            median(to_first.clone()),
            percentile(&mut to_first, 1.0),
            if unstarted > 0 {
                format!(", {unstarted} not started")
            } else {
                String::new()
            }
        ),
        "< 100 ms".into(),
    ));
    rows.push((
        format!("  scheduler heartbeat age under that load, {backend}"),
        format!("max {heartbeat_max:.1} s"),
        "< 5 s".into(),
    ));
}

/// A child process of the bench, killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `weft <args>` in `dir`, quiet.
fn spawn_weft(dir: &Path, args: &[&str]) -> Child {
    Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(args)
            .current_dir(dir)
            .env("WEFT_LOG", "weft=warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("weft"),
    )
}

async fn pg_floats(db: &Db, sql: &str) -> Vec<f64> {
    db.conn
        .query_all_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .expect("query")
        .iter()
        .map(|r| r.try_get_by_index::<f64>(0).expect("float"))
        .collect()
}

/// Triggers `dag` from the CLI and waits for its run; its duration (created to ended,
/// from the database) in seconds, and the run's primary key.
async fn run_once(dir: &Path, db: &Db, dag: &str) -> (f64, i64) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["trigger", dag, "--json"])
        .current_dir(dir)
        .env("WEFT_LOG", "weft=warn")
        .output()
        .expect("trigger");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("trigger json");
    let run_id = v["run_id"].as_str().expect("run id").to_string();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let rows = db
            .conn
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                format!(
                    "SELECT id, state, EXTRACT(EPOCH FROM (ended_at - created_at))::float8 FROM dag_run WHERE dag_id = '{dag}' AND run_id = '{run_id}'"
                ),
            ))
            .await
            .expect("run");
        if let Some(r) = rows.first() {
            let state: String = r.try_get_by_index(1).expect("state");
            if state == "success" || state == "failed" {
                assert_eq!(state, "success", "{dag} {run_id}");
                return (
                    r.try_get_by_index::<f64>(2).expect("secs"),
                    r.try_get_by_index::<i64>(0).expect("id"),
                );
            }
        }
        assert!(Instant::now() < deadline, "{dag} did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The peer kit's W2 (start -> 100 `true` -> join) on PostgreSQL with a scheduler and
/// two workers, then 2,000 no-op tries fanned out over four: tries per second and the
/// claim latency (from a claim's start to its tries' start: the claim lock's wait and
/// the candidate reads), p50 and p99.
async fn throughput(pg: &str, rows: &mut Rows) {
    const FAN: usize = 2_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = dir.path().join("dags");
    std::fs::create_dir_all(&folder).expect("mkdir");
    let mut w2 = String::from(
        "schedule = \"none\"\nmax_active_tasks = 128\n[tasks.start]\nkind = \"shell\"\ncommand = \"true\"\n",
    );
    for i in 1..=100 {
        let _ = write!(
            w2,
            "[tasks.m{i}]\nkind = \"shell\"\ncommand = \"true\"\ndepends_on = [\"start\"]\n"
        );
    }
    let all: Vec<String> = (1..=100).map(|i| format!("\"m{i}\"")).collect();
    let _ = write!(
        w2,
        "[tasks.join]\nkind = \"shell\"\ncommand = \"true\"\ndepends_on = [{}]\n",
        all.join(", ")
    );
    std::fs::write(folder.join("w2.toml"), w2).expect("write");
    let mut fan =
        format!("schedule = \"none\"\nmax_active_tasks = {FAN}\n[tasks.start]\nkind = \"noop\"\n");
    for i in 0..FAN {
        let _ = write!(
            fan,
            "[tasks.n{i}]\nkind = \"noop\"\ndepends_on = [\"start\"]\n"
        );
    }
    std::fs::write(folder.join("fan.toml"), fan).expect("write");
    let (url, pg_name) = fresh_db(dir.path(), Some(pg)).await;
    std::fs::write(
        dir.path().join("weft.toml"),
        format!("database_url = \"{url}\"\ndefault_pool_slots = 100000\n"),
    )
    .expect("config");
    let db = Db::connect(&url).await.expect("db");
    db.migrate().await.expect("migrate");
    let mut procs = vec![spawn_weft(dir.path(), &["scheduler"])];
    for _ in 0..2 {
        procs.push(spawn_weft(dir.path(), &["worker", "--concurrency", "32"]));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while pg_floats(&db, "SELECT COUNT(*)::float8 FROM dag").await[0] < 2.0 {
        assert!(
            Instant::now() < deadline,
            "the scheduler did not record the DAGs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    run_once(dir.path(), &db, "w2").await; // warm-up
    let mut w2_times = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        w2_times.push(run_once(dir.path(), &db, "w2").await.0);
    }
    let w2_median = median(w2_times.clone());
    rows.push((
        "W2 (1 + 100 + 1 shell tasks), PostgreSQL, 2 workers: run, median of 5".into(),
        format!(
            "{:.0} ms (min {:.0}, max {:.0})",
            w2_median * 1e3,
            w2_times.iter().cloned().fold(f64::INFINITY, f64::min) * 1e3,
            w2_times.iter().cloned().fold(0.0, f64::max) * 1e3
        ),
        "< 500 ms".into(),
    ));
    for _ in 0..2 {
        procs.push(spawn_weft(dir.path(), &["worker", "--concurrency", "32"]));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, run_pk) = run_once(dir.path(), &db, "fan").await;
    let span = pg_floats(
        &db,
        &format!(
            "SELECT EXTRACT(EPOCH FROM (MAX(ended_at) - MIN(started_at)))::float8 FROM task_try WHERE dag_run_id = {run_pk} AND task_id <> 'start'"
        ),
    )
    .await[0];
    rows.push((
        format!("{FAN} no-op tries, PostgreSQL, 4 workers x 32: tries per second"),
        format!("{:.0} /s ({FAN} in {:.2} s)", FAN as f64 / span, span),
        ">= 2,000 /s".into(),
    ));
    let mut claim = pg_floats(
        &db,
        &format!(
            "SELECT EXTRACT(EPOCH FROM (t.started_at - ti.queued_at))::float8 * 1000 FROM task_try t JOIN task_instance ti ON ti.id = t.task_instance_id WHERE t.dag_run_id = {run_pk}"
        ),
    )
    .await;
    rows.push((
        "claim latency under that load (claim start -> tries started), p50 / p99".into(),
        format!(
            "{:.1} / {:.1} ms",
            percentile(&mut claim, 0.5),
            percentile(&mut claim, 0.99)
        ),
        "p99 < 20 ms".into(),
    ));
    drop(procs);
    db.conn.close().await.ok();
    drop_pg(pg_name).await;
}

/// Every page and API answer the operator reads, for `explain`.
const EXPLAINED: &[&str] = &[
    "/dags",
    "/dags?q=dag_0",
    "/dags/dag_05",
    "/dags/dag_05?runs=3",
    "/dags?state=failed&paused=no",
    "/task-instances?state=failed",
    "/task-instances?dag=dag_05&task=t7",
    "/dags/dag_05/runs/scheduled__7",
    "/dags/dag_05/runs/scheduled__7/tasks/t7",
    "/dags/dag_05/runs/scheduled__7/tasks/t7/log",
    "/dashboard",
    "/import-errors",
    "/experiments",
    "/surveys",
    "/health",
    "/metrics",
    "/api/v1/dags",
    "/api/v1/dags/dag_05",
    "/api/v1/dags/dag_05/runs?limit=25",
    "/api/v1/dags/dag_05/runs/scheduled__7",
    "/api/v1/dags/dag_05/runs/scheduled__7/tasks",
    "/api/v1/dags/dag_05/runs/scheduled__7/tasks/t7/logs",
    "/api/v1/pools",
    "/api/v1/health",
    "/api/v1/import-errors",
];

/// The tables that grow with the history: a page must never read one of them whole.
const HISTORY_TABLES: [&str; 4] = ["task_instance", "task_try", "task_log", "dag_run"];

/// A full read of a history table in a plan line, if there is one.
fn full_scan(backend: DbBackend, line: &str) -> Option<&'static str> {
    HISTORY_TABLES.into_iter().find(|t| match backend {
        // `SCAN t` reads the table; `SCAN t USING INDEX` walks an index in order
        // (under a LIMIT, a few entries) and `SEARCH` seeks one.
        DbBackend::Sqlite => {
            let l = line.trim_start_matches(|c: char| !c.is_alphabetic());
            l.starts_with(&format!("SCAN {t}")) && !l.contains("USING") || l == format!("SCAN {t}")
        }
        _ => {
            line.contains(&format!("Seq Scan on {t} "))
                || line.ends_with(&format!("Seq Scan on {t}"))
        }
    })
}

/// Every statement the pages run, with 1M task instances stored: its plan (`EXPLAIN
/// QUERY PLAN` on SQLite, `EXPLAIN` with the real values on PostgreSQL) must not read
/// a history table whole, and the slowest statement of each page is reported.
async fn explain(pg: Option<&str>, rows: &mut Rows) {
    use tower::ServiceExt as _;
    let backend_name = if pg.is_some() { "PostgreSQL" } else { "SQLite" };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, pg_name, mut db, cfg, registry) = loaded_fixture(dir.path(), pg).await;
    // Every statement the pages run, with its values and how long it took.
    type Seen = Vec<(String, String, f64)>;
    let seen: Arc<std::sync::Mutex<Seen>> = Arc::default();
    let sink = seen.clone();
    db.conn.set_metric_callback(move |info| {
        sink.lock().expect("seen").push((
            info.statement.sql.clone(),
            info.statement.to_string(),
            info.elapsed.as_secs_f64() * 1000.0,
        ));
    });
    db.read = db.conn.clone();
    let mut state = weft::web::AppState::new(db.clone(), cfg, registry, None)
        .await
        .expect("state");
    state.db = db.clone();
    let app = weft::web::app(state);
    let backend = db.backend();
    let (mut statements, mut scans) = (0usize, Vec::new());
    let mut slowest: (f64, &str) = (0.0, "");
    let mut slow: Vec<(f64, &str, String)> = Vec::new();
    for path in EXPLAINED {
        seen.lock().expect("seen").clear();
        let req = axum::http::Request::get(*path)
            .body(axum::body::Body::empty())
            .expect("request");
        let status = app.clone().oneshot(req).await.expect("answer").status();
        // No engine runs here, so `/health` rightly answers 503.
        let health = path.ends_with("/health") && status.as_u16() == 503;
        assert!(status.as_u16() < 500 || health, "{path}: {status}");
        let ran = std::mem::take(&mut *seen.lock().expect("seen"));
        let mut page_max = 0.0f64;
        let mut distinct = std::collections::HashSet::new();
        for (sql, inlined, ms) in ran {
            page_max = page_max.max(ms);
            if ms > 20.0 {
                slow.push((ms, path, inlined.clone()));
            }
            let head = sql.trim_start().to_uppercase();
            if !(head.starts_with("SELECT") || head.starts_with("WITH")) || !distinct.insert(sql) {
                continue;
            }
            statements += 1;
            let plan_sql = match backend {
                DbBackend::Sqlite => format!("EXPLAIN QUERY PLAN {inlined}"),
                _ => format!("EXPLAIN {inlined}"),
            };
            let plan: Vec<String> = db
                .conn
                .query_all_raw(Statement::from_string(backend, plan_sql))
                .await
                .expect("explain")
                .iter()
                .filter_map(|r| {
                    r.try_get::<String>("", "detail")
                        .or_else(|_| r.try_get::<String>("", "QUERY PLAN"))
                        .ok()
                })
                .collect();
            if let Some(table) = plan.iter().find_map(|l| full_scan(backend, l)) {
                eprintln!(
                    "{path}: reads all of {table}:\n{inlined}\n{}\n",
                    plan.join("\n")
                );
                scans.push(format!("{path} ({table})"));
            }
        }
        if page_max > slowest.0 {
            slowest = (page_max, path);
        }
    }
    slow.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (ms, path, sql) in slow.iter().take(3) {
        eprintln!("{backend_name}, slow on {path}: {ms:.1} ms\n{sql}\n");
    }
    rows.push((
        format!("page statements with 1M TIs, {backend_name}: full scans of history"),
        if scans.is_empty() {
            format!("none of {statements}")
        } else {
            format!("{} of {statements}: {}", scans.len(), scans.join(", "))
        },
        "none".into(),
    ));
    rows.push((
        format!("  slowest page statement, {backend_name}"),
        format!("{:.1} ms ({})", slowest.0, slowest.1),
        "".into(),
    ));
    db.conn.close().await.ok();
    drop_pg(pg_name).await;
}

fn main() {
    // The errors a page logs instead of answering them (500s) reach the bench's stderr.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("weft=error"))
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let only = std::env::var("WEFT_BENCH_ONLY").unwrap_or_default();
    let secs: u64 = std::env::var("WEFT_BENCH_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let pg = pg_admin();
    let mut rows = Rows::new();
    if only.is_empty() || only == "scheduler" {
        for n in [100, 1_000, 10_000] {
            rt.block_on(scheduler_scale(n, None, &mut rows));
        }
        if let Some(pg) = &pg {
            for n in [100, 1_000, 10_000] {
                rt.block_on(scheduler_scale(n, Some(pg), &mut rows));
            }
        }
    }
    if (only.is_empty() || only == "throughput")
        && let Some(pg) = &pg
    {
        rt.block_on(throughput(pg, &mut rows));
    }
    if only.is_empty() || only == "explain" {
        rt.block_on(explain(None, &mut rows));
        if let Some(pg) = &pg {
            rt.block_on(explain(Some(pg), &mut rows));
        }
    }
    if only.is_empty() || only == "load" {
        rt.block_on(web_load(None, secs, &mut rows));
        if let Some(pg) = &pg {
            rt.block_on(web_load(Some(pg), secs, &mut rows));
        }
    }
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(10);
    println!("\n{:<w$}  {:>34}  target", "benchmark", "result");
    for (name, value, target) in &rows {
        println!("{name:<w$}  {value:>34}  {target}");
    }
    if !only.is_empty() {
        return;
    }
    let mut md = String::from(
        "Produced by `cargo bench --bench scale` (benches/scale.rs). The scheduler figures run the engine in-process with a manual clock (no tries run); the load figures run `weft serve` as a child process with 200 keep-alive clients (hyper, in the bench process, on the same 2 cores) reading five pages in turn while a `weft trigger` runs every 5 s.\n\n| benchmark | result | target |\n|---|---|---|\n",
    );
    for (name, value, target) in &rows {
        let _ = writeln!(md, "| {name} | {value} | {target} |");
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let start = "<!-- generated by `cargo bench --bench scale` (benches/scale.rs) -->";
    let end = "<!-- end of scale figures -->";
    let block = format!("{start}\n{md}{end}");
    let new = match (old.find(start), old.find(end)) {
        (Some(a), Some(b)) if b > a => format!("{}{block}{}", &old[..a], &old[b + end.len()..]),
        _ => format!("{old}\n## Scale-out\n\n{block}\n"),
    };
    std::fs::write(&path, new).expect("write BENCHMARKS.md");
    println!("\nwrote {}", path.display());
}
