//! SQL model files of `transform` tasks: `{{ config(...) }}` settings, `{{ ref("x") }}`
//! dependencies, and the order to build them in (cycles are reported with their path).
//! Pure apart from reading the files.

use std::collections::BTreeSet;
use std::path::Path;

use super::{Materialized, Model};

/// Names in `ref("...")` calls, in order of appearance, without repeats: read the way
/// the template engine reads them (inside `{{ }}` or `{% %}`, with any spacing such as
/// `ref ("a")`), never inside a template comment `{# #}` or an SQL comment.
pub fn refs(sql: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let rest = &sql[i..];
        if rest.starts_with("{#") {
            i += rest.find("#}").map_or(rest.len(), |e| e + 2);
        } else if rest.starts_with("--") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |e| e + 2);
        } else if rest.starts_with("{{") || rest.starts_with("{%") {
            let close = if rest.starts_with("{{") { "}}" } else { "%}" };
            let end = rest.find(close).unwrap_or(rest.len());
            for name in refs_in_expression(&rest[2..end]) {
                if !out.contains(&name) {
                    out.push(name);
                }
            }
            i += (end + 2).min(rest.len());
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    out
}

/// `ref ( "name" )` calls inside one template expression.
fn refs_in_expression(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = expr[from..].find("ref") {
        let start = from + at;
        from = start + 3;
        let before = expr[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
            continue;
        }
        let after = expr[from..].trim_start();
        let Some(args) = after.strip_prefix('(') else {
            continue;
        };
        let args = args.trim_start();
        let Some(q) = args.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        if let Some(end) = args[1..].find(q) {
            out.push(args[1..=end].to_string());
        }
    }
    out
}

