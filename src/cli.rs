//! The command line: argument definitions (clap) and one function per command. Each
//! command loads the config, opens the database, and calls into the library.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::config::Config;
use crate::dag::bag::{self, DagBag};
use crate::dag::diag::render_with_source;
use crate::dag::template::rfc3339;
use crate::dag::{Dag, ValidationContext};
use crate::db::runs::{self, RunFilter};
use crate::db::{Db, RunState, TaskState, tasks};
use crate::scheduler::{Engine, EngineOptions, Registry, SystemClock, commands, plan};

#[derive(Debug, Parser)]
#[command(
    name = "weft",
    version,
    about = "A lean, fast workflow orchestrator for data teams"
)]
pub struct Cli {
    /// Config file (default: ./weft.toml if it exists; env WEFT_CONFIG).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate the database, load the DAGs, and run the scheduler, the executor and the
    /// web server in one process (SQLite or PostgreSQL).
    Serve(ServeArgs),
    /// Run a scheduler only (PostgreSQL): loads the DAG folder, creates runs, starts
    /// queued runs, rescues dead workers' tries. Several may run; one leads.
    Scheduler,
    /// Run a worker only (PostgreSQL): claims and runs tries of the given queues.
    Worker(WorkerArgs),
    /// Run the web server only (PostgreSQL): UI and API.
    Webserver(ServeArgs),
    /// Inspect and check DAG files.
    #[command(subcommand)]
    Dags(DagsCommand),
    /// Database maintenance.
    #[command(subcommand)]
    Db(DbCommand),
    /// Create a manual run of a DAG.
    Trigger(TriggerArgs),
    /// Create (and run) the runs of a DAG for a range of logical dates.
    Backfill(BackfillArgs),
    /// List runs.
    Runs(RunsArgs),
    /// The schedulers and workers sharing this database: heartbeat age, running tries,
    /// which one leads; and the depth of each queue.
    Status(StatusArgs),
    /// Task instance actions.
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// Print the log of a task try.
    Logs(LogsArgs),
    /// Web users and API tokens.
    #[command(subcommand)]
    Users(UsersCommand),
    /// SQL models of transform tasks.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Print the version.
    Version,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Print the rendered SQL of a transform task's models, in build order.
    Compile {
        dag_id: String,
        task_id: String,
        /// Logical date to render with (default: the latest complete interval).
        #[arg(long)]
        date: Option<String>,
    },
    /// Run only the data tests of a transform task against the warehouse.
    Test { dag_id: String, task_id: String },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user (the password is prompted for, or read from stdin).
    Create {
        name: String,
        #[arg(long, value_parser = ["admin", "operator", "viewer"])]
        role: String,
        /// Read the password from the first line of stdin (for scripts).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Issue a named API token for a user (replaces a token of the same name); printed once.
    Token {
        name: String,
        /// The token's name, to tell a user's tokens apart and revoke one.
        #[arg(long = "token-name", default_value = "default")]
        token_name: String,
        /// What the token may do: read, or operate (trigger, clear, pause). Default:
        /// operate for operators and admins, read for viewers.
        #[arg(long, value_parser = ["read", "operate"])]
        scope: Option<String>,
        /// Lifetime, e.g. 90d; default: no expiry.
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List API tokens (of one user, or all).
    Tokens { name: Option<String> },
    /// Revoke a user's API token by name.
    Revoke {
        name: String,
        #[arg(long = "token-name", default_value = "default")]
        token_name: String,
    },
    /// Set a user's password (prompted for, or read from stdin); their sessions end.
    Password {
        name: String,
        /// Read the password from the first line of stdin (for scripts).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user: logins and tokens stop working, sessions end.
    Disable { name: String },
    /// Enable a disabled user.
    Enable { name: String },
    /// Delete a user with their sessions and tokens.
    Delete { name: String },
    /// List users.
    List,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the web server (env WEFT_BIND; default 127.0.0.1:8080).
    #[arg(long)]
    pub bind: Option<String>,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Queues to serve, comma-separated (tasks name theirs with `queue`; default: every queue).
    #[arg(long, value_delimiter = ',')]
    pub queues: Vec<String>,
    /// Tries run at once by this worker (default: `parallelism`).
    #[arg(long)]
    pub concurrency: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum DagsCommand {
    /// List the DAGs of the DAG folder.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Validate DAG files (default: the DAG folder); exits non-zero on any error.
    Check {
        paths: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Show a DAG's settings and task graph.
    Show {
        dag_id: String,
        /// Print Graphviz DOT instead.
        #[arg(long)]
        dot: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print the next data intervals of a DAG.
    Next {
        dag_id: String,
        #[arg(short = 'n', default_value_t = 5)]
        n: usize,
        /// Start from this time (RFC 3339 or a date; default now).
        #[arg(long)]
        after: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Pause a DAG: no new runs are created or started.
    Pause { dag_id: String },
    /// Unpause a DAG.
    Unpause { dag_id: String },
    /// Run one run of a DAG in this process against a temporary database.
    Test {
        dag_id: String,
        /// Logical date (default: the latest complete interval, or now).
        #[arg(long)]
        date: Option<String>,
        /// Params as k=v.
        #[arg(long = "param")]
        params: Vec<String>,
        /// The warehouse every connection uses (default: temporary SQLite files, so a
        /// test never writes the real warehouse).
        #[arg(long)]
        warehouse: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply pending migrations.
    Migrate,
    /// Delete finished runs older than a cutoff, with their task instances, tries and
    /// logs, plus unused DAG versions, old worker rows and expired sessions.
    Clean {
        /// Age, e.g. 90d.
        #[arg(long)]
        older_than: String,
        /// Count what would go, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Runs per transaction.
        #[arg(long, default_value_t = 500)]
        batch: u64,
        #[arg(long)]
        json: bool,
    },
    /// Check the invariants of the database (every running try has a live worker, no
    /// finished run has unfinished tasks); exits 1 when something is wrong.
    Check {
        /// Repair what was found through the state machine.
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        json: bool,
    },
    /// Copy the SQLite database to FILE while weft runs (for PostgreSQL use pg_dump).
    Backup { file: PathBuf },
}

#[derive(Debug, Args)]
pub struct TriggerArgs {
    pub dag_id: String,
    /// Run configuration, a JSON object.
    #[arg(long)]
    pub conf: Option<String>,
    /// A param as k=v (repeatable); checked against the DAG's [params].
    #[arg(long = "param")]
    pub params: Vec<String>,
    /// Logical date; the run covers the interval that contains it.
    #[arg(long)]
    pub logical_date: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    pub dag_id: String,
    /// First logical date (inclusive).
    #[arg(long)]
    pub from: String,
    /// Last logical date (inclusive).
    #[arg(long)]
    pub to: String,
    /// Clear and re-run runs in the range that failed.
    #[arg(long)]
    pub rerun_failed: bool,
    /// Runs active at once (default: the DAG's max_active_runs).
    #[arg(long)]
    pub max_active_runs: Option<u32>,
    /// Allow a range of more than 100,000 intervals.
    #[arg(long)]
    pub force: bool,
}

/// The most intervals a backfill creates without --force.
const MAX_BACKFILL: usize = 100_000;

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    pub dag_id: Option<String>,
    #[arg(long)]
    pub state: Option<String>,
    /// Runs to show, 1 to 100,000.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub limit: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// Clear task instances of a run so they run again.
    Clear {
        dag_id: String,
        run_id: String,
        /// Tasks to clear (default: all).
        tasks: Vec<String>,
        /// Also clear everything downstream of the named tasks.
        #[arg(long)]
        downstream: bool,
        /// Also clear everything upstream of the named tasks.
        #[arg(long)]
        upstream: bool,
        /// Clear only tasks that failed or were upstream_failed.
        #[arg(long)]
        only_failed: bool,
        /// List what would be cleared and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List the task instances of a run.
    List {
        dag_id: String,
        run_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Mark a task instance success or failed (a running try is stopped by its worker;
    /// the run is evaluated again).
    Mark {
        dag_id: String,
        run_id: String,
        task_id: String,
        #[arg(long, value_parser = ["success", "failed"])]
        state: String,
        /// Also mark everything downstream of the task.
        #[arg(long)]
        downstream: bool,
        /// Also mark everything upstream of the task.
        #[arg(long)]
        upstream: bool,
    },
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub dag_id: String,
    pub run_id: String,
    pub task_id: String,
    /// Try number (default: the latest).
    #[arg(long = "try")]
    pub try_number: Option<i32>,
    /// Keep printing what the try writes until it ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// A mistake in what was asked (an unknown DAG, run or task, a malformed argument):
/// the command exits 2, like clap's own usage errors; failures exit 1.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Fails with a usage error (exit 2).
macro_rules! usage {
    ($($t:tt)*) => { return Err(anyhow::Error::new(Usage(format!($($t)*)))) };
}

/// Parses args, runs the command, and returns the process exit code.
pub fn main() -> i32 {
    // `weft runs | head -1`: a reader that goes away is not an error. Rust's printing
    // macros panic on EPIPE; this ends the process quietly instead.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
        .unwrap_or_else(|_| "weft=info,warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<Usage>().is_some() {
                2
            } else {
                1
            }
        }
    }
}

async fn run(cli: Cli) -> Result<i32> {
    let cfg = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Version => {
            println!("weft {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        Command::Serve(a) => serve(cfg, a).await,
        Command::Scheduler => scheduler_role(cfg).await,
        Command::Worker(a) => worker_role(cfg, a).await,
        Command::Webserver(a) => webserver_role(cfg, a).await,
        Command::Dags(c) => dags(cfg, c).await,
        Command::Db(c) => db_cmd(cfg, c).await,
        Command::Trigger(a) => trigger(cfg, a).await,
        Command::Backfill(a) => backfill(cfg, a).await,
        Command::Runs(a) => list_runs(cfg, a).await,
        Command::Status(a) => status(cfg, a).await,
        Command::Tasks(c) => tasks_cmd(cfg, c).await,
        Command::Logs(a) => logs(cfg, a).await,
        Command::Users(c) => users_cmd(cfg, c).await,
        Command::Models(c) => models_cmd(cfg, c).await,
    }
}

async fn db_cmd(cfg: Config, c: DbCommand) -> Result<i32> {
    use crate::db::maintenance;
    match c {
        DbCommand::Migrate => {
            let db = open_db(&cfg).await?;
            println!("migrated {}", crate::db::redact_url(&cfg.database_url));
            drop(db);
            Ok(0)
        }
        DbCommand::Clean {
            older_than,
            dry_run,
            batch,
            json,
        } => {
            let age = humantime::parse_duration(&older_than)
                .map_err(|e| anyhow!("--older-than {older_than}: {e}"))?;
            if age < Duration::from_secs(3600) {
                bail!("--older-than {older_than}: give at least 1h");
            }
            if batch == 0 || batch > 100_000 {
                bail!("--batch must be between 1 and 100000");
            }
            let cutoff = Utc::now() - chrono::Duration::from_std(age)?;
            let db = open_db(&cfg).await?;
            let report = if dry_run {
                maintenance::clean_preview(&db.conn, cutoff).await?
            } else {
                maintenance::clean(&db.conn, cutoff, batch, Duration::from_millis(20)).await?
            };
            if json {
                print_json(
                    &serde_json::json!({"dry_run": dry_run, "cutoff": rfc3339(cutoff), "removed": report}),
                )?;
            } else {
                let verb = if dry_run { "would remove" } else { "removed" };
                println!(
                    "{verb}: {} run(s), {} task instance(s), {} tr(ies), {} log chunk(s), {} dag version(s), {} worker row(s), {} expired session(s) (finished before {})",
                    report.runs,
                    report.task_instances,
                    report.tries,
                    report.log_chunks,
                    report.dag_versions,
                    report.workers,
                    report.sessions,
                    rfc3339(cutoff)
                );
            }
            Ok(0)
        }
        DbCommand::Check { repair, json } => {
            let db = open_db(&cfg).await?;
            let now = Utc::now();
            let problems = maintenance::check(&db.conn, now, cfg.heartbeat_timeout).await?;
            let repaired = if repair && !problems.is_empty() {
                let registry = Registry::new(
                    cfg.dags_folder.clone(),
                    crate::dag::ValidationContext::of(&cfg),
                );
                commands::repair(&db, &registry, &problems, now)
                    .await
                    .map_err(|e| anyhow!("{e}"))?
            } else {
                0
            };
            if json {
                print_json(&serde_json::json!({"problems": problems, "repaired": repaired}))?;
            } else if problems.is_empty() {
                println!("ok: no broken invariants");
            } else {
                for p in &problems {
                    println!(
                        "{}: dag {} run {}{}: {}",
                        p.kind,
                        p.dag_id,
                        p.run_pk,
                        p.task_id
                            .as_deref()
                            .map(|t| format!(" task {t}"))
                            .unwrap_or_default(),
                        p.detail
                    );
                }
                if repair {
                    println!("repaired {repaired} of {} problem(s)", problems.len());
                } else {
                    println!(
                        "{} problem(s); run `weft db check --repair` to repair them",
                        problems.len()
                    );
                }
            }
            Ok(
                if problems.is_empty() || (repair && repaired == problems.len()) {
                    0
                } else {
                    1
                },
            )
        }
        DbCommand::Backup { file } => {
            if !cfg.database_url.starts_with("sqlite:") {
                bail!(
                    "weft db backup copies SQLite databases; for PostgreSQL use pg_dump (see the README)"
                );
            }
            if file.exists() {
                bail!(
                    "{} exists already; weft db backup never overwrites a file",
                    file.display()
                );
            }
            let db = open_db(&cfg).await?;
            let path = file.to_string_lossy().to_string();
            maintenance::backup_sqlite(&db.conn, &path)
                .await
                .with_context(|| format!("cannot back up to {}", file.display()))?;
            let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            println!(
                "backed up {} to {} ({size} bytes)",
                crate::db::redact_url(&cfg.database_url),
                file.display()
            );
            Ok(0)
        }
    }
}

/// The retention job of `serve`: every hour (the first pass a minute after start), old
/// runs go in batches of 200 with a pause between them, so the scheduler's own writes
/// are never held up for long.
fn spawn_retention(db: Db, retention: Duration, engine: Engine) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        loop {
            // One scheduler does it: the one holding the lease.
            if !engine.is_leader() {
                tokio::time::sleep(Duration::from_secs(60)).await;
                continue;
            }
            let cutoff = Utc::now()
                - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(90));
            match crate::db::maintenance::clean(&db.conn, cutoff, 200, Duration::from_millis(200))
                .await
            {
                Ok(r) if !r.is_empty() => tracing::info!(?r, "retention removed old history"),
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "retention pass failed; trying again in an hour")
                }
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
}

/// Opens the database of record for a command that only reads: it is never created or
/// migrated; a missing one is an error naming the path looked at.
async fn open_db_existing(cfg: &Config) -> Result<Db> {
    if let Some(file) = cfg.sqlite_file()
        && !file.exists()
    {
        bail!(
            "no weft database at {} (weft's home is {}); run the command where `weft serve` runs, or point at it with WEFT_HOME, --config or WEFT_DATABASE_URL",
            file.display(),
            cfg.home.display()
        );
    }
    let db = Db::connect(&cfg.database_url).await.with_context(|| {
        format!(
            "cannot open the database {}",
            crate::db::redact_url(&cfg.database_url)
        )
    })?;
    if db.needs_migration().await? {
        bail!("the database needs migrating to this version of weft: run `weft db migrate`");
    }
    Ok(db)
}

async fn open_db(cfg: &Config) -> Result<Db> {
    let db = Db::connect(&cfg.database_url).await.with_context(|| {
        format!(
            "cannot open the database {}",
            crate::db::redact_url(&cfg.database_url)
        )
    })?;
    db.migrate().await.context("cannot migrate the database")?;
    Ok(db)
}

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Loads one DAG from the DAG folder, with a clear error if it is missing or broken.
fn load_dag(cfg: &Config, dag_id: &str) -> Result<Arc<Dag>> {
    let bag = DagBag::load_dir(&cfg.dags_folder, &crate::dag::ValidationContext::of(cfg))
        .with_context(|| format!("cannot read the dag folder {}", cfg.dags_folder.display()))?;
    if let Some(d) = bag.get(dag_id) {
        return Ok(d.clone());
    }
    for (f, diags) in bag.errors() {
        if f.path.file_stem().is_some_and(|s| s == dag_id)
            || diags.iter().any(|d| d.dag_id.as_deref() == Some(dag_id))
        {
            let msgs: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
            bail!("dag \"{dag_id}\" has errors:\n{}", msgs.join("\n"));
        }
    }
    let hint = crate::dag::diag::did_you_mean(dag_id, bag.dags().map(|d| d.dag_id.as_str()));
    bail!("no dag \"{dag_id}\" in {}{hint}", cfg.dags_folder.display())
}

/// Parses a date or time given on the command line, in the DAG's time zone.
fn parse_time(s: &str, tz: chrono_tz::Tz) -> Result<DateTime<Utc>> {
    crate::dag::parse_datetime(s, tz).map_err(|e| anyhow!(e))
}

fn parse_kv(params: &[String]) -> Result<BTreeMap<String, serde_json::Value>> {
    params
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| {
                    (
                        k.trim().to_string(),
                        serde_json::Value::String(v.to_string()),
                    )
                })
                .ok_or_else(|| {
                    anyhow::Error::new(Usage(format!("--param \"{p}\" must look like name=value")))
                })
        })
        .collect()
}

async fn serve(mut cfg: Config, a: ServeArgs) -> Result<i32> {
    if let Some(b) = a.bind {
        cfg.bind = b;
    }
    // The port first: a server that cannot listen says so before it announces itself,
    // registers a worker, or creates a database.
    let listener = crate::web::bind(&cfg.bind).await?;
    let db = open_db(&cfg).await?;
    let registry = registry_of(&cfg);
    let report = registry.sync(&db, Utc::now()).await?;
    eprintln!("weft {} serving", env!("CARGO_PKG_VERSION"));
    print_sources(&cfg, &report);
    for (file, msg) in &report.errors {
        eprintln!("  import error in {file}:\n{}", indent(msg));
    }
    eprintln!("  parallelism {}", cfg.parallelism);
    let engine = engine_of(&db, &cfg, registry.clone(), EngineOptions::default()).await?;
    engine.shared.registry.sync(&db, Utc::now()).await?;
    let state =
        crate::web::AppState::new(db.clone(), cfg.clone(), registry, Some(engine.clone())).await?;
    let web = crate::web::serve_on(listener, state)?;
    engine.set_base_url(format!("http://{web}"));
    if let Some(r) = cfg.retention {
        spawn_retention(db.clone(), r, engine.clone());
        eprintln!(
            "  retention:  finished runs older than {} are deleted",
            humantime::format_duration(r)
        );
    }
    if cfg.public_read() {
        eprintln!("  reading:    open to anyone who can reach the server (task logs need a login)");
    } else {
        eprintln!(
            "  reading:    needs a login ({} is not a loopback address; set public_read = true to open it)",
            cfg.bind
        );
    }
    if crate::db::users::count(&db.conn).await? == 0 {
        let what = if cfg.public_read() {
            "to act (trigger, clear, pause)"
        } else {
            "to read or act"
        };
        eprintln!("  no users yet: {what} create one with");
        eprintln!("              weft users create NAME --role admin");
    }
    eprintln!("  web UI:     http://{}", web);
    run_engine(engine).await
}

/// The start-up lines naming the database and the DAG folder a process reads.
fn print_sources(cfg: &Config, report: &crate::scheduler::registry::SyncReport) {
    eprintln!("  database:   {}", crate::db::redact_url(&cfg.database_url));
    eprintln!(
        "  dags:       {} ({} loaded, {} with errors)",
        cfg.dags_folder.display(),
        report.loaded,
        report.errors.len()
    );
}

/// The registry of DAG definitions for `cfg`'s DAG folder.
fn registry_of(cfg: &Config) -> Arc<Registry> {
    Registry::new(
        cfg.dags_folder.clone(),
        crate::dag::ValidationContext::of(cfg),
    )
}

/// An engine of the system clock with these options.
async fn engine_of(
    db: &Db,
    cfg: &Config,
    registry: Arc<Registry>,
    options: EngineOptions,
) -> Result<Engine> {
    Ok(Engine::new(
        db.clone(),
        cfg.clone(),
        registry,
        Arc::new(SystemClock),
        options,
    )
    .await?)
}

/// The distributed roles share one PostgreSQL; on SQLite (one process) they are refused.
fn require_postgres(cfg: &Config, role: &str) -> Result<()> {
    if cfg.database_url.starts_with("postgres") {
        return Ok(());
    }
    Err(anyhow::Error::new(Usage(format!(
        "`weft {role}` needs PostgreSQL: the scheduler, worker and web server roles share one database, and SQLite ({}) belongs to one process. Set WEFT_DATABASE_URL=postgres://... or run everything in one process with `weft serve`",
        crate::db::redact_url(&cfg.database_url)
    ))))
}

/// `weft scheduler`: reads the DAG folder, plans runs (the leader), starts queued runs,
/// rescues dead workers' tries; runs no task.
async fn scheduler_role(cfg: Config) -> Result<i32> {
    require_postgres(&cfg, "scheduler")?;
    let db = open_db(&cfg).await?;
    let registry = registry_of(&cfg);
    let report = registry.sync(&db, Utc::now()).await?;
    let options = EngineOptions {
        execute: false,
        ..EngineOptions::default()
    };
    let engine = engine_of(&db, &cfg, registry, options).await?;
    eprintln!("weft {} scheduler", env!("CARGO_PKG_VERSION"));
    print_sources(&cfg, &report);
    eprintln!("  id:         {}", engine.shared.worker_id);
    if let Some(r) = cfg.retention {
        spawn_retention(db.clone(), r, engine.clone());
    }
    run_engine(engine).await
}

/// `weft worker`: claims and runs tries (of `--queues`), with DAG definitions from the
/// database.
async fn worker_role(mut cfg: Config, a: WorkerArgs) -> Result<i32> {
    require_postgres(&cfg, "worker")?;
    if let Some(bad) = a.queues.iter().find(|q| !crate::dag::valid_queue(q)) {
        return Err(anyhow::Error::new(Usage(format!(
            "--queues: \"{bad}\" is not a queue name (1 to 64 letters, digits, `_`, `-` or `.`)"
        ))));
    }
    if let Some(n) = a.concurrency {
        if n == 0 {
            return Err(anyhow::Error::new(Usage(
                "--concurrency must be at least 1".into(),
            )));
        }
        cfg.parallelism = n;
    }
    let db = open_db(&cfg).await?;
    let registry = registry_of(&cfg);
    let n = registry.sync_from_db(&db).await?;
    let options = EngineOptions {
        cron: false,
        schedule: false,
        watch_folder: false,
        queues: a.queues.clone(),
        ..EngineOptions::default()
    };
    let engine = engine_of(&db, &cfg, registry, options).await?;
    eprintln!("weft {} worker", env!("CARGO_PKG_VERSION"));
    eprintln!("  database:   {}", crate::db::redact_url(&cfg.database_url));
    eprintln!("  dags:       {n} (from the database)");
    eprintln!(
        "  queues:     {}",
        if a.queues.is_empty() {
            "all".to_string()
        } else {
            a.queues.join(", ")
        }
    );
    eprintln!("  concurrency {}", cfg.parallelism);
    eprintln!("  id:         {}", engine.shared.worker_id);
    run_engine(engine).await
}

/// `weft webserver`: the UI and the API, with DAG definitions from the database.
async fn webserver_role(mut cfg: Config, a: ServeArgs) -> Result<i32> {
    require_postgres(&cfg, "webserver")?;
    if let Some(b) = a.bind {
        cfg.bind = b;
    }
    let listener = crate::web::bind(&cfg.bind).await?;
    let db = open_db(&cfg).await?;
    let registry = registry_of(&cfg);
    let n = registry.sync_from_db(&db).await?;
    // Definitions follow what the schedulers record.
    let (reg, refresh_db, every) = (registry.clone(), db.clone(), cfg.dag_poll_interval);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = reg.sync_from_db(&refresh_db).await {
                tracing::warn!(error = %e, "could not refresh the dag definitions");
            }
        }
    });
    let state = crate::web::AppState::new(db.clone(), cfg.clone(), registry, None).await?;
    let web = crate::web::serve_on(listener, state)?;
    eprintln!("weft {} webserver", env!("CARGO_PKG_VERSION"));
    eprintln!("  database:   {}", crate::db::redact_url(&cfg.database_url));
    eprintln!("  dags:       {n} (from the database)");
    eprintln!("  web UI:     http://{web}");
    shutdown_signal().await;
    eprintln!("weft stopped");
    Ok(0)
}

/// Runs an engine until SIGINT/SIGTERM; exit status 1 if it broke.
async fn run_engine(engine: Engine) -> Result<i32> {
    engine.run(shutdown_signal()).await;
    if let Some(why) = engine.fault() {
        eprintln!("weft stopped because the engine broke: {why}");
        return Ok(1);
    }
    eprintln!("weft stopped");
    Ok(0)
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    eprintln!("shutting down (running tries get the shutdown grace period to finish)...");
}

#[derive(Serialize)]
struct DagListItem<'a> {
    dag_id: &'a str,
    file: String,
    schedule: &'a str,
    /// The schedule in plain English.
    schedule_description: String,
    description: Option<&'a str>,
    timezone: &'a str,
    tasks: usize,
    tags: &'a [String],
    paused: Option<bool>,
}

async fn dags(cfg: Config, c: DagsCommand) -> Result<i32> {
    let ctx = crate::dag::ValidationContext::of(&cfg);
    match c {
        DagsCommand::List { json } => {
            let bag = DagBag::load_dir(&cfg.dags_folder, &ctx)
                .with_context(|| format!("cannot read {}", cfg.dags_folder.display()))?;
            // Paused flags live in the database: shown when there is one (never created).
            let paused: std::collections::HashMap<String, bool> = match open_db_existing(&cfg).await
            {
                Ok(db) => crate::db::dags::list_dags(&db.conn)
                    .await?
                    .into_iter()
                    .map(|d| (d.dag_id, d.is_paused))
                    .collect(),
                Err(_) => Default::default(),
            };
            let items: Vec<DagListItem> = bag
                .dags()
                .map(|d| DagListItem {
                    dag_id: &d.dag_id,
                    file: bag::display_path(&d.file),
                    schedule: d.schedule.as_str(),
                    schedule_description: d.schedule.describe(),
                    description: d.description.as_deref(),
                    timezone: d.timezone.name(),
                    tasks: d.tasks.len(),
                    tags: &d.tags,
                    paused: paused.get(&d.dag_id).copied(),
                })
                .collect();
            if json {
                print_json(&items)?;
            } else {
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|i| {
                        vec![
                            i.dag_id.to_string(),
                            i.schedule.to_string(),
                            i.timezone.to_string(),
                            i.tasks.to_string(),
                            match i.paused {
                                Some(true) => "yes".into(),
                                Some(false) => "no".into(),
                                None => "-".into(),
                            },
                            i.file.clone(),
                        ]
                    })
                    .collect();
                print_table(
                    &["DAG", "SCHEDULE", "TIMEZONE", "TASKS", "PAUSED", "FILE"],
                    &rows,
                );
                let errs = bag.error_count();
                if errs > 0 {
                    eprintln!("\n{errs} error(s) in dag files; run `weft dags check` for details");
                }
            }
            Ok(0)
        }
        DagsCommand::Check { paths, json } => {
            let paths = if paths.is_empty() {
                vec![cfg.dags_folder.clone()]
            } else {
                paths
            };
            let mut files = Vec::new();
            for p in &paths {
                files.extend(
                    bag::dag_files(p).with_context(|| format!("cannot read {}", p.display()))?,
                );
            }
            let bag = DagBag::load(&files, &ctx);
            let diags: Vec<_> = bag.errors().flat_map(|(_, d)| d.iter().cloned()).collect();
            if json {
                print_json(
                    &serde_json::json!({"files": files.len(), "dags": bag.dags().count(), "errors": diags}),
                )?;
            } else {
                for (f, ds) in bag.errors() {
                    let src = std::fs::read_to_string(&f.path).unwrap_or_default();
                    for d in ds {
                        println!("{}", render_with_source(d, &src));
                    }
                }
                let n = diags.len();
                if n == 0 {
                    println!(
                        "ok: {} file(s), {} dag(s), no errors",
                        files.len(),
                        bag.dags().count()
                    );
                } else {
                    println!(
                        "{n} error(s) in {} of {} file(s)",
                        bag.errors().count(),
                        files.len()
                    );
                }
            }
            Ok(if diags.is_empty() { 0 } else { 1 })
        }
        DagsCommand::Show { dag_id, dot, json } => {
            let d = load_dag(&cfg, &dag_id)?;
            if dot {
                print!("{}", to_dot(&d));
            } else if json {
                let tasks: Vec<_> = d
                    .tasks
                    .iter()
                    .map(|t| serde_json::json!({"task_id": t.task_id, "kind": t.kind_name(), "depends_on": t.depends_on, "retries": t.retries, "pool": t.pool, "trigger_rule": t.trigger_rule, "priority": t.priority}))
                    .collect();
                print_json(&serde_json::json!({
                    "dag_id": d.dag_id, "description": d.description, "schedule": d.schedule.as_str(),
                    "schedule_description": d.schedule.describe(), "timezone": d.timezone.name(),
                    "start_date": d.start_date.map(rfc3339), "end_date": d.end_date.map(rfc3339), "catchup": d.catchup,
                    "max_active_runs": d.max_active_runs, "max_active_tasks": d.max_active_tasks, "tags": d.tags,
                    "params": d.params, "tasks": tasks,
                }))?;
            } else {
                println!("dag:          {}", d.dag_id);
                if let Some(desc) = &d.description {
                    println!("description:  {desc}");
                }
                println!("file:         {}", bag::display_path(&d.file));
                println!(
                    "schedule:     {} ({}) in {}",
                    d.schedule.as_str(),
                    d.schedule.describe(),
                    d.timezone.name()
                );
                if let Some(s) = d.start_date {
                    println!(
                        "start_date:   {}",
                        s.with_timezone(&d.timezone).format("%Y-%m-%d %H:%M %Z")
                    );
                }
                println!(
                    "catchup:      {}   max_active_runs: {}   max_active_tasks: {}",
                    d.catchup, d.max_active_runs, d.max_active_tasks
                );
                println!("\ntasks (in run order):");
                for &i in &d.topo_order {
                    let t = &d.tasks[i];
                    let deps = if t.depends_on.is_empty() {
                        String::new()
                    } else {
                        format!("  <- {}", t.depends_on.join(", "))
                    };
                    println!(
                        "{}",
                        format!("  {:<24} {:<8}{deps}", t.task_id, t.kind_name()).trim_end()
                    );
                }
            }
            Ok(0)
        }
        DagsCommand::Next {
            dag_id,
            n,
            after,
            json,
        } => {
            let d = load_dag(&cfg, &dag_id)?;
            if d.schedule.is_none() {
                bail!("dag \"{dag_id}\" has schedule = \"none\": it only runs when triggered");
            }
            let after = match after {
                Some(a) => parse_time(&a, d.timezone)?,
                None => Utc::now(),
            };
            let ivs = plan::upcoming(&d.timetable(), after, n);
            if json {
                let v: Vec<_> = ivs
                    .iter()
                    .map(|iv| serde_json::json!({"data_interval_start": rfc3339(iv.start), "data_interval_end": rfc3339(iv.end), "run_after": rfc3339(iv.end)}))
                    .collect();
                print_json(&v)?;
            } else {
                let tz = d.timezone;
                let fmt = |t: DateTime<Utc>| {
                    format!(
                        "{} ({})",
                        t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z"),
                        t.format("%Y-%m-%d %H:%M UTC")
                    )
                };
                let rows: Vec<Vec<String>> = ivs
                    .iter()
                    .map(|iv| vec![fmt(iv.start), fmt(iv.end), fmt(iv.end)])
                    .collect();
                println!(
                    "{} ({}), time zone {}",
                    d.schedule.as_str(),
                    d.schedule.describe(),
                    tz.name()
                );
                print_table(
                    &["DATA INTERVAL START", "DATA INTERVAL END", "RUNS AT"],
                    &rows,
                );
            }
            Ok(0)
        }
        DagsCommand::Pause { dag_id } => set_paused(cfg, &dag_id, true).await,
        DagsCommand::Unpause { dag_id } => set_paused(cfg, &dag_id, false).await,
        DagsCommand::Test {
            dag_id,
            date,
            params,
            warehouse,
        } => dags_test(cfg, &dag_id, date, params, warehouse).await,
    }
}

