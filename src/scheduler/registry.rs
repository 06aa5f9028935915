//! The DAGs this process knows: the current definition of each DAG (from the DAG
//! folder), and every version that runs refer to (re-parsed from the stored source).
//!
//! A broken edit never replaces a good definition: the file's import error is recorded
//! and the last good version keeps running.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};

use crate::dag::bag::{self, LoadedFile};
use crate::dag::bundle::{self, Bundle};
use crate::dag::parse::parse_bundle;
use crate::dag::{Dag, DagBag, ValidationContext};
use crate::db::{Db, DbResult, dags};

#[derive(Debug, Default)]
struct Inner {
    /// dag_id -> (definition, version id).
    current: BTreeMap<String, (Arc<Dag>, i64)>,
    /// version id -> definition.
    versions: HashMap<i64, Arc<Dag>>,
    /// Last read of each file.
    files: BTreeMap<PathBuf, LoadedFile>,
    /// The dag_ids each file defined when it last parsed cleanly.
    good: BTreeMap<PathBuf, String>,
    /// The import error last recorded for each broken file (recorded again only when
    /// it changes).
    recorded_errors: BTreeMap<PathBuf, String>,
}

/// What a sync found.
#[derive(Debug, Default, Clone)]
pub struct SyncReport {
    pub loaded: usize,
    pub new_versions: Vec<String>,
    pub errors: Vec<(String, String)>,
}

/// Shared, thread-safe registry of DAG definitions.
#[derive(Debug)]
pub struct Registry {
    folder: PathBuf,
    ctx: ValidationContext,
    inner: RwLock<Inner>,
    /// Bumped whenever the registry may have changed (for caches built from it).
    generation: std::sync::atomic::AtomicU64,
}

impl Registry {
    pub fn new(folder: PathBuf, ctx: ValidationContext) -> Arc<Registry> {
        Arc::new(Registry {
            folder,
            ctx,
            inner: RwLock::new(Inner::default()),
            generation: std::sync::atomic::AtomicU64::new(1),
        })
    }

    pub fn folder(&self) -> &Path {
        &self.folder
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes whenever the registry may have changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Takes the current definition of each active DAG from the database (the versions
    /// a scheduler recorded): for workers and web servers that do not read the DAG
    /// folder. Only versions not seen before are parsed. Returns how many DAGs it knows.
    pub async fn sync_from_db(&self, db: &Db) -> DbResult<usize> {
        let rows = dags::active_versions(&db.conn).await?;
        let unchanged = {
            let r = self.read();
            r.current.len() == rows.len()
                && rows
                    .iter()
                    .all(|(d, v)| r.current.get(d).is_some_and(|(_, cv)| cv == v))
        };
        if unchanged {
            return Ok(rows.len());
        }
        let mut current = BTreeMap::new();
        for (dag_id, vid) in rows {
            if let Some(d) = self.version(db, vid).await? {
                current.insert(dag_id, (d, vid));
            }
        }
        let n = current.len();
        self.write().current = current;
        Ok(n)
    }

    pub fn current(&self, dag_id: &str) -> Option<(Arc<Dag>, i64)> {
        self.read().current.get(dag_id).cloned()
    }

    pub fn all(&self) -> Vec<(Arc<Dag>, i64)> {
        self.read().current.values().cloned().collect()
    }

    /// The definition a run refers to, parsed from the bundle stored with its version
    /// (never from the files on disk, which may have changed since).
    pub async fn version(&self, db: &Db, version_id: i64) -> DbResult<Option<Arc<Dag>>> {
        if let Some(d) = self.read().versions.get(&version_id) {
            return Ok(Some(d.clone()));
        }
        let Some(v) = dags::get_version(&db.conn, version_id).await? else {
            return Ok(None);
        };
        let ctx = self.ctx.clone();
        let parsed = tokio::task::spawn_blocking(move || {
            let path = PathBuf::from(&v.fileloc);
            let stored = Bundle::from_stored(&v.source, &v.files)
                .map_err(|e| format!("its stored files cannot be read: {e}"))?;
            // Versions recorded before bundles were stored hold only the TOML; what they
            // read comes from disk once, as it did then.
            let legacy = v.files.trim().is_empty();
            let (result, wants) = if legacy {
                (
                    bundle::complete(&v.fileloc, &path, stored, &ctx).1,
                    Vec::new(),
                )
            } else {
                parse_bundle(&v.fileloc, &path, &stored, &ctx)
            };
            if !wants.is_empty() {
                return Err(format!("its stored bundle lacks {wants:?}"));
            }
            result.map_err(|diags| {
                format!(
                    "it no longer validates: {}",
                    diags.first().map(|d| d.to_string()).unwrap_or_default()
                )
            })
        })
        .await;
        match parsed {
            Ok(Ok(d)) => {
                let d = Arc::new(d);
                self.write().versions.insert(version_id, d.clone());
                Ok(Some(d))
            }
            Ok(Err(why)) => {
                tracing::error!(version_id, "stored dag version cannot be used: {why}");
                Ok(None)
            }
            Err(e) => {
                tracing::error!(version_id, error = %e, "parsing a stored dag version panicked");
                Ok(None)
            }
        }
    }

    /// Registers one DAG directly (for `dags test` and tests) and records it.
    pub async fn add(&self, db: &Db, dag: Arc<Dag>, now: DateTime<Utc>) -> DbResult<i64> {
        let vid = dags::upsert_dag(&db.conn, &dag.record(), now).await?;
        let mut w = self.write();
        w.versions.insert(vid, dag.clone());
        w.current.insert(dag.dag_id.clone(), (dag, vid));
        Ok(vid)
    }

    /// Re-reads changed files in the DAG folder and records new versions and import
    /// errors in the database.
    pub async fn sync(&self, db: &Db, now: DateTime<Utc>) -> DbResult<SyncReport> {
        let paths = bag::dag_files(&self.folder).unwrap_or_else(|e| {
            tracing::error!(folder = %self.folder.display(), error = %e, "cannot list the dag folder");
            Vec::new()
        });
        // Every file is read again with what it uses; only a bundle whose content
        // changed is parsed again. No clock is involved, so an edit is never missed.
        let previous: BTreeMap<PathBuf, Option<Arc<Bundle>>> = {
            let r = self.read();
            paths
                .iter()
                .map(|p| (p.clone(), r.files.get(p).and_then(|f| f.bundle.clone())))
                .collect()
        };
        let ctx = self.ctx.clone();
        let fresh = tokio::task::spawn_blocking(move || rescan(previous, &ctx))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "reading the dag folder panicked");
                DagBag::default()
            });
        let present: std::collections::HashSet<&PathBuf> = paths.iter().collect();
        let bag = {
            let mut w = self.write();
            w.files.retain(|p, _| present.contains(p));
            for f in fresh.files {
                w.files.insert(f.path.clone(), f);
            }
            let mut all = DagBag {
                files: w.files.values().cloned().collect(),
            };
            all.mark_duplicates();
            all
        };

