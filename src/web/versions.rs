//! A DAG version's page: the files of its bundle as they were recorded, and a diff
//! against another version (the previous one unless `?against=N`).

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use similar::{ChangeTag, TextDiff};

use super::AppState;
use super::error::{Error, Result};
use super::pages::{Layout, Page};
use super::views::{Time, dag_href, enc, time};
use crate::dag::bundle::{Bundle, FileEntry};
use crate::db::dags;
use crate::db::rows::DagVersion;

pub fn router() -> Router<AppState> {
    Router::new().route("/dags/{dag_id}/versions/{version}", get(version_page))
}

#[derive(Debug)]
pub struct FileView {
    pub name: String,
    pub text: String,
}

#[derive(Debug)]
pub struct DiffLine {
    /// `add`, `del` or `same`.
    pub class: &'static str,
    pub text: String,
}

#[derive(Debug)]
pub struct FileDiff {
    pub name: String,
    /// `changed`, `added` or `removed`.
    pub status: &'static str,
    pub lines: Vec<DiffLine>,
}

#[derive(Debug)]
pub struct VersionLink {
    pub version: i32,
    pub href: String,
    pub current: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "version.html")]
pub struct VersionPage {
    pub layout: Layout,
    pub dag_id: String,
    pub dag_href: String,
    pub version: i32,
    pub hash: String,
    pub created: Time,
    pub files: Vec<FileView>,
    pub against: Option<i32>,
    pub diffs: Vec<FileDiff>,
    pub versions: Vec<VersionLink>,
}

#[derive(Debug, Deserialize)]
pub struct VersionQuery {
    pub against: Option<i32>,
}

/// The files of a stored version: the DAG file first, then what it reads, by name.
fn files_of(v: &DagVersion) -> Vec<FileView> {
    let toml_name = std::path::Path::new(&v.fileloc)
        .file_name()
        .map_or_else(|| v.fileloc.clone(), |n| n.to_string_lossy().into_owned());
    let mut out = vec![FileView {
        name: toml_name,
        text: v.source.clone(),
    }];
    match Bundle::from_stored(&v.source, &v.files) {
        Ok(b) => out.extend(b.files.into_iter().filter_map(|(name, e)| match e {
            FileEntry::Text(text) => Some(FileView { name, text }),
            _ => None,
        })),
        Err(e) => tracing::error!(version_id = v.id, error = %e, "a stored bundle does not read"),
    }
    out
}

/// Lines of context kept around each change.
const CONTEXT: usize = 3;

fn diff(old: &[FileView], new: &[FileView]) -> Vec<FileDiff> {
    let mut names: Vec<&str> = old.iter().chain(new).map(|f| f.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let find =
        |files: &[FileView], n: &str| files.iter().find(|f| f.name == n).map(|f| f.text.clone());
    let mut out = Vec::new();
    for name in names {
        let (a, b) = (find(old, name), find(new, name));
        let status = match (&a, &b) {
            (Some(x), Some(y)) if x == y => continue,
            (Some(_), Some(_)) => "changed",
            (None, _) => "added",
            (_, None) => "removed",
        };
        let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
        let d = TextDiff::from_lines(&a, &b);
        let mut lines = Vec::new();
        for (i, group) in d.grouped_ops(CONTEXT).iter().enumerate() {
            if i > 0 {
                lines.push(DiffLine {
                    class: "gap",
                    text: "…".into(),
                });
            }
            for op in group {
                for change in d.iter_changes(op) {
                    let (class, sign) = match change.tag() {
                        ChangeTag::Delete => ("del", '-'),
                        ChangeTag::Insert => ("add", '+'),
                        ChangeTag::Equal => ("same", ' '),
                    };
                    lines.push(DiffLine {
                        class,
                        text: format!("{sign} {}", change.value().trim_end_matches('\n')),
                    });
                }
            }
        }
        out.push(FileDiff {
            name: name.to_string(),
            status,
            lines,
        });
    }
    out
}

pub async fn version_page(
    State(state): State<AppState>,
    pg: Page,
    Path((dag_id, version)): Path<(String, i32)>,
    Query(q): Query<VersionQuery>,
) -> Result<Response> {
    let layout = pg
        .layout(&state, format!("{dag_id} version {version}"), "dags", None)
        .await?;
    let all = dags::versions_of(&state.db.read, &dag_id).await?;
    let Some(v) = dags::version_numbered(&state.db.read, &dag_id, version).await? else {
        return Err(Error::NotFound(format!(
            "DAG \"{dag_id}\" has no version {version}"
        )));
    };
    let against_no = q.against.or_else(|| {
        all.iter()
            .filter(|o| o.version < version)
            .map(|o| o.version)
            .max()
    });
    let against = match against_no {
        Some(n) => Some(
            dags::version_numbered(&state.db.read, &dag_id, n)
                .await?
                .ok_or_else(|| Error::NotFound(format!("DAG \"{dag_id}\" has no version {n}")))?,
        ),
        None => None,
    };
    let files = files_of(&v);
    let diffs = against
        .as_ref()
        .map_or_else(Vec::new, |o| diff(&files_of(o), &files));
    let base = format!("{}/versions", dag_href(&dag_id));
    Ok(pg.render(VersionPage {
        layout,
        dag_href: dag_href(&dag_id),
        hash: v.source_hash.chars().take(12).collect(),
        created: time(v.created_at),
        version,
        files,
        against: against.map(|o| o.version),
        diffs,
        versions: all
            .iter()
            .map(|o| VersionLink {
                version: o.version,
                href: format!("{base}/{}?against={}", o.version, enc(&version.to_string())),
                current: o.version == version,
            })
            .collect(),
        dag_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, text: &str) -> FileView {
        FileView {
            name: name.into(),
            text: text.into(),
        }
    }

    #[test]
    fn diff_names_changed_added_and_removed_files() {
        let old = [f("d.toml", "a\nb\nc\n"), f("gone.sql", "x\n")];
        let new = [f("d.toml", "a\nB\nc\n"), f("new.sql", "y\n")];
        let d = diff(&old, &new);
        let summary: Vec<(&str, &str)> = d.iter().map(|x| (x.name.as_str(), x.status)).collect();
        assert_eq!(
            summary,
            vec![
                ("d.toml", "changed"),
                ("gone.sql", "removed"),
                ("new.sql", "added")
            ]
        );
        let changed: Vec<&str> = d[0].lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(changed, vec!["  a", "- b", "+ B", "  c"]);
        assert!(diff(&new, &new).is_empty());
    }
}
