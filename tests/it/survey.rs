//! The `survey_sync` kind against in-test servers that imitate Typeform and Zigpoll:
//! paging across several pages, 429 with Retry-After, 401/404 named at once, malformed
//! items rejected while the rest load, an interrupted sync resumed without duplicates,
//! the high-water mark, NPS into `survey_metrics`; and a CSV export with segments.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use weft::db::{Db, RunState, TaskState};

use crate::support::{Env, TestDb, backends, float, scalar, text};

/// What the fake provider holds and how it misbehaves.
#[derive(Default)]
struct Provider {
    items: Mutex<Vec<Value>>,
    calls: AtomicUsize,
    /// Answer 401 to any request for a third page while set.
    break_page3: AtomicBool,
    /// Query strings received, in order.
    queries: Mutex<Vec<HashMap<String, String>>>,
    /// Items returned over all calls.
    served: AtomicUsize,
    /// The largest page the server returns, whatever `page_size` asks.
    max_page: AtomicUsize,
}

fn response(token: &str, at: &str, nps: Option<i64>, user: &str) -> Value {
    let mut answers = vec![
        json!({"field": {"id": "q_comment", "ref": "comment", "type": "long_text"}, "type": "text", "text": format!("comment {token}")}),
    ];
    if let Some(n) = nps {
        answers.insert(
            0,
            json!({"field": {"id": "q_nps", "ref": "nps", "type": "opinion_scale"}, "type": "number", "number": n}),
        );
    }
    json!({"token": token, "landed_at": at, "submitted_at": at, "hidden": {"user_id": user}, "answers": answers})
}