        let mut report = SyncReport::default();
        let mut active: Vec<String> = Vec::new();
        let mut error_files: Vec<String> = Vec::new();
        for f in &bag.files {
            let fileloc = f.path.display().to_string();
            match &f.result {
                Ok(dag) => {
                    report.loaded += 1;
                    active.push(dag.dag_id.clone());
                    let unchanged = self.current(&dag.dag_id).is_some_and(|(d, _)| {
                        d.source_hash == dag.source_hash && d.file == dag.file
                    });
                    if !unchanged {
                        let vid = dags::upsert_dag(&db.conn, &dag.record(), now).await?;
                        let mut w = self.write();
                        w.versions.insert(vid, dag.clone());
                        w.current.insert(dag.dag_id.clone(), (dag.clone(), vid));
                        report.new_versions.push(dag.dag_id.clone());
                    }
                    let mut w = self.write();
                    w.good.insert(f.path.clone(), dag.dag_id.clone());
                    // Its old import error, if any, goes with `retain_import_errors` below.
                    w.recorded_errors.remove(&f.path);
                }
                Err(diags) => {
                    let message = diags
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join("\n");
                    let known = self.read().recorded_errors.get(&f.path) == Some(&message);
                    if !known {
                        dags::set_import_error(&db.conn, &fileloc, &message, now).await?;
                        self.write()
                            .recorded_errors
                            .insert(f.path.clone(), message.clone());
                    }
                    error_files.push(fileloc.clone());
                    report.errors.push((f.display.clone(), message));
                    // The last good definition from this file keeps running.
                    if let Some(id) = self.read().good.get(&f.path) {
                        active.push(id.clone());
                    }
                }
            }
        }
        // DAGs whose file is gone stop being scheduled.
        {
            let mut w = self.write();
            w.good.retain(|p, _| present.contains(p));
            w.recorded_errors.retain(|p, _| present.contains(p));
            let keep: std::collections::HashSet<&String> = active.iter().collect();
            w.current.retain(|id, _| keep.contains(id));
        }
        dags::deactivate_missing(&db.conn, &active).await?;
        dags::retain_import_errors(&db.conn, &error_files).await?;
        Ok(report)
    }
}

/// Reads each file again; returns the files whose bundle changed (or that are new),
/// parsed. `previous` holds the last bundle of each file in the folder.
fn rescan(previous: BTreeMap<PathBuf, Option<Arc<Bundle>>>, ctx: &ValidationContext) -> DagBag {
    let items: Vec<(PathBuf, Option<Arc<Bundle>>)> = previous.into_iter().collect();
    let files = bag::par_map(&items, |(path, prev)| {
        let Some(prev) = prev else {
            return Some(bag::load_file(path, ctx));
        };
        let Ok(toml) = std::fs::read_to_string(path) else {
            return Some(bag::load_file(path, ctx));
        };
        let base = bundle::base_of(path);
        let again = if prev.toml == toml {
            prev.reread(&base, toml)
        } else {
            Bundle::of_toml(toml)
        };
        if again == **prev {
            return None;
        }
        let display = bag::display_path(path);
        let (b, result) = bundle::complete(&display, path, again, ctx);
        Some(LoadedFile::new(path, display, b, result))
    });
    DagBag {
        files: files.into_iter().flatten().collect(),
    }
}
