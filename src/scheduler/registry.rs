//! The DAGs this process knows: the current definition of each DAG (from the DAG
//! folder), and every version that runs refer to (re-parsed from the stored source).
//!
//! A broken edit never replaces a good definition: the file's import error is recorded
//! and the last good version keeps running.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use chrono::{DateTime, Utc};

use crate::dag::bag::{self, LoadedFile};
use crate::dag::{Dag, DagBag, ValidationContext, parse_dag};
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
}

impl Registry {
    pub fn new(folder: PathBuf, ctx: ValidationContext) -> Arc<Registry> {
        Arc::new(Registry {
            folder,
            ctx,
            inner: RwLock::new(Inner::default()),
        })
    }

    pub fn folder(&self) -> &Path {
        &self.folder
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn current(&self, dag_id: &str) -> Option<(Arc<Dag>, i64)> {
        self.read().current.get(dag_id).cloned()
    }

    pub fn all(&self) -> Vec<(Arc<Dag>, i64)> {
        self.read().current.values().cloned().collect()
    }

    /// The definition a run refers to.
    pub async fn version(&self, db: &Db, version_id: i64) -> DbResult<Option<Arc<Dag>>> {
        if let Some(d) = self.read().versions.get(&version_id) {
            return Ok(Some(d.clone()));
        }
        let Some(v) = dags::get_version(&db.conn, version_id).await? else {
            return Ok(None);
        };
        let path = PathBuf::from(&v.fileloc);
        match parse_dag(&v.fileloc, &path, &v.source, &self.ctx) {
            Ok(d) => {
                let d = Arc::new(d);
                self.write().versions.insert(version_id, d.clone());
                Ok(Some(d))
            }
            Err(diags) => {
                tracing::error!(version_id, dag_id = %v.dag_id, "stored dag version no longer validates: {}", diags.first().map(|d| d.to_string()).unwrap_or_default());
                Ok(None)
            }
        }
    }

    /// Registers one DAG directly (for `dags test` and tests) and records it.
    pub async fn add(&self, db: &Db, dag: Arc<Dag>, now: DateTime<Utc>) -> DbResult<i64> {
        let vid = dags::upsert_dag(&db.conn, &dag, now).await?;
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
        // Only files whose modification time changed are parsed again.
        let changed: Vec<PathBuf> = {
            let r = self.read();
            paths
                .iter()
                .filter(|p| {
                    let m = std::fs::metadata(p).and_then(|m| m.modified()).ok();
                    r.files.get(*p).is_none_or(|f| {
                        f.modified != m
                            || m.is_none_or(|m| {
                                m > SystemTime::now() - std::time::Duration::from_secs(2)
                            })
                    })
                })
                .cloned()
                .collect()
        };
        let fresh = DagBag::load(&changed, &self.ctx);
        let bag = {
            let mut w = self.write();
            w.files.retain(|p, _| paths.contains(p));
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
                        let vid = dags::upsert_dag(&db.conn, dag, now).await?;
                        let mut w = self.write();
                        w.versions.insert(vid, dag.clone());
                        w.current.insert(dag.dag_id.clone(), (dag.clone(), vid));
                        report.new_versions.push(dag.dag_id.clone());
                    }
                    self.write().good.insert(f.path.clone(), dag.dag_id.clone());
                    dags::clear_import_error(&db.conn, &fileloc).await?;
                }
                Err(diags) => {
                    let message = diags
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join("\n");
                    dags::set_import_error(&db.conn, &fileloc, &message, now).await?;
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
            w.good.retain(|p, _| paths.contains(p));
            let keep: Vec<String> = active.clone();
            w.current.retain(|id, _| keep.contains(id));
        }
        dags::deactivate_missing(&db.conn, &active).await?;
        dags::retain_import_errors(&db.conn, &error_files).await?;
        Ok(report)
    }
}
