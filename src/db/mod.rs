//! The database of record: sea-orm entities and every query weft runs. The only module
//! that talks SQL. Works on SQLite (embedded default) and PostgreSQL.

pub mod entities;
pub mod dags;
pub mod runs;
pub mod state;
pub mod tasks;

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr};

pub use state::{Role, RunState, RunType, TaskState, TryState};

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

pub type DbResult<T> = Result<T, DbError>;

/// A handle on the database of record.
#[derive(Debug, Clone)]
pub struct Db {
    pub conn: DatabaseConnection,
}

impl Db {
    /// Connects. SQLite gets WAL, `synchronous=NORMAL`, foreign keys and a busy
    /// timeout; its pool is one connection, so writes in this process never contend.
    pub async fn connect(url: &str) -> DbResult<Db> {
        let mut opts = ConnectOptions::new(url.to_string());
        opts.sqlx_logging(false).connect_timeout(Duration::from_secs(10));
        if url.starts_with("sqlite:") {
            opts.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None);
            opts.map_sqlx_sqlite_opts(|o| {
                use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(10))
            });
        } else {
            opts.max_connections(10).min_connections(1);
        }
        let conn = Database::connect(opts).await?;
        Ok(Db { conn })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> DbResult<()> {
        Migrator::up(&self.conn, None).await?;
        Ok(())
    }

    pub fn backend(&self) -> DbBackend {
        self.conn.get_database_backend()
    }

    pub fn is_postgres(&self) -> bool {
        self.backend() == DbBackend::Postgres
    }

    /// A cheap round trip, for health checks.
    pub async fn ping(&self) -> DbResult<()> {
        self.conn.ping().await?;
        Ok(())
    }
}

/// `url` with any password replaced by `***`, for printing.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
