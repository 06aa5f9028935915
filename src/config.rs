//! Configuration: an optional `weft.toml` plus `WEFT_*` environment overrides.
//!
//! Reads files and the environment only; never touches the database.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The pool tasks use unless they name one (Airflow's `default_pool`).
pub const DEFAULT_POOL: &str = "default_pool";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    /// A value that parsed but makes no sense; `from` names where it came from.
    #[error("{key} (from {from}): {message}")]
    Invalid {
        key: String,
        from: String,
        message: String,
    },
}

/// The settings a `WEFT_<NAME>` variable can set (the key upper-cased), with the kind of
/// value the variable holds. Every scalar setting of `weft.toml` is here; pools and
/// connections are tables (the warehouse URL has `WEFT_WAREHOUSE_URL`).
const ENV_SETTINGS: &[(&str, EnvKind)] = &[
    ("database_url", EnvKind::Text),
    ("dags_folder", EnvKind::Text),
    ("bind", EnvKind::Text),
    ("parallelism", EnvKind::Integer),
    ("heartbeat_interval", EnvKind::Text),
    ("heartbeat_timeout", EnvKind::Text),
    ("kill_grace", EnvKind::Text),
    ("shutdown_grace", EnvKind::Text),
    ("dag_poll_interval", EnvKind::Text),
    ("lease_timeout", EnvKind::Text),
    ("web_concurrency", EnvKind::Integer),
    ("web_db_connections", EnvKind::Integer),
    ("log_max_bytes", EnvKind::Integer),
    ("default_pool_slots", EnvKind::Integer),
    ("public_read", EnvKind::Bool),
    ("public_logs", EnvKind::Bool),
    ("retention", EnvKind::Text),
    ("task_pass_env", EnvKind::List),
    ("secure_cookies", EnvKind::Bool),
];

#[derive(Debug, Clone, Copy)]
enum EnvKind {
    Text,
    Integer,
    Bool,
    /// Comma-separated; added to the file's list.
    List,
}

/// The environment variable of a setting.
fn env_name(key: &str) -> String {
    format!("WEFT_{}", key.to_uppercase())
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("bad duration \"{s}\": {e}")))
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// A named warehouse connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// `sqlite://path` or `postgres://...`; `${NAME}` reads an environment variable.
    pub url: String,
}

/// A pool declared in `[pools]`: `etl = 4` or `etl = { slots = 4, description = "..." }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PoolConfig {
    Slots(u32),
    Full {
        slots: u32,
        description: Option<String>,
    },
}