/// `key="value"` pairs of the first `config(...)` call.
pub fn config(sql: &str) -> Vec<(String, String)> {
    let Some(i) = sql.find("config(") else {
        return Vec::new();
    };
    let body = &sql[i + 7..];
    let Some(end) = body.find(')') else {
        return Vec::new();
    };
    body[..end]
        .split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// A model from its file's text (`display` is its path relative to the DAG's folder)
/// and every problem of its settings, as messages for the DAG's diagnostics.
pub fn model(display: &str, sql: String) -> (Model, Vec<String>) {
    let name = Path::new(display)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let mut errors = Vec::new();
    if !is_sql_name(&name) {
        errors.push(format!(
            "model file {display}: \"{name}\" is not a plain SQL name (letters, digits, '_')"
        ));
    }
    let mut materialized = Materialized::Table;
    let mut interval_column = None;
    for (k, v) in config(&sql) {
        match k.as_str() {
            "materialized" => match v.as_str() {
                "table" => materialized = Materialized::Table,
                "view" => materialized = Materialized::View,
                "incremental" => materialized = Materialized::Incremental,
                other => errors.push(format!("model {display}: unknown materialized \"{other}\"; use table, view or incremental")),
            },
            "interval_column" if is_sql_name(&v) => interval_column = Some(v),
            "interval_column" => errors.push(format!("model {display}: interval_column \"{v}\" is not a plain column name")),
            other => errors.push(format!("model {display}: unknown config key \"{other}\"{}", crate::dag::diag::did_you_mean(other, ["materialized", "interval_column"]))),
        }
    }
    if materialized == Materialized::Incremental && interval_column.is_none() {
        errors.push(format!("model {display}: an incremental model needs interval_column, e.g. {{{{ config(materialized=\"incremental\", interval_column=\"timestamp\") }}}}"));
    }
    (
        Model {
            name,
            file: display.to_string(),
            refs: refs(&sql),
            sql,
            materialized,
            interval_column,
        },
        errors,
    )
}

pub use crate::dag::is_sql_name;

/// Build order of models (refs first), or every problem: unknown refs and cycles.
pub fn order(models: &[Model]) -> Result<Vec<usize>, Vec<String>> {
    let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
    let mut errors = Vec::new();
    let mut g = petgraph::graph::DiGraph::<usize, ()>::new();
    let nodes: Vec<_> = (0..models.len()).map(|i| g.add_node(i)).collect();
    for (i, m) in models.iter().enumerate() {
        for r in &m.refs {
            match names.iter().position(|n| n == r) {
                Some(j) if j == i => errors.push(format!("model {} refers to itself", m.file)),
                Some(j) => {
                    g.add_edge(nodes[j], nodes[i], ());
                }
                None => errors.push(format!(
                    "model {} refers to unknown model \"{r}\"{}",
                    m.file,
                    crate::dag::diag::did_you_mean(r, names.iter().copied())
                )),
            }
        }
    }
    for scc in petgraph::algo::kosaraju_scc(&g) {
        if scc.len() < 2 {
            continue;
        }
        let members: BTreeSet<usize> = scc.iter().map(|n| g[*n]).collect();
        let Some(&start) = members.iter().next() else {
            continue;
        };
        // Walk refs downstream until back at the start.
        let mut path = vec![start];
        let mut cur = start;
        let mut seen = BTreeSet::from([start]);
        loop {
            let next = members.iter().copied().find(|j| {
                models[*j].refs.contains(&models[cur].name) && (*j == start || !seen.contains(j))
            });
            match next {
                Some(j) if j == start => {
                    path.push(start);
                    break;
                }
                Some(j) => {
                    seen.insert(j);
                    path.push(j);
                    cur = j;
                }
                None => break,
            }
        }
        let names: Vec<&str> = path.iter().map(|i| models[*i].name.as_str()).collect();
        errors.push(format!(
            "models form a cycle through ref(): {}",
            names.join(" -> ")
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    petgraph::algo::toposort(&g, None)
        .map(|o| o.into_iter().map(|n| g[n]).collect())
        .map_err(|_| vec!["models form a cycle".to_string()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, sql: &str) -> Model {
        Model {
            name: name.into(),
            file: format!("models/{name}.sql"),
            sql: sql.into(),
            refs: refs(sql),
            materialized: Materialized::Table,
            interval_column: None,
        }
    }

    #[test]
    fn refs_and_config_are_found() {
        assert_eq!(
            refs("select * from {{ ref('a') }} join {{ ref(\"b\") }} on 1 join {{ ref('a') }}"),
            vec!["a", "b"]
        );
        assert!(refs("select pref('x')").is_empty());
        // Spacing the template engine accepts; comments of either language do not count.
        assert_eq!(
            refs("{{ ref ( 'a' ) }} {%set x = ref(\"b\")%}"),
            vec!["a", "b"]
        );
        assert!(
            refs("-- {{ ref('a') }}\n/* {{ ref('b') }} */ {# {{ ref('c') }} #} select 1")
                .is_empty()
        );
        assert!(refs("select 'ref(\"x\")'").is_empty());
        assert_eq!(
            config("{{ config(materialized=\"view\", interval_column='ts') }} select 1"),
            vec![
                ("materialized".into(), "view".into()),
                ("interval_column".into(), "ts".into())
            ]
        );
    }

    #[test]
    fn order_reports_cycles_with_their_path_and_unknown_refs() {
        let ms = vec![
            model("a", "select 1"),
            model("b", "select * from {{ ref('a') }}"),
            model("c", "select * from {{ ref('b') }}"),
        ];
        assert_eq!(order(&ms).expect("order"), vec![0, 1, 2]);
        let ms = vec![
            model("a", "{{ ref('c') }}"),
            model("b", "{{ ref('a') }}"),
            model("c", "{{ ref('b') }}"),
        ];
        let e = order(&ms).expect_err("cycle");
        assert_eq!(
            e,
            vec!["models form a cycle through ref(): a -> b -> c -> a".to_string()]
        );
        let ms = vec![model("a", "{{ ref('bb') }}"), model("b", "select 1")];
        assert_eq!(
            order(&ms).expect_err("unknown"),
            vec![
                "model models/a.sql refers to unknown model \"bb\" (did you mean \"b\"?)"
                    .to_string()
            ]
        );
    }
}