async fn set_paused(cfg: Config, dag_id: &str, paused: bool) -> Result<i32> {
    let db = open_db(&cfg).await?;
    // Make sure the DAG is recorded even if `serve` never ran.
    let definition = match crate::db::dags::get_dag(&db.conn, dag_id).await? {
        Some(_) => None,
        None => Some(load_dag(&cfg, dag_id)?),
    };
    commands::set_paused(&db, dag_id, paused, definition.as_deref())
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let action = if paused { "pause" } else { "unpause" };
    audit(&db, action, Some(dag_id), None, None, String::new()).await;
    println!(
        "dag \"{dag_id}\" {}",
        if paused { "paused" } else { "unpaused" }
    );
    Ok(0)
}

fn to_dot(d: &Dag) -> String {
    let mut s = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=rounded];\n",
        d.dag_id.replace('"', "\\\"")
    );
    for t in &d.tasks {
        s.push_str(&format!(
            "  \"{}\" [label=\"{}\\n({})\"];\n",
            t.task_id,
            t.task_id,
            t.kind_name()
        ));
    }
    for t in &d.tasks {
        for dep in &t.depends_on {
            s.push_str(&format!("  \"{dep}\" -> \"{}\";\n", t.task_id));
        }
    }
    s.push_str("}\n");
    s
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<w$}", c, w = widths[i]))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn human_ms(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 1000 => format!("{ms}ms"),
        Some(ms) if ms < 60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) => humantime::format_duration(Duration::from_secs((ms / 1000) as u64)).to_string(),
    }
}

