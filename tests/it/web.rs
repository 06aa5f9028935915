//! The web layer through `tower::ServiceExt::oneshot`: every page and API route, 404s,
//! bad parameters, roles, CSRF, login, escaping of hostile text, security headers.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::Utc;
use http_body_util::BodyExt;
use tower::ServiceExt;
use weft::db::{Role, RunState, TaskState, users};
use weft::web::{AppState, app, auth};

use crate::support::{Env, sqlite_db, utc};

const HOSTILE: &str = r#"
description = "<script>alert(1)</script> events"
schedule = "none"
tags = ["<b>bold</b>"]
[params]
note = { type = "string", default = "hi", description = "<img src=x onerror=alert(2)>" }
[tasks.loud]
kind = "shell"
command = "echo '<img src=x onerror=alert(3)>'; echo '</pre><script>alert(4)</script>'; exit 1"
"#;

const FINE: &str = "schedule = \"none\"\n[tasks.a]\nkind = \"shell\"\ncommand = \"echo fine\"\n[tasks.b]\nkind = \"noop\"\ndepends_on = [\"a\"]\n";

struct Client {
    app: Router,
    cookies: BTreeMap<String, String>,
    bearer: Option<String>,
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Client {
    fn new(app: Router) -> Client {
        Client {
            app,
            cookies: BTreeMap::new(),
            bearer: None,
        }
    }

    async fn send(&mut self, req: axum::http::request::Builder, body: Body) -> Reply {
        let mut req = req;
        if !self.cookies.is_empty() {
            let c: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            req = req.header(header::COOKIE, c.join("; "));
        }
        if let Some(t) = &self.bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let res = self
            .app
            .clone()
            .oneshot(req.body(body).expect("request"))
            .await
            .expect("response");
        for v in res.headers().get_all(header::SET_COOKIE) {
            let s = v.to_str().unwrap_or_default();
            if let Some((kv, _)) = s.split_once(';').or(Some((s, "")))
                && let Some((k, val)) = kv.split_once('=')
            {
                if val.is_empty() || s.contains("Max-Age=0") {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_string(), val.to_string());
                }
            }
        }
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&mut self, path: &str) -> Reply {
        self.send(Request::get(path), Body::empty()).await
    }

    async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", weft::web::views::enc(v)))
            .collect();
        self.send(
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded"),
            Body::from(body.join("&")),
        )
        .await
    }

    async fn post_json(&mut self, path: &str, json: serde_json::Value) -> Reply {
        self.send(
            Request::post(path).header(header::CONTENT_TYPE, "application/json"),
            Body::from(json.to_string()),
        )
        .await
    }

    /// The CSRF token of a page's forms (and its cookie, kept by the client).
    async fn csrf(&mut self, path: &str) -> String {
        let r = self.get(path).await;
        let marker = "name=\"authenticity_token\" value=\"";
        let start = r
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("no csrf token on {path}: {}", r.body))
            + marker.len();
        r.body[start..]
            .split('"')
            .next()
            .expect("token")
            .to_string()
    }

    async fn login(&mut self, user: &str, password: &str) -> Reply {
        let token = self.csrf("/login").await;
        self.post_form(
            "/login",
            &[
                ("username", user),
                ("password", password),
                ("authenticity_token", &token),
                ("next", "/dags"),
            ],
        )
        .await
    }
}

async fn setup() -> (crate::support::TestDb, Env, Router) {
    let t = sqlite_db().await;
    let env = Env::start(&t, &[("hostile", HOSTILE), ("fine", FINE)], |_| {}, None).await;
    // A broken file whose error quotes hostile text.
    std::fs::write(env.dags_dir().join("broken.toml"), "schedule = \"<script>alert(5)</script>\"\n[tasks.a]\nkind = \"shell\"\ncommand = \"true\"\n").expect("write");
    env.registry.sync(&env.db, Utc::now()).await.expect("sync");
    for (name, role) in [
        ("ada", Role::Admin),
        ("otto", Role::Operator),
        ("vera", Role::Viewer),
    ] {
        let hash = weft::accounts::hash_password("correct horse").expect("hash");
        users::create(&env.db.conn, name, &hash, role, Utc::now())
            .await
            .expect("user");
    }
    let state = AppState::new(
        env.db.clone(),
        env.config.clone(),
        env.registry.clone(),
        Some(env.engine.clone()),
    )
    .await
    .expect("state");
    let router = app(state);
    (t, env, router)
}

