//! The `weft` binary as a user runs it: checking DAGs, triggering, backfilling, logs,
//! and surviving `kill -9` in the middle of a run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn weft() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weft"));
    c.env_remove("WEFT_DATABASE_URL")
        .env_remove("WEFT_DAGS_FOLDER")
        .env_remove("WEFT_CONFIG")
        .env("WEFT_LOG", "weft=warn");
    c
}

pub(crate) fn run_in(dir: &Path, args: &[&str]) -> Output {
    weft()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run weft")
}

pub(crate) fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A project folder with a weft.toml, a dags/ folder and a database inside it.
pub(crate) fn project(dags: &[(&str, &str)]) -> tempfile::TempDir {
    project_with(dags, "")
}

/// A project whose weft.toml also carries `extra` (e.g. a database_url).
pub(crate) fn project_with(dags: &[(&str, &str)], extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("dags")).expect("mkdir");
    for (name, src) in dags {
        std::fs::write(dir.path().join("dags").join(format!("{name}.toml")), src).expect("write");
    }
    std::fs::write(
        dir.path().join("weft.toml"),
        format!("bind = \"127.0.0.1:0\"\nheartbeat_interval = \"200ms\"\nheartbeat_timeout = \"30s\"\nkill_grace = \"1s\"\nshutdown_grace = \"5s\"\n{extra}"),
    )
    .expect("config");
    dir
}

#[test]
fn dags_check_passes_on_the_shipped_examples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = run_in(root, &["dags", "check", "dags"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("no errors"), "{}", text(&o));
}