async fn trigger(cfg: Config, a: TriggerArgs) -> Result<i32> {
    let d = load_dag(&cfg, &a.dag_id)?;
    let db = open_db(&cfg).await?;
    let vid = commands::record_dag(&db, &d)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let conf = match &a.conf {
        Some(c) => {
            serde_json::from_str(c).with_context(|| format!("--conf is not valid JSON: {c}"))?
        }
        None => serde_json::Value::Null,
    };
    let logical = a
        .logical_date
        .as_deref()
        .map(|s| parse_time(s, d.timezone))
        .transpose()?;
    let params = parse_kv(&a.params)?;
    let run = match commands::trigger(&db, &d, vid, &params, conf, logical, Utc::now()).await {
        Ok(r) => r,
        Err(commands::CommandError::Invalid(m)) => {
            eprintln!("error: {m}");
            return Ok(2);
        }
        Err(e) => return Err(e.into()),
    };
    audit(
        &db,
        "trigger",
        Some(&run.dag_id),
        Some(&run.run_id),
        None,
        format!("logical date {}", rfc3339(run.logical_date)),
    )
    .await;
    if a.json {
        print_json(
            &serde_json::json!({"dag_id": run.dag_id, "run_id": run.run_id, "state": run.state, "logical_date": rfc3339(run.logical_date)}),
        )?;
    } else {
        println!(
            "created run {} of dag \"{}\" ({}); `weft serve` runs it",
            run.run_id, run.dag_id, run.state
        );
    }
    Ok(0)
}