impl PoolConfig {
    pub fn slots(&self) -> u32 {
        match self {
            PoolConfig::Slots(n) | PoolConfig::Full { slots: n, .. } => *n,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Database of record. Default: `sqlite://weft.db?mode=rwc`.
    pub database_url: String,
    /// Folder of DAG files. Default: `dags`.
    pub dags_folder: PathBuf,
    /// Web server address. Default: `127.0.0.1:8080`.
    pub bind: String,
    /// Task tries running at once in this process.
    pub parallelism: u32,
    /// How often a worker records that it is alive.
    #[serde(deserialize_with = "duration")]
    pub heartbeat_interval: Duration,
    /// A worker silent for this long is dead: its tries are failed and retried.
    #[serde(deserialize_with = "duration")]
    pub heartbeat_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when a task times out or is stopped.
    #[serde(deserialize_with = "duration")]
    pub kill_grace: Duration,
    /// How long a graceful shutdown waits for running tries.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// How often the DAG folder is checked for changed files.
    #[serde(deserialize_with = "duration")]
    pub dag_poll_interval: Duration,
    /// The scheduler lease (cron planning, sweeps) expires after this without renewal;
    /// another scheduler then takes over.
    #[serde(deserialize_with = "duration")]
    pub lease_timeout: Duration,
    /// Web requests served at once; more wait up to a few seconds for a turn, then get
    /// 503 with `Retry-After`.
    pub web_concurrency: u32,
    /// Database connections of the web server (its own pool on PostgreSQL; read-only
    /// connections beside the one writer on SQLite).
    pub web_db_connections: u32,
    /// Bytes of log kept per try; the rest is replaced by a truncation marker.
    pub log_max_bytes: usize,
    /// Slots of the default pool.
    pub default_pool_slots: u32,
    pub pools: BTreeMap<String, PoolConfig>,
    pub connections: BTreeMap<String, Connection>,
    /// Anyone who can reach the web server may read pages and the read API; actions
    /// always need a login. Default: true when the server binds a loopback address,
    /// false otherwise.
    pub public_read: Option<bool>,
    /// Whether anonymous readers (with `public_read`) may read task logs too. Logs can
    /// hold whatever a task printed, so the default is false.
    pub public_logs: bool,
    /// Finished runs (with their tasks, tries and logs) older than this are deleted by
    /// a background job, in small batches; unset keeps everything. E.g. "90d".
    #[serde(deserialize_with = "opt_duration")]
    pub retention: Option<Duration>,
    /// Environment variables of the server that tasks also get (besides PATH, HOME,
    /// locale, TZ, USER, SHELL and TMPDIR). `WEFT_TASK_PASS_ENV=A,B` adds names.
    pub task_pass_env: Vec<String>,
    /// Mark session cookies Secure even without `X-Forwarded-Proto: https`.
    pub secure_cookies: bool,
    /// Where relative paths (the SQLite database, the DAG folder, SQLite warehouses)
    /// resolve: `WEFT_HOME`, else the folder of the `weft.toml` found walking up from
    /// the current folder, else the current folder. Not a file setting.
    #[serde(skip)]
    pub home: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        let mut connections = BTreeMap::new();
        connections.insert(
            "warehouse".to_string(),
            Connection {
                url: "sqlite://warehouse.db?mode=rwc".to_string(),
            },
        );
        Config {
            database_url: "sqlite://weft.db?mode=rwc".to_string(),
            dags_folder: PathBuf::from("dags"),
            bind: "127.0.0.1:8080".to_string(),
            parallelism: 32,
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(30),
            kill_grace: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            dag_poll_interval: Duration::from_secs(2),
            lease_timeout: Duration::from_secs(10),
            web_concurrency: 64,
            web_db_connections: 8,
            log_max_bytes: 4 * 1024 * 1024,
            default_pool_slots: 128,
            pools: BTreeMap::new(),
            connections,
            public_read: None,
            public_logs: false,
            retention: None,
            task_pass_env: Vec::new(),
            secure_cookies: false,
            home: PathBuf::from("."),
        }
    }
}

/// The password of `scheme://user:password@host/...`, percent-decoded.
fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split(['/', '?', '#']).next()?.rsplit_once('@')?.0;
    let pw = userinfo.split_once(':')?.1;
    (!pw.is_empty()).then(|| {
        percent_encoding::percent_decode_str(pw)
            .decode_utf8_lossy()
            .into_owned()
    })
}

/// True for `127.0.0.1:8080`, `localhost:80`, `[::1]:8080`.
pub fn is_loopback_bind(bind: &str) -> bool {
    let host = bind.rsplit_once(':').map_or(bind, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Replaces every secret in `text` with `***`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

/// The file of a `sqlite://path?...` or `sqlite:path` URL (not `:memory:`).
pub(crate) fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.contains(":memory:")).then_some(path)
}

/// A SQLite URL whose relative file is resolved against `home`; other URLs unchanged.
fn resolve_sqlite(url: &str, home: &Path) -> String {
    match sqlite_path(url) {
        Some(p) if Path::new(p).is_relative() => {
            let query = url
                .split_once('?')
                .map(|(_, q)| format!("?{q}"))
                .unwrap_or_default();
            format!("sqlite://{}{query}", home.join(p).display())
        }
        _ => url.to_string(),
    }
}

