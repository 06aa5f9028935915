//! Tidy tests (as rust-analyzer has them): the boundaries ARCHITECTURE.md draws are
//! checked on the source text, so crossing one fails the build's tests.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).expect("read");
                out.push((p, text));
            }
        }
    }
    out.sort();
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The part of the file that is not its unit tests.
fn code(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

/// A kind's pages and charts: web code kept in the kind's folder.
fn is_kind_web_code(r: &str) -> bool {
    r.starts_with("kinds/")
        && (r.ends_with("/page.rs") || r.ends_with("/chart.rs") || r.ends_with("/api.rs"))
}

fn rel(p: &Path) -> String {
    p.strip_prefix(src())
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

/// Lines of `text` (outside unit tests and comments) that contain `needle`.
fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    code(text)
        .lines()
        .filter(|l| !l.trim_start().starts_with("//") && l.contains(needle))
        .collect()
}

#[test]
fn kind_names_live_in_the_registry_and_their_folders_only() {
    let mut bad = Vec::new();
    for (path, text) in sources(&src()) {
        let r = rel(&path);
        if r.starts_with("kinds/") {
            continue;
        }
        for k in weft::kinds::KINDS {
            for l in lines_with(&text, &format!("\"{}\"", k.name)) {
                // OpenAPI parameter names are not kind names.
                if !l.contains("utoipa::path") {
                    bad.push(format!("{r}: {}", l.trim()));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "kind names outside src/kinds (use the kind's KIND.name):\n{}",
        bad.join("\n")
    );
}

#[test]
fn web_and_cli_never_name_the_orm_or_write_rows_themselves() {
    // The db functions that write: their bodies insert, update, delete or execute.
    let mut writers: Vec<String> = Vec::new();
    for (path, text) in sources(&src().join("db")) {
        let module = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let text = code(&text);
        for (i, part) in text.split("\npub async fn ").enumerate().skip(1) {
            let _ = i;
            let name: String = part
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let body = part.split("\n}\n").next().unwrap_or_default();
            let writes = [
                "::insert",
                "insert_many",
                "update_many",
                "delete_many",
                "execute_unprepared",
                "exec_without_returning",
            ]
            .iter()
            .any(|w| body.contains(w));
            if writes {
                writers.push(format!("{module}::{name}("));
            }
        }
    }
    assert!(
        writers.iter().any(|w| w == "users::create(")
            && writers.iter().any(|w| w == "dags::upsert_dag("),
        "the writer scan found {writers:?}"
    );
    let mut bad = Vec::new();
    for (path, text) in sources(&src()) {
        let r = rel(&path);
        let top = r.starts_with("web/") || r == "cli.rs" || is_kind_web_code(&r);
        if !top {
            continue;
        }
        for needle in ["sea_orm", "entities::"] {
            for l in lines_with(&text, needle) {
                bad.push(format!("{r}: names the ORM: {}", l.trim()));
            }
        }
        for w in &writers {
            for l in lines_with(&text, w) {
                bad.push(format!("{r}: writes rows itself ({w}): {}", l.trim()));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn state_is_written_only_through_the_moves_of_the_state_machine() {
    let mut bad = Vec::new();
    for (path, text) in sources(&src()) {
        let r = rel(&path);
        let body = code(&text);
        let writes_state =
            body.contains("Column::State,") || body.to_lowercase().contains("set state");
        if !writes_state {
            continue;
        }
        if r != "db/tasks.rs" && r != "db/runs.rs" {
            bad.push(format!("{r} writes a state column"));
            continue;
        }
        // In the db layer, every function that writes a task instance's or a run's state
        // takes a move or names one.
        for part in body.split("\npub async fn ").skip(1) {
            let f = part.split("\n}\n").next().unwrap_or_default();
            let sets_state = f.contains("task_instance::Column::State,")
                || f.contains("dag_run::Column::State,");
            let named = f.contains("mv: &TaskMove")
                || f.contains("mv: &RunMove")
                || ["CLAIM", "CLEAR", "RETRY", "START", "UNCLAIM"]
                    .iter()
                    .any(|m| f.contains(&format!("{m}.")));
            if sets_state && !named {
                let name: String = f
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                bad.push(format!("{r}: {name} writes state without a move"));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn lower_layers_never_reach_up() {
    // Layer of each top-level module, from the bottom. A kind's `page.rs` is web code
    // kept in the kind's folder; the registry's `routes` field names the web state type.
    let layer = |r: &str| -> u8 {
        if is_kind_web_code(r) {
            return 5;
        }
        match r
            .split('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(".rs")
        {
            "config" | "stats" | "process" => 0,
            "db" | "tasklog" => 1,
            "dag" | "kinds" => 2,
            "scheduler" | "accounts" => 3,
            "web" => 5,
            "cli" | "main" | "lib" => 6,
            other => panic!("module {other} has no layer in this test; add it"),
        }
    };
    let targets: [(&str, u8); 6] = [
        ("crate::scheduler", 3),
        ("crate::accounts", 3),
        ("crate::web", 5),
        ("crate::cli", 6),
        ("crate::kinds", 2),
        ("crate::dag", 2),
    ];
    let mut bad = Vec::new();
    for (path, text) in sources(&src()) {
        let r = rel(&path);
        let mine = layer(&r);
        for (needle, theirs) in targets {
            for l in lines_with(&text, needle) {
                let routes_field =
                    r == "kinds/mod.rs" && l.contains("axum::Router<crate::web::AppState>");
                if theirs > mine && !routes_field {
                    bad.push(format!(
                        "{r} (layer {mine}) uses {needle} (layer {theirs}): {}",
                        l.trim()
                    ));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn kind_runners_talk_to_their_environment_only() {
    let mut bad = Vec::new();
    for (path, text) in sources(&src().join("kinds")) {
        let r = rel(&path);
        if is_kind_web_code(&r) {
            continue;
        }
        for needle in [
            "crate::scheduler",
            "crate::web::",
            "crate::cli",
            "crate::db::tasks::append_log",
        ] {
            for l in lines_with(&text, needle) {
                // The registry names the web state type of the kinds' page routes.
                if !l.contains("axum::Router<crate::web::AppState>") {
                    bad.push(format!("{r}: {}", l.trim()));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
