//! The database of record: sea-orm entities and every query weft runs. The only module
//! that talks SQL. Works on SQLite (embedded default) and PostgreSQL.

pub mod dags;
pub mod entities;
pub mod machine;
pub mod maintenance;
pub mod runs;
pub mod state;
pub mod stats;
pub mod tasks;
pub mod users;

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};

pub use state::{Role, RunState, RunType, TaskState, TryState};

/// The rows the layers above read, by name: they never name the ORM's entities.
pub mod rows {
    pub use super::entities::dag::Model as DagRow;
    pub use super::entities::dag_run::Model as Run;
    pub use super::entities::dag_version::Model as DagVersion;
    pub use super::entities::task_instance::Model as TaskInstance;
    pub use super::entities::task_try::Model as Try;
    pub use super::entities::user::Model as User;
}

/// An error of a warehouse query, for the pages that read warehouses.
pub type QueryError = sea_orm::DbErr;

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
    url: String,
}

impl Db {
    /// Connects. SQLite gets WAL, `synchronous=NORMAL`, foreign keys and a busy
    /// timeout; its pool is one connection, so writes in this process never contend.
    pub async fn connect(url: &str) -> DbResult<Db> {
        let mut opts = ConnectOptions::new(url.to_string());
        opts.sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10));
        if url.starts_with("sqlite:") {
            // Everything in this process queues for the one connection: wait long.
            opts.acquire_timeout(Duration::from_secs(300));
            opts.max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
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
        Ok(Db {
            conn,
            url: url.to_string(),
        })
    }

    /// True when migrations are pending (read-only commands refuse such a database).
    pub async fn needs_migration(&self) -> DbResult<bool> {
        Ok(!Migrator::get_pending_migrations(&self.conn)
            .await?
            .is_empty())
    }

    /// Applies pending migrations. Several processes may start at once (a server and a
    /// CLI command): migrations run under a lock (an advisory lock on Postgres, a file
    /// lock in the temporary folder for SQLite), and a database that is up to date is not touched.
    pub async fn migrate(&self) -> DbResult<()> {
        if Migrator::get_pending_migrations(&self.conn)
            .await?
            .is_empty()
        {
            return Ok(());
        }
        if self.is_postgres() {
            let mut opts = ConnectOptions::new(self.url.clone());
            opts.sqlx_logging(false)
                .max_connections(1)
                .min_connections(1);
            let lock_conn = Database::connect(opts).await?;
            lock_conn
                .execute_unprepared("SELECT pg_advisory_lock(7318202)")
                .await?;
            let res = Migrator::up(&self.conn, None).await;
            let _ = lock_conn
                .execute_unprepared("SELECT pg_advisory_unlock(7318202)")
                .await;
            let _ = lock_conn.close().await;
            res?;
        } else {
            // The lock lives in the temporary folder (keyed by the database's path), so
            // nothing is left beside the database.
            let lock = self.sqlite_path().map(|p| {
                let abs = std::fs::canonicalize(&p)
                    .map(|a| a.display().to_string())
                    .unwrap_or(p);
                let key = format!(
                    "{:x}",
                    <sha2::Sha256 as sha2::Digest>::digest(abs.as_bytes())
                );
                std::env::temp_dir()
                    .join(format!("weft-migrate-{}.lock", &key[..16]))
                    .display()
                    .to_string()
            });
            let guard = match lock {
                Some(path) => Some(
                    tokio::task::spawn_blocking(move || lock_file(&path))
                        .await
                        .map_err(|e| DbError::Conflict(format!("migration lock: {e}")))??,
                ),
                None => None,
            };
            let res = Migrator::up(&self.conn, None).await;
            drop(guard);
            res?;
        }
        Ok(())
    }

    /// The file of a SQLite URL (`sqlite://path?...`), if it is a file.
    fn sqlite_path(&self) -> Option<String> {
        crate::config::sqlite_path(&self.url).map(str::to_string)
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

/// Takes an exclusive lock on `path` (created if missing); released when dropped.
fn lock_file(path: &str) -> DbResult<nix::fcntl::Flock<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| DbError::Conflict(format!("cannot open the migration lock {path}: {e}")))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| DbError::Conflict(format!("cannot lock {path}: {e}")))
}

/// The `i`-th (from 1) bind placeholder of a statement on backend `b` (`$i` on
/// PostgreSQL, `?` on SQLite).
pub fn ph(b: DbBackend, i: usize) -> String {
    if b == DbBackend::Postgres {
        format!("${i}")
    } else {
        "?".into()
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
