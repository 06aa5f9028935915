//! What a kind's runner may use: [`RunContext`] (the rendered template context, the
//! task's log, its cancellation, the warehouses) and the warehouse helpers shared by
//! kinds. Nothing here reaches the executor or the scheduler.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio::sync::{Mutex, watch};

use crate::config::{Connection, expand_env};
use crate::dag::template::TemplateContext;
use crate::dag::{Dag, Task};
use crate::db::Db;
use crate::db::tasks::TryOutcome;
use crate::tasklog::LogSink;

/// Everything a task kind needs to run one try.
pub struct RunContext<'a> {
    pub db: &'a Db,
    pub dag: &'a Dag,
    pub task: &'a Task,
    pub tmpl: &'a TemplateContext,
    pub ti_id: i64,
    pub try_id: i64,
    pub kill_grace: Duration,
    /// Server environment variables tasks may see besides the minimal set.
    pub pass_env: &'a [String],
    pub cancel: watch::Receiver<Option<String>>,
    pub warehouses: &'a Warehouses,
    pub log: &'a mut LogSink,
}

impl RunContext<'_> {
    /// The folder relative paths resolve against: the DAG file's folder.
    pub fn base_dir(&self) -> PathBuf {
        self.dag.base_dir()
    }

    pub fn render(&self, text: &str) -> Result<String, String> {
        self.tmpl.render(text)
    }
}

/// A failed try with a message.
pub fn failure(message: impl std::fmt::Display) -> TryOutcome {
    TryOutcome::failed(message.to_string())
}

/// Why a warehouse connection is not available. The driver's own error is not kept as
/// a source: its text can hold the URL's password, so only a redacted copy is.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("unknown connection \"{0}\"")]
    Unknown(String),
    #[error("connection \"{name}\": {message}")]
    Url { name: String, message: String },
    #[error("connection \"{name}\": cannot connect: {redacted}")]
    Connect { name: String, redacted: String },
    #[error("connection \"{name}\": cannot create weft's tables: {redacted}")]
    Migrate { name: String, redacted: String },
}

/// Creates warehouse tables so that concurrent tries, in this process or another, never
/// race: on PostgreSQL the statements run in one transaction under an advisory lock
/// (`CREATE TABLE IF NOT EXISTS` is not safe there when two sessions run it at once);
/// SQLite serialises writers anyway. `alters` are `ADD COLUMN` clauses for tables made
/// before a column existed (`IF NOT EXISTS` on PostgreSQL; on SQLite an error means the
/// column is there).
pub(crate) async fn ensure_tables<C>(
    c: &C,
    creates: &[String],
    alters: &[(&str, &str)],
) -> Result<(), sea_orm::DbErr>
where
    C: sea_orm::ConnectionTrait + sea_orm::TransactionTrait,
{
    use sea_orm::{ConnectionTrait, TransactionSession};
    if c.get_database_backend() == sea_orm::DbBackend::Postgres {
        let txn = c.begin().await?;
        txn.execute_unprepared("SELECT pg_advisory_xact_lock(7426001)")
            .await?;
        for sql in creates {
            txn.execute_unprepared(sql).await?;
        }
        for (table, column) in alters {
            txn.execute_unprepared(&format!(
                "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column}"
            ))
            .await?;
        }
        txn.commit().await
    } else {
        for sql in creates {
            c.execute_unprepared(sql).await?;
        }
        for (table, column) in alters {
            if let Err(e) = c
                .execute_unprepared(&format!("ALTER TABLE {table} ADD COLUMN {column}"))
                .await
            {
                tracing::trace!("{table} already has {column}: {e}");
            }
        }
        Ok(())
    }
}

/// Pools of warehouse connections by name, opened on first use.
#[derive(Debug, Default)]
pub struct Warehouses {
    configs: HashMap<String, Connection>,
    open: Mutex<HashMap<String, DatabaseConnection>>,
}

impl Warehouses {
    pub fn new(configs: HashMap<String, Connection>) -> Arc<Self> {
        Arc::new(Warehouses {
            configs,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The connection pool for `name`. Errors never contain the URL (it may hold a
    /// password).
    pub async fn get(&self, name: &str) -> Result<DatabaseConnection, WarehouseError> {
        let mut open = self.open.lock().await;
        if let Some(c) = open.get(name) {
            return Ok(c.clone());
        }
        let cfg = self
            .configs
            .get(name)
            .ok_or_else(|| WarehouseError::Unknown(name.to_string()))?;
        let url = expand_env(&cfg.url).map_err(|message| WarehouseError::Url {
            name: name.to_string(),
            message,
        })?;
        let db = Db::connect(&url)
            .await
            .map_err(|e| WarehouseError::Connect {
                name: name.to_string(),
                redacted: crate::db::redact_url(&e.to_string()),
            })?;
        // The kinds' warehouse tables, once per warehouse (recorded in it).
        super::warehouse::migrate(&db.conn)
            .await
            .map_err(|e| WarehouseError::Migrate {
                name: name.to_string(),
                redacted: crate::db::redact_url(&e.to_string()),
            })?;
        open.insert(name.to_string(), db.conn.clone());
        Ok(db.conn)
    }
}