#[tokio::test]
async fn every_page_and_api_route_renders() {
    let (_t, env, router) = setup().await;
    let run = env.trigger("fine").await;
    env.wait_run(run.id, std::time::Duration::from_secs(30))
        .await;
    let bad = env.trigger("hostile").await;
    assert_eq!(
        env.wait_run(bad.id, std::time::Duration::from_secs(30))
            .await,
        RunState::Failed
    );
    let mut c = Client::new(router);
    let r = weft::web::views::enc(&run.run_id);
    let is_log = |p: &str| p.contains("/log?") || p.ends_with("/logs");
    let pages = [
        "/dags".to_string(),
        "/dags?q=fin&tag=".into(),
        "/dags/fine".into(),
        format!("/dags/fine/runs/{r}"),
        format!("/dags/fine/runs/{r}/tasks/a"),
        format!("/dags/fine/runs/{r}/tasks/a?try=1"),
        format!("/dags/fine/runs/{r}/tasks/a/log?try=1"),
        "/dashboard".into(),
        "/experiments".into(),
        "/surveys".into(),
        "/pools".into(),
        "/import-errors".into(),
        "/login".into(),
        "/health".into(),
        "/metrics".into(),
        "/static/weft.css".into(),
        "/static/weft.js".into(),
        "/api/v1/dags".into(),
        "/api/v1/dags/fine".into(),
        "/api/v1/dags/fine/runs".into(),
        format!("/api/v1/dags/fine/runs/{r}"),
        format!("/api/v1/dags/fine/runs/{r}/tasks"),
        format!("/api/v1/dags/fine/runs/{r}/tasks/a/logs"),
        "/api/v1/pools".into(),
        "/api/v1/health".into(),
        "/api/v1/import-errors".into(),
        "/api/v1/openapi.json".into(),
    ];
    for p in &pages {
        let res = c.get(p).await;
        if is_log(p) {
            // Logs are not for anonymous readers (public_logs is off by default).
            assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{p}: {}", res.body);
            continue;
        }
        assert_eq!(res.status, StatusCode::OK, "{p}: {}", res.body);
        // Security headers on everything.
        let csp = res
            .headers
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'"), "{p}");
        assert_eq!(
            res.headers
                .get(header::X_CONTENT_TYPE_OPTIONS)
                .and_then(|v| v.to_str().ok()),
            Some("nosniff")
        );
    }
    let grid = c.get("/dags/fine").await.body;
    assert!(
        grid.contains("id=\"grid\"") && grid.contains("class=\"cell s-success\""),
        "{grid}"
    );
    // The banner links the broken file's first problem to its section.
    let banner = grid
        .split("id=\"import-errors-banner\"")
        .nth(1)
        .and_then(|b| b.split("</p>").next())
        .expect("banner");
    let link = banner
        .split("<a href=\"/import-errors#")
        .nth(1)
        .expect("a link to the error");
    let anchor = link.split('"').next().expect("anchor");
    assert!(link.contains("broken.toml:1</code>"), "{banner}");
    let errors = c.get("/import-errors").await.body;
    assert!(errors.contains(&format!("id=\"{anchor}\"")), "{errors}");
    let anonymous_task_page = c.get(&format!("/dags/fine/runs/{r}/tasks/a")).await.body;
    assert!(
        anonymous_task_page.contains("log in to read task logs"),
        "{anonymous_task_page}"
    );
    c.login("vera", "correct horse").await;
    for p in pages.iter().filter(|p| is_log(p)) {
        let res = c.get(p).await;
        assert_eq!(res.status, StatusCode::OK, "{p}: {}", res.body);
    }
    let log = c
        .get(&format!("/dags/fine/runs/{r}/tasks/a/log"))
        .await
        .body;
    assert!(log.contains("fine"), "{log}");
    let metrics = c.get("/metrics").await.body;
    assert!(
        metrics.contains("weft_dag_runs_total{state=\"success\"}")
            && metrics.contains("weft_dag_runs{state=\"running\"}")
            && metrics.contains("weft_task_instances{state=\"scheduled\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("weft_dag_import_errors 1"), "{metrics}");
    let api: serde_json::Value =
        serde_json::from_str(&c.get("/api/v1/dags/fine/runs").await.body).expect("json");
    assert_eq!(api["runs"][0]["state"], "success");
    let doc: serde_json::Value =
        serde_json::from_str(&c.get("/api/v1/openapi.json").await.body).expect("json");
    assert!(
        doc["paths"]["/api/v1/dags/{dag_id}/runs"]["post"].is_object(),
        "openapi lists trigger"
    );
    env.stop().await;
}

#[tokio::test]
async fn missing_things_are_404_and_bad_params_400_with_messages() {
    let (_t, env, router) = setup().await;
    let run = env.trigger("fine").await;
    env.wait_run(run.id, std::time::Duration::from_secs(30))
        .await;
    let r = weft::web::views::enc(&run.run_id);
    let mut c = Client::new(router);
    for (path, status, text) in [
        (
            "/dags/nope".to_string(),
            StatusCode::NOT_FOUND,
            "no dag &quot;nope&quot;",
        ),
        (
            "/dags/fin".to_string(),
            StatusCode::NOT_FOUND,
            "did you mean &quot;fine&quot;",
        ),
        (
            "/dags/fine/runs/nope".to_string(),
            StatusCode::NOT_FOUND,
            "has no run",
        ),
        (
            format!("/dags/fine/runs/{r}/tasks/zz"),
            StatusCode::NOT_FOUND,
            "has no task",
        ),
        (
            format!("/dags/fine/runs/{r}/tasks/a?try=abc"),
            StatusCode::BAD_REQUEST,
            "try must be a number",
        ),
        (
            format!("/dags/fine/runs/{r}/tasks/a?try=9"),
            StatusCode::NOT_FOUND,
            "has no try 9",
        ),
        (
            "/no/such/page".to_string(),
            StatusCode::NOT_FOUND,
            "no page at /no/such/page",
        ),
    ] {
        let res = c.get(&path).await;
        assert_eq!(res.status, status, "{path}: {}", res.body);
        assert!(res.body.contains(text), "{path}: {}", res.body);
    }
    for (path, status, code) in [
        ("/api/v1/dags/nope", StatusCode::NOT_FOUND, "not_found"),
        (
            "/api/v1/dags/fine/runs?limit=lots",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/api/v1/dags/fine/runs?state=exploded",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        ("/api/v1/nothing", StatusCode::NOT_FOUND, "not_found"),
    ] {
        let res = c.get(path).await;
        assert_eq!(res.status, status, "{path}: {}", res.body);
        let v: serde_json::Value = serde_json::from_str(&res.body)
            .unwrap_or_else(|_| panic!("{path} is not JSON: {}", res.body));
        assert_eq!(v["error"]["code"], code, "{path}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    env.stop().await;
}

#[tokio::test]
async fn hostile_text_is_escaped_everywhere() {
    let (_t, env, router) = setup().await;
    let run = env.trigger("hostile").await;
    env.wait_run(run.id, std::time::Duration::from_secs(30))
        .await;
    let r = weft::web::views::enc(&run.run_id);
    let mut c = Client::new(router);
    c.login("otto", "correct horse").await;
    for p in [
        "/dags".to_string(),
        "/dags/hostile".into(),
        format!("/dags/hostile/runs/{r}"),
        format!("/dags/hostile/runs/{r}/tasks/loud"),
        "/import-errors".into(),
        "/dags/hostile/trigger".into(),
        "/dashboard".into(),
    ] {
        let body = c.get(&p).await.body;
        for raw in [
            "<script>alert(",
            "<img src=x",
            "<b>bold</b>",
            "</pre><script>",
        ] {
            assert!(!body.contains(raw), "{p} contains unescaped {raw}");
        }
    }
    let body = c
        .get(&format!("/dags/hostile/runs/{r}/tasks/loud"))
        .await
        .body;
    assert!(
        body.contains("&#60;img src=x onerror=alert(3)&#62;"),
        "{body}"
    );
    assert!(
        c.get("/dags")
            .await
            .body
            .contains("&#60;script&#62;alert(1)&#60;/script&#62; events")
    );
    let ie = c.get("/import-errors").await.body;
    assert!(
        ie.contains("&#60;script&#62;alert(5)&#60;/script&#62;"),
        "{ie}"
    );
    env.stop().await;
}

#[tokio::test]
async fn actions_need_csrf_login_and_role() {
    let (_t, env, router) = setup().await;
    let mut anon = Client::new(router.clone());
    let token = anon.csrf("/login").await;
    // Anonymous, with a valid CSRF token: 401.
    let res = anon
        .post_form(
            "/actions",
            &[
                ("action", "pause"),
                ("dag", "fine"),
                ("authenticity_token", &token),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.body);
    // The confirm page sends anonymous users to log in first.
    let res = anon.get("/confirm?action=pause&dag=fine").await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert!(
        res.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|l| l.starts_with("/login?next="))
    );

    // Wrong password.
    let mut viewer = Client::new(router.clone());
    let res = viewer.login("vera", "wrong").await;
    assert!(
        res.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|l| l.contains("error=1"))
    );
    assert!(!viewer.cookies.contains_key(auth::SESSION_COOKIE));
    let res = viewer.login("vera", "correct horse").await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let set: Vec<String> = res
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .collect();
    let session = set
        .iter()
        .find(|c| c.starts_with(auth::SESSION_COOKIE))
        .expect("session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );
    assert!(viewer.get("/dags").await.body.contains("vera"));
    // A viewer may not act.
    let token = viewer.csrf("/dags").await;
    let res = viewer
        .post_form(
            "/actions",
            &[
                ("action", "pause"),
                ("dag", "fine"),
                ("authenticity_token", &token),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN, "{}", res.body);
    assert!(res.body.contains("needs the operator role"), "{}", res.body);

    // An operator may, with a valid token; without one, or with a forged one, 403.
    let mut op = Client::new(router.clone());
    op.login("otto", "correct horse").await;
    let res = op
        .post_form("/actions", &[("action", "pause"), ("dag", "fine")])
        .await;
    assert!(
        res.status == StatusCode::FORBIDDEN || res.status == StatusCode::UNPROCESSABLE_ENTITY,
        "missing token: {}",
        res.status
    );
    let res = op
        .post_form(
            "/actions",
            &[
                ("action", "pause"),
                ("dag", "fine"),
                ("authenticity_token", "forged"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert!(res.body.contains("CSRF"), "{}", res.body);
    let confirm = op.get("/confirm?action=pause&dag=fine").await;
    assert!(
        confirm.body.contains("Pause dag &#34;fine&#34;?"),
        "{}",
        confirm.body
    );
    let token = op.csrf("/confirm?action=pause&dag=fine").await;
    let res = op
        .post_form(
            "/actions",
            &[
                ("action", "pause"),
                ("dag", "fine"),
                ("authenticity_token", &token),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert!(
        weft::db::dags::get_dag(&env.db.conn, "fine")
            .await
            .expect("dag")
            .expect("row")
            .is_paused
    );
    let res = op
        .post_form(
            "/actions",
            &[
                ("action", "explode"),
                ("dag", "fine"),
                ("authenticity_token", &token),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert!(res.body.contains("unknown action"), "{}", res.body);
    // Operators cannot manage users; admins can.
    let res = op.get("/users").await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let mut admin = Client::new(router);
    admin.login("ada", "correct horse").await;
    let token = admin.csrf("/users").await;
    let res = admin
        .post_form(
            "/users",
            &[
                ("username", "newbie"),
                ("password", "short"),
                ("role", "viewer"),
                ("authenticity_token", &token),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    let res = admin
        .post_form(
            "/users",
            &[
                ("username", "newbie"),
                ("password", "long enough"),
                ("role", "viewer"),
                ("authenticity_token", &token),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert!(
        users::find_by_name(&env.db.conn, "newbie")
            .await
            .expect("q")
            .is_some()
    );
    // Log out ends the session.
    let token = admin.csrf("/dags").await;
    admin
        .post_form("/logout", &[("authenticity_token", &token)])
        .await;
    assert!(!admin.get("/dags").await.body.contains("ada <small>"));
    env.stop().await;
}

#[tokio::test]
async fn trigger_form_and_api_check_params_and_tokens() {
    let (_t, env, router) = setup().await;
    let mut op = Client::new(router.clone());
    op.login("otto", "correct horse").await;
    let token = op.csrf("/dags/hostile/trigger").await;
    let res = op
        .post_form(
            "/dags/hostile/trigger",
            &[
                ("param_note", "from the form"),
                ("conf", "{not json"),
                ("authenticity_token", &token),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert!(res.body.contains("conf is not valid JSON"), "{}", res.body);
    let token = op.csrf("/dags/hostile/trigger").await;
    let res = op
        .post_form(
            "/dags/hostile/trigger",
            &[
                ("param_note", "from the form"),
                ("conf", "{\"k\": 1}"),
                ("authenticity_token", &token),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let runs = weft::db::runs::list_runs(
        &env.db.conn,
        &weft::db::runs::RunFilter {
            dag_id: Some("hostile".into()),
            limit: 5,
            ..Default::default()
        },
    )
    .await
    .expect("runs");
    assert_eq!(runs.len(), 1);
    assert!(
        runs[0].params.contains("from the form") && runs[0].conf.contains("\"k\":1"),
        "{:?}",
        runs[0]
    );

    // API: cookies are not enough to write; tokens are.
    let res = op
        .post_json("/api/v1/dags/fine/runs", serde_json::json!({}))
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.body);
    let mut api = Client::new(router.clone());
    let (tok, hash) = weft::accounts::new_token();
    let otto = users::find_by_name(&env.db.conn, "otto")
        .await
        .expect("q")
        .expect("otto");
    users::create_token(
        &env.db.conn,
        otto.id,
        "ci",
        &hash,
        "operate",
        None,
        Utc::now(),
    )
    .await
    .expect("token");
    api.bearer = Some(tok);
    let res = api
        .post_json(
            "/api/v1/dags/fine/runs",
            serde_json::json!({"params": {"nope": 1}}),
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.body);
    assert!(res.body.contains("unknown param"), "{}", res.body);
    let res = api
        .post_json(
            "/api/v1/dags/fine/runs",
            serde_json::json!({"conf": {"source": "api"}}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
    let v: serde_json::Value = serde_json::from_str(&res.body).expect("json");
    assert_eq!(v["conf"]["source"], "api");
    let res = api
        .send(
            Request::post("/api/v1/dags/fine/runs")
                .header(header::CONTENT_TYPE, "application/json"),
            Body::from("{broken"),
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert!(res.body.contains("bad request body"), "{}", res.body);
    // A viewer's token may read but not write; a bad token is 401.
    let (vtok, vhash) = weft::accounts::new_token();
    let vera = users::find_by_name(&env.db.conn, "vera")
        .await
        .expect("q")
        .expect("vera");
    users::create_token(
        &env.db.conn,
        vera.id,
        "ci",
        &vhash,
        "read",
        None,
        Utc::now(),
    )
    .await
    .expect("token");
    let mut v = Client::new(router.clone());
    v.bearer = Some(vtok);
    assert_eq!(v.get("/api/v1/dags").await.status, StatusCode::OK);
    assert_eq!(
        v.post_json("/api/v1/dags/fine/pause", serde_json::json!({}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let mut bad = Client::new(router);
    bad.bearer = Some("weft_not_a_token".into());
    assert_eq!(
        bad.get("/api/v1/dags").await.status,
        StatusCode::UNAUTHORIZED
    );
    let _ = Arc::new(());
    env.stop().await;
}

const INSIGHTS: &str = r#"
[tasks.analyze]
kind = "experiment"
experiment = "checkout_v2"
exposures = { path = "exposures.jsonl", format = "jsonl" }
events = { table = "events" }
control = "control"
split = { control = 0.5, treatment = 0.5 }
[[tasks.analyze.metrics]]
name = "purchased"
event = "purchased"

[tasks.feedback]
kind = "survey_sync"
provider = "csv"
form_id = "fb"
path = "fb.csv"
nps_field = "nps"
"#;

#[tokio::test]
async fn experiment_and_survey_pages_chart_what_the_tasks_wrote() {
    use std::fmt::Write as _;
    let t = sqlite_db().await;
    let env = Env::start(&t, &[("insights", INSIGHTS)], |_| {}, None).await;
    // 600 control and 400 treatment users: a sample-ratio mismatch.
    let mut exp = String::new();
    let mut ev = String::new();
    for i in 0..1000 {
        let v = if i < 600 { "control" } else { "treatment" };
        writeln!(exp, r#"{{"user_id": "u{i}", "experiment": "checkout_v2", "variant": "{v}", "timestamp": "2026-02-0{}T10:00:00Z"}}"#, 1 + i % 3).expect("w");
        if i % 7 == 0 {
            writeln!(ev, r#"{{"message_id": "e{i}", "event": "purchased", "user_id": "u{i}", "timestamp": "2026-02-04T10:00:00Z"}}"#).expect("w");
        }
    }
    std::fs::write(env.dags_dir().join("exposures.jsonl"), exp).expect("w");
    std::fs::write(
        env.dags_dir().join("fb.csv"),
        "token,submitted_at,nps,comment\na,2026-03-02 10:00:00,10,<b>bold</b>\nb,2026-03-03 10:00:00,9,\nc,2026-03-10 10:00:00,3,\nd,2026-03-11 10:00:00,8,\n",
    )
    .expect("w");
    // The events table the experiment reads.
    let wh = weft::db::Db::connect(&env.config.connections["warehouse"].url)
        .await
        .expect("wh");
    {
        use sea_orm::ConnectionTrait;
        wh.conn
            .execute_unprepared("CREATE TABLE events (message_id TEXT, event TEXT, user_id TEXT, \"timestamp\" TEXT, properties TEXT)")
            .await
            .expect("events");
        for line in ev.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            wh.conn
                .execute_unprepared(&format!(
                    "INSERT INTO events VALUES ('{}', 'purchased', '{}', '{}', '{{}}')",
                    v["message_id"].as_str().expect("id"),
                    v["user_id"].as_str().expect("user"),
                    v["timestamp"].as_str().expect("ts")
                ))
                .await
                .expect("insert");
        }
    }
    let state = AppState::new(
        env.db.clone(),
        env.config.clone(),
        env.registry.clone(),
        Some(env.engine.clone()),
    )
    .await
    .expect("state");
    let mut c = Client::new(app(state));
    // Before any run: the pages say so instead of failing.
    let before = c.get("/experiments/checkout_v2").await;
    assert_eq!(before.status, StatusCode::OK, "{}", before.body);
    assert!(before.body.contains("No results yet"), "{}", before.body);
    let before = c.get("/surveys/csv/fb").await;
    assert!(before.body.contains("No responses yet"), "{}", before.body);

    let run = env.trigger("insights").await;
    assert_eq!(
        env.wait_run(run.id, std::time::Duration::from_secs(60))
            .await,
        RunState::Success,
        "{:?}",
        env.states(run.id).await
    );
    let page = c.get("/experiments/checkout_v2").await.body;
    assert!(
        page.contains("id=\"srm-warning\""),
        "600/400 against 50/50 warns: {page}"
    );
    assert!(page.contains("<svg class=\"chart forest\""), "{page}");
    assert!(page.contains("purchased · treatment"), "{page}");
    assert!(page.contains("<svg class=\"chart lines\""), "{page}");
    assert!(
        page.contains("control (600)") && page.contains("treatment (400)"),
        "{page}"
    );
    assert!(page.contains("id=\"turnaround\""), "{page}");
    // When it was computed is a time like every other (local in the browser).
    assert!(page.contains("Computed <time datetime=\""), "{page}");
    let list = c.get("/experiments").await.body;
    assert!(list.contains("sample-ratio mismatch"), "{list}");
    assert!(list.contains("<td><time datetime=\""), "{list}");
    let missing = c.get("/experiments/checkout_v3").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("did you mean"), "{}", missing.body);

    let page = c.get("/surveys/csv/fb").await.body;
    assert!(page.contains("<svg class=\"chart trend\""), "{page}");
    assert!(page.contains("<polygon class=\"band\""), "{page}");
    assert!(page.contains("<svg class=\"chart scores\""), "{page}");
    // Two weeks: +100 (2 promoters), then -50 (a detractor and a passive) -> overall +25.
    assert!(page.contains("Mar 02: NPS +100.0"), "{page}");
    assert!(page.contains("Mar 09: NPS -50.0"), "{page}");
    assert!(page.contains("+25.0 ["), "{page}");
    assert!(
        !page.contains("<b>bold</b>"),
        "answers never reach the page unescaped"
    );
    let list = c.get("/surveys").await.body;
    assert!(
        list.contains(">fb</a>") && list.contains("<td>4</td>"),
        "{list}"
    );

    let dag = c.get("/dags/insights").await.body;
    assert!(
        dag.contains("href=\"/experiments/checkout%5Fv2\"")
            && dag.contains("href=\"/surveys/csv/fb\""),
        "the DAG page links to its results: {dag}"
    );
    // The same numbers from the JSON API.
    let api = c.get("/api/v1/experiments/checkout_v2").await;
    assert_eq!(api.status, StatusCode::OK, "{}", api.body);
    let v: serde_json::Value = serde_json::from_str(&api.body).expect("json");
    let rows = v["results"].as_array().expect("results");
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r["srm_p_value"].as_f64().is_some_and(|p| p < 0.001))
    );
    let api = c.get("/api/v1/surveys/csv/fb").await;
    let v: serde_json::Value = serde_json::from_str(&api.body).expect("json");
    assert_eq!(v["responses"], 4);
    assert_eq!(v["metrics"][0]["segment"], "all");
    assert_eq!(v["metrics"][0]["promoters"], 2);
    assert_eq!(v["metrics"][0]["nps"].as_f64(), Some(25.0));
    let missing = c.get("/api/v1/surveys/typeform/fb").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(
        missing.body.contains("\"code\":\"not_found\""),
        "{}",
        missing.body
    );
    env.stop().await;
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server_and_csrf_tokens_belong_to_one_session() {
    let (_t, env, router) = setup().await;
    let mut c = Client::new(router.clone());
    let res = c.login("otto", "correct horse").await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let stolen = c.cookies.clone();
    let token = c.csrf("/dags").await;
    assert!(token.ends_with(&format!(".{}", &token[token.len() - 16..])));
    // The token of this session does not work in another session of the same user.
    let mut other = Client::new(router.clone());
    other.login("otto", "correct horse").await;
    let csrf_cookie = other.cookies.get("weft_csrf").cloned();
    let res = other
        .post_form("/dags/fine/trigger", &[("authenticity_token", &token)])
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN, "{}", res.body);
    assert!(csrf_cookie.is_some());
    // Logout, then the old cookie is worthless (it would be valid for 12 h if signed only).
    let res = c
        .post_form("/logout", &[("authenticity_token", &token)])
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let mut replay = Client::new(router.clone());
    replay.cookies = stolen;
    let page = replay.get("/dags").await.body;
    assert!(!page.contains("otto"), "the session survived logout");
    // Disabling a user ends their sessions and refuses their login.
    let otto = users::find_by_name(&env.db.conn, "otto")
        .await
        .expect("q")
        .expect("otto");
    users::set_disabled(&env.db.conn, otto.id, true)
        .await
        .expect("disable");
    assert!(!other.get("/dags").await.body.contains("otto"));
    let res = other.login("otto", "correct horse").await;
    assert!(
        res.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|l| l.contains("error=1")),
        "a disabled user logged in"
    );
    env.stop().await;
}

#[tokio::test]
async fn failed_logins_back_off_and_unknown_users_cost_as_much_as_known_ones() {
    let (_t, env, router) = setup().await;
    let mut c = Client::new(router.clone());
    let mut locked = false;
    for _ in 0..8 {
        let res = c.login("ada", "wrong password").await;
        if res.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(res.headers.contains_key(header::RETRY_AFTER));
            locked = true;
            break;
        }
    }
    assert!(locked, "no backoff after repeated failures");
    // Even the right password waits while the account is locked.
    let res = c.login("ada", "correct horse").await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
    // An unknown user is checked against a dummy hash: not answered in a fraction of the
    // time of a known one (argon2 dominates both).
    let mut d = Client::new(router.clone());
    let t0 = std::time::Instant::now();
    d.login("vera", "wrong password").await;
    let known = t0.elapsed();
    let t1 = std::time::Instant::now();
    d.login("nobody-at-all", "wrong password").await;
    let unknown = t1.elapsed();
    assert!(
        unknown * 4 > known,
        "unknown {unknown:?} vs known {known:?}"
    );
    env.stop().await;
}

#[test]
fn only_same_site_paths_are_followed_after_login() {
    use weft::web::auth::safe_next;
    for bad in [
        "//evil.example",
        "/\t/evil.example",
        "/\\evil.example",
        "https://evil.example",
        "/%09/x\n",
        "/\\/evil",
        "javascript:alert(1)",
    ] {
        assert_eq!(safe_next(Some(bad)), "/dags", "{bad:?}");
    }
    assert_eq!(safe_next(Some("/dags/x?tab=grid")), "/dags/x?tab=grid");
}

#[tokio::test]
async fn api_tokens_have_scopes_and_expiry_and_errors_are_json() {
    let (_t, env, router) = setup().await;
    let ada = users::find_by_name(&env.db.conn, "ada")
        .await
        .expect("q")
        .expect("ada");
    let (read_tok, read_hash) = weft::accounts::new_token();
    users::create_token(
        &env.db.conn,
        ada.id,
        "reader",
        &read_hash,
        "read",
        None,
        Utc::now(),
    )
    .await
    .expect("t");
    let (old_tok, old_hash) = weft::accounts::new_token();
    users::create_token(
        &env.db.conn,
        ada.id,
        "old",
        &old_hash,
        "operate",
        Some(Utc::now() - chrono::Duration::hours(1)),
        Utc::now(),
    )
    .await
    .expect("t");
    let (op_tok, op_hash) = weft::accounts::new_token();
    users::create_token(
        &env.db.conn,
        ada.id,
        "ops",
        &op_hash,
        "operate",
        None,
        Utc::now(),
    )
    .await
    .expect("t");
    let mut c = Client::new(router.clone());
    c.bearer = Some(read_tok);
    assert_eq!(c.get("/api/v1/dags").await.status, StatusCode::OK);
    let res = c
        .post_json("/api/v1/dags/fine/pause", serde_json::json!({}))
        .await;
    assert_eq!(
        res.status,
        StatusCode::FORBIDDEN,
        "a read token acted: {}",
        res.body
    );
    c.bearer = Some(old_tok);
    let res = c.get("/api/v1/dags").await;
    assert_eq!(
        res.status,
        StatusCode::UNAUTHORIZED,
        "an expired token was accepted"
    );
    assert!(res.body.starts_with('{'), "{}", res.body);
    c.bearer = Some(op_tok);
    let run = env.trigger("fine").await;
    env.wait_run(run.id, std::time::Duration::from_secs(30))
        .await;
    let path = format!(
        "/api/v1/dags/fine/runs/{}/tasks/a/clear",
        weft::web::views::enc(&run.run_id)
    );
    for bad in ["[]", "{\"downstream\": 1}", "{\"nope\": true}", "not json"] {
        let res = c
            .send(
                Request::post(&path).header(header::CONTENT_TYPE, "application/json"),
                Body::from(bad),
            )
            .await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{bad}: {}", res.body);
    }
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let res = c.send(Request::post(&path), Body::from(deep)).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    let res = c
        .send(Request::post(&path), Body::from(vec![0xff, 0xfe, b'{']))
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    // Nothing was cleared by the bad bodies.
    assert_eq!(env.states(run.id).await.get("a"), Some(&TaskState::Success));
    let res = c.send(Request::post(&path), Body::empty()).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    // Errors axum makes itself are JSON on the API too.
    let res = c.send(Request::delete("/api/v1/dags"), Body::empty()).await;
    assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED);
    let v: serde_json::Value = serde_json::from_str(&res.body).expect("405 is JSON");
    assert!(v["error"]["message"].is_string());
    // Revoked tokens stop working.
    assert!(
        users::revoke_token(&env.db.conn, ada.id, "ops")
            .await
            .expect("revoke")
    );
    assert_eq!(c.get("/api/v1/dags").await.status, StatusCode::UNAUTHORIZED);
    env.stop().await;
}

#[tokio::test]
async fn hsts_is_sent_when_cookies_are_secure() {
    let (_t, env, router) = setup().await;
    let mut c = Client::new(router);
    let res = c
        .send(
            Request::get("/dags").header("x-forwarded-proto", "https"),
            Body::empty(),
        )
        .await;
    assert!(res.headers.contains_key(header::STRICT_TRANSPORT_SECURITY));
    let res = c.get("/dags").await;
    assert!(!res.headers.contains_key(header::STRICT_TRANSPORT_SECURITY));
    env.stop().await;
}

#[tokio::test]
async fn admins_list_and_revoke_tokens_and_disable_or_delete_users_from_the_users_page() {
    let (_t, env, router) = setup().await;
    let vera = users::find_by_name(&env.db.conn, "vera")
        .await
        .expect("q")
        .expect("vera");
    let (tok, hash) = weft::accounts::new_token();
    users::create_token(
        &env.db.conn,
        vera.id,
        "laptop",
        &hash,
        "read",
        None,
        Utc::now(),
    )
    .await
    .expect("t");
    let mut admin = Client::new(router.clone());
    admin.login("ada", "correct horse").await;
    let page = admin.get("/users").await.body;
    assert!(page.contains("<code>laptop</code> (read"), "{page}");
    let csrf = admin.csrf("/users").await;
    let res = admin
        .post_form(
            "/users/manage",
            &[
                ("authenticity_token", &csrf),
                ("user", "vera"),
                ("op", "revoke"),
                ("token", "laptop"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let mut api = Client::new(router.clone());
    api.bearer = Some(tok);
    assert_eq!(
        api.get("/api/v1/dags").await.status,
        StatusCode::UNAUTHORIZED
    );
    let res = admin
        .post_form(
            "/users/manage",
            &[
                ("authenticity_token", &csrf),
                ("user", "ada"),
                ("op", "delete"),
            ],
        )
        .await;
    assert_eq!(
        res.status,
        StatusCode::BAD_REQUEST,
        "an admin deleted themselves"
    );
    let res = admin
        .post_form(
            "/users/manage",
            &[
                ("authenticity_token", &csrf),
                ("user", "vera"),
                ("op", "delete"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert!(
        users::find_by_name(&env.db.conn, "vera")
            .await
            .expect("q")
            .is_none()
    );
    // An operator may not manage users.
    let mut op = Client::new(router);
    op.login("otto", "correct horse").await;
    let csrf = op.csrf("/dags").await;
    let res = op
        .post_form(
            "/users/manage",
            &[
                ("authenticity_token", &csrf),
                ("user", "ada"),
                ("op", "disable"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    env.stop().await;
}

#[tokio::test]
async fn health_tells_the_truth_when_the_engine_broke() {
    let (_t, env, router) = setup().await;
    let mut c = Client::new(router);
    // Give the scheduler a heartbeat first.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let ok = c.get("/health").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    env.engine.set_fault("the finisher died: test".into());
    let res = c.get("/health").await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.body.contains("\"engine\":\"stopped\""), "{}", res.body);
    env.stop().await;
}

#[tokio::test]
async fn oversized_uris_and_headers_get_json_errors_on_the_api() {
    let (_t, env, router) = setup().await;
    let mut c = Client::new(router);
    let long = format!("/api/v1/dags?q={}", "x".repeat(10_000));
    let res = c.get(&long).await;
    assert_eq!(res.status, StatusCode::URI_TOO_LONG);
    let v: serde_json::Value = serde_json::from_str(&res.body).expect("414 is JSON");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("URI"))
    );
    let res = c
        .send(
            Request::get("/api/v1/dags").header("x-big", "y".repeat(70_000)),
            Body::empty(),
        )
        .await;
    assert_eq!(res.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(
        serde_json::from_str::<serde_json::Value>(&res.body).is_ok(),
        "{}",
        res.body
    );
    env.stop().await;
}

/// An engine on `dags` with operator "otto" (password "correct horse"), and the app.
async fn app_with(dags: &[(&str, &str)]) -> (crate::support::TestDb, Env, Router, i64) {
    let t = sqlite_db().await;
    let env = Env::start(&t, dags, |_| {}, None).await;
    let hash = weft::accounts::hash_password("correct horse").expect("hash");
    let otto = users::create(&env.db.conn, "otto", &hash, Role::Operator, Utc::now())
        .await
        .expect("user");
    let state = AppState::new(
        env.db.clone(),
        env.config.clone(),
        env.registry.clone(),
        Some(env.engine.clone()),
    )
    .await
    .expect("state");
    (t, env, app(state), otto.id)
}

#[tokio::test]
async fn cancelling_a_run_stops_its_process_at_once_and_says_who() {
    let (_t, env, router, _) = app_with(&[(
        "slow",
        "schedule = \"none\"\n[tasks.nap]\nkind = \"shell\"\ncommand = \"sleep 60\"\n",
    )])
    .await;
    let mut op = Client::new(router);
    op.login("otto", "correct horse").await;
    let run = env.trigger("slow").await;
    env.wait_task(
        run.id,
        "nap",
        TaskState::Running,
        std::time::Duration::from_secs(30),
    )
    .await;
    let csrf = op.csrf("/dags").await;
    let started = std::time::Instant::now();
    let res = op
        .post_form(
            "/actions",
            &[
                ("action", "mark_run"),
                ("dag", "slow"),
                ("run", &run.run_id),
                ("state", "failed"),
                ("authenticity_token", &csrf),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let ti = weft::db::tasks::of_run(&env.db.conn, run.id)
        .await
        .expect("tis")
        .remove(0);
    assert_eq!(ti.state, TaskState::Failed);
    assert_eq!(ti.error.as_deref(), Some("cancelled by otto"));
    // The shell is stopped at once (SIGTERM), not at the next heartbeat.
    let pid = ti.pid.expect("pid");
    while weft::process::pid_alive(pid) && started.elapsed() < std::time::Duration::from_secs(10) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        !weft::process::pid_alive(pid)
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    env.stop().await;
}

#[tokio::test]
async fn an_upstream_failed_task_says_which_upstream_failed() {
    let (_t, env, router, _) = app_with(&[("chain", "schedule = \"none\"\n[tasks.extract]\nkind = \"shell\"\ncommand = \"exit 3\"\n[tasks.load]\nkind = \"noop\"\ndepends_on = [\"extract\"]\n")]).await;
    let mut c = Client::new(router);
    let run = env.trigger("chain").await;
    assert_eq!(
        env.wait_run(run.id, std::time::Duration::from_secs(30))
            .await,
        RunState::Failed
    );
    let r = weft::web::views::enc(&run.run_id);
    let page = c
        .get(&format!("/dags/chain/runs/{r}/tasks/load"))
        .await
        .body;
    assert!(
        page.contains("id=\"blocked-by\"") && !page.contains("has not run yet"),
        "{page}"
    );
    assert!(
        page.contains(&format!("href=\"/dags/chain/runs/{r}/tasks/extract\"")),
        "{page}"
    );
    env.stop().await;
}

#[tokio::test]
async fn the_api_marks_tasks_and_cancels_runs() {
    let (_t, env, router, otto) = app_with(&[("slow", "schedule = \"none\"\n[tasks.nap]\nkind = \"shell\"\ncommand = \"sleep 60\"\n[tasks.after]\nkind = \"noop\"\ndepends_on = [\"nap\"]\n")]).await;
    let (tok, th) = weft::accounts::new_token();
    users::create_token(&env.db.conn, otto, "ci", &th, "operate", None, Utc::now())
        .await
        .expect("token");
    let mut api = Client::new(router);
    api.bearer = Some(tok);
    let run = env.trigger("slow").await;
    env.wait_task(
        run.id,
        "nap",
        TaskState::Running,
        std::time::Duration::from_secs(30),
    )
    .await;
    let r = weft::web::views::enc(&run.run_id);
    let res = api
        .post_json(
            &format!("/api/v1/dags/slow/runs/{r}/tasks/nap/mark"),
            serde_json::json!({"state": "running"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.body);
    let res = api
        .post_json(
            &format!("/api/v1/dags/slow/runs/{r}/cancel"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let v: serde_json::Value = serde_json::from_str(&res.body).expect("json");
    assert_eq!(v["state"], "failed");
    let states = env.states(run.id).await;
    assert_eq!(
        (states["nap"], states["after"]),
        (TaskState::Failed, TaskState::Skipped)
    );
    let ti = weft::db::tasks::of_run(&env.db.conn, run.id)
        .await
        .expect("tis")
        .into_iter()
        .find(|t| t.task_id == "nap")
        .expect("nap");
    assert_eq!(ti.error.as_deref(), Some("cancelled by otto"));
    // Marking the stopped task success lets the run finish green.
    let res = api
        .post_json(
            &format!("/api/v1/dags/slow/runs/{r}/tasks/nap/mark"),
            serde_json::json!({"state": "success"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let doc: serde_json::Value =
        serde_json::from_str(&api.get("/api/v1/openapi.json").await.body).expect("json");
    assert!(doc["paths"]["/api/v1/dags/{dag_id}/runs/{run_id}/cancel"]["post"].is_object());
    env.stop().await;
}

#[tokio::test]
async fn a_favicon_and_a_login_link_on_the_401_page() {
    let (_t, env, router) = setup().await;
    let mut c = Client::new(router);
    let res = c.get("/favicon.ico").await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        res.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("image/svg+xml")
    );
    assert!(c.get("/dags").await.body.contains("rel=\"icon\""));
    // Logs need a login: the 401 page links to it.
    let run = env.trigger("fine").await;
    env.wait_run(run.id, std::time::Duration::from_secs(30))
        .await;
    let r = weft::web::views::enc(&run.run_id);
    let res = c.get(&format!("/dags/fine/runs/{r}/tasks/a/log")).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert!(res.body.contains("href=\"/login\""), "{}", res.body);
    env.stop().await;
}

#[tokio::test]
async fn the_health_page_lists_the_engine_and_the_queues() {
    let (_t, env, router) = setup().await;
    let mut c = Client::new(router);
    // This engine plans no cron runs (the tests' engines don't): give it the lease.
    let held = weft::db::lease::hold(
        &env.db.conn,
        weft::db::lease::SCHEDULER,
        &env.engine.shared.worker_id,
        Utc::now(),
        std::time::Duration::from_secs(60),
    )
    .await
    .expect("lease");
    assert!(held);
    let page = c.get("/dashboard").await.body;
    let table = page
        .split("id=\"processes\"")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .expect("a table of processes");
    // One engine: the all-in-one serve, alive, holding the lease, running every queue.
    assert_eq!(table.matches("<tr><td>").count(), 1, "{table}");
    assert!(
        table.contains("serve <span class=\"tag\">leader</span>"),
        "{table}"
    );
    assert!(table.contains(">alive<"), "{table}");
    assert!(table.contains("<td>all</td>"), "{table}");
    assert!(
        page.contains("No task instance is waiting or running."),
        "{page}"
    );
    env.stop().await;
}

#[tokio::test]
async fn the_failure_trend_has_a_point_for_each_of_14_days() {
    let (_t, env, router) = setup().await;
    let run = env.trigger("fine").await;
    env.wait_run(run.id, std::time::Duration::from_secs(30))
        .await;
    let mut c = Client::new(router);
    let page = c.get("/dashboard").await.body;
    let marker = "<polyline points=\"";
    let start = page.find(marker).expect("a trend") + marker.len();
    let points = page[start..].split('"').next().unwrap_or_default();
    // One try today, none on the 13 days before: still 14 points on the axis.
    assert_eq!(points.split_whitespace().count(), 14, "{points}");
    env.stop().await;
}

#[tokio::test]
async fn a_version_page_shows_its_files_and_a_diff_against_the_previous_one() {
    let (_t, env, router) = setup().await;
    let dir = env.dags_dir();
    std::fs::write(dir.join("report.sql"), "SELECT 1 AS old_total;\n").expect("write");
    let toml = "schedule = \"none\"\n[tasks.q]\nkind = \"sql\"\nfile = \"report.sql\"\n";
    std::fs::write(dir.join("versioned.toml"), toml).expect("write");
    env.registry.sync(&env.db, Utc::now()).await.expect("sync");
    std::fs::write(dir.join("report.sql"), "SELECT 2 AS new_total;\n").expect("write");
    env.registry.sync(&env.db, Utc::now()).await.expect("sync");
    let mut c = Client::new(router);
    let dag = c.get("/dags/versioned").await;
    assert!(
        dag.body.contains("href=\"/dags/versioned/versions/2\""),
        "{}",
        dag.body
    );
    let v2 = c.get("/dags/versioned/versions/2").await;
    assert_eq!(v2.status, StatusCode::OK);
    assert!(v2.body.contains("since version 1"), "{}", v2.body);
    assert!(v2.body.contains("<code>report.sql</code>"), "{}", v2.body);
    assert!(
        v2.body.contains("d-del\">- SELECT 1 AS old_total;"),
        "{}",
        v2.body
    );
    assert!(
        v2.body.contains("d-add\">+ SELECT 2 AS new_total;"),
        "{}",
        v2.body
    );
    // Version 1 keeps its own files.
    let v1 = c.get("/dags/versioned/versions/1").await;
    assert!(v1.body.contains("SELECT 1 AS old_total;"));
    assert!(!v1.body.contains("new_total"));
    assert_eq!(
        c.get("/dags/versioned/versions/9").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.get("/dags/versioned/versions/2?against=7").await.status,
        StatusCode::NOT_FOUND
    );
    env.stop().await;
}

#[tokio::test]
async fn api_writes_take_only_a_bearer_token_never_a_session_cookie() {
    let (_t, env, router) = setup().await;
    let mut c = Client::new(router);
    // An admin's session cookie, plus an Authorization header that is not a bearer token.
    assert_eq!(
        c.login("ada", "correct horse").await.status,
        StatusCode::SEE_OTHER
    );
    for auth in [
        None,
        Some("Basic YWRhOmNvcnJlY3QgaG9yc2U="),
        Some("Token abc"),
        Some("Bearer "),
    ] {
        let mut req = Request::post("/api/v1/dags/fine/pause");
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let res = c.send(req, Body::empty()).await;
        assert_eq!(
            res.status,
            StatusCode::UNAUTHORIZED,
            "{auth:?}: {}",
            res.body
        );
        assert!(res.body.contains("\"error\""), "{}", res.body);
    }
    assert!(
        !weft::db::dags::get_dag(&env.db.conn, "fine")
            .await
            .expect("q")
            .expect("dag")
            .is_paused
    );
    env.stop().await;
}

#[tokio::test]
async fn the_trigger_form_takes_a_logical_date_and_keeps_what_was_typed_on_an_error() {
    let (_t, env, router) = setup().await;
    let mut c = Client::new(router);
    assert_eq!(
        c.login("ada", "correct horse").await.status,
        StatusCode::SEE_OTHER
    );
    let token = c.csrf("/dags/fine/trigger").await;
    let res = c
        .post_form(
            "/dags/fine/trigger",
            &[
                ("authenticity_token", &token),
                ("conf", "{\"region\": \"eu\""),
                ("logical_date", "2026-03-01"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.body);
    assert!(res.body.contains("conf is not valid JSON"), "{}", res.body);
    assert!(
        res.body
            .contains("{&#34;region&#34;: &#34;eu&#34;</textarea>")
            || res
                .body
                .contains("{&quot;region&quot;: &quot;eu&quot;</textarea>"),
        "the conf is kept: {}",
        res.body
    );
    assert!(
        res.body.contains("value=\"2026-03-01\""),
        "the date is kept"
    );
    let res = c
        .post_form(
            "/dags/fine/trigger",
            &[
                ("authenticity_token", &token),
                ("logical_date", "March 1st"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert!(res.body.contains("logical date:"), "{}", res.body);
    let res = c
        .post_form(
            "/dags/fine/trigger",
            &[
                ("authenticity_token", &token),
                ("logical_date", "2026-03-01T02:00:00"),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let runs = weft::db::runs::list_runs(
        &env.db.conn,
        &weft::db::runs::RunFilter {
            dag_id: Some("fine".into()),
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .expect("runs");
    assert!(
        runs.iter().any(|r| r.logical_date == utc(2026, 3, 1, 2, 0)),
        "{:?}",
        runs.iter().map(|r| r.logical_date).collect::<Vec<_>>()
    );
    env.stop().await;
}

#[tokio::test]
async fn the_task_graph_draws_its_edges_as_arrows() {
    let (_t, env, router) = setup().await;
    let mut c = Client::new(router);
    let page = c.get("/dags/fine").await;
    assert_eq!(page.status, StatusCode::OK);
    // fine has one edge (a -> b): one line, ending in the arrow marker.
    assert_eq!(
        page.body.matches("marker-end=\"url(#arrow)\"").count(),
        1,
        "{}",
        page.body
    );
    assert!(page.body.contains("<marker id=\"arrow\""));
    env.stop().await;
}

#[tokio::test]
async fn clears_preview_their_scope_and_every_action_and_note_is_in_the_audit_log() {
    // a -> b -> c, and d beside them; b fails, so c is upstream_failed.
    let dag = "schedule = \"none\"\n[tasks.a]\nkind = \"noop\"\n[tasks.b]\nkind = \"shell\"\ncommand = \"exit 1\"\ndepends_on = [\"a\"]\n[tasks.c]\nkind = \"noop\"\ndepends_on = [\"b\"]\n[tasks.d]\nkind = \"noop\"\n";
    let (_t, env, router, _) = app_with(&[("abc", dag)]).await;
    let hash = weft::accounts::hash_password("correct horse").expect("hash");
    users::create(&env.db.conn, "ada", &hash, Role::Admin, Utc::now())
        .await
        .expect("admin");
    let mut op = Client::new(router.clone());
    op.login("otto", "correct horse").await;
    let run = env.trigger("abc").await;
    assert_eq!(
        env.wait_run(run.id, std::time::Duration::from_secs(30))
            .await,
        RunState::Failed
    );
    let r = weft::web::views::enc(&run.run_id);
    let confirm = |extra: &str| format!("/confirm?action=clear&dag=abc&run={r}&task=b{extra}");
    let preview = |page: &str| -> Vec<String> {
        let Some(table) = page.split("id=\"preview\"").nth(1) else {
            return Vec::new();
        };
        let body = table.split("</table>").next().unwrap_or_default();
        body.split("<tr><td>")
            .skip(1)
            .filter_map(|row| row.split("</td>").next().map(str::to_string))
            .collect()
    };
    // The preview lists exactly what each scope clears, in DAG order.
    let page = op.get(&confirm("")).await.body;
    assert_eq!(preview(&page), ["b"], "{page}");
    let page = op.get(&confirm("&downstream=1")).await.body;
    assert_eq!(preview(&page), ["b", "c"], "{page}");
    let page = op.get(&confirm("&upstream=1")).await.body;
    assert_eq!(preview(&page), ["a", "b"], "{page}");
    let page = op
        .get(&confirm("&upstream=1&downstream=1&only_failed=1"))
        .await
        .body;
    assert_eq!(
        preview(&page),
        ["b", "c"],
        "only failed and upstream_failed: {page}"
    );
    assert!(
        page.contains("name=\"only_failed\" value=\"1\" checked"),
        "{page}"
    );
    // Clearing with that scope clears what the preview said, and nothing else.
    let csrf = op.csrf(&confirm("")).await;
    let res = op
        .post_form(
            "/actions",
            &[
                ("action", "clear"),
                ("dag", "abc"),
                ("run", &run.run_id),
                ("task", "b"),
                ("upstream", "1"),
                ("downstream", "1"),
                ("only_failed", "1"),
                ("authenticity_token", &csrf),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    // b ran again (and failed again); a and d kept their only try.
    assert_eq!(
        env.wait_run(run.id, std::time::Duration::from_secs(30))
            .await,
        RunState::Failed
    );
    let tries: BTreeMap<String, i32> = weft::db::tasks::of_run(&env.db.conn, run.id)
        .await
        .expect("tis")
        .into_iter()
        .map(|t| (t.task_id, t.try_number))
        .collect();
    assert_eq!(tries["a"], 1, "{tries:?}");
    assert_eq!(tries["d"], 1, "{tries:?}");
    assert_eq!(tries["b"], 2, "{tries:?}");
    // A note on the run and one on a task, kept and shown.
    for (task, note) in [
        ("", "rerun after the <fix> of b"),
        ("b", "flaky: see ticket 42"),
    ] {
        let res = op
            .post_form(
                "/actions",
                &[
                    ("action", "note"),
                    ("dag", "abc"),
                    ("run", &run.run_id),
                    ("task", task),
                    ("note", note),
                    ("authenticity_token", &csrf),
                ],
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    }
    let long = "x".repeat(10_001);
    let res = op
        .post_form(
            "/actions",
            &[
                ("action", "note"),
                ("dag", "abc"),
                ("run", &run.run_id),
                ("note", &long),
                ("authenticity_token", &csrf),
            ],
        )
        .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.body);
    let page = op.get(&format!("/dags/abc/runs/{r}")).await.body;
    assert!(
        page.contains("rerun after the &#60;fix&#62; of b") && !page.contains("<fix>"),
        "the note, escaped: {page}"
    );
    let history = page.split("id=\"history\"").nth(1).expect("history table");
    assert!(
        history.contains(">otto<") && history.contains(">clear<"),
        "{history}"
    );
    assert!(history.contains("cleared b, c"), "{history}");
    assert!(
        history.contains(">note<") && history.contains(">ui"),
        "{history}"
    );
    let task_page = op.get(&format!("/dags/abc/runs/{r}/tasks/b")).await.body;
    assert!(task_page.contains("flaky: see ticket 42"), "{task_page}");
    // The JSON API carries the notes too.
    let api: serde_json::Value =
        serde_json::from_str(&op.get(&format!("/api/v1/dags/abc/runs/{r}")).await.body)
            .expect("json");
    assert_eq!(api["note"], "rerun after the <fix> of b");
    let api: serde_json::Value = serde_json::from_str(
        &op.get(&format!("/api/v1/dags/abc/runs/{r}/tasks"))
            .await
            .body,
    )
    .expect("json");
    let b = api
        .as_array()
        .and_then(|a| a.iter().find(|t| t["task_id"] == "b"))
        .expect("b");
    assert_eq!(b["note"], "flaky: see ticket 42");
    // The audit log is for admins, with filters.
    assert_eq!(op.get("/audit").await.status, StatusCode::FORBIDDEN);
    let mut admin = Client::new(router);
    admin.login("ada", "correct horse").await;
    let all = admin.get("/audit").await.body;
    assert!(all.contains("1–3 of 3"), "{all}");
    let notes = admin.get("/audit?action=note").await.body;
    let table = notes.split("id=\"audit\"").nth(1).expect("audit table");
    assert_eq!(table.matches("<tr><td>").count(), 2, "{table}");
    assert!(!table.contains(">clear<"), "{table}");
    let none = admin.get("/audit?actor=nobody").await.body;
    assert!(none.contains("No action matches"), "{none}");
    assert_eq!(
        admin.get("/audit?page=0").await.status,
        StatusCode::BAD_REQUEST
    );
    env.stop().await;
}

#[tokio::test]
async fn the_api_previews_clears_marks_downstream_and_records_who_from_where() {
    let dag = "schedule = \"none\"\n[tasks.a]\nkind = \"shell\"\ncommand = \"exit 1\"\n[tasks.b]\nkind = \"noop\"\ndepends_on = [\"a\"]\n[tasks.c]\nkind = \"noop\"\ndepends_on = [\"b\"]\n";
    let (_t, env, router, otto) = app_with(&[("chain", dag)]).await;
    let (tok, th) = weft::accounts::new_token();
    users::create_token(&env.db.conn, otto, "ci", &th, "operate", None, Utc::now())
        .await
        .expect("token");
    let mut api = Client::new(router);
    api.bearer = Some(tok);
    let run = env.trigger("chain").await;
    assert_eq!(
        env.wait_run(run.id, std::time::Duration::from_secs(30))
            .await,
        RunState::Failed
    );
    let r = weft::web::views::enc(&run.run_id);
    let res = api
        .post_json(
            &format!("/api/v1/dags/chain/runs/{r}/tasks/a/clear"),
            serde_json::json!({"downstream": true, "dry_run": true}),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let v: serde_json::Value = serde_json::from_str(&res.body).expect("json");
    assert_eq!(v["cleared"], serde_json::json!(["a", "b", "c"]));
    // The dry run changed nothing.
    assert_eq!(env.states(run.id).await["a"], TaskState::Failed);
    let res = api
        .post_json(
            &format!("/api/v1/dags/chain/runs/{r}/tasks/a/mark"),
            serde_json::json!({"state": "success", "downstream": true}),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let states = env.states(run.id).await;
    assert!(
        states.values().all(|s| *s == TaskState::Success),
        "{states:?}"
    );
    assert_eq!(
        env.wait_run(run.id, std::time::Duration::from_secs(30))
            .await,
        RunState::Success
    );
    let (entries, total) = weft::db::audit::list(&env.db.conn, &Default::default(), 10, 0)
        .await
        .expect("audit");
    assert_eq!(total, 1, "a dry run is not an action: {entries:?}");
    assert_eq!(entries[0].actor, "otto");
    assert_eq!(entries[0].source, "api");
    assert_eq!(entries[0].action, "mark");
    assert_eq!(entries[0].task_id.as_deref(), Some("a"));
    assert_eq!(entries[0].detail, "marked a, b, c success");
    // The API reads the audit log for admins only.
    let res = api.get("/api/v1/audit").await;
    assert_eq!(res.status, StatusCode::FORBIDDEN, "{}", res.body);
    let hash = weft::accounts::hash_password("correct horse").expect("hash");
    let ada = users::create(&env.db.conn, "ada", &hash, Role::Admin, Utc::now())
        .await
        .expect("admin");
    let (tok, th) = weft::accounts::new_token();
    users::create_token(&env.db.conn, ada.id, "audit", &th, "read", None, Utc::now())
        .await
        .expect("token");
    api.bearer = Some(tok);
    let res = api.get("/api/v1/audit?action=mark&limit=5").await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let v: serde_json::Value = serde_json::from_str(&res.body).expect("json");
    assert_eq!(v["total"], 1);
    assert_eq!(v["entries"][0]["actor"], "otto");
    assert_eq!(v["entries"][0]["source"], "api");
    assert_eq!(v["entries"][0]["detail"], "marked a, b, c success");
    let res = api.get("/api/v1/audit?limit=x").await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.body);
    env.stop().await;
}

#[tokio::test]
async fn a_log_can_be_searched_line_by_line() {
    let dag = "schedule = \"none\"\n[tasks.talk]\nkind = \"shell\"\ncommand = \"echo alp''ha one; echo beta two; echo ALP''HA three\"\n";
    let (_t, env, router, _) = app_with(&[("talk", dag)]).await;
    let mut op = Client::new(router);
    op.login("otto", "correct horse").await;
    let run = env.trigger("talk").await;
    assert_eq!(
        env.wait_run(run.id, std::time::Duration::from_secs(30))
            .await,
        RunState::Success
    );
    let r = weft::web::views::enc(&run.run_id);
    let page = op
        .get(&format!("/dags/talk/runs/{r}/tasks/talk?q=alpha"))
        .await
        .body;
    // Three lines of the command's output plus weft's header lines.
    assert!(
        page.contains("2 of ") && page.contains(" lines contain &#34;alpha&#34;"),
        "{page}"
    );
    let log = page
        .split("id=\"log\"")
        .nth(1)
        .and_then(|l| l.split("</pre>").next())
        .and_then(|l| l.strip_prefix('>'))
        .expect("log");
    // Matching lines with their numbers in the whole log, each with its time stamp.
    let numbers: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(numbers.len(), 2, "{log}");
    let n: Vec<usize> = numbers.iter().filter_map(|n| n.parse().ok()).collect();
    assert_eq!(
        n[1],
        n[0] + 2,
        "alpha one and ALPHA three are two lines apart: {log}"
    );
    assert!(
        log.contains("Z alpha one") && log.contains("Z ALPHA three") && !log.contains("beta"),
        "{log}"
    );
    let whole = op
        .get(&format!("/dags/talk/runs/{r}/tasks/talk"))
        .await
        .body;
    assert!(
        whole.contains("beta two") && !whole.contains("lines contain"),
        "{whole}"
    );
    env.stop().await;
}

#[tokio::test]
async fn the_dag_list_filters_by_owner_last_run_and_paused_and_shows_the_last_run() {
    let (_t, env, router, _) = app_with(&[
        ("ok_one", "schedule = \"none\"\nowner = \"growth\"\n[tasks.a]\nkind = \"noop\"\n"),
        ("bad_one", "schedule = \"none\"\nowner = \"data\"\n[tasks.a]\nkind = \"shell\"\ncommand = \"exit 1\"\n"),
        ("idle_one", "schedule = \"none\"\nowner = \"data\"\n[tasks.a]\nkind = \"noop\"\n"),
    ])
    .await;
    let mut c = Client::new(router);
    for (dag, want) in [("ok_one", RunState::Success), ("bad_one", RunState::Failed)] {
        let run = env.trigger(dag).await;
        assert_eq!(
            env.wait_run(run.id, std::time::Duration::from_secs(30))
                .await,
            want
        );
    }
    weft::scheduler::commands::set_paused(&env.db, "idle_one", true, None)
        .await
        .expect("pause");
    let listed = |page: &str| -> Vec<String> {
        let mut out: Vec<String> = page
            .split("class=\"dag-link\">")
            .skip(1)
            .filter_map(|s| s.split('<').next().map(str::to_string))
            .collect();
        out.sort();
        out
    };
    let page = c.get("/dags?owner=data").await.body;
    assert_eq!(listed(&page), ["bad_one", "idle_one"], "{page}");
    let page = c.get("/dags?state=failed").await.body;
    assert_eq!(listed(&page), ["bad_one"], "{page}");
    let page = c.get("/dags?state=none").await.body;
    assert_eq!(listed(&page), ["idle_one"], "{page}");
    let page = c.get("/dags?paused=yes").await.body;
    assert_eq!(listed(&page), ["idle_one"], "{page}");
    let page = c.get("/dags?paused=no&owner=data").await.body;
    assert_eq!(listed(&page), ["bad_one"], "{page}");
    // The last run: its state, linked, and when.
    let page = c.get("/dags?owner=growth").await.body;
    let cell = page
        .split("class=\"last-run\">")
        .nth(1)
        .expect("last run cell");
    assert!(
        cell.starts_with("<a href=\"/dags/ok%5Fone/runs/") && cell.contains(">success</a> <time"),
        "{cell}"
    );
    assert_eq!(
        c.get("/dags?paused=maybe").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        c.get("/dags?state=sideways").await.status,
        StatusCode::BAD_REQUEST
    );
    env.stop().await;
}

#[tokio::test]
async fn the_grid_lists_tasks_in_dag_order_pages_older_runs_and_dates_its_columns() {
    // A fan-out written t00..t11, after its root.
    let mut dag = String::from("schedule = \"none\"\n[tasks.root]\nkind = \"noop\"\n");
    for i in 0..12 {
        dag.push_str(&format!(
            "[tasks.t{i:02}]\nkind = \"noop\"\ndepends_on = [\"root\"]\n"
        ));
    }
    let (_t, env, router, _) = app_with(&[("fan", &dag)]).await;
    let mut c = Client::new(router);
    let mut last = None;
    for _ in 0..27 {
        let run = env.trigger("fan").await;
        last = Some(run.id);
    }
    for r in weft::db::runs::list_runs(
        &env.db.conn,
        &weft::db::runs::RunFilter {
            dag_id: Some("fan".into()),
            limit: 100,
            ..Default::default()
        },
    )
    .await
    .expect("runs")
    {
        assert_eq!(
            env.wait_run(r.id, std::time::Duration::from_secs(60)).await,
            RunState::Success
        );
    }
    assert!(last.is_some());
    let page = c.get("/dags/fan").await.body;
    let grid = page.split("id=\"grid\"").nth(1).expect("grid");
    let rows: Vec<&str> = grid
        .split("<th class=\"task\">")
        .skip(1)
        .filter_map(|s| s.split('<').next())
        .collect();
    let mut want = vec!["root".to_string()];
    want.extend((0..12).map(|i| format!("t{i:02}")));
    assert_eq!(rows, want);
    assert_eq!(
        grid.matches("class=\"run-head\"").count(),
        25,
        "25 runs a page"
    );
    assert!(grid.contains("logical date "), "{grid}");
    assert!(
        grid.contains("class=\"run-bar s-success\" style=\"height:"),
        "{grid}"
    );
    assert!(
        page.contains("id=\"grid-older\""),
        "older runs are a page away"
    );
    let older = c.get("/dags/fan?runs=2").await.body;
    let grid = older.split("id=\"grid\"").nth(1).expect("grid");
    assert_eq!(grid.matches("class=\"run-head\"").count(), 2);
    assert!(older.contains("id=\"grid-newer\"") && !older.contains("id=\"grid-older\""));
    assert_eq!(
        c.get("/dags/fan?runs=0").await.status,
        StatusCode::BAD_REQUEST
    );
    env.stop().await;
}

#[tokio::test]
async fn the_gantt_draws_every_try_across_the_page_width() {
    let dag = "schedule = \"none\"\n[tasks.flaky]\nkind = \"shell\"\ncommand = \"test {{ try_number }} -gt 1\"\nretries = 1\nretry_delay = \"0s\"\n[tasks.after]\nkind = \"noop\"\ndepends_on = [\"flaky\"]\n";
    let (_t, env, router, _) = app_with(&[("flaky", dag)]).await;
    let mut c = Client::new(router);
    let run = env.trigger("flaky").await;
    assert_eq!(
        env.wait_run(run.id, std::time::Duration::from_secs(30))
            .await,
        RunState::Success
    );
    let r = weft::web::views::enc(&run.run_id);
    let page = c.get(&format!("/dags/flaky/runs/{r}")).await.body;
    let gantt = page
        .split("id=\"gantt\"")
        .nth(1)
        .and_then(|g| g.split("</svg>").next())
        .expect("gantt");
    assert!(gantt.contains("width=\"100%\""), "{gantt}");
    assert!(
        gantt.contains("<title>flaky try 1: ") && gantt.contains("<title>flaky try 2: "),
        "both tries are drawn: {gantt}"
    );
    assert!(gantt.contains("class=\"bar s-failed\"") && gantt.contains("class=\"bar s-success\""));
    assert!(
        gantt.contains("?try=1\"") && gantt.contains("?try=2\""),
        "{gantt}"
    );
    // No bar starts left of the plot (a cleared or retried task has no stale timing).
    for x in gantt.split("<rect x=\"").skip(1) {
        let x: i64 = x.split('"').next().and_then(|v| v.parse().ok()).expect("x");
        assert!(x >= 200, "{gantt}");
    }
    env.stop().await;
}

#[tokio::test]
async fn health_counts_link_to_the_task_instances_behind_them_with_filters_and_paging() {
    let dag = "schedule = \"none\"\n[tasks.ok]\nkind = \"noop\"\n[tasks.bad]\nkind = \"shell\"\ncommand = \"exit 1\"\n";
    let (_t, env, router, _) = app_with(&[("mixed", dag)]).await;
    let mut c = Client::new(router);
    for _ in 0..3 {
        let run = env.trigger("mixed").await;
        assert_eq!(
            env.wait_run(run.id, std::time::Duration::from_secs(30))
                .await,
            RunState::Failed
        );
    }
    let health = c.get("/dashboard").await.body;
    assert!(
        health.contains("href=\"/task-instances?state=running\""),
        "{health}"
    );
    assert!(
        health.contains("href=\"/task-instances?state=failed&amp;dag=mixed\""),
        "{health}"
    );
    let tasks_of = |page: &str| -> Vec<String> {
        page.split("class=\"ti-link\">")
            .skip(1)
            .filter_map(|s| s.split('<').next().map(str::to_string))
            .collect()
    };
    let failed = c.get("/task-instances?state=failed&dag=mixed").await.body;
    assert_eq!(tasks_of(&failed), ["bad", "bad", "bad"], "{failed}");
    let ok = c.get("/task-instances?task=ok").await.body;
    assert_eq!(tasks_of(&ok), ["ok", "ok", "ok"], "{ok}");
    assert!(
        c.get("/task-instances?state=running")
            .await
            .body
            .contains("No task instance matches")
    );
    // Paging: newest first; before= shows the older ones.
    let all = c.get("/task-instances?dag=mixed").await.body;
    assert_eq!(tasks_of(&all).len(), 6);
    assert!(!all.contains("id=\"ti-older\""));
    assert_eq!(
        c.get("/task-instances?state=sideways").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        c.get("/task-instances?before=x").await.status,
        StatusCode::BAD_REQUEST
    );
    env.stop().await;
}

#[tokio::test]
async fn the_calendar_colours_each_day_by_failures_and_links_to_its_runs() {
    let (_t, env, router, _) = app_with(&[
        ("good", "schedule = \"none\"\n[tasks.a]\nkind = \"noop\"\n"),
        (
            "bad",
            "schedule = \"none\"\n[tasks.a]\nkind = \"shell\"\ncommand = \"exit 1\"\n",
        ),
    ])
    .await;
    let mut c = Client::new(router);
    for (dag, want) in [
        ("good", RunState::Success),
        ("good", RunState::Success),
        ("good", RunState::Success),
        ("bad", RunState::Failed),
    ] {
        let run = env.trigger(dag).await;
        assert_eq!(
            env.wait_run(run.id, std::time::Duration::from_secs(30))
                .await,
            want
        );
    }
    let today = Utc::now().date_naive().format("%Y-%m-%d").to_string();
    let square = |page: &str| -> String {
        let key = format!("/runs?day={today}");
        let at = page
            .find(&key)
            .unwrap_or_else(|| panic!("no square for {today}: {page}"));
        page[at..]
            .split("</rect>")
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let all = c.get("/calendar").await.body;
    // 53 weeks of squares; today: 1 of 4 runs failed (up to a quarter).
    assert!(all.matches("<rect ").count() >= 365, "a year of squares");
    let today_square = square(&all);
    assert!(
        today_square.contains("class=\"cal-f1\"") && today_square.contains("1 of 4 runs failed"),
        "{today_square}"
    );
    let good = c.get("/dags/good/calendar").await.body;
    assert!(
        square(&good).contains("class=\"cal-ok\""),
        "{}",
        square(&good)
    );
    let bad = c.get("/dags/bad/calendar").await.body;
    assert!(
        square(&bad).contains("class=\"cal-f3\""),
        "{}",
        square(&bad)
    );
    // The square leads to the day's runs.
    let runs = c.get(&format!("/runs?day={today}&dag=bad")).await.body;
    assert_eq!(runs.matches("class=\"run-link\"").count(), 1, "{runs}");
    let runs = c.get(&format!("/runs?day={today}")).await.body;
    assert_eq!(runs.matches("class=\"run-link\"").count(), 4, "{runs}");
    // The day's timeline: a bar per run, and the busiest hour at full shade.
    let timeline = runs
        .split("id=\"timeline\"")
        .nth(1)
        .and_then(|t| t.split("</svg>").next())
        .expect("timeline");
    assert_eq!(timeline.matches("class=\"bar s-").count(), 4, "{timeline}");
    assert_eq!(timeline.matches("class=\"busy\"").count(), 24, "{timeline}");
    assert!(timeline.contains("opacity=\"1.00\""), "{timeline}");
    let none = c.get("/runs?day=2020-01-01").await.body;
    assert!(none.contains("No run ended that day"), "{none}");
    assert_eq!(
        c.get("/runs?day=yesterday").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        c.get("/dags/nope/calendar").await.status,
        StatusCode::NOT_FOUND
    );
    assert!(
        c.get("/dags/good")
            .await
            .body
            .contains("href=\"/dags/good/calendar\"")
    );
    env.stop().await;
}

#[tokio::test]
async fn a_task_page_shows_its_templates_rendered_for_log_readers_only() {
    let dag = "schedule = \"none\"\n[params]\nwho = { type = \"string\", default = \"it's me\" }\n[tasks.greet]\nkind = \"shell\"\ncommand = \"echo hello {{ params.who }} on try {{ try_number }}\"\nenv = { RUN = \"{{ run_id }}\" }\n";
    let (_t, env, router, _) = app_with(&[("greet", dag)]).await;
    let run = env.trigger("greet").await;
    env.wait_run(run.id, std::time::Duration::from_secs(30))
        .await;
    let r = weft::web::views::enc(&run.run_id);
    let mut anonymous = Client::new(router.clone());
    let page = anonymous
        .get(&format!("/dags/greet/runs/{r}/tasks/greet"))
        .await
        .body;
    assert!(
        !page.contains("id=\"rendered\""),
        "not for anonymous readers"
    );
    let mut op = Client::new(router);
    op.login("otto", "correct horse").await;
    let page = op
        .get(&format!("/dags/greet/runs/{r}/tasks/greet"))
        .await
        .body;
    let rendered = page
        .split("id=\"rendered\"")
        .nth(1)
        .and_then(|s| s.split("</details>").next())
        .expect("rendered templates");
    // The param is shell-quoted as the try ran it; the env value is the run id.
    assert!(
        rendered.contains("echo hello &#39;it&#39;\\&#39;&#39;s me&#39; on try 1"),
        "{rendered}"
    );
    assert!(
        rendered.contains("<th>env RUN</th>") && rendered.contains(&run.run_id),
        "{rendered}"
    );
    env.stop().await;
}
