//! DAG validation: every broken fixture gives its expected messages (golden files; set
//! WEFT_BLESS=1 to rewrite them after a deliberate change), all problems at once, with
//! positions, and never a panic.

use std::path::{Path, PathBuf};

use weft::dag::{DagBag, ValidationContext, parse_dag};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad_dags")
}

fn check(path: &Path) -> Vec<String> {
    let src = std::fs::read_to_string(path).expect("fixture readable");
    let name = format!(
        "bad_dags/{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("?")
    );
    match parse_dag(&name, path, &src, &ValidationContext::default()) {
        Ok(_) => Vec::new(),
        Err(diags) => diags.iter().map(|d| d.to_string()).collect(),
    }
}

#[test]
fn every_bad_dag_fixture_reports_its_expected_errors() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("fixtures dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 40,
        "expected at least 40 broken dag fixtures, found {}",
        files.len()
    );
    let bless = std::env::var_os("WEFT_BLESS").is_some();
    let mut mismatches = Vec::new();
    for f in &files {
        let got = check(f);
        assert!(
            !got.is_empty(),
            "{}: expected errors, the file validated",
            f.display()
        );
        for line in &got {
            // file:line:column: ... with a real line number.
            let mut parts = line.splitn(4, ':');
            let (_, l, c) = (parts.next(), parts.next(), parts.next());
            let l: usize = l
                .and_then(|x| x.parse().ok())
                .unwrap_or_else(|| panic!("no line number in {line}"));
            let c: usize = c
                .and_then(|x| x.parse().ok())
                .unwrap_or_else(|| panic!("no column in {line}"));
            assert!(l >= 1 && c >= 1, "{line}");
            assert!(!line.ends_with("invalid"), "message too vague: {line}");
        }
        let expected_path = f.with_extension("expected");
        let got_text = got.join("\n") + "\n";
        if bless {
            std::fs::write(&expected_path, &got_text).expect("write expected");
            continue;
        }
        let want = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if want != got_text {
            mismatches.push(format!(
                "{}:\n--- expected\n{want}--- got\n{got_text}",
                f.display()
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} fixture(s) differ (WEFT_BLESS=1 rewrites):\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn all_problems_in_a_file_are_reported_at_once() {
    let got = check(&fixtures().join("many_errors.toml"));
    let joined = got.join("\n");
    for want in [
        "hour field \"25\"",
        "unknown time zone \"Mars/Olympus\"",
        "\"catchup\" must be true or false",
        "unknown variable \"dss\"",
        "\"retries\" must be an integer",
        "unknown task \"extarct\" (did you mean \"extract\"?)",
        "unknown trigger_rule \"whenever\"",
        "unknown kind \"shel\" (did you mean \"shell\"?)",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
    assert!(got.len() >= 8, "{joined}");
}

#[test]
fn cycles_print_the_whole_path() {
    let got = check(&fixtures().join("cycle_three.toml")).join("\n");
    assert!(got.contains("dependency cycle: a -> b -> c -> a"), "{got}");
    let got = check(&fixtures().join("cycle_two.toml")).join("\n");
    assert!(got.contains("dependency cycle: a -> b -> a"), "{got}");
}

#[test]
fn did_you_mean_suggestions() {
    let cases = [
        (
            "unknown_task_key.toml",
            "unknown key \"comand\" in task of kind \"shell\" (did you mean \"command\"?)",
        ),
        ("unknown_top_key.toml", "(did you mean \"schedule\"?)"),
        ("unknown_dependency.toml", "(did you mean \"extract\"?)"),
        ("unknown_timezone.toml", "(did you mean \"Europe/Berlin\"?)"),
        (
            "invalid_trigger_rule.toml",
            "(did you mean \"all_success\"?)",
        ),
        ("unknown_pool.toml", "unknown pool \"warehouse_slotz\""),
        ("unknown_defaults_key.toml", "(did you mean \"retries\"?)"),
        (
            "unknown_param_in_template.toml",
            "(did you mean \"country\"?)",
        ),
        ("bad_cron_alias.toml", "(did you mean \"@daily\"?)"),
        (
            "sql_unknown_connection.toml",
            "(did you mean \"warehouse\"?)",
        ),
    ];
    for (file, want) in cases {
        let got = check(&fixtures().join(file)).join("\n");
        assert!(got.contains(want), "{file}: missing {want:?} in:\n{got}");
    }
}

#[test]
fn duplicate_dag_id_across_files_names_both_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = "dag_id = \"events\"\nschedule = \"none\"\n\n[tasks.a]\nkind = \"shell\"\ncommand = \"true\"\n";
    std::fs::write(dir.path().join("a_events.toml"), body).expect("write");
    std::fs::write(dir.path().join("b_events.toml"), body).expect("write");
    let bag = DagBag::load_dir(dir.path(), &ValidationContext::default()).expect("load");
    assert_eq!(bag.dags().count(), 1, "the first file keeps its dag");
    let errors: Vec<String> = bag
        .errors()
        .flat_map(|(_, d)| d.iter().map(|x| x.to_string()))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("b_events.toml:1:1"), "{}", errors[0]);
    assert!(
        errors[0].contains("duplicate dag_id \"events\": already defined in")
            && errors[0].contains("a_events.toml"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_broken_file_does_not_stop_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("good.toml"),
        "[tasks.a]\nkind = \"shell\"\ncommand = \"true\"\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("bad.toml"), "[tasks.a\nkind = \"shell\"\n").expect("write");
    let bag = DagBag::load_dir(dir.path(), &ValidationContext::default()).expect("load");
    assert!(bag.get("good").is_some());
    assert_eq!(bag.errors().count(), 1);
}

#[test]
fn shipped_examples_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dags");
    let bag = DagBag::load_dir(&dir, &ValidationContext::default()).expect("load dags/");
    let errors: Vec<String> = bag
        .errors()
        .flat_map(|(_, d)| d.iter().map(|x| x.to_string()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(bag.dags().count() >= 3);
}

#[test]
fn the_minimal_form_of_the_issue_works_as_written() {
    let src = r#"description = "hourly product events"
schedule = "30 2 * * *"
timezone = "Europe/Berlin"
start_date = "2026-01-01"

[tasks.extract]
kind = "shell"
command = "echo extract {{ ds }}"

[tasks.load]
kind = "shell"
command = "echo load {{ ds_nodash }}"
depends_on = ["extract"]
retries = 2
retry_delay = "30s"
"#;
    let dag = parse_dag(
        "x.toml",
        Path::new("dags/product.toml"),
        src,
        &ValidationContext::default(),
    )
    .expect("valid");
    assert_eq!(dag.dag_id, "product");
    assert_eq!(dag.timezone.name(), "Europe/Berlin");
    assert_eq!(
        dag.start_date.map(|d| d.to_rfc3339()),
        Some("2025-12-31T23:00:00+00:00".to_string())
    );
    let load = dag.task("load").expect("load");
    assert_eq!(load.retries, 2);
    assert_eq!(load.retry_delay, std::time::Duration::from_secs(30));
    assert_eq!(load.depends_on, vec!["extract"]);
    assert_eq!(
        dag.topo_order
            .iter()
            .map(|i| dag.tasks[*i].task_id.as_str())
            .collect::<Vec<_>>(),
        vec!["extract", "load"]
    );
}

#[test]
fn defaults_params_and_durations_are_applied() {
    let src = r#"schedule = "none"
[params]
country = "us"
limit = { type = "int", default = 10 }
day = { type = "date" }

[defaults]
retries = 3
retry_delay = "1h30m"
retry_exponential_backoff = true
max_retry_delay = "2h"
timeout = "90s"

[tasks.a]
kind = "shell"
command = "echo {{ params.country }} {{ params.limit }}"
retries = 1
"#;
    let dag = parse_dag(
        "x.toml",
        Path::new("d.toml"),
        src,
        &ValidationContext::default(),
    )
    .expect("valid");
    let a = dag.task("a").expect("a");
    assert_eq!(a.retries, 1);
    assert_eq!(a.retry_delay.as_secs(), 5400);
    assert_eq!(a.timeout.map(|t| t.as_secs()), Some(90));
    assert_eq!(a.retry_delay_after(1).as_secs(), 5400);
    assert_eq!(
        a.retry_delay_after(2).as_secs(),
        7200,
        "capped by max_retry_delay"
    );
    let mut given = std::collections::BTreeMap::new();
    given.insert("limit".to_string(), serde_json::json!("25"));
    given.insert("day".to_string(), serde_json::json!("2026-02-03"));
    let p = dag.resolve_params(&given).expect("params");
    assert_eq!(p["limit"], serde_json::json!(25));
    assert_eq!(p["country"], serde_json::json!("us"));
    given.insert("limit".to_string(), serde_json::json!("many"));
    given.insert("contry".to_string(), serde_json::json!("de"));
    given.remove("day");
    let errs = dag
        .resolve_params(&given)
        .expect_err("bad params")
        .join("\n");
    assert!(errs.contains("param \"limit\": expected int"), "{errs}");
    assert!(
        errs.contains("unknown param \"contry\" (did you mean \"country\"?)"),
        "{errs}"
    );
    assert!(errs.contains("param \"day\" (date) is required"), "{errs}");
}