fn submitted(v: &Value) -> String {
    v.get("submitted_at")
        .or_else(|| v.get("createdAt"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

async fn typeform(
    State(p): State<Arc<Provider>>,
    Path(form): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let call = p.calls.fetch_add(1, Ordering::SeqCst);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer tf-token") {
        return (
            StatusCode::UNAUTHORIZED,
            "{\"code\": \"AUTHENTICATION_FAILED\"}",
        )
            .into_response();
    }
    if form != "nps1" {
        return (StatusCode::NOT_FOUND, "{\"code\": \"FORM_NOT_FOUND\"}").into_response();
    }
    if call == 0 {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "slow down",
        )
            .into_response();
    }
    p.queries.lock().expect("lock").push(q.clone());
    // Like a real API, the server may cap the page below what was asked.
    let size: usize = q
        .get("page_size")
        .and_then(|s| s.parse().ok())
        .unwrap_or(25usize)
        .min(p.max_page.load(Ordering::SeqCst).max(1));
    // Newest first, `since` inclusive, `before` = strictly after that token in this order.
    let mut items: Vec<Value> = p.items.lock().expect("lock").clone();
    items.sort_by_key(|v| std::cmp::Reverse(submitted(v)));
    if let Some(since) = q.get("since") {
        items.retain(|v| submitted(v).as_str() >= since.as_str());
    }
    let mut page_no = 1;
    if let Some(before) = q.get("before") {
        let at = items
            .iter()
            .position(|v| v.get("token").and_then(Value::as_str) == Some(before));
        let Some(at) = at else {
            return (StatusCode::BAD_REQUEST, "unknown token").into_response();
        };
        page_no = 2 + at / size;
        items.drain(..=at);
    }
    if page_no >= 3 && p.break_page3.load(Ordering::SeqCst) {
        return (StatusCode::UNAUTHORIZED, "token revoked").into_response();
    }
    let total = items.len();
    items.truncate(size);
    p.served.fetch_add(items.len(), Ordering::SeqCst);
    axum::Json(json!({"total_items": total, "page_count": total.div_ceil(size), "items": items}))
        .into_response()
}

async fn zigpoll(
    State(p): State<Arc<Provider>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    p.calls.fetch_add(1, Ordering::SeqCst);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("zp-key") {
        return (StatusCode::UNAUTHORIZED, "bad key").into_response();
    }
    if q.get("pollId").map(String::as_str) != Some("poll9") {
        return (StatusCode::NOT_FOUND, "no such poll").into_response();
    }
    p.queries.lock().expect("lock").push(q.clone());
    let mut items: Vec<Value> = p.items.lock().expect("lock").clone();
    items.sort_by_key(submitted);
    if let Some(after) = q.get("createdAfter") {
        items.retain(|v| submitted(v).as_str() > after.as_str());
    }
    let start: usize = q
        .get("startCursor")
        .and_then(|c| c.strip_prefix("c")?.parse().ok())
        .unwrap_or(0);
    let size = 2;
    let page: Vec<Value> = items.iter().skip(start).take(size).cloned().collect();
    let next = (start + size < items.len()).then(|| format!("c{}", start + size));
    p.served.fetch_add(page.len(), Ordering::SeqCst);
    axum::Json(json!({"data": page, "endCursor": next, "hasNextPage": next.is_some()}))
        .into_response()
}

async fn serve(p: Arc<Provider>) -> String {
    let app = axum::Router::new()
        .route("/forms/{form}/responses", axum::routing::get(typeform))
        .route("/responses", axum::routing::get(zigpoll))
        .with_state(p);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn error_of(env: &Env, run: i64, task: &str) -> (TaskState, String, String) {
    crate::support::task_log(&env.db, run, task).await
}

async fn run_dag(env: &Env, dag: &str) -> (i64, RunState) {
    let run = env.trigger(dag).await;
    let state = env.wait_run(run.id, Duration::from_secs(60)).await;
    (run.id, state)
}

async fn warehouse(env: &Env) -> Db {
    Db::connect(&env.config.connections["warehouse"].url)
        .await
        .expect("warehouse")
}

async fn typeform_scenario(t: &TestDb) {
    let p = Arc::new(Provider {
        max_page: AtomicUsize::new(1000),
        ..Provider::default()
    });
    {
        let mut items = p.items.lock().expect("lock");
        // Scores 10, 9, 9, 8, 6, 3, 10: 4 promoters, 1 passive, 2 detractors.
        let scores = [10, 9, 9, 8, 6, 3, 10];
        for (i, s) in scores.iter().enumerate() {
            items.push(response(
                &format!("r{i}"),
                &format!("2026-03-01T0{i}:00:00Z"),
                Some(*s),
                &format!("u{i}"),
            ));
        }
        // A malformed item in the middle of page 2: no submitted_at.
        items.push(
            json!({"token": "broken", "submitted_at": "2026-03-01T03:30:00Z", "answers": "nope"}),
        );
    }
    p.break_page3.store(true, Ordering::SeqCst);
    let base = serve(p.clone()).await;
    let dag = format!(
        r#"
[tasks.sync_nps]
kind = "survey_sync"
provider = "typeform"
form_id = "nps1"
base_url = "{base}"
token = "tf-token"
nps_field = "nps"
page_size = 3
"#
    );
    let denied = format!(
        "[tasks.wrong_token]\nkind = \"survey_sync\"\nprovider = \"typeform\"\nform_id = \"nps1\"\nbase_url = \"{base}\"\ntoken = \"nope\"\n\
         [tasks.wrong_form]\nkind = \"survey_sync\"\nprovider = \"typeform\"\nform_id = \"nps404\"\nbase_url = \"{base}/\"\ntoken = \"tf-token\"\n"
    );
    let env = Env::with_warehouse(t, &[("survey", &dag), ("denied", &denied)]).await;

    // 1. 429 then pages 1 and 2, then the token is "revoked" on page 3: the run fails,
    //    naming provider, form and status; what was stored stays.
    let (run, state) = run_dag(&env, "survey").await;
    assert_eq!(state, RunState::Failed);
    let (_, err, log) = error_of(&env, run, "sync_nps").await;
    assert!(
        err.contains("typeform form nps1") && err.contains("HTTP 401"),
        "{err}"
    );
    assert!(
        log.contains("page 2: 2 response(s), 1 reject(s) stored"),
        "{log}"
    );
    let wh = warehouse(&env).await;
    assert_eq!(
        scalar(&wh, "SELECT COUNT(*) FROM survey_responses").await,
        5
    );
    assert_eq!(
        scalar(
            &wh,
            "SELECT COUNT(*) FROM survey_sync_state WHERE high_water IS NOT NULL"
        )
        .await,
        0,
        "the mark moves only after a complete sync"
    );

    // 2. The provider works again: the next run fetches everything again (the mark did
    //    not move), upserts without duplicates, and computes NPS.
    p.break_page3.store(false, Ordering::SeqCst);
    let (run, state) = run_dag(&env, "survey").await;
    let (_, err, log) = error_of(&env, run, "sync_nps").await;
    assert_eq!(state, RunState::Success, "{err}\n{log}");
    assert_eq!(
        scalar(&wh, "SELECT COUNT(*) FROM survey_responses").await,
        7
    );
    assert_eq!(
        scalar(&wh, "SELECT COUNT(DISTINCT token) FROM survey_responses").await,
        7
    );
    assert_eq!(
        scalar(&wh, "SELECT COUNT(*) FROM survey_answers").await,
        14,
        "two typed answers per response, replaced on re-sync"
    );
    assert_eq!(
        scalar(
            &wh,
            "SELECT COUNT(*) FROM survey_answers WHERE field = 'nps' AND number_value IS NOT NULL"
        )
        .await,
        7
    );
    assert_eq!(scalar(&wh, "SELECT COUNT(*) FROM survey_rejects").await, 1);
    assert!(
        text(&wh, "SELECT reason FROM survey_rejects")
            .await
            .contains("\"answers\" is not a list")
    );
    assert_eq!(
        text(
            &wh,
            "SELECT user_id FROM survey_responses WHERE token = 'r4'"
        )
        .await,
        "u4"
    );
    let q = |col: &str| format!("SELECT {col} FROM survey_metrics WHERE segment = 'all'");
    assert_eq!(scalar(&wh, &q("responses")).await, 7);
    assert_eq!(scalar(&wh, &q("promoters")).await, 4);
    assert_eq!(scalar(&wh, &q("passives")).await, 1);
    assert_eq!(scalar(&wh, &q("detractors")).await, 2);
    let nps = float(&wh, &q("nps")).await;
    assert!((nps - 100.0 * 2.0 / 7.0).abs() < 1e-9, "{nps}");
    let se = float(&wh, &q("nps_se")).await;
    let (pp, d) = (4.0 / 7.0, 2.0 / 7.0);
    let want = 100.0 * ((pp + d - (pp - d) * (pp - d)) / 7.0_f64).sqrt();
    assert!((se - want).abs() < 1e-9, "{se} vs {want}");
    assert!(log.contains("NPS +28.6"), "{log}");

    // The readers the survey page uses work on this backend too.
    {
        use weft::kinds::survey::run as survey;
        let (responses, rejects, mark, last) = survey::form_state(&wh.conn, "typeform", "nps1")
            .await
            .expect("state");
        assert_eq!((responses, rejects), (7, 1));
        assert!(mark.is_some_and(|m| m.starts_with("2026-03-01")) && last.is_some());
        let m = survey::latest_metrics(&wh.conn, "typeform", "nps1")
            .await
            .expect("metrics");
        assert_eq!((m[0].segment.as_str(), m[0].responses), ("all", 7));
        let quarters = survey::scores_by_quarter_hour(&wh.conn, "typeform", "nps1", false)
            .await
            .expect("quarters");
        assert_eq!(quarters.iter().map(|d| d.2).sum::<i64>(), 7);
        assert!(
            quarters
                .iter()
                .all(|d| d.0.date_naive().to_string() == "2026-03-01"),
            "{quarters:?}"
        );
    }

    // 3. Two newer responses: the next sync asks from the high-water mark and gets only
    //    those (plus the boundary second), nothing is duplicated.
    {
        let mut items = p.items.lock().expect("lock");
        items.push(response("r7", "2026-03-02T09:00:00Z", Some(0), "u7"));
        items.push(response("r8", "2026-03-02T10:00:00Z", None, "u8"));
    }
    let served_before = p.served.load(Ordering::SeqCst);
    let (_, state) = run_dag(&env, "survey").await;
    assert_eq!(state, RunState::Success);
    let last = p
        .queries
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .expect("query");
    assert_eq!(
        last.get("since").map(String::as_str),
        Some("2026-03-01T05:59:59Z"),
        "since = high-water mark minus one second"
    );
    assert_eq!(p.served.load(Ordering::SeqCst) - served_before, 3);
    assert_eq!(
        scalar(&wh, "SELECT COUNT(*) FROM survey_responses").await,
        9
    );
    assert_eq!(
        scalar(
            &wh,
            "SELECT COUNT(*) FROM survey_responses WHERE nps_score IS NULL"
        )
        .await,
        1
    );
    assert_eq!(
        text(
            &wh,
            "SELECT CAST(high_water AS TEXT) FROM survey_sync_state"
        )
        .await[..10]
            .to_string(),
        "2026-03-02"
    );

    // 4. A wrong token and an unknown form fail at once, named.
    let calls = p.calls.load(Ordering::SeqCst);
    let (run, state) = run_dag(&env, "denied").await;
    assert_eq!(state, RunState::Failed);
    let (_, err, _) = error_of(&env, run, "wrong_token").await;
    assert!(
        err.contains("typeform form nps1") && err.contains("HTTP 401 (check the token)"),
        "{err}"
    );
    let (_, err, _) = error_of(&env, run, "wrong_form").await;
    assert!(
        err.contains("typeform form nps404") && err.contains("HTTP 404"),
        "{err}"
    );
    assert_eq!(
        p.calls.load(Ordering::SeqCst) - calls,
        2,
        "401 and 404 are not retried"
    );
    // Nothing stored was lost by the failures.
    assert_eq!(
        scalar(&wh, "SELECT COUNT(*) FROM survey_responses").await,
        9
    );
    env.stop().await;
}

#[tokio::test]
async fn typeform_sync_pages_retries_resumes_and_scores() {
    for t in backends().await {
        typeform_scenario(&t).await;
        t.cleanup().await;
    }
}

#[tokio::test]
async fn zigpoll_sync_follows_cursors_and_the_high_water_mark() {
    let t = crate::support::sqlite_db().await;
    let p = Arc::new(Provider::default());
    {
        let mut items = p.items.lock().expect("lock");
        for (i, s) in [9, 7, 2, 10, 10].iter().enumerate() {
            items.push(json!({"_id": format!("z{i}"), "pollId": "poll9", "slideId": "nps", "response": s.to_string(),
                "createdAt": format!("2026-04-0{}T12:00:00.000Z", i + 1), "metadata": {"user_id": format!("u{i}")}}));
        }
        items.push(
            json!({"_id": "zbad", "pollId": "poll9", "slideId": "nps", "createdAt": "2026-04-03T13:00:00.000Z"}),
        );
    }
    let base = serve(p.clone()).await;
    let dag = format!(
        "[tasks.sync]\nkind = \"survey_sync\"\nprovider = \"zigpoll\"\nform_id = \"poll9\"\nbase_url = \"{base}\"\ntoken = \"zp-key\"\nnps_field = \"nps\"\nmetrics_window = \"all\"\n"
    );
    let env = Env::with_warehouse(&t, &[("zig", &dag)]).await;
    let (run, state) = run_dag(&env, "zig").await;
    let (_, err, log) = error_of(&env, run, "sync").await;
    assert_eq!(state, RunState::Success, "{err}\n{log}");
    assert!(
        log.contains("3 page(s), 5 response(s) upserted, 1 reject(s)"),
        "{log}"
    );
    let wh = warehouse(&env).await;
    assert_eq!(
        scalar(
            &wh,
            "SELECT COUNT(*) FROM survey_responses WHERE provider = 'zigpoll'"
        )
        .await,
        5
    );
    assert_eq!(scalar(&wh, "SELECT promoters FROM survey_metrics").await, 3);
    assert_eq!(
        text(&wh, "SELECT reason FROM survey_rejects").await,
        "no \"response\" value"
    );
    // The second sync starts after the mark and finds nothing new.
    let (_, state) = run_dag(&env, "zig").await;
    assert_eq!(state, RunState::Success);
    let last = p.queries.lock().expect("lock").last().cloned().expect("q");
    assert_eq!(
        last.get("createdAfter").map(String::as_str),
        Some("2026-04-05T11:59:59Z")
    );
    assert_eq!(
        scalar(&wh, "SELECT COUNT(*) FROM survey_responses").await,
        5
    );
    env.stop().await;
    t.cleanup().await;
}

#[tokio::test]
async fn csv_exports_load_with_segments_and_csat() {
    for t in backends().await {
        let dag = r#"
[tasks.users]
kind = "sql"
sql = """
DROP TABLE IF EXISTS app_users;
CREATE TABLE app_users (user_id TEXT, plan TEXT);
INSERT INTO app_users VALUES ('u1', 'pro'), ('u2', 'pro'), ('u3', 'free'), ('u3', 'free');
"""
[tasks.sync]
kind = "survey_sync"
depends_on = ["users"]
provider = "csv"
form_id = "export"
path = "responses.csv"
nps_field = "How likely are you to recommend us?"
csat_field = "csat"
segments = { table = "app_users", columns = ["plan"] }
"#;
        let env = Env::with_warehouse(&t, &[("csv_survey", dag)]).await;
        std::fs::write(
            env.dags_dir().join("responses.csv"),
            "token,Submit Date (UTC),How likely are you to recommend us?,csat,comment,user_id\n\
             a,2026-05-01 10:00:00,10,5,great,u1\n\
             b,2026-05-01 11:00:00,9,4,,u2\n\
             c,2026-05-02 09:00:00,4,2,\"slow, buggy\",u3\n\
             d,not a date,7,3,,u1\n\
             e,2026-05-03 09:00:00,12,3,,u2\n",
        )
        .expect("csv");
        for _ in 0..2 {
            let (run, state) = run_dag(&env, "csv_survey").await;
            let (_, err, log) = error_of(&env, run, "sync").await;
            assert_eq!(state, RunState::Success, "{err}\n{log}");
        }
        let wh = warehouse(&env).await;
        assert_eq!(
            scalar(&wh, "SELECT COUNT(*) FROM survey_responses").await,
            3
        );
        assert_eq!(scalar(&wh, "SELECT COUNT(*) FROM survey_rejects").await, 2);
        assert!(
            text(
                &wh,
                "SELECT reason FROM survey_rejects WHERE source LIKE '%:6'"
            )
            .await
            .contains("holds 12"),
        );
        assert_eq!(
            text(
                &wh,
                "SELECT text_value FROM survey_answers WHERE token = 'c' AND field = 'comment'"
            )
            .await,
            "slow, buggy"
        );
        // Overall 2 promoters + 1 detractor of 3; by plan: pro 2/2 promoters, free 1
        // detractor (u3 is listed twice in app_users and still counts once).
        assert_eq!(
            scalar(
                &wh,
                "SELECT responses FROM survey_metrics WHERE segment = 'all'"
            )
            .await,
            3
        );
        assert_eq!(
            scalar(&wh, "SELECT promoters FROM survey_metrics WHERE segment = 'plan' AND segment_value = 'pro'").await,
            2
        );
        assert_eq!(
            scalar(&wh, "SELECT detractors FROM survey_metrics WHERE segment = 'plan' AND segment_value = 'free'").await,
            1
        );
        let csat = float(&wh, "SELECT csat FROM survey_metrics WHERE segment = 'all'").await;
        assert!((csat - 2.0 / 3.0).abs() < 1e-9, "{csat}");
        // One row per segment value for a period end; a re-run of the same period
        // replaces its rows.
        assert_eq!(
            scalar(
                &wh,
                "SELECT COUNT(*) FROM survey_metrics WHERE period_end = (SELECT MAX(period_end) FROM survey_metrics)"
            )
            .await,
            3
        );
        env.stop().await;
        t.cleanup().await;
    }
}

/// The issue's minimal form, exactly as written: `base_url` and `token` come from the
/// environment of the `weft` process.
const MINIMAL: &str = r#"
[tasks.sync_nps]
kind = "survey_sync"
provider = "typeform"
form_id = "nps1"
base_url = "${TYPEFORM_BASE_URL}"
token = "${TYPEFORM_TOKEN}"
nps_field = "nps"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minimal_form_reads_url_and_token_from_the_environment() {
    // The server pages by 2 although weft asks for 1000: weft follows `total_items`.
    let p = Arc::new(Provider {
        max_page: AtomicUsize::new(2),
        ..Provider::default()
    });
    {
        let mut items = p.items.lock().expect("lock");
        for (i, s) in [10, 10, 0].iter().enumerate() {
            items.push(response(
                &format!("m{i}"),
                &format!("2026-06-01T0{i}:00:00Z"),
                Some(*s),
                "u",
            ));
        }
    }
    let base = serve(p.clone()).await;
    let dir = crate::cli::project(&[("nps", MINIMAL)]);
    let path = dir.path().to_path_buf();
    let run = move |vars: Vec<(&'static str, String)>| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = crate::cli::weft();
            // dags test writes a temporary warehouse unless told which one to use.
            let wh = format!("sqlite://{}?mode=rwc", path.join("warehouse.db").display());
            c.current_dir(&path)
                .args(["dags", "test", "nps", "--warehouse", &wh]);
            for (k, v) in vars {
                c.env(k, v);
            }
            c.output().expect("weft")
        })
    };
    // Without the variables the task fails and says which one is missing.
    let o = run(vec![]).await.expect("join");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("environment variable TYPEFORM_BASE_URL is not set"),
        "{out}"
    );
    let o = run(vec![
        ("TYPEFORM_BASE_URL", base.clone()),
        ("TYPEFORM_TOKEN", "tf-token".into()),
    ])
    .await
    .expect("join");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{out}");
    let wh = Db::connect(&format!(
        "sqlite://{}?mode=rw",
        dir.path().join("warehouse.db").display()
    ))
    .await
    .expect("warehouse");
    assert_eq!(
        scalar(&wh, "SELECT COUNT(*) FROM survey_responses").await,
        3
    );
    let nps = float(&wh, "SELECT nps FROM survey_metrics").await;
    assert!((nps - 100.0 / 3.0).abs() < 1e-9, "{nps}");
}