#[test]
fn dags_check_fails_with_every_error_and_a_caret() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = run_in(
        root,
        &["dags", "check", "tests/fixtures/bad_dags/many_errors.toml"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("many_errors.toml:15:15: dag \"many_errors\", task \"load\": depends on unknown task \"extarct\" (did you mean \"extract\"?)"), "{out}");
    assert!(out.contains("8 error(s) in 1 of 1 file(s)"), "{out}");
    assert!(out.contains("15 | depends_on = [\"extarct\"]"), "{out}");
    let o = run_in(
        root,
        &[
            "dags",
            "check",
            "--json",
            "tests/fixtures/bad_dags/cycle_three.toml",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["errors"][0]["line"], 7);
    assert_eq!(v["errors"][0]["task_id"], "a");
}

#[test]
fn dags_next_prints_intervals_as_json() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = run_in(
        root,
        &[
            "dags",
            "next",
            "daily_product_events",
            "-n",
            "2",
            "--after",
            "2026-03-28T12:00:00Z",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    // The README's sample DAG is this shipped file, word for word.
    let readme = std::fs::read_to_string(root.join("README.md")).expect("readme");
    let shipped =
        std::fs::read_to_string(root.join("dags/daily_product_events.toml")).expect("dag");
    assert!(
        readme.contains(&format!("```toml\n{shipped}```")),
        "README sample differs"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    // 02:30 Berlin; on 2026-03-29 (spring forward) it runs at 03:00 CEST = 01:00 UTC.
    assert_eq!(v[0]["data_interval_start"], "2026-03-28T01:30:00Z");
    assert_eq!(v[0]["data_interval_end"], "2026-03-29T01:00:00Z");
    assert_eq!(v[1]["run_after"], "2026-03-30T00:30:00Z");
}

const PARAMS: &str = "schedule = \"none\"\n[params]\nlimit = { type = \"int\", default = 3 }\n[tasks.a]\nkind = \"shell\"\ncommand = \"echo limit={{ params.limit }}\"\n";

#[test]
fn trigger_checks_params_and_dags_test_runs_in_process() {
    let p = project(&[("params", PARAMS)]);
    let o = run_in(p.path(), &["trigger", "params", "--param", "limit=lots"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("param \"limit\": expected int, got \"lots\""),
        "{}",
        text(&o)
    );
    let o = run_in(p.path(), &["trigger", "params", "--param", "limt=4"]);
    assert!(
        text(&o).contains("unknown param \"limt\" (did you mean \"limit\"?)"),
        "{}",
        text(&o)
    );
    let o = run_in(p.path(), &["trigger", "nope"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("no dag \"nope\""), "{}", text(&o));

    let o = run_in(p.path(), &["dags", "test", "params", "--param", "limit=7"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("limit=7"), "{}", text(&o));
    assert!(text(&o).contains(": success"), "{}", text(&o));
    // dags test uses a temporary database: the project's has no runs.
    let o = run_in(p.path(), &["runs", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v.as_array().map(Vec::len), Some(0));
}

#[test]
fn backfill_creates_each_interval_once() {
    let dag = "schedule = \"@daily\"\nstart_date = \"2026-01-01\"\n[tasks.a]\nkind = \"shell\"\ncommand = \"echo {{ ds }}\"\n";
    let p = project(&[("daily", dag)]);
    let o = run_in(
        p.path(),
        &[
            "backfill",
            "daily",
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-05",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("5/5 done, 0 failed"), "{}", text(&o));
    // Again, overlapping: only the two new days are created.
    let o = run_in(
        p.path(),
        &[
            "backfill",
            "daily",
            "--from",
            "2026-01-04",
            "--to",
            "2026-01-07",
            "--max-active-runs",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run_in(p.path(), &["runs", "daily", "--json", "--limit", "100"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let mut dates: Vec<String> = v
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["logical_date"].as_str().expect("date").to_string())
        .collect();
    dates.sort();
    let want: Vec<String> = (1..=7).map(|d| format!("2026-01-0{d}T00:00:00Z")).collect();
    assert_eq!(dates, want);
    assert!(
        v.as_array()
            .expect("list")
            .iter()
            .all(|r| r["state"] == "success")
    );
    let o = run_in(
        p.path(),
        &["logs", "daily", "backfill__2026-01-03T00:00:00Z", "a"],
    );
    assert!(text(&o).contains("2026-01-03"), "{}", text(&o));
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path) -> Serve {
    Serve(
        weft()
            .current_dir(dir)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("serve.log")).expect("serve.log"))
            .spawn()
            .expect("spawn serve"),
    )
}

/// Prints the server's log when the test fails, so a CI failure says what
/// the server saw.
struct PrintOnPanic(PathBuf);

impl Drop for PrintOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            eprintln!("--- {} ---\n{log}", self.0.display());
        }
    }
}

fn tasks_json(dir: &Path, run_id: &str) -> serde_json::Value {
    let o = run_in(dir, &["tasks", "list", "crashy", run_id, "--json"]);
    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
}

pub(crate) fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kill_9_in_the_middle_of_a_run_loses_and_duplicates_nothing() {
    kill_9_scenario("");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_on_postgres_loses_and_duplicates_nothing() {
    let Some(pg) = crate::support::postgres_db().await else {
        return;
    };
    let extra = format!("database_url = \"{}\"\n", pg.url);
    tokio::task::spawn_blocking(move || kill_9_scenario(&extra))
        .await
        .expect("scenario");
    pg.cleanup().await;
}

fn kill_9_scenario(extra: &str) {
    let dag = r#"
schedule = "none"
[defaults]
retries = 2
retry_delay = "1s"
[tasks.first]
kind = "shell"
command = "echo first >> ran.txt"
[tasks.slow]
kind = "shell"
command = "echo slow-start >> ran.txt; sleep 4; echo slow-end >> ran.txt"
depends_on = ["first"]
[tasks.last]
kind = "shell"
command = "echo last >> ran.txt"
depends_on = ["slow"]
"#;
    let p = project_with(&[("crashy", dag)], extra);
    let dir: PathBuf = p.path().to_path_buf();
    let mut server = serve(&dir);
    let o = run_in(&dir, &["trigger", "crashy", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let run_id = serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("json")["run_id"]
        .as_str()
        .expect("run id")
        .to_string();
    let _print = PrintOnPanic(dir.join("serve.log"));
    wait_for("slow to run", Duration::from_secs(30), || {
        tasks_json(&dir, &run_id).as_array().is_some_and(|a| {
            a.iter()
                .any(|t| t["task_id"] == "slow" && t["state"] == "running")
        }) && std::fs::read_to_string(dir.join("dags").join("ran.txt"))
            .is_ok_and(|s| s.contains("slow-start"))
    });
    // The running try's output has reached the database.
    wait_for("slow's log", Duration::from_secs(30), || {
        text(&run_in(&dir, &["logs", "crashy", &run_id, "slow"])).contains("slow-start")
    });
    // kill -9: no chance to clean up.
    server.0.kill().expect("kill -9");
    server.0.wait().expect("reap");
    drop(server);
    let _server = serve(&dir);
    let mut last = serde_json::Value::Null;
    wait_for(
        "the run to finish after restart",
        Duration::from_secs(60),
        || {
            let o = run_in(&dir, &["runs", "crashy", "--json"]);
            last = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
            last[0]["state"] == "success" || last[0]["state"] == "failed"
        },
    );
    assert_eq!(last[0]["state"], "success", "{last}");
    let tis = tasks_json(&dir, &run_id);
    let by = |id: &str| {
        tis.as_array()
            .expect("tasks")
            .iter()
            .find(|t| t["task_id"] == id)
            .cloned()
            .expect("task")
    };
    assert_eq!(by("first")["try_number"], 1, "first ran once");
    assert_eq!(
        by("slow")["try_number"],
        2,
        "the lost try of slow was failed and retried"
    );
    assert_eq!(by("last")["try_number"], 1, "last ran once");
    let ran = std::fs::read_to_string(dir.join("dags").join("ran.txt")).expect("ran.txt");
    let lines: Vec<&str> = ran.lines().collect();
    // The orphaned first try of slow was killed (it never wrote slow-end), the retry
    // ran to the end, and nothing ran twice at once.
    assert_eq!(
        lines,
        vec!["first", "slow-start", "slow-start", "slow-end", "last"],
        "{ran}"
    );
    let o = run_in(&dir, &["logs", "crashy", &run_id, "slow", "--try", "1"]);
    assert!(
        text(&o).contains("slow-start") || text(&o).contains("$ echo slow-start"),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains("this try was lost: worker"),
        "{}",
        text(&o)
    );
}

#[test]
fn an_absurd_backfill_is_refused_with_a_clear_message() {
    let dir = project(&[(
        "minutely",
        "schedule = \"* * * * *\"\nstart_date = \"2026-01-01\"\n[tasks.a]\nkind = \"noop\"\n",
    )]);
    let o = run_in(
        dir.path(),
        &[
            "backfill",
            "minutely",
            "--from",
            "2026-01-01",
            "--to",
            "2027-01-01",
        ],
    );
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("more than 100000 intervals") && t.contains("--force"),
        "{t}"
    );
    let o = run_in(
        dir.path(),
        &[
            "backfill",
            "minutely",
            "--from",
            "0001-01-01",
            "--to",
            "9999-01-01",
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("out of range"), "{}", text(&o));
    // Nothing was created.
    let o = run_in(dir.path(), &["runs", "minutely", "--json"]);
    assert!(
        text(&o).trim_start().starts_with('[') && !text(&o).contains("backfill__"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_backfill_before_the_start_date_is_refused() {
    let dir = project(&[(
        "daily",
        "schedule = \"@daily\"\nstart_date = \"2026-03-01\"\n[tasks.a]\nkind = \"noop\"\n",
    )]);
    let o = run_in(
        dir.path(),
        &[
            "backfill",
            "daily",
            "--from",
            "2026-02-01",
            "--to",
            "2026-03-05",
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("before the start_date"), "{}", text(&o));
}

#[test]
fn a_closed_pipe_limit_zero_and_no_terminal_are_handled() {
    let dir = project(&[(
        "d",
        "schedule = \"none\"\ndescription = \"the d dag\"\n[tasks.a]\nkind = \"noop\"\n",
    )]);
    // A reader that goes away (`weft runs | head -1`): exit quietly, no panic.
    for _ in 0..5 {
        let mut child = weft()
            .current_dir(dir.path())
            .args(["dags", "list"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{err}"
        );
        assert_ne!(out.status.code(), Some(101), "{err}");
    }
    let o = run_in(dir.path(), &["runs", "--limit", "0"]);
    assert!(
        !o.status.success() && text(&o).contains("--limit"),
        "{}",
        text(&o)
    );
    // users create without a terminal says how to pass the password.
    let o = weft()
        .current_dir(dir.path())
        .args(["users", "create", "ada", "--role", "admin"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(
        !o.status.success() && text(&o).contains("--password-stdin"),
        "{}",
        text(&o)
    );
    // dags list --json: the description is the DAG's, the schedule's wording apart.
    let o = run_in(dir.path(), &["dags", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v[0]["description"], "the d dag");
    assert_eq!(v[0]["schedule_description"], "manual only");
    // paused is read from the database when there is one (and none is created for it).
    assert!(v[0]["paused"].is_null() && !dir.path().join("weft.db").exists());
    let o = run_in(dir.path(), &["dags", "pause", "d"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run_in(dir.path(), &["dags", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v[0]["paused"], true);
}

/// `weft <args>` in `dir` with `input` on stdin.
fn run_with_stdin(dir: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write as _;
    let mut child = weft()
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    child.wait_with_output().expect("wait")
}

#[tokio::test]
async fn users_password_sets_a_new_password_and_ends_sessions() {
    let dir = project(&[("d", "schedule = \"none\"\n[tasks.a]\nkind = \"noop\"\n")]);
    let o = run_with_stdin(
        dir.path(),
        &[
            "users",
            "create",
            "ada",
            "--role",
            "admin",
            "--password-stdin",
        ],
        "first password\n",
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = weft()
        .current_dir(dir.path())
        .args(["users", "password", "ada"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(
        !o.status.success() && text(&o).contains("weft users password ada --password-stdin"),
        "{}",
        text(&o)
    );
    let o = run_with_stdin(
        dir.path(),
        &["users", "password", "ada", "--password-stdin"],
        "short\n",
    );
    assert!(
        !o.status.success() && text(&o).contains("8 characters"),
        "{}",
        text(&o)
    );
    let o = run_with_stdin(
        dir.path(),
        &["users", "password", "ada", "--password-stdin"],
        "second password\n",
    );
    assert!(o.status.success(), "{}", text(&o));
    let url = format!("sqlite://{}?mode=ro", dir.path().join("weft.db").display());
    let db = weft::db::Db::connect(&url).await.expect("db");
    let ada = weft::db::users::find_by_name(&db.conn, "ada")
        .await
        .expect("q")
        .expect("ada");
    assert!(weft::accounts::verify_password(
        "second password",
        &ada.password_hash
    ));
    assert!(!weft::accounts::verify_password(
        "first password",
        &ada.password_hash
    ));
    let o = run_with_stdin(
        dir.path(),
        &["users", "password", "nobody", "--password-stdin"],
        "second password\n",
    );
    assert!(
        !o.status.success() && text(&o).contains("nobody"),
        "{}",
        text(&o)
    );
}

#[test]
fn serve_on_a_busy_port_fails_before_announcing_or_creating_anything() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let dir = project(&[("d", "schedule = \"none\"\n[tasks.a]\nkind = \"noop\"\n")]);
    let o = run_in(dir.path(), &["serve", "--bind", &addr]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("cannot listen on") && !t.contains("serving"),
        "{t}"
    );
    assert!(
        !dir.path().join("weft.db").exists(),
        "a database was created"
    );
}

#[test]
fn unknown_dags_are_named_with_a_suggestion() {
    let dir = project(&[(
        "daily_sales",
        "schedule = \"none\"\n[tasks.a]\nkind = \"noop\"\n",
    )]);
    let o = run_in(dir.path(), &["trigger", "daily_sales"]);
    assert!(o.status.success(), "{}", text(&o));
    for args in [
        vec!["runs", "daily_sale"],
        vec!["tasks", "list", "daily_sale", "x"],
    ] {
        let o = run_in(dir.path(), &args);
        assert!(!o.status.success(), "{args:?}");
        let t = text(&o);
        assert!(
            t.contains("no DAG named \"daily_sale\"") && t.contains("did you mean \"daily_sales\""),
            "{t}"
        );
    }
}

#[test]
fn dags_test_never_writes_the_real_warehouse() {
    let dir = project(&[(
        "w",
        "schedule = \"none\"\n[tasks.t]\nkind = \"sql\"\nsql = \"CREATE TABLE IF NOT EXISTS touched (x INTEGER); INSERT INTO touched VALUES (1);\"\n",
    )]);
    let o = run_in(dir.path(), &["dags", "test", "w"]);
    assert!(o.status.success(), "{}", text(&o));
    let first = String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(first.contains("warehouse temporary"), "{first}");
    assert!(
        !dir.path().join("warehouse.db").exists(),
        "dags test wrote the real warehouse"
    );
    // --warehouse chooses one.
    let chosen = dir.path().join("chosen.db");
    let url = format!("sqlite://{}?mode=rwc", chosen.display());
    let o = run_in(dir.path(), &["dags", "test", "w", "--warehouse", &url]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(chosen.exists());
}

#[tokio::test]
async fn tasks_mark_marks_and_the_run_finishes() {
    let dir = project(&[(
        "m",
        "schedule = \"none\"\n[tasks.a]\nkind = \"shell\"\ncommand = \"exit 1\"\n",
    )]);
    let o = run_in(dir.path(), &["dags", "test", "m"]);
    assert!(!o.status.success());
    // Without a server a manual run stays queued: enough to mark its task.
    let o = run_in(dir.path(), &["trigger", "m", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let run_id = v["run_id"].as_str().expect("run_id").to_string();
    let o = run_in(
        dir.path(),
        &["tasks", "mark", "m", &run_id, "a", "--state", "success"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run_in(dir.path(), &["tasks", "list", "m", &run_id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v[0]["state"], "success");
    let o = run_in(
        dir.path(),
        &["tasks", "mark", "m", &run_id, "a", "--state", "running"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // A dry run says what a clear would reset and changes nothing.
    let o = run_in(
        dir.path(),
        &[
            "tasks",
            "clear",
            "m",
            &run_id,
            "a",
            "--only-failed",
            "--dry-run",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("would clear 0 task(s)"), "{}", text(&o));
    let o = run_in(dir.path(), &["tasks", "clear", "m", &run_id, "--dry-run"]);
    assert!(
        text(&o).contains("would clear 1 task(s)") && text(&o).contains("a (success)"),
        "{}",
        text(&o)
    );
    let o = run_in(dir.path(), &["tasks", "list", "m", &run_id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v[0]["state"], "success");
    // The trigger and the mark are in the audit log, from the CLI.
    let url = format!("sqlite://{}?mode=ro", dir.path().join("weft.db").display());
    let db = weft::db::Db::connect(&url).await.expect("db");
    let (entries, _) = weft::db::audit::list(&db.conn, &Default::default(), 10, 0)
        .await
        .expect("audit");
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e.action.as_str(), e.source.as_str()))
        .collect();
    assert_eq!(
        actions,
        [("mark", "cli"), ("trigger", "cli")],
        "{entries:?}"
    );
}

#[test]
fn weft_has_one_home_and_read_only_commands_create_nothing() {
    let dir = project(&[("h", "schedule = \"none\"\n[tasks.a]\nkind = \"noop\"\n")]);
    let o = run_in(dir.path(), &["trigger", "h"]);
    assert!(o.status.success(), "{}", text(&o));
    // From a subfolder, weft finds its home (the folder of weft.toml) and its database.
    let sub = dir.path().join("dags");
    let o = run_in(&sub, &["runs", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("manual__"),
        "{}",
        text(&o)
    );
    assert!(
        !sub.join("weft.db").exists(),
        "a database was created in the subfolder"
    );
    // Outside any project, a read-only command creates nothing and says where it looked.
    let elsewhere = tempfile::tempdir().expect("tmp");
    for args in [
        vec!["runs"],
        vec!["tasks", "list", "h", "x"],
        vec!["logs", "h", "x", "a"],
    ] {
        let o = run_in(elsewhere.path(), &args);
        assert!(!o.status.success(), "{args:?}");
        let t = text(&o);
        assert!(
            t.contains("no weft database at") && t.contains("weft.db"),
            "{t}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(elsewhere.path()).expect("dir").collect();
    assert!(left.is_empty(), "files were created: {left:?}");
    // WEFT_HOME points anywhere.
    let o = weft()
        .current_dir(elsewhere.path())
        .env("WEFT_HOME", dir.path())
        .args(["runs", "--json"])
        .output()
        .expect("run");
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("manual__"),
        "{}",
        text(&o)
    );
}

#[test]
fn migrating_leaves_no_lock_file_beside_the_database() {
    let dir = project(&[("l", "schedule = \"none\"\n[tasks.a]\nkind = \"noop\"\n")]);
    let o = run_in(dir.path(), &["db", "migrate"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(dir.path().join("weft.db").exists());
    assert!(!dir.path().join("weft.db.migrate-lock").exists());
}

#[test]
fn every_setting_comes_from_the_file_or_a_variable_and_bad_ones_say_where() {
    let dir = project(&[("d", "schedule = \"none\"\n[tasks.a]\nkind = \"noop\"\n")]);
    let o = weft()
        .current_dir(dir.path())
        .env("WEFT_HEARTBEAT_TIMEOUT", "100ms")
        .args(["dags", "list"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("heartbeat_timeout (from WEFT_HEARTBEAT_TIMEOUT): heartbeat_timeout (100ms) must be longer than heartbeat_interval (200ms)"),
        "{}",
        text(&o)
    );
    let o = weft()
        .current_dir(dir.path())
        .env("WEFT_KILL_GRACE", "soon")
        .args(["dags", "list"])
        .output()
        .expect("run");
    assert!(
        !o.status.success() && text(&o).contains("WEFT_KILL_GRACE"),
        "{}",
        text(&o)
    );
    let o = weft()
        .current_dir(dir.path())
        .env("WEFT_PUBLIC_LOGS", "maybe")
        .args(["dags", "list"])
        .output()
        .expect("run");
    assert!(
        !o.status.success()
            && text(&o)
                .contains("environment variable WEFT_PUBLIC_LOGS: \"maybe\" is not true or false"),
        "{}",
        text(&o)
    );
    // A good value from a variable is used: the list reads the DAGs of that folder.
    std::fs::create_dir(dir.path().join("other")).expect("mkdir");
    std::fs::write(
        dir.path().join("other/e.toml"),
        "schedule = \"none\"\n[tasks.a]\nkind = \"noop\"\n",
    )
    .expect("write");
    let o = weft()
        .current_dir(dir.path())
        .env("WEFT_DAGS_FOLDER", "other")
        .env("WEFT_DEFAULT_POOL_SLOTS", "7")
        .args(["dags", "list", "--json"])
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v[0]["dag_id"], "e");
}
