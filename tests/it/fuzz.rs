//! Property tests (proptest) of the two places user text meets the engine: TOML ->
//! validated DAG, and the template renderer with its shell and SQL quoting. Any panic,
//! stack overflow or value that escapes its quotes is a bug. The number of cases
//! follows PROPTEST_CASES (CI runs more than a local `cargo test`).

use std::collections::BTreeMap;
use std::path::Path;

use chrono::TimeZone;
use proptest::prelude::*;
use weft::dag::template::{Quoting, TemplateContext, check};
use weft::dag::{ValidationContext, parse_dag};

fn parse(src: &str) {
    let _ = parse_dag(
        "fuzz.toml",
        Path::new("/nonexistent/fuzz.toml"),
        src,
        &ValidationContext::default(),
    );
}

/// Pieces DAG files are made of, so random files get past the TOML parser often.
fn dag_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("schedule = \"none\"\n".to_string()),
        Just("schedule = \"*/5 * * * *\"\nstart_date = \"2026-01-01\"\n".to_string()),
        "[a-z]{1,3}".prop_map(|t| format!(
            "[tasks.{t}]\nkind = \"shell\"\ncommand = \"echo {{{{ ds }}}}\"\n"
        )),
        "[a-z]{1,3}".prop_map(|t| format!("[tasks.{t}]\nkind = \"noop\"\n")),
        ("[a-z]{1,3}", "[a-z]{1,3}")
            .prop_map(|(a, b)| format!("depends_on = [\"{a}\", \"{b}\"]\n")),
        "[0-9a-z ]{0,12}".prop_map(|d| format!("retry_delay = \"{d}\"\n")),
        "[0-9a-z ]{0,12}".prop_map(|d| format!("timeout = \"{d}\"\n")),
        any::<i64>().prop_map(|n| format!("retries = {n}\n")),
        "[ -~]{0,30}".prop_map(|s| format!("command = \"{}\"\n", s.replace(['"', '\\'], ""))),
        "[ -~]{0,30}".prop_map(|s| format!("schedule = \"{}\"\n", s.replace(['"', '\\'], ""))),
        "[ -~]{0,20}".prop_map(|s| format!("start_date = \"{}\"\n", s.replace(['"', '\\'], ""))),
        (1usize..300).prop_map(|n| format!("x = {}{}\n", "[".repeat(n), "]".repeat(n))),
        Just("[params]\nx = \"a\"\n".to_string()),
        Just("[defaults]\nretries = 1\n".to_string()),
        "\\PC{0,20}",
    ]
}

proptest! {
    #[test]
    fn any_text_is_parsed_without_panicking(src in "\\PC{0,400}") {
        parse(&src);
    }

    #[test]
    fn dag_like_files_are_parsed_without_panicking(pieces in prop::collection::vec(dag_piece(), 0..30)) {
        let src = pieces.concat();
        if let Ok(dag) = parse_dag("fuzz.toml", Path::new("/nonexistent/fuzz.toml"), &src, &ValidationContext::default()) {
            prop_assert_eq!(dag.topo_order.len(), dag.tasks.len());
        }
    }

    #[test]
    fn templates_are_checked_and_rendered_without_panicking(
        t in "([a-z_ .|()'\"0-9]|\\{\\{|\\}\\}|\\{%|%\\}|\\{#|#\\}|params\\.x|ds|range|for|in|if|endif|endfor|macro|raw){0,40}"
    ) {
        let _ = check(&t, &["x"], &[]);
        let ctx = sample_context(serde_json::json!("v"));
        for q in [Quoting::Plain, Quoting::Shell, Quoting::Sql] {
            let _ = ctx.render_for(&t, q);
        }
    }
}

fn sample_context(x: serde_json::Value) -> TemplateContext {
    let t = chrono::Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("date");
    TemplateContext::new(
        "d",
        "r",
        "t",
        1,
        t,
        t,
        chrono_tz::UTC,
        BTreeMap::from([("x".to_string(), x)]),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever a param holds, the shell receives exactly that text as one word, in a
    /// bare word, in single quotes, in double quotes and inside `$( )`.
    #[test]
    fn any_param_reaches_the_shell_as_exactly_its_text(v in "[^\\x00]{0,40}") {
        let ctx = sample_context(serde_json::json!(v));
        for tmpl in [
            "printf '%s|' {{ params.x }}",
            "printf '%s|' '{{ params.x }}'",
            "printf '%s|' \"{{ params.x }}\"",
            "printf '%s|' \"$(printf '%s' {{ params.x }})\"",
        ] {
            let cmd = ctx.render_for(tmpl, Quoting::Shell).expect("render");
            let out = std::process::Command::new("sh").arg("-c").arg(&cmd).output().expect("sh");
            let got = String::from_utf8_lossy(&out.stdout).into_owned();
            // $( ) drops trailing newlines, as the shell always does.
            let want = if tmpl.contains("$(") { format!("{}|", v.trim_end_matches('\n')) } else { format!("{v}|") };
            prop_assert_eq!(got, want, "template {} rendered as {}", tmpl, cmd);
        }
    }
}
