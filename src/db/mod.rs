//! The database of record: sea-orm entities and every query weft runs. The only module
//! that talks SQL. Works on SQLite (embedded default) and PostgreSQL.

pub mod audit;
pub mod dags;
pub mod entities;
pub mod lease;
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
    pub use super::entities::audit_log::Model as AuditEntry;
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

impl DbError {
    /// No connection came free in time (the pool is at capacity): worth retrying.
    pub fn is_busy(&self) -> bool {
        matches!(self, DbError::Db(DbErr::ConnectionAcquire(_)))
    }

    /// The database could not be reached (it is restarting, the connection was cut, or
    /// no connection came free): the same statement may well succeed later.
    pub fn is_unreachable(&self) -> bool {
        const CUT: [&str; 7] = [
            "not currently accepting connections",
            "the database system is",
            "terminating connection",
            "connection reset",
            "broken pipe",
            "connection refused",
            "unexpected eof",
        ];
        match self {
            DbError::Db(DbErr::Conn(_) | DbErr::ConnectionAcquire(_)) => true,
            DbError::Db(e) => {
                let text = e.to_string().to_lowercase();
                CUT.iter().any(|c| text.contains(c))
            }
            _ => false,
        }
    }
}

/// A handle on the database of record: `conn` for writes (and the engine's reads),
/// `read` for the web server's reads. They are the same pool except in a web server's
/// handle (`for_web`): there, on SQLite, `read` is a pool of read-only connections
/// beside the one writer (WAL lets them read while it writes), and on PostgreSQL both
/// are a pool of the web server's own, so page load never takes a connection the
/// engine needs.
#[derive(Debug, Clone)]
pub struct Db {
    pub conn: DatabaseConnection,
    pub read: DatabaseConnection,
    url: String,
}

/// How long a web request waits for a database connection before it is answered 503
/// (`Retry-After`): a fast answer, never a minute-long wait.
pub const WEB_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

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
        // Two processes opening a new SQLite file at once (`weft serve` and a `weft
        // trigger` started beside it) can find it locked while the other one switches
        // it to WAL or migrates it, before the busy timeout applies: try again.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let conn = loop {
            match Database::connect(opts.clone()).await {
                Err(e)
                    if url.starts_with("sqlite:")
                        && e.to_string().contains("database is locked")
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                r => break r?,
            }
        };
        Ok(Db {
            read: conn.clone(),
            conn,
            url: url.to_string(),
        })
    }

    /// A handle with a pool of its own (`size` connections, waiting at most
    /// `acquire` for one): on PostgreSQL for the heartbeat (1) and the web server.
    async fn own_pool(&self, size: u32, acquire: Duration) -> DbResult<DatabaseConnection> {
        let mut opts = ConnectOptions::new(self.url.clone());
        opts.sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(acquire)
            .max_connections(size)
            .min_connections(1);
        Ok(Database::connect(opts).await?)
    }

    /// A handle on one connection of its own (PostgreSQL; SQLite shares its writer).
    pub async fn dedicated(&self) -> DbResult<Db> {
        if !self.is_postgres() {
            return Ok(self.clone());
        }
        let conn = self.own_pool(1, Duration::from_secs(10)).await?;
        Ok(Db {
            read: conn.clone(),
            conn,
            url: self.url.clone(),
        })
    }

    /// The web server's handle: on SQLite, the writer of this process plus `readers`
    /// read-only connections; on PostgreSQL, a pool of `readers` connections of its own.
    /// Either way a request waits at most `WEB_ACQUIRE_TIMEOUT` for a connection.
    pub async fn for_web(&self, readers: u32) -> DbResult<Db> {
        let readers = readers.max(1);
        if self.is_postgres() {
            let conn = self.own_pool(readers, WEB_ACQUIRE_TIMEOUT).await?;
            return Ok(Db {
                read: conn.clone(),
                conn,
                url: self.url.clone(),
            });
        }
        let Some(path) = self.sqlite_path() else {
            // An in-memory database exists only on its one connection.
            return Ok(self.clone());
        };
        let mut opts = ConnectOptions::new(format!("sqlite://{path}"));
        opts.sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(WEB_ACQUIRE_TIMEOUT)
            .max_connections(readers)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
        opts.map_sqlx_sqlite_opts(|o| {
            o.read_only(true)
                .busy_timeout(Duration::from_secs(2))
                .foreign_keys(true)
        });
        let read = Database::connect(opts).await?;
        Ok(Db {
            conn: self.conn.clone(),
            read,
            url: self.url.clone(),
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

/// The PostgreSQL channel on which weft processes wake each other: a transaction that
/// makes work (tasks scheduled, a run created, a DAG due) notifies it, and PostgreSQL
/// delivers the notification when that transaction commits (several in one
/// transaction are delivered once).
pub const WAKE_CHANNEL: &str = "weft_wake";

/// Notifies the other weft processes sharing this PostgreSQL that there is work (a
/// no-op on SQLite, where one process does everything).
pub async fn notify<C: ConnectionTrait>(c: &C) -> DbResult<()> {
    if c.get_database_backend() == DbBackend::Postgres {
        c.execute_unprepared(&format!("NOTIFY {WAKE_CHANNEL}"))
            .await?;
    }
    Ok(())
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
