//! A DAG's complete definition: its TOML file and every file it reads (`file =` SQL,
//! model files and the globs that found them, the folders it names).
//!
//! Loading is the only I/O: [`load`] reads the TOML, asks the parser what else the
//! definition needs, reads that, and parses again until nothing is missing. Parsing a
//! bundle is pure, so a stored bundle re-parses to exactly the same definition after a
//! restart, whatever happened to the files on disk since. The version of a DAG is the
//! hash of its whole bundle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::diag::Diagnostic;
use super::{Dag, ValidationContext};

/// The largest file (DAG or SQL) a bundle holds, in bytes.
pub const MAX_FILE_BYTES: usize = 8 * 1024 * 1024;

/// A file the definition reads, as it was when the bundle was loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileEntry {
    Text(String),
    /// It could not be read; the reason.
    Unreadable(String),
    /// It lies outside the DAG file's folder (after resolving links and `..`).
    Outside,
    /// It is larger than [`MAX_FILE_BYTES`]; its size.
    TooBig(u64),
}

/// What a glob matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GlobEntry {
    /// The matching files, relative to the DAG's folder, sorted.
    Matches(Vec<String>),
    /// The pattern is not a valid glob; why.
    Bad(String),
    /// Some match lies outside the DAG's folder.
    Outside,
}

/// What a parse of a bundle needs that the bundle does not hold yet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Want {
    File(String),
    Glob(String),
    Dir(String),
}

/// Everything one DAG definition is made of. Paths are relative to the DAG file's folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// The DAG file's text (stored in `dag_version.source`, not in the JSON).
    #[serde(skip)]
    pub toml: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, FileEntry>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub globs: BTreeMap<String, GlobEntry>,
    /// Folders the definition names (a shell task's `cwd`): whether each is a folder.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dirs: BTreeMap<String, bool>,
}

impl Bundle {
    /// A bundle of a TOML text alone.
    pub fn of_toml(toml: impl Into<String>) -> Bundle {
        Bundle {
            toml: toml.into(),
            ..Bundle::default()
        }
    }

    /// A stored bundle: the TOML text and the JSON of the rest (empty for versions
    /// recorded before bundles were stored).
    pub fn from_stored(toml: &str, json: &str) -> Result<Bundle, serde_json::Error> {
        let mut b: Bundle = if json.trim().is_empty() {
            Bundle::default()
        } else {
            serde_json::from_str(json)?
        };
        b.toml = toml.to_string();
        Ok(b)
    }

    /// The JSON stored beside the TOML text.
    pub fn files_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// The hash of the whole bundle: the DAG's version.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.toml.as_bytes());
        h.update([0]);
        h.update(self.files_json().as_bytes());
        format!("{:x}", h.finalize())
    }

    /// The text of a file the definition read, if the bundle holds it.
    pub fn text(&self, rel: &str) -> Option<&str> {
        match self.files.get(rel) {
            Some(FileEntry::Text(s)) => Some(s),
            _ => None,
        }
    }

    /// Reads from disk what a parse asked for. `base` is the DAG file's folder.
    pub fn fetch(&mut self, base: &Path, want: &Want) {
        match want {
            Want::File(rel) => {
                let e = read_entry(base, rel);
                self.files.insert(rel.clone(), e);
            }
            Want::Dir(rel) => {
                self.dirs.insert(rel.clone(), base.join(rel).is_dir());
            }
            Want::Glob(pat) => {
                let g = expand(base, pat);
                if let GlobEntry::Matches(found) = &g {
                    for rel in found {
                        if !self.files.contains_key(rel) {
                            let e = read_entry(base, rel);
                            self.files.insert(rel.clone(), e);
                        }
                    }
                }
                self.globs.insert(pat.clone(), g);
            }
        }
    }

    /// The same bundle read again from disk: every file, glob and folder it holds,
    /// fetched anew (files a glob newly matches are read too). Equal to `self` when
    /// nothing the definition uses changed.
    pub fn reread(&self, base: &Path, toml: String) -> Bundle {
        let mut b = Bundle::of_toml(toml);
        for pat in self.globs.keys() {
            b.fetch(base, &Want::Glob(pat.clone()));
        }
        for rel in self.files.keys() {
            if !b.files.contains_key(rel) {
                b.fetch(base, &Want::File(rel.clone()));
            }
        }
        for rel in self.dirs.keys() {
            b.fetch(base, &Want::Dir(rel.clone()));
        }
        // A file only a glob used to match stays out once the glob stops matching it.
        let matched = glob_matches(&b.globs);
        let globbed_before = glob_matches(&self.globs);
        let stale: Vec<String> = b
            .files
            .keys()
            .filter(|k| globbed_before.contains(k) && !matched.contains(k))
            .cloned()
            .collect();
        for k in stale {
            b.files.remove(&k);
        }
        b
    }
}