async fn status(cfg: Config, a: StatusArgs) -> Result<i32> {
    let db = open_db_existing(&cfg).await?;
    let now = Utc::now();
    let d = crate::db::stats::deployment(&db.conn, now).await?;
    let timeout = cfg.heartbeat_timeout;
    if a.json {
        let processes: Vec<_> = d
            .processes
            .iter()
            .map(|p| serde_json::json!({"id": p.id, "role": p.role, "hostname": p.hostname, "pid": p.pid, "queues": if p.queues.is_empty() { Vec::new() } else { p.queues.split(',').collect() }, "capacity": p.capacity, "running": p.running, "started_at": rfc3339(p.started_at), "heartbeat_at": rfc3339(p.heartbeat_at), "heartbeat_age_seconds": p.heartbeat_age(now), "stopped_at": p.stopped_at.map(rfc3339), "condition": p.condition(now, timeout), "leader": d.leader.as_ref().is_some_and(|(h, _)| *h == p.id)}))
            .collect();
        let queues: Vec<_> = d
            .queues
            .iter()
            .map(|q| serde_json::json!({"queue": q.queue, "scheduled": q.scheduled, "queued": q.queued, "running": q.running}))
            .collect();
        print_json(
            &serde_json::json!({"leader": d.leader.as_ref().map(|(h, _)| h), "processes": processes, "queues": queues}),
        )?;
        return Ok(0);
    }
    match &d.leader {
        Some((holder, until)) => println!(
            "leader: {holder} (lease until {})",
            until.format("%H:%M:%S UTC")
        ),
        None => println!("leader: none (no scheduler holds the lease)"),
    }
    println!();
    if d.processes.is_empty() {
        println!("No scheduler or worker has run in the last hour.");
    } else {
        let rows: Vec<Vec<String>> = d
            .processes
            .iter()
            .map(|p| {
                let leads = d.leader.as_ref().is_some_and(|(h, _)| *h == p.id);
                vec![
                    p.id.clone(),
                    if leads {
                        format!("{} (leader)", p.role)
                    } else {
                        p.role.clone()
                    },
                    p.condition(now, timeout).to_string(),
                    p.heartbeat_label(now),
                    p.load_label(),
                    p.queues_label(),
                    format!("{}:{}", p.hostname, p.pid),
                ]
            })
            .collect();
        print_table(
            &[
                "PROCESS",
                "ROLE",
                "STATE",
                "HEARTBEAT",
                "RUNNING",
                "QUEUES",
                "HOST:PID",
            ],
            &rows,
        );
    }
    println!();
    if d.queues.is_empty() {
        println!("No task instance is waiting or running.");
    } else {
        let rows: Vec<Vec<String>> = d
            .queues
            .iter()
            .map(|q| {
                vec![
                    q.queue.clone(),
                    q.scheduled.to_string(),
                    q.queued.to_string(),
                    q.running.to_string(),
                ]
            })
            .collect();
        print_table(&["QUEUE", "WAITING", "CLAIMED", "RUNNING"], &rows);
    }
    Ok(0)
}

