//! Loading a folder of DAG files: every file is parsed on its own so one broken file
//! never stops the others, and a dag_id used by two files is reported naming both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::bundle::{self, Bundle};
use super::diag::Diagnostic;
use super::{Dag, ValidationContext};

/// The result of reading one file.
#[derive(Debug, Clone)]
pub struct LoadedFile {
    pub path: PathBuf,
    /// The path as shown in messages (relative to the working directory when possible).
    pub display: String,
    /// What the file and the files it reads contained (none when the file itself could
    /// not be read).
    pub bundle: Option<Arc<Bundle>>,
    pub result: Result<Arc<Dag>, Vec<Diagnostic>>,
}

/// All DAG files of a folder (or a list of paths), parsed.
#[derive(Debug, Clone, Default)]
pub struct DagBag {
    /// Files in path order.
    pub files: Vec<LoadedFile>,
}

/// `path` relative to the working directory, for messages.
pub fn display_path(path: &Path) -> String {
    let rel = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(&cwd).ok().map(Path::to_path_buf));
    rel.unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

/// The `*.toml` files in `dir` (not recursive; sorted), or `dir` itself if it is a file.
pub fn dag_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    if dir.is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Reads one DAG file and the files it uses, and parses them.
pub fn load_file(path: &Path, ctx: &ValidationContext) -> LoadedFile {
    let display = display_path(path);
    match std::fs::read_to_string(path) {
        Ok(src) => {
            let (b, result) = bundle::load(&display, path, src, ctx);
            LoadedFile::new(path, display, b, result)
        }
        Err(e) => LoadedFile {
            path: path.to_path_buf(),
            result: Err(vec![Diagnostic {
                file: display.clone(),
                line: 1,
                column: 1,
                dag_id: None,
                task_id: None,
                message: format!("cannot read file: {e}"),
            }]),
            display,
            bundle: None,
        },
    }
}

/// `f` applied to every item, on all cores; results in item order.
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len().max(1));
    let chunk = items.len().div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(f).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

impl LoadedFile {
    pub fn new(
        path: &Path,
        display: String,
        bundle: Bundle,
        result: Result<Dag, Vec<Diagnostic>>,
    ) -> LoadedFile {
        let result = result.map(Arc::new);
        let bundle = match &result {
            Ok(d) => d.bundle.clone(),
            Err(_) => Arc::new(bundle),
        };
        LoadedFile {
            path: path.to_path_buf(),
            display,
            bundle: Some(bundle),
            result,
        }
    }
}

impl DagBag {
    /// Parses every file (in parallel on all cores), then reports dag_ids defined twice.
    pub fn load(paths: &[PathBuf], ctx: &ValidationContext) -> DagBag {
        let mut files = par_map(paths, |p| load_file(p, ctx));
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut bag = DagBag { files };
        bag.mark_duplicates();
        bag
    }

    /// Loads the `*.toml` files of a folder.
    pub fn load_dir(dir: &Path, ctx: &ValidationContext) -> std::io::Result<DagBag> {
        Ok(DagBag::load(&dag_files(dir)?, ctx))
    }

    /// The second and later files that define an already-defined dag_id become errors
    /// that name the first file; the first keeps its DAG.
    pub fn mark_duplicates(&mut self) {
        let mut first: BTreeMap<String, String> = BTreeMap::new();
        for f in &mut self.files {
            let Ok(dag) = &f.result else { continue };
            match first.get(&dag.dag_id) {
                Some(other) => {
                    let (line, column) = dag_id_position(dag.source());
                    f.result = Err(vec![Diagnostic {
                        file: f.display.clone(),
                        line,
                        column,
                        dag_id: Some(dag.dag_id.clone()),
                        task_id: None,
                        message: format!(
                            "duplicate dag_id \"{}\": already defined in {other}; dag_ids must be unique across files",
                            dag.dag_id
                        ),
                    }]);
                }
                None => {
                    first.insert(dag.dag_id.clone(), f.display.clone());
                }
            }
        }
    }

    pub fn dags(&self) -> impl Iterator<Item = &Arc<Dag>> {
        self.files.iter().filter_map(|f| f.result.as_ref().ok())
    }

    pub fn get(&self, dag_id: &str) -> Option<&Arc<Dag>> {
        self.dags().find(|d| d.dag_id == dag_id)
    }

    pub fn errors(&self) -> impl Iterator<Item = (&LoadedFile, &Vec<Diagnostic>)> {
        self.files
            .iter()
            .filter_map(|f| f.result.as_ref().err().map(|e| (f, e)))
    }

    pub fn error_count(&self) -> usize {
        self.errors().map(|(_, e)| e.len()).sum()
    }
}

/// Where `dag_id = ...` is written, or the top of the file.
fn dag_id_position(src: &str) -> (usize, usize) {
    src.lines()
        .enumerate()
        .find(|(_, l)| l.trim_start().starts_with("dag_id"))
        .map_or((1, 1), |(i, l)| (i + 1, l.len() - l.trim_start().len() + 1))
}