/// Expands `${NAME}` from the environment; an unset variable is an error naming it.
pub fn expand_env(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed \"${{\" in \"{s}\""));
        };
        let name = &after[..end];
        match std::env::var(name) {
            Ok(v) => out.push_str(&v),
            Err(_) => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Config {
    /// Loads `path` (or `WEFT_CONFIG`, or the `weft.toml` of weft's home), applies env
    /// overrides, and resolves relative paths against the home (see [`Config::home`]).
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let explicit = path
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("WEFT_CONFIG").map(PathBuf::from));
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let home = match std::env::var_os("WEFT_HOME").filter(|h| !h.is_empty()) {
            Some(h) => cwd.join(h),
            None => match &explicit {
                Some(p) => cwd.join(p).parent().map_or(cwd.clone(), Path::to_path_buf),
                None => cwd
                    .ancestors()
                    .find(|d| d.join("weft.toml").is_file())
                    .map_or(cwd.clone(), Path::to_path_buf),
            },
        };
        let path = explicit.or_else(|| {
            let p = home.join("weft.toml");
            p.is_file().then_some(p)
        });
        let text = match &path {
            Some(p) => Some(
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?,
            ),
            None => None,
        };
        let file = path
            .as_ref()
            .map_or_else(|| "weft.toml".to_string(), |p| p.display().to_string());
        let mut cfg = Config::layered(text.as_deref(), &file)?;
        cfg.home = home;
        cfg.resolve_paths();
        Ok(cfg)
    }

    /// Relative paths become paths under `home`, whatever the shell's folder.
    fn resolve_paths(&mut self) {
        if self.dags_folder.is_relative() {
            self.dags_folder = self.home.join(&self.dags_folder);
        }
        self.database_url = resolve_sqlite(&self.database_url, &self.home);
        for c in self.connections.values_mut() {
            c.url = resolve_sqlite(&c.url, &self.home);
        }
    }

    /// The SQLite file of the database of record, when it is one.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        sqlite_path(&self.database_url).map(PathBuf::from)
    }

    /// A configuration from a `weft.toml` text alone (no environment).
    pub fn from_toml(text: &str) -> Result<Config, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        Config::from_table(table)
    }

    fn from_table(table: toml::Table) -> Result<Config, String> {
        let mut cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.to_string())?;
        cfg.connections
            .entry("warehouse".to_string())
            .or_insert_with(|| Config::default().connections["warehouse"].clone());
        Ok(cfg)
    }

    /// The file's settings, then the `WEFT_*` variables over them, then checks: every
    /// error names where the bad value came from (the file, a variable, the default).
    fn layered(text: Option<&str>, file: &str) -> Result<Config, ConfigError> {
        let parse = |message: String| ConfigError::Parse {
            path: file.to_string(),
            message,
        };
        let mut table: toml::Table = match text {
            Some(t) => toml::from_str(t).map_err(|e: toml::de::Error| parse(e.to_string()))?,
            None => toml::Table::new(),
        };
        let mut from: BTreeMap<String, String> = table
            .keys()
            .map(|k| (k.clone(), file.to_string()))
            .collect();
        for (key, kind) in ENV_SETTINGS {
            let name = env_name(key);
            let Some(raw) = std::env::var(&name).ok().filter(|v| !v.is_empty()) else {
                continue;
            };
            let bad = |message: String| ConfigError::Env {
                name: name.clone(),
                message,
            };
            let value = match kind {
                EnvKind::Text => toml::Value::String(raw.clone()),
                EnvKind::Integer => raw
                    .trim()
                    .parse::<i64>()
                    .map(toml::Value::Integer)
                    .map_err(|_| bad(format!("\"{raw}\" is not a number")))?,
                EnvKind::Bool => match raw.trim().to_lowercase().as_str() {
                    "1" | "true" | "yes" | "on" => toml::Value::Boolean(true),
                    "0" | "false" | "no" | "off" => toml::Value::Boolean(false),
                    _ => return Err(bad(format!("\"{raw}\" is not true or false"))),
                },
                EnvKind::List => {
                    let mut list = match table.remove(*key) {
                        Some(toml::Value::Array(a)) => a,
                        _ => Vec::new(),
                    };
                    list.extend(
                        raw.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(|s| toml::Value::String(s.to_string())),
                    );
                    toml::Value::Array(list)
                }
            };
            table.insert(key.to_string(), value);
            from.insert(key.to_string(), name);
        }
        if let Some(url) = std::env::var("WEFT_WAREHOUSE_URL")
            .ok()
            .filter(|v| !v.is_empty())
        {
            let conns = table
                .entry("connections")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(c) = conns {
                let mut w = toml::Table::new();
                w.insert("url".into(), toml::Value::String(url));
                c.insert("warehouse".into(), toml::Value::Table(w));
            }
            from.insert("connections".into(), "WEFT_WAREHOUSE_URL".into());
        }
        let source_of = |key: &str| {
            from.get(key)
                .cloned()
                .unwrap_or_else(|| "the default".to_string())
        };
        let cfg = Config::from_table(table).map_err(|message| {
            // Name the variable when the bad value came from one.
            let env = from
                .iter()
                .find(|(k, src)| src.starts_with("WEFT_") && message.contains(k.as_str()));
            match env {
                Some((_, name)) => ConfigError::Env {
                    name: name.clone(),
                    message: message.trim().to_string(),
                },
                None => parse(message),
            }
        })?;
        cfg.validate(&source_of)?;
        Ok(cfg)
    }

    /// Values that parse but cannot work together.
    fn validate(&self, source_of: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_string(),
            from: source_of(key),
            message,
        };
        let human = |d: Duration| humantime::format_duration(d).to_string();
        if self.parallelism == 0 {
            return Err(invalid("parallelism", "must be at least 1".into()));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(invalid("heartbeat_interval", "must be more than 0s".into()));
        }
        if self.heartbeat_timeout <= self.heartbeat_interval {
            let key = if source_of("heartbeat_timeout") == "the default" {
                "heartbeat_interval"
            } else {
                "heartbeat_timeout"
            };
            return Err(invalid(
                key,
                format!(
                    "heartbeat_timeout ({}) must be longer than heartbeat_interval ({}): a live worker would be declared dead",
                    human(self.heartbeat_timeout),
                    human(self.heartbeat_interval)
                ),
            ));
        }
        if self.dag_poll_interval.is_zero() {
            return Err(invalid("dag_poll_interval", "must be more than 0s".into()));
        }
        if self.lease_timeout < Duration::from_secs(2) {
            return Err(invalid(
                "lease_timeout",
                format!(
                    "{} is too short: a scheduler renews its lease about every second; give at least 2s",
                    human(self.lease_timeout)
                ),
            ));
        }
        if !(1..=10_000).contains(&self.web_concurrency) {
            return Err(invalid(
                "web_concurrency",
                format!("{} is out of range: give 1 to 10000", self.web_concurrency),
            ));
        }
        if !(1..=1_000).contains(&self.web_db_connections) {
            return Err(invalid(
                "web_db_connections",
                format!(
                    "{} is out of range: give 1 to 1000",
                    self.web_db_connections
                ),
            ));
        }
        if self.log_max_bytes < 1024 {
            return Err(invalid(
                "log_max_bytes",
                format!("{} is too small; give at least 1024", self.log_max_bytes),
            ));
        }
        if let Some(d) = self.retention
            && d < Duration::from_secs(3600)
        {
            return Err(invalid(
                "retention",
                "must be at least 1h (it deletes finished runs older than this)".into(),
            ));
        }
        if self
            .bind
            .rsplit_once(':')
            .is_none_or(|(_, port)| port.parse::<u16>().is_err())
        {
            return Err(invalid(
                "bind",
                format!("\"{}\" is not HOST:PORT", self.bind),
            ));
        }
        Ok(())
    }

    /// Whether anonymous visitors may read: as configured, else only when the server
    /// listens on a loopback address (a server reachable from the network needs a
    /// login unless told otherwise).
    pub fn public_read(&self) -> bool {
        self.public_read
            .unwrap_or_else(|| is_loopback_bind(&self.bind))
    }

    /// Values that must never show in logs, pages or API answers: the passwords in the
    /// database and connection URLs, and the values of the variables those URLs read.
    pub fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        let urls =
            std::iter::once(&self.database_url).chain(self.connections.values().map(|c| &c.url));
        for url in urls {
            let mut rest = url.as_str();
            while let Some(i) = rest.find("${") {
                let after = &rest[i + 2..];
                let Some(end) = after.find('}') else { break };
                if let Ok(v) = std::env::var(&after[..end]) {
                    out.push(v);
                }
                rest = &after[end + 1..];
            }
            if let Some(pw) = expand_env(url).ok().as_deref().and_then(url_password) {
                out.push(pw);
            }
        }
        out.retain(|s| s.len() >= 4);
        out.sort();
        out.dedup();
        out
    }

    /// Pools with their slots, including the default pool.
    pub fn pool_slots(&self) -> BTreeMap<String, u32> {
        let mut m: BTreeMap<String, u32> = self
            .pools
            .iter()
            .map(|(k, v)| (k.clone(), v.slots()))
            .collect();
        m.entry(DEFAULT_POOL.to_string())
            .or_insert(self.default_pool_slots);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pools_connections_and_durations() {
        let cfg = Config::from_toml(
            "parallelism = 4\nheartbeat_timeout = \"1m\"\n[pools]\netl = 3\napi = { slots = 2, description = \"rate limited\" }\n",
        )
        .unwrap();
        assert_eq!(cfg.parallelism, 4);
        assert_eq!(cfg.heartbeat_timeout, Duration::from_secs(60));
        assert_eq!(cfg.pool_slots()["etl"], 3);
        assert_eq!(cfg.pool_slots()["api"], 2);
        assert_eq!(cfg.pool_slots()[DEFAULT_POOL], 128);
        assert!(cfg.connections.contains_key("warehouse"));
        let err = Config::from_toml("paralelism = 4").unwrap_err();
        assert!(err.contains("paralelism"), "{err}");
    }

    #[test]
    fn secrets_come_from_urls_and_binds_decide_public_reading() {
        let mut c = Config {
            database_url: "postgres://weft:s3cr%40t@db:5432/weft".into(),
            ..Default::default()
        };
        assert_eq!(c.secrets(), vec!["s3cr@t".to_string()]);
        assert_eq!(
            redact("connect s3cr@t now", &c.secrets()),
            "connect *** now"
        );
        assert!(
            is_loopback_bind("127.0.0.1:8080")
                && is_loopback_bind("[::1]:80")
                && is_loopback_bind("localhost:1")
        );
        assert!(!is_loopback_bind("0.0.0.0:8080") && !is_loopback_bind("10.1.2.3:80"));
        c.bind = "0.0.0.0:8080".into();
        assert!(!c.public_read());
        c.public_read = Some(true);
        assert!(c.public_read());
    }

    #[test]
    fn expands_env_vars_and_names_missing_ones() {
        assert_eq!(expand_env("plain").unwrap(), "plain");
        let err = expand_env("x${WEFT_SURELY_UNSET_VAR_123}").unwrap_err();
        assert!(err.contains("WEFT_SURELY_UNSET_VAR_123"));
    }

    #[test]
    fn bad_values_name_where_they_came_from() {
        let e = Config::layered(
            Some("heartbeat_interval = \"10s\"\nheartbeat_timeout = \"5s\"\n"),
            "dir/weft.toml",
        )
        .expect_err("timeout below interval");
        assert_eq!(
            e.to_string(),
            "heartbeat_timeout (from dir/weft.toml): heartbeat_timeout (5s) must be longer than heartbeat_interval (10s): a live worker would be declared dead"
        );
        let e = Config::layered(Some("heartbeat_interval = \"1m\"\n"), "weft.toml")
            .expect_err("interval above the default timeout");
        assert!(
            e.to_string()
                .starts_with("heartbeat_interval (from weft.toml): "),
            "{e}"
        );
        let e = Config::layered(Some("bind = \"localhost\"\n"), "weft.toml").expect_err("bind");
        assert!(
            e.to_string().contains("\"localhost\" is not HOST:PORT"),
            "{e}"
        );
        let e =
            Config::layered(Some("kill_grace = \"soon\"\n"), "weft.toml").expect_err("duration");
        assert!(
            e.to_string().starts_with("weft.toml: ") && e.to_string().contains("soon"),
            "{e}"
        );
        let ok = Config::layered(None, "weft.toml").expect("defaults are valid");
        assert_eq!(ok.parallelism, 32);
    }
}