async fn list_runs(cfg: Config, a: RunsArgs) -> Result<i32> {
    let db = open_db_existing(&cfg).await?;
    if let Some(d) = &a.dag_id {
        known_dag(&db, d).await?;
    }
    let states = match &a.state {
        Some(s) => vec![RunState::parse(s).ok_or_else(|| {
            anyhow!(
                "unknown run state \"{s}\"; use one of {}",
                RunState::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?],
        None => Vec::new(),
    };
    let list = runs::list_runs(
        &db.conn,
        &RunFilter {
            dag_id: a.dag_id.clone(),
            states,
            limit: a.limit,
            offset: 0,
        },
    )
    .await?;
    if a.json {
        let v: Vec<_> = list
            .iter()
            .map(|r| serde_json::json!({"dag_id": r.dag_id, "run_id": r.run_id, "run_type": r.run_type, "state": r.state, "logical_date": rfc3339(r.logical_date), "data_interval_start": rfc3339(r.data_interval_start), "data_interval_end": rfc3339(r.data_interval_end), "started_at": r.started_at.map(rfc3339), "ended_at": r.ended_at.map(rfc3339)}))
            .collect();
        print_json(&v)?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            let dur = match (r.started_at, r.ended_at) {
                (Some(s), Some(e)) => human_ms(Some((e - s).num_milliseconds())),
                (Some(s), None) => format!(
                    "{} so far",
                    human_ms(Some((Utc::now() - s).num_milliseconds()))
                ),
                _ => "-".into(),
            };
            vec![
                r.dag_id.clone(),
                r.run_id.clone(),
                r.run_type.to_string(),
                r.state.to_string(),
                r.logical_date.format("%Y-%m-%d %H:%M").to_string(),
                dur,
            ]
        })
        .collect();
    print_table(
        &[
            "DAG",
            "RUN",
            "TYPE",
            "STATE",
            "LOGICAL DATE (UTC)",
            "DURATION",
        ],
        &rows,
    );
    Ok(0)
}

/// Fails with "no DAG named ..." (and a suggestion) when the database knows no such
/// DAG, rather than answering with an empty list.
async fn known_dag(db: &Db, dag_id: &str) -> Result<()> {
    let dags = crate::db::dags::list_dags(&db.conn).await?;
    if dags.iter().any(|d| d.dag_id == dag_id) {
        return Ok(());
    }
    let hint = crate::dag::diag::did_you_mean(dag_id, dags.iter().map(|d| d.dag_id.as_str()));
    usage!("no DAG named \"{dag_id}\"{hint} (see `weft dags list`)")
}

async fn find_run(db: &Db, dag_id: &str, run_id: &str) -> Result<crate::db::rows::Run> {
    if let Some(r) = runs::find_run(&db.conn, dag_id, run_id).await? {
        return Ok(r);
    }
    known_dag(db, dag_id).await?;
    let recent = runs::list_runs(
        &db.conn,
        &RunFilter {
            dag_id: Some(dag_id.to_string()),
            limit: 50,
            ..Default::default()
        },
    )
    .await?;
    let hint = crate::dag::diag::did_you_mean(run_id, recent.iter().map(|r| r.run_id.as_str()));
    usage!("dag \"{dag_id}\" has no run \"{run_id}\"{hint} (see `weft runs {dag_id}`)")
}

async fn tasks_cmd(cfg: Config, c: TasksCommand) -> Result<i32> {
    let db = open_db_existing(&cfg).await?;
    match c {
        TasksCommand::Mark {
            dag_id,
            run_id,
            task_id,
            state,
            downstream,
            upstream,
        } => {
            find_run(&db, &dag_id, &run_id).await?;
            let registry = Registry::new(
                cfg.dags_folder.clone(),
                crate::dag::ValidationContext::of(&cfg),
            );
            registry.sync(&db, Utc::now()).await?;
            let to = if state == "success" {
                TaskState::Success
            } else {
                TaskState::Failed
            };
            let scope = commands::Scope {
                upstream,
                downstream,
                only_failed: false,
            };
            match commands::mark_task(
                &db,
                &registry,
                &dag_id,
                &run_id,
                &task_id,
                to,
                &scope,
                Utc::now(),
            )
            .await
            {
                Ok(marked) => {
                    let what = marked.join(", ");
                    audit(
                        &db,
                        "mark",
                        Some(&dag_id),
                        Some(&run_id),
                        Some(&task_id),
                        format!("marked {what} {state}"),
                    )
                    .await;
                    println!("marked {what} {state}");
                    Ok(0)
                }
                Err(commands::CommandError::Db(e)) => Err(e.into()),
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(2)
                }
            }
        }
        TasksCommand::Clear {
            dag_id,
            run_id,
            tasks: task_ids,
            downstream,
            upstream,
            only_failed,
            dry_run,
        } => {
            find_run(&db, &dag_id, &run_id).await?;
            let registry = Registry::new(
                cfg.dags_folder.clone(),
                crate::dag::ValidationContext::of(&cfg),
            );
            registry.sync(&db, Utc::now()).await?;
            let scope = commands::Scope {
                upstream,
                downstream,
                only_failed,
            };
            if dry_run {
                let preview = match commands::clear_preview(
                    &db, &registry, &dag_id, &run_id, &task_ids, &scope,
                )
                .await
                {
                    Ok(p) => p,
                    Err(commands::CommandError::Db(e)) => return Err(e.into()),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return Ok(2);
                    }
                };
                println!("would clear {} task(s):", preview.len());
                for (t, st) in preview {
                    println!("  {t} ({st})");
                }
                return Ok(0);
            }
            match commands::clear(
                &db,
                &registry,
                &dag_id,
                &run_id,
                &task_ids,
                &scope,
                Utc::now(),
            )
            .await
            {
                Ok(cleared) if cleared.is_empty() => {
                    println!("nothing to clear (tasks that are queued or running are left alone)")
                }
                Ok(cleared) => {
                    audit(
                        &db,
                        "clear",
                        Some(&dag_id),
                        Some(&run_id),
                        None,
                        format!("cleared {}", cleared.join(", ")),
                    )
                    .await;
                    println!("cleared {} task(s): {}", cleared.len(), cleared.join(", "))
                }
                Err(commands::CommandError::Db(e)) => return Err(e.into()),
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(2);
                }
            }
            Ok(0)
        }
        TasksCommand::List {
            dag_id,
            run_id,
            json,
        } => {
            let run = find_run(&db, &dag_id, &run_id).await?;
            let tis = tasks::of_run(&db.conn, run.id).await?;
            if json {
                let v: Vec<_> = tis
                    .iter()
                    .map(|t| serde_json::json!({"task_id": t.task_id, "state": t.state, "try_number": t.try_number, "max_tries": t.max_tries, "started_at": t.started_at.map(rfc3339), "ended_at": t.ended_at.map(rfc3339), "duration_ms": t.duration_ms, "error": t.error}))
                    .collect();
                print_json(&v)?;
            } else {
                let rows: Vec<Vec<String>> = tis
                    .iter()
                    .map(|t| {
                        vec![
                            t.task_id.clone(),
                            t.state.to_string(),
                            format!("{}/{}", t.try_number, t.max_tries),
                            human_ms(t.duration_ms),
                            t.error.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                println!("run {} of {}: {}", run.run_id, run.dag_id, run.state);
                print_table(&["TASK", "STATE", "TRY", "DURATION", "ERROR"], &rows);
            }
            Ok(0)
        }
    }
}

async fn logs(cfg: Config, a: LogsArgs) -> Result<i32> {
    let db = open_db_existing(&cfg).await?;
    let run = find_run(&db, &a.dag_id, &a.run_id).await?;
    let tis = tasks::of_run(&db.conn, run.id).await?;
    let Some(ti) = tis.iter().find(|t| t.task_id == a.task_id) else {
        let hint =
            crate::dag::diag::did_you_mean(&a.task_id, tis.iter().map(|t| t.task_id.as_str()));
        usage!("run \"{}\" has no task \"{}\"{hint}", a.run_id, a.task_id);
    };
    let tries = tasks::tries_of(&db.conn, ti.id).await?;
    if tries.is_empty() {
        bail!(
            "task \"{}\" has not run yet (state {})",
            a.task_id,
            ti.state
        );
    }
    let t = match a.try_number {
        Some(n) => tries.iter().find(|t| t.try_number == n).ok_or_else(|| {
            anyhow!(
                "task \"{}\" has no try {n} (it has {})",
                a.task_id,
                tries.len()
            )
        })?,
        None => tries.last().ok_or_else(|| anyhow!("no tries"))?,
    };
    let text = tasks::read_log(&db.conn, t.id).await?;
    std::io::stdout().lock().write_all(text.as_bytes())?;
    if a.follow {
        // Print what arrives until the try ends (the log is stored in chunks, at least
        // once a second while the task writes).
        let mut shown = text.len();
        loop {
            let ended = tasks::tries_of(&db.conn, ti.id)
                .await?
                .into_iter()
                .find(|x| x.id == t.id)
                .is_none_or(|x| x.state != crate::db::TryState::Running);
            let text = tasks::read_log(&db.conn, t.id).await?;
            if text.len() > shown {
                let mut out = std::io::stdout().lock();
                out.write_all(&text.as_bytes()[shown..])?;
                out.flush()?;
                shown = text.len();
            }
            if ended {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(0)
}

/// Runs one run of a DAG in-process against a temporary SQLite database.
async fn dags_test(
    cfg: Config,
    dag_id: &str,
    date: Option<String>,
    params: Vec<String>,
    warehouse: Option<String>,
) -> Result<i32> {
    let d = load_dag(&cfg, dag_id)?;
    let dir = tempfile_dir()?;
    let result = dags_test_in(cfg, &d, &dir, date, params, warehouse).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn dags_test_in(
    cfg: Config,
    d: &Arc<Dag>,
    dir: &std::path::Path,
    date: Option<String>,
    params: Vec<String>,
    warehouse: Option<String>,
) -> Result<i32> {
    let url = format!("sqlite://{}?mode=rwc", dir.join("weft-test.db").display());
    let db = Db::connect(&url).await?;
    db.migrate().await?;
    let mut cfg = cfg;
    cfg.database_url = url;
    // Every connection goes to a temporary warehouse (or the one given): a test never
    // writes the tables the real runs and the pages read.
    let shown = match &warehouse {
        Some(w) => crate::db::redact_url(w),
        None => format!("temporary SQLite files in {}", dir.display()),
    };
    for (name, conn) in cfg.connections.iter_mut() {
        conn.url = match &warehouse {
            Some(w) => w.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                dir.join(format!("warehouse-{name}.db")).display()
            ),
        };
    }
    println!("dags test: warehouse {shown} (--warehouse URL to choose another)");
    let registry = Registry::new(
        cfg.dags_folder.clone(),
        crate::dag::ValidationContext::of(&cfg),
    );
    let vid = registry.add(&db, d.clone(), Utc::now()).await?;
    let logical = match date {
        Some(s) => Some(parse_time(&s, d.timezone)?),
        None => d.timetable().latest_complete(Utc::now()).map(|iv| iv.start),
    };
    let options = EngineOptions {
        cron: false,
        watch_folder: false,
        only_dags: vec![d.dag_id.clone()],
        ..Default::default()
    };
    let engine = Engine::new(db.clone(), cfg, registry, Arc::new(SystemClock), options).await?;
    let mut events = engine.subscribe();
    let run = commands::trigger(
        &db,
        d,
        vid,
        &parse_kv(&params)?,
        serde_json::Value::Null,
        logical,
        Utc::now(),
    )
    .await
    .map_err(|e| anyhow!("{e}"))?;
    println!(
        "testing dag \"{}\", run {} (data interval {} - {})",
        d.dag_id,
        run.run_id,
        rfc3339(run.data_interval_start),
        rfc3339(run.data_interval_end)
    );
    let run_pk = run.id;
    let wait = async move {
        loop {
            match events.recv().await {
                Ok(ev) if ev.run_pk == run_pk => break,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                _ => {}
            }
        }
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let e2 = engine.clone();
    let handle = tokio::spawn(async move {
        e2.run(async {
            let _ = rx.await;
        })
        .await
    });
    tokio::select! {
        _ = wait => {}
        _ = shutdown_signal() => {}
    }
    let _ = tx.send(());
    let _ = handle.await;
    let run = runs::get_run(&db.conn, run_pk)
        .await?
        .ok_or_else(|| anyhow!("run vanished"))?;
    let tis = tasks::of_run(&db.conn, run_pk).await?;
    for &i in &d.topo_order {
        let Some(ti) = tis.iter().find(|t| t.task_id == d.tasks[i].task_id) else {
            continue;
        };
        println!(
            "\n== {} [{}] try {} {}",
            ti.task_id,
            ti.state,
            ti.try_number,
            human_ms(ti.duration_ms)
        );
        if let Some(t) = tasks::current_try(&db.conn, ti).await? {
            let log = tasks::read_log(&db.conn, t.id).await?;
            let lines: Vec<&str> = log.lines().collect();
            for l in &lines[lines.len().saturating_sub(20)..] {
                println!("   {l}");
            }
        }
    }
    println!("\nrun {}: {}", run.run_id, run.state);
    Ok(if run.state == RunState::Success { 0 } else { 1 })
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("weft-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Backfill: creates the missing runs of the range in order, at most `max_active_runs`
/// active at once, runs them in this process (any running `weft serve` helps), and
/// shows progress. Ctrl-C stops creating runs; running tries finish or are recorded.
async fn backfill(cfg: Config, a: BackfillArgs) -> Result<i32> {
    let d = load_dag(&cfg, &a.dag_id)?;
    if d.schedule.is_none() {
        bail!(
            "dag \"{}\" has schedule = \"none\": there are no intervals to backfill; use `weft trigger`",
            d.dag_id
        );
    }
    let from = parse_time(&a.from, d.timezone)?;
    let to = parse_time(&a.to, d.timezone)?;
    if from > to {
        bail!("--from {} is after --to {}", a.from, a.to);
    }
    if let Some(start) = d.start_date
        && from < start
    {
        bail!(
            "--from {} is before the start_date of \"{}\" ({}); backfill from the start_date on",
            a.from,
            d.dag_id,
            start.with_timezone(&d.timezone).format("%Y-%m-%d %H:%M")
        );
    }
    let db = open_db(&cfg).await?;
    let registry = Registry::new(
        cfg.dags_folder.clone(),
        ValidationContext::clone(&crate::dag::ValidationContext::of(&cfg)),
    );
    let vid = registry.add(&db, d.clone(), Utc::now()).await?;
    let timetable = d.timetable();
    let Some(total) =
        crate::scheduler::plan::count_intervals_between(&timetable, from, to, MAX_BACKFILL)
            .or(a.force.then_some(0))
    else {
        bail!(
            "--from {} --to {} covers more than {MAX_BACKFILL} intervals of \"{}\"; narrow the range, or pass --force to create them anyway (they are created as the backfill goes, never all at once)",
            a.from,
            a.to,
            d.schedule.as_str()
        );
    };
    let intervals = crate::scheduler::plan::intervals_between(&timetable, from, to);
    let mut pending = intervals.peekable();
    if pending.peek().is_none() {
        println!(
            "no intervals of {} start between {} and {}",
            d.schedule.as_str(),
            a.from,
            a.to
        );
        return Ok(0);
    }
    let max_active = a.max_active_runs.unwrap_or(d.max_active_runs).max(1);
    let options = EngineOptions {
        cron: false,
        watch_folder: false,
        only_dags: vec![d.dag_id.clone()],
        ..Default::default()
    };
    let engine = Engine::new(
        db.clone(),
        cfg.clone(),
        registry.clone(),
        Arc::new(SystemClock),
        options,
    )
    .await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let e2 = engine.clone();
    let handle = tokio::spawn(async move {
        e2.run(async {
            let _ = stop_rx.await;
        })
        .await
    });
    let started_at = std::time::Instant::now();
    // Runs still going are polled; finished ones are only counted.
    let mut tracked: Vec<i64> = Vec::new();
    let mut done = 0usize;
    let mut failed = 0usize;
    let mut made = 0usize;
    let mut interrupted = false;
    let ctrl_c = shutdown_signal();
    tokio::pin!(ctrl_c);
    loop {
        let mut still = Vec::with_capacity(tracked.len());
        for id in tracked.drain(..) {
            match runs::get_run(&db.conn, id).await?.map(|r| r.state) {
                Some(RunState::Success) => done += 1,
                Some(RunState::Failed) => {
                    done += 1;
                    failed += 1
                }
                _ => still.push(id),
            }
        }
        tracked = still;
        let mut active = tracked.len();
        // Create runs while there is room.
        while !interrupted && active < max_active as usize {
            let Some(iv) = pending.next() else { break };
            match runs::run_at(&db.conn, &d.dag_id, iv.start).await? {
                Some(existing) if a.rerun_failed && existing.state == RunState::Failed => {
                    commands::clear(
                        &db,
                        &registry,
                        &d.dag_id,
                        &existing.run_id,
                        &[],
                        &commands::Scope::default(),
                        Utc::now(),
                    )
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
                    tracked.push(existing.id);
                    active += 1;
                    made += 1;
                }
                Some(existing) => {
                    tracked.push(existing.id);
                    made += 1;
                    if !existing.state.is_finished() {
                        active += 1;
                    }
                }
                None => {
                    let new = runs::NewRun {
                        dag_id: d.dag_id.clone(),
                        run_id: runs::run_id_for(crate::db::RunType::Backfill, iv.start),
                        run_type: crate::db::RunType::Backfill,
                        logical_date: iv.start,
                        interval_start: iv.start,
                        interval_end: iv.end,
                        dag_version_id: vid,
                        params: serde_json::to_value(d.default_params()).unwrap_or_default(),
                        conf: serde_json::json!({}),
                    };
                    if let Some(r) = commands::create_run(&db, &d, vid, &new, Utc::now()).await? {
                        tracked.push(r.id);
                        active += 1;
                        made += 1;
                    }
                }
            }
            engine.wake();
        }
        let finished_all = pending.peek().is_none() && active == 0;
        // With --force past the limit the total is only known at the end.
        let total = total.max(made + usize::from(pending.peek().is_some()));
        let eta = if done > 0 && !finished_all {
            let per = started_at.elapsed().as_secs_f64() / done as f64;
            format!(
                ", eta {}",
                humantime::format_duration(Duration::from_secs(
                    (per * (total - done) as f64) as u64
                ))
            )
        } else {
            String::new()
        };
        eprint!(
            "\rbackfill {}: {done}/{total} done, {failed} failed, {active} running{eta}      ",
            d.dag_id
        );
        if finished_all || (interrupted && active == 0) {
            eprintln!();
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = &mut ctrl_c, if !interrupted => {
                interrupted = true;
                eprintln!("\nstopping: no new runs will be created; waiting for the {active} active run(s) (Ctrl-C again to stop now)");
                tokio::spawn(async { shutdown_signal().await; std::process::exit(130) });
            }
        }
    }
    let _ = stop_tx.send(());
    let _ = handle.await;
    for id in &tracked {
        if runs::get_run(&db.conn, *id)
            .await?
            .is_some_and(|r| r.state == RunState::Failed)
        {
            failed += 1;
        }
    }
    println!(
        "backfill of {}: {made} run(s), {failed} failed{}",
        d.dag_id,
        if interrupted { " (interrupted)" } else { "" }
    );
    Ok(if failed > 0 || interrupted { 1 } else { 0 })
}

/// A new password, prompted for twice on the terminal or read from stdin.
fn read_new_password(name: &str, from_stdin: bool) -> Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    let p = rpassword::prompt_password(format!("password for {name}: "))?;
    let again = rpassword::prompt_password("again: ")?;
    if p != again {
        bail!("the passwords differ");
    }
    Ok(p)
}

async fn users_cmd(cfg: Config, c: UsersCommand) -> Result<i32> {
    // Without a terminal to ask on, say so before touching anything.
    let asks = match &c {
        UsersCommand::Create {
            name,
            role,
            password_stdin: false,
        } => Some(format!("create {name} --role {role}")),
        UsersCommand::Password {
            name,
            password_stdin: false,
        } => Some(format!("password {name}")),
        _ => None,
    };
    if let Some(args) = asks {
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() {
            bail!(
                "no terminal to ask for the password on; pipe it in with --password-stdin (echo 'secret' | weft users {args} --password-stdin)"
            );
        }
    }
    let db = open_db(&cfg).await?;
    match c {
        UsersCommand::Create {
            name,
            role,
            password_stdin,
        } => {
            let role =
                crate::db::Role::parse(&role).ok_or_else(|| anyhow!("unknown role {role}"))?;
            crate::accounts::check_username(&name)?;
            let password = read_new_password(&name, password_stdin)?;
            crate::accounts::create_user(&db, &name, &password, role, Utc::now()).await?;
            audit(
                &db,
                "user.create",
                None,
                None,
                None,
                format!("{name} ({role})"),
            )
            .await;
            println!("created {role} {name}");
        }
        UsersCommand::Password {
            name,
            password_stdin,
        } => {
            crate::accounts::find(&db, &name).await?;
            let password = read_new_password(&name, password_stdin)?;
            crate::accounts::set_password(&db, &name, &password).await?;
            audit(&db, "user.password", None, None, None, name.clone()).await;
            println!("password of {name} changed; their sessions ended");
        }
        UsersCommand::Token {
            name,
            token_name,
            scope,
            expires_in,
        } => {
            let user = crate::accounts::find(&db, &name).await?;
            let scope = scope.unwrap_or_else(|| {
                if user.role == crate::db::Role::Viewer {
                    "read"
                } else {
                    "operate"
                }
                .to_string()
            });
            let now = Utc::now();
            let expires_at = match expires_in {
                Some(e) => {
                    let d = humantime::parse_duration(&e)
                        .map_err(|err| anyhow!("--expires-in {e}: {err}"))?;
                    if d > std::time::Duration::from_secs(5 * 366 * 86400) || d.is_zero() {
                        bail!("--expires-in {e}: give a lifetime between 1s and 5 years");
                    }
                    Some(now + chrono::Duration::from_std(d)?)
                }
                None => None,
            };
            let token =
                crate::accounts::issue_token(&db, &user, &token_name, &scope, expires_at, now)
                    .await?;
            audit(
                &db,
                "user.token",
                None,
                None,
                None,
                format!("{name}: token \"{token_name}\" ({scope})"),
            )
            .await;
            println!("{token}");
            eprintln!(
                "API token \"{token_name}\" for {name} (scope {scope}{}); it is shown only now. Send it as: Authorization: Bearer <token>",
                expires_at
                    .map(|e| format!(", expires {}", rfc3339(e)))
                    .unwrap_or_default()
            );
        }
        UsersCommand::Tokens { name } => {
            let only = match &name {
                Some(n) => Some(crate::accounts::find(&db, n).await?.id),
                None => None,
            };
            let names: std::collections::HashMap<i64, String> = crate::db::users::list(&db.conn)
                .await?
                .into_iter()
                .map(|u| (u.id, u.username))
                .collect();
            let rows: Vec<Vec<String>> = crate::db::users::tokens(&db.conn, only)
                .await?
                .into_iter()
                .map(|t| {
                    vec![
                        names.get(&t.user_id).cloned().unwrap_or_default(),
                        t.name,
                        t.scope,
                        rfc3339(t.created_at),
                        t.expires_at.map(rfc3339).unwrap_or_else(|| "never".into()),
                        t.last_used_at
                            .map(rfc3339)
                            .unwrap_or_else(|| "never".into()),
                    ]
                })
                .collect();
            print_table(
                &["USER", "TOKEN", "SCOPE", "CREATED", "EXPIRES", "LAST USED"],
                &rows,
            );
        }
        UsersCommand::Revoke { name, token_name } => {
            let user = crate::accounts::find(&db, &name).await?;
            crate::accounts::revoke_token(&db, &user, &token_name).await?;
            audit(
                &db,
                "user.revoke",
                None,
                None,
                None,
                format!("{name}: token \"{token_name}\""),
            )
            .await;
            println!("revoked token \"{token_name}\" of {name}");
        }
        UsersCommand::Disable { name } => {
            let user = crate::accounts::find(&db, &name).await?;
            crate::accounts::set_disabled(&db, &user, true).await?;
            audit(&db, "user.disable", None, None, None, name.clone()).await;
            println!("disabled {name}: logins and tokens refused, sessions ended");
        }
        UsersCommand::Enable { name } => {
            let user = crate::accounts::find(&db, &name).await?;
            crate::accounts::set_disabled(&db, &user, false).await?;
            audit(&db, "user.enable", None, None, None, name.clone()).await;
            println!("enabled {name}");
        }
        UsersCommand::Delete { name } => {
            let user = crate::accounts::find(&db, &name).await?;
            crate::accounts::delete_user(&db, &user).await?;
            audit(&db, "user.delete", None, None, None, name.clone()).await;
            println!("deleted {name} with their sessions and tokens");
        }
        UsersCommand::List => {
            let rows: Vec<Vec<String>> = crate::db::users::list(&db.conn)
                .await?
                .into_iter()
                .map(|u| {
                    vec![
                        u.username,
                        u.role.to_string(),
                        u.last_login_at
                            .map(rfc3339)
                            .unwrap_or_else(|| "never".into()),
                        if u.disabled { "disabled" } else { "active" }.to_string(),
                    ]
                })
                .collect();
            print_table(&["USER", "ROLE", "LAST LOGIN", "STATUS"], &rows);
        }
    }
    Ok(0)
}

fn transform_spec(d: &Dag, task_id: &str) -> Result<crate::kinds::transform::TransformSpec> {
    let task = d.task(task_id).ok_or_else(|| {
        let hint =
            crate::dag::diag::did_you_mean(task_id, d.tasks.iter().map(|t| t.task_id.as_str()));
        anyhow!("dag \"{}\" has no task \"{task_id}\"{hint}", d.dag_id)
    })?;
    match task.spec_of::<crate::kinds::transform::TransformSpec>() {
        Some(spec) => Ok(spec.clone()),
        None => bail!(
            "task \"{task_id}\" is a {} task, not a transform task",
            task.kind_name()
        ),
    }
}

async fn models_cmd(cfg: Config, c: ModelsCommand) -> Result<i32> {
    match c {
        ModelsCommand::Compile {
            dag_id,
            task_id,
            date,
        } => {
            let d = load_dag(&cfg, &dag_id)?;
            let spec = transform_spec(&d, &task_id)?;
            let (start, end) = match date {
                Some(s) => {
                    let t = parse_time(&s, d.timezone)?;
                    d.timetable()
                        .interval_containing(t)
                        .map(|iv| (iv.start, iv.end))
                        .unwrap_or((t, t))
                }
                None => {
                    let now = Utc::now();
                    d.timetable()
                        .latest_complete(now)
                        .map(|iv| (iv.start, iv.end))
                        .unwrap_or((now, now))
                }
            };
            let ctx = crate::dag::template::TemplateContext::new(
                &d.dag_id,
                "compile",
                &task_id,
                1,
                start,
                end,
                d.timezone,
                d.default_params(),
            );
            for (name, mat, sql) in
                crate::kinds::transform::run::compile(&spec, &ctx).map_err(|e| anyhow!(e))?
            {
                println!("-- {name} ({mat})\n{}\n", sql.trim());
            }
            Ok(0)
        }
        ModelsCommand::Test { dag_id, task_id } => {
            let d = load_dag(&cfg, &dag_id)?;
            let spec = transform_spec(&d, &task_id)?;
            let conn_cfg = cfg
                .connections
                .get(&spec.connection)
                .ok_or_else(|| anyhow!("unknown connection {}", spec.connection))?;
            let url = crate::config::expand_env(&conn_cfg.url).map_err(|e| anyhow!(e))?;
            let wh = Db::connect(&url).await.map_err(|e| {
                anyhow!(
                    "connection \"{}\": {}",
                    spec.connection,
                    crate::db::redact_url(&e.to_string())
                )
            })?;
            let results = crate::kinds::transform::run::test_only(&wh.conn, &spec)
                .await
                .map_err(|e| anyhow!(e))?;
            let mut failed = 0;
            for (_, ok, line) in &results {
                println!("{line}");
                if !ok {
                    failed += 1;
                }
            }
            println!("{} test(s), {failed} failed", results.len());
            Ok(if failed > 0 { 1 } else { 0 })
        }
    }
}

/// Records a CLI action in the audit log: who is the OS user, from is this host.
async fn audit(
    db: &Db,
    action: &str,
    dag_id: Option<&str>,
    run_id: Option<&str>,
    task_id: Option<&str>,
    detail: String,
) {
    let who = ["USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    let actor = commands::Actor {
        who,
        source: "cli",
        client: Some(crate::scheduler::hostname()),
    };
    let entry = commands::AuditEntry {
        action,
        dag_id,
        run_id,
        task_id,
        detail,
    };
    commands::audit(db, &actor, entry).await;
}
