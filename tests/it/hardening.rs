//! Hostile input and careless tasks: params full of shell syntax, output that is not
//! text, children that try to outlive their try, the server's secrets, huge DAGs.
//! Each test failed on the code before the hardening issue.

use std::collections::BTreeMap;
use std::time::Duration;

use weft::dag::ValidationContext;
use weft::dag::bag::DagBag;
use weft::db::{RunState, TaskState};

use crate::support::{Env, backends, sqlite_db, task_log};

const LIMIT: Duration = Duration::from_secs(60);

/// Every diagnostic of a bag, rendered.
fn messages(bag: &DagBag) -> Vec<String> {
    bag.errors()
        .flat_map(|(_, d)| d.iter().map(ToString::to_string))
        .collect()
}

const INJECT: &str = r#"
schedule = "none"
[params]
x = "hello"
[tasks.bare]
kind = "shell"
command = "echo bare {{ params.x }}"
[tasks.single]
kind = "shell"
command = "echo 'single {{ params.x }}'"
[tasks.double]
kind = "shell"
command = "echo \"double {{ params.x }}\""
[tasks.subshell]
kind = "shell"
command = "echo \"sub $(echo {{ params.x }})\""
"#;

#[tokio::test]
async fn params_full_of_shell_syntax_are_data_not_code() {
    let t = sqlite_db().await;
    let env = Env::start(&t, &[("inject", INJECT)], |_| {}, None).await;
    let marker = env.dir.path().join("pwned");
    let m = marker.display().to_string();
    for evil in [
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("x; touch {m}"),
        format!("x' ; touch {m}; echo '"),
        format!("x\" ; touch {m}; echo \""),
        format!("x\n touch {m}"),
        format!("a) ; touch {m} ; (b"),
    ] {
        let params = BTreeMap::from([("x".to_string(), serde_json::json!(evil))]);
        let run = env.trigger_with("inject", params).await;
        assert_eq!(
            env.wait_run(run.id, LIMIT).await,
            RunState::Success,
            "{evil}"
        );
        assert!(!marker.exists(), "the param {evil:?} ran as code");
        // The value arrives intact in every quoting context.
        for task in ["bare", "single", "double", "subshell"] {
            let (_, _, log) = task_log(&env.db, run.id, task).await;
            let first_line = evil.lines().next().unwrap_or_default();
            assert!(log.contains(first_line), "{task} {evil:?}: {log}");
        }
    }
    env.stop().await;
}

const ENV_DAG: &str = r#"
schedule = "none"
[tasks.show]
kind = "shell"
env = { MINE = "mine" }
command = "echo db=${WEFT_DATABASE_URL:-none} server=${CARGO_MANIFEST_DIR:-none} passed=${CARGO_PKG_NAME:-none} mine=$MINE path=${PATH:+set} ds=$WEFT_DS; echo pw=s3cr3t-pa55; echo base=$WEFT_BASE_URL"
"#;

#[tokio::test]
async fn tasks_get_a_minimal_environment_and_secrets_are_redacted() {
    // cargo runs tests with CARGO_* variables set: the server's environment.
    assert!(std::env::var("CARGO_MANIFEST_DIR").is_ok());
    let t = sqlite_db().await;
    let env = Env::start(
        &t,
        &[("envs", ENV_DAG)],
        |c| {
            c.task_pass_env = vec!["CARGO_PKG_NAME".into()];
            c.connections.insert(
                "other".into(),
                weft::config::Connection {
                    url: "postgres://u:s3cr3t-pa55@127.0.0.1:1/x".into(),
                },
            );
        },
        None,
    )
    .await;
    let run = env.trigger("envs").await;
    assert_eq!(env.wait_run(run.id, LIMIT).await, RunState::Success);
    let (_, _, log) = task_log(&env.db, run.id, "show").await;
    assert!(
        log.contains("db=none server=none passed=weft mine=mine path=set ds=20"),
        "{log}"
    );
    assert!(
        log.contains("pw=***")
            && !log.contains("s3cr3t-pa55")
            && log.contains("base=http://127.0.0.1:8080"),
        "{log}"
    );
    env.stop().await;
}

const OUTPUT: &str = r#"
schedule = "none"
[tasks.binary]
kind = "shell"
command = '''printf 'ok \377\376 bytes\n'; printf 'nul \000 here\n'; head -c 3000000 /dev/zero | tr '\0' x; echo; echo after'''
"#;

#[tokio::test]
async fn output_that_is_not_text_neither_fails_the_task_nor_loses_the_log() {
    for t in backends().await {
        let env = Env::start(&t, &[("out", OUTPUT)], |_| {}, None).await;
        let run = env.trigger("out").await;
        assert_eq!(env.wait_run(run.id, LIMIT).await, RunState::Success);
        let (state, _, log) = task_log(&env.db, run.id, "binary").await;
        assert_eq!(state, TaskState::Success);
        assert!(
            log.contains("ok \u{FFFD}\u{FFFD} bytes"),
            "{}",
            &log[..200.min(log.len())]
        );
        assert!(log.contains("nul \u{FFFD} here"));
        assert!(log.contains("after"), "the log stopped at the long line");
        // The 3 MB line was cut into pieces of at most 64 KiB (and a time stamp).
        assert!(log.lines().all(|l| l.len() <= 64 * 1024 + 48));
        env.stop().await;
        t.cleanup().await;
    }
}