#[tokio::test]
async fn a_flood_of_rejects_is_stored_whole_and_logged_in_part() {
    let t = crate::support::sqlite_db().await;
    let dag = "[tasks.sync]\nkind = \"survey_sync\"\nprovider = \"csv\"\nform_id = \"bad\"\npath = \"bad.csv\"\nnps_field = \"nps\"\n";
    let env = Env::with_warehouse(&t, &[("bad_export", dag)]).await;
    let mut csv = String::from("token,submitted_at,nps\ngood,2026-05-01 10:00:00,9\n");
    for i in 0..30 {
        csv.push_str(&format!("b{i},2026-05-01 10:00:00,{}\n", 11 + i));
    }
    std::fs::write(env.dags_dir().join("bad.csv"), csv).expect("csv");
    let (run, state) = run_dag(&env, "bad_export").await;
    let (_, err, log) = error_of(&env, run, "sync").await;
    assert_eq!(state, RunState::Success, "{err}\n{log}");
    assert_eq!(log.matches("[weft] reject (").count(), 20, "{log}");
    assert!(log.contains("further rejects are not logged"), "{log}");
    assert!(
        log.contains("1 response(s) upserted, 30 reject(s)"),
        "{log}"
    );
    let wh = warehouse(&env).await;
    assert_eq!(scalar(&wh, "SELECT COUNT(*) FROM survey_rejects").await, 30);
    env.stop().await;
    t.cleanup().await;
}