/// Every file the globs matched.
fn glob_matches(globs: &BTreeMap<String, GlobEntry>) -> std::collections::BTreeSet<&String> {
    globs
        .values()
        .filter_map(|g| match g {
            GlobEntry::Matches(m) => Some(m),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The DAG file's folder.
pub fn base_of(path: &Path) -> PathBuf {
    path.parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
}

/// True when `path` (resolving links and `..`) lies inside `base`.
fn inside(base: &Path, path: &Path) -> bool {
    let base = base.canonicalize().unwrap_or_else(|_| base.to_path_buf());
    path.canonicalize().is_ok_and(|p| p.starts_with(&base))
}

fn read_entry(base: &Path, rel: &str) -> FileEntry {
    let full = base.join(rel);
    if full.exists() && !inside(base, &full) {
        return FileEntry::Outside;
    }
    match std::fs::metadata(&full) {
        Ok(m) if m.len() > MAX_FILE_BYTES as u64 => return FileEntry::TooBig(m.len()),
        _ => {}
    }
    match std::fs::read_to_string(&full) {
        Ok(s) => FileEntry::Text(s),
        Err(e) => FileEntry::Unreadable(e.to_string()),
    }
}

fn expand(base: &Path, pat: &str) -> GlobEntry {
    let full = base.join(pat);
    let paths = match glob::glob(&full.to_string_lossy()) {
        Ok(p) => p,
        Err(e) => return GlobEntry::Bad(e.to_string()),
    };
    let mut found = Vec::new();
    for p in paths.filter_map(Result::ok).filter(|p| p.is_file()) {
        if !inside(base, &p) {
            return GlobEntry::Outside;
        }
        let rel = p.strip_prefix(base).unwrap_or(&p);
        found.push(rel.to_string_lossy().into_owned());
    }
    found.sort();
    GlobEntry::Matches(found)
}

/// Reads what `toml` (the text of the DAG file at `path`) uses and parses the bundle.
/// The only I/O of loading a DAG; the parse itself is pure.
pub fn load(
    display: &str,
    path: &Path,
    toml: String,
    ctx: &ValidationContext,
) -> (Bundle, Result<Dag, Vec<Diagnostic>>) {
    complete(display, path, Bundle::of_toml(toml), ctx)
}

/// Parses `bundle`, reading from disk whatever it still lacks, until nothing is missing.
pub fn complete(
    display: &str,
    path: &Path,
    mut bundle: Bundle,
    ctx: &ValidationContext,
) -> (Bundle, Result<Dag, Vec<Diagnostic>>) {
    let base = base_of(path);
    // Each round reads what the previous one asked for; files a DAG reads are named in
    // its TOML, so two rounds are enough and the bound only guards against a bug.
    for _ in 0..4 {
        let (result, wants) = super::parse::parse_bundle(display, path, &bundle, ctx);
        if wants.is_empty() {
            return (bundle, result);
        }
        for w in &wants {
            bundle.fetch(&base, w);
        }
    }
    let (result, _) = super::parse::parse_bundle(display, path, &bundle, ctx);
    (bundle, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_covers_every_file() {
        let mut a = Bundle::of_toml("x");
        let h0 = a.hash();
        a.files
            .insert("m.sql".into(), FileEntry::Text("select 1".into()));
        let h1 = a.hash();
        assert_ne!(h0, h1);
        a.files
            .insert("m.sql".into(), FileEntry::Text("select 2".into()));
        assert_ne!(h1, a.hash());
    }

    #[test]
    fn stored_json_round_trips() {
        let mut a = Bundle::of_toml("dag_id = \"x\"");
        a.files
            .insert("q.sql".into(), FileEntry::Text("select 1".into()));
        a.globs.insert(
            "models/*.sql".into(),
            GlobEntry::Matches(vec!["models/a.sql".into()]),
        );
        a.dirs.insert("work".into(), true);
        let b = Bundle::from_stored(&a.toml, &a.files_json()).expect("json");
        assert_eq!(a, b);
        assert_eq!(a.hash(), b.hash());
        let old = Bundle::from_stored("t", "").expect("empty json");
        assert!(old.files.is_empty());
    }

    #[test]
    fn reread_sees_edits_and_new_glob_matches() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(dir.path().join("models")).expect("mkdir");
        std::fs::write(dir.path().join("models/a.sql"), "select 1").expect("write");
        let mut b = Bundle::of_toml("t");
        b.fetch(dir.path(), &Want::Glob("models/*.sql".into()));
        assert_eq!(b.text("models/a.sql"), Some("select 1"));
        assert_eq!(b.reread(dir.path(), "t".into()), b);
        std::fs::write(dir.path().join("models/a.sql"), "select 2").expect("write");
        let c = b.reread(dir.path(), "t".into());
        assert_eq!(c.text("models/a.sql"), Some("select 2"));
        std::fs::write(dir.path().join("models/b.sql"), "select 3").expect("write");
        std::fs::remove_file(dir.path().join("models/a.sql")).expect("rm");
        let d = c.reread(dir.path(), "t".into());
        assert_eq!(d.text("models/b.sql"), Some("select 3"));
        assert!(!d.files.contains_key("models/a.sql"));
    }

    #[test]
    fn files_outside_the_folder_are_not_read() {
        let dir = tempfile::tempdir().expect("tmp");
        let inner = dir.path().join("dags");
        std::fs::create_dir(&inner).expect("mkdir");
        std::fs::write(dir.path().join("secret.sql"), "x").expect("write");
        let mut b = Bundle::of_toml("t");
        b.fetch(&inner, &Want::File("../secret.sql".into()));
        assert_eq!(b.files.get("../secret.sql"), Some(&FileEntry::Outside));
        b.fetch(&inner, &Want::Glob("../*.sql".into()));
        assert_eq!(b.globs.get("../*.sql"), Some(&GlobEntry::Outside));
    }
}