#[tokio::test]
async fn nothing_a_task_started_outlives_its_try() {
    let t = sqlite_db().await;
    let dir = tempfile::tempdir().expect("tmp");
    let pidfile = |n: &str| dir.path().join(n).display().to_string();
    let dag = format!(
        r#"
schedule = "none"
[tasks.bg]
kind = "shell"
command = "sleep 300 & echo $! > {}; nohup sleep 300 >/dev/null 2>&1 & echo $! > {}; setsid sleep 300 & echo $! > {}; sleep 0.2"
"#,
        pidfile("bg"),
        pidfile("nohup"),
        pidfile("setsid")
    );
    let env = Env::start(&t, &[("children", &dag)], |_| {}, None).await;
    let run = env.trigger("children").await;
    assert_eq!(env.wait_run(run.id, LIMIT).await, RunState::Success);
    for name in ["bg", "nohup", "setsid"] {
        let pid: i32 = std::fs::read_to_string(pidfile(name))
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        let mut gone = false;
        for _ in 0..50 {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie waiting for its new parent to reap it.
            if state.is_empty() || state.split_whitespace().nth(2) == Some("Z") {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(gone, "the {name} child {pid} survived its try");
    }
    env.stop().await;
}

#[tokio::test]
async fn a_task_that_dies_on_sigterm_does_not_wait_for_the_whole_grace() {
    let t = sqlite_db().await;
    let dag = r#"
schedule = "none"
[tasks.slow]
kind = "shell"
command = "sleep 30"
timeout = "1s"
"#;
    let env = Env::start(
        &t,
        &[("slow", dag)],
        |c| c.kill_grace = Duration::from_secs(20),
        None,
    )
    .await;
    let started = std::time::Instant::now();
    let run = env.trigger("slow").await;
    assert_eq!(env.wait_run(run.id, LIMIT).await, RunState::Failed);
    // 1 s timeout; sleep dies on SIGTERM at once, so the 20 s grace is not waited.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    env.stop().await;
}

#[tokio::test]
async fn an_absurd_retry_delay_is_refused_and_a_failing_task_never_stops_the_engine() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("absurd.toml"),
        "schedule = \"none\"\n[tasks.a]\nkind = \"shell\"\ncommand = \"false\"\nretries = 1\nretry_delay = \"1000000 years\"\n",
    )
    .expect("write");
    let bag = DagBag::load_dir(dir.path(), &ValidationContext::default()).expect("load");
    let errors = messages(&bag);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("absurd.toml:6:") && e.contains("366 days")),
        "{errors:?}"
    );
    // The longest delay accepted, with exponential backoff, still records its retry.
    let t = sqlite_db().await;
    let dag = "schedule = \"none\"\n[tasks.a]\nkind = \"shell\"\ncommand = \"false\"\nretries = 3\nretry_delay = \"366d\"\nretry_exponential_backoff = true\n[tasks.b]\nkind = \"shell\"\ncommand = \"true\"\n";
    let env = Env::start(
        &t,
        &[
            ("long", dag),
            ("ok", "schedule = \"none\"\n[tasks.x]\nkind = \"noop\"\n"),
        ],
        |_| {},
        None,
    )
    .await;
    let run = env.trigger("long").await;
    env.wait_task(run.id, "a", TaskState::UpForRetry, LIMIT)
        .await;
    let other = env.trigger("ok").await;
    assert_eq!(env.wait_run(other.id, LIMIT).await, RunState::Success);
    assert!(env.engine.fault().is_none());
    env.stop().await;
}

#[test]
fn huge_and_deep_dags_are_refused_with_a_message_not_a_crash() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut chain = String::from("schedule = \"none\"\n");
    for i in 0..25_000 {
        chain.push_str(&format!("[tasks.t{i}]\nkind = \"noop\"\n"));
        if i > 0 {
            chain.push_str(&format!("depends_on = [\"t{}\"]\n", i - 1));
        }
    }
    std::fs::write(dir.path().join("chain.toml"), &chain).expect("write");
    let mut ok = String::from("schedule = \"none\"\n");
    for i in 0..10_000 {
        ok.push_str(&format!("[tasks.t{i}]\nkind = \"noop\"\n"));
        if i > 0 {
            ok.push_str(&format!("depends_on = [\"t{}\"]\n", i - 1));
        }
    }
    std::fs::write(dir.path().join("long_ok.toml"), &ok).expect("write");
    std::fs::write(
        dir.path().join("deep.toml"),
        format!(
            "schedule = \"none\"\nx = {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
    )
    .expect("write");
    // Runs on a thread with a small stack: nothing may recurse per task.
    let path = dir.path().to_path_buf();
    let bag = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || DagBag::load_dir(&path, &ValidationContext::default()).expect("load"))
        .expect("thread")
        .join()
        .expect("no stack overflow");
    let errors = messages(&bag);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("25000 tasks") && e.contains("at most 10000")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("nested more than 64")),
        "{errors:?}"
    );
    let long = bag
        .dags()
        .find(|d| d.dag_id == "long_ok")
        .expect("a 10,000-task chain loads");
    assert_eq!(long.topo_order.len(), 10_000);
}
